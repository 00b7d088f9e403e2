"""The model gate, promotion and training pairs (no model: fast); the gate against real broken models is in
tests/test_models_refuse.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjkrag.errors import InputError
from cjkrag.pipeline.evaluation import BeirDoc, BeirSet
from cjkrag.pipeline.models.gate import (
    Contender,
    compare,
    format_gate,
    gate_sets,
    model_key,
    sign_test,
    write_gate,
)
from cjkrag.pipeline.models.pairs import Pair, pairs_to_beir, read_pairs, split_labelled
from cjkrag.pipeline.models.promote import GateRefused, promote

pytest.importorskip("ir_measures")


def test_sign_test_exact_values() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(0, 10) == pytest.approx(2 / 1024)
    assert sign_test(5, 5) == 1.0
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_compare_counts_wins_losses_ties() -> None:
    base = {"a": 0.5, "b": 1.0, "c": 0.0, "d": 0.3}
    cand = {"a": 0.7, "b": 0.2, "c": 0.0}  # d missing -> 0 -> a loss
    assert compare(base, cand) == {"wins": 1, "losses": 2, "ties": 1, "p_value": 1.0}


def _set() -> BeirSet:
    corpus = {f"d{i}": BeirDoc(f"d{i}", "", f"text {i}") for i in range(4)}
    queries = {f"q{i}": f"query {i}" for i in range(4)}
    return BeirSet("toy", corpus, queries, {f"q{i}": {f"d{i}": 1} for i in range(4)})


def _perfect(s: BeirSet) -> dict[str, dict[str, float]]:
    return {q: {next(iter(rel)): 1.0, **{d: 0.1 for d in s.corpus if d not in rel}} for q, rel in s.qrels.items()}


def _worse(s: BeirSet) -> dict[str, dict[str, float]]:  # the relevant doc ranks last for half the queries
    run = _perfect(s)
    for q in ("q0", "q1"):
        run[q] = {d: (0.0 if d in s.qrels[q] else 1.0 - int(d[1:]) / 10) for d in s.corpus}
    return run


def test_gate_refuses_a_loser_and_passes_an_equal() -> None:
    s = _set()
    lost = gate_sets(Contender("base", _perfect), Contender("cand", _worse), [s], tolerance=0.01)
    assert lost["passed"] is False
    row = lost["sets"][0]
    assert row["losses"] == 2 and row["wins"] == 0 and row["ties"] == 2
    assert row["delta_ndcg@10"] < -0.01
    assert "REFUSED" in format_gate(lost)
    same = gate_sets(Contender("base", _perfect), Contender("cand", _perfect), [s])
    assert same["passed"] is True and same["sets"][0]["ties"] == 4


def test_tolerance_lets_a_small_loss_through() -> None:
    s = _set()
    delta = gate_sets(Contender("b", _perfect), Contender("c", _worse), [s])["sets"][0]["delta_ndcg@10"]
    assert gate_sets(Contender("b", _perfect), Contender("c", _worse), [s], tolerance=-delta + 0.001)["passed"]
    with pytest.raises(InputError):
        gate_sets(Contender("b", _perfect), Contender("c", _worse), [s], tolerance=-1)


def test_split_is_deterministic_and_heldout_never_trained_on() -> None:
    rows = [(f"问题{i}", f"答案{i}", 1) for i in range(300)] + [(f"问题{i}", f"答案{i + 1}", 1) for i in range(0, 300, 7)]
    rows += [(f"无关{i}", f"别的{i}", 0) for i in range(50)]
    a = split_labelled(rows, heldout_fraction=0.2, seed=3)
    b = split_labelled(list(reversed(rows)), heldout_fraction=0.2, seed=3)
    assert {p.query for p in a.heldout} == {p.query for p in b.heldout}
    held = {t for p in a.heldout for t in (p.query, p.positive)}
    assert held and a.train
    assert not held & {t for p in a.train for t in (p.query, p.positive)}
    assert 0.1 < len(a.heldout) / (len(a.heldout) + len(a.train)) < 0.3
    assert all(t.startswith(("无关", "别的")) for t in a.distractors)


def test_pairs_to_beir_qrels_point_at_positive() -> None:
    beir = pairs_to_beir([Pair("q1", "p1", ("n1",)), Pair("q2", "p2")], ["x"])
    assert len(beir.corpus) == 4 and len(beir.queries) == 2
    for qid, rel in beir.qrels.items():
        (doc,) = rel
        assert beir.corpus[doc].text == {"q1": "p1", "q2": "p2"}[beir.queries[qid]]


def test_read_pairs_names_the_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text('{"query": "a", "positive": "b"}\n{"query": "a"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.jsonl:2: 'positive'"):
        read_pairs(f)
    f.write_text('{"query": "a", "clicked_doc_id": "d1"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="--clicks"):
        read_pairs(f)


def _model(tmp: Path) -> Path:
    m = tmp / "cand"
    m.mkdir()
    (m / "model.safetensors").write_bytes(b"weights-1")
    (m / "config.json").write_text("{}", encoding="utf-8")
    return m


def _gate_for(model: Path, lost: bool) -> Path:
    s = _set()
    report = gate_sets(Contender("base", _perfect), Contender(str(model), _worse if lost else _perfect), [s])
    report.update(kind="embedder", candidate_key=model_key(str(model)))
    return write_gate(report, model / "gate.json")


def test_promote_refuses_a_loser_and_records_it(tmp_path: Path) -> None:
    model = _model(tmp_path)
    _gate_for(model, lost=True)
    data = tmp_path / "data"
    with pytest.raises(GateRefused, match="lost on the gate"):
        promote(str(model), data)
    log = [json.loads(x) for x in (data / "models" / "promotions.jsonl").read_text().splitlines()]
    assert log[-1]["decision"] == "refused"
    assert not any(p.name.startswith("embedder-") for p in (data / "models").iterdir())
    with pytest.raises(InputError, match="--reason"):
        promote(str(model), data, force=True)
    forced = promote(str(model), data, force=True, reason="A/B test on 1% of traffic")
    assert forced["decision"] == "promoted" and forced["forced"] is True
    assert Path(forced["target"], "model.safetensors").read_bytes() == b"weights-1"


def test_promote_passes_then_refuses_changed_weights(tmp_path: Path) -> None:
    model = _model(tmp_path)
    _gate_for(model, lost=False)
    data = tmp_path / "data"
    entry = promote(str(model), data)
    assert entry["decision"] == "promoted" and Path(entry["target"]).is_dir()
    assert model_key(str(model)) in entry["target"]  # a new path per version: the ingest settings tag changes
    (model / "model.safetensors").write_bytes(b"weights-2, retrained after gating")
    with pytest.raises(GateRefused, match="other weights"):
        promote(str(model), data)


def test_promote_without_gate_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    with pytest.raises(GateRefused, match="no gate report"):
        promote(str(model), tmp_path / "data")


def test_cli_pairs_and_promote_refusal(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cjkrag.cli import app

    src = tmp_path / "pairs.data"
    src.write_text("".join(f"问{i}\t答{i}\t1\n" for i in range(50)) + "无关\t别的\t0\n", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["models", "pairs", str(src), "--out", str(tmp_path / "out"), "--heldout", "0.3"])
    assert res.exit_code == 0, res.output
    train = read_pairs(tmp_path / "out" / "train.jsonl")
    held = read_pairs(tmp_path / "out" / "heldout.jsonl")
    assert len(train) + len(held) == 50 and held
    assert (tmp_path / "out" / "heldout-beir" / "qrels" / "test.tsv").is_file()

    model = _model(tmp_path)
    _gate_for(model, lost=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    res = runner.invoke(app, ["models", "promote", str(model), "--config", str(cfg)])
    assert res.exit_code == 1 and "lost on the gate" in res.output
    assert "refused" in (tmp_path / "data" / "models" / "promotions.jsonl").read_text()
