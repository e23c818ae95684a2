"""``scripts/reproduce_paper.py --quick`` on tiny shards: the page's numbers against numpy on
the explain outputs it wrote, cached models on a rerun, and clear refusals of bad input; the
study's pieces in ``tig_batch/study`` (cache keys, verdict, ablation table) on their own."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tig_batch.pipeline import ExplainConfig
from tig_batch.study import (
    ASCENT,
    FULL,
    PAPER_MODE,
    PAPER_MU,
    Ablation,
    Row,
    Variant,
    VariantResult,
    ablation_table,
    digest,
    explain_key,
    headline,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reproduce_paper.py"


def _script():
    """The script as a module (registered first: its dataclasses look their module up)."""
    if "reproduce_paper" not in sys.modules:
        spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["reproduce_paper"] = module
        spec.loader.exec_module(module)
    return sys.modules["reproduce_paper"]


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """The Markdown table under ``heading``: first cell -> the other cells."""
    section = text.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def _fmt(value: float) -> str:
    return f"{value:.3f}"


@pytest.fixture(scope="module")
def quick_run(digits_shards, tmp_path_factory: pytest.TempPathFactory):
    train, test = digits_shards
    root = tmp_path_factory.mktemp("reproduce")
    args = [
        "--quick", "--data", str(train), "--test-data", str(test), "--out",
        str(root / "docs" / "results.md"), "--work-dir", str(root / "work"), "--threads", "1",
        "--ablate-sigma", "0.1,0.5", "--ablate-adaptive", "--target-mus", "0.5",
        "--ablate-optimizer",
    ]  # fmt: skip
    first = CliRunner().invoke(_script().main, args)
    assert first.exit_code == 0, first.output
    return root, args, first


def _columns(outputs: list[Path], names: list[str]) -> dict[str, np.ndarray]:
    """Datasets of several explain outputs, concatenated in the given order."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for path in outputs:
        with h5py.File(path, "r") as f:
            for name in names:
                columns[name].append(f[name][:].astype(np.float64))
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def _outputs(work: Path) -> list[Path]:
    return sorted(work.glob("models-*/explained-*/*.h5"))


@pytest.mark.slow
def test_table_equals_numpy_on_the_written_explanations(quick_run) -> None:
    root, _, _ = quick_run
    text = (root / "docs" / "results.md").read_text()
    outputs = _outputs(root / "work")
    assert [p.name for p in outputs] == ["test-00000.h5", "test-00001.h5"]  # shards of 6
    table = _table(text, "## Alignment per method")
    methods = [m for m in table if m not in ("method", PAPER_MODE)]
    assert len(methods) == 12  # the paper's nine and Guided IG, Blur IG, Expected Gradients
    gaps = [f"output_gap/{m}" for m in methods if m not in ("gradient", "smoothgrad",
                                                             "inputxgrad")]  # fmt: skip
    data = _columns(outputs, ["chance_level", *[f"alignment/{m}" for m in methods], *gaps])
    chance = data["chance_level"]
    for method in methods:
        mu = data[f"alignment/{method}"]
        keep = np.isfinite(mu)
        q25, median, q75 = np.quantile(mu[keep], [0.25, 0.5, 0.75])
        above = np.mean(mu[keep] > chance[keep])
        gap = data.get(f"output_gap/{method}")
        expected = [
            str(keep.sum()), _fmt(mu[keep].mean()), _fmt(q25), _fmt(median), _fmt(q75),
            f"{100 * above:.0f}%", "" if gap is None else _fmt(gap.mean()),
        ]  # fmt: skip
        assert table[method][:7] == expected, method
    assert int(table["tangential"][0]) == 12
    assert f"Chance level `sqrt(r/d)`: {_fmt(chance.mean())}" in text
    # gap / zero's: the tangential gap over the stored zero base-point's gap
    reference = _columns(outputs, ["reference_gap"])["reference_gap"]
    share = np.nanmean(np.where(reference > 0, data["output_gap/tangential"] / reference, np.nan))
    assert table["tangential"][7] == f"{100 * share:.0f}%"
    # the paper-mode row: the tangential method without the gap constraint, its own run
    paper = _columns(sorted((root / "work").glob("models-*/paper-mode-*/*.h5")),
                     ["alignment/tangential"])["alignment/tangential"]  # fmt: skip
    assert table[PAPER_MODE][:2] == ["12", _fmt(np.nanmean(paper))]
    # the ablations call the engine directly: on the same first images with the same
    # settings they must reproduce the pipeline's numbers
    sigma = _table(text, "### Gaussian base-point sigma")
    fixed = _table(text, "### Fixed vs adaptive steps")
    n = int(sigma["sigma 0.5"][0])
    gaussian, tangential = data["alignment/gaussian"][:n], data["alignment/tangential"][:n]
    assert float(sigma["sigma 0.5"][2]) == pytest.approx(gaussian.mean(), abs=1.5e-3)
    assert float(fixed["fixed: 3 iterations"][2]) == pytest.approx(tangential.mean(), abs=1.5e-3)
    # a search without a target evaluates (iterations + 1) x nodes gradients per image
    optimizers = _table(text, "### Base-point optimisers")
    assert optimizers["ascent, 3 iterations"][6:8] == ["3.0", str(4 * 8)]
    assert optimizers["projection, 60 iterations, min_gap 0.5"][6:8] == ["60.0", str(61 * 2)]
    assert (root / "docs" / "results" / "ablations.png").stat().st_size > 0


