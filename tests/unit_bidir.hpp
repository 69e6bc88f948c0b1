/* Bidirectional (issue 12): Keras' wrapper around SimpleRNN/LSTM/GRU against
   finite differences through time for every merge_mode, against PyTorch's
   bidirectional nn.LSTM/nn.GRU (tests/reference/bidir_reference.npz), its
   weight order, parameter counts and summary row, Keras JSON (tf.keras 2.x
   and Keras 3 layouts) and model files; and Keras' TimeDistributed(Dense)
   spelling. Step masks (Masking, Embedding's mask_zero) and variable length
   (input_shape=(None, F)): finite differences, PyTorch's bidirectional
   layers on pack_padded_sequence (tests/reference/bidir_mask_reference.npz),
   padded against unpadded, training. Included by unit.cpp (after
   unit_rnn.hpp, whose helpers it uses). */

TEST_CASE("Bidirectional: gradient check through time, every merge_mode, LSTM and GRU, sequences on and off") {
    const char *specs[] = {
        "Bidirectional(LSTM(3))",
        "Bidirectional(LSTM(3, return_sequences=True))",
        "Bidirectional(LSTM(3), merge_mode='sum')",
        "Bidirectional(LSTM(3, return_sequences=True), merge_mode='sum')",
        "Bidirectional(LSTM(3), merge_mode='mul')",
        "Bidirectional(LSTM(3, return_sequences=True), merge_mode='mul')",
        "Bidirectional(LSTM(3), merge_mode='ave')",
        "Bidirectional(LSTM(3, return_sequences=True), merge_mode='ave')",
        "Bidirectional(LSTM(3, go_backwards=True, return_sequences=True), merge_mode='concat')",
        "Bidirectional(GRU(3))",
        "Bidirectional(GRU(3, return_sequences=True))",
        "Bidirectional(GRU(3), merge_mode='sum')",
        "Bidirectional(GRU(3, return_sequences=True), merge_mode='mul')",
        "Bidirectional(GRU(3, reset_after=False), merge_mode='ave')",
        "Bidirectional(GRU(3, reset_after=False, return_sequences=True), 'concat')",
        "Bidirectional(SimpleRNN(3, return_sequences=True), merge_mode='mul')",
    };
    for (const char *s : specs) gradcheck_layer(s, nnl::Shape{5, 3});
}

namespace bidir {

static std::string fixture_path() { return rnnref::find_fixture("bidir_reference.npz", "NNL_BIDIR_FIXTURE"); }

/* y, dx and the six weight gradients of one case, each as its max error over
   its reference's norm; swap: exchange the two directions' weights (a
   planted bug for the self-check) */
struct Result {
    double y = 1, dx = 1, g[6] = {1, 1, 1, 1, 1, 1};
};
static Result run_case(const std::string &path, const std::string &c, bool swap = false) {
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
    REQUIRE(L.weights.size() == 6);
    for (int i = 0; i < 6; i++) {
        auto w = npz_array(path, (c + "_w" + std::to_string(swap ? (i + 3) % 6 : i)).c_str());
        REQUIRE(w.size() == (size_t)L.weights[(size_t)i].shape.size());
        std::copy(w.begin(), w.end(), L.weights[(size_t)i].w);
    }
    m.ensure_batch(B);
    nnl::Ctx ctx;
    ctx.training = true;
    std::vector<float> y((size_t)(B * L.out.size())), dx(x.size());
    REQUIRE(y.size() == dy.size());
    L.forward(x.data(), y.data(), B, ctx);
    for (auto &w : L.weights) std::fill(w.g, w.g + w.shape.size(), NAN);
    L.backward(x.data(), y.data(), dy.data(), dx.data(), B, ctx);
    Result r;
    r.y = refmodel::scaled_diff(y.data(), npz_array(path, (c + "_y").c_str()));
    r.dx = refmodel::scaled_diff(dx.data(), npz_array(path, (c + "_dx").c_str()));
    for (int i = 0; i < 6; i++)
        r.g[i] = refmodel::scaled_diff(L.weights[(size_t)i].g, npz_array(path, (c + "_g" + std::to_string(i)).c_str()));
    return r;
}

static std::string json_of(const nnl_model *m) {
    std::vector<char> j(1 << 17);
    REQUIRE(nnl_model_to_json(m, j.data(), (int64_t)j.size()) > 0);
    return j.data();
}

static std::vector<float> predict(nnl_model *m, const std::vector<float> &x, int64_t n, int64_t T, int64_t F) {
    int64_t xs[3] = {n, T, F};
    std::vector<float> y((size_t)(n * m->out_shape().size()));
    REQUIRE_MESSAGE(nnl_predict(m, x.data(), 3, xs, 4, y.data(), (int64_t)y.size()) == NNL_OK, nnl_last_error());
    return y;
}

} // namespace bidir

TEST_CASE("Bidirectional matches PyTorch's bidirectional nn.LSTM/nn.GRU: outputs and every gradient") {
    std::string path = bidir::fixture_path();
    std::string all = refmodel::text(path, "cases");
    std::vector<std::string> cases;
    for (size_t s = 0, e; s < all.size(); s = e + 1) {
        e = all.find('\n', s);
        if (e == std::string::npos) e = all.size();
        cases.push_back(all.substr(s, e - s));
    }
    CHECK(cases.size() == 6);
    double worst = 0;
    for (auto &c : cases) {
        bidir::Result r = bidir::run_case(path, c);
        INFO(c << ": y " << r.y << ", dx " << r.dx << ", g " << r.g[0] << " " << r.g[1] << " " << r.g[2] << " "
               << r.g[3] << " " << r.g[4] << " " << r.g[5]);
        CHECK(r.y <= RNN_REF_TOL);
        CHECK(r.dx <= RNN_REF_TOL);
        for (double d : r.g) CHECK(d <= RNN_REF_TOL);
        worst = std::max({worst, r.y, r.dx, r.g[0], r.g[1], r.g[2], r.g[3], r.g[4], r.g[5]});
    }
    MESSAGE("Bidirectional vs PyTorch: worst error " << worst << " of a tensor's norm");
    /* the check catches a planted bug: the directions' weights exchanged */
    for (const char *c : {"lstm_concat_seq", "gru_concat"}) {
        bidir::Result r = bidir::run_case(path, c, true);
        INFO(c << " with directions swapped: y " << r.y << ", dx " << r.dx);
        CHECK(r.y > 100 * RNN_REF_TOL);
        CHECK(r.dx > 100 * RNN_REF_TOL);
    }
}

