#!/usr/bin/env python3
"""torch SDPA BF16 decode / prefill baseline + merge with our timings -> NAME.{json,md,png}.

Usage: sdpa_bench.py OURS.json[,MORE.json...] OUTDIR COMMIT "COMMAND" [NAME]
NAME defaults to h200-decode; OKV_NO_PLOT=1 skips the plot.
Decode: times torch.nn.functional.scaled_dot_product_attention(q [B,Hq,1,d], k/v
[B,Hkv,ctx,d], enable_gqa=True) in bf16 for every (batch, ctx, hq, hkv, d) that the
input has a decode row for, the same way the C driver times ours: warm-up, then REPS x
20 back-to-back calls between two CUDA events, K/V rotated over several buffer sets so
L2 does not hold them, fresh random data; median per call.
Prefill (rows with "op": "prefill", "q_len" new tokens over a history of "ctx"): q
[B,Hq,q_len,d], k/v [B,Hkv,ctx+q_len,d], enable_gqa=True, query j of the chunk seeing
keys 0 .. ctx+j (causal within the chunk, full history). torch's is_causal aligns the
triangle to the top-left (query j would see keys 0 .. j), so it is not used; two
variants instead, each checked against an fp32 oracle on sampled query rows first:
  sdpa_bf16       attn_mask=causal_lower_right(q_len, ctx+q_len) (torch.nn.attention.bias:
                  the flash kernel's causal flag, which aligns bottom-right, when flash
                  can run; else mem-efficient with a lower-right mask, else materialised)
  sdpa_bf16_mask  an explicit boolean attn_mask [q_len, ctx+q_len], math backend excluded
                  (K/V expanded to Hq heads if no fused kernel takes GQA with a mask)
Same timing as decode, except that calls (then reps) are reduced when 7 x 20 calls would
take longer than OKV_PREFILL_BUDGET_S (default 20) seconds.
"""
import datetime
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

REPS, CALLS = 7, 20
L2 = 60 << 20
PREFILL_BUDGET_S = float(os.environ.get("OKV_PREFILL_BUDGET_S", "20"))
PREFILL_TOL = 2e-2  # rel L2 of bf16 attention output vs the fp32 oracle


