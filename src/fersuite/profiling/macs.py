"""Parameter and multiply-accumulate (MAC) counting built on fvcore's jit-trace analysis.

fvcore counts one fused multiply-add as one "flop", so every total it reports is a MAC count;
this module labels them MACs throughout. On top of fvcore's default handles it registers:

* ``aten::scaled_dot_product_attention`` and its fused variants (silently skipped by fvcore,
  which under-counts a timm ViT-tiny by ~14 %): MACs = prod(batch dims) * Lq * Lk * (Dqk + Dv),
  i.e. ``Q @ K^T`` plus ``attn @ V``. Masks, causal masking and dropout do not change the figure.
* ``aten::matmul``/``aten::mm``/``aten::bmm`` replaced by a broadcasting-aware rule
  (output elements times the contracted dimension) -- fvcore's rule under-counts when the
  second operand carries the batch dimensions or an operand is 1-D.
* ``aten::baddbmm``, ``aten::addbmm``, ``aten::addmv``, ``aten::mv``, ``aten::dot``,
  ``aten::vdot`` (absent from fvcore).

Still not counted (reported in :attr:`MacsReport.skipped_ops`): elementwise arithmetic
(``aten::add``, ``aten::mul``, ``aten::div``...), activations other than ReLU (``aten::gelu``,
``aten::silu``, ``aten::hardswish``...; fvcore ignores ReLU without reporting it), softmax,
max/avg pooling (except ``aten::adaptive_avg_pool2d``, counted as one MAC per input element),
reductions (``aten::sum``, ``aten::mean``). Kept from fvcore's defaults: convolutions, linear,
``addmm``, ``einsum``, batch norm (2 per element in eval mode, as in published figures), layer /
group / instance norm (5 per element), ``upsample_bilinear2d`` (4 per output element),
``upsample_nearest2d`` and ``adaptive_avg_pool2d``.

Tracing uses ``torch.jit`` on the uncompiled module, in eval mode and under ``torch.no_grad``;
models may return tensors, tuples, NamedTuples (e.g. :class:`fersuite.types.AffectOutput`) or
dicts of tensors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

with warnings.catch_warnings():
    # fvcore.nn scripts a focal-loss helper at import time (torch.jit.script FutureWarning).
    warnings.simplefilter("ignore")
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis

__all__ = [
    "EXTRA_MAC_HANDLES",
    "MacsReport",
    "ParamCount",
    "count_macs",
    "count_params",
    "format_count",
    "format_macs",
    "unwrap_compiled",
]

_Handle = Callable[[list[Any], list[Any]], int]


@dataclass(frozen=True)
class ParamCount:
    """Number of parameters (shared parameters counted once)."""

    total: int
    trainable: int


@dataclass(frozen=True)
class MacsReport:
    """Result of :func:`count_macs`; every count is in multiply-accumulates (MACs).

    Attributes:
        total: MACs of one forward pass at the profiled input shape (batch included).
        by_operator: MACs per operator (fvcore's short names, e.g. ``conv``, ``linear``,
            ``scaled_dot_product_attention``), largest first.
        by_module: MACs per top-level child module (``named_children`` names); work done
            directly in the root's ``forward`` is in ``total`` only.
        skipped_ops: operator name (e.g. ``aten::softmax``) -> number of occurrences in the trace
            that were not counted. Ops fvcore deliberately treats as free (ReLU, views,
            reshapes, ...) are not listed.
        activations: output elements of convolutions / matmuls / linears
            (fvcore ``ActivationCountAnalysis``); 0 when not requested.
        by_submodule: MACs per module at every depth (qualified ``named_modules`` names,
            e.g. ``blocks.0.conv``; the root is ``""``), for summaries deeper than one level.
    """

    total: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    skipped_ops: dict[str, int]
    activations: int
    by_submodule: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def count_params(model: nn.Module) -> ParamCount:
    """Count parameters of ``model`` (of its original module if it is ``torch.compile``-d)."""
    params = list(unwrap_compiled(model).parameters())
    return ParamCount(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
    )


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """Return the original module behind a ``torch.compile`` wrapper (``_orig_mod``)."""
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod  # type: ignore[assignment]
    return model


def format_count(value: float, unit: str = "") -> str:
    """A count with a K/M/G prefix: ``2.20 M`` (parameters), ``1.30 GMac``, ``5.1 K``."""
    v = float(value)
    if abs(v) >= 1e9:
        return f"{v / 1e9:.2f} G{unit}"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f} M{unit}"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f} K{unit}"
    return f"{v:.0f}{(' ' + unit) if unit else ''}"


def format_macs(n: float) -> str:
    """Human-readable MAC count: ``0.31 GMac``, ``22.1 MMac``, ``4.5 KMac``, ``12 Mac``."""
    if abs(n) >= 1e8:
        return f"{n / 1e9:.2f} GMac"
    if abs(n) >= 1e5:
        return f"{n / 1e6:.1f} MMac"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.1f} KMac"
    return f"{n:.0f} Mac"


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the first parameter/buffer and dtype of the first floating one (CPU/fp32 else)."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own ``training`` flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


# --------------------------------------------------------------------------------------------
# extra fvcore handles (inputs/outputs are torch._C.Value objects from the jit graph)
# --------------------------------------------------------------------------------------------


def _shape(value: Any) -> list[int] | None:
    if value.isCompleteTensor():
        return list(value.type().sizes())
    return None


def _contraction_handle(operand: int, dim: int) -> _Handle:
    """MACs = output elements * size of the contracted dim (``inputs[operand].shape[dim]``)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        out = _shape(outputs[0])
        operand_shape = _shape(inputs[operand])
        if out is None or not operand_shape:
            return 0
        return math.prod(out) * operand_shape[dim]

    return handle


