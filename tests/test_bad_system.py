"""The BAD system on tiny base models: what a step may touch, live parameters, bad steps undone by the
training guard, the sampling copy, resume, the base-model cache, and `unstable train` + `unstable eval`
end to end."""

import csv
import dataclasses
import io
import json
import math

import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_piece_file

from unstable.cli import main
from unstable.errors import ConfigError, UnstableError
from unstable.system import build_system, piece_from_dict


def tiny(cache, **over):
    """A piece whose base models train in a few steps (never the real cached ones)."""
    d = {"name": "tiny", "kind": "divergence", "seed": 1, "cache": str(cache),
         "train": {"steps": 3, "grid_every": 2, "grid_samples": 2, "checkpoint_every": 2},
         "vae": {"steps": 3, "batch": 16, "hidden": 64},
         "classifier": {"steps": 3, "batch": 16, "width": 8},
         "bad": {"batch": 32, "real_pool": 300, "lr": 1e-3}}
    for key, value in over.items():
        d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
    return piece_from_dict(d, "tiny.toml")


class Silent:
    def __init__(self, *a, **k):
        pass

    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-cache")


def ready(cache, **over):
    system = build_system(tiny(cache, **over), torch.device("cpu"))
    system.prepare(Silent)
    return system


def clone(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_draws_28x28_in_unit_range(cache):
    s = ready(cache)
    out = s.sample({"decoder": torch.randn(5, 16), "base": torch.randn(5, 16)}, {"temperature": 0.5})
    for images in out.values():
        assert images.shape == (5, 3, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert s.decoder(torch.randn(3, 16)).shape == (3, 1, 28, 28)
    assert s.panels() == {"decoder": 16, "base": 16}


@pytest.mark.parametrize("loss", [{"couple": "mmd"}, {"couple": "mmd", "classwise": "predicted"},
                                  {"couple": "mmd", "mmd": "reference", "form": "ratio"}, {"couple": "isfid"}])
def test_step_changes_only_the_decoder(cache, loss):
    couple = loss["couple"]
    s = ready(cache, loss=loss)
    dec, base, cls = clone(s.decoder), clone(s.base_decoder), clone(s.classifier)
    scalars = s.step({})
    assert s.step_count == 1 and all(math.isfinite(v) for v in scalars.values())
    assert ("class_mmd" in scalars) == (couple == "mmd") and ("fid" in scalars) == (couple == "isfid")
    params = dict(s.decoder.named_parameters())
    assert all(not torch.equal(params[k], dec[k]) for k in params)  # every decoder weight moved
    assert same(base, clone(s.base_decoder)) and same(cls, clone(s.classifier))


@pytest.mark.parametrize("features", [{"layer": "embedding"}, {"layer": "logits"}])
def test_a_step_in_chunks_is_the_whole_batch_step(cache, features):
    """On a CPU a step's images go through the convolutions and the extractor 32 at a time (cache
    locality, unstable/divergence/objective.py): the same losses, gradients and BatchNorm statistics
    as one pass over the batch, within float rounding, and the same random draws after it. (Compared
    before the optimiser: Adam's first steps move a weight by about lr whatever the size of its
    gradient, so a rounding apart in a near-zero gradient is a step apart in the weights.)"""
    whole, chunked = ready(cache, features=features), ready(cache, features=features)
    assert chunked._chunk == 32 and whole.piece.bad.batch == 32
    whole._chunk = None
    chunked._chunk = 7  # uneven: 7, 7, 7, 7, 4
    for system in (whole, chunked):
        system.optimizer.step = lambda: None  # the gradients stay to be compared
    a, b = whole.step({}), chunked.step({})
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k
    # Each weight's gradient within 1 % of its size (a sum over the batch that mostly cancels loses
    # digits), and within 1e-4 of the whole gradient's (the bias before the BatchNorm, whose exact
    # gradient is zero, is all rounding).
    total = torch.stack([x.grad.norm() for x in whole.decoder.parameters()]).norm()
    for (name, x), y in zip(whole.decoder.named_parameters(), chunked.decoder.parameters()):
        assert (x.grad - y.grad).norm() <= 1e-2 * x.grad.norm() + 1e-4 * total, name
    for (name, x), y in zip(whole.decoder.named_buffers(), chunked.decoder.buffers()):
        assert torch.allclose(x.float(), y.float(), rtol=1e-5, atol=1e-7), name  # BatchNorm's running stats
    assert torch.equal(whole.gen.get_state(), chunked.gen.get_state())


def test_step_in_the_classifier_embedding(cache):
    s = ready(cache, features={"layer": "embedding"}, loss={"classwise": "predicted"})
    images = torch.rand(4, 1, 28, 28)
    assert s.extractor(images).shape == (4, 128) and s._real_pool()["features"].shape[1] == 128
    # The embedding is the classifier's own penultimate layer: its last linear layer maps it to the logits.
    assert torch.allclose(s.classifier.classify(s.extractor(images)), s.classifier(images), atol=1e-5)
    dec, cls = clone(s.decoder), clone(s.classifier)
    scalars = s.step({})
    assert 0 <= scalars["class_entropy"] <= math.log(10) + 1e-6 and math.isfinite(scalars["class_mmd"])
    assert not same(dec, clone(s.decoder)) and same(cls, clone(s.classifier))
    with pytest.raises(UnstableError, match="features.layer = .embedding. is for extractor = .custom. only"):
        ready(cache, features={"extractor": "mobilenet_v2", "weights": "none", "layer": "embedding"})


def test_step_with_a_torchvision_extractor(cache):
    # Random weights (asked for explicitly) at a tiny input size: the wiring, not ImageNet quality.
    s = ready(cache, features={"extractor": "mobilenet_v2", "weights": "none", "size": 32},
              loss={"couple": "isfid"}, bad={"batch": 8, "real_pool": 40})
    dec = clone(s.decoder)
    scalars = s.step({"alpha": -1.0, "beta": 0.1})
    assert math.isfinite(scalars["fid"]) and not same(dec, clone(s.decoder))
    assert all(not p.requires_grad for p in s.extractor.parameters())


def test_live_parameters_apply_on_the_next_step(cache):
    s = ready(cache)
    before = clone(s.decoder)
    s.step({"alpha": 0.0, "beta": 0.0})  # zero objective, zero gradient: Adam leaves weights alone
    after_zero = clone(s.decoder)
    assert all(torch.equal(before[k], after_zero[k]) for k, _ in s.decoder.named_parameters())
    # learning_rate multiplies the piece's own Adam rate (bad.lr = 1e-3 here), as in every system.
    scalars = s.step({"alpha": 2.0, "beta": 5.0, "learning_rate": 0.3, "temperature": 1.5})
    assert scalars["alpha"] == 2.0 and scalars["beta"] == 5.0 and scalars["temperature"] == 1.5
    assert scalars["objective"] == pytest.approx(2.0 * scalars["class_mmd"] - 5.0 * scalars["global_mmd"], rel=1e-5)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4) and scalars["lr"] == pytest.approx(3e-4)
    spec = {p.name: p for p in s.param_specs()}["learning_rate"]
    assert (spec.lo, spec.hi, spec.default, spec.log) == (0.01, 10.0, 1.0, True)
    assert not same(after_zero, clone(s.decoder))
    # Two systems in the same state, one step with different beta: different decoders.
    a, b = ready(cache), ready(cache)
    a.step({"beta": 0.0})
    b.step({"beta": 100.0})
    assert not same(clone(a.decoder), clone(b.decoder))
    frozen = clone(a.decoder)
    assert a.step({"training": 0}) == {"training": 0.0} and same(frozen, clone(a.decoder)) and a.step_count == 1


def test_batch_fraction_draws_a_share_of_the_batch_with_a_floor(cache):
    """A live show on a CPU trains BAD on a share of bad.batch; never under 40 samples (4 a class on
    average for the class-wise MMD), never over the piece's batch; 1 is the piece's own batch."""
    s = ready(cache, bad={"batch": 256, "real_pool": 300, "lr": 1e-3})
    assert s.step({})["batch"] == 256
    assert s.step({"batch_fraction": 0.25})["batch"] == 64
    assert s.step({"batch_fraction": 1 / 16})["batch"] == 40
    small = ready(cache)  # bad.batch = 32: below the floor, the piece's batch stays
    assert small.step({"batch_fraction": 0.25})["batch"] == 32


def test_a_nan_step_surfaces_and_the_training_guard_restores_the_last_good_decoder(cache, caplog):
    from unstable.guard import GuardSettings, TrainingGuard
    # The system hides nothing: a bad step returns its non-finite objective and leaves its weights.
    s = ready(cache)
    scalars = s.step({"alpha": float("nan")})  # e.g. a broken OSC message
    assert math.isnan(scalars["objective"]) and not all(torch.isfinite(p).all() for p in s.decoder.parameters())

    s = ready(cache)
    guard = TrainingGuard(s, GuardSettings(good_every=1))
    assert guard.step({}) is not None
    good, good_opt = clone(s.decoder), [t.clone() for v in s.optimizer.state.values() for t in v.values()]
    assert guard.step({"alpha": float("nan")}) is None
    assert guard.last_reason.startswith("non-finite") and guard.recoveries == 1 and s.step_count == 1
    # Weights, BatchNorm statistics and Adam's moments: a NaN moment would poison every later step.
    assert same(good, clone(s.decoder))
    assert all(torch.equal(a, b) for a, b in zip(good_opt, [t for v in s.optimizer.state.values()
                                                             for t in v.values()]))
    assert "undone" in caplog.text
    scalars = guard.step({})  # carries on: finite, moving again, at the backed-off rate
    assert scalars is not None and all(math.isfinite(v) for v in scalars.values())
    assert not same(good, clone(s.decoder)) and s.step_count == 2
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(s.piece.bad.lr * 0.5)


def test_the_sampling_copy_follows_the_decoder_and_shares_the_frozen_base(cache):
    s = ready(cache)
    assert set(s.modules()) == {"decoder"} and set(s.optimizers()) == {"decoder"}
    twin = s.sampling_copy()
    assert twin.decoder is not s.decoder and twin.base_decoder is s.base_decoder and twin.piece is s.piece
    assert twin.optimizers() == {} and all(not p.requires_grad for p in twin.decoder.parameters())
    z = {"decoder": torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), "base": torch.zeros(3, 16)}
    before = twin.sample(z, {})
    s.step({})
    assert torch.equal(twin.sample(z, {})["decoder"], before["decoder"])  # training leaves the copy alone
    twin.accumulate(s)  # decay 0: a plain copy
    assert twin.step_count == 1 and same(clone(s.decoder), clone(twin.decoder))
    assert all(torch.equal(a, b) for a, b in zip(twin.sample(z, {}).values(), s.sample(z, {}).values()))
    old = clone(twin.decoder)
    s.step({})
    twin.accumulate(s, decay=0.75)  # g_ema: a quarter of the way towards the trained decoder
    name, p = next(iter(s.decoder.named_parameters()))
    assert torch.allclose(dict(twin.decoder.named_parameters())[name], 0.75 * old[name] + 0.25 * p.detach())
    with pytest.raises(RuntimeError, match="sampling copy"):
        twin.step({})


