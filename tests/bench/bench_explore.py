"""Benchmark: the explorer's throughput. Variants trained per hour in one process, on a Dask
LocalCluster of 1 and of 2 workers, at a tiny size; the time to score a variant (probing a
checkpoint: the measures of one segment) and to score the archive (novelty).

    .venv/bin/python tests/bench/bench_explore.py --population 4 --steps 20 --resolution 16
    .venv/bin/python tests/bench/bench_explore.py --sheet docs/explore-sheet.png --population 4 --generations 4 \
        --steps 60 --resolution 32

Each run explores one generation of --population variants of a tiny equilibrium piece (16 px by
default) for --steps steps in --segments segments, one torch thread per variant. Per variant the
cost is T = s x t_step + segments x (t_train_call + t_probe): the training steps, and per segment
the trainer's start and end (grids, progress loop, checkpoint) and a probe. Model for N machines
like this one, W workers each: variants per hour ~ N x W x 3600 / T, plus one cluster start per
exploration (printed). Timings on a shared 2-core machine are noisy; the load is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def piece(folder: Path, resolution: int) -> Path:
    from helpers import tiny_eq_piece
    text = tiny_eq_piece("steps = 1", name="bench-explore").replace("resolution = 8\nstart_resolution = 8",
                                                                    f"resolution = {resolution}\nstart_resolution = 8")
    path = folder / "bench.toml"
    path.write_text(text + "[growth]\nstable_steps = 5\nfade_steps = 5\n")
    return path


def explore_once(tmp: Path, name: str, settings: dict, workers: int) -> tuple[float, float, float]:
    """(cluster start seconds, exploration seconds, variants per hour)."""
    from unstable.explore.explorer import Explorer, open_client
    t0 = time.perf_counter()
    client = open_client(workers, None) if workers else None
    if client is not None:
        client.wait_for_workers(workers)
        client.run(lambda: __import__("unstable.explore.task"))  # workers import torch before the clock
    started = time.perf_counter() - t0
    t1 = time.perf_counter()
    ex = Explorer(tmp / name, settings, workers=0 if client is None else workers, client=client, echo=lambda s: None)
    ex.run(1)
    seconds = time.perf_counter() - t1
    if client is not None:
        cluster = client.cluster
        client.close()
        cluster.close()
    return started, seconds, settings["population"] * 3600 / seconds


def score_time(tmp: Path, settings: dict, repeats: int = 5) -> tuple[float, float]:
    """(seconds to probe one checkpoint, seconds to score an archive of 100 variants)."""
    import random

    import torch

    from unstable.explore.measures import probe
    from unstable.explore.records import Row
    from unstable.explore.selection import Band, score_table
    from unstable.explore.task import _load
    folder = next((tmp / "one").glob("gen-0/v0-00"))
    system = _load(folder, torch.device("cpu"))
    previous = None
    t = time.perf_counter()
    for _ in range(repeats):
        _, previous = probe(system, previous)
    per_probe = (time.perf_counter() - t) / repeats
    rng = random.Random(0)
    results = {f"x{i}": {"status": "ok", "steps": 10, "descriptor": [rng.random() for _ in range(8)], "motion": 0.01}
               for i in range(100)}
    lineage = [Row(v, 0, ("base",), "breed", 0, ()) for v in results]
    t = time.perf_counter()
    score_table(lineage, results, Band())
    return per_probe, time.perf_counter() - t


def contact_sheet(out: Path, population: int, generations: int, steps: int, resolution: int) -> None:
    """An --auto exploration of the tiny piece and its variants' latest grids as one PNG: a row per
    generation, a cell per variant with its id, band and novelty."""
    from unstable.explore.explorer import Explorer, new_settings
    tmp = Path(tempfile.mkdtemp(prefix="bench-explore-sheet-"))
    try:
        settings = new_settings(piece(tmp, resolution), population=population, steps=steps, segments=4, seed=2,
                                threads=1)
        Explorer(tmp / "x", settings, workers=0, echo=print).run(generations)
        draw_sheet(tmp / "x", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def draw_sheet(root: Path, out: Path, cell: int = 240) -> None:
    """The variants' latest grids of the exploration in `root` as one image (PNG or JPEG by `out`'s
    suffix): a row per generation, a cell per variant with its id, band and novelty."""
    from PIL import Image, ImageDraw

    from unstable.explore.records import read_lineage, read_scores, variant_dir
    rows = read_lineage(root)
    population = 1 + max(int(r.id.split("-")[1]) for r in rows)
    generations = 1 + max(r.generation for r in rows)
    pad = 22
    sheet = Image.new("RGB", (population * cell, generations * (cell + pad)), (17, 17, 17))
    draw = ImageDraw.Draw(sheet)
    scores = read_scores(root)
    for r in rows:
        i = int(r.id.split("-")[1])
        grid_png = variant_dir(root, r) / "grid.png"
        if not grid_png.exists():  # a variant not trained yet, or failed before its first grid
            continue
        grid = Image.open(grid_png).convert("RGB")
        grid.thumbnail((cell - 8, cell - 8), Image.LANCZOS)
        x, y = i * cell, r.generation * (cell + pad)
        sheet.paste(grid, (x + 4, y + pad))
        s = scores.get(r.id, {})
        band = "band" if s.get("in_band") == "1" else s.get("status", "")
        star = " *" if s.get("selected") == "1" else ""
        draw.text((x + 4, y + 5), f"{r.id}{star} {band} nov {float(s.get('novelty') or 0):.2f}", fill=(220, 220, 220))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, **({"quality": 88} if out.suffix.lower() in (".jpg", ".jpeg") else {}))
    print(f"contact sheet: {out} ({generations} generations x {population} variants)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--sheet", type=Path, default=None, help="Instead: write a contact sheet PNG of an --auto run "
                    "(--population variants x --generations) here.")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--sheet-of", type=Path, default=None, help="with --sheet: draw this existing exploration "
                    "folder instead of running one (e.g. runs/series2/explore)")
    args = ap.parse_args()
    if args.sheet is not None and args.sheet_of is not None:
        draw_sheet(args.sheet_of, args.sheet)
        return
    import torch
    torch.set_num_threads(1)
    if args.sheet is not None:
        contact_sheet(args.sheet, args.population, args.generations, args.steps, args.resolution)
        return
    from unstable.explore.explorer import new_settings
    tmp = Path(tempfile.mkdtemp(prefix="bench-explore-"))
    try:
        settings = new_settings(piece(tmp, args.resolution), population=args.population, steps=args.steps,
                                segments=args.segments, seed=1, threads=1)
        print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.population} variants of "
              f"{args.resolution} px, {args.steps} steps in {args.segments} segments, 1 torch thread each")
        for name, workers in (("one", 0), ("w1", 1), ("w2", 2)):
            start, seconds, per_hour = explore_once(tmp, name, settings, workers)
            label = "one process" if workers == 0 else f"{workers} worker{'s' if workers > 1 else ''}"
            print(f"{label:>12}: {seconds:6.1f} s for {args.population} variants = {per_hour:6.0f} variants/hour "
                  f"({seconds / args.population:.2f} s each; cluster start {start:.1f} s)")
        per_probe, archive = score_time(tmp, settings)
        print(f"score a variant: {per_probe * 1000:.0f} ms per probe ({args.segments} per variant: "
              f"{per_probe * args.segments:.2f} s); novelty of an archive of 100: {archive * 1000:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
