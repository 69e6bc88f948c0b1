/* The pictures through the C ABI, from real fits: training curves of 1, 2
   and 30 epochs with and without validation (accuracy reaching 1.0), and
   confusion matrices of 10 classes with Fashion-MNIST's long names and of 2
   classes, counts and normalised. Each is checked structurally
   (tests/svg_check.hpp): well-formed XML, points marked, round ticks, a
   legend that covers no curve, labels inside the picture without a wide
   gap. */
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include "../nnlite.h"
#include "svg_check.hpp"

namespace {

struct TmpDir {
    char path[32] = "/tmp/nnl_pictures_XXXXXX";
    TmpDir() { REQUIRE(mkdtemp(path)); }
    ~TmpDir() { rmdir(path); }
    std::string file(const char *name) const { return std::string(path) + "/" + name; }
};

std::string slurp_and_remove(const std::string &p) {
    std::string s;
    FILE *f = fopen(p.c_str(), "rb");
    if (!f) return s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    fclose(f);
    remove(p.c_str());
    return s;
}

/* Two blobs a small network separates completely: accuracy reaches 1.0. */
void blobs(int n, std::vector<float> &x, std::vector<float> &y) {
    uint64_t s = 12345;
    x.resize((size_t)n * 2), y.resize((size_t)n);
    for (int i = 0; i < n; i++) {
        y[(size_t)i] = (float)(i % 2);
        for (int j = 0; j < 2; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[(size_t)(2 * i + j)] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) + (i % 2 ? 1.5f : -1.5f);
        }
    }
}

nnl_model *fitted(int epochs, double validation_split, std::vector<float> &x, std::vector<float> &y) {
    nnl_model *m = nnl_model_create();
    REQUIRE(m);
    REQUIRE(nnl_model_set_seed(m, 7) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(8, activation='tanh', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(1, activation='sigmoid')") == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy") == NNL_OK);
    blobs(64, x, y);
    int64_t xs[2] = {64, 2}, ys[2] = {64, 1};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = 16;
    o.validation_split = validation_split;
    o.verbose = 0;
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    return m;
}

} // namespace

TEST_CASE("pictures: training curves of 1, 2 and 30 epochs are marked, round-ticked, legend clear of the curves") {
    TmpDir dir;
    for (int epochs : {1, 2, 30})
        for (double split : {0.0, 0.25}) {
            CAPTURE(epochs);
            CAPTURE(split);
            std::vector<float> x, y;
            nnl_model *m = fitted(epochs, split, x, y);
            std::string path = dir.file("h.svg");
            REQUIRE(nnl_plot_history(m, path.c_str()) == NNL_OK);
            std::string svg = slurp_and_remove(path);
            CHECK(svgcheck::history_problems(svg, epochs) == "");
            CHECK((svg.find("validation") != std::string::npos) == (split > 0));
            if (epochs == 30) { /* the blobs are learnt: accuracy reaches 1.0 */
                double acc[30];
                REQUIRE(nnl_history_get(m, "accuracy", acc, 30) == 30);
                CHECK(acc[29] == 1.0);
            }
            nnl_model_free(m);
        }
}

TEST_CASE("pictures: confusion matrices, 10 classes with long names and 2 classes, counts and normalised") {
    TmpDir dir;
    const std::vector<std::string> fashion = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    const char *names[10];
    for (int i = 0; i < 10; i++) names[i] = fashion[(size_t)i].c_str();
    int64_t cm10[100], cm2[4] = {4800, 200, 350, 4650};
    for (int t = 0; t < 10; t++)
        for (int p = 0; p < 10; p++) cm10[t * 10 + p] = t == p ? 850 + 13 * t : (t * 7 + p * 3) % 23;
    std::string path = dir.file("c.svg");
    for (int norm : {0, 1}) {
        CAPTURE(norm);
        REQUIRE(nnl_plot_confusion_matrix(path.c_str(), cm10, 10, names, norm, nullptr) == NNL_OK);
        CHECK(svgcheck::confusion_problems(slurp_and_remove(path), 10, fashion) == "");
        REQUIRE(nnl_plot_confusion_matrix(path.c_str(), cm10, 10, nullptr, norm, "digits") == NNL_OK);
        CHECK(svgcheck::confusion_problems(slurp_and_remove(path), 10, {}) == "");
        REQUIRE(nnl_plot_confusion_matrix(path.c_str(), cm2, 2, nullptr, norm, nullptr) == NNL_OK);
        CHECK(svgcheck::confusion_problems(slurp_and_remove(path), 2, {}) == "");
    }
}

TEST_CASE("pictures: nnl_plot_images writes an image grid; bad sizes are refused and nothing is written") {
    TmpDir d;
    const int rows = 2, cols = 5, h = 28, w = 28;
    std::vector<float> img((size_t)rows * cols * h * w);
    std::vector<int> want(img.size());
    for (size_t i = 0; i < img.size(); i++) { /* a disc per image, brighter to the right */
        int k = (int)(i / (h * w)), y = (int)(i % (h * w)) / w, x = (int)(i % w);
        float v = (x - 14) * (x - 14) + (y - 14) * (y - 14) < 100 ? 0.2f + 0.15f * (k % cols) : 0.f;
        img[i] = v;
        want[i] = (int)(255.0 * v + 0.5);
    }
    const char *labels[rows] = {"original", "reconstruction"};
    std::string path = d.file("grid.svg");
    REQUIRE(nnl_plot_images(path.c_str(), img.data(), rows, cols, h, w, labels, "Fashion-MNIST") == NNL_OK);
    std::string svg = slurp_and_remove(path);
    CHECK(svgcheck::images_problems(svg, rows, cols, h, w, want, {"original", "reconstruction"}) == "");
    CHECK(svg.find(">Fashion-MNIST</text>") != std::string::npos);
    CHECK(nnl_plot_images(path.c_str(), img.data(), 0, cols, h, w, nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_plot_images(path.c_str(), img.data(), rows, cols, h, 5000, nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_plot_images(path.c_str(), nullptr, rows, cols, h, w, nullptr, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("nnl_plot_images") == 0);
    CHECK(access(path.c_str(), F_OK) != 0);
}
