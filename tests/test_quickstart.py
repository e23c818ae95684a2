"""``tig-batch quickstart --fast`` end to end: built-in data, both trainings, export, explain,
report; then a second run that reuses everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tig_batch.cli import main
from tig_batch.quickstart import DEFAULT, FAST


def test_settings_keep_fast_and_default_models_apart() -> None:
    assert FAST.training.key() != DEFAULT.training.key()
    assert DEFAULT.n_images is None and len(DEFAULT.explain.methods) == 9
    # the models' cache key is what it was when the settings were one flat object
    assert DEFAULT.training.key() == "5ad66c35e7"


@pytest.mark.slow
def test_fast_quickstart_runs_end_to_end_then_reuses_its_cache(fast_quickstart) -> None:  # type: ignore[no-untyped-def]
    root, first = fast_quickstart
    out, cache = root / "tig-batch-quickstart", root / "cache"
    args = ["quickstart", "--fast", "--out", str(out), "--cache-dir", str(cache)]
    steps = [
        "[1/6] data", "[2/6] classifier: training", "[3/6] autoencoder: training",
        "[4/6] bundle: exporting", "[5/6] explain: 12 test images, 9 methods", "[6/6] report",
    ]  # fmt: skip
    assert all(step in first.stderr for step in steps), first.stderr
    assert f"Report: {out / 'report' / 'report.html'}" in first.stdout
    assert "tangential  mean mu" in first.stdout and "above chance" in first.stdout
    assert "deletion 0." in first.stdout or "deletion 1." in first.stdout
    lines = [line for line in first.stdout.splitlines() if "mean mu" in line]
    assert len({line.index("flagged") for line in lines}) == 1  # aligned, gap or none
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["count"] + m["flagged"] >= 12 for m in summary["methods"]] == [True] * 9
    assert {p.name for p in (out / "report").iterdir()} == {
        "report.html", "summary.md", "summary.json", "alignment_density.png", "examples.png",
        "alignment_gap_frontier.png", "alignment_deletion.png",
    }  # fmt: skip
    # the default faithfulness metrics, per method
    assert all(
        set(m["metrics"]) == {"deletion", "insertion", "infidelity", "sparseness"}
        for m in summary["methods"]
    )
    assert len(list((out / "explained").glob("*.h5"))) == 1
    record = json.loads((out / "quickstart.json").read_text())
    assert Path(record["checkpoints"]["classifier"]).is_file() and Path(record["inputs"]).is_file()
    assert Path(record["bundle"], "manifest.json").is_file()

    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert f"Reused from {cache}: classifier, autoencoder, bundle." in second.stdout
    assert "training" not in second.stderr and "exporting" not in second.stderr
    assert "[4/6] bundle: reusing" in second.stderr

    # another run's outputs in the same directory stay out of this run's report
    (ours,) = (out / "explained").glob("*.h5")
    shutil.copyfile(ours, out / "explained" / "test.h5")  # as a full run would name its output
    third = CliRunner().invoke(main, args)
    assert third.exit_code == 0, third.output
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n_images"] == 12 and len(summary["files"]) == 1
