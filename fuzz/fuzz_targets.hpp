/* The bodies of the libFuzzer targets in fuzz/, one function per loader,
   each fed one input. Include it after nnlite.cpp: the fuzz targets
   (fuzz_*.cpp) and the unit tests (tests/unit_fuzz.hpp, which replays the
   seed corpus and every input in fuzz/regressions/) both do.

   A target calls fuzz::on_fail (default: abort, which libFuzzer reports as a
   crash) when a loader
   - returns NNL_ERR_INTERNAL (an exception nnlite did not mean to throw) or
     NNL_ERR_MEMORY (the inputs are a few KiB: nothing should need that much),
   - fails without a message, or
   - succeeds with an array whose shape, size or dtype are wrong.
   Every byte of a loaded array is read, so ASan sees a short buffer; the
   sanitizers themselves catch reads out of bounds, overflows and leaks. */
#ifndef NNL_FUZZ_TARGETS_HPP
#define NNL_FUZZ_TARGETS_HPP

namespace fuzz {

inline void (*on_fail)(const char *msg) = [](const char *msg) {
    fprintf(stderr, "fuzz: %s\n", msg);
    abort();
};

inline void fail(const char *what, int status) {
    std::string msg = std::string(what) + " (status " + nnl_status_string(status) + "): " + nnl_last_error();
    on_fail(msg.c_str());
}

/* Checks a status: false for a clean failure, true for NNL_OK. */
inline bool ok(int status) {
    if (status == NNL_ERR_INTERNAL || status == NNL_ERR_MEMORY) fail("loader failed badly", status);
    if (status == NNL_OK) return true;
    if (!*nnl_last_error()) fail("failure without a message", status);
    return false;
}

/* Checks a loader's outcome as described above; true for a good array. */
inline bool check(int status, const nnl_array *a) {
    if (!ok(status)) return false;
    if (!a || !a->data) return fail("NNL_OK without an array", status), false;
    if (a->dtype != NNL_FLOAT32 && a->dtype != NNL_INT64) return fail("bad result dtype", status), false;
    if (a->rank < 0 || a->rank > NNL_MAX_RANK) return fail("bad result rank", status), false;
    int64_t count = 1;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] < 0) return fail("negative dimension", status), false;
        if (a->shape[i] == 0) count = 0;
    }
    for (int i = 0; i < a->rank && count; i++)
        if (__builtin_mul_overflow(count, a->shape[i], &count)) return fail("shape product overflows", status), false;
    if (count != a->size) return fail("size is not the product of the shape", status), false;
    volatile uint8_t sink = 0;
    const uint8_t *p = (const uint8_t *)a->data;
    const size_t bytes = (size_t)a->size * nnl::dtype_size(a->dtype);
    for (size_t i = 0; i < bytes; i++) sink = sink ^ p[i];
    (void)sink;
    return true;
}

/* nnl::guard(f) with the last-error message cleared first, so a failure
   that leaves no message of its own is seen. */
template <class F> int run(F &&f) {
    nnl::g_last_error.clear();
    return nnl::guard(f);
}

/* The three result types a caller can ask for. */
constexpr int kWants[3] = {0, NNL_FLOAT32, NNL_INT64};

/* Each returns how many arrays loaded (out of the result types tried, and
   for npz the members): the seed-corpus test wants at least one. */

/* idx, plain or gzip (nnl_load_idx, nnl_load_mnist's folders). */
inline int one_idx(const uint8_t *data, size_t size) {
    int good = 0;
    for (int want : kWants) {
        std::vector<uint8_t> f(data, data + size);
        nnl::io::ArrayPtr a;
        int st = run([&] { a = nnl::io::load_idx_bytes(f, want, "'fuzz.idx'"); });
        good += check(st, a.get());
    }
    return good;
}

/* .npy (nnl_load_npy, and each npz member once unzipped). */
inline int one_npy(const uint8_t *data, size_t size) {
    int good = 0;
    for (int want : kWants) {
        /* a copy of exactly `size` bytes, so ASan sees a read past the end */
        std::vector<uint8_t> f(data, data + size);
        nnl::io::ArrayPtr a;
        int st = run([&] { a = nnl::io::parse_npy(f.data(), f.size(), want, "'fuzz.npy'"); });
        good += check(st, a.get());
    }
    return good;
}

/* .npz (nnl_load_npz, nnl_load_mnist's .npz): the zip directory (zip64
   included), each member's local header, stored and deflated data, CRC-32,
   then the member's .npy; the first 8 members. */
inline int one_npz(const uint8_t *data, size_t size) {
    const std::vector<uint8_t> f(data, data + size);
    std::unique_ptr<nnl::io::Zip> zip;
    int st = run([&] { zip.reset(new nnl::io::Zip(f, "fuzz.npz")); });
    if (!ok(st)) return 0;
    (void)zip->keys();
    (void)zip->find("x_train");
    int good = 0;
    const auto &members = zip->members();
    for (size_t i = 0; i < members.size() && i < 8; i++)
        for (int want : kWants) {
            nnl::io::ArrayPtr a;
            st = run([&] { a = zip->load(members[i], want); });
            good += check(st, a.get());
        }
    return good;
}

} // namespace fuzz

#endif
