"""Expensive actions off the render thread: a burst of refresh requests (directions, clusters) is
a bounded number of computations, each on a worker thread from a snapshot of the sampling copy,
swapped in at the start of a later sample; the render loop keeps drawing meanwhile, also with two
CPU hogs beside it."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import unstable.bending as bending
import unstable.directions as directions
from unstable.live.mirror import SamplingMirror
from unstable.system import build_system, piece_from_dict

TINY = {
    "name": "tiny", "kind": "equilibrium", "seed": 3,
    "train": {"steps": 2, "grid_every": 2, "grid_samples": 2, "checkpoint_every": 2},
    "generator": {"resolution": 16, "start_resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                  "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
    "critic": {"embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
    "directions": {"count": 2, "samples": 4000},
    "bend": [{"layer": "b8.0", "op": "scale", "channels": "cluster", "clusters": 2, "cluster": 0}],
}
PARAMS = {"dir0": 1.5, "bend0_scale": 1.0}


@pytest.fixture
def calls(monkeypatch):
    """The thread of every PCA and k-means computation."""
    seen: list[tuple[str, int]] = []
    pca, km = directions.principal_directions, bending.kmeans

    def traced_pca(*a, **k):
        seen.append(("pca", threading.get_ident()))
        time.sleep(0.05)  # a computation long enough for frames to pass while it runs
        return pca(*a, **k)

    def traced_kmeans(*a, **k):
        seen.append(("kmeans", threading.get_ident()))
        time.sleep(0.05)
        return km(*a, **k)

    monkeypatch.setattr(directions, "principal_directions", traced_pca)
    monkeypatch.setattr(bending, "kmeans", traced_kmeans)
    return seen




def _mirror():
    torch.manual_seed(0)
    system = build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))
    return system, SamplingMirror(system)


def _latents(system):
    return {n: torch.randn(1, 8, generator=torch.Generator().manual_seed(1)) for n in system.panels()}


def _settle(mirror, z, params=PARAMS, seconds=60.0) -> int:
    """Sample until nothing is asked for, computing or waiting to be swapped in (then once more:
    the last result goes in there); returns the samples drawn meanwhile."""
    deadline = time.monotonic() + seconds
    frames = 0
    while mirror.refreshing():
        assert time.monotonic() < deadline, "the computations never finished"
        mirror.sample(z, params)
        frames += 1
    mirror.sample(z, params)
    return frames


@pytest.mark.parametrize("load", ["idle", "cpu_hogs"])
def test_a_burst_of_refreshes_is_few_computations_on_a_worker_and_frames_keep_coming(calls, request, load):
    if load == "cpu_hogs":
        request.getfixturevalue("cpu_hogs")
    system, mirror = _mirror()
    z = _latents(system)
    _settle(mirror, z)  # the first directions and clusters (on a worker, from the mirror's start)
    first = dict(system.directions.bases)
    assert first
    assert mirror.refresh_computations == 2  # the first directions and clusters: one each
    calls.clear()
    render = threading.get_ident()
    frames = 0
    for i in range(100):  # a flood: 100 requests of each kind within a few frames
        mirror.refresh("directions")
        mirror.refresh("clusters")
        if i % 10 == 0:
            mirror.sample(z, PARAMS)
            frames += 1
    deadline = time.monotonic() + 60
    frames_while_refreshing = 0
    while mirror.refreshing():
        assert time.monotonic() < deadline, "the refreshes never finished"
        mirror.sample(z, PARAMS)
        frames_while_refreshing += 1
    mirror.sample(z, PARAMS)  # the last finished result is swapped in here
    assert calls, "nothing was recomputed"
    assert all(t != render for _, t in calls), calls  # the render thread never ran a computation
    # Coalesced and rate-limited: 200 requests within ~0 s are at most two computations of each kind
    # (the one that started, and one for everything that came while it waited).
    assert 2 <= mirror.refresh_computations - 2 <= 4, mirror.refresh_computations
    panels = len(system.panels())
    assert sum(1 for k, _ in calls if k == "pca") <= 2 * panels
    assert frames_while_refreshing >= 3  # the show kept drawing while the worker computed
    assert system.directions.refreshes >= 1
    assert set(system.directions.bases) == set(first)
    assert mirror.refresh_errors == 0


def test_refreshed_directions_are_those_of_the_weights_at_the_request(calls):
    system, mirror = _mirror()
    z = _latents(system)
    _settle(mirror, z)
    before = {p: b.vectors.clone() for p, b in system.directions.bases.items()}
    with torch.no_grad():
        for p in system.generators[0].mapping.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    mirror.sync()
    mirror.refresh("directions")
    deadline = time.monotonic() + 30
    while mirror.refreshing():  # the result is swapped in by a sample
        assert time.monotonic() < deadline
        mirror.sample(z, PARAMS)
    after = system.directions.bases
    panel = system.names[0]
    assert not torch.equal(after[panel].vectors, before[panel])
    # Matched and oriented to the previous ones, as a refresh on the render thread was.
    cos = (after[panel].vectors * before[panel]).sum(1)
    assert (cos >= 0).all()


# ---------------------------------------------------------------------- first computations

def _system():
    torch.manual_seed(0)
    return build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))


def test_deferred_first_computations_are_asked_for_unbent_meanwhile_and_equal_the_offline_ones(calls):
    offline = _system()
    z = _latents(offline)
    expected = offline.sample(z, PARAMS)  # a render: computed here and now, as before
    plain = offline.sample(z, {})
    assert not torch.equal(expected["g0"], plain["g0"])
    calls.clear()
    live = _system()  # the same weights
    asked: list[str] = []
    live.directions.defer(lambda: asked.append("directions"), ())  # nothing wanted in advance
    live.bender.defer(lambda: asked.append("clusters"), ())
    for _ in range(3):
        got = live.sample(z, PARAMS)
        for p in got:  # undirected and unbent until the results are installed, bit for bit
            assert torch.equal(got[p], plain[p]), p
    assert calls == []  # nothing computed in `sample`
    # Asked once for each panel that lacks them, not at every sample.
    assert asked.count("directions") == asked.count("clusters") == len(live.names), asked
    live.recompute("directions", PARAMS)()
    live.recompute("clusters", PARAMS)()
    got = live.sample(z, PARAMS)
    for p in got:
        assert torch.equal(got[p], expected[p]), p
    for p, b in offline.directions.bases.items():
        assert torch.equal(live.directions.bases[p].vectors, b.vectors)
    assert live.bender.clusters.keys() == offline.bender.clusters.keys()
    assert live.directions.refreshes == 0  # a first computation is not a refresh


def test_defer_asks_at_once_for_everything_the_settings_can_use():
    system = _system()
    asked: list[str] = []
    system.defer_computations(asked.append)
    assert sorted(asked) == ["clusters", "directions"]
    system.recompute("clusters", {})()
    assert set(system.bender.clusters) == {(p, "b8.0", 2) for p in system.names}
    system.recompute("directions", {})()
    assert set(system.directions.bases) == set(system.names)


PIECE = """\
name = "tiny"
kind = "equilibrium"
seed = 3
[generator]
resolution = 16
start_resolution = 16
z_dim = 8
w_dim = 8
mapping_layers = 2
channel_base = 64
min_channels = 4
max_channels = 8
[critic]
embedding_dim = 8
channel_base = 64
min_channels = 4
max_channels = 8
[directions]
count = 2
samples = 2000
[[bend]]
layer = "b8.0"
op = "scale"
channels = "cluster"
clusters = 2
cluster = 0
"""

SHOW = """\
size = [32, 16]
fps = 10
look_ahead = 4
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0", "eq/g1"]
"""


@pytest.fixture
def slow_calls(monkeypatch):
    """The thread name of every PCA and k-means computation, each 0.3 s longer than it is."""
    seen: list[str] = []
    pca, km = directions.principal_directions, bending.kmeans

    def slowed(f):
        def call(*a, **k):
            seen.append(threading.current_thread().name)
            time.sleep(0.3)
            return f(*a, **k)
        return call

    monkeypatch.setattr(directions, "principal_directions", slowed(pca))
    monkeypatch.setattr(bending, "kmeans", slowed(km))
    return seen


@pytest.mark.parametrize("load", ["idle", "cpu_hogs"])
def test_a_live_shows_first_directions_and_clusters_are_computed_off_the_render_thread_before_frame_0(
        tmp_path, slow_calls, request, load, one_torch_thread):
    """The first computations run on the refresh worker while the show opens (no frame exists yet
    to stall), and the opening waits for them: a bend or direction moved on any frame shows in the
    next one, and a show that starts bent is bent from frame 0, as its render is."""
    import numpy as np
    from tqdm import tqdm

    from unstable.live import Engine
    from unstable.show import load_show
    if load == "cpu_hogs":
        request.getfixturevalue("cpu_hogs")
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "eq.toml").write_text(PIECE)
    (tmp_path / "show.toml").write_text(SHOW)
    lines: list[str] = []
    eng = Engine(load_show(tmp_path / "show.toml"), headless=True, osc_port=0, web_port=0, train=False,
                 run_dir=tmp_path / "run", echo=lines.append,
                 progress=lambda desc, total=None, **kw: tqdm(total=total, disable=True))
    with eng:
        mirror = eng.pieces["eq"].mirror
        # Opened: both first computations done, on the worker (0.3 s each, slowed), none on this thread.
        assert mirror.refresh_computations == 2 and len(slow_calls) == 4, slow_calls
        assert set(slow_calls) == {"unstable-refresh"}, slow_calls
        eng.params.update({"eq": {"walk_speed": 0.0}})  # frozen: only the bend and direction change it
        eng.params.settle()
        eng.frame(number=0)
        unbent = eng.read().copy()
        eng.frame(number=1)
        assert np.array_equal(eng.read(), unbent)
        # Frame 2: the bend and a direction move off 0 (settled: no glide to wait for).
        eng.params.update({"eq": {"bend0_scale": 3.0, "dir0": 2.5}})
        eng.params.settle()
        eng.frame(number=2)
        bent = eng.read().copy()
        assert not np.array_equal(bent, unbent)  # the very next frame: nothing left to compute
        eng.frame(number=3)
        assert np.array_equal(eng.read(), bent)
        assert len(slow_calls) == 4, slow_calls  # no frame computed anything
    # Closing the show stopped its worker (a process exiting with a thread inside torch aborts).
    assert mirror._worker is not None and not mirror._worker.is_alive()
    assert mirror.refresh_computations == 2 and mirror.refresh_errors == 0
    assert sum("latent directions are ready" in l for l in lines) == 1, lines
    assert sum("channel clusters are ready" in l for l in lines) == 1, lines


def test_a_bad_pieces_mirror_computes_them_on_its_worker_and_draws_what_a_render_draws(calls):
    bad = {"name": "tiny", "kind": "divergence", "seed": 1, "vae": {"hidden": 64}, "classifier": {"width": 8},
           "directions": {"count": 2, "samples": 500},
           "bend": [{"layer": "c14", "op": "scale", "channels": "cluster", "clusters": 2, "cluster": 1}]}
    params = {"dir1": -2.0, "bend0_scale": 2.0}
    z = {"decoder": torch.randn(3, 16, generator=torch.Generator().manual_seed(5)), "base": torch.zeros(3, 16)}
    torch.manual_seed(0)
    offline = build_system(piece_from_dict(bad, "tiny.toml"), torch.device("cpu"))
    expected = offline.sample(z, params)
    assert not torch.equal(expected["decoder"], offline.sample(z, {})["decoder"])
    calls.clear()
    torch.manual_seed(0)
    live = build_system(piece_from_dict(bad, "tiny.toml"), torch.device("cpu"))
    mirror = SamplingMirror(live)
    render = threading.get_ident()
    _settle(mirror, z, params)
    assert calls and all(t != render for _, t in calls), calls
    got = mirror.sample(z, params)
    for p in got:
        assert torch.equal(got[p], expected[p]), p
    assert mirror.refresh_computations == 2 and mirror.refresh_errors == 0
