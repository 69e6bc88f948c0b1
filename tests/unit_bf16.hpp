/* Mixed precision (issue 14, since 0.6): the bfloat16 GEMM (gemm::bf16)
   against a double reference on the bf16-rounded operands, the
   AVX512-BF16 kernel against the portable emulation, nnl_set_precision and
   nnl_get_precision, and models trained in mixed_bfloat16 against float32.
   On a CPU without AVX512-BF16 the hardware cases say so (MESSAGE) and the
   rest run on the emulation (NNL_BF16=emulate). Included by unit.cpp. */
#include <array>
#include <cstdlib>
#include <thread>

namespace {

bool bf16_cpu() { return nnl::gemm::bf16::hardware(); }

/* NNL_BF16 set (or unset: NULL) for the scope, restored after */
struct Bf16Env {
    std::string old;
    bool had;
    explicit Bf16Env(const char *v) {
        const char *o = getenv("NNL_BF16");
        had = o != nullptr;
        if (o) old = o;
        if (v)
            setenv("NNL_BF16", v, 1);
        else
            unsetenv("NNL_BF16");
    }
    ~Bf16Env() {
        if (had)
            setenv("NNL_BF16", old.c_str(), 1);
        else
            unsetenv("NNL_BF16");
    }
};

typedef void (*Bf16Gemm)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t,
                         float, float *, int64_t);

/* The largest error of C (from `gemm`) against the double product of the
   bf16-rounded operands, in units of the float32 accumulation bound
   (K + 2) * 2^-24 * (|alpha| sum |a b| + |beta c|): at most 1 when every
   operand was rounded as VCVTNE2PS2BF16 rounds it and the sums are float32.
   *unrounded: the largest relative distance to the product of the
   unrounded operands (it shows that rounding happened). */
double bf16_error(Bf16Gemm gemm, bool ta, bool tb, int M, int N, int K, float alpha, float beta, unsigned seed,
                  double *unrounded) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    auto A = random_vec((size_t)(ta ? K : M) * lda, seed), B = random_vec((size_t)(tb ? N : K) * ldb, seed + 1);
    auto C = random_vec((size_t)M * ldc, seed + 2), C0 = C;
    gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    double worst = 0, far = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, sa = 0, s32 = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                double p = (double)nnl::gemm::bf16::rounded(a) * nnl::gemm::bf16::rounded(b);
                s += p, sa += std::fabs(p), s32 += (double)a * b;
            }
            double c0 = C0[i * ldc + j], ref = alpha * s + (beta == 0.f ? 0.0 : beta * c0);
            double bound = (K + 2) * std::ldexp(1.0, -24) * (std::fabs(alpha) * sa + std::fabs(beta * c0)) + 1e-30;
            double d = std::fabs(C[i * ldc + j] - ref) / bound;
            if (!(d <= worst)) worst = d; /* a NaN stays: std::max would drop it */
            double full = alpha * s32 + (beta == 0.f ? 0.0 : beta * c0);
            far = std::max(far, std::fabs(C[i * ldc + j] - full) / (1e-3 + std::fabs(full)));
            for (int jj = N; jj < ldc && j == N - 1; jj++) /* the padding between rows is never written */
                if (C[i * ldc + jj] != C0[i * ldc + jj]) worst = 1e30;
        }
    if (unrounded) *unrounded = far;
    return worst;
}

} // namespace

