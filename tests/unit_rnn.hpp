/* Recurrent layers (issue 12): SimpleRNN, LSTM and GRU against finite
   differences through time for every option, Keras' weight layouts and
   parameter counts, JSON round trips, stateful carry, and the PyTorch
   reference fixture (tests/reference/rnn_reference.npz). Included by
   unit.cpp (after unit_layers.hpp, whose gradcheck_layer it uses). */

TEST_CASE("gradient check through time: SimpleRNN, LSTM, GRU with every option") {
    const char *specs[] = {
        "SimpleRNN(4)",
        "SimpleRNN(4, return_sequences=True)",
        "SimpleRNN(3, activation='elu', go_backwards=True, return_sequences=True)",
        "SimpleRNN(4, use_bias=False)",
        "LSTM(4)",
        "LSTM(4, return_sequences=True)",
        "LSTM(3, go_backwards=True)",
        "LSTM(3, go_backwards=True, return_sequences=True)",
        "LSTM(3, use_bias=False, return_sequences=True)",
        "LSTM(3, activation='elu', recurrent_activation='tanh')",
        /* Keras 2's default; a piecewise-linear gate: a case whose pre-activations stay off its kinks at +-2.5
           by more than the difference step (return_sequences=True straddles one at x index 20) */
        "LSTM(3, recurrent_activation='hard_sigmoid')", /* exactly: the lstm_hs case of the PyTorch fixture */
        "GRU(4)",
        "GRU(4, return_sequences=True)",
        "GRU(3, go_backwards=True, return_sequences=True)",
        "GRU(4, reset_after=False)",
        "GRU(4, reset_after=False, return_sequences=True)",
        "GRU(3, reset_after=False, go_backwards=True)",
        "GRU(3, use_bias=False)",
        "GRU(3, recurrent_activation='hard_sigmoid', reset_after=False)",
    };
    for (const char *s : specs) gradcheck_layer(s, nnl::Shape{5, 3});
}

namespace rnnref {

/* tests/reference/rnn_reference.npz, found as refmodel finds its fixture
   (NNL_RNN_FIXTURE, beside this file, or from the binary's folder) */
/* A committed fixture tests/reference/FILE: $ENV, beside this file, or
   from the binary's folder (also used by unit_bidir.hpp) */
static std::string find_fixture(const char *file, const char *env) {
    std::vector<std::string> tried;
    if (const char *e = getenv(env)) tried.push_back(e);
    std::string here = __FILE__;
    size_t slash = here.find_last_of('/');
    tried.push_back((slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/reference/" + file);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        std::string dir(exe, (size_t)n);
        tried.push_back(dir.substr(0, dir.find_last_of('/')) + "/../tests/reference/" + file);
    }
    for (auto &p : tried)
        if (access(p.c_str(), R_OK) == 0) return p;
    FAIL("the committed fixture " << file << " is missing (set " << env << "=path)");
    return "";
}
static std::string fixture_path() { return find_fixture("rnn_reference.npz", "NNL_RNN_FIXTURE"); }

/* One fixture case run through nnlite's layer: y, dx and the weight
   gradients, each as its max error over its reference's Euclidean norm
   (refmodel::scaled_diff). swap_gates plants a bug for the self-check. */
struct CaseResult {
    double y = 1, dx = 1, g[3] = {1, 1, 1};
};
static CaseResult run_case(const std::string &path, const std::string &c, bool swap_gates = false) {
    std::string spec = refmodel::text(path, (c + "_spec").c_str());
    auto x = npz_array(path, (c + "_x").c_str()), dy = npz_array(path, (c + "_dy").c_str());
    nnl_model m;
    m.seed = 1;
    m.rng.reseed(1);
    m.seeded = true;
    m.add("Input(shape=(5, 4))");
    m.add(spec.c_str());
    nnl::Layer &L = *m.layers[0];
    const int64_t B = 3;
    REQUIRE(L.weights.size() == 3);
    for (int i = 0; i < 3; i++) {
        auto w = npz_array(path, (c + "_w" + std::to_string(i)).c_str());
        REQUIRE(w.size() == (size_t)L.weights[(size_t)i].shape.size());
        std::copy(w.begin(), w.end(), L.weights[(size_t)i].w);
    }
    if (swap_gates) { /* exchange the first two gates' columns of the kernel (LSTM i/f, GRU z/r) */
        auto &k = L.weights[0];
        int64_t cols = k.shape.d[1], u = cols / (cols == 24 ? 4 : 3);
        for (int64_t r = 0; r < k.shape.d[0]; r++)
            for (int64_t j = 0; j < u; j++) std::swap(k.w[r * cols + j], k.w[r * cols + u + j]);
    }
    m.ensure_batch(B);
    nnl::Ctx ctx;
    ctx.training = true;
    std::vector<float> y((size_t)(B * L.out.size())), dx(x.size());
    REQUIRE(y.size() == dy.size());
    L.forward(x.data(), y.data(), B, ctx);
    for (auto &w : L.weights) std::fill(w.g, w.g + w.shape.size(), NAN);
    L.backward(x.data(), y.data(), dy.data(), dx.data(), B, ctx);
    CaseResult r;
    r.y = refmodel::scaled_diff(y.data(), npz_array(path, (c + "_y").c_str()));
    r.dx = refmodel::scaled_diff(dx.data(), npz_array(path, (c + "_dx").c_str()));
    for (int i = 0; i < 3; i++)
        r.g[i] = refmodel::scaled_diff(L.weights[(size_t)i].g, npz_array(path, (c + "_g" + std::to_string(i)).c_str()));
    return r;
}

} // namespace rnnref

/* Tolerance: nnlite computes in float32 what the fixture holds in float64
   from the same float32 inputs and weights. Five steps of 6-unit cells
   (dot products of 4 + 6 terms per gate, sigmoid/tanh computed to a few
   ulp) and the way back through them: errors of a few 1e-7 of each tensor's
   norm are float32 rounding; 1e-5 leaves a wide margin, and every error
   that matters is far above it (the planted swap of two gates below moves
   the figures to 1e-2 and more). */
static const double RNN_REF_TOL = 1e-5;

TEST_CASE("SimpleRNN, LSTM, GRU match PyTorch's nn.RNN/nn.LSTM/nn.GRU: outputs and every gradient") {
    std::string path = rnnref::fixture_path();
    std::string all = refmodel::text(path, "cases");
    std::vector<std::string> cases;
    for (size_t s = 0, e; s < all.size(); s = e + 1) {
        e = all.find('\n', s);
        if (e == std::string::npos) e = all.size();
        cases.push_back(all.substr(s, e - s));
    }
    CHECK(cases.size() == 7);
    double worst = 0;
    for (auto &c : cases) {
        rnnref::CaseResult r = rnnref::run_case(path, c);
        INFO(c << ": y " << r.y << ", dx " << r.dx << ", kernel " << r.g[0] << ", recurrent_kernel " << r.g[1]
               << ", bias " << r.g[2]);
        CHECK(r.y <= RNN_REF_TOL);
        CHECK(r.dx <= RNN_REF_TOL);
        for (double d : r.g) CHECK(d <= RNN_REF_TOL);
        worst = std::max({worst, r.y, r.dx, r.g[0], r.g[1], r.g[2]});
    }
    MESSAGE("recurrent layers vs PyTorch: worst error " << worst << " of a tensor's norm");
    /* the check catches a planted bug: two gates swapped */
    for (const char *c : {"lstm", "gru", "gru_v1"}) {
        rnnref::CaseResult r = rnnref::run_case(path, c, true);
        INFO(c << " with gates swapped: y " << r.y << ", dx " << r.dx);
        CHECK(r.y > 100 * RNN_REF_TOL);
        CHECK(r.dx > 100 * RNN_REF_TOL);
    }
}

TEST_CASE("LSTM: Keras' weight layout, parameter counts, unit_forget_bias, summary rows") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 3);
    REQUIRE(nnl_add(m, "LSTM(200, return_sequences=True, input_shape=(30, 200))") == NNL_OK);
    REQUIRE(nnl_add(m, "GRU(8)") == NNL_OK);
    REQUIRE(nnl_add(m, "SimpleRNN(5, input_shape=None)") != NNL_OK); /* a (8,) input has no time axis */
    CHECK(std::string(nnl_last_error()).find("rank 2") != std::string::npos);
    const nnl::Layer &l = *m->layers[0];
    CHECK(l.param_count() == 320800); /* 4 (F u + u u + u), as Keras' summary */
    CHECK(l.weights[0].shape == nnl::Shape{200, 800});
    CHECK(l.weights[1].shape == nnl::Shape{200, 800});
    CHECK(l.weights[2].shape == nnl::Shape{800});
    const nnl::Layer &gl = *m->layers[1];
    CHECK(gl.param_count() == 3 * (200 * 8 + 8 * 8 + 2 * 8)); /* GRU reset_after: bias (2, 3u) */
    CHECK(gl.weights[2].shape == nnl::Shape{2, 24});
    /* bias: zeros but the forget gate's ones */
    const float *b = l.weights[2].w;
    for (int j = 0; j < 800; j++) CHECK(b[j] == (j >= 200 && j < 400 ? 1.f : 0.f));
    /* recurrent_kernel orthogonal: (200, 800) has orthonormal rows */
    const float *U = l.weights[1].w;
    double worst = 0;
    for (int i = 0; i < 200; i += 37)
        for (int k = 0; k < 200; k += 41) {
            double d = 0;
            for (int j = 0; j < 800; j++) d += (double)U[i * 800 + j] * U[k * 800 + j];
            worst = std::max(worst, std::fabs(d - (i == k ? 1.0 : 0.0)));
        }
    CHECK(worst < 1e-5);
    char buf[4096];
    REQUIRE(nnl_summary_string(m, buf, sizeof buf) > 0);
    std::string s = buf;
    CHECK(s.find("lstm (LSTM)") != std::string::npos);
    CHECK(s.find("(None, 30, 200)") != std::string::npos);
    CHECK(s.find("320,800") != std::string::npos);
    CHECK(s.find("gru (GRU)") != std::string::npos);
    CHECK(s.find("(None, 8)") != std::string::npos);
    nnl_model *m2 = nnl_model_create();
    REQUIRE(nnl_add(m2, "SimpleRNN(7, input_shape=(3, 5))") == NNL_OK);
    CHECK(m2->layers[0]->param_count() == 5 * 7 + 7 * 7 + 7);
    REQUIRE(nnl_add(m2, "Dense(2)") == NNL_OK);
    REQUIRE(nnl_add(m2, "GRU(2)") != NNL_OK);
    nnl_model_free(m2);
    /* unit_forget_bias=False: zeros throughout; refusals name the layer and option */
    nnl_model *m3 = nnl_model_create();
    REQUIRE(nnl_add(m3, "LSTM(4, unit_forget_bias=False, input_shape=(3, 2))") == NNL_OK);
    for (int j = 0; j < 16; j++) CHECK(m3->layers[0]->weights[2].w[j] == 0.f);
    CHECK(nnl_add(m3, "LSTM(4, dropout=1.0)") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("dropout") != std::string::npos);
    CHECK(nnl_add(m3, "GRU(4, recurrent_dropout=-0.1)") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("recurrent_dropout") != std::string::npos);
    CHECK(nnl_add(m3, "GRU(4, return_state=True)") == NNL_ERR_UNSUPPORTED);
    CHECK(nnl_add(m3, "LSTM(4, activation='softmax')") == NNL_ERR_UNSUPPORTED);
    nnl_model_free(m3);
    nnl_model_free(m);
}

