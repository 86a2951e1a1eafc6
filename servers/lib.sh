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

# The interpreter with the project's packages: $PYTHON, else .venv, else python3.
project_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
  elif [ -x "$REPO_ROOT/.venv/bin/python" ]; then echo "$REPO_ROOT/.venv/bin/python"
  else command -v python3; fi
}

# wait_for_health URL TIMEOUT_S [PID]: poll URL until it answers 2xx; fail on timeout or when PID exits.
wait_for_health() {
  local url="$1" timeout_s="$2" pid="${3:-}" deadline
  deadline=$(( $(date +%s) + timeout_s ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "server process $pid exited before $url became healthy" >&2
      return 2
    fi
    sleep 1
  done
  echo "timed out after ${timeout_s}s waiting for $url" >&2
  return 1
}

# True when a CUDA device is usable by the project's torch.
has_cuda_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
    "$(project_python)" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
