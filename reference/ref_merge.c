/* ref_merge.c - exact log-sum-exp merge of two softmax attention states. */
#include "ref_ops.h"

#include <math.h>

void okv_ref_merge_state(double *lse_a, double *o_a, double lse_b, const double *o_b, int d)
{
    if (lse_b == -INFINITY) return; /* b is empty */
    if (*lse_a == -INFINITY) {
        *lse_a = lse_b;
        for (int i = 0; i < d; ++i)
            o_a[i] = o_b[i];
        return;
    }
    double m = fmax(*lse_a, lse_b);
    double wa = exp(*lse_a - m), wb = exp(lse_b - m);
    double s = wa + wb;
    for (int i = 0; i < d; ++i)
        o_a[i] = (wa * o_a[i] + wb * o_b[i]) / s;
    *lse_a = m + log(s);
}
