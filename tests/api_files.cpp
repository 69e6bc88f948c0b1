/* Model files through the C ABI: Keras JSON, nnlite's binary format, exact
   resume in a new process, atomic saves under SIGKILL, hostile files, npz
   exchange with PyTorch. Linked against the library; uses nnlite.h only. */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../nnlite.h"

namespace {

std::string err() { return nnl_last_error(); }

/* A private folder for the files of one test, removed at the end. */
struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/nnl_files_XXXXXX";
        REQUIRE(mkdtemp(t));
        path = t;
    }
    ~TempDir() {
        std::string cmd = "rm -rf '" + path + "'";
        if (system(cmd.c_str()) != 0) fprintf(stderr, "could not remove %s\n", path.c_str());
    }
    std::string operator/(const char *name) const { return path + "/" + name; }
    std::vector<std::string> list() const {
        std::vector<std::string> v;
        DIR *d = opendir(path.c_str());
        if (!d) return v;
        while (struct dirent *e = readdir(d))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) v.push_back(e->d_name);
        closedir(d);
        return v;
    }
};

std::string to_json(const nnl_model *m) {
    int64_t n = nnl_model_to_json(m, nullptr, 0);
    REQUIRE(n > 0);
    std::string s((size_t)n + 1, '\0');
    REQUIRE(nnl_model_to_json(m, &s[0], n + 1) == n);
    s.resize((size_t)n);
    return s;
}

std::vector<uint8_t> slurp(const std::string &path) {
    std::vector<uint8_t> v;
    FILE *f = fopen(path.c_str(), "rb");
    REQUIRE(f);
    int c;
    while ((c = fgetc(f)) != EOF) v.push_back((uint8_t)c);
    fclose(f);
    return v;
}

void spit(const std::string &path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* Every weight of m, concatenated (all tensors, trainable or not). */
std::vector<float> all_weights(const nnl_model *m) {
    std::vector<float> out;
    for (int i = 0; i < nnl_weight_count(m); i++) {
        int rank;
        int64_t shape[NNL_MAX_RANK];
        REQUIRE(nnl_weight_info(m, i, nullptr, 0, &rank, shape) == NNL_OK);
        int64_t n = 1;
        for (int k = 0; k < rank; k++) n *= shape[k];
        std::vector<float> w((size_t)n);
        REQUIRE(nnl_get_weight(m, i, w.data(), n) == NNL_OK);
        out.insert(out.end(), w.begin(), w.end());
    }
    return out;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> predict(nnl_model *m, const std::vector<float> &x, int rank, const int64_t *shape, int64_t outn) {
    std::vector<float> p((size_t)outn);
    REQUIRE(nnl_predict(m, x.data(), rank, shape, 16, p.data(), outn) == NNL_OK);
    return p;
}

std::vector<float> noise(size_t n, uint64_t seed) {
    std::vector<float> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
    for (auto &x : v) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
    }
    return v;
}

/* The Keras tutorial CNN (K-CNN), built through nnl_add. */
nnl_model *kcnn(uint64_t seed) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, seed) == NNL_OK);
    const char *specs[] = {"Conv2D(32, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1))",
                           "Conv2D(64, (3, 3), activation='relu')", "MaxPooling2D(pool_size=(2, 2))",
                           "Dropout(0.25)", "Flatten()", "Dense(128, activation='relu')", "Dropout(0.5)",
                           "Dense(10, activation='softmax')"};
    for (const char *s : specs) REQUIRE_MESSAGE(nnl_add(m, s) == NNL_OK, err());
    return m;
}

/* A K-CNN JSON as tf.keras 2.x's model.to_json() writes it (Keras 2.x
   documented layout: InputLayer, initializer dicts, null regularizers). */
const char *KERAS2_KCNN = R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [
{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 28, 28, 1], "dtype": "float32", "sparse": false, "ragged": false, "name": "conv2d_input"}},
{"class_name": "Conv2D", "config": {"name": "conv2d", "trainable": true, "dtype": "float32", "batch_input_shape": [null, 28, 28, 1], "filters": 32, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}},
{"class_name": "Conv2D", "config": {"name": "conv2d_1", "trainable": true, "dtype": "float32", "filters": 64, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}},
{"class_name": "MaxPooling2D", "config": {"name": "max_pooling2d", "trainable": true, "dtype": "float32", "pool_size": [2, 2], "padding": "valid", "strides": [2, 2], "data_format": "channels_last"}},
{"class_name": "Dropout", "config": {"name": "dropout", "trainable": true, "dtype": "float32", "rate": 0.25, "noise_shape": null, "seed": null}},
{"class_name": "Flatten", "config": {"name": "flatten", "trainable": true, "dtype": "float32", "data_format": "channels_last"}},
{"class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": "float32", "units": 128, "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}},
{"class_name": "Dropout", "config": {"name": "dropout_1", "trainable": true, "dtype": "float32", "rate": 0.5, "noise_shape": null, "seed": null}},
{"class_name": "Dense", "config": {"name": "dense_1", "trainable": true, "dtype": "float32", "units": 10, "activation": "softmax", "use_bias": true, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}
]}, "keras_version": "2.12.0", "backend": "tensorflow"})";

/* The K-MLP with BatchNormalization as Keras 3 writes it: module and
   registered_name fields, DTypePolicy objects, batch_shape, build_config. */
const char *KERAS3_MLP = R"({"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "trainable": true,
"dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null},
"layers": [
{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 28, 28], "dtype": "float32", "sparse": false, "name": "input_layer"}, "registered_name": null},
{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flatten", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "data_format": "channels_last"}, "registered_name": null, "build_config": {"input_shape": [null, 28, 28]}},
{"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "units": 128, "activation": "relu", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null, "bias_constraint": null, "lora_rank": null}, "registered_name": null, "build_config": {"input_shape": [null, 784]}},
{"module": "keras.layers", "class_name": "BatchNormalization", "config": {"name": "batch_normalization", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": true, "scale": true, "beta_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "gamma_initializer": {"module": "keras.initializers", "class_name": "Ones", "config": {}, "registered_name": null}, "moving_mean_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "moving_variance_initializer": {"module": "keras.initializers", "class_name": "Ones", "config": {}, "registered_name": null}, "beta_regularizer": null, "gamma_regularizer": null, "beta_constraint": null, "gamma_constraint": null, "synchronized": false}, "registered_name": null, "build_config": {"input_shape": [null, 128]}},
{"module": "keras.layers", "class_name": "Dropout", "config": {"name": "dropout", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "rate": 0.2, "seed": null, "noise_shape": null}, "registered_name": null},
{"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense_1", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "units": 10, "activation": "softmax", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null, "bias_constraint": null, "lora_rank": null}, "registered_name": null, "build_config": {"input_shape": [null, 128]}}
], "build_input_shape": [null, 28, 28]}, "registered_name": null, "build_config": {"input_shape": [null, 28, 28]},
"compile_config": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"], "loss_weights": null, "weighted_metrics": null, "run_eagerly": false, "steps_per_execution": 1, "jit_compile": false}})";

} // namespace

