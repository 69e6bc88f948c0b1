/* Whole models on the GPU against the same models on the CPU, through the C
   ABI: identical seeds give identical initial weights and dropout masks, so
   after a few steps the weights must agree to float32 accuracy; the seed
   workloads K-MLP and R-LENET must reach the CPU's accuracy. The "no GPU"
   cases run everywhere (main() keeps only them where there is no device). */
#include <sys/stat.h>

namespace gm {

static std::string err() { return nnl_last_error(); }

/* A learnable synthetic 10-class problem of 28 x 28 images: a fixed random
   prototype per class plus noise. */
static void synth(int n, std::vector<float> &x, std::vector<int32_t> &y, uint64_t seed) {
    nnl::Rng proto(7), r(seed);
    std::vector<float> P(10 * 784);
    for (auto &v : P) v = (float)proto.uniform();
    x.resize((size_t)n * 784);
    y.resize((size_t)n);
    for (int i = 0; i < n; i++) {
        int c = (int)r.below(10);
        y[(size_t)i] = c;
        for (int j = 0; j < 784; j++)
            x[(size_t)i * 784 + j] = std::min(1.f, std::max(0.f, P[(size_t)c * 784 + j] + 0.6f * r.normal()));
    }
}

/* The folder named by NNL_GPU_DATA (any four MNIST-style idx .gz files: a GPU
   machine without Debian's package gets MNIST this way), else Fashion-MNIST
   when Debian's dataset-fashion-mnist is installed, else synthetic data. */
static bool fashion(std::vector<float> &xtr, std::vector<int32_t> &ytr, std::vector<float> &xte,
                    std::vector<int32_t> &yte, int ntr, int nte) {
    const char *env = getenv("NNL_GPU_DATA");
    const char *dir = env && env[0] ? env : "/usr/share/datasets/fashion-mnist";
    struct stat st;
    if (stat((std::string(dir) + "/train-images-idx3-ubyte.gz").c_str(), &st) != 0) {
        synth(ntr, xtr, ytr, 1);
        synth(nte, xte, yte, 2);
        return false;
    }
    auto load = [&](const char *img, const char *lab, int n, std::vector<float> &x, std::vector<int32_t> &y) {
        nnl_array *a = nullptr, *b = nullptr;
        REQUIRE_MESSAGE(nnl_load_idx((std::string(dir) + "/" + img).c_str(), NNL_FLOAT32, &a) == NNL_OK, err());
        REQUIRE_MESSAGE(nnl_load_idx((std::string(dir) + "/" + lab).c_str(), NNL_INT64, &b) == NNL_OK, err());
        const float *xa = (const float *)nnl_array_data(a);
        const int64_t *yb = (const int64_t *)nnl_array_data(b);
        x.assign(xa, xa + (size_t)n * 784);
        for (auto &v : x) v /= 255.f;
        y.assign(yb, yb + n);
        nnl_array_free(a);
        nnl_array_free(b);
    };
    load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", ntr, xtr, ytr);
    load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", nte, xte, yte);
    return true;
}

static nnl_model *build(const std::vector<const char *> &layers, const char *opt, const char *loss,
                        const char *metrics, uint64_t seed) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, seed) == NNL_OK);
    for (auto *l : layers) REQUIRE_MESSAGE(nnl_add(m, l) == NNL_OK, err());
    REQUIRE_MESSAGE(nnl_compile(m, opt, loss, metrics) == NNL_OK, err());
    return m;
}

/* weight tensor i of m */
static std::vector<float> weight(nnl_model *m, int i) {
    int rank = 0;
    int64_t shape[8], n = 1;
    REQUIRE(nnl_weight_info(m, i, nullptr, 0, &rank, shape) == NNL_OK);
    for (int k = 0; k < rank; k++) n *= shape[k];
    std::vector<float> w((size_t)n);
    REQUIRE(nnl_get_weight(m, i, w.data(), n) == NNL_OK);
    return w;
}

static std::vector<float> weights(nnl_model *m) {
    std::vector<float> all;
    for (int i = 0; i < nnl_weight_count(m); i++) {
        std::vector<float> w = weight(m, i);
        all.insert(all.end(), w.begin(), w.end());
    }
    return all;
}

static void fit(nnl_model *m, const std::vector<float> &x, const std::vector<int32_t> &y, int rank,
                const int64_t *per, int epochs, int bs, double val = 0) {
    int64_t xs[4] = {(int64_t)y.size()}, ys[1] = {(int64_t)y.size()};
    for (int i = 0; i < rank; i++) xs[i + 1] = per[i];
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = bs;
    o.verbose = 0;
    o.seed = 99;
    o.validation_split = val;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), rank + 1, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK, err());
}

static double accuracy(nnl_model *m, const std::vector<float> &x, const std::vector<int32_t> &y, int rank,
                       const int64_t *per) {
    int64_t xs[4] = {(int64_t)y.size()};
    for (int i = 0; i < rank; i++) xs[i + 1] = per[i];
    std::vector<int32_t> c(y.size());
    REQUIRE(nnl_predict_classes(m, x.data(), rank + 1, xs, 256, c.data(), (int64_t)c.size()) == NNL_OK);
    int hit = 0;
    for (size_t i = 0; i < y.size(); i++) hit += c[i] == y[i];
    return (double)hit / (double)y.size();
}

static double max_rel_diff(const std::vector<float> &a, const std::vector<float> &b) {
    REQUIRE(a.size() == b.size());
    double worst = 0, scale = 1e-3;
    for (float v : b) scale = std::max(scale, (double)std::fabs(v));
    for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, std::fabs((double)a[i] - b[i]) / scale);
    return worst;
}

/* Two trainings that differ only by float rounding (summation orders):
   close on average, and no weight far off. Adam-like steps are about lr
   whatever the gradient's size, so a near-zero gradient whose sign differs
   moves one weight by ~lr: the max bound allows that, a wrong kernel
   (errors of order 1 everywhere) fails both. */
static void agree(const std::vector<float> &g, const std::vector<float> &c, const char *what) {
    REQUIRE(g.size() == c.size());
    double scale = 1e-3, sum = 0;
    for (float v : c) scale = std::max(scale, (double)std::fabs(v));
    for (size_t i = 0; i < g.size(); i++) sum += std::fabs((double)g[i] - c[i]);
    double mean = g.empty() ? 0 : sum / (double)g.size() / scale, worst = max_rel_diff(g, c);
    INFO(std::string(what) << ": mean difference " << mean << ", largest " << worst << " (relative to max |cpu| " << scale
              << ")");
    CHECK(mean < 2e-4);
    CHECK(worst < 5e-2);
}

} // namespace gm

TEST_CASE("no GPU needed: the CUDA and CPU kernel tables have every entry") {
    CHECK(nnl::kernels_complete(nnl::cuda_kernels));
    CHECK(nnl::kernels_complete(nnl::cpu_kernels));
    CHECK(std::string(nnl::cuda_kernels.name) == "cuda");
}

TEST_CASE("no GPU: asking for one fails cleanly and the model stays usable on the CPU") {
    nnl_model *m = gm::build({"Dense(8, activation='relu', input_shape=(4,))", "Dense(3, activation='softmax')"},
                             "Adam()", "sparse_categorical_crossentropy", "accuracy", 3);
    if (nnl_cuda_device_count() == 0) {
        CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
        CHECK(gm::err().find("CUDA") != std::string::npos);
        CHECK(nnl_set_device(m, "cuda:1") == NNL_ERR_UNSUPPORTED);
        CHECK(nnl_set_tf32(m, 1) == NNL_ERR_STATE);
        char buf[64];
        CHECK(nnl_cuda_device_name(0, buf, sizeof buf) == NNL_ERR_UNSUPPORTED);
        CHECK(nnl_set_device(m, "gpu") == NNL_ERR_UNSUPPORTED); /* an alias of "cuda", as in the CPU build */
    } else { /* "gpu" and "GPU:0" are "cuda:0" */
        CHECK(nnl_set_device(m, "gpu") == NNL_OK);
        CHECK(std::string(nnl_get_device(m)) == "cuda:0");
        CHECK(nnl_set_device(m, "cpu") == NNL_OK);
        CHECK(nnl_set_device(m, "GPU:0") == NNL_OK);
        CHECK(std::string(nnl_get_device(m)) == "cuda:0");
        CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    }
    CHECK(nnl_set_device(m, "tpu") == NNL_ERR_ARGUMENT);
    CHECK(nnl_set_device(m, "cuda:x") == NNL_ERR_ARGUMENT);
    CHECK(nnl_set_device(m, "gpu:") == NNL_ERR_ARGUMENT);
    CHECK(gm::err().rfind("nnl_set_device: unknown device 'gpu:'", 0) == 0);
    CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    std::vector<float> x(40, 0.5f), p(30);
    int64_t xs[2] = {10, 4};
    CHECK(nnl_predict(m, x.data(), 2, xs, 0, p.data(), 30) == NNL_OK);
    nnl_model_free(m);
}

