"""Evaluating a trained model, on its own dataset or on another one, by class name.

``fersuite-eval ckpt_path=<file> data=<name> …`` (:func:`evaluate`; its alias
``fersuite-train train=false ckpt_path=<file> …``) tests a checkpoint (``.ckpt``) or an
exported model (``.onnx``, ExecuTorch ``.pte``, TorchScript ``.pt``, each with the
``model.json`` sidecar fersuite-export writes beside it) and writes ``metrics.json`` with the
``test/*`` keys of a training run, so an fp32 and an int8 export compare key by key. The
model (architecture, input size, channels) and the normalisation come from the model card (the
checkpoint's plain-data metadata or the sidecar), so the data pipeline is built for the model
that was trained, whatever ``model=`` says. An exported model runs in its own runtime
(:func:`fersuite.inference.load_predictor`) on the CPU, inside :class:`ExportedNet`, through
the same LightningModule and metrics as a checkpoint. When the
dataset's classes differ from the checkpoint's (a FER2013 model on RAF-DB, an AffectNet-8 model
on FER2013), :class:`ClassRemap` reorders the logits into the dataset's class order through the
central label vocabulary (:mod:`fersuite.labels`); classes the dataset lacks are dropped, which
renormalises the softmax over the remaining ones. A dataset class the model never learnt is an
error naming it.

The cross-dataset matrix (``ckpt_paths``/``datasets``, :func:`evaluate_matrix`) tests each file
on each test set, one evaluation per cell (:func:`evaluate_on_datasets`). A training run with
``datasets=[...]`` runs the same cells for the checkpoint its test loaded
(:func:`training_test_sets` before it trains, :func:`cross_evaluate_run` after its test).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from fersuite.card import ModelCard
from fersuite.checkpoint import (
    META_KEY,
    checkpoint_card,
    load_model_from_checkpoint,
    read_checkpoint,
    trained_model_card,
)
from fersuite.config import CONFIG_DIR, current_overrides, override_key, require_ckpt_path
from fersuite.data.record import recorded_data_config
from fersuite.deploy.base import exported_format
from fersuite.errors import ConfigError, UserError, one_line
from fersuite.inference import load_predictor, read_sidecar
from fersuite.labels import same_classes
from fersuite.models.heads import ClassRemap
from fersuite.modules.affect_module import build_affect_module
from fersuite.reporting.cross_dataset import (
    METRICS,
    CrossCell,
    matrix,
    save_cross_png,
    short_labels,
    write_cross_csv,
)
from fersuite.runs.setup import finish_run, make_trainer, prepare_run
from fersuite.types import AffectOutput
from fersuite.utils.run_info import write_metrics

__all__ = [
    "EvaluatedModel",
    "ExportedNet",
    "adopt_checkpoint_data",
    "adopt_checkpoint_model",
    "check_datasets",
    "cross_evaluate_run",
    "evaluate",
    "evaluate_matrix",
    "evaluate_on_datasets",
    "evaluated_model",
    "net_for_dataset",
    "training_test_sets",
    "wants_checkpoint_eval",
    "wants_matrix",
    "write_matrix",
]

log = logging.getLogger("fersuite.eval")


def wants_checkpoint_eval(cfg: DictConfig) -> bool:
    """``train=false`` with a checkpoint file (not ``last``/resume): evaluate that file.
    ``train=false`` without a checkpoint is refused: it would test an untrained model."""
    ckpt = cfg.get("ckpt_path")
    if not cfg.get("train", True) and not ckpt:
        raise ConfigError(
            "train=false without ckpt_path would test an untrained model; to evaluate a "
            "checkpoint: fersuite-eval ckpt_path=<file.ckpt | model.onnx | model.pte | model.pt>"
        )
    return not cfg.get("train", True) and bool(ckpt) and str(ckpt) != "last"


@dataclass(frozen=True)
class EvaluatedModel:
    """The file ``ckpt_path`` names: its model card and, for an exported model, the sidecar's
    facts (``format``: checkpoint | onnx | executorch | torchscript; ``quantize``: null or
    int8 / fp16 / dynamic; ``max_batch``: the largest batch the file accepts)."""

    path: Path
    card: ModelCard
    format: str = "checkpoint"
    quantize: str | None = None
    max_batch: int | None = None
    #: the checkpoint's stored training-data record, as stored (parsed before any use)
    training_data: Any = None

    @property
    def exported(self) -> bool:
        return self.format != "checkpoint"

    def facts(self) -> dict[str, Any]:
        """What ``run_info.json`` records as ``evaluated_model``."""
        return {"file": str(self.path), "format": self.format, "quantize": self.quantize}


def _sidecar_facts(path: Path) -> tuple[str | None, int]:
    """``quantize`` and the largest batch (``input.batch[1]``; 1 when absent) of the sidecar
    beside an exported model (already read as a model card)."""
    sidecar = path.with_suffix(".json")
    raw = json.loads(sidecar.read_text())
    quantize = raw.get("quantize")
    if quantize is not None and not isinstance(quantize, str):
        raise ConfigError(f"{sidecar}: quantize={quantize!r}; expected null or a name (int8)")
    batch = (raw.get("input") or {}).get("batch")
    if batch is None:
        return quantize, 1
    ok = isinstance(batch, list) and len(batch) == 2
    ok = ok and all(isinstance(b, int) and not isinstance(b, bool) for b in batch)
    if not ok or not 1 <= batch[0] <= batch[1]:
        raise ConfigError(
            f"{sidecar}: input.batch={batch!r}; expected [min, max] batch sizes, 1 <= min <= max"
        )
    return quantize, int(batch[1])


def evaluated_model(path: str | Path) -> EvaluatedModel:
    """The model card of a ``.ckpt`` (its metadata) or of an exported model (its sidecar)."""

    p = Path(path)
    fmt = exported_format(p)
    if fmt is None:
        if not p.is_file():
            raise ConfigError(f"ckpt_path={p}: no such checkpoint file (expected a .ckpt)")
        ckpt = read_checkpoint(p)
        meta = ckpt.get(META_KEY)
        record = meta.get("training_data") if isinstance(meta, dict) else None
        return EvaluatedModel(p, checkpoint_card(ckpt, str(p)), training_data=record)
    if not p.is_file():
        raise ConfigError(
            f"ckpt_path={p}: no such exported model file (expected a {p.suffix} written by "
            "fersuite-export, with its model.json)"
        )
    card = read_sidecar(p)  # a missing or bad sidecar: one line naming it
    quantize, max_batch = _sidecar_facts(p)
    return EvaluatedModel(p, card, fmt, quantize, max_batch)


def adopt_checkpoint_model(cfg: DictConfig, overrides: list[str] | None = None) -> EvaluatedModel:
    """The one config change of an evaluation, before it starts: ``cfg.model`` becomes the
    model card's (so ``run_info.json`` records what was evaluated), the data is the one the
    checkpoint was trained on unless ``data=`` is given (:func:`adopt_checkpoint_data`), and
    the data's input (``data.image_size``, ``in_chans``, ``mean``, ``std``) is the card's. The
    card comes from the checkpoint, or from the sidecar of an exported model; an exported
    model runs on the CPU, so the trainer is set to it. A ``model=`` / ``model.*`` override
    is refused: the checkpoint defines the model. ``overrides``: the command line's (None:
    the running Hydra job's)."""
    ckpt_path = str(cfg.ckpt_path)
    overrides = (current_overrides() or []) if overrides is None else overrides
    _refuse_model_overrides(overrides, f"ckpt_path={ckpt_path}")
    model = evaluated_model(ckpt_path)
    meta = model.card
    # Checked before anything uses it: the registry's factory and plain values only.
    model_cfg = trained_model_card(meta.model_cfg, str(model.path))
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model_cfg)
    if cfg.get("data") is not None:
        described = adopt_checkpoint_data(cfg, model, overrides)
        print(f"evaluating {model.path} on {described}", flush=True)
    with open_dict(cfg):
        if model.exported and cfg.get("trainer") is not None:
            log.info("%s runs on the CPU: trainer.accelerator=cpu, devices=1", model.format)
            cfg.trainer.accelerator = "cpu"
            cfg.trainer.devices = 1
            if "strategy" in cfg.trainer:
                cfg.trainer.strategy = "auto"
            if "num_nodes" in cfg.trainer:
                cfg.trainer.num_nodes = 1
    return model


