"""The keeper of one piece while a show plays (unstable.explore.keeper does the judging; this is the
part that knows the show): it counts the piece's training steps and the guard's undone ones, and
every `every` steps asks the keeper, then writes the keeper's adjustments into the show's
parameter store with the keeper's own origin (`KEEPER`).

Writing into the store is what makes an adjustment a parameter change like any other: OSC
feedback and the control page follow it, the automation records it (so a render of the
performance replays it), and a restart resumes from it (the live state saved with checkpoints).

Who else moves the same parameter wins for a while: every change the store hears from another
origin (a controller, the page, MIDI, a scene's or a preset's values, audio) holds that parameter
from the keeper for `artist_hold` seconds from the change (`KeeperSettings.artist_hold`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..explore.keeper import LEVERS, Keeper, LookCount
from ..keeper_settings import KeeperSettings

log = logging.getLogger("unstable.keeper")

__all__ = ["KEEPER", "LiveKeeper"]

# The keeper's origin in the parameter store (an Origin is (host, port); no controller has port 0).
KEEPER = ("keeper", 0)


class LiveKeeper:
    """The keeper of piece `piece` (its training `system`) in a show whose parameter store is
    `store`. The training thread calls `after_step` after each of the piece's steps; `close`
    stops listening to the store. `clock`: monotonic seconds (injectable for tests)."""

    def __init__(self, piece: str, system: Any, settings: KeeperSettings, store, *,
                 perturb: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.piece = piece
        self.store = store
        self.keeper = Keeper(system, settings, name=piece, perturb=perturb)
        self.settings = settings
        self.clock = clock
        self.count = LookCount(settings.every)
        self.looks = 0
        self.changes = 0      # adjustments written into the store
        self._lock = threading.Lock()
        self._moved: dict[str, float] = {}   # parameter -> when another origin last changed it
        self._said_held: dict[str, float] = {}  # parameter -> the change whose hold was logged
        store.add_listener(self._heard)

    def _heard(self, keys, origin) -> None:
        """The store's listener (in the writer's thread): note when others move this piece's values."""
        if origin == KEEPER:
            return
        now = self.clock()
        with self._lock:
            for group, name in keys:
                if group == self.piece:
                    self._moved[name] = now

    def held(self) -> set[str]:
        """The parameters another origin changed less than `artist_hold` seconds ago."""
        now = self.clock()
        with self._lock:
            return {n for n, t in self._moved.items() if now - t < self.settings.artist_hold}

    def after_step(self, undone: bool) -> dict[str, float]:
        """Count one training step (`undone`: the guard undid it); every `every` steps, look and
        write the adjustments into the store. Returns what was written ({} mostly)."""
        counted = self.count.count(undone)
        if counted is None:
            return {}
        steps, undone_n = counted
        self.looks += 1
        held = self.held()
        for name in sorted(held):
            since = self._moved[name]
            if self._said_held.get(name) != since:
                self._said_held[name] = since
                log.info("keeper %s: leaves %s to the artist for %g s (changed by another control)",
                         self.piece, name, self.settings.artist_hold)
        # The target, not the frame's smoothed value: the keeper steps from what was last asked for.
        params = {name: self.store.get(self.piece, name) for name in LEVERS if (self.piece, name) in self.store}
        looked = self.clock()
        changes = self.keeper.observe(params, undone_n, steps, held=held)
        written = {}
        for name, value in changes.items():
            with self._lock:  # a move heard from now on waits for this write, then holds the keeper off
                moved = self._moved.get(name)
                if (moved is not None and moved >= looked) or self.store.get(self.piece, name) != params.get(name):
                    # The artist moved it while the keeper looked (its probe takes a while): theirs.
                    log.info("keeper %s: %s was moved meanwhile; the keeper leaves it", self.piece, name)
                    continue
                self.store.set(self.piece, name, value, origin=KEEPER)
            written[name] = value
            self.changes += 1
        return written

    def telemetry(self) -> dict:
        """{looks, changes, motion}: what the keeper has done (the show's telemetry)."""
        motion = self.keeper.motion
        return {"looks": self.looks, "changes": self.changes,
                "motion": None if motion is None else round(float(motion), 6)}

    def state_dict(self) -> dict:
        """What the piece's checkpoint keeps (in its live state): the keeper's probe and motion and
        the steps counted since its last look. The levers' values are the store's (saved there too)."""
        return {**self.keeper.state_dict(), **self.count.state_dict()}

    def load_state_dict(self, state) -> None:
        """Take back `state_dict()`'s; None or {} (a checkpoint from before): start unseeing."""
        if not isinstance(state, dict) or not state:
            return
        self.keeper.load_state_dict(state)
        self.count.load_state_dict(state)

    def close(self) -> None:
        """Stop hearing the store."""
        self.store.remove_listener(self._heard)