TEST_CASE("to_json writes Keras' layout and reads back to the same text") {
    nnl_model *m = kcnn(1);
    std::string j = to_json(m);
    CHECK(j.find("\"class_name\": \"Sequential\"") != std::string::npos);
    CHECK(j.find("\"batch_input_shape\": [null, 28, 28, 1]") != std::string::npos);
    CHECK(j.find("\"kernel_initializer\": {\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}") !=
          std::string::npos);
    CHECK(j.find("\"rate\": 0.25") != std::string::npos);
    CHECK(j.find("\"keras_version\"") != std::string::npos);
    nnl_model *m2 = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &m2) == NNL_OK, err());
    CHECK(to_json(m2) == j);
    CHECK(nnl_param_count(m2) == nnl_param_count(m));
    /* truncated output: NUL-terminated, same length returned */
    char small[16];
    CHECK(nnl_model_to_json(m, small, sizeof small) == (int64_t)j.size());
    CHECK(strlen(small) == sizeof small - 1);
    CHECK(nnl_model_to_json(nullptr, small, sizeof small) == -1);
    nnl_model_free(m);
    nnl_model_free(m2);
}

TEST_CASE("every layer type round-trips through JSON") {
    struct Case {
        const char *input;
        std::vector<const char *> layers;
    };
    std::vector<Case> cases = {
        {"Input(shape=(16, 3))",
         {"Conv1D(4, 3, padding='causal', dilation_rate=2, activation='tanh', kernel_initializer='he_normal')",
          "MaxPooling1D(2)", "Conv1D(4, 3, strides=2, padding='same', use_bias=False)", "AveragePooling1D(2, strides=1)",
          "GlobalMaxPooling1D()", "Reshape((2, 2))", "Flatten()", "Activation('swish')"}},
        {"Input(shape=(3, 12, 10))",
         {"ZeroPadding2D(((1, 2), (0, 1)), data_format='channels_first')",
          "Conv2D(5, (3, 2), strides=(1, 2), padding='same', data_format='channels_first', bias_initializer='ones')",
          "BatchNormalization(axis=1, momentum=0.9, epsilon=1e-05, center=False)",
          "UpSampling2D((2, 1), data_format='channels_first')",
          "AveragePooling2D((2, 2), padding='same', data_format='channels_first')",
          "GlobalAveragePooling2D(data_format='channels_first')", "Dropout(0.3, seed=7)",
          "Dense(3, activation='leaky_relu', use_bias=False, kernel_initializer='lecun_uniform')"}},
        {"Input(shape=(6, 6, 6, 2))",
         {"Conv3D(3, 2, kernel_initializer='random_normal')", "MaxPooling3D(2)", "BatchNormalization()",
          "GlobalAveragePooling3D()", "Dense(2, kernel_initializer='random_uniform', activation='softmax')"}},
        {"Input(shape=(8, 8, 6, 4))",
         {"AveragePooling3D((2, 2, 3))", "Reshape((32, 4))", "GlobalAveragePooling1D()"}},
        {"Input(shape=(8, 8, 4))", {"MaxPooling2D(2, strides=1, padding='same')", "GlobalMaxPooling2D()"}},
    };
    for (auto &c : cases) {
        nnl_model *m = nnl_model_create();
        REQUIRE(nnl_add(m, c.input) == NNL_OK);
        for (const char *s : c.layers) REQUIRE_MESSAGE(nnl_add(m, s) == NNL_OK, s << ": " << err());
        std::string j = to_json(m);
        nnl_model *m2 = nullptr;
        REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &m2) == NNL_OK, err() << "\n" << j);
        CHECK(to_json(m2) == j);
        CHECK(nnl_layer_count(m2) == nnl_layer_count(m));
        int64_t a[NNL_MAX_RANK], b[NNL_MAX_RANK];
        CHECK(nnl_output_shape(m, a) == nnl_output_shape(m2, b));
        /* same weights -> same predictions: the architecture is really the same */
        std::vector<float> w = all_weights(m);
        REQUIRE(nnl_weight_count(m2) == nnl_weight_count(m));
        for (int i = 0; i < nnl_weight_count(m); i++) { /* every tensor, moving statistics included */
            int rank;
            int64_t sh[NNL_MAX_RANK];
            REQUIRE(nnl_weight_info(m, i, nullptr, 0, &rank, sh) == NNL_OK);
            int64_t n = 1;
            for (int k = 0; k < rank; k++) n *= sh[k];
            std::vector<float> t((size_t)n);
            REQUIRE(nnl_get_weight(m, i, t.data(), n) == NNL_OK);
            REQUIRE(nnl_set_weight(m2, i, t.data(), n) == NNL_OK);
        }
        int64_t in[NNL_MAX_RANK + 1];
        int r = nnl_input_shape(m, in + 1);
        in[0] = 3;
        int64_t per = 1, outper = 1;
        for (int k = 1; k <= r; k++) per *= in[k];
        int orank = nnl_output_shape(m, a);
        for (int k = 0; k < orank; k++) outper *= a[k];
        std::vector<float> x = noise((size_t)(3 * per), 5);
        CHECK(predict(m, x, r + 1, in, 3 * outper) == predict(m2, x, r + 1, in, 3 * outper));
        nnl_model_free(m);
        nnl_model_free(m2);
    }
}

