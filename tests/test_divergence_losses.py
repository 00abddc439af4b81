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


# Pinned by mutation testing (docs/mutation.md): exact values on tiny inputs, against the formulas
# written out independently in numpy / plain Python.

def test_kernel_matrix_exact_values_and_unknown_kernel():
    from unstable.divergence.losses import kernel_matrix
    x, y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[3.0, 4.0]])  # distances 5 and sqrt(20)
    d2 = np.array([[25.0], [20.0]])
    s = 2.0
    np.testing.assert_allclose(kernel_matrix(x, y, "gaussian", s).numpy(), np.exp(-d2 / (2 * s * s)), rtol=1e-6)
    np.testing.assert_allclose(kernel_matrix(x, y, "laplacian", s).numpy(), np.exp(-np.sqrt(d2) / s), rtol=1e-6)
    np.testing.assert_allclose(kernel_matrix(x, y, "imq", s).numpy(), (1 + d2 / (s * s)) ** -0.5, rtol=1e-6)
    # identical points: distance exactly 0 (never a negative round-off), kernel 1
    big = torch.tensor([[1e4, 1e4 + 1], [3e3, 7e3]])
    assert (kernel_matrix(big, big, "gaussian", 1.0).diagonal() == 1.0).all()
    with pytest.raises(ValueError, match="unknown kernel 'cosine'"):
        kernel_matrix(x, y, "cosine")


def mmd2_by_hand(x, y, k):
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(a, b) for a in x for b in y) / (m * n)
    return sxx + syy - 2 * sxy


def test_mmd2_is_the_unbiased_estimate_written_out():
    x = [[0.0], [1.0], [3.0]]
    y = [[0.5], [2.0]]
    s = 1.5
    want = mmd2_by_hand(x, y, lambda a, b: np.exp(-((a[0] - b[0]) ** 2) / (2 * s * s)))
    got = mmd2(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64), "gaussian", s)
    assert got.item() == pytest.approx(want, rel=1e-12)
    got = mmd(torch.tensor(x), torch.tensor(y), kernel="laplacian", bandwidth=s).item()
    assert got == pytest.approx(mmd2_by_hand(x, y, lambda a, b: np.exp(-abs(a[0] - b[0]) / s)), rel=1e-5)
    with pytest.raises(ValueError, match="needs >= 2 samples per side, got 1 and 2"):
        mmd2(torch.zeros(1, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="got 2 and 1"):
        mmd2(torch.zeros(2, 1), torch.zeros(1, 1))
    mmd2(torch.zeros(2, 1), torch.zeros(2, 1))  # two per side is enough
    with pytest.raises(ValueError, match="unknown MMD variant 'other'"):
        mmd(torch.zeros(2, 1), torch.zeros(2, 1), variant="other")


def test_mmd_reference_exact_value():
    x, y = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    # sum_{i,j,d} exp(-(a_id - b_jd)^2 / scale), normalised by D(D-1) for xx, yy and D^2 for xy
    for scale in (1.0, 2.0):
        kxy = np.exp(-1 / scale) + 1.0
        want = 2 / 2 + 2 / 2 - 2 * kxy / 4
        assert mmd_reference(x, y, scale).item() == pytest.approx(want, rel=1e-6)
        assert mmd(x, y, variant="reference", scale=scale).item() == pytest.approx(want, rel=1e-6)
    z = torch.tensor([[0.0, 1.0, 3.0]])  # D = 3: D(D-1) = 6, D^2 = 9
    want = (3 / 6) + (3 / 6) - 2 * 3 / 9
    assert mmd_reference(z, z).item() == pytest.approx(want, rel=1e-6)


def test_median_bandwidth_exact():
    f = torch.tensor([[0.0], [1.0], [3.0]])  # pairwise distances 1, 2, 3 (each twice): lower median 2
    assert median_bandwidth(f) == 2.0
    assert median_bandwidth(f, max_points=2) == 1.0  # only the first two points
    assert median_bandwidth(torch.ones(5, 3)) == 1.0  # all equal: median 0 falls back to 1
    assert median_bandwidth(torch.zeros(1, 3)) == 1.0  # one point: no pairs
    assert median_bandwidth(torch.tensor([[0.0], [float("inf")], [float("inf")]])) == 1.0
    assert median_bandwidth(torch.tensor([[0.0], [0.5]])) == 0.5


def test_classwise_mmd_with_generated_labels_skips_thin_classes():
    g = torch.Generator().manual_seed(8)
    real = torch.randn(12, 2, generator=g)
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 1 + [3] * 1)
    x = torch.randn(9, 2, generator=g)
    x_labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 4])
    kw = {"kernel": "gaussian", "bandwidth": 1.0}
    got = classwise_mmd(x, real, labels, classes=5, x_labels=x_labels, **kw).item()
    # class 0 and 1 count (>= 2 on both sides); class 2 and 3 have one real sample, 4 one generated
    want = mmd2(x[:3], real[:5], **kw).item() + mmd2(x[3:5], real[5:10], **kw).item()
    assert got == pytest.approx(want, rel=1e-6)
    # without x_labels every class with two real samples compares all of x
    got = classwise_mmd(x, real, labels, classes=5, **kw).item()
    assert got == pytest.approx(mmd2(x, real[:5], **kw).item() + mmd2(x, real[5:10], **kw).item(), rel=1e-6)


