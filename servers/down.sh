#!/usr/bin/env bash
# Stop servers started by servers/up.sh (all of them when no NAME is given).
#   servers/down.sh [--run-dir DIR] [NAME ...]
# Sends SIGTERM to each server's process group, waits up to $SERVER_STOP_TIMEOUT_S (30) seconds,
# then SIGKILL. Removes the pid file. Exits 0 when nothing is left running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run_dir="${SERVER_RUN_DIR:-$REPO_ROOT/.cache/servers}"
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) run_dir="$2"; shift 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
if [ ${#names[@]} -eq 0 ]; then
  shopt -s nullglob
  for f in "$run_dir"/*.pid; do names+=("$(basename "$f" .pid)"); done
fi
stop_timeout="${SERVER_STOP_TIMEOUT_S:-30}"

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

for name in "${names[@]}"; do
  pid_file="$run_dir/$name.pid"
  [ -f "$pid_file" ] || { echo "[down] $name: no pid file in $run_dir" >&2; continue; }
  pid="$(cat "$pid_file")"
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + stop_timeout ))
    while group_alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
    if group_alive "$pid"; then
      echo "[down] $name (pid $pid) ignored SIGTERM for ${stop_timeout}s; sending SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    echo "[down] stopped $name (pid $pid)" >&2
  fi
  rm -f "$pid_file" "$run_dir/$name.url"
done