namespace gm {
/* a layer whose loops run on the host (Layer::gpu_path false, the
   default): since issue 15 no built-in layer is one */
class HostLoop : public nnl::Layer {
public:
    explicit HostLoop(nnl::Args &) { cls = "HostLoop"; }
    void build(const nnl::Shape &input) override { in = out = input; }
    void config(nnl::Json &) const override {}
    Size size_bound(const nnl::Shape &sh) const override { return {(double)sh.size(), 0}; }
    void forward(const float *x, float *y, int64_t B, const nnl::Ctx &) override {
        memcpy(y, x, (size_t)(B * in.size()) * sizeof(float));
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const nnl::Ctx &) override {
        if (dx) memcpy(dx, dy, (size_t)(B * in.size()) * sizeof(float));
    }
};
} // namespace gm

/* "no GPU" in the name: nnl_set_device checks the layers before it looks for
   a device, so this runs (and must pass) on a machine without one too */
TEST_CASE("no GPU needed: a model with a layer that has no GPU path is refused by name and left on the CPU") {
    nnl::register_layer("HostLoop", {nnl::make_layer<gm::HostLoop>, "HostLoop(input_shape=(3,))"});
    nnl_model *m = gm::build({"Dense(8, input_shape=(4,))", "BatchNormalization()", "HostLoop()", "Reshape((2, 4))",
                              "Bidirectional(GRU(4))", "Dense(3, activation='softmax')"},
                             "Adam()", "sparse_categorical_crossentropy", "", 3);
    CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
    CHECK(gm::err().find("layer 'host_loop' (HostLoop) has no GPU path") != std::string::npos); /* it alone */
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    nnl_model_free(m);
    /* every built-in layer passes the layer check (issue 15: Bidirectional
       and recurrent dropout too): without a device the refusal is about the
       device, naming no layer */
    std::vector<std::vector<const char *>> ok = {
        {"Embedding(7, 3, input_length=5)", "GlobalAveragePooling1D()", "Dense(2, activation='softmax')"},
        {"Embedding(7, 3, mask_zero=True, input_length=5)", "Dense(2, activation='softmax')"},
        {"Masking(input_shape=(5, 3))", "Dense(2, activation='softmax')"},
        {"Embedding(7, 3, mask_zero=True, input_length=5)", "LSTM(4)", "Dense(2, activation='softmax')"},
        {"Embedding(7, 3, input_length=5)", "GRU(4)", "Dense(2, activation='softmax')"},
        {"Embedding(7, 3, input_length=5)", "SimpleRNN(4)", "Dense(2, activation='softmax')"},
        {"LSTM(4, dropout=0.2, input_shape=(5, 3))", "Dense(2, activation='softmax')"},
        {"GRU(4, recurrent_dropout=0.2, input_shape=(5, 3))", "Dense(2, activation='softmax')"},
        {"SimpleRNN(4, dropout=0.2, input_shape=(5, 3))", "Dense(2, activation='softmax')"},
        {"Bidirectional(GRU(4), input_shape=(5, 3))", "Dense(2, activation='softmax')"},
        {"Bidirectional(LSTM(4, return_sequences=True, recurrent_dropout=0.1), merge_mode='mul', input_shape=(5, 3))",
         "GlobalAveragePooling1D()", "Dense(2, activation='softmax')"}};
    for (auto &layers : ok) {
        CAPTURE(layers[0]);
        nnl_model *e = gm::build(layers, "Adam()", "sparse_categorical_crossentropy", "", 3);
        int rc = nnl_set_device(e, "cuda");
        if (nnl_cuda_device_count() == 0) {
            CHECK(rc == NNL_ERR_UNSUPPORTED);
            CHECK(gm::err().find("no GPU path") == std::string::npos);
            CHECK(gm::err().find("no CUDA device") != std::string::npos);
        } else {
            CHECK(rc == NNL_OK);
        }
        nnl_model_free(e);
    }
}

TEST_CASE("every optimizer: GPU steps match CPU steps (MLP with dropout, fused softmax CE)") {
    const char *opts[] = {"SGD(learning_rate=0.05)",
                          "SGD(learning_rate=0.05, momentum=0.9, nesterov=True)",
                          "SGD(learning_rate=0.05, momentum=0.9, decay=0.01)",
                          "RMSprop(learning_rate=0.001)",
                          "RMSprop(learning_rate=0.001, momentum=0.5, centered=True)",
                          "Adagrad(learning_rate=0.05)",
                          "Adadelta(learning_rate=1.0)",
                          "Adam(learning_rate=0.001)",
                          "Adam(learning_rate=0.001, amsgrad=True, clipnorm=0.5)",
                          "AdamW(learning_rate=0.001, weight_decay=0.01, global_clipnorm=1.0)",
                          "Adamax(learning_rate=0.002, clipvalue=0.01)",
                          "Nadam(learning_rate=0.001)"};
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(600, x, y, 5);
    int64_t per[1] = {784};
    for (const char *o : opts) {
        CAPTURE(o);
        std::vector<const char *> layers = {"Dense(64, activation='tanh', input_shape=(784,))", "Dropout(0.2)",
                                            "Dense(32, activation='relu')", "Dense(10, activation='softmax')"};
        nnl_model *c = gm::build(layers, o, "sparse_categorical_crossentropy", "accuracy", 11);
        nnl_model *g = gm::build(layers, o, "sparse_categorical_crossentropy", "accuracy", 11);
        REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
        CHECK(std::string(nnl_get_device(g)) == "cuda:0");
        CHECK(gm::weights(c) == gm::weights(g)); /* nothing changed by the move */
        gm::fit(c, x, y, 1, per, 2, 50, 0.1);
        gm::fit(g, x, y, 1, per, 2, 50, 0.1);
        gm::agree(gm::weights(g), gm::weights(c), "weights");
        double hc[2], hg[2];
        REQUIRE(nnl_history_get(c, "val_loss", hc, 2) == 2);
        REQUIRE(nnl_history_get(g, "val_loss", hg, 2) == 2);
        CHECK(std::fabs(hg[1] - hc[1]) < 5e-3 * std::max(1.0, std::fabs(hc[1])));
        nnl_model_free(c);
        nnl_model_free(g);
    }
}

