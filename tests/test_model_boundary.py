"""The model boundary checks what a model returns and names the model when it is wrong."""

from __future__ import annotations

import pytest
import torch
from conftest import relu_cnn
from torch import nn

import tig_batch as tig
from tig_batch.errors import ModelError


class Wrong:
    """A classifier whose logits or gradients come back in the wrong shape."""

    output = "logit"
    name = "my-model"

    def __init__(self, logits: str = "ok", grad: str = "ok") -> None:
        self.model = tig.TorchClassifier(relu_cnn())
        self.bad_logits, self.bad_grad = logits, grad

    def _logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.bad_logits == "flat":
            return logits.flatten()
        if self.bad_logits == "short":
            return logits[1:]
        return logits

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._logits(self.model.logits(inputs))

    def logits_and_grad(self, inputs, target):  # type: ignore[no-untyped-def]
        logits, grad = self.model.logits_and_grad(inputs, target)
        if self.bad_grad == "flat":
            grad = grad.flatten(1)
        return self._logits(logits), grad


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Wrong(logits="flat"), r"my-model: logits have shape \(20,\); expected \(batch, "
         r"classes\) = \(4, classes\) for inputs of shape \(4, 1, 8, 8\)"),
        (Wrong(logits="short"), r"my-model: logits have shape \(3, 5\)"),
        (Wrong(grad="flat"), r"my-model: the input gradient has shape \(\d+, 64\); expected the "
         r"inputs' shape \(\d+, 1, 8, 8\)"),
    ],
)  # fmt: skip
def test_wrong_shapes_from_a_classifier_are_a_model_error_naming_it(
    images: torch.Tensor, model: Wrong, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        tig.integrated_gradients(model, images, n_steps=4)  # type: ignore[arg-type]


def test_wrong_shapes_from_an_autoencoder_are_a_model_error_naming_it(
    images: torch.Tensor,
) -> None:
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    flat_decoder = nn.Linear(3, 32).double()  # 32 outputs for 64 pixels
    with pytest.raises(ModelError, match=r"torch autoencoder \(Sequential, Linear\): the "
                       r"decoder Jacobian has shape \(4, 32, 3\); expected \(batch, d, n\) = "
                       r"\(4, 64, 3\)"):  # fmt: skip
        tig.tangent_space(tig.TorchManifold(encoder, flat_decoder), images)

    class Cube:
        name = "cube-codes"

        def encode(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs[:, :, :2, :2]

        def decoder_jacobian(self, latents: torch.Tensor) -> torch.Tensor:
            raise AssertionError("not reached: the codes are refused first")

    with pytest.raises(ModelError, match=r"cube-codes: codes have shape \(4, 1, 2, 2\); "
                       r"expected \(batch, n\) = \(4, n\)"):  # fmt: skip
        tig.tangent_space(Cube(), images)  # type: ignore[arg-type]


def test_a_bundle_names_its_graph(digits_bundle, images: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    loaded = tig.load_bundle(digits_bundle)
    assert loaded.classifier.name.endswith("classifier.onnx")  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match=r"classifier\.onnx: logits have shape"):
        tig.backends.call_logits(Flat(loaded.classifier), images.float())


class Flat:
    """A bundle's classifier returning its logits flattened."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.name, self.output = inner, inner.name, inner.output

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(inputs).flatten()
