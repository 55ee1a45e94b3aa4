"""One run of a Lightning trainer, whatever it does (fit, test, both): its set-up and finish
(:mod:`~fersuite.runs.setup`), the pieces built from config (:mod:`~fersuite.runs.builders`),
the run dir's lock (:mod:`~fersuite.runs.lock`) and resuming an interrupted run
(:mod:`~fersuite.runs.resume`). Training and evaluation are recipes over it."""
