"""Two ``tig-batch explain`` outputs of one job, dataset by dataset, against stated tolerances.

Used by ``bench gpu`` to compare a run on the device with the same job on the CPU. Every
dataset of the outputs is compared, whatever the format holds, image by image:

- a floating dataset: an image agrees when its largest difference is within ``rel`` of the
  dataset's largest absolute value on the CPU (NaN agrees with NaN only);
- an integer dataset (targets, predictions, ranks, flags, ids): an image agrees when equal.

A dataset passes when at least ``share`` of its images agree. Both runs compute in float32, but
in other orders and with other kernels, and a near-tie in a max pool or a ReLU at its kink
sends an image's gradient elsewhere on either device; so the rules below allow a few images
to differ, where a wrong kernel or a wrong transfer would change most. The tangential
base-point search runs 60 steps from each image and amplifies differences, so its datasets
are held to a looser rule, and the mean of its alignment ``mu`` to within 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """``share`` of the images agree within ``rel`` (of the largest CPU value); the means of
    an alignment dataset differ by at most ``mean_mu``."""

    rel: float
    share: float
    mean_mu: float


EXACT_METHODS = Tolerance(rel=1e-3, share=0.99, mean_mu=1e-3)
SEARCHED = Tolerance(rel=5e-2, share=0.90, mean_mu=1e-2)


def tolerance_for(dataset: str) -> Tolerance:
    """The rule of a dataset: :data:`SEARCHED` for the tangential method's, else exact."""
    return SEARCHED if "tangential" in dataset else EXACT_METHODS


def _datasets(path: Path) -> dict[str, np.ndarray]:
    import h5py

    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: (
                found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return found


def agreement(reference: np.ndarray, candidate: np.ndarray, rel: float) -> np.ndarray:
    """Per image (first axis): whether ``candidate`` agrees with ``reference``."""
    ref = reference.reshape(len(reference), -1)
    other = candidate.reshape(len(candidate), -1)
    if not np.issubdtype(ref.dtype, np.floating):
        return (ref == other).all(axis=1)
    ref, other = ref.astype(np.float64), other.astype(np.float64)
    both_nan = np.isnan(ref) & np.isnan(other)
    diff = np.where(both_nan, 0.0, np.abs(ref - other))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
    scale = np.nanmax(np.abs(ref)) if np.isfinite(ref).any() else 1.0
    return diff.max(axis=1) <= rel * max(float(scale), 1e-30)


def compare_outputs(reference: Path, candidate: Path) -> list[dict[str, Any]]:
    """One row per dataset: images that agree, the largest relative difference, the rule
    and whether it passed. A dataset missing on one side or of another shape fails."""
    ours, theirs = _datasets(reference), _datasets(candidate)
    rows = []
    for name in sorted(set(ours) | set(theirs)):
        rule = tolerance_for(name)
        row: dict[str, Any] = {"dataset": name, "rel": rule.rel, "share": rule.share}
        a, b = ours.get(name), theirs.get(name)
        if a is None or b is None or a.shape != b.shape:
            row.update(passed=False, note="missing or of another shape on one side")
            rows.append(row)
            continue
        if a.ndim == 0:
            a, b = a[None], b[None]
        agree = agreement(a, b, rule.rel)
        row.update(agreeing=int(agree.sum()), images=len(agree))
        if not np.issubdtype(a.dtype, np.floating):
            row["rel"] = None  # integers must be equal
        row["max_rel_diff"] = _max_rel_diff(a, b)
        passed = bool(agree.mean() >= rule.share)
        if name.startswith("alignment/"):
            row["mean_mu_diff"] = abs(float(np.nanmean(a)) - float(np.nanmean(b)))
            passed = passed and row["mean_mu_diff"] <= rule.mean_mu
        row["passed"] = passed
        rows.append(row)
    return rows


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    if not np.issubdtype(a.dtype, np.floating):
        return None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not finite.any():
        return 0.0
    scale = max(float(np.abs(a64[finite]).max()), 1e-30)
    return float(np.abs(a64[finite] - b64[finite]).max() / scale)
