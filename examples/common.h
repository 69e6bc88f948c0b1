/* common.h - what the nnlite examples share: the command line, finding the
   data, error checks, and printing results. C99; include it first (it asks
   for POSIX clock_gettime before any system header is read).

   Command line of every data example:
       prog [data path] [--epochs N] [--batch N] [--threads N] [--seed N]
            [--precision float32|mixed_bfloat16] [--device cpu|cuda|cuda:N]
   and, for the examples that write files (pictures, models), [--out DIR].
   The data path is a folder with the four MNIST-style idx files (.gz or not)
   or a Keras .npz file; without one the usual places are searched. Files go
   to --out DIR, by default the folder holding the program (build/ for
   build/keras_mlp): never into the folder the program is started from. */
#ifndef NNL_EXAMPLES_COMMON_H
#define NNL_EXAMPLES_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nnlite.h"

/* Any failing nnlite call ends the example with its message and status 1. */
#define CHECK(call)                                                                   \
    do {                                                                              \
        if ((call) != NNL_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, nnl_last_error());    \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

typedef struct {
    const char *data; /* NULL: search the usual places */
    int epochs, batch, threads;
    int seed;         /* 0: the example's own (42); weights, shuffling and dropout follow it */
    const char *out;  /* the folder output files go to (see ex_out_path) */
    const char *precision; /* NULL: float32; else nnl_set_precision's policy (ex_precision) */
    const char *device;    /* NULL: the CPU; else nnl_set_device's device (ex_device) */
} ex_args;

/* The program's name without its folder, for messages. */
static inline const char *ex_prog(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    return slash ? slash + 1 : argv0;
}

typedef struct {
    int epochs, batch;  /* the example's defaults */
    const char *data;   /* what the data argument is ("mnist path"); NULL: the example takes none */
    const char *writes; /* what the example writes ("the pictures"); NULL: nothing (no --out) */
} ex_spec;

static inline void ex_usage(FILE *f, const char *argv0, const ex_spec *sp) {
    fprintf(f, "usage: %s %s%s%s[--epochs N (%d)] [--batch N (%d)] [--threads N] [--seed N] [--precision P] [--device D]%s\n",
            ex_prog(argv0),
            sp->data ? "[" : "", sp->data ? sp->data : "", sp->data ? "] " : "", sp->epochs, sp->batch,
            sp->writes ? " [--out DIR]" : "");
    if (sp->writes)
        fprintf(f, "  --out DIR  where %s go (default: the program's folder)\n", sp->writes);
}

/* Parses the command line as *sp describes it (defaults, whether a data path
   is taken, whether --out is). --threads sets nnl_set_threads; --seed the
   model seed (ex_seed); --precision the policy (ex_precision); --device the
   device (ex_device). -h / --help prints the usage and exits 0; a bad
   argument is named, with the usage, and exits 2. */
static inline ex_args ex_parse_args(int argc, char **argv, ex_spec sp) {
    static char here[4096];
    ex_args a;
    int i;
    const char *prog = ex_prog(argv[0]);
    a.data = NULL;
    a.epochs = sp.epochs;
    a.batch = sp.batch;
    a.threads = 0;
    a.seed = 0;
    a.precision = NULL;
    a.device = NULL;
    /* default output folder: the program's own (its path up to the last '/') */
    snprintf(here, sizeof here, "%s", argv[0]);
    if (strrchr(here, '/')) *strrchr(here, '/') = '\0';
    else snprintf(here, sizeof here, ".");
    a.out = here;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int *opt = !strcmp(arg, "--epochs")    ? &a.epochs
                   : !strcmp(arg, "--batch")   ? &a.batch
                   : !strcmp(arg, "--threads") ? &a.threads
                   : !strcmp(arg, "--seed")    ? &a.seed
                                               : NULL;
        /* options that take a string, and what the message says they need */
        const char **sopt = !strcmp(arg, "--precision")            ? &a.precision
                            : !strcmp(arg, "--device")             ? &a.device
                            : sp.writes && !strcmp(arg, "--out")   ? &a.out
                                                                   : NULL;
        const char *needs = !strcmp(arg, "--precision") ? "a policy (float32 or mixed_bfloat16)"
                            : !strcmp(arg, "--device")  ? "a device (cpu, cuda or cuda:N)"
                                                        : "a folder";
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            ex_usage(stdout, argv[0], &sp);
            exit(0);
        } else if (opt) {
            if (i + 1 >= argc || atoi(argv[i + 1]) <= 0) {
                fprintf(stderr, "%s: option '%s' needs a positive whole number%s%s%s\n", prog, arg,
                        i + 1 < argc ? " (got '" : "", i + 1 < argc ? argv[i + 1] : "", i + 1 < argc ? "')" : "");
                ex_usage(stderr, argv[0], &sp);
                exit(2);
            }
            *opt = atoi(argv[++i]);
        } else if (sopt) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "%s: option '%s' needs %s\n", prog, arg, needs);
                ex_usage(stderr, argv[0], &sp);
                exit(2);
            }
            *sopt = argv[++i];
        } else if (arg[0] == '-' && arg[1]) {
            fprintf(stderr, "%s: unknown option '%s' (known: --epochs N, --batch N, --threads N, --seed N, --precision P, --device D%s)\n",
                    prog, arg, sp.writes ? ", --out DIR" : "");
            ex_usage(stderr, argv[0], &sp);
            exit(2);
        } else if (!sp.data || a.data) {
            if (sp.data)
                fprintf(stderr, "%s: unexpected argument '%s' (the data path is already '%s')\n", prog, arg, a.data);
            else
                fprintf(stderr, "%s: unexpected argument '%s' (%s takes no data path)\n", prog, arg, prog);
            ex_usage(stderr, argv[0], &sp);
            exit(2);
        } else {
            a.data = arg;
        }
    }
    if (a.threads > 0) CHECK(nnl_set_threads(a.threads));
    return a;
}

