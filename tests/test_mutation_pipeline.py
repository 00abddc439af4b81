"""What the mutation runs of frame/pipeline.py, cursor.py, job_timeline.py and timelapse.py found
unpinned (scripts/mutation.sh pipeline, job-timeline; docs/mutation.md, fourth session)."""

from __future__ import annotations

import logging
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from unstable.control.store import ParameterStore
from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout
from unstable.frame.cursor import FrameCursor
from unstable.frame.curves import ParamCurves
from unstable.frame.job_timeline import JobTimeline
from unstable.frame.pipeline import FramePipeline
from unstable.frame.sources import PanelSource
from unstable.frame.timeline import FrameState, ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.renderjob import FramePlan
from unstable.show import SceneSettings
from unstable.walk import Walk, WalkSettings

PANELS = {"eq/g0": "g0", "eq/g1": "g1", "eq/g2": "g2"}


class System:
    """A piece as the pipeline sees it: its parameters (the common ones) and a sampler whose
    picture of a latent is the latent itself (batched and single calls alike), failing on demand."""

    def __init__(self):
        self.calls = []
        self.fail = None

    def param_specs(self):
        return []

    def sample(self, latents, params):
        if self.fail is not None:
            raise self.fail
        self.calls.append((tuple(sorted(latents)), next(iter(latents.values())).shape[0]))
        return {q: z[:, :3, None, None].expand(-1, 3, 4, 4).clone() for q, z in latents.items()}  # [T, 3, 4, 4]


def scenes(*panel_lists):
    return [SceneSettings(name=f"s{i}", crossfade=0.0, layout=Layout(panels=tuple(p)), colour=Colour())
            for i, p in enumerate(panel_lists)]


def pipeline(scene_list, hold=False, look_ahead=1, walk_ahead=None, compositor=None):
    system = System()
    walk = Walk(WalkSettings(keyframes=3, period=0.5), {d: 4 for d in PANELS})
    src = PanelSource("eq", system, system, walk, dict(PANELS))
    return FramePipeline({"eq": src}, scene_list, compositor, hold_failures=hold, look_ahead=look_ahead,
                         walk_ahead=walk_ahead), system


def state(n, scene_pair=(0, None, 0.0), upcoming=None, params=None, targets=None):
    return FrameState(n, n / 10, {"eq": dict(params or {})}, scene_pair, {"eq": n / 10},
                      targets={"eq": dict(targets or {})}, upcoming=upcoming)


def walk_ahead(name, frames):
    return [f / 10 for f in frames]


def test_a_frame_shows_the_panels_of_both_scenes_of_a_crossfade_and_no_empty_cell():
    pipe, system = pipeline(scenes(["eq/g0", ""], ["eq/g1"], []))
    assert pipe.shown((0, None, 0.0)) == {"eq/g0"}
    assert pipe.shown((0, 1, 0.5)) == {"eq/g0", "eq/g1"}
    assert pipe.shown((2, None, 0.0)) == set(PANELS)  # a layout without panels shows them all
    assert sorted(pipe.images(state(0, (0, 1, 0.5)))) == ["eq/g0", "eq/g1"]
    assert system.calls == [(("g0", "g1"), 1)]


@pytest.fixture
def comp(gl_ctx):
    c = Compositor(gl_ctx, (16, 8))
    yield c
    c.release()


def test_a_source_failing_before_its_first_frame_shows_black_and_is_logged_at_1_and_every_1000th(caplog, comp):
    pipe, system = pipeline(scenes(["eq/g0", "eq/g1"]), hold=True, compositor=comp)
    system.fail = RuntimeError("x" * 300)
    with caplog.at_level(logging.ERROR, logger="unstable.frame"):
        first = pipe.frame(state(0))
        for n in range(1, 1000):
            res = pipe.frame(state(n))
    assert first.errors == {"eq": "RuntimeError: " + "x" * 200}
    black = first.images["eq/g0"]
    assert black.shape == (3, 8, 8) and not black.any() and res.images["eq/g1"] is black
    lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in lines] == [
        "sampling eq failed (1 frames in a row); its panels hold their last frame",
        "sampling eq failed (1000 frames in a row); its panels hold their last frame"]
    assert lines[0].exc_info and not lines[1].exc_info  # the traceback once
    system.fail = None
    good = pipe.frame(state(1000))
    assert good.errors == {} and good.images["eq/g0"].shape == (3, 4, 4)
    system.fail = ValueError("again")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="unstable.frame"):
        held = pipe.frame(state(1001))
    assert torch.equal(held.images["eq/g0"], good.images["eq/g0"])  # its last good image
    assert "(1 frames in a row)" in caplog.records[-1].getMessage()  # counted again from a good frame


