/* nnlite.hpp, the header-only C++ wrapper: RAII, moves, exceptions, the
   version handshake, model files. Linked against the library. */
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include "../nnlite.hpp"

static_assert(!std::is_copy_constructible<nnlite::Model>::value, "Model is move-only");
static_assert(std::is_nothrow_move_constructible<nnlite::Model>::value, "Model moves without throwing");
static_assert(std::is_nothrow_move_assignable<nnlite::Array>::value, "Array moves without throwing");

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

static nnlite::Model quadrant_model(uint64_t seed) {
    nnlite::Model m;
    m.set_seed(seed)
        .add("Dense(16, activation='relu', input_shape=(2,))")
        .add("Dense(4, activation='softmax')")
        .compile("Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy");
    return m; /* moved out */
}

TEST_CASE("C++: train, evaluate, predict through the wrapper") {
    std::vector<float> x, xt;
    std::vector<int32_t> y, yt;
    quadrants(800, x, y, 1);
    quadrants(300, xt, yt, 2);
    nnlite::Model m = quadrant_model(3);
    CHECK(m.layer_count() == 2);
    CHECK(m.param_count() == 2 * 16 + 16 + 16 * 4 + 4);
    CHECK(m.output_shape() == nnlite::Shape{4});
    nnlite::FitOptions o;
    o.epochs = 10;
    o.verbose = 0;
    o.validation_split = 0.25;
    m.fit(x, {800, 2}, y, {800}, o);
    CHECK(m.history_epochs() == 10);
    CHECK(m.history_keys() == std::vector<std::string>{"loss", "accuracy", "val_loss", "val_accuracy"});
    CHECK(m.history("loss").size() == 10);
    std::vector<double> ev = m.evaluate(xt, {300, 2}, yt, {300});
    REQUIRE(ev.size() == 2);
    CHECK(ev[1] > 0.9);
    std::vector<float> p = m.predict(xt, {300, 2});
    CHECK(p.size() == 300 * 4);
    std::vector<int32_t> c = m.predict_classes(xt, {300, 2});
    int right = 0;
    for (size_t i = 0; i < c.size(); i++) right += c[i] == yt[i];
    CHECK(right / 300.0 == doctest::Approx(ev[1]).epsilon(1e-6));
    CHECK(m.summary().find("Total params: 116") != std::string::npos);
}

TEST_CASE("C++: errors are exceptions with status and message") {
    nnlite::Model m;
    m.add("Dense(4, input_shape=(3,))");
    try {
        m.add("Dense(2, activation='nosuch')");
        FAIL("no exception");
    } catch (const nnlite::Error &e) {
        CHECK(e.status() == NNL_ERR_ARGUMENT);
        CHECK(std::string(e.what()).find("nosuch") != std::string::npos);
        CHECK(std::string(e.status_name()) == "NNL_ERR_ARGUMENT");
    }
    std::vector<float> x(12, 0.f), y(16, 0.f);
    CHECK_THROWS_AS(m.fit(x, {4, 3}, y, {4, 4}), nnlite::Error); /* not compiled */
    try {
        m.predict(std::vector<float>(10), {2, 5});
        FAIL("no exception");
    } catch (const nnlite::Error &e) {
        CHECK(e.status() == NNL_ERR_SHAPE);
    }
    CHECK_THROWS_AS(m.predict(std::vector<float>(10), {2, 3}), nnlite::Error); /* 10 values, shape says 6 */
}

TEST_CASE("C++: moves transfer ownership") {
    nnlite::Model a = quadrant_model(5);
    nnl_model *h = a.get();
    nnlite::Model b(std::move(a));
    CHECK(!a);
    CHECK(b.get() == h);
    nnlite::Model c;
    c = std::move(b);
    CHECK(c.get() == h);
    CHECK(c.param_count() == 116);
    nnl_model *raw = c.release();
    CHECK(!c);
    nnlite::Model d(raw); /* adopt it back */
    CHECK(d.layer_count() == 2);
}

TEST_CASE("C++: weights and model files") {
    std::vector<float> x;
    std::vector<int32_t> y;
    quadrants(200, x, y, 7);
    nnlite::Model m = quadrant_model(9);
    nnlite::FitOptions o;
    o.epochs = 2;
    o.verbose = 0;
    m.fit(x, {200, 2}, y, {200}, o);
    std::vector<float> p = m.predict(x, {200, 2});

    nnlite::Model w = quadrant_model(10);
    w.set_weights(m.get_weights());
    CHECK(w.predict(x, {200, 2}) == p);

    char dir[] = "/tmp/nnlite_cxx_XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string base = dir;
    m.save(base + "/m.nnl");
    nnlite::Model l = nnlite::Model::load(base + "/m.nnl");
    CHECK(l.predict(x, {200, 2}) == p);
    std::string json = m.to_json();
    CHECK(json.find("Dense") != std::string::npos);
    for (const char *name : {"/w.weights", "/w.npz"}) {
        m.save_weights(base + name);
        nnlite::Model j = nnlite::Model::from_json(json);
        j.load_weights(base + name);
        CHECK(j.predict(x, {200, 2}) == p);
        std::remove((base + name).c_str());
    }
    CHECK_THROWS_AS(nnlite::Model::load(base + "/missing.nnl"), nnlite::Error);
    std::remove((base + "/m.nnl").c_str());
    rmdir(dir);
}

