"""The domain style of the synthetic faces: lighting, contrast and invert (another "camera")."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra.utils import instantiate

from fersuite.config import validate_config
from fersuite.data.synthetic import render_faces
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.errors import ConfigError
from tests.data.helpers import instantiation_config_error, same_faces

DEFAULTS: dict[str, Any] = {"lighting": [0.0, 0.0], "contrast": 1.0, "invert": False}


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 48, "size": 32, "seed": 0},
        {"n": 40, "size": 24, "seed": 3, "difficulty": 0.0},  # no random light: lx is +-0
        {"n": 24, "size": 48, "seed": 1001, "difficulty": 1.5, "noise": 0.08},
    ],
)
def test_explicit_default_style_changes_nothing(kw: dict[str, Any]) -> None:
    assert same_faces(render_faces(**kw), render_faces(**kw, **DEFAULTS))
    assert same_faces(render_faces(**kw), render_faces(**kw, lighting=(-0.0, 0), contrast=1))


def test_the_style_draws_no_random_numbers() -> None:
    plain = render_faces(64, size=24, seed=5)
    styled = render_faces(64, size=24, seed=5, lighting=[0.5, -0.3], contrast=0.5, invert=True)
    assert not np.array_equal(plain.images, styled.images)
    assert np.array_equal(plain.expression, styled.expression)
    assert plain.valence.tobytes() == styled.valence.tobytes()
    assert plain.arousal.tobytes() == styled.arousal.tobytes()


def test_a_styled_render_is_deterministic_and_chunk_independent() -> None:
    kw: dict[str, Any] = {"size": 24, "seed": 2, "lighting": [0.4, 0.2], "contrast": 0.7}
    a = render_faces(30, **kw)
    assert same_faces(a, render_faces(30, **kw))
    assert same_faces(a, render_faces(30, **kw, chunk=1))
    assert same_faces(a, render_faces(30, **kw, chunk=7))


@pytest.mark.parametrize("contrast", [0.2, 0.5, 0.8, 1.5, 2.0])
def test_contrast_scales_the_image_around_mid_grey(contrast: float) -> None:
    """The same noisy image, tones scaled around 127.5 (up to rounding and clipping)."""
    plain = render_faces(40, size=32, seed=4).images.astype(np.float64)
    styled = render_faces(40, size=32, seed=4, contrast=contrast).images.astype(np.float64)
    expected = np.clip(127.5 + contrast * (plain - 127.5), 0.0, 255.0)
    # Both images are rounded once: 0.5 for the styled one, contrast * 0.5 for the plain one.
    assert np.abs(styled - expected).max() <= 0.5 + 0.5 * contrast + 1e-9
    spread = np.abs(plain - 127.5).mean()
    styled_spread = np.abs(styled - 127.5).mean()
    if contrast < 1.0:
        assert styled_spread < spread
        assert styled.min() >= math.floor(127.5 - 127.5 * contrast)
        assert styled.max() <= math.ceil(127.5 + 127.5 * contrast)
    else:
        assert styled_spread > spread


def _half_difference(images: np.ndarray, axis: int) -> np.ndarray:
    """Per face: mean of the right (axis 2) or bottom (axis 1) half minus the other half."""
    x = images.astype(np.float64)
    half = x.shape[axis] // 2
    first = np.take(x, np.arange(half), axis=axis).mean(axis=(1, 2))
    second = np.take(x, np.arange(half, x.shape[axis]), axis=axis).mean(axis=(1, 2))
    return second - first


@pytest.mark.parametrize(
    ("lighting", "axis", "sign"),
    [
        ([0.5, 0.0], 2, 1.0),  # brighter on the right
        ([-0.5, 0.0], 2, -1.0),  # brighter on the left
        ([0.0, 0.5], 1, 1.0),  # brighter at the bottom
        ([0.0, -0.5], 1, -1.0),  # brighter at the top
    ],
)
def test_lighting_brightens_one_side(lighting: list[float], axis: int, sign: float) -> None:
    plain = render_faces(200, size=32, seed=6).images
    lit = render_faces(200, size=32, seed=6, lighting=lighting).images
    shift = sign * (_half_difference(lit, axis) - _half_difference(plain, axis))
    # Every face: the lit side gains (clipping may only flatten a face that is already white).
    assert (shift > 0).mean() > 0.95
    assert shift.mean() > 5.0  # grey levels, well above the noise of a half-image mean
    # Over many faces the random light directions cancel; the fixed one does not.
    assert sign * _half_difference(lit, axis).mean() > 5.0
    other = 1 if axis == 2 else 2
    cross = _half_difference(lit, other) - _half_difference(plain, other)
    assert abs(cross.mean()) < 0.5 * shift.mean()


def test_invert_is_the_negative_image() -> None:
    kw: dict[str, Any] = {"size": 24, "seed": 9, "lighting": [0.3, 0.0], "contrast": 0.8}
    plain = render_faces(20, **kw)
    neg = render_faces(20, **kw, invert=True)
    assert np.array_equal(neg.images.astype(np.int64), 255 - plain.images.astype(np.int64))
    assert np.array_equal(neg.expression, plain.expression)


BAD = [
    ({"lighting": [1.5, 0.0]}, "lighting[0]"),
    ({"lighting": [0.0, -2.0]}, "lighting[1]"),
    ({"lighting": [0.0, math.nan]}, "lighting[1]"),
    ({"lighting": [0.1]}, "lighting"),
    ({"lighting": [0.1, 0.2, 0.3]}, "lighting"),
    ({"lighting": 0.5}, "lighting"),
    ({"lighting": "0.5,0"}, "lighting"),
    ({"lighting": [True, 0.0]}, "lighting[0]"),
    ({"contrast": 0.1}, "contrast"),
    ({"contrast": 2.5}, "contrast"),
    ({"contrast": math.inf}, "contrast"),
    ({"contrast": "1"}, "contrast"),
    ({"invert": 1}, "invert"),
    ({"invert": "yes"}, "invert"),
]


@pytest.mark.parametrize(("kwargs", "key"), BAD)
def test_bad_style_is_refused_naming_the_knob(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(key) + " must") as err:
        render_faces(4, size=16, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "key"), BAD)
def test_the_datamodule_refuses_bad_style_in_one_line(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        SyntheticDataModule(num_workers=0, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f"data.{key} must") and "\n" not in msg


def _dm(tmp_path: Path, **kw: Any) -> SyntheticDataModule:
    args: dict[str, Any] = {
        "train_size": 16,
        "val_size": 8,
        "test_size": 8,
        "render_size": 24,
        "num_workers": 0,
        "batch_size": 8,
        "cache_dir": str(tmp_path / "cache"),
    }
    return SyntheticDataModule(**{**args, **kw})


@pytest.mark.parametrize(
    ("name", "value"), [("lighting", [0.6, 0.0]), ("contrast", 0.6), ("invert", True)]
)
def test_a_changed_knob_never_reads_a_stale_cache(tmp_path: Path, name: str, value: Any) -> None:
    plain = _dm(tmp_path)
    plain.setup()
    styled = _dm(tmp_path, **{name: value})
    assert styled.cache_key("train") != plain.cache_key("train")
    styled.setup()
    assert len(list((tmp_path / "cache" / "synthetic").glob("*.npz"))) == 6
    assert not np.array_equal(styled.splits["train"].images, plain.splits["train"].images)
    np.testing.assert_array_equal(
        styled.splits["train"].expression, plain.splits["train"].expression
    )
    expected = render_faces(
        16, size=24, seed=styled._split_seed("train"), **{**DEFAULTS, name: value}
    )
    np.testing.assert_array_equal(styled.splits["train"].images, expected.images)


def test_explicit_defaults_keep_the_cache_key(tmp_path: Path) -> None:
    key = _dm(tmp_path).cache_key("train")
    assert _dm(tmp_path, **DEFAULTS).cache_key("train") == key
    assert _dm(tmp_path, lighting=(0, 0), contrast=1).cache_key("train") == key


def test_synthetic_b_is_a_styled_domain(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    sizes = ["data.train_size=16", "data.val_size=8", "data.test_size=8", "data.num_workers=0"]
    a_cfg = cfg_factory(["data=synthetic", *sizes])
    b_cfg = cfg_factory(["data=synthetic_b", *sizes])
    validate_config(b_cfg)
    a, b = instantiate(a_cfg.data), instantiate(b_cfg.data)
    assert (a.lighting, a.contrast, a.invert) == ((0.0, 0.0), 1.0, False)
    assert b.lighting[0] > 0.0 and b.contrast < 1.0  # side light, washed out
    assert b.render_size == 32 and not b.has_va and len(b.class_names) == 6
    unstyled = SyntheticDataModule(
        num_workers=0, **{k: b_cfg.data[k] for k in ("render_size", "seed", "difficulty", "noise")}
    )
    assert b.cache_key("train") != unstyled.cache_key("train")


def test_a_bad_knob_in_the_config_names_the_key(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["data=synthetic_b", "data.contrast=5.0"])
    message = instantiation_config_error(cfg.data)  # the apps report it, one line
    assert message.startswith("data.contrast must be a finite number in [0.2, 2.0], got 5.0")
