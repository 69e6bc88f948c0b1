/* The vectorised kernels (nnlite.cpp section 2, "one source, three
   instruction sets"): each SIMD path against the plain C++ one on lengths
   with tails, NaN and +-Inf through every activation and the GEMM epilogue,
   and the optimizers' description of themselves. Included by unit.cpp.

   Tolerances: the paths differ by FMA contraction (a few ulp) and, for the
   functions of the activations, by the vector exp/log/erf/tanh (within
   about 6 ulp of libm's, see "vector math"): 2e-6 relative, plus an
   absolute 3e-7 (1 + |x|) where a formula cancels (gelu's 1 + erf(x) for
   negative x, softmax and loss gradients near zero). */

/* The SIMD levels this CPU has: 1 AVX2 + FMA, 2 AVX-512 (level 0, plain
   C++, is the reference). Environment caps are ignored: tests set the
   level themselves. */
static std::vector<int> simd_levels() {
    std::vector<int> v;
#if NNL_X86 && defined(__OPTIMIZE__) /* -O0 builds run the plain path only (see level_from_cpu) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back(1);
    if (__builtin_cpu_supports("avx512f")) v.push_back(2);
#endif
    if (v.empty()) MESSAGE("no SIMD path on this CPU: only the plain C++ one is tested");
    return v;
}

/* Runs f() with simd::level = l, restoring it after. */
template <class F> static void at_level(int l, F f) {
    int keep = nnl::simd::level;
    nnl::simd::level = l;
    f();
    nnl::simd::level = keep;
}

static const int64_t SIMD_LENGTHS[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1001};

/* a == b within rel |b| + abs; NaN only with NaN, Inf only with itself */
static bool simd_close(double a, double b, double rel, double abs) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    if (std::isinf(a) || std::isinf(b)) return a == b;
    return std::fabs(a - b) <= rel * std::fabs(b) + abs;
}

#define SIMD_CHECK_CLOSE(a, b, abs_)                                                                               \
    do {                                                                                                           \
        double a_ = (a), b_ = (b);                                                                                 \
        if (!simd_close(a_, b_, 2e-6, (abs_))) {                                                                   \
            INFO(#a " = " << a_ << ", " #b " = " << b_);                                                           \
            CHECK(simd_close(a_, b_, 2e-6, (abs_)));                                                               \
        }                                                                                                          \
    } while (0)

struct WidthK {
    template <class V> static int run(int) { return V::W; }
};

TEST_CASE("the SIMD level follows NNL_NO_SIMD and NNL_SIMD, and picks the kernels' width") {
    for (int L : simd_levels()) {
        int w = 0;
        at_level(L, [&] { w = nnl::simd::run<WidthK>(0); });
        CHECK(w == (L == 2 ? 16 : 8));
    }
    at_level(0, [] { CHECK(nnl::simd::run<WidthK>(0) == 1); });
    const char *no = getenv("NNL_NO_SIMD"), *cap = getenv("NNL_SIMD");
    std::string no_s = no ? no : "", cap_s = cap ? cap : "";
    unsetenv("NNL_NO_SIMD");
    unsetenv("NNL_SIMD");
    int top = nnl::simd::level_from_cpu();
    setenv("NNL_SIMD", "avx2", 1);
    CHECK(nnl::simd::level_from_cpu() == std::min(top, 1));
    setenv("NNL_NO_SIMD", "1", 1);
    CHECK(nnl::simd::level_from_cpu() == 0);
    unsetenv("NNL_NO_SIMD");
    unsetenv("NNL_SIMD");
    if (no) setenv("NNL_NO_SIMD", no_s.c_str(), 1);
    if (cap) setenv("NNL_SIMD", cap_s.c_str(), 1);
}

/* vexp ... vtanh on x[0, n) */
struct VecMathK {
        template <class V> static void run(int f, const float *x, float *y, int64_t n) {
            nnl::simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
                V a = V::load(x + i, t), r;
                switch (f) {
                case 0: r = vexp(a); break;
                case 1: r = vexpm1(a); break;
                case 2: r = vlog(a); break;
                case 3: r = vlog1p(a); break;
                case 4: r = verf(a); break;
                default: r = vtanh(a);
                }
                r.store(y + i, t);
            });
        }
    };

