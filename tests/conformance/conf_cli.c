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
    for (int i = 0; i < total; ++i) n += selected(&t[i], oi, NULL, quick, desc, sizeof desc);
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
            snprintf(reason, cap, "%s", info.reason[0] ? info.reason : "not available (no reason given)");
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

/* Runs the selected cases on one backend; per-op totals. -1: backend unavailable. */
static int run_backend(const char *name, int op, const char *filter, int quick, FILE *log, int verbose,
                       op_tot_t *tot, okv_conformance_totals_t *all, char *reason, size_t cap)
{
    if (!probe(name, reason, cap)) return -1;
    conf_session_t s;
    memset(&s, 0, sizeof s);
    s.backend = name;
    okv_status_t st = make_ctx(name, &s.ctx);
    if (st != OKV_SUCCESS) {
        snprintf(reason, cap, "okv_context_create -> %s", okv_status_string(st));
        return -1;
    }
    if (strcmp(name, "ref") == 0) {
        s.ref = s.ctx;
    } else if (make_ctx("ref", &s.ref) != OKV_SUCCESS) {
        s.ref = NULL;
    }
    int total;
    const conf_case_t *t = conf_table(&total);
    char desc[512], msg[2048];
    for (int i = 0; i < total; ++i) {
        const conf_case_t *c = &t[i];
        if (!selected(c, op, filter, quick, desc, sizeof desc)) continue;
        conf_verdict_t v;
        clock_t t0 = clock();
        if (!s.ref) {
            v = CONF_FAIL;
            snprintf(msg, sizeof msg, "the ref backend (the oracle) could not be created");
        } else {
            v = conf_run_case(&s, c, msg, sizeof msg);
        }
        double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
        if (v == CONF_PASS) tot[c->op].pass++, all->passed++;
        else if (v == CONF_FAIL) tot[c->op].fail++, all->failed++;
        else tot[c->op].unsup++, all->unsupported++;
        if (v == CONF_FAIL) {
            fprintf(log, "FAIL %s %s: %s\n", name, desc, msg);
            fflush(log);
        } else if (verbose) {
            fprintf(log, "%s %s %s (%.2f s)\n", v == CONF_PASS ? "ok  " : "unsupported", name, desc, secs);
            fflush(log);
        }
    }
    all->codes_compared += s.codes_compared;
    all->code_ties += s.code_ties;
    if (s.ref && s.ref != s.ctx) okv_context_destroy(s.ref);
    okv_context_destroy(s.ctx);
    return 0;
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
        if (strcmp(a, "--backend") == 0 && i + 1 < argc) backend = argv[++i];
        else if (strncmp(a, "--backend=", 10) == 0) backend = a + 10;
        else if (strcmp(a, "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else if (strncmp(a, "--filter=", 9) == 0) filter = a + 9;
        else if (strcmp(a, "--list") == 0) list = 1;
        else if (strcmp(a, "--quick") == 0) quick = 1;
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) verbose = 1;
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
    for (int i = 0; i < total; ++i) selected_n += selected(&t[i], -1, filter, quick, desc, sizeof desc);

    const char *names[MAX_B];
    char namebuf[MAX_B][OKV_NAME_MAX];
    int nb = 0;
    if (backend) {
        names[nb++] = backend;
    } else {
        int32_t n = 0;
        okv_backend_count(&n);
        for (int32_t i = 0; i < n && nb < MAX_B; ++i) {
            okv_backend_info_t info;
            okv_backend_info_init(&info);
            if (okv_backend_get_info(i, &info) != OKV_SUCCESS) continue;
            snprintf(namebuf[nb], OKV_NAME_MAX, "%s", info.name);
            names[nb] = namebuf[nb];
            ++nb;
        }
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
    for (int b = 0; b < nb; ++b) printf(" %s", names[b]);
    printf("\n");
    fflush(stdout);
    for (int b = 0; b < nb; ++b) {
        struct timespec a, z;
        clock_gettime(CLOCK_MONOTONIC, &a);
        reasons[b][0] = '\0';
        state[b] = run_backend(names[b], -1, filter, quick, stdout, verbose, tot[b], &all, reasons[b],
                               sizeof reasons[b]);
        clock_gettime(CLOCK_MONOTONIC, &z);
        secs[b] = (double)(z.tv_sec - a.tv_sec) + 1e-9 * (double)(z.tv_nsec - a.tv_nsec);
        if (state[b] < 0) {
            printf("SKIP %s: unavailable: %s\n", names[b], reasons[b]);
            /* an explicitly requested backend that cannot run: its cases are skipped */
            if (backend) skipped += selected_n;
        }
    }
    printf("\nop x backend (PASS/FAIL/UNSUPPORTED case counts)\n%-12s", "op");
    for (int b = 0; b < nb; ++b) printf(" %-24s", names[b]);
    printf("\n");
    for (int o = 0; o < CONF_OP_COUNT; ++o) {
        printf("%-12s", conf_op_names[o]);
        for (int b = 0; b < nb; ++b) {
            char cell[64];
            const op_tot_t *x = &tot[b][o];
            if (state[b] < 0) snprintf(cell, sizeof cell, "unavailable");
            else if (x->pass + x->fail + x->unsup == 0) snprintf(cell, sizeof cell, "-");
            else
                snprintf(cell, sizeof cell, "%s %d/%d/%d",
                         x->fail ? "FAIL" : (x->pass ? "PASS" : "UNSUPPORTED"), x->pass, x->fail, x->unsup);
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
