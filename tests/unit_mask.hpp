/* Variable-length sequences and step masks (issue 12): input_shape=(None, F),
   Masking, Embedding's mask_zero, masked recurrent steps (finite
   differences through time and the PyTorch packed-sequence fixture
   tests/reference/mask_reference.npz), masked losses and metrics. Included
   by unit.cpp after unit_seq.hpp (seq::err) and unit_rnn.hpp. */

namespace maskt {

/* Masks of the checks below, (B=3, T=6): sample 0 masked in the middle,
   sample 1 at the end, sample 2 at the start and once more. */
static const float PATTERN[3][6] = {{1, 1, 0, 0, 1, 1}, {1, 1, 1, 1, 0, 0}, {0, 1, 1, 0, 1, 1}};

/* gradcheck_layer (unit_layers.hpp) for one recurrent layer whose input
   carries the step mask PATTERN: dL/dx and dL/dW against central
   differences (the mask is fixed, so every x may move), with L = sum(r y).
   var: the layer of a model with input_shape=(None, 3), run at length T
   (without a mask unless T is 6). */
static void gradcheck_masked(const char *spec, bool var = false, int T = 6) {
    INFO("layer " << spec << " var " << var << " T " << T);
    const int B = 3, F = 3;
    bool use_mask = T == 6;
    nnl_model m;
    m.seed = 1234;
    m.rng.reseed(m.seed);
    m.seeded = true;
    m.add(var ? "Input(shape=(None, 3))" : "Input(shape=(6, 3))");
    m.add(spec);
    if (var) m.set_length(T, "test");
    nnl::Layer &L = *m.layers[0];
    REQUIRE(L.in.d[0] == T);
    L.mask_in = use_mask; /* as behind a Masking layer */
    m.ensure_batch(B);
    if (use_mask) {
        REQUIRE(L.mask == m.maskbuf.data());
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) m.maskbuf[(size_t)(b * T + t)] = PATTERN[b][t];
    }
    int64_t nin = B * T * F, nout = B * L.out.size();
    auto x = random_vec((size_t)nin, 31, -1.5f, 1.5f);
    auto r = random_vec((size_t)nout, 32);
    nnl::Ctx c;
    std::vector<float> y((size_t)nout), dx((size_t)nin);
    auto objective = [&]() {
        L.forward(x.data(), y.data(), B, c);
        double s = 0;
        for (int64_t i = 0; i < nout; i++) s += (double)r[(size_t)i] * y[(size_t)i];
        return s;
    };
    for (auto &w : L.weights) { /* biases off zero too */
        auto init = random_vec((size_t)w.shape.size(), 33);
        std::copy(init.begin(), init.end(), w.w);
    }
    objective();
    auto *R = dynamic_cast<nnl::Recurrent *>(&L);
    REQUIRE(R);
    int64_t u = R->units;
    if (use_mask && R->return_sequences && !R->zero_output_for_mask && !R->go_backwards) {
        /* a masked step's output is the previous step's (the state stays): sample 0, steps 2 and 3 repeat
           step 1; sample 2's first step (masked before any kept one) is zero */
        for (int64_t j = 0; j < u; j++) {
            CHECK(y[(size_t)((0 * T + 2) * u + j)] == y[(size_t)((0 * T + 1) * u + j)]);
            CHECK(y[(size_t)((0 * T + 3) * u + j)] == y[(size_t)((0 * T + 1) * u + j)]);
            CHECK(y[(size_t)((2 * T + 0) * u + j)] == 0.f);
        }
    }
    if (use_mask && R->return_sequences && R->zero_output_for_mask && !R->go_backwards)
        for (int64_t j = 0; j < u; j++) CHECK(y[(size_t)((1 * T + 5) * u + j)] == 0.f);
    auto r1 = r;
    L.backward(x.data(), y.data(), r1.data(), dx.data(), B, c);
    /* a masked step's input has no gradient */
    if (use_mask)
        for (int64_t j = 0; j < F; j++) CHECK(dx[(size_t)((1 * T + 4) * F + j)] == 0.f);
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

static std::string err() { return nnl_last_error(); }

/* tests/reference/mask_reference.npz beside this file (or NNL_MASK_FIXTURE) */
static std::string fixture() {
    if (const char *e = getenv("NNL_MASK_FIXTURE")) return e;
    std::string here = __FILE__;
    size_t slash = here.find_last_of('/');
    std::string p = (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) +
                    "/reference/mask_reference.npz";
    if (access(p.c_str(), R_OK) != 0) FAIL("the committed fixture mask_reference.npz is missing (NNL_MASK_FIXTURE)");
    return p;
}

/* weights of model a into model b (same layout) through the ABI */
static void copy_weights(nnl_model *a, nnl_model *b) {
    int n = nnl_weight_count(a);
    REQUIRE(n == nnl_weight_count(b));
    for (int i = 0; i < n; i++) {
        char name[64];
        int rank = 0;
        int64_t shape[8];
        REQUIRE(nnl_weight_info(a, i, name, sizeof name, &rank, shape) == NNL_OK);
        int64_t cnt = 1;
        for (int k = 0; k < rank; k++) cnt *= shape[k];
        std::vector<float> w((size_t)cnt);
        REQUIRE(nnl_get_weight(a, i, w.data(), cnt) == NNL_OK);
        REQUIRE(nnl_set_weight(b, i, w.data(), cnt) == NNL_OK);
    }
}

} // namespace maskt