TEST_CASE("vector math: exp, expm1, log, log1p, erf, tanh within a few ulp of libm (every SIMD path)") {
    struct Fn {
        const char *name;
        double lo, hi, ulps;
        double (*ref)(double);
    } fns[] = {{"exp", -103, 88.7, 2, [](double x) { return std::exp(x); }},
               {"expm1", -30, 30, 2, [](double x) { return std::expm1(x); }},
               {"log", 1e-30, 1e30, 2, [](double x) { return std::log(x); }},
               {"log1p", -0.99, 1, 3, [](double x) { return std::log1p(x); }},
               {"erf", -5, 5, 6, [](double x) { return std::erf(x); }},
               {"tanh", -10, 10, 5, [](double x) { return std::tanh(x); }}};
    for (int L : simd_levels())
        for (int f = 0; f < 6; f++) {
            std::vector<float> x;
            for (int i = 0; i <= 20000; i++) {
                double u = (double)i / 20000;
                x.push_back(f == 2 ? (float)std::exp(std::log(fns[f].lo) + u * (std::log(fns[f].hi) - std::log(fns[f].lo)))
                                   : (float)(fns[f].lo + u * (fns[f].hi - fns[f].lo)));
            }
            for (float v : {1e-30f, 1e-7f, 3e-4f, 0.1f})
                if (f != 2) x.push_back(v), x.push_back(f == 3 ? v : -v);
            std::vector<float> y(x.size());
            at_level(L, [&] { nnl::simd::run<VecMathK>(f, (const float *)x.data(), y.data(), (int64_t)x.size()); });
            double worst = 0;
            for (size_t i = 0; i < x.size(); i++) {
                double r = fns[f].ref(x[i]);
                if (std::fabs(r) < 1.2e-38) continue; /* denormal results: flushed or not */
                float fr = (float)std::fabs(r);
                double ulp = std::nextafter(fr, INFINITY) - fr;
                worst = std::max(worst, std::fabs(y[i] - r) / ulp);
            }
            INFO(fns[f].name << " at level " << L << ": worst " << worst << " ulp");
            CHECK(worst <= fns[f].ulps);
        }
}

/* the inputs the layers give act_backward: y itself where act_from_output */
static const float *act_back_x(nnl::Act a, const std::vector<float> &x, const std::vector<float> &y) {
    return nnl::act_from_output(a) ? y.data() : x.data();
}

TEST_CASE("SIMD activations, forward and backward, equal the scalar path on every length") {
    for (int L : simd_levels())
        for (int a = 0; a < nnl::ACT_COUNT; a++)
            for (int64_t n : SIMD_LENGTHS) {
                nnl::Act act = (nnl::Act)a;
                std::vector<float> x = random_vec((size_t)n, 300 + (unsigned)n, -8.f, 8.f);
                std::vector<float> dy = random_vec((size_t)n, 400 + (unsigned)n);
                x[0] = 0.f;
                if (n > 2) x[1] = -0.f, x[2] = 2.5f;
                std::vector<float> y0((size_t)n), y1((size_t)n), d0((size_t)n), d1((size_t)n);
                at_level(0, [&] {
                    nnl::K().act_forward(act, x.data(), y0.data(), 1, n);
                    nnl::K().act_backward(act, act_back_x(act, x, y0), y0.data(), dy.data(), d0.data(), 1, n);
                });
                at_level(L, [&] {
                    nnl::K().act_forward(act, x.data(), y1.data(), 1, n);
                    nnl::K().act_backward(act, act_back_x(act, x, y0), y0.data(), dy.data(), d1.data(), 1, n);
                });
                INFO("act " << nnl::act_names[a] << " level " << L << " n " << n);
                for (int64_t i = 0; i < n; i++) {
                    INFO("i " << i << " x " << x[(size_t)i]);
                    SIMD_CHECK_CLOSE(y1[(size_t)i], y0[(size_t)i], 3e-7 * (1 + std::fabs(x[(size_t)i])));
                    SIMD_CHECK_CLOSE(d1[(size_t)i], d0[(size_t)i], 3e-7 * (1 + std::fabs(x[(size_t)i])));
                }
            }
}

/* act(+inf), act(-inf), act'(+inf), act'(-inf) */
struct ActLimits {
    nnl::Act a;
    float fp, fm, dp, dm;
};
static const ActLimits ACT_LIMITS[] = {
    {nnl::ACT_LINEAR, INFINITY, -INFINITY, 1, 1},
    {nnl::ACT_RELU, INFINITY, 0, 1, 0},
    {nnl::ACT_SIGMOID, 1, 0, 0, 0},
    {nnl::ACT_TANH, 1, -1, 0, 0},
    {nnl::ACT_LEAKY_RELU, INFINITY, -INFINITY, 1, 0.2f},
    {nnl::ACT_ELU, INFINITY, -1, 1, 0},
    {nnl::ACT_SELU, INFINITY, -1.0507009873554805f * 1.6732632423543772f, 1.0507009873554805f, 0},
    {nnl::ACT_GELU, INFINITY, 0, 1, 0},
    {nnl::ACT_SOFTPLUS, INFINITY, 0, 1, 0},
    {nnl::ACT_SOFTSIGN, 1, -1, 0, 0},
    {nnl::ACT_SWISH, INFINITY, 0, 1, 0},
    {nnl::ACT_HARD_SIGMOID, 1, 0, 0, 0},
    {nnl::ACT_EXPONENTIAL, INFINITY, 0, INFINITY, 0},
};

