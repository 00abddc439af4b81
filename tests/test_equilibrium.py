"""The (un)stable equilibrium ensemble: growth, fade-in, objectives, diametric critic, determinism, resume."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unstable.checkpoint import load_checkpoint
from unstable.config import load_dataclass, to_dict
from unstable.equilibrium.layers import downsample2x, upsample2x
from unstable.equilibrium.losses import colour_variety, embedding_distance
from unstable.equilibrium.piece import EquilibriumPiece
from unstable.equilibrium.schedule import growth_at
from unstable.equilibrium.system import EquilibriumSystem
from unstable.errors import ConfigError
from unstable.schema import defaults
from unstable.system import load_piece
from unstable.trainer import train

ROOT = Path(__file__).resolve().parents[1]

# A piece small enough for a test: 4 -> 8 -> 16 px, narrow layers, 2 steps per stable/fade phase.
TINY = {
    "name": "tiny",
    "kind": "equilibrium",
    "seed": 3,
    "train": {"steps": 6, "grid_every": 2, "grid_samples": 2, "checkpoint_every": 3},
    "generator": {"resolution": 16, "start_resolution": 4, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                  "channel_base": 64, "min_channels": 4, "max_channels": 8, "noise_init": 0.1,
                  "new_rgb_gain": 1.0, "optim": {"batch": 4}},
    "growth": {"stable_steps": 2, "fade_steps": 2},
    "critic": {"mode": "diametric", "embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8,
               "optim": {"batch": 4}},
    "objectives": {"embedding": {"on": True, "distances": {"l1": 0.5, "cosine": 0.5}}},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: a second intra-op thread only adds overhead, and on a busy 2-core
    machine OpenMP's waiting makes it 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def piece(**over) -> EquilibriumPiece:
    return load_dataclass(EquilibriumPiece, merge(TINY, over), source="tiny.toml")


def system(**over) -> EquilibriumSystem:
    return EquilibriumSystem(piece(**over), torch.device("cpu"))


def write_piece(path: Path, data: dict) -> Path:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines: list[str] = []

    def table(prefix: str, d: dict):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) or k in ("distances", "measures")}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict) and k not in scalars:
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines) + "\n")
    return path


# --- growth and shapes ---------------------------------------------------------------------------

def test_growth_schedule():
    g = piece().growth
    seen = [growth_at(step, 3, g) for step in range(12)]
    assert seen[:2] == [(0, 1.0), (0, 1.0)]
    assert seen[2] == (1, 0.0) and seen[3] == (1, 0.5) and seen[4] == (1, 1.0) and seen[5] == (1, 1.0)
    assert seen[6] == (2, 0.0) and seen[7] == (2, 0.5)
    assert all(s == (2, 1.0) for s in seen[8:])
    instant = dataclasses.replace(g, fade_steps=0)
    assert growth_at(2, 3, instant) == (1, 1.0)
    assert growth_at(0, 3, dataclasses.replace(g, stable_steps=0, fade_steps=0)) == (2, 1.0)
    assert growth_at(5, 1, g) == (0, 1.0)


def test_shapes_at_every_stage():
    s = system()
    assert s.stage_resolutions == [4, 8, 16]
    z = torch.randn(3, 8)
    for stage, res in enumerate(s.stage_resolutions):
        for alpha in (0.0, 0.5, 1.0):
            for gen in s.generators:
                x = gen(z, stage, alpha)
                assert x.shape == (3, 3, res, res)
                assert x.abs().max() <= 1.0
            logits, emb = s.critic(x, stage, alpha)
            assert logits.shape == (3, 2) and emb.shape == (3, 8)


def test_sample_is_at_target_resolution_in_every_stage():
    s = system()
    params = defaults(s.param_specs())
    for step in (0, 3, 20):
        s.step_count = step
        out = s.sample({"g0": torch.randn(2, 8), "g1": torch.randn(2, 8)}, params)
        for images in out.values():
            assert images.shape == (2, 3, 16, 16)
            assert images.min() >= 0 and images.max() <= 1


def test_fade_in_starts_from_the_previous_stage_upsampled():
    s = system()
    gen = s.generators[0]
    w = gen.mapping(torch.randn(4, 8))
    for stage in (1, 2):
        before = gen.synthesis(w, stage - 1, 1.0)  # fixed noise
        faded = gen.synthesis(w, stage, 0.0)
        torch.testing.assert_close(faded, upsample2x(before), rtol=0, atol=1e-6)
        assert not torch.allclose(gen.synthesis(w, stage, 1.0), faded)
        # the critic does the same in reverse: at alpha 0 it sees the downsampled image at the previous stage
        image = torch.rand(4, 3, s.stage_resolutions[stage], s.stage_resolutions[stage]) * 2 - 1
        for a, b in zip(s.critic(image, stage, 0.0), s.critic(downsample2x(image), stage - 1, 1.0)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_new_resolutions_start_silent_with_zero_rgb_gain():
    s = system(generator={"new_rgb_gain": 0.0, "start_resolution": 8})
    for res, block in zip(s.generators[0].resolutions, s.generators[0].blocks):
        assert bool(block.to_rgb.weight.abs().sum() == 0) == (res > 8), res


# --- objectives: one gradient step moves each quantity the right way ------------------------------

def _only(objective: str, **extra) -> dict:
    objectives = {name: {"on": name == objective} for name in ("impersonate", "embedding", "colour_variety")}
    objectives[objective].update(extra)
    return objectives


def _descend(s: EquilibriumSystem, measure, movers=(0, 1), lr: float = 1e-2) -> tuple[list[float], list[float]]:
    """Measure per generator, one plain gradient step of the system's generator loss for the generators
    in `movers` (on the same batch, fixed noise, the critic held), measure again."""
    stage, alpha = len(s.stage_resolutions) - 1, 1.0
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))

    def images():
        return [gen(z, stage, alpha) for gen in s.generators]

    before = [float(m.detach()) for m in measure(images(), stage, alpha)]
    total, _ = s.generator_losses(images(), stage, alpha, s.objective_weights({}))
    params = [p for i in movers for p in s.generators[i].parameters()]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p -= lr * g
    after = [float(m.detach()) for m in measure(images(), stage, alpha)]
    return before, after


@pytest.mark.parametrize("measures", [{"std": 1.0}, {"image_std": 1.0}, {"batch_std": 1.0}, {"pairwise": 1.0},
                                      {"entropy": 1.0}, {"logdet": 1.0}])
def test_colour_variety_step_raises_own_variety(measures):
    s = system(objectives=_only("colour_variety", measures=measures, relation="difference"))
    before, after = _descend(s, lambda xs, *_: [colour_variety(x, measures) for x in xs])
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_impersonate_step_raises_target_probability():
    s = system(objectives=_only("impersonate"))

    def p_target(xs, stage, alpha):
        out = []
        for i, x in enumerate(xs):
            logits, _ = s.critic(x, stage, alpha)
            out.append(logits.softmax(dim=1)[:, s.targets[i]].mean())
        return out

    before, after = _descend(s, p_target)
    assert all(a > b for a, b in zip(after, before)), (before, after)


@pytest.mark.parametrize("distances", [{"l1": 1.0}, {"l2": 1.0}, {"mse": 1.0}, {"cosine": 1.0}, {"huber": 1.0},
                                       {"chebyshev": 1.0}, {"angular": 1.0}, {"l1": 0.5, "cosine": 0.5}])
@pytest.mark.parametrize("pairing", ["paired", "all_pairs", "centroid"])
def test_embedding_step_reduces_distance(distances, pairing):
    s = system(objectives=_only("embedding", distances=distances, pairing=pairing))

    def distance(xs, stage, alpha):
        emb = [s.critic(x, stage, alpha)[1] for x in xs]
        return [embedding_distance(emb[i], emb[s.targets[i]], distances, pairing) for i in range(len(xs))]

    # One generator moves at a time, so the distance it is asked to shrink is to a target that stays put.
    for mover in (0, 1):
        before, after = _descend(s, distance, movers=(mover,))
        assert after[mover] < before[mover], (mover, before, after)


def test_distances_are_zero_on_identical_and_have_finite_gradients():
    a = torch.randn(4, 8, requires_grad=True)
    for name in ("l1", "l2", "mse", "huber", "chebyshev", "cosine", "angular"):
        d = embedding_distance(a, a.detach(), {name: 1.0}, "paired")
        assert float(d.detach()) == pytest.approx(0.0, abs=2e-3), name
        (g,) = torch.autograd.grad(d, a)
        assert torch.isfinite(g).all(), name
        assert float(embedding_distance(a.detach(), -a.detach(), {name: 1.0}, "paired")) > float(d.detach()) + 0.1, name


def test_variety_measures_rank_a_colourful_batch_above_a_grey_one():
    grey = torch.zeros(4, 3, 16, 16)
    colourful = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name in ("std", "image_std", "batch_std", "pairwise", "entropy", "logdet"):
        assert float(colour_variety(colourful, {name: 1.0})) > float(colour_variety(grey, {name: 1.0})), name


# --- the critic --------------------------------------------------------------------------------

def test_diametric_alternates_losses_on_different_batches():
    s = system(critic={"mode": "diametric", "updates": 1})
    params = defaults(s.param_specs())
    for _ in range(4):
        s.step(params)
    log = list(s.critic_log)
    assert [phase for _, _, phase, _ in log] == ["true", "opposed", "true", "opposed"]
    assert len({batch for *_, batch in log}) == 4  # a fresh batch for every update

    # Two updates per step: still one loss per update, each on its own batch, never summed.
    s = system(critic={"mode": "diametric", "updates": 2})
    calls = []
    original = s.opt_c.step
    s.opt_c.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    for _ in range(2):
        s.step(params)
    log = list(s.critic_log)
    assert [phase for _, _, phase, _ in log] == ["true", "opposed", "true", "opposed"]
    assert [step for step, *_ in log] == [0, 0, 1, 1]
    assert len({batch for *_, batch in log}) == 4
    assert len(calls) == 4


def test_diametric_opposed_update_pushes_towards_the_swapped_labels():
    """Through `step` alone: one critic update a step, the true labels then the swapped ones; the
    critic's belief on a fixed set of each generator's images moves the way each update says."""
    s = system(critic={"mode": "diametric", "updates": 1, "optim": {"lr": 0.01}},
               generator={"start_resolution": 16, "optim": {"lr": 1e-6}})
    params = defaults(s.param_specs())
    stage, alpha = s.growth()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    shown = s.sample({name: z for name in s.names}, params)
    x = torch.cat([shown[name] for name in s.names]) * 2 - 1  # [2*4, 3, 16, 16] in the critic's -1..1
    labels = torch.arange(2).repeat_interleave(4)
    swapped = torch.tensor(s.targets)[labels]

    def p(lbl):
        with torch.no_grad():
            return float(s.critic(x, stage, alpha)[0].softmax(1).gather(1, lbl[:, None]).mean())

    before = p(labels)
    s.step(params)  # update 0: the true labels
    assert p(labels) > before
    before = p(swapped)
    s.step(params)  # update 1: the opposed loss
    assert p(swapped) > before
    assert [phase for _, _, phase, _ in s.critic_log] == ["true", "opposed"]


def test_classifier_mode_learns_to_tell_generators_apart():
    s = system(critic={"mode": "classifier", "optim": {"lr": 0.01}}, growth={"stable_steps": 1000},
               objectives=_only("colour_variety"), generator={"optim": {"lr": 1e-6}})
    params = defaults(s.param_specs())
    accuracy = [s.step(params)["critic_accuracy"] for _ in range(30)]
    assert {phase for _, _, phase, _ in s.critic_log} == {"true"}
    assert sum(accuracy[-5:]) / 5 > 0.9


# --- the system protocol --------------------------------------------------------------------------

def test_step_returns_finite_float_scalars():
    s = system()
    params = defaults(s.param_specs())
    for _ in range(8):
        scalars = s.step(params)
        assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in scalars.values())
    for key in ("resolution", "alpha", "critic_loss", "critic_phase", "g0_impersonate", "g0_p_target",
                "g0_embedding", "g0_variety", "g1_loss"):
        assert key in scalars
    assert s.step_count == 8 and scalars["resolution"] == 16.0


def test_param_specs_and_toggles():
    s = system()
    specs = {spec.name: spec for spec in s.param_specs()}
    for name in ("temperature", "learning_rate", "training", "impersonate_weight", "embedding_weight",
                 "colour_variety_weight"):
        assert name in specs
    params = defaults(s.param_specs())
    before = [p.clone() for p in s.generators[0].parameters()]
    out = s.step({**params, "training": 0.0})
    assert out["training"] == 0.0 and s.step_count == 0
    assert all(torch.equal(a, b) for a, b in zip(before, s.generators[0].parameters()))
    critic_before = [p.clone() for p in s.critic.parameters()]
    s.step({**params, "critic_training": 0.0})
    assert all(torch.equal(a, b) for a, b in zip(critic_before, s.critic.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, s.generators[0].parameters()))
    # turned-off objectives are not offered as live parameters
    names = {spec.name for spec in system(objectives=_only("impersonate")).param_specs()}
    assert "impersonate_weight" in names and "embedding_weight" not in names


def test_sample_is_deterministic_and_leaves_state_alone():
    s = system()
    params = defaults(s.param_specs())
    for _ in range(3):
        s.step(params)
    latents = {"g0": torch.randn(3, 8), "g1": torch.randn(3, 8)}
    rng = s.rng.get_state()
    weights = [p.clone() for p in s.generators.parameters()]
    first = s.sample(latents, params)
    second = s.sample(latents, params)
    for name in latents:
        assert torch.equal(first[name], second[name])
    assert torch.equal(rng, s.rng.get_state()) and s.step_count == 3
    assert all(torch.equal(a, b) for a, b in zip(weights, s.generators.parameters()))
    assert not torch.equal(first["g0"], first["g1"])
    hot = s.sample(latents, {**params, "temperature": 2.0})
    assert not torch.equal(hot["g0"], first["g0"])


def test_single_image_path_matches_the_batched_one():
    # Batch 1 folds styles into the weights (the live path); it must draw the same picture.
    s = system()
    params = defaults(s.param_specs())
    z = torch.randn(3, 8)
    together = s.sample({"g0": z}, params)["g0"]
    alone = torch.cat([s.sample({"g0": z[i:i + 1]}, params)["g0"] for i in range(3)])
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-5)


def test_same_seed_same_weights_and_other_seed_other_weights():
    def run(seed):
        s = system(seed=seed)
        params = defaults(s.param_specs())
        for _ in range(3):
            s.step(params)
        return torch.cat([p.flatten() for p in s.generators.parameters()] +
                         [p.flatten() for p in s.critic.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_state_dict_loads_with_weights_only_and_restores_exactly():
    s = system()
    params = defaults(s.param_specs())
    for _ in range(3):
        s.step(params)
    buffer = io.BytesIO()
    torch.save(s.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    t = system()
    t.load_state_dict(state)
    assert t.step_count == 3
    a, b = s.step(params), t.step(params)
    assert a == b
    for p, q in zip(s.generators.parameters(), t.generators.parameters()):
        assert torch.equal(p, q)


def test_protocol_declares_modules_optimisers_and_a_sampling_copy():
    s = system()
    assert list(s.modules()) == ["g0", "g1", "critic"] and s.modules()["critic"] is s.critic
    assert set(s.optimizers()) == {"generators", "critic"}
    twin = s.sampling_copy()
    assert twin.piece is s.piece and twin.critic is None and twin.optimizers() == {}
    assert all(a is not b for a, b in zip(twin.generators.parameters(), s.generators.parameters()))
    params = defaults(s.param_specs())
    z = {"g0": torch.randn(2, 8, generator=torch.Generator().manual_seed(1)), "g1": torch.zeros(2, 8)}
    before = twin.sample(z, params)
    for _ in range(3):  # into the first fade-in: growth follows the step count
        s.step(params)
    assert all(torch.equal(before[k], twin.sample(z, params)[k]) for k in z)
    twin.accumulate(s)  # decay 0: a plain copy, step count (growth) included
    assert twin.step_count == 3 and twin.growth() == s.growth()
    assert all(torch.equal(twin.sample(z, params)[k], s.sample(z, params)[k]) for k in z)
    old = [p.clone() for p in twin.generators.parameters()]
    s.step(params)
    twin.accumulate(s, decay=0.9)
    assert all(torch.allclose(t, 0.9 * o + 0.1 * p.detach())
               for t, o, p in zip(twin.generators.parameters(), old, s.generators.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(twin.generators.buffers(), s.generators.buffers()))
    with pytest.raises(RuntimeError, match="sampling copy"):
        twin.step(params)


def test_a_non_finite_loss_is_not_hidden():
    # The guard judges bad steps: the system steps them and returns their non-finite scalars.
    s = system()
    scalars = s.step({**defaults(s.param_specs()), "impersonate_weight": float("nan")})
    assert any(v != v for v in scalars.values())
    assert not all(torch.isfinite(p).all() for p in s.generators.parameters())


def test_fingerprint_follows_architecture_only():
    base = system().fingerprint()
    assert system(generator={"optim": {"lr": 0.01}}, critic={"mode": "classifier"}).fingerprint() == base
    assert system(generator={"max_channels": 16}).fingerprint() != base
    assert system(critic={"embedding_dim": 4}).fingerprint() != base


def test_three_generators_with_a_target_map():
    s = system(ensemble={"generators": 3, "targets": {"g0": "g2", "g1": "g2", "g2": "g0"}})
    assert s.targets == [2, 2, 0]
    assert list(s.panels()) == ["g0", "g1", "g2"]
    assert system(ensemble={"generators": 3}).targets == [1, 2, 0]
    params = defaults(s.param_specs())
    for _ in range(3):
        scalars = s.step(params)
    assert "g2_loss" in scalars and all(torch.isfinite(torch.tensor(list(scalars.values()))))


@pytest.mark.parametrize("over, key", [
    ({"ensemble": {"targets": {"g0": "g5"}}}, "ensemble.targets.g0"),
    ({"ensemble": {"targets": {"g0": "g0"}}}, "ensemble.targets.g0"),
    ({"ensemble": {"targets": {"g7": "g0"}}}, "ensemble.targets.g7"),
    ({"ensemble": {"lr_scale": {"g9": 2.0}}}, "ensemble.lr_scale.g9"),
    ({"generator": {"resolution": 48}}, "generator.resolution"),
    ({"generator": {"start_resolution": 32}}, "generator.start_resolution"),
    ({"objectives": {"embedding": {"distances": {"l3": 1.0}}}}, "objectives.embedding.distances.l3"),
    ({"objectives": {"colour_variety": {"measures": {"hue": 1.0}}}}, "objectives.colour_variety.measures.hue"),
    ({"objectives": {"impersonate": {"on": False}, "embedding": {"on": False},
                     "colour_variety": {"on": False}}}, "objectives"),
    ({"critic": {"mode": "diametrical"}}, "critic.mode"),
])
def test_bad_pieces_name_the_key(over, key):
    with pytest.raises(ConfigError) as err:
        piece(**over)
    assert err.value.key == key, str(err.value)


# --- the piece files and the trainer --------------------------------------------------------------

def test_series_pieces_load_and_run():
    modes = {}
    for i in range(1, 7):
        path = ROOT / "pieces" / f"equilibrium-1-{i}.toml"
        text = path.read_text()
        assert text.startswith("#"), f"{path.name}: needs a comment header saying what it explores"
        p = load_piece(path)
        modes[i] = p.critic.mode
        assert p.ensemble.generators == 2 and p.generator.resolution == 64
        s = EquilibriumSystem(p, torch.device("cpu"))
        scalars = s.step(defaults(s.param_specs()))  # the first stage, small and quick
        assert all(torch.isfinite(torch.tensor(list(scalars.values()))))
    assert modes[1] == modes[2] == "diametric"
    assert all(modes[i] == "classifier" for i in range(3, 7))


def test_resume_through_the_trainer_is_exact(tmp_path):
    path = write_piece(tmp_path / "tiny.toml", TINY)
    quiet = dict(show_progress=False, echo=lambda *_: None)
    whole = train(path, steps=6, out=tmp_path / "whole", **quiet)
    half = train(path, steps=3, out=tmp_path / "half", **quiet)
    train(path, steps=6, out=half, resume=True, **quiet)
    a = load_checkpoint(whole / "checkpoint.pt")
    b = load_checkpoint(half / "checkpoint.pt")
    assert a["step"] == b["step"] == 6

    def tensors(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{prefix}[{i}]")

    ta, tb = dict(tensors(a["system"])), dict(tensors(b["system"]))
    assert ta.keys() == tb.keys() and len(ta) > 50
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert (whole / "grid.png").is_file() and (half / "grids" / "step_000006.png").is_file()
    assert to_dict(load_piece(path)) == a["piece"]


# Pinned by mutation testing (docs/mutation.md): each distance, variety measure and relation on
# tiny inputs against the formula written out in numpy.

def _np_images(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


def test_distances_row_by_row_against_their_formulas():
    from unstable.equilibrium.losses import DISTANCES
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.2, -0.3, 0.1]])
    b = np.array([[3.0, 4.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    d = np.abs(a - b)
    huber = np.where(d < 1.0, 0.5 * d ** 2, d - 0.5).mean(-1)
    norm = np.linalg.norm
    cos = np.array([(x @ y) / max(norm(x) * norm(y), 1e-8) for x, y in zip(a, b)])
    want = {
        "l1": d.mean(-1), "l2": np.sqrt((d ** 2).mean(-1) + 1e-8), "mse": (d ** 2).mean(-1), "huber": huber,
        "chebyshev": d.max(-1), "cosine": 1 - cos,
        "angular": np.arccos(np.clip(cos, -1 + 1e-6, 1 - 1e-6)) / np.pi,
    }
    ta, tb = torch.tensor(a), torch.tensor(b)
    for name, fn in DISTANCES.items():
        np.testing.assert_allclose(fn(ta, tb).numpy(), want[name], rtol=1e-6, atol=1e-9, err_msg=name)
    # opposite directions: the angular distance is ~1 (half a turn), not clamped to a right angle
    opp = DISTANCES["angular"](torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])).item()
    assert opp == pytest.approx(np.arccos(-1 + 1e-6) / np.pi, rel=1e-5) and opp > 0.999  # float32


def test_embedding_distance_pairings_and_weights():
    from unstable.equilibrium.losses import embedding_distance
    g = torch.Generator().manual_seed(3)
    mine, target = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    l1 = lambda x, y: (x - y).abs().mean(-1)  # noqa: E731
    all_pairs = torch.stack([l1(m, t) for m in mine for t in target]).mean()
    assert embedding_distance(mine, target, {"l1": 2.0}, "all_pairs").item() == pytest.approx(2 * all_pairs.item())
    centroid = l1(mine.mean(0), target.mean(0))
    assert embedding_distance(mine, target, {"l1": 1.0, "mse": 0.0}, "centroid").item() == pytest.approx(centroid.item())
    paired = embedding_distance(mine[:2], target, {"l1": 1.0, "chebyshev": 0.5})
    assert paired.item() == pytest.approx((l1(mine[:2], target).mean() + 0.5 * (mine[:2] - target).abs().amax(-1).mean()).item())
    with pytest.raises(ValueError, match="paired embedding distance needs equal batches, got 3 and 2"):
        embedding_distance(mine, target, {"l1": 1.0})
    with pytest.raises(ValueError, match="unknown pairing 'nearest'"):
        embedding_distance(mine, target, {"l1": 1.0}, "nearest")


def test_colours_subsample_by_powers_of_two():
    from unstable.equilibrium.losses import _colours
    x = torch.tensor(_np_images(0, (1, 3, 7, 7)))
    assert _colours(x).shape == (49, 3)
    # 49 > 9 pixels: stride 2 gives 3 x 3 = 9 by the count (a 7-wide image strided by 2 keeps 4 x 4)
    c = _colours(x, max_pixels=9)
    assert c.shape == (16, 3)
    np.testing.assert_allclose(c.numpy(), ((x[:, :, ::2, ::2] + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3).numpy())
    assert _colours(torch.tensor(_np_images(0, (1, 3, 8, 8))), max_pixels=16).shape == (16, 3)
    assert _colours(torch.tensor(_np_images(0, (1, 3, 8, 8))), max_pixels=15).shape == (4, 3)
    assert torch.equal(_colours(torch.tensor([[[[-1.0]], [[0.0]], [[1.0]]]])), torch.tensor([[0.0, 0.5, 1.0]]))


def test_variety_measures_against_numpy():
    from unstable.equilibrium.losses import (colour_variety, variety_batch_std, variety_entropy,
                                             variety_image_std, variety_logdet, variety_pairwise, variety_std)
    imgs = _np_images(1, (3, 3, 4, 5))
    t = torch.tensor(imgs)
    x = (imgs + 1) / 2
    cols = x.transpose(0, 2, 3, 1).reshape(-1, 3)
    assert variety_std(t).item() == pytest.approx(cols.std(0, ddof=1).mean())
    assert variety_image_std(t).item() == pytest.approx(x.reshape(3, 3, -1).std(2, ddof=1).mean())
    assert variety_batch_std(t).item() == pytest.approx(x.std(0, ddof=1).mean())
    d = np.sqrt(((cols[:, None] - cols[None]) ** 2).sum(-1) + 1e-8)
    assert variety_pairwise(t).item() == pytest.approx(d.mean() / np.sqrt(3))
    centred = cols - cols.mean(0)
    cov = centred.T @ centred / (len(cols) - 1) + 1e-4 * np.eye(3)
    assert variety_logdet(t).item() == pytest.approx(np.linalg.slogdet(cov)[1] / 3)

    def entropy(c, bins):
        centres = (np.arange(bins) + 0.5) / bins
        logits = -(((c[:, :, None] - centres) * bins) ** 2) * 2.0
        member = np.exp(logits - logits.max(-1, keepdims=True))
        member /= member.sum(-1, keepdims=True)
        hist = np.einsum("pi,pj,pk->ijk", member[:, 0], member[:, 1], member[:, 2]).ravel() / len(c)
        return -(hist * np.log(hist + 1e-12)).sum() / np.log(bins ** 3)

    assert variety_entropy(t).item() == pytest.approx(entropy(cols, 4))
    assert variety_entropy(t, bins=3).item() == pytest.approx(entropy(cols, 3))
    mix = colour_variety(t, {"std": 2.0, "logdet": 0.5, "no_such_measure": 0.0})
    assert mix.item() == pytest.approx(2 * variety_std(t).item() + 0.5 * variety_logdet(t).item())


def test_variety_measures_gradients_match_atens_own_formulation():
    # The spreads and the entropy are written out for speed (contiguous passes); their values and
    # gradients must be those of the direct forms: ATen's std and a softmax over the last axis.
    from unstable.equilibrium.losses import (_colours, variety_batch_std, variety_entropy,
                                             variety_image_std, variety_std)

    def entropy(images, bins=4):
        c = _colours(images, max_pixels=8192)
        centres = (torch.arange(bins, dtype=c.dtype) + 0.5) / bins
        member = torch.softmax(-((c[:, :, None] - centres) * bins).square() * 2.0, dim=-1)
        rg = (member[:, 0, :, None] * member[:, 1, None, :]).reshape(c.shape[0], bins * bins)
        hist = (rg.t() @ member[:, 2, :]).flatten() / c.shape[0]
        return -(hist * torch.log(hist + 1e-12)).sum() / math.log(bins ** 3)

    direct = {
        variety_std: lambda t: _colours(t).std(dim=0).mean(),
        variety_image_std: lambda t: ((t + 1) * 0.5).flatten(2).std(dim=2).mean(),
        variety_batch_std: lambda t: ((t + 1) * 0.5).std(dim=0).mean(),
        variety_entropy: entropy,
    }
    images = torch.tanh(torch.randn(4, 3, 64, 48, generator=torch.Generator().manual_seed(5)))
    for measure, reference in direct.items():
        for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-4)):
            mine = images.to(dtype).clone().requires_grad_()
            theirs = images.to(dtype).clone().requires_grad_()
            value, expected = measure(mine), reference(theirs)
            value.backward()
            expected.backward()
            assert value.item() == pytest.approx(expected.item(), rel=rtol), measure.__name__
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=rtol, atol=rtol * theirs.grad.abs().max().item(),
                                       msg=lambda m: f"{measure.__name__}: {m}")


def test_pairwise_and_entropy_subsample_past_their_pixel_budgets():
    from unstable.equilibrium.losses import variety_entropy, variety_pairwise
    # 27 x 19 = 513 pixels: one past pairwise's 512, so every other row and column is used
    t = torch.tensor(_np_images(2, (1, 3, 27, 19)))
    cols = ((t[:, :, ::2, ::2].numpy() + 1) / 2).transpose(0, 2, 3, 1).reshape(-1, 3)
    d = np.sqrt(((cols[:, None] - cols[None]) ** 2).sum(-1) + 1e-8)
    assert variety_pairwise(t).item() == pytest.approx(d.mean() / np.sqrt(3))
    # 3 x 2731 = 8193 pixels: one past entropy's 8192
    wide = torch.tensor(_np_images(3, (1, 3, 3, 2731)))
    assert variety_entropy(wide).item() == pytest.approx(variety_entropy(wide[:, :, ::2, ::2]).item())
    assert variety_entropy(wide).item() != pytest.approx(variety_entropy(wide[:, :, :, :2730]).item(), rel=1e-9)


def test_relational_losses_written_out():
    from unstable.equilibrium.losses import classification_loss, relational_loss
    mine, target = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    assert relational_loss(mine, target, "softplus").item() == pytest.approx(softplus(10 * 0.2) / 10)
    assert relational_loss(mine, target, "softplus", sharpness=4.0, margin=0.1).item() == pytest.approx(
        softplus(4 * 0.3) / 4)
    assert relational_loss(mine, target, "hinge", margin=0.1).item() == pytest.approx(0.3)
    assert relational_loss(target, mine, "hinge").item() == 0.0
    assert relational_loss(mine, target, "difference", margin=0.1).item() == pytest.approx(0.3)
    assert relational_loss(mine, target, "difference").item() == pytest.approx(0.2)
    assert relational_loss(mine, -target, "ratio").item() == pytest.approx(np.log(0.5 + 1e-6) - np.log(0.3 + 1e-6))
    with pytest.raises(ValueError, match="unknown relation 'max'"):
        relational_loss(mine, target, "max")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    want = -np.mean([2 - np.log(np.exp(2) + 1), 1 - np.log(1 + np.exp(1))])
    assert classification_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(want)


def test_variety_measures_on_degenerate_batches():
    from unstable.equilibrium.losses import variety_entropy, variety_logdet
    black = -torch.ones(2, 3, 4, 4)  # one colour in a corner of the cube: far cells get ~e^-96 mass
    e = variety_entropy(black)
    assert torch.isfinite(e) and 0 <= e.item() < 0.1
    two = torch.tensor([[[[-1.0]], [[0.0]], [[0.5]]], [[[1.0]], [[0.2]], [[-0.5]]]], dtype=torch.float64)
    cols = ((two.numpy() + 1) / 2).reshape(2, 3)
    centred = cols - cols.mean(0)
    cov = centred.T @ centred / 1 + 1e-4 * np.eye(3)  # two pixels: divided by N - 1 = 1
    assert variety_logdet(two).item() == pytest.approx(np.linalg.slogdet(cov)[1] / 3)


def test_variety_measures_keep_float64_precision():
    """On float64 images the histogram centres and the covariance's 1e-4 ridge are float64 too:
    entropy (3 bins: centres 1/6, 1/2, 5/6, not exact in float32) and log det agree with numpy
    to 1e-12, not just to float32's 1e-7."""
    from unstable.equilibrium.losses import variety_entropy, variety_logdet
    imgs = _np_images(5, (3, 3, 4, 5))
    t = torch.tensor(imgs, dtype=torch.float64)
    cols = ((imgs + 1) / 2).transpose(0, 2, 3, 1).reshape(-1, 3)
    centred = cols - cols.mean(0)
    cov = centred.T @ centred / (len(cols) - 1) + 1e-4 * np.eye(3)
    assert variety_logdet(t).dtype == torch.float64
    assert variety_logdet(t).item() == pytest.approx(np.linalg.slogdet(cov)[1] / 3, rel=1e-12)
    bins = 3
    centres = (np.arange(bins) + 0.5) / bins
    logits = -(((cols[:, :, None] - centres) * bins) ** 2) * 2.0
    member = np.exp(logits - logits.max(-1, keepdims=True))
    member /= member.sum(-1, keepdims=True)
    hist = np.einsum("pi,pj,pk->ijk", member[:, 0], member[:, 1], member[:, 2]).ravel() / len(cols)
    want = -(hist * np.log(hist + 1e-12)).sum() / np.log(bins ** 3)
    assert variety_entropy(t, bins=bins).item() == pytest.approx(want, rel=1e-12)


