"""ONNX export: classifier gradient graphs, encoder and decoder-JVP graphs, and model bundles.

Installed as ``tig_batch.export``.
"""

from tig_batch.export._bundle import export_bundle
from tig_batch.export._trace import gradient_graph, jvp_graph, unsupported_ops

__all__ = ["export_bundle", "gradient_graph", "jvp_graph", "unsupported_ops"]