TEST_CASE("Bidirectional: the two copies are the layer run forwards and backwards, merged in time order") {
    /* Bidirectional(LSTM(4, return_sequences=True)) with concat equals a plain
       LSTM with the forward weights beside a go_backwards LSTM with the
       backward weights whose sequence is reversed back (Keras' call) */
    const int64_t n = 3, T = 6, F = 2, u = 4;
    auto x = random_vec((size_t)(n * T * F), 31, -1.f, 1.f);
    for (bool seq : {true, false}) {
        CAPTURE(seq);
        std::string inner = seq ? "LSTM(4, return_sequences=True)" : "LSTM(4)";
        nnl_model *bi = rnnref::one_layer("Bidirectional(" + inner + ")", (int)T);
        REQUIRE(bi->layers[0]->out == (seq ? nnl::Shape{T, 2 * u} : nnl::Shape{2 * u}));
        /* one_layer builds on (T, 3): rebuild on (T, 2) */
        nnl_model_free(bi);
        bi = nnl_model_create();
        nnl_model_set_seed(bi, 4);
        REQUIRE(nnl_add(bi, ("Bidirectional(" + inner + ", input_shape=(6, 2))").c_str()) == NNL_OK);
        nnl_model *f = nnl_model_create(), *b = nnl_model_create();
        REQUIRE(nnl_add(f, (inner.substr(0, inner.size() - 1) + ", input_shape=(6, 2))").c_str()) == NNL_OK);
        REQUIRE(nnl_add(b, (inner.substr(0, inner.size() - 1) + ", go_backwards=True, input_shape=(6, 2))").c_str()) ==
                NNL_OK);
        REQUIRE(nnl_weight_count(bi) == 6);
        for (int i = 0; i < 6; i++) {
            std::vector<float> w((size_t)bi->layers[0]->weights[(size_t)i].shape.size());
            REQUIRE(nnl_get_weight(bi, i, w.data(), (int64_t)w.size()) == NNL_OK);
            REQUIRE(nnl_set_weight(i < 3 ? f : b, i % 3, w.data(), (int64_t)w.size()) == NNL_OK);
        }
        auto yb = bidir::predict(bi, x, n, T, F), yf1 = bidir::predict(f, x, n, T, F),
             yb1 = bidir::predict(b, x, n, T, F);
        int64_t steps = seq ? T : 1;
        bool same = true;
        for (int64_t s = 0; s < n; s++)
            for (int64_t t = 0; t < steps; t++)
                for (int64_t j = 0; j < u; j++) {
                    float fw = yf1[(size_t)((s * steps + t) * u + j)];
                    float bw = yb1[(size_t)((s * steps + (seq ? steps - 1 - t : t)) * u + j)];
                    same = same && yb[(size_t)((s * steps + t) * 2 * u + j)] == fw &&
                           yb[(size_t)((s * steps + t) * 2 * u + u + j)] == bw;
                }
        CHECK(same);
        nnl_model_free(f);
        nnl_model_free(b);
        nnl_model_free(bi);
    }
}

TEST_CASE("Bidirectional: Keras' weight order and names, parameter counts, output shapes, summary row, refusals") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 3);
    REQUIRE(nnl_add(m, "Bidirectional(LSTM(64), input_shape=(10, 128))") == NNL_OK);
    CHECK(nnl_param_count(m) == 98816); /* 2 x 4 x 64 x (128 + 64 + 1), as Keras' summary */
    CHECK(m->layers[0]->out == nnl::Shape{128});
    CHECK(m->layers[0]->name == "bidirectional");
    const char *names[] = {"forward_lstm/kernel",  "forward_lstm/recurrent_kernel",  "forward_lstm/bias",
                           "backward_lstm/kernel", "backward_lstm/recurrent_kernel", "backward_lstm/bias"};
    REQUIRE(nnl_weight_count(m) == 6);
    for (int i = 0; i < 6; i++) {
        char nm[128];
        int rank = 0;
        int64_t shape[8];
        REQUIRE(nnl_weight_info(m, i, nm, sizeof nm, &rank, shape) == NNL_OK);
        CHECK(std::string(nm) == std::string("bidirectional/") + names[i]);
        CHECK(shape[rank - 1] == 256);
        CHECK(shape[0] == (i % 3 == 0 ? 128 : i % 3 == 1 ? 64 : 256));
    }
    /* unit_forget_bias in both copies; the copies draw different weights */
    const nnl::Layer &l = *m->layers[0];
    for (int d = 0; d < 2; d++)
        for (int j = 0; j < 256; j++) CHECK(l.weights[(size_t)(3 * d + 2)].w[j] == (j >= 64 && j < 128 ? 1.f : 0.f));
    CHECK(!std::equal(l.weights[0].w, l.weights[0].w + 128 * 256, l.weights[3].w));
    nnl_model *s = nnl_model_create();
    REQUIRE(nnl_add(s, "Bidirectional(GRU(8, return_sequences=True), merge_mode='sum', input_shape=(5, 3))") == NNL_OK);
    REQUIRE(nnl_add(s, "Bidirectional(LSTM(6, return_sequences=True))") == NNL_OK);
    REQUIRE(nnl_add(s, "Bidirectional(SimpleRNN(2), merge_mode='ave', name='birnn')") == NNL_OK);
    CHECK(s->layers[0]->out == nnl::Shape{5, 8});
    CHECK(s->layers[0]->param_count() == 2 * 3 * (3 * 8 + 8 * 8 + 2 * 8));
    CHECK(s->layers[1]->out == nnl::Shape{5, 12});
    CHECK(s->layers[1]->param_count() == 2 * 4 * 6 * (8 + 6 + 1));
    CHECK(s->layers[2]->param_count() == 2 * (12 * 2 + 2 * 2 + 2));
    CHECK(s->layers[2]->out == nnl::Shape{2});
    char buf[4096];
    REQUIRE(nnl_summary_string(s, buf, sizeof buf) > 0);
    std::string sum = buf;
    CHECK(sum.find(" bidirectional (Bidirectional)   (None, 5, 8)              624\n") != std::string::npos);
    CHECK(sum.find(" bidirectional_1 (Bidirectional) (None, 5, 12)             720\n") != std::string::npos);
    CHECK(sum.find(" birnn (Bidirectional)           (None, 2)                 60\n") != std::string::npos);
    INFO(sum);
    /* refusals name the layer and the option */
    CHECK(nnl_add(s, "Bidirectional(LSTM(4, stateful=True))") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("stateful") != std::string::npos);
    CHECK(nnl_add(s, "Bidirectional(LSTM(4), merge_mode=None)") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("merge_mode=None") != std::string::npos);
    CHECK(nnl_add(s, "Bidirectional(Dense(4))") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("Bidirectional") != std::string::npos);
    CHECK(nnl_add(s, "Bidirectional(LSTM(4), merge_mode='max')") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(s, "Bidirectional(4)") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(s, "Bidirectional()") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(s, "Bidirectional(LSTM(4, unknown=1))") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(s, "Bidirectional(LSTM(4), backward_layer=GRU(4, go_backwards=True))") == NNL_ERR_UNSUPPORTED);
    CHECK(s->layers.size() == 3);
    /* the explicit mirror (what Keras 3 writes) is accepted */
    nnl_model *e = nnl_model_create();
    CHECK(nnl_add(e, "Bidirectional(LSTM(4), backward_layer=LSTM(4, go_backwards=True, name='back'), "
                     "input_shape=(3, 2))") == NNL_OK);
    REQUIRE(e->layers.size() == 1);
    CHECK(e->layers[0]->weights[3].name == "back/kernel");
    CHECK(e->layers[0]->weights[0].name == "forward_lstm/kernel");
    nnl_model_free(e);
    /* a nested call only as a wrapper's layer */
    CHECK(nnl_add(s, "Dense(LSTM(3))") == NNL_ERR_ARGUMENT);
    nnl_model_free(s);
    nnl_model_free(m);
}