/* out/name into buf (cap bytes), the output folder made first when it is
   missing (one level, as mkdir does). Returns buf. */
static inline const char *ex_out_path(const ex_args *a, const char *name, char *buf, size_t cap) {
    struct stat st;
    if (stat(a->out, &st) != 0 && mkdir(a->out, 0777) != 0) {
        fprintf(stderr, "cannot create the output folder '%s': %s\n", a->out, strerror(errno));
        exit(1);
    }
    snprintf(buf, cap, "%s/%s", a->out, name);
    return buf;
}

/* --precision P: the model's mixed-precision policy (nnl_set_precision);
   float32 when the option is absent. */
static inline int ex_precision(const ex_args *a, nnl_model *m) {
    return a->precision ? nnl_set_precision(m, a->precision) : NNL_OK;
}

/* --device D: where the compiled model trains and predicts (nnl_set_device:
   "cpu", "cuda", "cuda:N"; a GPU needs nnlite built with make CUDA=1); the
   CPU when the option is absent. Call it after nnl_compile. */
static inline int ex_device(const ex_args *a, nnl_model *m) {
    if (!a->device) return NNL_OK;
    int st = nnl_set_device(m, a->device);
    if (st == NNL_OK) printf("device: %s\n", nnl_get_device(m));
    return st;
}

/* The model seed: --seed N, else the example's default. */
static inline uint64_t ex_seed(const ex_args *a, uint64_t fallback) {
    return a->seed > 0 ? (uint64_t)a->seed : fallback;
}

