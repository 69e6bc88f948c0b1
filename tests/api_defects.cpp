/* Regression tests of the defects of issue 11 (section 1), through the C ABI:
   the weight list with BatchNormalization, metrics against the labels the
   loss takes, sizes that overflow, deeply nested spec strings, many-layer
   JSON, non-finite input to evaluate/predict. make test also runs these under
   ASan + UBSan (check-sanitize): every case below must fail cleanly there. */
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../nnlite.h"

static std::string err() { return nnl_last_error(); }
static bool has(const std::string &s, const char *part) { return s.find(part) != std::string::npos; }

static int64_t weight_size(const nnl_model *m, int i) {
    int rank = 0;
    int64_t shape[NNL_MAX_RANK];
    REQUIRE(nnl_weight_info(m, i, nullptr, 0, &rank, shape) == NNL_OK);
    int64_t n = 1;
    for (int k = 0; k < rank; k++) n *= shape[k];
    return n;
}

static std::vector<float> get(const nnl_model *m, int i) {
    std::vector<float> w((size_t)weight_size(m, i));
    REQUIRE(nnl_get_weight(m, i, w.data(), (int64_t)w.size()) == NNL_OK);
    return w;
}

/* Dense-BatchNormalization-Dense: 8 tensors, the last two after the moving statistics */
static nnl_model *dense_bn_dense(uint64_t seed) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, seed) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(4, activation='relu', input_shape=(3,))") == NNL_OK);
    REQUIRE(nnl_add(m, "BatchNormalization()") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2)") == NNL_OK);
    return m;
}