TEST_CASE("masking: gradient check through time with masked steps (middle, end, start), SimpleRNN, LSTM, GRU") {
    const char *specs[] = {
        "SimpleRNN(3)",
        "SimpleRNN(3, return_sequences=True)",
        "SimpleRNN(3, go_backwards=True, return_sequences=True)",
        "LSTM(3)",
        "LSTM(3, return_sequences=True)",
        "LSTM(3, go_backwards=True)",
        "LSTM(3, return_sequences=True, zero_output_for_mask=True)",
        "GRU(3)",
        "GRU(3, return_sequences=True)",
        "GRU(3, go_backwards=True, return_sequences=True)",
        "GRU(3, reset_after=False, return_sequences=True)",
        "GRU(3, reset_after=False, go_backwards=True)",
    };
    for (const char *s : specs) maskt::gradcheck_masked(s);
    /* the same in a variable-length model (input_shape=(None, 3)) at length 6 */
    maskt::gradcheck_masked("LSTM(3, return_sequences=True)", true, 6);
}

TEST_CASE("variable length: gradient check through time at lengths 2, 9 and 4 (input_shape=(None, 3))") {
    for (const char *s : {"SimpleRNN(3, return_sequences=True)", "LSTM(3, go_backwards=True)", "GRU(3)",
                          "GRU(3, reset_after=False, return_sequences=True)"})
        for (int T : {2, 9, 4}) maskt::gradcheck_masked(s, true, T);
}

