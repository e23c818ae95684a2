"""The model boundary: what the engine needs from a classifier and from an autoencoder.

The engine never sees a framework model. It asks a :class:`Classifier` for logits and for the
input-gradient of the explained output, and a :class:`Manifold` for latent codes and decoder
Jacobians. torch (the reference) and ONNX Runtime implement the same two protocols.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

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
