"""MIDI mappings on the real parameter store, from messages mido parses out of raw bytes: 7- and
14-bit CCs, notes onto toggles, scenes and actions, channels, soft takeover, LED feedback, and the
one-line errors of a mapping to nothing and of a .mid that is not one."""

from __future__ import annotations

import mido
import pytest

from unstable.config import load_dataclass
from unstable.render.midi_file import read_midi
from unstable.control.midi_map import MidiMap, MidiMapper, MidiSettings, check_maps, learn_specs
from unstable.control.store import ParameterStore
from unstable.errors import ConfigError, UnstableError
from unstable.schema import SHOW, common_specs, show_specs
from unstable.tempo import tempo_specs

ORIGIN = ("midi", 0)


def raw(*data: int):
    """A message as a controller's bytes, parsed by mido (not built from our own fields)."""
    return mido.Message.from_bytes(list(data))


def store():
    return ParameterStore({"eq": common_specs(), SHOW: show_specs(3) + tempo_specs() + learn_specs(20)})


def mapper(s, **kw):
    return MidiMapper(s, [MidiMap(**kw)])


def test_a_7_bit_cc_moves_its_parameter_over_its_range():
    s = store()
    m = mapper(s, cc=21, param="eq.hue", takeover=False)
    assert m.handle(raw(0xB0, 21, 127), ORIGIN) == 1
    assert s.get("eq", "hue") == 180.0
    m.handle(raw(0xB0, 21, 0), ORIGIN)
    assert s.get("eq", "hue") == -180.0
    assert m.handle(raw(0xB0, 22, 5), ORIGIN) == 0          # another CC: nothing
    assert m.handle(raw(0xE0, 0, 64), ORIGIN) == 0          # pitch bend: not mapped, no error


def test_a_14_bit_cc_lands_msb_then_lsb_with_the_fine_steps():
    s = store()
    m = mapper(s, cc=1, bits=14, param="eq.saturation", takeover=False)
    v = 12345
    m.handle(raw(0xB0, 1, v >> 7), ORIGIN)
    assert s.get("eq", "saturation") == 1.0                 # the MSB alone waits for its LSB
    m.handle(raw(0xB0, 33, v & 127), ORIGIN)
    assert s.get("eq", "saturation") == pytest.approx(2.0 * v / 16383)
    # Finer than a 7-bit step: one LSB apart is a different value.
    m.handle(raw(0xB0, 1, (v + 1) >> 7), ORIGIN)
    m.handle(raw(0xB0, 33, (v + 1) & 127), ORIGIN)
    assert s.get("eq", "saturation") == pytest.approx(2.0 * (v + 1) / 16383)


def test_channels_filter_and_notes_toggle_switch_scenes_and_act():
    s = store()
    m = MidiMapper(s, [MidiMap(note=36, channel=2, param="eq.training"),
                       MidiMap(note=40, scene=2), MidiMap(note=41, action="still"),
                       MidiMap(cc=64, action="record"), MidiMap(note=42, action="eq.directions/refresh")])
    m.handle(raw(0x90, 36, 100), ORIGIN)                    # channel 1: not this map's
    assert s.get("eq", "training") == 1.0
    m.handle(raw(0x91, 36, 100), ORIGIN)                    # channel 2: toggles off
    assert s.get("eq", "training") == 0.0
    m.handle(raw(0x81, 36, 0), ORIGIN)                      # its note off changes nothing
    assert s.get("eq", "training") == 0.0
    m.handle(raw(0x91, 36, 1), ORIGIN)
    assert s.get("eq", "training") == 1.0
    s.drain_events()
    m.handle(raw(0x90, 40, 90), ORIGIN)
    m.handle(raw(0x90, 41, 90), ORIGIN)
    m.handle(raw(0xB0, 64, 127), ORIGIN)
    m.handle(raw(0x90, 42, 90), ORIGIN)
    m.handle(raw(0x90, 41, 0), ORIGIN)                      # note on with velocity 0 is a release
    events = [(e.kind, e.value, e.group) for e in s.drain_events()]
    assert events == [("scene", 2.0, None), ("still", None, None), ("record", 1.0, None),
                      ("directions/refresh", None, "eq")]


def test_soft_takeover_waits_for_the_knob_to_reach_the_value_and_again_after_others_move_it():
    s = store()
    m = mapper(s, cc=7, param="eq.fade")                    # fade starts at 1.0 (unit 1.0)
    s.set("eq", "fade", 0.5)
    for v in (10, 30, 50):                                  # below the value: no jump
        m.handle(raw(0xB0, 7, v), ORIGIN)
        assert s.get("eq", "fade") == 0.5
    m.handle(raw(0xB0, 7, 70), ORIGIN)                      # crossed 0.5 on its way: takes over
    assert s.get("eq", "fade") == pytest.approx(70 / 127)
    m.handle(raw(0xB0, 7, 20), ORIGIN)                      # engaged: follows at once
    assert s.get("eq", "fade") == pytest.approx(20 / 127)
    s.set("eq", "fade", 0.9, origin=("10.0.0.2", 9000))     # the page moved it
    m.disengage([("eq", "fade")])
    m.handle(raw(0xB0, 7, 25), ORIGIN)
    assert s.get("eq", "fade") == 0.9
    m.handle(raw(0xB0, 7, 115), ORIGIN)                     # 0.906: within a step, takes over
    assert s.get("eq", "fade") == pytest.approx(115 / 127)


