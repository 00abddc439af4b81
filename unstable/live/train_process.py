"""Live training in a process of its own (a CPU show's default, `[training] process = true`): the
show's side. It starts unstable.live.train_child with the pieces as loaded, feeds it the newest
parameters and live states, brings its weights into the sampling mirrors (weight_exchange), its
keepers' adjustments into the store and its log lines into the show's log, and keeps each
LivePiece's counters (`remote`) for telemetry.

Why: docs/figures.md, "Training in a process of its own". A GPU show keeps the training thread
(its stream already overlaps the display's, and CUDA tensors do not cross processes simply).

If the process dies, the show goes on with the last weights it brought; each piece says why
(`error`), as a piece whose training stopped does.
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
import queue
import threading
import time
import types
from typing import Callable, Mapping

import torch

from ..checkpoint import checkpoint_payload
from .keeping import KEEPER, log as keeper_log
from .train_child import child_main
from .weight_exchange import ExchangeReader, WeightExchange

log = logging.getLogger("unstable.live")

__all__ = ["TrainingProcess", "spec_bytes"]


def _read_only(d: dict) -> Mapping:
    """A MappingProxyType again, in the child (the type itself cannot be pickled by name)."""
    return types.MappingProxyType(d)


def spec_bytes(spec: dict) -> bytes:
    """`spec` pickled for the child; the frozen mappings in piece settings (MappingProxyType) go as
    their dicts and come back as read-only mappings."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    p.dispatch_table = {**copyreg.dispatch_table, types.MappingProxyType: lambda m: (_read_only, (dict(m),))}
    p.dump(spec)
    return buf.getvalue()


def _lowest_level() -> int:
    """The lowest level any of the show's loggers lets through: the process sends what might be
    logged, the show's own loggers decide what is."""
    levels = [logging.getLogger().getEffectiveLevel()]
    levels += [logging.getLogger(n).getEffectiveLevel() for n in list(logging.root.manager.loggerDict)
               if n.startswith("unstable")]
    return min(levels)


