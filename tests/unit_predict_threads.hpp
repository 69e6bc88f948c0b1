/* Many threads, one model (since 0.5): nnl_predict and nnl_predict_classes
   called on one trained model from several threads at once give, call by
   call, bit for bit what single-threaded calls give (Model::infer: the
   model's own workspace or an inference copy). Included by unit.cpp. A
   build without threads (NNL_NO_THREADS) has no locks: nothing to test. */
#if NNL_THREADS
#include <thread>

namespace {

struct PtModel {
    const char *what;
    std::vector<const char *> layers;
    std::vector<int64_t> per; /* per-sample input shape */
    int64_t classes;
};

/* A small model of `spec` trained two epochs on random data (seeded). */
nnl_model *pt_trained(const PtModel &spec, std::vector<float> &x, int64_t n) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 7) == NNL_OK);
    for (const char *l : spec.layers) REQUIRE_MESSAGE(nnl_add(m, l) == NNL_OK, nnl_last_error());
    REQUIRE_MESSAGE(nnl_compile(m, "Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy") ==
                        NNL_OK,
                    nnl_last_error());
    int64_t per = 1;
    for (int64_t d : spec.per) per *= d;
    x.resize((size_t)(n * per));
    std::vector<int32_t> y((size_t)n);
    uint64_t r = 12345;
    for (auto &v : x) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        v = (float)((r >> 40) % 1000) / 500.f - 1.f;
    }
    for (int64_t i = 0; i < n; i++) y[(size_t)i] = (int32_t)(i % spec.classes);
    std::vector<int64_t> xs{n};
    xs.insert(xs.end(), spec.per.begin(), spec.per.end());
    int64_t ys[1] = {n};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 16;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), (int)xs.size(), xs.data(), y.data(), NNL_INT32, 1, ys, &o) == NNL_OK,
                    nnl_last_error());
    return m;
}

/* One call's job: samples [s, s + cnt) in batches of bs. */
struct PtJob {
    int64_t s, cnt, bs;
};

/* The outputs and classes of every job, computed by `jobs` calls in turn. */
struct PtResult {
    std::vector<std::vector<float>> out;
    std::vector<std::vector<int32_t>> cls;
};

/* Runs job j on m: nnl_predict and nnl_predict_classes; false on an error. */
bool pt_run(nnl_model *m, const PtModel &spec, const std::vector<float> &x, const PtJob &j, std::vector<float> &out,
            std::vector<int32_t> &cls, int64_t D) {
    int64_t per = 1;
    for (int64_t d : spec.per) per *= d;
    std::vector<int64_t> xs{j.cnt};
    xs.insert(xs.end(), spec.per.begin(), spec.per.end());
    out.assign((size_t)(j.cnt * D), -1.f);
    cls.assign((size_t)j.cnt, -1);
    const float *xp = x.data() + j.s * per;
    return nnl_predict(m, xp, (int)xs.size(), xs.data(), (int)j.bs, out.data(), (int64_t)out.size()) == NNL_OK &&
           nnl_predict_classes(m, xp, (int)xs.size(), xs.data(), (int)j.bs, cls.data(), j.cnt) == NNL_OK;
}

PtResult pt_reference(nnl_model *m, const PtModel &spec, const std::vector<float> &x, const std::vector<PtJob> &jobs,
                      int64_t D) {
    PtResult r;
    r.out.resize(jobs.size());
    r.cls.resize(jobs.size());
    for (size_t k = 0; k < jobs.size(); k++)
        REQUIRE_MESSAGE(pt_run(m, spec, x, jobs[k], r.out[k], r.cls[k], D), nnl_last_error());
    return r;
}

/* T threads, each running every job `rounds` times from its own starting
   point; the mismatches with the reference (bit for bit) and the errors. */