@pytest.mark.slow
def test_faithfulness_table_equals_numpy_on_the_written_metrics(quick_run) -> None:
    root, _, _ = quick_run
    text = (root / "docs" / "results.md").read_text()
    table = _table(text, "## Faithfulness per method")
    header = table.pop("method")
    metrics = ["deletion", "insertion", "infidelity", "sparseness"]  # the default set
    assert [h.split(" ")[0] for h in header] == ["deletion", "insertion", "infidelity",
                                                 "sparseness", "deletion,", "insertion,",
                                                 "mean"]  # fmt: skip
    methods = [m for m in table if m != PAPER_MODE]
    names = [f"metrics/{k}/{m}" for k in metrics for m in methods]
    deltas = [f"delta/{m}" for m in methods if m not in ("gradient", "smoothgrad", "inputxgrad")]
    data = _columns(_outputs(root / "work"), names + deltas)
    for method in methods:
        expected = [_fmt(np.nanmean(data[f"metrics/{k}/{method}"])) for k in metrics]
        delta = data.get(f"delta/{method}")
        assert table[method][:4] == expected, method
        assert table[method][6] == ("" if delta is None else _fmt(np.nanmean(np.abs(delta))))
    assert table[PAPER_MODE][4:6] == ["", ""]  # rescored: the main comparison only
    # the blurred-replacement columns: the stored attributions rescored, against the engine's
    # deletion_insertion on the bundle's torch classifier (the study used its ONNX graphs)
    from tig_batch.backends import Runtime, load_bundle
    from tig_batch.data import iter_batches
    from tig_batch.engine import deletion_insertion

    (bundle,) = (root / "work").glob("models-*/bundle-n*")
    model = load_bundle(bundle, Runtime("torch")).classifier
    aucs: dict[str, list[np.ndarray]] = {}
    for path in _outputs(root / "work"):
        with h5py.File(path, "r") as f:
            images = torch.from_numpy(next(iter_batches(f.attrs["input_shard"], 10_000)).images)
            target = torch.from_numpy(f["target"][:])
            for method in methods:
                maps = torch.from_numpy(f[f"attributions/{method}"][:])
                flips = deletion_insertion(model, images, maps, target, 20, "blur", blur_sigma=4.0)
                aucs.setdefault(method, []).append(
                    np.stack([flips.deletion_auc.numpy(), flips.insertion_auc.numpy()])
                )
    for method in methods:
        both = np.concatenate(aucs[method], axis=1)
        assert [float(v) for v in table[method][4:6]] == pytest.approx(
            np.nanmean(both, axis=1), abs=1.5e-3
        ), method
    assert (root / "docs" / "results" / "alignment_deletion.png").read_bytes()[:4] == b"\x89PNG"
    assert (root / "docs" / "results" / "alignment_density.png").stat().st_size > 0
    assert "![Example explanations](results/examples.png)" in text
    assert "![The alignment-gap frontier](results/alignment_gap_frontier.png)" in text
    assert "python scripts/reproduce_paper.py --data" in text and "--quick" in text
    assert re.search(r"mean `mu = 0\.\d{3}`", text) and "In paper mode (no gap" in text
    assert "Partial" not in text


@pytest.mark.slow
def test_second_run_reuses_models_bundle_and_results(quick_run) -> None:
    root, args, first = quick_run
    assert "classifier: training" in first.stderr and "exporting" in first.stderr
    written = {p: p.stat().st_mtime_ns for p in _outputs(root / "work")}
    again = CliRunner().invoke(_script().main, args)
    assert again.exit_code == 0, again.output
    assert "training" not in again.stderr and "exporting" not in again.stderr
    assert "classifier: reusing" in again.stderr and "bundle n=16: reusing" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in _outputs(root / "work")} == written


