#!/usr/bin/env bash
# Evaluate and benchmark the shipped checkpoint on a GPU machine (same carried .debs/ and .whl/ as
# scripts/device_train.sh). Usage: scripts/device_eval.sh OUTDIR
set -euo pipefail
OUTDIR=${1:-out}
mkdir -p "$OUTDIR"
source scripts/device_env.sh
N=$(nproc)
python3 -m workers.asr.lab.synth --out /tmp/corpus --split heldout -n 400 --seed 2 --workers "$N"
python3 -m workers.asr.lab.synth --out /tmp/corpus --split ood -n 30 --seed 1 --workers 1
python3 -m workers.asr.lab.synth --out /tmp/corpus --split general -n 1000 --seed 1 --workers 1
python3 -m workers.asr.lab.cli bench asr --device "${DEVICE:-cuda}" --json | tee "$OUTDIR/bench_cuda.json"
python3 -m workers.asr.lab.cli asr eval --device "${DEVICE:-cuda}" --corpus /tmp/corpus --json | tee "$OUTDIR/eval_cuda.json"
# The same recognizer on two of the machine's cores: an uncontended stand-in for a 2-core CPU worker.
grep -m1 "model name" /proc/cpuinfo
taskset -c 0,1 python3 -m workers.asr.lab.cli bench asr --device cpu --threads 2 --json | tee "$OUTDIR/bench_cpu_2cores.json"