TEST_CASE("Bidirectional and TimeDistributed(Dense): Keras JSON in both layouts, parameter counts, round trips") {
    /* tf.keras 2.x: Bidirectional(LSTM(64), input_shape=(10, 128)), Dense(2) */
    const char *k2 =
        R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 10, 128], "dtype": "float32", "sparse": false, "ragged": false, "name": "bidirectional_input"}}, )"
        R"({"class_name": "Bidirectional", "config": {"name": "bidirectional", "trainable": true, "dtype": "float32", "batch_input_shape": [null, 10, 128], "layer": {"class_name": "LSTM", "config": {"name": "lstm", "trainable": true, "dtype": "float32", "return_sequences": false, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "time_major": false, "units": 64, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )"
        R"("kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "unit_forget_bias": true, "kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 2}}, "merge_mode": "concat"}}, )"
        R"({"class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": "float32", "units": 2, "activation": "softmax", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}]}, "keras_version": "2.9.0", "backend": "tensorflow"})";
    nnl_model *m2 = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k2, &m2) == NNL_OK, nnl_last_error());
    CHECK(nnl_param_count(m2) == 98816 + 258);
    CHECK(m2->layers[0]->name == "bidirectional");
    CHECK(m2->layers[0]->weights[0].name == "forward_lstm/kernel");
    CHECK(m2->layers[0]->weights[3].name == "backward_lstm/kernel");
    /* written back in the same layout; the text round-trips */
    std::string js = bidir::json_of(m2);
    for (const char *k : {"\"class_name\": \"Bidirectional\"", "\"merge_mode\": \"concat\"",
                          "\"layer\": {\"class_name\": \"LSTM\", \"config\": {\"name\": \"lstm\"",
                          "\"go_backwards\": false"})
        CHECK_MESSAGE(js.find(k) != std::string::npos, k);
    CHECK(js.find("backward_layer") == std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE(nnl_model_from_json(js.c_str(), &back) == NNL_OK);
    CHECK(bidir::json_of(back) == js);
    CHECK(nnl_param_count(back) == nnl_param_count(m2));
    nnl_model_free(back);
    nnl_model_free(m2);

    /* Keras 3: Bidirectional(GRU(16, return_sequences=True), merge_mode='sum') on (7, 8), its backward
       layer written out, then TimeDistributed(Dense(3)); dtype policies as Keras >= 3.5 writes them */
#define K3_POLICY R"({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null})"
#define K3_GRU(NAME, BACK)                                                                                            \
    R"({"module": "keras.layers", "class_name": "GRU", "config": {"name": ")" NAME R"(", "trainable": true, "dtype": )" K3_POLICY R"(, "return_sequences": true, "return_state": false, "go_backwards": )" BACK R"(, "stateful": false, "unroll": false, "zero_output_for_mask": false, "units": 16, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )" \
    R"("kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, )" \
    R"("kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "reset_after": true, "use_cudnn": "auto", "seed": null}, "registered_name": null, "build_config": {"input_shape": [null, 7, 8]}})"
    const char *k3 =
        R"({"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "trainable": true, "dtype": )" K3_POLICY R"(, "layers": [)"
        R"({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 7, 8], "dtype": "float32", "sparse": false, "name": "input_layer"}, "registered_name": null}, )"
        R"({"module": "keras.layers", "class_name": "Bidirectional", "config": {"name": "bidirectional", "trainable": true, "dtype": )" K3_POLICY R"(, "layer": )" K3_GRU("forward_gru", "false") R"(, "merge_mode": "sum", "backward_layer": )" K3_GRU("backward_gru", "true") R"(}, "registered_name": null, "build_config": {"input_shape": [null, 7, 8]}}, )"
        R"({"module": "keras.layers", "class_name": "TimeDistributed", "config": {"name": "time_distributed", "trainable": true, "dtype": )" K3_POLICY R"(, "layer": {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": )" K3_POLICY R"(, "units": 3, "activation": "softmax", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null, "bias_constraint": null}, "registered_name": null, "build_config": {"input_shape": [null, 16]}}}, "registered_name": null, "build_config": {"input_shape": [null, 7, 16]}})"
        R"(]}, "keras_version": "3.6.0", "backend": "tensorflow"})";
    nnl_model *m3 = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k3, &m3) == NNL_OK, nnl_last_error());
    CHECK(nnl_param_count(m3) == 2 * 3 * (8 * 16 + 16 * 16 + 2 * 16) + 16 * 3 + 3); /* 2,496 + 51 */
    REQUIRE(m3->layers.size() == 2);
    CHECK(m3->layers[0]->out == nnl::Shape{7, 16});
    CHECK(m3->layers[0]->weights[0].name == "forward_gru/kernel");
    CHECK(m3->layers[0]->weights[5].name == "backward_gru/bias");
    CHECK(m3->layers[0]->weights[5].shape == nnl::Shape{2, 48});
    CHECK(std::string(m3->layers[1]->cls) == "Dense"); /* TimeDistributed(Dense) is that Dense */
    CHECK(m3->layers[1]->name == "time_distributed");
    CHECK(m3->layers[1]->out == nnl::Shape{7, 3});
    std::string j3 = bidir::json_of(m3);
    nnl_model *back3 = nullptr;
    REQUIRE(nnl_model_from_json(j3.c_str(), &back3) == NNL_OK);
    CHECK(bidir::json_of(back3) == j3);
    CHECK(nnl_param_count(back3) == nnl_param_count(m3));
    nnl_model_free(back3);
    /* a backward layer that is not the mirror is refused, naming the layer */
    std::string bad = k3;
    size_t at = bad.find(R"("name": "backward_gru")");
    REQUIRE(at != std::string::npos);
    size_t u = bad.find(R"("units": 16)", at);
    bad.replace(u, 11, R"("units": 15)");
    nnl_model *mb = nullptr;
    CHECK(nnl_model_from_json(bad.c_str(), &mb) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("bidirectional") != std::string::npos);
    CHECK(std::string(nnl_last_error()).find("backward_layer") != std::string::npos);
    /* TimeDistributed around anything but Dense: refused */
    std::string td = k3;
    size_t d = td.find(R"("class_name": "Dense")");
    td.replace(d, 21, R"("class_name": "Conv1D")");
    CHECK(nnl_model_from_json(td.c_str(), &mb) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("TimeDistributed") != std::string::npos);
    nnl_model_free(m3);
