"""A model card from a file is bounded before anything is allocated or built.

Each crafted card below (a checkpoint's ``fersuite`` metadata, and an exported model's
``model.json`` sidecar) goes through ``fersuite-predict`` and ``fersuite-eval`` in-process:
exit status 2, one line naming the file and the key, within seconds (the refusal comes before
any model is built), and nothing outside the run changed.

Every crafted file is refused by its reader directly (``checkpoint_card(read_checkpoint(path))``
for a checkpoint, ``read_sidecar`` for an export: what every app calls first). In-process, each
app refuses every file-level case (depth, size) of each file kind and, in turn, the card bounds:
each bound goes through one (file kind, app) pair (an app call is a Hydra compose, ~1 s).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from fersuite.checkpoint import META_KEY, read_card
from fersuite.cli.eval import main as eval_main
from fersuite.cli.predict import main as predict_main
from fersuite.data.synthetic import render_faces
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.errors import ModelCardError, ModelCardFormatError
from tests._helpers.apps import call_app
from tests.export.helpers import ZOO, make_checkpoint
from tests.security.apps import Victim

DEEP = 100_000
HUGE = 50 * 1024 * 1024
SMALL = {**ZOO["lightweight_cnn"], "width_mult": 0.25, "expansion_channels": 32}


def _set_input(card: dict[str, Any], key: str, value: Any) -> None:
    card["input"][key] = value
    card[{"size": "input_size", "channels": "in_chans"}.get(key, key)] = value


def _names(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda card: card.__setitem__("class_names", [value, *card["class_names"][1:]])


#: name -> (change to an honest card, the key the refusal names)
CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "input_size_1e5": (lambda c: _set_input(c, "size", 100_000), "input.size=100000"),
    "model_input_size_1e5": (
        lambda c: c["model_cfg"].__setitem__("input_size", 100_000),
        "model_cfg.input_size=100000",
    ),
    "width_1000": (
        lambda c: c["model_cfg"].__setitem__("width_mult", 1000.0),
        "model_cfg.width_mult=1000",
    ),
    "nan_mean": (lambda c: _set_input(c, "mean", [math.nan]), "input.mean[0]=nan"),
    "std_0": (lambda c: _set_input(c, "std", [0.0]), "input.std[0]=0.0"),
    "class_dict": (_names({"happy": 1}), "class_names[0]"),
    "class_dotdot": (_names("../x"), "class_names[0]='../x'"),
    "class_newline": (_names("a\nb"), r"class_names[0]='a\nb'"),
    "class_interpolation": (_names("${oc.env:HOME}"), "class_names[0]='${oc.env:HOME}'"),
}
#: file-level cases, each crafted its own way per file kind
FILE_CASES = {"deep_100000": "class_names", "huge_50MiB": "class_names[0]"}


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An honest checkpoint, its TorchScript export (model.pt + model.json) and an image."""
    root = tmp_path_factory.mktemp("honest")
    ckpt, _ = make_checkpoint(root / "m.ckpt", SMALL)
    fast = {"latency_runs": 0, "verify": False, "format": "torchscript"}
    export_checkpoint(ckpt, ExportSettings(**fast), root / "ts")  # type: ignore[arg-type]
    image = root / "face.png"
    Image.fromarray(render_faces(1, size=48, seed=0).images[0]).save(image)
    return {"ckpt": ckpt, "model": root / "ts" / "model.pt", "image": image}


def _deep_pickle_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """``ckpt`` with ``class_names`` a list nested ``DEEP`` levels deep, written in torch's
    legacy format (pickle opcodes written by hand: pickling it would recurse)."""
    marker = "DEEP-MARKER-" + "x" * 20
    ckpt[META_KEY]["class_names"] = marker
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    raw = marker.encode()
    op = pickle.BINUNICODE + len(raw).to_bytes(4, "little") + raw
    assert data.count(op) == 1
    nested = pickle.EMPTY_LIST * DEEP + pickle.APPEND * (DEEP - 1)
    path.write_bytes(data.replace(op, nested))


def _craft_checkpoint(honest: dict[str, Path], case: str, path: Path) -> Path:
    ckpt = torch.load(honest["ckpt"], map_location="cpu", weights_only=True)
    card = ckpt[META_KEY]
    if case in CASES:
        CASES[case][0](card)
    elif case == "deep_100000":
        _deep_pickle_checkpoint(ckpt, path)
        return path
    elif case == "huge_50MiB":
        card["class_names"][0] = "a" * HUGE
    torch.save(ckpt, path)
    return path


