"""MNIST loading: the built-in digits, IDX parsing, and one clear error for a bad file; torchvision weights."""

import gzip

import numpy as np
import pytest
import torch

from unstable.divergence.data import DataError, DataSettings, IDX_FILES, load_digits, read_idx
from unstable.divergence.features import FeatureSettings, TorchvisionFeatures, WeightsError, build_extractor


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=30, n_test=10, gz=False):
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": rng.integers(0, 10, n_train),
              "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": rng.integers(0, 10, n_test)}
    for key, stem in IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def test_builtin_digits_are_shuffled_binary_and_split():
    d = load_digits(DataSettings(heldout=0.1, seed=3))
    assert d.train_x.shape == (4500, 1, 28, 28) and d.test_x.shape == (500, 1, 28, 28)
    assert set(torch.unique(d.train_x).tolist()) == {0.0, 1.0}
    assert len(torch.unique(d.test_y)) == 10  # shuffled: not the first class only
    again = load_digits(DataSettings(heldout=0.1, seed=3))
    assert torch.equal(again.test_y, d.test_y)
    assert not torch.equal(load_digits(DataSettings(heldout=0.1, seed=4)).test_y, d.test_y)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    d = load_digits(DataSettings(source=str(tmp_path)))
    assert d.train_x.shape == (30, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    assert torch.equal(d.train_y, torch.from_numpy(arrays["train_y"].astype(np.int64)))
    assert torch.equal(d.train_x[:, 0], torch.from_numpy((arrays["train_x"] / 255.0 > 0.5).astype(np.float32)))


def one_line_error(fn):
    with pytest.raises(DataError) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_idx_files_are_one_clear_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / IDX_FILES["train_x"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) - 100])  # truncated
    msg = one_line_error(lambda: load_digits(DataSettings(source=str(tmp_path))))
    assert str(path) in msg and "truncated" in msg
    path.write_bytes(b"\x08\x03\x00\x00" + good[4:])  # wrong magic
    assert "bad magic" in one_line_error(lambda: read_idx(path))
    path.write_bytes(good[:10])  # header cut
    assert "truncated" in one_line_error(lambda: read_idx(path))
    path.unlink()
    assert IDX_FILES["train_x"] in one_line_error(lambda: load_digits(DataSettings(source=str(tmp_path))))
    assert "not found" in one_line_error(lambda: load_digits(DataSettings(source=str(tmp_path / "nope"))))


def test_missing_torchvision_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(WeightsError) as e:
        build_extractor(FeatureSettings(extractor="mobilenet_v2"), torch.nn.Identity(), torch.device("cpu"))
    msg = str(e.value)
    assert "\n" not in msg and "mobilenet_v2-b0353104.pth" in msg and str(tmp_path / "torch") in msg
    with pytest.raises(WeightsError, match="no alexnet weights at .*missing.pth"):
        build_extractor(FeatureSettings(extractor="alexnet", weights=str(tmp_path / "missing.pth")),
                        torch.nn.Identity(), torch.device("cpu"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="not usable"):
        build_extractor(FeatureSettings(extractor="mobilenet_v2", weights=str(junk)), torch.nn.Identity(),
                        torch.device("cpu"))


def test_torchvision_extractor_loads_a_local_file_and_passes_gradients(tmp_path):
    torch.manual_seed(0)
    net = TorchvisionFeatures("mobilenet_v2", weights="none", size=64)
    path = tmp_path / "mobilenet.pth"
    torch.save(net.net.state_dict(), path)
    loaded = build_extractor(FeatureSettings(extractor="mobilenet_v2", weights=str(path), size=64),
                             torch.nn.Identity(), torch.device("cpu"))
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    out = loaded(x)
    assert out.shape == (2, 1000)
    assert all(not p.requires_grad for p in loaded.parameters())
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    net.eval()
    assert torch.allclose(net(x.detach()), out.detach(), atol=1e-5)  # the file's weights, not random ones
