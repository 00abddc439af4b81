"""Disk per day of a default `unstable train` run, before and after the retention policy (issue 13).

Measures the bytes of one kept checkpoint, one grid and one log line of a piece (default
pieces/equilibrium-1-1.toml) after a few real training steps, then counts what a day at the given
steps/s keeps: before (every kept checkpoint and grid, log.jsonl growing) and after (the piece's
[train] retention settings, simulated on the step numbers with the measured sizes).

    python tests/bench/bench_disk.py [--piece P] [--rates 4,9.35] [--days 1,7,30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def kept_count(n_files: int, recent: int, per_octave: int) -> int:
    from unstable.disk import log_spaced
    # the log-spaced numbers below n_files, plus the newest `recent` that are not on the grid
    on_grid = sum(1 for n in range(n_files) if log_spaced(n, per_octave))
    extra = sum(1 for n in range(max(0, n_files - recent), n_files) if not log_spaced(n, per_octave))
    return on_grid + extra


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--piece", default="pieces/equilibrium-1-1.toml")
    ap.add_argument("--rates", default="4,9.35", help="steps per second to compute a day for")
    ap.add_argument("--days", default="1,7,30")
    ap.add_argument("--steps", type=int, default=5, help="training steps before measuring")
    ap.add_argument("--checkpoint-mb", type=float, default=None,
                    help="use this checkpoint size instead (a run's later stages hold more optimiser state)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from unstable.checkpoint import save_checkpoint
    from unstable.images import panel_grid, write_png
    from unstable.schema import defaults
    from unstable.system import build_system, load_piece
    from unstable.trainer import checkpoint_payload, fixed_latents
    piece = load_piece(a.piece)
    torch.manual_seed(piece.seed)
    system = build_system(piece, torch.device("cpu"))
    system.prepare(lambda desc, total=None, **kw: __import__("tqdm").tqdm(total=total, disable=True))
    params = defaults(system.param_specs())
    scalars = {}
    for _ in range(a.steps):
        scalars = system.step(params)
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d) / "c.pt", checkpoint_payload(system, a.piece))
        ckpt = os.path.getsize(Path(d) / "c.pt")
        lat = fixed_latents(system.panels(), piece.train.grid_samples, piece.seed, torch.device("cpu"))
        write_png(Path(d) / "g.png", panel_grid(system.sample(lat, params)))
        grid = os.path.getsize(Path(d) / "g.png")
    if a.checkpoint_mb:
        ckpt = int(a.checkpoint_mb * 2**20)
    line = len(json.dumps({"step": 123456, "seconds": round(time.monotonic(), 4),
                           **{k: float(v) for k, v in scalars.items()}})) + 1
    t = piece.train
    MB = 2**20
    print(f"piece {a.piece}: checkpoint {ckpt / MB:.2f} MB, grid {grid / 1024:.1f} KB, log line {line} B; "
          f"keep_every {t.keep_every}, grid_every {t.grid_every}")
    print(f"after: keep_recent {t.keep_recent}, keep_per_octave {t.keep_per_octave}, keep_budget_mb "
          f"{t.keep_budget_mb:g}; grids_recent {t.grids_recent}, grids_per_octave {t.grids_per_octave}, "
          f"grids_budget_mb {t.grids_budget_mb:g}; log_max_mb {t.log_max_mb:g} x {t.log_keep + 1} files")
    for rate in (float(x) for x in a.rates.split(",")):
        for days in (int(x) for x in a.days.split(",")):
            steps = int(rate * 86400 * days)
            n_ck, n_gr = steps // t.keep_every + 1, steps // t.grid_every + 1
            before = {"checkpoints": n_ck * ckpt, "grids": n_gr * grid, "log": steps * line}
            k_ck = min(kept_count(n_ck, t.keep_recent, t.keep_per_octave) * ckpt, t.keep_budget_mb * MB or 1e30)
            k_gr = min(kept_count(n_gr, t.grids_recent, t.grids_per_octave) * grid, t.grids_budget_mb * MB or 1e30)
            k_log = min(steps * line, t.log_max_mb * MB * (t.log_keep + 1) if t.log_max_mb else 1e30)
            after = {"checkpoints": k_ck, "grids": k_gr, "log": k_log}
            fmt = lambda x: f"{x / 2**30:.2f} GB" if x >= 2**30 else f"{x / MB:.0f} MB"
            print(f"{rate:g} steps/s, {days} day(s), {steps} steps: before " +
                  ", ".join(f"{k} {fmt(v)}" for k, v in before.items()) + f" = {fmt(sum(before.values()))}; after " +
                  ", ".join(f"{k} {fmt(v)}" for k, v in after.items()) + f" = {fmt(sum(after.values()))}")


if __name__ == "__main__":
    main()
