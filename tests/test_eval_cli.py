"""`cjkrag eval` end to end: a small BEIR folder, real Milvus Lite, the real analyzer, the fake embedder
(and the tiny local cross-encoder for hybrid+rerank)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cjkrag.cli import app

sys.path.insert(0, str(Path(__file__).parent))

# (doc id, title, text, question): each question shares its keywords with its own document only
ITEMS = [
    ("zh-capital", "北京", "北京是中华人民共和国的首都，也是政治和文化中心。", "中国的首都是哪座城市"),
    ("zh-panda", "熊猫", "大熊猫主要吃竹子，每天要花十几个小时进食。", "熊猫吃什么"),
    ("zh-tea", "绿茶", "泡绿茶要用八十度左右的水，水太烫会把茶叶泡苦。", "泡绿茶用多少度的水"),
    ("zh-river", "黄河", "黄河全长约五千四百公里，是中国第二长河。", "黄河有多长"),
    ("ja-tokyo", "東京", "東京は日本の首都で、人口は約千四百万人です。", "日本の首都はどこですか"),
    ("ja-fuji", "富士山", "富士山の高さは三千七百七十六メートルで、日本一高い山です。", "富士山の高さ"),
    ("ja-sushi", "寿司", "寿司は酢飯に魚介類を合わせた日本料理です。", "寿司とは何ですか"),
    ("ko-seoul", "서울", "서울은 대한민국의 수도이며 가장 큰 도시이다.", "한국의 수도는 어디인가"),
    ("ko-kimchi", "김치", "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다.", "김치는 무엇으로 만드나"),
    ("en-mixed", "API", "API 限流：每个 token 每分钟最多 600 次请求，超出后返回 HTTP 429。", "API 限流 429"),
]


def write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, title, text, _ in ITEMS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, (*_, question) in enumerate(ITEMS):
            f.write(json.dumps({"_id": f"q{i}", "text": question}, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\t{item[0]}\t1" for i, item in enumerate(ITEMS)]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_config(path: Path, data: Path, **extra: object) -> Path:
    cfg = {"data_dir": str(data), "embedding": {"model": "fake:64"}, **extra}
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_eval_prints_the_table_writes_json_and_plot_and_leaves_the_store_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beir = write_beir(tmp_path / "tiny-set")
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    config = write_config(tmp_path / "cfg.yaml", Path("data"))  # relative, as in the packaged default
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        ["eval", str(beir), "--config", str(config), "--modes", "keyword,dense,hybrid",
         "--json", str(out), "--plot", str(png)],
    )
    assert result.exit_code == 0, result.output
    assert "tiny-set (10 queries)" in result.output
    assert "10 documents" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["dataset"] == "tiny-set" and report["queries"] == 10
    assert list(report["modes"]) == ["keyword", "dense", "hybrid"]
    for values in report["modes"].values():
        assert set(values) == {"ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms"}
        assert all(0.0 <= values[m] <= 1.0 for m in ("ndcg@10", "recall@10", "recall@100", "mrr@10"))
    # lexical questions over the real CJK analyzer: keyword search finds every document first or second
    assert report["modes"]["keyword"]["mrr@10"] >= 0.9
    assert report["modes"]["hybrid"]["recall@10"] == 1.0  # ten documents: all must be in the top ten
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the evaluation ran in a Milvus Lite file of its own; the user's store file was never created
    assert (data / "eval" / "tiny_set.db").exists()
    assert not (data / "milvus.db").exists()
    assert [p.name for p in data.iterdir()] == ["eval"]


def test_eval_reruns_fresh_and_keeps_the_numbers(tmp_path: Path) -> None:
    beir = write_beir(tmp_path / "again")
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "data")
    reports = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        result = CliRunner().invoke(
            app, ["eval", str(beir), "--config", str(config), "--modes", "keyword", "--json", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert "10 documents (10 chunks) written" in result.output  # --fresh: re-ingested, not duplicated
        reports.append(json.loads(out.read_text(encoding="utf-8"))["modes"]["keyword"])
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert reports[0][key] == reports[1][key]


def test_rerank_mode_needs_a_reranker_and_uses_it_when_configured(tmp_path: Path) -> None:
    beir = write_beir(tmp_path / "rr")
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "data")
    result = CliRunner().invoke(app, ["eval", str(beir), "--config", str(config), "--modes", "hybrid+rerank"])
    assert result.exit_code == 2
    assert "rerank.model" in result.output

    pytest.importorskip("sentence_transformers")
    from tiny_reranker import build_tiny_reranker

    model = build_tiny_reranker()
    config = write_config(
        tmp_path / "cfg-rr.yaml", tmp_path / "data", rerank={"model": str(model), "max_length": 128}
    )
    out = tmp_path / "rr.json"
    result = CliRunner().invoke(
        app, ["eval", str(beir), "--config", str(config), "--modes", "hybrid,hybrid+rerank", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    modes = json.loads(out.read_text(encoding="utf-8"))["modes"]
    assert list(modes) == ["hybrid", "hybrid+rerank"]
    assert modes["hybrid+rerank"]["recall@10"] == 1.0


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    beir = write_beir(tmp_path / "bad")
    result = CliRunner().invoke(app, ["eval", str(beir), "--modes", "keyword,bm25"])
    assert result.exit_code == 2
    assert "bm25" in result.output and "hybrid+rerank" in result.output
