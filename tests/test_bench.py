"""``tig-batch bench kernels`` on a CPU: the twins are timed, the kernels' columns say n/a."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tig_batch.cli import main


def test_bench_kernels_quick_on_a_cpu(tmp_path: Path) -> None:
    path = tmp_path / "kernels.json"
    result = CliRunner().invoke(
        main, ["bench", "kernels", "--quick", "--device", "cpu", "--quiet", "--json", str(path)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "device: cpu (cpu), dtype float32, batch 4"
    assert "Triton kernel figures need a CUDA GPU: only the torch twins were timed here." in lines
    header = next(line for line in lines if line.startswith("op "))
    assert header.split() == [
        "op", "image", "K", "r", "MB", "torch", "ms", "GB/s", "triton", "ms", "GB/s",
        "speedup", "%", "peak", "max", "|diff|",
    ]  # fmt: skip
    table = lines[lines.index(header) + 2 : lines.index(f"wrote {path}")]
    assert [row.split()[:4] for row in table] == [
        ["interpolate_path", "mnist", "16", "-"],
        ["ig_accumulate_project", "mnist", "16", "16"],
        ["tangential_step", "mnist", "-", "16"],
    ]
    for row in table:
        torch_ms, torch_gbps, *kernel_columns = row.split()[5:]
        assert float(torch_ms) > 0 and float(torch_gbps) >= 0
        assert kernel_columns == ["-"] * 5

    report = json.loads(path.read_text())
    assert report["kernels_timed"] is False and report["device"] == "cpu"
    rows = report["rows"]
    assert [row["op"] for row in rows] == [
        "interpolate_path", "ig_accumulate_project", "tangential_step"
    ]  # fmt: skip
    # interpolate_path reads x, a (4x784 each) and 16 nodes, writes 64x784, all float32
    assert rows[0]["bytes_moved"] == 4 * (2 * 4 * 784 + 16 + 64 * 784)
    assert rows[0]["triton_ms"] is None and rows[0]["torch_ms"] > 0


def test_bench_kernels_rejects_unknown_image_sizes() -> None:
    result = CliRunner().invoke(main, ["bench", "kernels", "--device", "cpu", "--images", "svhn"])
    assert result.exit_code == 2
    assert (
        "unknown image size(s) svhn; choose from mnist, cifar, tiny-imagenet, imagenet"
        in result.output
    )


def test_median_seconds_skips_the_warm_up_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The shared timer of the benchmarks: one untimed call, then the median of the rest."""
    from tig_batch.bench import _measure

    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # timed calls of 5, 1 and 3 s
    calls = []
    monkeypatch.setattr(_measure.time, "perf_counter", lambda: next(clock))
    assert _measure.median_seconds(lambda: calls.append(1), 3) == 3.0
    assert len(calls) == 4  # the warm-up call is not timed
