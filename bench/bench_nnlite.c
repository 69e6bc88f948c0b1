/* bench_nnlite.c - training throughput, batch-1 inference latency, batched
   inference throughput and peak memory of one seed model in nnlite, on
   synthetic MNIST-shaped data or on real Fashion-MNIST.

   usage: bench_nnlite MODEL BATCH THREADS [--steps N] [--windows K] [--warmup N]
                       [--calls N] [--infer-seconds S] [--data DIR] [--precision POLICY]
     --steps N    optimizer steps per timed window, at least (default 2000; the
                  window holds whole passes over the data, so it may hold more)
     --windows K  timed windows, one after the other in this process (default 3)
     --warmup N   untimed steps before the first window (default 50)
     --calls N    timed batch-1 nnl_predict calls for the latency (default 2001)
     --infer-seconds S  about S seconds per timed repetition of the batched
                  inference (default 0.3; 0 skips it): nnl_predict calls of B
                  samples each (batch_size=B) for B = 1, 16, 256, a number of
                  calls fixed beforehand from a short untimed run, 3 repetitions
     --data DIR   an MNIST-style folder (idx files, .gz or not), e.g.
                  /usr/share/datasets/fashion-mnist: its 60,000 training images,
                  scaled to [0, 1], instead of 20 batches of uniform noise
     --precision POLICY   nnl_set_precision's policy: float32 (the default)
                  or mixed_bfloat16; the lines' setting= field names it (- for
                  float32, so that earlier results compare)
   prints these lines (key=value fields; bench/run.sh and bench/report.py read them):
     train fw=nnlite model= data= batch= threads= setting=- steps= warmup= windows=.. median= min= max= spread= seconds=
     latency fw=nnlite model= data= threads= setting=- calls= median_us= p10_us= p90_us=
     infer fw=nnlite model= data= threads= setting=- batch=B calls= reps=3 samples_per_s= min= max= seconds=
                  (one per B; samples_per_s: the median of the repetitions, min/max theirs)
     rss fw=nnlite model= data= batch= threads= setting=- peak_mb=
   The windows are consecutive: with the defaults they cover steps 50 to 6050,
   long enough for state-dependent slowdowns (denormal Adam moments appear
   after a few hundred steps) to show in the later windows. */
#include "bench_common.h"

#include <sys/resource.h>

/* Batched inference: `calls` nnl_predict calls of B samples each, walking
   through the n samples of x; returns the seconds they took. */
