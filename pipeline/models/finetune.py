"""Fine-tuning: a sentence-transformers embedder (contrastive) and a cross-encoder reranker.

Embedder: ``MultipleNegativesRankingLoss`` (in-batch negatives plus the pair's hard negatives), or
``CachedMultipleNegativesRankingLoss`` (``loss="cached"``: large effective batches in small memory, for a GPU).
Queries and passages get the base model's prefixes (its profile / prompts), so training matches how
cjkrag embeds. Batches never hold the same text twice (a duplicate would be a false in-batch negative).

Reranker: a ``CrossEncoder`` with one relevance logit, started from an encoder (the bundled
multilingual-e5-small by default: its classifier head starts untrained), trained with binary cross-entropy
on (query, positive) = 1 and (query, mined negative) = 0.

Hard negatives (:func:`mine_hard_negatives`): the base embedder's dense top-k over a pool of passages that
are not the pair's positive and not near-duplicates of it (cosine to the positive >= ``dup_threshold``, or
the same text once whitespace is removed).

Both loops are plain torch (no ``datasets`` / ``accelerate``): a checkpoint (weights, optimizer, scheduler,
step, RNG) is written every ``save_every`` steps to ``OUT/checkpoint-last`` and ``resume=True`` continues
from it; fp16 / bf16 autocast on CUDA, fp32 on CPU; a progress bar shows the loss.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.errors import InputError, ModelError, missing
from cjkrag.pipeline.models.pairs import Pair

log = logging.getLogger(__name__)

BUNDLED = "bundled:multilingual-e5-small"
STATE = "training_state.pt"


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 13
    loss: str = "mnrl"  # mnrl | cached
    mini_batch_size: int = 32  # cached loss only
    max_length: int = 128
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (fp16/bf16 on CUDA only)
    device: str = "auto"
    save_every: int = 50
    #: keep the word-embedding table fixed: e5-small's 250k x 384 table is 80% of its weights, so training it
    #: quadruples optimizer memory and time for rows a few hundred pairs barely touch
    freeze_embeddings: bool = True
    resume: bool = False
    progress: bool = True


def resolve_base(ref: str, cache_dir: Path | None = None) -> tuple[str, str]:
    """(folder or id to load, profile name) for a base model reference."""
    if ref == BUNDLED:
        from cjkrag.ingest.embedding.bundled import ensure_bundled_model

        return str(ensure_bundled_model(cache_dir)), "bundled"
    if ref.startswith("bundled:"):
        raise InputError(f"--base {ref!r}: the only bundled model is {BUNDLED!r}")
    from cjkrag.ingest.embedding.profiles import profile_for

    return ref, profile_for(ref).name


def prefixes(model: Any, profile_name: str) -> tuple[str, str]:
    """The query / passage prefixes cjkrag uses with this model (its prompts win over the profile's text)."""
    from cjkrag.ingest.embedding.profiles import get_profile
    from cjkrag.ingest.embedding.sentence_transformer import resolve_prefix

    prof = get_profile(profile_name)
    prompts = dict(getattr(model, "prompts", None) or {})
    return (resolve_prefix(prompts, prof.query_prompt_name, prof.query_prefix),
            resolve_prefix(prompts, prof.passage_prompt_name, prof.passage_prefix))


def unique_batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of pair indices in which no text (query, positive or negative) occurs twice."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pending = order
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        rest: list[int] = []
        for i in pending:
            texts = {pairs[i].query, pairs[i].positive, *pairs[i].negatives[:1]}
            if len(batch) < batch_size and not texts & seen:
                batch.append(i)
                seen |= texts
            else:
                rest.append(i)
        if len(batch) < 2:  # the leftovers all collide: stop rather than train on 1-pair batches
            break
        batches.append(batch)
        pending = rest
    return batches


def mine_hard_negatives(encode_q: Callable[[list[str]], np.ndarray], encode_p: Callable[[list[str]], np.ndarray],
                        pairs: Sequence[Pair], pool: Sequence[str] | None = None, *, per_query: int = 1,
                        top_k: int = 10, skip_top: int = 0, dup_threshold: float = 0.95) -> list[Pair]:
    """Add up to ``per_query`` mined negatives to each pair (kept: its own listed negatives first).

    Candidates are the dense top ``top_k`` passages of ``pool`` (default: every positive of ``pairs``), minus the
    pair's positive, its near-duplicates and the first ``skip_top`` hits (often unlabelled positives)."""
    texts = list(dict.fromkeys(pool if pool is not None else [p.positive for p in pairs]))
    if len(texts) < 2:
        return list(pairs)
    index = {t: i for i, t in enumerate(texts)}
    pv = encode_p(texts)
    qv = encode_q([p.query for p in pairs])
    missing_pos = [p.positive for p in pairs if p.positive not in index]
    extra = dict(zip(missing_pos, encode_p(missing_pos), strict=True)) if missing_pos else {}
    pos_vec = np.stack([pv[index[p.positive]] if p.positive in index else extra[p.positive] for p in pairs])
    out: list[Pair] = []
    k = min(top_k + 1, len(texts))
    sims = qv @ pv.T
    for i, pair in enumerate(pairs):
        top = np.argsort(-sims[i])[:k]
        squash = "".join(pair.positive.split())
        chosen = [n for n in pair.negatives]
        skipped = 0
        for j in top:
            cand = texts[j]
            if cand == pair.positive or "".join(cand.split()) == squash or j == index.get(pair.query):
                continue
            if float(pos_vec[i] @ pv[j]) >= dup_threshold:
                continue
            if skipped < skip_top:
                skipped += 1
                continue
            if len(chosen) >= len(pair.negatives) + per_query:
                break
            chosen.append(cand)
        out.append(Pair(pair.query, pair.positive, tuple(chosen)))
    return out


# ---------------------------------------------------------------------------------------------- shared loop
def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise missing("gpu", "torch") from exc
    return torch


def _setup(cfg: TrainConfig) -> tuple[Any, str, Any]:
    torch = _torch()
    from cjkrag.ingest.embedding.sentence_transformer import resolve_device

    device = resolve_device(cfg.device, key="--device")
    dtype = None
    if device.startswith("cuda"):
        want = cfg.precision
        if want == "auto":
            want = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(want)
    elif cfg.precision in ("fp16", "bf16"):
        log.warning("--precision %s is for CUDA; training on %s in fp32", cfg.precision, device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return torch, device, dtype


def _schedule(torch: Any, optimizer: Any, total: int, warmup_ratio: float) -> Any:
    warm = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="step", dynamic_ncols=True)


class _Loop:
    """Steps over batches with warmup/decay, autocast, checkpoints and resume (shared by both trainers)."""

    def __init__(self, torch: Any, params: Any, cfg: TrainConfig, out: Path, dtype: Any, total: int) -> None:
        self.torch, self.cfg, self.out, self.dtype, self.total = torch, cfg, out, dtype, total
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        self.scheduler = _schedule(torch, self.optimizer, total, cfg.warmup_ratio)
        self.scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
        self.step = 0
        self.losses: list[float] = []

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint-last"

    def autocast(self) -> Any:
        import contextlib

        if self.dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast("cuda", dtype=self.dtype)

    def backward_step(self, loss: Any, params: Any) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self.torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if loss.requires_grad:  # the cached loss has already run backward itself
                loss.backward()
            self.torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(float(loss.detach()))

    def after_step(self, bar: Any, save_model: Callable[[Path], None]) -> None:
        """Progress, and a checkpoint every ``cfg.save_every`` steps (not after the last: the model is saved)."""
        bar.update(1)
        bar.set_postfix(loss=f"{self.losses[-1]:.3f}")
        if self.cfg.save_every and self.step % self.cfg.save_every == 0 and self.step < self.total:
            self.save(save_model)

    def save(self, save_model: Callable[[Path], None]) -> None:
        tmp = self.out / "checkpoint-tmp"
        save_model(tmp)
        self.torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict(), "losses": self.losses,
                         "rng": random.getstate(), "torch_rng": self.torch.get_rng_state()}, tmp / STATE)
        import shutil

        if self.ckpt.exists():
            shutil.rmtree(self.ckpt)
        tmp.rename(self.ckpt)

    def restore(self) -> None:
        state = self.torch.load(self.ckpt / STATE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.losses = int(state["step"]), list(state["losses"])
        random.setstate(state["rng"])
        self.torch.set_rng_state(state["torch_rng"])


def _trainable(module: Any, cfg: TrainConfig) -> list[Any]:
    """Parameters to train; with ``freeze_embeddings`` the word-embedding tables stay fixed."""
    if cfg.freeze_embeddings:
        for name, param in module.named_parameters():
            if name.endswith("word_embeddings.weight"):
                param.requires_grad_(False)
    return [p for p in module.parameters() if p.requires_grad]


def _plan(n_batches: int, cfg: TrainConfig) -> int:
    if n_batches == 0:
        raise InputError("no training batch could be formed (fewer than 2 distinct pairs?)")
    total = n_batches * max(1, cfg.epochs)
    return min(total, cfg.max_steps) if cfg.max_steps else total


def _write_card(out: Path, info: dict[str, Any]) -> None:
    (out / "cjkrag-finetune.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- embedder
def finetune_embedder(pairs: Sequence[Pair], out: Path | str, *, base: str = BUNDLED, cfg: TrainConfig | None = None,
                      cache_dir: Path | None = None) -> dict[str, Any]:
    """Contrastive fine-tuning; saves a sentence-transformers folder in ``out`` and returns a summary."""
    cfg = cfg or TrainConfig()
    if cfg.loss not in ("mnrl", "cached"):
        raise InputError(f"--loss must be mnrl or cached, got {cfg.loss!r}")
    if len(pairs) < 2:
        raise InputError(f"fine-tuning needs at least 2 pairs, got {len(pairs)}")
    torch, device, dtype = _setup(cfg)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source, profile = resolve_base(base, cache_dir)
    resume = cfg.resume and (out / "checkpoint-last" / STATE).is_file()
    model = SentenceTransformer(str(out / "checkpoint-last") if resume else source, device=device)
    model.max_seq_length = min(cfg.max_length, model.max_seq_length or cfg.max_length)
    q_prefix, p_prefix = prefixes(model, profile)
    loss_fn = (CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size)
               if cfg.loss == "cached" else MultipleNegativesRankingLoss(model))
    rng = random.Random(cfg.seed)
    epoch_batches = [unique_batches(pairs, cfg.batch_size, rng) for _ in range(max(1, cfg.epochs))]
    flat = [b for e in epoch_batches for b in e]
    total = _plan(len(epoch_batches[0]), cfg)
    params = _trainable(model, cfg)
    loop = _Loop(torch, params, cfg, out, dtype, total)
    if resume:
        loop.restore()
        log.info("resumed from %s at step %d", loop.ckpt, loop.step)
    width = max(1, min(len(p.negatives) for p in pairs))
    has_negs = all(p.negatives for p in pairs)

    def save_model(path: Path) -> None:
        model.prompts = {**dict(model.prompts or {}), "query": q_prefix, "passage": p_prefix, "document": p_prefix}
        model.save(str(path))

    model.train()
    t0 = time.perf_counter()
    bar = _progress(total, "fine-tune embedder", cfg.progress)
    bar.update(loop.step)
    for batch in flat[loop.step:total]:
        group = [pairs[i] for i in batch]
        columns = [[q_prefix + p.query for p in group], [p_prefix + p.positive for p in group]]
        if has_negs:
            columns += [[p_prefix + p.negatives[j] for p in group] for j in range(width)]
        features = [{k: (v.to(device) if hasattr(v, "to") else v) for k, v in model.preprocess(col).items()}
                    for col in columns]
        with loop.autocast():
            loss = loss_fn(features, None)
        loop.backward_step(loss, params)
        loop.after_step(bar, save_model)
    bar.close()
    model.eval()
    save_model(out)
    info = {"kind": "embedder", "base": base, "pairs": len(pairs), "steps": loop.step, "device": device,
            "precision": str(dtype).replace("torch.", "") if dtype else "fp32", "hard_negatives": has_negs,
            "seconds": round(time.perf_counter() - t0, 1), "first_loss": loop.losses[0] if loop.losses else None,
            "last_loss": loop.losses[-1] if loop.losses else None, "profile_prefixes": [q_prefix, p_prefix],
            "config": asdict(cfg)}
    _write_card(out, info)
    return info


# ---------------------------------------------------------------------------------------------- reranker
def reranker_examples(pairs: Sequence[Pair], rng: random.Random) -> list[tuple[str, str, float]]:
    """(query, passage, label): every positive, every negative of the pair; shuffled."""
    rows = [(p.query, p.positive, 1.0) for p in pairs] + [(p.query, n, 0.0) for p in pairs for n in p.negatives]
    rng.shuffle(rows)
    return rows


def finetune_reranker(pairs: Sequence[Pair], out: Path | str, *, base: str = BUNDLED, cfg: TrainConfig | None = None,
                      cache_dir: Path | None = None) -> dict[str, Any]:
    """Train a one-logit cross-encoder on (query, positive)=1 / (query, negative)=0; pairs need negatives."""
    cfg = cfg or TrainConfig(lr=3e-5, max_length=192)
    if not any(p.negatives for p in pairs):
        raise InputError("reranker training needs negatives: mine them (--hard-negatives) or list them in PAIRS")
    torch, device, dtype = _setup(cfg)
    from sentence_transformers import CrossEncoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source, _ = resolve_base(base, cache_dir)
    resume = cfg.resume and (out / "checkpoint-last" / STATE).is_file()
    try:
        model = CrossEncoder(str(out / "checkpoint-last") if resume else source, num_labels=1,
                             max_length=cfg.max_length, device=device)
    except Exception as exc:
        raise ModelError(f"--base {base!r}: cannot load it as a cross-encoder ({type(exc).__name__}: {exc})") from exc
    rows = reranker_examples(pairs, random.Random(cfg.seed))
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = _plan(per_epoch, cfg)
    net = model.model
    params = _trainable(net, cfg)
    loop = _Loop(torch, params, cfg, out, dtype, total)
    if resume:
        loop.restore()
    bce = torch.nn.BCEWithLogitsLoss()
    tok = model.tokenizer

    def save_model(path: Path) -> None:
        model.save(str(path))

    net.train()
    t0 = time.perf_counter()
    bar = _progress(total, "fine-tune reranker", cfg.progress)
    bar.update(loop.step)
    epoch_rows: dict[int, list[tuple[str, str, float]]] = {}
    while loop.step < total:
        e, i = divmod(loop.step, per_epoch)
        if e not in epoch_rows:  # a fixed order per epoch, so a resumed run sees the same batches
            epoch_rows.clear()
            epoch_rows[e] = rows if e == 0 else random.Random(cfg.seed + e).sample(rows, len(rows))
        chunk = epoch_rows[e][i * cfg.batch_size:(i + 1) * cfg.batch_size]
        enc = tok([r[0] for r in chunk], [r[1] for r in chunk], padding=True, truncation="longest_first",
                  max_length=cfg.max_length, return_tensors="pt").to(device)
        labels = torch.tensor([r[2] for r in chunk], device=device)
        with loop.autocast():
            logits = net(**enc).logits.view(-1).float()
        loss = bce(logits, labels)
        loop.backward_step(loss, params)
        loop.after_step(bar, save_model)
    bar.close()
    net.eval()
    save_model(out)
    info = {"kind": "reranker", "base": base, "pairs": len(pairs), "examples": len(rows), "steps": loop.step,
            "device": device, "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": loop.losses[0] if loop.losses else None,
            "last_loss": loop.losses[-1] if loop.losses else None, "config": asdict(cfg)}
    _write_card(out, info)
    return info
