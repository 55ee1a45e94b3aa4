"""Structured validation of a composed config, before anything is built or loaded.

Every ``_target_`` node (``data``, ``model``, ``loss``, ``optimizer``, ``scheduler``,
``trainer``, ``task.module``, ``distill``, each ``callbacks.*`` and ``logger.*``) is checked
against the signature of the callable it names: a key the callable does not take is an error
(with the closest valid key as a suggestion), and values of simple annotated types (``int``,
``float``, ``bool``, ``str``, ``Literal``, their ``| None``) must have that type. Nested dicts
annotated with a dataclass (``data.augment``) are checked against its fields. Then a few values
that cannot work are refused (unknown timm model, fixed-resolution models at another size, class
counts a dataset cannot provide, the reliability keys). Every failure is a :class:`ConfigError`
whose message is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import timm
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from fersuite.errors import ConfigError
from fersuite.models.registry import get_model_class, list_models
from fersuite.models.timm_backbone import check_input_size
from fersuite.monitoring import monitor_direction

#: ``task.module`` names the LightningModule builder; ``distill`` (task=distill) its settings.
TARGET_GROUPS = (
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "task.module",
    "distill",
)
MULTI_GROUPS = ("callbacks", "logger")
_MODEL_FACTORY = "fersuite.models.registry.create_model"


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a target callable accepts."""

    name: str
    params: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    open: bool  # takes **kwargs that go somewhere we cannot follow


def _locate(key: str, target: str) -> Any:

    try:
        return get_object(target)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{key}._target_={target!r} cannot be imported ({first})") from exc


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        return {}


