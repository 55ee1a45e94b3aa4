"""Knowledge distillation support: teacher loading, input adaptation, label mapping and the
teacher-output cache. The LightningModule is :mod:`fersuite.modules.distill_module`."""

from fersuite.distill.adapt import adapt_images, same_input, spec_from
from fersuite.distill.cache import (
    TeacherOutputCache,
    TeacherOutputs,
    dataset_fingerprint,
    eval_dataset,
    run_teacher,
)
from fersuite.distill.labels import ClassMap
from fersuite.distill.teacher import FrozenTeacher, file_sha256, load_teacher

__all__ = [
    "ClassMap",
    "FrozenTeacher",
    "TeacherOutputCache",
    "TeacherOutputs",
    "adapt_images",
    "dataset_fingerprint",
    "eval_dataset",
    "file_sha256",
    "load_teacher",
    "run_teacher",
    "same_input",
    "spec_from",
]
