"""Each pytest-xdist worker of `make test` runs torch on its share of the cores (tests/conftest.py):
2 workers on 2 cores, one thread each. The workers used to inherit the controller's count (all
the cores), so two workers ran 2 threads each on 2 cores; small-batch tests ran up to ~10x slower
than alone (OpenMP threads waiting on each other)."""

from __future__ import annotations

import os

import torch


def test_each_worker_runs_torch_on_its_share_of_the_cores() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = max(1, (os.cpu_count() or 1) // workers)
    user = os.environ.get("FERSUITE_TESTS_USER_THREADS", "")  # OMP_NUM_THREADS the user set
    want = int(user) if user else share
    assert torch.get_num_threads() == want
    # console-script children inherit it
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == str(want)