#undef K3_GRU
#undef K3_POLICY
}

TEST_CASE("TimeDistributed(Dense(...)) spec strings build that Dense, with the same weights") {
    nnl_model *a = nnl_model_create(), *b = nnl_model_create();
    nnl_model_set_seed(a, 9);
    nnl_model_set_seed(b, 9);
    REQUIRE(nnl_add(a, "TimeDistributed(Dense(4, activation='relu'), input_shape=(6, 3))") == NNL_OK);
    REQUIRE(nnl_add(b, "Dense(4, activation='relu', input_shape=(6, 3))") == NNL_OK);
    REQUIRE(nnl_add(a, "TimeDistributed(Dense(2, name='inner'), name='td')") == NNL_OK);
    REQUIRE(nnl_add(b, "Dense(2)") == NNL_OK);
    CHECK(std::string(a->layers[0]->cls) == "Dense");
    CHECK(a->layers[0]->name == "dense");
    CHECK(a->layers[1]->name == "td");
    CHECK(a->layers[1]->out == nnl::Shape{6, 2});
    CHECK(nnl_param_count(a) == 3 * 4 + 4 + 4 * 2 + 2);
    auto x = random_vec(2 * 6 * 3, 5, -1.f, 1.f);
    CHECK(bidir::predict(a, x, 2, 6, 3) == bidir::predict(b, x, 2, 6, 3));
    CHECK(nnl_add(a, "TimeDistributed(LSTM(3))") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("TimeDistributed(LSTM") != std::string::npos);
    CHECK(nnl_add(a, "TimeDistributed(3)") == NNL_ERR_ARGUMENT);
    /* tf.keras 2.x writes the wrapper with its Dense inside; it is read as that Dense and written as one */
    const char *k2 =
        R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 5, 4], "dtype": "float32", "sparse": false, "ragged": false, "name": "time_distributed_input"}}, )"
        R"({"class_name": "TimeDistributed", "config": {"name": "time_distributed", "trainable": true, "dtype": "float32", "batch_input_shape": [null, 5, 4], "layer": {"class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": "float32", "units": 3, "activation": "linear", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}}}]}, "keras_version": "2.9.0", "backend": "tensorflow"})";
    nnl_model *t = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k2, &t) == NNL_OK, nnl_last_error());
    REQUIRE(t->layers.size() == 1);
    CHECK(std::string(t->layers[0]->cls) == "Dense");
    CHECK(t->layers[0]->name == "time_distributed");
    CHECK(t->layers[0]->out == nnl::Shape{5, 3});
    CHECK(nnl_param_count(t) == 4 * 3 + 3);
    std::string tj = bidir::json_of(t);
    CHECK(tj.find("\"class_name\": \"Dense\", \"config\": {\"name\": \"time_distributed\"") != std::string::npos);
    CHECK(tj.find("TimeDistributed") == std::string::npos);
    nnl_model_free(t);
    nnl_model_free(a);
    nnl_model_free(b);
}

TEST_CASE("Bidirectional: model files and weights files round trip, training included") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 12);
    REQUIRE(nnl_add(m, "Bidirectional(GRU(5, return_sequences=True), merge_mode='mul', input_shape=(6, 3))") ==
            NNL_OK);
    REQUIRE(nnl_add(m, "Bidirectional(LSTM(4))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mse", "") == NNL_OK);
    const int64_t n = 16;
    auto x = random_vec((size_t)(n * 6 * 3), 8, -1.f, 1.f);
    std::vector<float> y((size_t)n);
    for (int64_t i = 0; i < n; i++) y[(size_t)i] = x[(size_t)(i * 18)] - x[(size_t)(i * 18 + 17)]; /* first minus last */
    int64_t xs[3] = {n, 6, 3}, ys[2] = {n, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 3;
    o.batch_size = 4;
    o.verbose = 0;
    o.shuffle = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, nnl_last_error());
    char tmp[] = "/tmp/nnlite_bidir_XXXXXX";
    REQUIRE(mkdtemp(tmp));
    std::string dir = tmp;
    std::string pm = dir + "/bidir.nnl", pw = dir + "/bidir.weights";
    REQUIRE(nnl_save_model(m, pm.c_str()) == NNL_OK);
    nnl_model *l = nullptr;
    REQUIRE_MESSAGE(nnl_load_model(pm.c_str(), &l) == NNL_OK, nnl_last_error());
    CHECK(bidir::json_of(l) == bidir::json_of(m));
    auto p1 = bidir::predict(m, x, n, 6, 3), p2 = bidir::predict(l, x, n, 6, 3);
    CHECK(p1 == p2);
    /* training continues identically from the file */
    REQUIRE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit(l, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(bidir::predict(m, x, n, 6, 3) == bidir::predict(l, x, n, 6, 3));
    REQUIRE(nnl_save_weights(m, pw.c_str()) == NNL_OK);
    nnl_model *w = nnl_model_create();
    nnl_model_set_seed(w, 99);
    REQUIRE(nnl_add(w, "Bidirectional(GRU(5, return_sequences=True), merge_mode='mul', input_shape=(6, 3))") ==
            NNL_OK);
    REQUIRE(nnl_add(w, "Bidirectional(LSTM(4))") == NNL_OK);
    REQUIRE(nnl_add(w, "Dense(1)") == NNL_OK);
    CHECK(bidir::predict(w, x, n, 6, 3) != bidir::predict(m, x, n, 6, 3));
    REQUIRE(nnl_load_weights(w, pw.c_str()) == NNL_OK);
    CHECK(bidir::predict(w, x, n, 6, 3) == bidir::predict(m, x, n, 6, 3));
    remove(pm.c_str());
    remove(pw.c_str());
    rmdir(tmp);
    nnl_model_free(w);
    nnl_model_free(l);
    nnl_model_free(m);
}

