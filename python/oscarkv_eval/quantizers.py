"""INT2 round trips per method. Everything returns rotated-basis float32 arrays.

oscarkv methods go through the C library (append into an all-INT2 cache, then
dequantize), so the evaluation measures the shipped format and kernels. The INT2
format is per token, so quantizing every row once and choosing per query which rows
are read from INT2 is exact for the tier rules.
"""
import numpy as np

import oscarkv as okv


def bf16_round(x):
    """Round float32 to bfloat16 (nearest even) and back."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def okv_round_trip(ctx, kr_unrot, v_unrot, rotation, group_size=0, meta="f16", quantizer="uniform"):
    """(k, v) unrotated -> dequantized INT2 rows in the rotated basis."""
    return okv.quantize_kv(ctx, kr_unrot, v_unrot, rotation, group_size=group_size, meta=meta, quantizer=quantizer,
                           windows=False)


def _asym_minmax(x, axis, bits=2):
    """Asymmetric min/max quantization along `axis` at `bits` bits (2^bits levels), fp16 metadata."""
    top = 2**bits - 1
    lo = x.min(axis=axis, keepdims=True).astype(np.float16).astype(np.float32)
    hi = x.max(axis=axis, keepdims=True)
    scale = (np.maximum(hi - lo, 1e-8) / top).astype(np.float16).astype(np.float32)
    code = np.clip(np.floor((x - lo) / np.where(scale > 0, scale, 1) + 0.5), 0, top)
    return lo + code * scale


def clip_rows(x, ratio):
    """Per-row clip of SPEC 2.6 (numpy copy of the format's sort variant): |x| limited to the
    element at index floor(ratio * d) of the row's sorted magnitudes; ratio >= 1 leaves x as is."""
    if ratio >= 1.0:
        return x
    tau = np.sort(np.abs(x), axis=1)[:, int(np.floor(ratio * x.shape[1]))][:, None]
    return np.clip(x, -tau, tau)


def one_bit_rows(x, group):
    """1 bit per element: per group, mean m and mean absolute deviation a (fp16); x^ = m +- a.
    Stored as the format's (lo, scale) = (m - a, 2a) with code = x > m."""
    n, d = x.shape
    g = x.reshape(n, d // group, group)
    m = g.mean(axis=2, keepdims=True)
    a = np.abs(g - m).mean(axis=2, keepdims=True)
    lo, sc = (m - a).astype(np.float16).astype(np.float32), (2 * a).astype(np.float16).astype(np.float32)
    return (lo + (g > m) * sc).reshape(n, d).astype(np.float32)


def kivi_round_trip(k, v, group=32):
    """KIVI-style 2-bit: keys per channel over blocks of `group` tokens, values per token
    over groups of `group` channels (fp16 scale and zero point): 3 bits per element."""
    n, h, d = k.shape
    pad = (-n) % group
    kp = np.concatenate([k, np.repeat(k[-1:], pad, axis=0)]) if pad else k
    kq = _asym_minmax(kp.reshape(-1, group, h, d), axis=1).reshape(-1, h, d)[:n]
    vq = _asym_minmax(v.reshape(n, h, d // group, group), axis=3).reshape(n, h, d)
    return kq.astype(np.float32), vq.astype(np.float32)


KIVI_BITS = 2.0 + 2 * 16.0 / 32  # scale + zero point in fp16 per group of 32
