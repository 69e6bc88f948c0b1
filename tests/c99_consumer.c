/* A C99 program that uses nothing but nnlite.h: it must compile with
   -std=c99 -Wall -Wextra -pedantic -Werror and run to "c99 consumer: ok". */
#include "nnlite.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;
#define EXPECT(cond)                                                   \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n",    \
                    __FILE__, __LINE__, #cond, nnl_last_error());      \
            failures++;                                                \
        }                                                              \
    } while (0)

static int epochs_seen = 0;

static int on_event(void *user, nnl_model *m, int event, int epoch, int64_t batch, const double *logs,
                    int n_logs) {
    (void)user; (void)m; (void)epoch; (void)batch; (void)logs; (void)n_logs;
    if (event == NNL_EVENT_EPOCH_END) epochs_seen++;
    return 0;
}

int main(void) {
    /* 64 points on two interleaved rings: class = inner (0) or outer (1) */
    float x[64 * 2], y[64], probs[64];
    int32_t cls[64];
    int64_t xs[2] = {64, 2}, ys[2] = {64, 1};
    int i, correct = 0;
    double r[2];
    char summary[2048];
    nnl_fit_options o;
    nnl_model *m;

    for (i = 0; i < 64; i++) {
        double a = i * 0.7, rad = (i % 2) ? 2.0 : 0.7;
        x[2 * i] = (float)(rad * cos(a));
        x[2 * i + 1] = (float)(rad * sin(a));
        y[i] = (float)(i % 2);
    }
    EXPECT(nnl_version_number() == NNL_VERSION_NUMBER);
    EXPECT(strcmp(nnl_version(), NNL_VERSION_STRING) == 0);
    EXPECT(nnl_has_feature("mpi") == 0 && nnl_has_feature("no such feature") == -1);
    EXPECT(strncmp(nnl_build_info(), "nnlite ", 7) == 0);

    m = nnl_model_create();
    EXPECT(m != NULL);
    EXPECT(nnl_model_set_seed(m, 42) == NNL_OK);
    EXPECT(nnl_add(m, "Dense(16, activation='relu', input_shape=(2,))") == NNL_OK);
    EXPECT(nnl_add_dense(m, 1, "sigmoid") == NNL_OK);
    EXPECT(nnl_compile(m, "Adam(learning_rate=0.02)", "binary_crossentropy", "accuracy") == NNL_OK);
    EXPECT(nnl_summary_string(m, summary, sizeof summary) > 0);
    EXPECT(strstr(summary, "Total params: 65") != NULL);

    nnl_fit_options_init(&o);
    o.epochs = 200;
    o.batch_size = 16;
    o.verbose = 0;
    o.callback = on_event;
    EXPECT(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    EXPECT(epochs_seen == 200);
    EXPECT(nnl_history_epochs(m) == 200);

    EXPECT(nnl_evaluate(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, 0, r, 2) == NNL_OK);
    EXPECT(r[1] >= 0.98);
    EXPECT(nnl_predict(m, x, 2, xs, 0, probs, 64) == NNL_OK);
    EXPECT(nnl_predict_classes(m, x, 2, xs, 0, cls, 64) == NNL_OK);
    for (i = 0; i < 64; i++) correct += cls[i] == (int)y[i] && (probs[i] > 0.5f) == (cls[i] == 1);
    EXPECT(correct >= 63);

    /* errors are status codes with a message, never a crash */
    EXPECT(nnl_add(m, "Dense(2)") == NNL_ERR_STATE);
    EXPECT(strlen(nnl_last_error()) > 0);
    EXPECT(nnl_predict(m, x, 2, xs, 0, probs, 10) == NNL_ERR_SHAPE);
    EXPECT(nnl_fit(NULL, x, 2, xs, y, NNL_FLOAT32, 2, ys, &o) == NNL_ERR_ARGUMENT);
    nnl_model_free(m);

    if (failures) {
        fprintf(stderr, "c99 consumer: %d failures\n", failures);
        return 1;
    }
    printf("c99 consumer: ok (accuracy %.4f)\n", r[1]);
    return 0;
}
