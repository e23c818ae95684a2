"""The new methods and metrics run through the model protocol alone: on an exported gradient
graph, ONNX Runtime gives what the torch backend of the same model gives.

The model is smooth (tanh, average pooling) on purpose: at a ReLU or max-pool kink the two
runtimes may route a gradient differently (their float32 sums differ in the last bits, and
max-pool ties break differently), which a method can amplify; that is a property of the
backends, not of the methods tested here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import tig_batch as tig
from tig_batch.backends import OnnxClassifier, Runtime
from tig_batch.export import gradient_graph
from tig_batch.export._trace import save_onnx

pytestmark = pytest.mark.slow  # one ONNX export, a few seconds


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> tuple[tig.Classifier, tig.Classifier]:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    ).eval()  # fmt: skip
    example = torch.rand(2, 1, 8, 8)
    path = tmp_path_factory.mktemp("onnx") / "classifier.onnx"
    save_onnx(
        gradient_graph(module, "logit", example), (example, torch.zeros(2, dtype=torch.long)),
        path, ["x", "target"], ["logits", "grad"],
    )  # fmt: skip
    onnx = OnnxClassifier(path, "logit", 10, Runtime(threads=1))
    return onnx, tig.TorchClassifier(module)


@pytest.fixture(scope="module")
def pictures(digits: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(digits[0][1500:1506], dtype=torch.float32) / 255


def _methods(references: torch.Tensor) -> dict:
    return {
        "guided": lambda m, x, t: tig.guided_integrated_gradients(m, x, 0.0, t, n_steps=30),
        "blur": lambda m, x, t: tig.blur_integrated_gradients(m, x, t, n_steps=20),
        "expected": lambda m, x, t: tig.expected_gradients(m, x, references, t, n_samples=16),
    }


@pytest.mark.parametrize("name", ["guided", "blur", "expected"])
def test_path_methods_agree_across_backends(name: str, backends, pictures) -> None:  # type: ignore[no-untyped-def]
    onnx, reference = backends
    target = reference.logits(pictures).argmax(1)
    run = _methods(pictures.flip(0))[name]
    ours, theirs = run(onnx, pictures, target), run(reference, pictures, target)
    scale = theirs.attributions.abs().max()
    # float32 gradients from two runtimes agree to ~1e-6 of their scale; a Guided IG feature
    # choice flipped by such a difference would show here as a much larger error
    torch.testing.assert_close(ours.attributions, theirs.attributions, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(ours.output_gap, theirs.output_gap, rtol=1e-4, atol=1e-4)


def test_metrics_agree_across_backends(backends, pictures) -> None:  # type: ignore[no-untyped-def]
    onnx, reference = backends
    target = reference.logits(pictures).argmax(1)
    attributions = tig.integrated_gradients(reference, pictures, 0.0, target, 16).attributions
    results = []
    for model in (onnx, reference):
        flips = tig.deletion_insertion(model, pictures, attributions, target, replacement="blur")
        results.append(
            {
                "deletion": flips.deletion_auc,
                "insertion": flips.insertion_auc,
                "infidelity": tig.infidelity(model, pictures, attributions, target),
                "sensitivity": tig.sensitivity_max(
                    model,
                    lambda m, x, t: tig.gradient(m, x, t).attributions,
                    pictures,
                    tig.gradient(model, pictures, target).attributions,
                    target,
                ),
            }
        )
    for key, value in results[1].items():
        torch.testing.assert_close(results[0][key], value, rtol=1e-4, atol=1e-6, msg=key)
