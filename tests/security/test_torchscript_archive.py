"""A TorchScript ``.pt`` from someone else is read as data before ``torch.jit.load`` runs any
of it (:mod:`fersuite.deploy.torchscript`): a ``__setstate__`` however it is laid out (a line
continuation after ``def``, tabs, comments), an argument default that writes a file (TorchScript
computes defaults while loading), a pickle that names a foreign global, unparsable code or an
unbounded archive is refused with one line naming the file and the entry
(:class:`~fersuite.errors.UntrustedFileError`, exit status 2 from ``fersuite-predict``), and a
file outside the run stays as it was. The control: a plain traced model loads and runs.

Each crafted archive is a real ``torch.jit.save`` output whose code entry is rewritten inside
the zip; :func:`test_the_crafted_archives_do_run_their_payload_when_loaded_unchecked` shows the
payloads are live.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fersuite.cli.predict import main as predict_main
from fersuite.deploy import torchscript
from fersuite.deploy.torchscript import TorchScriptModel
from fersuite.errors import UntrustedFileError
from tests.security.apps import Victim

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


class Payload(torch.nn.Module):
    """Overwrites ``target`` from ``__setstate__``, which ``torch.jit.load`` runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), self.target)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x, x


class Defaulted(torch.nn.Module):
    """A plain module with an argument default, rewritten below into one that writes a file."""

    def forward(
        self, x: torch.Tensor, k: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x, x


class Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y[:, 0], torch.tanh(y[:, 1])


def rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> None:
    """Copy the zip ``src`` to ``dst`` with each entry's bytes passed through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))


def edit_code(old: str, new: str) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(".py"):
            return data
        text = data.decode()
        assert old in text, text
        return text.replace(old, new).encode()

    return edit


#: Layouts of ``def __setstate__(`` that TorchScript's parser accepts (a decorator it does not).
HIDDEN = {
    "line-continuation": "def \\\n    __setstate__(",
    "continuation-no-indent": "def \\\n__setstate__(",
    "tab": "def\t__setstate__(",
    "spaces-and-tab": "def  \t \\\n\t\t__setstate__  (",
    "comment": "def \\\n  __setstate__(  # def load(self):\n    ",
}


def crafted_setstate(tmp: Path, target: Path, layout: str) -> Path:
    tmp.mkdir(exist_ok=True)
    plain = tmp / "scripted.pt"
    torch.jit.save(torch.jit.script(Payload(str(target))), str(plain))
    model = tmp / "model.pt"
    rewrite(plain, model, edit_code("def __setstate__(", layout))
    plain.unlink()
    return model


def crafted_default(tmp: Path, target: Path) -> Path:
    plain = tmp / "scripted.pt"
    torch.jit.save(torch.jit.script(Defaulted()), str(plain))
    model = tmp / "model.pt"
    payload = f'k: int=torch.len(torch.save(torch.zeros([1]), "{target}"))'
    rewrite(plain, model, edit_code("k: int=3", payload))
    plain.unlink()
    return model


@pytest.fixture
def victim(tmp_path_factory: pytest.TempPathFactory) -> Victim:
    return Victim.make(tmp_path_factory.mktemp("outside"))


def assert_refused(model: Path, victim: Victim, *parts: str) -> str:
    before = victim.snapshot()
    with pytest.raises(UntrustedFileError) as info:
        TorchScriptModel(model)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{model}: refused")
    for part in parts:
        assert part in message, message
    victim.assert_untouched(before)
    return message


def test_the_crafted_archives_do_run_their_payload_when_loaded_unchecked(
    tmp_path: Path, victim: Victim
) -> None:
    """The control for the refusals below: torch.jit.load alone overwrites the target."""
    decoy = tmp_path / "decoy.bin"
    crafted = {k: crafted_setstate(tmp_path / k, decoy, v) for k, v in HIDDEN.items()}
    crafted["default"] = crafted_default(tmp_path, decoy)
    for name, model in crafted.items():
        decoy.write_bytes(b"decoy")
        torch.jit.load(str(model))
        assert decoy.read_bytes() != b"decoy", name


@pytest.mark.parametrize("layout", list(HIDDEN), ids=list(HIDDEN))
def test_a_setstate_hidden_by_its_layout_is_refused_before_loading(
    tmp_path: Path, victim: Victim, layout: str
) -> None:
    model = crafted_setstate(tmp_path, victim.file, HIDDEN[layout])
    assert_refused(model, victim, "/code/__torch__/", "__setstate__")


def test_an_argument_default_that_writes_a_file_is_refused_before_loading(
    tmp_path: Path, victim: Victim
) -> None:
    model = crafted_default(tmp_path, victim.file)
    assert_refused(model, victim, "/code/__torch__/", "'save'", "aten::save")


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("return (x, x, x)", 'getattr(x, "save")("VICTIM")\n    return (x, x, x)', "'save'"),
        ("return (x, x, x)", "ops.profiler._record_function_enter(\"a\")\n    return x", "ops"),
        ("return (x, x, x)", "torch.ops.aten.relu(x)\n    return x", "ops"),
        ("k: int=3", "k: int=torch.len(torch.ones([1 << 40]))", "computed while loading"),
        ("k: int=3", "k: int=(3\n", "does not parse"),
        ("return (x, x, x)", 'return """(x, x, x)"""', "string literal"),
        ("k: int=3", "k: __torch__.torch.classes.quantized.LinearPackedParamsBase", "classes"),
        ("return (x, x, x)", "return (x, x, x)  # caf\u00e9", "ASCII"),
    ],
    ids=["getattr-string", "foreign-ops", "torch-ops", "computed-default", "unparsable",
         "triple-quoted", "custom-class", "non-ascii"],
)  # fmt: skip
def test_code_outside_a_model_is_refused_before_loading(
    tmp_path: Path, victim: Victim, old: str, new: str, reason: str
) -> None:
    plain = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Defaulted()), str(plain))
    model = tmp_path / "model.pt"
    rewrite(plain, model, edit_code(old, new.replace("VICTIM", str(victim.file))))
    assert_refused(model, victim, "/code/__torch__/", reason)


def traced(tmp: Path) -> Path:
    path = tmp / "traced.pt"
    torch.jit.save(torch.jit.trace(Plain().eval(), (torch.zeros(2, 4),)), str(path))
    return path


def test_a_pickle_naming_a_foreign_global_is_refused(tmp_path: Path, victim: Victim) -> None:
    model = tmp_path / "model.pt"

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/data.pkl"):
            assert b"collections\nOrderedDict\n" in data
            return data.replace(b"collections\nOrderedDict\n", b"posix\nsystem\n")
        return data

    rewrite(traced(tmp_path), model, edit)
    assert_refused(model, victim, "/data.pkl'", "'posix.system'")


def test_entries_torch_jit_save_never_writes_are_refused(tmp_path: Path, victim: Victim) -> None:
    src = traced(tmp_path)
    prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    for n, extra in enumerate([f"{prefix}/model.json", f"{prefix}/DATA.PKL", "other/data.pkl"]):
        model = tmp_path / f"model{n}.pt"
        rewrite(src, model, lambda name, data: data)
        with zipfile.ZipFile(model, "a") as z:
            z.writestr(extra, b"{}")
        assert_refused(model, victim, repr(extra))


def test_archives_over_the_bounds_are_refused_before_reading(
    tmp_path: Path, victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = traced(tmp_path)
    TorchScriptModel(model)  # within the default bounds
    monkeypatch.setattr(torchscript, "MAX_CODE_BYTES", 100)
    assert_refused(model, victim, "code files over 100 bytes")
    monkeypatch.setattr(torchscript, "MAX_ENTRIES", 3)
    assert_refused(model, victim, "at most 3 expected")


def test_a_plain_traced_model_loads_and_runs(tmp_path: Path) -> None:
    net = Plain().eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(net, (torch.zeros(2, 4),)), str(path))
    x = torch.randn(5, 4)
    out = TorchScriptModel(path)(x)
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(out.expression, ref[0]) and torch.allclose(out.arousal, ref[2])


def test_fersuite_predict_refuses_the_crafted_archive_with_one_line(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    victim: Victim,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The hidden ``__setstate__`` beside a genuine ``model.json``: status 2, one line naming
    the file and the entry, the file outside untouched; the genuine export still predicts."""
    from PIL import Image

    from fersuite.data.synthetic import render_faces
    from fersuite.deploy.exporter import ExportSettings, export_checkpoint
    from tests.export.helpers import TINY_CNN, make_checkpoint

    real = tmp_path_factory.mktemp("real")
    ckpt, _ = make_checkpoint(real / "m.ckpt", TINY_CNN, seed=3)
    settings = ExportSettings(format="torchscript", latency_runs=0, verify_faces=1)  # type: ignore[call-arg]
    export_checkpoint(ckpt, settings, real / "ts")  # reloads its own .pt through the checks
    images = real / "images"
    images.mkdir()
    Image.fromarray(render_faces(1, size=64, seed=1).images[0]).save(images / "face.png")
    args = [f"inputs={images}", "output=null"]
    assert predict_main([f"ckpt_path={real / 'ts' / 'model.pt'}", *args]) == 0

    shared = tmp_path / "shared"
    shared.mkdir()
    model = crafted_setstate(shared, victim.file, HIDDEN["line-continuation"])
    (shared / "model.json").write_bytes((real / "ts" / "model.json").read_bytes())
    before = victim.snapshot()
    capsys.readouterr()
    assert predict_main([f"ckpt_path={model}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fersuite-predict: error: "), err
    assert str(model) in err and "/code/__torch__/" in err and "__setstate__" in err
    victim.assert_untouched(before)
