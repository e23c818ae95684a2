"""Measuring tools of the benchmarks: alternating timings with peak RSS, FLOP counts."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> int | None:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs``); the RSS now, in KiB,
    or None where that is not possible (then peaks are not reported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


@dataclass(frozen=True)
class Measured:
    """Seconds per run (one per repeat), peak RSS and its growth over the run (MiB)."""

    seconds: list[float]
    peak_rss_mib: float | None
    rss_growth_mib: float | None
    output: Any = None


def run_once(fn: Callable[[], Any]) -> tuple[float, float | None, float | None, Any]:
    """Seconds, peak RSS and its growth (MiB; None where unknown) and the output of a call."""
    before = reset_peak_rss()
    start = time.perf_counter()
    output = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if before is not None else None
    if peak is None or before is None:
        return seconds, None, None, output
    return seconds, peak / 1024, max(0, peak - before) / 1024, output


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one untimed warm-up call (allocations, ONNX
    Runtime's first run of a new shape)."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def alternate(
    calls: Mapping[str, Callable[[], Any]], repeats: int, warm_up: bool = True
) -> dict[str, Measured]:
    """Run every call once per round, ``repeats`` rounds, after one warm-up round; each
    call's peak RSS is the highest seen in any of its timed runs."""
    for call in calls.values() if warm_up else ():
        call()
    runs: dict[str, list[tuple[float, float | None, float | None, Any]]] = {n: [] for n in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            runs[name].append(run_once(call))
    out = {}
    for name, items in runs.items():
        peaks = [i[1] for i in items if i[1] is not None]
        growth = [i[2] for i in items if i[2] is not None]
        out[name] = Measured(
            [i[0] for i in items], max(peaks, default=None), max(growth, default=None),
            items[-1][3],
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class FlopReport:
    """FLOPs of one gradient evaluation (forward + input-gradient backward, per sample) and
    the GFLOP/s of a float32 ``n x n`` matrix product on the same threads."""

    per_evaluation: float
    matmul_size: int
    matmul_gflops: float


def gradient_flops(module: torch.nn.Module, shape: tuple[int, ...], batch: int = 4) -> float:
    """FLOPs per sample of ``f_c`` and its input gradient, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, *shape, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        value = module.eval()(x)[:, 0].sum()
        value.backward(inputs=[x])  # autograd.grad is not supported under the counter
    return counter.get_total_flops() / batch
