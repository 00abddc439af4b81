"""The training process of a live show (unstable.live.train_process starts it): the same `Trainer`
loop as the training thread, on the process's own copies of the pieces, writing their weights into
shared memory (unstable.live.weight_exchange) instead of a mirror.

What crosses the boundary, each way one queue:
  show -> here  ("values", {group: {name: value}})  the newest frame's parameters (the step reads them)
                ("live", {piece: live state})       what a checkpoint keeps besides the weights
                ("heard", piece, [names], n)        another control moved these, the show's nth such
                                                    move (the keeper holds off)
                ("checkpoint",)                     write every piece's checkpoint soon
                ("fault", piece, kind)              the soak's injected faults ('nan', 'raise')
                ("stop", final)                     stop after the step in progress; final checkpoints
  here -> show  ("status", {piece: {...}})          steps, step count, rate, scalars, error, guard, keeper
                ("set", piece, name, value, n)      a keeper's adjustment, decided having heard of n
                                                    moves: written into the show's store unless the
                                                    parameter was moved after those
                ("log", LogRecord)                  every log line of this process, to the show's log
                ("done", [paths], [problems])       after "stop"
"""

from __future__ import annotations

import dataclasses
import io
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from typing import Callable

import torch

from ..log_forward import SendQueue

log = logging.getLogger("unstable.live")

__all__ = ["RemoteStore", "child_main"]


class RemoteStore:
    """The part of the show's ParameterStore a keeper uses, in the training process: reads from the
    newest values the show sent, writes sent back to the show (origin: the keeper)."""

    def __init__(self, send: Callable[[tuple], None]):
        self._send = send
        self._values: dict[str, dict[str, float]] = {}
        self._listeners: list[Callable] = []
        self._lock = threading.Lock()
        self._heard = 0  # how many of the show's moves by other controls were told here

    def take(self, values: dict) -> None:
        with self._lock:
            self._values = values

    def snapshot(self) -> dict:
        with self._lock:
            return self._values

    def __contains__(self, key) -> bool:
        group, name = key
        return name in self.snapshot().get(group, {})

    def get(self, group: str, name: str) -> float:
        return float(self.snapshot()[group][name])

    def set(self, group: str, name: str, value: float, origin=None) -> float:
        with self._lock:  # the step reads it at once, as it would from the show's store
            self._values = {**self._values, group: {**self._values.get(group, {}), name: float(value)}}
        self._send(("set", group, name, float(value), self._heard))
        return float(value)

    def add_listener(self, fn) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def heard(self, group: str, names: list[str], moves: int) -> None:
        """The show says another control moved these (its `moves`th move): tell the listeners (the keeper)."""
        for fn in list(self._listeners):
            fn([(group, n) for n in names], "show")
        self._heard = max(self._heard, moves)


class _FaultHook:
    """The soak's injected faults, on the trained weights (as tests/bench/soak.py does to a thread)."""

    def __init__(self):
        self.pending: dict[str, str] = {}
        self.lock = threading.Lock()

    def hook(self, name: str):
        def before_step(system):
            with self.lock:
                kind = self.pending.pop(name, None)
            if kind == "nan":
                with torch.no_grad():
                    next(next(iter(system.modules().values())).parameters()).fill_(float("nan"))
            elif kind == "raise":
                raise RuntimeError("injected fault: a raising step")
        return before_step


def _status(pieces, now: float) -> dict:
    return {p.name: {"steps": p.steps, "step_count": int(p.system.step_count),
                     "steps_per_s": round(p.steps_per_second(now, 1.0), 2),
                     "scalars": {k: float(v) for k, v in dict(p.last_scalars).items() if isinstance(v, (int, float))},
                     "error": p.error, "checkpoints": p.checkpoints, "train_seconds": round(p.train_seconds, 3),
                     "guard": p.guard.telemetry() if p.guard is not None else None,
                     "recoveries": p.guard.recoveries if p.guard is not None else 0,
                     "keeper": p.keeper.telemetry() if p.keeper is not None else None}
            for p in pieces}


