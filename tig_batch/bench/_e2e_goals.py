"""``bench e2e``'s goals: the issues' targets, what was measured for each, met or not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tig_batch.bench._e2e_metrics import METRICS_GOAL, MetricsOverhead

if TYPE_CHECKING:
    from tig_batch.bench._e2e_tangential import TangentialRow
    from tig_batch.bench.e2e import PlainRow

CAPTUM = "Captum"


@dataclass(frozen=True)
class Goal:
    """One of the issue's goals, what was measured for it, and whether it was met."""

    goal: str
    measured: str
    met: bool


def goals_met(
    plain: list[PlainRow], tang: list[TangentialRow], metrics: MetricsOverhead | None
) -> list[Goal]:
    """The goals of the parts that ran, in order: plain IG, tangential IG, metrics."""
    goals = _plain_goals(plain) if plain else []
    if tang:
        goals += _tangential_goals(tang)
    if metrics is not None:
        goals.append(
            Goal(
                f"explain with the default metrics within {METRICS_GOAL}x of explain without",
                f"{metrics.ratio:.2f}x ({metrics.seconds_with:.1f} s against "
                f"{metrics.seconds_without:.1f} s for {metrics.images} digits; "
                f"{', '.join(metrics.metrics)})",
                metrics.met,
            )
        )
    return goals


def _plain_goals(plain: list[PlainRow]) -> list[Goal]:
    by_name = {r.name: r for r in plain}
    best_ig = max((r for r in plain if r.name != CAPTUM), key=lambda r: r.images_per_s)
    return [
        Goal(
            "plain IG >= 3x Captum",
            f"{best_ig.name}: {best_ig.ratio_to_captum:.2f}x "
            f"(torch {by_name['tig-batch torch'].ratio_to_captum:.2f}x, "
            f"ONNX {by_name['tig-batch onnx'].ratio_to_captum:.2f}x)",
            best_ig.ratio_to_captum >= 3,
        ),
        Goal(
            "IG at >= 40% of the matrix product's GFLOP/s",
            f"{best_ig.name}: {best_ig.percent_of_matmul:.0f}%",
            best_ig.percent_of_matmul >= 40,
        ),
    ]


def _tangential_goals(tang: list[TangentialRow]) -> list[Goal]:
    goals = []
    ref = tang[-1]
    for row in tang[:-1]:
        goals.append(
            Goal(
                f"tangential ({row.name}) >= 10x the reference at equal or higher mean mu",
                f"{row.speedup_vs_reference:.1f}x, mean mu {row.mean_mu_shared:.3f} vs "
                f"{ref.mean_mu_shared:.3f} on the reference's {ref.images} images",
                row.speedup_vs_reference >= 10 and row.mean_mu_shared >= ref.mean_mu_shared,
            )
        )
    return goals
