"""Where the configs live and early validation of a composed config."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fersuite.config_schema import validate_schema
from fersuite.errors import ConfigError
from fersuite.models.registry import list_models

log = logging.getLogger(__name__)


def _config_dir() -> str:
    """Where the Hydra configs are, first match wins:

    1. ``FERSUITE_CONFIG_DIR`` when set;
    2. ``<package dir>/conf``: an installed wheel (it carries the top-level ``conf/`` there);
    3. the checkout's top-level ``conf/`` beside ``src/`` (an editable install or a checkout).

    Neither 2 nor 3 existing raises a one-line :class:`ConfigError` naming both places.
    """
    env = os.environ.get("FERSUITE_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    here = Path(__file__).resolve()
    candidates = (here.parent / "conf", here.parents[2] / "conf")
    for conf in candidates:
        if conf.is_dir():
            return str(conf)
    raise ConfigError(
        "no fersuite configs: neither "
        + " nor ".join(str(c) for c in candidates)
        + " exists; set FERSUITE_CONFIG_DIR=<dir holding train.yaml>"
    )


CONFIG_DIR = _config_dir()


def validate_config(cfg: DictConfig) -> None:
    """Checks that must fail before any data is loaded, in one readable line each."""
    opt = cfg.get("optimizer")
    if opt is not None and opt.get("lr") is not None and float(opt.lr) <= 0:
        raise ConfigError(f"optimizer.lr={opt.lr}; expected a learning rate > 0")
    model = cfg.get("model")
    if model is not None and model.get("arch") is not None:
        if model.arch not in list_models():
            raise ConfigError(f"model.arch={model.arch!r}; expected one of {list_models()}")
        if (  # training EmoNet's head on a random frozen trunk is never what is meant
            model.arch == "emonet"
            and cfg.get("train", False)
            and not model.get("pretrained_path")
            and model.get("freeze_trunk", True)
        ):
            raise ConfigError(
                "model=emonet: model.pretrained_path is not set, so only the head would train on "
                "a random frozen trunk; set model.pretrained_path=<emonet_8.pth> or "
                "model.freeze_trunk=false"
            )
    trainer = cfg.get("trainer")
    if (
        trainer is not None
        and trainer.get("max_epochs") is not None
        and int(trainer.max_epochs) < 1
    ):
        raise ConfigError(f"trainer.max_epochs={trainer.max_epochs}; expected >= 1")
    margins = OmegaConf.select(cfg, MARGIN_KEY, default=None)
    equivalence_margins(  # a study's report must not fail after its jobs have run
        OmegaConf.to_container(margins) if isinstance(margins, DictConfig) else margins
    )
    # Structured checks of every group (keys, simple types, impossible values).

    validate_schema(cfg)
    warn_unset_recommended(cfg)


def warn_unset_recommended(cfg: DictConfig) -> None:
    """One warning per ``recommended`` key (set by presets: key -> why) left null or empty."""
    for key, why in (cfg.get("recommended") or {}).items():
        value = OmegaConf.select(cfg, str(key), default=None, throw_on_resolution_failure=False)
        if value is None or value == "":
            log.warning("%s is not set: %s", key, " ".join(str(why).split()))


def settings_keys(
    cfg: DictConfig | Mapping[str, Any] | None, allowed: Iterable[str], group: str
) -> dict[str, Any]:
    """A config group as a plain dict, every key checked against ``allowed`` (one-line error)."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    raw = dict(raw or {})
    known = set(allowed)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown {group} keys {unknown}; expected some of {sorted(known)}")
    return raw


def require_ckpt_path(cfg: DictConfig, app: str) -> str:
    """``cfg.ckpt_path`` as a string; one line naming the key when it is not set."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(
            f"ckpt_path is not set: {app} ckpt_path=<file.ckpt written by fersuite-train"
            + (" | model.onnx | model.pte | model.pt>" if app == "fersuite-eval" else ">")
        )
    return str(cfg.ckpt_path)


def current_overrides() -> list[str] | None:
    """The task overrides of the running Hydra job (the command line), or None outside Hydra."""
    try:
        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # noqa: BLE001 - no Hydra job (library use)
        return None


def override_key(override: str) -> str:
    """The key an override sets (``+a.b=1`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


#: The metrics a study's report compares between arms (higher is better for each).
HEADLINE_METRICS = ("acc", "balanced_acc", "f1_macro", "valence_ccc", "arousal_ccc")
#: The config key of the declared equivalence margins (:mod:`fersuite.reporting.compare`).
MARGIN_KEY = "report.equivalence_margin"


def _margin(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}; expected a finite number >= 0 (or null: no margin)")
    if value < 0:
        raise ConfigError(f"{key}={value!r}; expected a finite number >= 0 (or null: no margin)")
    return float(value)


def equivalence_margins(value: Any, key: str = MARGIN_KEY) -> dict[str, float]:
    """The equivalence margin of each metric from a number (every metric) or a mapping
    metric -> number (null: no margin). Raises :class:`ConfigError` naming ``key`` (and the
    metric) for anything else."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {}
        for metric, v in value.items():
            if metric not in HEADLINE_METRICS:
                raise ConfigError(
                    f"{key}.{metric}: not a compared metric; expected some of "
                    f"{list(HEADLINE_METRICS)} (e.g. {key}={{acc: 0.02, f1_macro: 0.02}})"
                )
            m = _margin(f"{key}.{metric}", v)
            if m is not None:
                out[str(metric)] = m
        return out
    m = _margin(key, value)
    return {} if m is None else dict.fromkeys(HEADLINE_METRICS, m)
