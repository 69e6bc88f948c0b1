/* lstm_forecast.c - R-LSTM: an LSTM that forecasts a chaotic system, the
   Lorenz-63 equations (sigma 10, rho 28, beta 8/3), which the program
   integrates itself (classical Runge-Kutta, dt 0.01, from (1, 1, 1), the
   first 10 time units dropped as transient).

   Data: 12,000 steps (120 time units); the first 80 % train, the rest test.
   Each coordinate is normalised by the training part's mean and standard
   deviation. Samples are sliding windows: inputs x[t : t+T] (T = 20 steps,
   shape (20, 3)), target x[t+T] (the next state).
   Model: LSTM(32) - Dense(3) (spec strings), mean squared error, Adam
   (learning rate 0.001), batch 64, 10 epochs, shuffled.

   Prints the one-step test RMSE, then the RMSE of forecasts over a horizon
   of 100 steps (1 time unit, about one Lyapunov time: errors grow about e
   times per 1.1 time units), made by feeding each forecast back as input,
   from 40 starts spread over the test part, at h = 1, 5, 10, 25, 50, 100
   steps, in the system's own units, against the persistence baseline (the
   last known state held). Writes lstm_forecast.svg: truth, forecast and
   persistence over the horizon from the first start, one panel per
   coordinate, into --out DIR (default: the program's folder).

   --model dense: Flatten - Dense(64, tanh) - Dense(3) instead of the LSTM,
   for a build whose nnlite has no LSTM layer yet (nnl_add refuses the LSTM
   spec there, and the program says so); every figure printed says which
   model made it.

   usage: lstm_forecast [--model lstm|dense] [--epochs N] [--batch N] [--threads N] [--seed N]
                        [--out DIR]
   e.g.   lstm_forecast --epochs 10 */
#include "common.h"

#include <math.h>

enum { T = 20, STEPS = 12000, WARM = 1000, H = 100, STARTS = 40 };

/* d/dt of the Lorenz-63 state s into d */
static void lorenz(const double *s, double *d) {
    d[0] = 10.0 * (s[1] - s[0]);
    d[1] = s[0] * (28.0 - s[2]) - s[1];
    d[2] = s[0] * s[1] - (8.0 / 3.0) * s[2];
}

/* one classical Runge-Kutta step of size h */
static void rk4(double *s, double h) {
    double k1[3], k2[3], k3[3], k4[3], t[3];
    int i;
    lorenz(s, k1);
    for (i = 0; i < 3; i++) t[i] = s[i] + 0.5 * h * k1[i];
    lorenz(t, k2);
    for (i = 0; i < 3; i++) t[i] = s[i] + 0.5 * h * k2[i];
    lorenz(t, k3);
    for (i = 0; i < 3; i++) t[i] = s[i] + h * k3[i];
    lorenz(t, k4);
    for (i = 0; i < 3; i++) s[i] += h / 6.0 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
}

