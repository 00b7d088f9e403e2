"""The ingestion report: counts, every failed document with its reason and fix (dead letters), exit codes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Exit codes of `cjkrag ingest` (documented in its --help and the README).
EXIT_OK = 0  # nothing failed
EXIT_ERROR = 2  # stopped before/while ingesting: bad option or config, store unreachable, refused --sync guard
EXIT_FAILED_DOCUMENTS = 3  # finished, but some documents failed (they are in the report; --retry-failed)
EXIT_NOTHING_WRITTEN = 4  # nothing written, nothing unchanged: every document failed, or none was found


@dataclass
class Failure:
    source: str  # where: a file, ``file:line``, ``<record>[i]``, with the id when it helps
    error: str
    fix: str = ""
    kind: str = "failed"  # failed | skipped
    doc_id: str = ""
    path: str = ""  # the file to read again (--retry-failed), when there is one
    root: str = ""  # the folder/file given on the command line it came from


@dataclass
class IngestReport:
    documents: int = 0  # documents written (new or changed)
    unchanged: int = 0  # documents already stored with the same content, access and settings
    reused: int = 0  # of the documents written: vectors reused (access/analyzer change only, no re-embedding)
    chunks: int = 0  # chunks written
    tokens: int = 0  # tokens embedded
    padded_tokens: int = 0  # positions the forward passes computed (tokens + padding of each batch)
    deleted_chunks: int = 0  # stale chunks removed after a document changed
    deleted_documents: list[str] = field(default_factory=list)  # --sync / delete
    planned_writes: list[str] = field(default_factory=list)  # --dry-run: would be written
    planned_deletes: list[str] = field(default_factory=list)  # --dry-run / refused guard: would be deleted
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    run: dict[str, Any] = field(default_factory=dict)  # how the job was invoked (for --retry-failed)
    stages: dict[str, float] = field(default_factory=dict)  # busy seconds per stage (benchmarks)

    @property
    def failed(self) -> list[Failure]:
        return [f for f in self.failures if f.kind == "failed"]

    @property
    def skipped(self) -> list[Failure]:
        return [f for f in self.failures if f.kind == "skipped"]

    def exit_code(self) -> int:
        did = self.documents or self.unchanged or self.deleted_documents or self.planned_writes or self.planned_deletes
        if not did:
            return EXIT_NOTHING_WRITTEN
        return EXIT_FAILED_DOCUMENTS if self.failed else EXIT_OK

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"dry run: {len(self.planned_writes)} documents would be written, {self.unchanged} unchanged, "
                f"{len(self.planned_deletes)} would be deleted, {len(self.failed)} failed"
            )
        deleted = f", {len(self.deleted_documents)} deleted" if self.deleted_documents else ""
        reused = f" ({self.reused} without re-embedding)" if self.reused else ""
        return (
            f"{self.documents} documents ({self.chunks} chunks) written{reused}, {self.unchanged} unchanged"
            f"{deleted}, {len(self.skipped)} skipped, {len(self.failed)} failed in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "chunks": self.chunks,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "deleted_chunks": self.deleted_chunks,
            "deleted_documents": self.deleted_documents,
            "dry_run": self.dry_run,
            "planned_writes": self.planned_writes,
            "planned_deletes": self.planned_deletes,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "exit_code": self.exit_code(),
            "seconds": round(self.seconds, 3),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "run": self.run,
            "failures": [asdict(f) for f in self.failures],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