def test_look_ahead_needs_more_than_one_frame_and_a_walk_prediction():
    assert pipeline(scenes(["eq/g0"]), look_ahead=4)[0].look_ahead is None
    assert pipeline(scenes(["eq/g0"]), look_ahead=1, walk_ahead=walk_ahead)[0].look_ahead is None
    la = pipeline(scenes(["eq/g0"]), look_ahead=4, walk_ahead=walk_ahead)[0].look_ahead
    assert la.size == 4 and la.offset == {"eq/g0": 0, "eq/g1": 1, "eq/g2": 2}
    assert la.key("eq", {"hue": 3.0, "temperature": 1.0}) == (("temperature", 1.0),)  # the schema's readers


def test_the_panels_a_scheduled_scene_brings_in_are_warmed_one_a_frame_before_it():
    pipe, system = pipeline(scenes(["eq/g0"], ["eq/g0", "eq/g1", "eq/g2"]), look_ahead=4, walk_ahead=walk_ahead)
    calls = {}
    for n in range(12):
        before = len(system.calls)
        pipe.images(state(n, upcoming=(10, 1) if n < 10 else None))
        calls[n] = system.calls[before:]
    # g1 at frame 9 (the change's frame - 1), g2 at frame 8 (beside g0's own group 8..11), each
    # its staggered group from frame 10: g1's 10..12, g2's 10..13.
    assert calls[8] == [(("g0",), 4), (("g2",), 4)] and calls[9] == [(("g1",), 3)]
    assert [c for n in (10, 11) for c in calls[n] if c[0] != ("g0",)] == []  # both ready at the change
    # Gliding: nothing warmed (its frames to come would sample other values).
    pipe, system = pipeline(scenes(["eq/g0"], ["eq/g0", "eq/g1"]), look_ahead=4, walk_ahead=walk_ahead)
    for n in range(10):
        pipe.images(state(n, upcoming=(10, 1), params={"temperature": 1.0}, targets={"temperature": 2.0}))
    assert all(c[0] == ("g0",) for c in system.calls)


def test_warming_that_fails_is_left_to_the_change_frame_live_and_raises_offline(comp):
    for hold in (True, False):
        pipe, system = pipeline(scenes(["eq/g0"], ["eq/g1"]), hold=hold, look_ahead=2, walk_ahead=walk_ahead,
                                compositor=comp)
        pipe.images(state(0))
        system.fail = RuntimeError("lost")
        if hold:
            res = pipe.frame(state(1, upcoming=(2, 1)))
            assert res.errors == {"eq": "RuntimeError: lost"}
        else:
            with pytest.raises(RuntimeError, match="lost"):
                pipe.images(state(1, upcoming=(2, 1)))


def test_priming_samples_or_notes_and_does_nothing_without_look_ahead():
    pipe, system = pipeline(scenes(["eq/g0"]))
    pipe.prime(state(0))
    assert system.calls == []
    pipe, system = pipeline(scenes(["eq/g0"]), look_ahead=4, walk_ahead=walk_ahead)
    pipe.prime(state(0, params={"temperature": 1.0}), sample=False)
    assert system.calls == []
    pipe.prime(state(1, params={"temperature": 1.0}))  # noted the same before: a batch, 1..3
    assert system.calls == [(("g0",), 3)]


