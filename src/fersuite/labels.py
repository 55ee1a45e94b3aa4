"""The central label vocabulary.

AffectNet's order is canonical: every dataset declares its class names and is mapped to
these names, so a model trained on one dataset can be evaluated on another by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from fersuite.errors import ConfigError

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


def canonical_names(names: Sequence[str], key: str) -> tuple[str, ...]:
    """The canonical names of a configured class list, each once; ``ValueError`` naming ``key``
    (an unknown class, or one named twice)."""
    try:
        out = tuple(canonical_name(str(n)) for n in names)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if len(set(out)) != len(out):
        raise ValueError(f"{key}={list(names)} names a class twice")
    return out


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


def class_index_map(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int]:
    """For each dataset class, the index of the model logit with the same canonical name."""
    try:
        found = mapping_indices(list(data_classes), list(model_classes))
    except ValueError as exc:
        raise ConfigError(f"cannot map classes by name: {exc}") from exc
    missing = [n for n, i in zip(data_classes, found, strict=True) if i is None]
    if missing:
        raise ConfigError(
            f"the checkpoint's model never learnt the dataset class(es) {', '.join(missing)} "
            f"(model classes: {', '.join(model_classes)}); evaluate on a dataset/num_classes "
            "whose classes the model knows (e.g. data.num_classes=7 drops contempt)"
        )
    return [int(i) for i in found if i is not None]


def same_classes(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when both lists name the same classes in the same order."""
    try:
        return [canonical_name(n) for n in a] == [canonical_name(n) for n in b]
    except ValueError:
        return list(a) == list(b)