TEST_CASE("NaN propagates through every activation, forward and backward, on every path; +-Inf gives the limits") {
    std::vector<int> levels = simd_levels();
    levels.insert(levels.begin(), 0);
    const int64_t n = 37; /* a tail for 8 and for 16 lanes */
    for (int L : levels)
        for (const ActLimits &lim : ACT_LIMITS) {
            INFO("act " << nnl::act_names[lim.a] << " level " << L);
            std::vector<float> x = random_vec((size_t)n, 7, -3.f, 3.f), dy((size_t)n, 1.f);
            for (int64_t i : {0, 5, 17, 33, 36}) x[(size_t)i] = NAN; /* in whole vectors and in tails */
            x[3] = INFINITY;
            x[34] = -INFINITY;
            x[35] = INFINITY;
            x[4] = -INFINITY;
            dy[9] = NAN; /* a NaN gradient from above also comes through */
            std::vector<float> y((size_t)n), dx((size_t)n);
            at_level(L, [&] {
                nnl::K().act_forward(lim.a, x.data(), y.data(), 1, n);
                nnl::K().act_backward(lim.a, act_back_x(lim.a, x, y), y.data(), dy.data(), dx.data(), 1, n);
            });
            for (int64_t i = 0; i < n; i++) {
                INFO("i " << i << " x " << x[(size_t)i] << " y " << y[(size_t)i] << " dx " << dx[(size_t)i]);
                float xi = x[(size_t)i];
                if (std::isnan(xi)) {
                    CHECK(std::isnan(y[(size_t)i]));
                    /* linear's dx is dy: the NaN reaches the loss, and so dy, instead */
                    CHECK(std::isnan(dx[(size_t)i]) == (lim.a != nnl::ACT_LINEAR || i == 9));
                } else if (std::isinf(xi)) {
                    float fy = xi > 0 ? lim.fp : lim.fm, fd = xi > 0 ? lim.dp : lim.dm;
                    if (std::isinf(fy)) CHECK(y[(size_t)i] == fy);
                    else CHECK(std::fabs(y[(size_t)i] - fy) <= 1e-6f);
                    if (std::isinf(fd)) CHECK(dx[(size_t)i] == fd);
                    else CHECK(std::fabs(dx[(size_t)i] - fd) <= 1e-6f);
                } else {
                    CHECK(std::isfinite(y[(size_t)i]));
                    CHECK(std::isnan(dx[(size_t)i]) == (i == 9));
                }
            }
        }
}

TEST_CASE("softmax: NaN in a row makes the row NaN, -Inf logits get probability 0 (every path)") {
    std::vector<int> levels = simd_levels();
    levels.insert(levels.begin(), 0);
    for (int L : levels) {
        const int64_t rows = 3, C = 19;
        std::vector<float> x = random_vec((size_t)(rows * C), 8, -3.f, 3.f), y(x.size()), dy(x.size(), 0.5f),
                           dx(x.size());
        x[(size_t)(0 * C + 17)] = NAN;       /* row 0: NaN in the tail */
        x[(size_t)(1 * C + 2)] = -INFINITY;  /* row 1: a masked logit */
        dy[(size_t)(2 * C + 4)] = NAN;       /* row 2: NaN gradient */
        at_level(L, [&] {
            nnl::K().act_forward(nnl::ACT_SOFTMAX, x.data(), y.data(), rows, C);
            nnl::K().act_backward(nnl::ACT_SOFTMAX, y.data(), y.data(), dy.data(), dx.data(), rows, C);
        });
        INFO("level " << L);
        double s1 = 0;
        for (int64_t j = 0; j < C; j++) {
            CHECK(std::isnan(y[(size_t)j]));
            CHECK(std::isnan(dx[(size_t)j]));
            s1 += y[(size_t)(C + j)];
            CHECK(std::isfinite(dx[(size_t)(C + j)]));
            CHECK(std::isnan(dx[(size_t)(2 * C + j)]));
        }
        CHECK(y[(size_t)(C + 2)] == 0.f);
        CHECK(s1 == doctest::Approx(1.0).epsilon(1e-6));
    }
}

