"""A timelapse source: one run's checkpoints in turn, at a walk time that stands still.

Where a walk source answers "the images at walk time t", a timelapse source answers "the images
of checkpoint k": the timeline says which checkpoint a frame shows (and which one it crossfades
into, `FrameState.checkpoints`), the source loads those weights into its system and samples them.
A checkpoint is shown for many frames in a row, so its images are kept until the timelapse has
moved past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..checkpoint import load_checkpoint, restore
from ..schema import SAMPLING, with_common
from .sources import PanelSource

__all__ = ["TimelapseSource"]


@dataclass
class TimelapseSource(PanelSource):
    """A `PanelSource` whose weights are `checkpoints[k]` for the frames that show checkpoint k."""

    checkpoints: list[Path] = field(default_factory=list)
    # (checkpoint, walk time, scale, sampling parameters) -> {display: [3, H, W]}: the entries of the
    # checkpoints next to the one asked last (a crossfade shows two, in either direction: a farm's
    # worker may take chunks in any order), at most KEEP of them (a gliding curve makes a new key
    # every frame), so memory stays bounded however long the timelapse.
    _kept: dict = field(default_factory=dict, repr=False)
    KEEP = 8
    _loaded: int | None = field(default=None, repr=False)  # the checkpoint the system holds now
    _not_sampling: frozenset | None = field(default=None, repr=False)  # parameters a sample does not read

    def _sampling_params(self, params: Mapping[str, float]) -> tuple:
        """The parameters a sample reads, as a key: a compositor or training parameter's curve
        (a hue glide, say) changes no image of a checkpoint, so it neither reloads nor re-samples it."""
        if self._not_sampling is None:
            specs = with_common(self.system.param_specs())
            self._not_sampling = frozenset(s.name for s in specs if s.reads != SAMPLING)
        return tuple(sorted((n, float(v)) for n, v in params.items() if n not in self._not_sampling))

    def images_of(self, k: int, walk_time, scale: float | None, params: Mapping[str, float],
                  wanted: Sequence[str]) -> dict[str, torch.Tensor]:
        """{display: [3, H, W]} of checkpoint `k`'s `wanted` panels at `walk_time` (latents scaled
        by `scale`, or at the walk's temperature when None), sampled with `params`."""
        key = (k, walk_time, scale, self._sampling_params(params), tuple(wanted))
        hit = self._kept.get(key)
        if hit is None:
            if self._loaded != k:  # a sampling parameter's glide re-samples the checkpoint held, unread
                path = self.checkpoints[k]
                self._loaded = None  # (until it has loaded whole)
                restore(self.system, load_checkpoint(path, map_location=self.walk.device), str(path))
                self._loaded = k
            z = self.latents([walk_time], None if scale is None else [scale])  # {display: [1, D]}
            hit = {d: x[0] for d, x in self.sample(z, params, wanted).items()}
            near = [(c, v) for c, v in self._kept.items() if abs(c[0] - k) <= 1]
            self._kept = dict(near[-(self.KEEP - 1):])  # insertion order: the oldest go first
            self._kept[key] = hit
        return hit
