"""Python bindings of oscarkv over its C API (numpy arrays in and out).

    import oscarkv as okv
    rs = okv.calibrate([(q, k, v) for each layer], method="oscar")   # host, float64 inside
    ctx = okv.Context("ref")                                          # or "cuda", "opencl", None=auto
    k_hat, v_hat = okv.quantize_kv(ctx, k, v, rs.layer(0))            # INT2 round trip, rotated basis

Set OKV_LIBRARY to use a liboscarkv.so other than build/lib/liboscarkv.so.
"""
import ctypes as C

import numpy as np

from . import _lib as L
from ._lib import lib

__all__ = ["OkvError", "Context", "RotationSet", "calibrate", "quantize_kv", "decode", "cache_desc",
           "bits_per_element"]


class OkvError(RuntimeError):
    def __init__(self, status, where, detail=""):
        self.status = status
        self.name = lib.okv_status_string(status).decode()
        super().__init__(f"{where}: {self.name}" + (f" ({detail})" if detail else ""))


def _check(status, where, detail_fn=None):
    if status != 0:
        raise OkvError(status, where, detail_fn().decode() if detail_fn else "")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


OKV_CONTEXT_TRUST_INPUTS = 1  # include/oscarkv/oscarkv.h


class Context:
    """One backend + device. Buffers it creates are freed with it."""

    def __init__(self, backend=None, device=0, trust_inputs=False):
        """trust_inputs: skip data-dependent checks and their host sync (OKV_CONTEXT_TRUST_INPUTS)."""
        desc = L.ContextDesc()
        lib.okv_context_desc_init(C.byref(desc))
        desc.backend = backend.encode() if backend else None
        desc.device = device
        desc.flags = OKV_CONTEXT_TRUST_INPUTS if trust_inputs else 0
        self._h = C.c_void_p()
        _check(lib.okv_context_create(C.byref(desc), C.byref(self._h)), f"context({backend or 'auto'})")
        self._bufs = []

    @property
    def backend(self):
        return lib.okv_context_backend_name(self._h).decode()

    def _err(self):
        return lib.okv_context_last_error(self._h)

    def check(self, status, where):
        _check(status, where, self._err)

    def buffer(self, nbytes):
        b = C.c_void_p()
        self.check(lib.okv_buffer_create(self._h, max(int(nbytes), 4), C.byref(b)), "buffer_create")
        self._bufs.append(b)
        return L.Ref(b, 0)

    def upload(self, array):
        a = np.ascontiguousarray(array)
        ref = self.buffer(a.nbytes)
        if a.nbytes:
            self.check(lib.okv_buffer_write(self._h, ref.buffer, 0, a.ctypes.data, a.nbytes), "buffer_write")
        return ref

    def download(self, ref, shape, dtype=np.float32):
        out = np.empty(shape, dtype=dtype)
        if out.nbytes:
            self.check(lib.okv_buffer_read(self._h, ref.buffer, ref.offset, out.ctypes.data, out.nbytes),
                       "buffer_read")
        return out

    def synchronize(self):
        self.check(lib.okv_context_synchronize(self._h), "synchronize")

    def free_buffers(self):
        for b in self._bufs:
            lib.okv_buffer_destroy(b)
        self._bufs = []

    def close(self):
        if self._h:
            self.free_buffers()
            lib.okv_context_destroy(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def cache_desc(n_q_heads, n_kv_heads, head_dim, group_size=0, meta="f16", quantizer="uniform", clip="sort",
               sink=None, recent=None, flush=None, page_size=None):
    """Cache geometry; sink / recent / flush / page_size left None keep okv_cache_desc_init's defaults."""
    d = L.CacheDesc()
    lib.okv_cache_desc_init(C.byref(d))
    d.n_q_heads, d.n_kv_heads, d.head_dim, d.group_size = n_q_heads, n_kv_heads, head_dim, group_size
    d.meta_dtype, d.quantizer, d.clip_mode = L.DTYPE[meta], L.QUANT[quantizer], L.CLIP[clip]
    for field, value in (("sink_tokens", sink), ("recent_tokens", recent), ("flush_interval", flush),
                         ("page_size", page_size)):
        if value is not None:
            setattr(d, field, value)
    _check(lib.okv_cache_desc_validate(C.byref(d)), "cache_desc")
    return d


def bits_per_element(desc, seq_len):
    out = C.c_double()
    _check(lib.okv_cache_bits_per_element(C.byref(desc), int(seq_len), C.byref(out)), "bits_per_element")
    return out.value


class RotationSet:
    """Per-layer R_K, R_V (used as x @ R), eigenvalues and clip ratios."""

    def __init__(self, handle):
        self._h = handle

    @classmethod
    def load(cls, path):
        h = C.c_void_p()
        _check(lib.okv_rotation_set_load(str(path).encode(), C.byref(h)), f"load {path}",
               lib.okv_rotation_last_error)
        return cls(h)

    def save(self, path):
        _check(lib.okv_rotation_set_save(self._h, str(path).encode()), f"save {path}", lib.okv_rotation_last_error)

    def _info(self):
        n, d, r = L.i32(), L.i32(), L.i32()
        _check(lib.okv_rotation_set_info(self._h, C.byref(n), C.byref(d), C.byref(r)), "rotation_set_info")
        return n.value, d.value, r.value

    @property
    def n_layers(self):
        return self._info()[0]

    @property
    def head_dim(self):
        return self._info()[1]

    def meta(self, key):
        v = C.c_char_p()
        st = lib.okv_rotation_set_get_meta(self._h, key.encode(), C.byref(v))
        return v.value.decode() if st == 0 and v.value is not None else None

    def layer(self, i):
        lr = L.LayerRotation()
        lr.size = C.sizeof(lr)
        _check(lib.okv_rotation_set_get_layer(self._h, i, C.byref(lr)), f"layer {i}")
        d, n = lr.head_dim, lr.n_rot

        def arr(p, shape):
            return None if not p else np.ctypeslib.as_array(p, shape=shape).copy()

        return {"k_rotation": arr(lr.k_rotation, (n, d, d)), "v_rotation": arr(lr.v_rotation, (n, d, d)),
                "k_eigenvalues": arr(lr.k_eigenvalues, (n, d)), "v_eigenvalues": arr(lr.v_eigenvalues, (n, d)),
                "k_mean": arr(lr.k_mean, (n, d)), "k_clip": lr.k_clip_ratio, "v_clip": lr.v_clip_ratio,
                # the queries' matrix (k_rotation^-T) when the keys are scaled, else None: use k_rotation
                "q_rotation": arr(lr.q_rotation, (n, d, d))}

    def __del__(self):
        if getattr(self, "_h", None):
            lib.okv_rotation_set_destroy(self._h)
            self._h = None


def calibrate(layers, method="oscar", value_target="reference", granularity="layer", fit_clips=False,
              k_clip=0.96, v_clip=0.92, use_permutation=True, holdout_tokens=256, seed=0, center_keys=True,
              scale_keys=True, scale_eps=0.01):
    """layers[i] = list of (q [N,Hq,d], k [N,Hkv,d], v [N,Hkv,d]) causal sequences (or one tuple).
    scale_keys: query-energy key scaling (keys x R_K, queries x q_rotation = R_K^-T; see oscarkv.h)."""
    seqs = [ls if isinstance(ls, list) else [ls] for ls in layers]
    q0 = seqs[0][0][0]
    desc = L.CalibDesc()
    lib.okv_calib_desc_init(C.byref(desc))
    desc.n_layers, desc.n_q_heads = len(seqs), q0.shape[1]
    desc.n_kv_heads, desc.head_dim = seqs[0][0][1].shape[1], q0.shape[2]
    desc.value_target, desc.holdout_tokens, desc.seed = L.VALUE_TARGET[value_target], holdout_tokens, seed
    cal = C.c_void_p()
    _check(lib.okv_calibrator_create(C.byref(desc), C.byref(cal)), "calibrator_create")
    try:
        for i, layer in enumerate(seqs):
            for q, k, v in layer:
                q, k, v = _f32(q), _f32(k), _f32(v)
                _check(lib.okv_calibrator_add(cal, i, q.shape[0], L.DTYPE["f32"], q.ctypes.data, k.ctypes.data,
                                              v.ctypes.data), f"calibrator_add(layer {i})",
                       lambda: lib.okv_calibrator_last_error(cal))
        opt = L.CalibOptions()
        lib.okv_calib_options_init(C.byref(opt))
        opt.method, opt.granularity = L.ROT[method], L.GRANULARITY[granularity]
        opt.use_permutation, opt.fit_clips = int(use_permutation), int(fit_clips)
        opt.k_clip_ratio, opt.v_clip_ratio = k_clip, v_clip
        opt.center_keys = int(center_keys)
        opt.scale_keys, opt.scale_eps = int(scale_keys), scale_eps
        rs = C.c_void_p()
        _check(lib.okv_calibrator_finalize(cal, C.byref(opt), C.byref(rs)), "calibrator_finalize",
               lambda: lib.okv_calibrator_last_error(cal))
        return RotationSet(rs)
    finally:
        lib.okv_calibrator_destroy(cal)


def _single_sequence_view(ctx, desc, n_tokens):
    """Pools and page tables for one sequence that will receive n_tokens by one append."""
    sizes = L.CacheSizes()
    sizes.size = C.sizeof(sizes)
    _check(lib.okv_cache_get_sizes(C.byref(desc), C.byref(sizes)), "cache_get_sizes")
    after, pages = L.i32(), L.i32()
    _check(lib.okv_cache_int2_len_after(C.byref(desc), 0, 0, n_tokens, C.byref(after)), "int2_len_after")
    _check(lib.okv_cache_int2_pages_needed(C.byref(desc), after.value, C.byref(pages)), "pages_needed")
    n2, nb = pages.value, sizes.bf16_pages_per_seq
    v = L.CacheView()
    v.desc = C.pointer(desc)
    v.batch = 1
    v.int2_pool_pages, v.bf16_pool_pages = n2, nb
    if n2:
        v.int2_pool = ctx.buffer(n2 * sizes.int2_page_bytes)
    v.bf16_pool = ctx.buffer(nb * sizes.bf16_page_bytes)
    i32a = lambda *xs: np.array(xs, dtype=np.int32)
    v.int2_indptr, v.int2_indices = ctx.upload(i32a(0, n2)), ctx.upload(np.arange(max(n2, 1), dtype=np.int32))
    v.bf16_indptr, v.bf16_indices = ctx.upload(i32a(0, nb)), ctx.upload(np.arange(nb, dtype=np.int32))
    v.seq_lens, v.int2_lens = ctx.upload(i32a(0)), ctx.upload(i32a(0))
    return v


def _append_all(ctx, k, v, rotation, n_q_heads, group_size=0, meta="f16", quantizer="uniform", clip="sort",
                windows=False):
    """One sequence holding k, v ([N, Hkv, d], unrotated), appended in one call.
    windows=False puts every token in the INT2 tier; True applies the default sink/recent rules."""
    n, hkv, d = k.shape
    rules = {} if windows else {"sink": 0, "recent": 0, "flush": 1}  # windows: the library's defaults
    desc = cache_desc(n_q_heads, hkv, d, group_size, meta, quantizer, clip, **rules)
    view = _single_sequence_view(ctx, desc, n)
    p = L.AppendParams()
    lib.okv_append_params_init(C.byref(p))
    p.cache, p.kv_dtype, p.n_rows = view, L.DTYPE["f32"], n
    p.k, p.v = ctx.upload(k), ctx.upload(v)
    p.append_indptr = ctx.upload(np.array([0, n], dtype=np.int32))
    kr, vr = _f32(rotation["k_rotation"]), _f32(rotation["v_rotation"])
    p.per_head_rotation = int(kr.shape[0] > 1)
    p.k_rotation, p.v_rotation = ctx.upload(kr), ctx.upload(vr)
    p.k_clip_ratio, p.v_clip_ratio = rotation["k_clip"], rotation["v_clip"]
    if rotation.get("k_mean") is not None:  # key centering (softmax-invariant)
        p.k_bias = ctx.upload(_f32(rotation["k_mean"]))
    ctx.check(lib.okv_append(ctx._h, C.byref(p)), "append")
    return desc, view, p


def quantize_kv(ctx, k, v, rotation, group_size=0, meta="f16", quantizer="uniform", clip="sort", windows=False,
                n_q_heads=None):
    """Store k, v ([N, Hkv, d], unrotated) through the library's append and read the logical cache back
    (rotated basis, float32). rotation: RotationSet.layer(i) dict; with a "k_mean" the keys are centered,
    so the returned keys are (k - k_mean) R quantized (attention probabilities are unchanged by it)."""
    k, v = _f32(k), _f32(v)
    n = k.shape[0]
    try:
        desc, view, _ = _append_all(ctx, k, v, rotation, n_q_heads or k.shape[1], group_size, meta, quantizer, clip,
                                    windows)
        dq = L.DequantizeParams()
        lib.okv_dequantize_params_init(C.byref(dq))
        dq.cache, dq.out_rows, dq.out_dtype = view, n, L.DTYPE["f32"]
        dq.out_indptr = ctx.upload(np.array([0, n], dtype=np.int32))
        dq.k_out, dq.v_out = ctx.buffer(k.nbytes), ctx.buffer(v.nbytes)
        ctx.check(lib.okv_dequantize(ctx._h, C.byref(dq)), "dequantize")
        return ctx.download(dq.k_out, k.shape), ctx.download(dq.v_out, v.shape)
    finally:
        ctx.free_buffers()


def decode(ctx, q_rot, k, v, rotation, n_q_heads, windows=True, unrotate=True, num_splits=0):
    """One decode step over a cache holding k, v ([N, Hkv, d], unrotated): q_rot [Hq, d] (rotated by the layer's
    q_rotation when it has one, else by R_K).
    Returns the attention output [Hq, d] (un-rotated by R_V^T when unrotate)."""
    k, v, q_rot = _f32(k), _f32(v), _f32(q_rot)
    try:
        desc, view, p = _append_all(ctx, k, v, rotation, n_q_heads, windows=windows)
        dp = L.DecodeParams()
        lib.okv_decode_params_init(C.byref(dp))
        dp.cache, dp.q, dp.q_dtype, dp.out_dtype = view, ctx.upload(q_rot), L.DTYPE["f32"], L.DTYPE["f32"]
        dp.out, dp.max_seq_len, dp.num_splits = ctx.buffer(q_rot.nbytes), k.shape[0], num_splits
        dp.v_rotation, dp.per_head_rotation, dp.unrotate_output = p.v_rotation, p.per_head_rotation, int(unrotate)
        ws = C.c_size_t()
        ctx.check(lib.okv_decode_workspace_size(ctx._h, C.byref(dp), C.byref(ws)), "decode_workspace_size")
        if ws.value:
            dp.workspace, dp.workspace_bytes = ctx.buffer(ws.value), ws.value
        ctx.check(lib.okv_decode_attention(ctx._h, C.byref(dp)), "decode_attention")
        return ctx.download(dp.out, q_rot.shape)
    finally:
        ctx.free_buffers()
