"""What the mutation run of frame/timeline.py found unpinned (scripts/mutation.sh timeline;
docs/mutation.md, fourth session): the show timeline's details its other tests did not check."""

from __future__ import annotations

import json
import logging

import pytest

from unstable.audio.mapping import AudioMapSettings, AudioModulator
from unstable.control.store import ParameterStore
from unstable.display.layout import Colour, Layout
from unstable.frame.automation import load_automation
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings
from unstable.tempo import tempo_specs

FPS = 10


def _beat_show(bpm=100.0, walk_bpm=None, audio=None):
    """Three scenes in beats (durations and crossfades), a Link offset, walks per beat if `walk_bpm`."""
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(3) + tempo_specs(bpm, link=True)})
    looks = [SceneSettings(name=f"s{i}", duration=1.0, duration_beats=3.0 + i, crossfade=0.3, crossfade_beats=1.0,
                           layout=Layout(panels=("eq/g0",)), colour=Colour(), params={"eq": {"hue": 30.0 * i}})
             for i in range(3)]
    return ShowTimeline(looks, store, ["eq"], FPS, walk_bpm=walk_bpm, audio=audio), store


def _frames(tl, frames, at=None):
    out = []
    for n in frames:
        if at and n in at:
            at[n](tl)
        s = tl.advance(n)
        out.append((s.frame, s.t, s.scenes, s.walk_times, s.snapshot, tl.beats.beat, tl.beats.bpm,
                    tl.director.started_beat))
    return out


def test_a_show_in_beats_replayed_from_mid_show_keeps_its_beat_tempo_offset_and_walks(tmp_path):
    """The automation header's state carries the beat count, the tempo, the last beat time, the
    Link offset, the scene's starting beat and the walks (`at` included): a replay that starts
    mid-show cuts on the same beats and walks the same phases as the show did."""
    def tempo(bpm):
        return lambda tl: tl.store.set(SHOW, "tempo", bpm)

    def offset(tl):
        tl.store.set(SHOW, "beat_offset", 0.75)

    live, _ = _beat_show(walk_bpm=90.0)
    _frames(live, range(23), at={4: tempo(140.0), 9: offset, 17: tempo(75.0)})
    path = tmp_path / "mid.automation.jsonl"
    live.start_recording(path, "show", 23)
    ahead = _frames(live, range(23, 80), at={40: tempo(180.0)})
    live.stop_recording()
    auto = load_automation(path)
    assert auto.state["beat"]["t"] == 2.2 and auto.state["beat"]["offset"] == 0.75
    assert auto.state["beat"]["bpm"] == ahead[0][6] and auto.state["scene"]["started_beat"] > 0.0
    assert auto.state["walk"]["eq"]["at"] == 2.2
    again, _ = _beat_show(walk_bpm=90.0)
    assert again.replay(auto) == 23
    assert again.now == 2.2
    assert _frames(again, range(23, 80)) == ahead
    assert len({a[2][0] for a in ahead}) == 3  # it did cut on the beats it went on counting


def test_a_show_without_a_tempo_counts_beats_at_120():
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    tl = ShowTimeline([SceneSettings(name="a", layout=Layout(panels=("eq/g0",)), colour=Colour())], store, ["eq"], FPS)
    tl.advance(0)
    tl.advance(10)
    assert tl.beats.bpm == 120.0 and tl.beats.beat == pytest.approx(2.0)


def _audio(store, inp=None):
    specs = {("eq", "hue"): store.spec("eq", "hue")}
    return AudioModulator([AudioMapSettings("onset", "eq.hue", 0.5)], specs, FPS, inp)


def _write_automation(path, lines):
    """An automation file from frame 0 (no start state) with these change lines."""
    head = {"automation": 1, "show": "s", "fps": "10", "start_frame": 0, "state": {}}
    path.write_text("".join(json.dumps(x) + "\n" for x in [head, *lines]))


def test_replayed_audio_levels_move_the_snapshot_until_the_next_change(tmp_path):
    """An automation's audio levels are set on a show that has no audio input of its own."""
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    looks = [SceneSettings(name="a", layout=Layout(panels=("eq/g0",)), colour=Colour())]
    path = tmp_path / "a.automation.jsonl"
    tl = ShowTimeline(looks, store, ["eq"], FPS, audio=_audio(store))
    _write_automation(path, [{"frame": 3, "audio": [0.8]}, {"frame": 6, "audio": [0.2]}])
    tl.replay(load_automation(path))
    hues = [tl.advance(n).snapshot["eq"]["hue"] for n in range(8)]
    assert hues[0] == hues[2] == 0.0
    assert hues[3] == hues[5] > hues[6] == hues[7] > 0.0
    assert tl.audio.replayed == [0.2]