TEST_CASE("spec strings: a wrapper's layer is a nested call, read back as written, nesting bounded") {
    nnl::Spec s = nnl::parse_spec("Bidirectional(LSTM(8, return_sequences=True), merge_mode='sum', input_shape=(5, 3))");
    CHECK(s.name == "Bidirectional");
    REQUIRE(s.pos.size() == 1);
    REQUIRE(s.pos[0].kind == nnl::Value::CALL);
    const nnl::Spec &in = *s.pos[0].call;
    CHECK(in.name == "LSTM");
    REQUIRE(in.pos.size() == 1);
    CHECK(in.pos[0].num == 8);
    REQUIRE(in.kw.size() == 1);
    CHECK(in.kw[0].first == "return_sequences");
    CHECK(s.kw.size() == 2);
    std::string r = nnl::spec_repr(s);
    CHECK(r == "Bidirectional(LSTM(8, return_sequences=True), merge_mode='sum', input_shape=(5, 3))");
    CHECK(nnl::spec_repr(nnl::parse_spec(r.c_str())) == r);
    /* a bare word stays a string; a word before '(' is a call, with or without spaces */
    CHECK(nnl::parse_spec("Activation(relu)").pos[0].kind == nnl::Value::STR);
    CHECK(nnl::parse_spec("TimeDistributed( Dense (2) )").pos[0].call->name == "Dense");
    for (const char *bad : {"Bidirectional(LSTM(8)", "Bidirectional(LSTM(8,,))", "Bidirectional(LSTM(8) x)"}) {
        INFO(bad);
        CHECK_THROWS_AS(nnl::parse_spec(bad), nnl::Error);
    }
    std::string deep;
    for (int i = 0; i < 20000; i++) deep += "A(";
    CHECK_THROWS_AS(nnl::parse_spec(deep.c_str()), nnl::Error);
    std::string ok;
    for (int i = 0; i < 30; i++) ok += "A(";
    ok += std::string(30, ')');
    CHECK_NOTHROW(nnl::parse_spec(ok.c_str()));
}

/* ---- step masks and variable length ---------------------------------------- */

namespace bidir {

/* kept (1) and masked (0) steps of the masked checks (B=3, T=6): sample 0
   right-padded, sample 1 masked in the middle, sample 2 at the start and
   the end */
static const float KEEP[3][6] = {{1, 1, 1, 1, 0, 0}, {1, 1, 0, 0, 1, 1}, {0, 0, 1, 1, 1, 0}};

/* Finite differences through time for the Bidirectional layer li of m on
   x, its input for B samples (m at batch B): dL/dx and dL/dW with
   L = sum(r y), weights (biases too) drawn off zero. The step mask is
   what the model's mask buffer holds, fixed while x moves (as the layer
   below made it). At a masked step it checks Keras' semantics as well:
   no input gradient and, with return_sequences, zero in both halves
   (Bidirectional forces zero_output_for_mask); around a go_backwards
   layer both halves come out in reversed time order, as in Keras (which
   flips only the backward copy's sequence), so the zeros are at T-1-t. */
static void gradcheck_in(nnl_model &m, size_t li, std::vector<float> x, int64_t B) {
    nnl::Layer &L = *m.layers[li];
    auto *bi = dynamic_cast<nnl::Bidirectional *>(&L);
    REQUIRE(bi);
    const int64_t T = L.in.d[0], F = L.in.d[1], nin = B * T * F, nout = B * L.out.size(), D = L.out.last();
    REQUIRE((int64_t)x.size() == nin);
    const bool seq = bi->fw->return_sequences;
    INFO("layer " << nnl::spec_repr(L.spec) << " T " << T << " masked " << L.mask_in);
    unsigned salt = 33;
    for (auto &w : L.weights) {
        auto init = random_vec((size_t)w.shape.size(), salt++);
        std::copy(init.begin(), init.end(), w.w);
    }
    auto r = random_vec((size_t)nout, 32);
    nnl::Ctx c;
    std::vector<float> y((size_t)nout), dx((size_t)nin);
    auto objective = [&]() {
        L.forward(x.data(), y.data(), B, c);
        double s = 0;
        for (int64_t i = 0; i < nout; i++) s += (double)r[(size_t)i] * y[(size_t)i];
        return s;
    };
    auto kept = [&](int64_t b, int64_t t) { return !L.mask_in || m.maskbuf[(size_t)(b * T + t)] != 0.f; };
    objective();
    int64_t masked = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            if (kept(b, t)) continue;
            masked++;
            const int64_t s = bi->fw->go_backwards ? T - 1 - t : t;
            if (seq)
                for (int64_t j = 0; j < D; j++) CHECK(y[(size_t)((b * T + s) * D + j)] == 0.f);
        }
    CHECK((masked > 0) == L.mask_in);
    auto r1 = r;
    L.backward(x.data(), y.data(), r1.data(), dx.data(), B, c);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            if (!kept(b, t))
                for (int64_t j = 0; j < F; j++) CHECK(dx[(size_t)((b * T + t) * F + j)] == 0.f);
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

/* a seeded model from spec strings, built in place */
static void build(nnl_model &m, std::initializer_list<const char *> specs) {
    m.seed = 1234;
    m.rng.reseed(m.seed);
    m.seeded = true;
    for (const char *s : specs) m.add(s);
}

/* every weight of a into b, layer by layer (the same architecture) */
static void copy_weights(const nnl_model *a, nnl_model *b) {
    REQUIRE(a->layers.size() == b->layers.size());
    for (size_t i = 0; i < a->layers.size(); i++) {
        auto &wa = a->layers[i]->weights, &wb = b->layers[i]->weights;
        REQUIRE(wa.size() == wb.size());
        for (size_t j = 0; j < wa.size(); j++) {
            REQUIRE(wa[j].shape == wb[j].shape);
            std::copy(wa[j].w, wa[j].w + wa[j].shape.size(), wb[j].w);
        }
    }
}

} // namespace bidir

