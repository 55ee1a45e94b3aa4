"""Hyper-parameter searches: Optuna studies stored beside their sweep, resumed by a rerun.

:mod:`fersuite.search.optuna_sweeper` holds the sweeper of ``conf/hparams_search/*.yaml``
(Hydra reaches it through the thin plugin ``hydra_plugins.fersuite_sweeper``: Hydra only
instantiates sweepers that live in the ``hydra_plugins`` namespace).
"""
