"""An Optuna sweeper whose study outlives it: stored in the sweep dir, resumed by a rerun.

hydra-optuna-sweeper keeps its study in memory unless ``hydra.sweeper.storage`` names a
database, numbers its jobs from 0 in every process and runs ``n_trials`` *more* trials each
time. :class:`ResumableOptunaSweeper` (a subclass of its ``OptunaSweeperImpl``, reached from
the config through ``hydra_plugins.fersuite_sweeper``) changes four things:

* **Storage.** ``storage: null`` stores the study in ``<sweep dir>/optuna.db`` (SQLite); an
  RDB URL (e.g. ``postgresql://...``) stores it there instead, for sweepers on many machines.
* **Budget.** ``n_trials`` is the study's *total*: trials that completed, were pruned or failed
  on their own count, and so do trials running right now in another live sweeper; trials that
  were cut short because their sweeper died do not. A rerun runs only what is left, and a
  finished study says so in one line and trains nothing.
* **Dead sweepers.** Each trial records its sweeper (host, pid, one token per sweep). A trial
  still RUNNING at the start of a sweep whose sweeper is gone (this host, a pid no longer alive,
  or an earlier sweep of this same process) is recorded as FAIL with a log line (and
  ``error.txt`` in its job dir) and re-tried within the budget. A RUNNING trial of a sweeper on
  another host is left alone: that sweeper may still be alive.
* **Job dirs.** Job ``k`` of the sweep is trial ``k`` of the study (plus an offset fixed when
  the study is created in a sweep dir that already has job dirs), so a rerun never writes into
  the job dir of an earlier trial, and the sweep report covers every trial, old and new.

A stored study whose direction or search space differs from the command's is refused with
one line naming the key (:class:`fersuite.errors.ConfigError`, exit status 2).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from fersuite.errors import ConfigError
from fersuite.reporting.jobs import CUT_SHORT, ERROR_FILE
from fersuite.utils.io import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "DB_FILE",
    "ResumableOptunaSweeper",
    "Tally",
    "open_storage",
    "sweeper_is_gone",
    "tally",
]

#: The study's file in the sweep dir when ``hydra.sweeper.storage`` is null.
DB_FILE = "optuna.db"
#: Trial system attribute: the sweeper that asked for the trial ({host, pid, token}).
OWNER_KEY = "fersuite:sweeper"
#: Trial system attribute: the trial's Hydra job number (its job dir with subdir ${hydra.job.num}).
JOB_KEY = "fersuite:job"
#: Trial system attribute, set on a trial failed because its sweeper died (not in the budget).
DIED_KEY = "fersuite:sweeper_died"
#: Study system attributes: the search space and fixed overrides of the study's first sweep,
#: and the offset between trial numbers and job numbers.
SPACE_KEY = "fersuite:search_space"
FIXED_KEY = "fersuite:fixed_params"
OFFSET_KEY = "fersuite:job_offset"

_JOB_NUM_SUBDIR = "${hydra.job.num}"


def _where(storage: Any) -> str:
    """The storage, for a message: its URL without a password."""
    url = getattr(storage, "url", storage)
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", str(url))


def open_storage(storage: Any, sweep_dir: str | os.PathLike[str]) -> BaseStorage:
    """The study's storage: ``None`` → ``sqlite:///<sweep dir>/optuna.db``; an RDB URL; or a
    storage object, used as it is.

    URLs are opened with ``isolation_level=AUTOCOMMIT``: optuna 2.10's RDB storage was written
    for SQLAlchemy 1.x, whose connections committed by themselves; under SQLAlchemy 2 its schema
    stamp is otherwise never committed and the SQLite file stays locked.
    """
    if isinstance(storage, BaseStorage):
        return storage
    if storage is None:
        root = Path(sweep_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{root / DB_FILE}"
    elif isinstance(storage, str) and "://" in storage:
        url = storage
    else:
        raise ConfigError(
            f"hydra.sweeper.storage: expected null (the sweep dir's {DB_FILE}) or a database "
            f"URL such as sqlite:///path/optuna.db or postgresql://host/db, got {storage!r}"
        )
    try:
        return RDBStorage(url, engine_kwargs={"isolation_level": "AUTOCOMMIT"})
    except Exception as exc:  # a bad URL, a missing driver, a foreign schema
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"hydra.sweeper.storage: cannot open {_where(url)}: {first}") from exc


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (POSIX; elsewhere: assumed alive)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) is not a probe on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process: it exists
    return True


def sweeper_is_gone(owner: Any, me: Mapping[str, Any]) -> bool:
    """Whether the sweeper ``owner`` that asked for a still-RUNNING trial is gone for sure.

    ``me`` is the current sweeper. Gone: no owner recorded (a sweeper that did not say who it
    was), an earlier sweep of this same process, or a process of this host that no longer
    exists. A sweeper on another host is never taken for gone.
    """
    if not isinstance(owner, Mapping):
        return True
    if owner.get("token") == me["token"]:
        return False
    if owner.get("host") != me["host"]:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == me["pid"]:
        return True
    return not _alive(pid)


@dataclass(frozen=True)
class Tally:
    """The trials of a study, as the budget counts them."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0  #: failed on their own (count)
    running: int = 0  #: running or waiting in a live sweeper (count)
    died: int = 0  #: failed because their sweeper died (do not count)

    @property
    def counted(self) -> int:
        return self.complete + self.pruned + self.failed + self.running

    def left(self, n_trials: int) -> int:
        return max(0, int(n_trials) - self.counted)

    def __str__(self) -> str:
        parts = [f"{self.complete} complete"]
        for name in ("pruned", "failed", "running"):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {name}")
        if self.died:
            parts.append(f"{self.died} cut short by a dead sweeper (not counted)")
        return ", ".join(parts)