TEST_CASE("Bidirectional with a step mask: gradient check through time behind Masking and Embedding(mask_zero)") {
    const int64_t B = 3, T = 6;
    const char *behind_masking[] = {
        "Bidirectional(LSTM(3, return_sequences=True))",
        "Bidirectional(LSTM(3))",
        "Bidirectional(GRU(3, return_sequences=True), merge_mode='sum')",
        "Bidirectional(GRU(3, reset_after=False), merge_mode='mul')",
        "Bidirectional(SimpleRNN(3, return_sequences=True), merge_mode='ave')",
        "Bidirectional(LSTM(3, go_backwards=True, return_sequences=True), merge_mode='concat')",
    };
    for (const char *s : behind_masking) {
        nnl_model m;
        bidir::build(m, {"Masking(0.0, input_shape=(6, 3))", s});
        nnl::Layer &L = *m.layers[1];
        REQUIRE(L.mask_in);
        bool seq = L.out.rank == 2;
        CHECK(L.mask_out == seq); /* Keras' compute_mask: the mask passes with return_sequences */
        m.ensure_batch(B);
        auto x = random_vec((size_t)(B * T * 3), 41, -1.5f, 1.5f);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                if (bidir::KEEP[b][t] == 0.f) std::fill(&x[(size_t)((b * T + t) * 3)], &x[(size_t)((b * T + t) * 3)] + 3, 0.f);
        std::copy(x.begin(), x.end(), m.act[0]);
        m.forward(B, false, 0);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) CHECK(m.maskbuf[(size_t)(b * T + t)] == bidir::KEEP[b][t]);
        bidir::gradcheck_in(m, 1, std::vector<float>(m.act[1], m.act[1] + B * T * 3), B);
    }
    const char *behind_embedding[] = {
        "Bidirectional(LSTM(3, return_sequences=True), merge_mode='mul')",
        "Bidirectional(GRU(3))",
        "Bidirectional(LSTM(3), merge_mode='ave')",
        "Bidirectional(GRU(3, return_sequences=True))",
    };
    for (const char *s : behind_embedding) {
        nnl_model m;
        bidir::build(m, {"Embedding(7, 3, mask_zero=True, input_shape=(6,))", s});
        REQUIRE(m.layers[1]->mask_in);
        m.ensure_batch(B);
        for (int64_t b = 0; b < B; b++) /* id 0 where masked */
            for (int64_t t = 0; t < T; t++) m.act[0][b * T + t] = bidir::KEEP[b][t] == 0.f ? 0.f : (float)(1 + (b + 2 * t) % 6);
        m.forward(B, false, 0);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) CHECK(m.maskbuf[(size_t)(b * T + t)] == bidir::KEEP[b][t]);
        bidir::gradcheck_in(m, 1, std::vector<float>(m.act[1], m.act[1] + B * T * 3), B);
    }
}

TEST_CASE("Bidirectional with input_shape=(None, F): gradient check through time at lengths 6, 4 and 9") {
    const int64_t B = 3;
    for (const char *s : {"Bidirectional(LSTM(3, return_sequences=True))", "Bidirectional(GRU(3), merge_mode='sum')",
                          "Bidirectional(SimpleRNN(3, return_sequences=True), merge_mode='mul')"})
        for (int64_t T : {6, 4, 9}) {
            nnl_model m;
            bidir::build(m, {"Input(shape=(None, 3))", s});
            m.set_length(T, "test");
            nnl::Layer &L = *m.layers[0];
            REQUIRE(L.in.d[0] == T);
            CHECK(L.var_out == (L.out.rank == 2));
            if (L.out.rank == 2) CHECK(L.out.d[0] == T);
            m.ensure_batch(B);
            bidir::gradcheck_in(m, 0, random_vec((size_t)(B * T * 3), 50 + (unsigned)T, -1.5f, 1.5f), B);
        }
    /* variable length and a mask together: right-padded to 9 (lengths 9, 5, 2) */
    nnl_model m;
    bidir::build(m, {"Masking(0.0, input_shape=(None, 3))", "Bidirectional(LSTM(3, return_sequences=True), merge_mode='ave')"});
    const int64_t T = 9, lens[3] = {9, 5, 2};
    m.set_length(T, "test");
    m.ensure_batch(B);
    auto x = random_vec((size_t)(B * T * 3), 61, -1.5f, 1.5f);
    for (int64_t b = 0; b < B; b++) std::fill(&x[(size_t)((b * T + lens[b]) * 3)], &x[(size_t)((b + 1) * T * 3)], 0.f);
    std::copy(x.begin(), x.end(), m.act[0]);
    m.forward(B, false, 0);
    CHECK(m.maskbuf[(size_t)(1 * T + 4)] == 1.f);
    CHECK(m.maskbuf[(size_t)(1 * T + 5)] == 0.f);
    bidir::gradcheck_in(m, 1, std::vector<float>(m.act[1], m.act[1] + B * T * 3), B);
}

