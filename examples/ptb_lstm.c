/* ptb_lstm.c - seed workload T-PTB: a word-level LSTM language model on the
   Penn Treebank (Mikolov's ptb.train/valid/test.txt, 10,000 words, <unk>
   and <eos> included).

   --preset thesis (default): Embedding(10000, 200) - LSTM(200,
       return_sequences=True) - LSTM(200, return_sequences=True) -
       Dense(10000, softmax), 30 unrolled steps, batch 20, plain SGD lr 0.05,
       4 epochs, shuffled windows; per-epoch train and validation
       perplexity, batches/s (training batches per second of fit's wall
       time), test perplexity.
   --preset small: Zaremba et al. 2014's small non-regularised model (2 x
       200, 20 steps, batch 20, every weight uniform in [-0.1, 0.1], 13
       epochs, stateful LSTMs whose state is reset at each epoch's start,
       windows in order). Reported test perplexity: 114.5 (paper), 115.9
       (TensorFlow tutorial).
       The learning rate: both references minimise the cross-entropy SUMMED
       over the T unrolled steps and averaged over the batch, L_ref = T * L,
       where L is the per-token mean nnlite (and Keras) minimise. Their
       gradient is T times ours, so their step lr_ref * grad(L_ref) =
       (lr_ref * T) * grad(L): learning_rate = 1.0 * T = 20 here. They clip
       grad(L_ref) to global norm 5; ||T g|| <= 5 is ||g|| <= 5 / T, so
       global_clipnorm = 5 / T = 0.25 on our gradient g: clipped, the step is
       (lr_ref * T) * g * (5 / T) / ||g|| = lr_ref * 5 * g / ||g||, the
       references' clipped step exactly. lr_ref is halved after each epoch
       from epoch 5 on (TensorFlow: lr_decay = 0.5 ** max(i + 1 - 4, 0)),
       set from the epoch callback with nnl_set_learning_rate.
   --preset bigram: Embedding(10000, 200) - Dense(10000), no LSTM: a check
       of the data pipeline (corpus loader, windows, int32 ids, per-position
       cross-entropy, perplexity) that runs with any nnlite 0.3 build.
   --words N uses the first N words of each file only (a quick check).
   --checkpoint FILE saves the whole training state (nnl_save_model: weights,
       optimizer, history, RNG, the LSTM states) to FILE after every epoch,
       and when FILE exists at the start resumes from it: the run ends as
       the uninterrupted one would (a long run can be stopped and resumed).

   Data: a folder holding ptb.train.txt, ptb.valid.txt and ptb.test.txt (the
   first argument; else ./data/ptb, ~/.keras/datasets/ptb,
   /usr/share/datasets/ptb, ../shared/data/ptb). The files are the "data"
   folder of Mikolov's simple-examples.tgz
   (http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz), as the
   TensorFlow PTB tutorial uses them.

   usage: ptb_lstm [ptb folder] [--preset thesis|small|bigram] [--words N]
                   [--checkpoint FILE] [--epochs N] [--batch N] [--threads N] [--seed N] */
#include "common.h"

#include <math.h>

typedef struct {
    const char *name;
    int epochs, batch, steps;
} preset;

static const preset kPresets[] = {{"thesis", 4, 20, 30}, {"small", 13, 20, 20}, {"bigram", 1, 20, 30}};

typedef struct {
    double lr0;  /* the learning rate of the first epochs */
    int small;   /* the small preset's schedule */
    double t0;   /* the epoch's start (wall clock) */
    double t_batch; /* the end of its last training batch */
    double train_s; /* the training batches' seconds, validation not counted (as the PyTorch reference counts) */
    int64_t steps_per_epoch;
    nnl_model *m;
} run_state;

/* Per-epoch line (train and validation perplexity, batches/s) and the
   small preset's learning-rate schedule. */
static int on_event(void *user, nnl_model *m, int event, int epoch, int64_t batch, const double *logs, int n) {
    run_state *s = (run_state *)user;
    (void)batch;
    if (event == NNL_EVENT_BATCH_END) s->t_batch = ex_seconds();
    if (event != NNL_EVENT_EPOCH_END) return 0;
    double t = ex_seconds() - s->t0, tt = s->t_batch - s->t0;
    s->train_s += tt;
    double train_ppl = NAN, val_ppl = NAN;
    int k;
    for (k = 0; k < n; k++) {
        const char *key = nnl_history_key(m, k);
        if (key && !strcmp(key, "perplexity")) train_ppl = logs[k];
        if (key && !strcmp(key, "val_perplexity")) val_ppl = logs[k];
    }
    printf("epoch %2d: lr %.4g  train perplexity %.2f  valid perplexity %.2f  %.1f s (training %.1f s)  %.2f "
           "batches/s\n",
           epoch + 1, nnl_get_learning_rate(m), train_ppl, val_ppl, t, tt, tt > 0 ? (double)s->steps_per_epoch / tt : 0);
    fflush(stdout);
    if (s->small) { /* epoch index i = epoch + 1 next: lr0 * 0.5 ** max(i + 1 - 4, 0) */
        int i = epoch + 1, p = i + 1 - 4 > 0 ? i + 1 - 4 : 0;
        nnl_set_learning_rate(m, s->lr0 * pow(0.5, p));
    }
    s->t0 = s->t_batch = ex_seconds();
    return 0;
}

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

