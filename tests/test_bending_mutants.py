"""Details of unstable/bending.py that its mutation run found unpinned by tests/test_bending.py:
the settings' messages and parameter, per-map statistics, exact right-angle rotation, the flip
axis through bend_channels and the hook, k-means on duplicate and scaled points and its label
order, channel features, and the Bender's channel choice, batching, timing and deferred path."""

from __future__ import annotations

import time

import pytest
import torch

from unstable.bending import BendSettings, Bender, bend_channels, channel_features, check_bends, kmeans, transform


# ------------------------------------------------------------------------------------ settings

def test_settings_refuse_an_empty_range_and_one_without_zero_naming_the_key():
    with pytest.raises(ValueError, match=r"^hi: the range \[0.5, 0.5\] is empty$"):
        BendSettings(layer="b4.0", op="scale", lo=0.5, hi=0.5)
    with pytest.raises(ValueError, match=r"^lo: the range \[0.5, 2.0\] must hold 0"):
        BendSettings(layer="b4.0", op="scale", lo=0.5, hi=2.0, amount=0.6)
    with pytest.raises(ValueError, match=r"^cluster: 4 but only 4 clusters \(0\.\.3\)$"):
        BendSettings(layer="b4.0", op="scale", channels="cluster", clusters=4, cluster=4)
    # zero may be either end of the range
    assert BendSettings(layer="b4.0", op="scale", lo=-1.0, hi=0.0).range() == (-1.0, 0.0)


def test_a_bends_parameter_glides_and_says_what_it_bends():
    spec = BendSettings(layer="b8.0", op="scale").spec(2)
    assert spec.name == "bend2_scale" and spec.smoothing == 0.2
    assert spec.doc == "bend of b8.0 (every channel): multiplies the activations by 1 + amount"
    spec = BendSettings(layer="b8.0", op="flip", channels="random", fraction=0.25).spec(0)
    assert spec.doc.startswith("bend of b8.0 (a random 0.25 of the channels): ")


def test_check_bends_lists_the_layers_and_panels_it_expected():
    with pytest.raises(ValueError, match=r"expected one of b4\.0, b8\.0$"):
        check_bends([BendSettings(layer="nope", op="scale")], {"b4.0": True, "b8.0": True}, ["g0"], [])
    with pytest.raises(ValueError, match=r"\(use scale, threshold, invert or ablate there\)$"):
        check_bends([BendSettings(layer="z", op="rotate")], {"z": False}, ["g0"], [])
    with pytest.raises(ValueError, match=r"expected one of g0, g1$"):
        check_bends([BendSettings(layer="z", op="scale", panels=("g9",))], {"z": False}, ["g0", "g1"], [])


# ---------------------------------------------------------------------------------- transforms

def test_threshold_and_invert_use_each_maps_own_statistics():
    x = torch.zeros(2, 2, 2, 2, dtype=torch.float64)  # [N, C, H, W]
    x[0, 0] = torch.tensor([[0.0, 1.0], [1.0, 2.0]])   # mean 1: the 1s are not above it
    x[0, 1] = torch.tensor([[10.0, 30.0], [30.0, 30.0]])
    x[1, 0] = torch.tensor([[-4.0, -2.0], [-2.0, 0.0]])
    x[1, 1] = torch.tensor([[5.0, 5.0], [5.0, 7.0]])
    t = transform(x, "threshold", 1.0)
    assert t[0, 0].tolist() == [[0.0, 0.0], [0.0, 2.0]]
    assert t[0, 1].tolist() == [[10.0, 30.0], [30.0, 30.0]]
    assert t[1, 0].tolist() == [[-4.0, -4.0], [-4.0, 0.0]]
    assert t[1, 1].tolist() == [[5.0, 5.0], [5.0, 7.0]]
    inv = transform(x, "invert", 1.0)
    assert inv[0, 1].tolist() == [[30.0, 10.0], [10.0, 10.0]]
    assert inv[1, 0].tolist() == [[0.0, -2.0], [-2.0, -4.0]]


@pytest.mark.parametrize("shape", [(1, 2, 4, 1), (1, 2, 1, 2)])
def test_maps_one_pixel_wide_or_two_pixels_big_are_still_maps(shape):
    x = torch.arange(1.0, 1.0 + torch.Size(shape).numel()).reshape(shape)
    x[0, 1] *= 100
    t = transform(x, "invert", 1.0)
    for c in range(2):
        assert torch.equal(t[0, c], x[0, c].amin() + x[0, c].amax() - x[0, c])


