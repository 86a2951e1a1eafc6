#!/usr/bin/env bash
# The embedded default: the whole RaDeR pipeline in miniature, offline, on a CPU (DESIGN.md §4).
#   bash scripts/demo.sh [--problems N] [--rollouts R] [--train-steps S] [--heldout H] [--seed S]
#                        [--generator-url URL --model NAME] [--paper-filter] [--out-dir DIR] [--smallest]
#                        [--device cpu|cuda]
# Installs what is missing, starts the vLLM CPU generator (SmolLM2-135M-Instruct) and the BM25 server over
# the CHAMP concepts through servers/up.sh, then runs python -m run_src.demo: MCTS on CHAMP training
# problems → query synthesis (all four types) → Tevatron training set → LoRA training of RaDeR-SmolLM2 →
# evaluation of BM25, MiniLM, base SmolLM2 and RaDeR-SmolLM2 on held-out CHAMP problems. Every server it
# started is stopped at the end, also on failure or Ctrl-C. A rerun reuses finished stages.
# --generator-url/--model: use a stronger OpenAI-compatible generator instead of starting SmolLM2 (with
# --paper-filter the paper's correct-trajectory filter applies). On a GPU machine the same command runs
# the generator on the GPU (servers/generator_server.sh detects it); --device cuda also trains and encodes there.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT_DIR="outputs/demo"
generator_url=""
generator_model=""
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --problems|--rollouts|--heldout|--seed|--workers|--device) demo_args+=("--${1#--}" "$2"); shift 2 ;;
    --train-steps) demo_args+=(--train_steps "$2"); shift 2 ;;
    --paper-filter) demo_args+=(--paper_filter); shift ;;
    --smallest) demo_args+=(--problems 2 --rollouts 3 --tiny_search --train_steps 4 --heldout 20 --workers 2); shift ;;
    --generator-url) generator_url="$2"; shift 2 ;;
    --model) generator_model="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "[demo] unknown flag $1 (see bash scripts/demo.sh --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$generator_url" ] && [ -z "$generator_model" ]; then
  echo "[demo] --generator-url needs --model (the served model name)" >&2; exit 2
fi

started=$(date +%s)
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${JAVA_HOME:-}" ] && command -v javac >/dev/null 2>&1; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  export JAVA_HOME
fi
PY=.venv/bin/python
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"   # absolute: relative paths are taken from the repository root

echo "[demo] preparing embedded assets (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, CHAMP mirror)"
assets_json="$("$PY" -m models.embedded.assets)"
smollm2_dir="$(printf '%s' "$assets_json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["smollm2"])')"
mirror_dir="$(printf '%s' "$assets_json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["champ_mirror"])')"
export BRIGHT_DIR="$mirror_dir"

# Servers of this demo live in their own run directory, on free ports, so they never touch other servers.
export SERVER_RUN_DIR="$OUT_DIR/servers"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cleanup() {
  status=$?
  if [ -d "$SERVER_RUN_DIR" ]; then bash servers/down.sh --run-dir "$SERVER_RUN_DIR" >&2 || true; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bm25_port="$(free_port)"
specs=("bm25=champ,$bm25_port")
if [ -z "$generator_url" ]; then
  generator_port="$(free_port)"
  specs+=("generator=$smollm2_dir,$generator_port")
  generator_url="http://127.0.0.1:$generator_port/v1"
  generator_model="$smollm2_dir"
  echo "[demo] starting the vLLM CPU generator (SmolLM2-135M-Instruct; 2-3 minutes) and the BM25 server"
else
  echo "[demo] using the generator at $generator_url ($generator_model); starting the BM25 server"
fi
bash servers/up.sh --timeout 900 --run-dir "$SERVER_RUN_DIR" "${specs[@]}"

"$PY" -m run_src.demo --out_dir "$OUT_DIR" --generator_url "$generator_url" --model "$generator_model" \
  --bm25_url "http://127.0.0.1:$bm25_port" --smollm2_dir "$smollm2_dir" --champ_mirror "$mirror_dir" \
  "${demo_args[@]}"
echo "[demo] finished in $(( $(date +%s) - started )) s"
