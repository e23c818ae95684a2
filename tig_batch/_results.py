"""Explain outputs on disk: one HDF5 file per input shard, committed chunk by chunk.

HDF5 files are not safe against a process killed mid-write, so work in progress is kept as
one small file per chunk in ``<output>.parts/``, each written under a temporary name and
renamed once complete and flushed: a chunk file either exists whole or not at all. A rerun
skips the chunks present. When all are there, they are merged into ``<output>.partial``,
which is renamed to ``<output>``, so a finished output only ever appears under its final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tig_batch._h5write import HDF5Output
from tig_batch.engine import FRONTIER_GAP_FRACTIONS
from tig_batch.errors import DataError
from tig_batch.pipeline import Explanations

FORMAT = "tig-batch-explanations"
FORMAT_VERSION = 3
PARTS_SUFFIX = ".parts"
PARTIAL_SUFFIX = ".partial"
JOB_FILE = "job.json"


@dataclass(frozen=True)
class OutputLayout:
    """Shape and storage choices shared by every dataset of one output file."""

    n_images: int
    chunk_size: int
    dtype: str = "float32"  # attributions and base-points; scores are always float32
    compression: str | None = "gzip"

    @property
    def n_chunks(self) -> int:
        return -(-self.n_images // self.chunk_size)

    def rows(self, chunk: int) -> slice:
        return slice(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n_images))

    def count(self, chunk: int) -> int:
        rows = self.rows(chunk)
        return rows.stop - rows.start


def _datasets(
    result: Explanations, ids: np.ndarray, dtype: str
) -> Iterator[tuple[str, np.ndarray]]:
    """Every dataset of one chunk, by its path in the output file."""
    if ids.dtype.kind in "UOS":  # text ids as variable-length UTF-8, whatever their lengths
        ids = np.array(
            [str(i) if not isinstance(i, bytes) else i.decode() for i in ids], dtype=object
        )
        ids = ids.astype(h5py.string_dtype())
    yield "ids", ids
    for name, value in [
        ("target", result.target), ("prediction", result.prediction),
        ("tangent_rank", result.tangent_rank),
    ]:  # fmt: skip
        yield name, value.cpu().numpy().astype(np.int64)
    yield "chance_level", result.chance_level.cpu().numpy().astype(np.float32)
    for method, value in result.attributions.items():
        yield f"attributions/{method}", value.detach().cpu().numpy().astype(dtype)
        yield f"alignment/{method}", result.alignment[method].cpu().numpy().astype(np.float32)
        yield f"flags/{method}", result.flags[method].cpu().numpy().astype(np.uint8)
        if method in result.delta:
            yield f"delta/{method}", result.delta[method].cpu().numpy().astype(np.float32)
            yield f"output_gap/{method}", result.output_gap[method].cpu().numpy().astype(np.float32)
        for metric, scores in result.metrics.items():
            yield f"metrics/{metric}/{method}", scores[method].cpu().numpy().astype(np.float32)
    if result.baselines is not None:
        yield "baselines/tangential", result.baselines.cpu().numpy().astype(dtype)
    if result.reference_gap is not None:
        yield "reference_gap", result.reference_gap.cpu().numpy().astype(np.float32)
    if result.frontier is not None:
        yield "frontier/tangential", result.frontier.cpu().numpy().astype(np.float32)


class ResultWriter:
    """Writes one output file. ``job`` (configuration, input checksum, ...) must match on resume.

    Usage: check :meth:`pending` chunks, :meth:`write_chunk` each, then :meth:`finish`.
    """

    def __init__(
        self, output: Path, layout: OutputLayout, job: dict[str, Any], overwrite: bool
    ) -> None:
        self.output = output
        self.layout = layout
        self.job = job
        self.parts = output.with_name(output.name + PARTS_SUFFIX)
        self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> None:
        job_file = self.parts / JOB_FILE
        recorded = _read_job(job_file)
        differs = recorded is not None and recorded != self.job
        if differs and (not self._committed() or _extends(recorded, self.job)):  # type: ignore[arg-type]
            recorded = None  # nothing computed, or all of it still valid: take the new job
        if self.output.exists() or (recorded is not None and recorded != self.job):
            if not overwrite:
                what = (
                    "exists" if self.output.exists() else "was started with another configuration"
                )
                raise DataError(f"{self.output} {what}; rerun with --overwrite to replace it")
            shutil.rmtree(self.parts, ignore_errors=True)
            self.output.unlink(missing_ok=True)
            recorded = None
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            for debris in self.parts.glob(f"*{PARTIAL_SUFFIX}"):  # a killed write's
                debris.unlink()
            if recorded is None:
                _atomic_write_text(job_file, json.dumps(self.job, sort_keys=True))
        except OSError as error:
            raise DataError(f"{self.parts}: cannot write ({error.strerror})") from None

    def _committed(self) -> bool:
        return any(self.parts.glob("chunk-*.h5"))

    def abandon(self) -> None:
        """After a failed run: remove the parts if no chunk was committed (nothing to resume)."""
        if not self._committed():
            shutil.rmtree(self.parts, ignore_errors=True)

    @property
    def finished(self) -> bool:
        return self.output.exists()

    def pending(self) -> list[int]:
        """Chunks not yet committed, in order."""
        return [c for c in range(self.layout.n_chunks) if not self._chunk_path(c).exists()]

    def _chunk_path(self, chunk: int) -> Path:
        return self.parts / f"chunk-{chunk:06d}.h5"

    def write_chunk(self, chunk: int, result: Explanations, ids: np.ndarray) -> None:
        """Commit one chunk: written and flushed under a temporary name, then renamed."""
        rows = self.layout.rows(chunk)
        if len(result) != rows.stop - rows.start:
            raise ValueError(
                f"chunk {chunk} has {len(result)} images, expected {rows.stop - rows.start}"
            )
        path = self._chunk_path(chunk)
        temporary = path.with_name(path.name + PARTIAL_SUFFIX)
        with HDF5Output(temporary, path) as written:
            for name, data in _datasets(result, ids, self.layout.dtype):
                written.file.create_dataset(name, data=data)
        _replace(temporary, path)

    def finish(self, attrs: dict[str, Any]) -> None:
        """Merge the chunks into the final file (via a temporary name) and remove the parts."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"cannot finish {self.output}: chunks {missing[:5]} are missing")
        temporary = self.output.with_name(self.output.name + PARTIAL_SUFFIX)
        self._merge(temporary, attrs)
        _replace(temporary, self.output)
        shutil.rmtree(self.parts, ignore_errors=True)

    def _merge(self, temporary: Path, attrs: dict[str, Any]) -> None:
        layout = self.layout
        with HDF5Output(temporary, self.output) as written:
            out = written.file
            for chunk in range(layout.n_chunks):
                with h5py.File(self._chunk_path(chunk), "r") as part:
                    for name, data in _walk(part):
                        if name not in out:
                            out.create_dataset(
                                name, shape=(layout.n_images, *data.shape[1:]), dtype=data.dtype,
                                chunks=(min(layout.chunk_size, layout.n_images), *data.shape[1:]),
                                compression=layout.compression,
                                shuffle=layout.compression is not None,
                            )  # fmt: skip
                        out[name][layout.rows(chunk)] = data[()]
                written.check()
            out.attrs.update(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "job": json.dumps(self.job, sort_keys=True),
                    "frontier_gap_fractions": np.array(FRONTIER_GAP_FRACTIONS, np.float64),
                }
            )
            out.attrs.update({key: value for key, value in attrs.items()})


