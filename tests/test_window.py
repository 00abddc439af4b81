"""A real GLFW window on a private Xvfb server: present, fullscreen, ESC; and the headless fallback."""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from unstable.display.compositor import Compositor
from unstable.display.layout import Layout, Scene
from unstable.display.window import HeadlessWindow, MonitorError, Window, open_window
from unstable.errors import UnstableError

SCREEN = (160, 120)


def _die_with_parent():
    """In the Xvfb child: get SIGTERM when the test process dies, even if it dies without teardown."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


@pytest.fixture
def xvfb(monkeypatch):
    """Start Xvfb on a free display number (it picks one and tells us through -displayfd)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    os.close(write_end)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read_end, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_end)
    if not number.strip().isdigit():
        proc.kill()
        pytest.skip("Xvfb could not start")
    monkeypatch.setenv("DISPLAY", f":{number.decode().strip()}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    yield
    proc.terminate()
    proc.wait(timeout=10)


def press_escape():
    """Send a real ESC key press and release to the X server (XTest), like a keyboard would."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    display = x11.XOpenDisplay(None)
    assert display, "cannot connect to the test X server"
    keycode = x11.XKeysymToKeycode(display, 0xFF1B)  # XK_Escape
    xtst.XTestFakeKeyEvent(display, keycode, 1, 0)
    xtst.XTestFakeKeyEvent(display, keycode, 0, 0)
    x11.XFlush(display)
    x11.XCloseDisplay(display)


def test_present_draws_the_frame_upright_and_letterboxed(xvfb):
    with open_window((64, 48), vsync=False) as window:
        assert isinstance(window, Window) and window.framebuffer_size == (64, 48)
        comp = Compositor(window.ctx, (32, 32))
        image = torch.zeros(3, 8, 8)
        image[0, :4] = 1  # top half red
        image[2, 4:] = 1  # bottom half blue
        comp.render(Scene({"a": image}, Layout(fit="stretch")))
        comp.present(window)
        # The default framebuffer reads bottom row first (GL convention): flip to top-first.
        screen = np.frombuffer(window.ctx.screen.read(components=3), np.uint8).reshape(48, 64, 3)[::-1]
        # 32x32 in 64x48 is 48x48 at x = 8: black bars left and right.
        assert tuple(screen[10, 32]) == (255, 0, 0) and tuple(screen[40, 32]) == (0, 0, 255)
        assert screen[:, :8].max() == 0 and screen[:, 56:].max() == 0
        window.swap()
        window.poll()
        assert not window.should_close
        window.request_close()
        assert window.should_close
        comp.release()


def test_a_window_of_the_frames_size_is_composed_into_without_a_present_pass(xvfb):
    from unstable.display.layout import Colour
    gen = torch.Generator().manual_seed(3)
    a = {"p": torch.rand(3, 12, 16, generator=gen), "q": torch.rand(3, 20, 20, generator=gen)}
    b = {"p": torch.rand(3, 12, 16, generator=gen), "q": torch.rand(3, 20, 20, generator=gen)}
    first = Scene(a, Layout(panels=("p", "q"), filter="nearest"), Colour(hue=40))
    second = Scene(b, Layout(mode="grid", rows=2, cols=1, panels=("q", "p"), background=(0.2, 0.1, 0.0)))
    frames = [dict(scene=first), dict(scene=first, fade=0.6), dict(scene=first, next=second, mix=0.3),
              dict(scene=first, next=second, mix=1.0)]
    with open_window((64, 48), vsync=False) as window:
        comp = Compositor(window.ctx, (64, 48))
        offscreen = []
        for kw in frames:  # the reference: composed offscreen
            comp.render(**kw)
            offscreen.append(comp.read().copy())
        comp.draw_into(window)
        made = comp.gl_objects_created
        for kw, want in zip(frames, offscreen):
            comp.render(**kw)
            got = comp.read()
            # The same picture, rows top to bottom, although composed upright into the window...
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, kw
            # ... where it is: the window's back buffer holds the frame before any present().
            screen = np.frombuffer(window.ctx.screen.read(components=3), np.uint8).reshape(48, 64, 3)[::-1]
            assert np.array_equal(screen, got)
            comp.present(window)  # nothing left to draw: the back buffer is unchanged
            assert np.array_equal(np.frombuffer(window.ctx.screen.read(components=3), np.uint8)
                                  .reshape(48, 64, 3)[::-1], got)
            window.swap()
        assert comp.gl_objects_created == made
        # A frame of another size than the window (a resized window): offscreen and presented,
        # letterboxed, as before.
        comp.resize((32, 32))
        comp.render(frames[0]["scene"])
        comp.present(window)
        screen = np.frombuffer(window.ctx.screen.read(components=3), np.uint8).reshape(48, 64, 3)[::-1]
        assert screen[:, :8].max() == 0 and screen[:, 56:].max() == 0 and screen[:, 8:56].max() > 0
        comp.release()


def test_fullscreen_takes_the_monitor_and_escape_closes(xvfb):
    with pytest.raises(MonitorError, match="monitor 1 does not exist: 1 monitor"):
        open_window(fullscreen=True, monitor=1, fallback_headless=True)  # a wrong monitor is never papered over
    with open_window((64, 48), fullscreen=True, monitor=0) as window:
        assert window.framebuffer_size == SCREEN
        window.poll()
        assert not window.should_close
        press_escape()
        deadline = time.monotonic() + 5
        while not window.should_close and time.monotonic() < deadline:
            window.poll()
            time.sleep(0.01)
        assert window.should_close


def test_no_display_raises_or_falls_back_to_headless(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UnstableError, match="no display"):
        open_window((32, 16))
    with open_window((32, 16), fallback_headless=True) as window:
        assert isinstance(window, HeadlessWindow) and "no display" in window.reason
        comp = Compositor(window.ctx, (32, 16))
        comp.render(Scene({"a": torch.ones(3, 4, 4)}))
        comp.present(window)  # nothing to show, and no error
        assert comp.read()[8, 16].tolist() == [255, 255, 255]
        assert not window.should_close
        window.request_close()
        assert window.should_close
        comp.release()
