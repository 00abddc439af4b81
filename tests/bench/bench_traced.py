"""Benchmark: the sampling passes, eager against traced (unstable.traces).

    nice -n -5 .venv/bin/python tests/bench/bench_traced.py --seconds 2

For each resolution (64 and 128 px, the Series-1 piece grown) and batch (1, 4), `EquilibriumSystem
.sample` is timed eagerly (UNSTABLE_TRACED_SAMPLING=0) and traced, alternately in one process with
one torch thread, and so is BAD's decoder (the demo's `bad-custom-mmd` at its size, untrained
weights: the same graph), in three conditions:

- alone;
- beside a busy Python thread (a loop that never calls into C: the worst neighbour for the GIL);
- beside a training thread (the same piece's `step`, as a live show trains beside its render loop;
  equilibrium only: BAD's step needs its data and base models).

Printed per row: milliseconds per call (wall, median of rounds) and the ratio eager / traced. The
trace is made before timing (its cost, once per graph, is printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from unstable.equilibrium.system import EquilibriumSystem  # noqa: E402
from unstable.system import build_system, load_piece  # noqa: E402


def build(resolution: int) -> EquilibriumSystem:
    piece = load_piece(ROOT / "pieces" / "equilibrium-1-1.toml")
    system = EquilibriumSystem(dataclasses.replace(piece, generator=dataclasses.replace(piece.generator,
                                                                                         resolution=resolution)))
    system.step_count = 10 ** 6  # grown: the last stage
    return system


class Neighbour:
    """A thread beside the timing: 'spin' (pure Python) or 'train' (training steps of `system`)."""

    def __init__(self, kind: str, system: EquilibriumSystem | None):
        self.kind, self.system, self.stop = kind, system, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = 0
        while not self.stop.is_set():
            if self.kind == "spin":
                for _ in range(10000):
                    x += 1
            else:
                self.system.step({})

    def __enter__(self):
        if self.kind != "alone":
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def timed(system, z, seconds: float) -> float:
    """Milliseconds per `sample` call over about `seconds`."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        system.sample(z, {})
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="per timing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resolution", type=int, action="append", help="default: 64 and 128")
    ap.add_argument("--batch", type=int, action="append", help="default: 1 and 4")
    ap.add_argument("--no-bad", action="store_true", help="leave BAD's decoder out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 torch thread, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    print(f"{'what':>6} {'B':>2} {'beside':>6} | {'eager ms':>9} {'traced ms':>9} | eager/traced")
    cases = [(f"{r} px", build(r), build(r)) for r in args.resolution or [64, 128]]
    if not args.no_bad:
        bad = load_piece(ROOT / "pieces" / "bad-custom-mmd.toml")
        cases.append(("BAD", build_system(bad, torch.device("cpu")), None))
    for label, system, trainer in cases:
        for batch in args.batch or [1, 4]:
            z = {n: torch.randn((batch, d)) for n, d in system.panels().items() if n != "base"}
            system._traced.background = False
            t = time.perf_counter()
            system.sample(z, {})  # the traces, made once
            print(f"  traces of {label} B={batch}: {(time.perf_counter() - t) * 1e3:.0f} ms for {len(z)} panels")
            for kind in ("alone", "spin", "train") if trainer is not None else ("alone", "spin"):
                eager, traced = [], []
                with Neighbour(kind, trainer):
                    for _ in range(args.rounds):
                        os.environ["UNSTABLE_TRACED_SAMPLING"] = "0"
                        eager.append(timed(system, z, args.seconds))
                        os.environ["UNSTABLE_TRACED_SAMPLING"] = "1"
                        traced.append(timed(system, z, args.seconds))
                e, tr = statistics.median(eager), statistics.median(traced)
                print(f"{label:>6} {batch:>2} {kind:>6} | {e:9.2f} {tr:9.2f} | {e / tr:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