TEST_CASE("bf16 GEMM: the product of the rounded operands, summed in float32, every transpose and edge") {
    struct Case {
        int M, N, K;
    } cases[] = {{1, 1, 1},    {3, 5, 2},     {4, 40, 37},   {5, 17, 7},    {6, 16, 256},   {7, 33, 255},
                 {13, 31, 300}, {200, 35, 71}, {97, 600, 9}, {250, 130, 521}, {61, 97, 513}, {2, 300, 50},
                 {64, 64, 64},  {32, 48, 32},  {40, 16, 544}}; /* whole tiles and blocks; 16 pairs past KC */
    /* each kernel under its NNL_BF16 (the hardware ones: alpha 1 and beta 0
       or 1 also, where AMX moves whole blocks straight between C and its
       tiles) */
    struct Kernel {
        const char *name, *env;
        Bf16Gemm gemm;
    };
    std::vector<Kernel> kernels = {{"emulated", "emulate", nnl::gemm::bf16::sgemm<false>}};
    if (bf16_cpu()) {
        kernels.push_back({"AVX512-BF16", "avx512", nnl::gemm::bf16::sgemm<true>});
        if (nnl::gemm::bf16::amx())
            kernels.push_back({"AMX", nullptr, nnl::gemm::bf16::sgemm<true>});
        else
            MESSAGE("no AMX on this CPU (or the kernel refuses it): the AMX bf16 GEMM is not tested");
    } else {
        MESSAGE("no AVX512-BF16 on this CPU (or NNL_BF16, NNL_NO_SIMD turn it off): only the emulated bf16 GEMM is tested");
    }
    const char *prior = getenv("NNL_BF16");
    for (auto &kn : kernels) {
        Bf16Env env(kn.env ? kn.env : prior);
        const bool hw = kn.gemm == nnl::gemm::bf16::sgemm<true>;
        for (int threads : {1, 2}) {
            nnl::g_threads = threads;
            for (auto c : cases)
                for (int ta = 0; ta < 2; ta++)
                    for (int tb = 0; tb < 2; tb++)
                        for (float alpha : {1.5f, 1.f})
                            for (float beta : {0.f, 0.5f, 1.f}) {
                                if (!hw && (alpha == 1.f || beta == 1.f)) continue; /* slow: one set */
                                double far = 0;
                                double e = bf16_error(kn.gemm, ta, tb, c.M, c.N, c.K, alpha, beta, 11, &far);
                                INFO(kn.name << " M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << ta
                                             << " tb=" << tb << " alpha=" << alpha << " beta=" << beta
                                             << " threads=" << threads);
                                CHECK(e <= 1.0);
                                if (c.K >= 7) CHECK(far > 1e-4); /* the operands were rounded: not float32 */
                            }
        }
    }
    nnl::g_threads = 0;
}

TEST_CASE("bf16 GEMM: a product after one over NaNs is untouched by them (the packed buffers' padding is cleared)") {
    /* the packing buffers are reused: a depth that is no whole number of
       the kernel's steps (AMX: 16 pairs) is padded with zeros on both
       sides, never with what the last product left there */
    std::vector<std::pair<const char *, const char *>> kernels = {{"emulated", "emulate"}};
    if (bf16_cpu()) kernels.push_back({"AVX512-BF16", "avx512"});
    if (bf16_cpu() && nnl::gemm::bf16::amx()) kernels.push_back({"AMX", nullptr});
    const char *prior = getenv("NNL_BF16");
    nnl::g_threads = 1; /* the calling thread's buffers, both products */
    for (auto &kn : kernels) {
        Bf16Env env(kn.second ? kn.second : prior);
        Bf16Gemm g = kn.second && !strcmp(kn.second, "emulate") ? nnl::gemm::bf16::sgemm<false> : nnl::gemm::bf16::sgemm<true>;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int M = 40, N = 40, K = 64;
                std::vector<float> A((size_t)M * K, NAN), B((size_t)K * N, NAN), C((size_t)M * N);
                g(ta, tb, M, N, K, 1.f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.f, C.data(), N);
                CHECK(std::isnan(C[0]));
                INFO(kn.first << " ta=" << ta << " tb=" << tb);
                CHECK(bf16_error(g, ta, tb, M, N, 7, 1.f, 0.f, 5, nullptr) <= 1.0); /* 4 pairs of 16 */
            }
    }
    nnl::g_threads = 0;
}

TEST_CASE("bf16 GEMM: the AVX512-BF16 kernel and the emulation agree") {
    if (!bf16_cpu()) {
        MESSAGE("no AVX512-BF16 on this CPU (or NNL_BF16, NNL_NO_SIMD turn it off): nothing to compare the emulation with");
        return;
    }
    Bf16Env env("avx512"); /* not AMX, which rounds its sums its own way */
    double worst = 0;
    int64_t differ = 0, total = 0;
    for (int M : {29, 1, 2, 3, 4}) /* M <= 4: B streamed in place (small_m_avx512), the emulation packs it */
    for (int K : {1, 2, 31, 256, 257, 700}) {
        int N = 70;
        auto A = random_vec((size_t)M * K, 21, -2.f, 2.f), B = random_vec((size_t)K * N, 22, -2.f, 2.f);
        std::vector<float> c1((size_t)M * N), c2((size_t)M * N);
        nnl::gemm::bf16::sgemm<true>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, c1.data(), N);
        nnl::gemm::bf16::sgemm<false>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, c2.data(), N);
        for (size_t i = 0; i < c1.size(); i++) {
            worst = std::max(worst, (double)std::fabs(c1[i] - c2[i]) / (1.0 + std::fabs(c2[i])));
            differ += c1[i] != c2[i];
            total++;
        }
    }
    MESSAGE("AVX512-BF16 vs emulation: " << differ << " of " << total << " elements differ, largest "
                                          << worst << " relative");
    CHECK(worst < 1e-5);
}

