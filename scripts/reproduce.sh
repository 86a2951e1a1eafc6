#!/usr/bin/env bash
# The paper's recipe, stage by stage: each stage script reads what the previous one wrote under one --out-dir.
#   bash scripts/reproduce.sh --profile paper --out-dir /data/rader           # the GPU reproduction
#   bash scripts/reproduce.sh --profile tiny --out-dir "$(mktemp -d)"          # the same stages in minutes on a CPU
#   bash scripts/reproduce.sh --profile paper --out-dir /data/rader --dry-run  # print and check the chain, run nothing
#   bash scripts/reproduce.sh --profile paper --out-dir /data/rader --from 03 --to 05
#
#   00 problems    scripts/00_problems.sh        MCTS problem files (and a held-out split for CHAMP)
#   01 embeddings  scripts/01_doc_embeddings.sh  the MCTS retriever's theorem-corpus embeddings
#      servers     servers/up.sh                 generator + retriever, before the first of 02/03, stopped after
#   02 mcts        scripts/02_mcts.sh            retrieval-augmented MCTS
#   03 queries     scripts/03_queries.sh         q_llmq / q_CoT / q_question / q_lexical records
#   04 dataset     scripts/04_dataset.sh         the Tevatron training set
#   05 train       scripts/05_train.sh           LoRA training and the merge (servers are stopped by then)
#   06 eval        scripts/06_eval.sh            BRIGHT (and CHAMP) evaluation, hybrid
#   07 tables      scripts/07_tables.sh          the paper's tables next to ours
#
# Profiles (scripts/profiles/<name>.sh) set the stages' settings; any variable they set can be overridden
# from the environment. A stage that finished with the same command is skipped on a rerun (its marker is
# <out-dir>/reproduce/<NN>.done); a stage killed midway is rerun and resumes through its own resume logic.
# Servers started here are stopped at the end, on failure and on Ctrl-C.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
source servers/lib.sh

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
PROFILE="" OUT_ARG="" FROM=00 TO=07 DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --out-dir) OUT_ARG="$2"; shift 2 ;;
    --from) FROM="$2"; shift 2 ;;
    --to) TO="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "[reproduce] unknown argument $1" >&2; usage ;;
  esac
done
STAGES=(00 01 02 03 04 05 06 07)
[ -n "$PROFILE" ] || { echo "[reproduce] --profile is required: $(ls scripts/profiles | sed 's/\.sh$//' | tr '\n' ' ')" >&2; exit 2; }
[ -f "scripts/profiles/$PROFILE.sh" ] || { echo "[reproduce] no profile scripts/profiles/$PROFILE.sh" >&2; exit 2; }
[ -n "$OUT_ARG" ] || { echo "[reproduce] --out-dir is required" >&2; exit 2; }
for bound in "$FROM" "$TO"; do
  [[ " ${STAGES[*]} " == *" $bound "* ]] || { echo "[reproduce] --from/--to take a stage number 00..07, got $bound" >&2; exit 2; }
done
OUT="$(realpath -m "$OUT_ARG")"

stage_setup reproduce
# Every stage's outputs under OUT: embedding caches and BM25 indexes, server pid/log files.
export BRIGHT_CACHE_DIR="$OUT/cache" SERVER_RUN_DIR="$OUT/servers"
# stable_port NAME: a free loopback port for a server of this out-dir, the same one on every rerun (so a
# rerun's commands are the same and finished stages are recognised).
stable_port() {
  local file="$OUT/reproduce/ports/$1"
  if [ -f "$file" ]; then cat "$file"; return; fi
  local port
  port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  if [ "$DRY_RUN" = 0 ]; then mkdir -p "$(dirname "$file")" && echo "$port" > "$file"; fi
  echo "$port"
}
source "scripts/profiles/$PROFILE.sh"
echo "[reproduce] profile $PROFILE ($PROFILE_DESCRIPTION), out-dir $OUT, stages $FROM..$TO$([ "$DRY_RUN" = 1 ] && echo ', dry run')" >&2

# ------------------------------------------------------------------------------------------------ the plan
# plan NN NAME "INPUTS" "OUTPUTS" CMD... : one step. INPUTS are paths an earlier step writes, or ext:THING for
# what the user brings (a model on the Hub, a local mirror); OUTPUTS are the paths this step writes.
PLAN_IDS=() PLAN_NAMES=() PLAN_INPUTS=() PLAN_OUTPUTS=() PLAN_CMDS=()
plan() {
  local id="$1" name="$2" inputs="$3" outputs="$4"; shift 4
  PLAN_IDS+=("$id"); PLAN_NAMES+=("$name"); PLAN_INPUTS+=("$inputs"); PLAN_OUTPUTS+=("$outputs")
  PLAN_CMDS+=("$(printf '%q ' "$@")")
}
in_range() { [[ ! "$1" < "$FROM" && ! "$1" > "$TO" ]]; }

