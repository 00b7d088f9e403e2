"""Fusion of ranked lists from several retrievers (dense, keyword, ...) into one ranking.

Every function takes ``runs``: retriever name -> ``[(item_id, score), ...]`` best first, scores
higher-is-better, and returns :class:`FusedItem` s sorted by fused score (descending). Ties (scores
equal to 12 significant digits) are broken deterministically: the better (smaller) best rank over all
runs first, then the item id.

Conventions shared by all methods:

* ranks are 1-based positions in a run; if an id appears twice in one run, only its first (best)
  occurrence counts and the later one is ignored (ranks stay contiguous);
* scores must be finite numbers: NaN / infinity raise :class:`~cjkrag.errors.InputError`;
* ``weights`` maps retriever name -> weight (>= 0); a run without a weight gets 1.0, weights of
  retrievers absent from ``runs`` are ignored; a negative / non-finite weight raises ConfigError;
* an empty ``runs`` (or runs that are all empty) fuses to ``[]``.

Methods:

* :func:`rrf` - reciprocal rank fusion (Cormack et al. 2009): ``sum_r w_r / (k + rank_r)``;
  scores are not used, only positions.
* :func:`weighted` - convex combination of per-run normalized scores (weights are divided by their sum).
  ``minmax`` maps a run to [0, 1]; ``zscore`` to ``(s - mean) / std`` (population std).
  An item missing from a run contributes **the run's minimum normalized score** (minmax: 0.0; zscore:
  the lowest z of that run), so being absent is never better than being last.  A run with no spread
  (a single hit, or all scores equal) gives every one of its items 1.0 and missing items 0.0 under both
  normalizations, so a hit in such a run still counts.
* :func:`adaptive` - weighted z-score fusion whose weights are set per query from evidence each run
  produces itself (no labels, nothing tuned per set): a run's weight is multiplied by its *fill*, the
  share of the candidate depth it returned (a keyword run that matched 3 documents where dense returned
  100 says little: the query's words are mostly absent from the corpus), by its *standout*, how far its
  top hit stands above the rest in z units (a clear winner vs a flat list), and by caller evidence such
  as the share of the analyzed query the keyword run matched (``evidence``); see the function.
* :func:`dbsf` - distribution-based score fusion as in Qdrant: each run is mapped with
  ``(s - (mean - 3 std)) / (6 std)`` (sample std, ddof=1) and clipped to [0, 1]; a run with a single
  hit or zero variance maps to 0.5 (as Qdrant does); missing items contribute 0; weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cjkrag.errors import ConfigError, InputError

Runs = Mapping[str, Sequence[tuple[str, float]]]
FusionMethod = Literal["rrf", "weighted", "dbsf", "adaptive"]
Normalization = Literal["minmax", "zscore"]

METHODS: tuple[str, ...] = ("rrf", "weighted", "dbsf", "adaptive")
SIGNALS: tuple[str, ...] = ("fill", "standout", "gap")
DEFAULT_SIGNALS: tuple[str, ...] = ()
"""The engine's adaptive fusion uses no run signal by default, only the keyword run's
:func:`language_agreement` (``fill`` cost up to 0.0007 nDCG@10 on the QA sets; README, Results)."""
DEFAULT_FILL_AT = 20
"""A run with fewer hits than this counts as partly empty (two result pages; measured in README, Results)."""
NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore")


@dataclass(frozen=True)
class FusedItem:
    """One fused result: the fused score plus each retriever's raw score and 1-based rank."""

    id: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)


@dataclass
class _Run:
    name: str
    ids: list[str]
    scores: list[float]


def _clean_runs(runs: Runs) -> list[_Run]:
    """Validate ``runs``; drop duplicate ids inside a run (first occurrence wins)."""
    if not isinstance(runs, Mapping):
        raise InputError(
            f"fusion input must be a mapping retriever name -> [(id, score), ...], got {type(runs).__name__}"
        )
    cleaned: list[_Run] = []
    for name, run in runs.items():
        seen: set[str] = set()
        ids: list[str] = []
        scores: list[float] = []
        for position, entry in enumerate(run):
            try:
                item_id, raw = entry
            except (TypeError, ValueError):
                raise InputError(
                    f"fusion input: run {name!r} entry {position} is {entry!r}; expected an (id, score) pair"
                ) from None
            try:
                score = float(raw)
            except (TypeError, ValueError):
                raise InputError(
                    f"fusion input: run {name!r} item {item_id!r} has a non-numeric score {raw!r}"
                ) from None
            if not math.isfinite(score):
                raise InputError(
                    f"fusion input: run {name!r} item {item_id!r} has score {score}; scores must be "
                    "finite numbers (fix the retriever, or drop the hit before fusion)"
                )
            key = str(item_id)
            if key in seen:
                continue
            seen.add(key)
            ids.append(key)
            scores.append(score)
        cleaned.append(_Run(str(name), ids, scores))
    return cleaned


