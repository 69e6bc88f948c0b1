/* Every CUDA kernel against the CPU kernel table (nnl::cpu_kernels): random
   inputs, device outputs poisoned with NaN first (an element the kernel
   fails to write shows up as a mismatch), relative error bounds for float32
   and, for the GEMMs, TF32. */
#include <cmath>
#include <vector>

namespace gt {

struct Device {
    nnl_cuda::Context *c = nullptr;
    Device() {
        nnl_cuda::set_error_handler(nnl::cuda_raise);
        c = nnl_cuda::context_create(0);
    }
};
static nnl_cuda::Context *use(bool tf32 = false) {
    static Device d;
    nnl_cuda::context_use(d.c);
    nnl_cuda::set_tf32(d.c, tf32);
    return d.c;
}

static std::vector<float> rnd(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
    nnl::Rng r(seed);
    std::vector<float> v(n);
    for (auto &x : v) x = lo + (hi - lo) * (float)r.uniform();
    return v;
}

/* a device array, NaN-poisoned unless given values */
struct Dev {
    float *d = nullptr;
    size_t n = 0;
    explicit Dev(size_t n_) : n(n_) {
        d = (float *)nnl_cuda::dev_alloc(std::max<size_t>(n, 1) * sizeof(float));
        std::vector<float> p(n, NAN);
        nnl_cuda::upload(d, p.data(), n * sizeof(float));
    }
    explicit Dev(const std::vector<float> &v) : Dev(v.size()) { nnl_cuda::upload(d, v.data(), n * sizeof(float)); }
    ~Dev() { nnl_cuda::dev_free(d); }
    Dev(const Dev &) = delete;
    Dev &operator=(const Dev &) = delete;
    std::vector<float> get() const {
        std::vector<float> v(n);
        nnl_cuda::download(v.data(), d, n * sizeof(float));
        return v;
    }
    int32_t *i32() const { return reinterpret_cast<int32_t *>(d); }
};

/* |gpu - cpu| <= atol + rtol |cpu| everywhere (NaN anywhere fails) */
static void close(const std::vector<float> &g, const std::vector<float> &c, double rtol, double atol,
                  const std::string &what) {
    REQUIRE(g.size() == c.size());
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < g.size(); i++) {
        double e = std::fabs((double)g[i] - c[i]);
        bool ok = e <= atol + rtol * std::fabs((double)c[i]);
        if (!ok && !bad) first = i;
        bad += !ok;
        if (std::isfinite(e)) worst = std::max(worst, e);
    }
    INFO(what << ": " << bad << " of " << g.size() << " differ; first at " << first << " (gpu "
              << (g.empty() ? 0 : g[first]) << ", cpu " << (c.empty() ? 0 : c[first]) << "); worst abs error "
              << worst);
    CHECK(bad == 0);
}

static const nnl::Kernels &C() { return nnl::cpu_kernels; }

} // namespace gt

TEST_CASE("sgemm: FP32 and TF32 against the CPU, every transpose, alpha/beta, odd sizes, padded strides") {
    for (int tf32 = 0; tf32 < 2; tf32++) {
        nnl_cuda::Context *cx = gt::use(tf32 != 0);
        if (tf32 && !nnl_cuda::tf32_available(cx)) {
            MESSAGE("TF32 path not tested: compute capability below 8.0");
            continue;
        }
        double rtol = tf32 ? 2e-2 : 1e-4, atol = tf32 ? 2e-2 : 1e-4;
        /* the last two are split along K (few output tiles, deep K: a weight gradient) */
        const int64_t shapes[][3] = {{67, 45, 129}, {1, 10, 784}, {512, 128, 784}, {130, 3, 5},
                                     {64, 64, 16},  {25, 20, 20000}, {500, 50, 6001}};
        for (auto &sh : shapes)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int bcase = 0; bcase < 2; bcase++) {
                        int64_t M = sh[0], N = sh[1], K = sh[2];
                        int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                        float alpha = bcase ? 0.75f : 1.f, beta = bcase ? 0.5f : 0.f;
                        auto A = gt::rnd((size_t)((ta ? K : M) * lda), 1 + M + ta);
                        auto B = gt::rnd((size_t)((tb ? N : K) * ldb), 2 + N + tb);
                        auto Cc = gt::rnd((size_t)(M * ldc), 3);
                        gt::Dev dA(A), dB(B), dC(Cc.size());
                        if (beta != 0) nnl_cuda::upload(dC.d, Cc.data(), Cc.size() * 4);
                        std::vector<float> ref = Cc;
                        gt::C().sgemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
                        nnl_cuda::sgemm(ta, tb, M, N, K, alpha, dA.d, lda, dB.d, ldb, beta, dC.d, ldc);
                        auto got = dC.get();
                        /* only the M x N block is written: compare it */
                        std::vector<float> g, c;
                        for (int64_t i = 0; i < M; i++)
                            for (int64_t j = 0; j < N; j++) {
                                g.push_back(got[(size_t)(i * ldc + j)]);
                                c.push_back(ref[(size_t)(i * ldc + j)]);
                            }
                        gt::close(g, c, rtol, atol * std::sqrt((double)K),
                                  std::string("sgemm") + (tf32 ? " tf32" : " fp32") +
                                      " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                                      std::to_string(K) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                                      " beta=" + std::to_string(beta));
                    }
    }
    gt::use(false);
}

TEST_CASE("sgemm_bias_act: bias and every activation but softmax in the epilogue") {
    gt::use(false);
    for (int64_t K : {50, 3000}) { /* 3000: split along K, the epilogue in the reduction */
        int64_t M = 77, N = 33;
        auto A = gt::rnd((size_t)(M * K), 11), B = gt::rnd((size_t)(K * N), 12), b = gt::rnd((size_t)N, 13);
        gt::Dev dA(A), dB(B), db(b);
        for (int a = 0; a < nnl::ACT_COUNT; a++) {
            if (a == nnl::ACT_SOFTMAX) continue;
            for (int withb = 0; withb < 2; withb++) {
                std::vector<float> ref((size_t)(M * N));
                gt::Dev dC(ref.size());
                gt::C().sgemm_bias_act(M, N, K, A.data(), K, B.data(), N, ref.data(), N, withb ? b.data() : nullptr,
                                       (nnl::Act)a);
                nnl_cuda::sgemm_bias_act(M, N, K, dA.d, K, dB.d, N, dC.d, N, withb ? db.d : nullptr, a);
                gt::close(dC.get(), ref, 1e-4, 1e-4 * std::sqrt(K / 50.0),
                          std::string("sgemm_bias_act ") + nnl::act_names[a] + " K=" + std::to_string(K));
            }
        }
    }
}

TEST_CASE("activations forward and backward, softmax over rows") {
    gt::use(false);
    int64_t rows = 37, n = 129;
    auto x = gt::rnd((size_t)(rows * n), 21, -4.f, 4.f), dy = gt::rnd(x.size(), 22);
    gt::Dev dx_(x), ddy(dy);
    for (int a = 0; a < nnl::ACT_COUNT; a++) {
        int64_t r = a == nnl::ACT_SOFTMAX ? rows : 1, c = a == nnl::ACT_SOFTMAX ? n : rows * n;
        std::vector<float> y(x.size()), dxr(x.size());
        gt::Dev dy_(x.size()), ddx(x.size());
        gt::C().act_forward((nnl::Act)a, x.data(), y.data(), r, c);
        nnl_cuda::act_forward(a, dx_.d, dy_.d, r, c);
        auto gy = dy_.get();
        gt::close(gy, y, 1e-5, 1e-6, std::string("act_forward ") + nnl::act_names[a]);
        gt::C().act_backward((nnl::Act)a, x.data(), y.data(), dy.data(), dxr.data(), r, c);
        gt::Dev dyy(y);
        nnl_cuda::act_backward(a, dx_.d, dyy.d, ddy.d, ddx.d, r, c);
        gt::close(ddx.get(), dxr, 1e-5, 1e-6, std::string("act_backward ") + nnl::act_names[a]);
    }
}

TEST_CASE("dropout: the GPU's masks are the CPU's, bit for bit; mul, copy, bias") {
    gt::use(false);
    int64_t n = 100003;
    auto x = gt::rnd((size_t)n, 31);
    gt::Dev dx_(x), dy_((size_t)n), dm((size_t)n);
    std::vector<float> y((size_t)n), m((size_t)n);
    gt::C().dropout_forward(x.data(), y.data(), m.data(), n, 0.3f, 0x1234567ull, 0x89abull);
    nnl_cuda::dropout_forward(dx_.d, dy_.d, dm.d, n, 0.3f, 0x1234567ull, 0x89abull);
    CHECK(dm.get() == m);
    CHECK(dy_.get() == y);
    std::vector<float> p((size_t)n);
    gt::Dev dp((size_t)n), dc((size_t)n);
    gt::C().mul(x.data(), m.data(), p.data(), n);
    nnl_cuda::mul(dx_.d, dm.d, dp.d, n);
    CHECK(dp.get() == p);
    nnl_cuda::copy(dx_.d, dc.d, n);
    CHECK(dc.get() == x);
    int64_t rows = 301, cols = 17;
    auto yb = gt::rnd((size_t)(rows * cols), 32), b = gt::rnd((size_t)cols, 33);
    gt::Dev dyb(yb), db(b), dg((size_t)cols);
    gt::C().bias_add(yb.data(), b.data(), rows, cols);
    nnl_cuda::bias_add(dyb.d, db.d, rows, cols);
    gt::close(dyb.get(), yb, 1e-6, 1e-6, "bias_add");
    std::vector<float> g((size_t)cols);
    gt::C().bias_grad(yb.data(), g.data(), rows, cols);
    nnl_cuda::bias_grad(dyb.d, dg.d, rows, cols);
    gt::close(dg.get(), g, 1e-5, 1e-5, "bias_grad");
}

