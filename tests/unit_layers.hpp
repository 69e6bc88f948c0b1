/* Finite-difference gradient checks of every layer, activation and loss,
   plus forward values against closed forms. Included by unit.cpp. */

/* Central differences of a float function: eps 1e-2 keeps float32 rounding
   (~1e-7 / eps) well under the O(eps^2) truncation error we accept. */
static const float FD_EPS = 1e-2f;

static void check_close(const std::vector<double> &analytic, const std::vector<double> &numeric, const char *what) {
    REQUIRE(analytic.size() == numeric.size());
    double scale = 0;
    for (double v : numeric) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < analytic.size(); i++) {
        INFO(std::string(what) << " index " << i << " analytic " << analytic[i] << " numeric " << numeric[i]);
        CHECK(std::fabs(analytic[i] - numeric[i]) <= 2e-3 * (1.0 + scale));
    }
}

/* Checks dL/dx and dL/dW of the single layer `spec` on inputs of shape `in`,
   with L = sum(r * y) for a fixed random r (so dL/dy = r). */
static void gradcheck_layer(const char *spec, nnl::Shape in, bool training = false, int B = 3,
                            bool distinct = false) {
    std::string spec_s = spec;
    INFO("layer " << spec_s << " training=" << training);
    nnl_model m;
    m.seed = 1234; /* fixed weights: a check never straddles a kink by chance */
    m.rng.reseed(m.seed);
    m.seeded = true;
    m.add(("Input(shape=" + in.str(false) + ")").c_str());
    m.add(spec);
    nnl::Layer &L = *m.layers[0];
    m.ensure_batch(B);
    int64_t nin = B * in.size(), nout = B * L.out.size();
    auto x = random_vec((size_t)nin, 11, -1.5f, 1.5f);
    auto r = random_vec((size_t)nout, 12);
    if (distinct) { /* values 0.05 apart, shuffled: no ties for max pooling */
        for (int64_t i = 0; i < nin; i++) x[(size_t)i] = 0.05f * (float)(i - nin / 2);
        std::mt19937 g(5);
        std::shuffle(x.begin(), x.end(), g);
    } else { /* move inputs off the kinks of relu-like functions */
        for (auto &v : x)
            if (std::fabs(v) < 3 * FD_EPS) v += 0.1f;
    }
    nnl::Ctx c;
    c.training = training;
    c.seed = 42;
    std::vector<float> y((size_t)nout), dx((size_t)nin);
    auto objective = [&]() {
        L.forward(x.data(), L.is_view() ? x.data() : y.data(), B, c);
        const float *out = L.is_view() ? x.data() : y.data();
        double s = 0;
        for (int64_t i = 0; i < nout; i++) s += (double)r[(size_t)i] * out[i];
        return s;
    };
    objective();
    if (L.is_view()) { /* a view's gradient is the identity on the same memory */
        CHECK(L.out.size() == L.in.size());
        return;
    }
    auto r1 = r; /* backward may overwrite its dy */
    L.backward(x.data(), y.data(), r1.data(), dx.data(), B, c);
    std::vector<double> an(dx.begin(), dx.end()), nu;
    for (int64_t i = 0; i < nin; i++) {
        float keep = x[(size_t)i];
        x[(size_t)i] = keep + FD_EPS;
        double p = objective();
        x[(size_t)i] = keep - FD_EPS;
        double q = objective();
        x[(size_t)i] = keep;
        nu.push_back((p - q) / (2 * FD_EPS));
    }
    check_close(an, nu, "dx");
    for (auto &w : L.weights) {
        if (!w.trainable) continue; /* state such as moving statistics has no gradient */
        /* randomise biases too, so their gradients are exercised off zero */
        auto init = random_vec((size_t)w.shape.size(), 13);
        std::copy(init.begin(), init.end(), w.w);
        objective();
        auto r2 = r;
        L.backward(x.data(), y.data(), r2.data(), dx.data(), B, c);
        std::vector<double> ga(w.g, w.g + w.shape.size()), gn;
        for (int64_t i = 0; i < w.shape.size(); i++) {
            float keep = w.w[i];
            w.w[i] = keep + FD_EPS;
            double p = objective();
            w.w[i] = keep - FD_EPS;
            double q = objective();
            w.w[i] = keep;
            gn.push_back((p - q) / (2 * FD_EPS));
        }
        check_close(ga, gn, w.name.c_str());
    }
}