def show_timeline():
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    return ShowTimeline(scenes(["eq/g0"]), store, ["eq"], 10)


def test_a_cursor_primes_the_frames_before_a_start_and_starts_over_to_go_back():
    made = []

    def make_pipeline(timeline):
        pipe, system = pipeline(scenes(["eq/g0"]), look_ahead=4, walk_ahead=timeline.walk_times_ahead)
        made.append(system)
        return pipe

    cursor = FrameCursor(show_timeline, make_pipeline, first=3)
    first_timeline = cursor.timeline
    s = cursor.state(10)
    assert (s.frame, cursor.timeline.timer.time_of(13)) == (13, s.t)
    # The 6 frames before render frame 10 primed (timeline frames 7..12, 6 noted): g0's groups of 4
    # from 7 (to its group's end), 8..11 and 12..15; render frame 10 (13) is then a kept picture.
    assert [c[1] for c in made[0].calls] == [1, 4, 4]
    assert cursor.state(11).frame == 14 and cursor.timeline is first_timeline
    cursor.state(2)
    assert cursor.timeline is not first_timeline and len(made) == 2  # back: a fresh timeline and pipeline
    # From 0 again: render frames 0 and 1 primed (3 alone, nothing noted before it; then 4..7).
    assert [c[1] for c in made[1].calls] == [1, 4]
    # A start whose first primed frame opens a group: the frame before it noted, so that frame
    # samples its whole group as a render from frame 0 does (4..7, 8..11), not alone.
    made.clear()
    FrameCursor(show_timeline, make_pipeline).state(10)
    assert [c[1] for c in made[0].calls] == [4, 4]


def test_a_cursor_adds_up_where_each_frames_time_went(comp):
    def make_pipeline(timeline):
        return pipeline(scenes(["eq/g0"]), compositor=comp)[0]

    cursor = FrameCursor(show_timeline, make_pipeline)
    assert (cursor.sample_seconds, cursor.compose_seconds) == (0.0, 0.0)
    results = [cursor.frame(k)[1] for k in range(3)]
    assert cursor.sample_seconds == pytest.approx(sum(r.sample_seconds for r in results))
    assert cursor.compose_seconds == pytest.approx(sum(r.compose_seconds for r in results))
    before = cursor.compose_seconds
    state, result = cursor.frame(3)
    cursor.compose(state, result, Colour(hue=90.0))  # one more variation of the same frame
    assert cursor.compose_seconds > before + result.compose_seconds



def job_plan(**kw) -> FramePlan:
    return FramePlan(**{**dict(frames=40, fps=Fraction(8), speed=Fraction(1, 2), start=Fraction(1, 4),
                               curve=((0.0, 1.0), (2.0, 3.0))), **kw})


def test_a_job_source_without_fixed_values_has_its_curves_and_predicts_its_own_walk():
    curves = ParamCurves({"eq.hue": ((0.0, 0.0), (2.0, 90.0)), "eq.walk_speed": ((0.0, 2.0),)}, Fraction(8))
    tl = JobTimeline(job_plan(), curves, {}, ["eq", "plain"])  # no fixed values for either
    s = tl.advance(8)  # video time 1 s
    assert s.snapshot == {"eq": {"hue": 45.0, "walk_speed": 2.0}, "plain": {}}
    # eq walks through its walk_speed curve (twice the plan's speed), plain on the plan.
    assert tl.walk_times_ahead("eq", [8, 16]) == [s.walk_times["eq"], tl.advance(16).walk_times["eq"]]
    assert s.walk_times["eq"] == pytest.approx(0.25 + 0.5 * 2.0 * 1.0)
    assert tl.walk_times_ahead("plain", [8]) == [Fraction(1, 4) + Fraction(1, 2)]


def test_a_timelapse_frame_keeps_its_number_time_and_parameters():
    curves = ParamCurves({"eq.hue": ((0.0, 0.0), (1.0, 80.0))}, Fraction(8))
    tl = JobTimeline(job_plan(frames=9, hold=3, checkpoints=3, crossfade=1), curves, {"eq": {"noise": 0.5}}, ["eq"],
                     timelapse_at=0.75)
    s = tl.advance(4)
    assert (s.frame, s.t) == (4, 0.5)
    assert s.snapshot == {"eq": {"noise": 0.5, "hue": 40.0}}


