"""Built-in "synthetic faces": a procedurally rendered stand-in for a real FER dataset.

Real facial-expression datasets cannot be downloaded everywhere, so the default runs use
grayscale faces drawn here with pure numpy. The expression is carried by facial geometry
only — mouth curvature, opening and width, a one-sided lip-corner raise (contempt), brow
height and angle, eye opening, teeth, brow furrows and nose wrinkles — on top of random
nuisance factors: identity (face shape, eye spacing and size, brow thickness, mouth and
nose placement, skin, hair and background tones), pose (translation, in-plane rotation,
scale), lighting (direction and strength of a gradient), blur (edge softness) and noise.
A *domain style* applies to every face alike (:func:`check_style`): a fixed lighting gradient
added to each face's random one, a contrast around mid-grey and an optional negative image, so
that a second dataset can look like another camera.

Each sample has an *intensity* in [0.25, 1] that scales both the geometric deviation from
the neutral face and the valence/arousal target (the class's circumplex position), so VA
correlates with the class without being a function of it, and weak expressions are
genuinely ambiguous.

Rendering is vectorised over ``(chunk, H, W)`` arrays: every per-pixel coordinate is mapped
into each sample's face frame (the coordinate grid is rotated and scaled, not the image),
and every part is a soft mask — a smooth step of an (approximate) signed distance to an
ellipse, a line segment or a curve. All per-sample parameters are drawn up front, and only
IEEE-exact operations touch the pixel arrays, so a seed gives byte-identical output
whatever the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fersuite.labels import CANONICAL_CLASSES
from fersuite.utils.progress import track

__all__ = [
    "CLASS_VA",
    "EXPRESSION_PARAMS",
    "SyntheticFaces",
    "check_style",
    "render_faces",
    "save_grid_png",
]

_F = np.float32

#: Valence/arousal of each canonical class at full intensity (circumplex positions).
CLASS_VA: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.75, 0.35),
    "sad": (-0.65, -0.35),
    "surprise": (0.2, 0.75),
    "fear": (-0.55, 0.7),
    "disgust": (-0.65, 0.35),
    "anger": (-0.6, 0.65),
    "contempt": (-0.45, 0.2),
}

#: Names of the expression parameters (deviations from the neutral face, face-frame units:
#: the face is about 1.2 wide and 1.6 high, y points down).
_PARAM_NAMES: tuple[str, ...] = (
    "curve",  # lip-corner raise (+ smile, - frown)
    "width",  # change of the mouth half-width
    "open_top",  # upper-lip lift at the mouth centre
    "open_bot",  # jaw drop at the mouth centre
    "asym",  # one-sided (right-hand) lip-corner raise
    "mouth_y",  # vertical shift of the mouth
    "eye_open",  # relative change of the eye opening
    "brow_raise",  # brow lift (both ends)
    "brow_tilt",  # inner end above outer end (+ sad/fear, - anger)
    "brow_in",  # inner brow ends drawn towards the midline (negative)
    "teeth",  # how much of the opening shows teeth
    "furrow",  # vertical creases between the brows
    "wrinkle",  # horizontal creases across the nose bridge
)

#: Deviation from neutral of each class at full intensity, in the order of ``_PARAM_NAMES``.
EXPRESSION_PARAMS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {
        "curve": 0.11,
        "width": 0.06,
        "open_bot": 0.06,
        "eye_open": -0.35,
        "brow_raise": 0.01,
        "teeth": 1.0,
    },
    "sad": {
        "curve": -0.08,
        "width": -0.02,
        "mouth_y": 0.02,
        "eye_open": -0.25,
        "brow_tilt": 0.09,
        "brow_in": -0.01,
    },
    "surprise": {
        "width": -0.08,
        "open_top": 0.06,
        "open_bot": 0.13,
        "eye_open": 0.7,
        "brow_raise": 0.1,
    },
    "fear": {
        "curve": -0.03,
        "width": 0.05,
        "open_top": 0.03,
        "open_bot": 0.09,
        "eye_open": 0.55,
        "brow_raise": 0.06,
        "brow_tilt": 0.07,
        "brow_in": -0.02,
        "teeth": 0.6,
    },
    "disgust": {
        "curve": -0.05,
        "width": -0.03,
        "open_top": 0.035,
        "mouth_y": -0.02,
        "eye_open": -0.45,
        "brow_raise": -0.04,
        "brow_tilt": -0.03,
        "teeth": 0.7,
        "wrinkle": 1.0,
    },
    "anger": {
        "curve": -0.025,
        "width": -0.05,
        "eye_open": -0.1,
        "brow_raise": -0.06,
        "brow_tilt": -0.12,
        "brow_in": -0.03,
        "furrow": 1.0,
    },
    "contempt": {"asym": 0.09, "width": -0.01, "eye_open": -0.1, "brow_raise": 0.01},
}

_INTENSITY_RANGE = (0.25, 1.0)
#: Pixels rendered per vectorised step at most (float32 temporaries of 512 KiB).
_STEP_PIXELS = 2**17
_ZOOM = 1.15  # the face fills most of the crop, as in FER2013 / AffectNet crops
_VA_NOISE = 0.08
#: Bounds of the domain-style knobs (see :func:`check_style`).
_LIGHTING_RANGE = (-1.0, 1.0)
_CONTRAST_RANGE = (0.2, 2.0)


@dataclass(frozen=True)
class SyntheticFaces:
    """A rendered dataset: images with expression labels and valence/arousal targets."""

    images: np.ndarray  # uint8 (N, H, W)
    expression: np.ndarray  # int64 (N,), 0..7 canonical order
    valence: np.ndarray  # float32 (N,), in [-1, 1]
    arousal: np.ndarray  # float32 (N,), in [-1, 1]

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def _check_float(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi:
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return v


def check_style(
    lighting: object = (0.0, 0.0), contrast: object = 1.0, invert: object = False
) -> tuple[tuple[float, float], float, bool]:
    """Checked domain-style knobs: ``(lighting, contrast, invert)``.

    ``lighting`` is a pair ``[lx, ly]`` (each in [-1, 1]) added to every face's lighting
    gradient (the image is multiplied by ``1 + lx * u + ly * v``, with ``u`` and ``v`` in
    [-1, 1] from left to right and top to bottom); ``contrast`` (in [0.2, 2]) scales the
    clipped image, noise included, around mid-grey (0.5), as a camera's tone curve would, so
    it changes the look but not the signal-to-noise ratio; ``invert`` renders the negative
    image. A bad value raises ValueError naming the knob (one line).
    """
    if isinstance(lighting, (str, bytes)) or not isinstance(lighting, Sequence):
        raise ValueError(f"lighting must be a pair [lx, ly] of numbers, got {lighting!r}")
    if len(lighting) != 2:
        raise ValueError(f"lighting must be a pair [lx, ly] of numbers, got {list(lighting)!r}")
    lo, hi = _LIGHTING_RANGE
    lx = _check_float("lighting[0]", lighting[0], lo, hi)
    ly = _check_float("lighting[1]", lighting[1], lo, hi)
    c = _check_float("contrast", contrast, *_CONTRAST_RANGE)
    if not isinstance(invert, (bool, np.bool_)):
        raise ValueError(f"invert must be true or false, got {invert!r}")
    return (lx, ly), c, bool(invert)


# --------------------------------------------------------------------------------------------
# Per-sample parameters
# --------------------------------------------------------------------------------------------


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """n // 8 samples per class, the remainder going to the first classes, shuffled."""
    k = len(CANONICAL_CLASSES)
    labels = np.arange(n, dtype=np.int64) % k
    return labels[rng.permutation(n)]


