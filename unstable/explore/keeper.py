"""The keeper: holds a training system inside the band between stasis and explosion while it
plays, with the explorer's measures.

Every `every` steps the keeper looks at two things: the motion of the fixed probe images since its
last look (measures.probe, the explorer's yardstick) and how many of those steps the guard undid.

- explosion near (the guard undid more than `max_guard` of the steps): the live `learning_rate`
  goes down by `lower_by` (never below its spec's minimum);
- stasis near (motion under `stasis_floor`): `learning_rate` goes up by `raise_by` (never above
  its spec's maximum); once it is at the maximum and stasis stays, the weights get the
  perturbation the piece declares (`perturb`, noise x each weight tensor's spread; 0: none);
- in the band: nothing.

Each adjustment is a parameter change returned to the caller, who writes it where every other
control writes, and one log line. `keep_training` is the offline loop (tests, the soak benchmark).

In a show: `[keeper]` in a piece file, or `[pieces.NAME.keeper]` in a show file (which replaces the
piece's own table for that show), turns it on for that piece. The live training thread
(unstable.live.training, through unstable.live.keeping.LiveKeeper) consults it every `every` steps
and writes each adjustment into the show's parameter store with the keeper's own origin, so it
shows on OSC and the page and is recorded in the automation like a performer's move.

The keeper does not fight the artist: when anyone else (a controller, the page, MIDI, a scene, a
preset) changes a parameter the keeper adjusts, the keeper leaves that parameter alone for
`artist_hold` seconds after the change (one log line says so), still watching; after that it may
move it again, from where the artist left it.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection, Mapping

import torch

from ..keeper_settings import KeeperSettings
from .measures import probe

log = logging.getLogger("unstable.keeper")

__all__ = ["Keeper", "keep_training"]


class Keeper:
    """The keeper of one system (see the module doc). `perturb(scale)` adds the declared noise
    (a TrainingGuard's `perturb`, so the guard's last good state is the only other copy)."""

    def __init__(self, system, settings: KeeperSettings, *, name: str = "",
                 perturb: Callable[[float], None] | None = None):
        self.system = system
        self.settings = settings
        self.name = name or getattr(getattr(system, "piece", None), "name", "piece")
        self.perturb = perturb
        specs = {s.name: s for s in system.param_specs()}
        self.lr_spec = specs.get("learning_rate")
        self._previous: torch.Tensor | None = None
        self.motion: float | None = None
        self.adjustments: list[str] = []  # every log line, in order

    def observe(self, params: Mapping[str, float], undone: int, steps: int,
                held: Collection[str] = ()) -> dict[str, float]:
        """Look now: `undone` of the last `steps` steps were undone by the guard. Returns the
        parameter changes to apply ({} in the band). `held`: parameters the artist moved lately,
        which the keeper leaves alone (it still measures, so its next look compares with this one)."""
        s = self.settings
        m, self._previous = probe(self.system, self._previous)
        self.motion = m.get("motion")
        if not s.on or self.lr_spec is None or "learning_rate" in held:
            return {}
        lr = float(params.get("learning_rate", self.lr_spec.default))
        if steps and undone / steps > s.max_guard:
            new = max(self.lr_spec.lo, lr * s.lower_by)
            if new < lr:
                return self._change(lr, new, f"explosion near ({undone} of {steps} steps undone)")
            return {}
        if self.motion is not None and self.motion < s.stasis_floor:
            new = min(self.lr_spec.hi, lr * s.raise_by)
            if new > lr:
                return self._change(lr, new, f"stasis near (motion {self.motion:.3g} < {s.stasis_floor:g})")
            if s.perturb > 0 and self.perturb is not None:
                self.perturb(s.perturb)
                self._say(f"stasis at the highest learning_rate (motion {self.motion:.3g}): perturbed the weights "
                          f"(noise x{s.perturb:g})")
        return {}

    def _change(self, old: float, new: float, why: str) -> dict[str, float]:
        self._say(f"{why}: learning_rate {old:.4g} -> {new:.4g}")
        return {"learning_rate": new}

    def _say(self, line: str) -> None:
        line = f"keeper {self.name}: step {self.system.step_count}: {line}"
        self.adjustments.append(line)
        log.info(line)


def keep_training(system, guard, keeper: Keeper | None, params: dict[str, float], steps: int,
                  on_look: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Train `steps` guarded steps offline with `keeper` (None: without one) changing `params` in
    place every `keeper.settings.every` steps. `on_look` gets {step, motion, undone, learning_rate}
    at each look. Returns `params`."""
    every = keeper.settings.every if keeper is not None else 50
    looker = keeper or Keeper(system, KeeperSettings(on=False))
    undone = 0
    for i in range(1, steps + 1):
        if guard.step(params) is None:
            undone += 1
        if i % every == 0:
            changes = looker.observe(params, undone, every)
            if on_look is not None:
                on_look({"step": i, "motion": looker.motion, "undone": undone,
                         "learning_rate": float(params.get("learning_rate", 1.0))})
            params.update(changes)
            undone = 0
    return params