def _weights(runs: list[_Run], weights: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for run in runs:
        raw: Any = 1.0 if weights is None else weights.get(run.name, 1.0)
        try:
            w = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"retrieval.fusion.weights.{run.name} must be a number >= 0, got {raw!r}"
            ) from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(
                f"retrieval.fusion.weights.{run.name} must be a finite number >= 0, got {raw!r}"
            )
        out[run.name] = w
    return out


def _assemble(runs: list[_Run], fused: dict[str, float]) -> list[FusedItem]:
    scores: dict[str, dict[str, float]] = {item: {} for item in fused}
    ranks: dict[str, dict[str, int]] = {item: {} for item in fused}
    for run in runs:
        for position, (item, score) in enumerate(zip(run.ids, run.scores, strict=True), start=1):
            scores[item][run.name] = score
            ranks[item][run.name] = position
    items = [FusedItem(id=i, score=s, scores=scores[i], ranks=ranks[i]) for i, s in fused.items()]
    # scores equal to 12 significant digits are ties (float summation order must not pick the winner)
    items.sort(key=lambda it: (-float(f"{it.score:.12g}"), min(it.ranks.values(), default=0), it.id))
    return items


def rrf(runs: Runs, k: float = 60, weights: Mapping[str, float] | None = None) -> list[FusedItem]:
    """Reciprocal rank fusion: ``score(d) = sum over runs r containing d of w_r / (k + rank_r(d))``."""
    try:
        k_value = float(k)
    except (TypeError, ValueError):
        raise ConfigError(f"retrieval.fusion.k must be a number >= 0, got {k!r}") from None
    if not math.isfinite(k_value) or k_value < 0:
        raise ConfigError(f"retrieval.fusion.k must be a finite number >= 0 (default 60), got {k!r}")
    cleaned = _clean_runs(runs)
    w = _weights(cleaned, weights)
    fused: dict[str, float] = {}
    for run in cleaned:
        for position, item in enumerate(run.ids, start=1):
            fused[item] = fused.get(item, 0.0) + w[run.name] / (k_value + position)
    return _assemble(cleaned, fused)


def _normalize(scores: list[float], normalization: str) -> tuple[list[float], float]:
    """Normalized scores of one non-empty run and the value a missing item contributes."""
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores), 0.0
    if normalization == "minmax":
        span = high - low
        return [(s - low) / span for s in scores], 0.0
    mean = math.fsum(scores) / len(scores)
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0.0:  # spread too small to represent (denormal differences)
        return [1.0] * len(scores), 0.0
    z = [(s - mean) / std for s in scores]
    return z, min(z)


def weighted(
    runs: Runs,
    weights: Mapping[str, float] | None = None,
    normalization: str = "minmax",
) -> list[FusedItem]:
    """Convex combination of normalized scores (see the module docstring for missing items)."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"retrieval.fusion.normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
        )
    cleaned = _clean_runs(runs)
    w = _weights(cleaned, weights)
    total = math.fsum(w.values())
    if cleaned and total == 0.0:
        raise ConfigError(
            "retrieval.fusion.weights are all 0 for the runs being fused "
            f"({', '.join(r.name for r in cleaned)}): give at least one a positive weight"
        )
    all_ids = {item for run in cleaned for item in run.ids}
    fused: dict[str, float] = dict.fromkeys(all_ids, 0.0)
    for run in cleaned:
        if not run.ids:
            continue
        share = w[run.name] / total
        normed, floor = _normalize(run.scores, normalization)
        present = dict(zip(run.ids, normed, strict=True))
        for item in all_ids:
            fused[item] += share * present.get(item, floor)
    return _assemble(cleaned, fused)


def _dbsf_normalize(scores: list[float]) -> list[float]:
    n = len(scores)
    if n == 1:
        return [0.5]
    mean = math.fsum(scores) / n
    variance = math.fsum((s - mean) ** 2 for s in scores) / (n - 1)
    if variance == 0.0:
        return [0.5] * n
    std = math.sqrt(variance)
    low = mean - 3 * std
    return [min(1.0, max(0.0, (s - low) / (6 * std))) for s in scores]


def dbsf(runs: Runs, weights: Mapping[str, float] | None = None) -> list[FusedItem]:
    """Distribution-based score fusion (Qdrant's DBSF): mean +/- 3 std to [0, 1], clipped, weighted sum."""
    cleaned = _clean_runs(runs)
    w = _weights(cleaned, weights)
    fused: dict[str, float] = {}
    for run in cleaned:
        if not run.ids:
            continue
        for item, value in zip(run.ids, _dbsf_normalize(run.scores), strict=True):
            fused[item] = fused.get(item, 0.0) + w[run.name] * value
    return _assemble(cleaned, fused)


def _standout(scores: list[float], signal: str) -> float:
    """How decisively a run ranks its top hit, in z units of the run (>= 0; 1.0 without spread)."""
    if len(scores) < 2 or max(scores) == min(scores):
        return 1.0
    mean = math.fsum(scores) / len(scores)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in scores) / len(scores))
    if std == 0.0:
        return 1.0
    ordered = sorted(scores, reverse=True)
    if signal == "gap":
        return max(0.0, (ordered[0] - ordered[1]) / std)
    return max(0.0, (ordered[0] - mean) / std)


