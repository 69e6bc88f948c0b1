/* The thread pool (par_for, run_chunks), the GEMM split, and the
   floating-point environment of the work. Included by unit.cpp. */
#include <set>
#include <thread>

namespace {
struct ThreadsGuard { /* restores the default thread count however a test ends */
    ~ThreadsGuard() { nnl::g_threads = 0; }
};
} // namespace

TEST_CASE("par_for covers every index exactly once, inline or in chunks, for any thread count") {
    ThreadsGuard g;
    for (int threads : {1, 2, 3, 8})
        for (int64_t n : {(int64_t)1, (int64_t)1000, (int64_t)40000, (int64_t)300001, (int64_t)1000003}) {
            nnl::g_threads = threads;
            std::vector<std::atomic<int>> seen((size_t)n);
            for (auto &s : seen) s = 0;
            std::atomic<int> calls{0};
            nnl::par_for(n, n, [&](int64_t lo, int64_t hi) {
                calls++;
                REQUIRE(lo < hi);
                for (int64_t i = lo; i < hi; i++) seen[(size_t)i]++;
            });
            int bad = 0;
            for (auto &s : seen) bad += s != 1;
            INFO("threads " << threads << " n " << n << " calls " << calls.load());
            CHECK(bad == 0);
            if (n <= NNL_PAR_MIN_WORK || threads == 1) CHECK(calls == 1); /* small work: no chunks */
        }
}

TEST_CASE("sgemm is bit-for-bit the same on 1, 2, 3 and 4 threads (blocks of rows and of columns)") {
    ThreadsGuard g;
    /* every product is above the threshold at which the GEMM splits */
    struct Case { int M, N, K; } cases[] = {{500, 100, 500}, {128, 500, 400}, {1000, 40, 600}, {61, 997, 300},
                                           {100, 2100, 100},
                                           /* small products split too (R-LENET's convolutions at batch 1) */
                                           {196, 50, 500}, {784, 20, 25}};
    for (auto c : cases)
        REQUIRE((double)c.M * c.N * c.K + 20.0 * ((double)c.M * c.N + (double)c.M * c.K + (double)c.K * c.N) >
                NNL_GEMM_MIN_COST);
    /* and a few rows against wide weights (batched inference of 5-16
       samples): below that cost, split by columns because B is large */
    struct Case few[] = {{16, 128, 784}, {5, 256, 300}, {11, 70, 1000}, {16, 500, 500}};
    for (auto c : few) REQUIRE((int64_t)c.N * c.K >= NNL_GEMM_SMALL_SPLIT);
    std::vector<Case> all(cases, cases + sizeof cases / sizeof cases[0]);
    all.insert(all.end(), few, few + 4);
    for (auto c : all)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int lda = ta ? c.M : c.K, ldb = tb ? c.K : c.N;
            auto A = random_vec((size_t)c.M * c.K, 41), B = random_vec((size_t)c.K * c.N, 42);
            auto bias = random_vec((size_t)c.N, 43);
            std::vector<float> ref;
            for (int threads = 1; threads <= 4; threads++) {
                nnl::g_threads = threads;
                std::vector<float> C((size_t)c.M * c.N, 0.5f), D(C.size());
                nnl::K().sgemm(ta, tb, c.M, c.N, c.K, 1.f, A.data(), lda, B.data(), ldb, 0.25f, C.data(), c.N);
                nnl::K().sgemm_bias_act(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, D.data(), c.N, bias.data(),
                                        nnl::ACT_TANH);
                C.insert(C.end(), D.begin(), D.end());
                INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << ta << " tb=" << tb << " threads "
                          << threads);
                if (threads == 1)
                    ref = C;
                else
                    CHECK(memcmp(C.data(), ref.data(), C.size() * sizeof(float)) == 0);
            }
        }
}

TEST_CASE("Dense backward on two threads: the kernel's gradient and dx at once, the same bits as one thread") {
    ThreadsGuard g;
    const int64_t B = 64, nin = 300, units = 200; /* 3.8M multiply-adds a product */
    REQUIRE((double)B * nin * units >= NNL_DENSE_PAIR_MACS);
    nnl_model m;
    m.seed = 3;
    m.rng.reseed(m.seed);
    m.seeded = true;
    m.add("Input(shape=(300,))");
    m.add("Dense(200, activation='relu')");
    m.ensure_batch(B);
    auto *L = dynamic_cast<nnl::Dense *>(m.layers[0].get());
    REQUIRE(L);
    auto x = random_vec((size_t)(B * nin), 61), dy = random_vec((size_t)(B * units), 62);
    struct Out {
        std::vector<float> y, gw, gb, dx;
    };
    /* dx apart from x, or in x's memory (the arena may lend it: the two
       products must then run one after the other) */
    auto run = [&](int threads, bool alias) {
        nnl::g_threads = threads;
        Out o;
        o.y.resize((size_t)(B * units));
        std::vector<float> xin = x, d = dy, dxv((size_t)(B * nin));
        nnl::Ctx c;
        c.training = true;
        L->forward(xin.data(), o.y.data(), B, c);
        float *dx = alias ? xin.data() : dxv.data();
        CHECK(L->paired_products(nnl::K(), B, nin, xin.data(), dx) == (threads == 2 && !alias));
        L->backward(xin.data(), o.y.data(), d.data(), dx, B, c);
        o.gw.assign(L->weights[0].g, L->weights[0].g + nin * units);
        o.gb.assign(L->weights[1].g, L->weights[1].g + units);
        o.dx.assign(dx, dx + B * nin);
        return o;
    };
    Out ref = run(1, false);
    float gsum = 0;
    for (float v : ref.gw) gsum += std::fabs(v);
    CHECK(gsum > 0); /* relu lets some gradient through */
    for (int threads : {2, 3})
        for (bool alias : {false, true}) {
            INFO("threads " << threads << (alias ? ", dx in x's memory" : ""));
            Out o = run(threads, alias);
            CHECK(o.y == ref.y);
            CHECK(o.gw == ref.gw);
            CHECK(o.gb == ref.gb);
            CHECK(o.dx == ref.dx);
        }
}

