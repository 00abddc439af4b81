"""BAD's divergences and evaluation metrics on synthetic features: known values, scipy, gradients."""

import numpy as np
import pytest
import scipy.linalg
import torch

from unstable.divergence.losses import (classwise_mmd, fid, frechet_distance, inception_score, mean_cov,
                                        median_bandwidth, mmd, mmd2, mmd_reference, objective)
from unstable.divergence.metrics import class_stats, diversity, knn_radii, precision_recall


def confident(labels, k=10, scale=60.0):
    return torch.nn.functional.one_hot(labels, k).float() * scale  # [N, K] logits


def test_inception_score_extremes():
    k = 10
    labels = torch.arange(k).repeat(20)  # every class equally often
    assert inception_score(confident(labels, k), splits=1).item() == pytest.approx(k, rel=1e-4)
    # Each shuffled split still sees all classes about equally: IS close to K.
    g = torch.Generator().manual_seed(0)
    assert inception_score(confident(labels, k), splits=4, generator=g).item() > 0.85 * k
    assert inception_score(torch.zeros(200, k), splits=4).item() == pytest.approx(1.0, abs=1e-6)
    # All samples confidently the same class: nothing diverse, IS = 1.
    assert inception_score(confident(torch.zeros(50, dtype=torch.long), k), splits=2).item() == pytest.approx(1.0, abs=1e-4)


def scipy_fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_and_is_zero_on_itself():
    g = torch.Generator().manual_seed(1)
    d = 8
    a = torch.randn(600, d, generator=g) @ torch.randn(d, d, generator=g) + 0.5
    b = torch.randn(500, d, generator=g) @ torch.randn(d, d, generator=g) * 0.7 - 0.2
    ours = fid(a, b).item()
    ref = scipy_fid(a.double().numpy(), b.double().numpy())
    assert ours == pytest.approx(ref, rel=1e-4)
    assert abs(fid(a, a).item()) < 1e-3 * torch.trace(mean_cov(a)[1]).item()
    # Precomputed real statistics give the same value.
    mu, cov = mean_cov(a)
    assert frechet_distance(mu, cov, b).item() == pytest.approx(ours, rel=1e-6)


def test_fid_gradient_is_finite_even_rank_deficient():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(300, 20, generator=g)
    fake = torch.randn(12, 20, generator=g, requires_grad=True)  # covariance of rank 11 < 20
    value = fid(real, fake)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "imq"])
def test_mmd_same_vs_shifted(kernel):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 5, generator=g)
    y = torch.randn(300, 5, generator=g)
    shifted = torch.randn(300, 5, generator=g) + 1.5
    bw = median_bandwidth(torch.cat([x, y]))
    same = mmd2(x, y, kernel, bw).item()
    far = mmd2(x, shifted, kernel, bw).item()
    assert abs(same) < 0.01
    assert far > 0.1 and far > 20 * abs(same)
    fake = shifted.clone().requires_grad_(True)
    mmd2(fake, x, kernel, bw).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_mmd_reference_variant_orders_distributions():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(100, 10, generator=g), torch.randn(100, 10, generator=g)
    shifted = torch.randn(100, 10, generator=g) + 2.0
    # Biased by design (diagonal terms, D(D-1) vs D^2), so not ~0 on equal samples; still ordered.
    assert mmd_reference(x, shifted).item() > 3 * mmd_reference(x, y).item() > 0
    assert mmd(x, shifted, variant="reference").item() == mmd_reference(x, shifted).item()
    fake = shifted.clone().requires_grad_(True)
    mmd_reference(fake, x).backward()
    assert torch.isfinite(fake.grad).all()


def test_classwise_mmd_sums_over_present_classes():
    g = torch.Generator().manual_seed(5)
    real = torch.cat([torch.randn(40, 3, generator=g) + 4 * c for c in range(3)])
    labels = torch.arange(3).repeat_interleave(40)
    fake = torch.randn(60, 3, generator=g) + 4.0  # sits on class 1
    per_class = [mmd2(fake, real[labels == c], "gaussian", 2.0).item() for c in range(3)]
    total = classwise_mmd(fake, real, labels, classes=10, kernel="gaussian", bandwidth=2.0).item()
    assert total == pytest.approx(sum(per_class), rel=1e-5)  # classes 3..9 are absent and skipped
    assert per_class[1] < per_class[0] and per_class[1] < per_class[2]


