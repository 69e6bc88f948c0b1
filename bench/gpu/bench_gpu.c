/* bench_gpu.c - GPU training throughput of one seed model in nnlite
   (bench/models.h), synthetic MNIST-shaped data, the model on cuda:0; and
   two sequence workloads (bench/gpu/bench_torch_gpu.py runs the same):
     tptb      T-PTB (../shared/SEEDS.md; the thesis preset of
               examples/ptb_lstm.c): Embedding(10000, 200) - LSTM(200) -
               LSTM(200) - Dense(10000, softmax), windows of 30 steps, SGD
               lr 0.05, sparse cross-entropy at every step (perplexity
               metric); synthetic ids drawn uniformly from PTB's 10,000-word
               vocabulary (no dataset needed; the speed does not depend on
               the words). BATCH is the windows per batch (the seed's 20).
               Throughput: training words per second (BATCH x 30 a step).
     lstmUxT   one LSTM(U, return_sequences=True) layer over T steps of
               inputs U wide, forward + backward (bench/lstm_bench.cpp's
               shapes: batch 20, U 200 or 650, T 20, 30 or 35), trained as a
               model with an MSE loss and SGD, so a step also holds the batch
               copies, the loss and the update (small beside the layer).
               Throughput: training steps (forward + backward) per second.
   These two take the median of 5 timed windows after a warm-up (the
   samples of each window on stderr).

   usage: bench_gpu MODEL BATCH TF32(0|1) [SECONDS]
   prints one line: nnlite-gpu MODEL BATCH fp32|tf32 throughput device
   (throughput: training samples/s; tptb words/s; lstmUxT steps/s) */
#include "bench_common.h"

#define SEQ_WINDOWS 5

/* One nnl_fit of `epochs` epochs over x (rank 3 at most) and y; seconds. */
static double seq_fit(nnl_model *m, const float *x, int xr, const int64_t *xs, const void *y, int ydt, int yr,
                      const int64_t *ys, int batch, int epochs) {
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = batch;
    o.verbose = 0;
    o.shuffle = 1;
    double t = now();
    CHECK(nnl_fit(m, x, xr, xs, y, ydt, yr, ys, &o));
    return now() - t;
}

/* The sequence workloads: builds the model, makes nb batches of synthetic
   data, warms up, times SEQ_WINDOWS windows of about budget / SEQ_WINDOWS
   seconds; prints the line and returns 0. */
