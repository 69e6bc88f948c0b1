/* Keras' own model files, .keras and .h5 (section 8): the committed fixtures
   of tests/reference/make_keras_files.py (written with h5py in Keras'
   layouts: Keras 3 .keras, tf.keras 2.x and Keras 3 legacy .h5) open with
   nnl_load_model and predict what the same weights give through
   nnl_load_weights_npz; broken files (made here with HDF5's own C API)
   fail with clear errors and never crash; without HDF5 they are
   NNL_ERR_UNSUPPORTED naming the package. Included by unit.cpp. */
#include <filesystem>

namespace keras_files {

/* tests/reference/keras/ beside this file */
static std::string dir() {
    std::string here = __FILE__;
    size_t slash = here.find_last_of('/');
    return (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/reference/keras/";
}

struct Case {
    const char *name;
    bool ids;           /* an Embedding first: inputs are token ids */
    bool zeros = false; /* a Masking first: some time steps all zero (masked) */
};
/* every layer class of the registry is in one of them (Keras writes its
   aliases under these class names) */
static const Case kCases[] = {{"mlp", false},    {"cnn", false},    {"rnns", false},   {"seq", true},
                              {"conv1d", false}, {"conv3d", false}, {"shapes", false}, {"globals", false},
                              {"masked", false, true}};
static const char *const kKinds[] = {".keras", "_tf2.h5", "_k3.h5"};

/* B samples for m, the same every run; with c.zeros, sample b's last b % 3
   time steps (padding) and, for odd b, its third are all zero */
static std::vector<float> inputs(const nnl_model *m, int B, const Case &c, std::vector<int64_t> *shape) {
    const nnl::Shape &in = m->layers[0]->in;
    shape->assign(1, B);
    for (int i = 0; i < in.rank; i++) shape->push_back(in.d[i]);
    std::vector<float> x((size_t)(B * in.size()));
    for (size_t i = 0; i < x.size(); i++)
        x[i] = c.ids ? (float)((i * 7 + 3) % 10) : (float)std::sin(0.37 * (double)i + 0.5);
    if (c.zeros) {
        REQUIRE(in.rank == 2);
        const int64_t T = in.d[0], F = in.d[1];
        for (int b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                if (t >= T - b % 3 || (t == 2 && b % 2 == 1))
                    std::fill_n(x.begin() + (b * T + t) * F, F, 0.f);
    }
    return x;
}

static std::vector<float> predict(nnl_model *m, const std::vector<float> &x, const std::vector<int64_t> &shape) {
    std::vector<float> y((size_t)(shape[0] * m->layers.back()->out.size()));
    REQUIRE_MESSAGE(nnl_predict(m, x.data(), (int)shape.size(), shape.data(), 0, y.data(), (int64_t)y.size()) ==
                        NNL_OK, nnl_last_error());
    return y;
}

[[maybe_unused]] static std::string copy_to_tmp(const std::string &src, const char *suffix) {
    std::string dst = (std::filesystem::temp_directory_path() / ("nnlite_keras_" + std::to_string(getpid()) + suffix)).string();
    std::filesystem::copy_file(src, dst, std::filesystem::copy_options::overwrite_existing);
    return dst;
}

} // namespace keras_files

TEST_CASE("keras files: nnl_has_feature(\"hdf5\") says whether this build reads them") {
    CHECK(nnl_has_feature("hdf5") == NNL_HAVE_HDF5);
}

TEST_CASE("keras files: .keras and .h5 (tf.keras 2, Keras 3) predict what the npz weights give") {
    using namespace keras_files;
    for (const Case &c : kCases)
        for (const char *kind : kKinds) {
            std::string path = dir() + c.name + kind;
            CAPTURE(path);
            REQUIRE(access(path.c_str(), R_OK) == 0);
            nnl_model *m = nullptr;
            int st = nnl_load_model(path.c_str(), &m);
            if (!NNL_HAVE_HDF5) {
                CHECK(st == NNL_ERR_UNSUPPORTED);
                CHECK(std::string(nnl_last_error()).find("libhdf5-dev") != std::string::npos);
                CHECK(m == nullptr);
                continue;
            }
            REQUIRE_MESSAGE(st == NNL_OK, nnl_last_error());
            /* the same architecture from the model's JSON, its weights from the npz */
            std::string js(nnl_model_to_json(m, nullptr, 0) + 1, '\0');
            nnl_model_to_json(m, &js[0], (int64_t)js.size());
            nnl_model *ref = nullptr;
            REQUIRE_MESSAGE(nnl_model_from_json(js.c_str(), &ref) == NNL_OK, nnl_last_error());
            std::string npz = dir() + c.name + ".npz";
            REQUIRE_MESSAGE(nnl_load_weights_npz(ref, npz.c_str()) == NNL_OK, nnl_last_error());
            REQUIRE(nnl_weight_count(m) == nnl_weight_count(ref));
            for (size_t l = 0; l < m->layers.size(); l++) /* the file's weights, bit for bit */
                for (size_t k = 0; k < m->layers[l]->weights.size(); k++) {
                    const nnl::WeightSpec &a = m->layers[l]->weights[k], &b = ref->layers[l]->weights[k];
                    REQUIRE(a.shape == b.shape);
                    CHECK(memcmp(a.w, b.w, (size_t)a.shape.size() * sizeof(float)) == 0);
                }
            std::vector<int64_t> shape;
            std::vector<float> x = inputs(m, 5, c, &shape);
            std::vector<float> y = predict(m, x, shape), yr = predict(ref, x, shape);
            REQUIRE(y.size() == yr.size());
            double worst = 0;
            for (size_t i = 0; i < y.size(); i++) worst = std::max(worst, (double)std::fabs(y[i] - yr[i]));
            CHECK(worst <= 1e-6);
            /* and the weights are not all zero: the file's were read */
            double sum = 0;
            for (auto &l : m->layers)
                for (auto &w : l->weights)
                    for (int64_t k = 0; k < w.shape.size(); k++) sum += std::fabs(w.w[k]);
            CHECK(sum > 1);
            nnl_model_free(ref);
            nnl_model_free(m);
        }
}

TEST_CASE("keras files: the .keras keys are Keras' class-based names, not the layers' names") {
    if (!NNL_HAVE_HDF5) return;
    nnl_model *m = nullptr;
    std::string path = keras_files::dir() + "cnn.keras";
    REQUIRE_MESSAGE(nnl_load_model(path.c_str(), &m) == NNL_OK, nnl_last_error());
    /* the layers keep the names config.json gives them */
    REQUIRE(m->layers.size() == 6);
    CHECK(m->layers[0]->name == "features");
    CHECK(m->layers[3]->name == "more");
    CHECK(std::string(m->layers[3]->cls) == "Conv2D");
    CHECK(nnl::snake("Conv2D") == "conv2d");
    CHECK(nnl::snake("BatchNormalization") == "batch_normalization");
    CHECK(nnl::snake("SimpleRNN") == "simple_rnn");
    CHECK(nnl::snake("MaxPooling2D") == "max_pooling2d");
    nnl_model_free(m);
}

TEST_CASE("keras files: not Keras files, and zips that are not .keras, fail clearly") {
    std::string tmp = (std::filesystem::temp_directory_path() / ("nnlite_keras_bad_" + std::to_string(getpid()))).string();
    /* an HDF5 signature and nothing after it */
    {
        FILE *f = fopen(tmp.c_str(), "wb");
        REQUIRE(f);
        fwrite("\x89HDF\r\n\x1a\n", 1, 8, f);
        fclose(f);
        nnl_model *m = nullptr;
        int st = nnl_load_model(tmp.c_str(), &m);
        CHECK(st == (NNL_HAVE_HDF5 ? NNL_ERR_FORMAT : NNL_ERR_UNSUPPORTED));
        CHECK(std::string(nnl_last_error()).find(tmp) != std::string::npos);
        CHECK(m == nullptr);
    }
    /* an npz is a zip without config.json */
    {
        nnl_model *a = nullptr;
        REQUIRE(nnl_model_from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 2, "batch_input_shape": [null, 3]}}]}})", &a) == NNL_OK);
        REQUIRE(nnl_save_weights_npz(a, tmp.c_str()) == NNL_OK);
        nnl_model_free(a);
        nnl_model *m = nullptr;
        CHECK(nnl_load_model(tmp.c_str(), &m) == NNL_ERR_FORMAT);
        CHECK(std::string(nnl_last_error()).find("without config.json") != std::string::npos);
    }
    unlink(tmp.c_str());
}

