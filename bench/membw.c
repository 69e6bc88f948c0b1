/* membw.c - the memory-bandwidth floor of batch-1 inference: the best read
   bandwidth of a buffer the size of a model's weights, and the time one pass
   over those weights takes at that bandwidth. A batch-1 forward pass reads
   every weight once, so no batch-1 latency can be below this floor on this
   machine (K-MLP's 0.4 MB sit in L2; R-LENET's 5 MB, almost all its
   Dense(500) matrix, do not on most cores).

   build (after make lib; it reads the weight counts from nnlite):
       gcc -std=c99 -O3 -march=native -I. bench/membw.c build/libnnlite.a $(make -s print-libs) -lstdc++ \
           -o build/bench/membw
   usage: membw [--seconds S] [--threads T] [MODEL ...]
     S: about S seconds per model and thread count (default 0.5)
     T: also measure with 2..T threads, each reading its share of the buffer
        (default 1; bench/run.sh passes 2: nnlite's 2-thread latency splits a
        call's work over both cores, whose caches and bandwidth add up)
     MODEL: a model of bench/models.h (default kmlp rlenet); its weight bytes
        are 4 x nnl_param_count
   prints one line per model and thread count (key=value fields; bench/run.sh,
   bench/report.py read them):
       membw model=M threads=T bytes=N passes=R blocks=K best_gbs=X floor_us=Y
   best_gbs: the fastest block of R back-to-back read passes over a warm buffer
   (a float sum with independent accumulators: loads, no stores), over K blocks;
   floor_us = bytes / best_gbs. */
#include "bench_common.h"

#include <pthread.h>

#if defined(__GNUC__)
/* GCC/Clang vector extension: 8 independent accumulators of one vector
   register each keep the load ports busy without -ffast-math (each lane's sum
   keeps its order). The vector is the target's register width: a 64-byte
   vector without AVX-512 is two registers the compiler keeps on the stack
   (a store and a load per add), which measured 23 GB/s for K-MLP's weights
   on an AVX2 Zen 3 whose batch-1 nnl_predict reads them at 53 GB/s. */
#if defined(__AVX512F__)
typedef float vf __attribute__((vector_size(64)));
#define LANES 16
#elif defined(__AVX__)
typedef float vf __attribute__((vector_size(32)));
#define LANES 8
#else
typedef float vf __attribute__((vector_size(16)));
#define LANES 4
#endif
#define ACC 8
static float sum_pass(const float *p, size_t n) {
    vf a[ACC];
    const vf *v = (const vf *)p;
    size_t i, nv = n / LANES / ACC * ACC;
    int j;
    float s = 0.f;
    memset(a, 0, sizeof a);
    for (i = 0; i < nv; i += ACC)
        for (j = 0; j < ACC; j++) a[j] += v[i + j];
    for (i = nv * LANES; i < n; i++) s += p[i];
    for (j = 0; j < ACC; j++) {
        int l;
        for (l = 0; l < LANES; l++) s += a[j][l];
    }
    return s;
}
#else
static float sum_pass(const float *p, size_t n) {
    float a[128] = {0}, s = 0.f;
    size_t i;
    int j;
    for (i = 0; i + 128 <= n; i += 128)
        for (j = 0; j < 128; j++) a[j] += p[i + j];
    for (; i < n; i++) s += p[i];
    for (j = 0; j < 128; j++) s += a[j];
    return s;
}
#endif

/* One of T readers: `blocks` blocks of `passes` passes over its share, in
   step with the others (a barrier before and after each block); reader 0
   keeps the fastest block's time per pass. */
typedef struct {
    const float *p;
    size_t n;
    long passes, blocks;
    pthread_barrier_t *bar;
    int id;
    double best;
    float sink;
} reader;

static void *read_blocks(void *arg) {
    reader *r = (reader *)arg;
    long b, k;
    for (k = 0; k < 3 * r->passes; k++) r->sink += sum_pass(r->p, r->n); /* warm: into this core's caches */
    for (b = 0; b < r->blocks; b++) {
        pthread_barrier_wait(r->bar);
        double a = now();
        for (k = 0; k < r->passes; k++) r->sink += sum_pass(r->p, r->n);
        pthread_barrier_wait(r->bar);
        double t = (now() - a) / (double)r->passes;
        if (r->id == 0 && t < r->best) r->best = t;
    }
    return NULL;
}

