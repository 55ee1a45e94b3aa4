"""Test-only callback: record the dataset indices of every train batch, per rank and epoch.

Acts only when ``FERSUITE_TEST_INDEX_DIR`` is set: writes ``rank<r>.json`` there at the end
of training, ``{"<epoch>": [indices in the order trained]}``. It never touches any RNG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L

ENV = "FERSUITE_TEST_INDEX_DIR"


class RecordTrainIndices(L.Callback):
    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        key = str(trainer.current_epoch)
        self.seen.setdefault(key, []).extend(int(i) for i in batch["index"].tolist())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = os.environ.get(ENV)
        if out:
            path = Path(out) / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps(self.seen))
