"""The ensemble's objectives: embedding distances, colour-variety measures, relational losses.

All of them are plain differentiable functions of tensors; the system decides what is detached.
Colour measures take images in -1..1 (the generator's range) and work on 0..1 colours.

Distances and variety measures come in families on purpose: the paper's "exploiting boundaries"
is the use of the small disagreements between, e.g., L1, L2 and cosine distances, so a piece
mixes them with weights (`{"l1": 0.5, "cosine": 0.5}`).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

_EPS = 1e-8


# --- embedding distances: a [..., E], b [..., E] (broadcastable) -> [...] ---------------------------

def _l1(a, b):
    return (a - b).abs().mean(dim=-1)


def _l2(a, b):
    # RMS distance (L2 / sqrt(E)); eps inside the root keeps the gradient finite at zero distance.
    return torch.sqrt((a - b).square().mean(dim=-1) + _EPS)


def _mse(a, b):
    return (a - b).square().mean(dim=-1)


def _huber(a, b):
    # Smooth L1 with delta 1: quadratic near zero, linear far away.
    d = (a - b).abs()
    return torch.where(d < 1.0, 0.5 * d.square(), d - 0.5).mean(dim=-1)


def _chebyshev(a, b):
    return (a - b).abs().amax(dim=-1)


def _cosine(a, b):
    return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=_EPS)


def _angular(a, b):
    cos = F.cosine_similarity(a, b, dim=-1, eps=_EPS).clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.acos(cos) / math.pi


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _l1,
    "l2": _l2,
    "mse": _mse,
    "huber": _huber,
    "chebyshev": _chebyshev,
    "cosine": _cosine,
    "angular": _angular,
}

def embedding_distance(mine: torch.Tensor, target: torch.Tensor, mix: Mapping[str, float],
                       pairing: str = "paired") -> torch.Tensor:
    """Weighted mix of distances between two embedding batches [B, E] -> scalar.

    pairing: "paired" compares row k with row k (the generators share latents, so row k is the
    same place in every latent space), "all_pairs" every row with every row, "centroid" the means.
    """
    if pairing == "paired":
        if mine.shape[0] != target.shape[0]:
            raise ValueError(f"paired embedding distance needs equal batches, "
                             f"got {mine.shape[0]} and {target.shape[0]}")
        a, b = mine, target
    elif pairing == "all_pairs":
        a, b = mine[:, None, :], target[None, :, :]  # [B, 1, E], [1, B', E]
    elif pairing == "centroid":
        a, b = mine.mean(dim=0), target.mean(dim=0)
    else:
        raise ValueError(f"unknown pairing {pairing!r}")
    total = mine.new_zeros(())
    for name, weight in mix.items():
        if weight:
            total = total + weight * DISTANCES[name](a, b).mean()
    return total


# --- colour variety of a batch: images [B, 3, H, W] in -1..1 -> scalar -----------------------------

def _subsampled(images: torch.Tensor, max_pixels: int | None) -> torch.Tensor:
    """The batch as 0..1 colours [B, 3, H', W'], strided down by powers of two to about `max_pixels`."""
    x = (images + 1.0) * 0.5
    if max_pixels is not None:
        b, _, h, w = x.shape
        stride = 1
        while b * (h // stride) * (w // stride) > max_pixels and stride < min(h, w):
            stride *= 2
        x = x[:, :, ::stride, ::stride]
    return x


def _colours(images: torch.Tensor, max_pixels: int | None = None) -> torch.Tensor:
    """All pixels of a batch as 0..1 colours [P, 3], strided down to about `max_pixels` if given."""
    return _subsampled(images, max_pixels).permute(0, 2, 3, 1).reshape(-1, 3)


def _std(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Unbiased std over `dims` (kept out of the result), as `x.std(dims)` computes it.

    Written out because ATen's std backs its reductions over the batch or a whole image with slow
    kernels: as mean, centred squares and a sum, each one contiguous pass, forward and backward.
    """
    n = math.prod([x.shape[d] for d in dims])  # a list: dynamo cannot trace math.prod over a generator
    centred = x - x.mean(dim=dims, keepdim=True)
    return (centred.square().sum(dim=dims) / max(n - 1, 1)).sqrt()


