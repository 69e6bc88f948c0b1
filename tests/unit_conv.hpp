/* Convolution, pooling, batch norm, padding and upsampling: finite-difference
   gradient checks, the thesis' worked example, Keras' shapes and parameter
   counts, and a comparison with PyTorch (when python3-torch is installed).
   Included by unit.cpp. */
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unistd.h>

TEST_CASE("gradient check: Conv1D, Conv2D, Conv3D in both data formats") {
    const char *cf = ", data_format='channels_first'";
    for (int f = 0; f < 2; f++) {
        std::string df = f ? cf : "";
        auto S = [&](nnl::Shape cl, nnl::Shape cfs) { return f ? cfs : cl; };
        gradcheck_layer(("Conv1D(3, 3" + df + ")").c_str(), S({7, 2}, {2, 7}));
        gradcheck_layer(("Conv1D(2, 3, strides=2, padding='same', activation='tanh'" + df + ")").c_str(),
                        S({8, 2}, {2, 8}));
        gradcheck_layer(("Conv1D(2, 2, padding='causal', dilation_rate=2" + df + ")").c_str(), S({6, 1}, {1, 6}));
        gradcheck_layer(("Conv2D(3, (3, 2), activation='sigmoid'" + df + ")").c_str(), S({5, 4, 2}, {2, 5, 4}));
        gradcheck_layer(("Conv2D(2, 3, strides=2, padding='same'" + df + ")").c_str(), S({5, 6, 2}, {2, 5, 6}));
        gradcheck_layer(("Conv2D(2, 3, dilation_rate=2, padding='same', use_bias=False" + df + ")").c_str(),
                        S({5, 5, 1}, {1, 5, 5}));
        gradcheck_layer(("Conv2D(3, 1" + df + ")").c_str(), S({3, 3, 4}, {4, 3, 3})); /* 1x1: no im2col */
        /* one input channel, 20 filters (three vectors of AVX2, the last partial): no im2col either */
        gradcheck_layer(("Conv2D(20, 5, activation='tanh'" + df + ")").c_str(), S({7, 6, 1}, {1, 7, 6}));
        gradcheck_layer(("Conv3D(2, (2, 3, 2), strides=(1, 2, 1), padding='same'" + df + ")").c_str(),
                        S({3, 4, 3, 2}, {2, 3, 4, 3}), false, 2);
    }
}

TEST_CASE("gradient check: pooling (max on distinct values), global pooling, padding, upsampling") {
    const char *cf = ", data_format='channels_first'";
    for (int f = 0; f < 2; f++) {
        std::string df = f ? cf : "", df0 = f ? "data_format='channels_first'" : "";
        auto S = [&](nnl::Shape cl, nnl::Shape cfs) { return f ? cfs : cl; };
        gradcheck_layer(("MaxPooling1D(3" + df + ")").c_str(), S({7, 2}, {2, 7}), false, 3, true);
        gradcheck_layer(("MaxPooling2D(2" + df + ")").c_str(), S({4, 5, 2}, {2, 4, 5}), false, 3, true);
        gradcheck_layer(("MaxPooling2D(3, strides=2, padding='same'" + df + ")").c_str(), S({5, 5, 2}, {2, 5, 5}),
                        false, 3, true);
        gradcheck_layer(("MaxPooling3D(2" + df + ")").c_str(), S({4, 4, 2, 2}, {2, 4, 4, 2}), false, 2, true);
        /* 256 and 300 taps: the chosen taps kept in four bytes (pool_arg_bytes), disjoint and overlapping */
        gradcheck_layer(("MaxPooling2D(16, strides=4" + df + ")").c_str(), S({20, 20, 1}, {1, 20, 20}), false, 2, true);
        gradcheck_layer(("MaxPooling1D(300, padding='same'" + df + ")").c_str(), S({450, 2}, {2, 450}), false, 2,
                        true);
        gradcheck_layer(("AveragePooling1D(2" + df + ")").c_str(), S({6, 2}, {2, 6}));
        gradcheck_layer(("AveragePooling2D(3, strides=2, padding='same'" + df + ")").c_str(),
                        S({5, 4, 2}, {2, 5, 4}));
        gradcheck_layer(("AveragePooling3D(2, padding='same'" + df + ")").c_str(), S({3, 3, 3, 2}, {2, 3, 3, 3}),
                        false, 2);
        gradcheck_layer(("GlobalAveragePooling1D(" + df0 + ")").c_str(), S({5, 3}, {3, 5}));
        gradcheck_layer(("GlobalAveragePooling2D(" + df0 + ")").c_str(), S({3, 4, 2}, {2, 3, 4}));
        gradcheck_layer(("GlobalMaxPooling1D(" + df0 + ")").c_str(), S({5, 3}, {3, 5}), false, 3, true);
        gradcheck_layer(("GlobalMaxPooling2D(" + df0 + ")").c_str(), S({3, 4, 2}, {2, 3, 4}), false, 3, true);
        gradcheck_layer(("ZeroPadding2D(((1, 0), (2, 1))" + df + ")").c_str(), S({3, 2, 2}, {2, 3, 2}));
        gradcheck_layer(("UpSampling2D((2, 3)" + df + ")").c_str(), S({2, 3, 2}, {2, 2, 3}));
    }
}

TEST_CASE("gradient check: BatchNormalization, training and inference, any axis") {
    gradcheck_layer("BatchNormalization()", nnl::Shape{4}, true, 5);
    gradcheck_layer("BatchNormalization()", nnl::Shape{4}, false, 5);
    gradcheck_layer("BatchNormalization()", nnl::Shape{3, 3, 2}, true);
    gradcheck_layer("BatchNormalization(axis=1)", nnl::Shape{2, 3, 3}, true); /* channels first */
    gradcheck_layer("BatchNormalization(axis=1)", nnl::Shape{2, 3, 3}, false);
    gradcheck_layer("BatchNormalization(center=False, scale=False)", nnl::Shape{3}, true, 4);
}

/* Runs a single layer on x (B samples) and returns its output. */
static std::vector<float> run_layer(const char *spec, nnl::Shape in, const std::vector<float> &x, int B,
                                    nnl_model &m, bool training = false) {
    m.add(("Input(shape=" + in.str(false) + ")").c_str());
    m.add(spec);
    nnl::Layer &L = *m.layers[0];
    m.ensure_batch(B);
    std::vector<float> y((size_t)(B * L.out.size()));
    nnl::Ctx c;
    c.training = training;
    L.forward(x.data(), y.data(), B, c);
    return y;
}

TEST_CASE("the thesis' worked convolution example (cross-correlation, no kernel flip)") {
    /* ../shared/SEEDS.md section 3: X 4x4, W 3x3 with a middle row of ones,
       stride 1, valid -> [[85, 82], [41, 79]] */
    std::vector<float> x = {22, 15, 1, 3, 42, 5, 38, 39, 28, 9, 4, 66, 0, 2, 25, 12};
    nnl_model m;
    m.add("Input(shape=(4, 4, 1))");
    m.add("Conv2D(1, 3, use_bias=False)");
    float w[9] = {0, 0, 0, 1, 1, 1, 0, 0, 0};
    std::copy(w, w + 9, m.layers[0]->weights[0].w);
    m.ensure_batch(1);
    std::vector<float> y(4);
    m.layers[0]->forward(x.data(), y.data(), 1, nnl::Ctx());
    CHECK(y[0] == 85.f);
    CHECK(y[1] == 82.f);
    CHECK(y[2] == 41.f);
    CHECK(y[3] == 79.f);
}

TEST_CASE("K-TOY: Keras' output shapes of valid and strided same convolutions") {
    nnl_model a, b;
    a.add("Input(shape=(7, 7, 1))");
    a.add("Conv2D(1, (3, 3))");
    CHECK(a.out_shape() == nnl::Shape({5, 5, 1}));
    b.add("Input(shape=(7, 7, 1))");
    b.add("Conv2D(1, (3, 3), strides=2, padding='same')");
    CHECK(b.out_shape() == nnl::Shape({4, 4, 1}));
}