TEST_CASE("masking: Masking(0.0) + LSTM equals PyTorch's nn.LSTM on packed (unpadded) sequences") {
    std::string f = maskt::fixture();
    auto x = npz_array(f, "x");
    for (const char *c : {"seq", "last"}) {
        INFO("case " << c);
        bool seqs = std::string(c) == "seq";
        nnl_model m;
        m.seed = 1;
        m.rng.reseed(1);
        m.seeded = true;
        m.add("Masking(0.0, input_shape=(6, 4))");
        m.add(seqs ? "LSTM(5, return_sequences=True)" : "LSTM(5)");
        REQUIRE(m.layers[1]->mask_in);
        CHECK(m.layers[1]->mask_out == seqs);
        nnl::Layer &L = *m.layers[1];
        for (int i = 0; i < 3; i++) {
            auto w = npz_array(f, ("w" + std::to_string(i)).c_str());
            REQUIRE(w.size() == (size_t)L.weights[(size_t)i].shape.size());
            std::copy(w.begin(), w.end(), L.weights[(size_t)i].w);
        }
        const int64_t B = 3, L_ = 2;
        m.ensure_batch(B);
        std::copy(x.begin(), x.end(), m.act[0]);
        m.forward(B, true, 0);
        /* the mask the Masking layer derived: lengths 6, 4, 2 */
        CHECK(m.maskbuf[0 * 6 + 5] == 1.f);
        CHECK(m.maskbuf[1 * 6 + 3] == 1.f);
        CHECK(m.maskbuf[1 * 6 + 4] == 0.f);
        CHECK(m.maskbuf[2 * 6 + 2] == 0.f);
        auto dy = npz_array(f, (std::string(c) + "_dy").c_str());
        REQUIRE((int64_t)dy.size() == B * L.out.size());
        CHECK(refmodel::scaled_diff(m.act[L_], npz_array(f, (std::string(c) + "_y").c_str())) < RNN_REF_TOL);
        /* dx through the LSTM (into the Masking layer's output), then through Masking by hand */
        std::vector<float> dx(x.size());
        L.backward(m.act[1], m.act[2], dy.data(), dx.data(), B, nnl::Ctx());
        for (size_t i = 0; i < dx.size(); i++)
            if (m.maskbuf[i / 4] == 0.f) dx[i] = 0.f;
        CHECK(refmodel::scaled_diff(dx.data(), npz_array(f, (std::string(c) + "_dx").c_str())) < RNN_REF_TOL);
        for (int i = 0; i < 3; i++) {
            INFO("gradient " << i);
            CHECK(refmodel::scaled_diff(L.weights[(size_t)i].g,
                                        npz_array(f, (std::string(c) + "_g" + std::to_string(i)).c_str())) <
                  RNN_REF_TOL);
        }
    }
}

