"""`cjkrag ingest`, `cjkrag delete` and `cjkrag drop` (registered on the main app by cjkrag/cli.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cjkrag.cli_common import ConfigOpt, _engine, _fail, err, out
from cjkrag.errors import CjkragError
from cjkrag.ingest.report import EXIT_ERROR, EXIT_FAILED_DOCUMENTS, EXIT_NOTHING_WRITTEN, EXIT_OK

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} nothing failed; {EXIT_FAILED_DOCUMENTS} finished, but some documents failed (listed "
    f"in the report; re-run them with --retry-failed REPORT); {EXIT_NOTHING_WRITTEN} nothing written (every "
    f"document failed, or none was found); {EXIT_ERROR} stopped on an error (bad option or config, store "
    "unreachable)."
)


def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders: .txt .md .html .jsonl .pdf .docx .pptx .xlsx .eml .msg and images "
                       "(jsonl: one record per line with id, text, optional title, acl, deny, public, metadata, "
                       "language)."),
    ] = None,
    config: ConfigOpt = None,
    collection: Annotated[str | None, typer.Option(help="Collection to write to (default from config).")] = None,
    acl: Annotated[
        list[str] | None,
        typer.Option("--acl", help="Principal allowed to read documents that carry no ACL of their own "
                     "(repeatable), e.g. --acl group:support --acl user:alice."),
    ] = None,
    deny: Annotated[list[str] | None, typer.Option("--deny", help="Principal denied even if in the ACL (repeatable).")] = None,
    public: Annotated[bool, typer.Option("--public", help="Documents without their own access rule are readable by everyone.")] = False,
    source_id: Annotated[str | None, typer.Option("--source-id", help="Namespace for the ids of these files: "
                         "NAME:relative/path (default: the resolved file path).")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Mirror the folders given: delete stored documents whose "
                    "files are gone (refuses more than ingest.sync_max_delete_share without --yes).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write and delete nothing; list what would change.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm a --sync that deletes more than the guard allows.")] = False,
    report: Annotated[Path | None, typer.Option("--json-report", "--report", help="Write the machine-readable "
                      "report (JSON: counts, every failed document with reason and fix) here.")] = None,
    retry_failed: Annotated[Path | None, typer.Option("--retry-failed", help="Re-run only the documents that "
                            "failed in this earlier report (same folders and access options).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    encoding: Annotated[str | None, typer.Option(help="Encoding of the text files (e.g. gb18030, cp932, euc_jp, "
                        "cp949) instead of detecting it.")] = None,
    engine_kind: Annotated[str | None, typer.Option("--engine", help="local: threads in this process; ray: Ray "
                           "actors chunk, analyze and embed (one GPU each when there are GPUs), this process "
                           "writes (default: ingest.engine).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to use with --engine ray "
                           "(e.g. auto, ray://head:10001; default: ingest.ray.address, $RAY_ADDRESS, else a "
                           "local Ray).")] = None,
) -> None:
    """Read, chunk, embed and store documents with their access rules.

    Access is deny-by-default: a document needs an ACL (its own, or --acl) or to be public (its own flag,
    or --public); otherwise it is reported as failed. Re-running is cheap: unchanged documents are skipped
    (the collection's manifest says what is stored); changed ones replace their old chunks (an access-only
    change rewrites the access fields without re-embedding). A run killed at any moment is completed by
    re-running the same command.
    """
    only: set[str] | None = None
    if retry_failed is not None:
        paths, only, acl, deny, public, source_id = _from_report(retry_failed, paths, acl, deny, public, source_id)
        if not only:
            out.print(f"{retry_failed}: no failed document to retry")
            raise typer.Exit(EXIT_OK)
    if not paths:
        raise _fail(CjkragError("give at least one PATH (or --retry-failed REPORT)"), EXIT_ERROR)
    if not acl and not public and not any(_may_carry_acl(p) for p in paths):
        raise _fail(CjkragError(
            "no access rule: .txt/.md/.html files carry no ACL, so nobody could read them. "
            "Pass --acl PRINCIPAL (e.g. --acl group:support) or --public, or use .jsonl records with `acl`/`public`."
        ), EXIT_ERROR)
    try:
        engine = _engine(config, collection)
        with IngestProgress(progress, _count_files(paths)) as on_progress:
            rep = engine.ingest([str(p) for p in paths], acl=acl or (), deny=deny or (), public=public,
                                on_progress=on_progress, source_id=source_id, sync=sync, dry_run=dry_run,
                                yes=yes, only_sources=only, encoding=encoding, engine=engine_kind,
                                ray_address=ray_address)  # fmt: skip
    except CjkragError as exc:
        raise _fail(exc, EXIT_ERROR) from None
    report_path = report or engine.config.resolved_data_dir() / "reports" / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    rep.write(report_path)
    for f in rep.failures:
        colour = "yellow" if f.kind == "skipped" else "red"
        fix = f" — fix: {f.fix}" if f.fix else ""
        err.print(f"[{colour}]{f.kind}[/] {f.source}: {f.error}{fix}", markup=True, highlight=False, soft_wrap=True)
    for doc_id in rep.planned_deletes:
        out.print(f"{'would delete' if dry_run else 'not deleted'}: {doc_id}", highlight=False, markup=False)
    for doc_id in rep.deleted_documents:
        out.print(f"deleted: {doc_id}", highlight=False, markup=False)
    out.print(f"{rep.summary()}; report: {report_path}", highlight=False, soft_wrap=True)
    engine.close()
    raise typer.Exit(rep.exit_code())


def _from_report(
    path: Path, paths: list[Path] | None, acl: list[str] | None, deny: list[str] | None, public: bool,
    source_id: str | None,
) -> tuple[list[Path], set[str], list[str] | None, list[str] | None, bool, str | None]:  # fmt: skip
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        run, failures = data.get("run", {}), data["failures"]
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise _fail(CjkragError(f"--retry-failed {path}: not a cjkrag ingest report ({exc})"), EXIT_ERROR) from None
    only = {str(f["path"]) for f in failures if f.get("kind") == "failed" and f.get("path")}
    roots = [Path(r) for r in run.get("roots", [])] or sorted({Path(p) for p in only})
    return (
        paths or roots,
        only,
        acl or run.get("acl") or None,
        deny or run.get("deny") or None,
        public or bool(run.get("public")),
        source_id or run.get("source_id") or None,
    )


def _may_carry_acl(path: Path) -> bool:
    if path.suffix.lower() == ".jsonl":
        return True
    return path.is_dir() and any(path.rglob("*.jsonl"))


def _count_files(paths: list[Path]) -> int | None:
    """Files to read (for the ETA); None when jsonl files make the document count unknown."""
    n = 0
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else []
        if any(f.suffix.lower() == ".jsonl" for f in files):
            return None
        n += len(files)
    return n


class IngestProgress:
    """A rich progress bar: documents/s, chunks/s, tokens/s, ETA, failures (a no-op when not a terminal)."""

    def __init__(self, enabled: bool, total: int | None = None) -> None:
        self.enabled = enabled and err.is_terminal
        self.total = total
        self.docs = self.chunks = self.tokens = self.failed = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=err, transient=False)  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("ingesting", total=self.total, rate="")

        def on_progress(docs: int = 0, chunks: int = 0, tokens: int = 0, failed: int = 0) -> None:
            self.docs += docs
            self.chunks += chunks
            self.tokens += tokens
            self.failed += failed
            dt = max(time.perf_counter() - self.t0, 1e-6)
            self.bar.update(
                self.task, completed=self.docs,
                description=f"{self.docs} docs, {self.chunks} chunks, [red]{self.failed} failed[/]",
                rate=f"{self.docs / dt:.1f} docs/s {self.chunks / dt:.1f} chunks/s {self.tokens / dt:,.0f} tok/s",
            )  # fmt: skip

        return on_progress

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


def delete(
    doc_id: Annotated[list[str] | None, typer.Option("--doc-id", help="A document id to delete (repeatable).")] = None,
    source: Annotated[Path | None, typer.Option("--source", help="Delete every document read from this file or "
                      "from under this folder.")] = None,
    config: ConfigOpt = None,
    collection: Annotated[str | None, typer.Option(help="Collection (default from config).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete documents (all their chunks) by id or by source file/folder."""
    if bool(doc_id) == (source is not None):
        raise _fail(CjkragError("give --doc-id ID (repeatable) or --source PATH, not both"), EXIT_ERROR)
    try:
        engine = _engine(config, collection)
        ids = list(doc_id or []) or engine.documents_from(source or "")
        if not ids:
            out.print(f"no stored document comes from {source}")
            raise typer.Exit(EXIT_NOTHING_WRITTEN)
        _confirm(yes, f"delete {len(ids)} document(s) from collection {engine.config.collection!r}", ids)
        known = engine.delete_documents(ids)
    except CjkragError as exc:
        raise _fail(exc, EXIT_ERROR) from None
    out.print(f"deleted {len(ids)} document(s) ({known} known to the manifest)")
    engine.close()


def drop(
    config: ConfigOpt = None,
    collection: Annotated[str | None, typer.Option(help="Collection (default from config).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a whole collection and its ingestion manifest (re-ingest afterwards)."""
    try:
        engine = _engine(config, collection)
        _confirm(yes, f"drop collection {engine.config.collection!r} and everything in it", [])
        engine.drop()
    except CjkragError as exc:
        raise _fail(exc, EXIT_ERROR) from None
    out.print(f"dropped collection {engine.config.collection!r}")
    engine.close()


def _confirm(yes: bool, what: str, ids: list[str]) -> None:
    if yes:
        return
    for i in ids[:20]:
        out.print(f"  {i}", highlight=False, markup=False)
    if len(ids) > 20:
        out.print(f"  ... and {len(ids) - 20} more")
    if not err.is_terminal:
        raise CjkragError(f"refusing to {what} without confirmation: re-run with --yes")
    if not typer.confirm(f"{what}?"):
        raise typer.Exit(EXIT_NOTHING_WRITTEN)


def register(app: typer.Typer) -> None:
    app.command(epilog=EXIT_CODES_HELP)(ingest)
    app.command()(delete)
    app.command()(drop)
