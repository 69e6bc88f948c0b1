/* The bodies of the libFuzzer targets in fuzz/, one function per loader,
   each fed one input. Include it after nnlite.cpp: the fuzz targets
   (fuzz_*.cpp) and the unit tests (tests/unit_fuzz.hpp, which replays the
   seed corpus and every input in fuzz/regressions/) both do.

   A target calls fuzz::on_fail (default: abort, which libFuzzer reports as a
   crash) when a loader
   - returns NNL_ERR_INTERNAL (an exception nnlite did not mean to throw), or
     NNL_ERR_MEMORY from a failed allocation ("out of memory": the inputs are
     a few KiB, nothing should need that much; NNL_ERR_MEMORY for a size
     refused by a check, with its own message, is a clean failure),
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
    if (status == NNL_ERR_INTERNAL || (status == NNL_ERR_MEMORY && !strcmp(nnl_last_error(), "out of memory")))
        fail("loader failed badly", status);
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

/* ---- Model files (nnl_model_from_json, nnl_load_model, nnl_load_weights,
   nnl_load_weights_npz): through the public functions. ---- */

/* A file holding the input, for the loaders that take a path: one per
   process, in /dev/shm when there is one (TMPDIR, else /tmp, otherwise),
   removed at exit. */
inline std::string input_file(const uint8_t *data, size_t size) {
    static std::string path;
    if (path.empty()) {
        const char *t = getenv("TMPDIR");
        std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : t && *t ? t : "/tmp";
        path = dir + "/nnl_fuzz_" + std::to_string((long)getpid());
        atexit([] { remove(path.c_str()); });
    }
    FILE *f = fopen(path.c_str(), "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        on_fail("cannot write the input file");
        return path;
    }
    return path;
}

/* The architecture of the model-file seeds (fuzz/make_model_corpus.cpp),
   which the weight loaders load into. */
inline const char *const kSeedLayers[] = {"Dense(4, activation='relu', input_shape=(3,))", "BatchNormalization()",
                                          "Dense(2, activation='softmax')"};

inline nnl_model *seed_model() {
    nnl_model *m = nnl_model_create();
    for (const char *spec : kSeedLayers)
        if (nnl_add(m, spec) != NNL_OK) on_fail(nnl_last_error());
    return m;
}

/* The JSON of m, or "" (after on_fail) when it cannot be written. */
inline std::string json_of(const nnl_model *m) {
    int64_t n = nnl_model_to_json(m, nullptr, 0);
    if (n < 0) return fail("to_json of a loaded model failed", NNL_ERR_INTERNAL), std::string();
    std::string s((size_t)n + 1, '\0');
    if (nnl_model_to_json(m, &s[0], n + 1) != n) return fail("to_json changed its length", NNL_ERR_INTERNAL), std::string();
    s.resize((size_t)n);
    return s;
}

/* What a loaded model must allow: its JSON reads back to the same JSON,
   and (when its input and output are small) a prediction on zeros. */
inline void use_model(nnl_model *m) {
    std::string j = json_of(m);
    nnl_model *back = nullptr;
    int st = run([&] { return nnl_model_from_json(j.c_str(), &back); });
    if (st != NNL_OK) fail("the JSON of a loaded model does not load", st);
    else if (json_of(back) != j) fail("to_json(from_json(to_json(m))) != to_json(m)", NNL_OK);
    nnl_model_free(back);
    int64_t in[NNL_MAX_RANK + 1] = {1}, out[NNL_MAX_RANK + 1] = {1};
    int ri = nnl_input_shape(m, in + 1), ro = nnl_output_shape(m, out + 1);
    if (ri < 0 || ro < 0) return;
    int64_t ni = 1, no = 1;
    for (int i = 1; i <= ri; i++) ni = in[i] > 0 && ni <= 4096 ? ni * in[i] : 1 << 30;
    for (int i = 1; i <= ro; i++) no = out[i] > 0 && no <= 4096 ? no * out[i] : 1 << 30;
    if (ni > 4096 || no > 4096 || nnl_param_count(m) > (1 << 20)) return;
    std::vector<float> x((size_t)ni, 0.0f), y((size_t)no);
    st = run([&] { return nnl_predict(m, x.data(), ri + 1, in, 1, y.data(), no); });
    ok(st);
}

/* Keras JSON architectures. */
inline int one_json(const uint8_t *data, size_t size) {
    std::string text((const char *)data, size); /* NUL-terminated, as the function wants */
    nnl_model *m = nullptr;
    int st = run([&] { return nnl_model_from_json(text.c_str(), &m); });
    if (!ok(st)) return 0;
    use_model(m);
    nnl_model_free(m);
    return 1;
}