TEST_CASE("seed CNNs have the parameter counts their sources print") {
    struct Net {
        const char *id;
        std::vector<const char *> layers;
        int64_t params;
    } nets[] = {
        {"K-CNN",
         {"Conv2D(32, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1))",
          "Conv2D(64, (3, 3), activation='relu')", "MaxPooling2D(pool_size=(2, 2))", "Dropout(0.25)", "Flatten()",
          "Dense(128, activation='relu')", "Dropout(0.5)", "Dense(10, activation='softmax')"},
         1199882},
        {"R-LENET (channels first)",
         {"Conv2D(20, 5, padding='same', activation='relu', data_format='channels_first', input_shape=(1, 28, 28))",
          "MaxPooling2D(2, data_format='channels_first')",
          "Conv2D(50, 5, padding='same', activation='relu', data_format='channels_first')",
          "MaxPooling2D(2, data_format='channels_first')", "Flatten()", "Dense(500, activation='relu')",
          "Dense(10, activation='softmax')"},
         1256080},
        {"T-LENET",
         {"Conv2D(20, 5, activation='tanh', input_shape=(28, 28, 1))", "MaxPooling2D(2)",
          "Conv2D(50, 5, activation='tanh')", "MaxPooling2D(2)", "Flatten()", "Dense(500, activation='tanh')",
          "Dense(10)"},
         431080},
        {"K-SPEC",
         {"Conv1D(64, 80, strides=10, activation='relu', input_shape=(3522, 1))", "MaxPooling1D(3)", "Dropout(0.35)",
          "Conv1D(128, 40, strides=10, activation='relu')", "MaxPooling1D(3)", "Dropout(0.35)", "Flatten()",
          "Dense(128, activation='relu')", "Dropout(0.35)", "Dense(4, activation='softmax')"},
         366404},
    };
    for (auto &n : nets) {
        INFO(n.id);
        nnl_model m;
        for (auto *l : n.layers) m.add(l);
        CHECK(m.param_total == n.params);
        CHECK(nnl_param_count(&m) == n.params);
    }
}

TEST_CASE("BatchNormalization: moving statistics, inference, non-trainable count in the summary") {
    nnl_model m;
    m.add("Input(shape=(2,))");
    m.add("BatchNormalization(momentum=0.5)");
    nnl::Layer &L = *m.layers[0];
    REQUIRE(L.weights.size() == 4);
    CHECK(!L.weights[2].trainable);
    CHECK(m.slices.size() == 2); /* the optimizer sees gamma and beta only */
    m.ensure_batch(4);
    std::vector<float> x = {1, 10, 2, 20, 3, 30, 6, 40}, y(8);
    nnl::Ctx c;
    c.training = true;
    L.forward(x.data(), y.data(), 4, c);
    /* column 0: mean 3, biased variance 3.5; column 1: mean 25, variance 125 */
    CHECK(L.weights[2].w[0] == doctest::Approx(0.5 * 0 + 0.5 * 3));
    CHECK(L.weights[2].w[1] == doctest::Approx(0.5 * 25));
    CHECK(L.weights[3].w[0] == doctest::Approx(0.5 * 1 + 0.5 * 3.5));
    CHECK(L.weights[3].w[1] == doctest::Approx(0.5 * 1 + 0.5 * 125));
    CHECK(y[0] == doctest::Approx((1 - 3) / std::sqrt(3.5 + 1e-3)));
    c.training = false;
    L.forward(x.data(), y.data(), 4, c);
    CHECK(y[0] == doctest::Approx((1 - 1.5) / std::sqrt(2.25 + 1e-3)));
    std::string s = m.summary();
    CHECK(s.find("Trainable params: 4 ") != std::string::npos);
    CHECK(s.find("Non-trainable params: 4 ") != std::string::npos);
}

/* A window for the im2col / col2im tests: rank, input (d, h, w), channels,
   kernel, strides, dilation, padding */
struct WinSpec { int nd; int64_t in[3], C, k[3], s[3], d[3]; const char *pad; };
static nnl::Window test_window(const WinSpec &w) {
    nnl::Window g;
    g.C = w.C;
    for (int i = 0; i < 3; i++) g.in[i] = w.in[i], g.k[i] = w.k[i], g.s[i] = w.s[i], g.d[i] = w.d[i];
    nnl::window_outputs(g, w.nd, w.pad, "test");
    return g;
}

TEST_CASE("im2col equals a naive gather, writes nothing past its rows, on 1 and 2 threads (short runs as vectors)") {
    /* first convolutions (one channel, runs of 3-7 floats shorter than a
       vector), several channels, strides, dilation, 1-D and 3-D */
    using W = WinSpec;
    const W ws[] = {{2, {1, 28, 28}, 1, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 28, 28}, 1, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "same"},
                    {2, {1, 28, 28}, 1, {1, 3, 3}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 9, 9}, 1, {1, 7, 7}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 30, 31}, 1, {1, 5, 5}, {1, 2, 2}, {1, 1, 1}, "same"},
                    /* the last row's last run has room for a whole vector in its image row */
                    {2, {1, 24, 24}, 1, {1, 3, 3}, {1, 8, 8}, {1, 1, 1}, "valid"},
                    {2, {1, 14, 14}, 3, {1, 2, 2}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 12, 13}, 2, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}, "same"},
                    {2, {1, 14, 14}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {1, {1, 1, 50}, 1, {1, 1, 3}, {1, 1, 1}, {1, 1, 1}, "causal"},
                    {3, {5, 6, 17}, 1, {2, 2, 4}, {1, 1, 1}, {1, 1, 1}, "same"}};
    const int64_t n = 3, guard = 64;
    int keep = nnl::g_threads;
    for (auto &w : ws) {
        const nnl::Window g = test_window(w);
        const int64_t P = g.out_size(), row = g.kvol() * g.C, S = g.in_size() * g.C;
        auto x = random_vec((size_t)(n * S), 31);
        std::vector<float> ref((size_t)(n * P * row));
        for (int64_t b = 0; b < n; b++)
            for (int64_t p = 0; p < P; p++) {
                int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
                float *o = ref.data() + (b * P + p) * row;
                for (int64_t kd = 0; kd < g.k[0]; kd++)
                    for (int64_t kh = 0; kh < g.k[1]; kh++)
                        for (int64_t kw = 0; kw < g.k[2]; kw++)
                            for (int64_t c = 0; c < g.C; c++) {
                                int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0],
                                        ih = oh * g.s[1] - g.pad[1] + kh * g.d[1],
                                        iw = ow * g.s[2] - g.pad[2] + kw * g.d[2];
                                bool in = id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2];
                                *o++ = in ? x[(size_t)(b * S + ((id * g.in[1] + ih) * g.in[2] + iw) * g.C + c)] : 0.f;
                            }
            }
        for (int threads : {1, 2}) {
            nnl::g_threads = threads;
            std::vector<float> col(ref.size() + guard, -7.f);
            nnl::K().im2col(g, x.data(), col.data(), n);
            INFO("in " << g.in[0] << "x" << g.in[1] << "x" << g.in[2] << " C=" << g.C << " k " << g.k[1] << "x"
                       << g.k[2] << " " << w.pad << " threads=" << threads);
            CHECK(std::equal(ref.begin(), ref.end(), col.begin()));
            CHECK(std::all_of(col.begin() + (ptrdiff_t)ref.size(), col.end(), [](float v) { return v == -7.f; }));
        }
    }
    nnl::g_threads = keep;
}