PROBLEM_FILE="$OUT/problems/$MCTS_DATASET/$MCTS_PROBLEMS.json"
MCTS_RUN="$OUT/mcts/$MCTS_DATASET/$(basename "${GENERATOR_MODEL%/}")/$MCTS_RUN_NAME"
QUERIES="$OUT/queries"
TRAIN_FILE="$OUT/train/train.jsonl"
MODEL_DIR="$OUT/model/$MODEL_NAME"

plan 00 problems "$PROBLEM_INPUTS" "$PROBLEM_FILE ${PROBLEM_EXTRA_OUTPUTS:-}" \
  env MATH_SOURCE="${MATH_SOURCE:-}" bash scripts/00_problems.sh "$OUT/problems" "${PROBLEM_SETS[@]}"
if [ "$MCTS_RETRIEVER" != bm25 ]; then
  plan 01 embeddings "ext:$RETRIEVER_MODEL" "$OUT/cache/doc_emb" \
    env BRIGHT_DIR="$CORPUS_SOURCE" TEXT_FORMAT="$RETRIEVER_TEXT_FORMAT" \
    bash scripts/01_doc_embeddings.sh "$RETRIEVER_MODEL" "$CORPUS_SPLIT"
fi
mcts_inputs="$PROBLEM_FILE"
if [ "$MCTS_RETRIEVER" != bm25 ]; then mcts_inputs+=" $OUT/cache/doc_emb"; fi
plan 02 mcts "$mcts_inputs" "$MCTS_RUN" \
  env START_SERVERS=0 DATASET="$MCTS_DATASET" TEST_JSON="$MCTS_PROBLEMS" DATA_ROOT="$OUT/problems" \
  RETRIEVER="$MCTS_RETRIEVER" CORPUS_SPLIT="$CORPUS_SPLIT" RUN_NAME="$MCTS_RUN_NAME" RUN_OUTPUTS_ROOT="$OUT/mcts" \
  NUM_ROLLOUTS="$NUM_ROLLOUTS" NUM_WORKERS="$NUM_WORKERS" GENERATOR_URL="$GENERATOR_URL" \
  REPLLAMA_URL="$RETRIEVER_URL" RADER_URL="$RETRIEVER_URL" BM25_URL="$RETRIEVER_URL" \
  bash scripts/02_mcts.sh "$GENERATOR_MODEL" --generator_urls "$GENERATOR_URL" "${MCTS_ARGS[@]}"
plan 03 queries "$MCTS_RUN" "$QUERIES" \
  env QUERY_TYPES="$QUERY_TYPES" TRAJECTORY_FILTER="$TRAJECTORY_FILTER" GENERATOR_URL="$GENERATOR_URL" \
  GENERATOR_MODEL="$GENERATOR_MODEL" DENSE_URL="$DENSE_URL" DENSE_MODEL_PATH="$DENSE_MODEL_PATH" \
  DENSE_TEXT_FORMAT="$DENSE_TEXT_FORMAT" SEED="$SEED" QUERY_ARGS="$QUERY_ARGS" \
  bash scripts/03_queries.sh "$QUERIES" "$MCTS_RUN"
plan 04 dataset "$QUERIES" "$TRAIN_FILE" \
  env QUERY_TYPES="$QUERY_TYPES" SEED="$SEED" DATASET_ARGS="$DATASET_ARGS" bash scripts/04_dataset.sh "$TRAIN_FILE" "$QUERIES"
plan 05 train "$TRAIN_FILE" "$MODEL_DIR-merged" \
  env CONFIG="$TRAIN_CONFIG" TRAIN_GPUS="$TRAIN_GPUS" KEEP_PAPER_GLOBAL_BATCH="$KEEP_PAPER_GLOBAL_BATCH" \
  MERGE_DTYPE="$MERGE_DTYPE" bash scripts/05_train.sh "$TRAIN_FILE" "$MODEL_DIR" "${TRAIN_ARGS[@]}"
eval_outputs=""
# KEY|MODEL_PATH|RUN_NAME|BRIGHT_DIR|TASKS|QUERY_TYPES|HYBRID|EVAL_ARGS[|RERANK]: RERANK (llm or pointwise) also
# reranks the sweep's runs with the profile's RERANK_MODEL, RERANK_BASE_URL and RERANK_ARGS (scripts/06_eval.sh).
for sweep in "${EVAL_SWEEPS[@]}"; do
  IFS='|' read -r key path run bright tasks query_types hybrid eval_args rerank <<< "$sweep"
  rerank_env=()
  if [ -n "$rerank" ]; then
    rerank_env=(RERANK="$rerank" RERANK_MODEL="${RERANK_MODEL:-}" RERANK_BASE_URL="${RERANK_BASE_URL:-}"
                RERANK_ARGS="${RERANK_ARGS:-}")
  fi
  inputs=""
  for thing in "$path" "$bright"; do
    if [ -z "$thing" ] || [ "$thing" = hf ]; then continue; fi
    if [[ "$thing" == "$OUT"* ]]; then inputs+=" $thing"; else inputs+=" ext:$thing"; fi
  done
  plan 06 "eval $run" "$inputs" "$OUT/bright/$run" \
    env BRIGHT_DIR="$bright" TASKS="$tasks" QUERY_TYPES="$query_types" HYBRID="$hybrid" RUN_NAME="$run" \
    OUTPUT_DIR="$OUT/bright" EVAL_ARGS="$eval_args" "${rerank_env[@]}" bash scripts/06_eval.sh "$key" ${path:+"$path"}
  eval_outputs+=" $OUT/bright/$run"
