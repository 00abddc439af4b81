"""The keeper: holds a training system inside the band between stasis and explosion while it
plays, with the explorer's measures.

Every `every` steps the keeper looks at two things: the motion of the fixed probe images since its
last look (measures.probe, the explorer's yardstick) and how many of those steps the guard undid.
It moves two live parameters, a ladder of levers (the paper's "balance of complexity and
stochasticity": too small a batch and the gradients explode, too large and the system settles):

- explosion near (the guard undid more than `max_guard` of the steps): `batch_fraction` back up
  first (/ `lower_by`, never above 1), then, once the batch is whole, `learning_rate` down
  (x `lower_by`, never below its spec's minimum);
- stasis near (motion under `stasis_floor`): `learning_rate` up first (x `raise_by`, never above
  its spec's maximum), then, at the highest rate, `batch_fraction` down (x `lower_by`, never below
  its minimum), and at the smallest batch the weights get the perturbation the piece declares
  (`perturb`, noise x each weight tensor's spread; 0: none);
- in the band: nothing.

One move a look. A parameter the artist holds (see below) is a rung the keeper passes over; a
system without `batch_fraction` has a ladder of one lever. The ladder needs no memory beyond the
parameters themselves; the last probe images are the keeper's state (`state_dict`), checkpointed
with the run or the show so that the first look after a resume measures motion since the last
look before the interruption.

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

__all__ = ["LEVERS", "Keeper", "LookCount", "TrainKeeper", "keep_training"]

# The live parameters the keeper moves, where a system has them.
LEVERS = ("learning_rate", "batch_fraction")


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
        self.batch_spec = specs.get("batch_fraction")
        self._previous: torch.Tensor | None = None
        self.motion: float | None = None
        self.adjustments: list[str] = []  # every log line, in order

    def observe(self, params: Mapping[str, float], undone: int, steps: int,
                held: Collection[str] = ()) -> dict[str, float]:
        """Look now: `undone` of the last `steps` steps were undone by the guard. Returns the
        parameter changes to apply ({} in the band; at most one parameter). `held`: parameters the
        artist moved lately, which the keeper leaves alone (it still measures, so its next look
        compares with this one)."""
        s = self.settings
        m, self._previous = probe(self.system, self._previous)
        self.motion = m.get("motion")
        if not s.on or self.lr_spec is None:
            return {}
        lr = self._value(params, "learning_rate", held)
        fraction = self._value(params, "batch_fraction", held)
        if steps and undone / steps > s.max_guard:
            why = f"explosion near ({undone} of {steps} steps undone)"
            if fraction is not None and fraction < 1.0:
                return self._change("batch_fraction", fraction, min(1.0, fraction / s.lower_by), why)
            if lr is not None and lr > self.lr_spec.lo:
                return self._change("learning_rate", lr, max(self.lr_spec.lo, lr * s.lower_by), why)
            return {}
        if self.motion is not None and self.motion < s.stasis_floor:
            why = f"stasis near (motion {self.motion:.3g} < {s.stasis_floor:g})"
            if lr is not None and lr < self.lr_spec.hi:
                return self._change("learning_rate", lr, min(self.lr_spec.hi, lr * s.raise_by), why)
            if fraction is not None and fraction > self.batch_spec.lo:
                return self._change("batch_fraction", fraction, max(self.batch_spec.lo, fraction * s.lower_by), why)
            if s.perturb > 0 and self.perturb is not None and self._exhausted(held):
                self.perturb(s.perturb)
                self._say(f"stasis at the highest learning_rate and the smallest batch (motion {self.motion:.3g}): "
                          f"perturbed the weights (noise x{s.perturb:g})")
        return {}

    def _exhausted(self, held: Collection[str]) -> bool:
        """Called once every lever the keeper may move is at its stasis end: true unless the artist
        holds one (then the weights are theirs too; the keeper perturbs only its own exhausted ladder)."""
        return "learning_rate" not in held and (self.batch_spec is None or "batch_fraction" not in held)

    def _value(self, params: Mapping[str, float], name: str, held: Collection[str]) -> float | None:
        """The lever `name`'s value now, or None when the system has no such lever or the artist holds it."""
        spec = self.lr_spec if name == "learning_rate" else self.batch_spec
        if spec is None or name in held:
            return None
        return float(params.get(name, spec.default))

    def _change(self, name: str, old: float, new: float, why: str) -> dict[str, float]:
        self._say(f"{why}: {name} {old:.4g} -> {new:.4g}")
        return {name: new}

    def _say(self, line: str) -> None:
        line = f"keeper {self.name}: step {self.system.step_count}: {line}"
        self.adjustments.append(line)
        log.info(line)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the keeper: its last probe images (uint8 [G, P, 3, R, R]) and
        motion, so that a resumed keeper's first look compares with the last one before the stop."""
        state: dict = {"motion": self.motion}
        if self._previous is not None:
            state["probe"] = self._previous
        return state

    def load_state_dict(self, state: Mapping | None) -> None:
        """Take back `state_dict()`'s (None or {}: an old checkpoint; the keeper starts unseeing)."""
        if not state:
            return
        probe_images = state.get("probe")
        self._previous = None if probe_images is None else probe_images.to(torch.uint8).cpu()
        motion = state.get("motion")
        self.motion = None if motion is None else float(motion)


