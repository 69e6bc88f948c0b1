/* The C ABI as a user sees it: models, training, errors. Linked against the
   library; uses nnlite.h only. */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "../nnlite.h"

static std::string err() { return nnl_last_error(); }

/* y = class of the quadrant of (x0, x1): a small separable 4-class problem */
static void quadrants(int n, std::vector<float> &x, std::vector<int32_t> &y, unsigned seed) {
    x.resize((size_t)n * 2);
    y.resize((size_t)n);
    uint64_t s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < 2; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[(size_t)(2 * i + j)] = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
        }
        y[(size_t)i] = (x[(size_t)(2 * i)] > 0) * 2 + (x[(size_t)(2 * i + 1)] > 0);
    }
}

static nnl_model *quadrant_model(uint64_t seed, const char *opt = "Adam(learning_rate=0.01)") {
    nnl_model *m = nnl_model_create();
    REQUIRE(m);
    REQUIRE(nnl_model_set_seed(m, seed) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(16, activation='relu', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(4, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, opt, "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    return m;
}

TEST_CASE("version macros agree with the library") {
    CHECK(std::string(nnl_version()) == NNL_VERSION_STRING);
    CHECK(nnl_version_number() == NNL_VERSION_NUMBER);
    CHECK(std::string(nnl_status_string(NNL_ERR_SHAPE)) == "NNL_ERR_SHAPE");
    CHECK(std::string(nnl_status_string(12345)) == "NNL_UNKNOWN_STATUS");
}

TEST_CASE("NULL handles and pointers give errors with messages, never crashes") {
    float x[2] = {0, 0};
    int64_t s[2] = {1, 2};
    double out[2];
    CHECK(nnl_add(nullptr, "Dense(1)") == NNL_ERR_ARGUMENT);
    CHECK(!err().empty());
    CHECK(nnl_add_dense(nullptr, 3, "relu") == NNL_ERR_ARGUMENT);
    CHECK(nnl_compile(nullptr, "adam", "mse", nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_fit(nullptr, x, 2, s, x, NNL_FLOAT32, 2, s, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_evaluate(nullptr, x, 2, s, x, NNL_FLOAT32, 2, s, 0, out, 2) == NNL_ERR_ARGUMENT);
    CHECK(nnl_predict(nullptr, x, 2, s, 0, x, 2) == NNL_ERR_ARGUMENT);
    CHECK(nnl_summary(nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_summary_string(nullptr, nullptr, 0) == -1);
    CHECK(nnl_history_get(nullptr, "loss", out, 2) == -1);
    CHECK(nnl_layer_count(nullptr) == 0);
    CHECK(nnl_param_count(nullptr) == 0);
    CHECK(nnl_output_shape(nullptr, nullptr) == -1);
    CHECK(nnl_history_key(nullptr, 0) == nullptr);
    CHECK(std::isnan(nnl_get_learning_rate(nullptr)));
    nnl_model_free(nullptr);
    nnl_fit_options_init(nullptr);

    nnl_model *m = nnl_model_create();
    CHECK(nnl_add(m, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add_activation(m, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_add_input(m, 1, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "Dense(4, input_shape=(2,))") == NNL_OK);
    CHECK(nnl_compile(m, nullptr, "mse", nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_compile(m, "sgd", "mse", nullptr) == NNL_OK);
    CHECK(nnl_fit(m, nullptr, 2, s, x, NNL_FLOAT32, 2, s, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_fit(m, x, 2, nullptr, x, NNL_FLOAT32, 2, s, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_predict(m, x, 2, s, 0, nullptr, 4) == NNL_ERR_ARGUMENT);
    CHECK(nnl_weight_info(m, 99, nullptr, 0, nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_get_weight(m, 0, nullptr, 8) == NNL_ERR_ARGUMENT);
    nnl_model_free(m);
}

TEST_CASE("calls out of order are NNL_ERR_STATE") {
    nnl_model *m = nnl_model_create();
    float x[4] = {0, 1, 2, 3}, y[2] = {0, 1};
    int64_t xs[2] = {2, 2}, ys[2] = {2, 1};
    CHECK(nnl_compile(m, "adam", "mse", "") == NNL_ERR_STATE);
    CHECK(nnl_add(m, "Dense(3)") == NNL_ERR_STATE); /* no input shape known */
    CHECK(err().find("input_shape") != std::string::npos);
    CHECK(nnl_add(m, "Dense(1, input_shape=(2,))") == NNL_OK);
    CHECK(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, nullptr) == NNL_ERR_STATE);
    CHECK(err().find("compile") != std::string::npos);
    double r[2];
    CHECK(nnl_evaluate(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, 0, r, 2) == NNL_ERR_STATE);
    CHECK(nnl_set_learning_rate(m, 0.1) == NNL_ERR_STATE);
    float p[2];
    CHECK(nnl_predict(m, x, 2, xs, 0, p, 2) == NNL_OK); /* predict needs no compile */
    CHECK(nnl_compile(m, "adam", "mse", "") == NNL_OK);
    CHECK(nnl_add(m, "Dense(1)") == NNL_ERR_STATE);
    CHECK(nnl_add(m, "Input(shape=(2,))") == NNL_ERR_STATE);
    nnl_model_free(m);
}

TEST_CASE("wrong shapes are refused with both shapes in the message") {
    nnl_model *m = quadrant_model(1);
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(10, x, y, 1);
    int64_t xs_bad[2] = {5, 4}, ys[1] = {10}, xs[2] = {10, 2}, ys_bad[1] = {9};
    CHECK(nnl_fit(m, x.data(), 2, xs_bad, y.data(), NNL_INT32, 1, ys, nullptr) == NNL_ERR_SHAPE);
    CHECK(err().find("(4,)") != std::string::npos);
    CHECK(err().find("(2,)") != std::string::npos);
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys_bad, nullptr) == NNL_ERR_SHAPE);
    int64_t ys_onehot[2] = {10, 3};
    CHECK(nnl_fit(m, x.data(), 2, xs, x.data(), NNL_FLOAT32, 2, ys_onehot, nullptr) == NNL_ERR_SHAPE);
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), 999, 1, ys, nullptr) == NNL_ERR_ARGUMENT);
    y[3] = 7; /* not a class of a 4-way softmax */
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(err().find("label 7") != std::string::npos);
    y[3] = -1;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, nullptr) == NNL_ERR_ARGUMENT);
    std::vector<float> out(10 * 4);
    CHECK(nnl_predict(m, x.data(), 2, xs, 0, out.data(), 39) == NNL_ERR_SHAPE);
    CHECK(nnl_predict(m, x.data(), 2, xs, 0, out.data(), 40) == NNL_OK);
    int64_t rank0[1] = {10};
    CHECK(nnl_predict(m, x.data(), 1, rank0, 0, out.data(), 40) == NNL_ERR_SHAPE);
    CHECK(nnl_predict(m, x.data(), 42, xs, 0, out.data(), 40) == NNL_ERR_SHAPE);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.validation_split = 1.0;
    y[3] = 0;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_ERR_ARGUMENT);
    o.validation_split = 0;
    o.batch_size = 0;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_ERR_ARGUMENT);
    nnl_model_free(m);
}

TEST_CASE("shape errors when layers are added name the layer and the shapes") {
    nnl_model *m = nnl_model_create();
    CHECK(nnl_add(m, "Input(shape=(4, 6))") == NNL_OK);
    CHECK(nnl_add(m, "Reshape((5, -1))") == NNL_ERR_SHAPE);
    CHECK(err().find("Reshape") != std::string::npos);
    CHECK(nnl_add(m, "Reshape((3, 8))") == NNL_OK);
    CHECK(nnl_add(m, "Dense(2, input_shape=(9,))") == NNL_ERR_SHAPE);
    CHECK(nnl_add(m, "Dense(0)") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "Dropout(1.5)") == NNL_ERR_ARGUMENT);
    CHECK(nnl_layer_count(m) == 1);
    nnl_model_free(m);
}

TEST_CASE("non-finite inputs are refused and a diverging run stops before the bad update") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 3);
    REQUIRE(nnl_add(m, "Dense(1, kernel_initializer='ones', input_shape=(1,))") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=10.0)", "mse", "") == NNL_OK);
    std::vector<float> x(16, 5.f), y(16, 1.f);
    int64_t s[2] = {16, 1};
    x[7] = NAN;
    CHECK(nnl_fit(m, x.data(), 2, s, y.data(), NNL_FLOAT32, 2, s, nullptr) == NNL_ERR_NUMERIC);
    CHECK(err().find("sample 7") != std::string::npos);
    x[7] = 5.f;
    float w0[1];
    nnl_get_weight(m, 0, w0, 1);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 50;
    o.verbose = 0;
    CHECK(nnl_fit(m, x.data(), 2, s, y.data(), NNL_FLOAT32, 2, s, &o) == NNL_ERR_NUMERIC);
    CHECK(err().find("last good step") != std::string::npos);
    float w[1], b[1];
    nnl_get_weight(m, 0, w, 1);
    nnl_get_weight(m, 1, b, 1);
    CHECK(std::isfinite(w[0]));
    CHECK(std::isfinite(b[0]));
    float bad = INFINITY;
    CHECK(nnl_set_weight(m, 0, &bad, 1) == NNL_ERR_NUMERIC);
    nnl_model_free(m);
}

