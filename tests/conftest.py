"""Shared fixtures: tiny models (float64 unless a test says otherwise), tiny real data as
shards (scikit-learn's 8x8 digits), and a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tig_batch.data import Records, ShardSpec, write_shards

# Triton fixes whether its own standard library (tl.sum, ...) is interpreted when it is first
# imported, and torch.onnx imports it early; so on a machine without a GPU, the interpreter
# must be on for the whole session, not switched on per test.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHAPE = (1, 8, 8)
D = 64
N_CLASSES = 5


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.5)
    return module.double().eval()


def relu_cnn(seed: int = 0) -> nn.Module:
    """Conv, ReLU, max-pool, linear: piecewise linear, so its logits have zero curvature a.e."""
    return _seeded(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, N_CLASSES),
        ),
        seed,
    )


def smooth_mlp(seed: int = 0) -> nn.Module:
    """A tanh network: smooth, with curvature everywhere."""
    return _seeded(
        nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, N_CLASSES)), seed
    )


def linear_model(seed: int = 0) -> nn.Module:
    return _seeded(nn.Sequential(nn.Flatten(), nn.Linear(D, N_CLASSES)), seed)


@pytest.fixture
def images() -> torch.Tensor:
    """Four 1x8x8 images in [0, 1]."""
    return torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's ~/.cache; share one cache across the session (mnist-5k is 1 s)."""
    monkeypatch.setenv("TIG_BATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits, 1x8x8 uint8, and their labels."""
    return _digits()


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory: pytest.TempPathFactory, digits) -> tuple[Path, Path]:
    """(train directory of 3 shards with 1,500 digits, test file with the other 297)."""
    images, labels = digits
    root = tmp_path_factory.mktemp("digits")
    names = tuple(str(i) for i in range(10))
    train = write_shards(
        [Records(images[:1500], labels[:1500])], root / "train",
        ShardSpec((1, 8, 8), class_names=names, split="train", source="sklearn-digits"),
        shard_size=600,
    )  # fmt: skip
    test = write_shards(
        [Records(images[1500:], labels[1500:])], root / "test.h5",
        ShardSpec((1, 8, 8), class_names=names, split="test", source="sklearn-digits"),
    )  # fmt: skip
    return train.path, test.path


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle for the 8x8 digits with seeded untrained weights (conv-pool classifier, n = 4
    linear autoencoder): exported in seconds, for tests of the run rather than the models."""
    from tig_batch._bundle import InputSpec
    from tig_batch.export import export_bundle

    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    ).eval()  # fmt: skip
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    decoder = nn.Sequential(nn.Linear(4, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8))).eval()
    path = tmp_path_factory.mktemp("untrained") / "bundle"
    export_bundle(
        classifier, encoder, decoder, path, InputSpec((1, 8, 8)), list(map(str, range(10)))
    )
    return path


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, digits_shards) -> Path:
    """The demo classifier and autoencoder (n = 6) of the 8x8 digits, briefly trained with the
    CLI and exported: a real bundle for the end-to-end tests."""
    from click.testing import CliRunner

    from tig_batch.cli import main

    def run(*args: str | Path) -> None:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    root = tmp_path_factory.mktemp("models")
    train, test = digits_shards
    for kind, extra in [("classifier", []), ("autoencoder", ["-n", "6"])]:
        run(
            "train", kind, "--data", train, "--test-data", test, "--max-steps", "40",
            "-o", root / kind, "-q", *extra,
        )  # fmt: skip
    run(
        "export", "--checkpoint", root / "classifier", "--autoencoder", root / "autoencoder",
        "-o", root / "bundle", "-q",
    )  # fmt: skip
    return root / "bundle"


@pytest.fixture(scope="session")
def fast_quickstart(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``tig-batch quickstart --fast`` run once in a fresh directory (its output in
    ``tig-batch-quickstart/``, its cache in ``cache/``): (that directory, the run's result)."""
    from click.testing import CliRunner

    from tig_batch.cli import main

    root = tmp_path_factory.mktemp("quickstart")
    args = ["quickstart", "--fast", "--out", root / "tig-batch-quickstart"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--cache-dir", root / "cache"]])
    assert result.exit_code == 0, result.output
    return root, result