TEST_CASE("gradient check: Dense with every activation") {
    for (int a = 0; a < nnl::ACT_COUNT; a++) {
        std::string spec = std::string("Dense(5, activation='") + nnl::act_names[a] + "')";
        gradcheck_layer(spec.c_str(), nnl::Shape{4});
    }
    gradcheck_layer("Dense(3, use_bias=False)", nnl::Shape{6});
    gradcheck_layer("Dense(3, activation='tanh')", nnl::Shape{2, 4}); /* applied on the last axis */
}

TEST_CASE("gradient check: Activation layer with every activation") {
    for (int a = 0; a < nnl::ACT_COUNT; a++) {
        std::string spec = std::string("Activation('") + nnl::act_names[a] + "')";
        gradcheck_layer(spec.c_str(), nnl::Shape{2, 5});
    }
}

TEST_CASE("gradient check: Dropout (training, fixed mask) and shape layers") {
    gradcheck_layer("Dropout(0.4)", nnl::Shape{10}, true);
    gradcheck_layer("Dropout(0.4)", nnl::Shape{10}, false);
    gradcheck_layer("Flatten()", nnl::Shape{2, 3});
    gradcheck_layer("Reshape((3, -1))", nnl::Shape{6});
}

TEST_CASE("activations match their closed forms") {
    struct { nnl::Act a; float x, y; } cases[] = {
        {nnl::ACT_RELU, -1.f, 0.f}, {nnl::ACT_RELU, 2.f, 2.f}, {nnl::ACT_SIGMOID, 0.f, 0.5f},
        {nnl::ACT_TANH, 0.5f, 0.46211715726f}, {nnl::ACT_LEAKY_RELU, -1.f, -0.2f}, {nnl::ACT_ELU, -1.f, -0.63212055882f},
        {nnl::ACT_SELU, -1.f, -1.1113307378f}, {nnl::ACT_SELU, 1.f, 1.0507009873f},
        {nnl::ACT_GELU, 1.f, 0.84134474606f}, {nnl::ACT_SOFTPLUS, 0.f, 0.69314718056f},
        {nnl::ACT_SOFTSIGN, 1.f, 0.5f}, {nnl::ACT_SWISH, 1.f, 0.73105857863f},
        {nnl::ACT_HARD_SIGMOID, 1.f, 0.7f}, {nnl::ACT_HARD_SIGMOID, 3.f, 1.f}, {nnl::ACT_EXPONENTIAL, 1.f, 2.7182818285f},
        {nnl::ACT_SOFTPLUS, 100.f, 100.f}, {nnl::ACT_SIGMOID, -100.f, 0.f}};
    for (auto &c : cases) {
        float y;
        nnl::K().act_forward(c.a, &c.x, &y, 1, 1);
        INFO(nnl::act_names[c.a] << "(" << c.x << ")");
        CHECK(y == doctest::Approx(c.y).epsilon(1e-6));
    }
    float z[3] = {1000.f, 1001.f, 1002.f}, p[3];
    nnl::K().act_forward(nnl::ACT_SOFTMAX, z, p, 1, 3); /* stable for large logits */
    CHECK(p[0] == doctest::Approx(0.09003057f));
    CHECK(p[2] == doctest::Approx(0.66524096f));
}

/* Checks dLoss/d(input) for a loss spec; `act` is the output activation that
   compile would fuse (softmax/sigmoid), applied to z before the loss. */