TEST_CASE("bf16 GEMM: a few rows (B read in place) give the bits of the same rows in a larger product") {
    if (!bf16_cpu()) {
        MESSAGE("no AVX512-BF16 on this CPU (or NNL_BF16, NNL_NO_SIMD turn it off): the few-row path does not run");
        return;
    }
    Bf16Env env("avx512"); /* the packed product on VDPBF16PS too (not AMX's own sums) */
    nnl::g_threads = 1;
    for (int K : {1, 2, 3, 31, 256, 257, 700})
        for (int N : {1, 15, 16, 70, 129})
            for (float beta : {0.f, 1.f}) {
                const int Mbig = 29;
                /* wide-ranging values, tiny ones included (VDPBF16PS flushes denormal products and sums) */
                auto A = random_vec((size_t)Mbig * K, 41, -3.f, 3.f), B = random_vec((size_t)K * N, 42, -3.f, 3.f);
                for (size_t i = 0; i < A.size(); i += 7) A[i] *= 1e-20f;
                for (size_t i = 3; i < B.size(); i += 11) B[i] *= 1e-19f;
                auto C0 = random_vec((size_t)Mbig * N, 43);
                std::vector<float> big = C0;
                nnl::gemm::bf16::sgemm<true>(false, false, Mbig, N, K, 0.5f, A.data(), K, B.data(), N, beta, big.data(), N);
                for (int M = 1; M <= 4; M++) {
                    std::vector<float> few(C0.begin(), C0.begin() + (size_t)M * N);
                    nnl::gemm::bf16::sgemm<true>(false, false, M, N, K, 0.5f, A.data(), K, B.data(), N, beta, few.data(), N);
                    int64_t differ = 0;
                    for (size_t i = 0; i < few.size(); i++) differ += memcmp(&few[i], &big[i], sizeof(float)) != 0;
                    INFO("M=" << M << " N=" << N << " K=" << K << " beta=" << beta);
                    CHECK(differ == 0);
                }
            }
    nnl::g_threads = 0;
}

TEST_CASE("bf16 GEMM: the bias and activation epilogue equals the product, bias_add and act_forward") {
    std::vector<std::pair<const char *, const nnl::Kernels *>> tables = {{"emulated", &nnl::bf16_emulated_kernels}};
    if (bf16_cpu()) tables.push_back({"AVX512-BF16", &nnl::bf16_kernels});
    for (auto &t : tables) {
        CHECK(nnl::kernels_complete(*t.second));
        for (nnl::Act act : {nnl::ACT_LINEAR, nnl::ACT_RELU, nnl::ACT_TANH, nnl::ACT_SIGMOID})
            for (auto c : {std::array<int, 3>{3, 10, 20}, std::array<int, 3>{50, 70, 33}, std::array<int, 3>{300, 20, 9}}) {
                int M = c[0], N = c[1], K = c[2];
                auto A = random_vec((size_t)M * K, 31), B = random_vec((size_t)K * N, 32), bias = random_vec(N, 33);
                std::vector<float> fused((size_t)M * N), ref((size_t)M * N);
                t.second->sgemm_bias_act(M, N, K, A.data(), K, B.data(), N, fused.data(), N, bias.data(), act);
                t.second->sgemm(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, ref.data(), N);
                nnl::cpu_kernels.bias_add(ref.data(), bias.data(), M, N);
                nnl::cpu_kernels.act_forward(act, ref.data(), ref.data(), 1, (int64_t)M * N);
                double worst = 0;
                for (size_t i = 0; i < ref.size(); i++)
                    worst = std::max(worst, (double)std::fabs(fused[i] - ref[i]) / (1.0 + std::fabs(ref[i])));
                INFO(t.first << " act=" << nnl::act_names[act] << " M=" << M << " N=" << N << " K=" << K);
                CHECK(worst < 1e-6);
            }
    }
}

