"""Crash and resume: a run SIGKILLed after its epoch-end checkpoint, or mid-epoch after a
periodic one, resumed with ``resume=auto``, ends exactly like an uninterrupted run; so does a
run killed in each window at its end (during the last validation, after fit's last checkpoint,
during test, while writing metrics.json) and resumed after each kill.

The runs use the default callbacks (efficiency, progress bar, reports, checkpoints, RNG
state, non-finite guard) and the default two loader worker processes: the set a user runs.
Each run is a process of its own: a forked child of the test process (tests/_helpers/fork.py,
without a subprocess's ~10 s of start-up), and one of them (``REAL_CASE``'s killed run) the
``fersuite-train`` console script itself. The report's figures (PNG files: nothing here reads
them, and drawing them was a tenth of a run's time) are not drawn
(``callbacks.reports.plots=false``); the report callback itself runs, and its per-class
accuracies are in the metrics.json compared.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._helpers.fork import fork_app
from tests.conftest import REPO, run_env
from tests.reliability.killer import ENV as KILL_ENV
from tests.reliability.killer import MARK, POINT_ENV

#: 24 samples / batch 8 = 3 steps per epoch, 2 epochs; a model with dropout (RNG draws in
#: every training step) and augmentation. val/loss improves in both epochs: the best checkpoint
#: is the last epoch's, so a resume that misses the last validation tests another one. Two
#: validation and two test batches: a kill "during" either one lands between two batches.
RUN = [
    "monitor=val/loss",
    "trainer.max_epochs=2",
    "data.train_size=24",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=8",
    "data.num_workers=2",
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
    "seed=7",
    "trainer.deterministic=true",
    "callbacks.efficiency.latency_runs=2",
    "callbacks.efficiency.latency_warmup=1",
    "callbacks.efficiency.throughput_batch=2",
    "callbacks.efficiency.throughput_runs=1",
    "callbacks.efficiency.warmup_batches=1",
    "callbacks.reports.plots=false",  # the report's CSVs and metrics, no figures (not compared)
    "+callbacks.killer._target_=tests.reliability.killer.KillAtStep",
]
STEPS = 6
#: name -> (extra overrides, step to kill at, global step of the last.ckpt resumed from)
CASES = {
    # epoch 0 ends at step 3 (ModelCheckpoint's last.ckpt after validation); killed in epoch 1
    "epoch_end": ([], 4, 3),
    # last.ckpt every 2 steps: the step-4 one, one batch into epoch 1
    "mid_epoch": (["checkpoint.every_n_train_steps=2"], 5, 4),
    # last.ckpt on the clock (after every batch with 1 ms): the step-5 one, right before the kill
    "mid_epoch_timed": (["checkpoint.train_time_interval=0.001"], 5, 5),
}
#: The case whose killed run is a real ``fersuite-train`` subprocess: SIGKILL of the console
#: script itself, and its checkpoint resumed (in a forked child) to the forked reference's
#: weights bit for bit. Every other run is a forked child of the test process.
REAL_CASE = "epoch_end"


def _train(
    root: Path,
    *extra: str,
    kill_at: int | None = None,
    kill_point: str | None = None,
    real: bool = False,
) -> subprocess.CompletedProcess[str]:
    """One ``fersuite-train`` run under ``root``: in a forked child of this process (no
    interpreter and import start-up, see tests/_helpers/fork.py), or with ``real`` as a
    console-script subprocess (the one run that proves the kill of a real process)."""
    env = run_env(root)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout
    # every run computes alike on one thread (a forked child runs one; see fork.py)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.pop(KILL_ENV, None)
    env.pop(POINT_ENV, None)
    env["WANDB__SAVE_REQUIREMENTS"] = "false"  # W&B's list of installed packages: not read here
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    if kill_point is not None:
        env[POINT_ENV] = kill_point
    root.mkdir(parents=True, exist_ok=True)
    if not real:
        return fork_app("fersuite-train", [*RUN, *extra], cwd=root, env=env, timeout=900)
    return subprocess.run(
        [str(Path(sys.executable).parent / "fersuite-train"), *RUN, *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


#: What a run imports on its way (W&B's launch inputs and public API with pandas, the callbacks,
#: the data module, the model): done once in this process, every forked run starts with them as
#: a process whose start-up imported them would. (A cost of start-up only: nothing a run
#: computes or writes depends on it.)
_WARM_IMPORTS = (
    "pandas",
    "wandb.apis.public",
    "wandb.sdk.launch.inputs.internal",
    "fersuite.callbacks.early_stopping",
    "fersuite.callbacks.efficiency",
    "fersuite.callbacks.ema",
    "fersuite.callbacks.nonfinite_guard",
    "fersuite.callbacks.periodic_checkpoint",
    "fersuite.callbacks.reports",
    "fersuite.callbacks.rng_state",
    "fersuite.data.synthetic_datamodule",
    "fersuite.models.lightweight_cnn",
    "fersuite.modules.schedulers",
    "fersuite.profiling.summary",
)


@pytest.fixture(scope="module", autouse=True)
def _warm_imports() -> None:
    for name in _WARM_IMPORTS:
        importlib.import_module(name)


def _runs(root: Path) -> list[Path]:
    return sorted((root / "logs" / "train" / "runs").glob("*"))


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def _assert_all_checkpoints_load(run: Path) -> None:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts, f"no checkpoints in {run}"
    for ckpt in ckpts:
        _load(ckpt)  # raises on a truncated or unsafe file


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (periodic checkpoints do not change what is trained)."""
    root = tmp_path_factory.mktemp("ref")
    ref = _train(root)
    assert ref.returncode == 0, ref.stderr[-3000:]
    (run,) = _runs(root)
    return run


