/* libFuzzer target for Keras' own model files (.keras zips and .h5, read by
   nnl_load_model, written back by nnl_save_model): see fuzz_targets.hpp.
   Built with HDF5 (-DNNL_HDF5), only where make finds it. */
#include "../nnlite.cpp"
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::one_keras(data, size);
    return 0;
}
