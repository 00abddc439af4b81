"""The frame pipeline's clock-side pieces on their own: timers, the show timeline, automation."""

from fractions import Fraction

import pytest

from unstable.control.store import ParameterStore
from unstable.display.layout import Colour, Layout
from unstable.errors import ConfigError
from unstable.frame.automation import load_automation
from unstable.frame.timeline import ShowTimeline
from unstable.frame.timers import FrameTimer, WallTimer
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings


def test_frame_times_are_exact_fractions_rounded_once():
    t = FrameTimer("30000/1001")
    assert t.time_of(30000) == 1001.0
    assert all(t.time_of(n) == float(Fraction(n * 1001, 30000)) for n in (1, 7, 12345))
    with pytest.raises(ValueError):
        FrameTimer(0)


def test_a_late_frame_drops_the_slots_it_ran_into():
    now = [0.0]
    timer = WallTimer(10, time_source=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    timer.wait(0)
    now[0] += 0.02                        # frame 0 took 20 ms: on time
    assert timer.next_after(0) == 1 and timer.late == 0
    timer.wait(1)
    assert now[0] == pytest.approx(0.1)   # slept until frame 1 was due
    now[0] += 0.26                        # frame 1 overran slot 2 and more than half of slot 3
    assert timer.next_after(1) == 4 and timer.late == 1
    timer.wait(4)
    assert now[0] == pytest.approx(0.4)


def test_a_frame_a_little_late_is_followed_at_once_by_the_next_slot():
    now = [0.0]
    timer = WallTimer(10, time_source=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    now[0] = 0.14                         # frame 0 ended 40 ms into slot 1 (less than half a slot)
    assert timer.next_after(0) == 1 and timer.late == 0
    timer.wait(1)
    assert now[0] == pytest.approx(0.14)  # no sleep: frame 1 is drawn at once, catching up
    now[0] = 0.25                         # frame 1 ended exactly half a slot into slot 2
    assert timer.next_after(1) == 2 and timer.late == 0
    now[0] = 0.3501                       # frame 2 ended just past half of slot 3: slot 3 is dropped
    assert timer.next_after(2) == 4 and timer.late == 1
    strict = WallTimer(10, time_source=lambda: now[0], sleep=lambda s: None, catch_up=0.0)
    now[0] = strict.start + 0.1001        # no catch-up: any overrun drops the slot
    assert strict.next_after(0) == 2 and strict.late == 1
    with pytest.raises(ValueError):
        WallTimer(10, catch_up=1.0)


def timeline(loop=True):
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(2)})
    scenes = [SceneSettings(name="a", layout=Layout(panels=("eq/g0",)), colour=Colour()),
              SceneSettings(name="b", crossfade=0.5, layout=Layout(panels=("eq/g0",)), colour=Colour(),
                            params={"eq": {"hue": 40.0}})]
    return ShowTimeline(scenes, store, ["eq"], 10, loop=loop), store


def test_a_recording_started_mid_show_replays_exactly(tmp_path):
    live, store = timeline()
    for n in range(10):
        if n == 3:
            store.set("eq", "walk_speed", 2.5)
        live.advance(n)
    path = tmp_path / "a.automation.jsonl"
    live.start_recording(path, "show", 10)
    states = []
    for n in range(10, 30):
        if n == 12:
            store.set("eq", "hue", -90.0, origin=("127.0.0.1", 9))
        if n == 15:
            store.post_event("scene", 1.0)
        if n == 22:
            store.set(SHOW, "master_fade", 0.5)
        states.append(live.advance(n))
    live.stop_recording()

    auto = load_automation(path)
    assert auto.start_frame == 10 and auto.changes[15]["scenes"] == [1]
    again, _ = timeline()
    first = again.replay(auto)
    replayed = [again.advance(n) for n in range(first, 30)]
    for a, b in zip(states, replayed):
        assert (a.frame, a.t, a.snapshot, a.scenes, a.walk_times) == (b.frame, b.t, b.snapshot, b.scenes, b.walk_times)
    assert states[-1].snapshot["eq"]["hue"] != 0.0 and states[8].scenes[1] == 1  # it did change


def test_automation_files_are_checked_line_by_line(tmp_path):
    bad = tmp_path / "x.automation.jsonl"
    for text, where in (("", "line 1"), ("{}\n", "line 1"),
                        ('{"automation": 1, "fps": "10", "start_frame": 0, "state": {}}\n{"frame": 5}\n{"frame": 2}\n',
                         "line 3.frame"),
                        ('{"automation": 1, "fps": "10", "start_frame": 0, "state": {}}\n{"frame": 1, "set": {"eq": {"hue": "x"}}}\n',
                         "line 2.set.eq.hue")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            load_automation(bad)


def test_a_crossfade_runs_from_the_old_scene_to_the_new_at_every_mix(gl_ctx):
    """Sampled off the middle (0.2 and 0.8 of the way), where a mix turned the wrong way round
    shows the other scene: the timeline's mix and the composed pixels both go old -> new."""
    import numpy as np
    import torch

    from unstable.display.compositor import Compositor
    from unstable.frame.compose import Composer

    live, store = timeline()  # scene b: a crossfade of 0.5 s, at 10 fps 5 frames
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 4, 4).contiguous()
    blue = torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 4, 4).contiguous()
    comp = Compositor(gl_ctx, (8, 8))
    composer = Composer(comp, {"eq/g0": "eq"})
    looks = [(s.layout, s.colour) for s in live.director.scenes]
    live.advance(0)
    store.post_event("scene", 1.0)
    got = {}
    for n in range(1, 7):
        state = live.advance(n)  # the jump is taken at frame 1 (t = 0.1): mix 0 there
        a, b, mix = state.scenes
        if b is None:
            got[n] = (None, None)
            continue
        # Scene a shows a red picture, scene b a blue one: the mix is the share of blue.
        composer.render({"eq/g0": red}, {}, looks[a], looks[b], mix, next_images={"eq/g0": blue})
        got[n] = (round(mix, 6), comp.read()[4, 4].astype(int).tolist())
        assert (a, b) == (0, 1)
    assert got[2][0] == pytest.approx(0.2) and got[3][0] == pytest.approx(0.4) and got[5][0] == pytest.approx(0.8)
    for n in (2, 3, 4, 5):
        mix, pixel = got[n]
        assert abs(pixel[0] - 255 * (1 - mix)) <= 2 and abs(pixel[2] - 255 * mix) <= 2, (n, mix, pixel)
    assert got[6] == (None, None)  # done: scene b alone
    comp.release()
