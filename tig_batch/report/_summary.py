"""Read explain outputs and summarise them per method: the numbers behind every report.

An explain output is one HDF5 file per input shard (``docs/format.md``). These functions read
only the per-image scores (alignment, chance level, deltas, gaps, flags, faithfulness
metrics), never the attributions, so summarising a whole dataset costs a few floats per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tig_batch._faithfulness import METRICS
from tig_batch.errors import DataError
from tig_batch.pipeline import METHODS, Flag

OUTPUT_FORMAT = "tig-batch-explanations"
SHARD_FORMAT = "tig-batch-shards"


@dataclass(frozen=True)
class MethodSummary:
    """How one method's explanations align with the tangent space, over all images read.

    Statistics of ``mu`` are over the images whose ``mu`` is finite (``count``); a zero
    explanation or a skipped image has NaN there and is left out, and counted in ``flagged``.
    """

    method: str
    count: int
    mean: float
    median: float
    p10: float
    p90: float
    above_chance: float  # share of the counted images whose mu exceeds their chance sqrt(r/d)
    mean_abs_delta: float | None  # methods with a gap: mean |convergence delta|
    mean_output_gap: float | None  # methods with a gap: mean f_c(x) - f_c(a)
    mean_gap_fraction: float | None  # the same: mean of the gap over the zero base-point's
    flagged: int  # images with any flag set
    flag_counts: dict[str, int]  # images per flag (see ``FLAG_NAMES``)
    metrics: dict[str, float] = field(default_factory=dict)  # metric -> mean over finite values


@dataclass(frozen=True)
class Scores:
    """The per-image scores of every file read, concatenated method by method.

    Each method keeps its own ``chance`` and ``reference`` (the zero base-point's output gap)
    columns, so files that ran different methods mix correctly. ``frontier`` is the tangential
    search's alignment-gap frontier (images, ``frontier_fractions``), from the files that hold
    one (format 2 onwards). ``metrics``: metric -> method -> values, row for row with the
    method's ``alignment`` (NaN for the images of files without that metric; format 3 on).
    """

    files: tuple[Path, ...]
    n_images: int
    chance: dict[str, np.ndarray]
    alignment: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]
    gap: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    frontier: np.ndarray | None = None
    frontier_fractions: tuple[float, ...] = ()
    metrics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def gap_fraction(self, method: str) -> np.ndarray:
        """Each image's output gap over the zero base-point's; NaN where that is not positive
        or not known."""
        reference = self.reference[method]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(reference > 0, self.gap[method] / reference, np.nan)

    @property
    def methods(self) -> list[str]:
        return list(self.alignment)

    @property
    def chance_level(self) -> float:
        """The mean chance level over all images read (one number for tables and figures)."""
        columns = [c for c in self.chance.values() if c.size]
        return float(np.nanmean(np.concatenate(columns))) if columns else float("nan")


def result_files(paths: Sequence[Path | str]) -> list[Path]:
    """The explain outputs among ``paths``: files as given, directories' ``*.h5`` sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.h5") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or directory")
    if not files:
        raise DataError(
            f"no explain outputs (*.h5) in {', '.join(map(str, paths)) or 'the arguments'}; "
            "give the files or the directory that `tig-batch explain -o DIR` wrote"
        )
    return files


def open_output(path: Path) -> h5py.File:
    """Open an explain output for reading, refusing anything else with a hint."""
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({_first_line(error)})") from None
    found = file.attrs.get("format", "")
    found = found.decode() if isinstance(found, bytes) else str(found)
    if found != OUTPUT_FORMAT:
        file.close()
        hint = (
            "it is an input shard; explain it first with `tig-batch explain`"
            if found == SHARD_FORMAT
            else "give the files that `tig-batch explain -o DIR` wrote"
        )
        raise DataError(
            f"{path}: not a tig-batch explain output (format={found!r}, expected "
            f"{OUTPUT_FORMAT!r}); {hint}"
        )
    return file


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def read_scores(paths: Sequence[Path | str]) -> Scores:
    """Every file's per-image scores (files in the order :func:`result_files` gives)."""
    files = result_files(paths)
    columns: dict[str, dict[str, list[np.ndarray]]] = {
        key: {} for key in ("chance", "alignment", "delta", "gap", "flags", "reference")
    }
    metrics: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}  # by file index
    rows: dict[str, list[tuple[int, int]]] = {}  # method -> (file index, images) per file
    frontiers: list[np.ndarray] = []
    fractions: tuple[float, ...] = ()
    n_images = 0
    for index, path in enumerate(files):
        with open_output(path) as file:
            try:
                chance = file["chance_level"][:]
                n_images += len(chance)
                reference = _reference_gap(file, len(chance))
                for method in [m for m in METHODS if f"alignment/{m}" in file]:
                    rows.setdefault(method, []).append((index, len(chance)))
                    parts = {
                        "chance": chance,
                        "alignment": file[f"alignment/{method}"][:],
                        "flags": file[f"flags/{method}"][:],
                    }
                    if f"delta/{method}" in file:
                        parts["delta"] = file[f"delta/{method}"][:]
                        parts["gap"] = file[f"output_gap/{method}"][:]
                        parts["reference"] = reference
                    for key, value in parts.items():
                        columns[key].setdefault(method, []).append(value)
                    for metric in METRICS:
                        if f"metrics/{metric}/{method}" in file:
                            values = file[f"metrics/{metric}/{method}"][:]
                            metrics.setdefault((metric, method), []).append((index, values))
                if "frontier/tangential" in file:
                    frontiers.append(file["frontier/tangential"][:].astype(np.float64))
                    fractions = tuple(float(f) for f in file.attrs["frontier_gap_fractions"])
            except (KeyError, OSError) as error:
                raise DataError(f"{path}: incomplete explain output ({error})") from None

    def join(key: str) -> dict[str, np.ndarray]:
        return {m: np.concatenate(parts).astype(np.float64) for m, parts in columns[key].items()}

    return Scores(
        tuple(files), n_images, join("chance"), join("alignment"), join("delta"), join("gap"),
        join("flags"), join("reference"), np.concatenate(frontiers) if frontiers else None,
        fractions, _aligned_metrics(metrics, rows),
    )  # fmt: skip


