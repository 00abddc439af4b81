"""What every generated control surface shares (the TouchOSC tablet and phone layouts, the Max
patch): the words on a control, the colours of the show and of each piece, which parameters get a
fader and the scene buttons' labels. Its own module so that the layouts import it, not each other."""

from __future__ import annotations

from typing import Sequence

from ..schema import SHOW, ParamSpec

__all__ = ["PALETTE", "SHOW_COLOUR", "label", "scene_names", "plays"]

PALETTE = [(0.96, 0.55, 0.20), (0.30, 0.70, 0.95), (0.55, 0.85, 0.35), (0.90, 0.40, 0.70),
           (0.95, 0.85, 0.30), (0.60, 0.50, 0.95)]
SHOW_COLOUR = (0.85, 0.85, 0.85)


def label(spec: ParamSpec) -> str:
    """The name an artist reads on a controller: words, not an identifier."""
    words = spec.name.replace("_", " ")
    return f"{words} ({spec.unit})" if spec.unit else words


def scene_names(groups, scenes: Sequence[str] | None = None) -> list[str]:
    """The scenes' button labels: `scenes` as the show names them, else "scene <i>" for each index
    the show group's `scene` parameter allows (none without a show group)."""
    if scenes is not None:
        return [name or f"scene {i}" for i, name in enumerate(scenes)]
    spec = next((s for s in dict(groups).get(SHOW, ()) if s.name == "scene"), None)
    return [] if spec is None else [f"scene {i}" for i in range(int(spec.hi - spec.lo) + 1)]


def plays(piece: str, spec: ParamSpec) -> bool:
    """Whether `spec` gets a fader or toggle: the show's scene gets a button per scene instead."""
    return not (piece == SHOW and spec.name == "scene")