TEST_CASE("losses on the device (MSE, binary CE, one-hot CE) and a channels-first conv net match the CPU") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(256, x, y, 6);
    std::vector<float> yf(y.begin(), y.end()), y1(y.size()), oh(y.size() * 10, 0.f);
    for (size_t i = 0; i < y.size(); i++) {
        y1[i] = y[i] >= 5 ? 1.f : 0.f;
        oh[i * 10 + (size_t)y[i]] = 1.f;
    }
    struct Case { std::vector<const char *> layers; const char *loss; const std::vector<float> *t; int64_t tw; };
    std::vector<Case> cases = {
        {{"Dense(16, activation='gelu', input_shape=(784,))", "Dense(1)"}, "mse", &yf, 1},
        {{"Dense(16, activation='swish', input_shape=(784,))", "Dense(1, activation='sigmoid')"}, "binary_crossentropy", &y1, 1},
        {{"Reshape((1, 28, 28), input_shape=(784,))",
          "Conv2D(4, 5, padding='same', activation='relu', data_format='channels_first')",
          "MaxPooling2D(2, data_format='channels_first')", "Conv2D(6, 3, strides=2, activation='elu')",
          "AveragePooling2D(2, padding='same')", "Flatten()", "Dense(10, activation='softmax')"},
         "categorical_crossentropy", &oh, 10}};
    for (auto &cs : cases) {
        CAPTURE(cs.loss);
        nnl_model *c = gm::build(cs.layers, "Adam(learning_rate=0.003)", cs.loss, "", 21);
        nnl_model *g = gm::build(cs.layers, "Adam(learning_rate=0.003)", cs.loss, "", 21);
        REQUIRE_MESSAGE(nnl_set_device(g, "cuda:0") == NNL_OK, gm::err());
        int64_t xs[2] = {256, 784}, ys[2] = {256, cs.tw};
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = 2;
        o.batch_size = 32;
        o.verbose = 0;
        o.seed = 5;
        REQUIRE_MESSAGE(nnl_fit(c, x.data(), 2, xs, cs.t->data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, gm::err());
        REQUIRE_MESSAGE(nnl_fit(g, x.data(), 2, xs, cs.t->data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, gm::err());
        gm::agree(gm::weights(g), gm::weights(c), "weights");
        std::vector<float> pc((size_t)(256 * cs.tw)), pg(pc.size());
        REQUIRE(nnl_predict(c, x.data(), 2, xs, 64, pc.data(), (int64_t)pc.size()) == NNL_OK);
        REQUIRE(nnl_predict(g, x.data(), 2, xs, 64, pg.data(), (int64_t)pg.size()) == NNL_OK);
        gm::agree(pg, pc, "predictions");
        nnl_model_free(c);
        nnl_model_free(g);
    }
}

/* BatchNormalization, the global poolings, ZeroPadding2D and UpSampling2D
   in both data formats: a few Adam steps on the GPU and on the CPU from the
   same initial weights, then the weights (moving statistics included)
   compared with gm::agree, the bound of the other conv-net cases: only
   summation orders differ (GEMMs, column sums), errors of float32 rounding
   amplified by a few steps; then inference (batch norm with its moving
   statistics) with the same weights on both, to float32 rounding. */
TEST_CASE("batch norm, global pooling, zero padding and upsampling: GPU steps match CPU steps") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(256, x, y, 9);
    std::vector<std::vector<const char *>> nets = {
        {"Reshape((28, 28, 1), input_shape=(784,))", "Conv2D(4, 3, activation='relu')", "BatchNormalization()",
         "ZeroPadding2D(((1, 2), (0, 1)))", "MaxPooling2D(2)", "UpSampling2D((2, 1))", "Conv2D(6, 3)",
         "BatchNormalization(center=False, momentum=0.9)", "GlobalAveragePooling2D()",
         "Dense(10, activation='softmax')"},
        {"Reshape((1, 28, 28), input_shape=(784,))", "Conv2D(4, 3, activation='relu', data_format='channels_first')",
         "BatchNormalization(axis=1, scale=False)", "MaxPooling2D(2, data_format='channels_first')",
         "ZeroPadding2D(1, data_format='channels_first')", "UpSampling2D(2, data_format='channels_first')",
         "GlobalMaxPooling2D(data_format='channels_first')", "Dense(10, activation='softmax')"},
        {"Reshape((49, 16), input_shape=(784,))", "Conv1D(8, 3, activation='tanh')", "BatchNormalization()",
         "GlobalMaxPooling1D()", "Dense(10, activation='softmax')"},
        {"Reshape((16, 49), input_shape=(784,))", "GlobalAveragePooling1D(data_format='channels_first')",
         "BatchNormalization()", "Dense(10, activation='softmax')"},
        {"Reshape((4, 14, 14, 1), input_shape=(784,))", "Conv3D(3, 2, activation='relu')", "BatchNormalization()",
         "GlobalAveragePooling3D()", "Dense(10, activation='softmax')"},
        {"Reshape((1, 4, 14, 14), input_shape=(784,))", "Conv3D(3, 2, data_format='channels_first')",
         "GlobalMaxPooling3D(data_format='channels_first')", "Dense(10, activation='softmax')"}};
    int64_t per[1] = {784}, xs[2] = {256, 784};
    for (size_t k = 0; k < nets.size(); k++) {
        CAPTURE(k);
        nnl_model *c = gm::build(nets[k], "Adam(learning_rate=0.003)", "sparse_categorical_crossentropy", "accuracy", 31);
        nnl_model *g = gm::build(nets[k], "Adam(learning_rate=0.003)", "sparse_categorical_crossentropy", "accuracy", 31);
        REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
        CHECK(gm::weights(c) == gm::weights(g));
        gm::fit(c, x, y, 1, per, 2, 32);
        gm::fit(g, x, y, 1, per, 2, 32);
        gm::agree(gm::weights(g), gm::weights(c), "weights");
        /* inference with the same weights on both (the GPU model's, moving
           statistics included): the forward kernels alone, to float32
           rounding. (Predictions of the two trainings differed by 5e-4 on
           average on an H200: batch norm's moving variance amplifies the
           weights' rounding differences; the weights are checked above.) */
        for (int i = 0; i < nnl_weight_count(g); i++) {
            std::vector<float> w = gm::weight(g, i);
            REQUIRE(nnl_set_weight(c, i, w.data(), (int64_t)w.size()) == NNL_OK);
        }
        std::vector<float> pc(2560), pg(2560);
        REQUIRE(nnl_predict(c, x.data(), 2, xs, 64, pc.data(), 2560) == NNL_OK);
        REQUIRE(nnl_predict(g, x.data(), 2, xs, 64, pg.data(), 2560) == NNL_OK);
        CHECK(gm::max_rel_diff(pg, pc) < 1e-4);
        nnl_model_free(c);
        nnl_model_free(g);
    }
}

/* Every loss with every metric that goes with it, trained on the GPU and on
   the CPU from the same seeds with plain SGD (no Adam-style sign
   sensitivity: the two runs differ by float rounding only): the per-epoch
   history (training and validation: the evaluation path, without a
   gradient) and the final weights agree, and every batch's loss ran on the
   device (gpu_loss's counters). Hit counts may differ by a sample whose
   prediction is a rounding away from the boundary: one per epoch allowed. */
TEST_CASE("every loss and metric on the device: GPU history and weights match the CPU") {
    std::vector<float> x;
    std::vector<int32_t> y;
    const int n = 256;
    gm::synth(n, x, y, 12);
    std::vector<float> ids(y.begin(), y.end()), val(y.size()), bin(y.size()), oh(y.size() * 10, 0.f),
        ids3(y.size() * 3), oh3(y.size() * 30, 0.f);
    for (size_t i = 0; i < y.size(); i++) {
        val[i] = (float)y[i] * 0.3f - 1.f;
        bin[i] = y[i] >= 5 ? 1.f : 0.f;
        oh[i * 10 + (size_t)y[i]] = 1.f;
        for (size_t q = 0; q < 3; q++) { /* three positions: the class, then two shifted copies */
            int c = (y[i] + (int)q * 3) % 10;
            ids3[i * 3 + q] = (float)c;
            oh3[i * 30 + q * 10 + (size_t)c] = 1.f;
        }
    }
    const char *dense16 = "Dense(16, activation='tanh', input_shape=(784,))";
    struct Case {
        std::vector<const char *> layers;
        const char *loss, *metrics;
        const std::vector<float> *t;
        std::vector<int64_t> tshape; /* per sample */
    };
    std::vector<Case> cases = {
        {{dense16, "Dense(1)"}, "mse", "mae, mse", &val, {1}},
        {{dense16, "Dense(1)"}, "mae", "mse", &val, {1}},
        {{dense16, "Dense(1)"}, "huber(delta=0.5)", "mae", &val, {1}},
        {{dense16, "Dense(1, activation='sigmoid')"}, "binary_crossentropy",
         "accuracy, binary_accuracy(threshold=0.3), mse", &bin, {1}},
        {{dense16, "Dense(1)"}, "binary_crossentropy(from_logits=True)", "accuracy", &bin, {1}},
        {{dense16, "Dense(1, activation='sigmoid')", "Activation('linear')"}, "binary_crossentropy",
         "binary_accuracy", &bin, {1}},
        {{dense16, "Dense(10, activation='sigmoid')"}, "binary_crossentropy", "binary_accuracy, categorical_accuracy",
         &oh, {10}},
        {{dense16, "Dense(10, activation='softmax')"}, "categorical_crossentropy",
         "accuracy, top_k_categorical_accuracy(k=3), perplexity", &oh, {10}},
        {{dense16, "Dense(10)"}, "categorical_crossentropy(from_logits=True)", "accuracy, perplexity", &oh, {10}},
        {{dense16, "Dense(10, activation='softmax')", "Activation('linear')"}, "categorical_crossentropy",
         "accuracy, mae", &oh, {10}},
        {{dense16, "Dense(10, activation='softmax')", "Activation('linear')"}, "sparse_categorical_crossentropy",
         "accuracy, sparse_top_k_categorical_accuracy(k=3), perplexity", &ids, {1}},
        {{dense16, "Dense(10, activation='softmax')"}, "sparse_categorical_crossentropy",
         "accuracy, sparse_top_k_categorical_accuracy(k=2)", &ids, {1}},
        {{dense16, "Dense(10)"}, "sparse_categorical_crossentropy(from_logits=True)", "accuracy, perplexity", &ids,
         {1}},
        {{dense16, "Dense(10)"}, "mse", "categorical_accuracy, top_k_categorical_accuracy(k=2)", &oh, {10}},
        /* three positions per sample: the losses' and metrics' mean over positions */
        {{dense16, "Dense(30)", "Reshape((3, 10))", "Activation('softmax')"}, "categorical_crossentropy",
         "accuracy, perplexity", &oh3, {3, 10}},
        {{dense16, "Dense(30)", "Reshape((3, 10))", "Activation('softmax')"}, "sparse_categorical_crossentropy",
         "accuracy, sparse_top_k_categorical_accuracy(k=2)", &ids3, {3}},
    };
    for (auto &cs : cases) {
        CAPTURE(cs.loss);
        CAPTURE(cs.metrics);
        CAPTURE(cs.layers.size());
        nnl_model *c = gm::build(cs.layers, "SGD(learning_rate=0.05)", cs.loss, cs.metrics, 31);
        nnl_model *g = gm::build(cs.layers, "SGD(learning_rate=0.05)", cs.loss, cs.metrics, 31);
        REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
        int64_t xs[2] = {n, 784}, ys[3] = {n, cs.tshape[0], cs.tshape.size() > 1 ? cs.tshape[1] : 0};
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = 3;
        o.batch_size = 32;
        o.verbose = 0;
        o.seed = 5;
        o.validation_split = 0.25;
        int yr = 1 + (int)cs.tshape.size();
        REQUIRE_MESSAGE(nnl_fit(c, x.data(), 2, xs, cs.t->data(), NNL_FLOAT32, yr, ys, &o) == NNL_OK, gm::err());
        int64_t dev0 = nnl::gpu_loss_device_steps, host0 = nnl::gpu_loss_host_steps;
        REQUIRE_MESSAGE(nnl_fit(g, x.data(), 2, xs, cs.t->data(), NNL_FLOAT32, yr, ys, &o) == NNL_OK, gm::err());
        /* 192 training samples (6 batches) and 64 validation samples per epoch */
        CHECK(nnl::gpu_loss_device_steps - dev0 >= 3 * 7);
        CHECK(nnl::gpu_loss_host_steps - host0 == 0);
        gm::agree(gm::weights(g), gm::weights(c), "weights");
        CHECK(gm::max_rel_diff(gm::weights(g), gm::weights(c)) < 1e-3);
        /* fixed-order reductions: a second GPU run repeats the first bit for bit */
        nnl_model *g2 = gm::build(cs.layers, "SGD(learning_rate=0.05)", cs.loss, cs.metrics, 31);
        REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
        REQUIRE_MESSAGE(nnl_fit(g2, x.data(), 2, xs, cs.t->data(), NNL_FLOAT32, yr, ys, &o) == NNL_OK, gm::err());
        CHECK(gm::weights(g2) == gm::weights(g));
        double l1[3], l2[3];
        REQUIRE(nnl_history_get(g, "val_loss", l1, 3) == 3);
        REQUIRE(nnl_history_get(g2, "val_loss", l2, 3) == 3);
        CHECK(std::equal(l1, l1 + 3, l2));
        nnl_model_free(g2);
        int nk = nnl_history_key_count(c);
        REQUIRE(nnl_history_key_count(g) == nk);
        REQUIRE(nk >= 4); /* loss, val_loss and a metric of each */
        for (int k = 0; k < nk; k++) {
            std::string key = nnl_history_key(c, k);
            CAPTURE(key);
            REQUIRE(key == nnl_history_key(g, k));
            double hc[3], hg[3];
            REQUIRE(nnl_history_get(c, key.c_str(), hc, 3) == 3);
            REQUIRE(nnl_history_get(g, key.c_str(), hg, 3) == 3);
            bool hits = key.find("accuracy") != std::string::npos;
            for (int e = 0; e < 3; e++) {
                CAPTURE(e);
                INFO("gpu " << hg[e] << ", cpu " << hc[e]);
                CHECK(std::isfinite(hg[e]));
                if (hits) /* a fraction of 192 or 64 samples (of 3 x as many positions): one sample apart at most */
                    CHECK(std::fabs(hg[e] - hc[e]) <= 1.0 / 64 + 1e-9);
                else
                    CHECK(std::fabs(hg[e] - hc[e]) <= 1e-4 * std::max(1.0, std::fabs(hc[e])));
            }
        }
        nnl_model_free(c);
        nnl_model_free(g);
    }
}

