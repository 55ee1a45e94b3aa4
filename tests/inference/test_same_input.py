"""fersuite-predict serves the model the face it learned from (issue 13): the centre square of
the image with its EXIF orientation applied, from a checkpoint and from its ONNX export.

Before the model card, prediction squashed the whole image and ignored EXIF, while training
(``data=folder``) took the centre square of the upright image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fersuite.cli.predict import run
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from tests._helpers.export import FAST_ONNX

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEGACY = FIXTURES / "legacy_lightweight_cnn.ckpt"
CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
KEYS = [f"prob_{c}" for c in CLASSES] + ["valence", "arousal"]


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth gray pattern with features everywhere (so a crop or a rotation shows)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 10), max(2, w // 10)), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("same_input")
    ckpt = root / "legacy.ckpt"
    shutil.copy(LEGACY, ckpt)
    fast = ExportSettings(latency_runs=0, verify_faces=2, **FAST_ONNX)
    export_checkpoint(ckpt, fast, root / "onnx")
    return {"ckpt": ckpt, "onnx": root / "onnx" / "model.onnx"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    wide = _pattern(120, 300, seed=1)
    Image.fromarray(wide).save(root / "wide.png")
    Image.fromarray(wide[:, 90:210]).save(root / "wide_centre.png")  # its centre square alone
    upright = Image.fromarray(_pattern(160, 120, seed=2)).convert("RGB")
    upright.save(root / "upright.png")
    for tag, stored in (
        (6, upright.transpose(Image.Transpose.ROTATE_90)),  # shown after a 90° CW turn
        (8, upright.transpose(Image.Transpose.ROTATE_270)),  # shown after a 90° CCW turn
    ):
        exif = Image.Exif()
        exif[0x0112] = tag  # Orientation
        stored.save(root / f"exif{tag}.png", exif=exif.tobytes())
        with Image.open(root / f"exif{tag}.png") as f:  # the file really needs its tag
            assert np.array_equal(np.asarray(ImageOps.exif_transpose(f)), np.asarray(upright))
            assert f.size == (160, 120)
    return {p.stem: p for p in root.iterdir()}


def _predict(model: Path, files: list[Path]) -> dict[str, dict[str, object]]:
    rows = run(
        [
            f"ckpt_path={model}",
            f"inputs=[{','.join(map(str, files))}]",
            "output=null",
            "face_detector=none",
        ]
    )
    return {Path(str(r["file"])).stem: r for r in rows}


def _max_diff(a: dict[str, object], b: dict[str, object]) -> float:
    return max(abs(float(a[k]) - float(b[k])) for k in KEYS)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
def test_wide_image_is_its_centre_square(
    models: dict[str, Path], images: dict[str, Path], kind: str
) -> None:
    rows = _predict(models[kind], [images["wide"], images["wide_centre"]])
    assert _max_diff(rows["wide"], rows["wide_centre"]) <= 1e-3


@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
@pytest.mark.parametrize("tag", [6, 8])
def test_exif_rotated_file_is_its_upright_pixels(
    models: dict[str, Path], images: dict[str, Path], kind: str, tag: int
) -> None:
    rows = _predict(models[kind], [images[f"exif{tag}"], images["upright"]])
    assert _max_diff(rows[f"exif{tag}"], rows["upright"]) <= 1e-3


def test_the_model_sees_a_difference(models: dict[str, Path], images: dict[str, Path]) -> None:
    """The cases above are not trivially equal: other crops give other predictions."""
    rows = _predict(models["ckpt"], [images["wide_centre"], images["upright"], images["exif6"]])
    assert _max_diff(rows["wide_centre"], rows["upright"]) > 1e-2
