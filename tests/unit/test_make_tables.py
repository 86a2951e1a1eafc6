"""Paper tables from a hand-made results tree: cells, "–" for gaps, averages, Δ, PNGs, and the stored paper numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.retrieval.corpus import BRIGHT_SPLITS
from run_src.make_tables import PAPER_RESULTS_PATH, collect_results, load_paper_results, main

# Our 'rader-qwen2.5-7b' runs record the recipe of the paper's "RaDeR Qwen2.5-7B-instruct (MATH, llmq+CoT+lexical)" row.
RADER = "rader-qwen2.5-7b"
RECIPES = {RADER: "rader-qwen2.5-7b-math-llmq-cot-lexical"}
OTHER = "my-baseline"  # unmapped: no paper row
# Table 1 paper cells of the RaDeR row (spec §9.1): Bio 25.4, Earth 30.0, ..., TheoT 44.4, printed Avg 24.6.
RADER_T1 = [25.4, 30.0, 16.7, 25.3, 14.0, 21.3, 16.3, 37.0, 8.2, 15.7, 42.7, 44.4]


def _write(root: Path, model: str, query_type: str, task: str, ndcg: float) -> None:
    run_dir = root / model / query_type / task
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"NDCG@10": ndcg, "Recall@100": 0.5, "MRR": 0.4}))
    record = {"stage": "evaluate_bright", "settings": {"model": "rader"}, "derived": {"recipe": RECIPES.get(model)}}
    (run_dir / "config.json").write_text(json.dumps(record))


@pytest.fixture()
def results_root(tmp_path: Path) -> Path:
    """RaDeR: all 12 original splits, 10 gpt4_reason splits; baseline: 3 original splits; both on champ."""
    root = tmp_path / "bright"
    for i, split in enumerate(BRIGHT_SPLITS):
        _write(root, RADER, "original", split, round(0.2 + 0.01 * i, 5))  # 20.0, 21.0, ..., 31.0
    for split in BRIGHT_SPLITS[:10]:
        _write(root, RADER, "gpt4_reason", split, 0.3)
    _write(root, OTHER, "original", "biology", 0.12345)
    _write(root, OTHER, "original", "leetcode", 0.1)
    _write(root, OTHER, "original", "aops", 0.05)
    _write(root, OTHER, "original", "champ", 0.41234)
    _write(root, RADER, "original", "champ", 0.5)
    return root


def _row(markdown: str, model: str | None, kind: str) -> list[str]:
    """Cells after the kind column of the first row whose model/kind columns match (model None = continuation)."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[1].startswith(kind) and (model is None or cells[0] == model):
            return cells[2:]
    raise AssertionError(f"no row {model!r}/{kind!r} in\n{markdown}")