#ifdef NNL_HDF5
namespace keras_files {

/* A copy of a fixture .h5 (a temporary file, its path returned), changed
   with HDF5's C API by edit(file id). */
static std::string edited_h5(const std::string &fixture, const std::function<void(hid_t)> &edit) {
    std::string p = copy_to_tmp(dir() + fixture, ".h5");
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    edit(f);
    H5Fclose(f);
    return p;
}

/* A copy of a fixture, changed with HDF5's C API by edit(file id), then
   loaded: the status and message. */
static int load_edited(const std::string &fixture, const std::function<void(hid_t)> &edit, std::string *msg) {
    std::string p = edited_h5(fixture, edit);
    nnl_model *m = nullptr;
    int st = nnl_load_model(p.c_str(), &m);
    *msg = nnl_last_error();
    if (st != NNL_OK) CHECK(m == nullptr);
    nnl_model_free(m);
    unlink(p.c_str());
    return st;
}

static void set_text_attr(hid_t obj, const char *name, const std::string &v) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, v.size() ? v.size() : 1);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v.c_str());
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void replace_dataset(hid_t f, const char *path, hid_t type, std::vector<hsize_t> dims) {
    REQUIRE(H5Ldelete(f, path, H5P_DEFAULT) >= 0);
    hid_t s = H5Screate_simple((int)dims.size(), dims.data(), nullptr);
    hid_t d = H5Dcreate2(f, path, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(d >= 0);
    H5Dclose(d);
    H5Sclose(s);
}

} // namespace keras_files

