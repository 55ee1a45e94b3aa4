"""Every crafted checkpoint × every app that reads a checkpoint someone else made.

The payloads: the card bounds of :mod:`tests.security.test_card_bounds`, a model config
naming code (``_target_: builtins.open`` on a victim file), a training-data record holding an
OmegaConf resolver that would truncate the victim, and a pickle that runs a command. The apps:
``fersuite-export`` (fp32, and int8, which rebuilds calibration data from the record),
``fersuite-eval``, ``fersuite-predict`` and ``fersuite-train task=distill`` (the teacher).
Each must answer with exit status 2 and one line naming the file, with nothing outside the
run changed. ``pytest tests/security/test_matrix.py -v`` prints the matrix.

The code, record and pickle payloads go through every app. The card bounds are one reader's
(``checkpoint_card(read_checkpoint(path))``, which every app calls first; each bound is refused
by it directly in :mod:`tests.security.test_card_bounds`): here each card bound goes through one
app and each app refuses one or two of them (an app call is a Hydra compose, ~1 s).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from fersuite.checkpoint import META_KEY
from fersuite.cli.eval import main as eval_main
from fersuite.cli.export import main as export_main
from fersuite.cli.predict import main as predict_main
from fersuite.cli.train import main as train_main
from fersuite.data.synthetic import render_faces
from tests._helpers.apps import call_app
from tests.conftest import TINY
from tests.export.helpers import ZOO
from tests.security.apps import Victim
from tests.security.test_card_bounds import CASES

SYNTH = "fersuite.data.synthetic_datamodule.SyntheticDataModule"


class _Command:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _payloads(victim: Victim) -> dict[str, Any]:
    def nested_target(card: dict[str, Any], ckpt: dict[str, Any]) -> None:
        card["model_cfg"]["head"] = {"_target_": "builtins.open", "file": str(victim.file)}
        card["model_cfg"]["head"]["mode"] = "w"

    def record(card: dict[str, Any], ckpt: dict[str, Any]) -> None:
        opener = "{_target_: builtins.open, file: " + str(victim.file) + ", mode: w}"
        card["training_data"] = {
            "target": SYNTH,
            "values": {"train_size": 40, "cache_dir": '${oc.decode:"' + opener + '"}'},
        }

    def command(card: dict[str, Any], ckpt: dict[str, Any]) -> None:
        ckpt["callbacks"] = {"payload": _Command(victim.folder / "touched")}

    out = {name: (lambda c, k, f=fn: f(c)) for name, (fn, _) in CASES.items()}
    out.update(nested_target=nested_target, record=record, pickle_command=command)
    return out


PAYLOADS = [*CASES, "nested_target", "record", "pickle_command"]
APPS = ["export", "export_int8", "eval", "predict", "teacher"]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, fake_checkpoint) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("honest")
    path = fake_checkpoint(ZOO["lightweight_cnn"])
    image = root / "face.png"
    Image.fromarray(render_faces(1, size=48, seed=0).images[0]).save(image)
    return {"ckpt": torch.load(path, weights_only=True), "image": image}


def _args(app: str, ckpt: Path, run: Path, image: Path) -> tuple[Any, str, list[str]]:
    hydra_dir = f"hydra.run.dir={run / 'job'}"
    if app == "export":
        return export_main, "fersuite-export", [f"ckpt_path={ckpt}", hydra_dir]
    if app == "export_int8":
        quant = ["export.quantize=int8", "export.calibration_samples=8"]
        return export_main, "fersuite-export", [f"ckpt_path={ckpt}", *quant, hydra_dir]
    if app == "eval":
        return eval_main, "fersuite-eval", [f"ckpt_path={ckpt}", "logger=none", hydra_dir]
    if app == "predict":
        return predict_main, "fersuite-predict", [f"ckpt_path={ckpt}", f"inputs={image}"]
    teacher = ["task=distill", f"distill.teacher_ckpt={ckpt}", "model=lightweight_cnn"]
    return train_main, "fersuite-train", [*teacher, *TINY, "logger=none", hydra_dir]


#: export (fp32) and the teacher never read the record: a full honest run would show nothing
CELLS = [
    (p, a)
    for p in PAYLOADS
    for a in APPS
    if not (p == "record" and a in ("export", "teacher"))
    # a card bound: through one app, the apps in turn (every app gets one or two)
    and (p not in CASES or APPS.index(a) == list(CASES).index(p) % len(APPS))
]


@pytest.mark.parametrize(("payload", "app"), CELLS)
def test_crafted_checkpoint_is_refused_by_every_app(
    payload: str,
    app: str,
    honest: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = Victim.make(tmp_path / "home")
    before = victim.snapshot()
    run = tmp_path / "run"
    run.mkdir()
    ckpt_dict = {**honest["ckpt"], META_KEY: dict(honest["ckpt"][META_KEY])}
    card = ckpt_dict[META_KEY]
    card["model_cfg"] = dict(card["model_cfg"])
    card["input"] = dict(card["input"])
    card["class_names"] = list(card["class_names"])
    _payloads(victim)[payload](card, ckpt_dict)
    ckpt = run / "bad.ckpt"
    torch.save(ckpt_dict, ckpt)

    main, prog, args = _args(app, ckpt, run, honest["image"])
    res = call_app(main, prog, args, run, monkeypatch, capsys)

    if payload == "record" and app == "predict":
        # predict never reads the training-data record: the honest model just works
        assert res.status == 0, res.err[-2000:]
    else:
        assert res.status == 2, res.err[-2000:]
        assert len(res.error_lines) == 1 and str(ckpt) in res.error_lines[0], res.err[-2000:]
        assert "Traceback" not in res.err
    victim.assert_untouched(before)
    assert not (victim.folder / "touched").exists()
