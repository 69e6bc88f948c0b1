/* mpi_tests.cpp - nnlite's data-parallel training under mpirun (make check-mpi).

   Run by scripts/check_mpi.sh as `mpirun -np 2` and `-np 4` (oversubscribed).
   Every rank runs every case in the same order (the cases are collective);
   a failed check prints "[rank R] FAIL file:line: what" and the process
   exits 1, so mpirun fails. Rank 0 prints one line per case.
   `mpi_tests leave`: rank 1 stops calling nnlite and rank 0's nnl_fit must
   fail with NNL_ERR_DISTRIBUTED within NNL_MPI_TIMEOUT (set by the script). */
#include "nnlite.h"

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <unistd.h>

static int g_rank = 0, g_size = 1, g_fail = 0;

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) {                                                                                                \
            fprintf(stderr, "[rank %d] FAIL %s:%d: %s (last error: %s)\n", g_rank, __FILE__, __LINE__, #c,        \
                    nnl_last_error());                                                                             \
            g_fail++;                                                                                              \
        }                                                                                                          \
    } while (0)
#define CHECK_OK(call) CHECK((call) == NNL_OK)

/* ---- data every rank makes alike: a deterministic generator ---- */
static uint64_t g_state;
static double uni() {
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_state >> 11) / 9007199254740992.0;
}
/* n samples of f features in three classes (a noisy linear rule) */
static void make_data(int n, int f, uint64_t seed, std::vector<float> &x, std::vector<int32_t> &y) {
    g_state = seed;
    x.resize((size_t)n * f);
    y.resize((size_t)n);
    for (int i = 0; i < n; i++) {
        double s = 0, t = 0;
        for (int j = 0; j < f; j++) {
            x[(size_t)i * f + j] = (float)(uni() * 2 - 1);
            s += x[(size_t)i * f + j] * (j % 2 ? 1 : -1);
            t += x[(size_t)i * f + j] * (j % 3 ? 0.5 : -1);
        }
        y[(size_t)i] = s + 0.2 * (uni() - 0.5) > 0 ? (t > 0 ? 2 : 1) : 0;
    }
}

static nnl_model *mlp(int f, const char *opt, uint64_t seed, const char *extra = nullptr) {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, seed);
    char in[64];
    snprintf(in, sizeof in, "Input(shape=(%d,))", f);
    CHECK_OK(nnl_add(m, in));
    CHECK_OK(nnl_add(m, "Dense(16, activation='tanh')"));
    if (extra) CHECK_OK(nnl_add(m, extra));
    CHECK_OK(nnl_add(m, "Dense(3, activation='softmax')"));
    CHECK_OK(nnl_compile(m, opt, "sparse_categorical_crossentropy", "accuracy"));
    return m;
}

static std::vector<float> weights(const nnl_model *m) {
    std::vector<float> all;
    for (int i = 0; i < nnl_weight_count(m); i++) {
        char name[128];
        int rank = 0;
        int64_t shape[8];
        nnl_weight_info(m, i, name, sizeof name, &rank, shape);
        int64_t n = 1;
        for (int k = 0; k < rank; k++) n *= shape[k];
        std::vector<float> w((size_t)n);
        nnl_get_weight(m, i, w.data(), n);
        all.insert(all.end(), w.begin(), w.end());
    }
    return all;
}

