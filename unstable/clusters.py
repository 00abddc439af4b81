"""Channel clusters (the "clusters of features" of Broad, Kaszuba & Grierson 2021): a layer's channels
grouped by what their feature maps do over a batch of seeded latents, for the bends that touch one
cluster (unstable.bending). Deterministic: k-means++ seeding from a fixed seed, Lloyd iterations,
clusters numbered largest first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pacing import tick

__all__ = ["kmeans", "channel_features"]


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """Labels [P] of points [P, D] in k clusters (k-means++ seeding, Lloyd), renumbered so that
    cluster 0 is the largest (ties: the one holding the lowest index). k is capped at P.

    Computed on the CPU whatever the points' device (labels on the CPU): a few hundred points in a
    loop of small operations, each a host sync on a GPU, and the seeding draws from a CPU generator."""
    p = points.detach().to("cpu", torch.float64)
    n = p.shape[0]
    k = max(1, min(k, n))
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(0, n, (1,), generator=gen))
    centres = [p[first]]
    for _ in range(1, k):
        tick()  # a live refresh's worker paces itself here (unstable.pacing); elsewhere a no-op
        d2 = torch.cdist(p, torch.stack(centres)).pow(2).amin(1)
        if float(d2.sum()) <= 0:
            centres.append(p[int(torch.randint(0, n, (1,), generator=gen))])
            continue
        centres.append(p[int(torch.multinomial(d2 / d2.sum(), 1, generator=gen))])
    c = torch.stack(centres)
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        tick()
        new = torch.cdist(p, c).argmin(1)
        for j in range(k):
            members = p[new == j]
            if members.shape[0]:
                c[j] = members.mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = int((p - c[new]).pow(2).sum(1).argmax())
                c[j] = p[far]
                new[far] = j
        if torch.equal(new, labels):
            break
        labels = new
    sizes = torch.bincount(labels, minlength=k)
    first_index = torch.tensor([int((labels == j).nonzero()[0]) if sizes[j] else n for j in range(k)])
    order = sorted(range(k), key=lambda j: (-int(sizes[j]), int(first_index[j])))
    remap = torch.empty(k, dtype=torch.long)
    remap[torch.tensor(order)] = torch.arange(k)
    return remap[labels]


def channel_features(acts: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """[C, M * h * w] per-channel features of activations [M, C, H, W] (or [M, C]): maps box-pooled
    to at most pool x pool, flattened over the batch, standardised (the pattern, not the scale)."""
    a = acts.float()
    if a.ndim == 4 and a.shape[-1] > pool:
        a = F.adaptive_avg_pool2d(a, pool)
    f = a.transpose(0, 1).reshape(a.shape[1], -1)
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)
