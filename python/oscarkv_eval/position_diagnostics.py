#!/usr/bin/env python3
"""Per layer and per 1024-token position bin: how much one layer's INT2 keys disturb its attention.

Runs the model exactly (float32 attention everywhere, so every layer sees exact inputs) and, in
each layer, also evaluates the attention with that layer's keys stored by a key_transform_study
spec under the cache rules (sink 64 + recent 256 in BF16, the rest INT2; values exact). Prints,
per bin: attention KL(exact || INT2) in 1e-3 nats, the probability mass the exact and the INT2
attention put on the INT2 tier, and the attention-output relative error.

    PYTHONPATH=python python3 -m oscarkv_eval.position_diagnostics --ctx 8192 scaled
"""
import argparse

import numpy as np

from oscarkv_eval import cache_rules
from oscarkv_eval.key_transform_study import quantizer, setup
from oscarkv_eval.mixed_attention import _softmax_masked, chunk_masks

BIN = 1024


def layer_stats(qfn, n_layers, n_bins):
    """attn_fn that returns exact attention and accumulates [layer, bin, (kl, mass_exact,
    mass_int2, out_err, out_ref, count)]."""
    stats = np.zeros((n_layers, n_bins, 6))

    def hook(layer, q, k, v, scale, window):
        n, hq, d = q.shape
        kq, _, A, _, mu, Aq = qfn(layer, k, v)
        qr, kr = q @ Aq, (k - mu) @ A
        hi = cache_rules.int2_bounds(n, cache_rules.SINK, cache_rules.RECENT, cache_rules.FLUSH)
        out = np.empty((n, hq, d), np.float32)
        for s in range(0, n, 256):
            e = min(n, s + 256)
            lo, bad, in2 = chunk_masks(s, e, window, cache_rules.SINK, hi)
            qc = qr[s:e].transpose(1, 0, 2)
            se = qc @ kr[lo:e, 0].T
            pe = _softmax_masked(se * np.float32(scale), bad)
            pq = _softmax_masked(np.where(in2, qc @ kq[lo:e, 0].T, se) * np.float32(scale), bad)
            oe, oq = pe @ v[lo:e, 0], pq @ v[lo:e, 0]
            out[s:e] = oe.transpose(1, 0, 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                kl = np.where(pe > 0, pe * (np.log(pe) - np.log(np.maximum(pq, 1e-30))), 0).sum(-1)
            b = np.arange(s, e) // BIN
            for bi in np.unique(b):
                m = b == bi
                stats[layer, bi] += (kl[:, m].sum(), (pe[:, m] * in2[m]).sum(), (pq[:, m] * in2[m]).sum(),
                                     ((oq[:, m] - oe[:, m]) ** 2).sum(), (oe[:, m] ** 2).sum(), hq * m.sum())
        return out

    return hook, stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--ctx", type=int, default=8192)
    a = ap.parse_args(argv)
    model, mom, rots, ctx, segs = setup(a.ctx)
    n_layers = model.cfg.n_layers
    hook, st = layer_stats(quantizer(ctx, rots, mom, a.spec, model.cfg.head_dim), n_layers, a.ctx // BIN)
    model.nll(np.array(segs[0]), attn_fn=hook)
    c = st[..., 5]
    print(f"{a.spec}, first {a.ctx}-token segment; per {BIN}-token bin")
    print("layer | KL x1e3 | INT2-tier mass exact>INT2 | attention-output rel. error")
    for i in range(n_layers):
        kl, me, mq = st[i, :, 0] / c[i], st[i, :, 1] / c[i], st[i, :, 2] / c[i]
        err = np.sqrt(st[i, :, 3] / st[i, :, 4])
        print(f"{i:2d}{'G' if (i + 1) % 6 == 0 else ' '} | " + " ".join(f"{1e3 * x:5.0f}" for x in kl) + " | " +
              " ".join(f"{x:.2f}>{y:.2f}" for x, y in zip(me, mq)) + " | " + " ".join(f"{x:.3f}" for x in err))


if __name__ == "__main__":
    main()
