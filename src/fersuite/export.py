"""``fersuite-export``: a trained checkpoint -> ONNX (or TorchScript), verified in the same command.

::

    fersuite-export ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt export.format=onnx

The model is rebuilt safely with :func:`fersuite.checkpoint.load_model_from_checkpoint`
(``weights_only=True``) and exported with one input ``image`` (N, C, H, W; float32, normalised
as in training) whose batch axis is dynamic (1..``export.max_batch``), and three outputs:
``expression`` (N, classes; logits), ``valence`` (N) and ``arousal`` (N).

ONNX uses the dynamo exporter (``torch.export`` + onnxscript) with
``dynamic_shapes={"x": {0: Dim("N", min=1, max=max_batch)}}``; when it fails for a model, the
legacy TorchScript-based exporter with ``dynamic_axes`` is used instead and both the choice and
the reason are recorded (``export.exporter=auto``). The file is self-contained (no external
data).

Before the file is moved into place it is verified: ONNX Runtime (or the reloaded TorchScript
module) runs random inputs at batch 1 and ``export.verify_batch`` and synthetic faces
(:func:`fersuite.data.synthetic.render_faces`) through the training eval transform, and every
output must match eager PyTorch within ``export.atol`` (1e-4) -- otherwise the command fails and
writes nothing. Batch-1 latency of the exported model and of eager PyTorch is measured with the
same thread count. ``model.json`` (the sidecar) records class names, input spec, output names,
opset, exporter, verification and latency.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from importlib import metadata
from io import StringIO
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from fersuite.apps import run_app, task_wrapper
from fersuite.checkpoint import CheckpointMeta, load_model_from_checkpoint
from fersuite.config import CONFIG_DIR, ConfigError, settings_keys
from fersuite.errors import RunFailedError
from fersuite.profiling import measure_latency
from fersuite.types import AffectOutput
from fersuite.utils.io import atomic_path, atomic_write_json

log = logging.getLogger("fersuite.export")

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "ExportError",
    "ExportSettings",
    "OnnxModel",
    "TupleOutput",
    "eval_face_batch",
    "export_checkpoint",
    "main",
]

INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str, str] = ("expression", "valence", "arousal")
FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
EXPORTERS = ("auto", "dynamo", "legacy")


class ExportError(RunFailedError, RuntimeError):
    """An export that failed or whose outputs do not match PyTorch."""


@dataclass(frozen=True)
class ExportSettings:
    """The ``export.*`` keys, validated."""

    format: str = "onnx"
    out_dir: str | None = None
    exporter: str = "auto"
    opset: int = 18
    max_batch: int = 64
    verify: bool = True
    atol: float = 1e-4
    verify_batch: int = 4
    verify_faces: int = 8
    seed: int = 0
    latency_runs: int = 50
    latency_warmup: int = 10
    threads: int = 1

    def __post_init__(self) -> None:
        if self.format not in FILES:
            raise ConfigError(f"export.format={self.format!r}; expected one of {tuple(FILES)}")
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"export.exporter={self.exporter!r}; expected one of {EXPORTERS}")
        for key, lo in (
            ("opset", 7),
            ("max_batch", 2),
            ("verify_batch", 1),
            ("verify_faces", 0),
            ("seed", 0),
            ("latency_runs", 0),
            ("latency_warmup", 0),
            ("threads", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"export.{key}={value!r}; expected an integer >= {lo}")
        if self.verify_batch > self.max_batch:
            raise ConfigError(
                f"export.verify_batch={self.verify_batch} exceeds export.max_batch={self.max_batch}"
            )
        if not self.atol > 0:
            raise ConfigError(f"export.atol={self.atol}; expected a tolerance > 0")

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any] | None) -> ExportSettings:
        raw = settings_keys(cfg, cls.__dataclass_fields__, "export")
        if "atol" in raw:
            raw["atol"] = float(raw["atol"])
        return cls(**raw)


class TupleOutput(nn.Module):
    """``net`` with a plain tuple output ``(expression, valence, arousal)`` for the exporters."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out.expression, out.valence, out.arousal


class OnnxModel:
    """An ONNX Runtime session called like a fersuite model: ``model(x) -> AffectOutput``."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ExportError(f"ONNX Runtime cannot load {path}: {first}") from exc
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ExportError(f"{path} lacks outputs {missing} (has {names})")

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUT_NAMES), {self.input_name: x})  # type: ignore[no-any-return]

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        e, v, a = (torch.from_numpy(np.asarray(o)) for o in self.run_numpy(arr))
        return AffectOutput(e, v, a)


# --------------------------------------------------------------------------------------------
# exporters
# --------------------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[StringIO]:
    """Swallow the exporters' progress prints (kept for the log at debug level)."""
    buf = StringIO()
    noisy = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.WARNING)
    try:
        with redirect_stdout(buf), warnings.catch_warnings():
            # torch.jit.* are deprecated (FutureWarning); the choice is logged once instead.
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
            yield buf
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
    if buf.getvalue().strip():
        log.debug("exporter output:\n%s", buf.getvalue())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _export_dynamo(
    wrapper: nn.Module, example: torch.Tensor, path: Path, s: ExportSettings
) -> None:
    batch = torch.export.Dim("N", min=1, max=s.max_batch)
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes={"x": {0: batch}},
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=s.opset,
            external_data=False,
            verbose=False,
        )