/* Batch norm first: its input is the data, so its batch statistics differ
   between the devices only by the order of the double-precision column
   sums (at most an ulp once rounded to float), and the moving statistics'
   update is the same rounded operations on both: after 16 steps they agree
   to a few ulps (bound 1e-5 relative), and they come back to the host when
   fit returns. */
TEST_CASE("batch norm's moving statistics: updated on the GPU, the CPU's to a few ulps, back on the host") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(512, x, y, 10);
    int64_t per[1] = {784};
    std::vector<const char *> layers = {"BatchNormalization(momentum=0.8, input_shape=(784,))",
                                        "Dense(10, activation='softmax')"};
    nnl_model *c = gm::build(layers, "SGD(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy", 12);
    nnl_model *g = gm::build(layers, "SGD(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy", 12);
    REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
    gm::fit(c, x, y, 1, per, 1, 32);
    gm::fit(g, x, y, 1, per, 1, 32);
    for (int w = 2; w < 4; w++) { /* gamma, beta, moving_mean, moving_variance */
        CAPTURE(w);
        std::vector<float> mc(784), mg(784);
        REQUIRE(nnl_get_weight(c, w, mc.data(), 784) == NNL_OK);
        REQUIRE(nnl_get_weight(g, w, mg.data(), 784) == NNL_OK);
        double moved = 0;
        for (float v : mg) moved = std::max(moved, std::fabs((double)v - (w == 2 ? 0.0 : 1.0)));
        CHECK(moved > 1e-2); /* trained on the device, and brought back */
        CHECK(gm::max_rel_diff(mg, mc) < 1e-5);
    }
    nnl_model_free(c);
    nnl_model_free(g);
}

TEST_CASE("host writes reach the GPU; moving back to the CPU keeps the trained weights") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(200, x, y, 8);
    int64_t per[1] = {784}, xs[2] = {200, 784};
    std::vector<const char *> layers = {"Dense(10, activation='softmax', input_shape=(784,))"};
    nnl_model *g = gm::build(layers, "SGD(learning_rate=0.1)", "sparse_categorical_crossentropy", "accuracy", 4);
    REQUIRE(nnl_set_device(g, "cuda") == NNL_OK);
    gm::fit(g, x, y, 1, per, 1, 20);
    std::vector<float> p1(2000), p2(2000), z(7840, 0.f);
    REQUIRE(nnl_set_weight(g, 0, z.data(), 7840) == NNL_OK); /* all-zero kernel: uniform rows */
    REQUIRE(nnl_predict(g, x.data(), 2, xs, 0, p1.data(), 2000) == NNL_OK);
    std::vector<float> b(10);
    REQUIRE(nnl_get_weight(g, 1, b.data(), 10) == NNL_OK);
    /* softmax of the bias alone */
    double mx = *std::max_element(b.begin(), b.end()), s = 0;
    for (float v : b) s += std::exp(v - mx);
    CHECK(std::fabs(p1[3] - std::exp(b[3] - mx) / s) < 1e-5);
    gm::fit(g, x, y, 1, per, 1, 20);
    std::vector<float> w = gm::weights(g);
    REQUIRE(nnl_predict(g, x.data(), 2, xs, 0, p1.data(), 2000) == NNL_OK);
    REQUIRE(nnl_set_device(g, "cpu") == NNL_OK);
    CHECK(gm::weights(g) == w);
    REQUIRE(nnl_predict(g, x.data(), 2, xs, 0, p2.data(), 2000) == NNL_OK);
    CHECK(gm::max_rel_diff(p1, p2) < 1e-4);
    nnl_model_free(g);
}

TEST_CASE("K-MLP and R-LENET on the GPU reach the CPU's accuracy") {
    std::vector<float> xtr, xte;
    std::vector<int32_t> ytr, yte;
    bool real = gm::fashion(xtr, ytr, xte, yte, 12000, 2000);
    const char *env = getenv("NNL_GPU_DATA");
    MESSAGE("data: " << (!real ? std::string("synthetic prototypes + noise")
                               : std::string(env && env[0] ? env : "Fashion-MNIST") + " (12000 train, 2000 test)"));
    struct Seed { const char *name; std::vector<const char *> layers; int rank; int64_t per[3]; int bs; int epochs; };
    std::vector<Seed> seeds = {
        {"K-MLP", {"Flatten(input_shape=(28, 28))", "Dense(128, activation='relu')", "Dense(10, activation='softmax')"},
         2, {28, 28, 0}, 120, 3},
        {"R-LENET",
         {"Conv2D(20, 5, padding='same', activation='relu', data_format='channels_first', input_shape=(1, 28, 28))",
          "MaxPooling2D(2, data_format='channels_first')",
          "Conv2D(50, 5, padding='same', activation='relu', data_format='channels_first')",
          "MaxPooling2D(2, data_format='channels_first')", "Flatten()", "Dense(500, activation='relu')",
          "Dense(10, activation='softmax')"},
         3, {1, 28, 28}, 128, 2}};
    for (auto &s : seeds) {
        INFO(std::string(s.name));
        nnl_model *c = gm::build(s.layers, "Adam()", "sparse_categorical_crossentropy", "accuracy", 1);
        gm::fit(c, xtr, ytr, s.rank, s.per, s.epochs, s.bs);
        double ac = gm::accuracy(c, xte, yte, s.rank, s.per);
        nnl_model_free(c);
        for (int tf32 = 0; tf32 < 2; tf32++) {
            nnl_model *g = gm::build(s.layers, "Adam()", "sparse_categorical_crossentropy", "accuracy", 1);
            REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
            if (tf32 && nnl_set_tf32(g, 1) != NNL_OK) {
                MESSAGE("TF32 not available on this GPU");
                nnl_model_free(g);
                break;
            }
            gm::fit(g, xtr, ytr, s.rank, s.per, s.epochs, s.bs);
            double ag = gm::accuracy(g, xte, yte, s.rank, s.per);
            MESSAGE(std::string(s.name) << (tf32 ? " TF32" : " FP32") << ": test accuracy CPU " << ac << ", GPU " << ag);
            CHECK(ag >= ac - 0.015);
            CHECK(ag > (real ? 0.8 : 0.9));
            nnl_model_free(g);
        }
    }
}