def test_to_rgb_on_channels_last_activations_matches_nchw_and_keeps_the_gradients_layout():
    # A channels_last x takes its own route (the pixels as rows of the NHWC memory, a backward of
    # its own): the same rgb and gradients as the NCHW route, and x's gradient channels_last.
    from unstable.equilibrium.generator import ToRGB, _ModulatedPixelsToRGB

    rng = torch.Generator().manual_seed(11)
    to_rgb = ToRGB(16, 32, rng).double()
    x = torch.randn(4, 16, 8, 8, generator=rng, dtype=torch.float64)
    w = torch.randn(4, 32, generator=rng, dtype=torch.float64)
    grads = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.clone(memory_format=layout).requires_grad_()
        wl = w.clone().requires_grad_()
        to_rgb.zero_grad()
        rgb = to_rgb(xl, wl)  # [4, 3, 8, 8]
        assert rgb.shape == (4, 3, 8, 8)
        (rgb * torch.linspace(-1, 1, rgb.numel(), dtype=rgb.dtype).view_as(rgb)).sum().backward()
        grads[layout] = (rgb.detach(), xl.grad, wl.grad, *(p.grad.clone() for p in to_rgb.parameters()))
    assert grads[torch.channels_last][1].is_contiguous(memory_format=torch.channels_last)
    for nchw, nhwc in zip(grads[torch.contiguous_format], grads[torch.channels_last]):
        torch.testing.assert_close(nhwc, nchw, rtol=1e-12, atol=1e-12)
    pixels = x.permute(0, 2, 3, 1).reshape(4, 64, 16).clone().requires_grad_()
    weight = torch.randn(4, 3, 16, generator=rng, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=rng, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ModulatedPixelsToRGB.apply, (pixels, weight, bias))
