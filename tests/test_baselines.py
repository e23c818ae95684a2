"""Base-points: value ranges, seeds, closed forms, and a reference blur."""

from __future__ import annotations

import pytest
import torch
from scipy.ndimage import gaussian_filter

from tig_batch import BASELINE_KINDS, make_baselines, user_baselines


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(
        (5, 2, 9, 11), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )


@pytest.mark.parametrize("kind", BASELINE_KINDS)
@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 2.0), (0.2, 0.6)])
def test_every_kind_stays_in_range_with_the_input_shape(
    kind: str, value_range: tuple[float, float], pixels: torch.Tensor
) -> None:
    lo, hi = value_range
    inputs = lo + (hi - lo) * pixels
    baselines = make_baselines(kind, inputs, value_range, sigma=1.0)
    assert baselines.shape == inputs.shape and baselines.dtype == inputs.dtype
    assert baselines.min() >= lo and baselines.max() <= hi


def test_zero_is_zero_clipped_to_the_range(pixels: torch.Tensor) -> None:
    assert make_baselines("zero", pixels).abs().max() == 0
    assert (make_baselines("zero", pixels, (0.2, 0.6)) == 0.2).all()
    assert (make_baselines("zero", pixels, (-1.0, 1.0)) == 0).all()


def test_maxdist_takes_the_far_end_of_the_range(pixels: torch.Tensor) -> None:
    baselines = make_baselines("maxdist", pixels, (0.0, 1.0))
    torch.testing.assert_close(baselines, (pixels < 0.5).double())
    distance = (pixels - baselines).abs()
    assert (distance >= torch.maximum(pixels, 1 - pixels) - 1e-15).all()


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_seeds_reproduce_and_do_not_depend_on_the_batch(kind: str, pixels: torch.Tensor) -> None:
    first = make_baselines(kind, pixels, seed=3)
    torch.testing.assert_close(make_baselines(kind, pixels, seed=3), first, rtol=0, atol=0)
    assert not torch.equal(make_baselines(kind, pixels, seed=4), first)
    alone = make_baselines(kind, pixels[3:4], seed=3, sample_ids=torch.tensor([3]))
    torch.testing.assert_close(alone, first[3:4], rtol=0, atol=0)


def test_uniform_and_gaussian_have_the_right_spread() -> None:
    inputs = torch.full((200, 1, 16, 16), 0.5, dtype=torch.float64)
    uniform = make_baselines("uniform", inputs, (-1.0, 3.0))
    assert uniform.mean().item() == pytest.approx(1.0, abs=0.02)
    assert uniform.var().item() == pytest.approx(16 / 12, rel=0.02)
    gaussian = make_baselines("gaussian", inputs, (-10.0, 10.0), sigma=0.3)
    assert (gaussian - inputs).std().item() == pytest.approx(0.3, rel=0.02)


def test_blur_matches_scipy(pixels: torch.Tensor) -> None:
    blurred = make_baselines("blur", pixels, sigma=1.0)
    expected = gaussian_filter(pixels.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    torch.testing.assert_close(blurred, torch.from_numpy(expected))


def test_user_baselines_broadcast_clip_and_refuse_bad_shapes(pixels: torch.Tensor) -> None:
    one_image = torch.linspace(-1, 2, 2 * 9 * 11, dtype=torch.float64).view(2, 9, 11)
    baselines = user_baselines(one_image, pixels)
    assert baselines.shape == pixels.shape
    torch.testing.assert_close(baselines[4], one_image.clamp(0, 1))
    with pytest.raises(ValueError, match="do not broadcast"):
        user_baselines(torch.zeros(3, 9, 11), pixels)


def test_unknown_kind_lists_the_choices(pixels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="zero, uniform, gaussian, maxdist, blur"):
        make_baselines("black", pixels)  # type: ignore[arg-type]
