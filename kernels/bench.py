"""Time the fused kernels against their torch twins over a grid of image sizes, K and r.

Achieved bandwidth counts the bytes an ideal fused kernel must move: ``numel() *
element_size()`` of every tensor read plus every tensor written, each once (the twins move
more; the two-stage kernels add small partial-sum buffers and, for the step, one float32
round trip of the gradient, which is not counted). On a CUDA device both implementations
are timed with ``triton.testing.do_bench`` (median); on a CPU only the twins are timed, with
``time.perf_counter`` (median), since the kernels need a GPU.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from tig_batch.kernels.ig_accumulate_project import (
    ig_accumulate_project_ref,
    ig_accumulate_project_triton,
)
from tig_batch.kernels.interpolate_path import interpolate_path_ref, interpolate_path_triton
from tig_batch.kernels.tangential_step import tangential_step_ref, tangential_step_triton

IMAGE_SIZES = {
    "mnist": (1, 28, 28),
    "cifar": (3, 32, 32),
    "tiny-imagenet": (3, 64, 64),
    "imagenet": (3, 224, 224),
}
OPS = ("interpolate_path", "ig_accumulate_project", "tangential_step")


@dataclass(frozen=True)
class BenchRow:
    """One kernel at one shape; times in ms, bandwidths in GB/s (1e9 bytes per second)."""

    op: str
    image: str  # key of IMAGE_SIZES
    batch: int  # B, images
    n_steps: int | None  # K (None where the op does not depend on it)
    rank: int | None  # r (None where the op does not depend on it)
    dtype: str
    bytes_moved: int
    torch_ms: float
    torch_gbps: float
    triton_ms: float | None = None
    triton_gbps: float | None = None
    speedup: float | None = None  # torch_ms / triton_ms
    peak_fraction: float | None = None  # triton_gbps / peak
    max_abs_diff: float | None = None  # largest |triton - torch| over the outputs


def peak_bandwidth_gbps(device: torch.device) -> float | None:
    """The device's theoretical DRAM bandwidth (GB/s) from its memory clock and bus width."""
    if device.type != "cuda":
        return None
    try:
        from triton.testing import get_dram_gbps

        return float(get_dram_gbps(device.index or 0))
    except Exception:  # an older driver API or a Triton without the helper
        props = torch.cuda.get_device_properties(device)
        clock_khz = getattr(props, "memory_clock_rate", None)
        bus_bits = getattr(props, "memory_bus_width", None)
        if clock_khz and bus_bits:
            return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9
    return None


def grid(
    images: Iterable[str], steps: Iterable[int], ranks: Iterable[int]
) -> list[tuple[str, str, int | None, int | None]]:
    """(op, image, K, r) cases; an op appears once per value of the sizes it depends on."""
    cases: list[tuple[str, str, int | None, int | None]] = []
    for image in images:
        cases += [("interpolate_path", image, k, None) for k in steps]
        cases += [("ig_accumulate_project", image, k, r) for k in steps for r in ranks]
        cases += [("tangential_step", image, None, r) for r in ranks]
    return cases


def _bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _problem(
    op: str, image: str, batch: int, n_steps: int | None, rank: int | None, dtype: torch.dtype,
    device: torch.device,
) -> tuple[Callable[[], object], Callable[[], object], int, Callable[[object], list]]:  # fmt: skip
    """(twin call, kernel call, bytes moved, outputs of a result) for one case."""
    shape = IMAGE_SIZES[image]
    d = shape[0] * shape[1] * shape[2]
    generator = torch.Generator(device=device).manual_seed(0)

    def rand(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.rand(size, generator=generator, device=device).to(dt)

    if op == "interpolate_path":
        assert n_steps is not None
        x, a, t = rand(batch, *shape), rand(batch, *shape), rand(n_steps, dt=torch.float32)
        out = torch.empty(batch * n_steps, *shape, dtype=dtype, device=device)
        return (
            lambda: interpolate_path_ref(x, a, t, out),
            lambda: interpolate_path_triton(x, a, t, out),
            _bytes(x, a, t, out),
            lambda result: [result.clone()],
        )
    if op == "ig_accumulate_project":
        assert n_steps is not None and rank is not None
        g, w = rand(batch * n_steps, *shape), rand(n_steps, dt=torch.float32)
        x, a, u = rand(batch, *shape), rand(batch, *shape), rand(batch, d, rank)
        outputs = torch.empty(2 * batch * d + 3 * batch + batch * rank, dtype=torch.float32)
        return (
            lambda: ig_accumulate_project_ref(g, w, x, a, u),
            lambda: ig_accumulate_project_triton(g, w, x, a, u),
            _bytes(g, w, x, a, u, outputs),
            lambda r: [r.mean_gradient, r.attributions, r.norm, r.projection, r.alignment],
        )
    assert rank is not None
    v, mean = rand(batch, d, dt=torch.float32), rand(batch, d, dt=torch.float32)
    u, a = rand(batch, d, rank), rand(batch, d)
    p = torch.bmm(v[:, None, :], u.float()).squeeze(1)
    args = (v, mean, u, p, a, 0.1, (0.0, 1.0))
    return (
        lambda: tangential_step_ref(*args),
        lambda: tangential_step_triton(*args),
        _bytes(v, mean, u, p, a, a),
        lambda result: [result.float()],
    )


@dataclass(frozen=True)
class DiffRow:
    """A kernel's largest difference from its twin at one shape, against its tolerance."""

    op: str
    image: str
    batch: int
    n_steps: int | None
    rank: int | None
    dtype: str
    max_abs_diff: float
    max_rel_diff: float  # over the twin's largest |output|
    tolerance: float  # on max_rel_diff
    passed: bool
    error: str | None = None  # the exception the case raised, if any


#: Relative tolerances of the kernels against their twins by storage dtype: both compute in
#: float32, so float32 storage differs only in summation order, float16 storage by at most
#: one float16 rounding of a stored result (the kernel tests' tolerances).
TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-3}


