"""The alignment-gap frontier: per image, the best ``mu`` the search saw at each output gap.

Every search iterate is a base-point with a measured ``mu`` and output gap, so keeping the
best ``mu`` among iterates whose gap is at least a fraction of the zero base-point's costs
nothing extra. Read across fractions, it shows what alignment costs in output explained.
"""

from __future__ import annotations

import math

import torch

#: Gap fractions of the frontier, relative to the zero base-point's gap; ``-inf`` is the
#: unconstrained column (any gap, negative ones included).
FRONTIER_GAP_FRACTIONS: tuple[float, ...] = (1.0, 0.9, 0.75, 0.5, 0.25, 0.1, -math.inf)


class Frontier:
    """Best ``mu`` per image (B, F) among the iterates offered, NaN where none qualified."""

    def __init__(self, n_images: int, like: torch.Tensor) -> None:
        self.levels = torch.tensor(FRONTIER_GAP_FRACTIONS, dtype=like.dtype, device=like.device)
        self.best = torch.full(
            (n_images, len(FRONTIER_GAP_FRACTIONS)), torch.nan, dtype=like.dtype, device=like.device
        )

    def offer(
        self, rows: torch.Tensor, alignment: torch.Tensor, gap_fraction: torch.Tensor
    ) -> None:
        """Record the iterates of ``rows``: their ``mu`` and gap over the zero base-point's."""
        qualifies = gap_fraction[:, None] >= self.levels[None, :]
        qualifies[:, torch.isinf(self.levels)] = True  # NaN fractions count only here
        offered = torch.where(qualifies, alignment[:, None], torch.nan)
        self.best[rows] = torch.fmax(self.best[rows], offered)
