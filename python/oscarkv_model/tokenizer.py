"""Gemma 3 tokenizer built from the GGUF vocabulary.

Implementation: Hugging Face's maintained GGUF tokenizer converter
(`transformers.integrations.gguf.gguf_tokenizer_mapping.convert_gguf_tokenizer`,
which needs only `tokenizers`, not torch) turns the GGUF token list into a
`tokenizers.Tokenizer` (SentencePiece-style BPE; merges rebuilt from the file's
token order, multi-space tokens respelled, byte fallback).  The GGUF arrays are
read with the `gguf` package.  The built tokenizer is cached as tokenizer.json
next to the model (or in $OSCARKV_CACHE), after which only `tokenizers` is needed.

BOS (id 2) is prepended by `encode(..., add_bos=True)` as the GGUF asks
(tokenizer.ggml.add_bos_token = true); the converter itself adds nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .weights import default_model_path


def _cache_path(model_path: Path) -> Path:
    base = os.environ.get("OSCARKV_CACHE")
    st = model_path.stat()
    tag = hashlib.sha1(f"{model_path.resolve()}:{st.st_size}".encode()).hexdigest()[:12]
    d = Path(base) if base else Path.home() / ".cache" / "oscarkv_model"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"tokenizer-{tag}.json"


def _build(model_path: Path):
    import gguf
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    r = gguf.GGUFReader(str(model_path))
    f = r.fields
    tf = f["tokenizer.ggml.tokens"]
    tokens = [bytes(tf.parts[i]).decode("utf-8") for i in tf.data]

    def val(key, default=None):
        return f[key].contents() if key in f else default

    d = dict(
        tokenizer_type=val("tokenizer.ggml.model"),
        tokens=tokens,
        scores=list(val("tokenizer.ggml.scores")),
        token_type=list(val("tokenizer.ggml.token_type")),
        bos_token_id=val("tokenizer.ggml.bos_token_id"),
        eos_token_id=val("tokenizer.ggml.eos_token_id"),
        unk_token_id=val("tokenizer.ggml.unknown_token_id"),
        pad_token_id=val("tokenizer.ggml.padding_token_id"),
        add_prefix_space=val("tokenizer.ggml.add_space_prefix", False),
    )
    tok, _ = convert_gguf_tokenizer(val("general.architecture"), d)
    return tok


class Gemma3Tokenizer:
    def __init__(self, model_path=None, bos_id: int = 2, eos_id: int = 1):
        from tokenizers import Tokenizer

        model_path = Path(model_path) if model_path else default_model_path()
        cache = _cache_path(model_path)
        if cache.exists():
            self.tok = Tokenizer.from_file(str(cache))
        else:
            self.tok = _build(model_path)
            tmp = cache.with_suffix(".tmp")
            self.tok.save(str(tmp))
            os.replace(tmp, cache)
        self.bos_id, self.eos_id = bos_id, eos_id

    def encode(self, text: str, add_bos: bool = True) -> list:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)