def _summed_contraction_handle(batch_operand: int) -> _Handle:
    """``addbmm``: output (n, p) summed over batch b of (b, n, m) @ (b, m, p) -> b*n*m*p."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        out = _shape(outputs[0])
        batch1 = _shape(inputs[batch_operand])
        if out is None or batch1 is None:
            return 0
        return math.prod(out) * batch1[0] * batch1[-1]

    return handle


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``Q @ K^T`` + ``attn @ V``: prod(batch dims of Q) * Lq * Lk * (Dqk + Dv).

    Shared by ``aten::scaled_dot_product_attention`` and the fused variants, whose first three
    inputs are query (..., Lq, Dqk), key (..., Lk, Dqk), value (..., Lk, Dv). Batch dims come from
    the query, so grouped-query attention (fewer K/V heads) is counted per query head.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None or len(q) < 2:
        return 0
    *batch, lq, dqk = q
    return math.prod(batch) * lq * k[-2] * (dqk + v[-1])


_SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
)

EXTRA_MAC_HANDLES: dict[str, _Handle] = {
    **dict.fromkeys(_SDPA_OPS, _sdpa_handle),
    # out = a @ b (broadcasting, 1-D operands allowed): out elements * a.shape[-1]
    "aten::matmul": _contraction_handle(0, -1),
    "aten::mm": _contraction_handle(0, -1),
    "aten::bmm": _contraction_handle(0, -1),
    "aten::mv": _contraction_handle(0, -1),
    "aten::dot": _contraction_handle(0, -1),
    "aten::vdot": _contraction_handle(0, -1),
    # self + batch1 @ batch2 / self + mat @ vec: the beta*self term is elementwise (not counted)
    "aten::baddbmm": _contraction_handle(1, -1),
    "aten::addmv": _contraction_handle(1, -1),
    "aten::addbmm": _summed_contraction_handle(1),
}
"""Handles :func:`count_macs` adds to (or overrides in) fvcore's defaults, by op name."""


# --------------------------------------------------------------------------------------------
# count_macs
# --------------------------------------------------------------------------------------------


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    if isinstance(inputs, tuple | list):
        return type(inputs)(_to_device(x, device) for x in inputs)
    return inputs


def _as_int_dict(counter: Any) -> dict[str, int]:
    items = ((str(k), round(v)) for k, v in counter.items())
    return dict(sorted(items, key=lambda kv: -kv[1]))


def count_macs(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    inputs: Tensor | tuple[Any, ...] | None = None,
    *,
    activations: bool = True,
) -> MacsReport:
    """Count MACs of one forward pass with fvcore (plus the handles in :data:`EXTRA_MAC_HANDLES`).

    Args:
        model: the module to profile. It is not modified: every submodule's ``training`` flag is
            restored and no parameter is touched. A ``torch.compile`` wrapper is unwrapped.
        input_shape: shape of a random input tensor, batch included (e.g. ``(1, 3, 224, 224)``),
            created on the model's device with the dtype of its first floating parameter.
        inputs: explicit positional inputs instead (a tensor or a tuple of arguments); tensors
            are moved to the model's device. Exactly one of ``input_shape``/``inputs``.
        activations: also run fvcore's ``ActivationCountAnalysis`` (a second trace).

    Returns:
        A :class:`MacsReport` (all counts are MACs, for the whole batch).
    """
    if (input_shape is None) == (inputs is None):
        raise ValueError("pass exactly one of `input_shape` or `inputs`")
    module = unwrap_compiled(model)
    device, dtype = model_device_dtype(module)
    if inputs is None:
        assert input_shape is not None
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
        args: tuple[Any, ...] = (x.to(device=device, dtype=dtype),)  # global RNG untouched
    else:
        args = _to_device(inputs if isinstance(inputs, tuple) else (inputs,), device)

    with eval_mode(module), torch.no_grad():
        flops = (
            FlopCountAnalysis(module, args)
            .set_op_handle(**EXTRA_MAC_HANDLES)
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        total = round(flops.total())
        by_operator = _as_int_dict(flops.by_operator())
        per_module = flops.by_module()
        skipped = _as_int_dict(flops.unsupported_ops())
        n_activations = 0
        if activations:
            acts = (
                ActivationCountAnalysis(module, args)
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
                .tracer_warnings("none")
            )
            n_activations = round(acts.total())

    by_module = {
        name: round(per_module.get(flops.canonical_module_name(name), 0))
        for name, _ in module.named_children()
    }
    return MacsReport(
        total=total,
        by_operator=by_operator,
        by_module=by_module,
        skipped_ops=skipped,
        activations=n_activations,
        by_submodule={
            name: round(per_module.get(flops.canonical_module_name(name), 0))
            for name, _ in module.named_modules()
        },
    )


def model_input_shape(
    net: nn.Module, fallback: tuple[int, int, int] | None = None
) -> tuple[int, int, int]:
    """(C, H, W) the model expects, from its ``input_spec``."""
    spec = getattr(net, "input_spec", None)
    if spec is not None:
        return (spec.channels, spec.size, spec.size)
    if fallback is None:
        raise ValueError(f"{type(net).__name__} declares no input_spec; cannot profile it")
    return fallback
