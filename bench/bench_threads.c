/* bench_threads.c - training throughput of one seed model under several
   thread settings, interleaved in one process (so that a change in the
   machine's load touches every setting alike); used by bench/busy_core.sh.

   usage: bench_threads MODEL BATCH ROUNDS WINDOW_S THREADS...
          (THREADS: 0 = the library's default, n = nnl_set_threads(n))
   prints one line per timed window:
          window MODEL BATCH THREADS ROUND samples_per_s
   and nothing else on stdout. */
#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL BATCH ROUNDS WINDOW_S THREADS...\n", argv[0]);
        return 2;
    }
    const bench_model *bm = find_model(argv[1]);
    if (!bm) {
        fprintf(stderr, "unknown model %s\n", argv[1]);
        return 2;
    }
    int batch = atoi(argv[2]), rounds = atoi(argv[3]), nset = argc - 5, i, r, k;
    double window = atof(argv[4]);
    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    for (i = 0; bm->layers[i]; i++) CHECK(nnl_add(m, bm->layers[i]));
    CHECK(nnl_compile(m, bm->optimizer, bm->loss, "accuracy"));

    /* synthetic data as bench_nnlite.c: 20 batches, values in [0, 1) */
    int64_t per[3], feat = 1, nb = 20, n;
    for (i = 0; i < bm->rank; i++) feat *= (per[i] = bm->shape[i]);
    n = nb * batch;
    float *x = (float *)malloc(sizeof(float) * (size_t)(n * feat));
    int64_t *y = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    if (!x || !y) return 1;
    srand(7);
    for (i = 0; i < n * feat; i++) x[i] = (float)rand() / ((float)RAND_MAX + 1.f);
    for (i = 0; i < n; i++) y[i] = rand() % 10;

    /* warm up every setting (pool start, arena sizing), then size the windows
       on one thread: whole batches, at least one */
    for (k = 0; k < nset; k++) {
        CHECK(nnl_set_threads(atoi(argv[5 + k])));
        train(m, x, y, bm->rank, per, 2, batch, 1);
    }
    CHECK(nnl_set_threads(1));
    double tb = train(m, x, y, bm->rank, per, 4, batch, 1) / 4;
    int64_t want = (int64_t)(window / (tb > 1e-6 ? tb : 1e-6) + 0.5), steps, epochs;
    if (want < 1) want = 1;
    steps = want < nb ? want : nb;
    epochs = (want + steps - 1) / steps;
    for (r = 0; r < rounds; r++)
        for (k = 0; k < nset; k++) {
            int th = atoi(argv[5 + k]);
            CHECK(nnl_set_threads(th));
            double t = train(m, x, y, bm->rank, per, steps, batch, (int)epochs);
            printf("window %s %d %d %d %.1f\n", bm->name, batch, th, r, (double)(steps * batch * epochs) / t);
            fflush(stdout);
        }
    nnl_model_free(m);
    free(x);
    free(y);
    return 0;
}
