"""The committed real-activation sample is plain .npy v1.0 float16 with the documented shapes."""

import json
import unittest

import numpy as np

from _util import ROOT

SAMPLE = ROOT / "data" / "gemma3-270m-sample"


class SampleDataTest(unittest.TestCase):
    def test_files(self):
        for sub in ("calib", "eval"):
            meta = json.loads((SAMPLE / sub / "meta.json").read_text())
            n = meta["n_tokens"]
            tokens = np.load(SAMPLE / sub / "tokens.npy")
            self.assertEqual(tokens.shape, (n,))
            self.assertEqual(int(tokens[0]), 2)
            for i in meta["layers"]:
                for name, h in (("q", 4), ("k", 1), ("v", 1)):
                    p = SAMPLE / sub / f"layer_{i}" / f"{name}.npy"
                    with open(p, "rb") as f:
                        self.assertEqual(np.lib.format.read_magic(f), (1, 0))
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                        self.assertEqual(f.tell(), 128)
                    self.assertEqual((shape, fortran, dtype.str), ((n, h, 256), False, "<f2"))
                    a = np.load(p, allow_pickle=False)
                    self.assertTrue(np.isfinite(a).all())
                    self.assertGreater(float(np.abs(a).max()), 0.1)

    def test_calibration_and_evaluation_differ(self):
        a = np.load(SAMPLE / "calib" / "tokens.npy")
        b = np.load(SAMPLE / "eval" / "tokens.npy")
        self.assertFalse(np.array_equal(a, b))


if __name__ == "__main__":
    unittest.main()
