"""Per-language morphological back ends: rjieba (zh), SudachiPy (ja), kiwipiepy (ko).

Each back end loads lazily (``load()``, guarded by a lock, idempotent) and turns a list of script runs into
one token list per run. Heavy imports stay inside ``load()`` so importing this module costs nothing.

Thread safety: rjieba and OpenCC converters are used read-only; a SudachiPy ``Tokenizer`` is *not*
thread-safe (sudachi.rs issue #289), so each thread gets its own tokenizer built from the one shared
``Dictionary``; a built ``Kiwi`` may be shared by threads (its author, bab2min/Kiwi issue #145).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from cjkrag.errors import ConfigError, MissingDependency

from .stopwords import JA_DROP_POS, JA_DROP_POS2, JA_STOP_LEMMAS, KO_KEEP_TAGS, KO_STOP_LEMMAS, ZH_STOPWORDS

_SEP: Final = "\n"  # joins runs for one analyzer call: no word of any of the three analyzers spans it
_SUDACHI_MAX_BYTES: Final = 40_000  # SudachiPy refuses inputs over 49,149 bytes


def _missing(package: str) -> MissingDependency:
    return MissingDependency(
        f"{package!r} is not installed: it is a core dependency of the cjkrag CJK analyzer; "
        f"reinstall cjkrag or run `pip install {package}`"
    )


def _split_by_offsets(starts: list[int], n_runs: int) -> Callable[[int], int]:
    """Maps a character offset in ``_SEP.join(runs)`` to the index of the run that contains it."""

    def index_of(offset: int) -> int:
        i = bisect.bisect_right(starts, offset) - 1
        return min(max(i, 0), n_runs - 1)

    return index_of


def _run_starts(runs: list[str]) -> list[int]:
    starts, pos = [], 0
    for run in runs:
        starts.append(pos)
        pos += len(run) + len(_SEP)
    return starts


class ChineseBackend:
    """rjieba search mode (``cut_for_search``: long words *and* their dictionary sub-words) after an
    optional OpenCC Traditional->Simplified conversion of the run."""

    def __init__(self, opencc_config: str | None, *, stopwords: bool = True) -> None:
        self.opencc_config = opencc_config
        self._stop = ZH_STOPWORDS if stopwords else frozenset()
        self._lock = threading.Lock()
        self._cut: Callable[[str], list[str]] | None = None
        self._convert: Callable[[str], str] | None = None

    def load(self) -> None:
        if self._cut is not None:
            return
        with self._lock:
            if self._cut is not None:
                return
            if self.opencc_config is not None:
                try:
                    import opencc
                except ImportError as exc:
                    raise _missing("opencc") from exc
                try:
                    converter = opencc.OpenCC(self.opencc_config)
                except Exception as exc:
                    raise ConfigError(
                        f"traditional_to_simplified={self.opencc_config!r}: OpenCC cannot load this "
                        f"config ({exc}); use 'tw2sp' (Taiwan phrases) or 't2s' (characters only)"
                    ) from exc
                self._convert = converter.convert
            try:
                import rjieba
            except ImportError as exc:
                raise _missing("rjieba") from exc
            self._cut = rjieba.cut_for_search

    def to_simplified(self, runs: list[str]) -> list[str]:
        """Converts all runs with one OpenCC call (runs joined by a newline, which no phrase spans)."""
        if self._convert is None or not runs:
            return runs
        parts = self._convert(_SEP.join(runs)).split(_SEP)
        if len(parts) != len(runs):  # defensive: never trust a converter to keep separators
            return [self._convert(r) for r in runs]
        return parts

    def words_many(self, runs: list[str]) -> list[list[str]]:
        """Search-mode words of each run (stop words dropped), from one rjieba call over all runs."""
        assert self._cut is not None, "ChineseBackend.load() first"
        stop = self._stop
        out: list[list[str]] = [[] for _ in runs]
        if not runs:
            return out
        words = self._cut(_SEP.join(runs))
        if words.count(_SEP) != len(runs) - 1:  # defensive: separators must come back one by one
            return [[w for w in self._cut(run) if w not in stop] for run in runs]
        k, bucket = 0, out[0]
        for w in words:
            if w == _SEP:
                k += 1
                bucket = out[k]
            elif w not in stop:
                bucket.append(w)
        return out


class JapaneseBackend:
    """SudachiPy (sudachidict_core): mode C words, plus the mode A sub-words of compounds for recall,
    all as *normalized forms* (けんさく -> 検索, 行っ -> 行く, コンピュータ -> コンピューター) so
    spelling variants and inflections match; particles, auxiliaries, symbols... dropped by part of speech."""

    def __init__(self, *, dict_name: str = "core", subwords: bool = True, stopwords: bool = True) -> None:
        self.dict_name = dict_name
        self._stop = JA_STOP_LEMMAS if stopwords else frozenset()
        self.subwords = subwords
        self._lock = threading.Lock()
        self._local = threading.local()
        self._dictionary: Any = None
        self._drop_pos: frozenset[int] = frozenset()
        self._mode_a: Any = None

    def load(self) -> None:
        if self._dictionary is not None:
            return
        with self._lock:
            if self._dictionary is not None:
                return
            try:
                from sudachipy import Dictionary, SplitMode
            except ImportError as exc:
                raise _missing("sudachipy") from exc
            try:
                dictionary = Dictionary(dict=self.dict_name)
            except Exception as exc:
                raise ConfigError(
                    f"SudachiPy dictionary {self.dict_name!r} cannot be loaded ({exc}); "
                    f"install it with `pip install sudachidict-{self.dict_name}`"
                ) from exc
            drop: set[int] = set()
            pos_id = 0
            while (pos := dictionary.pos_of(pos_id)) is not None:
                if pos[0] in JA_DROP_POS or (pos[0], pos[1]) in JA_DROP_POS2:
                    drop.add(pos_id)
                pos_id += 1
            self._drop_pos = frozenset(drop)
            self._mode_a = SplitMode.A
            self._mode_c = SplitMode.C
            self._dictionary = dictionary

    def _tokenizer(self) -> Any:
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            fields = {"normalized_form", "pos", "split_a"}
            tok = self._dictionary.tokenizer(mode=self._mode_c, fields=fields)
            self._local.tokenizer = tok
        return tok

    def _chunks(self, runs: list[str]) -> Iterator[tuple[int, list[str]]]:
        """Groups consecutive runs (already cut by :func:`_fit`) into inputs under SudachiPy's size limit."""
        first, size = 0, 0
        group: list[str] = []
        for i, run in enumerate(runs):
            nbytes = len(run.encode("utf-8", "surrogatepass")) + 1
            if group and size + nbytes > _SUDACHI_MAX_BYTES:
                yield first, group
                first, group, size = i, [], 0
            group.append(run)
            size += nbytes
        if group:
            yield first, group

    def analyze(self, runs: list[str]) -> list[list[str]]:
        """One token list per run (runs are Han / kana only)."""
        assert self._dictionary is not None, "JapaneseBackend.load() first"
        out: list[list[str]] = [[] for _ in runs]
        tok = self._tokenizer()
        drop, mode_a, subwords, stop = self._drop_pos, self._mode_a, self.subwords, self._stop
        pieces, owner = _fit(runs)
        for first, group in self._chunks(pieces):
            starts = _run_starts(group)
            k, last = 0, len(group) - 1
            bucket = out[owner[first]]
            for m in tok.tokenize(_SEP.join(group)):
                begin = m.begin()
                if k < last and begin >= starts[k + 1]:  # morphemes come in order: advance the run
                    while k < last and begin >= starts[k + 1]:
                        k += 1
                    bucket = out[owner[first + k]]
                if m.part_of_speech_id() in drop:
                    continue
                form = m.normalized_form()
                if form in stop or not form or form == _SEP:
                    continue
                _append_safe(bucket, form)
                if subwords and m.end() - begin >= 3:
                    parts = m.split(mode_a)
                    if len(parts) > 1:
                        for p in parts:
                            if p.part_of_speech_id() in drop:
                                continue
                            sub = p.normalized_form()
                            if sub != form and sub not in stop:
                                _append_safe(bucket, sub)
        return out


