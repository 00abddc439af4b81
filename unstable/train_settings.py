"""The `[train]` table every piece file has: what `unstable train` does with a piece (steps, grids,
checkpoints, what it keeps on disk). A part of the piece schemas (equilibrium/piece.py,
divergence/system.py), so it lives beside them rather than in the training driver that reads it."""

from __future__ import annotations

from dataclasses import dataclass

from .config import setting


@dataclass(frozen=True)
class TrainSettings:
    """The `[train]` table of every piece file."""

    steps: int = setting(2000, ge=1, doc="steps `unstable train` runs to when --steps is not given")
    grid_every: int = setting(25, ge=1, doc="write a PNG grid every this many steps")
    grid_samples: int = setting(4, ge=1, le=32, doc="rows of fixed latents in each grid")
    checkpoint_every: int = setting(100, ge=1, doc="write a checkpoint every this many steps")
    keep_every: int = setting(100, ge=0, doc="also keep checkpoints/step_NNNNNN.pt every this many steps "
                                  "(and at step 0), for timelapse renders; 0 = off")
    keep_recent: int = setting(4, ge=1, doc="kept checkpoints: the newest this many stay")
    keep_per_octave: int = setting(4, ge=0, doc="kept checkpoints: older ones are thinned to about this many "
                                   "per doubling of the step (log-spaced; 0 = keep all)")
    keep_budget_mb: float = setting(1024.0, ge=0, doc="kept checkpoints: at most this many MB in all, thinned "
                                    "evenly in log-steps past it (0 = no budget)")
    grids_recent: int = setting(40, ge=1, doc="grids/: the newest this many stay")
    grids_per_octave: int = setting(16, ge=0, doc="grids/: older ones thinned to about this many per doubling "
                                    "(0 = keep all)")
    grids_budget_mb: float = setting(200.0, ge=0, doc="grids/: at most this many MB (0 = no budget)")
    log_max_mb: float = setting(32.0, ge=0, doc="log.jsonl is rotated past this many MB (0 = never)")
    log_keep: int = setting(2, ge=0, le=100, doc="rotated logs kept (log.1.jsonl ... log.N.jsonl)")
    min_free_mb: float = setting(256.0, ge=0, doc="refuse to start with less free space than this in the run "
                                 "folder's disk")
