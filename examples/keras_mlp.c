/* keras_mlp.c - seed workload K-MLP (Keras tutorial for astronomers): the
   tutorial's first network, on MNIST or Fashion-MNIST.

   Images L2-normalised along axis 1 as tf.keras.utils.normalize(x, axis=1)
   does (not divided by 255); Flatten(28x28) - Dense(128, relu) -
   Dense(10, softmax), 101,770 params; Adam lr 1e-3, sparse categorical
   cross-entropy, batch 120, 30 epochs, validation_split 0.1, shuffle.
   Reported: train accuracy ~1.0, validation ~2 % lower, validation loss rising
   after a few epochs (overfitting). Ends with the test confusion matrix, and
   writes the curves and the matrix as pictures (keras_mlp_history.svg,
   keras_mlp_confusion.svg) into --out DIR, by default the program's folder
   (build/).

   usage: keras_mlp [mnist or fashion-mnist path] [--epochs N] [--batch N] [--threads N]
                    [--seed N] [--out DIR]
   e.g.   keras_mlp /usr/share/datasets/fashion-mnist */
#include "common.h"

int main(int argc, char **argv) {
    static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                  "Coat", "Sandal", "Shirt", "Sneaker",
                                                  "Bag", "Ankle boot"};
    ex_args a = ex_parse_args(argc, argv, (ex_spec){30, 120, "mnist or fashion-mnist path",
                                                    "the pictures"});
    const char *path = ex_find_data(a.data, 0);
    int fashion = strstr(path, "fashion") || strstr(path, "Fashion");
    nnl_array *x_train, *y_train, *x_test, *y_test;
    CHECK(nnl_load_mnist(path, &x_train, &y_train, &x_test, &y_test));

    /* (N,28,28): each image column (axis 1) divided by its L2 norm */
    CHECK(nnl_normalize((float *)nnl_array_data(x_train), 3, nnl_array_shape(x_train), 1));
    CHECK(nnl_normalize((float *)nnl_array_data(x_test), 3, nnl_array_shape(x_test), 1));

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Flatten(input_shape=(28, 28))"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dense(10, activation='softmax')"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.001)", "sparse_categorical_crossentropy",
                      "accuracy"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.validation_split = 0.1;
    o.shuffle = 1;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, (const float *)nnl_array_data(x_train), 3, nnl_array_shape(x_train),
                  nnl_array_data(y_train), NNL_INT64, 1, nnl_array_shape(y_train), &o));
    t = ex_seconds() - t;
    ex_print_history(m);
    ex_print_test(m, x_test, nnl_array_data(y_test), NNL_INT64, 1, nnl_array_shape(y_test),
                  a.batch);
    ex_print_speed(t, (int64_t)(nnl_array_dim(x_train, 0) * (1 - 0.1)) * nnl_history_epochs(m));

    /* confusion matrix on the test set: rows true class, columns predicted */
    int64_t n_test = nnl_array_dim(x_test, 0), cm[100];
    int32_t *pred = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_test);
    if (!pred) return 1;
    CHECK(nnl_predict_classes(m, (const float *)nnl_array_data(x_test), 3,
                              nnl_array_shape(x_test), a.batch, pred, n_test));
    CHECK(nnl_confusion_matrix(nnl_array_data(y_test), NNL_INT64, pred, n_test, 10, cm));
    CHECK(nnl_print_confusion_matrix(NULL, cm, 10, fashion ? fashion_names : NULL, 0));

    /* the tutorial's pictures: accuracy and loss curves, the confusion matrix */
    char hist[4096], conf[4096];
    CHECK(nnl_plot_history(m, ex_out_path(&a, "keras_mlp_history.svg", hist, sizeof hist)));
    CHECK(nnl_plot_confusion_matrix(ex_out_path(&a, "keras_mlp_confusion.svg", conf, sizeof conf), cm,
                                    10, fashion ? fashion_names : NULL, 0, NULL));
    printf("pictures: %s, %s\n", hist, conf);

    free(pred);
    nnl_model_free(m);
    nnl_array_free(x_train), nnl_array_free(y_train);
    nnl_array_free(x_test), nnl_array_free(y_test);
    return 0;
}