TEST_CASE("concurrent callers and a par_for inside a chunk neither deadlock nor mix their work") {
    ThreadsGuard g;
    nnl::g_threads = 2;
    auto job = [](float scale, int rounds, int *bad) {
        const int64_t n = 100000;
        std::vector<float> x((size_t)n), y((size_t)n);
        for (int64_t i = 0; i < n; i++) x[(size_t)i] = (float)(i % 1000);
        for (int r = 0; r < rounds; r++) {
            nnl::par_for(n, n, [&](int64_t lo, int64_t hi) {
                /* nested: runs inline, on whichever thread runs this chunk */
                nnl::par_for(hi - lo, 4 * (hi - lo), [&](int64_t a, int64_t b) {
                    for (int64_t i = lo + a; i < lo + b; i++) y[(size_t)i] = scale * x[(size_t)i] + (float)r;
                });
            });
            for (int64_t i = 0; i < n; i += 997) *bad += y[(size_t)i] != scale * x[(size_t)i] + (float)r;
        }
    };
    int bad[3] = {0, 0, 0};
    std::thread t1(job, 2.f, 200, &bad[0]), t2(job, 3.f, 200, &bad[1]);
    job(5.f, 200, &bad[2]);
    t1.join();
    t2.join();
    CHECK(bad[0] == 0);
    CHECK(bad[1] == 0);
    CHECK(bad[2] == 0);
}

TEST_CASE("an exception in a chunk reaches the caller and leaves the pool usable") {
    ThreadsGuard g;
    nnl::g_threads = 2;
    for (int round = 0; round < 20; round++) {
        std::atomic<int> ran{0};
        bool caught = false;
        try {
            nnl::pool::run_chunks(16, 2, [&](int64_t c) {
                ran++;
                if (c == 5) nnl::raise(NNL_ERR_INTERNAL, "chunk %d", (int)c);
            });
        } catch (const nnl::Error &e) {
            caught = e.msg == "chunk 5";
        }
        CHECK(caught);
        CHECK(ran >= 6);
    }
    std::atomic<int> sum{0};
    nnl::pool::run_chunks(100, 2, [&](int64_t c) { sum += (int)c; });
    CHECK(sum == 4950);
}

#if NNL_FP_CONTROL && NNL_X86 && NNL_THREADS
TEST_CASE("workers run each job in the caller's floating-point mode: denormals flush on every thread") {
    ThreadsGuard g;
    nnl::g_threads = 2;
    const float tiny = 1e-40f; /* a denormal */
    REQUIRE(std::fpclassify(tiny) == FP_SUBNORMAL);
    unsigned keep = _mm_getcsr();
    bool worker_seen = false;
    for (int attempt = 0; attempt < 20 && !worker_seen; attempt++)
        for (bool ftz : {true, false}) {
            _mm_setcsr(ftz ? nnl::fp_work(keep) : keep);
            std::mutex mu;
            std::set<std::thread::id> ids;
            int wrong_mode = 0, wrong_value = 0;
            volatile float one = 1.f;
            nnl::pool::run_chunks(16, 2, [&](int64_t) {
                float v = tiny * one; /* 0 under DAZ/FTZ, tiny otherwise */
                std::this_thread::sleep_for(std::chrono::microseconds(500));
                std::lock_guard<std::mutex> lk(mu);
                ids.insert(std::this_thread::get_id());
                wrong_mode += !nnl::fp_same_mode(_mm_getcsr(), ftz ? nnl::fp_work(keep) : keep);
                wrong_value += ftz ? v != 0.f : v != tiny;
            });
            _mm_setcsr(keep);
            CHECK(wrong_mode == 0);
            CHECK(wrong_value == 0);
            worker_seen = worker_seen || ids.size() > 1;
        }
    CHECK_MESSAGE(worker_seen, "no pool worker took a chunk in 20 attempts");
}
#endif
