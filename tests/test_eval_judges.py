"""`unstable eval`'s judges ship with the base models (hash-checked), so evaluating a fresh run on a
fresh clone trains nothing; any one-off training of a base model is announced before it starts."""

import dataclasses
import json
import logging

import pytest
import torch
import torch.nn as nn
from tqdm import tqdm

from unstable.divergence.cache import base_key, cached_model
from unstable.divergence.evaluate import evaluate_runs, judge_settings
from unstable.shipped import FOLDER, shipped_file
from unstable.system import load_piece
from unstable.trainer import train

ROOT = FOLDER.parents[1]
BAD_PIECES = sorted((ROOT / "pieces").glob("bad-*.toml"))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def no_training(desc, total=None, **kw):
    """A progress bar factory that fails the test when a base model or judge would train."""
    if desc.startswith(("base VAE", "digit classifier", "judge classifier", "density judge")):
        raise AssertionError(f"trained {desc!r} instead of using the shipped file")
    return tqdm(total=total, disable=True)


@pytest.mark.parametrize("path", BAD_PIECES, ids=lambda p: p.stem)
def test_every_bad_piece_finds_both_judges_shipped_and_hash_checked(path):
    piece = load_piece(path)
    judge = f"judge-{base_key('judge', data=piece.data, classifier=judge_settings(piece))}.pt"
    vae = dataclasses.replace(piece.vae, seed=piece.vae.seed + 1000)
    density = f"density-judge-{base_key('density-judge', data=piece.data, vae=vae)}.pt"
    assert shipped_file(judge) == FOLDER / judge
    assert shipped_file(density) == FOLDER / density


@pytest.mark.slow  # ~30 s on a busy 2-core machine: a real BAD run and its eval
def test_eval_of_a_fresh_run_loads_the_shipped_judges_and_trains_nothing(tmp_cwd, caplog):
    # A fresh clone: no .cache/ at all; the run's base models come from the shipped files too.
    run = train(ROOT / "pieces" / "bad-custom-mmd.toml", steps=2, out=tmp_cwd / "runs" / "fresh",
                show_progress=False, echo=lambda s: None)
    with caplog.at_level(logging.WARNING, logger="unstable.cache"):
        out = evaluate_runs([run], samples=40, temperatures=(0.5, 1.0), progress=no_training)
    summary = json.loads((out / "summary.json").read_text())
    judges = summary["judges"]
    assert set(judges) == {"judge (fresh)", "density judge (fresh)"}
    for label, path in judges.items():
        assert str(FOLDER) in path, f"{label} came from {path}, not the shipped folder"
    assert not list(tmp_cwd.glob(".cache/unstable/*judge*")), "a judge was trained into the cache"
    assert not [r for r in caplog.records if "training" in r.getMessage()]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # header; base and diverged at two temperatures
    assert (out / "grid.png").stat().st_size > 0


def _linear(calls):
    def make():
        calls.append("train")
        torch.manual_seed(0)
        return nn.Linear(3, 2), {"loss": 0.5}
    return make


def test_a_one_off_training_is_announced_before_it_starts(tmp_path):
    said, calls = [], []

    def record(line):
        said.append(line)
        assert not calls, "announced after the training started"

    model = nn.Linear(3, 2)
    _, path, trained = cached_model(tmp_path, "density-judge", "abc123", model, _linear(calls), torch.device("cpu"),
                                    about="the density judge of `unstable eval`", steps=1200, echo=record)
    assert trained and calls == ["train"] and path == tmp_path / "density-judge-abc123.pt"
    assert len(said) == 1
    line = said[0]
    assert "the density judge of `unstable eval`" in line  # what and why
    assert "roughly 5 minutes for 1200 steps" in line  # how long
    assert f"cached at {path}" in line  # where
    # The second time it is read from the cache: nothing trains, nothing is said.
    cached_model(tmp_path, "density-judge", "abc123", nn.Linear(3, 2), _linear(calls), torch.device("cpu"),
                 echo=record)
    assert calls == ["train"] and len(said) == 1


def test_a_base_model_training_without_a_caller_text_is_announced_on_the_terminal_log(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="unstable.cache"):
        cached_model(tmp_path, "classifier", "k1", nn.Linear(3, 2), _linear([]), torch.device("cpu"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("training the digit classifier (what BAD's losses measure with) once")
    assert "roughly 2 minutes for 600 steps" in line and str(tmp_path / "classifier-k1.pt") in line
