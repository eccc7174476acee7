"""Flow matching and fast sampling of the trained flows.

- ``paths``: Gaussian conditional probability paths (``LinearPath`` with
  ``sigma_min``, ``CosinePath``, ``VPDiffusionPath``) and their conditional target
  fields;
- ``couplings``: independent and minibatch optimal-transport pairing of noise and data;
- ``losses``: the conditional flow-matching regression (``FlowMatcher``);
- ``fields``: time-conditioned vector fields (``TimeMLP``, ``ConvField``) and the
  analytic ``GaussianLinearPathField``;
- ``training``: ``train_flow`` (``FlowTrainConfig``);
- ``bespoke``: ``BespokeSolver``, a learned scale-time transformation of a base RK
  method (a step method for ``hyperode.odeint``), and ``fit_bespoke``;
- ``samplers``: fixed, adaptive, hypersolver and bespoke samplers through
  ``hyperode.solve``, and fitting the learned ones to a flow;
- ``evaluation``: sample quality on 2-D densities and images.

    field = TimeMLP(2)
    train_flow(field, data, iterations=3000)
    bespoke = BespokeSolver("midpoint", num_steps=2)
    fit_flow_bespoke(bespoke, field, (2,))
    x = bespoke.sample(field, torch.randn(1000, 2))           # 4 evaluations of field
"""

from .bespoke import BespokeHistory, BespokeSolver, endpoint_distance, fit_bespoke
from .couplings import independent, minibatch_ot, ot_assignment, transport_cost
from .evaluation import (
    FeatureClassifier,
    density_quality,
    evaluate_samplers,
    image_quality,
    train_feature_classifier,
)
from .fields import ConvField, GaussianLinearPathField, TimeMLP
from .losses import FlowBatch, FlowMatcher, regression_loss
from .paths import CosinePath, LinearPath, ProbabilityPath, VPDiffusionPath, get_path
from .samplers import (
    AdaptiveSampler,
    FixedSampler,
    MethodSampler,
    SampleRun,
    bespoke_sampler,
    fit_flow_bespoke,
    fit_flow_hypersolver,
    hypersolver_sampler,
    reference_endpoints,
)
from .training import FlowHistory, FlowTrainConfig, train_flow

__all__ = [
    "AdaptiveSampler",
    "BespokeHistory",
    "BespokeSolver",
    "ConvField",
    "CosinePath",
    "FeatureClassifier",
    "FixedSampler",
    "FlowBatch",
    "FlowHistory",
    "FlowMatcher",
    "FlowTrainConfig",
    "GaussianLinearPathField",
    "LinearPath",
    "MethodSampler",
    "ProbabilityPath",
    "SampleRun",
    "TimeMLP",
    "VPDiffusionPath",
    "bespoke_sampler",
    "density_quality",
    "endpoint_distance",
    "evaluate_samplers",
    "fit_bespoke",
    "fit_flow_bespoke",
    "fit_flow_hypersolver",
    "get_path",
    "hypersolver_sampler",
    "image_quality",
    "independent",
    "minibatch_ot",
    "ot_assignment",
    "reference_endpoints",
    "regression_loss",
    "train_feature_classifier",
    "train_flow",
    "transport_cost",
]
