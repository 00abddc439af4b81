"""Encoder throughput: frames per second for h264 and h264_live at 512x256 and 1920x1080.

    .venv/bin/python tests/bench/bench_encode.py [--frames 60] [--presets h264,h264_live]

Frames are made before the clock starts (a moving colour field with a little grain, closer to
generated art than pure noise, which is pathological for x264), so the number is the encoder's:
frames / (first write -> file finalised). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from unstable.encode import VideoWriter
from unstable.probe import probe


def frames(n_distinct: int, w: int, h: int) -> np.ndarray:
    """A few distinct moving frames [N, H, W, 3] uint8, cycled during the benchmark."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_distinct):
        r = 127 + 100 * np.sin((x + 7 * i) / (w / 11))
        g = 127 + 100 * np.cos((y - 5 * i) / (h / 7))
        b = 127 + 100 * np.sin((x + y + 9 * i) / (w / 5))
        img = np.stack([r, g, b], -1) + rng.normal(0, 3, (h, w, 3))
        out.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="frames per run")
    ap.add_argument("--presets", default="h264,h264_live")
    ap.add_argument("--sizes", default="512x256,1920x1080")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            src = frames(16, w, h)
            for preset in args.presets.split(","):
                path = Path(tmp) / f"{preset}_{w}x{h}.mp4"
                t0 = time.perf_counter()
                with VideoWriter(path, w, h, 30, preset) as writer:
                    for i in range(args.frames):
                        writer.write(src[i % len(src)])
                wall = time.perf_counter() - t0
                st = writer.stats
                assert probe(path).frames == args.frames
                cpu = f"{st.encoder_cpu_seconds:.2f}" if st.encoder_cpu_seconds is not None else "n/a"
                print(f"{preset:10s} {w}x{h}: {args.frames / wall:7.1f} fps  (wall {wall:.2f}s, encode thread busy "
                      f"{st.encode_seconds:.2f}s, ffmpeg cpu {cpu}s, {path.stat().st_size / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