namespace {
/* Input(8) -> Dense(5, no bias): the output is x W, one GEMM */
nnl_model *bf16_linear() {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 3) == NNL_OK);
    REQUIRE(nnl_add(m, "Input((8,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(5, use_bias=False)") == NNL_OK);
    return m;
}
} // namespace

TEST_CASE("bf16 precision: set and get, names, the unsupported CPU, weights stay float32") {
    Bf16Env env(bf16_cpu() ? nullptr : "emulate");
    nnl_model *m = bf16_linear();
    CHECK(std::string(nnl_get_precision(m)) == "float32");
    CHECK(std::string(nnl_get_precision(nullptr)).empty());
    CHECK(nnl_has_feature("bf16") == (bf16_cpu() ? 1 : 0));

    /* bad names and NULL: NNL_ERR_ARGUMENT naming the call and the accepted names */
    for (const char *bad : {"bfloat16", "mixed_float16", "Float32", ""}) {
        CHECK(nnl_set_precision(m, bad) == NNL_ERR_ARGUMENT);
        std::string e = nnl_last_error();
        CHECK(e.find("nnl_set_precision") != std::string::npos);
        CHECK(e.find("float32, mixed_bfloat16") != std::string::npos);
    }
    CHECK(nnl_set_precision(m, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_set_precision(nullptr, "float32") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_get_precision(m)) == "float32");

    /* a CPU without the feature (NNL_BF16=off stands in for one): refused, the model stays float32 */
    {
        Bf16Env off("off");
        CHECK(nnl_has_feature("bf16") == 0);
        CHECK(nnl_set_precision(m, "mixed_bfloat16") == NNL_ERR_UNSUPPORTED);
        CHECK(std::string(nnl_last_error()).find("AVX512-BF16") != std::string::npos);
        CHECK(std::string(nnl_get_precision(m)) == "float32");
    }

    /* before compile, predict: the output is the bf16 product of x and W */
    const int n = 37;
    auto x = random_vec((size_t)n * 8, 41);
    int64_t xs[2] = {n, 8};
    std::vector<float> W(40), y32((size_t)n * 5), y16((size_t)n * 5), ref((size_t)n * 5), again((size_t)n * 5);
    REQUIRE(nnl_get_weight(m, 0, W.data(), 40) == NNL_OK);
    REQUIRE(nnl_predict(m, x.data(), 2, xs, 16, y32.data(), n * 5) == NNL_OK);
    REQUIRE(nnl_set_precision(m, "mixed_bfloat16") == NNL_OK);
    CHECK(std::string(nnl_get_precision(m)) == "mixed_bfloat16");
    REQUIRE(nnl_predict(m, x.data(), 2, xs, 16, y16.data(), n * 5) == NNL_OK);
    Bf16Gemm g16 = bf16_cpu() ? nnl::gemm::bf16::sgemm<true> : nnl::gemm::bf16::sgemm<false>;
    for (int b0 = 0; b0 < n; b0 += 16) /* batch by batch, as predict runs */
        g16(false, false, std::min(16, n - b0), 5, 8, 1.f, x.data() + b0 * 8, 8, W.data(), 5, 0.f,
            ref.data() + b0 * 5, 5);
    CHECK(y16 == ref);
    CHECK(y16 != y32);
    CHECK(nnl::tl_kernels == nullptr); /* the scope ended with the call */

    /* concurrent predictions: the inference copies compute in bf16 too */
#if NNL_THREADS
    {
        std::vector<std::vector<float>> outs(4, std::vector<float>((size_t)n * 5));
        std::vector<std::thread> th;
        for (int t = 0; t < 4; t++)
            th.emplace_back([&, t] {
                for (int rep = 0; rep < 20; rep++)
                    if (nnl_predict(m, x.data(), 2, xs, 16, outs[(size_t)t].data(), n * 5) != NNL_OK) outs[(size_t)t].clear();
            });
        for (auto &t : th) t.join();
        for (auto &o : outs) CHECK(o == ref);
    }
#endif

    /* the GPU is refused while in mixed_bfloat16 (the CPU stays fine) */
    CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("mixed_bfloat16") != std::string::npos);
    CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    CHECK(std::string(nnl_get_precision(m)) == "mixed_bfloat16");

    /* back to float32: the float32 output again, bit for bit */
    REQUIRE(nnl_set_precision(m, "float32") == NNL_OK);
    REQUIRE(nnl_predict(m, x.data(), 2, xs, 16, again.data(), n * 5) == NNL_OK);
    CHECK(again == y32);

    /* after compile, one SGD step with a step far below bf16's resolution:
       the float32 master weights take it */
    REQUIRE(nnl_set_precision(m, "mixed_bfloat16") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=1e-5)", "mse", nullptr) == NNL_OK);
    CHECK(std::string(nnl_get_precision(m)) == "mixed_bfloat16");
    std::vector<float> t((size_t)n * 5, 1.f), W1(40);
    int64_t ts[2] = {n, 5};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 1;
    o.batch_size = n;
    o.verbose = 0;
    o.shuffle = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 2, xs, t.data(), NNL_FLOAT32, 2, ts, &o) == NNL_OK, nnl_last_error());
    REQUIRE(nnl_get_weight(m, 0, W1.data(), 40) == NNL_OK);
    int moved = 0, off_grid = 0;
    for (int i = 0; i < 40; i++) {
        moved += W1[(size_t)i] != W[(size_t)i];
        off_grid += W1[(size_t)i] != nnl::gemm::bf16::rounded(W1[(size_t)i]);
        CHECK(std::fabs(W1[(size_t)i] - W[(size_t)i]) < 1e-3f);
    }
    CHECK(moved >= 35);
    CHECK(off_grid >= 35); /* not bf16 values: the weights are kept in float32 */
    CHECK(std::string(nnl_get_precision(m)) == "mixed_bfloat16");
    nnl_model_free(m);
}

