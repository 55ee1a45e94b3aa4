"""Knowledge distillation on the built-in synthetic faces, on a CPU, in minutes.

1. train a ResNet-18 teacher (``experiment=kd_synthetic_teacher``);
2. train the lightweight CNN with and without KD from it, same seed and epochs, as one
   multirun (``experiment=kd_synthetic``: job 0 ``task=supervised``, job 1 ``task=distill``);
3. print the test figures of the three models side by side and write ``summary.json``.

Usage (from the repository root)::

    .venv/bin/python experiments/kd_synthetic/run.py [--out DIR] [override ...]

Extra Hydra overrides go to every run (e.g. ``trainer.max_epochs=2 data.train_size=500``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fersuite.utils.io import atomic_write_json

COLUMNS = (
    ("test/acc", "acc"),
    ("test/f1_macro", "F1"),
    ("test/valence_ccc", "V-CCC"),
    ("test/arousal_ccc", "A-CCC"),
    ("test/valence_rmse", "V-RMSE"),
    ("test/arousal_rmse", "A-RMSE"),
)


def _fersuite_train(args: list[str], log_path: Path) -> float:
    exe = Path(sys.executable).parent / "fersuite-train"
    cmd = [str(exe), *args]
    print("$", " ".join(cmd), flush=True)
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise SystemExit(f"fersuite-train failed (exit {res.returncode}); log {log_path}:\n{tail}")
    return elapsed


def _read(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    cfg = info["config"]
    model = cfg["model"].get("name") or cfg["model"]["arch"]
    return {"task": cfg["task"]["name"], "model": model, "metrics": metrics}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="logs/kd_synthetic_demo", help="output directory")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    extra = ["logger=csv", *args.overrides]

    times: dict[str, float] = {}
    times["teacher"] = _fersuite_train(
        ["experiment=kd_synthetic_teacher", f"hydra.run.dir={out / 'teacher'}", *extra],
        out / "teacher.log",
    )
    best = sorted((out / "teacher" / "checkpoints").glob("best-*.ckpt"))
    if not best:
        raise SystemExit(f"no best-*.ckpt under {out / 'teacher' / 'checkpoints'}")
    times["students"] = _fersuite_train(
        [
            "--multirun",
            "experiment=kd_synthetic",
            f"distill.teacher_ckpt={best[-1]}",
            f"hydra.sweep.dir={out / 'students'}",
            *extra,
        ],
        out / "students.log",
    )

    rows = {"teacher": _read(out / "teacher")}
    for job in sorted((out / "students").glob("[0-9]*")):
        r = _read(job)
        rows["student_kd" if r["task"] == "distill" else "student"] = r
    if set(rows) != {"teacher", "student", "student_kd"}:
        raise SystemExit(f"expected a teacher and two student runs, found {sorted(rows)}")

    header = f"{'run':<12}{'model':<18}{'params':>9}{'MMACs':>8}" + "".join(
        f"{name:>8}" for _, name in COLUMNS
    )
    print("\n" + header)
    for key in ("teacher", "student", "student_kd"):
        m = rows[key]["metrics"]
        line = f"{key:<12}{rows[key]['model']:<18}"
        line += f"{m['efficiency/params'] / 1e6:>8.2f}M{m['efficiency/macs'] / 1e6:>8.1f}"
        line += "".join(f"{m.get(k, float('nan')):>8.4f}" for k, _ in COLUMNS)
        print(line)
    kd, sup = rows["student_kd"]["metrics"], rows["student"]["metrics"]
    print("\nKD - no KD:", ", ".join(f"{n} {kd[k] - sup[k]:+.4f}" for k, n in COLUMNS))
    print(f"student with KD - teacher: acc {kd['test/gap_acc']:+.4f}")
    print(
        f"wall time: teacher {times['teacher']:.0f}s, both students {times['students']:.0f}s "
        "(2 runs, incl. the cached teacher pass)"
    )
    summary = {
        "runs": {k: {"model": v["model"], "task": v["task"]} for k, v in rows.items()},
        "test": {k: {c: v["metrics"].get(c) for c, _ in COLUMNS} for k, v in rows.items()},
        "kd_minus_no_kd": {c: kd[c] - sup[c] for c, _ in COLUMNS},
        "wall_s": times,
        "overrides": args.overrides,
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
