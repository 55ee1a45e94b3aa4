"""A misspelt key or group option on the command line: the first attempt answers with one line
that names the closest valid choice (not Hydra's "use +key" hint)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests._helpers.apps import call_app

CASES = [
    # (module, app, arguments, the answer)
    (
        "fersuite.cli.train",
        "fersuite-train",
        ["trainer.max_epoch=3"],
        "unknown key trainer.max_epoch; did you mean trainer.max_epochs?",
    ),
    (
        "fersuite.cli.train",
        "fersuite-train",
        ["optimizer.lrr=0.1"],
        "unknown key optimizer.lrr; did you mean optimizer.lr?",
    ),
    (
        "fersuite.cli.train",
        "fersuite-train",
        ["data.batch_szie=8"],
        "unknown key data.batch_szie; did you mean data.batch_size?",
    ),
    (
        "fersuite.cli.train",
        "fersuite-train",
        ["data.augment.mixupp=0.2"],
        "unknown key data.augment.mixupp; did you mean data.augment.mixup?",
    ),
    (
        "fersuite.cli.train",
        "fersuite-train",
        ["modle=timm"],
        "unknown key modle; did you mean model?",
    ),
    (
        "fersuite.cli.eval",
        "fersuite-eval",
        ["ckpt_path=x.ckpt", "data.batch_szie=8"],
        "unknown key data.batch_szie; did you mean data.batch_size?",
    ),
    (
        "fersuite.cli.export",
        "fersuite-export",
        ["ckpt_path=x.ckpt", "export.quantise=int8"],
        "unknown key export.quantise; did you mean export.quantize?",
    ),
    (
        "fersuite.cli.profile",
        "fersuite-profile",
        ["profile.latency_run=3"],
        "unknown key profile.latency_run; did you mean profile.latency_runs?",
    ),
    (
        "fersuite.cli.data",
        "fersuite-data",
        ["samples_per_clas=3"],
        "unknown key samples_per_clas; did you mean samples_per_class?",
    ),
]


@pytest.mark.parametrize(("module", "app", "args", "answer"), CASES)
def test_misspelt_key_names_the_closest_key(
    module: str,
    app: str,
    args: list[str],
    answer: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main = importlib.import_module(module).main
    res = call_app(main, app, args, tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert res.error_lines == [f"{app}: error: {answer}"]
    assert "use +" not in res.err and "Traceback" not in res.err
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_a_parameter_the_config_does_not_set_is_added_with_plus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``optimizer.eps`` is a parameter of AdamW that conf/optimizer/adamw.yaml does not set:
    the answer says so and how to add it; a misspelling of it is answered the same way."""
    from fersuite.cli.train import main

    res = call_app(main, "fersuite-train", ["optimizer.eps=1e-7"], tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert res.error_lines == [
        "fersuite-train: error: optimizer.eps is not set in the config, but AdamW takes it: "
        "add it with +optimizer.eps=<value>"
    ]
    res = call_app(main, "fersuite-train", ["optimizer.epss=1e-7"], tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert res.error_lines == [
        "fersuite-train: error: unknown key optimizer.epss; did you mean optimizer.eps? "
        "(AdamW takes it; not set in the config yet: +optimizer.eps=<value>)"
    ]


def test_unknown_key_without_a_close_one_lists_the_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.train import main

    res = call_app(main, "fersuite-train", ["optimizer.zzz=1"], tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert res.error_lines == [
        "fersuite-train: error: unknown key optimizer.zzz; optimizer has the keys lr, "
        "weight_decay (all of them: --cfg job)"
    ]


def test_misspelt_group_option_names_the_closest_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.train import main

    res = call_app(main, "fersuite-train", ["model=mitfer"], tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert res.error_lines == [
        "fersuite-train: error: In 'train': Could not find 'model/mitfer'; did you mean "
        "model=mit_fer? (options: emonet, lightweight_cnn, mit_fer, timm)"
    ]