def _read_job(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _extends(recorded: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether chunks committed for ``recorded`` are valid for ``job``: the same job, except
    that bad images now are skipped where they stopped the run. A run that stops at bad images
    commits only batches without any, which a skipping run explains the same way."""
    before, after = recorded.get("config", {}), job.get("config", {})
    if (before.get("on_bad_image"), after.get("on_bad_image")) != ("error", "skip"):
        return False
    return {**recorded, "config": {**before, "on_bad_image": "skip"}} == job


def remove_parts(output: Path) -> None:
    """Remove what a run that was killed after ``output`` appeared may have left beside it."""
    shutil.rmtree(output.with_name(output.name + PARTS_SUFFIX), ignore_errors=True)
    output.with_name(output.name + PARTIAL_SUFFIX).unlink(missing_ok=True)


def _walk(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, h5py.Dataset]]:
    for key in sorted(group):
        item = group[key]
        if isinstance(item, h5py.Dataset):
            yield prefix + key, item
        else:
            yield from _walk(item, f"{prefix}{key}/")


def _replace(temporary: Path, final: Path) -> None:
    """Rename a complete temporary file into place (deleting it if that fails)."""
    try:
        os.replace(temporary, final)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise DataError(f"{final}: cannot write ({error.strerror})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    _replace(temporary, path)
