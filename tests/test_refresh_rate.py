"""A refresh flood (`/unstable/<piece>/clusters/refresh` at 100/s) is one computation of each kind
every `[actions] refresh_min_interval` seconds, per piece: the first press acts at once, a press of
another kind is not held behind the first kind's interval, and the presses within an interval are
one computation when it ends. Each computation holds the GIL the render thread needs, so this is
what keeps a flood from costing frames (issue 23's soak: 149,000 refresh requests in 30 minutes
recomputed clusters and directions back to back)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import unstable.bending as bending
from unstable.errors import ConfigError
from unstable.instruments import Instrumented
from unstable.live.mirror import SamplingMirror
from unstable.show import load_show
from unstable.system import build_system, piece_from_dict

from test_actions_offthread import PARAMS, PIECE, SHOW, TINY

INTERVAL = 2.0


@pytest.fixture
def starts(monkeypatch):
    """(kind, monotonic time) of the start of every directions and clusters computation (the
    worker's `recompute` on its snapshot) and ('<kind> end', time) of its end."""
    seen: list[tuple[str, float]] = []
    recompute = Instrumented.recompute

    def traced(self, what, params):
        seen.append((what, time.monotonic()))
        try:
            return recompute(self, what, params)
        finally:
            seen.append((what + " end", time.monotonic()))

    monkeypatch.setattr(Instrumented, "recompute", traced)
    return seen


def _computations(starts, kind):
    """(start, end) of each computation of `kind`."""
    begun = [t for k, t in starts if k == kind]
    ended = [t for k, t in starts if k == kind + " end"]
    assert len(ended) == len(begun), (kind, len(begun), len(ended))
    return list(zip(begun, ended))


@pytest.mark.parametrize("load", ["idle", "cpu_hogs"])
def test_a_refresh_flood_is_one_computation_per_kind_per_interval_and_the_first_press_acts_at_once(
        starts, request, load):
    if load == "cpu_hogs":
        request.getfixturevalue("cpu_hogs")
    torch.manual_seed(0)
    system = build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))
    mirror = SamplingMirror(system)
    mirror.refresh_interval = INTERVAL
    z = {n: torch.randn(1, 8, generator=torch.Generator().manual_seed(1)) for n in system.panels()}
    assert mirror.wait_computed(60)
    mirror.sample(z, PARAMS)
    assert mirror.refresh_computations == 2  # the first directions and clusters, at once, together
    assert sorted(k for k, _ in starts if not k.endswith(" end")) == ["clusters", "directions"], starts
    starts.clear()
    time.sleep(INTERVAL + 0.2)  # quiet for longer than the interval: the next press acts at once

    pressed: dict[str, float] = {}  # each kind's first press
    last: dict[str, float] = {}  # and its last
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 0.75 * INTERVAL:  # a flood of both kinds at 100/s, frames between
        pressed.setdefault("clusters", time.monotonic())
        mirror.refresh("clusters")
        last["clusters"] = time.monotonic()
        if time.monotonic() - t0 > 0.15 * INTERVAL:
            pressed.setdefault("directions", time.monotonic())
            mirror.refresh("directions")
            last["directions"] = time.monotonic()
        if i % 5 == 0:
            mirror.sample(z, PARAMS)
        i += 1
        time.sleep(0.01)
    deadline = time.monotonic() + 60
    while mirror.refreshing():
        assert time.monotonic() < deadline, "the refreshes never finished"
        mirror.sample(z, PARAMS)
    mirror.sample(z, PARAMS)

    runs = {kind: _computations(starts, kind) for kind in ("clusters", "directions")}
    for kind, other in (("clusters", "directions"), ("directions", "clusters")):
        starts_ = [s for s, _ in runs[kind]]
        # At once for the first press of each kind, then everything pressed within the interval as
        # one computation when it ends. On a busy machine the other kind's computation can hold the
        # worker past this kind's last press: its first computation then covers every press.
        covered = len(starts_) == 1 and starts_[0] >= last[kind]
        assert len(starts_) == 2 or covered, (kind, [round(t - t0, 2) for t in starts_], round(last[kind] - t0, 2))
        # "At once": one worker computes both kinds, so a press may wait for the other kind's
        # computation under way (paced, it takes longer with CPU hogs beside it), never for the
        # other kind's interval. Measured from whichever is later: the press or the end of the
        # other kind's computation that ran between the press and this one's start. (A computation
        # starts after the worker wakes and takes its snapshot, which waits for a frame's sample:
        # a margin of half the interval.)
        busy_until = max([pressed[kind]] + [e for s, e in runs[other] if pressed[kind] <= e <= starts_[0]])
        assert starts_[0] - busy_until < 0.5 * INTERVAL, (kind, starts_[0] - pressed[kind], busy_until - pressed[kind])
        assert starts_[0] < runs[other][-1][0], (kind, "held behind the other kind's interval",
                                                 {k: round(t - t0, 2) for k, t in pressed.items()},
                                                 {k: [(round(s - t0, 2), round(e - t0, 2)) for s, e in r]
                                                  for k, r in runs.items()})
        if not covered:
            assert starts_[1] - starts_[0] >= 0.75 * INTERVAL, (kind, starts_[1] - starts_[0])
    computed = sum(len(r) for r in runs.values())
    assert mirror.refresh_computations == 2 + computed and mirror.refresh_errors == 0
    mirror.close()


