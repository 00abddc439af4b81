"""Network bending: each transform on a known activation, amount 0 is the unbent image bit for bit,
bends never touch weights or training, channel clusters, declaration in pieces and shows, and the
refresh actions over OSC."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch

import unstable.bending as bending
from unstable.bending import _affine, bend_channels, kmeans, transform
from unstable.config import load_dataclass
from unstable.equilibrium.piece import EquilibriumPiece
from unstable.equilibrium.system import EquilibriumSystem
from unstable.errors import ConfigError
from unstable.system import build_system, piece_from_dict

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny", "kind": "equilibrium", "seed": 3,
    "train": {"steps": 2, "grid_every": 2, "grid_samples": 2, "checkpoint_every": 2},
    "generator": {"resolution": 16, "start_resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                  "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
    "critic": {"embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
}

EVERY_OP = [
    {"layer": "b8.0", "op": "rotate", "channels": "cluster", "clusters": 2, "cluster": 0},
    {"layer": "b8.1", "op": "translate", "channels": "random", "fraction": 0.5, "seed": 4},
    {"layer": "b16.0", "op": "flip", "axis": "y"},
    {"layer": "b16.0", "op": "erode", "channels": "random", "seed": 1},
    {"layer": "b16.1", "op": "dilate"},
    {"layer": "b4.0", "op": "threshold"},
    {"layer": "b8.0", "op": "invert", "channels": "cluster", "clusters": 3, "cluster": 2},
    {"layer": "b16.1", "op": "ablate", "channels": "random", "fraction": 0.25},
    {"layer": "b8.1", "op": "scale", "name": "loud"},
]
AMOUNTS = {"bend0_rotate": 30.0, "bend1_translate": 0.2, "bend2_flip": 1.0, "bend3_erode": 1.5, "bend4_dilate": 1.0,
           "bend5_threshold": 0.7, "bend6_invert": 1.0, "bend7_ablate": 1.0, "loud": 1.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def piece(**over) -> EquilibriumPiece:
    return load_dataclass(EquilibriumPiece, {**TINY, **over}, source="tiny.toml")


def latents(system, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn((n, d), generator=g) for name, d in system.panels().items()}


# ------------------------------------------------------------------------------ transforms

def test_rotate_90_moves_a_marked_pixel_anticlockwise():
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 0, 3] = 1.0  # top right
    y = transform(x, "rotate", 90.0)
    assert y[0, :, 0, 0].tolist() == [1.0, 1.0] and float(y.sum()) == 2.0  # -> top left
    assert torch.equal(transform(x, "rotate", 180.0)[0, 0, 3, 0], torch.tensor(1.0))  # -> bottom left
    assert torch.equal(transform(x, "rotate", -90.0), transform(x, "rotate", 270.0))
    # The general (resampling) path turns the same way as the exact one.
    general = _affine(x, [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(general, y, atol=1e-5)
    small = transform(x, "rotate", 10.0)
    assert small.shape == x.shape and not torch.equal(small, x)


def test_erode_and_dilate_a_square():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 3:6, 3:6] = 1.0  # a 3x3 square
    dilated = torch.zeros_like(x)
    dilated[..., 2:7, 2:7] = 1.0
    eroded = torch.zeros_like(x)
    eroded[..., 4, 4] = 1.0
    assert torch.equal(transform(x, "dilate", 1.0), dilated)
    assert torch.equal(transform(x, "erode", 1.0), eroded)
    assert torch.equal(transform(x, "erode", 2.0), torch.zeros_like(x))
    half = transform(x, "dilate", 0.5)  # fractional radius: between the whole ones
    assert torch.allclose(half, 0.5 * (x + dilated))


def test_ablate_zeroes_the_chosen_channels_only():
    x = torch.randn(2, 6, 5, 5)
    channels = torch.tensor([1, 4])
    y = bend_channels(x, "ablate", 1.0, channels)
    assert torch.equal(y[:, channels], torch.zeros_like(y[:, channels]))
    others = torch.tensor([0, 2, 3, 5])
    assert torch.equal(y[:, others], x[:, others])
    assert torch.equal(bend_channels(x, "ablate", 0.5, None), x * 0.5)


def test_translate_flip_scale_threshold_invert_on_known_maps():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 1] = 1.0
    moved = transform(x, "translate", 0.25)  # a quarter of 8 px: two columns to the right
    assert moved[0, 0, 2, 3] == pytest.approx(1.0, abs=1e-5) and float(moved.abs().sum()) == pytest.approx(1.0, abs=1e-4)
    down = transform(x, "translate", 0.25, axis="y")
    assert down[0, 0, 4, 1] == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(transform(x, "flip", 1.0), x.flip(3))
    assert torch.equal(transform(x, "flip", 1.0, axis="y"), x.flip(2))
    assert torch.equal(transform(x, "scale", 1.0), 2 * x)
    ramp = torch.arange(16.0).view(1, 1, 4, 4)
    binary = transform(ramp, "threshold", 1.0)
    assert set(binary.unique().tolist()) == {0.0, 15.0} and binary[0, 0, 0, 0] == 0 and binary[0, 0, 3, 3] == 15
    assert torch.equal(transform(ramp, "invert", 1.0), 15.0 - ramp)
    vector = torch.tensor([[1.0, -2.0, 3.0]])
    assert torch.equal(bend_channels(vector, "invert", 1.0, None), torch.tensor([[0.0, 3.0, -2.0]]))  # within -2..3


@pytest.mark.parametrize("op", ["scale", "rotate", "translate", "flip", "erode", "dilate", "threshold", "invert",
                                "ablate"])
def test_amount_zero_is_the_tensor_itself(op):
    x = torch.randn(2, 3, 6, 6)
    assert transform(x, op, 0.0) is x


# ------------------------------------------------------------------------------ clusters

def test_kmeans_finds_clear_groups_and_numbers_the_largest_first():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [3, 7, 5]
    points = torch.cat([c + 0.1 * torch.randn(n, 2, generator=g) for c, n in zip(centres, sizes)])
    labels = kmeans(points, 3, seed=1)
    assert labels[3:10].unique().tolist() == [0]   # the 7 points: the largest cluster
    assert labels[10:15].unique().tolist() == [1]
    assert labels[:3].unique().tolist() == [2]
    assert torch.equal(labels, kmeans(points, 3, seed=1))


def test_clusters_are_computed_once_per_layer_and_recomputed_on_request(monkeypatch):
    bends = [{"layer": "b8.0", "op": "ablate", "channels": "cluster", "clusters": 2, "cluster": 1}]
    system = EquilibriumSystem(piece(bend=bends))
    z = latents(system, 1)
    calls = []

    def counting(*a, **k):
        calls.append(a)
        return kmeans(*a, **k)

    monkeypatch.setattr(bending, "kmeans", counting)  # one clustering of one layer's channels per call
    a = system.sample(z, {"bend0_ablate": 1.0})
    system.sample(z, {"bend0_ablate": 1.0})
    assert len(calls) == 2  # once per generator (g0, g1), then kept
    labels = system.bender.clusters[("g0", "b8.0", 2)]
    assert labels.shape == (8,) and set(labels.tolist()) == {0, 1}
    system.refresh("clusters")
    b = system.sample(z, {"bend0_ablate": 1.0})
    assert len(calls) == 4
    assert torch.equal(a["g0"], b["g0"])  # same weights, same clusters


# ------------------------------------------------------------------------------ in the systems

def test_amount_zero_is_the_unbent_image_bit_for_bit():
    plain = EquilibriumSystem(piece())
    bent = EquilibriumSystem(piece(bend=EVERY_OP))
    z = latents(plain)
    for n in (3, 1):  # the batched path and the single-image (live) path
        zn = {k: v[:n] for k, v in z.items()}
        reference = plain.sample(zn, {})
        zero = bent.sample(zn, {})
        assert all(torch.equal(reference[k], zero[k]) for k in reference)
        moved = bent.sample(zn, AMOUNTS)
        assert all(not torch.equal(reference[k], moved[k]) for k in reference)
        for name, value in AMOUNTS.items():  # each bend alone changes the image
            one = bent.sample(zn, {name: value})
            assert not torch.equal(one["g0"], reference["g0"]), name


def test_bends_never_change_weights_or_training():
    plain = EquilibriumSystem(piece())
    bent = EquilibriumSystem(piece(bend=EVERY_OP))
    before = copy.deepcopy(bent.state_dict())
    bent.sample(latents(bent), AMOUNTS)
    after = bent.state_dict()
    for a, b in zip(before["generators"], after["generators"]):
        assert all(torch.equal(a[k], b[k]) for k in a)
    params = {**AMOUNTS, "training": 1.0}  # live bend amounts reach step too: it must ignore them
    for _ in range(2):
        s1, s2 = plain.step(params), bent.step(params)
        assert s1 == s2
    for a, b in zip(plain.generators, bent.generators):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_sampling_copy_shares_bends_and_clusters_across_accumulate():
    system = EquilibriumSystem(piece(bend=EVERY_OP))
    twin = system.sampling_copy()
    z = latents(system, 1)
    assert torch.equal(twin.sample(z, AMOUNTS)["g1"], system.sample(z, AMOUNTS)["g1"])
    assert twin.bender is system.bender and system.bender.clusters
    system.step({"training": 1.0})
    twin.accumulate(system)
    assert twin.bender.clusters  # kept: recomputed only on request
    assert torch.equal(twin.sample(z, AMOUNTS)["g1"], system.sample(z, AMOUNTS)["g1"])


def tiny_bad(**over):
    d = {"name": "tiny", "kind": "divergence", "seed": 1, "vae": {"hidden": 64}, "classifier": {"width": 8},
         **over}
    return build_system(piece_from_dict(d, "tiny.toml"), torch.device("cpu"))


def test_bad_decoder_bends_at_its_hook_points_and_zero_is_bit_for_bit():
    plain = tiny_bad()
    bends = [{"layer": "fc", "op": "ablate", "channels": "cluster", "clusters": 3, "cluster": 1},
             {"layer": "c7", "op": "rotate"}, {"layer": "c14", "op": "dilate", "channels": "random"},
             {"layer": "c28", "op": "invert"}, {"layer": "c2", "op": "flip", "panels": ["decoder"]}]
    bent = tiny_bad(bend=bends)
    bent.decoder.load_state_dict(plain.decoder.state_dict())
    bent.base_decoder.load_state_dict(plain.base_decoder.state_dict())
    z = {"decoder": torch.randn(4, 16), "base": torch.randn(4, 16)}
    ref = plain.sample(z, {})
    assert all(torch.equal(ref[k], bent.sample(z, {})[k]) for k in ref)
    for name in ("bend0_ablate", "bend1_rotate", "bend2_dilate", "bend3_invert"):
        spec = next(s for s in bent.param_specs() if s.name == name)
        out = bent.sample(z, {name: spec.hi})
        assert not torch.equal(out["decoder"], ref["decoder"]) and not torch.equal(out["base"], ref["base"]), name
    only = bent.sample(z, {"bend4_flip": 1.0})  # bends the decoder panel only
    assert torch.equal(only["base"], ref["base"]) and not torch.equal(only["decoder"], ref["decoder"])
    assert bent.decoder.training  # sampling restored the mode


# ------------------------------------------------------------------------------ declaration

def test_bends_are_live_parameters_with_ranges():
    system = EquilibriumSystem(piece(bend=EVERY_OP))
    specs = {s.name: s for s in system.param_specs()}
    assert (specs["bend0_rotate"].lo, specs["bend0_rotate"].hi, specs["bend0_rotate"].default) == (-180, 180, 0)
    assert specs["loud"].unit == "x"
    custom = piece(bend=[{"layer": "b4.0", "op": "rotate", "lo": -45.0, "hi": 45.0, "amount": 10.0}])
    s = {s.name: s for s in EquilibriumSystem(custom).param_specs()}["bend0_rotate"]
    assert (s.lo, s.hi, s.default) == (-45, 45, 10)


@pytest.mark.parametrize("bend, key, words", [
    ({"layer": "b99.0", "op": "scale"}, "bend[0].layer", "not a layer"),
    ({"layer": "b8.0", "op": "spin"}, "bend[0].op", "not allowed"),
    ({"layer": "b8.0", "op": "scale", "cluster": 4, "clusters": 4}, "bend[0].cluster", "only 4"),
    ({"layer": "b8.0", "op": "scale", "lo": 1.0, "hi": 2.0}, "bend[0].amount", "outside"),
    ({"layer": "b8.0", "op": "scale", "panels": ["g7"]}, "bend[0].panels", "not a panel"),
    ({"layer": "b8.0", "op": "scale", "name": "hue"}, "bend[0].name", "already"),
])
def test_a_wrong_bend_names_its_key(bend, key, words):
    with pytest.raises(ConfigError) as e:
        piece(bend=[bend])
    assert key in str(e.value) and words in str(e.value)


def test_spatial_bends_need_feature_maps():
    with pytest.raises(ConfigError, match=r"bend\[0\]\.op.*vector layer"):
        piece_from_dict({"name": "t", "kind": "divergence", "bend": [{"layer": "fc", "op": "rotate"}]}, "t.toml")


def test_the_bending_show_declares_bends_and_directions():
    from unstable.live.pieces import build_systems, show_groups
    from unstable.schema import SHOW
    from unstable.show import load_show
    show = load_show(ROOT / "shows" / "bending.toml")
    eq = show.pieces["eq"]
    assert eq.bend and eq.directions.count >= 3
    systems = build_systems(show, torch.device("cpu"))
    groups = show_groups(show, systems)
    show.check_systems({n: s.panels() for n, s in systems.items()}, {n: g for n, g in groups.items() if n != SHOW})
    names = {s.name for s in groups["eq"]}
    assert {"dir0", "dir3", "spin", "gain", "thin"} <= names


def test_a_show_bend_on_a_missing_layer_names_the_show_key(tmp_path):
    from unstable.show import load_show
    show = tmp_path / "s.toml"
    show.write_text(f'[pieces.eq]\npiece = "{ROOT / "pieces" / "equilibrium-1-1.toml"}"\n'
                    '[[pieces.eq.bend]]\nlayer = "b3.0"\nop = "scale"\n'
                    '[layout]\npanels = ["eq/g0", "eq/g1"]\n')
    with pytest.raises(ConfigError, match=r"pieces\.eq\.bend\[0\]\.layer"):
        load_show(show)


# ------------------------------------------------------------------------------ refresh over OSC

def test_refresh_addresses_post_piece_events_and_the_mirror_refreshes_the_copy():
    from unstable.control.feedback import Feedback
    from unstable.control.handlers import OscHandlers
    from unstable.control.osclog import RateLimitedLog
    from unstable.control.store import ParameterStore
    from unstable.live.mirror import SamplingMirror
    from unstable.schema import with_common

    system = EquilibriumSystem(piece(directions={"count": 2}))
    store = ParameterStore({"eq": with_common(system.param_specs())})

    class Dispatcher:
        def __init__(self):
            self.map_ = {}

        def map(self, addr, handler, needs_reply_address=False):
            self.map_[addr] = handler

    d = Dispatcher()
    stats = {"applied": 0, "rejected": 0, "clamped": 0}
    import logging
    OscHandlers(store, Feedback.__new__(Feedback), stats, RateLimitedLog(logging.getLogger("t"))).map_onto(d)
    origin = ("127.0.0.1", 5555)
    d.map_["/unstable/eq/directions/refresh"](origin, "/unstable/eq/directions/refresh", 1.0)
    d.map_["/unstable/eq/directions/refresh"](origin, "/unstable/eq/directions/refresh", 0.0)  # release: ignored
    d.map_["/unstable/eq/clusters/refresh"](origin, "/unstable/eq/clusters/refresh")
    events = store.drain_events()
    assert [(e.kind, e.group) for e in events] == [("directions/refresh", "eq"), ("clusters/refresh", "eq")]

    mirror = SamplingMirror(system)
    deadline = time.monotonic() + 30
    while mirror.refreshing() and time.monotonic() < deadline:  # the first ones, on the worker too
        mirror.sample(latents(system, 1), {"dir0": 1.0})
    mirror.sample(latents(system, 1), {"dir0": 1.0})
    assert mirror.system.directions.bases and mirror.system.directions.refreshes == 0
    mirror.refresh("directions")  # computed on a worker, swapped in by a later sample
    deadline = time.monotonic() + 30
    while mirror.refreshing() and time.monotonic() < deadline:
        mirror.sample(latents(system, 1), {"dir0": 1.0})
    assert mirror.system.directions.refreshes == 1


def test_bad_training_never_sees_the_bends(tmp_path):
    class Silent:
        def __init__(self, *a, **k): pass
        def update(self, n=1): pass
        def set_postfix(self, *a, **k): pass
        def close(self): pass

    base = {"name": "tiny", "kind": "divergence", "seed": 1, "cache": str(tmp_path),
            "vae": {"steps": 3, "batch": 16, "hidden": 64}, "classifier": {"steps": 3, "batch": 16, "width": 8},
            "bad": {"batch": 32, "real_pool": 300, "lr": 1e-3}, "directions": {"count": 2}}
    bends = [{"layer": "fc", "op": "scale", "amount": 1.0}, {"layer": "c14", "op": "rotate", "amount": 30.0}]
    systems = []
    for over in ({}, {"bend": bends}):
        torch.manual_seed(0)  # the placeholder decoders (replaced by the cached base) draw from it
        s = build_system(piece_from_dict({**base, **over}, "tiny.toml"), torch.device("cpu"))
        s.prepare(Silent)
        systems.append(s)
    plain, bent = systems
    live = {"bend0_scale": 1.0, "bend1_rotate": 30.0, "dir0": 2.0}
    z = {"decoder": torch.randn(2, 16)}
    assert not torch.equal(bent.sample(z, live)["decoder"], plain.sample(z, {})["decoder"])
    for _ in range(2):
        assert plain.step(live) == bent.step(live)
    assert all(torch.equal(a, b) for a, b in zip(plain.decoder.state_dict().values(),
                                                 bent.decoder.state_dict().values()))


def test_cluster_bends_on_layers_a_growing_generator_does_not_run_yet():
    """A fresh piece at its first growth stage: a cluster bend on a later layer waits for it (the
    frame is the unbent one there), and is clustered once growth reaches it."""
    p = piece(generator={**TINY["generator"], "start_resolution": 4}, growth={"stable_steps": 2, "fade_steps": 0},
              bend=[{"layer": "b16.1", "op": "ablate", "channels": "cluster", "clusters": 2},
                    {"layer": "b4.0", "op": "scale", "channels": "cluster", "clusters": 2}])
    system = EquilibriumSystem(p)
    z = latents(system, 1)
    params = {"bend0_ablate": 1.0, "bend1_scale": 1.0}
    system.sample(z, params)
    assert ("g0", "b4.0", 2) in system.bender.clusters and ("g0", "b16.1", 2) not in system.bender.clusters
    system.step_count = 100  # grown to 16 px
    system.sample(z, params)
    assert ("g0", "b16.1", 2) in system.bender.clusters


# ------------------------------------------------------------- pinned by deliberate bugs (issue 22)

def test_the_general_rotation_turns_the_same_way_as_the_exact_one():
    """`transform` itself at angles off the right angles (the resampling path): a blob top right
    goes top left at +85 degrees (anticlockwise, as +90 does exactly) and bottom right at -85."""
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1:3, 6:8] = 1.0  # a 2x2 blob, top right

    def centre(y):  # (row, col) of the mass
        m = y[0, 0].clamp(min=0)
        rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        return float((m * rows).sum() / m.sum()), float((m * cols).sum() / m.sum())

    for a in (85.0, -85.0, 95.0, 175.0):
        exact = transform(x, "rotate", round(a / 90.0) * 90.0)  # the nearest right angle: rot90, exact
        got = centre(transform(x, "rotate", a))
        want = centre(exact)
        assert abs(got[0] - want[0]) < 1.0 and abs(got[1] - want[1]) < 1.0, (a, got, want)


def test_a_random_subset_comes_from_the_bends_own_seed_not_the_pieces():
    """The same bend picks the same channels whatever the piece's (bender's) seed; another bend
    seed picks others. Ablating every chosen channel shows which they are."""
    from unstable.bending import Bender, BendSettings

    def chosen(bender_seed, bend_seed, c=32):
        bend = load_dataclass(BendSettings, {"layer": "b8.0", "op": "ablate", "channels": "random",
                                             "fraction": 0.25, "seed": bend_seed, "amount": 1.0}, source="t.toml")
        hook = Bender([bend], seed=bender_seed).hook("g0", {}, activations=None)
        y = hook("b8.0", torch.ones(1, c, 2, 2))  # [1, C, 2, 2]
        return (y[0, :, 0, 0] == 0).nonzero()[:, 0].tolist()

    first = chosen(0, 4)
    assert len(first) == 8
    assert chosen(1, 4) == chosen(99, 4) == first
    assert first == torch.randperm(32, generator=torch.Generator().manual_seed(4))[:8].sort().values.tolist()
    assert chosen(0, 5) != first
