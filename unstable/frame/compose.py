"""Panel images + a parameter snapshot -> one composed frame, through the GL compositor.

Live and offline compose with this one class: each piece's `hue`, `saturation` and `fade` become
the style of its panels on top of the layout's own styles (`fade` is a gain towards black, the
piece's opacity over the background) and the show's `master_fade` is the compositor's fade.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from ..schema import COMPOSITOR, SHOW, common_specs
from ..display.compositor import Compositor
from ..display.layout import Colour, Layout, PanelStyle, Scene

__all__ = ["Composer"]

# Every piece's compositor parameters with their defaults, as the schema declares them.
_LOOKS = tuple((s.name, s.default) for s in common_specs() if s.reads == COMPOSITOR)
_PLAIN = tuple(d for _, d in _LOOKS)


class Composer:
    """Composes {display panel: [3, H, W]} with one scene's (layout, colour), or two crossfading."""

    def __init__(self, compositor: Compositor, piece_of: Mapping[str, str]):
        self.compositor = compositor
        self.piece_of = dict(piece_of)  # display panel -> piece
        # (id(layout), looks) -> (layout, styled copy). The entry keeps its layout alive: a freed
        # layout's address is reused by the next one made, which would get the old one's copy.
        self._styled: dict[tuple, tuple[Layout, Layout]] = {}

    def styled(self, layout: Layout, snapshot: Mapping[str, Mapping[str, float]]) -> Layout:
        """`layout` with every shown panel's piece colour folded into its style (cached)."""
        names = [n for n in layout.panel_names(list(self.piece_of)) if n]
        looks = tuple((n, *(float(snapshot.get(self.piece_of[n], {}).get(k, d)) for k, d in _LOOKS))
                      for n in names)
        key = (id(layout), looks)
        hit = self._styled.get(key)
        if hit is not None and hit[0] is layout:
            return hit[1]
        styles = dict(layout.styles)
        for name, *values in looks:
            if tuple(values) == _PLAIN:
                continue
            look = dict(zip((k for k, _ in _LOOKS), values))
            base = layout.style(name)
            styles[name] = PanelStyle(hue=base.hue + look["hue"], saturation=base.saturation * look["saturation"],
                                      brightness=base.brightness * look["fade"], filter=base.filter)
        out = layout if styles == dict(layout.styles) else dataclasses.replace(layout, styles=styles)
        if len(self._styled) > 64:  # parameters glide: keep only the recent looks
            self._styled.clear()
        self._styled[key] = (layout, out)
        return out

    def render(self, images: Mapping[str, torch.Tensor], snapshot: Mapping[str, Mapping[str, float]],
               a: tuple[Layout, Colour], b: tuple[Layout, Colour] | None = None, mix: float = 0.0,
               next_images: Mapping[str, torch.Tensor] | None = None) -> None:
        """Compose {display panel: [3, H, W]} with scene `a`, crossfading into `b` by `mix`.

        `next_images` are the images of `b` when they differ from `a`'s (a timelapse crossfades one
        layout between two checkpoints); by default both scenes show `images`.
        """
        fade = float(snapshot.get(SHOW, {}).get("master_fade", 1.0))
        first = Scene(images, self.styled(a[0], snapshot), a[1])
        second = None
        if b is not None:
            second = Scene(images if next_images is None else next_images, self.styled(b[0], snapshot), b[1])
        self.compositor.render(first, fade=fade, next=second, mix=mix if second is not None else 0.0)
