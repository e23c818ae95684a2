"""The ingest, info, train and evaluate commands through CliRunner: exit codes and messages."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tig_batch.cli import main
from tig_batch.data import iter_batches
from tig_batch.errors import DataError


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _idx(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(
        b"\x00\x00\x08"
        + bytes([array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    return path


def test_ingest_idx_then_info(tmp_path: Path) -> None:
    images = _idx(tmp_path / "img", np.arange(3 * 16, dtype=np.uint8).reshape(3, 4, 4))
    labels = _idx(tmp_path / "lab", np.array([9, 0, 1], np.uint8))
    out = tmp_path / "shards"
    args = ["-o", out, "--split", "test", "--shard-size", "2", "--compression", "lzf"]
    result = _run("ingest", "idx", images, labels, *args, "--class-names", "fashion-mnist", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{out}: 3 images 1x4x4 uint8 in 2 shard(s), 10 classes, value range [0.0, 1.0]\n"
    )
    assert result.stderr == ""  # --quiet: no progress bar
    info = json.loads(_run("info", out).stdout)
    assert info["count"] == 3 and info["split"] == "test" and info["class_names"][9] == "Ankle boot"
    again = _run("ingest", "idx", images, "-o", out)
    assert again.exit_code == 2
    assert again.stderr == (
        f"Error: {out}: already holds shards (test-00000.h5); pass --overwrite to replace them, "
        "or choose another --output\n"
    )
    assert _run("ingest", "idx", images, "-o", out, "--overwrite").exit_code == 0


def test_data_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 10, 4, 4) + b"\x00" * 20)
    result = _run("ingest", "idx", bad, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {bad}: truncated: expected 160 more bytes")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    debug = _run("--debug", "ingest", "idx", bad, "-o", tmp_path / "out")
    assert isinstance(debug.exception, DataError)  # --debug keeps the exception and traceback
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    result = _run("info", junk)
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {junk}: not a readable HDF5")


def test_ingest_into_unwritable_directory(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "file").write_text("")
    result = _run("ingest", "arrays", tmp_path / "x.npy", "-o", tmp_path / "file" / "out")
    assert result.exit_code == 2
    assert (
        f"Error: {tmp_path / 'file' / 'out'}: cannot write to the output directory" in result.stderr
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _run("ingest", "idx", tmp_path / "missing", "-o", tmp_path).exit_code == 2
    result = _run("ingest", "arrays", __file__, "-o", tmp_path / "o", "--value-range", "1,0")
    assert result.exit_code == 2 and "LO must be below HI" in result.stderr
    result = _run("evaluate", "--data", "mnist-5k")
    assert result.exit_code == 2 and "exactly one of --checkpoint or --model" in result.stderr


def test_train_classifier_and_evaluate_through_the_cli(digits_shards, tmp_path: Path) -> None:
    train, test = digits_shards
    out = tmp_path / "runs" / "clf"
    result = _run("train", "classifier", "--data", train, "--test-data", test, "-o", out,
                  "--max-steps", "3", "--batch-size", "16", "--threads", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train: 1500 images 1x8x8 uint8 in 3 shard(s)" in result.stderr  # early summary
    assert "classifier: 100%" in result.stderr and "img_s=" in result.stderr  # progress bar
    metrics = json.loads(out.with_name("clf.metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["test_count"] == 297
    assert result.stdout.startswith(f"{out}.pt: {{")
    meta = json.loads(out.with_name("clf.json").read_text())
    assert meta["training"]["config"]["max_steps"] == 3 and meta["weights"] == "clf.pt"
    evaluated = json.loads(_run("evaluate", "--checkpoint", f"{out}.pt", "--data", test).stdout)
    assert evaluated["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-5)


def test_evaluate_a_users_own_model(digits_shards, tmp_path: Path) -> None:
    _, test = digits_shards
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
    )
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.arange(10.0))  # always predicts class 9
    torch.save(net.state_dict(), tmp_path / "w.pt")
    spec = f"{tmp_path / 'net.py'}:build"
    result = _run("evaluate", "--model", spec, "--weights", tmp_path / "w.pt", "--data", test)
    assert result.exit_code == 0, result.output
    labels = np.concatenate([b.labels for b in iter_batches(test, 500)])
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(np.mean(labels == 9), abs=1e-5)
    bad = _run("evaluate", "--model", "nowhere.mod:f", "--data", test)
    assert bad.exit_code == 2 and "Error: --model 'nowhere.mod:f': cannot import" in bad.stderr


def test_train_autoencoder_cli_and_unwritable_output(digits_shards, tmp_path: Path) -> None:
    train, test = digits_shards
    out = tmp_path / "ae"
    data = ["--data", train, "--test-data", test]
    result = _run("train", "autoencoder", *data, "-n", "3", "-o", out, "--max-steps", "2", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    meta = json.loads(out.with_name("ae.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["architecture"]["args"]["latent_dim"] == 3
    assert "test_mse" in meta["metrics"]
    (tmp_path / "file").write_text("")
    result = _run("train", "autoencoder", "--data", train, "-o", tmp_path / "file" / "ae", "-q")
    assert result.exit_code == 2 and "cannot write the checkpoint here" in result.stderr


def test_ingest_takes_the_split_from_the_names(tmp_path: Path) -> None:
    images = _idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8))
    for output, extra, split in [
        (tmp_path / "mnist" / "train", [], "train"),  # the output's name first
        (tmp_path / "digits", [], "test"),  # then the input's: t10k is MNIST's test set
        (tmp_path / "plain", ["--split", ""], ""),  # as given
    ]:
        assert _run("ingest", "idx", images, "-o", output, "-q", *extra).exit_code == 0
        assert json.loads(_run("info", output).stdout)["split"] == split


def test_an_empty_method_list_says_so(tmp_path: Path) -> None:
    result = _run("explain", tmp_path, "in.h5", "-o", tmp_path / "o", "--methods", "")
    assert result.exit_code == 2 and "give at least one method; choose from" in result.output
