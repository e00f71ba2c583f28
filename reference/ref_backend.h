/* ref_backend.h - the "ref" backend: the scalar C reference on host memory,
 * built into the library (the core's registry calls okv_ref_backend_ops()). */
#ifndef OKV_REF_BACKEND_H
#define OKV_REF_BACKEND_H

#include "backend_iface.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The function table of the "ref" backend (static storage, never NULL). */
const okv_backend_ops_t *okv_ref_backend_ops(void);

#ifdef __cplusplus
}
#endif
#endif /* OKV_REF_BACKEND_H */
