"""The compositor: per-panel images -> one graded, laid-out, faded frame on the GPU (ModernGL).

    comp = Compositor(ctx, (1920, 1080))
    comp.render(Scene(images, layout, colour), fade=1.0)               # images: {panel: [3, H, W]}
    comp.render(Scene(a, layout_a), next=Scene(b, layout_b), mix=0.3)  # crossfade two scenes
    frame = comp.read()        # [H, W, 3] uint8, rows top to bottom (a reused buffer)
    comp.present(window)       # draw the frame into the window (then window.swap())

Where the work happens, and why (Mesa llvmpipe, the no-GPU case, at 1920x1080, is the one that
hurts; its figures are in docs/figures.md, "Figures moved out of docstrings"):
- Colour (hue, saturation, brightness) is a 3x3 matrix applied to the *panel images* on their
  own device before upload: panels are 28-512 px, the output is 2 Mpx, and on llvmpipe a matrix
  in the fragment shader costs milliseconds per full-screen pass. Colour and filtering are both linear,
  so grading before sampling gives the same picture.
- Upload: on an accelerator, images are graded and narrowed to uint8 HWC there, then copied once
  into a host buffer that lives with the panel's texture; on the CPU the same is done with numpy
  into reused buffers (torch's spinning OpenMP threads starve llvmpipe, see `PanelTextures.grade_cpu` in display/textures.py); a CPU
  uint8 HWC image with no grade is written as it is. Textures,
  host buffers, framebuffers, samplers and the quad are made once and reused; a texture is only
  remade when a panel's size changes (`gl_objects_created` counts every GL object made).
- The offscreen frame is drawn upside down (image top on framebuffer row 0) so `read()` returns
  rows in top-to-bottom order with no flip on the CPU; `present()` draws it the right way up.
- `read()` asks GL for 3 components straight into a reused array: cheaper than reading RGBA and
  dropping alpha in numpy (a strided 6 MB copy).
- In a window of the frame's own size (`draw_into(window)`: a projector at the show's size), the
  frame is composed straight into the window's back buffer, right way up, and `present()` has
  nothing left to do: the present pass (a second 2 Mpx draw, on llvmpipe more than the whole
  composition of a frame) is gone. `read()` then reads the back buffer and flips the rows (a cost
  paid only by frames that are read: a recording, a still, the page's preview), and must come
  before the window's swap.
"""

from __future__ import annotations

from typing import Any

import moderngl
import numpy as np

from .layout import UPSCALED, Scene, cells, colour_matrix, fit, place, upscale_factor
from .quads import FULL_UV, Quads, to_ndc
from .textures import PanelTexture, PanelTextures, upscaled


def _overlapping(placements) -> bool:
    """Whether any two panel draws cover a common area (then a blend over them would count twice)."""
    for i, a in enumerate(placements):
        for b in placements[i + 1:]:
            if min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0):
                return True
    return False


def _gaps(placements, w: int, h: int) -> list[tuple[float, float, float, float]]:
    """The rectangles (x0, y0, x1, y1), output pixels, of a w x h frame where no panel is drawn.

    Cut along every panel edge into a grid; a grid cell is a gap unless a panel covers its centre;
    the gaps of a row of cells are merged left to right. The edges are the panels' own
    coordinates, so a gap and the panel beside it share their edge exactly and GL's fill rule
    gives each pixel to one of them: none is blended twice or left out."""
    clamp = lambda v, hi: min(max(float(v), 0.0), float(hi))  # noqa: E731
    rects = [(clamp(p.x0, w), clamp(p.y0, h), clamp(p.x1, w), clamp(p.y1, h)) for p in placements]
    xs = sorted({0.0, float(w), *(r[0] for r in rects), *(r[2] for r in rects)})
    ys = sorted({0.0, float(h), *(r[1] for r in rects), *(r[3] for r in rects)})
    out = []
    for y0, y1 in zip(ys, ys[1:]):
        cy, run = (y0 + y1) / 2, None
        for x0, x1 in zip(xs, xs[1:]):
            cx = (x0 + x1) / 2
            covered = any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in rects)
            if covered:
                if run is not None:
                    out.append((run, y0, x0, y1))
                    run = None
            elif run is None:
                run = x0
        if run is not None:
            out.append((run, y0, xs[-1], y1))
    return out


