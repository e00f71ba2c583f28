"""Markdown report and per-layer KL plot of a run_quality result."""
from pathlib import Path


def write_report(result, out: Path):
    rows = result["rows"]
    base = {r["ctx"]: r["ppl"] for r in rows if r["method"] == "bf16"}
    lines = [f"# KV-cache quality on {result['model']}", "",
             f"- date {result['date']}, commit {result['commit']}, backend `{result['settings']['backend']}`",
             f"- calibration: {result['calib_text']}; evaluation: {result['eval_text']}",
             f"- INT2: group {result['settings']['group']}, fp16 metadata; windows = sink "
             f"{result['settings']['sink']} + recent {result['settings']['recent']} (flush "
             f"{result['settings']['flush']}) in BF16, else every token INT2",
             f"- command: `{result['command']}` ({result['seconds']} s)", "",
             "| method | windows | ctx | bits/elem | PPL | vs BF16 | attn KL (mean over layers) | attn-out rel err |",
             "|---|---|---|---|---|---|---|---|"]
    base_seg = {r["ctx"]: r.get("ppl_per_segment") for r in rows if r["method"] == "bf16"}
    for r in rows:
        rel = (r["ppl"] / base[r["ctx"]] - 1) * 100 if r["ctx"] in base else float("nan")
        lines.append(f"| {r['method']} | {'yes' if r['windows'] else 'no'} | {r['ctx']} | {r['bpe']:.3f} | "
                     f"{r['ppl']:.3f} | {rel:+.2f} % | {r['attn_kl_mean']:.4f} | {r['attn_out_relerr_mean']:.4f} |")
    segs = [r for r in rows if len(r.get("ppl_per_segment") or []) > 1 and base_seg.get(r["ctx"])]
    if segs:  # the spread between segments says how large a difference one segment can resolve
        lines += ["", "Per evaluation segment (consecutive segments of the evaluation text):", "",
                  "| method | windows | ctx | PPL per segment | vs BF16 per segment |", "|---|---|---|---|---|"]
        for r in segs:
            per = r["ppl_per_segment"]
            rel = " / ".join(f"{(p / b - 1) * 100:+.2f} %" for p, b in zip(per, base_seg[r["ctx"]]))
            lines.append(f"| {r['method']} | {'yes' if r['windows'] else 'no'} | {r['ctx']} | "
                         f"{' / '.join(f'{p:.3f}' for p in per)} | {rel} |")
    png = out.with_suffix(".png")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ctx = max(r["ctx"] for r in rows)
        for key, stats in result["per_layer"].items():
            name, win, L = key.split("|")
            if int(L) != ctx or win != "win" or name == "bf16":
                continue
            ax.semilogy(range(len(stats)), [max(s["attn_kl"], 1e-6) for s in stats], marker="o", label=name)
        ax.set_xlabel("layer")
        ax.set_ylabel("attention-probability KL (sink 64 + recent 256 in BF16)")
        ax.set_title(f"Gemma 3 270M, per-layer attention KL at ctx {ctx}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        lines += ["", f"![per-layer attention KL]({png.name})"]
    except ImportError:
        lines += ["", "(matplotlib not installed: no plot)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