/* nnlite's binary files. The header and metadata carry CRC-32s, which
   random changes almost never keep right: for inputs that start with the
   magic number, the file-size field and both checksums are set to match the
   input first (unless the input's last byte is odd), so the fuzzer reaches
   the metadata JSON and the tensor table; the tensors' own CRC-32s stay as
   the input has them. Then: nnl_load_model, and nnl_load_weights into the
   seeds' architecture. */
inline int one_model(const uint8_t *data, size_t size) {
    std::vector<uint8_t> b(data, data + size);
    const size_t H = nnl::files::HEADER;
    if (size >= H && !memcmp(data, nnl::files::MAGIC, 8) && !(data[size - 1] & 1)) {
        auto put32 = [&](size_t at, uint32_t v) { for (int i = 0; i < 4; i++) b[at + i] = (uint8_t)(v >> (8 * i)); };
        for (int i = 0; i < 8; i++) b[24 + i] = (uint8_t)((uint64_t)size >> (8 * i));
        const uint64_t msize = nnl::io::rd64le(b.data() + 40);
        if (msize <= size - H) put32(48, nnl::io::crc32(b.data() + H, (size_t)msize));
        put32(60, nnl::io::crc32(b.data(), 60));
    }
    const std::string path = input_file(b.data(), b.size());
    int good = 0;
    nnl_model *m = nullptr;
    int st = run([&] { return nnl_load_model(path.c_str(), &m); });
    if (ok(st)) {
        good++;
        use_model(m);
    }
    nnl_model_free(m);
    nnl_model *w = seed_model();
    st = run([&] { return nnl_load_weights(w, path.c_str()); });
    good += ok(st);
    nnl_model_free(w);
    return good;
}

/* Weights as .npz, into the seeds' architecture. */
inline int one_weights_npz(const uint8_t *data, size_t size) {
    const std::string path = input_file(data, size);
    nnl_model *w = seed_model();
    int st = run([&] { return nnl_load_weights_npz(w, path.c_str()); });
    nnl_model_free(w);
    return ok(st);
}

/* Word corpora (nnl_text_vocab, nnl_load_words): the vocabulary of the
   bytes, the bytes mapped with it, and the bytes under a vocabulary without
   "<unk>" (an unknown word is a clean error), then language-model windows
   of the ids. Ids must lie in [0, vocabulary size). */
inline int one_words(const uint8_t *data, size_t size) {
    const std::vector<uint8_t> f(data, data + size);
    std::unique_ptr<nnl_vocab> v;
    int st = run([&] { v = nnl::text::build_vocab(f, "fuzz.txt"); });
    if (!ok(st)) return 0;
    if (!v || v->words.empty() || v->words.size() != v->index.size()) return fail("bad vocabulary", st), 0;
    for (size_t i = 0; i < v->words.size(); i++)
        if (v->words[i].empty() || v->index.at(v->words[i]) != (int32_t)i) return fail("bad vocabulary", st), 0;
    int good = 0;
    nnl_vocab small; /* the first word alone, no <unk> unless it is that word */
    small.words.push_back(v->words[0]);
    small.index.emplace(v->words[0], 0);
    small.unk = v->words[0] == "<unk>" ? 0 : -1;
    for (const nnl_vocab *voc : {(const nnl_vocab *)v.get(), (const nnl_vocab *)&small}) {
        nnl::io::ArrayPtr a;
        st = run([&] { a = nnl::text::word_ids(f, "fuzz.txt", *voc); });
        if (!ok(st)) continue;
        if (!a || a->dtype != NNL_INT32 || a->rank != 1) return fail("bad ids", st), good;
        const int32_t *p = (const int32_t *)a->data;
        for (int64_t i = 0; i < a->size; i++)
            if (p[i] < 0 || p[i] >= (int64_t)voc->words.size()) return fail("id out of range", st), good;
        nnl_array *x = nullptr, *y = nullptr;
        st = nnl_lm_windows(p, a->size, 2, 3, &x, &y);
        if (ok(st) && (!x || !y || x->size != y->size)) fail("bad windows", st);
        nnl_array_free(x);
        nnl_array_free(y);
        good++;
    }
    return good;
}

/* An image file (nnl_load_image, nnl_image_dataset_from_directory): as
   stored and in each colour mode, and once resized; values must stay in
   0..255 and the shape be (h, w, channels). At most 2^20 pixels, so a
   header claiming a huge image is refused before stb decodes it (the
   library's default cap, 2^28, is beyond libFuzzer's memory limit). */
