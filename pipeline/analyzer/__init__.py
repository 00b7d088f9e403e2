"""The CJK keyword analyzer: one tokenization for index and query time, for every backend.

>>> from cjkrag.pipeline.analyzer import get_analyzer
>>> get_analyzer().analyze_query("東京の天気")  # doctest: +SKIP
['東京', '天気']
"""

from __future__ import annotations

from .analyzer import BIGRAM_LANGUAGES, DEFAULT_BIGRAM_PREFIX, CJKAnalyzer, get_analyzer, term_id
from .normalize import SUPPORTED_LANGUAGES, Language, detect_language, parse_language, query_language

__all__ = [
    "BIGRAM_LANGUAGES",
    "DEFAULT_BIGRAM_PREFIX",
    "SUPPORTED_LANGUAGES",
    "CJKAnalyzer",
    "Language",
    "detect_language",
    "get_analyzer",
    "parse_language",
    "query_language",
    "term_id",
]