def test_replayed_audio_levels_are_ignored_where_the_show_hears_its_own_input(tmp_path):
    class Silence:  # a live input that hears nothing (a DeviceInput's interface)
        def at(self, frame):
            return {"onset": 0.0}

    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    looks = [SceneSettings(name="a", layout=Layout(panels=("eq/g0",)), colour=Colour())]
    path = tmp_path / "a.automation.jsonl"
    tl = ShowTimeline(looks, store, ["eq"], FPS, audio=_audio(store, Silence()))
    _write_automation(path, [{"frame": 1, "audio": [0.9]}])
    tl.replay(load_automation(path))
    assert [tl.advance(n).snapshot["eq"]["hue"] for n in range(3)] == [0.0, 0.0, 0.0]
    assert tl.audio.replayed is None


def test_a_recording_cap_is_passed_on_and_stopping_says_why_it_failed(tmp_path, caplog):
    tl, store = _beat_show()
    assert tl.stop_recording() is None  # nothing being written
    path = tmp_path / "capped.automation.jsonl"
    rec = tl.start_recording(path, "show", 0, max_bytes=4096)
    assert rec.max_bytes == 4096
    for n in range(200):
        store.set("eq", "hue", float(n % 90))
        tl.advance(n)
    assert rec.failed and "reached its cap" in rec.failed
    tl.stop_recording()
    assert tl.recorder is None
    # A file that cannot be finished: its reason returned, logged unless quiet.
    full = tl.start_recording("/dev/full", "show", 200)
    assert tl.start_recording(tmp_path / "b.automation.jsonl", "show", 200) is not full  # the first stopped
    tl.stop_recording()
    tl.start_recording("/dev/full", "show", 200)
    for n in range(200, 204):
        tl.advance(n)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        why = tl.stop_recording(quiet=True)
    assert why and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    tl.start_recording("/dev/full", "show", 204)
    tl.advance(204)
    with caplog.at_level(logging.WARNING):
        why = tl.stop_recording()
    assert why and [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_beat_count_follows_the_shows_tempo_and_a_frame_given_its_own_time_keeps_it():
    tl, store = _beat_show(bpm=100.0)
    for n in range(11):
        if n == 10:
            store.set(SHOW, "tempo", 150.0)
        tl.advance(n)
    assert tl.beats.bpm == 150.0 and tl.beats.beat == pytest.approx(100 / 60)  # 1 s at 100 BPM
    s = tl.advance(11, t=1.25)  # a live frame drawn late: its own time, not the grid's 1.1
    assert s.t == 1.25 and tl.now == 1.25
    assert tl.beats.beat == pytest.approx(100 / 60 + 0.25 * 150 / 60)


def test_a_recording_started_before_the_first_frame_replays_from_a_beat_clock_not_started(tmp_path):
    live, store = _beat_show()
    path = tmp_path / "from0.automation.jsonl"
    live.start_recording(path, "show", 0)  # `live --record`: before frame 0, the beat clock has no time yet
    shown = _frames(live, range(40), at={12: lambda tl: tl.store.set(SHOW, "tempo", 160.0)})
    live.stop_recording()
    auto = load_automation(path)
    assert auto.state["beat"]["t"] is None
    again, _ = _beat_show()
    again.replay(auto)
    assert again.beats.t is None
    assert _frames(again, range(40)) == shown


def test_a_walk_period_in_beats_runs_the_walk_at_the_tempo_over_the_period_tempo():
    tl, store = _beat_show(bpm=100.0, walk_bpm=50.0)  # written at 50 BPM, played at 100: twice as fast
    store.set("eq", "walk_speed", 1.5)
    states = [tl.advance(n) for n in range(11)]
    assert states[10].walk_times["eq"] == pytest.approx(1.0 * 1.5 * 2.0)
    plain, store = _beat_show(bpm=100.0)  # a period in seconds: walk_speed alone
    store.set("eq", "walk_speed", 1.5)
    assert [plain.advance(n) for n in range(11)][10].walk_times["eq"] == pytest.approx(1.5)


def test_a_frames_actions_are_the_events_other_than_scene_changes_in_order():
    tl, store = _beat_show()
    tl.advance(0)
    store.post_event("still")
    store.post_event("scene", 1.0)
    store.post_event("record", 1.0)
    s = tl.advance(1)
    assert [(e.kind, e.value) for e in s.actions] == [("still", None), ("record", 1.0)]
    assert tl.director.current == 1 and tl.advance(2).actions == []