inline int one_image(const uint8_t *data, size_t size) {
    int good = 0;
    for (int channels = 0; channels <= 4; channels++) {
        nnl::img::Image im;
        int st = run([&] { im = nnl::img::decode(data, size, channels, "fuzz.img", (int64_t)1 << 20); });
        if (!ok(st)) continue;
        if (im.h < 1 || im.w < 1 || im.c < 1 || im.c > 4 || (channels && im.c != channels) ||
            im.px.size() != (size_t)im.h * im.w * im.c)
            return fail("bad image shape", st), good;
        for (float v : im.px)
            if (!(v >= 0 && v <= 255)) return fail("pixel value out of 0..255", st), good;
        if (channels == 1) {
            st = run([&] { nnl::img::resize(im, 3, 5); });
            if (!ok(st) || im.px.size() != 15) return fail("resize failed", st), good;
            for (float v : im.px)
                if (!(v >= -1e-3f && v <= 255.001f)) return fail("resized value out of 0..255", st), good;
        }
        good++;
    }
    return good;
}

/* ---- Keras' own files (nnl_load_model of .keras and .h5; fuzz_keras) ----
   The input is the file, loaded by content as nnl_load_model does. A
   .keras is a zip whose central directory carries each member's CRC-32,
   which random changes almost never keep right: for zip inputs the stored
   members' CRC-32s are set to match first (unless the input's last byte is
   odd), so the fuzzer reaches config.json and model.weights.h5. Changes of
   length inside a zip break its offsets, so an input that starts with '{'
   is a config.json instead: it is zipped into a .keras with the
   model.weights.h5 nnlite writes for the seeds' architecture
   (kSeedLayers), and any mutation of the JSON reaches the .keras reader
   (architecture, compile_config, the pairing of layers with weights). A model
   that loads must allow what use_model does, and nnl_save_model must write
   it as .keras and as .h5 (or refuse cleanly) so that it loads back with
   the same layers and weights, bit for bit. Bytes HDF5 parses (an .h5
   file, the model.weights.h5 member) reach the HDF5 library, which nnlite
   trusts to parse what it opens (nnlite.cpp, section 8): a crash whose
   stack lies inside libhdf5 is HDF5's own (fuzz/RESULTS.md says what to do
   with one). Without HDF5 (no -DNNL_HDF5) every Keras file is a clean
   NNL_ERR_UNSUPPORTED and nothing loads. */

/* The stored members' CRC-32s in the central directory of the zip in b,
   recomputed from the data (what Zip::member checks); anything that does
   not parse is left as it is. */
inline void fix_zip_crcs(std::vector<uint8_t> &b) {
    using nnl::io::rd16le;
    using nnl::io::rd32le;
    const size_t n = b.size();
    if (n < 22) return;
    uint8_t *p = b.data();
    size_t eocd = SIZE_MAX; /* as Zip finds it: the last record whose comment fits */
    for (size_t pos = n - 22 + 1, lo = n - 22 > 65535 ? n - 22 - 65535 : 0; pos-- > lo;)
        if (rd32le(p + pos) == 0x06054B50 && pos + 22 + rd16le(p + pos + 20) <= n) {
            eocd = pos;
            break;
        }
    if (eocd == SIZE_MAX) return;
    const uint64_t count = rd16le(p + eocd + 10);
    size_t at = rd32le(p + eocd + 16);
    for (uint64_t i = 0; i < count && at <= eocd && eocd - at >= 46; i++) {
        uint8_t *h = p + at;
        if (rd32le(h) != 0x02014B50) return;
        const uint64_t csize = rd32le(h + 20), off = rd32le(h + 42);
        if (rd16le(h + 10) == 0 && off <= n && n - off >= 30 && rd32le(p + off) == 0x04034B50) {
            const size_t data = (size_t)off + 30 + rd16le(p + off + 26) + rd16le(p + off + 28);
            if (data <= n && csize <= n - data) {
                const uint32_t crc = nnl::io::crc32(p + data, (size_t)csize);
                for (int k = 0; k < 4; k++) h[16 + k] = (uint8_t)(crc >> (8 * k));
            }
        }
        at += 46 + (size_t)rd16le(h + 28) + rd16le(h + 30) + rd16le(h + 32);
    }
}

/* A path in the input file's folder ending in suffix (nnl_save_model picks
   the format by the ending); the caller removes the file. */