TEST_CASE("im2col into packed panels is pack_b_all of im2col, and the weight gradient from it is sgemm's, bit for bit") {
    /* the backward of a convolution whose dW^T = dz^T col takes col only as
       B (cpu_im2col_packed + sgemm_packed): the seed models' second
       convolutions, padding, strides, dilation, 1-D and 3-D, widths that
       end in partial panels; enough rows for several KC blocks */
    using W = WinSpec;
    const W ws[] = {{2, {1, 12, 12}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid"},
                    {2, {1, 14, 14}, 20, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "same"},
                    {2, {1, 13, 11}, 3, {1, 3, 2}, {1, 2, 3}, {1, 1, 1}, "same"},
                    {2, {1, 12, 13}, 2, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}, "same"},
                    {1, {1, 1, 50}, 7, {1, 1, 3}, {1, 1, 1}, {1, 1, 1}, "causal"},
                    {3, {5, 6, 7}, 2, {2, 2, 3}, {1, 1, 1}, {1, 1, 1}, "same"}};
    const int64_t n = 7, F = 50;
    int keep = nnl::g_threads;
    for (auto &w : ws) {
        const nnl::Window g = test_window(w);
        const int64_t P = g.out_size(), row = g.kvol() * g.C, K = n * P;
        auto x = random_vec((size_t)(n * g.in_size() * g.C), 41), dz = random_vec((size_t)(K * F), 42);
        for (int threads : {1, 2}) {
            nnl::g_threads = threads;
            std::vector<float> col((size_t)(K * row));
            nnl::K().im2col(g, x.data(), col.data(), n);
            nnl::gemm::PackedB ref, got;
            nnl::gemm::pack_b_all(false, col.data(), row, K, row, ref);
            nnl::cpu_im2col_packed(g, x.data(), n, got);
            INFO("in " << g.in[0] << "x" << g.in[1] << "x" << g.in[2] << " C=" << g.C << " k " << g.k[1] << "x"
                       << g.k[2] << " " << w.pad << " threads=" << threads << " K=" << K << " N=" << row);
            const size_t len = (size_t)((row + 15) / 16 * 16 * K);
            REQUIRE(got.K == K);
            REQUIRE(got.N == row);
            CHECK(memcmp(ref.p, got.p, len * sizeof(float)) == 0);
            std::vector<float> c1((size_t)(F * row), 0.5f), c2 = c1;
            nnl::gemm::sgemm(true, false, F, row, K, 1.f, dz.data(), F, col.data(), row, 0.f, c1.data(), row);
            nnl::gemm::sgemm_packed(F, dz.data(), F, got, 0.f, c2.data(), row, true);
            CHECK(memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
            nnl::gemm::sgemm(true, false, F, row, K, 1.f, dz.data(), F, col.data(), row, 1.f, c1.data(), row);
            nnl::gemm::sgemm_packed(F, dz.data(), F, got, 1.f, c2.data(), row, true);
            CHECK(memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0); /* accumulated (beta = 1) */
        }
    }
    nnl::g_threads = keep;
}

TEST_CASE("one-channel convolutions without im2col: forward and weight gradient equal the products in double, "
          "the same bits on 1 and 2 threads, at every SIMD level, nothing written past the output") {
    /* the seed models' first convolutions, then strides, dilation, padding,
       1-D and 3-D, filter counts around the vector widths (1, 7, 16, 20,
       33, 50: one to four vectors, partial last ones), one tap with a
       stride, kernels of 1-49 taps */
    struct W { int nd; int64_t in[3], k[3], s[3], d[3]; const char *pad; int64_t F; };
    const W ws[] = {{2, {1, 28, 28}, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "valid", 20},
                    {2, {1, 28, 28}, {1, 3, 3}, {1, 1, 1}, {1, 1, 1}, "valid", 32},
                    {2, {1, 28, 28}, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}, "same", 20},
                    {2, {1, 13, 11}, {1, 3, 2}, {1, 2, 3}, {1, 1, 1}, "same", 33},
                    {2, {1, 12, 12}, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}, "valid", 7},
                    {2, {1, 9, 9}, {1, 7, 7}, {1, 1, 1}, {1, 1, 1}, "valid", 1},
                    {2, {1, 6, 30}, {1, 1, 4}, {1, 1, 1}, {1, 1, 1}, "valid", 50},
                    {1, {1, 1, 50}, {1, 1, 3}, {1, 1, 1}, {1, 1, 2}, "causal", 9},
                    {3, {5, 6, 7}, {2, 2, 3}, {1, 1, 2}, {1, 1, 1}, "same", 16},
                    {2, {1, 5, 5}, {1, 1, 1}, {1, 2, 2}, {1, 1, 1}, "valid", 4}};
    const int64_t guard = 40;
    const int keep = nnl::g_threads, keep_level = nnl::simd::level;
    for (auto &w : ws)
        for (int64_t n : {1, 70}) { /* 70 samples: the weight gradient's groups of lines cross samples */
            nnl::Window g;
            for (int i = 0; i < 3; i++) g.in[i] = w.in[i], g.k[i] = w.k[i], g.s[i] = w.s[i], g.d[i] = w.d[i];
            nnl::window_outputs(g, w.nd, w.pad, "test");
            REQUIRE(nnl::conv1_applies(g));
            const int64_t P = g.out_size(), T = g.kvol(), S = g.in_size(), F = w.F;
            auto x = random_vec((size_t)(n * S), 41), k = random_vec((size_t)(T * F), 42),
                 dz = random_vec((size_t)(n * P * F), 43);
            /* the reference: each output's window gathered as im2col does, sums in double */
            std::vector<double> y_ref((size_t)(n * P * F)), dw_ref((size_t)(T * F)), dw_abs((size_t)(T * F));
            for (int64_t b = 0; b < n; b++)
                for (int64_t p = 0; p < P; p++) {
                    int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
                    for (int64_t t = 0; t < T; t++) {
                        int64_t kd = t / (g.k[1] * g.k[2]), kh = t / g.k[2] % g.k[1], kw = t % g.k[2];
                        int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0], ih = oh * g.s[1] - g.pad[1] + kh * g.d[1],
                                iw = ow * g.s[2] - g.pad[2] + kw * g.d[2];
                        if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) continue;
                        double xv = x[(size_t)(b * S + (id * g.in[1] + ih) * g.in[2] + iw)];
                        for (int64_t f = 0; f < F; f++) {
                            y_ref[(size_t)((b * P + p) * F + f)] += xv * k[(size_t)(t * F + f)];
                            double d = xv * dz[(size_t)((b * P + p) * F + f)];
                            dw_ref[(size_t)(t * F + f)] += d;
                            dw_abs[(size_t)(t * F + f)] += std::fabs(d);
                        }
                    }
                }
            std::vector<float> y0, dw0;
            for (int level = 0; level <= nnl::simd::level_from_cpu(); level++)
                for (int threads : {1, 2}) {
                    nnl::simd::level = level;
                    nnl::g_threads = threads;
                    INFO("in " << g.in[0] << "x" << g.in[1] << "x" << g.in[2] << " k " << g.k[0] << "x" << g.k[1]
                               << "x" << g.k[2] << " " << w.pad << " F=" << F << " n=" << n << " level " << level
                               << " threads=" << threads);
                    std::vector<float> y((size_t)(n * P * F + guard), -7.f), dw((size_t)(T * F)), parts;
                    nnl::cpu_conv1_forward(g, x.data(), k.data(), F, nullptr, nnl::ACT_LINEAR, y.data(), n);
                    nnl::cpu_conv1_weight_grad(g, x.data(), dz.data(), F, dw.data(), n, parts);
                    double ey = 0, ew = 0;
                    for (size_t i = 0; i < y_ref.size(); i++)
                        ey = std::max(ey, std::fabs(y[i] - y_ref[i]) / (1.0 + std::fabs(y_ref[i])));
                    for (size_t i = 0; i < dw_ref.size(); i++)
                        ew = std::max(ew, std::fabs(dw[i] - dw_ref[i]) / (1.0 + dw_abs[i]));
                    CHECK(ey < 1e-5);
                    CHECK(ew < 1e-5);
                    CHECK(std::all_of(y.end() - guard, y.end(), [](float v) { return v == -7.f; }));
                    y.resize((size_t)(n * P * F));
                    if (threads == 1) {
                        y0 = y;
                        dw0 = dw;
                    } else {
                        CHECK(y == y0);
                        CHECK(dw == dw0);
                    }
                }
        }
    nnl::g_threads = keep;
    nnl::simd::level = keep_level;
}

TEST_CASE("convolution results do not depend on the thread count") {
    nnl_model m1, m2;
    std::vector<float> x = random_vec(64 * 12 * 12 * 3, 21);
    int keep = nnl::g_threads;
    nnl::g_threads = 1;
    auto y1 = run_layer("Conv2D(8, 3, padding='same', activation='relu')", nnl::Shape{12, 12, 3}, x, 64, m1);
    nnl::g_threads = 2;
    m2.add("Input(shape=(12, 12, 3))");
    m2.add("Conv2D(8, 3, padding='same', activation='relu')");
    std::copy(m1.W.begin(), m1.W.end(), m2.W.begin());
    m2.ensure_batch(64);
    std::vector<float> y2(y1.size());
    m2.layers[0]->forward(x.data(), y2.data(), 64, nnl::Ctx());
    nnl::g_threads = keep;
    CHECK(y1 == y2);
}

/* A model of one convolution (spec) over inputs `in`, seed 7, planned for batch B: its layer */
static nnl::Conv *seeded_conv(nnl_model &m, const char *spec, const nnl::Shape &in, int B) {
    m.seed = 7;
    m.rng.reseed(m.seed);
    m.seeded = true;
    m.add(("Input(shape=" + in.str(false) + ")").c_str());
    m.add(spec);
    m.ensure_batch(B);
    auto *L = dynamic_cast<nnl::Conv *>(m.layers[0].get());
    REQUIRE(L);
    return L;
}

