"""Wall-clock timing: warm-up calls, then the median of repeated timed calls,
synchronising CUDA before every clock read so that queued kernels are counted."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Timing:
    """Seconds per call: ``median`` of ``times`` (the timed repeats)."""

    median: float
    times: list[float]
    warmup: int

    @property
    def min(self) -> float:
        return min(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "times_s": list(self.times),
                "warmup": self.warmup}


def _sync_default() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def time_call(fn: Callable[..., Any], *args: Any, warmup: int = 3, repeats: int = 10,
              sync: bool | None = None, **kwargs: Any) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls (compilation, caches,
    cuDNN autotuning), then ``repeats`` timed ones; returns their median.

    ``sync``: call ``torch.cuda.synchronize()`` before starting and before stopping each
    clock; ``None`` (default) = whenever CUDA is initialised in this process.
    """
    for name, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"time_call: {name} must be an int >= {least}, got {value!r}")
    sync = _sync_default() if sync is None else bool(sync)
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args, **kwargs)
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return Timing(median=statistics.median(times), times=times, warmup=warmup)
