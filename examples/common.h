/* common.h - what the nnlite examples share: the command line, finding the
   data, error checks, and printing results. C99; include it first (it asks
   for POSIX clock_gettime before any system header is read).

   Command line of every data example:
       prog [data path] [--epochs N] [--batch N] [--threads N] [--seed N]
   The data path is a folder with the four MNIST-style idx files (.gz or not)
   or a Keras .npz file; without one the usual places are searched. */
#ifndef NNL_EXAMPLES_COMMON_H
#define NNL_EXAMPLES_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    int seed; /* 0: the example's own (42); weights, shuffling and dropout follow it */
} ex_args;

/* Parses the command line; epochs and batch are the example's defaults.
   --threads sets nnl_set_threads; --seed the model seed (ex_seed). Bad
   arguments print the usage and exit 2. */
static inline ex_args ex_parse_args(int argc, char **argv, int epochs, int batch) {
    ex_args a;
    int i;
    a.data = NULL;
    a.epochs = epochs;
    a.batch = batch;
    a.threads = 0;
    a.seed = 0;
    for (i = 1; i < argc; i++) {
        int *opt = !strcmp(argv[i], "--epochs")    ? &a.epochs
                   : !strcmp(argv[i], "--batch")   ? &a.batch
                   : !strcmp(argv[i], "--threads") ? &a.threads
                   : !strcmp(argv[i], "--seed")    ? &a.seed
                                                   : NULL;
        if (opt && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            *opt = atoi(argv[++i]);
        } else if (!opt && argv[i][0] != '-' && !a.data) {
            a.data = argv[i];
        } else {
            fprintf(stderr, "usage: %s [data path] [--epochs N (%d)] [--batch N (%d)]"
                            " [--threads N] [--seed N]\n", argv[0], epochs, batch);
            exit(2);
        }
    }
    if (a.threads > 0) CHECK(nnl_set_threads(a.threads));
    return a;
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
    static const char *const mnist[] = {"./data/mnist", "../shared/data/mnist",
                                        "~/.keras/datasets/mnist.npz", "/usr/share/datasets/mnist"};
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
            "  MNIST: the four idx .gz files from http://yann.lecun.com/exdb/mnist/ (in one\n"
            "    folder) or Keras' mnist.npz; pass the folder or file as the first argument.\n"
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
