#!/usr/bin/env bash
# Regenerates the model table of experiments/efficiency/README.md with fersuite-profile:
#   1. every zoo model config at its native input (mit_fer, lightweight_cnn: 48x48 grayscale;
#      emonet: 256x256 RGB; timm default: mobilenetv2_100 at 48x48 grayscale);
#   2. the timm backbones of the seed papers at 224x224 RGB (the published-MACs check).
# Each multirun writes <sweep dir>/report.md (the table) and profile.{json,csv}.
# Usage: bash experiments/efficiency/run.sh [extra profile overrides...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-logs/efficiency/$(date +%Y%m%d_%H%M%S)}
COMMON=(profile.throughput_runs=3 profile.throughput_warmup=1 "$@")
"$BIN/fersuite-profile" --multirun model=mit_fer,lightweight_cnn,emonet,timm \
  hydra.sweep.dir="$OUT/native" "${COMMON[@]}"
"$BIN/fersuite-profile" --multirun model=timm \
  model.name=mobilenetv2_100,efficientformer_l1,efficientformer_l3,resnet18 \
  model.in_chans=3 model.input_size=224 hydra.sweep.dir="$OUT/imagenet224" "${COMMON[@]}"
cat "$OUT/native/report.md" "$OUT/imagenet224/report.md"
