"""Samplers of a trained flow run: ``hyperode sample fit`` and ``hyperode sample eval``.

``fit_run_sampler(run, sampler, nfe)`` fits one learned sampler to the run's flow and
writes ``RUN/samplers/<sampler>-nfe<N>/``: ``sampler.json`` (its construction arguments,
the fit's settings and record) and ``state.safetensors`` (its parameters). Learned
samplers (``SAMPLERS``):

- ``hypereuler`` / ``hyperheun``: ``HyperEuler`` / ``HyperHeun`` with a time-reading
  ``g`` (``MLPHyperNet`` for vectors, ``ConvHyperNet`` for images), trajectory-fitted
  against dopri5 on fresh prior noise (``hyperode.flow.fit_flow_hypersolver``); ``nfe``
  counts evaluations of the flow (``g`` adds one per step, reported apart);
- ``bespoke-euler`` / ``bespoke-midpoint`` / ``bespoke-rk4``: ``BespokeSolver`` on that
  base with ``nfe / stages`` steps, fitted to dopri5 end points of prior noise
  (``hyperode.flow.fit_flow_bespoke``).

``evaluate_run(run)`` samples from one noise batch with dopri5 (the reference, rtol =
atol = ``tol``), Euler/Midpoint/RK4 at every NFE of ``nfe`` their stages divide, and
every fitted sampler, and writes ``RUN/sampling/results.json`` (one row per sampler:
NFE, seconds, end-point distance to dopri5, the quality of ``hyperode.flow.
density_quality`` / ``image_quality`` against the run's held-out data, and the main
metric's ratio to dopri5's), ``quality_vs_nfe.png`` and ``samples.png``. Sampling runs
on the CPU.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..flow import (
    AdaptiveSampler,
    BespokeSolver,
    FixedSampler,
    bespoke_sampler,
    evaluate_samplers,
    fit_flow_bespoke,
    fit_flow_hypersolver,
    hypersolver_sampler,
)
from ..flow.samplers import stages_of
from ..hyper import ConvHyperNet, HyperEuler, HyperHeun, HyperSolver, MLPHyperNet
from . import runs
from .flow import FlowRun, load_flow_run, run_quality

SAMPLERS_DIR = "samplers"
SAMPLING_DIR = "sampling"
SAMPLER_FILE = "sampler.json"
STATE_FILE = "state.safetensors"
#: The learned samplers ``fit_run_sampler`` knows: name -> (kind, base method).
SAMPLERS: dict[str, tuple[str, str]] = {
    "hypereuler": ("hyper", "euler"), "hyperheun": ("hyper", "heun2"),
    "bespoke-euler": ("bespoke", "euler"), "bespoke-midpoint": ("bespoke", "midpoint"),
    "bespoke-rk4": ("bespoke", "rk4"),
}
_HYPER_CLASSES = {"hypereuler": HyperEuler, "hyperheun": HyperHeun}
_NETS = {"MLPHyperNet": MLPHyperNet, "ConvHyperNet": ConvHyperNet}
#: Fixed-step methods ``evaluate_run`` runs at every NFE of its list their stages divide.
FIXED_METHODS = ("euler", "midpoint", "rk4")
DEFAULT_NFES = (2, 4, 8, 16)


def sampler_dir_name(sampler: str, nfe: int) -> str:
    return f"{sampler}-nfe{nfe}"


def _check_sampler(sampler: str, nfe: int) -> tuple[str, str]:
    if sampler not in SAMPLERS:
        raise ConfigError("sampler", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ConfigError("nfe", f"must be an integer >= 1, got {nfe!r}")
    kind, base = SAMPLERS[sampler]
    stages = stages_of(base)
    if nfe % stages:
        raise ConfigError("nfe", f"{sampler} evaluates the flow {stages} times per step "
                                 f"({base}); nfe must be a multiple of {stages}, got {nfe}")
    return kind, base


def _construct(spec: dict[str, Any]) -> nn.Module:
    """The (unfitted) sampler module ``sampler.json``'s ``construction`` describes."""
    if spec["class"] == "BespokeSolver":
        return BespokeSolver(**spec["args"])
    net = _NETS[spec["net"]](**spec["net_args"])
    return _HYPER_CLASSES[spec["sampler"]](net)