TEST_CASE("the fused GEMM epilogue propagates NaN for every activation and SIMD path") {
    std::vector<int> levels = simd_levels();
    levels.insert(levels.begin(), 0);
    for (int L : levels)
        for (int M : {3, 7, 40}) /* the few-rows path and the blocked one */
            for (int a = 0; a < nnl::ACT_COUNT; a++) {
                nnl::Act act = (nnl::Act)a;
                const int N = 19, Kd = 5;
                auto A = random_vec((size_t)(M * Kd), 51), B = random_vec((size_t)(Kd * N), 52);
                auto bias = random_vec((size_t)N, 53);
                A[(size_t)(1 * Kd + 2)] = NAN; /* row 1 of C */
                bias[17] = NAN;                /* column 17 of C, in the tail */
                std::vector<float> C((size_t)(M * N));
                at_level(L, [&] {
                    nnl::K().sgemm_bias_act(M, N, Kd, A.data(), Kd, B.data(), N, C.data(), N, bias.data(), act);
                });
                INFO("act " << nnl::act_names[a] << " level " << L << " M " << M);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        bool nan_in = i == 1 || j == 17;
                        INFO("C[" << i << "][" << j << "] = " << C[(size_t)(i * N + j)]);
                        if (act == nnl::ACT_SOFTMAX) /* the whole row */
                            CHECK(std::isnan(C[(size_t)(i * N + j)]));
                        else
                            CHECK(std::isnan(C[(size_t)(i * N + j)]) == nan_in);
                    }
            }
}

TEST_CASE("bias and activation on rows end to end (a convolution's filters) equal them row by row, bit for bit") {
    std::vector<int> levels = simd_levels();
    levels.insert(levels.begin(), 0);
    for (int L : levels)
        for (int64_t n : {1, 3, 10, 19, 20, 50, 64})
            for (int64_t rows : {1, 2, 7, 33})
                for (int a = 0; a < nnl::ACT_COUNT; a++) {
                    nnl::Act act = (nnl::Act)a;
                    if (act == nnl::ACT_SOFTMAX) continue; /* a row of its own */
                    for (bool withb : {true, false}) {
                        auto x = random_vec((size_t)(rows * n), 61), bias = random_vec((size_t)n, 62);
                        for (auto &v : x) v *= 4.f;
                        const int64_t ld = n + 5; /* the same rows apart: the row-by-row path */
                        std::vector<float> flat = x, apart((size_t)(rows * ld), -7.f);
                        for (int64_t r = 0; r < rows; r++)
                            std::copy(x.begin() + r * n, x.begin() + (r + 1) * n, apart.begin() + r * ld);
                        at_level(L, [&] {
                            nnl::epilogue(flat.data(), n, rows, n, withb ? bias.data() : nullptr, act);
                            nnl::epilogue(apart.data(), ld, rows, n, withb ? bias.data() : nullptr, act);
                        });
                        INFO("level " << L << " n " << n << " rows " << rows << " act " << nnl::act_names[a]
                                      << " bias " << withb);
                        int bad = 0;
                        for (int64_t r = 0; r < rows; r++)
                            for (int64_t j = 0; j < n; j++) {
                                float u = flat[(size_t)(r * n + j)], v = apart[(size_t)(r * ld + j)];
                                bad += memcmp(&u, &v, sizeof u) != 0;
                            }
                        CHECK(bad == 0);
                        for (int64_t r = 0; r + 1 < rows; r++) /* the gaps untouched */
                            for (int64_t j = n; j < ld; j++) CHECK(apart[(size_t)(r * ld + j)] == -7.f);
                    }
                }
}

/* One loss on (B, D) outputs: value and gradient at simd level L. */
static double loss_at(int L, const char *spec, nnl::Act fused, const std::vector<float> &y, const std::vector<float> &z,
                      const std::vector<float> &t, int64_t B, int64_t D, int64_t C, std::vector<float> &g) {
    nnl::Loss loss = nnl::make_loss(spec);
    loss.fused = fused;
    g.assign(y.size(), 0.f);
    double l = 0;
    at_level(L, [&] { l = loss.run(y.data(), z.data(), t.data(), B, D, C, g.data()); });
    return l;
}