int main(int argc, char **argv) {
    double secs = 0.5;
    int max_threads = 1;
    const char *names[16];
    int nn = 0, i;
    (void)train; /* bench_common.h's, unused here */
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads")) max_threads = bench_opt_int(argc, argv, &i, "--threads");
        else if (argv[i][0] == '-') {
            fprintf(stderr, "membw: unknown argument '%s'\n", argv[i]);
            return 2;
        } else if (nn < 16) names[nn++] = argv[i];
    }
    if (!nn) {
        names[nn++] = "kmlp";
        names[nn++] = "rlenet";
    }
    if (secs <= 0) secs = 0.5;
    if (max_threads > 16) max_threads = 16;
    CHECK(NNL_INIT());
    volatile float sink = 0.f;
    for (i = 0; i < nn; i++) {
        const bench_model *bm = find_model(names[i]);
        int l;
        if (!bm) {
            fprintf(stderr, "membw: unknown model %s\n", names[i]);
            return 2;
        }
        nnl_model *m = nnl_model_create();
        for (l = 0; bm->layers[l]; l++) CHECK(nnl_add(m, bm->layers[l]));
        size_t count = (size_t)nnl_param_count(m), bytes = 4 * count;
        nnl_model_free(m);
        float *buf = NULL;
        if (posix_memalign((void **)&buf, 64, bytes + 64) != 0) return 1;
        size_t k;
        for (k = 0; k < count; k++) buf[k] = (float)(k % 7) * 0.25f;
        /* a block: passes reading about 4 MB or more (one pass at least), so the
           clock's resolution does not matter */
        long passes = (long)((4u << 20) / bytes), blocks = 0, r;
        if (passes < 1) passes = 1;
        for (r = 0; r < 3 * passes; r++) sink += sum_pass(buf, count); /* warm: into the caches */
        double best = 1e30, t0 = now();
        while (now() - t0 < secs || blocks < 3) {
            double a = now();
            for (r = 0; r < passes; r++) sink += sum_pass(buf, count);
            double t = (now() - a) / (double)passes;
            if (t < best) best = t;
            blocks++;
        }
        printf("membw model=%s threads=1 bytes=%zu passes=%ld blocks=%ld best_gbs=%.1f floor_us=%.2f\n", bm->name,
               bytes, passes, blocks, (double)bytes / best / 1e9, 1e6 * best);
        fflush(stdout);
        /* T threads: as many blocks as one thread ran; shares split at
           512-byte boundaries (whole vector steps of sum_pass) */
        int T;
        for (T = 2; T <= max_threads; T++) {
            pthread_t th[16];
            reader rd[16];
            pthread_barrier_t bar;
            size_t at = 0, step = (count / (size_t)T) / 128 * 128;
            int j;
            pthread_barrier_init(&bar, NULL, (unsigned)T);
            for (j = 0; j < T; j++) {
                rd[j].p = buf + at;
                rd[j].n = j == T - 1 ? count - at : step;
                at += rd[j].n;
                rd[j].passes = passes;
                rd[j].blocks = blocks;
                rd[j].bar = &bar;
                rd[j].id = j;
                rd[j].best = 1e30;
                rd[j].sink = 0.f;
                if (j && pthread_create(&th[j], NULL, read_blocks, &rd[j]) != 0) {
                    fprintf(stderr, "membw: pthread_create failed\n");
                    return 1;
                }
            }
            read_blocks(&rd[0]);
            for (j = 1; j < T; j++) pthread_join(th[j], NULL);
            for (j = 0; j < T; j++) sink += rd[j].sink;
            pthread_barrier_destroy(&bar);
            printf("membw model=%s threads=%d bytes=%zu passes=%ld blocks=%ld best_gbs=%.1f floor_us=%.2f\n",
                   bm->name, T, bytes, passes, blocks, (double)bytes / rd[0].best / 1e9, 1e6 * rd[0].best);
            fflush(stdout);
        }
        free(buf);
    }
    return 0;
}
