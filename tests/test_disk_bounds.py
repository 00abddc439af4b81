"""Disk that stays bounded over weeks (issue 13, item 4): kept checkpoints and grids thinned to
log-spaced steps within a budget, rotated logs and telemetry that append across restarts, stills
and OSC-started recordings within their budgets."""

import json
import os

import pytest
from click.testing import CliRunner
from test_engine import make_engine
from test_show import SHOW, TINY_EQ

from unstable.cli import main
from unstable.disk import log_spaced, thin
from unstable.live.telemetry import FrameStats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- 4. disk bounded ------------------------------------------------------------------------------

def test_log_spacing_keeps_about_per_octave_files_per_doubling(tmp_path):
    assert [n for n in range(40) if log_spaced(n, 4)] == [*range(8), 8, 10, 12, 14, 16, 20, 24, 28, 32]
    kept = [n for n in range(777_600 // 100) if log_spaced(n, 4)]  # a day at 9 steps/s, every 100 steps
    assert len(kept) < 60
    files = []
    for n in range(300):
        f = tmp_path / f"step_{n:06d}.pt"
        f.write_bytes(b"x" * 100)
        files.append((n, f))
    thin(files, recent=3, per_octave=2)
    left = sorted(int(p.stem[5:]) for p in tmp_path.iterdir())
    assert left == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 297, 298, 299]
    thin([(int(p.stem[5:]), p) for p in tmp_path.iterdir()], recent=3, per_octave=2, budget_bytes=1000)
    left = sorted(int(p.stem[5:]) for p in tmp_path.iterdir())
    assert len(left) == 10 and left[0] == 0 and left[-1] == 299


TRAIN_PIECE = TINY_EQ.format(seed=1) + """\
[train]
steps = 40
grid_every = 1
grid_samples = 1
checkpoint_every = 5
keep_every = 1
keep_recent = 2
keep_per_octave = 2
grids_recent = 3
grids_per_octave = 1
log_max_mb = 0.002
log_keep = 2
min_free_mb = 0
"""


def train_cli(*args):
    return CliRunner().invoke(main, ["train", *args, "--device", "cpu"])


def test_train_keeps_thinned_checkpoints_grids_and_rotated_logs(tmp_path):
    piece = tmp_path / "eq.toml"
    piece.write_text(TRAIN_PIECE)
    out = tmp_path / "run"
    r = train_cli(str(piece), "--out", str(out))
    assert r.exit_code == 0, r.output
    kept = sorted(int(p.stem[5:]) for p in (out / "checkpoints").glob("step_*.pt"))
    assert kept == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 39, 40]
    grids = sorted(int(p.stem[5:]) for p in (out / "grids").glob("step_*.png"))
    assert grids == [0, 1, 2, 4, 8, 16, 32, 38, 39, 40]
    logs = sorted(p.name for p in out.glob("log*.jsonl"))
    assert logs == ["log.1.jsonl", "log.2.jsonl", "log.jsonl"]
    assert all(p.stat().st_size <= 2100 for p in out.glob("log*.jsonl"))
    last = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert last[-1] == 40


def test_telemetry_appends_across_restarts_and_rotates(tmp_path):
    path = tmp_path / "t.jsonl"
    for _ in range(2):
        s = FrameStats(path, max_bytes=4000)
        for i in range(3):
            s.second({"t": i, "frame": i})
        s.close()
    assert len(path.read_text().splitlines()) == 6  # appended, not truncated
    s = FrameStats(path, max_bytes=4000)
    for i in range(40):
        s.second({"t": i, "frame": i})
    s.close()
    assert (tmp_path / "t.1.jsonl").exists() and not (tmp_path / "t.2.jsonl").exists()
    assert path.stat().st_size <= 4000


def test_osc_recordings_are_kept_within_their_budget(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for i in range(5):
        (run / f"record-2026-{i}.mp4").write_bytes(b"x" * 1000)
        (run / f"record-2026-{i}.mp4.automation.jsonl").write_text("{}\n")
        os.utime(run / f"record-2026-{i}.mp4", (1000 + i, 1000 + i))
    text = SHOW.replace("[layout]", "[disk]\nrecordings_budget_mb = 0.0025\n[layout]")
    with make_engine(tmp_path, text) as eng:
        eng.recorder.record()
        eng.frame(number=0)
        eng.frame(number=1)
    left = sorted(p.name for p in run.glob("record-2026-*.mp4"))
    assert left == ["record-2026-3.mp4", "record-2026-4.mp4"]
    assert not (run / "record-2026-0.mp4.automation.jsonl").exists()


def test_train_checks_free_space_at_start_and_a_full_disk_is_one_line(tmp_path, small_fs):
    piece = tmp_path / "eq.toml"
    piece.write_text(TRAIN_PIECE.replace("min_free_mb = 0", "min_free_mb = 100000000"))
    r = train_cli(str(piece), "--out", str(tmp_path / "run"))
    assert r.exit_code == 2 and "below [train] min_free_mb" in r.output
    assert len(r.output.strip().splitlines()) == 1
    disk = small_fs(160)  # room for a few grids, not for the checkpoints
    piece.write_text(TRAIN_PIECE)
    r = train_cli(str(piece), "--out", str(disk / "run"))
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "no space left" in errors[0], r.output
    assert "Traceback" not in r.output