TEST_CASE("from_json reads tf.keras 2.x and Keras 3 JSON") {
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(KERAS2_KCNN, &m) == NNL_OK, err());
    CHECK(nnl_layer_count(m) == 8);
    CHECK(nnl_param_count(m) == 1199882); /* Keras' summary of this model */
    int64_t s[NNL_MAX_RANK];
    CHECK(nnl_output_shape(m, s) == 1);
    CHECK(s[0] == 10);
    char name[64];
    REQUIRE(nnl_weight_info(m, 2, name, sizeof name, nullptr, nullptr) == NNL_OK);
    CHECK(std::string(name) == "conv2d_1/kernel");
    nnl_model_free(m);

    REQUIRE_MESSAGE(nnl_model_from_json(KERAS3_MLP, &m) == NNL_OK, err());
    CHECK(nnl_layer_count(m) == 5);
    CHECK(nnl_input_shape(m, s) == 2);
    CHECK(nnl_param_count(m) == 784 * 128 + 128 + 4 * 128 + 1290); /* BN: 4 * 128, 2 * 128 of them not trainable */
    CHECK(nnl_trainable_param_count(m) == 784 * 128 + 128 + 2 * 128 + 1290);
    CHECK(nnl_non_trainable_param_count(m) == 2 * 128);
    std::string j = to_json(m);
    CHECK(j.find("\"momentum\": 0.99") != std::string::npos);
    CHECK(j.find("\"axis\": [1]") != std::string::npos); /* Keras' built form: positive, counting the batch axis */
    nnl_model *m2 = nullptr;
    REQUIRE(nnl_model_from_json(j.c_str(), &m2) == NNL_OK);
    CHECK(to_json(m2) == j);
    nnl_model_free(m);
    nnl_model_free(m2);
}

/* The convolutional autoencoder of examples/autoencoder.c (Keras blog
   "Building Autoencoders in Keras", with two poolings): UpSampling2D with
   size as a list, in tf.keras 2.x's and Keras 3's layer layouts (the
   wrapping of configs as those versions write them; keys as in their
   get_config). Keras' summary: 3,217 parameters, output (28, 28, 1). */
static std::string conv_ae_json(bool keras3) {
    auto wrap = [&](const char *cls, const std::string &cfg) {
        std::string dt = keras3 ? "{\"module\": \"keras\", \"class_name\": \"DTypePolicy\", \"config\": {\"name\": "
                                  "\"float32\"}, \"registered_name\": null}"
                                : "\"float32\"";
        std::string c = std::string("{") + (keras3 ? "\"module\": \"keras.layers\", " : "") + "\"class_name\": \"" +
                        cls + "\", \"config\": {" + cfg;
        if (std::string(cls) != "InputLayer") c.insert(c.find("\"config\": {") + 11, "\"trainable\": true, \"dtype\": " + dt + ", ");
        return c + "}" + (keras3 ? ", \"registered_name\": null" : "") + "}";
    };
    auto init = [&](const char *cls) {
        return std::string("{") + (keras3 ? "\"module\": \"keras.initializers\", " : "") + "\"class_name\": \"" + cls +
               "\", \"config\": {" + (std::string(cls) == "GlorotUniform" ? "\"seed\": null" : "") + "}" +
               (keras3 ? ", \"registered_name\": null" : "") + "}";
    };
    int n = 0;
    auto conv = [&](int f, const char *act) {
        std::string name = "conv2d" + (n ? "_" + std::to_string(n) : std::string());
        n++;
        return wrap("Conv2D", "\"name\": \"" + name + "\", \"filters\": " + std::to_string(f) +
                                  ", \"kernel_size\": [3, 3], \"strides\": [1, 1], \"padding\": \"same\", "
                                  "\"data_format\": \"channels_last\", \"dilation_rate\": [1, 1], \"groups\": 1, "
                                  "\"activation\": \"" + act + "\", \"use_bias\": true, \"kernel_initializer\": " +
                                  init("GlorotUniform") + ", \"bias_initializer\": " + init("Zeros") +
                                  ", \"kernel_regularizer\": null, \"bias_regularizer\": null, "
                                  "\"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": null");
    };
    auto pool = [&](int k) {
        return wrap("MaxPooling2D", "\"name\": \"max_pooling2d" + std::string(k ? "_1" : "") +
                                        "\", \"pool_size\": [2, 2], \"padding\": \"valid\", \"strides\": [2, 2], "
                                        "\"data_format\": \"channels_last\"");
    };
    auto up = [&](int k) {
        return wrap("UpSampling2D", "\"name\": \"up_sampling2d" + std::string(k ? "_1" : "") +
                                        "\", \"size\": [2, 2], \"data_format\": \"channels_last\", "
                                        "\"interpolation\": \"nearest\"");
    };
    std::string in = keras3 ? wrap("InputLayer", "\"batch_shape\": [null, 28, 28, 1], \"dtype\": \"float32\", "
                                                 "\"sparse\": false, \"name\": \"input_layer\"")
                            : wrap("InputLayer", "\"batch_input_shape\": [null, 28, 28, 1], \"dtype\": \"float32\", "
                                                 "\"sparse\": false, \"ragged\": false, \"name\": \"input_1\"");
    std::vector<std::string> L = {in,      conv(16, "relu"), pool(0), conv(8, "relu"),   pool(1), conv(8, "relu"),
                                  up(0),   conv(16, "relu"), up(1),   conv(1, "sigmoid")};
    std::string j = std::string("{") + (keras3 ? "\"module\": \"keras\", " : "") +
                    "\"class_name\": \"Sequential\", \"config\": {\"name\": \"sequential\", \"layers\": [";
    for (size_t i = 0; i < L.size(); i++) j += (i ? ",\n" : "\n") + L[i];
    return j + "]}" + (keras3 ? ", \"registered_name\": null}" : ", \"keras_version\": \"2.12.0\", \"backend\": \"tensorflow\"}");
}

TEST_CASE("UpSampling2D in Keras JSON (tf.keras 2.x and Keras 3): the convolutional autoencoder loads and round-trips") {
    for (bool k3 : {false, true}) {
        const std::string layout = k3 ? "Keras 3" : "tf.keras 2.x";
        INFO(layout);
        std::string src = conv_ae_json(k3);
        nnl_model *m = nullptr;
        REQUIRE_MESSAGE(nnl_model_from_json(src.c_str(), &m) == NNL_OK, err() << "\n" << src);
        CHECK(nnl_layer_count(m) == 9);
        CHECK(nnl_param_count(m) == 3217);
        int64_t s[NNL_MAX_RANK];
        REQUIRE(nnl_output_shape(m, s) == 3);
        CHECK((s[0] == 28 && s[1] == 28 && s[2] == 1));
        std::string j = to_json(m);
        CHECK(j.find("\"class_name\": \"UpSampling2D\"") != std::string::npos);
        CHECK(j.find("\"size\": [2, 2], \"data_format\": \"channels_last\", \"interpolation\": \"nearest\"") !=
              std::string::npos);
        CHECK(j.find("\"name\": \"up_sampling2d_1\"") != std::string::npos);
        nnl_model *m2 = nullptr;
        REQUIRE(nnl_model_from_json(j.c_str(), &m2) == NNL_OK);
        CHECK(to_json(m2) == j);
        nnl_model_free(m);
        nnl_model_free(m2);
    }
    /* 'bilinear' is Keras' other interpolation: refused by name, not silently read as nearest */
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Input(shape=(4, 4, 1))") == NNL_OK);
    CHECK(nnl_add(m, "UpSampling2D(2, interpolation='bilinear')") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(err()).find("bilinear") != std::string::npos);
    REQUIRE(nnl_add(m, "UpSampling2D(2)") == NNL_OK); /* an int size means (2, 2) */
    int64_t s[NNL_MAX_RANK];
    REQUIRE(nnl_output_shape(m, s) == 3);
    CHECK((s[0] == 8 && s[1] == 8 && s[2] == 1));
    nnl_model_free(m);
}

TEST_CASE("from_json names what it cannot read") {
    std::string base = KERAS2_KCNN;
    struct Bad {
        std::string from, to;
        int status;
        const char *says;
    } bads[] = {
        {"\"class_name\": \"Dropout\", \"config\": {\"name\": \"dropout\"", "\"class_name\": \"Conv2DTranspose\", \"config\": {\"name\": \"dropout\"",
         NNL_ERR_UNSUPPORTED, "layer kind 'Conv2DTranspose' is not supported"},
        {"\"kernel_regularizer\": null", "\"kernel_regularizer\": {\"class_name\": \"L2\", \"config\": {\"l2\": 0.01}}",
         NNL_ERR_UNSUPPORTED, "kernel_regularizer"},
        {"\"name\": \"dense\", \"trainable\": true", "\"name\": \"dense\", \"trainable\": false", NNL_ERR_UNSUPPORTED,
         "trainable"},
        {"\"class_name\": \"Sequential\"", "\"class_name\": \"Functional\"", NNL_ERR_UNSUPPORTED, "Sequential"},
        {"\"units\": 128", "\"units\": 128, \"frobnicate\": 3", NNL_ERR_ARGUMENT, "frobnicate"},
        {"\"dtype\": \"float32\", \"units\": 128", "\"dtype\": \"float16\", \"units\": 128", NNL_ERR_UNSUPPORTED,
         "float16"},
        {"{\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}, \"bias_initializer\": {\"class_name\": \"Zeros\", \"config\": {}}, \"kernel_regularizer\": null, \"bias_regularizer\": null, \"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": null}},\n{\"class_name\": \"Dropout\", \"config\": {\"name\": \"dropout_1\"",
         "{\"class_name\": \"Identity\", \"config\": {\"gain\": 1.0}}, \"bias_initializer\": {\"class_name\": \"Zeros\", \"config\": {}}, \"kernel_regularizer\": null, \"bias_regularizer\": null, \"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": null}},\n{\"class_name\": \"Dropout\", \"config\": {\"name\": \"dropout_1\"",
         NNL_ERR_UNSUPPORTED, "Identity"},
    };
    for (auto &b : bads) {
        std::string j = base;
        size_t at = j.find(b.from);
        REQUIRE_MESSAGE(at != std::string::npos, b.from);
        j.replace(at, b.from.size(), b.to);
        nnl_model *m = (nnl_model *)&j; /* must be reset to NULL */
        CHECK(nnl_model_from_json(j.c_str(), &m) == b.status);
        CHECK(m == nullptr);
        CHECK_MESSAGE(err().find(b.says) != std::string::npos, err());
    }
}

