"""Checkpoint callbacks that touch only their own folder.

Lightning's ``ModelCheckpoint`` stores checkpoint paths in its state (``best_k_models``,
``best_model_path``, ``kth_best_model_path``, ``last_model_path``) and, after resuming, deletes
the paths it no longer keeps; its "inside my dirpath" test compares path text, so a state that
names ``<dirpath>/../..`` (or a symlink in the folder) makes a run delete folders elsewhere.

:class:`RunCheckpoint` reads that state as data: each value is parsed into plain typed values
(real scores, ±inf included and NaN not; at most :data:`MAX_PATHS` string paths); a malformed
state is refused with :class:`~fersuite.errors.UntrustedFileError`. A path is kept only when,
fully resolved (symlinks included), it lies inside the callback's own resolved ``dirpath``; the
others are dropped with one warning line naming them. The callback deletes nothing outside its
``dirpath`` and no folder. ``fersuite.callbacks.periodic_checkpoint`` inherits all of this.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from fersuite.errors import UntrustedFileError

__all__ = [
    "MAX_PATHS",
    "RunCheckpoint",
    "StoredState",
    "best_checkpoint",
    "owned_path",
    "parse_state",
]

log = logging.getLogger(__name__)

#: At most this many ``best_k_models`` entries (or ``save_top_k`` when it is larger).
MAX_PATHS = 1000
MAX_PATH_CHARS = 4096
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
SCORE_KEYS = ("best_model_score", "current_score", "kth_value")


@dataclass(frozen=True)
class StoredState:
    """A ``ModelCheckpoint`` state as plain typed values (paths not yet checked)."""

    dirpath: str | None
    best_model_path: str
    kth_best_model_path: str
    last_model_path: str
    best_model_score: torch.Tensor | None
    current_score: torch.Tensor | None
    kth_value: torch.Tensor | None
    best_k_models: dict[str, torch.Tensor]


def _path(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise UntrustedFileError(
            f"{source}: {key} is a {type(value).__name__}; expected a checkpoint path (str)"
        )
    if len(value) > MAX_PATH_CHARS or "\x00" in value:
        raise UntrustedFileError(
            f"{source}: {key} is not a usable path ({len(value)} characters"
            f"{', a NUL byte' if chr(0) in value else ''}); expected at most {MAX_PATH_CHARS}"
        )
    return value


def _score(value: Any, key: str, source: str) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        ok = value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
        number = float(value.detach().reshape(())) if ok else math.nan
        tensor = value.detach().reshape(()).clone() if ok else None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ok, number = True, float(value)
        tensor = torch.tensor(number)
    else:
        ok, number, tensor = False, math.nan, None
    if not ok or math.isnan(number) or tensor is None:
        what = "NaN" if ok else f"a {type(value).__name__}"
        raise UntrustedFileError(f"{source}: {key} is {what}; expected a real score or null")
    return tensor


def parse_state(state: Any, source: str, max_paths: int = MAX_PATHS) -> StoredState:
    """The ``ModelCheckpoint`` state ``state`` read from ``source`` as plain typed values;
    :class:`UntrustedFileError` (one line naming the key) when it is malformed."""
    if not isinstance(state, Mapping):
        raise UntrustedFileError(f"{source} is a {type(state).__name__}; expected a dict")
    dirpath = state.get("dirpath")
    if dirpath is not None:
        dirpath = _path(dirpath, "dirpath", source)
    paths = {k: _path(state.get(k, ""), k, source) for k in PATH_KEYS}
    scores = {k: _score(state.get(k), k, source) for k in SCORE_KEYS}
    raw = state.get("best_k_models", {})
    if not isinstance(raw, Mapping):
        raise UntrustedFileError(
            f"{source}: best_k_models is a {type(raw).__name__}; expected a dict of path: score"
        )
    if len(raw) > max_paths:
        raise UntrustedFileError(
            f"{source}: best_k_models has {len(raw)} entries; expected at most {max_paths}"
        )
    best_k: dict[str, torch.Tensor] = {}
    for i, (path, score) in enumerate(raw.items()):
        key = f"best_k_models[{i}]"
        value = _score(score, key, source)
        if value is None:
            raise UntrustedFileError(f"{source}: {key} has no score; expected a real score")
        best_k[_path(path, key, source)] = value
    return StoredState(dirpath=dirpath, best_k_models=best_k, **paths, **scores)  # type: ignore[arg-type]


def owned_path(path: str, dirpath: str | os.PathLike[str] | None) -> str | None:
    """``path`` fully resolved when it lies strictly inside the resolved ``dirpath``; None
    otherwise (also for relative paths, URLs and a missing ``dirpath``)."""
    if not path or not dirpath or "\x00" in path or "://" in path or "::" in path:
        return None
    if not os.path.isabs(path):
        return None
    try:
        root = Path(dirpath).resolve()
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unusable name
        return None
    return str(resolved) if root in resolved.parents else None


class RunCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that restores, follows and deletes only paths inside its own
    ``dirpath`` (see the module doc)."""

    _source = "the resumed checkpoint's callback state"

    @property
    def state_key(self) -> str:
        # Lightning's ModelCheckpoint key, so runs checkpointed before this class resume.
        key = super().state_key
        if type(self) is RunCheckpoint:
            return "ModelCheckpoint" + key[len(type(self).__qualname__) :]
        return key

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # called right before load_state_dict: the file its errors name
        if trainer.ckpt_path:
            self._source = f"{trainer.ckpt_path}: {self.state_key.split('{')[0]} state"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = parse_state(state_dict, self._source, max(MAX_PATHS, self.save_top_k))
        dropped: list[str] = []

        def keep(path: str) -> str:
            if not path:
                return ""
            owned = owned_path(path, self.dirpath)
            if owned is None:
                dropped.append(path)
                return ""
            return owned

        same_dir = state.dirpath is not None and state.dirpath == self.dirpath
        if same_dir:
            best_k = {}
            for path, score in state.best_k_models.items():
                if kept := keep(path):
                    best_k[kept] = score
            self.best_k_models = best_k
            self.last_model_path = keep(state.last_model_path)
            self.current_score = state.current_score
            kth = keep(state.kth_best_model_path)
            if best_k and kth not in best_k:  # Lightning indexes best_k_models with it
                worst = max if self.mode == "min" else min
                kth = worst(best_k, key=lambda p: float(best_k[p]))
            if kth:
                self.kth_best_model_path, self.kth_value = kth, best_k[kth]
            best = keep(state.best_model_path)
            if best:
                self.best_model_score = state.best_model_score
            elif best_k:
                pick = min if self.mode == "min" else max
                best = pick(best_k, key=lambda p: float(best_k[p]))
                self.best_model_score = best_k[best]
            self.best_model_path = best
        else:
            # A checkpoint from another folder (e.g. copied out of another run): its top-k
            # and last paths are not this run's; like Lightning, only best_model_path is kept.
            log.warning(
                "%s was written with checkpoint dir %r, not %r: its best/last checkpoint "
                "paths are not restored",
                self._source,
                state.dirpath,
                self.dirpath,
            )
            self.best_model_path = keep(state.best_model_path)
            dropped.clear()
        if dropped:
            names = ", ".join(repr(p[:200]) for p in dict.fromkeys(dropped))
            log.warning(
                "%s: ignoring checkpoint paths outside %s: %s", self._source, self.dirpath, names
            )

    def _should_remove_checkpoint(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        owned = owned_path(previous, self.dirpath)
        if owned is None:  # outside the folder (Lightning compares text, "..", symlinks)
            return False
        # not the file just written or resumed from under another name
        keep = {owned_path(str(p), self.dirpath) for p in (current, trainer.ckpt_path) if p}
        return owned not in keep and super()._should_remove_checkpoint(trainer, previous, current)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        owned = owned_path(str(filepath), self.dirpath)
        if owned is None or Path(owned).is_dir():
            log.warning("not deleting %r: not a checkpoint file inside %s", filepath, self.dirpath)
            return
        super()._remove_checkpoint(trainer, filepath)


def best_checkpoint(callback: ModelCheckpoint | None) -> str:
    """The callback's best checkpoint (resolved) when it is a file inside the callback's own
    ``dirpath``; ``""`` otherwise, so nothing outside the run is read."""
    if callback is None or not callback.best_model_path:
        return ""
    path = str(callback.best_model_path)
    owned = owned_path(path, callback.dirpath)
    if owned is None or not Path(owned).is_file():
        log.warning("not using best checkpoint %r: not a file inside %s", path, callback.dirpath)
        return ""
    return owned
