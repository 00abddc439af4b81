"""Benchmark: render speed of a show (default shows/demo.toml, from runs/live/demo) or a render job,
and how well generation and encoding overlap.

    .venv/bin/python tests/bench/bench_render.py --seconds 24 --size 1536x512     # the demo show
    .venv/bin/python tests/bench/bench_render.py --seconds 24 --size 1920x1080
    .venv/bin/python tests/bench/bench_render.py --job render/equilibrium-1-1.toml --frames 96
    .venv/bin/python tests/bench/bench_render.py --job ... --source eq=runs/other   # another run for a source

Three timings of the same frames, on the same renderer, in one process:
  generation  sampling + compositing + readback, nothing encoded     (Renderer.iter_frames)
  encode      the same frames, already in memory, through the job's preset (VideoWriter)
  render      the real thing: Renderer.render to a file (parts, join, frame-count check)
and the ratio render / max(generation, encode): 1.0 means the two overlap perfectly, 2.0 means
they ran one after the other. Target: <= 1.15. Each timing is the best of --repeat runs.

A show renders from its run folder (play it first: `unstable live shows/demo.toml --headless
--seconds 30`). When a run a job needs is missing, the job's piece (--piece, default the demo piece) is trained
for --train-steps steps into a temporary folder with progressive growing at one step per resolution, so the
generators already work at their full resolution: the cost of a finished piece, not of step 0.
Timings on a shared machine are noisy; the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from unstable.config import read_toml  # noqa: E402
from unstable.encode import VideoWriter  # noqa: E402
from unstable.render.renderer import job_renderer, show_renderer  # noqa: E402
from unstable.renderjob import load_job  # noqa: E402
from unstable.trainer import train  # noqa: E402


def train_stand_in(piece: Path, steps: int, folder: Path) -> Path:
    """Train `piece` a few steps, growing one resolution per step (full resolution after a few); returns the run."""
    data = read_toml(piece)
    text = piece.read_text()
    if data.get("kind") == "equilibrium":
        text += "\n[growth]\nstable_steps = 1\nfade_steps = 0\n" if "growth" not in data else ""
    copy = folder / piece.name
    folder.mkdir(parents=True, exist_ok=True)
    copy.write_text(text)
    if "growth" in data and data.get("kind") == "equilibrium":
        print(f"note: {piece} sets its own [growth]; the stand-in run keeps it", file=sys.stderr)
    return train(copy, steps=steps, out=folder / "run", show_progress=False, echo=lambda s: None)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (ffmpeg)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best(fn, repeat: int) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of the fastest of `repeat` calls."""
    runs, result = [], None
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    wall, cpu = min(runs)
    return wall, cpu, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", default=str(ROOT / "shows" / "demo.toml"))
    ap.add_argument("--run", default=None, help="the show's run folder (default runs/live/<show>)")
    ap.add_argument("--seconds", type=float, default=None, help="a show: seconds of frames per timing")
    ap.add_argument("--size", default=None, metavar="WxH", help="a show: output size (default the show's)")
    ap.add_argument("--preset", default="h264")
    ap.add_argument("--job", default=None, help="a render job instead of the show")
    ap.add_argument("--frames", type=int, default=96, help="frames per timing (from frame 0)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--piece", default=str(ROOT / "pieces" / "equilibrium-1-1.toml"),
                    help="piece to train a stand-in run from when the job's run is missing")
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the stand-in run and the videos")
    ap.add_argument("--source", action="append", default=[], metavar="NAME=RUN",
                    help="use this run (folder or .pt) for the job's source NAME (repeatable)")
    args = ap.parse_args()

    os.chdir(ROOT)  # the job's paths (runs/, render/out/) are relative to the repository
    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    if args.job is None:
        size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
        r = show_renderer(args.show, seconds=args.seconds, preset=args.preset, size=size, run=args.run,
                          threads=args.threads)
        what = args.show
    else:
        job = load_job(args.job)
        sources = dict(job.sources)
        for item in args.source:
            name, _, run = item.partition("=")
            if name not in sources or not run:
                sys.exit(f"--source {item}: expected NAME=RUN with NAME one of {', '.join(sources)}")
            sources[name] = dataclasses.replace(sources[name], run=run)
        for name, s in list(sources.items()):
            if s.run and not Path(s.run).exists() and not s.optional:
                piece = Path(args.piece)
                if not piece.is_file():
                    sys.exit(f"{args.job}: run {s.run!r} is missing and there is no piece {piece} to train a "
                             "stand-in from (pass --piece)")
                t0 = time.perf_counter()
                run = train_stand_in(piece, args.train_steps, tmp / name)
                print(f"stand-in for {s.run}: {piece} trained {args.train_steps} steps, one resolution per step "
                      f"({time.perf_counter() - t0:.1f} s) -> {run}")
                sources[name] = dataclasses.replace(s, run=str(run))
        job = dataclasses.replace(job, sources=sources)
        r = job_renderer(job, args.job, torch.device("cpu"), echo=print, threads=args.threads)
        what = args.job
    spec = r.spec
    n = spec.length if args.job is None and args.seconds else min(args.frames, spec.length)
    w, h = spec.size
    for name, src in r.cursor.pipeline.sources.items():
        res = {d: tuple(x.shape[-2:]) for d, x in src.sample(src.latents([0.0]), {}).items()}
        extra = ""
        if hasattr(src.system, "growth"):
            stage, alpha = src.system.growth()
            extra = f", growth stage {stage} ({src.system.stage_resolutions[stage]} px)"
        print(f"source {name}: step {src.system.step_count}, panel images {res}{extra}")
    print(f"{what}: {w}x{h} at {spec.fps} fps, preset {spec.preset}, look-ahead groups of {spec.align}, "
          f"{r.threads} torch thread(s), {n} frames per timing, best of {args.repeat}")

    for _ in r.iter_frames(0, min(n, spec.align), [spec.variations[0]]):  # warm-up: GL objects, first kernels
        pass

    # One output timed: a job's first variation (each further one is one more composition and file).
    first = spec.variations[0]

    def generate():
        r.cursor.restart()  # every timing samples every frame: nothing kept from the run before
        return [p.copy() for _, _, p in r.iter_frames(0, n, [first])]

    t_gen, c_gen, frames = best(generate, args.repeat)
    # Each timing made the same pictures as the first (nothing of an earlier run leaked into it).
    again = generate()
    assert all((a == b).all() for a, b in zip(frames, again)), "a second run drew other pictures"

    def encode():
        with VideoWriter(tmp / f"encode{Path(spec.output).suffix}", w, h, spec.fps, spec.preset) as vw:
            for f in frames:
                vw.write(f)

    t_enc, c_enc, _ = best(encode, args.repeat)
    out = str(tmp / f"render{Path(spec.output).suffix}")

    def render():
        r.cursor.restart()
        return r.render(span=(0, n), out=out, variations=[first.name], fresh=True, show_progress=False)

    t_render, c_render, results = best(render, args.repeat)
    assert results[0].frames == n
    r.close()

    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for label, t, c, what in (("generation", t_gen, c_gen, "sampling + compositing + readback"),
                              ("encode", t_enc, c_enc, f"{spec.preset}, frames from memory"),
                              ("render", t_render, c_render, "to a file, parts joined and checked")):
        print(f"{label:<10} {t:7.2f} s {n / t:7.1f} fps   cpu {c:6.2f} s = {c / t:4.2f} cores   ({what})")
    print(f"ratio render / max(generation, encode) = {t_render / max(t_gen, t_enc):.2f}  (target <= 1.15); "
          f"one after the other would be {(t_gen + t_enc) / max(t_gen, t_enc):.2f}")
    # When both sides are CPU work on the same few cores they cannot both run at full speed: the
    # render cannot beat (CPU of both) / cores, whatever the overlap.
    floor = (c_gen + c_enc) / cores
    print(f"CPU floor (cpu generation + cpu encode) / {cores} cores = {floor:.2f} s; "
          f"render / max(generation, encode, floor) = {t_render / max(t_gen, t_enc, floor):.2f}")
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (other processes share these cores)")
    if args.keep:
        print(f"stand-in run and videos kept in {tmp}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