TEST_CASE("the JSON reader survives hostile text") {
    nnl_model *m = nullptr;
    std::string deep(100000, '[');
    CHECK(nnl_model_from_json(deep.c_str(), &m) == NNL_ERR_FORMAT);
    CHECK(err().find("deeply") != std::string::npos);
    const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "\"\\ud800\"", "\"\\u12\"", "01", "-", "1e", "{\"a\":1,\"a\":2}",
                         "nul", "[\"\x01\"]", "{} x", "{\"class_name\": 3}", "[]", "{\"class_name\": \"Sequential\"}",
                         "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [1, 2]}}"};
    for (const char *b : bad) {
        int st = nnl_model_from_json(b, &m);
        CHECK_MESSAGE(st == NNL_ERR_FORMAT, b << " -> " << st << " " << err());
        CHECK(m == nullptr);
    }
    /* sizes that would need terabytes are refused before anything is allocated */
    std::string huge[][2] = {{"\"units\": 128", "\"units\": 100000000"},
                             {"[null, 28, 28, 1], \"dtype\": \"float32\", \"sparse\"",
                              "[null, 2800000, 2800000, 1], \"dtype\": \"float32\", \"sparse\""},
                             {"\"filters\": 64", "\"filters\": 1e300"},
                             {"\"kernel_size\": [3, 3], \"strides\": [1, 1], \"padding\": \"valid\", \"data_format\": \"channels_last\", \"dilation_rate\": [1, 1], \"groups\": 1, \"activation\": \"relu\", \"use_bias\": true, \"kernel_initializer\": {\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}, \"bias_initializer\": {\"class_name\": \"Zeros\", \"config\": {}}, \"kernel_regularizer\": null, \"bias_regularizer\": null, \"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": null}},\n{\"class_name\": \"MaxPooling2D\"",
                              "\"kernel_size\": [3, 3], \"strides\": [1, 1], \"padding\": \"same\", \"data_format\": \"channels_last\", \"dilation_rate\": [1, 1], \"groups\": 1, \"activation\": \"relu\", \"use_bias\": true, \"kernel_initializer\": {\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}, \"bias_initializer\": {\"class_name\": \"Zeros\", \"config\": {}}, \"kernel_regularizer\": null, \"bias_regularizer\": null, \"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": null}},\n{\"class_name\": \"UpSampling2D\", \"config\": {\"size\": [60000, 60000]}},\n{\"class_name\": \"MaxPooling2D\""}};
    for (auto &h : huge) {
        std::string t = KERAS2_KCNN;
        size_t at = t.find(h[0]);
        REQUIRE_MESSAGE(at != std::string::npos, h[0]);
        t.replace(at, h[0].size(), h[1]);
        int st = nnl_model_from_json(t.c_str(), &m);
        CHECK_MESSAGE((st == NNL_ERR_MEMORY || st == NNL_ERR_FORMAT), st << " " << err());
        CHECK(m == nullptr);
    }
    /* every prefix of a real file fails cleanly; random bytes never crash */
    std::string j = KERAS2_KCNN;
    for (size_t n = 0; n < j.size(); n++) {
        std::string p = j.substr(0, n);
        REQUIRE(nnl_model_from_json(p.c_str(), &m) != NNL_OK);
        REQUIRE(m == nullptr);
    }
    uint64_t s = 42;
    for (int round = 0; round < 2000; round++) {
        std::string t = j;
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(s >> 33) % t.size();
            t[at] = (char)(1 + (s >> 13) % 255);
        }
        if (nnl_model_from_json(t.c_str(), &m) == NNL_OK) nnl_model_free(m);
    }
}