def tally(trials: Sequence[FrozenTrial]) -> Tally:
    """Count ``trials`` for the budget (see :class:`Tally`)."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "died": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["died" if t.system_attrs.get(DIED_KEY) else "failed"] += 1
        else:  # RUNNING / WAITING
            counts["running"] += 1
    return Tally(**counts)


def _space_json(space: Mapping[str, BaseDistribution]) -> dict[str, str]:
    return {name: distribution_to_json(d) for name, d in sorted(space.items())}


def _describe(dist_json: str | None) -> str:
    if dist_json is None:
        return "nothing"
    d = json_to_distribution(dist_json)
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(d).items()))
    return f"{type(d).__name__}({args})"


class ResumableOptunaSweeper(OptunaSweeperImpl):
    """hydra-optuna-sweeper's sweeper with a stored, resumable study (see the module doc).

    Takes the keys of ``hydra/sweeper/optuna`` (sampler, direction, storage, study_name,
    n_trials, n_jobs, max_failure_rate, search_space, custom_search_space, params).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.me: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- the study

    def _search_space(
        self, arguments: list[str]
    ) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
        """(distributions, fixed overrides) of this command, as the upstream sweeper reads them.

        A GridSampler is built on the space here, and ``n_trials`` capped at its size.
        """
        self._process_searchspace_config()
        overrides = [*self._parse_sweeper_params_config(), *arguments]
        from_overrides, fixed = create_params_from_overrides(overrides)
        space = dict(self.search_space_distributions or {})
        space.update(from_overrides)
        for name in fixed:
            space.pop(name, None)
        if (
            isinstance(self.sampler, functools.partial)
            and self.sampler.func == optuna.samplers.GridSampler
        ):
            grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
            self.sampler = self.sampler(grid)
            size = 1
            for choices in grid.values():
                size *= len(choices)
            if size < self.n_trials:
                log.info("n_trials: %d, the size of the grid", size)
            self.n_trials = min(self.n_trials, size)
        return space, fixed

    def _param_key(self, name: str) -> str:
        in_params = self.params is not None and name in self.params
        return f"hydra.sweeper.params.{name}" if in_params else f"search space key {name}"

    def _open_study(
        self,
        storage: BaseStorage,
        directions: list[str],
        space: dict[str, BaseDistribution],
        fixed: dict[str, Any],
    ) -> optuna.Study:
        """Load the stored study (refusing a different direction or space) or create it."""
        name = self.study_name or Path(str(self.sweep_dir)).name
        where = _where(storage)
        wanted = [StudyDirection[d.upper()] for d in directions]
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=self.sampler, directions=directions
            )
            study.set_system_attr(SPACE_KEY, _space_json(space))
            study.set_system_attr(FIXED_KEY, {k: str(v) for k, v in fixed.items()})
            study.set_system_attr(OFFSET_KEY, self._first_free_job())
            log.info("study %s: new, in %s", name, where)
            return study

        study = optuna.load_study(study_name=name, storage=storage, sampler=self.sampler)
        hint = "(another hydra.sweeper.study_name or hydra.sweep.dir starts a new study)"
        stored = list(study.directions)
        if all(d == StudyDirection.NOT_SET for d in stored):  # created, then killed
            storage.set_study_directions(study_id, wanted)
        elif stored != wanted:
            raise ConfigError(
                f"hydra.sweeper.direction: the stored study '{name}' ({where}) is to "
                f"{'/'.join(d.name.lower() for d in stored)}, this command asks to "
                f"{'/'.join(directions)}: a resumed search keeps its direction {hint}"
            )
        old = study.system_attrs.get(SPACE_KEY)
        if not isinstance(old, Mapping):  # a study stored by another sweeper: what it tried
            old = {
                n: distribution_to_json(d) for t in study.trials for n, d in t.distributions.items()
            }
            new = {n: d for n, d in _space_json(space).items() if n in old}
        else:
            new = _space_json(space)
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a is None or b is None or json_to_distribution(a) != json_to_distribution(b):
                raise ConfigError(
                    f"{self._param_key(key)}: the stored study '{name}' ({where}) searches "
                    f"{_describe(a)}, this command {_describe(b)}: a resumed search keeps its "
                    f"search space {hint}"
                )
        before = study.system_attrs.get(FIXED_KEY)
        if isinstance(before, Mapping):
            now = {k: str(v) for k, v in fixed.items()}
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                log.warning(
                    "study %s: the fixed overrides %s differ from the study's first sweep: "
                    "its trials may not compare",
                    name,
                    ", ".join(changed),
                )
        return study

    def _first_free_job(self) -> int:
        """The first job number past the numbered job dirs already in the sweep dir."""
        root = Path(str(self.sweep_dir))
        taken = [int(p.name) for p in root.glob("*") if p.is_dir() and p.name.isdigit()]
        return max(taken, default=-1) + 1

    def _job_dir(self, job: Any) -> Path | None:
        """The job dir of job number ``job``, when the sweep's subdir is the job number."""
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if subdir != _JOB_NUM_SUBDIR or not isinstance(job, int):
            return None
        return Path(str(self.sweep_dir)) / str(job)

    def _fail_dead_trials(self, study: optuna.Study, storage: BaseStorage) -> None:
        """Record as FAIL (not counted) the RUNNING trials of sweepers that are gone."""
        study_id = storage.get_study_id_from_name(study.study_name)
        for t in study.get_trials(deepcopy=False):
            if t.state not in (TrialState.RUNNING, TrialState.WAITING):
                continue
            owner = t.system_attrs.get(OWNER_KEY)
            if not sweeper_is_gone(owner, self.me):
                who = f"pid {owner.get('pid')} on {owner.get('host')}"
                log.info("study %s: trial %d is running in %s", study.study_name, t.number, who)
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_system_attr(trial_id, DIED_KEY, True)
            storage.set_trial_state(trial_id, TrialState.FAIL)
            who = (
                f"pid {owner.get('pid')} on {owner.get('host')}"
                if isinstance(owner, Mapping)
                else "unknown"
            )
            log.warning(
                "study %s: trial %d was RUNNING when its sweeper (%s) stopped: recorded as "
                "FAIL, re-tried within the budget",
                study.study_name,
                t.number,
                who,
            )
            job_dir = self._job_dir(t.system_attrs.get(JOB_KEY))
            if job_dir is not None and job_dir.is_dir() and not (job_dir / ERROR_FILE).exists():
                line = f"{CUT_SHORT}: the sweeper stopped during Optuna trial {t.number}\n"
                atomic_write(job_dir / ERROR_FILE, lambda fh, text=line: fh.write(text))

    # --------------------------------------------------------------------------- the sweep

    def _launch(self, trials: list[optuna.trial.Trial], overrides: Sequence[Any]) -> list[Any]:
        """Run the jobs of ``trials``; job number = trial number + the study's offset."""
        offset = int(trials[0].study.system_attrs.get(OFFSET_KEY, 0))
        jobs = [t.number + offset for t in trials]
        for t, job in zip(trials, jobs, strict=True):
            t.set_system_attr(JOB_KEY, job)
            job_dir = self._job_dir(job)
            if job_dir is not None and (job_dir / ".hydra").exists():
                for u in trials:  # asked, never run: not this study's failure
                    u.set_system_attr(DIED_KEY, True)
                    u.study.tell(u, state=TrialState.FAIL)
                raise ConfigError(
                    f"hydra.sweep.dir: {job_dir} already holds a job that is not trial "
                    f"{t.number} of study '{t.study.study_name}' (two studies share the sweep "
                    "dir): give this study its own hydra.sweep.dir"
                )
        returns: list[Any] = []
        start = 0
        for i in range(1, len(jobs) + 1):  # one launch per run of consecutive job numbers
            if i == len(jobs) or jobs[i] != jobs[i - 1] + 1:
                returns.extend(
                    self.launcher.launch(overrides[start:i], initial_job_idx=jobs[start])
                )
                start = i
        return returns

    @staticmethod
    def _values(ret: JobReturn, n_objectives: int) -> list[float]:
        """The trial's objective value(s) from a job's return (raises the job's exception)."""
        value = ret.return_value
        raw = [value] if n_objectives == 1 else value
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise ValueError(
                f"the job returned {value!r}, not {n_objectives} number(s) for the study"
            ) from None
        if len(values) != n_objectives:
            raise ValueError(f"the job returned {len(values)} values for {n_objectives} objectives")
        return values

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        space, fixed = self._search_space(arguments)
        directions = self._get_directions()
        storage = open_storage(self.storage, str(self.sweep_dir))
        study = self._open_study(storage, directions, space, fixed)
        self._fail_dead_trials(study, storage)
        name = study.study_name
        count = tally(study.get_trials(deepcopy=False))
        log.info(
            "study %s (%s): %d of %d trials done (%s)",
            name,
            _where(storage),
            count.counted,
            self.n_trials,
            count,
        )
        if count.left(self.n_trials) == 0:
            log.info(
                "study %s is finished: %d of %d trials (%s); nothing to train "
                "(raise hydra.sweeper.n_trials to search on)",
                name,
                count.counted,
                self.n_trials,
                count,
            )
        while (left := count.left(self.n_trials)) > 0:
            trials = [study.ask() for _ in range(min(left, max(1, int(self.n_jobs))))]
            for t in trials:
                t.set_system_attr(OWNER_KEY, self.me)
            overrides = self._configure_trials(trials, space, fixed)
            returns = self._launch(trials, overrides)
            failed: list[JobReturn] = []
            for t, ret in zip(trials, returns, strict=True):
                try:
                    values = self._values(ret, len(directions))
                except Exception as exc:  # noqa: BLE001 - a failed trial; the search goes on
                    study.tell(t, state=TrialState.FAIL)
                    log.warning("trial %d failed: %s", t.number, exc)
                    failed.append(ret)
                    continue
                study.tell(t, values if len(values) > 1 else values[0])
            if failed and len(failed) / len(returns) > self.max_failure_rate:
                log.error(
                    "%d of %d trials of this batch failed (max_failure_rate=%s): stopping",
                    len(failed),
                    len(returns),
                    self.max_failure_rate,
                )
                failed[0].return_value  # noqa: B018 - re-raises the job's own exception
            count = tally(study.get_trials(deepcopy=False))
        self._write_results(study)

    def _write_results(self, study: optuna.Study) -> None:
        """``<sweep dir>/optimization_results.yaml`` over every trial of the study."""
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done:
            log.warning("study %s: no trial completed, no best parameters", study.study_name)
            return
        results: dict[str, Any] = {"name": "optuna", "study": study.study_name}
        if len(study.directions) == 1:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        else:
            results["solutions"] = [
                {"trial": t.number, "params": t.params, "values": t.values}
                for t in study.best_trials
            ]
        results["trials"] = len(study.get_trials(deepcopy=False))
        path = Path(str(self.sweep_dir)) / "optimization_results.yaml"
        text = OmegaConf.to_yaml(OmegaConf.create(results))
        atomic_write(path, lambda fh: fh.write(text))
