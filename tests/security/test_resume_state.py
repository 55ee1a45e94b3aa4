"""Paths in a resumed checkpoint's callback state are data: a run touches only its own folder.

Lightning's ``ModelCheckpoint`` state names checkpoint paths (``best_k_models``,
``best_model_path``, ``kth_best_model_path``, ``last_model_path``) that its top-k clean-up
deletes after resuming and that ``fersuite-train`` tests after fit. Each crafted state below
names a VICTIM outside the run; resuming it must finish, and the victim must be unchanged.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch

from fersuite.cli.train import main as train_main
from tests._helpers.apps import call_app
from tests._helpers.artifacts import RESUME_RUN
from tests.security.apps import Victim

#: TINY with 2 steps an epoch and only the callbacks that checkpoint (and those they need).
RUN = RESUME_RUN
STEPS = 2
KEY = "ModelCheckpoint{"


@pytest.fixture
def trained(resume_run: Path) -> Path:
    """A finished one-epoch run (its ``checkpoints/last.ckpt`` is resumed below; built once
    per worker, copied before use)."""
    return resume_run


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def _unfinished_copy(trained: Path, dest: Path) -> Path:
    """A copy of the trained run that resume=<dir> continues (no metrics.json)."""
    shutil.copytree(trained, dest, symlinks=True)
    (dest / "metrics.json").unlink()
    return dest


def _craft(run: Path, **state: Any) -> None:
    """Rewrite the ModelCheckpoint state of ``run``'s last.ckpt: its own dirpath, ``state``."""
    last = run / "checkpoints" / "last.ckpt"
    ckpt = _load(last)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith(KEY)]
    ckpt["callbacks"][key].update(dirpath=os.path.realpath(run / "checkpoints"), **state)
    torch.save(ckpt, last)