TEST_CASE("variable length: input_shape=(None, F) trained on length 30 predicts on 7 and 50 as step by step") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 5);
    REQUIRE_MESSAGE(nnl_add(m, "LSTM(6, return_sequences=True, input_shape=(None, 3))") == NNL_OK, maskt::err());
    REQUIRE_MESSAGE(nnl_add(m, "Dense(2)") == NNL_OK, maskt::err());
    int64_t is[8], os[8];
    REQUIRE(nnl_input_shape(m, is) == 2);
    CHECK(is[0] == -1);
    CHECK(is[1] == 3);
    REQUIRE(nnl_output_shape(m, os) == 2);
    CHECK(os[0] == -1);
    CHECK(os[1] == 2);
    std::string s = m->summary();
    CHECK(s.find("(None, None, 6)") != std::string::npos);
    CHECK(s.find("(None, None, 2)") != std::string::npos);
    REQUIRE(nnl_compile(m, "adam(learning_rate=0.01)", "mse", "mae") == NNL_OK);
    const int64_t n = 8;
    auto x30 = random_vec((size_t)(n * 30 * 3), 41, -1.f, 1.f);
    auto y30 = random_vec((size_t)(n * 30 * 2), 42, -0.5f, 0.5f);
    int64_t xs[3] = {n, 30, 3}, ys[3] = {n, 30, 2};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 4;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x30.data(), 3, xs, y30.data(), NNL_FLOAT32, 3, ys, &o) == NNL_OK, maskt::err());
    CHECK(nnl_history_epochs(m) == 2);

    /* the same weights in a stateful model of one step, fed step by step */
    nnl_model *st = nnl_model_create();
    REQUIRE(nnl_add(st, "LSTM(6, return_sequences=True, stateful=True, input_shape=(1, 3))") == NNL_OK);
    REQUIRE(nnl_add(st, "Dense(2)") == NNL_OK);
    maskt::copy_weights(m, st);
    for (int64_t T : {7, 50}) {
        INFO("length " << T);
        auto x = random_vec((size_t)(n * T * 3), 43 + (int)T, -1.f, 1.f);
        int64_t s3[3] = {n, T, 3};
        std::vector<float> y((size_t)(n * T * 2));
        REQUIRE_MESSAGE(nnl_predict(m, x.data(), 3, s3, 3, y.data(), (int64_t)y.size()) == NNL_OK, maskt::err());
        REQUIRE(nnl_reset_states(st) == NNL_OK);
        double worst = 0;
        for (int64_t t = 0; t < T; t++) {
            std::vector<float> xt((size_t)(n * 3)), yt((size_t)(n * 2));
            for (int64_t b = 0; b < n; b++)
                for (int j = 0; j < 3; j++) xt[(size_t)(b * 3 + j)] = x[(size_t)((b * T + t) * 3 + j)];
            int64_t s1[3] = {n, 1, 3};
            REQUIRE_MESSAGE(nnl_predict(st, xt.data(), 3, s1, (int)n, yt.data(), n * 2) == NNL_OK, maskt::err());
            for (int64_t b = 0; b < n; b++)
                for (int j = 0; j < 2; j++)
                    worst = std::max(worst, (double)std::fabs(yt[(size_t)(b * 2 + j)] - y[(size_t)((b * T + t) * 2 + j)]));
        }
        CHECK(worst < 1e-5);
        /* evaluate at this length too */
        std::vector<float> yt((size_t)(n * T * 2), 0.f);
        int64_t ys3[3] = {n, T, 2};
        double out[2];
        CHECK(nnl_evaluate(m, x.data(), 3, s3, yt.data(), NNL_FLOAT32, 3, ys3, 4, out, 2) == NNL_OK);
        CHECK(std::isfinite(out[0]));
    }
    /* the wrong feature count is refused, naming the input */
    std::vector<float> bad(40);
    int64_t sb[3] = {2, 5, 4};
    CHECK(nnl_predict(m, bad.data(), 3, sb, 2, bad.data(), 40) == NNL_ERR_SHAPE);
    CHECK(maskt::err().find("(None, 3)") != std::string::npos);

    /* JSON: [null, null, 3], as Keras writes it, and back */
    std::string j = nnl::files::json_text(nnl::files::model_json(*m));
    CHECK(j.find("\"batch_input_shape\": [null, null, 3]") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, maskt::err());
    CHECK(back->var_len);
    CHECK(nnl::files::json_text(nnl::files::model_json(*back)) == j);
    nnl_model_free(back);
    /* a model file keeps the variable length; the loaded model predicts as the original */
    char path[] = "/tmp/nnl_mask_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE_MESSAGE(nnl_save_model(m, path) == NNL_OK, maskt::err());
    nnl_model *lm = nullptr;
    REQUIRE_MESSAGE(nnl_load_model(path, &lm) == NNL_OK, maskt::err());
    unlink(path);
    CHECK(lm->var_len);
    auto x11 = random_vec((size_t)(2 * 11 * 3), 47, -1.f, 1.f);
    int64_t s11[3] = {2, 11, 3};
    std::vector<float> ya(44), yb(44);
    REQUIRE(nnl_predict(m, x11.data(), 3, s11, 2, ya.data(), 44) == NNL_OK);
    REQUIRE(nnl_predict(lm, x11.data(), 3, s11, 2, yb.data(), 44) == NNL_OK);
    CHECK(ya == yb);
    nnl_model_free(lm);
    nnl_model_free(st);
    nnl_model_free(m);
}