TEST_CASE("convolutions in sample groups: output, weight, bias and input gradients equal sums in double, the same "
          "bits on 1, 2 and 3 threads") {
    /* Conv::group_samples: a few samples a thread, the weight gradient in
       partial sums fixed by the shapes. Both data formats, strides,
       dilation, padding, a partial last group, the weight gradient's two
       orientations (16 filters over 54 columns: dW^T with packed columns;
       64 over 36: dW), a ReLU (its bits in training) */
    struct Case { const char *spec; nnl::Shape in; int B; bool cf; };
    const Case cases[] = {{"Conv2D(16, 3, padding='same')", nnl::Shape{10, 10, 6}, 23, false},
                          {"Conv2D(64, 3, activation='relu')", nnl::Shape{9, 9, 4}, 40, false},
                          {"Conv2D(8, (3, 2), strides=2, padding='same', data_format='channels_first')",
                           nnl::Shape{5, 12, 11}, 50, true},
                          {"Conv1D(12, 5, dilation_rate=2, activation='relu')", nnl::Shape{40, 3}, 35, false}};
    const int keep = nnl::g_threads;
    for (const Case &cs : cases) {
        INFO(std::string(cs.spec) << " batch " << cs.B);
        nnl_model m;
        nnl::Conv *L = seeded_conv(m, cs.spec, cs.in, cs.B);
        const int64_t B = cs.B, s = L->group_samples(B);
        REQUIRE(s > 0); /* the path under test is taken, with several partials */
        REQUIRE(L->wparts(B, s) >= 2);
        const nnl::Window &g = L->g;
        const int64_t C = g.C, F = L->filters, P = g.out_size(), Q = g.in_size(), T = g.kvol();
        const bool relu = L->act == nnl::ACT_RELU;
        auto x = random_vec((size_t)(B * Q * C), 51), dy = random_vec((size_t)(B * P * F), 52);
        auto bw = random_vec((size_t)F, 53);
        std::copy(bw.begin(), bw.end(), L->weights[1].w);
        const float *W = L->weights[0].w;
        auto xi = [&](int64_t b, int64_t q, int64_t c) { return b * Q * C + (cs.cf ? c * Q + q : q * C + c); };
        auto yi = [&](int64_t b, int64_t p, int64_t f) { return b * P * F + (cs.cf ? f * P + p : p * F + f); };
        /* the reference: every output's window, as im2col gathers it, in double */
        std::vector<double> y_ref((size_t)(B * P * F)), dw((size_t)(T * C * F)), dwa(dw.size()), db((size_t)F),
            dba((size_t)F), dx((size_t)(B * Q * C)), dxa(dx.size());
        auto taps = [&](int64_t p, const std::function<void(int64_t, int64_t)> &f) { /* (input position, tap) */
            int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
            for (int64_t t = 0; t < T; t++) {
                int64_t kd = t / (g.k[1] * g.k[2]), kh = t / g.k[2] % g.k[1], kw = t % g.k[2];
                int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0], ih = oh * g.s[1] - g.pad[1] + kh * g.d[1],
                        iw = ow * g.s[2] - g.pad[2] + kw * g.d[2];
                if (id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2])
                    f((id * g.in[1] + ih) * g.in[2] + iw, t);
            }
        };
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++) {
                for (int64_t f = 0; f < F; f++) y_ref[(size_t)yi(b, p, f)] = bw[(size_t)f];
                taps(p, [&](int64_t q, int64_t t) {
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t f = 0; f < F; f++)
                            y_ref[(size_t)yi(b, p, f)] += (double)x[(size_t)xi(b, q, c)] * W[(t * C + c) * F + f];
                });
                for (int64_t f = 0; f < F; f++) {
                    double &v = y_ref[(size_t)yi(b, p, f)];
                    if (relu) v = std::max(v, 0.0);
                }
            }
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++) {
                std::vector<double> dz((size_t)F);
                for (int64_t f = 0; f < F; f++) {
                    double d = dy[(size_t)yi(b, p, f)];
                    dz[(size_t)f] = relu && y_ref[(size_t)yi(b, p, f)] <= 0 ? 0.0 : d;
                    db[(size_t)f] += dz[(size_t)f];
                    dba[(size_t)f] += std::fabs(dz[(size_t)f]);
                }
                taps(p, [&](int64_t q, int64_t t) {
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t f = 0; f < F; f++) {
                            double xv = x[(size_t)xi(b, q, c)], w = W[(t * C + c) * F + f];
                            size_t wi = (size_t)((t * C + c) * F + f), di = (size_t)xi(b, q, c);
                            dw[wi] += xv * dz[(size_t)f];
                            dwa[wi] += std::fabs(xv * dz[(size_t)f]);
                            dx[di] += w * dz[(size_t)f];
                            dxa[di] += std::fabs(w * dz[(size_t)f]);
                        }
                });
            }
        auto worst = [](const float *got, const std::vector<double> &want, const std::vector<double> *mag) {
            double e = 0;
            for (size_t i = 0; i < want.size(); i++)
                e = std::max(e, std::fabs(got[i] - want[i]) / (1.0 + (mag ? (*mag)[i] : std::fabs(want[i]))));
            return e;
        };
        std::vector<float> y1, dw1, db1, dx1;
        for (int threads : {1, 2, 3}) {
            INFO("threads " << threads);
            nnl::g_threads = threads;
            std::vector<float> y((size_t)(B * P * F)), d = dy, dxv((size_t)(B * Q * C));
            nnl::Ctx c;
            c.training = true;
            L->forward(x.data(), y.data(), B, c);
            L->backward(x.data(), y.data(), d.data(), dxv.data(), B, c);
            CHECK(worst(y.data(), y_ref, nullptr) < 1e-5);
            CHECK(worst(L->weights[0].g, dw, &dwa) < 1e-5);
            CHECK(worst(L->weights[1].g, db, &dba) < 1e-5);
            CHECK(worst(dxv.data(), dx, &dxa) < 1e-5);
            std::vector<float> gw(L->weights[0].g, L->weights[0].g + T * C * F), gb(L->weights[1].g, L->weights[1].g + F);
            if (threads == 1) {
                y1 = y, dw1 = gw, db1 = gb, dx1 = dxv;
            } else {
                CHECK(y == y1);
                CHECK(gw == dw1);
                CHECK(gb == db1);
                CHECK(dxv == dx1);
            }
        }
    }
    nnl::g_threads = keep;
}

TEST_CASE("convolutions by Winograd's F(4x4, 3x3) and F(4x4, 5x5): outputs equal sums in double, the same bits on "
          "1-3 threads and in training") {
    /* F(4x4, 3x3) and F(4x4, 5x5) (cpu_wino_forward): both data formats,
       'same' and 'valid', edge tiles (outputs not a multiple of the tile),
       channels and filters not whole vectors, images smaller than a tile,
       several chunks of tiles, R-LENET's, K-CNN's and T-LENET's shapes */
    struct Case { const char *spec; nnl::Shape in; int B; bool cf; };
    const Case cases[] = {
        {"Conv2D(16, 3, padding='same')", nnl::Shape{9, 7, 8}, 5, false},
        {"Conv2D(50, 5, padding='same', activation='relu', data_format='channels_first')", nnl::Shape{20, 14, 14}, 3,
         true},
        {"Conv2D(64, 3, activation='relu')", nnl::Shape{12, 12, 32}, 4, false},
        {"Conv2D(50, 5, activation='tanh')", nnl::Shape{12, 12, 20}, 2, false},
        {"Conv2D(17, 5, padding='same', use_bias=False)", nnl::Shape{6, 5, 9}, 37, false},
        {"Conv2D(24, 3, data_format='channels_first')", nnl::Shape{8, 5, 5}, 2, true},
    };
    const int keep = nnl::g_threads;
    for (const Case &cs : cases) {
        INFO(std::string(cs.spec) << " batch " << cs.B);
        nnl_model m;
        nnl::Conv *L = seeded_conv(m, cs.spec, cs.in, cs.B);
        nnl::Ctx c; /* a prediction */
        REQUIRE(L->winograd()); /* the path under test is taken */
        const nnl::Window &g = L->g;
        const int64_t B = cs.B, C = g.C, F = L->filters, P = g.out_size(), Q = g.in_size(), T = g.kvol();
        const bool relu = L->act == nnl::ACT_RELU, th = L->act == nnl::ACT_TANH;
        auto x = random_vec((size_t)(B * Q * C), 61);
        std::vector<float> bw((size_t)F, 0.f);
        if (L->use_bias) {
            bw = random_vec((size_t)F, 62);
            std::copy(bw.begin(), bw.end(), L->weights[1].w);
        }
        const float *W = L->weights[0].w;
        auto xi = [&](int64_t b, int64_t q, int64_t ch) { return b * Q * C + (cs.cf ? ch * Q + q : q * C + ch); };
        auto yi = [&](int64_t b, int64_t p, int64_t f) { return b * P * F + (cs.cf ? f * P + p : p * F + f); };
        /* the reference in double, and the sum of the terms' magnitudes */
        std::vector<double> ref((size_t)(B * P * F)), mag(ref.size());
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++)
                for (int64_t f = 0; f < F; f++) {
                    int64_t ow = p % g.out[2], oh = p / g.out[2];
                    double s = bw[(size_t)f], a = std::fabs(bw[(size_t)f]);
                    for (int64_t t = 0; t < T; t++) {
                        int64_t ih = oh - g.pad[1] + t / g.k[2], iw = ow - g.pad[2] + t % g.k[2];
                        if (ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) continue;
                        for (int64_t ch = 0; ch < C; ch++) {
                            double v = (double)x[(size_t)xi(b, ih * g.in[2] + iw, ch)] * W[(t * C + ch) * F + f];
                            s += v;
                            a += std::fabs(v);
                        }
                    }
                    ref[(size_t)yi(b, p, f)] = relu ? std::max(s, 0.0) : th ? std::tanh(s) : s;
                    mag[(size_t)yi(b, p, f)] = a;
                }
        std::vector<float> y1;
        for (int threads : {1, 2, 3}) {
            INFO("threads " << threads);
            nnl::g_threads = threads;
            std::vector<float> y((size_t)(B * P * F), -7.f);
            L->forward(x.data(), y.data(), B, c);
            double worst = 0;
            for (size_t i = 0; i < ref.size(); i++)
                worst = std::max(worst, std::fabs(y[i] - ref[i]) / (1.0 + mag[i]));
            INFO("largest difference / (1 + sum of |terms|): " << worst);
            CHECK(worst < 5e-6); /* measured: 1.3e-7 - 2.4e-6 (5x5 on 8x8 tiles the largest) */
            if (threads == 1)
                y1 = y;
            else
                CHECK(y == y1);
        }
        /* a training step's forward takes the same path: the same bits */
        nnl::Ctx tc;
        tc.training = true;
        REQUIRE(L->winograd());
        std::vector<float> yt((size_t)(B * P * F), -7.f);
        L->forward(x.data(), yt.data(), B, tc);
        CHECK(yt == y1);
    }
    nnl::g_threads = keep;
}

