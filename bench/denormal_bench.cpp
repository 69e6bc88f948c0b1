/* denormal_bench.cpp - does training keep its speed when Adam's state decays
   into the denormal range? Used by bench/busy_core.sh; compiles nnlite.cpp
   in (as gemm_bench.cpp does) to count denormals in the optimizer's slots.

   How the state gets there: K-MLP (bench/models.h, Adam) first trains a few
   steps on synthetic data whose 784 features are all live, so every
   first-layer weight gets a nonzero Adam moment m. Then the first half of the
   features is set to 0 for good (like the always-blank border pixels of
   MNIST, or dead ReLU units): those weights' gradients are exactly 0, and
   Adam's update m += (0 - m)(1 - beta_1) multiplies their m by 0.9 every
   step. From about 1e-3, m crosses into the denormal range (below 1.2e-38)
   after about 750 steps, and stays there: once m is below 5 units of the
   smallest denormal, m * 0.1 rounds to 0 and m stops decaying. That is half
   of the first layer's moments (50,176 values) denormal in every later step,
   each operation on them a microcode assist on Intel CPUs. With flush-to-zero
   they become 0 instead.

   Two models train in lockstep on the same data, window by window: one
   called from the caller's ordinary environment, the other with FTZ/DAZ
   forced by the caller around its nnl_fit calls (as one would from outside).
   nnlite itself flushes denormals, so the two must run at the same speed;
   built with -DNNL_KEEP_DENORMALS (nnlite computing in the caller's
   environment, as before 0.2) the first one shows the denormals.

   usage: denormal_bench [STEPS] [THREADS]     (default 1500 steps, 1 thread)
   prints one line per window of 100 steps:
     denormal STEP sps_plain sps_forced denormal_m_plain denormal_v_plain denormal_m_forced denormal_v_forced */
#include "../nnlite.cpp"

#include <chrono>
#include <cstdio>
#include <vector>

#include "models.h"

#if NNL_X86
#include <xmmintrin.h>
static unsigned forced_csr() { return _mm_getcsr() | 0x8040u; }
static unsigned get_csr() { return _mm_getcsr(); }
static void set_csr(unsigned c) { _mm_setcsr(c); }
#else
static unsigned forced_csr() { return 0; }
static unsigned get_csr() { return 0; }
static void set_csr(unsigned) {}
#endif

static void check(int rc) {
    if (rc != NNL_OK) {
        fprintf(stderr, "denormal_bench: %s\n", nnl_last_error());
        exit(1);
    }
}

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/* Denormal values in Adam's first (m) and second (v) moment slots. */
static void count_denormals(nnl_model *m, long long *dm, long long *dv) {
    *dm = *dv = 0;
    auto &slots = m->opt->slots;
    for (size_t k = 0; k < slots.size() && k < 2; k++)
        for (float x : slots[k]) (k == 0 ? *dm : *dv) += std::fpclassify(x) == FP_SUBNORMAL;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 1500, threads = argc > 2 ? atoi(argv[2]) : 1;
    check(nnl_set_threads(threads));
    const bench_model *bm = &bench_models[0]; /* kmlp */
    const int batch = 120, nb = 50, feat = 784;
    const int64_t n = (int64_t)nb * batch;
    std::vector<float> x((size_t)(n * feat));
    std::vector<int64_t> y((size_t)n);
    srand(7);
    for (auto &v : x) v = (float)rand() / ((float)RAND_MAX + 1.f);
    for (auto &v : y) v = rand() % 10;

    nnl_model *model[2];
    for (int k = 0; k < 2; k++) {
        model[k] = nnl_model_create();
        check(nnl_model_set_seed(model[k], 1));
        for (int i = 0; bm->layers[i]; i++) check(nnl_add(model[k], bm->layers[i]));
        check(nnl_compile(model[k], bm->optimizer, bm->loss, "accuracy"));
    }
    int64_t xs[3] = {n, 28, 28}, ys[1] = {n};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.batch_size = batch;
    o.verbose = 0;
    o.epochs = 1;
    const unsigned plain = get_csr(), forced = forced_csr();
    auto fit = [&](int k) {
        set_csr(k ? forced : plain);
        double t = now_s();
        check(nnl_fit(model[k], x.data(), 3, xs, y.data(), NNL_INT64, 1, ys, &o));
        t = now_s() - t;
        set_csr(plain);
        return t;
    };
    /* every feature live for one epoch (50 steps), then half of them dead */
    for (int k = 0; k < 2; k++) fit(k);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < feat / 2; j++) x[(size_t)(i * feat + j)] = 0.f;
    for (int step = 0; step < steps; step += 2 * nb) {
        double t[2] = {0, 0};
        for (int rep = 0; rep < 2; rep++) /* 100 steps a window; the two models alternate, in both orders */
            for (int j = 0; j < 2; j++) {
                int k = rep ? 1 - j : j;
                t[k] += fit(k);
            }
        long long d[4];
        count_denormals(model[0], &d[0], &d[1]);
        count_denormals(model[1], &d[2], &d[3]);
        printf("denormal %d %.1f %.1f %lld %lld %lld %lld\n", step + 2 * nb, 2.0 * n / t[0], 2.0 * n / t[1], d[0], d[1],
               d[2], d[3]);
        fflush(stdout);
    }
    for (auto *m : model) nnl_model_free(m);
    return 0;
}
