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
mkdir -p "$OUTDIR" /tmp/espeak
for f in .debs/*.deb; do dpkg -x "$f" /tmp/espeak; done
LIB=/tmp/espeak/usr/lib/x86_64-linux-gnu
rm -f "$LIB/libpcaudio.so.0" && cp .debs/libpcaudio.so.0 "$LIB/libpcaudio.so.0"
export ESPEAK_LIB=$LIB/libespeak-ng.so.1 ESPEAK_DATA=$LIB LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
if ! python3 -c "import flashlight.lib.text" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
N=$(nproc)
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', $N)"
python3 -m workers.asr.synth --out /tmp/corpus --split heldout -n "${HELDOUT:-400}" --seed 2 --workers "$N"
python3 -m workers.asr.synth --out /tmp/corpus --split ood -n 30 --seed 1 --workers 1
python3 -m workers.asr.synth --out /tmp/corpus --split train -n "$CLIPS" --seed 1 --workers "$N"
python3 -m workers.asr.train --corpus /tmp/corpus --minutes "$MINUTES" --run-dir /tmp/run \
  --export "$OUTDIR/asr.pt" --batch-seconds "$BATCH" --save-every 1.5 --log-every 50
python3 -m workers.asr.cli bench asr --checkpoint "$OUTDIR/asr.pt" --device "${DEVICE:-cuda}" --corpus /tmp/corpus --json \
  | tee "$OUTDIR/bench_cuda.json"
python3 -m workers.asr.cli asr eval --checkpoint "$OUTDIR/asr.pt" --device "${DEVICE:-cuda}" --corpus /tmp/corpus --json \
  --limit 200 | tee "$OUTDIR/eval_cuda.json"
