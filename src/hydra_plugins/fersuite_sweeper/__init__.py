"""fersuite's Hydra plugins (Hydra instantiates sweepers only from the ``hydra_plugins``
namespace): :class:`~hydra_plugins.fersuite_sweeper.optuna_sweeper.FersuiteOptunaSweeper`."""