static void gradcheck_loss(const char *spec, nnl::Act act, int64_t B, int64_t D, int64_t C, bool sparse) {
    INFO("loss " << spec << " act " << nnl::act_names[act]);
    nnl::Loss L = nnl::make_loss(spec);
    L.fused = (act == nnl::ACT_SOFTMAX || act == nnl::ACT_SIGMOID) && !L.from_logits ? act : nnl::ACT_LINEAR;
    auto z = random_vec((size_t)(B * D), 21, -2.f, 2.f);
    std::vector<float> t;
    if (sparse) {
        for (int64_t i = 0; i < B * D / C; i++) t.push_back((float)(i * 7 % C));
    } else if (C > 1) { /* soft one-hot-like rows */
        auto u = random_vec((size_t)(B * D), 22, 0.f, 1.f);
        t.assign(u.begin(), u.end());
        for (int64_t r = 0; r < B * D / C; r++) {
            double s = 0;
            for (int64_t j = 0; j < C; j++) s += t[(size_t)(r * C + j)];
            for (int64_t j = 0; j < C; j++) t[(size_t)(r * C + j)] /= (float)s;
        }
    } else {
        auto u = random_vec((size_t)(B * D), 23, 0.f, 1.f);
        t.assign(u.begin(), u.end());
    }
    std::vector<float> y((size_t)(B * D)), g((size_t)(B * D));
    auto value = [&]() {
        nnl::K().act_forward(act, z.data(), y.data(), act == nnl::ACT_SOFTMAX ? B * D / C : 1,
                             act == nnl::ACT_SOFTMAX ? C : B * D);
        return L.run(y.data(), z.data(), t.data(), B, D, C, nullptr) / B;
    };
    value();
    L.run(y.data(), z.data(), t.data(), B, D, C, g.data());
    std::vector<double> an;
    if (L.fused != nnl::ACT_LINEAR || act == nnl::ACT_LINEAR) {
        an.assign(g.begin(), g.end()); /* the gradient is w.r.t. z already */
    } else {                           /* chain through the activation */
        std::vector<float> dz((size_t)(B * D));
        nnl::K().act_backward(act, z.data(), y.data(), g.data(), dz.data(), act == nnl::ACT_SOFTMAX ? B * D / C : 1,
                              act == nnl::ACT_SOFTMAX ? C : B * D);
        an.assign(dz.begin(), dz.end());
    }
    std::vector<double> nu;
    for (size_t i = 0; i < z.size(); i++) {
        float keep = z[i];
        z[i] = keep + FD_EPS;
        double p = value();
        z[i] = keep - FD_EPS;
        double q = value();
        z[i] = keep;
        nu.push_back((p - q) / (2 * FD_EPS));
    }
    check_close(an, nu, spec);
}

TEST_CASE("gradient check: every loss, from probabilities, from logits, and fused") {
    gradcheck_loss("sparse_categorical_crossentropy", nnl::ACT_SOFTMAX, 4, 5, 5, true);
    gradcheck_loss("sparse_categorical_crossentropy", nnl::ACT_SOFTMAX, 2, 12, 4, true); /* 3 positions */
    gradcheck_loss("sparse_categorical_crossentropy(from_logits=True)", nnl::ACT_LINEAR, 4, 5, 5, true);
    gradcheck_loss("categorical_crossentropy", nnl::ACT_SOFTMAX, 4, 5, 5, false);
    gradcheck_loss("categorical_crossentropy(from_logits=True)", nnl::ACT_LINEAR, 4, 5, 5, false);
    gradcheck_loss("binary_crossentropy", nnl::ACT_SIGMOID, 4, 3, 3, false);
    gradcheck_loss("binary_crossentropy(from_logits=True)", nnl::ACT_LINEAR, 4, 3, 3, false);
    gradcheck_loss("mse", nnl::ACT_LINEAR, 4, 3, 3, false);
    gradcheck_loss("mae", nnl::ACT_LINEAR, 4, 3, 3, false);
    gradcheck_loss("huber(delta=0.5)", nnl::ACT_LINEAR, 4, 3, 3, false);
    gradcheck_loss("mse", nnl::ACT_TANH, 3, 4, 4, false);
}