TEST_CASE("XOR reaches 100 %") {
    float x[8] = {0, 0, 0, 1, 1, 0, 1, 1}, y[4] = {0, 1, 1, 0};
    int64_t xs[2] = {4, 2}, ys[2] = {4, 1};
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 7);
    REQUIRE(nnl_add(m, "Dense(8, activation='tanh', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(1, activation='sigmoid')") == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy") == NNL_OK);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 400;
    o.batch_size = 4;
    o.verbose = 0;
    REQUIRE(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    int32_t cls[4];
    REQUIRE(nnl_predict_classes(m, x, 2, xs, 0, cls, 4) == NNL_OK);
    for (int i = 0; i < 4; i++) CHECK(cls[i] == (int)y[i]);
    double r[2];
    REQUIRE(nnl_evaluate(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, 4, r, 2) == NNL_OK);
    CHECK(r[1] == 1.0);
    CHECK(r[0] < 0.1);
    nnl_model_free(m);
}

TEST_CASE("validation_split takes the last fraction before shuffling (Keras semantics)") {
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(50, x, y, 5);
    /* learning rate 0: the weights stay, so the logged losses must equal
       evaluate() on exactly the first 40 and the last 10 samples */
    nnl_model *m = quadrant_model(2, "SGD(learning_rate=0.0)");
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 7;
    o.validation_split = 0.2;
    o.verbose = 0;
    o.seed = 99;
    int64_t xs[2] = {50, 2}, ys[1] = {50};
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    REQUIRE(nnl_history_epochs(m) == 2);
    REQUIRE(nnl_history_key_count(m) == 4);
    CHECK(std::string(nnl_history_key(m, 0)) == "loss");
    CHECK(std::string(nnl_history_key(m, 1)) == "accuracy");
    CHECK(std::string(nnl_history_key(m, 2)) == "val_loss");
    CHECK(std::string(nnl_history_key(m, 3)) == "val_accuracy");
    double loss[2], vloss[2], vacc[2], head[2], tail[2];
    CHECK(nnl_history_get(m, "loss", loss, 2) == 2);
    CHECK(nnl_history_get(m, "val_loss", vloss, 2) == 2);
    CHECK(nnl_history_get(m, "val_accuracy", vacc, 2) == 2);
    CHECK(nnl_history_get(m, "nope", loss, 2) == -1);
    int64_t hs[2] = {40, 2}, hy[1] = {40}, ts[2] = {10, 2}, ty[1] = {10};
    REQUIRE(nnl_evaluate(m, x.data(), 2, hs, y.data(), NNL_INT32, 1, hy, 5, head, 2) == NNL_OK);
    REQUIRE(nnl_evaluate(m, x.data() + 80, 2, ts, y.data() + 40, NNL_INT32, 1, ty, 3, tail, 2) == NNL_OK);
    CHECK(loss[0] == doctest::Approx(head[0]).epsilon(1e-5));
    CHECK(vloss[1] == doctest::Approx(tail[0]).epsilon(1e-5));
    CHECK(vacc[1] == doctest::Approx(tail[1]));
    nnl_model_free(m);
}

TEST_CASE("explicit validation data, callbacks that stop, and history across fits") {
    std::vector<float> x, xv;
    std::vector<int32_t> y, yv;
    quadrants(64, x, y, 8);
    quadrants(16, xv, yv, 9);
    nnl_model *m = quadrant_model(4);
    int64_t xs[2] = {64, 2}, ys[1] = {64}, vs[2] = {16, 2}, vys[1] = {16};
    struct Stop {
        int batches = 0, epochs = 0, stop_at_epoch = 2;
        double last_val = -1;
    } st;
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 10;
    o.batch_size = 16;
    o.verbose = 0;
    o.x_val = xv.data();
    o.x_val_rank = 2;
    o.x_val_shape = vs;
    o.y_val = yv.data();
    o.y_val_dtype = NNL_INT32;
    o.y_val_rank = 1;
    o.y_val_shape = vys;
    o.callback_user = &st;
    o.callback = [](void *u, nnl_model *mm, int ev, int epoch, int64_t, const double *logs, int n) -> int {
        Stop *s = (Stop *)u;
        if (ev == NNL_EVENT_BATCH_END) {
            s->batches++;
            return 0;
        }
        s->epochs++;
        CHECK(n == 4);
        s->last_val = logs[2];
        nnl_set_learning_rate(mm, nnl_get_learning_rate(mm) * 0.5); /* a schedule from a callback */
        return epoch + 1 >= s->stop_at_epoch;
    };
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    CHECK(st.epochs == 2);
    CHECK(st.batches == 8);
    CHECK(nnl_history_epochs(m) == 2);
    CHECK(nnl_get_learning_rate(m) == doctest::Approx(0.0025));
    double vl[2];
    nnl_history_get(m, "val_loss", vl, 2);
    CHECK(vl[1] == doctest::Approx(st.last_val));
    /* a callback stopping mid-epoch: that epoch is not recorded */
    o.callback = [](void *, nnl_model *, int ev, int, int64_t b, const double *, int) -> int {
        return ev == NNL_EVENT_BATCH_END && b == 1;
    };
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    CHECK(nnl_history_epochs(m) == 2);
    /* a second fit without validation appends, the val_ columns get NaN */
    o.callback = nullptr;
    o.x_val = nullptr;
    o.epochs = 1;
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    CHECK(nnl_history_epochs(m) == 3);
    double v3[3];
    nnl_history_get(m, "val_loss", v3, 3);
    CHECK(std::isnan(v3[2]));
    CHECK(nnl_history_clear(m) == NNL_OK);
    CHECK(nnl_history_epochs(m) == 0);
    nnl_model_free(m);
}

TEST_CASE("a seed reproduces initial weights and the whole training run") {
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(100, x, y, 3);
    int64_t xs[2] = {100, 2}, ys[1] = {100};
    std::vector<float> w[3];
    for (int k = 0; k < 3; k++) {
        nnl_model *m = nnl_model_create();
        nnl_model_set_seed(m, 11);
        nnl_add(m, "Dense(16, activation='relu', input_shape=(2,))");
        nnl_add(m, "Dropout(0.3)");
        nnl_add(m, "Dense(4, activation='softmax')");
        nnl_compile(m, "adam", "sparse_categorical_crossentropy", "accuracy");
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = 3;
        o.batch_size = 10;
        o.verbose = 0;
        o.seed = k == 2 ? 12 : 5; /* the third run shuffles differently */
        REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
        w[k].resize(32);
        nnl_get_weight(m, 0, w[k].data(), 32);
        nnl_model_free(m);
    }
    CHECK(w[0] == w[1]);
    CHECK(w[0] != w[2]);
}

/* A model of two Dense layers (specs l0, l1) compiled with Adam, seed 1. */
static nnl_model *two_dense(const char *l0, const char *l1) {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 1);
    nnl_add(m, l0);
    nnl_add(m, l1);
    nnl_compile(m, "adam", "sparse_categorical_crossentropy", "");
    return m;
}

