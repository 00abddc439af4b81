"""A window to show the frame in (GLFW), or a headless stand-in when there is no display.

    window = open_window((1280, 720), fullscreen=True, monitor=1, fallback_headless=True)
    comp = Compositor(window.ctx, (1920, 1080))
    while not window.should_close:        # the close button or ESC
        comp.render(scene); comp.present(window); window.swap(); window.poll()
    window.close()

GLFW comes from the PyPI `glfw` wheel, which bundles the library (X11 and Wayland). A machine
with no display (no DISPLAY / WAYLAND_DISPLAY, or an X server that refuses us) gets a clear
error, or, when the caller allows it, a `HeadlessWindow` over an EGL context, so the same loop
can still feed the encoder.
"""

from __future__ import annotations

import os
import time

import moderngl

from ..errors import UnstableError
from .gl import GL_REQUIRE, create_headless_context, release_current_egl

class MonitorError(UnstableError):
    """A fullscreen monitor index that does not exist (a wrong setting, not a missing display)."""


_open_windows = 0   # GLFW is process-wide: initialise with the first window, terminate after the last
_last_error = ""    # GLFW reports failures through a callback; keep the latest for our messages


def _on_glfw_error(code, description):
    global _last_error
    _last_error = description.decode(errors="replace") if isinstance(description, bytes) else str(description)


def _glfw():
    import glfw
    glfw.ERROR_REPORTING = "ignore"  # we ask for failures ourselves and raise one clear line
    glfw.set_error_callback(_on_glfw_error)
    return glfw


def _init(glfw, tries: int = 5) -> bool:
    """glfw.init(), tried again a few times a tenth of a second apart: started again in one process
    (the last window closed, a new one opened), GLFW now and then fails to open an X display that
    any other client opens at once."""
    for i in range(tries):
        if glfw.init():
            return True
        time.sleep(0.1)
    return False


class Window:
    """A GLFW window with its own OpenGL context (`ctx`).

    Windowed at `size`, or fullscreen on monitor `monitor` (0 = primary) at that monitor's
    current video mode. ESC or the close button sets `should_close`.
    """

    headless = False

    def __init__(self, size: tuple[int, int] = (1280, 720), *, fullscreen: bool = False, monitor: int = 0,
                 title: str = "unstable", vsync: bool = True, visible: bool = True):
        global _open_windows
        glfw = self._glfw = _glfw()
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise UnstableError("cannot open a window: no display (DISPLAY and WAYLAND_DISPLAY are unset); "
                                "run headless or under xvfb-run")
        if not _init(glfw):
            raise UnstableError(f"cannot open a window: GLFW could not start ({_last_error or 'no reason given'})")
        _open_windows += 1
        try:
            glfw.default_window_hints()
            glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, GL_REQUIRE // 100)
            glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, GL_REQUIRE // 10 % 10)
            glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
            glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
            glfw.window_hint(glfw.VISIBLE, visible)
            target = None
            width, height = size
            if fullscreen:
                monitors = glfw.get_monitors() or []
                if not 0 <= monitor < len(monitors):
                    raise MonitorError(f"monitor {monitor} does not exist: {len(monitors)} monitor(s) found, "
                                        f"expected 0..{len(monitors) - 1}")
                target = monitors[monitor]
                mode = glfw.get_video_mode(target)
                width, height = mode.size.width, mode.size.height
                glfw.window_hint(glfw.REFRESH_RATE, mode.refresh_rate)
            release_current_egl()  # GLFW makes the new GLX context current while creating it
            handle = glfw.create_window(int(width), int(height), title, target, None)
            if not handle:
                raise UnstableError(f"cannot open a window: {_last_error or 'GLFW gave no window'}")
            self._handle = handle
            glfw.make_context_current(handle)
            glfw.swap_interval(1 if vsync else 0)
            if fullscreen:
                glfw.set_input_mode(handle, glfw.CURSOR, glfw.CURSOR_HIDDEN)  # an installation shows no cursor
            glfw.set_key_callback(handle, self._on_key)
            self.ctx: moderngl.Context = moderngl.create_context(require=GL_REQUIRE)
        except BaseException:
            self._terminate()
            raise
        self.fullscreen = fullscreen

    def _on_key(self, handle, key, scancode, action, mods):
        if key == self._glfw.KEY_ESCAPE and action == self._glfw.PRESS:
            self._glfw.set_window_should_close(handle, True)

    @property
    def should_close(self) -> bool:
        """True once the window was asked to close (ESC, the close button, or `request_close()`)."""
        return self._handle is None or bool(self._glfw.window_should_close(self._handle))

    def request_close(self) -> None:
        """Ask the loop to stop, as the close button would."""
        if self._handle is not None:
            self._glfw.set_window_should_close(self._handle, True)

    @property
    def framebuffer_size(self) -> tuple[int, int]:
        """The drawable size in pixels (differs from the window size on high-DPI screens)."""
        return tuple(self._glfw.get_framebuffer_size(self._handle))

    def poll(self) -> None:
        """Process pending window events (keys, close, resize); call once per frame."""
        self._glfw.poll_events()

    def swap(self) -> None:
        """Show what was drawn (waits for vertical sync when `vsync`)."""
        self._glfw.swap_buffers(self._handle)

    def close(self) -> None:
        """Destroy the window and its context (safe to call twice)."""
        if getattr(self, "_handle", None) is None:
            return
        self.ctx.release()
        self._glfw.destroy_window(self._handle)
        self._handle = None
        self._terminate()

    def _terminate(self):
        global _open_windows
        _open_windows -= 1
        if _open_windows == 0:
            self._glfw.terminate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HeadlessWindow:
    """Stands in for a Window where there is no display: an EGL context, nothing shown.

    It never closes by itself; the loop ends by its own means (duration, signal) or `request_close()`.
    """

    headless = True

    def __init__(self, size: tuple[int, int] = (1280, 720), reason: str = ""):
        self.ctx: moderngl.Context = create_headless_context()
        self.framebuffer_size = (int(size[0]), int(size[1]))
        self.reason = reason  # why there is no real window, for the caller to log
        self._closed = False

    @property
    def should_close(self) -> bool:
        return self._closed

    def request_close(self) -> None:
        self._closed = True

    def poll(self) -> None:
        pass

    def swap(self) -> None:
        pass

    def close(self) -> None:
        """Release the context (safe to call twice)."""
        self._closed = True
        if self.ctx is not None:
            self.ctx.release()
            self.ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_window(size: tuple[int, int] = (1280, 720), *, fullscreen: bool = False, monitor: int = 0,
                title: str = "unstable", vsync: bool = True, fallback_headless: bool = False,
                visible: bool = True) -> Window | HeadlessWindow:
    """A Window; or, when none can be opened and `fallback_headless`, a HeadlessWindow.

    A monitor that does not exist is always an error (a wrong show file, not a missing display).
    """
    try:
        return Window(size, fullscreen=fullscreen, monitor=monitor, title=title, vsync=vsync, visible=visible)
    except UnstableError as e:
        if not fallback_headless or isinstance(e, MonitorError):
            raise
        return HeadlessWindow(size, reason=str(e))