static double max_rel_diff(const std::vector<float> &a, const std::vector<float> &b) {
    if (a.size() != b.size()) return 1e30;
    double d = 0, s = 0;
    for (size_t i = 0; i < a.size(); i++) {
        d = std::fmax(d, std::fabs((double)a[i] - b[i]));
        s = std::fmax(s, std::fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

/* the same on every rank (bit for bit) */
static bool same_everywhere(const std::vector<float> &w) {
    uint64_t h = 1469598103934665603ull;
    for (float v : w) {
        uint32_t u;
        memcpy(&u, &v, 4);
        h = (h ^ u) * 1099511628211ull;
    }
    std::vector<uint64_t> all((size_t)g_size);
    MPI_Allgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
    for (uint64_t v : all)
        if (v != all[0]) return false;
    return true;
}

static nnl_fit_options opts(int epochs, int batch, int verbose = 0) {
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = batch;
    o.verbose = verbose;
    o.seed = 1234;
    return o;
}

static int fit_xy(nnl_model *m, const std::vector<float> &x, const std::vector<int32_t> &y, int f,
                  const nnl_fit_options &o) {
    int64_t xs[2] = {(int64_t)y.size(), f}, ys[1] = {(int64_t)y.size()};
    return nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o);
}

/* ---- the cases ---- */

/* N ranks with batch b each = one process with batch N*b: SGD and Adam,
   shuffled, an uneven last batch (n = 203); and bit-identical run to run. */
static void equivalence() {
    const int f = 6, n = 203, b = 8;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 42, x, y);
    const char *optims[] = {"SGD(learning_rate=0.1)", "Adam(learning_rate=0.01)",
                            "SGD(learning_rate=0.05, momentum=0.9, nesterov=True)"};
    for (const char *opt : optims) {
        /* with a third layer, the 4 KB buckets of main() make two per step:
           one sent while backward runs, one at its end */
        const char *extra = opt[0] == 'A' ? "Dense(64, activation='relu')" : nullptr;
        nnl_model *ref = mlp(f, opt, 7, extra);
        CHECK_OK(fit_xy(ref, x, y, f, opts(3, b * g_size)));
        std::vector<float> wr = weights(ref);
        std::vector<float> wd[2];
        for (int run = 0; run < 2; run++) {
            nnl_model *m = mlp(f, opt, 7, extra);
            CHECK_OK(nnl_distribute(m, nullptr, NNL_DATA_SHARDED));
            CHECK_OK(fit_xy(m, x, y, f, opts(3, b)));
            wd[run] = weights(m);
            CHECK(same_everywhere(wd[run]));
            nnl_model_free(m);
        }
        double d = max_rel_diff(wd[0], wr);
        /* float32 sums in another order: about 1e-7 per step, 78 steps */
        if (!(d < 2e-5)) fprintf(stderr, "[rank %d] %s: distributed vs one process differ by %g\n", g_rank, opt, d);
        CHECK(d < 2e-5);
        CHECK(wd[0] == wd[1]); /* bit-identical from run to run */
        /* NNL_GLOBAL_BATCH: batch_size is the step's total */
        nnl_model *g = mlp(f, opt, 7, extra);
        CHECK_OK(nnl_distribute(g, nullptr, NNL_GLOBAL_BATCH));
        CHECK_OK(fit_xy(g, x, y, f, opts(3, b * g_size)));
        CHECK(weights(g) == wd[0]);
        nnl_model_free(g);
        nnl_model_free(ref);
    }
}

/* Every sample exactly once per epoch, each weighted by its global batch:
   input e_i (one-hot of the sample's index), Dense(1) without bias from 0,
   MSE to target 1, plain SGD: after one epoch w_i = 2 lr / G_s, G_s the size
   of the global batch that held sample i; 0 if never seen, more if twice. */
static void shards_cover_once() {
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        const int n = 37, b = 4;
        const int G = b * g_size;
        nnl_model *m = nnl_model_create();
        CHECK_OK(nnl_add(m, "Input(shape=(37,))"));
        CHECK_OK(nnl_add(m, "Dense(1, use_bias=False, kernel_initializer='zeros')"));
        CHECK_OK(nnl_compile(m, "SGD(learning_rate=0.5)", "mse", nullptr));
        CHECK_OK(nnl_distribute(m, nullptr, 0));
        std::vector<float> x((size_t)n * n, 0.f), y((size_t)n, 1.f);
        for (int i = 0; i < n; i++) x[(size_t)i * n + i] = 1.f;
        nnl_fit_options o = opts(1, b);
        o.shuffle = shuffle;
        int64_t xs[2] = {n, n}, ys[2] = {n, 1};
        CHECK_OK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_FLOAT32, 2, ys, &o));
        std::vector<float> w = weights(m);
        int last = n % G ? n % G : G, full = 0, partial = 0;
        for (int i = 0; i < n; i++) {
            if (std::fabs(w[(size_t)i] - 1.0 / G) < 1e-6)
                full++;
            else if (std::fabs(w[(size_t)i] - 1.0 / last) < 1e-6)
                partial++;
            else
                fprintf(stderr, "[rank %d] sample %d: weight %g (G %d, last %d)\n", g_rank, i, w[(size_t)i], G, last);
        }
        CHECK(full + partial == n);
        if (last != G) CHECK(partial == last);
        if (!shuffle && last != G)
            for (int i = n - last; i < n; i++) CHECK(std::fabs(w[(size_t)i] - 1.0 / last) < 1e-6);
        nnl_model_free(m);
    }
}

/* Validation metrics and nnl_evaluate on a distributed model are those of
   the whole data (sharded, reduced), equal to one process' */
