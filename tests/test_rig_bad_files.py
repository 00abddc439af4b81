"""Bad files in a performer's rig, each one clear line: a .mid that is huge, truncated, lasts a
million hours or is not MIDI stops `unstable render --midi` with one line and a non-zero exit; a
preset file that is truncated, huge, not a plain file (a FIFO), holds NaN or infinity, or names
parameters the show does not have is one line while the live show plays on (over real OSC on
loopback), and a preset name with `../` touches nothing outside the run folder."""

from __future__ import annotations

import json
import logging
import os
import threading

import mido
import pytest
from click.testing import CliRunner

from helpers import ONE_PANEL_SHOW, Client
from test_presets import make_engine, send
from test_show import write_show
from unstable.cli import main
from unstable.control.presets import MAX_FILE_BYTES, PresetBank
from unstable.control.store import ParameterStore
from unstable.errors import UnstableError
from unstable.render.midi_file import MAX_BYTES, read_midi
from unstable.schema import SHOW, common_specs, show_specs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MIDI_SHOW = ONE_PANEL_SHOW + """\
[midi]
[[midi.map]]
cc = 7
param = "eq.hue"
"""


def good_mid(path, messages=200):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for i in range(messages):
        track.append(mido.Message("control_change", control=7, value=i % 128, time=24))
    mid.save(str(path))
    return path


def one_line_failure(args) -> str:
    r = CliRunner().invoke(main, ["render", *map(str, args)])
    assert r.exit_code != 0, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    return r.output


def test_bad_mid_files_are_one_line_each_and_a_non_zero_exit(tmp_path):
    show = write_show(tmp_path, MIDI_SHOW)
    run = tmp_path / "run"
    good = good_mid(tmp_path / "good.mid")
    huge = tmp_path / "huge.mid"
    huge.write_bytes(good.read_bytes() + b"\0" * MAX_BYTES)   # a real header, then far too much
    out = one_line_failure([show, "--midi", huge, "--run", run])
    assert str(huge) in out and "MiB" in out
    cut = tmp_path / "cut.mid"
    cut.write_bytes(good.read_bytes()[:400])                   # stops inside its track
    out = one_line_failure([show, "--midi", cut, "--run", run])
    assert str(cut) in out and "truncated" in out
    far = tmp_path / "far.mid"                                 # one event a delta of 2^28 ticks away
    mid = mido.MidiFile(ticks_per_beat=1)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track += [mido.MetaMessage("set_tempo", tempo=16777215, time=0),
              mido.Message("control_change", control=7, value=1, time=0x0FFFFFFF)]
    mid.save(str(far))
    out = one_line_failure([show, "--midi", far, "--run", run])
    assert str(far) in out and "hours" in out and "--seconds" in out
    assert len(read_midi(far, seconds=2.0)) == 1               # a part of it, with --seconds, reads
    noise = tmp_path / "noise.mid"
    noise.write_bytes(bytes(range(256)) * 8)
    out = one_line_failure([show, "--midi", noise, "--run", run])
    assert str(noise) in out and "not a Standard MIDI File" in out
    folder = tmp_path / "folder.mid"
    folder.mkdir()
    with pytest.raises(UnstableError, match="not a file"):
        read_midi(folder)


def preset_lines(caplog, name):
    return [r.getMessage() for r in caplog.records if name in r.getMessage() and r.levelno >= logging.WARNING]


def test_bad_preset_files_are_one_line_each_and_the_show_plays_on(tmp_path, caplog):
    eng = make_engine(tmp_path)
    folder = tmp_path / "run" / "presets"
    folder.mkdir(parents=True)
    good = {"eq": {"saturation": 1.5, "hue": 30.0}}
    text = json.dumps({"preset": "x", "values": good})
    (folder / "cut.json").write_text(text[: len(text) // 2])
    (folder / "huge.json").write_text(text[:-1] + " " * MAX_FILE_BYTES + "}")   # valid JSON, far too big
    (folder / "nan.json").write_text('{"values": {"eq": {"saturation": NaN, "hue": Infinity, "fade": 0.5}}}')
    (folder / "ghost.json").write_text(json.dumps({"values": {"eq": {"saturation": 0.25, "nope": 1.0},
                                                              "ghost": {"hue": 3.0}}}))
    with eng, caplog.at_level(logging.WARNING):
        client = Client(eng.osc.port)
        eng.frame(number=0)
        for n, name in enumerate(("cut", "huge", "nan", "ghost", "../ghost"), start=1):
            send(eng, client, "/unstable/preset/recall", name)
            eng.frame(number=n)
        assert eng.frames == 6
        # What could be taken was: the finite value of nan.json, the known one of ghost.json.
        assert eng.params.get("eq", "fade") == 0.5 and eng.params.get("eq", "saturation") == 0.25
        assert eng.params.get("eq", "hue") == 0.0                 # neither infinity nor the huge file's 30
        client.close()
    for name, words in (("cut.json", "not a preset file"), ("huge.json", "at most"),
                        ("nan.json", "not finite numbers: eq.saturation = nan, eq.hue = inf"),
                        ("ghost.json", "not in this show: eq.nope, ghost.hue")):
        lines = preset_lines(caplog, name)
        assert len(lines) == 1 and words in lines[0], (name, lines)
    assert len(preset_lines(caplog, "../ghost")) == 1


def test_a_preset_that_is_a_fifo_is_refused_unread(tmp_path, caplog):
    """A FIFO in the presets folder would block the frame's thread on open(): refused by its type."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    bank = PresetBank(store, tmp_path)
    os.mkfifo(tmp_path / "pipe.json")
    done = threading.Event()

    class Ev:
        kind, name, value, unit, curve, origin = "preset/recall", "pipe", None, "s", "smooth", ("127.0.0.1", 9)

    def recall():
        bank.act(Ev)
        done.set()

    with caplog.at_level(logging.WARNING):
        threading.Thread(target=recall, daemon=True).start()
        finished = done.wait(30.0)
        if not finished:  # unblock the reader so the test's thread can end
            with open(tmp_path / "pipe.json", "w"):
                pass
    assert finished, "recalling a FIFO preset blocked"
    lines = preset_lines(caplog, "pipe")
    assert len(lines) == 1 and "not a plain file" in lines[0], lines