TEST_CASE("Winograd convolutions: predictions follow nnl_set_weight and training (the transformed kernel is made "
          "again)") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Conv2D(16, 3, padding='same', use_bias=False, input_shape=(6, 6, 8))") == NNL_OK);
    REQUIRE(nnl_add(m, "Flatten()") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.1)", "mse", nullptr) == NNL_OK);
    auto x = random_vec(2 * 6 * 6 * 8, 71);
    const int64_t xs[4] = {2, 6, 6, 8}, n = 2 * 6 * 6 * 16;
    std::vector<float> y1((size_t)n), y2((size_t)n), y3((size_t)n), w(3 * 3 * 8 * 16);
    REQUIRE(nnl_predict(m, x.data(), 4, xs, 2, y1.data(), n) == NNL_OK);
    REQUIRE(nnl_get_weight(m, 0, w.data(), (int64_t)w.size()) == NNL_OK);
    for (auto &v : w) v *= 2.f; /* a power of two: every product, and so every output, exactly doubled */
    REQUIRE(nnl_set_weight(m, 0, w.data(), (int64_t)w.size()) == NNL_OK);
    REQUIRE(nnl_predict(m, x.data(), 4, xs, 2, y2.data(), n) == NNL_OK);
    for (auto &v : y1) v *= 2.f;
    CHECK(y2 == y1);
    /* one step of training changes the kernel: the next prediction uses it */
    std::vector<float> t((size_t)n, 0.5f);
    const int64_t ts[2] = {2, 6 * 6 * 16};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 1;
    o.batch_size = 2;
    o.verbose = 0;
    o.shuffle = 0;
    REQUIRE(nnl_fit(m, x.data(), 4, xs, t.data(), NNL_FLOAT32, 2, ts, &o) == NNL_OK);
    REQUIRE(nnl_predict(m, x.data(), 4, xs, 2, y3.data(), n) == NNL_OK);
    REQUIRE(nnl_get_weight(m, 0, w.data(), (int64_t)w.size()) == NNL_OK);
    double worst = 0;
    for (int64_t b = 0; b < 2; b++)
        for (int64_t p = 0; p < 36; p++)
            for (int64_t f = 0; f < 16; f++) {
                double s = 0;
                for (int64_t k = 0; k < 9; k++) {
                    int64_t ih = p / 6 - 1 + k / 3, iw = p % 6 - 1 + k % 3;
                    if (ih < 0 || ih >= 6 || iw < 0 || iw >= 6) continue;
                    for (int64_t ch = 0; ch < 8; ch++)
                        s += (double)x[(size_t)(((b * 6 + ih) * 6 + iw) * 8 + ch)] * w[(size_t)((k * 8 + ch) * 16 + f)];
                }
                worst = std::max(worst, std::fabs(y3[(size_t)((b * 36 + p) * 16 + f)] - s));
            }
    CHECK(worst < 1e-4);
    CHECK(y3 != y2);
    nnl_model_free(m);
}

/* ---- comparison with PyTorch (tests/reference/layers_reference.py) ---- */

static std::string find_torch_python() {
    const char *cands[] = {getenv("NNL_PYTHON"), "/usr/bin/python3", "python3"};
    for (const char *c : cands) {
        if (!c || !*c) continue;
        std::string cmd = std::string(c) + " -c 'import numpy, torch' >/dev/null 2>&1";
        if (system(cmd.c_str()) == 0) return c;
    }
    return "";
}

static std::vector<float> npz_array(const std::string &path, const char *key, bool *found = nullptr) {
    nnl_array *a = nullptr;
    int rc = nnl_load_npz(path.c_str(), key, NNL_FLOAT32, &a);
    if (found) *found = rc == NNL_OK;
    if (rc != NNL_OK) {
        if (!found) FAIL("cannot read " << key << " from " << path << ": " << nnl_last_error());
        return {};
    }
    const float *p = (const float *)nnl_array_data(a);
    std::vector<float> v(p, p + nnl_array_size(a));
    std::vector<int64_t> shape(nnl_array_shape(a), nnl_array_shape(a) + nnl_array_rank(a));
    nnl_array_free(a);
    return v;
}

static void compare(const std::vector<float> &got, const std::vector<float> &want, const std::string &what) {
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); i++)
        worst = std::max(worst, std::fabs((double)got[i] - want[i]) / (1.0 + std::fabs((double)want[i])));
    INFO(what << ": largest relative difference " << worst);
    CHECK(worst < 1e-4);
}

TEST_CASE("conv, pooling, batch norm, padding and upsampling match PyTorch, both data formats") {
    std::string py = find_torch_python();
    if (py.empty()) {
        MESSAGE("skipped: no python3 with numpy and torch (Debian: apt-get install python3-torch)");
        return;
    }
    char dir[] = "/tmp/nnlite_ref_XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string here = __FILE__;
    std::string script = here.substr(0, here.find_last_of('/') + 1) + "reference/layers_reference.py";
    std::string cmd = py + " " + script + " " + dir + " >/dev/null";
    REQUIRE(system(cmd.c_str()) == 0);
    std::ifstream list(std::string(dir) + "/cases.txt");
    std::string line;
    int ncases = 0;
    while (std::getline(list, line)) {
        std::istringstream ls(line);
        std::string name, spec, tr;
        std::getline(ls, name, '\t');
        std::getline(ls, spec, '\t');
        std::getline(ls, tr, '\t');
        INFO("case " << name << ": " << spec);
        std::string f = std::string(dir) + "/" + name + ".npz";
        nnl_array *xa = nullptr;
        REQUIRE(nnl_load_npz(f.c_str(), "x", NNL_FLOAT32, &xa) == NNL_OK);
        int B = (int)nnl_array_dim(xa, 0);
        nnl::Shape in = nnl::Shape::of(nnl_array_rank(xa) - 1, nnl_array_shape(xa) + 1);
        std::vector<float> x((float *)nnl_array_data(xa), (float *)nnl_array_data(xa) + nnl_array_size(xa));
        nnl_array_free(xa);
        nnl_model m;
        m.add(("Input(shape=" + in.str(false) + ")").c_str());
        m.add(spec.c_str());
        nnl::Layer &L = *m.layers[0];
        for (size_t k = 0; k < L.weights.size(); k++) {
            auto w = npz_array(f, ("w" + std::to_string(k)).c_str());
            REQUIRE((int64_t)w.size() == L.weights[k].shape.size());
            std::copy(w.begin(), w.end(), L.weights[k].w);
        }
        m.ensure_batch(B);
        nnl::Ctx c;
        c.training = tr == "1";
        std::vector<float> y((size_t)(B * L.out.size())), dx(x.size());
        L.forward(x.data(), y.data(), B, c);
        compare(y, npz_array(f, "y"), "y");
        auto dy = npz_array(f, "dy");
        L.backward(x.data(), y.data(), dy.data(), dx.data(), B, c);
        compare(dx, npz_array(f, "dx"), "dx");
        for (size_t k = 0; k < L.weights.size(); k++) {
            auto &w = L.weights[k];
            bool found = false;
            if (w.trainable) {
                auto gw = npz_array(f, ("gw" + std::to_string(k)).c_str());
                compare(std::vector<float>(w.g, w.g + w.shape.size()), gw, "d" + w.name);
            } else {
                auto mw = npz_array(f, ("mw" + std::to_string(k)).c_str(), &found);
                if (found) compare(std::vector<float>(w.w, w.w + w.shape.size()), mw, w.name);
            }
        }
        ncases++;
    }
    CHECK(ncases >= 40);
    MESSAGE(ncases << " layer configurations compared with PyTorch");
    std::string rm = std::string("rm -rf ") + dir;
    CHECK(system(rm.c_str()) == 0);
}

