#!/usr/bin/env bash
# Stage 2: retrieval-augmented MCTS over a problem set (paper configuration by default).
#   scripts/02_mcts.sh GENERATOR_MODEL [extra run_parallel_workers flags]
#   e.g. DATA_ROOT=outputs/problems scripts/02_mcts.sh Qwen/Qwen2.5-7B-Instruct --shard 0/4
# With START_SERVERS=1 (default) it starts the generator and the retriever server through servers/up.sh
# (reusing healthy ones) and stops the ones it started at the end, also on failure or Ctrl-C; with
# START_SERVERS=0 it uses the servers at GENERATOR_URL and REPLLAMA_URL / RADER_URL / BM25_URL as they are.
# Settings (environment): DATASET (MATH), TEST_JSON (shuffled_train), DATA_ROOT (data; stage 00 writes
#   <DATA_ROOT>/<DATASET>/<TEST_JSON>.json), RETRIEVER (repllama | RaDeR | bm25), RETRIEVER_MODEL (the dense
#   model a started server loads), CORPUS_SPLIT (theoremqa_theorems), RUN_NAME (default TEST_JSON; rerun with
#   the same name to resume), NUM_ROLLOUTS (16), NUM_WORKERS (10), RUN_OUTPUTS_ROOT (outputs_MCTS/run_outputs).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
source servers/lib.sh
stage_setup 02_mcts
MODEL="${1:?usage: scripts/02_mcts.sh GENERATOR_MODEL [extra flags]}"
shift
DATASET="${DATASET:-MATH}"
TEST_JSON="${TEST_JSON:-shuffled_train}"
DATA_ROOT="${DATA_ROOT:-data}"
RETRIEVER="${RETRIEVER:-repllama}"
RETRIEVER_MODEL="${RETRIEVER_MODEL:-${REPLLAMA_MODEL_PATH:-}}"
CORPUS_SPLIT="${CORPUS_SPLIT:-theoremqa_theorems}"
RUN_NAME="${RUN_NAME:-$TEST_JSON}"
NUM_ROLLOUTS="${NUM_ROLLOUTS:-16}"
NUM_WORKERS="${NUM_WORKERS:-10}"
RUN_OUTPUTS_ROOT="${RUN_OUTPUTS_ROOT:-$REPO_ROOT/outputs_MCTS/run_outputs}"
START_SERVERS="${START_SERVERS:-1}"
export SERVER_RUN_DIR="${SERVER_RUN_DIR:-$REPO_ROOT/.cache/servers/mcts}"

generator_port="${GENERATOR_PORT:-8010}"
case "$RETRIEVER" in
  bm25) server=bm25; server_arg="$CORPUS_SPLIT"; port="${BM25_PORT:-8012}"; url="${BM25_URL:-http://127.0.0.1:$port}"
        url_flag=--bm25_url ;;
  repllama) server=repllama; server_arg="$RETRIEVER_MODEL"; port="${REPLLAMA_PORT:-8011}"
            url="${REPLLAMA_URL:-http://127.0.0.1:$port}"; url_flag=--retriever_url ;;
  RaDeR|rader) server=rader; server_arg="$RETRIEVER_MODEL"; port="${RADER_PORT:-8001}"
               url="${RADER_URL:-http://127.0.0.1:$port}"; url_flag=--retriever_url ;;
  *) echo "[02_mcts] RETRIEVER must be repllama, RaDeR or bm25, got $RETRIEVER" >&2; exit 2 ;;
esac

started=()
cleanup() {
  if [ ${#started[@]} -gt 0 ]; then bash servers/down.sh --run-dir "$SERVER_RUN_DIR" "${started[@]}" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

generator_flags=()
if [ "$START_SERVERS" = 1 ]; then
  if [ -z "$server_arg" ]; then
    echo "[02_mcts] START_SERVERS=1 starts a $RETRIEVER server: set RETRIEVER_MODEL to its merged checkpoint" >&2
    exit 2
  fi
  url="http://127.0.0.1:$port"
  specs=("generator=$MODEL,$generator_port" "$server=$server_arg,$port")
  for spec in "${specs[@]}"; do
    name="${spec%%=*}"
    pid_file="$SERVER_RUN_DIR/$name.pid"
    if ! { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }; then started+=("$name"); fi
  done
  bash servers/up.sh --run-dir "$SERVER_RUN_DIR" "${specs[@]}"
  generator_flags=(--generator_urls "http://127.0.0.1:$generator_port/v1")
fi

"$PY" -m run_src.run_parallel_workers \
  --dataset_name "$DATASET" --test_json_filename "$TEST_JSON" --data_root "$DATA_ROOT" \
  --api vllm-server --model_ckpt "$MODEL" "${generator_flags[@]}" \
  --retriever "$RETRIEVER" "$url_flag" "$url" --task "$CORPUS_SPLIT" \
  --max_depth_allowed 6 --num_a1_steps 2 --num_rollouts "$NUM_ROLLOUTS" \
  --disable_a3 --disable_a4 --disable_a5 --save_tree --bool_goldanswer_reward \
  --LLM_candidate_theorems --retrieval_selfreasoning --num_workers "$NUM_WORKERS" \
  --run_outputs_root "$RUN_OUTPUTS_ROOT" --run_name "$RUN_NAME" "$@"
