#!/usr/bin/env bash
# Evaluate one model on BRIGHT: every split in $TASKS, for every query type in $QUERY_TYPES.
#   scripts/06_eval.sh MODEL_KEY [MODEL_PATH]        e.g. scripts/06_eval.sh rader /models/merged_rader
# Runs land in $OUTPUT_DIR/<model_name>/<query_type>/<task>/ (score.json, results.json, per_query.json);
# finished runs are reused, so a killed sweep resumes. Extra evaluate_bright flags: $EVAL_ARGS.
# RERANK=llm|pointwise also reranks the top $RERANK_TOP_K of each run (of the hybrid run when $HYBRID is set)
# with $RERANK_MODEL (llm: served model name, default GENERATOR_MODEL at GENERATOR_URL or $RERANK_BASE_URL;
# pointwise: a saved reranker directory); extra run_src.rerank flags: $RERANK_ARGS.
# RARB=1 also evaluates the model on RAR-b Math and Coding (run_src.evaluate_rarb) into $RARB_OUTPUT_DIR;
# extra flags (e.g. --data_dir for a local copy): $RARB_ARGS.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
MODEL_KEY="${1:?usage: scripts/06_eval.sh MODEL_KEY [MODEL_PATH]}"
MODEL_PATH="${2:-}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/bright}"
TASKS="${TASKS:-biology earth_science economics psychology robotics stackoverflow sustainable_living leetcode pony aops theoremqa_questions theoremqa_theorems}"
QUERY_TYPES="${QUERY_TYPES:-original gpt4_reason}"
HYBRID="${HYBRID:-}"            # set to "auto" to add the BM25 hybrid runs (paper Table 2)
EVAL_ARGS="${EVAL_ARGS:-}"
RERANK="${RERANK:-}"            # llm or pointwise: rerank each first-stage run (paper Table 2 "+QwenRerank")
RERANK_MODEL="${RERANK_MODEL:-}"
RERANK_BASE_URL="${RERANK_BASE_URL:-}"
RERANK_TOP_K="${RERANK_TOP_K:-100}"
RERANK_ARGS="${RERANK_ARGS:-}"
RARB="${RARB:-}"
RARB_OUTPUT_DIR="${RARB_OUTPUT_DIR:-outputs/rarb}"
RARB_ARGS="${RARB_ARGS:-}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3)}"

path_args=()
if [ -n "$MODEL_PATH" ]; then path_args=(--model_path "$MODEL_PATH"); fi
rerank_args=()
if [ -n "$RERANK_MODEL" ]; then rerank_args+=(--model "$RERANK_MODEL"); fi
if [ -n "$RERANK_BASE_URL" ]; then rerank_args+=(--base_url "$RERANK_BASE_URL"); fi
# The run reranked: evaluate_bright names hybrids <key>+bm25 (auto) or <key>+bm25_a<alpha>.
first_stage_name="$MODEL_KEY"
if [ "$HYBRID" = "auto" ]; then first_stage_name="$MODEL_KEY+bm25"; elif [ -n "$HYBRID" ]; then first_stage_name="$MODEL_KEY+bm25_a$HYBRID"; fi
for query_type in $QUERY_TYPES; do
  for task in $TASKS; do
    # shellcheck disable=SC2086
    "$PY" -m run_src.evaluate_bright --task "$task" --model "$MODEL_KEY" "${path_args[@]}" \
      --query_type "$query_type" --output_dir "$OUTPUT_DIR" $EVAL_ARGS
    if [ -n "$HYBRID" ]; then
      # shellcheck disable=SC2086
      "$PY" -m run_src.evaluate_bright --task "$task" --model "$MODEL_KEY" "${path_args[@]}" \
        --query_type "$query_type" --output_dir "$OUTPUT_DIR" --hybrid_bm25_alpha "$HYBRID" $EVAL_ARGS
    fi
    if [ -n "$RERANK" ]; then
      # shellcheck disable=SC2086
      "$PY" -m run_src.rerank --task "$task" --reranker "$RERANK" "${rerank_args[@]}" --top_k "$RERANK_TOP_K" \
        --first_stage_dir "$OUTPUT_DIR/$first_stage_name/$query_type/$task" --output_dir "$OUTPUT_DIR" $RERANK_ARGS
    fi
  done
done
if [ -n "$RARB" ]; then
  # shellcheck disable=SC2086
  "$PY" -m run_src.evaluate_rarb --model "$MODEL_KEY" "${path_args[@]}" --output_dir "$RARB_OUTPUT_DIR" $RARB_ARGS
fi
echo "[06_eval] results under $OUTPUT_DIR" >&2