TEST_CASE("recurrent layers: Keras JSON round trip (tf.keras 2.x keys) and Keras 3 keys read") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 5);
    REQUIRE(nnl_add(m, "LSTM(6, return_sequences=True, go_backwards=True, input_shape=(7, 3))") == NNL_OK);
    REQUIRE(nnl_add(m, "GRU(5, reset_after=False, return_sequences=True)") == NNL_OK);
    REQUIRE(nnl_add(m, "SimpleRNN(4, activation='relu')") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2)") == NNL_OK);
    std::vector<char> j(1 << 16);
    REQUIRE(nnl_model_to_json(m, j.data(), j.size()) > 0);
    std::string js = j.data();
    for (const char *k : {"\"class_name\": \"LSTM\"", "\"recurrent_activation\": \"sigmoid\"",
                          "\"unit_forget_bias\": true", "\"go_backwards\": true", "\"reset_after\": false",
                          "\"implementation\": 2", "\"class_name\": \"Orthogonal\"", "\"return_state\": false",
                          "\"class_name\": \"SimpleRNN\"", "\"recurrent_regularizer\": null"})
        CHECK_MESSAGE(js.find(k) != std::string::npos, k);
    nnl_model *back = nullptr;
    REQUIRE(nnl_model_from_json(js.c_str(), &back) == NNL_OK);
    std::vector<char> j2(1 << 16);
    REQUIRE(nnl_model_to_json(back, j2.data(), j2.size()) > 0);
    CHECK(std::string(j2.data()) == js);
    CHECK(nnl_param_count(back) == nnl_param_count(m));
    /* a Keras 3 layer config: seed, use_cudnn, zero_output_for_mask, batch_shape in build_config */
    const char *k3 =
        R"({"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "trainable": true, "dtype": "float32", "layers": [)"
        R"({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 30, 200], "dtype": "float32", "sparse": false, "name": "input_layer"}, "registered_name": null}, )"
        R"({"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "trainable": true, "dtype": "float32", "return_sequences": true, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 200, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )"
        R"("kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, )"
        R"("unit_forget_bias": true, "kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "seed": null}, "registered_name": null, "build_config": {"input_shape": [null, 30, 200]}}, )"
        R"({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "trainable": true, "dtype": "float32", "return_sequences": false, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 10, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "reset_after": true, "use_cudnn": "auto", "seed": null}, "registered_name": null, "build_config": {"input_shape": [null, 30, 200]}}]}, "keras_version": "3.3.3", "backend": "tensorflow"})";
    nnl_model *m3 = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k3, &m3) == NNL_OK, nnl_last_error());
    CHECK(nnl_param_count(m3) == 320800 + 3 * (200 * 10 + 10 * 10 + 2 * 10));
    CHECK(m3->layers[0]->out == nnl::Shape{30, 200});
    nnl_model_free(m3);
    nnl_model_free(back);
    nnl_model_free(m);
}