/* Weight i (count floats) of two_dense(l0, l1) after 2 epochs of batches of
   100 on `threads` threads, shuffled from seed; the default thread count after. */
static std::vector<float> fitted_weight(int threads, const char *l0, const char *l1, const std::vector<float> &x,
                                        const int64_t *xs, const std::vector<int32_t> &y, uint64_t seed, int i,
                                        int64_t count) {
    nnl_set_threads(threads);
    nnl_model *m = two_dense(l0, l1);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 100;
    o.verbose = 0;
    o.seed = seed;
    int64_t ys[1] = {xs[0]};
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    std::vector<float> w((size_t)count);
    REQUIRE(nnl_get_weight(m, i, w.data(), count) == NNL_OK);
    nnl_model_free(m);
    nnl_set_threads(0);
    return w;
}

TEST_CASE("the same run gives the same weights with 1 and 2 threads") {
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(300, x, y, 4);
    int64_t xs[2] = {300, 2};
    const char *l0 = "Dense(300, activation='relu', input_shape=(2,))", *l1 = "Dense(4, activation='softmax')";
    std::vector<float> w[2];
    for (int t = 0; t < 2; t++) w[t] = fitted_weight(t + 1, l0, l1, x, xs, y, 3, 2, 1200);
    CHECK(w[0] == w[1]); /* each output element is summed in the same order */
}

