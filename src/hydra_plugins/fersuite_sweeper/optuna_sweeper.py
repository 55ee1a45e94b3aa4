"""The Hydra face of :class:`fersuite.search.optuna_sweeper.ResumableOptunaSweeper`.

``hydra.sweeper._target_: hydra_plugins.fersuite_sweeper.optuna_sweeper.FersuiteOptunaSweeper``
(``conf/hparams_search/*.yaml``). Hydra imports every ``hydra_plugins`` module when it starts
any app, so the sweeper itself (Optuna, SQLAlchemy) is imported only when one is built.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class FersuiteOptunaSweeper(Sweeper):
    """hydra-optuna-sweeper's keys, with a stored study that a rerun resumes."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from fersuite.search.optuna_sweeper import ResumableOptunaSweeper  # heavy: on use only

        self.sweeper = ResumableOptunaSweeper(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
