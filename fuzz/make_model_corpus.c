/* Writes the seed corpus of the model-file fuzz targets (fuzz_json,
   fuzz_model, fuzz_weights_npz, and with HDF5 fuzz_keras) with nnlite
   itself: small models of the architecture in fuzz_targets.hpp
   (kSeedLayers) saved every way, the JSON of a few other architectures,
   and two JPEGs for fuzz_image. The output is committed; `make
   fuzz-corpus` runs this again (and fuzz/make_corpus.py). C99, public API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnlite.h"

static void check(int st) {
    if (st != NNL_OK) {
        fprintf(stderr, "make_model_corpus: %s\n", nnl_last_error());
        exit(1);
    }
}

static nnl_model *build(const char *const *specs, int n) {
    nnl_model *m = nnl_model_create();
    check(nnl_model_set_seed(m, 1));
    for (int i = 0; i < n; i++) check(nnl_add(m, specs[i]));
    return m;
}

static void put_json(const nnl_model *m, const char *path) {
    int64_t n = nnl_model_to_json(m, NULL, 0);
    if (n < 0) check(NNL_ERR_INTERNAL);
    char *s = malloc((size_t)n + 1);
    nnl_model_to_json(m, s, n + 1);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
        fprintf(stderr, "make_model_corpus: cannot write %s\n", path);
        exit(1);
    }
    free(s);
}

static void put_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) exit(1);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus";
    char p[1024];
    /* the seeds' architecture (kSeedLayers in fuzz_targets.hpp) */
    const char *seed[] = {"Dense(4, activation='relu', input_shape=(3,))", "BatchNormalization()",
                          "Dense(2, activation='softmax')"};
    nnl_model *m = build(seed, 3);
#define PATH(target, name) (snprintf(p, sizeof p, "%s/%s/%s", dir, target, name), p)
    /* JPEGs for fuzz_image (fuzz/make_corpus.py writes the other image
       formats; Python's standard library has no JPEG encoder) */
    if (nnl_has_feature("images") == 1) {
        float px[8 * 16 * 3];
        for (int i = 0; i < 8 * 16 * 3; i++) px[i] = (float)((i * 37) % 256);
        check(nnl_save_image(PATH("fuzz_image", "rgb_16x8.jpg"), px, 8, 16, 3, 1.0f));
        check(nnl_save_image(PATH("fuzz_image", "grey_8x16.jpg"), px, 16, 8, 1, 1.0f));
    }
    check(nnl_save_model(m, PATH("fuzz_model", "uncompiled.nnl")));
    check(nnl_save_weights(m, PATH("fuzz_model", "weights.nnl")));
    check(nnl_save_weights_npz(m, PATH("fuzz_weights_npz", "weights.npz")));
    put_json(m, PATH("fuzz_json", "mlp_bn.json"));
    float x[4 * 3] = {0, 1, 2, 1, 0, 1, 2, 2, 0, 1, 1, 1};
    float y[4] = {0, 1, 1, 0};
    int64_t xs[2] = {4, 3}, ys[1] = {4};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 1, o.batch_size = 2, o.verbose = 0;
    check(nnl_compile(m, "Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy"));
    check(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 1, ys, &o));
    check(nnl_save_model(m, PATH("fuzz_model", "adam_1_epoch.nnl")));
    check(nnl_save_weights_npz(m, PATH("fuzz_weights_npz", "trained.npz")));
    /* the same model as Keras files nnlite writes (.keras, .h5; with its
       compile configuration), for fuzz_keras: only with HDF5 */
    if (nnl_has_feature("hdf5") == 1) {
        check(nnl_save_model(m, PATH("fuzz_keras", "nnlite_adam.keras")));
        check(nnl_save_model(m, PATH("fuzz_keras", "nnlite_adam.h5")));
    }
    nnl_model_free(m);

    const char *sgd[] = {"Dense(2, activation='sigmoid', input_shape=(3,))"};
    m = build(sgd, 1);
    check(nnl_compile(m, "SGD(learning_rate=0.1, momentum=0.9)", "binary_crossentropy", "accuracy"));
    float yb[4 * 2] = {0, 1, 1, 0, 1, 1, 0, 0};
    int64_t ybs[2] = {4, 2};
    check(nnl_fit(m, x, 2, xs, yb, NNL_FLOAT32, 2, ybs, &o));
    check(nnl_save_model(m, PATH("fuzz_model", "sgd_momentum.nnl")));
    nnl_model_free(m);

    /* JSON of other layers */
    const char *cnn[] = {"Conv2D(2, (3, 3), activation='relu', padding='same', input_shape=(6, 6, 1))",
                         "MaxPooling2D((2, 2))", "Dropout(0.25)", "Flatten()", "Dense(3, activation='softmax')"};
    m = build(cnn, 5);
    put_json(m, PATH("fuzz_json", "cnn2d.json"));
    nnl_model_free(m);
    const char *c1[] = {"Conv1D(2, 3, strides=2, padding='causal', input_shape=(8, 1))", "GlobalAveragePooling1D()",
                        "Dense(1)"};
    m = build(c1, 3);
    put_json(m, PATH("fuzz_json", "conv1d.json"));
    nnl_model_free(m);
    const char *c3[] = {"Reshape((2, 2, 2, 1), input_shape=(8,))", "Conv3D(1, (2, 2, 2))", "Flatten()"};
    m = build(c3, 3);
    put_json(m, PATH("fuzz_json", "conv3d.json"));
    nnl_model_free(m);
    const char *up[] = {"UpSampling2D((2, 2), input_shape=(2, 2, 1))", "AveragePooling2D((2, 2))",
                        "GlobalMaxPooling2D()", "Activation('tanh')"};
    m = build(up, 4);
    put_json(m, PATH("fuzz_json", "pooling.json"));
    nnl_model_free(m);
    /* hand-written: Keras 3's InputLayer batch_shape, and the smallest model */
    put_text(PATH("fuzz_json", "keras3_input.json"),
             "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"s\", \"layers\": [{\"class_name\": "
             "\"InputLayer\", \"config\": {\"batch_shape\": [null, 4], \"dtype\": \"float32\"}}, {\"module\": "
             "\"keras.layers\", \"class_name\": \"Dense\", \"config\": {\"units\": 2, \"activation\": \"relu\"}, "
             "\"registered_name\": null}]}}");
    put_text(PATH("fuzz_json", "minimal.json"),
             "{\"class_name\":\"Sequential\",\"config\":{\"layers\":[{\"class_name\":\"Dense\",\"config\":"
             "{\"units\":1,\"batch_input_shape\":[null,2]}}]}}");
    return 0;
}