def _export_legacy(
    wrapper: nn.Module, example: torch.Tensor, path: Path, s: ExportSettings
) -> None:
    axes = {name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes=axes,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=s.opset,
            do_constant_folding=True,
        )


def export_onnx(
    wrapper: nn.Module, example: torch.Tensor, path: Path, s: ExportSettings
) -> dict[str, Any]:
    """Export to ``path``; returns ``{"exporter", "opset", "fallback_reason"}``."""
    reason: str | None = None
    if s.exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(wrapper, example, path, s)
            return {"exporter": "dynamo", "opset": _onnx_opset(path), "fallback_reason": None}
        except Exception as exc:  # any exporter failure -> fallback or report
            reason = _first_line(exc)
            if s.exporter == "dynamo":
                raise ExportError(f"the dynamo ONNX exporter failed: {reason}") from exc
            log.warning("dynamo exporter failed (%s); falling back to the legacy exporter", reason)
    try:
        _export_legacy(wrapper, example, path, s)
    except Exception as exc:
        raise ExportError(f"the legacy ONNX exporter failed: {_first_line(exc)}") from exc
    return {"exporter": "legacy", "opset": _onnx_opset(path), "fallback_reason": reason}


def export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``torch.jit.trace`` + save; returns ``{"exporter": "torchscript-trace"}``.

    TorchScript is deprecated in recent torch releases (still loadable with ``torch.jit.load``
    and from C++); ONNX is the primary format.
    """
    log.warning("TorchScript is deprecated by PyTorch; prefer export.format=onnx")
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        raise ExportError(f"TorchScript tracing failed: {_first_line(exc)}") from exc
    return {"exporter": "torchscript-trace", "opset": None, "fallback_reason": None}


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------


def eval_face_batch(meta: CheckpointMeta, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic faces through the checkpoint's eval transform: (n, C, S, S) float32."""
    from fersuite.data.synthetic import render_faces
    from fersuite.data.transforms import build_transforms

    size = min(max(meta.input_size, 16), 512)
    faces = render_faces(n, size=size, seed=seed)
    tf = build_transforms(meta.input_size, meta.in_chans, meta.mean, meta.std, train=False)
    imgs = torch.from_numpy(faces.images).unsqueeze(1)  # (n, 1, S, S) uint8
    return torch.stack([tf(img) for img in imgs]).float()


def _verification_inputs(meta: CheckpointMeta, s: ExportSettings) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(s.seed)
    shape = (meta.in_chans, meta.input_size, meta.input_size)
    inputs = {
        "random_b1": torch.randn((1, *shape), generator=gen),
        f"random_b{s.verify_batch}": torch.randn((s.verify_batch, *shape), generator=gen),
    }
    if s.verify_faces > 0:
        inputs[f"faces_b{s.verify_faces}"] = eval_face_batch(meta, s.verify_faces, s.seed)
    return inputs


Runner = Callable[[torch.Tensor], Any]


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


def _time_ms(fn: Callable[[], Any], warmup: int, runs: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    arr = np.asarray(times)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90))}


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def sidecar(
    meta: CheckpointMeta, s: ExportSettings, info: dict[str, Any], ckpt: Path
) -> dict[str, Any]:
    """The ``model.json`` content (without verification/latency, added by the caller)."""
    n = len(meta.class_names)
    return {
        "format": s.format,
        "file": FILES[s.format],
        "class_names": list(meta.class_names),
        "has_va": meta.has_va,
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "size": meta.input_size,
            "channels": meta.in_chans,
            "mean": list(meta.mean),
            "std": list(meta.std),
            "batch": [1, s.max_batch],
            "preprocessing": "uint8 image -> gray/RGB to `channels` -> antialiased resize to "
            "size x size -> /255 -> (x - mean) / std",
        },
        "outputs": [
            {"name": "expression", "shape": ["N", n], "meaning": "logits over class_names"},
            {"name": "valence", "shape": ["N"], "meaning": "valence in [-1, 1]"},
            {"name": "arousal", "shape": ["N"], "meaning": "arousal in [-1, 1]"},
        ],
        "output_names": list(OUTPUT_NAMES),
        "opset": info.get("opset"),
        "exporter": info["exporter"],
        "fallback_reason": info.get("fallback_reason"),
        "model_cfg": meta.model_cfg,
        "source_checkpoint": str(ckpt),
        "checkpoint_sha256": _sha256(ckpt),
        "versions": {p: _version(p) for p in ("fersuite", "torch", "onnx", "onnxruntime")},
    }


