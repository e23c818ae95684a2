"""Benchmarks run by ``tig-batch bench``: side-by-side ratios measured in one process run.

Speed claims here are ratios of contenders timed in alternation on the same model and inputs,
never absolute times: these machines are shared and their clocks vary.
"""

from tig_batch.bench.backends import BackendTiming, demo_bundle, time_backends

__all__ = ["BackendTiming", "demo_bundle", "time_backends"]
