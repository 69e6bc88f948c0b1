/* libFuzzer target: .npz archives (nnl_load_npz, nnl_load_mnist's .npz):
   the zip directory (zip64 included), each member's local header, stored
   and deflated data, CRC-32, then the member's .npy. See fuzz_common.hpp. */
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::vector<uint8_t> f(data, data + size);
    std::unique_ptr<nnl::io::Zip> zip;
    int st = fuzz::run([&] { zip.reset(new nnl::io::Zip(f, "fuzz.npz")); });
    if (!fuzz::ok(st)) return 0;
    (void)zip->keys();
    (void)zip->find("x_train");
    const auto &members = zip->members();
    for (size_t i = 0; i < members.size() && i < 8; i++)
        for (int want : fuzz::kWants) {
            nnl::io::ArrayPtr a;
            st = fuzz::run([&] { a = zip->load(members[i], want); });
            fuzz::check(st, a.get());
        }
    return 0;
}
