"""Benchmark of the BAD system: training steps per second on a piece (batch 256) and `unstable eval` time.

    .venv/bin/python tests/bench/bench_divergence.py [--piece pieces/bad-custom-mmd.toml] [--steps 30]

Uses (or first trains and caches) the piece's base models, like `unstable train`. Base-model
training time is not part of the figures. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piece", default="pieces/bad-custom-mmd.toml")
    parser.add_argument("--steps", type=int, default=30, help="timed BAD steps (after 3 warm-up steps)")
    parser.add_argument("--samples", type=int, default=1000, help="eval samples per temperature")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from unstable.divergence.evaluate import evaluate_runs
    from unstable.guard import TrainingGuard
    from unstable.system import build_system, load_piece
    from unstable.trainer import checkpoint_payload, progress_bar
    from unstable.checkpoint import save_checkpoint

    device = torch.device(args.device)
    piece = load_piece(args.piece)
    system = build_system(piece, device)
    t0 = time.perf_counter()
    system.prepare(progress_bar)
    prepare_s = time.perf_counter() - t0
    params = {s.name: s.default for s in system.param_specs()}
    guard = TrainingGuard(system, name=piece.name)  # steps as `unstable train` takes them
    for _ in range(3):
        guard.step(params)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        guard.step(params)
    step_s = (time.perf_counter() - t0) / args.steps

    run = Path(tempfile.mkdtemp(prefix="bench-bad-"))
    try:
        shutil.copyfile(args.piece, run / "piece.toml")
        save_checkpoint(run / "checkpoint.pt", checkpoint_payload(system, args.piece))
        t0 = time.perf_counter()
        evaluate_runs([run], run / "eval", samples=args.samples, device=device)
        eval_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(run, ignore_errors=True)

    print(json.dumps({
        "piece": args.piece, "device": str(device), "threads": torch.get_num_threads(),
        "batch": piece.bad.batch, "bad_steps_per_s": round(1 / step_s, 3), "bad_step_ms": round(1000 * step_s, 1),
        "eval_seconds": round(eval_s, 2), "eval_samples_per_temperature": args.samples,
        "prepare_seconds": round(prepare_s, 2), "guard_recoveries": guard.recoveries,
    }))


if __name__ == "__main__":
    main()