/* The committed fixture tests/reference/upsampling_reference.npz (written by
   upsampling_reference.py with PyTorch's nn.Upsample(mode='nearest')): found
   beside this file, or from the test binary's folder (build/ beside tests/). */
static std::string upsampling_fixture() {
    std::string here = __FILE__, tried;
    std::vector<std::string> c = {here.substr(0, here.find_last_of('/') + 1) + "reference/upsampling_reference.npz"};
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        std::string d(exe, (size_t)n);
        c.push_back(d.substr(0, d.find_last_of('/')) + "/../tests/reference/upsampling_reference.npz");
    }
    for (auto &p : c) {
        if (access(p.c_str(), R_OK) == 0) return p;
        tried += " " + p;
    }
    FAIL("the committed fixture upsampling_reference.npz is missing; looked at" << tried);
    return "";
}

TEST_CASE("UpSampling2D matches PyTorch nn.Upsample(mode='nearest'): committed fixture, both data formats") {
    std::string f = upsampling_fixture();
    nnl_array *na = nullptr;
    REQUIRE(nnl_load_npz(f.c_str(), "cases", NNL_INT64, &na) == NNL_OK);
    int64_t ncases = *(const int64_t *)nnl_array_data(na);
    nnl_array_free(na);
    CHECK(ncases == 4);
    for (int64_t k = 0; k < ncases; k++) {
        std::string key = "c" + std::to_string(k) + "_";
        nnl_array *sa = nullptr, *xa = nullptr;
        REQUIRE(nnl_load_npz(f.c_str(), (key + "spec").c_str(), NNL_INT64, &sa) == NNL_OK);
        const int64_t *sp = (const int64_t *)nnl_array_data(sa);
        std::string spec(sp, sp + nnl_array_size(sa));
        nnl_array_free(sa);
        INFO("case " << k << ": " << spec);
        REQUIRE(nnl_load_npz(f.c_str(), (key + "x").c_str(), NNL_FLOAT32, &xa) == NNL_OK);
        int B = (int)nnl_array_dim(xa, 0);
        nnl::Shape in = nnl::Shape::of(nnl_array_rank(xa) - 1, nnl_array_shape(xa) + 1);
        std::vector<float> x((float *)nnl_array_data(xa), (float *)nnl_array_data(xa) + nnl_array_size(xa));
        nnl_array_free(xa);
        nnl_model m;
        m.add(("Input(shape=" + in.str(false) + ")").c_str());
        m.add(spec.c_str());
        nnl::Layer &L = *m.layers[0];
        CHECK(L.weights.empty());
        m.ensure_batch(B);
        nnl::Ctx c;
        c.training = true;
        std::vector<float> y((size_t)(B * L.out.size())), dx(x.size(), 7.f); /* 7: backward must overwrite */
        L.forward(x.data(), y.data(), B, c);
        auto want = npz_array(f, (key + "y").c_str());
        REQUIRE(y.size() == want.size());
        CHECK(y == want); /* nearest copies values: exactly equal */
        auto dy = npz_array(f, (key + "dy").c_str());
        L.backward(x.data(), y.data(), dy.data(), dx.data(), B, c);
        compare(dx, npz_array(f, (key + "dx").c_str()), "dx"); /* sums of sh*sw gradients */
    }
}

namespace arenat {
/* [p, p + n) and [q, q + m) in floats: disjoint (or either empty) */
static bool apart(const float *p, int64_t n, const float *q, int64_t m) {
    return !p || !q || n <= 0 || m <= 0 || p + n <= q || q + m <= p;
}
struct Span {
    const float *p;
    int64_t n;
};
static void all_apart(const std::vector<Span> &v, const char *what, size_t layer) {
    for (size_t a = 0; a < v.size(); a++)
        for (size_t b = a + 1; b < v.size(); b++) {
            INFO(what << " of layer " << layer << ": buffers " << a << " and " << b);
            CHECK(apart(v[a].p, v[a].n, v[b].p, v[b].n));
        }
}
/* What each step of a training step touches at once never overlaps: a
   layer's forward (x, y, ws, sc), its backward while it reads x and y, and
   while it writes dx (Layer::backward_reads_x/_y, reads_before_dx). */
static void check_steps(nnl_model &m, int64_t B) {
    size_t L = m.layers.size();
    for (size_t i = 0; i < L; i++) {
        nnl::Layer &l = *m.layers[i];
        if (l.is_view()) continue;
        Span x{m.act[i], B * l.in.size()}, y{m.act[i + 1], B * l.out.size()}, ws{l.ws, l.workspace(B)},
            sc{l.sc, l.scratch(B)}, dy{m.dact[i + 1], B * l.out.size()}, dx{m.dact[i], B * l.in.size()};
        all_apart({x, y, ws, sc}, "forward", i);
        std::vector<Span> early = {dy, ws, sc}, late = {dy, ws, sc, dx};
        if (l.backward_reads_x()) early.push_back(x);
        if (l.backward_reads_y()) early.push_back(y);
        if (!l.reads_before_dx()) {
            early.push_back(dx);
            if (l.backward_reads_x()) late.push_back(x);
            if (l.backward_reads_y()) late.push_back(y);
        }
        all_apart(early, "backward (reading)", i);
        all_apart(late, "backward (writing dx)", i);
    }
    all_apart({{m.act[L], B * m.out_shape().size()}, {m.dact[L], B * m.out_shape().size()},
               {m.targets, B * m.target_width()}, {m.layers[L - 1]->ws, m.layers[L - 1]->workspace(B)}},
              "the loss", L);
}
/* One training step's loss and every gradient, the arena planned as asked */
static std::vector<float> step(const std::vector<const char *> &specs, const char *opt, const char *loss, int64_t B,
                               bool share, size_t greedy_max, int64_t *arena = nullptr, bool act_fusion = true) {
    nnl_model m;
    nnl_model_set_seed(&m, 3);
    m.no_act_fusion = !act_fusion;
    for (auto *s : specs) m.add(s);
    m.compile(opt, loss, "accuracy");
    m.arena_share = share;
    m.arena_greedy_max = greedy_max;
    m.ensure_batch(B);
    if (share) check_steps(m, B);
    if (arena) *arena = (int64_t)m.arena.size();
    auto x = random_vec((size_t)(B * m.input.size()), 17, 0.f, 1.f);
    std::vector<float> t((size_t)(B * m.target_width()));
    for (size_t k = 0; k < t.size(); k++) t[k] = (float)(k * 7 % (size_t)m.classes());
    std::vector<int64_t> idx((size_t)B);
    std::iota(idx.begin(), idx.end(), 0);
    m.gather(x.data(), t.data(), idx.data(), B);
    m.forward(B, true, 11);
    std::vector<double> ms(m.metrics.size() + 1, 0.0);
    double l = m.loss_and_grad(B, m.dact[m.layers.size()], ms.data());
    m.backward(B, 11);
    std::vector<float> g(m.G.begin(), m.G.end());
    g.push_back((float)l);
    return g;
}
} // namespace arenat

TEST_CASE("activation arena: buffers share memory only when their times do not meet; every gradient is the "
          "same as with memory of their own") {
    const std::vector<std::vector<const char *>> models = {
        /* K-CNN: ReLU bits, pooling, two dropouts */
        {"Conv2D(8, (3, 3), activation='relu', input_shape=(12, 12, 1))", "Conv2D(6, (3, 3), activation='relu')",
         "MaxPooling2D(2)", "Dropout(0.25)", "Flatten()", "Dense(16, activation='relu')", "Dropout(0.5)",
         "Dense(10, activation='softmax')"},
        /* R-LENET, channels first */
        {"Conv2D(4, 5, padding='same', activation='relu', data_format='channels_first', input_shape=(1, 12, 12))",
         "MaxPooling2D(2, data_format='channels_first')",
         "Conv2D(5, 3, padding='same', activation='relu', data_format='channels_first')",
         "MaxPooling2D(2, data_format='channels_first')", "Flatten()", "Dense(12, activation='relu')",
         "Dense(10, activation='softmax')"},
        /* T-LENET: tanh reads y; average pooling; a linear conv */
        {"Conv2D(4, 3, activation='tanh', input_shape=(10, 10, 2))", "AveragePooling2D(2)", "Conv2D(3, 2)",
         "BatchNormalization()", "Activation('relu')", "Flatten()", "Dense(10)"},
        /* views first, recurrent layers (default: they read x and y) */
        {"Reshape((6, 4), input_shape=(24,))", "LSTM(5, return_sequences=True)", "GRU(4)",
         "Dense(10, activation='softmax')"},
    };
    for (size_t k = 0; k < models.size(); k++) {
        INFO("model " << k);
        const char *loss = k == 2 ? "sparse_categorical_crossentropy(from_logits=True)" : "sparse_categorical_crossentropy";
        int64_t shared = 0, own = 0, scan = 0;
        auto want = arenat::step(models[k], "sgd", loss, 5, false, nnl::PLAN_GREEDY_MAX, &own);
        auto got = arenat::step(models[k], "sgd", loss, 5, true, nnl::PLAN_GREEDY_MAX, &shared);
        auto lin = arenat::step(models[k], "sgd", loss, 5, true, 0, &scan); /* the linear scan */
        REQUIRE(got.size() == want.size());
        CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(lin.data(), want.data(), want.size() * sizeof(float)) == 0);
        CHECK(shared < own);
        CHECK(scan <= own);
        MESSAGE("model " << k << ": arena " << shared << " floats planned, " << scan << " by the linear scan, " << own
                         << " with memory of their own");
    }
}