TEST_CASE("keras files: broken .h5 contents give clear errors (missing, wrong dtype, wrong shape, bad names)") {
    using keras_files::load_edited;
    std::string msg;
    /* a dataset missing */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) { H5Ldelete(f, "model_weights/out/out/bias:0", H5P_DEFAULT); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("'out/bias:0'") != std::string::npos);
    CHECK(msg.find("is missing") != std::string::npos);
    /* integers where floats belong */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) { keras_files::replace_dataset(f, "model_weights/hidden/hidden/kernel:0", H5T_NATIVE_INT32, {6, 8}); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("floating-point") != std::string::npos);
    /* a wrong shape, named with the layer's */
    CHECK(load_edited("mlp_k3.h5", [](hid_t f) { keras_files::replace_dataset(f, "model_weights/hidden/sequential/hidden/kernel", H5T_NATIVE_FLOAT, {8, 6}); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("shape (8, 6)") != std::string::npos);
    CHECK(msg.find("(6, 8)") != std::string::npos);
    /* a group where a dataset should be */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) {
              H5Ldelete(f, "model_weights/out/out/bias:0", H5P_DEFAULT);
              H5Gclose(H5Gcreate2(f, "model_weights/out/out/bias:0", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("not a dataset") != std::string::npos);
    /* weight_names naming one weight too few */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) {
              hid_t g = H5Gopen2(f, "model_weights/out", H5P_DEFAULT);
              keras_files::set_text_attr(g, "weight_names", "out/kernel:0");
              H5Gclose(g);
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("has 1 weights in model_weights") != std::string::npos);
    /* a layer name with no group */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) {
              hid_t g = H5Gopen2(f, "model_weights", H5P_DEFAULT);
              keras_files::set_text_attr(g, "layer_names", "nowhere");
              H5Gclose(g);
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("'nowhere' is missing") != std::string::npos);
    /* no model_config: a weights file */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) { H5Adelete(f, "model_config"); }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("model.save_weights") != std::string::npos);
    /* model_config not an architecture */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) { keras_files::set_text_attr(f, "model_config", "{\"class_name\": 3}"); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("model_config") != std::string::npos);
    /* model_config an integer attribute */
    CHECK(load_edited("mlp_tf2.h5", [](hid_t f) {
              H5Adelete(f, "model_config");
              hid_t s = H5Screate(H5S_SCALAR);
              int v = 7;
              hid_t a = H5Acreate2(f, "model_config", H5T_NATIVE_INT, s, H5P_DEFAULT, H5P_DEFAULT);
              H5Awrite(a, H5T_NATIVE_INT, &v);
              H5Aclose(a);
              H5Sclose(s);
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("not text") != std::string::npos);
}

namespace keras_files {

/* A fixture .keras with its model.weights.h5 changed by edit(file id)
   (and config.json by cfg_edit), zipped again into a temporary file: its
   path. */
static std::string edited_keras(const std::string &fixture, const std::function<void(hid_t)> &edit,
                                const std::function<void(std::string &)> &cfg_edit = nullptr) {
    std::vector<uint8_t> zip;
    nnl::read_file((dir() + fixture).c_str(), zip);
    nnl::io::Zip z(zip, fixture);
    std::vector<std::pair<std::string, std::string>> members;
    std::string h5path = copy_to_tmp(dir() + "mlp_tf2.h5", "_member.h5"); /* a path to write the member to */
    for (const nnl::io::ZipEntry &e : z.members()) {
        std::vector<uint8_t> store;
        auto b = z.member(e, store);
        std::string data((const char *)b.first, b.second);
        if (e.name == "model.weights.h5") {
            FILE *f = fopen(h5path.c_str(), "wb");
            REQUIRE(f);
            fwrite(data.data(), 1, data.size(), f);
            fclose(f);
            hid_t h = H5Fopen(h5path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
            REQUIRE(h >= 0);
            edit(h);
            H5Fclose(h);
            std::vector<uint8_t> back;
            nnl::read_file(h5path.c_str(), back);
            data.assign(back.begin(), back.end());
        } else if (e.name == "config.json" && cfg_edit) {
            cfg_edit(data);
        }
        members.push_back({e.name, data});
    }
    unlink(h5path.c_str());
    std::string p = copy_to_tmp(dir() + fixture, ".keras");
    nnl::files::save_atomic(p.c_str(), nnl::files::zip_stored(members));
    return p;
}

/* edited_keras, loaded: status and message. */
static int load_edited_keras(const std::string &fixture, const std::function<void(hid_t)> &edit, std::string *msg,
                             const std::function<void(std::string &)> &cfg_edit = nullptr) {
    std::string p = edited_keras(fixture, edit, cfg_edit);
    nnl_model *m = nullptr;
    int st = nnl_load_model(p.c_str(), &m);
    *msg = nnl_last_error();
    if (st != NNL_OK) CHECK(m == nullptr);
    nnl_model_free(m);
    unlink(p.c_str());
    return st;
}

} // namespace keras_files

TEST_CASE("keras files: broken .keras contents give clear errors (missing, extra, wrong dtype or shape)") {
    using keras_files::load_edited_keras;
    std::string msg;
    /* unchanged, through the same path: loads */
    CHECK(load_edited_keras("rnns.keras", [](hid_t) {}, &msg) == NNL_OK);
    /* a cell's variable missing */
    CHECK(load_edited_keras("rnns.keras", [](hid_t f) { H5Ldelete(f, "layers/lstm/cell/vars/2", H5P_DEFAULT); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("'layers/lstm/cell/vars' holds 2 variables") != std::string::npos);
    CHECK(msg.find("lstm_a") != std::string::npos);
    /* one too many */
    CHECK(load_edited_keras("mlp.keras", [](hid_t f) {
              keras_files::replace_dataset(f, "layers/dense/vars/0", H5T_NATIVE_FLOAT, {6, 8});
              hsize_t d = 3;
              hid_t s = H5Screate_simple(1, &d, nullptr);
              H5Dclose(H5Dcreate2(f, "layers/dense/vars/2", H5T_NATIVE_FLOAT, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
              H5Sclose(s);
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("holds 3 variables") != std::string::npos);
    /* the backward direction's kernel transposed */
    CHECK(load_edited_keras("rnns.keras", [](hid_t f) {
              keras_files::replace_dataset(f, "layers/bidirectional/backward_layer/cell/vars/0", H5T_NATIVE_FLOAT, {9, 4});
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("shape (9, 4)") != std::string::npos);
    CHECK(msg.find("backward_gru/kernel") != std::string::npos);
    /* strings where floats belong */
    CHECK(load_edited_keras("cnn.keras", [](hid_t f) {
              hid_t t = H5Tcopy(H5T_C_S1);
              H5Tset_size(t, 4);
              keras_files::replace_dataset(f, "layers/batch_normalization/vars/3", t, {4});
              H5Tclose(t);
          }, &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("floating-point") != std::string::npos);
    /* the keys are by class: a layer renamed in config.json changes nothing,
       a class count that disagrees with the file (a third Dense) does */
    CHECK(load_edited_keras("mlp.keras", [](hid_t) {}, &msg, [](std::string &c) {
              size_t at = c.find("\"name\": \"hidden\"");
              REQUIRE(at != std::string::npos);
              c.replace(at, 16, "\"name\": \"renamed\"");
          }) == NNL_OK);
    CHECK(load_edited_keras("mlp.keras", [](hid_t f) { H5Ldelete(f, "layers/dense_1", H5P_DEFAULT); }, &msg) ==
          NNL_ERR_FORMAT);
    CHECK(msg.find("'layers/dense_1/vars' holds 0 variables") != std::string::npos);
    /* a member that is not HDF5 at all, and an empty one */
    for (const char *junk : {"not hdf5 at all", ""}) {
        std::vector<uint8_t> zip;
        nnl::read_file((keras_files::dir() + "mlp.keras").c_str(), zip);
        nnl::io::Zip z(zip, "mlp.keras");
        std::vector<uint8_t> store;
        auto c = z.member(*z.find("config.json"), store);
        std::string p = keras_files::copy_to_tmp(keras_files::dir() + "mlp.keras", "_junk.keras");
        nnl::files::save_atomic(p.c_str(), nnl::files::zip_stored({{"config.json", std::string((const char *)c.first, c.second)},
                                                                    {"model.weights.h5", junk}}));
        nnl_model *m = nullptr;
        CHECK(nnl_load_model(p.c_str(), &m) == NNL_ERR_FORMAT);
        CHECK(std::string(nnl_last_error()).find("not an HDF5 file") != std::string::npos);
        CHECK(m == nullptr);
        unlink(p.c_str());
    }
}

TEST_CASE("keras files: fuzzed model_config and weight_names never crash the .h5 reader") {
    /* mutations of the text nnlite parses out of HDF5 attributes (HDF5
       itself is trusted; nnlite's use of what it returns is not) */
    const char *fixtures[] = {"mlp_tf2.h5", "rnns_k3.h5", "seq_tf2.h5"};
    uint64_t seed = 16;
    auto rnd = [&seed] {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return (uint32_t)(seed >> 33);
    };
    int ok = 0, failed = 0;
    for (const char *fx : fixtures)
        for (int round = 0; round < 40; round++) {
            std::string msg;
            int st = keras_files::load_edited(fx, [&](hid_t f) {
                std::vector<std::string> cfg = nnl::files::h5::attr_strings(f, "model_config", "fuzz");
                std::string t = cfg.at(0);
                int edits = 1 + (int)(rnd() % 3);
                for (int e = 0; e < edits && !t.empty(); e++) {
                    size_t at = rnd() % t.size();
                    switch (rnd() % 4) {
                    case 0: t[at] = (char)(rnd() % 256); break;
                    case 1: t.erase(at, 1 + rnd() % 8); break;
                    case 2: t.insert(at, t.substr(rnd() % t.size(), 1 + rnd() % 16)); break;
                    default: /* another digit: still JSON, often another architecture */
                        at = t.find_first_of("0123456789", at);
                        if (at != std::string::npos) t[at] = (char)('0' + rnd() % 10);
                        break;
                    }
                }
                keras_files::set_text_attr(f, "model_config", t);
                if (round % 4 == 3) { /* and a layer's weight_names */
                    hid_t g = H5Gopen2(f, "model_weights", H5P_DEFAULT);
                    std::vector<std::string> names = nnl::files::h5::attr_strings(g, "layer_names", "fuzz");
                    hid_t lg = H5Gopen2(g, names.at(rnd() % names.size()).c_str(), H5P_DEFAULT);
                    keras_files::set_text_attr(lg, "weight_names", std::string(1 + rnd() % 3, (char)('a' + rnd() % 26)));
                    H5Gclose(lg);
                    H5Gclose(g);
                }
            }, &msg);
            CHECK(st != NNL_ERR_INTERNAL);
            if (st == NNL_OK) ok++;
            else {
                failed++;
                CHECK(!msg.empty());
            }
        }
    MESSAGE(ok << " fuzzed .h5 files loaded, " << failed << " refused cleanly");
    CHECK(failed > 0);
}
#endif

TEST_CASE("keras files: truncated and bit-flipped .keras archives fail cleanly") {
    /* the zip layer and the members nnlite reads itself (config.json);
       model.weights.h5 bytes are left to HDF5's own checks */
    std::vector<uint8_t> good;
    nnl::read_file((keras_files::dir() + "seq.keras").c_str(), good);
    std::string tmp = (std::filesystem::temp_directory_path() / ("nnlite_keras_zip_" + std::to_string(getpid()))).string();
    uint64_t seed = 1616;
    auto rnd = [&seed] {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return (uint32_t)(seed >> 33);
    };
    /* where the h5 member's bytes lie: not mutated */
    nnl::io::Zip z(good, "seq.keras");
    const nnl::io::ZipEntry *we = z.find("model.weights.h5");
    REQUIRE(we);
    size_t h5_from = (size_t)we->offset, h5_to = h5_from + 30 + 16 + (size_t)we->csize + 64;
    for (int round = 0; round < 120; round++) {
        std::vector<uint8_t> b = good;
        if (round < 20) b.resize(rnd() % b.size());
        else
            for (int e = 0; e < 1 + (int)(rnd() % 4); e++) {
                size_t at = rnd() % b.size();
                if (at >= h5_from && at < h5_to) at = rnd() % h5_from;
                b[at] ^= (uint8_t)(1u << (rnd() % 8));
            }
        FILE *f = fopen(tmp.c_str(), "wb");
        REQUIRE(f);
        if (!b.empty()) fwrite(b.data(), 1, b.size(), f);
        fclose(f);
        nnl_model *m = nullptr;
        int st = nnl_load_model(tmp.c_str(), &m);
        CHECK(st != NNL_ERR_INTERNAL);
        if (st != NNL_OK) {
            CHECK(m == nullptr);
            CHECK(*nnl_last_error());
        }
        nnl_model_free(m);
    }
    unlink(tmp.c_str());
}

TEST_CASE("keras files: nnl_save_model writes .keras and .h5 that read back to the same model") {
    using namespace keras_files;
    for (const Case &c : kCases) {
        std::string src = dir() + c.name + ".keras";
        CAPTURE(src);
        nnl_model *m = nullptr;
        if (!NNL_HAVE_HDF5) {
            nnl_model *a = nullptr;
            REQUIRE(nnl_model_from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 2, "batch_input_shape": [null, 3]}}]}})", &a) == NNL_OK);
            std::string out = (std::filesystem::temp_directory_path() / "nnlite_keras_nohdf5.keras").string();
            CHECK(nnl_save_model(a, out.c_str()) == NNL_ERR_UNSUPPORTED);
            CHECK(std::string(nnl_last_error()).find("libhdf5-dev") != std::string::npos);
            CHECK(access(out.c_str(), F_OK) != 0);
            nnl_model_free(a);
            return;
        }
        REQUIRE_MESSAGE(nnl_load_model(src.c_str(), &m) == NNL_OK, nnl_last_error());
        std::vector<int64_t> shape;
        std::vector<float> x = inputs(m, 4, c, &shape);
        std::vector<float> y = predict(m, x, shape);
        for (const char *ext : {".keras", ".h5"}) {
            CAPTURE(ext);
            std::string out = (std::filesystem::temp_directory_path() /
                               ("nnlite_keras_save_" + std::to_string(getpid()) + "_" + c.name + ext)).string();
            REQUIRE_MESSAGE(nnl_save_model(m, out.c_str()) == NNL_OK, nnl_last_error());
            std::vector<uint8_t> head;
            nnl::read_file(out.c_str(), head);
            CHECK((std::string(ext) == ".keras" ? nnl::files::is_zip(head) : nnl::files::is_hdf5(head)));
            nnl_model *back = nullptr;
            REQUIRE_MESSAGE(nnl_load_model(out.c_str(), &back) == NNL_OK, nnl_last_error());
            CHECK(nnl_param_count(back) == nnl_param_count(m));
            REQUIRE(back->layers.size() == m->layers.size());
            for (size_t l = 0; l < m->layers.size(); l++) {
                CHECK(back->layers[l]->name == m->layers[l]->name);
                for (size_t k = 0; k < m->layers[l]->weights.size(); k++) {
                    const nnl::WeightSpec &a = m->layers[l]->weights[k], &b = back->layers[l]->weights[k];
                    REQUIRE(a.shape == b.shape);
                    CHECK(memcmp(a.w, b.w, (size_t)a.shape.size() * sizeof(float)) == 0);
                }
            }
            CHECK(predict(back, x, shape) == y);
            nnl_model_free(back);
            unlink(out.c_str());
        }
        nnl_model_free(m);
    }
}

TEST_CASE("keras files: the .keras and .h5 nnlite writes have Keras' layout (checked with h5py when present)") {
    if (!NNL_HAVE_HDF5) return;
    if (system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
        MESSAGE("h5py not installed (Debian python3-h5py): layout check skipped");
        return;
    }
    using namespace keras_files;
    nnl_model *m = nullptr;
    REQUIRE(nnl_load_model((dir() + "rnns.keras").c_str(), &m) == NNL_OK);
    std::string base = (std::filesystem::temp_directory_path() / ("nnlite_keras_layout_" + std::to_string(getpid()))).string();
    REQUIRE(nnl_save_model(m, (base + ".keras").c_str()) == NNL_OK);
    REQUIRE(nnl_save_model(m, (base + ".h5").c_str()) == NNL_OK);
    nnl_model_free(m);
    /* what keras.saving reads: the vars of every layer under its class key,
       cells and directions where Keras keeps them; model_config and
       weight_names of the legacy format */
    std::string py = "import h5py, io, json, sys, zipfile\n"
                     "z = zipfile.ZipFile(sys.argv[1])\n"
                     "assert z.namelist() == ['metadata.json', 'config.json', 'model.weights.h5'], z.namelist()\n"
                     "cfg = json.loads(z.read('config.json'))\n"
                     "assert cfg['class_name'] == 'Sequential' and cfg['module'] == 'keras'\n"
                     "assert cfg['config']['layers'][0]['config']['batch_shape'] == [None, 6, 3]\n"
                     "f = h5py.File(io.BytesIO(z.read('model.weights.h5')), 'r')\n"
                     "assert f['layers/simple_rnn/cell/vars/0'].shape == (3, 4)\n"
                     "assert f['layers/lstm/cell/vars/1'].shape == (4, 16)\n"
                     "assert f['layers/bidirectional/forward_layer/cell/vars/2'].shape == (2, 9)\n"
                     "assert f['layers/bidirectional/backward_layer/cell/vars/0'].shape == (4, 9)\n"
                     "assert f['layers/gru/cell/vars/0'].shape == (6, 9)\n"
                     "assert f['layers/dense/vars/0'].dtype == 'float32' and len(f['layers/dense/vars']) == 2\n"
                     "h = h5py.File(sys.argv[2], 'r')\n"
                     "mc = json.loads(h.attrs['model_config'])\n"
                     "assert mc['class_name'] == 'Sequential'\n"
                     "g = h['model_weights']\n"
                     "assert [n.decode() for n in g.attrs['layer_names']] == ['srnn', 'lstm_a', 'bi', 'last', 'head']\n"
                     "wn = [n.decode() for n in g['lstm_a'].attrs['weight_names']]\n"
                     "assert wn == ['lstm_a/lstm_cell/kernel:0', 'lstm_a/lstm_cell/recurrent_kernel:0', 'lstm_a/lstm_cell/bias:0'], wn\n"
                     "assert g['lstm_a'][wn[0]].shape == (4, 16)\n"
                     "print('layout ok')\n";
    std::string script = base + ".py";
    FILE *f = fopen(script.c_str(), "w");
    REQUIRE(f);
    fputs(py.c_str(), f);
    fclose(f);
    std::string cmd = "/usr/bin/python3 " + script + " " + base + ".keras " + base + ".h5";
    CHECK(system(cmd.c_str()) == 0);
    unlink(script.c_str());
    unlink((base + ".keras").c_str());
    unlink((base + ".h5").c_str());
}

#ifdef NNL_HDF5
TEST_CASE("keras files: the compile configuration comes along (training continues), when nnlite can follow it") {
    if (!NNL_HAVE_HDF5) return;
    using namespace keras_files;
    for (const Case &c : kCases)
        for (const char *kind : kKinds) {
            std::string path = dir() + c.name + kind;
            CAPTURE(path);
            nnl_model *m = nullptr;
            REQUIRE_MESSAGE(nnl_load_model(path.c_str(), &m) == NNL_OK, nnl_last_error());
            /* Adam(learning_rate=0.001) and mean_squared_error in every fixture */
            REQUIRE(m->compiled);
            CHECK(nnl_get_learning_rate(m) == doctest::Approx(0.001));
            CHECK(std::string(m->opt->cls()) == "Adam");
            std::vector<int64_t> shape;
            std::vector<float> x = inputs(m, 4, c, &shape);
            std::vector<float> y((size_t)(4 * m->layers.back()->out.size()), 0.25f);
            std::vector<int64_t> yshape{4};
            for (int i = 0; i < m->layers.back()->out.rank; i++) yshape.push_back(m->layers.back()->out.d[i]);
            nnl_fit_options o;
            nnl_fit_options_init(&o);
            o.epochs = 1;
            o.batch_size = 4;
            o.verbose = 0;
            CHECK_MESSAGE(nnl_fit(m, x.data(), (int)shape.size(), shape.data(), y.data(), NNL_FLOAT32,
                                  (int)yshape.size(), yshape.data(), &o) == NNL_OK, nnl_last_error());
            /* written back, the compile configuration comes along */
            for (const char *ext : {".keras", ".h5"}) {
                REQUIRE(nnl_compile(m, "RMSprop(learning_rate=0.002, rho=0.8)", "huber(delta=2.0)",
                                    "mae, top_k_categorical_accuracy(k=2)") == NNL_OK);
                std::string out = (std::filesystem::temp_directory_path() /
                                   ("nnlite_keras_compile_" + std::to_string(getpid()) + ext)).string();
                REQUIRE(nnl_save_model(m, out.c_str()) == NNL_OK);
                nnl_model *back = nullptr;
                REQUIRE_MESSAGE(nnl_load_model(out.c_str(), &back) == NNL_OK, nnl_last_error());
                REQUIRE(back->compiled);
                CHECK(std::string(back->opt->cls()) == "RMSprop");
                CHECK(nnl_get_learning_rate(back) == doctest::Approx(0.002));
                CHECK(back->opt->config() == m->opt->config());
                CHECK(back->loss.kind == nnl::LOSS_HUBER);
                CHECK(back->loss.delta == 2.0f);
                CHECK(back->compile_text[2] == "mae"); /* a metric with options is left out */
                nnl_model_free(back);
                unlink(out.c_str());
            }
            nnl_model_free(m);
        }
    /* an optimizer nnlite lacks: the model loads, uncompiled, as Keras leaves it */
    std::string p = keras_files::copy_to_tmp(keras_files::dir() + "mlp_tf2.h5", ".h5");
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    keras_files::set_text_attr(f, "training_config", R"({"loss": "mse", "optimizer_config": {"class_name": "Ftrl", "config": {}}})");
    H5Fclose(f);
    nnl_model *m = nullptr;
    REQUIRE(nnl_load_model(p.c_str(), &m) == NNL_OK);
    CHECK(!m->compiled);
    nnl_model_free(m);
    unlink(p.c_str());
}
#endif

/* ---- The optimizer's state (Keras' optimizer variables) ---- */
#ifdef NNL_HDF5
namespace keras_files {

/* An npz member as float32 values. */
static std::vector<float> npz_floats(const std::string &path, const std::string &key) {
    std::vector<uint8_t> bytes;
    nnl::read_file(path.c_str(), bytes);
    nnl::io::Zip z(bytes, path);
    const nnl::io::ZipEntry *e = z.find(key);
    CAPTURE(key);
    REQUIRE(e != nullptr);
    nnl::io::ArrayPtr a = z.load(*e, NNL_FLOAT32);
    const float *p = (const float *)a->data;
    return std::vector<float>(p, p + a->size);
}

/* Slot array k of m's optimizer over its trainable weight i. */
static std::vector<float> slot_part(const nnl_model *m, size_t k, size_t i) {
    std::vector<nnl::files::KerasTrainable> T = nnl::files::keras_trainable(*m);
    REQUIRE(i < T.size());
    REQUIRE(k < m->opt->slots.size());
    const float *p = m->opt->slots[k].data() + T[i].off;
    return std::vector<float>(p, p + T[i].w->shape.size());
}

/* The same weights (all of them, moving statistics too) and the same
   optimizer state, bit for bit. */
static void check_same_state(const nnl_model *a, const nnl_model *b) {
    REQUIRE(a->layers.size() == b->layers.size());
    for (size_t l = 0; l < a->layers.size(); l++)
        for (size_t k = 0; k < a->layers[l]->weights.size(); k++) {
            const nnl::WeightSpec &wa = a->layers[l]->weights[k], &wb = b->layers[l]->weights[k];
            CAPTURE(wa.name);
            REQUIRE(wa.shape == wb.shape);
            CHECK(memcmp(wa.w, wb.w, (size_t)wa.shape.size() * sizeof(float)) == 0);
        }
    REQUIRE(a->compiled);
    REQUIRE(b->compiled);
    CHECK(a->opt->config() == b->opt->config());
    CHECK(a->opt->iterations == b->opt->iterations);
    CHECK(a->opt->learning_rate == b->opt->learning_rate);
    REQUIRE(a->opt->slots.size() == b->opt->slots.size());
    for (size_t k = 0; k < a->opt->slots.size(); k++) {
        REQUIRE(a->opt->slots[k].size() == b->opt->slots[k].size());
        CHECK(memcmp(a->opt->slots[k].data(), b->opt->slots[k].data(), a->opt->slots[k].size() * sizeof(float)) == 0);
    }
    if (std::string(a->opt->cls()) == "Nadam")
        CHECK(static_cast<const nnl::Nadam &>(*a->opt).u_product == static_cast<const nnl::Nadam &>(*b->opt).u_product);
}

/* 8 samples for the opt_* fixtures' model (6 inputs, 3 outputs), trained
   with mse, batches of 4 in order (no shuffling, no dropout: nothing
   draws from the RNG, which Keras files do not keep). */
static void fit_opt(nnl_model *m, int epochs) {
    std::vector<float> x(8 * 6), y(8 * 3);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)std::sin(0.37 * (double)i + 0.5);
    for (size_t i = 0; i < y.size(); i++) y[i] = (i * 5) % 3 == 0 ? 1.f : 0.f;
    const int64_t xs[2] = {8, 6}, ys[2] = {8, 3};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = epochs;
    o.batch_size = 4;
    o.shuffle = 0;
    o.verbose = 0;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK, nnl_last_error());
}

} // namespace keras_files

TEST_CASE("keras files: an Adam's state in .keras, Keras 3 .h5, tf.keras 2.11+ and legacy .h5 comes back as its slots") {
    using namespace keras_files;
    const std::string npz = dir() + "opt_adam.npz";
    for (const char *fx : {"opt_adam.keras", "opt_adam_k3.h5", "opt_adam_tf2.h5", "opt_adam_legacy.h5"}) {
        CAPTURE(fx);
        nnl_model *m = nullptr;
        REQUIRE_MESSAGE(nnl_load_model((dir() + fx).c_str(), &m) == NNL_OK, nnl_last_error());
        REQUIRE(m->compiled);
        CHECK(std::string(m->opt->cls()) == "Adam");
        CHECK(m->opt->iterations == 7);
        /* the configuration's 0.002, not the float32 variable's 0.0020000000949949026 */
        CHECK(nnl_get_learning_rate(m) == 0.002);
        std::vector<nnl::files::KerasTrainable> T = nnl::files::keras_trainable(*m);
        /* hidden kernel and bias, bn gamma and beta (not the moving statistics), out kernel and bias */
        REQUIRE(T.size() == 6);
        CHECK(T[2].layer->name == "bn");
        CHECK(T[2].w->name == "gamma");
        REQUIRE(m->opt->slots.size() == 2);
        CHECK(m->opt->slots[0].size() == 6 * 8 + 8 + 8 + 8 + 8 * 3 + 3);
        for (size_t i = 0; i < T.size(); i++) {
            CAPTURE(i);
            CHECK(slot_part(m, 0, i) == npz_floats(npz, "m_" + std::to_string(i)));
            CHECK(slot_part(m, 1, i) == npz_floats(npz, "v_" + std::to_string(i)));
        }
        /* and training goes on from step 8 */
        fit_opt(m, 1);
        CHECK(m->opt->iterations == 9);
        nnl_model_free(m);
    }
    /* Nadam as Keras 3.0 to 3.9 keep it: u_product before the slots */
    const std::string nz = dir() + "opt_nadam.npz";
    nnl_model *m = nullptr;
    REQUIRE_MESSAGE(nnl_load_model((dir() + "opt_nadam.keras").c_str(), &m) == NNL_OK, nnl_last_error());
    REQUIRE(m->compiled);
    REQUIRE(std::string(m->opt->cls()) == "Nadam");
    CHECK(m->opt->iterations == 3);
    CHECK((float)static_cast<const nnl::Nadam &>(*m->opt).u_product == npz_floats(nz, "u_product").at(0));
    REQUIRE(m->opt->slots.size() == 2);
    for (size_t i = 0; i < 6; i++) {
        CAPTURE(i);
        CHECK(slot_part(m, 0, i) == npz_floats(nz, "m_" + std::to_string(i)));
        CHECK(slot_part(m, 1, i) == npz_floats(nz, "v_" + std::to_string(i)));
    }
    nnl_model_free(m);
}

TEST_CASE("keras files: optimizer variables nnlite cannot map are skipped as Keras skips them; wrong ones are errors") {
    using namespace keras_files;
    auto load = [](const std::string &p, nnl_model **out) {
        int st = nnl_load_model(p.c_str(), out);
        unlink(p.c_str());
        return st;
    };
    nnl_model *m = nullptr;
    /* a variable too few: another optimizer's list; the model loads compiled, with fresh slots (and a warning) */
    REQUIRE(load(edited_keras("opt_adam.keras", [](hid_t f) { REQUIRE(H5Ldelete(f, "optimizer/vars/13", H5P_DEFAULT) >= 0); }), &m) ==
            NNL_OK);
    CHECK(m->compiled);
    CHECK(m->opt->iterations == 0);
    CHECK(m->opt->slots.empty());
    nnl_model_free(m);
    /* the head alone (an optimizer that never stepped): the step count and learning rate, no slots */
    REQUIRE(load(edited_keras("opt_adam.keras", [](hid_t f) {
                     for (int i = 2; i < 14; i++) REQUIRE(H5Ldelete(f, ("optimizer/vars/" + std::to_string(i)).c_str(), H5P_DEFAULT) >= 0);
                 }), &m) == NNL_OK);
    CHECK(m->opt->iterations == 7);
    CHECK(m->opt->slots.empty());
    nnl_model_free(m);
    /* an optimizer_weights list of a layout nnlite does not know */
    REQUIRE(load(edited_h5("opt_adam_tf2.h5", [](hid_t f) {
                     hid_t g = H5Gopen2(f, "optimizer_weights", H5P_DEFAULT);
                     set_text_attr(g, "weight_names", "training/Adam/Variable:0");
                     H5Gclose(g);
                 }), &m) == NNL_OK);
    CHECK(m->compiled);
    CHECK(m->opt->iterations == 0);
    nnl_model_free(m);
    /* a momentum of the wrong shape: NNL_ERR_FORMAT naming the file, the variable and both shapes */
    std::string msg;
    CHECK(load_edited_keras("opt_adam.keras", [](hid_t f) { replace_dataset(f, "optimizer/vars/2", H5T_NATIVE_FLOAT, {8, 6}); },
                            &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find(".keras' member 'model.weights.h5'") != std::string::npos); /* the file */
    CHECK(msg.find("'optimizer/vars/2'") != std::string::npos);
    CHECK(msg.find("shape (8, 6)") != std::string::npos);
    CHECK(msg.find("momentum of layer 'hidden' (Dense) weight 'kernel' has (6, 8)") != std::string::npos);
    CHECK(load_edited("opt_adam_tf2.h5", [](hid_t f) { replace_dataset(f, "optimizer_weights/Adam/v/out/bias:0", H5T_NATIVE_FLOAT, {4}); },
                      &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("'Adam/v/out/bias:0' has shape (4,)") != std::string::npos);
    CHECK(msg.find("(3,)") != std::string::npos);
    /* a float step count, an integer slot, a step count that is not a scalar */
    CHECK(load_edited("opt_adam_legacy.h5", [](hid_t f) { replace_dataset(f, "optimizer_weights/Adam/iter:0", H5T_NATIVE_FLOAT, {1}); },
                      &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("does not hold an integer") != std::string::npos);
    CHECK(load_edited("opt_adam_k3.h5", [](hid_t f) { replace_dataset(f, "optimizer_weights/adam/opt_bn_gamma_velocity", H5T_NATIVE_INT32, {8}); },
                      &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("floating-point") != std::string::npos);
    CHECK(load_edited_keras("opt_adam.keras", [](hid_t f) { replace_dataset(f, "optimizer/vars/0", H5T_NATIVE_INT64, {2}); },
                            &msg) == NNL_ERR_FORMAT);
    CHECK(msg.find("not a scalar") != std::string::npos);
}

TEST_CASE("keras files: a trained model's optimizer state survives .keras and .h5 bit for bit; the next steps match") {
    using namespace keras_files;
    const char *specs[] = {"Adam(learning_rate=0.01)", "Adam(learning_rate=0.01, amsgrad=True)", "AdamW(learning_rate=0.01)",
                           "Nadam(learning_rate=0.01)", "Adamax(learning_rate=0.01)", "RMSprop(learning_rate=0.01)",
                           "RMSprop(learning_rate=0.01, momentum=0.5, centered=True)", "SGD(learning_rate=0.1)",
                           "SGD(learning_rate=0.1, momentum=0.9, nesterov=True)", "Adagrad(learning_rate=0.1)",
                           "Adadelta(learning_rate=1.0)"};
    for (const char *spec : specs)
        for (const char *ext : {".keras", ".h5"}) {
            CAPTURE(spec);
            CAPTURE(ext);
            nnl_model *m = nullptr;
            REQUIRE_MESSAGE(nnl_load_model((dir() + "opt_adam.keras").c_str(), &m) == NNL_OK, nnl_last_error());
            REQUIRE(nnl_compile(m, spec, "mean_squared_error", nullptr) == NNL_OK);
            fit_opt(m, 2); /* 4 steps */
            REQUIRE(m->opt->iterations == 4);
            std::string out = (std::filesystem::temp_directory_path() /
                               ("nnlite_keras_opt_" + std::to_string(getpid()) + ext)).string();
            REQUIRE_MESSAGE(nnl_save_model(m, out.c_str()) == NNL_OK, nnl_last_error());
            nnl_model *back = nullptr;
            REQUIRE_MESSAGE(nnl_load_model(out.c_str(), &back) == NNL_OK, nnl_last_error());
            unlink(out.c_str());
            check_same_state(m, back);
            /* one more epoch on each: the same weights and state again */
            fit_opt(m, 1);
            fit_opt(back, 1);
            check_same_state(m, back);
            nnl_model_free(back);
            nnl_model_free(m);
        }
}

TEST_CASE("keras files: the optimizer variables nnlite writes have Keras' layout (checked with h5py when present)") {
    if (system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
        MESSAGE("h5py not installed (Debian python3-h5py): layout check skipped");
        return;
    }
    using namespace keras_files;
    nnl_model *m = nullptr;
    REQUIRE(nnl_load_model((dir() + "opt_adam.keras").c_str(), &m) == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "mean_squared_error", nullptr) == NNL_OK);
    fit_opt(m, 2);
    std::string base = (std::filesystem::temp_directory_path() / ("nnlite_keras_optlayout_" + std::to_string(getpid()))).string();
    REQUIRE(nnl_save_model(m, (base + ".keras").c_str()) == NNL_OK);
    REQUIRE(nnl_save_model(m, (base + ".h5").c_str()) == NNL_OK);
    nnl_model_free(m);
    /* .keras: iteration, learning_rate, then momentum and velocity per
       trainable weight; .h5: tf.keras 2.15's names and order */
    std::string py = "import h5py, io, sys, zipfile\n"
                     "z = zipfile.ZipFile(sys.argv[1])\n"
                     "f = h5py.File(io.BytesIO(z.read('model.weights.h5')), 'r')\n"
                     "v = f['optimizer/vars']\n"
                     "assert len(v) == 14, len(v)\n"
                     "assert v['0'].dtype == 'int64' and v['0'].shape == () and v['0'][()] == 4\n"
                     "assert v['1'].dtype == 'float32' and v['1'].shape == () and abs(v['1'][()] - 0.01) < 1e-9\n"
                     "assert v['2'].shape == (6, 8) and v['3'].shape == (6, 8) and v['4'].shape == (8,)\n"
                     "assert v['6'].shape == (8,) and v['13'].shape == (3,)\n"
                     "assert (v['3'][()] >= 0).all()\n"
                     "h = h5py.File(sys.argv[2], 'r')\n"
                     "g = h['optimizer_weights']\n"
                     "names = [n.decode() for n in g.attrs['weight_names']]\n"
                     "assert names[:4] == ['iteration:0', 'Adam/m/hidden/kernel:0', 'Adam/v/hidden/kernel:0', "
                     "'Adam/m/hidden/bias:0'], names[:4]\n"
                     "assert len(names) == 13 and names[5] == 'Adam/m/bn/gamma:0', names\n"
                     "assert g['iteration:0'].dtype == 'int64' and g['iteration:0'][()] == 4\n"
                     "assert g['Adam/v/out/bias:0'].shape == (3,)\n"
                     "print('optimizer layout ok')\n";
    std::string script = base + ".py";
    FILE *f = fopen(script.c_str(), "w");
    REQUIRE(f);
    fputs(py.c_str(), f);
    fclose(f);
    std::string cmd = "/usr/bin/python3 " + script + " " + base + ".keras " + base + ".h5";
    CHECK(system(cmd.c_str()) == 0);
    unlink(script.c_str());
    unlink((base + ".keras").c_str());
    unlink((base + ".h5").c_str());
}
#endif
