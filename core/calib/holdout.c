/* holdout.c - the held-back rows used to fit clip ratios: a uniform reservoir sample
 * (Algorithm R, seeded per layer) of the tokens added to a layer. */
#include "calibrator_impl.h"

#include <string.h>

void okv_holdout_add(calib_layer_t *L, int32_t capacity, int n, int hq, int hkv, int d, const float *q, const float *k,
                     const float *v)
{
    if (capacity <= 0) return;
    size_t qrow = (size_t)hq * d, kvrow = (size_t)hkv * d;
    for (int t = 0; t < n; ++t) {
        int64_t slot;
        if (L->seen < capacity)
            slot = L->seen;
        else {
            uint64_t j = okv_rng_below(&L->rng, (uint64_t)L->seen + 1u);
            slot = j < (uint64_t)capacity ? (int64_t)j : -1;
        }
        L->seen++;
        if (slot < 0) continue;
        memcpy(L->hq + (size_t)slot * qrow, q + (size_t)t * qrow, qrow * sizeof(float));
        memcpy(L->hk + (size_t)slot * kvrow, k + (size_t)t * kvrow, kvrow * sizeof(float));
        memcpy(L->hv + (size_t)slot * kvrow, v + (size_t)t * kvrow, kvrow * sizeof(float));
        L->hpos[slot] = t;
        if (slot >= L->held) L->held = (int32_t)slot + 1;
    }
}
