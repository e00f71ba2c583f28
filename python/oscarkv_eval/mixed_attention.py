"""Attention that reads every key/value from the tier the cache rules put it in.

For the query at position t: keys j < S0 and j >= hi[t] come from the BF16 tier
(rotated rows rounded to bf16), keys S0 <= j < hi[t] from the INT2 tier
(dequantized). The computation happens in the rotated basis (q R_K . k R_K = q . k)
and the output is un-rotated by R_V^T. Diagnostics compare, for the last `diag`
queries, the probabilities and outputs with exact float32 attention on the same
inputs.
"""
import numpy as np

from . import cache_rules
from .quantizers import bf16_round


class LayerStats:
    def __init__(self):
        self.k_err = self.k_ref = self.v_err = self.v_ref = 0.0
        self.kl = self.out_err = self.out_ref = 0.0
        self.n_kl = 0

    def as_dict(self):
        return {"key_rel_mse": self.k_err / max(self.k_ref, 1e-30),
                "value_rel_mse": self.v_err / max(self.v_ref, 1e-30),
                "attn_kl": self.kl / max(self.n_kl, 1),
                "attn_out_relerr": float(np.sqrt(self.out_err / max(self.out_ref, 1e-30)))}


def _softmax_masked(s, bad):
    s = np.where(bad, -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def chunk_masks(s, e, window, s0, hi):
    """For the queries [s, e): the first key they can see, the mask of keys they must not see
    (causal, sliding window) and the mask of keys read from the INT2 tier (s0 <= j < hi[t])."""
    lo = 0 if window is None else max(0, s - window + 1)
    qi, kj = np.arange(s, e)[:, None], np.arange(lo, e)[None, :]
    bad = kj > qi
    if window is not None:
        bad |= (qi - kj) >= window
    return lo, bad, (kj >= s0) & (kj < hi[s:e, None])


class MixedAttention:
    """attn_fn for Gemma3Model.forward. quantize(layer, k, v) -> (k_rot_int2, v_rot_int2,
    R_K, R_V, k_mean[, Q_K]) gives the INT2 tier rows (rotated basis), the layer's rotations
    (None = identity), the key centering vector the cache subtracts from every key
    before rotation, in both tiers (None = none), and optionally the query transform
    (default R_K; a non-orthogonal key transform A needs A^-T for queries)."""

    def __init__(self, n_layers, quantize, sink, recent, flush, int2=True, diag=128, q_chunk=256):
        self.quantize, self.int2 = quantize, int2
        self.s0, self.w, self.f = sink, recent, flush
        self.diag, self.q_chunk = diag, q_chunk
        self.stats = [LayerStats() for _ in range(n_layers)]

    def __call__(self, layer, q, k, v, scale, window):
        n, hq, d = q.shape
        hkv = k.shape[1]
        g = hq // hkv
        kq, vq, rk, rv, mu, *rq = self.quantize(layer, k, v)
        rq = rq[0] if rq else rk
        qr = q if rq is None else q @ rq
        k_full = k if rk is None else k @ rk  # uncentered: the error scale every method is measured against
        kc = k if mu is None else k - mu
        kr = kc if rk is None else kc @ rk
        vr = v if rv is None else v @ rv
        kb, vb = bf16_round(kr), bf16_round(vr)
        hi = cache_rules.int2_bounds(n, self.s0, self.w, self.f) if self.int2 else np.zeros(n, np.int64)
        st = self.stats[layer]
        if self.int2:
            used = np.zeros(n, bool)
            used[self.s0:int(hi.max(initial=self.s0))] = True
            st.k_err += float(((kq[used] - kr[used]) ** 2).sum())
            st.k_ref += float((k_full[used] ** 2).sum())
            st.v_err += float(((vq[used] - vr[used]) ** 2).sum())
            st.v_ref += float((vr[used] ** 2).sum())
        out = np.empty((n, hq, d), np.float32)
        # [Hkv, N, d] views of every tier
        t_kb, t_vb = kb.transpose(1, 0, 2), vb.transpose(1, 0, 2)
        t_kq = kq.transpose(1, 0, 2) if self.int2 else t_kb
        t_vq = vq.transpose(1, 0, 2) if self.int2 else t_vb
        t_k, t_v = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
        for s in range(0, n, self.q_chunk):
            e = min(n, s + self.q_chunk)
            m = e - s
            lo, bad, in_int2 = chunk_masks(s, e, window, self.s0, hi)
            qc = qr[s:e].transpose(1, 0, 2).reshape(hkv, g, m, d)
            sb = np.matmul(qc, t_kb[:, None, lo:e].transpose(0, 1, 3, 2))
            sq = np.matmul(qc, t_kq[:, None, lo:e].transpose(0, 1, 3, 2))
            p = _softmax_masked(np.where(in_int2, sq, sb) * np.float32(scale), bad)
            o = np.matmul(np.where(in_int2, 0, p), t_vb[:, None, lo:e]) + np.matmul(
                np.where(in_int2, p, 0), t_vq[:, None, lo:e])
            o = o.reshape(hq, m, d).transpose(1, 0, 2)
            out[s:e] = o if rv is None else o @ rv.T
            first = max(s, n - self.diag)
            if first < e:  # diagnostics against exact float32 attention on the same inputs
                a = first - s
                qx = q[first:e].transpose(1, 0, 2).reshape(hkv, g, e - first, d)
                px = _softmax_masked(np.matmul(qx, t_k[:, None, lo:e].transpose(0, 1, 3, 2)) * np.float32(scale),
                                     bad[a:])
                ox = np.matmul(px, t_v[:, None, lo:e]).reshape(hq, e - first, d).transpose(1, 0, 2)
                pp = p[:, :, a:]
                with np.errstate(divide="ignore", invalid="ignore"):
                    kl = np.where(px > 0, px * (np.log(px) - np.log(np.maximum(pp, 1e-30))), 0.0).sum(-1)
                st.kl += float(kl.sum())
                st.n_kl += kl.size
                st.out_err += float(((out[first:e] - ox) ** 2).sum())
                st.out_ref += float((ox ** 2).sum())
        return out