def _refuse_model_overrides(overrides: list[str], what: str) -> None:
    given = [o for o in overrides if override_key(o).split(".", 1)[0] == "model"]
    if given:
        raise ConfigError(
            f"{' '.join(given)} given with {what}: the checkpoint defines the "
            "model (its model card); drop the model override"
        )


def adopt_checkpoint_data(cfg: DictConfig, model: EvaluatedModel, overrides: list[str]) -> str:
    """Set ``cfg.data`` to what the evaluation reads; return it in words.

    ``data=<name>`` on the command line: that dataset. Otherwise the checkpoint's own training
    data (its stored record, parsed and rebuilt from a shipped config:
    :func:`fersuite.data.record.recorded_data_config`) with the command line's ``data.*``
    overrides applied on top; a checkpoint without a record (older, or an exported model)
    keeps the default dataset, and says so. The input keys are the card's: an override that
    contradicts the card is refused."""

    card = model.card
    want = {
        "image_size": int(card.input_size),
        "in_chans": int(card.in_chans),
        "mean": list(card.mean),
        "std": list(card.std),
    }
    parsed = OverridesParser.create().parse_overrides(
        [o for o in overrides if override_key(o).startswith("data.")]
    )
    data_overrides = {str(o.key_or_group)[len("data.") :]: o for o in parsed}
    for key, value in want.items():
        given = data_overrides.get(key)
        if given is None or given.is_delete():
            continue
        mine = given.value()
        same = list(mine) == list(value) if isinstance(value, list) else mine == value
        if isinstance(value, list) and isinstance(mine, list) and len(mine) == 1:
            same = all(float(mine[0]) == float(v) for v in value)
        if not same:
            raise ConfigError(
                f"data.{key}={mine} contradicts {model.path}: its model card says {value} "
                "(the card decides the input; drop the override)"
            )
    chosen = next((o for o in overrides if override_key(o) == "data"), None)
    if chosen is not None:
        described = f"{chosen} (command line)"
    else:
        recorded = recorded_data_config(model.training_data, str(model.path))
        if recorded is None:
            group = str(cfg.data.get("_target_", "?")).rsplit(".", 1)[-1]
            what = "an exported model" if model.exported else "this checkpoint"
            described = f"the default data config ({group}): {what} records no training data"
        else:
            group, node, record = recorded
            with open_dict(node):
                for key, o in data_overrides.items():
                    if o.is_delete():
                        node.pop(key, None)
                    elif key not in want:
                        OmegaConf.update(node, key, o.value(), merge=True, force_add=True)
            with open_dict(cfg):
                cfg.data = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
            values = ", ".join(
                f"{k}={v}"
                for k, v in record.values.items()
                if k in cfg.data and k not in want and not k.startswith("_")
            )
            described = f"its training data: data={group} ({values})"
    with open_dict(cfg):
        for key, value in want.items():
            if key in cfg.data:
                cfg.data[key] = value
    return described


