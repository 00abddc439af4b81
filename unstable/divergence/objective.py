"""What BAD pushes the decoder with: the divergence and regularisation terms of one batch, the digit
classifier's view of generated images, and the fixed real-digit pool they are measured against.

Plain functions of the piece, the frozen classifier and tensors; the system owns the state (its
RNG, the cached pool) and the optimiser.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .data import Digits
from .features import extract
from .losses import classwise_mmd, creativity_loss, frechet_distance, inception_score, mean_cov, median_bandwidth, \
    mmd, sqrtm_psd
from .piece import DivergencePiece

__all__ = ["CPU_CHUNK", "class_logits", "bad_terms", "decode_and_embed", "real_pool"]

# Rows of a training batch that go through the decoder's convolutions and the extractor together on
# a CPU. A whole batch of 256 makes every activation of the 28 px layers 51 MB, and each pass over
# one (a convolution, an ELU, their backward) comes from and goes back to memory; 32 images' are
# 6.4 MB, which stay in the cache (32 MB here) from one layer to the next, forward and backward
# (the step's figures, and chunks of 16 to 64 measured alike: docs/figures.md, ninth round).
CPU_CHUNK = 32


def decode_and_embed(decoder: torch.nn.Module, extractor: torch.nn.Module, codes: torch.Tensor,
                     chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's images [n, 1, 28, 28] of `codes` [n, 16, 2, 2] (`Decoder.codes`) and their
    features [n, D], `chunk` rows at a time (None: all at once). The same maths as one pass: the
    convolutions and the extractor work image by image, and the MLP whose BatchNorm does not
    (`Decoder.codes`) has already run on the whole batch; only the order in which the weight
    gradients are summed differs."""
    if not chunk or codes.shape[0] <= chunk:
        images = decoder.mean_of(codes)
        return images, extractor(images)
    images, features = [], []
    for rows in codes.split(chunk):
        images.append(decoder.mean_of(rows))  # [c, 1, 28, 28]
        features.append(extractor(images[-1]))  # [c, D]: right after its images, while they are in the cache
    return torch.cat(images), torch.cat(features)


def class_logits(piece: DivergencePiece, classifier: torch.nn.Module, images: torch.Tensor, fake: torch.Tensor,
                 grad: bool = False) -> torch.Tensor:
    """The digit classifier's logits [B, 10] for generated images [B, 1, 28, 28] whose loss features
    are `fake` [B, D]: the features themselves, or one layer on from its embedding, or (torchvision
    features) a forward pass of its own. Without gradient unless `grad` (the creativity loss)."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        if piece.features.extractor != "custom":
            return classifier(images)
        feats = fake if grad else fake.detach()
        return feats if piece.features.layer == "logits" else classifier.classify(feats)


def bad_terms(piece: DivergencePiece, classifier: torch.nn.Module, gen: torch.Generator, images: torch.Tensor,
              fake: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, pool: dict) -> tuple:
    """(L_div, L_reg, named scalars) for generated images [B, 1, 28, 28] with features [B, D], and
    real features [B, D] with labels [B]; `gen` draws the IS splits' shuffles."""
    loss = piece.loss
    if loss.couple == "isfid":
        l_div = inception_score(fake, loss.splits, gen)
        l_reg = frechet_distance(pool["mu"], pool["cov"], fake, pool["sqrt_cov"])
        return l_div, l_reg, {"is": l_div, "fid": l_reg}
    kw = {"variant": loss.mmd, "kernel": loss.kernel, "bandwidth": pool["bandwidth"], "scale": loss.scale}
    fake_labels = None
    if loss.classwise == "predicted" and loss.couple == "mmd":
        fake_labels = class_logits(piece, classifier, images, fake).argmax(1)  # [B]
    l_reg = mmd(fake, real, **kw)
    if loss.couple == "creativity":
        l_div = creativity_loss(class_logits(piece, classifier, images, fake, grad=True))
        return l_div, l_reg, {"creativity": l_div, "global_mmd": l_reg}
    l_div = classwise_mmd(fake, real, labels, 10, x_labels=fake_labels, **kw)
    return l_div, l_reg, {"class_mmd": l_div, "global_mmd": l_reg}


def real_pool(piece: DivergencePiece, digits: Digits, extractor: torch.nn.Module, device: torch.device,
              progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Features of the real digits (fixed: the extractor is frozen) [P, D], their labels [P] and the
    statistics the piece's loss couple needs (FID's mean and covariance, or the MMD bandwidth)."""
    p = piece
    x, y = digits.train_x, digits.train_y
    if p.bad.real_pool and p.bad.real_pool < x.shape[0]:
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(p.seed + 7))[:p.bad.real_pool]
        x, y = x[pick], y[pick]
    feats = extract(extractor, x.to(device), progress=progress if x.shape[0] > 2000 else None)
    pool: dict[str, Any] = {"features": feats, "labels": y.to(device)}  # [P, D], [P]
    if p.loss.couple == "isfid":
        mu, cov = mean_cov(feats)
        pool.update(mu=mu, cov=cov, sqrt_cov=sqrtm_psd(cov))
    else:
        pool["bandwidth"] = p.loss.bandwidth or median_bandwidth(
            feats[torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(p.seed + 11))])
    return pool
