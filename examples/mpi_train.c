/* mpi_train.c - data-parallel training over MPI (nnl_distribute) of the
   thesis' two workloads ("Horizontal scaling of deep learning frameworks",
   2018), as Horovod runs them: every rank holds a replica, trains on its
   part of each batch, and the gradients are averaged over the ranks.

   --model tlenet (default): T-LENET, LeNet on Fashion-MNIST (as
       fashion_lenet.c): Conv2D(20, 5, tanh) - MaxPooling2D(2) - Conv2D(50,
       5, tanh) - MaxPooling2D(2) - Flatten - Dense(500, tanh) - Dense(10),
       softmax cross-entropy on the logits, 431,080 params; plain SGD lr
       0.025, batch 512 per rank, 8 epochs; test accuracy at the end.
   --model tptb: T-PTB, the thesis preset of ptb_lstm.c: Embedding(10000,
       200) - LSTM(200, return_sequences=True) x 2 - Dense(10000, softmax),
       30 unrolled steps, 4,651,600 params; plain SGD lr 0.05, batch 20 per
       rank, 4 epochs, shuffled windows (not stateful); the training text is
       laid into batch x ranks rows (nnl_lm_windows: rank r would keep rows
       r, r+N, ... were the windows in order, as stateful layers need; the
       thesis preset shuffles them, so the layout only decides which few
       words at the rows' ends are left out); test perplexity at the end
       (the test text in batch rows, as ptb_lstm lays it).

   The batch is per rank (Horovod's convention): a step trains on batch x
   ranks samples, and the learning rate stays the given one (--lr; the
   linear scaling rule would be nnl_scale_learning_rate). --global-batch
   makes --batch the step's total, split over the ranks.
   --steps S ends each epoch after S steps by training on the first S x
   global batch samples only (the epochs stay whole; for timing runs).
   --no-test skips the test evaluation.

   Throughput as the thesis defines it: batches/s = samples * epochs *
   workers / (batch_size * duration), batch_size per worker. Each rank here
   trains on its share of the samples, not on all of them, so the batches
   of all workers together are (samples trained by all ranks) / (per-rank
   batch), and batches/s = global samples / (per-rank batch * duration);
   on one rank, the optimizer's steps per second. speedup = batches/s(N) /
   batches/s(1). duration: nnl_fit's wall time (rank 0's clock).

   Rank 0 prints (the other ranks' stdout goes to /dev/null): the model, the ranks
   and threads per rank, a line per epoch, the test metric and one line for
   scripts:
     RESULT model=tlenet ranks=N batch=B threads=T batches_per_s=...
            samples_per_s=... test_metric=... [and more keys]

   It needs nnlite built with MPI (make MPI=1, into build-mpi/) and runs
   under mpirun:
     mpirun -np 2 build-mpi/mpi_train /usr/share/datasets/fashion-mnist --model tlenet --batch 512
     mpirun -np 2 build-mpi/mpi_train ../shared/data/ptb --model tptb --steps 50 --epochs 1
   (as root OpenMPI also wants OMPI_ALLOW_RUN_AS_ROOT=1
   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; on a shared machine NNL_NUM_THREADS=1
   or --threads 1 and mpirun --bind-to core keep the ranks off each other's
   cores). Without MPI in the library it says so and exits 1.

   usage: mpi_train [data path] [--model tlenet|tptb] [--steps S] [--lr X] [--global-batch]
                    [--no-test] [--epochs N] [--batch N] [--threads N] [--seed N] */
#include "common.h"

#include <math.h>

typedef struct {
    int ptb;          /* T-PTB, else T-LENET */
    int rank, ranks;
    double batch;     /* per-rank batch (the thesis' batch_size); fractional with --global-batch */
    int64_t global;   /* samples per step */
    double t0;        /* the epoch's start */
    double seconds;   /* the epochs' time so far */
    int64_t samples;  /* training samples per epoch (all ranks) */
    int steps_t;      /* T-PTB: unrolled steps (words per sample) */
} run_state;

/* One line per epoch (rank 0; the others' stdout goes nowhere). */
static int on_event(void *user, nnl_model *m, int event, int epoch, int64_t batch, const double *logs, int n) {
    run_state *s = (run_state *)user;
    double t, loss = NAN, metric = NAN;
    int k;
    (void)batch;
    if (event != NNL_EVENT_EPOCH_END) return 0;
    t = ex_seconds() - s->t0;
    s->seconds += t;
    for (k = 0; k < n; k++) {
        const char *key = nnl_history_key(m, k);
        if (key && !strcmp(key, "loss")) loss = logs[k];
        if (key && (!strcmp(key, "accuracy") || !strcmp(key, "perplexity"))) metric = logs[k];
    }
    printf("epoch %2d: loss %.4f  %s %.4f  %.1f s  %.2f batches/s  %.0f samples/s", epoch + 1, loss,
           s->ptb ? "perplexity" : "accuracy", metric, t, (double)s->samples / (s->batch * t),
           (double)s->samples / t);
    if (s->ptb) printf("  %.0f words/s", (double)s->samples * s->steps_t / t);
    printf("\n");
    fflush(stdout);
    s->t0 = ex_seconds();
    return 0;
}

