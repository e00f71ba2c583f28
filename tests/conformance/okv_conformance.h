/*
 * okv_conformance.h - the oscarkv conformance runner (tests/conformance).
 *
 * One case table (conf_table.c) runs on any backend: inputs are generated on the
 * host, uploaded with okv_buffer_write, the op runs on the backend under test, the
 * results are read back and compared with a host model (float64 recomputation on the
 * same inputs, the INT2 format of core/format/okv_format.h, and, for attention, the K/V
 * that the ref backend's dequantize produces from the same pages).
 *
 * okv_conformance_main implements the CLI
 *     oscarkv conformance [--backend NAME] [--filter SUBSTR] [--list] [--quick]
 * It prints one line per failing case (backend and canonical descriptor), an
 * op x backend matrix, and ends with "N passed, M failed, K skipped". Exit status 0
 * only when M == 0 and N > 0.
 */
#ifndef OKV_CONFORMANCE_H
#define OKV_CONFORMANCE_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is the program (or subcommand) name; options start at argv[1]. */
int okv_conformance_main(int argc, char **argv);

/* Totals of one run. `unsupported` counts cases the backend answered with
 * OKV_ERROR_UNSUPPORTED (reported as skipped, never as passed). */
typedef struct okv_conformance_totals {
    int passed;
    int failed;
    int unsupported;
    long long codes_compared; /* INT2 codes compared against the host model */
    long long code_ties;      /* of those, codes that differed at an allowed rounding tie */
} okv_conformance_totals_t;

/* Is backend `name` usable here? Returns 1 (available) or 0 and fills reason
 * ("not built", the backend's probe reason, or the context-creation error).
 * Creates (and destroys) a context: call it where a context may be created
 * (inside a forked Check test, not in a parent that forks OpenCL users later). */
int okv_conformance_backend_available(const char *name, char *reason, size_t cap);

/* Runs every case of the table (quick or full) whose op is `op` (NULL: all ops) and
 * whose descriptor contains `filter` (NULL: all) on backend `name`. Failures are
 * printed to `log` (one line each, "FAIL <backend> <descriptor>: <why>").
 * Returns 0 when the cases ran (see totals), -1 when the backend is unavailable
 * (reason filled). */
int okv_conformance_run(const char *name, const char *op, const char *filter, int quick, FILE *log,
                        okv_conformance_totals_t *totals, char *reason, size_t cap);

/* Names of the ops of the table, in matrix order; *count receives how many. */
const char *const *okv_conformance_ops(int *count);

/* Number of cases of the table (quick or full) for `op` (NULL: all). */
int okv_conformance_case_count(const char *op, int quick);

#ifdef __cplusplus
}
#endif
#endif /* OKV_CONFORMANCE_H */
