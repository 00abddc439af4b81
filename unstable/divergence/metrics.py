"""Evaluation measures for divergent generators: improved precision/recall, class entropy, diversity.

Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
balls around its points with radius the distance to the point's k-th nearest neighbour within
the set. Precision = share of generated points inside the reference manifold; recall = share of
reference points inside the generated manifold. One set against itself gives 1 and 1; disjoint
sets give 0 and 0.
"""

from __future__ import annotations

import torch


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.double(), b.double())  # [N, M], float64: ties at radius matter


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Distance from each of [N, D] to its k-th nearest neighbour in the same set (self excluded) -> [N]."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {n}")
    out = []
    for start in range(0, n, chunk):
        d = _pairwise(features[start:start + chunk], features)  # [c, N]
        # Index 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is at k.
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Share of `points` inside at least one ball (centre, radius)."""
    inside = []
    for start in range(0, points.shape[0], chunk):
        d = _pairwise(points[start:start + chunk], centres)  # [c, M]
        inside.append((d <= radii.double().unsqueeze(0)).any(1))
    return torch.cat(inside).double().mean()


def precision_recall(reference: torch.Tensor, generated: torch.Tensor, k: int = 3, *,
                     reference_radii: torch.Tensor | None = None,
                     generated_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall of `generated` [M, D] against `reference` [N, D].

    A set's k-NN radii ([N] or [M], from `knn_radii(set, k)`) can be passed when the caller measures
    the same set several times (an evaluation's held-out digits at every temperature)."""
    r_ref = knn_radii(reference, k) if reference_radii is None else reference_radii
    r_gen = knn_radii(generated, k) if generated_radii is None else generated_radii
    precision = float(_coverage(generated, reference, r_ref))
    recall = float(_coverage(reference, generated, r_gen))
    return precision, recall


def class_stats(logits: torch.Tensor) -> dict[str, float]:
    """From classifier logits [N, K]: mean per-sample entropy (nats), mean confidence (max prob),
    and class coverage (exp of the entropy of the mean prediction: 1..K effective classes)."""
    logp = torch.log_softmax(logits.double(), 1)
    p = logp.exp()
    entropy = -(p * logp).sum(1).mean()
    mean_p = p.mean(0)
    coverage = torch.exp(-(mean_p * mean_p.clamp_min(1e-300).log()).sum())
    return {"class_entropy": float(entropy), "confidence": float(p.max(1).values.mean()),
            "class_coverage": float(coverage)}


def diversity(x: torch.Tensor, max_points: int = 1000) -> float:
    """Mean pairwise Euclidean distance between (up to `max_points` of) the rows of x [N, ...]."""
    f = x[:max_points].flatten(1).double()
    n = f.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(f, f)
    return float(d.sum() / (n * (n - 1)))

