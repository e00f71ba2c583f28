#!/usr/bin/env python3
"""Which key transform keeps Gemma 3 270M's perplexity with INT2 keys, and where the rest is lost.

Builds key/query transforms from the calibration moments in numpy and measures perplexity
on the evaluation text with the cache rules (sink 64 + recent 256 in BF16), per 1024-token
bin of the segment. Keys are clipped and INT2-quantised here by a numpy copy of the format
(SPEC 3: per-row sort clip, min/max per group, fp16 metadata; it reproduces the library's
OSCAR result within 0.5 % PPL); values go through the library with the stored OSCAR R_V.

    PYTHONPATH=python python3 -m oscarkv_eval.key_transform_study --ctx 8192 ortho scaled gen:kratio=0.88

Specs are KIND[:opt=value...]. KIND: ortho (R = U H P, the paper's key rotation), scaled
(U D H P with D = (lambda/mu)^alpha, queries U D^-1 H P: the library's key scaling), gen (the
joint optimum of the same model: C_K^-1/2 W G^alpha, W, G eigenpairs of C_K^1/2 C_Q C_K^1/2).
Options: alpha (0.25), eps (regulariser, 0.01), kratio (key clip; default: the stored fitted
clip of oscar-centered-fitted), group (128), gg (group of the global layers), gk (clip factor
of the global layers), kq (1 all layers, 0 none, 2 global only, 3 local only), vq (0: exact values),
gain (rows scaled by (x.x / x.xq)^gain: undoes the quantiser's shrinkage along the row), kbits (key
bits, 2; min/max levels 2^bits), hbits (key bits of the layers in hl, dash-separated, default 5-11-17,
clipped at hr, default 0.97), vbits (1: values at 1 bit, mean +- mean absolute deviation per
group), kclips (1: the library's fitted key clips of oscar-scaled-fitted instead of
oscar-centered-fitted's), seed (random signs for the eigenvectors: U -> U S, an equally valid
pair), lgain (constant multiplier on every dequantised key row), ls (N least-squares refits of each
group's (lo, scale) for its codes), rowfit (1: per row the clip ratio of 0.70..1.00 with the least
squared error), kchan (B: KIVI-style per-channel min/max over blocks of B tokens after the key
transform, a different format). KIND lib: the library's stored pair. KIND alloc: the per-direction
bit allocation prototype of bit_allocation.py (options budget: key bits/element including
metadata, 2.25; widths: dash-separated bit widths allowed, 4-3-2-1-0).
--text calibration evaluates held-out Python documentation instead of the evaluation text, for
choosing settings without looking at the evaluation text.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tools" / "capture"))

import oscarkv as okv  # noqa: E402
from oscarkv_eval import cache_rules  # noqa: E402
from oscarkv_eval.bit_allocation import BlockKeyQuantizer  # noqa: E402
from oscarkv_eval.mixed_attention import MixedAttention  # noqa: E402
from oscarkv_eval.quantizers import _asym_minmax, clip_rows, one_bit_rows  # noqa: E402
from oscarkv_eval.run_quality import capture_calibration  # noqa: E402
from oscarkv_model import Gemma3Model  # noqa: E402
from oscarkv_model.tokenizer import Gemma3Tokenizer  # noqa: E402
from capture_activations import sequences  # noqa: E402

HELDOUT_SKIP_CHARS = 2_000_000
INT_OPTS = ("kchan", "ls", "rowfit", "group", "gg", "kq", "vq", "kbits", "hbits", "vbits", "kclips", "seed")


def moments(model, tok, cache: Path, seq_len):
    """Per layer C_Q (mean over query heads of q^T q), the mean key and the centered C_K."""
    if cache.exists():
        return dict(np.load(cache))
    layers, _ = capture_calibration(model, tok, 8192, seq_len)
    out = {}
    for i, seqs in enumerate(layers):
        q = np.concatenate([a for a, _, _ in seqs]).astype(np.float64).reshape(-1, model.cfg.head_dim)
        k = np.concatenate([b for _, b, _ in seqs]).astype(np.float64)[:, 0]
        mu = k.mean(0)
        out[f"cq{i}"], out[f"mu{i}"], out[f"ck{i}"] = q.T @ q / len(q), mu, (k - mu).T @ (k - mu) / len(k)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def hadamard_perm(d):
    h = np.array([[1.0]])
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    bits = d.bit_length() - 1
    perm = [d - 1 - int(format(j, f"0{bits}b")[::-1], 2) for j in range(d)]
    return h / np.sqrt(d) @ np.eye(d)[:, perm]


def ls_refit(x, ratio, group, iters, bits=2):
    """Clip and min/max grid as quant_rows, then per group `iters` rounds of: codes on the current
    grid, least-squares (lo, scale) for those codes against the unclipped values x (fp16 metadata)."""
    n, d = x.shape
    top = 2**bits - 1
    f16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    gc = clip_rows(x, ratio).reshape(n, d // group, group)
    lo = f16(gc.min(2, keepdims=True))
    sc = f16(np.maximum(gc.max(2, keepdims=True) - lo, 1e-8) / top)
    g = x.reshape(n, d // group, group).astype(np.float64)
    for _ in range(iters):
        c = np.clip(np.floor((g - lo) / np.where(sc > 0, sc, 1) + 0.5), 0, top)
        cm, xm = c.mean(2, keepdims=True), g.mean(2, keepdims=True)
        var = ((c - cm) ** 2).mean(2, keepdims=True)
        cov = ((c - cm) * (g - xm)).mean(2, keepdims=True)
        ok = var > 0
        sc_new = np.where(ok, cov / np.where(ok, var, 1), sc)
        good = sc_new > 0
        lo = f16(np.where(good, np.where(ok, xm - sc_new * cm, lo), lo))
        sc = f16(np.where(good, sc_new, sc))
    c = np.clip(np.floor((g - lo) / np.where(sc > 0, sc, 1) + 0.5), 0, top)
    return (lo + c * sc).reshape(n, d).astype(np.float32)


def rowfit_rows(x, group, ratios, bits=2):
    """Per row, the clip ratio of `ratios` with the smallest squared error after quantisation."""
    n, d = x.shape
    best, err = None, None
    for r in ratios:
        xq = quant_rows(x, r, group, bits=bits)
        e = ((xq - x) ** 2).sum(1)
        if best is None:
            best, err = xq, e
        else:
            m = e < err
            best[m], err[m] = xq[m], e[m]
    return best


def quant_rows(x, ratio, group, gain=0.0, bits=2, lgain=1.0):
    """Per-row sort clip (SPEC 2.6), then min/max quantisation at `bits` bits (2: the INT2 format)
    per group with fp16 metadata.
    gain: multiply each row by (x.x / x.xq)^gain, undoing the shrinkage along the row itself.
    lgain: multiply every dequantised row by this constant (a per-layer metadata scale)."""
    n, d = x.shape
    xq = _asym_minmax(clip_rows(x, ratio).reshape(n, d // group, group), axis=2, bits=bits)
    xq = xq.reshape(n, d).astype(np.float32)
    if gain:
        g = np.einsum("ij,ij->i", x, x) / np.maximum(np.einsum("ij,ij->i", x, xq), 1e-30)
        xq = xq * (g**gain)[:, None]
    return xq * np.float32(lgain) if lgain != 1.0 else xq


def key_pair(kind, cq, ck, alpha, eps, HP, seed=0):
    """(keys' matrix, queries' matrix) with (q Aq).(k A) = q.k."""
    d = cq.shape[0]
    if kind == "gen":
        a = ck + eps * np.trace(ck) / d * np.eye(d)
        b = cq + eps * np.trace(cq) / d * np.eye(d)
        w, v = np.linalg.eigh(a)
        ah, aih = v @ np.diag(np.sqrt(w)) @ v.T, v @ np.diag(1 / np.sqrt(w)) @ v.T
        g, W = np.linalg.eigh(ah @ b @ ah)
        order = np.argsort(-g)
        W, g = W[:, order], np.maximum(g[order], 1e-12 * g.max())
        t, tq = aih @ W @ np.diag(g**alpha), ah @ W @ np.diag(g**-alpha)
        c = np.sqrt(np.trace(ck) / np.trace(t.T @ ck @ t))
        return (t * c) @ HP, (tq / c) @ HP
    lam, U = np.linalg.eigh((cq + cq.T) / 2)
    order = np.argsort(-lam)
    U, lam = U[:, order], np.maximum(lam[order], 0)
    D = np.ones(d)
    if kind == "scaled":
        mu = np.maximum(np.einsum("ij,jk,ki->i", U.T, ck, U), 0)
        D = ((lam + eps * lam.mean()) / (mu + eps * mu.mean())) ** alpha
        D /= np.exp(np.log(D).mean())
    elif kind != "ortho":
        raise SystemExit(f"unknown kind {kind}")
    if seed:  # another equally valid eigenvector sign choice: U S, S = diag(+-1)
        U = U * np.random.default_rng(seed).choice([-1.0, 1.0], size=d)
    return U @ np.diag(D) @ HP, U @ np.diag(1 / D) @ HP


def quantizer(ctx, rots, mom, spec, d):
    kind, *rest = spec.split(":")
    o = {"alpha": 0.25, "eps": 0.01, "kratio": None, "group": 128, "gg": 0, "gk": 1.0, "kq": 1, "vq": 1,
         "gain": 0.0, "kbits": 2, "hbits": 0, "hl": "5-11-17", "hr": 0.97, "vbits": 2, "kclips": 0, "seed": 0,
         "lgain": 1.0, "ls": 0, "rowfit": 0, "budget": 2.25, "widths": "4-3-2-1-0", "kchan": 0}
    for item in rest:
        k, v = item.split("=")
        o[k] = int(v) if k in INT_OPTS else (v if k in ("hl", "widths") else float(v))
    if (kind == "lib" or o["kclips"]) and "scaled" not in rots[0]:
        raise SystemExit("kind lib / kclips=1 need build/quality-calib-cache/8192x2048/oscar-scaled-fitted.safetensors:"
                         " run run_quality with oscar-scaled-fitted first")
    HP = hadamard_perm(d)

    def values(r, k, v, group):
        """Value rows of the INT2 tier (rotated by the stored R_V): library INT2, 1-bit or exact."""
        if o["vq"] and o["vbits"] == 1:
            return one_bit_rows(v[:, 0] @ r["v_rotation"][0], group)[:, None]
        if o["vq"]:
            return okv.quantize_kv(ctx, k, v, r, group_size=group, meta="f16", windows=False)[1]
        return (v[:, 0] @ r["v_rotation"][0])[:, None]

    if kind == "alloc":  # research prototype: several bit widths per key row (bit_allocation.py)
        widths = tuple(int(b) for b in o["widths"].split("-"))
        blocks = [BlockKeyQuantizer(mom[f"cq{i}"], mom[f"ck{i}"], o["budget"], widths=widths)
                  for i in range(len(rots))]
        print(f"  alloc: key bits/element {np.mean([b.bpe for b in blocks]):.3f}; layer 5 segments {blocks[5].segs}",
              flush=True)

        def qa(layer, k, v):
            r, mu = rots[layer], mom[f"mu{layer}"].astype(np.float32)
            kq = blocks[layer].round_trip(k[:, 0] - mu)[:, None]
            return kq, values(r, k, v, o["group"]), None, r["v_rotation"][0], mu
        return qa
    if kind == "lib":  # the library's calibrated pair and mean (oscar-scaled-fitted), numpy key path
        pairs = [(r["scaled"]["k_rotation"][0], r["scaled"]["q_rotation"][0]) for r in rots]
    else:
        pairs = [key_pair(kind, mom[f"cq{i}"], mom[f"ck{i}"], o["alpha"], o["eps"], HP,
                          o["seed"] + i if o["seed"] else 0) for i in range(len(rots))]

    def q(layer, k, v):
        r, (A, Aq) = rots[layer], pairs[layer]
        mu = (r["scaled"]["k_mean"][0] if kind == "lib" else mom[f"mu{layer}"]).astype(np.float32)
        glob = (layer + 1) % 6 == 0
        group = o["gg"] if (o["gg"] and glob) else o["group"]
        ratio = (r["scaled"] if o["kclips"] else r)["k_clip"] if o["kratio"] is None else o["kratio"]
        ratio = min(1.0, ratio * o["gk"]) if glob else ratio
        A32, Aq32 = A.astype(np.float32), Aq.astype(np.float32)
        kr = (k[:, 0] - mu) @ A32
        quant_k = o["kq"] == 1 or (o["kq"] == 2 and glob) or (o["kq"] == 3 and not glob)
        bits = o["kbits"]
        if o["hbits"] and str(layer) in o["hl"].split("-"):
            bits, ratio = o["hbits"], o["hr"]
        if not quant_k:
            kq = kr
        elif o["kchan"]:  # KIVI-style per channel over blocks of kchan tokens from the sink on (a new format)
            kq = kr.copy()
            blk = o["kchan"]
            for s0 in range(cache_rules.SINK, len(kr), blk):
                kq[s0:s0 + blk] = _asym_minmax(kr[s0:s0 + blk], axis=0, bits=bits)
        elif o["rowfit"]:  # per-row MSE-best clip ratio from 0.70 .. 1.00
            kq = rowfit_rows(kr, group, np.arange(0.70, 1.0001, 0.03), bits)
        elif o["ls"]:  # least-squares grid refit, starting from the clipped min/max grid
            kq = ls_refit(kr, ratio, group, o["ls"], bits)
        else:
            kq = quant_rows(kr, ratio, group, o["gain"], bits, o["lgain"])
        return kq[:, None], values(r, k, v, group), A32, r["v_rotation"][0], mu, Aq32
    return q


def setup(ctx_len, calib_seq_len=2048, source="evaluation", n_segments=1):
    """(model, moments, per-layer stored rotations, ref context, evaluation segments of ctx_len)."""
    model, tok = Gemma3Model.load(), Gemma3Tokenizer()
    cache = ROOT / "build" / "quality-calib-cache" / f"8192x{calib_seq_len}" / "moments.npz"
    mom = moments(model, tok, cache, calib_seq_len)
    stored = ROOT / "build" / "quality-calib-cache" / "8192x2048" / "oscar-centered-fitted.safetensors"
    if not stored.exists():
        raise SystemExit(f"{stored} missing: run run_quality with oscar-centered-fitted first")
    rs = okv.RotationSet.load(stored)
    rots = [rs.layer(i) for i in range(model.cfg.n_layers)]
    scaled = stored.with_name("oscar-scaled-fitted.safetensors")
    if scaled.exists():  # the library's own pair and clips (kind lib, option kclips=1)
        ss = okv.RotationSet.load(scaled)
        for i, r in enumerate(rots):
            r["scaled"] = ss.layer(i)
    # "calibration": held-out Python documentation far past the calibration tokens, for choosing
    # settings without looking at the evaluation text
    skip = HELDOUT_SKIP_CHARS if source == "calibration" else 0
    segs = [s for s in sequences(tok, source, ctx_len * n_segments, ctx_len, skip_chars=skip) if len(s) == ctx_len]
    return model, mom, rots, okv.Context("ref"), segs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--calib-seq-len", type=int, default=2048)
    ap.add_argument("--text", choices=("evaluation", "calibration"), default="evaluation",
                    help="calibration: held-out Python documentation (for choosing settings)")
    ap.add_argument("--segments", type=int, default=1, help="consecutive segments of --ctx tokens")
    a = ap.parse_args(argv)
    model, mom, rots, ctx, segs = setup(a.ctx, a.calib_seq_len, a.text, a.segments)
    n_layers, d = model.cfg.n_layers, model.cfg.head_dim

    def nll(qfn):
        hook = MixedAttention(n_layers, qfn or (lambda layer, k, v: (None,) * 5), cache_rules.SINK, cache_rules.RECENT,
                              cache_rules.FLUSH, int2=qfn is not None)
        return np.concatenate([model.nll(np.array(s), attn_fn=hook) for s in segs])

    base = nll(None)
    step, what = (1024, "1024-token bin") if len(segs) == 1 else (a.ctx - 1, "segment")  # nll drops each BOS
    print(f"ctx {a.ctx} x {len(segs)}: bf16 PPL {np.exp(base.mean()):.4f}; per {what}: relative PPL change, %",
          flush=True)
    for spec in a.specs:
        t0 = time.time()
        x = nll(quantizer(ctx, rots, mom, spec, d))
        bins = " ".join(f"{100 * (np.exp(x[i:i + step].mean() - base[i:i + step].mean()) - 1):+.1f}"
                        for i in range(0, len(x), step))
        print(f"{spec:32s} PPL {np.exp(x.mean()):.4f} ({100 * (np.exp(x.mean() - base.mean()) - 1):+.2f} %) | "
              f"{bins} | {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
