"""Adapting one normalised batch to another model's input spec."""

from __future__ import annotations

import pytest
import torch

from fersuite.distill.adapt import adapt_images, same_input, spec_from
from fersuite.types import InputSpec

GRAY48 = InputSpec(48, 1, (0.5,), (0.5,))
EMONET = InputSpec(256, 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
IMAGENET224 = InputSpec(224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_same_spec_is_returned_untouched() -> None:
    x = torch.randn(2, 1, 48, 48)
    assert adapt_images(x, GRAY48, InputSpec(48, 1, (0.5,), (0.5,))) is x
    assert same_input(GRAY48, spec_from(48, 1, [0.5], [0.5]))
    assert not same_input(GRAY48, EMONET)


def test_gray_normalised_to_emonet_rgb_unit_range() -> None:
    pixels = torch.rand(2, 1, 48, 48)
    x = (pixels - 0.5) / 0.5
    out = adapt_images(x, GRAY48, EMONET)
    assert out.shape == (2, 3, 256, 256)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    # a constant image stays the same constant after resizing
    const = torch.full((1, 1, 48, 48), (0.3 - 0.5) / 0.5)
    assert torch.allclose(adapt_images(const, GRAY48, EMONET), torch.full((1, 3, 256, 256), 0.3))


def test_rgb_to_gray_uses_luma_and_renormalises() -> None:
    rgb = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    x = (rgb - torch.tensor(IMAGENET224.mean).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET224.std
    ).view(1, 3, 1, 1)
    out = adapt_images(x, IMAGENET224, GRAY48)
    luma = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 0.9
    assert out.shape == (1, 1, 48, 48)
    assert torch.allclose(out, torch.full_like(out, (luma - 0.5) / 0.5), atol=1e-5)


def test_round_trip_through_another_normalisation_is_exact() -> None:
    x = torch.randn(2, 3, 224, 224)
    other = InputSpec(224, 3, (0.5,), (0.25,))
    back = adapt_images(adapt_images(x, IMAGENET224, other), other, IMAGENET224)
    assert torch.allclose(back, x, atol=1e-5)


def test_downsizing_is_antialiased() -> None:
    # a 1-pixel checkerboard averages to grey when shrunk; plain bilinear would alias
    board = (torch.arange(64).view(1, -1) + torch.arange(64).view(-1, 1)) % 2
    x = ((board.float() - 0.5) / 0.5).view(1, 1, 64, 64)
    out = adapt_images(x, InputSpec(64, 1), InputSpec(16, 1))
    assert out.abs().max() < 0.2


def test_mismatched_inputs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="channels but its spec says"):
        adapt_images(torch.zeros(1, 3, 48, 48), GRAY48, EMONET)
    with pytest.raises(ValueError, match="mean has 2 values for 3 channels"):
        spec_from(64, 3, [0.5, 0.5], [0.5], "teacher")
    with pytest.raises(ValueError, match="std"):
        spec_from(64, 1, [0.5], [0.0], "data")
