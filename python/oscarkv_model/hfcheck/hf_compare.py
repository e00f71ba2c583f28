"""Hugging Face reference run (on the device machine; needs torch, transformers, gguf).

Reads DEV/small.gguf (made by make_small_gguf.py) with the gguf package, maps it onto
transformers' own Gemma3ForCausalLM (HF names; Gemma norms stored by llama.cpp as
1 + w, so w = gguf - 1, as HF's own GGUF loader does for gemma2/gemma3), runs
DEV/ids.npz in float32 (eager attention, TF32 off) on the GPU and on the CPU, and
writes HF logits and sampled hidden states to OUT for comparison with the numpy model.

    python3 python/oscarkv_model/hfcheck/hf_compare.py .hfcheck/dev $OUT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def build_state_dict(path: Path):
    import gguf
    import torch

    r = gguf.GGUFReader(str(path))
    sd = {}
    n_layers = int(r.fields["gemma3.block_count"].contents())
    names = {
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
        "attn_norm.weight": "input_layernorm.weight",
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
    }
    for t in r.tensors:
        a = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name.endswith("norm.weight"):
            a = a - 1.0  # llama.cpp stores Gemma's (1 + w); HF adds the 1 itself
        if t.name == "token_embd.weight":
            k = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            k = "model.norm.weight"
        else:
            _, i, rest = t.name.split(".", 2)
            k = f"model.layers.{i}.{names[rest]}"
        sd[k] = torch.from_numpy(a)
    return sd, n_layers


def main(dev: str, out: str) -> None:
    import torch
    import transformers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev, out = Path(dev), Path(out)
    t0 = time.time()
    sd, n_layers = build_state_dict(dev / "small.gguf")
    vocab = sd["model.embed_tokens.weight"].shape[0]
    print(f"torch {torch.__version__} transformers {transformers.__version__}; dequantized in {time.time()-t0:.1f}s")
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)]
    cfg = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=640, intermediate_size=2048, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768, rms_norm_eps=1e-6, query_pre_attn_scalar=256, sliding_window=512,
        layer_types=layer_types, tie_word_embeddings=True,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    )
    cfg._attn_implementation = "eager"
    print("config: rope", cfg.rope_parameters, "window", cfg.sliding_window, "layers", cfg.layer_types)
    model = Gemma3ForCausalLM(cfg).float().eval()
    res = model.load_state_dict(sd, strict=False)
    print("missing:", res.missing_keys, "unexpected:", res.unexpected_keys)
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)

    ids = np.load(dev / "ids.npz")
    pos = np.linspace(0, 1023, 256).astype(np.int64)
    results = {}
    for device in ("cuda", "cpu"):
        model.to(device)
        for name in ids.files:
            x = torch.from_numpy(ids[name]).long()[None].to(device)
            t1 = time.time()
            with torch.no_grad():
                o = model(input_ids=x, output_hidden_states=True, use_cache=False)
            lg = o.logits[0].float().cpu().numpy()
            hs = np.stack([h[0].float().cpu().numpy()[pos] for h in o.hidden_states])
            print(f"{device} {name}: {x.shape[1]} tokens in {time.time()-t1:.2f}s, {len(o.hidden_states)} hidden states")
            results[(device, name)] = (lg, hs)
    for name in ids.files:
        a, b = results[("cuda", name)][0], results[("cpu", name)][0]
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        print(f"HF gpu vs HF cpu {name}: logits max|diff| {np.abs(a-b).max():.3e} rel L2 {rel:.3e}")
        np.save(out / f"hf_{name}_logits.npy", results[("cuda", name)][0])
        np.save(out / f"hf_{name}_hidden.npy", results[("cuda", name)][1])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
