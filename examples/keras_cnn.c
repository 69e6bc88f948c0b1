/* keras_cnn.c - seed workload K-CNN (Keras tutorial for astronomers, the
   mnist_cnn example): a small convolutional network on MNIST.

   Input (28, 28, 1) pixels scaled to [0, 1]; Conv2D(32, 3x3, relu) -
   Conv2D(64, 3x3, relu) - MaxPooling2D(2) - Dropout(0.25) - Flatten -
   Dense(128, relu) - Dropout(0.5) - Dense(10, softmax), 1,199,882 params;
   Adadelta lr 0.1, sparse categorical cross-entropy, batch 120, 10 epochs,
   validation_split 0.1. Reported: no overfitting, validation tracks training
   (the tutorial prints no figure; PyTorch with the same model, settings and
   Keras' initialisation is the reference, see bench/).

   usage: keras_cnn [mnist path] [--epochs N] [--batch N] [--threads N] */
#include "common.h"

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){10, 120, "mnist path", NULL});
    const char *path = ex_find_data(a.data, 0);
    nnl_array *x_train, *y_train, *x_test, *y_test;
    CHECK(nnl_load_mnist(path, &x_train, &y_train, &x_test, &y_test));

    /* (N, 28, 28) pixels 0..255 -> (N, 28, 28, 1) in [0, 1] */
    int64_t n_train = nnl_array_dim(x_train, 0), n_test = nnl_array_dim(x_test, 0);
    int64_t s_train[4] = {n_train, 28, 28, 1}, s_test[4] = {n_test, 28, 28, 1};
    CHECK(nnl_array_reshape(x_train, 4, s_train));
    CHECK(nnl_array_reshape(x_test, 4, s_test));
    CHECK(nnl_scale((float *)nnl_array_data(x_train), n_train * 784, 1.0f / 255, 0));
    CHECK(nnl_scale((float *)nnl_array_data(x_test), n_test * 784, 1.0f / 255, 0));

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Conv2D(32, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1))"));
    CHECK(nnl_add(m, "Conv2D(64, (3, 3), activation='relu')"));
    CHECK(nnl_add(m, "MaxPooling2D(pool_size=(2, 2))"));
    CHECK(nnl_add(m, "Dropout(0.25)"));
    CHECK(nnl_add(m, "Flatten()"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dropout(0.5)"));
    CHECK(nnl_add(m, "Dense(10, activation='softmax')"));
    CHECK(nnl_compile(m, "Adadelta(learning_rate=0.1)", "sparse_categorical_crossentropy", "accuracy"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.validation_split = 0.1;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, (const float *)nnl_array_data(x_train), 4, s_train, nnl_array_data(y_train),
                  NNL_INT64, 1, nnl_array_shape(y_train), &o));
    t = ex_seconds() - t;
    ex_print_history(m);
    ex_print_test(m, x_test, nnl_array_data(y_test), NNL_INT64, 1, nnl_array_shape(y_test), a.batch);
    ex_print_speed(t, (int64_t)(n_train * (1 - 0.1)) * nnl_history_epochs(m));

    nnl_model_free(m);
    nnl_array_free(x_train), nnl_array_free(y_train);
    nnl_array_free(x_test), nnl_array_free(y_test);
    return 0;
}
