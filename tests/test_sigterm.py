"""SIGTERM (timeout, systemd, Slurm, torchrun) ends a long command the way Ctrl-C does: `train`
writes its final checkpoint, `render` keeps its finished parts for a resume, `live` finishes its
recording. Real subprocesses, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_eq_piece, tiny_job, train_tiny_run

from unstable.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

PIECE = tiny_eq_piece('steps = 100000\ngrid_every = 100000\ngrid_samples = 2\ncheckpoint_every = 100000', name='sigterm')

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _wait(cond, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, "the command ended before the signal"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _steps_logged(log: Path) -> int:
    try:
        return sum(1 for line in log.read_text().splitlines() if '"seconds"' in line)
    except FileNotFoundError:
        return 0


def test_sigterm_during_train_writes_the_final_checkpoint(tmp_path):
    piece = tmp_path / "piece.toml"
    piece.write_text(PIECE)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "unstable.cli", "train", str(piece), "--device", "cpu",
                             "--out", str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        # The step-0 grid is drawn just before the loop starts.
        _wait(lambda: (out / "grid.png").exists(), proc)
        _wait(lambda: _steps_logged(out / "log.jsonl") >= 2, proc)  # a few steps
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    m = re.search(r"interrupted at step (\d+): writing a final checkpoint", output)
    assert m, output
    step = int(m.group(1))
    assert step > 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == step
    assert "Traceback" not in output
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == step


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("sigterm-run"))


def test_sigterm_during_render_keeps_finished_parts_and_a_resume_goes_on(tmp_path, tiny_run):
    job = tmp_path / "job.toml"
    job.write_text(tiny_job(tmp_path / "out", tiny_run, frames=4000))
    parts = tmp_path / "out" / "job-main.mov.parts"
    proc = subprocess.Popen([sys.executable, "-m", "unstable.cli", "render", str(job), "--device", "cpu",
                             "--threads", "1"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: len(list(parts.glob("part_*"))) >= 2, proc)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and proc.returncode != -signal.SIGTERM, (proc.returncode, output)
    assert "Traceback" not in output, output
    finished = sorted(p.name for p in parts.glob("part_*"))
    assert len(finished) >= 2
    # Ctrl-C's cleanup ran: the open writer was closed (its temporary is dropped by the next run), and
    # the lock was released, so the same render can take the folder over at once and keeps the parts.
    from unstable.render.parts import lock_parts
    lock_parts(parts / ".lock", tmp_path / "out" / "job-main.mov").close()
    manifest = json.loads((parts / "manifest.json").read_text())
    assert manifest



# `live` under SIGTERM (its recording finished, frames = automation = the closing line) is
# tests/test_engine.py's and tests/test_persistence.py's `live_until_sigterm` tests.
