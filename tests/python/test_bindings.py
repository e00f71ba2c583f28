"""Python bindings over the ref backend: calibration, INT2 round trip, decode, errors.

Run by ctest (tests/python/CMakeLists.txt) with OKV_LIBRARY pointing at the build.
Exits non-zero on the first failed check and prints how many checks ran."""
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import oscarkv as okv  # noqa: E402

CHECKS = []


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn
    return wrap


def sample(rng, n=400, hq=8, hkv=2, d=64):
    q = rng.standard_normal((n, hq, d)).astype(np.float32)
    k = rng.standard_normal((n, hkv, d)).astype(np.float32)
    k[:, :, 3] += 12.0  # an outlier channel
    v = rng.standard_normal((n, hkv, d)).astype(np.float32)
    return q, k, v


def attention(q, k, v):
    g = q.shape[0] // k.shape[1]
    kk, vv = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    s = np.einsum("hd,nhd->hn", q.astype(np.float64), kk) / math.sqrt(q.shape[1])
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.einsum("hn,nhd->hd", p, vv)


@check("calibrated rotations: orthogonal (q_rotation = k_rotation^-T when scaled), file round trip")
def _(rng, ctx):
    q, k, v = sample(rng)
    for scale in (False, True):
        rs = okv.calibrate([(q, k, v)], method="oscar", scale_keys=scale)
        lay = rs.layer(0)
        assert (lay["q_rotation"] is not None) == scale and rs.meta("format_version") == ("2" if scale else "1")
        eye = np.eye(q.shape[2])
        v_r, k_r = lay["v_rotation"][0].astype(np.float64), lay["k_rotation"][0].astype(np.float64)
        assert np.abs(v_r @ v_r.T - eye).max() < 1e-5
        q_r = k_r if not scale else lay["q_rotation"][0].astype(np.float64)
        assert np.abs(k_r @ q_r.T - eye).max() < 1e-5  # q Q . k R = q . k
        assert scale == (np.abs(k_r @ k_r.T - eye).max() > 1e-2)  # scaled: not orthogonal
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rot.safetensors")
            rs.save(path)
            back = okv.RotationSet.load(path).layer(0)
            assert np.array_equal(back["k_rotation"], lay["k_rotation"])
            assert scale == (back["q_rotation"] is not None)
            assert not scale or np.array_equal(back["q_rotation"], lay["q_rotation"])
            assert back["v_clip"] == lay["v_clip"]


def logit_err(q, k, k_hat, lay):
    """Relative error of the logits q k^T with keys read back from INT2 (centered keys shift
    every logit of a query by the same amount: compare after removing each query's mean)."""
    r = lay["k_rotation"][0]
    kc = k if lay["k_mean"] is None else k - lay["k_mean"][0]
    qr = q[:, ::4] @ (r if lay["q_rotation"] is None else lay["q_rotation"][0])
    ref, got = np.einsum("nhd,mhd->hnm", qr, kc @ r), np.einsum("nhd,mhd->hnm", qr, k_hat)
    e = (got - ref) - (got - ref).mean(-1, keepdims=True)
    full = np.einsum("nhd,mhd->hnm", q[:, ::4], k)
    return np.linalg.norm(e) / np.linalg.norm(full - full.mean(-1, keepdims=True))


@check("INT2 round trip error: OSCAR below no-rotation on outlier keys (no centering)")
def _(rng, ctx):
    q, k, v = sample(rng)
    k[:, :, 3] *= rng.standard_normal((k.shape[0], k.shape[1])).astype(np.float32)  # outlier varies per token
    errs = {}
    for method in ("none", "oscar"):
        lay = okv.calibrate([(q, k, v)], method=method, center_keys=False).layer(0)
        assert lay["k_mean"] is None
        k_hat, _ = okv.quantize_kv(ctx, k, v, lay)
        errs[method] = logit_err(q, k, k_hat, lay)
    assert errs["oscar"] < errs["none"], errs


@check("key centering lowers the logit error when keys share a large mean")
def _(rng, ctx):
    q, k, v = sample(rng)
    errs = {}
    for center in (False, True):
        lay = okv.calibrate([(q, k, v)], method="oscar", center_keys=center).layer(0)
        assert (lay["k_mean"] is not None) == center
        k_hat, _ = okv.quantize_kv(ctx, k, v, lay)
        errs[center] = logit_err(q, k, k_hat, lay)
    assert errs[True] < 0.7 * errs[False], errs


@check("key scaling lowers the INT2 logit error when queries and keys use different directions")
def _(rng, ctx):
    q, k, v = sample(rng)
    q[:, :, 32:] *= 0.05  # queries read half of the directions ...
    k[:, :, 32:] *= 6.0  # ... keys are large in the other half
    errs = {}
    for scale in (False, True):
        lay = okv.calibrate([(q, k, v)], method="oscar", scale_keys=scale).layer(0)
        k_hat, _ = okv.quantize_kv(ctx, k, v, lay)
        errs[scale] = logit_err(q, k, k_hat, lay)
    assert errs[True] < 0.5 * errs[False], errs


@check("decode through the library matches float64 attention (all BF16 window)")
def _(rng, ctx):
    q, k, v = sample(rng, n=200)
    lay = okv.calibrate([(q, k, v)], method="oscar").layer(0)
    assert lay["q_rotation"] is not None  # the default: key scaling
    out = okv.decode(ctx, q[-1] @ lay["q_rotation"][0], k, v, lay, n_q_heads=q.shape[1])
    ref = attention(q[-1], k, v)
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < 2e-2, rel  # bf16 storage of K/V


@check("errors raise OkvError with the status name")
def _(rng, ctx):
    try:
        okv.cache_desc(8, 3, 64)
    except okv.OkvError as e:
        assert e.name == "OKV_ERROR_BAD_SHAPE", e.name
    else:
        raise AssertionError("Hq % Hkv != 0 accepted")
    try:
        okv.Context("no-such-backend")
    except okv.OkvError as e:
        assert e.name == "OKV_ERROR_INVALID_ARGUMENT", e.name
    else:
        raise AssertionError("unknown backend accepted")
    try:
        okv.RotationSet.load("/nonexistent/rot.safetensors")
    except okv.OkvError as e:
        assert e.name == "OKV_ERROR_IO", e.name
    else:
        raise AssertionError("missing file loaded")


def main():
    rng = np.random.default_rng(1234)
    ctx = okv.Context("ref")
    failed = 0
    for name, fn in CHECKS:
        try:
            fn(rng, ctx)
            print(f"PASS {name}")
        except Exception as e:  # report every failing check
            failed += 1
            print(f"FAIL {name}: {e!r}")
    print(f"{len(CHECKS)} checks, {failed} failed")
    return 1 if failed or not CHECKS else 0


if __name__ == "__main__":
    sys.exit(main())
