"""Latent walks: seamless loops, keyframes hit, slerp norms, determinism, batching, the live clock."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from unstable.config import load_dataclass
from unstable.errors import ConfigError, UnstableError
from unstable.walk import Walk, WalkClock, WalkSettings, keyframe_latent, panel_seed

DEV = torch.device("cpu")
METHODS = ["linear", "slerp", "cubic", "catmull_rom"]
PANELS = {"left": 32, "right": 32}


def walk(**kw):
    return Walk(WalkSettings(**kw), PANELS, DEV)


def dist(a, b):
    return (a - b).norm().item()


@pytest.mark.parametrize("method", METHODS)
def test_loop_has_no_seam(method):
    """Over one loop at 30 fps the step from the last frame back to the first is an ordinary step."""
    w = walk(keyframes=5, seed=3, interpolation=method, period=1.0)
    fps = 30
    n = int(w.duration * fps)  # frames in one loop
    z = w.latents_at_many([Fraction(i, fps) for i in range(n + 1)])["left"]  # [n + 1, D]
    assert torch.equal(z[n], z[0])  # frame n is frame 0 again, exactly
    steps = (z[1:] - z[:-1]).norm(dim=1)  # steps[n - 1] is the seam: last frame -> first
    seam, before, after = steps[n - 1].item(), steps[n - 2].item(), steps[0].item()
    assert 0.7 < seam / before < 1.4  # neither a jump nor a repeated frame
    if method in ("cubic", "catmull_rom"):  # C1 paths: the speed carries on through the seam
        assert 0.9 < seam / after < 1.1
    assert 0.2 * steps.median().item() < seam < 2.0 * steps.median().item()
    # latents_at(period * K) == latents_at(0), for float and exact times.
    for t in (float(w.duration), w.duration, 3 * w.duration):
        assert torch.equal(w.latents_at(t)["right"], w.latents_at(0)["right"])


def test_open_path_holds_its_ends():
    w = walk(keyframes=4, interpolation="cubic", loop=False, period=0.5)
    assert w.duration == Fraction(3, 2)
    keys = w.keyframes("left")
    torch.testing.assert_close(w.latents_at(-1.0)["left"][0], keys[0])
    torch.testing.assert_close(w.latents_at(10.0)["left"][0], keys[-1])


@pytest.mark.parametrize("loop", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_path_passes_through_keyframes(method, loop):
    w = walk(keyframes=5, seed=11, interpolation=method, loop=loop, period=0.7, easing="smoothstep")
    for name in PANELS:
        keys = w.keyframes(name)  # [K, D]
        for i in range(5):
            z = w.latents_at(w.keyframe_time(i))[name][0]
            torch.testing.assert_close(z, keys[i], atol=1e-5, rtol=1e-5)
        # and between keyframes it is somewhere else
        mid = w.latents_at(w.keyframe_time(1) + w.period / 2)[name][0]
        assert dist(mid, keys[1]) > 0.1 and dist(mid, keys[2]) > 0.1


def test_keyframes_come_from_seeds():
    w = Walk(WalkSettings(seeds=(7, 8, 9)), {"a": 16, "b": 16}, DEV)
    assert torch.equal(w.keyframes("a")[1], keyframe_latent(8, 16))  # panel 0: the plain seed
    assert torch.equal(w.keyframes("b")[1], keyframe_latent(panel_seed(8, 1), 16))
    assert not torch.equal(w.keyframes("a"), w.keyframes("b"))


def test_slerp_keeps_norm_and_linear_dips():
    d = 256
    s = Walk(WalkSettings(keyframes=4, interpolation="slerp"), {"a": d}, DEV)
    lin = Walk(WalkSettings(keyframes=4, interpolation="linear"), {"a": d}, DEV)
    ts = [Fraction(i, 20) * s.period for i in range(4 * 20)]
    ns = s.latents_at_many(ts)["a"].norm(dim=1)
    key_norms = s.keyframes("a").norm(dim=1)
    lo, hi = key_norms.min().item(), key_norms.max().item()
    assert lo - 1e-3 <= ns.min().item() and ns.max().item() <= hi + 1e-3
    # Without it, Gaussian latents lose about 1 - 1/sqrt(2) of their norm mid-segment.
    assert lin.latents_at_many(ts)["a"].norm(dim=1).min().item() < 0.8 * lo


@pytest.mark.parametrize("method", ["linear", "cubic", "catmull_rom"])
def test_keep_norm_follows_keyframe_norms(method):
    w = Walk(WalkSettings(keyframes=4, interpolation=method, keep_norm=True, temperature=0.5), {"a": 256}, DEV)
    ns = w.latents_at_many([i / 10 for i in range(160)])["a"].norm(dim=1)
    key_norms = 0.5 * w.keyframes("a").norm(dim=1)
    assert ns.min().item() > 0.9 * key_norms.min().item() and ns.max().item() < 1.1 * key_norms.max().item()


def test_determinism_panels_and_shared():
    a = walk(keyframes=3, seed=5)
    b = walk(keyframes=3, seed=5)
    c = walk(keyframes=3, seed=6)
    za, zb, zc = a.latents_at(1.3), b.latents_at(1.3), c.latents_at(1.3)
    assert torch.equal(za["left"], zb["left"]) and torch.equal(za["right"], zb["right"])
    assert not torch.equal(za["left"], zc["left"])
    assert dist(za["left"], za["right"]) > 1.0  # two panels walk different paths
    sh = Walk(WalkSettings(keyframes=3, seed=5, shared=True), {"l": 32, "r": 32, "small": 8}, DEV)
    zs = sh.latents_at(1.3)
    assert torch.equal(zs["l"], zs["r"]) and zs["small"].shape == (1, 8)
    assert torch.equal(zs["l"], za["left"])  # shared paths use panel 0's seeds


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_frame(method):
    w = walk(keyframes=4, seed=1, interpolation=method, easing="sine", keep_norm=True, temperature=0.8)
    ts = [i * Fraction(17, 10) * Fraction(1001, 30000) for i in range(40)]  # 29.97 fps at speed 1.7
    many = w.latents_at_many(ts)
    for name in PANELS:
        per = torch.cat([w.latents_at(t)[name] for t in ts])
        assert many[name].shape == (40, 32)
        torch.testing.assert_close(many[name], per, atol=1e-5, rtol=1e-5)
    # Float seconds (numpy / tensor input) give the same as exact ones, up to float rounding.
    as_tensor = w.latents_at_many(torch.tensor([float(t) for t in ts], dtype=torch.float64))
    torch.testing.assert_close(as_tensor["left"], many["left"], atol=1e-5, rtol=1e-5)


def test_temperature_scales():
    w = walk(keyframes=3, interpolation="cubic")
    z1 = w.latents_at(0.9)["left"]
    torch.testing.assert_close(w.latents_at(0.9, temperature=2.5)["left"], 2.5 * z1)
    assert w.latents_at(0.9, temperature=0.0)["left"].abs().max().item() == 0.0


def test_explicit_latents_and_single_keyframe():
    s = load_dataclass(WalkSettings, {"latents": [[1.0, 0.0], [0.0, 1.0]], "interpolation": "slerp"},
                       source="show.toml", prefix="walk")
    w = Walk(s, {"a": 2, "b": 2}, DEV)
    z = w.latents_at(w.period / 2)["a"][0]
    torch.testing.assert_close(z, torch.tensor([2 ** -0.5, 2 ** -0.5]))
    with pytest.raises(UnstableError, match="panel 'c' takes 3-d"):
        Walk(s, {"a": 2, "c": 3}, DEV)
    one = walk(keyframes=1, interpolation="cubic")
    assert torch.equal(one.latents_at(0.0)["left"], one.latents_at(123.4)["left"])


def test_settings_load_from_toml_with_one_line_errors():
    s = load_dataclass(WalkSettings, {"seeds": [4, 5, 6], "period": 2, "period_per": "loop", "loop": True},
                       source="shows/a.toml", prefix="walk")
    w = Walk(s, PANELS, DEV)
    assert w.duration == 2 and w.period == Fraction(2, 3)
    for bad, key in [({"seeds": [1], "latents": [[0.5]]}, "walk.latents"), ({"period": 0}, "walk.period"),
                     ({"interpolation": "spline"}, "walk.interpolation"), ({"seeds": [-1]}, "walk.seeds[0]"),
                     ({"latents": [[1.0], [1.0, 2.0]]}, "walk.latents")]:
        with pytest.raises(ConfigError) as e:
            load_dataclass(WalkSettings, bad, source="shows/a.toml", prefix="walk")
        assert e.value.key == key and "\n" not in str(e.value)


class FakeTime:
    """An injected time source (seconds) the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_speed_changes_do_not_jump_phase():
    t = FakeTime()
    clock = WalkClock(speed=1.0, time_source=t)
    t.now += 2.0
    assert clock.tick() == pytest.approx(2.0)
    t.now += 0.5
    clock.speed = 4.0  # the half second before the change still runs at speed 1
    assert clock.phase == pytest.approx(2.5)
    assert clock.tick() == pytest.approx(2.5)
    t.now += 0.25
    assert clock.tick() == pytest.approx(3.5)
    clock.speed = 0.0
    t.now += 10
    assert clock.tick() == pytest.approx(3.5)  # paused
    clock.speed = -1.0
    t.now += 1
    assert clock.tick() == pytest.approx(2.5)


