/* libFuzzer target: .npy images (nnl_load_npy, and each npz member after
   unzipping). See fuzz_common.hpp. */
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int want : fuzz::kWants) {
        /* a copy of exactly `size` bytes, so ASan sees a read past the end */
        std::vector<uint8_t> f(data, data + size);
        nnl::io::ArrayPtr a;
        int st = fuzz::run([&] { a = nnl::io::parse_npy(f.data(), f.size(), want, "'fuzz.npy'"); });
        fuzz::check(st, a.get());
    }
    return 0;
}
