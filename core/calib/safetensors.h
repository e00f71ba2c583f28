/* safetensors.h - rotation files in the safetensors container (SPEC section 2.7).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (padded with spaces to a
 * multiple of 8), then raw little-endian tensor data. Tensors, per layer i:
 *   layer.{i}.k_rotation, layer.{i}.v_rotation    F32 [d, d] (n_rot == 1) or [n_rot, d, d]
 *   layer.{i}.k_eigenvalues, .v_eigenvalues       F32 [d] or [n_rot, d]  (optional)
 *   layer.{i}.k_mean                              F32 [d] or [n_rot, d]  (optional: mean key,
 *                                                 subtracted before rotation; finite)
 *   layer.{i}.q_rotation                          F32 like k_rotation (optional: the queries'
 *                                                 matrix k_rotation^-T of key scaling)
 *   layer.{i}.k_clip, layer.{i}.v_clip            F32 [1]
 * "__metadata__" (string -> string) holds head_dim, n_layers, n_rot, granularity and the
 * provenance (method, tokens, value_target, clip_mode, ...).
 * The loader accepts only this (other tensor names not starting with "layer." are
 * ignored), requires the tensors to tile the data section exactly (no gaps, no overlap),
 * finite values, clip ratios in (0, 1] and max |R^T R - I| <= 1e-3 (for k_rotation with a
 * q_rotation instead: max |R Q^T - I| <= 1e-3). */
#ifndef OKV_SAFETENSORS_H
#define OKV_SAFETENSORS_H

#include "oscarkv/oscarkv.h"

#include <stddef.h>
#include <stdint.h>

/* Largest header accepted (the safetensors reference limit). */
#define OKV_ST_MAX_HEADER 100000000ull

/* Serialise to a malloc'ed buffer (caller frees). */
okv_status_t okv_st_save_memory(const okv_rotation_set_t *rs, unsigned char **buf, size_t *len);

#endif
