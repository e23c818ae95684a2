"""The model boundary: what the engine needs from a classifier and from an autoencoder.

The engine never sees a framework model. It asks a :class:`Classifier` for logits and for the
input-gradient of the explained output, and a :class:`Manifold` for latent codes and decoder
Jacobians. torch (the reference) and ONNX Runtime implement the same two protocols.

The engine calls a model only through :func:`call_logits`, :func:`call_logits_and_grad` and
:func:`call_manifold`, which check what comes back: a model returning logits that are not
(batch, classes), gradients not shaped like its inputs or codes and Jacobians of the wrong
shape fails there with a :class:`~tig_batch.errors.ModelError` that names it, not deep inside
the engine with a broadcasting error.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

from tig_batch.errors import ModelError

ExplainedOutput = Literal["logit", "probability"]


@runtime_checkable
class Classifier(Protocol):
    """A classifier seen through its logits and the input-gradient of one output per sample."""

    output: ExplainedOutput

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) for inputs (B, C, H, W)."""
        ...

    def logits_and_grad(
        self, inputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, classes) and ``grad f_c`` (B, C, H, W) of the explained output."""
        ...


@runtime_checkable
class SecondOrderClassifier(Classifier, Protocol):
    """A classifier whose explained output can be differentiated twice (exact base-point search)."""

    def explained_output(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``f_c`` (B,) as a differentiable function of ``inputs``."""
        ...


@runtime_checkable
class Manifold(Protocol):
    """An autoencoder seen through its encoder and its decoder's Jacobian."""

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Latent codes ``z = E(x)``, shape (B, n)."""
        ...

    def decoder_jacobian(self, latents: torch.Tensor) -> torch.Tensor:
        """``J = dD/dz`` at each code, shape (B, d, n) with ``d = C*H*W``."""
        ...


def explained_value(
    logits: torch.Tensor, target: torch.Tensor, output: ExplainedOutput
) -> torch.Tensor:
    """``f_c`` (B,) from logits: the target's logit, or its softmax probability."""
    if output == "probability":
        logits = torch.softmax(logits, dim=1)
    elif output != "logit":
        raise ValueError(f"explained output must be 'logit' or 'probability', got {output!r}")
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def model_name(model: object) -> str:
    """What errors call a model: its ``name`` when it has one, else its type."""
    return str(getattr(model, "name", None) or type(model).__name__)


def call_logits(model: Classifier, inputs: torch.Tensor) -> torch.Tensor:
    """``model.logits(inputs)``, checked to be (batch, classes)."""
    return _checked_logits(model, model.logits(inputs), inputs)


def call_logits_and_grad(
    model: Classifier, inputs: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.logits_and_grad(inputs, target)``: logits checked to be (batch, classes), the
    gradient to be shaped like the inputs."""
    logits, grad = model.logits_and_grad(inputs, target)
    if tuple(grad.shape) != tuple(inputs.shape):
        raise ModelError(
            f"{model_name(model)}: the input gradient has shape {tuple(grad.shape)}; expected "
            f"the inputs' shape {tuple(inputs.shape)}"
        )
    return _checked_logits(model, logits, inputs), grad


def _checked_logits(model: Classifier, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2 or logits.shape[0] != inputs.shape[0] or logits.shape[1] < 1:
        raise ModelError(
            f"{model_name(model)}: logits have shape {tuple(logits.shape)}; expected "
            f"(batch, classes) = ({inputs.shape[0]}, classes) for inputs of shape "
            f"{tuple(inputs.shape)}"
        )
    return logits


def call_manifold(manifold: Manifold, inputs: torch.Tensor) -> torch.Tensor:
    """The decoder Jacobian (B, d, n) at each input's code, codes and Jacobian checked."""
    batch, d = inputs.shape[0], inputs[0].numel()
    codes = manifold.encode(inputs)
    if codes.dim() != 2 or codes.shape[0] != batch:
        raise ModelError(
            f"{model_name(manifold)}: codes have shape {tuple(codes.shape)}; expected "
            f"(batch, n) = ({batch}, n) for inputs of shape {tuple(inputs.shape)}"
        )
    jacobian = manifold.decoder_jacobian(codes)
    if tuple(jacobian.shape) != (batch, d, codes.shape[1]):
        raise ModelError(
            f"{model_name(manifold)}: the decoder Jacobian has shape {tuple(jacobian.shape)}; "
            f"expected (batch, d, n) = {(batch, d, codes.shape[1])} for inputs of shape "
            f"{tuple(inputs.shape)}"
        )
    return jacobian