def test_objective_forms():
    d, r = torch.tensor(2.0), torch.tensor(0.5)
    assert objective(d, r, 1.0, 20.0).item() == pytest.approx(2 - 10)
    assert objective(d, r, 1.0, 2.0, "ratio").item() == pytest.approx(np.log(2.0 / 0.5 ** 2))
    assert torch.isfinite(objective(d, torch.tensor(-1e-3), 1.0, 2.0, "ratio"))  # unbiased MMD^2 < 0


def test_precision_recall_self_and_disjoint():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(400, 10, generator=g)
    assert precision_recall(a, a, k=3) == (1.0, 1.0)
    far = torch.randn(400, 10, generator=g) + 50.0
    p, r = precision_recall(a, far, k=3)
    assert p < 0.01 and r < 0.01
    same_dist = torch.randn(400, 10, generator=g)
    p, r = precision_recall(a, same_dist, k=3)
    assert p > 0.6 and r > 0.6
    radii = knn_radii(a, 3)
    assert radii.shape == (400,) and (radii > 0).all()


def test_class_stats_and_diversity():
    k = 10
    sure = class_stats(confident(torch.arange(k).repeat(10), k))
    assert sure["class_entropy"] < 1e-6 and sure["confidence"] > 0.999
    assert sure["class_coverage"] == pytest.approx(k, rel=1e-6)
    unsure = class_stats(torch.zeros(50, k))
    assert unsure["class_entropy"] == pytest.approx(np.log(k)) and unsure["confidence"] == pytest.approx(1 / k)
    assert diversity(torch.zeros(20, 4)) == 0.0 and diversity(torch.eye(4)) == pytest.approx(2 ** 0.5)


def test_paper_classwise_mmd_is_k_times_global_plus_a_constant():
    # The property documented in losses.classwise_mmd: with balanced real classes the generator-
    # dependent part of sum_k MMD^2(x, class k) is K * MMD^2(x, all real).
    g = torch.Generator().manual_seed(7)
    k = 4
    real = torch.cat([torch.randn(30, 3, generator=g) + 3 * c for c in range(k)])
    labels = torch.arange(k).repeat_interleave(30)
    kw = {"kernel": "gaussian", "bandwidth": 2.0}

    def gap(x):
        return (classwise_mmd(x, real, labels, classes=k, **kw) - k * mmd2(x, real, **kw)).item()

    a, b = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) * 3 + 1
    assert gap(a) == pytest.approx(gap(b), abs=1e-4)
    # Grouping generated samples by their (here: given) class breaks that tie.
    x_labels = torch.arange(k).repeat_interleave(50 // k + 1)[:50]
    on_class = torch.cat([torch.randn(13, 3, generator=g) + 3 * c for c in range(k)])[:50]
    off_class = on_class + 1.5
    assert classwise_mmd(off_class, real, labels, k, x_labels=x_labels, **kw) > \
        5 * classwise_mmd(on_class, real, labels, k, x_labels=x_labels, **kw)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "imq"])
def test_mmd2_is_the_unbiased_gretton_estimator_by_brute_force(kernel):
    # Gretton et al. 2012, eq. 3, written out as plain double sums over 4 and 5 samples:
    # the within-set sums leave out i == j and divide by m(m-1), n(n-1); the cross sum by m n.
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.7
    s = 1.3

    def k(a, b):
        d = float(((a - b) ** 2).sum())
        return {"gaussian": np.exp(-d / (2 * s * s)), "laplacian": np.exp(-np.sqrt(d) / s),
                "imq": (1 + d / (s * s)) ** -0.5}[kernel]

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    expected = sxx + syy - 2 * sxy
    assert mmd2(x, y, kernel, s).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert mmd(x, y, "gretton", kernel, s).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # Unbiased: two copies of one sample set give a negative value, not the biased estimate's 0.
    assert mmd2(x, x.clone(), kernel, s).item() < 0
