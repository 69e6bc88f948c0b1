/* The GPU functions of the C ABI in the library under test. In the CPU
   build (and on machines without a GPU) a GPU request fails with
   NNL_ERR_UNSUPPORTED, says why, and leaves the model as it was. */
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "../nnlite.h"

TEST_CASE("GPU requests without a usable GPU fail cleanly and change nothing") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(4, activation='relu', input_shape=(3,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.1)", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    CHECK(std::string(nnl_get_device(nullptr)).empty());
    CHECK(nnl_set_device(nullptr, "cpu") == NNL_ERR_ARGUMENT);
    CHECK(nnl_set_device(m, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_set_device(m, "quantum") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("quantum") != std::string::npos);
    CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    CHECK(nnl_set_tf32(m, 1) == NNL_ERR_STATE);
    char buf[64] = "x";
    CHECK(nnl_cuda_device_name(0, nullptr, 0) == NNL_ERR_ARGUMENT);
    if (nnl_cuda_device_count() == 0) {
        CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
        CHECK(std::string(nnl_last_error()).find("CUDA") != std::string::npos);
        CHECK(nnl_set_device(m, "cuda:0") == NNL_ERR_UNSUPPORTED);
        CHECK(nnl_cuda_device_name(0, buf, sizeof buf) == NNL_ERR_UNSUPPORTED);
        CHECK(std::string(buf).empty());
        CHECK(std::string(nnl_get_device(m)) == "cpu");
    }
    /* the model still trains where it is */
    std::vector<float> x = {0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    std::vector<int32_t> y = {0, 1, 1, 0};
    int64_t xs[2] = {4, 3}, ys[1] = {4};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.verbose = 0;
    o.epochs = 2;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    nnl_model_free(m);
}

TEST_CASE("nnl_set_device takes recurrent layers with dropout and Bidirectional (a GPU path since issue 15)") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Embedding(30, 4, input_length=5)") == NNL_OK);
    REQUIRE(nnl_add(m, "GRU(6, return_sequences=True, recurrent_dropout=0.1)") == NNL_OK);
    REQUIRE(nnl_add(m, "Bidirectional(LSTM(3, dropout=0.1, return_sequences=True), merge_mode='ave')") == NNL_OK);
    REQUIRE(nnl_add(m, "SimpleRNN(3, dropout=0.1)") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2)") == NNL_OK);
    for (const char *d : {"cuda", "cuda:0", "gpu"}) {
        CAPTURE(d);
        int rc = nnl_set_device(m, d);
        if (nnl_cuda_device_count() == 0) { /* refused for the device (or the build), naming no layer */
            CHECK(rc == NNL_ERR_UNSUPPORTED);
            std::string e = nnl_last_error();
            CHECK(e.rfind("nnl_set_device: ", 0) == 0);
            CHECK(e.find("no GPU path") == std::string::npos);
            CHECK(std::string(nnl_get_device(m)) == "cpu");
        } else {
            CHECK(rc == NNL_OK);
        }
        CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    }
    nnl_model_free(m);
}
