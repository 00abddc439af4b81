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
import unstable.directions as directions
from unstable.errors import ConfigError
from unstable.live.mirror import SamplingMirror
from unstable.show import load_show
from unstable.system import build_system, piece_from_dict

from test_actions_offthread import PARAMS, PIECE, SHOW, TINY

INTERVAL = 2.0


@pytest.fixture
def starts(monkeypatch):
    """(kind, monotonic time) of the start of every PCA ('directions') and k-means ('clusters')
    call, and ('<kind> end', time) of its end."""
    seen: list[tuple[str, float]] = []
    pca, km = directions.principal_directions, bending.kmeans

    def traced(kind, f):
        def call(*a, **k):
            seen.append((kind, time.monotonic()))
            try:
                return f(*a, **k)
            finally:
                seen.append((kind + " end", time.monotonic()))
        return call

    monkeypatch.setattr(directions, "principal_directions", traced("directions", pca))
    monkeypatch.setattr(bending, "kmeans", traced("clusters", km))
    return seen


def _computations(starts, kind, per):
    """(start, end) of each computation of `kind` (each is `per` traced calls in a row)."""
    begun = [t for k, t in starts if k == kind]
    ended = [t for k, t in starts if k == kind + " end"]
    assert len(begun) % per == 0 and len(ended) == len(begun), (kind, len(begun), len(ended), per)
    return list(zip(begun[::per], ended[per - 1::per]))


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
    per = {k: sum(1 for s, _ in starts if s == k) for k in ("directions", "clusters")}
    assert per["directions"] and per["clusters"], starts
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

    runs = {kind: _computations(starts, kind, per[kind]) for kind in ("clusters", "directions")}
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
        # other kind's computation that ran between the press and this one's start. (k-means and
        # PCA start after the snapshot, which takes a variable time: a margin of half the interval,
        # since with CPU hogs beside it the snapshot and the worker's wake-up have taken more than
        # 0.4 of it.)
        busy_until = max([pressed[kind]] + [e for s, e in runs[other] if pressed[kind] <= e <= starts_[0]])
        assert starts_[0] - busy_until < 0.5 * INTERVAL, (kind, starts_[0] - pressed[kind], busy_until - pressed[kind])
        assert starts_[0] < runs[other][-1][0], (kind, "held behind the other kind's interval")
        if not covered:
            assert starts_[1] - starts_[0] >= 0.75 * INTERVAL, (kind, starts_[1] - starts_[0])
    computed = sum(len(r) for r in runs.values())
    assert mirror.refresh_computations == 2 + computed and mirror.refresh_errors == 0
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
