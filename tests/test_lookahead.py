"""Sampling a few frames ahead (unstable.frame.lookahead): cheaper, and the same pictures.

The demo's grown equilibrium state (64 px generators, shipped in shows/demo.states) is used on
purpose: at that size a batch of 4 and 4 batches of 1 differ in a few uint8 pixels, so these tests
see a batch composed differently (tiny test generators do not).
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from unstable.control.store import ParameterStore
from unstable.frame.pipeline import FramePipeline
from unstable.frame.sources import PanelSource, load_run_into, make_walk
from unstable.frame.timeline import ShowTimeline
from unstable.live.pieces import build_systems, show_groups
from unstable.show import load_show
from unstable.walk import WalkClock

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "shows" / "demo.states" / "eq.pt"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_walk_clock_predicts_its_own_ticks_bit_for_bit():
    now = [0.0]
    clock = WalkClock(speed=1.37, phase=0.1, time_source=lambda: now[0])
    times = [k / 30 for k in range(1, 40)]
    predicted = clock.ahead(times)
    ticks = []
    for t in times:
        now[0] = t
        clock.speed = 1.37  # what the timeline does every frame
        ticks.append(clock.tick())
    assert predicted == ticks  # exact float equality, not approx


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show")
    show_path = folder / "show.toml"
    show_path.write_text(f'size = [256, 128]\nfps = 30\n[pieces.eq]\npiece = "{ROOT}/pieces/equilibrium-1-1.toml"\n'
                         '[layout]\npanels = ["eq/g0", "eq/g1"]\n[walk]\nkeyframes = 4\nperiod = 0.4\n')
    show = load_show(show_path)
    systems = build_systems(show, torch.device("cpu"))
    load_run_into(systems["eq"], STATE, torch.device("cpu"))
    return show, systems


def pipeline(show, systems, look_ahead):
    """A timeline and a pipeline over the grown piece (no compositor: these tests sample only)."""
    system = systems["eq"]
    walk = make_walk("eq", system, show.settings.walk, torch.device("cpu"), show.show_file)
    src = PanelSource("eq", system, system, walk, {"eq/g0": "g0", "eq/g1": "g1"})
    timeline = ShowTimeline(show.resolved_scenes(), ParameterStore(show_groups(show, systems)), ["eq"],
                            show.settings.fps)
    return timeline, FramePipeline({"eq": src}, show.resolved_scenes(), None, look_ahead=look_ahead,
                                   walk_ahead=timeline.walk_times_ahead)


def draw(timeline, pipe, frames, prime_from=None):
    """Frames' pictures as uint8; prime_from = (a, k): start drawing at k, noting frame a - 1 and
    sampling frames a .. k - 1 first (what a render part starting at k does)."""
    out = {}
    for n in frames:
        state = timeline.advance(n)
        if prime_from is not None and n < prime_from[1]:
            if n >= prime_from[0] - 1:
                pipe.prime(state, sample=n >= prime_from[0])
            continue
        out[n] = {d: (x * 255 + 0.5).floor().to(torch.uint8) for d, x in pipe.images(state).items()}
    return out


def test_look_ahead_samples_in_batches_and_changes_show_the_next_frame(grown):
    show, systems = grown
    timeline, pipe = pipeline(show, systems, 4)
    one_t, one = pipeline(show, systems, 1)
    frames = range(12)
    a, b = draw(timeline, pipe, frames), draw(one_t, one, frames)
    la = pipe.look_ahead
    # Two panels in staggered groups of 4. Frame 0 has no frame before it, so it is sampled alone
    # (one call for both panels); then g0 samples frames 1-3, 4-7, 8-11 and g1 (groups start at
    # 2 mod 4) frame 1, 2-5, 6-9, 10-13: 8 calls instead of 24, only frames 12-13 sampled ahead.
    assert (la.calls, la.sampled) == (8, 26)
    for n in frames:  # the same pictures as one frame at a time, up to a batch's rounding
        for d in a[n]:
            assert (a[n][d].int() - b[n][d].int()).abs().max() <= 1, (n, d)
    # A sampling parameter changed between frames: the next frame shows it, sampled anew, alone
    # (a controller moving a fader every frame must not cost a batch a frame).
    for t, p in ((timeline, pipe), (one_t, one)):
        t.store.set("eq", "temperature", 0.4)
    calls, sampled = la.calls, la.sampled
    a2, b2 = draw(timeline, pipe, [12]), draw(one_t, one, [12])
    assert (la.calls - calls, la.sampled - sampled) == (1, 2)
    assert (a2[12]["eq/g0"].int() - b2[12]["eq/g0"].int()).abs().max() <= 1
    assert (a2[12]["eq/g0"].int() - a[11]["eq/g0"].int()).abs().max() > 10  # the temperature did change it


def test_a_render_that_starts_mid_group_makes_the_batches_of_one_from_the_start(grown):
    show, systems = grown
    whole = draw(*pipeline(show, systems, 4), range(16))
    # Frames 5.. in a fresh pipeline: frame 1 noted, frames 2..4 primed (sampled, not kept as pictures).
    # (Fewer than LookAhead.primed_frames: without scene changes the last size - 1 frames suffice.)
    part = draw(*pipeline(show, systems, 4), range(16), prime_from=(2, 5))
    assert sorted(part) == list(range(5, 16))
    for n in part:
        for d in part[n]:
            assert torch.equal(part[n][d], whole[n][d]), f"frame {n} {d}"


def scene_pipeline(systems, look_ahead, second_params="", duration=0.3):
    """Scene 1 shows eq/g0 for `duration` s, scene 2 (crossfading in) also eq/g1."""
    show_path = Path(systems["folder"]) / f"scenes{look_ahead}{abs(hash(second_params))}.toml"
    show_path.write_text(
        f'size = [256, 128]\nfps = 30\n[pieces.eq]\npiece = "{ROOT}/pieces/equilibrium-1-1.toml"\n'
        '[layout]\npanels = ["eq/g0"]\n[walk]\nkeyframes = 4\nperiod = 0.4\n'
        f'[[scenes]]\nduration = {duration}\n[[scenes]]\nduration = 0\ncrossfade = 0.1\n'
        f'layout = {{panels = ["eq/g0", "eq/g1"]}}\n{second_params}')
    show = load_show(show_path)
    return pipeline(show, {"eq": systems["eq"]}, look_ahead)


@pytest.fixture(scope="module")
def grown_with_folder(grown, tmp_path_factory):
    return {"eq": grown[1]["eq"], "folder": str(tmp_path_factory.mktemp("scenes"))}


def calls_per_frame(timeline, pipe, frames):
    out, pictures = {}, {}
    for n in frames:
        before = pipe.look_ahead.calls if pipe.look_ahead else 0
        state = timeline.advance(n)
        pictures[n] = {d: (x * 255 + 0.5).floor().to(torch.uint8) for d, x in pipe.images(state).items()}
        out[n] = (pipe.look_ahead.calls if pipe.look_ahead else 0) - before
    return out, pictures


def test_a_scheduled_scene_change_is_announced_on_the_frame_it_happens():
    from unstable.frame.scenes import SceneDirector
    from unstable.show import SceneSettings
    for fps, duration in ((30, 0.3), (30, 0.1), (24, 1 / 3), (25, 0.7), (60, 0.05)):
        scenes = [SceneSettings(duration=duration), SceneSettings(duration=duration)]
        timeline = ShowTimeline([s for s in scenes], ParameterStore({}), [], fps, loop=False)
        announced, changed = {}, []
        for n in range(int(3 * duration * fps) + 10):
            state = timeline.advance(n)
            if state.upcoming is not None:
                announced.setdefault(state.upcoming, n)
            if state.scenes[0] != 0 or state.scenes[1] is not None:
                changed.append(n)
        first = changed[0]
        # Announced the frames before, with the very frame the director then changes on.
        assert list(announced) == [(first, 1)], (fps, duration, announced, first)
        assert first - announced[(first, 1)] == min(first, ShowTimeline.UPCOMING_FRAMES)
    # The last scene of a show that does not loop holds: nothing is announced.
    director = SceneDirector([SceneSettings(duration=1.0)], ParameterStore({}), loop=False)
    assert director.scheduled() is None


def test_panels_a_scheduled_scene_brings_in_are_sampled_in_the_frames_before_it(grown_with_folder):
    frames = range(16)
    timeline, pipe = scene_pipeline(grown_with_folder, 4)
    one_t, one = scene_pipeline(grown_with_folder, 1)
    calls, a = calls_per_frame(timeline, pipe, frames)
    _, b = calls_per_frame(one_t, one, frames)
    # Scene 2 starts at frame 9 and brings eq/g1 in. eq/g0's groups (offset 0 of 4) start at 8 and
    # 12, eq/g1's at 2 mod 4: g1's first group (frames 9) was sampled on frame 8 with g0's, so
    # the change frame samples nothing at all.
    assert "eq/g1" not in a[8] and "eq/g1" in a[9]
    assert calls[8] == 2 and calls[9] == 0, calls
    for n in frames:  # and the pictures are those of one frame at a time
        for d in a[n]:
            assert (a[n][d].int() - b[n][d].int()).abs().max() <= 1, (n, d)
    # A scene whose preset changes a sampling parameter: the preset reaches the snapshot from the
    # frame after the change (as every jump's does), whose key then differs from what was sampled
    # ahead: it samples anew, one frame at a time while the temperature glides.
    timeline, pipe = scene_pipeline(grown_with_folder, 4, "[scenes.params.eq]\ntemperature = 0.4\n")
    one_t, one = scene_pipeline(grown_with_folder, 1, "[scenes.params.eq]\ntemperature = 0.4\n")
    calls, a = calls_per_frame(timeline, pipe, frames)
    _, b = calls_per_frame(one_t, one, frames)
    assert calls[9] == 0 and all(calls[n] == 1 for n in range(10, 16)), calls
    for n in frames:
        for d in a[n]:
            assert (a[n][d].int() - b[n][d].int()).abs().max() <= 1, (n, d)


def test_a_render_that_starts_near_a_scene_change_makes_the_batches_of_one_from_the_start(grown_with_folder):
    # Scene 1 shows nothing, scene 2 (from frame 9) both panels: eq/g0 is sampled ahead on frame 8
    # and eq/g1 on frame 7, each for its group from frame 9 on. A render part that starts anywhere
    # around the change, having primed the LookAhead.primed_frames frames before its start, draws
    # the pictures of the whole render bit for bit.
    from unstable.frame.lookahead import LookAhead

    def make():
        timeline, pipe = scene_pipeline(grown_with_folder, 4, duration=0.3)
        timeline.director.scenes[0] = dataclasses.replace(
            timeline.director.scenes[0], layout=dataclasses.replace(timeline.director.scenes[0].layout, panels=("",)))
        pipe.scenes[0] = timeline.director.scenes[0]
        return timeline, pipe

    frames = range(20)
    timeline, pipe = make()
    calls, whole = calls_per_frame(timeline, pipe, frames)
    assert whole[8] == {} and set(whole[9]) == {"eq/g0", "eq/g1"}
    assert calls[7] == 1 and calls[8] == 1 and calls[9] == 0, calls  # both sampled ahead
    primed = LookAhead.primed_frames(4)
    for k in range(5, 15):
        part = draw(*make(), frames, prime_from=(max(0, k - primed), k))
        for n in part:
            for d in part[n]:
                assert torch.equal(part[n][d], whole[n][d]), f"part from {k}: frame {n} {d}"