static void evaluate_reduced() {
    const int f = 6, n = 150;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 5, x, y);
    nnl_model *a = mlp(f, "SGD(learning_rate=0.1)", 3), *d = mlp(f, "SGD(learning_rate=0.1)", 3);
    CHECK_OK(nnl_distribute(d, nullptr, 0));
    int64_t xs[2] = {n, f}, ys[1] = {n};
    double ra[2], rd[2];
    CHECK_OK(nnl_evaluate(a, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, 16, ra, 2));
    CHECK_OK(nnl_evaluate(d, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, 16, rd, 2));
    CHECK(std::fabs(ra[0] - rd[0]) < 1e-6 * std::fabs(ra[0]) + 1e-9);
    CHECK(std::fabs(ra[1] - rd[1]) < 1e-12);
    /* validation_split: the last 20 %, sharded, reduced */
    nnl_fit_options o = opts(2, 4);
    o.validation_split = 0.2;
    nnl_fit_options o1 = o;
    o1.batch_size = 4 * g_size;
    CHECK_OK(fit_xy(a, x, y, f, o1));
    CHECK_OK(fit_xy(d, x, y, f, o));
    double va[2], vd[2];
    CHECK(nnl_history_get(a, "val_loss", va, 2) == 2);
    CHECK(nnl_history_get(d, "val_loss", vd, 2) == 2);
    CHECK(std::fabs(va[1] - vd[1]) < 1e-4 * std::fabs(va[1]));
    CHECK(nnl_history_get(d, "val_accuracy", vd, 2) == 2);
    double v[2] = {vd[0], vd[1]}, v0[2];
    memcpy(v0, v, sizeof v);
    MPI_Bcast(v0, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    CHECK(v0[0] == v[0] && v0[1] == v[1]); /* every rank records the same history */
    nnl_model_free(a);
    nnl_model_free(d);
}

/* NNL_DATA_LOCAL: each rank its own samples (here: equal counts, so one
   process on the batches interleaved rank by rank gives the same steps) */
static void local_data() {
    const int f = 5, per = 40, b = 5;
    std::vector<float> xall;
    std::vector<int32_t> yall;
    make_data(per * g_size, f, 77, xall, yall);
    /* rank r holds samples r*per .. */
    std::vector<float> x(xall.begin() + (size_t)g_rank * per * f, xall.begin() + (size_t)(g_rank + 1) * per * f);
    std::vector<int32_t> y(yall.begin() + (size_t)g_rank * per, yall.begin() + (size_t)(g_rank + 1) * per);
    nnl_model *d = mlp(f, "Adam(learning_rate=0.01)", 9);
    CHECK_OK(nnl_distribute(d, nullptr, NNL_DATA_LOCAL));
    nnl_fit_options o = opts(2, b);
    o.shuffle = 0;
    CHECK_OK(fit_xy(d, x, y, f, o));
    /* one process: step s = rank 0's batch s, then rank 1's, ... */
    std::vector<float> xi;
    std::vector<int32_t> yi;
    for (int s = 0; s < per / b; s++)
        for (int r = 0; r < g_size; r++)
            for (int k = 0; k < b; k++) {
                int i = r * per + s * b + k;
                xi.insert(xi.end(), xall.begin() + (size_t)i * f, xall.begin() + (size_t)(i + 1) * f);
                yi.push_back(yall[(size_t)i]);
            }
    nnl_model *a = mlp(f, "Adam(learning_rate=0.01)", 9);
    nnl_fit_options o1 = o;
    o1.batch_size = b * g_size;
    CHECK_OK(fit_xy(a, xi, yi, f, o1));
    CHECK(max_rel_diff(weights(d), weights(a)) < 2e-5);
    CHECK(same_everywhere(weights(d)));
    /* uneven: rank r holds 10 + 7r samples; all used, the replicas agree */
    std::vector<float> xu(x.begin(), x.begin() + (size_t)(10 + 7 * (g_rank % 4)) * f);
    std::vector<int32_t> yu(y.begin(), y.begin() + 10 + 7 * (g_rank % 4));
    o.shuffle = 1;
    CHECK_OK(fit_xy(d, xu, yu, f, o));
    CHECK(same_everywhere(weights(d)));
    nnl_model_free(a);
    nnl_model_free(d);
}

/* A wrong argument on one rank fails the call on every rank, with that
   rank's status and message; options must agree; a non-finite loss on one
   rank stops all at the same batch; a callback's stop on one rank stops all. */
