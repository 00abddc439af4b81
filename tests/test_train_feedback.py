"""What `unstable train` tells the artist: a time left for the real stop (--minutes or the steps,
whichever comes first), a closing line with the step reached and the command that goes on, grids
scaled up with crisp pixels, and progress.gif (bounded, thinned evenly, grows across a resume).
Real training of a tiny equilibrium piece; the --minutes stop runs beside two busy processes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from helpers import tiny_eq_piece

from unstable.cli import main
from unstable.train_progress import ProgressGif, end_line, eta_text, scale_factor, time_left, upscale_nearest
from unstable.trainer import train

PIECE = tiny_eq_piece('steps = {steps}\ngrid_every = 2\ngrid_samples = 2\ncheckpoint_every = 2\nkeep_every = 0', name='tiny-eq')

QUIET = dict(show_progress=False, echo=lambda s: None)


def piece(tmp_path: Path, steps: int = 6) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(PIECE.format(steps=steps))
    return path


def gif_frames(path: Path) -> tuple[int, list[int]]:
    with Image.open(path) as im:
        return im.n_frames, [int(s) for s in im.info["comment"].split(b"=")[1].split(b",")]


def blocks_are_uniform(img: np.ndarray, k: int) -> bool:
    """Every k x k block of [H, W, 3] holds one colour."""
    h, w = img.shape[0] // k, img.shape[1] // k
    b = img.reshape(h, k, w, k, 3)
    return bool((b == b[:, :1, :, :1]).all())


def test_the_time_left_is_for_the_stop_that_comes_first():
    # 10 steps of 1500 done in 60 s of a 20-minute run: the steps need 8940 s more, the deadline is 1140 s away.
    assert time_left(10, 1500, 0, 60.0, 20) == (1140.0, "--minutes")
    assert eta_text(10, 1500, 0, 60.0, 20) == "left 19:00 (--minutes 20)"
    # No deadline: the run's average rate since it (re)started, not the whole step count's.
    assert eta_text(110, 1500, 100, 10.0, None) == "left 23:10 (steps)"
    assert eta_text(1490, 1500, 0, 1490.0, 60) == "left 00:10 (steps)"  # the steps end first
    assert eta_text(5, 1500, 5, 3.0, None) == "left ?"                 # nothing to go on yet
    assert eta_text(5, 1500, 5, 3.0, 1) == "left 00:57 (--minutes 1)"  # ... but the deadline
    assert eta_text(100, 20000, 0, 100.0, None) == "left 5:31:40 (steps)"


def test_the_closing_line_says_where_it_stopped_and_how_to_go_on():
    assert end_line(456, 1500, "pieces/a.toml", steps=1500, out=None, seed=None) == \
        "stopped at 456/1500 — continue with: unstable train pieces/a.toml --resume --steps 1500"
    assert end_line(456, 2000, "a.toml", steps=None, out="runs/x", seed=3) == \
        "stopped at 456/2000 — continue with: unstable train a.toml --resume --out runs/x --seed 3"
    assert end_line(2000, 2000, "a.toml", steps=None, out=None, seed=None) == \
        "done: 2000/2000 steps — train further with: unstable train a.toml --resume --steps 4000"


def test_grids_are_scaled_up_with_each_pixel_an_exact_block(tmp_path):
    out = train(piece(tmp_path, 4), out=tmp_path / "run", **QUIET)
    small = None
    for path in [out / "grid.png", *sorted((out / "grids").glob("step_*.png"))]:
        img = np.asarray(Image.open(path).convert("RGB"))  # [H, W, 3]
        assert min(img.shape[:2]) >= 512, (path, img.shape)
        k = img.shape[0] // 22  # the grid of 2 rows x 2 generators of 8 px with 2 px gaps: 22 x 22
        assert img.shape[:2] == (22 * k, 22 * k) and k == scale_factor(22, 22) == 24
        assert blocks_are_uniform(img, k), path
        small = img[::k, ::k]
    assert len(np.unique(small.reshape(-1, 3), axis=0)) > 8  # samples, not a blank canvas
    # A tall grid (32 rows) is held to 4096 px on its long side; a big one is left as it is.
    assert tuple(upscale_nearest(torch.zeros(3, 1000, 40)).shape) == (3, 4000, 160)
    assert tuple(upscale_nearest(torch.zeros(3, 600, 800)).shape) == (3, 600, 800)


def test_progress_gif_grows_across_a_resume_and_stays_bounded(tmp_path):
    path = piece(tmp_path, 4)
    out = train(path, out=tmp_path / "run", **QUIET)
    assert gif_frames(out / "progress.gif") == (3, [0, 2, 4])
    train(path, out=out, steps=8, resume=True, **QUIET)
    assert gif_frames(out / "progress.gif") == (5, [0, 2, 4, 6, 8])
    assert not list(out.glob(".*.tmp"))  # written atomically

    # Bounded: at most max_frames, thinned evenly in steps, the first and the newest kept.
    sheet = ProgressGif(tmp_path / "p.gif", max_frames=6)
    counts = []
    for step in range(0, 200, 10):
        sheet.add(step, torch.rand(3, 22, 22))
        sheet.write()
        counts.append(gif_frames(tmp_path / "p.gif")[0])
    assert counts[:6] == [1, 2, 3, 4, 5, 6] and set(counts[6:]) == {6}
    n, steps = gif_frames(tmp_path / "p.gif")
    assert steps[0] == 0 and steps[-1] == 190 and n == len(steps) == 6
    gaps = np.diff(steps)
    assert gaps.max() <= 2 * gaps.min() + 10, steps  # evenly spread, not the newest six
    # While training it is rewritten at most every min_interval seconds; the run's end forces it.
    slow = ProgressGif(tmp_path / "slow.gif", min_interval=3600)
    for step in (0, 10):
        slow.add(step, torch.rand(3, 22, 22))
        slow.write(force=False)
    assert gif_frames(tmp_path / "slow.gif") == (1, [0])
    slow.write()
    assert gif_frames(tmp_path / "slow.gif") == (2, [0, 10])
    # A resumed run reads it back and drops what lies past its checkpoint.
    assert ProgressGif(tmp_path / "p.gif", max_frames=6).load(upto_step=150).steps == [s for s in steps if s <= 150]




def test_a_minutes_stop_shows_its_time_left_and_ends_with_the_resume_command(tmp_path, cpu_hogs, one_torch_thread):
    path = piece(tmp_path, 6)
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(path), "--steps", "100000", "--minutes", "0.05", "--device", "cpu",
                                  "--out", str(run)])
    assert r.exit_code == 0, r.output
    text = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert "(--minutes 0.05)" in text  # the bar's time left counts down to the deadline
    m = re.search(r"stopped at (\d+)/100000 — continue with: (unstable train .*)", text)
    assert m, text
    step = int(m[1])
    assert m[2] == f"unstable train {path} --resume --steps 100000 --out {run}"
    # The printed command goes on from there (one step more, not the 100000).
    args = m[2].split()[1:] + ["--device", "cpu"]
    args[args.index("100000")] = str(step + 1)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"at step {step}" in r.output and f"done: {step + 1}/{step + 1} steps" in r.output
