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
# GPUs: TRAIN_GPUS="0,1" (default: $CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists) runs
# `deepspeed --include localhost:$TRAIN_GPUS` with the config's ZeRO-3 file (DeepSpeed ignores
# CUDA_VISIBLE_DEVICES, so the list is passed explicitly; keep the GPUs of running servers out of it).
# The paper trained on PAPER_TRAIN_GPUS=2 GPUs (Table 10); on another count the global batch and the
# in-batch negatives change: a warning gives the --gradient_accumulation_steps that keeps the global batch,
# and KEEP_PAPER_GLOBAL_BATCH=1 applies it. TRAIN_GPUS=none (or no GPU) runs one CPU process (pick a
# CPU-sized config, e.g. tevatron_configs/smollm2-135m-cpu.json plus --model_name_or_path and --max_steps).
# A rerun resumes from the latest checkpoint in OUTDIR; a finished OUTDIR (with _SUCCESS) is not trained again.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 05_train

TASK="${TASK:-retriever}"                # retriever | reranker
MERGE_DTYPE="${MERGE_DTYPE:-bfloat16}"   # fp16 risks NaN embeddings for Qwen2 (training.md §10.3)
MASTER_PORT="${MASTER_PORT:-60000}"
PAPER_TRAIN_GPUS="${PAPER_TRAIN_GPUS:-2}"
KEEP_PAPER_GLOBAL_BATCH="${KEEP_PAPER_GLOBAL_BATCH:-0}"

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
if [ -f "$OUTDIR/_SUCCESS" ]; then
  echo "[train] $OUTDIR already finished (_SUCCESS); remove it to train again" >&2
else
  # A rerun into the same directory resumes from its latest checkpoint.
  resume=()
  if compgen -G "$OUTDIR/checkpoint-*" >/dev/null; then resume=(--overwrite_output_dir); fi
  if [ -z "${TRAIN_GPUS:-}" ]; then
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then TRAIN_GPUS="$CUDA_VISIBLE_DEVICES"
    elif gpu_visible; then TRAIN_GPUS="$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)"
    else TRAIN_GPUS=none; fi
  fi
  train_args=(--config "$CONFIG" --dataset_path "$TRAIN_FILE" --output_dir "$OUTDIR" "${resume[@]}" "$@")
  if [ "$TRAIN_GPUS" != none ]; then
    n_gpus="$(echo "$TRAIN_GPUS" | tr ',' '\n' | grep -c .)"
    if [ "$n_gpus" != "$PAPER_TRAIN_GPUS" ]; then
      accumulation="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("gradient_accumulation_steps", 1))' "$CONFIG")"
      keep=$(( accumulation * PAPER_TRAIN_GPUS / n_gpus ))
      echo "[train] WARNING: $n_gpus GPU(s) where the paper used $PAPER_TRAIN_GPUS: the global batch and the in-batch" \
        "negatives change; --gradient_accumulation_steps $keep keeps the global batch (KEEP_PAPER_GLOBAL_BATCH=1 applies it)" >&2
      if [ "$KEEP_PAPER_GLOBAL_BATCH" = 1 ]; then train_args+=(--gradient_accumulation_steps "$keep"); fi
    fi
    echo "[train] $MODULE on GPU(s) $TRAIN_GPUS with DeepSpeed, config $CONFIG" >&2
    "$(dirname "$PY")/deepspeed" --include "localhost:$TRAIN_GPUS" --master_port "$MASTER_PORT" --module "$MODULE" \
      "${train_args[@]}"
  else
    echo "[train] no GPU: $MODULE in one CPU process, config $CONFIG" >&2
    "$PY" -m "$MODULE" "${train_args[@]}" --use_cpu true --deepspeed "" --bf16 false
  fi
fi

if [ "$TASK" = retriever ]; then
  # A finished merge of this adapter with these settings is reused; another one is refused.
  "$PY" -m run_src.merge_lora --adapter "$OUTDIR" --output_dir "$OUTDIR-merged" --dtype "$MERGE_DTYPE"
  echo "[train] retriever: $OUTDIR (adapter) and $OUTDIR-merged (full checkpoint)" >&2
else
  echo "[train] reranker: $OUTDIR" >&2
fi
