"""A full disk during a live recording (issue 13, item 1): the recording stops with one line,
finalised as far as it can be, and the show goes on; checkpoints never compete with a recording for
the last bytes. Real small filesystems (tmpfs, mounted by the test where it may: the `small_fs`
fixture skips otherwise) and, everywhere, an ENOSPC injected at the encoder's write and at torch.save."""

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, frames_played, slots_dropped
from test_engine import make_engine
from test_show import SHOW, write_show

from unstable.checkpoint import load_checkpoint, save_checkpoint
from unstable.disk import free_bytes, is_no_space
from unstable.errors import CheckpointError
from unstable.probe import probe
from unstable.system import build_system, load_piece
from unstable.trainer import checkpoint_payload

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- small filesystems ----------------------------------------------------------------------------

def fill(folder: Path, leave: int) -> None:
    """Fill `folder`'s filesystem until about `leave` bytes are free."""
    with open(folder / "filler", "wb") as f:
        chunk = b"\0" * 4096
        while free_bytes(folder) > leave + 4096:
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break


def live_cli(show: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "unstable.cli", "live", str(show), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
           *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


BIG = SHOW.replace("size = [96, 32]", "size = [256, 128]")


def played_whole(out: str, slots: int) -> bool:
    """Whether the show's closing line says it played all its `slots` frame slots: each drawn, or
    dropped because a busy machine made it late (the clock, not the frame count, ends a show)."""
    frames = frames_played(out)
    return frames + slots_dropped(out) == slots and frames > slots // 2


# -- 1. a full disk during a recording ------------------------------------------------------------

def live_filling(show: Path, disk: Path, leave: int, *args: str, after: float = 1.0) -> tuple[int, str]:
    """Run `unstable live SHOW ARGS --record FILE` and, `after` seconds into the recording (from
    when its encoder made FILE, however long a busy machine takes to get there), fill `disk` until
    `leave` bytes are free (whatever else fills a disk: another recording, another program).
    Returns (exit status, everything it printed)."""
    recording = Path(args[args.index("--record") + 1])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "unstable.cli", "live", str(show), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
           *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out = ""
        while "run folder" not in out:
            line = proc.stdout.readline()
            assert line, out
            out += line
        deadline = time.monotonic() + 60
        while not recording.exists():
            assert time.monotonic() < deadline and proc.poll() is None, f"{recording} never started\n{out}"
            time.sleep(0.05)
        time.sleep(after)
        fill(disk, leave)
        out += proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def test_a_disk_filling_up_stops_the_recording_not_the_show(tmp_path, small_fs):
    """`unstable live --record` onto a small tmpfs (no floor set) that fills up while it records:
    the recording stops with one line while the file can still be finished (it plays), the show
    plays every frame and exits 0 with its final checkpoints."""
    disk = small_fs(1024)
    show = write_show(tmp_path, BIG.replace("[layout]", "[disk]\nmin_free_mb = 0\n[layout]"))
    code, out = live_filling(show, disk, 40 * 1024, "--seconds", "5", "--record", str(disk / "rec.mp4"),
                             "--run", str(tmp_path / "run"))
    assert code == 0, out
    assert played_whole(out, 50), out  # the show went on to its last frame
    lines = [ln for ln in out.splitlines() if "rec.mp4" in ln and not ln.startswith("live: recorded")]
    assert len(lines) == 1 and "stopped: no space left" in lines[0], out  # one line
    assert "Traceback" not in out
    assert 0 < probe(disk / "rec.mp4").frames < 50  # finalised: it plays
    for name in ("eq", "eq2"):  # the final checkpoints were written
        assert load_checkpoint(tmp_path / "run" / name / "checkpoint.pt")["step"] == 0


def test_no_room_to_begin_is_one_line(tmp_path, small_fs):
    """Too little room even to begin: no recording starts, one line, the show plays on."""
    disk = small_fs(1024)
    show = write_show(tmp_path, BIG.replace("[layout]", "[disk]\nmin_free_mb = 0\n[layout]"))
    fill(disk, 8 * 1024)
    r = live_cli(show, "--seconds", "1", "--record", str(disk / "rec.mp4"), "--run", str(tmp_path / "run"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and played_whole(r.stdout, 10), out
    lines = [ln for ln in out.splitlines() if "rec.mp4" in ln]
    assert len(lines) == 1 and "not started: no space left" in lines[0], out


def test_a_recording_stops_at_the_free_space_floor_and_the_checkpoints_keep_the_rest(tmp_path, small_fs):
    """Recording and checkpoints on one small disk that fills while the show records: the recording
    stops at the floor, finalised (it plays), and the final checkpoints fit in what the floor kept."""
    disk = small_fs(4096)
    show = write_show(tmp_path, BIG.replace("[layout]", "[disk]\nmin_free_mb = 1.5\n[layout]"))
    run = disk / "run"
    r0 = live_cli(show, "--seconds", "0.2", "--run", str(run))  # the checkpoints' size, measured
    assert r0.returncode == 0, r0.stdout + r0.stderr
    ckpt = sum(f.stat().st_size for f in run.rglob("checkpoint.pt"))
    leave = int(1.5 * 2**20) - 100 * 1024  # just below the floor
    assert 2 * ckpt < leave - 100 * 1024  # what the floor keeps holds them (each written beside the old one)
    code, out = live_filling(show, disk, leave, "--seconds", "5", "--record", str(disk / "rec.mp4"),
                             "--run", str(run))
    assert code == 0, out
    assert played_whole(out, 50), out
    lines = [ln for ln in out.splitlines() if "rec.mp4" in ln and not ln.startswith("live: recorded")]
    assert len(lines) == 1 and "stopped" in lines[0] and "min_free_mb = 1.5" in lines[0], out
    assert 0 < probe(disk / "rec.mp4").frames < 50  # finalised: it plays
    assert "resumes" in out and "failed" not in out
    for name in ("eq", "eq2"):
        assert load_checkpoint(run / name / "checkpoint.pt")["step"] == 0
    assert free_bytes(disk) > 0


def test_enospc_at_the_encoder_stops_the_recording_with_one_line(tmp_path, monkeypatch, caplog):
    """The same without a small filesystem: ENOSPC injected at the encoder's write call."""
    from unstable.encode import VideoWriter

    def full(self, frames):
        raise OSError(errno.ENOSPC, "No space left on device")

    with make_engine(tmp_path, BIG, record=str(tmp_path / "rec.mp4")) as eng:
        monkeypatch.setattr(VideoWriter, "write", full)
        with caplog.at_level(logging.ERROR):
            for i in range(10):
                eng.frame(number=i)
        assert not eng.recorder.recording and eng.frames == 10
        assert eng.params.get("show", "record") == 0  # the controllers' toggle follows
    lines = [r for r in caplog.records if "rec.mp4" in r.getMessage()]
    assert len(lines) == 1 and "no space left" in lines[0].getMessage()
    assert load_checkpoint(tmp_path / "run" / "eq" / "checkpoint.pt")["step"] == 0


def test_enospc_in_torch_save_is_one_line_saying_so(tmp_path, monkeypatch):
    system = build_system(load_piece(write_show(tmp_path).parent / "pieces" / "eq.toml"), torch.device("cpu"))

    def full(obj, f, *a, **k):
        f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="no space left") as e:
        save_checkpoint(tmp_path / "c" / "checkpoint.pt", checkpoint_payload(system))
    assert "\n" not in str(e.value) and not list((tmp_path / "c").iterdir())
    assert is_no_space(OSError(errno.ENOSPC, "x"))
