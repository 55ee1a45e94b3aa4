"""GPU check: the GPU paths of fersuite on one CUDA machine, in under 8 minutes, as one table.

Each job is a subprocess of a console script (``fersuite-train`` / ``fersuite-profile``) with
its own timeout; a job that fails, times out or does not fit the time budget becomes a FAILED
or SKIPPED row, never a crash. Without a CUDA device it says so and exits 0.

Usage (from the repository root)::

    make gpu-check                      # or: .venv/bin/python experiments/gpu_check/run.py
    .venv/bin/python experiments/gpu_check/run.py --steps 300 --budget 480 --out DIR
    .venv/bin/python experiments/gpu_check/run.py --cpu --steps 6   # check the script itself

Exit status: 0 when every job passed (or no CUDA device), 1 when a job failed.
See README.md in this directory for the jobs and the table's columns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = ("job", "steps/s", "images/s", "loss finite", "peak memory", "wall s", "status")
BATCH = 64
#: The ``--cpu`` script check: small batches and inputs, longer timeouts.
CPU_BATCH, CPU_SIZE, CPU_TIMEOUT_SCALE = 4, 64, 4.0


def rgb(size: int = 224) -> list[str]:
    """RGB input of ``size`` x ``size`` for every student / profiled model."""
    return ["model.in_chans=3", f"model.input_size={size}"]


MODELS = {
    "mit_fer": ["model=mit_fer"],
    "mobilenetv2": ["model=timm", "model.name=mobilenetv2_100"],
}


@dataclass
class Job:
    """One subprocess: ``script`` + ``overrides``, its result file and its timeout."""

    name: str
    script: str  # "fersuite-train" | "fersuite-profile"
    overrides: list[str]
    timeout_s: float
    run_dir: Path

    @property
    def result_file(self) -> Path:
        name = "profile.json" if self.script == "fersuite-profile" else "probe.json"
        return self.run_dir / name


@dataclass
class Outcome:
    """What running a job gave: exit status (None: not run), seconds, timeout, log tail."""

    returncode: int | None
    seconds: float = 0.0
    timed_out: bool = False
    log_tail: str = ""
    skipped: str = ""


@dataclass
class Row:
    job: str
    steps_per_s: float | None = None
    images_per_s: float | None = None
    loss_finite: bool | None = None
    peak_memory_mb: float | None = None
    seconds: float = 0.0
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        finite = {None: "-", True: "yes", False: "NO"}[self.loss_finite]
        memory = "-" if self.peak_memory_mb is None else f"{self.peak_memory_mb:,.0f} MiB"
        return [
            self.job,
            num(self.steps_per_s, ".2f" if (self.steps_per_s or 0) < 10 else ".1f"),
            num(self.images_per_s, ",.1f" if (self.images_per_s or 0) < 100 else ",.0f"),
            finite,
            memory,
            f"{self.seconds:.0f}",
            self.status,
        ]


# --------------------------------------------------------------------------------------------
# the jobs
# --------------------------------------------------------------------------------------------


def train_overrides(job: str, out: Path, steps: int, cpu: bool = False) -> list[str]:
    """Overrides every training job shares: synthetic data for ``steps`` steps, no extras."""
    epochs = 3 if steps >= 30 else 1
    per_epoch = max(1, steps // epochs)
    batch = CPU_BATCH if cpu else BATCH
    return [
        "data=synthetic",
        f"data.train_size={per_epoch * batch}",
        f"data.val_size={2 * batch}",
        f"data.test_size={2 * batch}",
        f"data.batch_size={batch}",
        f"data.eval_batch_size={batch}",
        f"data.num_workers={2 if cpu else 6}",
        f"trainer.max_epochs={epochs}",
        "logger=none",
        "~callbacks.efficiency",  # latency is the profile job's figure
        "~callbacks.progress_bar",
        "++trainer.enable_progress_bar=false",
        "~callbacks.reports",
        "+callbacks.gpu_probe._target_=gpu_probe.GpuProbe",
        f"+callbacks.gpu_probe.path={out / job / 'probe.json'}",
        f"+callbacks.gpu_probe.skip_steps={min(20, max(1, steps // 5))}",
        f"hydra.run.dir={out / job}",
        f"task_name=gpu_check_{job}",
    ]


def build_jobs(
    out: Path, steps: int = 300, teacher_weights: Path | None = None, cpu: bool = False
) -> list[Job]:
    """The jobs of the check, in running order (``cpu``: the same jobs on the CPU)."""
    teacher = teacher_weights or out / "emonet_8_random.pth"
    gpu = ["trainer=cpu"] if cpu else ["trainer=gpu"]
    # CPU: Lightning turns 16-mixed into bf16 unless a plugin is given; bf16 keeps it simple.
    fp16 = ["trainer.precision=bf16-mixed"] if cpu else ["trainer.precision=16-mixed"]
    size = CPU_SIZE if cpu else 224
    scale = CPU_TIMEOUT_SCALE if cpu else 1.0
    jobs: list[Job] = []

    def train(name: str, extra: list[str], timeout_s: float) -> None:
        base = train_overrides(name, out, steps, cpu)
        jobs.append(Job(name, "fersuite-train", [*base, *extra], timeout_s * scale, out / name))

    for model, model_args in MODELS.items():
        bf16 = [*gpu, *model_args, *rgb(size), "trainer.precision=bf16-mixed"]
        train(f"{model}-bf16", bf16, 150)
        train(f"{model}-fp16", [*gpu, *model_args, *rgb(size), *fp16], 150)
    student = [*MODELS["mobilenetv2"], *rgb(size), "trainer.precision=bf16-mixed"]
    kd = ["task=distill", "distill.teacher=emonet", f"distill.teacher_weights={teacher}"]
    if cpu:
        kd.append(f"distill.teacher_input_size={CPU_SIZE}")
    train("distill-live", [*gpu, *student, *kd, "distill.teacher_outputs=live"], 180)
    train("distill-cached", [*gpu, *student, *kd, "distill.teacher_outputs=cached"], 180)
    train("compile", [*gpu, *student, "compile=true"], 240)
    ddp = ["trainer=ddp_cpu"] if cpu else ["trainer=ddp"]
    train("ddp", [*ddp, *student], 180)
    profile_device = "cpu" if cpu else "cuda"
    jobs.append(
        Job(
            "profile-cuda",
            "fersuite-profile",
            [
                *MODELS["mobilenetv2"],
                *rgb(size),
                f"profile.device={profile_device}",
                f"hydra.run.dir={out / 'profile-cuda'}",
            ],
            120 * scale,
            out / "profile-cuda",
        )
    )
    return jobs


def write_teacher(path: Path) -> None:
    """Random-weight EmoNet (8 expressions) state dict: a teacher with the real architecture."""
    import torch

    from fersuite.models.emonet import EmoNet

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(EmoNet(num_expressions=8).state_dict(), path)


# --------------------------------------------------------------------------------------------
# running a job and reading its result
# --------------------------------------------------------------------------------------------


def job_env(out: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(HERE), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        HF_HUB_OFFLINE="1",
        WANDB_MODE="disabled",
        FERSUITE_ROOT=str(out),
        FERSUITE_CACHE=str(out / "cache"),
    )
    return env


def run_subprocess(job: Job, env: dict[str, str]) -> Outcome:
    """Run one job's console script with its timeout; the log goes to ``<run dir>.log``."""
    exe = Path(sys.executable).parent / job.script
    log_path = job.run_dir.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(exe), *job.overrides],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: DDP ranks, loader workers
        )
        try:
            code, timed_out = proc.wait(timeout=job.timeout_s), False
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the job's whole group, nothing else
            proc.wait()
    seconds = time.perf_counter() - start
    tail = log_path.read_text(errors="replace")[-4000:] if log_path.is_file() else ""
    return Outcome(code, seconds, timed_out, tail)