TEST_CASE("C++: get_weights/set_weights cover every tensor of a model with BatchNormalization") {
    nnlite::Model m;
    m.set_seed(1).add({"Dense(4, activation='relu', input_shape=(3,))", "BatchNormalization()", "Dense(2)"});
    m.compile("adam", "mse");
    std::vector<float> x = {0.5f, -1.f, 2.f, 1.f, 1.f, -3.f, 0.f, 2.f, 1.f, -1.f, 0.f, 0.f};
    std::vector<float> y = {1.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f, 0.f};
    nnlite::FitOptions o;
    o.epochs = 3;
    o.verbose = 0;
    m.fit(x, {4, 3}, y, {4, 2}, o); /* moves the moving statistics away from 0 and 1 */
    CHECK(m.weight_count() == 8);
    CHECK(m.param_count() == 42);
    CHECK(m.trainable_param_count() == 34);
    CHECK(m.non_trainable_param_count() == 8);
    std::vector<bool> trainable;
    for (int i = 0; i < m.weight_count(); i++) trainable.push_back(m.weight_trainable(i));
    CHECK(trainable == std::vector<bool>{true, true, true, true, false, false, true, true});
    CHECK(m.weight_name(4) == "batch_normalization/moving_mean");
    CHECK(m.weight_name(7) == "dense_1/bias");
    CHECK(m.weight_shape(6) == nnlite::Shape{4, 2});
    std::vector<std::vector<float>> w = m.get_weights();
    REQUIRE(w.size() == 8); /* the last Dense's kernel and bias included */
    for (int i = 0; i < 8; i++) {
        std::vector<float> t((size_t)nnlite::shape_size(m.weight_shape(i)));
        nnl_get_weight(m.get(), i, t.data(), (int64_t)t.size());
        CHECK(w[(size_t)i] == t);
    }
    nnlite::Model n;
    n.set_seed(2).add({"Dense(4, activation='relu', input_shape=(3,))", "BatchNormalization()", "Dense(2)"});
    n.set_weights(w);
    CHECK(n.get_weights() == w);
    CHECK(n.predict(x, {4, 3}) == m.predict(x, {4, 3}));
    w.pop_back();
    CHECK_THROWS_AS(n.set_weights(w), nnlite::Error);
    CHECK_THROWS_AS(m.weight_trainable(8), nnlite::Error);
}

TEST_CASE("C++: the version handshake passed") {
    CHECK_NOTHROW(nnlite::init());
    CHECK(nnl_init(NNL_VERSION_NUMBER + 10000) == NNL_ERR_UNSUPPORTED);
}

TEST_CASE("C++: build information") {
    CHECK(nnlite::has_feature("threads") == (nnlite::build_info().find("threads: yes") != std::string::npos));
    CHECK(!nnlite::has_feature("mpi"));
    CHECK(nnlite::build_info().find("nnlite " NNL_VERSION_STRING ";") == 0);
    CHECK_THROWS_AS(nnlite::has_feature("nope"), nnlite::Error);
}

TEST_CASE("C++: token ids as std::vector<int32_t> / <int64_t> train and predict as the same ids in floats") {
    const int n = 8, T = 3;
    std::vector<int32_t> i32(n * T), y(n * T);
    std::vector<int64_t> i64(n * T);
    std::vector<float> f(n * T);
    for (int i = 0; i < n * T; i++) i32[i] = (i * 7) % 9, i64[i] = i32[i], f[i] = (float)i32[i], y[i] = (i * 3) % 5;
    auto make = [] {
        nnlite::Model m;
        m.set_seed(4).add("Embedding(9, 4, input_length=3)").add("Dense(5, activation='softmax')");
        m.compile("SGD(learning_rate=0.5)", "sparse_categorical_crossentropy", "accuracy,perplexity");
        return m;
    };
    nnlite::Model a = make(), b = make(), c = make();
    nnlite::FitOptions fo;
    fo.epochs = 2;
    fo.batch_size = 4;
    fo.verbose = 0;
    a.fit(f, {n, T}, y, {n, T}, fo);
    b.fit(i32, {n, T}, y, {n, T}, fo);
    c.fit(i64, {n, T}, y, {n, T}, fo);
    CHECK(a.predict(f, {n, T}) == b.predict(i32, {n, T}));
    CHECK(a.predict(f, {n, T}) == c.predict(i64, {n, T}));
    std::vector<double> ea = a.evaluate(f, {n, T}, y, {n, T}), eb = b.evaluate(i32, {n, T}, y, {n, T});
    REQUIRE(ea.size() == 3);
    CHECK(ea == eb);
    std::vector<int32_t> bad = i32;
    bad[5] = 9;
    CHECK_THROWS_AS(b.predict(bad, {n, T}), nnlite::Error);
}
