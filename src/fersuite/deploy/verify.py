"""Checking an exported model against eager PyTorch, and timing both.

The inputs are random tensors at batch 1 and ``verify_batch``, and synthetic faces
(:func:`fersuite.data.synthetic.render_faces`) saved as image files and read back with
:func:`fersuite.card.load_input`: the same decoding, face crop and transform as
``fersuite-predict`` and the datasets.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fersuite.card import ModelCard
from fersuite.data.preprocess import input_transform, load_input
from fersuite.data.synthetic import render_faces
from fersuite.deploy.base import OUTPUT_NAMES
from fersuite.deploy.onnx import OnnxModel
from fersuite.errors import ExportError
from fersuite.profiling import measure_latency

__all__ = [
    "compare_outputs",
    "compare_quantized",
    "eval_face_batch",
    "latencies",
    "verification_inputs",
]

Runner = Callable[[torch.Tensor], Any]


def eval_face_batch(card: ModelCard, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic face image files through :func:`fersuite.card.load_input`:
    (n, C, S, S) float32, what the model would be given for those files."""

    size = min(max(card.input_size, 16), 512)
    faces = render_faces(n, size=size, seed=seed)
    tf = input_transform(card)
    with tempfile.TemporaryDirectory(prefix="fersuite-verify-") as tmp:
        batch = []
        for i, img in enumerate(faces.images):
            path = Path(tmp) / f"face{i}.png"
            Image.fromarray(img).save(path)
            batch.append(load_input(card, path, transform=tf)[0])
    return torch.stack(batch).float()


def verification_inputs(
    card: ModelCard, batch: int, faces: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (card.in_chans, card.input_size, card.input_size)
    inputs = {
        "random_b1": torch.randn((1, *shape), generator=gen),
        f"random_b{batch}": torch.randn((batch, *shape), generator=gen),
    }
    if faces > 0:
        inputs[f"faces_b{faces}"] = eval_face_batch(card, faces, seed)
    return inputs


def compare_outputs(
    reference: Runner, candidate: Runner, inputs: dict[str, torch.Tensor], atol: float
) -> dict[str, dict[str, float]]:
    """Max abs difference per input set and output; :class:`ExportError` above ``atol``."""
    diffs: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for case, x in inputs.items():
        with torch.no_grad():
            ref = reference(x)
            got = candidate(x)
        diffs[case] = {}
        for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
            r_t = torch.as_tensor(r).detach().float().cpu()
            g_t = torch.as_tensor(g).detach().float().cpu()
            if r_t.shape != g_t.shape:
                failures.append(f"{case}/{name}: shape {tuple(g_t.shape)} != {tuple(r_t.shape)}")
                diffs[case][name] = float("inf")
                continue
            d = float((r_t - g_t).abs().max()) if r_t.numel() else 0.0
            if not np.isfinite(d):
                d = float("inf")
            diffs[case][name] = d
            if d > atol:
                failures.append(f"{case}/{name}: max abs diff {d:.3g} > {atol:g}")
    if failures:
        raise ExportError("exported model does not match PyTorch: " + "; ".join(failures))
    return diffs


def _as_cpu(t: Any) -> torch.Tensor:
    return torch.as_tensor(t).detach().float().cpu()


def compare_quantized(
    reference: Runner,
    quantized: Runner,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Any]:
    """Agreement of a quantised model with its fp32 reference on held-out ``(x, labels)``
    batches: top-1 agreement, accuracy of both (images labelled < 0 are left out of the
    accuracies but count for agreement) and the max |valence| and |arousal| differences."""
    images = labelled = agree = correct_ref = correct_q = 0
    max_v = max_a = 0.0
    for x, labels in batches:
        with torch.no_grad():
            ref = reference(x)
            got = quantized(x)
        ref_top = _as_cpu(ref[0]).argmax(dim=1)
        got_top = _as_cpu(got[0]).argmax(dim=1)
        y = torch.as_tensor(labels).cpu().long().reshape(-1)
        if y.shape != ref_top.shape or got_top.shape != ref_top.shape:
            raise ExportError(
                f"held-out batch: {tuple(y.shape)} labels, {tuple(ref_top.shape)} fp32 and "
                f"{tuple(got_top.shape)} quantised predictions"
            )
        images += int(y.numel())
        agree += int((ref_top == got_top).sum())
        valid = y >= 0
        labelled += int(valid.sum())
        correct_ref += int((ref_top == y)[valid].sum())
        correct_q += int((got_top == y)[valid].sum())
        for i, name in ((1, "valence"), (2, "arousal")):
            r, g = _as_cpu(ref[i]), _as_cpu(got[i])
            if r.shape != g.shape:
                raise ExportError(f"{name}: quantised shape {tuple(g.shape)} != {tuple(r.shape)}")
            d = float((r - g).abs().max()) if r.numel() else 0.0
            d = d if np.isfinite(d) else float("inf")
            if i == 1:
                max_v = max(max_v, d)
            else:
                max_a = max(max_a, d)
    if images == 0:
        raise ExportError("no held-out images to compare the quantised model on")
    nan = float("nan")
    return {
        "top1_agreement": agree / images,
        "accuracy_fp32": correct_ref / labelled if labelled else nan,
        "accuracy_quantized": correct_q / labelled if labelled else nan,
        "max_valence_diff": max_v,
        "max_arousal_diff": max_a,
        "held_out_images": images,
    }


def time_ms(fn: Callable[[], Any], warmup: int, runs: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    arr = np.asarray(times)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90))}


def latencies(
    net: nn.Module,
    exported: Any,
    card: ModelCard,
    warmup: int,
    runs: int,
    threads: int,
    seed: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Batch-1 latency of eager PyTorch and of the exported model, same thread count.

    Keys: ``eager_median_ms``/``eager_p90_ms`` and ``<name>_median_ms``/``<name>_p90_ms``
    (``name``: ort, torchscript or executorch; ORT is timed on its numpy call)."""
    shape = (1, card.in_chans, card.input_size, card.input_size)
    eager = measure_latency(net, shape, warmup=warmup, runs=runs, threads=threads)
    result: dict[str, Any] = {
        "threads": threads,
        "runs": runs,
        "eager_median_ms": eager.median_ms,
        "eager_p90_ms": eager.p90_ms,
    }
    if isinstance(exported, OnnxModel):
        key = name or "ort"
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        timed = time_ms(lambda: exported.run_numpy(x), warmup, runs)
    else:
        key = name or "torchscript"
        # TorchScript modules fail under inference_mode (used by measure_latency): no_grad.
        xt = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                timed = time_ms(lambda: exported(xt), warmup, runs)
        finally:
            torch.set_num_threads(previous)
    result.update({f"{key}_median_ms": timed["median_ms"], f"{key}_p90_ms": timed["p90_ms"]})
    result["exported_key"] = key
    result["speedup"] = eager.median_ms / timed["median_ms"] if timed["median_ms"] else None
    return result
