"""The training thread of a live show: steps the pieces under the show's budget, keeps their
sampling mirrors fresh, and writes their checkpoints (it owns the weights).

It runs at a lower CPU priority (`training.nice`, Linux niceness of that thread alone), so the
display takes the CPU first and training what is left (on a CPU-only machine the difference
between a show that keeps its frame rate and one that drops many frames a second; docs/figures.md
has the measures). Each piece is stepped through its
`TrainingGuard`; the one with the least training time (weighted by `share`) goes first. A piece
the show keeps (`[keeper]`) has its keeper consulted every `every` of its steps (unstable.live.keeping).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..checkpoint import checkpoint_payload, save_checkpoint
from ..disk import is_no_space, no_space_line
from ..frame.sources import PanelSource
from ..guard import TrainingGuard
from ..walk import WalkClock
from .mirror import SamplingMirror

log = logging.getLogger("unstable.live")

__all__ = ["LivePiece", "Trainer"]


@dataclass
class LivePiece:
    """One piece while the show runs: its system, mirror, panel source and clock, and training counters."""

    name: str
    path: Path
    system: Any
    mirror: SamplingMirror
    source: PanelSource                # what the frame pipeline samples (the mirror, the walk, panels)
    clock: WalkClock                   # the piece's walk clock on the show's timeline
    share: float = 1.0
    run_dir: Path | None = None
    steps: int = 0                     # steps taken in this show
    train_seconds: float = 0.0
    step_times: deque = field(default_factory=lambda: deque(maxlen=4096))  # perf_counter of each step
    last_scalars: dict = field(default_factory=dict)
    last_sync: float = -math.inf
    dirty: bool = False                # trained since the last sync
    next_allowed: float = 0.0          # steps/s cap
    last_checkpoint: float = 0.0
    checkpoint_requested: bool = False
    checkpoints: int = 0
    error: str | None = None           # why training stopped (the display holds the last good weights)
    guard: TrainingGuard | None = None
    next_stasis: float = 0.0
    live_state: Callable[[], dict] | None = None   # what a restart needs besides the weights (pieces.live_state)
    keeper: Any = None                 # its LiveKeeper (unstable.live.keeping) when the show keeps it
    remote: dict | None = None         # the training process's newest counters (unstable.live.train_process)

    def steps_per_second(self, now: float, window: float = 2.0) -> float:
        """Steps in the last `window` seconds, per second."""
        n = 0
        for t in reversed(self.step_times):
            if now - t > window:
                break
            n += 1
        return n / window

    def save(self) -> Path:
        """Write this piece's checkpoint atomically (call from the thread that owns the weights)."""
        path = self.run_dir / "checkpoint.pt"
        extra = {"live": self.live_state()} if self.live_state is not None else None
        if extra is not None and self.keeper is not None:
            # With the live state: a restart's first look measures motion since the last one before it.
            extra["live"]["keeper"] = self.keeper.state_dict()
        save_checkpoint(path, checkpoint_payload(self.system, str(self.path), extra))
        self.checkpoints += 1
        return path


