/* Sequences (issue 12): Embedding (gradient check, PyTorch nn.Embedding
   fixture, id refusal), integer model inputs through the typed calls,
   cross-entropy, accuracy and perplexity over (B, T, V) outputs. */
#include <cstddef>

namespace seq {

static std::string embedding_fixture() {
    std::string here = __FILE__;
    size_t slash = here.find_last_of('/');
    std::string p = (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) +
                    "/reference/embedding_reference.npz";
    REQUIRE_MESSAGE(access(p.c_str(), R_OK) == 0, "the committed fixture " << p << " is missing");
    return p;
}

static std::string err() { return nnl_last_error(); }

/* Embedding(V, D) - Dense(C, act) on (T,) ids, seeded */
static nnl_model *lm(int V, int D, int T, int C, const char *act, const char *loss, const char *metrics) {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 7);
    std::string e = "Embedding(" + std::to_string(V) + ", " + std::to_string(D) +
                    ", input_length=" + std::to_string(T) + ")";
    REQUIRE_MESSAGE(nnl_add(m, e.c_str()) == NNL_OK, err());
    std::string d = "Dense(" + std::to_string(C) + ", activation='" + act + "')";
    REQUIRE_MESSAGE(nnl_add(m, d.c_str()) == NNL_OK, err());
    if (loss) REQUIRE_MESSAGE(nnl_compile(m, "SGD(learning_rate=0.5)", loss, metrics) == NNL_OK, err());
    return m;
}

} // namespace seq

TEST_CASE("gradient check: Embedding's table (scatter-add of repeated ids)") {
    nnl_model m;
    m.seed = 3;
    m.rng.reseed(3);
    m.seeded = true;
    m.add("Embedding(5, 3, input_length=4)");
    nnl::Layer &L = *m.layers[0];
    CHECK(L.out == (nnl::Shape{4, 3}));
    int B = 2;
    m.ensure_batch(B);
    std::vector<float> x = {0, 3, 3, 4, 1, 3, 0, 0}; /* repeats: the gradient adds up */
    auto r = random_vec(24, 12);
    auto w0 = random_vec(15, 13);
    std::copy(w0.begin(), w0.end(), L.weights[0].w);
    std::vector<float> y(24);
    nnl::Ctx c;
    auto objective = [&]() {
        L.forward(x.data(), y.data(), B, c);
        double s = 0;
        for (int i = 0; i < 24; i++) s += (double)r[(size_t)i] * y[(size_t)i];
        return s;
    };
    objective();
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 3; j++) CHECK(y[(size_t)(i * 3 + j)] == w0[(size_t)((int)x[(size_t)i] * 3 + j)]);
    auto r1 = r;
    L.backward(x.data(), y.data(), r1.data(), nullptr, B, c);
    std::vector<double> an(L.weights[0].g, L.weights[0].g + 15), nu;
    for (int i = 0; i < 15; i++) {
        float keep = L.weights[0].w[i];
        L.weights[0].w[i] = keep + FD_EPS;
        double p = objective();
        L.weights[0].w[i] = keep - FD_EPS;
        double q = objective();
        L.weights[0].w[i] = keep;
        nu.push_back((p - q) / (2 * FD_EPS));
    }
    check_close(an, nu, "embeddings");
    CHECK(an[2 * 3] == 0.0); /* id 2 never occurs: no gradient */
}

TEST_CASE("Embedding equals PyTorch nn.Embedding: outputs and the table's gradient (committed fixture)") {
    std::string p = seq::embedding_fixture();
    std::vector<float> w = npz_array(p, "w"), dy = npz_array(p, "dy"), y_ref = npz_array(p, "y"),
                       gw_ref = npz_array(p, "gw"), ids = npz_array(p, "ids");
    const int B = 3, T = 6, V = 9, D = 4;
    REQUIRE(w.size() == (size_t)(V * D));
    REQUIRE(ids.size() == (size_t)(B * T));
    nnl_model m;
    m.add("Embedding(9, 4, input_length=6)");
    nnl::Layer &L = *m.layers[0];
    m.ensure_batch(B);
    std::copy(w.begin(), w.end(), L.weights[0].w);
    std::vector<float> y((size_t)(B * T * D));
    nnl::Ctx c;
    L.forward(ids.data(), y.data(), B, c);
    for (size_t i = 0; i < y.size(); i++) CHECK(y[i] == y_ref[i]); /* a copy: exact */
    L.backward(ids.data(), y.data(), dy.data(), nullptr, B, c);
    for (size_t i = 0; i < gw_ref.size(); i++) CHECK(L.weights[0].g[i] == doctest::Approx(gw_ref[i]).epsilon(1e-5));
}

