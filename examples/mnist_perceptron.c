/* mnist_perceptron.c - seed workload R-PERC (lecture "Parallel & scalable
   machine & deep learning"): a single softmax layer on MNIST.

   Dense(10, softmax), 7,850 params, on 784 pixels scaled to [0, 1]; SGD lr
   0.01, categorical cross-entropy on one-hot labels, batch 128, 20 epochs, no
   validation. Reported (Keras): test accuracy 0.9101, loss 0.3342; 24-26 us
   per sample on the lecture's GPU. (200 epochs, validation_split 0.2: 0.9227.)

   usage: mnist_perceptron [mnist path] [--epochs N] [--batch N] [--threads N] */
#include "common.h"

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){20, 128, "mnist path", NULL});
    const char *path = ex_find_data(a.data, 0);
    nnl_array *x_train, *y_train, *x_test, *y_test;
    CHECK(nnl_load_mnist(path, &x_train, &y_train, &x_test, &y_test));

    /* (N,28,28) pixels 0..255 -> (N,784) in [0,1]; labels -> one-hot (N,10) */
    int64_t n_train = nnl_array_dim(x_train, 0), n_test = nnl_array_dim(x_test, 0);
    int64_t flat_train[2] = {n_train, 784}, flat_test[2] = {n_test, 784};
    CHECK(nnl_array_reshape(x_train, 2, flat_train));
    CHECK(nnl_array_reshape(x_test, 2, flat_test));
    CHECK(nnl_scale((float *)nnl_array_data(x_train), n_train * 784, 1.0f / 255, 0));
    CHECK(nnl_scale((float *)nnl_array_data(x_test), n_test * 784, 1.0f / 255, 0));
    nnl_array *oh_train = ex_one_hot(y_train, 10), *oh_test = ex_one_hot(y_test, 10);

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Dense(10, activation='softmax', input_shape=(784,))"));
    CHECK(nnl_compile(m, "SGD(learning_rate=0.01)", "categorical_crossentropy", "accuracy"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, (const float *)nnl_array_data(x_train), 2, flat_train,
                  nnl_array_data(oh_train), NNL_FLOAT32, 2, nnl_array_shape(oh_train), &o));
    t = ex_seconds() - t;

    ex_print_test(m, x_test, nnl_array_data(oh_test), NNL_FLOAT32, 2, nnl_array_shape(oh_test),
                  a.batch);
    ex_print_speed(t, n_train * nnl_history_epochs(m));

    nnl_model_free(m);
    nnl_array_free(x_train), nnl_array_free(y_train), nnl_array_free(oh_train);
    nnl_array_free(x_test), nnl_array_free(y_test), nnl_array_free(oh_test);
    return 0;
}
