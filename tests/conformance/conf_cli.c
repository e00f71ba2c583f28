/* conf_cli.c - `oscarkv conformance`: run the table on backends, print failures, the
 * op x backend matrix and the totals. */
#define _POSIX_C_SOURCE 200809L
#include "conf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const *okv_conformance_ops(int *count)
{
    if (count) *count = CONF_OP_COUNT;
    return conf_op_names;
}

static int op_index(const char *op)
{
    for (int i = 0; i < CONF_OP_COUNT; ++i)
        if (strcmp(op, conf_op_names[i]) == 0) return i;
    return -1;
}

static int selected(const conf_case_t *c, int op, const char *filter, int quick, char *desc, size_t cap)
{
    if (quick && !c->quick) return 0;
    if (op >= 0 && (int)c->op != op) return 0;
    conf_descriptor(c, desc, cap);
    return !filter || !filter[0] || strstr(desc, filter) != NULL;
}

int okv_conformance_case_count(const char *op, int quick)
{
    int n = 0, total, oi = op ? op_index(op) : -1;
    const conf_case_t *t = conf_table(&total);
    char desc[512];
    if (op && oi < 0) return 0;
    for (int i = 0; i < total; ++i)
        n += selected(&t[i], oi, NULL, quick, desc, sizeof desc);
    return n;
}

static okv_status_t make_ctx(const char *name, okv_context_t **ctx)
{
    okv_context_desc_t d;
    okv_context_desc_init(&d);
    d.backend = name;
    d.device = 0;
    return okv_context_create(&d, ctx);
}

/* Is `name` in the registry and available? Fills reason when not. */
static int probe(const char *name, char *reason, size_t cap)
{
    int32_t n = 0;
    okv_status_t st = okv_backend_count(&n);
    if (st != OKV_SUCCESS) {
        snprintf(reason, cap, "okv_backend_count -> %s", okv_status_string(st));
        return 0;
    }
    for (int32_t i = 0; i < n; ++i) {
        okv_backend_info_t info;
        okv_backend_info_init(&info);
        if (okv_backend_get_info(i, &info) != OKV_SUCCESS) continue;
        if (strcmp(info.name, name) != 0) continue;
        if (!info.available) {
            const char *why = strncmp(info.reason, "unavailable: ", 13) == 0 ? info.reason + 13 : info.reason;
            snprintf(reason, cap, "%s", why[0] ? why : "not available (no reason given)");
            return 0;
        }
        return 1;
    }
    snprintf(reason, cap, "not a backend of this build");
    return 0;
}

int okv_conformance_backend_available(const char *name, char *reason, size_t cap)
{
    if (!probe(name, reason, cap)) return 0;
    okv_context_t *ctx = NULL;
    okv_status_t st = make_ctx(name, &ctx);
    if (st != OKV_SUCCESS) {
        snprintf(reason, cap, "okv_context_create -> %s", okv_status_string(st));
        return 0;
    }
    okv_context_destroy(ctx);
    return 1;
}

typedef struct op_tot {
    int pass, fail, unsup;
} op_tot_t;

