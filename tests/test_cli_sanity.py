"""``tig-batch sanity``: the cascade over a bundle's torch classifier, checked against
``cascading_randomization`` called on the same model and pixels read here, and its refusals
(exit 2, one line naming the file)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tig_batch as tig
from tig_batch.cli import main
from tig_batch.models import load_checkpoint, load_user_model

N_IMAGES, N_STEPS = 5, 8

NETS = """
import torch
from torch import nn


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    )


def autoencoder():
    torch.manual_seed(1)
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    model.decoder = nn.Sequential(nn.Linear(4, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    return model
"""


def _invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _images(shard: Path, n: int) -> torch.Tensor:
    """The first ``n`` images of a uint8 shard in [0, 1], read without tig-batch's reader."""
    with h5py.File(shard, "r") as file:
        return torch.from_numpy(file["images"][:n].astype(np.float32) / 255)


def _gradient(model: tig.Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return tig.gradient(model, inputs, target).attributions


def _zero_ig(model: tig.Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return tig.integrated_gradients(model, inputs, 0.0, target, N_STEPS).attributions


@pytest.fixture(scope="module")
def torch_bundle(tmp_path_factory: pytest.TempPathFactory, digits_shards) -> Path:  # type: ignore[no-untyped-def]
    """A bundle with torch models from a factory file (seeded, untrained): exported in
    seconds. Its factory is ``nets.py:classifier`` beside it."""
    from tig_batch.export import export_checkpoints

    root = tmp_path_factory.mktemp("torch-bundle")
    (root / "nets.py").write_text(NETS)
    export_checkpoints(
        None, root / "bundle", model_spec=f"{root / 'nets.py'}:classifier",
        autoencoder_spec=f"{root / 'nets.py'}:autoencoder", verify_data=digits_shards[1],
    )  # fmt: skip
    return root / "bundle"


def _sanity_run(bundle: Path, shard: Path, out: Path):  # type: ignore[no-untyped-def]
    """One run of the command on the first digits of ``shard``: (exit code, output, JSON
    record, figure path)."""
    code, output = _invoke(
        "sanity", bundle, shard, "--limit", N_IMAGES,
        "--methods", "gradient,zero", "--n-steps", N_STEPS, "--seed", 3,
        "--json", out / "sanity.json", "--figure", out / "sanity.png", "-q",
    )  # fmt: skip
    record = json.loads((out / "sanity.json").read_text()) if code == 0 else None
    return code, output, record, out / "sanity.png"


@pytest.fixture(scope="module")
def sanity_run(torch_bundle: Path, digits_shards, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return _sanity_run(torch_bundle, digits_shards[1], tmp_path_factory.mktemp("sanity"))


def test_the_record_is_the_cascade_on_the_bundles_classifier(
    sanity_run, torch_bundle: Path, digits_shards
) -> None:  # type: ignore[no-untyped-def]
    code, output, record, _ = sanity_run
    assert code == 0, output
    module = load_user_model(f"{torch_bundle.parent / 'nets.py'}:classifier").eval()
    images = _images(digits_shards[1], N_IMAGES)
    expected = {
        "gradient": tig.cascading_randomization(module, images, _gradient, seed=3),
        "zero": tig.cascading_randomization(module, images, _zero_ig, seed=3),
    }
    assert record["ids"] == [str(i) for i in range(N_IMAGES)]
    assert record["layers"] == list(expected["gradient"].layers)
    assert record["target"] == expected["gradient"].target.tolist()
    for method, result in expected.items():
        got = record["methods"][method]
        np.testing.assert_allclose(got["spearman_abs"], result.spearman_abs.numpy(), atol=1e-6)
        np.testing.assert_allclose(got["spearman"], result.spearman.numpy(), atol=1e-6)
        assert got["passed"] == result.passed(record["threshold"]).tolist()
        assert got["n_passed"] == sum(got["passed"])
        np.testing.assert_allclose(got["mean_spearman_abs"], result.spearman_abs.mean(1), atol=1e-6)
        assert got["passes"] == (2 * got["n_passed"] > N_IMAGES)


def test_the_table_names_every_layer_and_method_and_the_verdict(sanity_run) -> None:  # type: ignore[no-untyped-def]
    code, output, record, figure = sanity_run
    assert code == 0
    header, _, *rows = output.splitlines()[:4]
    first, *rest = record["layers"]
    assert header == (
        f"| method | {first} | " + "".join(f"+ {name} | " for name in rest) + "passed (< 0.5) |"
    )
    for row, method in zip(rows, ("gradient", "zero"), strict=True):
        got = record["methods"][method]
        assert row.startswith(f"| {method} | {got['mean_spearman_abs'][0]:.2f} ± ")
        assert row.endswith(f"| {got['n_passed']}/{N_IMAGES} |")
    passing = [m for m, got in record["methods"].items() if got["passes"]]
    failing = [m for m, got in record["methods"].items() if not got["passes"]]
    verdict = f"Pass (more than half of the images): {', '.join(passing) or 'none'}. "
    assert verdict + f"Fail: {', '.join(failing) or 'none'}." in output.replace("\n", " ")
    assert figure.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the digits bundle trains and exports two models first
def test_the_gradient_of_a_trained_classifier_passes(
    digits_bundle: Path, digits_shards, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    code, output, record, _ = _sanity_run(digits_bundle, digits_shards[1], tmp_path)
    assert code == 0, output
    module = load_checkpoint(digits_bundle / "torch" / "classifier.json", "classifier")[0]
    expected = tig.cascading_randomization(
        module, _images(digits_shards[1], N_IMAGES), _gradient, seed=3
    )
    np.testing.assert_allclose(
        record["methods"]["gradient"]["spearman_abs"], expected.spearman_abs.numpy(), atol=1e-6
    )
    assert record["methods"]["gradient"]["passes"] and expected.passed().all()


def test_a_bundle_without_torch_models_is_refused(untrained_bundle: Path, digits_shards) -> None:  # type: ignore[no-untyped-def]
    code, output = _invoke("sanity", untrained_bundle, digits_shards[1], "--limit", 2)
    assert code == 2
    assert output.startswith(f"Error: {untrained_bundle}: this bundle carries no torch models")
    assert len(output.strip().splitlines()) == 1


def test_bad_bundles_inputs_and_layer_counts_exit_2_naming_the_file(
    torch_bundle: Path, digits_shards, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    code, output = _invoke("sanity", tmp_path / "empty", digits_shards[1])
    assert (code, output.splitlines()) == (
        2, [f"Error: {tmp_path / 'empty'}: not a tig-batch bundle (no manifest.json); run "
            "`tig-batch export`"],
    )  # fmt: skip
    code, output = _invoke("sanity", torch_bundle, tmp_path / "missing.h5")
    assert code == 2 and output.startswith(f"Error: {tmp_path / 'missing.h5'}: no such dataset")
    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "a-file" / "sanity.json"
    code, output = _invoke("sanity", torch_bundle, digits_shards[1], "--json", unwritable)
    assert code == 2 and output.startswith(f"Error: {unwritable}: cannot write (")
    assert len(output.strip().splitlines()) == 1
    code, output = _invoke("sanity", torch_bundle, digits_shards[1], "--layers", 3, "-q")
    assert code == 2
    assert output.startswith(f"Error: {torch_bundle}: the classifier has 2 layers with ")
    assert output.rstrip().endswith("(--layers), not 3")
