"""UNSTABLE_COMPILE=1: the equilibrium training step through torch.compile (unstable/compiled.py).

The tolerance: the scalars of a compiled step and of an eager one, from the same piece and seed,
agree within 1e-4 (fused loops round differently; the difference seen is ~1e-6 a step).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from click.testing import CliRunner
from torch._dynamo.utils import counters

from unstable import compiled
from unstable.schema import defaults
from unstable.system import build_system, load_piece

from helpers import tiny_eq_piece, tiny_piece_file

# One torch thread, as the training thread and a show's training process run: the compiled code
# is then the process's own (inductor's cache key includes the thread count), so
# test_train_process's compile loads what this one compiled.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4
# Per-layer noise that counts from the first step (the shipped pieces start it at 0), so that noise
# drawn in another order shows. 8 px -> 16 px: step 0 at 8 px, step 1 fades 16 px in, 2... grown.
NOISY = "mapping_layers = 1\nnoise_init = 0.5"
GROWING = tiny_eq_piece("steps = 5", resolution=16).replace("start_resolution = 16", "start_resolution = 8") \
    .replace("mapping_layers = 1", NOISY) + "[growth]\nstable_steps = 1\nfade_steps = 1\n"
GROWN = tiny_eq_piece("steps = 5").replace("mapping_layers = 1", NOISY)


def _pair(tmp_path, text: str):
    """Two systems of one piece and seed (the same weights, latents and noise)."""
    path = tmp_path / "piece.toml"
    path.write_text(text)
    piece = load_piece(path)
    return build_system(piece, "cpu"), build_system(piece, "cpu")


@pytest.fixture(autouse=True)
def _fresh_dynamo(inductor_cache, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache))
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _failing_from(n: int, calls: list):
    """A torch.compile backend that runs graphs as traced until its `n`th graph, which it refuses."""
    def backend(gm, inputs):
        calls.append(gm)
        if len(calls) >= n:
            raise RuntimeError("forced compiler failure")
        return gm.forward
    return backend


# "graphs": dynamo's graphs run as traced (fast: what the replayed noise and the switching do);
# "inductor": compiled to C++ (slow: a cold compile), what UNSTABLE_COMPILE=1 runs.
@pytest.mark.parametrize("backend", ["graphs", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_steps_agree_with_eager_and_compile_only_the_grown_stage(tmp_path, backend):
    eager, system = _pair(tmp_path, GROWING)
    params = defaults(eager.param_specs())
    lines = []
    compiled.compile_training(system, lines.append, backend=_failing_from(10**9, []) if backend == "graphs" else backend)
    for step in range(5):
        a, b = eager.step(params), system.step(params)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=TOLERANCE), (step, key)
        graphs = counters["stats"]["unique_graphs"]
        if step < 2:  # the growth stages run eager: nothing compiled yet
            assert graphs == 0, step
    # The grown stage: the synthesis (one graph for both generators), the critic with and without
    # gradients for its weights, the objective; compiled once, never again.
    assert graphs == 4
    assert not counters["recompiles"]
    assert any("compiling the training step" in line for line in lines)
    assert any(line.startswith("compiled the training step in") for line in lines)


def test_a_failed_first_compile_is_undone_and_the_step_runs_eagerly(tmp_path):
    eager, system = _pair(tmp_path, GROWN)
    params = defaults(eager.param_specs())
    lines, calls = [], []
    # The synthesis graph compiles (the step has drawn noise and moved w_avg by then), the critic's fails.
    compiled.compile_training(system, lines.append, backend=_failing_from(2, calls))
    for _ in range(3):
        assert system.step(params) == eager.step(params)
    assert len(calls) == 2  # given up after the failure: no more tries
    said = [line for line in lines if "training eagerly" in line]
    assert len(said) == 1 and "forced compiler failure" in said[0] and said[0].startswith("UNSTABLE_COMPILE:")
    assert eager.step_count == system.step_count == 3


def test_a_later_failed_recompile_turns_compiling_off_and_raises_once(tmp_path):
    eager, system = _pair(tmp_path, GROWN)
    params = defaults(eager.param_specs())
    lines, calls = [], []
    compiled.compile_training(system, lines.append, backend=_failing_from(5, calls))
    system.step(params)
    assert len(calls) == 4  # synthesis, critic (with and without gradients for its weights), objective
    smaller = {**params, "batch_fraction": 0.5}  # another batch: a recompile, which fails
    with pytest.raises(Exception, match="forced compiler failure"):
        system.step(smaller)
    assert system.step(smaller)["batch"] == 2.0  # eager from now on
    assert sum("training eagerly" in line for line in lines) == 1
    assert len(calls) == 5


def test_bad_unstable_compile_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch):
    from unstable.cli import main

    (tmp_path / "piece.toml").write_text(GROWN)
    monkeypatch.setenv("UNSTABLE_COMPILE", "yes")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "piece.toml"), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "UNSTABLE_COMPILE='yes': expected 0" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_with_unstable_compile_falls_back_and_finishes(tmp_path, monkeypatch):
    from unstable.trainer import train

    calls = []
    monkeypatch.setattr(compiled, "compile_training",
                        functools.partial(compiled.compile_training, backend=_failing_from(1, calls)))
    monkeypatch.setenv("UNSTABLE_COMPILE", "1")
    (tmp_path / "piece.toml").write_text(tiny_eq_piece("steps = 3\ngrid_every = 100000\ncheckpoint_every = 100000"))
    lines = []
    run = train(tmp_path / "piece.toml", out=tmp_path / "run", show_progress=False, echo=lines.append)
    assert calls, "the trainer did not compile"
    assert sum("training eagerly" in line for line in lines) == 1
    assert len((run / "log.jsonl").read_text().splitlines()) >= 3


def test_other_systems_train_eagerly_with_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text(tiny_piece_file(tmp_path / "cache", "steps = 1"))
    system = build_system(load_piece(tmp_path / "bad.toml"), "cpu")
    lines = []
    assert compiled.compile_training(system, lines.append) is None
    assert lines == ["UNSTABLE_COMPILE: only the equilibrium pieces compile; tiny trains eagerly"]
