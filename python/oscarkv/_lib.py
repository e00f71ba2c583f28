"""ctypes declarations of the oscarkv C API (include/oscarkv/oscarkv.h).

Only this file knows the C layouts; keep it in step with the header. Structs whose
first field is `size` get it filled by the C *_init() functions.
"""
import ctypes as C
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find_library():
    env = os.environ.get("OKV_LIBRARY")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(_HERE))
    for cand in (os.path.join(root, "build", "lib", "liboscarkv.so"), "liboscarkv.so"):
        if os.path.sep not in cand or os.path.exists(cand):
            return cand
    return "liboscarkv.so"


lib = C.CDLL(_find_library())

i32, i64, u64, f32, f64 = C.c_int32, C.c_int64, C.c_uint64, C.c_float, C.c_double
size_t, vp = C.c_size_t, C.c_void_p

DTYPE = {"f32": 0, "f16": 1, "bf16": 2, "f64": 3, "i32": 4}
ROT = {"oscar": 0, "none": 1, "hadamard": 2, "u-only": 3, "plain-cov": 4}
VALUE_TARGET = {"reference": 0, "exact": 1}
GRANULARITY = {"layer": 0, "head": 1}
QUANT = {"uniform": 0, "lloyd-max": 1}
CLIP = {"sort": 0, "bisect": 1}


class Ref(C.Structure):
    _fields_ = [("buffer", vp), ("offset", size_t)]


class CacheDesc(C.Structure):
    _fields_ = [("size", size_t), ("n_q_heads", i32), ("n_kv_heads", i32), ("head_dim", i32),
                ("group_size", i32), ("meta_dtype", i32), ("quantizer", i32), ("clip_mode", i32),
                ("sink_tokens", i32), ("recent_tokens", i32), ("flush_interval", i32), ("page_size", i32)]


class CacheSizes(C.Structure):
    _fields_ = [("size", size_t), ("int2_page_bytes", size_t), ("bf16_page_bytes", size_t),
                ("bf16_slots_per_seq", i32), ("bf16_pages_per_seq", i32),
                ("int2_bytes_per_token", f64), ("bf16_bytes_per_token", f64)]


class CacheView(C.Structure):
    _fields_ = [("desc", C.POINTER(CacheDesc)), ("batch", i32),
                ("int2_pool", Ref), ("int2_pool_pages", i32),
                ("bf16_pool", Ref), ("bf16_pool_pages", i32),
                ("int2_indptr", Ref), ("int2_indices", Ref), ("bf16_indptr", Ref), ("bf16_indices", Ref),
                ("seq_lens", Ref), ("int2_lens", Ref)]


class ContextDesc(C.Structure):
    _fields_ = [("size", size_t), ("backend", C.c_char_p), ("device", i32), ("native_stream", vp),
                ("flags", C.c_uint32)]


class RotateParams(C.Structure):
    _fields_ = [("size", size_t), ("x", Ref), ("x_dtype", i32), ("out", Ref), ("out_dtype", i32),
                ("rotation", Ref), ("n_rows", i32), ("n_heads", i32), ("head_dim", i32),
                ("per_head", i32), ("head_group", i32), ("transpose", i32), ("bias", Ref)]


class AppendParams(C.Structure):
    _fields_ = [("size", size_t), ("cache", CacheView), ("k", Ref), ("v", Ref), ("kv_dtype", i32),
                ("append_indptr", Ref), ("n_rows", i32), ("k_rotation", Ref), ("v_rotation", Ref),
                ("per_head_rotation", i32), ("k_clip_ratio", f32), ("v_clip_ratio", f32), ("k_bias", Ref)]


class DequantizeParams(C.Structure):
    _fields_ = [("size", size_t), ("cache", CacheView), ("out_indptr", Ref), ("out_rows", i32),
                ("k_out", Ref), ("v_out", Ref), ("out_dtype", i32)]


class DecodeParams(C.Structure):
    _fields_ = [("size", size_t), ("cache", CacheView), ("q", Ref), ("q_dtype", i32), ("out", Ref),
                ("out_dtype", i32), ("lse", Ref), ("sm_scale", f32), ("max_seq_len", i32),
                ("num_splits", i32), ("v_rotation", Ref), ("per_head_rotation", i32),
                ("unrotate_output", i32), ("workspace", Ref), ("workspace_bytes", size_t)]


