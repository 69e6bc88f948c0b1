/* spectra_cnn.c - seed workload K-SPEC (Keras tutorial for astronomers): a
   1-D convolutional classifier of SDSS spectra into AGN, galaxy, QSO, star.

   Reads data.npy (N, 3522) and labels.npy (N,) from the folder given, as the
   tutorial wrote them; shuffles (data, labels, index) jointly, splits 9:1
   into train and test, L2-normalises each spectrum (Keras normalize, axis 1),
   then trains Conv1D(64, 80, strides 10, relu) - MaxPooling1D(3) -
   Dropout(0.35) - Conv1D(128, 40, strides 10, relu) - MaxPooling1D(3) -
   Dropout(0.35) - Flatten - Dense(128, relu) - Dropout(0.35) -
   Dense(4, softmax), 366,404 params; Adam, sparse categorical cross-entropy,
   batch 200, 75 epochs, validation_split 0.1. Reported: about 80 % accuracy.

   Without a folder it GENERATES a synthetic set of the same shape (4000 x
   3522, four classes: sloped continua, class-typical emission and absorption
   lines with random redshifts, noise) and says so: its accuracy says nothing
   about real spectra.

   usage: spectra_cnn [folder with data.npy, labels.npy] [--epochs N] [--batch N] [--threads N] */
#include "common.h" /* first: it selects POSIX */

#include <math.h>