TEST_CASE("SIMD losses equal the scalar path (value and gradient), and a NaN output gives a NaN loss") {
    struct Case {
        const char *spec;
        nnl::Act fused;
        bool sparse, probs;
    } cases[] = {{"sparse_categorical_crossentropy", nnl::ACT_SOFTMAX, true, false},
                 {"sparse_categorical_crossentropy", nnl::ACT_LINEAR, true, true},
                 {"categorical_crossentropy(from_logits=True)", nnl::ACT_LINEAR, false, false},
                 {"categorical_crossentropy", nnl::ACT_LINEAR, false, true},
                 {"binary_crossentropy", nnl::ACT_SIGMOID, false, false},
                 {"binary_crossentropy", nnl::ACT_LINEAR, false, true},
                 {"mse", nnl::ACT_LINEAR, false, false},
                 {"mae", nnl::ACT_LINEAR, false, false},
                 {"huber(delta=0.7)", nnl::ACT_LINEAR, false, false}};
    for (int L : simd_levels())
        for (const Case &c : cases)
            for (int64_t C : {1, 7, 19, 33}) {
                bool xent = strstr(c.spec, "categorical") != nullptr;
                if (xent && C < 2) continue;
                const int64_t B = 5, D = xent ? 2 * C : C; /* two positions per sample for cross-entropy */
                std::vector<float> z = random_vec((size_t)(B * D), 61, -4.f, 4.f), y = z, t;
                if (c.probs) /* probabilities: positive, and for cross-entropy rows summing to about 1 */
                    for (auto &v : y) v = 1.f / (1.f + std::exp(-v));
                if (c.sparse)
                    for (int64_t r = 0; r < B * D / C; r++) t.push_back((float)((r * 5) % C));
                else
                    t = random_vec((size_t)(B * D), 62, 0.f, 1.f);
                std::vector<float> g0, g1;
                double l0 = loss_at(0, c.spec, c.fused, y, z, t, B, D, C, g0);
                double l1 = loss_at(L, c.spec, c.fused, y, z, t, B, D, C, g1);
                INFO(c.spec << " fused " << nnl::act_names[c.fused] << " C " << C << " level " << L);
                CHECK(std::isfinite(l0));
                SIMD_CHECK_CLOSE(l1, l0, 1e-7);
                double gmax = 0;
                for (float v : g0) gmax = std::max(gmax, (double)std::fabs(v));
                for (size_t i = 0; i < g0.size(); i++) {
                    INFO("gradient " << i);
                    SIMD_CHECK_CLOSE(g1[i], g0[i], 1e-6 * gmax);
                }
                /* a NaN output (in a tail) makes the loss NaN on both paths */
                y[y.size() - 2] = z[z.size() - 2] = NAN;
                CHECK(std::isnan(loss_at(0, c.spec, c.fused, y, z, t, B, D, C, g0)));
                CHECK(std::isnan(loss_at(L, c.spec, c.fused, y, z, t, B, D, C, g1)));
            }
}

TEST_CASE("SIMD norm loops, bias and sums equal the scalar path") {
    for (int L : simd_levels())
        for (int64_t C : {1, 5, 8, 17, 40})
            for (int64_t rows : {1, 3, 70}) {
                INFO("level " << L << " rows " << rows << " C " << C);
                int64_t n = rows * C;
                auto x = random_vec((size_t)n, 71, -2.f, 3.f), dy = random_vec((size_t)n, 72), b = random_vec((size_t)C, 73);
                auto gamma = random_vec((size_t)C, 74, 0.5f, 1.5f);
                struct Out {
                    std::vector<float> ba, bg, mean, var, ss, dx, dgam, dbet, mul;
                    double sumsq;
                } o[2];
                int lv[2] = {0, L};
                for (int k = 0; k < 2; k++) {
                    Out &r = o[k];
                    at_level(lv[k], [&] {
                        r.ba = x;
                        nnl::K().bias_add(r.ba.data(), b.data(), rows, C);
                        r.bg.assign((size_t)C, 0.f);
                        nnl::K().bias_grad(dy.data(), r.bg.data(), rows, C);
                        r.mean.assign((size_t)C, 0.f);
                        r.var.assign((size_t)C, 0.f);
                        nnl::K().moments(x.data(), rows, C, r.mean.data(), r.var.data());
                        std::vector<float> invstd((size_t)C);
                        for (int64_t c = 0; c < C; c++) invstd[(size_t)c] = 1.f / std::sqrt(o[0].var.empty() ? 1.f : o[0].var[(size_t)c] + 1e-3f);
                        r.ss.assign((size_t)n, 0.f);
                        nnl::K().scale_shift(x.data(), r.ss.data(), rows, C, gamma.data(), b.data());
                        r.dx.assign((size_t)n, 0.f);
                        r.dgam.assign((size_t)C, 0.f);
                        r.dbet.assign((size_t)C, 0.f);
                        nnl::K().bn_backward(x.data(), dy.data(), r.dx.data(), rows, C, o[0].mean.data(), invstd.data(),
                                             gamma.data(), r.dgam.data(), r.dbet.data(), true);
                        r.mul.assign((size_t)n, 0.f);
                        nnl::K().mul(x.data(), dy.data(), r.mul.data(), n);
                        r.sumsq = nnl::K().sumsq(x.data(), n, nullptr);
                    });
                }
                auto same = [&](const std::vector<float> &u, const std::vector<float> &v, double abs, const char *what) {
                    REQUIRE(u.size() == v.size());
                    for (size_t i = 0; i < u.size(); i++) {
                        INFO(what << " " << i);
                        SIMD_CHECK_CLOSE(u[i], v[i], abs);
                    }
                };
                same(o[1].ba, o[0].ba, 0, "bias_add");
                same(o[1].bg, o[0].bg, 0, "bias_grad");
                same(o[1].mean, o[0].mean, 1e-7, "mean");
                same(o[1].var, o[0].var, 1e-7, "var");
                same(o[1].ss, o[0].ss, 1e-7, "scale_shift");
                same(o[1].dx, o[0].dx, 1e-6, "bn dx");
                same(o[1].dgam, o[0].dgam, 1e-6 * rows, "bn dgamma");
                same(o[1].dbet, o[0].dbet, 0, "bn dbeta");
                same(o[1].mul, o[0].mul, 0, "mul");
                /* float partial sums of 256 elements (one per lane): the order differs */
                CHECK(simd_close(o[1].sumsq, o[0].sumsq, 1e-5, 0));
            }
}

