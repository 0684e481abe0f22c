"""Latency statistics, computed one way for every benchmark and report.

``time_calls`` runs a call ``warmup`` times untimed, then ``iterations`` times timed (wall clock,
and the process's CPU time, which a busy shared machine disturbs far less). ``latency_stats``
turns the seconds into milliseconds: median, p90/p95/p99 (numpy's linear-interpolated
percentiles), mean, min, and throughput in items per second. ``reid-runtime bench``, the
artifact choice, ``edgereid cost``, the pruning table and ``bench/bench_models.py`` all use them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["latency_stats", "time_calls"]


def time_calls(fn: Callable[[int], Any], iterations: int, warmup: int = 0) -> tuple[list[float], list[float]]:
    """Seconds of wall time and of process CPU time of each of ``iterations`` timed calls ``fn(i)``."""
    for i in range(warmup):
        fn(i)
    wall, cpu = [], []
    for i in range(iterations):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def latency_stats(seconds: Sequence[float], items_per_call: int = 1,
                  cpu_seconds: Sequence[float] | None = None) -> dict[str, float]:
    """Median / p90 / p95 / p99 / mean / min in milliseconds, and throughput in items per second.

    With ``cpu_seconds`` (the process CPU time of the same calls), also ``cpu_median_ms``.
    """
    if len(seconds) == 0:
        raise ValueError("latency_stats: no timed calls")
    ms = np.asarray(seconds, np.float64) * 1e3
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    total = float(np.sum(seconds))
    out = {
        "calls": len(ms),
        "items_per_call": items_per_call,
        "median_ms": p50,
        "p90_ms": p90,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "throughput_per_s": (len(ms) * items_per_call / total) if total > 0 else float("inf"),
    }
    if cpu_seconds is not None:
        out["cpu_median_ms"] = float(np.median(np.asarray(cpu_seconds, np.float64) * 1e3))
    return out
