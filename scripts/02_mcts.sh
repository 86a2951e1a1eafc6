#!/usr/bin/env bash
# Stage 2: retrieval-augmented MCTS over a problem set (paper configuration by default).
#   scripts/02_mcts.sh GENERATOR_MODEL [extra run_parallel_workers flags]
#   e.g. scripts/02_mcts.sh Qwen/Qwen2.5-7B-Instruct --shard 0/4
# Starts the generator and retriever servers through servers/up.sh (reusing healthy ones), runs
# python -m run_src.run_parallel_workers, and stops the servers it started, also on failure or Ctrl-C.
# Settings (environment): DATASET (MATH), TEST_JSON (shuffled_train), DATA_ROOT (data),
#   RETRIEVER (repllama | RaDeR | bm25), RETRIEVER_MODEL (merged dense model for repllama/RaDeR),
#   CORPUS_SPLIT (theoremqa_theorems), RUN_NAME (paper; rerun with the same name to resume),
#   NUM_ROLLOUTS (16), NUM_WORKERS (10), START_SERVERS (1; 0 = use the URLs in .env as they are).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
source servers/lib.sh
load_env_file
MODEL="${1:?usage: scripts/02_mcts.sh GENERATOR_MODEL [extra flags]}"
shift
DATASET="${DATASET:-MATH}"
TEST_JSON="${TEST_JSON:-shuffled_train}"
DATA_ROOT="${DATA_ROOT:-data}"
RETRIEVER="${RETRIEVER:-repllama}"
RETRIEVER_MODEL="${RETRIEVER_MODEL:-${REPLLAMA_MODEL_PATH:-}}"
CORPUS_SPLIT="${CORPUS_SPLIT:-theoremqa_theorems}"
RUN_NAME="${RUN_NAME:-paper}"
NUM_ROLLOUTS="${NUM_ROLLOUTS:-16}"
NUM_WORKERS="${NUM_WORKERS:-10}"
START_SERVERS="${START_SERVERS:-1}"
export SERVER_RUN_DIR="${SERVER_RUN_DIR:-$REPO_ROOT/.cache/servers/mcts}"
PY="$(project_python)"

generator_port="${GENERATOR_PORT:-8010}"
bm25_port="${BM25_PORT:-8012}"
case "$RETRIEVER" in
  bm25) retriever_spec="bm25=$CORPUS_SPLIT,$bm25_port"; retriever_flags=(--bm25_url "http://127.0.0.1:$bm25_port") ;;
  repllama|RaDeR)
    key="$(echo "$RETRIEVER" | tr '[:upper:]' '[:lower:]')"
    port_var="$(echo "$key" | tr '[:lower:]' '[:upper:]')_PORT"
    port="${!port_var:-$([ "$key" = rader ] && echo 8001 || echo 8011)}"
    : "${RETRIEVER_MODEL:?set RETRIEVER_MODEL to the merged $RETRIEVER checkpoint}"
    retriever_spec="$key=$RETRIEVER_MODEL,$port"
    retriever_flags=(--retriever_url "http://127.0.0.1:$port") ;;
  *) echo "[02_mcts] RETRIEVER must be repllama, RaDeR or bm25, got $RETRIEVER" >&2; exit 2 ;;
esac

started=()
cleanup() {
  if [ ${#started[@]} -gt 0 ]; then bash servers/down.sh --run-dir "$SERVER_RUN_DIR" "${started[@]}" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$START_SERVERS" = 1 ]; then
  for spec in "generator=$MODEL,$generator_port" "$retriever_spec"; do
    name="${spec%%=*}"
    pid_file="$SERVER_RUN_DIR/$name.pid"
    if ! { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }; then started+=("$name"); fi
  done
  bash servers/up.sh --run-dir "$SERVER_RUN_DIR" "generator=$MODEL,$generator_port" "$retriever_spec"
  generator_flags=(--generator_urls "http://127.0.0.1:$generator_port/v1")
else
  generator_flags=()
fi

"$PY" -m run_src.run_parallel_workers \
  --dataset_name "$DATASET" --test_json_filename "$TEST_JSON" --data_root "$DATA_ROOT" \
  --api vllm-server --model_ckpt "$MODEL" "${generator_flags[@]}" \
  --retriever "$RETRIEVER" "${retriever_flags[@]}" --task "$CORPUS_SPLIT" \
  --max_depth_allowed 6 --num_a1_steps 2 --num_rollouts "$NUM_ROLLOUTS" \
  --disable_a3 --disable_a4 --disable_a5 --save_tree --bool_goldanswer_reward \
  --LLM_candidate_theorems --retrieval_selfreasoning --num_workers "$NUM_WORKERS" \
  --run_name "$RUN_NAME" "$@"