static int run_seq(const char *name, int batch, int tf32, double budget, const char *dev) {
    int u = 0, T = 0, ptb = !strcmp(name, "tptb");
    if (!ptb && (sscanf(name, "lstm%dx%d", &u, &T) != 2 || u <= 0 || T <= 0)) {
        fprintf(stderr, "unknown model %s (tptb, lstmUxT)\n", name);
        return 2;
    }
    const int64_t nb = 20, V = 10000;
    int64_t n = nb * batch, i;
    char spec[160];
    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    if (ptb) {
        T = 30;
        snprintf(spec, sizeof spec, "Embedding(%lld, 200, input_length=%d)", (long long)V, T);
        CHECK(nnl_add(m, spec));
        CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
        CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
        snprintf(spec, sizeof spec, "Dense(%lld, activation='softmax')", (long long)V);
        CHECK(nnl_add(m, spec));
        CHECK(nnl_compile(m, "SGD(learning_rate=0.05)", "sparse_categorical_crossentropy", "perplexity"));
    } else {
        snprintf(spec, sizeof spec, "LSTM(%d, return_sequences=True, input_shape=(%d, %d))", u, T, u);
        CHECK(nnl_add(m, spec));
        CHECK(nnl_compile(m, "SGD(learning_rate=0.001)", "mse", ""));
    }
    CHECK(nnl_set_device(m, "cuda:0"));
    CHECK(nnl_set_tf32(m, tf32));

    int64_t per = ptb ? T : (int64_t)T * u; /* x values a sample */
    float *x = (float *)malloc(sizeof(float) * (size_t)(n * per));
    float *yf = ptb ? NULL : (float *)malloc(sizeof(float) * (size_t)(n * per));
    int64_t *yi = ptb ? (int64_t *)malloc(sizeof(int64_t) * (size_t)(n * T)) : NULL;
    if (!x || (!yf && !yi)) return 1;
    srand(7);
    if (ptb) { /* a stream of ids cut into windows, the targets one word on */
        int64_t *s = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n * T + 1));
        if (!s) return 1;
        for (i = 0; i < n * T + 1; i++) s[i] = rand() % V;
        for (i = 0; i < n * T; i++) {
            x[i] = (float)s[i];
            yi[i] = s[i + 1];
        }
        free(s);
    } else {
        for (i = 0; i < n * per; i++) x[i] = 2.f * (float)rand() / ((float)RAND_MAX + 1.f) - 1.f;
        for (i = 0; i < n * per; i++) yf[i] = 2.f * (float)rand() / ((float)RAND_MAX + 1.f) - 1.f;
    }
    int64_t xs[3] = {n, T, u}, ys[3] = {n, T, u};
    int xr = ptb ? 2 : 3, yr = ptb ? 2 : 3;
    const void *y = ptb ? (const void *)yi : (const void *)yf;
    int ydt = ptb ? NNL_INT64 : NNL_FLOAT32;

    seq_fit(m, x, xr, xs, y, ydt, yr, ys, batch, 2); /* warm-up: allocation, first launches */
    double t1 = seq_fit(m, x, xr, xs, y, ydt, yr, ys, batch, 1);
    int epochs = (int)(budget / SEQ_WINDOWS / (t1 > 1e-6 ? t1 : 1e-6));
    if (epochs < 1) epochs = 1;
    double units = ptb ? (double)(n * T) : (double)nb; /* words, or steps, an epoch */
    double w[SEQ_WINDOWS];
    for (i = 0; i < SEQ_WINDOWS; i++) w[i] = units * epochs / seq_fit(m, x, xr, xs, y, ydt, yr, ys, batch, epochs);
    fprintf(stderr, "nnlite-gpu %s %d %s ", name, batch, tf32 ? "tf32" : "fp32");
    bench_print_windows(stderr, w, SEQ_WINDOWS);
    fprintf(stderr, " (%d epochs of %lld batches a window)\n", epochs, (long long)nb);
    printf("nnlite-gpu %s %d %s %.1f %s\n", name, batch, tf32 ? "tf32" : "fp32", bench_median(w, SEQ_WINDOWS), dev);
    nnl_model_free(m);
    free(x);
    free(yf);
    free(yi);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL BATCH TF32(0|1) [SECONDS]\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "tptb") || !strncmp(argv[1], "lstm", 4)) {
        if (nnl_cuda_device_count() == 0) {
            fprintf(stderr, "bench_gpu: no CUDA device (or nnlite built without CUDA)\n");
            return 3;
        }
        char dev[256];
        CHECK(nnl_cuda_device_name(0, dev, sizeof dev));
        return run_seq(argv[1], atoi(argv[2]), atoi(argv[3]), argc > 4 ? atof(argv[4]) : 6.0, dev);
    }
    const bench_model *bm = find_model(argv[1]);
    if (!bm) {
        fprintf(stderr, "unknown model %s\n", argv[1]);
        return 2;
    }
    int batch = atoi(argv[2]), tf32 = atoi(argv[3]), i;
    double budget = argc > 4 ? atof(argv[4]) : 6.0;
    if (nnl_cuda_device_count() == 0) {
        fprintf(stderr, "bench_gpu: no CUDA device (or nnlite built without CUDA)\n");
        return 3;
    }
    char dev[256];
    CHECK(nnl_cuda_device_name(0, dev, sizeof dev));

    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    for (i = 0; bm->layers[i]; i++) CHECK(nnl_add(m, bm->layers[i]));
    CHECK(nnl_compile(m, bm->optimizer, bm->loss, "accuracy"));
    CHECK(nnl_set_device(m, "cuda:0"));
    CHECK(nnl_set_tf32(m, tf32));

    int64_t per[3], feat = 1, nb = 20, n;
    for (i = 0; i < bm->rank; i++) feat *= (per[i] = bm->shape[i]);
    n = nb * batch;
    float *x = (float *)malloc(sizeof(float) * (size_t)(n * feat));
    int64_t *y = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    if (!x || !y) return 1;
    srand(7);
    for (i = 0; i < n * feat; i++) x[i] = (float)rand() / ((float)RAND_MAX + 1.f);
    for (i = 0; i < n; i++) y[i] = rand() % 10;

    double t1 = train(m, x, y, bm->rank, per, 3, batch, 1) / 3; /* warm-up: allocation, JIT */
    t1 = train(m, x, y, bm->rank, per, nb, batch, 1) / nb;
    int epochs = (int)(budget / 3 / (nb * (t1 > 1e-6 ? t1 : 1e-6)));
    if (epochs < 1) epochs = 1;
    double t = 1e30;
    for (i = 0; i < 3; i++) { /* best of three windows */
        double w = train(m, x, y, bm->rank, per, nb, batch, epochs);
        if (w < t) t = w;
    }
    printf("nnlite-gpu %s %d %s %.1f %s\n", bm->name, batch, tf32 ? "tf32" : "fp32",
           (double)(nb * batch * epochs) / t, dev);
    nnl_model_free(m);
    free(x);
    free(y);
    return 0;
}