/* Bookkeeping of one case's verdict. */
static void record(const char *name, const conf_case_t *c, conf_verdict_t v, const char *msg, double secs, FILE *log,
                   int verbose, op_tot_t *tot, okv_conformance_totals_t *all)
{
    char desc[512];
    conf_descriptor(c, desc, sizeof desc);
    if (v == CONF_PASS)
        tot[c->op].pass++, all->passed++;
    else if (v == CONF_FAIL)
        tot[c->op].fail++, all->failed++;
    else
        tot[c->op].unsup++, all->unsupported++;
    if (v == CONF_FAIL) {
        fprintf(log, "FAIL %s %s: %s\n", name, desc, msg);
        fflush(log);
    } else if (verbose) {
        fprintf(log, "%s %s %s (%.2f s)\n", v == CONF_PASS ? "ok  " : "unsupported", name, desc, secs);
        fflush(log);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Opens the session of backend `name` (and the ref oracle). 0 when unavailable. */
static int open_session(const char *name, conf_session_t *s, char *reason, size_t cap)
{
    memset(s, 0, sizeof *s);
    s->backend = name;
    if (!probe(name, reason, cap)) return 0;
    okv_status_t st = make_ctx(name, &s->ctx);
    if (st != OKV_SUCCESS) {
        snprintf(reason, cap, "okv_context_create -> %s", okv_status_string(st));
        return 0;
    }
    if (strcmp(name, "ref") == 0)
        s->ref = s->ctx;
    else if (make_ctx("ref", &s->ref) != OKV_SUCCESS)
        s->ref = NULL;
    return 1;
}

static void close_session(conf_session_t *s)
{
    if (s->ref && s->ref != s->ctx) okv_context_destroy(s->ref);
    if (s->ctx) okv_context_destroy(s->ctx);
}

static conf_verdict_t run_one(conf_session_t *s, const conf_case_t *c, char *msg, size_t cap)
{
    if (!s->ref) {
        snprintf(msg, cap, "the ref backend (the oracle) could not be created");
        return CONF_FAIL;
    }
    return conf_run_case(s, c, msg, cap);
}

#if defined(__unix__) || defined(__APPLE__)
/* Cases run in a forked worker process: a backend that crashes or hangs fails the
 * case it was running, and the run goes on in a fresh worker. The parent never
 * touches the library (no OpenCL platform may be initialised before a fork). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void wputs(int fd, const char *line)
{
    size_t n = strlen(line), off = 0;
    while (off < n) {
        ssize_t k = write(fd, line + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        off += (size_t)k;
    }
}

static void worker(int fd, const char *name, const conf_case_t *t, const int *idx, int n, int first)
{
    static char msg[4096], line[4608];
    conf_session_t s;
    char reason[OKV_REASON_MAX + 64];
    if (!open_session(name, &s, reason, sizeof reason)) {
        for (char *p = reason; *p; ++p)
            if (*p == '\n') *p = ' ';
        snprintf(line, sizeof line, "U %s\n", reason);
        wputs(fd, line);
        close_session(&s);
        return;
    }
    for (int k = first; k < n; ++k) {
        snprintf(line, sizeof line, "S %d\n", k);
        wputs(fd, line);
        long long c0 = s.codes_compared, t0 = s.code_ties;
        double a = now_s();
        conf_verdict_t v = run_one(&s, &t[idx[k]], msg, sizeof msg);
        for (char *p = msg; *p; ++p)
            if (*p == '\n') *p = ' ';
        snprintf(line, sizeof line, "R %d %d %lld %lld %.4f %s\n", k, (int)v, s.codes_compared - c0, s.code_ties - t0,
                 now_s() - a, msg);
        wputs(fd, line);
    }
    wputs(fd, "E\n");
    close_session(&s);
}

/* Reads one line (without '\n') within timeout seconds: 1 line, 0 EOF, -1 timeout. */
static int read_line(int fd, char *buf, size_t cap, size_t *have, char *out, size_t ocap, double timeout)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        if (nl) {
            size_t len = (size_t)(nl - buf);
            size_t c = len < ocap - 1 ? len : ocap - 1;
            memcpy(out, buf, c);
            out[c] = '\0';
            memmove(buf, nl + 1, *have - len - 1);
            *have -= len + 1;
            return 1;
        }
        if (*have == cap) *have = 0; /* an over-long line: drop it */
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)(timeout * 1000.0));
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) return -1;
        ssize_t k = read(fd, buf + *have, cap - *have);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        *have += (size_t)k;
    }
}

static double case_timeout(void)
{
    const char *e = getenv("OKV_CONFORMANCE_CASE_TIMEOUT");
    double t = e ? atof(e) : 0.0;
    return t > 0.0 ? t : 900.0;
}