def test_walk_clock_resumes_from_saved_phase():
    t = FakeTime()
    clock = WalkClock(speed=2.0, time_source=t)
    t.now += 3.0
    state = clock.state_dict()
    assert state == {"phase": pytest.approx(6.0), "speed": 2.0}
    t.now += 1000.0  # the show was off
    resumed = WalkClock(time_source=t)
    resumed.load_state_dict(state)
    t.now += 0.5
    assert resumed.tick() == pytest.approx(7.0)


# Pinned by mutation testing (docs/mutation.md): the path maths against numpy written out.

def test_easings_are_the_named_polynomials():
    import numpy as np
    from unstable.splines import ease
    u = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
    np.testing.assert_allclose(ease(u, "none"), u)
    np.testing.assert_allclose(ease(u, "smoothstep"), 3 * u ** 2 - 2 * u ** 3)
    np.testing.assert_allclose(ease(u, "smootherstep"), 6 * u ** 5 - 15 * u ** 4 + 10 * u ** 3)
    np.testing.assert_allclose(ease(u, "sine"), (1 - np.cos(np.pi * u)) / 2)


@pytest.mark.parametrize("loop", [False, True])
def test_spline_second_derivatives_solve_the_spline_system(loop):
    import numpy as np
    from unstable.splines import _spline_second_derivatives
    p = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 0.5], [-1.0, 2.0], [3.0, 0.0], [0.5, 1.5]], dtype=torch.float64)
    k = p.shape[0]
    a = np.zeros((k, k))
    rhs = np.zeros((k, 2))
    P = p.numpy()
    for i in range(k):
        if not loop and i in (0, k - 1):
            a[i, i] = 1.0  # natural ends: M = 0
            continue
        a[i, (i - 1) % k] += 1.0
        a[i, i] += 4.0
        a[i, (i + 1) % k] += 1.0
        rhs[i] = 6.0 * (P[(i + 1) % k] - 2 * P[i] + P[(i - 1) % k])
    np.testing.assert_allclose(_spline_second_derivatives(p, loop).numpy(), np.linalg.solve(a, rhs), atol=1e-12)
    three = p[:3]  # the shortest open path with an inner keyframe: M[1] = 6 (P2 - 2 P1 + P0) / 4
    m = _spline_second_derivatives(three, False)
    assert torch.allclose(m[1], 6 * (three[2] - 2 * three[1] + three[0]) / 4) and (m[[0, 2]] == 0).all()
    assert (_spline_second_derivatives(p[:2], False) == 0).all()


