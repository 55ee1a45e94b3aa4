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

What a resume may change (:func:`check_config`): the resumed config is compared with the one
the run recorded in ``<run dir>/run_info.json`` (read as plain data; ``.hydra/config.yaml`` is
not used: a resume with ``hydra.run.dir=<run>`` has Hydra rewrite it first). Each differing key
is refused in one line (old → new, exit 2) unless ``resume_allow_changes`` lists it (or its
group, e.g. ``[optimizer]``); ``trainer.max_epochs`` may always grow. ``seed`` cannot change
(the checkpoint restores the random state). Not compared, as they do not change what is
trained: :data:`IGNORED_CONFIG` and every key whose value is built from ``paths.*``, Hydra's
run dir or the environment (checkpoint dirs, caches). An allowed ``optimizer.*`` change is
applied to the restored optimizer (:class:`ApplyOptimizerConfig`); ``run_info.json`` records
the config that ran.

A finished run (``metrics.json``) is left as it is: resuming it is refused (exit 2) unless
``trainer.max_epochs`` is larger than it was; then it trains on and ``metrics.json`` is written
anew at the end. A run killed after fit but before ``metrics.json`` is unfinished: its resume
finds fit complete, tests the best checkpoint recorded in its state and writes ``metrics.json``
with the fit's figures (val/*, train/*, ...) as they were when that checkpoint was written
(:class:`FitMetrics` keeps them in every checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import yaml
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf, open_dict

from fersuite.checkpoint import read_checkpoint
from fersuite.config import current_overrides, override_key
from fersuite.errors import ConfigError, UntrustedFileError, UserError
from fersuite.utils.io import atomic_write
from fersuite.utils.run_info import scalar_metrics

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"
#: Override keys that do not change what is trained.
IGNORED_PREFIXES = ("resume", "ckpt_path", "hydra.", "hydra/")
RUN_INFO = "run_info.json"
#: Config keys (and groups) a resume never compares: where files go, what is reported and
#: how often last.ckpt is written, not what is trained.
IGNORED_CONFIG = (
    "paths",
    "hydra",
    "resume",
    "resume_allow_changes",
    "ckpt_path",
    "train",
    "test",
    "task_name",
    "tags",
    "optimized_metric",
    "report",
    # the test sets the run is tested on after training (cross/<dataset>/*): evaluation only,
    # so a resumed run may add, drop or change them
    "datasets",
    "logger",
    "checkpoint",
    "data.num_workers",
    "callbacks.efficiency",
    "callbacks.progress_bar",
    "callbacks.reports",
    "callbacks.lr_monitor",
    "callbacks.periodic_checkpoint",
)
#: Keys a resume cannot change, allowed or not.
FIXED_CONFIG = ("seed",)
#: An interpolation of one of these makes a key a location (not compared).
_LOCATION_REFS = ("${paths.", "${hydra:", "${oc.env:", "${now:")
_ALIAS = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")
_MAX_RUN_INFO = 16 * 1024 * 1024
_MAX_DEPTH = 64
_MAX_KEYS = 100_000
_UNSET = object()


@dataclass(frozen=True)
class ResumeTarget:
    """Where to resume from: the checkpoint and the run dir that owns it."""

    ckpt_path: Path
    run_dir: Path
    reason: str


def _under(key: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """``key`` is one of ``prefixes`` or inside one (``optimizer`` covers ``optimizer.lr``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def relevant_overrides(overrides: list[str], ignore: tuple[str, ...] = ()) -> list[str]:
    """The overrides that define the experiment (sorted), without resume/ckpt_path/hydra
    (and the keys of ``ignore``)."""
    return sorted(
        o
        for o in overrides
        if not override_key(o).startswith(IGNORED_PREFIXES) and not _under(override_key(o), ignore)
    )


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
    runs_dir: Path,
    overrides: list[str] | None,
    exclude: Path | None = None,
    ignore: tuple[str, ...] = (),
) -> Path | None:
    """The most recent unfinished run in ``runs_dir`` trained with the same overrides (the keys
    of ``ignore``, i.e. ``resume_allow_changes``, may differ)."""
    if not runs_dir.is_dir():
        return None
    wanted = relevant_overrides(overrides or [], ignore)
    candidates = []
    for run in runs_dir.iterdir():
        if not run.is_dir() or (exclude is not None and run.resolve() == exclude.resolve()):
            continue
        if not is_unfinished(run):
            continue
        theirs = read_overrides(run)
        if theirs is None or relevant_overrides(theirs, ignore) != wanted:
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
    found = find_unfinished_run(
        runs_dir, current_overrides(), exclude=out_dir, ignore=allowed_changes(cfg)
    )
    if found is None:
        log.warning(
            "resume=auto: no unfinished run with these overrides under %s; starting a new run",
            runs_dir,
        )
        return None
    return ResumeTarget(found / LAST, found, "resume=auto: latest unfinished run, same overrides")


@dataclass(frozen=True)
class Resumed:
    """What :func:`prepare_resume` resumes: the checkpoint (for ``trainer.fit``), its run dir,
    the checkpoint's global step, the allowed config changes (key → (old, new)) and whether a
    finished run is trained on with a longer schedule."""

    ckpt_path: str
    run_dir: Path
    global_step: int | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    lengthened_finished: bool = False


def allowed_changes(cfg: DictConfig) -> tuple[str, ...]:
    """``resume_allow_changes`` as config keys; a ConfigError when it is not a list of keys."""
    raw = cfg.get("resume_allow_changes")
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    else:
        raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else raw
    if not isinstance(raw, list) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z_][\w.]*", k) for k in raw
    ):
        raise ConfigError(
            f"resume_allow_changes={raw!r}; expected a list of config keys, e.g. [optimizer.lr]"
        )
    return tuple(raw)


def _flatten(value: Any, prefix: str, out: dict[str, Any], source: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH or len(out) > _MAX_KEYS:
        raise UntrustedFileError(f"{source}: 'config' is nested too deeply or too large")
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UntrustedFileError(
                    f"{source}: config key {k!r} under {prefix!r}; expected text"
                )
            _flatten(v, f"{prefix}.{k}" if prefix else k, out, source, depth + 1)
    else:
        out[prefix] = value


def read_saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run recorded in ``run_info.json``, flattened to ``key.sub → value`` (plain
    JSON data, never resolved); None when the run has no ``run_info.json``."""
    path = run_dir / RUN_INFO
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_RUN_INFO + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UntrustedFileError(f"{path}: cannot be read ({exc.strerror})") from exc
    if len(raw) > _MAX_RUN_INFO:
        raise UntrustedFileError(f"{path}: larger than {_MAX_RUN_INFO} bytes; expected run info")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UntrustedFileError(f"{path}: not JSON; expected the run's run_info.json") from exc
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise UntrustedFileError(
            f"{path}: 'config' is missing or not a mapping; expected the run's config"
        )
    flat: dict[str, Any] = {}
    _flatten(config, "", flat, str(path))
    return flat


def _plain(cfg: DictConfig, resolve: bool) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=resolve)
    flat: dict[str, Any] = {}
    # as run_info.json stores it (JSON types)
    _flatten(json.loads(json.dumps(data, default=str)), "", flat, "the config")
    return flat


def _raw_value(raw: dict[str, Any], key: str) -> Any:
    """The unresolved value at ``key`` or at the nearest parent that is one value."""
    while key:
        if key in raw:
            return raw[key]
        key = key.rpartition(".")[0]
    return None


def _is_location(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and any(r in v for r in _LOCATION_REFS) for v in values)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (1 == 1.0, but True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return (
        a == b
        if isinstance(a, int | float) and isinstance(b, int | float)
        else (type(a) is type(b) and a == b)
    )


def _show(value: Any) -> str:
    text = "<unset>" if value is _UNSET else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def config_changes(
    saved: dict[str, Any], cfg: DictConfig
) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """The keys whose value differs between the saved (flattened) config and ``cfg``, as
    key → (old, new), without the keys that are never compared; and whether
    ``trainer.max_epochs`` grew (not listed)."""
    current, raw = _plain(cfg, resolve=True), _plain(cfg, resolve=False)
    changes: dict[str, tuple[Any, Any]] = {}
    longer = False
    for key in sorted(saved.keys() | current.keys()):
        old, new = saved.get(key, _UNSET), current.get(key, _UNSET)
        if _same(old, new) or _under(key, IGNORED_CONFIG) or _is_location(_raw_value(raw, key)):
            continue
        alias = _ALIAS.match(str(raw.get(key, "")))
        if alias is not None:
            target = alias.group(1)
            if _same(saved.get(target, _UNSET), old) and _same(current.get(target, _UNSET), new):
                continue  # listed under the key it copies
        before, after = _epochs(old), _epochs(new)
        grew = before is not None and after is not None and after > before
        if key == "trainer.max_epochs" and grew:
            longer = True
            continue
        changes[key] = (old, new)
    return changes, longer


def _epochs(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def check_config(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """Refuse (ConfigError, one line) a resume whose config differs from the run's saved one
    in keys that ``resume_allow_changes`` does not list. Returns the allowed changes and whether
    the schedule was lengthened (both empty/False when the run recorded no config)."""
    saved = read_saved_config(run_dir)
    if saved is None:
        if (run_dir / LAST).is_file():  # not a new run dir of ckpt_path=<file>
            log.warning("%s has no %s: the resumed config cannot be compared", run_dir, RUN_INFO)
        return {}, False
    changes, longer = config_changes(saved, cfg)
    allowed = allowed_changes(cfg)
    fixed = [k for k in changes if _under(k, FIXED_CONFIG)]
    if fixed:
        old, new = changes[fixed[0]]
        raise ConfigError(
            f"resume of {run_dir}: {fixed[0]}: {_show(old)} → {_show(new)} cannot change on "
            "resume (the checkpoint restores the random state); pass the run's value"
        )
    refused = {k: v for k, v in changes.items() if not _under(k, allowed)}
    if refused:
        listed = ", ".join(f"{k}: {_show(o)} → {_show(n)}" for k, (o, n) in refused.items())
        raise ConfigError(
            f"resume of {run_dir}: the config differs from the run's ({run_dir / RUN_INFO}): "
            f"{listed}; pass the run's values, or allow the change with "
            f"resume.allow_changes=[{','.join(refused)}] (trainer.max_epochs may always grow)"
        )
    return changes, longer


def _global_step(ckpt: dict[str, Any]) -> int | None:
    step = ckpt.get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def prepare_resume(cfg: DictConfig) -> Resumed | None:
    """Resolve what to resume, check the file is a safe checkpoint, check what the resumed run
    may change (:func:`check_config`, a finished run) and point ``cfg.paths.output_dir`` at the
    run dir that owns it. None: start afresh.

    When training (``train=true``) a finished run (``metrics.json``) is refused unless
    ``trainer.max_epochs`` grew, and a config that differs from the run's is refused unless
    ``resume_allow_changes`` lists the keys."""
    target = resolve_resume(cfg)
    if target is None:
        return None

    # weights_only=True: a crafted pickle is refused here, before Lightning sees the file,
    # and a truncated file is reported by name.
    ckpt = read_checkpoint(target.ckpt_path)
    if target.run_dir.resolve() != Path(cfg.paths.output_dir).resolve():
        with open_dict(cfg):
            cfg.paths.output_dir = str(target.run_dir)
    fitting = bool(cfg.get("train", True))
    changes: dict[str, tuple[Any, Any]] = {}
    longer = False
    if fitting:
        changes, longer = check_config(cfg, target.run_dir)
        metrics = target.run_dir / "metrics.json"
        if metrics.is_file() and not longer:
            epochs = _epochs(cfg.trainer.get("max_epochs"))
            more = f"<more than {epochs}>" if epochs else "<more>"
            raise UserError(
                f"{target.run_dir} already finished ({metrics}); nothing to resume. To train "
                f"longer pass trainer.max_epochs={more}"
            )
        if changes:
            log.info("resume: allowed changes %s", {k: v[1] for k, v in changes.items()})
        print(f"resuming {target.run_dir} from {target.ckpt_path} ({target.reason})", flush=True)
    return Resumed(
        ckpt_path=str(target.ckpt_path),
        run_dir=target.run_dir,
        global_step=_global_step(ckpt),
        changes=changes,
        lengthened_finished=longer and (target.run_dir / "metrics.json").is_file(),
    )


class ApplyOptimizerConfig(L.Callback):
    """Set the hyperparameters of the config on the optimizer Lightning restored (an allowed
    ``optimizer.*`` change of a resume; the restored state would keep the old ones). The
    learning rate is scaled by new/old base rate, so the schedule's position is kept."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fresh = pl_module.configure_optimizers()
        opts = fresh if isinstance(fresh, list | tuple) else [fresh]
        new_opts = [o["optimizer"] if isinstance(o, dict) else o for o in opts]
        for restored, new in zip(trainer.optimizers, new_opts, strict=False):
            if len(restored.param_groups) != len(new.param_groups):
                log.warning("resume: the optimizer's groups changed; its settings are kept")
                continue
            for group, ref in zip(restored.param_groups, new.param_groups, strict=True):
                old_base = group.get("initial_lr", group["lr"])
                new_base = ref.get("initial_lr", ref["lr"])
                for key, value in ref.items():
                    if key not in ("params", "lr", "initial_lr"):
                        group[key] = value
                if old_base and new_base != old_base:
                    group["lr"] = group["lr"] * new_base / old_base
                if "initial_lr" in group:
                    group["initial_lr"] = new_base
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if hasattr(sched, "base_lrs"):
                groups = sched.optimizer.param_groups
                sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in groups]
                sched._last_lr = [g["lr"] for g in groups]  # type: ignore[attr-defined]


#: The key of the fit's figures in a checkpoint (written by :class:`FitMetrics`).
FIT_METRICS_KEY = "fersuite_fit_metrics"
_MAX_FIT_METRICS = 10_000
_MAX_METRIC_NAME = 256


def parse_fit_metrics(raw: Any, source: str) -> dict[str, float]:
    """The fit's figures stored in a checkpoint as metric name → finite number; empty when
    the checkpoint has none (written before they were kept). :class:`UntrustedFileError`
    (one line) when they are malformed."""
    if raw is None:
        return {}
    where = f"{source}: {FIT_METRICS_KEY}"
    if not isinstance(raw, dict):
        raise UntrustedFileError(
            f"{where} is a {type(raw).__name__}; expected a dict of metric name: number"
        )
    if len(raw) > _MAX_FIT_METRICS:
        raise UntrustedFileError(
            f"{where} has {len(raw)} entries; expected at most {_MAX_FIT_METRICS}"
        )
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not (isinstance(key, str) and 0 < len(key) <= _MAX_METRIC_NAME and key.isprintable()):
            raise UntrustedFileError(
                f"{where}: key {str(key)[:80]!r}; expected a metric name (printable text, "
                f"at most {_MAX_METRIC_NAME} characters)"
            )
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)):
            raise UntrustedFileError(
                f"{where}[{key[:80]!r}] is {str(value)[:40]!r}; expected a finite number"
            )
        out[key] = float(value)
    return out


class FitMetrics(L.Callback):
    """Keeps the fit's figures (``trainer.callback_metrics``: val/*, train/*, lr-*, ...) in
    every checkpoint, as they are when it is written, and reads them back when fit resumes.

    ``restored``: the figures of the checkpoint fit resumed from (empty for a fresh run). Fit
    updates the figures it logs again, so ``{**restored, **trainer.callback_metrics}`` after
    fit is what an uninterrupted fit ends with, also when it resumed with nothing left to train
    (killed after its last checkpoint)."""

    def __init__(self) -> None:
        self.restored: dict[str, float] = {}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:

        # plain floats (read back by weights_only loading, bit for bit); a resumed fit's
        # checkpoint keeps the figures it was resumed with that it has not logged again
        checkpoint[FIT_METRICS_KEY] = {**self.restored, **scalar_metrics(trainer.callback_metrics)}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # not the best checkpoint test loads
            source = str(trainer.ckpt_path or "the resumed checkpoint")
            self.restored = parse_fit_metrics(checkpoint.get(FIT_METRICS_KEY), source)


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
