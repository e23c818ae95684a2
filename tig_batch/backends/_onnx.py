"""The ONNX Runtime backend: the exported gradient and JVP graphs behind the model protocols.

Sessions are created once and reused. On a CUDA device (onnxruntime-gpu present) inputs and
outputs are bound to torch's GPU memory with IO binding, so the IG loop makes no host round
trips; elsewhere the CPU provider runs on numpy views of the tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tig_batch.backends._base import ExplainedOutput
from tig_batch.backends._runtime import Runtime
from tig_batch.errors import ModelError


class _Session:
    """One ``InferenceSession`` and how to feed it torch tensors on its device."""

    def __init__(self, path: Path, runtime: Runtime) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if runtime.threads:
            options.intra_op_num_threads = runtime.threads
        if not runtime.spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[runtime.graph_optimization]
        self.device = torch.device(runtime.device)
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError("device cuda needs onnxruntime-gpu (pip install 'tig-batch[gpu]')")
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {error}") from None
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(
        self, feeds: dict[str, torch.Tensor], output_shapes: list[tuple[int, ...]]
    ) -> list[torch.Tensor]:
        """Run on tensors already on ``self.device``; outputs come back as tensors there too."""
        if self.device.type != "cuda":
            arrays = {name: tensor.detach().cpu().numpy() for name, tensor in feeds.items()}
            return [torch.from_numpy(out) for out in self.session.run(self.output_names, arrays)]
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, tensor in feeds.items():
            tensor = tensor.contiguous()
            binding.bind_input(
                name, "cuda", index, _NUMPY[tensor.dtype], tuple(tensor.shape), tensor.data_ptr()
            )
        outputs = [
            torch.empty(shape, dtype=torch.float32, device=self.device) for shape in output_shapes
        ]
        for name, out in zip(self.output_names, outputs, strict=True):
            binding.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return outputs


_NUMPY = {torch.float32: np.float32, torch.int64: np.int64}


def _on(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to(device=device, dtype=dtype).contiguous()


class OnnxClassifier:
    """A :class:`~tig_batch.backends.Classifier` on an exported ``(x, target) -> (logits, grad)``
    graph, and for logits alone on the forward graph ``x -> logits`` when there is one (a third
    of the work). Computes in float32; results come back in the inputs' dtype and device."""

    def __init__(
        self,
        path: Path,
        output: ExplainedOutput,
        n_classes: int,
        runtime: Runtime | None = None,
        forward: Path | None = None,
    ) -> None:
        runtime = runtime or Runtime()
        self._session = _Session(path, runtime)
        self._forward = None if forward is None else _Session(forward, runtime)
        self.output: ExplainedOutput = output
        self.n_classes = n_classes
        self.name = str(path)

    def logits_and_grad(
        self, inputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = self._session.device
        feeds = {
            "x": _on(inputs, device, torch.float32),
            "target": _on(target, device, torch.int64),
        }
        logits, grad = self._session.run(
            feeds, [(inputs.shape[0], self.n_classes), tuple(inputs.shape)]
        )
        return logits.to(inputs.device, inputs.dtype), grad.to(inputs.device, inputs.dtype)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._forward is None:
            target = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
            return self.logits_and_grad(inputs, target)[0]
        feeds = {"x": _on(inputs, self._forward.device, torch.float32)}
        (logits,) = self._forward.run(feeds, [(inputs.shape[0], self.n_classes)])
        return logits.to(inputs.device, inputs.dtype)


class OnnxManifold:
    """A :class:`~tig_batch.backends.Manifold` on exported encoder and decoder-JVP graphs.

    The Jacobian is assembled from JVPs with one-hot tangents, the runtime's
    ``internal_batch_size`` rows at a time, laid out as (B*n) rows outside the graph so the
    graph keeps a plain batch dimension.
    """

    def __init__(
        self, encoder: Path, decoder_jvp: Path, latent_dim: int, runtime: Runtime | None = None
    ) -> None:
        runtime = runtime or Runtime()
        self._encoder = _Session(encoder, runtime)
        self._jvp = _Session(decoder_jvp, runtime)
        self.latent_dim = latent_dim
        self.internal_batch_size = runtime.internal_batch_size
        self.name = f"{encoder} and {decoder_jvp.name}"

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        device = self._encoder.device
        (codes,) = self._encoder.run(
            {"x": _on(inputs, device, torch.float32)}, [(inputs.shape[0], self.latent_dim)]
        )
        return codes.to(inputs.device, inputs.dtype)

    def decoder_jacobian(self, latents: torch.Tensor) -> torch.Tensor:
        batch, n = latents.shape
        device = self._jvp.device
        codes = _on(latents, device, torch.float32).repeat_interleave(n, dim=0)
        tangents = torch.eye(n, device=device).repeat(batch, 1)
        columns = []
        for start in range(0, batch * n, self.internal_batch_size):
            rows = slice(start, start + self.internal_batch_size)
            decoded_shape = (codes[rows].shape[0], *self._decoded_shape)
            _, jvp = self._jvp.run({"z": codes[rows], "dz": tangents[rows]}, [decoded_shape] * 2)
            columns.append(jvp.flatten(1))
        jacobian = torch.cat(columns).view(batch, n, -1).transpose(1, 2)
        return jacobian.to(latents.device, latents.dtype)

    @property
    def _decoded_shape(self) -> tuple[int, ...]:
        shape = self._jvp.session.get_outputs()[1].shape
        return tuple(int(s) for s in shape[1:])