@pytest.mark.smoke
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.subprocess
@pytest.mark.long(5)
def test_sigkill_then_resume_auto_matches_uninterrupted_run(
    reference: Path, tmp_path: Path, case: str
) -> None:
    extra, kill_at, ckpt_step = CASES[case]
    ref_metrics = json.loads((reference / "metrics.json").read_text())

    root = tmp_path / "crash"
    # one real console-script process, SIGKILLed (the other runs: forked children)
    killed = _train(root, *extra, kill_at=kill_at, real=case == REAL_CASE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = _runs(root)
    assert not (run / "metrics.json").exists()
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == ckpt_step
    _assert_all_checkpoints_load(run)
    wandb_id = (run / "wandb_run_id.txt").read_text().strip()

    resumed = _train(root, *extra, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run}" in resumed.stdout
    metrics = json.loads((run / "metrics.json").read_text())

    # Every validation and test figure, bit for bit (val/*: the last epoch, trained after
    # the resume; test/*: the best checkpoint).
    compared = sorted(k for k in ref_metrics if k.startswith(("val/", "test/")))
    assert {"val/loss", "val/loss_best", "test/acc", "test/valence_ccc"} <= set(compared)
    assert {k: metrics.get(k) for k in compared} == {k: ref_metrics[k] for k in compared}

    # Same final weights, bit for bit, and the same number of optimizer steps.
    a = _load(reference / "checkpoints" / "last.ckpt")
    b = _load(run / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    _assert_all_checkpoints_load(run)

    # The resumed run continued the same W&B run.
    assert (run / "wandb_run_id.txt").read_text().strip() == wandb_id
    offline_runs = list((run / "wandb").glob(f"offline-run-*-{wandb_id}"))
    assert len(offline_runs) == 2, sorted(p.name for p in (run / "wandb").iterdir())


#: Figures measured on the clock: they differ between any two runs.
TIMED = ("latency", "throughput", "_ips")
#: The kill points of one run, in order (tests/reliability/killer.py): the first run is killed
#: at the first, its resume at the next, and so on; a last resume runs to the end.
#: final_val: in the last epoch's validation, with last.ckpt every 3 steps (the epoch ends);
#: train_end: right after fit's last checkpoint (best and last of the last epoch);
#: test: during test; metrics: metrics.json written to its temporary file, not renamed yet.
WINDOWS = ("final_val", "train_end", "test", "metrics")


@pytest.mark.smoke
@pytest.mark.subprocess
@pytest.mark.long(5)
def test_killed_in_each_window_at_the_end_then_resumed_matches_uninterrupted_run(
    reference: Path, tmp_path: Path
) -> None:
    extra = ["checkpoint.every_n_train_steps=3"]
    root = tmp_path / "crash"
    run: Path | None = None
    for point in WINDOWS:
        again = ["resume=auto"] if run is not None else []
        killed = _train(root, *extra, *again, kill_point=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert f"{MARK}{point}" in killed.stderr, killed.stderr[-3000:]
        if run is None:
            (run,) = _runs(root)
        else:
            assert f"resuming {run}" in killed.stdout
        assert not (run / "metrics.json").exists()
        _assert_all_checkpoints_load(run)

    assert run is not None
    resumed = _train(root, *extra, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run}" in resumed.stdout
    assert not list(run.glob(".*.tmp")), "a killed write was left behind"

    # Every figure of metrics.json (val/*, train/*, test/*, lr, guard, model size) bit for bit,
    # and no more or fewer of them; only the timed ones differ.
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())

    def untimed(m: dict) -> dict:  # type: ignore[type-arg]
        return {k: v for k, v in m.items() if not any(t in k for t in TIMED)}

    assert {"val/loss", "val/loss_best", "train/loss_epoch", "test/acc"} <= set(ref_metrics)
    assert untimed(metrics) == untimed(ref_metrics)

    # The same checkpoints: the last epoch's best (the one tested) and last.ckpt, same weights.
    names = sorted(p.name for p in (reference / "checkpoints").glob("*.ckpt"))
    assert names == ["best-epoch001.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == names
    for name in names:
        a, b = _load(reference / "checkpoints" / name), _load(run / "checkpoints" / name)
        assert a["global_step"] == b["global_step"] == STEPS
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)
