"""``CJKAnalyzer``: the one keyword analyzer of cjkrag, used at index time and at query time for every
backend, so BM25 sees the same terms whatever the vector database.

Pipeline for one text:

1. normalize: NFKC (full / half width folded) + case folding;
2. cut into script runs (:mod:`.normalize`): Han+kana, Hangul (with the spaces between Korean words),
   other letters/digits (one word per run); punctuation, symbols and emoji are dropped;
3. pick the language of each Han+kana run: Japanese when its sentence has hiragana (the particles and
   inflections of any Japanese sentence), or when the text is mostly Japanese (a Han-only title or a
   katakana-only heading of a Japanese text), or when the caller said ``language="ja"``. Otherwise the
   run is Chinese, and a kana piece inside it (a katakana name in a Chinese sentence) goes to the
   Japanese analyzer alone. A query of Han characters without ``language`` is ambiguous and is read
   both ways (see :meth:`CJKAnalyzer.analyze_query`). Hangul -> ko;
4. analyze each run with a real morphological analyzer (:mod:`.languages`): rjieba search mode (after
   OpenCC Traditional->Simplified, Chinese runs only: Japanese kanji are never folded), SudachiPy
   normalized forms, kiwipiepy content morphemes; other words are kept lowercased (English stop list);
5. add character bigrams of the CJK runs as a recall backstop for words the dictionaries do not know.

Each step's output stays in text order: the tokens of run 1, then of run 2... (within a run: words, then
its bigrams).

Bigram tokens carry the prefix ``_b_`` so they never collide with words, and by default only Chinese and
Korean runs get them. Both choices are measured with bm25s over our tokens (``python
benchmarks/analyzer.py --quality``: every query of each set; nDCG@10):

=================  ==================  ==============  ==========  ===========
set                ``_b_`` (default)   plain bigrams   no bigrams  char-bigram
=================  ==================  ==============  ==========  ===========
cmrc2018 (zh)      0.9872              0.9858          0.9767      0.9845
STS-B zh pairs     0.8272              0.8209          0.8190      0.8124
KorSTS pairs (ko)  0.8703              0.8683          0.8395      0.8635
=================  ==================  ==============  ==========  ===========

With plain bigrams a two-character word and the same bigram fold into one term: its term frequency doubles
(BM25 saturates it) and the idf can no longer tell "this word" from "these two characters inside some
longer word". As a separate family, word matches and character matches each keep their own idf, and a
query word segmented differently from the document still matches through its bigrams. For Japanese the
bigrams do not pay: jaquad is unchanged (0.9151 with Han+Katakana bigrams, 0.9149 without, recall@10
0.9876 vs 0.9886) and JSTS pairs lose (0.5048 vs 0.5173; Han-only bigrams were worse still in an earlier
run: 0.903 / 0.492). SudachiPy's normalized forms already unify spellings and its unknown-word grouping
segments names the same way on both sides, so bigrams mostly add noise there;
``bigram_languages=("zh", "ja", "ko")`` turns them on. Naive character bigrams (``char-bigram``,
Elasticsearch's ``cjk_bigram``) stay below on every set (jaquad 0.9113, JSTS 0.4931).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Literal

from cjkrag.errors import ConfigError, InputError

from .languages import ChineseBackend, JapaneseBackend, KoreanBackend
from .normalize import (
    HAN,
    RUN_RE,
    SCRIPT_PIECE_RE,
    JapaneseContext,
    Language,
    detect_language,
    has_kana,
    normalize,
    parse_language,
)
from .stopwords import EN_STOPWORDS

DEFAULT_BIGRAM_PREFIX: Final = "_b_"
BIGRAM_LANGUAGES: Final = frozenset({"zh", "ko"})
"""Languages whose runs get character bigrams when ``bigrams=True`` (measured: see the module docstring)."""
_ALL_LANGUAGES: Final = frozenset({"zh", "ja", "ko"})

_JA_BIGRAM_RE: Final = re.compile(f"[{HAN}\u30a1-\u30fa\u30fc-\u30ff]{{2,}}")  # Han / Katakana stretches
_WS_RE: Final = re.compile(r"\s")


def term_id(token: str) -> str:
    """A stable ASCII alphanumeric id for a token (``"t"`` + 16 hex digits of BLAKE2b), for backends whose
    analyzers only do standard tokenization: index ``" ".join(map(term_id, tokens))`` and query the same."""
    return "t" + hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class _Plan:
    """The runs of one text, grouped by the back end that analyzes them: ``*_at[k]`` is the slot of run
    ``*_runs[k]``; ``slots[i]`` collects the tokens of the i-th run of the text, so output keeps text order."""

    __slots__ = ("ja_at", "ja_runs", "ko_at", "ko_runs", "slots", "zh_at", "zh_runs")

    def __init__(self) -> None:
        self.slots: list[list[str]] = []
        self.zh_at: list[int] = []
        self.zh_runs: list[str] = []
        self.ja_at: list[int] = []
        self.ja_runs: list[str] = []
        self.ko_at: list[int] = []
        self.ko_runs: list[str] = []

    def add(self, at: list[int], runs: list[str], run: str) -> None:
        """A new slot for ``run``, analyzed by the back end that owns ``at`` / ``runs``."""
        at.append(len(self.slots))
        runs.append(run)
        self.slots.append([])

    def add_han(self, run: str, *, both_ways: bool) -> None:
        """A Han run read as Chinese (and also as Japanese for an ambiguous query)."""
        self.add(self.zh_at, self.zh_runs, run)
        if both_ways:
            self.ja_at.append(self.zh_at[-1])
            self.ja_runs.append(run)

    def tokens(self) -> list[str]:
        return [t for slot in self.slots for t in slot]


class CJKAnalyzer:
    """Chinese / Japanese / Korean (and Latin) keyword analyzer producing BM25 terms.

    Every token is a non-empty string without whitespace: tokens can be joined with single spaces for a
    backend whose analyzer splits on whitespace, or mapped through :func:`term_id` for one that only does
    standard tokenization. Construction is light; the dictionaries load on first use or in
    :meth:`warm_up`. Instances are thread-safe.

    Options:
        bigrams: add CJK character bigrams (recall backstop for out-of-vocabulary words).
        traditional_to_simplified: fold Chinese runs to Simplified with OpenCC. ``True`` means the
            ``"tw2sp"`` config (characters *and* Taiwan phrases: 資料庫 -> 数据库, 軟體 -> 软件), which
            plain ``"t2s"`` (characters only: 資料庫 -> 资料库) would miss; pass a config name to choose.
        stopwords: drop stop words (built-in lists; Japanese / Korean particles are always dropped by POS).
        japanese: the Japanese analyzer; only ``"sudachi"`` (SudachiPy + sudachidict_core) exists.
        japanese_subwords: also emit SudachiPy mode A parts of mode C compounds (検索エンジン -> 検索, エンジン).
        korean: ``"kiwi"`` (morphemes from kiwipiepy, plus bigrams) or ``"bigrams"`` (syllable bigrams of
            each Korean word only, whatever ``bigrams`` says; no analyzer: ~40x faster, measured 7.8 vs
            0.18 MB/s of CPU time, for nDCG@10 0.8635 instead of 0.8703 on KorSTS pairs).
        bigram_prefix: marker put before bigram tokens ("" emits plain bigrams, which merge with words).
        bigram_languages: languages whose runs get bigrams.
        korean_workers: Kiwi worker threads for :meth:`analyze_many` and long Korean texts (default: all
            cores).
        max_token_chars: longer Latin words are cut to this length (keeps backends' term limits safe).
    """

    def __init__(
        self,
        *,
        bigrams: bool = True,
        traditional_to_simplified: bool | str = True,
        stopwords: bool = True,
        japanese: Literal["sudachi"] = "sudachi",
        japanese_subwords: bool = True,
        korean: Literal["kiwi", "bigrams"] = "kiwi",
        bigram_prefix: str = DEFAULT_BIGRAM_PREFIX,
        bigram_languages: Sequence[str] | frozenset[str] = BIGRAM_LANGUAGES,
        korean_workers: int | None = None,
        max_token_chars: int = 64,
    ) -> None:
        if japanese != "sudachi":
            raise ConfigError(f"CJKAnalyzer(japanese={japanese!r}): the only Japanese analyzer is 'sudachi'")
        if korean not in ("kiwi", "bigrams"):
            raise ConfigError(f"CJKAnalyzer(korean={korean!r}): use 'kiwi' (morphemes) or 'bigrams'")
        if not isinstance(bigram_prefix, str) or _WS_RE.search(bigram_prefix):
            raise ConfigError(
                f"CJKAnalyzer(bigram_prefix={bigram_prefix!r}): must be a string without spaces"
            )
        unknown = set(bigram_languages) - _ALL_LANGUAGES
        if unknown:
            raise ConfigError(
                f"CJKAnalyzer(bigram_languages=...): unknown {sorted(unknown)}; use a subset of zh, ja, ko"
            )
        if not isinstance(max_token_chars, int) or max_token_chars < 1:
            raise ConfigError(f"CJKAnalyzer(max_token_chars={max_token_chars!r}): must be a positive int")
        if korean_workers is not None and (not isinstance(korean_workers, int) or korean_workers < 1):
            raise ConfigError(f"CJKAnalyzer(korean_workers={korean_workers!r}): must be None or >= 1")
        if traditional_to_simplified is True:
            opencc_config: str | None = "tw2sp"
        elif traditional_to_simplified is False:
            opencc_config = None
        elif isinstance(traditional_to_simplified, str) and traditional_to_simplified:
            opencc_config = traditional_to_simplified.removesuffix(".json")
        else:
            raise ConfigError(
                f"CJKAnalyzer(traditional_to_simplified={traditional_to_simplified!r}): use True, False "
                "or an OpenCC config name such as 'tw2sp' or 't2s'"
            )
        self.bigrams = bigrams
        self.opencc_config = opencc_config
        self.stopwords = stopwords
        self.japanese = japanese
        self.bigram_prefix = bigram_prefix
        self.bigram_languages = frozenset(bigram_languages) if bigrams else frozenset()
        self.max_token_chars = max_token_chars
        self.korean = korean
        self._zh = ChineseBackend(opencc_config, stopwords=stopwords)
        self._ja = JapaneseBackend(subwords=japanese_subwords, stopwords=stopwords)
        self._ko = KoreanBackend(num_workers=korean_workers, stopwords=stopwords)
        self._en_stop = EN_STOPWORDS if stopwords else frozenset()
        self._options = (
            f"bigrams={sorted(self.bigram_languages)},prefix={bigram_prefix},opencc={opencc_config},"
            f"stopwords={stopwords},ja={japanese},subwords={japanese_subwords},ko={korean},max={max_token_chars}"
        )

    def __repr__(self) -> str:
        return f"CJKAnalyzer({self._options})"

    @property
    def fingerprint(self) -> str:
        """Options + analyzer versions: store it with an index; a different value means re-index."""
        from importlib import metadata

        versions = []
        for package in ("rjieba", "opencc", "sudachipy", "sudachidict-core", "kiwipiepy", "kiwipiepy_model"):
            try:
                versions.append(f"{package}={metadata.version(package)}")
            except metadata.PackageNotFoundError:
                versions.append(f"{package}=none")
        return f"cjk-analyzer/1;{self._options};{','.join(versions)}"

    def warm_up(self, languages: Sequence[str] = ("zh", "ja", "ko")) -> None:
        """Loads the dictionaries now (rjieba + OpenCC, SudachiPy, kiwipiepy) instead of on first use."""
        for lang in languages:
            code = parse_language(lang, field="warm_up(languages)")
            if code == "zh":
                self._zh.load()
            elif code == "ja":
                self._ja.load()
            elif code == "ko":
                self._ko.load()

    # ---------------------------------------------------------------------------------------------
    def analyze(self, text: str, language: str | None = None) -> list[str]:
        """Index-side terms of ``text``, in order, with repetition (term frequencies for BM25).

        ``language`` ("zh", "ja", "ko", "en", a BCP-47 tag, or None to detect from the script) decides
        how Han is read: "ja" reads every Han+kana run as Japanese, "zh" reads Han as Chinese even in a
        sentence with hiragana; kana and Hangul are unambiguous and always go to Japanese / Korean.
        """
        return self._analyze(text, language, query=False)

    def analyze_query(self, text: str, language: str | None = None) -> list[str]:
        """Query-side terms: the analysis of :meth:`analyze`, deduplicated (first occurrence order) so a
        repeated query word does not count twice in BM25, with one difference where it must: Han in a
        query without hiragana and without ``language`` is ambiguous (東京, 検索, 東京オリンピック are
        Japanese *and* Chinese queries), so those Han runs are analyzed both as Chinese (Simplified: 东京)
        and as Japanese (東京) and the terms of both are kept, matching Chinese and Japanese documents
        alike. (Measured on Chinese query sets, the extra Japanese reading changes nDCG@10 by < 0.003.)

        Without ``language`` the query's language is decided once for the whole query
        (:func:`~.normalize.detect_language`): a Japanese or Korean query is analyzed as such throughout
        (a kanji-only sentence of a Japanese query is Japanese too); a query of Han alone stays ambiguous."""
        if language is None and isinstance(text, str):
            detected = detect_language(text)
            language = detected if detected in ("ja", "ko") else None
        return list(dict.fromkeys(self._analyze(text, language, query=True)))

    def _analyze(self, text: str, language: str | None, *, query: bool) -> list[str]:
        plan = self._plan(text, parse_language(language), field="text", query=query)
        self._run_zh_ja(plan)
        if plan.ko_runs:
            self._ko.load()
            self._fill_ko(plan, self._ko.analyze(plan.ko_runs))
        return plan.tokens()

    def analyze_many(
        self, texts: Sequence[str], languages: Sequence[str | None] | str | None = None
    ) -> list[list[str]]:
        """:meth:`analyze` for a batch; Korean goes through Kiwi's multi-threaded batch API.

        ``languages``: one code for all texts, or one per text (same length as ``texts``), or None.
        """
        if isinstance(texts, str):
            raise InputError("analyze_many(texts=...): expected a sequence of strings, got one str")
        if languages is None or isinstance(languages, str):
            langs = [parse_language(languages, field="languages")] * len(texts)
        else:
            if len(languages) != len(texts):
                raise InputError(
                    f"analyze_many(languages=...): {len(languages)} languages for {len(texts)} texts; "
                    "give one per text, a single code, or None"
                )
            langs = [parse_language(lang, field=f"languages[{i}]") for i, lang in enumerate(languages)]
        plans = [
            self._plan(t, lang, field=f"texts[{i}]")
            for i, (t, lang) in enumerate(zip(texts, langs, strict=True))
        ]
        for plan in plans:
            self._run_zh_ja(plan)
        if any(plan.ko_runs for plan in plans):
            self._ko.load()
            results = self._ko.analyze_batch([plan.ko_runs for plan in plans])
            for plan, tokens in zip(plans, results, strict=True):
                if plan.ko_runs:
                    self._fill_ko(plan, tokens)
        return [plan.tokens() for plan in plans]

    # ---------------------------------------------------------------------------------------------
    def _plan(self, text: str, language: Language | None, *, field: str, query: bool = False) -> _Plan:
        if not isinstance(text, str):
            raise InputError(
                f"{field}: expected str, got {type(text).__name__}"
                + ("; decode bytes to str first" if isinstance(text, (bytes, bytearray)) else "")
            )
        plan = _Plan()
        norm = normalize(text)
        context: JapaneseContext | None = None
        text_has_kana = language != "ja" and has_kana(norm)
        auto = language not in ("zh", "ja")  # detect from the script ("en", "ko" and None alike)
        both_ways = query and auto  # an ambiguous Han query is read as zh and as ja
        en_stop, limit = self._en_stop, self.max_token_chars
        korean_bigrams_only = self.korean == "bigrams"
        slots = plan.slots
        for m in RUN_RE.finditer(norm):
            kind, run = m.lastgroup, m.group()
            if kind == "word":
                slots.append([] if run in en_stop else [run[:limit]])
            elif kind == "ko":
                if korean_bigrams_only:
                    slots.append(self._hangul_bigrams(run, single=True))
                else:
                    plan.add(plan.ko_at, plan.ko_runs, run)
            elif language == "ja":
                plan.add(plan.ja_at, plan.ja_runs, run)
            elif not text_has_kana:
                plan.add_han(run, both_ways=both_ways)
            else:
                if context is None:
                    context = JapaneseContext(norm)
                if auto and context.at(m.start()):
                    plan.add(plan.ja_at, plan.ja_runs, run)
                elif not has_kana(run):
                    plan.add_han(run, both_ways=both_ways)
                else:  # Chinese context: Han pieces are Chinese, kana pieces (katakana names) Japanese
                    for piece in SCRIPT_PIECE_RE.finditer(run):
                        if piece.lastgroup == "han":
                            plan.add_han(piece.group(), both_ways=both_ways)
                        else:
                            plan.add(plan.ja_at, plan.ja_runs, piece.group())
        return plan

    def _run_zh_ja(self, plan: _Plan) -> None:
        prefix, slots = self.bigram_prefix, plan.slots
        if plan.zh_runs:
            self._zh.load()
            runs = self._zh.to_simplified(plan.zh_runs)
            words = self._zh.words_many(runs)
            with_bigrams = "zh" in self.bigram_languages
            for i, run, tokens in zip(plan.zh_at, runs, words, strict=True):
                if with_bigrams and len(run) > 1:
                    tokens.extend([prefix + a + b for a, b in pairwise(run)])
                slots[i].extend(tokens)
        if plan.ja_runs:
            self._ja.load()
            results = self._ja.analyze(plan.ja_runs)
            with_bigrams = "ja" in self.bigram_languages
            for i, run, tokens in zip(plan.ja_at, plan.ja_runs, results, strict=True):
                if with_bigrams:
                    for bm in _JA_BIGRAM_RE.finditer(run):
                        s = bm.group()
                        tokens.extend([prefix + a + b for a, b in pairwise(s)])
                slots[i].extend(tokens)

    def _fill_ko(self, plan: _Plan, results: list[list[str]]) -> None:
        with_bigrams = "ko" in self.bigram_languages
        for i, span, tokens in zip(plan.ko_at, plan.ko_runs, results, strict=True):
            if with_bigrams:
                tokens.extend(self._hangul_bigrams(span))
            plan.slots[i] = tokens

    def _hangul_bigrams(self, span: str, *, single: bool = False) -> list[str]:
        """Prefixed syllable bigrams of each word of a Hangul span (``single``: one-syllable words too)."""
        prefix, out = self.bigram_prefix, []
        for word in span.split():
            if len(word) > 1:
                out.extend([prefix + a + b for a, b in pairwise(word)])
            elif single:
                out.append(word)
        return out


_CACHE: dict[tuple[tuple[str, object], ...], CJKAnalyzer] = {}
_CACHE_LOCK = threading.Lock()


def get_analyzer(**options: object) -> CJKAnalyzer:
    """A shared :class:`CJKAnalyzer` per set of options (dictionaries load once per process)."""
    key = tuple(
        sorted(
            (k, tuple(sorted(v)) if isinstance(v, (list, tuple, set, frozenset)) else v)
            for k, v in options.items()
        )
    )
    with _CACHE_LOCK:
        analyzer = _CACHE.get(key)
        if analyzer is None:
            analyzer = CJKAnalyzer(**options)  # type: ignore[arg-type]
            _CACHE[key] = analyzer
        return analyzer
