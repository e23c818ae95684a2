"""ONNX export: classifier gradient graphs, encoder and decoder-JVP graphs, and model bundles.

Installed as ``tig_batch.export``.
"""

from tig_batch.export._bundle import export_bundle
from tig_batch.export._checkpoints import export_checkpoints, verify_images
from tig_batch.export._trace import gradient_graph, jvp_graph, unsupported_ops

__all__ = [
    "export_bundle",
    "export_checkpoints",
    "gradient_graph",
    "jvp_graph",
    "unsupported_ops",
    "verify_images",
]