TEST_CASE("the same weights with 1 and 2 threads when the batch's gather is split over the threads") {
    /* 100 rows of 400 floats a batch (40,000: from NNL_GATHER_SPLIT = 32,768
       on, two threads each copy half of the shuffled rows), and a last
       batch of 37 rows */
    const int64_t n = 437, d = 400;
    std::vector<float> x((size_t)(n * d));
    std::vector<int32_t> y((size_t)n);
    uint32_t r = 12345;
    for (auto &v : x) {
        r = r * 1664525u + 1013904223u;
        v = (float)(r >> 8) / 16777216.f;
    }
    for (int64_t i = 0; i < n; i++) y[(size_t)i] = (int32_t)(x[(size_t)(i * d + i % d)] * 3.f);
    int64_t xs[2] = {n, d};
    const char *l0 = "Dense(32, activation='relu', input_shape=(400,))", *l1 = "Dense(3, activation='softmax')";
    std::vector<float> w[2];
    for (int t = 0; t < 2; t++) w[t] = fitted_weight(t + 1, l0, l1, x, xs, y, 4, 0, 400 * 32);
    CHECK(w[0] == w[1]);
    /* and the training moved the weights from their initial values */
    nnl_model *m0 = two_dense(l0, l1);
    std::vector<float> w0(400 * 32);
    REQUIRE(nnl_get_weight(m0, 0, w0.data(), 400 * 32) == NNL_OK);
    nnl_model_free(m0);
    CHECK(w0 != w[0]);
}