TEST_CASE("sumsq: four blocks at a time give the bits of one block at a time; its flag catches NaN, Inf and "
          "overflow") {
    /* SumsqK sums four whole blocks of 256 at once (four chains of
       multiply-adds); a call on fewer than 1024 floats takes the loop over
       one block at a time, so the sum of the calls on each block, in order,
       is the same double to the bit */
    for (int L : simd_levels())
        for (int64_t n : {255, 256, 1024, 1300, 4096, 3 * 1024 + 517}) {
            INFO("level " << L << " n " << n);
            auto x = random_vec((size_t)n, 91, -3.f, 3.f);
            at_level(L, [&] {
                bool finite = false;
                double whole = nnl::K().sumsq(x.data(), n, &finite), blocks = 0;
                CHECK(finite);
                for (int64_t b = 0; b < n; b += 256)
                    blocks += nnl::K().sumsq(x.data() + b, std::min<int64_t>(256, n - b), nullptr);
                CHECK(memcmp(&whole, &blocks, sizeof whole) == 0);
                double exact = 0;
                for (float v : x) exact += (double)v * v;
                CHECK(std::fabs(whole - exact) <= 1e-5 * exact);
                /* one bad value anywhere (in the four-block part and in the tail) */
                for (int64_t at : {(int64_t)0, n / 2, n - 1})
                    for (float bad : {NAN, INFINITY, -INFINITY, 3e19f /* its square overflows a float */}) {
                        auto y = x;
                        y[(size_t)at] = bad;
                        nnl::K().sumsq(y.data(), n, &finite);
                        INFO("at " << at << " value " << bad);
                        CHECK_FALSE(finite);
                    }
            });
        }
}

/* Three steps of `spec` on two tensors (odd lengths) at simd level L and
   thread count T; returns the weights then every slot. */
static std::vector<float> optimizer_run(const char *spec, int L, int T) {
    std::unique_ptr<nnl::Optimizer> opt = nnl::make_optimizer(spec);
    const int64_t n1 = 10007, n2 = 37; /* n1: enough work for par_for to split it between two threads */
    std::vector<float> w = random_vec((size_t)(n1 + n2), 81, -1.f, 1.f), g((size_t)(n1 + n2));
    nnl::ParamSlice p[2] = {{w.data(), g.data(), n1}, {w.data() + n1, g.data() + n1, n2}};
    int keep = nnl::g_threads;
    nnl::g_threads = T;
    for (int step = 0; step < 3; step++) {
        auto r = random_vec(w.size(), 82 + (unsigned)step, -0.5f, 0.5f);
        for (size_t i = 0; i < w.size(); i++) g[i] = 2 * w[i] + r[i] + (i % 97 == 0 ? 3.f : 0.f); /* some clipped */
        at_level(L, [&] { opt->apply(p, 2); });
    }
    nnl::g_threads = keep;
    std::vector<float> out = w;
    for (auto &s : opt->slots) out.insert(out.end(), s.begin(), s.end());
    return out;
}

static const char *const OPT_SPECS[] = {
    "SGD(learning_rate=0.1)", "SGD(learning_rate=0.1, momentum=0.9)",
    "SGD(learning_rate=0.1, momentum=0.9, nesterov=True)", "RMSprop(learning_rate=0.01)",
    "RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-4, centered=True)",
    "RMSprop(learning_rate=0.01, centered=True)", "Adagrad(learning_rate=0.1)", "Adadelta(learning_rate=1.0)",
    "Adam(learning_rate=0.01)", "Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True)",
    "AdamW(learning_rate=0.01, weight_decay=0.1)", "Adamax(learning_rate=0.1)", "Nadam(learning_rate=0.01)",
    "SGD(learning_rate=0.1, clipvalue=0.3)", "SGD(learning_rate=0.1, clipnorm=2.0)",
    "Adam(learning_rate=0.01, global_clipnorm=3.0, decay=0.5)"};