static inline int ex_readable(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The data path: the one given, else the first usual place holding MNIST
   (fashion = 0) or Fashion-MNIST (fashion = 1, for the Fashion-MNIST seeds).
   When nothing is found, says how to get the data and exits 2. The result
   lives in a static buffer. */
static inline const char *ex_find_data(const char *given, int fashion) {
    /* ../shared/data/mnist: where nnlite's developers keep it */
    static const char *const mnist[] = {"./data/mnist", "~/.keras/datasets/mnist.npz", "/usr/share/datasets/mnist",
                                        "../shared/data/mnist"};
    static const char *const fmnist[] = {"/usr/share/datasets/fashion-mnist"};
    static char path[4096], probe[4200];
    const char *const *places = fashion ? fmnist : mnist;
    int n = fashion ? 1 : 4, i;
    const char *home = getenv("HOME");
    if (given) return given;
    for (i = 0; i < n; i++) {
        if (places[i][0] == '~')
            snprintf(path, sizeof path, "%s%s", home ? home : "", places[i] + 1);
        else
            snprintf(path, sizeof path, "%s", places[i]);
        snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte", path);
        if (!(strstr(path, ".npz") ? ex_readable(path) : ex_readable(probe))) {
            snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte.gz", path);
            if (!ex_readable(probe)) continue;
        }
        printf("data: %s\n", path);
        return path;
    }
    fprintf(stderr,
            "no %s data found; searched:", fashion ? "Fashion-MNIST" : "MNIST");
    for (i = 0; i < n; i++) fprintf(stderr, " %s", places[i]);
    fprintf(stderr,
            "\nTo get it:\n"
            "  MNIST: Keras' mnist.npz, from\n"
            "    https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz\n"
            "    (or the four idx .gz files of the MNIST database, in one folder); pass the\n"
            "    file or folder as the first argument, or put it in one of the places above.\n"
            "  Fashion-MNIST (Debian): apt-get install dataset-fashion-mnist\n"
            "    then pass /usr/share/datasets/fashion-mnist as the first argument.\n");
    exit(2);
}

/* One-hot rows (n, classes) float32 from an int64 label array (n,). */
static inline nnl_array *ex_one_hot(nnl_array *labels, int classes) {
    int64_t shape[2];
    nnl_array *out;
    shape[0] = nnl_array_dim(labels, 0);
    shape[1] = classes;
    CHECK(nnl_array_create(NNL_FLOAT32, 2, shape, &out));
    CHECK(nnl_to_categorical(nnl_array_data(labels), nnl_array_dtype(labels), shape[0], classes,
                             (float *)nnl_array_data(out)));
    return out;
}

/* Wall-clock seconds from an arbitrary start. */
static inline double ex_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Evaluates on (x, y) and prints the final line every example ends with. */
static inline void ex_print_test(nnl_model *m, nnl_array *x, const void *y, int y_dtype,
                                 int y_rank, const int64_t *y_shape, int batch) {
    double r[2] = {0, 0};
    CHECK(nnl_evaluate(m, (const float *)nnl_array_data(x), nnl_array_rank(x), nnl_array_shape(x),
                       y, y_dtype, y_rank, y_shape, batch, r, 2));
    printf("test loss: %.4f  test accuracy: %.4f\n", r[0], r[1]);
}

/* Training time and throughput, as the lectures report it (us per sample). */
static inline void ex_print_speed(double seconds, int64_t samples) {
    printf("training: %.1f s, %.0f samples/s (%.1f us/sample), %d thread(s)\n", seconds,
           (double)samples / seconds, 1e6 * seconds / (double)samples, nnl_get_threads());
}

/* The history as a table: one row per epoch, one column per key. */
static inline void ex_print_history(const nnl_model *m) {
    int k, e, nk = nnl_history_key_count(m), ne = nnl_history_epochs(m);
    double *v = (double *)malloc(sizeof(double) * (size_t)(nk * ne + 1));
    if (!v) exit(1);
    printf("%5s", "epoch");
    for (k = 0; k < nk; k++) {
        printf(" %14s", nnl_history_key(m, k));
        if (nnl_history_get(m, nnl_history_key(m, k), v + k * ne, ne) < 0) {
            fprintf(stderr, "%s\n", nnl_last_error());
            exit(1);
        }
    }
    printf("\n");
    for (e = 0; e < ne; e++) {
        printf("%5d", e + 1);
        for (k = 0; k < nk; k++) printf(" %14.4f", v[k * ne + e]);
        printf("\n");
    }
    free(v);
}

#endif /* NNL_EXAMPLES_COMMON_H */
