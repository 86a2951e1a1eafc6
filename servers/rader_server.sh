#!/usr/bin/env bash
# RaDeR dense retriever server: a merged RaDeR checkpoint, EOS pooling, "query: "/"document: " + EOS.
#   servers/rader_server.sh MODEL [PORT] [more run_src.serve_retriever flags]
# Corpus: $RADER_CORPUS (default theoremqa_theorems, the MCTS theorem corpus) from $BRIGHT_DIR or the Hub;
# document embeddings are cached under $BRIGHT_CACHE_DIR. Port: $RADER_PORT or 8001.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file
MODEL="${1:?usage: rader_server.sh MODEL [PORT]}"
PORT="${2:-${RADER_PORT:-8001}}"
shift $(( $# < 2 ? $# : 2 ))
cd "$REPO_ROOT"
exec "$(project_python)" -m run_src.serve_retriever --retriever dense --model_path "$MODEL" --text_format rader \
  --split "${RADER_CORPUS:-theoremqa_theorems}" --host "${SERVER_HOST:-127.0.0.1}" --port "$PORT" "$@"