TEST_CASE("Embedding: Keras config, defaults, first layer only, mask_zero's refusals, ids checked by fit/evaluate/predict") {
    nnl_model *m = seq::lm(10, 3, 4, 5, "softmax", "sparse_categorical_crossentropy", "accuracy");
    /* the default initializer: Keras' 'uniform', RandomUniform(-0.05, 0.05) */
    std::vector<float> e(30);
    REQUIRE(nnl_get_weight(m, 0, e.data(), 30) == NNL_OK);
    float lo = 1, hi = -1;
    for (float v : e) lo = std::min(lo, v), hi = std::max(hi, v);
    CHECK(lo >= -0.05f);
    CHECK(hi <= 0.05f);
    CHECK(hi - lo > 0.03f);
    char name[64];
    int rank = 0;
    int64_t shape[8];
    REQUIRE(nnl_weight_info(m, 0, name, sizeof name, &rank, shape) == NNL_OK);
    CHECK(std::string(name).find("embeddings") != std::string::npos);
    CHECK(rank == 2);
    CHECK(shape[0] == 10);
    CHECK(shape[1] == 3);
    int64_t os[8];
    REQUIRE(nnl_output_shape(m, os) == 2);
    CHECK(os[0] == 4);
    CHECK(os[1] == 5);
    std::string s = m->summary();
    CHECK(s.find("embedding (Embedding)       (None, 4, 3)              30") != std::string::npos);
    /* JSON: Keras' keys, and back */
    std::string j = nnl::files::json_text(nnl::files::model_json(*m));
    CHECK(j.find("\"input_dim\": 10") != std::string::npos);
    CHECK(j.find("\"mask_zero\": false") != std::string::npos);
    CHECK(j.find("\"input_length\": 4") != std::string::npos);
    CHECK(j.find("RandomUniform") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, seq::err());
    CHECK(nnl_param_count(back) == nnl_param_count(m));
    nnl_model_free(back);

    /* ids: out of range, negative, not integral: refused naming the layer and the id */
    int32_t ok[8] = {0, 1, 2, 9, 3, 4, 5, 6};
    int32_t bad[8] = {0, 1, 2, 10, 3, 4, 5, 6};
    int64_t neg[8] = {0, 1, 2, 3, 3, -1, 5, 6};
    float frac[8] = {0, 1, 2.5f, 3, 3, 4, 5, 6};
    int64_t xs[2] = {2, 4};
    int32_t y[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    int64_t ys[2] = {2, 4};
    float out[40];
    double ev[2];
    CHECK(nnl_predict_typed(m, ok, NNL_INT32, 2, xs, 0, out, 40) == NNL_OK);
    CHECK(nnl_predict_typed(m, bad, NNL_INT32, 2, xs, 0, out, 40) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("nnl_predict_typed: x: sample 0 holds the id 10 at position 3") != std::string::npos);
    CHECK(seq::err().find("'embedding' (Embedding)") != std::string::npos);
    CHECK(nnl_evaluate_typed(m, neg, NNL_INT64, 2, xs, y, NNL_INT32, 2, ys, 0, ev, 2) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("sample 1 holds the id -1") != std::string::npos);
    CHECK(nnl_fit(m, frac, 2, xs, y, NNL_INT32, 2, ys, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("nnl_fit: x: sample 0 holds the id 2.5") != std::string::npos);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.x_val = (const float *)bad;
    o.x_val_dtype = NNL_INT32;
    o.x_val_rank = 2;
    o.x_val_shape = xs;
    o.y_val = y;
    o.y_val_dtype = NNL_INT32;
    o.y_val_rank = 2;
    o.y_val_shape = ys;
    CHECK(nnl_fit_typed(m, ok, NNL_INT32, 2, xs, y, NNL_INT32, 2, ys, &o) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("nnl_fit_typed: x_val: sample 0 holds the id 10") != std::string::npos);
    /* ids beyond float32's exact integers are refused by the typed calls themselves */
    int64_t huge[8] = {0, 1, 2, (int64_t)1 << 25, 3, 4, 5, 6};
    CHECK(nnl_predict_typed(m, huge, NNL_INT64, 2, xs, 0, out, 40) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("[-2^24, 2^24]") != std::string::npos);
    nnl_model_free(m);

    nnl_model *n = nnl_model_create();
    /* mask_zero is accepted (unit_mask.hpp tests it); a layer that cannot take its mask is refused by name */
    REQUIRE(nnl_add(n, "Embedding(10, 3, mask_zero=True, input_length=4)") == NNL_OK);
    CHECK(nnl_add(n, "Flatten()") == NNL_ERR_UNSUPPORTED);
    CHECK(seq::err().find("layer 'flatten' (Flatten) does not support masking") != std::string::npos);
    nnl_model_free(n);
    n = nnl_model_create();
    REQUIRE(nnl_add(n, "Dense(4, input_shape=(4,))") == NNL_OK);
    CHECK(nnl_add(n, "Embedding(10, 3)") == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("must be the model's first layer") != std::string::npos);
    nnl_model_free(n);
    nnl_model *k = nnl_model_create();
    CHECK(nnl_add(k, "Embedding(10, 3, input_shape=(6,))") == NNL_OK); /* input_shape works too */
    CHECK(nnl_add(k, "Embedding(0, 3)") == NNL_ERR_ARGUMENT);
    nnl_model_free(k);
}

TEST_CASE("typed inputs: int32 and int64 ids give exactly the float path (predict, classes, evaluate, fit)") {
    const int n = 6, T = 4;
    std::vector<int32_t> i32(n * T);
    std::vector<int64_t> i64(n * T);
    std::vector<float> f32(n * T);
    std::vector<int32_t> y(n * T);
    for (int i = 0; i < n * T; i++) i32[i] = (i * 7 + 3) % 10, i64[i] = i32[i], f32[i] = (float)i32[i], y[i] = (i * 5) % 6;
    int64_t xs[2] = {n, T}, ys[2] = {n, T};
    nnl_model *a = seq::lm(10, 3, T, 6, "softmax", "sparse_categorical_crossentropy", "accuracy");
    nnl_model *b = seq::lm(10, 3, T, 6, "softmax", "sparse_categorical_crossentropy", "accuracy");
    nnl_model *c = seq::lm(10, 3, T, 6, "softmax", "sparse_categorical_crossentropy", "accuracy");
    std::vector<float> pa(n * T * 6), pb(pa.size()), pc(pa.size());
    REQUIRE(nnl_predict(a, f32.data(), 2, xs, 0, pa.data(), (int64_t)pa.size()) == NNL_OK);
    REQUIRE(nnl_predict_typed(b, i32.data(), NNL_INT32, 2, xs, 0, pb.data(), (int64_t)pb.size()) == NNL_OK);
    REQUIRE(nnl_predict_typed(c, i64.data(), NNL_INT64, 2, xs, 0, pc.data(), (int64_t)pc.size()) == NNL_OK);
    CHECK(pa == pb);
    CHECK(pa == pc);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.epochs = 3;
    o.batch_size = 4;
    o.seed = 9;
    REQUIRE(nnl_fit(a, f32.data(), 2, xs, y.data(), NNL_INT32, 2, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit_typed(b, i32.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 2, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit_typed(c, i64.data(), NNL_INT64, 2, xs, y.data(), NNL_INT32, 2, ys, &o) == NNL_OK);
    double ea[2], eb[2], ec[2];
    REQUIRE(nnl_evaluate(a, f32.data(), 2, xs, y.data(), NNL_INT32, 2, ys, 0, ea, 2) == NNL_OK);
    REQUIRE(nnl_evaluate_typed(b, i32.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 2, ys, 0, eb, 2) == NNL_OK);
    REQUIRE(nnl_evaluate_typed(c, i64.data(), NNL_INT64, 2, xs, y.data(), NNL_INT32, 2, ys, 0, ec, 2) == NNL_OK);
    CHECK(ea[0] == eb[0]);
    CHECK(ea[0] == ec[0]);
    CHECK(ea[1] == eb[1]);
    std::vector<int32_t> ca(n), cb(n);
    /* classes of a (T, V) output: argmax of the flattened row, as for any output */
    REQUIRE(nnl_predict_classes(a, f32.data(), 2, xs, 0, ca.data(), n) == NNL_OK);
    REQUIRE(nnl_predict_classes_typed(b, i64.data(), NNL_INT64, 2, xs, 0, cb.data(), n) == NNL_OK);
    CHECK(ca == cb);
    /* the fits trained: the loss went down from the first epoch */
    double h[3];
    REQUIRE(nnl_history_get(b, "loss", h, 3) == 3);
    CHECK(h[2] < h[0]);
    CHECK(nnl_predict_typed(b, i32.data(), NNL_UINT8, 2, xs, 0, pb.data(), (int64_t)pb.size()) == NNL_ERR_ARGUMENT);
    nnl_model_free(a);
    nnl_model_free(b);
    nnl_model_free(c);
}

TEST_CASE("sequence outputs: sparse cross-entropy (fused and from logits), accuracy and perplexity per position") {
    const int n = 5, T = 3, V = 7;
    std::vector<int32_t> x(n * T), y(n * T);
    for (int i = 0; i < n * T; i++) x[i] = (i * 3 + 1) % 8, y[i] = (i * 2 + 1) % V;
    int64_t xs[2] = {n, T}, ys[2] = {n, T};
    for (int logits = 0; logits < 2; logits++) {
        CAPTURE(logits);
        nnl_model *m = seq::lm(8, 4, T, V, logits ? "linear" : "softmax",
                               logits ? "sparse_categorical_crossentropy(from_logits=True)"
                                      : "sparse_categorical_crossentropy",
                               "accuracy,perplexity");
        std::vector<float> p(n * T * V);
        REQUIRE(nnl_predict_typed(m, x.data(), NNL_INT32, 2, xs, 0, p.data(), (int64_t)p.size()) == NNL_OK);
        /* by hand: the mean over all n * T positions */
        double ce = 0, acc = 0;
        for (int r = 0; r < n * T; r++) {
            const float *q = p.data() + r * V;
            double mx = *std::max_element(q, q + V), s = 0;
            for (int j = 0; j < V; j++) s += logits ? std::exp(q[j] - mx) : q[j];
            double lp = logits ? q[y[r]] - mx - std::log(s) : std::log(q[y[r]] / s);
            ce -= lp;
            acc += (std::max_element(q, q + V) - q) == y[r];
        }
        ce /= n * T;
        acc /= n * T;
        double ev[3];
        REQUIRE(nnl_evaluate_typed(m, x.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 2, ys, 2, ev, 3) == NNL_OK);
        CHECK(ev[0] == doctest::Approx(ce).epsilon(1e-5));
        CHECK(ev[1] == doctest::Approx(acc));
        CHECK(ev[2] == doctest::Approx(std::exp(ce)).epsilon(1e-5));
        /* labels (n, T, 1) are the same labels */
        int64_t ys3[3] = {n, T, 1};
        double ev3[3];
        REQUIRE(nnl_evaluate_typed(m, x.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 3, ys3, 2, ev3, 3) == NNL_OK);
        CHECK(ev3[0] == ev[0]);
        /* a fit's history: perplexity is exp of the epoch's mean loss */
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.verbose = 0;
        o.epochs = 2;
        o.batch_size = 2;
        o.shuffle = 0;
        REQUIRE(nnl_fit_typed(m, x.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 2, ys, &o) == NNL_OK);
        REQUIRE(nnl_history_key_count(m) >= 3);
        CHECK(std::string(nnl_history_key(m, 2)) == "perplexity");
        double hl[2], hp[2];
        REQUIRE(nnl_history_get(m, "loss", hl, 2) == 2);
        REQUIRE(nnl_history_get(m, "perplexity", hp, 2) == 2);
        CHECK(hp[0] == doctest::Approx(std::exp(hl[0])).epsilon(1e-12));
        CHECK(hp[1] == doctest::Approx(std::exp(hl[1])).epsilon(1e-12));
        CHECK(hl[1] < hl[0]);
        nnl_model_free(m);
    }
    /* perplexity needs a categorical cross-entropy */
    nnl_model *m = seq::lm(8, 4, T, V, "linear", nullptr, nullptr);
    CHECK(nnl_compile(m, "SGD", "mse", "perplexity") == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("perplexity") != std::string::npos);
    CHECK(seq::err().find("mean_squared_error") != std::string::npos);
    CHECK(nnl_compile(m, "SGD", "categorical_crossentropy", "perplexity") == NNL_OK);
    nnl_model_free(m);
}

namespace seq {
static std::string write_tmp(const std::string &name, const std::string &text) {
    std::string p = "/tmp/nnl_seq_" + std::to_string(getpid()) + "_" + name;
    FILE *f = fopen(p.c_str(), "wb");
    REQUIRE(f);
    fwrite(text.data(), 1, text.size(), f);
    fclose(f);
    return p;
}
} // namespace seq

TEST_CASE("word corpus: vocabulary by (-count, word), <eos> per line, <unk> for unknown words, errors") {
    /* counts: the 4, <eos> 3, a 2, cat 2, sat 1, <unk> 1, mat 1, on 1 */
    std::string tr = seq::write_tmp("train.txt", " the cat sat\n the cat on the mat \n\ta  <unk> the a\n");
    nnl_vocab *v = nullptr;
    REQUIRE_MESSAGE(nnl_text_vocab(tr.c_str(), &v) == NNL_OK, seq::err());
    std::vector<std::string> want = {"the", "<eos>", "a", "cat", "<unk>", "mat", "on", "sat"};
    REQUIRE(nnl_vocab_size(v) == (int64_t)want.size());
    for (size_t i = 0; i < want.size(); i++) {
        CHECK(std::string(nnl_vocab_word(v, (int64_t)i)) == want[i]);
        CHECK(nnl_vocab_id(v, want[i].c_str()) == (int64_t)i);
    }
    CHECK(nnl_vocab_word(v, 8) == nullptr);
    CHECK(nnl_vocab_word(v, -1) == nullptr);
    CHECK(nnl_vocab_id(v, "dog") == -1);
    /* another file under the training vocabulary; no final newline: its line still ends with <eos> */
    std::string va = seq::write_tmp("valid.txt", "the dog sat\n\na mat");
    nnl_array *ids = nullptr;
    REQUIRE_MESSAGE(nnl_load_words(va.c_str(), v, &ids) == NNL_OK, seq::err());
    CHECK(nnl_array_dtype(ids) == NNL_INT32);
    std::vector<int32_t> got((const int32_t *)nnl_array_data(ids), (const int32_t *)nnl_array_data(ids) + nnl_array_size(ids));
    CHECK(got == std::vector<int32_t>({0, 4, 7, 1, 1, 2, 5, 1}));
    nnl_array_free(ids);
    /* a vocabulary without <unk>: an unknown word is an error naming it and its line */
    std::string tr2 = seq::write_tmp("train2.txt", "x y\ny\n");
    nnl_vocab *v2 = nullptr;
    REQUIRE(nnl_text_vocab(tr2.c_str(), &v2) == NNL_OK);
    CHECK(nnl_load_words(va.c_str(), v2, &ids) == NNL_ERR_ARGUMENT);
    CHECK(ids == nullptr);
    CHECK(seq::err().find("line 1: the word 'the' is not in the vocabulary") != std::string::npos);
    /* hostile and missing files */
    std::string nul = seq::write_tmp("nul.txt", std::string("a b\0c\n", 6));
    nnl_vocab *v3 = nullptr;
    CHECK(nnl_text_vocab(nul.c_str(), &v3) == NNL_ERR_FORMAT);
    CHECK(v3 == nullptr);
    CHECK(seq::err().find("NUL byte at offset 3") != std::string::npos);
    std::string empty = seq::write_tmp("empty.txt", "");
    CHECK(nnl_text_vocab(empty.c_str(), &v3) == NNL_ERR_FORMAT);
    CHECK(seq::err().find("holds no words") != std::string::npos);
    std::string blank = seq::write_tmp("blank.txt", " \t \r"); /* one line without words: "<eos>" alone */
    REQUIRE(nnl_text_vocab(blank.c_str(), &v3) == NNL_OK);
    CHECK(nnl_vocab_size(v3) == 1);
    CHECK(std::string(nnl_vocab_word(v3, 0)) == "<eos>");
    nnl_vocab_free(v3);
    remove(blank.c_str());
    CHECK(nnl_text_vocab("/nonexistent/ptb.train.txt", &v3) == NNL_ERR_IO);
    CHECK(seq::err().rfind("nnl_text_vocab: ", 0) == 0);
    CHECK(nnl_load_words("/nonexistent/ptb.valid.txt", v, &ids) == NNL_ERR_IO);
    nnl_vocab_free(v);
    nnl_vocab_free(v2);
    nnl_vocab_free(nullptr);
    for (auto &p : {tr, va, tr2, nul, empty}) remove(p.c_str());
}

TEST_CASE("language-model windows: rows continue across windows, targets shifted by one (ptb_producer)") {
    /* 23 ids, batch 3: rows of L = 7 (ids 21, 22 dropped); T = 2: (7 - 1) / 2 = 3 windows */
    std::vector<int32_t> ids(23);
    for (int i = 0; i < 23; i++) ids[i] = 100 + i;
    nnl_array *x = nullptr, *y = nullptr;
    REQUIRE_MESSAGE(nnl_lm_windows(ids.data(), 23, 3, 2, &x, &y) == NNL_OK, seq::err());
    REQUIRE(nnl_array_rank(x) == 2);
    CHECK(nnl_array_dim(x, 0) == 9);
    CHECK(nnl_array_dim(x, 1) == 2);
    CHECK(nnl_array_dtype(y) == NNL_INT32);
    const int32_t *px = (const int32_t *)nnl_array_data(x), *py = (const int32_t *)nnl_array_data(y);
    for (int w = 0; w < 3; w++)
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 2; t++) {
                int s = w * 3 + r;
                CHECK(px[s * 2 + t] == 100 + r * 7 + w * 2 + t); /* row r of the (3, 7) layout, columns of window w */
                CHECK(py[s * 2 + t] == px[s * 2 + t] + 1);       /* the next word */
            }
    /* continuity: sample r of window w+1 starts where sample r of window w's targets end */
    for (int w = 0; w + 1 < 3; w++)
        for (int r = 0; r < 3; r++) CHECK(px[((w + 1) * 3 + r) * 2] == py[(w * 3 + r) * 2 + 1]);
    nnl_array_free(x);
    nnl_array_free(y);
    CHECK(nnl_lm_windows(ids.data(), 5, 3, 2, &x, &y) == NNL_ERR_ARGUMENT);
    CHECK(x == nullptr);
    CHECK(seq::err().find("no window") != std::string::npos);
    CHECK(nnl_lm_windows(ids.data(), 23, 0, 2, &x, &y) == NNL_ERR_ARGUMENT);
    ids[4] = -3;
    CHECK(nnl_lm_windows(ids.data(), 23, 3, 2, &x, &y) == NNL_ERR_ARGUMENT);
    CHECK(seq::err().find("ids[4] = -3") != std::string::npos);
}

TEST_CASE("sliding windows over a time series: x[t] = s[t:t+T], y[t] = s[t+T]") {
    std::vector<float> s(2 * 6);
    for (int i = 0; i < 12; i++) s[i] = (float)i;
    nnl_array *x = nullptr, *y = nullptr;
    REQUIRE(nnl_sliding_windows(s.data(), 6, 2, 4, &x, &y) == NNL_OK);
    CHECK(nnl_array_dim(x, 0) == 2);
    CHECK(nnl_array_dim(x, 1) == 4);
    CHECK(nnl_array_dim(x, 2) == 2);
    CHECK(nnl_array_dim(y, 1) == 2);
    const float *px = (const float *)nnl_array_data(x), *py = (const float *)nnl_array_data(y);
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < 8; k++) CHECK(px[t * 8 + k] == (float)(t * 2 + k));
        CHECK(py[t * 2] == (float)((t + 4) * 2));
        CHECK(py[t * 2 + 1] == (float)((t + 4) * 2 + 1));
    }
    nnl_array_free(x);
    nnl_array_free(y);
    CHECK(nnl_sliding_windows(s.data(), 4, 2, 4, &x, &y) == NNL_ERR_ARGUMENT);
    CHECK(nnl_sliding_windows(nullptr, 6, 2, 4, &x, &y) == NNL_ERR_ARGUMENT);
}

TEST_CASE("Embedding: a tf.keras 2.x model.to_json() (int32 InputLayer) loads with Keras' parameter count") {
    const char *j =
        R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [{"class_name": "InputLayer", )"
        R"("config": {"batch_input_shape": [null, 30], "dtype": "int32", "sparse": false, "ragged": false, )"
        R"("name": "input_1"}}, {"class_name": "Embedding", "config": {"name": "embedding", "trainable": true, )"
        R"("batch_input_shape": [null, 30], "dtype": "float32", "input_dim": 50, "output_dim": 8, )"
        R"("embeddings_initializer": {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05, )"
        R"("seed": null}}, "embeddings_regularizer": null, "activity_regularizer": null, "embeddings_constraint": )"
        R"(null, "mask_zero": false, "input_length": 30}}, {"class_name": "Dense", "config": {"name": "dense", )"
        R"("trainable": true, "dtype": "float32", "units": 50, "activation": "softmax", "use_bias": true, )"
        R"("kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": )"
        R"({"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, )"
        R"("activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}]}, )"
        R"("keras_version": "2.13.1", "backend": "tensorflow"})";
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j, &m) == NNL_OK, seq::err());
    CHECK(nnl_param_count(m) == 50 * 8 + 8 * 50 + 50); /* Keras' summary: 400 + 450 */
    int64_t os[8];
    REQUIRE(nnl_output_shape(m, os) == 2);
    CHECK(os[0] == 30);
    CHECK(os[1] == 50);
    /* and back: the same layers again */
    std::string out = nnl::files::json_text(nnl::files::model_json(*m));
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(out.c_str(), &back) == NNL_OK, seq::err());
    CHECK(nnl::files::json_text(nnl::files::model_json(*back)) == out);
    nnl_model_free(back);
    nnl_model_free(m);
}

