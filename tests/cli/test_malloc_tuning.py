"""The apps tune glibc's allocator at start (issue 16); FERSUITE_MALLOC_TUNING=0 and a plain
``import fersuite`` leave it alone. Observed, not assumed: a 64 MiB ``malloc`` is served by
``mmap`` under glibc's defaults (mallinfo2().hblkhd grows) and from the heap once tuned."""

from __future__ import annotations

import ctypes
import json
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
    pytest.mark.subprocess,  # fresh processes: malloc's settings are process-wide
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


#: Third-party packages fersuite's apps import (the slow part of a fresh interpreter), imported
#: once by the parent process of the probes. Never fersuite itself: what is observed is what
#: fersuite's import and its apps do, so each forked child imports fersuite on its own.
PRELOAD = (
    "numpy",
    "scipy",
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning",
    "lightning.pytorch",
    "timm",
    "hydra",
    "omegaconf",
    "wandb",
    "matplotlib",
    "fvcore",
)

#: The probes, each run in its own forked child: (name, code, environment added).
PROBES = (
    ("app", APP, {}),
    ("app_switch_off", APP, {"FERSUITE_MALLOC_TUNING": "0"}),
    ("library", LIBRARY, {}),
)

#: The one fresh interpreter: preloads PRELOAD, checks that fersuite is not imported, then
#: forks a child per probe; each child sets its environment, runs the probe's code with its
#: stdout on a pipe and reports its exit status. Prints ``name status last-line`` per probe.
PARENT = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback
    spec = json.loads(sys.argv[1])
    for mod in spec["preload"]:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    assert not any(m == "fersuite" or m.startswith("fersuite.") for m in sys.modules)
    for name, code, env in spec["probes"]:
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(r)
                os.dup2(w, 1)
                os.close(w)
                os.environ.pop("FERSUITE_MALLOC_TUNING", None)
                os.environ.update(env)
                try:
                    exec(compile(code, "<probe>", "exec"), {"__name__": "__main__"})
                    status = 0
                except SystemExit as exc:
                    status = exc.code if isinstance(exc.code, int) else (exc.code is not None)
                sys.stdout.flush()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r) as fh:
            out = fh.read()
        _, wstatus = os.waitpid(pid, 0)
        lines = out.strip().splitlines() or [""]
        print(name, os.waitstatus_to_exitcode(wstatus), lines[-1], flush=True)
    """
)


@pytest.fixture(scope="module")
def probes() -> dict[str, str]:
    """Each probe's last line of output, from forked children of one fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "FERSUITE_MALLOC_TUNING"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    spec = json.dumps({"preload": PRELOAD, "probes": PROBES})
    res = subprocess.run(
        [sys.executable, "-c", PARENT, spec], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = {}
    for line in res.stdout.strip().splitlines():
        name, status, answer = [*line.split(" ", 2), ""][:3]
        assert status == "0", f"probe {name} exited {status}: {res.stderr[-3000:]}"
        results[name] = answer
    assert set(results) == {name for name, _, _ in PROBES}, res.stdout + res.stderr[-3000:]
    return results


def test_an_app_serves_large_allocations_from_the_heap(probes: dict[str, str]) -> None:
    assert probes["app"] == "HEAP"


def test_the_switch_turns_the_tuning_off(probes: dict[str, str]) -> None:
    assert probes["app_switch_off"] == "MMAPPED"


def test_importing_fersuite_as_a_library_leaves_malloc_alone(probes: dict[str, str]) -> None:
    assert probes["library"] == "MMAPPED"
