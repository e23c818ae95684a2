"""Benchmarks run by ``tig-batch bench``: side-by-side ratios measured in one process run.

Speed claims here are ratios of contenders timed in alternation on the same model and inputs,
never absolute times: these machines are shared and their clocks vary.
"""

from tig_batch.bench._e2e_render import plot_scaling, to_markdown
from tig_batch.bench.backends import BackendTiming, demo_bundle, time_backends
from tig_batch.bench.e2e import QUICK, SEARCHES, E2EResult, E2ESettings, run_e2e
from tig_batch.bench.gpu import GpuCheckSettings, run_gpu_check
from tig_batch.bench.reference import ReferenceResult, ReferenceSearch, reference_tangential
from tig_batch.bench.scaling import ScalingCurve, ScalingGrid, scaling_curves

__all__ = [
    "QUICK",
    "SEARCHES",
    "BackendTiming",
    "E2EResult",
    "E2ESettings",
    "GpuCheckSettings",
    "ReferenceResult",
    "ReferenceSearch",
    "ScalingCurve",
    "ScalingGrid",
    "demo_bundle",
    "plot_scaling",
    "reference_tangential",
    "run_e2e",
    "run_gpu_check",
    "scaling_curves",
    "time_backends",
    "to_markdown",
]