def export_checkpoint(
    ckpt_path: str | os.PathLike[str], settings: ExportSettings, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Export, verify and time one checkpoint; returns the sidecar written to ``model.json``."""
    ckpt = Path(ckpt_path)
    net, meta = load_model_from_checkpoint(ckpt)
    net.eval()
    wrapper = TupleOutput(net).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / FILES[settings.format]
    gen = torch.Generator().manual_seed(settings.seed)
    # Batch 2 for tracing, so that the batch dimension is not specialised to 1.
    example = torch.randn((2, meta.in_chans, meta.input_size, meta.input_size), generator=gen)

    verification: dict[str, Any] = {"performed": False}
    latency: dict[str, Any] = {}
    with atomic_path(target) as tmp:
        if settings.format == "onnx":
            info = export_onnx(wrapper, example, tmp, settings)
            exported: Any = OnnxModel(tmp, threads=settings.threads)
        else:
            info = export_torchscript(wrapper, example, tmp)
            with _quiet():
                exported = torch.jit.load(str(tmp), map_location="cpu").eval()
        if settings.verify:
            inputs = _verification_inputs(meta, settings)
            diffs = compare_outputs(net, exported, inputs, settings.atol)
            worst = max(d for case in diffs.values() for d in case.values())
            verification = {
                "performed": True,
                "atol": settings.atol,
                "max_abs_diff": worst,
                "cases": diffs,
                "backend": "onnxruntime" if settings.format == "onnx" else "torch.jit",
            }
        if settings.latency_runs > 0:
            latency = _latencies(net, exported, meta, settings)

    info_out = sidecar(meta, settings, info, ckpt)
    info_out["verification"] = verification
    info_out["latency_b1"] = latency
    atomic_write_json(out / "model.json", info_out)
    return info_out


def _latencies(
    net: nn.Module, exported: Any, meta: CheckpointMeta, s: ExportSettings
) -> dict[str, Any]:
    shape = (1, meta.in_chans, meta.input_size, meta.input_size)
    eager = measure_latency(
        net, shape, warmup=s.latency_warmup, runs=s.latency_runs, threads=s.threads
    )
    result: dict[str, Any] = {
        "threads": s.threads,
        "runs": s.latency_runs,
        "eager_median_ms": eager.median_ms,
        "eager_p90_ms": eager.p90_ms,
    }
    if isinstance(exported, OnnxModel):
        x = np.random.default_rng(s.seed).standard_normal(shape).astype(np.float32)
        ort_t = _time_ms(lambda: exported.run_numpy(x), s.latency_warmup, s.latency_runs)
        result.update(ort_median_ms=ort_t["median_ms"], ort_p90_ms=ort_t["p90_ms"])
        result["speedup"] = eager.median_ms / ort_t["median_ms"] if ort_t["median_ms"] else None
    else:
        # TorchScript modules fail under inference_mode (used by measure_latency): no_grad.
        x = torch.randn(shape, generator=torch.Generator().manual_seed(s.seed))
        previous = torch.get_num_threads()
        torch.set_num_threads(s.threads)
        try:
            with torch.no_grad():
                ts = _time_ms(lambda: exported(x), s.latency_warmup, s.latency_runs)
        finally:
            torch.set_num_threads(previous)
        result.update(torchscript_median_ms=ts["median_ms"], torchscript_p90_ms=ts["p90_ms"])
        result["speedup"] = eager.median_ms / ts["median_ms"] if ts["median_ms"] else None
    return result


def print_export(info: dict[str, Any], out_dir: Path) -> None:
    from rich.table import Table

    from fersuite.utils.console import make_console

    table = Table(title="fersuite export")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("file", str(out_dir / info["file"]))
    table.add_row("exporter", str(info["exporter"]))
    if info.get("fallback_reason"):
        table.add_row("dynamo failure", str(info["fallback_reason"]))
    table.add_row("opset", str(info.get("opset")))
    table.add_row(
        "input",
        f"{INPUT_NAME}: N x {info['input']['channels']} x "
        f"{info['input']['size']} x {info['input']['size']}",
    )
    ver = info.get("verification", {})
    if ver.get("performed"):
        table.add_row(
            f"max |diff| vs PyTorch ({ver['backend']})",
            f"{ver['max_abs_diff']:.2e} (<= {ver['atol']:g})",
        )
    lat = info.get("latency_b1") or {}
    if lat:
        key = "ort" if "ort_median_ms" in lat else "torchscript"
        table.add_row(
            f"latency b1, eager ({lat['threads']} thr)",
            f"{lat['eager_median_ms']:.2f} ms (p90 {lat['eager_p90_ms']:.2f})",
        )
        table.add_row(
            f"latency b1, {key}",
            f"{lat[f'{key}_median_ms']:.2f} ms (p90 {lat[f'{key}_p90_ms']:.2f})",
        )
    make_console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@task_wrapper
def hydra_main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    settings = ExportSettings.from_config(cfg.get("export"))
    out_dir = Path(settings.out_dir or cfg.paths.output_dir)
    info = export_checkpoint(cfg.ckpt_path, settings, out_dir)
    print_export(info, out_dir)
    log.info("settings: %s", asdict(settings))


def main() -> None:
    """``fersuite-export``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("export", hydra_main)


if __name__ == "__main__":
    main()