TEST_CASE("Bidirectional with input_shape=(None, F): trained at length 6, predicts at 4 and 9 as fixed-length models") {
    const char *l1 = "Bidirectional(GRU(4, return_sequences=True), merge_mode='sum'", *l2 = "Bidirectional(LSTM(3))";
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 21);
    REQUIRE_MESSAGE(nnl_add(m, (std::string(l1) + ", input_shape=(None, 3))").c_str()) == NNL_OK, nnl_last_error());
    REQUIRE_MESSAGE(nnl_add(m, l2) == NNL_OK, nnl_last_error());
    REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
    int64_t is[8], os[8];
    REQUIRE(nnl_input_shape(m, is) == 2);
    CHECK(is[0] == -1);
    REQUIRE(nnl_output_shape(m, os) == 1);
    CHECK(os[0] == 1);
    CHECK(m->layers[0]->var_out);
    CHECK(!m->layers[1]->var_out);
    std::string sum = m->summary();
    INFO(sum);
    CHECK(sum.find("(None, None, 4)") != std::string::npos);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mse", "") == NNL_OK);
    const int64_t n = 16, T0 = 6;
    auto x = random_vec((size_t)(n * T0 * 3), 71, -1.f, 1.f);
    std::vector<float> y((size_t)n);
    for (int64_t i = 0; i < n; i++) y[(size_t)i] = x[(size_t)(i * T0 * 3)] - x[(size_t)((i + 1) * T0 * 3 - 3)];
    int64_t xs[3] = {n, T0, 3}, ys[2] = {n, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 3;
    o.batch_size = 4;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, nnl_last_error());
    CHECK(nnl_history_epochs(m) == 3);
    for (int64_t T : {4, 9, 6}) {
        INFO("length " << T);
        nnl_model *f = nnl_model_create();
        std::string shape = ", input_shape=(" + std::to_string(T) + ", 3))";
        REQUIRE(nnl_add(f, (std::string(l1) + shape).c_str()) == NNL_OK);
        REQUIRE(nnl_add(f, l2) == NNL_OK);
        REQUIRE(nnl_add(f, "Dense(1)") == NNL_OK);
        bidir::copy_weights(m, f);
        auto xt = random_vec((size_t)(5 * T * 3), 80 + (unsigned)T, -1.f, 1.f);
        CHECK(bidir::predict(m, xt, 5, T, 3) == bidir::predict(f, xt, 5, T, 3));
        nnl_model_free(f);
    }
    /* JSON keeps the variable length ([null, null, 3]) and reads back */
    std::string j = bidir::json_of(m);
    CHECK(j.find("[null, null, 3]") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, nnl_last_error());
    CHECK(back->var_len);
    CHECK(bidir::json_of(back) == j);
    nnl_model_free(back);
    nnl_model_free(m);
}

TEST_CASE("Bidirectional on right-padded sequences (Masking) matches PyTorch's bidirectional layers on "
          "pack_padded_sequence") {
    std::string path = rnnref::find_fixture("bidir_mask_reference.npz", "NNL_BIDIR_MASK_FIXTURE");
    std::string all = refmodel::text(path, "masked_cases");
    std::vector<std::string> cases;
    for (size_t s = 0, e; s < all.size(); s = e + 1) {
        e = all.find('\n', s);
        if (e == std::string::npos) e = all.size();
        cases.push_back(all.substr(s, e - s));
    }
    CHECK(cases.size() == 3);
    auto x = npz_array(path, "x");
    auto lens = refmodel::ints(path, "len");
    const int64_t B = 3, T = 5, F = 3;
    REQUIRE(lens.size() == (size_t)B);
    REQUIRE(x.size() == (size_t)(B * T * F));
    double worst = 0;
    for (auto &c : cases) {
        INFO("case " << c);
        std::string spec = refmodel::text(path, (c + "_spec").c_str());
        nnl_model m;
        bidir::build(m, {"Masking(0.0, input_shape=(5, 3))", spec.c_str()});
        nnl::Layer &L = *m.layers[1];
        REQUIRE(L.mask_in);
        auto w = npz_array(path, (c + "_w").c_str());
        size_t at = 0;
        for (auto &ws : L.weights) {
            REQUIRE(at + (size_t)ws.shape.size() <= w.size());
            std::copy(w.begin() + (ptrdiff_t)at, w.begin() + (ptrdiff_t)(at + (size_t)ws.shape.size()), ws.w);
            at += (size_t)ws.shape.size();
        }
        REQUIRE(at == w.size());
        m.ensure_batch(B);
        std::copy(x.begin(), x.end(), m.act[0]);
        m.forward(B, true, 0);
        for (int64_t b = 0; b < B; b++) /* Masking derived the lengths */
            for (int64_t t = 0; t < T; t++) CHECK(m.maskbuf[(size_t)(b * T + t)] == (t < lens[(size_t)b] ? 1.f : 0.f));
        auto dy = npz_array(path, (c + "_dy").c_str());
        REQUIRE((int64_t)dy.size() == B * L.out.size());
        double ey = refmodel::scaled_diff(m.act[2], npz_array(path, (c + "_y").c_str()));
        std::vector<float> dx(x.size());
        for (auto &ws : L.weights) std::fill(ws.g, ws.g + ws.shape.size(), NAN);
        L.backward(m.act[1], m.act[2], dy.data(), dx.data(), B, nnl::Ctx());
        double edx = refmodel::scaled_diff(dx.data(), npz_array(path, (c + "_dx").c_str()));
        std::vector<float> g;
        for (auto &ws : L.weights) g.insert(g.end(), ws.g, ws.g + ws.shape.size());
        double eg = refmodel::scaled_diff(g.data(), npz_array(path, (c + "_g").c_str()));
        REQUIRE(g.size() == w.size());
        INFO("y " << ey << ", dx " << edx << ", g " << eg);
        CHECK(ey <= RNN_REF_TOL);
        CHECK(edx <= RNN_REF_TOL);
        CHECK(eg <= RNN_REF_TOL);
        worst = std::max({worst, ey, edx, eg});
        /* the check catches a planted bug: the mask ignored (the padding read as steps) */
        L.mask_in = false;
        m.forward(B, true, 0);
        CHECK(refmodel::scaled_diff(m.act[2], npz_array(path, (c + "_y").c_str())) > 100 * RNN_REF_TOL);
    }
    MESSAGE("masked Bidirectional vs PyTorch (packed sequences): worst error " << worst << " of a tensor's norm");
}

