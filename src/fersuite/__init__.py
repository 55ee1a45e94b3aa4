"""fersuite: efficient facial expression recognition experiments."""

import warnings

from fersuite.monitoring import register_resolvers

__version__ = "0.1.0"

# Lightning 2.6 with torch 2.14 warns once per fit/validate loop about a torch-internal pytree
# API it uses (not actionable for users, and it floods every epoch's log). Only that message.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=Warning
)


def _register_resolvers() -> None:
    # ${fersuite.monitor_mode:...} and ${fersuite.optuna_direction:...} in conf/ (checkpoint
    # mode and search direction follow the monitored metric; see fersuite.monitoring).

    register_resolvers()


_register_resolvers()
