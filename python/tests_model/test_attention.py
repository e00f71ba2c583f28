"""Chunked causal / sliding-window GQA attention against a per-query loop."""

import unittest

import numpy as np

import _util  # noqa: F401
from oscarkv_model.attention import causal_attention


def naive(q, k, v, scale, window):
    n, hq, d = q.shape
    g = hq // k.shape[1]
    out = np.zeros((n, hq, v.shape[-1]))
    for i in range(n):
        lo = 0 if window is None else max(0, i - window + 1)
        for h in range(hq):
            s = (k[lo : i + 1, h // g].astype(np.float64) @ q[i, h]) * scale
            p = np.exp(s - s.max())
            p /= p.sum()
            out[i, h] = p @ v[lo : i + 1, h // g]
    return out


class AttentionTest(unittest.TestCase):
    def test_matches_naive(self):
        rng = np.random.default_rng(0)
        n, hq, hkv, d = 37, 4, 2, 16
        q = rng.normal(size=(n, hq, d)).astype(np.float32)
        k = rng.normal(size=(n, hkv, d)).astype(np.float32)
        v = rng.normal(size=(n, hkv, d)).astype(np.float32)
        for window in (None, 1, 5, 36, 100):
            for chunk in (1, 8, 64):
                got = causal_attention(0, q, k, v, 0.25, window, q_chunk=chunk)
                np.testing.assert_allclose(got, naive(q, k, v, 0.25, window), rtol=1e-5, atol=1e-5,
                                           err_msg=f"window={window} chunk={chunk}")

    def test_window_one_returns_own_value(self):
        rng = np.random.default_rng(1)
        q = rng.normal(size=(9, 4, 8)).astype(np.float32)
        k = rng.normal(size=(9, 1, 8)).astype(np.float32)
        v = rng.normal(size=(9, 1, 8)).astype(np.float32)
        out = causal_attention(0, q, k, v, 1.0, 1, q_chunk=4)
        np.testing.assert_allclose(out, np.repeat(v, 4, axis=1), rtol=1e-6)


if __name__ == "__main__":
    unittest.main()
