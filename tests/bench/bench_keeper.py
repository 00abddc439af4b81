"""Benchmark: the keeper's figures. The same piece trained with and without the keeper, under the
live show's guard: stasis episodes and guard restores per hour (and per 1000 steps, and a week).

    setsid nohup nice -n 19 .venv/bin/python tests/bench/bench_keeper.py --minutes 90 --resolution 0 \
        --start shows/demo.states/eq.pt --dir runs/bench-keeper \
        --learning-rate 0.01 --learning-rate 10 --batch-fraction 1 --batch-fraction 0.0625 > keeper.txt &
    .venv/bin/python tests/bench/bench_keeper.py --summarise runs/bench-keeper   # partial figures meanwhile

Each (starting learning_rate and batch_fraction, with/without keeper) pair is one process at nice 19
with one torch thread, all running at the same time for --minutes of wall time, so both arms of a
pair see the same machine; each rewrites its JSON in --dir every minute, so a run cut short still
has figures. Each process trains --piece (a Series-1 piece, its resolution set to --resolution)
(or --start, a grown state at the piece's own resolution) step by step through a TrainingGuard with
the show's default [guard] settings, as the live training thread does; every `every` steps (the
keeper's default, 50) a Keeper looks (on in one arm, off in the other: it still measures, so both
arms count stasis the same way), and every --stasis-every steps the guard's own stasis check runs
(the check a live show makes every 10 s).

Counted per arm:
- stasis episodes (keeper): runs of consecutive looks whose probe motion is under the keeper's
  stasis_floor (0.002), the keeper's and the explorer's yardstick;
- stasis episodes (guard): the guard's declared stasis (output variety under 0.01 for 3 checks);
- guard restores: steps the guard undid (each one restored the last good state).
A starting learning_rate of 0.01 (the lowest) pushes the piece toward stasis; 10 (the highest) with
batch_fraction 1/16 (the smallest batch, 2 images a generator) toward explosion; 1 is the piece as
written. Rates per hour are per hour of this run's wall time at the step rate it got (printed); per
1000 steps they do not depend on the machine's load. The week column is the hourly rate x 168: it
assumes the rate of the run's hours holds for the week (same step rate, no trend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def arm(args) -> dict:
    """One arm: train for args.minutes, return its counts."""
    import torch

    from unstable.explore.keeper import Keeper
    from unstable.keeper_settings import KeeperSettings
    from unstable.guard import GuardSettings, TrainingGuard
    from unstable.schema import defaults
    from unstable.system import build_system, load_piece

    torch.set_num_threads(1)
    piece = load_piece(ROOT / args.piece)
    g = piece.generator
    if args.resolution:
        piece = dataclasses.replace(piece, generator=dataclasses.replace(
            g, resolution=args.resolution, start_resolution=min(g.start_resolution, args.resolution)))
    torch.manual_seed(piece.seed)
    system = build_system(piece, torch.device("cpu"))
    if args.start:  # a grown state, as a show's `start` plays it (the piece's own resolution)
        from unstable.frame.sources import load_run_into
        load_run_into(system, ROOT / args.start, torch.device("cpu"))
    guard = TrainingGuard(system, GuardSettings(), "bench")
    settings = KeeperSettings(on=args.kept, every=args.every)
    keeper = Keeper(system, settings, name="bench", perturb=guard.perturb)
    params = defaults(system.param_specs())
    params["learning_rate"] = args.start_lr
    if "batch_fraction" in params:
        params["batch_fraction"] = args.start_fraction
    end = time.monotonic() + args.minutes * 60
    t0 = last_report = time.monotonic()
    steps = undone = episodes = looks = under = 0
    in_episode = False
    lrs, fractions, motions = [], [], []

    def counts() -> dict:
        return {"kept": args.kept, "start_lr": args.start_lr, "start_fraction": args.start_fraction,
                "steps": steps, "seconds": round(time.monotonic() - t0, 1),
                "restores": guard.recoveries, "stasis_episodes_keeper": episodes, "looks_in_stasis": under,
                "looks": looks, "stasis_episodes_guard": guard.stasis_events, "adjustments": len(keeper.adjustments),
                "final_lr": params["learning_rate"], "lr_min": min(lrs, default=None), "lr_max": max(lrs, default=None),
                "final_fraction": params.get("batch_fraction"), "fraction_min": min(fractions, default=None),
                "fraction_max": max(fractions, default=None), "guard_lr_scale": guard.lr_scale,
                "stopped": guard.stopped, "done": time.monotonic() >= end, "last_lines": keeper.adjustments[-3:],
                # How far from the floor the looks were: a push that never reaches stasis shows here.
                "motion_min": min(motions, default=None), "motion_median": statistics.median(motions) if motions
                else None, "motion_max": max(motions, default=None)}

    while time.monotonic() < end:
        if guard.stopped is not None:  # as a live show does: try again after a pause (here at once)
            guard.retry()
        if guard.step(params) is None:
            undone += 1
        steps += 1
        if steps % settings.every == 0:
            changes = keeper.observe(params, undone, settings.every)
            params.update(changes)
            undone = 0
            looks += 1
            if keeper.motion is not None:
                motions.append(round(keeper.motion, 6))
            low = keeper.motion is not None and keeper.motion < settings.stasis_floor
            under += low
            episodes += low and not in_episode
            in_episode = low
            lrs.append(round(float(params["learning_rate"]), 4))
            fractions.append(round(float(params.get("batch_fraction", 1.0)), 4))
        if steps % args.stasis_every == 0:
            guard.check_stasis(params)
        if time.monotonic() - last_report > 60:  # partial figures for a run that is cut short
            last_report = time.monotonic()
            args.out.write_text(json.dumps(counts()))
    return counts()


def table(results: list[dict]) -> None:
    """The figures: per hour of each arm's wall time, per 1000 steps, and a week at the same rates."""
    print(f"{'start lr':>8} {'frac':>5} {'keeper':>6} {'steps':>6} {'steps/h':>8} {'stasis ep/h':>11} "
          f"{'guard stasis/h':>14} {'restores/h':>10} {'restores/1k':>11} {'stasis ep/week':>14} "
          f"{'restores/week':>13} {'final lr':>8} {'final frac':>10}")
    for r in results:
        if "failed" in r:
            print("an arm failed:", r)
            continue
        h = max(r["seconds"], 1e-9) / 3600
        print(f"{r['start_lr']:>8g} {r.get('start_fraction', 1.0):>5g} {'on' if r['kept'] else 'off':>6} "
              f"{r['steps']:>6} {r['steps'] / h:>8.0f} {r['stasis_episodes_keeper'] / h:>11.1f} "
              f"{r['stasis_episodes_guard'] / h:>14.1f} {r['restores'] / h:>10.1f} "
              f"{1000 * r['restores'] / max(r['steps'], 1):>11.2f} {168 * r['stasis_episodes_keeper'] / h:>14.0f} "
              f"{168 * r['restores'] / h:>13.0f} {r['final_lr']:>8.4g} {r.get('final_fraction') or 1.0:>10.4g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--piece", default="pieces/equilibrium-1-1.toml")
    ap.add_argument("--resolution", type=int, default=32, help="0: the piece's own (needed with --start)")
    ap.add_argument("--start", default="", help="a grown state to start from, e.g. shows/demo.states/eq.pt")
    ap.add_argument("--every", type=int, default=50, help="the keeper's `every` (steps between looks)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--learning-rate", dest="lrs", type=float, action="append",
                    help="starting live learning_rate (repeatable; default 1)")
    ap.add_argument("--batch-fraction", dest="fractions", type=float, action="append",
                    help="starting live batch_fraction, paired with the --learning-rate of the same place "
                         "(repeatable; default 1 for each)")
    ap.add_argument("--dir", type=Path, help="where the arms write their JSON (default: a new temporary folder)")
    ap.add_argument("--summarise", type=Path, help="print the table of the arms' (partial) JSON in this folder")
    ap.add_argument("--stasis-every", type=int, default=25, help="steps between the guard's stasis checks")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kept", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--start-lr", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--start-fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        os.nice(max(0, 19 - os.nice(0)))  # the lowest priority: others' timings on this machine come first
        args.kept = bool(args.kept)
        args.out.write_text(json.dumps(arm(args)))
        return
    if args.summarise:
        table([json.loads(f.read_text()) for f in sorted(args.summarise.glob("lr*.json"))])
        return
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="bench-keeper-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"the arms write their (partial, every minute) JSON in {tmp}")
    procs = []
    lrs = args.lrs or [1.0]
    fractions = (args.fractions or []) + [1.0] * (len(lrs) - len(args.fractions or []))
    for lr, fraction in zip(lrs, fractions):
        for kept in (1, 0):
            out = tmp / f"lr{lr}-f{fraction}-k{kept}.json"
            cmd = [sys.executable, __file__, "--arm", "--kept", str(kept), "--start-lr", str(lr), "--out", str(out),
                   "--start-fraction", str(fraction),
                   "--piece", args.piece, "--resolution", str(args.resolution), "--minutes", str(args.minutes),
                   "--stasis-every", str(args.stasis_every), "--start", args.start, "--every", str(args.every)]
            procs.append((subprocess.Popen(cmd), out))
    print(f"{len(procs)} arms for {args.minutes:g} min each, all at once; load before: {os.getloadavg()[0]:.1f}")
    results = []
    for p, out in procs:
        p.wait()
        results.append(json.loads(out.read_text()) if out.exists() else {"failed": p.returncode})
    print(f"load after: {os.getloadavg()[0]:.1f}")
    table(results)
    for r in results:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
