"""ONNX Runtime fp32 vs int8 / dynamic / fp16 on zoo models with RANDOM weights (issue 14).

File size, batch-1 latency at 1 thread (median of 50, the variants interleaved in rounds so
that load from other processes hits them alike) and agreement with fp32 on random inputs.
Random weights and random inputs: the logit margins are small, so agreement here is a lower
bound of what a trained model keeps; use fersuite-export's held-out check for real numbers.

    PYTHONPATH=src python experiments/onnx_quant/probe.py [lightweight_cnn mit_fer timm224]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from fersuite.deploy.base import TupleOutput
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.deploy.onnx_quant import cpu_vnni, quantize_onnx
from fersuite.deploy.verify import compare_quantized

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.export.helpers import ZOO, make_checkpoint

MODELS: dict[str, dict[str, Any]] = {
    "lightweight_cnn": ZOO["lightweight_cnn"],
    "mit_fer": ZOO["mit_fer"],
    "timm48": ZOO["timm"],
    "timm224": {**ZOO["timm"], "in_chans": 3, "input_size": 224},
}
VARIANTS = ("fp32", "int8", "int8_rr", "dynamic", "fp16")


def latency_ms(models: dict[str, OnnxModel], x: np.ndarray, runs: int = 50) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        for _ in range(5):
            m.run_numpy(x)
    for _ in range(runs // 10):
        for k, m in models.items():
            for _ in range(10):
                t0 = time.perf_counter()
                m.run_numpy(x)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def probe(name: str, tmp: Path) -> list[str]:
    cfg = MODELS[name]
    c, s = int(cfg["in_chans"]), int(cfg["input_size"])
    _, net = make_checkpoint(tmp / f"{name}.ckpt", cfg)
    paths = {v: tmp / f"{name}_{v}.onnx" for v in VARIANTS}
    t0 = time.perf_counter()
    export_onnx(TupleOutput(net).eval(), torch.randn(2, c, s, s), paths["fp32"])
    print(f"{name}: dynamo export {time.perf_counter() - t0:.0f} s", flush=True)
    gen = torch.Generator().manual_seed(1)
    n_cal = 64 if s <= 64 else 32
    calib = [torch.randn(8, c, s, s, generator=gen) for _ in range(n_cal // 8)]
    secs: dict[str, float] = {}
    for v in VARIANTS[1:]:
        mode = "int8" if v.startswith("int8") else v
        t0 = time.perf_counter()
        quantize_onnx(paths["fp32"], paths[v], mode, calib, reduce_range=v == "int8_rr")
        secs[v] = time.perf_counter() - t0
    models = {v: OnnxModel(p, threads=1) for v, p in paths.items()}
    held = [
        (torch.randn(32, c, s, s, generator=gen), torch.zeros(32, dtype=torch.long))
        for _ in range(4 if s <= 64 else 2)
    ]
    lat = latency_ms(models, np.random.default_rng(0).standard_normal((1, c, s, s), np.float32))
    size0 = paths["fp32"].stat().st_size
    rows = []
    for v in VARIANTS:
        size = paths[v].stat().st_size
        cmp = compare_quantized(models["fp32"], models[v], held)
        ref = models["fp32"](held[0][0]).expression
        got = models[v](held[0][0]).expression
        d_logit = float((ref - got).abs().max())
        ops = Counter(n.op_type for n in onnx.load(str(paths[v])).graph.node)
        key_ops = ",".join(
            f"{k}:{ops[k]}"
            for k in ("QuantizeLinear", "ConvInteger", "MatMulInteger", "Cast")
            if ops.get(k)
        )
        rows.append(
            f"| {name} {c}x{s}x{s} | {v} | {size / 1e3:,.0f} | {size / size0:.2f} | "
            f"{lat[v]:.2f} | {lat[v] / lat['fp32']:.2f} | {cmp['top1_agreement']:.3f} | "
            f"{d_logit:.3f} | {cmp['max_valence_diff']:.3f} | {cmp['max_arousal_diff']:.3f} | "
            f"{secs.get(v, 0):.0f} | {key_ops} |"
        )
        print(rows[-1], flush=True)
    ref = models["fp32"](held[0][0]).expression
    top2 = ref.topk(2, dim=1).values
    margin = float((top2[:, 0] - top2[:, 1]).median())
    print(f"{name}: fp32 median top1-top2 logit margin {margin:.3f}")
    return rows


def main() -> None:
    names = sys.argv[1:] or ["lightweight_cnn", "mit_fer", "timm224"]
    print("cpu", cpu_vnni(), "torch threads", torch.get_num_threads())
    header = (
        "| model | variant | KB | size/fp32 | b1 ms (1 thr) | ms/fp32 | top-1 agree | max |dlogit| "
        "| max |dV| | max |dA| | quantise s | ops |\n|" + "---|" * 12
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += probe(name, Path(tmp))
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
