/* save_load.c - the Keras tutorial's three ways to keep a model, on K-MLP
   (Fashion-MNIST by default):

     1. model.save / load_model:   nnl_save_model / nnl_load_model - the whole
        model with its optimizer state; training continues where it stopped
        (fit with initial_epoch), exactly as if it had never stopped.
     2. to_json / model_from_json: nnl_model_to_json / nnl_model_from_json -
        the architecture alone, in Keras' JSON layout (the model is rebuilt,
        compiled again, and gets its weights from 3).
     3. save_weights / load_weights: nnl_save_weights / nnl_load_weights.
   And the weights as .npz for numpy/Keras/PyTorch (nnl_save_weights_npz).

   Files go to --out DIR, by default the program's folder (build/):
   kmlp.nnl, kmlp.json, kmlp.weights.nnl, kmlp.weights.npz. Each way ends
   with the test accuracy of the model it brought back, which must equal the
   original's.

   usage: save_load [mnist or fashion-mnist path] [--epochs N (1)] [--batch N] [--threads N]
                    [--out DIR]
   e.g.   save_load /usr/share/datasets/fashion-mnist --epochs 2 */
#include "common.h"

static double test_accuracy(nnl_model *m, nnl_array *x, nnl_array *y) {
    double out[2];
    CHECK(nnl_evaluate(m, (const float *)nnl_array_data(x), 3, nnl_array_shape(x),
                       nnl_array_data(y), NNL_INT64, 1, nnl_array_shape(y), 256, out, 2));
    return out[1];
}

/* A model brought back must give exactly the original's result. */
static void same(double want, double got) {
    if (want != got) {
        fprintf(stderr, "save_load: the model brought back differs (%.6f vs %.6f)\n", got, want);
        exit(1);
    }
}

static void train(nnl_model *m, nnl_array *x, nnl_array *y, int initial_epoch, int epochs,
                  int batch) {
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.initial_epoch = initial_epoch;
    o.epochs = epochs;
    o.batch_size = batch;
    o.validation_split = 0.1;
    o.verbose = 2;
    CHECK(nnl_fit(m, (const float *)nnl_array_data(x), 3, nnl_array_shape(x), nnl_array_data(y),
                  NNL_INT64, 1, nnl_array_shape(y), &o));
}

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){1, 120, "mnist or fashion-mnist path",
                                                    "the model files"});
    const char *path = a.data ? a.data : "/usr/share/datasets/fashion-mnist";
    nnl_array *x_train, *y_train, *x_test, *y_test;
    nnl_model *m, *back;
    char *json;
    int64_t n;
    double acc;
    char model_file[4096], json_file[4096], weights_file[4096], npz_file[4096];
    if (!a.data && !ex_readable("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz") &&
        !ex_readable("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte"))
        path = ex_find_data(NULL, 0); /* falls back to MNIST, or says how to get data */
    else
        printf("data: %s\n", path);
    CHECK(nnl_load_mnist(path, &x_train, &y_train, &x_test, &y_test));
    ex_out_path(&a, "kmlp.nnl", model_file, sizeof model_file);
    ex_out_path(&a, "kmlp.json", json_file, sizeof json_file);
    ex_out_path(&a, "kmlp.weights.nnl", weights_file, sizeof weights_file);
    ex_out_path(&a, "kmlp.weights.npz", npz_file, sizeof npz_file);
    CHECK(nnl_normalize((float *)nnl_array_data(x_train), 3, nnl_array_shape(x_train), 1));
    CHECK(nnl_normalize((float *)nnl_array_data(x_test), 3, nnl_array_shape(x_test), 1));

    /* K-MLP, trained for a.epochs epochs */
    m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Flatten(input_shape=(28, 28))"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dense(10, activation='softmax')"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.001)", "sparse_categorical_crossentropy",
                      "accuracy"));
    train(m, x_train, y_train, 0, a.epochs, a.batch);
    acc = test_accuracy(m, x_test, y_test);
    printf("original model:            test accuracy %.4f\n", acc);

    /* 1. the whole model: save, load, go on training one more epoch */
    CHECK(nnl_save_model(m, model_file));
    CHECK(nnl_load_model(model_file, &back));
    printf("1. nnl_load_model:         test accuracy %.4f (epochs done: %d)\n",
           test_accuracy(back, x_test, y_test), nnl_history_epochs(back));
    same(acc, test_accuracy(back, x_test, y_test));
    train(back, x_train, y_train, a.epochs, a.epochs + 1, a.batch);
    printf("   after one more epoch:   test accuracy %.4f\n", test_accuracy(back, x_test, y_test));
    nnl_model_free(back);

    /* 2. the architecture as Keras JSON, and 3. the weights alone */
    n = nnl_model_to_json(m, NULL, 0);
    json = (char *)malloc((size_t)n + 1);
    if (!json) return 1;
    CHECK(nnl_model_to_json(m, json, n + 1) < 0 ? NNL_ERR_INTERNAL : NNL_OK);
    {
        FILE *f = fopen(json_file, "w");
        if (!f || fputs(json, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", json_file);
            return 1;
        }
    }
    printf("2. nnl_model_to_json:      %lld bytes, kmlp.json: %.60s...\n", (long long)n, json);
    CHECK(nnl_save_weights(m, weights_file));
    CHECK(nnl_model_from_json(json, &back));
    CHECK(nnl_compile(back, "Adam(learning_rate=0.001)", "sparse_categorical_crossentropy",
                      "accuracy"));
    printf("   from_json (new weights): test accuracy %.4f\n", test_accuracy(back, x_test, y_test));
    CHECK(nnl_load_weights(back, weights_file));
    printf("3. + nnl_load_weights:     test accuracy %.4f\n", test_accuracy(back, x_test, y_test));
    same(acc, test_accuracy(back, x_test, y_test));
    nnl_model_free(back);

    /* the weights for numpy: np.load("kmlp.weights.npz")["arr_0"] is the (784, 128) kernel */
    CHECK(nnl_save_weights_npz(m, npz_file));
    CHECK(nnl_model_from_json(json, &back));
    CHECK(nnl_compile(back, "adam", "sparse_categorical_crossentropy", "accuracy"));
    CHECK(nnl_load_weights_npz(back, npz_file));
    printf("   npz round trip:         test accuracy %.4f\n", test_accuracy(back, x_test, y_test));
    same(acc, test_accuracy(back, x_test, y_test));
    printf("files: %s %s %s %s\n", model_file, json_file, weights_file, npz_file);
    nnl_model_free(back);

    free(json);
    nnl_model_free(m);
    nnl_array_free(x_train), nnl_array_free(y_train);
    nnl_array_free(x_test), nnl_array_free(y_test);
    return 0;
}
