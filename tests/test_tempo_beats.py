"""Scenes in beats and bars on the frame clock: a duration in bars ends on the beat at the live
tempo, follows tempo changes, lands on a whole beat after a jump off the beat, a crossfade in beats
lasts its beats, and a performance's tempo changes replay from its automation with the same cuts."""

from __future__ import annotations

import pytest

from test_show import write_show
from unstable.control.store import ParameterStore
from unstable.errors import ConfigError
from unstable.frame.automation import load_automation
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings, load_show
from unstable.tempo import tempo_specs

FPS = 10


def timeline(scenes, bpm=120.0):
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(len(scenes)) + tempo_specs(bpm)})
    return ShowTimeline(scenes, store, ["eq"], FPS)


def changes(tl, frames, at=None):
    """Frames where the scene changed; `at` {frame: callable(tl)} runs before that frame."""
    out, last = [], tl.director.current
    for n in range(frames):
        if at and n in at:
            at[n](tl)
        tl.advance(n)
        if tl.director.current != last:
            out.append(n)
            last = tl.director.current
    return out


BEAT_SCENES = [SceneSettings(name="a", duration=2.0, duration_beats=4.0, crossfade=0.0),
               SceneSettings(name="b", duration=0.0, crossfade=0.0)]


def test_a_duration_in_beats_ends_on_its_beat_and_follows_the_tempo():
    assert changes(timeline(BEAT_SCENES), 40) == [20]                 # 4 beats at 120 BPM: 2 s
    assert changes(timeline(BEAT_SCENES, bpm=60.0), 60) == [40]       # at 60 BPM: 4 s
    # Half way (beat 2 at 1 s) the band slows to 60: the last 2 beats take 2 s.
    slow = {10: lambda tl: tl.store.set(SHOW, "tempo", 60.0, origin=("link", 0))}
    assert changes(timeline(BEAT_SCENES), 60, slow) == [30]


def test_a_scene_started_off_the_beat_ends_on_a_whole_beat():
    scenes = [SceneSettings(name="a", crossfade=0.0), *BEAT_SCENES]
    jump = {3: lambda tl: tl.store.set(SHOW, "scene", 1, origin=("127.0.0.1", 9))}  # beat 0.6
    # Scene 1 starts at frame 3 (beat 0.6): 4 beats reach 4.6, the next whole beat is 5 (2.5 s).
    assert changes(timeline(scenes), 40, jump) == [3, 25]


def test_a_crossfade_in_beats_lasts_its_beats_at_the_tempo_it_starts_at():
    scenes = [SceneSettings(name="a", crossfade=0.0),
              SceneSettings(name="b", crossfade=1.0, crossfade_beats=4.0)]
    tl = timeline(scenes, bpm=240.0)                                 # 4 beats at 240 BPM: 1 s
    tl.store.set(SHOW, "tempo", 240.0)
    tl.advance(0)
    tl.store.set(SHOW, "scene", 1, origin=("127.0.0.1", 9))
    mixes = [tl.advance(n).scenes for n in range(1, 13)]
    assert tl.director.fade_len == pytest.approx(1.0)
    assert mixes[5] == (0, 1, pytest.approx(0.5))                   # frame 6: half way
    assert mixes[11][1] is None                                     # done by frame 12


def test_tempo_changes_are_automation_and_replay_with_the_same_cuts(tmp_path):
    scenes = [SceneSettings(name=n, duration=1.0, duration_beats=2.0, crossfade=0.0) for n in "abc"]
    live = timeline(scenes)
    path = tmp_path / "live.automation.jsonl"
    live.start_recording(path, "show", 0)
    tempos = {7: 90.0, 19: 150.0, 31: 75.0}
    cuts = changes(live, 60, {n: (lambda tl, b=b: tl.store.set(SHOW, "tempo", b, origin=("link", 0)))
                              for n, b in tempos.items()})
    live.stop_recording()
    again = timeline(scenes)
    first = again.replay(load_automation(path))
    assert first == 0
    # By hand: 2 beats from 0 at 120 BPM, 90 from beat 1.4 (frame 7): beat 2 at 1.1 s; from beat 2,
    # 150 from beat 3.2 (frame 19): beat 4 at 2.22 s -> frame 23 (beat 4.2, so its end is beat 7);
    # 75 from beat 6.2 (frame 31): beat 7 at 3.74 s -> frame 38.
    assert cuts == [11, 23, 38]
    assert changes(again, 60) == cuts


SHOW_TEXT = """\
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0"]
[tempo]
bpm = 90
beats_per_bar = 3
[[scenes]]
duration = "2 bars"
crossfade = "1 beat"
[[scenes]]
duration = 12.5
"""


def test_show_files_take_beats_and_bars_and_refuse_anything_else_in_one_line(tmp_path):
    show = load_show(write_show(tmp_path, SHOW_TEXT))
    a, b = show.settings.scenes
    assert (a.duration_beats, a.duration, a.crossfade_beats, a.crossfade) == (6.0, 4.0, 1.0, pytest.approx(2 / 3))
    assert (b.duration_beats, b.duration) == (0.0, 12.5)
    for text, key in [(SHOW_TEXT.replace('"2 bars"', '"2 barz"'), "scenes[0].duration"),
                      (SHOW_TEXT.replace('"1 beat"', '"soon"'), "scenes[0].crossfade")]:
        with pytest.raises(ConfigError) as info:
            load_show(write_show(tmp_path, text, name="bad.toml"))
        msg = str(info.value)
        assert key in msg and "bad.toml" in msg and "\n" not in msg, msg


def test_link_alignment_puts_the_show_on_the_sessions_beat_and_replays_from_the_automation(tmp_path):
    from unstable.tempo import TempoLink
    scenes = [SceneSettings(name=n, duration=1.0, duration_beats=4.0, crossfade=0.0) for n in "ab"]
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(2) + tempo_specs(120.0, link=True)})
    live = ShowTimeline(scenes, store, ["eq"], FPS)
    path = tmp_path / "live.automation.jsonl"
    live.start_recording(path, "show", 0)
    link = TempoLink(store)

    class Session:  # a Link session whose bar started 1.5 beats before the show's frame 0
        beat = 0.0
    link.link = Session()
    cuts, last = [], 0
    for n in range(40):
        if n == 3:  # the show's beat is 0.6 at frame 3; the session's is 0.6 + 1.5
            Session.beat = 2.1
            assert link.align(live.beats.ahead(0.3), 4) == pytest.approx(1.5)
            assert link.align(live.beats.ahead(0.3) + 1.5, 4) is None        # on it already: nothing
        live.advance(n)
        if live.director.current != last:
            cuts.append(n)
            last = live.director.current
    live.stop_recording()
    # From frame 3 the count is the session's: scene a (4 beats from beat 0) ends at session beat 4,
    # which is show time (4 - 1.5) / 2 s = 1.25 s -> frame 13 (not 20); b starts at beat 4.1 and
    # ends on the whole beat 9 (4 beats on, rounded up onto the session's beat): 3.75 s -> frame 38.
    assert cuts == [13, 38]
    again = ShowTimeline(scenes, ParameterStore({"eq": common_specs(), SHOW: show_specs(2) + tempo_specs(120.0, True)}),
                         ["eq"], FPS)
    again.replay(load_automation(path))
    replayed, last = [], 0
    for n in range(40):
        again.advance(n)
        if again.director.current != last:
            replayed.append(n)
            last = again.director.current
    assert replayed == cuts
