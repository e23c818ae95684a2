"""Models: architectures, training from shards, and checkpoints that never run code on load."""

from tig_batch.models._arch import ARCHITECTURES, ConvAutoencoder, Normalize, SmallCNN, build
from tig_batch.models._checkpoint import (
    checkpoint_paths,
    ensure_writable,
    factory_file,
    load_autoencoder,
    load_checkpoint,
    load_classifier,
    load_user_autoencoder,
    load_user_model,
    save_checkpoint,
)
from tig_batch.models._train import (
    TrainConfig,
    TrainResult,
    evaluate_autoencoder,
    evaluate_classifier,
    train_autoencoder,
    train_classifier,
)

__all__ = [
    "ARCHITECTURES",
    "ConvAutoencoder",
    "Normalize",
    "SmallCNN",
    "TrainConfig",
    "TrainResult",
    "build",
    "checkpoint_paths",
    "ensure_writable",
    "evaluate_autoencoder",
    "evaluate_classifier",
    "factory_file",
    "load_autoencoder",
    "load_checkpoint",
    "load_classifier",
    "load_user_autoencoder",
    "load_user_model",
    "save_checkpoint",
    "train_autoencoder",
    "train_classifier",
]