@pytest.mark.parametrize("loop", [False, True])
def test_catmull_rom_tangents(loop):
    import numpy as np
    from unstable.splines import poly_basis
    P = np.array([[0.0], [1.0], [4.0], [2.0], [5.0]])
    k = len(P)
    if loop:
        t = np.array([(P[(i + 1) % k] - P[(i - 1) % k]) / 2 for i in range(k)])
        ends = [(i, (i + 1) % k) for i in range(k)]
    else:  # one-sided differences at the ends, central inside
        t = np.array([P[1] - P[0]] + [(P[i + 1] - P[i - 1]) / 2 for i in range(1, k - 1)] + [P[-1] - P[-2]])
        ends = [(i, i + 1) for i in range(k - 1)]
    want = np.stack([np.stack([P[a], t[a], 3 * (P[b] - P[a]) - 2 * t[a] - t[b], 2 * (P[a] - P[b]) + t[a] + t[b]])
                     for a, b in ends])
    got = poly_basis(torch.tensor(P), "catmull_rom", loop).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="interpolation: 'slerp' is not a polynomial path"):
        poly_basis(torch.tensor(P), "slerp", loop)


def test_times_agree_for_floats_arrays_tensors_and_fractions():
    """One-value keyframes on a linear path: a latent's value says which segment a time fell in and
    how far along it, for every form a list of times comes in."""
    import numpy as np
    lat = ((0.0,), (1.0,), (3.0,), (2.0,))
    looped = Walk(WalkSettings(latents=lat, interpolation="linear", period=2.0), {"a": 1})
    ts = [1.0, 9.0, -1.0, 7.5]  # seconds; 2 s per keyframe, 4 keyframes: an 8 s loop
    # segment 0 halfway (0 -> 1), the same a loop later, segment 3 (2 -> 0, back to the start) at a
    # half and three quarters
    want = [0.5, 0.5, 1.0, 0.5]
    for form in (ts, np.array(ts), torch.tensor(ts), [Fraction(t).limit_denominator() for t in ts]):
        z = looped.latents_at_many(form)["a"]  # [4, 1]
        assert z.shape == (4, 1) and z[:, 0].tolist() == pytest.approx(want), form
    open_ = Walk(WalkSettings(latents=lat, interpolation="linear", period=2.0, loop=False), {"a": 1})
    ts = [-5.0, 3.0, 6.0, 100.0]  # held at both ends; the last keyframe is the end of segment 2
    for form in (ts, np.array(ts)):
        assert open_.latents_at_many(form)["a"][:, 0].tolist() == pytest.approx([0.0, 2.0, 2.0, 2.0]), form
    assert float(open_.latents_at(100.0)["a"]) == 2.0 and float(open_.latents_at(-5.0)["a"]) == 0.0
    single = Walk(WalkSettings(latents=((1.0,),), interpolation="linear", loop=False), {"a": 1})
    assert single.latents_at_many([0.0, 5.0])["a"][:, 0].tolist() == [1.0, 1.0]


