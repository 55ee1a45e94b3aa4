"""Shared checks for report files."""

from __future__ import annotations

from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path, min_side: int = 100) -> None:
    """The file exists, starts with the PNG signature and PIL decodes a sizeable image."""
    from PIL import Image

    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert len(data) > 0
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        assert min(img.size) >= min_side, img.size