TEST_CASE("every optimizer and loss trains a small problem") {
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(200, x, y, 6);
    int64_t xs[2] = {200, 2}, ys[1] = {200};
    for (const char *opt : {"SGD(learning_rate=0.1, momentum=0.9, nesterov=True)", "RMSprop(learning_rate=0.01)",
                            "Adagrad(learning_rate=0.1)", "Adadelta(learning_rate=1.0)", "Adam(learning_rate=0.01)",
                            "AdamW(learning_rate=0.01)", "Adamax(learning_rate=0.02)", "Nadam(learning_rate=0.01)",
                            "SGD(learning_rate=0.5, decay=0.01, clipnorm=1.0)", "adam"}) {
        INFO(opt);
        nnl_model *m = quadrant_model(9, opt);
        double before[2], after[2];
        nnl_evaluate(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, 0, before, 2);
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = 30;
        o.batch_size = 20;
        o.verbose = 0;
        REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
        nnl_evaluate(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, 0, after, 2);
        CHECK(after[0] < before[0]);
        if (strcmp(opt, "adam") != 0) CHECK(after[1] > 0.85); /* default lr 1e-3 is slow here */
        nnl_model_free(m);
    }
    /* one-hot targets with categorical CE, and a regression with MSE */
    std::vector<float> onehot(200 * 4);
    REQUIRE(nnl_to_categorical(y.data(), NNL_INT32, 200, 4, onehot.data()) == NNL_OK);
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 5);
    nnl_add(m, "Dense(16, activation='relu', input_shape=(2,))");
    nnl_add(m, "Dense(4, activation='softmax')");
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "categorical_crossentropy",
                        "accuracy, top_k_categorical_accuracy(k=2)") == NNL_OK);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 30;
    o.batch_size = 20;
    o.verbose = 0;
    int64_t os[2] = {200, 4};
    REQUIRE(nnl_fit(m, x.data(), 2, xs, onehot.data(), NNL_FLOAT32, 2, os, &o) == NNL_OK);
    double r[3];
    REQUIRE(nnl_evaluate(m, x.data(), 2, xs, onehot.data(), NNL_FLOAT32, 2, os, 0, r, 3) == NNL_OK);
    CHECK(r[1] > 0.85);
    CHECK(r[2] >= r[1]);
    nnl_model_free(m);
}

