#!/usr/bin/env bash
# Shared helpers for the server scripts: .env loading, the Python to use, health polling.
# Source it; it defines functions and variables only.

SERVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SERVERS_DIR/.." && pwd)"

# Export KEY=VALUE lines of .env that are not already set (the environment wins, as in models/settings.py).
load_env_file() {
  local env_file="${1:-${RADER_ENV_FILE:-$REPO_ROOT/.env}}" key value
  [ -f "$env_file" ] || return 0
  while IFS= read -r line; do
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[1]}"; value="${BASH_REMATCH[2]}"
    value="${value%\"}"; value="${value#\"}"; value="${value%\'}"; value="${value#\'}"
    if [ -z "${!key+x}" ]; then export "$key=$value"; fi
  done < "$env_file"
}

# The interpreter with the project's packages: $PYTHON; else .venv-gpu where a CUDA GPU is visible (the GPU
# set-up, scripts/setup_env.sh --gpu); else .venv (the CPU set-up); else .venv-gpu; else python3.
project_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
  elif [ -x "$REPO_ROOT/.venv-gpu/bin/python" ] && gpu_visible; then echo "$REPO_ROOT/.venv-gpu/bin/python"
  elif [ -x "$REPO_ROOT/.venv/bin/python" ]; then echo "$REPO_ROOT/.venv/bin/python"
  elif [ -x "$REPO_ROOT/.venv-gpu/bin/python" ]; then echo "$REPO_ROOT/.venv-gpu/bin/python"
  else command -v python3; fi
}

# The interpreter that runs vLLM: $VLLM_PYTHON; else .venv-vllm (the CUDA 12 set-up keeps vLLM apart, it
# needs transformers < 5); else the project's interpreter.
vllm_python() {
  if [ -n "${VLLM_PYTHON:-}" ]; then echo "$VLLM_PYTHON"
  elif [ -x "$REPO_ROOT/.venv-vllm/bin/python" ] && gpu_visible; then echo "$REPO_ROOT/.venv-vllm/bin/python"
  else project_python; fi
}

# True when nvidia-smi lists at least one GPU (no Python needed).
gpu_visible() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# stage_setup NAME: what every stage script does first. Loads .env (the environment wins), picks the
# interpreter (sets PY) and says which one, so a run on a machine with two set-ups is never ambiguous.
stage_setup() {
  load_env_file
  PY="$(project_python)"
  echo "[$1] python: $PY" >&2
}

# wait_for_health URL TIMEOUT_S [PID]: poll URL until it answers 2xx; fail on timeout or when PID exits.
# A server that answers 503 with "status": "loading" (a retriever encoding its corpus) and whose answer
# changed since the last poll is making progress: each change restarts the TIMEOUT_S budget, so a long
# encode is waited for and a stalled one is not.
# With INSTANCE set, a 2xx counts only if its body carries "instance": "INSTANCE" (the id up.sh gave the
# server it started), so another process answering on the port is never taken for ours.
wait_for_health() {
  local url="$1" timeout_s="$2" pid="${3:-}" instance="${4:-}" deadline reply code body last="" reported=0
  local auth=()
  if [ -n "${RETRIEVER_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer $RETRIEVER_API_KEY"); fi
  deadline=$(( $(date +%s) + timeout_s ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    reply="$(curl -sS "${auth[@]}" -o - -w '\n%{http_code}' --max-time 5 "$url" 2>/dev/null || true)"
    code="${reply##*$'\n'}"
    body="${reply%$'\n'*}"
    if [ "${code:0:1}" = 2 ]; then
      if [ -z "$instance" ] || [[ "$body" == *"\"instance\":\"$instance\""* || "$body" == *"\"instance\": \"$instance\""* ]]; then
        return 0
      fi
      echo "$url answers, but not as the server started here (instance $instance): another process owns the port" >&2
      return 3
    fi
    if [ "$code" = 503 ] && [[ "$body" == *'"status": "loading"'* || "$body" == *'"status":"loading"'* ]] \
        && [ "$body" != "$last" ]; then
      last="$body"
      deadline=$(( $(date +%s) + timeout_s ))
      if [ $(( $(date +%s) - reported )) -ge 30 ]; then echo "[up] $url still loading: $body" >&2; reported=$(date +%s); fi
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "server process $pid exited before $url became healthy" >&2
      return 2
    fi
    sleep 1
  done
  echo "timed out after ${timeout_s}s waiting for $url" >&2
  return 1
}

# port_owner HOST PORT: prints "taken" plus the listening pid/command where ss or lsof can tell, and
# succeeds when something already accepts connections on HOST:PORT.
port_owner() {
  local host="$1" port="$2" owner=""
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null || return 1
  if command -v ss >/dev/null 2>&1; then
    owner="$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1)"
  elif command -v lsof >/dev/null 2>&1; then
    owner="pid=$(lsof -t -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | head -n 1)"
  fi
  echo "${owner:-owner unknown}"
}

# True when a CUDA device is usable by the project's torch.
has_cuda_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
    "$(project_python)" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
