"""Forward-pass structure and hooks on a tiny random Gemma 3 (no model file needed)."""

import unittest

import numpy as np

import _util  # noqa: F401
from oscarkv_model import Gemma3Config, Gemma3Model, causal_attention
from oscarkv_model.weights import Gemma3Weights, LayerWeights


def tiny(seed=0, n_layers=6, window=4):
    rng = np.random.default_rng(seed)
    cfg = Gemma3Config(vocab_size=50, hidden=32, n_layers=n_layers, ffn=48, n_heads=4, n_kv_heads=2,
                       head_dim=16, eps=1e-6, rope_global_base=1e6, rope_local_base=1e4,
                       sliding_window=window, sliding_pattern=3, query_pre_attn_scalar=16.0, context_length=64)

    def m(o, i):
        return (rng.normal(size=(o, i)) / np.sqrt(i)).astype(np.float32)

    def nw(n):
        return (1 + 0.1 * rng.normal(size=n)).astype(np.float32)

    H, d = cfg.hidden, cfg.head_dim
    layers = [LayerWeights(attn_norm=nw(H), wq=m(4 * d, H), wk=m(2 * d, H), wv=m(2 * d, H), q_norm=nw(d),
                           k_norm=nw(d), wo=m(H, 4 * d), post_attn_norm=nw(H), ffn_norm=nw(H),
                           w_gate=m(cfg.ffn, H), w_up=m(cfg.ffn, H), w_down=m(H, cfg.ffn), post_ffn_norm=nw(H))
              for _ in range(n_layers)]
    emb = rng.normal(size=(cfg.vocab_size, H)).astype(np.float32) * 0.1
    return Gemma3Model(Gemma3Weights(config=cfg, embed=emb, final_norm=nw(H), layers=layers))


class TinyModelTest(unittest.TestCase):
    def setUp(self):
        self.m = tiny()
        self.ids = np.random.default_rng(5).integers(0, 50, size=20)

    def test_layer_schedule(self):
        c = self.m.cfg
        self.assertEqual([c.is_global(i) for i in range(6)], [False, False, True, False, False, True])
        self.assertEqual(c.window(0), 4)
        self.assertIsNone(c.window(2))
        self.assertEqual(c.rope_base(2), 1e6)
        self.assertEqual(c.rope_base(1), 1e4)
        self.assertAlmostEqual(c.attn_scale, 0.25)

    def test_capture_shapes_and_norm(self):
        got = {}
        self.m.forward(self.ids, capture=lambda i, q, k, v: got.__setitem__(i, (q.copy(), k.copy(), v.copy())))
        self.assertEqual(sorted(got), list(range(6)))
        q, k, v = got[0]
        self.assertEqual((q.shape, k.shape, v.shape), ((20, 4, 16), (20, 2, 16), (20, 2, 16)))
        # at position 0 RoPE is the identity, so q = rms_norm(.) * q_norm: rms(q / q_norm) == 1
        w = self.m.w.layers[0].q_norm
        np.testing.assert_allclose(np.sqrt(np.mean((q[0] / w) ** 2, axis=-1)), 1.0, rtol=1e-4)

    def test_attn_hook_default_equivalent_and_used(self):
        base = self.m.forward(self.ids)
        calls = []

        def fn(i, q, k, v, scale, window):
            calls.append((i, window, scale))
            return causal_attention(i, q, k, v, scale, window)

        np.testing.assert_array_equal(self.m.forward(self.ids, attn_fn=fn), base)
        self.assertEqual([c[0] for c in calls], list(range(6)))
        self.assertEqual([c[1] for c in calls], [4, 4, None, 4, 4, None])
        # a perturbed attention changes the output
        other = self.m.forward(self.ids, attn_fn=lambda i, q, k, v, s, w: causal_attention(i, q, k, v, s, None))
        self.assertGreater(np.abs(other - base).max(), 1e-3)

    def test_causal(self):
        a = self.m.forward(self.ids)
        ids2 = self.ids.copy()
        ids2[15] = (ids2[15] + 1) % 50
        b = self.m.forward(ids2)
        np.testing.assert_array_equal(a[:15], b[:15])
        self.assertGreater(np.abs(a[15:] - b[15:]).max(), 1e-4)

    def test_nll_matches_logits(self):
        nll = self.m.nll(self.ids, chunk=7)
        lg = self.m.logits(self.m.forward(self.ids)).astype(np.float64)
        lp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        np.testing.assert_allclose(nll, -lp[np.arange(19), self.ids[1:]], rtol=1e-5)


if __name__ == "__main__":
    unittest.main()
