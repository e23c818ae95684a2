"""Training and evaluation from shards: seeded, streaming, deterministic on CPU."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from tig_batch.data import DatasetInfo, DatasetSummary, iter_batches, iter_shuffled, summarize
from tig_batch.errors import DataError
from tig_batch.models._arch import ConvAutoencoder, SmallCNN
from tig_batch.models._checkpoint import build_metadata

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by both trainings (Adam, cosine-decayed learning rate)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    buffer_size: int = 8192
    threads: int | None = None
    max_steps: int | None = None  # stop early (smoke tests); None trains every epoch


@dataclass(frozen=True)
class TrainResult:
    """A trained model in eval mode, its checkpoint metadata and its final metrics."""

    model: nn.Module
    metadata: dict
    metrics: dict


@contextlib.contextmanager
def _reproducible(seed: int, threads: int | None) -> Iterator[None]:
    """Seed torch, demand deterministic kernels and pin the thread count, then restore."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _describe(name: str, info: DatasetInfo, summary: DatasetSummary) -> str:
    c, h, w = info.shape
    counts = " ".join(
        f"{n}:{k}" for n, k in zip(info.class_names, summary.class_counts, strict=False)
    )
    return (
        f"{name}: {info.count} images {c}x{h}x{w} {info.dtype} in {len(info.shards)} shard(s), "
        f"value range {list(info.value_range)}, mean {[round(m, 4) for m in summary.mean]}"
        + (f", classes {counts}" if counts else "")
    )


def _fit(
    model: nn.Module,
    train: DatasetInfo,
    config: TrainConfig,
    loss_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    progress: bool,
    desc: str,
) -> dict:
    steps_per_epoch = math.ceil(train.count / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1)))
    )
    model.train()
    step, seen, last_loss = 0, 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not progress)
    with bar:
        for epoch in range(config.epochs):
            stream = iter_shuffled(
                train, config.batch_size, seed=config.seed * 1000 + epoch,
                buffer_size=config.buffer_size,
            )  # fmt: skip
            for x, y in stream:
                if step >= total:
                    break
                xt = torch.from_numpy(x)
                loss = loss_fn(xt, None if y is None else torch.from_numpy(y))
                if not torch.isfinite(loss):
                    raise DataError(
                        f"{train.path}: training loss became {loss.item()} at step {step}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                seen += len(x)
                last_loss = loss.item()
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(epoch=epoch + 1, loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
                bar.update(1)
    model.eval()
    seconds = time.perf_counter() - start
    return {"steps": step, "train_seconds": round(seconds, 2), "final_train_loss": last_loss}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: DatasetInfo, batch_size: int = 256) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on a labelled dataset."""
    if not data.has_labels:
        raise DataError(f"{data.path}: dataset has no 'labels'; cannot measure accuracy")
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for batch in iter_batches(data, batch_size):
        logits = model(torch.from_numpy(batch.images))
        y = torch.from_numpy(batch.labels)
        if logits.ndim != 2 or logits.shape[0] != len(y) or logits.shape[1] <= int(y.max()):
            raise DataError(
                f"{batch.shard}: model returned logits of shape {tuple(logits.shape)} for "
                f"{len(y)} images with labels up to {int(y.max())}"
            )
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return {"accuracy": correct / n, "cross_entropy": loss / n, "count": n}


@torch.no_grad()
def evaluate_autoencoder(model: nn.Module, data: DatasetInfo, batch_size: int = 256) -> dict:
    """Mean squared reconstruction error per pixel."""
    model.eval()
    total, n = 0.0, 0
    for batch in iter_batches(data, batch_size, labels=False):
        x = torch.from_numpy(batch.images)
        total += nn.functional.mse_loss(model(x), x, reduction="sum").item()
        n += x.numel()
    return {"mse": total / n, "count": data.count}


def train_classifier(
    train: DatasetInfo,
    test: DatasetInfo | None = None,
    config: TrainConfig = TrainConfig(),
    *,
    dropout: float = 0.3,
    progress: bool = True,
    log: Log | None = None,
) -> TrainResult:
    """Train :class:`SmallCNN` on ``train``; report test accuracy when ``test`` is given."""
    if not train.has_labels or not train.class_names:
        raise DataError(f"{train.path}: training a classifier needs 'labels' and class_names")
    if test is not None and (test.shape != train.shape or test.class_names != train.class_names):
        raise DataError(f"{test.path}: test data differs from {train.path} in shape or classes")
    with _reproducible(config.seed, config.threads):
        summary = summarize(train)
        if log:
            log(_describe("train", train, summary))
        args = {
            "input_shape": list(train.shape),
            "num_classes": train.num_classes,
            "mean": list(summary.mean),
            "std": [max(s, 1e-6) for s in summary.std],
            "dropout": dropout,
        }
        model = SmallCNN(**args)

        def loss_fn(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return nn.functional.cross_entropy(model(x), y)

        fit = _fit(model, train, config, loss_fn, progress, "classifier")
        metrics = {**fit, **_prefixed("train", evaluate_classifier(model, train))}
        if test is not None:
            metrics.update(_prefixed("test", evaluate_classifier(model, test)))
    metadata = build_metadata(
        "classifier", "small-cnn", args, train, summary, test, asdict(config), metrics,
        normalization={"mean": args["mean"], "std": args["std"]},
    )  # fmt: skip
    return TrainResult(model, metadata, metrics)


def train_autoencoder(
    train: DatasetInfo,
    test: DatasetInfo | None = None,
    config: TrainConfig = TrainConfig(epochs=20),
    *,
    latent_dim: int = 16,
    progress: bool = True,
    log: Log | None = None,
) -> TrainResult:
    """Train :class:`ConvAutoencoder` (latent size ``latent_dim``) by pixel MSE."""
    if train.value_range != (0.0, 1.0):
        raise DataError(
            f"{train.path}: the autoencoder's Sigmoid output needs data in value range [0, 1], "
            f"not {list(train.value_range)}; re-ingest with --value-range 0,1"
        )
    if test is not None and test.shape != train.shape:
        raise DataError(f"{test.path}: test images are {test.shape}, training {train.shape}")
    with _reproducible(config.seed, config.threads):
        summary = summarize(train)
        if log:
            log(_describe("train", train, summary))
        args = {"input_shape": list(train.shape), "latent_dim": latent_dim}
        model = ConvAutoencoder(**args)

        def loss_fn(x: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
            return nn.functional.mse_loss(model(x), x)

        fit = _fit(model, train, config, loss_fn, progress, "autoencoder")
        metrics = {**fit, **_prefixed("train", evaluate_autoencoder(model, train))}
        if test is not None:
            metrics.update(_prefixed("test", evaluate_autoencoder(model, test)))
    metadata = build_metadata(
        "autoencoder", "conv-autoencoder", args, train, summary, test, asdict(config), metrics,
        normalization=None,
    )  # fmt: skip
    return TrainResult(model, metadata, metrics)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}