class Trainer:
    """The training thread: steps the pieces under the show's budget and keeps their mirrors fresh."""

    def __init__(self, pieces: list[LivePiece], budget, snapshot: Callable[[], Mapping[str, Mapping[str, float]]],
                 device: torch.device, train_stream: "torch.cuda.Stream | None" = None, guard=None):
        self.pieces = pieces
        self.guard_settings = guard  # GuardSettings (stasis checks); each piece's TrainingGuard does the rest
        self.budget = budget
        self.snapshot = snapshot  # the newest frame's {group: {name: value}}
        self.device = device
        self.stream = train_stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unstable-train", daemon=True)
        self.busy_seconds = 0.0
        from ..control.osclog import RateLimitedLog
        self._warn = RateLimitedLog(log, 60.0)  # a failure that repeats every second: one line a minute

    def start(self) -> "Trainer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> bool:
        """Ask the thread to stop after the step in progress; True if it has."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _sync(self, p: LivePiece) -> None:
        p.mirror.sync()
        p.last_sync = time.perf_counter()
        p.dirty = False

    def _once(self) -> None:
        """One pass of the training loop: due checkpoints and syncs, then one step of one piece."""
        now = time.perf_counter()
        self._due_checkpoints(now)
        for p in self.pieces:
            if p.error is not None and p.guard is not None and p.guard.retry_due():
                p.guard.retry()
                p.error = None
        for p in self.pieces:
            if p.dirty and now - p.last_sync >= self.budget.sync_every:
                self._sync(p)
        snapshot = self.snapshot()
        ready = [p for p in self.pieces if p.error is None and p.next_allowed <= now
                 and snapshot.get(p.name, {}).get("training", 1.0) >= 0.5]
        if not ready:
            for p in self.pieces:  # idle: show the newest weights at once
                if p.dirty:
                    self._sync(p)
            self._stop.wait(0.02)
            return
        p = min(ready, key=lambda q: q.train_seconds / q.share)
        t0 = time.perf_counter()
        try:
            scalars = self._step(p, dict(snapshot.get(p.name, {})))
        except Exception as e:  # a failure outside the guarded step (a hook, the guard itself)
            p.error = f"{type(e).__name__}: {e}"
            log.exception("training %s failed; it stops training, the show goes on", p.name)
            return
        t1 = time.perf_counter()
        dt = t1 - t0
        p.train_seconds += dt
        self.busy_seconds += dt
        self._keep(p, scalars is None)
        if scalars is None:  # undone by the guard: the mirror keeps the last good weights
            if p.guard is not None and p.guard.stopped:
                p.error = p.guard.stopped
            return
        p.last_scalars = scalars
        p.steps += 1
        p.step_times.append(t1)
        p.dirty = True
        if t1 - p.last_sync >= self.budget.sync_every:
            self._sync(p)
        if self.budget.max_steps_per_second > 0:
            p.next_allowed = t0 + 1.0 / self.budget.max_steps_per_second
        self._stasis(p, snapshot, t1)
        if self.budget.duty < 1.0:
            self._stop.wait(dt * (1.0 - self.budget.duty) / self.budget.duty)

    def _step(self, p: LivePiece, values: dict) -> dict | None:
        """One training step of `p`, always through its guard (None: undone)."""
        return p.guard.step(values)

    def _keep(self, p: LivePiece, undone: bool) -> None:
        """Count the step for the piece's keeper, which looks every `every` steps (in this thread:
        its probe samples the training weights, which this thread owns)."""
        if p.keeper is None:
            return
        try:
            p.keeper.after_step(undone)
        except Exception:  # a keeper that fails must not stop training: the guard still holds the piece
            self._warn.warning(("keeper", p.name), "the keeper of %s failed; training goes on", p.name,
                               exc_info=True)

    def _stasis(self, p: LivePiece, snapshot: Mapping, now: float) -> None:
        g = self.guard_settings
        if p.guard is None or g is None or g.stasis_every <= 0 or now < p.next_stasis:
            return
        p.next_stasis = now + g.stasis_every
        try:
            p.guard.check_stasis(dict(snapshot.get(p.name, {})))
        except Exception:  # a probe that fails must not stop training; the next step's guard judges
            log.warning("stasis check of %s failed", p.name, exc_info=True)

    def _due_checkpoints(self, now: float) -> None:
        every = self.budget.checkpoint_every
        for p in self.pieces:
            if p.run_dir is None:
                continue
            if p.checkpoint_requested or (every > 0 and now - p.last_checkpoint >= every):
                p.checkpoint_requested = False
                p.last_checkpoint = now
                try:
                    p.save()
                except Exception as e:  # a full disk must not end the show; say so and carry on
                    why = no_space_line(p.run_dir / "checkpoint.pt") if is_no_space(e) else str(e)
                    self._warn.warning(("checkpoint", p.name), "checkpoint of %s failed: %s", p.name, why)

    def _run(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.budget.threads)
        if self.budget.nice > 0 and hasattr(os, "setpriority"):
            # Linux schedules threads individually: a higher niceness on this thread alone lets the
            # display (and the encoder) take the CPU first and training what is left.
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.budget.nice)
            except OSError as e:
                log.warning("could not lower the training thread's priority: %s", e)
        stream_ctx = contextlib.nullcontext()
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.default_stream(self.device))
            stream_ctx = torch.cuda.stream(self.stream)
        with stream_ctx:
            for p in self.pieces:
                p.last_checkpoint = time.perf_counter()
            while not self._stop.is_set():
                try:
                    self._once()
                except Exception:  # whatever it was, the thread must live on: the show runs for weeks
                    self._warn.warning("loop", "the training loop failed; carrying on in a second",
                                       exc_info=True)
                    self._stop.wait(1.0)
            for p in self.pieces:
                if p.dirty:
                    self._sync(p)
            if self.stream is not None:
                self.stream.synchronize()
