"""Aligning the teacher's and the student's expression classes by name.

EmoNet predicts AffectNet's 8 classes, a FER2013 student 7 (no contempt), a fersuite
checkpoint whatever its dataset had. Classes are matched through the central vocabulary
(:mod:`fersuite.labels`); the distillation target is the teacher's softmax restricted to
the classes both know and renormalised (see :func:`fersuite.losses.kd_kl_loss`). Student
classes the teacher lacks get no distillation signal (only the ground truth) and the
teacher can never predict them when its own metrics are computed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fersuite.errors import ConfigError
from fersuite.labels import CANONICAL_CLASSES, canonical_name, mapping_indices

__all__ = ["ClassMap", "default_teacher_classes"]

log = logging.getLogger(__name__)

#: Class orders of the official EmoNet checkpoints, keyed by their number of classes.
EMONET_CLASSES: dict[int, tuple[str, ...]] = {
    8: CANONICAL_CLASSES,
    5: CANONICAL_CLASSES[:5],  # neutral, happy, sad, surprise, fear
}


def default_teacher_classes(num_classes: int, what: str) -> tuple[str, ...]:
    """Class names of an EmoNet teacher with ``num_classes`` outputs."""
    if num_classes not in EMONET_CLASSES:
        raise ConfigError(
            f"{what} predicts {num_classes} expression classes; only the official 8- and "
            "5-class orders are known: set distill.teacher_classes=[name, ...]"
        )
    return EMONET_CLASSES[num_classes]


@dataclass(frozen=True)
class ClassMap:
    """Which student class corresponds to which teacher class.

    ``student_index[j]`` and ``teacher_index[j]`` are the positions of the j-th shared class
    in the student's and the teacher's outputs (in the student's order).
    """

    student_classes: tuple[str, ...]
    teacher_classes: tuple[str, ...]
    student_index: tuple[int, ...]
    teacher_index: tuple[int, ...]

    @classmethod
    def build(cls, student: Sequence[str], teacher: Sequence[str]) -> ClassMap:
        try:
            s = tuple(canonical_name(n) for n in student)
            t = tuple(canonical_name(n) for n in teacher)
        except ValueError as exc:
            raise ConfigError(f"class names of the teacher or the student: {exc}") from exc
        for label, names in (("student", s), ("teacher", t)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(f"the {label} classes repeat {dup}: {list(names)}")
        pairs = [(i, j) for i, j in enumerate(mapping_indices(s, t)) if j is not None]
        if not pairs:
            raise ConfigError(
                f"the teacher's classes {list(t)} share no class with the student's {list(s)}"
            )
        cmap = cls(s, t, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
        if cmap.dropped_teacher:
            log.info("teacher classes absent from the student, dropped: %s", cmap.dropped_teacher)
        if cmap.unmatched_student:
            log.warning(
                "student classes the teacher does not know (no distillation signal): %s",
                cmap.unmatched_student,
            )
        return cmap

    @property
    def is_identity(self) -> bool:
        return self.student_classes == self.teacher_classes

    @property
    def dropped_teacher(self) -> list[str]:
        return [n for n in self.teacher_classes if n not in self.student_classes]

    @property
    def unmatched_student(self) -> list[str]:
        return [n for n in self.student_classes if n not in self.teacher_classes]

    def indices(self) -> tuple[list[int] | None, list[int] | None]:
        """(student_index, teacher_index) for the KD loss; (None, None) for identical sets."""
        if self.is_identity:
            return None, None
        return list(self.student_index), list(self.teacher_index)

    def teacher_logits_for_student(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Teacher scores in the student's class order, for evaluating the teacher.

        Shared classes get the teacher's log-probabilities restricted to the shared classes
        (renormalised); classes the teacher lacks get a very low score so they are never its
        prediction. The argmax over shared classes is the teacher's own.
        """
        if self.is_identity:
            return teacher_logits
        device = teacher_logits.device
        t_idx = torch.tensor(self.teacher_index, dtype=torch.long, device=device)
        s_idx = torch.tensor(self.student_index, dtype=torch.long, device=device)
        shared = torch.log_softmax(teacher_logits.float().index_select(1, t_idx), dim=1)
        out = torch.full(
            (teacher_logits.shape[0], len(self.student_classes)),
            -1e4,
            dtype=shared.dtype,
            device=device,
        )
        out[:, s_idx] = shared
        return out
