"""Image decoding: odd modes to 8-bit gray/RGB, and one-line errors for bad files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.data.faces import Box, load_face
from fersuite.data.images import crop_resize, open_image, to_mode
from fersuite.errors import ImageReadError


@pytest.mark.parametrize(
    ("make", "rgb"),
    [
        (lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 4), 200, np.int32)), (200, 200, 200)),
        (lambda: Image.fromarray(np.full((4, 4), 300.0, np.float32)), (255, 255, 255)),
        (lambda: Image.new("RGBA", (4, 4), (200, 100, 50, 0)), (0, 0, 0)),
        (lambda: Image.new("RGBA", (4, 4), (200, 100, 50, 255)), (200, 100, 50)),
        (lambda: Image.new("CMYK", (4, 4), (255, 0, 0, 0)), (0, 255, 255)),
        (lambda: Image.new("1", (4, 4), 0), (0, 0, 0)),
    ],
)
def test_modes_convert(make, rgb: tuple[int, int, int]) -> None:  # type: ignore[no-untyped-def]
    out = np.asarray(to_mode(make(), "RGB"))
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], rgb)
    gray = np.asarray(to_mode(make(), "L"))
    assert gray.shape == (4, 4)
    assert abs(int(gray[0, 0]) - round(np.dot(rgb, [0.299, 0.587, 0.114]))) <= 1


def test_palette_with_transparency_converts_without_warning(tmp_path: Path) -> None:
    img = Image.new("P", (6, 6), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.info["transparency"] = 0
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, size = open_image(path, "RGB")
    assert size == (6, 6)
    np.testing.assert_array_equal(np.asarray(out)[0, 0], (10, 200, 30))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "image not found"),
        (b"", "not a readable image"),
        (b"plain text", "not a readable image"),
        ("half-jpeg", "corrupt or truncated image"),
        ("half-png", "corrupt or truncated image"),
    ],
)
def test_bad_files_raise_one_line(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "x.jpg"
    if content in ("half-jpeg", "half-png"):
        fmt = "JPEG" if content == "half-jpeg" else "PNG"
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=expected) as err:
        open_image(path, "RGB")
    assert "\n" not in str(err.value)


def test_crop_resize_and_empty_box(tmp_path: Path) -> None:
    img = Image.new("RGB", (10, 10), (5, 6, 7))
    out = crop_resize(img, (-5, -5, 5, 5), 4)  # half outside: padded black
    assert out.shape == (4, 4, 3) and out[0, 0].max() == 0 and tuple(out[3, 3]) == (5, 6, 7)
    with pytest.raises(ImageReadError, match="empty crop box"):
        crop_resize(img, (3, 3, 3, 8), 4)
    path = tmp_path / "one.png"
    Image.new("L", (1, 1), 77).save(path)
    face, found = load_face(path, "L", 8)
    assert found and face.shape == (8, 8) and int(face.mean()) == 77
    with pytest.raises(ImageReadError, match="lies outside"):
        load_face(path, "L", 8, box=Box(5, 5, 2, 2))
