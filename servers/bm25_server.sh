#!/usr/bin/env bash
# BM25 retriever server (BRIGHT's BM25) over one corpus split (foreground; servers/up.sh backgrounds it).
#   servers/bm25_server.sh SPLIT [PORT] [more run_src.serve_retriever flags]
# SPLIT: a BRIGHT split (theoremqa_theorems, aops, ...) or champ (the embedded CHAMP concepts).
# Corpus source: $BRIGHT_DIR (local mirror) or the Hugging Face Hub. Port: $BM25_PORT or 8012.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file
SPLIT="${1:?usage: bm25_server.sh SPLIT [PORT]}"
PORT="${2:-${BM25_PORT:-8012}}"
shift $(( $# < 2 ? $# : 2 ))
cd "$REPO_ROOT"
exec "$(project_python)" -m run_src.serve_retriever --retriever bm25 --split "$SPLIT" \
  --host "${SERVER_HOST:-127.0.0.1}" --port "$PORT" "$@"