def _reason(tail: str) -> str:
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    hits = [ln for ln in lines if re.search(r"error|exception|traceback", ln, re.I)]
    text = (hits or lines or ["no output"])[-1]
    return text[:160]


def build_row(job: Job, outcome: Outcome) -> Row:
    """One table row from what the job left behind (its probe / profile file)."""
    row = Row(job=job.name, seconds=outcome.seconds)
    if outcome.skipped:
        row.status = f"SKIPPED ({outcome.skipped})"
        return row
    if outcome.timed_out:
        row.status = f"FAILED (timeout after {job.timeout_s:.0f} s)"
        return row
    if outcome.returncode != 0:
        row.status = f"FAILED (exit {outcome.returncode}: {_reason(outcome.log_tail)})"
        return row
    try:
        data = json.loads(job.result_file.read_text())
    except (OSError, ValueError) as exc:
        row.status = f"FAILED (no readable {job.result_file.name}: {type(exc).__name__})"
        return row
    if job.script == "fersuite-profile":
        record = data[0] if isinstance(data, list) and data else data
        row.images_per_s = record.get("throughput_ips")
        row.peak_memory_mb = record.get("peak_memory_mb")
        row.extra = {k: record.get(k) for k in ("device", "latency_ms_b1_median", "threads")}
        return row
    row.steps_per_s = data.get("steps_per_s")
    row.images_per_s = data.get("images_per_s")
    row.loss_finite = data.get("loss_finite")
    row.peak_memory_mb = data.get("peak_memory_mb")
    row.extra = {k: data.get(k) for k in ("precision", "world_size", "grad_scale", "steps")}
    if row.loss_finite is False:
        row.status = "FAILED (a training loss was not finite)"
    elif not data.get("timed_steps"):
        row.status = "FAILED (no timed training steps)"
    return row