TEST_CASE("a convolution's activation taken by the max pooling after it: the same loss and gradients, less memory") {
    const std::vector<std::vector<const char *>> fused = {
        /* T-LENET's order: tanh, then sigmoid, each into a 2x2 max pooling */
        {"Conv2D(4, 3, activation='tanh', input_shape=(10, 10, 2))", "MaxPooling2D(2)",
         "Conv2D(3, 2, activation='sigmoid')", "MaxPooling2D(2)", "Flatten()", "Dense(10)"},
        /* channels first (a channels-last handover between the two), ELU, 3x3 windows */
        {"Conv2D(4, 3, padding='same', activation='elu', data_format='channels_first', input_shape=(2, 9, 9))",
         "MaxPooling2D(3, data_format='channels_first')", "Flatten()", "Dense(10)"},
        /* 1-D, SELU, 'same' pooling over an odd length (a window hangs over the edge) */
        {"Conv1D(5, 3, activation='selu', input_shape=(21, 3))", "MaxPooling1D(2, padding='same')", "Flatten()",
         "Dense(10)"},
        /* 3-D, tanh, strides wider than the window (positions no window reads) */
        {"Conv3D(2, 2, activation='tanh', input_shape=(7, 7, 7, 1))", "MaxPooling3D(2, strides=3)", "Flatten()",
         "Dense(10)"},
    };
    const char *loss = "sparse_categorical_crossentropy(from_logits=True)";
    for (size_t k = 0; k < fused.size(); k++) {
        INFO("model " << k);
        int64_t a1 = 0, a0 = 0;
        auto got = arenat::step(fused[k], "sgd", loss, 5, true, nnl::PLAN_GREEDY_MAX, &a1, true);
        auto want = arenat::step(fused[k], "sgd", loss, 5, true, nnl::PLAN_GREEDY_MAX, &a0, false);
        REQUIRE(got.size() == want.size());
        size_t differ = 0;
        for (size_t i = 0; i < got.size(); i++) differ += !(got[i] == want[i]); /* == : a zero's sign aside */
        CHECK(differ == 0);
        CHECK(a1 <= a0);
        nnl_model m;
        for (auto *sp : fused[k]) m.add(sp);
        CHECK(m.layers[0]->act_by_next);
        CHECK(m.layers[1]->absorb == dynamic_cast<nnl::Conv &>(*m.layers[0]).act);
        CHECK(!m.layers[0]->backward_reads_y());
        CHECK(m.layers[1]->backward_reads_y());
    }
    /* not taken: ReLU (its bits are cheaper), overlapping windows, average
       pooling, a linear convolution, a layer in between */
    const std::vector<std::vector<const char *>> kept = {
        {"Conv2D(4, 3, activation='relu', input_shape=(10, 10, 2))", "MaxPooling2D(2)", "Flatten()", "Dense(10)"},
        {"Conv2D(4, 3, activation='tanh', input_shape=(10, 10, 2))", "MaxPooling2D(3, strides=2)", "Flatten()",
         "Dense(10)"},
        {"Conv2D(4, 3, activation='tanh', input_shape=(10, 10, 2))", "AveragePooling2D(2)", "Flatten()", "Dense(10)"},
        {"Conv2D(4, 3, input_shape=(10, 10, 2))", "MaxPooling2D(2)", "Flatten()", "Dense(10)"},
        {"Conv2D(4, 3, activation='tanh', input_shape=(10, 10, 2))", "Dropout(0.2)", "MaxPooling2D(2)", "Flatten()",
         "Dense(10)"},
    };
    for (size_t k = 0; k < kept.size(); k++) {
        INFO("unfused model " << k);
        nnl_model m;
        for (auto *sp : kept[k]) m.add(sp);
        for (auto &l : m.layers) {
            CHECK(!l->act_by_next);
            CHECK(l->absorb == nnl::ACT_LINEAR);
        }
        auto got = arenat::step(kept[k], "sgd", loss, 4, true, nnl::PLAN_GREEDY_MAX);
        auto want = arenat::step(kept[k], "sgd", loss, 4, false, nnl::PLAN_GREEDY_MAX);
        CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
    }
    /* T-LENET at batch 512 (issue 14's memory target): the first
       convolution's output (23.6 MB) no longer lives to its backward */
    const std::vector<const char *> tlenet = {
        "Conv2D(20, 5, activation='tanh', input_shape=(28, 28, 1))", "MaxPooling2D(2)",
        "Conv2D(50, 5, activation='tanh')", "MaxPooling2D(2)", "Flatten()", "Dense(500, activation='tanh')",
        "Dense(10)"};
    int64_t plan[2];
    for (int f = 0; f < 2; f++) {
        nnl_model m;
        m.no_act_fusion = f == 0;
        for (auto *sp : tlenet) m.add(sp);
        m.compile("sgd", loss, "accuracy");
        m.ensure_batch(512);
        arenat::check_steps(m, 512);
        plan[f] = m.arena_planned;
    }
    MESSAGE("T-LENET at batch 512: arena " << plan[0] * 4e-6 << " MB unfused, " << plan[1] * 4e-6 << " MB fused");
    CHECK(plan[1] <= plan[0] - 512 * 11520 * 7 / 10);
}

TEST_CASE("plan_arena: buffers whose times meet never overlap, greedy or linear scan") {
    std::mt19937 g(9);
    for (int trial = 0; trial < 40; trial++) {
        std::vector<nnl::ArenaBuf> bufs((size_t)(1 + g() % 60));
        for (auto &b : bufs) {
            b.size = (int64_t)(g() % 5 == 0 ? 0 : 1 + g() % 1000);
            int a = (int)(g() % 50), e = a + (int)(g() % 20);
            b.live(a, e);
            if (g() % 3 == 0) b.live(e + 2 + (int)(g() % 10), e + 12 + (int)(g() % 10));
        }
        for (size_t limit : {nnl::PLAN_GREEDY_MAX, (size_t)0}) {
            int64_t total = nnl::plan_arena(bufs, limit);
            for (size_t i = 0; i < bufs.size(); i++) {
                if (!bufs[i].size) continue;
                CHECK(bufs[i].off >= 0);
                CHECK(bufs[i].off + bufs[i].size <= total);
                for (size_t j = i + 1; j < bufs.size(); j++)
                    if (bufs[j].size && bufs[i].meets(bufs[j])) {
                        INFO("trial " << trial << " limit " << limit << " buffers " << i << ", " << j);
                        CHECK((bufs[i].off + bufs[i].size <= bufs[j].off || bufs[j].off + bufs[j].size <= bufs[i].off));
                    }
            }
        }
    }
}

