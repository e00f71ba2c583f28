#!/usr/bin/env python3
"""Merge run_quality outputs of separate runs (e.g. methods run in parallel processes) into one
result: rows, per-layer statistics and clip ratios are joined; the commands of every part are kept.

    PYTHONPATH=python python3 -m oscarkv_eval.merge_results OUT_BASE PART.json [PART.json ...]
"""
import json
import sys
from pathlib import Path

from oscarkv_eval.report import write_report
from oscarkv_eval.run_quality import METHODS


def main(argv):
    out, parts = Path(argv[0]), [json.loads(Path(p).read_text()) for p in argv[1:]]
    base = dict(parts[0])
    seen = {}
    for p in parts:
        for r in p["rows"]:
            seen[(r["method"], r["windows"], r["ctx"])] = r
        base["per_layer"] = {**base.get("per_layer", {}), **p["per_layer"]}
        base["settings"]["clip_ratios"] = {**base["settings"]["clip_ratios"], **p["settings"]["clip_ratios"]}
    order = {m[0]: i for i, m in enumerate(METHODS)}
    base["rows"] = sorted(seen.values(), key=lambda r: (r["ctx"], order.get(r["method"], 99), not r["windows"]))
    base["command"] = " ; ".join(p["command"] for p in parts) + " ; merged with python/oscarkv_eval/merge_results.py"
    base["seconds"] = sum(p["seconds"] for p in parts)
    out.with_suffix(".json").write_text(json.dumps(base, indent=1))
    write_report(base, out)


if __name__ == "__main__":
    main(sys.argv[1:])
