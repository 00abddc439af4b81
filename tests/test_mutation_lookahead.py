"""What the mutation run of frame/lookahead.py found unpinned (scripts/mutation.sh lookahead;
docs/mutation.md, fourth session)."""

from __future__ import annotations

import pytest
import torch

from unstable.frame.lookahead import LookAhead
from unstable.frame.sources import PanelSource
from unstable.frame.timeline import FrameState
from unstable.schema import CLOCK, COMPOSITOR, SAMPLING, TRAINING
from unstable.walk import Walk, WalkSettings

PANELS = {"eq/g0": "g0", "eq/g1": "g1"}


class PixelSampler:
    """A generator stand-in whose picture of a latent is the latent itself, row by row, moved by
    the temperature: batched and one-at-a-time calls give the same pictures exactly, so the
    batching policy is what these tests see. Records every call as (panels, rows, params)."""

    def __init__(self):
        self.calls = []

    def sample(self, latents, params):
        first = next(iter(latents.values()))
        self.calls.append((tuple(sorted(latents)), first.shape[0], dict(params)))
        t = float(params.get("temperature", 0.0))
        return {q: (z[:, :3, None, None] + t).expand(-1, 3, 2, 2).clone() for q, z in latents.items()}  # [T, 3, 2, 2]


def source():
    walk = Walk(WalkSettings(keyframes=3, period=0.5), {d: 4 for d in PANELS})
    sampler = PixelSampler()
    return PanelSource("eq", None, sampler, walk, dict(PANELS)), sampler


def walk_time(frame):
    return frame / 10


def walk_ahead(name, frames):
    return [walk_time(f) for f in frames]


def reference(src, frame, params, scale=None):
    """The pictures of `frame` sampled alone (by a source of its own: the tests count `src`'s calls)."""
    src = PanelSource("eq", None, PixelSampler(), src.walk, dict(PANELS))
    z = src.latents([walk_time(frame)], None if scale is None else [scale])
    return {d: img[0] for d, img in src.sample(z, params).items()}


def test_a_size_below_one_is_refused_by_name_and_one_samples_frame_by_frame():
    with pytest.raises(ValueError) as info:
        LookAhead(0, list(PANELS), walk_ahead)
    assert str(info.value) == "look-ahead size 0: expected at least 1 frame"
    src, sampler = source()
    la = LookAhead(1, list(PANELS), walk_ahead)
    for n in range(5):
        la.images("eq", src, n, walk_time(n), {"temperature": 1.0}, {}, list(PANELS))
    assert (la.calls, la.sampled) == (5, 10) and {c[1] for c in sampler.calls} == {1}


def test_primed_frames_are_twice_a_group_less_one():
    assert [LookAhead.primed_frames(s) for s in (0, 1, 2, 3, 4, 8)] == [0, 0, 2, 4, 6, 14]


def test_groups_are_staggered_per_display_and_aligned_for_a_known_timeline():
    staggered = LookAhead(4, ["a", "b", "c"], walk_ahead)
    assert staggered.offset == {"a": 0, "b": 1, "c": 2}
    assert [list(staggered.group("a", f)) for f in (0, 3, 5)] == [[0, 1, 2, 3], [3], [5, 6, 7]]
    assert [list(staggered.group("c", f)) for f in (0, 2, 5)] == [[0, 1], [2, 3, 4, 5], [5]]
    assert [list(staggered.group("b", f)) for f in (0, 1, 3)] == [[0], [1, 2, 3, 4], [3, 4]]
    assert list(staggered.group("unknown", 6)) == [6, 7]
    aligned = LookAhead(4, ["a", "b", "c"], walk_ahead, state_of=lambda f: None)
    assert aligned.offset == {"a": 0, "b": 0, "c": 0}
    assert LookAhead(3, [], walk_ahead).offset == {}


def test_the_key_is_the_sampling_parameters_sorted_as_floats():
    reads = {"eq": {"hue": COMPOSITOR, "alpha": TRAINING, "walk_speed": CLOCK, "temperature": SAMPLING}}
    la = LookAhead(2, list(PANELS), walk_ahead, reads)
    params = {"zeta": 1, "temperature": 2, "hue": 3.0, "alpha": 4.0, "walk_speed": 5.0}
    assert la.key("eq", params) == (("temperature", 2.0), ("zeta", 1.0))
    assert all(type(v) is float for _, v in la.key("eq", params))
    assert la.key("other", {"b": 1, "a": 2}) == (("a", 2.0), ("b", 1.0))  # unknown piece: all of them count
    # Gliding: a clock parameter moves the walk times to come, a compositor or training one nothing.
    assert la.gliding("eq", {"walk_speed": 1.0}, {"walk_speed": 2.0})
    assert la.gliding("eq", {"temperature": 1.0}, {"temperature": 2.0})
    assert not la.gliding("eq", {"hue": 1.0, "alpha": 0.5}, {"hue": 2.0, "alpha": 1.0})
    assert not la.gliding("eq", {"temperature": 1.0}, {"temperature": 1})
    assert la.gliding("other", {"hue": 1.0}, {"hue": 2.0}) and not la.gliding("other", {"hue": 1.0}, {})


def test_a_warmed_panel_is_sampled_to_the_end_of_its_own_group_and_used_there():
    src, sampler = source()
    la = LookAhead(4, list(PANELS), walk_ahead)  # g1's groups start at 2 mod 4
    params = {"temperature": 1.0}
    la.note("eq", params)
    la.warm("eq", src, "eq/g1", 7, params)  # g1's group from 7 is 7..9
    assert sampler.calls == [(("g1",), 3, params)]
    for n in (7, 8, 9):
        out = la.images("eq", src, n, walk_time(n), params, {}, ["eq/g1"])
        assert torch.equal(out["eq/g1"], reference(src, n, params)["eq/g1"]), n
    assert len(sampler.calls) == 1  # all three warmed frames came from the one call
    la.images("eq", src, 10, walk_time(10), params, {}, ["eq/g1"])
    assert sampler.calls[-1] == (("g1",), 4, params)  # the next group: 10..13


