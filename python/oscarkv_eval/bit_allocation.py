"""Per-direction bit allocation for keys: a research prototype of a format with several bit widths
per row (not the INT2 format of SPEC 3).

rate_bound.py shows that one bit width per row leaves 1-5 dB of score error on the table against
reverse water-filling. This prototype spends a row's bit budget unequally: the key's directions
are sorted by importance w_i = lambda_i mu_i (query energy x key variance in the eigenbasis of
C_Q), cut into contiguous segments, and each segment is stored at its own width b in {0..4}
(b = 0: the direction is dropped, i.e. replaced by the mean) with one fp16 (lo, scale) pair per
row. Inside a segment the directions are scaled by (lambda/mu)^(1/4) and mixed by a seeded random
orthogonal matrix (the segment analogue of D H P), clipped and min/max quantised; 1-bit segments
store mean +- mean absolute deviation. The segments are chosen by dynamic programming on the same
Gaussian model rate_bound.py uses, under a budget of bits per element including the metadata.
"""
import functools

import numpy as np

from .quantizers import _asym_minmax, clip_rows, one_bit_rows
from .rate_bound import spectra

# Mean-square error of the best uniform quantiser of a unit Gaussian at b bits (b = 1: +-E|x|)
GAUSS_EPS = {1: 1 - 2 / np.pi, 2: 0.1188, 3: 0.03744, 4: 0.01154}
META_BITS = 32  # fp16 lo + fp16 scale per segment and row
CLIP = {2: 0.88, 3: 0.97, 4: 1.0}  # per-row clip ratio per width (SPEC 2.6 style)


def plan(w, budget, unit=16, widths=(4, 3, 2, 1, 0)):
    """Segments [(start, end, bits)] over directions sorted by descending w, widths non-increasing,
    minimising the modelled score error with at most budget * len(w) bits per row."""
    d = len(w)
    sq = np.sqrt(np.sort(w)[::-1])
    n_units, total = d // unit, int(round(budget * d))

    def seg_cost(a, b, bits):
        s = sq[a * unit:b * unit]
        return float((s**2).sum()) if bits == 0 else GAUSS_EPS[bits] * float(s.sum()) ** 2 / len(s)

    @functools.lru_cache(None)
    def best(j, max_bits, left):
        if j == n_units:
            return 0.0, ()
        out = (np.inf, ())
        for bits in [b for b in widths if b <= max_bits]:
            for e in range(j + 1, n_units + 1):
                cost_bits = bits * (e - j) * unit + (META_BITS if bits else 0)
                if cost_bits > left:
                    break
                rest, segs = best(e, bits - 1 if bits else 0, left - cost_bits) if e < n_units else (0.0, ())
                c = seg_cost(j, e, bits) + rest
                if c < out[0]:
                    out = (c, ((j * unit, e * unit, bits),) + segs)
        return out

    segs = []
    for a, b, bits in best(0, max(widths), total)[1]:  # merge neighbouring dropped segments
        if segs and bits == 0 and segs[-1][2] == 0:
            a = segs.pop()[0]
        segs.append((a, b, bits))
    return segs


class BlockKeyQuantizer:
    """Round trip of centered keys [N, d] through the per-segment format of one layer."""

    def __init__(self, cq, ck, budget, eps=0.01, seed=0, widths=(4, 3, 2, 1, 0)):
        d = cq.shape[0]
        lam, mu, u = spectra(cq, ck)
        order = np.argsort(-(lam * mu))
        self.u, lam, mu = u[:, order], lam[order], mu[order]
        self.segs = plan(lam * mu, budget, widths=widths)
        self.bpe = sum(b * (e - s) + (META_BITS if b else 0) for s, e, b in self.segs) / d
        rng = np.random.default_rng(seed)
        self.mats = []
        for s, e, b in self.segs:
            n = e - s
            scale = ((lam[s:e] + eps * lam.mean()) / (mu[s:e] + eps * mu.mean())) ** 0.25
            m, _ = np.linalg.qr(rng.standard_normal((n, n)))
            fwd = self.u[:, s:e] @ np.diag(scale) @ m  # centered key -> segment coordinates
            back = m.T @ np.diag(1 / scale) @ self.u[:, s:e].T
            self.mats.append((fwd.astype(np.float32), back.astype(np.float32)))

    def round_trip(self, kc):
        out = np.zeros_like(kc, dtype=np.float32)
        for (s, e, b), (fwd, back) in zip(self.segs, self.mats):
            if b == 0:
                continue
            y = kc @ fwd
            yq = one_bit_rows(y, e - s) if b == 1 else _asym_minmax(clip_rows(y, CLIP[b]), axis=1, bits=b)
            out += yq.astype(np.float32) @ back
        return out
