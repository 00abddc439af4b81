"""Benchmark of the sampling-time instruments: network bends and latent directions.

    .venv/bin/python tests/bench/bench_bending.py [SHOW] [--seconds S] [--rounds R]

For the equilibrium piece of a show (default shows/bending.toml: equilibrium-1-1, 64 px) at its final
growth stage, one thread, batch 1 (the live path), prints:
- sampling time of an unbent frame (every bend at 0) and of a bent one (every bend of the show on at
  once, clusters already computed), per generator image, and their ratio, measured in one run with
  the two interleaved over `rounds` rounds (so a load change hits both alike);
- time to compute the channel clusters of every bent layer (both generators) and the latent
  directions of both generators (PCA of w over `directions.samples` latents), cold, as a refresh
  pays them;
- for a BAD decoder with placeholder weights (the numbers do not depend on them): directions of the
  first hidden layer (800 units) and clusters of its 28 px layer.
Prints the load average first: anything else running skews the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from unstable.show import load_show
from unstable.system import build_system, piece_from_dict

ROOT = Path(__file__).resolve().parents[2]


def per_call(fn, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return elapsed / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("show", nargs="?", default=str(ROOT / "shows" / "bending.toml"))
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement, per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}")
    show = load_show(args.show)
    name, piece = next((n, p) for n, p in show.pieces.items() if p.kind == "equilibrium")
    system = build_system(piece, torch.device("cpu"))
    system.step_count = 10**6  # the final growth stage: every layer runs
    specs = system.param_specs()
    # 0.6 of each range: a rotation off the right angles and fractional radii (the resampling and
    # two-filter paths, the dearer ones)
    bends = {s.name: 0.6 * s.hi for s in specs if s.name in system.bender.names}
    g = torch.Generator().manual_seed(0)
    z = {p: torch.randn(1, d, generator=g) for p, d in system.panels().items()}
    z1 = {"g0": z["g0"]}

    t0 = time.perf_counter()
    system.sample(z, bends)  # clusters of every bent layer, both generators
    clusters_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    system.sample(z, {"dir0": 1.0})
    directions_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    system.sample(z, {})
    plain_first = time.perf_counter() - t0

    plain, bent, steered = [], [], []
    for _ in range(args.rounds):
        plain.append(per_call(lambda: system.sample(z1, {}), args.seconds))
        bent.append(per_call(lambda: system.sample(z1, bends), args.seconds))
        steered.append(per_call(lambda: system.sample(z1, {"dir0": 1.0, "dir1": -1.0}), args.seconds))
    p, b, s = statistics.median(plain), statistics.median(bent), statistics.median(steered)
    print(f"{name}: {piece.name}, {piece.generator.resolution} px, {len(bends)} bends on at once: "
          f"{', '.join(f'{k}={v:g}' for k, v in bends.items())}")
    print(f"unbent frame (B=1, one generator): {1e3 * p:.2f} ms  ({1 / p:.0f} images/s)")
    print(f"bent frame (B=1, one generator):   {1e3 * b:.2f} ms  ({1 / b:.0f} images/s)")
    print(f"ratio bent / unbent: {b / p:.2f}  (medians of {args.rounds} interleaved rounds; "
          f"per-round ratios {', '.join(f'{x / y:.2f}' for x, y in zip(bent, plain))})")
    print(f"steered frame (2 directions on): {1e3 * s:.2f} ms, ratio {s / p:.2f}")
    print(f"clusters of {len({(b_.layer, b_.clusters) for b_ in system.bender.bends if b_.channels == 'cluster'})} "
          f"bent layers x 2 generators (64 latents each): {clusters_s - plain_first:.3f} s "
          f"(activations and k-means: {system.bender.cluster_seconds:.3f} s of it)")
    print(f"directions of 2 generators ({piece.directions.samples} latents, PCA of w): "
          f"{system.directions.seconds:.3f} s (the first steered frame took {directions_s:.3f} s)")

    d = {"name": "bench", "kind": "divergence", "directions": {"count": 4},
         "bend": [{"layer": "c28", "op": "ablate", "channels": "cluster", "clusters": 4}]}
    bad = build_system(piece_from_dict(d, "bench.toml"), torch.device("cpu"))
    zb = {"decoder": torch.randn(1, 16, generator=g)}
    bad.sample(zb, {})
    t0 = time.perf_counter()
    bad.sample(zb, {"dir0": 1.0})
    bad_dir = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad.sample(zb, {"bend0_ablate": 1.0})
    bad_cl = time.perf_counter() - t0
    pb = per_call(lambda: bad.sample(zb, {}), args.seconds)
    bb = per_call(lambda: bad.sample(zb, {"bend0_ablate": 1.0}), args.seconds)
    print(f"BAD decoder: directions ({bad.piece.directions.samples} latents, 800-unit hidden layer) "
          f"{bad_dir:.3f} s; clusters of c28 (64 channels) {bad_cl:.3f} s; "
          f"frame {1e3 * pb:.2f} ms unbent, {1e3 * bb:.2f} ms bent (ratio {bb / pb:.2f})")


if __name__ == "__main__":
    main()
