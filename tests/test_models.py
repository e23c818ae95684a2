"""Architectures, training and checkpoints on tiny real data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tig_batch.data import iter_batches, open_dataset
from tig_batch.errors import DataError, ModelError
from tig_batch.models import (
    ConvAutoencoder,
    SmallCNN,
    TrainConfig,
    evaluate_classifier,
    load_autoencoder,
    load_checkpoint,
    load_classifier,
    load_user_model,
    save_checkpoint,
    train_autoencoder,
    train_classifier,
)

ALLOWED = (
    nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
    nn.BatchNorm2d, nn.Dropout, nn.Flatten, nn.Unflatten, nn.Upsample, nn.Sigmoid, nn.Sequential,
)  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 12, 20)])
def test_shapes_and_layers(shape) -> None:
    x = torch.rand(2, *shape)
    clf = SmallCNN(shape, num_classes=7).eval()
    assert clf(x).shape == (2, 7)
    ae = ConvAutoencoder(shape, latent_dim=5).eval()
    z = ae.encoder(x)
    assert z.shape == (2, 5)
    out = ae.decoder(z)
    assert (
        out.shape == (2, *shape)
        and float(out.detach().min()) >= 0.0
        and float(out.detach().max()) <= 1.0
    )
    assert isinstance(ae.decoder[-1], nn.Sigmoid)
    for model in (clf, ae):
        for m in model.modules():
            if m is model or type(m).__name__ == "Normalize":
                continue
            assert isinstance(m, ALLOWED), type(m)
            assert not getattr(m, "inplace", False)


@pytest.mark.parametrize("shape", [(1, 30, 30), (1, 28, 26), (3, 2, 2), (1, 28)])
def test_impossible_geometry_is_a_clear_error(shape) -> None:
    with pytest.raises(ModelError, match=r"divisible by 4|input shape must be"):
        SmallCNN(shape, 10)
    with pytest.raises(ModelError, match=r"divisible by 4|input shape must be"):
        ConvAutoencoder(shape)


def test_normalisation_lives_inside_the_classifier() -> None:
    torch.manual_seed(0)
    a = SmallCNN((1, 8, 8), 3, mean=[0.0], std=[1.0]).eval()
    b = SmallCNN((1, 8, 8), 3, mean=[0.5], std=[2.0]).eval()
    b.load_state_dict(
        {
            **a.state_dict(),
            "normalize.mean": b.normalize.mean,
            "normalize.inv_std": b.normalize.inv_std,
        }
    )
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(b(x), a((x - 0.5) / 2.0))


@pytest.fixture(scope="module")
def trained(digits_shards, tmp_path_factory):
    train, test = (open_dataset(p) for p in digits_shards)
    config = TrainConfig(epochs=2, batch_size=32, seed=3, threads=2)
    result = train_classifier(train, test, config, progress=False)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "clf", result.model, result.metadata)
    return result, path, config


def test_tiny_classifier_learns_and_checkpoint_round_trips(trained, digits_shards) -> None:
    result, path, _ = trained
    # 2 epochs on 1,500 8x8 digits: far above the 10 % of chance.
    assert result.metrics["test_accuracy"] > 0.8
    assert result.metrics["test_count"] == 297 and result.metrics["steps"] == 2 * 47
    model, meta = load_classifier(path)
    assert not model.training
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), result.model(x), rtol=0, atol=0)
    assert meta["architecture"]["name"] == "small-cnn" and meta["class_names"] == list("0123456789")
    args = meta["architecture"]["args"]
    assert meta["input"] == {
        "shape": [1, 8, 8],
        "value_range": [0.0, 1.0],
        "channel_layout": "L",
        "normalization": {"mean": args["mean"], "std": args["std"]},
    }
    # The statistics are the training digits' own (an independent numpy computation).
    x = np.concatenate([b.images for b in iter_batches(digits_shards[0], 1000)])
    assert args["mean"] == pytest.approx([x.mean()]) and args["std"] == pytest.approx([x.std()])
    assert len(meta["training"]["train_data"]["sha256"]) == 64
    assert set(meta["versions"]) >= {"torch", "numpy", "h5py", "tig_batch"}
    on_disk = json.loads(path.with_name("clf.metrics.json").read_text())
    assert on_disk["test_accuracy"] == result.metrics["test_accuracy"]
    again = evaluate_classifier(model, open_dataset(digits_shards[1]))
    assert again["accuracy"] == result.metrics["test_accuracy"]


def test_training_is_deterministic(trained, digits_shards) -> None:
    result, _, config = trained
    train, test = (open_dataset(p) for p in digits_shards)
    again = train_classifier(train, test, config, progress=False)
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, rtol=0, atol=0)


def test_autoencoder_trains_and_loads(digits_shards, tmp_path: Path) -> None:
    train, test = (open_dataset(p) for p in digits_shards)
    result = train_autoencoder(
        train, test, TrainConfig(epochs=1, batch_size=64, threads=2), latent_dim=4, progress=False
    )
    # The digits' mean pixel variance is about 0.15; one epoch must already beat predicting 0.
    assert result.metrics["test_mse"] < 0.1
    path = save_checkpoint(tmp_path / "ae", result.model, result.metadata)
    _, meta = load_autoencoder(path)
    assert (
        meta["architecture"]["args"]["latent_dim"] == 4 and meta["input"]["normalization"] is None
    )
    with pytest.raises(ModelError, match="holds a autoencoder, not a classifier"):
        load_classifier(path)


def test_checkpoint_errors(trained, tmp_path: Path) -> None:
    _, path, _ = trained
    copy = tmp_path / "c"
    for suffix in (".pt", ".json"):
        copy.with_suffix(suffix).write_bytes(path.with_suffix(suffix).read_bytes())
    load_checkpoint(copy.with_suffix(".json"))
    tampered = bytearray(copy.with_suffix(".pt").read_bytes())
    tampered[-100] ^= 0xFF
    copy.with_suffix(".pt").write_bytes(bytes(tampered))
    with pytest.raises(ModelError, match=r"c\.pt: weights do not match the sha256"):
        load_classifier(copy)
    with pytest.raises(ModelError, match=r"missing\.json: checkpoint metadata is missing"):
        load_classifier(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("owned",))


def test_user_model_factory_and_weights(tmp_path: Path, trained) -> None:
    source = tmp_path / "mynet.py"
    source.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
        "def not_a_module():\n"
        "    return 3\n"
    )
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    model = load_user_model(f"{source}:make", tmp_path / "w.pt")
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x))
    with pytest.raises(ModelError, match="returned int, not a Module"):
        load_user_model(f"{source}:not_a_module")
    with pytest.raises(ModelError, match="has no attribute 'nope'"):
        load_user_model(f"{source}:nope")
    with pytest.raises(ModelError, match=r"cannot import 'no_such_pkg.mod'.*PYTHONPATH"):
        load_user_model("no_such_pkg.mod:make")
    with pytest.raises(ModelError, match=r"expected package.module:factory"):
        load_user_model("torch.nn.Linear")
    model = load_user_model("torch.nn:Flatten")
    assert isinstance(model, nn.Flatten)
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(ModelError, match=r"wrong\.pt: weights do not fit the model"):
        load_user_model(f"{source}:make", tmp_path / "wrong.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": _Payload()}, protocol=2))
    with pytest.raises(ModelError, match=r"evil\.pt: not a loadable tensor state dict"):
        load_user_model(f"{source}:make", tmp_path / "evil.pt")


def test_training_refuses_unusable_data(tmp_path: Path) -> None:
    import numpy as np

    from tig_batch.data import Records, ShardSpec, write_shards

    x = np.zeros((4, 1, 8, 8), np.uint8)
    unlabelled = write_shards([Records(x)], tmp_path / "u.h5", ShardSpec((1, 8, 8)))
    with pytest.raises(DataError, match=r"u\.h5: training a classifier needs 'labels'"):
        train_classifier(unlabelled, progress=False)
    wide = write_shards([Records(x)], tmp_path / "w.h5", ShardSpec((1, 8, 8), value_range=(-1, 1)))
    with pytest.raises(
        DataError,
        match=r"w\.h5: the autoencoder's Sigmoid output needs data in value range \[0, 1\]",
    ):
        train_autoencoder(wide, progress=False)
