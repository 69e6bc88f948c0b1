/* bench_gpu.c - GPU training throughput of one seed model in nnlite
   (bench/models.h), synthetic MNIST-shaped data, the model on cuda:0.

   usage: bench_gpu MODEL BATCH TF32(0|1) [SECONDS]
   prints one line: nnlite-gpu MODEL BATCH fp32|tf32 train_samples_per_s device */
#include "bench_common.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL BATCH TF32(0|1) [SECONDS]\n", argv[0]);
        return 2;
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
