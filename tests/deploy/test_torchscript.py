"""A TorchScript ``.pt`` from someone else runs only the operators of a model: one that writes or
maps a file (``torch.save``, ``torch.from_file``), in ``forward`` or in ``__setstate__`` (which
``torch.jit.load`` runs), is refused before any of its code runs, with one line
(:class:`~fersuite.errors.UntrustedFileError`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fersuite.deploy.torchscript import TorchScriptModel
from fersuite.errors import UntrustedFileError


class _SavesInForward(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.save(x, self.target)
        return x, x, x


class _MapsFileOnLoad(torch.nn.Module):
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
        torch.from_file(self.target, True, 4).fill_(7.0)  # writes through a shared mapping

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x, x


class _Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y[:, 0], torch.tanh(y[:, 1])


def test_a_model_that_writes_a_file_when_called_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.pt"
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_SavesInForward(str(target))), str(path))
    with pytest.raises(UntrustedFileError, match=r"model\.pt.*aten::save"):
        TorchScriptModel(path)
    assert not target.exists()


def test_a_model_that_maps_a_file_while_loading_is_refused_before_loading(tmp_path: Path) -> None:
    target = tmp_path / "victim.bin"
    target.write_bytes(bytes(16))
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_MapsFileOnLoad(str(target))), str(path))
    assert target.read_bytes() == bytes(16)  # saving did not run __setstate__
    with pytest.raises(UntrustedFileError, match=r"model\.pt.*__setstate__"):
        TorchScriptModel(path)
    assert target.read_bytes() == bytes(16)


def test_a_plain_model_loads_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    net = _Plain().eval()
    torch.jit.save(torch.jit.trace(net, (torch.zeros(2, 4),)), str(path))
    x = torch.randn(5, 4)
    out = TorchScriptModel(path)(x)
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(out.expression, ref[0]) and torch.allclose(out.arousal, ref[2])


def test_not_a_torchscript_archive_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(UntrustedFileError, match=r"model\.pt"):
        TorchScriptModel(path)