/* ids of DIR/ptb.NAME.txt */
static nnl_array *load(const char *dir, const char *name, const nnl_vocab *v) {
    char p[4300];
    nnl_array *a;
    snprintf(p, sizeof p, "%s/ptb.%s.txt", dir, name);
    CHECK(nnl_load_words(p, v, &a));
    return a;
}

int main(int argc, char **argv) {
    /* --preset and --words are this example's own: taken out before the
       common parser sees the rest */
    const preset *ps = &kPresets[0];
    long long words = 0;
    const char *ckpt = NULL;
    char **rest = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int nrest = 0, i;
    if (!rest) return 1;
    for (i = 0; i < argc; i++) {
        if (i > 0 && (!strcmp(argv[i], "--preset") || !strcmp(argv[i], "--words") || !strcmp(argv[i], "--checkpoint"))) {
            int j, found = 0;
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option '%s' needs a value\n", ex_prog(argv[0]), argv[i]);
                return 2;
            }
            if (!strcmp(argv[i], "--checkpoint")) {
                ckpt = argv[++i];
                continue;
            }
            if (!strcmp(argv[i], "--words")) {
                words = atoll(argv[++i]);
                if (words <= 0) {
                    fprintf(stderr, "%s: option '--words' needs a positive whole number\n", ex_prog(argv[0]));
                    return 2;
                }
                continue;
            }
            for (j = 0; j < 3; j++)
                if (!strcmp(argv[i + 1], kPresets[j].name)) ps = &kPresets[j], found = 1;
            if (!found) {
                fprintf(stderr, "%s: unknown preset '%s' (known: thesis, small, bigram)\n", ex_prog(argv[0]),
                        argv[i + 1]);
                return 2;
            }
            i++;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            printf("  --preset thesis|small|bigram (thesis), --words N: the first N words of each file,\n"
                   "  --checkpoint FILE: save after every epoch, resume from FILE when it exists\n");
        rest[nrest++] = argv[i];
    }
    rest[nrest] = NULL;
    ex_args a = ex_parse_args(nrest, rest, (ex_spec){ps->epochs, ps->batch, "ptb folder", NULL});
    int small = !strcmp(ps->name, "small"), bigram = !strcmp(ps->name, "bigram");
    int B = a.batch, T = ps->steps;
    const char *dir = find_ptb(a.data);

    char p[4300];
    nnl_vocab *v;
    snprintf(p, sizeof p, "%s/ptb.train.txt", dir);
    CHECK(nnl_text_vocab(p, &v));
    int64_t V = nnl_vocab_size(v);
    nnl_array *train = load(dir, "train", v), *valid = load(dir, "valid", v), *test = load(dir, "test", v);
    int64_t n_train = nnl_array_size(train), n_valid = nnl_array_size(valid), n_test = nnl_array_size(test);
    if (words > 0) { /* --words N: the first N words of each file (a quick check) */
        if (words < n_train) n_train = words;
        if (words < n_valid) n_valid = words;
        if (words < n_test) n_test = words;
    }
    printf("vocabulary %lld words; train %lld, valid %lld, test %lld words; preset %s\n", (long long)V,
           (long long)n_train, (long long)n_valid, (long long)n_test, ps->name);

    nnl_array *xt, *yt, *xv, *yv, *xs, *ys;
    CHECK(nnl_lm_windows((const int32_t *)nnl_array_data(train), n_train, B, T, &xt, &yt));
    CHECK(nnl_lm_windows((const int32_t *)nnl_array_data(valid), n_valid, B, T, &xv, &yv));
    CHECK(nnl_lm_windows((const int32_t *)nnl_array_data(test), n_test, B, T, &xs, &ys));

    nnl_model *m = nnl_model_create();
    if (!m) return 1;
    CHECK(nnl_model_set_seed(m, ex_seed(&a, 42)));
    CHECK(ex_precision(&a, m));
    char spec[512];
    const char *u = "RandomUniform(minval=-0.1, maxval=0.1)";
    if (small) {
        /* stateful: Keras' fixed batch size, batch_input_shape=(B, T) */
        snprintf(spec, sizeof spec, "Embedding(%lld, 200, embeddings_initializer=\"%s\", batch_input_shape=(%d, %d))",
                 (long long)V, u, B, T);
        CHECK(nnl_add(m, spec));
        for (i = 0; i < 2; i++) {
            snprintf(spec, sizeof spec,
                     "LSTM(200, return_sequences=True, stateful=True, unit_forget_bias=False, "
                     "kernel_initializer=\"%s\", recurrent_initializer=\"%s\", bias_initializer=\"%s\")",
                     u, u, u);
            CHECK(nnl_add(m, spec));
        }
        snprintf(spec, sizeof spec, "Dense(%lld, activation='softmax', kernel_initializer=\"%s\", "
                 "bias_initializer=\"%s\")", (long long)V, u, u);
        CHECK(nnl_add(m, spec));
        snprintf(spec, sizeof spec, "SGD(learning_rate=%g, global_clipnorm=%g)", 1.0 * T, 5.0 / T);
    } else {
        snprintf(spec, sizeof spec, "Embedding(%lld, 200, input_length=%d)", (long long)V, T);
        CHECK(nnl_add(m, spec));
        if (!bigram) {
            CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
            CHECK(nnl_add(m, "LSTM(200, return_sequences=True)"));
        }
        snprintf(spec, sizeof spec, "Dense(%lld, activation='softmax')", (long long)V);
        CHECK(nnl_add(m, spec));
        snprintf(spec, sizeof spec, "SGD(learning_rate=0.05)");
    }
    CHECK(nnl_compile(m, spec, "sparse_categorical_crossentropy", "perplexity"));
    CHECK(nnl_summary(m, NULL));

    run_state st;
    st.lr0 = nnl_get_learning_rate(m);
    st.small = small;
    st.train_s = 0;
    int start = 0; /* epochs already trained (a checkpoint's) */
    if (ckpt && ex_readable(ckpt)) {
        nnl_model_free(m);
        CHECK(nnl_load_model(ckpt, &m));
        start = nnl_history_epochs(m);
        printf("resuming from %s after epoch %d (learning rate %g)\n", ckpt, start, nnl_get_learning_rate(m));
    }
    st.steps_per_epoch = nnl_array_dim(xt, 0) / B;
    st.m = m;
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = a.epochs;
    o.batch_size = B;
    o.verbose = 0;
    o.shuffle = small ? 0 : 1; /* small: rows continue from batch to batch for the stateful layers */
    o.x_val = nnl_array_data(xv);
    o.x_val_dtype = NNL_INT32;
    o.x_val_rank = 2;
    o.x_val_shape = nnl_array_shape(xv);
    o.y_val = nnl_array_data(yv);
    o.y_val_dtype = NNL_INT32;
    o.y_val_rank = 2;
    o.y_val_shape = nnl_array_shape(yv);
    o.callback = on_event;
    o.callback_user = &st;
#if NNL_VERSION_NUMBER >= 300
    /* 0.3: stateful layers; the references reset the state at each epoch's start */
    if (small) o.reset_states = 1;
#endif
    printf("%lld training windows of %d steps in batches of %d: %lld batches per epoch\n",
           (long long)nnl_array_dim(xt, 0), T, B, (long long)st.steps_per_epoch);
    double t = 0;
    int e;
    /* with a checkpoint, one epoch per call (Keras' initial_epoch) and a save after each */
    for (e = start; e < a.epochs; e = ckpt ? e + 1 : a.epochs) {
        o.initial_epoch = e;
        o.epochs = ckpt ? e + 1 : a.epochs;
        double t1 = ex_seconds();
        st.t0 = st.t_batch = t1;
        CHECK(nnl_fit_typed(m, nnl_array_data(xt), NNL_INT32, 2, nnl_array_shape(xt), nnl_array_data(yt), NNL_INT32,
                            2, nnl_array_shape(yt), &o));
        t += ex_seconds() - t1;
        if (ckpt) CHECK(nnl_save_model(m, ckpt));
    }
    int epochs = nnl_history_epochs(m) - start; /* trained by this process */
    double r[2] = {NAN, NAN};
#if NNL_VERSION_NUMBER >= 300
    if (small) CHECK(nnl_reset_states(m));
#endif
    CHECK(nnl_evaluate_typed(m, nnl_array_data(xs), NNL_INT32, 2, nnl_array_shape(xs), nnl_array_data(ys), NNL_INT32,
                             2, nnl_array_shape(ys), B, r, 2));
    printf("test loss: %.4f  test perplexity: %.2f\n", r[0], r[1]);
    /* the speed of the training batches alone: fit's time less each epoch's validation pass */
    double tr = st.train_s, wps = tr > 0 ? (double)nnl_array_size(xt) * epochs / tr : 0;
    printf("training (this run, %d epochs): %.1f s, %.0f words/s, %.2f batches/s, %d thread(s); with validation "
           "%.1f s\n",
           epochs, tr, wps, tr > 0 ? (double)st.steps_per_epoch * epochs / tr : 0, nnl_get_threads(), t);

    nnl_model_free(m);
    nnl_array_free(xt), nnl_array_free(yt), nnl_array_free(xv), nnl_array_free(yv);
    nnl_array_free(xs), nnl_array_free(ys);
    nnl_array_free(train), nnl_array_free(valid), nnl_array_free(test);
    nnl_vocab_free(v);
    free(rest);
    return 0;
}