inline std::string output_file(const char *suffix) {
    const char *t = getenv("TMPDIR");
    std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : t && *t ? t : "/tmp";
    return dir + "/nnl_fuzz_" + std::to_string((long)getpid()) + "_out" + suffix;
}

/* m written as suffix (".keras" or ".h5") and read back: the same layers,
   names and weights. A clean refusal to write is allowed. Models whose
   JSON exceeds 48 KiB are not written: the .h5 writer puts model_config
   into one HDF5 attribute, and HDF5 (default file format) refuses an
   attribute over 64 KiB; that limit is Keras' too and is noted in
   fuzz/RESULTS.md rather than found again on every run. */
inline void write_back(nnl_model *m, const char *suffix) {
    if (json_of(m).size() > 48 * 1024) return;
    const std::string out = output_file(suffix);
    int st = run([&] { return nnl_save_model(m, out.c_str()); });
    if (!ok(st)) {
        remove(out.c_str());
        return;
    }
    nnl_model *back = nullptr;
    st = run([&] { return nnl_load_model(out.c_str(), &back); });
    remove(out.c_str());
    if (st != NNL_OK) {
        fail(suffix[1] == 'k' ? "a model nnl_save_model wrote as .keras does not load back"
                              : "a model nnl_save_model wrote as .h5 does not load back", st);
        nnl_model_free(back);
        return;
    }
    bool same = back && back->layers.size() == m->layers.size();
    for (size_t l = 0; same && l < m->layers.size(); l++) {
        const auto &a = *m->layers[l], &c = *back->layers[l];
        same = a.name == c.name && a.weights.size() == c.weights.size();
        for (size_t k = 0; same && k < a.weights.size(); k++)
            same = a.weights[k].shape == c.weights[k].shape &&
                   !memcmp(a.weights[k].w, c.weights[k].w, (size_t)a.weights[k].shape.size() * sizeof(float));
    }
    if (!same) fail(suffix[1] == 'k' ? "a model written as .keras reads back with other layers or weights"
                                     : "a model written as .h5 reads back with other layers or weights", NNL_OK);
    nnl_model_free(back);
}

#ifdef NNL_HDF5
/* The model.weights.h5 member of the seeds' architecture (kSeedLayers,
   weights from seed 1) as nnlite writes it into a .keras. */
inline const std::string &seed_weights_h5() {
    static const std::string h5 = [] {
        nnl_model *m = nnl_model_create(); /* seed_model's, with weights that are the same every run */
        nnl_model_set_seed(m, 1);
        for (const char *spec : kSeedLayers)
            if (nnl_add(m, spec) != NNL_OK) on_fail(nnl_last_error());
        std::string bytes;
        int st = run([&] { bytes = nnl::files::keras_zip_bytes(*m); });
        nnl_model_free(m);
        if (st != NNL_OK) return fail("the seeds' model cannot be written as .keras", st), std::string();
        const std::vector<uint8_t> zip(bytes.begin(), bytes.end());
        nnl::io::Zip z(zip, "seed.keras");
        std::vector<uint8_t> store;
        auto w = z.member(*z.find("model.weights.h5"), store);
        return std::string((const char *)w.first, w.second);
    }();
    return h5;
}
#endif

/* A Keras file (or a config.json, see above): loaded, used, written both
   ways and read back. */
inline int one_keras(const uint8_t *data, size_t size) {
    std::vector<uint8_t> b(data, data + size);
    if (size && data[0] == '{') {
#ifdef NNL_HDF5
        std::string zip = nnl::files::zip_stored({{"metadata.json", "{\"keras_version\": \"3.6.0\"}"},
                                                  {"config.json", std::string((const char *)data, size)},
                                                  {"model.weights.h5", seed_weights_h5()}});
        b.assign(zip.begin(), zip.end());
#else
        return 0; /* nothing to wrap it with: a .keras would be NNL_ERR_UNSUPPORTED */
#endif
    } else if (size >= 4 && !memcmp(data, "PK\x03\x04", 4) && !(data[size - 1] & 1)) {
        fix_zip_crcs(b);
    }
    const std::string path = input_file(b.data(), b.size());
    nnl_model *m = nullptr;
    int st = run([&] { return nnl_load_model(path.c_str(), &m); });
    if (!ok(st)) return 0;
    if (!m) return fail("NNL_OK without a model", st), 0;
    use_model(m);
    write_back(m, ".keras");
    write_back(m, ".h5");
    nnl_model_free(m);
    return 1;
}

} // namespace fuzz

#endif
