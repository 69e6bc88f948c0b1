/* The seams prepared for recurrent layers, data parallelism and the GPU
   (issue 11): kernel tables filled by name, layers that describe themselves
   (and the lists of them in nnlite.h, README.md and the Python package),
   the training step's reduction point, persistent non-weight state, and the
   build-information calls. */
#include <filesystem>
#include <fstream>
#include <regex>
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

static std::set<std::string> matches(const std::string &s, const std::string &re, int group = 1) {
    std::set<std::string> out;
    std::regex r(re, std::regex::multiline);
    for (auto it = std::sregex_iterator(s.begin(), s.end(), r); it != std::sregex_iterator(); ++it)
        out.insert((*it)[group].str());
    return out;
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
    std::set<std::string> hk = matches(block, "^ {4,}([A-Z][A-Za-z0-9]*)\\(");
    CHECK_MESSAGE(hk == with_input, "nnlite.h: " << join(hk) << "\nregistry: " << join(with_input));
    std::set<std::string> ha = matches(between(h, "Keras' other names are accepted too:", "."), "([A-Z][A-Za-z0-9]+)");
    CHECK_MESSAGE(ha == aliases, "nnlite.h: " << join(ha) << "\nregistry: " << join(aliases));
    /* nnl_set_device's list of GPU layers: the kinds whose gpu_path() is true */
    std::set<std::string> hg = matches(between(h, "GPU path: ", ")"), "([A-Z][A-Za-z0-9]+)"), gpu;
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
    std::set<std::string> rk = matches(bare, "\\b([A-Z][A-Za-z0-9]+)\\b");
    CHECK_MESSAGE(rk == with_input, "README.md: " << join(rk) << "\nregistry: " << join(with_input));

    /* Python: a class per kind, KINDS, and the aliases */
    std::string py = source_file("bindings/python/nnlite/layers.py");
    std::set<std::string> pc = matches(py, "^([A-Za-z0-9]+) = _kind\\(\"([A-Za-z0-9]+)\"");
    std::set<std::string> pk = matches(between(py, "KINDS = (", ")"), "\"([A-Za-z0-9]+)\"");
    CHECK_MESSAGE(pc == with_input, "layers.py classes: " << join(pc) << "\nregistry: " << join(with_input));
    CHECK_MESSAGE(pk == kinds, "layers.py KINDS: " << join(pk) << "\nregistry: " << join(kinds));
    std::set<std::string> pa;
    std::regex alias_line("^([A-Za-z0-9]+) = ([A-Za-z0-9]+)$", std::regex::multiline);
    for (auto it = std::sregex_iterator(py.begin(), py.end(), alias_line); it != std::sregex_iterator(); ++it) {
        std::string from = (*it)[1].str(), to = (*it)[2].str();
        if (from == "InputLayer") continue; /* the model's own, as Input */
        pa.insert(from);
        auto al = nnl::layer_aliases().find(from);
        CHECK_MESSAGE((al != nnl::layer_aliases().end() && al->second == to), "layers.py: " << from << " = " << to);
    }
    CHECK_MESSAGE(pa == aliases, "layers.py aliases: " << join(pa) << "\nregistry: " << join(aliases));
}
