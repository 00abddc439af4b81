"""`unstable train` honours a piece's `[keeper]`: the keeper looks every `every` steps, its moves
change the live values the steps use, each is echoed and written to log.jsonl, and its state (last
probe, count, levers) goes with the checkpoint, so an interrupted run resumes as if it had never
stopped. A piece without `[keeper]` trains as before. Real `train` runs of a tiny piece (8 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from helpers import tiny_eq_piece
from unstable.checkpoint import load_checkpoint
from unstable.cli import main
from unstable.system import load_piece
from unstable.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = "steps = 12\ngrid_every = 100000\ngrid_samples = 2\ncheckpoint_every = 2\nkeep_every = 0"
# stasis_floor 1: every look with a motion counts as stasis, so each look after the first moves a lever.
KEEPER = "[keeper]\nevery = 2\nstasis_floor = 1\nraise_by = 2\nlower_by = 0.5\n"


def piece(tmp_path: Path, keeper: str = KEEPER, name: str = "kept.toml") -> Path:
    path = tmp_path / name
    path.write_text(tiny_eq_piece(TRAIN, name="kept", seed=4) + keeper)
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["train", *args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result.output


def keeper_lines(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [x for x in lines if "keeper" in x]


def weights(run: Path) -> dict[str, torch.Tensor]:
    system = load_checkpoint(run / "checkpoint.pt")["system"]
    return {f"g{i}.{k}": v for i, g in enumerate(system["generators"]) for k, v in g.items()}


def test_train_keeps_a_piece_with_a_keeper_and_logs_every_move(tmp_path):
    out = cli(str(piece(tmp_path)), "--steps", "10", "--out", str(tmp_path / "run"))
    assert "keeper kept: on, a look every 2 steps (learning_rate 1, batch_fraction 1)" in out
    moves = keeper_lines(tmp_path / "run")
    # Looks at 2, 4, 6, 8, 10; the first has nothing to compare with: four moves, the rate first.
    assert [m["step"] for m in moves] == [4, 6, 8, 10]
    assert [m["learning_rate"] for m in moves] == [2.0, 4.0, 8.0, 10.0]
    assert all(m["batch_fraction"] == 1.0 for m in moves)
    for m in moves:
        assert m["keeper"].startswith(f"keeper kept: step {m['step']}: stasis near (motion")
        assert m["keeper"] in out  # echoed as well
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["keeper"]
    assert saved["params"] == {"learning_rate": 10.0, "batch_fraction": 1.0} and saved["probe"].dtype == torch.uint8
    # The moves reached the steps: the last ones ran at 8 x the piece's rate (10 x comes next).
    base = load_piece(tmp_path / "kept.toml").generator.optim.lr
    groups = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["system"]["opt_g"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(8 * base, rel=1e-6)


def test_an_interrupted_kept_run_resumes_as_if_it_had_not_stopped(tmp_path):
    path = piece(tmp_path)
    cli(str(path), "--steps", "12", "--out", str(tmp_path / "whole"))
    cli(str(path), "--steps", "6", "--out", str(tmp_path / "cut"))
    out = cli(str(path), "--steps", "12", "--out", str(tmp_path / "cut"), "--resume")
    # The levers go on from where they were (moves at steps 4 and 6: 1 -> 2 -> 4).
    assert "keeper kept: on, a look every 2 steps (learning_rate 4, batch_fraction 1)" in out
    whole, cut = keeper_lines(tmp_path / "whole"), keeper_lines(tmp_path / "cut")
    # The first look after the resume (step 8) measured a motion: it moved, as the whole run did.
    assert 8 in [m["step"] for m in cut]
    assert [(m["step"], m["learning_rate"], m["batch_fraction"]) for m in cut] == \
        [(m["step"], m["learning_rate"], m["batch_fraction"]) for m in whole]
    # Down to the weights: the keeper's state made the resume exact.
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_the_keeper_resumes_with_a_fresh_keeper(tmp_path):
    cli(str(piece(tmp_path, keeper="")), "--steps", "4", "--out", str(tmp_path / "run"))
    assert "keeper" not in load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    out = cli(str(piece(tmp_path)), "--steps", "8", "--out", str(tmp_path / "run"), "--resume")
    assert "resumed" in out and "learning_rate 1, batch_fraction 1" in out
    # Nothing to compare the first look (step 6) with: the first move is at step 8.
    assert [m["step"] for m in keeper_lines(tmp_path / "run")] == [8]


def test_a_piece_without_a_keeper_trains_exactly_as_before(tmp_path):
    path = piece(tmp_path, keeper="")
    cli(str(path), "--steps", "6", "--out", str(tmp_path / "cli"))
    # The trainer as it was called before it knew of keepers: no keeper maker at all.
    train(path, steps=6, out=tmp_path / "api", show_progress=False, echo=lambda s: None)
    a, b = weights(tmp_path / "cli"), weights(tmp_path / "api")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "keeper" not in load_checkpoint(tmp_path / "cli" / "checkpoint.pt") and keeper_lines(tmp_path / "cli") == []
    strip = lambda run: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                         for x in (run / "log.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "cli") == strip(tmp_path / "api")
