#!/usr/bin/env bash
# Start a set of servers in the background and wait until each answers its health endpoint.
#   servers/up.sh [--timeout SECONDS] [--run-dir DIR] NAME[=ARG[,PORT[,MORE...]]] ...
# NAME is one of: generator embedding bm25 repllama rader (runs servers/NAME_server.sh ARG PORT MORE...).
# PORT defaults to $<NAME>_PORT or the standard port (generator 8010, embedding 8002, bm25 8012,
# repllama 8011, rader 8001).
# Writes DIR/NAME.pid, DIR/NAME.log and DIR/NAME.url (DIR = $SERVER_RUN_DIR or .cache/servers).
# A server already running and healthy is reused. If any server fails to come up, every server
# started by this call is stopped and the exit code is non-zero. Stop them with servers/down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file

timeout_s="${SERVER_START_TIMEOUT_S:-600}"
run_dir="${SERVER_RUN_DIR:-$REPO_ROOT/.cache/servers}"
specs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s="$2"; shift 2 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) specs+=("$1"); shift ;;
  esac
done
[ ${#specs[@]} -gt 0 ] || { echo "usage: servers/up.sh [--timeout S] [--run-dir DIR] NAME[=ARG[,PORT]] ..." >&2; exit 2; }
mkdir -p "$run_dir"
host="${SERVER_HOST:-127.0.0.1}"

default_port() {
  case "$1" in
    generator) echo "${GENERATOR_PORT:-8010}" ;;
    embedding) echo "${EMBEDDING_PORT:-8002}" ;;
    bm25) echo "${BM25_PORT:-8012}" ;;
    repllama) echo "${REPLLAMA_PORT:-8011}" ;;
    rader) echo "${RADER_PORT:-8001}" ;;
    *) echo "unknown server name '$1' (expected generator, embedding, bm25, repllama or rader)" >&2; return 2 ;;
  esac
}

started=()
cleanup_started() {
  for name in "${started[@]}"; do "$SERVERS_DIR/down.sh" --run-dir "$run_dir" "$name" || true; done
}
trap 'echo "interrupted: stopping servers started here" >&2; cleanup_started; exit 130' INT TERM

names=(); pids=(); urls=(); instances=()
for spec in "${specs[@]}"; do
  name="${spec%%=*}"
  IFS=',' read -r -a args <<< "$( [ "$spec" = "$name" ] && echo "" || echo "${spec#*=}")"
  port="$(default_port "$name")" || { cleanup_started; exit 2; }
  if [ ${#args[@]} -ge 2 ] && [ -n "${args[1]}" ]; then port="${args[1]}"; else
    if [ ${#args[@]} -eq 0 ]; then args=(""); fi
    args=("${args[0]}" "$port" "${args[@]:2}"); fi
  [ -n "${args[0]}" ] || { echo "server '$name' needs an argument: $name=MODEL_OR_CORPUS[,PORT]" >&2; cleanup_started; exit 2; }
  url="http://$host:$port/health"
  pid_file="$run_dir/$name.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    if wait_for_health "$url" 5 "$(cat "$pid_file")" 2>/dev/null; then
      echo "[up] $name already running (pid $(cat "$pid_file")) and healthy at $url" >&2
      continue
    fi
    echo "[up] $name has a live pid $(cat "$pid_file") but $url is not healthy; stop it with servers/down.sh $name" >&2
    cleanup_started; exit 1
  fi
  if owner="$(port_owner "$host" "$port")"; then
    echo "[up] cannot start $name: port $port on $host is already taken ($owner); stop that process or pick another port ($name=...,PORT)" >&2
    cleanup_started; exit 1
  fi
  log_file="$run_dir/$name.log"
  echo "[up] starting $name: servers/${name}_server.sh ${args[*]} (log: $log_file)" >&2
  # Retriever servers report this id on /health, so up.sh knows the answer comes from the process it started.
  instance="$name-$$-$RANDOM$RANDOM"
  case "$name" in generator|embedding) instance_check="" ;; *) instance_check="$instance" ;; esac
  # setsid: the server gets its own process group, so down.sh stops it with all its children.
  SERVER_INSTANCE_ID="$instance" setsid bash "$SERVERS_DIR/${name}_server.sh" "${args[@]}" > "$log_file" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pid_file"
  echo "$url" > "$run_dir/$name.url"
  started+=("$name"); names+=("$name"); pids+=("$pid"); urls+=("$url"); instances+=("$instance_check")
done

for i in "${!names[@]}"; do
  start=$(date +%s)
  if ! wait_for_health "${urls[$i]}" "$timeout_s" "${pids[$i]}" "${instances[$i]}"; then
    echo "[up] ${names[$i]} failed to become healthy; last lines of its log:" >&2
    tail -n 40 "$run_dir/${names[$i]}.log" >&2 || true
    cleanup_started
    exit 1
  fi
  echo "[up] ${names[$i]} healthy at ${urls[$i]} after $(( $(date +%s) - start )) s" >&2
done
