"""Make Series 2: the explorer run on Series 1 at 128 px, and what it found as a show with grown states.

Stages, each kept when already done (run the same command again and it goes on where it stopped):

a. seed: Series 1 at 128 px (pieces/equilibrium-1-*.toml with generator.resolution = 128, their
   widths kept: 16..64 channels, 16 at 128 px, about 0.5 s a step on one core) into WORK/seed/;
   `unstable explore` (--auto, seeded) on the first of them into WORK/explore/.
b. references: every Series-1 piece at 128 px scored exactly as a variant (same steps, segments,
   probes: unstable/explore/compare.py) in WORK/series1/<piece>/; then the in-band variants
   farthest in the descriptor space of novelty from every Series-1 piece and from each other
   (greedy farthest-point), within the size budget. All distances: WORK/distances.csv.
c. pieces/series2-<n>.toml: each chosen variant (in the band and not collapsed: pixel diversity at least a
   tenth of the least diverse Series-1 piece's) exported (`unstable explore DIR --export`), named
   and headed with what it explores; trained to a grown state (WORK/grown/<n>/, then its weights
   as float16, without optimiser moments, in shows/series2.states/s<n>.pt with MANIFEST.json). A state whose
   manifest entry matches its hash, its piece file's hash and its steps is kept.
d. shows/series2.toml: the pieces, each generator side by side, as scenes.
e. docs/series2-<n>.png: a grid of each piece's grown generators.

    nice -n 19 .venv/bin/python scripts/make_series2.py            # all of it (hours on 2 cores)
    .venv/bin/python scripts/make_series2.py --tiny --dest /tmp/s2 --work /tmp/s2/work --workers 0

Deterministic for a given machine kind and torch thread count (float reductions depend on both).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unstable.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from unstable.config import to_dict  # noqa: E402
from unstable.errors import UnstableError  # noqa: E402
from unstable.explore.breeding import variant_table  # noqa: E402
from unstable.explore.compare import at_resolution, distances, farthest, score_reference  # noqa: E402
from unstable.explore.explorer import Explorer, load_settings, new_settings  # noqa: E402
from unstable.explore.export import export_variant  # noqa: E402
from unstable.explore.genome import changes  # noqa: E402
from unstable.explore.records import read_lineage, variant_dir  # noqa: E402
from unstable.explore.selection import Band  # noqa: E402
from unstable.explore.tomlout import dumps  # noqa: E402
from unstable.shipped import manifest, sha256  # noqa: E402
from unstable.system import load_piece  # noqa: E402

OPTIMISERS = ("opt_g", "opt_c", "optimizer")
MB = 2**20
# Shrinks every setting that costs time, for the script's own test (seconds, not hours).
TINY_TABLE = {"generator": {"start_resolution": 4, "z_dim": 16, "w_dim": 16, "mapping_layers": 1,
                            "min_channels": 8, "max_channels": 16},
              "critic": {"min_channels": 8, "max_channels": 16, "embedding_dim": 16},
              "growth": {"stable_steps": 2, "fade_steps": 2},
              "generator.optim": {"batch": 4}, "critic.optim": {"batch": 4}, "train": {"grid_samples": 2}}


def say(line: str) -> None:
    print(f"series2: {line}", flush=True)


def write_if_changed(path: Path, text: str) -> bool:
    """Write `path` unless it already holds `text` (so that hashes and mtimes of done work stay)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def seed_pieces(work: Path, sources: list[Path], resolution: int, tiny: bool) -> dict[str, Path]:
    """Stage a: the Series-1 pieces at `resolution` px as files in WORK/seed/ ({stem: path})."""
    out = {}
    for src in sources:
        table = to_dict(load_piece(src))
        if tiny:
            for block, values in TINY_TABLE.items():
                node = table
                for part in block.split("."):
                    node = node[part]
                node.update(values)
        table = at_resolution(table, resolution, str(src))
        path = work / "seed" / src.name
        write_if_changed(path, dumps(table, f"{src.name} at {resolution} px: Series 1 as the explorer's seed"))
        out[src.stem] = path
    return out


