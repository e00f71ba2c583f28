"""Elementwise ops: RMSNorm, GELU (tanh), NeoX RoPE."""

import unittest

import numpy as np

import _util  # noqa: F401
from oscarkv_model.ops import apply_rope, gelu_tanh, rms_norm, rope_tables


class OpsTest(unittest.TestCase):
    def test_rms_norm(self):
        x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32) * 7
        w = np.linspace(0.5, 2, 16).astype(np.float32)
        y = rms_norm(x, w, 1e-6)
        ref = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * w
        np.testing.assert_allclose(y, ref, rtol=1e-5)

    def test_gelu_tanh_values(self):
        x = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32)
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed independently in float64
        ref = [0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3))) for v in x.astype(np.float64)]
        np.testing.assert_allclose(gelu_tanh(x), ref, rtol=1e-6, atol=1e-7)
        self.assertAlmostEqual(float(gelu_tanh(np.float32(1.0))), 0.841192, places=5)

    def test_rope_is_rotation_with_relative_property(self):
        rng = np.random.default_rng(1)
        d = 64
        q = rng.normal(size=(1, 2, d)).astype(np.float32)
        k = rng.normal(size=(1, 2, d)).astype(np.float32)
        for base in (1e4, 1e6):
            def dot(pq, pk):
                cq, sq = rope_tables(np.array([pq]), d, base)
                ck, sk = rope_tables(np.array([pk]), d, base)
                return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum(-1)

            np.testing.assert_allclose(dot(7, 3), dot(107, 103), rtol=1e-4, atol=1e-4)
            c, s = rope_tables(np.array([5]), d, base)
            np.testing.assert_allclose(np.linalg.norm(apply_rope(q, c, s), axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)

    def test_rope_neox_layout(self):
        # NeoX / rotate-half: channel i pairs with channel i + d/2, frequency base^(-2i/d)
        d, base, p = 8, 10000.0, 3
        x = np.zeros((1, 1, d), dtype=np.float32)
        x[0, 0, 1] = 1.0
        c, s = rope_tables(np.array([p]), d, base)
        y = apply_rope(x, c, s)[0, 0]
        ang = p * base ** (-2 * 1 / d)
        self.assertAlmostEqual(float(y[1]), np.cos(ang), places=6)
        self.assertAlmostEqual(float(y[1 + d // 2]), np.sin(ang), places=6)
        self.assertAlmostEqual(float(np.abs(np.delete(y, [1, 1 + d // 2])).max()), 0.0)


if __name__ == "__main__":
    unittest.main()