/* vsqrt_nr (Adam's square root) on x[0, n) */
struct SqrtNrK {
    template <class V> static void run(const float *x, float *y, int64_t n) {
        nnl::simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE { vsqrt_nr(V::load(x + i, t)).store(y + i, t); });
    }
};

TEST_CASE("vsqrt_nr (Adam's square root): within one ulp of sqrt, rarely off, specials unchanged") {
    /* one normal float in 61 from FLT_MIN up, against std::sqrt's bits, in
       chunks; then 0, -0, +inf, NaN, a subnormal (as they went in) and FLT_MAX */
    const int64_t C = 1 << 20;
    std::vector<float> x((size_t)C), y((size_t)C);
    for (int L : simd_levels()) {
        int64_t off1 = 0, worse = 0, n = 0;
        for (uint64_t u = 0x00800000u; u < 0x7f800000u;) {
            int64_t m = 0;
            for (; m < C && u < 0x7f800000u; m++, u += 61) {
                uint32_t b = (uint32_t)u;
                memcpy(&x[(size_t)m], &b, 4);
            }
            at_level(L, [&] { nnl::simd::run<SqrtNrK>((const float *)x.data(), y.data(), m); });
            for (int64_t i = 0; i < m; i++) {
                float e = std::sqrt(x[(size_t)i]);
                int32_t ue, uo;
                memcpy(&ue, &e, 4);
                memcpy(&uo, &y[(size_t)i], 4);
                off1 += ue != uo;
                worse += std::abs(ue - uo) > 1;
            }
            n += m;
        }
        INFO("level " << L << ": " << off1 << " of " << n << " roots one ulp off");
        CHECK(worse == 0);
        CHECK(off1 < n / 500); /* measured: 0.09 % */
        const float sp[] = {0.f, -0.f, INFINITY, NAN, 1e-40f, FLT_MAX};
        float got[6];
        at_level(L, [&] { nnl::simd::run<SqrtNrK>(sp, got, (int64_t)6); });
        for (int i = 0; i < 6; i++) {
            float want = sp[i] == FLT_MAX ? std::sqrt(sp[i]) : sp[i];
            INFO("x = " << sp[i]);
            CHECK(memcmp(&got[i], &want, 4) == 0);
        }
    }
}

TEST_CASE("SIMD optimizer updates equal the scalar path, and do not depend on the thread count") {
    for (const char *spec : OPT_SPECS) {
        INFO("optimizer " << std::string(spec));
        std::vector<float> ref = optimizer_run(spec, 0, 1);
        for (int L : simd_levels()) {
            std::vector<float> one = optimizer_run(spec, L, 1), two = optimizer_run(spec, L, 2);
            CHECK(one == two); /* masked tails: the same arithmetic wherever a thread's range starts */
            REQUIRE(one.size() == ref.size());
            for (size_t i = 0; i < ref.size(); i++) {
                INFO("level " << L << " value " << i);
                SIMD_CHECK_CLOSE(one[i], ref[i], 1e-7);
            }
        }
    }
}