class TrainingProcess:
    """The Trainer's stand-in on the show's side (start, stop, alive, request_checkpoint)."""

    # Seconds between two sends of the frame's parameters (the step reads the newest it has).
    VALUES_EVERY = 0.05
    LIVE_EVERY = 1.0

    def __init__(self, pieces: list, budget, guard, params, snapshot: Callable[[], Mapping], device: torch.device):
        self.pieces = pieces          # the show's LivePieces (mirror, clock, live_state)
        self.budget = budget
        self.guard_settings = guard
        self.params = params          # the show's ParameterStore
        self.snapshot = snapshot
        self.device = device
        self.done: tuple[list[str], list[str]] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Another control's moves, numbered as they are told to the process: a keeper's adjustment
        # decided before it heard of a move of the same parameter arrives after it, and is dropped.
        self._moves = 0
        self._moved: dict[tuple[str, str], int] = {}
        self._moves_lock = threading.Lock()

    # -- starting -------------------------------------------------------------------------------

    def start(self) -> "TrainingProcess":
        ctx = torch.multiprocessing.get_context("spawn")
        exchanges = {p.name: WeightExchange.of(p.system, ctx.Lock()) for p in self.pieces}
        states = {}
        for p in self.pieces:
            buf = io.BytesIO()
            torch.save(checkpoint_payload(p.system, str(p.path)), buf)
            states[p.name] = buf.getvalue()
        keepers = {p.name: (p.keeper.settings if p.keeper is not None else None) for p in self.pieces}
        keeper_states = {p.name: p.keeper.state_dict() for p in self.pieces if p.keeper is not None}
        for p in self.pieces:  # the process keeps them now: the show's copies stop listening
            if p.keeper is not None:
                p.keeper.close()
        spec = {"pieces": {p.name: p.system.piece for p in self.pieces},
                "piece_paths": {p.name: p.path for p in self.pieces},
                "run_dirs": {p.name: p.run_dir for p in self.pieces},
                "shares": {p.name: p.share for p in self.pieces},
                "budget": self.budget, "guard": self.guard_settings, "keepers": keepers,
                "keeper_states": keeper_states, "states": states, "device": str(self.device),
                "values": self.snapshot(), "live": self._live_states(),
                "log_level": _lowest_level()}
        self._inbox, self._outbox = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=child_main, args=(spec_bytes(spec), exchanges, self._inbox, self._outbox),
                                    name="unstable-training", daemon=True)
        self._process.start()
        for p in self.pieces:
            p.remote = {}
        self.reader = ExchangeReader({p.name: p.mirror for p in self.pieces}, exchanges).start()
        self.params.add_listener(self._heard)
        for target, name in ((self._feed, "unstable-train-feed"), (self._listen, "unstable-train-status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _live_states(self) -> dict:
        out = {}
        for p in self.pieces:
            try:
                out[p.name] = p.live_state() if p.live_state is not None else {}
            except Exception:  # a live state that cannot be read now: the last one sent stands
                log.debug("live state of %s unreadable", p.name, exc_info=True)
        return out

    # -- the show's side of the queues ------------------------------------------------------------

    def _send(self, msg: tuple) -> None:
        self._inbox.put(msg)  # a multiprocessing queue takes puts from any thread

    def _heard(self, keys, origin) -> None:
        """Store listener: tell the process's keepers what another control moved."""
        if origin == KEEPER:
            return
        names: dict[str, list[str]] = {}
        for group, name in keys:
            names.setdefault(group, []).append(name)
        for p in self.pieces:
            if p.keeper is not None and p.name in names:
                with self._moves_lock:
                    self._moves += 1
                    for name in names[p.name]:
                        self._moved[(p.name, name)] = self._moves
                    self._send(("heard", p.name, names[p.name], self._moves))

    def _feed(self) -> None:
        last, next_live = None, 0.0
        while not self._stop.wait(self.VALUES_EVERY):
            values = self.snapshot()
            if values != last:
                self._send(("values", values))
                last = values
            if time.monotonic() >= next_live:
                self._send(("live", self._live_states()))
                next_live = time.monotonic() + self.LIVE_EVERY

    def _listen(self) -> None:
        while True:
            try:
                msg = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if not self._process.is_alive():
                    self._died()
                    return
                continue
            except (EOFError, OSError):
                self._died()
                return
            kind = msg[0]
            if kind == "status":
                self._take_status(msg[1])
            elif kind == "set":
                self._keepers_set(*msg[1:])
            elif kind == "log":
                record = msg[1]
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):  # the show's levels decide, as for its own lines
                    logger.handle(record)
            elif kind == "done":
                self.done = (list(msg[1]), list(msg[2]))
                return

    def _keepers_set(self, piece: str, name: str, value: float, heard: int) -> None:
        """A keeper's adjustment, decided when the process had heard of the show's first `heard`
        moves: written into the store unless another control moved that parameter since."""
        with self._moves_lock:  # a move now waits for this write, then is told to the keeper
            if self._moved.get((piece, name), 0) > heard:
                keeper_log.info("keeper %s: %s was moved meanwhile; the keeper leaves it", piece, name)
                return
            try:
                self.params.set(piece, name, value, origin=KEEPER)
            except (KeyError, ValueError) as e:
                log.warning("the training process's keeper asked for %s/%s: %s", piece, name, e)

    def _take_status(self, status: dict) -> None:
        for p in self.pieces:
            s = status.get(p.name)
            if s is None:
                continue
            p.remote = s
            p.system.step_count = s["step_count"]  # the show's copy follows (its weights: at the end)
            p.steps, p.checkpoints, p.train_seconds = s["steps"], s["checkpoints"], s["train_seconds"]
            p.last_scalars = s["scalars"]
            p.error = s["error"]

    def _died(self) -> None:
        if self._stop.is_set():
            return
        why = f"the training process ended (exit code {self._process.exitcode})"
        log.error("%s; the show goes on with the last weights it brought", why)
        for p in self.pieces:
            p.error = p.error or why

    # -- the Trainer's interface ----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process.is_alive() and self.done is None

    @property
    def busy_seconds(self) -> float:
        return sum(p.train_seconds for p in self.pieces)

    def request_checkpoint(self) -> None:
        """Every piece's checkpoint, written by the process when its step in progress ends."""
        if self.alive:
            self._send(("checkpoint",))

    def inject_fault(self, piece: str, kind: str) -> None:
        """The soak's faults ('nan' weights or a 'raise'ing step) on the process's next step of `piece`."""
        self._send(("fault", piece, kind))

    def stop(self, timeout: float = 120.0, final_checkpoint: bool = False) -> bool:
        """Stop the process after its step in progress (writing the final checkpoints if asked) and
        bring its last weights in; True if it has stopped."""
        if self._process.is_alive() and self.done is None:
            self._send(("stop", final_checkpoint))
        end = time.monotonic() + timeout
        for t in self._threads:
            if t.name == "unstable-train-status":
                t.join(max(0.0, end - time.monotonic()))
        self._stop.set()
        self.params.remove_listener(self._heard)
        self._process.join(max(0.1, end - time.monotonic()))
        self.reader.stop()
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
            return False
        return True

    def final_checkpoints(self) -> tuple[list[str], list[str]]:
        """(paths written, problems) of the process's final checkpoints ([], [why] when none)."""
        if self.done is None:
            return [], ["the training process ended without its final checkpoints"]
        return self.done
