"""The console scripts, each a short recipe over the library (wrapped by
:func:`fersuite.apps.run_app`): ``fersuite-train`` (:mod:`.train`), ``-eval`` (:mod:`.eval`),
``-data`` (:mod:`.data`), ``-profile`` (:mod:`.profile`), ``-report`` (:mod:`.report`),
``-export`` and ``-predict``."""