TEST_CASE("Embedding(mask_zero=True) -> Bidirectional(LSTM(8)) -> Dense trains; a padded batch equals its sequences "
          "run alone") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 17);
    REQUIRE_MESSAGE(nnl_add(m, "Embedding(10, 4, mask_zero=True, input_shape=(None,))") == NNL_OK, nnl_last_error());
    REQUIRE_MESSAGE(nnl_add(m, "Bidirectional(LSTM(8))") == NNL_OK, nnl_last_error());
    REQUIRE(nnl_add(m, "Dense(1, activation='sigmoid')") == NNL_OK);
    CHECK(m->layers[1]->mask_in);
    CHECK(!m->layers[1]->mask_out);
    CHECK(!m->output_masked());
    /* n sequences of 1..8 ids in 1..9, zero-padded at the end to 8; the
       label: is the first id larger than the last kept one (it needs both
       ends of each sequence, wherever it ends) */
    const int64_t n = 64, T = 8;
    std::vector<int32_t> ids((size_t)(n * T), 0);
    std::vector<float> lab((size_t)n);
    std::vector<int> lens((size_t)n);
    uint32_t st = 12345;
    auto next = [&]() { return st = st * 1664525u + 1013904223u, (int)(st >> 16); };
    for (int64_t i = 0; i < n; i++) {
        int len = 1 + next() % (int)T;
        lens[(size_t)i] = len;
        for (int t = 0; t < len; t++) ids[(size_t)(i * T + t)] = 1 + next() % 9;
        lab[(size_t)i] = ids[(size_t)(i * T)] > ids[(size_t)(i * T + len - 1)] ? 1.f : 0.f;
    }
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.02)", "binary_crossentropy", "accuracy") == NNL_OK);
    int64_t xs[2] = {n, T}, ys[2] = {n, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 20;
    o.batch_size = 16;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit_typed(m, ids.data(), NNL_INT32, 2, xs, lab.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK,
                    nnl_last_error());
    double loss[20];
    REQUIRE(nnl_history_get(m, "loss", loss, 20) == 20);
    MESSAGE("masked Bidirectional(LSTM(8)): loss " << loss[0] << " -> " << loss[19]);
    CHECK(std::isfinite(loss[19]));
    CHECK(loss[19] < 0.7 * loss[0]);
    /* the padded batch against each sequence alone, unpadded; then padded further, to 11 */
    std::vector<float> yp((size_t)n);
    REQUIRE(nnl_predict_typed(m, ids.data(), NNL_INT32, 2, xs, 16, yp.data(), n) == NNL_OK);
    std::vector<int32_t> wide((size_t)(n * 11), 0);
    for (int64_t i = 0; i < n; i++) std::copy(&ids[(size_t)(i * T)], &ids[(size_t)((i + 1) * T)], &wide[(size_t)(i * 11)]);
    std::vector<float> yw((size_t)n);
    int64_t ws[2] = {n, 11};
    REQUIRE(nnl_predict_typed(m, wide.data(), NNL_INT32, 2, ws, 16, yw.data(), n) == NNL_OK);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t s1[2] = {1, lens[(size_t)i]};
        float y1 = 0;
        REQUIRE(nnl_predict_typed(m, &ids[(size_t)(i * T)], NNL_INT32, 2, s1, 1, &y1, 1) == NNL_OK);
        worst = std::max({worst, (double)std::fabs(y1 - yp[(size_t)i]), (double)std::fabs(y1 - yw[(size_t)i])});
    }
    MESSAGE("padded vs alone: largest difference " << worst);
    CHECK(worst <= 1e-6);
    /* without the mask the padding changes the result */
    nnl_model *u = nnl_model_create();
    REQUIRE(nnl_add(u, "Embedding(10, 4, input_shape=(None,))") == NNL_OK);
    REQUIRE(nnl_add(u, "Bidirectional(LSTM(8))") == NNL_OK);
    REQUIRE(nnl_add(u, "Dense(1, activation='sigmoid')") == NNL_OK);
    bidir::copy_weights(m, u);
    std::vector<float> yu((size_t)n);
    REQUIRE(nnl_predict_typed(u, ids.data(), NNL_INT32, 2, xs, 16, yu.data(), n) == NNL_OK);
    double moved = 0;
    for (int64_t i = 0; i < n; i++) moved = std::max(moved, (double)std::fabs(yu[(size_t)i] - yp[(size_t)i]));
    CHECK(moved > 1e-3);
    nnl_model_free(u);
    nnl_model_free(m);
}

TEST_CASE("Bidirectional and masks: the mask passes on with return_sequences; zero_output_for_mask forced, written "
          "as given") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Masking(0.0, input_shape=(None, 3))") == NNL_OK);
    REQUIRE_MESSAGE(nnl_add(m, "Bidirectional(GRU(4, return_sequences=True))") == NNL_OK, nnl_last_error());
    REQUIRE_MESSAGE(nnl_add(m, "Bidirectional(LSTM(3, return_sequences=True), merge_mode='sum')") == NNL_OK,
                    nnl_last_error());
    REQUIRE(nnl_add(m, "Dense(2)") == NNL_OK);
    CHECK(m->layers[1]->mask_out);
    CHECK(m->layers[2]->mask_in);
    CHECK(m->output_masked()); /* the loss skips the masked steps, as behind Keras' Bidirectional */
    for (size_t i = 1; i <= 2; i++) {
        auto *b = dynamic_cast<nnl::Bidirectional *>(m->layers[i].get());
        REQUIRE(b);
        CHECK(b->fw->zero_output_for_mask);
        CHECK(b->bw->zero_output_for_mask);
    }
    /* tf.keras 2.x writes the wrapped layer as given: no forced key */
    std::string j = bidir::json_of(m);
    CHECK(j.find("zero_output_for_mask") == std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, nnl_last_error());
    CHECK(bidir::json_of(back) == j);
    CHECK(back->output_masked());
    nnl_model_free(back);
    /* without return_sequences the mask ends there, and the key is forced off */
    REQUIRE(nnl_add(m, "Bidirectional(LSTM(2, zero_output_for_mask=True))") == NNL_OK);
    auto *last = dynamic_cast<nnl::Bidirectional *>(m->layers.back().get());
    REQUIRE(last);
    CHECK(!last->fw->zero_output_for_mask);
    CHECK(!last->mask_out);
    CHECK(!m->output_masked());
    CHECK(bidir::json_of(m).find("\"zero_output_for_mask\": true") != std::string::npos); /* as given */
    /* Keras 3 writes its copies with the forced key: a backward_layer that differs from the mirror only there is the
       mirror */
    nnl_model *e = nnl_model_create();
    CHECK(nnl_add(e, "Bidirectional(LSTM(4, return_sequences=True, zero_output_for_mask=True), backward_layer="
                     "LSTM(4, return_sequences=True, go_backwards=True), input_shape=(3, 2))") == NNL_OK);
    nnl_model_free(e);
    nnl_model_free(m);
}