def aligned_states(curve_at=6, size=4, temperatures=None):
    """A render job's states, a pure function of the frame: temperature 1.0 before `curve_at`, then 2.0."""
    def state_of(f):
        temp = 1.0 if f < curve_at else 2.0
        return FrameState(f, f / 10, {"eq": {"temperature": temp, "hue": float(f)}}, (0, None, 0.0),
                          {"eq": walk_time(f)}, temperatures=({"eq": temperatures(f)} if temperatures else {}))
    return state_of


@pytest.mark.parametrize("curve_at, start, expected", [
    (6, 0, [(4, 1.0), (2, 1.0), (2, 2.0), (4, 2.0)]),   # 0-3 | 4-5, 6-7 | 8-11
    (6, 5, [(2, 1.0), (2, 2.0), (4, 2.0)]),
    (6, 6, [(2, 2.0), (4, 2.0)]),                      # 4-5 ends at the asked frame: not sampled
    (6, 7, [(2, 2.0), (4, 2.0)]),
    (6, 9, [(4, 2.0)]),
    (5, 4, [(1, 1.0), (3, 2.0), (4, 2.0)]),            # a run of one frame: 4 | 5-7
])
def test_aligned_groups_split_where_a_curve_moves_and_give_each_frame_its_own_picture(curve_at, start, expected):
    """Frames asked in order from `start`: each aligned group [4k, 4k + 4) is sampled once, in runs
    of equal sampling parameters (the curve moves at `curve_at`), runs that end by the asked frame
    left out; each picture is the one its frame samples alone."""
    state_of = aligned_states(curve_at)
    src, sampler = source()
    reads = {"eq": {"hue": COMPOSITOR, "temperature": SAMPLING}}
    la = LookAhead(4, list(PANELS), walk_ahead, reads, state_of=state_of)
    for n in range(start, 12):
        s = state_of(n)
        out = la.images("eq", src, n, s.walk_times["eq"], s.snapshot["eq"], {}, list(PANELS))
        want = reference(src, n, s.snapshot["eq"])
        for d in PANELS:
            assert torch.equal(out[d], want[d]), (start, n, d)
    assert [(c[1], c[2]["temperature"]) for c in sampler.calls] == expected
    assert all(c[0] == ("g0", "g1") for c in sampler.calls)  # one call for both panels
    assert (la.calls, la.sampled) == (len(expected), 2 * sum(r[0] for r in expected))


def test_aligned_groups_scale_each_frame_by_its_own_temperature():
    state_of = aligned_states(curve_at=99, temperatures=lambda f: 0.5 + 0.25 * f)
    src, sampler = source()
    la = LookAhead(4, list(PANELS), walk_ahead, {"eq": {"hue": COMPOSITOR}}, state_of=state_of)
    for n in range(2, 8):
        s = state_of(n)
        out = la.images("eq", src, n, s.walk_times["eq"], s.snapshot["eq"], {}, ["eq/g0"],
                        scale=s.temperatures["eq"])
        assert torch.equal(out["eq/g0"], reference(src, n, s.snapshot["eq"], scale=0.5 + 0.25 * n)["eq/g0"]), n
    assert [c[1] for c in sampler.calls] == [4, 4]  # 0-3 (2 and 3 kept), 4-7


def test_live_groups_of_a_changing_parameter_sample_one_frame_then_batch_again():
    src, sampler = source()
    la = LookAhead(4, ["eq/g0"], walk_ahead)
    p1, p2 = {"temperature": 1.0}, {"temperature": 2.0}
    for n, p in ((0, p1), (1, p1), (2, p1), (3, p2), (4, p2), (5, p2)):
        out = la.images("eq", src, n, walk_time(n), p, {}, ["eq/g0"])
        assert torch.equal(out["eq/g0"], reference(src, n, p)["eq/g0"]), n
    # 0: no frame before (alone); 1: 1-3; 3: changed (alone); 4: 4-7; 5 kept.
    assert [(c[1], c[2]["temperature"]) for c in sampler.calls] == [(1, 1.0), (3, 1.0), (1, 2.0), (4, 2.0)]


def test_a_live_group_at_a_given_scale_keeps_that_scale_and_frames_already_shown_are_not_kept():
    src, sampler = source()
    la = LookAhead(4, ["eq/g0"], walk_ahead)
    p = {"temperature": 1.0}
    la.note("eq", p)
    for n in range(4):
        out = la.images("eq", src, n, walk_time(n), p, {}, ["eq/g0"], scale=0.5)
        assert torch.equal(out["eq/g0"], reference(src, n, p, scale=0.5)["eq/g0"]), n
    assert [c[1] for c in sampler.calls] == [4]  # one group, its scale kept with each frame
    la.images("eq", src, 0, walk_time(0), p, {}, ["eq/g0"], scale=0.5)  # frame 0 again: not kept
    assert [c[1] for c in sampler.calls] == [4, 4]  # sampled again, with its group


def test_a_sampler_that_returns_too_few_images_is_named_with_its_counts():
    class Short(PixelSampler):
        def sample(self, latents, params):
            return {q: x[:1] for q, x in super().sample(latents, params).items()}

    src, _ = source()
    src.sampler = Short()
    la = LookAhead(3, ["eq/g0"], walk_ahead)
    la.note("eq", {})
    with pytest.raises(AssertionError, match=r"^eq/g0: 1 images for 3 frames$"):
        la.images("eq", src, 0, walk_time(0), {}, {}, ["eq/g0"])
