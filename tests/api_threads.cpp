/* Threads and the floating-point environment, through the C ABI: models
   trained on several threads at once, FTZ/DAZ inside the work, and the
   caller's environment given back (nnlite.h, "Floating-point environment"). */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../nnlite.h"

#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
#include <xmmintrin.h>
#define NNL_TEST_MXCSR 1
#else
#define NNL_TEST_MXCSR 0
#endif

namespace {

/* n samples of f features in [-1, 1), labels = which of 4 feature sums is largest */
void blobs(int n, int f, std::vector<float> &x, std::vector<int32_t> &y) {
    x.resize((size_t)n * f);
    y.resize((size_t)n);
    uint64_t s = 12345;
    for (int i = 0; i < n; i++) {
        float sums[4] = {0, 0, 0, 0};
        for (int j = 0; j < f; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float v = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
            x[(size_t)i * f + j] = v;
            sums[j % 4] += v;
        }
        int best = 0;
        for (int k = 1; k < 4; k++)
            if (sums[k] > sums[best]) best = k;
        y[(size_t)i] = best;
    }
}

/* Large enough that its GEMMs (128 x 512 x 384, batches of 128) and its
   optimizer update (196,608 weights) go to the pool. */
const int F = 384;
nnl_model *pool_sized_model() {
    nnl_model *m = nnl_model_create();
    REQUIRE(m);
    REQUIRE(nnl_model_set_seed(m, 5) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(512, activation='relu', input_shape=(384,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(4, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, "adam", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    return m;
}

std::vector<float> weights(nnl_model *m) {
    std::vector<float> all;
    for (int i = 0; i < nnl_weight_count(m); i++) {
        int rank = 0;
        int64_t shape[8], n = 1;
        REQUIRE(nnl_weight_info(m, i, nullptr, 0, &rank, shape) == NNL_OK);
        for (int d = 0; d < rank; d++) n *= shape[d];
        std::vector<float> w((size_t)n);
        REQUIRE(nnl_get_weight(m, i, w.data(), n) == NNL_OK);
        all.insert(all.end(), w.begin(), w.end());
    }
    return all;
}

int train(nnl_model *m, const std::vector<float> &x, const std::vector<int32_t> &y, int f, int epochs,
          nnl_callback cb = nullptr, void *user = nullptr) {
    int64_t xs[2] = {(int64_t)y.size(), f}, ys[1] = {(int64_t)y.size()};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = 128;
    o.verbose = 0;
    o.seed = 9;
    o.callback = cb;
    o.callback_user = user;
    return nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o);
}

} // namespace

TEST_CASE("models trained on several threads at once share the pool and get the weights they get alone") {
    std::vector<float> x;
    std::vector<int32_t> y;
    blobs(512, F, x, y);
    nnl_set_threads(2);
    nnl_model *alone = pool_sized_model();
    REQUIRE(train(alone, x, y, F, 2) == NNL_OK);
    std::vector<float> want = weights(alone);
    nnl_model_free(alone);

    const int N = 3;
    nnl_model *m[N];
    int rc[N];
    for (int i = 0; i < N; i++) m[i] = pool_sized_model();
    std::vector<std::thread> ts;
    for (int i = 1; i < N; i++) ts.emplace_back([&, i] { rc[i] = train(m[i], x, y, F, 2); });
    rc[0] = train(m[0], x, y, F, 2);
    for (auto &t : ts) t.join();
    for (int i = 0; i < N; i++) {
        CHECK(rc[i] == NNL_OK);
        CHECK(weights(m[i]) == want); /* bit for bit: no thread mixed in another's work */
        nnl_model_free(m[i]);
    }
    nnl_set_threads(0);
}

#if NNL_TEST_MXCSR
namespace {
/* A caller's environment that differs from nnlite's in every field it sets:
   rounding toward zero, no FTZ/DAZ, and two status flags already raised. */
const unsigned CALLER_CSR = 0x1F80u | 0x6000u | 0x0001u | 0x0020u;

struct CsrGuard {
    unsigned keep = _mm_getcsr();
    ~CsrGuard() { _mm_setcsr(keep); }
};

struct Seen {
    std::vector<unsigned> csr;
};

int record_csr(void *user, nnl_model *, int, int, int64_t, const double *, int) {
    Seen *s = (Seen *)user;
    unsigned c = _mm_getcsr();
    s->csr.push_back(c);
    if (s->csr.size() == 1) _mm_setcsr(c | 0x0010u); /* raise the underflow flag */
    return 0;
}
} // namespace

TEST_CASE("nnl_fit, nnl_evaluate, nnl_predict and nnl_predict_classes give the caller its MXCSR back") {
    std::vector<float> x;
    std::vector<int32_t> y;
    blobs(256, F, x, y);
    int64_t xs[2] = {256, F}, ys[1] = {256};
    nnl_model *m = pool_sized_model();
    std::vector<float> p(256 * 4);
    std::vector<int32_t> cls(256);
    double r[2];
    CsrGuard g;
    for (int threads : {1, 2}) {
        nnl_set_threads(threads);
        _mm_setcsr(CALLER_CSR);
        int rc = train(m, x, y, F, 1);
        unsigned after_fit = _mm_getcsr();
        rc += nnl_evaluate(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, 128, r, 2);
        unsigned after_eval = _mm_getcsr();
        rc += nnl_predict(m, x.data(), 2, xs, 128, p.data(), (int64_t)p.size());
        unsigned after_predict = _mm_getcsr();
        rc += nnl_predict_classes(m, x.data(), 2, xs, 128, cls.data(), (int64_t)cls.size());
        unsigned after_classes = _mm_getcsr();
        /* an error raised inside the work: a label beyond the 4 classes */
        std::vector<int32_t> bad = y;
        bad[100] = 7;
        int err = nnl_fit(m, x.data(), 2, xs, bad.data(), NNL_INT32, 1, ys, nullptr);
        unsigned after_error = _mm_getcsr();
        _mm_setcsr(g.keep);
        INFO("threads " << threads);
        CHECK(rc == NNL_OK);
        CHECK(err != NNL_OK);
        CHECK(after_fit == CALLER_CSR);
        CHECK(after_eval == CALLER_CSR);
        CHECK(after_predict == CALLER_CSR);
        CHECK(after_classes == CALLER_CSR);
        CHECK(after_error == CALLER_CSR);
    }
    nnl_set_threads(0);
    nnl_model_free(m);
}

TEST_CASE("inside nnl_predict and nnl_fit denormals are zero; outside they are not") {
    CsrGuard g;
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(1, kernel_initializer='ones', input_shape=(1,))") == NNL_OK);
    const float tiny = 1e-40f;
    REQUIRE(std::fpclassify(tiny) == FP_SUBNORMAL);
    float x[1] = {tiny}, out[1] = {-1.f};
    int64_t xs[2] = {1, 1};
    REQUIRE(nnl_predict(m, x, 2, xs, 1, out, 1) == NNL_OK);
    CHECK(out[0] == 0.f); /* 1e-40 * 1 + 0 is 1e-40 without DAZ */
    volatile float one = 1.f;
    CHECK(tiny * one == tiny); /* the caller still computes with denormals */

    nnl_model_free(m);

    /* training: one SGD step on a zero kernel from a denormal input. Without
       DAZ the kernel's gradient, 2 (w x + b - 1) x, is -2e-40 and the step
       gives it a denormal value; with DAZ the input counts as 0 and it stays 0 */
    m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(1, kernel_initializer='zeros', input_shape=(1,))") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.1)", "mse", "") == NNL_OK);
    float xt[4] = {tiny, tiny, tiny, tiny}, yt[4] = {1.f, 1.f, 1.f, 1.f}, w[1] = {-1.f}, b[1] = {0.f};
    int64_t xts[2] = {4, 1}, yts[2] = {4, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.batch_size = 4;
    REQUIRE(nnl_fit(m, xt, 2, xts, yt, NNL_FLOAT32, 2, yts, &o) == NNL_OK);
    REQUIRE(nnl_get_weight(m, 0, w, 1) == NNL_OK);
    REQUIRE(nnl_get_weight(m, 1, b, 1) == NNL_OK);
    CHECK(w[0] == 0.f);
    CHECK(b[0] > 0.1f); /* the step itself was taken: the bias moved towards 1 */
    nnl_model_free(m);
}

TEST_CASE("a fit callback runs in the caller's floating-point environment, and what it leaves there stays") {
    std::vector<float> x;
    std::vector<int32_t> y;
    blobs(512, F, x, y);
    nnl_model *m = pool_sized_model();
    CsrGuard g;
    Seen seen;
    nnl_set_threads(2);
    const unsigned caller = 0x1F80u | 0x6000u; /* round toward zero, no flags */
    _mm_setcsr(caller);
    int rc = train(m, x, y, F, 1, record_csr, &seen);
    unsigned after = _mm_getcsr();
    _mm_setcsr(g.keep);
    nnl_set_threads(0);
    CHECK(rc == NNL_OK);
    REQUIRE(seen.csr.size() == 5); /* 4 batches and the epoch's end */
    CHECK(seen.csr[0] == caller);
    for (size_t i = 1; i < seen.csr.size(); i++) CHECK(seen.csr[i] == (caller | 0x0010u));
    CHECK(after == (caller | 0x0010u)); /* the flag the callback raised */
    nnl_model_free(m);
}
#endif
