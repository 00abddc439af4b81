"""Expensive actions off the render thread: a burst of refresh requests (directions, clusters) is
a bounded number of computations, each on a worker thread from a snapshot of the sampling copy,
swapped in at the start of a later sample; the render loop keeps drawing meanwhile, also with two
CPU hogs beside it."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture
def hogs():
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


def _mirror():
    torch.manual_seed(0)
    system = build_system(piece_from_dict(TINY, "tiny.toml"), torch.device("cpu"))
    return system, SamplingMirror(system)


def _latents(system):
    return {n: torch.randn(1, 8, generator=torch.Generator().manual_seed(1)) for n in system.panels()}


@pytest.mark.parametrize("load", ["idle", "hogs"])
def test_a_burst_of_refreshes_is_few_computations_on_a_worker_and_frames_keep_coming(calls, request, load):
    if load == "hogs":
        request.getfixturevalue("hogs")
    system, mirror = _mirror()
    z = _latents(system)
    mirror.sample(z, PARAMS)  # the first directions and clusters (lazily, on first use)
    first = dict(system.directions.bases)
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
    assert 2 <= mirror.refresh_computations <= 4, mirror.refresh_computations
    panels = len(system.panels())
    assert sum(1 for k, _ in calls if k == "pca") <= 2 * panels
    assert frames_while_refreshing >= 3  # the show kept drawing while the worker computed
    assert system.directions.refreshes >= 1
    assert set(system.directions.bases) == set(first)
    assert mirror.refresh_errors == 0


def test_refreshed_directions_are_those_of_the_weights_at_the_request(calls):
    system, mirror = _mirror()
    z = _latents(system)
    mirror.sample(z, PARAMS)
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