TEST_CASE("save_weights / load_weights, and a mismatch names the layer and both shapes") {
    TempDir d;
    std::string path = d / "w.nnlw";
    nnl_model *a = kcnn(3), *b = kcnn(4);
    REQUIRE(nnl_save_weights(a, path.c_str()) == NNL_OK);
    CHECK(!same_bits(all_weights(a), all_weights(b)));
    REQUIRE_MESSAGE(nnl_load_weights(b, path.c_str()) == NNL_OK, err());
    CHECK(same_bits(all_weights(a), all_weights(b)));
    /* the file is 64-byte aligned for mapping: every tensor offset */
    std::vector<uint8_t> f = slurp(path);
    CHECK(f.size() > 4 * 1199882);
    nnl_model *c = nnl_model_create();
    REQUIRE(nnl_add(c, "Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1))") == NNL_OK);
    REQUIRE(nnl_add(c, "Conv2D(32, (3, 3), activation='relu')") == NNL_OK);
    REQUIRE(nnl_add(c, "MaxPooling2D()") == NNL_OK);
    REQUIRE(nnl_add(c, "Flatten()") == NNL_OK);
    REQUIRE(nnl_add(c, "Dense(128, activation='relu')") == NNL_OK);
    REQUIRE(nnl_add(c, "Dense(10, activation='softmax')") == NNL_OK);
    std::vector<float> before = all_weights(c);
    CHECK(nnl_load_weights(c, path.c_str()) == NNL_ERR_SHAPE);
    CHECK_MESSAGE(err().find("conv2d_1") != std::string::npos, err());
    CHECK_MESSAGE(err().find("(3, 3, 32, 32)") != std::string::npos, err());
    CHECK_MESSAGE(err().find("(3, 3, 32, 64)") != std::string::npos, err());
    CHECK(same_bits(before, all_weights(c))); /* untouched */
    CHECK(nnl_load_weights(c, (d / "missing").c_str()) == NNL_ERR_IO);
    nnl_model_free(a);
    nnl_model_free(b);
    nnl_model_free(c);
}

