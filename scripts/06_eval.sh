#!/usr/bin/env bash
# Evaluate one model on BRIGHT: every split in $TASKS, for every query type in $QUERY_TYPES.
#   scripts/06_eval.sh MODEL_KEY [MODEL_PATH]        e.g. scripts/06_eval.sh rader /models/merged_rader
# Runs land in $OUTPUT_DIR/<model_name>/<query_type>/<task>/ (score.json, results.json, per_query.json);
# finished runs are reused, so a killed sweep resumes. Extra evaluate_bright flags: $EVAL_ARGS.
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
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3)}"

path_args=()
if [ -n "$MODEL_PATH" ]; then path_args=(--model_path "$MODEL_PATH"); fi
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
  done
done
echo "[06_eval] results under $OUTPUT_DIR" >&2
