#!/usr/bin/env bash
# Stage 06: evaluate one retriever on BRIGHT: every split in $TASKS, for every query type in $QUERY_TYPES.
#   scripts/06_eval.sh MODEL_KEY [MODEL_PATH]        e.g. scripts/06_eval.sh rader outputs/models/rader-merged
# Runs land in $OUTPUT_DIR/$RUN_NAME/<query_type>/<task>/ (score.json, results.json, per_query.json; the
# hybrid in $RUN_NAME+bm25, a reranked run in <first stage>+<reranker>), so dense, hybrid and reranked runs
# never share a directory. RUN_NAME defaults to the key, or <key>-<model folder> for a MODEL_PATH, so two
# checkpoints never share a run. Finished runs are reused, so a killed sweep resumes; document embeddings
# come from the stage-1 cache for the same encoder. Extra evaluate_bright flags: $EVAL_ARGS.
# HYBRID=auto adds the BM25 hybrid runs (paper §6.1: alpha 0.8, 1.0 on the math splits).
# RERANK=llm|pointwise reranks the top $RERANK_TOP_K of each run (of the hybrid run when $HYBRID is set) for
# the query types in $RERANK_QUERY_TYPES (default gpt4_reason: the paper reranked GPT-4 reasoning queries)
# with $RERANK_MODEL (llm: served model name, default GENERATOR_MODEL at GENERATOR_URL or $RERANK_BASE_URL;
# pointwise: a saved reranker directory); extra run_src.rerank flags: $RERANK_ARGS (the paper profile passes
# --rerank_style published there: QwenRerank's prompts, sampling and parser).
# RARB=1 also evaluates the model on RAR-b Math and Coding (run_src.evaluate_rarb) into $RARB_OUTPUT_DIR.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 06_eval  # .env (the environment wins) and the interpreter, printed
cd "$REPO_ROOT"
MODEL_KEY="${1:?usage: scripts/06_eval.sh MODEL_KEY [MODEL_PATH]}"
MODEL_PATH="${2:-}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/bright}"
TASKS="${TASKS:-biology earth_science economics psychology robotics stackoverflow sustainable_living leetcode pony aops theoremqa_questions theoremqa_theorems}"
QUERY_TYPES="${QUERY_TYPES:-original gpt4_reason}"
HYBRID="${HYBRID:-}"
EVAL_ARGS="${EVAL_ARGS:-}"
RERANK="${RERANK:-}"
RERANK_MODEL="${RERANK_MODEL:-}"
RERANK_BASE_URL="${RERANK_BASE_URL:-}"
RERANK_TOP_K="${RERANK_TOP_K:-100}"
RERANK_QUERY_TYPES="${RERANK_QUERY_TYPES:-gpt4_reason}"
RERANK_ARGS="${RERANK_ARGS:-}"
RARB="${RARB:-}"
RARB_OUTPUT_DIR="${RARB_OUTPUT_DIR:-outputs/rarb}"
RARB_ARGS="${RARB_ARGS:-}"
if [ -z "${RUN_NAME:-}" ]; then
  RUN_NAME="$MODEL_KEY"
  if [ -n "$MODEL_PATH" ]; then
    folder="$(basename "${MODEL_PATH%/}")"
    case "$folder" in "$MODEL_KEY"*) RUN_NAME="$folder" ;; *) RUN_NAME="$MODEL_KEY-$folder" ;; esac
  fi
fi

path_args=()
if [ -n "$MODEL_PATH" ]; then path_args=(--model_path "$MODEL_PATH"); fi
rerank_args=()
if [ -n "$RERANK_MODEL" ]; then rerank_args+=(--model "$RERANK_MODEL"); fi
if [ -n "$RERANK_BASE_URL" ]; then rerank_args+=(--base_url "$RERANK_BASE_URL"); fi
hybrid_name="$RUN_NAME+bm25"
if [ -n "$HYBRID" ] && [ "$HYBRID" != auto ]; then hybrid_name="$RUN_NAME+bm25_a$HYBRID"; fi
first_stage_name="$RUN_NAME"
if [ -n "$HYBRID" ]; then first_stage_name="$hybrid_name"; fi
# One process per sweep: the model is loaded once for every split and query type.
sweep_args=()
for task in $TASKS; do sweep_args+=(--task "$task"); done
for query_type in $QUERY_TYPES; do sweep_args+=(--query_type "$query_type"); done
# shellcheck disable=SC2086
"$PY" -m run_src.evaluate_bright "${sweep_args[@]}" --model "$MODEL_KEY" "${path_args[@]}" --model_name "$RUN_NAME" \
  --output_dir "$OUTPUT_DIR" $EVAL_ARGS
if [ -n "$HYBRID" ]; then
  # shellcheck disable=SC2086
  "$PY" -m run_src.evaluate_bright "${sweep_args[@]}" --model "$MODEL_KEY" "${path_args[@]}" --model_name "$hybrid_name" \
    --output_dir "$OUTPUT_DIR" --hybrid_bm25_alpha "$HYBRID" $EVAL_ARGS
fi
for query_type in $QUERY_TYPES; do
  for task in $TASKS; do
    if [ -n "$RERANK" ] && [[ " $RERANK_QUERY_TYPES " == *" $query_type "* ]]; then
      # shellcheck disable=SC2086
      "$PY" -m run_src.rerank --task "$task" --reranker "$RERANK" "${rerank_args[@]}" --top_k "$RERANK_TOP_K" \
        --first_stage_dir "$OUTPUT_DIR/$first_stage_name/$query_type/$task" --output_dir "$OUTPUT_DIR" $RERANK_ARGS
    fi
  done
done
if [ -n "$RARB" ]; then
  # shellcheck disable=SC2086
  "$PY" -m run_src.evaluate_rarb --model "$MODEL_KEY" "${path_args[@]}" --model_name "$RUN_NAME" \
    --output_dir "$RARB_OUTPUT_DIR" $RARB_ARGS
fi
echo "[06_eval] results under $OUTPUT_DIR/$RUN_NAME*" >&2
