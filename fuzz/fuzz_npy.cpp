/* libFuzzer target for the npy loader: see fuzz_targets.hpp. */
#include "../nnlite.cpp"
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::one_npy(data, size);
    return 0;
}
