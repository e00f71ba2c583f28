"""Compare the numpy model's outputs (make_small_gguf.py) with HF's (hf_compare.py).

    python3 python/oscarkv_model/hfcheck/compare_local.py .hfcheck
"""

import sys
from pathlib import Path

import numpy as np


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(d: str) -> None:
    d = Path(d)
    npo = np.load(d / "numpy_out.npz")
    worst = 0.0
    for name in ("pydoc", "kjv"):
        ours, hf = npo[f"{name}_logits"], np.load(d / f"hf_{name}_logits.npy")
        r = rel(ours, hf)
        worst = max(worst, r)
        agree = float(np.mean(ours.argmax(-1) == hf.argmax(-1)))
        print(f"{name}: logits {ours.shape} max|diff| {np.abs(ours-hf).max():.3e} "
              f"(max|logit| {np.abs(hf).max():.1f}) rel L2 {r:.3e} argmax agreement {agree:.4f}")
        for lo, hi in ((0, 512), (512, 1024)):
            print(f"    positions {lo}-{hi-1}: rel L2 {rel(ours[lo:hi], hf[lo:hi]):.3e}")
        hh, nh = np.load(d / f"hf_{name}_hidden.npy"), npo[f"{name}_hidden"]
        # HF hidden_states: [embeddings, out of layer 0..L-2, final-normed out of layer L-1]
        errs = [rel(nh[i], hh[i]) for i in range(hh.shape[0] - 1)]
        errs.append(rel(npo[f"{name}_final"], hh[-1]))
        print("    hidden rel L2 (emb, layers 0..16, final norm):", " ".join(f"{e:.1e}" for e in errs))
    print(f"worst logits rel L2 {worst:.3e} -> {'PASS' if worst < 1e-2 else 'FAIL'} (threshold 1e-2)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".hfcheck")