TEST_CASE("cross-entropy from probabilities without fusion (softmax chained, Keras clipping)") {
    /* unfused path: the loss sees probabilities only */
    nnl::Loss L = nnl::make_loss("categorical_crossentropy");
    float p[3] = {0.2f, 0.3f, 0.5f}, t[3] = {0, 0, 1}, g[3];
    double l = L.run(p, nullptr, t, 1, 3, 3, g);
    CHECK(l == doctest::Approx(-std::log(0.5)));
    CHECK(g[2] == doctest::Approx(1.0 - 1.0 / 0.5)); /* d/dp_j of -log(p_c / sum p) */
    CHECK(g[0] == doctest::Approx(1.0));
    float p0[3] = {0.f, 0.f, 1.f}, t0[3] = {1, 0, 0};
    l = L.run(p0, nullptr, t0, 1, 3, 3, g); /* clipped: finite */
    CHECK(l == doctest::Approx(-std::log(1e-7)).epsilon(1e-4));
    CHECK(std::isfinite(g[0]));
}

TEST_CASE("losses and metrics match hand-computed values") {
    float z[4] = {2.f, 1.f, 0.1f, -1.f};
    std::vector<float> t1v(4, 0.f); /* class 0; sized like z so -O3 sees no out-of-bounds path */
    const float &t1 = t1v[0];
    nnl::Loss s = nnl::make_loss("sparse_categorical_crossentropy(from_logits=True)");
    double lse = std::log(std::exp(2.0) + std::exp(1.0) + std::exp(0.1) + std::exp(-1.0));
    CHECK(s.run(z, nullptr, &t1, 1, 4, 4, nullptr) == doctest::Approx(lse - 2.0));
    float y2[2] = {0.5f, -1.f}, t2[2] = {1.f, 1.f};
    CHECK(nnl::make_loss("mse").run(y2, nullptr, t2, 1, 2, 2, nullptr) == doctest::Approx((0.25 + 4.0) / 2));
    CHECK(nnl::make_loss("mae").run(y2, nullptr, t2, 1, 2, 2, nullptr) == doctest::Approx((0.5 + 2.0) / 2));
    CHECK(nnl::make_loss("huber").run(y2, nullptr, t2, 1, 2, 2, nullptr) == doctest::Approx((0.125 + 1.5) / 2));
    nnl::Loss sp = nnl::make_loss("sparse_categorical_crossentropy");
    float probs[6] = {0.1f, 0.7f, 0.2f, 0.5f, 0.3f, 0.2f};
    std::vector<float> labv(6, 0.f); /* sized like probs: silences a -Warray-bounds false positive */
    labv[0] = 1;
    labv[1] = 2;
    const float *lab = labv.data();
    CHECK(nnl::make_metric("accuracy", sp, 3).run(probs, lab, 2, 3, 3) == doctest::Approx(1.0));
    CHECK(nnl::make_metric("sparse_top_k_categorical_accuracy(k=2)", sp, 3).run(probs, lab, 2, 3, 3) ==
          doctest::Approx(1.0));
    CHECK(nnl::make_metric("sparse_top_k_categorical_accuracy(k=1)", sp, 3).run(probs, lab, 2, 3, 3) ==
          doctest::Approx(1.0));
    nnl::Loss b = nnl::make_loss("binary_crossentropy");
    float yb[4] = {0.9f, 0.4f, 0.6f, 0.1f}, tb[4] = {1, 1, 0, 0};
    CHECK(nnl::make_metric("accuracy", b, 1).run(yb, tb, 4, 1, 1) == doctest::Approx(2.0));
}

