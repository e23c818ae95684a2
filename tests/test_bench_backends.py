"""``tig-batch bench backends`` on a tiny bundle: the table, the JSON and the two backends'
gradients agreeing (the benchmark's own check that it timed the same computation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tig_batch.cli import main

pytestmark = pytest.mark.slow  # trains and exports two tiny models first


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_bench_backends_table_json_and_agreement(digits_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "backends.json"
    code, out = _run(
        "bench", "backends", "--bundle", digits_bundle, "--batch-sizes", "3,17", "--threads", "1",
        "--repeats", "1", "--json", path, "--quiet",
    )  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == [
        "batch", "torch", "samples/s", "onnx", "samples/s", "ratio", "max", "|diff|"
    ]  # fmt: skip
    assert set(lines[1]) == {"-"}
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["3", "17"]
    for row in rows:
        torch_rate, onnx_rate, ratio, diff = map(float, row[1:])
        assert torch_rate > 0 and onnx_rate > 0
        assert ratio == pytest.approx(onnx_rate / torch_rate, abs=0.006)  # printed to 0.01
        assert diff < 1e-4

    report = json.loads(path.read_text())
    assert [row["batch_size"] for row in report] == [3, 17]
    for row in report:
        assert set(row) == {
            "batch_size", "torch_samples_per_s", "onnx_samples_per_s", "max_abs_diff", "ratio"
        }  # fmt: skip
        assert row["ratio"] == pytest.approx(row["onnx_samples_per_s"] / row["torch_samples_per_s"])
        assert 0 <= row["max_abs_diff"] < 1e-4


def test_bench_backends_rejects_bad_batch_sizes() -> None:
    code, out = _run("bench", "backends", "--batch-sizes", "0,4")
    assert code == 2
    assert "expected positive integers, got '0,4'" in out