static int run_cases(const char *name, const conf_case_t *t, const int *idx, int n, FILE *log, int verbose,
                     op_tot_t *tot, okv_conformance_totals_t *all, char *reason, size_t cap)
{
    static char buf[1 << 16], line[8192];
    int next = 0;
    double tmo = case_timeout();
    while (next < n) {
        int fds[2];
        if (pipe(fds) != 0) {
            snprintf(reason, cap, "pipe failed");
            return -1;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]);
            close(fds[1]);
            snprintf(reason, cap, "fork failed");
            return -1;
        }
        if (pid == 0) {
            close(fds[0]);
            worker(fds[1], name, t, idx, n, next);
            close(fds[1]);
            _exit(0);
        }
        close(fds[1]);
        size_t have = 0;
        int cur = -1, ended = 0, timed_out = 0, unavailable = 0;
        for (;;) {
            int rl = read_line(fds[0], buf, sizeof buf, &have, line, sizeof line, tmo);
            if (rl < 0) {
                timed_out = 1;
                kill(pid, SIGKILL);
                break;
            }
            if (rl == 0) break;
            if (line[0] == 'U') {
                snprintf(reason, cap, "%s", line + 2);
                unavailable = 1;
            } else if (line[0] == 'S') {
                cur = atoi(line + 2);
            } else if (line[0] == 'R') {
                int k = 0, v = 0, used = 0;
                long long cc = 0, ct = 0;
                double secs = 0.0;
                if (sscanf(line + 2, "%d %d %lld %lld %lf %n", &k, &v, &cc, &ct, &secs, &used) >= 5 && k >= 0 &&
                    k < n) {
                    record(name, &t[idx[k]], (conf_verdict_t)v, line + 2 + used, secs, log, verbose, tot, all);
                    all->codes_compared += cc;
                    all->code_ties += ct;
                    next = k + 1;
                }
                cur = -1;
            } else if (line[0] == 'E') {
                ended = 1;
            }
        }
        close(fds[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (unavailable) return -1;
        if (ended) break;
        char why[128];
        if (timed_out)
            snprintf(why, sizeof why, "no result within %.0f s (killed)", tmo);
        else if (WIFSIGNALED(status))
            snprintf(why, sizeof why, "the worker process died of signal %d", WTERMSIG(status));
        else
            snprintf(why, sizeof why, "the worker process exited with status %d", WEXITSTATUS(status));
        if (cur < 0) {
            /* died outside a case (session setup or teardown) */
            if (next >= n) break;
            snprintf(reason, cap, "%s before running a case", why);
            return -1;
        }
        record(name, &t[idx[cur]], CONF_FAIL, why, 0.0, log, verbose, tot, all);
        next = cur + 1;
    }
    return 0;
}

/* Backend names of the registry, listed by a child process. */
static int list_backends(char names[][OKV_NAME_MAX], int max)
{
    int fds[2];
    if (pipe(fds) != 0) return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (pid == 0) {
        close(fds[0]);
        int32_t n = 0;
        char line[OKV_NAME_MAX + 2];
        if (okv_backend_count(&n) == OKV_SUCCESS) {
            for (int32_t i = 0; i < n; ++i) {
                okv_backend_info_t info;
                okv_backend_info_init(&info);
                if (okv_backend_get_info(i, &info) != OKV_SUCCESS) continue;
                snprintf(line, sizeof line, "%s\n", info.name);
                wputs(fds[1], line);
            }
        }
        close(fds[1]);
        _exit(0);
    }
    close(fds[1]);
    char buf[4096], line[OKV_NAME_MAX];
    size_t have = 0;
    int nb = 0;
    while (nb < max && read_line(fds[0], buf, sizeof buf, &have, line, sizeof line, 120.0) == 1)
        memcpy(names[nb++], line, sizeof line);
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return nb;
}
#else
static int run_cases(const char *name, const conf_case_t *t, const int *idx, int n, FILE *log, int verbose,
                     op_tot_t *tot, okv_conformance_totals_t *all, char *reason, size_t cap)
{
    static char msg[4096];
    conf_session_t s;
    if (!open_session(name, &s, reason, cap)) {
        close_session(&s);
        return -1;
    }
    for (int k = 0; k < n; ++k) {
        long long c0 = s.codes_compared, t0 = s.code_ties;
        double a = now_s();
        conf_verdict_t v = run_one(&s, &t[idx[k]], msg, sizeof msg);
        record(name, &t[idx[k]], v, msg, now_s() - a, log, verbose, tot, all);
        all->codes_compared += s.codes_compared - c0;
        all->code_ties += s.code_ties - t0;
    }
    close_session(&s);
    return 0;
}

