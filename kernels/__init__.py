"""Fused Triton kernels for tangential IG, each beside a torch twin.

Installed as ``tig_batch.kernels``.
"""
