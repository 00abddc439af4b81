"""Layouts, scenes and colour: the GL-free half of the display, pure data and maths.

What a show or render-job file describes (`Layout`, `PanelStyle`, `Colour`) and what the
compositor computes from it without touching GL (`cells`, `fit`, `place`, `colour_matrix`).
Nothing here imports moderngl, so loading a show or a render job, or validating one, needs no
GL library; `unstable.display.compositor` draws what this module places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Mapping, NamedTuple

import numpy as np

from ..config import setting

if TYPE_CHECKING:
    import torch

__all__ = ["Filter", "Colour", "PanelStyle", "Layout", "Scene", "Placement", "cells", "fit", "place",
           "colour_matrix", "upscale_factor"]

# 'bicubic' and 'sharp' upscale the small image by a whole factor before it is drawn linearly (see
# upscale()): a 64 px generator on a 900 px projector panel then looks made, not smeared.
Filter = Literal["nearest", "linear", "bicubic", "sharp"]


@dataclass(frozen=True)
class Colour:
    """Colour grading: hue rotation, then saturation, then brightness (a gain)."""

    hue: float = setting(0.0, ge=-360.0, le=360.0, doc="hue rotation in degrees (120 turns red into green)")
    saturation: float = setting(1.0, ge=0.0, le=4.0, doc="0 grey, 1 unchanged, above 1 more vivid")
    brightness: float = setting(1.0, ge=0.0, le=4.0, doc="gain: 0 black, 1 unchanged")


@dataclass(frozen=True)
class PanelStyle(Colour):
    """How one panel is drawn: its own colour grade (before the scene's) and its scaling filter."""

    filter: Filter | None = setting(None, doc="'nearest' keeps pixels crisp, 'linear' smooths, 'bicubic' "
                                              "upscales smoothly with crisper edges, 'sharp' is bicubic with "
                                              "an unsharp mask; unset: the layout's filter")


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


UPSCALED = ("bicubic", "sharp")
# The bicubic (and unsharp) work grows with k^2, on the render thread: at 1080p a 64 px panel
# upscaled x8 costs a CPU a large part of a frame per panel, x4 about a quarter of that
# (docs/figures.md, "Figures moved out of docstrings"). Past x4 the GL sampler's
# linear filter finishes the enlargement between pixels the bicubic already rounded, which looks
# the same from a projector's distance.
MAX_UPSCALE = 4


def upscale_factor(cell: tuple[float, float], image: tuple[int, int]) -> int:
    """The whole factor a quality filter upscales an image (w, h) by before drawing it into a cell
    (w, h): as close to the cell as whole numbers go, 1 (nothing) when the image is not smaller."""
    k = int(min(cell[0] / max(image[0], 1), cell[1] / max(image[1], 1)))
    return max(1, min(MAX_UPSCALE, k))
