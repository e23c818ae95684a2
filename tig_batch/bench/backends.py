"""Gradient throughput of the two model backends side by side (``tig-batch bench backends``)."""

from __future__ import annotations

import functools
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tig_batch.backends import Classifier, Runtime, TorchClassifier, load_bundle
from tig_batch.bench._measure import median_seconds


@dataclass(frozen=True)
class BackendTiming:
    """Gradient throughput of both backends at one batch size."""

    batch_size: int
    torch_samples_per_s: float
    onnx_samples_per_s: float
    max_abs_diff: float

    @property
    def ratio(self) -> float:
        """ONNX Runtime throughput over torch eager throughput."""
        return self.onnx_samples_per_s / self.torch_samples_per_s


def demo_bundle(directory: Path, shape: tuple[int, int, int] = (1, 28, 28)) -> torch.nn.Module:
    """Export the demo architectures (untrained: speed does not depend on the weights) to
    ``directory``; returns the classifier for the torch side."""
    from tig_batch._bundle import InputSpec
    from tig_batch.export import export_bundle
    from tig_batch.models import ConvAutoencoder, SmallCNN

    torch.manual_seed(0)
    classifier = SmallCNN(shape, 10).eval()
    autoencoder = ConvAutoencoder(shape, 16).eval()
    export_bundle(
        classifier, autoencoder.encoder, autoencoder.decoder, directory, InputSpec(shape),
        [str(i) for i in range(10)],
    )  # fmt: skip
    return classifier


def time_backends(
    bundle: Path | None = None,
    batch_sizes: tuple[int, ...] = (64, 256),
    threads: int | None = None,
    repeats: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[BackendTiming]:
    """Gradient evaluations per second of torch eager and ONNX Runtime on one bundle.

    Both backends get the same thread count, the same inputs and targets, and are timed in
    alternation so that drifting machine load affects both alike.
    """
    if threads:
        torch.set_num_threads(threads)
    runtime = Runtime(threads=threads or torch.get_num_threads())
    with tempfile.TemporaryDirectory() as scratch:
        if bundle is None:
            if progress:
                progress("exporting the demo CNN and autoencoder ...")
            bundle = Path(scratch) / "demo"
            reference: Classifier = TorchClassifier(demo_bundle(bundle))
        else:
            reference = load_bundle(bundle, replace(runtime, backend="torch")).classifier
        onnx = load_bundle(bundle, runtime)
        backends = {"torch": reference, "onnx": onnx.classifier}
        spec = onnx.manifest.input
        generator = torch.Generator().manual_seed(0)
        rows = []
        for batch in batch_sizes:
            lo, hi = spec.value_range
            x = lo + (hi - lo) * torch.rand(batch, *spec.shape, generator=generator)
            target = torch.randint(0, onnx.manifest.n_classes, (batch,), generator=generator)
            calls = {
                name: functools.partial(m.logits_and_grad, x, target)
                for name, m in backends.items()
            }
            seconds: dict[str, list[float]] = {name: [] for name in backends}
            for _ in range(repeats):
                for name, call in calls.items():
                    seconds[name].append(median_seconds(call, 1))
            grads = {name: call()[1] for name, call in calls.items()}
            rows.append(
                BackendTiming(
                    batch,
                    batch / statistics.median(seconds["torch"]),
                    batch / statistics.median(seconds["onnx"]),
                    float((grads["torch"] - grads["onnx"]).abs().max()),
                )
            )
            if progress:
                progress(f"batch {batch}: ratio {rows[-1].ratio:.2f}")
    return rows
