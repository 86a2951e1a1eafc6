#!/usr/bin/env bash
# The embedded default: the whole RaDeR pipeline in miniature, offline, on a CPU.
# Stages that exist today run; the rest are listed with what is still missing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "[demo] preparing embedded assets (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, CHAMP mirror)"
.venv/bin/python -m models.assets

cat <<'MSG'
[demo] Built so far: environment, embedded assets, LLM clients, generator server scripts.
[demo] Not built yet (see the README's stage map): MCTS data generation, query synthesis,
[demo] training-set assembly, LoRA training, evaluation on held-out CHAMP problems.
MSG
