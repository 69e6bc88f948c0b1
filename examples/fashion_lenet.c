/* fashion_lenet.c - seed workload T-LENET (thesis "Horizontal scaling of deep
   learning frameworks", 2018): LeNet on Fashion-MNIST, the thesis' CPU
   benchmark model.

   Input (28, 28, 1) pixels scaled to [0, 1]; Conv2D(20, 5x5, valid, tanh) -
   MaxPooling2D(2) - Conv2D(50, 5x5, valid, tanh) - MaxPooling2D(2) - Flatten
   (800) - Dense(500, tanh) - Dense(10) and softmax cross-entropy on the
   logits, 431,080 params; plain SGD lr 0.025, batch 512 (the thesis also ran
   256, 128 and 5), 8 epochs. Prints throughput as the thesis defines it:
   batches/s = samples * epochs * workers / (batch_size * duration).

   usage: fashion_lenet [fashion-mnist path] [--epochs N] [--batch N] [--threads N] */
#include "common.h"

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){8, 512, "fashion-mnist path", NULL});
    const char *path = ex_find_data(a.data, 1);
    nnl_array *x_train, *y_train, *x_test, *y_test;
    CHECK(nnl_load_mnist(path, &x_train, &y_train, &x_test, &y_test));

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
    CHECK(nnl_add(m, "Conv2D(20, 5, activation='tanh', input_shape=(28, 28, 1))"));
    CHECK(nnl_add(m, "MaxPooling2D(2)"));
    CHECK(nnl_add(m, "Conv2D(50, 5, activation='tanh')"));
    CHECK(nnl_add(m, "MaxPooling2D(2)"));
    CHECK(nnl_add(m, "Flatten()"));
    CHECK(nnl_add(m, "Dense(500, activation='tanh')"));
    CHECK(nnl_add(m, "Dense(10)"));
    CHECK(nnl_compile(m, "SGD(learning_rate=0.025)",
                      "sparse_categorical_crossentropy(from_logits=True)", "accuracy"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, (const float *)nnl_array_data(x_train), 4, s_train, nnl_array_data(y_train),
                  NNL_INT64, 1, nnl_array_shape(y_train), &o));
    t = ex_seconds() - t;
    ex_print_test(m, x_test, nnl_array_data(y_test), NNL_INT64, 1, nnl_array_shape(y_test), a.batch);
    ex_print_speed(t, n_train * nnl_history_epochs(m));
    printf("throughput: %.2f batches/s (thesis definition, 1 worker, batch %d)\n",
           (double)n_train * nnl_history_epochs(m) / ((double)a.batch * t), a.batch);

    nnl_model_free(m);
    nnl_array_free(x_train), nnl_array_free(y_train);
    nnl_array_free(x_test), nnl_array_free(y_test);
    return 0;
}
