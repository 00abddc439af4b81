"""A/B speed of the models against another tree (issue 27): one run, interleaved, as ratios.

    git worktree add /tmp/base27 <commit before the change>
    .venv/bin/python tests/bench/bench_speed.py --base /tmp/base27 [--repeats 5] [--seconds 3]
    ... --new-precision bf16-train   # the new tree under UNSTABLE_PRECISION=bf16-train, the base as set
    ... --new-compile --figures eq64,eq128   # the new tree's training compiled (UNSTABLE_COMPILE=1)
    ... --base . --base-env UNSTABLE_CUDA_GRAPHS=0 --device cuda --figures s256b1   # one tree, a setting off
    ... --base . --base-env UNSTABLE_COMPILE_SAMPLING=0 --device cuda --figures s256b1  # compiled sampling

Every figure is measured in a fresh pair of subprocesses per repeat (`--repeats`), one per tree,
each warmed up once; the two then take turns, `--bursts` times each, `--seconds` a turn, one
running while the other waits. The shared machine's speed drifts over seconds (one tree's 5 s runs
were bimodal, 1.3x apart), so only a base turn and the new turn next to it saw the same machine:
the median of those pairwise ratios (with its quartiles) is the figure to read; the ratio of the
medians and the absolute rates only say what this run saw. Fresh processes per repeat keep a
heap's chance layout (which moves a tree's speed between processes) in the sample.

Figures (one torch thread by default, as the live training thread and the render loop each have):
- eq64, eq128: (un)stable equilibrium 1:1 training steps/s at its final growth stage (batch 8,
  grown), the piece as shipped and the same piece at 128 px;
- bad: BAD's training step on pieces/bad-custom-mmd.toml (batch 256; base models from the cache,
  trained first if missing);
- s64b1 ... s128b8: images/s of one generator's `sample` (fixed noise, as the live engine calls
  it) at batch 1, 4 and 8, 64 px and 128 px.
The new tree's precision (float32, or bf16 where the CPU has it) is printed with the figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ["eq64", "eq128", "bad", "s64b1", "s64b4", "s64b8", "s128b1", "s128b4", "s128b8"]
FIGURE = re.compile(r"eq\d+|bad|s\d+b\d+")  # eq<px>, s<px>b<batch>: any power-of-two size


def _equilibrium(resolution: int, device: str):
    import dataclasses

    from unstable.system import build_system, load_piece

    piece = load_piece(ROOT / "pieces" / "equilibrium-1-1.toml")
    if resolution != piece.generator.resolution:
        piece = dataclasses.replace(piece, generator=dataclasses.replace(piece.generator, resolution=resolution))
    system = build_system(piece, device)
    g = piece.growth  # growth is a function of the step count: jump to the final stage
    system.step_count = g.stable_steps + (g.stable_steps + g.fade_steps) * len(system.stage_resolutions)
    return system


def _work(figure: str, device: str):
    """(function to time, items per call) for a figure."""
    import torch

    from unstable.schema import defaults

    if figure.startswith("eq"):
        system = _equilibrium(int(figure[2:]), device)
        params = defaults(system.param_specs())
        if os.environ.get("UNSTABLE_COMPILE") == "1":  # --new-compile: the warm-up calls pay the compile
            from unstable import compiled
            compiled.compile_training(system, lambda line: None)
        return (lambda: system.step(params)), 1
    if figure == "bad":
        from unstable.system import build_system, load_piece

        system = build_system(load_piece(ROOT / "pieces" / "bad-custom-mmd.toml"), device)
        system.prepare(lambda *a, **k: None)
        params = defaults(system.param_specs())
        return (lambda: system.step(params)), 1
    res, batch = (int(v) for v in figure[1:].split("b"))
    system = _equilibrium(res, device).sampling_copy()
    # What a show does before its first frame: sample for long (where the tree has it: on a GPU its
    # passes compile) and make the sampling traces now (a tree without them samples eagerly).
    # Otherwise the first timed calls run eagerly while a thread traces beside them.
    getattr(system, "sampled_for_long", lambda: None)()
    getattr(system, "prepare_sampling", lambda: None)()
    params = defaults(system.param_specs())
    name = system.names[0]
    # On the device already, as the live walk hands its latents over.
    z = {name: torch.randn((batch, system.piece.generator.z_dim), generator=torch.Generator().manual_seed(1)).to(device)}
    # The pass in its final form before it is timed: each call may start one job on the tracer
    # thread (a trace, a CUDA graph, a compile and its graph), each waited for here.
    cache = getattr(system, "_traced", None)
    for _ in range(6):
        system.sample(z, params)
        if cache is not None:
            cache.wait()
    return (lambda: system.sample(z, params)), batch


def worker(tree: str, figure: str, seconds: float, threads: int, device: str) -> None:
    """Time one figure with the `unstable` package of `tree`: warms up, prints one JSON line, then
    for each line `go` on stdin times one turn of `seconds` and prints one JSON line (until EOF)."""
    sys.path.insert(0, tree)
    # What the tree's `unstable` command does first (a tree without it runs as its command did).
    # Asked of the tree's own file: with this checkout installed editable, an import of a module the
    # tree lacks would be served from this checkout.
    allocator = _tree_module(tree, "allocator")
    if hasattr(allocator, "exec_with_jemalloc"):
        allocator.exec_with_jemalloc()
    import torch

    torch.set_num_threads(threads)
    import unstable

    assert Path(unstable.__file__).resolve().is_relative_to(Path(tree).resolve()), unstable.__file__
    work, items = _work(figure, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def fn():
        work()
        sync()

    # Warm-up: a trace's executor specialises its graph over its first calls; a compiled step pays
    # its compile here.
    for _ in range(3 if figure.startswith(("eq", "bad")) else 20):
        fn()
    try:
        from unstable import accel
        precision = accel.describe(device)
    except ImportError:
        precision = "float32"
    if hasattr(allocator, "in_use"):
        precision += f", {allocator.in_use()}"
    else:
        precision += ", glibc (tuned)" if allocator is not None and allocator.tuned() else ", system"
    print(json.dumps({"ready": True, "precision": precision}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or count < 3:
            fn()
            count += 1
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Per CPU second as well as per wall second: on a machine shared with other work the process
        # waits for a core now and then, which the wall clock counts and the CPU clock does not.
        print(json.dumps({"rate": count * items / wall, "rate_cpu": count * items / cpu}), flush=True)


def _tree_module(tree: str, name: str):
    """unstable.<name> of `tree`, or None where the tree has no such module."""
    if not (Path(tree) / "unstable" / f"{name}.py").exists():
        return None
    return importlib.import_module(f"unstable.{name}")


class Side:
    """One tree's worker process, warmed up, timing a turn when asked."""

    def __init__(self, tree: str, figure: str, seconds: float, threads: int, device: str, precision: str | None = None,
                 compile_: bool = False, extra_env: dict[str, str] | None = None):
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra_env or {})}
        env.pop("UNSTABLE_COMPILE", None)  # set for the new tree only (--new-compile)
        if precision:  # one side's UNSTABLE_PRECISION: a value the other tree may not know
            env["UNSTABLE_PRECISION"] = precision
        if compile_:
            env["UNSTABLE_COMPILE"] = "1"
        self.name = f"{figure} in {tree}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", tree, figure, "--seconds", str(seconds),
                                      "--threads", str(threads), "--device", device], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.precision = self._read()["precision"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise SystemExit(f"{self.name} failed:\n{self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def turn(self) -> dict:
        """One timed turn: {"rate", "rate_cpu"}."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="/tmp/base27", help="tree of the commit before the change")
    parser.add_argument("--new", default=str(ROOT), help="tree to compare (default: this one)")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated, from {FIGURES}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time of one turn")
    parser.add_argument("--bursts", type=int, default=6, help="turns each side takes per repeat, alternating")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu-check.sh)")
    parser.add_argument("--new-precision", default=None, choices=["float32", "bf16", "bf16-train"],
                        help="UNSTABLE_PRECISION for the new tree only (default: as in the environment)")
    parser.add_argument("--new-compile", action="store_true",
                        help="UNSTABLE_COMPILE=1 for the new tree's training figures (eq*): compiled, the compile "
                             "paid in the warm-up (keep TORCHINDUCTOR_CACHE_DIR warm: a cold compile takes minutes)")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the base side only (repeatable), e.g. "
                             "UNSTABLE_CUDA_GRAPHS=0 with --base . to measure one setting in one tree")
    parser.add_argument("--worker", nargs=2, metavar=("TREE", "FIGURE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.seconds, args.threads, args.device)
        return
    base_env = {}
    for item in args.base_env:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise SystemExit(f"--base-env {item!r}: expected NAME=VALUE")
        base_env[name] = value
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    for f in figures:
        if not FIGURE.fullmatch(f):
            raise SystemExit(f"--figures: unknown figure {f!r}, expected eq<px>, bad or s<px>b<batch> (e.g. {FIGURES})")
    print(f"base {args.base} vs new {args.new} on {args.device}; {args.repeats} process pairs x {args.bursts} "
          f"alternating turns of {args.seconds:g} s, {args.threads} thread(s), base env {base_env or 'as new'}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results = {}
    for f in figures:
        base, new, base_cpu, new_cpu, pairs, pairs_cpu, precision = [], [], [], [], [], [], ""
        for r in range(args.repeats):
            sides = {"base": Side(args.base, f, args.seconds, args.threads, args.device, None, False, base_env),
                     "new": Side(args.new, f, args.seconds, args.threads, args.device, args.new_precision,
                                 args.new_compile)}
            precision = f"new: {sides['new'].precision}; base: {sides['base'].precision}"
            try:
                for b in range(args.bursts):
                    # Alternate which side goes first, so a drift in the machine's speed cancels out.
                    order = ["base", "new"][:: 1 if (r + b) % 2 == 0 else -1]
                    got = {side: sides[side].turn() for side in order}
                    base.append(got["base"]["rate"]), new.append(got["new"]["rate"])
                    base_cpu.append(got["base"]["rate_cpu"]), new_cpu.append(got["new"]["rate_cpu"])
                    pairs.append(got["new"]["rate"] / got["base"]["rate"])
                    pairs_cpu.append(got["new"]["rate_cpu"] / got["base"]["rate_cpu"])
            finally:
                for side in sides.values():
                    side.close()
        b, n = statistics.median(base), statistics.median(new)
        bc, nc = statistics.median(base_cpu), statistics.median(new_cpu)
        paired, paired_cpu = statistics.median(pairs), statistics.median(pairs_cpu)
        q1, q3 = _quartiles(pairs)
        unit = "steps/s" if not f.startswith("s") else "images/s"
        results[f] = {"base": b, "new": n, "ratio": n / b, "base_cpu": bc, "new_cpu": nc, "ratio_cpu": nc / bc,
                      "paired": paired, "paired_q1": q1, "paired_q3": q3, "paired_cpu": paired_cpu,
                      "unit": unit, "precision": precision, "base_runs": base, "new_runs": new, "pairs": pairs}
        print(f"{f:7s} paired ratio {paired:4.2f}x (quartiles {q1:4.2f}-{q3:4.2f}, {len(pairs)} pairs; per CPU s "
              f"{paired_cpu:4.2f}x) | medians base {b:7.2f} new {n:7.2f} {unit} ({n / b:4.2f}x; per CPU s "
              f"{bc:.2f} / {nc:.2f}, {nc / bc:4.2f}x) ({precision})", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