namespace rnnref {
/* a model of one recurrent layer on (T, 3) inputs, weights from seed 21 */
static nnl_model *one_layer(const std::string &spec, int T) {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 21);
    std::string s = spec.substr(0, spec.size() - 1) + ", input_shape=(" + std::to_string(T) + ", 3))";
    REQUIRE_MESSAGE(nnl_add(m, s.c_str()) == NNL_OK, nnl_last_error());
    return m;
}
} // namespace rnnref

TEST_CASE("stateful: two batches of 5 steps equal one sequence of 10; reset_states; fixed batch size") {
    for (const char *spec : {"SimpleRNN(4, stateful=True, return_sequences=True)",
                             "LSTM(4, stateful=True, return_sequences=True)",
                             "GRU(4, stateful=True, return_sequences=True)",
                             "GRU(4, stateful=True, reset_after=False, return_sequences=True)"}) {
        CAPTURE(spec);
        std::string plain = spec;
        plain.replace(plain.find("stateful=True"), 13, "stateful=False");
        nnl_model *st = rnnref::one_layer(spec, 5);
        nnl_model *whole = rnnref::one_layer(plain, 10);
        REQUIRE(whole->W.size() == st->W.size());
        std::copy(st->W.begin(), st->W.end(), whole->W.begin());
        CHECK(st->layers[0]->states.size() == (std::string(spec).rfind("LSTM", 0) == 0 ? 2u : 1u));
        const int B = 2;
        auto x = random_vec((size_t)(B * 10 * 3), 31);
        std::vector<float> x1(B * 5 * 3), x2(B * 5 * 3), yw(B * 10 * 4), y1(B * 5 * 4), y2(B * 5 * 4);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < 5; t++)
                for (int f = 0; f < 3; f++) {
                    x1[(size_t)((b * 5 + t) * 3 + f)] = x[(size_t)((b * 10 + t) * 3 + f)];
                    x2[(size_t)((b * 5 + t) * 3 + f)] = x[(size_t)((b * 10 + 5 + t) * 3 + f)];
                }
        int64_t xs10[3] = {B, 10, 3}, xs5[3] = {B, 5, 3};
        REQUIRE(nnl_predict(whole, x.data(), 3, xs10, B, yw.data(), (int64_t)yw.size()) == NNL_OK);
        REQUIRE(nnl_predict(st, x1.data(), 3, xs5, B, y1.data(), (int64_t)y1.size()) == NNL_OK);
        REQUIRE(nnl_predict(st, x2.data(), 3, xs5, B, y2.data(), (int64_t)y2.size()) == NNL_OK);
        double worst = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < 5; t++)
                for (int u = 0; u < 4; u++) {
                    worst = std::max(worst, (double)std::fabs(y1[(size_t)((b * 5 + t) * 4 + u)] -
                                                              yw[(size_t)((b * 10 + t) * 4 + u)]));
                    worst = std::max(worst, (double)std::fabs(y2[(size_t)((b * 5 + t) * 4 + u)] -
                                                              yw[(size_t)((b * 10 + 5 + t) * 4 + u)]));
                }
        CHECK(worst < 1e-6); /* the same arithmetic, step by step: equal up to GEMM blocking */
        /* reset: the next batch starts from zeros again, as the first did */
        REQUIRE(nnl_reset_states(st) == NNL_OK);
        std::vector<float> y3(y1.size());
        REQUIRE(nnl_predict(st, x1.data(), 3, xs5, B, y3.data(), (int64_t)y3.size()) == NNL_OK);
        CHECK(y3 == y1);
        /* another batch size, or a final partial batch, is refused naming the layer */
        std::vector<float> big(4 * 5 * 3, 0.1f), yb(4 * 5 * 4);
        int64_t xs4[3] = {4, 5, 3}, xs3[3] = {3, 5, 3};
        CHECK(nnl_predict(st, big.data(), 3, xs4, 4, yb.data(), (int64_t)yb.size()) == NNL_ERR_SHAPE);
        CHECK(std::string(nnl_last_error()).find("batches of 2") != std::string::npos);
        CHECK(nnl_predict(st, big.data(), 3, xs3, 2, yb.data(), (int64_t)yb.size()) == NNL_ERR_SHAPE);
        CHECK(std::string(nnl_last_error()).find("multiple of the batch size") != std::string::npos);
        CHECK(nnl_predict(st, big.data(), 3, xs4, 2, yb.data(), (int64_t)yb.size()) == NNL_OK);
        std::vector<float> one(5 * 3, 0.1f);
        nnl::Ctx c;
        /* the layer itself refuses a batch that is not its slots' size */
        CHECK_THROWS_AS(st->layers[0]->forward(one.data(), yb.data(), 1, c), nnl::Error);
        nnl_model_free(st);
        nnl_model_free(whole);
    }
}

