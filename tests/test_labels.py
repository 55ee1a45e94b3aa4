"""fersuite.labels: a configured class list is checked once, with the key it came from."""

from __future__ import annotations

import pytest

from fersuite.labels import canonical_names


def test_aliases_become_canonical_names_in_the_given_order() -> None:
    assert canonical_names(["Happiness", "angry", "neutral"], "data.classes") == (
        "happy",
        "anger",
        "neutral",
    )


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["happy", "confused"], "data.classes: unknown expression class 'confused'"),
        (["happy", "happiness"], "data.classes=['happy', 'happiness'] names a class twice"),
    ],
)
def test_an_unknown_or_repeated_class_is_refused_naming_the_key(
    names: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        canonical_names(names, "data.classes")