@pytest.mark.slow
def test_cached_only_reports_the_finished_shards_as_partial(quick_run, tmp_path: Path) -> None:
    root, args, _ = quick_run
    work = shutil.copytree(root / "work", tmp_path / "work")
    second = _outputs(work)[1]
    second.unlink()  # as if the run had been stopped during the second shard
    out = tmp_path / "results.md"
    changed = {"--work-dir": str(work), "--out": str(out)}
    args = [changed.get(prev, a) for prev, a in zip(["", *args[:-1]], args, strict=True)]
    result = CliRunner().invoke(_script().main, [*args, "--cached-only"])
    assert result.exit_code == 0, result.output
    assert not second.exists()  # computed nothing
    text = out.read_text()
    assert "**Partial: 6 of the 12 test images**" in text
    assert _table(text, "## Alignment per method")["zero"][0] == "6"
    assert "assembled with `--cached-only`" in text and "--cached-only\n" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "no-such-set"], "no-such-set: no such dataset file or directory, and not "
                                    "a built-in dataset (mnist-5k)"),
        (["--ablate-sigma", "0.1,-1"], "values must be numbers > 0"),
        (["--ablate-sigma", "0.1,abc"], "'0.1,abc' is not a comma-separated list of numbers"),
        (["--ablate-latent", "8,0"], "values must be integers >= 1"),
        (["--target-mus", "1.5"], "values must be numbers > 0 and at most 1"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        _script().main, [*args, "--out", str(tmp_path / "r.md"), "--work-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "r.md").exists()


def test_a_path_needs_its_test_split(digits_shards, tmp_path: Path) -> None:
    train, _ = digits_shards
    result = CliRunner().invoke(
        _script().main, ["--data", str(train), "--out", str(tmp_path / "r.md"),
                         "--work-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "give its test split with --test-data" in result.output


def test_cache_keys_follow_every_setting_so_no_result_outlives_its_settings() -> None:
    """The main table runs ``tig-batch explain``'s defaults; every search setting, the gap
    constraint included, is part of its key and of the ablations'."""
    assert FULL.explain == ExplainConfig()
    key = explain_key(FULL, "test-first1000-by100", "onnx")
    for change in ({"min_gap": 0.25}, {"anneal": 0.0}, {"inner_iterations": 3}):
        search = replace(FULL.explain.search, **change)
        moved = replace(FULL, explain=replace(FULL.explain, search=search))
        assert explain_key(moved, "test-first1000-by100", "onnx") != key, change
    assert FULL.ablation_config.search == ASCENT and ASCENT.min_gap == 0
    assert FULL.paper_config.search == replace(FULL.explain.search, min_gap=0.0)
    assert digest(FULL.paper_config) != digest(FULL.explain)


def _row(
    method: str, mean: float, gap: float | None = 10.0, flagged: int = 0, share: float = 1.0
) -> Row:
    return Row(method, 100, mean, mean - 0.1, mean, mean + 0.1, 1.0, gap, share, flagged)


def test_headline_words_the_verdict_from_the_numbers() -> None:
    meets = headline(
        [_row("tangential", PAPER_MU + 0.01, gap=2.5, flagged=7, share=0.52),
         _row("zero", 0.4, gap=10.0), _row("blur", 0.5)],
        _row(PAPER_MODE, 0.95, gap=1.0, flagged=60, share=0.08),
    )  # fmt: skip
    assert f"mean `mu = {PAPER_MU + 0.01:.3f}`" in meets and "**meeting** it." in meets
    assert "keeping 52% of the zero base-point's output gap" in meets
    assert (
        "In paper mode (no gap constraint, 100 images): mean `mu = 0.950`, **meeting** it, "
        "at 8% of the zero base-point's gap; 60 of 100 results flagged" in meets
    )
    assert "**yes**; the next best is blur at 0.500." in meets
    assert "7 of 100 tangential results are flagged" in meets
    short = headline([_row("tangential", 0.5), _row("zero", 0.6), _row("gradient", 0.7)])
    assert "**short of** it." in short
    assert "**no**; zero, gradient score(s) as high or higher." in short
    assert "did not run" in headline([_row("zero", 0.4)])


def test_ablation_table_equals_numpy_and_names_what_is_missing() -> None:
    rng = np.random.default_rng(0)
    mu, chance = rng.uniform(0, 1, 20), rng.uniform(0.1, 0.3, 20)
    mu[[3, 11]] = np.nan  # zero explanations: left out of every statistic of mu
    gap = rng.normal(5, 1, 20)
    result = VariantResult(
        mu, chance, gap, iterations=np.full(20, 7.0), evaluations=np.full(20, 64.0),
        degenerate=np.arange(20) < 4, seconds=12.4,
    )  # fmt: skip
    ablation = Ablation("x", "X", "?", (Variant("searched", "tangential"), Variant("gone", "zero")))
    table = _table("\n" + ablation_table(ablation, {"searched": result}), "\n")
    keep = np.isfinite(mu)
    assert table["searched"] == [
        "18", _fmt(chance.mean()), _fmt(mu[keep].mean()), _fmt(np.median(mu[keep])),
        f"{100 * np.mean(mu[keep] > chance[keep]):.0f}%", _fmt(gap.mean()), "7.0", "64", "4",
        "12",
    ]  # fmt: skip
    assert "gone" not in table
    assert "Not computed in the time the run had: gone." in ablation_table(
        ablation, {"searched": result}
    )
