/* gemm_bench.cpp - nnlite's SGEMM against OpenBLAS (Debian libopenblas-dev)
   on square row-major products C = A B, in the same process.

   usage: gemm_bench THREADS N...
   prints per size: gemm N THREADS nnlite_gflops openblas_gflops
   and once: blas fw=gemm core=NAME (the OpenBLAS kernels in use)
   Built by bench/run.sh; it compiles nnlite.cpp in to reach the kernel. */
#include "../nnlite.cpp"

#include <cblas.h>
#include <chrono>
#include <functional>

extern "C" void openblas_set_num_threads(int);
extern "C" char *openblas_get_corename(void);

static double best_of(int reps, const std::function<void()> &f) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        auto t0 = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS N...\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    nnl::g_threads = threads;
    openblas_set_num_threads(threads);
    printf("blas fw=gemm core=%s\n", openblas_get_corename());
    for (int a = 2; a < argc; a++) {
        int64_t n = atoll(argv[a]);
        std::vector<float> A((size_t)(n * n)), B((size_t)(n * n)), C((size_t)(n * n));
        nnl::Rng rng(1);
        for (auto &v : A) v = rng.uniform() - 0.5f;
        for (auto &v : B) v = rng.uniform() - 0.5f;
        int reps = n <= 512 ? 20 : n <= 1024 ? 6 : 3;
        double flops = 2.0 * n * n * n;
        double tn = best_of(reps, [&] {
            nnl::K().sgemm(false, false, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
        });
        double tb = best_of(reps, [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.f, A.data(), (int)n,
                        B.data(), (int)n, 0.f, C.data(), (int)n);
        });
        printf("gemm %lld %d %.1f %.1f\n", (long long)n, threads, flops / tn / 1e9, flops / tb / 1e9);
        fflush(stdout);
    }
    return 0;
}