def test_a_frames_timings_are_parts_of_the_time_it_took(comp):
    pipe, _ = pipeline(scenes(["eq/g0"]), compositor=comp)
    for n in range(3):
        t0 = time.perf_counter()
        res = pipe.frame(state(n))
        took = time.perf_counter() - t0
        assert 0.0 < res.sample_seconds <= took and 0.0 < res.compose_seconds <= took
        assert res.sample_seconds + res.compose_seconds <= took


def test_a_variations_grade_reaches_both_scenes_of_a_crossfade_through_the_cursor(comp):
    """A render job's variation: `colour` replaces each scene's grade, the crossfade's second too."""
    grade = Colour(hue=120.0, saturation=0.5)
    looks = [SceneSettings(name="a", crossfade=0.0, layout=Layout(panels=("eq/g0",)), colour=Colour()),
             SceneSettings(name="b", crossfade=0.0, layout=Layout(panels=("eq/g1", "eq/g2")), colour=Colour(hue=-60.0))]
    graded = [SceneSettings(name=s.name, crossfade=0.0, layout=s.layout, colour=grade) for s in looks]
    fade = state(2, (0, 1, 0.25))
    want, _ = pipeline(graded, compositor=comp)
    want.frame(fade)
    expected = comp.read().copy()
    pipe, _ = pipeline(looks, compositor=comp)
    pipe.frame(fade)
    plain = comp.read().copy()
    pipe.frame(fade, colour=grade)
    assert np.array_equal(comp.read(), expected) and not np.array_equal(plain, expected)
    pipe.frame(state(2), colour=grade)  # the first scene alone: the crossfade did draw the second
    assert not np.array_equal(comp.read(), expected)

    class Fading:  # a timeline whose every frame is the same crossfade
        timer, state_of = None, None

        def advance(self, frame):
            return state(frame, (0, 1, 0.25))

    cursor = FrameCursor(Fading, lambda tl: pipeline(looks, compositor=comp)[0])
    s, result = cursor.frame(2, grade)
    assert np.array_equal(comp.read(), expected)
    cursor.compose(s, result)  # the same frame again, in the scenes' own grades
    assert np.array_equal(comp.read(), plain)
    cursor.compose(s, result, grade)
    assert np.array_equal(comp.read(), expected)
    before = cursor.compose_seconds
    t0 = time.perf_counter()
    cursor.compose(s, result, grade)
    assert 0.0 < cursor.compose_seconds - before <= time.perf_counter() - t0


def test_warming_a_piece_that_has_no_targets_this_frame():
    """The timeline's targets hold only the groups something moved towards: a piece at rest has none."""
    pipe, system = pipeline(scenes(["eq/g0"], ["eq/g0", "eq/g1"]), look_ahead=4, walk_ahead=walk_ahead)
    for n in range(10):
        s = state(n, upcoming=(10, 1), params={"temperature": 1.0})
        s.targets = {}
        pipe.images(s)
    assert (("g1",), 3) in system.calls  # warmed at frame 9


def test_more_new_panels_than_frames_of_lead_are_warmed_together_and_a_compositor_glide_does_not_stop_it():
    # Groups of 2 leave one frame of lead: both new panels are warmed in the frame before the change.
    pipe, system = pipeline(scenes(["eq/g0"], list(PANELS)), look_ahead=2, walk_ahead=walk_ahead)
    calls = {}
    for n in range(10):
        before = len(system.calls)
        pipe.images(state(n, upcoming=(10, 1)))
        calls[n] = [c[0] for c in system.calls[before:] if c[0] != ("g0",)]
    assert calls[9] == [("g1",), ("g2",)] and all(calls[n] == [] for n in range(9))
    # The hue (a compositor parameter) gliding changes no sample: the new panel is still warmed.
    pipe, system = pipeline(scenes(["eq/g0"], ["eq/g0", "eq/g1"]), look_ahead=4, walk_ahead=walk_ahead)
    for n in range(10):
        pipe.images(state(n, upcoming=(10, 1), params={"hue": 1.0}, targets={"hue": 2.0}))
    assert (("g1",), 3) in system.calls