/* The Penn Treebank folder (as ptb_lstm.c looks for it). */
static const char *find_ptb(const char *given) {
    static const char *const places[] = {"./data/ptb", "~/.keras/datasets/ptb", "/usr/share/datasets/ptb",
                                         "../shared/data/ptb"};
    static char path[4096], probe[4200];
    const char *home = getenv("HOME");
    int i;
    if (given) return given;
    for (i = 0; i < 4; i++) {
        if (places[i][0] == '~')
            snprintf(path, sizeof path, "%s%s", home ? home : "", places[i] + 1);
        else
            snprintf(path, sizeof path, "%s", places[i]);
        snprintf(probe, sizeof probe, "%s/ptb.train.txt", path);
        if (ex_readable(probe)) {
            printf("data: %s\n", path);
            return path;
        }
    }
    fprintf(stderr, "no Penn Treebank data found; searched:");
    for (i = 0; i < 4; i++) fprintf(stderr, " %s", places[i]);
    fprintf(stderr, "\nTo get it: the folder 'data' of Mikolov's simple-examples.tgz\n"
                    "  http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz\n"
                    "holds ptb.train.txt, ptb.valid.txt and ptb.test.txt; pass that folder as the first\n"
                    "argument, or put the three files in one of the places above.\n");
    exit(2);
}

static nnl_array *load_words(const char *dir, const char *name, const nnl_vocab *v) {
    char p[4300];
    nnl_array *a;
    snprintf(p, sizeof p, "%s/ptb.%s.txt", dir, name);
    CHECK(nnl_load_words(p, v, &a));
    return a;
}

static void usage(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s [data path] [--model tlenet|tptb] [--steps S] [--lr X] [--global-batch] [--no-test]\n"
            "       [--epochs N (tlenet 8, tptb 4)] [--batch N (per rank; tlenet 512, tptb 20)] [--threads N] "
            "[--seed N]\n"
            "  --model        T-LENET on Fashion-MNIST (default), or T-PTB (ptb_lstm's thesis preset)\n"
            "  --steps S      end each epoch after S steps (trains on the first S x global batch samples)\n"
            "  --lr X         SGD learning rate (T-LENET 0.025, T-PTB 0.05)\n"
            "  --global-batch --batch is the step's total over the ranks, not per rank\n"
            "  --no-test      skip the test evaluation\n"
            "run it as: mpirun -np N build-mpi/%s ... (nnlite built with make MPI=1)\n",
            prog, prog);
}

