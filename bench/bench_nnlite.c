/* bench_nnlite.c - training throughput, batch-1 inference latency and peak
   memory of one seed model in nnlite, on synthetic MNIST-shaped data or on
   real Fashion-MNIST.

   usage: bench_nnlite MODEL BATCH THREADS [--steps N] [--windows K] [--warmup N]
                       [--calls N] [--data DIR] [--precision POLICY]
     --steps N    optimizer steps per timed window, at least (default 2000; the
                  window holds whole passes over the data, so it may hold more)
     --windows K  timed windows, one after the other in this process (default 3)
     --warmup N   untimed steps before the first window (default 50)
     --calls N    timed batch-1 nnl_predict calls for the latency (default 2001)
     --data DIR   an MNIST-style folder (idx files, .gz or not), e.g.
                  /usr/share/datasets/fashion-mnist: its 60,000 training images,
                  scaled to [0, 1], instead of 20 batches of uniform noise
     --precision POLICY   nnl_set_precision's policy: float32 (the default)
                  or mixed_bfloat16; the lines' setting= field names it (- for
                  float32, so that earlier results compare)
   prints three lines (key=value fields; bench/run.sh and bench/report.py read them):
     train fw=nnlite model= data= batch= threads= setting=- steps= warmup= windows=.. median= min= max= spread= seconds=
     latency fw=nnlite model= data= threads= setting=- calls= median_us= p10_us= p90_us=
     rss fw=nnlite model= data= batch= threads= setting=- peak_mb=
   The windows are consecutive: with the defaults they cover steps 50 to 6050,
   long enough for state-dependent slowdowns (denormal Adam moments appear
   after a few hundred steps) to show in the later windows. */
#include "bench_common.h"

#include <sys/resource.h>

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
    const char *data = NULL, *precision = "float32";
    for (i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--steps")) steps = bench_opt_int(argc, argv, &i, "--steps");
        else if (!strcmp(argv[i], "--windows")) windows = bench_opt_int(argc, argv, &i, "--windows");
        else if (!strcmp(argv[i], "--warmup")) warmup = bench_opt_int(argc, argv, &i, "--warmup");
        else if (!strcmp(argv[i], "--calls")) calls = bench_opt_int(argc, argv, &i, "--calls");
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

    /* batch-1 inference: median of many calls, after a few untimed ones */
    int64_t s1[4];
    s1[0] = 1;
    for (i = 0; i < bm->rank; i++) s1[i + 1] = per[i];
    float out[16];
    double *lat = (double *)malloc(sizeof(double) * (size_t)calls);
    if (!lat) return 1;
    for (i = 0; i < 50; i++) CHECK(nnl_predict(m, x + (size_t)(i % 50) * feat, bm->rank + 1, s1, 1, out, 16));
    for (i = 0; i < calls; i++) {
        double a = now();
        CHECK(nnl_predict(m, x + (size_t)(i % 50) * feat, bm->rank + 1, s1, 1, out, 16));
        lat[i] = now() - a;
    }
    qsort(lat, (size_t)calls, sizeof(double), bench_cmp_double);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *dname = data ? "fmnist" : "synth";
    printf("train fw=nnlite model=%s data=%s batch=%d threads=%d setting=%s steps=%lld warmup=%d ", bm->name, dname,
           batch, threads, setting, (long long)wsteps, warmup);
    bench_print_windows(stdout, sps, windows);
    printf(" seconds=%.2f\n", total);
    printf("latency fw=nnlite model=%s data=%s threads=%d setting=%s calls=%d median_us=%.2f p10_us=%.2f "
           "p90_us=%.2f\n",
           bm->name, dname, threads, setting, calls, 1e6 * lat[calls / 2], 1e6 * lat[calls / 10],
           1e6 * lat[calls * 9 / 10]);
    printf("rss fw=nnlite model=%s data=%s batch=%d threads=%d setting=%s peak_mb=%.1f\n", bm->name, dname, batch,
           threads, setting, (double)ru.ru_maxrss / 1024.0);
    nnl_model_free(m);
    free(lat);
    if (data) {
        nnl_array_free(xa);
        nnl_array_free(ya);
    } else {
        free(x);
        free(y);
    }
    return 0;
}
