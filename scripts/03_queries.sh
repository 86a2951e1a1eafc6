#!/usr/bin/env bash
# Stage 03: MCTS run directories -> query records (q_llmq, q_CoT, q_question, q_lexical).
#   scripts/03_queries.sh OUTPUT_DIR RUN_DIR [RUN_DIR ...]
#   TRAJECTORY_FILTER=self_reflection_passed DENSE_URL= scripts/03_queries.sh outputs/queries/champ outputs_MCTS/run_outputs/champ/*/*
# Needs the generator LLM for q_llmq/q_lexical (servers/up.sh generator=MODEL) at $GENERATOR_URL.
# Lexical negatives use a dense retriever server at $DENSE_URL (e.g. servers/up.sh repllama=...); leave it
# empty for BM25-only negatives. Rerunning after a kill resumes: finished LLM calls come from the cache.
# Extra generate_queries flags: $QUERY_ARGS.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
load_env_file  # .env values, unless the environment already sets them

QUERY_TYPES="${QUERY_TYPES:-llmq cot question lexical}"
TRAJECTORY_FILTER="${TRAJECTORY_FILTER:-correct}"   # correct (paper) | all | self_reflection_passed
GENERATOR_URL="${GENERATOR_URL:-http://127.0.0.1:8010/v1}"
GENERATOR_MODEL="${GENERATOR_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
DENSE_URL="${DENSE_URL:-}"                          # empty: --no_dense_negatives
MAX_CONCURRENCY="${MAX_CONCURRENCY:-32}"
SEED="${SEED:-0}"
CORPUS="${CORPUS:-}"                                # empty: each run's args.json corpus
CORPUS_SPLIT="${CORPUS_SPLIT:-}"
QUERY_ARGS="${QUERY_ARGS:-}"

if [ $# -lt 2 ]; then
  echo "usage: $0 OUTPUT_DIR RUN_DIR [RUN_DIR ...]" >&2
  exit 2
fi
OUTPUT_DIR="$1"
shift

# shellcheck disable=SC2206
args=(--run_dirs "$@" --output_dir "$OUTPUT_DIR" --query_types $QUERY_TYPES
      --trajectory_filter "$TRAJECTORY_FILTER" --model "$GENERATOR_MODEL" --base_url "$GENERATOR_URL"
      --max_concurrency "$MAX_CONCURRENCY" --seed "$SEED")
if [ -n "$DENSE_URL" ]; then args+=(--dense_url "$DENSE_URL"); else args+=(--no_dense_negatives); fi
if [ -n "$CORPUS" ]; then args+=(--corpus "$CORPUS" --corpus_split "$CORPUS_SPLIT"); fi

cd "$REPO_ROOT"
# shellcheck disable=SC2086
"$(project_python)" -m run_src.generate_queries "${args[@]}" $QUERY_ARGS