TEST_CASE("Embedding models: model file and npz round trips; an old nnl_fit_options without x_val_dtype") {
    nnl_model *m = seq::lm(10, 3, 4, 5, "softmax", "sparse_categorical_crossentropy", "perplexity");
    int32_t x[8] = {0, 1, 2, 9, 3, 4, 5, 6}, y[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    float xf[8] = {0, 1, 2, 9, 3, 4, 5, 6};
    int64_t xs[2] = {2, 4}, ys[2] = {2, 4};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.epochs = 2;
    /* a 0.2 caller: its struct ends before x_val_dtype, which then stays float32 */
    o.struct_size = (int)offsetof(nnl_fit_options, x_val_dtype);
    o.x_val_dtype = NNL_INT64; /* beyond the caller's struct: not read */
    o.x_val = xf;
    o.x_val_rank = 2;
    o.x_val_shape = xs;
    o.y_val = y;
    o.y_val_dtype = NNL_INT32;
    o.y_val_rank = 2;
    o.y_val_shape = ys;
    REQUIRE_MESSAGE(nnl_fit_typed(m, x, NNL_INT32, 2, xs, y, NNL_INT32, 2, ys, &o) == NNL_OK, seq::err());
    double vp[2];
    REQUIRE(nnl_history_get(m, "val_perplexity", vp, 2) == 2);
    CHECK(vp[1] > 1.0);
    std::vector<float> p(40), q(40);
    REQUIRE(nnl_predict_typed(m, x, NNL_INT32, 2, xs, 0, p.data(), 40) == NNL_OK);
    std::string dir = "/tmp/nnl_seq_" + std::to_string(getpid());
    std::string f = dir + "_emb.nnl", z = dir + "_emb.npz";
    REQUIRE_MESSAGE(nnl_save_model(m, f.c_str()) == NNL_OK, seq::err());
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_load_model(f.c_str(), &back) == NNL_OK, seq::err());
    REQUIRE(nnl_predict_typed(back, x, NNL_INT32, 2, xs, 0, q.data(), 40) == NNL_OK);
    CHECK(p == q);
    REQUIRE(nnl_save_weights_npz(m, z.c_str()) == NNL_OK);
    nnl_model *fresh = seq::lm(10, 3, 4, 5, "softmax", nullptr, nullptr);
    REQUIRE_MESSAGE(nnl_load_weights_npz(fresh, z.c_str()) == NNL_OK, seq::err());
    std::fill(q.begin(), q.end(), 0.f);
    REQUIRE(nnl_predict_typed(fresh, x, NNL_INT32, 2, xs, 0, q.data(), 40) == NNL_OK);
    CHECK(p == q);
    remove(f.c_str());
    remove(z.c_str());
    nnl_model_free(fresh);
    nnl_model_free(back);
    nnl_model_free(m);
}
