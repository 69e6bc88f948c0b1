/* autoencoder.c - R-AE: the two autoencoders of the Keras blog post
   "Building Autoencoders in Keras" (F. Chollet, 2016), on Fashion-MNIST (or
   MNIST given its path).

     dense: Dense(128, relu) - Dense(32, relu) - Dense(128, relu) -
            Dense(784, sigmoid) on the flat 784 pixels (the code: 32 values)
     conv:  Conv2D(16, 3, same, relu) - MaxPooling2D(2) - Conv2D(8, 3, same,
            relu) - MaxPooling2D(2) - Conv2D(8, 3, same, relu) [the code:
            7 x 7 x 8] - UpSampling2D(2) - Conv2D(16, 3, same, relu) -
            UpSampling2D(2) - Conv2D(1, 3, same, sigmoid)

   Pixels scaled to [0, 1]; Adam (learning rate 0.001, Keras' defaults),
   binary cross-entropy, as in the blog post: the pixel values are targets in
   [0, 1] and the sigmoid output with cross-entropy gives gradients that do
   not vanish where the sigmoid saturates (mean squared error through a
   sigmoid does), so training starts faster; nnlite fuses the two into one
   stable step. Keras' initialisation (glorot_uniform kernels, zero biases),
   shuffled batches, the test set as validation data (as the blog does).

   Prints, per model, the test reconstruction error as the mean over all test
   pixels of the squared error (MSE) and of the binary cross-entropy (BCE,
   predictions clipped to [1e-7, 1 - 1e-7] as Keras does), and writes
   autoencoder_reconstructions.svg: the first test image of each class, and
   below it the dense and the convolutional reconstructions, into --out DIR
   (default: the program's folder). bench/torch_autoencoder.py trains the
   same models with the same settings in PyTorch and prints the same errors.

   Defaults: 5 epochs, batch 128 (the blog: 50 epochs, batch 256 for the
   dense model and 128 for the convolutional one); --epochs and --batch apply
   to both models. On 2 cores the convolutional model takes most of the time.

   usage: autoencoder [fashion-mnist or mnist path] [--epochs N] [--batch N] [--threads N]
                      [--seed N] [--out DIR]
   e.g.   autoencoder /usr/share/datasets/fashion-mnist --epochs 5 */
#include "common.h"

#include <math.h>

/* Mean squared error and binary cross-entropy of predictions p against
   targets t over n values, in double. */
static void recon_errors(const float *p, const float *t, int64_t n, double *mse, double *bce) {
    const double eps = 1e-7;
    double se = 0, ce = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double q = p[i], y = t[i], d = q - y;
        se += d * d;
        q = q < eps ? eps : q > 1 - eps ? 1 - eps : q;
        ce -= y * log(q) + (1 - y) * log(1 - q);
    }
    *mse = se / (double)n;
    *bce = ce / (double)n;
}

/* Trains model m (compiled) to reproduce x (n samples of shape xs), then
   predicts the test set into pred and prints the errors. */