TEST_CASE("ReLU bits: the GPU's bits and gradient are the CPU's, bit for bit") {
    gt::use(false);
    for (int64_t n : {1, 33, 100003}) {
        auto y = gt::rnd((size_t)n, 34), dy = gt::rnd((size_t)n, 35);
        for (int64_t i = 0; i < n; i += 9) y[(size_t)i] = 0.f;
        gt::Dev d_y(y), d_dy(dy), dbits((size_t)((n + 31) / 32)), ddx((size_t)n);
        std::vector<uint32_t> bits((size_t)((n + 31) / 32));
        std::vector<float> dx((size_t)n);
        gt::C().relu_bits(y.data(), bits.data(), n);
        gt::C().relu_bits_backward(bits.data(), dy.data(), dx.data(), n);
        nnl_cuda::relu_bits(d_y.d, reinterpret_cast<uint32_t *>(dbits.d), n);
        nnl_cuda::relu_bits_backward(reinterpret_cast<const uint32_t *>(dbits.d), d_dy.d, ddx.d, n);
        auto gb = dbits.get();
        CHECK(std::memcmp(gb.data(), bits.data(), bits.size() * sizeof(uint32_t)) == 0);
        auto gdx = ddx.get();
        CHECK(std::memcmp(gdx.data(), dx.data(), dx.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("sumsq and its finite flag") {
    gt::use(false);
    auto x = gt::rnd(1000001, 41);
    gt::Dev d(x);
    bool f1 = false, f2 = false;
    double c = gt::C().sumsq(x.data(), (int64_t)x.size(), &f1), g = nnl_cuda::sumsq(d.d, (int64_t)x.size(), &f2);
    CHECK(f1);
    CHECK(f2);
    CHECK(std::fabs(g - c) <= 1e-5 * c);
    x[777] = NAN;
    gt::Dev dn(x);
    nnl_cuda::sumsq(dn.d, (int64_t)x.size(), &f2);
    CHECK(!f2);
    x[777] = INFINITY;
    gt::Dev di(x);
    nnl_cuda::sumsq(di.d, (int64_t)x.size(), &f2);
    CHECK(!f2);
}

/* windows of several kinds: 1-D, 2-D, 3-D, strides, dilation, same/valid */
static std::vector<nnl::Window> test_windows() {
    std::vector<nnl::Window> v;
    struct W { int nd; int64_t in[3], C, k[3], s[3], d[3]; const char *pad; };
    const W ws[] = {{2, {1, 28, 28}, 1, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "same"},
                    {2, {1, 14, 14}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 9, 11}, 3, {1, 3, 3}, {1, 2, 2}, {1, 1, 1}, "same"},
                    {2, {1, 12, 12}, 4, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}, "valid"},
                    {1, {1, 1, 50}, 6, {1, 1, 7}, {1, 1, 3}, {1, 1, 1}, "causal"},
                    {3, {5, 6, 7}, 2, {3, 2, 3}, {1, 2, 1}, {1, 1, 1}, "same"},
                    /* windows that do not overlap (max pooling's backward scatters there) */
                    {2, {1, 9, 11}, 5, {1, 2, 2}, {1, 2, 2}, {1, 1, 1}, "valid"},
                    {3, {4, 6, 5}, 3, {2, 2, 2}, {2, 2, 3}, {1, 1, 1}, "same"},
                    /* 256 and 288 taps: max pooling keeps four-byte taps (pool_arg_bytes) */
                    {2, {1, 20, 20}, 2, {1, 16, 16}, {1, 4, 4}, {1, 1, 1}, "valid"},
                    {2, {1, 24, 36}, 2, {1, 12, 24}, {1, 12, 12}, {1, 1, 1}, "same"}};
    for (auto &w : ws) {
        nnl::Window g;
        g.C = w.C;
        for (int i = 0; i < 3; i++) {
            g.in[i] = w.in[i];
            g.k[i] = w.k[i];
            g.s[i] = w.s[i];
            g.d[i] = w.d[i];
        }
        nnl::window_outputs(g, w.nd, w.pad, "test");
        v.push_back(g);
    }
    return v;
}

TEST_CASE("im2col, col2im, transpose") {
    gt::use(false);
    int64_t n = 3;
    for (auto &g : test_windows()) {
        int64_t row = g.kvol() * g.C, P = g.out_size(), S = g.in_size() * g.C;
        auto x = gt::rnd((size_t)(n * S), 51);
        gt::Dev dx_(x), dcol((size_t)(n * P * row)), ddx((size_t)(n * S));
        std::vector<float> col((size_t)(n * P * row)), dx((size_t)(n * S));
        gt::C().im2col(g, x.data(), col.data(), n);
        nnl_cuda::im2col(nnl::win(g), dx_.d, dcol.d, n);
        CHECK(dcol.get() == col); /* a copy: exact */
        auto c2 = gt::rnd(col.size(), 52);
        gt::Dev dc2(c2);
        gt::C().col2im(g, c2.data(), dx.data(), n);
        nnl_cuda::col2im(nnl::win(g), dc2.d, ddx.d, n);
        gt::close(ddx.get(), dx, 1e-5, 1e-5, "col2im");
    }
    int64_t b = 5, R = 67, Cc = 33;
    auto x = gt::rnd((size_t)(b * R * Cc), 53);
    std::vector<float> y(x.size());
    gt::Dev dx_(x), dy_(x.size());
    gt::C().transpose(x.data(), y.data(), b, R, Cc);
    nnl_cuda::transpose(dx_.d, dy_.d, b, R, Cc);
    CHECK(dy_.get() == y);
}

TEST_CASE("max and average pooling, forward and backward") {
    gt::use(false);
    int64_t n = 4;
    for (auto &g : test_windows())
        for (int max = 0; max < 2; max++) {
            int64_t P = g.out_size(), S = g.in_size() * g.C;
            auto x = gt::rnd((size_t)(n * S), 61);
            auto dy = gt::rnd((size_t)(n * P * g.C), 62);
            std::vector<float> y((size_t)(n * P * g.C)), dx((size_t)(n * S));
            /* the taps chosen: pool_arg_bytes(g) bytes each (room for four) */
            size_t arg_bytes = (size_t)(n * P * g.C) * (size_t)nnl::pool_arg_bytes(g);
            std::vector<uint32_t> arg((size_t)(n * P * g.C));
            gt::Dev dx_(x), ddy(dy), dy_(y.size()), darg(arg.size()), ddx(dx.size());
            gt::C().pool_forward(g, max, x.data(), y.data(), arg.data(), n);
            nnl_cuda::pool_forward(nnl::win(g), max, dx_.d, dy_.d, max ? (void *)darg.d : nullptr, n);
            gt::close(dy_.get(), y, 1e-6, 1e-6, max ? "max pool forward" : "average pool forward");
            if (max) {
                CHECK(nnl::pool_arg_bytes(g) == nnl_cuda::pool_arg_bytes(nnl::win(g)));
                std::vector<uint32_t> ga(arg.size());
                nnl_cuda::download(ga.data(), darg.d, arg_bytes);
                CHECK(memcmp(ga.data(), arg.data(), arg_bytes) == 0);
            }
            gt::C().pool_backward(g, max, dy.data(), arg.data(), dx.data(), n);
            nnl_cuda::pool_backward(nnl::win(g), max, ddy.d, max ? (const void *)darg.d : nullptr, ddx.d, n);
            gt::close(ddx.get(), dx, 1e-5, 1e-6, max ? "max pool backward" : "average pool backward");
        }
}

TEST_CASE("batch-norm kernels: moments, scale_shift, bn_backward") {
    gt::use(false);
    int64_t rows = 1000, Cn = 37;
    auto x = gt::rnd((size_t)(rows * Cn), 71, -2.f, 3.f), dy = gt::rnd(x.size(), 72);
    gt::Dev dx_(x), ddy(dy), dm((size_t)Cn), dv((size_t)Cn);
    std::vector<float> mean((size_t)Cn), var((size_t)Cn);
    gt::C().moments(x.data(), rows, Cn, mean.data(), var.data());
    nnl_cuda::moments(dx_.d, rows, Cn, dm.d, dv.d);
    gt::close(dm.get(), mean, 1e-5, 1e-6, "moments mean");
    gt::close(dv.get(), var, 1e-5, 1e-6, "moments var");
    auto sc = gt::rnd((size_t)Cn, 73), sh = gt::rnd((size_t)Cn, 74);
    gt::Dev dsc(sc), dsh(sh), dy2(x.size());
    std::vector<float> y(x.size());
    gt::C().scale_shift(x.data(), y.data(), rows, Cn, sc.data(), sh.data());
    nnl_cuda::scale_shift(dx_.d, dy2.d, rows, Cn, dsc.d, dsh.d);
    gt::close(dy2.get(), y, 1e-6, 1e-6, "scale_shift");
    std::vector<float> invstd((size_t)Cn);
    for (int64_t c = 0; c < Cn; c++) invstd[(size_t)c] = 1.f / std::sqrt(var[(size_t)c] + 1e-3f);
    gt::Dev dmean(mean), dinv(invstd), dgam(sc);
    for (int training = 0; training < 2; training++)
        for (int withg = 0; withg < 2; withg++) {
            std::vector<float> dx(x.size()), dg((size_t)Cn), dbt((size_t)Cn);
            gt::Dev ddx(x.size()), ddg((size_t)Cn), ddb((size_t)Cn);
            gt::C().bn_backward(x.data(), dy.data(), dx.data(), rows, Cn, mean.data(), invstd.data(),
                                withg ? sc.data() : nullptr, dg.data(), dbt.data(), training);
            nnl_cuda::bn_backward(dx_.d, ddy.d, ddx.d, rows, Cn, dmean.d, dinv.d, withg ? dgam.d : nullptr, ddg.d,
                                  ddb.d, training);
            gt::close(ddx.get(), dx, 1e-4, 1e-5, "bn_backward dx");
            gt::close(ddg.get(), dg, 1e-4, 1e-4, "bn_backward dgamma");
            gt::close(ddb.get(), dbt, 1e-4, 1e-4, "bn_backward dbeta");
        }
}

TEST_CASE("sparse softmax cross-entropy from logits: loss, gradient, accuracy") {
    gt::use(false);
    int64_t rows = 513, Cn = 10;
    auto z = gt::rnd((size_t)(rows * Cn), 81, -8.f, 8.f);
    std::vector<float> t((size_t)rows);
    nnl::Rng r(82);
    for (auto &v : t) v = (float)r.below((uint64_t)Cn);
    nnl::Loss L = nnl::make_loss("sparse_categorical_crossentropy(from_logits=True)");
    std::vector<float> dz(z.size());
    double lc = L.run(z.data(), nullptr, t.data(), rows, Cn, Cn, dz.data());
    nnl::Metric m = nnl::make_metric("accuracy", L, Cn);
    double hc = m.run(z.data(), t.data(), rows, Cn, Cn);
    gt::Dev dz_(z), dt(t), ddz(z.size());
    double hits = -1;
    double lg = nnl_cuda::sparse_xent(dz_.d, dt.d, rows, Cn, 1.f / (float)rows, ddz.d, &hits);
    CHECK(std::fabs(lg - lc) <= 1e-6 * std::fabs(lc) + 1e-6);
    CHECK(hits == hc);
    gt::close(ddz.get(), dz, 1e-5, 1e-8, "sparse_xent dz");
}

TEST_CASE("optimizer update kernels, clipping and scaling") {
    gt::use(false);
    int64_t n = 5000;
    auto g = gt::rnd((size_t)n, 91);
    std::vector<float> c = g;
    for (auto &v : c) v = std::min(0.3f, std::max(-0.3f, v));
    gt::Dev dg(g);
    nnl_cuda::clip_value(dg.d, n, 0.3f);
    CHECK(dg.get() == c);
    nnl_cuda::scale(dg.d, n, 0.5f);
    for (auto &v : c) v *= 0.5f;
    CHECK(dg.get() == c);
    /* the optimizers themselves are checked step by step in gpu_models.hpp
       ("every optimizer: GPU steps match CPU steps") */
}

TEST_CASE("batch norm's per-channel step: moving statistics, invstd, scale and shift, training and inference") {
    gt::use(false);
    int64_t Cn = 300; /* more than one block of threads */
    for (int training = 0; training < 2; training++)
        for (int withgb = 0; withgb < 2; withgb++) {
            CAPTURE(training);
            CAPTURE(withgb);
            auto mean = gt::rnd((size_t)Cn, 81, -2.f, 2.f), var = gt::rnd((size_t)Cn, 82, 0.f, 3.f);
            auto mm = gt::rnd((size_t)Cn, 83), mv = gt::rnd((size_t)Cn, 84, 0.1f, 2.f);
            auto gam = gt::rnd((size_t)Cn, 85, 0.5f, 1.5f), bet = gt::rnd((size_t)Cn, 86);
            std::vector<float> scl((size_t)Cn), sh((size_t)Cn);
            /* on the device: in inference mean and invstd are outputs only, so
               they start poisoned */
            gt::Dev dmm(mm), dmv(mv), dgam(gam), dbet(bet), dscl((size_t)Cn), dsh((size_t)Cn);
            gt::Dev dmean((size_t)Cn), dinv((size_t)Cn);
            if (training) {
                nnl_cuda::upload(dmean.d, mean.data(), (size_t)Cn * sizeof(float));
                nnl_cuda::upload(dinv.d, var.data(), (size_t)Cn * sizeof(float));
            }
            gt::C().bn_prepare(training, Cn, 0.9f, 1e-3f, mm.data(), mv.data(), withgb ? gam.data() : nullptr,
                               withgb ? bet.data() : nullptr, mean.data(), var.data(), scl.data(), sh.data());
            nnl_cuda::bn_prepare(training, Cn, 0.9f, 1e-3f, dmm.d, dmv.d, withgb ? dgam.d : nullptr,
                                 withgb ? dbet.d : nullptr, dmean.d, dinv.d, dscl.d, dsh.d);
            /* the same rounded operations one by one (no FMA on either side):
               equal to float32 rounding, in practice bit for bit */
            gt::close(dmm.get(), mm, 1e-6, 1e-7, "moving mean");
            gt::close(dmv.get(), mv, 1e-6, 1e-7, "moving variance");
            gt::close(dmean.get(), mean, 1e-6, 1e-7, "mean");
            gt::close(dinv.get(), var, 1e-6, 1e-7, "invstd");
            gt::close(dscl.get(), scl, 1e-6, 1e-7, "scale");
            gt::close(dsh.get(), sh, 1e-6, 1e-6, "shift");
        }
}

TEST_CASE("global max and average pooling, forward and backward, channels last and first, ties") {
    gt::use(false);
    const int64_t shapes[][3] = {{3, 1, 5}, {2, 7, 1}, {4, 49, 6}, {2, 300, 33}}; /* B, S, C */
    for (auto &sh : shapes)
        for (int cf = 0; cf < 2; cf++)
            for (int max = 0; max < 2; max++)
                for (int ties = 0; ties < 2; ties++) {
                    int64_t B = sh[0], S = sh[1], Cn = sh[2];
                    CAPTURE(B);
                    CAPTURE(S);
                    CAPTURE(Cn);
                    CAPTURE(cf);
                    CAPTURE(max);
                    CAPTURE(ties);
                    auto x = gt::rnd((size_t)(B * S * Cn), 91 + S);
                    if (ties) /* a few values only: the maximum repeats, the first one takes dy */
                        for (auto &v : x) v = std::floor(v * 2.f);
                    auto dy = gt::rnd((size_t)(B * Cn), 92);
                    std::vector<float> y((size_t)(B * Cn)), dx(x.size());
                    gt::Dev dx_(x), ddy(dy), dy_(y.size()), ddx(dx.size());
                    gt::C().global_pool_forward(max, cf, x.data(), y.data(), B, S, Cn);
                    nnl_cuda::global_pool_forward(max, cf, dx_.d, dy_.d, B, S, Cn);
                    if (max)
                        CHECK(dy_.get() == y); /* a choice: exact */
                    else
                        gt::close(dy_.get(), y, 1e-6, 1e-7, "global average forward");
                    gt::Dev dyy(y); /* the CPU's y, so that the backward passes compare alone */
                    gt::C().global_pool_backward(max, cf, x.data(), y.data(), dy.data(), dx.data(), B, S, Cn);
                    nnl_cuda::global_pool_backward(max, cf, dx_.d, dyy.d, ddy.d, ddx.d, B, S, Cn);
                    if (max)
                        CHECK(ddx.get() == dx);
                    else
                        gt::close(ddx.get(), dx, 1e-6, 1e-7, "global average backward");
                }
}

TEST_CASE("zero padding and nearest upsampling, forward and backward") {
    gt::use(false);
    const int64_t pads[][4] = {{1, 2, 0, 3}, {0, 0, 0, 0}, {2, 0, 1, 1}}; /* top, bottom, left, right */
    const int64_t sizes[][2] = {{2, 3}, {1, 1}, {3, 1}};
    for (int64_t inner : {1, 6})
        for (int k = 0; k < 3; k++) {
            CAPTURE(inner);
            CAPTURE(k);
            int64_t n = 5, H = 4, W = 3;
            const int64_t *p = pads[k];
            int64_t Ho = H + p[0] + p[1], Wo = W + p[2] + p[3];
            auto x = gt::rnd((size_t)(n * H * W * inner), 101), dy = gt::rnd((size_t)(n * Ho * Wo * inner), 102);
            std::vector<float> y(dy.size()), dx(x.size());
            gt::Dev dx_(x), ddy(dy), dy_(y.size()), ddx(dx.size());
            gt::C().zero_pad_forward(x.data(), y.data(), n, H, W, inner, p[0], p[1], p[2], p[3]);
            nnl_cuda::zero_pad_forward(dx_.d, dy_.d, n, H, W, inner, p[0], p[1], p[2], p[3]);
            CHECK(dy_.get() == y); /* copies and zeros: exact */
            gt::C().zero_pad_backward(dy.data(), dx.data(), n, H, W, inner, p[0], p[1], p[2], p[3]);
            nnl_cuda::zero_pad_backward(ddy.d, ddx.d, n, H, W, inner, p[0], p[1], p[2], p[3]);
            CHECK(ddx.get() == dx);

            int64_t sh = sizes[k][0], sw = sizes[k][1], Hu = H * sh, Wu = W * sw;
            auto du = gt::rnd((size_t)(n * Hu * Wu * inner), 103);
            std::vector<float> yu(du.size()), dxu(x.size());
            gt::Dev ddu(du), dyu(yu.size()), ddxu(x.size());
            gt::C().upsample_forward(x.data(), yu.data(), n, H, W, inner, sh, sw);
            nnl_cuda::upsample_forward(dx_.d, dyu.d, n, H, W, inner, sh, sw);
            CHECK(dyu.get() == yu);
            gt::C().upsample_backward(du.data(), dxu.data(), n, H, W, inner, sh, sw);
            nnl_cuda::upsample_backward(ddu.d, ddxu.d, n, H, W, inner, sh, sw);
            /* the CPU's additions in the CPU's order */
            gt::close(ddxu.get(), dxu, 1e-6, 1e-7, "upsampling backward");
        }
}

namespace gt {
/* the same floats bit for bit (NaN payloads and the sign of zero included) */
static bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
} // namespace gt

/* Embedding on the device: the gather copies rows (exact), and the table's
   gradient adds each id's rows in the CPU's order from the row lists that
   nnl::embedding_rows sorts on the host, so both are the CPU's bit for bit.
   Ids repeat (few ids, many rows), the edge ids 0 and V - 1 are present,
   most of a large table is absent (its rows must come out zero: the NaN
   poison shows a row left unwritten), one id, one row, no rows; the cases
   run in turn on one context, so the row lists' scratch grows and shrinks. */
TEST_CASE("Embedding: the row gather and the table's gradient (sorted row lists, no atomics) are the CPU's bit for "
          "bit") {
    gt::use(false);
    struct Case { int64_t V, rows, dim; uint64_t seed; };
    const Case cases[] = {{37, 500, 5, 1},   {1000, 20, 33, 2}, {1, 9, 4, 3},       {6, 1, 7, 4},
                          {50, 0, 2, 5},     {50000, 3000, 64, 6}, {3, 70000, 2, 7}, {300, 4096, 1, 8}};
    for (auto c : cases) {
        CAPTURE(c.V);
        CAPTURE(c.rows);
        CAPTURE(c.dim);
        nnl::Rng r(c.seed);
        std::vector<float> ids((size_t)c.rows);
        for (auto &v : ids) v = (float)r.below((uint64_t)c.V);
        if (c.rows >= 2) { /* the edge ids, and a run of one repeated id */
            ids[0] = (float)(c.V - 1);
            ids[(size_t)c.rows - 1] = 0.f;
            for (int64_t i = 1; i < std::min<int64_t>(c.rows - 1, 6); i++) ids[(size_t)i] = ids[1];
        }
        auto E = gt::rnd((size_t)(c.V * c.dim), 111 + c.seed), dy = gt::rnd((size_t)(c.rows * c.dim), 112 + c.seed);
        /* forward */
        std::vector<float> y((size_t)(c.rows * c.dim));
        gt::C().embedding_forward(ids.data(), E.data(), y.data(), c.rows, c.dim);
        gt::Dev dids(ids), dE(E), dyo(y.size());
        nnl_cuda::embedding_forward(dids.d, dE.d, dyo.d, c.rows, c.dim);
        CHECK(gt::same_bits(dyo.get(), y));
        /* gradient and marks */
        std::vector<float> G((size_t)(c.V * c.dim), NAN);
        std::vector<uint8_t> marks((size_t)c.V, 0), marks_g((size_t)c.V, 0);
        gt::C().embedding_grad(ids.data(), dy.data(), G.data(), c.rows, c.V, c.dim, marks.data());
        std::vector<uint64_t> keys;
        std::vector<int32_t> csr;
        int64_t U = nnl::embedding_rows(ids.data(), c.rows, c.V, marks_g.data(), keys, csr);
        CHECK(marks_g == marks);
        gt::Dev ddy(dy), dG(G.size());
        nnl_cuda::embedding_grad(csr.data(), U, c.rows, ddy.d, dG.d, c.V, c.dim);
        std::fill(csr.begin(), csr.end(), -1); /* the lists were copied before the call returned */
        CHECK(gt::same_bits(dG.get(), G));
    }
}

/* Masking on the device: the step mask (the first value that differs from
   mask_value keeps a step; NaN differs; -0 equals 0), the selected values
   and the gradient, against the CPU entries, bit for bit. Steps are built
   masked (every value equal to mask_value), nearly masked (only the last
   value differs), or random; more steps than one block covers. */
TEST_CASE("Masking: the step mask, forward (with and without y) and backward are the CPU's bit for bit") {
    gt::use(false);
    const int64_t steps = 1031;
    for (int64_t F : {1, 3, 64})
        for (float value : {0.f, 0.5f}) {
            CAPTURE(F);
            CAPTURE(value);
            auto x = gt::rnd((size_t)(steps * F), 121 + F);
            for (int64_t r = 0; r < steps; r++) {
                float *xr = x.data() + r * F;
                switch (r % 5) {
                case 0: std::fill(xr, xr + F, value); break;                    /* masked */
                case 1: std::fill(xr, xr + F - 1, value); break;                /* the last value decides */
                case 2: if (value == 0.f) std::fill(xr, xr + F, -0.f); break;   /* -0 == 0: masked */
                case 3: if (r % 7 == 0) xr[F / 2] = NAN; break;                 /* NaN != value: kept */
                default: break;
                }
            }
            std::vector<float> y(x.size()), mask((size_t)steps);
            gt::C().masking_forward(x.data(), y.data(), mask.data(), steps, F, value);
            gt::Dev dx_(x), dy_(x.size()), dm((size_t)steps), dm2((size_t)steps);
            nnl_cuda::masking_forward(dx_.d, dy_.d, dm.d, steps, F, value);
            CHECK(gt::same_bits(dm.get(), mask));
            CHECK(gt::same_bits(dy_.get(), y));
            nnl_cuda::masking_forward(dx_.d, nullptr, dm2.d, steps, F, value); /* Embedding's mask_zero */
            CHECK(gt::same_bits(dm2.get(), mask));
            auto g = gt::rnd(x.size(), 122);
            std::vector<float> dxr(x.size());
            gt::C().masking_backward(mask.data(), g.data(), dxr.data(), steps, F);
            gt::Dev dg(g), ddx(x.size());
            nnl_cuda::masking_backward(dm.d, dg.d, ddx.d, steps, F);
            CHECK(gt::same_bits(ddx.get(), dxr));
        }
}

namespace gt {
/* |gpu - cpu| <= atol + rtol |cpu| where the CPU wrote a value; a NaN on
   both sides (poison neither wrote, by design: another step's output rows)
   agrees, a NaN on one side only does not */
static void close_nan(const std::vector<float> &g, const std::vector<float> &c, double rtol, double atol,
                      const std::string &what) {
    REQUIRE(g.size() == c.size());
    std::vector<float> g2 = g, c2 = c;
    for (size_t i = 0; i < g.size(); i++)
        if (std::isnan(g[i]) && std::isnan(c[i])) g2[i] = c2[i] = 0.f;
    close(g2, c2, rtol, atol, what);
}
/* One LSTM step's arrays laid out as Recurrent's ws (B samples, T steps, u
   units): Z (B, T, 4u), H (B, T, u) the state before each step, C (B, T, u),
   C0 (B, u), TMP (B, u); y (B, T, u) or (B, u); dy the same; dh, dc (B, u);
   TG (B, 4u); the step mask (B, T). */
struct LstmCase {
    int64_t B, u, T, s;
    bool back, seq, zero_masked, masked;
    nnl::Act act, ract;
    std::vector<float> Z, H, C, C0, TMP, y, dy, dh, dc, TG, mask;
    int64_t tidx(int64_t q) const { return back ? T - 1 - q : q; }
    /* the step's arguments, as Recurrent::lstm_args makes them, on base
       pointers (host vectors or their device copies) */
    nnl::CellArgs args(float *Z_, float *H_, float *C_, float *C0_, float *TMP_, float *y_, const float *dy_,
                       float *dh_, float *dc_, float *TG_, const float *mask_) const {
        nnl::CellArgs a;
        const int64_t t = tidx(s), G = 4 * u;
        a.B = B, a.u = u, a.T = T, a.t = t, a.s = s, a.act = act, a.ract = ract;
        a.Z = Z_ + t * G, a.ldz = T * G;
        a.hp = H_ + t * u, a.ldh = T * u;
        a.cp = s == 0 ? C0_ : C_ + tidx(s - 1) * u, a.ldcp = s == 0 ? u : T * u;
        a.c = C_ + t * u;
        a.h = s + 1 < T ? H_ + tidx(s + 1) * u : TMP_, a.ldhn = s + 1 < T ? T * u : u;
        a.mask = masked ? mask_ : nullptr;
        a.y = y_, a.dy = dy_, a.dh = dh_, a.dc = dc_, a.tg = TG_, a.tmp = TMP_;
        a.seq = seq, a.zero_masked = zero_masked;
        return a;
    }
};
static nnl_cuda::CellStep cell_dev(const nnl::CellArgs &a) {
    nnl_cuda::CellStep d;
    d.B = a.B, d.u = a.u, d.T = a.T, d.t = a.t, d.s = a.s, d.act = (int)a.act, d.ract = (int)a.ract;
    d.Z = a.Z, d.hp = a.hp, d.cp = a.cp, d.c = a.c, d.h = a.h;
    d.ldz = a.ldz, d.ldh = a.ldh, d.ldcp = a.ldcp, d.ldhn = a.ldhn;
    d.mask = a.mask, d.y = a.y, d.dy = a.dy, d.dh = a.dh, d.dc = a.dc;
    d.seq = a.seq, d.zero_masked = a.zero_masked, d.first = a.first;
    d.rb = a.rb, d.hr = a.hr, d.R = a.R, d.dn = a.dn, d.tg = a.tg, d.tmp = a.tmp;
    d.phase = a.phase, d.reset_after = a.reset_after, d.drop_h = a.drop_h;
    return d;
}
} // namespace gt

/* Recurrent's row copies (initial states, stateful slots, a masked row's
   dh kept around the recurrent GEMM): exact copies, bit for bit; the rows
   not selected keep the destination's values (random on both sides). */
TEST_CASE("rnn_rows: state rows copied, zeroed, or kept for masked rows, bit for bit") {
    gt::use(false);
    const int64_t B = 37, u = 19, T = 5;
    for (int with_src = 0; with_src < 2; with_src++)
        for (int with_mask = 0; with_mask < 2; with_mask++)
            for (int64_t t : {0, 3}) {
                CAPTURE(with_src);
                CAPTURE(with_mask);
                CAPTURE(t);
                const int64_t lds = T * u, ldd = u + 3;
                auto src = gt::rnd((size_t)(B * lds), 131), dst = gt::rnd((size_t)(B * ldd), 132);
                std::vector<float> mask((size_t)(B * T));
                for (size_t i = 0; i < mask.size(); i++) mask[i] = (i * 7 + 3) % 5 < 2 ? 0.f : 1.f;
                std::vector<float> want = dst;
                gt::C().rnn_rows(with_src ? src.data() : nullptr, lds, want.data(), ldd, B, u,
                                 with_mask ? mask.data() : nullptr, T, t);
                gt::Dev ds(src), dd(dst), dm(mask);
                nnl_cuda::rnn_rows(with_src ? ds.d : nullptr, lds, dd.d, ldd, B, u, with_mask ? dm.d : nullptr, T, t);
                CHECK(gt::same_bits(dd.get(), want));
            }
}

/* One LSTM step, forward and backward, against the CPU entries: Keras'
   activations (the CPU's fused vectorised path) and others (relu,
   hard_sigmoid, linear: one activation call per gate block on the CPU);
   first, middle and last steps, go_backwards, return_sequences with and
   without zero_output_for_mask, a step mask holding every third row
   masked, B x u over one block (B = 70, u = 33). Outputs NaN-poisoned: the
   step's c and h rows, the output (y), and in backward dh and dc when the
   step is the first (the kernel must not read them then). Tolerances:
   float32 transcendental functions (the CPU's are vectorised
   approximations). */
TEST_CASE("LSTM step: forward and backward (masks, go_backwards, sequences, activations) match the CPU entries") {
    gt::use(false);
    struct Acts { nnl::Act act, ract; };
    const Acts acts[] = {{nnl::ACT_TANH, nnl::ACT_SIGMOID}, {nnl::ACT_RELU, nnl::ACT_HARD_SIGMOID},
                         {nnl::ACT_LINEAR, nnl::ACT_SIGMOID}};
    const int64_t B = 70, u = 33, T = 4;
    int ncase = 0;
    for (auto ac : acts)
        for (int64_t s : {0, 2, 3})
            for (int back = 0; back < 2; back++)
                for (int seq = 0; seq < 3; seq++) /* 0: last output only, 1: sequences, 2: zero_output_for_mask */
                    for (int masked = 0; masked < 2; masked++) {
                        ncase++;
                        CAPTURE((int)ac.act);
                        CAPTURE((int)ac.ract);
                        CAPTURE(s);
                        CAPTURE(back);
                        CAPTURE(seq);
                        CAPTURE(masked);
                        gt::LstmCase L;
                        L.B = B, L.u = u, L.T = T, L.s = s, L.back = back != 0, L.seq = seq > 0,
                        L.zero_masked = seq == 2, L.masked = masked != 0, L.act = ac.act, L.ract = ac.ract;
                        const int64_t G = 4 * u, t = L.tidx(s);
                        const uint64_t sd = 140 + (uint64_t)ncase;
                        L.Z = gt::rnd((size_t)(B * T * G), sd, -2.f, 2.f);
                        L.H = gt::rnd((size_t)(B * T * u), sd + 1);
                        L.C = gt::rnd((size_t)(B * T * u), sd + 2);
                        L.C0 = gt::rnd((size_t)(B * u), sd + 3);
                        L.TMP = std::vector<float>((size_t)(B * u), NAN);
                        L.y = std::vector<float>((size_t)(B * (L.seq ? T : 1) * u), NAN);
                        L.mask.assign((size_t)(B * T), 1.f);
                        for (int64_t b = 0; b < B; b += 3) L.mask[(size_t)(b * T + t)] = 0.f;
                        for (int64_t b = 1; b < B; b += 5) L.mask[(size_t)(b * T + (t + 1) % T)] = 0.f;
                        /* forward: the step's c and h rows poisoned */
                        for (int64_t b = 0; b < B; b++)
                            for (int64_t j = 0; j < u; j++) {
                                L.C[(size_t)(b * T * u + t * u + j)] = NAN;
                                if (s + 1 < T) L.H[(size_t)(b * T * u + L.tidx(s + 1) * u + j)] = NAN;
                            }
                        {
                            auto Z = L.Z, H = L.H, C = L.C, C0 = L.C0, TMP = L.TMP, y = L.y;
                            gt::C().lstm_forward(L.args(Z.data(), H.data(), C.data(), C0.data(), TMP.data(),
                                                        y.data(), nullptr, nullptr, nullptr, nullptr, L.mask.data()));
                            gt::Dev dZ(L.Z), dH(L.H), dC(L.C), dC0(L.C0), dT(L.TMP), dy(L.y), dm(L.mask);
                            nnl_cuda::lstm_forward(gt::cell_dev(L.args(dZ.d, dH.d, dC.d, dC0.d, dT.d, dy.d, nullptr,
                                                                       nullptr, nullptr, nullptr, dm.d)));
                            gt::close_nan(dZ.get(), Z, 1e-5, 1e-5, "forward: gates");
                            gt::close_nan(dH.get(), H, 1e-5, 1e-5, "forward: h");
                            gt::close_nan(dC.get(), C, 1e-5, 1e-5, "forward: c");
                            gt::close_nan(dT.get(), TMP, 1e-5, 1e-5, "forward: the last h");
                            gt::close_nan(dy.get(), y, 1e-5, 1e-5, "forward: output");
                            CHECK(gt::same_bits(dC0.get(), C0));
                        }
                        /* backward: Z holds gates in (0, 1) (and the relu's, linear's g in [0, 2)) */
                        L.Z = gt::rnd((size_t)(B * T * G), sd + 4, 0.01f, 0.99f);
                        L.C = gt::rnd((size_t)(B * T * u), sd + 5);
                        L.dy = gt::rnd((size_t)(B * (L.seq ? T : 1) * u), sd + 6);
                        L.TG = std::vector<float>((size_t)(B * G), NAN);
                        for (int first = 0; first < 2; first++) {
                            CAPTURE(first);
                            auto dhv = first ? std::vector<float>((size_t)(B * u), NAN) : gt::rnd((size_t)(B * u), sd + 7);
                            auto dcv = first ? std::vector<float>((size_t)(B * u), NAN) : gt::rnd((size_t)(B * u), sd + 8);
                            auto Z = L.Z, TG = L.TG, TMP = L.TMP, dh = dhv, dc = dcv;
                            nnl::CellArgs a = L.args(Z.data(), L.H.data(), L.C.data(), L.C0.data(), TMP.data(), nullptr,
                                                     L.dy.data(), dh.data(), dc.data(), TG.data(), L.mask.data());
                            a.first = first != 0;
                            gt::C().lstm_backward(a);
                            gt::Dev dZ(L.Z), dH(L.H), dC(L.C), dC0(L.C0), dT(L.TMP), ddy(L.dy), ddh(dhv), ddc(dcv),
                                dm(L.mask);
                            nnl::CellArgs da = L.args(dZ.d, dH.d, dC.d, dC0.d, dT.d, nullptr, ddy.d, ddh.d, ddc.d,
                                                      nullptr, dm.d);
                            da.first = first != 0;
                            nnl_cuda::lstm_backward(gt::cell_dev(da));
                            gt::close_nan(dZ.get(), Z, 1e-4, 1e-5, "backward: the gates' gradients");
                            gt::close_nan(ddc.get(), dc, 1e-4, 1e-5, "backward: dc");
                            /* dh: dL/dh_s, as the fused path leaves it; the
                               other CPU path leaves scratch in an unmasked
                               row (the recurrent GEMM overwrites it) */
                            std::vector<float> gdh = ddh.get();
                            bool fused = ac.act == nnl::ACT_TANH && ac.ract == nnl::ACT_SIGMOID;
                            for (int64_t b = 0; b < B && !fused; b++)
                                if (!(L.masked && L.mask[(size_t)(b * T + t)] == 0.f))
                                    for (int64_t j = 0; j < u; j++) gdh[(size_t)(b * u + j)] = dh[(size_t)(b * u + j)];
                            gt::close_nan(gdh, dh, 1e-5, 1e-6, "backward: dh");
                        }
                    }
}

/* One SimpleRNN step, forward and backward, against the CPU entries:
   tanh, relu, hard_sigmoid, linear; first / middle / last steps,
   go_backwards, return_sequences (with zero_output_for_mask), a step mask.
   Outputs NaN-poisoned: the step's h rows, y, tg, and dh when first. */
TEST_CASE("SimpleRNN step: forward and backward (masks, go_backwards, sequences) match the CPU entries") {
    gt::use(false);
    const nnl::Act acts[] = {nnl::ACT_TANH, nnl::ACT_RELU, nnl::ACT_HARD_SIGMOID, nnl::ACT_LINEAR};
    const int64_t B = 70, u = 33, T = 4;
    int ncase = 0;
    for (auto act : acts)
        for (int64_t s : {0, 2, 3})
            for (int back = 0; back < 2; back++)
                for (int seq = 0; seq < 3; seq++)
                    for (int masked = 0; masked < 2; masked++) {
                        ncase++;
                        CAPTURE((int)act);
                        CAPTURE(s);
                        CAPTURE(back);
                        CAPTURE(seq);
                        CAPTURE(masked);
                        gt::LstmCase L; /* the layout, with one gate (C, C0 unused) */
                        L.B = B, L.u = u, L.T = T, L.s = s, L.back = back != 0, L.seq = seq > 0,
                        L.zero_masked = seq == 2, L.masked = masked != 0, L.act = act, L.ract = act;
                        const int64_t t = L.tidx(s);
                        const uint64_t sd = 900 + 10 * (uint64_t)ncase;
                        auto Z = gt::rnd((size_t)(B * T * u), sd, -2.f, 2.f), H = gt::rnd((size_t)(B * T * u), sd + 1);
                        std::vector<float> TMP((size_t)(B * u), NAN), y((size_t)(B * (L.seq ? T : 1) * u), NAN),
                            mask((size_t)(B * T), 1.f);
                        for (int64_t b = 0; b < B; b += 3) mask[(size_t)(b * T + t)] = 0.f;
                        for (int64_t b = 0; b < B; b++)
                            for (int64_t j = 0; j < u && s + 1 < T; j++) H[(size_t)(b * T * u + L.tidx(s + 1) * u + j)] = NAN;
                        auto rnn_args = [&](float *Z_, float *H_, float *TMP_, float *y_, const float *mask_) {
                            nnl::CellArgs a = L.args(Z_, H_, H_, H_, TMP_, y_, nullptr, nullptr, nullptr, nullptr, mask_);
                            a.Z = Z_ + t * u, a.ldz = T * u; /* one gate a row */
                            return a;
                        };
                        { /* forward */
                            auto cZ = Z, cH = H, cT = TMP, cy = y;
                            gt::C().simple_forward(rnn_args(cZ.data(), cH.data(), cT.data(), cy.data(), mask.data()));
                            gt::Dev dZ(Z), dH(H), dT(TMP), dy(y), dm(mask);
                            nnl_cuda::simple_forward(gt::cell_dev(rnn_args(dZ.d, dH.d, dT.d, dy.d, dm.d)));
                            gt::close_nan(dZ.get(), cZ, 1e-5, 1e-5, "forward: h in Z");
                            gt::close_nan(dH.get(), cH, 1e-5, 1e-5, "forward: h");
                            gt::close_nan(dT.get(), cT, 1e-5, 1e-5, "forward: the last h");
                            gt::close_nan(dy.get(), cy, 1e-5, 1e-5, "forward: output");
                        }
                        Z = gt::rnd((size_t)(B * T * u), sd + 2, 0.01f, 0.99f); /* the activated outputs */
                        auto dyv = gt::rnd((size_t)(B * (L.seq ? T : 1) * u), sd + 3);
                        for (int first = 0; first < 2; first++) {
                            CAPTURE(first);
                            auto dh0 = first ? std::vector<float>((size_t)(B * u), NAN) : gt::rnd((size_t)(B * u), sd + 4);
                            std::vector<float> tg0((size_t)(B * u), NAN);
                            auto cZ = Z, cdh = dh0, ctg = tg0;
                            nnl::CellArgs a = rnn_args(cZ.data(), H.data(), TMP.data(), nullptr, mask.data());
                            a.dy = dyv.data(), a.dh = cdh.data(), a.tg = ctg.data(), a.first = first != 0;
                            gt::C().simple_backward(a);
                            gt::Dev dZ(Z), dH(H), dT(TMP), ddy(dyv), ddh(dh0), dtg(tg0), dm(mask);
                            nnl::CellArgs da = rnn_args(dZ.d, dH.d, dT.d, nullptr, dm.d);
                            da.dy = ddy.d, da.dh = ddh.d, da.tg = dtg.d, da.first = first != 0;
                            nnl_cuda::simple_backward(gt::cell_dev(da));
                            gt::close_nan(dZ.get(), cZ, 1e-5, 1e-6, "backward: dZ");
                            gt::close_nan(ddh.get(), cdh, 1e-5, 1e-6, "backward: dh");
                            gt::close_nan(dtg.get(), ctg, 0, 0, "backward: tg");
                        }
                    }
}

/* One GRU step, forward (phase 0, and phase 1 for reset_after=False) and
   backward (phase 0, then phase 1 with tmp as the product d pre(hh) U_h^T
   would leave it, with and without drop_h), against the CPU entries:
   reset_after both ways, Keras' activations and (relu, hard_sigmoid),
   first / middle / last steps, go_backwards, return_sequences (with
   zero_output_for_mask), a step mask. hr (the recurrent products' h_{s-1})
   is an array of its own, so a kernel that read hp for it (or the
   reverse) fails. Outputs NaN-poisoned: the step's h rows, R's row (forward),
   y, dn, tg, and dh when first. */
TEST_CASE("GRU step: forward and backward (reset_after, masks, go_backwards, sequences) match the CPU entries") {
    gt::use(false);
    struct Acts { nnl::Act act, ract; };
    const Acts acts[] = {{nnl::ACT_TANH, nnl::ACT_SIGMOID}, {nnl::ACT_RELU, nnl::ACT_HARD_SIGMOID}};
    const int64_t B = 70, u = 33, T = 4, G = 3 * u;
    int ncase = 0;
    for (auto ac : acts)
        for (int ra = 0; ra < 2; ra++)
            for (int64_t s : {0, 2, 3})
                for (int back = 0; back < 2; back++)
                    for (int seq = 0; seq < 3; seq++)
                        for (int masked = 0; masked < 2; masked++) {
                            ncase++;
                            CAPTURE((int)ac.act);
                            CAPTURE(ra);
                            CAPTURE(s);
                            CAPTURE(back);
                            CAPTURE(seq);
                            CAPTURE(masked);
                            gt::LstmCase L; /* the layout (Z is B x T x 3u here; C, C0 unused) */
                            L.B = B, L.u = u, L.T = T, L.s = s, L.back = back != 0, L.seq = seq > 0,
                            L.zero_masked = seq == 2, L.masked = masked != 0, L.act = ac.act, L.ract = ac.ract;
                            const int64_t t = L.tidx(s), rbw = ra ? G : 2 * u;
                            const uint64_t sd = 400 + 10 * (uint64_t)ncase;
                            auto Z = gt::rnd((size_t)(B * T * G), sd, -2.f, 2.f), H = gt::rnd((size_t)(B * T * u), sd + 1),
                                 HR = gt::rnd((size_t)(B * T * u), sd + 2), R = gt::rnd((size_t)(B * T * u), sd + 3),
                                 rb = gt::rnd((size_t)(B * rbw), sd + 4);
                            std::vector<float> TMP((size_t)(B * u), NAN), y((size_t)(B * (L.seq ? T : 1) * u), NAN),
                                mask((size_t)(B * T), 1.f);
                            for (int64_t b = 0; b < B; b += 3) mask[(size_t)(b * T + t)] = 0.f;
                            for (int64_t b = 0; b < B; b++)
                                for (int64_t j = 0; j < u; j++) {
                                    R[(size_t)(b * T * u + t * u + j)] = NAN;
                                    if (s + 1 < T) H[(size_t)(b * T * u + L.tidx(s + 1) * u + j)] = NAN;
                                }
                            auto gru_args = [&](float *Z_, float *H_, float *HR_, float *R_, const float *rb_,
                                                float *TMP_, float *y_, const float *mask_) {
                                nnl::CellArgs a = L.args(Z_, H_, H_, H_, TMP_, y_, nullptr, nullptr, nullptr, nullptr,
                                                         mask_);
                                a.Z = Z_ + t * G, a.ldz = T * G; /* three gates a row */
                                a.rb = rb_, a.hr = HR_ + t * u, a.R = R_ + t * u, a.reset_after = ra != 0;
                                return a;
                            };
                            { /* forward */
                                auto cZ = Z, cH = H, cR = R, cT = TMP, cy = y;
                                nnl::CellArgs a = gru_args(cZ.data(), cH.data(), HR.data(), cR.data(), rb.data(),
                                                           cT.data(), cy.data(), mask.data());
                                gt::Dev dZ(Z), dH(H), dHR(HR), dR(R), drb(rb), dT(TMP), dy(y), dm(mask);
                                nnl::CellArgs da = gru_args(dZ.d, dH.d, dHR.d, dR.d, drb.d, dT.d, dy.d, dm.d);
                                for (int ph = 0; ph < (ra ? 1 : 2); ph++) {
                                    a.phase = da.phase = ph;
                                    gt::C().gru_forward(a);
                                    nnl_cuda::gru_forward(gt::cell_dev(da));
                                }
                                gt::close_nan(dZ.get(), cZ, 1e-5, 1e-5, "forward: gates");
                                gt::close_nan(dH.get(), cH, 1e-5, 1e-5, "forward: h");
                                gt::close_nan(dR.get(), cR, 1e-5, 1e-5, "forward: R");
                                gt::close_nan(dT.get(), cT, 1e-5, 1e-5, "forward: the last h");
                                gt::close_nan(dy.get(), cy, 1e-5, 1e-5, "forward: output");
                                CHECK(gt::same_bits(dHR.get(), HR));
                            }
                            /* backward: Z holds the gates */
                            Z = gt::rnd((size_t)(B * T * G), sd + 5, 0.01f, 0.99f);
                            R = gt::rnd((size_t)(B * T * u), sd + 6);
                            auto dyv = gt::rnd((size_t)(B * (L.seq ? T : 1) * u), sd + 7);
                            auto tmp0 = gt::rnd((size_t)(B * u), sd + 8);
                            for (int first = 0; first < 2; first++)
                                for (int drop = 0; drop < (ra ? 1 : 2); drop++) {
                                    CAPTURE(first);
                                    CAPTURE(drop);
                                    auto dh0 = first ? std::vector<float>((size_t)(B * u), NAN) : gt::rnd((size_t)(B * u), sd + 9);
                                    std::vector<float> dn0((size_t)(B * u), NAN), tg0((size_t)(B * G), NAN);
                                    auto cZ = Z, cR = R, cdh = dh0, cdn = dn0, ctg = tg0, ct = tmp0;
                                    nnl::CellArgs a = gru_args(cZ.data(), H.data(), HR.data(), cR.data(), nullptr,
                                                               ct.data(), nullptr, mask.data());
                                    a.dy = dyv.data(), a.dh = cdh.data(), a.dn = cdn.data(), a.tg = ctg.data();
                                    gt::Dev dZ(Z), dH(H), dHR(HR), dR(R), ddy(dyv), ddh(dh0), ddn(dn0), dtg(tg0),
                                        dT(tmp0), dm(mask);
                                    nnl::CellArgs da = gru_args(dZ.d, dH.d, dHR.d, dR.d, nullptr, dT.d, nullptr, dm.d);
                                    da.dy = ddy.d, da.dh = ddh.d, da.dn = ddn.d, da.tg = dtg.d;
                                    a.first = da.first = first != 0;
                                    a.drop_h = da.drop_h = drop != 0;
                                    for (int ph = 0; ph < (ra ? 1 : 2); ph++) {
                                        a.phase = da.phase = ph;
                                        gt::C().gru_backward(a);
                                        nnl_cuda::gru_backward(gt::cell_dev(da));
                                    }
                                    gt::close_nan(dZ.get(), cZ, 1e-4, 1e-5, "backward: the gates' gradients");
                                    gt::close_nan(dR.get(), cR, 1e-4, 1e-5, "backward: R");
                                    gt::close_nan(ddh.get(), cdh, 1e-5, 1e-6, "backward: dh");
                                    gt::close_nan(ddn.get(), cdn, 1e-4, 1e-5, "backward: dn");
                                    gt::close_nan(dtg.get(), ctg, 0, 0, "backward: tg");
                                    gt::close_nan(dT.get(), ct, 1e-5, 1e-6, "backward: tmp");
                                }
                        }
}

/* nnl_cuda::loss_metrics against Loss::run and Metric::run: every loss (from
   logits, from probabilities, fused softmax/sigmoid), every metric, three
   shapes (several positions per sample; more elements than one grid pass
   covers, C > 32; more rows than one grid pass, C < 32). */
/* Recurrent dropout's and Bidirectional's entries (issue 15) against the
   CPU's, bit for bit: each is a hash or a single rounding per value
   (__fmul_rn before the add in mul_rows; x / 2 is exact), so nothing may
   differ. Outputs NaN-poisoned (mul_rows's add case starts from values,
   and its padded rows keep the poison on both sides: same bits); sizes
   past one block of 256 threads and odd; in-place calls as the layers
   make them (mul_rows on dx, add into dx). */
TEST_CASE("recurrent dropout and Bidirectional entries: dropout_mask, mul_rows, add, bidir_merge, bidir_split match "
          "the CPU bit for bit") {
    gt::use(false);
    for (float rate : {0.f, 0.3f, 0.9f}) {
        CAPTURE(rate);
        const int64_t n = 70001;
        std::vector<float> m((size_t)n);
        gt::Dev dm((size_t)n);
        gt::C().dropout_mask(m.data(), n, rate, 0xfeedbeef12345ull);
        nnl_cuda::dropout_mask(dm.d, n, rate, 0xfeedbeef12345ull);
        CHECK(gt::same_bits(dm.get(), m));
    }
    {
        const int64_t B = 37, T = 9, F = 13, u = 29;
        /* inputs' mask: a sample's row on its T rows; then in place (dx) */
        auto x = gt::rnd((size_t)(B * T * F), 401), mx = gt::rnd((size_t)(B * F), 402);
        std::vector<float> xd((size_t)(B * T * F));
        gt::C().mul_rows(x.data(), F, mx.data(), F, T, xd.data(), F, B * T, F, false);
        gt::Dev dx_(x), dmx(mx), dxd((size_t)(B * T * F));
        nnl_cuda::mul_rows(dx_.d, F, dmx.d, F, T, dxd.d, F, B * T, F, false);
        CHECK(gt::same_bits(dxd.get(), xd));
        nnl_cuda::mul_rows(dx_.d, F, dmx.d, F, T, dx_.d, F, B * T, F, false);
        CHECK(gt::same_bits(dx_.get(), xd));
        /* step t's rows (stride T u) into HD's, the rest of HD untouched */
        auto H = gt::rnd((size_t)(B * T * u), 403), mh = gt::rnd((size_t)(B * u), 404);
        gt::Dev dH(H), dmh(mh);
        for (int64_t t : {0, 4, 8}) {
            CAPTURE(t);
            std::vector<float> HD((size_t)(B * T * u), NAN);
            gt::C().mul_rows(H.data() + t * u, T * u, mh.data(), u, 1, HD.data() + t * u, T * u, B, u, false);
            gt::Dev dHD((size_t)(B * T * u));
            nnl_cuda::mul_rows(dH.d + t * u, T * u, dmh.d, u, 1, dHD.d + t * u, T * u, B, u, false);
            CHECK(gt::same_bits(dHD.get(), HD));
        }
        /* GRU's dn += tmp * mask: the product rounded, then added */
        auto tmp = gt::rnd((size_t)(B * u), 405), dn = gt::rnd((size_t)(B * u), 406);
        gt::Dev dtmp(tmp), ddn(dn);
        gt::C().mul_rows(tmp.data(), u, mh.data(), u, 1, dn.data(), u, B, u, true);
        nnl_cuda::mul_rows(dtmp.d, u, dmh.d, u, 1, ddn.d, u, B, u, true);
        CHECK(gt::same_bits(ddn.get(), dn));
        /* add, out of place and in place */
        const int64_t n = 100003;
        auto a = gt::rnd((size_t)n, 407), b = gt::rnd((size_t)n, 408);
        std::vector<float> y((size_t)n);
        gt::C().add(a.data(), b.data(), y.data(), n);
        gt::Dev da(a), db(b), dy((size_t)n);
        nnl_cuda::add(da.d, db.d, dy.d, n);
        CHECK(gt::same_bits(dy.get(), y));
        nnl_cuda::add(da.d, db.d, da.d, n);
        CHECK(gt::same_bits(da.get(), y));
    }
    for (int mode = 0; mode < 4; mode++)
        for (int64_t T : {1, 6, 11}) {
            CAPTURE(mode);
            CAPTURE(T);
            const int64_t B = 29, u = 17, rows = B * T, w = mode == 0 ? 2 * u : u;
            auto f = gt::rnd((size_t)(rows * u), 410 + T), b = gt::rnd((size_t)(rows * u), 420 + T);
            auto dyv = gt::rnd((size_t)(rows * w), 430 + T);
            std::vector<float> y((size_t)(rows * w)), df((size_t)(rows * u)), db((size_t)(rows * u));
            gt::C().bidir_merge(mode, f.data(), b.data(), y.data(), B, T, u);
            gt::C().bidir_split(mode, dyv.data(), f.data(), b.data(), df.data(), db.data(), B, T, u);
            gt::Dev dfv(f), dbv(b), ddy(dyv), dy_((size_t)(rows * w)), ddf((size_t)(rows * u)), ddb((size_t)(rows * u));
            nnl_cuda::bidir_merge(mode, dfv.d, dbv.d, dy_.d, B, T, u);
            nnl_cuda::bidir_split(mode, ddy.d, dfv.d, dbv.d, ddf.d, ddb.d, B, T, u);
            CHECK(gt::same_bits(dy_.get(), y));
            CHECK(gt::same_bits(ddf.get(), df));
            CHECK(gt::same_bits(ddb.get(), db));
        }
}

TEST_CASE("every loss and metric on the device: loss, gradient, metric sums") {
    gt::use(false);
    struct Shape { int64_t B, per, C; };
    const Shape shapes[] = {{37, 3, 10}, {1700, 1, 100}, {5000, 1, 3}};
    struct Case { const char *loss; nnl::Act fused; const char *metrics; };
    const Case cases[] = {
        {"sparse_categorical_crossentropy(from_logits=True)", nnl::ACT_LINEAR,
         "accuracy,sparse_top_k_categorical_accuracy(k=3),perplexity"},
        {"sparse_categorical_crossentropy", nnl::ACT_SOFTMAX, "sparse_top_k_categorical_accuracy(k=2),accuracy"},
        {"sparse_categorical_crossentropy", nnl::ACT_LINEAR, "accuracy,perplexity"},
        {"categorical_crossentropy(from_logits=True)", nnl::ACT_LINEAR,
         "accuracy,top_k_categorical_accuracy(k=3),perplexity,mse"},
        {"categorical_crossentropy", nnl::ACT_SOFTMAX, "categorical_accuracy,mae"},
        {"categorical_crossentropy", nnl::ACT_LINEAR, "accuracy,perplexity,binary_accuracy"},
        {"binary_crossentropy(from_logits=True)", nnl::ACT_LINEAR, "accuracy,binary_accuracy(threshold=0.3)"},
        {"binary_crossentropy", nnl::ACT_SIGMOID, "accuracy,mse,categorical_accuracy"},
        {"binary_crossentropy", nnl::ACT_LINEAR, "binary_accuracy,mae"},
        {"mse", nnl::ACT_LINEAR, "mae,mse,binary_accuracy(threshold=0.1)"},
        {"mae", nnl::ACT_LINEAR, "mse,top_k_categorical_accuracy(k=2)"},
        {"huber(delta=0.7)", nnl::ACT_LINEAR, "mae"},
    };
    uint64_t seed = 300;
    for (const Shape &sh : shapes)
        for (const Case &cs : cases) {
            CAPTURE(cs.loss);
            CAPTURE(cs.metrics);
            CAPTURE(sh.B);
            int64_t B = sh.B, Cn = sh.C, D = sh.per * Cn, n = B * D, rows = B * sh.per;
            nnl::Loss L = nnl::make_loss(cs.loss);
            L.fused = cs.fused;
            bool xent = L.kind == nnl::LOSS_SPARSE_CCE || L.kind == nnl::LOSS_CCE;
            bool logits = L.from_logits || L.fused != nnl::ACT_LINEAR;
            /* the outputs: logits in [-6, 6]; probabilities, with zeros and
               (for binary CE) values just outside [0, 1], which clipping
               must handle; a fused output is softmax/sigmoid of z */
            std::vector<float> z = gt::rnd((size_t)n, seed++, -6.f, 6.f), y = z;
            if (L.fused == nnl::ACT_SOFTMAX) {
                for (int64_t r = 0; r < rows; r++) {
                    float *p = y.data() + r * Cn;
                    float mx = *std::max_element(p, p + Cn);
                    double s = 0;
                    for (int64_t j = 0; j < Cn; j++) s += std::exp((double)p[j] - mx);
                    for (int64_t j = 0; j < Cn; j++) p[j] = (float)(std::exp((double)p[j] - mx) / s);
                }
            } else if (L.fused == nnl::ACT_SIGMOID) {
                for (auto &v : y) v = 1.f / (1.f + std::exp(-v));
            } else if (!logits && L.crossentropy()) {
                y = gt::rnd((size_t)n, seed++, L.kind == nnl::LOSS_BCE ? -0.05f : 0.f, 1.05f);
                if (L.kind != nnl::LOSS_BCE)
                    for (auto &v : y) v = std::max(0.f, v - 0.05f); /* some exact zeros */
            }
            /* targets: class ids; one-hot rows with some soft ones; 0/1 and
               fractional for binary CE; any values for the regressions */
            std::vector<float> t;
            nnl::Rng r(seed++);
            if (L.sparse()) {
                t.resize((size_t)rows);
                for (auto &v : t) v = (float)r.below((uint64_t)Cn);
            } else if (L.kind == nnl::LOSS_CCE || L.kind == nnl::LOSS_BCE) {
                t.assign((size_t)n, 0.f);
                for (int64_t q = 0; q < rows; q++) {
                    if (q % 5 == 4) { /* a soft row */
                        double s = 0;
                        for (int64_t j = 0; j < Cn; j++) s += (t[(size_t)(q * Cn + j)] = (float)r.uniform());
                        for (int64_t j = 0; j < Cn; j++) t[(size_t)(q * Cn + j)] /= (float)s;
                    } else {
                        t[(size_t)(q * Cn + (int64_t)r.below((uint64_t)Cn))] = 1.f;
                    }
                }
            } else {
                t = gt::rnd((size_t)n, seed++, -2.f, 2.f);
            }
            std::vector<nnl::Metric> ms;
            std::vector<nnl_cuda::MetricSpec> specs;
            std::string mt = cs.metrics;
            for (size_t a = 0; a <= mt.size();) {
                size_t b = mt.find(',', a);
                if (b == std::string::npos) b = mt.size();
                ms.push_back(nnl::make_metric(mt.substr(a, b - a), L, Cn));
                specs.push_back({(int)ms.back().kind, ms.back().k, ms.back().threshold});
                a = b + 1;
            }
            const float *src = logits && L.fused != nnl::ACT_LINEAR ? z.data() : y.data();
            std::vector<float> dy((size_t)n);
            double lc = L.run(y.data(), L.fused != nnl::ACT_LINEAR ? z.data() : nullptr, t.data(), B, D, Cn, dy.data());
            float invB = 1.f / (float)B;
            nnl_cuda::LossSpec spec{(int)L.kind, logits, L.delta, xent ? invB / (float)sh.per : invB / (float)D};
            gt::Dev ds(std::vector<float>(src, src + n)), dyv(y), dt(t), ddy((size_t)n);
            std::vector<double> sums(ms.size(), -1.0), sums2(ms.size(), -1.0);
            double div = xent ? (double)sh.per : (double)D;
            double lg = nnl_cuda::loss_metrics(spec, ds.d, dyv.d, dt.d, n, Cn, ddy.d, (int)ms.size(), specs.data(),
                                               sums.data()) / div;
            CHECK(std::fabs(lg - lc) <= 1e-5 * std::fabs(lc) + 1e-9);
            gt::close(ddy.get(), dy, 1e-4, 1e-6 * (double)spec.scale, "loss_metrics dy");
            /* without a gradient (evaluation): the same sums, bit for bit */
            double lg2 = nnl_cuda::loss_metrics(spec, ds.d, dyv.d, dt.d, n, Cn, nullptr, (int)ms.size(), specs.data(),
                                                sums2.data()) / div;
            CHECK(lg2 == lg);
            CHECK(sums2 == sums);
            for (size_t k = 0; k < ms.size(); k++) {
                CAPTURE(ms[k].name);
                nnl::MetricKind mk = ms[k].kind;
                bool rowwise = mk == nnl::M_SPARSE_ACC || mk == nnl::M_CAT_ACC || mk == nnl::M_SPARSE_TOPK ||
                               mk == nnl::M_TOPK;
                double mc = ms[k].run(y.data(), t.data(), B, D, Cn);
                double mg = mk == nnl::M_PERPLEXITY ? 0.0 : sums[k] / (rowwise ? (double)sh.per : (double)D);
                CHECK(std::fabs(mg - mc) <= 1e-9 * std::fabs(mc) + 1e-9);
                if (mk != nnl::M_PERPLEXITY && mk != nnl::M_MSE && mk != nnl::M_MAE)
                    CHECK(mc > 0); /* a hit count of 0 would test little */
            }
        }
}
