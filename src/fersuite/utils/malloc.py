"""glibc allocator settings for the fersuite apps (issue 16).

glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with
a fresh ``mmap`` and returns it with ``munmap`` when freed. PyTorch's CPU allocator calls
``malloc``/``free`` per tensor, so at batch 64 every large activation of every forward and
backward pass is a new mapping whose pages fault in one by one: a 224x224 MobileNetV2 training
step spends most of its time in the kernel. Raising the mmap threshold (and the trim threshold,
so the heap top is not handed back after each step) lets the heap reuse that memory.

The trade-off: freed memory stays in the process (resident size stays near its peak instead of
shrinking between steps), which is what a training or benchmarking process wants.

:func:`tune_malloc` is called by :func:`fersuite.apps.run_app` when a console script starts,
never on ``import fersuite``. ``FERSUITE_MALLOC_TUNING=0`` turns it off; it is a no-op on
anything but glibc (e.g. macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["ENV_VAR", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

log = logging.getLogger(__name__)

#: Set to 0 / false / no / off to leave glibc's allocator at its defaults.
ENV_VAR = "FERSUITE_MALLOC_TUNING"
#: Allocations below this many bytes come from the heap (glibc's own ceiling applies).
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap is returned to the system only above this many bytes.
TRIM_THRESHOLD = 1 << 30

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_OFF = {"0", "false", "no", "off"}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version  # glibc only (not musl)
        libc.mallopt  # noqa: B018 - present?
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when both were applied.

    Does nothing (returns False) when ``FERSUITE_MALLOC_TUNING`` is 0/false/no/off or the C
    library is not glibc.
    """
    if os.environ.get(ENV_VAR, "1").strip().lower() in _OFF:
        log.debug("%s is off: glibc malloc left at its defaults", ENV_VAR)
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    log.debug("glibc mallopt(M_MMAP_THRESHOLD/M_TRIM_THRESHOLD, 1 GiB): %s", ok)
    return ok