def _sample_params(
    n: int,
    rng: np.random.Generator,
    difficulty: float,
    noise: float,
    lighting: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Draw labels, VA targets and every per-sample rendering parameter (float32 arrays).

    ``lighting`` is added to every sample's random gradient; it draws nothing from ``rng``.
    """
    d = difficulty
    labels = _balanced_labels(n, rng)
    intensity = rng.uniform(*_INTENSITY_RANGE, size=n)

    table = np.array(
        [[EXPRESSION_PARAMS[c].get(p, 0.0) for p in _PARAM_NAMES] for c in CANONICAL_CLASSES]
    )
    # Individual style: each expression parameter varies a little around the class value.
    style = 1.0 + 0.2 * rng.uniform(-1.0, 1.0, size=(n, len(_PARAM_NAMES)))
    expr = table[labels] * (intensity[:, None] * style)
    e = {name: expr[:, i] for i, name in enumerate(_PARAM_NAMES)}

    va_table = np.array([CLASS_VA[c] for c in CANONICAL_CLASSES])
    va = va_table[labels] * intensity[:, None] + rng.normal(0.0, _VA_NOISE, size=(n, 2))
    va = np.clip(va, -1.0, 1.0)

    def spread(centre: float, half: float) -> np.ndarray:
        # Identity factor: canonical value at difficulty 0, uniform spread at difficulty d.
        return centre + d * half * rng.uniform(-1.0, 1.0, size=n)

    p: dict[str, np.ndarray] = {}
    # Pose.
    angle = np.deg2rad(spread(0.0, 15.0))
    scale = _ZOOM * spread(1.0, 0.1)
    p["cos"] = np.cos(angle) / scale
    p["sin"] = np.sin(angle) / scale
    p["tx"] = spread(0.0, 0.08)
    p["ty"] = spread(0.0, 0.08)
    # Blur: edge half-width in pixels (turned into face-frame units below).
    blur_px = 0.6 + d * 0.9 * rng.uniform(0.0, 1.0, size=n)
    # Face shape and tones.
    p["fa"] = spread(0.6, 0.06)
    p["fb"] = spread(0.78, 0.06)
    p["taper"] = spread(0.14, 0.08)
    skin = np.clip(spread(0.62, 0.2), 0.15, 0.95)
    p["skin"] = skin
    p["shade"] = spread(0.22, 0.1)
    bg = np.clip(spread(0.3, 0.25), 0.0, 1.0)
    # Keep a minimum face/background contrast.
    too_close = np.abs(bg - skin) < 0.12
    bg = np.where(too_close, np.where(skin > 0.5, skin - 0.3, skin + 0.3), bg)
    p["bg"] = bg
    hair_on = rng.uniform(size=n) < (1.0 - 0.15 * min(d, 1.0))
    p["hair"] = np.where(hair_on, 1.0, 0.0)
    p["hair_tone"] = np.clip(spread(0.15, 0.12), 0.0, 1.0)
    p["hairline"] = spread(-0.5, 0.08)
    # Eyes.
    p["ex"] = spread(0.25, 0.03)
    p["ey"] = spread(-0.1, 0.03)
    p["erx"] = spread(0.1, 0.015)
    p["ery"] = spread(0.052, 0.01) * np.maximum(1.0 + e["eye_open"], 0.25)
    p["iris"] = spread(0.047, 0.007)
    p["gaze"] = spread(0.0, 0.02)
    p["sclera"] = np.clip(skin + spread(0.3, 0.06), 0.0, 1.0)
    p["iris_tone"] = np.clip(spread(0.12, 0.08), 0.0, 0.5)
    # Brows.
    gap = spread(0.12, 0.02)
    yb = p["ey"] - gap - e["brow_raise"]
    p["b_x0"] = p["ex"] - spread(0.11, 0.015) + e["brow_in"]
    p["b_x1"] = p["ex"] + spread(0.12, 0.015)
    p["b_y0"] = yb - 0.5 * e["brow_tilt"]
    p["b_y1"] = yb + 0.5 * e["brow_tilt"] + spread(0.0, 0.015)
    p["b_arch"] = spread(0.02, 0.015)
    p["b_thick"] = spread(0.032, 0.01)
    p["brow_tone"] = np.clip(np.minimum(p["hair_tone"] + 0.1, skin - 0.2), 0.0, 1.0)
    # Nose.
    p["ny"] = spread(0.2, 0.03)
    p["nx"] = spread(0.055, 0.01)
    # Mouth.
    p["my"] = spread(0.42, 0.04) + e["mouth_y"]
    p["mw"] = spread(0.2, 0.03) + e["width"]
    p["curve"] = spread(0.0, 0.015) + e["curve"]
    p["asym"] = e["asym"]
    p["open_top"] = e["open_top"]
    p["open_bot"] = e["open_bot"]
    p["lip_u"] = spread(0.022, 0.008)
    p["lip_l"] = spread(0.03, 0.01)
    p["lip_tone"] = skin * spread(0.72, 0.08)
    p["teeth"] = np.clip(e["teeth"], 0.0, 1.0)
    p["furrow"] = e["furrow"]
    p["wrinkle"] = e["wrinkle"]
    # Lighting gradient (image frame) and pixel noise.
    light_dir = rng.uniform(0.0, 2.0 * np.pi, size=n)
    light = d * 0.3 * rng.uniform(0.0, 1.0, size=n)
    # x + 0.0 == x exactly (up to the sign of a zero), so the default leaves the faces as they were.
    p["lx"] = light * np.cos(light_dir) + lighting[0]
    p["ly"] = light * np.sin(light_dir) + lighting[1]
    p["noise"] = noise * d * rng.uniform(0.5, 1.5, size=n)
    # Edge half-width in pixels times the face-frame units per image unit (1 / scale);
    # times 2 / size it is the edge half-width in face units.
    p["blur_px"] = blur_px * np.hypot(p["cos"], p["sin"])

    params = {k: np.asarray(v, dtype=_F) for k, v in p.items()}
    return labels, va[:, 0].astype(_F), va[:, 1].astype(_F), params


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


class _Soft:
    """Smooth step of a signed distance (positive inside) over an edge of half-width eps."""

    def __init__(self, eps: np.ndarray) -> None:
        self.k = (_F(0.5) / eps).astype(_F)

    def __call__(self, dist: np.ndarray) -> np.ndarray:
        t = dist * self.k
        t += _F(0.5)
        np.clip(t, _F(0.0), _F(1.0), out=t)
        s = t * t
        t *= _F(-2.0)
        t += _F(3.0)
        s *= t
        return s


def _lerp(img: np.ndarray, color: np.ndarray | float, mask: np.ndarray) -> None:
    """img <- img + mask * (color - img), in place."""
    delta = color - img
    delta *= mask
    img += delta


class _Window:
    """A pixel window that, for every sample of a chunk, covers a face-frame rectangle.

    Parts are only rendered inside their window: outside it their masks are exactly zero,
    so the output does not depend on how samples are grouped into chunks.
    """

    def __init__(
        self,
        p: dict[str, np.ndarray],
        size: int,
        x: tuple[np.ndarray, np.ndarray],
        y: tuple[np.ndarray, np.ndarray],
    ) -> None:
        cs = p["cos"].astype(np.float64)
        sn = p["sin"].astype(np.float64)
        k = cs * cs + sn * sn
        us, vs = [], []
        for fx in x:
            for fy in y:
                us.append(p["tx"] + (cs * fx - sn * fy) / k)
                vs.append(p["ty"] + (sn * fx + cs * fy) / k)
        half = size / 2.0

        def span(vals: list[np.ndarray]) -> slice:
            lo = math.floor((float(np.min(vals)) + 1.0) * half - 0.5) - 1
            hi = math.ceil((float(np.max(vals)) + 1.0) * half - 0.5) + 2
            lo, hi = max(lo, 0), min(hi, size)
            return slice(lo, max(lo, hi))

        self.cols = span(us)
        self.rows = span(vs)
        self.empty = self.cols.stop <= self.cols.start or self.rows.stop <= self.rows.start

    def take(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, self.rows, self.cols])

    def put(self, a: np.ndarray, part: np.ndarray) -> None:
        a[:, self.rows, self.cols] = part


def _render_chunk(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Render one chunk of faces (float32, (c, H, W), before noise and quantisation)."""
    c = p["cos"].shape[0]

    def g(name: str) -> np.ndarray:
        return p[name].reshape(c, 1, 1)

    def f64(name: str) -> np.ndarray:
        return p[name].astype(np.float64)

    # Pixel-centre coordinates in [-1, 1], image frame.
    lin = ((np.arange(size, dtype=_F) + _F(0.5)) * _F(2.0 / size) - _F(1.0)).astype(_F)
    u = lin.reshape(1, 1, size)
    v = lin.reshape(1, size, 1)
    cs, sn = g("cos"), g("sin")
    ux = u - g("tx")
    vy = v - g("ty")
    # Face frame: rotate and scale the coordinate grid (X right, Y down).
    X = cs * ux + sn * vy
    Y = cs * vy - sn * ux
    eps_px = _F(2.0 / size)
    soft = _Soft(g("blur_px") * eps_px)
    # Edge half-width in face units, plus a safety margin, for the part windows.
    m = f64("blur_px") * (2.0 / size) * 2.0 + 0.02

    # Background and face (egg-shaped ellipse, narrower towards the chin).
    img = np.broadcast_to(g("bg"), X.shape).astype(_F)
    fa, fb = g("fa"), g("fb")
    xf = X * (_F(1.0) + g("taper") * Y)
    xf *= _F(1.0) / fa
    yf = Y * (_F(1.0) / fb)
    q = xf * xf
    q += yf * yf
    del xf, yf
    r_face = np.minimum(fa, fb) * _F(0.5)
    face_m = soft((_F(1.0) - q) * r_face)
    skin = g("skin") * (_F(1.0) - g("shade") * q)
    _lerp(img, skin, face_m)
    del skin

    # Hair: a slightly larger ellipse, above a curved hairline.
    # Its support: 0.84 q < 1 + eps / r_face, i.e. within hfac times the face radii.
    fa64, fb64, taper = f64("fa"), f64("fb"), np.abs(f64("taper"))
    eps64 = f64("blur_px") * (2.0 / size)
    hfac = np.sqrt((1.0 + eps64 / (0.5 * np.minimum(fa64, fb64))) / 0.84) * 1.05
    den = 1.0 - taper * hfac * fb64
    hx = np.where(den > 0.25, hfac * fa64 / np.maximum(den, 0.25), 4.0) + m
    hy_hi = f64("hairline") + 0.35 * hx * hx + m
    win = _Window(p, size, (-hx, hx), (-hfac * fb64 - m, hy_hi))
    if not win.empty and np.any(p["hair"] > 0):
        Xw, Yw, qw = win.take(X), win.take(Y), win.take(q)
        hair_d = np.minimum(
            (_F(1.0) - qw * _F(0.84)) * r_face, g("hairline") + _F(0.35) * Xw * Xw - Yw
        )
        hair_m = soft(hair_d)
        hair_m *= g("hair")
        part = win.take(img)
        _lerp(part, g("hair_tone"), hair_m)
        win.put(img, part)
    del q

    # Upper face: eyes, brows and creases (mirror-symmetric: work with |X|).
    ex, ey, erx, ery = g("ex"), g("ey"), g("erx"), g("ery")
    ex64, ey64, ery64 = f64("ex"), f64("ey"), f64("ery")
    rad = np.sqrt(1.0 + 2.0 * (0.018 + eps64) / ery64)
    bx0, bx1, by0, by1 = f64("b_x0"), f64("b_x1"), f64("b_y0"), f64("b_y1")
    arch64, thick64 = f64("b_arch"), f64("b_thick")
    mid64 = 0.5 * (ey64 + f64("ny"))
    x_hi = (
        np.maximum.reduce(
            [ex64 + rad * f64("erx"), np.maximum(bx0, bx1) + thick64, np.full_like(ex64, 0.1)]
        )
        + m
    )
    y_lo = (
        np.minimum.reduce(
            [
                ey64 - rad * ery64,
                np.minimum(by0, by1) - np.maximum(arch64, 0.0) - thick64,
                ey64 - 0.15,
                mid64 - 0.047 - 6.0 * (0.09 + m) ** 2,
            ]
        )
        - m
    )
    y_hi = (
        np.maximum.reduce(
            [
                ey64 + rad * ery64,
                np.maximum(by0, by1) + np.maximum(-arch64, 0.0) + thick64,
                mid64 + 0.047,
            ]
        )
        + m
    )
    win = _Window(p, size, (-x_hi, x_hi), (y_lo, y_hi))
    if not win.empty:
        Xw, Yw, part = win.take(X), win.take(Y), win.take(img)
        AX = np.abs(Xw)
        brow_tone = g("brow_tone")
        # Eyes: dark lid outline, sclera, iris.
        dx = AX - ex
        dy = Yw - ey
        gz = np.abs(Xw - g("gaze"))  # both irises look the same way
        gz -= ex
        qi = gz * gz
        qi += dy * dy
        dx *= _F(1.0) / erx
        dy *= _F(1.0) / ery
        qe = dx * dx
        qe += dy * dy
        qe_d = (_F(1.0) - qe) * (ery * _F(0.5))
        lid = soft(qe_d + _F(0.018))
        lid *= win.take(face_m)
        lid *= _F(0.6)
        _lerp(part, brow_tone, lid)
        eye_m = soft(qe_d)
        _lerp(part, g("sclera"), eye_m)
        iris_r = g("iris")
        iris_m = soft((iris_r * iris_r - qi) * (_F(0.5) / iris_r))
        iris_m *= eye_m
        _lerp(part, g("iris_tone"), iris_m)
        del dx, dy, gz, qi, qe, qe_d, lid, eye_m, iris_m

        # Brows: tapered, arched segments from the inner to the outer end.
        x0, y0 = g("b_x0"), g("b_y0")
        bdx, bdy = g("b_x1") - x0, g("b_y1") - y0
        inv_len2 = _F(1.0) / (bdx * bdx + bdy * bdy)
        px = AX - x0
        py = Yw - y0
        t = px * (bdx * inv_len2)
        t += py * (bdy * inv_len2)
        np.clip(t, _F(0.0), _F(1.0), out=t)
        px -= t * bdx
        py -= t * bdy
        py += (t - t * t) * (_F(4.0) * g("b_arch"))
        px *= px
        py *= py
        px += py
        dist = np.sqrt(px)
        thick = g("b_thick") * (_F(1.0) - _F(0.45) * t)
        thick -= dist
        _lerp(part, brow_tone, soft(thick))
        del px, py, t, dist, thick

        # Creases: vertical furrows between the brows (anger), nose wrinkles (disgust).
        furrow = g("furrow")
        if np.any(furrow > 0):
            fd = np.minimum(
                _F(0.012) - np.abs(AX - _F(0.04)), _F(0.07) - np.abs(Yw - (ey - _F(0.08)))
            )
            fm = soft(fd)
            fm *= _F(0.55) * furrow
            _lerp(part, brow_tone, fm)
        wrinkle = g("wrinkle")
        if np.any(wrinkle > 0):
            wy = Yw - (ey + g("ny")) * _F(0.5)
            wy += _F(6.0) * AX * AX
            band = np.abs(np.abs(wy) - _F(0.035))
            wd = np.minimum(_F(0.012) - band, _F(0.09) - AX)
            wm = soft(wd)
            wm *= _F(0.5) * wrinkle
            _lerp(part, brow_tone, wm)
        win.put(img, part)

    # Lower face: nostrils and mouth.
    nrad = np.sqrt(1.0 + eps64 / 0.009)
    ny64, mw64, my64 = f64("ny"), f64("mw"), f64("my")
    curve64, asym64 = f64("curve"), f64("asym")
    smax = 2.0 * (np.abs(curve64) + np.abs(asym64)) / mw64
    e_m = eps64 * np.sqrt(1.0 + smax * smax)
    x_hi = np.maximum(f64("nx") + 0.03 * nrad, mw64 + 0.01) + m
    y_lo = (
        np.minimum(
            ny64 - 0.018 * nrad,
            my64
            - np.maximum(curve64, 0.0)
            - np.maximum(asym64, 0.0)
            - f64("open_top")
            - f64("lip_u")
            - e_m,
        )
        - m
    )
    y_hi = (
        np.maximum(
            ny64 + 0.018 * nrad,
            my64 + np.maximum(-curve64, 0.0) + f64("open_bot") + f64("lip_l") + e_m,
        )
        + m
    )
    win = _Window(p, size, (-x_hi, x_hi), (y_lo, y_hi))
    if not win.empty:
        Xw, Yw, part = win.take(X), win.take(Y), win.take(img)
        AX = np.abs(Xw)
        skin_c = g("skin")
        # Nostrils.
        ndx = (AX - g("nx")) * _F(1.0 / 0.03)
        ndy = (Yw - g("ny")) * _F(1.0 / 0.018)
        ndx *= ndx
        ndy *= ndy
        ndx += ndy
        nose_m = soft((_F(1.0) - ndx) * _F(0.009))
        nose_m *= _F(0.8)
        _lerp(part, skin_c * _F(0.45), nose_m)
        del ndx, ndy, nose_m

        # Mouth: a centre curve y(x) with lip bands around an opening between two curves.
        mw, my = g("mw"), g("my")
        r = Xw * (_F(1.0) / mw)
        np.clip(r, _F(-1.0), _F(1.0), out=r)
        rp = np.maximum(r, _F(0.0))
        curve, asym = g("curve"), g("asym")
        slope = curve * r
        slope += asym * rp
        slope *= _F(-2.0) / mw
        slope *= slope
        slope += _F(1.0)
        inv_norm = _F(1.0) / np.sqrt(slope)
        del slope
        r *= r
        rp *= rp
        ycurve = my - curve * r
        ycurve -= asym * rp
        qm = _F(1.0) - r
        del r, rp
        top = ycurve - g("open_top") * qm
        bot = ycurve + g("open_bot") * qm
        del ycurve
        dh = mw - AX
        taper_m = _F(0.3) + _F(0.7) * qm
        up = Yw - top
        lo = bot - Yw
        lip_d = np.minimum(up + g("lip_u") * taper_m, lo + g("lip_l") * taper_m)
        lip_d *= inv_norm
        lip_m = soft(np.minimum(lip_d, dh + _F(0.01)))
        _lerp(part, g("lip_tone"), lip_m)
        in_d = np.minimum(up, lo)
        in_d *= inv_norm
        in_m = soft(np.minimum(in_d, dh))
        _lerp(part, skin_c * _F(0.15), in_m)
        teeth = g("teeth")
        if np.any(teeth > 0):
            td = top + _F(0.045) * qm
            td -= Yw
            td *= inv_norm
            teeth_m = soft(td)
            teeth_m *= in_m
            teeth_m *= teeth
            _lerp(part, g("sclera"), teeth_m)
        win.put(img, part)

    # Lighting gradient across the whole image.
    img *= _F(1.0) + g("lx") * u + g("ly") * v
    return img


def render_faces(
    n: int,
    size: int = 48,
    seed: int = 0,
    *,
    noise: float = 0.04,
    difficulty: float = 1.0,
    lighting: Sequence[float] = (0.0, 0.0),
    contrast: float = 1.0,
    invert: bool = False,
    chunk: int = 1024,
) -> SyntheticFaces:
    """Render ``n`` synthetic grayscale faces of ``size`` x ``size`` pixels.

    Classes are exactly balanced (``n // 8`` each, the remainder going to the first classes)
    and shuffled. ``noise`` is the standard deviation of the pixel noise (in [0, 1] units) at
    ``difficulty`` 1; ``difficulty`` scales all nuisance variation (pose, lighting, blur,
    noise, identity spread): 0 renders clean canonical faces that differ only by expression.
    ``lighting``, ``contrast`` and ``invert`` are the domain style, the same for every face
    (see :func:`check_style`); their defaults change nothing, and they draw no random
    numbers, so labels and VA targets do not depend on them.
    ``chunk`` bounds how many images are rendered per vectorised step (memory); steps are
    further capped at 2**17 pixels, which keeps temporaries cache-sized (about twice as
    fast as large steps). The output depends only on ``(n, size, seed, noise, difficulty)``
    and the style, never on ``chunk``.
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, 16, 512)
    seed = _check_int("seed", seed, 0)
    chunk = _check_int("chunk", chunk, 1)
    noise = _check_float("noise", noise, 0.0, 1.0)
    difficulty = _check_float("difficulty", difficulty, 0.0, 2.0)
    light, contrast, invert = check_style(lighting, contrast, invert)

    param_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
    labels, valence, arousal, params = _sample_params(
        n, np.random.default_rng(param_seq), difficulty, noise, light
    )
    noise_rng = np.random.default_rng(noise_seq)

    images = np.empty((n, size, size), dtype=np.uint8)
    step = max(1, min(chunk, _STEP_PIXELS // (size * size)))
    starts = range(0, n, step)
    for start in track(starts, f"rendering {n} synthetic faces", total=len(starts)):
        stop = min(start + step, n)
        sub = {k: v[start:stop] for k, v in params.items()}
        img = _render_chunk(sub, size)
        # Drawn chunk after chunk from one stream: identical to a single draw of all pixels.
        eps = noise_rng.standard_normal(img.shape, dtype=_F)
        eps *= sub["noise"].reshape(-1, 1, 1)
        img += eps
        if contrast != 1.0:  # skipped at the default: the same bytes as without the knob
            # A camera's tone curve: the clipped signal (noise included) around mid-grey.
            np.clip(img, _F(0.0), _F(1.0), out=img)
            img -= _F(0.5)
            img *= _F(contrast)
            img += _F(0.5)
        img *= _F(255.0)
        np.rint(img, out=img)
        np.clip(img, _F(0.0), _F(255.0), out=img)
        images[start:stop] = img.astype(np.uint8)
    if invert:
        np.subtract(np.uint8(255), images, out=images)

    return SyntheticFaces(
        images=images,
        expression=labels.astype(np.int64),
        valence=valence,
        arousal=arousal,
    )


def save_grid_png(faces: SyntheticFaces, path: str | Path, per_class: int = 8) -> Path:
    """Write a PNG grid with one row per class (labelled) and ``per_class`` samples each.

    Small images are upscaled (nearest neighbour) so that each cell is at least 64 pixels.
    Rows whose class has fewer samples are left partly empty. Returns the path written.
    """

    per_class = _check_int("per_class", per_class, 1)
    imgs = faces.images
    if imgs.ndim != 3 or imgs.shape[0] == 0:
        raise ValueError(f"faces.images must be a non-empty (N, H, W) array, got {imgs.shape}")
    h, w = int(imgs.shape[1]), int(imgs.shape[2])
    zoom = max(1, math.ceil(64 / max(h, 1)))
    ch, cw = h * zoom, w * zoom
    pad = 2
    label_w = 76
    k = len(CANONICAL_CLASSES)
    grid = Image.new("L", (label_w + per_class * (cw + pad) + pad, k * (ch + pad) + pad), 255)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for row, name in enumerate(CANONICAL_CLASSES):
        y = pad + row * (ch + pad)
        draw.text((4, y + ch // 2 - 6), name, fill=0, font=font)
        idx = np.flatnonzero(faces.expression == row)[:per_class]
        for col, i in enumerate(idx):
            tile = Image.fromarray(np.ascontiguousarray(imgs[i], dtype=np.uint8))
            if zoom > 1:
                tile = tile.resize((cw, ch), Image.Resampling.NEAREST)
            grid.paste(tile, (label_w + pad + col * (cw + pad), y))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    return out
