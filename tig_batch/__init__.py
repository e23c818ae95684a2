"""tig-batch: tangentially aligned Integrated Gradients at dataset scale."""

__version__ = "0.1.0"