def time_calls(call, nbuf, budget_s=None):
    """Warm-up, then reps x calls back-to-back calls between two CUDA events; median us
    per call. With budget_s, calls (then reps) shrink when REPS x CALLS would exceed it."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps, calls = REPS, CALLS
    if budget_s is None:
        for i in range(3):
            call(i % nbuf)
        torch.cuda.synchronize()
    else:
        call(0)
        torch.cuda.synchronize()
        e0.record()
        call(1 % nbuf)
        e1.record()
        e1.synchronize()
        t1 = 1e-3 * e0.elapsed_time(e1)
        if t1 * reps * calls > budget_s:
            calls = max(1, int(budget_s / (reps * t1)))
            if calls == 1:
                reps = max(1, min(REPS, int(budget_s / t1)))
        if t1 < 0.05:
            call(2 % nbuf)
            torch.cuda.synchronize()
    ts = []
    for r in range(reps):
        e0.record()
        for i in range(calls):
            call((r * calls + i) % nbuf)
        e1.record()
        e1.synchronize()
        ts.append(1000.0 * e0.elapsed_time(e1) / calls)
    ts.sort()
    return ts[len(ts) // 2], reps, calls


def sdpa_time(b, ctx, hq, hkv, d):
    dev = torch.device("cuda")
    kv_bytes = b * hkv * ctx * d * 2 * 2
    nbuf = int(min(8, max(2, (4 * L2) // kv_bytes + 1)))
    free = torch.cuda.mem_get_info()[0]
    nbuf = max(1, min(nbuf, int(0.8 * free // max(kv_bytes, 1))))
    g = torch.Generator(device=dev)
    g.manual_seed(1234 + b + ctx)
    ks = [torch.randn(b, hkv, ctx, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]
    vs = [torch.randn(b, hkv, ctx, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]
    qs = [torch.randn(b, hq, 1, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]

    def call(i):
        return F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)

    us, _, _ = time_calls(call, nbuf)
    del ks, vs, qs
    torch.cuda.empty_cache()
    return us, kv_bytes + 2 * b * hq * d * 2, nbuf


def prefill_oracle(q, k, v, rows, hist):
    """fp32 attention for query rows `rows` of the chunk: row j sees keys 0 .. hist + j."""
    b, hq, n, d = q.shape
    hkv, S = k.shape[1], k.shape[2]
    qr = q[:, :, rows, :].float()
    kf = k.float().repeat_interleave(hq // hkv, dim=1)
    vf = v.float().repeat_interleave(hq // hkv, dim=1)
    sc = torch.matmul(qr, kf.transpose(-1, -2)) / math.sqrt(d)
    lim = torch.tensor(rows, device=q.device).view(-1, 1) + hist
    allowed = torch.arange(S, device=q.device).view(1, S) <= lim
    sc = sc.masked_fill(~allowed, float("-inf"))
    out = torch.matmul(torch.softmax(sc, dim=-1), vf)
    del kf, vf, sc
    return out


def kernel_names(fn):
    """Names of the CUDA kernels with the most device time in one call (informational)."""
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        best = []
        for e in prof.key_averages():
            if getattr(e, "device_type", None) != DeviceType.CUDA:
                continue
            t = getattr(e, "self_device_time_total", None)
            if t is None:
                t = getattr(e, "self_cuda_time_total", 0)
            best.append((t, e.key))
        best.sort(reverse=True)
        return "; ".join(k[:90] for _, k in best[:2]) or "none seen"
    except Exception as ex:  # the timing matters more than the name
        return f"unknown ({type(ex).__name__})"


def sdpa_prefill(b, hist, n, hq, hkv, d):
    """Both SDPA variants for a chunk of n new tokens over hist cached ones: list of rows."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # the oracle in real fp32
    S = hist + n
    kv_bytes = b * hkv * S * d * 2 * 2
    set_bytes = kv_bytes + 2 * b * hq * n * d * 2
    nbuf = int(min(8, max(2, (4 * L2) // set_bytes + 1)))
    free = torch.cuda.mem_get_info()[0]
    nbuf = max(1, min(nbuf, int(0.3 * free // set_bytes)))
    g = torch.Generator(device=dev)
    g.manual_seed(4321 + b + hist + n)
    qs = [torch.randn(b, hq, n, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]
    ks = [torch.randn(b, hkv, S, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]
    vs = [torch.randn(b, hkv, S, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(nbuf)]
    # True = attend: query j of the chunk (absolute position hist + j) sees keys 0 .. hist + j
    mask = torch.arange(S, device=dev).view(1, S) <= (torch.arange(n, device=dev).view(n, 1) + hist)
    rows = sorted({0, 1, n // 2 - 1, n - 2, n - 1})
    ref = prefill_oracle(qs[0], ks[0], vs[0], rows, hist)
    flops = 4.0 * b * hq * d * (n * hist + n * (n + 1) / 2)
    by = kv_bytes + 2 * b * hq * n * d * 2
    fused = [x for x in (getattr(SDPBackend, "FLASH_ATTENTION", None), getattr(SDPBackend, "EFFICIENT_ATTENTION", None),
                         getattr(SDPBackend, "CUDNN_ATTENTION", None)) if x is not None]
    variants = []
    try:
        from torch.nn.attention.bias import causal_lower_right
        lr = causal_lower_right(n, S)
        variants.append(("sdpa_bf16", f"attn_mask=causal_lower_right({n}, {S}), enable_gqa=True", None,
                         lambda i: F.scaled_dot_product_attention(qs[i], ks[i], vs[i], attn_mask=lr, enable_gqa=True)))
    except ImportError as ex:
        print(f"prefill sdpa: causal_lower_right not available ({ex}); explicit mask only", flush=True)
    variants.append(("sdpa_bf16_mask", f"explicit boolean attn_mask [{n}, {S}], enable_gqa=True, math excluded", fused,
                     lambda i: F.scaled_dot_product_attention(qs[i], ks[i], vs[i], attn_mask=mask, enable_gqa=True)))
    out_rows = []
    for kv, label, backends, call in variants:
        def run(fn, backends=backends):
            if backends is None:
                return fn()
            with sdpa_kernel(backends):
                return fn()
        try:
            try:
                o = run(lambda: call(0))
                torch.cuda.synchronize()
            except RuntimeError as ex:
                if backends is None:
                    raise
                # no fused kernel takes GQA together with a mask: expand K/V to Hq heads (not timed)
                print(f"prefill sdpa {kv}: {(str(ex).splitlines() or [''])[0][:160]}; retrying with K/V expanded "
                      "to Hq heads", flush=True)
                kx = [x.repeat_interleave(hq // hkv, dim=1) for x in ks]
                vx = [x.repeat_interleave(hq // hkv, dim=1) for x in vs]
                label = f"explicit boolean attn_mask [{n}, {S}], K/V expanded to {hq} heads, math excluded"

                def call(i, kx=kx, vx=vx):
                    return F.scaled_dot_product_attention(qs[i], kx[i], vx[i], attn_mask=mask)
                o = run(lambda: call(0))
                torch.cuda.synchronize()
            got = o[:, :, rows, :].float()
            rel = (torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)).item()
            del o, got
            kname = kernel_names(lambda: run(lambda: call(0)))
            us, reps, calls = time_calls(lambda i: run(lambda: call(i)), nbuf, PREFILL_BUDGET_S)
        except Exception as ex:  # RuntimeError (no kernel, OOM) or an API this torch lacks
            print(f"prefill sdpa {kv}: failed: {type(ex).__name__}: {(str(ex).splitlines() or [''])[0][:200]}",
                  flush=True)
            torch.cuda.empty_cache()
            continue
        ok = rel <= PREFILL_TOL
        print(f"prefill {kv:14s} hist {hist:6d} chunk {n:5d} hq {hq:2d} hkv {hkv:2d} d {d:3d}: {us:11.1f} us  "
              f"{flops / us * 1e-6:7.2f} TFLOP/s  ({reps} x {calls} calls, bufs {nbuf}; rel L2 vs fp32 oracle on rows "
              f"{rows}: {rel:.2e} {'ok' if ok else 'FAIL'}); {label}; kernel: {kname}", flush=True)
        out_rows.append({"op": "prefill", "kv": kv, "batch": b, "ctx": hist, "hq": hq, "hkv": hkv, "d": d,
                         "median_us": round(us, 3), "bytes": by, "tbps": round(by / us * 1e-6, 4), "q_len": n,
                         "flops": flops, "tflops": round(flops / us * 1e-6, 3), "reps": reps, "calls": calls,
                         "check_rel": float(f"{rel:.3e}"), "check_ok": ok, "variant": label, "kernel": kname})
    del qs, ks, vs, mask, ref
    torch.cuda.empty_cache()
    return out_rows


def main():
    paths, outdir, commit, command = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
    name = sys.argv[5] if len(sys.argv) > 5 else "h200-decode"
    ours, rows = None, []
    for path in paths:
        if not os.path.exists(path):
            print(f"{path}: missing, skipped", flush=True)
            continue
        o = json.load(open(path))
        ours = ours or o
        rows += o["rows"]
    if ours is None:
        sys.exit("no input JSON")
    shapes = []
    for r in rows:
        if r["op"] == "decode" and r["kv"].startswith("int2"):
            k = (r["batch"], r["ctx"], r["hq"], r["hkv"], r["d"])
            if k not in shapes:
                shapes.append(k)
    pshapes = []
    for r in rows:
        if r["op"] == "prefill" and not r["kv"].startswith("sdpa"):
            k = (r["batch"], r["ctx"], r["q_len"], r["hq"], r["hkv"], r["d"])
            if k not in pshapes:
                pshapes.append(k)
    sdpa = []
    for (b, ctx, hq, hkv, d) in shapes:
        try:
            us, by, nb = sdpa_time(b, ctx, hq, hkv, d)
        except torch.cuda.OutOfMemoryError:
            print(f"sdpa  B {b} ctx {ctx}: out of memory, skipped", flush=True)
            torch.cuda.empty_cache()
            continue
        print(f"decode sdpa  B {b:3d} ctx {ctx:6d} hq {hq:2d} hkv {hkv:2d} d {d:3d}: {us:9.2f} us  "
              f"{by / us * 1e-6:6.3f} TB/s  (bufs {nb})", flush=True)
        sdpa.append({"op": "decode", "kv": "sdpa_bf16", "batch": b, "ctx": ctx, "hq": hq, "hkv": hkv, "d": d,
                     "median_us": round(us, 3), "bytes": by, "tbps": round(by / us * 1e-6, 4)})
    for (b, ctx, n, hq, hkv, d) in pshapes:
        try:
            sdpa += sdpa_prefill(b, ctx, n, hq, hkv, d)
        except Exception as ex:  # keep our rows and the decode report
            print(f"prefill sdpa: failed: {type(ex).__name__}: {ex}", flush=True)
            torch.cuda.empty_cache()
    allrows = rows + sdpa
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu": ours["gpu"] + f" ({ours['sms']} SMs), torch {torch.__version__}",
        "commit": commit,
        "command": command,
        "copy_tbps": ours["copy_tbps"],
        "rows": allrows,
    }
    json.dump(res, open(os.path.join(outdir, name + ".json"), "w"), indent=1)

    def find(kv, k, op="decode"):
        for r in allrows:
            key = (r["batch"], r["ctx"], r["hq"], r["hkv"], r["d"]) if op == "decode" else \
                (r["batch"], r["ctx"], r.get("q_len"), r["hq"], r["hkv"], r["d"])
            if r["op"] == op and r["kv"] == kv and key == k:
                return r
        return None

    plot = bool(shapes) and os.environ.get("OKV_NO_PLOT", "0") in ("", "0")
    title = "# Decode attention on the H200: INT2 (ours) vs BF16 (ours) vs torch SDPA BF16" if shapes else \
        "# Prefill attention on the H200: INT2 (ours) vs BF16 (ours) vs torch SDPA BF16"
    lines = [
        title,
        "",
        f"Date {res['date']}, GPU {res['gpu']}, commit {commit}.",
        f"Command: `{command}`",
        "",
        f"Device-to-device copy bandwidth measured in the same run: **{res['copy_tbps']:.3f} TB/s** (read + write).",
        "",
    ]
    if shapes:
        validated = any(r["op"] == "decode" and r["kv"] == "int2_validated" for r in allrows)
        lines += [
            "Cache: fp16 metadata, group = head_dim, page 16, S0 64, W 256 (every sequence has seq_len = ctx, "
            "its recent window full); bf16 q and output. Timing: warm-up, 7 x 20 back-to-back calls between two "
            "CUDA events, median per call; caches rotated over >= 2 buffer sets (> 4x L2 in total where memory "
            "allows); random data. Bytes = K+V bytes read (INT2: 72 B per token per KV head at d 128; BF16 tier "
            "and BF16 cache: 512 B) + q + out."
            + (" INT2 us: ops with OKV_CUDA_TRUST_INPUTS=1 (no validation); INT2 validated us: "
               "OKV_CUDA_TRUST_INPUTS=0 (input checks + one host sync per call)." if validated else ""),
            "",
            "| batch | ctx | Hq | Hkv | d | INT2 us | INT2 TB/s | % copy | " + ("INT2 validated us | " if validated else "")
            + "BF16 ours us | SDPA us | SDPA / INT2 | BF16 ours / SDPA |",
            "|---|---|---|---|---|---|---|---|" + ("---|" if validated else "") + "---|---|---|---|",
        ]
        for k in shapes:
            i, iv, b16, s = find("int2", k), find("int2_validated", k), find("bf16", k), find("sdpa_bf16", k)
            cells = [str(x) for x in k]
            if i:
                cells += [f"{i['median_us']:.1f}", f"{i['tbps']:.2f}", f"{100 * i['tbps'] / res['copy_tbps']:.0f}%"]
            else:
                cells += ["-", "-", "-"]
            if validated:
                cells += [f"{iv['median_us']:.1f}" if iv else "-"]
            cells += [f"{b16['median_us']:.1f}" if b16 else "-", f"{s['median_us']:.1f}" if s else "-"]
            cells += [f"{s['median_us'] / i['median_us']:.2f}x" if (s and i) else "-"]
            cells += [f"{b16['median_us'] / s['median_us']:.2f}" if (s and b16) else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        for r in allrows:
            if r["op"] not in ("decode", "prefill"):
                lines.append("")
                lines.append(f"{r['op']} {r['kv']}: n {r['ctx']} tokens x {r['hkv']} KV heads, d {r['d']}: "
                             f"{r['median_us']:.1f} us, {r['tbps']:.3f} TB/s "
                             f"({100 * r['tbps'] / res['copy_tbps']:.0f}% of copy)")
        lines.append("")
    if pshapes:
        lines += [
            "## Prefill attention: one chunk of new tokens over a cached history",
            "",
            "Ours: the prefill op (okv_prefill_attention) of the CUDA backend, batch 1, q / k_new / v_new / out bf16, "
            "causal within the chunk and full over the history, the history dequantised on the fly. INT2: the "
            "history as the flush rule leaves it (S0 64 + INT2 + the last W 256 in the BF16 tier; fp16 metadata, "
            "group = d, page 16); BF16 ours: the same op on the same history held entirely in the BF16 tier. "
            "SDPA: q [1, Hq, chunk, d], k/v [1, Hkv, history + chunk, d] bf16, enable_gqa=True; sdpa_bf16 = "
            "attn_mask=causal_lower_right (bottom-right causal, the flash kernel where it runs), sdpa_bf16_mask = "
            "an explicit boolean mask (torch's is_causal aligns top-left, so it is not used). Every path is checked "
            "on sampled query rows (the first, the last and a few between) against an oracle first: ours against a "
            "double-precision host copy of the reference prefill (f32 output, sm_scale 0.5), SDPA against fp32 "
            "attention. Timing: warm-up, then reps x calls back-to-back calls between two CUDA events, median per "
            "call; calls per repetition reduced for slow paths (time budget per path). Effective TFLOP/s = "
            "4 Hq d x (keys seen, summed over the chunk) / time.",
            "",
            "| history | chunk | Hq | Hkv | d | path | ms | eff. TFLOP/s | reps x calls | check rel L2 | time / SDPA |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for k in pshapes:
            b, ctx, n, hq, hkv, d = k
            cand = [r for r in (find("sdpa_bf16", k, "prefill"), find("sdpa_bf16_mask", k, "prefill"))
                    if r and r.get("check_ok")]
            best = min(cand, key=lambda r: r["median_us"]) if cand else None
            for kv, lab in (("int2", "INT2 (ours)"), ("int2_validated", "INT2 (ours, validated)"),
                            ("bf16", "BF16 tier (ours)"), ("bf16_validated", "BF16 tier (ours, validated)"),
                            ("sdpa_bf16", "SDPA BF16, causal_lower_right"),
                            ("sdpa_bf16_mask", "SDPA BF16, boolean mask")):
                r = find(kv, k, "prefill")
                if not r:
                    continue
                chk = r.get("check_rel")
                chk = "-" if chk is None else f"{chk:.1e}" + ("" if r.get("check_ok", chk <= 1e-3) else " FAIL")
                ratio = f"{r['median_us'] / best['median_us']:.2f}x" if best else "-"
                lines.append(f"| {ctx} | {n} | {hq} | {hkv} | {d} | {lab} | {r['median_us'] / 1000:.2f} | "
                             f"{r['flops'] / r['median_us'] * 1e-6:.1f} | {r.get('reps', '-')} x {r.get('calls', '-')} | "
                             f"{chk} | {ratio} |")
                if kv.startswith("sdpa"):
                    notes.append(f"{kv}: {r['variant']}; kernel: {r['kernel']}")
            if best:
                notes.append(f"time / SDPA is against {best['kv']} ({best['median_us'] / 1000:.2f} ms), the faster "
                             "SDPA variant that passed its check.")
            else:
                notes.append("no SDPA variant passed its check: no ratio.")
        lines += [""] + [f"- {x}" for x in notes] + [""]
    if plot:
        lines += [f"![decode time vs context]({name}.png)", ""]
    open(os.path.join(outdir, name + ".md"), "w").write("\n".join(lines))

    if plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            for ax, bsel in zip(axes, (1, 8)):
                for kv, lab, mk in (("int2", "INT2 (ours)", "o-"), ("bf16", "BF16 (ours)", "s-"),
                                    ("sdpa_bf16", "torch SDPA BF16", "^-")):
                    pts = sorted((r["ctx"], r["median_us"]) for r in allrows
                                 if r["op"] == "decode" and r["kv"] == kv and r["batch"] == bsel and r["hq"] == 32
                                 and r["hkv"] == 8 and r["d"] == 128)
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], mk, label=lab)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("context (tokens)")
                ax.set_ylabel("time per decode call (us)")
                ax.set_title(f"H200 decode, batch {bsel}, Hq 32 / Hkv 8, d 128")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
            fig.tight_layout()
            fig.savefig(os.path.join(outdir, name + ".png"), dpi=110)
        except Exception as e:  # the numbers matter more than the picture
            print("plot failed:", e)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