def test_feedback_shows_values_and_the_current_scene_on_the_controllers_leds():
    s = store()
    m = MidiMapper(s, [MidiMap(cc=21, param="eq.hue"), MidiMap(cc=2, bits=14, param="eq.saturation"),
                       MidiMap(note=40, scene=1), MidiMap(note=41, scene=2), MidiMap(note=36, param="eq.training")])
    s.set("eq", "hue", 0.0)
    s.set("eq", "saturation", 2.0)
    s.set(SHOW, "scene", 2)
    out = [msg.bytes() for msg in m.feedback([("eq", "hue"), ("eq", "saturation"), (SHOW, "scene"),
                                              ("eq", "training")])]
    assert out == [[0xB0, 21, 64], [0xB0, 2, 127], [0xB0, 34, 127], [0x90, 40, 0], [0x90, 41, 127],
                   [0x90, 36, 127]]


def test_a_mapping_to_an_unknown_parameter_scene_or_action_is_one_line_naming_file_and_key():
    groups = {"eq": common_specs(), SHOW: show_specs(3)}
    for m, key, words in [(MidiMap(cc=1, param="eq.nope"), "midi.map[0].param", "not a live parameter"),
                          (MidiMap(cc=1, param="xx.hue"), "midi.map[0].param", "no piece 'xx'"),
                          (MidiMap(note=1, scene=3), "midi.map[0].scene", "0..2"),
                          (MidiMap(note=1, action="explode"), "midi.map[0].action", "expected one of")]:
        with pytest.raises(ConfigError) as info:
            check_maps([m], groups, "shows/x.toml")
        text = str(info.value)
        assert "shows/x.toml" in text and key in text and words in text and "\n" not in text, text


def test_a_pad_recalls_a_preset_and_another_morphs_to_one_in_beats():
    s = store()
    m = MidiMapper(s, [MidiMap(note=44, preset="calm"), MidiMap(cc=20, preset="storm", morph=4, unit="beats")])
    m.handle(raw(0x90, 44, 100), ORIGIN)
    m.handle(raw(0x80, 44, 0), ORIGIN)                      # its release does nothing more
    m.handle(raw(0xB0, 20, 10), ORIGIN)                     # a CC under 64 is not a press
    m.handle(raw(0xB0, 20, 120), ORIGIN)
    got = [(e.kind, e.value, e.name, e.unit) for e in s.drain_events()]
    assert got == [("preset/recall", None, "calm", "s"), ("preset/morph", 4.0, "storm", "beats")]


@pytest.mark.parametrize("entry, key", [
    ({"cc": 1, "note": 2, "param": "eq.hue"}, "cc or note"),
    ({"cc": 1}, "one of param, scene, action or preset"),
    ({"note": 1, "preset": "../calm"}, "preset"),
    ({"note": 1, "preset": "calm", "morph": 4, "unit": "weeks"}, "unit"),
    ({"cc": 40, "bits": 14, "param": "eq.hue"}, "0..31"),
    ({"cc": 128, "param": "eq.hue"}, "cc"),
    ({"cc": 1, "param": "hue"}, "piece.param"),
])
def test_a_bad_map_entry_is_one_line(entry, key):
    with pytest.raises(ConfigError) as info:
        load_dataclass(MidiSettings, {"map": [entry]}, source="shows/x.toml", prefix="midi")
    text = str(info.value)
    assert "shows/x.toml" in text and "midi.map" in text and key in text and "\n" not in text, text


def test_a_file_that_is_not_midi_is_one_line(tmp_path):
    for name, data in [("text.mid", b"this is not a standard midi file\n" * 3), ("empty.mid", b""),
                       ("cut.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x00\x90")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UnstableError) as info:
            read_midi(path)
        text = str(info.value)
        assert str(path) in text and "\n" not in text, text
    with pytest.raises(UnstableError, match="no such file"):
        read_midi(tmp_path / "missing.mid")


def test_without_a_midi_system_the_show_plays_on_with_one_line_and_looks_seldom(caplog):
    """This machine has no ALSA sequencer (/dev/snd/seq): rtmidi's default system cannot open."""
    import logging
    import os
    import time

    from unstable.control.midi import MidiLink
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer")
    s = store()
    with caplog.at_level(logging.INFO, logger="unstable.midi"):
        link = MidiLink(s, MidiSettings(port="nanoKONTROL", map=(MidiMap(cc=7, param="eq.fade", takeover=False),)),
                        None, watch=0.05).start()
        try:
            time.sleep(1.0)
            link.inject(raw(0xB0, 7, 0))                    # the mapping still plays what reaches it
            assert s.get("eq", "fade") == 0.0
            looks = link.looks
        finally:
            link.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no MIDI system" in lines[0], lines
    assert looks <= 2, looks                                 # not 20: it waits RETRY seconds between looks
