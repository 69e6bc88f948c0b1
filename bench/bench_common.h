/* bench_common.h - what the C benchmark drivers (bench_nnlite.c, gpu/bench_gpu.c,
   bench_threads.c) share: error checks, a clock, the model table lookup, one
   timed fit, and the statistics of timed windows in the line format that
   bench/run.sh and bench/report.py read (bench_print_windows).
   C99; include it first (it asks for POSIX clock_gettime). */
#ifndef NNL_BENCH_COMMON_H
#define NNL_BENCH_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nnlite.h"
#include "models.h"

#define CHECK(call)                                                                  \
    do {                                                                             \
        if ((call) != NNL_OK) {                                                      \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, nnl_last_error());   \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Seconds of untimed batch-1 calls before the timed ones (every harness:
   bench_nnlite, kann_mlp, bench_torch.py) */
#define LATENCY_WARM_SECONDS 0.5

static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The model called `name` in bench/models.h, or NULL. */
static inline const bench_model *find_model(const char *name) {
    size_t k;
    for (k = 0; k < sizeof bench_models / sizeof bench_models[0]; k++)
        if (!strcmp(bench_models[k].name, name)) return &bench_models[k];
    return NULL;
}

/* Trains `epochs` epochs over `steps` batches; returns the seconds it took. */
static inline double train(nnl_model *m, const float *x, const int64_t *y, int rank, const int64_t *per, int64_t steps,
                    int batch, int epochs) {
    int64_t shape[4], ys[1];
    int i;
    shape[0] = steps * batch;
    for (i = 0; i < rank; i++) shape[i + 1] = per[i];
    ys[0] = shape[0];
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = batch;
    o.verbose = 0;
    o.shuffle = 1;
    double t = now();
    CHECK(nnl_fit(m, x, rank + 1, shape, y, NNL_INT64, 1, ys, &o));
    return now() - t;
}

/* A positive integer option's value (argv[*i + 1]); otherwise the program
   stops (exit 2) naming itself and the option. */
static inline int bench_opt_int(int argc, char **argv, int *i, const char *name) {
    if (*i + 1 >= argc || atoi(argv[*i + 1]) <= 0) {
        fprintf(stderr, "%s: %s needs a positive number\n", argv[0], name);
        exit(2);
    }
    return atoi(argv[++*i]);
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts a copy; n <= 64). */
static inline double bench_median(const double *v, int n) {
    double s[64];
    int i;
    if (n < 1 || n > 64) return 0.0;
    for (i = 0; i < n; i++) s[i] = v[i];
    qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The window statistics of one measurement as key=value fields, the part of a
   `train` line that bench/run.sh checks (spread = (max - min) / median):
   windows=a,b,c median=M min=L max=H spread=S */
static inline void bench_print_windows(FILE *f, const double *sps, int n) {
    double lo = sps[0], hi = sps[0], med = bench_median(sps, n);
    int i;
    fprintf(f, "windows=");
    for (i = 0; i < n; i++) {
        fprintf(f, "%s%.1f", i ? "," : "", sps[i]);
        if (sps[i] < lo) lo = sps[i];
        if (sps[i] > hi) hi = sps[i];
    }
    fprintf(f, " median=%.1f min=%.1f max=%.1f spread=%.4f", med, lo, hi, med > 0 ? (hi - lo) / med : 0.0);
}

#endif
