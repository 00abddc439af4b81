"""torch.compile (inductor, CPU) for the TRAINING step, eager against compiled in one process (issue 27).

    nice -n 19 .venv/bin/python tests/bench/bench_compile.py --figure eq64
        [--cache /tmp/inductor-cache] [--rounds 8] [--steps 2] [--check 5]

Builds two systems from the same piece and seed (as tests/bench/bench_speed.py does: equilibrium
grown to its final stage, or BAD on pieces/bad-custom-mmd.toml), compiles the networks of one of
them, and reports:
- compile time: wall and CPU seconds of the compiled system's first step beyond an eager step
  (forward and backward graphs; cold or warm depending on what TORCHINDUCTOR_CACHE_DIR holds: run
  twice with the same --cache to see both);
- recompiles (torch._dynamo's counters) after the warm-up and after the timed rounds;
- loss agreement: the scalars of the first --check steps, eager against compiled, from the same
  weights, latents and noise (the compiled steps draw the same random numbers in the same order);
- steady state: --rounds rounds of --steps steps, eager and compiled alternately (which goes first
  alternates too), CPU seconds per step; the ratio of the medians and of the minima.
One torch thread, as the training thread runs. What is compiled: equilibrium, what
`UNSTABLE_COMPILE=1` compiles (unstable/compiled.py: each generator's synthesis pass, the critic,
the generators' objective); BAD, here only, its decoder and feature extractor (module.compile()).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _build(figure: str):
    from unstable.schema import defaults

    if figure.startswith("eq"):
        from bench_speed import _equilibrium

        system = _equilibrium(int(figure[2:]), "cpu")
    else:
        from unstable.system import build_system, load_piece

        system = build_system(load_piece(ROOT / "pieces" / "bad-custom-mmd.toml"), "cpu")
        system.prepare(lambda *a, **k: None)
    return system, defaults(system.param_specs())


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figure", default="eq64", help="eq64, eq128 (any eq<px>) or bad")
    parser.add_argument("--cache", default=None, help="TORCHINDUCTOR_CACHE_DIR (default: as in the environment)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--check", type=int, default=5, help="steps whose losses are compared")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compiled-precision", choices=("float32", "bf16"), default="float32",
                        help="the compiled system's convolutions (bf16: as UNSTABLE_PRECISION=bf16-train, "
                             "traced into the graphs so the compiler fuses the casts); eager stays float32")
    args = parser.parse_args()
    if args.cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

    import contextlib

    import torch
    import torch._dynamo.utils

    from unstable import accel
    from unstable.compiled import compile_training

    def comp_precision():
        return accel.precision(torch.bfloat16) if args.compiled_precision == "bf16" else contextlib.nullcontext()

    torch.set_num_threads(args.threads)
    eager, params = _build(args.figure)
    compiled, _ = _build(args.figure)
    if compile_training(compiled) is None:  # BAD: not wired into `unstable train`; measured here only
        compiled.decoder.compile(dynamic=False)
        compiled.extractor.compile(dynamic=False)

    # The first step of each: the compiled one pays for tracing and compiling.
    first_eager, e_wall, e_cpu = _timed(lambda: eager.step(params))
    with comp_precision():
        first_comp, c_wall, c_cpu = _timed(lambda: compiled.step(params))
    counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("stats", "recompiles")}
    print(f"compile: first step {c_wall:.1f} s wall / {c_cpu:.1f} s CPU, against {e_wall:.2f} / {e_cpu:.2f} eager "
          f"(cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')})", flush=True)

    diffs = {k: abs(first_eager[k] - first_comp[k]) for k in first_eager}
    worst = [max(diffs.values())]
    for _ in range(args.check - 1):
        a = eager.step(params)
        with comp_precision():
            b = compiled.step(params)
        worst.append(max(abs(a[k] - b[k]) for k in a))
    print("loss agreement, largest |eager - compiled| over the scalars, step by step: "
          + " ".join(f"{d:.2e}" for d in worst), flush=True)
    print(f"first step scalars: eager {json.dumps({k: round(v, 6) for k, v in first_eager.items()})}")
    print(f"                 compiled {json.dumps({k: round(v, 6) for k, v in first_comp.items()})}")

    times = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        order = [("eager", eager), ("compiled", compiled)][:: 1 if r % 2 == 0 else -1]
        for name, system in order:
            with comp_precision() if name == "compiled" else contextlib.nullcontext():
                _, _, cpu = _timed(lambda: [system.step(params) for _ in range(args.steps)])
            times[name].append(cpu / args.steps)
    after = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("stats", "recompiles")}
    me, mc = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"steady: eager {1 / me:.2f} steps per CPU s, compiled {1 / mc:.2f}: ratio {me / mc:.2f}x median, "
          f"{min(times['eager']) / min(times['compiled']):.2f}x min  ({args.rounds} rounds of {args.steps}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"dynamo counters after the first step {counters}; after all {after}")
    print(json.dumps({"figure": args.figure, "compiled_precision": args.compiled_precision, "compile_wall": c_wall, "compile_cpu": c_cpu,
                      "eager_step_cpu": times["eager"], "compiled_step_cpu": times["compiled"],
                      "ratio_median": me / mc, "loss_diff": worst, "counters": after}))


if __name__ == "__main__":
    main()
