#!/usr/bin/env bash
# Stage 04: query records -> Tevatron training JSONL (+ .stats.json/.stats.md, .drops.jsonl, .config.json).
#   scripts/04_dataset.sh OUTPUT.jsonl QUERIES_DIR [QUERIES_DIR ...]
#   QUERY_TYPES="llmq cot lexical" scripts/04_dataset.sh outputs/train/math_mix.jsonl outputs/queries/MATH
# Deterministic given $SEED. Extra build_training_data flags: $DATASET_ARGS.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 04_dataset  # .env (the environment wins) and the interpreter, printed

QUERY_TYPES="${QUERY_TYPES:-}"          # empty: the types the inputs' last generate_queries run produced
MIN_NEGATIVES="${MIN_NEGATIVES:-1}"     # Tevatron cannot group a sample without negatives
MAX_NEGATIVES="${MAX_NEGATIVES:-}"      # empty: keep all
LEXICAL_TOP_K="${LEXICAL_TOP_K:-20}"    # round-trip filter (paper: BM25 top 20)
BACKFILL="${BACKFILL:-none}"            # none | bm25
SEED="${SEED:-0}"
DATASET_ARGS="${DATASET_ARGS:-}"

if [ $# -lt 2 ]; then
  echo "usage: $0 OUTPUT.jsonl QUERIES_DIR [QUERIES_DIR ...]" >&2
  exit 2
fi
OUTPUT="$1"
shift

args=(--queries_dir "$@" --output "$OUTPUT" --min_negatives "$MIN_NEGATIVES" --lexical_top_k "$LEXICAL_TOP_K"
      --backfill "$BACKFILL" --seed "$SEED")
# shellcheck disable=SC2206
if [ -n "$QUERY_TYPES" ]; then args+=(--query_types $QUERY_TYPES); fi
if [ -n "$MAX_NEGATIVES" ]; then args+=(--max_negatives "$MAX_NEGATIVES"); fi

cd "$REPO_ROOT"
# shellcheck disable=SC2086
"$PY" -m run_src.build_training_data "${args[@]}" $DATASET_ARGS
