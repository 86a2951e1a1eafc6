#!/usr/bin/env bash
# A decoder model as an embedding server behind vLLM's OpenAI API (/v1/embeddings): last-token pooling
# and L2 normalisation, the RaDeR/RepLLaMA inference contract (foreground; servers/up.sh backgrounds it).
#   servers/embedding_server.sh MODEL [PORT]
# The retriever servers use it with `--encoder_backend vllm-server --encoder_url http://127.0.0.1:PORT`;
# scripts/01_doc_embeddings.sh can encode a corpus through it. Text formatting (prefixes, EOS) is the
# client's job (models/retrieval/text_formats.py). Environment: SERVER_HOST, EMBEDDING_PORT (8002),
# EMBEDDING_SERVED_NAME, EMBEDDING_MAX_MODEL_LEN, EMBEDDING_EXTRA_ARGS, CUDA_VISIBLE_DEVICES,
# EMBEDDING_GPU_MEMORY_UTILIZATION (GPU), EMBEDDING_CPU_KVCACHE_SPACE (GiB, CPU; default 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file

MODEL="${1:?usage: embedding_server.sh MODEL [PORT]}"
PORT="${2:-${EMBEDDING_PORT:-8002}}"
PY="$(vllm_python)"
echo "[$(basename "$0" .sh)] python: $PY" >&2

args=(--model "$MODEL" --host "${SERVER_HOST:-127.0.0.1}" --port "$PORT" --trust-remote-code
      --runner pooling --convert embed --pooler-config '{"pooling_type":"LAST","use_activation":true}')
if [ -n "${EMBEDDING_SERVED_NAME:-}" ]; then args+=(--served-model-name "$EMBEDDING_SERVED_NAME"); fi
if [ -n "${EMBEDDING_MAX_MODEL_LEN:-}" ]; then args+=(--max-model-len "$EMBEDDING_MAX_MODEL_LEN"); fi
# shellcheck disable=SC2206
extra=(${EMBEDDING_EXTRA_ARGS:-})
if has_cuda_gpu; then
  exec "$PY" -m vllm.entrypoints.openai.api_server "${args[@]}" --max-num-seqs "${EMBEDDING_MAX_NUM_SEQS:-5000}" \
    --gpu-memory-utilization "${EMBEDDING_GPU_MEMORY_UTILIZATION:-0.9}" "${extra[@]}"
else
  # On CPU the KV cache gets an explicit size (GiB): vLLM's default (a fraction of the NUMA node's RAM minus
  # the worker's RSS) comes out negative for a 135M model on a small machine. 1 GiB fits beside a generator.
  export VLLM_CPU_KVCACHE_SPACE="${EMBEDDING_CPU_KVCACHE_SPACE:-1}"
  exec "$PY" -m vllm.entrypoints.openai.api_server "${args[@]}" --enforce-eager --dtype float32 "${extra[@]}"
fi