def test_without_look_ahead_a_frame_is_sampled_alone_at_its_own_temperature():
    """`look_ahead` defaults to one frame a call, a walk prediction or not; a job's temperature
    (FrameState.temperatures) scales the walk's latents at temperature 1."""
    made, system = pipeline(scenes(["eq/g0"]))
    pipe = FramePipeline(made.sources, scenes(["eq/g0"]), None, walk_ahead=walk_ahead)  # look_ahead left out
    assert pipe.look_ahead is None
    s = state(2)
    s.temperatures = {"eq": 1.5}
    image = pipe.images(s)["eq/g0"]  # [3, 4, 4]
    z = pipe.sources["eq"].walk.latents_at_many([0.2], temperature=1.0)["eq/g0"][0, :3] * 1.5  # [3]
    torch.testing.assert_close(image, z[:, None, None].expand(3, 4, 4))
    assert system.calls == [(("g0",), 1)]


def two_pieces(scene_list, look_ahead=1):
    """A pipeline over pieces a and b, one panel each (a's first), and their systems."""
    systems = {"a": System(), "b": System()}
    sources = {n: PanelSource(n, s, s, Walk(WalkSettings(keyframes=3, period=0.5), {f"{n}/g0": 4}), {f"{n}/g0": "g0"})
               for n, s in systems.items()}
    return FramePipeline(sources, scene_list, None, look_ahead=look_ahead, walk_ahead=walk_ahead), systems


def both(n, scene_pair=(0, None, 0.0)):
    params = {"temperature": 1.0}
    return FrameState(n, n / 10, {"a": dict(params), "b": dict(params)}, scene_pair, {"a": n / 10, "b": n / 10},
                      targets={"a": {}, "b": {}})


def test_a_piece_not_shown_is_skipped_without_stopping_the_others_and_noted_for_when_it_comes_back():
    pipe, systems = two_pieces(scenes(["b/g0"]))
    assert sorted(pipe.images(both(0))) == ["b/g0"]
    assert (systems["a"].calls, systems["b"].calls) == ([], [(("g0",), 1)])
    # With look-ahead, a's parameters are noted while it is hidden: the cut that brings it in (no
    # warning ahead) finds them unchanged and samples its group (5..7), not one frame alone.
    pipe, systems = two_pieces(scenes(["b/g0"], ["a/g0", "b/g0"]), look_ahead=4)
    for n in range(5):
        pipe.images(both(n))
    assert systems["a"].calls == []
    pipe.images(both(5, (1, None, 0.0)))
    assert systems["a"].calls == [(("g0",), 3)]


def test_a_parameter_set_to_glide_samples_frame_by_frame_before_it_moves():
    """The frames to come will have other values: one frame a call, though this frame's key is the
    last one's."""
    pipe, system = pipeline(scenes(["eq/g0"]), look_ahead=4, walk_ahead=walk_ahead)
    for n in range(6):
        pipe.images(state(n, params={"temperature": 1.0}, targets={"temperature": 2.0}))
    assert system.calls == [(("g0",), 1)] * 6


def test_a_failing_warm_is_a_debug_line_naming_the_panel_with_its_traceback(caplog):
    pipe, system = pipeline(scenes(["eq/g0"], ["eq/g1"]), hold=True, look_ahead=2, walk_ahead=walk_ahead)
    pipe.images(state(0))
    system.fail = RuntimeError("lost")
    with caplog.at_level(logging.DEBUG, logger="unstable.frame"):
        pipe.images(state(1, upcoming=(2, 1)))
    lines = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert [r.getMessage() for r in lines] == ["sampling eq/g1 ahead of the scene change failed"]
    assert lines[0].exc_info[1] is system.fail
