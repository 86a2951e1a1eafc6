#!/usr/bin/env bash
# Stage 01: precompute document-embedding caches for one model over one or more corpus splits.
#   scripts/01_doc_embeddings.sh MODEL SPLIT [SPLIT ...]
#   TEXT_FORMAT=plain POOLING=mean scripts/01_doc_embeddings.sh /models/all-MiniLM-L6-v2 champ
#   ENCODER_BACKEND=vllm-server ENCODER_URL=http://127.0.0.1:8001 scripts/01_doc_embeddings.sh /ckpt/rader aops
# Relative BRIGHT_DIR/BRIGHT_CACHE_DIR are taken from the repository root.
# Caches land in $BRIGHT_CACHE_DIR/doc_emb/<cache name>/<split>/, the name derived from the encoder settings
# (models/retrieval/encoder_flags.py), so servers and stage 6 with the same settings reuse them. Rerunning
# after a kill resumes; rerunning after success reuses. Corpora come from $BRIGHT_DIR or the Hugging Face Hub.
# ENCODE_GPUS=0,1,2,3 runs one worker per listed GPU (encode_corpus --worker I/N, all writing parts of the same
# caches), waits for all of them, then one last run assembles each cache.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 01_doc_embeddings  # .env (the environment wins) and the interpreter, printed

TEXT_FORMAT="${TEXT_FORMAT:-rader}"            # prefixes/EOS preset: rader, repllama, plain, ...
POOLING="${POOLING:-}"                         # empty: eos when the format appends EOS, else mean
BRIGHT_DIR="${BRIGHT_DIR:-}"                   # empty: the Hub (xlangai/BRIGHT); champ uses the embedded mirror
BRIGHT_CACHE_DIR="${BRIGHT_CACHE_DIR:-$REPO_ROOT/BRIGHT_cache}"
BATCH_SIZE="${BATCH_SIZE:-8}"
ENCODER_BACKEND="${ENCODER_BACKEND:-transformers}"  # or vllm-server (needs ENCODER_URL)
ENCODER_URL="${ENCODER_URL:-}"
DOC_MAX_LEN="${DOC_MAX_LEN:-}"                 # tokens incl. EOS; empty: the model's own limit
ENCODE_GPUS="${ENCODE_GPUS:-}"                 # e.g. 0,1,2,3: one encoding worker per GPU
SHARD_SIZE="${SHARD_SIZE:-}"                   # documents per resumable part; empty: encode_corpus's default
ENCODER_COMPILE="${ENCODER_COMPILE:-0}"        # 1: torch.compile the model (one-off compile, faster batches)

if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL SPLIT [SPLIT ...]" >&2
  exit 2
fi
MODEL="$1"
shift
# A local model path is made absolute before the cd below; an HF id is passed as is.
if [ -e "$MODEL" ]; then MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"; fi

args=(--model_path "$MODEL" --source "${BRIGHT_DIR:-hf}" --cache_root "$BRIGHT_CACHE_DIR" --text_format "$TEXT_FORMAT"
      --encode_batch_size "$BATCH_SIZE" --encoder_backend "$ENCODER_BACKEND")
for split in "$@"; do args+=(--split "$split"); done
if [ -n "$POOLING" ]; then args+=(--pooling "$POOLING"); fi
if [ -n "$ENCODER_URL" ]; then args+=(--encoder_url "$ENCODER_URL"); fi
if [ -n "$DOC_MAX_LEN" ]; then args+=(--doc_max_len "$DOC_MAX_LEN"); fi
if [ -n "$SHARD_SIZE" ]; then args+=(--shard_size "$SHARD_SIZE"); fi
case "$ENCODER_COMPILE" in
  1) args+=(--encoder_compile) ;;
  0) ;;
  *) echo "ENCODER_COMPILE=$ENCODER_COMPILE: use 1 (torch.compile the encoder) or 0" >&2; exit 2 ;;
esac

cd "$REPO_ROOT"
IFS=, read -r -a gpus <<< "$ENCODE_GPUS"
if [ "${#gpus[@]}" -gt 1 ]; then
  pids=()
  for i in "${!gpus[@]}"; do
    echo "[01_doc_embeddings] worker $i/${#gpus[@]} on GPU ${gpus[$i]}" >&2
    CUDA_VISIBLE_DEVICES="${gpus[$i]}" "$PY" -m run_src.encode_corpus "${args[@]}" --worker "$i/${#gpus[@]}" --quiet &
    pids+=("$!")
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ "$failed" -ne 0 ]; then
    echo "[01_doc_embeddings] a worker failed; rerun to resume (finished parts are kept)" >&2
    exit 1
  fi
  export CUDA_VISIBLE_DEVICES="${gpus[0]}"  # the assembling run finds every part and concatenates them
fi
"$PY" -m run_src.encode_corpus "${args[@]}"