def test_state_dict_round_trip_resumes_exactly(cache, tmp_path):
    a = ready(cache)
    a.step({})
    path = tmp_path / "state.pt"
    # A checkpoint from before the training guard took over bad steps still loads.
    torch.save({**a.state_dict(), "nan_restores": torch.tensor(2)}, path)
    b = build_system(tiny(cache), torch.device("cpu"))
    b.load_state_dict(torch.load(path, weights_only=True))
    b.prepare(Silent)
    assert b.step_count == 1 and same(clone(a.decoder), clone(b.decoder))
    a.step({})
    b.step({})
    assert same(clone(a.decoder), clone(b.decoder))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != build_system(tiny(cache, vae={"hidden": 32}), torch.device("cpu")).fingerprint()


def test_base_models_are_cached_by_their_settings(tmp_path):
    ready(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("classifier-") and files[1].startswith("vae-")
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    s = ready(tmp_path, bad={"alpha": 3.0})  # BAD settings do not touch the base models
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    assert "classifier_heldout_accuracy" in s.base_metrics
    ready(tmp_path, vae={"steps": 2})
    assert len(list(tmp_path.iterdir())) == 3  # a new VAE, the same classifier


def test_piece_validation_names_the_key(cache):
    with pytest.raises(ConfigError, match=r"tiny.toml: loss.couple: 'is' is not allowed"):
        tiny(cache, loss={"couple": "is"})
    with pytest.raises(ConfigError, match=r"tiny.toml: bad.lr: .* out of range"):
        tiny(cache, bad={"lr": 0.5})


def test_train_then_eval_end_to_end(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    piece = tmp_path / "tiny.toml"
    piece.write_text(tiny_piece_file(cache, "steps = 2\ngrid_every = 1\ngrid_samples = 2"))
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(piece), "--device", "cpu", "--out", "runs/tiny"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", "runs/tiny", "--samples", "40", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "tiny" / "eval"
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert len(rows) == 2 * 9 and {r["decoder"] for r in rows} == {"base", "diverged"}
    assert all(0 <= float(r["precision_vs_base"]) <= 1 and float(r["samples"]) == 40 for r in rows)
    for name in ("precision_recall.png", "grid.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "T=1" in result.output and "held-out accuracy" in result.output
    assert any(p.name.startswith("judge-") for p in cache.iterdir())  # the independent judge, cached
    assert all(0 <= float(r["precision_vs_data_judge"]) <= 1 for r in rows)
    assert any(p.name.startswith("density-judge-") for p in cache.iterdir())  # the density judge, cached
    assert all(0 <= float(r["typical"]) <= 1 and math.isfinite(float(r["domain_nll"])) for r in rows)
    # A kept checkpoint beside the final one: one grid row each, one base row (shared base).
    kept = sorted((tmp_path / "runs" / "tiny" / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in kept] == ["step_000000.pt"]  # keep_every = 100: step 0 only
    result = runner.invoke(main, ["eval", str(kept[0]), "runs/tiny", "--samples", "20", "--out", "cmp"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "metrics.csv").read_text())))
    assert len(rows) == 3 * 9 and {r["run"] for r in rows} == {"tiny@step_000000", "tiny"}
    bad = runner.invoke(main, ["eval", "runs/nothing"])
    assert bad.exit_code == 2 and "run folder not found" in bad.output


def test_unstable_train_resume_continues_exactly(tmp_path, monkeypatch, cache):
    # 4 steps in one go and 2 + `--resume` 2 more give the same decoder, optimiser and log scalars.
    monkeypatch.chdir(tmp_path)
    piece = tmp_path / "tiny.toml"
    piece.write_text(tiny_piece_file(cache, "steps = 4\ngrid_every = 2\ngrid_samples = 2\ncheckpoint_every = 100"))
    runner = CliRunner()

    def train(*args):
        result = runner.invoke(main, ["train", str(piece), "--device", "cpu", *args])
        assert result.exit_code == 0, result.output
        return result.output

    train("--out", "runs/straight")
    train("--out", "runs/split", "--steps", "2")
    assert "resumed" in train("--out", "runs/split", "--resume")
    from unstable.checkpoint import load_checkpoint
    a = load_checkpoint(tmp_path / "runs" / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "runs" / "split" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4

    def leaves(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from leaves(v, f"{prefix}/{i}")
        else:
            yield prefix, obj

    la, lb = dict(leaves(a["system"])), dict(leaves(b["system"]))
    assert la.keys() == lb.keys() and any("decoder" in k for k in la)
    for k in la:
        if isinstance(la[k], torch.Tensor):
            assert torch.equal(la[k], lb[k]), k
        else:
            assert la[k] == lb[k], k

    def scalars(run):
        lines = [json.loads(x) for x in (tmp_path / "runs" / run / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in ln.items() if k != "seconds"} for ln in lines]

    assert [ln["step"] for ln in scalars("split")] == [1, 2, 3, 4]
    assert scalars("split") == scalars("straight")


def test_piece_files_load():
    from pathlib import Path

    from unstable.system import load_piece
    pieces = sorted(Path(__file__).parent.parent.glob("pieces/bad-*.toml"))
    assert pieces
    for path in pieces:
        piece = load_piece(path)
        assert piece.kind == "divergence" and piece.bad.batch == 256
        assert dataclasses.is_dataclass(piece)


def test_adversarial_examples_stay_in_the_ball_and_raise_the_loss():
    from unstable.divergence.classifier import DigitClassifier, fgsm
    torch.manual_seed(0)
    model = DigitClassifier(8)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    adv = fgsm(model, x, y, 0.1, torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert all(p.grad is None for p in model.parameters())  # the attack leaves the model's grads alone
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(model(adv), y)) > float(loss(model(x), y))


def test_robust_classifier_trains_and_is_cached_under_its_own_key(cache):
    plain = ready(cache)
    robust = ready(cache, classifier={"robust": 0.2})
    assert not same(clone(plain.classifier), clone(robust.classifier))
    names = [p.name for p in cache.iterdir() if p.name.startswith("classifier-")]
    assert len(names) >= 2
    with pytest.raises(ConfigError, match="robust"):
        tiny(cache, classifier={"robust": 0.9})


def test_typicality_of_real_blank_and_speckled_digits(cache):
    from unstable.divergence.data import load_digits
    from unstable.divergence.evaluate import negative_elbo, typical_share
    from unstable.divergence.vae import VAESettings, train_vae
    digits = load_digits(tiny(cache).data)
    torch.manual_seed(0)
    vae, _ = train_vae(VAESettings(steps=150, batch=64, hidden=64, warmup=50), digits.train_x[:2000],
                       digits.test_x, torch.device("cpu"))
    real = negative_elbo(vae, digits.test_x)  # [N_test]
    assert real.shape == (digits.test_x.shape[0],) and torch.isfinite(real).all()
    assert 0.95 <= typical_share(real, real) <= 0.99
    blank = negative_elbo(vae, torch.zeros(50, 1, 28, 28))
    speckle = negative_elbo(vae, (torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.85).float())
    assert typical_share(blank, real) == 0.0  # too likely: below the real digits' band
    assert typical_share(speckle, real) == 0.0  # too unlikely: above it