void pt_hammer(nnl_model *m, const PtModel &spec, const std::vector<float> &x, const std::vector<PtJob> &jobs,
               const PtResult &ref, int64_t D, int T, int rounds, int *mismatches, int *errors) {
    std::atomic<int> bad{0}, err{0}, ready{0};
    std::vector<std::thread> th;
    for (int t = 0; t < T; t++)
        th.emplace_back([&, t] {
            std::vector<float> out;
            std::vector<int32_t> cls;
            ready++;
            while (ready.load() < T) std::this_thread::yield(); /* start together */
            for (int r = 0; r < rounds; r++)
                for (size_t i = 0; i < jobs.size(); i++) {
                    size_t k = (i + (size_t)t * 7 + (size_t)r) % jobs.size();
                    if (!pt_run(m, spec, x, jobs[k], out, cls, D)) {
                        err++;
                        continue;
                    }
                    bad += memcmp(out.data(), ref.out[k].data(), out.size() * sizeof(float)) != 0;
                    bad += cls != ref.cls[k];
                }
        });
    for (auto &t : th) t.join();
    *mismatches = bad.load();
    *errors = err.load();
}

const PtModel pt_models[] = {
    {"MLP",
     {"Dense(32, activation='relu', input_shape=(12,))", "Dropout(0.2)", "Dense(16, activation='tanh')",
      "Dense(4, activation='softmax')"},
     {12},
     4},
    {"CNN",
     {"Conv2D(4, 3, activation='relu', input_shape=(8, 8, 1))", "BatchNormalization()", "MaxPooling2D(2)",
      "Conv2D(6, 2, padding='same', data_format='channels_last')", "GlobalAveragePooling2D()",
      "Dense(3, activation='softmax')"},
     {8, 8, 1},
     3},
    {"LSTM",
     {"Masking(mask_value=0.0, input_shape=(6, 3))", "Bidirectional(GRU(4, return_sequences=True))", "LSTM(6)",
      "Dense(2, activation='softmax')"},
     {6, 3},
     2},
};

} // namespace

