/* gemm_bench.cpp - nnlite's SGEMM against OpenBLAS (Debian libopenblas-dev)
   on square row-major products C = A B, in the same process.

   usage: gemm_bench THREADS SIZE...
   SIZE: N (a square product) or MxNxK[:ab] (C[M,N] = op(A) op(B), depth K;
   a and b are n or t, whether A and B are transposed, default nn), e.g.
   the K-MLP step's products: 120x128x784 (forward), 784x128x120:tn (dW).
   prints per size: gemm SIZE THREADS nnlite_gflops openblas_gflops
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
    /* Every size with nnlite first, then every size with OpenBLAS: OpenBLAS's
       idle threads poll for a while after each call (sched_yield), and on
       two cores a thread of theirs still polling would take a core from
       nnlite's worker when the two libraries alternate size by size. */
    struct Size {
        long long m, n, k;
        bool at, bt;
        double t_nnl, t_blas;
    };
    std::vector<Size> sizes;
    for (int a = 2; a < argc; a++) {
        long long m = 0, n = 0, k = 0;
        char ta = 'n', tb = 'n';
        if (sscanf(argv[a], "%lldx%lldx%lld:%c%c", &m, &n, &k, &ta, &tb) < 3) m = n = k = atoll(argv[a]);
        if (m <= 0 || n <= 0 || k <= 0 || (ta != 'n' && ta != 't') || (tb != 'n' && tb != 't')) {
            fprintf(stderr, "gemm_bench: bad size '%s' (N or MxNxK[:ab], a and b n or t)\n", argv[a]);
            return 2;
        }
        sizes.push_back({m, n, k, ta == 't', tb == 't', 0, 0});
    }
    for (int lib = 0; lib < 2; lib++)
        for (Size &z : sizes) {
            long long m = z.m, n = z.n, k = z.k;
            bool at = z.at, bt = z.bt;
            std::vector<float> A((size_t)(m * k)), B((size_t)(k * n)), C((size_t)(m * n));
            int64_t lda = at ? m : k, ldb = bt ? k : n;
            nnl::Rng rng(1);
            for (auto &v : A) v = rng.uniform() - 0.5f;
            for (auto &v : B) v = rng.uniform() - 0.5f;
            double flops = 2.0 * m * n * k;
            int reps = flops <= 3e8 ? 200 : flops <= 3e9 ? 6 : 3;
            auto call = [&] {
                if (lib == 0)
                    nnl::K().sgemm(at, bt, m, n, k, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(), n);
                else
                    cblas_sgemm(CblasRowMajor, at ? CblasTrans : CblasNoTrans, bt ? CblasTrans : CblasNoTrans, (int)m,
                                (int)n, (int)k, 1.f, A.data(), (int)lda, B.data(), (int)ldb, 0.f, C.data(), (int)n);
            };
            /* a library's first calls start its threads, which the kernel
               may put on the caller's core for several milliseconds: untimed
               calls for 0.2 s before its first size */
            if (&z == &sizes[0])
                for (auto t0 = std::chrono::steady_clock::now();
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 0.2;)
                    call();
            (lib == 0 ? z.t_nnl : z.t_blas) = best_of(reps, call);
        }
    for (size_t i = 0; i < sizes.size(); i++) {
        const Size &z = sizes[i];
        double flops = 2.0 * z.m * z.n * z.k;
        printf("gemm %s %d %.1f %.1f\n", argv[i + 2], threads, flops / z.t_nnl / 1e9, flops / z.t_blas / 1e9);
    }
    return 0;
}
