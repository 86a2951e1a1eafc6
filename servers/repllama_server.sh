#!/usr/bin/env bash
# RepLLaMA-style dense retriever server (merged RepLLaMA checkpoint, EOS pooling, Tevatron prefixes).
#   servers/repllama_server.sh MODEL [PORT] [more run_src.serve_retriever flags]
# Corpus: $REPLLAMA_CORPUS (default theoremqa_theorems) from $BRIGHT_DIR or the Hub. Port: $REPLLAMA_PORT or 8011.
# The reference evaluation used "Query: "/"Document: "; pass --text_format repllama_ref_eval for that.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env_file
MODEL="${1:?usage: repllama_server.sh MODEL [PORT]}"
PORT="${2:-${REPLLAMA_PORT:-8011}}"
shift $(( $# < 2 ? $# : 2 ))
cd "$REPO_ROOT"
exec "$(project_python)" -m run_src.serve_retriever --retriever dense --model_path "$MODEL" --text_format repllama \
  --split "${REPLLAMA_CORPUS:-theoremqa_theorems}" --host "${SERVER_HOST:-127.0.0.1}" --port "$PORT" "$@"
