"""EfficiencyCallback: params, MACs, training images/s, latency and throughput of every run."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from fersuite.errors import ConfigError
from fersuite.profiling import (
    LATENCY_PROTOCOL,
    LatencyProtocol,
    LatencyStats,
    count_macs,
    count_params,
    measure_speed,
)
from fersuite.profiling.macs import model_input_shape
from fersuite.profiling.summary import format_summary, summary_rows

log = logging.getLogger(__name__)


def latency_context(lat: LatencyStats) -> dict[str, Any]:
    """Where and how a latency was measured: the keys written beside every latency figure."""
    return {
        "efficiency/latency_device": lat.device,
        "efficiency/latency_threads": float(lat.threads),
    }


class EfficiencyCallback(L.Callback):
    """Profiles the model once per run, never inside the training step's hot path.

    * fit start: params (total/trainable) and MACs (fvcore, one multiply-add = one MAC, with
      attention handlers; still-skipped ops are listed), and a model summary printed once:
      modules to ``summary_depth`` levels with params and MACs (:mod:`fersuite.profiling.summary`);
    * during training: images/s over whole epochs (data loading included), first
      ``warmup_batches`` batches of the run excluded;
    * fit end: batch-1 latency (median/p90 after warm-up) and throughput at ``throughput_batch``,
      measured as ``fersuite-profile`` measures them (:data:`fersuite.profiling.LATENCY_PROTOCOL`:
      by default on the CPU with one intra-op thread, wherever the model trained); the device
      and thread count are recorded as ``efficiency/latency_device`` / ``_threads``.

    Figures are logged under ``efficiency/`` and kept in :attr:`results`.
    """

    def __init__(
        self,
        latency_runs: int = LATENCY_PROTOCOL.runs,
        latency_warmup: int = LATENCY_PROTOCOL.warmup,
        throughput_batch: int = LATENCY_PROTOCOL.batch_size,
        throughput_runs: int = LATENCY_PROTOCOL.throughput_runs,
        warmup_batches: int = 3,
        threads: int = LATENCY_PROTOCOL.threads,
        device: str = LATENCY_PROTOCOL.device,
        throughput_warmup: int = LATENCY_PROTOCOL.throughput_warmup,
        summary_depth: int = 2,
    ) -> None:
        super().__init__()
        if (
            isinstance(summary_depth, bool)
            or not isinstance(summary_depth, int)
            or summary_depth < 0
        ):
            raise ConfigError(
                f"callbacks.efficiency.summary_depth={summary_depth!r}; expected an integer >= 0 "
                "(0: no model summary)"
            )
        self.summary_depth = summary_depth
        #: The model summary printed at fit start ("" when summary_depth=0).
        self.summary = ""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"callbacks.efficiency.threads={threads!r}; expected an integer >= 1")
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(
                f"callbacks.efficiency.device={device!r}; expected cpu, cuda or cuda:<index>"
            ) from exc
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"callbacks.efficiency.device={device!r} but no CUDA device is available"
            )
        self.latency_runs = latency_runs
        self.latency_warmup = latency_warmup
        self.throughput_batch = throughput_batch
        self.throughput_runs = throughput_runs
        self.throughput_warmup = throughput_warmup
        self.warmup_batches = warmup_batches
        self.threads = threads
        self.device = str(device)
        self.results: dict[str, Any] = {}
        self._seen_batches = 0
        self._images = 0
        self._elapsed = 0.0
        self._t0: float | None = None

    # -- helpers -------------------------------------------------------------------------
    def _net(self, pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", pl_module)
        return getattr(net, "_orig_mod", net)  # torch.compile wrapper

    def _log(self, trainer: L.Trainer, values: dict[str, float]) -> None:
        self.results.update(values)
        for logger in trainer.loggers:
            try:
                logger.log_metrics(values, step=trainer.global_step)
                exp = getattr(logger, "experiment", None)
                summary = getattr(exp, "summary", None)
                if summary is not None and hasattr(summary, "update"):
                    summary.update(values)
            except Exception as exc:  # noqa: BLE001
                log.warning(
                    "could not log efficiency figures to %s: %s", type(logger).__name__, exc
                )

    # -- hooks ---------------------------------------------------------------------------
    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = self._net(pl_module)
        shape = model_input_shape(net)
        params = count_params(net)
        macs = count_macs(net, input_shape=(1, *shape))
        if self.summary_depth:
            rows = summary_rows(net, macs, self.summary_depth)
            self.summary = format_summary(rows, params.total, macs, (1, *shape))
            log.info("model summary (%s):\n%s", type(net).__name__, self.summary)
        self.results["efficiency/skipped_ops"] = sorted(macs.skipped_ops)
        self.results["efficiency/input_shape"] = list(shape)
        self._log(
            trainer,
            {
                "efficiency/params": float(params.total),
                "efficiency/params_trainable": float(params.trainable),
                "efficiency/macs": float(macs.total),
                "efficiency/activations": float(macs.activations),
            },
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._seen_batches >= self.warmup_batches and self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._seen_batches += 1
        if self._t0 is not None:
            self._images += (
                int(batch["image"].shape[0]) if isinstance(batch, dict) else len(batch[0])
            )

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            self._elapsed += time.perf_counter() - self._t0
            self._t0 = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates (and checkpoints) before on_train_epoch_end: stop the clock here;
        # the next training batch restarts it (mid-epoch validation included).
        self._stop_clock()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock()
        if self._elapsed > 0 and self._images > 0:
            ips = self._images * trainer.world_size / self._elapsed
            self._log(trainer, {"efficiency/train_ips": ips})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = None

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = self._net(pl_module)
        shape = model_input_shape(net)
        protocol = LatencyProtocol(
            device=self.device,
            threads=self.threads,
            warmup=self.latency_warmup,
            runs=self.latency_runs,
            batch_size=self.throughput_batch,
            throughput_warmup=self.throughput_warmup,
            throughput_runs=self.throughput_runs,
        )
        lat, thr = measure_speed(net, shape, protocol)
        self.results.update(latency_context(lat))
        self._log(
            trainer,
            {
                "efficiency/latency_ms_b1": lat.median_ms,
                "efficiency/latency_ms_b1_p90": lat.p90_ms,
                "efficiency/latency_threads": float(lat.threads),
                "efficiency/throughput_ips": thr.images_per_s,
            },
        )
        torch.set_grad_enabled(True)
