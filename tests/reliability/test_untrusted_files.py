"""Crafted pickles are refused with a clear message and their payload never runs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from fersuite.checkpoint import build_model_from_card, check_model_card, load_model_from_checkpoint
from fersuite.cli.predict import main as predict_main
from fersuite.data.synthetic import render_faces
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.distill.teacher import load_teacher
from fersuite.errors import ModelCardError, PretrainedWeightsError
from fersuite.labels import CANONICAL_CLASSES
from fersuite.models.weights import load_state_dict_file
from tests._helpers.apps import run_app
from tests._helpers.export import FAST_ONNX, FAST_ONNX_OVERRIDES
from tests.conftest import TINY, run_env
from tests.export.helpers import ZOO, make_checkpoint


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
    path, marker = evil
    with pytest.raises(PretrainedWeightsError, match="refusing to load"):
        load_teacher(teacher="checkpoint", teacher_ckpt=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("how", ["ckpt_path", "resume_dir", "resume_auto"])
def test_training_resume_refuses_before_loading_data(  # type: ignore[no-untyped-def]
    cfg_factory, evil: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    from fersuite.training.run import train

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


# --------------------------------------------------------------------------------------------
# A checkpoint's stored model config (and an export sidecar's) never runs code
# --------------------------------------------------------------------------------------------

FACTORY = "fersuite.models.registry.create_model"


def _payload(kind: str, victim: Path, copy: Path) -> dict[str, object]:
    """A nested Hydra node that Hydra 1.3.8's target policy lets through."""
    if kind == "open":  # truncates the victim file
        return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    return {"_target_": "shutil.copyfile", "src": str(victim), "dst": str(copy)}


def _armed_model_cfg(kind: str, victim: Path, copy: Path) -> dict[str, object]:
    """A lightweight CNN card whose real ``bottlenecks`` key holds the payload."""
    return {
        "_target_": FACTORY,
        "arch": "lightweight_cnn",
        "in_chans": 1,
        "input_size": 48,
        "drop_rate": 0.2,
        "pretrained_path": None,
        "bottlenecks": _payload(kind, victim, copy),
    }


