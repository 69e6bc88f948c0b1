/* lstm_bench.c - one LSTM layer's forward + backward in nnlite (issue 12):
   a model Input(T, F) - LSTM(U, return_sequences=True) trained with mse and
   SGD on synthetic data, so each step is the layer's forward, the backward
   through time, a (cheap) mse gradient and an SGD update of 4 (F U + U U + U)
   weights. bench/torch_lstm.py times the same step for PyTorch's nn.LSTM.

   usage: lstm_bench BATCH STEPS UNITS THREADS [SECONDS]   (F = UNITS, as in PTB)
   prints: nnlite-lstm BATCH STEPS UNITS THREADS steps_per_s */
#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s BATCH STEPS UNITS THREADS [SECONDS]\n", argv[0]);
        return 2;
    }
    int batch = atoi(argv[1]), steps = atoi(argv[2]), units = atoi(argv[3]), threads = atoi(argv[4]);
    double budget = argc > 5 ? atof(argv[5]) : 4.0;
    if (batch < 1 || steps < 1 || units < 1 || threads < 1) return 2;
    CHECK(nnl_set_threads(threads));

    char spec[160];
    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    snprintf(spec, sizeof spec, "LSTM(%d, return_sequences=True, input_shape=(%d, %d))", units, steps, units);
    CHECK(nnl_add(m, spec));
    CHECK(nnl_compile(m, "SGD(learning_rate=0.0001)", "mse", NULL));

    /* 10 batches of synthetic data, as the PyTorch side */
    int64_t nb = 10, n = nb * batch, i;
    size_t nx = (size_t)(n * steps * units);
    float *x = (float *)malloc(sizeof(float) * nx), *y = (float *)malloc(sizeof(float) * nx);
    if (!x || !y) return 1;
    srand(7);
    for (i = 0; i < (int64_t)nx; i++) x[i] = (float)rand() / ((float)RAND_MAX + 1.f) - 0.5f;
    for (i = 0; i < (int64_t)nx; i++) y[i] = (float)rand() / ((float)RAND_MAX + 1.f) - 0.5f;
    int64_t xs[3] = {n, steps, units};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.batch_size = batch;
    o.verbose = 0;
    o.shuffle = 0;
    o.epochs = 2; /* warm-up: arena sizing, page faults, the pool */
    double t = now();
    CHECK(nnl_fit(m, x, 3, xs, y, NNL_FLOAT32, 3, xs, &o));
    double per_epoch = (now() - t) / 2;
    int epochs = (int)(budget / 3 / (per_epoch > 1e-6 ? per_epoch : 1e-6));
    if (epochs < 1) epochs = 1;
    double best = 1e30;
    for (int w = 0; w < 3; w++) { /* the best of three timed windows */
        o.epochs = epochs;
        t = now();
        CHECK(nnl_fit(m, x, 3, xs, y, NNL_FLOAT32, 3, xs, &o));
        double d = now() - t;
        if (d < best) best = d;
    }
    printf("nnlite-lstm %d %d %d %d %.2f\n", batch, steps, units, threads, (double)(nb * epochs) / best);
    nnl_model_free(m);
    free(x);
    free(y);
    return 0;
}
