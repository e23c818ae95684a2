"""``tig-batch bench gpu``: the check's recorder (a failing, late or dependent step is recorded
and the rest still run), the output comparison's rules, the goals, and the dry run of
``scripts/gpu_check.sh`` end to end on the CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tig_batch.bench import _gpu_compare as compare
from tig_batch.bench.gpu import DRY_RUN, JSON_NAME, MARKDOWN_NAME, Check
from tig_batch.kernels import bench as kernel_bench

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path: Path, budget: float = 60.0) -> Check:
    return Check(tmp_path / "out", dataclasses.replace(DRY_RUN, budget_s=budget), lambda _: None)


def _report(check: Check) -> dict:
    return json.loads((check.out_dir / JSON_NAME).read_text())


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path: Path) -> None:
    check = _check(tmp_path)
    check.run("first", lambda: {"value": 1})
    check.run("broken", lambda: {"x": 1 / 0})
    check.run("needs broken", lambda: {}, needs=("broken",))
    check.run("partly", lambda: {"rows": [1], "failures": {"onnx": "no CUDA provider"}})
    check.run("independent", lambda: {"value": 2}, needs=("first",))
    steps = {s["name"]: s for s in _report(check)["steps"]}
    assert [s["status"] for s in steps.values()] == ["ok", "failed", "skipped", "failed", "ok"]
    assert steps["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert "1 / 0" in steps["broken"]["data"]["traceback"]
    assert steps["needs broken"]["error"] == "needs broken"
    assert steps["partly"]["error"] == "onnx: no CUDA provider"
    assert steps["partly"]["data"]["rows"] == [1]  # a partial failure keeps its data
    markdown = (check.out_dir / MARKDOWN_NAME).read_text()
    assert "| broken | failed |" in markdown and "## Traceback: broken" in markdown


def test_a_step_past_the_budget_times_out_and_later_ones_are_skipped(tmp_path: Path) -> None:
    check = _check(tmp_path, budget=1.5)
    check.run("slow", lambda: {"slept": time.sleep(5)})
    check.run("later", lambda: {})
    statuses = [(s["status"], s["error"]) for s in _report(check)["steps"]]
    assert statuses[0][0] == "timed out" and "time budget" in statuses[0][1]
    assert statuses[1] == ("skipped", "no time left in the budget")


def _write(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for name, value in datasets.items():
            file[name.replace("__", "/")] = value
    return path


def test_outputs_compare_image_by_image_under_each_datasets_rule(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    attributions = rng.normal(size=(200, 1, 4, 4)).astype(np.float32)
    mu = rng.uniform(size=200).astype(np.float32)
    mu[3] = np.nan  # a zero explanation: NaN on both sides agrees
    reference = _write(
        tmp_path / "cpu.h5", attributions__zero=attributions, attributions__tangential=attributions,
        alignment__zero=mu, prediction=np.arange(200),
    )  # fmt: skip
    moved = attributions.copy()
    moved[:3] += 0.5  # three images (1.5%) far off: too many for a 99% rule, fine for 90%
    candidate = _write(
        tmp_path / "gpu.h5", attributions__zero=moved, attributions__tangential=moved,
        alignment__zero=mu, prediction=np.r_[np.arange(199), 7],
    )  # fmt: skip
    rows = {r["dataset"]: r for r in compare.compare_outputs(reference, candidate)}
    assert rows["attributions/zero"]["agreeing"] == 197 and not rows["attributions/zero"]["passed"]
    assert rows["attributions/tangential"]["passed"]  # the searched method's looser rule
    assert rows["alignment/zero"]["passed"] and rows["alignment/zero"]["mean_mu_diff"] == 0
    assert rows["prediction"]["agreeing"] == 199 and rows["prediction"]["passed"]


def test_nan_on_one_side_only_disagrees() -> None:
    reference = np.array([[1.0, 2.0], [np.nan, 1.0]])
    candidate = np.array([[1.0, np.nan], [np.nan, 1.0]])
    assert compare.agreement(reference, candidate, 1e-3).tolist() == [False, True]


def test_a_dataset_on_one_side_only_fails(tmp_path: Path) -> None:
    reference = _write(tmp_path / "a.h5", ids=np.arange(3), target=np.arange(3))
    candidate = _write(tmp_path / "b.h5", ids=np.arange(3))
    rows = {r["dataset"]: r for r in compare.compare_outputs(reference, candidate)}
    assert rows["ids"]["passed"] and not rows["target"]["passed"]


def test_goals_read_the_largest_kernel_cases(tmp_path: Path) -> None:
    from tig_batch.bench._gpu_report import goals

    def row(op: str, moved: int, speedup: float, fraction: float) -> dict:
        timed = kernel_bench.BenchRow(
            op, "cifar", 64, 16, 16, "float32", moved, 1.0, 1.0, 1 / speedup, 1.0, speedup,
            fraction, 0.0,
        )  # fmt: skip
        return dataclasses.asdict(timed)

    rows = [row("a", 10, 1.0, 0.1), row("a", 1000, 2.5, 0.8), row("b", 500, 3.0, 0.6)]
    check = _check(tmp_path)
    check.run("kernel benchmark", lambda: {"kernels_timed": True, "rows": rows})
    speed, bandwidth, explain, captum = goals(check)
    assert speed.met is True and "2.50x (a, cifar, float32)" in speed.measured
    assert bandwidth.met is False and "60% (b" in bandwidth.measured
    assert "1 of 3 cases" in bandwidth.measured
    assert explain.met is None and captum.met is None


def test_kernel_comparison_runs_the_kernels_in_the_interpreter() -> None:
    # conftest turns the interpreter on without a GPU; tiny sizes keep it quick
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = kernel_bench.compare(["mnist"], [3], [4], 2, torch.float32, device)
    assert [r.op for r in rows] == list(kernel_bench.OPS)
    assert all(r.passed and r.error is None and r.max_rel_diff <= 1e-5 for r in rows), rows


@pytest.mark.slow
def test_dry_run_of_the_script_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "TIG_GPU_CHECK_PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [JSON_NAME, MARKDOWN_NAME]
    report = json.loads((out / JSON_NAME).read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(steps, "ok")
    assert len(steps) == 9
    install = steps["environment"]["data"]["install"]
    assert install == [
        {
            "what": "all",
            "status": "skipped",
            "seconds": "0",
            "detail": "dry run: nothing is installed",
        }
    ]
    rows = steps["kernel correctness"]["data"]["rows"]
    assert {(r["op"], r["dtype"]) for r in rows} == {
        (op, dtype) for op in kernel_bench.OPS for dtype in ("float32", "float16")
    }
    compared = steps["explain: device against cpu"]["data"]["backends"]
    assert set(compared) == {"onnx", "torch"}
    assert all(r["passed"] for b in compared.values() for r in b["rows"])
    captum = {r["name"] for r in steps["captum on the device"]["data"]["rows"]}
    assert captum == {"Captum", "tig-batch onnx", "tig-batch torch"}
    goals = {g["goal"]: g["met"] for g in report["goals"]}
    assert goals["explain on the device equals the CPU run within the stated tolerances"]
    markdown = (out / MARKDOWN_NAME).read_text()
    for heading in ("## Goals", "## Kernels against their torch twins", "## Kernel benchmark",
                    "## Plain IG against Captum on the device",
                    "## Explain, onnx backend: device against CPU"):  # fmt: skip
        assert heading in markdown
