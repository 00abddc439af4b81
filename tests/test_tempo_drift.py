"""Link alignment takes the short way to the session's phase: a show whose count drifts back across
a bar line against the session is moved back a little, not a bar forward, so a scene in bars still
ends on its own bar (a step of almost a bar forward cut it a bar early). Beats on the frame clock,
a stand-in session whose beat the test sets (the real session: test_tempo_link_walk.py)."""

from __future__ import annotations

import pytest

from unstable.control.store import ParameterStore
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings
from unstable.tempo import TempoLink, tempo_specs

FPS = 10


class Session:
    beat = 0.0


def test_a_drift_back_across_the_bar_line_is_a_small_step_and_the_scene_ends_on_its_bar():
    scenes = [SceneSettings(name="a", duration=4.0, duration_beats=8.0, crossfade=0.0),   # two bars at 120
              SceneSettings(name="b", duration=0.0, crossfade=0.0)]
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(2) + tempo_specs(120.0, link=True)})
    live = ShowTimeline(scenes, store, ["eq"], FPS)
    link = TempoLink(store)
    link.link = Session()
    cut, offsets = None, []
    for n in range(60):
        t = n / FPS
        if n in (3, 10):   # the session a tenth of a beat ahead, then (drifted) a tenth behind
            Session.beat = live.beats.ahead(t) + (0.1 if n == 3 else -0.2)
            offsets.append(link.align(live.beats.ahead(t), 4))
        live.advance(n)
        if cut is None and live.director.current == 1:
            cut = n
    assert offsets[0] == pytest.approx(0.1) and offsets[1] == pytest.approx(-0.1)
    # Beat 8 of the count (0.1 beat back from where it would be: 0.05 s later) -> frame 41, not 21.
    assert cut == 41, cut


def test_an_offset_that_drifted_many_bars_is_kept_in_range_by_whole_bars():
    store = ParameterStore({SHOW: show_specs(1) + tempo_specs(120.0, link=True)})
    link = TempoLink(store)
    link.link = Session()
    store.set(SHOW, "beat_offset", 31.9)
    Session.beat = 0.5                      # a step of +0.5 would take it to 32.4, past the range
    want = link.align(0.0, 4)
    assert want == pytest.approx(28.4) and store.get(SHOW, "beat_offset") == pytest.approx(28.4)