def test_tables_from_results_tree(results_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    assert main(["--results_root", str(results_root), "--output_dir", str(out)]) == 0

    md1 = (out / "table1.md").read_text(encoding="utf-8")
    ours = _row(md1, RADER, "ours")
    assert ours == [f"{20 + i}.0" for i in range(12)] + ["25.5"]  # complete: no '*'
    paper = _row(md1, None, "paper: RaDeR Qwen2.5-7B-instruct (MATH, llmq+CoT+lexical)")
    assert paper == [f"{v:.1f}" for v in RADER_T1] + ["24.6"]  # printed average, not recomputed
    delta = _row(md1, None, "Δ")
    assert delta[0] == "-5.4" and delta[2] == "+5.3" and delta[8] == "+19.8"  # 20.0-25.4, 22.0-16.7, 28.0-8.2
    assert delta[-1] == "+0.9"  # 25.5 - 24.6

    # The unmapped baseline: ours only, gaps as "–", average over 3 splits marked '*'.
    other = _row(md1, OTHER, "ours")
    assert other[0] == "12.3" and other[7] == "10.0" and other[9] == "5.0"
    assert other.count("–") == 9
    assert other[-1] == "9.1*"  # (12.345 + 10 + 5) / 3 = 9.115
    assert f"{OTHER}: average over 3 of 12 splits" in md1
    # exactly one paper row (the RaDeR one) is compared with ours; the other 11 follow for reference
    lines = md1.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| (paper) |"))
    assert sum("| paper:" in line for line in lines[:start]) == 1
    assert sum("| paper:" in line for line in lines[start:]) == 11 and "RaDeR Qwen2.5-7B-instruct (MATH, llmq" not in (
        "\n".join(lines[start:])
    )

    # Table 2: incomplete RaDeR row; Δ of the average uses the paper's mean over the same 10 splits.
    md2 = (out / "table2.md").read_text(encoding="utf-8")
    ours2 = _row(md2, RADER, "ours")
    assert ours2[10:12] == ["–", "–"] and ours2[-1] == "30.0*"
    delta2 = _row(md2, None, "Δ")
    assert delta2[10:12] == ["–", "–"]
    assert delta2[-1] == "+6.1*"  # 30.0 - mean(32.4 38.0 21.5 33.2 14.5 25.5 18.1 30.1 14.0 11.4) = 30 - 23.87
    assert _row(md2, None, "paper:")[-1] == "27.3"

    tex1 = (out / "table1.tex").read_text(encoding="utf-8")
    assert r"\begin{tabular}" in tex1 and r"\toprule" in tex1
    assert "20.0 & 21.0 & 22.0" in tex1 and "& 25.5 \\\\" in tex1
    assert "25.4 & 30.0 & 16.7" in tex1 and "& 24.6 \\\\" in tex1
    assert "-5.4 & -9.0 & +5.3" in tex1
    assert "12.3 & -- & -- & -- & -- & -- & -- & 10.0 & -- & 5.0 & -- & -- & 9.1$^{*}$" in tex1
    assert "my-baseline" in tex1 and "sustainable\\_living" in tex1  # footnote, escaped

    import matplotlib.image

    for name in ("table1.png", "table2.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    extra = (out / "extra_splits.md").read_text(encoding="utf-8")
    assert "champ" in extra and f"| {OTHER} | 41.2 |" in extra and f"| {RADER} | 50.0 |" in extra
    assert "champ" not in md1 and "champ" not in md2  # never mixed into the 12-split tables

    config = json.loads((out / "config.json").read_text(encoding="utf-8"))["settings"]
    assert config["results_root"] == str(results_root) and config["metric"] == "NDCG@10"
    summary = json.loads((out / "tables.json").read_text(encoding="utf-8"))
    assert summary["1"]["rows"][1]["paper_key"] == "rader-qwen2.5-7b-math-llmq-cot-lexical"
    assert (out / "_SUCCESS").is_file()


def test_single_table_model_map_and_config_roundtrip(results_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "t1"
    argv = ["--results_root", str(results_root), "--output_dir", str(out), "--table", "1"]
    assert main([*argv, "--model_map", f"{OTHER}=bm25"]) == 0
    md1 = (out / "table1.md").read_text(encoding="utf-8")
    assert "paper: BM25⋆" in md1 and "copied these numbers from BRIGHT" in md1
    delta = _row(md1, OTHER, "ours")
    assert delta[0] == "12.3"
    # Δ of the incomplete average: 9.115 - mean(18.9, 24.4, 6.2) = 9.115 - 16.5
    bm25_delta = [r for r in md1.splitlines() if r.startswith("|  | Δ")][0]  # models sorted: my-baseline first
    assert bm25_delta.rstrip(" |").endswith("-7.4*")
    assert not (out / "table2.md").exists()

    again = tmp_path / "again"
    assert main(["--config", str(out / "config.json"), "--output_dir", str(again)]) == 0
    assert (again / "table1.md").read_text(encoding="utf-8") == md1


def test_other_metric_has_no_paper_rows(results_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "recall"
    assert main(["--results_root", str(results_root), "--output_dir", str(out), "--metric", "Recall@100"]) == 0
    md1 = (out / "table1.md").read_text(encoding="utf-8")
    assert "| paper:" not in md1 and _row(md1, RADER, "ours")[0] == "50.0"


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("rader/biology/results.json", r"2 folder\(s\) below --results_root, expected 3"),  # no query-type level
        ("rader/queries/biology/results.json", "is not a query type"),
    ],
)
def test_wrong_layout_is_refused(tmp_path: Path, relative: str, message: str) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"NDCG@10": 0.2}))
    with pytest.raises(ValueError, match=message):
        collect_results(tmp_path, "NDCG@10")
    assert main(["--results_root", str(tmp_path), "--output_dir", str(tmp_path / "out")]) == 2


def test_bad_values_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "m", "original", "biology", 25.3)  # already x100
    with pytest.raises(ValueError, match="not a fraction"):
        collect_results(tmp_path, "NDCG@10")
    with pytest.raises(ValueError, match="has no 'P@7'"):
        collect_results(tmp_path, "P@7")
    with pytest.raises(FileNotFoundError):
        collect_results(tmp_path / "absent", "NDCG@10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.json"):
        collect_results(tmp_path / "empty", "NDCG@10")