namespace {

/* Resume data: 3 classes, 20 features, 200 samples. */
struct Data {
    std::vector<float> x = noise(200 * 20, 9);
    std::vector<int32_t> y;
    int64_t xs[2] = {200, 20}, ys[1] = {200};
    Data() {
        for (int i = 0; i < 200; i++) y.push_back((x[(size_t)i * 20] > 0) + (x[(size_t)i * 20 + 1] > 0.3f));
    }
};

nnl_model *resume_model(const char *opt) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 77) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(32, activation='relu', input_shape=(20,))") == NNL_OK);
    REQUIRE(nnl_add(m, "BatchNormalization()") == NNL_OK);
    REQUIRE(nnl_add(m, "Dropout(0.3)") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(3, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, opt, "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    return m;
}

int fit(nnl_model *m, const Data &d, int initial, int epochs, uint64_t seed) {
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.initial_epoch = initial;
    o.batch_size = 16;
    o.verbose = 0;
    o.seed = seed;
    o.shuffle = 1;
    o.validation_split = 0.1;
    return nnl_fit(m, d.x.data(), 2, d.xs, d.y.data(), NNL_INT32, 1, d.ys, &o);
}

/* Runs body in a child process (fork); true when it exited with status 0. */
template <class F> bool in_child(F body) {
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        nnl_set_threads(1); /* no OpenMP team in a forked child */
        _exit(body() ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

} // namespace

TEST_CASE("a run saved after epoch k and resumed in a new process ends bit-for-bit equal") {
    nnl_set_threads(1);
    TempDir dir;
    Data d;
    struct Run {
        const char *opt;
        uint64_t seed; /* 0: the model's RNG carries on (saved in the file) */
    } runs[] = {{"SGD(learning_rate=0.05, momentum=0.9, nesterov=True)", 0},
                {"Adam(learning_rate=0.01)", 1234},
                {"Nadam(learning_rate=0.01)", 0}};
    const int K = 2, N = 5;
    for (auto &r : runs) {
        CAPTURE(r.opt);
        nnl_model *full = resume_model(r.opt);
        REQUIRE_MESSAGE(fit(full, d, 0, N, r.seed) == NNL_OK, err());
        std::string ck = dir / "ck.nnl", fin = dir / "final.nnl";
        /* process 1: epochs 0..K-1, save */
        REQUIRE(in_child([&] {
            nnl_model *m = resume_model(r.opt);
            bool ok = fit(m, d, 0, K, r.seed) == NNL_OK && nnl_save_model(m, ck.c_str()) == NNL_OK;
            nnl_model_free(m);
            return ok;
        }));
        /* process 2: load, epochs K..N-1, save */
        REQUIRE(in_child([&] {
            nnl_model *m = nullptr;
            bool ok = nnl_load_model(ck.c_str(), &m) == NNL_OK && nnl_history_epochs(m) == K &&
                      fit(m, d, K, N, r.seed) == NNL_OK && nnl_save_model(m, fin.c_str()) == NNL_OK;
            if (!ok) fprintf(stderr, "resume child: %s\n", nnl_last_error());
            nnl_model_free(m);
            return ok;
        }));
        nnl_model *resumed = nullptr;
        REQUIRE_MESSAGE(nnl_load_model(fin.c_str(), &resumed) == NNL_OK, err());
        CHECK(same_bits(all_weights(full), all_weights(resumed))); /* BN moving statistics included */
        CHECK(nnl_history_epochs(resumed) == N);
        std::vector<double> h1(N), h2(N);
        for (const char *key : {"loss", "accuracy", "val_loss"}) {
            CHECK(nnl_history_get(full, key, h1.data(), N) == N);
            CHECK(nnl_history_get(resumed, key, h2.data(), N) == N);
            CHECK(memcmp(h1.data(), h2.data(), sizeof(double) * N) == 0);
        }
        /* and the same in this process, from a fresh model loaded from the file */
        nnl_model *again = nullptr;
        REQUIRE(nnl_load_model(ck.c_str(), &again) == NNL_OK);
        REQUIRE(fit(again, d, K, N, r.seed) == NNL_OK);
        CHECK(same_bits(all_weights(full), all_weights(again)));
        /* the optimizer state matters: weights alone do not resume exactly */
        nnl_model *cold = resume_model(r.opt);
        REQUIRE(nnl_load_weights(cold, ck.c_str()) == NNL_OK);
        REQUIRE(fit(cold, d, K, N, r.seed) == NNL_OK);
        CHECK(!same_bits(all_weights(full), all_weights(cold)));
        nnl_model_free(full);
        nnl_model_free(resumed);
        nnl_model_free(again);
        nnl_model_free(cold);
    }
    nnl_set_threads(0);
}

TEST_CASE("save_model keeps compile state; load_model of an uncompiled or weights file") {
    TempDir dir;
    Data d;
    nnl_model *m = resume_model("RMSprop(learning_rate=0.002, momentum=0.5)");
    REQUIRE(fit(m, d, 0, 1, 5) == NNL_OK);
    REQUIRE(nnl_set_learning_rate(m, 0.00125) == NNL_OK);
    std::string p = dir / "m.nnl";
    REQUIRE(nnl_save_model(m, p.c_str()) == NNL_OK);
    nnl_model *l = nullptr;
    REQUIRE(nnl_load_model(p.c_str(), &l) == NNL_OK);
    CHECK(nnl_get_learning_rate(l) == 0.00125);
    CHECK(nnl_history_key_count(l) == nnl_history_key_count(m));
    double e1[2], e2[2];
    REQUIRE(nnl_evaluate(m, d.x.data(), 2, d.xs, d.y.data(), NNL_INT32, 1, d.ys, 32, e1, 2) == NNL_OK);
    REQUIRE(nnl_evaluate(l, d.x.data(), 2, d.xs, d.y.data(), NNL_INT32, 1, d.ys, 32, e2, 2) == NNL_OK);
    CHECK(e1[0] == e2[0]);
    CHECK(e1[1] == e2[1]);
    nnl_model_free(l);
    /* uncompiled model; and a weights file gives an uncompiled model */
    nnl_model *u = kcnn(8);
    REQUIRE(nnl_save_model(u, p.c_str()) == NNL_OK);
    REQUIRE(nnl_load_model(p.c_str(), &l) == NNL_OK);
    CHECK(same_bits(all_weights(u), all_weights(l)));
    CHECK(nnl_fit(l, d.x.data(), 2, d.xs, d.y.data(), NNL_INT32, 1, d.ys, nullptr) == NNL_ERR_STATE);
    nnl_model_free(l);
    REQUIRE(nnl_save_weights(u, p.c_str()) == NNL_OK);
    REQUIRE(nnl_load_model(p.c_str(), &l) == NNL_OK);
    CHECK(same_bits(all_weights(u), all_weights(l)));
    CHECK(to_json(u) == to_json(l));
    nnl_model_free(l);
    nnl_model_free(u);
    nnl_model_free(m);
}

TEST_CASE("truncated and corrupted model files are refused with NNL_ERR_FORMAT") {
    TempDir dir;
    Data d;
    nnl_model *m = resume_model("Adam(learning_rate=0.01)");
    REQUIRE(fit(m, d, 0, 1, 3) == NNL_OK);
    std::string p = dir / "m.nnl", q = dir / "bad.nnl";
    REQUIRE(nnl_save_model(m, p.c_str()) == NNL_OK);
    std::vector<uint8_t> f = slurp(p);
    nnl_model *l = nullptr;
    nnl_model *w = resume_model("Adam(learning_rate=0.01)");
    std::vector<float> w0 = all_weights(w);
    for (size_t n = 0; n < f.size(); n++) {
        spit(q, f.data(), n);
        int st = nnl_load_model(q.c_str(), &l);
        REQUIRE_MESSAGE(st == NNL_ERR_FORMAT, "prefix " << n << ": " << st << " " << err());
        REQUIRE(l == nullptr);
        REQUIRE(nnl_load_weights(w, q.c_str()) == NNL_ERR_FORMAT);
    }
    CHECK(same_bits(w0, all_weights(w)));
    /* every flipped byte is caught: checksums cover the data, padding must be zero */
    uint64_t s = 11;
    for (int round = 0; round < 400; round++) {
        std::vector<uint8_t> g = f;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t at = (size_t)(s >> 33) % g.size();
        g[at] ^= (uint8_t)(1 + (s >> 20) % 255);
        spit(q, g.data(), g.size());
        int st = nnl_load_model(q.c_str(), &l);
        REQUIRE_MESSAGE(st == NNL_ERR_FORMAT, "byte " << at << ": " << st << " " << err());
    }
    /* an extra byte at the end */
    std::vector<uint8_t> g = f;
    g.push_back(0);
    spit(q, g.data(), g.size());
    CHECK(nnl_load_model(q.c_str(), &l) == NNL_ERR_FORMAT);
    CHECK(err().find("truncated or padded") != std::string::npos);
    nnl_model_free(m);
    nnl_model_free(w);
}

namespace {

uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Replaces the metadata of an nnlite file and fixes every checksum but the
   tensors': a forged file that only the reader's checks can refuse. */
std::vector<uint8_t> forge(const std::vector<uint8_t> &f, const std::string &meta) {
    uint64_t msize = 0;
    for (int i = 0; i < 8; i++) msize |= (uint64_t)f[40 + (size_t)i] << (8 * i);
    size_t old_end = 64 + (size_t)msize, new_end = 64 + meta.size();
    /* the tensors stay at their offsets when the new text is not longer */
    size_t body = std::max(old_end, new_end);
    std::string g((const char *)f.data(), 64);
    g += meta;
    g.resize(body, '\0');
    g.append((const char *)f.data() + old_end, f.size() - old_end);
    std::vector<uint8_t> out(g.begin(), g.end());
    uint64_t fsize = out.size();
    for (int i = 0; i < 8; i++) out[24 + (size_t)i] = (uint8_t)(fsize >> (8 * i));
    for (int i = 0; i < 8; i++) out[40 + (size_t)i] = (uint8_t)((uint64_t)meta.size() >> (8 * i));
    put32(&out[48], crc32((const uint8_t *)meta.data(), meta.size()));
    put32(&out[60], crc32(out.data(), 60));
    return out;
}

} // namespace

TEST_CASE("forged metadata with valid checksums is refused, never trusted") {
    TempDir dir;
    Data d;
    nnl_model *m = resume_model("Adam(learning_rate=0.01)");
    REQUIRE(fit(m, d, 0, 1, 3) == NNL_OK);
    std::string p = dir / "m.nnl", q = dir / "forged.nnl";
    REQUIRE(nnl_save_model(m, p.c_str()) == NNL_OK);
    std::vector<uint8_t> f = slurp(p);
    uint64_t msize = 0;
    for (int i = 0; i < 8; i++) msize |= (uint64_t)f[40 + (size_t)i] << (8 * i);
    std::string meta(f.begin() + 64, f.begin() + 64 + (long)msize);
    nnl_model *l = nullptr;
    /* the unchanged text passes (the forger is right) */
    std::vector<uint8_t> g = forge(f, meta);
    spit(q, g.data(), g.size());
    REQUIRE_MESSAGE(nnl_load_model(q.c_str(), &l) == NNL_OK, err());
    nnl_model_free(l);
    /* targeted lies */
    struct Lie {
        const char *from, *to;
    } lies[] = {{"\"shape\": [20, 32]", "\"shape\": [20000000, 32000]"},
                {"\"shape\": [20, 32]", "\"shape\": [32, 20]"},
                {"\"units\": 32", "\"units\": 3200000"},
                {"\"iterations\": ", "\"iterations\": -"},
                {"\"slots\": 2", "\"slots\": 3"},
                {"\"epochs\": 1", "\"epochs\": 2"},
                {"\"rng\": [\"", "\"rng\": [\"zz"},
                {"\"optimizer\": \"Adam", "\"optimizer\": \"Adamm"},
                {"\"class_name\": \"Dense\"", "\"class_name\": \"Dens\""}};
    for (auto &lie : lies) {
        std::string t = meta;
        size_t at = t.find(lie.from);
        REQUIRE_MESSAGE(at != std::string::npos, lie.from);
        t.replace(at, strlen(lie.from), lie.to);
        g = forge(f, t);
        spit(q, g.data(), g.size());
        int st = nnl_load_model(q.c_str(), &l);
        /* a layer kind this version lacks may come from a newer nnlite: UNSUPPORTED, naming it */
        int want = strstr(lie.to, "Dens\"") ? NNL_ERR_UNSUPPORTED : NNL_ERR_FORMAT;
        CHECK_MESSAGE(st == want, lie.to << ": " << st << " " << err());
        CHECK(l == nullptr);
    }
    /* random edits of the text: any status, no crash, no leak (ASan) */
    uint64_t s = 5;
    int refused = 0;
    for (int round = 0; round < 1500; round++) {
        std::string t = meta;
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            t[(size_t)(s >> 33) % t.size()] = "0123456789-.e,:[]{}\"9 "[(s >> 20) % 22];
        }
        g = forge(f, t);
        spit(q, g.data(), g.size());
        if (nnl_load_model(q.c_str(), &l) == NNL_OK)
            nnl_model_free(l);
        else
            refused++;
    }
    MESSAGE("forged metadata: " << refused << " of 1500 random edits refused, the rest loaded harmlessly");
    nnl_model_free(m);
}

TEST_CASE("saves are atomic: a process killed while saving leaves a complete file") {
    TempDir dir;
    std::string target = dir / "big.nnl";
    /* two versions of a ~8 MB model that differ in every weight */
    auto make = [](uint64_t seed) {
        nnl_model *m = nnl_model_create();
        REQUIRE(nnl_model_set_seed(m, seed) == NNL_OK);
        REQUIRE(nnl_add(m, "Dense(1000, input_shape=(2000,))") == NNL_OK);
        REQUIRE(nnl_add(m, "Dense(10)") == NNL_OK);
        return m;
    };
    nnl_model *va = make(1), *vb = make(2);
    std::vector<float> wa = all_weights(va), wb = all_weights(vb);
    REQUIRE(nnl_save_model(va, target.c_str()) == NNL_OK);
    uint64_t s = 99;
    int kills = 0, got_a = 0, got_b = 0;
    for (int round = 0; round < 12; round++) {
        fflush(nullptr);
        pid_t pid = fork();
        if (pid == 0) {
            nnl_set_threads(1);
            for (int i = 0;; i++)
                if (nnl_save_model(i % 2 ? va : vb, target.c_str()) != NNL_OK) _exit(3);
        }
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        usleep((useconds_t)(20000 + (s >> 33) % 150000));
        kill(pid, SIGKILL);
        int st = 0;
        waitpid(pid, &st, 0);
        kills += WIFSIGNALED(st);
        nnl_model *l = nullptr;
        REQUIRE_MESSAGE(nnl_load_model(target.c_str(), &l) == NNL_OK, err());
        std::vector<float> w = all_weights(l);
        bool a = same_bits(w, wa), b = same_bits(w, wb);
        CHECK((a || b));
        got_a += a;
        got_b += b;
        nnl_model_free(l);
    }
    CHECK(kills == 12);
    size_t leftovers = dir.list().size() - 1;
    MESSAGE("atomic save: 12 kills, target complete every time (version A " << got_a << ", B " << got_b << "), "
            << leftovers << " temporary files left by killed saves");
    /* a failed save returns NNL_ERR_IO and leaves nothing */
    std::string sub = dir / "sub";
    REQUIRE(mkdir(sub.c_str(), 0755) == 0);
    std::string missing = sub + "/no/such/folder/m.nnl";
    CHECK(nnl_save_model(va, missing.c_str()) == NNL_ERR_IO);
    std::string isdir = sub + "/adir";
    REQUIRE(mkdir(isdir.c_str(), 0755) == 0);
    CHECK(nnl_save_weights(va, isdir.c_str()) == NNL_ERR_IO); /* rename over a folder fails */
    CHECK(nnl_save_weights_npz(va, isdir.c_str()) == NNL_ERR_IO);
    DIR *dd = opendir(sub.c_str());
    int entries = 0;
    while (struct dirent *e = readdir(dd)) entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(dd);
    CHECK(entries == 1); /* only adir: no temporary file left */
    nnl_model_free(va);
    nnl_model_free(vb);
}

TEST_CASE("npz weights round-trip in Keras get_weights() order") {
    TempDir dir;
    std::string p = dir / "w.npz";
    nnl_model *a = resume_model("adam"), *b = resume_model("adam");
    Data d;
    REQUIRE(fit(a, d, 0, 1, 1) == NNL_OK); /* moving statistics move */
    REQUIRE(nnl_save_weights_npz(a, p.c_str()) == NNL_OK);
    REQUIRE_MESSAGE(nnl_load_weights_npz(b, p.c_str()) == NNL_OK, err());
    CHECK(same_bits(all_weights(a), all_weights(b)));
    /* members are arr_0.. with Keras' shapes, readable by nnl_load_npz */
    const int64_t want[][2] = {{20, 32}, {32, 0}, {32, 0}, {32, 0}, {32, 0}, {32, 0}, {32, 3}, {3, 0}};
    for (int i = 0; i < 8; i++) {
        nnl_array *arr = nullptr;
        std::string key = "arr_" + std::to_string(i);
        REQUIRE(nnl_load_npz(p.c_str(), key.c_str(), NNL_FLOAT32, &arr) == NNL_OK);
        CHECK(nnl_array_rank(arr) == (want[i][1] ? 2 : 1));
        CHECK(nnl_array_dim(arr, 0) == want[i][0]);
        if (want[i][1]) CHECK(nnl_array_dim(arr, 1) == want[i][1]);
        nnl_array_free(arr);
    }
    nnl_model *c = nnl_model_create();
    REQUIRE(nnl_add(c, "Dense(31, input_shape=(20,))") == NNL_OK);
    CHECK(nnl_load_weights_npz(c, p.c_str()) == NNL_ERR_SHAPE);
    CHECK_MESSAGE(err().find("(20, 31)") != std::string::npos, err());
    CHECK(nnl_load_weights_npz(b, (dir / "none.npz").c_str()) == NNL_ERR_IO);
    nnl_model_free(a);
    nnl_model_free(b);
    nnl_model_free(c);
}

namespace {

const char *TORCH_SCRIPT = R"PY(
import sys, numpy as np, torch
torch.manual_seed(0)
mode, d = sys.argv[1], sys.argv[2]
net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                          torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
C, H, W = 4, 4, 4  # after the pool
def to_keras(net):
    k = net[0].weight.detach().numpy().transpose(2, 3, 1, 0)           # (out,in,kh,kw) -> (kh,kw,in,out)
    lw = net[4].weight.detach().numpy()                                # (5, C*H*W), flattened as (c, h, w)
    lk = lw.reshape(5, C, H, W).transpose(2, 3, 1, 0).reshape(H * W * C, 5)  # Keras flattens (h, w, c)
    return [k, net[0].bias.detach().numpy(), lk, net[4].bias.detach().numpy()]
def from_keras(ws):
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(ws[0].transpose(3, 2, 0, 1)))
        net[0].bias.copy_(torch.from_numpy(ws[1]))
        lw = ws[2].reshape(H, W, C, 5).transpose(3, 2, 0, 1).reshape(5, C * H * W)
        net[4].weight.copy_(torch.from_numpy(np.ascontiguousarray(lw)))
        net[4].bias.copy_(torch.from_numpy(ws[3]))
x = np.load(d + "/x.npy")                                               # (N, 10, 10, 2) channels-last
if mode == "export":
    np.savez(d + "/torch.npz", *[np.ascontiguousarray(a, dtype=np.float32) for a in to_keras(net)])
else:
    w = np.load(d + "/nnlite.npz")
    from_keras([w["arr_%d" % i] for i in range(len(w.files))])
with torch.no_grad():
    y = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
np.save(d + "/torch_pred_" + mode + ".npy", y.astype(np.float32))
)PY";