done
plan 07 tables "$eval_outputs" "$OUT/tables" \
  env RESULTS_ROOT="$OUT/bright" TABLES_DIR="$OUT/tables" bash scripts/07_tables.sh

# ------------------------------------------------------------------------------------------------ servers
SERVERS_NEEDED=0
for id in 02 03; do if in_range "$id"; then SERVERS_NEEDED=1; fi; done
LAST_SERVER_STAGE="$( in_range 03 && echo 03 || echo 02 )"
started_servers=0
servers_up() {
  [ "$SERVERS_NEEDED" = 1 ] && [ "$started_servers" = 0 ] || return 0
  local spec name gpus
  for spec in "${SERVERS[@]}"; do  # NAME=ARG,PORT[,more flags]|GPUS
    name="${spec%%=*}"; gpus="${spec##*|}"; spec="${spec%|*}"
    echo "[reproduce] server $name on GPU(s) ${gpus:-none}: $spec" >&2
    if [ "$DRY_RUN" = 1 ]; then continue; fi
    if [ -n "$gpus" ] && [ "$gpus" != none ]; then
      CUDA_VISIBLE_DEVICES="$gpus" bash servers/up.sh --timeout "$SERVER_TIMEOUT_S" --run-dir "$SERVER_RUN_DIR" "$spec"
    else
      bash servers/up.sh --timeout "$SERVER_TIMEOUT_S" --run-dir "$SERVER_RUN_DIR" "$spec"
    fi
  done
  started_servers=1
}
servers_down() {
  if [ "$started_servers" = 1 ]; then
    echo "[reproduce] stopping the servers (training needs their GPUs)" >&2
    if [ "$DRY_RUN" = 0 ]; then bash servers/down.sh --run-dir "$SERVER_RUN_DIR" >&2 || true; fi
  fi
  started_servers=0
}
trap 'servers_down' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------------ run or check
first_producer() {  # the stage number that lists $1 among its outputs
  local j
  for j in "${!PLAN_IDS[@]}"; do if [[ " ${PLAN_OUTPUTS[$j]} " == *" $1 "* ]]; then echo "${PLAN_IDS[$j]}"; return; fi; done
}
missing=0
mkdir_markers() { [ "$DRY_RUN" = 1 ] || mkdir -p "$OUT/reproduce"; }
mkdir_markers
for i in "${!PLAN_IDS[@]}"; do
  id="${PLAN_IDS[$i]}" name="${PLAN_NAMES[$i]}" cmd="${PLAN_CMDS[$i]}"
  if in_range "$id"; then
    for input in ${PLAN_INPUTS[$i]}; do
      if [[ "$input" == ext:* ]]; then echo "[reproduce] $id input $input (brought by the user)" >&2; continue; fi
      producer="$(first_producer "$input")"
      if [ -e "$input" ]; then
        echo "[reproduce] $id input $input (present)" >&2
      elif [ "$DRY_RUN" = 1 ] && [ -n "$producer" ] && [[ "$producer" < "$id" ]] && ! [[ "$producer" < "$FROM" ]]; then
        echo "[reproduce] $id input $input (written by stage $producer)" >&2
      else
        echo "[reproduce] $id input $input is missing: no earlier stage of this run writes it${producer:+ (stage $producer does: run it first)}" >&2
        missing=1
      fi
    done
    if [ "$missing" = 1 ] && [ "$DRY_RUN" = 0 ]; then exit 2; fi
  fi
  in_range "$id" || continue
  marker="$OUT/reproduce/$id-$i-${name// /_}.done"
  if [ "$DRY_RUN" = 0 ] && [ -f "$marker" ] && [ "$(head -n 1 "$marker")" = "$cmd" ]; then
    echo "[reproduce] $id $name finished in an earlier run with this command; skipped" >&2
    continue
  fi
  if [[ "$id" == 02 || "$id" == 03 ]]; then servers_up; fi
  if [[ "$id" > "$LAST_SERVER_STAGE" ]]; then servers_down; fi
  echo "[reproduce] $id $name: $cmd" >&2
  if [ "$DRY_RUN" = 1 ]; then continue; fi
  started=$(date +%s)
  eval "$cmd"
  printf '%s\n%s\n' "$cmd" "$(( $(date +%s) - started ))" > "$marker"
  echo "[reproduce] $id $name done in $(( $(date +%s) - started )) s" >&2
done
servers_down
if [ "$missing" = 1 ]; then echo "[reproduce] the chain is not closed (see above)" >&2; exit 2; fi
if [ "$DRY_RUN" = 1 ]; then echo "[reproduce] dry run: the chain is closed; nothing was run" >&2; exit 0; fi
echo "[reproduce] finished: tables in $OUT/tables" >&2