static int list_backends(char names[][OKV_NAME_MAX], int max)
{
    int32_t n = 0;
    int nb = 0;
    if (okv_backend_count(&n) != OKV_SUCCESS) return 0;
    for (int32_t i = 0; i < n && nb < max; ++i) {
        okv_backend_info_t info;
        okv_backend_info_init(&info);
        if (okv_backend_get_info(i, &info) != OKV_SUCCESS) continue;
        snprintf(names[nb++], OKV_NAME_MAX, "%s", info.name);
    }
    return nb;
}
#endif

/* Runs the selected cases on one backend; per-op totals. -1: backend unavailable. */
static int run_backend(const char *name, int op, const char *filter, int quick, FILE *log, int verbose, op_tot_t *tot,
                       okv_conformance_totals_t *all, char *reason, size_t cap)
{
    int total;
    const conf_case_t *t = conf_table(&total);
    int *idx = malloc((size_t)(total + 1) * sizeof(int)), n = 0;
    char desc[512];
    if (!idx) {
        snprintf(reason, cap, "out of host memory");
        return -1;
    }
    for (int i = 0; i < total; ++i)
        if (selected(&t[i], op, filter, quick, desc, sizeof desc)) idx[n++] = i;
    int rc = run_cases(name, t, idx, n, log, verbose, tot, all, reason, cap);
    free(idx);
    return rc;
}

int okv_conformance_run(const char *name, const char *op, const char *filter, int quick, FILE *log,
                        okv_conformance_totals_t *totals, char *reason, size_t cap)
{
    op_tot_t tot[CONF_OP_COUNT];
    memset(tot, 0, sizeof tot);
    memset(totals, 0, sizeof *totals);
    int oi = -1;
    if (op) {
        oi = op_index(op);
        if (oi < 0) {
            snprintf(reason, cap, "unknown op '%s'", op);
            return -1;
        }
    }
    return run_backend(name, oi, filter, quick, log ? log : stdout, 0, tot, totals, reason, cap);
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--backend NAME] [--filter SUBSTR] [--list] [--quick] [--verbose]\n"
            "  Runs the conformance table on NAME (default: every available backend) and prints\n"
            "  failures, an op x backend matrix and 'N passed, M failed, K skipped'.\n"
            "  --filter keeps cases whose descriptor contains SUBSTR (e.g. 'decode/', 'meta=bf16').\n"
            "  --quick runs the quick subset; --list prints the selected descriptors.\n",
            prog);
}

#define MAX_B 8

