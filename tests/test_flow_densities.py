"""Exact log densities of the 2-D densities: normalised, consistent with the samplers,
and equal to the recipe's own mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from hyperode.data.densities import (
    CURVES_BANDWIDTH,
    LOG_DENSITIES,
    curve_points,
    log_density,
    sample_density,
)


def grid(lo=-6.0, hi=6.0, n=600):
    xs = torch.linspace(lo, hi, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), float(xs[1] - xs[0])


@pytest.mark.parametrize("name", ["rings", "checkerboard", "circles", "8gaussians"])
def test_log_density_integrates_to_one(name):
    pts, h = grid()
    mass = float(torch.exp(log_density(name, pts)).sum()) * h * h
    # the checkerboard's cell edges fall between grid points: a boundary-layer error
    assert mass == pytest.approx(1.0, abs=0.02 if name == "checkerboard" else 2e-4)


@pytest.mark.parametrize("name", LOG_DENSITIES)
def test_samples_lie_where_the_density_is(name):
    x = sample_density(name, 2000, seed=3)
    lp = log_density(name, x)
    assert lp.dtype == torch.float64 and lp.shape == (2000,)
    assert bool(torch.isfinite(lp).all())
    # samples score higher on average than uniform points of the same box (zero density
    # counted as a log density of -50)
    box = 8.0 * torch.rand(2000, 2, generator=torch.Generator().manual_seed(0)) - 4.0
    lb = torch.clamp(log_density(name, box), min=-50.0)
    assert float(lp.mean()) > float(lb.mean()) + 0.5


def test_eight_gaussians_mean_log_density_is_minus_its_entropy():
    """Well-separated components: entropy = log 8 + log(2 pi e sigma^2)."""
    std = 0.5 / 1.414
    x = sample_density("8gaussians", 20000, seed=1)
    entropy = math.log(8) + math.log(2 * math.pi * math.e * std * std)
    assert float(log_density("8gaussians", x).mean()) == pytest.approx(-entropy, abs=0.03)


def test_rings_closed_form_equals_the_recipes_mixture():
    """The recipe's rings are evenly spaced angles plus Gaussian noise: the Bessel
    closed form is its continuous-angle limit, equal to the explicit mixture."""
    per_ring, std = 2500, 0.08
    centres = []
    for radius in (1.0, 0.75, 0.5, 0.25):
        angle = np.linspace(0.0, 2.0 * np.pi, per_ring, endpoint=False)
        centres.append(3.0 * radius * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    centres = np.concatenate(centres)
    x = np.concatenate([sample_density("rings", 50, seed=2).double().numpy(),
                        np.array([[0.0, 0.0], [1.0, 1.0], [2.9, -0.3]])])
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
    mixture = logsumexp(-d2 / (2 * std * std), axis=1) - np.log(len(centres) * 2 * np.pi
                                                               * std * std)
    ours = log_density("rings", torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, mixture, rtol=1e-8, atol=1e-8)


def test_circles_curves_is_the_kde_mixture():
    pts = curve_points()
    x = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.3, 0.3], [1.5, -1.0]], dtype=torch.float64)
    bw2 = CURVES_BANDWIDTH ** 2
    expected = []
    for p in x.numpy():
        d2 = ((pts - p) ** 2).sum(axis=1)
        expected.append(logsumexp(-d2 / (2 * bw2)) - np.log(len(pts) * 2 * np.pi * bw2))
    np.testing.assert_allclose(log_density("circles_curves", x).numpy(), expected, rtol=1e-12)


def test_checkerboard_is_zero_off_the_board():
    lp = log_density("checkerboard", torch.tensor([[1.0, 1.0], [3.0, 1.0], [5.0, 0.0]]))
    assert float(lp[0]) == pytest.approx(-math.log(32.0))
    assert lp[1] == -math.inf and lp[2] == -math.inf


def test_pinwheel_has_no_log_density_and_input_is_checked():
    assert "pinwheel" not in LOG_DENSITIES
    with pytest.raises(ValueError, match="'pinwheel' has no exact log density"):
        log_density("pinwheel", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x must be a tensor \[n, 2\]"):
        log_density("rings", torch.zeros(3, 3))
    with pytest.raises(ValueError, match="density must be one of"):
        log_density("moons", torch.zeros(3, 2))
