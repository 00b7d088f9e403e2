"""The LangChain retriever: LangChain's own standard retriever tests, an LCEL chain, parity with
Engine.search, access control, per-call arguments and ingestion of LangChain Documents — on a real Engine
(Milvus Lite + the bundled model)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="the 'langchain' extra is not installed: pip install -e '.[langchain,dev]'")
pytest.importorskip("langchain_tests", reason="langchain-tests (the 'dev' extra) is not installed")

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_tests.integration_tests import RetrieversIntegrationTests

from cjkrag.errors import AccessError, ConfigError, FilterError
from cjkrag.pipeline.integrations.langchain import CjkragRetriever
from tests.integrations.corpus import CORPUS, MALLORY, SUPPORT, run_async_off_loop

QUERY = "如何重置密码"


@pytest.fixture(scope="module")
def engine(bundled_engine: Any) -> Any:
    return bundled_engine


# ------------------------------------------------------------------------------------ LangChain's own tests
@pytest.mark.asyncio  # the suite's one async test needs it; on its sync tests pytest-asyncio ignores it
@pytest.mark.filterwarnings("ignore:The test <Function .*is marked with '@pytest.mark.asyncio' but it is not an async")
class TestStandardRetriever(RetrieversIntegrationTests):
    """langchain-tests' RetrieversIntegrationTests, unmodified (it refuses overridden tests)."""

    shared_engine: Any = None

    @pytest.fixture(autouse=True)
    def _engine(self, engine: Any) -> None:
        type(self).shared_engine = engine

    @property
    def retriever_constructor(self) -> type[CjkragRetriever]:
        return CjkragRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.shared_engine, "principals": SUPPORT, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


# ------------------------------------------------------------------------------------ parity with the Engine
@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
@pytest.mark.parametrize("query", [QUERY, "パスワードを忘れた", "비밀번호 찾기", "退款多久到账"])
def test_same_hits_scores_and_order_as_engine_search(engine: Any, mode: str, query: str) -> None:
    hits = engine.search(query, principals=SUPPORT, top_k=5, mode=mode)
    docs = CjkragRetriever(engine=engine, principals=SUPPORT, k=5, mode=mode).invoke(query)
    assert hits, "the corpus must answer every query"
    assert [d.id for d in docs] == [h.chunk_id for h in hits]
    assert [d.metadata["score"] for d in docs] == [h.score for h in hits]
    for doc, hit in zip(docs, hits, strict=True):
        assert doc.page_content == hit.text
        assert doc.metadata["doc_id"] == hit.doc_id and doc.metadata["chunk_id"] == hit.chunk_id
        assert doc.metadata["scores"] == hit.scores and doc.metadata["ranks"] == hit.ranks
        assert (doc.metadata["start"], doc.metadata["end"], doc.metadata["title"]) == (hit.start, hit.end, hit.title)
        assert doc.metadata["lang"] == hit.metadata["lang"]  # user metadata comes along