#define NPIX 3522
static const char *const class_names[4] = {"AGN", "galaxy", "QSO", "star"};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, uniform in [0, 1) */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void) { /* Box-Muller */
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* One synthetic spectrum of class c into s[NPIX]. */
static void synth(int c, float *s) {
    /* line centres (pixels at zero redshift), signs (+ emission, - absorption), widths */
    static const double pos[4][5] = {{600, 1100, 1900, 2500, 3000}, {900, 1400, 2000, 2600, 3100},
                                     {500, 1000, 1700, 2300, 2900}, {700, 1250, 1800, 2450, 3200}};
    static const double sign[4][5] = {{1, 1, 1, -1, 1}, {-1, 1, -1, 1, -1}, {1, 1, 1, 1, 1}, {-1, -1, -1, -1, -1}};
    static const double width[4] = {6, 3, 18, 4}, strength[4] = {0.8, 0.5, 1.2, 0.6};
    static const double slope[4] = {-0.8, 0.9, -1.2, 0.2};
    double z = c == 3 ? 0 : 120 * urand(), level = 0.5 + urand(), tilt = slope[c] + 0.5 * nrand();
    int i, l;
    for (i = 0; i < NPIX; i++) {
        double t = (double)i / NPIX - 0.5, v = level * exp(tilt * t);
        if (c == 1 && i > 1500 + z) v *= 1.3; /* a break, galaxy-like */
        for (l = 0; l < 5; l++) {
            double d = (i - pos[c][l] - z) / width[c];
            v += sign[c][l] * strength[c] * level * (0.6 + 0.4 * (l % 2)) * exp(-0.5 * d * d);
        }
        s[i] = (float)(v + 0.25 * level * nrand());
    }
}

int main(int argc, char **argv) {
    ex_args a = ex_parse_args(argc, argv, (ex_spec){75, 200, "folder with data.npy, labels.npy",
                                                    NULL});
    nnl_array *data = NULL, *labels = NULL;
    int64_t n, i;
    if (a.data) {
        char p[4096];
        snprintf(p, sizeof p, "%s/data.npy", a.data);
        CHECK(nnl_load_npy(p, NNL_FLOAT32, &data));
        snprintf(p, sizeof p, "%s/labels.npy", a.data);
        CHECK(nnl_load_npy(p, NNL_INT64, &labels));
        if (nnl_array_rank(data) != 2 || nnl_array_dim(data, 1) != NPIX ||
            nnl_array_dim(labels, 0) != nnl_array_dim(data, 0)) {
            fprintf(stderr, "expected data.npy (N, %d) and labels.npy (N,)\n", NPIX);
            return 1;
        }
        n = nnl_array_dim(data, 0);
        printf("data: %s (%lld spectra)\n", a.data, (long long)n);
    } else {
        int64_t ds[2] = {4000, NPIX}, ls[1] = {4000};
        n = 4000;
        CHECK(nnl_array_create(NNL_FLOAT32, 2, ds, &data));
        CHECK(nnl_array_create(NNL_INT64, 1, ls, &labels));
        for (i = 0; i < n; i++) {
            ((int64_t *)nnl_array_data(labels))[i] = i % 4;
            synth((int)(i % 4), (float *)nnl_array_data(data) + i * NPIX);
        }
        printf("data: SYNTHETIC spectra (4000 x %d, 4 classes) generated here, not SDSS;\n"
               "      pass the folder holding the tutorial's data.npy and labels.npy for real ones\n", NPIX);
    }

    /* joint shuffle of (data, labels, index): labels and index as one int64 row */
    int64_t *li = (int64_t *)malloc(sizeof(int64_t) * 2 * (size_t)n);
    if (!li) return 1;
    for (i = 0; i < n; i++) li[2 * i] = ((int64_t *)nnl_array_data(labels))[i], li[2 * i + 1] = i;
    CHECK(nnl_shuffle((float *)nnl_array_data(data), NPIX, li, NNL_INT64, 2, n, 42));
    int64_t *y = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    if (!y) return 1;
    for (i = 0; i < n; i++) y[i] = li[2 * i];

    /* Keras normalize along axis 1 (each spectrum to unit L2 norm), 9:1 split */
    int64_t shape2[2] = {n, NPIX};
    CHECK(nnl_normalize((float *)nnl_array_data(data), 2, shape2, 1));
    int64_t n_train = n * 9 / 10, n_test = n - n_train;
    const float *x_train = (const float *)nnl_array_data(data), *x_test = x_train + n_train * NPIX;
    int64_t s_train[3] = {n_train, NPIX, 1}, s_test[3] = {n_test, NPIX, 1}, y_train[1] = {n_train},
            y_test[1] = {n_test};

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    CHECK(nnl_add(m, "Conv1D(64, 80, strides=10, activation='relu', input_shape=(3522, 1))"));
    CHECK(nnl_add(m, "MaxPooling1D(3)"));
    CHECK(nnl_add(m, "Dropout(0.35)"));
    CHECK(nnl_add(m, "Conv1D(128, 40, strides=10, activation='relu')"));
    CHECK(nnl_add(m, "MaxPooling1D(3)"));
    CHECK(nnl_add(m, "Dropout(0.35)"));
    CHECK(nnl_add(m, "Flatten()"));
    CHECK(nnl_add(m, "Dense(128, activation='relu')"));
    CHECK(nnl_add(m, "Dropout(0.35)"));
    CHECK(nnl_add(m, "Dense(4, activation='softmax')"));
    CHECK(nnl_compile(m, "Adam()", "sparse_categorical_crossentropy", "accuracy"));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));

    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.validation_split = 0.1;
    o.verbose = 1;
    double t = ex_seconds();
    CHECK(nnl_fit(m, x_train, 3, s_train, y, NNL_INT64, 1, y_train, &o));
    t = ex_seconds() - t;
    ex_print_history(m);
    {
        double r[2];
        CHECK(nnl_evaluate(m, x_test, 3, s_test, y + n_train, NNL_INT64, 1, y_test, a.batch, r, 2));
        printf("test loss: %.4f  test accuracy: %.4f%s\n", r[0], r[1], a.data ? "" : "  (synthetic data)");
    }
    ex_print_speed(t, (int64_t)(n_train * (1 - 0.1)) * nnl_history_epochs(m));

    int64_t cm[16];
    int32_t *pred = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_test);
    if (!pred) return 1;
    CHECK(nnl_predict_classes(m, x_test, 3, s_test, a.batch, pred, n_test));
    CHECK(nnl_confusion_matrix(y + n_train, NNL_INT64, pred, n_test, 4, cm));
    CHECK(nnl_print_confusion_matrix(NULL, cm, 4, class_names, 0));

    free(pred), free(y), free(li);
    nnl_model_free(m);
    nnl_array_free(data), nnl_array_free(labels);
    return 0;
}
