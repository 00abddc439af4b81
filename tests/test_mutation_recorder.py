"""The recorder's failure lines and its sound, which the direct mutation sample of live/recorder.py
found unpinned by its test files: each test drives a real Recorder (a real ShowTimeline, real
ffmpeg, files in tmp_path) the way the engine does: begin_frame, advance, put, close."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import numpy as np

from helpers import wait_for
from test_audio import write_wav
from test_frame import timeline
from unstable.formats import ffmpeg_exe
from unstable.frame.automation import automation_path
from unstable.live.recorder import Recorder
from unstable.probe import probe

W, H, FPS = 64, 48, 10


class Frames:
    """A frame source for `Recorder.put`: `read()` gives the next [H, W, 3] uint8 picture."""

    def __init__(self):
        self.n = 0

    def read(self) -> np.ndarray:
        self.n += 1
        return np.full((H, W, 3), (self.n * 20) % 256, np.uint8)  # [H, W, 3]


def recorder(tmp_path, **kw) -> Recorder:
    tl, _ = timeline()
    return Recorder(tl, show="t", size=(W, H), fps=FPS, run_dir=tmp_path / "run", **kw)


def play(rec: Recorder, frames: range, source: Frames) -> None:
    for n in frames:
        rec.begin_frame(n)
        rec.timeline.advance(n)
        rec.put(n, source)


def decoded_audio(path) -> np.ndarray:
    """The file's sound as mono float samples at 8 kHz ([T])."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "8000",
                          "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, "<i2").astype(np.float32) / 32768


def test_a_recording_carries_the_shows_sound_from_its_first_slot(tmp_path):
    # 0.5 s of silence, then a loud tone: a recording from slot 5 (0.5 s) hears the tone at once.
    rate = 8000
    t = np.arange(int(1.5 * rate)) / rate
    sound = np.where(t >= 0.5, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    wav = write_wav(tmp_path / "s.wav", sound, rate)
    rec = recorder(tmp_path, sound=wav)
    rec.record(tmp_path / "run" / "r.mp4")
    play(rec, range(5, 13), Frames())  # slots 5..12: 0.8 s
    assert rec.close() == []
    info = probe(tmp_path / "run" / "r.mp4")
    assert info.frames == 8
    audio = decoded_audio(tmp_path / "run" / "r.mp4")
    assert abs(len(audio) / 8000 - 0.8) < 0.05          # cut to the frames
    assert np.sqrt(np.mean(audio[:400] ** 2)) > 0.2     # its first 50 ms: the tone, not the silence


def test_a_recording_without_a_sound_has_no_audio_stream(tmp_path):
    rec = recorder(tmp_path)
    rec.record(tmp_path / "run" / "r.mp4")
    play(rec, range(0, 4), Frames())
    assert rec.close() == []
    streams = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "run" / "r.mp4")],
                             capture_output=True, text=True).stderr
    assert "Video:" in streams and "Audio:" not in streams


def kill_encoder(rec: Recorder) -> None:
    os.kill(rec.writer.pid, signal.SIGKILL)
    assert wait_for(lambda: rec.writer._proc.poll() is not None)


def test_an_encoder_that_dies_is_said_once_not_again_when_the_file_is_finished(tmp_path, caplog):
    rec = recorder(tmp_path)
    path = tmp_path / "run" / "r.mp4"
    rec.record(path)
    source = Frames()
    play(rec, range(0, 3), source)
    kill_encoder(rec)
    with caplog.at_level(logging.ERROR, logger="unstable.live"):
        play(rec, range(3, 6), source)       # the show goes on; the recording has stopped
        assert rec.writer is None
        errors = rec.close()
    assert len(errors) == 1 and errors[0].startswith(f"recording {path} stopped: ")
    said = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("(the show goes on)")


def test_a_write_failure_on_a_nearly_full_disk_says_the_free_space_of_the_recordings_disk(tmp_path):
    folder = tmp_path / "run"

    def free(p):  # 512 KB left on the recording's disk: above the 64 KB floor, below 1 MB
        assert p == folder, f"free space asked of {p!r}, not of the recording's folder"
        return 512 * 1024

    rec = recorder(tmp_path, free=free)
    rec.record(folder / "r.mp4")
    source = Frames()
    play(rec, range(0, 2), source)
    kill_encoder(rec)
    play(rec, range(2, 3), source)
    assert rec.close() == [f"recording {folder / 'r.mp4'} stopped: no space left on its disk (0.5 MB free)"]


def test_stills_refused_on_a_full_disk_are_one_warning_per_30_s_naming_the_still(tmp_path, caplog):
    rec = recorder(tmp_path, free=lambda p: 10 * 1024)  # 10 KB: below the 64 KB a disk needs
    frame = np.zeros((H, W, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="unstable.live"):
        assert rec.still(frame, 1) is None
        assert rec.still(frame, 2) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "unstable.live"]
    assert len(lines) == 1
    assert "t-0000001.png not written: no space left on its disk (10 KB free)" in lines[0]
    assert len(rec.errors) == 2 and not (tmp_path / "run" / "stills").exists()


def test_an_automation_stopped_at_its_cap_is_in_the_recorders_report_and_logged_once(tmp_path, caplog):
    rec = recorder(tmp_path, automation_max=1)  # the header only: the first change stops the file
    path = tmp_path / "run" / "r.mp4"
    rec.record(path)
    source = Frames()
    with caplog.at_level(logging.ERROR):
        play(rec, range(0, 2), source)
        rec.timeline.store.set("eq", "hue", 40.0)
        play(rec, range(2, 4), source)
        errors = rec.close()
    auto = automation_path(path)
    assert errors == [f"automation {auto}: reached its cap of {round(1 / (1 << 20), 3):g} MB"]
    said = [r.getMessage() for r in caplog.records if str(auto) in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("automation stopped: ")
    assert probe(path).frames == 4  # the video went on without it

