"""Fuzzed image files through the datasets' decoder (``fersuite.data.images`` / ``faces``):
any mode, size, truncation or corruption gives uint8 faces or an ``ImageReadError`` — never
another exception, a hang, or a huge decode."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fersuite.data.faces import load_face
from fersuite.data.images import open_image
from fersuite.errors import ImageReadError

#: (PIL mode, bytes per pixel, formats that can store it)
MODES = [
    ("1", None, ["PNG", "BMP", "TIFF"]),
    ("L", 1, ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]),
    ("P", 1, ["PNG", "BMP", "GIF"]),
    ("LA", 2, ["PNG"]),
    ("RGB", 3, ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]),
    ("RGBA", 4, ["PNG", "TIFF", "WEBP"]),
    ("CMYK", 4, ["JPEG", "TIFF"]),
    ("I;16", 2, ["PNG", "TIFF"]),
    ("I", 4, ["TIFF"]),
    ("F", 4, ["TIFF"]),
]
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def images(draw: st.DrawFn) -> tuple[str, bytes]:
    mode, bpp, formats = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(formats))
    w = draw(st.integers(1, 40))
    h = draw(st.integers(1, 40))
    n = ((w + 7) // 8) * h if bpp is None else w * h * bpp
    data = draw(st.binary(min_size=n, max_size=n))
    img = Image.frombytes(mode, (w, h), data)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return fmt, buf.getvalue()


def _write(tmp_path: Path, payload: bytes, name: str = "face.img") -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


@SETTINGS
@given(image=images(), gray=st.booleans(), size=st.sampled_from([1, 8, 16]))
def test_every_mode_and_size_gives_uint8_faces(
    tmp_path: Path, image: tuple[str, bytes], gray: bool, size: int
) -> None:
    _, payload = image
    face, _ = load_face(_write(tmp_path, payload), "L" if gray else "RGB", size)
    assert face.dtype == np.uint8
    assert face.shape == ((size, size) if gray else (size, size, 3))


@SETTINGS
@given(image=images(), cut=st.floats(0.0, 0.99))
def test_truncated_files_decode_or_fail_clearly(
    tmp_path: Path, image: tuple[str, bytes], cut: float
) -> None:
    _, payload = image
    truncated = payload[: int(len(payload) * cut)]
    try:
        face, _ = load_face(_write(tmp_path, truncated), "L", 8)
    except ImageReadError as exc:
        assert "\n" not in str(exc)
    else:
        assert face.shape == (8, 8) and face.dtype == np.uint8


@SETTINGS
@given(image=images(), data=st.data())
def test_corrupted_bytes_decode_or_fail_clearly(
    tmp_path: Path, image: tuple[str, bytes], data: st.DataObject
) -> None:
    fmt, payload = image
    raw = bytearray(payload)
    # JPEG frame headers (sizes) sit in the first bytes; flips there are covered by the
    # explicit huge-size tests below, keep the fuzz to the body so decodes stay small.
    start = min(len(raw) - 1, 200) if fmt == "JPEG" else 0
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(start, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        face, _ = load_face(_write(tmp_path, bytes(raw)), "RGB", 8)
    except ImageReadError as exc:
        assert "\n" not in str(exc)
    else:
        assert face.shape == (8, 8, 3) and face.dtype == np.uint8


@SETTINGS
@given(junk=st.binary(min_size=0, max_size=256))
def test_random_bytes_are_not_images(tmp_path: Path, junk: bytes) -> None:
    with pytest.raises(ImageReadError):
        open_image(_write(tmp_path, junk), "L")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width``×``height`` 8-bit gray, with one tiny IDAT chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("w", "h"), [(100_000, 100_000), (65_535, 65_535), (1, 2**31 - 1)])
def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    assert w * h > 2 * (Image.MAX_IMAGE_PIXELS or 0)  # PIL's bomb limit is active
    with pytest.raises(ImageReadError, match="too large to decode safely"):
        open_image(_write(tmp_path, _png_header_only(w, h), "bomb.png"), "L")


def test_declared_size_larger_than_the_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        open_image(_write(tmp_path, _png_header_only(3000, 3000), "short.png"), "L")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="image not found"):
        load_face(tmp_path / "nope.jpg", "L", 8)