static int stop_cb(void *user, nnl_model *, int event, int epoch, int64_t batch, const double *, int) {
    (void)user;
    return event == NNL_EVENT_BATCH_END && g_rank == g_size - 1 && epoch == 1 && batch == 0;
}
static void failures_agree() {
    const int f = 4, n = 64;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 11, x, y);
    nnl_model *m = mlp(f, "SGD(learning_rate=0.1)", 1);
    CHECK_OK(nnl_distribute(m, nullptr, 0));
    /* the last rank passes y with one sample too few */
    int64_t xs[2] = {n, f}, ys[1] = {g_rank == g_size - 1 ? n - 1 : n};
    nnl_fit_options o = opts(1, 8);
    int st = nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o);
    CHECK(st == NNL_ERR_SHAPE);
    if (g_rank != g_size - 1) {
        char want[128];
        snprintf(want, sizeof want, "y has %d samples, but x has %d (on rank %d of %d)", n - 1, n, g_size - 1, g_size);
        CHECK(strstr(nnl_last_error(), want) != nullptr);
    }
    /* options that differ */
    o.epochs = 1 + (g_rank == 0);
    CHECK(fit_xy(m, x, y, f, o) == NNL_ERR_ARGUMENT);
    CHECK(strstr(nnl_last_error(), "disagree on epochs") != nullptr);
    o.epochs = 1;
    /* a huge input on rank 0 only: its loss overflows; every rank stops at batch 1 */
    std::vector<float> xh = x;
    if (g_rank == 0)
        for (auto &v : xh) v *= 1e30f;
    std::vector<float> before = weights(m);
    st = fit_xy(m, xh, y, f, o);
    CHECK(st == NNL_ERR_NUMERIC);
    CHECK(strstr(nnl_last_error(), "batch 1") != nullptr);
    CHECK(weights(m) == before); /* the update was not applied, on any rank */
    /* a callback stops the last rank in epoch 2 after batch 1: all stop there */
    o.epochs = 3;
    o.callback = stop_cb;
    CHECK_OK(nnl_history_clear(m));
    CHECK_OK(fit_xy(m, x, y, f, o));
    CHECK(nnl_history_epochs(m) == 1);
    CHECK(same_everywhere(weights(m)));
    nnl_model_free(m);
}

/* Rank 0 writes; a file written by N ranks resumes on fewer ranks (a
   sub-communicator), and training goes on; the other ranks' saves are
   no-ops; a learning-rate helper; local again with MPI_COMM_NULL. */
static void files_and_helpers() {
    const int f = 6, n = 96;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 21, x, y);
    nnl_model *m = mlp(f, "Adam(learning_rate=0.01)", 4);
    CHECK_OK(nnl_distribute(m, nullptr, 0));
    CHECK_OK(fit_xy(m, x, y, f, opts(1, 4)));
    char path[256];
    snprintf(path, sizeof path, "%s/mpi_ckpt_rank%d.nnl", getenv("NNL_TEST_TMP") ? getenv("NNL_TEST_TMP") : "/tmp",
             g_rank);
    unlink(path);
    CHECK_OK(nnl_save_model(m, path));
    CHECK((access(path, F_OK) == 0) == (g_rank == 0)); /* rank 0 alone wrote */
    /* rank 0's file to every rank */
    std::vector<char> bytes;
    long len = 0;
    if (g_rank == 0) {
        FILE *fp = fopen(path, "rb");
        fseek(fp, 0, SEEK_END);
        len = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        bytes.resize((size_t)len);
        CHECK(fread(bytes.data(), 1, (size_t)len, fp) == (size_t)len);
        fclose(fp);
    }
    MPI_Bcast(&len, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    bytes.resize((size_t)len);
    MPI_Bcast(bytes.data(), (int)len, MPI_CHAR, 0, MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/mpi_ckpt_copy%d.nnl", getenv("NNL_TEST_TMP") ? getenv("NNL_TEST_TMP") : "/tmp",
             g_rank);
    FILE *fp = fopen(path, "wb");
    fwrite(bytes.data(), 1, bytes.size(), fp);
    fclose(fp);
    /* resume on the first half of the ranks (at least one) */
    int half = g_size / 2 > 0 ? g_size / 2 : 1;
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, g_rank < half ? 0 : 1, g_rank, &sub);
    nnl_model *r = nullptr;
    CHECK_OK(nnl_load_model(path, &r));
    unlink(path);
    if (g_rank < half) {
        CHECK_OK(nnl_distribute(r, &sub, 0));
        int rk = -1, sz = -1;
        nnl_mpi_rank(r, &rk, &sz);
        CHECK(rk == g_rank && sz == half);
        nnl_fit_options o = opts(2, 4 * g_size / half);
        o.initial_epoch = 1;
        CHECK_OK(fit_xy(r, x, y, f, o));
        CHECK(nnl_history_epochs(r) == 2);
    }
    /* the uninterrupted run on all ranks */
    nnl_fit_options o = opts(2, 4);
    o.initial_epoch = 1;
    CHECK_OK(fit_xy(m, x, y, f, o));
    if (g_rank < half) CHECK(max_rel_diff(weights(r), weights(m)) < 2e-5);
    MPI_Comm_free(&sub);
    /* the learning-rate rule */
    double lr = nnl_get_learning_rate(m);
    CHECK_OK(nnl_scale_learning_rate(m));
    CHECK(std::fabs(nnl_get_learning_rate(m) - lr * g_size) < 1e-12);
    /* local again */
    MPI_Comm null = MPI_COMM_NULL;
    CHECK_OK(nnl_distribute(m, &null, 0));
    int rk = -1, sz = -1;
    nnl_mpi_rank(m, &rk, &sz);
    CHECK(rk == 0 && sz == 1);
    CHECK(nnl_distribute(m, nullptr, 8) == NNL_ERR_ARGUMENT);
    CHECK(nnl_distribute(m, nullptr, NNL_DATA_LOCAL | NNL_GLOBAL_BATCH) == NNL_ERR_ARGUMENT);
    CHECK(nnl_distribute_f(m, 123456, 0) == NNL_ERR_ARGUMENT); /* no such Fortran handle: an error, not an abort */
    CHECK(nnl_has_feature("mpi") == 1);
    nnl_model_free(m);
    nnl_model_free(r);
}