int main(int argc, char **argv) {
    /* --model, --steps, --lr, --global-batch and --no-test are this
       example's own: taken out before the common parser sees the rest */
    const char *prog = ex_prog(argv[0]);
    int ptb = 0, steps = 0, global_batch = 0, no_test = 0, i;
    double lr = 0;
    char **rest = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0;
    if (!rest) return 1;
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (i > 0 && (!strcmp(arg, "--model") || !strcmp(arg, "--steps") || !strcmp(arg, "--lr"))) {
            const char *val = i + 1 < argc ? argv[i + 1] : NULL;
            char *end = NULL;
            if (!strcmp(arg, "--model")) {
                if (val && !strcmp(val, "tlenet")) ptb = 0;
                else if (val && !strcmp(val, "tptb")) ptb = 1;
                else {
                    fprintf(stderr, "%s: option '--model' needs tlenet or tptb%s%s%s\n", prog, val ? " (got '" : "",
                            val ? val : "", val ? "')" : "");
                    usage(stderr, prog);
                    return 2;
                }
            } else if (!strcmp(arg, "--steps")) {
                if (!val || atoi(val) <= 0) {
                    fprintf(stderr, "%s: option '--steps' needs a positive whole number\n", prog);
                    usage(stderr, prog);
                    return 2;
                }
                steps = atoi(val);
            } else {
                lr = val ? strtod(val, &end) : 0;
                if (!val || !end || *end || !(lr > 0) || !isfinite(lr)) {
                    fprintf(stderr, "%s: option '--lr' needs a positive number\n", prog);
                    usage(stderr, prog);
                    return 2;
                }
            }
            i++;
            continue;
        }
        if (i > 0 && !strcmp(arg, "--global-batch")) {
            global_batch = 1;
            continue;
        }
        if (i > 0 && !strcmp(arg, "--no-test")) {
            no_test = 1;
            continue;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout, prog);
            return 0;
        }
        if (i > 0 && (!strcmp(arg, "--epochs") || !strcmp(arg, "--batch") || !strcmp(arg, "--threads") ||
                      !strcmp(arg, "--seed"))) {
            rest[nrest++] = argv[i]; /* and its value: the common parser checks both */
            if (i + 1 < argc) rest[nrest++] = argv[++i];
            continue;
        }
        if (i > 0 && arg[0] == '-' && arg[1]) {
            fprintf(stderr, "%s: unknown option '%s' (known: --model tlenet|tptb, --steps S, --lr X, --global-batch, "
                            "--no-test, --epochs N, --batch N, --threads N, --seed N)\n", prog, arg);
            usage(stderr, prog);
            return 2;
        }
        rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    ex_args a = ex_parse_args(nrest, rest, (ex_spec){ptb ? 4 : 8, ptb ? 20 : 512,
                                                      ptb ? "ptb folder" : "fashion-mnist path", NULL});
    if (lr == 0) lr = ptb ? 0.05 : 0.025;

    /* MPI first: without it in this build there is nothing to do */
    if (nnl_mpi_init(&argc, &argv) != NNL_OK) {
        fprintf(stderr, "%s: %s\n%s: then run it under MPI: mpirun -np N build-mpi/%s [arguments]\n", prog,
                nnl_last_error(), prog, prog);
        return 1;
    }
    run_state st;
    memset(&st, 0, sizeof st);
    nnl_mpi_rank(NULL, &st.rank, &st.ranks);
    /* rank 0 alone prints: the others' stdout goes nowhere (errors still show) */
    if (st.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;
    const int N = st.ranks, B = a.batch, T = 30;
    st.ptb = ptb;
    st.global = global_batch ? (int64_t)B : (int64_t)B * N;
    st.batch = global_batch ? (double)B / N : (double)B;
    st.steps_t = ptb ? T : 1;
    if (st.global < N)
        printf("note: a global batch of %lld over %d ranks leaves some ranks without samples\n",
               (long long)st.global, N);

    /* ---- data: every rank loads all of it; each trains on its shard ---- */
    nnl_array *x = NULL, *y = NULL, *xs = NULL, *ys = NULL; /* train, test */
    int64_t n_all;
    nnl_vocab *v = NULL;
    int64_t V = 0;
    if (!ptb) {
        const char *path = ex_find_data(a.data, 1);
        CHECK(nnl_load_mnist(path, &x, &y, &xs, &ys));
        int64_t n = nnl_array_dim(x, 0), nt = nnl_array_dim(xs, 0);
        int64_t s_train[4] = {n, 28, 28, 1}, s_test[4] = {nt, 28, 28, 1};
        CHECK(nnl_array_reshape(x, 4, s_train));
        CHECK(nnl_array_reshape(xs, 4, s_test));
        CHECK(nnl_scale((float *)nnl_array_data(x), n * 784, 1.0f / 255, 0));
        CHECK(nnl_scale((float *)nnl_array_data(xs), nt * 784, 1.0f / 255, 0));
    } else {
        const char *dir = find_ptb(a.data);
        char p[4300];
        snprintf(p, sizeof p, "%s/ptb.train.txt", dir);
        CHECK(nnl_text_vocab(p, &v));
        V = nnl_vocab_size(v);
        nnl_array *train = load_words(dir, "train", v), *test = load_words(dir, "test", v);
        /* training text in (global batch) rows: in order, a global batch would
           be one window and rank r would keep rows r, r+N, ...; shuffled (the
           thesis preset, not stateful) every sample is a window of one row */
        CHECK(nnl_lm_windows((const int32_t *)nnl_array_data(train), nnl_array_size(train), (int)st.global, T, &x,
                             &y));
        CHECK(nnl_lm_windows((const int32_t *)nnl_array_data(test), nnl_array_size(test), B, T, &xs, &ys));
        printf("vocabulary %lld words; train %lld words in %lld rows, test %lld words\n", (long long)V,
               (long long)nnl_array_size(train), (long long)st.global, (long long)nnl_array_size(test));
        nnl_array_free(train);
        nnl_array_free(test);
    }
    n_all = nnl_array_dim(x, 0);
    st.samples = n_all;
    if (steps > 0 && (int64_t)steps * st.global < n_all) st.samples = (int64_t)steps * st.global;

    /* ---- the model: the same on every rank (rank 0's is broadcast at fit) ---- */
    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    char spec[256];
    if (!ptb) {
        CHECK(nnl_add(m, "Conv2D(20, 5, activation='tanh', input_shape=(28, 28, 1))"));
        CHECK(nnl_add(m, "MaxPooling2D(2)"));
        CHECK(nnl_add(m, "Conv2D(50, 5, activation='tanh')"));
        CHECK(nnl_add(m, "MaxPooling2D(2)"));
        CHECK(nnl_add(m, "Flatten()"));
        CHECK(nnl_add(m, "Dense(500, activation='tanh')"));
        CHECK(nnl_add(m, "Dense(10)"));
        snprintf(spec, sizeof spec, "SGD(learning_rate=%.17g)", lr);
        CHECK(nnl_compile(m, spec, "sparse_categorical_crossentropy(from_logits=True)", "accuracy"));
    } else {
        snprintf(spec, sizeof spec, "Embedding(%lld, 200, input_length=%d)", (long long)V, T);
        CHECK(nnl_add(m, spec));
        CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
        CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
        snprintf(spec, sizeof spec, "Dense(%lld, activation='softmax')", (long long)V);
        CHECK(nnl_add(m, spec));
        snprintf(spec, sizeof spec, "SGD(learning_rate=%.17g)", lr);
        CHECK(nnl_compile(m, spec, "sparse_categorical_crossentropy", "perplexity"));
    }
    CHECK(nnl_distribute(m, NULL, global_batch ? NNL_GLOBAL_BATCH : NNL_DATA_SHARDED));
    CHECK(nnl_summary(m, NULL));
    printf("%s: %d rank(s), %d thread(s) per rank; batch %g per rank, %lld per step; SGD lr %g; "
           "%lld of %lld training samples per epoch (%lld steps), %d epoch(s)\n",
           ptb ? "T-PTB" : "T-LENET", N, nnl_get_threads(), st.batch, (long long)st.global, lr,
           (long long)st.samples, (long long)n_all, (long long)((st.samples + st.global - 1) / st.global), a.epochs);
    fflush(stdout);

    /* ---- training: collective, every rank the same options ---- */
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = B;
    o.verbose = 0;
    o.shuffle = 1;
    o.callback = on_event;
    o.callback_user = &st;
    int64_t x_shape[4], y_shape[2];
    for (i = 0; i < nnl_array_rank(x); i++) x_shape[i] = nnl_array_shape(x)[i];
    for (i = 0; i < nnl_array_rank(y); i++) y_shape[i] = nnl_array_shape(y)[i];
    x_shape[0] = y_shape[0] = st.samples; /* --steps: the first samples only */
    double t = ex_seconds();
    st.t0 = t;
    if (!ptb)
        CHECK(nnl_fit(m, (const float *)nnl_array_data(x), 4, x_shape, nnl_array_data(y), NNL_INT64, 1, y_shape, &o));
    else
        CHECK(nnl_fit_typed(m, nnl_array_data(x), NNL_INT32, 2, x_shape, nnl_array_data(y), NNL_INT32, 2, y_shape,
                            &o));
    t = ex_seconds() - t;
    int epochs = nnl_history_epochs(m);
    double trained = (double)st.samples * epochs; /* by all ranks together */
    double bps = trained / (st.batch * t), sps = trained / t;

    /* ---- test: nnl_evaluate is collective too (sharded, reduced) ---- */
    double r[2] = {NAN, NAN};
    if (!no_test) {
        if (!ptb)
            CHECK(nnl_evaluate(m, (const float *)nnl_array_data(xs), 4, nnl_array_shape(xs), nnl_array_data(ys),
                               NNL_INT64, 1, nnl_array_shape(ys), B, r, 2));
        else
            CHECK(nnl_evaluate_typed(m, nnl_array_data(xs), NNL_INT32, 2, nnl_array_shape(xs), nnl_array_data(ys),
                                     NNL_INT32, 2, nnl_array_shape(ys), B, r, 2));
        printf("test loss: %.4f  test %s: %.4f\n", r[0], ptb ? "perplexity" : "accuracy", r[1]);
    }
    printf("training: %d epoch(s) in %.1f s on %d rank(s): %.2f batches/s (thesis definition, batch %g per rank), "
           "%.0f samples/s", epochs, t, N, bps, st.batch, sps);
    if (ptb) printf(", %.0f words/s", sps * T);
    printf("\n");
    printf("RESULT model=%s ranks=%d batch=%d threads=%d batches_per_s=%.4f samples_per_s=%.2f test_metric=%.4f "
           "metric=%s global_batch=%lld epochs=%d samples=%lld seconds=%.3f steps_per_s=%.4f",
           ptb ? "tptb" : "tlenet", N, B, nnl_get_threads(), bps, sps, r[1], ptb ? "perplexity" : "accuracy",
           (long long)st.global, epochs, (long long)st.samples, t, trained / ((double)st.global * t));
    if (ptb) printf(" words_per_s=%.1f", sps * T);
    printf("\n");
    fflush(stdout);

    nnl_model_free(m); /* before MPI ends */
    nnl_array_free(x), nnl_array_free(y), nnl_array_free(xs), nnl_array_free(ys);
    nnl_vocab_free(v);
    free(rest);
    CHECK(nnl_mpi_finalize());
    return 0;
}
