/* Where a training step's GPU time goes: each kernel of R-LENET's step at
   batch 512 (the GEMMs of both convolutions and the dense layer, im2col,
   col2im, pooling, transposes), timed alone, FP32 and TF32. Not a test: it
   is skipped unless asked for,
       build-cuda/nnlite_gpu -tc='timing*' --no-skip
   and prints one line per kernel (microseconds a call, GFLOP/s for GEMMs),
   which scripts/device_check.sh keeps in its log. */
#include <chrono>

namespace gtime {

/* the median of 5 windows of `reps` calls, in microseconds a call */
template <class F> static double time_us(F f, int reps) {
    f();
    nnl_cuda::synchronize();
    std::vector<double> w;
    for (int k = 0; k < 5; k++) {
        auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; r++) f();
        nnl_cuda::synchronize();
        w.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps);
    }
    std::sort(w.begin(), w.end());
    return w[2];
}

static nnl::Window win2d(int64_t h, int64_t w, int64_t C, int64_t k, int64_t s, const char *pad) {
    nnl::Window g;
    g.C = C;
    g.in[1] = h;
    g.in[2] = w;
    g.k[1] = g.k[2] = k;
    g.s[1] = g.s[2] = s;
    nnl::window_outputs(g, 2, pad, "timing");
    return g;
}

} // namespace gtime

TEST_CASE("timing: R-LENET's kernels at batch 512" * doctest::skip()) {
    const int64_t B = 512;
    struct G { const char *what; bool ta, tb; int64_t M, N, K; };
    /* conv1 5x5x1 -> 20 on 28x28 ('same'), conv2 5x5x20 -> 50 on 14x14, dense 2450 -> 500 */
    const G gs[] = {{"conv1 forward", false, false, B * 784, 20, 25},
                    {"conv1 dW", true, false, 25, 20, B * 784},
                    {"conv2 forward", false, false, B * 196, 50, 500},
                    {"conv2 dW", true, false, 500, 50, B * 196},
                    {"conv2 dcol", false, true, B * 196, 500, 50},
                    {"dense1 forward", false, false, B, 500, 2450},
                    {"dense1 dW", true, false, 2450, 500, B},
                    {"dense1 dx", false, true, B, 2450, 500}};
    for (int tf32 = 0; tf32 < 2; tf32++) {
        nnl_cuda::Context *cx = gt::use(tf32 != 0);
        if (tf32 && !nnl_cuda::tf32_available(cx)) break;
        for (auto &g : gs) {
            int64_t ar = g.ta ? g.K : g.M, ac = g.ta ? g.M : g.K, br = g.tb ? g.N : g.K, bc = g.tb ? g.K : g.N;
            gt::Dev A(gt::rnd((size_t)(ar * ac), 1)), Bm(gt::rnd((size_t)(br * bc), 2)), Cm((size_t)(g.M * g.N));
            double us = gtime::time_us(
                [&] { nnl_cuda::sgemm(g.ta, g.tb, g.M, g.N, g.K, 1.f, A.d, ac, Bm.d, bc, 0.f, Cm.d, g.N); }, 20);
            printf("timing %s sgemm %-15s M=%-7lld N=%-5lld K=%-7lld %9.1f us %8.0f GFLOP/s\n", tf32 ? "tf32" : "fp32",
                   g.what, (long long)g.M, (long long)g.N, (long long)g.K, us, 2e-3 * g.M * g.N * g.K / us);
        }
    }
    gt::use(false);
    struct Wn { const char *what; nnl::Window g; };
    const Wn ws[] = {{"conv1", gtime::win2d(28, 28, 1, 5, 1, "same")}, {"conv2", gtime::win2d(14, 14, 20, 5, 1, "same")}};
    for (auto &w : ws) {
        const nnl::Window &g = w.g;
        int64_t S = g.in_size() * g.C, P = g.out_size(), R = g.kvol() * g.C;
        gt::Dev x(gt::rnd((size_t)(B * S), 3)), col((size_t)(B * P * R)), dx((size_t)(B * S));
        double a = gtime::time_us([&] { nnl_cuda::im2col(nnl::win(g), x.d, col.d, B); }, 20);
        double b = gtime::time_us([&] { nnl_cuda::col2im(nnl::win(g), col.d, dx.d, B); }, 20);
        printf("timing %s im2col %9.1f us (%.0f GB/s written), col2im %9.1f us\n", w.what, a,
               4e-3 * (double)(B * P * R) / a, b);
    }
    const Wn ps[] = {{"pool1", gtime::win2d(28, 28, 20, 2, 2, "valid")}, {"pool2", gtime::win2d(14, 14, 50, 2, 2, "valid")}};
    for (auto &w : ps) {
        const nnl::Window &g = w.g;
        int64_t S = g.in_size() * g.C, P = g.out_size() * g.C;
        gt::Dev x(gt::rnd((size_t)(B * S), 4)), y((size_t)(B * P)), arg((size_t)(B * P)), dx((size_t)(B * S));
        double f = gtime::time_us([&] { nnl_cuda::pool_forward(nnl::win(g), true, x.d, y.d, arg.d, B); }, 20);
        double bw = gtime::time_us([&] { nnl_cuda::pool_backward(nnl::win(g), true, y.d, arg.d, dx.d, B); }, 20);
        double t = gtime::time_us([&] { nnl_cuda::transpose(x.d, dx.d, B, g.C, g.in_size()); }, 20);
        printf("timing %s max forward %9.1f us, backward %9.1f us, transpose of its input %9.1f us\n", w.what, f, bw, t);
    }
    int64_t n = B * 196 * 50;
    gt::Dev y(gt::rnd((size_t)n, 5)), dy((size_t)n);
    std::vector<uint32_t> bits0((size_t)(n + 31) / 32);
    uint32_t *bits = (uint32_t *)nnl_cuda::dev_alloc(bits0.size() * 4);
    double r1 = gtime::time_us([&] { nnl_cuda::relu_bits(y.d, bits, n); }, 20);
    double r2 = gtime::time_us([&] { nnl_cuda::relu_bits_backward(bits, y.d, dy.d, n); }, 20);
    double bg = gtime::time_us([&] { nnl_cuda::bias_grad(y.d, dy.d, B * 196, 50); }, 20);
    printf("timing conv2 output (%lld values): relu_bits %9.1f us, relu_bits_backward %9.1f us, bias_grad %9.1f us\n",
           (long long)n, r1, r2, bg);
    nnl_cuda::dev_free(bits);
}
