"""Sampling a few frames ahead (unstable.frame.lookahead): cheaper, and the same pictures.

The demo's grown equilibrium state (64 px generators, shipped in shows/demo.states) is used on
purpose: at that size a batch of 4 and 4 batches of 1 differ in a few uint8 pixels, so these tests
see a batch composed differently (tiny test generators do not).
"""

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
    walk = make_walk("eq", system, show.settings.walk, torch.device("cpu"), show.source)
    src = PanelSource("eq", system, system, walk, {"eq/g0": "g0", "eq/g1": "g1"})
    timeline = ShowTimeline(show.resolved_scenes(), ParameterStore(show_groups(show, systems)), ["eq"],
                            show.settings.fps)
    return timeline, FramePipeline({"eq": src}, show.resolved_scenes(), None, look_ahead=look_ahead,
                                   walk_ahead=timeline.walk_times_ahead)


def draw(timeline, pipe, frames, prime_from=None):
    out = {}
    for n in frames:
        state = timeline.advance(n)
        if prime_from is not None and n < prime_from[1]:
            if n >= prime_from[0]:
                pipe.prime(state)
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
    # Two panels in staggered groups of 4: g0 samples frames 0-3, 4-7, 8-11; g1 (groups start at
    # 2 mod 4) 0-1, 2-5, 6-9, 10-13. 7 calls instead of 24, and only frames 12-13 sampled ahead.
    assert (la.calls, la.sampled) == (7, 26)
    for n in frames:  # the same pictures as one frame at a time, up to a batch's rounding
        for d in a[n]:
            assert (a[n][d].int() - b[n][d].int()).abs().max() <= 1, (n, d)
    # A sampling parameter changed between frames: the next frame shows it, sampled anew.
    for t, p in ((timeline, pipe), (one_t, one)):
        t.store.set("eq", "temperature", 0.4)
    calls = la.calls
    a2, b2 = draw(timeline, pipe, [12]), draw(one_t, one, [12])
    assert la.calls > calls
    assert (a2[12]["eq/g0"].int() - b2[12]["eq/g0"].int()).abs().max() <= 1
    assert (a2[12]["eq/g0"].int() - a[11]["eq/g0"].int()).abs().max() > 10  # the temperature did change it


def test_a_render_that_starts_mid_group_makes_the_batches_of_one_from_the_start(grown):
    show, systems = grown
    whole = draw(*pipeline(show, systems, 4), range(16))
    # Frames 5.. in a fresh pipeline: frames 2..4 are primed (sampled, not kept as pictures).
    part = draw(*pipeline(show, systems, 4), range(16), prime_from=(2, 5))
    assert sorted(part) == list(range(5, 16))
    for n in part:
        for d in part[n]:
            assert torch.equal(part[n][d], whole[n][d]), f"frame {n} {d}"
