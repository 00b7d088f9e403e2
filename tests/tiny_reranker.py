"""Build a tiny real cross-encoder (BERT, 2 layers, hidden 64) locally in seconds, for the rerank tests.

No reranker weights can be downloaded here, so this trains one:

* tokenizer: a character-level WordPiece vocabulary learned with ``tokenizers`` (``WordPieceTrainer``
  with no merges) on the CJK text below, wrapped as a ``transformers`` BERT fast tokenizer, so
  ``CrossEncoder`` / ``AutoTokenizer`` load it like any BERT reranker's tokenizer;
* model: ``BertForSequenceClassification`` (num_labels=1). Its weights start from a hand-set
  "lexical match" circuit (layer 0 attends from each token to identical tokens, layer 1 lets [CLS]
  read how many query tokens found a copy in the passage), because a 2-layer BERT trained from a
  random start needs minutes, not seconds, to discover cross-segment matching on 30 examples;
* training: AdamW on (query, passage, label) pairs: the 30 pairs below and the pair's passage buried
  in neutral filler as positives; other queries' passages and filler alone as negatives. It stops
  once every query scores its passage (plain and buried in filler) above all 29 other passages and
  filler, with a logit margin of 1.0 (checked every 20 steps, capped at MAX_STEPS).

The model is saved with ``save_pretrained`` and cached under the temp dir (``$CJKRAG_TEST_CACHE``
overrides), keyed by a hash of this file and the library versions, so only the first session pays.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

# (query, relevant passage): 10 Chinese, 10 Japanese, 10 Korean
PAIRS: list[tuple[str, str]] = [
    ("中国的首都", "北京是中国的首都。"),
    ("长城有多长", "长城全长两万多公里。"),
    ("熊猫吃什么", "熊猫主要吃竹子。"),
    ("怎么泡绿茶", "泡绿茶要用八十度的水。"),
    ("上海的人口", "上海人口约两千五百万。"),
    ("春节吃饺子", "北方人春节吃饺子。"),
    ("黄河的长度", "黄河长约五千公里。"),
    ("学习汉字", "学习汉字要多读多写。"),
    ("高铁的速度", "高铁时速三百五十公里。"),
    ("故宫门票", "故宫门票六十元。"),
    ("日本の首都", "東京は日本の首都です。"),
    ("富士山の高さ", "富士山の高さは三七七六メートル。"),
    ("寿司の作り方", "寿司は酢飯に魚をのせます。"),
    ("桜の季節", "桜は四月に満開になります。"),
    ("新幹線の速さ", "新幹線は時速三百キロです。"),
    ("京都の寺", "京都の清水寺は有名です。"),
    ("日本語の敬語", "敬語には三種類あります。"),
    ("地震の時", "地震の時は机の下へ。"),
    ("ラーメンの味", "ラーメンは醤油味が人気。"),
    ("温泉の入り方", "温泉では先に体を洗う。"),
    ("한국의 수도", "서울은 한국의 수도입니다."),
    ("김치 만들기", "김치는 배추로 만듭니다."),
    ("한글을 만든 사람", "세종대왕이 한글을 만들었습니다."),
    ("제주도 여행", "제주도는 여행지로 유명합니다."),
    ("부산의 바다", "부산 바다는 해운대가 유명합니다."),
    ("추석 음식", "추석에는 송편을 먹습니다."),
    ("태권도의 역사", "태권도는 전통 무술이며 올림픽 종목입니다."),
    ("비빔밥 재료", "비빔밥에는 나물이 들어갑니다."),
    ("지하철 요금", "지하철 요금은 천사백 원입니다."),
    ("케이팝 인기", "케이팝은 세계적으로 인기입니다."),
]

#: Neutral text, relevant to no query: pads long passages in training and in the windowing test.
FILLER: list[str] = [
    "这是填充文字。",
    "天气晴朗。",
    "これは埋め草です。",
    "小鳥が鳴いた。",
    "이것은 채움 문장.",
    "바람이 불었다.",
]

MAX_LENGTH = 64  # training sequence length (tokens); the model itself accepts 512 positions
SEED = 1234
MAX_STEPS = 300
CHECK_EVERY = 10
NEGATIVES = 2  # random other queries' passages per query and step
HARD_NEGATIVES = 2  # plus the passages that share the most characters with the query
MARGIN = 1.0


def filler_text(rng: random.Random, n_sentences: int) -> str:
    return "".join(rng.choice(FILLER) for _ in range(n_sentences))


def _cache_dir() -> Path:
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}".encode())
    root = Path(os.environ.get("CJKRAG_TEST_CACHE", tempfile.gettempdir()))
    return root / f"cjkrag-tiny-reranker-{digest.hexdigest()[:16]}"


def _tokenizer() -> Any:
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = [t for pair in PAIRS for t in pair] + FILLER
    # vocab_size=1: keep only the alphabet (characters and their ##continuations): character level
    tok.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(vocab_size=1, special_tokens=special))
    bert_tokenizer_fast: Any = transformers.BertTokenizerFast  # type: ignore[attr-defined]
    return bert_tokenizer_fast(
        vocab=tok.get_vocab(),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=False,
        model_max_length=512,
    )


def _lexical_match_init(model: Any, tokenizer: Any) -> None:
    """Hand-set weights: [CLS] ends up holding the share of query tokens that occur in the passage.

    Hidden dims: 0-31 token identity (``x`` and ``##x`` share a vector), 32-39 segment (+1 query,
    -1 passage), 40-47 layer-0 output (segment mix of identical tokens: a query token with a copy in
    the passage mixes +1 and -1), 48-55 layer-1 output ([CLS] averages 40-47 over query tokens).
    Pooler and classifier stay random; training calibrates them (and everything else).
    """
    import torch

    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        emb = model.bert.embeddings
        word = torch.zeros_like(emb.word_embeddings.weight)
        identity: dict[str, torch.Tensor] = {}
        for token, index in tokenizer.get_vocab().items():
            key = token.removeprefix("##")
            if key not in identity:
                identity[key] = torch.randn(32, generator=gen)
            word[index, :32] = identity[key]
        emb.word_embeddings.weight.copy_(word)
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.token_type_embeddings.weight[0, 32:40] = 1.0
        emb.token_type_embeddings.weight[1, 32:40] = -1.0
        for layer in model.bert.encoder.layer:
            for linear in (
                layer.attention.self.query,
                layer.attention.self.key,
                layer.attention.self.value,
                layer.attention.output.dense,
                layer.output.dense,  # feed-forward adds nothing at the start
            ):
                linear.weight.zero_()
                linear.bias.zero_()
        eye8, eye32 = torch.eye(8), torch.eye(32)
        first, second = model.bert.encoder.layer
        first.attention.self.query.weight[:32, :32] = eye32  # head 0: identical tokens attend
        first.attention.self.key.weight[:32, :32] = eye32
        first.attention.self.value.weight[:8, 32:40] = eye8  # ... and read each other's segment
        first.attention.output.dense.weight[40:48, :8] = 3.0 * eye8
        second.attention.self.query.weight[:8, 32:40] = eye8  # head 0: attend within the query
        second.attention.self.key.weight[:8, 32:40] = eye8
        second.attention.self.value.weight[:8, 40:48] = eye8
        second.attention.output.dense.weight[48:56, :8] = 3.0 * eye8


def _hard_negatives(k: int) -> list[list[int]]:
    """Per query, the k other passages sharing the most characters with it (the hardest negatives)."""
    n = len(PAIRS)
    out: list[list[int]] = []
    for i, (query, _) in enumerate(PAIRS):
        chars = set(query) - {" "}
        ranked = sorted((j for j in range(n) if j != i), key=lambda j: (-len(chars & set(PAIRS[j][1])), j))
        out.append(ranked[:k])
    return out


def _examples(rng: random.Random, hard: list[list[int]]) -> list[tuple[str, str, float]]:
    """One step's (query, passage, label): per query 2 positives; filler, hard and random negatives."""
    out: list[tuple[str, str, float]] = []
    n = len(PAIRS)
    for i, (query, passage) in enumerate(PAIRS):
        buried = filler_text(rng, rng.randint(1, 2)) + passage + filler_text(rng, rng.randint(0, 1))
        out += [
            (query, passage, 1.0),
            (query, buried, 1.0),
            (query, filler_text(rng, rng.randint(1, 3)), 0.0),
        ]
        others = rng.sample([x for x in range(n) if x != i and x not in hard[i]], NEGATIVES)
        out += [(query, PAIRS[j][1], 0.0) for j in hard[i] + others]
    return out


