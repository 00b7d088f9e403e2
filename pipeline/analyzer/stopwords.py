"""Small built-in stop lists. Kept short on purpose: BM25's idf already discounts frequent words, the
lists only remove function words whose matches are pure noise.

Japanese and Korean function words are mostly removed by part of speech (see ``JA_DROP_POS`` /
``KO_KEEP_TAGS``); the lemma lists below catch the light verbs and formal nouns that the part of speech
cannot tell apart from content words.
"""

from __future__ import annotations

from typing import Final

ZH_STOPWORDS: Final = frozenset(
    [
        "的",
        "了",
        "是",
        "在",
        "和",
        "与",
        "及",
        "或",
        "也",
        "都",
        "就",
        "而",
        "并",
        "着",
        "过",
        "把",
        "被",
        "让",
        "给",
        "对",
        "从",
        "向",
        "于",
        "以",
        "之",
        "其",
        "这",
        "那",
        "这个",
        "那个",
        "这些",
        "那些",
        "一个",
        "个",
        "我",
        "你",
        "他",
        "她",
        "它",
        "我们",
        "你们",
        "他们",
        "她们",
        "它们",
        "吗",
        "呢",
        "吧",
        "啊",
        "呀",
        "么",
        "所",
        "所以",
        "因为",
        "但",
        "但是",
        "如果",
        "则",
        "即",
        "将",
        "又",
        "还",
        "地",
        "得",
        "很",
        "啦",
        "嗯",
        "哦",
        "为",
        "为了",
        "等",
        "等等",
    ]
)
"""Chinese function words (particles, pronouns, conjunctions, common prepositions), Simplified only:
Chinese runs are folded to Simplified before this list is applied."""

JA_DROP_POS: Final = frozenset(
    {"助詞", "助動詞", "補助記号", "空白", "記号", "代名詞", "連体詞", "接続詞", "感動詞"}
)
"""First-level SudachiPy parts of speech that never make a keyword (particles, auxiliaries, symbols,
whitespace, pronouns, adnominals, conjunctions, interjections)."""

JA_DROP_POS2: Final = frozenset({("形状詞", "助動詞語幹")})
"""(level 1, level 2) parts of speech dropped as well (``よう`` of ``ように``)."""

JA_STOP_LEMMAS: Final = frozenset(
    {
        "為る",
        "居る",
        "有る",
        "成る",
        "出来る",
        "こと",
        "事",
        "もの",
        "物",
        "等",
        "よう",
        "様",
        "ため",
        "為",
        "所",
        "ところ",
    }
)
"""SudachiPy normalized forms of light verbs (する, いる, ある, なる, できる) and formal nouns."""

KO_KEEP_TAGS: Final = frozenset({"NNG", "NNP", "NR", "XR", "SL", "SN", "SH", "VV", "VA"})
"""Kiwi tags kept (irregular variants ``VV-I``, ``VA-R``... are folded to their base tag first): common /
proper nouns, numerals, roots, foreign words, numbers, Hanja, verb and adjective stems. Dropped: particles
(J*), endings (E*), suffixes / prefixes (XS*, XP*), pronouns (NP), bound nouns (NNB: 것, 수), adverbs,
determiners, copulas, auxiliary verbs and symbols."""

KO_STOP_LEMMAS: Final = frozenset({"하다", "되다", "있다", "없다", "않다", "같다"})
"""Korean light verbs / adjectives emitted as ``stem + 다`` that carry no topic."""

EN_STOPWORDS: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "into",
        "than",
        "then",
        "there",
        "their",
    ]
)
"""A short English list (applied to every Latin word, whatever the language of the text)."""