def _fit(group: list[str], limit_chars: int = _SUDACHI_MAX_BYTES // 4) -> tuple[list[str], list[int]]:
    """Cuts runs too long for one SudachiPy call into pieces; ``owner[k]`` is the run of piece ``k``."""
    pieces: list[str] = []
    owner: list[int] = []
    for i, run in enumerate(group):
        if len(run) <= limit_chars:
            pieces.append(run)
            owner.append(i)
            continue
        for k in range(0, len(run), limit_chars):
            pieces.append(run[k : k + limit_chars])
            owner.append(i)
    return pieces, owner


def _append_safe(bucket: list[str], form: str) -> None:
    """Appends a dictionary form, splitting it if a dictionary entry ever contains whitespace."""
    if form.isprintable() and " " not in form:
        bucket.append(form)
    else:
        bucket.extend(form.split())


class KoreanBackend:
    """kiwipiepy: content morphemes (nouns, numerals, roots, verb / adjective stems as ``stem + 다``);
    particles, endings and suffixes dropped. Batches use Kiwi's multi-threaded list API."""

    def __init__(self, *, num_workers: int | None = None, stopwords: bool = True) -> None:
        self.num_workers = num_workers
        self._stop = KO_STOP_LEMMAS if stopwords else frozenset()
        self._lock = threading.Lock()
        self._kiwi: Any = None

    def load(self) -> None:
        if self._kiwi is not None:
            return
        with self._lock:
            if self._kiwi is not None:
                return
            try:
                from kiwipiepy import Kiwi
            except ImportError as exc:
                raise _missing("kiwipiepy") from exc
            import os

            workers = self.num_workers if self.num_workers is not None else max(1, os.cpu_count() or 1)
            kiwi = Kiwi(num_workers=max(1, workers), load_typo_dict=False, load_multi_dict=False)
            kiwi.tokenize("")  # Kiwi initializes lazily: finish it here, under the lock
            self._kiwi = kiwi

    def _tokens(self, spans: list[str], morphemes: Iterable[Any]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in spans]
        index_of = _split_by_offsets(_run_starts(spans), len(spans))
        stop = self._stop
        for t in morphemes:
            tag = t.tag
            if "-" in tag:  # VV-I, VA-R...: irregular conjugation markers
                tag = tag.split("-", 1)[0]
            if tag not in KO_KEEP_TAGS:
                continue
            form = t.form + "다" if tag in ("VV", "VA") else t.form
            if not form or form in stop:
                continue
            _append_safe(out[index_of(t.start)], form)
        return out

    def analyze(self, spans: list[str]) -> list[list[str]]:
        """One token list per Hangul span of one text: one Kiwi call, or, for a long text, groups of
        spans spread over Kiwi's worker threads."""
        assert self._kiwi is not None, "KoreanBackend.load() first"
        if not spans:
            return []
        if sum(map(len, spans)) <= _KIWI_GROUP_CHARS:
            return self._tokens(spans, self._kiwi.tokenize(_SEP.join(spans), **_KIWI_OPTIONS))
        groups: list[list[str]] = [[]]
        size = 0
        for span in spans:
            if size >= _KIWI_GROUP_CHARS:
                groups.append([])
                size = 0
            groups[-1].append(span)
            size += len(span) + 1
        return [tokens for group in self.analyze_batch(groups) for tokens in group]

    def analyze_batch(self, span_lists: list[list[str]]) -> list[list[list[str]]]:
        """Like :meth:`analyze` for many texts at once, spread over Kiwi's worker threads."""
        assert self._kiwi is not None, "KoreanBackend.load() first"
        todo = [k for k, spans in enumerate(span_lists) if spans]
        out: list[list[list[str]]] = [[] for _ in span_lists]
        if not todo:
            return out
        joined = [_SEP.join(span_lists[k]) for k in todo]
        results = self._kiwi.tokenize(joined, **_KIWI_OPTIONS)
        for k, morphemes in zip(todo, results, strict=True):
            out[k] = self._tokens(span_lists[k], morphemes)
        return out


# z_coda=False skips splitting playful trailing consonants (faster, per the kiwipiepy docs);
# match_options=0: spans are pure Hangul, so URL / e-mail / hashtag pattern matching is useless.
_KIWI_OPTIONS: Final[dict[str, Any]] = {"z_coda": False, "match_options": 0}
_KIWI_GROUP_CHARS: Final = 4_000  # a longer text is cut (between spans) into groups analyzed in parallel