def _worst_margin(model: Any, tokenizer: Any) -> float:
    """min over queries of: min(own passage, own passage in filler) - max(29 other passages, filler)."""
    import torch

    rng = random.Random(SEED + 1)
    n = len(PAIRS)
    queries = [q for q, _ in PAIRS for _ in range(n + 2)]
    passages: list[str] = []
    for i in range(n):
        passages += [p for _, p in PAIRS]
        passages += [filler_text(rng, 3), filler_text(rng, 2) + PAIRS[i][1]]
    with torch.inference_mode():
        enc = tokenizer(
            queries, passages, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        logits = model(**enc).logits.view(n, n + 2)
    worst = float("inf")
    for i in range(n):
        row = logits[i]
        negatives = torch.cat([row[:i], row[i + 1 : n], row[n : n + 1]])
        worst = min(worst, min(row[i].item(), row[n + 1].item()) - negatives.max().item())
    return worst


def build_tiny_reranker(target: Path | None = None) -> Path:
    """Train (or reuse the cached) tiny cross-encoder; returns the folder to load it from."""
    final = _cache_dir() if target is None else Path(target)
    if (final / "config.json").is_file() and (final / "tokenizer.json").is_file():
        return final
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(SEED)
        rng = random.Random(SEED)
        tokenizer = _tokenizer()
        settings: dict[str, Any] = {
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 512,
            "num_labels": 1,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
        config = BertConfig(**settings)
        model = BertForSequenceClassification(config)
        _lexical_match_init(model, tokenizer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        margin = float("-inf")
        hard = _hard_negatives(HARD_NEGATIVES)
        step = 0
        while step < MAX_STEPS:
            step += 1
            model.train()
            batch = _examples(rng, hard)
            enc = tokenizer(
                [q for q, _, _ in batch],
                [p for _, p, _ in batch],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            loss = loss_fn(model(**enc).logits.view(-1), torch.tensor([y for _, _, y in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % CHECK_EVERY == 0:
                model.eval()
                margin = _worst_margin(model, tokenizer)
                if margin > MARGIN:
                    break
        model.eval()
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        reloaded = AutoTokenizer.from_pretrained(staging)
        for text in [t for pair in PAIRS for t in pair] + FILLER:
            if reloaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
                raise RuntimeError(f"tiny reranker: the saved tokenizer does not round-trip on {text!r}")
        (staging / "TRAINING.txt").write_text(f"steps={step} worst_margin={margin:.3f}\n", encoding="utf-8")
    finally:
        torch.set_num_threads(threads)
    try:
        staging.rename(final)  # atomic; a concurrent session may have won the race (same content)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    if not (final / "config.json").is_file():
        raise RuntimeError(f"tiny reranker: could not store the model in {final}")
    return final