class ExportedNet(nn.Module):
    """An exported model's runner (``runner(x) -> AffectOutput``; ONNX Runtime, ExecuTorch,
    TorchScript) as a network without parameters, for the evaluation's LightningModule: the
    batch goes to the CPU in chunks of at most ``max_batch`` images (what the file accepts)."""

    def __init__(
        self, runner: Callable[[torch.Tensor], Any], num_classes: int, max_batch: int = 1
    ) -> None:
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}; expected >= 1")
        self.runner = runner
        self.num_classes = int(num_classes)
        self.max_batch = int(max_batch)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        outs = [self.runner(c.contiguous()) for c in x.detach().float().cpu().split(self.max_batch)]

        def cat(name: str) -> torch.Tensor:
            parts = [torch.as_tensor(getattr(o, name)).float() for o in outs]
            return torch.cat(parts).to(x.device)

        n = x.shape[0]
        return AffectOutput(
            cat("expression").reshape(n, -1), cat("valence").reshape(n), cat("arousal").reshape(n)
        )


def load_evaluated_net(model: EvaluatedModel) -> nn.Module:
    """The network of a checkpoint, or an exported model's runner as :class:`ExportedNet`."""
    if not model.exported:
        net, _ = load_model_from_checkpoint(model.path)
        return net

    predictor = load_predictor(model.path)
    n = len(model.card.class_names)
    return ExportedNet(predictor.run, n, model.max_batch or 1).eval()


