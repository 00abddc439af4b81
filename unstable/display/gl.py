"""OpenGL contexts and shader loading.

A headless context needs no display: EGL on Mesa (llvmpipe on a machine without a GPU) or on the
GPU driver. It is what tests, the offline renderer and a live engine without a screen use.
"""

from __future__ import annotations

from importlib import resources

import moderngl

from ..errors import UnstableError

# The shaders are written for GLSL 330; every backend we target (Mesa llvmpipe 4.5, NVIDIA) is newer.
GL_REQUIRE = 330


def create_headless_context(require: int = GL_REQUIRE) -> moderngl.Context:
    """A standalone OpenGL context through EGL; works with no X server or Wayland compositor.

    Raises UnstableError (one line, with the packages to install) when EGL cannot give one.
    """
    try:
        return moderngl.create_standalone_context(backend="egl", require=require)
    except Exception as e:  # glcontext raises plain Exceptions with the loader's message
        raise UnstableError(
            f"no headless OpenGL context through EGL ({e}); on Debian/Ubuntu install "
            "libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri") from None


def shader_source(name: str) -> str:
    """The text of `unstable/display/shaders/<name>` (shipped as package data)."""
    return resources.files("unstable.display").joinpath("shaders", name).read_text(encoding="utf-8")


def load_program(ctx: moderngl.Context, vertex: str, fragment: str) -> moderngl.Program:
    """Compile a program from two shader files in `shaders/`."""
    return ctx.program(vertex_shader=shader_source(vertex), fragment_shader=shader_source(fragment))


def release_current_egl() -> None:
    """Make no EGL context current on this thread.

    libglvnd lets a thread have one current context across EGL and GLX: with a headless (EGL)
    context current, making a window's GLX context current fails with BadAccess, and Xlib's
    default handler then exits the process. A window calls this before taking its context.
    """
    import ctypes
    import ctypes.util
    try:
        egl = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    except OSError:
        return  # no EGL on this machine: nothing can be current
    egl.eglGetCurrentDisplay.restype = ctypes.c_void_p
    egl.eglMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    display = egl.eglGetCurrentDisplay()
    if display:
        egl.eglMakeCurrent(display, None, None, None)  # EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT
