#!/usr/bin/env bash
# Simulator throughput on one GPU with a 14B-class architecture (Qwen2.5-14B shape, random bf16
# weights): documents/second at batch 1, 16, 64 and 256 with 200 new tokens, plus the simulator's
# overhead and the cache-hit latency. Nothing is downloaded on the GPU machine.
#
# Two steps:
#   bash benchmarks/gpu_simulator.sh prepare   # HERE (network, this repo's venv): writes
#        .gpu/tokenizer  (the SmolLM2 tokenizer, ~3 MB) and .gpu/wheels (pure-python/binary wheels the
#        GPU image lacks: gymnasium, pydantic and their small deps, cp312 manylinux)
#   bash benchmarks/gpu_simulator.sh           # ON THE GPU MACHINE, with .gpu carried along:
#        installs the wheels into /tmp/site (no index), then runs the benchmark with the image's
#        python3 (which holds torch CUDA and transformers). Figures go to $OUT (or .gpu/) as JSON.
# Expected time on an H200: ~1 min to build the random model, ~2 min of generation.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=.gpu

if [[ "${1:-run}" == "prepare" ]]; then
    mkdir -p "$ASSETS/wheels"
    grep -qxF "/$ASSETS/" .git/info/exclude 2>/dev/null || echo "/$ASSETS/" >> .git/info/exclude
    .venv/bin/python - <<'EOF'
from transformers import AutoTokenizer
from zerosearch_env.models import default_model_path
AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(".gpu/tokenizer")
print("tokenizer saved to .gpu/tokenizer")
EOF
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$ASSETS/wheels" gymnasium==1.4.0 farama-notifications==0.0.4 pydantic==2.14.3 \
        "pydantic-core==$(.venv/bin/python -c 'import pydantic_core; print(pydantic_core.__version__)')" \
        annotated-types==0.7.0 "typing-inspection==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("typing-inspection"))')"
    du -sh "$ASSETS"
    exit 0
fi

PY=${PYTHON:-python3}
if compgen -G "$ASSETS/wheels/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ASSETS"/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
RESULTS=${OUT:-$ASSETS}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" benchmarks/simulator_throughput.py --device cuda --dtype bfloat16 \
    --random-weights-config qwen2.5-14b --tokenizer "$ASSETS/tokenizer" \
    --batches 1,16,64,256 --max-new-tokens 200 --min-requests 1 --cache-lookups 300 \
    --out "$RESULTS/gpu_simulator.json" 2>&1 | tee "$RESULTS/gpu_simulator.log"