int main(int argc, char **argv) {
    /* --model is this example's own option: taken out before the common parser sees the rest */
    const char *model = "lstm";
    char **rest = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0, i, j, k, c;
    if (!rest) return 1;
    for (i = 0; i < argc; i++) {
        if (i > 0 && !strcmp(argv[i], "--model")) {
            if (i + 1 >= argc || (strcmp(argv[i + 1], "lstm") && strcmp(argv[i + 1], "dense"))) {
                fprintf(stderr, "%s: option '--model' needs 'lstm' or 'dense'\n", ex_prog(argv[0]));
                return 2;
            }
            model = argv[++i];
            continue;
        }
        rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    const ex_spec spec = {10, 64, NULL, "the pictures"};
    for (i = 1; i < nrest; i++)
        if (!strcmp(rest[i], "-h") || !strcmp(rest[i], "--help")) {
            ex_usage(stdout, argv[0], &spec);
            printf("  --model M  lstm (default): LSTM(32) - Dense(3); dense: Flatten - Dense(64, tanh) - Dense(3)\n");
            return 0;
        }
    ex_args a = ex_parse_args(nrest, rest, spec);
    const int dense = !strcmp(model, "dense");

    /* the series, normalised by the training part's statistics */
    float *series = (float *)malloc(sizeof(float) * STEPS * 3);
    double s[3] = {1, 1, 1}, mean[3] = {0, 0, 0}, sd[3] = {0, 0, 0};
    const int ntrain_steps = STEPS * 8 / 10;
    if (!series) return 1;
    for (i = 0; i < WARM; i++) rk4(s, 0.01);
    for (i = 0; i < STEPS; i++) {
        for (c = 0; c < 3; c++) series[i * 3 + c] = (float)s[c];
        rk4(s, 0.01);
    }
    for (i = 0; i < ntrain_steps; i++)
        for (c = 0; c < 3; c++) mean[c] += series[i * 3 + c] / (double)ntrain_steps;
    for (i = 0; i < ntrain_steps; i++)
        for (c = 0; c < 3; c++) sd[c] += pow(series[i * 3 + c] - mean[c], 2) / (double)ntrain_steps;
    for (c = 0; c < 3; c++) sd[c] = sqrt(sd[c]);
    for (i = 0; i < STEPS; i++)
        for (c = 0; c < 3; c++) series[i * 3 + c] = (float)((series[i * 3 + c] - mean[c]) / sd[c]);

    /* sliding windows: train inside the first 80 %, test inside the rest */
    const int64_t ntr = ntrain_steps - T, nte = STEPS - ntrain_steps - T;
    float *xtr = (float *)malloc(sizeof(float) * (size_t)(ntr * T * 3)), *ytr = (float *)malloc(sizeof(float) * (size_t)(ntr * 3));
    float *xte = (float *)malloc(sizeof(float) * (size_t)(nte * T * 3)), *yte = (float *)malloc(sizeof(float) * (size_t)(nte * 3));
    float *pte = (float *)malloc(sizeof(float) * (size_t)(nte * 3));
    if (!xtr || !ytr || !xte || !yte || !pte) return 1;
    for (i = 0; i < ntr; i++) {
        memcpy(xtr + (int64_t)i * T * 3, series + (int64_t)i * 3, sizeof(float) * T * 3);
        memcpy(ytr + (int64_t)i * 3, series + (int64_t)(i + T) * 3, sizeof(float) * 3);
    }
    for (i = 0; i < nte; i++) {
        memcpy(xte + (int64_t)i * T * 3, series + (int64_t)(ntrain_steps + i) * 3, sizeof(float) * T * 3);
        memcpy(yte + (int64_t)i * 3, series + (int64_t)(ntrain_steps + i + T) * 3, sizeof(float) * 3);
    }
    int64_t xs[3] = {ntr, T, 3}, ys[2] = {ntr, 3}, xts[3] = {nte, T, 3}, yts[2] = {nte, 3};

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    if (dense) {
        CHECK(nnl_add(m, "Flatten(input_shape=(20, 3))"));
        CHECK(nnl_add(m, "Dense(64, activation='tanh')"));
    } else if (nnl_add(m, "LSTM(32, input_shape=(20, 3))") != NNL_OK) {
        fprintf(stderr, "%s\nthis nnlite has no LSTM layer; '--model dense' runs the example with a dense model\n",
                nnl_last_error());
        return 1;
    }
    CHECK(nnl_add(m, "Dense(3)"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.001)", "mse", ""));
    CHECK(ex_device(&a, m));
    CHECK(nnl_summary(m, NULL));
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = a.batch;
    o.shuffle = 1;
    o.verbose = 2;
    o.x_val = xte, o.x_val_rank = 3, o.x_val_shape = xts;
    o.y_val = yte, o.y_val_dtype = NNL_FLOAT32, o.y_val_rank = 2, o.y_val_shape = yts;
    double t0 = ex_seconds();
    CHECK(nnl_fit(m, xtr, 3, xs, ytr, NNL_FLOAT32, 2, ys, &o));
    ex_print_speed(ex_seconds() - t0, ntr * nnl_history_epochs(m));

    /* one step ahead, over every test window, in the system's units */
    double se = 0;
    CHECK(nnl_predict(m, xte, 3, xts, 256, pte, nte * 3));
    for (i = 0; i < nte; i++)
        for (c = 0; c < 3; c++) se += pow((pte[i * 3 + c] - yte[i * 3 + c]) * sd[c], 2);
    printf("%s model: one-step test RMSE %.4f (per coordinate, Lorenz units)\n", model, sqrt(se / (double)(nte * 3)));

    /* iterated forecasts over the horizon from STARTS starts in the test part */
    static float win[STARTS][T * 3], fc[STARTS][H][3];
    static double se_m[H], se_p[H];
    float out[STARTS * 3];
    const int stride = (int)((nte - H) / STARTS);
    int64_t ws[3] = {STARTS, T, 3};
    for (j = 0; j < STARTS; j++) memcpy(win[j], xte + (int64_t)j * stride * T * 3, sizeof(float) * T * 3);
    for (k = 0; k < H; k++) {
        CHECK(nnl_predict(m, &win[0][0], 3, ws, STARTS, out, STARTS * 3));
        for (j = 0; j < STARTS; j++) {
            const float *truth = series + (int64_t)(ntrain_steps + j * stride + T + k) * 3;
            const float *last = series + (int64_t)(ntrain_steps + j * stride + T - 1) * 3;
            for (c = 0; c < 3; c++) {
                fc[j][k][c] = out[j * 3 + c];
                se_m[k] += pow((out[j * 3 + c] - truth[c]) * sd[c], 2) / (STARTS * 3);
                se_p[k] += pow((last[c] - truth[c]) * sd[c], 2) / (STARTS * 3);
            }
            memmove(win[j], win[j] + 3, sizeof(float) * (T - 1) * 3); /* the forecast becomes the newest input */
            memcpy(win[j] + (T - 1) * 3, out + j * 3, sizeof(float) * 3);
        }
    }
    printf("forecast RMSE over %d starts (Lorenz units; dt 0.01):\n  %8s %12s %12s\n", STARTS, "steps", model,
           "persistence");
    {
        const int hs[6] = {1, 5, 10, 25, 50, 100};
        for (i = 0; i < 6; i++) printf("  %8d %12.4f %12.4f\n", hs[i], sqrt(se_m[hs[i] - 1]), sqrt(se_p[hs[i] - 1]));
    }

    /* the picture: the first start's horizon, truth / forecast / persistence per coordinate */
    {
        static float tx[H], py[3 * 3 * H];
        char pic[4096], title[128];
        const char *names[3] = {"truth", "forecast", "persistence"}, *labels[3] = {"x", "y", "z"};
        const float *last = series + (int64_t)(ntrain_steps + T - 1) * 3;
        for (k = 0; k < H; k++) {
            const float *truth = series + (int64_t)(ntrain_steps + T + k) * 3;
            tx[k] = 0.01f * (float)(k + 1);
            for (c = 0; c < 3; c++) {
                py[(c * 3 + 0) * H + k] = (float)(truth[c] * sd[c] + mean[c]);
                py[(c * 3 + 1) * H + k] = (float)(fc[0][k][c] * sd[c] + mean[c]);
                py[(c * 3 + 2) * H + k] = (float)(last[c] * sd[c] + mean[c]);
            }
        }
        snprintf(title, sizeof title, "Lorenz-63: %s forecast from the first test window", dense ? "dense" : "LSTM");
        CHECK(nnl_plot_lines(ex_out_path(&a, "lstm_forecast.svg", pic, sizeof pic), tx, py, 3, 3, H, names, labels,
                             "time ahead (model time units)", title));
        printf("picture: %s\n", pic);
    }
    nnl_model_free(m);
    free(series), free(xtr), free(ytr), free(xte), free(yte), free(pte), free(rest);
    return 0;
}