TEST_CASE("initialisers follow Keras' scales and are reproducible from the seed") {
    nnl::Rng r1(5), r2(5);
    std::vector<float> a(300 * 200), b(300 * 200);
    nnl::init_weights(a.data(), nnl::Shape{300, 200}, nnl::parse_init("glorot_uniform", "t"), r1);
    nnl::init_weights(b.data(), nnl::Shape{300, 200}, nnl::parse_init("glorot_uniform", "t"), r2);
    CHECK(a == b);
    double lim = std::sqrt(6.0 / 500), mx = 0, var = 0;
    for (float v : a) {
        mx = std::max(mx, (double)std::fabs(v));
        var += (double)v * v;
    }
    CHECK(mx <= lim);
    CHECK(mx > 0.99 * lim);
    CHECK(var / a.size() == doctest::Approx(lim * lim / 3).epsilon(0.03));
    nnl::init_weights(a.data(), nnl::Shape{300, 200}, nnl::parse_init("he_normal", "t"), r1);
    var = 0;
    mx = 0;
    for (float v : a) {
        var += (double)v * v;
        mx = std::max(mx, (double)std::fabs(v));
    }
    CHECK(var / a.size() == doctest::Approx(2.0 / 300).epsilon(0.03)); /* truncated, rescaled to the target */
    CHECK(mx <= 2 * std::sqrt(2.0 / 300) / 0.87962566103423978 + 1e-6);
    CHECK_THROWS_AS(nnl::parse_init("orthogonal_ish", "t"), nnl::Error);
}

TEST_CASE("a model's forward pass equals the hand-written network") {
    nnl_model m;
    nnl_model_set_seed(&m, 3);
    m.add("Dense(3, activation='relu', input_shape=(2,))");
    m.add("Dense(2, activation='softmax')");
    float x[2] = {0.5f, -1.f};
    float out[2];
    m.predict(x, 1, 1, out);
    const float *W1 = m.slices[0].w, *b1 = m.slices[1].w, *W2 = m.slices[2].w, *b2 = m.slices[3].w;
    double h[3], z[2];
    for (int j = 0; j < 3; j++) h[j] = std::max(0.0, (double)x[0] * W1[j] + (double)x[1] * W1[3 + j] + b1[j]);
    for (int k = 0; k < 2; k++) z[k] = h[0] * W2[k] + h[1] * W2[2 + k] + h[2] * W2[4 + k] + b2[k];
    double e0 = std::exp(z[0]), e1 = std::exp(z[1]);
    CHECK(out[0] == doctest::Approx(e0 / (e0 + e1)));
    CHECK(out[1] == doctest::Approx(e1 / (e0 + e1)));
}

TEST_CASE("dropout masks: the rate, inverted scaling, seeds, and no dependence on threads or SIMD") {
    const int64_t n = 200003;
    std::vector<float> x((size_t)n, 2.f), y1((size_t)n), y2((size_t)n), m1((size_t)n), m2((size_t)n);
    for (float rate : {0.1f, 0.5f, 0.9f}) {
        nnl::g_threads = 1;
        nnl::K().dropout_forward(x.data(), y1.data(), m1.data(), n, rate, 12345, 0x5a5a);
        nnl::g_threads = 2;
        nnl::K().dropout_forward(x.data(), y2.data(), m2.data(), n, rate, 12345, 0x5a5a);
        nnl::g_threads = 0;
        int64_t dropped = 0;
        for (int64_t i = 0; i < n; i++) {
            dropped += m1[(size_t)i] == 0.f;
            CHECK(m1[(size_t)i] == m2[(size_t)i]);
            CHECK(y1[(size_t)i] == 2.f * m1[(size_t)i]);
            if (m1[(size_t)i] != 0.f) CHECK(m1[(size_t)i] == doctest::Approx(1.0 / (1.0 - rate)));
        }
        /* binomial: 5 standard deviations */
        double sd = std::sqrt(n * rate * (1 - rate));
        CHECK(std::fabs((double)dropped - n * rate) < 5 * sd);
        /* the portable path draws the same mask as the vectorised one */
        std::vector<float> y3((size_t)n), m3((size_t)n);
        nnl::dropout_generic(x.data(), y3.data(), m3.data(), 0, n, (uint32_t)std::ceil(rate * 16777216.0),
                             1.f / (1.f - rate), nnl::mix64(12345 ^ 0x5a5a));
        CHECK(m3 == m1);
        /* another seed, another mask */
        nnl::K().dropout_forward(x.data(), y2.data(), m2.data(), n, rate, 12346, 0x5a5a);
        CHECK(m2 != m1);
    }
}
