"""Gemma 3 (text) forward pass in float32 numpy, with capture / attention hooks.

Per layer (HF names in brackets, GGUF names first):
    h  = rms_norm(x, attn_norm)                         [input_layernorm]
    q  = rope(rms_norm_head(h Wq^T, q_norm))            [q_proj, q_norm]
    k  = rope(rms_norm_head(h Wk^T, k_norm))            [k_proj, k_norm]
    v  = h Wv^T                                         [v_proj]
    a  = attention(q, k, v) Wo^T                        [o_proj]
    x += rms_norm(a, post_attention_norm)               [post_attention_layernorm]
    h  = rms_norm(x, ffn_norm)                          [pre_feedforward_layernorm]
    m  = (gelu_tanh(h Wg^T) * (h Wu^T)) Wd^T            [gate/up/down_proj]
    x += rms_norm(m, post_ffw_norm)                     [post_feedforward_layernorm]
x0 = embed[ids] * sqrt(hidden); logits = rms_norm(x, output_norm) embed^T (tied).
Layers with (i+1) % 6 == 0 are global (RoPE base 1e6), the rest sliding-window
(512 tokens, RoPE base 1e4).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .attention import causal_attention
from .ops import apply_rope, gelu_tanh, rms_norm, rope_tables
from .weights import Gemma3Weights, load_gguf

# capture(layer, q [N,Hq,d], k [N,Hkv,d], v [N,Hkv,d]) -> None
CaptureFn = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
# attn_fn(layer, q, k, v, scale, window) -> [N, Hq, d]   (see attention.py)
AttnFn = Callable[..., np.ndarray]


class Gemma3Model:
    def __init__(self, weights: Gemma3Weights):
        self.w = weights
        self.cfg = weights.config

    @classmethod
    def load(cls, path=None) -> "Gemma3Model":
        return cls(load_gguf(path))

    # ------------------------------------------------------------------ core
    def forward(
        self,
        ids,
        attn_fn: Optional[AttnFn] = None,
        capture: Optional[CaptureFn] = None,
        hidden_hook: Optional[Callable[[int, np.ndarray], None]] = None,
        start_pos: int = 0,
    ) -> np.ndarray:
        """Run the whole sequence `ids` (1-D ints); returns final-normed hidden [N, hidden].

        attn_fn replaces the attention of every layer (default: exact float32).
        capture receives per-layer q, k (after norm + RoPE) and v.
        hidden_hook(i, x) sees the residual stream after layer i (i = -1: embeddings).
        """
        cfg, w = self.cfg, self.w
        attn_fn = attn_fn or causal_attention
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = ids.shape[0]
        d, hq, hkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        pos = np.arange(start_pos, start_pos + n)
        ropes = {}
        for base in {cfg.rope_base(i) for i in range(cfg.n_layers)}:
            ropes[base] = rope_tables(pos, d, base)

        x = w.embed[ids] * np.float32(np.sqrt(cfg.hidden))
        if hidden_hook:
            hidden_hook(-1, x)
        for i, L in enumerate(w.layers):
            h = rms_norm(x, L.attn_norm, cfg.eps)
            q = (h @ L.wq.T).reshape(n, hq, d)
            k = (h @ L.wk.T).reshape(n, hkv, d)
            v = (h @ L.wv.T).reshape(n, hkv, d)
            q = rms_norm(q, L.q_norm, cfg.eps)
            k = rms_norm(k, L.k_norm, cfg.eps)
            cos, sin = ropes[cfg.rope_base(i)]
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            if capture:
                capture(i, q, k, v)
            a = attn_fn(i, q, k, v, cfg.attn_scale, cfg.window(i))
            a = a.reshape(n, hq * d) @ L.wo.T
            x = x + rms_norm(a, L.post_attn_norm, cfg.eps)
            h = rms_norm(x, L.ffn_norm, cfg.eps)
            m = gelu_tanh(h @ L.w_gate.T)
            m *= h @ L.w_up.T
            m = m @ L.w_down.T
            x = x + rms_norm(m, L.post_ffn_norm, cfg.eps)
            if hidden_hook:
                hidden_hook(i, x)
        return rms_norm(x, w.final_norm, cfg.eps)

    # --------------------------------------------------------------- outputs
    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """[N, vocab] float32 logits (tied embedding). Mind memory: N * 262144 * 4 bytes."""
        return hidden @ self.w.embed.T

    def nll(self, ids, chunk: int = 256, **fw) -> np.ndarray:
        """Per-token negative log-likelihood (nats) of ids[1:] given the prefix: [N-1]."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        hid = self.forward(ids, **fw)[:-1]
        tgt = ids[1:]
        out = np.empty(len(tgt), dtype=np.float64)
        for s in range(0, len(tgt), chunk):
            lg = self.logits(hid[s : s + chunk])
            mx = lg.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(lg - mx).sum(axis=-1)) + mx[:, 0]
            out[s : s + chunk] = lse - lg[np.arange(lg.shape[0]), tgt[s : s + chunk]]
        return out

    def generate(self, ids, n_new: int, stop_eos: bool = True, **fw) -> list:
        """Greedy continuation (recomputes the full prefix each step; for short demos)."""
        ids = list(np.asarray(ids).reshape(-1))
        new = []
        for _ in range(n_new):
            h = self.forward(ids, **fw)[-1:]
            t = int(np.argmax(self.logits(h)[0]))
            if stop_eos and t == self.cfg.eos_id:
                break
            ids.append(t)
            new.append(t)
        return new
