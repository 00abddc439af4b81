"""Make the files a first run starts from, so `make run` shows grown pictures within a minute:

- unstable/shipped/: BAD's base models (the VAE and the digit classifier the demo's BAD piece
  trains on first use), as the piece's own `prepare()` makes them;
- shows/demo.states/: the demo show's pieces after a short training (`unstable train`), without
  optimiser moments (a show trains on from them with fresh Adam).

Each folder gets a MANIFEST.json with every file's SHA-256, size, and how it was made (piece, steps,
seed, torch version); files are only used when their hash matches. Deterministic for a given
machine kind and torch thread count (float reductions depend on both).

    .venv/bin/python scripts/make_shipped.py                      # trains everything (~10 min on 2 cores)
    .venv/bin/python scripts/make_shipped.py --reuse-cache .cache/unstable   # base models already trained
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unstable.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from unstable.shipped import FOLDER as SHIPPED, sha256  # noqa: E402
from unstable.show import load_show  # noqa: E402
from unstable.system import build_system  # noqa: E402
from unstable.trainer import progress_bar, train  # noqa: E402

STATES = ROOT / "shows" / "demo.states"
OPTIMISERS = ("opt_g", "opt_c", "optimizer")


def write_manifest(folder: Path, entries: dict) -> None:
    files = {name: {"sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size, **how}
             for name, how in sorted(entries.items())}
    (folder / "MANIFEST.json").write_text(json.dumps({"made_by": "scripts/make_shipped.py", "torch": torch.__version__,
                                                     "files": files}, indent=2) + "\n")


def base_models(show, reuse: Path | None, tmp: Path) -> dict:
    """Train (or reuse) the base models of the show's BAD pieces into unstable/shipped/."""
    made = {}
    for name, piece in show.pieces.items():
        if piece.kind != "divergence":
            continue
        cache = tmp / "cache"
        cache.mkdir(exist_ok=True)
        if reuse is not None:
            for f in reuse.glob("*.pt"):
                shutil.copyfile(f, cache / f.name)
        torch.manual_seed(piece.seed)
        system = build_system(dataclasses.replace(piece, cache=str(cache)), torch.device("cpu"))
        system.prepare(progress_bar)
        for f in cache.glob("*.pt"):
            if f.name.startswith(("vae-", "classifier-")):
                shutil.copyfile(f, SHIPPED / f.name)
                made[f.name] = {"what": f"base model of {show.piece_paths[name].name}", "seed": piece.seed,
                                "reused": reuse is not None}
    return made


def piece_states(show, steps: dict[str, int], tmp: Path) -> dict:
    """Train each piece of the show a few steps and keep its weights (no optimiser) in demo.states/."""
    STATES.mkdir(exist_ok=True)
    made = {}
    for name, path in show.piece_paths.items():
        n = steps[show.pieces[name].kind]
        run = train(path, steps=n, out=tmp / name, show_progress=True, echo=print)
        payload = load_checkpoint(run / "checkpoint.pt")
        for key in OPTIMISERS:
            payload["system"].pop(key, None)
        payload.pop("live", None)
        save_checkpoint(STATES / f"{name}.pt", payload)
        made[f"{name}.pt"] = {"what": f"{path.name} after {n} steps of `unstable train`", "seed": show.pieces[name].seed,
                              "steps": n}
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", default=str(ROOT / "shows" / "demo.toml"))
    ap.add_argument("--eq-steps", type=int, default=600, help="training steps of equilibrium pieces")
    ap.add_argument("--bad-steps", type=int, default=100, help="training steps of BAD pieces")
    ap.add_argument("--reuse-cache", type=Path, default=None,
                    help="copy base models already trained by the same code from this cache folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    show = load_show(args.show, check_starts=False)
    with tempfile.TemporaryDirectory(prefix="make-shipped-") as tmp:
        base = base_models(show, args.reuse_cache, Path(tmp))
        write_manifest(SHIPPED, base)  # before the pieces train: their prepare() uses the shipped files
        states = piece_states(show, {"equilibrium": args.eq_steps, "divergence": args.bad_steps}, Path(tmp))
        write_manifest(STATES, states)
    for folder in (SHIPPED, STATES):
        total = sum(f.stat().st_size for f in folder.glob("*.pt"))
        print(f"{folder}: {len(list(folder.glob('*.pt')))} files, {total / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