# Colours are (images + 1) / 2; a std is blind to the shift, so the spreads below are taken from the
# images and halved.

def variety_std(images: torch.Tensor) -> torch.Tensor:
    """Spread of the batch's colour cloud: per-channel std over every pixel of every image, averaged."""
    return _std(images, (0, 2, 3)).mean() * 0.5


def variety_image_std(images: torch.Tensor) -> torch.Tensor:
    """Colour spread inside each image (per-channel std over its pixels), averaged over the batch.

    Unlike `std`, a batch of flat images of different colours scores zero here.
    """
    return _std(images, (2, 3)).mean() * 0.5


def variety_batch_std(images: torch.Tensor) -> torch.Tensor:
    """How much the images differ from each other: std over the batch at each pixel, averaged."""
    return _std(images, (0,)).mean() * 0.5


def variety_pairwise(images: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between pixel colours (a deterministic subsample of ~512), / sqrt(3)."""
    c = _colours(images, max_pixels=512)
    d = torch.sqrt((c[:, None, :] - c[None, :, :]).square().sum(dim=-1) + _EPS)  # [P, P]
    return d.mean() / math.sqrt(3.0)


def variety_entropy(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Entropy of a soft RGB histogram (bins^3 cells), normalised to 0..1: how many colours are used."""
    # Channel-major ([3, P], pixels along the contiguous axis): a softmax over 4 bins in the last
    # axis runs row by row, one across the middle axis vectorises over the pixels.
    c = _subsampled(images, 8192).transpose(0, 1).reshape(3, -1)  # [3, P]
    p = c.shape[1]
    centres = (torch.arange(bins, device=c.device, dtype=c.dtype) + 0.5) / bins
    width = 1.0 / bins
    member = torch.softmax(-((c[:, None, :] - centres[:, None]) / width).square() * 2.0, dim=1)  # [3, bins, P]
    rg = (member[0, :, None, :] * member[1, None, :, :]).reshape(bins * bins, p)  # [bins^2, P]
    hist = (rg @ member[2].t()).flatten() / p  # [bins^3], sums to 1
    entropy = -(hist * torch.log(hist + 1e-12)).sum()
    return entropy / math.log(bins ** 3)


def variety_logdet(images: torch.Tensor) -> torch.Tensor:
    """Volume of the colour cloud: log det of the 3x3 colour covariance (+eps), divided by 3."""
    c = _colours(images)
    c = c - c.mean(dim=0)
    cov = c.t() @ c / max(c.shape[0] - 1, 1) + 1e-4 * torch.eye(3, device=c.device, dtype=c.dtype)
    return torch.logdet(cov) / 3.0


VARIETY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "std": variety_std,
    "image_std": variety_image_std,
    "batch_std": variety_batch_std,
    "pairwise": variety_pairwise,
    "entropy": variety_entropy,
    "logdet": variety_logdet,
}


def colour_variety(images: torch.Tensor, mix: Mapping[str, float]) -> torch.Tensor:
    """Weighted mix of variety measures of one batch -> scalar (higher = more variety)."""
    total = images.new_zeros(())
    for name, weight in mix.items():
        if weight:
            total = total + weight * VARIETY[name](images)
    return total


def relational_loss(mine: torch.Tensor, target: torch.Tensor, relation: str, *, sharpness: float = 10.0,
                    margin: float = 0.0) -> torch.Tensor:
    """A loss that falls as `mine` rises above `target` (the target's variety, detached by the caller).

    softplus: smooth hinge, pushes hardest while behind; hinge: only while behind by less than
    `margin`; difference: a constant push, whoever leads; ratio: log(target) - log(mine).
    """
    gap = target + margin - mine
    if relation == "softplus":
        return F.softplus(sharpness * gap) / sharpness
    if relation == "hinge":
        return F.relu(gap)
    if relation == "difference":
        return gap
    if relation == "ratio":
        return torch.log(target.abs() + 1e-6) - torch.log(mine.abs() + 1e-6)
    raise ValueError(f"unknown relation {relation!r}")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [B, N] against generator indices [B]."""
    return F.cross_entropy(logits, labels)
