/* conv3d.c - seed workload R-3DCNN (lecture "Parallel & scalable machine &
   deep learning", hyperspectral remote sensing): a 3-D CNN regressing what
   a pixel is made of from the hyperspectral cube around it.

   The lecture gives the model, not the data: three Conv3D layers of 48, 32
   and 32 filters of 3x3x5 (relu) - Flatten - Dense(128, relu) -
   Dense(128, relu) - Dense(out), MSE loss, SGD lr 1 with decay 5e-6, batch
   50, 600 epochs. This example GENERATES a small synthetic task and says
   so: 7x7 pixel patches of a 30-band cube where every pixel mixes three
   material spectra (endmembers) in smoothly varying proportions plus noise;
   the target is the centre pixel's three abundances. A network that learns
   the unmixing reaches a test MSE far below the 0.056 of always predicting
   the mean abundances (8 epochs: about 0.0001).

   Learning rate: the lecture's lr 1 diverges on this data within the first
   batches (nnlite stops with a clear message, weights untouched); 0.1 with
   the lecture's decay trains well, so that is what runs here.

   usage: conv3d [--epochs N (600)] [--batch N (50)] [--threads N] */
#include "common.h" /* first: it selects POSIX */

#include <math.h>

#define P 7   /* patch side */
#define NB 30 /* bands */
#define NM 3  /* materials */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

/* One patch: abundances vary as a smooth field over the patch. */
static void make_sample(const double em[NM][NB], float *x, float *y) {
    double base[NM], grad[NM][2], s;
    int i, j, b, k;
    for (k = 0; k < NM; k++) {
        base[k] = -log(urand() + 1e-9); /* Dirichlet(1,1,1) via exponentials */
        grad[k][0] = 0.15 * (urand() - 0.5), grad[k][1] = 0.15 * (urand() - 0.5);
    }
    for (i = 0; i < P; i++)
        for (j = 0; j < P; j++) {
            double ab[NM];
            s = 0;
            for (k = 0; k < NM; k++) {
                ab[k] = base[k] * exp(grad[k][0] * (i - P / 2) + grad[k][1] * (j - P / 2));
                s += ab[k];
            }
            for (k = 0; k < NM; k++) ab[k] /= s;
            if (i == P / 2 && j == P / 2)
                for (k = 0; k < NM; k++) y[k] = (float)ab[k];
            for (b = 0; b < NB; b++) { /* layout (P, P, NB, 1): channels last */
                double v = 0;
                for (k = 0; k < NM; k++) v += ab[k] * em[k][b];
                x[(i * P + j) * NB + b] = (float)(v + 0.02 * (urand() - 0.5));
            }
        }
}

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){600, 50, NULL, NULL});
    double em[NM][NB];
    int b, k;
    for (k = 0; k < NM; k++) /* smooth, distinct material spectra */
        for (b = 0; b < NB; b++)
            em[k][b] = 0.5 + 0.4 * sin(0.2 * (k + 1) * b + k) * exp(-0.02 * k * b);
    int64_t n_train = 2000, n_test = 500, n = n_train + n_test, i;
    float *x = (float *)malloc(sizeof(float) * (size_t)(n * P * P * NB));
    float *y = (float *)malloc(sizeof(float) * (size_t)(n * NM));
    if (!x || !y) return 1;
    for (i = 0; i < n; i++) make_sample((const double(*)[NB])em, x + i * P * P * NB, y + i * NM);
    printf("data: SYNTHETIC hyperspectral patches (%lld train, %lld test; %dx%d pixels x %d bands), "
           "generated here\n", (long long)n_train, (long long)n_test, P, P, NB);

    /* the baseline: predicting the training mean of the abundances */
    double mean[NM] = {0}, base = 0;
    for (i = 0; i < n_train * NM; i++) mean[i % NM] += y[i] / (double)n_train;
    for (i = n_train * NM; i < n * NM; i++) base += pow(y[i] - mean[i % NM], 2) / (double)(n_test * NM);

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Conv3D(48, (3, 3, 5), activation='relu', input_shape=(7, 7, 30, 1))"));
    CHECK(nnl_add(m, "Conv3D(32, (3, 3, 5), activation='relu')"));
    CHECK(nnl_add(m, "Conv3D(32, (3, 3, 5), activation='relu')"));
    CHECK(nnl_add(m, "Flatten()"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dense(3)"));
    CHECK(nnl_compile(m, "SGD(learning_rate=0.1, decay=5e-6)", "mse", "mae"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    int64_t s_train[5] = {n_train, P, P, NB, 1}, s_test[5] = {n_test, P, P, NB, 1};
    int64_t t_train[2] = {n_train, NM}, t_test[2] = {n_test, NM};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, x, 5, s_train, y, NNL_FLOAT32, 2, t_train, &o));
    t = ex_seconds() - t;
    double r[2];
    CHECK(nnl_evaluate(m, x + n_train * P * P * NB, 5, s_test, y + n_train * NM, NNL_FLOAT32, 2, t_test,
                       a.batch, r, 2));
    printf("test loss (mse): %.5f  test mae: %.4f  (predicting the mean: mse %.5f)\n", r[0], r[1], base);
    ex_print_speed(t, n_train * nnl_history_epochs(m));
    nnl_model_free(m);
    free(x), free(y);
    return 0;
}
