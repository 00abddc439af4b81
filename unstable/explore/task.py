"""One variant's training and measures: the Dask task (`train_variant`), plain values in and out.

The variant's run folder already holds its piece.toml (the driver writes it before submitting).
Training goes through `unstable.trainer.train`, the same code as `unstable train`, in `segments`
pieces; after each the checkpoint is probed (measures.py). What a task has done is on disk:

    <variant>/explore/measures.json   the measures of each finished segment, with its step
    <variant>/explore/probe.pt        the last segment's probe images (uint8), for the next motion
    <variant>/explore/result.json     the finished variant's result: its presence means "done"

so a task run again (a worker killed, an exploration interrupted) continues from the last
checkpoint and trains no step twice; a finished variant returns its result without training.
A variant whose training fails or explodes (the guard stops it) finishes with that status: it is
recorded, not raised. Only a dying worker makes the task fail (Dask retries it elsewhere).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import torch

from ..render.parts import torch_threads
from .measures import descriptor, probe
from .records import read_json, write_atomic

__all__ = ["train_variant", "segment_ends", "guard_trips"]


def segment_ends(steps: int, segments: int) -> list[int]:
    """The steps at which a variant is checkpointed and probed: `segments` even parts of `steps`."""
    return sorted({max(1, steps * k // segments) for k in range(1, segments + 1)})


def guard_trips(folder: Path) -> int:
    """How many steps the guard undid in a run (its `guard` lines in log.jsonl)."""
    n = 0
    try:
        with open(Path(folder) / "log.jsonl", encoding="utf-8") as f:
            for line in f:
                if '"guard"' in line:
                    n += 1
    except FileNotFoundError:
        pass
    return n


def _load(folder: Path, device: torch.device):
    from ..checkpoint import load_checkpoint, restore
    from ..system import build_system, load_piece
    piece = load_piece(folder / "piece.toml")
    system = build_system(piece, device, source=str(folder / "piece.toml"))
    ckpt = folder / "checkpoint.pt"
    restore(system, load_checkpoint(ckpt, map_location=device), str(ckpt))
    return system


def train_variant(spec: dict) -> dict:
    """Train and measure the variant in `spec["folder"]` to `spec["steps"]` (see the module doc).

    spec: folder, id, steps, segments, threads, device, cwd. Returns the result dict (also written
    to explore/result.json): id, status ("ok" | "exploded" | "failed"), steps, guard_trips, the
    last segment's measures, descriptor, seconds, error, worker.
    """
    from ..errors import UnstableError
    from ..trainer import train
    if os.getcwd() != spec["cwd"] and os.path.isdir(spec["cwd"]):
        os.chdir(spec["cwd"])  # relative paths are the driver's
    folder = Path(spec["folder"])
    state_dir = folder / "explore"
    done = read_json(state_dir / "result.json")
    if done is not None:
        return {**done, "cached": True}
    device = torch.device(spec.get("device", "cpu"))
    started = time.perf_counter()
    progress = read_json(state_dir / "measures.json", [])
    measured = {m["step"] for m in progress}
    status, error, lines = "ok", "", []
    step = progress[-1]["step"] if progress else 0
    trained = 0
    try:
        with torch_threads(int(spec.get("threads", 1))):
            for end in segment_ends(int(spec["steps"]), int(spec.get("segments", 4))):
                if end in measured:
                    continue
                resume = (folder / "checkpoint.pt").exists()
                train(folder / "piece.toml", steps=end, out=folder, device=device, resume=resume,
                      echo=lines.append, show_progress=False)
                system = _load(folder, device)
                trained += system.step_count - step
                step = system.step_count
                prev_path = state_dir / "probe.pt"
                previous = None
                if progress and prev_path.exists():
                    p = torch.load(prev_path, weights_only=True)
                    previous = p["images"] if p.get("step") == progress[-1]["step"] else None
                m, q = probe(system, previous)
                m["step"] = step
                progress.append(m)
                tmp = state_dir / ".probe.pt.tmp"
                state_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"step": step, "images": q}, tmp)
                os.replace(tmp, prev_path)
                write_atomic(state_dir / "measures.json", json.dumps(progress) + "\n")
                if step < end or not m["finite"]:
                    status = "exploded"
                    error = next((ln for ln in lines if ln.startswith("training stopped")), "non-finite images")
                    break
    except (UnstableError, RuntimeError, ValueError) as e:  # the variant's own failure: recorded
        status, error = "failed", (str(e).splitlines() or [type(e).__name__])[0][:300]
    last = progress[-1] if progress else {}
    result = {"id": spec["id"], "status": status, "steps": step, "guard_trips": guard_trips(folder),
              "exploded": status == "exploded", "error": error,
              "seconds": round(time.perf_counter() - started, 3), "trained_steps": trained,
              "worker": f"{socket.gethostname()}:{os.getpid()}",
              **{k: last.get(k) for k in ("motion", "pixel_diversity", "feature_diversity",
                                          "generator_difference", "colour_variety")},
              "descriptor": descriptor(last) if status != "failed" and "pixel_diversity" in last else None}
    write_atomic(state_dir / "result.json", json.dumps(result) + "\n")
    return result