def _is_identity(m: np.ndarray) -> bool:
    return bool(np.allclose(m, np.eye(3), atol=1e-6))


class Compositor:
    """Composes panel images into one frame of `size` (width, height) on the context `ctx`.

    `ctx` is a headless context (unstable.display.gl) or a window's (unstable.display.window);
    `present()` needs the window's. Call from the thread that owns the context.
    """

    def __init__(self, ctx: moderngl.Context, size: tuple[int, int]):
        self.ctx = ctx
        self.size = (int(size[0]), int(size[1]))
        self.gl_objects_created = 0
        self.frames = 0
        self._quads = Quads(ctx, self._made)  # every draw: a textured rectangle times a gain
        self._textures = PanelTextures(ctx, self._made)  # each panel's texture, made once
        self._window: Any = None     # draw_into(): compose into this window when it has our size
        self._direct = False         # the last frame was composed into the window's back buffer
        self._make_targets()

    # -- GL object bookkeeping ----------------------------------------------------------------

    def _made(self, obj):
        self.gl_objects_created += 1
        return obj

    def _make_targets(self):
        w, h = self.size
        # RGBA8: 3-component render targets are not required to be renderable and can be slower.
        self._frame = self._made(self.ctx.texture((w, h), 4))
        self._fbo = self._made(self.ctx.framebuffer([self._frame]))
        # Second scene of a crossfade; made up front so a crossfade starting mid-show allocates nothing.
        self._scratch = self._made(self.ctx.texture((w, h), 4))
        self._scratch_fbo = self._made(self.ctx.framebuffer([self._scratch]))
        self._readback = np.empty((h, w, 3), dtype=np.uint8)
        self._screen_rows = None  # [H, W, 3] bottom row first: the window's back buffer, read (made on first read)
        self._screen_rows4 = None  # the same in four components (read_rgbx)

    def _unbind_targets(self):
        # moderngl re-binds the last used framebuffer after making a new one; if that is one we
        # released, GL reports INVALID_OPERATION. Bind the default framebuffer (0) first.
        (self.ctx.screen or self.ctx.detect_framebuffer(0)).use()

    def resize(self, size: tuple[int, int]) -> None:
        """Change the output size (remakes the framebuffers; panel textures are kept)."""
        if tuple(size) == self.size:
            return
        self._unbind_targets()
        for obj in (self._fbo, self._frame, self._scratch_fbo, self._scratch):
            obj.release()
        self.size = (int(size[0]), int(size[1]))
        self._make_targets()

    def release(self) -> None:
        """Free every GL object this compositor made."""
        self._textures.release()
        self._unbind_targets()
        for obj in (self._fbo, self._frame, self._scratch_fbo, self._scratch, self._quads):
            obj.release()

    @property
    def texture(self) -> moderngl.Texture:
        """The composed frame (RGBA8; row 0 is the image's top row), when it was composed offscreen."""
        return self._frame

    def draw_into(self, window: Any) -> None:
        """Compose each frame straight into `window`'s back buffer whenever its framebuffer has the
        frame's size (checked every frame: a resized window falls back to drawing offscreen and
        presenting, letterboxed). A headless window, or None, turns it off."""
        if window is None or getattr(window, "headless", True):
            self._window = None
            return
        if window.ctx is not self.ctx:
            raise ValueError("draw_into() needs a compositor made on the window's own context (window.ctx)")
        self._window = window

    def _target(self) -> tuple[moderngl.Framebuffer, bool]:
        """Where this frame is composed: (framebuffer, upright). Upright is the window's back
        buffer; offscreen targets are drawn upside down (image top on row 0)."""
        win = self._window
        if win is not None and tuple(win.framebuffer_size) == self.size:
            return self.ctx.screen, True
        return self._fbo, False

    # -- drawing --------------------------------------------------------------------------------

    def _draw_scene(self, scene: Scene, fbo: moderngl.Framebuffer, fade: float, slot: int,
                    uploaded: dict, upright: bool = False, over: float | None = None) -> bool:
        """Draw `scene` into `fbo` (cleared to its background), or with `over` = mix lay it over what
        `fbo` holds at opacity `mix`: its panels blended, then its background only where no panel
        of it lies, so every pixel is blended exactly once. False (nothing drawn) when `over` is
        asked of a scene whose panels overlap: that one needs a target of its own."""
        layout = scene.layout
        names = layout.panel_names(list(scene.images))
        global_m = colour_matrix(scene.colour)
        cell_sizes = {c[0]: (c[3], c[4]) for c in cells(layout, self.size, names)}
        textures: dict[str, PanelTexture] = {}
        for name in dict.fromkeys(n for n in names if n):
            if name not in scene.images:
                raise ValueError(f"layout names panel {name!r}, images have {', '.join(map(repr, scene.images))}")
            source = scene.images[name]
            filt = layout.style(name).filter or layout.filter
            k = 1
            if filt in UPSCALED:
                k = upscale_factor(cell_sizes.get(name, (0, 0)), (source.shape[-1], source.shape[-2]))
            m = global_m @ colour_matrix(layout.style(name))
            m = None if _is_identity(m) else m
            # The same tensor, upscaled and graded alike, in both scenes of a crossfade is uploaded
            # once. The key is the scene's own tensor, kept alive in the value: an address alone
            # is reused by the allocator (a temporary upscaled copy of the next panel can get this
            # one's id, and every panel would show the first).
            dedupe = (id(source), k, filt == "sharp", None if m is None else m.tobytes())
            hit = uploaded.get(dedupe)
            if hit is not None:
                textures[name] = hit[1]
                continue
            image = upscaled(source, k, filt == "sharp") if k > 1 else source
            textures[name] = self._textures.upload((slot, name), image, m)
            uploaded[dedupe] = (source, textures[name])

        w, h = self.size
        sizes = {n: (pt.host.shape[1], pt.host.shape[0]) for n, pt in textures.items()}
        placements = place(layout, self.size, sizes, names)
        if over is not None and _overlapping(placements):
            return False
        fbo.use()
        self.ctx.viewport = (0, 0, w, h)
        r, g, b = layout.background
        alpha = 1.0
        if over is None:
            self.ctx.clear(r * fade, g * fade, b * fade, 1.0)
        else:
            alpha = over
            self.ctx.enable(moderngl.BLEND)
            self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        for p in placements:
            filt = layout.style(p.name).filter or layout.filter
            self._quads.draw(textures[p.name].texture, "linear" if filt in UPSCALED else filt,
                             to_ndc(p.x0, p.y0, p.x1, p.y1, self.size, upright), (p.u0, p.v0, p.u1, p.v1),
                             (fade, fade, fade, alpha))
        if over is not None:
            # The background where this scene has no panel, as a solid colour at the same opacity.
            for x0, y0, x1, y1 in _gaps(placements, w, h):
                self._quads.solid(to_ndc(x0, y0, x1, y1, self.size, upright), (r * fade, g * fade, b * fade, alpha))
            self.ctx.disable(moderngl.BLEND)
        return True

    def render(self, scene: Scene, *, fade: float = 1.0, next: Scene | None = None, mix: float = 0.0) -> None:
        """Compose one frame into the offscreen framebuffer.

        `fade` is the master level (1 the picture, 0 black). With `next`, the frame is
        (1 - mix) * scene + mix * next: a crossfade between two scenes (layouts, images, grades).
        """
        fade = min(max(float(fade), 0.0), 1.0)
        mix = min(max(float(mix), 0.0), 1.0)
        uploaded: dict = {}
        target, upright = self._target()
        self._direct = upright
        if next is None or mix == 0.0:
            self._draw_scene(scene, target, fade, 0, uploaded, upright)
        elif mix == 1.0:
            self._draw_scene(next, target, fade, 1, uploaded, upright)
        else:
            self._draw_scene(scene, target, fade, 0, uploaded, upright)
            # The second scene straight over the first at opacity `mix`: one blended pass over its
            # panels and its background, not a second full frame drawn aside and then a full-frame
            # blend of it (on llvmpipe each 2 Mpx pass costs milliseconds).
            if not self._draw_scene(next, target, fade, 1, uploaded, upright, over=mix):
                self._mix_aside(next, target, upright, fade, mix, uploaded)
        self.frames += 1

    def _mix_aside(self, next: Scene, target: moderngl.Framebuffer, upright: bool, fade: float, mix: float,
                   uploaded: dict) -> None:
        """A crossfade whose second scene has overlapping panels: drawn whole into the scratch target,
        then laid over the first with opacity `mix`."""
        self._draw_scene(next, self._scratch_fbo, fade, 1, uploaded)
        # Lay the second scene over the first with opacity `mix` (both already faded).
        target.use()
        self.ctx.viewport = (0, 0, *self.size)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        # The scratch scene is upside down: drawn as it is offscreen, flipped onto the window.
        self._quads.draw(self._scratch, "nearest", (-1.0, 1.0, 1.0, -1.0) if upright else (-1.0, -1.0, 1.0, 1.0),
                         FULL_UV, (1.0, 1.0, 1.0, mix))
        self.ctx.disable(moderngl.BLEND)

    # -- output ---------------------------------------------------------------------------------

    def read(self) -> np.ndarray:
        """The last frame as [H, W, 3] uint8, rows top to bottom.

        The array is reused by the next `read()`: copy it to keep it. A frame composed into the
        window (`draw_into`) is read from its back buffer: before the window's swap.
        """
        if self._direct:
            if self._screen_rows is None:  # made with the targets' size; resize() drops it
                self._screen_rows = np.empty_like(self._readback)
            self.ctx.screen.read_into(self._screen_rows, viewport=(0, 0, *self.size), components=3, alignment=1)
            np.copyto(self._readback, self._screen_rows[::-1])  # GL reads the bottom row first
            return self._readback
        self._fbo.read_into(self._readback, components=3, alignment=1)
        return self._readback

    def read_rgbx(self, out: np.ndarray) -> np.ndarray:
        """The last frame into `out`, [H, W, 4] uint8 (RGB and the target's alpha), rows top to
        bottom. Four components are GL's own layout, so the driver copies rows as they are instead
        of repacking every pixel (several times faster on llvmpipe; docs/figures.md, NDI), and NDI
        sends four (RGBX), so its sink reads here."""
        if self._direct:
            rows = self._screen_rows4
            if rows is None or rows.shape != out.shape:
                rows = self._screen_rows4 = np.empty_like(out)
            self.ctx.screen.read_into(rows, viewport=(0, 0, *self.size), components=4, alignment=1)
            np.copyto(out, rows[::-1])  # GL reads the bottom row first
            return out
        self._fbo.read_into(out, components=4, alignment=1)
        return out

    def present(self, window: Any) -> None:
        """Draw the last frame into `window`'s default framebuffer, letterboxed to its aspect.

        Swapping buffers is the window's job (`window.swap()`); a headless window shows nothing.
        """
        if getattr(window, "headless", False):
            return
        if window.ctx is not self.ctx:
            raise ValueError("present() needs a compositor made on the window's own context (window.ctx)")
        if self._direct and window is self._window:
            return  # composed into this window's back buffer already
        fw, fh = window.framebuffer_size
        if fw <= 0 or fh <= 0:
            return  # minimised
        self.ctx.screen.use()
        self.ctx.viewport = (0, 0, fw, fh)
        self.ctx.clear(0.0, 0.0, 0.0, 1.0)
        (x0, y0, x1, y1), _ = fit("contain", (0, 0, fw, fh), self.size)
        same = (x1 - x0, y1 - y0) == self.size
        self._quads.draw(self._frame, "nearest" if same else "linear", to_ndc(x0, y0, x1, y1, (fw, fh), True))