TEST_CASE("an optimizer describes itself: class, slots, step scalars, extra state, config") {
    struct Want {
        const char *spec, *cls;
        int slots;
        nnl::OptKind kind;
    } want[] = {{"sgd", "SGD", 0, nnl::OPT_SGD},
                {"SGD(momentum=0.5)", "SGD", 1, nnl::OPT_SGD_MOMENTUM},
                {"rmsprop", "RMSprop", 3, nnl::OPT_RMSPROP},
                {"adagrad", "Adagrad", 1, nnl::OPT_ADAGRAD},
                {"adadelta", "Adadelta", 2, nnl::OPT_ADADELTA},
                {"adam", "Adam", 2, nnl::OPT_ADAM},
                {"Adam(amsgrad=True)", "Adam", 3, nnl::OPT_ADAM},
                {"adamw", "AdamW", 2, nnl::OPT_ADAM},
                {"adamax", "Adamax", 2, nnl::OPT_ADAMAX},
                {"nadam", "Nadam", 2, nnl::OPT_NADAM}};
    for (const Want &w : want) {
        INFO(w.spec);
        std::unique_ptr<nnl::Optimizer> o = nnl::make_optimizer(w.spec);
        CHECK(std::string(o->cls()) == w.cls);
        CHECK(o->nslots() == w.slots);
        nnl::OptStep s = o->step(o->learning_rate);
        CHECK(s.kind == w.kind);
        CHECK(s.lr == (float)o->learning_rate);
        /* its config makes the same optimizer: the same config and the same step */
        std::string cfg = o->config();
        std::unique_ptr<nnl::Optimizer> again = nnl::make_optimizer(cfg);
        CHECK(again->config() == cfg);
        nnl::OptStep s2 = again->step(again->learning_rate);
        const float f1[] = {s.lr, s.momentum, s.rho, s.eps, s.b1c, s.b2c, s.b2, s.alpha, s.wd, s.a1, s.a2, s.vb, s.step};
        const float f2[] = {s2.lr, s2.momentum, s2.rho, s2.eps, s2.b1c, s2.b2c, s2.b2, s2.alpha, s2.wd, s2.a1, s2.a2,
                            s2.vb, s2.step};
        for (size_t i = 0; i < sizeof f1 / sizeof f1[0]; i++) CHECK(f1[i] == f2[i]);
        CHECK((s.kind == s2.kind && s.nesterov == s2.nesterov && s.centered == s2.centered && s.amsgrad == s2.amsgrad));
        /* the slots it says it keeps are the slots a step lays out */
        float wt[5] = {1, 2, 3, 4, 5}, g[5] = {0.5f, -0.5f, 0.25f, 1, -1};
        nnl::ParamSlice p{wt, g, 5};
        o->apply(&p, 1);
        CHECK((int)o->slots.size() == w.slots);
        CHECK(o->extra_state().size() == (strcmp(w.cls, "Nadam") ? 0u : 1u));
    }
    /* Keras' argument names, every option spelt out */
    CHECK(nnl::make_optimizer("Adam(0.01, amsgrad=True, clipnorm=1)")->config() ==
          "Adam(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-07, amsgrad=True, clipnorm=1)");
    /* Nadam's product of momentum factors is its extra state, saved as "u_product" */
    std::unique_ptr<nnl::Optimizer> n = nnl::make_optimizer("Nadam(learning_rate=0.01)");
    float wt[3] = {1, 2, 3}, g[3] = {0.1f, 0.2f, 0.3f};
    nnl::ParamSlice p{wt, g, 3};
    n->apply(&p, 1);
    n->apply(&p, 1);
    auto ex = n->extra_state();
    REQUIRE(ex.size() == 1);
    CHECK(std::string(ex[0].key) == "u_product");
    double u1 = 0.9 * (1 - 0.5 * std::pow(0.96, 1)), u2 = 0.9 * (1 - 0.5 * std::pow(0.96, 2));
    CHECK(*ex[0].value == doctest::Approx(u1 * u2).epsilon(1e-15));
}

TEST_CASE("col2im equals the tap-by-tap scatter bit for bit, at every SIMD level, on 1 and 2 threads") {
    /* runs of KW * C floats where a position's taps along W are inside, a
       run per tap elsewhere (padding, dilation, strides), 1-D and 3-D */
    using W = WinSpec;
    const W ws[] = {{2, {1, 14, 14}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "same"},
                    {2, {1, 12, 12}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 26, 26}, 32, {1, 3, 3}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 13, 11}, 3, {1, 3, 2}, {1, 2, 3}, {1, 1, 1}, "same"},
                    {2, {1, 12, 13}, 2, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}, "same"},
                    {2, {1, 9, 9}, 1, {1, 7, 7}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {1, {1, 1, 50}, 7, {1, 1, 3}, {1, 1, 1}, {1, 1, 2}, "causal"},
                    {3, {5, 6, 7}, 2, {2, 2, 3}, {1, 1, 1}, {1, 1, 1}, "same"}};
    const int64_t n = 3;
    int keep = nnl::g_threads;
    std::vector<int> levels = simd_levels();
    levels.insert(levels.begin(), 0);
    for (auto &w : ws) {
        const nnl::Window g = test_window(w);
        const int64_t P = g.out_size(), C = g.C, row = g.kvol() * C, S = g.in_size() * C;
        auto col = random_vec((size_t)(n * P * row), 43);
        std::vector<float> ref((size_t)(n * S), 0.f);
        for (int64_t b = 0; b < n; b++)
            for (int64_t p = 0; p < P; p++) {
                int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
                const float *c = col.data() + (b * P + p) * row;
                nnl::for_taps(g, od, oh, ow, [&](int64_t pos, int64_t j) {
                    for (int64_t q = 0; q < C; q++) ref[(size_t)(b * S + pos * C + q)] += c[j * C + q];
                });
            }
        for (int L : levels)
            for (int threads : {1, 2}) {
                nnl::g_threads = threads;
                std::vector<float> dx((size_t)(n * S + 16), -3.f);
                at_level(L, [&] { nnl::cpu_col2im(g, col.data(), dx.data(), n); });
                INFO("in " << g.in[0] << "x" << g.in[1] << "x" << g.in[2] << " C=" << C << " " << w.pad << " level=" << L
                           << " threads=" << threads);
                CHECK(memcmp(dx.data(), ref.data(), ref.size() * sizeof(float)) == 0);
                CHECK(std::all_of(dx.begin() + (ptrdiff_t)ref.size(), dx.end(), [](float v) { return v == -3.f; }));
            }
    }
    nnl::g_threads = keep;
}
