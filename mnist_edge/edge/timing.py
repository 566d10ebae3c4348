"""The one timing loop and the one percentile summary (bench, tune, the doctor, serve's tests).

Every figure warms up first, then times single calls with time.perf_counter; several callables
are timed round-robin (`interleaved`) so that drift in the machine's load hits all alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Percentiles of a list of per-call times (milliseconds)."""

    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p99_9_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iterations: int

    @classmethod
    def of(cls, seconds: list[float] | np.ndarray) -> Timing:
        ms = np.asarray(seconds, np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no times to summarise")
        p50, p90, p95, p99, p999 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99, 99.9]))
        return cls(p50, p90, p95, p99, p999, float(ms.mean()), float(ms.min()), float(ms.max()),
                   int(ms.size))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The MLPerf-style figures a scenario reports."""
        return {"p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "p99_9_ms": self.p99_9_ms, "mean_ms": self.mean_ms, "max_ms": self.max_ms,
                "queries": self.iterations}  # fmt: skip


def interleaved(
    fns: dict[str, tuple[Callable[[Any], Any], Any]],
    rounds: int | None,
    duration: float = 1.0,
    warmup: int = 3,
) -> dict[str, list[float]]:
    """Per-call times (s) of several (callable, argument) pairs, called round-robin; `rounds`
    calls each, or for `duration` seconds when rounds is None."""
    for _ in range(warmup):
        for fn, x in fns.values():
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    first = times[next(iter(fns))]
    deadline = time.perf_counter() + duration
    while (len(first) < rounds) if rounds else time.perf_counter() < deadline:
        for name, (fn, x) in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    return times


def time_calls(fn: Callable[[Any], Any], x: Any, *, rounds: int | None = None,
               duration: float = 1.0, warmup: int = 3) -> Timing:  # fmt: skip
    """The Timing of `fn(x)`: `rounds` calls, or as many as fit in `duration` seconds."""
    return Timing.of(interleaved({"f": (fn, x)}, rounds, duration, warmup)["f"])
