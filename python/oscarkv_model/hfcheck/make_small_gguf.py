"""Build the inputs of the Hugging Face comparison (run here, on the CPU machine).

The device machine receives at most 64 MiB, and the Q4_K_M GGUF is 253 MB (178 MB
of it the 262144 x 640 embedding).  So the comparison runs on a *derived* GGUF that
both implementations read identically:
  * vocabulary cut to V_SUB token ids (every id of the test texts, the special ids,
    then random ids), embedding rows and tokenizer arrays cut alike, ids remapped;
  * Q5_0 / Q6_K / Q8_0 matrices re-quantized to Q4_0 (Q4_K and F32 kept as stored).
Architecture, norms, RoPE, windows and scales are untouched, which is what the
comparison checks.  Writes OUTDIR/dev/{small.gguf, ids.npz} plus the numpy model's
logits and sampled hidden states for the same ids (OUTDIR/numpy_out.npz).

    PYTHONPATH=python python3 python/oscarkv_model/hfcheck/make_small_gguf.py .hfcheck
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

V_SUB = 2048
SEQ_LEN = 1024
N_SAMPLE_POS = 256


def main(outdir: str) -> None:
    import gguf

    from oscarkv_model import Gemma3Model, default_model_path
    from oscarkv_model.texts import calibration_text, evaluation_text
    from oscarkv_model.tokenizer import Gemma3Tokenizer

    out = Path(outdir)
    dev = out / "dev"  # what travels to the device machine (carry it)
    dev.mkdir(parents=True, exist_ok=True)
    src = default_model_path()
    tok = Gemma3Tokenizer(src)
    seqs = {
        "pydoc": tok.encode(calibration_text(max_chars=12000))[:SEQ_LEN],
        "kjv": tok.encode(evaluation_text(max_chars=12000))[:SEQ_LEN],
    }
    used = sorted({0, 1, 2, 3} | {i for s in seqs.values() for i in s})
    rng = np.random.default_rng(0)
    rest = np.setdiff1d(np.arange(262144), used)
    keep = np.array(used + sorted(rng.choice(rest, V_SUB - len(used), replace=False).tolist()), dtype=np.int64)
    remap = {int(o): n for n, o in enumerate(keep)}
    print(f"{len(used)} distinct ids used, vocabulary cut to {len(keep)}")

    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dev / "small.gguf"), arch="gemma3")
    cut = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = f.types[0]
        val = f.contents()
        sub = None
        if vt == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            if key in cut:
                val = [val[i] for i in keep]
        w.add_key_value(key, val, vt, sub_type=sub)

    Q = gguf.GGMLQuantizationType
    for t in r.tensors:
        if t.name == "token_embd.weight":
            w.add_tensor(t.name, np.ascontiguousarray(np.asarray(t.data)[keep]), raw_dtype=t.tensor_type)
        elif t.tensor_type in (Q.Q5_0, Q.Q6_K, Q.Q8_0):
            f32 = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            w.add_tensor(t.name, gguf.quants.quantize(f32, Q.Q4_0), raw_dtype=Q.Q4_0)
        elif t.tensor_type == Q.F32:
            w.add_tensor(t.name, np.asarray(t.data, dtype=np.float32))
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("small.gguf", (dev / "small.gguf").stat().st_size, "bytes")

    ids = {k: np.array([remap[i] for i in s], dtype=np.int64) for k, s in seqs.items()}
    np.savez(dev / "ids.npz", **ids)

    m = Gemma3Model.load(dev / "small.gguf")
    res = {}
    pos = np.linspace(0, SEQ_LEN - 1, N_SAMPLE_POS).astype(np.int64)
    for k, s in ids.items():
        hid = {}
        h = m.forward(s, hidden_hook=lambda i, x: hid.__setitem__(i, x[pos].copy()))
        res[f"{k}_logits"] = m.logits(h).astype(np.float32)
        res[f"{k}_hidden"] = np.stack([hid[i] for i in range(-1, m.cfg.n_layers)])  # [L+1, P, hidden]
        res[f"{k}_final"] = h[pos]
    res["pos"] = pos
    np.savez(out / "numpy_out.npz", **res)
    print("numpy outputs written:", {k: v.shape for k, v in res.items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".hfcheck")
