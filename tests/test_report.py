"""The report: statistics against numpy, figures and page on disk, example choice, CLI errors.

The explain outputs here are synthetic, written by the same ``ResultWriter`` that ``explain``
uses, with known scores, so every number in the report can be recomputed independently.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tig_batch._results import OutputLayout, ResultWriter
from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, write_shards
from tig_batch.engine import FRONTIER_GAP_FRACTIONS
from tig_batch.errors import DataError
from tig_batch.pipeline import Explanations
from tig_batch.report import (
    load_examples,
    markdown_table,
    read_scores,
    select_examples,
    summarize,
    write_report,
)
from tig_batch.report._frontier import frontier_curve

SHAPE = (1, 8, 8)
CLASSES = ("zero", "one", "two")


@dataclass
class Truth:
    """What was written, for the independent numpy oracle."""

    methods: dict[str, list[str]]  # file name -> methods
    columns: dict[str, dict[str, np.ndarray]]  # method -> column -> values over all files


def _write_output(
    directory: Path, name: str, shard: Path, ids: np.ndarray, methods: list[str], seed: int,
    version: int,
) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """One explain output; ``version`` 1 lacks the reference gaps and the frontier."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    chance = rng.uniform(0.1, 0.4, n).astype(np.float32)
    ig = [m for m in methods if m in ("tangential", "zero")]
    columns: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        mu = rng.uniform(0, 1, n).astype(np.float32)
        mu[rng.uniform(size=n) < 0.15] = np.nan  # zero explanations: undefined mu
        columns[method] = {
            "mu": mu,
            "chance": chance,
            "flags": (rng.uniform(size=n) < 0.2).astype(np.uint8),
            "delta": rng.normal(0, 0.1, n).astype(np.float32),
            "gap": rng.normal(2, 1, n).astype(np.float32),
            "attributions": rng.normal(0, 1, (n, *SHAPE)).astype(np.float32),
        }
    reference = rng.normal(4, 1, n).astype(np.float32)
    reference[0] = -1.0  # a zero base-point that explains no positive change
    frontier = np.sort(rng.uniform(0, 1, (n, len(FRONTIER_GAP_FRACTIONS))), 1).astype(np.float32)
    frontier[1, :3] = np.nan  # no iterate kept that much of the gap
    extra = {"reference": reference, "frontier": frontier} if version == 2 else {}
    columns["tangential"].update(extra)
    target = torch.arange(n) % len(CLASSES)
    result = Explanations(
        sample_ids=torch.from_numpy(ids), target=target, prediction=target.flip(0),
        tangent_rank=torch.full((n,), 4), chance_level=torch.from_numpy(chance),
        attributions={m: torch.from_numpy(columns[m]["attributions"]) for m in methods},
        alignment={m: torch.from_numpy(columns[m]["mu"]) for m in methods},
        delta={m: torch.from_numpy(columns[m]["delta"]) for m in ig},
        output_gap={m: torch.from_numpy(columns[m]["gap"]) for m in ig},
        flags={m: torch.from_numpy(columns[m]["flags"]) for m in methods},
        **{k: torch.from_numpy(v) for k, v in
           {"reference_gap": reference, "frontier": frontier}.items() if version == 2},
    )  # fmt: skip
    layout = OutputLayout(n, chunk_size=n)
    job = {"config": {"n_steps": 8, "search": {"min_gap": 0.5, "gap_relative": True}}}
    writer = ResultWriter(directory / name, layout, job, overwrite=False)
    writer.write_chunk(0, result, ids)
    writer.finish({"input_shard": str(shard.resolve()), "input_size": shard.stat().st_size})
    if version == 1:
        with h5py.File(directory / name, "r+") as file:
            file.attrs["format_version"] = 1
            del file.attrs["frontier_gap_fractions"]
    return columns


@pytest.fixture
def explained(tmp_path: Path) -> tuple[Path, Path, Truth]:
    """(directory of 2 explain outputs, directory of their 2 input shards, what was written).

    ``a.h5`` holds 20 images with 4 methods, ``b.h5`` 10 images without smoothgrad, written
    as format 1 (no reference gaps, no frontier).
    """
    inputs, outputs = tmp_path / "inputs", tmp_path / "explained"
    outputs.mkdir()
    rng = np.random.default_rng(0)
    spec = ShardSpec(SHAPE, class_names=CLASSES, split="test", source="test")
    plan = {"a.h5": (20, ["tangential", "zero", "gradient", "smoothgrad"]),
            "b.h5": (10, ["tangential", "zero", "gradient"])}  # fmt: skip
    truth = Truth({}, {})
    first = 100
    for seed, (name, (n, methods)) in enumerate(plan.items()):
        ids = np.arange(first, first + n)
        first += n
        images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
        shard = write_shards([Records(images, ids % 3, ids)], inputs / name, spec).shards[0].path
        columns = _write_output(outputs, name, shard, ids, methods, seed, 2 - seed)
        truth.methods[name] = methods
        for method, values in columns.items():
            merged = truth.columns.setdefault(method, {})
            for key, value in values.items():
                merged[key] = np.concatenate([merged[key], value]) if key in merged else value
    return outputs, inputs, truth


