#!/usr/bin/env bash
# Fine-tune the shipped checkpoint on a fresh corpus from today's generator, with more rolling-window
# crops (same carried .debs/ and .whl/ as scripts/device_train.sh).
# Usage: scripts/device_finetune.sh TRAIN_CLIPS MINUTES OUTDIR
set -euo pipefail
CLIPS=${1:-40000}
MINUTES=${2:-2.5}
OUTDIR=${3:-out}
mkdir -p "$OUTDIR"
source scripts/device_env.sh
python3 -m workers.asr.lab.synth --out /tmp/corpus --split train -n "$CLIPS" --seed 3 --workers "$(nproc)"
python3 -m workers.asr.lab.cli asr train --corpus /tmp/corpus --split train --init workers/asr/assets/asr.pt --minutes "$MINUTES" \
  --lr 5e-4 --warmup 100 --crop-share 0.5 --batch-seconds 800 --run-dir /tmp/run --export "$OUTDIR/asr.pt" \
  --save-every 1 --log-every 100
