"""Negative controls: deliberately wrong variants of the numpy model vs the HF logits,
to show the comparison would catch each mistake (run after hf_compare.py).

    PYTHONPATH=python python3 python/oscarkv_model/hfcheck/sensitivity.py .hfcheck
"""

import copy
import sys
from pathlib import Path

import numpy as np

from oscarkv_model import Gemma3Model, causal_attention


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(d: str) -> None:
    d = Path(d)
    base = Gemma3Model.load(d / "dev" / "small.gguf")
    ids = np.load(d / "dev" / "ids.npz")["kjv"]
    hf = np.load(d / "hf_kjv_logits.npy")

    def run(name, model, **fw):
        lg = model.logits(model.forward(ids, **fw))
        print(f"{name:40s} rel L2 {rel(lg, hf):.3e}  (positions 0-511: {rel(lg[:512], hf[:512]):.3e},"
              f" 512+: {rel(lg[512:], hf[512:]):.3e})")

    run("as implemented", base)
    # through the attention hook: same RoPE, but the local layers see all earlier tokens
    run("no sliding window (via attn_fn hook)", base,
        attn_fn=lambda i, q, k, v, scale, window: causal_attention(i, q, k, v, scale, None))
    m = copy.copy(base); m.cfg = copy.copy(base.cfg); m.cfg.rope_local_base = 1e6
    run("RoPE base 1e6 on local layers too", m)
    m = copy.copy(base); m.cfg = copy.copy(base.cfg); m.cfg.query_pre_attn_scalar = 640 / 4
    run("attention scale (hidden/heads)^-0.5", m)
    m = copy.deepcopy(base)
    for L in m.w.layers:
        L.q_norm = L.q_norm + 1; L.k_norm = L.k_norm + 1
    run("q/k norm weights offset by +1 again", m)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".hfcheck")
