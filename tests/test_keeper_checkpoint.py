"""The live keeper's state survives the show's checkpoints: its last probe images and its count go
with the piece's live state, so after a restart its first look measures motion since the last look
before the stop (not "no motion yet"), and the levers it moved continue from the store's saved
values. An old checkpoint without it loads as before. A headless show (EGL) of one tiny piece."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tqdm import tqdm

from helpers import frames_until, tiny_eq_piece
from test_live_keeper import SHOW  # the same one-piece show, kept
from unstable.checkpoint import load_checkpoint, save_checkpoint
from unstable.live import Engine
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# stasis_floor 1: each look with a motion moves a lever; every 3 steps.
KEEPER = "[keeper]\nevery = 3\nstasis_floor = 1\nraise_by = 2\nartist_hold = 0\n"


def write(tmp_path: Path, keeper: str = KEEPER) -> Path:
    (tmp_path / "eq.toml").write_text(tiny_eq_piece("steps = 1", name="keeper-ckpt", seed=3, resolution=16) + keeper)
    (tmp_path / "show.toml").write_text(SHOW.format(entry="", more=""))
    return tmp_path / "show.toml"


def engine(path: Path, tmp_path: Path, fresh: bool) -> Engine:
    return Engine(load_show(path), headless=True, osc_port=0, web_port=0, web=False, run_dir=tmp_path / "run",
                  echo=lambda line: None, progress=lambda *a, total=None, **k: tqdm(total=total, disable=True),
                  train=True, fresh=fresh)


def test_a_restarted_show_keeps_looking_from_its_last_probe(tmp_path):
    path = write(tmp_path)
    with engine(path, tmp_path, fresh=True) as e:
        p = e.pieces["eq"]
        assert frames_until(e, lambda: p.keeper.changes >= 1)
    lr = e.params.get("eq", "learning_rate")
    saved = load_checkpoint(tmp_path / "run" / "eq" / "checkpoint.pt")["live"]["keeper"]
    assert saved["probe"].dtype == torch.uint8 and saved["probe"].shape[0] == 2  # [G, P, 3, R, R]
    assert lr > 1.0
    with engine(path, tmp_path, fresh=False) as e:
        p = e.pieces["eq"]
        step = p.system.step_count
        assert e.params.get("eq", "learning_rate") == lr  # the lever goes on from its saved value
        assert frames_until(e, lambda: p.keeper.changes >= 1)
        # The first look after the restart (the steps counted before it included) compared with the
        # last one before it: a motion, so a move.
        first = p.keeper.keeper.adjustments[0]
        assert first.startswith(f"keeper eq: step {step + 3 - saved['steps']}: stasis near"), (first, step, saved)
        assert f"learning_rate {lr:.4g} -> " in first or "batch_fraction 1 -> 0.5" in first, first


def test_a_checkpoint_without_the_keeper_state_loads_as_before(tmp_path):
    path = write(tmp_path)
    with engine(path, tmp_path, fresh=True) as e:
        assert frames_until(e, lambda: e.pieces["eq"].keeper.looks >= 1)
    ckpt = tmp_path / "run" / "eq" / "checkpoint.pt"
    payload = load_checkpoint(ckpt)
    del payload["live"]["keeper"]  # as a show wrote it before the keeper's state was kept
    save_checkpoint(ckpt, payload)
    with engine(path, tmp_path, fresh=False) as e:
        p = e.pieces["eq"]
        step = p.system.step_count
        assert step == payload["step"]
        assert frames_until(e, lambda: p.keeper.changes >= 1)
        # Nothing to compare the first look with: the first move is at the second.
        assert p.keeper.keeper.adjustments[0].startswith(f"keeper eq: step {step + 6}: stasis near")