TEST_CASE("variable length: Keras 3 batch_shape [null, null, F] loads; length-dependent layers are refused by name") {
    const char *k3 = R"({"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "layers": [)"
                     R"({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, null, 4], )"
                     R"("dtype": "float32", "sparse": false, "name": "input_layer"}}, )"
                     R"({"module": "keras.layers", "class_name": "Masking", "config": {"name": "masking", )"
                     R"("trainable": true, "dtype": "float32", "mask_value": 0.0}}, )"
                     R"({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "trainable": true, )"
                     R"("dtype": "float32", "return_sequences": false, "return_state": false, "go_backwards": false, )"
                     R"("stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 4, )"
                     R"("activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, "reset_after": true, )"
                     R"("seed": null}}]}, "keras_version": "3.6.0"})";
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k3, &m) == NNL_OK, maskt::err());
    CHECK(m->var_len);
    CHECK(m->layers[1]->mask_in);
    CHECK(nnl_param_count(m) == 3 * 4 * (4 + 4 + 2)); /* Keras: 3u (F + u + 2) with reset_after */
    std::string s = m->summary();
    CHECK(s.find("masking (Masking)           (None, None, 4)") != std::string::npos);
    CHECK(s.find("gru (GRU)                   (None, 4)") != std::string::npos);
    /* after the steps are consumed anything may follow */
    CHECK(nnl_add(m, "Dense(3)") == NNL_OK);
    nnl_model_free(m);
    /* tf.keras 2.x: the first layer holds batch_input_shape [null, null, F] */
    const char *k2 = R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [)"
                     R"({"class_name": "Masking", "config": {"name": "masking", "trainable": true, )"
                     R"("batch_input_shape": [null, null, 3], "dtype": "float32", "mask_value": -1.0}}, )"
                     R"({"class_name": "SimpleRNN", "config": {"name": "simple_rnn", "trainable": true, )"
                     R"("dtype": "float32", "return_sequences": true, "units": 2}}]}, "keras_version": "2.15.0"})";
    REQUIRE_MESSAGE(nnl_model_from_json(k2, &m) == NNL_OK, maskt::err());
    CHECK(m->var_len);
    CHECK(m->layers[1]->mask_out);
    CHECK(static_cast<nnl::Masking &>(*m->layers[0]).mask_value == -1.f);
    std::string j2 = nnl::files::json_text(nnl::files::model_json(*m));
    CHECK(j2.find("\"batch_input_shape\": [null, null, 3]") != std::string::npos);
    CHECK(j2.find("\"mask_value\": -1") != std::string::npos);
    nnl_model_free(m);

    nnl_model *f = nnl_model_create();
    REQUIRE(nnl_add(f, "Dense(4, input_shape=(None, 3))") == NNL_OK);
    CHECK(nnl_add(f, "Flatten()") == NNL_ERR_SHAPE);
    CHECK(maskt::err().find("layer 'flatten' (Flatten) needs a fixed input length") != std::string::npos);
    CHECK(nnl_add(f, "Conv1D(2, 3)") == NNL_ERR_SHAPE);
    CHECK(maskt::err().find("(Conv1D) needs a fixed input length") != std::string::npos);
    CHECK(nnl_add(f, "Dense(2, input_shape=(3, None))") == NNL_ERR_SHAPE); /* None only first */
    nnl_model_free(f);
    nnl_model *g = nnl_model_create(); /* the C shortcut: -1 first is None */
    int64_t gs[2] = {-1, 3};
    REQUIRE_MESSAGE(nnl_add_input(g, 2, gs) == NNL_OK, maskt::err());
    CHECK(g->var_len);
    REQUIRE(nnl_add(g, "GRU(2, return_sequences=True)") == NNL_OK);
    int64_t go[8];
    REQUIRE(nnl_output_shape(g, go) == 2);
    CHECK(go[0] == -1);
    CHECK(go[1] == 2);
    nnl_model_free(g);
    nnl_model *e = nnl_model_create();
    CHECK(nnl_add(e, "Dense(4, input_shape=(None,))") == NNL_ERR_SHAPE); /* rank 1: Dense over the steps */
    nnl_model_free(e);
}