def _aligned_metrics(
    found: dict[tuple[str, str], list[tuple[int, np.ndarray]]],
    rows: dict[str, list[tuple[int, int]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Each metric's values per method, row for row with the method's other columns: NaN for
    the images of files that do not hold it (outputs of format 2 and before, or another
    ``--metrics``)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for metric in METRICS:
        for method, files in rows.items():
            parts = dict(found.get((metric, method), []))
            if parts:
                out.setdefault(metric, {})[method] = np.concatenate(
                    [parts.get(i, np.full(n, np.nan)).astype(np.float64) for i, n in files]
                )
    return out


def reference_gap_dataset(file: h5py.File) -> h5py.Dataset | None:
    """The zero base-point's output gap per image: stored from format 2 on; in older files, the
    ``zero`` method's gap where it ran, else None."""
    name = next((n for n in ("reference_gap", "output_gap/zero") if n in file), None)
    return None if name is None else file[name]


def _reference_gap(file: h5py.File, n_images: int) -> np.ndarray:
    dataset = reference_gap_dataset(file)
    return np.full(n_images, np.nan) if dataset is None else dataset[:]


def summarize_scores(scores: Scores) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method present, in the canonical method order."""
    summaries = []
    for method, mu in scores.alignment.items():
        valid = np.isfinite(mu)
        values = mu[valid]
        if values.size:
            p10, median, p90 = (float(q) for q in np.percentile(values, [10, 50, 90]))
            mean = float(values.mean())
            above = float((values > scores.chance[method][valid]).mean())
        else:
            p10 = median = p90 = mean = above = float("nan")
        summaries.append(
            MethodSummary(
                method=method, count=int(valid.sum()), mean=mean, median=median, p10=p10,
                p90=p90, above_chance=above,
                mean_abs_delta=_finite_mean(np.abs(scores.delta[method]))
                if method in scores.delta else None,
                mean_output_gap=_finite_mean(scores.gap[method]) if method in scores.gap else None,
                mean_gap_fraction=_finite_mean(scores.gap_fraction(method))
                if method in scores.gap else None,
                flagged=int((scores.flags[method] != 0).sum()),
                flag_counts=flag_counts(scores.flags[method]),
                metrics={
                    metric: _finite_mean(values[method])
                    for metric, values in scores.metrics.items() if method in values
                },
            )
        )  # fmt: skip
    return summaries


#: What each bit of ``flags/<method>`` means, in the words the reports use.
FLAG_NAMES = {
    Flag.DEGENERATE: "small gap",
    Flag.ZERO_EXPLANATION: "zero explanation",
    Flag.NON_FINITE_INPUT: "NaN/Inf input",
}
FLAGS_EXPLAINED = (
    "flagged: images whose result needs care. small gap: the tangential base-point keeps "
    "less than the degenerate threshold (10% by default) of the zero base-point's output gap, "
    "or no search step met min_gap, so its explanation accounts for little of the output; zero "
    "explanation: mu is undefined; NaN/Inf input: the image was skipped."
)


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Images per flag, by the names of :data:`FLAG_NAMES` (flags may combine)."""
    bits = flags.astype(np.int64)
    return {name: int(((bits & int(flag)) != 0).sum()) for flag, name in FLAG_NAMES.items()}


def summarize(paths: Sequence[Path | str]) -> list[MethodSummary]:
    """Read explain outputs (files or directories) and summarise every method in them."""
    return summarize_scores(read_scores(paths))


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
