"""Benchmark of the (un)stable equilibrium ensemble on this machine.

    .venv/bin/python tests/bench/bench_equilibrium.py [PIECE] [--device cpu|cuda] [--seconds S]

Prints, for the piece (default: pieces/equilibrium-1-1.toml) at its final growth stage:
- training steps/s (every generator's batch and the critic's updates, through the training guard, as
  `unstable train` runs them);
- generator inference images/s at batch 1, per generator (`sample`, fixed noise, as the live
  engine calls it);
- FLOPs per image of one generator forward (torch.utils.flop_counter, convolutions and matmuls)
  and of one training step, and the GFLOP/s both achieve.
Targets on the 2-core CPU: >= 2 training steps/s and >= 60 images/s per generator.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unstable.guard import TrainingGuard
from unstable.schema import defaults
from unstable.system import build_system, load_piece

ROOT = Path(__file__).resolve().parents[2]


def timed(fn, seconds: float, warmup: int = 3) -> tuple[float, int]:
    """Seconds per call of fn, run for about `seconds` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return elapsed / count, count


def flops_of(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("piece", nargs="?", default=str(ROOT / "pieces" / "equilibrium-1-1.toml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per figure")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    piece = load_piece(args.piece)
    system = build_system(piece, device)
    params = defaults(system.param_specs())
    # Jump to the final stage: growth is a function of the step count only.
    g = piece.growth
    system.step_count = g.stable_steps + (g.stable_steps + g.fade_steps) * len(system.stage_resolutions)
    stage, alpha = system.growth()
    assert stage == len(system.stage_resolutions) - 1 and alpha == 1.0
    res = system.stage_resolutions[stage]
    names = list(system.panels())
    print(f"piece {piece.name!r} ({args.piece}) on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (anything else running skews the figures)")
    print(f"final stage: {res}px, {len(names)} generators, generator batch {piece.generator.optim.batch}, "
          f"critic batch {piece.critic.optim.batch} x {piece.critic.updates} update(s) per step, "
          f"critic mode {piece.critic.mode}")
    g_params = sum(p.numel() for p in system.generators[0].parameters())
    c_params = sum(p.numel() for p in system.critic.parameters())
    print(f"parameters: {g_params:,} per generator, {c_params:,} critic")

    guard = TrainingGuard(system, name=piece.name)  # steps as `unstable train` takes them

    def train_step():
        guard.step(params)
        sync()

    step_flops = flops_of(lambda: guard.step(params))
    per_step, steps = timed(train_step, args.seconds)
    print(f"training: {1 / per_step:.2f} steps/s ({per_step * 1e3:.1f} ms/step over {steps} steps, "
          f"{guard.recoveries} undone by the guard); "
          f"{step_flops / 1e9:.2f} GFLOP/step -> {step_flops / per_step / 1e9:.1f} GFLOP/s achieved")

    z_dim = system.panels()[names[0]]
    gen = torch.Generator().manual_seed(0)
    latents = {name: torch.randn(1, z_dim, generator=gen).to(device) for name in names}
    gen_flops = flops_of(lambda: system.generators[0](latents[names[0]], stage, alpha))
    print(f"generator forward: {gen_flops / 1e6:.1f} MFLOP per image at {res}px")
    for name in names:
        one = {name: latents[name]}

        def render():
            system.sample(one, params)
            sync()

        per_image, frames = timed(render, args.seconds / len(names))
        print(f"inference {name}: {1 / per_image:.1f} images/s at batch 1 ({per_image * 1e3:.2f} ms/image over "
              f"{frames}) -> {gen_flops / per_image / 1e9:.2f} GFLOP/s achieved")


if __name__ == "__main__":
    main()