namespace gm {
/* A CPU and a GPU model of the same layers and seed, trained with plain SGD
   on the same data (ids or values x, per-sample shape xper; targets t,
   per-sample shape tper, as floats): the per-epoch history of every key
   (training and validation) and the weights agree as in the every-loss
   case; hits may differ by one sample (of 64) per epoch. Returns the
   batches whose loss ran on the device and on the host during the GPU fit. */
struct SeqRun {
    int64_t device_steps = 0, host_steps = 0;
};
/* 3 epochs of 32-sample batches, a quarter for validation */
static void fit_seq(nnl_model *m, const std::vector<float> &x, const std::vector<int64_t> &xper,
                    const std::vector<float> &t, const std::vector<int64_t> &tper, int n) {
    std::vector<int64_t> xs = {n}, ts = {n};
    xs.insert(xs.end(), xper.begin(), xper.end());
    ts.insert(ts.end(), tper.begin(), tper.end());
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 3;
    o.batch_size = 32;
    o.verbose = 0;
    o.seed = 5;
    o.validation_split = 0.25;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), (int)xs.size(), xs.data(), t.data(), NNL_FLOAT32, (int)ts.size(), ts.data(),
                            &o) == NNL_OK,
                    err());
}
static const char *const SEQ_OPT = "SGD(learning_rate=0.1)";
static const uint64_t SEQ_SEED = 41;
static SeqRun fit_both(const std::vector<const char *> &layers, const char *loss, const char *metrics,
                       const std::vector<float> &x, const std::vector<int64_t> &xper, const std::vector<float> &t,
                       const std::vector<int64_t> &tper, int n, nnl_model **cpu = nullptr, nnl_model **gpu = nullptr) {
    nnl_model *c = build(layers, SEQ_OPT, loss, metrics, SEQ_SEED);
    nnl_model *g = build(layers, SEQ_OPT, loss, metrics, SEQ_SEED);
    REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, err());
    CHECK(weights(c) == weights(g)); /* nothing changed by the move */
    fit_seq(c, x, xper, t, tper, n);
    SeqRun run;
    int64_t dev0 = nnl::gpu_loss_device_steps, host0 = nnl::gpu_loss_host_steps;
    fit_seq(g, x, xper, t, tper, n);
    run.device_steps = nnl::gpu_loss_device_steps - dev0;
    run.host_steps = nnl::gpu_loss_host_steps - host0;
    agree(weights(g), weights(c), "weights");
    CHECK(max_rel_diff(weights(g), weights(c)) < 1e-3);
    int nk = nnl_history_key_count(c);
    REQUIRE(nnl_history_key_count(g) == nk);
    REQUIRE(nk >= 4); /* loss, val_loss and a metric of each */
    for (int k = 0; k < nk; k++) {
        std::string key = nnl_history_key(c, k);
        CAPTURE(key);
        REQUIRE(key == nnl_history_key(g, k));
        double hc[3], hg[3];
        REQUIRE(nnl_history_get(c, key.c_str(), hc, 3) == 3);
        REQUIRE(nnl_history_get(g, key.c_str(), hg, 3) == 3);
        bool hits = key.find("accuracy") != std::string::npos;
        for (int e = 0; e < 3; e++) {
            CAPTURE(e);
            INFO("gpu " << hg[e] << ", cpu " << hc[e]);
            CHECK(std::isfinite(hg[e]));
            if (hits) /* a fraction of the kept positions: one sample's worth apart at most */
                CHECK(std::fabs(hg[e] - hc[e]) <= 1.0 / 64 + 1e-9);
            else
                CHECK(std::fabs(hg[e] - hc[e]) <= 1e-4 * std::max(1.0, std::fabs(hc[e])));
        }
    }
    if (cpu)
        *cpu = c;
    else
        nnl_model_free(c);
    if (gpu)
        *gpu = g;
    else
        nnl_model_free(g);
    return run;
}
} // namespace gm

/* Embedding on the GPU (issue 15): ids -> Embedding -> GlobalAveragePooling1D
   -> Dense trained on both devices; 12 ids of 40 per sample and 32 samples
   a batch, so ids repeat within a batch (the gradient's row lists) and both
   edge ids occur. The output is not masked: every batch's loss runs on the
   device. The embedding table's gradient is the CPU's order of additions,
   the rest differs by GEMM rounding: gm::agree's bounds. Then: a second GPU
   run repeats the first bit for bit (no atomics anywhere), predictions with
   the same weights agree, and a bad id is refused on the GPU model with the
   CPU model's error, word for word (both check on the host). */
TEST_CASE("Embedding -> GlobalAveragePooling1D -> Dense: GPU history and weights match the CPU") {
    const int n = 256, T = 12, V = 40;
    nnl::Rng r(17);
    std::vector<float> x((size_t)(n * T)), t((size_t)n);
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int q = 0; q < T; q++) {
            float id = (float)r.below(V);
            x[(size_t)(i * T + q)] = id;
            sum += id;
        }
        t[(size_t)i] = (float)std::min(3, (int)(sum / T / 10.0)); /* the mean id's decade: 4 classes */
    }
    x[0] = 0.f;
    x[1] = (float)(V - 1);
    std::vector<const char *> layers = {"Embedding(40, 8, input_length=12)", "GlobalAveragePooling1D()",
                                        "Dense(4, activation='softmax')"};
    const char *loss = "sparse_categorical_crossentropy", *metrics = "accuracy";
    nnl_model *c = nullptr, *g = nullptr;
    gm::SeqRun run = gm::fit_both(layers, loss, metrics, x, {T}, t, {}, n, &c, &g);
    CHECK(run.device_steps >= 3 * 8); /* 6 training and 2 validation batches an epoch */
    CHECK(run.host_steps == 0);
    /* a second GPU run: the same weights bit for bit */
    nnl_model *g2 = gm::build(layers, gm::SEQ_OPT, loss, metrics, gm::SEQ_SEED);
    REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
    gm::fit_seq(g2, x, {T}, t, {}, n);
    CHECK(gm::weights(g2) == gm::weights(g));
    nnl_model_free(g2);
    /* predictions with the same weights (the GPU model's) on both: the
       forward kernels alone, to float32 rounding */
    for (int i = 0; i < nnl_weight_count(g); i++) {
        std::vector<float> w = gm::weight(g, i);
        REQUIRE(nnl_set_weight(c, i, w.data(), (int64_t)w.size()) == NNL_OK);
    }
    int64_t xs[2] = {n, T};
    std::vector<float> pc((size_t)(n * 4)), pg(pc.size());
    REQUIRE(nnl_predict(c, x.data(), 2, xs, 64, pc.data(), (int64_t)pc.size()) == NNL_OK);
    REQUIRE(nnl_predict(g, x.data(), 2, xs, 64, pg.data(), (int64_t)pg.size()) == NNL_OK);
    CHECK(gm::max_rel_diff(pg, pc) < 1e-4);
    /* a bad id: the same refusal on both devices */
    for (float bad : {(float)V, -1.f, 2.5f}) {
        CAPTURE(bad);
        std::vector<float> xb = x;
        xb[(size_t)(3 * T + 5)] = bad;
        std::vector<float> t2 = t;
        int64_t ts[1] = {n};
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.verbose = 0;
        o.epochs = 1;
        CHECK(nnl_fit(c, xb.data(), 2, xs, t2.data(), NNL_FLOAT32, 1, ts, &o) == NNL_ERR_ARGUMENT);
        std::string ec = gm::err();
        CHECK(nnl_fit(g, xb.data(), 2, xs, t2.data(), NNL_FLOAT32, 1, ts, &o) == NNL_ERR_ARGUMENT);
        CHECK(gm::err() == ec);
        CHECK(ec.find("holds the id") != std::string::npos);
        CHECK(nnl_predict(c, xb.data(), 2, xs, 64, pc.data(), (int64_t)pc.size()) == NNL_ERR_ARGUMENT);
        ec = gm::err();
        CHECK(nnl_predict(g, xb.data(), 2, xs, 64, pg.data(), (int64_t)pg.size()) == NNL_ERR_ARGUMENT);
        CHECK(gm::err() == ec);
    }
    CHECK(std::string(nnl_get_device(g)) == "cuda:0");
    nnl_model_free(c);
    nnl_model_free(g);
}

