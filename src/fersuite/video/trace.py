"""A trace plot per video: valence and arousal over time, the expression as a coloured band."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from fersuite.utils.io import atomic_path
from fersuite.video.annotate import class_colors

__all__ = ["plot_trace"]


def plot_trace(
    rows: Sequence[dict[str, Any]], path: str | Path, names: Sequence[str], title: str
) -> Path:
    """Write the PNG (atomically): one panel of valence/arousal lines per face (smoothed
    lines solid, raw dotted, when smoothed) and under it the expression of each frame."""

    matplotlib.use("Agg")

    face_ids = sorted({int(r["face_id"]) for r in rows})
    smoothed = bool(rows) and "expression_smooth" in rows[0]
    has_va = bool(rows) and "valence" in rows[0]
    colors = {n: tuple(c / 255 for c in rgb) for n, rgb in class_colors(names).items()}
    fig, axes = plt.subplots(
        2 * max(1, len(face_ids)),
        1,
        figsize=(9, 1 + 2.6 * max(1, len(face_ids))),
        sharex=True,
        gridspec_kw={"height_ratios": [4, 1] * max(1, len(face_ids))},
        squeeze=False,
    )
    times = [float(r["time_s"]) for r in rows]
    step = min((b - a for a, b in itertools.pairwise(times) if b > a), default=1.0)
    for k, fid in enumerate(face_ids):
        ax, band = axes[2 * k, 0], axes[2 * k + 1, 0]
        mine = [r for r in rows if int(r["face_id"]) == fid]
        t = [float(r["time_s"]) for r in mine]
        if has_va:
            for key, color in (("valence", "tab:green"), ("arousal", "tab:orange")):
                if smoothed:
                    ax.plot(t, [r[key] for r in mine], ":", color=color, alpha=0.6, lw=1)
                    ax.plot(t, [r[f"{key}_smooth"] for r in mine], color=color, label=key)
                else:
                    ax.plot(t, [r[key] for r in mine], color=color, label=key)
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="gray", lw=0.5)
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel(f"face {fid}")
        key = "expression_smooth" if smoothed else "expression"
        for r in mine:
            band.axvspan(float(r["time_s"]), float(r["time_s"]) + step, color=colors[r[key]])
        band.set_yticks([])
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    seen = [n for n in names if any(r.get("expression_smooth", r["expression"]) == n for r in rows)]
    fig.legend(
        handles=[Patch(color=colors[n], label=n) for n in seen],
        loc="lower center",
        ncol=min(8, max(1, len(seen))),
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
