"""Make the files a first run starts from: base models, eval's judges, the shows' grown states.

So `make run` shows grown pictures within a minute and `unstable eval` trains nothing:

- unstable/shipped/: BAD's base models (the VAE and the digit classifier a BAD piece trains on
  first use, as the piece's own `prepare()` makes them) and `unstable eval`'s two judges (the
  judge classifier and the density judge VAE), for the BAD pieces in pieces/ that use the custom
  extractor (today every BAD piece shares one set: the same data, VAE and classifier settings);
- shows/<show>.states/: each show's pieces after a short training (`unstable train`), without
  optimiser moments (a show trains on from them with fresh Adam): the demo (eq 600 steps, bad 100),
  the bending show (eq 1200 steps: grown to 64 px long enough that its bends bend forms) and
  demo-128 (eq 900 steps at 128 px; its BAD piece starts from the demo's state).

Each folder gets a MANIFEST.json with every file's SHA-256, size, and how it was made (piece, steps,
seed, torch version); files are only used when their hash matches. Base models already shipped with
a matching hash are kept (their manifest entries carried over) unless --retrain; the rest are
trained. Deterministic for a given machine kind and torch thread count (float reductions depend
on both).

    .venv/bin/python scripts/make_shipped.py                         # what is missing + both shows' states
    .venv/bin/python scripts/make_shipped.py --shows bending          # the bending show's states only
    .venv/bin/python scripts/make_shipped.py --retrain               # everything (~25 min on 2 cores)
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
from unstable.divergence.cache import base_key  # noqa: E402
from unstable.divergence.evaluate import load_density_judge, load_judge  # noqa: E402
from unstable.shipped import FOLDER as SHIPPED, manifest, sha256, shipped_file  # noqa: E402
from unstable.show import load_show  # noqa: E402
from unstable.system import build_system, load_piece  # noqa: E402
from unstable.trainer import progress_bar, train  # noqa: E402

OPTIMISERS = ("opt_g", "opt_c", "optimizer")
# Training steps of each show's pieces, by kind; --eq-steps / --bad-steps override them.
# demo-128's 900 equilibrium steps: its pair grows 8 -> 128 px in 450 steps and then trains on at
# 128 px as long again, as the demo's 600 do at 64 px.
SHOW_STEPS = {"demo": {"equilibrium": 600, "divergence": 100},
              "bending": {"equilibrium": 1200, "divergence": 100},
              "demo-128": {"equilibrium": 900, "divergence": 100}}


def write_manifest(folder: Path, entries: dict) -> None:
    """MANIFEST.json of `folder`: each file's SHA-256 and size (measured now) and how it was made."""
    files = {name: {**how, "sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size}
             for name, how in sorted(entries.items())}
    (folder / "MANIFEST.json").write_text(json.dumps({"made_by": "scripts/make_shipped.py", "torch": torch.__version__,
                                                     "files": files}, indent=2) + "\n")


def base_pieces() -> list[Path]:
    """The BAD pieces whose base models and judges ship: those with the custom extractor (the
    torchvision ones would need their weights downloaded just to build the piece)."""
    out = []
    for path in sorted((ROOT / "pieces").glob("*.toml")):
        piece = load_piece(path)
        if piece.kind == "divergence" and piece.features.extractor == "custom":
            out.append(path)
    return out


def base_files(path: Path, cache: Path) -> dict[str, str]:
    """{file name: what it is} of a BAD piece's base models and judges, made into `cache` unless
    they are there or shipped already (then nothing trains)."""
    piece = dataclasses.replace(load_piece(path), cache=str(cache))
    torch.manual_seed(piece.seed)
    system = build_system(piece, torch.device("cpu"))
    system.prepare(progress_bar)
    _, judge_file = load_judge(piece, system.digits, torch.device("cpu"), progress_bar)
    _, density_file = load_density_judge(piece, system.digits, torch.device("cpu"), progress_bar)
    # The base models' names as DivergenceSystem.prepare() keys them.
    vae = f"vae-{base_key('vae', data=piece.data, vae=piece.vae)}.pt"
    classifier = f"classifier-{base_key('classifier', data=piece.data, classifier=piece.classifier)}.pt"
    return {vae: "base VAE (the decoder BAD diverges from)",
            classifier: "digit classifier (what BAD's losses measure with)",
            judge_file.name: "judge classifier of `unstable eval` (a second opinion BAD never saw)",
            density_file.name: "density judge of `unstable eval` (a second VAE: how typical a sample is)"}


def base_models(reuse: Path | None, retrain: bool, tmp: Path) -> dict:
    """Base models and judges of the BAD pieces into unstable/shipped/: reused from `reuse`, kept when
    already shipped (unless `retrain`), trained otherwise. Returns their manifest entries."""
    old = manifest(SHIPPED)
    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    reused = set()
    if reuse is not None:
        for f in reuse.glob("*.pt"):
            shutil.copyfile(f, cache / f.name)
            reused.add(f.name)
    if retrain:  # cached_model() falls back to shipped files: take them away so it trains
        for name in old:
            (SHIPPED / name).unlink(missing_ok=True)
        old = {}
    made = {}
    for path in base_pieces():
        for name, what in base_files(path, cache).items():
            if name in made:  # pieces sharing base settings share the files
                made[name]["pieces"].append(path.name)
                continue
            if (cache / name).is_file():
                shutil.copyfile(cache / name, SHIPPED / name)
                how = {"seed": load_piece(path).seed, "reused": name in reused}
            elif shipped_file(name) is not None:
                how = {k: v for k, v in old[name].items() if k not in ("sha256", "bytes", "what", "pieces")}
            else:
                raise SystemExit(f"make_shipped: {name} was neither made nor shipped")
            made[name] = {"what": what, "pieces": [path.name], **how}
    for stale in SHIPPED.glob("*.pt"):
        if stale.name not in made:
            print(f"{stale}: no piece uses it any more; removed")
            stale.unlink()
    return made


def piece_states(show_path: Path, steps: dict[str, int], tmp: Path) -> tuple[Path, dict]:
    """Train each piece of a show a few steps and keep its weights (no optimiser) in <show>.states/.

    A piece whose `start` lies in another show's states (the same piece, shared) is that show's to make."""
    show = load_show(show_path, check_starts=False)
    states = show_path.with_suffix(".states")
    states.mkdir(exist_ok=True)
    made = {}
    for name, path in show.piece_paths.items():
        start = show.settings.pieces[name].start
        if start and (show_path.parent / start).resolve().parent != states.resolve():
            print(f"{show_path.name}: {name} starts from {start}, another show's state: not made here")
            continue
        n = steps[show.pieces[name].kind]
        run = train(path, steps=n, out=tmp / f"{show_path.stem}-{name}", show_progress=True, echo=print)
        payload = load_checkpoint(run / "checkpoint.pt")
        for key in OPTIMISERS:
            payload["system"].pop(key, None)
        payload.pop("live", None)
        save_checkpoint(states / f"{name}.pt", payload)
        made[f"{name}.pt"] = {"what": f"{path.name} after {n} steps of `unstable train`", "seed": show.pieces[name].seed,
                              "steps": n}
    return states, made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shows", nargs="*", default=list(SHOW_STEPS), choices=list(SHOW_STEPS),
                    help="shows whose starting states to make (none: only the base models and judges)")
    ap.add_argument("--eq-steps", type=int, default=None, help="training steps of equilibrium pieces (default per show)")
    ap.add_argument("--bad-steps", type=int, default=None, help="training steps of BAD pieces (default per show)")
    ap.add_argument("--reuse-cache", type=Path, default=None,
                    help="copy base models and judges already trained by the same code from this cache folder")
    ap.add_argument("--retrain", action="store_true", help="train the base models and judges even when shipped")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folders = [SHIPPED]
    with tempfile.TemporaryDirectory(prefix="make-shipped-") as tmp:
        write_manifest(SHIPPED, base_models(args.reuse_cache, args.retrain, Path(tmp)))
        # The manifest is written before the shows' pieces train: their prepare() uses the shipped files.
        for name in args.shows:
            steps = dict(SHOW_STEPS[name])
            steps["equilibrium"] = args.eq_steps or steps["equilibrium"]
            steps["divergence"] = args.bad_steps or steps["divergence"]
            states, made = piece_states(ROOT / "shows" / f"{name}.toml", steps, Path(tmp))
            write_manifest(states, made)
            folders.append(states)
    for folder in folders:
        total = sum(f.stat().st_size for f in folder.glob("*.pt"))
        print(f"{folder}: {len(list(folder.glob('*.pt')))} files, {total / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
