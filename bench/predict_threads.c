/* predict_threads.c - predictions per second of ONE shared model called
   from 1, 2 and 4 threads at once (nnl_predict's concurrent calls, since
   0.5), as a simulation's OpenMP loop calls it: a 784-512-512-10 MLP
   (Keras' mnist_mlp without its Dropout), batches of 1 and of 16.

   build (after make lib):
       gcc -std=c99 -O2 -I. bench/predict_threads.c build/libnnlite.a $(make -s print-libs) -lstdc++ \
           -o build/predict_threads
   usage: build/predict_threads [SECONDS_PER_SETTING [POOL_THREADS]]
     SECONDS_PER_SETTING  default 2
     POOL_THREADS         nnl_set_threads before the runs (default: not called,
                          i.e. NNL_NUM_THREADS, OMP_NUM_THREADS or all cores);
                          bench/run.sh passes 1, so that the 1-thread figure is
                          one core and T threads / 1 thread is the callers' scaling
   prints one line per setting (key=value fields; bench/run.sh and
   bench/report.py read them):
       pthreads fw=nnlite model=mlp512 batch=B threads=T pool=P seconds=S predictions_per_s=X per_thread=Y
   Every thread predicts its own slice of the samples; the model's pool
   threads (nnl_set_threads) serve a call only while it runs alone on the
   model. Run it on an otherwise idle machine; threads beyond the cores
   (4 on a 2-core machine) oversubscribe them. */
#include "bench_common.h"

#include <pthread.h>

#define N_SAMPLES 1024
#define FEATURES 784
#define CLASSES 10

typedef struct {
    nnl_model *m;
    const float *x;
    int batch, index;
    double until;
    long long predictions;
    int failed;
} worker;

static void *run(void *arg) {
    worker *w = (worker *)arg;
    float out[16 * CLASSES];
    int64_t shape[2] = {w->batch, FEATURES};
    int64_t s = ((int64_t)w->index * 97) % (N_SAMPLES - w->batch);
    while (now() < w->until) {
        if (nnl_predict(w->m, w->x + s * FEATURES, 2, shape, w->batch, out, w->batch * CLASSES) != NNL_OK) {
            w->failed = 1;
            fprintf(stderr, "thread %d: %s\n", w->index, nnl_last_error());
            return NULL;
        }
        w->predictions += w->batch;
        s = (s + w->batch) % (N_SAMPLES - w->batch);
    }
    return NULL;
}

/* T threads for secs seconds; predictions per second in all. */
static double measure(nnl_model *m, const float *x, int batch, int T, double secs) {
    pthread_t th[4];
    worker w[4];
    double t0 = now(), total = 0;
    int i;
    for (i = 0; i < T; i++) {
        w[i].m = m;
        w[i].x = x;
        w[i].batch = batch;
        w[i].index = i;
        w[i].until = t0 + secs;
        w[i].predictions = 0;
        w[i].failed = 0;
        if (pthread_create(&th[i], NULL, run, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(1);
        }
    }
    for (i = 0; i < T; i++) pthread_join(th[i], NULL);
    double dt = now() - t0;
    for (i = 0; i < T; i++) {
        if (w[i].failed) exit(1);
        total += (double)w[i].predictions;
    }
    return total / dt;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int pool = argc > 2 ? atoi(argv[2]) : 0;
    static const int batches[2] = {1, 16}, threads[3] = {1, 2, 4};
    int b, t, i;
    if (secs <= 0) secs = 2.0;
    (void)find_model; /* bench_common.h's, unused here */
    (void)train;
    CHECK(NNL_INIT());
    if (pool > 0) CHECK(nnl_set_threads(pool));
    nnl_model *m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    CHECK(nnl_add(m, "Dense(512, activation='relu', input_shape=(784,))"));
    CHECK(nnl_add(m, "Dense(512, activation='relu')"));
    CHECK(nnl_add(m, "Dense(10, activation='softmax')"));
    float *x = (float *)malloc(sizeof(float) * N_SAMPLES * FEATURES);
    if (!x) return 1;
    srand(7);
    for (i = 0; i < N_SAMPLES * FEATURES; i++) x[i] = (float)rand() / ((float)RAND_MAX + 1.f);
    pool = nnl_get_threads();
    for (b = 0; b < 2; b++)
        for (t = 0; t < 3; t++) {
            measure(m, x, batches[b], threads[t], secs / 10); /* warm: the workspaces for T threads */
            double p = measure(m, x, batches[b], threads[t], secs);
            printf("pthreads fw=nnlite model=mlp512 batch=%d threads=%d pool=%d seconds=%.2f predictions_per_s=%.0f "
                   "per_thread=%.0f\n", batches[b], threads[t], pool, secs, p, p / threads[t]);
            fflush(stdout);
        }
    nnl_model_free(m);
    free(x);
    return 0;
}