TEST_CASE("gradient check through time: stateful carry over two batches") {
    /* the second batch starts from the first one's last states, held fixed
       (Keras' truncated backpropagation): finite differences of
       L = sum(r * y2) with the states restored before every evaluation */
    for (const char *spec : {"LSTM(3, stateful=True, return_sequences=True)", "GRU(3, stateful=True)",
                             "SimpleRNN(3, stateful=True, go_backwards=True)"}) {
        CAPTURE(spec);
        nnl_model *m = rnnref::one_layer(spec, 4);
        nnl::Layer &L = *m->layers[0];
        const int B = 2;
        m->ensure_batch(B);
        for (auto &w : L.weights) {
            auto v = random_vec((size_t)w.shape.size(), 17);
            std::copy(v.begin(), v.end(), w.w);
        }
        auto x1 = random_vec((size_t)(B * 12), 3, -1.5f, 1.5f), x = random_vec((size_t)(B * 12), 4, -1.5f, 1.5f);
        std::vector<float> y((size_t)(B * L.out.size())), dx(x.size());
        auto r = random_vec(y.size(), 5);
        nnl::Ctx c;
        c.training = true;
        L.forward(x1.data(), y.data(), B, c); /* batch 1 leaves its states */
        std::vector<float> carried = m->S;
        bool nonzero = false;
        for (float v : carried) nonzero = nonzero || v != 0.f;
        CHECK(nonzero);
        auto objective = [&]() {
            m->S = carried;
            m->relayout_states(m->state_slots); /* re-point after the copy */
            L.forward(x.data(), y.data(), B, c);
            double s = 0;
            for (size_t i = 0; i < y.size(); i++) s += (double)r[i] * y[i];
            return s;
        };
        objective();
        auto r1 = r;
        L.backward(x.data(), y.data(), r1.data(), dx.data(), B, c);
        std::vector<double> an(dx.begin(), dx.end()), nu;
        for (size_t i = 0; i < x.size(); i++) {
            float keep = x[i];
            x[i] = keep + FD_EPS;
            double p = objective();
            x[i] = keep - FD_EPS;
            double q = objective();
            x[i] = keep;
            nu.push_back((p - q) / (2 * FD_EPS));
        }
        check_close(an, nu, "dx");
        for (auto &w : L.weights) {
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
        /* and the carry matters: from zero states the output differs */
        std::fill(m->S.begin(), m->S.end(), 0.f);
        std::vector<float> y0(y.size()), yc(y.size());
        L.forward(x.data(), y0.data(), B, c);
        objective();
        yc = y;
        CHECK(y0 != yc);
        nnl_model_free(m);
    }
}

TEST_CASE("stateful LSTM: fit carries states, reset_states option, model files keep h and c") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 4);
    REQUIRE(nnl_add(m, "LSTM(5, stateful=True, return_sequences=True, input_shape=(6, 2))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.01)", "mse", "") == NNL_OK);
    auto x = random_vec(8 * 6 * 2, 7), y = random_vec(8 * 6, 8);
    int64_t xs[3] = {8, 6, 2}, ys[3] = {8, 6, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    CHECK(o.reset_states == 0);
    o.batch_size = 4;
    o.epochs = 2;
    o.shuffle = 0;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 3, ys, &o) == NNL_OK, nnl_last_error());
    CHECK(m->state_slots == 4);
    std::vector<float> s_after = m->S;
    CHECK(s_after.size() == 2 * 4 * 5);
    bool nonzero = false;
    for (float v : s_after) nonzero = nonzero || v != 0.f;
    CHECK(nonzero);
    /* batch 6 of 8 samples does not split */
    o.batch_size = 3;
    CHECK(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 3, ys, &o) == NNL_ERR_SHAPE);
    CHECK(std::string(nnl_last_error()).find("multiple of the batch size") != std::string::npos);
    o.batch_size = 8; /* splits, but the states are kept for 4 */
    CHECK(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 3, ys, &o) == NNL_ERR_SHAPE);
    CHECK(std::string(nnl_last_error()).find("batches of 4") != std::string::npos);
    /* a model file keeps the states as state/lstm/h and state/lstm/c */
    char dir[] = "/tmp/nnlite_rnn_XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string f = std::string(dir) + "/m.nnl";
    REQUIRE(nnl_save_model(m, f.c_str()) == NNL_OK);
    std::set<std::string> names;
    for (auto &t : nnl::files::read_nnl(f.c_str()).tensors) names.insert(t.name);
    CHECK(names.count("state/lstm/h"));
    CHECK(names.count("state/lstm/c"));
    nnl_model *back = nullptr;
    REQUIRE(nnl_load_model(f.c_str(), &back) == NNL_OK);
    CHECK(back->S == m->S);
    /* reset_states in fit: each epoch starts from zeros, so two runs of one
       epoch from the same weights agree whatever the states were */
    o.batch_size = 4;
    o.epochs = 1;
    o.reset_states = 1;
    nnl::LineVector w0 = back->W;
    REQUIRE(nnl_fit(back, x.data(), 3, xs, y.data(), NNL_FLOAT32, 3, ys, &o) == NNL_OK);
    nnl::LineVector w1 = back->W;
    nnl_model *fresh = nullptr;
    REQUIRE(nnl_load_model(f.c_str(), &fresh) == NNL_OK);
    REQUIRE(nnl_reset_states(fresh) == NNL_OK);
    for (float v : fresh->S) CHECK(v == 0.f);
    o.reset_states = 0; /* zeros already: the same run */
    REQUIRE(nnl_fit(fresh, x.data(), 3, xs, y.data(), NNL_FLOAT32, 3, ys, &o) == NNL_OK);
    CHECK(fresh->W == w1);
    CHECK(w1 != w0);
    nnl_model_free(fresh);
    nnl_model_free(back);
    nnl_model_free(m);
    std::string rm = std::string("rm -rf ") + dir;
    CHECK(system(rm.c_str()) == 0);
}

TEST_CASE("SimpleRNN, LSTM, GRU (dropout and recurrent_dropout too) and Bidirectional have a GPU path: "
          "nnl_set_device's list says so") {
    for (const char *k : {"SimpleRNN", "LSTM", "GRU", "Bidirectional"}) {
        auto &kind = nnl::layer_registry().at(k);
        nnl::Spec sp = nnl::parse_spec(kind.example);
        nnl::Args a(sp, k);
        CHECK(kind.make(a)->gpu_path());
        CHECK(nnl::gpu_layer_names().find(k) != std::string::npos);
    }
    for (const char *k : {"SimpleRNN", "LSTM", "GRU"}) {
        auto &kind = nnl::layer_registry().at(k);
        std::string base = std::string(k) + "(3, ";
        for (std::string opt : {"dropout=0.2)", "recurrent_dropout=0.2)", "dropout=0.1, recurrent_dropout=0.3)"}) {
            std::string spec = base + opt;
            nnl::Spec d = nnl::parse_spec(spec.c_str());
            nnl::Args da(d, k);
            CAPTURE(spec);
            CHECK(kind.make(da)->gpu_path());
        }
    }
    for (const char *spec : {"Bidirectional(GRU(3, reset_after=False, dropout=0.2), merge_mode='mul')",
                             "Bidirectional(LSTM(3, recurrent_dropout=0.2, return_sequences=True))",
                             "Bidirectional(SimpleRNN(3), merge_mode='ave')"}) {
        CAPTURE(spec);
        nnl::Spec bs = nnl::parse_spec(spec);
        nnl::Args ba(bs, "Bidirectional");
        CHECK(nnl::layer_registry().at("Bidirectional").make(ba)->gpu_path());
    }
    nnl::Spec gs = nnl::parse_spec("GRU(3, reset_after=False)");
    nnl::Args ga(gs, "GRU");
    CHECK(nnl::layer_registry().at("GRU").make(ga)->gpu_path());
}

namespace rnn_tests {
/* a layer whose loops run on the host (Layer::gpu_path false, the
   default): what nnl_set_device still refuses by name */
class HostLoop : public nnl::Layer {
public:
    explicit HostLoop(nnl::Args &) { cls = "HostLoop"; }
    void build(const nnl::Shape &input) override { in = out = input; }
    void config(nnl::Json &) const override {}
    Size size_bound(const nnl::Shape &s) const override { return {(double)s.size(), 0}; }
    void forward(const float *x, float *y, int64_t B, const nnl::Ctx &) override {
        memcpy(y, x, (size_t)(B * in.size()) * sizeof(float));
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const nnl::Ctx &) override {
        if (dx) memcpy(dx, dy, (size_t)(B * in.size()) * sizeof(float));
    }
};
} // namespace rnn_tests

