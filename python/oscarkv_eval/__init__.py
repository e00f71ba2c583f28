"""Quality evaluation of KV-cache storage methods on a real model (Gemma 3 270M).

cache_rules   which tier (BF16 sink/recent or INT2 history) each key is in, per query
quantizers    per-method INT2 round trips (oscarkv library, KIVI-style baseline)
mixed_attention  the attention hook that reads each key from its tier, plus diagnostics
run_quality   the command that produces bench/results/quality-gemma3-270m.{json,md,png}
"""
