"""Bad dataset input: one exception class, and the error-or-skip policy for bad samples."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

from fersuite.errors import DataFormatError

log = logging.getLogger(__name__)

OnBadSample = Literal["error", "skip"]
ON_BAD_SAMPLE: tuple[str, ...] = ("error", "skip")

#: How many skipped samples are logged one by one before only the count is kept.
_LOGGED_SKIPS = 5


def check_on_bad_sample(value: str) -> OnBadSample:
    if value not in ON_BAD_SAMPLE:
        raise DataFormatError(f"data.on_bad_sample={value!r}; expected 'error' or 'skip'")
    return value  # type: ignore[return-value]


class BadSamples:
    """Applies ``data.on_bad_sample``: raise at the first bad sample, or skip and count.

    ``where`` names the sample (``"path/to/file.csv:12"`` or an image path), ``what`` says
    what was wrong and what was expected.
    """

    def __init__(self, policy: str = "error") -> None:
        self.policy = check_on_bad_sample(policy)
        self.count = 0
        self.reasons: Counter[str] = Counter()

    def __call__(self, where: str, what: str, reason: str = "bad sample") -> None:
        message = f"{where}: {what}"
        if self.policy == "error":
            raise DataFormatError(
                message + " (set data.on_bad_sample=skip to skip and count such samples)"
            )
        self.count += 1
        self.reasons[reason] += 1
        if self.count <= _LOGGED_SKIPS:
            log.warning("skipping %s", message)
        elif self.count == _LOGGED_SKIPS + 1:
            log.warning("skipping more bad samples; only their number is reported")
