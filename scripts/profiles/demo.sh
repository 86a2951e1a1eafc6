# What `bash scripts/demo.sh` runs (DESIGN.md §4): the pipeline in miniature on CHAMP, offline, on a CPU.
# A seeded split holds DEMO_HELDOUT problems out of MCTS, query synthesis and training; BM25 serves the
# MCTS; SmolLM2-135M generates; all four query types; LoRA training of RaDeR-SmolLM2; BM25, MiniLM, base
# SmolLM2 and the trained model on the held-out problems. scripts/demo.sh sets the DEMO_* variables from
# its flags and writes the comparison table and chart afterwards.
PROFILE_DESCRIPTION="demo: CHAMP split, BM25 MCTS, SmolLM2, four retrievers on held-out problems"

SMOLLM2="${SMOLLM2:-$("$PY" -c 'from models.embedded.assets import prepare_smollm2; print(prepare_smollm2())')}"
MINILM="${MINILM:-$("$PY" -c 'from models.embedded.assets import minilm_path; print(minilm_path())')}"
CHAMP_MIRROR="${CHAMP_MIRROR:-$("$PY" -c 'from models.embedded.champ import prepare_champ_mirror; print(prepare_champ_mirror())')}"
SEED="${SEED:-42}"
TINY_SEARCH="${DEMO_TINY_SEARCH:-0}"

PROBLEM_SETS=("--dataset CHAMP --heldout ${DEMO_HELDOUT:-60} --limit ${DEMO_PROBLEMS:-6} --seed $SEED")
PROBLEM_INPUTS=""
MCTS_DATASET=CHAMP
MCTS_PROBLEMS=train_pool
PROBLEM_EXTRA_OUTPUTS="$OUT/problems/CHAMP/heldout_mirror"  # the held-out evaluation problems

MCTS_RETRIEVER=bm25
RETRIEVER_MODEL=""
RETRIEVER_TEXT_FORMAT=""
CORPUS_SOURCE="$CHAMP_MIRROR"
CORPUS_SPLIT=champ
BM25_PORT="${BM25_PORT:-$(stable_port bm25)}"
RETRIEVER_URL="http://127.0.0.1:$BM25_PORT"
SERVERS=("bm25=champ,$BM25_PORT|none")
if [ -n "${DEMO_GENERATOR_URL:-}" ]; then  # a stronger generator the user already runs
  GENERATOR_MODEL="${DEMO_MODEL:?--generator-url needs --model}"
  GENERATOR_URL="$DEMO_GENERATOR_URL"
else
  GENERATOR_MODEL="$SMOLLM2"
  GENERATOR_PORT="${GENERATOR_PORT:-$(stable_port generator)}"
  GENERATOR_URL="http://127.0.0.1:$GENERATOR_PORT/v1"
  SERVERS=("generator=$SMOLLM2,$GENERATOR_PORT|$([ "${DEMO_DEVICE:-cpu}" = cuda ] && echo 0 || echo none)" "${SERVERS[@]}")
fi
SERVER_TIMEOUT_S="${SERVER_TIMEOUT_S:-900}"
export BRIGHT_DIR="$CHAMP_MIRROR"

MCTS_RUN_NAME=demo
NUM_ROLLOUTS="${DEMO_ROLLOUTS:-2}"
NUM_WORKERS="${DEMO_WORKERS:-8}"
if [ "$TINY_SEARCH" = 1 ]; then  # the CI size: sure to reach a retrieval in 3 rollouts
  MCTS_ARGS=(--max_depth_allowed 3 --num_a1_steps 1 --mcts_num_last_votes 1)
else
  MCTS_ARGS=(--max_depth_allowed 4 --num_a1_steps 2 --mcts_num_last_votes 2)
fi
# No LLM judge here (the paper profile turns it on): SmolLM2-135M's yes/no on answer equivalence is noise.
# CPU-sized generations: SmolLM2 rambles to the limit, and every token costs ~10 ms here.
MCTS_ARGS+=(--topk_rt 3 --seed "$SEED" --max_tokens 128 --ost_max_tokens 64 --qg_max_tokens 192
            --summary_max_tokens 64 --reflection_max_tokens 48)
# The few-shot examples as chat turns: SmolLM2-135M ignores the format of one long user message (10 CHAMP
# problems, 4 rollouts: 31/33 self-reflections unreadable, 1 accepted theorem) and follows it as turns
# (1/54 unreadable, 23 accepted). The paper profile keeps the published single-message shape.
MCTS_ARGS+=(--prompt_shape chat_turns)

QUERY_TYPES="llmq cot question lexical"
TRAJECTORY_FILTER="$([ "${DEMO_PAPER_FILTER:-0}" = 1 ] && echo correct || echo self_reflection_passed)"
DENSE_URL=""
DENSE_MODEL_PATH="$MINILM"
DENSE_TEXT_FORMAT=plain
QUERY_ARGS="--llmq_max_tokens 96 --lexical_max_tokens 64 --samples_per_node lexical=3"
DATASET_ARGS="--min_negatives 1"

MODEL_NAME="lora"
TRAIN_CONFIG=tevatron_configs/smollm2-135m-cpu.json
TRAIN_GPUS="$([ "${DEMO_DEVICE:-cpu}" = cuda ] && echo 0 || echo none)"
KEEP_PAPER_GLOBAL_BATCH=0
MERGE_DTYPE=float32
TRAIN_ARGS=(--model_name_or_path "$SMOLLM2" --max_steps "${DEMO_TRAIN_STEPS:-24}" --seed "$SEED")
if [ "${DEMO_DEVICE:-cpu}" = cuda ]; then TRAIN_ARGS+=(--use_cpu false); fi
export PAPER_TRAIN_GPUS=1  # the demo's recipe is sized for one device: no global-batch warning

HELDOUT_MIRROR="$OUT/problems/CHAMP/heldout_mirror"
DENSE_EVAL_ARGS="--device ${DEMO_DEVICE:-cpu}"
EVAL_SWEEPS=("bm25||bm25|$HELDOUT_MIRROR|champ|original||"
             "minilm||minilm|$HELDOUT_MIRROR|champ|original||$DENSE_EVAL_ARGS"
             "rader|$SMOLLM2|smollm2-base|$HELDOUT_MIRROR|champ|original||$DENSE_EVAL_ARGS"
             "rader|$OUT/model/$MODEL_NAME-merged|rader-smollm2|$HELDOUT_MIRROR|champ|original||$DENSE_EVAL_ARGS")
