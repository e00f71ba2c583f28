"""Reference attention: causal, optional sliding window, grouped-query heads.

Hook contract (used by `Gemma3Model.forward(attn_fn=...)`):

    attn_fn(layer, q, k, v, scale, window) -> out

    q   [N, Hq, d]  float32, after q-norm and RoPE
    k   [N, Hkv, d] float32, after k-norm and RoPE
    v   [N, Hkv, d] float32
    scale  softmax scale (query_pre_attn_scalar ** -0.5; 1/16 for Gemma 3 270M)
    window None for global layers, else W: query i sees keys j with j <= i and i - j < W
    out [N, Hq, d]  float32, softmax(q k^T * scale + mask) v per head
                    (query head h reads KV head h // (Hq // Hkv))

`causal_attention` below is the exact float32 implementation; a quantized KV cache
replaces it by quantizing k and v before calling it (or its own kernel).
"""

from __future__ import annotations

import numpy as np


def causal_attention(
    layer: int,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    window: int | None,
    q_chunk: int = 512,
) -> np.ndarray:
    n, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    out = np.empty((n, hq, v.shape[-1]), dtype=np.float32)
    kt = np.ascontiguousarray(k.transpose(1, 2, 0))  # [Hkv, d, N]
    vt = np.ascontiguousarray(v.transpose(1, 0, 2))  # [Hkv, N, dv]
    scale = np.float32(scale)
    for s in range(0, n, q_chunk):
        e = min(n, s + q_chunk)
        lo = 0 if window is None else max(0, s - window + 1)
        m = e - s
        qc = q[s:e].transpose(1, 0, 2).reshape(hkv, g, m, d)  # [Hkv, g, m, d]
        sc = np.matmul(qc, kt[:, None, :, lo:e]) * scale  # [Hkv, g, m, e-lo]
        qi = np.arange(s, e)[:, None]
        kj = np.arange(lo, e)[None, :]
        bad = kj > qi
        if window is not None:
            bad |= (qi - kj) >= window
        sc[..., bad] = -np.inf
        sc -= sc.max(axis=-1, keepdims=True)
        np.exp(sc, out=sc)
        sc /= sc.sum(axis=-1, keepdims=True)
        oc = np.matmul(sc, vt[:, None, lo:e, :])  # [Hkv, g, m, dv]
        out[s:e] = oc.reshape(hq, m, -1).transpose(1, 0, 2)
    return out
