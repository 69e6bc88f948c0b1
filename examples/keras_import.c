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

   --compare-npz W checks the import against the same weights given another
   way: W is the model's weights as numpy writes them
   (np.savez("w.npz", *model.get_weights()) in Keras). The same
   architecture (nnl_model_to_json of the loaded model, then
   nnl_model_from_json) gets W's weights (nnl_load_weights_npz) and predicts
   the same samples; the largest |difference| is printed, and the program
   exits 1 when it is over 1e-6.

   usage: keras_import [model.keras or model.h5] [--compare-npz weights.npz]
   e.g.   keras_import tests/reference/keras/rnns_tf2.h5
          keras_import tests/reference/keras/mlp.keras --compare-npz tests/reference/keras/mlp.npz */
#include "common.h"

#include <math.h>

static const double TOLERANCE = 1e-6;

static void usage_extra(FILE *f) {
    fprintf(f, "  --compare-npz W  also predict with the same architecture and the weights of W (.npz, Keras'\n"
               "                   get_weights() order) and print the largest |difference| (exit 1 above %g)\n",
            TOLERANCE);
}

/* The npz route: m's architecture with the weights of npz, on the same
   samples x; prints the largest |difference| from y (n values) and says
   whether it is within TOLERANCE (a NaN never is). */
static int compare_npz(nnl_model *m, const char *npz, const float *x, int rank, const int64_t *shape,
                       const float *y, int64_t n) {
    int64_t len = nnl_model_to_json(m, NULL, 0), i;
    char *json;
    nnl_model *ref;
    float *yr;
    double worst = 0;
    int nan = 0;
    if (len < 0) CHECK(NNL_ERR_STATE);
    json = malloc((size_t)len + 1);
    yr = malloc((size_t)n * sizeof(float));
    if (!json || !yr) {
        fprintf(stderr, "keras_import: out of memory\n");
        exit(1);
    }
    nnl_model_to_json(m, json, len + 1);
    CHECK(nnl_model_from_json(json, &ref));
    free(json);
    CHECK(nnl_load_weights_npz(ref, npz));
    CHECK(nnl_predict(ref, x, rank + 1, shape, 0, yr, n));
    for (i = 0; i < n; i++) {
        double d = fabs((double)y[i] - (double)yr[i]);
        if (d != d) nan = 1;
        else if (d > worst) worst = d;
    }
    printf("npz route (%s: the same architecture with these weights): max |difference| %.3g over %lld values%s "
           "(tolerance %g): %s\n",
           npz, worst, (long long)n, nan ? ", and NaN" : "", TOLERANCE, !nan && worst <= TOLERANCE ? "ok" : "FAILED");
    free(yr);
    nnl_model_free(ref);
    return !nan && worst <= TOLERANCE;
}

int main(int argc, char **argv) {
    const ex_spec spec = {1, 32, "model.keras or model.h5", NULL};
    ex_args a;
    char path[4096];
    const char *npz = NULL;
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    nnl_model *m;
    int rank, i, k, nrest = 0, same = 1;
    int64_t shape[NNL_MAX_RANK + 1], out_shape[NNL_MAX_RANK], per_in = 1, per_out = 1;
    float *x, *y;
    /* --compare-npz W is this example's own; the rest is the examples' usual command line */
    if (!rest) return 1;
    for (i = 0; i < argc; i++) {
        if (i > 0 && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
            ex_usage(stdout, argv[0], &spec);
            usage_extra(stdout);
            return 0;
        }
        if (i > 0 && !strcmp(argv[i], "--compare-npz")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "keras_import: option '--compare-npz' needs a .npz file\n");
                ex_usage(stderr, argv[0], &spec);
                usage_extra(stderr);
                return 2;
            }
            npz = argv[++i];
            continue;
        }
        rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    a = ex_parse_args(nrest, rest, spec);
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
    if (npz) same = compare_npz(m, npz, x, rank, shape, y, 3 * per_out);
    free(x);
    free(y);
    free(rest);
    nnl_model_free(m);
    return same ? 0 : 1;
}