TEST_CASE("masked loss: masked positions change neither the loss nor the gradients; the mean is over kept ones") {
    const int B = 3, T = 6, F = 2, C = 4;
    nnl_model m;
    m.seed = 9;
    m.rng.reseed(9);
    m.seeded = true;
    m.add("Masking(0.0, input_shape=(6, 2))");
    m.add("SimpleRNN(5, return_sequences=True)");
    m.add("Dense(4, activation='softmax')");
    m.compile("sgd", "sparse_categorical_crossentropy", "accuracy");
    REQUIRE(m.output_masked());
    m.ensure_batch(B);
    auto x = random_vec((size_t)(B * T * F), 51, -1.f, 1.f);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (maskt::PATTERN[b][t] == 0.f) x[(size_t)((b * T + t) * F)] = x[(size_t)((b * T + t) * F + 1)] = 0.f;
    std::vector<float> t1((size_t)(B * T)), t2;
    for (int i = 0; i < B * T; i++) t1[(size_t)i] = (float)(i % C);
    t2 = t1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (maskt::PATTERN[b][t] == 0.f) t2[(size_t)(b * T + t)] = (float)(((int)t1[(size_t)(b * T + t)] + 1) % C);
    size_t L = m.layers.size();
    auto step = [&](const std::vector<float> &tg, std::vector<float> &grad, double *acc) {
        std::copy(x.begin(), x.end(), m.act[0]);
        std::copy(tg.begin(), tg.end(), m.targets);
        m.forward(B, true, 0);
        double ms[1] = {0};
        double l = m.loss_and_grad(B, m.dact[L], ms);
        *acc = ms[0] / B;
        m.backward(B, 0);
        grad.assign(m.G.begin(), m.G.end());
        return l / B;
    };
    std::vector<float> g1, g2;
    double a1, a2;
    double l1 = step(t1, g1, &a1), l2 = step(t2, g2, &a2);
    CHECK(l1 == l2);
    CHECK(a1 == a2);
    CHECK(g1 == g2);
    /* the loss by hand: mean cross-entropy over the 12 kept positions */
    std::copy(x.begin(), x.end(), m.act[0]);
    m.forward(B, false, 0);
    double sum = 0;
    int kept = 0;
    for (int q = 0; q < B * T; q++) {
        if (maskt::PATTERN[q / T][q % T] == 0.f) continue;
        kept++;
        sum -= std::log((double)m.act[L][q * C + (int)t1[(size_t)q]]);
    }
    CHECK(kept == 12);
    CHECK(l1 == doctest::Approx(sum / kept).epsilon(1e-5));
    /* a point loss: mse over kept positions only */
    nnl_model p;
    p.seed = 9;
    p.rng.reseed(9);
    p.seeded = true;
    p.add("Masking(0.0, input_shape=(6, 2))");
    p.add("Dense(3)");
    p.compile("sgd", "mse", "mae");
    p.ensure_batch(B);
    std::copy(x.begin(), x.end(), p.act[0]);
    std::vector<float> ty((size_t)(B * T * 3), 0.5f);
    std::copy(ty.begin(), ty.end(), p.targets);
    p.forward(B, false, 0);
    double ms[1] = {0};
    double lp = p.loss_and_grad(B, nullptr, ms) / B;
    double se = 0;
    for (int q = 0; q < B * T; q++)
        if (maskt::PATTERN[q / T][q % T] != 0.f)
            for (int j = 0; j < 3; j++) se += std::pow((double)p.act[2][q * 3 + j] - 0.5, 2) / 3;
    CHECK(lp == doctest::Approx(se / 12).epsilon(1e-5));
}

