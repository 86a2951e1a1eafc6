# The paper's configuration (Table 8 for the MCTS, Table 10 for training, Tables 1-2 for evaluation):
# the RaDeR Qwen2.5-7B-Instruct retriever trained on MATH with q_llmq + q_CoT + q_lexical (Table 1: 24.6 on
# the original queries). Needs GPUs: the generator on GENERATOR_GPUS, the RepLLaMA retriever on
# RETRIEVER_GPUS, both stopped before training on TRAIN_GPUS (the paper's 2 GPUs; another count keeps the
# global batch through gradient accumulation, with a warning). Every setting can be overridden from the
# environment, e.g. RETRIEVER_MODEL=/models/repllama-merged GENERATOR_GPUS=0 RETRIEVER_GPUS=1 TRAIN_GPUS=0,1.
PROFILE_DESCRIPTION="paper: Qwen2.5-7B-Instruct on MATH, RepLLaMA MCTS retriever, 2 training GPUs, BRIGHT 12 splits"

# 00 problems: the 7,500 MATH training problems, shuffled (MATH_SOURCE: a local copy instead of the Hub).
PROBLEM_SETS=("--dataset MATH --seed ${SEED:-42}")
PROBLEM_INPUTS="ext:${MATH_SOURCE:-hf:EleutherAI/hendrycks_math}"
MCTS_DATASET=MATH
MCTS_PROBLEMS=shuffled_train

# 01 + 02: RepLLaMA over BRIGHT's TheoremQA theorems (spec mcts.md §3); a merged RepLLaMA checkpoint or a
# LoRA adapter directory (e.g. a local copy of castorini/repllama-v1-7b-lora-passage).
MCTS_RETRIEVER=repllama
RETRIEVER_MODEL="${RETRIEVER_MODEL:-${REPLLAMA_MODEL_PATH:-castorini/repllama-v1-7b-lora-passage}}"
RETRIEVER_TEXT_FORMAT=repllama
CORPUS_SOURCE="${BRIGHT_DIR:-hf}"
CORPUS_SPLIT=theoremqa_theorems

# servers: generator and retriever on their own GPUs (vLLM takes all memory of its GPU).
GENERATOR_MODEL="${GENERATOR_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
GENERATOR_GPUS="${GENERATOR_GPUS:-0}"
RETRIEVER_GPUS="${RETRIEVER_GPUS:-1}"
GENERATOR_PORT="${GENERATOR_PORT:-8010}"
RETRIEVER_PORT="${RETRIEVER_PORT:-8011}"
GENERATOR_URL="http://127.0.0.1:$GENERATOR_PORT/v1"
RETRIEVER_URL="http://127.0.0.1:$RETRIEVER_PORT"
SERVERS=("generator=$GENERATOR_MODEL,$GENERATOR_PORT|$GENERATOR_GPUS"
         "repllama=$RETRIEVER_MODEL,$RETRIEVER_PORT|$RETRIEVER_GPUS")
SERVER_TIMEOUT_S="${SERVER_TIMEOUT_S:-1800}"

# 02: Table 8 (depth 6, two one-step thoughts, 16 rollouts, candidate-theorem queries, self-reflection,
# gold-answer rewards) at the paper's concurrency (--num_workers 10 x --num_cpu 16 = 160 searches).
MCTS_RUN_NAME="${MCTS_RUN_NAME:-math}"
NUM_ROLLOUTS="${NUM_ROLLOUTS:-16}"
NUM_WORKERS="${NUM_WORKERS:-160}"
# The LLM judge grades boxed answers the symbolic checks reject (spec §10.5; it sees the question, the
# completion and the gold answer). The CPU profiles leave it off: SmolLM2's verdicts would be noise.
MCTS_ARGS=(--max_concurrency "$NUM_WORKERS" --llm_judge)  # as many requests in flight as searches

# 03 + 04: the query types of Table 1's RaDeR row; lexical negatives from BM25 and the RepLLaMA server.
QUERY_TYPES="${QUERY_TYPES:-llmq cot lexical}"
TRAJECTORY_FILTER=correct
DENSE_URL="$RETRIEVER_URL"
DENSE_MODEL_PATH=""
DENSE_TEXT_FORMAT=repllama
SEED="${SEED:-42}"
# Table 9's mix: q_llmq once per trajectory through its node, q_CoT merged by text, q_question once per node
# (the defaults), and three lexical samples per positive so q_lexical outnumbers q_CoT as in Table 9;
# queries/summary.json compares the produced shares with the paper's.
QUERY_ARGS="--samples_per_node lexical=3"
DATASET_ARGS=""

# 05: Table 10 (LoRA r16/alpha64, batch 2 x accumulation 16 x 2 GPUs, group 12, lr 1e-4, one epoch, ZeRO-3).
MODEL_NAME="rader-qwen2.5-7b"
TRAIN_CONFIG=tevatron_configs/qwen2.5-7b-instruct.json
TRAIN_GPUS="${TRAIN_GPUS:-0,1}"
KEEP_PAPER_GLOBAL_BATCH="${KEEP_PAPER_GLOBAL_BATCH:-1}"
MERGE_DTYPE=bfloat16
TRAIN_ARGS=()

# 06: BRIGHT's 12 splits, original and GPT-4 reasoning queries, dense and BM25 hybrid (Tables 1 and 2).
# Table 2's "+QwenRerank (top-100)" reranks the hybrid's top 100 of the GPT-4 reasoning queries with
# Qwen2.5-32B-Instruct in the published reranker's style (zero-shot split prompts, sampling 0.6/0.9, two-character
# parser, 0.5/0.5 mix with the hybrid: run_src.rerank --rerank_style published, spec evaluation.md §5.3). It is
# on with QWEN_RERANK=1 only: the chain starts no server for it, so serve RERANK_MODEL at RERANK_BASE_URL first,
# e.g. CUDA_VISIBLE_DEVICES=0,1 GENERATOR_EXTRA_ARGS="--tensor-parallel-size 2" GENERATOR_MAX_MODEL_LEN=16384 \
#      bash servers/up.sh generator=Qwen/Qwen2.5-32B-Instruct,8013
QWEN_RERANK="${QWEN_RERANK:-}"
RERANK_MODEL="${RERANK_MODEL:-Qwen/Qwen2.5-32B-Instruct}"
RERANK_BASE_URL="${RERANK_BASE_URL:-http://127.0.0.1:8013/v1}"
RERANK_ARGS="--rerank_style published${RERANK_ARGS:+ $RERANK_ARGS}"  # flags given in RERANK_ARGS come later and win
BRIGHT_SPLITS_ALL="biology earth_science economics psychology robotics stackoverflow sustainable_living leetcode pony aops theoremqa_questions theoremqa_theorems"
EVAL_SWEEPS=("rader|$OUT/model/$MODEL_NAME-merged|$MODEL_NAME|${BRIGHT_DIR:-hf}|$BRIGHT_SPLITS_ALL|original gpt4_reason|auto||${QWEN_RERANK:+llm}"
             "bm25||bm25|${BRIGHT_DIR:-hf}|$BRIGHT_SPLITS_ALL|original gpt4_reason||")
