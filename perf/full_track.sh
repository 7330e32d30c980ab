#!/usr/bin/env bash
# The full-track comparisons of the method baselines and MIRACL, on one GPU. Usage: perf/full_track.sh
# [RESULTS [phe|dia|all]] ; env ENCODER (default minilm; with TOKENIZER=DIR, a folder that receives a
# BERT-base with random weights and DIR's tokenizer, as perf/speed.py makes for timing), K (runs
# sharing the GPU, default 1: packing full-track runs is not validated yet), PYTHON (default python3).
# Part "phe" is 1, 2 and 4, "dia" is 3.
# Time on one H100, one run at a time: about 150 s per PHE run (13 runs, ~33 min) plus 3.5 min of data
# preparation per task; a run records itself when done, so a part cut short resumes where it stopped.
#  1. every method next to BCE at symmetric (40,40), seed 30;
#  2. MIRACL and BCE at asymmetric (0,40), (40,0) and balanced (40,r), seed 30;
#  3. M3Care, MedFuse and BCE on the diagnosis task (heavy missingness) at symmetric (20,20), seed 30;
#  4. the 2C GMM step at full phenotyping scale on the GPU (pytest-benchmark).
# Each run's record holds its last-epoch mAP, its timings and (MIRACL) the correction diagnostics
# per epoch; `ehrbench table --track full` prints the tables again from RESULTS.
set -euo pipefail
RESULTS=${1:-results}
PART=${2:-all}
PY=${PYTHON:-python3}
ENC=${ENCODER:-minilm}
K=${K:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [[ -n ${TOKENIZER:-} && ! -e $ENC/config.json ]]; then  # ENCODER is a folder to fill with a random BERT-base
  PYTHONPATH=perf "$PY" -c "import sys; from pathlib import Path; from speed import make_random_bert; make_random_bert(Path(sys.argv[1]), Path(sys.argv[2]))" "$ENC" "$TOKENIZER"
fi
common=(--track full --tasks mimic4-phe --seeds 30 --encoder "$ENC" --results "$RESULTS" --runs-per-gpu "$K")
if [[ $PART == phe || $PART == all ]]; then
  "$PY" -m benchmark data prepare mimic4-phe --track full --encoder "$ENC"
  "$PY" -m benchmark bench --method bce,focal,asl,gce,mllsc,multit,miracl --noise sym-40 "${common[@]}"
  "$PY" -m benchmark bench --method bce,miracl --noise asym-0-40,asym-40-0,bal-40 "${common[@]}"
  "$PY" -m pytest perf/test_bench_gmm.py -q -p no:cacheprovider -k gpu --benchmark-columns=min,median,max
fi
if [[ $PART == dia || $PART == all ]]; then
  "$PY" -m benchmark bench --method bce,m3care,medfuse --noise sym-20 "${common[@]/mimic4-phe/mimic4-dia}"
fi
PYTHONPATH=. "$PY" perf/full_track_summary.py "$RESULTS"
