"""The apps tune glibc's allocator at start (issue 16); FERSUITE_MALLOC_TUNING=0 and a plain
``import fersuite`` leave it alone. Observed, not assumed: a 64 MiB ``malloc`` is served by
``mmap`` under glibc's defaults (mallinfo2().hblkhd grows) and from the heap once tuned."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux")
        or not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
        reason="mallopt tuning is glibc-only (a no-op elsewhere)",
    ),
    pytest.mark.subprocess,  # a fresh interpreter: malloc's settings are process-wide
]

PROBE = textwrap.dedent(
    """
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    def mmapped_by_malloc() -> bool:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        before = libc.mallinfo2().hblkhd
        ptr = libc.malloc(64 << 20)
        grown = libc.mallinfo2().hblkhd - before
        libc.free(ptr)
        return grown >= 64 << 20
    """
)

APP = PROBE + textwrap.dedent(
    """
    from fersuite.apps import run_app

    def main():
        print("MMAPPED" if mmapped_by_malloc() else "HEAP")
        return 0

    run_app("probe", main)
    """
)

LIBRARY = PROBE + textwrap.dedent(
    """
    import fersuite, fersuite.apps, fersuite.models, fersuite.utils.malloc  # noqa: F401
    print("MMAPPED" if mmapped_by_malloc() else "HEAP")
    """
)


def _run(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k != "FERSUITE_MALLOC_TUNING"}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    res = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


def test_an_app_serves_large_allocations_from_the_heap() -> None:
    assert _run(APP) == "HEAP"


def test_the_switch_turns_the_tuning_off() -> None:
    assert _run(APP, FERSUITE_MALLOC_TUNING="0") == "MMAPPED"


def test_importing_fersuite_as_a_library_leaves_malloc_alone() -> None:
    assert _run(LIBRARY) == "MMAPPED"
