"""`unstable render SHOW --midi FILE.mid` carries out mappings to presets as the live show does: a
note mapped with `preset = "dawn"`, `morph = 1.0` in a .mid written by a third-party writer (mido's
MidiFile) morphs to the preset saved in the run folder during the live show; the morph starts the
frame after the note's (as live) and the render's midpoint frame has the midpoint values, and a
note mapped to a recall sets the preset at once."""

from __future__ import annotations

import json

import mido
import numpy as np
import pytest

from test_midi_render import render, silent
from test_show import write_show
from unstable.live import Engine
from unstable.probe import read_frames
from unstable.show import load_show
from helpers import ONE_PANEL_SHOW

FPS = 10
SHOW = ONE_PANEL_SHOW + """\
[walk]
keyframes = 2
period = 0.5
[training]
render_threads = 1
[midi]
[[midi.map]]
note = 60
preset = "dawn"
morph = 1.0
[[midi.map]]
note = 62
preset = "plain"
"""
MORPH_NOTE_AT = 0.3   # -> frame 3; the morph runs from frame 4's snapshot over 10 frames: midpoint 9, end 14
RECALL_NOTE_AT = 1.8  # -> frame 18; the recall's targets from frame 19


def write_mid(path):
    """The performance, written by mido (a beat is 0.5 s at its default 120 BPM, 480 ticks)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    last = 0
    for at, note in ((MORPH_NOTE_AT, 60), (RECALL_NOTE_AT, 62)):
        tick = round(at * 960)
        track.append(mido.Message("note_on", note=note, velocity=100, time=tick - last))
        track.append(mido.Message("note_off", note=note, velocity=0, time=48))
        last = tick + 48
    mid.save(str(path))
    return path


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """A live show (training off) in whose run folder 'dawn' (hue 90, master fade 0.2) and 'plain'
    (the starting values) were saved."""
    tmp = tmp_path_factory.mktemp("midi-presets")
    show_path = write_show(tmp, SHOW)
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web=False, run_dir=tmp / "run", train=False,
                 echo=lambda s: None, progress=silent)
    with eng:
        eng.frame(number=0)
        eng.presets.save("plain")
        eng.params.update({"eq": {"hue": 90.0}, "show": {"master_fade": 0.2}})
        eng.frame(number=1)
        eng.presets.save("dawn")
    return tmp, show_path


def targets_by_frame(path, frames):
    lines = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    state, out = {}, {}
    by_frame = {d["frame"]: d for d in lines}
    for n in range(frames):
        for g, vals in by_frame.get(n, {}).get("set", {}).items():
            for k, v in vals.items():
                state[f"{g}/{k}"] = v
        out[n] = dict(state)
    return out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_mid_file_morphs_to_a_preset_saved_in_the_run_folder(played):
    tmp, show_path = played
    mid = write_mid(tmp / "dawn.mid")
    frames = 22
    out = tmp / "morph.mov"
    r = render([show_path, "--midi", mid, "--run", tmp / "run", "--out", out, "--preset", "ffv1",
                "--seconds", frames / FPS])
    assert r.exit_code == 0, r.output
    at = targets_by_frame(tmp / "run" / "midi" / "dawn.mid.automation.jsonl", frames)
    assert "eq/hue" not in at[4]                                    # the start: nothing moved yet
    assert at[5]["eq/hue"] > 0.0 and at[5]["show/master_fade"] < 1.0
    assert at[9]["eq/hue"] == pytest.approx(45.0) and at[9]["show/master_fade"] == pytest.approx(0.6)
    assert at[14]["eq/hue"] == pytest.approx(90.0) and at[14]["show/master_fade"] == pytest.approx(0.2)
    assert at[18]["eq/hue"] == pytest.approx(90.0)                  # the recall's note is at frame 18 ...
    assert at[19]["eq/hue"] == pytest.approx(0.0) and at[19]["show/master_fade"] == pytest.approx(1.0)  # ... then
    # The picture: the plain render until the morph starts, then darker (the fade) all the way.
    plain = tmp / "plain.mov"
    r = render([show_path, "--run", tmp / "run", "--out", plain, "--preset", "ffv1", "--seconds", frames / FPS])
    assert r.exit_code == 0, r.output
    a, b = list(read_frames(out)), list(read_frames(plain))
    assert len(a) == len(b) == frames
    assert [n for n in range(frames) if np.array_equal(a[n], b[n])][:6] == [0, 1, 2, 3, 4]
    assert all(a[n].mean() < b[n].mean() - 2 for n in range(9, 19)), [float(f.mean()) for f in a]


def test_a_mid_file_naming_a_preset_never_saved_is_one_line_and_the_render_plays_on(played, tmp_path, caplog):
    tmp, show_path = played
    bare = tmp_path / "run"
    (bare / "presets").mkdir(parents=True)
    for f in (tmp / "run").iterdir():
        if f.name != "presets" and f.name != "midi":
            (bare / f.name).symlink_to(f)
    out = tmp_path / "x.mov"
    with caplog.at_level("WARNING"):
        r = render([show_path, "--midi", write_mid(tmp_path / "p.mid"), "--run", bare, "--out", out,
                    "--preset", "ffv1", "--seconds", 0.6])
    assert r.exit_code == 0, r.output
    lines = [x.getMessage() for x in caplog.records if "preset" in x.getMessage()]
    assert len(lines) == 1 and "dawn" in lines[0] and "plays on" in lines[0], lines
    assert len(list(read_frames(out))) == 6