def signature_of(obj: Any) -> Signature:
    """Parameters of a function, or of a class's ``__init__`` chain through ``**kwargs``."""
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    if inspect.isclass(obj):
        for cls in obj.__mro__:
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            if cls is object:
                return Signature(obj.__name__, params, hints, open=False)
            sig = inspect.signature(init)
            var_kw = False
            for name, p in list(sig.parameters.items())[1:]:
                if p.kind is p.VAR_KEYWORD:
                    var_kw = True
                elif p.kind is not p.VAR_POSITIONAL:
                    params.setdefault(name, p)
            for name, hint in _hints(init).items():
                hints.setdefault(name, hint)
            if not var_kw:
                return Signature(obj.__name__, params, hints, open=False)
        return Signature(obj.__name__, params, hints, open=True)
    sig = inspect.signature(obj)
    open_ = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    params = {
        n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    return Signature(getattr(obj, "__name__", str(obj)), params, _hints(obj), open=open_)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def closest(word: str, *choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice most like ``word`` (difflib ratio >= ``cutoff``), or None; on a tie the
    earlier iterable wins."""
    best, best_score = None, -1.0
    for group in choices:
        for choice in group:
            score = difflib.SequenceMatcher(None, word, choice).ratio()
            if score >= cutoff and score > best_score:
                best, best_score = choice, score
    return best


#: At most this many keys of a node are listed when none is close to an unknown one.
_LISTED_KEYS = 15


def unknown_key_hint(full_key: str, key: str, node: DictConfig) -> str:
    """One line for a command-line key that the composed config does not have (``full_key``,
    the last part ``key``, below ``node``): the closest key of ``node`` or of the callable its
    ``_target_`` names, e.g. ``unknown key trainer.max_epoch; did you mean
    trainer.max_epochs?``. A parameter of that callable that the config does not set yet is
    added with ``+``."""
    prefix = full_key[: -len(key)] if full_key.endswith(key) else ""
    keys = [str(k) for k in node if not str(k).startswith("_")]
    sig = None
    if "_target_" in node:
        try:
            raw = OmegaConf.to_container(node, resolve=False)
            assert isinstance(raw, dict)
            sig = target_signature(prefix.rstrip(".") or "config", raw)
        except Exception:  # noqa: BLE001 - no signature: suggest from the config's keys only
            sig = None
    params = [p for p in (sig.params if sig else {}) if p not in keys]
    if sig is not None and key in params:
        return (
            f"{full_key} is not set in the config, but {sig.name} takes it: "
            f"add it with +{full_key}=<value>"
        )
    best = closest(key, keys, params)
    if best is not None and best in keys:
        return f"unknown key {full_key}; did you mean {prefix}{best}?"
    if best is not None and sig is not None:
        return (
            f"unknown key {full_key}; did you mean {prefix}{best}? ({sig.name} takes it; "
            f"not set in the config yet: +{prefix}{best}=<value>)"
        )
    if sig is not None and sig.open:
        return (
            f"unknown key {full_key}; {sig.name} takes more keyword arguments than the config "
            f"sets: add one with +{full_key}=<value>"
        )
    where = prefix.rstrip(".") or "the config"
    if not prefix:  # the app's own keys; hydra.* is Hydra's
        keys = [k for k in keys if k != "hydra"]
    shown = ", ".join(keys[:_LISTED_KEYS]) + (", ..." if len(keys) > _LISTED_KEYS else "")
    return f"unknown key {full_key}; {where} has the keys {shown} (all of them: --cfg job)"


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(key: str, value: Any, hint: Any) -> None:
    """Raise when ``value`` clearly does not fit a simple annotation; accept otherwise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        if isinstance(value, Mapping):  # a dict for a dataclass option: check its keys
            for arg in args:
                if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                    _check_dataclass_keys(key, value, arg)
                    return
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                _check_value(key, value, arg)
                return
            except ConfigError as exc:
                errors.append(exc)
        if errors and len(errors) == len([a for a in args if a is not type(None)]):
            allowed = " or ".join(_type_name(a) for a in args)
            raise ConfigError(f"{key}={value!r}; expected {allowed}")
        return
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{key}={value!r}; expected one of {allowed}")
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, Mapping):
            _check_dataclass_keys(key, value, hint)
            return
        ok = isinstance(value, hint)
    else:
        return  # containers, tensors, callables...: not checked here
    if not ok:
        raise ConfigError(f"{key}={value!r}; expected {_type_name(hint)}")


def _check_dataclass_keys(key: str, value: Mapping[str, Any], cls: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for k, v in value.items():
        if k not in fields:
            raise ConfigError(
                f"{key}.{k} is not a key of {cls.__name__}{_suggest(str(k), fields)} "
                f"(keys: {', '.join(fields)})"
            )
        if k in hints:
            _check_value(f"{key}.{k}", v, hints[k])


def target_signature(key: str, node: Mapping[str, Any]) -> Signature:
    target = str(node["_target_"])
    if target == _MODEL_FACTORY and node.get("arch") is not None:
        if node["arch"] not in list_models():
            raise ConfigError(f"{key}.arch={node['arch']!r}; expected one of {list_models()}")
        sig = signature_of(get_model_class(str(node["arch"])))
        params = dict(sig.params)
        params["arch"] = inspect.Parameter("arch", inspect.Parameter.KEYWORD_ONLY)
        return dataclasses.replace(sig, params=params)
    return signature_of(_locate(key, target))


def check_target_node(key: str, node: Mapping[str, Any]) -> None:
    """Keys and simple types of one ``_target_`` node (already resolved to plain data)."""
    sig = target_signature(key, node)
    for k, value in node.items():
        k = str(k)
        if k.startswith("_"):
            continue
        if k not in sig.params:
            if sig.open:
                continue
            raise ConfigError(
                f"{key}.{k} is not a key of {sig.name}{_suggest(k, sig.params)} "
                f"(keys: {', '.join(sorted(sig.params))})"
            )
        if k in sig.hints:
            _check_value(f"{key}.{k}", value, sig.hints[k])


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, throw_on_missing=False)
    if node is None or not isinstance(node, DictConfig):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "HydraConfig was not set" in str(exc):
            return None  # composed outside a Hydra job: ${hydra:...} cannot resolve here
        raise ConfigError(f"{key}: cannot resolve the config ({first})") from exc


# -- values that cannot work --------------------------------------------------------------------
def _check_model(model: Mapping[str, Any]) -> None:
    if model.get("arch") != "timm" or "name" not in model:
        return

    name = str(model["name"])
    if name not in timm.list_models():
        close = _suggest(name, timm.list_models())
        raise ConfigError(
            f"model.name={name!r} is not a timm model{close} (see timm.list_models())"
        )
    try:
        check_input_size(name, int(model.get("input_size", 0)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_data(data: Mapping[str, Any]) -> None:
    cls = _locate("data", str(data["_target_"]))
    supported = getattr(cls, "supported_num_classes", None)
    requested = data.get("num_classes")
    if supported and requested is not None and int(requested) not in tuple(supported):
        raise ConfigError(
            f"data.num_classes={requested}: {cls.__name__} provides "
            f"{' or '.join(str(n) for n in supported)} classes"
        )


def _check_reliability(cfg: DictConfig) -> None:
    guard = _resolved(cfg, "trainer_guard") or {}
    action = guard.get("on_nonfinite", "stop")
    if action not in ("stop", "skip"):
        raise ConfigError(f"trainer_guard.on_nonfinite={action!r}; expected 'stop' or 'skip'")
    skips = guard.get("max_skips", 0)
    if not isinstance(skips, int) or isinstance(skips, bool) or skips < 0:
        raise ConfigError(f"trainer_guard.max_skips={skips!r}; expected an integer >= 0")
    ck = _resolved(cfg, "checkpoint") or {}
    steps, secs = ck.get("every_n_train_steps"), ck.get("train_time_interval")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ConfigError(
            f"checkpoint.every_n_train_steps={steps!r}; expected an integer >= 1 or null"
        )
    if secs is not None and (not isinstance(secs, int | float) or secs <= 0):
        raise ConfigError(f"checkpoint.train_time_interval={secs!r}; expected seconds > 0 or null")
    if steps is not None and secs is not None:
        raise ConfigError(
            "checkpoint.every_n_train_steps and checkpoint.train_time_interval are both set; "
            "expected one of them"
        )
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise ConfigError(f"resume={resume!r}; expected null, 'auto', a run dir or a .ckpt file")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_options(cfg: DictConfig) -> None:
    """The training options of issue 16 (ema, early_stopping, tta, mixup/cutmix, accumulation)."""
    decay = OmegaConf.select(cfg, "ema.decay", default=None)
    if decay is not None and not (_number(decay) and 0.0 < decay < 1.0):
        raise ConfigError(f"ema.decay={decay!r}; expected a number in (0, 1) or null (off)")
    patience = OmegaConf.select(cfg, "early_stopping.patience", default=None)
    if patience is not None and not (
        isinstance(patience, int) and not isinstance(patience, bool) and patience >= 1
    ):
        raise ConfigError(
            f"early_stopping.patience={patience!r}; expected an integer >= 1 or null (off)"
        )
    tta = cfg.get("tta", "none")
    if tta not in ("none", "hflip"):
        raise ConfigError(f"tta={tta!r}; expected 'none' or 'hflip'")
    for key in ("data.augment.mixup", "data.augment.cutmix"):
        alpha = OmegaConf.select(cfg, key, default=0.0)
        if not (_number(alpha) and alpha >= 0):
            raise ConfigError(f"{key}={alpha!r}; expected a Beta alpha >= 0 (0: off)")
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1)
    if not (isinstance(accumulate, int) and not isinstance(accumulate, bool) and accumulate >= 1):
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate!r}; expected an integer >= 1"
        )


