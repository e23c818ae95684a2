"""``bench e2e``'s metrics part: what the default faithfulness metrics add to ``explain``.

The same job twice, ``tig-batch explain``'s defaults on the same mnist-5k test digits, with
and without the default metric set, each run end to end by :func:`tig_batch.run` (plan
included, outputs written), timed in alternating rounds. The issue's goal: the metrics keep
the run within 1.3x of its time without them.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tig_batch._faithfulness import MetricsConfig
from tig_batch._selection import Selection
from tig_batch.backends import Runtime
from tig_batch.bench._measure import alternate
from tig_batch.job import Job, Storage, plan
from tig_batch.runner import run

if TYPE_CHECKING:
    from tig_batch.bench.e2e import E2ESettings, Progress

#: The issue's bound on the default metrics' cost: explain with them / explain without them.
METRICS_GOAL = 1.3


@dataclass(frozen=True)
class MetricsOverhead:
    """Median seconds of ``explain`` at its defaults with and without the default metrics
    (``metrics``), over ``rounds`` alternating rounds on ``images`` digits, and their ratio."""

    images: int
    metrics: tuple[str, ...]
    rounds: int
    seconds_without: float
    seconds_with: float
    seconds_by_round: dict[str, list[float]]

    @property
    def ratio(self) -> float:
        return self.seconds_with / self.seconds_without

    @property
    def met(self) -> bool:
        return self.ratio <= METRICS_GOAL


def metrics_overhead(
    bundle: Path, settings: E2ESettings, runtime: Runtime, say: Progress
) -> MetricsOverhead:
    """Time ``explain`` with ``settings.explain`` (its defaults, but for ``--quick``) on
    ``settings.metrics_images`` digits, with the default metrics and with none, in
    ``settings.metrics_repeats`` alternating rounds after a warm-up round (each run
    recomputes: ``overwrite``)."""
    with_metrics = replace(settings.explain, metrics=MetricsConfig())
    without = replace(with_metrics, metrics=MetricsConfig(names=()))
    n = settings.metrics_images
    say(
        f"metrics: explain at its defaults on {n} digits with and without the metrics "
        f"{', '.join(with_metrics.metrics.names)}, {settings.metrics_repeats} alternating rounds"
    )
    with tempfile.TemporaryDirectory(prefix="tig-batch-e2e-metrics-") as work:
        storage, selection = Storage(overwrite=True), Selection(limit=n)
        jobs = {
            name: Job(bundle, ("mnist-5k",), Path(work) / name, config, runtime, storage, selection)
            for name, config in (("without", without), ("with", with_metrics))
        }
        plans = {name: plan(job) for name, job in jobs.items()}
        measured = alternate(
            {name: (lambda p=p: run(p)) for name, p in plans.items()}, settings.metrics_repeats
        )
    seconds = {name: m.seconds for name, m in measured.items()}
    return MetricsOverhead(
        n, with_metrics.metrics.names, settings.metrics_repeats,
        statistics.median(seconds["without"]), statistics.median(seconds["with"]), seconds,
    )  # fmt: skip
