/* kann_mlp.c - the KANN + OpenBLAS side of bench/run.sh for the MLPs (K-MLP,
   R-MLP): the same network, optimizer, batch size, data, steps and windows as
   bench_nnlite.c, built with KANN's API (github.com/attractivechaos/kann).

   KANN is not part of nnlite and is never linked into it: bench/run.sh
   compiles this driver against the peer's sources in ../shared/peers/kann
   (kann.c, kautodiff.c, with -DHAVE_CBLAS -DHAVE_PTHREAD, OpenBLAS) into
   build/bench/, and skips it with a message when that folder is absent. The
   driver links build/libnnlite.a only for nnl_load_mnist (the .gz idx reader).

   usage: kann_mlp MODEL BATCH THREADS [--split mt|blas] [--steps N] [--windows K]
                   [--warmup N] [--calls N] [--infer-seconds S] [--data DIR] [--setting LABEL]
                   [--keep-denormals]
     MODEL          kmlp (784-128-10, Adam(1e-3, eps 1e-7)) or rmlp (784-128-128-10, SGD(0.01))
     --split mt     THREADS threads by kann_mt (KANN splits the batch), OpenBLAS on 1 (default)
     --split blas   KANN on one thread, OpenBLAS on THREADS
     other options as bench_nnlite's; --setting names the setting in the output.
   prints train, latency, infer and rss lines as bench_nnlite (fw=kann; the
   train line also gives last_loss, the loss of the last step: a check that it
   learns) and
     blas fw=kann setting= core=NAME   (openblas_get_corename: the kernels in use)

   The peer at its best: FTZ/DAZ set here before KANN's threads start (nnlite
   flushes denormals itself; --keep-denormals leaves the environment alone),
   the optimizer loops compiled with -O3 -march=native. KANN has no Adam: the
   update below is Keras' Adam (the form nnlite implements), one pass over the
   collated parameters ann->x with the gradients ann->g. Softmax output with
   multi-class cross-entropy (KANN_C_CEM) on one-hot truth rows; batch-1
   inference is kann_apply1 (the softmax row), as nnl_predict returns; batched
   inference (B = 1, 16, 256 samples a call) does what kann_apply1 does for B
   rows: kann_set_batch_size, kann_feed_bind, kad_eval_at of the output node
   (KANN's own threads, kann_mt, serve training only; OpenBLAS's threads run
   in the --split blas settings). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "bench_common.h" /* nnlite.h (the data loaders), the clock, options, window statistics */
#include "kann.h"

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

/* the model's state for one training step */
typedef struct {
    kann_t *ann;
    int adam, n_var, n_in;
    long t;              /* Adam step */
    float cost;          /* the last step's loss (a check that it trains) */
    float *m, *v;        /* Adam moments */
    float *x1, *y1;      /* the bound mini-batch */
} net;

static void update(net *n) {
    float *w = n->ann->x;
    const float *g = n->ann->g;
    int i;
    if (!n->adam) { /* SGD(learning_rate=0.01) */
        for (i = 0; i < n->n_var; i++) w[i] -= 0.01f * g[i];
        return;
    }
    /* Keras' Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7) */
    n->t++;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
    float lr = (float)(0.001 * sqrt(1.0 - pow(b2, (double)n->t)) / (1.0 - pow(b1, (double)n->t)));
    float *m = n->m, *v = n->v;
    for (i = 0; i < n->n_var; i++) {
        m[i] = b1 * m[i] + (1.f - b1) * g[i];
        v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
        w[i] -= lr * m[i] / (sqrtf(v[i]) + eps);
    }
}

/* `steps` optimizer steps in shuffled passes over the nb batches of (x, y1hot) */
static void run(net *n, const float *x, const float *yh, int nb, int batch, int *shuf, long steps) {
    long done = 0;
    while (done < steps) {
        int s, b;
        kann_shuffle(nb * batch, shuf);
        for (s = 0; s < nb && done < steps; s++, done++) {
            for (b = 0; b < batch; b++) {
                int k = shuf[s * batch + b];
                memcpy(n->x1 + (size_t)b * n->n_in, x + (size_t)k * n->n_in, sizeof(float) * (size_t)n->n_in);
                memcpy(n->y1 + (size_t)b * 10, yh + (size_t)k * 10, sizeof(float) * 10);
            }
            kann_set_batch_size(n->ann, batch);
            n->cost = kann_cost(n->ann, 0, 1);
            update(n);
        }
    }
}

/* Batched inference: `calls` evaluations of the output node on B consecutive
   samples each, walking through the n samples of x; returns the seconds. */