def test_a_vector_layers_statistics_are_over_its_channels():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 10.0, 20.0]])[:, :, None, None]  # [N, C, 1, 1]
    assert transform(x, "threshold", 1.0)[:, :, 0, 0].tolist() == [[1.0, 1.0, 3.0], [0.0, 0.0, 20.0]]


def test_right_angles_rotate_exactly_and_only_square_maps_take_the_exact_path():
    x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(transform(x, "rotate", 90.0), torch.rot90(x, 1, dims=(2, 3)))
    assert not torch.equal(transform(x, "rotate", 91.0), torch.rot90(x, 1, dims=(2, 3)))
    wide = torch.randn(1, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    assert transform(wide, "rotate", 90.0).shape == wide.shape  # a feature map keeps its shape


def test_an_unknown_op_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown bend op 'nope', expected one of scale, rotate, translate, "):
        transform(torch.ones(1, 1, 2, 2), "nope", 1.0)


@pytest.mark.parametrize("channels", [None, torch.tensor([1])])
def test_bend_channels_flips_along_the_axis_it_is_given(channels):
    x = torch.arange(2 * 2 * 3.0).reshape(1, 2, 2, 3)
    for axis, dim in (("x", 3), ("y", 2)):
        out = bend_channels(x, "flip", 1.0, channels, axis)
        assert torch.equal(out[0, 1], x[0, 1].flip(dim - 2))
    assert torch.equal(bend_channels(x, "flip", 1.0, channels)[0, 1], x[0, 1].flip(1))  # default: x


# ------------------------------------------------------------------------------------ k-means

def test_kmeans_on_duplicate_points_fills_every_cluster():
    points = torch.tensor([[0.0], [0.0], [0.0], [10.0]])
    labels = kmeans(points, 3)
    assert torch.bincount(labels, minlength=3).min() > 0
    same = kmeans(torch.zeros(5, 2), 3)  # no spread at all: seeding falls back to random points
    sizes = torch.bincount(same, minlength=3)
    assert same.shape == (5,) and int(same.max()) < 3 and int(sizes[0]) == int(sizes.max())


def test_kmeans_k_1_is_one_cluster_and_k_is_capped_at_the_points():
    points = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    assert kmeans(points, 1).tolist() == [0] * 6
    assert sorted(kmeans(points[:2], 5).tolist()) == [0, 1]


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_does_not_depend_on_the_scale_of_the_points(seed):
    points = torch.randn(40, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.equal(kmeans(points, 5, seed=seed), kmeans(points * 1e-3, 5, seed=seed))


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_equal_clusters_are_numbered_by_their_first_point(seed):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    points = torch.cat([c + torch.randn(4, 2, generator=gen) for c in centres])  # 3 clusters of 4
    order = torch.randperm(12, generator=gen)
    labels = kmeans(points[order], 3, seed=seed)
    firsts = [int((labels == j).nonzero()[0]) for j in range(3)]
    assert firsts == sorted(firsts) and firsts[0] == 0


# --------------------------------------------------------------------------- channel features

def test_channel_features_pool_wide_maps_to_8_by_8_and_standardise_each_channel():
    acts = torch.randn(3, 2, 4, 32, generator=torch.Generator().manual_seed(0)) * 1e-3 + 5e-4
    f = channel_features(acts)
    assert f.shape == (2, 3 * 8 * 8)  # [C, M * 8 * 8]: pooled (the width is over 8)
    assert channel_features(acts[:, :, :, :8]).shape == (2, 3 * 4 * 8)  # small maps: as they are
    assert torch.allclose(f.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    small = acts[:, :, :, :8].double()
    for c in range(2):
        row = small[:, c].reshape(-1)  # channel c over the whole batch
        row = row - row.mean()
        assert torch.allclose(channel_features(small)[c].double(), row / row.norm(), atol=1e-5)


# --------------------------------------------------------------------------------- the bender

def _acts(calls, sleep=0.0):
    """An `activations` callable over fixed seeded maps, recording the layers of each call."""
    def activations(panel, layers):
        calls.append(list(layers))
        time.sleep(sleep)
        gen = torch.Generator().manual_seed(len(layers))
        return {layer: torch.randn(4, 6, 4, 4, generator=gen) for layer in layers if layer != "off"}
    return activations


def _hook(bender, params, activations, panel="g0"):
    return bender.hook(panel, params, activations)


def test_an_all_bend_bends_every_channel_without_clustering():
    b = Bender([BendSettings(layer="a", op="scale")])
    x = torch.ones(1, 6, 2, 2)
    out = _hook(b, {"bend0_scale": 1.0}, lambda *_: pytest.fail("clustered"))("a", x)
    assert torch.equal(out, x * 2)


def test_a_small_random_fraction_bends_one_channel():
    b = Bender([BendSettings(layer="a", op="ablate", channels="random", fraction=0.1)])
    out = _hook(b, {"bend0_ablate": 1.0}, lambda *_: None)("a", torch.ones(1, 4, 2, 2))
    assert int((out[0, :, 0, 0] == 0).sum()) == 1


def test_a_cluster_bend_bends_its_cluster_from_the_benders_seed():
    calls = []
    b = Bender([BendSettings(layer="a", op="ablate", channels="cluster", clusters=2, cluster=1)], seed=5)
    out = _hook(b, {"bend0_ablate": 1.0}, _acts(calls))("a", torch.ones(1, 6, 2, 2))
    labels = kmeans(channel_features(_acts([])("g0", ["a"])["a"]), 2, seed=5)
    assert torch.equal(b.clusters[("g0", "a", 2)], labels)
    assert torch.equal(out[0, :, 0, 0] == 0, labels == 1)


def test_every_cluster_a_panel_needs_comes_from_one_pass_and_a_skipped_bend_stops_no_other():
    calls = []
    b = Bender([BendSettings(layer="a", op="scale", channels="cluster", clusters=2),
                BendSettings(layer="b", op="scale", channels="cluster", clusters=3),
                BendSettings(layer="off", op="scale", channels="cluster", clusters=2),
                BendSettings(layer="off", op="scale", name="loud")])
    hook = _hook(b, {"bend0_scale": 1.0, "bend1_scale": 1.0, "bend2_scale": 1.0, "loud": 1.0}, _acts(calls))
    hook("a", torch.ones(1, 6, 2, 2))
    assert calls == [["a", "b", "off"]]  # one pass for all three, "off" did not run
    assert set(b.clusters) == {("g0", "a", 2), ("g0", "b", 3)}
    hook("b", torch.ones(1, 6, 2, 2))
    assert len(calls) == 1
    # the cluster bend of a layer that did not run is skipped; the bend after it still bends
    x = torch.ones(1, 6, 2, 2)
    assert torch.equal(hook("off", x), x * 2)


def test_cluster_seconds_start_at_zero_and_add_up():
    calls = []
    b = Bender([BendSettings(layer="a", op="scale", channels="cluster", clusters=2)])
    assert b.cluster_seconds == 0.0
    start = time.perf_counter()
    _hook(b, {"bend0_scale": 1.0}, _acts(calls, sleep=0.2))("a", torch.ones(1, 6, 2, 2))
    b.refresh()
    _hook(b, {"bend0_scale": 1.0}, _acts(calls))("a", torch.ones(1, 6, 2, 2))
    assert len(calls) == 2
    assert 0.2 <= b.cluster_seconds <= time.perf_counter() - start


def test_deferred_clusters_are_asked_for_skipped_meanwhile_and_bend_once_installed():
    asked = []
    bends = [BendSettings(layer="a", op="ablate", channels="cluster", clusters=2),
             BendSettings(layer="b", op="scale"),
             BendSettings(layer="c", op="ablate", channels="cluster", clusters=3, panels=("g1",))]
    b = Bender(bends)
    b.defer(lambda: asked.append(1), ["g0", "g1"])
    assert asked == [1]
    assert b._wanted == {("g0", "a", 2), ("g1", "a", 2), ("g1", "c", 3)}
    b.defer(lambda: asked.append(2), ["g0", "g1"])  # nothing newly wanted: not asked again
    assert asked == [1]  # (the new callable is kept for later requests)
    params = {"bend0_ablate": 1.0, "bend1_scale": 1.0, "bend2_ablate": 1.0}
    x = torch.ones(1, 6, 2, 2)
    hook = _hook(b, params, lambda *_: pytest.fail("clustered on the render thread"))
    assert torch.equal(hook("a", x), x)  # wanted, not there yet: unbent
    assert asked == [1]  # already wanted: no new request
    calls = []
    found = b.recompute(_acts(calls))
    assert set(found) == {("g0", "a", 2), ("g1", "a", 2), ("g1", "c", 3)}
    b.install(found)
    assert b._wanted == set()
    out = _hook(b, params, lambda *_: pytest.fail("clustered"))("a", x)
    assert torch.equal(out[0, :, 0, 0] == 0, found[("g0", "a", 2)] == 0)
    # a deferred refresh asks again and keeps bending with the clusters it has
    b.refresh()
    assert asked == [1, 2] and set(b.clusters) == set(found)


def test_a_deferred_bender_asks_for_a_cluster_its_hook_finds_missing():
    asked = []
    b = Bender([BendSettings(layer="a", op="ablate", channels="cluster", clusters=2),
                BendSettings(layer="b", op="ablate", channels="cluster", clusters=3)])
    b.defer(lambda: asked.append(1), [])  # no panels known yet: nothing wanted
    assert asked == [] and b._wanted == set()
    x = torch.ones(1, 6, 2, 2)
    assert torch.equal(_hook(b, {"bend0_ablate": 1.0, "bend1_ablate": 1.0}, lambda *_: None)("a", x), x)
    assert asked == [1] and b._wanted == {("g0", "a", 2), ("g0", "b", 3)}


def test_refresh_without_defer_forgets_the_clusters():
    b = Bender([BendSettings(layer="a", op="scale", channels="cluster", clusters=2)])
    _hook(b, {"bend0_scale": 1.0}, _acts([]))("a", torch.ones(1, 6, 2, 2))
    assert b.clusters
    b.refresh()
    assert b.clusters == {}


def test_check_bends_names_every_bend_by_its_index_and_refuses_a_name_twice():
    unnamed = [BendSettings(layer="a", op="scale"), BendSettings(layer="a", op="scale")]
    check_bends(unnamed, {"a": True}, ["g0"], [])  # bend0_scale and bend1_scale
    with pytest.raises(ValueError, match=r"^bend\[1\]\.name: 'bend1_scale' is already a live parameter"):
        check_bends(unnamed, {"a": True}, ["g0"], ["bend1_scale"])
    named = [BendSettings(layer="a", op="scale", name="loud"), BendSettings(layer="a", op="flip", name="loud")]
    with pytest.raises(ValueError, match=r"^bend\[1\]\.name: 'loud' is already"):
        check_bends(named, {"a": True}, ["g0"], [])


def test_recompute_asks_each_panel_once_skips_a_layer_not_run_and_times_itself():
    seen = []

    def activations(panel, layers):
        seen.append((panel, list(layers)))
        time.sleep(0.1)
        gen = torch.Generator().manual_seed(len(panel))
        return {layer: torch.randn(4, 6, 4, 4, generator=gen) for layer in layers if layer != "off"}

    b = Bender([BendSettings(layer="a", op="scale", channels="cluster", clusters=2),
                BendSettings(layer="off", op="scale", channels="cluster", clusters=3)], seed=7)
    b.defer(lambda: None, ["g0", "g12"])
    start = time.perf_counter()
    found = b.recompute(activations)
    b.recompute(activations)
    assert sorted(seen) == [("g0", ["a", "off"]), ("g0", ["a", "off"]), ("g12", ["a", "off"]), ("g12", ["a", "off"])]
    assert found[("g0", "off", 3)] is None and found[("g12", "off", 3)] is None
    for panel in ("g0", "g12"):
        acts = torch.randn(4, 6, 4, 4, generator=torch.Generator().manual_seed(len(panel)))
        assert torch.equal(found[(panel, "a", 2)], kmeans(channel_features(acts), 2, seed=7))
    assert 0.4 <= b.cluster_seconds <= time.perf_counter() - start  # 4 passes of 0.1 s, added up


def test_the_hook_flips_along_the_bends_axis():
    b = Bender([BendSettings(layer="a", op="flip", axis="x"), BendSettings(layer="c", op="flip", axis="y")])
    hook = _hook(b, {"bend0_flip": 1.0, "bend1_flip": 1.0}, lambda *_: None)
    x = torch.arange(2 * 2 * 3.0).reshape(1, 2, 2, 3)
    assert torch.equal(hook("a", x), x.flip(3)) and torch.equal(hook("c", x), x.flip(2))



@pytest.mark.parametrize("op", ["rotate", "translate"])
def test_general_affine_bends_keep_the_activations_dtype(op):
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = transform(x, op, 0.3 if op == "translate" else 45.0)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert torch.allclose(out.float(), transform(x.float(), op, 0.3 if op == "translate" else 45.0), atol=1e-5)
