#!/usr/bin/env bash
# Stage 05: LoRA training on a Tevatron training set, then the merge into a servable checkpoint.
#   scripts/05_train.sh TRAIN.jsonl OUTDIR [extra train flags]
#   CONFIG=tevatron_configs/gte-qwen2-7b-instruct.json scripts/05_train.sh outputs/train/MATH.jsonl outputs/models/rader-gte
#   TASK=reranker scripts/05_train.sh outputs/train/MATH.jsonl outputs/models/rader-reranker-qwen2.5-7b
# Retriever (TASK=retriever, the default): run_src.train_retriever with $CONFIG (Table 10 values for the
# paper's models, tevatron_configs/*.json), then run_src.merge_lora into OUTDIR-merged ($MERGE_DTYPE),
# which evaluate_bright, the vLLM embedding server and sentence-transformers load.
# Reranker (TASK=reranker): run_src.train_reranker with $CONFIG (default the reranker's Qwen2.5-7B config);
# run_src.rerank loads OUTDIR directly, no merge.
# On GPUs the run goes through `deepspeed --num_gpus $NUM_GPUS` (default: every visible GPU) with the
# config's ZeRO-3 file; without a GPU it runs in one CPU process (then pick a CPU-sized config, e.g.
# tevatron_configs/smollm2-135m-cpu.json plus --model_name_or_path and --max_steps). A rerun resumes from
# the latest checkpoint in OUTDIR; a finished OUTDIR (with _SUCCESS) is not trained again.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
load_env_file

TASK="${TASK:-retriever}"                # retriever | reranker
MERGE_DTYPE="${MERGE_DTYPE:-bfloat16}"   # fp16 risks NaN embeddings for Qwen2 (training.md §10.3)
MASTER_PORT="${MASTER_PORT:-60000}"

if [ $# -lt 2 ]; then
  echo "usage: $0 TRAIN.jsonl OUTDIR [extra train flags]" >&2
  exit 2
fi
TRAIN_FILE="$1"
OUTDIR="$2"
shift 2
case "$TASK" in
  retriever) MODULE=run_src.train_retriever; CONFIG="${CONFIG:-tevatron_configs/qwen2.5-7b-instruct.json}" ;;
  reranker) MODULE=run_src.train_reranker; CONFIG="${CONFIG:-tevatron_configs/reranker-qwen2.5-7b-instruct.json}" ;;
  *) echo "[train] TASK must be retriever or reranker, not '$TASK'" >&2; exit 2 ;;
esac
if [ ! -f "$TRAIN_FILE" ] && [ ! -d "$TRAIN_FILE" ]; then
  echo "[train] training set $TRAIN_FILE does not exist (scripts/04_dataset.sh writes it)" >&2
  exit 2
fi
cd "$REPO_ROOT"
if [ ! -f "$CONFIG" ]; then
  echo "[train] CONFIG=$CONFIG does not exist (see tevatron_configs/)" >&2
  exit 2
fi
PY="$(project_python)"

if [ -f "$OUTDIR/_SUCCESS" ]; then
  echo "[train] $OUTDIR already finished (_SUCCESS); remove it to train again" >&2
else
  # A rerun into the same directory resumes from its latest checkpoint.
  resume=()
  if compgen -G "$OUTDIR/checkpoint-*" >/dev/null; then resume=(--overwrite_output_dir); fi
  if [ -z "${NUM_GPUS:-}" ]; then
    NUM_GPUS="$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | wc -l) || echo 0)"
  fi
  train_args=(--config "$CONFIG" --dataset_path "$TRAIN_FILE" --output_dir "$OUTDIR" "${resume[@]}" "$@")
  if [ "$NUM_GPUS" -gt 0 ]; then
    echo "[train] $MODULE on $NUM_GPUS GPU(s) with DeepSpeed, config $CONFIG" >&2
    "$(dirname "$PY")/deepspeed" --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" --module "$MODULE" \
      "${train_args[@]}"
  else
    echo "[train] no GPU: $MODULE in one CPU process, config $CONFIG" >&2
    "$PY" -m "$MODULE" "${train_args[@]}" --use_cpu true --deepspeed "" --bf16 false
  fi
fi

if [ "$TASK" = retriever ]; then
  if [ -f "$OUTDIR-merged/_SUCCESS" ]; then
    echo "[train] $OUTDIR-merged already exists" >&2
  else
    "$PY" -m run_src.merge_lora --adapter "$OUTDIR" --output_dir "$OUTDIR-merged" --dtype "$MERGE_DTYPE" --overwrite
  fi
  echo "[train] retriever: $OUTDIR (adapter) and $OUTDIR-merged (full checkpoint)" >&2
else
  echo "[train] reranker: $OUTDIR" >&2
fi
