"""fersuite-profile: record schema, hand-computed MACs through the app, published figures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention

from fersuite.config import CONFIG_DIR
from fersuite.errors import ConfigError
from fersuite.reporting.profiles import ProfileSettings, profile_config, profile_model
from fersuite.types import AffectOutput, InputSpec
from tests.conftest import run_env

FAST = [
    "profile.latency_runs=3",
    "profile.latency_warmup=1",
    "profile.batch_size=2",
    "profile.throughput_runs=1",
    "profile.throughput_warmup=0",
]
CONTRACT_KEYS = {
    "name": str,
    "input_shape": list,
    "params": int,
    "macs": int,
    "latency_ms_b1_median": float,
    "latency_ms_b1_p90": float,
    "throughput_ips": float,
    "skipped_ops": dict,
    "threads": int,
    "device": str,
}
SETTINGS = ProfileSettings(
    device="cpu", latency_runs=3, latency_warmup=1, batch_size=2, throughput_runs=1
)
#: The least timing (MACs are what is checked): one run of batch 1, no warm-up, no activations.
MACS_ONLY = ProfileSettings(
    device="cpu",
    latency_runs=1,
    latency_warmup=0,
    batch_size=1,
    throughput_runs=1,
    throughput_warmup=0,
    activations=False,
)


@pytest.fixture
def compose_profile() -> Iterator[object]:
    def make(overrides: list[str]) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="profile", overrides=overrides)

    yield make
    GlobalHydra.instance().clear()


class TinyAttention(nn.Module):
    """2x4x4 input -> 16 tokens of dim 2 -> one attention head of dim 4 -> joint output."""

    def __init__(self) -> None:
        super().__init__()
        self.input_spec = InputSpec(size=4, channels=2)
        self.num_classes = 8
        self.qkv = nn.Linear(2, 12)
        self.head = nn.Linear(4, 10)

    def forward(self, x: Tensor) -> AffectOutput:
        tokens = x.flatten(2).transpose(1, 2)  # (B, 16, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)  # (B, 16, 4) each
        pooled = scaled_dot_product_attention(q, k, v).mean(dim=1)  # (B, 4)
        out = self.head(pooled)
        return AffectOutput(out[:, :8], out[:, 8].tanh(), out[:, 9].tanh())


def test_app_counts_attention_macs_exactly() -> None:
    record = profile_model(TinyAttention(), "tiny", SETTINGS)
    qkv = 16 * 2 * 12  # tokens * in * out
    attention = 16 * 16 * (4 + 4)  # Lq * Lk * (Dqk + Dv)
    head = 4 * 10
    assert record["macs"] == qkv + attention + head
    assert record["macs_by_operator"]["scaled_dot_product_attention"] == attention
    # what is not counted is said, not hidden
    assert {"aten::mean", "aten::tanh"} <= set(record["skipped_ops"])
    assert "aten::scaled_dot_product_attention" not in record["skipped_ops"]
    assert record["params"] == 2 * 12 + 12 + 4 * 10 + 10
    assert record["input_shape"] == [2, 4, 4]


def test_record_schema_from_the_composed_config(compose_profile) -> None:  # type: ignore[no-untyped-def]
    cfg = compose_profile(
        ["model=lightweight_cnn", "profile.device=cpu", "profile.threads=1", *FAST]
    )
    (record,) = profile_config(cfg)
    for key, typ in CONTRACT_KEYS.items():
        assert isinstance(record[key], typ), (key, record.get(key))
    assert record["name"] == "lightweight_cnn" and record["arch"] == "lightweight_cnn"
    assert record["input_shape"] == [1, 48, 48]
    assert record["num_classes"] == 8
    assert record["threads"] == 1 and record["device"] == "cpu"
    assert record["latency_runs"] == 3 and record["throughput_batch"] == 2
    assert record["latency_ms_b1_p90"] >= record["latency_ms_b1_median"] > 0
    assert record["params_trainable"] <= record["params"]
    assert record["activations"] > 0
    assert record["model_cfg"]["arch"] == "lightweight_cnn"
    json.dumps(record, allow_nan=False)  # plain JSON data


def test_num_classes_and_name_come_from_the_profile_keys(compose_profile) -> None:  # type: ignore[no-untyped-def]
    # the least timing, no activations: the params and names are what is checked
    base = ["model=lightweight_cnn", "profile.device=cpu", *FAST, "profile.latency_runs=1"]
    base += ["profile.latency_warmup=0", "profile.batch_size=1", "profile.activations=false"]
    (r8,) = profile_config(compose_profile(base))
    (r5,) = profile_config(compose_profile([*base, "profile.num_classes=5", "profile.name=lw5"]))
    assert r5["name"] == "lw5" and r5["num_classes"] == 5
    # 3 fewer head outputs from 640 pooled features
    assert r8["params"] - r5["params"] == 3 * 640 + 3


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("mobilenetv2_100", 0.30e9, 0.32e9), ("resnet18", 1.80e9, 1.84e9)],
)
def test_published_macs_at_224(name: str, low: float, high: float) -> None:
    from fersuite.models.registry import create_model

    net = create_model("timm", name=name, num_classes=8, in_chans=3, input_size=224)
    record = profile_model(net, name, MACS_ONLY, arch="timm")
    assert low <= record["macs"] <= high
    assert record["input_shape"] == [3, 224, 224]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("profile.device=tpu", r"profile\.device='tpu'"),
        ("profile.threads=0", r"profile\.threads=0"),
        ("profile.batch_size=0", r"profile\.batch_size=0"),
        ("+profile.bogus=1", r"unknown profile keys \['bogus'\]"),
    ],
)
def test_bad_profile_settings_fail_with_the_key(compose_profile, override: str, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        profile_config(compose_profile(["model=lightweight_cnn", override]))


def test_cuda_request_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        assert ProfileSettings(device="cuda").devices() == ["cuda"]
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            ProfileSettings(device="cuda")
        assert ProfileSettings(device="auto").devices() == ["cpu"]


@pytest.mark.smoke
@pytest.mark.subprocess
def test_multirun_writes_per_job_files_and_one_merged_table(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "fersuite-profile"
    res = subprocess.run(
        [
            str(exe),
            "--multirun",
            "model=lightweight_cnn,mit_fer",
            "profile.device=cpu",
            *FAST,
            "profile.activations=false",
        ],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "profile" / "multiruns").iterdir()
    for job in ("0", "1"):
        (record,) = json.loads((sweep / job / "profile.json").read_text())
        assert set(CONTRACT_KEYS) <= set(record)
        with open(sweep / job / "profile.csv") as fh:
            (row,) = list(csv.DictReader(fh))
        assert int(row["macs"]) == record["macs"]
    merged = json.loads((sweep / "profile.json").read_text())  # written by the Hydra callback
    assert [r["name"] for r in merged] == ["lightweight_cnn", "mit_fer-b0"]
    assert "fersuite profile" in res.stdout
    assert (sweep / "report.md").is_file()
