"""Evaluating samplers of a trained flow: sample quality against fresh data, per sampler.

2-D densities (``density_quality``): the mean exact log density of the samples under
the true density (``hyperode.data.densities.log_density``; where one exists, and with
the share of samples of zero density reported, since ``-inf`` has no mean), the MMD and
the sliced Wasserstein distance to fresh data (``hyperode.metrics.generative``).

``evaluate_samplers`` runs several samplers from one noise batch and tabulates NFE,
wall time, the end-point distance to a reference sampler and any quality function.

Images (``image_quality``): the Fréchet distance and k-NN precision/recall in the
feature space of a small classifier trained on the same data (``FeatureClassifier``,
``train_feature_classifier``). This is *not* FID: FID is defined with Inception-v3
features of 299x299 natural images; an 8x8-digit classifier's 64 penultimate
features are a different space, and its values are comparable only with each other.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..checks import check_positive_int
from ..data.densities import LOG_DENSITIES, log_density
from ..metrics.generative import frechet_distance, mmd, precision_recall, sliced_wasserstein


def density_quality(samples: Tensor, fresh: Tensor, density: str | None = None, *,
                    bandwidths: Sequence[float] | None = None, projections: int = 256,
                    seed: int = 0) -> dict[str, float]:
    """Quality of 2-D ``samples`` ``[n, 2]`` against ``fresh`` data ``[m, 2]``.

    Returns ``mmd`` (biased, sqrt; Gaussian kernels with ``bandwidths``, default
    ``(0.05, 0.2, 0.5)`` x the fresh data's per-coordinate std averaged), ``sw``
    (``SW_2``, ``projections`` directions, seeded), and when ``density`` has an exact
    log density: ``loglik`` (mean over samples of finite log density) and
    ``zero_density_fraction`` (samples where it is 0, e.g. outside the checkerboard).
    """
    scale = float(fresh.double().std(dim=0).mean())
    bws = tuple(b * scale for b in (bandwidths or (0.05, 0.2, 0.5)))
    gen = torch.Generator().manual_seed(seed)
    out = {"mmd": mmd(samples, fresh, bws),
           "sw": sliced_wasserstein(samples, fresh, projections=projections, generator=gen)}
    if density is not None and density in LOG_DENSITIES:
        lp = log_density(density, samples)
        finite = torch.isfinite(lp)
        out["loglik"] = float(lp[finite].mean()) if bool(finite.any()) else -math.inf
        out["zero_density_fraction"] = float((~finite).double().mean())
    return out


class FeatureClassifier(nn.Module):
    """A small classifier of ``[B, C, H, W]`` images whose penultimate activations are
    the feature space of ``image_quality``.

    ``Conv(C -> 32, 3x3) -> ReLU -> Conv(32 -> 64, 3x3, stride 2) -> ReLU -> flatten ->
    Linear(-> features) -> ReLU`` (the features) ``-> Linear(features -> classes)``.
    """

    def __init__(self, channels: int = 1, size: int = 8, classes: int = 10,
                 features: int = 64):
        super().__init__()
        owner = "FeatureClassifier"
        channels = check_positive_int(owner, "channels", channels)
        size = check_positive_int(owner, "size", size, minimum=2)
        half = (size + 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * half * half, check_positive_int(owner, "features", features)), nn.ReLU())
        self.head = nn.Linear(features, check_positive_int(owner, "classes", classes))

    def features(self, x: Tensor) -> Tensor:
        """``[B, features]`` penultimate activations."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def train_feature_classifier(x: Tensor, y: Tensor, *, x_test: Tensor | None = None,
                             y_test: Tensor | None = None, epochs: int = 30,
                             batch_size: int = 64, lr: float = 2e-3, seed: int = 0
                             ) -> tuple[FeatureClassifier, float | None]:
    """Train a ``FeatureClassifier`` on images ``x`` ``[N, C, H, W]`` with labels ``y``
    (Adam, cross-entropy); returns it (in eval mode) and its test accuracy when test
    data are given."""
    torch.manual_seed(seed)
    classes = int(y.max()) + 1
    net = FeatureClassifier(x.shape[1], x.shape[-1], classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(check_positive_int("train_feature_classifier", "epochs", epochs)):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    acc = None
    if x_test is not None and y_test is not None:
        with torch.no_grad():
            acc = float((net(x_test).argmax(dim=1) == y_test).double().mean())
    return net, acc


def image_quality(samples: Tensor, real: Tensor,
                  features: Callable[[Tensor], Tensor], k: int = 3) -> dict[str, float]:
    """Fréchet distance (``fd``, in ``features``' space — not FID) and k-NN
    ``precision``/``recall`` (same features) of ``samples`` against ``real`` images."""
    with torch.no_grad():
        fs, fr = features(samples), features(real)
    p, r = precision_recall(fr, fs, k=k)
    return {"fd": frechet_distance(fs, fr), "precision": p, "recall": r}


def evaluate_samplers(vector_field: Callable, samplers: Mapping[str, Callable], x0: Tensor,
                      quality: Callable[[Tensor], dict[str, float]], *,
                      reference: str = "dopri5", repeats: int = 1
                      ) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Run every sampler (``name -> sampler``, e.g. ``hyperode.flow.FixedSampler``) from
    the same noise ``x0`` and measure it.

    Returns ``(rows, samples)``: ``rows[name]`` holds ``nfe``, ``nfe_g`` (learned
    corrections), ``seconds`` (median of ``repeats`` runs), ``endpoint_error`` (mean
    per-sample distance to the ``reference`` sampler's samples from the same noise) and
    the entries of ``quality(samples)``; ``samples[name]`` the samples of the first run.
    """
    check_positive_int("evaluate_samplers", "repeats", repeats)
    if reference not in samplers:
        raise ValueError(f"evaluate_samplers: reference {reference!r} is not among the "
                         f"samplers {sorted(samplers)}")
    samples, rows = {}, {}
    for name, sampler in samplers.items():
        runs = [sampler(vector_field, x0) for _ in range(repeats)]
        samples[name] = runs[0].samples
        rows[name] = {"nfe": runs[0].nfe, "nfe_g": runs[0].nfe_correction,
                      "seconds": statistics.median(r.seconds for r in runs)}
    ref = samples[reference]
    for name, x in samples.items():
        rows[name]["endpoint_error"] = float(
            (x - ref).reshape(x.shape[0], -1).norm(dim=1).mean())
        rows[name].update(quality(x))
    return rows, samples
