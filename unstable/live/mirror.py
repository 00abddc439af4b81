"""The sampling copy a live show draws from while the original trains (the System protocol's
`sampling_copy()`, refreshed with `accumulate`, as rosinality's g_ema)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Mapping

import torch

from ..pacing import Pacer, paced
from ..system import module_tensors

__all__ = ["SamplingMirror", "REFRESH_MIN_INTERVAL"]

log = logging.getLogger("unstable.live")

# Seconds between the starts of two computations of one kind (directions, clusters) of one piece,
# the show's `[actions] refresh_min_interval` by default: a button held down, or a flood at 100/s,
# is one computation every few seconds. Each still holds the GIL for a while (its Python between the
# torch calls), which the render thread needs; the artist's first press still acts at once.
REFRESH_MIN_INTERVAL = 5.0
# The share of the wall time a refresh computes, in slices of a few milliseconds (unstable.pacing):
# the rest of each frame is the render thread's. A refresh takes four times as long; meanwhile the
# current directions and clusters steer and bend.
REFRESH_DUTY = 0.25


class SamplingMirror:
    """A system's sampling copy (`System.sampling_copy()`), which the display samples while the
    original trains.

    `sync()` (training thread, between steps) refreshes the copy with `copy.accumulate(system)`
    (decay 0: the trainable weights the copy samples with, their buffers and the step count, which
    growth depends on); `sample()` (render thread) samples the copy. Both hold `lock`, so a sample
    sees one whole set of weights. A copy whose modules do not pair up with the system's (a
    module replaced by another shape) is built again.

    Nothing expensive runs in `sample()`: the system's latent directions and channel clusters
    (`defer_computations`) have their first computation and every refresh done by a worker (see
    `refresh`), and says in one line (`echo`, else the log) when each kind is first ready.
    """

    def __init__(self, system: Any, train_stream: "torch.cuda.Stream | None" = None, *, name: str = "",
                 echo: Callable[[str], None] | None = None, refresh_interval: float = REFRESH_MIN_INTERVAL,
                 refresh_duty: float = REFRESH_DUTY):
        self.trained = system              # the training copy the mirror follows
        self.lock = threading.Lock()
        self.syncs = 0
        self.sync_seconds = 0.0
        self._cuda = system.device.type == "cuda"
        self._train_stream = train_stream
        if self._cuda:
            self._copied = torch.cuda.Event()
            self._sampled = torch.cuda.Event()
        self.system = system.sampling_copy()
        # Refreshes (directions, clusters): asked for by the render thread, computed by a worker on a
        # snapshot of the copy, swapped in at the start of a later sample.
        self.refresh_interval = float(refresh_interval)
        # Paced once frames are drawn: the first computations, which a show waits for at open
        # before its first frame, run at full speed.
        self._drawn = False
        self.refresh_pacer = Pacer(refresh_duty, unpaced=lambda: not self._drawn)
        self._snapshot = None  # the refreshes' own copy of the weights (_take_snapshot)
        self.refresh_computations = 0
        self.refresh_seconds = 0.0  # wall time of the computations (paced ones take longer)
        self.refresh_errors = 0
        self._wanted: set[str] = set()
        self._ready: list[Callable[[], None]] = []
        self._requests = threading.Condition()
        self._worker: threading.Thread | None = None
        self._last_refresh: dict[str, float] = {}   # kind -> when its last computation started
        self._computing = False
        self._closed = False
        self._values: Mapping[str, float] = {}
        self.name = name or system.piece.name
        self._echo = echo
        self._announced: set[str] = set()
        # Shared with the system and every copy: none computes in `sample`.
        self.system.defer_computations(self.refresh)
        self.system.sampled_for_long(self.lock)  # a compiled pass is checked holding it (unstable.traces)
        self.system.prepare_sampling()  # e.g. the generators' traces, made before the first frame

    def sync(self) -> None:
        """Copy the system's current weights into the mirror (call between training steps)."""
        t0 = time.perf_counter()
        with self.lock, torch.no_grad():
            if self._cuda:
                # Do not overwrite weights that a queued sample on the render stream still reads.
                torch.cuda.current_stream().wait_event(self._sampled)
            try:
                self.system.accumulate(self.trained, 0.0)
            except ValueError:  # the modules changed shape: copy the system again
                self.system = self.trained.sampling_copy()
                self.system.sampled_for_long(self.lock)
            if self._cuda:
                self._copied.record()
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def sync_from(self, tensors: list[torch.Tensor], step_count: int) -> None:
        """Copy weights a training process wrote (unstable.live.weight_exchange: the system's
        `sampled_modules()` in `module_tensors` order) into the mirror, and its step count."""
        t0 = time.perf_counter()
        with self.lock, torch.no_grad():
            mine = module_tensors(self.system.sampled_modules())
            if len(mine) != len(tensors):
                raise ValueError(f"{len(tensors)} trained tensors for a mirror of {len(mine)}")
            torch._foreach_copy_(mine, [t.to(self.system.device, non_blocking=True) for t in tensors])
            self.system.step_count = int(step_count)
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def refresh(self, what: str) -> None:
        """Ask for the copy's latent directions or channel clusters ('directions' or 'clusters') to be
        recomputed with its current weights, and the missing ones computed (the system's deferred
        first computations ask this way too). Returns at once.

        Never computed on the caller's (render) thread: a worker takes a snapshot of the copy and
        computes there (System.recompute), and the next `sample()` after it is done swaps the result
        in. Requests coalesce (any number while one is waiting is one computation) and computations
        of one kind start at most every `refresh_interval` seconds: the first request after a quiet
        interval starts at once, those within it are one computation when it ends. When both kinds
        are due, the one computed longest ago goes first."""
        with self._requests:
            if self._closed or what in self._wanted:
                return  # already asked for: nothing to wake the worker for (a flood costs a lock each)
            self._wanted.add(what)  # the first computation and a refresh alike: one `recompute`
            if self._worker is None:
                self._worker = threading.Thread(target=self._refresh_worker, name="unstable-refresh", daemon=True)
                self._worker.start()
            self._requests.notify()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the refresh worker: nothing new starts, a computation under way is waited for (a
        process must not exit while a thread is inside torch: it aborts). False if it is still
        running after `timeout` seconds."""
        with self._requests:
            self._closed = True
            self._wanted.clear()
            worker = self._worker
            self._requests.notify_all()
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def wait_computed(self, timeout: float) -> bool:
        """Wait until nothing is asked for or computing (the results are swapped in by the next
        sample). The show waits so at open: its first frames then show the bends and directions it
        starts with, as a render of it does. False if still computing after `timeout` seconds."""
        end = time.monotonic() + timeout
        with self._requests:
            while self._wanted or self._computing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._requests.wait(min(left, 0.1))
        return True

    def refreshing(self) -> bool:
        """Whether a refresh is asked for, computing or waiting to be swapped in."""
        with self._requests:
            return bool(self._wanted or self._ready or self._computing)

    def _refresh_worker(self) -> None:
        try:  # below the display, like the training thread: the frame comes first
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 5)
        except (AttributeError, OSError):
            pass
        while True:
            with self._requests:
                while not self._wanted and not self._closed:
                    self._requests.wait()
                if self._closed:
                    return
                now = time.monotonic()
                due = {w: self._last_refresh.get(w, -float("inf")) + self.refresh_interval for w in self._wanted}
                # The kind computed longest ago first: when one kind's computation outlasts its own
                # interval (a busy machine), a flood of it would otherwise go again before the other
                # kind's press that has waited all that time.
                wanted = sorted((w for w, t in due.items() if t <= now), key=lambda w: (due[w], w))
                if not wanted:
                    self._requests.wait(min(due.values()) - now)  # more requests join these meanwhile
                    continue
                self._wanted.difference_update(wanted)
                self._computing = True
                for w in wanted:
                    self._last_refresh[w] = now
            try:
                with self.lock, torch.no_grad():  # a whole set of weights, as a sample sees them
                    if self._cuda:
                        torch.cuda.current_stream().wait_event(self._copied)
                    snapshot = self._take_snapshot()
                    values = dict(self._values)
                for what in wanted:
                    if self._closed:
                        break
                    t0 = time.perf_counter()
                    with paced(self.refresh_pacer):
                        install = snapshot.recompute(what, values)
                    seconds = time.perf_counter() - t0
                    with self._requests:
                        self._ready.append((what, install, seconds))
                        self.refresh_computations += 1
                        self.refresh_seconds += seconds
            except Exception:  # the show goes on with the directions and clusters it has
                log.warning("%s: computing its %s failed", self.name, " and ".join(wanted), exc_info=True)
                self.refresh_errors += 1
            finally:
                with self._requests:
                    self._computing = False

    def _take_snapshot(self):
        """The weights a refresh computes with (under `lock`): the first time a copy of the mirror's
        system, then the same copy with the mirror's weights copied in (a tensor copy, well under a
        millisecond, where a new copy held the render thread's sample for several)."""
        if self._snapshot is not None:
            try:
                self._snapshot.accumulate(self.system, 0.0)
                return self._snapshot
            except ValueError:  # the modules changed shape: copy the system again
                pass
        self._snapshot = self.system.sampling_copy()
        return self._snapshot

    def _install_refreshes(self) -> None:
        """Swap in finished refreshes (render thread, at the start of a sample: a frame boundary)."""
        if not self._ready:
            return
        with self._requests:
            ready, self._ready = self._ready, []
        for what, install, seconds in ready:
            install()
            if what not in self._announced:
                self._announced.add(what)
                line = (f"live: {self.name}: its {'latent directions' if what == 'directions' else 'channel clusters'}"
                        f" are ready ({seconds:.2f} s on a worker thread)")
                if self._echo is not None:
                    self._echo(line)
                else:
                    log.info(line)

    def sample(self, latents: Mapping[str, torch.Tensor], values: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """`System.sample(latents, params)` on the mirror, `values` the piece's {name: value}:
        {panel: [N, 3, H, W] in 0..1}."""
        with self.lock:
            self._drawn = True
            self._install_refreshes()
            self._values = values  # what a refresh's clusters are computed at (the noise gain)
            if self._cuda:
                torch.cuda.current_stream().wait_event(self._copied)
            out = self.system.sample(latents, values)
            if self._cuda:
                self._sampled.record()
        return out
