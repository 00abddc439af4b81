"""The compositor's one drawing primitive: a textured rectangle, times a gain, into the bound target.

Every draw of a frame goes through here (panels, a scene's background laid over another in a
crossfade, a frame mixed in or presented in a window): one program (shaders/panel.*), one unit
quad, two samplers and a white texel for solid colours, made once per compositor.
"""

from __future__ import annotations

from typing import Callable

import moderngl
import numpy as np

from .gl import load_program

__all__ = ["Quads", "FULL_UV", "to_ndc"]

FULL_UV = (0.0, 0.0, 1.0, 1.0)


class Quads:
    """Draws rectangles of a texture on `ctx` (made through `made`, the compositor's GL object count)."""

    def __init__(self, ctx: moderngl.Context, made: Callable):
        self.ctx = ctx
        self._program = made(load_program(ctx, "panel.vert", "panel.frag"))
        self._rect, self._uv, self._gain = (self._program[k] for k in ("rect", "uv_rect", "gain"))
        self._program["image"].value = 0
        # The unit square, y down, as a triangle strip: (0,0) top-left ... (1,1) bottom-right.
        quad = made(ctx.buffer(np.array([0, 0, 1, 0, 0, 1, 1, 1], dtype="f4").tobytes()))
        self._vao = made(ctx.vertex_array(self._program, [(quad, "2f", "corner")]))
        # Samplers override the textures' own filtering, so one texture can be drawn nearest in
        # one scene and linear in the other. Clamp to edge: linear filtering must not wrap around.
        self._samplers = {
            name: made(ctx.sampler(filter=(f, f), repeat_x=False, repeat_y=False))
            for name, f in (("nearest", moderngl.NEAREST), ("linear", moderngl.LINEAR))}
        # One white texel: a solid colour is the white texture times the gain.
        self._white = made(ctx.texture((1, 1), 4, data=b"\xff" * 4))

    def draw(self, texture: moderngl.Texture, filter: str, rect: tuple, uv: tuple = FULL_UV,
             gain: tuple = (1.0, 1.0, 1.0, 1.0)) -> None:
        """`texture` (its `uv` part) filtered "nearest" or "linear" into `rect` (NDC x0, y0, x1, y1),
        times `gain` (r, g, b, a): the fade, and the opacity when blending is on."""
        self._samplers[filter].use(0)
        texture.use(0)
        self._rect.value, self._uv.value, self._gain.value = rect, uv, gain
        self._vao.render(moderngl.TRIANGLE_STRIP)

    def solid(self, rect: tuple, colour: tuple) -> None:
        """A rectangle (NDC) of one colour (r, g, b, a)."""
        self.draw(self._white, "nearest", rect, FULL_UV, colour)

    def release(self) -> None:
        """Free the program, quad, samplers and white texel."""
        for obj in (self._white, self._vao, self._program, *self._samplers.values()):
            obj.release()


def to_ndc(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int], upright: bool) -> tuple:
    """A rectangle in output pixels (top-left origin) -> NDC of a target of `size`: upright (a
    window's framebuffer, pixel row y -> 1 - 2y/h) or upside down (offscreen, row y -> -1 + 2y/h)."""
    w, h = size
    if upright:
        return (2 * x0 / w - 1, 1 - 2 * y0 / h, 2 * x1 / w - 1, 1 - 2 * y1 / h)
    return (2 * x0 / w - 1, 2 * y0 / h - 1, 2 * x1 / w - 1, 2 * y1 / h - 1)
