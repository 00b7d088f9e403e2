"""cjkrag analyzer tokens -> Qdrant sparse vectors whose dot product with ``Modifier.IDF`` is Lucene BM25.

A chunk's vector holds, per term, BM25's term-frequency part ``tf·(k1+1) / (tf + k1·(1 − b + b·dl/avgdl))``;
a query's holds each term's count. Qdrant multiplies each matching dimension by its IDF
``ln(1 + (N − df + 0.5)/(df + 0.5))``, computed from the live collection, so document frequencies stay right
after deletes and updates (no statistics to maintain here). ``avgdl`` is fixed per collection
(``store.qdrant.bm25_avgdl``, recorded with the collection), because Qdrant keeps no document lengths: scores
equal Lucene BM25 exactly when the real average length equals it, and only the length normalization drifts
otherwise (the conformance suite checks the scores against a reference BM25 with the same ``avgdl``).

Terms become indices by hashing: the first 4 bytes of BLAKE2b of the UTF-8 term, an unsigned 32-bit index
(Qdrant's sparse index type). Hashing needs no shared dictionary (several writers, no state to persist or
lose) at the cost of collisions: two terms with the same index act as one term (a query for one also
matches chunks with the other, and they share a document frequency). With V distinct terms the expected
number of colliding pairs is V²/2³³: ~0.01 for 10k terms, ~1.2 for 100k, ~116 for 1M (a 1M-term
vocabulary is far past a CJK analyzer's on any corpus here). Within one chunk, colliding terms' counts are
added (Qdrant requires unique indices).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

K1 = 1.2
B = 0.75
SPARSE_SCHEME = "blake2b32-bm25-v1"


def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "big")


def _counts(terms: Sequence[str]) -> Counter[int]:
    return Counter(term_index(t) for t in terms if t)


def document_vector(terms: Sequence[str], avgdl: float) -> tuple[list[int], list[float]]:
    """(indices, values) of a chunk's analyzer tokens; empty for no tokens."""
    counts = _counts(terms)
    dl = sum(counts.values())
    norm = K1 * (1 - B + B * dl / avgdl)
    indices = sorted(counts)
    return indices, [counts[i] * (K1 + 1) / (counts[i] + norm) for i in indices]


def query_vector(terms: Sequence[str]) -> tuple[list[int], list[float]]:
    """(indices, values) of a query's tokens: each term's count (a repeated term counts again, as in Lucene)."""
    counts = _counts(terms)
    indices = sorted(counts)
    return indices, [float(counts[i]) for i in indices]
