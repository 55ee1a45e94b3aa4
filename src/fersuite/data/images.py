"""Decoding image files of any mode into uint8 gray or RGB, with one-line errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fersuite.errors import ImageReadError

ColorMode = Literal["L", "RGB"]

#: File extensions read from image folders (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def color_mode(in_chans: int) -> ColorMode:
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans={in_chans}; fersuite supports 1 (grayscale) or 3 (RGB)")
    return "L" if in_chans == 1 else "RGB"


def open_image(
    path: Path,
    mode: ColorMode,
    min_scale: float | Callable[[tuple[int, int]], float] | None = None,
    exif_transpose: bool = False,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` fully and convert it to ``mode``.

    Returns the image and the size of the stored image. With ``min_scale`` < 1 (a number,
    or a function of the stored size) a JPEG may be decoded at a reduced size (DCT scaling)
    no smaller than ``min_scale`` times the stored size; coordinates in stored-image pixels
    must then be scaled by ``img.size / size``.
    Handles palette, alpha, CMYK, 1-bit, 16-bit and float images; raises
    :class:`ImageReadError` for missing, unreadable, corrupt or truncated files.
    """
    try:
        img = Image.open(path)
        full_size = img.size
        scale = min_scale(full_size) if callable(min_scale) else min_scale
        if scale is not None and scale < 1.0 and img.format == "JPEG":
            w, h = full_size
            img.draft(mode, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        img.load()
    except FileNotFoundError:
        raise ImageReadError("image not found") from None
    except UnidentifiedImageError:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"corrupt or truncated image ({exc})") from None
    if img.width < 1 or img.height < 1:
        raise ImageReadError(f"empty image ({img.width}×{img.height})")
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    try:
        return to_mode(img, mode), full_size
    except ValueError as exc:  # a mode PIL cannot convert (e.g. a LAB TIFF)
        raise ImageReadError(f"unsupported {img.mode} image ({exc})") from None


def to_mode(img: Image.Image, mode: ColorMode) -> Image.Image:
    """Convert any PIL mode to 8-bit ``L`` or ``RGB`` (16-bit data scaled, not clipped)."""
    if img.mode == mode:
        return img
    if img.mode in _SIXTEEN_BIT or img.mode == "F":
        arr = np.asarray(img)
        if img.mode == "F":
            arr8 = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        elif arr.size and int(arr.max()) <= 255 and img.mode == "I":
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = (np.clip(arr, 0, 65535).astype(np.uint32) * 255 // 65535).astype(np.uint8)
        gray = Image.fromarray(arr8, "L")
        return gray if mode == "L" else gray.convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        # Composite over black: transparent pixels carry no face.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert(mode)


def crop_resize(
    img: Image.Image,
    box: tuple[float, float, float, float],
    size: int,
) -> np.ndarray:
    """Crop ``box`` (left, top, right, bottom; may extend past the image: padded black) and
    resize it to ``size``×``size``; returns (size, size) or (size, size, 3) uint8."""
    left, top, right, bottom = (round(v) for v in box)
    if right <= left or bottom <= top:
        raise ImageReadError(f"empty crop box {box}")
    crop = img.crop((left, top, right, bottom))
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.uint8)
