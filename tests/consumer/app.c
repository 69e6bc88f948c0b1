/* An out-of-tree program using nnlite (make test's consumers check builds it
   four ways). Learns XOR; exits 0 only when it does. */
#include <stdio.h>

#include "nnlite.h"

#define CHECK(x)                                          \
    if ((x) != NNL_OK) {                                  \
        fprintf(stderr, "consumer: %s\n", nnl_last_error()); \
        return 1;                                         \
    }

int main(void) {
    float x[8] = {0, 0, 0, 1, 1, 0, 1, 1}, y[4] = {0, 1, 1, 0}, p[4];
    int64_t xs[2] = {4, 2}, ys[2] = {4, 1};
    nnl_fit_options o;
    nnl_model *m;
    int i, ok = 1;
    CHECK(NNL_INIT());
    m = nnl_model_create();
    CHECK(nnl_model_set_seed(m, 1));
    CHECK(nnl_add(m, "Dense(8, activation='tanh', input_shape=(2,))"));
    CHECK(nnl_add(m, "Dense(1, activation='sigmoid')"));
    CHECK(nnl_compile(m, "Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy"));
    nnl_fit_options_init(&o);
    o.epochs = 500;
    o.batch_size = 4;
    o.verbose = 0;
    CHECK(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, &o));
    CHECK(nnl_predict(m, x, 2, xs, 0, p, 4));
    for (i = 0; i < 4; i++) ok &= (p[i] > 0.5f) == (y[i] > 0.5f);
    nnl_model_free(m);
    printf("consumer (nnlite %s): XOR %s\n", nnl_version(), ok ? "learned" : "NOT learned");
    return ok ? 0 : 1;
}
