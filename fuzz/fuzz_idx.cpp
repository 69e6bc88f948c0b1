/* libFuzzer target: idx files, plain or gzip (nnl_load_idx, nnl_load_mnist's
   folders). See fuzz_common.hpp. */
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int want : fuzz::kWants) {
        std::vector<uint8_t> f(data, data + size);
        nnl::io::ArrayPtr a;
        int st = fuzz::run([&] { a = nnl::io::load_idx_bytes(f, want, "'fuzz.idx'"); });
        fuzz::check(st, a.get());
    }
    return 0;
}
