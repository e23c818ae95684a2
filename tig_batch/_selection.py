"""Which images of the inputs a run explains: all, those with given ids, the first N.

Ids are what outputs and reports call ids: an input's stored ids, or an image's position in
its dataset when the input stores none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tig_batch.data import DatasetInfo
from tig_batch.errors import DataError


@dataclass(frozen=True)
class Selection:
    """The images with an id in ``ids`` (every image when empty), then the first ``limit`` of
    them in input order (all when None). An entry ``A-B`` of ``ids`` is the integer ids A to B
    inclusive."""

    ids: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        for entry in self.ids:
            _range(entry)  # a malformed range fails here, not half-way through the inputs

    @classmethod
    def parse(cls, ids: str | None = None, limit: int | None = None) -> Selection:
        """From the command line's ``--ids 3,10-19,cat/1.png`` and ``--limit N``."""
        entries = tuple(e.strip() for e in (ids or "").split(",") if e.strip())
        if ids is not None and not entries:
            raise DataError("--ids is empty; give ids or ranges such as 3,10-19")
        return cls(entries, limit)

    @property
    def everything(self) -> bool:
        return not self.ids and self.limit is None

    def matches(self, ids: np.ndarray) -> np.ndarray:
        """Per id (stored strings or integer positions), whether ``ids`` selects it."""
        if not self.ids:
            return np.ones(len(ids), dtype=bool)
        text = np.asarray([str(i) for i in ids])
        chosen = np.isin(text, [e for e in self.ids if _range(e) is None])
        ranges = [r for r in map(_range, self.ids) if r is not None]
        if ranges:
            numbers = np.array([int(t) if t.lstrip("-").isdigit() else -(2**62) for t in text])
            for lo, hi in ranges:
                chosen |= (numbers >= lo) & (numbers <= hi)
        return chosen


def _range(entry: str) -> tuple[int, int] | None:
    """``A-B`` as (A, B), or None for a single id."""
    lo, sep, hi = entry.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        return None
    if int(hi) < int(lo):
        raise DataError(f"--ids range {entry} is empty: write it as LOW-HIGH")
    return int(lo), int(hi)


def selected_rows(
    dataset: DatasetInfo, shard: Path, count: int, first_id: int, selection: Selection
) -> np.ndarray:
    """The rows of one shard (``count`` images, the first at dataset position ``first_id``)
    whose ids ``selection.ids`` matches; ``limit`` is applied across shards by the caller."""
    if not selection.ids:
        return np.arange(count)
    if dataset.has_ids:
        with h5py.File(shard, "r") as file:
            ids = file["ids"][()]
        ids = np.array([i.decode() if isinstance(i, bytes) else i for i in ids])
    else:
        ids = np.arange(first_id, first_id + count)
    return np.flatnonzero(selection.matches(ids))


def rows_digest(rows: np.ndarray) -> str:
    """sha256 of a row selection: what an output's job records of it."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes()).hexdigest()
