/* Shared by the libFuzzer targets in fuzz/: each target compiles nnlite.cpp
   in (as tests/unit.cpp does) and feeds the fuzzer's bytes to a loader's
   internal from-memory entry point, the code the public loader runs after
   reading the file. Build with `make fuzz` (clang, -fsanitize=fuzzer,address,
   undefined), run with `make fuzz-run` or scripts/fuzz_run.sh.

   A target aborts (which libFuzzer reports as a crash) when a loader
   - returns NNL_ERR_INTERNAL (an exception nnlite did not mean to throw) or
     NNL_ERR_MEMORY (the inputs are a few KiB: nothing should need that much),
   - fails without a message, or
   - succeeds with an array whose shape and size disagree.
   Every element of a loaded array is read, so ASan sees a short buffer. */
#include "../nnlite.cpp"

namespace fuzz {

[[noreturn]] inline void fail(const char *what, int status) {
    fprintf(stderr, "fuzz: %s (status %s): %s\n", what, nnl_status_string(status), nnl_last_error());
    abort();
}

/* Checks a status: false for a clean failure, true for NNL_OK. */
inline bool ok(int status) {
    if (status == NNL_ERR_INTERNAL || status == NNL_ERR_MEMORY) fail("loader failed badly", status);
    if (status == NNL_OK) return true;
    if (!*nnl_last_error()) fail("failure without a message", status);
    return false;
}

/* Checks a loader's outcome as described above. */
inline void check(int status, const nnl_array *a) {
    if (!ok(status)) return;
    if (!a || !a->data) fail("NNL_OK without an array", status);
    if (a->dtype != NNL_FLOAT32 && a->dtype != NNL_INT64) fail("bad result dtype", status);
    if (a->rank < 0 || a->rank > NNL_MAX_RANK) fail("bad result rank", status);
    int64_t count = 1;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] < 0) fail("negative dimension", status);
        if (a->shape[i] == 0) count = 0;
    }
    for (int i = 0; i < a->rank && count; i++)
        if (__builtin_mul_overflow(count, a->shape[i], &count)) fail("shape product overflows", status);
    if (count != a->size) fail("size is not the product of the shape", status);
    volatile uint8_t sink = 0;
    const uint8_t *p = (const uint8_t *)a->data;
    const size_t bytes = (size_t)a->size * nnl::dtype_size(a->dtype);
    for (size_t i = 0; i < bytes; i++) sink = sink ^ p[i];
    (void)sink;
}

/* nnl::guard(f) with the last-error message cleared first, so a failure
   that leaves no message of its own is seen. */
template <class F> int run(F &&f) {
    nnl::g_last_error.clear();
    return nnl::guard(f);
}

/* The three result types a caller can ask for. */
constexpr int kWants[3] = {0, NNL_FLOAT32, NNL_INT64};

} // namespace fuzz
