#!/usr/bin/env bash
# The main job: train the tiny preset end to end (oracle warm-up, then GRPO against the simulator
# with the noise curriculum), then evaluate the base model and the trained policy with BM25.
# Usage: bash scripts/main.sh [RUN_DIR] [N_QUESTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/tiny}
N=${2:-300}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ZS=.venv/bin/zerosearch
$ZS train --preset tiny --output "$RUN"
$ZS eval --base-model --backend bm25 --n "$N" --output "$RUN/eval_base_bm25.json"
$ZS eval --checkpoint "$RUN" --backend bm25 --n "$N" --output "$RUN/eval_trained_bm25.json"
echo
echo "curves:  $RUN/curves.png"
echo "metrics: $RUN/metrics.jsonl"
echo "reports: $RUN/eval_base_bm25.json $RUN/eval_trained_bm25.json"