def _max_diff(kernel: list[torch.Tensor], twin: list[torch.Tensor]) -> tuple[float, float]:
    """Largest |kernel - twin| over all outputs, absolute and over the twin's largest value."""
    abs_diff, rel_diff = 0.0, 0.0
    for e, r in zip(kernel, twin, strict=True):
        diff = (e.double() - r.double()).abs().nan_to_num().max().item()
        scale = max(r.double().abs().nan_to_num().max().item(), 1e-30)
        abs_diff, rel_diff = max(abs_diff, diff), max(rel_diff, diff / scale)
    return abs_diff, rel_diff


def compare(
    images: Iterable[str],
    steps: Iterable[int],
    ranks: Iterable[int],
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cuda",
    twins_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[DiffRow]:
    """Every case of :func:`grid`: each kernel's output against its twin's on the same inputs.

    ``twins_only`` runs the twin in the kernel's place (a dry run of the plumbing on a machine
    without a GPU: every difference is then 0).
    """
    device = torch.device(device)
    rows = []
    for op, image, n_steps, rank in grid(images, steps, ranks):
        if progress is not None:
            progress(f"compare {op} {image} K={n_steps} r={rank} {dtype}")
        case = (op, image, batch_size, n_steps, rank, str(dtype).removeprefix("torch."))
        tolerance = TOLERANCES.get(dtype, 1e-5)
        try:
            twin, kernel, _, outputs = _problem(op, image, batch_size, n_steps, rank, dtype, device)
            candidate = outputs((twin if twins_only else kernel)())
            abs_diff, rel_diff = _max_diff(candidate, outputs(twin()))
        except Exception as error:  # one case's failure (a compile error, say) is its row's
            message = f"{type(error).__name__}: {str(error).strip()[:500]}"
            rows.append(DiffRow(*case, math.nan, math.nan, tolerance, False, message))
            continue
        rows.append(DiffRow(*case, abs_diff, rel_diff, tolerance, rel_diff <= tolerance))
    return rows


def _time_cpu(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def run(
    images: Iterable[str],
    steps: Iterable[int],
    ranks: Iterable[int],
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    peak_gbps: float | None = None,
    repeats: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Benchmark every case of :func:`grid`; kernels only on CUDA devices."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        from triton.testing import do_bench
    rows = []
    for op, image, n_steps, rank in grid(images, steps, ranks):
        if progress is not None:
            progress(f"{op} {image} K={n_steps} r={rank}")
        twin, kernel, moved, outputs = _problem(op, image, batch_size, n_steps, rank, dtype, device)
        if not on_gpu:
            torch_ms = _time_cpu(twin, repeats)
            rows.append(
                BenchRow(op, image, batch_size, n_steps, rank, str(dtype).removeprefix("torch."),
                         moved, torch_ms, moved / torch_ms / 1e6)
            )  # fmt: skip
            continue
        diff = _max_diff(outputs(kernel()), outputs(twin()))[0]
        torch_ms = do_bench(twin, return_mode="median")
        triton_ms = do_bench(kernel, return_mode="median")
        triton_gbps = moved / triton_ms / 1e6
        rows.append(
            BenchRow(
                op, image, batch_size, n_steps, rank, str(dtype).removeprefix("torch."),
                moved, torch_ms, moved / torch_ms / 1e6, triton_ms, triton_gbps,
                torch_ms / triton_ms, triton_gbps / peak_gbps if peak_gbps else None, diff,
            )
        )  # fmt: skip
        del twin, kernel
        torch.cuda.empty_cache()
    return rows
