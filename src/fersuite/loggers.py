"""Experiment loggers: W&B (offline unless configured), always with a safe fallback."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from fersuite.errors import UntrustedFileError
from fersuite.utils.io import atomic_write

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_configured() -> bool:
    """True when the user has W&B credentials (``WANDB_API_KEY`` or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in rc.hosts)


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto``: ``$WANDB_MODE`` if set, else online with credentials, else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode!r}; expected one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled", "dryrun", "run"):
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_configured() else "offline"


def _hydra_run_info() -> tuple[str | None, str | None]:
    """(override string, sweep dir name) of the current Hydra job, when there is one."""
    try:
        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001
        return None, None
    name = hc.job.override_dirname or hc.job.name
    group = Path(hc.sweep.dir).name if hc.mode is not None and hc.mode.name == "MULTIRUN" else None
    return name, group


def make_wandb_logger(
    project: str = "fersuite",
    mode: str = "auto",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    entity: str | None = None,
    log_model: bool = False,
    **kwargs: Any,
) -> Any:
    """A Lightning ``WandbLogger``; ``None`` when the mode is ``disabled``.

    Run name defaults to the Hydra override string, group to the multirun sweep.
    """
    resolved = resolve_wandb_mode(mode)
    if resolved == "disabled":
        return None

    hydra_name, hydra_group = _hydra_run_info()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        name=name or hydra_name or None,
        group=group or hydra_group,
        tags=list(tags) if tags else None,
        entity=entity,
        save_dir=save_dir,
        offline=resolved == "offline",
        log_model=log_model,
        **kwargs,
    )


def wandb_where(run: Any) -> str:
    """Where a W&B run's data is, in words: the run's URL when it was uploaded; the offline
    run dir and the command that uploads it otherwise (an offline run uploaded nothing)."""
    settings = getattr(run, "settings", None)
    if getattr(settings, "mode", None) == "offline" or getattr(run, "offline", False):
        where = getattr(settings, "sync_dir", None) or str(Path(run.dir).parent)
        return (
            f"W&B run saved offline in {where} (not uploaded); upload it with: wandb sync {where}"
        )
    url = getattr(run, "url", None)
    return f"W&B run uploaded: {url}" if url else "W&B run finished"


def finish_wandb() -> None:
    """Close the active W&B run, if any, so multirun jobs never bleed into each other, and
    say where its data is (:func:`wandb_where`)."""
    try:
        import wandb

        run = wandb.run
        if run is not None:
            where = wandb_where(run)
            wandb.finish()
            log.info("%s", where)
    except Exception as exc:  # noqa: BLE001
        log.warning("wandb.finish() failed: %s", exc)


def _resumed_csv_logger() -> type:
    """:class:`ResumedCSVLogger`, made on first use (Lightning is imported only then)."""

    class _KeptHistoryWriter(ExperimentWriter):
        def __init__(self, log_dir: str, keep_before: int) -> None:
            self.keep_before = keep_before
            super().__init__(log_dir=log_dir)

        def _check_log_dir_exists(self) -> None:
            # Lightning deletes metrics.csv here; keep its rows logged before the resumed step
            # (those after it are logged again by the resumed run: each one once).
            path = Path(self.metrics_file_path)
            if not path.is_file():
                return
            try:
                with path.open(newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh)
                    fields = list(reader.fieldnames or [])
                    rows = [r for r in reader if _step(r.get("step")) < self.keep_before]
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise UntrustedFileError(
                    f"{path}: not a CSV metrics history ({exc}); move it away to resume"
                ) from exc
            if "step" not in fields or any(None in r for r in rows):
                raise UntrustedFileError(
                    f"{path}: expected a CSV metrics history with a 'step' column, one value "
                    "per column; move it away to resume"
                )
            fields = sorted(fields)

            def write(fh: Any) -> None:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

            atomic_write(path, write)
            self.metrics_keys = fields

    class ResumedCSVLogger(CSVLogger):
        """Lightning's CSV logger that continues a resumed run's ``metrics.csv``: the rows
        logged before step ``keep_before`` (the checkpoint's global step) are kept."""

        def __init__(self, *args: Any, keep_before: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._keep_before = int(keep_before)

        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = _KeptHistoryWriter(self.log_dir, self._keep_before)
            return self._experiment

    return ResumedCSVLogger


def _step(value: Any) -> float:
    """A CSV row's step (rows without a readable one sort last: dropped on resume)."""
    try:
        return int(str(value))
    except ValueError:
        return float("inf")


def __getattr__(name: str) -> Any:
    if name == "ResumedCSVLogger":
        cls = _resumed_csv_logger()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
