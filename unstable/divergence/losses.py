"""BAD's differentiable divergences on feature batches: IS, FID, MMD, class-wise MMD and the creativity loss.

All functions take features [N, D] (classifier logits for the custom classifier, 1000-d logits for
torchvision ones) and return a scalar tensor that gradients flow through on the generated side.

Choices worth knowing:

- FID: the trace of (Sigma_r Sigma_g)^(1/2) is computed as tr((S Sigma_g S)^(1/2)) with
  S = Sigma_r^(1/2). The two matrices are similar (same eigenvalues) but the second is symmetric
  positive semi-definite, so its eigenvalues come from `eigvalsh` (real, stable, differentiable:
  the gradient is V diag(1/(2 sqrt(lambda))) V^T, which needs no eigen-gaps). The reference code
  takes eigenvalues of the non-symmetric product instead, which can come out negative or complex.
  Eigenvalues are floored at `eps` (zero gradient below it) because sqrt has infinite slope at 0:
  the rank of a covariance of B samples in D > B dimensions is at most B - 1. Everything runs in
  float64: 1e-4 relative agreement with scipy needs it, and D <= 1000 keeps it cheap.
- MMD: the default is the paper's unbiased estimator (Gretton et al. 2012) of MMD^2 with a real
  kernel on feature vectors, diagonal terms excluded. `mmd_reference` reproduces the authors'
  code: an element-wise Gaussian summed over feature dimensions and normalised by the feature
  dimension D (D(D-1) and D^2), diagonal included; it is selectable for comparison only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Kernel = Literal["gaussian", "laplacian", "imq"]


# ---------------------------------------------------------------------------------------------
# Inception score


def inception_score(logits: torch.Tensor, splits: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split, averaged over `splits` random chunks of [N, K] logits.

    K for confident predictions spread evenly over K classes, 1 for identical predictions.
    """
    n = logits.shape[0]
    splits = max(1, min(splits, n))
    order = torch.randperm(n, generator=generator).to(logits.device) if generator is not None \
        else torch.randperm(n, device=logits.device)
    log_p = torch.log_softmax(logits[order], dim=1)  # [N, K]
    scores = []
    for chunk in log_p.chunk(splits, dim=0):
        # log p(y) = log mean_i p(y|x_i), computed in log space to stay finite for confident logits.
        log_marginal = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])  # [K]
        kl = (chunk.exp() * (chunk - log_marginal)).sum(1)  # [n_chunk]
        scores.append(kl.mean().exp())
    return torch.stack(scores).mean()


def creativity_loss(logits: torch.Tensor) -> torch.Tensor:
    """The creativity (style-ambiguity) loss of CAN (Elgammal et al. 2017) and DeSIGN (Sbai et al.
    2018): the cross-entropy of the class posterior p(y|x) against the uniform distribution,
    -(1/K) sum_k log p(k|x), averaged over the batch of [N, K] logits.

    It is log K when every posterior is uniform and grows without bound as a posterior becomes
    confident, so lowering it (a negative alpha in BAD's objective) raises the class entropy.
    """
    return -torch.log_softmax(logits, dim=1).mean(1).mean()


# ---------------------------------------------------------------------------------------------
# Frechet distance