def _craft_sidecar(honest: dict[str, Path], case: str, folder: Path) -> Path:
    """A copy of the honest export whose model.json is crafted; returns the model file."""
    folder.mkdir(parents=True)
    model = folder / "model.pt"
    shutil.copy(honest["model"], model)
    info = json.loads(honest["model"].with_suffix(".json").read_text())
    if case in CASES:
        CASES[case][0](info)
        text = json.dumps(info)  # NaN is written as NaN (Python's json reads it back)
    elif case == "deep_100000":
        info["class_names"] = "DEEP"
        text = json.dumps(info).replace('"DEEP"', "[" * DEEP + "]" * DEEP)
    else:  # huge_50MiB: a 50 MiB class name
        info["class_names"][0] = "DEEP"
        text = json.dumps(info).replace('"DEEP"', '"' + "a" * HUGE + '"')
    model.with_suffix(".json").write_text(text)
    return model


def test_fersuite_export_writes_only_a_card_its_readers_accept(
    honest: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exporter reads its own model.json back through the sidecar bounds before writing
    it: with the size bound lowered below an honest sidecar's, nothing is written."""
    import dataclasses

    import fersuite.card

    small = dataclasses.replace(fersuite.card.BOUNDS, max_json_bytes=200)
    monkeypatch.setattr(fersuite.card, "BOUNDS", small)
    fast = {"latency_runs": 0, "verify": False, "format": "torchscript"}
    with pytest.raises(ModelCardFormatError, match=r"model\.json: \d+ bytes or more"):
        export_checkpoint(honest["ckpt"], ExportSettings(**fast), tmp_path / "ts")  # type: ignore[arg-type]
    assert not (tmp_path / "ts" / "model.json").exists()


APPS = {
    "predict": (predict_main, "fersuite-predict"),
    "eval": (eval_main, "fersuite-eval"),
}
WARM: set[str] = set()


def _run(
    app: str,
    model: Path,
    honest: dict[str, Path],
    run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[Any, float]:
    main, prog = APPS[app]
    if app not in WARM:  # imports are not the refusal's time: a first call loads them
        missing = run / "missing.ckpt"
        warm = [f"ckpt_path={missing}", f"inputs={honest['image']}", f"hydra.run.dir={run}/w"]
        res = call_app(
            main, prog, warm[:2] if app == "predict" else warm[::2], run, monkeypatch, capsys
        )
        assert res.status == 2, res.err[-2000:]
        shutil.rmtree(run / "w", ignore_errors=True)
        WARM.add(app)
    if app == "predict":
        args = [f"ckpt_path={model}", f"inputs={honest['image']}", f"output={run / 'p.csv'}"]
    else:
        args = [f"ckpt_path={model}", f"hydra.run.dir={run / 'eval'}", "data.num_workers=0"]
    start = time.perf_counter()
    res = call_app(main, prog, args, run, monkeypatch, capsys)
    return res, time.perf_counter() - start


KINDS = ["checkpoint", "sidecar"]


def _crafted(honest: dict[str, Path], case: str, kind: str, run: Path) -> tuple[Path, Path]:
    """(the model file an app is given, the crafted file its refusal names)."""
    if kind == "checkpoint":
        run.mkdir()
        model = _craft_checkpoint(honest, case, run / "bad.ckpt")
        return model, model
    model = _craft_sidecar(honest, case, run / "export")
    return model, model.with_suffix(".json")


def _key(case: str, kind: str) -> str:
    """What the refusal of ``case`` names."""
    if case == "huge_50MiB" and kind == "sidecar":
        return "bytes"  # refused by its size, unread
    if case == "deep_100000" and kind == "sidecar":
        return "nested more than"
    return CASES[case][1] if case in CASES else FILE_CASES[case]


def _spy_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The class names of every torch module built from now on."""
    built: list[str] = []
    real = torch.nn.Module.__init__

    def spy(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", spy)
    return built


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", [*CASES, *FILE_CASES])
def test_each_crafted_file_is_refused_by_its_reader_before_any_model_is_built(
    case: str, kind: str, honest: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What every app calls first on a checkpoint / an exported model's sidecar."""
    from fersuite.checkpoint import checkpoint_card, read_checkpoint
    from fersuite.errors import UserError
    from fersuite.inference import read_sidecar

    victim = Victim.make(tmp_path / "home")
    before = victim.snapshot()
    model, bad = _crafted(honest, case, kind, tmp_path / "run")
    built = _spy_builds(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        if kind == "checkpoint":
            checkpoint_card(read_checkpoint(model), str(model))
        else:
            read_sidecar(model)
    elapsed = time.perf_counter() - start
    msg = str(err.value)
    assert str(bad) in msg and _key(case, kind) in msg, msg
    assert "\n" not in msg and len(msg) < 400, msg
    assert not built, f"a model was built before the refusal: {built[:5]}"
    assert elapsed < 5.0, f"refused after {elapsed:.2f} s"
    victim.assert_untouched(before)


#: in-process: every file-level case through every (file kind, app) pair; each card bound
#: through one pair, the pairs in turn (each refuses two or three)
APP_CELLS = [
    (case, kind, app)
    for i, case in enumerate([*CASES, *FILE_CASES])
    for k, kind in enumerate(KINDS)
    for a, app in enumerate(sorted(APPS))
    if case in FILE_CASES or i % (len(KINDS) * len(APPS)) == k * len(APPS) + a
]


@pytest.mark.parametrize(("case", "kind", "app"), APP_CELLS)
def test_each_bound_is_refused_by_the_apps_before_any_model_is_built(
    case: str,
    kind: str,
    app: str,
    honest: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = Victim.make(tmp_path / "home")
    before = victim.snapshot()
    run = tmp_path / "run"
    model, bad = _crafted(honest, case, kind, run)
    built = _spy_builds(monkeypatch)
    res, elapsed = _run(app, model, honest, run, monkeypatch, capsys)
    print(f"\n{app}/{kind}/{case}: refused in {elapsed:.3f} s")  # pytest -s shows it

    assert res.status == 2, res.err[-3000:]
    assert len(res.error_lines) == 1, res.err[-3000:]
    assert res.err.strip().splitlines() == res.error_lines, res.err[-3000:]
    line = res.error_lines[0]
    assert line.startswith(f"{APPS[app][1]}: error: {bad}"), line
    assert _key(case, kind) in line, line
    assert len(line) < 400 and "Traceback" not in res.err
    assert not built, f"a model was built before the refusal: {built[:5]}"
    assert not (run / "p.csv").exists()
    assert not list(run.rglob("metrics.json"))
    assert elapsed < 5.0, f"refused after {elapsed:.2f} s"
    victim.assert_untouched(before)


def test_the_honest_files_still_predict(
    honest: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for model in (honest["ckpt"], honest["model"]):
        out = tmp_path / f"{model.suffix[1:]}.csv"
        args = [f"ckpt_path={model}", f"inputs={honest['image']}", f"output={out}"]
        res = call_app(predict_main, "fersuite-predict", args, tmp_path, monkeypatch, capsys)
        assert res.status == 0, res.err[-3000:]
        assert out.is_file()


# -- the card reader itself --------------------------------------------------------------------


@pytest.fixture(scope="module")
def card_dict(honest: dict[str, Path]) -> dict[str, Any]:
    return torch.load(honest["ckpt"], map_location="cpu", weights_only=True)[META_KEY]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: _set_input(c, "size", 0), "input.size=0"),
        (lambda c: _set_input(c, "size", 1025), "input.size=1025"),
        (lambda c: _set_input(c, "size", 48.0), "input.size=48.0"),
        (lambda c: _set_input(c, "channels", 2), "input.channels=2"),
        (lambda c: _set_input(c, "mean", [math.inf]), r"input.mean\[0\]=inf"),
        (lambda c: _set_input(c, "std", [-1.0]), r"input.std\[0\]=-1.0"),
        (lambda c: _set_input(c, "std", [1.0, 1.0]), "input.std"),
        (lambda c: c.__setitem__("class_names", []), "class_names"),
        (lambda c: c.__setitem__("class_names", ["x"] * 1001), "1001 names"),
        (lambda c: c.__setitem__("class_names", ["a", "a"]), "'a' twice"),
        (lambda c: c.__setitem__("class_names", ["a" * 65]), "65 characters"),
        (lambda c: c.__setitem__("class_names", ["a/b"]), r"class_names\[0\]='a/b'"),
        (lambda c: c.__setitem__("class_names", ["a\\b"]), r"class_names\[0\]"),
        (lambda c: c.__setitem__("class_names", [".."]), r"class_names\[0\]"),
        (lambda c: c.__setitem__("class_names", [" a"]), r"class_names\[0\]"),
        (lambda c: c.__setitem__("class_names", ["a\x00"]), r"class_names\[0\]"),
        (lambda c: c.__setitem__("has_va", "false"), "has_va='false'"),
        (lambda c: c["face_crop"].__setitem__("margin", math.nan), "face_crop.margin=nan"),
        (lambda c: c["face_crop"].__setitem__("crop_size", 10**6), "face_crop.crop_size"),
        (lambda c: c["face_crop"].__setitem__("score_threshold", 2.0), "score_threshold=2.0"),
        (lambda c: c["face_crop"].__setitem__("kind", "${x}"), "face_crop.kind"),
        (lambda c: c["input"].__setitem__("extra", "${oc.env:HOME}"), r"input\.extra"),
        (lambda c: c.__setitem__("card_version", 10**30), "card_version"),
    ],
)
def test_each_card_bound_is_one_line_naming_the_key(
    card_dict: dict[str, Any], change: Callable[[dict[str, Any]], None], match: str
) -> None:
    card = copy.deepcopy(card_dict)
    change(card)
    with pytest.raises(ModelCardFormatError, match=match) as err:
        read_card(card, "some/m.ckpt")
    assert str(err.value).startswith("some/m.ckpt: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("arch", "change", "match"),
    [
        ("lightweight_cnn", {"width_mult": 0.0}, "width_mult=0.0"),
        ("lightweight_cnn", {"width_mult": math.nan}, "width_mult=nan"),
        ("lightweight_cnn", {"drop_rate": 1.5}, "drop_rate=1.5"),
        ("lightweight_cnn", {"expansion_channels": 10**6}, "expansion_channels"),
        ("lightweight_cnn", {"bottlenecks": [[6, 10**5, 1, 1]]}, r"bottlenecks\[0\]\[1\]"),
        ("lightweight_cnn", {"bottlenecks": [[6, 16, 1, 1]] * 9}, "bottlenecks"),
        ("lightweight_cnn", {"num_classes": 10**6}, "num_classes"),
        ("mit_fer", {"fusion_dim": 10**6}, "fusion_dim"),
        ("mit_fer", {"variant": "b9"}, "variant='b9'"),
        ("mit_fer", {"drop_path_rate": -0.1}, "drop_path_rate"),
        ("timm", {"input_size": 4096}, "input_size=4096"),
        ("timm", {"std": [0.0]}, r"std\[0\]"),
        ("emonet", {"num_stacks": 1000}, "num_stacks=1000"),
        ("emonet", {"input_size": 100}, "multiple of 64"),
        ("emonet", {"num_emo_blocks": 100}, "num_emo_blocks"),
    ],
)
def test_each_architecture_range_is_checked_before_building(
    arch: str, change: dict[str, Any], match: str
) -> None:
    from fersuite.checkpoint import check_model_card

    cfg = {**{k: v for k, v in ZOO[arch].items() if k != "arch"}, "arch": arch, **change}
    with pytest.raises(ModelCardError, match=match) as err:
        check_model_card(cfg, "some/m.ckpt")
    assert str(err.value).startswith("some/m.ckpt: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_the_zoo_configs_are_inside_the_ranges(arch: str) -> None:
    from fersuite.checkpoint import check_model_card

    assert check_model_card(dict(ZOO[arch]), "f.ckpt")["arch"] == arch


def test_the_json_depth_is_counted_without_a_parser() -> None:
    from fersuite.card import BOUNDS, json_depth, parse_card_json

    assert json_depth(b'{"a": "[[[[", "b": [1, {"c": "\\"]]"}]}', 32) == 3
    assert json_depth(b"[" * DEEP + b"]" * DEEP, 32) == 33
    assert json_depth(b"[{}" * 40 + b"]" * 40, 32) == 33  # no run of 33 openers: counted
    assert json_depth(b"[" * 10 + b"}" * 10, 32) is None
    start = time.perf_counter()
    for evil in (b'"\\"' * 350_000, b"[]" * 500_000, b"[" * 2**19 + b"]" * 2**19):
        json_depth(evil, BOUNDS.max_depth)
    assert time.perf_counter() - start < 3.0
    with pytest.raises(ModelCardFormatError, match=r"m\.json: JSON nested more than 32"):
        parse_card_json(b"[" * 33 + b"]" * 33, "m.json")
    with pytest.raises(ModelCardFormatError, match="'a' appears twice"):
        parse_card_json(b'{"a": 1, "a": 2}', "m.json")
    with pytest.raises(ModelCardFormatError, match="bytes"):
        parse_card_json(b" " * (BOUNDS.max_json_bytes + 1), "m.json")
    assert parse_card_json(b"[" * 32 + b"]" * 32, "m.json") is not None
