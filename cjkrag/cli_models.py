"""CLI commands for models a user can trust: ``models gate|promote|pairs|optimize`` and ``finetune embedder|reranker``.

Registered on the main app by :func:`register` (see ``cjkrag/cli.py``); everything heavy is imported inside
the commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cjkrag.errors import CjkragError

err = Console(stderr=True)
out = Console()
BUNDLED = "bundled:multilingual-e5-small"

EvalOpt = Annotated[list[Path], typer.Option("--eval", "-e", help="An evaluation set (repeatable): a BEIR folder, or a "
                                              "held-out PAIRS.jsonl (e.g. heldout.jsonl from `cjkrag models pairs`).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (data_dir, embedding settings).")]

PairsOpt = Annotated[Path | None, typer.Option("--pairs", help='PAIRS.jsonl: {"query", "positive", "negatives"?} per line.')]
ClicksOpt = Annotated[Path | None, typer.Option("--clicks", help='Click log: {"query", "clicked_doc_id"} per line, resolved in the store.')]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the pairs.")]
StepsOpt = Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")]
HardOpt = Annotated[str, typer.Option(help="Mine negatives from: pairs (the other positives), store (the collection's chunks) or none.")]
PrecOpt = Annotated[str, typer.Option(help="auto, fp32, fp16, bf16 (half precision on CUDA only).")]
GateOpt = Annotated[list[Path] | None, typer.Option("--eval", "-e", help="Held-out set(s) for the closing gate.")]



def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def _config(config: Path | None) -> Any:
    from cjkrag.config import load_config

    return load_config(config) if config is not None else load_config(None)


def _gate(candidate: str, sets: list[Path], base: str, kind: str, embedder: str, tolerance: float, max_queries: int | None,
          device: str, backend: str, gate_out: Path | None, rerank_depth: int = 20) -> dict[str, Any]:
    from cjkrag.pipeline.models.gate import format_gate, run_gate, write_gate
    from cjkrag.pipeline.models.pairs import load_eval_set

    loaded = [load_eval_set(p, max_queries=max_queries) for p in sets]
    report = run_gate(candidate, loaded, base=base, kind=kind, embedder=embedder, tolerance=tolerance, device=device,
                      candidate_backend=backend, progress=err.is_terminal, rerank_depth=rerank_depth)
    out.print(format_gate(report), highlight=False, soft_wrap=True)
    target = gate_out or (Path(candidate) / "gate.json" if Path(candidate).is_dir() else Path("gate.json"))
    write_gate(report, target)
    out.print(f"wrote {target}", highlight=False)
    return report


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the commands to ``models_app`` and a ``finetune`` group to ``app``."""
    finetune_app = typer.Typer(help="Fine-tune the embedder or train a reranker on your pairs; each run ends with the gate.",
                               no_args_is_help=True)
    app.add_typer(finetune_app, name="finetune")

    @models_app.command("gate")
    def models_gate(
        candidate: Annotated[str, typer.Argument(help="Candidate model: a folder (fine-tuned or optimized) or a model id.")],
        eval_sets: EvalOpt,
        base: Annotated[str, typer.Option(help="Model to beat (embedder), or 'none' / a reranker for a reranker candidate.")] = BUNDLED,
        kind: Annotated[str, typer.Option(help="auto (a sequence-classification folder is a reranker), embedder or reranker.")] = "auto",
        embedder: Annotated[str, typer.Option(help="First-stage dense model when gating a reranker.")] = BUNDLED,
        tolerance: Annotated[float, typer.Option(help="Allowed nDCG@10 loss per set before the candidate counts as lost.")] = 0.01,
        max_queries: Annotated[int | None, typer.Option(help="Evaluate the first N queries of each set.")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
        backend: Annotated[str, typer.Option(help="Candidate runtime: torch, onnx or openvino (an optimized build).")] = "torch",
        gate_out: Annotated[Path | None, typer.Option("--out", help="Where to write gate.json (default: CANDIDATE/gate.json).")] = None,
        rerank_depth: Annotated[int, typer.Option(min=1, help="Dense hits a reranker candidate reorders.")] = 20,
    ) -> None:
        """Score CANDIDATE against BASE on the same sets: nDCG@10 side by side, per-query win/loss, sign test.

        Dense retrieval is ranked exactly with numpy over each set (no store; embeddings cached per model version);
        `cjkrag eval` stays the store path (chunking, hybrid, filters). Exit code 1 when the candidate lost.
        """
        try:
            report = _gate(candidate, eval_sets, base, kind, embedder, tolerance, max_queries, device, backend, gate_out,
                           rerank_depth)
        except CjkragError as exc:
            raise _fail(exc) from None
        if not report["passed"]:
            raise typer.Exit(1)

    @models_app.command("promote")
    def models_promote(
        candidate: Annotated[Path, typer.Argument(help="The gated model folder.")],
        config: ConfigOpt = None,
        gate: Annotated[Path | None, typer.Option(help="Gate report (default: CANDIDATE/gate.json).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Promote even though it lost / was not gated (needs --reason).")] = False,
        reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
    ) -> None:
        """Promote a candidate that passed its gate: copy it to <data_dir>/models/<kind>-<version>, record why,
        and print the config change (an embedder change re-embeds the collection on the next ingest)."""
        from cjkrag.pipeline.models.promote import apply_hint, promote

        try:
            data_dir = _config(config).resolved_data_dir()
            entry = promote(str(candidate), data_dir, gate_path=gate, force=force, reason=reason)
        except CjkragError as exc:
            raise _fail(exc, 1) from None
        out.print(f"promoted {entry['candidate']} -> {entry['target']} ({entry['why']}); recorded in {entry['record']}",
                  highlight=False, soft_wrap=True)
        out.print(apply_hint(entry), highlight=False, markup=False, soft_wrap=True)

    @models_app.command("pairs")
    def models_pairs(
        source: Annotated[Path, typer.Argument(help="A s1<TAB>s2<TAB>label file or its folder (e.g. ../shared/data/eval/bq).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Writes train.jsonl, heldout.jsonl, heldout-beir/ here.")],
        heldout: Annotated[float, typer.Option(help="Fraction of queries held out (by a hash of the query).")] = 0.2,
        seed: Annotated[int, typer.Option(help="Split seed.")] = 13,
        max_train: Annotated[int | None, typer.Option(help="Keep at most N training pairs.")] = None,
        max_heldout: Annotated[int | None, typer.Option(help="Keep at most N held-out pairs.")] = None,
    ) -> None:
        """Convert labelled question pairs into PAIRS.jsonl with a deterministic train / held-out split
        (no held-out text is ever in the training part)."""
        from cjkrag.pipeline.models.pairs import convert_pair_set

        try:
            summary = convert_pair_set(source, out_dir, heldout_fraction=heldout, seed=seed, max_train=max_train,
                                       max_heldout=max_heldout)
        except CjkragError as exc:
            raise _fail(exc) from None
        out.print(f"{summary['train']} training pairs, {summary['heldout']} held-out pairs, "
                  f"{summary['distractors']} distractors -> {out_dir}", highlight=False)

    @models_app.command("optimize")
    def models_optimize(
        model: Annotated[str, typer.Argument(help="Embedder to speed up: bundled:multilingual-e5-small, a folder or an id.")],
        eval_sets: EvalOpt,
        backend: Annotated[str, typer.Option(help="onnx (ONNX Runtime) or openvino (OpenVINO, bf16 where the CPU has it).")] = "onnx",
        quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 weights (per channel).")] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default ./optimized/<name>-<backend>[-int8]).")] = None,
        tolerance: Annotated[float, typer.Option(help="Allowed nDCG@10 loss per set.")] = 0.01,
        max_queries: Annotated[int | None, typer.Option(help="Evaluate the first N queries of each set.")] = None,
        speed_texts: Annotated[int, typer.Option(help="Texts for the throughput table (taken from the first set).")] = 200,
    ) -> None:
        """Export a faster CPU build, gate it against the torch model, and print chunks/s and query latency."""
        import json as _json

        from cjkrag.pipeline.models.optimize import BackendEmbedder, export_onnx, throughput
        from cjkrag.pipeline.models.pairs import load_eval_set

        if backend not in ("onnx", "openvino"):
            raise _fail(CjkragError(f"--backend {backend!r}: use onnx or openvino"))
        name = Path(model).name.replace(":", "-")
        target = out_dir or Path("optimized") / f"{name}-{backend}{'-' + quantize if quantize else ''}"
        try:
            export_onnx(model, target, quantize=quantize, backend=backend)
            report = _gate(str(target), eval_sets, model, "embedder", BUNDLED, tolerance, max_queries, "cpu", backend, None)
            first = load_eval_set(eval_sets[0], max_queries=max_queries)
            passages = [d.text for d in first.corpus.values()][:speed_texts]
            queries = list(first.queries.values())[: max(10, speed_texts // 4)]
            from cjkrag.ingest.embedding.loader import load_embedder

            rows = {"torch": throughput(load_embedder(model, device="cpu"), passages, queries),
                    backend + ("-" + quantize if quantize else ""): throughput(BackendEmbedder(str(target), backend=backend), passages, queries)}
        except CjkragError as exc:
            raise _fail(exc) from None
        out.print(f"throughput on this CPU ({len(passages)} passages, {len(queries)} single queries):", highlight=False)
        for label, r in rows.items():
            out.print(f"  {label:12s} {r['chunks_per_s']:8.1f} chunks/s   query p50 {r['query_p50_ms']:.1f} ms  "
                      f"p95 {r['query_p95_ms']:.1f} ms", highlight=False)
        (target / "throughput.json").write_text(_json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        faster = list(rows.values())[1]["chunks_per_s"] > rows["torch"]["chunks_per_s"]
        verdict = "passes the gate and is faster" if report["passed"] and faster else "NOT recommended"
        out.print(f"{target}: {verdict}", highlight=False)
        if report["passed"] and faster:
            out.print(f"use it: `cjkrag models promote {target}`, then set embedding.backend: {backend} and "
                      "embedding.model: <the promoted folder> (re-embeds the collection)", highlight=False)
        if not report["passed"]:
            raise typer.Exit(1)

    def _train(kind: str, pairs: Path | None, clicks: Path | None, config: Path | None, base: str, out_dir: Path | None,
               hard_negatives: str, cfg: Any, eval_sets: list[Path] | None, gate: bool) -> None:
        from cjkrag.pipeline.models import finetune as ft
        from cjkrag.pipeline.models.pairs import read_clicks, read_pairs

        if (pairs is None) == (clicks is None):
            raise CjkragError("give exactly one of --pairs PAIRS.jsonl or --clicks CLICKS.jsonl")
        if hard_negatives not in ("pairs", "store", "none"):
            raise CjkragError(f"--hard-negatives must be pairs, store or none, got {hard_negatives!r}")
        engine = None
        if clicks is not None or hard_negatives == "store":
            from cjkrag.engine import open_engine

            engine = open_engine(config)
        if pairs is not None:
            rows = read_pairs(pairs)
        else:
            assert engine is not None
            rows, unresolved = read_clicks(clicks, _doc_lookup(engine))  # type: ignore[arg-type]
            if unresolved:
                err.print(f"[yellow]{len(unresolved)} clicks name documents not in the store (skipped)[/]")
        target = out_dir or Path("finetuned") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        if hard_negatives != "none":
            pool = _store_texts(engine) if hard_negatives == "store" else None
            emb = _base_embedder(base if kind == "embedder" else BUNDLED, cfg.device)
            rows = ft.mine_hard_negatives(emb.embed_queries, emb.embed_passages, rows, pool,
                                          per_query=1 if kind == "embedder" else 3)
        train = ft.finetune_embedder if kind == "embedder" else ft.finetune_reranker
        info = train(rows, target, base=base, cfg=cfg)
        out.print(f"trained {info['steps']} steps on {info['pairs']} pairs in {info['seconds']} s "
                  f"(loss {info['first_loss']:.3f} -> {info['last_loss']:.3f}) -> {target}", highlight=False)
        if gate and eval_sets:
            report = _gate(str(target), eval_sets, base if kind == "embedder" else "none", kind, BUNDLED, 0.01, None,
                           cfg.device, "torch", None)
            out.print("next: `cjkrag models promote " + str(target) + "`" if report["passed"]
                      else "the gate REFUSED this model; do not promote it", highlight=False)
        else:
            out.print(f"not gated: run `cjkrag models gate {target} --eval HELDOUT` before promoting", highlight=False)

    def _opts(epochs: int, max_steps: int | None, batch_size: int, lr: float, loss: str, mini_batch: int,
              precision: str, device: str, resume: bool, save_every: int, max_length: int) -> Any:
        from cjkrag.pipeline.models.finetune import TrainConfig

        return TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, loss=loss,
                           mini_batch_size=mini_batch, precision=precision, device=device, resume=resume,
                           save_every=save_every, max_length=max_length, progress=err.is_terminal)

    @finetune_app.command("embedder")
    def finetune_embedder_cmd(
        pairs: PairsOpt = None, clicks: ClicksOpt = None, config: ConfigOpt = None,
        base: Annotated[str, typer.Option(help="Model to start from.")] = BUNDLED,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default ./finetuned/embedder-<time>).")] = None,
        hard_negatives: HardOpt = "pairs", epochs: EpochsOpt = 1, max_steps: StepsOpt = None,
        batch_size: Annotated[int, typer.Option(help="Pairs per batch (in-batch negatives).")] = 16,
        lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-5,
        loss: Annotated[str, typer.Option(help="mnrl, or cached (CachedMultipleNegativesRankingLoss: big batches on GPU).")] = "mnrl",
        mini_batch: Annotated[int, typer.Option(help="Mini-batch of the cached loss.")] = 32,
        precision: PrecOpt = "auto", device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint-last.")] = False,
        save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
        max_length: Annotated[int, typer.Option(help="Token cap per text while training.")] = 128,
        eval_sets: GateOpt = None,
    ) -> None:
        """Contrastive fine-tuning (MultipleNegativesRankingLoss, with mined hard negatives); ends with the gate."""
        try:
            _train("embedder", pairs, clicks, config, base, out_dir, hard_negatives,
                   _opts(epochs, max_steps, batch_size, lr, loss, mini_batch, precision, device, resume, save_every,
                         max_length), eval_sets, True)
        except CjkragError as exc:
            raise _fail(exc) from None

    @finetune_app.command("reranker")
    def finetune_reranker_cmd(
        pairs: PairsOpt = None, clicks: ClicksOpt = None, config: ConfigOpt = None,
        base: Annotated[str, typer.Option(help="Encoder to start from (its classifier head starts untrained).")] = BUNDLED,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default ./finetuned/reranker-<time>).")] = None,
        hard_negatives: HardOpt = "pairs", epochs: EpochsOpt = 1, max_steps: StepsOpt = None,
        batch_size: Annotated[int, typer.Option(help="(query, passage) examples per batch.")] = 16,
        lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-5,
        precision: PrecOpt = "auto", device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint-last.")] = False,
        save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
        max_length: Annotated[int, typer.Option(help="Token cap per (query, passage) pair.")] = 192,
        eval_sets: GateOpt = None,
    ) -> None:
        """Train a cross-encoder reranker on (query, positive) vs mined negatives; ends with the gate
        (dense first stage vs dense + this reranker)."""
        try:
            _train("reranker", pairs, clicks, config, base, out_dir, hard_negatives,
                   _opts(epochs, max_steps, batch_size, lr, "mnrl", 32, precision, device, resume, save_every,
                         max_length), eval_sets, True)
        except CjkragError as exc:
            raise _fail(exc) from None


def _base_embedder(ref: str, device: str) -> Any:
    from cjkrag.ingest.embedding.loader import load_embedder

    emb = load_embedder(ref, device=device)
    emb.warm_up()
    return emb


def _doc_lookup(engine: Any) -> Any:
    texts = _store_docs(engine)
    return texts.get


def _store_docs(engine: Any) -> dict[str, str]:
    """doc id -> its chunks' text joined, read from the configured collection."""
    from cjkrag.pipeline.models.store_texts import collection_texts

    return collection_texts(engine)


def _store_texts(engine: Any) -> list[str]:
    return list(_store_docs(engine).values())