def explore(work: Path, base: Path, args) -> tuple[Path, dict, int]:
    """Stage a: `unstable explore` on `base` (resumes WORK/explore/); returns its folder, settings
    and how many variants this run trained."""
    root = work / "explore"
    settings = new_settings(base, population=args.population, steps=args.steps, segments=args.segments,
                            seed=args.seed, threads=args.threads, stasis_floor=args.stasis_floor,
                            max_guard=args.max_guard)
    explorer = Explorer(root, settings, workers=args.workers, auto=True, echo=say)
    started = time.monotonic()
    explorer.run(args.generations)
    say(f"explore: {len(explorer.submitted)} variants trained in {time.monotonic() - started:.0f} s this run")
    return root, load_settings(root), len(explorer.submitted)


def score_series1(work: Path, seeds: dict[str, Path], settings: dict) -> tuple[dict[str, list[float]], int]:
    """Stage b: each Series-1 piece scored as a variant; returns their descriptors and how many trained."""
    refs, trained = {}, 0
    for stem, path in seeds.items():
        folder = work / "series1" / stem
        fresh = not (folder / "explore" / "result.json").exists()
        started = time.monotonic()
        res = score_reference(to_dict(load_piece(path)), folder, settings)
        trained += fresh
        if fresh:
            say(f"series 1: {stem} scored in {time.monotonic() - started:.0f} s ({res['status']})")
        if res.get("descriptor"):
            refs[stem] = res["descriptor"]
    return refs, trained


