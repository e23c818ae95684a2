"""ONNX export of classifiers and autoencoders.

Installed as ``tig_batch.export``: forward and input-gradient graphs, decoder JVP graphs.
"""