bool have_torch() { return system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0; }

} // namespace

TEST_CASE("npz exchange with PyTorch: same predictions both ways") {
    if (!have_torch()) {
        MESSAGE("SKIPPED: /usr/bin/python3 lacks torch or numpy (Debian: python3-torch python3-numpy)");
        return;
    }
    TempDir dir;
    FILE *f = fopen((dir / "t.py").c_str(), "w");
    REQUIRE(f);
    fputs(TORCH_SCRIPT, f);
    fclose(f);
    const int N = 7;
    int64_t xs[4] = {N, 10, 10, 2};
    std::vector<float> x = noise((size_t)N * 200, 21);
    nnl_array *xa = nullptr;
    REQUIRE(nnl_array_create(NNL_FLOAT32, 4, xs, &xa) == NNL_OK);
    memcpy(nnl_array_data(xa), x.data(), x.size() * sizeof(float));
    REQUIRE(nnl_save_npy((dir / "x.npy").c_str(), xa) == NNL_OK);
    nnl_array_free(xa);
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 5) == NNL_OK);
    REQUIRE(nnl_add(m, "Conv2D(4, 3, activation='relu', input_shape=(10, 10, 2))") == NNL_OK);
    REQUIRE(nnl_add(m, "MaxPooling2D(2)") == NNL_OK);
    REQUIRE(nnl_add(m, "Flatten()") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(5)") == NNL_OK);
    auto max_diff = [&](const char *pred_file) {
        nnl_array *ta = nullptr;
        REQUIRE(nnl_load_npy((dir / pred_file).c_str(), NNL_FLOAT32, &ta) == NNL_OK);
        REQUIRE(nnl_array_size(ta) == N * 5);
        std::vector<float> p = predict(m, x, 4, xs, N * 5);
        const float *t = (const float *)nnl_array_data(ta);
        double md = 0, mag = 0;
        for (int i = 0; i < N * 5; i++) {
            md = std::max(md, (double)std::fabs(p[(size_t)i] - t[i]));
            mag = std::max(mag, (double)std::fabs(t[i]));
        }
        nnl_array_free(ta);
        CHECK(mag > 0.01); /* the predictions are not trivially zero */
        return md;
    };
    /* PyTorch -> npz -> nnlite */
    std::string cmd = "cd '" + dir.path + "' && /usr/bin/python3 t.py export '" + dir.path + "'";
    REQUIRE(system(cmd.c_str()) == 0);
    REQUIRE_MESSAGE(nnl_load_weights_npz(m, (dir / "torch.npz").c_str()) == NNL_OK, err());
    double d1 = max_diff("torch_pred_export.npy");
    CHECK(d1 < 1e-4);
    /* nnlite -> npz -> PyTorch */
    nnl_model_free(m);
    m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 6) == NNL_OK);
    REQUIRE(nnl_add(m, "Conv2D(4, 3, activation='relu', input_shape=(10, 10, 2))") == NNL_OK);
    REQUIRE(nnl_add(m, "MaxPooling2D(2)") == NNL_OK);
    REQUIRE(nnl_add(m, "Flatten()") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(5, bias_initializer='ones')") == NNL_OK);
    REQUIRE(nnl_save_weights_npz(m, (dir / "nnlite.npz").c_str()) == NNL_OK);
    cmd = "cd '" + dir.path + "' && /usr/bin/python3 t.py import '" + dir.path + "'";
    REQUIRE(system(cmd.c_str()) == 0);
    double d2 = max_diff("torch_pred_import.npy");
    CHECK(d2 < 1e-4);
    MESSAGE("npz/PyTorch: max |nnlite - torch| = " << d1 << " (torch -> nnlite), " << d2 << " (nnlite -> torch)");
    nnl_model_free(m);
}
