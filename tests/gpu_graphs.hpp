/* CUDA graphs of the training step (nnlite.cpp section 6b, gpu_graph_step):
   the same model trained with graphs (the default) and without
   (NNL_CUDA_GRAPHS=0) must end with the same weights and the same history,
   bit for bit, since a replay runs the eager step's kernels with the same
   arguments in the same order. The cases use K-MLP's shape (Dense, Dropout,
   softmax output, RMSprop / Adam), a final partial batch in every epoch,
   validation between epochs, and a callback that changes the learning rate
   mid-epoch. They need a GPU (main() keeps only "no GPU" cases without one). */

namespace gg {

/* NNL_CUDA_GRAPHS for the scope of one fit; restored after */
struct GraphsEnv {
    std::string old;
    bool had;
    explicit GraphsEnv(bool on) {
        const char *e = getenv("NNL_CUDA_GRAPHS");
        had = e != nullptr;
        if (had) old = e;
        if (on)
            unsetenv("NNL_CUDA_GRAPHS");
        else
            setenv("NNL_CUDA_GRAPHS", "0", 1);
    }
    ~GraphsEnv() {
        if (had)
            setenv("NNL_CUDA_GRAPHS", old.c_str(), 1);
        else
            unsetenv("NNL_CUDA_GRAPHS");
    }
};

/* what the callback saw and does: every batch's logs; at (epoch, batch)
   lr_at the learning rate becomes lr */
struct Run {
    std::vector<double> logs;
    int lr_epoch = -1;
    int64_t lr_batch = -1;
    double lr = 0;
};

static int callback(void *user, nnl_model *m, int event, int epoch, int64_t batch, const double *logs, int n) {
    Run &r = *(Run *)user;
    r.logs.push_back((double)event);
    r.logs.insert(r.logs.end(), logs, logs + n);
    if (event == NNL_EVENT_BATCH_END && epoch == r.lr_epoch && batch == r.lr_batch)
        CHECK(nnl_set_learning_rate(m, r.lr) == NNL_OK); /* no REQUIRE: it would throw through nnl_fit */
    return 0;
}

struct Result {
    int rc;
    std::string msg;
    std::vector<float> w;
    std::vector<double> loss, acc, val_loss;
    Run run;
    int64_t replays, captures;
};

/* builds the model (seed 11), moves it to the GPU and trains it with graphs
   on or off */
static Result train(bool graphs, const char *opt, const std::vector<float> &x, const std::vector<int32_t> &y,
                    int epochs, int bs, bool with_callback, Run run) {
    std::vector<const char *> layers = {"Dense(128, activation='relu', input_shape=(784,))", "Dropout(0.2)",
                                        "Dense(64, activation='relu')", "Dropout(0.1)",
                                        "Dense(10, activation='softmax')"};
    nnl_model *m = gm::build(layers, opt, "sparse_categorical_crossentropy", "accuracy", 11);
    REQUIRE_MESSAGE(nnl_set_device(m, "cuda") == NNL_OK, gm::err());
    Result r;
    r.run = run;
    int64_t rep0 = nnl::gpu_graph_replays, cap0 = nnl::gpu_graph_captures;
    {
        GraphsEnv env(graphs);
        int64_t xs[2] = {(int64_t)y.size(), 784}, ys[1] = {(int64_t)y.size()};
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = epochs;
        o.batch_size = bs;
        o.verbose = 0;
        o.seed = 99;
        o.validation_split = 0.1;
        if (with_callback) {
            o.callback = callback;
            o.callback_user = &r.run;
        }
        r.rc = nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o);
        r.msg = r.rc == NNL_OK ? "" : gm::err();
    }
    r.replays = nnl::gpu_graph_replays - rep0;
    r.captures = nnl::gpu_graph_captures - cap0;
    r.w = gm::weights(m);
    auto hist = [&](const char *k, std::vector<double> &v) {
        v.assign(64, 0.0);
        int n = nnl_history_get(m, k, v.data(), (int)v.size());
        v.resize((size_t)std::max(n, 0));
    };
    hist("loss", r.loss);
    hist("accuracy", r.acc);
    hist("val_loss", r.val_loss);
    nnl_model_free(m);
    return r;
}

