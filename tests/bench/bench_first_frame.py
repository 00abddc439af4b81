"""Benchmark: a fresh clone's first frame. Clones this repository's HEAD into a temporary folder
(an empty base-model cache, no run folder), then times `unstable live shows/demo.toml` from the
start of the process to its first frame, drawn and closed (an upper bound: one frame of a headless
show, final checkpoints included). The Python packages are the ones already installed.

    .venv/bin/python tests/bench/bench_first_frame.py [--show shows/demo.toml] [--frames 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", default="shows/demo.toml")
    ap.add_argument("--frames", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-frame-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        assert not (clone / ".cache").exists() and not (clone / "runs").exists()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        env.pop("DISPLAY", None)
        seconds = args.frames / 30.0
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "unstable.cli", "live", args.show, "--headless", "--seconds",
                               f"{seconds:.4f}", "--osc-port", "0", "--web-port", "0"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"the show failed:\n{proc.stdout}\n{proc.stderr}")
        trained = [ln for ln in proc.stderr.splitlines() if "base VAE" in ln or "digit classifier" in ln]
        for line in proc.stdout.splitlines():
            if "starts from" in line or "frames in" in line:
                print(line)
        print(f"fresh clone: {args.frames} frame(s) of {args.show} drawn and closed {wall:.1f} s after the process "
              f"started ({'trained base models!' if trained else 'no base model trained'}); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