static void train_and_test(nnl_model *m, const char *name, const ex_args *a, const float *x, int rank,
                           const int64_t *xs, const float *xt, const int64_t *xts, float *pred) {
    nnl_fit_options o;
    double t, mse, bce;
    int64_t n = xs[0] * 784, nt = xts[0] * 784;
    nnl_fit_options_init(&o);
    o.epochs = a->epochs;
    o.batch_size = a->batch;
    o.shuffle = 1;
    o.verbose = 2;
    o.x_val = xt;
    o.x_val_rank = rank;
    o.x_val_shape = xts;
    o.y_val = xt;
    o.y_val_dtype = NNL_FLOAT32;
    o.y_val_rank = rank;
    o.y_val_shape = xts;
    CHECK(nnl_summary(m, NULL));
    t = ex_seconds();
    CHECK(nnl_fit(m, x, rank, xs, x, NNL_FLOAT32, rank, xs, &o));
    t = ex_seconds() - t;
    ex_print_speed(t, xs[0] * nnl_history_epochs(m));
    CHECK(nnl_predict(m, xt, rank, xts, 256, pred, nt));
    recon_errors(pred, xt, nt, &mse, &bce);
    printf("%s autoencoder: test reconstruction MSE %.5f  BCE %.5f  (%d epochs, batch %d, %lld training images)\n",
           name, mse, bce, nnl_history_epochs(m), a->batch, (long long)(n / 784));
}

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){5, 128, "fashion-mnist or mnist path", "the pictures"});
    const char *path = ex_find_data(a.data, 1);
    nnl_array *x_train, *x_test, *y_test;
    int64_t flat[2], img[4], flat_t[2], img_t[4], ntest, i;
    int k, c;
    float *pred_dense, *pred_conv, *grid;
    nnl_model *m;
    char pic[4096];
    const char *rows[3] = {"original", "dense", "convolutional"};
    int pick[10];

    CHECK(nnl_load_mnist(path, &x_train, NULL, &x_test, &y_test));
    CHECK(nnl_scale((float *)nnl_array_data(x_train), nnl_array_size(x_train), 1.f / 255.f, 0.f));
    CHECK(nnl_scale((float *)nnl_array_data(x_test), nnl_array_size(x_test), 1.f / 255.f, 0.f));
    /* the same memory seen flat (n, 784) and as images (n, 28, 28, 1) */
    flat[0] = img[0] = nnl_array_dim(x_train, 0);
    flat_t[0] = img_t[0] = ntest = nnl_array_dim(x_test, 0);
    flat[1] = flat_t[1] = 784;
    img[1] = img[2] = img_t[1] = img_t[2] = 28;
    img[3] = img_t[3] = 1;
    pred_dense = (float *)malloc(sizeof(float) * (size_t)(ntest * 784));
    pred_conv = (float *)malloc(sizeof(float) * (size_t)(ntest * 784));
    grid = (float *)malloc(sizeof(float) * 30 * 784);
    if (!pred_dense || !pred_conv || !grid) return 1;

    m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Dense(128, activation='relu', input_shape=(784,))"));
    CHECK(nnl_add(m, "Dense(32, activation='relu')"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dense(784, activation='sigmoid')"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.001)", "binary_crossentropy", ""));
    CHECK(ex_device(&a, m));
    train_and_test(m, "dense", &a, (const float *)nnl_array_data(x_train), 2, flat,
                   (const float *)nnl_array_data(x_test), flat_t, pred_dense);
    nnl_model_free(m);

    m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Conv2D(16, 3, padding='same', activation='relu', input_shape=(28, 28, 1))"));
    CHECK(nnl_add(m, "MaxPooling2D(2)"));
    CHECK(nnl_add(m, "Conv2D(8, 3, padding='same', activation='relu')"));
    CHECK(nnl_add(m, "MaxPooling2D(2)"));
    CHECK(nnl_add(m, "Conv2D(8, 3, padding='same', activation='relu')"));
    CHECK(nnl_add(m, "UpSampling2D(2)"));
    CHECK(nnl_add(m, "Conv2D(16, 3, padding='same', activation='relu')"));
    CHECK(nnl_add(m, "UpSampling2D(2)"));
    CHECK(nnl_add(m, "Conv2D(1, 3, padding='same', activation='sigmoid')"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.001)", "binary_crossentropy", ""));
    CHECK(ex_device(&a, m));
    train_and_test(m, "convolutional", &a, (const float *)nnl_array_data(x_train), 4, img,
                   (const float *)nnl_array_data(x_test), img_t, pred_conv);
    nnl_model_free(m);

    /* the first test image of each class (in test order when labels repeat less than 10 classes) */
    for (c = 0; c < 10; c++) pick[c] = -1;
    for (i = 0; i < ntest; i++) {
        int64_t y = ((const int64_t *)nnl_array_data(y_test))[i];
        if (y >= 0 && y < 10 && pick[y] < 0) pick[y] = (int)i;
    }
    for (c = 0, k = 0; c < 10; c++)
        if (pick[c] < 0) pick[c] = k++; /* a class missing from the test set: the first images instead */
    for (c = 0; c < 10; c++) {
        memcpy(grid + (0 * 10 + c) * 784, (const float *)nnl_array_data(x_test) + (int64_t)pick[c] * 784,
               784 * sizeof(float));
        memcpy(grid + (1 * 10 + c) * 784, pred_dense + (int64_t)pick[c] * 784, 784 * sizeof(float));
        memcpy(grid + (2 * 10 + c) * 784, pred_conv + (int64_t)pick[c] * 784, 784 * sizeof(float));
    }
    CHECK(nnl_plot_images(ex_out_path(&a, "autoencoder_reconstructions.svg", pic, sizeof pic), grid, 3, 10, 28, 28,
                          rows, strstr(path, "ashion") ? "Fashion-MNIST test images and their reconstructions"
                                                       : "MNIST test images and their reconstructions"));
    printf("picture: %s\n", pic);

    free(pred_dense), free(pred_conv), free(grid);
    nnl_array_free(x_train), nnl_array_free(x_test), nnl_array_free(y_test);
    return 0;
}
