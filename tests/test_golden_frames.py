"""Golden frames: every shipped render job (render/*.toml) and both shows rendered with `unstable render
SHOW` still make the pictures they made when these were recorded.

Why: a restructuring of the render path (issue 24) must lose nothing. Each case renders a few short
ranges through the CLI, losslessly (FFV1), at a small size and one torch thread, decodes them and
compares a 32x16 thumbnail per frame (4x4 block means of the 128x64 frame, rounded to uint8) with
tests/golden/render_frames.npz. A range "A:" runs to the end, so its frame count pins the length
of the whole job or show as well.

Sources are the shows' shipped grown states (shows/demo.states, shows/bending.states), copied into
run folders: the equilibrium job and the shows from demo's eq.pt (and bending's), the BAD job from
demo's bad.pt, the timelapse from demo's eq.pt (step 600) followed by bending's (step 1200).

Tolerance: mean |difference| <= 1.0 and max <= 8 (uint8 levels of the thumbnail). FFV1 decodes
bit-exactly, so only float nondeterminism of another machine's torch or GL (llvmpipe vs a GPU
driver) is allowed for; a changed easing, colour or walk moves far more than that.

Regenerate ONLY for a deliberate visual change (and say so in the commit):
    UNSTABLE_GOLDEN_WRITE=1 .venv/bin/python -m pytest tests/test_golden_frames.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unstable.cli import main
from unstable.probe import read_frames

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "render_frames.npz"
WRITE = os.environ.get("UNSTABLE_GOLDEN_WRITE") == "1"
SIZE = (128, 64)
MEAN_TOL, MAX_TOL = 1.0, 8.0

# case -> (kind, shipped file, frame ranges); the "A:" ranges end at the last frame.
CASES = {
    "equilibrium-1-1": ("job", "render/equilibrium-1-1.toml", ["0:2", "1916:"]),
    "equilibrium-1-1-timelapse": ("job", "render/equilibrium-1-1-timelapse.toml", ["0:"]),
    "bad-custom-mmd": ("job", "render/bad-custom-mmd.toml", ["0:2", "130:132", "997:"]),
    # demo: scene "all", the crossfade into "equilibrium" (hue 40) at 20-22 s, the last frames
    "show-demo": ("show", "shows/demo.toml", ["0:2", "615:617", "1798:"]),
    # bending: scene "plain", the crossfade into "bent" at 15-17 s, the last frames
    "show-bending": ("show", "shows/bending.toml", ["0:2", "470:472", "2248:"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders made of the shipped grown states (no training: the same bytes on every machine)."""
    root = tmp_path_factory.mktemp("golden-runs")
    demo, bending = ROOT / "shows" / "demo.states", ROOT / "shows" / "bending.states"

    def put(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)

    put(demo / "eq.pt", root / "equilibrium-1-1" / "checkpoint.pt")
    put(demo / "bad.pt", root / "bad-custom-mmd" / "checkpoint.pt")
    put(demo / "eq.pt", root / "lapse" / "checkpoints" / "step_000600.pt")
    put(bending / "eq.pt", root / "lapse" / "checkpoint.pt")  # step 1200: the newest, listed last
    put(demo / "eq.pt", root / "show-demo" / "eq" / "checkpoint.pt")
    put(demo / "bad.pt", root / "show-demo" / "bad" / "checkpoint.pt")
    put(bending / "eq.pt", root / "show-bending" / "eq" / "checkpoint.pt")
    return root


def small_job(shipped: Path, folder: Path, runs: Path) -> Path:
    """The shipped job with only its size, codec, output and run folders changed."""
    text = shipped.read_text()
    run = runs / ("lapse" if "timelapse" in shipped.stem else shipped.stem)
    for pattern, value in ((r"^size = .*$", f"size = [{SIZE[0]}, {SIZE[1]}]"),
                           (r"^preset = .*$", 'preset = "ffv1"'),
                           (r"^output = .*$", f'output = "{(folder / "{job}-{variation}.mov").as_posix()}"'),
                           (r'^run = "runs/[^"]*"', f'run = "{run.as_posix()}"')):
        text, n = re.subn(pattern, lambda m: value, text, flags=re.M)
        assert n == 1, f"{shipped}: expected one {pattern!r} line to replace, found {n}"
    job = folder / shipped.name
    job.write_text(text)
    return job


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """[64, 128, 3] uint8 -> [16, 32, 3] uint8, 4x4 block means."""
    h, w, _ = frame.shape
    assert (w, h) == SIZE, frame.shape
    return np.rint(frame.reshape(h // 4, 4, w // 4, 4, 3).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


def render_range(case: str, tmp_path: Path, runs: Path, rng: str) -> dict[str, np.ndarray]:
    """Render one range of a case through the CLI; {output file stem: thumbnails [T, 16, 32, 3]}."""
    kind, shipped, _ = CASES[case]
    out = tmp_path / rng.replace(":", "_")
    out.mkdir()
    args = ["render", "--frames", rng, "--threads", "1", "--device", "cpu"]
    if kind == "job":
        args += [str(small_job(ROOT / shipped, out, runs)), "--out", str(out / "{job}-{variation}.mov")]
    else:
        args += [str(ROOT / shipped), "--run", str(runs / case), "--size", f"{SIZE[0]}x{SIZE[1]}",
                 "--preset", "ffv1", "--out", str(out / "{job}.mov")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("*.mov"))
    assert files, res.output
    return {f.stem: np.stack([thumbnail(x) for x in read_frames(f)]) for f in files}


@pytest.mark.parametrize("case", list(CASES))
def test_render_matches_its_golden_frames(case, tmp_path, runs):
    got = {}
    for rng in CASES[case][2]:
        for stem, thumbs in render_range(case, tmp_path, runs, rng).items():
            got[f"{case}|{stem}|{rng}"] = thumbs
    if WRITE:
        GOLDEN.parent.mkdir(exist_ok=True)
        kept = dict(np.load(GOLDEN)) if GOLDEN.exists() else {}
        kept = {k: v for k, v in kept.items() if not k.startswith(f"{case}|")}
        np.savez_compressed(GOLDEN, **kept, **got)
        return
    golden = {k: v for k, v in np.load(GOLDEN).items() if k.startswith(f"{case}|")}
    assert sorted(got) == sorted(golden), "outputs differ from the recorded ones"
    for key, want in golden.items():
        have = got[key]
        assert have.shape == want.shape, f"{key}: {have.shape[0]} frames, recorded {want.shape[0]}"
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        per_frame = diff.mean(axis=(1, 2, 3))
        assert per_frame.max() <= MEAN_TOL and diff.max() <= MAX_TOL, (
            f"{key}: mean |diff| per frame {np.round(per_frame, 2).tolist()}, max {diff.max():.0f} "
            f"(tolerance {MEAN_TOL} / {MAX_TOL:.0f})")
