"""Architectures: a small CNN classifier and a convolutional autoencoder.

Only layers whose input gradients (and decoder Jacobians) the ONNX export supports are used,
none in place, and ``forward`` has no data-dependent control flow. Both take images in the
dataset's value range: the classifier normalises inside itself, the decoder ends in a
Sigmoid that maps onto [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tig_batch.errors import ModelError


def _check_geometry(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ModelError(f"{what}: input shape must be (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    if c < 1 or h < 4 or w < 4 or h % 4 or w % 4:
        raise ModelError(
            f"{what}: images of {c}x{h}x{w} do not fit: two 2x poolings need height and width "
            "divisible by 4 (e.g. 28x28 or 32x32); pad or resize the data"
        )
    return c, h, w


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics as buffers saved in the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer(
            "inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def _conv_pool_stack(channels: int) -> list[nn.Module]:
    """conv32-BN-ReLU-pool, conv64-BN-ReLU-pool: the feature stack the classifier and the
    encoder share (a quarter of the height and width, 64 channels)."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((channels, 32), (32, 64)):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(2),
        ]
    return layers


class SmallCNN(nn.Module):
    """conv32-pool-conv64-pool-fc128-fc(classes), with BatchNorm and dropout.

    ``mean``/``std`` are the training data's per-channel pixel statistics; the model takes
    raw images in the dataset's value range.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        c, h, w = _check_geometry(input_shape, "SmallCNN")
        if num_classes < 2:
            raise ModelError(f"SmallCNN needs at least 2 classes, got {num_classes}")
        self.normalize = Normalize(mean or [0.0] * c, std or [1.0] * c)
        self.features = nn.Sequential(*_conv_pool_stack(c))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * (h // 4) * (w // 4), 128),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


class ConvAutoencoder(nn.Module):
    """Encoder conv32-pool-conv64-pool-fc(n); decoder fc-convT64-convT32-conv(C)-Sigmoid.

    BatchNorm after every convolution keeps the ReLUs alive: without it the Sigmoid output
    collapsed to a constant within the first epoch on mnist-5k (test MSE stuck at 0.113).

    ``encoder(x)`` is (B, n) and ``decoder(z)`` is (B, C, H, W) in [0, 1], the range the
    data must be stored in.
    """

    def __init__(self, input_shape: Sequence[int], latent_dim: int = 16) -> None:
        super().__init__()
        c, h, w = _check_geometry(input_shape, "ConvAutoencoder")
        if latent_dim < 1:
            raise ModelError(f"ConvAutoencoder latent size n must be >= 1, got {latent_dim}")
        flat = 64 * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            *_conv_pool_stack(c), nn.Flatten(), nn.Linear(flat, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, flat),
            nn.ReLU(inplace=False),
            nn.Unflatten(1, (64, h // 4, w // 4)),
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=False),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=False),
            nn.Conv2d(32, c, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "small-cnn": SmallCNN,
    "conv-autoencoder": ConvAutoencoder,
}


def build(name: str, args: dict) -> nn.Module:
    """An architecture by its registered name and keyword arguments (as saved in metadata)."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    try:
        return cls(**args)
    except TypeError as exc:
        raise ModelError(f"bad arguments for architecture {name!r}: {exc}") from None
