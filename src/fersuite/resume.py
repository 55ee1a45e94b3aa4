"""Finding the run to resume (``resume=auto``) and keeping its W&B run id.

How the run is found, in order:

1. ``ckpt_path=<file>``: Lightning resumes from that file; the run writes to its own dir.
2. ``resume=<dir>``: that run dir (its ``checkpoints/last.ckpt``); ``resume=<file.ckpt>``: that
   file, in the run dir that holds it.
3. ``resume=auto`` (or ``ckpt_path=last``): the current ``paths.output_dir`` when it has a
   ``checkpoints/last.ckpt`` (pass ``hydra.run.dir=<the killed run's dir>``); otherwise the most
   recent *unfinished* run under ``${paths.log_dir}/${task_name}/runs/``: one with
   ``checkpoints/last.ckpt`` and no ``metrics.json``, whose ``.hydra/overrides.yaml`` equals the
   current overrides once ``resume``, ``ckpt_path`` and ``hydra.*`` are ignored. When none
   matches, training starts afresh (and says so).

A resumed run keeps writing into the original run dir (checkpoints, CSV, W&B, metrics.json);
the new Hydra dir of the resuming invocation only holds its own ``.hydra`` and log.
The W&B run id is stored in ``<run dir>/wandb_run_id.txt`` and reused with ``resume="allow"``,
so the resumed run continues the same W&B run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, open_dict

from fersuite.config import ConfigError
from fersuite.errors import USER_ERRORS  # noqa: F401 - kept for importers (moved there)
from fersuite.utils.io import atomic_write

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"
#: Override keys that do not change what is trained.
IGNORED_PREFIXES = ("resume", "ckpt_path", "hydra.", "hydra/")


@dataclass(frozen=True)
class ResumeTarget:
    """Where to resume from: the checkpoint and the run dir that owns it."""

    ckpt_path: Path
    run_dir: Path
    reason: str


def _key(override: str) -> str:
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def relevant_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define the experiment (sorted), without resume/ckpt_path/hydra."""
    return sorted(o for o in overrides if not _key(o).startswith(IGNORED_PREFIXES))


def current_overrides() -> list[str] | None:
    """The task overrides of the running Hydra job, or None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra job (library use)
        return None


def read_overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in data] if isinstance(data, list) else None


def is_unfinished(run_dir: Path) -> bool:
    return (run_dir / LAST).is_file() and not (run_dir / "metrics.json").is_file()


def find_unfinished_run(
    runs_dir: Path, overrides: list[str] | None, exclude: Path | None = None
) -> Path | None:
    """The most recent unfinished run in ``runs_dir`` trained with the same overrides."""
    if not runs_dir.is_dir():
        return None
    wanted = relevant_overrides(overrides or [])
    candidates = []
    for run in runs_dir.iterdir():
        if not run.is_dir() or (exclude is not None and run.resolve() == exclude.resolve()):
            continue
        if not is_unfinished(run):
            continue
        theirs = read_overrides(run)
        if theirs is None or relevant_overrides(theirs) != wanted:
            continue
        candidates.append(((run / LAST).stat().st_mtime, run.name, run))
    return max(candidates)[2] if candidates else None


def resolve_resume(cfg: DictConfig) -> ResumeTarget | None:
    """Apply the rules of the module doc to ``cfg.resume`` / ``cfg.ckpt_path``."""
    mode = cfg.get("resume")
    ckpt = cfg.get("ckpt_path")
    out_dir = Path(cfg.paths.output_dir)
    if ckpt and str(ckpt) != "last":
        path = Path(str(ckpt))
        if not path.is_file():
            raise ConfigError(f"ckpt_path={ckpt}: no such checkpoint file")
        return ResumeTarget(path, out_dir, f"ckpt_path={ckpt}")
    if str(ckpt) == "last" and not mode:
        mode = "auto"
    if not mode:
        return None
    mode = str(mode)
    if mode != "auto":
        path = Path(mode)
        if path.is_dir() and (path / LAST).is_file():
            return ResumeTarget(path / LAST, path, f"resume={mode}")
        if path.is_file() and path.suffix == ".ckpt":
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            return ResumeTarget(path, run_dir, f"resume={mode}")
        raise ConfigError(
            f"resume={mode}: expected 'auto', a run dir holding {LAST} or a .ckpt file"
        )
    if (out_dir / LAST).is_file():
        return ResumeTarget(out_dir / LAST, out_dir, "resume=auto: the current run dir")
    runs_dir = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs"
    found = find_unfinished_run(runs_dir, current_overrides(), exclude=out_dir)
    if found is None:
        log.warning(
            "resume=auto: no unfinished run with these overrides under %s; starting a new run",
            runs_dir,
        )
        return None
    return ResumeTarget(found / LAST, found, "resume=auto: latest unfinished run, same overrides")


def prepare_resume(cfg: DictConfig) -> str | None:
    """Resolve what to resume, check the file is a safe checkpoint, and point
    ``cfg.paths.output_dir`` at the run dir that owns it. Returns the ``ckpt_path`` for
    ``trainer.fit`` (``None``: start afresh)."""
    target = resolve_resume(cfg)
    if target is None:
        return None
    from fersuite.checkpoint import read_checkpoint

    # weights_only=True: a crafted pickle is refused here, before Lightning sees the file,
    # and a truncated file is reported by name.
    read_checkpoint(target.ckpt_path)
    if target.run_dir.resolve() != Path(cfg.paths.output_dir).resolve():
        with open_dict(cfg):
            cfg.paths.output_dir = str(target.run_dir)
    if cfg.get("train", True):
        print(f"resuming {target.run_dir} from {target.ckpt_path} ({target.reason})", flush=True)
    return str(target.ckpt_path)


# -- W&B run id ------------------------------------------------------------------------------
def read_wandb_id(run_dir: Path) -> str | None:
    try:
        text = (run_dir / WANDB_ID_FILE).read_text().strip()
    except OSError:
        return None
    return text if text and text.replace("-", "").replace("_", "").isalnum() else None


def write_wandb_id(run_dir: Path, run_id: str) -> None:
    atomic_write(run_dir / WANDB_ID_FILE, lambda fh: fh.write(f"{run_id}\n"))


def remember_wandb_id(loggers: list[Any], run_dir: Path) -> None:
    """Store the W&B run id of the (already started) W&B logger in the run dir."""
    for lg in loggers:
        if type(lg).__name__ != "WandbLogger":
            continue
        try:
            run_id = str(lg.experiment.id)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            log.warning("could not read the W&B run id (%s); a resume starts a new W&B run", exc)
            continue
        if run_id and run_id != read_wandb_id(run_dir):
            write_wandb_id(run_dir, run_id)
