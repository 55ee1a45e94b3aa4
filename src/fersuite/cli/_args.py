"""``key=value`` arguments and ``--help`` for the apps that are not Hydra apps
(``fersuite-predict``, ``fersuite-report``), in the same shape as the Hydra apps'.

Arguments use Hydra's override syntax as far as plain keys go: OmegaConf's dotlist parser
(``key=value``, lists as ``key=[a,b]``, ``null``/``true``/``false``, ``${oc.env:VAR}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fersuite.errors import UserError

__all__ = ["Key", "help_text", "parse_keys", "wants_help"]


@dataclass(frozen=True)
class Key:
    """One argument of an app: its name, default and a one-line meaning (for ``--help``)."""

    name: str
    default: Any
    meaning: str


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def parse_keys(
    argv: Sequence[str], keys: Sequence[Key], error: type[Exception] = UserError
) -> dict[str, Any]:
    """``key=value`` arguments (OmegaConf dotlist syntax) merged over the keys' defaults.

    Raises ``error`` (a user error: one line, exit status 2) for an argument without ``=``,
    one OmegaConf cannot parse, or a key the app does not have."""

    names = [k.name for k in keys]
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise error(f"arguments must be key=value, got {bad}; keys: {names}")
    try:
        given = OmegaConf.to_container(OmegaConf.from_dotlist(list(argv)), resolve=True)
    except OmegaConfBaseException as exc:
        raise error(f"cannot parse arguments: {exc}") from exc
    assert isinstance(given, dict)
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise error(f"unknown keys {unknown}; expected some of {names}")
    return {**{k.name: k.default for k in keys}, **given}


def _show(value: Any) -> str:
    """A default as it is written on the command line (YAML-style scalars)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def help_text(app: str, summary: str, usage: Sequence[str], keys: Sequence[Key], notes: str) -> str:
    """``--help`` in the Hydra apps' shape: ``<app>: summary``, ``Usage: <app> ...``, then
    every key on its own line with its default and meaning, then ``notes``."""
    lines = [f"{app}: {summary}", f"Usage: {usage[0]}"]
    lines += [f"       {u}" for u in usage[1:]]
    lines += ["", "== Keys (key=value) and their defaults =="]
    entries = [f"{k.name}: {_show(k.default)}" for k in keys]
    width = max(len(e) for e in entries) + 2
    lines += [f"{e:<{width}}# {k.meaning}" for e, k in zip(entries, keys, strict=True)]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"