class Armed:
    """A crafted checkpoint (plain data, loads with weights_only=True) and its victim."""

    def __init__(self, root: Path, kind: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.victim = root / "victim.txt"
        self.victim.write_text("precious user data\n")
        self.copy = root / "stolen.txt"
        self.ckpt = root / "crafted.ckpt"
        torch.save(
            {
                "state_dict": {"net.head.weight": torch.zeros(8, 4)},
                "fersuite": {
                    "model_cfg": _armed_model_cfg(kind, self.victim, self.copy),
                    "class_names": list(CANONICAL_CLASSES),
                    "has_va": True,
                    "input_size": 48,
                    "in_chans": 1,
                    "mean": [0.5],
                    "std": [0.5],
                },
                "epoch": 0,
                "global_step": 1,
            },
            self.ckpt,
        )
        torch.load(self.ckpt, weights_only=True)  # the file itself is plain data

    def assert_untouched(self) -> None:
        assert self.victim.read_text() == "precious user data\n"
        assert not self.copy.exists()


@pytest.fixture(params=["open", "copyfile"])
def armed(request: pytest.FixtureRequest, tmp_path: Path) -> Armed:
    kind = str(request.param)
    # The payload really is armed: Hydra's instantiate runs it.
    control = Armed(tmp_path / "control", kind)
    with contextlib.suppress(Exception):
        instantiate(_armed_model_cfg(kind, control.victim, control.copy))
    if kind == "open":
        assert control.victim.read_text() == ""
    else:
        assert control.copy.read_text() == "precious user data\n"
    return Armed(tmp_path / "attack", kind)


def _one_line(message: str, file: Path) -> None:
    assert "\n" not in message.strip(), message
    assert str(file) in message and "_target_" in message, message


def test_load_model_from_checkpoint_refuses_a_nested_target(armed: Armed) -> None:
    with pytest.raises(ModelCardError) as exc:
        load_model_from_checkpoint(armed.ckpt)
    _one_line(str(exc.value), armed.ckpt)
    assert isinstance(exc.value, PretrainedWeightsError)  # a user error for every app
    armed.assert_untouched()


def test_distillation_teacher_refuses_a_nested_target(armed: Armed) -> None:
    with pytest.raises(ModelCardError) as exc:
        load_teacher(teacher="checkpoint", teacher_ckpt=str(armed.ckpt))
    _one_line(str(exc.value), armed.ckpt)
    armed.assert_untouched()


def test_export_refuses_a_nested_target(armed: Armed, tmp_path: Path) -> None:
    with pytest.raises(ModelCardError) as exc:
        export_checkpoint(armed.ckpt, ExportSettings(latency_runs=0, **FAST_ONNX), tmp_path / "out")
    _one_line(str(exc.value), armed.ckpt)
    armed.assert_untouched()
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_predict_refuses_a_nested_target(
    armed: Armed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, out = tmp_path / "face.png", tmp_path / "predictions.csv"
    Image.fromarray(render_faces(1, size=48, seed=0).images[0]).save(image)
    assert predict_main([f"ckpt_path={armed.ckpt}", f"inputs={image}", f"output={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fersuite-predict: error:")
    _one_line(err, armed.ckpt)
    armed.assert_untouched()


@pytest.mark.parametrize("how", ["evaluate", "distill"])
def test_train_app_refuses_a_nested_target(  # type: ignore[no-untyped-def]
    cfg_factory, armed: Armed, tmp_path: Path, how: str
) -> None:
    from fersuite.training.run import train

    if how == "evaluate":  # fersuite-train train=false ckpt_path=<file>
        overrides = ["train=false", f"ckpt_path={armed.ckpt}"]
    else:  # fersuite-train task=distill distill.teacher_ckpt=<file>
        overrides = ["task=distill", f"distill.teacher_ckpt={armed.ckpt}"]
    cfg = cfg_factory([*TINY, *overrides, "logger=none"])
    with pytest.raises(ModelCardError) as exc:
        train(cfg)
    _one_line(str(exc.value), armed.ckpt)
    armed.assert_untouched()


def test_resume_never_rebuilds_from_the_stored_model_config(  # type: ignore[no-untyped-def]
    cfg_factory, tmp_path: Path
) -> None:
    """Resuming builds the model from the run's own config; the file only supplies state."""
    from fersuite.training.run import train

    armed = Armed(tmp_path / "attack", "open")
    cfg = cfg_factory([*TINY, f"ckpt_path={armed.ckpt}", "logger=none"])
    with pytest.raises(Exception):  # noqa: B017 - not a resumable checkpoint; any refusal
        train(cfg)
    armed.assert_untouched()


@pytest.mark.parametrize(
    ("app", "args"),
    [
        ("fersuite-export", ["export.latency_runs=0", *FAST_ONNX_OVERRIDES]),
        ("fersuite-train", ["train=false", *TINY, "logger=none"]),
    ],
)
def test_console_scripts_refuse_a_nested_target(tmp_path: Path, app: str, args: list[str]) -> None:
    armed = Armed(tmp_path / "attack", "open")
    res = run_app(app, [f"ckpt_path={armed.ckpt}", *args], cwd=tmp_path, env=run_env(tmp_path))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{app}: error:"), res.stderr[-3000:]
    _one_line(last, armed.ckpt)
    armed.assert_untouched()


def test_predict_refuses_an_export_sidecar_with_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = {**ZOO["lightweight_cnn"], "width_mult": 0.25, "expansion_channels": 32}
    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", small)
    fast = {"latency_runs": 0, "verify": False, "format": "torchscript"}
    export_checkpoint(ckpt, ExportSettings(**fast), tmp_path / "ts")  # type: ignore[arg-type]
    image, out = tmp_path / "face.png", tmp_path / "predictions.csv"
    Image.fromarray(render_faces(1, size=48, seed=0).images[0]).save(image)
    model = tmp_path / "ts" / "model.pt"
    honest = [f"ckpt_path={model}", f"inputs={image}", f"output={out}"]
    assert predict_main(honest) == 0 and out.is_file()  # the honest export works
    out.unlink()
    capsys.readouterr()

    victim = tmp_path / "victim.txt"
    victim.write_text("precious user data\n")
    sidecar = model.with_suffix(".json")
    info = json.loads(sidecar.read_text())
    info["model_cfg"]["drop_rate"] = _payload("open", victim, tmp_path / "copy")
    sidecar.write_text(json.dumps(info))
    assert predict_main(honest) == 2
    err = capsys.readouterr().err.strip()
    _one_line(err, sidecar)
    assert not out.exists()
    assert victim.read_text() == "precious user data\n"


# The checker itself: plain values under the registry's own factory, nothing else.
_GOOD = {"_target_": FACTORY, "arch": "lightweight_cnn", "in_chans": 1, "input_size": 48}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"_target_": "builtins.open"}, r"_target_='builtins.open'"),
        ({"_target_": "fersuite.models.lightweight_cnn.LightweightCNN"}, "_target_"),
        ({"_partial_": True}, "_partial_"),
        ({"bottlenecks": [[1, 16, 1, 1], {"_target_": "os.getcwd"}]}, r"bottlenecks\[1\]"),
        ({"extra": {"deep": {"_target_": "builtins.print"}}}, r"extra\.deep\._target_"),
        ({"drop_rate": torch.tensor(0.1)}, "drop_rate.*plain"),
        ({"pretrained_path": "${oc.env:HOME}"}, "interpolation"),
        ({"arch": "os"}, "arch='os'"),
        ({"arch": None}, "arch"),
        ({"no_such_key": 1}, "no_such_key"),
    ],
)
def test_model_card_check_refuses(change: dict[str, object], match: str) -> None:
    with pytest.raises(ModelCardError, match=match) as exc:
        check_model_card({**_GOOD, **change}, "some/file.ckpt")
    assert str(exc.value).startswith("some/file.ckpt:")
    assert "\n" not in str(exc.value)


def test_model_card_check_accepts_plain_values_and_builds_through_the_registry() -> None:
    card = check_model_card(
        {**_GOOD, "drop_rate": 0.1, "expansion_channels": None, "pretrained_path": None},
        "f.ckpt",
    )
    assert card["_target_"] == FACTORY and card["arch"] == "lightweight_cnn"
    no_target = {k: v for k, v in _GOOD.items() if k != "_target_"}
    assert check_model_card(no_target, "f.ckpt")["arch"] == "lightweight_cnn"
    net = build_model_from_card(card, "f.ckpt", num_classes=7)
    assert type(net).__name__ == "LightweightCNN"