def _resume(run: Path, root: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    return call_app(
        train_main,
        "fersuite-train",
        [*RUN, "trainer.max_epochs=2", f"resume={run}"],
        root,
        monkeypatch,
        capsys,
    )


def _escape(run: Path, target: Path) -> str:
    """``<run>/checkpoints/../../..``-style text that names ``target``."""
    ckpt_dir = os.path.realpath(run / "checkpoints")
    return f"{ckpt_dir}/{os.path.relpath(os.path.realpath(target), ckpt_dir)}"


def _assert_resumed(run: Path, result: Any, victim: Victim) -> None:
    assert result.status == 0, result.err[-3000:]
    assert (run / "metrics.json").is_file()
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS
    # nothing of the victim's is kept in the new callback state
    text = repr(list(_load(run / "checkpoints" / "last.ckpt")["callbacks"].values()))
    assert str(victim.file.parent) not in text and "/../" not in text


def test_relative_escape_in_state_deletes_nothing_outside(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    score = -math.inf  # beaten at epoch 1: the top-k clean-up runs
    victim = Victim.make(tmp_path / "outside")
    before = victim.snapshot()
    run = _unfinished_copy(trained, tmp_path / "root" / "run")
    esc_file, esc_dir = _escape(run, victim.file), _escape(run, victim.folder)
    assert ".." in esc_file and esc_file.startswith(os.path.realpath(run / "checkpoints"))
    _craft(
        run,
        best_k_models={esc_file: torch.tensor(score)},
        kth_best_model_path=esc_file,
        kth_value=torch.tensor(score),
        best_model_path=esc_file,
        best_model_score=torch.tensor(score),
        last_model_path=esc_dir,
    )
    result = _resume(run, tmp_path / "root", monkeypatch, capsys)
    victim.assert_untouched(before)
    _assert_resumed(run, result, victim)
    (warning,) = [ln for ln in result.out.splitlines() if "ignoring checkpoint paths" in ln]
    assert esc_file in warning and esc_dir in warning


def test_absolute_path_in_state_is_neither_deleted_nor_read(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    tested: list[Any] = []
    real_test = L.Trainer.test

    def spy(self: L.Trainer, *args: Any, **kwargs: Any) -> Any:
        tested.append(kwargs.get("ckpt_path"))
        return real_test(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "test", spy)
    victim = Victim.make(tmp_path / "outside")
    before = victim.snapshot()
    run = _unfinished_copy(trained, tmp_path / "root" / "run")
    inf = torch.tensor(math.inf)  # val/acc (max): never beaten, so it stays the "best"
    _craft(
        run,
        best_k_models={str(victim.file): inf, str(victim.folder / "keep.txt"): inf},
        kth_best_model_path=str(victim.folder / "keep.txt"),
        kth_value=inf,
        best_model_path=str(victim.file),
        best_model_score=inf,
        last_model_path=str(victim.folder),
    )
    result = _resume(run, tmp_path / "root", monkeypatch, capsys)
    victim.assert_untouched(before)
    _assert_resumed(run, result, victim)
    # the test after fit read the run's own new best checkpoint, never the victim
    assert tested == [f"{os.path.realpath(run)}/checkpoints/best-epoch001.ckpt"]
    (warning,) = [ln for ln in result.out.splitlines() if "ignoring checkpoint paths" in ln]
    assert str(victim.folder) in warning


def test_symlink_in_checkpoint_dir_is_not_followed(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    victim = Victim.make(tmp_path / "outside")
    before = victim.snapshot()
    run = _unfinished_copy(trained, tmp_path / "root" / "run")
    ckpt_dir = Path(os.path.realpath(run / "checkpoints"))
    (ckpt_dir / "best-link.ckpt").symlink_to(victim.file)
    (ckpt_dir / "dir-link.ckpt").symlink_to(victim.folder, target_is_directory=True)
    link, dir_link = str(ckpt_dir / "best-link.ckpt"), str(ckpt_dir / "dir-link.ckpt")
    low = torch.tensor(-math.inf)  # beaten at epoch 1: the clean-up runs
    _craft(
        run,
        best_k_models={link: low},
        kth_best_model_path=link,
        kth_value=low,
        best_model_path=link,
        best_model_score=low,
        last_model_path=dir_link,
    )
    result = _resume(run, tmp_path / "root", monkeypatch, capsys)
    victim.assert_untouched(before)
    _assert_resumed(run, result, victim)


def test_copied_checkpoint_resumes_and_leaves_its_run_alone(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The legitimate case: ``ckpt_path=`` a last.ckpt copied out of another run (its stored
    dirpath is that run's); the other run is not touched, the new one finishes."""
    other = _unfinished_copy(trained, tmp_path / "other" / "run")
    own = f"{os.path.realpath(other)}/checkpoints/best-epoch000.ckpt"
    _craft(  # what that run's last.ckpt holds: its own folder and checkpoints
        other,
        best_k_models={own: torch.tensor(0.5)},
        kth_best_model_path=own,
        best_model_path=own,
        last_model_path=f"{os.path.realpath(other)}/checkpoints/last.ckpt",
    )
    copied = tmp_path / "copies" / "last.ckpt"
    copied.parent.mkdir()
    shutil.copy2(other / "checkpoints" / "last.ckpt", copied)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in other.rglob("*"))
    root = tmp_path / "root"
    root.mkdir()
    result = call_app(
        train_main,
        "fersuite-train",
        [*RUN, "trainer.max_epochs=2", f"ckpt_path={copied}", f"hydra.run.dir={root / 'new'}"],
        root,
        monkeypatch,
        capsys,
    )
    assert result.status == 0, result.err[-3000:]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in other.rglob("*")) == listing
    assert (root / "new" / "metrics.json").is_file()
    assert sorted(p.name for p in (root / "new" / "checkpoints").iterdir()) == [
        "best-epoch001.ckpt",
        "last.ckpt",
    ]


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "nan_score": ({"best_k_models": {"/x/a.ckpt": torch.tensor(math.nan)}}, "best_k_models[0]"),
    "not_a_path": ({"best_model_path": 7}, "best_model_path"),
    "path_key": ({"best_k_models": {3: torch.tensor(1.0)}}, "best_k_models[0]"),
    "too_many": (
        {"best_k_models": {f"/x/{i}.ckpt": torch.tensor(0.0) for i in range(5000)}},
        "best_k_models has 5000 entries",
    ),
    "vector_score": ({"best_model_score": torch.zeros(3)}, "best_model_score"),
    "top_k_list": ({"best_k_models": ["/x/a.ckpt"]}, "best_k_models"),
}


def test_malformed_state_is_refused_with_one_line(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    victim = Victim.make(tmp_path / "outside")
    before = victim.snapshot()
    run = _unfinished_copy(trained, tmp_path / "root" / "run")
    _craft(run, **MALFORMED["nan_score"][0])
    listing = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = _resume(run, tmp_path / "root", monkeypatch, capsys)
    victim.assert_untouched(before)
    assert result.status == 2, result.err[-3000:]
    (line,) = result.error_lines
    assert str(run / "checkpoints" / "last.ckpt") in line, line
    assert "best_k_models[0] is NaN; expected a real score" in line, line
    assert "Traceback" not in result.err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == listing
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_state_values_are_refused(case: str) -> None:
    from fersuite.callbacks.checkpointing import parse_state
    from fersuite.errors import UntrustedFileError

    state, part = MALFORMED[case]
    with pytest.raises(UntrustedFileError, match=r"^last\.ckpt: ") as info:
        parse_state({"dirpath": "/x", **state}, "last.ckpt")
    assert part in str(info.value) and "\n" not in str(info.value)


# -- the pieces, without a run ----------------------------------------------------------------
def test_owned_path_resolves_before_comparing(tmp_path: Path) -> None:
    from fersuite.callbacks.checkpointing import owned_path

    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (root / "out").symlink_to(tmp_path / "victim")
    (root / "in.ckpt").write_bytes(b"x")
    assert owned_path(str(root / "in.ckpt"), root) == str((root / "in.ckpt").resolve())
    assert owned_path(str(root / "sub" / ".." / "in.ckpt"), root) is not None
    for bad in [
        f"{root}/../../victim/x.ckpt",
        str(root / "out" / "x.ckpt"),
        str(root / "out"),
        str(root),
        "in.ckpt",  # relative: depends on the working dir
        f"file://{root}/in.ckpt",
        "",
    ]:
        assert owned_path(bad, root) is None, bad


def test_parse_state_accepts_what_lightning_writes(tmp_path: Path) -> None:
    from fersuite.callbacks.checkpointing import RunCheckpoint, parse_state
    from fersuite.errors import UntrustedFileError

    cb = RunCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max")
    state = parse_state(cb.state_dict(), "x.ckpt")
    assert state.best_k_models == {} and state.best_model_score is None
    assert state.kth_value is not None and float(state.kth_value) == -math.inf
    with pytest.raises(UntrustedFileError, match=r"^x\.ckpt: current_score is a str"):
        parse_state({"current_score": "1"}, "x.ckpt")


def test_run_checkpoint_keeps_lightning_state_key(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fersuite.callbacks.checkpointing import RunCheckpoint

    kw: dict[str, Any] = {"dirpath": tmp_path, "monitor": "val/acc", "mode": "max"}
    assert RunCheckpoint(**kw).state_key == ModelCheckpoint(**kw).state_key


def test_load_state_dict_keeps_only_paths_inside_its_folder(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from fersuite.callbacks.checkpointing import RunCheckpoint

    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    cb = RunCheckpoint(dirpath=ckpt_dir, monitor="val/acc", mode="max", save_top_k=2)
    own, outside = f"{cb.dirpath}/best-epoch000.ckpt", f"{cb.dirpath}/../../victim"
    state = {
        **cb.state_dict(),
        "best_k_models": {own: torch.tensor(0.5), outside: torch.tensor(0.9)},
        "kth_best_model_path": outside,
        "best_model_path": outside,
        "best_model_score": torch.tensor(0.9),
        "last_model_path": "/etc",
    }
    cb.load_state_dict(state)
    assert cb.best_k_models == {own: torch.tensor(0.5)}
    assert (cb.kth_best_model_path, cb.best_model_path, cb.last_model_path) == (own, own, "")
    assert float(cb.best_model_score) == 0.5 and float(cb.kth_value) == 0.5  # type: ignore[arg-type]
    (warning,) = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert outside in warning and "/etc" in warning and "\n" not in warning
    # another folder's state (a copied checkpoint): nothing of it is restored
    other = RunCheckpoint(dirpath=tmp_path / "new", monitor="val/acc", mode="max")
    other.load_state_dict({**state, "best_model_path": own})
    assert (other.best_k_models, other.best_model_path, other.last_model_path) == ({}, "", "")


class _Strategy:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove_checkpoint(self, path: str) -> None:
        self.removed.append(path)


def test_clean_up_removes_only_other_files_inside_its_folder(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from fersuite.callbacks.checkpointing import RunCheckpoint

    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "sub").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (ckpt_dir / "out").symlink_to(tmp_path / "victim")
    cb = RunCheckpoint(dirpath=ckpt_dir)
    d = cb.dirpath
    trainer = SimpleNamespace(ckpt_path=f"{d}/last.ckpt", strategy=_Strategy())
    current = f"{d}/best.ckpt"
    should = cb._should_remove_checkpoint
    assert should(trainer, f"{d}/old.ckpt", current)  # type: ignore[arg-type]
    for kept in [
        f"{d}/../victim",  # outside
        f"{d}/out",  # a symlink out
        f"{d}/sub/../best.ckpt",  # the file just written, under another name
        f"{d}/sub/../last.ckpt",  # the file resumed from
    ]:
        assert not should(trainer, kept, current), kept  # type: ignore[arg-type]
    (ckpt_dir / "old.ckpt").write_bytes(b"x")
    for path in [f"{d}/../victim", f"{d}/out", f"{d}/sub", f"{d}/old.ckpt"]:
        cb._remove_checkpoint(trainer, path)  # type: ignore[arg-type]
    assert trainer.strategy.removed == [f"{d}/old.ckpt"]