TEST_CASE("nnl_set_device's layer check (the CUDA build's, run before any device is sought) passes every built-in "
          "layer (Bidirectional, recurrent dropout included) and names a layer without a GPU path") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Embedding(20, 4, input_length=6)") == NNL_OK);
    REQUIRE(nnl_add(m, "LSTM(5, return_sequences=True, dropout=0.1, recurrent_dropout=0.2)") == NNL_OK);
    REQUIRE(nnl_add(m, "Bidirectional(GRU(2))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(3)") == NNL_OK);
    CHECK(nnl::gpu_missing_layers(*m).empty());
    CHECK(nnl::guard([&] { nnl::gpu_check_layers(*m); }) == NNL_OK);
    /* a layer of the tests' own with host loops: refused by name,
       NNL_ERR_UNSUPPORTED, the check nnl::set_device (CUDA build) runs
       first and each GPU fit runs again */
    nnl::register_layer("HostLoop", {nnl::make_layer<rnn_tests::HostLoop>, "HostLoop(input_shape=(3,))"});
    nnl_model *h = nnl_model_create();
    REQUIRE(nnl_add(h, "Dense(3, input_shape=(4,))") == NNL_OK);
    REQUIRE(nnl_add(h, "HostLoop()") == NNL_OK);
    REQUIRE(nnl_add(h, "Dense(2)") == NNL_OK);
    CHECK(nnl::gpu_missing_layers(*h) == "layer 'host_loop' (HostLoop)");
    CHECK(nnl::guard([&] { nnl::gpu_check_layers(*h); }) == NNL_ERR_UNSUPPORTED);
    std::string e = nnl_last_error();
    CHECK(e.find("layer 'host_loop' (HostLoop) has no GPU path yet") != std::string::npos);
    CHECK(e.find("GPU layers: Activation") != std::string::npos); /* and says which layers have one */
    for (const char *k : {"Embedding", "Masking", "Bidirectional", "LSTM", "GRU", "SimpleRNN"})
        CHECK(e.find(k) != std::string::npos); /* in that list, since the GPU issue */
    for (const char *spec : {"SimpleRNN(3, dropout=0.1, input_shape=(4, 2))", "GRU(3, recurrent_dropout=0.1, input_shape=(4, 2))",
                             "LSTM(3, dropout=0.1, input_shape=(4, 2))",
                             "Bidirectional(LSTM(3, dropout=0.1, return_sequences=True), input_shape=(4, 2))"}) {
        CAPTURE(spec);
        nnl_model *r = nnl_model_create();
        REQUIRE(nnl_add(r, spec) == NNL_OK);
        REQUIRE(nnl_add(r, "Dense(2)") == NNL_OK);
        CHECK(nnl::gpu_missing_layers(*r).empty());
        CHECK(nnl::guard([&] { nnl::gpu_check_layers(*r); }) == NNL_OK);
        nnl_model_free(r);
    }
    /* Embedding (ids, mask_zero) and Masking have a GPU path */
    for (std::vector<const char *> specs :
         {std::vector<const char *>{"Embedding(20, 4, input_length=6)", "GlobalAveragePooling1D()", "Dense(3)"},
          std::vector<const char *>{"Embedding(20, 4, mask_zero=True, input_length=6)", "Dense(3)"},
          std::vector<const char *>{"Masking(input_shape=(6, 3))", "Dense(3)"},
          std::vector<const char *>{"Embedding(20, 4, mask_zero=True, input_length=6)", "LSTM(5)", "Dense(3)"},
          std::vector<const char *>{"Masking(input_shape=(6, 3))",
                                    "LSTM(5, activation='relu', recurrent_activation='hard_sigmoid', "
                                    "return_sequences=True, go_backwards=True)",
                                    "Dense(3)"},
          std::vector<const char *>{"Embedding(20, 4, input_length=6)", "GRU(5, reset_after=False)", "Dense(3)"},
          std::vector<const char *>{"Masking(input_shape=(6, 3))", "SimpleRNN(5, stateful=False)", "Dense(3)"},
          std::vector<const char *>{"Masking(input_shape=(6, 3))", "Bidirectional(LSTM(5, return_sequences=True))",
                                    "Dense(3)"}}) {
        nnl_model *q = nnl_model_create();
        for (const char *s : specs) REQUIRE(nnl_add(q, s) == NNL_OK);
        CAPTURE(specs[0]);
        CHECK(nnl::gpu_missing_layers(*q).empty());
        CHECK(nnl::guard([&] { nnl::gpu_check_layers(*q); }) == NNL_OK);
        nnl_model_free(q);
    }
    /* through the ABI, in this build: NNL_ERR_UNSUPPORTED naming the layer
       without a GPU path (the CPU-only build says CUDA is not built, and
       names it too), no other */
    CHECK(nnl_set_device(h, "cuda") == NNL_ERR_UNSUPPORTED);
    e = nnl_last_error();
    CHECK(e.rfind("nnl_set_device: ", 0) == 0);
    CHECK(e.find("'host_loop' (HostLoop)") != std::string::npos);
    CHECK(e.find("'dense' (Dense)") == std::string::npos);
    CHECK(std::string(nnl_get_device(h)) == "cpu");
    CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED); /* no layer named: no CUDA here */
    e = nnl_last_error();
    CHECK(e.find("'bidirectional' (Bidirectional)") == std::string::npos);
    CHECK(e.find("'lstm' (LSTM)") == std::string::npos);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    nnl_model_free(h);
    nnl_model_free(m);
}

/* The kernel-table entries that carry recurrent dropout and Bidirectional
   (issue 15) against the code they replaced, bit for bit: dropout_mask is
   dropout_forward's mask (Recurrent::draw_mask's former loop was that
   hash); mul_rows the per-row K().mul calls and the inline += loops;
   bidir_merge / bidir_split the former flip in place of the backward
   copy's sequence followed by the merge loops; add the former dx loop. */
namespace rnn_tests {
static std::vector<float> rnd(size_t n, uint64_t seed) {
    nnl::Rng r(seed);
    std::vector<float> v(n);
    for (auto &x : v) x = (float)r.uniform() * 2.f - 1.f;
    return v;
}
static bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
} // namespace rnn_tests

