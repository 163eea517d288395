#!/usr/bin/env bash
# Synthesize, train, evaluate and benchmark the ASR model on a GPU machine that has python3 with
# torch + numpy but no espeak-ng and no package registry. Needs, carried into the repo copy:
#   .debs/  espeak-ng .deb files (apt-get download espeak-ng espeak-ng-data libespeak-ng1 libsonic0)
#           plus libpcaudio.so.0 built from scripts/pcaudio_stub.c
#   .whl/   flashlight-text wheel for that python (for eval and the CUDA benchmark)
# Usage: scripts/device_train.sh TRAIN_CLIPS MINUTES OUTDIR [BATCH_SECONDS]
set -euo pipefail
CLIPS=${1:-60000}
MINUTES=${2:-6}
OUTDIR=${3:-out}
BATCH=${4:-800}
mkdir -p "$OUTDIR"
source scripts/device_env.sh
N=$(nproc)
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', $N)"
python3 -m workers.asr.lab.synth --out /tmp/corpus --split heldout -n "${HELDOUT:-400}" --seed 2 --workers "$N"
python3 -m workers.asr.lab.synth --out /tmp/corpus --split ood -n 30 --seed 1 --workers 1
python3 -m workers.asr.lab.synth --out /tmp/corpus --split train -n "$CLIPS" --seed 1 --workers "$N"
python3 -m workers.asr.lab.cli asr train --corpus /tmp/corpus --split train --minutes "$MINUTES" --run-dir /tmp/run \
  --export "$OUTDIR/asr.pt" --batch-seconds "$BATCH" --save-every 1.5 --log-every 50
python3 -m workers.asr.lab.cli bench asr --checkpoint "$OUTDIR/asr.pt" --device "${DEVICE:-cuda}" --corpus /tmp/corpus \
  --json | tee "$OUTDIR/bench_cuda.json"
python3 -m workers.asr.lab.cli asr eval --checkpoint "$OUTDIR/asr.pt" --device "${DEVICE:-cuda}" --corpus /tmp/corpus \
  --json --limit 200 | tee "$OUTDIR/eval_cuda.json"