def test_objective_exact_and_unknown_form():
    d, r = torch.tensor(2.0), torch.tensor(0.5)
    assert objective(d, r, 3.0, 4.0).item() == pytest.approx(3 * 2 - 4 * 0.5)
    assert objective(d, r, 3.0, 4.0, "ratio").item() == pytest.approx(3 * np.log(2) - 4 * np.log(0.5), rel=1e-6)
    # both terms floored at eps
    assert objective(torch.tensor(-1.0), r, 1.0, 1.0, "ratio", eps=1e-4).item() == pytest.approx(
        np.log(1e-4) - np.log(0.5), rel=1e-6)
    assert objective(d, torch.tensor(0.0), 1.0, 1.0, "ratio", eps=1e-4).item() == pytest.approx(
        np.log(2) - np.log(1e-4), rel=1e-6)
    assert objective(d, r, 1.0, 1.0, "ratio").item() == pytest.approx(np.log(4), rel=1e-6)
    with pytest.raises(ValueError, match="unknown objective form 'product'"):
        objective(d, r, 1.0, 1.0, "product")


def test_inception_score_exact_and_split_bounds():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1).numpy()
    marg = p.mean(0)
    want = np.exp(np.mean([(pi * (np.log(pi) - np.log(marg))).sum() for pi in p]))
    assert inception_score(logits, splits=1).item() == pytest.approx(want, rel=1e-10)
    g = torch.Generator().manual_seed(0)
    # more splits than samples: one sample per split, each split's IS is exactly 1
    assert inception_score(logits, splits=10, generator=g).item() == pytest.approx(1.0, rel=1e-10)
    assert inception_score(logits, splits=0).item() == pytest.approx(want, rel=1e-10)  # at least one


def test_frechet_distance_one_dimension_written_out():
    real = torch.tensor([[0.0], [2.0]], dtype=torch.float64)         # mean 1, variance 2
    fake = torch.tensor([[1.0], [1.0], [4.0]], dtype=torch.float64)  # mean 2, variance 3
    want = (1 - 2) ** 2 + 2 + 3 - 2 * np.sqrt(2 * 3)
    assert fid(real, fake).item() == pytest.approx(want, rel=1e-10)
    mu, cov = mean_cov(real)
    from unstable.divergence.losses import sqrtm_psd
    s = sqrtm_psd(cov)
    assert s.item() == pytest.approx(np.sqrt(2), rel=1e-12)
    assert frechet_distance(mu, cov, fake, sqrt_cov_r=s).item() == pytest.approx(want, rel=1e-10)
    assert fid(real, fake.float()).dtype == torch.float32
    # one sample: covariance 0 (not a division by zero), the distance is the mean gap plus tr(cov_r)
    one = torch.tensor([[5.0]], dtype=torch.float64)
    assert torch.equal(mean_cov(one)[1], torch.zeros(1, 1, dtype=torch.float64))
    assert fid(real, one).item() == pytest.approx((5 - 1) ** 2 + 2 - 2 * np.sqrt(1e-10), rel=1e-9)
    # a negative round-off eigenvalue is clipped to 0, not a NaN
    root = sqrtm_psd(torch.diag(torch.tensor([4.0, -1e-12], dtype=torch.float64)))
    assert torch.equal(root, torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64)))


