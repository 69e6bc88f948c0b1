/* The fuzz targets' bodies (fuzz/fuzz_targets.hpp) on the committed inputs:
   every seed in fuzz/corpus/<target>/ must load (it is a valid file; for
   fuzz_keras, in a build with HDF5), and
   every input in fuzz/regressions/<target>/ (once a crash) must fail or load
   cleanly. make test also runs this under ASan + UBSan (check-sanitize). */
#include <filesystem>
#include <stdexcept>

#include "../fuzz/fuzz_targets.hpp"

namespace {

std::vector<std::filesystem::path> fuzz_inputs(const char *folder, const char *target) {
    namespace fs = std::filesystem;
    fs::path root = fs::path(__FILE__).parent_path().parent_path() / "fuzz";
    std::vector<fs::path> files;
    fs::path dir = root / folder / target;
    if (fs::is_directory(dir))
        for (const auto &e : fs::directory_iterator(dir))
            if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

std::vector<uint8_t> fuzz_bytes(const std::filesystem::path &p) {
    std::vector<uint8_t> b;
    nnl::read_file(p.string().c_str(), b);
    return b;
}

struct FuzzThrow {
    void (*saved)(const char *) = fuzz::on_fail;
    FuzzThrow() { fuzz::on_fail = [](const char *msg) { throw std::runtime_error(msg); }; }
    ~FuzzThrow() { fuzz::on_fail = saved; }
};

} // namespace

TEST_CASE("fuzz targets: every seed loads, every regression input is handled cleanly") {
    FuzzThrow guard;
    struct Target {
        const char *name;
        int (*one)(const uint8_t *, size_t);
        bool built = true; /* the loader is in this build (Keras files need HDF5) */
    };
    for (Target t : {Target{"fuzz_idx", fuzz::one_idx}, Target{"fuzz_npy", fuzz::one_npy},
                     Target{"fuzz_npz", fuzz::one_npz}, Target{"fuzz_json", fuzz::one_json},
                     Target{"fuzz_model", fuzz::one_model}, Target{"fuzz_weights_npz", fuzz::one_weights_npz},
                     Target{"fuzz_words", fuzz::one_words}, Target{"fuzz_image", fuzz::one_image},
                     Target{"fuzz_keras", fuzz::one_keras, NNL_HAVE_HDF5 != 0}}) {
        const std::string target = t.name;
        CAPTURE(target);
        auto seeds = fuzz_inputs("corpus", t.name);
        CHECK(seeds.size() >= 2);
        for (const auto &p : seeds) {
            CAPTURE(p.string());
            std::vector<uint8_t> b = fuzz_bytes(p);
            int good = -1;
            CHECK_NOTHROW(good = t.one(b.data(), b.size()));
            /* without stb, compressed seeds and images are unsupported; without HDF5, Keras files */
            CHECK((good >= 1 || !NNL_HAVE_STB || !t.built));
        }
        for (const auto &p : fuzz_inputs("regressions", t.name)) {
            CAPTURE(p.string());
            std::vector<uint8_t> b = fuzz_bytes(p);
            CHECK_NOTHROW(t.one(b.data(), b.size()));
        }
    }
}
