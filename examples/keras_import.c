/* keras_import.c - a model trained in Keras, run from C: nnl_load_model
   opens Keras' own files by their content, as keras.models.load_model does:

     model.save("model.keras")   Keras 3 (a zip of config.json and
                                 model.weights.h5)
     model.save("model.h5")      tf.keras 2.x, Keras 2, or Keras 3's legacy
                                 HDF5 format

   then prints the summary and predicts three samples (made up here: whole
   numbers 0..9, the same every run). Needs nnlite built with HDF5 (Debian
   libhdf5-dev; nnl_has_feature("hdf5")). Without a path it opens the CNN
   the tests wrote with h5py in Keras' layout
   (tests/reference/keras/cnn.keras, found from the program's folder).

   usage: keras_import [model.keras or model.h5]
   e.g.   keras_import tests/reference/keras/rnns_tf2.h5 */
#include "common.h"

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){1, 32, "model.keras or model.h5", NULL});
    char path[4096];
    nnl_model *m;
    int rank, i, k;
    int64_t shape[NNL_MAX_RANK + 1], out_shape[NNL_MAX_RANK], per_in = 1, per_out = 1;
    float *x, *y;
    if (a.data) snprintf(path, sizeof path, "%s", a.data);
    else if (snprintf(path, sizeof path, "%s/../tests/reference/keras/cnn.keras", a.out) >= (int)sizeof path)
        return 1;
    if (nnl_has_feature("hdf5") != 1)
        fprintf(stderr, "keras_import: this nnlite has no HDF5: Keras files will be refused "
                        "(Debian: apt-get install libhdf5-dev, then rebuild)\n");
    CHECK(nnl_load_model(path, &m));
    printf("loaded %s\n", path);
    CHECK(nnl_summary(m, stdout));

    /* three samples of the model's input shape */
    rank = nnl_input_shape(m, shape + 1);
    if (rank < 0) CHECK(NNL_ERR_ARGUMENT);
    shape[0] = 3;
    for (i = 1; i <= rank; i++) {
        if (shape[i] < 0) shape[i] = 5; /* a None (any length) time axis: 5 steps */
        per_in *= shape[i];
    }
    x = malloc((size_t)(3 * per_in) * sizeof(float));
    /* whole numbers 0..9: also token ids for a model that starts with an Embedding */
    for (i = 0; i < 3 * per_in; i++) x[i] = (float)((i * 7 + 3) % 10);
    k = nnl_output_shape(m, out_shape);
    for (i = 0; i < k; i++) per_out *= out_shape[i] < 0 ? 5 : out_shape[i];
    y = malloc((size_t)(3 * per_out) * sizeof(float));
    if (!x || !y) return 1;
    CHECK(nnl_predict(m, x, rank + 1, shape, 0, y, 3 * per_out));
    for (i = 0; i < 3; i++) {
        printf("sample %d:", i);
        for (k = 0; k < per_out && k < 10; k++) printf(" %.6f", y[i * per_out + k]);
        printf("%s\n", per_out > 10 ? " ..." : "");
    }
    free(x);
    free(y);
    nnl_model_free(m);
    return 0;
}