TEST_CASE("activation arena of the seed CNNs: the peak of a training step, not the sum of its buffers") {
    /* K-CNN at batch 120: the step's peak is MaxPooling's backward: the
       second convolution's input (conv1's output, 2.60M floats), the
       pooling indices (1.11M), the gradient arriving (1.11M) and leaving
       (4.42M), the batch (0.09M) and both convolutions' ReLU bits (0.22M):
       9.55M floats (38 MB), where one buffer each takes 22.1M (88 MB) and
       the plan before (every activation and workspace of its own, two
       gradient buffers, one scratch) 19.0M. */
    nnl_model m;
    for (auto *l : {"Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1))",
                    "Conv2D(64, (3, 3), activation='relu')", "MaxPooling2D(2)", "Dropout(0.25)", "Flatten()",
                    "Dense(128, activation='relu')", "Dropout(0.5)", "Dense(10, activation='softmax')"})
        m.add(l);
    m.compile("adadelta", "sparse_categorical_crossentropy", "accuracy");
    m.ensure_batch(120);
    arenat::check_steps(m, 120);
    CHECK(m.dact[0] == nullptr); /* the first layer computes no input gradient */
    CHECK(m.arena_planned == (int64_t)m.arena.size());
    CHECK(m.arena_planned <= 9600000);
    MESSAGE("K-CNN, batch 120: arena " << m.arena_planned << " floats, " << m.arena_unplanned
                                       << " without sharing");
    /* R-LENET at batch 128 (channels first): the first pooling, between two
       channels-first convolutions, needs no transposed
       copies. The peak, the second convolution's forward or backward, holds
       about 5.2M floats (its channels-first copies and im2col block 2.75M,
       its output or the gradient arriving 1.25M, its input 0.5M, the first
       pooling's indices 0.5M); the greedy plan takes 5.89M (24 MB), where
       the plan before took 12.1M. */
    nnl_model r;
    for (auto *l : {"Conv2D(20, 5, padding='same', activation='relu', data_format='channels_first', input_shape=(1, 28, 28))",
                    "MaxPooling2D(2, data_format='channels_first')",
                    "Conv2D(50, 5, padding='same', activation='relu', data_format='channels_first')",
                    "MaxPooling2D(2, data_format='channels_first')", "Flatten()", "Dense(500, activation='relu')",
                    "Dense(10, activation='softmax')"})
        r.add(l);
    r.compile("adam", "sparse_categorical_crossentropy", "accuracy");
    r.ensure_batch(128);
    arenat::check_steps(r, 128);
    CHECK(r.layers[1]->scratch(128) == 0);
    CHECK(r.arena_planned <= 6000000);
    MESSAGE("R-LENET, batch 128: arena " << r.arena_planned << " floats, " << r.arena_unplanned
                                         << " without sharing");
}

TEST_CASE("ReLU bits: relu_bits_backward gives act_backward's ReLU gradient exactly; a ReLU convolution trained keeps "
          "bits, not its output") {
    for (int64_t n : {1, 31, 32, 33, 100, 1000}) {
        auto y = random_vec((size_t)n, 3, -1.f, 1.f), dy = random_vec((size_t)n, 4, -2.f, 2.f);
        for (int64_t i = 0; i < n; i += 7) y[(size_t)i] = i % 2 ? 0.f : -0.f; /* not positive */
        for (int64_t i = 0; i < n; i += 5) y[(size_t)i] = std::max(y[(size_t)i], 0.f); /* ReLU outputs */
        std::vector<uint32_t> bits((size_t)((n + 31) / 32), 0xdeadbeefu);
        std::vector<float> want((size_t)n), got((size_t)n);
        nnl::cpu_kernels.act_backward(nnl::ACT_RELU, y.data(), y.data(), dy.data(), want.data(), 1, n);
        nnl::cpu_kernels.relu_bits(y.data(), bits.data(), n);
        nnl::cpu_kernels.relu_bits_backward(bits.data(), dy.data(), got.data(), n);
        CHECK(std::memcmp(got.data(), want.data(), (size_t)n * sizeof(float)) == 0);
        if (n % 32) CHECK((bits.back() >> (n % 32)) == 0u); /* the spare bits are 0 */
    }
    nnl_model m;
    m.add("Conv2D(3, 3, activation='relu', input_shape=(6, 6, 2))");
    m.add("Conv2D(2, 3, activation='tanh')");
    auto &c1 = dynamic_cast<nnl::Conv &>(*m.layers[0]), &c2 = dynamic_cast<nnl::Conv &>(*m.layers[1]);
    CHECK(c1.relu_bits());
    CHECK(!c1.backward_reads_y());
    CHECK(c1.workspace(10) == (10 * 4 * 4 * 3 + 31) / 32);
    CHECK(!c2.relu_bits());
    CHECK(c2.backward_reads_y());

    /* the bits path (a training forward keeps them) against finite
       differences, and bit for bit against the path through y */
    gradcheck_layer("Conv2D(3, 3, activation='relu')", {5, 5, 2}, true);
    for (int f = 0; f < 2; f++) {
        nnl_model k;
        k.add(f ? "Input(shape=(2, 7, 6))" : "Input(shape=(7, 6, 2))");
        k.add(f ? "Conv2D(4, 3, activation='relu', data_format='channels_first')" : "Conv2D(4, 3, activation='relu')");
        nnl::Layer &L = *k.layers[0];
        const int64_t B = 5;
        k.ensure_batch(B);
        auto x = random_vec((size_t)(B * L.in.size()), 21, -1.f, 1.f), dy = random_vec((size_t)(B * L.out.size()), 22);
        std::vector<float> y((size_t)(B * L.out.size())), dx1(x.size()), dx2(x.size()), dy1 = dy, dy2 = dy;
        nnl::Ctx tr, inf;
        tr.training = true;
        L.forward(x.data(), y.data(), B, tr);
        L.backward(x.data(), y.data(), dy1.data(), dx1.data(), B, tr); /* through the bits */
        std::vector<float> g1(k.G.begin(), k.G.end());
        L.backward(x.data(), y.data(), dy2.data(), dx2.data(), B, inf); /* through y */
        INFO("channels " << (f ? "first" : "last"));
        CHECK(std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(g1.data(), k.G.data(), g1.size() * sizeof(float)) == 0);
    }
}

/* Channels-first Conv and Pool layers next to each other skip the
   transposes between them (Layer::cl_in / cl_out): the same model with a
   linear Activation between every pair (which keeps every transpose) must
   predict and train bit for bit the same. */
TEST_CASE("channels-first conv/pool chains: no transposes between them, bit for bit the same results") {
    const char *chain[] = {"Conv2D(4, 3, padding='same', activation='relu', data_format='channels_first', "
                           "input_shape=(2, 10, 10))",
                           "MaxPooling2D(2, data_format='channels_first')",
                           "Conv2D(5, 3, activation='tanh', data_format='channels_first')",
                           "AveragePooling2D(2, strides=1, data_format='channels_first')",
                           "Conv2D(3, 2, data_format='channels_first')"};
    nnl_model *a = nnl_model_create(), *b = nnl_model_create();
    for (size_t i = 0; i < sizeof chain / sizeof *chain; i++) {
        REQUIRE(nnl_add(a, chain[i]) == NNL_OK);
        REQUIRE(nnl_add(b, chain[i]) == NNL_OK);
        if (i + 1 < sizeof chain / sizeof *chain) REQUIRE(nnl_add(b, "Activation('linear')") == NNL_OK);
    }
    for (const char *l : {"Flatten()", "Dense(3, activation='softmax')"}) {
        REQUIRE(nnl_add(a, l) == NNL_OK);
        REQUIRE(nnl_add(b, l) == NNL_OK);
    }
    /* a: every inner link skips its transposes; b: none does */
    nnl::Model &ma = *a, &mb = *b;
    for (size_t i = 0; i < 5; i++) {
        CHECK(ma.layers[i]->cl_in == (i > 0));
        CHECK(ma.layers[i]->cl_out == (i < 4));
    }
    for (auto &l : mb.layers) CHECK((!l->cl_in && !l->cl_out));
    /* the linear Activations hold no weights: both models lay theirs out alike */
    REQUIRE(ma.W.size() == mb.W.size());
    std::copy(ma.W.begin(), ma.W.end(), mb.W.begin());
    const int64_t N = 24, xs[4] = {N, 2, 10, 10}, ys[1] = {N};
    std::vector<float> x = random_vec((size_t)(N * 200), 7), y((size_t)N);
    for (int64_t i = 0; i < N; i++) y[(size_t)i] = (float)(i % 3);
    std::vector<float> pa((size_t)(N * 3)), pb(pa.size());
    REQUIRE(nnl_predict(a, x.data(), 4, xs, 8, pa.data(), N * 3) == NNL_OK);
    REQUIRE(nnl_predict(b, x.data(), 4, xs, 8, pb.data(), N * 3) == NNL_OK);
    CHECK(pa == pb);
    for (nnl_model *m : {a, b}) {
        REQUIRE(nnl_compile(m, "SGD(learning_rate=0.1, momentum=0.9)", "sparse_categorical_crossentropy", "") ==
                NNL_OK);
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = 3, o.batch_size = 8, o.shuffle = 0, o.verbose = 0;
        REQUIRE(nnl_fit(m, x.data(), 4, xs, y.data(), NNL_FLOAT32, 1, ys, &o) == NNL_OK);
    }
    CHECK(ma.W == mb.W);
    REQUIRE(nnl_predict(a, x.data(), 4, xs, 8, pa.data(), N * 3) == NNL_OK);
    REQUIRE(nnl_predict(b, x.data(), 4, xs, 8, pb.data(), N * 3) == NNL_OK);
    CHECK(pa == pb);
    nnl_model_free(a);
    nnl_model_free(b);
}