def test_defaults_are_the_documented_ones():
    from unstable.divergence.losses import kernel_matrix
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g) + 0.5
    assert torch.equal(kernel_matrix(x, y), kernel_matrix(x, y, "gaussian", 1.0))
    assert torch.equal(mmd2(x, y), mmd2(x, y, "gaussian", 1.0))
    assert torch.equal(mmd(x, y), mmd2(x, y, "gaussian", 1.0))
    logits = torch.randn(40, 5, generator=g) * 3
    torch.manual_seed(0)
    default = inception_score(logits)
    torch.manual_seed(0)
    assert torch.equal(default, inception_score(logits, splits=4))
    # median_bandwidth looks at the first 1000 points: here those have median distance 0 (-> 1.0),
    # and a 1001st point far away would move the median to 2
    f = torch.cat([torch.zeros(516, 1), torch.full((484, 1), 2.0), torch.tensor([[10.0]])])
    assert median_bandwidth(f) == 1.0
    assert median_bandwidth(f, max_points=1001) == 2.0
    # classwise_mmd looks at classes 0..9 unless told
    real = torch.randn(4, 2, generator=g)
    assert classwise_mmd(x[:, :2], real, torch.tensor([10, 10, 10, 10])).item() == 0.0
    assert classwise_mmd(x[:, :2], real, torch.tensor([9, 9, 9, 9])).item() == pytest.approx(
        mmd2(x[:, :2], real).item())


def test_inception_score_shuffle_follows_the_given_generator():
    logits = torch.randn(30, 4, generator=torch.Generator().manual_seed(1)) * 4
    torch.manual_seed(1)
    a = inception_score(logits, splits=3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(2)  # the global RNG plays no part
    b = inception_score(logits, splits=3, generator=torch.Generator().manual_seed(5))
    c = inception_score(logits, splits=3, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item() and a.item() != c.item()


def test_frechet_distance_uses_a_given_root():
    real = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    fake = torch.tensor([[1.0], [1.0], [4.0]], dtype=torch.float64)
    mu, cov = mean_cov(real)
    # S = 1 instead of sqrt(2): tr((S cov_g S)^1/2) = sqrt(3); the caller's S is used as given
    got = frechet_distance(mu, cov, fake, sqrt_cov_r=torch.ones(1, 1, dtype=torch.float64)).item()
    assert got == pytest.approx(1 + 2 + 3 - 2 * np.sqrt(3), rel=1e-10)


def test_classwise_mmd_two_samples_per_side_is_enough():
    real = torch.tensor([[0.0], [1.0], [5.0], [6.0], [7.0]])  # one feature; class 0 has exactly 2
    labels = torch.tensor([0, 0, 1, 1, 1])
    x = torch.tensor([[0.5], [1.5], [5.5]])
    x_labels = torch.tensor([0, 0, 1])  # class 1: one generated sample, skipped
    kw = {"kernel": "gaussian", "bandwidth": 1.0}
    got = classwise_mmd(x, real, labels, classes=2, x_labels=x_labels, **kw).item()
    assert got == pytest.approx(mmd2(x[:2], real[:2], **kw).item(), rel=1e-6)


def test_creativity_loss_is_the_cross_entropy_against_uniform_written_out():
    # -(1/N) sum_i (1/K) sum_k log p(k|x_i), with p the softmax over the K classes of each row,
    # written out in plain Python on a 3 x 4 batch (rows differ, N != K, so a softmax or a mean
    # over the wrong axis gives another number).
    import math

    from unstable.divergence.losses import creativity_loss
    rows = [[2.0, -1.0, 0.5, 0.0], [0.0, 0.0, 3.0, -2.0], [1.0, 1.0, 1.0, 4.0]]
    expected = 0.0
    for r in rows:
        z = sum(math.exp(v) for v in r)
        expected += -sum(math.log(math.exp(v) / z) for v in r) / len(r)
    expected /= len(rows)
    assert creativity_loss(torch.tensor(rows, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)
    # Uniform posteriors give log K; a confident one gives more.
    assert creativity_loss(torch.zeros(5, 7)).item() == pytest.approx(math.log(7), rel=1e-6)
    assert creativity_loss(confident(torch.arange(3), k=7, scale=5.0)).item() > math.log(7)
