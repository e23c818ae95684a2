"""The torch backend: the reference implementation of the model boundary, by autograd."""

from __future__ import annotations

import torch
from torch import nn

from tig_batch.backends._base import ExplainedOutput, explained_value
from tig_batch.backends._runtime import DEFAULT_INTERNAL_BATCH_SIZE


class TorchClassifier:
    """Wrap an ``nn.Module`` mapping images (B, C, H, W) to logits (B, classes).

    The module is put in eval mode; its parameters are left untouched (no gradients are kept
    for them). Inputs must be on the module's device and in its dtype.
    """

    def __init__(self, module: nn.Module, output: ExplainedOutput = "logit") -> None:
        if output not in ("logit", "probability"):
            raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
        self.module = module.eval()
        self.output: ExplainedOutput = output
        self.name = f"torch classifier {type(module).__name__}"

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(inputs)

    def explained_output(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return explained_value(self.module(inputs), target, self.output)

    def logits_and_grad(
        self, inputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            inputs = inputs.detach().requires_grad_(True)
            logits = self.module(inputs)
            value = explained_value(logits, target, self.output)
            (grad,) = torch.autograd.grad(value.sum(), inputs)
        return logits.detach(), grad


class TorchManifold:
    """Wrap an autoencoder's ``encoder`` (images to (B, n)) and ``decoder`` ((B, n) to images).

    The decoder Jacobian is built column by column with forward-mode products: the (B*n)
    codes and one-hot tangents are laid out as one batch, evaluated ``internal_batch_size`` at
    a time, which is also the layout the ONNX JVP graph uses.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    ) -> None:
        self.encoder = encoder.eval()
        self.decoder = decoder.eval()
        self.internal_batch_size = internal_batch_size
        self.name = f"torch autoencoder ({type(encoder).__name__}, {type(decoder).__name__})"

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(inputs).flatten(1)

    def decoder_jacobian(self, latents: torch.Tensor) -> torch.Tensor:
        batch, n = latents.shape
        codes = latents.repeat_interleave(n, dim=0)
        tangents = torch.eye(n, dtype=latents.dtype, device=latents.device).repeat(batch, 1)
        columns = []
        with torch.no_grad():
            for start in range(0, batch * n, self.internal_batch_size):
                chunk = slice(start, start + self.internal_batch_size)
                _, jvp = torch.func.jvp(self.decoder, (codes[chunk],), (tangents[chunk],))
                columns.append(jvp.flatten(1))
        return torch.cat(columns).view(batch, n, -1).transpose(1, 2)