TEST_CASE("summary, parameter counts and weights match Keras for the seed MLPs") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Flatten(input_shape=(28, 28))") == NNL_OK);
    REQUIRE(nnl_add_dense(m, 128, "relu") == NNL_OK);
    REQUIRE(nnl_add_dense(m, 10, "softmax") == NNL_OK);
    CHECK(nnl_param_count(m) == 101770); /* K-MLP */
    char buf[4096];
    int64_t n = nnl_summary_string(m, buf, sizeof buf);
    REQUIRE(n > 0);
    std::string s(buf);
    CHECK(s.find("flatten (Flatten)") != std::string::npos);
    CHECK(s.find("(None, 784)") != std::string::npos);
    CHECK(s.find("dense_1 (Dense)") != std::string::npos);
    CHECK(s.find("Total params: 101,770") != std::string::npos);
    char small[16];
    CHECK(nnl_summary_string(m, small, sizeof small) == n);
    CHECK(strlen(small) == 15);
    CHECK(nnl_weight_count(m) == 4);
    char name[64];
    int rank;
    int64_t shape[8];
    REQUIRE(nnl_weight_info(m, 0, name, sizeof name, &rank, shape) == NNL_OK);
    CHECK(std::string(name) == "dense/kernel");
    CHECK(rank == 2);
    CHECK(shape[0] == 784);
    CHECK(shape[1] == 128);
    std::vector<float> k(784 * 128);
    REQUIRE(nnl_get_weight(m, 0, k.data(), (int64_t)k.size()) == NNL_OK);
    k[5] = 0.25f;
    REQUIRE(nnl_set_weight(m, 0, k.data(), (int64_t)k.size()) == NNL_OK);
    std::vector<float> k2(k.size());
    nnl_get_weight(m, 0, k2.data(), (int64_t)k2.size());
    CHECK(k2 == k);
    CHECK(nnl_set_weight(m, 0, k.data(), 10) == NNL_ERR_SHAPE);
    int64_t os[8];
    CHECK(nnl_output_shape(m, os) == 1);
    CHECK(os[0] == 10);
    CHECK(nnl_input_shape(m, os) == 2);
    nnl_model_free(m);

    m = nnl_model_create(); /* R-MLP and R-PERC */
    nnl_add(m, "Dense(128, activation='relu', input_shape=(784,))");
    nnl_add(m, "Dense(128, activation='relu')");
    nnl_add(m, "Dense(10, activation='softmax')");
    CHECK(nnl_param_count(m) == 118282);
    nnl_model_free(m);
    m = nnl_model_create();
    int64_t in[1] = {784};
    nnl_add_input(m, 1, in);
    nnl_add_dense(m, 10, "softmax");
    CHECK(nnl_param_count(m) == 7850);
    nnl_model_free(m);
}

TEST_CASE("an older caller's smaller options struct is read only as far as it goes") {
    nnl_model *m = quadrant_model(2);
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(20, x, y, 2);
    int64_t xs[2] = {20, 2}, ys[1] = {20};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.verbose = 0;
    o.callback = [](void *, nnl_model *, int, int, int64_t, const double *, int) -> int { return 1; };
    o.struct_size = (int)offsetof(nnl_fit_options, x_val); /* a caller that knows no callbacks */
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    CHECK(nnl_history_epochs(m) == 2); /* the callback was not seen, so nothing stopped */
    o.struct_size = 0;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_ERR_ARGUMENT);
    nnl_model_free(m);
}