TEST_CASE("recurrent dropout and Bidirectional kernel entries equal the loops they replaced, bit for bit") {
    const nnl::Kernels &k = nnl::cpu_kernels;
    using rnn_tests::rnd;
    using rnn_tests::same_bits;
    for (float rate : {0.f, 0.2f, 0.5f, 0.95f})
        for (uint64_t seed : {0ull, 0x9e3779b97f4a7c15ull}) {
            CAPTURE(rate);
            const int64_t n = 1037;
            std::vector<float> ones((size_t)n, 1.f), y((size_t)n), want((size_t)n), got((size_t)n, NAN);
            /* dropout_forward keys its hash with mix64(step ^ salt) */
            const uint64_t salt = 0x5a5aull;
            k.dropout_forward(ones.data(), y.data(), want.data(), n, rate, seed, salt);
            k.dropout_mask(got.data(), n, rate, nnl::mix64(seed ^ salt));
            CHECK(same_bits(got, want));
            size_t zeros = 0;
            for (float v : got) zeros += v == 0.f;
            CHECK(std::fabs((double)zeros / (double)n - rate) < 0.05);
        }
    {
        const int64_t B = 5, T = 7, F = 6, u = 4;
        /* a sample's mask on its T rows (the inputs' dropout), in place too */
        auto x = rnd((size_t)(B * T * F), 1), mx = rnd((size_t)(B * F), 2);
        std::vector<float> want((size_t)(B * T * F)), got(want.size(), NAN);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) k.mul(x.data() + (b * T + t) * F, mx.data() + b * F, want.data() + (b * T + t) * F, F);
        k.mul_rows(x.data(), F, mx.data(), F, T, got.data(), F, B * T, F, false);
        CHECK(same_bits(got, want));
        std::vector<float> inplace = x;
        k.mul_rows(inplace.data(), F, mx.data(), F, T, inplace.data(), F, B * T, F, false);
        CHECK(same_bits(inplace, want));
        /* step t's rows of H (stride T u) masked into HD's rows */
        auto H = rnd((size_t)(B * T * u), 3), mh = rnd((size_t)(B * u), 4);
        for (int64_t t : {0, 3, 6}) {
            auto HDw = rnd((size_t)(B * T * u), 5), HDg = HDw;
            for (int64_t b = 0; b < B; b++)
                k.mul(H.data() + t * u + b * T * u, mh.data() + b * u, HDw.data() + (b * T + t) * u, u);
            k.mul_rows(H.data() + t * u, T * u, mh.data(), u, 1, HDg.data() + t * u, T * u, B, u, false);
            CHECK(same_bits(HDg, HDw));
        }
        /* GRU's dh_{s-1} += d(masked h) * mask */
        auto tmp = rnd((size_t)(B * u), 6), dnw = rnd((size_t)(B * u), 7), dng = dnw;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < u; j++) dnw[b * u + j] += tmp[b * u + j] * mh[b * u + j];
        k.mul_rows(tmp.data(), u, mh.data(), u, 1, dng.data(), u, B, u, true);
        CHECK(same_bits(dng, dnw));
        /* add */
        auto a = rnd(101, 8), c = rnd(101, 9);
        std::vector<float> sw = a, sg(101, NAN);
        for (size_t i = 0; i < sw.size(); i++) sw[i] += c[i];
        k.add(a.data(), c.data(), sg.data(), 101);
        CHECK(same_bits(sg, sw));
        k.add(a.data(), c.data(), a.data(), 101); /* in place, as Bidirectional's dx */
        CHECK(same_bits(a, sw));
    }
    for (int mode = 0; mode < 4; mode++)
        for (int64_t T : {1, 4, 5}) { /* T = 1: the last outputs (no sequence), no reversal */
            CAPTURE(mode);
            CAPTURE(T);
            const int64_t B = 3, u = 7, rows = B * T, w = mode == 0 ? 2 * u : u;
            auto f = rnd((size_t)(rows * u), 10 + T), b = rnd((size_t)(rows * u), 20 + T);
            /* the former forward: b flipped in place, then merged row by row */
            std::vector<float> bf = b;
            for (int64_t s = 0; s < B; s++)
                for (int64_t t = 0; t < T / 2; t++)
                    std::swap_ranges(bf.data() + (s * T + t) * u, bf.data() + (s * T + t + 1) * u,
                                     bf.data() + (s * T + T - 1 - t) * u);
            std::vector<float> yw((size_t)(rows * w)), yg(yw.size(), NAN);
            for (int64_t r = 0; r < rows; r++) {
                const float *fr = f.data() + r * u, *br = bf.data() + r * u;
                if (mode == 0) {
                    memcpy(yw.data() + r * 2 * u, fr, (size_t)u * sizeof(float));
                    memcpy(yw.data() + r * 2 * u + u, br, (size_t)u * sizeof(float));
                    continue;
                }
                for (int64_t j = 0; j < u; j++)
                    yw[(size_t)(r * u + j)] = mode == 1 ? fr[j] + br[j] : mode == 2 ? fr[j] * br[j] : (fr[j] + br[j]) / 2;
            }
            k.bidir_merge(mode, f.data(), b.data(), yg.data(), B, T, u);
            CHECK(same_bits(yg, yw));
            /* the former backward: split into merged order, then the backward copy's flipped back */
            auto dy = rnd((size_t)(rows * w), 30 + T);
            std::vector<float> dfw((size_t)(rows * u)), dbw(dfw.size()), dfg(dfw.size(), NAN), dbg(dfw.size(), NAN);
            for (int64_t r = 0; r < rows; r++) {
                float *df = dfw.data() + r * u, *db = dbw.data() + r * u;
                const float *fr = f.data() + r * u, *br = bf.data() + r * u;
                if (mode == 0) {
                    memcpy(df, dy.data() + r * 2 * u, (size_t)u * sizeof(float));
                    memcpy(db, dy.data() + r * 2 * u + u, (size_t)u * sizeof(float));
                    continue;
                }
                const float *d = dy.data() + r * u;
                for (int64_t j = 0; j < u; j++) {
                    df[j] = mode == 1 ? d[j] : mode == 2 ? d[j] * br[j] : d[j] / 2;
                    db[j] = mode == 1 ? d[j] : mode == 2 ? d[j] * fr[j] : d[j] / 2;
                }
            }
            for (int64_t s = 0; s < B; s++)
                for (int64_t t = 0; t < T / 2; t++)
                    std::swap_ranges(dbw.data() + (s * T + t) * u, dbw.data() + (s * T + t + 1) * u,
                                     dbw.data() + (s * T + T - 1 - t) * u);
            k.bidir_split(mode, dy.data(), f.data(), b.data(), dfg.data(), dbg.data(), B, T, u);
            CHECK(same_bits(dfg, dfw));
            CHECK(same_bits(dbg, dbw));
        }
}

TEST_CASE("stateful models write their batch size in batch_input_shape, and read it back, as Keras") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 8);
    REQUIRE(nnl_add(m, "GRU(3, stateful=True, input_shape=(4, 2))") == NNL_OK);
    std::vector<char> j(1 << 14);
    REQUIRE(nnl_model_to_json(m, j.data(), j.size()) > 0);
    CHECK(std::string(j.data()).find("\"batch_input_shape\": [null, 4, 2]") != std::string::npos); /* not yet known */
    std::vector<float> x(6 * 8, 0.2f), p(6 * 3);
    int64_t xs[3] = {6, 4, 2};
    REQUIRE(nnl_predict(m, x.data(), 3, xs, 3, p.data(), (int64_t)p.size()) == NNL_OK);
    REQUIRE(nnl_model_to_json(m, j.data(), j.size()) > 0);
    std::string js = j.data();
    CHECK(js.find("\"batch_input_shape\": [3, 4, 2]") != std::string::npos);
    CHECK(js.find("\"stateful\": true") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE(nnl_model_from_json(js.c_str(), &back) == NNL_OK);
    CHECK(back->state_slots == 3);
    CHECK(nnl_predict(back, x.data(), 3, xs, 2, p.data(), (int64_t)p.size()) == NNL_ERR_SHAPE); /* batches of 3 only */
    CHECK(nnl_predict(back, x.data(), 3, xs, 3, p.data(), (int64_t)p.size()) == NNL_OK);
    nnl_model_free(back);
    nnl_model_free(m);
}

/* ---- dropout and recurrent_dropout (Keras' cells: training only, one mask
   per sample for the inputs and one for h_{s-1}, both fixed over time) ---- */