def test_slerp_between_equal_keyframes_is_linear_not_nan():
    w = Walk(WalkSettings(latents=((3.0, 4.0), (3.0, 4.0), (0.0, 5.0)), interpolation="slerp", period=1.0), {"a": 2})
    z = w.latents_at(0.5)["a"]
    assert torch.allclose(z, torch.tensor([[3.0, 4.0]]))
    z = w.latents_at(1.5)["a"]  # a real turn: the norm (5) is kept on the arc
    assert torch.isfinite(z).all() and z.norm().item() == pytest.approx(5.0, rel=1e-6)


def test_panel_seeds_are_a_fixed_hash():
    """A seed must mean the same latent in every version: the hash is pinned, not just 'different'."""
    assert panel_seed(42, 0) == 42
    assert panel_seed(42, 1) == 1807691623596919830 and panel_seed(7, 3) == 3053096530315289133


def test_settings_normalise_toml_lists_and_check_latents():
    s = WalkSettings(seeds=[1, 2.0])
    assert s.seeds == (1, 2) and isinstance(s.seeds, tuple) and hash(s)
    s = WalkSettings(latents=[[1, 2], [3, 4]])
    assert s.latents == ((1.0, 2.0), (3.0, 4.0)) and hash(s)
    assert WalkSettings(latents=[[1.0], [2.0]]).count == 2  # one-value latents are fine
    with pytest.raises(ValueError, match="latents: values must be finite numbers"):
        WalkSettings(latents=[[1.0], [float("nan")]])