def _build(spec: dict, exchanges: dict, store: RemoteStore, faults: _FaultHook):
    """The process's LivePieces: systems built and loaded from the show's states, exchange writers
    for mirrors, guards and keepers."""
    from .. import compiled
    from ..checkpoint import restore
    from ..guard import TrainingGuard
    from ..system import build_system
    from .keeping import LiveKeeper
    from .training import LivePiece
    from .weight_exchange import ExchangeWriter

    device = torch.device(spec["device"])
    live_states: dict[str, dict] = dict(spec["live"])
    pieces = []
    for name, piece in spec["pieces"].items():
        system = build_system(piece, device)
        system.prepare(None)  # no bars: the show drew its own while it loaded the same models
        payload = torch.load(io.BytesIO(spec["states"][name]), map_location=device, weights_only=True)
        restore(system, payload, f"the show's state of {name}")
        if compiled.requested() and hasattr(system, "train_synthesis"):
            # Opt-in (UNSTABLE_COMPILE=1): here, in the training process, a compile takes this
            # process's time (its first grown step waits for it; minutes on a cold cache, seconds
            # warm), never the show's frames. BAD pieces train eagerly (compiled.compile_training).
            compiled.compile_training(system, lambda line, n=name: log.warning("%s: %s", n, line))
        p = LivePiece(name=name, path=spec["piece_paths"][name], system=system,
                      mirror=ExchangeWriter(system, exchanges[name]), source=None, clock=None,
                      share=spec["shares"][name], run_dir=spec["run_dirs"][name],
                      guard=TrainingGuard(system, spec["guard"], name))
        p.guard.before_step.append(faults.hook(name))
        p.live_state = (lambda n=name: dict(live_states.get(n) or {}))
        keeper = spec["keepers"].get(name)
        if keeper is not None:
            p.keeper = LiveKeeper(name, system, keeper, store, perturb=p.guard.perturb)
            p.keeper.load_state_dict(spec["keeper_states"].get(name))
        pieces.append(p)
    return pieces, live_states


def child_main(spec_bytes: bytes, exchanges: dict, inbox, outbox) -> None:
    """The training process's body (spawned by TrainingProcess)."""
    # Ctrl-C reaches the whole process group: the show stops us (with its final checkpoints). A
    # SIGTERM (systemd, Slurm, a technician's kill) is a stop with final checkpoints, as for the show.
    terminated = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())

    def send(msg: tuple) -> None:  # a multiprocessing queue takes puts from any thread
        outbox.put(msg)

    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(SendQueue(send))]
    spec = pickle.loads(spec_bytes)
    root.setLevel(spec["log_level"])
    budget = spec["budget"]
    try:  # the whole process below the display (the thread's own nice is then not added again)
        os.nice(budget.nice)
    except (AttributeError, OSError):
        pass
    torch.set_num_threads(budget.threads)
    from .training import Trainer

    store = RemoteStore(send)
    store.take(spec["values"])
    faults = _FaultHook()
    try:
        pieces, live_states = _build(spec, exchanges, store, faults)
    except Exception:  # said in the show's log; the show sees the process end and goes on
        log.exception("the training process could not load the pieces")
        raise SystemExit(1)
    trainer = Trainer(pieces, dataclasses.replace(budget, nice=0), store.snapshot, torch.device(spec["device"]),
                      None, spec["guard"]).start()
    final = True
    next_status = 0.0
    parent = multiprocessing.parent_process()
    while True:
        now = time.perf_counter()
        if now >= next_status:
            send(("status", _status(pieces, now)))
            next_status = now + 0.25
        if terminated.is_set():
            break
        try:
            msg = inbox.get(timeout=0.1)
        except queue.Empty:
            if parent is not None and not parent.is_alive():  # the show was killed: keep what was trained
                break
            continue
        except (EOFError, OSError):  # the show is gone: keep what was trained
            break
        kind = msg[0]
        if kind == "values":
            store.take(msg[1])
        elif kind == "live":
            live_states.update(msg[1])
        elif kind == "heard":
            store.heard(msg[1], msg[2], msg[3])
        elif kind == "checkpoint":
            for p in pieces:
                p.checkpoint_requested = True
        elif kind == "fault":
            with faults.lock:
                faults.pending[msg[1]] = msg[2]
        elif kind == "stop":
            final = bool(msg[1])
            break
    problems, paths = [], []
    if not trainer.stop():
        problems.append("the training thread did not stop; no final checkpoint")
        final = False
    for p in pieces:
        p.mirror.sync()  # the last weights reach the show
        if p.keeper is not None:
            p.keeper.close()
    if final:
        for p in pieces:
            try:
                paths.append(str(p.save()))
            except Exception as e:
                problems.append(f"final checkpoint of {p.name} failed: {e}")
    send(("status", _status(pieces, time.perf_counter())))
    send(("done", paths, problems))
