# The paper's stages with CPU stand-ins, minutes on 2 cores (what CI runs): SmolLM2-135M-Instruct as the
# generator and as the RepLLaMA-style MCTS retriever, the CHAMP problems in place of MATH and CHAMP's
# concepts in place of the theorem corpus, a few MATH-format problems prepared from a local mirror, four
# LoRA steps, and evaluation on held-out CHAMP problems and on a BRIGHT-style fixture, with the tables.
# SmolLM2 never reaches CHAMP's gold answers, so trajectories are kept when a retrieval passed
# self-reflection (the paper keeps correct ones).
PROFILE_DESCRIPTION="tiny: SmolLM2-135M and CHAMP on CPU, a few minutes"

SMOLLM2="${SMOLLM2:-$("$PY" -c 'from models.embedded.assets import prepare_smollm2; print(prepare_smollm2())')}"
CHAMP_MIRROR="${CHAMP_MIRROR:-$("$PY" -c 'from models.embedded.champ import prepare_champ_mirror; print(prepare_champ_mirror())')}"
MATH_SOURCE="${MATH_SOURCE:-$REPO_ROOT/tests/resources/math_mini}"

# 00: CHAMP split (20 held out for evaluation, 2 searched) and a few MATH problems from the local mirror.
PROBLEM_SETS=("--dataset CHAMP --heldout 20 --limit 2 --seed ${SEED:-42}" "--dataset MATH --limit 4 --seed ${SEED:-42}")
PROBLEM_INPUTS="ext:$MATH_SOURCE"
MCTS_DATASET=CHAMP
MCTS_PROBLEMS=train_pool
PROBLEM_EXTRA_OUTPUTS="$OUT/problems/CHAMP/heldout_mirror"  # the held-out evaluation problems

# 01 + 02: SmolLM2 with RepLLaMA's text format as the dense retriever over the CHAMP concepts.
MCTS_RETRIEVER=repllama
RETRIEVER_MODEL="$SMOLLM2"
RETRIEVER_TEXT_FORMAT=repllama
CORPUS_SOURCE="$CHAMP_MIRROR"
CORPUS_SPLIT=champ

GENERATOR_MODEL="$SMOLLM2"
GENERATOR_PORT="${GENERATOR_PORT:-$(stable_port generator)}"
RETRIEVER_PORT="${RETRIEVER_PORT:-$(stable_port retriever)}"
GENERATOR_URL="${TINY_GENERATOR_URL:-http://127.0.0.1:$GENERATOR_PORT/v1}"
RETRIEVER_URL="http://127.0.0.1:$RETRIEVER_PORT"
SERVERS=("repllama=$SMOLLM2,$RETRIEVER_PORT,--text_format,repllama|none")
# A generator already serving SmolLM2 (TINY_GENERATOR_URL, e.g. the test session's) is used as it is.
if [ -z "${TINY_GENERATOR_URL:-}" ]; then SERVERS=("generator=$SMOLLM2,$GENERATOR_PORT|none" "${SERVERS[@]}"); fi
SERVER_TIMEOUT_S="${SERVER_TIMEOUT_S:-900}"
export BRIGHT_DIR="$CHAMP_MIRROR" REPLLAMA_CORPUS=champ

# 02: a search that is sure to reach a retrieval: one thought and one completion per expansion, depth 3.
MCTS_RUN_NAME=tiny
NUM_ROLLOUTS=3
NUM_WORKERS=2
# No LLM judge here (the paper profile turns it on): SmolLM2-135M's yes/no on answer equivalence is noise.
MCTS_ARGS=(--max_depth_allowed 3 --num_a1_steps 1 --mcts_num_last_votes 1 --topk_rt 3 --max_tokens 128
           --ost_max_tokens 64 --qg_max_tokens 160 --summary_max_tokens 48 --reflection_max_tokens 40
           --seed "${SEED:-42}")
# The few-shot examples as chat turns: SmolLM2-135M ignores the format of one long user message (10 CHAMP
# problems, 4 rollouts: 31/33 self-reflections unreadable, 1 accepted theorem) and follows it as turns
# (1/54 unreadable, 23 accepted). The paper profile keeps the published single-message shape.
MCTS_ARGS+=(--prompt_shape chat_turns)

# 03 + 04: the paper's query types; lexical negatives from BM25 and the SmolLM2 retriever server.
QUERY_TYPES="llmq cot lexical"
TRAJECTORY_FILTER=self_reflection_passed
DENSE_URL="$RETRIEVER_URL"
DENSE_MODEL_PATH=""
DENSE_TEXT_FORMAT=repllama
SEED="${SEED:-42}"
QUERY_ARGS="--llmq_max_tokens 64 --lexical_max_tokens 48 --samples_per_node lexical=2"
DATASET_ARGS=""

# 05: four LoRA steps on SmolLM2 in one CPU process.
MODEL_NAME="rader-smollm2"
TRAIN_CONFIG=tevatron_configs/smollm2-135m-cpu.json
TRAIN_GPUS=none
KEEP_PAPER_GLOBAL_BATCH=0
MERGE_DTYPE=float32
TRAIN_ARGS=(--model_name_or_path "$SMOLLM2" --max_steps 4 --seed "${SEED:-42}")

# 06: the trained model and BM25 on the held-out CHAMP problems and on a BRIGHT-style fixture.
HELDOUT_MIRROR="$OUT/problems/CHAMP/heldout_mirror"
FIXTURE="$REPO_ROOT/tests/resources/bright_mini"
EVAL_SWEEPS=("rader|$OUT/model/$MODEL_NAME-merged|$MODEL_NAME|$HELDOUT_MIRROR|champ|original||--encode_batch_size 8"
             "rader|$OUT/model/$MODEL_NAME-merged|$MODEL_NAME|$FIXTURE|theoremqa_theorems biology|original gpt4_reason||--encode_batch_size 8"
             "bm25||bm25|$FIXTURE|theoremqa_theorems biology|original gpt4_reason||")