def test_two_keyframe_open_path_easing_and_slerp_temperature():
    w = Walk(WalkSettings(latents=((0.0,), (1.0,)), interpolation="linear", loop=False, period=1.0), {"a": 1})
    assert [float(w.latents_at(t)["a"]) for t in (0.0, 0.5, 1.0, 3.0)] == [0.0, 0.5, 1.0, 1.0]
    eased = Walk(WalkSettings(latents=((0.0,), (1.0,)), interpolation="linear", loop=False, period=1.0,
                              easing="smoothstep"), {"a": 1})
    assert float(eased.latents_at(0.25)["a"]) == pytest.approx(0.15625)  # 3u^2 - 2u^3
    hot = Walk(WalkSettings(latents=((3.0, 4.0), (0.0, 5.0)), interpolation="slerp", period=1.0, temperature=2.0),
               {"a": 2})
    assert hot.latents_at(0.5)["a"].norm().item() == pytest.approx(10.0, rel=1e-6)



def test_times_of_any_shape_and_dtype_are_located_in_double_precision_in_order():
    """An array or tensor of times is flattened in order (a 0-d tensor is one frame), and located in
    float64 whatever its dtype: a float32 array gives what the same values as Python floats give."""
    import numpy as np
    w = Walk(WalkSettings(latents=((0.0,), (1.0,), (3.0,)), interpolation="linear", period=0.3), {"a": 1})
    grid = np.array([[0.1, 0.25], [0.7, 0.85]])
    z = w.latents_at_many(grid)["a"]
    assert z.shape == (4, 1) and torch.equal(z, w.latents_at_many(grid.ravel().tolist())["a"])
    assert len(set(z[:, 0].tolist())) == 4  # four different places: the order is visible
    z = w.latents_at_many(torch.tensor(0.45, dtype=torch.float64))["a"]
    assert z.shape == (1, 1) and torch.equal(z, w.latents_at(0.45)["a"])
    f32 = np.array([0.1, 0.7, 0.8], dtype=np.float32)
    assert torch.equal(w.latents_at_many(f32)["a"], w.latents_at_many([float(t) for t in f32])["a"])
    # A steep segment shows float32 arithmetic: 0.3f / 0.3 is exactly 1 in float32, 1 + 4e-8 in float64.
    steep = Walk(WalkSettings(latents=((0.0,), (1.0,), (1e6,)), interpolation="linear", period=0.3), {"a": 1})
    edge = np.array([0.3], dtype=np.float32)
    assert float(steep.latents_at_many(edge)["a"]) == pytest.approx(1.0397, abs=1e-3)


def test_keyframe_latents_do_not_depend_on_torch_default_dtype():
    """A seed means the same float32 latent also when a program has made float64 torch's default."""
    want = keyframe_latent(42, 16)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        z = keyframe_latent(42, 16)
    finally:
        torch.set_default_dtype(old)
    assert z.dtype == torch.float32 and torch.equal(z, want)
