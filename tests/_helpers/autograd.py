"""Keep a test process forkable for training children.

PyTorch's autograd engine sets up its worker threads once, at the first ``backward`` of a
process: one thread per device of every non-CPU device type that reports devices then. After
a ``torch.export`` (the ONNX dynamo exporter, ExecuTorch) a device type reports one, so a first
``backward`` after an export starts a worker thread and marks the process: every forked child
that calls ``backward`` then fails with "Unable to handle autograd's threading in combination
with fork-based multiprocessing" (a forked training run of tests/_helpers/fork.py, after an
export test in the same pytest worker). A first ``backward`` before any export sets the engine
up with the CPU alone, and no later export changes it.
"""

from __future__ import annotations

import torch


def start_autograd_on_cpu() -> None:
    """The process's first ``backward``: call it before anything runs ``torch.export``."""
    x = torch.ones(1, requires_grad=True)
    (2 * x).sum().backward()
