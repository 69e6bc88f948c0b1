/* libFuzzer target for the word-corpus loader: see fuzz_targets.hpp. */
#include "../nnlite.cpp"
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::one_words(data, size);
    return 0;
}
