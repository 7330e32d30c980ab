#!/usr/bin/env bash
# The full-track comparisons of the method baselines and MIRACL, in one GPU session (10 minutes or so on
# one H100 once the task is prepared). Usage: perf/full_track.sh [RESULTS] ; env ENCODER (default minilm),
# K (runs sharing the GPU, default 7), PYTHON (default python3).
#  1. every method next to BCE at symmetric (40,40), seed 30;
#  2. MIRACL and BCE at asymmetric (0,40), (40,0) and balanced (40,r), seed 30.
# Each run's record holds its last-epoch mAP, its timings and (MIRACL) the correction diagnostics
# per epoch; `ehrbench table --track full` prints the tables again from RESULTS.
set -euo pipefail
RESULTS=${1:-results}
PY=${PYTHON:-python3}
ENC=${ENCODER:-minilm}
K=${K:-7}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
common=(--track full --tasks mimic4-phe --seeds 30 --encoder "$ENC" --results "$RESULTS" --runs-per-gpu "$K")
"$PY" -m benchmark data prepare mimic4-phe --track full --encoder "$ENC"
"$PY" -m benchmark bench --method bce,focal,asl,gce,mllsc,multit,miracl --noise sym-40 "${common[@]}"
"$PY" -m benchmark bench --method bce,miracl --noise asym-0-40,asym-40-0,bal-40 "${common[@]}"
