/* opt_bench.cpp - the optimizer update of a model of N parameters (default
   1M, one tensor) against the memory bandwidth measured in the same run.

   usage: opt_bench [N] [THREADS] [SECONDS]
     g++ -std=c++17 -O2 -fopenmp bench/opt_bench.cpp -o build/opt_bench
   It compiles nnlite.cpp in (as gemm_bench does) to set the SIMD level.
   bench/run.sh runs it for RESULTS.md.

   Per optimizer it counts the bytes the rule must move per step (each
   array it reads once and each it writes once, 4 bytes per parameter:
   Adam reads w, g, m, v and writes w, m, v, 28 bytes) and times two
   references moving the same bytes: memcpy, and a plain loop over the
   same arrays (w += g, m += g, ...: vectorised by the compiler, no
   arithmetic to speak of). Then per SIMD path (plain C++, AVX2, AVX-512)
   the step time, and the rate as a fraction of each reference: near 1 is
   an update at memory (for arrays that fit, L3) bandwidth. Times are the
   best of 5 windows; on a shared machine compare ratios within one run.
   Lines:
     optref RULE THREADS memcpy_GB/s loop_GB/s
     opt RULE THREADS PATH ms_per_step GB/s fraction_of_memcpy fraction_of_loop */
#include "../nnlite.cpp"

#include <chrono>

/* w += g and each slot += g over [lo, hi): the arrays of a rule with S slots */
template <int S> static void touch(float *w, const float *g, float *const *s, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float gi = g[i];
        w[i] += gi;
        for (int k = 0; k < S; k++) s[k][i] += gi;
    }
}

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/* seconds per call of f: the best of 5 windows of `secs` / 5 each */
template <class F> static double per_call(double secs, F f) {
    f(); /* warm: pages touched, slots laid out */
    double best = 1e30;
    for (int w = 0; w < 5; w++) {
        int64_t calls = 0;
        double t0 = now(), t;
        do {
            f();
            calls++;
        } while ((t = now()) - t0 < secs / 5);
        best = std::min(best, (t - t0) / (double)calls);
    }
    return best;
}

int main(int argc, char **argv) {
    int64_t n = argc > 1 ? atoll(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    double secs = argc > 3 ? atof(argv[3]) : 1.0;
    nnl::g_threads = threads;
    const int top = nnl::simd::level;
    const char *isa[] = {"plain", "avx2", "avx512"};
    std::vector<float> w((size_t)n), g((size_t)n);
    nnl::Rng rng(1);
    for (int64_t i = 0; i < n; i++) {
        w[(size_t)i] = (float)rng.uniform() - 0.5f;
        g[(size_t)i] = 1e-3f * ((float)rng.uniform() - 0.5f);
    }
    printf("# opt_bench: %lld parameters, %d thread(s), SIMD up to %s\n", (long long)n, threads, isa[top]);
    struct {
        const char *name;
        int arrays_read, arrays_written;
    } rules[] = {{"SGD", 2, 1},      {"SGD(momentum=0.9)", 3, 2}, {"RMSprop", 3, 2},  {"Adagrad", 3, 2},
                 {"Adadelta", 4, 3}, {"Adam", 4, 3},              {"AdamW", 4, 3},    {"Adamax", 4, 3},
                 {"Nadam", 4, 3},    {"Adam(amsgrad=True)", 5, 4}};
    for (auto &r : rules) {
        double bytes = 4.0 * n * (r.arrays_read + r.arrays_written);
        /* memcpy moving the same bytes: bytes/2 read, bytes/2 written */
        size_t half = (size_t)(bytes / 2);
        std::vector<char> src(half, 1), dst(half);
        double t_copy = per_call(secs, [&] { memcpy(dst.data(), src.data(), half); });
        /* the same arrays, read and written, with trivial arithmetic */
        int ns = r.arrays_read - 2; /* slots */
        std::vector<std::vector<float>> slot((size_t)ns, std::vector<float>((size_t)n, 0.f));
        float *sp[3] = {nullptr, nullptr, nullptr};
        for (int k = 0; k < ns; k++) sp[k] = slot[(size_t)k].data();
        double t_loop = per_call(secs, [&] {
            nnl::par_for(n, 4 * n, [&](int64_t lo, int64_t hi) {
                switch (ns) {
                case 0: return touch<0>(w.data(), g.data(), sp, lo, hi);
                case 1: return touch<1>(w.data(), g.data(), sp, lo, hi);
                case 2: return touch<2>(w.data(), g.data(), sp, lo, hi);
                default: return touch<3>(w.data(), g.data(), sp, lo, hi);
                }
            });
        });
        printf("optref %s %d %.2f %.2f\n", r.name, threads, bytes / t_copy / 1e9, bytes / t_loop / 1e9);
        for (int L = 0; L <= top; L++) {
            nnl::simd::level = L;
            std::unique_ptr<nnl::Optimizer> opt = nnl::make_optimizer(r.name);
            nnl::ParamSlice p{w.data(), g.data(), n};
            double t = per_call(secs, [&] { opt->apply(&p, 1); });
            printf("opt %s %d %s %.3f %.2f %.2f %.2f\n", r.name, threads, isa[L], t * 1e3, bytes / t / 1e9, t_copy / t,
                   t_loop / t);
        }
        nnl::simd::level = top;
        fflush(stdout);
    }
    return 0;
}
