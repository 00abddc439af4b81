"""The trained weights on their way from a training process to the show: shared memory, written by
the trainer between steps, copied into the sampling mirror by a thread of the show.

Why a process: a training thread in the show's interpreter takes the GIL back after each of the
~1,000 small operations of a step, and at its lower CPU priority it is often descheduled while it
holds it; the render thread then waits for a lock held by a thread that is not running
(docs/figures.md, "Training in a process of its own"). A process has its own interpreter.

The exchange is one set of tensors in shared memory per piece, the system's `sampled_modules()`
weights in `module_tensors` order (what `accumulate` copies), with a step count and a version
number beside them. The trainer writes (`ExchangeWriter.sync`, its `SamplingMirror.sync`) under
the exchange's lock; the show's `ExchangeReader` thread, when the version moves, takes the same
lock and the mirror's, and copies. The render thread never waits for the trainer: at worst for a
copy of a few megabytes into its mirror.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

import torch

from ..system import module_tensors

log = logging.getLogger("unstable.live")

__all__ = ["WeightExchange", "ExchangeWriter", "ExchangeReader"]


class WeightExchange:
    """One piece's weights in shared memory. Made by the show from its system (after loading it), sent
    to the training process with it (torch.multiprocessing passes the tensors as shared handles)."""

    def __init__(self, tensors: list[torch.Tensor], meta: torch.Tensor, lock):
        self.tensors = tensors    # shared, module_tensors(system.sampled_modules()) order
        self.meta = meta          # shared int64 [2]: version, step count
        self.lock = lock          # a multiprocessing lock: one writer or one reader at a time

    @classmethod
    def of(cls, system: Any, lock) -> "WeightExchange":
        """An exchange holding `system`'s current sampled weights (`lock`: from the spawn context)."""
        with torch.no_grad():
            tensors = [t.detach().to("cpu", copy=True).share_memory_() for t in module_tensors(system.sampled_modules())]
        meta = torch.tensor([0, int(system.step_count)], dtype=torch.int64).share_memory_()
        return cls(tensors, meta, lock)

    def __getstate__(self):
        return {"tensors": self.tensors, "meta": self.meta, "lock": self.lock}

    def __setstate__(self, state):
        self.__init__(state["tensors"], state["meta"], state["lock"])

    @property
    def version(self) -> int:
        """How many times the trainer has written (a read of shared memory, no lock)."""
        return int(self.meta[0])

    def check_pairs(self, system: Any) -> None:
        """Raise ValueError unless `system`'s sampled weights line up with the exchange's."""
        mine = module_tensors(system.sampled_modules())
        if len(mine) != len(self.tensors) or any(a.shape != b.shape or a.dtype != b.dtype
                                                 for a, b in zip(mine, self.tensors)):
            raise ValueError("the trained weights do not pair up with the show's (count, shape or dtype)")


class ExchangeWriter:
    """The training process's stand-in for a piece's SamplingMirror: `sync()` writes the trained
    weights into the exchange (the Trainer calls it between steps, as it does the mirror's)."""

    def __init__(self, system: Any, exchange: WeightExchange):
        exchange.check_pairs(system)
        self.trained = system
        self.exchange = exchange
        self.syncs = 0

    def sync(self) -> None:
        """Copy the trained weights and step count into shared memory and move the version on."""
        ex = self.exchange
        src = module_tensors(self.trained.sampled_modules())
        with ex.lock, torch.no_grad():
            torch._foreach_copy_(ex.tensors, [t.detach() for t in src])
            ex.meta[1] = int(self.trained.step_count)
            ex.meta[0] += 1
        self.syncs += 1


class ExchangeReader:
    """The show's thread that brings each piece's newest trained weights into its sampling mirror
    (`mirrors`: {piece: SamplingMirror}, `exchanges`: {piece: WeightExchange}). It looks every
    `interval` seconds and copies when a version moved."""

    LOCK_WAIT = 1.0  # seconds a look waits for an exchange's lock before leaving it for the next

    def __init__(self, mirrors: Mapping[str, Any], exchanges: Mapping[str, WeightExchange], interval: float = 0.02,
                 on_error: Callable[[str, str], None] | None = None):
        self.mirrors = dict(mirrors)
        self.exchanges = dict(exchanges)
        self.interval = interval
        self.on_error = on_error
        self.copies = 0
        self._seen = {n: ex.version for n, ex in self.exchanges.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unstable-weights", daemon=True)

    def start(self) -> "ExchangeReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop looking (after a last look: the final weights reach the mirrors)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)
        self.poll()

    def poll(self) -> int:
        """Copy every exchange whose version moved into its mirror; returns how many did."""
        n = 0
        for name, ex in self.exchanges.items():
            if ex.version == self._seen[name]:
                continue
            # A trainer killed between moving the version and letting go holds the lock for good:
            # waited for without a bound, this thread (and the show's stop, which looks once more)
            # would hang. The mirror keeps what it has; the next look tries again.
            if not ex.lock.acquire(timeout=self.LOCK_WAIT):
                continue
            try:
                self._seen[name] = ex.version
                self.mirrors[name].sync_from(ex.tensors, int(ex.meta[1]))
                n += 1
            except Exception as e:  # a mirror that cannot take them keeps its weights; the show goes on
                if self.on_error is not None:
                    self.on_error(name, f"{type(e).__name__}: {e}")
                else:
                    log.warning("%s: the trained weights could not be copied: %s", name, e)
            finally:
                ex.lock.release()
        self.copies += n
        return n

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
