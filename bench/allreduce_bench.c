/* allreduce_bench.c - the time of one gradient allreduce as nnlite's
   data-parallel training makes it (MPI_Allreduce, MPI_SUM of floats, in
   place), for the gradient sizes of the thesis' models: T-LENET (431,080
   floats), T-PTB (4,651,600) and a few sizes between, among them one of
   nnlite's buckets (NNL_MPI_BUCKET_MB 4 = 1,048,576 floats).

   Per size: 3 warm-up calls, then 20 timed ones, each started together
   (MPI_Barrier) and taken as the slowest rank's time (the reduction is
   done when the last rank has it); the median of the 20 is printed with
   the algorithm bandwidth (bytes / time, as nccl-tests and the OSU
   benchmarks call it) and the bus bandwidth (algbw * 2 (N - 1) / N: what
   each rank's link carries in a ring allreduce). Rank 0 prints a table
   and one line per size for scripts:
     RESULT ranks=N n=FLOATS bytes=B median_s=S algbw_GBps=X busbw_GBps=Y

   Built only with MPI: make MPI=1 build-mpi/allreduce_bench, then
     mpirun -np 2 build-mpi/allreduce_bench [--reps R] [--warmup W] [N ...]
   (N ...: the sizes in floats instead of the default ones). */
#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(int rank, const char *why) {
    if (rank == 0) {
        if (why) fprintf(stderr, "allreduce_bench: %s\n", why);
        fprintf(why ? stderr : stdout, "usage: allreduce_bench [--reps R (20)] [--warmup W (3)] [N floats ...]\n");
    }
    return why ? 2 : 0;
}

int main(int argc, char **argv) {
    static const long kDefault[] = {431080, 1048576, 2097152, 3145728, 4651600};
    long sizes[64];
    double meds[64];
    int nsizes = 0, reps = 20, warmup = 3, rank = 0, ranks = 1, i, k, rc = -1;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    for (i = 1; i < argc && rc < 0; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            rc = usage(rank, NULL);
        } else if (!strcmp(argv[i], "--reps") || !strcmp(argv[i], "--warmup")) {
            int is_reps = !strcmp(argv[i], "--reps");
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || !end || *end || v < (is_reps ? 1 : 0) || v > 100000)
                rc = usage(rank, is_reps ? "--reps needs a whole number >= 1" : "--warmup needs a whole number >= 0");
            else if (is_reps)
                reps = (int)v, i++;
            else
                warmup = (int)v, i++;
        } else if (argv[i][0] != '-' && strtol(argv[i], &end, 10) > 0 && end && !*end && nsizes < 64) {
            sizes[nsizes++] = strtol(argv[i], NULL, 10);
        } else {
            rc = usage(rank, "unknown option or not a positive size");
        }
    }
    if (rc >= 0) {
        MPI_Finalize();
        return rc;
    }
    if (nsizes == 0) {
        nsizes = (int)(sizeof kDefault / sizeof kDefault[0]);
        memcpy(sizes, kDefault, sizeof kDefault);
    }
    long most = 0;
    for (k = 0; k < nsizes; k++)
        if (sizes[k] > most) most = sizes[k];
    float *buf = (float *)malloc(sizeof(float) * (size_t)most);
    double *t = (double *)malloc(sizeof(double) * (size_t)reps);
    if (!buf || !t) {
        fprintf(stderr, "allreduce_bench: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0)
        printf("MPI_Allreduce(MPI_IN_PLACE, float, MPI_SUM) on %d rank(s): median of %d after %d warm-up(s)\n"
               "%12s %12s %12s %12s %12s\n",
               ranks, reps, warmup, "floats", "bytes", "median s", "algbw GB/s", "busbw GB/s");
    for (k = 0; k < nsizes; k++) {
        long n = sizes[k];
        /* small values: sums of a few ranks stay finite and exact enough */
        for (i = 0; i < (int)n; i++) buf[i] = (float)((i + rank) % 7) * 1e-3f;
        for (i = 0; i < warmup + reps; i++) {
            double t0, mine, slowest = 0;
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            mine = MPI_Wtime() - t0;
            MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (i >= warmup) t[i - warmup] = slowest;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
        double bytes = 4.0 * (double)n, alg = med > 0 ? bytes / med / 1e9 : 0;
        double bus = ranks > 1 ? alg * 2.0 * (ranks - 1) / ranks : 0;
        if (rank == 0) {
            printf("%12ld %12.0f %12.6f %12.3f %12.3f\n", n, bytes, med, alg, bus);
            fflush(stdout);
        }
        meds[k] = med;
    }
    for (k = 0; k < nsizes && rank == 0; k++) {
        double bytes = 4.0 * (double)sizes[k], alg = meds[k] > 0 ? bytes / meds[k] / 1e9 : 0;
        printf("RESULT ranks=%d n=%ld bytes=%.0f median_s=%.6g algbw_GBps=%.4f busbw_GBps=%.4f\n", ranks, sizes[k],
               bytes, meds[k], alg, ranks > 1 ? alg * 2.0 * (ranks - 1) / ranks : 0);
    }
    free(buf);
    free(t);
    MPI_Finalize();
    return 0;
}