TEST_CASE("weight list: every tensor of Dense-BatchNormalization-Dense, trainable flags and Keras' counts") {
    nnl_model *m = dense_bn_dense(4);
    REQUIRE(nnl_weight_count(m) == 8);
    const char *names[8] = {"dense/kernel",
                            "dense/bias",
                            "batch_normalization/gamma",
                            "batch_normalization/beta",
                            "batch_normalization/moving_mean",
                            "batch_normalization/moving_variance",
                            "dense_1/kernel",
                            "dense_1/bias"};
    const int trainable[8] = {1, 1, 1, 1, 0, 0, 1, 1};
    const int64_t sizes[8] = {12, 4, 4, 4, 4, 4, 8, 2};
    for (int i = 0; i < 8; i++) {
        char name[64];
        REQUIRE(nnl_weight_info(m, i, name, sizeof name, nullptr, nullptr) == NNL_OK);
        CHECK(std::string(name) == names[i]);
        int t = -1;
        REQUIRE(nnl_weight_trainable(m, i, &t) == NNL_OK);
        CHECK(t == trainable[i]);
        CHECK(weight_size(m, i) == sizes[i]);
    }
    /* Keras' summary: Total 42, Trainable 34, Non-trainable 8 */
    CHECK(nnl_param_count(m) == 42);
    CHECK(nnl_trainable_param_count(m) == 34);
    CHECK(nnl_non_trainable_param_count(m) == 8);
    char buf[4096];
    REQUIRE(nnl_summary_string(m, buf, sizeof buf) > 0);
    CHECK(has(buf, "Total params: 42 "));
    CHECK(has(buf, "Trainable params: 34 "));
    CHECK(has(buf, "Non-trainable params: 8 "));

    /* indices 6 and 7 are the last Dense: zero kernel and bias (1, 2) fix its output */
    std::vector<float> zero(8, 0.f), b = {1.f, 2.f};
    REQUIRE(nnl_set_weight(m, 6, zero.data(), 8) == NNL_OK);
    REQUIRE(nnl_set_weight(m, 7, b.data(), 2) == NNL_OK);
    float x[3] = {0.5f, -1.f, 2.f}, p[2];
    int64_t xs[2] = {1, 3};
    REQUIRE(nnl_predict(m, x, 2, xs, 1, p, 2) == NNL_OK);
    CHECK(p[0] == 1.f);
    CHECK(p[1] == 2.f);

    /* the full list moves to a model of the same architecture: same predictions */
    std::vector<float> mv = {3.f, 1.f, 0.5f, 2.f};
    REQUIRE(nnl_set_weight(m, 5, mv.data(), 4) == NNL_OK); /* a non-trainable tensor is settable too */
    nnl_model *m2 = dense_bn_dense(99);
    for (int i = 0; i < nnl_weight_count(m); i++) {
        std::vector<float> w = get(m, i);
        REQUIRE(nnl_set_weight(m2, i, w.data(), (int64_t)w.size()) == NNL_OK);
        CHECK(get(m2, i) == w);
    }
    std::vector<float> xx = {0.5f, -1.f, 2.f, 1.f, 1.f, -3.f}, p1(4), p2(4);
    int64_t xxs[2] = {2, 3};
    CHECK(nnl_set_weight(m, 6, get(m2, 0).data(), 12) == NNL_ERR_SHAPE); /* 12 values into 8: refused */
    REQUIRE(nnl_predict(m, xx.data(), 2, xxs, 2, p1.data(), 4) == NNL_OK);
    REQUIRE(nnl_predict(m2, xx.data(), 2, xxs, 2, p2.data(), 4) == NNL_OK);
    CHECK(p1 == p2);

    /* out of range and bad arguments: errors naming the call */
    int t;
    float w8[4];
    CHECK(nnl_get_weight(m, 8, w8, 4) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nnl_get_weight: weight index 8 is out of range (the model has 8"));
    CHECK(nnl_weight_trainable(m, 8, &t) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nnl_weight_trainable"));
    CHECK(nnl_weight_trainable(m, -1, &t) == NNL_ERR_ARGUMENT);
    CHECK(nnl_weight_trainable(m, 0, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_weight_trainable(nullptr, 0, &t) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nnl_weight_trainable: model handle is NULL"));
    CHECK(nnl_weight_info(nullptr, 0, nullptr, 0, nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nnl_weight_info"));
    CHECK(nnl_weight_count(nullptr) == 0);
    CHECK(nnl_trainable_param_count(nullptr) == 0);
    CHECK(nnl_non_trainable_param_count(nullptr) == 0);

    /* training moves the moving statistics but the optimizer leaves them alone:
       the counts stay, and the optimizer's state covers the trainable 34 */
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mse", "mae") == NNL_OK);
    std::vector<float> y = {1.f, 0.f, 0.f, 1.f};
    int64_t ys[2] = {2, 2};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.epochs = 2;
    REQUIRE(nnl_fit(m, xx.data(), 2, xxs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(get(m, 5) != mv);
    CHECK(nnl_trainable_param_count(m) + nnl_non_trainable_param_count(m) == nnl_param_count(m));
    nnl_model_free(m);
    nnl_model_free(m2);
}

TEST_CASE("a failed nnl_add leaves the model as it was") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(4, input_shape=(3,))") == NNL_OK);
    CHECK(nnl_add(m, "Dense(5, kernel_initializer='nosuch')") == NNL_ERR_ARGUMENT);
    CHECK(nnl_layer_count(m) == 1);
    CHECK(nnl_weight_count(m) == 2);
    CHECK(nnl_param_count(m) == 16);
    REQUIRE(nnl_add(m, "Dense(5)") == NNL_OK);
    char name[64];
    REQUIRE(nnl_weight_info(m, 2, name, sizeof name, nullptr, nullptr) == NNL_OK);
    CHECK(std::string(name) == "dense_1/kernel"); /* the failed layer took no name */
    CHECK(nnl_param_count(m) == 16 + 25);
    nnl_model_free(m);
}

/* ---- metrics x losses ------------------------------------------------------ */

struct LossCase {
    const char *spec, *canonical, *act;
    bool sparse, logits, bce;
};

static double ref_metric(const std::string &metric, const LossCase &L, const std::vector<float> &p,
                         const std::vector<float> &t, const std::vector<int32_t> &labels, int B, int C) {
    auto true_class = [&](int b) {
        if (L.sparse) return (int)labels[(size_t)b];
        const float *r = &t[(size_t)(b * C)];
        return (int)(std::max_element(r, r + C) - r);
    };
    auto argmax = [&](int b) {
        const float *r = &p[(size_t)(b * C)];
        return (int)(std::max_element(r, r + C) - r);
    };
    std::string m = metric;
    if (m == "accuracy" || m == "acc") m = L.sparse ? "sparse_categorical_accuracy" : L.bce ? "binary_accuracy"
                                                                                            : "categorical_accuracy";
    double s = 0;
    if (m == "sparse_categorical_accuracy" || m == "categorical_accuracy") {
        for (int b = 0; b < B; b++) s += argmax(b) == true_class(b);
        return s / B;
    }
    if (m.find("top_k") != std::string::npos) { /* k = 2: fewer than 2 classes score higher */
        for (int b = 0; b < B; b++) {
            int c = true_class(b), above = 0;
            for (int j = 0; j < C; j++) above += p[(size_t)(b * C + j)] > p[(size_t)(b * C + c)];
            s += above < 2;
        }
        return s / B;
    }
    float thr = L.bce && L.logits ? 0.f : 0.5f;
    for (int i = 0; i < B * C; i++) {
        double e = (double)p[(size_t)i] - t[(size_t)i];
        if (m == "binary_accuracy") s += (p[(size_t)i] > thr) == (t[(size_t)i] > 0.5f);
        else if (m == "mse" || m == "mean_squared_error") s += e * e;
        else s += std::fabs(e);
    }
    return s / (B * C);
}

TEST_CASE("every metric with every loss: refused at compile or computed from the labels the loss takes") {
    const LossCase losses[] = {
        {"sparse_categorical_crossentropy", "sparse_categorical_crossentropy", "softmax", true, false, false},
        {"sparse_categorical_crossentropy(from_logits=True)", "sparse_categorical_crossentropy", "linear", true,
         true, false},
        {"categorical_crossentropy", "categorical_crossentropy", "softmax", false, false, false},
        {"categorical_crossentropy(from_logits=True)", "categorical_crossentropy", "linear", false, true, false},
        {"binary_crossentropy", "binary_crossentropy", "sigmoid", false, false, true},
        {"binary_crossentropy(from_logits=True)", "binary_crossentropy", "linear", false, true, true},
        {"mse", "mean_squared_error", "linear", false, false, false},
        {"mean_absolute_error", "mean_absolute_error", "linear", false, false, false},
        {"huber(delta=0.5)", "huber", "tanh", false, false, false},
    };
    const char *metrics[] = {"accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy",
                             "binary_accuracy", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
                             "mse", "mae", "mean_squared_error", "mean_absolute_error"};
    const int B = 7, C = 3;
    std::vector<float> x((size_t)(B * 2)), t((size_t)(B * C), 0.f);
    std::vector<int32_t> labels((size_t)B);
    for (int b = 0; b < B; b++) {
        x[(size_t)(2 * b)] = (float)std::sin(b + 1.0) * 2;
        x[(size_t)(2 * b + 1)] = (float)std::cos(3.0 * b) * 2;
        labels[(size_t)b] = (b * 5 + 1) % C;
        t[(size_t)(b * C + labels[(size_t)b])] = 1.f;
    }
    int64_t xs[2] = {B, 2}, ts[2] = {B, C}, ls[1] = {B};
    int refused = 0, computed = 0;
    for (const LossCase &L : losses)
        for (const char *metric : metrics) {
            std::string mname = metric;
            std::string spec = mname.find("top_k") != std::string::npos ? mname + "(k=2)" : mname;
            std::string lspec = L.spec;
            CAPTURE(lspec);
            CAPTURE(mname);
            nnl_model *m = nnl_model_create();
            REQUIRE(nnl_model_set_seed(m, 11) == NNL_OK);
            std::string layer = std::string("Dense(3, activation='") + L.act + "', input_shape=(2,))";
            REQUIRE(nnl_add(m, layer.c_str()) == NNL_OK);
            bool wants_ids = mname == "sparse_categorical_accuracy" || mname == "sparse_top_k_categorical_accuracy";
            bool any = mname == "accuracy" || mname == "acc";
            int rc = nnl_compile(m, "sgd", L.spec, spec.c_str());
            if (!any && wants_ids != L.sparse) {
                refused++;
                CHECK(rc == NNL_ERR_ARGUMENT);
                std::string e = err();
                CHECK(has(e, "nnl_compile: metric '"));
                CHECK(has(e, metric));
                CHECK(has(e, L.canonical));
                nnl_model_free(m);
                continue;
            }
            computed++;
            REQUIRE_MESSAGE(rc == NNL_OK, err());
            /* the labels exactly as large as the loss wants: class ids (B,) or rows (B, C) */
            std::vector<int32_t> y_ids(labels);
            std::vector<float> y_rows(t);
            double out[2] = {NAN, NAN};
            if (L.sparse)
                REQUIRE_MESSAGE(nnl_evaluate(m, x.data(), 2, xs, y_ids.data(), NNL_INT32, 1, ls, 3, out, 2) == NNL_OK,
                                err());
            else
                REQUIRE_MESSAGE(nnl_evaluate(m, x.data(), 2, xs, y_rows.data(), NNL_FLOAT32, 2, ts, 3, out, 2) ==
                                    NNL_OK,
                                err());
            std::vector<float> p((size_t)(B * C));
            REQUIRE(nnl_predict(m, x.data(), 2, xs, 3, p.data(), (int64_t)p.size()) == NNL_OK);
            CHECK(std::isfinite(out[0]));
            CHECK(out[1] == doctest::Approx(ref_metric(mname, L, p, t, labels, B, C)).epsilon(1e-5));
            /* and one epoch of training reads them the same way */
            nnl_fit_options o;
            nnl_fit_options_init(&o);
            o.verbose = 0;
            o.batch_size = 4;
            if (L.sparse)
                CHECK(nnl_fit(m, x.data(), 2, xs, y_ids.data(), NNL_INT32, 1, ls, &o) == NNL_OK);
            else
                CHECK(nnl_fit(m, x.data(), 2, xs, y_rows.data(), NNL_FLOAT32, 2, ts, &o) == NNL_OK);
            nnl_model_free(m);
        }
    CHECK(refused == 2 * 7 + 7 * 2); /* sparse losses x 7 full-target metrics, other losses x 2 sparse ones */
    CHECK(computed == 9 * 11 - refused);
}

/* ---- sizes that overflow ----------------------------------------------------- */

TEST_CASE("sizes that overflow int64 are refused naming the call, never a crash") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(3, activation='softmax', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_compile(m, "sgd", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    float x[8] = {0, 1, 2, 3, 4, 5, 6, 7}, p[12];
    int32_t y[4] = {0, 1, 2, 0}, cls[4];
    double out[2];
    int64_t huge[2] = {(int64_t)1 << 62, 2}, ys[1] = {(int64_t)1 << 62};
    CHECK(nnl_predict(m, x, 2, huge, 4, p, INT64_MAX) == NNL_ERR_SHAPE);
    CHECK(has(err(), "nnl_predict: x of shape (4611686018427387904, 2)"));
    CHECK(nnl_predict_classes(m, x, 2, huge, 4, cls, INT64_MAX) == NNL_ERR_SHAPE);
    CHECK(has(err(), "nnl_predict_classes: x"));
    CHECK(nnl_evaluate(m, x, 2, huge, y, NNL_INT32, 1, ys, 4, out, 2) == NNL_ERR_SHAPE);
    CHECK(has(err(), "nnl_evaluate: x"));
    CHECK(nnl_fit(m, x, 2, huge, y, NNL_INT32, 1, ys, nullptr) == NNL_ERR_SHAPE);
    CHECK(has(err(), "nnl_fit: x"));
    /* per-sample dimensions whose product overflows, in x and in y */
    int64_t x4[4] = {4, (int64_t)1 << 32, (int64_t)1 << 32, 2};
    CHECK(nnl_predict(m, x, 4, x4, 4, p, 12) == NNL_ERR_SHAPE);
    int64_t xs[2] = {4, 2}, y3[3] = {4, (int64_t)1 << 40, (int64_t)1 << 40};
    CHECK(nnl_evaluate(m, x, 2, xs, y, NNL_INT32, 3, y3, 4, out, 2) == NNL_ERR_SHAPE);
    CHECK(has(err(), "nnl_evaluate: y"));
    int64_t yneg[2] = {4, -1};
    CHECK(nnl_evaluate(m, x, 2, xs, y, NNL_INT32, 2, yneg, 4, out, 2) == NNL_ERR_SHAPE);
    /* a sample count times the output size beyond int64 */
    int64_t many[2] = {(int64_t)1 << 61, 2};
    CHECK(nnl_predict(m, x, 2, many, 4, p, INT64_MAX) == NNL_ERR_SHAPE);
    nnl_model_free(m);

    /* shapes from spec strings */
    m = nnl_model_create();
    CHECK(nnl_add(m, "Input(shape=(4294967296, 4294967296))") == NNL_ERR_SHAPE);
    CHECK(has(err(), "more than 2^40 values"));
    int64_t big[2] = {(int64_t)1 << 32, (int64_t)1 << 32};
    CHECK(nnl_add_input(m, 2, big) == NNL_ERR_SHAPE);
    CHECK(nnl_add(m, "Dense(2, input_shape=(1e300,))") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "Dense(2, input_shape=(inf,))") == NNL_ERR_ARGUMENT);
    CHECK(nnl_layer_count(m) == 0);
    REQUIRE(nnl_add(m, "Input(shape=(4,))") == NNL_OK);
    CHECK(nnl_add(m, "Reshape((4294967296, 4294967296, 4294967296, -1))") == NNL_ERR_SHAPE);
    CHECK(has(err(), "Reshape"));
    CHECK(nnl_add(m, "Reshape((4294967296, 4294967296))") == NNL_ERR_SHAPE);
    CHECK(nnl_add(m, "Reshape((1e19, -1))") == NNL_ERR_ARGUMENT);
    int64_t r3[3] = {(int64_t)1 << 31, (int64_t)1 << 31, 2};
    CHECK(nnl_add_reshape(m, 3, r3) == NNL_ERR_SHAPE);
    CHECK(nnl_layer_count(m) == 0);
    REQUIRE(nnl_add(m, "Reshape((2, 2))") == NNL_OK);
    nnl_model_free(m);

    /* layers whose output or weights would overflow */
    m = nnl_model_create();
    REQUIRE(nnl_add(m, "Input(shape=(1048576, 1048576))") == NNL_OK); /* 2^40 values: the most allowed */
    CHECK(nnl_add(m, "Dense(134217727)") == NNL_ERR_SHAPE);           /* 2^20 x 2^27 outputs, 2^47 weights */
    CHECK(has(err(), "Dense"));
    CHECK(nnl_layer_count(m) == 0);
    nnl_model_free(m);
    m = nnl_model_create();
    REQUIRE(nnl_add(m, "Input(shape=(1048576, 524288, 2))") == NNL_OK);
    CHECK(nnl_add(m, "UpSampling2D(size=(8388607, 8388607))") == NNL_ERR_SHAPE);
    CHECK(has(err(), "UpSampling2D"));
    nnl_model_free(m);
    m = nnl_model_create();
    REQUIRE(nnl_add(m, "Input(shape=(2, 2, 2, 1))") == NNL_OK);
    CHECK(nnl_add(m, "Conv3D(1, kernel_size=(8388607, 8388607, 8388607), padding='same')") == NNL_ERR_SHAPE);
    CHECK(has(err(), "Conv3D"));
    CHECK(nnl_add(m, "Conv3D(8, kernel_size=(3, 3, 3), padding='same')") == NNL_OK);
    nnl_model_free(m);

    /* a batch too large to address: refused before allocating (x is real: 2^18 + 1 samples) */
    m = nnl_model_create();
    REQUIRE(nnl_add(m, "Input(shape=(1, 1, 1))") == NNL_OK);
    REQUIRE(nnl_add(m, "UpSampling2D(size=(1048576, 1048576))") == NNL_OK); /* 2^40 outputs a sample */
    const int64_t n = ((int64_t)1 << 18) + 1;
    std::vector<float> xb((size_t)n, 1.f);
    int64_t xbs[4] = {n, 1, 1, 1};
    CHECK(nnl_predict(m, xb.data(), 4, xbs, 1 << 20, p, INT64_MAX) == NNL_ERR_MEMORY);
    CHECK(has(err(), "nnl_predict: a batch of 262145 samples"));
    std::vector<int32_t> c((size_t)n);
    CHECK(nnl_predict_classes(m, xb.data(), 4, xbs, 1 << 20, c.data(), n) == NNL_ERR_MEMORY);
    CHECK(has(err(), "nnl_predict_classes: a batch"));
    nnl_model_free(m);
}

/* ---- spec strings nested too deeply ------------------------------------------- */

TEST_CASE("spec strings nest at most 64 levels: deeper is an error, not a stack overflow") {
    nnl_model *m = nnl_model_create();
    std::string deep = "Dense(4, input_shape=" + std::string(50000, '(') + "2" + std::string(50000, ')') + ")";
    CHECK(nnl_add(m, deep.c_str()) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nested deeper than 64 levels"));
    CHECK(err().size() < 600); /* the message quotes the start of the string only */
    std::string open_only = "Dense(" + std::string(50000, '[');
    CHECK(nnl_add(m, open_only.c_str()) == NNL_ERR_ARGUMENT);
    for (const char *o : {"Adam(beta_1=" , "SGD("}) { /* optimizer, loss and metrics go through the same parser */
        std::string s = std::string(o) + std::string(1000, '(') + ")";
        CHECK(nnl_compile(m, s.c_str(), "mse", "") != NNL_OK);
    }
    /* 64 levels parse (the shape is then wrong, which is another error) */
    std::string ok64 = "Dense(4, input_shape=" + std::string(63, '(') + "(2,)" + std::string(63, ')') + ")";
    CHECK(nnl_add(m, ok64.c_str()) == NNL_ERR_ARGUMENT);
    CHECK(!has(err(), "nested"));
    std::string bad65 = "Dense(4, input_shape=" + std::string(64, '(') + "(2,)" + std::string(64, ')') + ")";
    CHECK(nnl_add(m, bad65.c_str()) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "nested"));
    REQUIRE(nnl_add(m, "Dense(4, input_shape=(2,))") == NNL_OK);
    nnl_model_free(m);
}

/* ---- many-layer JSON ------------------------------------------------------------ */

static std::string chain_json(int dense_layers, bool names) {
    std::string j = "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"s\", \"layers\": ["
                    "{\"class_name\": \"InputLayer\", \"config\": {\"batch_input_shape\": [null, 3]}}";
    for (int i = 0; i < dense_layers; i++) {
        j += ", {\"class_name\": \"Dense\", \"config\": {";
        if (names) j += "\"name\": \"d" + std::to_string(i) + "\", ";
        j += "\"units\": 3, \"activation\": \"tanh\"}}";
    }
    return j + "]}}";
}

TEST_CASE("many-layer JSON loads correctly, and the layer count is bounded") {
    std::string j = chain_json(1000, true);
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &m) == NNL_OK, err());
    CHECK(nnl_layer_count(m) == 1000);
    CHECK(nnl_weight_count(m) == 2000);
    CHECK(nnl_param_count(m) == 1000 * 12);
    char name[32];
    REQUIRE(nnl_weight_info(m, 1999, name, sizeof name, nullptr, nullptr) == NNL_OK);
    CHECK(std::string(name) == "d999/bias");
    /* the whole chain computes: weights set to identity kernels and zero biases give tanh^1000(x) */
    std::vector<float> eye = {1, 0, 0, 0, 1, 0, 0, 0, 1}, zero(3, 0.f);
    for (int i = 0; i < 1000; i++) {
        REQUIRE(nnl_set_weight(m, 2 * i, eye.data(), 9) == NNL_OK);
        REQUIRE(nnl_set_weight(m, 2 * i + 1, zero.data(), 3) == NNL_OK);
    }
    float x[3] = {0.1f, -0.2f, 0.f}, p[3];
    int64_t xs[2] = {1, 3};
    REQUIRE(nnl_predict(m, x, 2, xs, 1, p, 3) == NNL_OK);
    double v = 0.1, u = -0.2;
    for (int i = 0; i < 1000; i++) v = std::tanh(v), u = std::tanh(u);
    CHECK(p[0] == doctest::Approx(v).epsilon(1e-3));
    CHECK(p[1] == doctest::Approx(u).epsilon(1e-3));
    CHECK(p[2] == 0.f);
    /* the text round-trips */
    int64_t len = nnl_model_to_json(m, nullptr, 0);
    std::string back((size_t)len + 1, '\0');
    REQUIRE(nnl_model_to_json(m, &back[0], len + 1) == len);
    back.resize((size_t)len);
    nnl_model *m2 = nullptr;
    REQUIRE(nnl_model_from_json(back.c_str(), &m2) == NNL_OK);
    CHECK(nnl_layer_count(m2) == 1000);
    nnl_model_free(m2);
    nnl_model_free(m);

    /* duplicate names are still found among many */
    std::string dup = chain_json(50, true);
    size_t at = dup.find("\"d49\"");
    REQUIRE(at != std::string::npos);
    dup.replace(at, 5, "\"d17\"");
    CHECK(nnl_model_from_json(dup.c_str(), &m) == NNL_ERR_ARGUMENT);
    CHECK(has(err(), "'d17' exists already"));
    CHECK(m == nullptr);

    /* more layers than NNL_MAX_LAYERS: refused before any is read (here they are
       empty objects, each an error of its own: the count comes first) */
    std::string many = "{\"class_name\": \"Sequential\", \"config\": {\"layers\": ["
                       "{\"class_name\": \"InputLayer\", \"config\": {\"batch_input_shape\": [null, 3]}}";
    for (int i = 0; i < 65537; i++) many += ", {}";
    many += "]}}";
    CHECK(nnl_model_from_json(many.c_str(), &m) == NNL_ERR_MEMORY);
    CHECK(has(err(), "65537 layers"));
    CHECK(has(err(), "NNL_MAX_LAYERS"));
    CHECK(m == nullptr);
}

/* ---- non-finite input ------------------------------------------------------------- */

TEST_CASE("evaluate, predict and predict_classes refuse non-finite input as fit does; a NaN row has no class") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 2) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(3, activation='softmax', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_compile(m, "sgd", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    float x[8] = {0, 1, 2, 3, NAN, 1, 1, 1};
    int32_t y[4] = {0, 1, 2, 0};
    int64_t xs[2] = {4, 2}, ys[1] = {4};
    double out[2] = {-1, -1};
    CHECK(nnl_evaluate(m, x, 2, xs, y, NNL_INT32, 1, ys, 4, out, 2) == NNL_ERR_NUMERIC);
    CHECK(has(err(), "nnl_evaluate: x: sample 2 holds a non-finite value"));
    CHECK(out[0] == -1); /* nothing written */
    CHECK(nnl_fit(m, x, 2, xs, y, NNL_INT32, 1, ys, nullptr) == NNL_ERR_NUMERIC);
    CHECK(has(err(), "nnl_fit: x: sample 2"));
    float p[12];
    for (float &v : p) v = -7.f;
    x[4] = 1.f;
    x[7] = -INFINITY;
    CHECK(nnl_predict(m, x, 2, xs, 2, p, 12) == NNL_ERR_NUMERIC);
    CHECK(has(err(), "nnl_predict: x: sample 3"));
    CHECK(p[0] == -7.f);
    int32_t cls[4] = {-9, -9, -9, -9};
    CHECK(nnl_predict_classes(m, x, 2, xs, 2, cls, 4) == NNL_ERR_NUMERIC);
    CHECK(has(err(), "nnl_predict_classes: x: sample 3"));
    CHECK(cls[0] == -9);
    x[7] = 1.f;
    REQUIRE(nnl_evaluate(m, x, 2, xs, y, NNL_INT32, 1, ys, 4, out, 2) == NNL_OK);
    CHECK(std::isfinite(out[0]));
    REQUIRE(nnl_predict_classes(m, x, 2, xs, 2, cls, 4) == NNL_OK);
    nnl_model_free(m);

    /* finite input, NaN output: a product overflows to inf, and inf - inf is NaN */
    for (int units : {2, 1}) {
        CAPTURE(units);
        m = nnl_model_create();
        REQUIRE(nnl_add(m, "Dense(2, input_shape=(2,))") == NNL_OK);
        REQUIRE(nnl_add(m, units == 2 ? "Dense(2)" : "Dense(1)") == NNL_OK);
        std::vector<float> k0(4, 3e38f);
        REQUIRE(nnl_set_weight(m, 0, k0.data(), 4) == NNL_OK);
        std::vector<float> k(2 * (size_t)units, 1.f);
        k[(size_t)units] = -1.f; /* row 1 of the (2, units) kernel: out_0 = h_0 - h_1 */
        if (units == 2) k[3] = -1.f;
        REQUIRE(nnl_set_weight(m, 2, k.data(), (int64_t)k.size()) == NNL_OK);
        float xn[4] = {0.1f, 0.2f, 10.f, 10.f}; /* sample 1: 10 * 3e38 = inf in float32 */
        int64_t xns[2] = {2, 2};
        std::vector<float> pn(2 * (size_t)units);
        REQUIRE(nnl_predict(m, xn, 2, xns, 2, pn.data(), (int64_t)pn.size()) == NNL_OK);
        CHECK(std::isfinite(pn[0]));
        CHECK(std::isnan(pn[(size_t)units]));
        int32_t c2[2] = {-9, -9};
        CHECK(nnl_predict_classes(m, xn, 2, xns, 2, c2, 2) == NNL_ERR_NUMERIC);
        CHECK(has(err(), "nnl_predict_classes: the prediction for sample 1 is NaN"));
        CHECK(c2[0] == -9);
        nnl_model_free(m);
    }
}

/* A host program that set a comma locale (setlocale(LC_ALL, "") in de_DE)
   must not change what spec strings mean or what nnlite writes. make
   check-api builds a de_DE locale with localedef into build/locale and runs
   with LOCPATH there and NNL_TEST_COMMA_LOCALE=de_DE.UTF-8; without one the
   test says it was skipped. */
#include <clocale>
#include <cstdlib>
TEST_CASE("a comma LC_NUMERIC in the host program changes no spec string, JSON or message") {
    const char *names[] = {getenv("NNL_TEST_COMMA_LOCALE"), "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8"};
    const char *got = nullptr;
    for (const char *n : names)
        if (n && setlocale(LC_NUMERIC, n)) {
            got = n;
            break;
        }
    char probe[16];
    snprintf(probe, sizeof probe, "%.1f", 0.5);
    if (!got || std::string(probe) != "0,5") {
        setlocale(LC_NUMERIC, "C");
        MESSAGE("no comma locale available: skipped (make check-api makes one with localedef)");
        return;
    }
    nnl_model *m = nnl_model_create();
    CHECK(nnl_add(m, "Dense(4, activation='relu', input_shape=(3,), "
                     "kernel_initializer=\"VarianceScaling(scale=0.5, mode='fan_in')\")") == NNL_OK);
    CHECK(nnl_add_dropout(m, 0.25f) == NNL_OK);
    CHECK(nnl_add(m, "Dense(2, activation='softmax')") == NNL_OK);
    CHECK(nnl_compile(m, "Adam(learning_rate=0.0015, beta_1=0.85)", "sparse_categorical_crossentropy",
                      "accuracy") == NNL_OK);
    CHECK(nnl_get_learning_rate(m) == doctest::Approx(0.0015).epsilon(1e-12));
    std::vector<char> js((size_t)nnl_model_to_json(m, nullptr, 0) + 1);
    nnl_model_to_json(m, js.data(), (int64_t)js.size());
    std::string j(js.data());
    CHECK(has(j, "\"rate\": 0.25"));
    CHECK(has(j, "\"scale\": 0.5"));
    CHECK(!has(j, "0,25"));
    nnl_model *back = nullptr;
    CHECK(nnl_model_from_json(j.c_str(), &back) == NNL_OK);
    float x[6] = {0.5f, 1.5f, -1, 2, 0.25f, 0}, y[2] = {0, 1};
    int64_t xs[2] = {2, 3}, ys[1] = {2};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.epochs = 2;
    CHECK(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 1, ys, &o) == NNL_OK);
    nnl_model_free(back);
    nnl_model_free(m);
    setlocale(LC_NUMERIC, "C");
}
