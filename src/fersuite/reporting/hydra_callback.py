"""The Hydra callback that writes the sweep report during and at the end of every multirun.

Registered in ``fersuite/conf/hydra/default.yaml`` under ``hydra.callbacks``: it records a
failed job's exception in ``<job dir>/error.txt``, refreshes ``report.{csv,md}`` and
``pareto.png`` after each job (so a sweep aborted by a failing job still has one) and once
more when the multirun ends (:func:`fersuite.reporting.sweep.write_sweep_report`), then, when
the sweep logs to W&B (`logger.wandb`), uploads `report.csv` as a W&B table with the Pareto plot.
The comparisons of ``report_comparisons.csv`` take their equivalence margins from the job
config's ``report.equivalence_margin`` (``conf/train.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fersuite.config import MARGIN_KEY, equivalence_margins
from fersuite.errors import ConfigError
from fersuite.reporting.jobs import ERROR_FILE
from fersuite.reporting.sweep import write_sweep_report
from fersuite.reporting.wandb_utils import upload_sweep_report
from fersuite.utils.io import atomic_write

log = logging.getLogger("fersuite.report")

__all__ = ["SweepReportCallback"]


def _record_failure(hydra_cfg: Any, job_return: Any) -> None:
    """Write the exception of a failed job to ``<job dir>/error.txt`` (one line)."""

    if job_return is None or getattr(job_return, "status", None) != JobStatus.FAILED:
        return
    try:
        job_return.return_value  # noqa: B018 - re-raises the job's exception
        return
    except Exception as exc:  # noqa: BLE001
        text = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    try:
        out = Path(str(hydra_cfg.runtime.output_dir)) / ERROR_FILE
        atomic_write(out, lambda fh: fh.write(line[:500] + "\n"))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not record the failure of a job: %s", exc)


#: Sweep dirs of the multiruns started in this process, in order (read by
#: :func:`fersuite.apps.run_app` to count the failed jobs).
SWEEPS_STARTED: list[str] = []


class SweepReportCallback(Callback):
    """Hydra callback: writes the sweep report during and at the end of every multirun.

    Args:
        metric: quality axis of the Pareto plot (a ``metrics.json`` key).
        after_each_job: refresh the report after every job, not only at the end.
        pairs: groups to compare, each ``[A, B]`` (overrides picking one group, e.g.
            ``[arm=lightweight_cnn_050, arm=mobilenetv2_100]``); null: every group against the
            first.

    The equivalence margins of the comparisons are the config's ``report.equivalence_margin``
    (plain numbers per metric, :func:`fersuite.reporting.compare.equivalence_margins`); a bad
    value is a :class:`fersuite.errors.ConfigError` naming the key, raised when the multirun
    starts (Hydra shows it as a warning) and logged with every report, which is then written
    without margins.
    """

    def __init__(
        self, metric: str = "test/acc", after_each_job: bool = True, pairs: Any = None
    ) -> None:
        self.metric = metric
        self.after_each_job = after_each_job
        self.pairs = (
            None if pairs is None else [list(p) if not isinstance(p, str) else p for p in pairs]
        )

    @staticmethod
    def margins(config: DictConfig) -> dict[str, float] | None:
        """``report.equivalence_margin`` of ``config``, validated (None when it has none)."""
        value = OmegaConf.select(config, MARGIN_KEY, default=None)
        if value is None:
            return None
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        return equivalence_margins(value, MARGIN_KEY)

    def _write(self, sweep_dir: str, config: DictConfig | None = None) -> Any:
        margins: Any = None
        if config is not None:
            try:
                margins = self.margins(config)
            except ConfigError as exc:
                log.error("%s; the sweep report's comparisons have no equivalence margin", exc)
                margins = {}
        try:
            report = write_sweep_report(
                sweep_dir, metric=self.metric, pairs=self.pairs, equivalence_margin=margins
            )
        except Exception as exc:  # noqa: BLE001 - a report must never fail a finished sweep
            log.error(
                "sweep report for %s failed: %s (retry with `fersuite-report %s`)",
                sweep_dir,
                exc,
                sweep_dir,
            )
            return None
        log.info("sweep report: %s", report.paths.get("md"))
        return report

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:

        hydra_cfg = config.get("hydra")
        if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
            return
        _record_failure(hydra_cfg, job_return)
        if self.after_each_job:
            self._write(str(hydra_cfg.sweep.dir), config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The app's exit status counts this sweep's failed jobs (fersuite.apps.run_app).
        SWEEPS_STARTED.append(str(config.hydra.sweep.dir))
        self.margins(config)  # a bad margin: said once, before the first job

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        report = self._write(sweep_dir, config)
        wandb_cfg = OmegaConf.select(config, "logger.wandb", default=None)
        if report is not None and isinstance(wandb_cfg, DictConfig):
            # Only plain values are read (project, entity, mode): nothing is instantiated.
            plain = {
                k: OmegaConf.select(wandb_cfg, k, default=None)
                for k in ("project", "entity", "mode")
            }
            where = upload_sweep_report(report, plain, sweep_dir)
            if where:
                log.info("sweep report (project %s): %s", plain["project"], where)