/* Step-masked outputs on the GPU: Embedding(mask_zero=True) and Masking
   write the step mask on the device (the mirror of Model::maskbuf); the
   masked loss and metrics take the host path (the outputs and the mask come
   down, the gradient goes up), so every batch's loss is a host step; the
   backward passes read the device's mask. Sequences of 3..T steps, padded
   with zeros (ids 0 / all-zero feature rows) after their end, so the masked
   positions lie at each sample's tail and every batch holds some. */
TEST_CASE("Embedding(mask_zero=True) and Masking with per-step Dense: masked outputs on the GPU match the CPU") {
    const int n = 256, T = 10;
    nnl::Rng r(23);
    std::vector<int> len((size_t)n);
    for (auto &l : len) l = 3 + (int)r.below(T - 2);
    SUBCASE("Embedding(mask_zero=True) -> Dense -> Dense(softmax) per step, sparse targets") {
        const int V = 30;
        std::vector<float> x((size_t)(n * T), 0.f), t((size_t)(n * T), 0.f);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < len[(size_t)i]; q++) {
                float id = (float)(1 + r.below(V - 1));
                x[(size_t)(i * T + q)] = id;
                t[(size_t)(i * T + q)] = (float)((int)id % 5);
            }
        x[(size_t)(5 * T)] = (float)(V - 1);
        gm::SeqRun run = gm::fit_both({"Embedding(30, 6, mask_zero=True, input_length=10)",
                                       "Dense(16, activation='tanh')", "Dense(5, activation='softmax')"},
                                      "sparse_categorical_crossentropy", "accuracy", x, {T}, t, {T}, n);
        CHECK(run.host_steps >= 3 * 8);
        CHECK(run.device_steps == 0);
    }
    SUBCASE("Masking -> Dense -> Dense per step, MSE") {
        const int F = 3;
        std::vector<float> x((size_t)(n * T * F), 0.f), t((size_t)(n * T), 0.f);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < len[(size_t)i]; q++) {
                float s = 0;
                for (int f = 0; f < F; f++) {
                    float v = (float)r.uniform() - 0.5f;
                    x[(size_t)((i * T + q) * F + f)] = v;
                    s += v;
                }
                t[(size_t)(i * T + q)] = s;
            }
        gm::SeqRun run = gm::fit_both({"Masking(mask_value=0.0, input_shape=(10, 3))", "Dense(8, activation='tanh')",
                                       "Dense(1)"},
                                      "mse", "mae", x, {T, F}, t, {T, 1}, n);
        CHECK(run.host_steps >= 3 * 8);
        CHECK(run.device_steps == 0);
    }
}

/* LSTM on the GPU (issue 15): per step, the recurrent product is a
   K().sgemm and the cell one lstm_forward / lstm_backward launch; the
   weights' gradients are GEMMs over all steps and the bias gradient
   bias_grad (fixed order). Embedding -> LSTM -> Dense with Keras' default
   activations, the last output only: every batch's loss on the device; a
   second GPU run repeats the first bit for bit; predictions with the same
   weights agree. Tolerances as the other sequence models (gm::fit_both). */
TEST_CASE("Embedding -> LSTM -> Dense: GPU history and weights match the CPU") {
    const int n = 256, T = 12, V = 40;
    nnl::Rng r(31);
    std::vector<float> x((size_t)(n * T)), t((size_t)n);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(V);
        /* the class of the last ids: order matters, as a recurrent layer sees it */
        t[(size_t)i] = (float)(((int)x[(size_t)(i * T + T - 1)] + (int)x[(size_t)(i * T + T - 2)]) % 4);
    }
    std::vector<const char *> layers = {"Embedding(40, 8, input_length=12)", "LSTM(16)",
                                        "Dense(4, activation='softmax')"};
    const char *loss = "sparse_categorical_crossentropy", *metrics = "accuracy";
    nnl_model *c = nullptr, *g = nullptr;
    gm::SeqRun run = gm::fit_both(layers, loss, metrics, x, {T}, t, {}, n, &c, &g);
    CHECK(run.device_steps >= 3 * 8);
    CHECK(run.host_steps == 0);
    nnl_model *g2 = gm::build(layers, gm::SEQ_OPT, loss, metrics, gm::SEQ_SEED);
    REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
    gm::fit_seq(g2, x, {T}, t, {}, n);
    CHECK(gm::weights(g2) == gm::weights(g)); /* no atomics: the same bits */
    nnl_model_free(g2);
    for (int i = 0; i < nnl_weight_count(g); i++) {
        std::vector<float> w = gm::weight(g, i);
        REQUIRE(nnl_set_weight(c, i, w.data(), (int64_t)w.size()) == NNL_OK);
    }
    int64_t xs[2] = {n, T};
    std::vector<float> pc((size_t)(n * 4)), pg(pc.size());
    REQUIRE(nnl_predict(c, x.data(), 2, xs, 64, pc.data(), (int64_t)pc.size()) == NNL_OK);
    REQUIRE(nnl_predict(g, x.data(), 2, xs, 64, pg.data(), (int64_t)pg.size()) == NNL_OK);
    CHECK(gm::max_rel_diff(pg, pc) < 1e-4);
    nnl_model_free(c);
    nnl_model_free(g);
}

/* LSTM on step-masked sequences (the mask from Embedding(mask_zero=True) or
   Masking, right-padded: a masked step keeps h and c, and with
   return_sequences the mask passes on to a per-step Dense, whose masked
   loss takes the host path); the CPU's non-fused cell (relu, hard_sigmoid)
   and go_backwards; zero_output_for_mask. */
TEST_CASE("LSTM with step masks, go_backwards, other activations: GPU history and weights match the CPU") {
    const int n = 256, T = 10;
    nnl::Rng r(37);
    std::vector<int> len((size_t)n);
    for (auto &l : len) l = 3 + (int)r.below(T - 2);
    SUBCASE("Embedding(mask_zero=True) -> LSTM (last output) -> Dense") {
        const int V = 30;
        std::vector<float> x((size_t)(n * T), 0.f), t((size_t)n, 0.f);
        for (int i = 0; i < n; i++) {
            for (int q = 0; q < len[(size_t)i]; q++) x[(size_t)(i * T + q)] = (float)(1 + r.below(V - 1));
            t[(size_t)i] = (float)((int)x[(size_t)i * T] % 3);
        }
        gm::SeqRun run = gm::fit_both({"Embedding(30, 6, mask_zero=True, input_length=10)", "LSTM(12)",
                                       "Dense(3, activation='softmax')"},
                                      "sparse_categorical_crossentropy", "accuracy", x, {T}, t, {}, n);
        CHECK(run.device_steps >= 3 * 8); /* the mask ends at the LSTM: the loss is not masked */
        CHECK(run.host_steps == 0);
    }
    SUBCASE("Masking -> LSTM(relu, hard_sigmoid, go_backwards, return_sequences) -> Dense per step, MSE") {
        const int F = 3;
        std::vector<float> x((size_t)(n * T * F), 0.f), t((size_t)(n * T), 0.f);
        for (int i = 0; i < n; i++) {
            float acc = 0;
            for (int q = 0; q < len[(size_t)i]; q++) {
                for (int f = 0; f < F; f++) {
                    float v = (float)r.uniform() - 0.5f;
                    x[(size_t)((i * T + q) * F + f)] = v;
                    acc += v;
                }
                t[(size_t)(i * T + q)] = 0.5f * acc;
            }
        }
        for (const char *lstm :
             {"LSTM(8, activation='relu', recurrent_activation='hard_sigmoid', go_backwards=True, "
              "return_sequences=True)",
              "LSTM(8, return_sequences=True, zero_output_for_mask=True)"}) {
            CAPTURE(lstm);
            gm::SeqRun run = gm::fit_both({"Masking(mask_value=0.0, input_shape=(10, 3))", lstm, "Dense(1)"}, "mse",
                                          "mae", x, {T, F}, t, {T, 1}, n);
            CHECK(run.host_steps >= 3 * 8);
            CHECK(run.device_steps == 0);
        }
    }
}

/* GRU on the GPU (issue 15): reset_after=True (one cell launch a step each
   way; the recurrent bias's gradient through copy and bias_grad) and
   reset_after=False (two launches around the product of r h_{s-1}), with
   ids (the loss on the device) and with a step mask, go_backwards and
   sequences (the host loss). History and weights as the LSTM's. */
