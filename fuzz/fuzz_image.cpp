/* libFuzzer target for the image decoders (stb_image behind nnlite's checks):
   see fuzz_targets.hpp. */
#include "../nnlite.cpp"
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::one_image(data, size);
    return 0;
}
