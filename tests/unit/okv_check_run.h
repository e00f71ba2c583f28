/* okv_check_run.h - one way for every Check suite to run and report: runs the
 * suite, frees the runner and returns the process exit status (0 only when no
 * test failed; ctest's "Checks: 0" rule catches a suite that ran nothing). */
#ifndef OKV_CHECK_RUN_H
#define OKV_CHECK_RUN_H

#include <check.h>
#include <stdlib.h>

static inline int okv_check_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