def _construction(sampler: str, nfe: int, run: FlowRun, hidden: Sequence[int] | None
                  ) -> dict[str, Any]:
    kind, base = SAMPLERS[sampler]
    if kind == "bespoke":
        return {"class": "BespokeSolver",
                "args": {"base": base, "num_steps": nfe // stages_of(base)}}
    shape = run.data.shape
    if run.data.is_image:
        return {"class": _HYPER_CLASSES[sampler].__name__, "sampler": sampler,
                "net": "ConvHyperNet", "net_args": {"channels": shape[0],
                                                    "hidden": list(hidden or (32, 32)),
                                                    "time_input": True}}
    return {"class": _HYPER_CLASSES[sampler].__name__, "sampler": sampler,
            "net": "MLPHyperNet", "net_args": {"state_dim": int(math.prod(shape)),
                                               "hidden": list(hidden or (64, 64)),
                                               "time_input": True}}


@dataclass
class FittedSampler:
    """A fitted sampler loaded from ``RUN/samplers/<name>/``: ``name`` (``"<sampler>@<nfe>"``),
    the sampler object, the module and ``sampler.json``'s contents."""

    name: str
    sampler: Any
    module: nn.Module
    record: dict[str, Any]


def _as_sampler(module: nn.Module, nfe: int, name: str) -> Any:
    if isinstance(module, BespokeSolver):
        return bespoke_sampler(module, name)
    if isinstance(module, HyperSolver):
        return hypersolver_sampler(module, nfe, name)
    raise ValueError(f"{name}: not a learned sampler ({type(module).__name__})")


def fit_run_sampler(model: str | Path, sampler: str, nfe: int, *, iterations: int = 300,
                    batch_size: int = 256, pairs: int = 2048, lr: float | None = None,
                    tol: float = 1e-5, hidden: Sequence[int] | None = None, seed: int = 0,
                    quiet: bool = False) -> FittedSampler:
    """Fit ``sampler`` (a ``SAMPLERS`` name) at ``nfe`` evaluations of the flow in run
    folder ``model`` and write ``RUN/samplers/<sampler>-nfe<nfe>/`` (module docstring).

    Args:
        iterations: optimiser steps of the fit.
        batch_size: noise samples per step (hypersolvers: each batch is solved with
            dopri5, a new one every 5 steps; bespoke: pairs drawn per step).
        pairs: bespoke only: noise samples with dopri5 end points (a quarter more held out).
        lr: default 5e-3 (hypersolvers) or 2e-2 (bespoke).
        tol: rtol = atol of the dopri5 references.
        hidden: hypersolvers' ``g`` widths (default 64,64 for vectors, 32,32 channels
            for images).

    Raises ``ConfigError`` naming the setting: ``model`` (not a flow run), ``sampler``,
    ``nfe`` (not a multiple of the base's stages), the fit settings.
    """
    kind, _ = _check_sampler(sampler, nfe)
    for name, value, low in (("iterations", iterations, 1), ("batch_size", batch_size, 1),
                             ("pairs", pairs, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")
    for name, value in (("lr", lr), ("tol", tol)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and value > 0):
            raise ConfigError(name, f"must be a finite number > 0, got {value!r}")
    if hidden is not None and (not hidden or any(int(w) < 1 for w in hidden)):
        raise ConfigError("hidden", f"must be positive widths, got {hidden!r}")
    run = load_flow_run(model)
    spec = _construction(sampler, nfe, run, hidden)
    torch.manual_seed(seed)
    module = _construct(spec)
    start = time.perf_counter()
    if isinstance(module, BespokeSolver):
        hist = fit_flow_bespoke(module, run.field, run.data.shape, pairs=pairs,
                                iterations=iterations, batch_size=batch_size,
                                lr=lr or 2e-2, rtol=tol, atol=tol, seed=seed)
        fit_record = {"val_before": hist.val_before, "val_after": hist.val_after,
                      "final_loss": hist.loss[-1], "grid": module.grid()}
    else:
        assert isinstance(module, HyperSolver)  # _construction: hyper kinds build one
        batch = (batch_size, *run.data.shape)
        hist = fit_flow_hypersolver(module, run.field, batch, nfe,
                                    iterations=iterations, rtol=tol, atol=tol,
                                    lr=lr or 5e-3, seed=seed)
        fit_record = {"final_loss": hist.loss[-1], "first_loss": hist.loss[0],
                      "reference_nfe": hist.reference_nfe}
    seconds = time.perf_counter() - start
    module.requires_grad_(False)
    folder = run.run_dir / SAMPLERS_DIR / sampler_dir_name(sampler, nfe)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"sampler": sampler, "nfe": nfe, "construction": spec,
              "fit": {"iterations": iterations, "batch_size": batch_size,
                      "pairs": pairs if kind == "bespoke" else None,
                      "lr": lr or (2e-2 if kind == "bespoke" else 5e-3), "tol": tol,
                      "seed": seed, "seconds": seconds, **fit_record},
              "parameters": sum(p.numel() for p in module.parameters()),
              "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    runs.save_weights(folder / STATE_FILE, module)
    runs.atomic_write_json(folder / SAMPLER_FILE, record)
    if not quiet:
        print(f"hyperode: fitted {sampler} at {nfe} NFE ({record['parameters']} parameters) "
              f"in {seconds:.1f} s; final loss {fit_record['final_loss']:.4g}; "
              f"wrote {folder}", flush=True)
    name = f"{sampler}@{nfe}"
    return FittedSampler(name, _as_sampler(module, nfe, name), module, record)


def fitted_samplers(run_dir: Path) -> dict[str, Path]:
    """``"<sampler>@<nfe>"`` -> folder, for every fitted sampler of a run."""
    root = run_dir / SAMPLERS_DIR
    found = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        path = folder / SAMPLER_FILE
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
                found[f"{rec['sampler']}@{rec['nfe']}"] = folder
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def load_fitted(folder: Path) -> FittedSampler:
    """The fitted sampler in ``folder`` (``RUN/samplers/<name>/``)."""
    try:
        record = json.loads((folder / SAMPLER_FILE).read_text())
        module = _construct(record["construction"])
        runs.load_weights(folder / STATE_FILE, module)
        nfe = int(record["nfe"])
        name = f"{record['sampler']}@{nfe}"
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError("samplers", f"cannot load the fitted sampler in {folder}: "
                                      f"{type(e).__name__}: {' '.join(str(e).split())}"
                          ) from None
    module.requires_grad_(False)
    return FittedSampler(name, _as_sampler(module, nfe, name), module, record)


def _check_nfes(nfes: Sequence[int]) -> list[int]:
    values = list(nfes)
    if not values or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64
                         for n in values):
        raise ConfigError("nfe", f"must be integers in [1, 64], got {nfes!r}")
    return sorted(set(values))


def evaluate_run(model: str | Path, *, nfe: Sequence[int] = DEFAULT_NFES,
                 samplers: Sequence[str] | None = None, samples: int | None = None,
                 tol: float = 1e-5, repeats: int = 1, seed: int = 0,
                 plots: bool = True) -> dict[str, Any]:
    """Evaluate every sampler of run folder ``model`` (module docstring); returns the
    contents of ``RUN/sampling/results.json``.

    Args:
        nfe: the NFEs of the fixed-step methods (each method at those its stages divide).
        samplers: fitted samplers to include, as ``"<sampler>@<nfe>"`` (default: all).
        samples: samples per sampler (default: 2000 for 2-D, the held-out set's size up
            to 1000 for images).
        tol: rtol = atol of the dopri5 reference.
        repeats: timed runs per sampler (``seconds`` is their median).
        seed: seeds the noise batch.
    """
    nfes = _check_nfes(nfe)
    for name, value, low in (("repeats", repeats, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or samples < 10):
        raise ConfigError("samples", f"must be an integer >= 10, got {samples!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ConfigError("tol", f"must be a finite number > 0, got {tol!r}")
    run = load_flow_run(model)
    available = fitted_samplers(run.run_dir)
    chosen = list(available) if samplers is None else list(samplers)
    missing = [s for s in chosen if s not in available]
    if missing:
        fitted = ", ".join(available) or "none"
        raise ConfigError("samplers", f"no fitted sampler {', '.join(map(repr, missing))} in "
                                      f"{run.run_dir / SAMPLERS_DIR} (fitted: {fitted}); fit "
                                      f"one with hyperode sample fit --model {run.run_dir} "
                                      f"--sampler NAME --nfe N")
    learned = [load_fitted(available[s]) for s in chosen]
    table: dict[str, Any] = {"dopri5": AdaptiveSampler("dopri5", tol, tol)}
    family = {"dopri5": ("reference", "dopri5")}
    skipped = []
    for method in FIXED_METHODS:
        stages = stages_of(method)
        for n in nfes:
            if n % stages:
                skipped.append(f"{method}@{n}")
                continue
            table[f"{method}@{n}"] = FixedSampler(method, n)
            family[f"{method}@{n}"] = ("fixed", method)
    for fs in learned:
        table[fs.name] = fs.sampler
        family[fs.name] = ("learned", fs.record["sampler"])
    image = run.data.is_image
    count = samples or (min(run.data.test.shape[0], 1000) if image else 2000)
    quality = run_quality(run.run_dir, run.data, seed=run.seed)
    x0 = torch.randn((count, *run.data.shape),
                     generator=torch.Generator().manual_seed(seed + 7))
    rows: dict[str, dict[str, Any]]  # the figures, then the family and method names
    rows, drawn = evaluate_samplers(run.field, table, x0, quality, repeats=repeats)
    metric = "fd" if image else "mmd"
    ref = rows["dopri5"][metric]
    for name, row in rows.items():
        row["family"], row["method"] = family[name]
        row[f"{metric}_over_dopri5"] = row[metric] / ref if ref > 0 else math.nan
        row["speedup_over_dopri5"] = rows["dopri5"]["seconds"] / row["seconds"] \
            if row["seconds"] > 0 else math.nan
    out_dir = run.run_dir / SAMPLING_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "task": run.config["task"], "metric": metric, "samples": count, "tol": tol,
        "repeats": repeats, "seed": seed, "nfe": nfes, "skipped": skipped,
        "fitted": {fs.name: fs.record for fs in learned}, "rows": rows,
        "note": ("fd is the Frechet distance in the run's feature classifier, not FID"
                 if image else "mmd, sw against held-out samples of the density; loglik "
                               "under the true density where it has one"),
    }
    if plots:
        from . import flow_plots

        label = "FD (classifier features, not FID)" if image else "MMD to held-out data"
        flow_plots.plot_quality_vs_nfe(rows, metric, out_dir / "quality_vs_nfe.png",
                                       label=label)
        shown = ["dopri5", *(n for n in rows if n.endswith("@4")),
                 *(fs.name for fs in learned if not fs.name.endswith("@4"))]
        panels = {n: drawn[n] for n in dict.fromkeys(shown)}
        panels["data (held out)"] = run.data.test[:count]
        flow_plots.plot_samples(panels, out_dir / "samples.png")
        results["plots"] = ["quality_vs_nfe.png", "samples.png"]
    runs.atomic_write_json(out_dir / runs.RESULTS_FILE, results)
    return results


def format_table(results: dict[str, Any]) -> str:
    """The rows of ``evaluate_run``'s results as an aligned text table (``p(zero)``: the
    share of samples where the true density is 0, e.g. outside the checkerboard)."""
    metric = results["metric"]
    short = {"zero_density_fraction": "p(zero)"}
    keys = [k for k in ("mmd", "sw", "loglik", "zero_density_fraction", "fd", "precision",
                        "recall") if any(k in r for r in results["rows"].values())]
    head = ["sampler", "NFE", "+g", *(short.get(k, k) for k in keys), f"{metric}/dopri5",
            "end-point", "seconds"]
    lines = [head]
    for name, r in results["rows"].items():
        lines.append([name, str(r["nfe"]), str(r["nfe_g"] or ""),
                      *(f"{r[k]:.4g}" if k in r else "" for k in keys),
                      f"{r[f'{metric}_over_dopri5']:.2f}x", f"{r['endpoint_error']:.4g}",
                      f"{r['seconds']:.4f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)