def run_jobs(
    jobs: Sequence[Job],
    runner: Callable[[Job], Outcome],
    budget_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Row]:
    """Run jobs in order; one that cannot finish within the budget is skipped, not started."""
    start = clock()
    rows: list[Row] = []
    for job in jobs:
        left = budget_s - (clock() - start)
        if left < job.timeout_s:
            outcome = Outcome(None, skipped=f"time budget: {left:.0f} s left")
        else:
            try:
                outcome = runner(job)
            except Exception as exc:  # noqa: BLE001 - a broken job is a row, not a crash
                outcome = Outcome(1, log_tail=f"{type(exc).__name__}: {exc}")
        row = build_row(job, outcome)
        print(f"  {job.name}: {row.status} ({outcome.seconds:.0f} s)", flush=True)
        rows.append(row)
    return rows


def format_table(rows: Sequence[Row]) -> str:
    cells = [list(COLUMNS), *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {1, 2, 4, 5}

    def line(values: list[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        parts = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in pairs]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def device_summary() -> str:
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} CUDA device(s): {', '.join(names)}; torch {torch.__version__}"


def main(
    argv: Sequence[str] | None = None,
    cuda_available: Callable[[], bool] | None = None,
    runner: Callable[[Job], Outcome] | None = None,
) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="logs/gpu_check", help="output directory")
    ap.add_argument("--steps", type=int, default=300, help="training steps per job")
    ap.add_argument(
        "--budget", type=float, default=None, help="seconds for all jobs (480; --cpu: none)"
    )
    ap.add_argument("--cpu", action="store_true", help="the same jobs on the CPU (tiny check)")
    args = ap.parse_args(argv)

    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    if not args.cpu and not cuda_available():
        print("gpu-check: found no CUDA device (torch.cuda.is_available() is False); nothing run")
        return 0

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = build_jobs(out, steps=args.steps, cpu=args.cpu)
    if runner is None:
        write_teacher(out / "emonet_8_random.pth")
        env = job_env(out)

        def runner(job: Job) -> Outcome:
            return run_subprocess(job, env)

    print("gpu-check:", "CPU (script check)" if args.cpu else device_summary(), flush=True)
    start = time.perf_counter()
    budget = args.budget if args.budget is not None else (float("inf") if args.cpu else 480.0)
    rows = run_jobs(jobs, runner, budget)
    total = time.perf_counter() - start
    table = format_table(rows)
    print(table)
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} jobs ok in {total:.0f} s; logs in {out}")
    summary = [{**dict(zip(COLUMNS, r.cells(), strict=True)), **r.extra, "ok": r.ok} for r in rows]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
