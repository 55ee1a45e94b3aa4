"""Training: fit and test one configuration (:func:`fersuite.training.run.train`).

``fersuite-train`` (:mod:`fersuite.cli.train`) is a thin recipe over it; the run's set-up and
the pieces built from config are :mod:`fersuite.runs`."""
