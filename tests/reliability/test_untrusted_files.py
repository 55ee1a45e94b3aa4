"""Crafted pickles are refused with a clear message and their payload never runs."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from fersuite.checkpoint import load_model_from_checkpoint
from fersuite.models.weights import PretrainedWeightsError, load_state_dict_file


class _Payload:
    """Unpickling this runs ``touch <marker>`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a fersuite/Lightning checkpoint, with the payload inside."""
    torch.save(
        {
            "state_dict": {"net.head.fc.weight": torch.zeros(8, 4)},
            "fersuite": {"model_cfg": {}, "class_names": ["a"], "input_size": 48, "in_chans": 1},
            "epoch": 0,
            "global_step": 2,
            "pytorch-lightning_version": "2.6.0",
            "callbacks": {"payload": _Payload(marker)},
        },
        path,
    )
    return path


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    # The file really is armed: an unrestricted load would run the payload.
    control = tmp_path / "control"
    _evil_checkpoint(tmp_path / "control.ckpt", control)
    torch.load(tmp_path / "control.ckpt", weights_only=False)
    assert control.exists()
    return path, marker


def test_load_model_from_checkpoint_refuses(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    with pytest.raises(PretrainedWeightsError, match=r"refusing to load .*evil.ckpt"):
        load_model_from_checkpoint(path)
    assert not marker.exists()


def test_load_state_dict_file_refuses(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    pth = tmp_path / "weights.pth"
    pth.write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError, match=r"refusing to load .*weights.pth"):
        load_state_dict_file(pth)
    assert not marker.exists()


def test_distillation_teacher_checkpoint_refuses(evil: tuple[Path, Path]) -> None:
    teacher = pytest.importorskip("fersuite.distill.teacher")
    path, marker = evil
    with pytest.raises(PretrainedWeightsError, match="refusing to load"):
        teacher.load_teacher(teacher="checkpoint", teacher_ckpt=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("how", ["ckpt_path", "resume_dir", "resume_auto"])
def test_training_resume_refuses_before_loading_data(  # type: ignore[no-untyped-def]
    cfg_factory, evil: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    from fersuite.train import train

    path, marker = evil
    run = tmp_path / "run"
    if how == "ckpt_path":
        overrides = [f"ckpt_path={path}"]
    else:  # the crafted file sits where a killed run's last.ckpt would be
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
        overrides = [f"resume={run}" if how == "resume_dir" else "resume=auto"]
    cfg = cfg_factory([*overrides, "logger=none", "data.num_workers=0"])
    with pytest.raises(PretrainedWeightsError, match="refusing to load"):
        train(cfg)
    assert not marker.exists()
    assert not (tmp_path / "cache").exists()  # refused before any data was generated


def test_lightning_fit_itself_loads_weights_only(evil: tuple[Path, Path], tmp_path: Path) -> None:
    """Second line of defence: train.py passes weights_only=True to trainer.fit."""
    path, marker = evil

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.lin(batch).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self) -> torch.utils.data.DataLoader[torch.Tensor]:
            return torch.utils.data.DataLoader(torch.zeros(4, 2), batch_size=2)

    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(Exception, match=r"(?i)weights.only"):
        trainer.fit(Tiny(), ckpt_path=str(path), weights_only=True)
    assert not marker.exists()


def test_no_shell_commands_built_from_config_paths() -> None:
    """subprocess/os.system in the package: only fixed argv lists, never shell=True."""
    src = Path(__file__).resolve().parents[2] / "src" / "fersuite"
    offenders = []
    for py in src.rglob("*.py"):
        text = py.read_text()
        for needle in ("os.system(", "shell=True", "os.popen(", "subprocess.getoutput("):
            if needle in text:
                offenders.append(f"{py.relative_to(src)}: {needle}")
    assert not offenders, offenders