class CalibDesc(C.Structure):
    _fields_ = [("size", size_t), ("n_layers", i32), ("n_q_heads", i32), ("n_kv_heads", i32),
                ("head_dim", i32), ("value_target", i32), ("holdout_tokens", i32), ("seed", u64)]


class CalibOptions(C.Structure):
    _fields_ = [("size", size_t), ("method", i32), ("granularity", i32), ("use_permutation", i32),
                ("fit_clips", i32), ("k_clip_ratio", f32), ("v_clip_ratio", f32), ("quant", CacheDesc),
                ("progress", i32), ("center_keys", i32), ("scale_keys", i32), ("scale_eps", f32)]


class LayerRotation(C.Structure):
    _fields_ = [("size", size_t), ("head_dim", i32), ("n_rot", i32),
                ("k_rotation", C.POINTER(f32)), ("v_rotation", C.POINTER(f32)),
                ("k_eigenvalues", C.POINTER(f32)), ("v_eigenvalues", C.POINTER(f32)),
                ("k_clip_ratio", f32), ("v_clip_ratio", f32), ("k_mean", C.POINTER(f32)),
                ("q_rotation", C.POINTER(f32))]


def _sig(name, res, *args):
    fn = getattr(lib, name)
    fn.restype = res
    fn.argtypes = list(args)
    return fn


P = C.POINTER
_sig("okv_status_string", C.c_char_p, i32)
_sig("okv_context_desc_init", None, P(ContextDesc))
_sig("okv_context_create", i32, P(ContextDesc), P(vp))
_sig("okv_context_destroy", None, vp)
_sig("okv_context_last_error", C.c_char_p, vp)
_sig("okv_context_backend_name", C.c_char_p, vp)
_sig("okv_context_synchronize", i32, vp)
_sig("okv_buffer_create", i32, vp, size_t, P(vp))
_sig("okv_buffer_destroy", None, vp)
_sig("okv_buffer_write", i32, vp, vp, size_t, vp, size_t)
_sig("okv_buffer_read", i32, vp, vp, size_t, vp, size_t)
_sig("okv_cache_desc_init", None, P(CacheDesc))
_sig("okv_cache_desc_validate", i32, P(CacheDesc))
_sig("okv_cache_get_sizes", i32, P(CacheDesc), P(CacheSizes))
_sig("okv_cache_int2_len_after", i32, P(CacheDesc), i32, i32, i32, P(i32))
_sig("okv_cache_int2_pages_needed", i32, P(CacheDesc), i32, P(i32))
_sig("okv_cache_bits_per_element", i32, P(CacheDesc), i64, P(f64))
_sig("okv_rotate_params_init", None, P(RotateParams))
_sig("okv_rotate", i32, vp, P(RotateParams))
_sig("okv_append_params_init", None, P(AppendParams))
_sig("okv_append", i32, vp, P(AppendParams))
_sig("okv_dequantize_params_init", None, P(DequantizeParams))
_sig("okv_dequantize", i32, vp, P(DequantizeParams))
_sig("okv_decode_params_init", None, P(DecodeParams))
_sig("okv_decode_workspace_size", i32, vp, P(DecodeParams), P(size_t))
_sig("okv_decode_attention", i32, vp, P(DecodeParams))
_sig("okv_calib_desc_init", None, P(CalibDesc))
_sig("okv_calib_options_init", None, P(CalibOptions))
_sig("okv_calibrator_create", i32, P(CalibDesc), P(vp))
_sig("okv_calibrator_destroy", None, vp)
_sig("okv_calibrator_last_error", C.c_char_p, vp)
_sig("okv_calibrator_add", i32, vp, i32, i32, i32, vp, vp, vp)
_sig("okv_calibrator_finalize", i32, vp, P(CalibOptions), P(vp))
_sig("okv_rotation_set_destroy", None, vp)
_sig("okv_rotation_set_info", i32, vp, P(i32), P(i32), P(i32))
_sig("okv_rotation_set_get_layer", i32, vp, i32, P(LayerRotation))
_sig("okv_rotation_set_get_meta", i32, vp, C.c_char_p, P(C.c_char_p))
_sig("okv_rotation_set_save", i32, vp, C.c_char_p)
_sig("okv_rotation_set_load", i32, C.c_char_p, P(vp))
_sig("okv_rotation_last_error", C.c_char_p)
