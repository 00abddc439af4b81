"""`[keeper]`: the settings of the keeper (unstable.explore.keeper), a table of piece and show files.

Here, below the artworks, so that a piece schema can hold the table without importing the driver
that acts on it (tests/test_floors.py: only drivers import drivers).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import setting

__all__ = ["KeeperSettings"]


@dataclass(frozen=True)
class KeeperSettings:
    """`[keeper]`: hold the piece inside the band while it plays."""

    on: bool = setting(True, doc="adjust the piece's stochasticity to keep it between stasis and explosion")
    every: int = setting(50, ge=1, le=1_000_000, doc="training steps between the keeper's looks")
    stasis_floor: float = setting(0.002, ge=0, le=1, doc="probe motion between looks under which stasis is near")
    max_guard: float = setting(0.1, ge=0, le=1, doc="fraction of the steps the guard may undo before explosion "
                               "counts as near")
    raise_by: float = setting(1.5, gt=1, le=10, doc="learning_rate factor when stasis is near")
    lower_by: float = setting(0.5, gt=0, lt=1, doc="learning_rate factor when explosion is near, and batch_fraction's "
                              "step: x this when stasis stays at the highest rate, / this (up to 1) when explosion "
                              "is near")
    perturb: float = setting(0.0, ge=0, le=1, doc="weight noise (x each tensor's spread) when stasis stays at the "
                             "highest learning_rate and the smallest batch_fraction; 0: none")
    artist_hold: float = setting(300.0, ge=0, le=604800, doc="seconds the keeper leaves a parameter alone after "
                                 "anyone else changed it (a controller, the page, a scene); 0: no wait")