class LookCount:
    """The steps since the keeper's last look and how many of them the guard undid: what every
    driver of a keeper (train, a show, `keep_training`) counts between looks, and checkpoints."""

    def __init__(self, every: int):
        self.every = every
        self.steps = 0   # steps since the last look
        self.undone = 0  # of which the guard undid

    def count(self, undone: bool) -> tuple[int, int] | None:
        """Count one step (`undone`: the guard undid it). Every `every` steps: (steps, undone) since
        the last look, and the count starts again; None between looks."""
        self.steps += 1
        self.undone += bool(undone)
        if self.steps < self.every:
            return None
        counted = (self.steps, self.undone)
        self.steps = self.undone = 0
        return counted

    def state_dict(self) -> dict:
        return {"steps": self.steps, "undone": self.undone}

    def load_state_dict(self, state: Mapping) -> None:
        self.steps, self.undone = int(state.get("steps", 0)), int(state.get("undone", 0))


class TrainKeeper:
    """The keeper of `unstable train` (unstable.trainer): counts the loop's guarded steps and, every
    `every` of them, looks and applies the changes to `params` (the live values the trainer's
    steps use) in place; `say` gets each adjustment's log line (the trainer echoes it and writes it
    to log.jsonl). `state_dict` is what the run's checkpoint keeps: the keeper's probe, its count
    since the last look, and the levers' values, so a resumed run goes on where it stopped."""

    def __init__(self, system, settings: KeeperSettings, params: dict[str, float], *, name: str = "",
                 perturb: Callable[[float], None] | None = None, say: Callable[[str], None] = lambda line: None):
        self.keeper = Keeper(system, settings, name=name, perturb=perturb)
        self.settings = settings
        self.params = params
        self.say = say
        self.count = LookCount(settings.every)

    def after_step(self, undone: bool) -> dict[str, float]:
        """Count one step (`undone`: the guard undid it); every `every` steps look and apply the
        changes. Returns them ({} mostly)."""
        counted = self.count.count(undone)
        if counted is None:
            return {}
        steps, undone_n = counted
        said = len(self.keeper.adjustments)
        changes = self.keeper.observe(self.params, undone_n, steps)
        self.params.update(changes)
        for line in self.keeper.adjustments[said:]:
            self.say(line)
        return changes

    def state_dict(self) -> dict:
        """{probe, motion, steps, undone, params}: plain tensors and numbers (weights_only loads it)."""
        return {**self.keeper.state_dict(), **self.count.state_dict(),
                "params": {k: float(self.params[k]) for k in LEVERS if k in self.params}}

    def load_state_dict(self, state: Mapping | None) -> None:
        """Take back `state_dict()`'s; None (a checkpoint from before the keeper): start afresh."""
        if not state:
            return
        self.keeper.load_state_dict(state)
        self.count.load_state_dict(state)
        for k, v in dict(state.get("params", {})).items():
            if k in LEVERS and k in self.params:
                self.params[k] = float(v)


def keep_training(system, guard, keeper: Keeper | None, params: dict[str, float], steps: int,
                  on_look: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Train `steps` guarded steps offline with `keeper` (None: without one) changing `params` in
    place every `keeper.settings.every` steps. `on_look` gets {step, motion, undone, learning_rate,
    batch_fraction} at each look. Returns `params`."""
    count = LookCount(keeper.settings.every if keeper is not None else 50)
    looker = keeper or Keeper(system, KeeperSettings(on=False))
    for i in range(1, steps + 1):
        counted = count.count(guard.step(params) is None)
        if counted is not None:
            changes = looker.observe(params, counted[1], counted[0])
            if on_look is not None:
                on_look({"step": i, "motion": looker.motion, "undone": counted[1],
                         "learning_rate": float(params.get("learning_rate", 1.0)),
                         "batch_fraction": float(params.get("batch_fraction", 1.0))})
            params.update(changes)
    return params