TEST_CASE("threads can be set and restored") {
    CHECK(nnl_set_threads(1) == NNL_OK);
    CHECK(nnl_get_threads() == 1);
    CHECK(nnl_set_threads(0) == NNL_OK);
    CHECK(nnl_get_threads() >= 1);
}

TEST_CASE("training curves and confusion matrices are written as SVG pictures") {
    char dir[] = "/tmp/nnl_plot_XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string hist = std::string(dir) + "/h.svg", conf = std::string(dir) + "/c.svg";
    nnl_model *m = quadrant_model(3);
    CHECK(nnl_plot_history(m, hist.c_str()) == NNL_ERR_STATE); /* nothing trained yet */
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(40, x, y, 3);
    int64_t xs[2] = {40, 2}, ys[1] = {40};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 3;
    o.verbose = 0;
    o.validation_split = 0.25;
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    REQUIRE(nnl_plot_history(m, hist.c_str()) == NNL_OK);
    auto slurp = [](const std::string &p) {
        std::string s;
        FILE *f = fopen(p.c_str(), "rb");
        if (!f) return s;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
        fclose(f);
        return s;
    };
    std::string h = slurp(hist);
    CHECK(h.rfind("<svg", 0) == 0);
    CHECK(h.find("model accuracy") != std::string::npos);
    CHECK(h.find("model loss") != std::string::npos);
    CHECK(h.find("validation") != std::string::npos);
    CHECK(h.find("</svg>") != std::string::npos);

    std::vector<int32_t> pred(40);
    REQUIRE(nnl_predict_classes(m, x.data(), 2, xs, 0, pred.data(), 40) == NNL_OK);
    int64_t cm[16];
    REQUIRE(nnl_confusion_matrix(y.data(), NNL_INT32, pred.data(), 40, 4, cm) == NNL_OK);
    const char *names[4] = {"a<b", "b", "c", "d"};
    REQUIRE(nnl_plot_confusion_matrix(conf.c_str(), cm, 4, names, 1, "quadrants") == NNL_OK);
    std::string c = slurp(conf);
    CHECK(c.find("quadrants") != std::string::npos);
    CHECK(c.find("a&lt;b") != std::string::npos); /* labels are escaped */
    CHECK(nnl_plot_confusion_matrix(conf.c_str(), nullptr, 4, nullptr, 0, nullptr) == NNL_ERR_ARGUMENT);
    /* a failed write reports NNL_ERR_IO and leaves the old picture whole */
    CHECK(nnl_plot_history(m, (std::string(dir) + "/no/such/dir/h.svg").c_str()) == NNL_ERR_IO);
    CHECK(nnl_plot_history(m, "") == NNL_ERR_ARGUMENT);
    CHECK(slurp(hist) == h);
    remove(hist.c_str());
    remove(conf.c_str());
    rmdir(dir);
    nnl_model_free(m);
}

