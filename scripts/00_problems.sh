#!/usr/bin/env bash
# Stage 00: the MCTS problem files (python -m run_src.prepare_problems), one per argument set.
#   scripts/00_problems.sh OUTPUT_DIR "--dataset MATH" ["--dataset NUMINA_MATH --limit 10000" ...]
#   MATH_SOURCE=../shared/data/math scripts/00_problems.sh outputs/problems "--dataset MATH"
# Each quoted argument set is one prepare_problems call writing <OUTPUT_DIR>/<DATASET>/<name>.json (stage 2
# reads it with DATA_ROOT=OUTPUT_DIR). Sources: the Hub, or $MATH_SOURCE / $NUMINA_SOURCE (local copies)
# unless the argument set names --source itself. A rerun with the same settings rewrites the same file.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/servers/lib.sh"
stage_setup 00_problems  # .env (the environment wins) and the interpreter, printed

if [ $# -lt 2 ]; then
  echo "usage: $0 OUTPUT_DIR \"--dataset MATH [more prepare_problems flags]\" [...]" >&2
  exit 2
fi
OUTPUT_DIR="$1"
shift
cd "$REPO_ROOT"
for set_args in "$@"; do
  # shellcheck disable=SC2206
  args=($set_args)
  if [[ " $set_args " != *" --source "* ]]; then
    case " $set_args " in
      *" --dataset MATH "*) if [ -n "${MATH_SOURCE:-}" ]; then args+=(--source "$MATH_SOURCE"); fi ;;
      *" --dataset NUMINA_MATH "*) if [ -n "${NUMINA_SOURCE:-}" ]; then args+=(--source "$NUMINA_SOURCE"); fi ;;
    esac
  fi
  "$PY" -m run_src.prepare_problems --output_dir "$OUTPUT_DIR" "${args[@]}"
done