def mean_cov(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased (N - 1) covariance [D, D] of features [N, D], in float64."""
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    cov = centred.T @ centred / max(1, f.shape[0] - 1)
    return mu, cov


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix [D, D] (negative round-off clipped to 0)."""
    lam, vec = torch.linalg.eigh(matrix)
    return (vec * lam.clamp_min(0).sqrt()) @ vec.T


def frechet_distance(mu_r: torch.Tensor, cov_r: torch.Tensor, features: torch.Tensor,
                     sqrt_cov_r: torch.Tensor | None = None, eps: float = 1e-10) -> torch.Tensor:
    """FID between fixed real statistics (mu_r [D], cov_r [D, D]) and generated features [N, D].

    ||mu_r - mu_g||^2 + tr(cov_r) + tr(cov_g) - 2 tr((S cov_g S)^(1/2)), S = cov_r^(1/2) (see the
    module docstring). Pass `sqrt_cov_r` to reuse S across steps. Returns features' dtype.
    """
    mu_r, cov_r = mu_r.double(), cov_r.double()
    s = sqrtm_psd(cov_r) if sqrt_cov_r is None else sqrt_cov_r.double()
    mu_g, cov_g = mean_cov(features)
    m = s @ cov_g @ s
    m = 0.5 * (m + m.T)  # exact symmetry for eigvalsh
    lam = torch.linalg.eigvalsh(m)
    tr_sqrt = lam.clamp_min(eps).sqrt().sum()
    diff = mu_r - mu_g
    fid = diff.dot(diff) + torch.trace(cov_r) + torch.trace(cov_g) - 2 * tr_sqrt
    return fid.to(features.dtype)


def fid(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """FID between two feature batches [N, D] and [M, D]; the real side carries no gradient."""
    mu_r, cov_r = mean_cov(real.detach())
    return frechet_distance(mu_r, cov_r, fake)


# ---------------------------------------------------------------------------------------------
# Maximum mean discrepancy


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ||x||^2 + ||y||^2 - 2 x.y, clamped: round-off can make it slightly negative.
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2 * x @ y.T
    return d.clamp_min(0)  # [N, M]


def kernel_matrix(x: torch.Tensor, y: torch.Tensor, kernel: Kernel = "gaussian", bandwidth: float = 1.0) -> torch.Tensor:
    """k(x_i, y_j) [N, M]: gaussian exp(-d^2 / 2s^2), laplacian exp(-d / s), imq (1 + d^2 / s^2)^-1/2."""
    d2 = _sq_dists(x, y)
    s = float(bandwidth)
    if kernel == "gaussian":
        return torch.exp(-d2 / (2 * s * s))
    if kernel == "laplacian":
        return torch.exp(-torch.sqrt(d2 + 1e-12) / s)  # +eps: sqrt has no gradient at 0
    if kernel == "imq":
        return torch.rsqrt(1 + d2 / (s * s))
    raise ValueError(f"unknown kernel {kernel!r}")


def median_bandwidth(features: torch.Tensor, max_points: int = 1000) -> float:
    """The median heuristic: median pairwise distance of (up to `max_points` of) [N, D] features."""
    f = features.detach()[:max_points].double()
    d = _sq_dists(f, f).sqrt()
    off = d[~torch.eye(f.shape[0], dtype=torch.bool, device=f.device)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 and math.isfinite(med) else 1.0


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel: Kernel = "gaussian", bandwidth: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al. 2012, as written in the paper) between [M, D] and [N, D].

    Needs at least 2 samples on each side. Can be slightly negative for equal distributions.
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs >= 2 samples per side, got {m} and {n}")
    kxx = kernel_matrix(x, x, kernel, bandwidth)
    kyy = kernel_matrix(y, y, kernel, bandwidth)
    kxy = kernel_matrix(x, y, kernel, bandwidth)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd_reference(x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The authors' code's MMD: sum_{i,j,d} exp(-(x_id - y_jd)^2 / scale), normalised by D(D-1) / D^2.

    Kept for comparison with their results; it is not an unbiased MMD^2 estimate (its scale grows
    with the batch size squared and it includes the diagonal terms).
    """
    d = x.shape[1]

    def k(a, b):
        return torch.exp(-(a.unsqueeze(1) - b.unsqueeze(0)).pow(2) / scale).sum()  # over i, j and d

    return k(x, x) / (d * (d - 1)) + k(y, y) / (d * (d - 1)) - 2 * k(x, y) / (d * d)


def mmd(x: torch.Tensor, y: torch.Tensor, variant: Literal["gretton", "reference"] = "gretton",
        kernel: Kernel = "gaussian", bandwidth: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """MMD between generated [M, D] and real [N, D] features, in the chosen variant."""
    if variant == "gretton":
        return mmd2(x, y, kernel, bandwidth)
    if variant == "reference":
        return mmd_reference(x, y, scale)
    raise ValueError(f"unknown MMD variant {variant!r}")


def classwise_mmd(x: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, classes: int = 10,
                  x_labels: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Sum over classes k of MMD(x, real features of class k) (the paper's eq. 2).

    With `x_labels` (e.g. the classes a classifier predicts for the generated samples), class k
    compares only the generated samples labelled k with the real class k. Classes with fewer than
    2 samples on a side are skipped (no unbiased estimate).

    Note on the paper's form (no `x_labels`): the MMD^2 is linear in the generated distribution's
    kernel mean embedding, so with equally many real samples per class the generator-dependent part
    of the sum is exactly K * MMD^2(x, all real) — the divergence term is then the bound times K,
    and alpha * L_div - beta * L_reg only has the sign and size of (K alpha - beta).
    """
    total = x.new_zeros(())
    for k in range(classes):
        members = real[labels == k]
        mine = x if x_labels is None else x[x_labels == k]
        if members.shape[0] >= 2 and mine.shape[0] >= 2:
            total = total + mmd(mine, members, **kw)
    return total


# ---------------------------------------------------------------------------------------------
# Combining the two terms


def objective(l_div: torch.Tensor, l_reg: torch.Tensor, alpha: float, beta: float,
              form: Literal["difference", "ratio"] = "difference", eps: float = 1e-8) -> torch.Tensor:
    """What BAD maximises: alpha * L_div - beta * L_reg, or the log of L_div^alpha / L_reg^beta.

    The ratio form is taken in log space (alpha log L_div - beta log L_reg, same maximiser as the
    ratio, no overflow for large exponents); both terms are floored at `eps` since an unbiased
    MMD^2 can dip below zero.
    """
    if form == "difference":
        return alpha * l_div - beta * l_reg
    if form == "ratio":
        return alpha * torch.log(l_div.clamp_min(eps)) - beta * torch.log(l_reg.clamp_min(eps))
    raise ValueError(f"unknown objective form {form!r}")
