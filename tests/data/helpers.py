"""Checks shared by the data tests: two renders equal byte for byte, and the ConfigError under
Hydra's InstantiationException (what the apps report, in one line)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from fersuite.data.synthetic import SyntheticFaces
from fersuite.errors import ConfigError


def same_faces(a: SyntheticFaces, b: SyntheticFaces) -> bool:
    """The same images, labels and VA targets, byte for byte."""
    return (
        a.images.tobytes() == b.images.tobytes()
        and np.array_equal(a.expression, b.expression)
        and a.valence.tobytes() == b.valence.tobytes()
        and a.arousal.tobytes() == b.arousal.tobytes()
    )


def instantiation_config_error(node: Any) -> str:
    """The message of the ConfigError that instantiating ``node`` raises (it must raise one)."""
    with pytest.raises(InstantiationException) as err:
        instantiate(node)
    cause = err.value.__cause__
    assert isinstance(cause, ConfigError), repr(cause)
    return str(cause)
