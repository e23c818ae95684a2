"""`tig-batch explain` end to end: outputs, resume after SIGKILL, refusals and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, write_shards

pytestmark = pytest.mark.slow

CHEAP = [
    "--methods", "tangential,zero,gaussian,gradient,smoothgrad", "--n-steps", "8",
    "--search-iterations", "6", "--search-n-steps", "4", "--smoothgrad-samples", "3",
]  # fmt: skip


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Path:
    return digits_bundle


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = digits
    root = tmp_path_factory.mktemp("inputs") / "digits"
    write_shards(
        [Records(images[:30], labels[:30])], root,
        ShardSpec((1, 8, 8), class_names=tuple(map(str, range(10)))), shard_size=15,
    )  # fmt: skip
    return root


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as file:
        file.visititems(
            lambda name, item: (
                found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return found


def test_every_shard_gets_an_output_with_every_result(
    bundle: Path, shards: Path, tmp_path: Path
) -> None:
    code, out = _run("explain", bundle, shards, "-o", tmp_path, "--batch-size", "4", *CHEAP)
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-00000.h5", "data-00001.h5"]
    data = _datasets(tmp_path / "data-00000.h5")
    assert data["attributions/tangential"].shape == (15, 1, 8, 8)
    assert data["baselines/tangential"].min() >= 0 and data["baselines/tangential"].max() <= 1
    assert set(k.split("/")[1] for k in data if k.startswith("delta/")) == {
        "tangential",
        "zero",
        "gaussian",
    }
    np.testing.assert_allclose(data["chance_level"], np.sqrt(data["tangent_rank"] / 64), rtol=1e-6)
    # format 2: the zero base-point's gap, and the search's frontier, never lower at looser gaps
    np.testing.assert_allclose(data["reference_gap"], data["output_gap/zero"], rtol=1e-5)
    assert data["frontier/tangential"].shape == (15, 7)
    assert (np.nan_to_num(np.diff(data["frontier/tangential"], axis=1)) >= 0).all()
    with h5py.File(tmp_path / "data-00001.h5") as file:
        job = json.loads(file.attrs["job"])
        assert job["input"]["first_id"] == 15 and job["config"]["n_steps"] == 8
        assert file.attrs["input_shard"].endswith("data-00001.h5")
    assert "| tangential |" in out


def test_search_options_reach_the_search_and_are_recorded(
    bundle: Path, shards: Path, tmp_path: Path
) -> None:
    runs = {
        "projection": ["--search-optimizer", "projection", "--search-damping", "0.7"],
        "adaptive": ["--search-optimizer", "ascent", "--search-adaptive-lr"],
        "surrogate": [
            "--search-inner-iterations",
            "3",
            "--search-anneal",
            "0",
            "--min-gap",
            "0.25",
        ],
    }
    results = {}
    for name, options in runs.items():
        code, out = _run(
            "explain", bundle, shards / "data-00000.h5", "-o", tmp_path / name, "-q",
            "--methods", "tangential", "--n-steps", "8", "--search-iterations", "4",
            "--search-n-steps", "4", *options,
        )  # fmt: skip
        assert code == 0, out
        with h5py.File(tmp_path / name / "data-00000.h5") as file:
            results[name] = json.loads(file.attrs["job"])["config"]["search"]
            assert np.isfinite(file["alignment/tangential"][()]).all()
    assert results["projection"]["optimizer"] == "projection"
    assert results["projection"]["damping"] == 0.7
    assert results["adaptive"]["optimizer"] == "ascent" and results["adaptive"]["adaptive_lr"]
    surrogate = results["surrogate"]
    assert surrogate["optimizer"] == "surrogate" and surrogate["min_gap"] == 0.25
    assert (surrogate["inner_iterations"], surrogate["anneal"]) == (3, 0.0)
    for flags, message in (
        (["--min-gap", "1"], "--min-gap"), (["--min-gap", "-0.1"], "--min-gap"),
        (["--search-anneal", "2"], "--search-anneal"),
    ):  # fmt: skip
        code, out = _run("explain", bundle, shards, "-o", tmp_path / "refused", *flags)
        assert code == 2 and f"Invalid value for '{message}'" in out, out
        assert not (tmp_path / "refused").exists()
    for flags in (["--search-adaptive-lr"], ["--search-gradient", "exact"]):
        code, out = _run("explain", bundle, shards, "-o", tmp_path / "refused", *flags)
        assert code == 2 and f"{' '.join(flags)} applies to ascent steps" in out, out
        assert "--search-optimizer ascent" in out and not (tmp_path / "refused").exists()


def test_torch_and_onnx_backends_agree(bundle: Path, shards: Path, tmp_path: Path) -> None:
    for backend in ("onnx", "torch"):
        code, out = _run(
            "explain", bundle, shards / "data-00000.h5", "-o", tmp_path / backend,
            "--backend", backend, "--methods", "zero,gradient", "--n-steps", "8", "-q",
        )  # fmt: skip
        assert code == 0, out
    onnx, torch = (_datasets(tmp_path / b / "data-00000.h5") for b in ("onnx", "torch"))
    for name in ("attributions/zero", "alignment/zero", "attributions/gradient"):
        np.testing.assert_allclose(onnx[name], torch[name], rtol=1e-4, atol=1e-5)


def test_a_killed_run_resumes_to_the_same_result(
    bundle: Path, shards: Path, tmp_path: Path
) -> None:
    # Every run in its own process with one thread, so floating-point sums are ordered alike.
    command = [sys.executable, "-c", "from tig_batch.cli import main; main()", "explain"]
    args = [str(bundle), str(shards / "data-00000.h5"), "--batch-size", "1", "--threads", "1"]
    args += [*CHEAP, "-q"]
    subprocess.run([*command, *args, "-o", str(tmp_path / "whole")], check=True)
    target = tmp_path / "killed"
    process = subprocess.Popen([*command, *args, "-o", str(target)])
    parts = target / "data-00000.h5.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("chunk-*.h5"))) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (target / "data-00000.h5").exists(), "the run finished before it could be killed"
    assert 3 <= len(list(parts.glob("chunk-*.h5"))) < 15
    subprocess.run([*command, *args, "-o", str(target)], check=True)
    assert sorted(p.name for p in target.iterdir()) == ["data-00000.h5"]
    resumed = _datasets(target / "data-00000.h5")
    whole = _datasets(tmp_path / "whole" / "data-00000.h5")
    assert resumed.keys() == whole.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_another_configuration_is_refused_unless_overwrite(
    bundle: Path, shards: Path, tmp_path: Path
) -> None:
    base = [
        "explain",
        bundle,
        shards / "data-00000.h5",
        "-o",
        tmp_path,
        "--methods",
        "gradient",
        "-q",
    ]
    assert _run(*base)[0] == 0
    assert _run(*base)[0] == 0  # same job: kept as is
    code, out = _run(*base, "--seed", "3")
    assert code == 2 and "exists; rerun with --overwrite" in out
    assert _run(*base, "--seed", "3", "--overwrite")[0] == 0


def _float_shard(path: Path, images: np.ndarray) -> Path:
    write_shards(
        [Records(images.astype(np.float32))], path, ShardSpec(images.shape[1:], dtype="float32")
    )
    return path


def test_bad_input_fails_with_one_clear_line(bundle: Path, tmp_path: Path) -> None:
    code, out = _run("explain", bundle, tmp_path / "missing.h5", "-o", tmp_path / "o1")
    assert code == 2 and "missing.h5" in out
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"not an HDF5 file at all")
    code, out = _run("explain", bundle, corrupt, "-o", tmp_path / "o2")
    assert code == 2 and "corrupt.h5" in out and "Traceback" not in out
    rgb = _float_shard(tmp_path / "rgb.h5", np.zeros((2, 3, 8, 8)))
    code, out = _run("explain", bundle, rgb, "-o", tmp_path / "o3")
    assert code == 2 and "(3, 8, 8)" in out and "expects (1, 8, 8)" in out
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    ok = _float_shard(tmp_path / "ok.h5", np.full((2, 1, 8, 8), 0.5))
    code, out = _run("explain", bundle, ok, "-o", blocker / "out", "--methods", "gradient")
    assert code == 2 and "cannot create the output directory" in out


def test_non_finite_images_stop_the_run_or_are_flagged(bundle: Path, tmp_path: Path) -> None:
    shard = _float_shard(tmp_path / "nan.h5", np.random.default_rng(0).random((4, 1, 8, 8)))
    with h5py.File(shard, "r+") as file:  # the ingest writer refuses NaN: corrupt it afterwards
        file["images"][2, 0, 1, 1] = np.nan
    code, out = _run("explain", bundle, shard, "-o", tmp_path / "error", "--methods", "gradient")
    assert code == 2 and "NaN or Inf pixels in image 2" in out
    code, out = _run(
        "explain", bundle, shard, "-o", tmp_path / "skip", "--methods", "zero,gradient",
        "--on-bad-image", "skip", "--n-steps", "4", "-q",
    )  # fmt: skip
    assert code == 0, out
    data = _datasets(tmp_path / "skip" / "nan.h5")
    assert data["flags/zero"].tolist() == [0, 0, 4, 0] and data["flags/gradient"][2] == 4
    assert (
        np.isnan(data["attributions/zero"][2]).all()
        and np.isfinite(data["attributions/zero"][[0, 1, 3]]).all()
    )


def test_a_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    copy.mkdir()
    for file in bundle.rglob("*"):
        if file.is_file():
            (copy / file.relative_to(bundle)).parent.mkdir(parents=True, exist_ok=True)
            (copy / file.relative_to(bundle)).write_bytes(file.read_bytes())
    (copy / "encoder.onnx").write_bytes((copy / "encoder.onnx").read_bytes()[:-1] + b"\x00")
    ok = _float_shard(tmp_path / "ok.h5", np.full((2, 1, 8, 8), 0.5))
    code, out = _run("explain", copy, ok, "-o", tmp_path / "out")
    assert code == 2 and "encoder.onnx: sha256 does not match" in out
