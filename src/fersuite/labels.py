"""The central label vocabulary.

AffectNet's order is canonical: every dataset declares its class names and is mapped to
these names, so a model trained on one dataset can be evaluated on another by name.
"""

from __future__ import annotations

CANONICAL_CLASSES: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)

#: Synonyms used by the public datasets, mapped to canonical names.
ALIASES: dict[str, str] = {
    "happiness": "happy",
    "sadness": "sad",
    "angry": "anger",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}


def canonical_name(name: str) -> str:
    """Return the canonical class name for ``name`` (case-insensitive)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CANONICAL_CLASSES:
        raise ValueError(
            f"unknown expression class {name!r}; known: {', '.join(CANONICAL_CLASSES)} "
            f"(aliases: {', '.join(sorted(ALIASES))})"
        )
    return key


def mapping_indices(
    source: list[str] | tuple[str, ...], target: list[str] | tuple[str, ...]
) -> list[int | None]:
    """For each class of ``source``, its index in ``target`` (None when absent)."""
    tgt = [canonical_name(n) for n in target]
    out: list[int | None] = []
    for n in source:
        c = canonical_name(n)
        out.append(tgt.index(c) if c in tgt else None)
    return out
