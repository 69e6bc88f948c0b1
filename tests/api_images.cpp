/* examples/predict_image through the C ABI: a thick "1" drawn here (dark ink
   on light paper, off-centre, not square) is read by the example, which must
   print 10 class probabilities summing to 1 and feed the model MNIST's form
   of the digit (20 pixels tall, centre of mass at (14, 14)). The model is an
   untrained Flatten + Dense made here: the check is the preprocessing and
   the plumbing, not the accuracy. Skipped, saying so, in a library without
   image support or when build/predict_image is not there. (The image calls
   themselves: tests/unit_images.hpp.) */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

#include "../nnlite.h"

TEST_CASE("predict_image: a drawn 1 gives 10 probabilities summing to 1, in MNIST's form") {
    if (nnl_has_feature("images") != 1) {
        MESSAGE("skipped: this library has no image support (Debian: apt-get install libstb-dev, rebuild)");
        return;
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    REQUIRE(len > 0);
    self[len] = '\0';
    std::string exe = self;
    exe = exe.substr(0, exe.rfind('/')) + "/predict_image";
    if (access(exe.c_str(), X_OK) != 0) {
        MESSAGE("skipped: " << exe << " is not built (make " << exe << ")");
        return;
    }
    char dir[] = "/tmp/nnlite_predict_XXXXXX";
    REQUIRE(mkdtemp(dir));
    const std::string d = dir, png = d + "/one.png", model = d + "/model.nnl", seen = d + "/seen.png";

    /* 90 x 60, light paper (230), a vertical stroke 8 wide and 50 tall at columns 36..43 */
    const int H = 90, W = 60;
    std::vector<float> img((size_t)H * W, 230.0f);
    for (int y = 20; y < 70; y++)
        for (int x = 36; x < 44; x++) img[(size_t)y * W + x] = 25.0f;
    REQUIRE(nnl_save_image(png.c_str(), img.data(), H, W, 1, 1.0f) == NNL_OK);

    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 3) == NNL_OK);
    REQUIRE(nnl_add(m, "Flatten(input_shape=(28, 28))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(10, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_save_model(m, model.c_str()) == NNL_OK);
    nnl_model_free(m);

    std::string cmd = exe + " " + model + " " + png + " --save-input " + seen + " 2>&1";
    FILE *p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char line[512];
    int classes = 0;
    double sum = 0;
    while (fgets(line, sizeof line, p)) {
        out += line;
        int k;
        double v;
        if (sscanf(line, " %d: %lf", &k, &v) == 2 && k == classes) classes++, sum += v;
    }
    int rc = pclose(p);
    CAPTURE(out);
    CHECK(rc == 0);
    CHECK(classes == 10);
    CHECK(std::fabs(sum - 1.0) < 1e-3);
    CHECK(out.find("predicted: ") != std::string::npos);

    /* what the model saw: white on black, 20 rows tall, centred by mass */
    nnl_array *a = nullptr;
    REQUIRE(nnl_load_image(seen.c_str(), 1, 0, 0, 1.0f / 255, &a) == NNL_OK);
    REQUIRE((nnl_array_dim(a, 0) == 28 && nnl_array_dim(a, 1) == 28));
    const float *x = (const float *)nnl_array_data(a);
    int top = 28, bottom = -1;
    double mass = 0, cy = 0, cx = 0;
    for (int y = 0; y < 28; y++)
        for (int c = 0; c < 28; c++) {
            float v = x[y * 28 + c];
            if (v > 0.1f) top = std::min(top, y), bottom = std::max(bottom, y);
            mass += v, cy += v * (y + 0.5), cx += v * (c + 0.5);
        }
    CHECK(x[0] == 0.0f); /* the paper became black */
    CHECK(bottom - top + 1 == 20);
    REQUIRE(mass > 0);
    CHECK(std::fabs(cy / mass - 14) <= 0.5);
    CHECK(std::fabs(cx / mass - 14) <= 0.5);
    nnl_array_free(a);

    /* the examples' conventions: an unknown option names itself and exits 2 */
    CHECK(system((exe + " --epoch 1 >/dev/null 2>&1").c_str()) != 0);
    for (const std::string &f : {png, model, seen}) unlink(f.c_str());
    rmdir(dir);
}
