"""Panel sources: a system (or its live sampling copy), its walk and its panel names.

A source answers one question for the frame pipeline: the images of its panels at a walk time,
for one parameter snapshot. Live shows, show renders and render jobs all sample through it, so a
panel's latents at walk time t are the same everywhere: one `Walk` per source over all of its
system's panels (a panel's path is seeded by its place in its own system, so leaving a panel out
changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import load_checkpoint, restore
from ..errors import CheckpointError, ConfigError, UnstableError
from ..show import display_name
from ..system import build_system, piece_from_dict
from ..upload import to_device
from ..walk import Walk, WalkSettings

log = logging.getLogger("unstable.frame")

__all__ = ["PanelSource", "make_walk", "open_run", "load_run_into"]


def make_walk(name: str, system: Any, settings: WalkSettings, device: torch.device, config_file: str,
              key: str = "walk") -> Walk:
    """The walk of source `name` over all of its system's panels (display names `name/panel`); a bad
    walk is a ConfigError naming `config_file` (the show or job) and `key`."""
    dims = {display_name(name, p): d for p, d in system.panels().items()}
    try:
        return Walk(settings, dims, device)
    except (UnstableError, ValueError) as e:
        raise ConfigError(config_file, key, str(e).split(": ", 1)[-1]) from None


@dataclass
class PanelSource:
    """One piece (or a render job's source) as the pipeline sees it; the parameters it samples
    with are each frame's snapshot (FrameState.snapshot), never its own.

    `sampler` has `sample(latents, params) -> {panel: [N, 3, H, W] in 0..1}`: the system itself
    offline, its SamplingMirror live (the weights training does not touch mid-frame).
    """

    name: str
    system: Any
    sampler: Any
    walk: Walk
    panels: dict[str, str]                    # display name -> the system's panel name (shown ones)

    def latents(self, times, scales=None) -> dict[str, torch.Tensor]:
        """{display: z [T, D]} of this source's shown panels at walk times `times`.

        `scales` (one per time, a render job's temperature curve) multiply the latents of the walk
        at temperature 1; without them the walk's own temperature applies. Every path is linear in
        the temperature (unstable.walk), so a scaled row is the walk at that temperature.
        """
        if scales is None:
            z = self.walk.latents_at_many(list(times))
            return {d: z[d] for d in self.panels}
        z = self.walk.latents_at_many(list(times), temperature=1.0)
        scale = to_device(list(scales), self.walk.device, torch.float32)[:, None]  # [T, 1]
        return {d: z[d] * scale for d in self.panels}

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float],
               wanted=None) -> dict[str, torch.Tensor]:
        """{display: [N, 3, H, W]} for {display: z [N, D]} (only the `wanted` displays, default all)."""
        wanted = self.panels if wanted is None else {d: self.panels[d] for d in wanted}
        out = self.sampler.sample({q: latents[d] for d, q in wanted.items()}, params)
        return {d: out[q] for d, q in wanted.items()}


def open_run(path: Path, device: torch.device) -> tuple[Any, dict]:
    """A system rebuilt from a run's checkpoint file (its own piece config) with its weights loaded.

    Returns (system, payload).
    """
    payload = load_checkpoint(path, map_location=device)
    piece = piece_from_dict(payload["piece"], f"{path} (its piece)")
    system = build_system(piece, device, source=f"{path} (its piece)")
    restore(system, payload, str(path))
    return system, payload


def load_run_into(system: Any, path: Path, device: torch.device) -> dict:
    """Load a piece's checkpoint into `system`, refusing one of another piece; returns the payload."""
    payload = load_checkpoint(path, map_location=device)
    saved = payload.get("piece", {}).get("name") if isinstance(payload.get("piece"), dict) else None
    if saved is not None and saved != system.piece.name:
        raise CheckpointError(f"{path}: checkpoint is of piece {saved!r}, not {system.piece.name!r}; refusing "
                              "to load it (--fresh starts over, --run picks another run folder)")
    restore(system, payload, str(path))
    return payload