TEST_CASE("recurrent dropout: gradient check through time with the training masks") {
    /* gradcheck_layer's training context has a fixed seed: every forward of
       the check draws the same masks, so the finite differences see the
       masked function whose gradient backward computes */
    const char *specs[] = {
        "SimpleRNN(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True)",
        "SimpleRNN(3, recurrent_dropout=0.5, go_backwards=True)",
        "LSTM(4, dropout=0.3, recurrent_dropout=0.4)",
        "LSTM(4, dropout=0.5, return_sequences=True)",
        "LSTM(3, recurrent_dropout=0.5, go_backwards=True, return_sequences=True)",
        "GRU(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True)",
        "GRU(3, recurrent_dropout=0.5, go_backwards=True)",
        "GRU(4, reset_after=False, dropout=0.3, recurrent_dropout=0.4, return_sequences=True)",
        "GRU(3, reset_after=False, recurrent_dropout=0.5)",
    };
    for (const char *s : specs) gradcheck_layer(s, nnl::Shape{5, 3}, true);
    /* the masks of those checks really drop something (seed 42, B = 3) */
    nnl_model m;
    m.seed = 1234;
    m.rng.reseed(m.seed);
    m.seeded = true;
    m.add("Input(shape=(5, 3))");
    m.add("LSTM(4, dropout=0.3, recurrent_dropout=0.4)");
    auto &L = static_cast<nnl::Recurrent &>(*m.layers[0]);
    m.ensure_batch(3);
    auto x = random_vec(3 * 15, 11);
    std::vector<float> y(3 * 4);
    nnl::Ctx c;
    c.training = true;
    c.seed = 42;
    L.forward(x.data(), y.data(), 3, c);
    int zx = 0, zh = 0;
    for (int64_t i = 0; i < 3 * 3; i++) zx += L.MX(3)[i] == 0.f;
    for (int64_t i = 0; i < 3 * 4; i++) zh += L.MH(3)[i] == 0.f;
    CHECK(zx > 0);
    CHECK(zx < 9);
    CHECK(zh > 0);
    CHECK(zh < 12);
}

TEST_CASE("recurrent dropout: one mask per sample, the same at every step (inputs and h_{s-1})") {
    const int64_t B = 16, T = 6, u = 4;
    nnl::Ctx c;
    c.training = true;
    c.seed = 9;
    auto setup = [&](nnl_model &m, const char *spec, bool rec_identity) -> nnl::Layer & {
        m.seed = 3;
        m.rng.reseed(3);
        m.seeded = true;
        m.add("Input(shape=(6, 4))");
        m.add(spec);
        nnl::Layer &L = *m.layers[0];
        m.ensure_batch(B);
        /* kernel = I, recurrent kernel = I or 0: y_s = x_s*mx + y_{s-1}*mh */
        for (int k = 0; k < 2; k++) std::fill(L.weights[(size_t)k].w, L.weights[(size_t)k].w + u * u, 0.f);
        for (int64_t j = 0; j < u; j++) {
            L.weights[0].w[j * u + j] = 1.f;
            if (rec_identity) L.weights[1].w[j * u + j] = 1.f;
        }
        return L;
    };
    SUBCASE("dropout: y_s = x_s * mask, with x = 1: the mask itself, at every step") {
        nnl_model m;
        nnl::Layer &L = setup(m, "SimpleRNN(4, activation='linear', use_bias=False, dropout=0.5, "
                                 "return_sequences=True)", false);
        std::vector<float> x((size_t)(B * T * u), 1.f), y((size_t)(B * T * u));
        L.forward(x.data(), y.data(), B, c);
        int zeros = 0, twos = 0, differ = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < u; j++) {
                float v0 = y[(size_t)((b * T) * u + j)];
                CHECK((v0 == 0.f || v0 == 2.f));
                zeros += v0 == 0.f;
                twos += v0 == 2.f;
                differ += v0 != y[(size_t)j]; /* samples draw their own masks */
                for (int64_t t = 1; t < T; t++) CHECK(y[(size_t)((b * T + t) * u + j)] == v0);
            }
        CHECK(zeros > 0);
        CHECK(twos > 0);
        CHECK(differ > 0);
        /* inference: no mask */
        nnl::Ctx inf;
        L.forward(x.data(), y.data(), B, inf);
        for (float v : y) CHECK(v == 1.f);
    }
    SUBCASE("recurrent_dropout: x = 1 at step 0 only, U = I: y_s = mask^s") {
        nnl_model m;
        nnl::Layer &L = setup(m, "SimpleRNN(4, activation='linear', use_bias=False, recurrent_dropout=0.5, "
                                 "return_sequences=True)", true);
        std::vector<float> x((size_t)(B * T * u), 0.f), y((size_t)(B * T * u));
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < u; j++) x[(size_t)(b * T * u + j)] = 1.f;
        L.forward(x.data(), y.data(), B, c);
        int zeros = 0, twos = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < u; j++) {
                CHECK(y[(size_t)(b * T * u + j)] == 1.f); /* h_{-1} = 0: step 0 is x alone */
                float m1 = y[(size_t)((b * T + 1) * u + j)];
                CHECK((m1 == 0.f || m1 == 2.f));
                zeros += m1 == 0.f;
                twos += m1 == 2.f;
                /* a mask drawn anew per step would zero some units later than step 1 */
                for (int64_t t = 2; t < T; t++) CHECK(y[(size_t)((b * T + t) * u + j)] == std::pow(m1, (float)t));
            }
        CHECK(zeros > 0);
        CHECK(twos > 0);
    }
}