def test_a_kind_whose_computation_outlasts_its_interval_does_not_go_again_before_the_other_kinds_press(
        starts, monkeypatch):
    """A busy machine: clusters take longer than the interval, a flood keeps asking for them, and
    directions are pressed meanwhile. When clusters end both kinds are due; directions, computed
    longest ago, go first (not clusters again, which would hold the press for a whole extra
    computation)."""
    torch.manual_seed(0)
    system = build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))
    mirror = SamplingMirror(system, refresh_duty=1.0)  # unpaced: the sleep below is the whole delay
    mirror.refresh_interval = 0.3
    z = {n: torch.randn(1, 8, generator=torch.Generator().manual_seed(1)) for n in system.panels()}
    assert mirror.wait_computed(60)
    mirror.sample(z, PARAMS)
    time.sleep(0.5)
    kmeans = bending.kmeans

    def slower(*a, **k):
        time.sleep(0.6)  # longer than the interval
        return kmeans(*a, **k)

    monkeypatch.setattr(bending, "kmeans", slower)
    starts.clear()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:  # a flood of clusters at 100/s, one press of directions
        mirror.refresh("clusters")
        if time.monotonic() - t0 > 0.1:
            mirror.refresh("directions")  # one computation asked for: the rest of these coalesce
        time.sleep(0.01)
    deadline = time.monotonic() + 60
    while mirror.refreshing():
        assert time.monotonic() < deadline, "the refreshes never finished"
        mirror.sample(z, PARAMS)
    kinds = [k for k, _ in starts if not k.endswith(" end")]  # the computations, in order
    # One clusters computation (the flood's first press, at once), then the directions; the
    # clusters asked for meanwhile come after them.
    assert kinds[:2] == ["clusters", "directions"], [(k, round(t - t0, 2)) for k, t in starts]
    assert "clusters" in kinds[2:], kinds
    assert mirror.refresh_errors == 0
    mirror.close()


def test_the_interval_is_the_shows_setting_five_seconds_by_default(tmp_path, one_torch_thread):
    from tqdm import tqdm

    from unstable.live import Engine
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "eq.toml").write_text(PIECE)
    (tmp_path / "show.toml").write_text(SHOW)
    assert load_show(tmp_path / "show.toml").settings.actions.refresh_min_interval == 5.0
    (tmp_path / "bad.toml").write_text(SHOW + "[actions]\nrefresh_min_interval = -1\n")
    with pytest.raises(ConfigError) as e:
        load_show(tmp_path / "bad.toml")
    assert "bad.toml" in str(e.value) and "refresh_min_interval" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "show.toml").write_text(SHOW + "[actions]\nrefresh_min_interval = 12.5\n")
    eng = Engine(load_show(tmp_path / "show.toml"), headless=True, osc_port=0, web_port=0, train=False,
                 run_dir=tmp_path / "run", echo=lambda line: None,
                 progress=lambda desc, total=None, **kw: tqdm(total=total, disable=True))
    with eng:
        assert eng.pieces["eq"].mirror.refresh_interval == 12.5
