/* The seams prepared for recurrent layers, data parallelism and the GPU
   (issue 11): kernel tables filled by name, layers that describe themselves
   (and the lists of them in nnlite.h, README.md and the Python package),
   the training step's reduction point, persistent non-weight state, and the
   build-information calls. */
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace seams {

namespace fs = std::filesystem;

static std::string source_file(const char *rel) {
    fs::path p = fs::path(__FILE__).parent_path().parent_path() / rel;
    std::ifstream f(p);
    REQUIRE_MESSAGE(f.good(), "cannot read " << p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/* text from the first `from` to the following `to` (exclusive) */
static std::string between(const std::string &s, const std::string &from, const std::string &to) {
    size_t a = s.find(from);
    REQUIRE_MESSAGE(a != std::string::npos, "'" << from << "' not found");
    a += from.size();
    size_t b = s.find(to, a);
    REQUIRE_MESSAGE(b != std::string::npos, "'" << to << "' not found after '" << from << "'");
    return s.substr(a, b - a);
}

/* identifier characters */
static bool idc(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* every word (letters, digits, _) of s starting with a capital letter */
static std::set<std::string> capitalized(const std::string &s) {
    std::set<std::string> out;
    for (size_t i = 0; i < s.size();) {
        if (!idc(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < s.size() && idc(s[j])) j++;
        if (isupper((unsigned char)s[i]) && j - i >= 2) out.insert(s.substr(i, j - i));
        i = j;
    }
    return out;
}

static std::vector<std::string> lines(const std::string &s) {
    std::vector<std::string> v;
    std::stringstream ss(s);
    std::string l;
    while (std::getline(ss, l)) v.push_back(l);
    return v;
}

/* the word at the start of t (after `skip` characters), "" when none */
static std::string word_at(const std::string &t, size_t skip = 0) {
    size_t j = skip;
    while (j < t.size() && idc(t[j])) j++;
    return t.substr(skip, j - skip);
}

static std::string join(const std::set<std::string> &v) {
    std::string s;
    for (auto &x : v) s += (s.empty() ? "" : " ") + x;
    return s;
}

static std::set<std::string> registry_kinds() {
    std::set<std::string> v;
    for (auto &kv : nnl::layer_registry()) v.insert(kv.first);
    return v;
}

static std::set<std::string> registry_aliases() {
    std::set<std::string> v;
    for (auto &kv : nnl::layer_aliases()) v.insert(kv.first);
    return v;
}

} // namespace seams

TEST_CASE("kernel tables: filled by field name, no entry left empty") {
    CHECK(nnl::kernels_complete(nnl::cpu_kernels));
    CHECK(std::string(nnl::cpu_kernels.name) == "cpu");
    bool by_name = nnl::cpu_kernels.sgemm == nnl::gemm::sgemm && nnl::cpu_kernels.bn_backward == nnl::cpu_bn_backward &&
                   nnl::cpu_kernels.moments == nnl::cpu_moments;
    CHECK(by_name);
    nnl::Kernels k = nnl::cpu_kernels;
    k.scale_shift = nullptr; /* an entry forgotten when the table is filled */
    CHECK(!nnl::kernels_complete(k));
    k = nnl::cpu_kernels;
    k.name = nullptr;
    CHECK(!nnl::kernels_complete(k));
}

TEST_CASE("every layer kind describes itself: Keras config round trip, size bound, GPU path") {
    for (auto &kv : nnl::layer_registry()) {
        INFO(kv.first << ": " << kv.second.example);
        nnl::Model m;
        m.seed = 1;
        m.rng.reseed(1);
        m.seeded = true;
        m.add(kv.second.example);
        REQUIRE(m.layers.size() == 1);
        const nnl::Layer &l = *m.layers[0];
        CHECK(std::string(l.cls) == kv.first);
        /* the JSON the layer writes builds the same layer */
        std::string j = nnl::files::json_text(nnl::files::model_json(m));
        nnl::Model back;
        nnl::files::model_from_json(back, nnl::files::parse_json(j.c_str(), j.size(), "test"));
        CHECK(nnl::files::json_text(nnl::files::model_json(back)) == j);
        REQUIRE(back.layers.size() == 1);
        CHECK(back.layers[0]->out == l.out);
        CHECK(back.layers[0]->param_count() == l.param_count());
        /* the bound is conservative */
        nnl::Layer::Size z = l.size_bound(l.in);
        CHECK(z.values >= (double)l.out.size());
        CHECK(z.weights >= (double)l.param_count());
        CHECK(l.states.empty()); /* no built-in layer has persistent state yet */
    }
}

TEST_CASE("the registry, nnlite.h, README.md and the Python classes list the same layers") {
    using namespace seams;
    std::set<std::string> kinds = registry_kinds(), aliases = registry_aliases();
    for (auto &a : nnl::layer_aliases()) CHECK_MESSAGE(kinds.count(a.second), a.first << " -> " << a.second);
    std::set<std::string> with_input = kinds;
    with_input.insert("Input");

    /* nnlite.h: nnl_add's list, one layer per line, then the aliases */
    std::string h = source_file("nnlite.h");
    std::string block = between(h, "Layers of this version:", "Keras' other names are accepted too:");
    std::set<std::string> hk; /* lines "     Name(...": four spaces or more, then a layer */
    for (auto &l : lines(block)) {
        size_t i = l.find_first_not_of(' ');
        std::string w = i == std::string::npos || i < 4 ? "" : word_at(l, i);
        if (!w.empty() && isupper((unsigned char)w[0]) && l.size() > i + w.size() && l[i + w.size()] == '(')
            hk.insert(w);
    }
    CHECK_MESSAGE(hk == with_input, "nnlite.h: " << join(hk) << "\nregistry: " << join(with_input));
    std::set<std::string> ha = capitalized(between(h, "Keras' other names are accepted too:", "."));
    CHECK_MESSAGE(ha == aliases, "nnlite.h: " << join(ha) << "\nregistry: " << join(aliases));
    /* nnl_set_device's list of GPU layers: the kinds whose gpu_path() is true */
    std::set<std::string> hg = capitalized(between(h, "GPU path: ", ")")), gpu;
    for (auto &kv : nnl::layer_registry()) {
        nnl::Spec sp = nnl::parse_spec(kv.second.example);
        nnl::Args a(sp, kv.first.c_str());
        if (kv.second.make(a)->gpu_path()) gpu.insert(kv.first);
    }
    CHECK_MESSAGE(hg == gpu, "nnlite.h: " << join(hg) << "\ngpu_path(): " << join(gpu));
    CHECK(nnl::gpu_layer_names().find("Dense") != std::string::npos);

    /* README: the "Layers" bullet, outside parentheses */
    std::string r = between(source_file("README.md"), "- Layers (Keras names, arguments and defaults):", "\n- ");
    std::string bare;
    int depth = 0;
    for (char c : r) {
        depth += c == '(';
        if (!depth) bare += c;
        depth -= c == ')' && depth > 0;
    }
    std::set<std::string> rk = capitalized(bare);
    CHECK_MESSAGE(rk == with_input, "README.md: " << join(rk) << "\nregistry: " << join(with_input));

    /* Python: a class per kind, KINDS, and the aliases */
    std::string py = source_file("bindings/python/nnlite/layers.py");
    std::set<std::string> pc, pk, pa;
    for (auto &l : lines(py)) {
        std::string w = word_at(l);
        if (w.empty()) continue;
        std::string rest = l.substr(w.size());
        if (rest.compare(0, 10, " = _kind(\"") == 0 && word_at(rest, 10) == w) pc.insert(w); /* X = _kind("X", ...) */
        std::string to = rest.compare(0, 3, " = ") == 0 ? word_at(rest, 3) : "";
        if (!to.empty() && rest.size() == 3 + to.size() && w != "InputLayer") { /* X = Y: an alias */
            pa.insert(w);
            auto al = nnl::layer_aliases().find(w);
            CHECK_MESSAGE((al != nnl::layer_aliases().end() && al->second == to), "layers.py: " << w << " = " << to);
        }
    }
    std::string kt = between(py, "KINDS = (", ")");
    for (size_t q = kt.find('"'); q != std::string::npos;) { /* "Dense", "Activation", ... */
        size_t e = kt.find('"', q + 1);
        if (e == std::string::npos) break;
        pk.insert(kt.substr(q + 1, e - q - 1));
        q = kt.find('"', e + 1);
    }
    CHECK_MESSAGE(pc == with_input, "layers.py classes: " << join(pc) << "\nregistry: " << join(with_input));
    CHECK_MESSAGE(pk == kinds, "layers.py KINDS: " << join(pk) << "\nregistry: " << join(kinds));
    CHECK_MESSAGE(pa == aliases, "layers.py aliases: " << join(pa) << "\nregistry: " << join(aliases));
}

/* ---- the training step's reduction point ---- */
namespace seams {

/* Two identical processes, as an MPI allreduce would combine them: the
   gradients weighted by each one's sample count and summed, divided by the
   total; the scalars summed. With equal halves this is exactly one process'
   step (x + x and * 0.5 are exact in float). */
struct TwoRanks : nnl::Reducer {
    std::vector<double> loss, count, metric;
    int calls = 0, fail_at = -1;
    nnl::LineVector weights_at_failure;
    const nnl::Model *model = nullptr;
    void reduce(nnl::StepReduce &r) override {
        calls++;
        loss.push_back(r.loss());
        count.push_back(r.count());
        metric.push_back(r.n_metrics ? r.metric(0) : -1);
        CHECK(r.grad_device == nullptr);
        CHECK(r.n == (int64_t)model->G.size());
        CHECK(r.grad == model->G.data());
        CHECK(r.n_sums == nnl::StepReduce::size_for(r.n_metrics)); /* loss, metrics, count, nonfinite, kept */
        CHECK(r.nonfinite() == 0);
        double total = 2 * r.count();
        float w = (float)(r.count() / total);
        for (int64_t i = 0; i < r.n; i++) r.grad[i] = (r.grad[i] + r.grad[i]) * w;
        for (int k = 0; k < r.n_sums; k++) r.sums[k] *= 2;
        if (calls == fail_at) { /* the other process saw a NaN */
            r.nonfinite() += 1;
            weights_at_failure = model->W;
        }
    }
};

static void blobs(std::vector<float> &x, std::vector<int32_t> &y, int n) {
    nnl::Rng g(11);
    for (int i = 0; i < n; i++) {
        int c = i % 4;
        y.push_back(c);
        for (int j = 0; j < 3; j++) x.push_back((float)(c == j) + 0.3f * g.normal());
    }
}

static nnl_model *small_model(const char *metrics) {
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 5);
    REQUIRE(nnl_add(m, "Dense(8, activation='tanh', input_shape=(3,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(4, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", metrics) == NNL_OK);
    return m;
}

} // namespace seams

TEST_CASE("train_step: a reducer combining two identical processes gives one process' training, bit for bit") {
    std::vector<float> x;
    std::vector<int32_t> y;
    seams::blobs(x, y, 50);
    int64_t xs[2] = {50, 3}, ys[1] = {50};
    nnl_model *one = seams::small_model("accuracy"), *two = seams::small_model("accuracy");
    auto red = std::make_shared<seams::TwoRanks>();
    red->model = two;
    two->reducer = red;
    /* what the first step's loss must be: the first 16 samples, before training */
    double first[2];
    int64_t fs[2] = {16, 3}, fys[1] = {16};
    REQUIRE(nnl_evaluate(two, x.data(), 2, fs, y.data(), NNL_INT32, 1, fys, 16, first, 2) == NNL_OK);
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 2;
    o.batch_size = 16;
    o.verbose = 0;
    o.shuffle = 0;
    REQUIRE(nnl_fit(one, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    REQUIRE(nnl_fit(two, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);
    /* the reducer saw every step, before combining: this process' sums */
    CHECK(red->calls == 8);
    std::vector<double> counts{16, 16, 16, 2, 16, 16, 16, 2};
    CHECK(red->count == counts);
    CHECK(red->loss[0] / 16 == doctest::Approx(first[0]).epsilon(1e-12));
    CHECK(red->metric[0] == doctest::Approx(first[1] * 16).epsilon(1e-12));
    /* the same update as one process, and the same logs */
    CHECK(0 == memcmp(one->W.data(), two->W.data(), one->W.size() * sizeof(float)));
    CHECK(one->opt->iterations == two->opt->iterations);
    for (const char *k : {"loss", "accuracy"}) {
        double a[2], b[2];
        REQUIRE(nnl_history_get(one, k, a, 2) == 2);
        REQUIRE(nnl_history_get(two, k, b, 2) == 2);
        CHECK(a[0] == b[0]);
        CHECK(a[1] == b[1]);
    }
    nnl_model_free(one);
    nnl_model_free(two);
}

TEST_CASE("train_step: a non-finite step on another process stops training everywhere, before the update") {
    std::vector<float> x;
    std::vector<int32_t> y;
    seams::blobs(x, y, 64);
    int64_t xs[2] = {64, 3}, ys[1] = {64};
    nnl_model *m = seams::small_model("");
    auto red = std::make_shared<seams::TwoRanks>();
    red->model = m;
    red->fail_at = 3;
    m->reducer = red;
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 1;
    o.batch_size = 16;
    o.verbose = 0;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_ERR_NUMERIC);
    CHECK(std::string(nnl_last_error()).find("batch 3") != std::string::npos);
    CHECK(red->calls == 3);
    CHECK(m->opt->iterations == 2);
    CHECK(0 == memcmp(red->weights_at_failure.data(), m->W.data(), m->W.size() * sizeof(float)));
    CHECK(nnl_history_epochs(m) == 0);
    nnl_model_free(m);
}

/* ---- persistent non-weight state: a stateful layer of the tests' own ---- */
namespace seams {

/* y = x + total[slot]; then total[slot] += x (a running sum per batch slot,
   carried from batch to batch as a stateful RNN carries h), and calls[0]
   counts the forward passes (a state of the whole model, not per slot).
   The gradient passes through. */
class RunningSum : public nnl::Layer {
public:
    explicit RunningSum(nnl::Args &) {
        cls = "RunningSum";
        nnl::StateSpec total, calls;
        total.name = "total"; /* shape: the input's, set by build */
        calls.name = "calls";
        calls.shape = nnl::Shape{1};
        calls.per_slot = false;
        states = {total, calls};
    }
    void build(const nnl::Shape &input) override {
        in = out = input;
        states[0].shape = input;
    }
    void config(nnl::Json &) const override {}
    Size size_bound(const nnl::Shape &s) const override { return {(double)s.size(), 0}; }
    void forward(const float *x, float *y, int64_t B, const nnl::Ctx &) override {
        int64_t d = in.size();
        float *t = states[0].s;
        for (int64_t i = 0; i < B * d; i++) {
            y[i] = x[i] + t[i];
            t[i] += x[i];
        }
        states[1].s[0] += 1;
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const nnl::Ctx &) override {
        if (dx) memcpy(dx, dy, (size_t)(B * in.size()) * sizeof(float));
    }
};

static void register_running_sum() {
    nnl::register_layer("RunningSum", {nnl::make_layer<RunningSum>, "RunningSum(input_shape=(3,))"});
}

static std::string temp_dir() {
    char dir[] = "/tmp/nnlite_seams_XXXXXX";
    REQUIRE(mkdtemp(dir));
    return dir;
}

} // namespace seams

TEST_CASE("persistent state: carried across batches, saved and loaded, never a weight") {
    using nnl::Model;
    seams::register_running_sum();
    std::string dir = seams::temp_dir();
    nnl_model *m = nnl_model_create();
    nnl_model_set_seed(m, 9);
    REQUIRE(nnl_add(m, "RunningSum(input_shape=(3,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2)") == NNL_OK);
    REQUIRE(nnl_compile(m, "SGD(learning_rate=0.01)", "mse", "mae") == NNL_OK);
    /* not weights: counts, the weight list and the summary are the Dense's alone */
    CHECK(nnl_weight_count(m) == 2);
    CHECK(nnl_param_count(m) == 8);
    CHECK(m->W.size() == 16 + 2); /* kernel 3 x 2, its bias on the next 64-byte line */
    char buf[4096];
    REQUIRE(nnl_summary_string(m, buf, sizeof buf) > 0);
    CHECK(std::string(buf).find("Total params: 8 ") != std::string::npos);
    CHECK(m->state_slots == 0);
    CHECK(m->S.size() == 1); /* calls: one value; total: no slots yet */

    /* two batches of 4: the states are sized by the batch and carry on */
    std::vector<float> x(8 * 3), p(8 * 2);
    for (size_t i = 0; i < x.size(); i++) x[i] = 0.25f * (float)i;
    int64_t xs[2] = {8, 3};
    REQUIRE(nnl_predict(m, x.data(), 2, xs, 4, p.data(), (int64_t)p.size()) == NNL_OK);
    CHECK(m->state_slots == 4);
    const nnl::Layer &rs = *m->layers[0];
    for (int i = 0; i < 12; i++) CHECK(rs.states[0].s[i] == x[(size_t)i] + x[(size_t)i + 12]);
    CHECK(rs.states[1].s[0] == 2);
    /* a larger batch does not fit states kept for 4 slots; smaller ones do */
    CHECK(nnl_predict(m, x.data(), 2, xs, 8, p.data(), (int64_t)p.size()) == NNL_ERR_SHAPE);
    CHECK(std::string(nnl_last_error()).find("batches of 4") != std::string::npos);

    /* fit goes on from there (2 more batches, 1 epoch, no shuffle) */
    std::vector<float> y(8 * 2, 0.5f);
    int64_t ys[2] = {8, 2};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.batch_size = 4;
    o.shuffle = 0;
    o.verbose = 0;
    REQUIRE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_FLOAT32, 2, ys, &o) == NNL_OK);
    CHECK(rs.states[1].s[0] == 4);
    for (int i = 0; i < 12; i++) CHECK(rs.states[0].s[i] == 2 * (x[(size_t)i] + x[(size_t)i + 12]));
    CHECK(nnl_weight_count(m) == 2);

    /* a model file keeps them; a load restores them bit for bit */
    std::string f = dir + "/m.nnl", wf = dir + "/w.nnl", npz = dir + "/w.npz";
    REQUIRE(nnl_save_model(m, f.c_str()) == NNL_OK);
    nnl_model *back = nullptr;
    REQUIRE(nnl_load_model(f.c_str(), &back) == NNL_OK);
    CHECK(back->state_slots == 4);
    REQUIRE(back->S.size() == m->S.size());
    CHECK(0 == memcmp(back->S.data(), m->S.data(), m->S.size() * sizeof(float)));
    CHECK(nnl_weight_count(back) == 2);
    /* both continue the same way */
    std::vector<float> p1(8), p2(8);
    int64_t x4[2] = {4, 3};
    REQUIRE(nnl_predict(m, x.data(), 2, x4, 4, p1.data(), 8) == NNL_OK);
    REQUIRE(nnl_predict(back, x.data(), 2, x4, 4, p2.data(), 8) == NNL_OK);
    CHECK(p1 == p2);
    CHECK(0 == memcmp(back->S.data(), m->S.data(), m->S.size() * sizeof(float)));
    nnl::files::NnlFile F = nnl::files::read_nnl(f.c_str());
    std::set<std::string> names;
    for (auto &t : F.tensors) names.insert(t.name);
    CHECK(names.count("state/running_sum/total"));
    CHECK(names.count("state/running_sum/calls"));

    /* weights files and npz: the weights alone */
    REQUIRE(nnl_save_weights(m, wf.c_str()) == NNL_OK);
    for (auto &t : nnl::files::read_nnl(wf.c_str()).tensors) CHECK(t.name.find("state/") == std::string::npos);
    REQUIRE(nnl_save_weights_npz(m, npz.c_str()) == NNL_OK);
    std::vector<uint8_t> zb;
    nnl::read_file(npz.c_str(), zb);
    nnl::io::Zip z(zb, npz);
    CHECK(z.members().size() == 2);
    /* loading weights (from either file) leaves a model's states alone */
    std::vector<float> before = back->S;
    REQUIRE(nnl_load_weights(back, f.c_str()) == NNL_OK);
    REQUIRE(nnl_load_weights(back, wf.c_str()) == NNL_OK);
    REQUIRE(nnl_load_weights_npz(back, npz.c_str()) == NNL_OK);
    CHECK(back->S == before);
    /* a weights file makes a model whose states start from zero */
    nnl_model *fresh = nullptr;
    REQUIRE(nnl_load_model(wf.c_str(), &fresh) == NNL_OK);
    CHECK(fresh->state_slots == 4); /* the architecture keeps the batch size (Keras' batch_input_shape) */
    CHECK(fresh->S == std::vector<float>(fresh->S.size(), 0.f));
    CHECK(fresh->S.size() == 13);

    back->reset_states();
    CHECK(back->S == std::vector<float>(back->S.size(), 0.f));
    CHECK(back->state_slots == 4);
    nnl_model_free(fresh);
    nnl_model_free(back);
    nnl_model_free(m);
    std::string rm = "rm -rf " + dir;
    CHECK(system(rm.c_str()) == 0);
}

/* Every status code of nnlite.h (NNL_ERR_DEVICE since 0.8) has its name in
   nnl_status_string and its constant in both bindings, and the bindings
   carry the header's version. */
TEST_CASE("status codes: named by nnl_status_string and listed alike by the Fortran and Python bindings") {
    using namespace seams;
    std::string h = source_file("nnlite.h");
    std::string en = between(h, "enum {\n    NNL_OK = 0,", "};");
    std::vector<std::pair<std::string, int>> codes = {{"NNL_OK", 0}};
    for (size_t i = en.find("NNL_ERR_"); i != std::string::npos; i = en.find("NNL_ERR_", i + 1)) {
        size_t e = i;
        while (e < en.size() && idc(en[e])) e++;
        size_t eq = en.find(" = ", e);
        if (eq != e) continue; /* a name in a comment */
        codes.push_back({en.substr(i, e - i), atoi(en.c_str() + eq + 3)});
    }
    REQUIRE(codes.size() == 12);
    CHECK(codes.back() == std::make_pair(std::string("NNL_ERR_DEVICE"), 11));
    std::string f90 = source_file("bindings/fortran/nnlite.f90");
    std::string f90_codes = between(f90, "integer, parameter, public :: NNL_OK = 0", "\n\n");
    std::string py = source_file("bindings/python/nnlite/errors.py");
    std::string py_names = between(py, "\nOK, ", " = range(");
    std::vector<std::string> py_list = {"OK"};
    {
        std::stringstream ss(py_names);
        for (std::string w; std::getline(ss, w, ',');) py_list.push_back(w.substr(w.find_first_not_of(' ')));
    }
    CHECK(py.find(" = range(" + std::to_string(codes.size()) + ")\n") != std::string::npos);
    REQUIRE(py_list.size() == codes.size());
    for (size_t k = 0; k < codes.size(); k++) {
        const std::string &name = codes[k].first;
        int v = codes[k].second;
        CAPTURE(name);
        CHECK(v == (int)k);
        CHECK(std::string(nnl_status_string(v)) == name);
        if (k) CHECK(f90_codes.find(name + " = " + std::to_string(v)) != std::string::npos);
        CHECK(py_list[k] == (k ? name.substr(8) : std::string("OK")));
        if (k) CHECK(py.find("    status = " + py_list[k] + "\n") != std::string::npos); /* its exception class */
    }
    CHECK(std::string(nnl_status_string((int)codes.size())) == "NNL_UNKNOWN_STATUS");
    CHECK(std::string(nnl_status_string(-1)) == "NNL_UNKNOWN_STATUS");
    /* the version, as the bindings repeat it */
    char v[128];
    snprintf(v, sizeof v, "HEADER_VERSION = (%d, %d, %d)\n", NNL_VERSION_MAJOR, NNL_VERSION_MINOR, NNL_VERSION_PATCH);
    CHECK(source_file("bindings/python/nnlite/_lib.py").find(v) != std::string::npos);
    snprintf(v, sizeof v, "NNL_VERSION_MAJOR = %d, NNL_VERSION_MINOR = %d, NNL_VERSION_PATCH = %d\n", NNL_VERSION_MAJOR,
             NNL_VERSION_MINOR, NNL_VERSION_PATCH);
    CHECK(f90.find(v) != std::string::npos);
}

/* Inference reads a batch where the caller's array holds it (Model::
   direct_input) on the CPU when some layer computes: the outputs are the
   bits of the old path (the batch copied into act[0], then forward), the
   caller's array is untouched, and what act[0] holds does not matter.
   Models that start with views, a Dense, a convolution, an embedding, a
   recurrent layer, masking, dropout, and one of views only (which copies). */
TEST_CASE("inference reads the caller's batch in place: same bits as copying it, input untouched") {
    struct Spec {
        std::vector<const char *> layers;
        std::vector<int64_t> per;
        bool ids; /* integer ids (Embedding) */
    };
    const std::vector<Spec> specs = {
        {{"Flatten(input_shape=(6, 5))", "Dense(7, activation='relu')", "Dense(3, activation='softmax')"}, {6, 5}, false},
        {{"Dense(4, activation='tanh', input_shape=(9,))", "Dense(2)"}, {9}, false},
        {{"Conv2D(3, 3, activation='relu', input_shape=(6, 6, 2))", "MaxPooling2D(2)", "Flatten()", "Dense(3)"},
         {6, 6, 2}, false},
        {{"Conv2D(3, 3, padding='same', data_format='channels_first', input_shape=(2, 5, 5))", "Flatten()",
          "Dense(2)"},
         {2, 5, 5}, false},
        {{"Embedding(11, 4, input_length=5)", "Flatten()", "Dense(3)"}, {5}, true},
        {{"LSTM(6, input_shape=(4, 3))", "Dense(2)"}, {4, 3}, false},
        {{"Masking(mask_value=0.0, input_shape=(4, 3))", "SimpleRNN(5)", "Dense(2)"}, {4, 3}, false},
        {{"Dropout(0.5, input_shape=(8,))", "Dense(3)"}, {8}, false},
        {{"Reshape((4, 2), input_shape=(8,))", "Flatten()"}, {8}, false},
    };
    for (size_t k = 0; k < specs.size(); k++) {
        const Spec &s = specs[k];
        INFO("model " << k << ": " << std::string(s.layers[0]));
        nnl_model *m = nnl_model_create();
        REQUIRE(nnl_model_set_seed(m, 3) == NNL_OK);
        for (const char *l : s.layers) REQUIRE_MESSAGE(nnl_add(m, l) == NNL_OK, nnl_last_error());
        REQUIRE_MESSAGE(nnl_compile(m, "SGD()", "mse", nullptr) == NNL_OK, nnl_last_error());
        int64_t per = 1, n = 13;
        for (int64_t d : s.per) per *= d;
        std::vector<float> x((size_t)(n * per));
        for (size_t i = 0; i < x.size(); i++)
            x[i] = s.ids ? (float)((i * 7) % 11) : (i % 5 == 0 ? 0.f : (float)std::sin(0.37 * (double)i));
        const std::vector<float> x0 = x;
        std::vector<int64_t> xs{n};
        xs.insert(xs.end(), s.per.begin(), s.per.end());
        int64_t D = 1;
        {
            nnl::Model &mm = *m;
            D = mm.out_shape().size();
        }
        std::vector<float> out((size_t)(n * D), -1.f);
        REQUIRE_MESSAGE(nnl_predict(m, x.data(), (int)xs.size(), xs.data(), 4, out.data(), (int64_t)out.size()) ==
                            NNL_OK,
                        nnl_last_error());
        CHECK(memcmp(x.data(), x0.data(), x.size() * sizeof(float)) == 0);
        nnl::Model &mm = *m;
        bool views_only = true;
        for (auto &l : mm.layers) views_only = views_only && l->is_view();
        CHECK(mm.direct_input() == !views_only);
        /* the old path, batch by batch: the batch copied into act[0] */
        std::vector<float> ref((size_t)(n * D), -2.f);
        {
            nnl::FpScope fp;
            for (int64_t b0 = 0; b0 < n; b0 += 4) {
                int64_t B = std::min<int64_t>(4, n - b0);
                std::fill(mm.act[0], mm.act[0] + 4 * per, NAN);
                memcpy(mm.act[0], x.data() + b0 * per, (size_t)(B * per) * sizeof(float));
                mm.forward(B, false, 0);
                memcpy(ref.data() + b0 * D, mm.act[mm.layers.size()], (size_t)(B * D) * sizeof(float));
            }
        }
        CHECK(memcmp(out.data(), ref.data(), out.size() * sizeof(float)) == 0);
        /* and act[0] is not read on the direct path: poisoned, the same bits
           (a later buffer may share its memory: it is dead after the first
           layer, so nothing checks that it stays poisoned) */
        if (mm.direct_input()) {
            std::fill(mm.act[0], mm.act[0] + 4 * per, NAN);
            std::vector<float> again((size_t)(n * D), -3.f);
            REQUIRE(nnl_predict(m, x.data(), (int)xs.size(), xs.data(), 4, again.data(), (int64_t)again.size()) ==
                    NNL_OK);
            CHECK(memcmp(again.data(), out.data(), out.size() * sizeof(float)) == 0);
        }
        nnl_model_free(m);
    }
}
