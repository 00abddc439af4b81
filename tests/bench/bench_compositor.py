"""Compositor cost per 1920x1080 frame: compose (upload + draw, finished) and readback, p50/p99 ms.

    .venv/bin/python tests/bench/bench_compositor.py [--frames 100] [--size 1920x1080]

Panels change every frame (a few pre-made random images cycled, as a latent walk would), so the
upload is real. "compose" is render() followed by ctx.finish(), so the GPU work is inside the
number; "read" is read() alone (HxWx3 uint8 into the reused buffer). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout, Scene
from unstable.display.gl import create_headless_context


def panels(sizes: dict[str, int], n: int, kind: str) -> list[dict[str, torch.Tensor]]:
    """`n` sets of random panel images: float [3, S, S] in 0..1 or uint8 [S, S, 3]."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        imgs = {}
        for name, s in sizes.items():
            x = torch.rand(3, s, s, generator=g)
            imgs[name] = x if kind == "float" else (x * 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        out.append(imgs)
    return out


def pct(ts: list[float]) -> str:
    a = np.array(ts) * 1e3
    return f"p50 {np.percentile(a, 50):6.2f}  p99 {np.percentile(a, 99):6.2f}"


class Case:
    """One configuration, with its own compositor so cases never evict each other's textures."""

    def __init__(self, ctx, size, name, sets, colour: Colour, layout: Layout, crossfade: bool):
        self.comp = Compositor(ctx, size)
        self.name, self.sets, self.colour, self.layout, self.crossfade = name, sets, colour, layout, crossfade
        self.compose: list[float] = []
        self.read: list[float] = []

    def frame(self, i: int, record: bool) -> None:
        scene = Scene(self.sets[i % len(self.sets)], self.layout, self.colour)
        t0 = time.perf_counter()
        if self.crossfade:
            other = Scene(self.sets[(i + 1) % len(self.sets)], Layout(mode="grid", rows=2), self.colour)
            self.comp.render(scene, next=other, mix=0.5)
        else:
            self.comp.render(scene)
        self.comp.ctx.finish()
        t1 = time.perf_counter()
        self.comp.read()
        t2 = time.perf_counter()
        if record:
            self.compose.append(t1 - t0)
            self.read.append(t2 - t1)

    def report(self) -> str:
        total = [a + b for a, b in zip(self.compose, self.read)]
        return f"{self.name:40s} compose {pct(self.compose)} | read {pct(self.read)} | total {pct(total)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", default="1920x1080")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    ctx = create_headless_context()
    print(f"GL: {ctx.info['GL_RENDERER']}; output {w}x{h}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    side = Layout(margin=0.02, gap=0.01)
    side_nearest = Layout(margin=0.02, gap=0.01, filter="nearest")
    cases = []
    for label, sizes in (("64+64+28", {"g0": 64, "g1": 64, "digits": 28}),
                         ("256x3", {"g0": 256, "g1": 256, "g2": 256})):
        floats, uint8s = panels(sizes, 4, "float"), panels(sizes, 4, "uint8")
        cases += [
            Case(ctx, (w, h), f"{label} float linear", floats, Colour(), side, False),
            Case(ctx, (w, h), f"{label} uint8 linear", uint8s, Colour(), side, False),
            Case(ctx, (w, h), f"{label} float nearest", floats, Colour(), side_nearest, False),
            Case(ctx, (w, h), f"{label} float linear graded (hue, sat)", floats,
                 Colour(hue=40.0, saturation=1.3), side, False),
            Case(ctx, (w, h), f"{label} float linear crossfade 0.5", floats, Colour(), side, True),
        ]
    # Round robin, frame by frame: load from other processes on a shared machine then falls on
    # every case alike instead of on whichever case ran during a busy spell.
    for i in range(args.frames + 10):
        for case in cases:
            case.frame(i, record=i >= 10)  # warm-up: the first uploads make the textures
    for case in cases:
        print(case.report())
    print(f"GL objects per compositor: {[c.comp.gl_objects_created for c in cases]} "
          "(11 fixed + one texture per panel and crossfade slot)")


if __name__ == "__main__":
    main()
