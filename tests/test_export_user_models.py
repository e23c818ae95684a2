"""Bringing your own models: `export --model file.py:factory --autoencoder-model ...` keeps
what the torch backend needs inside the bundle, checksummed, so it opens from anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tig_batch.cli import main

pytestmark = pytest.mark.slow  # one export

NETS = """
import torch
from torch import nn


class Autoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        self.decoder = nn.Sequential(nn.Linear(4, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))


def make_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    )


def make_autoencoder():
    return Autoencoder()
"""


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, digits_shards) -> Path:  # type: ignore[no-untyped-def]
    """Exported from the models' own directory, with relative specs, as a user would."""
    source = tmp_path_factory.mktemp("user")
    (source / "nets.py").write_text(NETS)
    namespace: dict = {}
    exec(NETS, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make_cnn"]().state_dict(), source / "cnn.pt")
    torch.save(namespace["make_autoencoder"]().state_dict(), source / "ae.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(source)
        code, out = _run(
            "export", "--model", "nets.py:make_cnn", "--weights", "cnn.pt",
            "--autoencoder-model", "nets.py:make_autoencoder", "--autoencoder-weights", "ae.pt",
            "--verify-data", digits_shards[1], "-o", "bundle", "-q",
        )  # fmt: skip
    assert code == 0, out
    (source / "nets.py").unlink()  # the bundle must not need it
    return source / "bundle"


def test_the_bundle_keeps_the_factories_source_checksummed(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"torch/classifier/nets.py", "torch/autoencoder/nets.py"} <= set(manifest["files"])
    assert manifest["torch_models"]["classifier"] == {
        "factory": "torch/classifier/nets.py:make_cnn", "weights": "torch/classifier.pt"
    }  # fmt: skip
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["input"]["shape"] == [1, 8, 8]


def test_both_backends_open_it_from_another_directory(
    bundle: Path, digits_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    results = {}
    for backend in ("torch", "onnx"):
        code, out = _run(
            "explain", bundle, digits_shards[1], "-o", backend, "--backend", backend,
            "--methods", "gradient,zero", "--n-steps", "4", "-q",
        )  # fmt: skip
        assert code == 0, out
        with h5py.File(tmp_path / backend / "test.h5") as file:
            results[backend] = file["attributions/gradient"][()]
    np.testing.assert_allclose(results["onnx"], results["torch"], rtol=1e-4, atol=1e-5)


def test_a_changed_source_file_is_refused(bundle: Path, digits_shards, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with (copy / "torch/classifier/nets.py").open("a") as file:
        file.write("\n# edited\n")
    code, out = _run("explain", copy, digits_shards[1], "-o", tmp_path / "o", "--backend", "torch")
    assert code == 2 and "nets.py: sha256 does not match" in out


def test_own_models_need_a_dataset_for_their_input(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    spec = str(tmp_path / "nets.py")
    code, out = _run(
        "export", "--model", f"{spec}:make_cnn", "--autoencoder-model", f"{spec}:make_autoencoder",
        "-o", tmp_path / "b",
    )  # fmt: skip
    assert code == 2 and "name a dataset of the images they take (--verify-data)" in out
    code, out = _run(
        "export", "--model", f"{spec}:make_cnn", "--autoencoder-model", f"{spec}:make_cnn",
        "-o", tmp_path / "b",
    )  # fmt: skip
    assert code == 2 and "has no encoder or decoder" in out
    code, out = _run("export", "--checkpoint", "c", "-o", tmp_path / "b")
    assert code == 2 and "exactly one of --autoencoder or --autoencoder-model" in out