/* Stateful LSTMs: each rank keeps the state of its own rows; equal to one
   process on the global batch (rows r, r+N, ... of each window on rank r). */
static void stateful_rows() {
    const int V = 12, steps = 5, b = 2, G = b * g_size, n_ids = 400;
    std::vector<int32_t> ids((size_t)n_ids);
    g_state = 99;
    for (auto &v : ids) v = (int32_t)(uni() * V);
    nnl_array *xa = nullptr, *ya = nullptr;
    CHECK_OK(nnl_lm_windows(ids.data(), n_ids, G, steps, &xa, &ya));
    const int64_t *xs = nnl_array_shape(xa), *ys = nnl_array_shape(ya);
    auto build = [&]() {
        nnl_model *m = nnl_model_create();
        nnl_model_set_seed(m, 5);
        CHECK_OK(nnl_add(m, "Input(shape=(5,), dtype='int32')"));
        CHECK_OK(nnl_add(m, "Embedding(12, 4)"));
        CHECK_OK(nnl_add(m, "LSTM(6, return_sequences=True, stateful=True)"));
        CHECK_OK(nnl_add(m, "Dense(12, activation='softmax')"));
        CHECK_OK(nnl_compile(m, "SGD(learning_rate=0.5)", "sparse_categorical_crossentropy", nullptr));
        return m;
    };
    nnl_model *a = build(), *d = build();
    CHECK_OK(nnl_distribute(d, nullptr, 0));
    nnl_fit_options o = opts(2, G);
    o.shuffle = 0;
    CHECK_OK(nnl_fit_typed(a, nnl_array_data(xa), NNL_INT32, 2, xs, nnl_array_data(ya), NNL_INT32, 2, ys, &o));
    o.batch_size = b;
    CHECK_OK(nnl_fit_typed(d, nnl_array_data(xa), NNL_INT32, 2, xs, nnl_array_data(ya), NNL_INT32, 2, ys, &o));
    double dd = max_rel_diff(weights(d), weights(a));
    if (!(dd < 2e-5)) fprintf(stderr, "[rank %d] stateful: %g\n", g_rank, dd);
    CHECK(dd < 2e-5);
    nnl_array_free(xa);
    nnl_array_free(ya);
    nnl_model_free(a);
    nnl_model_free(d);
}

/* An Embedding's gradient travels as the rows some rank's ids used (the
   union of the ranks' marks; 300 rows, at most 4 x 3 x N used a step):
   N ranks = one process on the global batch, SGD and Adam (whose moments
   decay in every row, used or not), an uneven last batch whose single
   sample leaves the other ranks without samples (no marks, still taking
   part), and at 2 ranks bit-identical to the dense reduction
   (NNL_MPI_SPARSE=0). */
static void sparse_embedding() {
    const int V = 300, T = 4, n = 6 * g_size + 1, b = 3;
    std::vector<int32_t> ids((size_t)n * T), y((size_t)n);
    g_state = 321;
    for (auto &v : ids) v = (int32_t)(uni() * V);
    for (auto &v : y) v = (int32_t)(uni() * 5);
    int64_t xs[2] = {n, T}, ys[1] = {n};
    const char *optims[] = {"SGD(learning_rate=0.5)", "Adam(learning_rate=0.05)"};
    for (const char *opt : optims) {
        auto build = [&]() {
            nnl_model *m = nnl_model_create();
            nnl_model_set_seed(m, 11);
            CHECK_OK(nnl_add(m, "Input(shape=(4,), dtype='int32')"));
            CHECK_OK(nnl_add(m, "Embedding(300, 6)"));
            CHECK_OK(nnl_add(m, "Flatten()"));
            CHECK_OK(nnl_add(m, "Dense(5, activation='softmax')"));
            CHECK_OK(nnl_compile(m, opt, "sparse_categorical_crossentropy", nullptr));
            return m;
        };
        nnl_fit_options o = opts(3, b * g_size);
        nnl_model *ref = build();
        CHECK_OK(nnl_fit_typed(ref, ids.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 1, ys, &o));
        std::vector<float> wd[2];
        for (int dense = 0; dense < 2; dense++) {
            if (dense) setenv("NNL_MPI_SPARSE", "0", 1);
            nnl_model *m = build();
            CHECK_OK(nnl_distribute(m, nullptr, NNL_DATA_SHARDED));
            unsetenv("NNL_MPI_SPARSE");
            o.batch_size = b;
            CHECK_OK(nnl_fit_typed(m, ids.data(), NNL_INT32, 2, xs, y.data(), NNL_INT32, 1, ys, &o));
            wd[dense] = weights(m);
            CHECK(same_everywhere(wd[dense]));
            nnl_model_free(m);
        }
        double d = max_rel_diff(wd[0], weights(ref)), dd = max_rel_diff(wd[0], wd[1]);
        if (!(d < 2e-5 && dd < 2e-5))
            fprintf(stderr, "[rank %d] sparse embedding, %s: vs one process %g, vs dense %g\n", g_rank, opt, d, dd);
        CHECK(d < 2e-5);
        CHECK(dd < 2e-5);
        if (g_size == 2) CHECK(wd[0] == wd[1]);
        nnl_model_free(ref);
        o.batch_size = b * g_size;
    }
}

