"""The LlamaIndex retriever: inside a RetrieverQueryEngine with MockLLM, parity with Engine.search, access
control, MetadataFilters translation and ingestion of LlamaIndex Documents/nodes — on a real Engine
(Milvus Lite + the bundled model). No network: the LLM is LlamaIndex's MockLLM, passed explicitly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the 'llamaindex' extra is not installed: pip install -e '.[llamaindex]'")

from llama_index.core import Settings
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import Document, MetadataMode, NodeRelationship, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from cjkrag.connectors.filters import evaluate, parse_filter
from cjkrag.errors import AccessError, ConfigError, FilterError
from cjkrag.pipeline.integrations.llamaindex import CjkragRetriever, translate_filters
from tests.integrations.corpus import CORPUS, MALLORY, SUPPORT, run_async_off_loop

QUERY = "如何重置密码"


@pytest.fixture(scope="module")
def engine(bundled_engine: Any) -> Any:
    return bundled_engine


def _f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


# ------------------------------------------------------------------------------------ query engine
def test_retriever_inside_a_query_engine_with_mock_llm(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = MockLLM()  # echoes the prompt it gets: the answer shows what the LLM was given
    monkeypatch.setattr(Settings, "_llm", llm)  # nothing may reach for a real LLM
    retriever = CjkragRetriever(engine, principals=SUPPORT, similarity_top_k=2)
    query_engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    response = query_engine.query(QUERY)
    expected = [h.chunk_id for h in engine.search(QUERY, principals=SUPPORT, top_k=2)]
    assert [n.node.node_id for n in response.source_nodes] == expected
    top = response.source_nodes[0].node
    assert top.get_content() in str(response)  # the chunk text reached the prompt
    assert QUERY in str(response)
    prompt_view = top.get_content(metadata_mode=MetadataMode.LLM)
    assert "doc_id" in prompt_view and "scores" not in prompt_view and "ranks" not in prompt_view

    async_response = asyncio.run(query_engine.aquery(QUERY))
    assert [n.node.node_id for n in async_response.source_nodes] == expected


# ------------------------------------------------------------------------------------ parity with the Engine
@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
@pytest.mark.parametrize("query", [QUERY, "パスワードを忘れた", "비밀번호 찾기", "退款多久到账"])
def test_same_hits_scores_and_order_as_engine_search(engine: Any, mode: str, query: str) -> None:
    hits = engine.search(query, principals=SUPPORT, top_k=5, mode=mode)
    nodes = CjkragRetriever(engine, principals=SUPPORT, similarity_top_k=5, mode=mode).retrieve(query)
    assert hits
    assert [n.node.node_id for n in nodes] == [h.chunk_id for h in hits]
    assert [n.score for n in nodes] == [h.score for h in hits]
    for n, hit in zip(nodes, hits, strict=True):
        node = n.node
        assert isinstance(node, TextNode) and node.text == hit.text
        assert node.ref_doc_id == hit.doc_id
        assert (node.start_char_idx, node.end_char_idx) == (hit.start, hit.end)
        assert node.metadata["scores"] == hit.scores and node.metadata["ranks"] == hit.ranks
        assert node.metadata["lang"] == hit.metadata["lang"]


def test_aretrieve_matches_and_runs_off_the_event_loop(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    retriever = CjkragRetriever(engine, principals=SUPPORT, similarity_top_k=3)
    expected = [n.node.node_id for n in retriever.retrieve(QUERY)]
    nodes = run_async_off_loop(engine, monkeypatch, lambda: retriever.aretrieve(QUERY))
    assert [n.node.node_id for n in nodes] == expected


# ------------------------------------------------------------------------------------ access control
def test_a_denied_chunk_is_never_returned(engine: Any) -> None:
    retriever = CjkragRetriever(engine, principals=MALLORY, similarity_top_k=100)
    assert "audit-zh" not in {n.node.ref_doc_id for n in retriever.retrieve("密码重置审计 硬件密钥")}
    aimed = CjkragRetriever(
        engine, principals=MALLORY, similarity_top_k=100, filters=MetadataFilters(filters=[_f("doc_id", "audit-zh")])
    )
    assert aimed.retrieve("密码重置的内部审计记录") == []
    visible = CjkragRetriever(engine, principals=SUPPORT, similarity_top_k=100).retrieve("密码重置审计")
    assert "audit-zh" in {n.node.ref_doc_id for n in visible}


def test_principals_fixed_and_validated(engine: Any) -> None:
    retriever = CjkragRetriever(engine, principals=["group:nobody"], similarity_top_k=100)
    assert {n.node.ref_doc_id for n in retriever.retrieve(QUERY)} == {d["id"] for d in CORPUS if d.get("public")}
    with pytest.raises(AttributeError):
        retriever.principals = ("group:support",)  # type: ignore[misc]
    for bad in ("group:support", [""], ["group:a\nuser:b"], None):
        with pytest.raises(AccessError):
            CjkragRetriever(engine, principals=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CjkragRetriever(engine, principals=SUPPORT, similarity_top_k=0)
    with pytest.raises(ConfigError):
        CjkragRetriever(principals=SUPPORT)


# ------------------------------------------------------------------------------------ MetadataFilters
def test_filters_translate_exactly() -> None:
    spec = MetadataFilters(
        filters=[
            _f("category", "account"),
            _f("year", 2023, FilterOperator.GTE),
            MetadataFilters(
                filters=[_f("lang", ["zh", "ja"], FilterOperator.IN), _f("doc_id", "pw-ko", FilterOperator.EQ)],
                condition=FilterCondition.OR,
            ),
            _f("lang", ["en"], FilterOperator.NIN),
            _f("year", 2030, FilterOperator.LT),
            _f("year", 2024, FilterOperator.LTE),
            _f("year", 2000, FilterOperator.GT),
            _f("title", "x", FilterOperator.NE),
        ]
    )
    assert translate_filters(spec) == {
        "operator": "AND",
        "conditions": [
            {"field": "metadata.category", "operator": "==", "value": "account"},
            {"field": "metadata.year", "operator": ">=", "value": 2023},
            {
                "operator": "OR",
                "conditions": [
                    {"field": "metadata.lang", "operator": "in", "value": ["zh", "ja"]},
                    {"field": "doc_id", "operator": "==", "value": "pw-ko"},
                ],
            },
            {"field": "metadata.lang", "operator": "not in", "value": ["en"]},
            {"field": "metadata.year", "operator": "<", "value": 2030},
            {"field": "metadata.year", "operator": "<=", "value": 2024},
            {"field": "metadata.year", "operator": ">", "value": 2000},
            {"field": "title", "operator": "!=", "value": "x"},
        ],
    }
    assert translate_filters(MetadataFilters(filters=[])) is None and translate_filters(None) is None


def test_translated_filters_select_what_the_reference_selects(engine: Any) -> None:
    spec = MetadataFilters(
        filters=[_f("category", "account"), _f("lang", ["zh", "ko"], FilterOperator.IN), _f("year", 2023, FilterOperator.GTE)]
    )
    node = parse_filter(translate_filters(spec))
    expected = {
        d["id"]
        for d in CORPUS
        if evaluate(node, {"doc_id": d["id"], "title": d["title"], "metadata": d["metadata"]}) and d["id"] != "audit-zh"
    }
    retriever = CjkragRetriever(engine, principals=MALLORY, similarity_top_k=100, filters=spec)
    assert {n.node.ref_doc_id for n in retriever.retrieve(QUERY)} == expected == {"pw-zh"}


@pytest.mark.parametrize(
    "bad",
    [
        MetadataFilters(filters=[_f("tags", ["a"], FilterOperator.ANY)]),
        MetadataFilters(filters=[_f("tags", ["a"], FilterOperator.ALL)]),
        MetadataFilters(filters=[_f("body", "x", FilterOperator.TEXT_MATCH)]),
        MetadataFilters(filters=[_f("tags", "a", FilterOperator.CONTAINS)]),
        MetadataFilters(filters=[_f("tags", None, FilterOperator.IS_EMPTY)]),
        MetadataFilters(filters=[_f("lang", "zh")], condition=FilterCondition.NOT),
        MetadataFilters(filters=[_f("lang", "zh"), MetadataFilters(filters=[])]),
        MetadataFilters(filters=[_f("bad key", "x")]),
        MetadataFilters(filters=[_f("acl", "group:support")]),  # acl takes contains_any only
    ],
)
def test_untranslatable_filters_are_a_clear_error(engine: Any, bad: MetadataFilters) -> None:
    with pytest.raises(FilterError, match="MetadataFilters"):
        CjkragRetriever(engine, principals=SUPPORT, filters=bad)


# ------------------------------------------------------------------------------------ ingestion
def test_engine_ingests_llamaindex_documents_and_nodes(tmp_path: Any, share_bundled_model: None) -> None:
    import cjkrag

    engine = cjkrag.open({"data_dir": str(tmp_path)})
    docs = [
        Document(id_="invoice.md", text="发票可以在订单详情页下载。", metadata={"title": "发票", "file_name": "invoice.md"}),
        TextNode(id_="points-node", text="会员积分每年一月一日清零。", metadata={"section": 2}),
    ]
    report = engine.ingest(docs, acl=["group:billing"])
    assert report.documents == 2 and report.failures == []
    retriever = CjkragRetriever(engine, principals=["group:billing"], similarity_top_k=5)
    by_doc = {n.node.ref_doc_id: n.node for n in retriever.retrieve("发票在哪里下载")}
    assert set(by_doc) == {"invoice.md", "points-node"}
    assert by_doc["invoice.md"].metadata["title"] == "发票" and by_doc["points-node"].metadata["section"] == 2
    assert by_doc["invoice.md"].relationships[NodeRelationship.SOURCE].node_id == "invoice.md"
    assert CjkragRetriever(engine, principals=["group:other"]).retrieve("发票") == []
    engine.close()