def test_summary_statistics_match_numpy(explained) -> None:
    outputs, _, truth = explained
    summaries = {s.method: s for s in summarize([outputs])}
    assert list(summaries) == ["tangential", "zero", "gradient", "smoothgrad"]
    for method, column in truth.columns.items():
        s, mu = summaries[method], column["mu"].astype(np.float64)
        ok = ~np.isnan(mu)
        assert s.count == ok.sum() == len(mu) - np.isnan(mu).sum()
        assert s.mean == pytest.approx(mu[ok].mean())
        assert s.median == pytest.approx(np.median(mu[ok]))
        assert (s.p10, s.p90) == pytest.approx(tuple(np.quantile(mu[ok], [0.1, 0.9])))
        assert s.above_chance == pytest.approx((mu[ok] > column["chance"][ok]).mean())
        assert s.flagged == np.count_nonzero(column["flags"])
        if method in ("tangential", "zero"):
            assert s.mean_abs_delta == pytest.approx(np.abs(column["delta"]).mean(), rel=1e-6)
            assert s.mean_output_gap == pytest.approx(column["gap"].mean(), rel=1e-6)
        else:
            assert s.mean_abs_delta is None and s.mean_output_gap is None
            assert s.mean_gap_fraction is None
    assert summaries["smoothgrad"].count <= 20  # only a.h5 ran it, with a.h5's chance levels
    # gap fractions: a.h5 stores its reference gaps; format 1's b.h5 falls back on zero's gap
    reference = np.concatenate(
        [truth.columns["tangential"]["reference"], truth.columns["zero"]["gap"][20:]]
    ).astype(np.float64)
    fraction = np.where(reference > 0, truth.columns["tangential"]["gap"] / reference, np.nan)
    assert summaries["tangential"].mean_gap_fraction == pytest.approx(np.nanmean(fraction))


def test_the_frontier_is_averaged_over_the_files_that_hold_one(explained) -> None:
    outputs, _, truth = explained
    scores = read_scores([outputs])
    assert scores.frontier_fractions == FRONTIER_GAP_FRACTIONS
    curve = frontier_curve(scores)
    expected = truth.columns["tangential"]["frontier"].astype(np.float64)
    np.testing.assert_allclose(curve.mean_mu, np.nanmean(expected, 0))
    assert curve.counts == tuple(int(c) for c in np.isfinite(expected).sum(0))
    assert curve.counts[0] == 19  # image 1 kept no iterate at the full gap


def test_report_writes_table_figures_and_a_self_contained_page(explained, tmp_path) -> None:
    outputs, _, truth = explained
    report = write_report([outputs], tmp_path / "report", n_examples=4)
    assert report.notes == [] and report.n_images == 30
    for key in ("density", "frontier", "examples"):
        with Image.open(report.files[key]) as image:
            image.verify()
            assert image.format == "PNG"
        with Image.open(report.files[key]) as image:
            assert image.width >= 600 and image.height >= 300, image.size
    page = report.files["html"].read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "<img" in page
    assert "the alignment-gap frontier" in page and "small gap: the tangential" in page
    assert "<th>gap / zero&#x27;s</th>" in page
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert "<th>mean mu</th>" in page and "<td>smoothgrad</td>" in page
    mean = truth.columns["zero"]["mu"]
    assert f"<td>{np.nanmean(mean):.3f}</td>" in page
    data = json.loads(
        report.files["json"].read_text(),
        parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"),
    )
    assert [m["method"] for m in data["methods"]] == list(truth.columns)
    assert data["n_images"] == 30
    assert report.files["markdown"].read_text() == markdown_table(
        report.summaries, report.chance_level
    )


def test_examples_spread_over_classes_or_follow_ids(explained) -> None:
    outputs, _, _ = explained
    files = sorted(outputs.glob("*.h5"))
    spread = select_examples(files, n_examples=4)
    with h5py.File(files[0]) as file:
        targets = file["target"][:]
    # first image of each class in class order, then the next round
    assert [targets[r.row] for r in spread[:3]] == [0, 1, 2]
    assert [r.id for r in spread] == ["100", "101", "102", "103"]
    chosen = select_examples(files, ids=["125", "101"])
    assert [(r.file.name, r.row, r.id) for r in chosen] == [("b.h5", 5, "125"), ("a.h5", 1, "101")]
    with pytest.raises(DataError, match="ids not in the results: 999, x"):
        select_examples(files, ids=["101", "999", "x"])