TEST_CASE("Embedding -> GRU -> Dense and masked GRU models: GPU history and weights match the CPU") {
    const int n = 256, T = 10;
    nnl::Rng r(43);
    SUBCASE("Embedding -> GRU (reset_after both ways) -> Dense, the last output") {
        const int V = 40;
        std::vector<float> x((size_t)(n * T)), t((size_t)n);
        for (int i = 0; i < n; i++) {
            for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(V);
            t[(size_t)i] = (float)(((int)x[(size_t)(i * T + T - 1)] + (int)x[(size_t)(i * T)]) % 4);
        }
        for (const char *gru : {"GRU(16)", "GRU(16, reset_after=False)"}) {
            CAPTURE(gru);
            nnl_model *c = nullptr, *g = nullptr;
            gm::SeqRun run = gm::fit_both({"Embedding(40, 8, input_length=10)", gru, "Dense(4, activation='softmax')"},
                                          "sparse_categorical_crossentropy", "accuracy", x, {T}, t, {}, n, &c, &g);
            CHECK(run.device_steps >= 3 * 8);
            CHECK(run.host_steps == 0);
            nnl_model *g2 = gm::build({"Embedding(40, 8, input_length=10)", gru, "Dense(4, activation='softmax')"},
                                      gm::SEQ_OPT, "sparse_categorical_crossentropy", "accuracy", gm::SEQ_SEED);
            REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
            gm::fit_seq(g2, x, {T}, t, {}, n);
            CHECK(gm::weights(g2) == gm::weights(g)); /* no atomics: the same bits */
            nnl_model_free(g2);
            nnl_model_free(c);
            nnl_model_free(g);
        }
    }
    SUBCASE("Masking -> GRU(go_backwards, return_sequences) -> Dense per step, MSE") {
        const int F = 3;
        std::vector<int> len((size_t)n);
        for (auto &l : len) l = 3 + (int)r.below(T - 2);
        std::vector<float> x((size_t)(n * T * F), 0.f), t((size_t)(n * T), 0.f);
        for (int i = 0; i < n; i++) {
            float acc = 0;
            for (int q = 0; q < len[(size_t)i]; q++) {
                for (int f = 0; f < F; f++) {
                    float v = (float)r.uniform() - 0.5f;
                    x[(size_t)((i * T + q) * F + f)] = v;
                    acc += v;
                }
                t[(size_t)(i * T + q)] = 0.5f * acc;
            }
        }
        for (const char *gru : {"GRU(8, go_backwards=True, return_sequences=True)",
                                "GRU(8, reset_after=False, recurrent_activation='hard_sigmoid', return_sequences=True, "
                                "zero_output_for_mask=True)"}) {
            CAPTURE(gru);
            gm::SeqRun run = gm::fit_both({"Masking(mask_value=0.0, input_shape=(10, 3))", gru, "Dense(1)"}, "mse",
                                          "mae", x, {T, F}, t, {T, 1}, n);
            CHECK(run.host_steps >= 3 * 8);
            CHECK(run.device_steps == 0);
        }
    }
}

/* SimpleRNN on the GPU (issue 15): ids -> Embedding -> SimpleRNN -> Dense
   (the loss on the device), and a masked, go_backwards sequence model (the
   host loss); stacked with an LSTM. History and weights as the LSTM's. */
TEST_CASE("SimpleRNN models: GPU history and weights match the CPU") {
    const int n = 256, T = 10;
    nnl::Rng r(47);
    SUBCASE("Embedding -> SimpleRNN -> Dense") {
        std::vector<float> x((size_t)(n * T)), t((size_t)n);
        for (int i = 0; i < n; i++) {
            for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(40);
            t[(size_t)i] = (float)((int)x[(size_t)(i * T + T - 1)] % 4);
        }
        gm::SeqRun run = gm::fit_both({"Embedding(40, 8, input_length=10)", "SimpleRNN(16)",
                                       "Dense(4, activation='softmax')"},
                                      "sparse_categorical_crossentropy", "accuracy", x, {T}, t, {}, n);
        CHECK(run.device_steps >= 3 * 8);
        CHECK(run.host_steps == 0);
    }
    SUBCASE("Masking -> SimpleRNN(go_backwards, sequences) -> LSTM(sequences) -> Dense per step, MSE") {
        const int F = 3;
        std::vector<float> x((size_t)(n * T * F), 0.f), t((size_t)(n * T), 0.f);
        for (int i = 0; i < n; i++) {
            int len = 3 + (int)r.below(T - 2);
            float acc = 0;
            for (int q = 0; q < len; q++) {
                for (int f = 0; f < F; f++) {
                    float v = (float)r.uniform() - 0.5f;
                    x[(size_t)((i * T + q) * F + f)] = v;
                    acc += v;
                }
                t[(size_t)(i * T + q)] = 0.5f * acc;
            }
        }
        gm::SeqRun run = gm::fit_both({"Masking(mask_value=0.0, input_shape=(10, 3))",
                                       "SimpleRNN(8, go_backwards=True, return_sequences=True)",
                                       "LSTM(6, return_sequences=True)", "Dense(1)"},
                                      "mse", "mae", x, {T, F}, t, {T, 1}, n);
        CHECK(run.host_steps >= 3 * 8);
        CHECK(run.device_steps == 0);
    }
}

/* Bidirectional on the GPU (issue 15): the copies' steps as the recurrent
   layers', the merge (bidir_merge), its gradient (bidir_split) and the dx
   sum (add) on the device, the CPU's values bit for bit; so the two runs
   differ only by the GEMMs' and the cells' float32 rounding, as the LSTM
   and GRU cases above, and gm::fit_both's bounds (weights within 1e-3 of
   the largest, history within 1e-4 relative, hits one sample apart) hold
   for the same reason: two copies of a cell, no new source of error.
   Every merge mode; the last outputs and sequences; LSTM, GRU (both
   reset_after) and SimpleRNN copies; a masked model (the host loss). A
   second GPU run repeats the first bit for bit. */
TEST_CASE("Bidirectional LSTM/GRU/SimpleRNN, every merge mode: GPU history and weights match the CPU") {
    const int n = 256, T = 10, V = 40;
    nnl::Rng r(53);
    std::vector<float> x((size_t)(n * T)), t((size_t)n);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(V);
        /* the first and the last ids: both directions matter */
        t[(size_t)i] = (float)(((int)x[(size_t)(i * T)] + (int)x[(size_t)(i * T + T - 1)]) % 4);
    }
    const char *loss = "sparse_categorical_crossentropy", *metrics = "accuracy";
    for (std::vector<const char *> layers :
         {std::vector<const char *>{"Embedding(40, 8, input_length=10)", "Bidirectional(LSTM(12))",
                                    "Dense(4, activation='softmax')"},
          std::vector<const char *>{"Embedding(40, 8, input_length=10)",
                                    "Bidirectional(GRU(10, return_sequences=True), merge_mode='sum')",
                                    "GlobalAveragePooling1D()", "Dense(4, activation='softmax')"},
          std::vector<const char *>{"Embedding(40, 8, input_length=10)",
                                    "Bidirectional(GRU(10, reset_after=False), merge_mode='mul')",
                                    "Dense(4, activation='softmax')"},
          std::vector<const char *>{"Embedding(40, 8, input_length=10)",
                                    "Bidirectional(LSTM(8, return_sequences=True), merge_mode='ave')",
                                    "Bidirectional(SimpleRNN(6))", "Dense(4, activation='softmax')"}}) {
        CAPTURE(layers[1]);
        nnl_model *c = nullptr, *g = nullptr;
        gm::SeqRun run = gm::fit_both(layers, loss, metrics, x, {T}, t, {}, n, &c, &g);
        CHECK(run.device_steps >= 3 * 8);
        CHECK(run.host_steps == 0);
        nnl_model *g2 = gm::build(layers, gm::SEQ_OPT, loss, metrics, gm::SEQ_SEED);
        REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
        gm::fit_seq(g2, x, {T}, t, {}, n);
        CHECK(gm::weights(g2) == gm::weights(g)); /* no atomics: the same bits */
        nnl_model_free(g2);
        for (int i = 0; i < nnl_weight_count(g); i++) { /* the same weights: predictions agree */
            std::vector<float> w = gm::weight(g, i);
            REQUIRE(nnl_set_weight(c, i, w.data(), (int64_t)w.size()) == NNL_OK);
        }
        int64_t xs[2] = {n, T};
        std::vector<float> pc((size_t)(n * 4)), pg(pc.size());
        REQUIRE(nnl_predict(c, x.data(), 2, xs, 64, pc.data(), (int64_t)pc.size()) == NNL_OK);
        REQUIRE(nnl_predict(g, x.data(), 2, xs, 64, pg.data(), (int64_t)pg.size()) == NNL_OK);
        CHECK(gm::max_rel_diff(pg, pc) < 1e-4);
        nnl_model_free(c);
        nnl_model_free(g);
    }
    /* a step mask (right-padded): masked steps keep each copy's state, the
       merged output is zero there (Keras' forced zero_output_for_mask) and
       the masked loss takes the host path */
    const int F = 3;
    std::vector<float> xm((size_t)(n * T * F), 0.f), tm((size_t)(n * T), 0.f);
    for (int i = 0; i < n; i++) {
        int len = 3 + (int)r.below(T - 2);
        float acc = 0;
        for (int q = 0; q < len; q++) {
            for (int f = 0; f < F; f++) {
                float v = (float)r.uniform() - 0.5f;
                xm[(size_t)((i * T + q) * F + f)] = v;
                acc += v;
            }
            tm[(size_t)(i * T + q)] = 0.5f * acc;
        }
    }
    gm::SeqRun run = gm::fit_both({"Masking(mask_value=0.0, input_shape=(10, 3))",
                                   "Bidirectional(LSTM(6, return_sequences=True), merge_mode='mul')", "Dense(1)"},
                                  "mse", "mae", xm, {T, F}, tm, {T, 1}, n);
    CHECK(run.host_steps >= 3 * 8);
    CHECK(run.device_steps == 0);
}

