"""Details of the frame package that its mutation run found unpinned by tests/test_frame.py and
tests/test_lookahead.py: a show timeline continued from its resume_state() mid-crossfade, and
load_resume_state's bounds and missing parts."""

from __future__ import annotations

from unstable.control.store import ParameterStore
from unstable.display.layout import Colour, Layout
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings


def _timeline(scenes=3):
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(scenes)})
    looks = [SceneSettings(name=f"s{i}", crossfade=0.5 * (i + 1), layout=Layout(panels=("eq/g0",)),
                           colour=Colour(), params={"eq": {"hue": 20.0 * i}}) for i in range(scenes)]
    return ShowTimeline(looks, store, ["eq"], 10), store


def test_a_timeline_continued_from_its_state_mid_crossfade_runs_on_the_same():
    live, store = _timeline()
    for n in range(6):
        if n == 2:
            store.post_event("scene", 2.0)  # scene 2 fades in over 1.5 s: 15 frames
        live.advance(n)
    state = live.resume_state()
    assert state["scene"]["previous"] == 0 and state["scene"]["current"] == 2
    again, _ = _timeline()
    again.load_resume_state(state)
    ahead = [live.advance(n) for n in range(6, 20)]
    copied = [again.advance(n) for n in range(6, 20)]
    assert [s.scenes for s in copied] == [s.scenes for s in ahead]
    assert 0.0 < ahead[0].scenes[2] < 1.0 and ahead[0].scenes[:2] == (0, 2)  # still fading from 0 to 2
    assert [s.snapshot for s in copied] == [s.snapshot for s in ahead]


def test_load_resume_state_clamps_scene_numbers_and_skips_what_is_missing():
    live, _ = _timeline()
    live.load_resume_state({"scene": {"current": 9, "previous": -4, "started": 0.25, "fade_len": 2.0}})
    d = live.director
    assert (d.current, d.previous, d.started, d.fade_len) == (2, 0, 0.25, 2.0)
    live.load_resume_state({"scene": {"current": -1, "previous": 7}})
    assert (d.current, d.previous, d.started, d.fade_len) == (0, 2, 0.0, 0.0)
    live.load_resume_state({"scene": {"current": 1}})
    assert (d.current, d.previous) == (1, None)
    live.load_resume_state({})  # no store, scene or walk: nothing changes, nothing fails
    assert (d.current, d.previous) == (1, None)
    live.load_resume_state({"scene": {"previous": 2}})  # no current: the scene part is left alone
    assert (d.current, d.previous) == (1, None)


def test_load_resume_state_restores_the_walks_it_knows_past_one_it_does_not():
    live, _ = _timeline()
    live.advance(0)
    live.now = 4.0
    live.load_resume_state({"walk": {"gone": {"phase": 9.0, "speed": 9.0}, "eq": {"phase": 0.75, "speed": 2.0}}})
    clock = live.clocks["eq"]
    assert (clock.phase, clock.speed) == (0.75, 2.0)
    assert live.now == 4.0  # no "at": the timeline's own time stays