/* bit for bit: memcmp, so that -0 and 0 differ and NaN equals itself */
template <class T> static bool same_bits(const std::vector<T> &a, const std::vector<T> &b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

} // namespace gg

TEST_CASE("CUDA graphs: K-MLP-like training with and without graphs ends bit for bit the same") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(600, x, y, 21); /* 540 to train (validation_split 0.1): 4 batches of 128 and one of 28 */
    const char *opts[] = {"RMSprop(learning_rate=0.001)", "Adam(learning_rate=0.001)",
                          "SGD(learning_rate=0.05, momentum=0.9, decay=0.01)", "Adamax(learning_rate=0.002, clipvalue=0.01)",
                          "Nadam(learning_rate=0.001)", "Adam(learning_rate=0.001, amsgrad=True)"};
    for (const char *opt : opts) {
        CAPTURE(opt);
        gg::Result e = gg::train(false, opt, x, y, 3, 128, false, gg::Run());
        gg::Result g = gg::train(true, opt, x, y, 3, 128, false, gg::Run());
        REQUIRE(e.rc == NNL_OK);
        REQUIRE(g.rc == NNL_OK);
        CHECK(e.replays == 0);
        CHECK(e.captures == 0);
        /* epoch 1: two eager steps (slots made, warm-up), a capture, replays;
           the partial batch eager; epochs 2 and 3 replay their 4 full batches */
        CHECK(g.captures >= 1);
        CHECK(g.replays >= 2 + 4 + 4);
        CHECK(gg::same_bits(g.w, e.w));
        CHECK(gg::same_bits(g.loss, e.loss));
        CHECK(gg::same_bits(g.acc, e.acc));
        CHECK(gg::same_bits(g.val_loss, e.val_loss));
        CHECK(e.loss.size() == 3);
    }
}

TEST_CASE("CUDA graphs: a learning rate changed by a callback mid-epoch, batch logs and a last partial batch") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(700, x, y, 22); /* 630 to train at batch 96: 6 full batches and one of 54 */
    for (const char *opt : {"RMSprop(learning_rate=0.001)", "Adam(learning_rate=0.001)"}) {
        CAPTURE(opt);
        gg::Run run;
        run.lr_epoch = 0;
        run.lr_batch = 3; /* after the 4th batch: the graphs (captured at the 3rd) replay with the new rate */
        run.lr = 0.0003;
        gg::Result e = gg::train(false, opt, x, y, 3, 96, true, run);
        gg::Result g = gg::train(true, opt, x, y, 3, 96, true, run);
        REQUIRE(e.rc == NNL_OK);
        REQUIRE(g.rc == NNL_OK);
        CHECK(g.replays > 0);
        CHECK(e.replays == 0);
        CHECK(gg::same_bits(g.run.logs, e.run.logs)); /* every batch's running loss and accuracy */
        CHECK(gg::same_bits(g.w, e.w));
        CHECK(gg::same_bits(g.loss, e.loss));
        CHECK(gg::same_bits(g.val_loss, e.val_loss));
        /* the rate change did something: the same run without it differs */
        gg::Result k = gg::train(true, opt, x, y, 3, 96, true, gg::Run());
        CHECK(!gg::same_bits(k.w, g.w));
    }
}

TEST_CASE("CUDA graphs: a step that turns non-finite stops fit at the same batch with the same weights") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(600, x, y, 23); /* 540 to train at batch 50: 10 full batches and one of 40 */
    gg::Run run;
    run.lr_epoch = 0;
    run.lr_batch = 4; /* from the 6th step on (replayed graphs), a rate that blows the weights up */
    run.lr = 1e30;
    gg::Result e = gg::train(false, "SGD(learning_rate=0.01)", x, y, 2, 50, true, run);
    gg::Result g = gg::train(true, "SGD(learning_rate=0.01)", x, y, 2, 50, true, run);
    CHECK(g.rc == e.rc);
    CHECK(g.msg == e.msg);
    CHECK(gg::same_bits(g.w, e.w));
    CHECK(gg::same_bits(g.run.logs, e.run.logs));
    CHECK(g.replays > 0);
}