namespace {
/* Loss and accuracy of `layers` trained `epochs` on a seeded synthetic
   4-class task (the class: the quadrant of two noisy feature sums), then
   evaluated on held-out samples, in the given precision. */
std::pair<double, double> bf16_train(const std::vector<const char *> &layers, const std::vector<int64_t> &per,
                                     const char *precision, int epochs) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 5) == NNL_OK);
    for (const char *l : layers) REQUIRE_MESSAGE(nnl_add(m, l) == NNL_OK, nnl_last_error());
    REQUIRE(nnl_set_precision(m, precision) == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.003)", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    int64_t d = 1;
    for (int64_t v : per) d *= v;
    const int64_t n = 1200, nt = 400;
    std::vector<float> x((size_t)((n + nt) * d));
    std::vector<int32_t> y((size_t)(n + nt));
    std::mt19937 g(9);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int64_t i = 0; i < n + nt; i++) {
        double s0 = 0, s1 = 0;
        for (int64_t k = 0; k < d; k++) {
            float v = nd(g);
            x[(size_t)(i * d + k)] = v;
            (k % 2 ? s1 : s0) += v * (1.0 + (double)(k % 5) / 5);
        }
        y[(size_t)i] = (s0 > 0) * 2 + (s1 > 0);
    }
    std::vector<int64_t> xs{n};
    xs.insert(xs.end(), per.begin(), per.end());
    int64_t ys[1] = {n};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = 32;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), (int)xs.size(), xs.data(), y.data(), NNL_INT32, 1, ys, &o) == NNL_OK,
                    nnl_last_error());
    xs[0] = nt;
    ys[0] = nt;
    double out[2] = {0, 0};
    REQUIRE(nnl_evaluate(m, x.data() + n * d, (int)xs.size(), xs.data(), y.data() + n, NNL_INT32, 1, ys, 100, out, 2) ==
            NNL_OK);
    CHECK(std::string(nnl_get_precision(m)) == precision);
    nnl_model_free(m);
    return {out[0], out[1]};
}
} // namespace

TEST_CASE("bf16 training: mixed_bfloat16 reaches the float32 loss and accuracy (Dense, Conv2D, LSTM)") {
    Bf16Env env(bf16_cpu() ? nullptr : "emulate");
    if (!bf16_cpu()) MESSAGE("no AVX512-BF16 on this CPU (or NNL_BF16, NNL_NO_SIMD turn it off): the models train on the emulation (NNL_BF16=emulate)");
    struct Spec {
        const char *what;
        std::vector<const char *> layers;
        std::vector<int64_t> per;
    } specs[] = {
        {"MLP", {"Input((40,))", "Dense(64, activation='relu')", "Dense(32, activation='tanh')", "Dense(4, activation='softmax')"}, {40}},
        {"CNN", {"Input((8, 8, 2))", "Conv2D(8, 3, activation='relu')", "Flatten()", "Dense(4, activation='softmax')"}, {8, 8, 2}},
        {"LSTM", {"Input((5, 8))", "LSTM(16)", "Dense(4, activation='softmax')"}, {5, 8}},
    };
    for (auto &s : specs) {
        auto f32 = bf16_train(s.layers, s.per, "float32", 6);
        auto b16 = bf16_train(s.layers, s.per, "mixed_bfloat16", 6);
        MESSAGE(std::string(s.what) << ": float32 loss " << f32.first << " accuracy " << f32.second << "; mixed_bfloat16 loss "
                       << b16.first << " accuracy " << b16.second);
        INFO(s.what);
        CHECK(f32.second > 0.6); /* the task is learnt at all */
        CHECK(b16.second > f32.second - 0.03);
        CHECK(b16.first < f32.first * 1.1 + 0.02);
    }
}