TEST_CASE("recurrent dropout: inference equals the layer without dropout; fit is seeded and reproducible") {
    const char *with[] = {"LSTM(5, dropout=0.3, recurrent_dropout=0.3, return_sequences=True, input_shape=(6, 3))",
                          "GRU(4, dropout=0.2, recurrent_dropout=0.4, return_sequences=True)",
                          "SimpleRNN(3, dropout=0.25, recurrent_dropout=0.25)"};
    const char *without[] = {"LSTM(5, return_sequences=True, input_shape=(6, 3))", "GRU(4, return_sequences=True)",
                             "SimpleRNN(3)"};
    auto build = [](const char *const *specs, uint64_t seed) {
        nnl_model *m = nnl_model_create();
        nnl_model_set_seed(m, seed);
        for (int i = 0; i < 3; i++) REQUIRE_MESSAGE(nnl_add(m, specs[i]) == NNL_OK, std::string(nnl_last_error()));
        REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
        REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mse", "") == NNL_OK);
        return m;
    };
    auto x = random_vec(32 * 6 * 3, 21), y = random_vec(32, 22);
    int64_t xs[3] = {32, 6, 3}, ys[2] = {32, 1};
    nnl_model *a = build(with, 5), *b = build(without, 5);
    REQUIRE(a->W == b->W); /* the same weights: dropout draws nothing at build */
    std::vector<float> pa(32), pb(32);
    REQUIRE(nnl_predict(a, x.data(), 3, xs, 8, pa.data(), 32) == NNL_OK);
    REQUIRE(nnl_predict(b, x.data(), 3, xs, 8, pb.data(), 32) == NNL_OK);
    CHECK(pa == pb);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.batch_size = 8;
    o.epochs = 2;
    o.verbose = 0;
    REQUIRE(nnl_fit(a, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit(b, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(a->W != b->W); /* the masks act in training */
    nnl_model *a2 = build(with, 5);
    REQUIRE(nnl_fit(a2, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(a2->W == a->W); /* same model seed: the same masks, bit for bit */
    o.shuffle = 0;        /* explicit fit seeds from the same start: only the masks differ */
    o.seed = 77;
    nnl_model *s1 = build(with, 5), *s2 = build(with, 5), *s3 = build(with, 5);
    REQUIRE(nnl_fit(s1, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit(s2, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    o.seed = 78;
    REQUIRE(nnl_fit(s3, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(s1->W == s2->W);
    CHECK(s1->W != s3->W);
    for (nnl_model *p : {a, b, a2, s1, s2, s3}) nnl_model_free(p);
}

TEST_CASE("recurrent dropout: Keras JSON with dropout > 0 loads, keeps rate and seed, and round-trips") {
    const char *k3 =
        R"({"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "trainable": true, "dtype": "float32", "layers": [)"
        R"({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 10, 3], "dtype": "float32", "sparse": false, "name": "input_layer"}, "registered_name": null}, )"
        R"({"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "trainable": true, "dtype": "float32", "return_sequences": true, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 8, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )"
        R"("kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, )"
        R"("unit_forget_bias": true, "kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.25, "recurrent_dropout": 0.1, "seed": 7}, "registered_name": null, "build_config": {"input_shape": [null, 10, 3]}}, )"
        R"({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "trainable": true, "dtype": "float32", "return_sequences": false, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 4, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )"
        R"("kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, )"
        R"("kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.5, "recurrent_dropout": 0.0, "reset_after": true, "use_cudnn": "auto", "seed": null}, "registered_name": null, "build_config": {"input_shape": [null, 10, 8]}}]}, "keras_version": "3.3.3", "backend": "tensorflow"})";
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k3, &m) == NNL_OK, nnl_last_error());
    auto &l0 = static_cast<nnl::Recurrent &>(*m->layers[0]);
    auto &l1 = static_cast<nnl::Recurrent &>(*m->layers[1]);
    CHECK(l0.dropout == 0.25f);
    CHECK(l0.recurrent_dropout == 0.1f);
    CHECK(l0.seed == 7);
    CHECK(l1.dropout == 0.5f);
    CHECK(l1.recurrent_dropout == 0.f);
    std::vector<char> j(1 << 16);
    REQUIRE(nnl_model_to_json(m, j.data(), j.size()) > 0);
    std::string js = j.data();
    for (const char *k : {"\"dropout\": 0.25", "\"recurrent_dropout\": 0.1", "\"seed\": 7", "\"dropout\": 0.5"})
        CHECK_MESSAGE(js.find(k) != std::string::npos, k);
    nnl_model *back = nullptr;
    REQUIRE(nnl_model_from_json(js.c_str(), &back) == NNL_OK);
    std::vector<char> j2(1 << 16);
    REQUIRE(nnl_model_to_json(back, j2.data(), j2.size()) > 0);
    CHECK(std::string(j2.data()) == js);
    /* it trains (the masks sized from the JSON's shapes) */
    REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.01)", "mse", "") == NNL_OK);
    auto x = random_vec(12 * 10 * 3, 31), y = random_vec(12, 32);
    int64_t xs[3] = {12, 10, 3}, ys[2] = {12, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.batch_size = 4;
    o.epochs = 1;
    o.verbose = 0;
    CHECK_MESSAGE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, nnl_last_error());
    nnl_model_free(back);
    nnl_model_free(m);
}

TEST_CASE("stateful LSTMs (with and without recurrent dropout): a run saved after epoch k and resumed ends "
          "bit-for-bit equal") {
    nnl_set_threads(1);
    const int K = 2, N = 5;
    auto x = random_vec(16 * 5 * 2, 41), y = random_vec(16, 42);
    int64_t xs[3] = {16, 5, 2}, ys[2] = {16, 1};
    auto bits = [](const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; };
    auto same = [&](const auto &a, const auto &b) {
        return a.size() == b.size() && bits(a.data(), b.data(), a.size() * sizeof(float));
    };
    char dir[] = "/tmp/nnlite_rnn_resume_XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string ck = std::string(dir) + "/ck.nnl";
    for (bool drop : {false, true})
        for (uint64_t fit_seed : {(uint64_t)0, (uint64_t)99}) {
            CAPTURE(drop);
            CAPTURE(fit_seed);
            auto build = [&] {
                nnl_model *m = nnl_model_create();
                nnl_model_set_seed(m, 17);
                std::string l1 = std::string("LSTM(6, stateful=True, return_sequences=True, ") +
                                 (drop ? "dropout=0.2, recurrent_dropout=0.3, " : "") + "input_shape=(5, 2))";
                REQUIRE(nnl_add(m, l1.c_str()) == NNL_OK);
                REQUIRE(nnl_add(m, drop ? "LSTM(4, stateful=True, recurrent_dropout=0.25)" : "LSTM(4, stateful=True)") ==
                        NNL_OK);
                REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
                REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mse", "mae") == NNL_OK);
                return m;
            };
            auto fit = [&](nnl_model *m, int initial, int epochs) {
                nnl_fit_options o;
                nnl_fit_options_init(&o);
                o.batch_size = 4;
                o.epochs = epochs;
                o.initial_epoch = initial;
                o.shuffle = 0; /* stateful: rows continue from batch to batch */
                o.verbose = 0;
                o.seed = fit_seed;
                return nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o);
            };
            nnl_model *full = build();
            REQUIRE(fit(full, 0, N) == NNL_OK);
            nnl_model *part = build();
            REQUIRE(fit(part, 0, K) == NNL_OK);
            REQUIRE(nnl_save_model(part, ck.c_str()) == NNL_OK);
            nnl_model *resumed = nullptr;
            REQUIRE(nnl_load_model(ck.c_str(), &resumed) == NNL_OK);
            CHECK(same(resumed->S, part->S)); /* h and c of both layers came back */
            REQUIRE_MESSAGE(fit(resumed, K, N) == NNL_OK, std::string(nnl_last_error()));
            CHECK(same(full->W, resumed->W));
            CHECK(same(full->S, resumed->S)); /* the LSTMs' h and c */
            bool nonzero = false;
            for (float v : full->S) nonzero = nonzero || v != 0.f;
            CHECK(nonzero);
            REQUIRE(full->opt->slots.size() == resumed->opt->slots.size());
            for (size_t i = 0; i < full->opt->slots.size(); i++) CHECK(same(full->opt->slots[i], resumed->opt->slots[i]));
            CHECK(full->opt->iterations == resumed->opt->iterations);
            CHECK(full->opt->iterations == (int64_t)N * 4);
            REQUIRE(resumed->hist_epochs == N);
            REQUIRE(full->hist.size() == resumed->hist.size());
            for (size_t k = 0; k < full->hist.size(); k++) {
                CAPTURE(full->hist_keys[k]);
                REQUIRE(full->hist[k].size() == (size_t)N);
                REQUIRE(resumed->hist[k].size() == (size_t)N);
                CHECK(bits(full->hist[k].data(), resumed->hist[k].data(), N * sizeof(double)));
            }
            /* the states are part of it: the same file with its states zeroed ends elsewhere */
            nnl_model *cold = nullptr;
            REQUIRE(nnl_load_model(ck.c_str(), &cold) == NNL_OK);
            REQUIRE(nnl_reset_states(cold) == NNL_OK);
            REQUIRE(fit(cold, K, N) == NNL_OK);
            CHECK_FALSE(same(full->W, cold->W));
            for (nnl_model *p : {full, part, resumed, cold}) nnl_model_free(p);
        }
    std::string rm = std::string("rm -rf ") + dir;
    CHECK(system(rm.c_str()) == 0);
    nnl_set_threads(0);
}
