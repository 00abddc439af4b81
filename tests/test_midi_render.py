"""`unstable render SHOW --midi FILE.mid`: a Standard MIDI File written by a third-party writer
(midiutil) plays through the show's [[midi.map]] on the frame clock: its mapped parameter moves in
exactly the frames of its events, a note cuts to its scene in its frame, and everything before the
first event is the plain render, pixel for pixel. Bad files and bad maps are one line each."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from midiutil import MIDIFile
from tqdm import tqdm

from test_show import write_show
from unstable.cli import main
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
[[scenes]]
name = "a"
crossfade = 0
[[scenes]]
name = "b"
crossfade = 0
[scenes.colour]
brightness = 0.4
[midi]
[[midi.map]]
cc = 7
param = "eq.training"
[[midi.map]]
cc = 8
param = "show.master_fade"
takeover = false
[[midi.map]]
note = 60
scene = 1
"""
# (seconds, what): each lands in frame ceil(seconds x 10)
CC_TIMES = [(0.3, 7, 0), (0.6, 7, 127), (1.05, 7, 0)]       # -> frames 3, 6, 11 (the toggle: off, on, off)
FADE_AT = 1.5                                               # -> frame 15: master fade to 0
NOTE_AT = 0.75                                              # -> frame 8: scene b


def write_mid(path):
    """The performance, written by midiutil at 120 BPM (a beat is 0.5 s)."""
    mid = MIDIFile(1, adjust_origin=False)
    mid.addTempo(0, 0, 120)
    for t, cc, v in CC_TIMES:
        mid.addControllerEvent(0, 0, t * 2, cc, v)
    mid.addControllerEvent(0, 0, FADE_AT * 2, 8, 0)
    mid.addNote(0, 0, 60, NOTE_AT * 2, 0.25, 100)
    with open(path, "wb") as f:
        mid.writeFile(f)
    return path


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """A show whose run folder exists (three frames live, training off)."""
    tmp = tmp_path_factory.mktemp("midi-render")
    show_path = write_show(tmp, SHOW)
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web=False, run_dir=tmp / "run", train=False,
                 echo=lambda s: None, progress=silent)
    with eng:
        for n in range(3):
            eng.frame(number=n)
    return tmp, show_path


def render(args):
    return CliRunner().invoke(main, ["render", *map(str, args)])


@pytest.mark.usefixtures("one_torch_thread")
def test_a_mid_file_moves_its_parameter_in_exactly_the_frames_of_its_events(played):
    tmp, show_path = played
    mid = write_mid(tmp / "performance.mid")
    frames = 18
    out = tmp / "with-midi.mov"
    r = render([show_path, "--midi", mid, "--run", tmp / "run", "--out", out, "--preset", "ffv1",
                "--seconds", frames / FPS])
    assert r.exit_code == 0, r.output
    # The automation the file played into: targets change in exactly the events' frames.
    auto = tmp / "run" / "midi" / "performance.mid.automation.jsonl"
    lines = [json.loads(x) for x in auto.read_text().splitlines()[1:]]
    training = {d["frame"]: d["set"]["eq"]["training"] for d in lines if "training" in d.get("set", {}).get("eq", {})}
    assert training == {3: 0.0, 6: 1.0, 11: 0.0}
    assert [d["frame"] for d in lines if "scenes" in d] == [8]
    assert [d["frame"] for d in lines if "master_fade" in d.get("set", {}).get("show", {})] == [15]
    # The picture: the plain render up to frame 7, scene b's darker grade from frame 8 on.
    plain = tmp / "plain.mov"
    r = render([show_path, "--run", tmp / "run", "--out", plain, "--preset", "ffv1", "--seconds", frames / FPS])
    assert r.exit_code == 0, r.output
    a, b = list(read_frames(out)), list(read_frames(plain))
    assert len(a) == len(b) == frames
    same = [n for n in range(frames) if np.array_equal(a[n], b[n])]
    assert same == list(range(8)), same
    assert all(a[n].mean() < b[n].mean() - 5 for n in range(8, frames)), [float(f.mean()) for f in a]
    # The fade starts in its own frame (master_fade glides from there).
    fades = [float(f.mean()) for f in a]
    assert fades[14] == pytest.approx(fades[13], abs=3) and fades[15] < fades[14] - 1, fades


def test_bad_midi_input_is_one_line_and_a_non_zero_exit(played, tmp_path):
    tmp, show_path = played
    junk = tmp_path / "junk.mid"
    junk.write_text("MThd but not really\n")
    r = render([show_path, "--midi", junk, "--run", tmp / "run", "--out", tmp_path / "x.mov"])
    assert r.exit_code != 0 and str(junk) in r.output and "not a Standard MIDI File" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    r = render([show_path, "--midi", tmp_path / "missing.mid", "--run", tmp / "run"])
    assert r.exit_code != 0 and "no such file" in r.output and len(r.output.strip().splitlines()) == 1
    bad_show = write_show(tmp_path, SHOW.replace('param = "eq.training"', 'param = "eq.trainin"'), name="bad.toml")
    r = render([bad_show, "--midi", write_mid(tmp_path / "p.mid"), "--run", tmp / "run"])
    assert r.exit_code != 0 and "midi.map[0].param" in r.output and "eq.trainin" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    r = render([show_path, "--midi", write_mid(tmp_path / "q.mid"), "--automation", junk, "--run", tmp / "run"])
    assert r.exit_code != 0 and "give one of them" in r.output
