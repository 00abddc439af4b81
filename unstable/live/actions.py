"""What the show's events do, frame by frame: recording on and off, stills, refreshing a piece's
latent directions or channel clusters (scene changes are the timeline's). Events come from any
control surface through the parameter store; this is the one place they act.

Bounded (`[actions]`): within `record_min_interval` of the last start or stop, and within
`still_min_interval` of the last still, requests only update what is wanted; the newest wish is
applied once the interval is over, so a burst of requests is one action. A still writes
checkpoints at most every `still_checkpoint_every` seconds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..control.store import ParameterStore
from ..schema import PIECE_ACTIONS, SHOW

__all__ = ["Actions"]


class Actions:
    """The show's actions over its outputs' recorder and stills (an `Outputs`, read as it opens) and
    its pieces (a `PieceSet`)."""

    def __init__(self, store: ParameterStore, settings, outputs, piece_set, clock=time.monotonic):
        self.store = store
        self.settings = settings            # the show's [actions]
        self.outputs = outputs
        self.piece_set = piece_set
        self._clock = clock
        self._want_record: bool | None = None   # the newest recording wish not applied yet
        self._record_changed = -math.inf
        self._still_asked = False               # a still was asked for, not taken yet
        self._last_still = -math.inf
        self._last_still_checkpoint = -math.inf
        self.presets = None                     # the show's PresetBank (unstable.control.presets)

    def record(self, path: Path) -> None:
        """Record to `path` from the next frame (`--record`); the show's `record` value says so."""
        self.outputs.recorder.record(path)
        self.store.set(SHOW, "record", 1)
        self._record_changed = self._clock()

    def act(self, events) -> None:
        """Act on a frame's events (those of the slots dropped before it included)."""
        for ev in events:
            if ev.kind == "record":
                self._want_record = ev.value is not None and ev.value >= 0.5
            elif ev.kind == "still":
                self._still_asked = True
            elif ev.kind in PIECE_ACTIONS and ev.group in self.piece_set.by_name:
                # Only asked for here: the mirror's worker recomputes from a snapshot of the sampling
                # copy (the trained weights as of the last sync), coalesced and rate-limited, and a
                # later sample swaps the result in between frames (unstable.live.mirror).
                self.piece_set.by_name[ev.group].mirror.refresh(ev.kind.split("/")[0])
            elif ev.kind.startswith("preset/") and self.presets is not None:
                self.presets.act(ev)  # a morph starts at the next frame's snapshot
        now = self._clock()
        if self._want_record is not None:
            if self._want_record == self.outputs.recorder.recording:
                self._want_record = None
            elif now - self._record_changed >= self.settings.record_min_interval:
                if self._want_record:
                    self.outputs.recorder.record()
                else:
                    self.outputs.recorder.stop()
                self._record_changed = now
                self._want_record = None
        if self._still_asked and now - self._last_still >= self.settings.still_min_interval:
            self._still_asked = False
            self._last_still = now
            self.outputs.stills.request()

    def take_still(self, pixels, frame: int) -> None:
        """The still sink's writer: a PNG of the frame, and the pieces' checkpoints when due."""
        self.outputs.recorder.still(pixels, frame)
        now = self._clock()
        if now - self._last_still_checkpoint >= self.settings.still_checkpoint_every:
            self._last_still_checkpoint = now
            self.piece_set.checkpoint_soon()

    def show_recording(self) -> None:
        """Keep the show's `record` value (and so the controllers' toggles) true to the recorder,
        which may have stopped by itself (a full disk)."""
        if self._want_record is not None:
            return
        on = 1 if self.outputs.recorder.recording else 0
        if self.store.get(SHOW, "record") != on:
            self.store.set(SHOW, "record", on)