/* dropout and recurrent_dropout on the GPU (issue 15): the masks are drawn
   on the device by dropout_mask, the Dropout layer's counter-based hash of
   (the batch's seed mixed with the layer's seed and name, index), so the
   GPU trains with the CPU's masks exactly (bit for bit in the kernel
   case); the products through them are single roundings. The runs differ
   by the GEMMs' and the cells' rounding only: gm::fit_both's bounds as the
   LSTM and GRU cases. The masks scale kept values by 1/(1 - rate) <= 1.43
   here, which changes no error's order. LSTM with both, GRU with
   reset_after=False and recurrent_dropout (the masked dh_{s-1} through
   mul_rows' add), GRU (reset_after) and SimpleRNN with both, and a
   Bidirectional LSTM with both; a second GPU run repeats the first bit for
   bit (the masks depend on the seed only). */
TEST_CASE("LSTM, GRU, SimpleRNN and Bidirectional with dropout and recurrent_dropout: GPU training matches the CPU") {
    const int n = 256, T = 10, V = 40;
    nnl::Rng r(59);
    std::vector<float> x((size_t)(n * T)), t((size_t)n);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(V);
        t[(size_t)i] = (float)(((int)x[(size_t)(i * T + T - 1)] + (int)x[(size_t)(i * T + T - 2)]) % 4);
    }
    const char *loss = "sparse_categorical_crossentropy", *metrics = "accuracy";
    for (const char *rnn : {"LSTM(16, dropout=0.2, recurrent_dropout=0.3)",
                            "GRU(12, reset_after=False, recurrent_dropout=0.25)",
                            "GRU(12, dropout=0.1, recurrent_dropout=0.2, seed=7)",
                            "SimpleRNN(12, dropout=0.3, recurrent_dropout=0.1)",
                            "Bidirectional(LSTM(8, dropout=0.2, recurrent_dropout=0.2))"}) {
        CAPTURE(rnn);
        std::vector<const char *> layers = {"Embedding(40, 8, input_length=10)", rnn, "Dense(4, activation='softmax')"};
        nnl_model *c = nullptr, *g = nullptr;
        gm::SeqRun run = gm::fit_both(layers, loss, metrics, x, {T}, t, {}, n, &c, &g);
        CHECK(run.device_steps >= 3 * 8);
        CHECK(run.host_steps == 0);
        nnl_model *g2 = gm::build(layers, gm::SEQ_OPT, loss, metrics, gm::SEQ_SEED);
        REQUIRE_MESSAGE(nnl_set_device(g2, "cuda") == NNL_OK, gm::err());
        gm::fit_seq(g2, x, {T}, t, {}, n);
        CHECK(gm::weights(g2) == gm::weights(g)); /* no atomics, the same masks: the same bits */
        nnl_model_free(g2);
        nnl_model_free(c);
        nnl_model_free(g);
    }
}

/* Embedding's marks of the rows a step's gradient touched (Layer::grad_rows,
   what a data-parallel run sends), set on the host from the ids the GPU
   path brings down: the CPU model's marks, step by step; the gradient the
   reducer sees (on the device for the GPU model) is the CPU's to float32
   rounding in the first step (the same weights on both). */
namespace gm {
struct MarkRecorder : nnl::Reducer {
    std::vector<std::vector<uint8_t>> marks;
    std::vector<float> first; /* the embedding table's gradient in the first step */
    void reduce(nnl::StepReduce &r) override {
        CHECK(r.n_sparse == 1); /* (inside nnl_fit: CHECK, not REQUIRE, which would throw through it) */
        if (r.n_sparse < 1) return;
        const nnl::StepReduce::Rows &s = r.sparse[0];
        marks.emplace_back(s.mark, s.mark + s.rows);
        if (first.empty()) {
            first.resize((size_t)(s.rows * s.cols));
            if (r.grad_device)
                nnl_cuda::download(first.data(), r.grad_device + s.off, first.size() * sizeof(float));
            else
                std::copy(r.grad + s.off, r.grad + s.off + s.rows * s.cols, first.begin());
        }
    }
};
} // namespace gm

TEST_CASE("Embedding on the GPU: the rows a step touched (data-parallel marks) are the CPU's") {
    const int n = 128, T = 6, V = 500; /* a large table: most rows untouched in a step */
    nnl::Rng r(29);
    std::vector<float> x((size_t)(n * T));
    std::vector<int32_t> y((size_t)n);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < T; q++) x[(size_t)(i * T + q)] = (float)r.below(V);
        y[(size_t)i] = (int32_t)((int)x[(size_t)(i * T)] % 3);
    }
    std::vector<const char *> layers = {"Embedding(500, 4, input_length=6)", "Flatten()",
                                        "Dense(3, activation='softmax')"};
    nnl_model *c = gm::build(layers, "SGD(learning_rate=0.1)", "sparse_categorical_crossentropy", "accuracy", 7);
    nnl_model *g = gm::build(layers, "SGD(learning_rate=0.1)", "sparse_categorical_crossentropy", "accuracy", 7);
    auto rc = std::make_shared<gm::MarkRecorder>(), rg = std::make_shared<gm::MarkRecorder>();
    c->reducer = rc;
    g->reducer = rg;
    REQUIRE_MESSAGE(nnl_set_device(g, "cuda") == NNL_OK, gm::err());
    const int64_t per[1] = {T};
    gm::fit(c, x, y, 1, per, 2, 32);
    gm::fit(g, x, y, 1, per, 2, 32);
    REQUIRE(rc->marks.size() == 8);
    CHECK(rg->marks == rc->marks);
    int touched = 0;
    for (uint8_t m : rc->marks[0]) touched += m != 0;
    CHECK(touched > 0);
    CHECK(touched < V);
    gt::close(rg->first, rc->first, 1e-5, 1e-7, "the first step's embedding gradient");
    nnl_model_free(c);
    nnl_model_free(g);
}

namespace gm {
/* Two identical processes on the device: the gradients doubled and halved
   there (both exact), the scalars doubled. */
struct DeviceTwoRanks : nnl::Reducer {
    int calls = 0, on_device = 0;
    void reduce(nnl::StepReduce &r) override {
        calls++;
        on_device += r.grad_device != nullptr;
        if (r.grad_device) {
            nnl_cuda::scale(r.grad_device, r.n, 2.f);
            nnl_cuda::scale(r.grad_device, r.n, 0.5f);
        }
        for (int k = 0; k < r.n_sums; k++) r.sums[k] *= 2;
    }
};
} // namespace gm

TEST_CASE("train_step on a GPU: the reducer gets the device gradients, and reducing changes nothing") {
    std::vector<float> x;
    std::vector<int32_t> y;
    gm::synth(512, x, y, 5);
    const int64_t per[1] = {784};
    std::vector<const char *> layers = {"Dense(64, activation='relu', input_shape=(784,))",
                                        "Dense(10, activation='softmax')"};
    nnl_model *a = gm::build(layers, "Adam()", "sparse_categorical_crossentropy", "accuracy", 4);
    nnl_model *b = gm::build(layers, "Adam()", "sparse_categorical_crossentropy", "accuracy", 4);
    auto red = std::make_shared<gm::DeviceTwoRanks>();
    b->reducer = red;
    REQUIRE(nnl_set_device(a, "cuda") == NNL_OK);
    REQUIRE(nnl_set_device(b, "cuda") == NNL_OK);
    gm::fit(a, x, y, 1, per, 2, 64);
    gm::fit(b, x, y, 1, per, 2, 64);
    CHECK(red->calls == 16);
    CHECK(red->on_device == 16);
    CHECK(gm::weights(a) == gm::weights(b));
    double la[2], lb[2];
    REQUIRE(nnl_history_get(a, "loss", la, 2) == 2);
    REQUIRE(nnl_history_get(b, "loss", lb, 2) == 2);
    CHECK(la[1] == lb[1]);
    nnl_model_free(a);
    nnl_model_free(b);
}
