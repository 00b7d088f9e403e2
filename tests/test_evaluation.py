"""BEIR evaluation core: hand-computed metrics, loading, report shape, table and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cjkrag.errors import InputError
from cjkrag.pipeline.evaluation import (
    MODE_KEYS,
    BeirSet,
    chunk_hits_to_doc_run,
    evaluate_run,
    format_table,
    latency_stats,
    load_beir,
    plot,
    run_eval,
    write_json,
)
from cjkrag.types import Hit


def filler(n: int, prefix: str = "x") -> dict[str, float]:
    """n non-relevant docs scored 1000, 999, ... (they rank first)."""
    return {f"{prefix}{i}": 1000.0 - i for i in range(n)}


def test_one_relevant_at_rank_two() -> None:
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"x": 2.0, "d1": 1.0}}
    got = evaluate_run(qrels, run)
    assert got["mrr@10"] == pytest.approx(0.5)
    assert got["ndcg@10"] == pytest.approx(1 / math.log2(3))  # DCG 1/log2(2+1), IDCG 1
    assert got["recall@10"] == pytest.approx(1.0)
    assert got["recall@100"] == pytest.approx(1.0)


def test_cutoffs_and_averaging_over_all_qrels_queries() -> None:
    qrels = {
        "q1": {"a": 1, "b": 1},  # a at rank 1, b at rank 50
        "q2": {"c": 1},  # c at rank 11: outside every @10 cutoff
        "q3": {"d": 1},  # not in the run at all -> 0 everywhere
    }
    run1 = {"a": 2000.0, **filler(48), "b": 1.0}
    run2 = {**filler(10), "c": 1.0}
    got = evaluate_run(qrels, {"q1": run1, "q2": run2, "q_unjudged": {"zz": 1.0}})
    # q1: recall@10 = 1/2, recall@100 = 2/2, MRR = 1, nDCG@10 = 1 / (1 + 1/log2(3))
    # q2: recall@10 = 0, recall@100 = 1, MRR@10 = 0 (rank 11), nDCG@10 = 0
    # q3: all 0 ; means over 3 queries
    assert got["recall@10"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert got["recall@100"] == pytest.approx((1 + 1 + 0) / 3)
    assert got["mrr@10"] == pytest.approx((1 + 0 + 0) / 3)
    assert got["ndcg@10"] == pytest.approx((1 / (1 + 1 / math.log2(3))) / 3)


def test_graded_ndcg() -> None:
    # rank 1: d2 (rel 1), rank 2: d1 (rel 2): DCG = 1/log2(2) + 2/log2(3); IDCG = 2/log2(2) + 1/log2(3)
    got = evaluate_run({"q": {"d1": 2, "d2": 1, "d3": 0}}, {"q": {"d2": 5.0, "d1": 4.0, "d3": 3.0}})
    assert got["ndcg@10"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert got["mrr@10"] == pytest.approx(1.0)


def test_chunk_hits_to_doc_run_keeps_best_chunk() -> None:
    hits = [("d2", 0.9), ("d1", 0.8), ("d2", 0.7), ("d3", 0.6), ("d1", 0.5)]
    run = chunk_hits_to_doc_run(hits)
    assert list(run) == ["d2", "d1", "d3"]
    assert run == {"d2": 0.9, "d1": 0.8, "d3": 0.6}
    as_hits = [
        Hit(doc_id=d, chunk_id=f"{d}#{i}", text="", score=s, start=0, end=0) for i, (d, s) in enumerate(hits)
    ]
    assert chunk_hits_to_doc_run(as_hits) == run


def test_latency_stats() -> None:
    # sorted 1..10: p50 at position 4.5 -> 5.5 ; p95 at position 8.55 -> 9 + 0.55 * (10 - 9)
    stats = latency_stats([10, 1, 9, 2, 8, 3, 7, 4, 6, 5])
    assert stats == {"p50_ms": pytest.approx(5.5), "p95_ms": pytest.approx(9.55)}
    assert latency_stats([3.0]) == {"p50_ms": 3.0, "p95_ms": 3.0}
    with pytest.raises(InputError):
        latency_stats([])


def write_beir(root: Path) -> Path:
    root.mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "東京", "text": "東京は日本の首都です。"},
        {"_id": "d2", "title": "", "text": "北京是中国的首都。"},
        {"_id": "d3", "text": "서울은 한국의 수도입니다."},
    ]
    queries = [
        {"_id": "q0", "text": "没有判断的查询"},
        {"_id": "q2", "text": "中国的首都"},
        {"_id": "q1", "text": "日本の首都"},
        {"_id": "q3", "text": "한국의 수도"},
    ]
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n", "utf-8"
    )
    (root / "queries.jsonl").write_text(
        "\n".join(json.dumps(q, ensure_ascii=False) for q in queries), "utf-8"
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t2\nq3\td1\t0\n", "utf-8"
    )
    return root


def test_load_beir(tmp_path: Path) -> None:
    beir = load_beir(write_beir(tmp_path / "tinyset"))
    assert beir.name == "tinyset"
    assert list(beir.queries) == ["q2", "q1", "q3"]  # file order, q0 has no qrels
    assert beir.queries["q1"] == "日本の首都"
    assert beir.qrels["q3"] == {"d3": 2, "d1": 0}
    assert beir.corpus["d1"].title == "東京"
    assert beir.corpus["d3"].title == ""
    docs = beir.documents()
    assert [d.id for d in docs] == ["d1", "d2", "d3"]
    assert all(d.public for d in docs)
    subset = load_beir(tmp_path / "tinyset", max_queries=2)
    assert list(subset.queries) == ["q2", "q1"]
    assert set(subset.qrels) == {"q2", "q1"}
    assert len(subset.corpus) == 3  # the corpus is never cut


def test_load_beir_errors(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "set")
    with pytest.raises(InputError, match=r"dev\.tsv.*available splits: test"):
        load_beir(root, split="dev")
    (root / "qrels" / "test.tsv").write_text("qid\tdid\trel\nq1\td1\t1\n", "utf-8")
    with pytest.raises(InputError, match=r"test\.tsv:1: expected the header"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", "utf-8")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2"\n', "utf-8")
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_beir(root)
    with pytest.raises(InputError, match="not a directory"):
        load_beir(tmp_path / "nope")


def test_run_eval_report_and_json_shape(tmp_path: Path) -> None:
    beir = load_beir(write_beir(tmp_path / "tinyset"))
    answers = {"中国的首都": "d2", "日本の首都": "d1", "한국의 수도": "d3"}
    calls: list[tuple[str, str, int]] = []

    def search(query: str, mode: str, k: int) -> list[tuple[str, float]]:
        calls.append((query, mode, k))
        right = answers[query]
        if mode == "perfect":
            return [(right, 0.5), (right, 0.4), ("other", 0.5)]  # equal scores: order must still count
        return [("other", 0.9), (right, 0.1)]  # relevant doc at rank 2

    report = run_eval(beir, ["perfect", "second"], search, progress=False)
    assert len(calls) == 6 and {k for _, _, k in calls} == {100}
    assert report["dataset"] == "tinyset" and report["queries"] == 3
    assert report["modes"]["perfect"]["mrr@10"] == pytest.approx(1.0)
    assert report["modes"]["perfect"]["ndcg@10"] == pytest.approx(1.0)
    assert report["modes"]["second"]["mrr@10"] == pytest.approx(0.5)
    assert report["modes"]["second"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert report["modes"]["second"]["p95_ms"] >= report["modes"]["second"]["p50_ms"] >= 0.0

    path = write_json(report, tmp_path / "out" / "report.json")
    data = json.loads(path.read_text("utf-8"))
    assert set(data) == {"dataset", "queries", "modes"}
    assert data["dataset"] == "tinyset" and data["queries"] == 3
    assert list(data["modes"]) == ["perfect", "second"]
    for values in data["modes"].values():
        assert list(values) == list(MODE_KEYS)
        assert all(isinstance(v, float) for v in values.values())
    assert data["modes"]["second"]["mrr@10"] == 0.5

    table = format_table(report)
    lines = table.splitlines()
    assert "tinyset" in lines[0] and "ndcg@10" in lines[1]
    assert [ln.split()[0] for ln in lines[3:]] == ["perfect", "second"]
    assert "0.5000" in lines[4]

    png = plot(report, tmp_path / "plots" / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_report_validation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"report\['modes'\]\['dense'\] must have exactly the keys"):
        write_json({"dataset": "x", "queries": 1, "modes": {"dense": {"ndcg@10": 1.0}}}, tmp_path / "r.json")
    with pytest.raises(InputError, match="modes"):
        run_eval(BeirSet("x", {}, {"q": "t"}, {"q": {"d": 1}}), [], lambda q, m, k: [], progress=False)


def test_sign_test_and_first_relevant_rank() -> None:
    from cjkrag.pipeline.evaluation import first_relevant_rank, sign_test

    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 6) == pytest.approx(2 / 2**6)  # two-sided exact binomial
    assert sign_test(10, 0) < 0.01
    assert first_relevant_rank(["a", "b", "c"], {"c": 1}) == 3
    assert first_relevant_rank(["a"], {"c": 1}) == 10**6


def test_run_eval_counts_wins_and_losses_against_the_best_single_mode(tmp_path: Path) -> None:
    beir = load_beir(write_beir(tmp_path / "tinyset"))
    answers = {"中国的首都": "d2", "日本の首都": "d1", "한국의 수도": "d3"}

    def search(query: str, mode: str, k: int) -> list[tuple[str, float]]:
        right = answers[query]
        if mode == "keyword":  # right at 1 for every query
            return [(right, 2.0), ("other", 1.0)]
        if mode == "dense":  # right at 2
            return [("other", 2.0), (right, 1.0)]
        # hybrid: worse than keyword on one query, equal on the others
        return [("other", 2.0), (right, 1.0)] if right == "d1" else [(right, 2.0)]

    report = run_eval(beir, ["keyword", "dense", "hybrid"], search, progress=False)
    versus = report["versus"]
    assert {v["vs"] for v in versus.values()} == {"keyword"}
    assert (versus["keyword"]["wins"], versus["keyword"]["losses"]) == (0, 0)
    assert (versus["dense"]["wins"], versus["dense"]["losses"]) == (0, 3)
    assert (versus["hybrid"]["wins"], versus["hybrid"]["losses"]) == (0, 1)
    assert versus["hybrid"]["p"] == 1.0
    data = json.loads(write_json(report, tmp_path / "r.json").read_text("utf-8"))
    assert data["versus"]["dense"] == {"vs": "keyword", "wins": 0, "losses": 3, "p": 0.25}
    table = format_table(report)
    assert "vs best single" in table.splitlines()[1]
    assert table.splitlines()[4].split()[-3:] == ["0", "3", "0.2500"]


def test_run_eval_drops_the_query_itself(tmp_path: Path) -> None:
    """Pair sets keep the query's own sentence in the corpus under the query's id: it never counts."""
    beir = BeirSet("pairs", {}, {"s1": "a question"}, {"s1": {"s2": 1}})
    report = run_eval(beir, ["dense"], lambda q, m, k: [("s1", 1.0), ("s2", 0.5)], progress=False)
    assert report["modes"]["dense"]["mrr@10"] == pytest.approx(1.0)