def _check_monitor(cfg: DictConfig) -> None:
    monitor = cfg.get("monitor")
    if monitor is None:
        return

    monitor_direction(str(monitor), cfg.get("monitor_mode"))


def validate_schema(cfg: DictConfig) -> None:
    """Run every structural check; raise :class:`ConfigError` at the first problem."""
    _check_monitor(cfg)  # first: callbacks.model_checkpoint.mode resolves from it
    _check_options(cfg)  # before callbacks.*: their errors name the top-level keys
    for group in TARGET_GROUPS:
        node = _resolved(cfg, group)
        if isinstance(node, Mapping) and "_target_" in node:
            check_target_node(group, node)
            if group == "model":
                _check_model(node)
            elif group == "data":
                _check_data(node)
    for group in MULTI_GROUPS:
        nodes = _resolved(cfg, group)
        if not isinstance(nodes, Mapping):
            continue
        for name, node in nodes.items():
            if isinstance(node, Mapping) and "_target_" in node:
                check_target_node(f"{group}.{name}", node)
    _check_reliability(cfg)


def composition_hint(exc: BaseException) -> str | None:
    """A command line Hydra cannot compose, answered with the closest valid choice: an unknown
    key (``trainer.max_epoch=3``: Hydra's "Key ... is not in struct") → the closest key of the
    composed config or of its ``_target_``'s signature; an unknown group option
    (``model=mitfer``) → the closest option. None for any other error."""
    if isinstance(exc, MissingConfigException):
        group, _, option = str(exc.missing_cfg_file or "").rpartition("/")
        options = [str(o) for o in exc.options or [] if not str(o).startswith("_")]
        best = closest(option, options) if group and option else None
        if best is None:
            return None
        where = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.missing_cfg_file
        return f"{where}; did you mean {group}={best}? (options: {', '.join(options)})"
    if not isinstance(exc, ConfigCompositionException):
        return None
    cause = exc.__cause__
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return None
    node, key, full_key = cause.parent_node, cause.key, cause.full_key
    if not isinstance(node, DictConfig) or not isinstance(key, str) or not full_key:
        return None
    if key in node:
        return None
    try:
        return unknown_key_hint(str(full_key), key, node)
    except Exception:  # noqa: BLE001 - fall back to Hydra's own message
        return None
