"""The compositor: per-panel images -> one graded, laid-out, faded frame on the GPU (ModernGL).

    comp = Compositor(ctx, (1920, 1080))
    comp.render(Scene(images, layout, colour), fade=1.0)               # images: {panel: [3, H, W]}
    comp.render(Scene(a, layout_a), next=Scene(b, layout_b), mix=0.3)  # crossfade two scenes
    frame = comp.read()        # [H, W, 3] uint8, rows top to bottom (a reused buffer)
    comp.present(window)       # draw the frame into the window (then window.swap())

Where the work happens, and why (measured on Mesa llvmpipe, the no-GPU case, 1920x1080):
- Colour (hue, saturation, brightness) is a 3x3 matrix applied to the *panel images* on their
  own device before upload: panels are 28-512 px, the output is 2 Mpx, and on llvmpipe a matrix
  in the fragment shader costs ~2.5 ms per full-screen pass. Colour and filtering are both linear,
  so grading before sampling gives the same picture.
- Upload: on an accelerator, images are graded and narrowed to uint8 HWC there, then copied once
  into a host buffer that lives with the panel's texture; on the CPU the same is done with numpy
  into reused buffers (torch's spinning OpenMP threads starve llvmpipe, see `_grade_cpu`); a CPU
  uint8 HWC image with no grade is written as it is. Textures,
  host buffers, framebuffers, samplers and the quad are made once and reused; a texture is only
  remade when a panel's size changes (`gl_objects_created` counts every GL object made).
- The offscreen frame is drawn upside down (image top on framebuffer row 0) so `read()` returns
  rows in top-to-bottom order with no flip on the CPU; `present()` draws it the right way up.
- `read()` asks GL for 3 components straight into a reused array: cheaper than reading RGBA and
  dropping alpha in numpy (a strided 6 MB copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NamedTuple

import moderngl
import numpy as np
import torch

from ..config import setting
from .gl import load_program

Filter = Literal["nearest", "linear"]


@dataclass(frozen=True)
class Colour:
    """Colour grading: hue rotation, then saturation, then brightness (a gain)."""

    hue: float = setting(0.0, ge=-360.0, le=360.0, doc="hue rotation in degrees (120 turns red into green)")
    saturation: float = setting(1.0, ge=0.0, le=4.0, doc="0 grey, 1 unchanged, above 1 more vivid")
    brightness: float = setting(1.0, ge=0.0, le=4.0, doc="gain: 0 black, 1 unchanged")


@dataclass(frozen=True)
class PanelStyle(Colour):
    """How one panel is drawn: its own colour grade (before the scene's) and its scaling filter."""

    filter: Filter | None = setting(None, doc="'nearest' keeps pixels crisp, 'linear' smooths; "
                                              "unset: the layout's filter")


@dataclass(frozen=True)
class Layout:
    """Where each panel goes on the output frame.

    Modes: 'side_by_side' (one row, one cell per panel), 'grid' (rows x cols, filled row by row)
    and 'rects' (explicit [x, y, width, height] per panel, fractions of the output from its
    top-left corner; margin and gap do not apply). Each image is fitted into its cell:
    'contain' keeps its aspect and letterboxes with the background colour, 'cover' keeps the
    aspect and crops, 'stretch' fills the cell, 'integer' is the largest whole-number scale
    that fits (crisp pixels with 'nearest'; 'contain' when the cell is smaller than the image).
    """

    mode: Literal["side_by_side", "grid", "rects"] = setting("side_by_side", doc="how cells are made")
    panels: tuple[str, ...] = setting((), doc="panel names in cell order, row by row; '' leaves a "
                                              "cell empty; empty: every panel, in the system's order")
    rows: int = setting(1, ge=1, le=64, doc="grid rows")
    cols: int = setting(0, ge=0, le=64, doc="grid columns; 0: as many as the panels need")
    rects: tuple[tuple[float, float, float, float], ...] = setting(
        (), ge=0.0, le=1.0, doc="mode 'rects': [x, y, width, height] per panel, fractions of the output")
    margin: float = setting(0.0, ge=0.0, lt=0.5, doc="space around the cells, fraction of the output's shorter side")
    gap: float = setting(0.0, ge=0.0, lt=1.0, doc="space between cells, fraction of the output's shorter side")
    fit: Literal["contain", "cover", "stretch", "integer"] = setting("contain", doc="how an image fills its cell")
    filter: Filter = setting("linear", doc="scaling filter for panels without their own style")
    background: tuple[float, float, float] = setting((0.0, 0.0, 0.0), ge=0.0, le=1.0,
                                                     doc="letterbox / empty-cell colour, RGB 0..1")
    styles: dict[str, PanelStyle] = setting(default_factory=dict, doc="per-panel style, by panel name")

    def __post_init__(self):
        # ValueError("key: message") is turned into a ConfigError naming the file by load_dataclass.
        if self.mode == "rects":
            if not self.panels:
                raise ValueError("panels: mode 'rects' needs the panel names, one per rect")
            if len(self.rects) != len(self.panels):
                raise ValueError(f"rects: {len(self.rects)} rects for {len(self.panels)} panels, "
                                 "expected one per panel")
            for i, (x, y, w, h) in enumerate(self.rects):
                if w <= 0 or h <= 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
                    raise ValueError(f"rects: rect {i} {[x, y, w, h]} must have a positive size and lie inside 0..1")
        elif self.rects:
            raise ValueError(f"rects: only used with mode 'rects', not {self.mode!r}")
        if self.mode == "grid" and self.cols and len(self.panels) > self.rows * self.cols:
            raise ValueError(f"panels: {len(self.panels)} panels do not fit a {self.rows}x{self.cols} grid")

    def panel_names(self, available: list[str]) -> list[str]:
        """The cell contents: `panels` if given, else every available panel in order."""
        return list(self.panels) if self.panels else list(available)

    def style(self, name: str) -> PanelStyle:
        """The style of panel `name` (the default style when it has none)."""
        return self.styles.get(name) or _DEFAULT_STYLE

    def check_panels(self, available: list[str], source: str, key: str = "layout") -> None:
        """Raise ConfigError when the layout names a panel the system does not have."""
        from ..errors import ConfigError
        for where, names in (("panels", [n for n in self.panels if n]), ("styles", list(self.styles))):
            for name in names:
                if name not in available:
                    raise ConfigError(source, f"{key}.{where}", f"no panel {name!r}, expected one of "
                                      f"{', '.join(repr(a) for a in available)}")


_DEFAULT_STYLE = PanelStyle()


@dataclass(frozen=True)
class Scene:
    """What one frame shows: images {panel: [3, H, W] or [H, W, 3], uint8 or float 0..1}, how
    they are laid out, and the scene's colour grade (applied after each panel's own)."""

    images: Mapping[str, torch.Tensor]
    layout: Layout = field(default_factory=Layout)
    colour: Colour = field(default_factory=Colour)


class Placement(NamedTuple):
    """One panel draw: destination in output pixels (top-left origin) and source texture coords."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    u0: float = 0.0
    v0: float = 0.0
    u1: float = 1.0
    v1: float = 1.0


# ---------------------------------------------------------------------------------------------
# Geometry and colour: pure functions, testable without GL.

def cells(layout: Layout, out_size: tuple[int, int], names: list[str]) -> list[tuple[str, float, float, float, float]]:
    """The cells (name, x, y, w, h) in output pixels, top-left origin; '' names are left out."""
    width, height = out_size
    if layout.mode == "rects":
        return [(n, x * width, y * height, w * width, h * height)
                for n, (x, y, w, h) in zip(names, layout.rects) if n]
    n = len(names)
    if n == 0:
        return []
    if layout.mode == "side_by_side":
        rows, cols = 1, n
    else:
        rows = layout.rows
        cols = layout.cols or math.ceil(n / rows)
        if n > rows * cols:
            raise ValueError(f"{n} panels do not fit a {rows}x{cols} grid")
    unit = min(width, height)
    margin, gap = layout.margin * unit, layout.gap * unit
    cw = (width - 2 * margin - (cols - 1) * gap) / cols
    ch = (height - 2 * margin - (rows - 1) * gap) / rows
    if cw <= 0 or ch <= 0:
        raise ValueError(f"margin {layout.margin} and gap {layout.gap} leave no room for {rows}x{cols} cells")
    out = []
    for i, name in enumerate(names):
        if name:
            r, c = divmod(i, cols)
            out.append((name, margin + c * (cw + gap), margin + r * (ch + gap), cw, ch))
    return out


def fit(fit_mode: str, cell: tuple[float, float, float, float], image_size: tuple[int, int]) -> tuple:
    """Fit an image (w, h) into a cell (x, y, w, h): ((x0, y0, x1, y1), (u0, v0, u1, v1)).

    Destination edges are rounded to whole pixels so neighbouring panels never blur into a seam.
    """
    x, y, cw, ch = cell
    iw, ih = image_size
    uv = (0.0, 0.0, 1.0, 1.0)
    if fit_mode == "stretch":
        w, h = cw, ch
    elif fit_mode == "cover":
        s = max(cw / iw, ch / ih)
        # Show the centred part of the image that the cell can hold at scale s.
        du, dv = (1 - cw / (iw * s)) / 2, (1 - ch / (ih * s)) / 2
        uv = (du, dv, 1 - du, 1 - dv)
        w, h = cw, ch
    else:
        s = min(cw / iw, ch / ih)
        if fit_mode == "integer" and s >= 1:
            s = math.floor(s)
        w, h = iw * s, ih * s
    x0, y0 = round(x + (cw - w) / 2), round(y + (ch - h) / 2)
    return (x0, y0, x0 + round(w), y0 + round(h)), uv


def place(layout: Layout, out_size: tuple[int, int], sizes: Mapping[str, tuple[int, int]],
          names: list[str] | None = None) -> list[Placement]:
    """Every panel draw of `layout` on an output of `out_size`, given each panel's (w, h)."""
    names = layout.panel_names(list(sizes)) if names is None else names
    out = []
    for name, *cell in cells(layout, out_size, names):
        (x0, y0, x1, y1), uv = fit(layout.fit, tuple(cell), sizes[name])
        out.append(Placement(name, x0, y0, x1, y1, *uv))
    return out


_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 weights: saturation 0 keeps perceived brightness


def colour_matrix(colour: Colour) -> np.ndarray:
    """The 3x3 RGB matrix of a grade: brightness * saturation @ hue-rotation.

    Hue turns colours about the grey axis (1, 1, 1), so greys stay grey and 120 degrees maps
    red -> green -> blue exactly.
    """
    t = math.radians(colour.hue)
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    hue = math.cos(t) * np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * np.outer(k, k)
    s = colour.saturation
    sat = s * np.eye(3) + (1 - s) * np.tile(_LUMA, (3, 1))
    return colour.brightness * sat @ hue


def _is_identity(m: np.ndarray) -> bool:
    return bool(np.allclose(m, np.eye(3), atol=1e-6))


# ---------------------------------------------------------------------------------------------

class _PanelTexture:
    """A panel's texture and the host buffers its pixels pass through (all reused every frame)."""

    def __init__(self, texture: moderngl.Texture, host: torch.Tensor):
        self.texture = texture
        self.host = host  # [H, W, C] uint8, CPU (pinned when the images live on CUDA: faster copies)
        self.work: np.ndarray | None = None   # [C, H, W] float32, CPU grading
        self.plane: np.ndarray | None = None  # [H, W] float32, CPU grading

    def cpu_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self.work is None:
            h, w, c = self.host.shape
            self.work = np.empty((c, h, w), dtype=np.float32)
            self.plane = np.empty((h, w), dtype=np.float32)
        return self.work, self.plane


def _hwc(image: torch.Tensor, name: str) -> torch.Tensor:
    """Any accepted panel image as an [H, W, C] view (C 1 or 3), same dtype and device."""
    x = image.detach()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"panel {name!r}: expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim == 2:
        return x.unsqueeze(-1)  # [H, W] grey -> [H, W, 1]
    if x.ndim != 3:
        raise ValueError(f"panel {name!r}: expected [3, H, W] or [H, W, 3], got {list(image.shape)}")
    if x.shape[0] in (1, 3):
        # Channels first is torch's convention, so it wins the (rare) tie with a 1- or 3-row HWC image.
        x = x.permute(1, 2, 0)  # [C, H, W] -> [H, W, C]
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"panel {name!r}: expected 1 or 3 channels, got {list(image.shape)}")
    return x


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
        self._program = self._made(load_program(ctx, "panel.vert", "panel.frag"))
        self._u_rect, self._u_uv, self._u_gain = (self._program[k] for k in ("rect", "uv_rect", "gain"))
        self._program["image"].value = 0
        # The unit square, y down, as a triangle strip: (0,0) top-left ... (1,1) bottom-right.
        quad = self._made(ctx.buffer(np.array([0, 0, 1, 0, 0, 1, 1, 1], dtype="f4").tobytes()))
        self._vao = self._made(ctx.vertex_array(self._program, [(quad, "2f", "corner")]))
        # Samplers override the textures' own filtering, so one texture can be drawn nearest in
        # one scene and linear in the other. Clamp to edge: linear filtering must not wrap around.
        self._samplers = {
            name: self._made(ctx.sampler(filter=(f, f), repeat_x=False, repeat_y=False))
            for name, f in (("nearest", moderngl.NEAREST), ("linear", moderngl.LINEAR))}
        self._textures: dict[tuple[int, str], _PanelTexture] = {}
        self._make_targets()

    # -- GL object bookkeeping ----------------------------------------------------------------

    def _made(self, obj):
        self.gl_objects_created += 1
        return obj

    def _make_targets(self):
        w, h = self.size
        # RGBA8: 3-component render targets are not required to be renderable and are slower here.
        self._frame = self._made(self.ctx.texture((w, h), 4))
        self._fbo = self._made(self.ctx.framebuffer([self._frame]))
        # Second scene of a crossfade; made up front so a crossfade starting mid-show allocates nothing.
        self._scratch = self._made(self.ctx.texture((w, h), 4))
        self._scratch_fbo = self._made(self.ctx.framebuffer([self._scratch]))
        self._readback = np.empty((h, w, 3), dtype=np.uint8)

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
        for pt in self._textures.values():
            pt.texture.release()
        self._textures.clear()
        self._unbind_targets()
        for obj in (self._fbo, self._frame, self._scratch_fbo, self._scratch, self._vao,
                    self._program, *self._samplers.values()):
            obj.release()

    @property
    def texture(self) -> moderngl.Texture:
        """The composed frame (RGBA8; row 0 is the image's top row)."""
        return self._frame

    # -- upload ---------------------------------------------------------------------------------

    def _texture_for(self, key: tuple[int, str], h: int, w: int, c: int, pin: bool) -> _PanelTexture:
        pt = self._textures.get(key)
        if pt is not None and pt.host.shape == (h, w, c):
            return pt
        if pt is not None:
            pt.texture.release()
        tex = self._made(self.ctx.texture((w, h), c, alignment=1))
        if c == 1:
            tex.swizzle = "RRR1"  # grey panels sample as grey RGB
        host = torch.empty((h, w, c), dtype=torch.uint8, pin_memory=pin)
        pt = self._textures[key] = _PanelTexture(tex, host)
        return pt

    def _upload(self, key: tuple[int, str], image: torch.Tensor, matrix: np.ndarray | None) -> _PanelTexture:
        """Grade `image` on its device, write it into the texture for `key`; returns that texture."""
        x = _hwc(image, key[1])  # [H, W, C]
        if not (x.dtype == torch.uint8 or x.dtype.is_floating_point):
            raise ValueError(f"panel {key[1]!r}: expected uint8 or float pixels, got {x.dtype}")
        h, w, c = x.shape
        on_cpu = x.device.type == "cpu"
        pt = self._texture_for(key, h, w, c, pin=x.device.type == "cuda")
        if on_cpu and x.dtype == torch.uint8 and matrix is None:
            if x.is_contiguous():
                pt.texture.write(memoryview(x.numpy()))  # already what GL wants: no copy at all
                return pt
            np.copyto(pt.host.numpy(), x.numpy())
        elif on_cpu:
            self._grade_cpu(pt, x, matrix)
        else:
            with torch.no_grad():
                # On the accelerator: grade, narrow to uint8, then one copy of a quarter of the bytes.
                y = x.float() if x.dtype.is_floating_point else x.float() / 255.0
                if matrix is not None:
                    m = torch.as_tensor(matrix.T, dtype=torch.float32).to(y.device)
                    y = y * float(matrix[0].sum()) if c == 1 else y @ m  # [H, W, C]
                pt.host.copy_(y.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).contiguous())
        pt.texture.write(memoryview(pt.host.numpy()))
        return pt

    @staticmethod
    def _grade_cpu(pt: _PanelTexture, x: torch.Tensor, matrix: np.ndarray | None) -> None:
        """[H, W, C] CPU image -> graded uint8 in pt.host, with numpy into reused buffers.

        Why numpy and not torch here: torch's CPU ops run on OpenMP threads that keep spinning
        after each op, and on a machine with few cores they starve llvmpipe's render threads;
        measured here (2 busy cores), a 256 px panel upload took ~48 ms through torch and ~0.5 ms
        through numpy, which stays on this thread.
        """
        if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
            x = x.float()  # bfloat16 and friends have no numpy dtype
        src = x.numpy().transpose(2, 0, 1)  # [C, H, W] view: planes, contiguous for CHW tensors
        work, plane = pt.cpu_buffers()
        scale = 255.0 if x.dtype.is_floating_point else 1.0
        if matrix is None:
            np.multiply(src, scale, out=work)
        elif src.shape[0] == 1:
            # Grey stays grey under hue rotation and saturation: only the gain (a row sum) is left.
            np.multiply(src, scale * float(matrix[0].sum()), out=work)
        else:
            for i in range(3):
                np.multiply(src[0], scale * matrix[i, 0], out=work[i])
                for j in (1, 2):
                    np.multiply(src[j], scale * matrix[i, j], out=plane)
                    work[i] += plane
        work += 0.5  # round to nearest when the cast below truncates
        np.clip(work, 0.0, 255.0, out=work)
        np.copyto(pt.host.numpy(), work.transpose(1, 2, 0), casting="unsafe")  # [C, H, W] -> [H, W, C] uint8

    # -- drawing --------------------------------------------------------------------------------

    def _draw_scene(self, scene: Scene, fbo: moderngl.Framebuffer, fade: float, slot: int,
                    uploaded: dict) -> None:
        layout = scene.layout
        names = layout.panel_names(list(scene.images))
        global_m = colour_matrix(scene.colour)
        textures: dict[str, _PanelTexture] = {}
        for name in dict.fromkeys(n for n in names if n):
            if name not in scene.images:
                raise ValueError(f"layout names panel {name!r}, images have {', '.join(map(repr, scene.images))}")
            image = scene.images[name]
            m = global_m @ colour_matrix(layout.style(name))
            m = None if _is_identity(m) else m
            # The same tensor with the same grade in both scenes of a crossfade is uploaded once.
            dedupe = (id(image), None if m is None else m.tobytes())
            if dedupe in uploaded:
                textures[name] = uploaded[dedupe]
            else:
                textures[name] = uploaded[dedupe] = self._upload((slot, name), image, m)

        fbo.use()
        r, g, b = layout.background
        self.ctx.clear(r * fade, g * fade, b * fade, 1.0)
        w, h = self.size
        sizes = {n: (pt.host.shape[1], pt.host.shape[0]) for n, pt in textures.items()}
        self._u_gain.value = (fade, fade, fade, 1.0)
        for p in place(layout, self.size, sizes, names):
            pt = textures[p.name]
            self._samplers[layout.style(p.name).filter or layout.filter].use(0)
            pt.texture.use(0)
            # Offscreen targets are drawn upside down: pixel row y -> NDC -1 + 2y/h.
            self._u_rect.value = (2 * p.x0 / w - 1, 2 * p.y0 / h - 1, 2 * p.x1 / w - 1, 2 * p.y1 / h - 1)
            self._u_uv.value = (p.u0, p.v0, p.u1, p.v1)
            self._vao.render(moderngl.TRIANGLE_STRIP)

    def render(self, scene: Scene, *, fade: float = 1.0, next: Scene | None = None, mix: float = 0.0) -> None:
        """Compose one frame into the offscreen framebuffer.

        `fade` is the master level (1 the picture, 0 black). With `next`, the frame is
        (1 - mix) * scene + mix * next: a crossfade between two scenes (layouts, images, grades).
        """
        fade = min(max(float(fade), 0.0), 1.0)
        mix = min(max(float(mix), 0.0), 1.0)
        uploaded: dict = {}
        if next is None or mix == 0.0:
            self._draw_scene(scene, self._fbo, fade, 0, uploaded)
        elif mix == 1.0:
            self._draw_scene(next, self._fbo, fade, 1, uploaded)
        else:
            self._draw_scene(scene, self._fbo, fade, 0, uploaded)
            self._draw_scene(next, self._scratch_fbo, fade, 1, uploaded)
            # Lay the second scene over the first with opacity `mix` (both already faded).
            self._fbo.use()
            self.ctx.enable(moderngl.BLEND)
            self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
            self._samplers["nearest"].use(0)
            self._scratch.use(0)
            self._u_rect.value = (-1.0, -1.0, 1.0, 1.0)
            self._u_uv.value = (0.0, 0.0, 1.0, 1.0)
            self._u_gain.value = (1.0, 1.0, 1.0, mix)
            self._vao.render(moderngl.TRIANGLE_STRIP)
            self.ctx.disable(moderngl.BLEND)
        self.frames += 1

    # -- output ---------------------------------------------------------------------------------

    def read(self) -> np.ndarray:
        """The last frame as [H, W, 3] uint8, rows top to bottom.

        The array is reused by the next `read()`: copy it to keep it.
        """
        self._fbo.read_into(self._readback, components=3, alignment=1)
        return self._readback

    def present(self, window: Any) -> None:
        """Draw the last frame into `window`'s default framebuffer, letterboxed to its aspect.

        Swapping buffers is the window's job (`window.swap()`); a headless window shows nothing.
        """
        if getattr(window, "headless", False):
            return
        if window.ctx is not self.ctx:
            raise ValueError("present() needs a compositor made on the window's own context (window.ctx)")
        fw, fh = window.framebuffer_size
        if fw <= 0 or fh <= 0:
            return  # minimised
        self.ctx.screen.use()
        self.ctx.viewport = (0, 0, fw, fh)
        self.ctx.clear(0.0, 0.0, 0.0, 1.0)
        (x0, y0, x1, y1), _ = fit("contain", (0, 0, fw, fh), self.size)
        same = (x1 - x0, y1 - y0) == self.size
        self._samplers["nearest" if same else "linear"].use(0)
        self._frame.use(0)
        # The window's framebuffer is the right way up: pixel row y -> NDC 1 - 2y/h.
        self._u_rect.value = (2 * x0 / fw - 1, 1 - 2 * y0 / fh, 2 * x1 / fw - 1, 1 - 2 * y1 / fh)
        self._u_uv.value = (0.0, 0.0, 1.0, 1.0)
        self._u_gain.value = (1.0, 1.0, 1.0, 1.0)
        self._vao.render(moderngl.TRIANGLE_STRIP)