TEST_CASE("mask_zero: Embedding(mask_zero=True) + LSTM on zero-padded ids equals the unpadded sequences") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 3);
    REQUIRE_MESSAGE(nnl_add(m, "Embedding(9, 4, mask_zero=True, input_shape=(None,))") == NNL_OK, maskt::err());
    REQUIRE(nnl_add(m, "LSTM(5)") == NNL_OK);
    CHECK(m->layers[1]->mask_in);
    std::string j = nnl::files::json_text(nnl::files::model_json(*m));
    CHECK(j.find("\"mask_zero\": true") != std::string::npos);
    CHECK(j.find("[null, null]") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, maskt::err());
    CHECK(back->layers[1]->mask_in);
    nnl_model_free(back);
    /* ids of lengths 5, 3, 1 padded with 0 to 7 (zero-padded at the end) */
    int32_t padded[3][7] = {{3, 1, 4, 1, 5, 0, 0}, {2, 6, 5, 0, 0, 0, 0}, {8, 0, 0, 0, 0, 0, 0}};
    int64_t ps[2] = {3, 7};
    float yp[15];
    REQUIRE_MESSAGE(nnl_predict_typed(m, padded, NNL_INT32, 2, ps, 3, yp, 15) == NNL_OK, maskt::err());
    int lens[3] = {5, 3, 1};
    for (int b = 0; b < 3; b++) {
        int64_t s1[2] = {1, lens[b]};
        float y1[5];
        REQUIRE(nnl_predict_typed(m, padded[b], NNL_INT32, 2, s1, 1, y1, 5) == NNL_OK);
        for (int k = 0; k < 5; k++) CHECK(yp[b * 5 + k] == doctest::Approx(y1[k]).epsilon(1e-6));
    }
    /* without the mask the padding would change the result */
    nnl_model *u = nnl_model_create();
    REQUIRE(nnl_add(u, "Embedding(9, 4, input_shape=(None,))") == NNL_OK);
    REQUIRE(nnl_add(u, "LSTM(5)") == NNL_OK);
    maskt::copy_weights(m, u);
    float yu[15];
    REQUIRE(nnl_predict_typed(u, padded, NNL_INT32, 2, ps, 3, yu, 15) == NNL_OK);
    CHECK(std::fabs(yu[5] - yp[5]) > 1e-4);
    nnl_model_free(u);
    nnl_model_free(m);
}

TEST_CASE("masked metrics: the accuracy over every kept position of the data (Keras' sample weights), the loss a batch-size-weighted mean") {
    /* two batches with 9 and 2 kept positions: a mean of batch means would
       weigh the second batch's 2 positions as much as the first's 9 */
    const int T = 5, F = 2, C = 3, n = 4, bs = 2;
    nnl_model m;
    m.seed = 4;
    m.rng.reseed(4);
    m.seeded = true;
    m.add("Masking(0.0, input_shape=(5, 2))");
    m.add("SimpleRNN(4, return_sequences=True)");
    m.add("Dense(3, activation='softmax')");
    m.compile("sgd", "sparse_categorical_crossentropy", "accuracy");
    const int keep[n] = {5, 4, 1, 1}; /* kept steps per sample, right-padded */
    auto x = random_vec((size_t)(n * T * F), 77, 0.1f, 1.f);
    for (int b = 0; b < n; b++)
        for (int t = keep[b]; t < T; t++) x[(size_t)((b * T + t) * F)] = x[(size_t)((b * T + t) * F + 1)] = 0.f;
    std::vector<float> y((size_t)(n * T));
    for (int i = 0; i < n * T; i++) y[(size_t)i] = (float)((i * 7) % C);
    std::vector<float> p((size_t)(n * T * C));
    m.predict(x.data(), n, bs, p.data());
    double hits = 0, kept = 0, lsum = 0, bl[2] = {0, 0}, bk[2] = {0, 0};
    for (int b = 0; b < n; b++)
        for (int t = 0; t < keep[b]; t++) {
            const float *q = p.data() + (b * T + t) * C;
            int c = (int)y[(size_t)(b * T + t)];
            hits += (std::max_element(q, q + C) - q) == c;
            kept++;
            bl[b / bs] -= std::log((double)q[c]);
            bk[b / bs] += 1;
        }
    lsum = (bl[0] / bk[0]) * bs + (bl[1] / bk[1]) * bs; /* each batch's masked mean, weighted by its size */
    std::vector<double> r = m.evaluate(x.data(), y.data(), n, bs);
    CHECK(r[1] == doctest::Approx(hits / kept).epsilon(1e-12));
    CHECK(r[0] == doctest::Approx(lsum / n).epsilon(1e-5));
}