def test_examples_show_the_input_image_and_the_stored_attributions(explained, tmp_path) -> None:
    outputs, inputs, truth = explained
    examples, notes = load_examples(select_examples(sorted(outputs.glob("*.h5")), ids=["125"]))
    (example,) = examples
    assert notes == [] and example.value_range == (0.0, 1.0)
    with h5py.File(inputs / "b.h5") as shard:
        np.testing.assert_allclose(example.image, shard["images"][5] / 255, atol=1e-7)
    np.testing.assert_array_equal(
        example.attributions["zero"], truth.columns["zero"]["attributions"][25]
    )
    # a.h5 and b.h5 together show only the methods both ran
    examples, _ = load_examples(select_examples(sorted(outputs.glob("*.h5")), ids=["101", "125"]))
    assert list(examples[0].attributions) == ["tangential", "zero", "gradient"]
    assert "target one (pred" in examples[0].label


def test_a_missing_input_shard_leaves_out_the_image_panel(explained, tmp_path) -> None:
    outputs, inputs, _ = explained
    shutil.rmtree(inputs)
    report = write_report([outputs], tmp_path / "report", ids=["101", "125"])
    assert len(report.notes) == 2 and all("not found" in note for note in report.notes)
    assert report.files["examples"].stat().st_size > 10_000
    examples, _ = load_examples(select_examples(sorted(outputs.glob("*.h5")), ids=["101"]))
    assert examples[0].image is None and examples[0].label.startswith("id 101\ntarget 1")


def test_cli_prints_the_table_and_writes_the_report(explained, tmp_path) -> None:
    outputs, _, _ = explained
    result = CliRunner().invoke(
        main, ["report", str(outputs / "a.h5"), str(outputs / "b.h5"), "--out",
               str(tmp_path / "r"), "--ids", "101,125"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("| method | n | mean mu |")
    assert "| smoothgrad |" in result.stdout and "Chance level" in result.stdout
    assert "Wrote " in result.stderr and (tmp_path / "r" / "report.html").is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "Error: no explain outputs (*.h5) in {d}/empty; give the files or the directory"),
        ("nope.h5", "Error: {d}/nope.h5: no such file or directory"),
        ("shard.h5", "Error: {d}/shard.h5: not a tig-batch explain output "
         "(format='tig-batch-shards', expected 'tig-batch-explanations'); it is an input shard"),
        ("other.h5", "Error: {d}/other.h5: not a tig-batch explain output (format='', expected"),
        ("text.h5", "Error: {d}/text.h5: not a readable HDF5 file"),
    ],
    ids=["empty-dir", "missing", "input-shard", "other-hdf5", "not-hdf5"],
)  # fmt: skip
def test_cli_refuses_what_is_not_an_explain_output(tmp_path, name, message) -> None:
    (tmp_path / "empty").mkdir()
    spec = ShardSpec(SHAPE, class_names=CLASSES, split="test", source="test")
    images = np.zeros((2, *SHAPE), np.uint8)
    write_shards([Records(images, np.array([0, 1]))], tmp_path / "shard.h5", spec)
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = [1]
    (tmp_path / "text.h5").write_text("hello")
    result = CliRunner().invoke(main, ["report", str(tmp_path / name), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message.format(d=tmp_path)), result.stderr
    assert not (tmp_path / "r").exists()


def test_cli_rejects_an_empty_ids_option(explained, tmp_path) -> None:
    outputs, _, _ = explained
    result = CliRunner().invoke(main, ["report", str(outputs), "-o", str(tmp_path), "--ids", ","])
    assert result.exit_code == 2 and "give comma-separated image ids" in result.output
    result = CliRunner().invoke(main, ["report", str(outputs), "-o", str(tmp_path), "--ids", "7"])
    assert result.exit_code == 2 and "Error: ids not in the results: 7" in result.output


def test_format_1_outputs_alone_report_without_a_frontier(explained, tmp_path) -> None:
    outputs, _, _ = explained
    report = write_report([outputs / "b.h5"], tmp_path / "report", n_examples=2)
    assert "frontier" not in report.files and report.files["examples"].is_file()
    assert report.files["html"].read_text().count('src="data:image/png;base64,') == 2


@pytest.mark.parametrize("colour_scale", ["row", "method"])
def test_example_panels_give_mu_and_gap_on_either_colour_scale(
    explained, tmp_path, colour_scale
) -> None:
    outputs, _, truth = explained
    examples, _ = load_examples(select_examples(sorted(outputs.glob("*.h5")), ids=["103"]))
    gap = truth.columns["tangential"]["gap"][3] / truth.columns["tangential"]["reference"][3]
    assert examples[0].gap_fraction["tangential"] == pytest.approx(gap, rel=1e-6)
    assert "gradient" not in examples[0].gap_fraction
    result = CliRunner().invoke(
        main, ["report", str(outputs), "-o", str(tmp_path / "r"), "--ids", "103",
               "--colour-scale", colour_scale],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "examples.png").stat().st_size > 5_000


def test_flags_are_counted_and_explained(explained) -> None:
    outputs, _, truth = explained
    summaries = summarize([outputs])
    table = markdown_table(summaries)
    flags = truth.columns["zero"]["flags"]
    assert f"| {np.count_nonzero(flags)} ({np.count_nonzero(flags)} small gap) |" in table
    assert "Flagged: images whose result needs care. small gap:" in table
