"""Sample-quality metrics against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from hyperode.metrics.generative import (
    frechet_distance,
    frechet_from_moments,
    mmd,
    precision_recall,
    sliced_wasserstein,
    wasserstein_1d,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- MMD


def gaussian_kernel_mean(d, mean_diff2, var, bw):
    """E exp(-||X - Y||^2 / (2 bw^2)) for X - Y ~ N(mu, var I) in d dimensions."""
    return (bw * bw / (bw * bw + var)) ** (d / 2) * math.exp(-mean_diff2 / (2 * (bw * bw + var)))


def test_mmd_of_identical_sets_is_zero():
    x = torch.randn(300, 3, generator=gen(0))
    assert mmd(x, x) == 0.0
    # unbiased: the within-set means U drop the diagonal, the cross mean keeps it, so
    # MMD^2 = 2U - 2((n-1)U + L)/n = 2(U - L)/n with L kernels (each 1 on the diagonal)
    bws = (0.5, 1.0)
    n, big_l = x.shape[0], len(bws)
    d2 = torch.cdist(x.double(), x.double()).square()
    k = sum(torch.exp(-d2 / (2 * b * b)) for b in bws)
    u = float((k.sum() - big_l * n) / (n * (n - 1)))
    assert mmd(x, x, bws, estimator="unbiased", squared=True) == \
        pytest.approx(2 * (u - big_l) / n, rel=1e-10)


def test_mmd_of_same_distribution_is_near_zero():
    x = torch.randn(1500, 2, generator=gen(1))
    y = torch.randn(1500, 2, generator=gen(2))
    assert abs(mmd(x, y, (0.5, 1.0), estimator="unbiased", squared=True)) < 2e-3


@pytest.mark.parametrize("shift,s1,s2", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.5), (0.0, 1.0, 2.0)])
def test_mmd_between_gaussians_matches_the_closed_form(shift, s1, s2):
    d, n, bws = 2, 1500, (0.5, 1.0, 2.0)
    m = torch.tensor([shift, 0.0])
    x = s1 * torch.randn(n, d, generator=gen(3))
    y = m + s2 * torch.randn(n, d, generator=gen(4))
    exact = sum(gaussian_kernel_mean(d, 0.0, 2 * s1 * s1, b)
                + gaussian_kernel_mean(d, 0.0, 2 * s2 * s2, b)
                - 2 * gaussian_kernel_mean(d, shift * shift, s1 * s1 + s2 * s2, b)
                for b in bws)
    estimate = mmd(x, y, bws, estimator="unbiased", squared=True)
    assert estimate == pytest.approx(exact, abs=0.01 + 0.03 * exact)
    biased = mmd(x, y, bws, squared=True)
    assert biased >= estimate  # the V-statistic adds the positive diagonal terms
    assert mmd(x, y, bws) == pytest.approx(math.sqrt(biased))


def test_mmd_arguments_are_checked():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="features per sample"):
        mmd(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, x, (0.0,))
    with pytest.raises(ValueError, match="estimator"):
        mmd(x, x, estimator="linear")
    with pytest.raises(ValueError, match="non-finite"):
        mmd(torch.full((3, 2), float("nan")), x)


# ---------------------------------------------------------------------- sliced Wasserstein


@pytest.mark.parametrize("n,m,p", [(50, 50, 1.0), (37, 91, 1.0), (200, 13, 1.0)])
def test_wasserstein_1d_matches_scipy(n, m, p):
    rng = np.random.default_rng(n + m)
    u, v = rng.normal(size=n), rng.gamma(2.0, size=m)
    ours = float(wasserstein_1d(torch.tensor(u)[None], torch.tensor(v)[None], p)[0])
    assert ours == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-12)


def test_wasserstein_1d_p2_of_equal_sizes_is_the_sorted_matching():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=40), rng.normal(size=40)
    expected = np.mean((np.sort(u) - np.sort(v)) ** 2)
    ours = float(wasserstein_1d(torch.tensor(u)[None], torch.tensor(v)[None], 2.0)[0])
    assert ours == pytest.approx(expected, rel=1e-12)


def test_sliced_wasserstein_of_a_shift():
    """A shift by m moves every projection by theta . m: in 1-D SW_2 = |m| exactly;
    in d dimensions SW_2^2 = E (theta . m)^2 = |m|^2 / d."""
    x = torch.randn(500, 1, generator=gen(5), dtype=torch.float64)
    assert sliced_wasserstein(x, x + 1.7, projections=3) == pytest.approx(1.7, rel=1e-12)
    x = torch.randn(2000, 3, generator=gen(6))
    m = torch.tensor([1.0, -2.0, 0.5])
    sw = sliced_wasserstein(x, x + m, projections=4000, generator=gen(7))
    assert sw == pytest.approx(float(m.norm()) / math.sqrt(3), rel=0.03)
    # independent draws: the shift plus sampling noise
    y = torch.randn(4000, 3, generator=gen(8)) + m
    sw2 = sliced_wasserstein(x, y, projections=1000, generator=gen(9))
    assert sw2 == pytest.approx(float(m.norm()) / math.sqrt(3), rel=0.06)


# ---------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_forms():
    f64 = dict(dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], **f64), torch.tensor([1.0, 1.0, 0.0], **f64)
    a, b = torch.tensor([1.0, 4.0, 0.25], **f64), torch.tensor([2.0, 1.0, 0.25], **f64)
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_from_moments(mu1, torch.diag(a), mu2, torch.diag(b)) == \
        pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(1)
    q1, q2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = q1 @ q1.T + 0.1 * np.eye(4), q2 @ q2.T + 0.1 * np.eye(4)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    ours = frechet_from_moments(torch.tensor(m1), torch.tensor(c1), torch.tensor(m2),
                                torch.tensor(c2))
    assert ours == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_of_samples():
    x = torch.randn(20000, 2, generator=gen(10))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    y = torch.tensor([1.0, 0.0]) + torch.tensor([2.0, 0.5]) * torch.randn(20000, 2,
                                                                          generator=gen(11))
    expected = 1.0 + (1 - 2.0) ** 2 + (1 - 0.5) ** 2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.05)


# ---------------------------------------------------------------------- precision / recall


def test_precision_recall_identical_disjoint_and_mode_dropping():
    real = torch.randn(400, 2, generator=gen(12))
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    two_modes = torch.cat([torch.randn(300, 2, generator=gen(13)) - 10,
                           torch.randn(300, 2, generator=gen(14)) + 10])
    one_mode = torch.randn(300, 2, generator=gen(15)) - 10
    precision, recall = precision_recall(two_modes, one_mode, k=3)
    assert precision > 0.9
    assert 0.4 < recall < 0.55
    with pytest.raises(ValueError, match="needs more than k samples"):
        precision_recall(real[:3], real, k=3)