def test_unknown_model_map_key_is_refused(results_root: Path, tmp_path: Path) -> None:
    argv = ["--results_root", str(results_root), "--output_dir", str(tmp_path / "o"), "--model_map", "x=nope"]
    assert main(argv) == 2


def test_stored_paper_numbers_match_the_spec() -> None:
    """Cells read by hand from specs/evaluation.md §9.1/§9.2 (and the ⋆ flags)."""
    paper = load_paper_results(PAPER_RESULTS_PATH)
    t1, t2 = paper.tables["1"].rows, paper.tables["2"].rows
    assert t1["bm25"].scores["biology"] == 18.9 and t1["bm25"].copied_from_bright
    assert t1["gte-qwen2-7b"].scores["pony"] == 2.2 and not t1["gte-qwen2-7b"].copied_from_bright
    assert t1["rader-gte-qwen2-7b-math-llmq-cot-lexical"].average == 25.5
    assert t1["rader-qwen2.5-7b-math-numina-all"].scores["theoremqa_theorems"] == 47.1
    assert t2["rader-llama3.1-8b-math-llmq-cot-lexical"].scores["pony"] == 23.6
    assert t2["rader-gte-qwen2-7b-math-llmq-cot-lexical+bm25+qwenrerank"].average == 39.2
    assert t2["voyage"].name == "Voyage AI" and t2["voyage"].scores["leetcode"] == 31.4
    assert paper.tables["1"].query_type == "original" and paper.tables["2"].query_type == "gpt4_reason"
    assert len(t1) == 12 and len(t2) == 16  # Table 2 prints 17 rows; hybrid block 2 repeats the gte row

    raw = json.loads(PAPER_RESULTS_PATH.read_text(encoding="utf-8"))
    assert "§9.1" in raw["_source"] and "§9.2" in raw["_source"]
    assert [len(t["rows"]) for t in raw["tables"].values()] == [12, 17]
    for table in raw["tables"].values():
        for row in table["rows"]:
            assert list(row["scores"]) == list(BRIGHT_SPLITS)
            assert abs(sum(row["scores"].values()) / 12 - row["average"]) < 0.9  # printed averages are near the mean


def test_recipes_come_from_the_runs_records_not_their_names(tmp_path: Path) -> None:
    from models.evaluation.recipes import model_family, run_recipe

    assert model_family("Qwen/Qwen2.5-7B-Instruct") == "qwen2.5-7b"
    assert model_family("meta-llama/Llama-3.1-8B-Instruct") == "llama3.1-8b"
    assert model_family("Alibaba-NLP/gte-Qwen2-7B-instruct") == "gte-qwen2-7b"
    model = tmp_path / "whatever-folder-name"
    model.mkdir()
    (model / "retriever_config.json").write_text(json.dumps({
        "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
        "training_data": {"query_types": ["lexical", "llmq", "cot"], "datasets": ["MATH"]},
    }))  # fmt: skip
    record = {"settings": {"model": "rader", "model_path": str(model), "hybrid_bm25_alpha": None}, "derived": {}}
    assert run_recipe(record) == "rader-qwen2.5-7b-math-llmq-cot-lexical"
    record["settings"]["hybrid_bm25_alpha"] = 0.8
    assert run_recipe(record) == "rader-qwen2.5-7b-math-llmq-cot-lexical+bm25"
    assert run_recipe({"settings": {"model": "bm25"}}) == "bm25"
    assert (
        run_recipe({"settings": {"model": "sbert", "model_path": "Alibaba-NLP/gte-Qwen2-7B-instruct"}})
        == "gte-qwen2-7b"
    )

    # A tree whose folder names mean nothing still lands on the right paper row.
    root = tmp_path / "bright"
    for split in BRIGHT_SPLITS:
        run_dir = root / "my-run" / "original" / split
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"NDCG@10": 0.25}))
        (run_dir / "config.json").write_text(
            json.dumps({**record, "settings": {**record["settings"], "hybrid_bm25_alpha": None}})
        )
    assert main(["--results_root", str(root), "--output_dir", str(tmp_path / "t"), "--table", "1"]) == 0
    md = (tmp_path / "t" / "table1.md").read_text(encoding="utf-8")
    assert _row(md, None, "paper: RaDeR Qwen2.5-7B-instruct (MATH, llmq+CoT+lexical)")[-1] == "24.6"
    assert _row(md, None, "Δ")[-1] == "+0.4"  # 25.0 - 24.6
