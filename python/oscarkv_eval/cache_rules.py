"""The mixed-precision cache rules of SPEC section 4, seen from one query.

Teacher-forced evaluation appends one token at a time, so after token t is appended
(length L = t + 1) the INT2 tier holds positions [S0, S0 + n(L)) where n follows the
flush rule: once the recent window would reach W + F rows, it is cut back to W.
"""
import numpy as np

import oscarkv as okv

# The library's defaults (okv_cache_desc_init, SPEC section 4): sink S0, recent window W, flush F
_d = okv.cache_desc(1, 1, 64)
SINK, RECENT, FLUSH = _d.sink_tokens, _d.recent_tokens, _d.flush_interval
del _d


def int2_len_after(seq_len, int2_len, n_new, s0, w, f):
    """Same rule as okv_int2_len_after in core/format/okv_format.h."""
    t = seq_len + n_new
    return t - s0 - w if t - s0 - int2_len >= w + f else int2_len


def int2_bounds(n_tokens, s0, w, f):
    """hi[t] such that, for the query at position t, keys j with s0 <= j < hi[t] are INT2."""
    hi = np.empty(n_tokens, dtype=np.int64)
    n = 0
    for t in range(n_tokens):
        n = int2_len_after(t, n, 1, s0, w, f)
        hi[t] = s0 + n
    return hi


def bits_per_element(seq_len, int2_bits, s0, w):
    """Average bits per cached element for a sequence of seq_len tokens (SPEC section 3)."""
    bf = min(seq_len, s0 + w)
    return ((seq_len - bf) * int2_bits + bf * 16.0) / seq_len