def test_async_matches_sync_and_runs_off_the_event_loop(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    retriever = CjkragRetriever(engine=engine, principals=SUPPORT, k=4)
    expected = [d.id for d in retriever.invoke(QUERY)]
    docs = run_async_off_loop(engine, monkeypatch, lambda: retriever.ainvoke(QUERY))
    assert [d.id for d in docs] == expected


# ------------------------------------------------------------------------------------ access control
def test_a_denied_chunk_is_never_returned(engine: Any) -> None:
    retriever = CjkragRetriever(engine=engine, principals=MALLORY, k=100)
    everything = retriever.invoke("密码重置审计 硬件密钥 管理员")
    assert everything and "audit-zh" not in {d.metadata["doc_id"] for d in everything}
    for mode in ("hybrid", "dense", "keyword"):
        aimed = retriever.invoke("密码重置的内部审计记录", mode=mode, filters={"field": "doc_id", "operator": "==", "value": "audit-zh"})
        assert aimed == []
    # the same chunk is there for a principal it is not denied to: the test above could fail
    assert "audit-zh" in {d.metadata["doc_id"] for d in CjkragRetriever(engine=engine, principals=SUPPORT, k=100).invoke("密码重置审计")}


def test_principals_are_fixed_and_a_call_cannot_widen_them(engine: Any) -> None:
    retriever = CjkragRetriever(engine=engine, principals=["group:nobody"], k=100)
    visible = {d.metadata["doc_id"] for d in retriever.invoke(QUERY)}
    public = {d["id"] for d in CORPUS if d.get("public")}
    assert visible == public
    with pytest.raises(AccessError, match="fixed"):
        retriever.invoke(QUERY, principals=["group:support"])
    with pytest.raises(Exception, match="frozen"):
        retriever.principals = ("group:support",)  # type: ignore[misc]
    # a filter on acl only narrows: asking for group:sales chunks as group:nobody still gives nothing private
    acl = {"field": "acl", "operator": "contains_any", "value": ["group:sales"]}
    assert retriever.invoke(QUERY, filters=acl) == []


@pytest.mark.parametrize("bad", ["group:support", [""], ["group:a\nuser:b"], [7], None])
def test_bad_principals_are_refused(engine: Any, bad: Any) -> None:
    with pytest.raises((AccessError, ValueError)):
        CjkragRetriever(engine=engine, principals=bad)


# ------------------------------------------------------------------------------------ per-call arguments
def test_per_call_k_filters_and_mode(engine: Any) -> None:
    retriever = CjkragRetriever(engine=engine, principals=SUPPORT, k=5)
    assert len(retriever.invoke(QUERY, k=2)) == 2
    ja = retriever.invoke(QUERY, filters={"field": "metadata.lang", "operator": "==", "value": "ja"})
    assert [d.metadata["doc_id"] for d in ja] == ["pw-ja"]
    keyword = retriever.invoke("退货", mode="keyword")
    assert keyword[0].metadata["doc_id"] == "refund-zh" and set(keyword[0].metadata["scores"]) == {"keyword"}
    with pytest.raises(TypeError, match="unknown argument"):
        retriever.invoke(QUERY, top_k=3)
    for k in (0, -1, 1001, True, "3"):
        with pytest.raises(ConfigError, match="k must be"):
            retriever.invoke(QUERY, k=k)


def test_constructor_filter_and_call_filter_are_anded(engine: Any) -> None:
    account = {"field": "metadata.category", "operator": "==", "value": "account"}
    retriever = CjkragRetriever(engine=engine, principals=SUPPORT, k=100, filters=account)
    assert {d.metadata["category"] for d in retriever.invoke(QUERY)} == {"account"}
    recent = {"field": "metadata.year", "operator": ">=", "value": 2024}
    assert {d.metadata["doc_id"] for d in retriever.invoke(QUERY, filters=recent)} == {"pw-zh", "audit-zh"}
    with pytest.raises(ValueError, match="unknown operator"):  # pydantic's ValidationError carries the FilterError
        CjkragRetriever(engine=engine, principals=SUPPORT, filters={"field": "metadata.x", "operator": "~", "value": 1})
    with pytest.raises(FilterError, match="unknown operator"):
        retriever.invoke(QUERY, filters={"field": "metadata.x", "operator": "~", "value": 1})


# ------------------------------------------------------------------------------------ LCEL
def test_retriever_in_an_lcel_chain(engine: Any) -> None:
    retriever = CjkragRetriever(engine=engine, principals=SUPPORT, k=2)
    prompts: list[str] = []

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['doc_id']}] {d.page_content}" for d in docs)

    def record(prompt: Any) -> Any:
        prompts.append(prompt.to_string())
        return prompt

    prompt = ChatPromptTemplate.from_template("Answer from the context.\nContext:\n{context}\n\nQuestion: {question}")
    llm = FakeListChatModel(responses=["打开设置页面，点击“忘记密码”。"])
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(record)
        | llm
        | StrOutputParser()
    )
    assert chain.invoke(QUERY) == "打开设置页面，点击“忘记密码”。"
    top = retriever.invoke(QUERY)
    assert f"[{top[0].metadata['doc_id']}] {top[0].page_content}" in prompts[0]
    assert "Question: 如何重置密码" in prompts[0]
    assert asyncio.run(chain.ainvoke(QUERY)) == "打开设置页面，点击“忘记密码”。"


# ------------------------------------------------------------------------------------ ingestion
def test_engine_ingests_langchain_documents_with_an_access_rule(tmp_path: Any, share_bundled_model: None) -> None:
    import cjkrag

    engine = cjkrag.open({"data_dir": str(tmp_path)})
    docs = [
        Document(page_content="发票可以在订单详情页下载。", metadata={"source": "faq/invoice.md", "title": "发票"}),
        Document(id="kb-7", page_content="会员积分每年一月一日清零。", metadata={"source": "faq/points.md", "page": 3}),
        Document(page_content="   ", metadata={"source": "faq/empty.md"}),
    ]
    report = engine.ingest(docs, acl=["group:billing"])
    assert report.documents == 2 and len(report.skipped) == 1 and report.failed == []
    again = engine.ingest(docs, acl=["group:billing"])
    assert again.documents == 0 and again.unchanged == 2  # derived ids are stable
    retriever = CjkragRetriever(engine=engine, principals=["group:billing"], k=5)
    found = {d.metadata["doc_id"]: d for d in retriever.invoke("发票在哪里下载")}
    assert "kb-7" in found and found["kb-7"].metadata["page"] == 3
    invoice = next(d for d in found.values() if d.metadata["source"] == "faq/invoice.md")
    assert invoice.metadata["doc_id"].startswith("lc-") and invoice.metadata["title"] == "发票"
    # the access rule is the call's: another group sees nothing
    assert CjkragRetriever(engine=engine, principals=["group:other"], k=5).invoke("发票") == []
    engine.close()


def test_metadata_cannot_grant_access_at_ingest(tmp_path: Any, share_bundled_model: None) -> None:
    import cjkrag

    engine = cjkrag.open({"data_dir": str(tmp_path)})
    sneaky = Document(page_content="工资表", metadata={"acl": ["group:everyone"], "public": True})
    assert engine.ingest([sneaky], acl=["group:hr"]).documents == 1
    assert CjkragRetriever(engine=engine, principals=["group:everyone"], k=5).invoke("工资表") == []
    assert len(CjkragRetriever(engine=engine, principals=["group:hr"], k=5).invoke("工资表")) == 1
    engine.close()
