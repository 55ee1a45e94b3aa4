#!/usr/bin/env bash
# Does the fusion block earn its cost? MiT-FER with the multiscale fusion block vs the last
# stage alone, same seed and data (synthetic faces), then a side-by-side table.
# Usage: bash experiments/mit_fer2013/ablation_fusion.sh [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
ROOT=${FERSUITE_ROOT:-$PWD}
SWEEP="$ROOT/logs/mit_fer2013/ablation_$(date +%Y%m%d_%H%M%S)"
"$BIN/fersuite-train" --multirun experiment=mit_fer2013 data=synthetic \
  model.fusion=multiscale,last logger=csv trainer.max_epochs="${EPOCHS:-8}" \
  hydra.sweep.dir="$SWEEP" "$@"
"$BIN/python" - "$SWEEP" <<'PY'
import json, sys
from pathlib import Path
import yaml
rows = []
for job in sorted(Path(sys.argv[1]).iterdir()):
    m = job / "metrics.json"
    if not m.is_file():
        continue
    metrics = json.loads(m.read_text())
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    fusion = next(o.split("=", 1)[1] for o in overrides if o.startswith("model.fusion="))
    rows.append((fusion, metrics))
print(f"{'fusion':<12}{'test/acc':>10}{'f1_macro':>10}{'val_ccc':>10}{'params (M)':>12}{'MMACs':>10}")
for fusion, m in rows:
    print(f"{fusion:<12}{m['test/acc']:>10.4f}{m['test/f1_macro']:>10.4f}"
          f"{m.get('test/valence_ccc', float('nan')):>10.4f}"
          f"{m['efficiency/params'] / 1e6:>12.3f}{m['efficiency/macs'] / 1e6:>10.2f}")
PY