def shipping_payload(checkpoint: Path) -> dict:
    """A run's checkpoint as it ships: without optimiser moments or live state, the networks' weights
    stored as float16 (half the bytes: four 3-generator pieces at 128 px then fit the 20 MB; a
    system loads them into its float32 networks and trains on in float32; the images of a loaded
    state move by about 0.01 of 255 levels on average, 3 at most)."""
    payload = load_checkpoint(checkpoint)
    for key in OPTIMISERS:
        payload["system"].pop(key, None)
    payload.pop("live", None)
    system = payload["system"]

    def half(sd):
        return type(sd)((k, v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items())

    for key, value in system.items():
        if key in ("generators", "decoders") and isinstance(value, list):
            system[key] = [half(sd) for sd in value]
        elif key in ("critic", "decoder") and isinstance(value, dict):
            system[key] = half(value)
    return payload


def state_bytes(folder: Path) -> int:
    """Bytes of a run's checkpoint as it would ship (`shipping_payload`)."""
    payload = shipping_payload(folder / "checkpoint.pt")
    tmp = folder / ".size-probe.pt"
    save_checkpoint(tmp, payload)
    n = tmp.stat().st_size
    tmp.unlink()
    return n


def collapse_floor(series1: dict[str, dict], fraction: float) -> float:
    """The pixel diversity under which a variant counts as collapsed: `fraction` of the least
    diverse Series-1 piece's (their results, {stem: result.json})."""
    values = [float(r["pixel_diversity"]) for r in series1.values() if r.get("pixel_diversity") is not None]
    return fraction * min(values) if values else 0.0


def wall_candidates(results: dict[str, dict], band: Band, floor: float) -> dict[str, list[float]]:
    """{id: descriptor} of the variants that may hang on the wall: inside the band between stasis
    and explosion, and not collapsed (pixel diversity at least `floor`: a variant whose every image
    is nearly one flat colour still moves, so the band alone keeps it; it is novel, not a piece)."""
    return {vid: r["descriptor"] for vid, r in results.items()
            if band.contains(r) and r.get("descriptor") and float(r.get("pixel_diversity") or 0.0) >= floor}


def pick_for_the_wall(unlike: dict, cands: dict, refs: dict, count: int, sizes: dict[str, int],
                      budget: float) -> list[tuple[str, float]]:
    """Up to `count` of `cands` ({id: descriptor}) within `budget` bytes (`sizes`), farthest-point:
    first among `unlike` (those unlike every Series-1 piece), then, if too few, among the rest, each
    far from Series 1 and from those chosen before it. [(id, its distance)] in the order chosen."""
    picked = farthest(unlike, refs, count, fits=lambda v, ch: sizes[v] + sum(sizes[c] for c in ch) <= budget)
    if len(picked) < count:
        first = [v for v, _ in picked]
        rest = {v: p for v, p in cands.items() if v not in first}
        picked += farthest(rest, {**refs, **{v: cands[v] for v in first}}, count - len(picked),
                           fits=lambda v, ch: sizes[v] + sum(sizes[c] for c in first + ch) <= budget)
    return picked


def choose(root: Path, settings: dict, refs: dict, args) -> list[str]:
    """Stage b: the in-band, uncollapsed variants farthest from Series 1 and each other; WORK/distances.csv."""
    band = Band(settings["stasis_floor"], settings["max_guard"], settings["k"])
    results = {}
    for r in read_lineage(root):
        path = variant_dir(root, r) / "explore" / "result.json"
        if path.exists():  # a variant whose worker was lost has none: the next run trains it again
            results[r.id] = json.loads(path.read_text())
    series1 = {p.parent.parent.name: json.loads(p.read_text())
               for p in (root.parent / "series1").glob("*/explore/result.json") if p.parent.parent.name in refs}
    floor = collapse_floor(series1, args.collapse_fraction)
    cands = wall_candidates(results, band, floor)
    sizes = {vid: state_bytes(variant_dir(root, vid)) for vid in cands}
    budget = args.budget_mb * MB - args.count * 0.5 * MB  # the stills and piece files: about 0.5 MB each
    ref_self = {s: distances(p, {o: q for o, q in refs.items() if o != s}, settings["k"]) for s, p in refs.items()}
    # Unlike Series 1: farther from its nearest Series-1 piece than any Series-1 piece is from its
    # nearest sibling. Those are chosen first (farthest-point among them); the rest only fill up.
    yardstick = max(d["d_nearest"] for d in ref_self.values()) if len(refs) > 1 else 0.0
    unlike = {v: p for v, p in cands.items() if distances(p, refs, settings["k"])["d_nearest"] > yardstick}
    picked = pick_for_the_wall(unlike, cands, refs, args.count, sizes, budget)
    rank = {vid: (n + 1, d) for n, (vid, d) in enumerate(picked)}
    rows = []
    for s, d in ref_self.items():
        rows.append({"id": s, "kind": "series1", "nearest_series1": d["nearest"], "d_nearest_series1": d["d_nearest"],
                     "d_knn_series1": d["d_knn"]})
    for vid, res in results.items():
        d = distances(res["descriptor"], refs, settings["k"]) if res.get("descriptor") else {}
        rows.append({"id": vid, "kind": "variant", "status": res["status"], "in_band": band.contains(res),
                     "unlike_series1": vid in unlike,
                     "collapsed": float(res.get("pixel_diversity") or 0.0) < floor,
                     "nearest_series1": d.get("nearest", ""), "d_nearest_series1": d.get("d_nearest", ""),
                     "d_knn_series1": d.get("d_knn", ""), "state_mb": sizes[vid] / MB if vid in sizes else "",
                     "chosen": rank[vid][0] if vid in rank else "", "d_chosen": rank[vid][1] if vid in rank else ""})
    fields = ["id", "kind", "status", "in_band", "collapsed", "unlike_series1", "nearest_series1", "d_nearest_series1", "d_knn_series1",
              "state_mb", "chosen", "d_chosen"]
    with open(root.parent / "distances.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    say(f"distances ({root.parent / 'distances.csv'}): descriptor space of novelty, k = {settings['k']}")
    for r in rows:
        if r["kind"] == "series1" or r["id"] in cands:
            mark = f"  chosen #{r['chosen']} (d to nearest chosen-or-Series-1 {r['d_chosen']:.3f})" if r.get("chosen") else ""
            say(f"  {r['id']:>16} {r['kind']:8} nearest Series 1 {r['nearest_series1']} at {r['d_nearest_series1']:.3f}, "
                f"k-nearest {r['d_knn_series1']:.3f}{mark}")
    if len(picked) < args.count:
        raise UnstableError(f"{root}: only {len(picked)} variants in the band (and not collapsed: pixel diversity "
                            f"at least {floor:.3f}) fit the budget of {args.budget_mb} MB, "
                            f"{args.count} wanted; explore further (--generations {args.generations + 1})")
    say(f"chosen: {', '.join(picked_id for picked_id, _ in picked)}; the Series-1 pieces lie at most "
        f"{yardstick:.3f} from their nearest sibling")
    return [vid for vid, _ in picked]


def export(root: Path, settings: dict, vid: str, n: int, dest: Path, refs: dict) -> Path:
    """Stage c: variant `vid` as pieces/series2-<n>.toml, named and headed with what it explores."""
    path = dest / "pieces" / f"series2-{n}.toml"
    tmp = root / ".export" / path.name
    export_variant(root, vid, tmp, settings, overwrite=True)
    # Paths in the export's comments as the repository sees them, not as this machine does.
    text = tmp.read_text(encoding="utf-8").replace(f"{ROOT}/", "")
    table = tomllib.loads(text)
    table["name"] = f"(un)stable equilibrium 2:{n}"
    base = settings["base"]
    changed = changes(base, variant_table(root, vid, base))
    d = distances(json.loads((variant_dir(root, vid) / "explore" / "result.json").read_text())["descriptor"],
                  refs, settings["k"])
    head = [f"(un)stable equilibrium 2:{n} — Series 2, found by `unstable explore` on Series 1 at "
            f"{base['generator']['resolution']} px (scripts/make_series2.py).", "",
            f"Explores what the explorer changed in {Path(settings['piece']).name} (the Series-1 seed):",
            *[f"  {c}" for c in changed if not c.startswith("train.")], "",
            f"Unlike Series 1: nearest Series-1 piece {d['nearest']} at {d['d_nearest']:.3f} in the descriptor space",
            f"of novelty (unstable/explore/measures.py), {d['d_knn']:.3f} on average to the {settings['k']} nearest.",
            "", *[ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.splitlines() if ln.startswith("#")]]
    body = {k: v for k, v in table.items()}
    write_if_changed(path, dumps(body, "\n".join(head)))
    load_piece(path)  # a written piece loads, or one line naming it
    return path


def table_hash(path: Path) -> str:
    """SHA-256 of a piece file's settings (not its comments): what decides its grown state."""
    text = json.dumps(tomllib.loads(path.read_text(encoding="utf-8")), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def grow(path: Path, name: str, states: Path, work: Path, steps: int, old: dict) -> tuple[dict, bool]:
    """Stage c: the piece at `path` trained `steps` steps into states/<name>.pt (kept when its
    manifest entry matches the state's and the piece's hashes and the steps). Returns its entry."""
    from unstable.trainer import train
    target = states / f"{name}.pt"
    piece_hash = table_hash(path)
    entry = old.get(target.name, {})
    if (target.is_file() and entry.get("sha256") == sha256(target) and entry.get("piece_settings_sha256") == piece_hash
            and entry.get("steps") == steps):
        return {k: v for k, v in entry.items() if k not in ("sha256", "bytes")}, False
    run = work / "grown" / name
    if run.exists() and not (run / "piece.toml").exists() or (run / "piece.toml").exists() and \
            table_hash(run / "piece.toml") != piece_hash:
        shutil.rmtree(run)  # a run of an earlier choice: not this piece
    started = time.monotonic()
    train(path, steps=steps, out=run, resume=(run / "checkpoint.pt").exists(), show_progress=False, echo=say)
    payload = shipping_payload(run / "checkpoint.pt")
    if payload.get("step") != steps:  # stopped early (SIGTERM or Ctrl-C end training with a checkpoint)
        raise UnstableError(f"{run}: training stopped at step {payload.get('step')} of {steps}; "
                            "run the script again to continue it")
    save_checkpoint(target, payload)
    say(f"grown: {path.name} to step {steps} in {time.monotonic() - started:.0f} s -> {target}")
    return {"what": f"{path.name} after {steps} steps of `unstable train`", "seed": load_piece(path).seed,
            "steps": steps, "piece_settings_sha256": piece_hash}, True


def write_manifest(folder: Path, entries: dict) -> None:
    """MANIFEST.json: each state's SHA-256 and size (measured now) and how it was made."""
    files = {n: {**how, "sha256": sha256(folder / n), "bytes": (folder / n).stat().st_size}
             for n, how in sorted(entries.items())}
    text = json.dumps({"made_by": "scripts/make_series2.py", "torch": torch.__version__, "files": files}, indent=2)
    write_if_changed(folder / "MANIFEST.json", text + "\n")


def still(piece_path: Path, state: Path, png: Path, samples: int) -> None:
    """Stage e: a grid of `samples` latents per generator (rows) from the grown state."""
    from unstable.frame.sources import load_run_into
    from unstable.images import panel_grid, write_png
    from unstable.schema import defaults
    from unstable.system import build_system
    from unstable.trainer import fixed_latents
    system = build_system(load_piece(piece_path), torch.device("cpu"))
    load_run_into(system, state, torch.device("cpu"))
    latents = fixed_latents(system.panels(), samples, system.piece.seed, torch.device("cpu"))
    with torch.no_grad():
        images = system.sample(latents, defaults(system.param_specs()))  # {panel: [S, 3, R, R]}
    write_png(png, panel_grid(images))


def show_text(names: list[str], pieces: dict[str, Path], generators: dict[str, int], seconds: int) -> str:
    """shows/series2.toml: every piece's first generator side by side, then each piece as a scene."""
    lines = ["# Series 2: what `unstable explore` found on Series 1 at 128 px (scripts/make_series2.py), the pieces",
             "# the Series-1 pieces resemble least (docs: README, Series 2). Each starts from its grown state",
             "# and trains on while it plays; the scenes show each piece's generators side by side.", "#",
             "#   unstable live shows/series2.toml", "#   unstable live shows/series2.toml --headless --seconds 60",
             "#", "# OSC (from the parameter schema): /unstable/s1/hue 0..1, /unstable/scene 2, /unstable/still, ...",
             'name = "series2"', f"size = [{256 * len(names)}, 256]", "fps = 30", ""]
    for n in names:
        lines += [f"[pieces.{n}]", f'piece = "../pieces/{pieces[n].name}"',
                  f'start = "series2.states/{n}.pt"   # grown (scripts/make_series2.py); --fresh starts from the seed',
                  f"share = {1 / len(names):.3g}", ""]
    first = ", ".join(f'"{n}/g0"' for n in names)
    lines += ["[layout]", 'mode = "side_by_side"', f"panels = [{first}]", "gap = 0.02", 'fit = "contain"',
              'filter = "linear"', "", "[walk]", "keyframes = 8", "period = 3.0", 'interpolation = "cubic"', "",
              "[osc]", 'host = "127.0.0.1"', "port = 9000", "", "[web]", 'host = "127.0.0.1"', "port = 9080", "",
              "[training]", "threads = 1", "render_threads = 1", "sync_every = 0.25", "checkpoint_every = 120", "",
              "[[scenes]]", 'name = "all"', f"duration = {seconds}", "crossfade = 2", ""]
    for n in names:
        panels = ", ".join(f'"{n}/g{g}"' for g in range(generators[n]))
        lines += ["[[scenes]]", f'name = "{n}"', f"duration = {seconds}", "crossfade = 2", "[scenes.layout]",
                  'mode = "side_by_side"', f"panels = [{panels}]", ""]
    return "\n".join(lines)


def status(args) -> str:
    """Where a run stands and a rough time to go, from the work folder alone (trains nothing)."""
    root = args.work / "explore"
    done = [json.loads(p.read_text()) for p in sorted(root.glob("gen-*/*/explore/result.json"))]
    refs = list((args.work / "series1").glob("*/explore/result.json"))
    planned = args.population * args.generations
    per = sum(r["seconds"] for r in done) / len(done) if done else None
    old = manifest(args.dest / "shows" / "series2.states")
    grown = sum(1 for e in old.values() if e.get("steps") == args.grow_steps)
    lines = [f"explore: {len(done)} of {planned} variants scored"
             + (f", {per / 60:.1f} min each on average" if per else ""),
             f"series 1: {len(refs)} of {len(args.series1)} pieces scored", f"grown: {grown} of {args.count} states"]
    if per:
        left = (planned - len(done) + len(args.series1) - len(refs)) * per
        left += (args.count - grown) * per * args.grow_steps / args.steps
        lines.append(f"to go: about {left / 3600:.1f} h at that pace")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "series2", help="work folder (not shipped)")
    ap.add_argument("--dest", type=Path, default=ROOT, help="where pieces/, shows/ and docs/ are written")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600, help="training steps per variant (and Series-1 piece)")
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026, help="the exploration's breeding seed")
    ap.add_argument("--workers", type=int, default=1, help="Dask workers (0: in this process)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    ap.add_argument("--stasis-floor", type=float, default=0.002)
    ap.add_argument("--max-guard", type=float, default=0.1)
    ap.add_argument("--count", type=int, default=4, help="pieces in Series 2")
    ap.add_argument("--grow-steps", type=int, default=1200, help="training steps of each grown state")
    ap.add_argument("--budget-mb", type=float, default=20.0, help="states + piece files + stills, at most")
    ap.add_argument("--collapse-fraction", type=float, default=0.1, help="a variant whose pixel diversity is under "
                    "this fraction of the least diverse Series-1 piece's is collapsed: never chosen")
    ap.add_argument("--series1", nargs="*", type=Path, default=sorted((ROOT / "pieces").glob("equilibrium-1-*.toml")))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and steps (the script's own test)")
    ap.add_argument("--status", action="store_true", help="say where a run stands and how long it has to go; no work")
    args = ap.parse_args(argv)
    if args.tiny:
        args.resolution, args.population, args.generations = 8, 6, 1
        args.steps, args.segments, args.grow_steps, args.stasis_floor = 6, 2, 8, 0.0
    return args


def main(argv=None) -> dict:
    """Make Series 2 (see the module doc); returns what this run trained: variants, references, grown."""
    args = parse(argv)
    if args.status:
        print(status(args))
        return {}
    torch.set_num_threads(args.threads)
    work, dest = args.work.resolve(), args.dest.resolve()
    seeds = seed_pieces(work, args.series1, args.resolution, args.tiny)
    root, settings, variants = explore(work, next(iter(seeds.values())), args)
    refs, references = score_series1(work, seeds, settings)
    chosen = choose(root, settings, refs, args)
    states = dest / "shows" / "series2.states"
    states.mkdir(parents=True, exist_ok=True)
    old = manifest(states)
    entries, pieces, generators, grown = {}, {}, {}, 0
    for n, vid in enumerate(chosen, start=1):
        name = f"s{n}"
        pieces[name] = export(root, settings, vid, n, dest, refs)
        entries[f"{name}.pt"], trained = grow(pieces[name], name, states, work, args.grow_steps, old)
        grown += trained
        generators[name] = load_piece(pieces[name]).ensemble.generators
        still(pieces[name], states / f"{name}.pt", dest / "docs" / f"series2-{n}.png", 4)
    for stale in states.glob("*.pt"):
        if stale.name not in entries:
            stale.unlink()
    write_manifest(states, entries)
    write_if_changed(dest / "shows" / "series2.toml", show_text(list(pieces), pieces, generators, 20) + "\n")
    files = [*states.iterdir(), *pieces.values(), dest / "shows" / "series2.toml",
             *(dest / "docs" / f"series2-{n}.png" for n in range(1, len(chosen) + 1))]
    total = sum(f.stat().st_size for f in files)
    say(f"shipped set: {len(files)} files, {total / MB:.2f} MB (budget {args.budget_mb} MB)")
    if total > args.budget_mb * MB:
        raise UnstableError(f"{dest}: Series 2 is {total / MB:.2f} MB, over the budget of {args.budget_mb} MB")
    return {"variants": variants, "references": references, "grown": grown, "chosen": chosen, "bytes": total}


if __name__ == "__main__":
    try:
        main()
    except UnstableError as e:
        print(f"make_series2: {e}", file=sys.stderr)
        sys.exit(1)
