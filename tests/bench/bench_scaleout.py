"""Benchmark: past one machine. Render time on a Dask cluster against one process, the per-chunk
overhead and a model that predicts N machines; training step time across torchrun ranks.

    .venv/bin/python tests/bench/bench_scaleout.py render --frames 96 --size 512x256
    .venv/bin/python tests/bench/bench_scaleout.py train --steps 12

render: one job (a stand-in run of --piece trained a few steps, as bench_render.py does), rendered
  1. in one process (`unstable render JOB`, one torch thread),
  2. on a LocalCluster of 1 worker and 3. of 2 workers (`--workers N`), each timed from the
     cluster's start to the joined file, and the cluster start alone.
  Model: T(N) = S + O + ceil(C / N) x (t + o) + J, with C chunks, t = the one-process time per
  chunk, o = the per-chunk overhead of a cluster (scheduling, a worker's own ffmpeg start and
  close, results), measured from run 2 as (T_1worker - S - T_oneprocess) / C; S the cluster start
  (0 on a cluster already running), O a worker's first opening of the sources (in o here), J the
  join (in both). It assumes N machines like this one, each with its own cores.
train: the same piece for --steps steps, one process (1 and 2 torch threads) against
  `torchrun --nproc_per_node 2` (one thread per rank); the median step time from log.jsonl.
Timings on a shared 2-core machine are noisy; the load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))


def render_bench(args) -> None:
    from bench_render import train_stand_in
    from unstable.render import render_job
    from unstable.render.farm import open_client
    from unstable.probe import frame_md5s

    tmp = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    run = train_stand_in(Path(args.piece), args.train_steps, tmp / "stand-in")
    w, h = args.size.split("x")
    job = tmp / "job.toml"
    job.write_text(f'name = "farm"\nsize = [{w}, {h}]\nfps = 24\nframes = {args.frames}\npreset = "{args.preset}"\n'
                   f'output = "{tmp.as_posix()}/out/{{job}}.mov"\nbatch = {args.batch}\nchunk = {args.chunk}\n'
                   f'[sources.eq]\nrun = "{run.as_posix()}"\n[walk]\nkeyframes = 4\nperiod = 2.0\nseed = 3\n')
    chunks = math.ceil(args.frames / (math.ceil(args.chunk / args.batch) * args.batch))
    quiet = dict(show_progress=False, echo=lambda s: None, threads=1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.frames} frames {args.size} "
          f"{args.preset}, {chunks} chunks of {args.chunk}")

    t0 = time.perf_counter()
    one = render_job(job, out=str(tmp / "one.mov"), fresh=True, **quiet)[0]
    t_one = time.perf_counter() - t0
    print(f"one process:        {t_one:7.2f} s  ({args.frames / t_one:.2f} frames/s)")

    t = one.seconds / chunks  # rendering and joining, after the sources are open
    print(f"                    ({t:.3f} s per chunk once the sources are open)")
    timings = {}
    for n in (1, 2):
        t0 = time.perf_counter()
        client = open_client(workers=n)
        client.wait_for_workers(n)
        start = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            r = render_job(job, out=str(tmp / f"w{n}.mov"), fresh=True, client=client, **quiet)[0]
            t_render = time.perf_counter() - t1
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()
        from unstable.render import farm
        opened = max(st["open_seconds"] for st in farm.last_stats)
        inside = sum(st["seconds"] - st["open_seconds"] for st in farm.last_stats)
        tm = farm.last_timing
        same = frame_md5s(r.path) == frame_md5s(one.path) if args.preset in ("ffv1", "png", "h264_lossless") else None
        timings[n] = dict(start=start, render=t_render, opened=opened, inside=inside, **tm)
        print(f"{n} worker{'s' if n > 1 else ' '}:          {start + t_render:7.2f} s  (cluster start {start:.2f} s, "
              f"render {t_render:.2f} s, {args.frames / t_render:.2f} frames/s)"
              f"{'' if same is None else f', frames equal: {same}'}")
        print(f"           driver before the first task {tm['before']:.2f} s (open, check workers), tasks "
              f"{tm['tasks']:.2f} s, join {tm['after']:.2f} s; slowest first opening on a worker {opened:.2f} s, "
              f"chunks inside tasks {inside / chunks:.3f} s each")
    w1 = timings[1]
    c = w1["inside"] / chunks
    gap = (w1["tasks"] - w1["opened"] - w1["inside"]) / chunks  # one worker: tasks run back to back
    o = c - t + gap
    fixed = w1["before"] + w1["opened"] + w1["after"]
    print(f"per chunk: {t:.3f} s in one process; on a worker {c:.3f} s inside the task + {gap * 1000:.0f} ms between "
          f"tasks: overhead o = {o * 1000:.0f} ms a chunk ({100 * o / t:.0f} %)")
    print(f"model T(N) = S + F + ceil(C/N) x (t + o): S cluster start {w1['start']:.2f} s (0 on a running cluster), "
          f"F = {fixed:.2f} s (driver open + checks, a worker's first opening, join)")
    for n in (1, 2, 4, 8, 16, 32):
        pred = w1["start"] + fixed + math.ceil(chunks / n) * (t + o)
        measured = f"  measured {timings[n]['start'] + timings[n]['render']:.2f} s" if n in timings else ""
        print(f"  N = {n:2d}: {pred:7.2f} s{measured}")
    print("  (N = 2 here shares 2 cores between the workers and their ffmpeg: not 2 machines)")


def train_bench(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_equilibrium import write_piece
    from unstable.config import read_toml
    data = read_toml(args.train_piece)
    if data.get("kind") == "equilibrium":  # at full resolution from step 3 on: the cost of a grown piece
        data["growth"] = {**data.get("growth", {}), "stable_steps": 1, "fade_steps": 0}
    piece = write_piece(tmp / "piece.toml", data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def step_time(folder: Path) -> float:
        secs = [json.loads(l)["seconds"] for l in (folder / "log.jsonl").read_text().splitlines()
                if '"seconds"' in l]
        d = [b - a for a, b in zip(secs, secs[1:])][2:]
        return statistics.median(d)

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.train_piece}, {args.steps} steps")
    for threads in (1, 2):
        out = tmp / f"one-{threads}"
        subprocess.run([sys.executable, "-m", "unstable", "train", str(piece), "--steps", str(args.steps), "--out",
                        str(out), "--device", "cpu"], env={**env, "OMP_NUM_THREADS": str(threads)}, check=True,
                       capture_output=True, cwd=ROOT)
        print(f"one process, {threads} thread{'s' if threads > 1 else ' '}: {1000 * step_time(out):7.1f} ms/step")
    out = tmp / "two"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                    "unstable", "train", str(piece), "--steps", str(args.steps), "--out", str(out), "--device", "cpu"],
                   env={**env, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, cwd=ROOT)
    print(f"torchrun 2 ranks x 1 thread: {1000 * step_time(out):7.1f} ms/step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("render")
    r.add_argument("--piece", default=str(ROOT / "pieces" / "equilibrium-1-1.toml"))
    r.add_argument("--train-steps", type=int, default=4)
    r.add_argument("--frames", type=int, default=96)
    r.add_argument("--size", default="512x256")
    r.add_argument("--preset", default="ffv1")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--chunk", type=int, default=16)
    t = sub.add_parser("train")
    t.add_argument("--train-piece", default=str(ROOT / "pieces" / "equilibrium-1-1.toml"))
    t.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    render_bench(args) if args.what == "render" else train_bench(args)


if __name__ == "__main__":
    main()
