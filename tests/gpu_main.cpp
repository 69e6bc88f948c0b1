/* The GPU test suite (make CUDA=1 gpu-tests): every CUDA kernel against the
   CPU kernel table on fresh random inputs, and whole models trained on the
   GPU against the same models on the CPU. Like unit.cpp it compiles
   nnlite.cpp (with -DNNL_CUDA) into itself to reach the internals.

   Where no CUDA device is present it runs only the "no GPU" cases, prints
   "GPU tests skipped: no CUDA device" and passes. */
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "../nnlite.cpp"

#include "gpu_kernels.hpp"
#include "gpu_models.hpp"
#include "gpu_graphs.hpp"
#include "gpu_timing.hpp"
#include "gpu_errors.hpp"

int main(int argc, char **argv) {
    doctest::Context ctx(argc, argv);
    int n = nnl_cuda_device_count();
    if (n == 0) {
        ctx.addFilter("test-case", "no GPU*");
        int rc = ctx.run();
        printf("GPU tests skipped: no CUDA device (nnl_cuda_device_count() == 0). The CUDA backend was compiled and "
               "linked; only the no-GPU behaviour was checked.\n");
        return rc;
    }
    char name[256];
    nnl_cuda_device_name(0, name, sizeof name);
    printf("GPU tests on cuda:0: %s (%d device%s)\n", name, n, n > 1 ? "s" : "");
    return ctx.run();
}