/* The bf16 words of a Dense or convolution kernel kept for predictions of
   1-4 samples (gemm::bf16::WeightCache, since 0.8.2): the product on them
   gives the bits of the path that rounds B on every call (the few-row
   kernel for M <= 4, the packed product beyond), every edge of K (odd, one
   KC block and more), N (a strip of 64 columns and parts of one) and M
   (groups of 4 and the rest), on 1 and 2 threads. */
TEST_CASE("bf16 GEMM: the kept weight words give the bits of the per-call product, and are made again for a new version") {
    if (!bf16_cpu()) {
        MESSAGE("no AVX512-BF16 on this CPU (or NNL_BF16, NNL_NO_SIMD turn it off): no weights are kept");
        return;
    }
    Bf16Env env("avx512");
    nnl::g_threads = 1;
    namespace b = nnl::gemm::bf16;
    b::WeightCache cache;
    b::WeightCache *prev = b::tl_wcache;
    uint64_t prev_ver = b::tl_wcache_ver;
    b::tl_wcache = &cache;
    uint64_t ver = 7;
    int cases = 0;
    for (int K : {1, 2, 3, 31, 256, 257, 700, 1500})
        for (int N : {1, 15, 16, 64, 65, 129, 500})
            for (nnl::Act act : {nnl::ACT_LINEAR, nnl::ACT_RELU}) {
                auto A = random_vec((size_t)13 * (K + 3), 51, -3.f, 3.f), W = random_vec((size_t)K * N, 52, -3.f, 3.f);
                auto bias = random_vec((size_t)N, 53);
                for (size_t i = 0; i < A.size(); i += 7) A[i] *= 1e-20f;
                for (size_t i = 3; i < W.size(); i += 11) W[i] *= 1e-19f;
                const float *bp = act == nnl::ACT_RELU ? bias.data() : nullptr;
                for (int M : {1, 2, 3, 4, 5, 7, 13})
                    for (int round = 0; round < 3; round++) { /* 0: made, 1: reused, 2: made again (W and ver changed) */
                        if (round == 2) {
                            for (size_t i = 0; i < W.size(); i += 5) W[i] = -W[i] * 0.75f;
                            ver++;
                        }
                        b::tl_wcache_ver = ver;
                        int ldc = N + 3;
                        auto C0 = random_vec((size_t)M * ldc, 54);
                        std::vector<float> kept = C0, ref = C0;
                        REQUIRE(b::kept_product(M, N, K, A.data(), K + 3, W.data(), kept.data(), ldc, bp, act));
                        b::sgemm_bias_act<true>(M, N, K, A.data(), K + 3, W.data(), N, ref.data(), ldc, bp, act);
                        int64_t differ = 0;
                        for (size_t i = 0; i < kept.size(); i++) differ += memcmp(&kept[i], &ref[i], sizeof(float)) != 0;
                        INFO("M=" << M << " N=" << N << " K=" << K << " act=" << nnl::act_names[act] << " round=" << round);
                        CHECK(differ == 0); /* the padding past N included: untouched in both */
                        cases++;
                    }
                ver++; /* the next W may come at the same address */
            }
    CHECK(cases == 8 * 7 * 2 * 7 * 3);
    CHECK(cache.e.size() <= 2); /* stale entries are reused, not piled up */
    /* two threads split the rows: the same bits */
    for (int M : {1, 3, 29, 200}) {
        const int K = M <= 4 ? 2450 : 500, N = M <= 4 ? 500 : 50; /* 1-4 rows: 8 strips, split by strips */
        auto A = random_vec((size_t)M * K, 55, -3.f, 3.f), W = random_vec((size_t)K * N, 56, -3.f, 3.f);
        auto bias = random_vec((size_t)N, 57);
        b::tl_wcache_ver = ++ver;
        std::vector<float> one((size_t)M * N), two((size_t)M * N), ref((size_t)M * N);
        b::sgemm_bias_act<true>(M, N, K, A.data(), K, W.data(), N, ref.data(), N, bias.data(), nnl::ACT_RELU);
        nnl::g_threads = 1;
        REQUIRE(b::kept_product(M, N, K, A.data(), K, W.data(), one.data(), N, bias.data(), nnl::ACT_RELU));
        nnl::g_threads = 2;
        REQUIRE(b::kept_product(M, N, K, A.data(), K, W.data(), two.data(), N, bias.data(), nnl::ACT_RELU));
        INFO("M=" << M);
        CHECK(memcmp(one.data(), ref.data(), ref.size() * sizeof(float)) == 0);
        CHECK(memcmp(two.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    }
    nnl::g_threads = 1;
    /* nothing kept beyond the limits: the caller rounds per call */
    b::tl_wcache = nullptr;
    std::vector<float> one(4, 1.f), out(4);
    CHECK(!b::kept_product(1, 4, 1, one.data(), 1, one.data(), out.data(), 4, nullptr, nnl::ACT_LINEAR));
    b::tl_wcache = prev;
    b::tl_wcache_ver = prev_ver;
    nnl::g_threads = 0;
}

namespace {
/* y of samples x (n x 20) from nnl_predict with batch_size bs */
std::vector<float> bf16_pred(nnl_model *m, const std::vector<float> &x, int64_t n, int bs) {
    int64_t xs[2] = {n, 20};
    std::vector<float> y((size_t)n * 5);
    REQUIRE_MESSAGE(nnl_predict(m, x.data(), 2, xs, bs, y.data(), (int64_t)y.size()) == NNL_OK, nnl_last_error());
    return y;
}
/* one sample's prediction (the kept words) against the same sample in a batch of 6 (the packed product) */
bool bf16_one_matches(nnl_model *m, const std::vector<float> &x) {
    std::vector<float> one = bf16_pred(m, x, 1, 1), six = bf16_pred(m, x, 6, 6);
    return memcmp(one.data(), six.data(), 5 * sizeof(float)) == 0;
}
struct Bf16Watch {
    std::vector<float> x;
    int calls = 0, mismatches = 0;
    std::vector<float> first;
};
int bf16_watch(void *user, nnl_model *m, int event, int, int64_t, const double *, int) {
    if (event != NNL_EVENT_BATCH_END) return 0;
    auto *w = (Bf16Watch *)user;
    std::vector<float> one = bf16_pred(m, w->x, 1, 1);
    if (w->calls++ == 0) w->first = one;
    w->mismatches += !bf16_one_matches(m, w->x);
    return 0;
}
} // namespace

/* The contract around the kept words: every call that changes the weights
   (nnl_set_weight, nnl_fit, loading weights) is followed by predictions of
   the new weights; a prediction inside nnl_fit's callback sees the weights
   of that moment; concurrent predictions agree with one alone. */
TEST_CASE("bf16 predictions of a few samples: kept weights follow every change of the model") {
    /* VDPBF16PS for the batches of 6 too (AMX sums its own way), so that one
       sample and the same sample in a batch give the same bits */
    Bf16Env env(bf16_cpu() ? "avx512" : "emulate");
    if (!bf16_cpu()) MESSAGE("no AVX512-BF16 on this CPU: the emulation keeps no words; the predictions are checked all the same");
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 5) == NNL_OK);
    REQUIRE(nnl_add(m, "Input((20,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(70, activation='relu')") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(5, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, "adam", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    REQUIRE(nnl_set_precision(m, "mixed_bfloat16") == NNL_OK);
    auto x = random_vec(6 * 20, 61, -2.f, 2.f);
    std::vector<float> p0 = bf16_pred(m, x, 1, 1);
    CHECK(bf16_one_matches(m, x));
    if (bf16_cpu()) { /* both kernels kept, for this version */
        CHECK(m->wcache.e.size() == 2);
        CHECK(m->wcache.stamp == m->wver);
    }
    char tmp[] = "/tmp/nnlite_bf16kept_XXXXXX";
    REQUIRE(mkdtemp(tmp));
    std::string wf = std::string(tmp) + "/m.weights";
    REQUIRE(nnl_save_weights(m, wf.c_str()) == NNL_OK);

    /* nnl_set_weight */
    std::vector<float> k(20 * 70);
    REQUIRE(nnl_get_weight(m, 0, k.data(), (int64_t)k.size()) == NNL_OK);
    for (auto &v : k) v = -v;
    REQUIRE(nnl_set_weight(m, 0, k.data(), (int64_t)k.size()) == NNL_OK);
    std::vector<float> p1 = bf16_pred(m, x, 1, 1);
    CHECK(p1 != p0);
    CHECK(bf16_one_matches(m, x));

    /* nnl_fit, with predictions in its callback after every batch */
    std::vector<float> xt = random_vec(48 * 20, 62, -2.f, 2.f), yt(48);
    for (size_t i = 0; i < yt.size(); i++) yt[i] = (float)(i % 5);
    int64_t xs[2] = {48, 20}, ys[1] = {48};
    Bf16Watch w;
    w.x = x;
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 8;
    o.verbose = 0;
    o.callback = bf16_watch;
    o.callback_user = &w;
    REQUIRE(nnl_fit(m, xt.data(), 2, xs, yt.data(), NNL_FLOAT32, 1, ys, &o) == NNL_OK);
    CHECK(w.calls == 12);
    CHECK(w.mismatches == 0);
    std::vector<float> p2 = bf16_pred(m, x, 1, 1);
    CHECK(p2 != w.first); /* the callback saw the weights move */
    CHECK(p2 != p1);
    CHECK(bf16_one_matches(m, x));

    /* loading weights */
    REQUIRE(nnl_load_weights(m, wf.c_str()) == NNL_OK);
    CHECK(bf16_pred(m, x, 1, 1) == p0);
    CHECK(bf16_one_matches(m, x));

    /* many threads at once (inference copies keep their own words) */
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; t++)
        ts.emplace_back([&] {
            for (int i = 0; i < 200; i++) {
                std::vector<float> y(5);
                int64_t s[2] = {1, 20};
                if (nnl_predict(m, x.data(), 2, s, 1, y.data(), 5) != NNL_OK || y != p0) bad++;
            }
        });
    for (auto &t : ts) t.join();
    CHECK(bad == 0);
    nnl_model_free(m);
    remove(wf.c_str());
    rmdir(tmp);

    /* a convolution's kernel is kept too: one sample's prediction against the same sample in a batch of 6 */
    nnl_model *c = nnl_model_create();
    REQUIRE(nnl_model_set_seed(c, 6) == NNL_OK);
    REQUIRE(nnl_add(c, "Input((9, 9, 3))") == NNL_OK);
    REQUIRE(nnl_add(c, "Conv2D(20, 3, padding='same', activation='relu')") == NNL_OK);
    REQUIRE(nnl_add(c, "Conv2D(7, 3)") == NNL_OK);
    REQUIRE(nnl_add(c, "Flatten()") == NNL_OK);
    REQUIRE(nnl_add(c, "Dense(5)") == NNL_OK);
    REQUIRE(nnl_set_precision(c, "mixed_bfloat16") == NNL_OK);
    auto xc = random_vec(6 * 243, 63, -2.f, 2.f);
    auto cpred = [&](int64_t n) {
        int64_t s[4] = {n, 9, 9, 3};
        std::vector<float> y((size_t)n * 5);
        REQUIRE_MESSAGE(nnl_predict(c, xc.data(), 4, s, (int)n, y.data(), (int64_t)y.size()) == NNL_OK, nnl_last_error());
        return y;
    };
    for (int round = 0; round < 2; round++) {
        std::vector<float> one = cpred(1), six = cpred(6);
        CHECK(memcmp(one.data(), six.data(), 5 * sizeof(float)) == 0);
        if (bf16_cpu()) CHECK(c->wcache.e.size() == 3); /* both convolutions and the Dense kernel */
        std::vector<float> k(27 * 20);
        REQUIRE(nnl_get_weight(c, 0, k.data(), (int64_t)k.size()) == NNL_OK);
        for (auto &v : k) v *= -0.5f;
        REQUIRE(nnl_set_weight(c, 0, k.data(), (int64_t)k.size()) == NNL_OK);
        std::vector<float> after = cpred(1);
        CHECK(after != one);
    }
    nnl_model_free(c);
}