/* NNL_SYNC_BATCHNORM: N ranks = one process on the global batch, with
   BatchNormalization; the last global batch holds one sample, so the other
   ranks have none and must still take part (several buckets per step) */
static void sync_batchnorm() {
    const int f = 6, b = 8, G = b * g_size, n = 5 * G + 1;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 314, x, y);
    auto build = [&]() {
        nnl_model *m = nnl_model_create();
        nnl_model_set_seed(m, 8);
        CHECK_OK(nnl_add(m, "Input(shape=(6,))"));
        CHECK_OK(nnl_add(m, "Dense(128, activation='relu')"));
        CHECK_OK(nnl_add(m, "BatchNormalization()"));
        CHECK_OK(nnl_add(m, "Dense(64, activation='relu')"));
        CHECK_OK(nnl_add(m, "Dense(3, activation='softmax')"));
        CHECK_OK(nnl_compile(m, "Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy"));
        return m;
    };
    nnl_model *a = build(), *d = build(), *p = build();
    CHECK_OK(fit_xy(a, x, y, f, opts(2, G)));
    CHECK_OK(nnl_distribute(d, nullptr, NNL_SYNC_BATCHNORM));
    CHECK_OK(fit_xy(d, x, y, f, opts(2, b)));
    std::vector<float> wa = weights(a), wd = weights(d);
    double dd = max_rel_diff(wd, wa);
    if (!(dd < 1e-4)) fprintf(stderr, "[rank %d] sync BN: %g\n", g_rank, dd);
    CHECK(dd < 1e-4); /* moving statistics included */
    CHECK(same_everywhere(wd));
    /* per-rank statistics (the default) differ from one process (N > 1) */
    CHECK_OK(nnl_distribute(p, nullptr, 0));
    CHECK_OK(fit_xy(p, x, y, f, opts(2, b)));
    if (g_size > 1) CHECK(max_rel_diff(weights(p), wa) > 1e-3);
    nnl_model_free(a);
    nnl_model_free(d);
    nnl_model_free(p);
}

/* A distributed model on a GPU (issue 15): the gradients are reduced from
   the device (staged through pinned host memory, or in device memory with a
   CUDA-aware Open MPI). N ranks on GPUs (all on one GPU when the node has
   one) = N ranks on the CPU within float32 tolerance, history and weights;
   bit-identical from run to run. Cases: an MLP in several buckets (SGD with
   momentum), and an Embedding whose rows travel sparse, with a last global batch of
   one sample (the other ranks have none and their device gradients are
   zeroed). "cuda" picks the rank's device on its node. Skipped, saying so,
   without a CUDA build or a GPU on every rank. A synchronised
   BatchNormalization is refused on a GPU, in every build. SGD, not Adam:
   Adam's steps are about lr whatever a gradient's size, so a near-zero
   gradient whose rounding differs between the devices could move one weight
   by ~lr, which says nothing about the reduction (the GPU suite's gm::agree
   allows for that; here the bound stays tight). */