static double infer_run(kann_t *ann, int i_out, float *x, long n, int B, long long calls) {
    long o = 0;
    long long c;
    volatile float sink = 0;
    kann_set_batch_size(ann, B);
    double t = now();
    for (c = 0; c < calls; c++) {
        float *p = x + (size_t)o * 784;
        kann_feed_bind(ann, KANN_F_IN, 0, &p);
        kad_eval_at(ann->n, ann->v, i_out);
        sink += ann->v[i_out]->x[0];
        o += B;
        if (o + B > n) o = 0;
    }
    return now() - t;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s kmlp|rmlp BATCH THREADS [--split mt|blas] [--steps N] [--windows K] "
                        "[--warmup N] [--calls N] [--infer-seconds S] [--data DIR] [--setting LABEL] "
                        "[--keep-denormals]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1], *data = NULL, *setting = "auto", *split = "mt";
    int batch = atoi(argv[2]), threads = atoi(argv[3]), i, keep = 0;
    int steps = 2000, windows = 3, warmup = 50, calls = 2001;
    double infer_secs = 0.3;
    for (i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--steps")) steps = bench_opt_int(argc, argv, &i, "--steps");
        else if (!strcmp(argv[i], "--windows")) windows = bench_opt_int(argc, argv, &i, "--windows");
        else if (!strcmp(argv[i], "--warmup")) warmup = bench_opt_int(argc, argv, &i, "--warmup");
        else if (!strcmp(argv[i], "--calls")) calls = bench_opt_int(argc, argv, &i, "--calls");
        else if (!strcmp(argv[i], "--infer-seconds") && i + 1 < argc) infer_secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--setting") && i + 1 < argc) setting = argv[++i];
        else if (!strcmp(argv[i], "--split") && i + 1 < argc) split = argv[++i];
        else if (!strcmp(argv[i], "--keep-denormals")) keep = 1;
        else {
            fprintf(stderr, "kann_mlp: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(model, "kmlp") && strcmp(model, "rmlp")) {
        fprintf(stderr, "kann_mlp: model %s: only kmlp and rmlp\n", model);
        return 2;
    }
    if (strcmp(split, "mt") && strcmp(split, "blas")) {
        fprintf(stderr, "kann_mlp: --split %s: mt or blas\n", split);
        return 2;
    }
    if (windows > 64) windows = 64;
#if defined(__x86_64__) || defined(__i386__)
    if (!keep) _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ | DAZ, inherited by kann_mt's threads */
#endif
    openblas_set_num_threads(!strcmp(split, "blas") ? threads : 1);

    /* the network: Dense(128, relu) [, Dense(128, relu)], Dense(10) + softmax + cross-entropy */
    kann_srand(1);
    kad_node_t *t = kann_layer_input(784);
    t = kad_relu(kann_layer_dense(t, 128));
    if (!strcmp(model, "rmlp")) t = kad_relu(kann_layer_dense(t, 128));
    net n;
    memset(&n, 0, sizeof n);
    n.ann = kann_new(kann_layer_cost(t, 10, KANN_C_CEM), 0);
    n.adam = !strcmp(model, "kmlp");
    n.n_var = kann_size_var(n.ann);
    n.n_in = 784;
    n.m = (float *)calloc((size_t)n.n_var, sizeof(float));
    n.v = (float *)calloc((size_t)n.n_var, sizeof(float));
    n.x1 = (float *)malloc(sizeof(float) * 784 * (size_t)batch);
    n.y1 = (float *)malloc(sizeof(float) * 10 * (size_t)batch);
    if (!n.m || !n.v || !n.x1 || !n.y1) return 1;
    kann_feed_bind(n.ann, KANN_F_IN, 0, &n.x1);
    kann_feed_bind(n.ann, KANN_F_TRUTH, 0, &n.y1);
    if (!strcmp(split, "mt") && threads > 1) kann_mt(n.ann, threads, batch);
    kann_switch(n.ann, 1);

    /* data: as bench_nnlite.c (synthetic: 20 batches of uniform noise; or the
       MNIST-style folder's training images scaled to [0, 1]); one-hot truth */
    int nb;
    long k, count;
    float *x, *yh;
    nnl_array *xa = NULL, *ya = NULL;
    if (data) {
        if (nnl_load_mnist(data, &xa, &ya, NULL, NULL) != NNL_OK) {
            fprintf(stderr, "kann_mlp: %s\n", nnl_last_error());
            return 1;
        }
        nb = (int)(nnl_array_dim(xa, 0) / batch);
        count = (long)nb * batch;
        x = (float *)nnl_array_data(xa);
        for (k = 0; k < count * 784; k++) x[k] *= 1.f / 255.f;
        const int64_t *lab = (const int64_t *)nnl_array_data(ya);
        yh = (float *)calloc((size_t)count * 10, sizeof(float));
        if (!yh) return 1;
        for (k = 0; k < count; k++) yh[k * 10 + lab[k]] = 1.f;
    } else {
        nb = 20;
        count = (long)nb * batch;
        x = (float *)malloc(sizeof(float) * (size_t)count * 784);
        yh = (float *)calloc((size_t)count * 10, sizeof(float));
        if (!x || !yh) return 1;
        srand(7);
        for (k = 0; k < count * 784; k++) x[k] = (float)rand() / ((float)RAND_MAX + 1.f);
        for (k = 0; k < count; k++) yh[k * 10 + rand() % 10] = 1.f;
    }
    int *shuf = (int *)malloc(sizeof(int) * (size_t)count);
    if (!shuf) return 1;

    run(&n, x, yh, nb, batch, shuf, warmup);
    long wsteps = (long)((steps + nb - 1) / nb) * nb;
    double sps[64], total = 0;
    for (i = 0; i < windows; i++) {
        double a = now();
        run(&n, x, yh, nb, batch, shuf, wsteps);
        double w = now() - a;
        total += w;
        sps[i] = (double)(wsteps * batch) / w;
    }
    /* batch-1 inference: kann_apply1, median of many calls */
    kann_switch(n.ann, 0);
    double *lat = (double *)malloc(sizeof(double) * (size_t)calls);
    float *one = (float *)malloc(sizeof(float) * 784 * 50);
    if (!lat || !one) return 1;
    memcpy(one, x, sizeof(float) * 784 * 50);
    volatile float sink = 0;
    double warm0 = now(); /* untimed calls first, as bench_nnlite */
    for (i = 0; i < 50 || now() - warm0 < LATENCY_WARM_SECONDS; i++)
        sink += kann_apply1(n.ann, one + (size_t)(i % 50) * 784)[0];
    for (i = 0; i < calls; i++) {
        double a = now();
        sink += kann_apply1(n.ann, one + (size_t)(i % 50) * 784)[0];
        lat[i] = now() - a;
    }
    qsort(lat, (size_t)calls, sizeof(double), bench_cmp_double);
    struct rusage ru; /* peak memory before the batched inference's batch-256 buffers */
    getrusage(RUSAGE_SELF, &ru);

    /* batched inference, as bench_nnlite.c's: calls fixed from an untimed run
       of about infer_secs / 4, then 3 timed repetitions */
    static const int infer_b[3] = {1, 16, 256};
    double infer_sps[3][3], infer_t[3] = {0, 0, 0};
    long long infer_calls[3] = {0, 0, 0};
    int i_out = kann_find(n.ann, KANN_F_OUT, 0);
    for (i = 0; infer_secs > 0 && i_out >= 0 && i < 3; i++) {
        int B = infer_b[i], r;
        if (count < B) continue;
        long long c = 1;
        double w = infer_run(n.ann, i_out, x, count, B, c);
        while (w < infer_secs / 4) {
            c *= 2;
            w = infer_run(n.ann, i_out, x, count, B, c);
        }
        infer_calls[i] = (long long)(c * infer_secs / w) + 1;
        if (infer_calls[i] < 3) infer_calls[i] = 3;
        for (r = 0; r < 3; r++) {
            w = infer_run(n.ann, i_out, x, count, B, infer_calls[i]);
            infer_t[i] += w;
            infer_sps[i][r] = (double)infer_calls[i] * B / w;
        }
    }
    const char *dname = data ? "fmnist" : "synth";
    printf("train fw=kann model=%s data=%s batch=%d threads=%d setting=%s steps=%ld warmup=%d ", model, dname, batch,
           threads, setting, wsteps, warmup);
    bench_print_windows(stdout, sps, windows);
    printf(" seconds=%.2f last_loss=%.4f\n", total, n.cost);
    printf("latency fw=kann model=%s data=%s threads=%d setting=%s calls=%d median_us=%.2f p10_us=%.2f p90_us=%.2f\n",
           model, dname, threads, setting, calls, 1e6 * lat[calls / 2], 1e6 * lat[calls / 10],
           1e6 * lat[calls * 9 / 10]);
    for (i = 0; i < 3; i++) {
        const double *v = infer_sps[i];
        if (!infer_calls[i]) continue;
        double lo = v[0] < v[1] ? (v[0] < v[2] ? v[0] : v[2]) : (v[1] < v[2] ? v[1] : v[2]);
        double hi = v[0] > v[1] ? (v[0] > v[2] ? v[0] : v[2]) : (v[1] > v[2] ? v[1] : v[2]);
        printf("infer fw=kann model=%s data=%s threads=%d setting=%s batch=%d calls=%lld reps=3 samples_per_s=%.1f "
               "min=%.1f max=%.1f seconds=%.2f\n",
               model, dname, threads, setting, infer_b[i], infer_calls[i], bench_median(v, 3), lo, hi, infer_t[i]);
    }
    printf("rss fw=kann model=%s data=%s batch=%d threads=%d setting=%s peak_mb=%.1f\n", model, dname, batch, threads,
           setting, (double)ru.ru_maxrss / 1024.0);
    printf("blas fw=kann setting=%s core=%s\n", setting, openblas_get_corename());
    return 0;
}