def adaptive(
    runs: Runs,
    weights: Mapping[str, float] | None = None,
    evidence: Mapping[str, float] | None = None,
    signals: Sequence[str] = DEFAULT_SIGNALS,
    fill_at: int | None = DEFAULT_FILL_AT,
) -> list[FusedItem]:
    """Weighted z-score fusion with per-query weights ``w_r * evidence_r * prod(signal_r)``.

    Signals (each computed from run ``r`` alone, for this query):

    * ``fill`` (opt-in): ``min(1, len(run) / fill_at)``, the share of the candidate depth the run returned
      (``fill_at``: :data:`DEFAULT_FILL_AT`, capped by the longest run's length; None: that length);
    * ``standout``: the z-score of the run's top hit; ``gap``: (top - second) / std of the run.

    ``evidence`` (name -> factor in [0, 1], default 1) carries what the caller knows: the engine passes the
    keyword run's :func:`language_agreement` (the share of its top hits in the query's script family). When every effective weight is 0 the configured
    ``weights`` are used unchanged (a query no signal can judge fuses like :func:`weighted` z-score).
    """
    unknown = sorted(set(signals) - set(SIGNALS))
    if unknown:
        raise ConfigError(f"retrieval.fusion.signals: unknown {unknown}; choose from {', '.join(SIGNALS)}")
    cleaned = _clean_runs(runs)
    base = _weights(cleaned, weights)
    depth = max((len(r.ids) for r in cleaned), default=0)
    if fill_at is not None:
        if not isinstance(fill_at, int) or fill_at < 1:
            raise ConfigError(f"retrieval.fusion.fill_at must be an integer >= 1, got {fill_at!r}")
        depth = min(depth, fill_at)
    effective: dict[str, float] = {}
    for run in cleaned:
        factor = 1.0
        if evidence is not None:
            factor *= max(0.0, min(1.0, float(evidence.get(run.name, 1.0))))
        if run.ids:
            if "fill" in signals:
                factor *= min(1.0, len(run.ids) / depth)
            for signal in ("standout", "gap"):
                if signal in signals:
                    factor *= _standout(run.scores, signal)
        effective[run.name] = base[run.name] * factor
    if math.fsum(effective.values()) == 0.0:
        effective = base
    return weighted(runs, effective, "zscore") if cleaned else []


#: Script families: BM25 over analyzer terms matches within a family (Chinese and Japanese share Han
#: characters, and a Han-only query is read both ways); across families only names, numbers and loanwords
#: written in another script can match.
_FAMILY: dict[str, str] = {"zh": "han", "ja": "han", "ko": "hangul", "en": "latin"}


def language_agreement(query_language: str | None, hit_languages: Sequence[str | None], top: int = 10) -> float:
    """Share of the first ``top`` hits written in the query's script family (1.0 when either is unknown or
    there are no hits): the ``evidence`` adaptive fusion gives the keyword run. An English query whose keyword
    hits are Chinese sentences matched them only through a name or a number, so its keyword run says little;
    a Chinese or Japanese query over Chinese or Japanese documents keeps its full weight."""
    family = _FAMILY.get(query_language or "")
    known = [_FAMILY.get(lang or "") for lang in hit_languages[:top]]
    known = [f for f in known if f is not None]
    if family is None or not known:
        return 1.0
    return sum(f == family for f in known) / len(known)


_PARAMS: dict[str, frozenset[str]] = {
    "rrf": frozenset({"k", "weights"}),
    "weighted": frozenset({"weights", "normalization"}),
    "dbsf": frozenset({"weights"}),
    "adaptive": frozenset({"weights", "evidence", "signals", "fill_at"}),
}


def fuse(runs: Runs, method: str = "rrf", **params: Any) -> list[FusedItem]:
    """Dispatch to :func:`rrf`, :func:`weighted`, :func:`dbsf` or :func:`adaptive` by name (config
    ``retrieval.fusion``).

    Parameters a method does not use are ignored when they are known fusion settings (``k``,
    ``weights``, ``normalization``: one config block serves every method); unknown names raise.
    """
    if method not in METHODS:
        raise ConfigError(f"retrieval.fusion.method must be one of {', '.join(METHODS)}, got {method!r}")
    known = frozenset().union(*_PARAMS.values())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"retrieval.fusion: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    used = {name: value for name, value in params.items() if name in _PARAMS[method]}
    if method == "rrf":
        return rrf(runs, **used)
    if method == "weighted":
        return weighted(runs, **used)
    if method == "adaptive":
        return adaptive(runs, **used)
    return dbsf(runs, **used)
