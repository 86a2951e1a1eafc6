#!/usr/bin/env bash
# Stage 03: MCTS run directories -> query records (q_llmq, q_CoT, q_question, q_lexical).
#   scripts/03_queries.sh OUTPUT_DIR RUN_DIR [RUN_DIR ...]
#   QUERY_TYPES="llmq cot question lexical" DENSE_URL=http://127.0.0.1:8011 scripts/03_queries.sh out/queries RUN_DIR
# Needs the generator LLM for q_llmq/q_lexical at $GENERATOR_URL ($GENERATOR_MODEL). The default query types are
# those of paper Table 1's RaDeR row (q_llmq + q_CoT + q_lexical); q_lexical's negatives are BM25's and a dense
# retriever's (paper §4.3): a retriever server at $DENSE_URL (e.g. the RepLLaMA server of stage 2) or an
# in-process encoder at $DENSE_MODEL_PATH ($DENSE_TEXT_FORMAT); BM25_ONLY_NEGATIVES=1 drops the dense part.
# Rerunning after a kill resumes: finished LLM calls come from the cache. Extra generate_queries flags: $QUERY_ARGS.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 03_queries  # .env (the environment wins) and the interpreter, printed

QUERY_TYPES="${QUERY_TYPES:-llmq cot lexical}"
TRAJECTORY_FILTER="${TRAJECTORY_FILTER:-correct}"   # correct (paper) | all | self_reflection_passed
GENERATOR_URL="${GENERATOR_URL:-http://127.0.0.1:8010/v1}"
GENERATOR_MODEL="${GENERATOR_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
DENSE_URL="${DENSE_URL:-}"
DENSE_MODEL_PATH="${DENSE_MODEL_PATH:-}"
DENSE_TEXT_FORMAT="${DENSE_TEXT_FORMAT:-repllama}"
BM25_ONLY_NEGATIVES="${BM25_ONLY_NEGATIVES:-0}"
MAX_CONCURRENCY="${MAX_CONCURRENCY:-32}"
SEED="${SEED:-0}"
CORPUS="${CORPUS:-}"                                # empty: each run's args.json corpus
CORPUS_SPLIT="${CORPUS_SPLIT:-}"
CACHE_ROOT="${BRIGHT_CACHE_DIR:-$REPO_ROOT/BRIGHT_cache}"
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
      --max_concurrency "$MAX_CONCURRENCY" --seed "$SEED" --cache_root "$CACHE_ROOT")
if [ "$BM25_ONLY_NEGATIVES" = 1 ]; then args+=(--no_dense_negatives)
elif [ -n "$DENSE_URL" ]; then args+=(--dense_url "$DENSE_URL")
elif [ -n "$DENSE_MODEL_PATH" ]; then args+=(--dense_model_path "$DENSE_MODEL_PATH" --dense_text_format "$DENSE_TEXT_FORMAT")
fi
if [ -n "$CORPUS" ]; then args+=(--corpus "$CORPUS" --corpus_split "$CORPUS_SPLIT"); fi

cd "$REPO_ROOT"
# shellcheck disable=SC2086
"$PY" -m run_src.generate_queries "${args[@]}" $QUERY_ARGS