def net_for_dataset(net: nn.Module, card: ModelCard, datamodule: Any) -> nn.Module:
    """``net`` with its logits in the dataset's class order (mapped by name when they differ)."""
    if same_classes(card.class_names, datamodule.class_names):
        return net
    log.info(
        "evaluating a model of classes [%s] on [%s] (mapped by name)",
        ", ".join(card.class_names),
        ", ".join(datamodule.class_names),
    )
    return ClassRemap(net, card.class_names, datamodule.class_names)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint or exported model ``cfg.ckpt_path`` on ``cfg.data``; return (and
    write to ``metrics.json``) its metrics, keyed as a training run's ``test/*``. With
    ``ckpt_paths`` or ``datasets`` set: the cross-dataset matrix (:func:`evaluate_matrix`)."""

    if wants_matrix(cfg):
        return evaluate_matrix(cfg)
    require_ckpt_path(cfg, "fersuite-eval")
    model = adopt_checkpoint_model(cfg)
    return _test_model(cfg, model)


class _CountTested(L.Callback):
    """The number of test images the run went through (``n`` of a matrix cell)."""

    def __init__(self) -> None:
        self.n = 0

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.n += int(batch["expression"].shape[0])


def _test_model(
    cfg: DictConfig,
    model: EvaluatedModel,
    counter: _CountTested | None = None,
    wandb_summary: bool = True,
) -> dict[str, float]:
    """One evaluation: ``model`` (adopted into ``cfg``) tested on ``cfg.data`` in its run dir
    (``wandb_summary``: copy its metrics into the active W&B run's summary)."""
    # An exported model is someone else's file: read (or refused, one line) before the run
    # is prepared (its dir's stale files removed, the seed set).
    exported = load_evaluated_net(model) if model.exported else None
    out_dir, _ = prepare_run(cfg, resume=False)
    net = exported if exported is not None else load_evaluated_net(model)
    datamodule = instantiate(cfg.data)
    net = net_for_dataset(net, model.card, datamodule)
    module = build_affect_module(cfg, datamodule, net=net, net_has_va=model.card.has_va)
    extra = {"evaluated": str(model.path), "evaluated_model": model.facts()}
    trainer, callbacks = make_trainer(cfg, out_dir, extra=extra)
    if counter is not None:
        trainer.callbacks.append(counter)
    trainer.test(module, datamodule=datamodule, weights_only=True)
    values: dict[str, Any] = dict(trainer.callback_metrics)
    label = "checkpoint" if not model.exported else f"{model.format} model"
    return finish_run(
        trainer, callbacks, values, out_dir, {label: str(model.path)}, wandb_summary=wandb_summary
    )


def wants_matrix(cfg: DictConfig) -> bool:
    """``ckpt_paths`` or ``datasets`` given: the cross-dataset matrix of ``fersuite-eval``."""
    return bool(cfg.get("ckpt_paths")) or bool(cfg.get("datasets"))


def _names(cfg: DictConfig, key: str) -> list[str]:
    value = cfg.get(key)
    if value is None:
        return []
    items = list(value) if OmegaConf.is_list(value) else None
    if items is None or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{key}={value}; expected a list, e.g. {key}=[a,b]")
    if len(set(items)) != len(items):
        raise ConfigError(f"{key}={value}: a name is given twice")
    return items


def shipped_datasets(config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """The ``data=`` options of the shipped config tree (``conf/data/*.yaml``)."""
    return sorted(p.stem for p in Path(config_dir, "data").glob("*.yaml") if p.stem[0] != "_")


def _compose(config_name: str, overrides: list[str], what: str) -> DictConfig:
    """The shipped config ``config_name`` with ``overrides``, as Hydra composes it; a failure
    is one line starting with ``what``."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=overrides)
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, OSError) as exc:
        raise ConfigError(f"{what}: {one_line(exc)}") from exc


def _compose_test_set(name: str, overrides: list[str], config_name: str = "eval") -> DictConfig:
    """The trusted ``data=<name>`` config of ``config_name`` composed with ``overrides`` (the
    matrix: the command line's ``data.*`` ones), as Hydra composes it (interpolations left for
    the evaluation's config to resolve)."""
    given = [o for o in overrides if override_key(o) != "data"]
    what = f"datasets: {name}" + (f" with {' '.join(given)}" if given else "")
    composed = _compose(config_name, [*given, f"data={name}"], what)
    return OmegaConf.create(OmegaConf.to_container(composed.data, resolve=False))


def check_datasets(cfg: DictConfig, key: str = "datasets") -> list[str]:
    """The test sets ``cfg.<key>`` names, each a shipped ``conf/data`` name (else one line
    listing the names); [] when it is not set."""
    datasets = _names(cfg, key)
    shipped = shipped_datasets()
    unknown = [d for d in datasets if d not in shipped]
    if unknown:
        raise ConfigError(
            f"{key}: {', '.join(unknown)} is not a data config (names: {', '.join(shipped)})"
        )
    return datasets


def _matrix_inputs(cfg: DictConfig, overrides: list[str]) -> tuple[list[str], list[str]]:
    """The checkpoints and test sets of a matrix, checked (one line naming the key)."""
    ckpts = _names(cfg, "ckpt_paths")
    single = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.get("ckpt_path")
    if ckpts and single:
        raise ConfigError(
            f"ckpt_path={single} and ckpt_paths given: name every checkpoint in ckpt_paths"
        )
    if not ckpts:
        if not single:
            raise ConfigError(
                "ckpt_paths is not set: fersuite-eval ckpt_paths=[a.ckpt,b.ckpt] datasets=[...]"
            )
        ckpts = [str(single)]
    datasets = check_datasets(cfg)
    if not datasets:
        raise ConfigError(
            "datasets is not set: the matrix tests each checkpoint on each of "
            f"datasets=[<name>,...] (names: {', '.join(shipped_datasets())})"
        )
    chosen = [o for o in overrides if override_key(o) == "data"]
    if chosen:
        raise ConfigError(
            f"{chosen[0]} given with datasets: name the test sets in datasets=[...] "
            "(data.* overrides apply to each)"
        )
    _refuse_model_overrides(overrides, "ckpt_paths")
    return ckpts, datasets


def evaluate_matrix(cfg: DictConfig) -> dict[str, float]:
    """The cross-dataset matrix: every checkpoint of ``ckpt_paths`` (or the one ``ckpt_path``)
    tested on every test set of ``datasets`` (``conf/data`` names; the command line's
    ``data.*`` overrides apply to each). Each cell is one evaluation as :func:`evaluate` runs it,
    in ``<run dir>/cells/<row>-<dataset>/`` (its ``metrics.json`` and reports). A cell that
    cannot be tested (a test-set class the model never learnt, a refused checkpoint) keeps its
    one-line reason in the ``note`` column and the matrix goes on; when no cell could be tested
    the run is refused. Writes ``cross_dataset.csv`` and ``cross_dataset.png``
    (:mod:`fersuite.reporting.cross_dataset`) and returns ``cross/<row>/<dataset>/acc``."""

    overrides = current_overrides() or []
    ckpts, datasets = _matrix_inputs(cfg, overrides)
    data_overrides = [o for o in overrides if override_key(o).startswith("data.")]
    nodes = {name: _compose_test_set(name, data_overrides) for name in datasets}
    out_dir = Path(cfg.paths.get("output_dir") or os.getcwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = [o for o in overrides if override_key(o) not in ("ckpt_paths", "datasets")]
    cells: list[CrossCell] = []
    for row, ckpt in enumerate(ckpts):
        cells += evaluate_on_datasets(cfg, ckpt, nodes, out_dir / "cells", f"{row}-", plain)
    write_matrix(out_dir, cells)
    if all(c.get("note") for c in cells):
        raise ConfigError(f"no cell of the matrix could be tested; the first: {cells[0]['note']}")
    figures = {
        f"cross/{ckpts.index(c['checkpoint'])}/{c['dataset']}/acc": float(c["acc"])
        for c in cells
        if c.get("acc") is not None
    }
    # the run's own record (a sweep report reads a job with metrics.json as finished)
    return write_metrics(out_dir / "metrics.json", figures)


def evaluate_on_datasets(
    cfg: DictConfig,
    ckpt: str | Path,
    test_sets: Mapping[str, DictConfig],
    cells_dir: Path,
    prefix: str = "",
    overrides: Sequence[str] = (),
    wandb_summary: bool = True,
) -> list[CrossCell]:
    """One checkpoint (or exported model) on each test set of ``test_sets`` (name -> data
    node): a row of the matrix. Each cell is one evaluation of a copy of ``cfg`` (an
    evaluation's config) in ``cells_dir/<prefix><name>/``; returns its line of
    ``cross_dataset.csv`` (a refused cell: its one-line reason in ``note``). ``overrides``: the
    command line's, checked as :func:`adopt_checkpoint_model` checks them."""
    cells: list[CrossCell] = []
    for name, node in test_sets.items():
        cell = copy.deepcopy(cfg)
        with open_dict(cell):
            cell.ckpt_path = str(ckpt)
            cell.ckpt_paths = None
            cell.datasets = None
            cell.data = copy.deepcopy(node)
            cell.paths.output_dir = str(cells_dir / f"{prefix}{name}")
        found: CrossCell = {"checkpoint": str(ckpt), "dataset": name}
        try:
            model = adopt_checkpoint_model(cell, [*overrides, f"data={name}"])
            counter = _CountTested()
            metrics = _test_model(cell, model, counter, wandb_summary=wandb_summary)
        except UserError as exc:
            found["note"] = f"refused: {one_line(exc)}"
            print(f"{ckpt} on data={name}: {found['note']}", flush=True)
        else:
            found["n"] = counter.n
            found.update({k: metrics.get(f"test/{k}") for k in METRICS})
        cells.append(found)
    return cells


def write_matrix(out_dir: Path, cells: Sequence[CrossCell]) -> None:
    """``cross_dataset.csv`` and ``cross_dataset.png`` of ``cells`` in ``out_dir``."""
    write_cross_csv(out_dir / "cross_dataset.csv", cells)
    rows, cols, values = matrix(cells)
    save_cross_png(out_dir / "cross_dataset.png", short_labels(rows), cols, values)
    print(f"cross-dataset matrix: {out_dir / 'cross_dataset.csv'}", flush=True)


# --------------------------------------------------------------------------------------------
# a training run's own cross-dataset test (``fersuite-train datasets=[...]``)
# --------------------------------------------------------------------------------------------


def training_test_sets(cfg: DictConfig) -> dict[str, DictConfig]:
    """The test sets of a training run's ``datasets`` (name -> data node), checked before it
    trains: each is the data node the run would have had with ``data=<name>`` (the train
    config composed with this job's overrides, ``data=`` replaced), so the run's own data is
    its test set as tested, and every job of a sweep gets the same test set for a name. A
    name that is not a data config, or an override the test set cannot take, is one line."""
    datasets = check_datasets(cfg)
    overrides = [
        o for o in current_overrides() or [] if override_key(o) not in ("data", "datasets")
    ]
    return {name: _compose_test_set(name, overrides, "train") for name in datasets}


def _cross_eval_config(cfg: DictConfig) -> DictConfig:
    """The evaluation config of a training run's cross-dataset cells: ``conf/eval.yaml`` with
    the run's seed, tta, paths and trainer (on one device: rank 0 tests alone), the CSV
    logger only (W&B holds the training run) and the run's progress bar setting."""
    base = _compose("eval", [], "datasets")
    with open_dict(base):
        base.seed = cfg.get("seed")
        base.tta = str(cfg.get("tta") or "none")
        base.paths = OmegaConf.create(OmegaConf.to_container(cfg.paths, resolve=True))
        trainer = OmegaConf.create(OmegaConf.to_container(cfg.trainer, resolve=True))
        trainer.default_root_dir = "${paths.output_dir}"
        trainer.devices = 1
        for key, value in (("num_nodes", 1), ("strategy", "auto"), ("sync_batchnorm", False)):
            if key in trainer:
                trainer[key] = value
        base.trainer = trainer
        if not cfg.get("logger"):
            base.logger = None
        if "callbacks" in cfg and "progress_bar" in (cfg.callbacks or {}):
            base.callbacks.progress_bar = copy.deepcopy(cfg.callbacks.progress_bar)
    return base


def cross_evaluate_run(
    cfg: DictConfig, ckpt: str | Path, test_sets: Mapping[str, DictConfig], out_dir: Path
) -> dict[str, float]:
    """A training run's checkpoint ``ckpt`` (the one its test used) on each of ``test_sets``
    (:func:`training_test_sets`), each cell in ``out_dir/cells/<dataset>/``; writes
    ``cross_dataset.csv`` and ``cross_dataset.png`` in ``out_dir`` and returns
    ``cross/<dataset>/<metric>`` (``acc``, ``balanced_acc``, ``f1_macro`` and the VA CCCs
    where the test set has valence/arousal). A refused cell has its reason in the CSV, no
    figures; the run goes on."""
    base = _cross_eval_config(cfg)
    cells = evaluate_on_datasets(
        base, ckpt, test_sets, out_dir / "cells", overrides=(), wandb_summary=False
    )
    write_matrix(out_dir, cells)
    return {
        f"cross/{c['dataset']}/{k}": float(c[k])
        for c in cells
        for k in METRICS
        if c.get(k) is not None
    }