TEST_CASE("many threads predict on one model: every output bit for bit as on one thread") {
    ThreadsGuard g;
    nnl::g_threads = 2; /* a call alone on the model uses the pool, the others run alone */
    for (const PtModel &spec : pt_models) {
        INFO("model " << std::string(spec.what));
        const int64_t n = 48;
        std::vector<float> x;
        nnl_model *m = pt_trained(spec, x, n);
        int64_t D = 0, shape[8];
        REQUIRE(nnl_output_shape(m, shape) == 1);
        D = shape[0];
        if (spec.layers[0][0] == 'M') /* some samples with masked steps */
            for (int64_t i = 0; i < n; i += 3) std::fill(x.begin() + i * 18, x.begin() + i * 18 + 6, 0.f);
        std::vector<PtJob> jobs;
        for (int64_t i = 0; i < n; i++) jobs.push_back({i, 1, 1}); /* batch size 1 */
        for (int64_t i = 0; i + 16 <= n; i += 8) jobs.push_back({i, 16, 16}); /* one batch of 16 */
        jobs.push_back({0, n, 5});                                        /* batches of 5, a partial last one */
        jobs.push_back({3, 20, 32});
        PtResult ref = pt_reference(m, spec, x, jobs, D);

        /* in an inference copy for certain: the model's own workspace held
           by this thread, the calls made from another */
        nnl::Model &mm = *m;
        {
            nnl::Hold own(mm.infer_pool.own);
            mm.add_copy();
            REQUIRE(mm.infer_pool.all.size() == 1);
            int bad = 0, err = 0;
            std::thread t([&] { pt_hammer(m, spec, x, jobs, ref, D, 1, 1, &bad, &err); });
            t.join();
            CHECK(err == 0);
            CHECK(bad == 0);
            CHECK(mm.infer_pool.idle.size() == 1); /* given back */
        }

        int bad = 0, err = 0;
        pt_hammer(m, spec, x, jobs, ref, D, 4, 6, &bad, &err);
        CHECK(err == 0);
        CHECK(bad == 0);
        CHECK(mm.infer_pool.inflight.load() == 0);
        CHECK(mm.infer_pool.idle.size() == mm.infer_pool.all.size());

        /* the copies read the model's weights: after more training they
           predict what the model predicts */
        {
            std::vector<int32_t> y((size_t)n);
            for (int64_t i = 0; i < n; i++) y[(size_t)i] = (int32_t)((i + 1) % spec.classes);
            std::vector<int64_t> xs{n};
            xs.insert(xs.end(), spec.per.begin(), spec.per.end());
            int64_t ys[1] = {n};
            nnl_fit_options o;
            nnl_fit_options_init(&o);
            o.epochs = 1;
            o.verbose = 0;
            REQUIRE(nnl_fit(m, x.data(), (int)xs.size(), xs.data(), y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
        }
        PtResult ref2 = pt_reference(m, spec, x, jobs, D);
        CHECK(memcmp(ref2.out[0].data(), ref.out[0].data(), ref.out[0].size() * sizeof(float)) != 0);
        pt_hammer(m, spec, x, jobs, ref2, D, 4, 2, &bad, &err);
        CHECK(err == 0);
        CHECK(bad == 0);
        nnl_model_free(m);
    }
}

TEST_CASE("threads predicting on one model: a new plan drops the copies; models that change run one at a time") {
    ThreadsGuard g;
    nnl::g_threads = 2;
    /* replan (compile, set_device, the layer list) makes the copies again */
    PtModel spec = pt_models[0];
    std::vector<float> x;
    nnl_model *m = pt_trained(spec, x, 32);
    nnl::Model &mm = *m;
    {
        nnl::Hold own(mm.infer_pool.own);
        mm.add_copy();
    }
    REQUIRE(mm.infer_pool.all.size() == 1);
    REQUIRE(nnl_compile(m, "SGD()", "sparse_categorical_crossentropy", nullptr) == NNL_OK); /* replan */
    CHECK(mm.take_copy() == nullptr); /* the old copy is gone */
    CHECK(mm.infer_pool.all.empty());
    CHECK(!mm.serial_inference());
    nnl_model_free(m);

    /* variable length: concurrent calls at different lengths, one at a time */
    nnl_model *v = nnl_model_create();
    REQUIRE(nnl_model_set_seed(v, 3) == NNL_OK);
    REQUIRE(nnl_add(v, "LSTM(5, return_sequences=True, input_shape=(None, 2))") == NNL_OK);
    REQUIRE(nnl_add(v, "Dense(3)") == NNL_OK);
    REQUIRE(static_cast<nnl::Model &>(*v).serial_inference());
    std::vector<float> xv(4 * 9 * 2);
    for (size_t i = 0; i < xv.size(); i++) xv[i] = (float)((i * 37) % 11) / 11.f - 0.5f;
    std::vector<std::vector<float>> ref(9);
    for (int64_t T = 1; T <= 8; T++) {
        int64_t xs[3] = {4, T, 2};
        ref[(size_t)T].resize((size_t)(4 * T * 3));
        REQUIRE(nnl_predict(v, xv.data(), 3, xs, 2, ref[(size_t)T].data(), 4 * T * 3) == NNL_OK);
    }
    std::atomic<int> bad{0}, err{0};
    std::vector<std::thread> th;
    for (int t = 0; t < 4; t++)
        th.emplace_back([&, t] {
            std::vector<float> out;
            for (int r = 0; r < 40; r++) {
                int64_t T = 1 + (t * 3 + r) % 8, xs[3] = {4, T, 2};
                out.assign((size_t)(4 * T * 3), 0.f);
                if (nnl_predict(v, xv.data(), 3, xs, 2, out.data(), (int64_t)out.size()) != NNL_OK) {
                    err++;
                    continue;
                }
                bad += memcmp(out.data(), ref[(size_t)T].data(), out.size() * sizeof(float)) != 0;
            }
        });
    for (auto &t : th) t.join();
    CHECK(err == 0);
    CHECK(bad == 0);
    CHECK(static_cast<nnl::Model &>(*v).infer_pool.all.empty()); /* no copies: one at a time in the model */
    nnl_model_free(v);

    /* stateful: one at a time (the states are the model's); every call succeeds */
    nnl_model *s = nnl_model_create();
    REQUIRE(nnl_add(s, "SimpleRNN(4, stateful=True, batch_input_shape=(2, 3, 2))") == NNL_OK);
    REQUIRE(static_cast<nnl::Model &>(*s).serial_inference());
    std::vector<float> xs6(2 * 3 * 2, 0.25f);
    th.clear();
    for (int t = 0; t < 4; t++)
        th.emplace_back([&] {
            int64_t shp[3] = {2, 3, 2};
            float out[8];
            for (int r = 0; r < 25; r++) err += nnl_predict(s, xs6.data(), 3, shp, 2, out, 8) != NNL_OK;
        });
    for (auto &t : th) t.join();
    CHECK(err == 0);
    nnl_model_free(s);
}
#endif