static void gpu_data_parallel() {
    {
        nnl_model *m = nnl_model_create();
        CHECK_OK(nnl_add(m, "Input(shape=(4,))"));
        CHECK_OK(nnl_add(m, "Dense(8)"));
        CHECK_OK(nnl_add(m, "BatchNormalization()"));
        CHECK_OK(nnl_add(m, "Dense(2, activation='softmax')"));
        CHECK_OK(nnl_compile(m, "SGD()", "sparse_categorical_crossentropy", nullptr));
        CHECK_OK(nnl_distribute(m, nullptr, NNL_SYNC_BATCHNORM));
        CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
        CHECK(strstr(nnl_last_error(), "synchronised BatchNormalization") != nullptr);
        CHECK(strcmp(nnl_get_device(m), "cpu") == 0);
        nnl_model_free(m);
    }
    int devices = nnl_has_feature("cuda") ? nnl_cuda_device_count() : 0, fewest = 0;
    MPI_Allreduce(&devices, &fewest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (fewest <= 0) {
        if (g_rank == 0)
            printf("      GPU data parallelism SKIPPED: %s\n",
                   nnl_has_feature("cuda") ? "no CUDA device on some rank" : "this nnlite was built without CUDA");
        return;
    }
    MPI_Comm node;
    int local = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    char want[32];
    snprintf(want, sizeof want, "cuda:%d", local % devices);

    struct Run {
        std::vector<float> w;
        std::vector<double> loss;
    };
    /* build() makes the model; place: "cpu", "cuda" after nnl_distribute, or
       "cuda" before it (then nnl_distribute moves it to the rank's device) */
    auto train = [&](nnl_model *(*build)(), const void *x, int xt, const int64_t *xs, const void *y,
                     int yt, int yrank, const int64_t *ys, int epochs, int batch, int place) {
        Run r;
        nnl_model *m = build();
        if (place == 2) CHECK_OK(nnl_set_device(m, "cuda"));
        CHECK_OK(nnl_distribute(m, nullptr, NNL_DATA_SHARDED));
        if (place == 1) CHECK_OK(nnl_set_device(m, "cuda"));
        if (place) {
            if (strcmp(nnl_get_device(m), want))
                fprintf(stderr, "[rank %d] on %s, not %s\n", g_rank, nnl_get_device(m), want);
            CHECK(strcmp(nnl_get_device(m), want) == 0);
        }
        nnl_fit_options o = opts(epochs, batch);
        CHECK_OK(nnl_fit_typed(m, x, xt, 2, xs, y, yt, yrank, ys, &o));
        r.w = weights(m);
        r.loss.assign((size_t)epochs, 0.0);
        CHECK(nnl_history_get(m, "loss", r.loss.data(), epochs) == epochs);
        CHECK(same_everywhere(r.w));
        nnl_model_free(m);
        return r;
    };
    auto compare = [&](const char *what, const Run &cpu, const Run &g0, const Run &g1) {
        double dw = max_rel_diff(g0.w, cpu.w), dl = 0;
        for (size_t e = 0; e < cpu.loss.size(); e++)
            dl = std::fmax(dl, std::fabs(g0.loss[e] - cpu.loss[e]) / std::fmax(std::fabs(cpu.loss[e]), 1e-12));
        if (!(dw < 1e-4 && dl < 1e-4))
            fprintf(stderr, "[rank %d] %s: GPU vs CPU: weights %g, loss %g\n", g_rank, what, dw, dl);
        CHECK(dw < 1e-4); /* float32 kernels in another order, 3 epochs */
        CHECK(dl < 1e-4);
        CHECK(g0.w == g1.w); /* bit-identical from run to run */
        CHECK(g0.loss == g1.loss);
    };

    /* an MLP, several buckets per step (main's 4 KB buckets), an uneven last batch */
    const int f = 6, n = 203, b = 8;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 42, x, y);
    int64_t xs[2] = {n, f}, ys[1] = {n};
    nnl_model *(*mlp_sgd)() = [] {
        return mlp(6, "SGD(learning_rate=0.05, momentum=0.9)", 7, "Dense(64, activation='relu')");
    };
    Run c = train(mlp_sgd, x.data(), NNL_FLOAT32, xs, y.data(), NNL_INT32, 1, ys, 3, b, 0);
    Run g0 = train(mlp_sgd, x.data(), NNL_FLOAT32, xs, y.data(), NNL_INT32, 1, ys, 3, b, 1);
    Run g1 = train(mlp_sgd, x.data(), NNL_FLOAT32, xs, y.data(), NNL_INT32, 1, ys, 3, b, 2);
    compare("MLP, SGD with momentum", c, g0, g1);

    /* an Embedding (rows sent sparse); the last global batch has one sample */
    const int V = 300, T = 4, ne = 6 * g_size + 1, be = 3;
    std::vector<int32_t> ids((size_t)ne * T), ye((size_t)ne);
    g_state = 321;
    for (auto &v : ids) v = (int32_t)(uni() * V);
    for (auto &v : ye) v = (int32_t)(uni() * 5);
    int64_t es[2] = {ne, T}, eys[1] = {ne};
    nnl_model *(*emb)() = [] {
        nnl_model *m = nnl_model_create();
        nnl_model_set_seed(m, 11);
        CHECK_OK(nnl_add(m, "Input(shape=(4,), dtype='int32')"));
        CHECK_OK(nnl_add(m, "Embedding(300, 6)"));
        CHECK_OK(nnl_add(m, "Flatten()"));
        CHECK_OK(nnl_add(m, "Dense(5, activation='softmax')"));
        CHECK_OK(nnl_compile(m, "SGD(learning_rate=0.5)", "sparse_categorical_crossentropy", nullptr));
        return m;
    };
    c = train(emb, ids.data(), NNL_INT32, es, ye.data(), NNL_INT32, 1, eys, 3, be, 0);
    g0 = train(emb, ids.data(), NNL_INT32, es, ye.data(), NNL_INT32, 1, eys, 3, be, 1);
    g1 = train(emb, ids.data(), NNL_INT32, es, ye.data(), NNL_INT32, 1, eys, 3, be, 1);
    compare("Embedding, SGD", c, g0, g1);

    /* a GPU model cannot take a synchronised BatchNormalization either */
    nnl_model *m = nnl_model_create();
    CHECK_OK(nnl_add(m, "Input(shape=(4,))"));
    CHECK_OK(nnl_add(m, "BatchNormalization()"));
    CHECK_OK(nnl_add(m, "Dense(2, activation='softmax')"));
    CHECK_OK(nnl_compile(m, "SGD()", "sparse_categorical_crossentropy", nullptr));
    CHECK_OK(nnl_set_device(m, "cuda:0"));
    CHECK(nnl_distribute(m, nullptr, NNL_SYNC_BATCHNORM) == NNL_ERR_UNSUPPORTED);
    CHECK_OK(nnl_distribute(m, nullptr, 0));
    CHECK(strcmp(nnl_get_device(m), "cuda:0") == 0); /* "cuda:N" stays where it was put */
    nnl_model_free(m);
}

