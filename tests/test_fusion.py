"""Fusion: hand-computed examples (arithmetic written out) and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjkrag.errors import ConfigError, InputError
from cjkrag.pipeline.fusion import FusedItem, adaptive, dbsf, fuse, rrf, weighted

RUNS = {
    "dense": [("a", 0.9), ("b", 0.8), ("c", 0.7)],
    "keyword": [("b", 12.0), ("d", 9.0)],
}


def by_id(items: list[FusedItem]) -> dict[str, FusedItem]:
    return {it.id: it for it in items}


def test_rrf_hand_computed() -> None:
    out = rrf(RUNS, k=60)
    got = by_id(out)
    assert got["a"].score == pytest.approx(1 / 61)
    assert got["b"].score == pytest.approx(1 / 62 + 1 / 61)  # rank 2 in dense, rank 1 in keyword
    assert got["c"].score == pytest.approx(1 / 63)
    assert got["d"].score == pytest.approx(1 / 62)
    # 0.032522 > 0.016393 > 0.016129 > 0.015873
    assert [it.id for it in out] == ["b", "a", "d", "c"]
    assert got["b"].ranks == {"dense": 2, "keyword": 1}
    assert got["b"].scores == {"dense": 0.8, "keyword": 12.0}
    assert got["d"].ranks == {"keyword": 2}
    assert "dense" not in got["d"].scores


def test_rrf_weights_and_k() -> None:
    out = by_id(rrf(RUNS, k=1, weights={"dense": 2.0, "keyword": 0.5}))
    assert out["a"].score == pytest.approx(2.0 / (1 + 1))
    assert out["b"].score == pytest.approx(2.0 / (1 + 2) + 0.5 / (1 + 1))
    assert out["d"].score == pytest.approx(0.5 / (1 + 2))


def test_weighted_minmax_hand_computed() -> None:
    # dense minmax: a=(.9-.7)/.2=1, b=.5, c=0 ; keyword: b=1, d=0 ; missing -> 0 ; shares .5/.5
    out = weighted(RUNS, normalization="minmax")
    got = by_id(out)
    assert got["a"].score == pytest.approx(0.5 * 1 + 0.5 * 0)
    assert got["b"].score == pytest.approx(0.5 * 0.5 + 0.5 * 1)
    assert got["c"].score == pytest.approx(0.0)
    assert got["d"].score == pytest.approx(0.0)
    # c and d tie at 0: d's best rank (2) beats c's (3)
    assert [it.id for it in out] == ["b", "a", "d", "c"]


def test_weighted_is_convex_combination() -> None:
    # weights 3:1 -> shares .75/.25: a = .75*1 = .75, b = .75*.5 + .25*1 = .625
    got = weighted(RUNS, weights={"dense": 3, "keyword": 1})
    assert [it.id for it in got][:2] == ["a", "b"]
    assert by_id(got)["a"].score == pytest.approx(0.75)
    assert by_id(got)["b"].score == pytest.approx(0.625)
    # same ratio, different scale -> identical scores
    scaled = weighted(RUNS, weights={"dense": 30, "keyword": 10})
    assert [i.id for i in scaled] == [i.id for i in got]
    assert [i.score for i in scaled] == pytest.approx([i.score for i in got])


def test_weighted_zscore_hand_computed() -> None:
    # dense: mean .8, population std sqrt((.01 + 0 + .01) / 3); keyword: mean 10.5, std 1.5
    std_d = math.sqrt(0.02 / 3)
    za, zb, zc = 0.1 / std_d, 0.0, -0.1 / std_d
    kb, kd = 1.0, -1.0
    # missing items get the run's lowest z: dense floor zc, keyword floor kd
    out = weighted(RUNS, normalization="zscore")
    got = by_id(out)
    assert got["a"].score == pytest.approx(0.5 * za + 0.5 * kd)
    assert got["b"].score == pytest.approx(0.5 * zb + 0.5 * kb)
    assert got["c"].score == pytest.approx(0.5 * zc + 0.5 * kd)
    assert got["d"].score == pytest.approx(0.5 * zc + 0.5 * kd)
    assert [it.id for it in out] == ["b", "a", "d", "c"]


def test_weighted_zero_range_gives_one() -> None:
    runs = {"dense": [("x", 0.5), ("y", 0.5)], "keyword": [("z", 3.0), ("x", 1.0)]}
    got = by_id(weighted(runs))
    # dense has no spread: x=y=1.0 ; keyword: z=1, x=0 ; missing (z in dense, y in keyword) -> 0
    assert got["x"].score == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert got["y"].score == pytest.approx(0.5 * 1.0)
    assert got["z"].score == pytest.approx(0.5 * 1.0)
    single = weighted({"keyword": [("only", 7.0)]}, normalization="zscore")
    assert single[0].score == pytest.approx(1.0)


def test_dbsf_hand_computed() -> None:
    # dense: mean .8, sample std sqrt(.02 / 2) = .1 -> low .5, width .6
    # keyword: mean 10.5, sample std sqrt(4.5) -> low 10.5 - 3 sqrt(4.5), width 6 sqrt(4.5)
    sk = math.sqrt(4.5)
    a = (0.9 - 0.5) / 0.6
    b = (0.8 - 0.5) / 0.6 + (12.0 - (10.5 - 3 * sk)) / (6 * sk)
    c = (0.7 - 0.5) / 0.6
    d = (9.0 - (10.5 - 3 * sk)) / (6 * sk)
    out = dbsf(RUNS)
    got = by_id(out)
    assert got["a"].score == pytest.approx(a)
    assert got["b"].score == pytest.approx(b)
    assert got["c"].score == pytest.approx(c)
    assert got["d"].score == pytest.approx(d)
    assert [it.id for it in out] == ["b", "a", "d", "c"]


def test_dbsf_clips_outliers_and_single_hit() -> None:
    # ten zeros and one 1.0: mean 1/11, sample variance (10/121 + 100/121) / 10 = 1/11
    # z of the outlier = (10/11) / sqrt(1/11) = 3.015 > 3 -> clipped to 1.0
    run = [("top", 1.0)] + [(f"z{i}", 0.0) for i in range(10)]
    got = by_id(dbsf({"dense": run}))
    std = math.sqrt(1 / 11)
    assert got["top"].score == 1.0
    assert got["z0"].score == pytest.approx((0.0 - (1 / 11 - 3 * std)) / (6 * std))
    assert dbsf({"k": [("x", 42.0)]})[0].score == 0.5
    weighted_out = by_id(dbsf(RUNS, weights={"dense": 2.0, "keyword": 0.0}))
    assert weighted_out["a"].score == pytest.approx(2 * (0.9 - 0.5) / 0.6)
    assert weighted_out["d"].score == 0.0


@pytest.mark.parametrize("method", ["rrf", "weighted", "dbsf", "adaptive"])
def test_edge_cases(method: str) -> None:
    assert fuse({}, method) == []
    assert fuse({"dense": [], "keyword": []}, method) == []
    one = fuse({"dense": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "keyword": []}, method)
    assert [it.id for it in one] == ["a", "b", "c"]
    with pytest.raises(InputError, match=r"'dense'.*'b'.*finite"):
        fuse({"dense": [("a", 1.0), ("b", float("nan"))]}, method)


def test_all_equal_scores_tie_break_by_rank_then_id() -> None:
    runs = {"dense": [("q", 1.0), ("p", 1.0)], "keyword": [("p", 2.0), ("q", 2.0)]}
    for method in ("weighted", "dbsf", "rrf"):
        out = fuse(runs, method)
        assert len({round(it.score, 12) for it in out}) == 1
        assert [it.id for it in out] == ["p", "q"]  # both have best rank 1 -> id order


def test_duplicate_ids_keep_first_occurrence() -> None:
    out = by_id(rrf({"dense": [("a", 0.9), ("b", 0.8), ("a", 0.1)]}, k=0))
    assert out["a"].ranks == {"dense": 1}
    assert out["a"].scores == {"dense": 0.9}
    assert out["b"].score == pytest.approx(1 / 2)


def test_fuse_validation() -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.method"):
        fuse(RUNS, "borda")
    with pytest.raises(ConfigError, match=r"retrieval\.fusion: unknown setting"):
        fuse(RUNS, "rrf", kk=3)
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.weights\.dense"):
        fuse(RUNS, "rrf", weights={"dense": -1})
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.k"):
        fuse(RUNS, "rrf", k=-5)
    with pytest.raises(ConfigError, match=r"retrieval\.fusion\.normalization"):
        fuse(RUNS, "weighted", normalization="l2")
    with pytest.raises(ConfigError, match="all 0"):
        fuse(RUNS, "weighted", weights={"dense": 0, "keyword": 0})
    with pytest.raises(InputError, match="entry 0"):
        fuse({"dense": [("a",)]}, "rrf")  # type: ignore[list-item]
    # settings of other methods are accepted (one config block serves all methods)
    assert fuse(RUNS, "dbsf", k=60, normalization="minmax")[0].id == "b"
    assert [i.id for i in fuse(RUNS, "rrf", k=60)] == [i.id for i in rrf(RUNS)]


# ---------------------------------------------------------------- properties

ids = st.text(alphabet="abcdefghij", min_size=1, max_size=3)
scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def ranked(draw: st.DrawFn) -> list[tuple[str, float]]:
    names = draw(st.lists(ids, min_size=0, max_size=12, unique=True))
    values = sorted((draw(scores) for _ in names), reverse=True)
    return list(zip(names, values, strict=True))


run_maps = st.dictionaries(st.sampled_from(["dense", "keyword", "sparse"]), ranked(), min_size=1)


@settings(deadline=None)  # shared, loaded CI machines: no per-example time limit
@given(ranked(), st.floats(min_value=0, max_value=1000))
def test_rrf_single_run_preserves_order(run: list[tuple[str, float]], k: float) -> None:
    assert [it.id for it in rrf({"only": run}, k=k)] == [i for i, _ in run]


@settings(deadline=None)
@given(run_maps, st.floats(min_value=0.01, max_value=100))
def test_weights_scale(runs: dict[str, list[tuple[str, float]]], c: float) -> None:
    base = {name: 1.0 + i for i, name in enumerate(sorted(runs))}
    scaled = {name: c * w for name, w in base.items()}
    for method, factor in (("rrf", c), ("dbsf", c), ("weighted", 1.0)):  # weighted is convex: scale-free
        one = by_id(fuse(runs, method, weights=base))
        other = by_id(fuse(runs, method, weights=scaled))
        assert one.keys() == other.keys()
        for item_id, item in one.items():
            assert other[item_id].score == pytest.approx(factor * item.score, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(run_maps, st.sampled_from(["rrf", "weighted-minmax", "weighted-zscore", "dbsf"]))
def test_item_first_in_every_run_comes_first(runs: dict[str, list[tuple[str, float]]], method: str) -> None:
    boosted = {name: [("WINNER", (run[0][1] + 1.0) if run else 1.0), *run] for name, run in runs.items()}
    if method.startswith("weighted"):
        out = weighted(boosted, normalization=method.split("-")[1])
    else:
        out = fuse(boosted, method)
    assert out[0].id == "WINNER"
    assert out[0].ranks == dict.fromkeys(runs, 1)
    # sorted by score, where scores equal to 12 significant digits are ties (the module's documented rule)
    keys = [float(f"{it.score:.12g}") for it in out]
    assert keys == sorted(keys, reverse=True)


def test_a_weak_keyword_run_does_not_overturn_a_confident_dense_winner_under_the_default() -> None:
    """Why the default is z-score based (README, Results): a cross-lingual query where keyword search
    only matched a shared name in a wrong document. Rank-based RRF (and min-max) put that document first;
    z-scores keep the dense winner, whose lead over the rest of its run is large."""
    from cjkrag.config import FusionConfig

    dense = [("right", 0.90)] + [(f"d{i}", 0.86 - 0.002 * i) for i in range(30)]
    dense.insert(3, ("junk", 0.855))
    runs = {"dense": dense, "keyword": [("junk", 5.0)]}
    default = FusionConfig()
    assert (default.method, default.signals) == ("adaptive", [])
    fused = fuse(runs, default.method, weights=default.weights, signals=(), fill_at=default.fill_at)
    assert fused[0].id == "right"
    assert weighted(runs, normalization="zscore")[0].id == "right"
    assert rrf(runs, k=60)[0].id == "junk"
    assert weighted(runs, normalization="minmax")[0].id == "junk"


def test_adaptive_fill_leans_on_the_run_that_returned_candidates() -> None:
    """Tatoeba's failure (English query over CJK sentences): keyword search matched one shared name in a
    wrong sentence. Under weighted z-score the lift of that sentence costs the right one its first place
    when dense is not far ahead; ``fill`` (2 keyword hits beside a 100-deep dense run) keeps dense in charge."""
    dense = [("right", 0.87), ("junk", 0.859)] + [(f"d{i}", 0.85 - 0.001 * i) for i in range(98)]
    keyword = [("junk", 5.0), ("other", 4.0)]
    runs = {"dense": dense, "keyword": keyword}
    assert weighted(runs, normalization="zscore")[0].id == "junk"
    fused = adaptive(runs, signals=("fill",), fill_at=None)
    assert fused[0].id == "right"
    assert adaptive(runs, signals=("fill",))[0].id == "right"  # fill at 20 hits (keyword weight 2/20)
    # the same arithmetic as weighted z-score with the keyword weight scaled by 2/100
    expected = by_id(weighted(runs, {"dense": 1.0, "keyword": 2 / 100}, "zscore"))
    for item in fused:
        assert item.score == pytest.approx(expected[item.id].score)


def test_adaptive_equals_weighted_zscore_when_runs_are_alike() -> None:
    runs = {"dense": [(f"x{i}", 1.0 - i / 10) for i in range(10)], "keyword": [(f"x{9 - i}", 10.0 - i) for i in range(10)]}
    got = [(it.id, round(it.score, 9)) for it in adaptive(runs)]
    assert got == [(it.id, round(it.score, 9)) for it in weighted(runs, normalization="zscore")]


def test_language_agreement_is_the_share_of_keyword_hits_in_the_query_script() -> None:
    from cjkrag.pipeline.fusion import language_agreement

    assert language_agreement("en", ["zh", "zh", "zh"]) == 0.0  # an English query matched Chinese by a name
    assert language_agreement("zh", ["ja", "zh"]) == 1.0  # Han: Chinese and Japanese share characters
    assert language_agreement("ko", ["ko", "zh", "ko", "ko"]) == 0.75
    assert language_agreement(None, ["zh"]) == language_agreement("zh", []) == 1.0  # unknown: no evidence
    assert language_agreement("en", ["en"] * 10 + ["zh"] * 90) == 1.0  # the top 10 hits only


def test_adaptive_with_language_evidence_follows_dense_across_scripts() -> None:
    """What the engine does for `fusion.method: adaptive`: an English query whose keyword hits are all
    Chinese gives the keyword run no weight, so the fused order is dense's; same-script runs fuse as z-score."""
    dense = [("right", 0.90), ("junk", 0.89), ("d1", 0.5), ("d2", 0.49)]
    keyword = [("junk", 9.0), ("d2", 1.0)]
    runs = {"dense": dense, "keyword": keyword}
    across = adaptive(runs, evidence={"keyword": 0.0})
    assert [it.id for it in across] == ["right", "junk", "d1", "d2"]
    same = adaptive(runs, evidence={"keyword": 1.0})
    assert [(it.id, round(it.score, 9)) for it in same] == [
        (it.id, round(it.score, 9)) for it in weighted(runs, normalization="zscore")
    ]


def test_adaptive_evidence_and_validation() -> None:
    runs = {"dense": [("a", 0.9), ("b", 0.8), ("c", 0.1)], "keyword": [("c", 9.0), ("b", 1.0), ("a", 0.5)]}
    # no keyword evidence: dense alone decides (weights 1 : 0)
    assert [it.id for it in adaptive(runs, evidence={"keyword": 0.0})][:1] == ["a"]
    assert [it.id for it in adaptive(runs, evidence={"dense": 0.0})][:1] == ["c"]
    # all evidence 0: the configured weights are used unchanged
    assert [it.id for it in adaptive(runs, evidence={"dense": 0.0, "keyword": 0.0})] == [
        it.id for it in weighted(runs, normalization="zscore")
    ]
    with pytest.raises(ConfigError, match="signals"):
        adaptive(runs, signals=("magic",))
    assert fuse(runs, "adaptive", signals=("fill", "standout"))[0].id in {"a", "b", "c"}
