/* test_conformance.c - the conformance table under Check: one Check test per
 * (op, backend) over the quick table.
 *
 *   test_conformance --backend NAME --op OP [--full]
 *
 * Exit status: 0 all cases passed; 1 a failure (or nothing ran); 77 skipped (the
 * backend is unavailable here, or answered every case UNSUPPORTED) - ctest's
 * SKIP_RETURN_CODE. The availability probe runs in a forked child: an OpenCL context
 * must never be created in a parent that forks Check tests afterwards. */
#define _POSIX_C_SOURCE 200809L
#include "okv_conformance.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SKIP_CODE 77

static const char *g_backend;
static const char *g_op;
static int g_quick = 1;
static FILE *g_totals; /* shared with the forked test: its totals come back here */

START_TEST(test_op_backend)
{
    okv_conformance_totals_t t;
    char reason[512] = "";
    int rc = okv_conformance_run(g_backend, g_op, NULL, g_quick, stdout, &t, reason, sizeof reason);
    ck_assert_msg(rc == 0, "backend %s: %s", g_backend, reason);
    fprintf(g_totals, "%d %d %d\n", t.passed, t.failed, t.unsupported);
    fflush(g_totals);
    printf("%s on %s: %d passed, %d failed, %d unsupported (INT2 codes compared %lld, ties %lld)\n", g_op, g_backend,
           t.passed, t.failed, t.unsupported, t.codes_compared, t.code_ties);
    fflush(stdout);
    ck_assert_msg(t.failed == 0, "%s on %s: %d of %d cases failed (lines starting FAIL above)", g_op, g_backend,
                  t.failed, t.passed + t.failed + t.unsupported);
    ck_assert_msg(t.passed + t.unsupported > 0, "%s on %s: no case ran", g_op, g_backend);
}
END_TEST

/* Availability, decided in a child process. Returns 1/0; reason filled when 0. */
static int probe_in_child(const char *backend, char *reason, size_t cap)
{
    int fd[2];
    if (pipe(fd) != 0) {
        snprintf(reason, cap, "pipe failed");
        return 0;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(reason, cap, "fork failed");
        return 0;
    }
    if (pid == 0) {
        char msg[600];
        close(fd[0]);
        int ok = okv_conformance_backend_available(backend, msg + 1, sizeof msg - 1);
        msg[0] = ok ? '1' : '0';
        size_t n = strlen(msg) + 1;
        ssize_t w = write(fd[1], msg, n);
        _exit(w == (ssize_t)n ? 0 : 1);
    }
    close(fd[1]);
    char buf[600];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof buf - 1 && (k = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)k;
    buf[got] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (got == 0) {
        snprintf(reason, cap, "the availability probe crashed (wait status %d)", status);
        return 0;
    }
    snprintf(reason, cap, "%s", buf + 1);
    return buf[0] == '1';
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            g_backend = argv[++i];
        else if (strcmp(argv[i], "--op") == 0 && i + 1 < argc)
            g_op = argv[++i];
        else if (strcmp(argv[i], "--full") == 0)
            g_quick = 0;
        else {
            fprintf(stderr, "usage: %s --backend NAME --op OP [--full]\n", argv[0]);
            return 2;
        }
    }
    if (!g_backend || !g_op) {
        fprintf(stderr, "usage: %s --backend NAME --op OP [--full]\n", argv[0]);
        return 2;
    }
    if (okv_conformance_case_count(g_op, g_quick) == 0) {
        fprintf(stderr, "FAIL: op '%s' has no cases in the %s table\n", g_op, g_quick ? "quick" : "full");
        return 1;
    }
    char reason[600];
    if (!probe_in_child(g_backend, reason, sizeof reason)) {
        const char *why = strncmp(reason, "unavailable: ", 13) == 0 ? reason + 13 : reason;
        printf("SKIP: %s unavailable: %s\n", g_backend, why);
        return SKIP_CODE;
    }
    g_totals = tmpfile();
    if (!g_totals) {
        fprintf(stderr, "FAIL: tmpfile failed\n");
        return 1;
    }
    char name[128];
    snprintf(name, sizeof name, "%s.%s", g_op, g_backend);
    Suite *s = suite_create("conformance");
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 1500); /* the whole op on a slow device (PoCL JIT included) */
    tcase_add_test(tc, test_op_backend);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int ran = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (ran == 0) {
        printf("FAIL: no Check test ran (CK_RUN_SUITE/CK_RUN_CASE filter?)\n");
        return 1;
    }
    if (failed) return 1;
    int p = 0, f = 0, u = 0;
    rewind(g_totals);
    if (fscanf(g_totals, "%d %d %d", &p, &f, &u) != 3) {
        printf("FAIL: the test reported no totals\n");
        return 1;
    }
    if (p == 0 && u > 0) {
        printf("SKIP: %s answered all %d %s cases UNSUPPORTED\n", g_backend, u, g_op);
        return SKIP_CODE;
    }
    return (p > 0 && f == 0) ? 0 : 1;
}