/* rank 1 leaves: rank 0's collective call fails with NNL_ERR_DISTRIBUTED
   within the timeout instead of hanging */
static int leave() {
    const int f = 4, n = 32;
    std::vector<float> x;
    std::vector<int32_t> y;
    make_data(n, f, 3, x, y);
    nnl_model *m = mlp(f, "SGD(learning_rate=0.1)", 1);
    CHECK_OK(nnl_distribute(m, nullptr, 0));
    if (g_rank == 0) {
        double t0 = MPI_Wtime();
        int st = fit_xy(m, x, y, f, opts(1, 4));
        double t = MPI_Wtime() - t0;
        printf("leave: rank 0 got %s after %.1f s: %s\n", nnl_status_string(st), t, nnl_last_error());
        CHECK(st == NNL_ERR_DISTRIBUTED);
        CHECK(t < 60);
        CHECK(fit_xy(m, x, y, f, opts(1, 4)) == NNL_ERR_DISTRIBUTED); /* and stays failed */
    }
    MPI_Barrier(MPI_COMM_WORLD); /* the others never called fit */
    nnl_model_free(m);
    return g_fail;
}

int main(int argc, char **argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (nnl_init(NNL_VERSION_NUMBER) != NNL_OK) {
        fprintf(stderr, "%s\n", nnl_last_error());
        return 1;
    }
    /* buckets of 1,048 floats: several per step, sent while backward runs;
       with NNL_TEST_DEFAULT_BUCKETS set (check_mpi.sh's second 2-rank run)
       the default: on one node, no buckets, everything at the reduction point */
    if (!getenv("NNL_TEST_DEFAULT_BUCKETS")) setenv("NNL_MPI_BUCKET_MB", "0.004", 1);
    int fails = 0;
    if (argc > 1 && !strcmp(argv[1], "leave")) {
        fails = leave();
    } else {
        struct {
            const char *name;
            void (*run)();
        } cases[] = {{"equivalence with one process (SGD, Adam, Nesterov); bit-identical reruns", equivalence},
                     {"shards cover every sample once per epoch, weighted by true counts", shards_cover_once},
                     {"evaluate and validation reduced over the ranks", evaluate_reduced},
                     {"NNL_DATA_LOCAL: each rank its own data", local_data},
                     {"a failure on one rank fails every rank", failures_agree},
                     {"rank 0 writes; resume on fewer ranks; helpers", files_and_helpers},
                     {"stateful LSTM: each rank keeps its rows", stateful_rows},
                     {"Embedding gradients travel as the rows used (= one process, = dense)", sparse_embedding},
                     {"synchronised BatchNormalization = one process; empty ranks take part", sync_batchnorm},
                     {"on a GPU = on the CPU (2 ranks may share one GPU); bit-identical reruns", gpu_data_parallel}};
        for (auto &c : cases) {
            int before = g_fail;
            c.run();
            int mine = g_fail - before, all = 0;
            MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
            if (g_rank == 0) printf("%s %d ranks: %s\n", all ? "FAIL" : "ok  ", g_size, c.name);
            fflush(stdout);
        }
        fails = g_fail;
    }
    int total = 0;
    MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0) printf("mpi_tests: %d ranks, %s\n", g_size, total ? "FAILED" : "all passed");
    MPI_Finalize();
    return fails ? 1 : 0;
}