TEST_CASE("regression targets may be float64; integer dtypes work for every label type") {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 1);
    REQUIRE(nnl_add(m, "Dense(1, input_shape=(1,))") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.1)", "mse", "mae") == NNL_OK);
    std::vector<float> x(32);
    std::vector<double> y(32);
    for (int i = 0; i < 32; i++) {
        x[(size_t)i] = (float)i / 32;
        y[(size_t)i] = 0.25 + 1.5 * x[(size_t)i]; /* fractional targets */
    }
    int64_t s[2] = {32, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 300;
    o.batch_size = 8;
    o.verbose = 0;
    REQUIRE(nnl_fit(m, x.data(), 2, s, y.data(), NNL_FLOAT64, 2, s, &o) == NNL_OK);
    float w, b;
    nnl_get_weight(m, 0, &w, 1);
    nnl_get_weight(m, 1, &b, 1);
    CHECK(w == doctest::Approx(1.5).epsilon(0.01));
    CHECK(b == doctest::Approx(0.25).epsilon(0.01));
    nnl_model_free(m);

    std::vector<float> xq;
    std::vector<int32_t> yq;
    quadrants(8, xq, yq, 1);
    std::vector<uint8_t> y8(yq.begin(), yq.end());
    std::vector<int64_t> y64(yq.begin(), yq.end());
    std::vector<double> yd(yq.begin(), yq.end());
    int64_t xs[2] = {8, 2}, ys[1] = {8};
    m = quadrant_model(1);
    double r8[2], r64[2], rd[2];
    REQUIRE(nnl_evaluate(m, xq.data(), 2, xs, y8.data(), NNL_UINT8, 1, ys, 0, r8, 2) == NNL_OK);
    REQUIRE(nnl_evaluate(m, xq.data(), 2, xs, y64.data(), NNL_INT64, 1, ys, 0, r64, 2) == NNL_OK);
    REQUIRE(nnl_evaluate(m, xq.data(), 2, xs, yd.data(), NNL_FLOAT64, 1, ys, 0, rd, 2) == NNL_OK);
    CHECK(r8[0] == r64[0]);
    CHECK(rd[0] == r64[0]);
    yd[2] = 1.5; /* a fractional class id is refused */
    CHECK(nnl_evaluate(m, xq.data(), 2, xs, yd.data(), NNL_FLOAT64, 1, ys, 0, rd, 2) == NNL_ERR_ARGUMENT);
    nnl_model_free(m);
}

TEST_CASE("stateful LSTM through the ABI: nnl_reset_states, and fit's reset_states read only within struct_size") {
    /* learning rate 0: the weights stay, so the outputs after fit show the states alone */
    auto make = [] {
        nnl_model *m = nnl_model_create();
        REQUIRE(nnl_model_set_seed(m, 12) == NNL_OK);
        REQUIRE(nnl_add(m, "LSTM(3, stateful=True, input_shape=(4, 2))") == NNL_OK);
        REQUIRE(nnl_add(m, "Dense(1)") == NNL_OK);
        REQUIRE(nnl_compile(m, "SGD(learning_rate=0.0)", "mse", "") == NNL_OK);
        return m;
    };
    std::vector<float> x(6 * 4 * 2), y(6, 0.5f), p(3);
    for (size_t i = 0; i < x.size(); i++) x[i] = 0.1f * (float)(i % 7) - 0.3f;
    int64_t xs[3] = {6, 4, 2}, ys[2] = {6, 1}, x3[3] = {3, 4, 2};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    CHECK(o.reset_states == 0); /* Keras never resets by itself */
    o.batch_size = 3;
    o.shuffle = 0;
    o.verbose = 0;
    auto after = [&](nnl_model *m) {
        std::vector<float> out(3);
        REQUIRE(nnl_predict(m, x.data(), 3, x3, 3, out.data(), 3) == NNL_OK);
        return out;
    };
    nnl_model *ref = make(), *full = make(), *old = make();
    for (nnl_model *m : {ref, full, old}) REQUIRE(nnl_fit(m, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    o.reset_states = 1;
    REQUIRE(nnl_fit(full, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK); /* reset, same epoch again */
    o.struct_size = (int)offsetof(nnl_fit_options, reset_states); /* a caller from before the field */
    REQUIRE(nnl_fit(old, x.data(), 3, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK); /* carries on */
    std::vector<float> pr = after(ref), pf = after(full), po = after(old);
    CHECK(pf == pr);
    CHECK(po != pr);
    /* nnl_reset_states: back to the state of a fresh model */
    nnl_model *fresh = make();
    std::vector<float> p0 = after(fresh);
    REQUIRE(nnl_reset_states(ref) == NNL_OK);
    CHECK(after(ref) == p0);
    /* a final partial batch is refused, naming the stateful layer's rule */
    int64_t x5[3] = {5, 4, 2};
    CHECK(nnl_predict(fresh, x.data(), 3, x5, 3, p.data(), 5) == NNL_ERR_SHAPE);
    CHECK(std::string(nnl_last_error()).rfind("nnl_predict: ", 0) == 0);
    CHECK(nnl_reset_states(nullptr) == NNL_ERR_ARGUMENT);
    for (nnl_model *m : {ref, full, old, fresh}) nnl_model_free(m);
}