static double infer_run(nnl_model *m, const float *x, int64_t n, int64_t feat, int rank, const int64_t *per, int B,
                        long long calls, float *out, int64_t cap) {
    int64_t shape[4], o = 0;
    long long c;
    int i;
    shape[0] = B;
    for (i = 0; i < rank; i++) shape[i + 1] = per[i];
    double t = now();
    for (c = 0; c < calls; c++) {
        CHECK(nnl_predict(m, x + o * feat, rank + 1, shape, B, out, cap));
        o += B;
        if (o + B > n) o = 0;
    }
    return now() - t;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s MODEL BATCH THREADS [--steps N] [--windows K] [--warmup N] [--calls N] [--data DIR] "
                "[--precision POLICY]\n",
                argv[0]);
        return 2;
    }
    const bench_model *bm = find_model(argv[1]);
    if (!bm) {
        fprintf(stderr, "unknown model %s\n", argv[1]);
        return 2;
    }
    int batch = atoi(argv[2]), threads = atoi(argv[3]), i;
    int steps = 2000, windows = 3, warmup = 50, calls = 2001;
    double infer_secs = 0.3;
    const char *data = NULL, *precision = "float32";
    for (i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--steps")) steps = bench_opt_int(argc, argv, &i, "--steps");
        else if (!strcmp(argv[i], "--windows")) windows = bench_opt_int(argc, argv, &i, "--windows");
        else if (!strcmp(argv[i], "--warmup")) warmup = bench_opt_int(argc, argv, &i, "--warmup");
        else if (!strcmp(argv[i], "--calls")) calls = bench_opt_int(argc, argv, &i, "--calls");
        else if (!strcmp(argv[i], "--infer-seconds") && i + 1 < argc) infer_secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else {
            fprintf(stderr, "bench_nnlite: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (windows > 64) windows = 64;
    CHECK(nnl_set_threads(threads));

    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    for (i = 0; bm->layers[i]; i++) CHECK(nnl_add(m, bm->layers[i]));
    CHECK(nnl_compile(m, bm->optimizer, bm->loss, "accuracy"));
    CHECK(nnl_set_precision(m, precision));
    const char *setting = strcmp(precision, "float32") ? precision : "-";

    int64_t per[3], feat = 1, nb, n, k;
    for (i = 0; i < bm->rank; i++) feat *= (per[i] = bm->shape[i]);
    float *x;
    int64_t *y;
    nnl_array *xa = NULL, *ya = NULL;
    if (data) {
        /* real images: (60000, 28, 28) 0..255 -> [0, 1]; every seed model reads
           28 x 28 x 1 values a sample in this memory order */
        CHECK(nnl_load_mnist(data, &xa, &ya, NULL, NULL));
        if (nnl_array_size(xa) / nnl_array_dim(xa, 0) != feat) {
            fprintf(stderr, "bench_nnlite: %s holds samples of another size\n", data);
            return 1;
        }
        nb = nnl_array_dim(xa, 0) / batch;
        n = nb * batch;
        x = (float *)nnl_array_data(xa);
        y = (int64_t *)nnl_array_data(ya);
        CHECK(nnl_scale(x, n * feat, 1.f / 255.f, 0.f));
    } else {
        /* synthetic data: 20 batches (the peers use as many), values in [0, 1) */
        nb = 20;
        n = nb * batch;
        x = (float *)malloc(sizeof(float) * (size_t)(n * feat));
        y = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
        if (!x || !y) return 1;
        srand(7);
        for (k = 0; k < n * feat; k++) x[k] = (float)rand() / ((float)RAND_MAX + 1.f);
        for (k = 0; k < n; k++) y[k] = rand() % 10;
    }

    /* warm up (arena sizing, page faults, thread pool): `warmup` steps in
       passes of at most nb batches */
    for (k = 0; k < warmup;) {
        int64_t s = warmup - k < nb ? warmup - k : nb;
        train(m, x, y, bm->rank, per, s, batch, 1);
        k += s;
    }
    /* each window: whole passes over the nb batches, at least `steps` steps */
    int epochs = (int)((steps + nb - 1) / nb);
    int64_t wsteps = (int64_t)epochs * nb;
    double sps[64], total = 0;
    for (i = 0; i < windows; i++) {
        double w = train(m, x, y, bm->rank, per, nb, batch, epochs);
        total += w;
        sps[i] = (double)(wsteps * batch) / w;
    }

    /* batch-1 inference: median of many calls, after untimed ones for at
       least LATENCY_WARM_SECONDS (the first few thousand calls after
       training run slower: on an Intel Xeon, K-MLP's median over 2,001 calls
       was 0.3 us above the steady state's) */
    int64_t s1[4];
    s1[0] = 1;
    for (i = 0; i < bm->rank; i++) s1[i + 1] = per[i];
    float out[16];
    double *lat = (double *)malloc(sizeof(double) * (size_t)calls);
    if (!lat) return 1;
    int64_t ns = n < 50 ? n : 50; /* the samples the calls cycle through */
    double warm0 = now();
    for (i = 0; i < 50 || now() - warm0 < LATENCY_WARM_SECONDS; i++)
        CHECK(nnl_predict(m, x + (size_t)(i % ns) * feat, bm->rank + 1, s1, 1, out, 16));
    for (i = 0; i < calls; i++) {
        double a = now();
        CHECK(nnl_predict(m, x + (size_t)(i % ns) * feat, bm->rank + 1, s1, 1, out, 16));
        lat[i] = now() - a;
    }
    qsort(lat, (size_t)calls, sizeof(double), bench_cmp_double);
    /* peak memory of training and batch-1 inference (the batched inference
       below would add its batch-256 buffers) */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);

    /* batched inference (issue 14: "a batched inference call that takes many
       samples ... samples/s at batch 1, 16, 256"): the number of calls is set
       from an untimed run of about infer_secs / 4, then 3 timed repetitions */
    static const int infer_b[3] = {1, 16, 256};
    double infer_sps[3][3], infer_t[3] = {0, 0, 0};
    long long infer_calls[3] = {0, 0, 0};
    int64_t ocap = 0;
    float *obuf = NULL;
    if (infer_secs > 0) {
        int64_t os[8];
        int orank = nnl_output_shape(m, os), j;
        ocap = 256;
        for (j = 0; j < orank; j++) ocap *= os[j] > 0 ? os[j] : 1;
        obuf = (float *)malloc(sizeof(float) * (size_t)ocap);
        if (!obuf) return 1;
    }
    for (i = 0; infer_secs > 0 && i < 3; i++) {
        int B = infer_b[i], r;
        if (n < B) continue;
        long long c = 1;
        double t = infer_run(m, x, n, feat, bm->rank, per, B, c, obuf, ocap);
        while (t < infer_secs / 4) { /* doubling: warm, and a first rate */
            c *= 2;
            t = infer_run(m, x, n, feat, bm->rank, per, B, c, obuf, ocap);
        }
        infer_calls[i] = (long long)(c * infer_secs / t) + 1;
        if (infer_calls[i] < 3) infer_calls[i] = 3;
        for (r = 0; r < 3; r++) {
            double w = infer_run(m, x, n, feat, bm->rank, per, B, infer_calls[i], obuf, ocap);
            infer_t[i] += w;
            infer_sps[i][r] = (double)infer_calls[i] * B / w;
        }
    }

    const char *dname = data ? "fmnist" : "synth";
    printf("train fw=nnlite model=%s data=%s batch=%d threads=%d setting=%s steps=%lld warmup=%d ", bm->name, dname,
           batch, threads, setting, (long long)wsteps, warmup);
    bench_print_windows(stdout, sps, windows);
    printf(" seconds=%.2f\n", total);
    printf("latency fw=nnlite model=%s data=%s threads=%d setting=%s calls=%d median_us=%.2f p10_us=%.2f p90_us=%.2f\n",
           bm->name, dname, threads, setting, calls, 1e6 * lat[calls / 2], 1e6 * lat[calls / 10], 1e6 * lat[calls * 9 / 10]);
    for (i = 0; i < 3; i++) {
        const double *v = infer_sps[i];
        if (!infer_calls[i]) continue;
        double lo = v[0] < v[1] ? (v[0] < v[2] ? v[0] : v[2]) : (v[1] < v[2] ? v[1] : v[2]);
        double hi = v[0] > v[1] ? (v[0] > v[2] ? v[0] : v[2]) : (v[1] > v[2] ? v[1] : v[2]);
        printf("infer fw=nnlite model=%s data=%s threads=%d setting=%s batch=%d calls=%lld reps=3 samples_per_s=%.1f "
               "min=%.1f max=%.1f seconds=%.2f\n",
               bm->name, dname, threads, setting, infer_b[i], infer_calls[i], bench_median(v, 3), lo, hi, infer_t[i]);
    }
    printf("rss fw=nnlite model=%s data=%s batch=%d threads=%d setting=%s peak_mb=%.1f\n", bm->name, dname, batch,
           threads, setting, (double)ru.ru_maxrss / 1024.0);
    nnl_model_free(m);
    free(lat);
    free(obuf);
    if (data) {
        nnl_array_free(xa);
        nnl_array_free(ya);
    } else {
        free(x);
        free(y);
    }
    return 0;
}
