"""Export verification at max-pool ties: where the gradient is not unique, two valid tie rules
disagree, and verification leaves those images out of the gradient comparison only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tig_batch._bundle import InputSpec
from tig_batch.backends import TorchClassifier
from tig_batch.export import export_bundle
from tig_batch.export._verify import tied_images, verify_export

SHAPE = (1, 8, 8)


class LastMaxPool2d(nn.MaxPool2d):
    """A 2x2 tiling max pool that sends the gradient to the *last* maximum of a tied window
    (torch and the export take the first): as valid a gradient, and the same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flip(-2, -1)).flip(-2, -1)


def _classifier(pool: type[nn.MaxPool2d] = nn.MaxPool2d) -> nn.Module:
    """``0.1 x + 0.1``, pooled, then linear: pixels one float32 step apart tie after rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 1), pool(2), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.fill_(0.1)
    return model.eval()


def _autoencoder() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    decoder = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, SHAPE))
    return encoder.eval(), decoder.eval()


def _random(n: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _near_ties(n: int) -> torch.Tensor:
    """Random images whose first window holds 0.5 and the next float32 up: after ``0.1 x + 0.1``
    they are equal in float32 (the tie rule decides) and differ by 6e-9 in float64."""
    images = _random(n, seed=4)
    images[:, 0, :3, :3] = 0.1  # the rest of the window (of 2x2 and of 3x3 pools) lower
    images[:, 0, 0, 0] = 0.5
    images[:, 0, 0, 1] = torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))
    return images


def test_near_ties_count_and_random_images_do_not() -> None:
    model = _classifier()
    assert tied_images(model, _near_ties(3)).all()
    assert not tied_images(model, _random(16)).any()


def test_exact_ties_do_not_count() -> None:
    """Equal pixels give equal values in every implementation, which then all take the first
    maximum (tests/test_export_conv_pool.py checks the export's rule on such windows)."""
    images = _random(4)
    images[:, 0, 0, 1] = images[:, 0, 0, 0]
    assert not tied_images(_classifier(), images).any()


def test_other_pools_and_models_without_pools() -> None:
    images = _near_ties(2)
    ceil = nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(3, 2, ceil_mode=True))
    ceil[0].load_state_dict(_classifier()[0].state_dict())
    assert tied_images(ceil.eval(), images).all()
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    assert not tied_images(flat.eval(), images).any()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "bundle"
    export_bundle(_classifier(), *_autoencoder(), path, InputSpec(SHAPE), ["a", "b", "c"])
    return path


def test_a_tie_rule_difference_is_not_an_export_error(bundle: Path) -> None:
    """The exported graph (first maximum) against a reference taking the last one: their
    gradients differ on the tied images, and verification passes by leaving those out."""
    last = _classifier(LastMaxPool2d)
    images, target = _near_ties(7), torch.zeros(7, dtype=torch.long)
    first_grad = TorchClassifier(_classifier()).logits_and_grad(images, target)[1]
    last_grad = TorchClassifier(last).logits_and_grad(images, target)[1]
    assert (first_grad - last_grad).abs().max() > 0.1 * first_grad.abs().max()  # really differ
    report = verify_export(
        bundle, (last, *_autoencoder()), InputSpec(SHAPE), 3, "logit", images, 1e-4, 3
    )
    assert report["gradient_images_at_ties"] == 8  # 1 + 7 real images; the random ones compared
    assert report["gradient_images"] == 8
    assert report["max_relative_error"]["grad"] < 1e-5


def test_a_wrong_gradient_is_still_caught(bundle: Path) -> None:
    wrong = _classifier()
    with torch.no_grad():
        wrong[3].weight[0, 0] += 1.0
    with pytest.raises(Exception, match="export verification failed"):
        verify_export(bundle, (wrong, *_autoencoder()), InputSpec(SHAPE), 3, "logit", None, 1e-4, 3)
