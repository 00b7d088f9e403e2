"""Dynamic micro-batching of model work across concurrent requests (query embeddings, reranks).

Request threads call :meth:`MicroBatcher.submit` with their own items and block; one worker thread takes
what is queued (waiting at most ``max_wait_ms`` for more once the first item arrived, up to ``max_batch``
items), runs the model ONCE on all of it, and hands every request back exactly its own slice, by position.
While a batch runs, new requests queue up and form the next batch, so under load batches grow by themselves
and throughput follows concurrency instead of queueing behind a lock, the way inference servers batch.

What is batched is a pure function of the items (query text -> vector): nothing about the caller
(principals, filters, results) enters the batch. Each request's store search, access filter and post-check
still run in that request's own thread (``SearchPipeline``), so batching cannot mix one caller's hits into
another's; ``tests/test_service_batching.py`` checks it with concurrent callers holding different principals.

Bounded: at most ``max_queue`` items wait; past that :meth:`submit` raises :class:`Overloaded` at once (the
service answers 503 with Retry-After) instead of growing memory or latency without limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("cjkrag.service")

T = TypeVar("T")


class Overloaded(RuntimeError):
    """The batch queue is full: the service is over capacity (HTTP 503, retry later)."""


@dataclass
class _Pending(Generic[T]):
    items: list[T]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class MicroBatcher(Generic[T]):
    """Runs ``fn(all items) -> one row per item`` (an array or a list) on the items of concurrent
    :meth:`submit` calls."""

    def __init__(
        self,
        fn: Callable[[list[T]], Any],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self._queue: deque[_Pending[T]] = deque()
        self._queued = 0  # items waiting (not requests)
        self._cond = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None
        #: batches run and items embedded (observability; read without the lock)
        self.batches = 0
        self.items = 0
        self.largest_batch = 0
        #: batchers closed together with this one (the engine's rerank batcher)
        self.companions: list[MicroBatcher[Any]] = []

    def submit(self, items: Sequence[T]) -> Any:
        """The rows of ``fn`` for ``items`` (a slice of what ``fn`` returned: array rows or list items),
        computed together with whatever else is queued."""
        pending: _Pending[T] = _Pending(list(items))
        if not pending.items:
            return self.fn([])[:0]
        with self._cond:
            if self._closed:
                raise Overloaded(f"{self.name} is shut down")
            if self._queued + len(pending.items) > self.max_queue:
                raise Overloaded(
                    f"{self.name}: {self._queued} items already queued (service.batch_max_queue={self.max_queue})"
                )
            self._queue.append(pending)
            self._queued += len(pending.items)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=f"cjkrag-{self.name}", daemon=True)
                self._worker.start()
            self._cond.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        for other in self.companions:
            other.close()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)

    # -- worker -------------------------------------------------------------------------------------
    def _take(self) -> list[_Pending[T]] | None:
        """The next batch: wait for a first request, then up to max_wait for more (never past max_batch)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while self._queued < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Pending[T]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_batch):
                p = self._queue.popleft()
                batch.append(p)
                size += len(p.items)
            self._queued -= size
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            flat = [item for p in batch for item in p.items]
            try:
                rows = self.fn(flat)
                if len(rows) != len(flat):
                    raise RuntimeError(f"{self.name}: {len(rows)} results for {len(flat)} items")
            except BaseException as exc:  # every waiting request gets the error; the worker lives on
                log.warning("%s: batch of %d failed: %s", self.name, len(flat), exc)
                for p in batch:
                    p.error = exc
                    p.done.set()
                continue
            self.batches += 1
            self.items += len(flat)
            self.largest_batch = max(self.largest_batch, len(flat))
            start = 0
            for p in batch:  # each request gets exactly its own rows, by position
                p.result = rows[start : start + len(p.items)]
                start += len(p.items)
                p.done.set()


class FairGate:
    """At most ``limit`` holders at once; the others wait and enter strictly in arrival order (FIFO).

    The service runs each search in its own thread. Unbounded, every request in flight competes for the
    GIL, the model batch and the store at once, and which one wins each round is luck: measured at 16
    clients, p95 was 2.2x p50. Past ``limit`` in flight, throughput no longer grows (the cores are busy),
    so the rest wait in line instead; latency becomes queueing in arrival order plus a shorter, steadier
    service time (p95 1.5x p50, README "Query speed"). At most ``max_waiting`` wait: past that, or after
    ``timeout_s`` in line, :class:`Overloaded` (503 with Retry-After).
    """

    def __init__(self, limit: int, *, max_waiting: int = 1024, timeout_s: float = 30.0) -> None:
        if limit < 1 or max_waiting < 0 or timeout_s <= 0:
            raise ValueError("limit must be >= 1, max_waiting >= 0 and timeout_s > 0")
        self.limit = limit
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._free = limit
        self._line: deque[object] = deque()
        self._cond = threading.Condition()

    def __enter__(self) -> FairGate:
        me = object()
        with self._cond:
            if self._free > 0 and not self._line:
                self._free -= 1
                return self
            if len(self._line) >= self.max_waiting:
                raise Overloaded(f"{len(self._line)} searches already waiting (service.max_waiting_searches)")
            self._line.append(me)
            deadline = time.monotonic() + self.timeout_s
            while not (self._free > 0 and self._line[0] is me):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._line.remove(me)
                    self._cond.notify_all()  # the next in line may be able to enter now
                    raise Overloaded(f"waited {self.timeout_s:g} s for a search slot")
                self._cond.wait(left)
            self._line.popleft()
            self._free -= 1
            self._cond.notify_all()  # the next in line checks whether another slot is free
            return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._line)
