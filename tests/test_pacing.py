"""Paced background work (unstable.pacing): a live refresh's worker computes in slices with sleeps
between, the numbers it computes are those of an unpaced computation, and the computations a show
waits for at open (no frame is drawn meanwhile) are not paced."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from unstable import pacing
from unstable.live.mirror import REFRESH_DUTY, SamplingMirror
from unstable.system import build_system, piece_from_dict

from test_actions_offthread import PARAMS, TINY, _latents, _settle


class FakeTime:
    """A clock that only the work and the sleeps move."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_a_pacer_sleeps_three_times_its_work_at_a_quarter_duty_once_a_slice_is_done():
    t = FakeTime()
    pacer = pacing.Pacer(0.25, 0.004, clock=t.clock, sleep=t.sleep)
    with pacing.paced(pacer):
        t.now += 0.001
        pacing.tick()            # 1 ms worked: under a slice, no sleep
        assert t.sleeps == []
        t.now += 0.004
        pacing.tick()            # 5 ms worked since the slice began: 15 ms of sleep
        assert t.sleeps == [pytest.approx(0.015)]
        t.now += 0.002
        pacing.tick()            # a new slice began after the sleep: 2 ms, no sleep
        assert len(t.sleeps) == 1
    assert pacer.ticks == 3 and pacer.slept == pytest.approx(0.015)
    # Over a long run the work is a quarter of the wall time.
    start, worked = t.now, 0.0
    with pacing.paced(pacer):
        for _ in range(1000):
            t.now += 0.0013
            worked += 0.0013
            pacing.tick()
    assert worked / (t.now - start) == pytest.approx(0.25, abs=0.02)


def test_tick_is_a_no_op_on_a_thread_without_a_pacer_and_blocks_nest():
    t = FakeTime()
    outer = pacing.Pacer(0.5, 0.001, clock=t.clock, sleep=t.sleep)
    inner = pacing.Pacer(1.0, 0.001, clock=t.clock, sleep=t.sleep)  # duty 1: never sleeps
    pacing.tick()  # nothing installed: returns at once
    with pacing.paced(outer):
        with pacing.paced(inner):
            t.now += 1.0
            pacing.tick()
        assert t.sleeps == [] and inner.ticks == 1
        t.now += 0.002
        pacing.tick()  # the outer pacer again
        assert outer.ticks == 1 and t.sleeps
    seen = []

    def other():  # another thread is not paced by this one's pacer
        with pacing.paced(outer):
            pass
        seen.append(getattr(pacing._local, "pacer", None))

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert seen == [None]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_pacer_refuses_a_duty_outside_zero_to_one(bad):
    with pytest.raises(ValueError, match="duty"):
        pacing.Pacer(bad)


def _mirror():
    torch.manual_seed(0)
    system = build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))
    return system, SamplingMirror(system, refresh_interval=0.0)


def test_a_live_refresh_is_paced_and_computes_what_an_unpaced_one_does(one_torch_thread):
    system, mirror = _mirror()
    z = _latents(system)
    assert mirror.wait_computed(60.0)  # the first computations, as a show opening waits for them
    _settle(mirror, z)
    assert mirror.refresh_pacer.slept == 0.0  # nothing was drawn meanwhile: not paced
    first = {k: v.clone() for k, v in system.bender.clusters.items()}
    with torch.no_grad():  # other weights: the clusters move
        for p in system.generators[0].parameters():
            p.add_(torch.randn_like(p) * 0.3)
    mirror.sync()
    pacer = mirror.refresh_pacer
    asleep = [0.0]  # how long its sleeps really took (a busy machine wakes a thread late)

    def timed_sleep(seconds):
        t = time.perf_counter()
        time.sleep(seconds)
        asleep[0] += time.perf_counter() - t

    pacer._sleep = timed_sleep
    before = mirror.refresh_seconds
    mirror.refresh("clusters")
    mirror.refresh("directions")
    _settle(mirror, z)
    worked = mirror.refresh_seconds - before - asleep[0]
    assert pacer.ticks > 50, pacer.ticks  # every layer, chunk and k-means iteration ticks
    # Paced: it slept (1 - duty) / duty of each slice it worked, however busy the machine was.
    assert pacer.slept > 0.5 * worked * (1 - REFRESH_DUTY) / REFRESH_DUTY, (pacer.slept, worked)
    paced_clusters = dict(system.bender.clusters)
    assert paced_clusters.keys() == first.keys()
    # The same labels an unpaced computation on the same weights gives (here, on this thread).
    install = mirror.system.sampling_copy().recompute("clusters", PARAMS)  # install(found), not called
    computed = install.args[0]
    assert computed.keys() == paced_clusters.keys()
    for k, labels in computed.items():
        assert torch.equal(labels, paced_clusters[k]), k
    assert mirror.close()


def test_a_pacer_does_not_sleep_while_its_unpaced_condition_holds():
    t = FakeTime()
    opening = [True]
    pacer = pacing.Pacer(0.25, 0.004, unpaced=lambda: opening[0], clock=t.clock, sleep=t.sleep)
    with pacing.paced(pacer):
        t.now += 0.010
        pacing.tick()
        assert t.sleeps == []
        opening[0] = False
        t.now += 0.002
        pacing.tick()  # the slice began at the last tick: 2 ms, under a slice
        assert t.sleeps == []
        t.now += 0.003
        pacing.tick()
        assert t.sleeps == [pytest.approx(0.015)]
