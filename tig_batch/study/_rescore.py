"""Deletion and insertion again, with the blurred image as the replacement, on the
explanations the main comparison stored.

``explain`` scores with one replacement value (the zero base-point's by default), which
favours, by construction, the methods whose attributions vanish where the image already
equals it. The study rescores the same stored attributions with the other documented value,
so the page can show both; no method is re-run. The means are cached beside the outputs,
keyed by the outputs and the settings, so a rerun (or ``--cached-only``) reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from tig_batch.backends import Classifier
from tig_batch.data import iter_batches
from tig_batch.engine import deletion_insertion

CACHE = "deletion-blur.json"
#: The page's names of the rescored columns, as ``Row.metrics`` keys.
BLUR_METRICS = ("deletion, blur", "insertion, blur")


def blur_rescore(
    classifier: Classifier, outputs: Sequence[Path], n_steps: int, blur_sigma: float,
    value_range: tuple[float, float], batch_size: int = 100, cached_only: bool = False,
) -> dict[str, dict[str, float]] | None:  # fmt: skip
    """Per method: the mean deletion and insertion AUC over the images of ``outputs`` (explain
    outputs of one directory), pixels replaced by the image blurred with ``blur_sigma``, the
    curve of ``f_c`` normalised by ``f_c(x)`` over ``n_steps`` steps; NaN-free means over the
    images where they are defined. None when ``cached_only`` and nothing matching is cached."""
    if not outputs:
        return None
    key = {
        "outputs": [[p.name, p.stat().st_size] for p in outputs],
        "n_steps": n_steps, "blur_sigma": blur_sigma, "value_range": list(value_range),
    }  # fmt: skip
    cache = outputs[0].parent / CACHE
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            return stored["means"]
    if cached_only:
        return None
    sums: dict[str, np.ndarray] = {}
    for path in outputs:
        for method, deletion, insertion in _scores(classifier, path, n_steps, blur_sigma,
                                                   value_range, batch_size):  # fmt: skip
            parts = sums.setdefault(method, np.zeros(4))
            for i, values in enumerate((deletion, insertion)):
                finite = values[np.isfinite(values)]
                parts[2 * i] += finite.sum()
                parts[2 * i + 1] += finite.size
    means = {
        method: {
            BLUR_METRICS[0]: float(s[0] / s[1]) if s[1] else float("nan"),
            BLUR_METRICS[1]: float(s[2] / s[3]) if s[3] else float("nan"),
        }
        for method, s in sums.items()
    }
    cache.write_text(json.dumps({"key": key, "means": means}))
    return means


def _scores(
    classifier: Classifier, path: Path, n_steps: int, blur_sigma: float,
    value_range: tuple[float, float], batch_size: int,
):  # fmt: skip
    """(method, deletion AUCs, insertion AUCs) per batch of one output, its images read from
    the input shard it records (the study explains every row of its shards, in order)."""
    with h5py.File(path, "r") as f:
        shard = Path(f.attrs["input_shard"])
        methods = list(f["attributions"])
        targets = f["target"][:]
        start = 0
        for batch in iter_batches(shard, batch_size):
            rows = slice(start, start + len(batch))
            images = torch.from_numpy(batch.images)
            target = torch.from_numpy(targets[rows])
            for method in methods:
                maps = torch.from_numpy(f[f"attributions/{method}"][rows].astype(np.float32))
                flips = deletion_insertion(
                    classifier, images, maps, target, n_steps, "blur", "output", value_range,
                    blur_sigma,
                )  # fmt: skip
                yield method, flips.deletion_auc.numpy(), flips.insertion_auc.numpy()
            start += len(batch)
