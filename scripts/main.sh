#!/usr/bin/env bash
# The main job: train the tiny preset end to end (oracle warm-up, then GRPO against the simulator
# with the noise curriculum), then evaluate the base model and the trained policy with BM25 on the
# same held-out questions and print their paired EM difference.
# Usage: bash scripts/main.sh [RUN_DIR] [N_QUESTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/tiny}
N=${2:-100}
# torch picks one thread per idle core (agents.trainer.set_torch_threads); set OMP_NUM_THREADS to cap it.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ZS=.venv/bin/zerosearch
start=$(date +%s)
$ZS train --preset tiny --output "$RUN"
# Both evaluations: the same N seeded held-out questions, greedy decoding, and an episode ends after
# 2 invalid turns in a row (the base model never writes a tag; a trained policy rarely loses a turn).
$ZS eval --base-model --backend bm25 --n "$N" --max-invalid-streak 2 --records --output "$RUN/eval_base_bm25.json"
$ZS eval --checkpoint "$RUN" --backend bm25 --n "$N" --max-invalid-streak 2 \
  --paired-with "$RUN/eval_base_bm25.json" --output "$RUN/eval_trained_bm25.json"
echo
echo "main job: $(( $(date +%s) - start )) s"
echo "curves:  $RUN/curves.png"
echo "metrics: $RUN/metrics.jsonl"
echo "reports: $RUN/eval_base_bm25.json $RUN/eval_trained_bm25.json"
