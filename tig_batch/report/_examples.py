"""Pick example images from explain outputs and load them with their attributions.

Examples are chosen by id, or spread over the target classes. The image itself comes from the
input shard recorded in the output (attribute ``input_shard``); when that shard is gone or no
longer the file that was explained, the example is shown without its image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tig_batch.data import decode, open_dataset
from tig_batch.errors import DataError
from tig_batch.pipeline import METHODS
from tig_batch.report._figures import Example
from tig_batch.report._summary import open_output, reference_gap_dataset


@dataclass(frozen=True)
class ExampleRef:
    """Where one example lives: an explain output and a row in it."""

    file: Path
    row: int
    id: str


def _ids(file: h5py.File) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in file["ids"][:]]


def select_examples(
    files: Sequence[Path], ids: Sequence[str] | None = None, n_examples: int = 10
) -> list[ExampleRef]:
    """The examples to show: the given ``ids`` in their order, else ``n_examples`` spread
    over the target classes (the first image of each class, then the second of each, ...)."""
    if ids:
        return _by_id(files, [str(i) for i in ids])
    per_class: dict[int, list[ExampleRef]] = {}
    for path in files:
        with open_output(path) as file:
            targets, stored = file["target"][:], _ids(file)
        for row, target in enumerate(targets):
            bucket = per_class.setdefault(int(target), [])
            if len(bucket) < n_examples:
                bucket.append(ExampleRef(path, row, stored[row]))
    rounds = max((len(b) for b in per_class.values()), default=0)
    spread = [
        per_class[c][k] for k in range(rounds) for c in sorted(per_class) if k < len(per_class[c])
    ]
    return spread[:n_examples]


def _by_id(files: Sequence[Path], wanted: list[str]) -> list[ExampleRef]:
    found: dict[str, ExampleRef] = {}
    for path in files:
        with open_output(path) as file:
            for row, stored in enumerate(_ids(file)):
                if stored in wanted and stored not in found:
                    found[stored] = ExampleRef(path, row, stored)
    missing = [i for i in wanted if i not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"ids not in the results: {shown} (ids are the input's stored ids, or the image's "
            "position in its dataset when the input stores none)"
        )
    return [found[i] for i in wanted]


@dataclass(frozen=True)
class _Source:
    """The input image of one example, or why it cannot be shown."""

    image: np.ndarray | None
    value_range: tuple[float, float]
    class_names: tuple[str, ...]
    problem: str | None


def _source_image(file: h5py.File, row: int, id_: str) -> _Source:
    shard = Path(_attr(file, "input_shard"))
    if not shard.is_file():
        return _Source(None, (0.0, 1.0), (), f"input shard {shard} not found")
    size = file.attrs.get("input_size")
    if size is not None and shard.stat().st_size != int(size):
        return _Source(None, (0.0, 1.0), (), f"input shard {shard} changed since it was explained")
    try:
        info = open_dataset(shard)
        with h5py.File(shard, "r") as data:
            row = _input_row(file, data, row, id_)
            image = decode(data["images"][row], info.value_range)
            stored_id = data["ids"][row] if info.has_ids else None
    except (DataError, OSError, KeyError, IndexError, ValueError) as error:
        return _Source(None, (0.0, 1.0), (), f"input shard {shard} unreadable ({error})")
    if isinstance(stored_id, bytes):
        stored_id = stored_id.decode()
    if stored_id is not None and str(stored_id) != id_:
        return _Source(None, (0.0, 1.0), (), f"input shard {shard} changed since it was explained")
    return _Source(image, info.value_range, info.class_names, None)


def _input_row(output: h5py.File, data: h5py.File, row: int, id_: str) -> int:
    """Where an output's ``row`` is in its input shard: the same row, unless the run explained
    a selection (``explain --ids/--limit``); then found by its id."""
    job = json.loads(_attr(output, "job") or "{}").get("input", {})
    if "rows" not in job:
        return row
    if "ids" not in data:  # ids are dataset positions
        return int(id_) - int(job["first_id"])
    stored = [i.decode() if isinstance(i, bytes) else str(i) for i in data["ids"][()]]
    return stored.index(id_)


def _attr(file: h5py.File, name: str) -> str:
    value = file.attrs.get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _label(ref: ExampleRef, target: int, prediction: int, class_names: tuple[str, ...]) -> str:
    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    second = "" if target == prediction else f" (pred {name(prediction)})"
    return f"id {ref.id}\ntarget {name(target)}{second}"


def _gap_fractions(file: h5py.File, row: int, methods: Sequence[str]) -> dict[str, float]:
    """Each IG method's output gap over the zero base-point's, where both are known."""
    dataset = reference_gap_dataset(file)
    reference = float("nan") if dataset is None else float(dataset[row])
    if not reference > 0:
        return {}
    return {
        m: float(file[f"output_gap/{m}"][row]) / reference
        for m in methods
        if f"output_gap/{m}" in file
    }


def load_examples(refs: Sequence[ExampleRef]) -> tuple[list[Example], list[str]]:
    """The examples with their images, attributions and mu; and notes on missing images."""
    examples, notes = [], []
    for ref in refs:
        with open_output(ref.file) as file:
            methods = [m for m in METHODS if f"attributions/{m}" in file]
            attributions = {
                m: file[f"attributions/{m}"][ref.row].astype(np.float32) for m in methods
            }
            alignment = {m: float(file[f"alignment/{m}"][ref.row]) for m in methods}
            gap_fraction = _gap_fractions(file, ref.row, methods)
            target, prediction = int(file["target"][ref.row]), int(file["prediction"][ref.row])
            source = _source_image(file, ref.row, ref.id)
        if source.problem and source.problem not in notes:
            notes.append(source.problem)
        examples.append(
            Example(
                _label(ref, target, prediction, source.class_names), source.image,
                source.value_range, attributions, alignment, gap_fraction,
            )
        )  # fmt: skip
    methods = [list(e.attributions) for e in examples]
    if any(m != methods[0] for m in methods):
        common = [m for m in methods[0] if all(m in other for other in methods)]
        examples = [
            Example(e.label, e.image, e.value_range,
                    {m: e.attributions[m] for m in common}, {m: e.alignment[m] for m in common},
                    {m: g for m, g in e.gap_fraction.items() if m in common})
            for e in examples
        ]  # fmt: skip
    return examples, notes