int okv_conformance_main(int argc, char **argv)
{
    const char *prog = argc > 0 && argv[0] ? argv[0] : "conformance";
    const char *backend = NULL, *filter = NULL;
    int list = 0, quick = 0, verbose = 0;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (strcmp(a, "--backend") == 0 && i + 1 < argc)
            backend = argv[++i];
        else if (strncmp(a, "--backend=", 10) == 0)
            backend = a + 10;
        else if (strcmp(a, "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(a, "--filter=", 9) == 0)
            filter = a + 9;
        else if (strcmp(a, "--list") == 0)
            list = 1;
        else if (strcmp(a, "--quick") == 0)
            quick = 1;
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0)
            verbose = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, prog);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", prog, a);
            usage(stderr, prog);
            return 2;
        }
    }
    int total;
    const conf_case_t *t = conf_table(&total);
    char desc[512];
    if (list) {
        int n = 0;
        for (int i = 0; i < total; ++i) {
            if (!selected(&t[i], -1, filter, quick, desc, sizeof desc)) continue;
            printf("%s%s\n", desc, t[i].quick && !quick ? "  [quick]" : "");
            ++n;
        }
        printf("%d cases (%s table of %d)\n", n, quick ? "quick" : "full", total);
        return 0;
    }
    int selected_n = 0;
    for (int i = 0; i < total; ++i)
        selected_n += selected(&t[i], -1, filter, quick, desc, sizeof desc);

    const char *names[MAX_B];
    char namebuf[MAX_B][OKV_NAME_MAX];
    int nb = 0;
    if (backend) {
        names[nb++] = backend;
    } else {
        nb = list_backends(namebuf, MAX_B);
        for (int b = 0; b < nb; ++b)
            names[b] = namebuf[b];
    }
    op_tot_t tot[MAX_B][CONF_OP_COUNT];
    int state[MAX_B]; /* 0 ran, -1 unavailable */
    char reasons[MAX_B][OKV_REASON_MAX + 64];
    double secs[MAX_B];
    okv_conformance_totals_t all;
    memset(&all, 0, sizeof all);
    memset(tot, 0, sizeof tot);
    int skipped = 0;
    printf("oscarkv conformance: %d cases (%s table), backends:", selected_n, quick ? "quick" : "full");
    for (int b = 0; b < nb; ++b)
        printf(" %s", names[b]);
    printf("\n");
    fflush(stdout);
    for (int b = 0; b < nb; ++b) {
        double a = now_s();
        reasons[b][0] = '\0';
        state[b] =
            run_backend(names[b], -1, filter, quick, stdout, verbose, tot[b], &all, reasons[b], sizeof reasons[b]);
        secs[b] = now_s() - a;
        if (state[b] < 0) {
            printf("SKIP %s: unavailable: %s\n", names[b], reasons[b]);
            /* an explicitly requested backend that cannot run: its cases are skipped */
            if (backend) skipped += selected_n;
        }
    }
    printf("\nop x backend (PASS/FAIL/UNSUPPORTED case counts)\n%-12s", "op");
    for (int b = 0; b < nb; ++b)
        printf(" %-24s", names[b]);
    printf("\n");
    for (int o = 0; o < CONF_OP_COUNT; ++o) {
        printf("%-12s", conf_op_names[o]);
        for (int b = 0; b < nb; ++b) {
            char cell[64];
            const op_tot_t *x = &tot[b][o];
            if (state[b] < 0)
                snprintf(cell, sizeof cell, "unavailable");
            else if (x->pass + x->fail + x->unsup == 0)
                snprintf(cell, sizeof cell, "-");
            else
                snprintf(cell, sizeof cell, "%s %d/%d/%d", x->fail ? "FAIL" : (x->pass ? "PASS" : "UNSUPPORTED"),
                         x->pass, x->fail, x->unsup);
            printf(" %-24s", cell);
        }
        printf("\n");
    }
    printf("%-12s", "time");
    for (int b = 0; b < nb; ++b) {
        char cell[64];
        snprintf(cell, sizeof cell, "%.1f s", secs[b]);
        printf(" %-24s", cell);
    }
    printf("\n");
    for (int b = 0; b < nb; ++b)
        if (state[b] < 0) printf("%s: unavailable: %s\n", names[b], reasons[b]);
    if (all.codes_compared)
        printf("INT2 codes compared with the host model: %lld, differing at allowed rounding ties: %lld\n",
               all.codes_compared, all.code_ties);
    printf("%d passed, %d failed, %d skipped\n", all.passed, all.failed, all.unsupported + skipped);
    fflush(stdout);
    return (all.failed == 0 && all.passed > 0) ? 0 : 1;
}
