/* Keras compatibility of names, the summary table and initializers (issue
   11): default layer names by Keras' to_snake_case, summary columns that
   widen, the one initializer table (orthogonal, VarianceScaling) with its
   statistics, spec strings and JSON forms, including standalone Keras
   2.0-2.3's. */
#include <cmath>
#include <set>

namespace {

/* Keras 3's keras.src.utils.naming.to_snake_case, evaluated with Python's re
   for these class names (the registry's, and a few with other patterns). */
const std::pair<const char *, const char *> kKerasSnake[] = {
    {"Dense", "dense"},
    {"Conv2D", "conv2d"},
    {"MaxPooling2D", "max_pooling2d"},
    {"GlobalAveragePooling2D", "global_average_pooling2d"},
    {"BatchNormalization", "batch_normalization"},
    {"ZeroPadding2D", "zero_padding2d"},
    {"UpSampling2D", "up_sampling2d"},
    {"LSTM", "lstm"},
    {"SimpleRNN", "simple_rnn"},
    {"ConvLSTM2D", "conv_lstm2d"},
    {"Conv2DTranspose", "conv2d_transpose"},
    {"PReLU", "p_re_lu"},
    {"LeakyReLU", "leaky_re_lu"},
    {"MultiHeadAttention", "multi_head_attention"},
    {"XAbCd", "x_ab_cd"},
    {"ABCDef", "abc_def"},
    {"AbcDEFGhi", "abc_def_ghi"},
    {"AB2cD", "ab2c_d"},
    {"aB", "a_b"},
    {"A", "a"},
};

/* Every layer kind of the registry and the default name Keras gives it (an
   alias such as Convolution2D or MaxPool2D is the same Keras class, so the
   same name). */
const std::pair<const char *, const char *> kDefaultNames[] = {
    {"Dense", "dense"},
    {"Activation", "activation"},
    {"Dropout", "dropout"},
    {"Flatten", "flatten"},
    {"Reshape", "reshape"},
    {"Conv1D", "conv1d"},
    {"Conv2D", "conv2d"},
    {"Conv3D", "conv3d"},
    {"Convolution1D", "conv1d"},
    {"Convolution2D", "conv2d"},
    {"Convolution3D", "conv3d"},
    {"MaxPooling1D", "max_pooling1d"},
    {"MaxPooling2D", "max_pooling2d"},
    {"MaxPooling3D", "max_pooling3d"},
    {"MaxPool1D", "max_pooling1d"},
    {"MaxPool2D", "max_pooling2d"},
    {"MaxPool3D", "max_pooling3d"},
    {"AveragePooling1D", "average_pooling1d"},
    {"AveragePooling2D", "average_pooling2d"},
    {"AveragePooling3D", "average_pooling3d"},
    {"AvgPool1D", "average_pooling1d"},
    {"AvgPool2D", "average_pooling2d"},
    {"AvgPool3D", "average_pooling3d"},
    {"GlobalAveragePooling1D", "global_average_pooling1d"},
    {"GlobalAveragePooling2D", "global_average_pooling2d"},
    {"GlobalAveragePooling3D", "global_average_pooling3d"},
    {"GlobalMaxPooling1D", "global_max_pooling1d"},
    {"GlobalMaxPooling2D", "global_max_pooling2d"},
    {"GlobalMaxPooling3D", "global_max_pooling3d"},
    {"GlobalAvgPool1D", "global_average_pooling1d"},
    {"GlobalAvgPool2D", "global_average_pooling2d"},
    {"GlobalMaxPool1D", "global_max_pooling1d"},
    {"GlobalMaxPool2D", "global_max_pooling2d"},
    {"BatchNormalization", "batch_normalization"},
    {"ZeroPadding2D", "zero_padding2d"},
    {"UpSampling2D", "up_sampling2d"},
    {"Embedding", "embedding"},
    {"Masking", "masking"},
    {"SimpleRNN", "simple_rnn"},
    {"LSTM", "lstm"},
    {"GRU", "gru"},
    {"Bidirectional", "bidirectional"},
};

/* A spec and an input shape that build `kind` */
std::pair<std::string, std::string> buildable(const std::string &kind) {
    bool rnn = kind == "SimpleRNN" || kind == "LSTM" || kind == "GRU";
    if (rnn) return {kind + "(2, return_sequences=True)", "(5, 3)"};
    if (kind == "Bidirectional") return {"Bidirectional(LSTM(2, return_sequences=True))", "(5, 3)"};
    if (kind == "Masking") return {"Masking()", "(5, 3)"}; /* (timesteps, features) */
    std::string in = kind.find("1D") != std::string::npos   ? "(8, 3)"
                     : kind.find("2D") != std::string::npos ? "(8, 8, 3)"
                     : kind.find("3D") != std::string::npos ? "(6, 6, 6, 2)"
                     : kind == "Flatten" || kind == "Reshape" ? "(2, 2)"
                                                               : "(4,)";
    std::string args = kind == "Dense" ? "2"
                       : kind == "Activation" ? "'relu'"
                       : kind == "Dropout" ? "0.5"
                       : kind == "Reshape" ? "(4,)"
                       : kind == "Embedding" ? "10, 2"
                       : kind.compare(0, 4, "Conv") == 0 ? "2, 3"
                                                         : "";
    return {kind + "(" + args + ")", in};
}

struct Stats {
    double mean = 0, var = 0, lo = INFINITY, hi = -INFINITY;
};
Stats stats(const std::vector<float> &w) {
    Stats s;
    for (float v : w) {
        s.mean += v;
        s.lo = std::min(s.lo, (double)v);
        s.hi = std::max(s.hi, (double)v);
    }
    s.mean /= (double)w.size();
    for (float v : w) s.var += (v - s.mean) * (v - s.mean);
    s.var /= (double)w.size();
    return s;
}

std::vector<float> draw(const std::string &spec, nnl::Shape s, uint64_t seed = 11) {
    nnl::Rng r(seed);
    std::vector<float> w((size_t)s.size());
    nnl::init_weights(w.data(), s, nnl::weight_init(spec, s, "t", "kernel"), r);
    return w;
}

} // namespace

TEST_CASE("default layer names are Keras' to_snake_case of the class") {
    for (auto &kv : kKerasSnake) {
        CAPTURE(kv.first);
        CHECK(nnl::snake(kv.first) == kv.second);
    }
    std::set<std::string> listed;
    for (auto &kv : kDefaultNames) listed.insert(kv.first);
    for (auto &kv : nnl::layer_registry()) {
        CAPTURE(kv.first);
        CHECK_MESSAGE(listed.count(kv.first) == 1, "a registry kind without its Keras name in this table");
    }
    for (auto &kv : kDefaultNames) {
        CAPTURE(kv.first);
        auto b = buildable(kv.first);
        nnl_model m;
        nnl_model_set_seed(&m, 1);
        REQUIRE(nnl_add(&m, ("Input(shape=" + b.second + ")").c_str()) == NNL_OK);
        REQUIRE_MESSAGE(nnl_add(&m, b.first.c_str()) == NNL_OK, nnl_last_error());
        CHECK(m.layers.back()->name == kv.second);
        std::string kind = kv.first;
        if (kind != "Flatten" && kind != "Reshape" && kind != "Embedding" && kind.find("Global") == std::string::npos) {
            REQUIRE_MESSAGE(nnl_add(&m, b.first.c_str()) == NNL_OK, nnl_last_error()); /* shape-preserving kinds */
            CHECK(m.layers.back()->name == std::string(kv.second) + "_1");
        }
    }
}

TEST_CASE("the summary keeps Keras' 65 columns and widens them for long names and shapes") {
    auto lines = [](const std::string &s) {
        std::vector<std::string> v;
        size_t a = 0, b;
        while ((b = s.find('\n', a)) != std::string::npos) v.push_back(s.substr(a, b - a)), a = b + 1;
        return v;
    };
    nnl_model small;
    REQUIRE(nnl_add(&small, "Dense(3, input_shape=(4,))") == NNL_OK);
    std::vector<std::string> l = lines(small.summary());
    CHECK(l[1] == std::string(65, '_'));
    CHECK(l[2] == " Layer (type)                Output Shape              Param #");
    CHECK(l[4] == " dense (Dense)               (None, 3)                 15");

    nnl_model m;
    std::string longname = "a_layer_name_much_longer_than_twenty_nine_columns";
    REQUIRE(nnl_add(&m, ("Dense(4, input_shape=(4,), name='" + longname + "')").c_str()) == NNL_OK);
    REQUIRE(nnl_add(&m, "Reshape((1, 1, 1, 1, 1, 1, 4))") == NNL_OK);
    REQUIRE(nnl_add(&m, "Flatten()") == NNL_OK);
    REQUIRE(nnl_add(&m, "Dense(123456)") == NNL_OK);
    std::string s = m.summary();
    l = lines(s);
    size_t width = l[1].size(), shape_col = l[2].find("Output Shape"), param_col = l[2].find("Param #");
    CHECK(width > 65);
    CHECK(l[1] == std::string(width, '_'));
    CHECK(l[3] == std::string(width, '='));
    std::vector<std::string> names = {longname + " (Dense)", "reshape (Reshape)", "flatten (Flatten)",
                                      "dense (Dense)"},
                             shapes = {"(None, 4)", "(None, 1, 1, 1, 1, 1, 1, 4)", "(None, 4)", "(None, 123456)"},
                             params = {"20", "0", "0", "617,280"};
    size_t row = 4;
    for (size_t i = 0; i < names.size(); i++, row += 2) {
        CAPTURE(l[row]);
        CHECK(l[row].find(names[i]) == 1);
        CHECK(l[row].find(shapes[i], names[i].size() + 1) == shape_col); /* columns stay aligned */
        CHECK(l[row].compare(param_col, std::string::npos, params[i]) == 0);
        CHECK(l[row].size() <= width);
        CHECK(l[row][shape_col - 1] == ' ');
        CHECK(l[row][param_col - 1] == ' ');
    }
    /* UTF-8 names are measured in characters: the shape column still lines up */
    nnl_model u;
    REQUIRE(nnl_add(&u, "Dense(2, input_shape=(4,), name='\xce\xb1\xce\xb2\xce\xb3')") == NNL_OK); /* 3 characters, 6 bytes */
    l = lines(u.summary());
    CHECK(l[4] == " \xce\xb1\xce\xb2\xce\xb3 (Dense)                 (None, 2)                 10");
}

TEST_CASE("initializers: one table, spec strings and their canonical text") {
    struct Case {
        const char *spec, *text;
    } cases[] = {
        {"glorot_uniform", "glorot_uniform"},
        {"GlorotUniform", "glorot_uniform"},
        {"He_Normal", "he_normal"},
        {"orthogonal", "orthogonal"},
        {"Orthogonal(gain=0.5)", "Orthogonal(gain=0.5)"},
        {"Orthogonal(1.0)", "orthogonal"},
        {"VarianceScaling(scale=2.0, mode='fan_in')",
         "VarianceScaling(scale=2, mode='fan_in', distribution='truncated_normal')"},
        {"VarianceScaling(0.5, 'fan_avg', 'uniform')", "VarianceScaling(scale=0.5, mode='fan_avg', distribution='uniform')"},
        {"VarianceScaling(mode='FAN_OUT', distribution='normal')",
         "VarianceScaling(scale=1, mode='fan_out', distribution='truncated_normal')"},
        {"variance_scaling", "variance_scaling"},
        {"VarianceScaling(seed=None)", "variance_scaling"},
        {"RandomUniform(minval=-0.05, maxval=0.05)", "random_uniform"},
        {"RandomUniform(minval=0, maxval=0.1)", "RandomUniform(minval=0, maxval=0.1)"},
        {"RandomNormal(stddev=0.01)", "RandomNormal(mean=0, stddev=0.01)"},
        {"TruncatedNormal(mean=1, stddev=0.2)", "TruncatedNormal(mean=1, stddev=0.2)"},
        {"truncated_normal", "truncated_normal"},
        {"Constant(0.25)", "Constant(value=0.25)"},
        {"constant", "constant"},
        {"zeros", "zeros"},
        {"Ones", "ones"},
    };
    for (auto &c : cases) {
        CAPTURE(c.spec);
        nnl::Init in = nnl::parse_init(c.spec, "t");
        CHECK(nnl::init_text(in) == c.text);
        CHECK(nnl::parse_init(nnl::init_text(in), "t") == in);
    }
    struct Bad {
        const char *spec;
        int status;
        const char *says;
    } bads[] = {
        {"glorot_uniformm", NNL_ERR_ARGUMENT, "unknown initializer 'glorot_uniformm'"},
        {"VarianceScaling(mode='fan_sideways')", NNL_ERR_ARGUMENT, "fan_sideways"},
        {"VarianceScaling(distribution='cauchy')", NNL_ERR_ARGUMENT, "cauchy"},
        {"VarianceScaling(scale=0)", NNL_ERR_ARGUMENT, "scale must be positive"},
        {"RandomNormal(stddev=-1)", NNL_ERR_ARGUMENT, "stddev"},
        {"RandomUniform(minval=1, maxval=0)", NNL_ERR_ARGUMENT, "minval"},
        {"Constant(value=inf)", NNL_ERR_ARGUMENT, "finite"},
        {"GlorotUniform(seed=3)", NNL_ERR_UNSUPPORTED, "seed"},
        {"GlorotUniform(scale=2)", NNL_ERR_ARGUMENT, "unknown argument 'scale'"},
        {"Orthogonal(gain=1, seed=None, x=2)", NNL_ERR_ARGUMENT, "unknown argument 'x'"},
    };
    for (auto &b : bads) {
        CAPTURE(b.spec);
        try {
            nnl::parse_init(b.spec, "t");
            FAIL("accepted");
        } catch (const nnl::Error &e) {
            CHECK(e.status == b.status);
            CHECK_MESSAGE(e.msg.find(b.says) != std::string::npos, e.msg);
        }
    }
    /* every table entry's name and class name are accepted and give it */
    for (auto &d : nnl::kInitTable) {
        CHECK(nnl::parse_init(d.name, "t").def == &d);
        CHECK(nnl::parse_init(d.keras, "t").def == &d);
    }
}

TEST_CASE("initializers draw Keras' distributions (mean, variance, limits of 120,000 values)") {
    const nnl::Shape S{400, 300}; /* fan_in 400, fan_out 300 */
    const double tn = 0.87962566103423978, fi = 400, fo = 300, fa = 350;
    struct Case {
        const char *spec;
        double mean, var, lo, hi; /* the bounds every value must keep (+-inf: none) */
    } cases[] = {
        {"zeros", 0, 0, 0, 0},
        {"ones", 1, 0, 1, 1},
        {"Constant(value=0.5)", 0.5, 0, 0.5, 0.5},
        {"glorot_uniform", 0, 2 / (fi + fo), -std::sqrt(6 / (fi + fo)), std::sqrt(6 / (fi + fo))},
        {"he_uniform", 0, 2 / fi, -std::sqrt(6 / fi), std::sqrt(6 / fi)},
        {"lecun_uniform", 0, 1 / fi, -std::sqrt(3 / fi), std::sqrt(3 / fi)},
        {"glorot_normal", 0, 2 / (fi + fo), -2 * std::sqrt(2 / (fi + fo)) / tn, 2 * std::sqrt(2 / (fi + fo)) / tn},
        {"he_normal", 0, 2 / fi, -2 * std::sqrt(2 / fi) / tn, 2 * std::sqrt(2 / fi) / tn},
        {"lecun_normal", 0, 1 / fi, -2 * std::sqrt(1 / fi) / tn, 2 * std::sqrt(1 / fi) / tn},
        {"variance_scaling", 0, 1 / fi, -2 * std::sqrt(1 / fi) / tn, 2 * std::sqrt(1 / fi) / tn},
        {"VarianceScaling(scale=2.0, mode='fan_out', distribution='uniform')", 0, 2 / fo, -std::sqrt(6 / fo),
         std::sqrt(6 / fo)},
        {"VarianceScaling(scale=0.5, mode='fan_avg', distribution='untruncated_normal')", 0, 0.5 / fa, -INFINITY,
         INFINITY},
        {"VarianceScaling(scale=3.0, mode='fan_avg', distribution='truncated_normal')", 0, 3 / fa,
         -2 * std::sqrt(3 / fa) / tn, 2 * std::sqrt(3 / fa) / tn},
        {"random_uniform", 0, 0.01 / 12, -0.05, 0.05},
        {"RandomUniform(minval=0, maxval=2)", 1, 4.0 / 12, 0, 2},
        {"random_normal", 0, 0.05 * 0.05, -INFINITY, INFINITY},
        {"RandomNormal(mean=1, stddev=0.5)", 1, 0.25, -INFINITY, INFINITY},
        {"truncated_normal", 0, 0.05 * 0.05 * tn * tn, -0.1, 0.1},
        {"TruncatedNormal(mean=-1, stddev=0.1)", -1, 0.01 * tn * tn, -1.2, -0.8},
    };
    for (auto &c : cases) {
        CAPTURE(c.spec);
        std::vector<float> w = draw(c.spec, S);
        Stats s = stats(w);
        double sd = std::sqrt(c.var);
        CHECK(std::fabs(s.mean - c.mean) <= 5 * sd / std::sqrt((double)w.size()) + 1e-7);
        CHECK(s.var == doctest::Approx(c.var).epsilon(0.02));
        CHECK(s.lo >= c.lo - 1e-6);
        CHECK(s.hi <= c.hi + 1e-6);
        if (std::isfinite(c.lo) && c.var > 0) { /* the bounds are reached, not just respected */
            CHECK(s.lo < c.lo + 0.02 * (c.hi - c.lo));
            CHECK(s.hi > c.hi - 0.02 * (c.hi - c.lo));
        } else if (c.var > 0) { /* untruncated: values beyond 2.5 standard deviations exist */
            CHECK(std::max(c.mean - s.lo, s.hi - c.mean) > 2.5 * sd);
        }
    }
    /* the glorot/he/lecun presets draw exactly what nnlite drew before the
       table (same seed, same weights): replay the formulas */
    std::vector<float> w = draw("glorot_uniform", S, 3);
    nnl::Rng r(3);
    bool same = true;
    for (float v : w) same = same && v == (float)((r.uniform() * 2 - 1) * std::sqrt(6.0 / (fi + fo)));
    CHECK(same);
    w = draw("he_normal", S, 4);
    r.reseed(4);
    same = true;
    for (float v : w) {
        float z;
        do z = r.normal();
        while (std::fabs(z) > 2.f);
        same = same && v == (float)(z * (std::sqrt(2.0 / fi) / tn));
    }
    CHECK(same);
    w = draw("random_normal", S, 5);
    r.reseed(5);
    same = true;
    for (float v : w) same = same && v == 0.05f * r.normal();
    CHECK(same);
    /* Keras 2's distribution='normal' is the truncated normal */
    CHECK(draw("VarianceScaling(distribution='normal')", S) == draw("VarianceScaling()", S));
    /* a convolution kernel's fans: receptive field x channels */
    Stats c = stats(draw("he_uniform", nnl::Shape{5, 5, 16, 32}));
    CHECK(c.var == doctest::Approx(2.0 / (25 * 16)).epsilon(0.05));
}

TEST_CASE("orthogonal is Keras' Orthogonal: orthonormal, sign-corrected QR of a normal matrix, times gain") {
    struct Case {
        nnl::Shape s;
        const char *spec;
        double gain;
    } cases[] = {{nnl::Shape{64, 32}, "orthogonal", 1.0},
                 {nnl::Shape{32, 64}, "Orthogonal", 1.0},
                 {nnl::Shape{20, 20}, "Orthogonal(gain=2.0)", 2.0},
                 {nnl::Shape{150, 70}, "orthogonal", 1.0}, /* several panels of 32 reflectors */
                 {nnl::Shape{70, 150}, "orthogonal", 1.0},
                 {nnl::Shape{100, 100}, "Orthogonal(gain=0.5)", 0.5},
                 {nnl::Shape{3, 3, 8, 16}, "orthogonal", 1.0},
                 {nnl::Shape{1, 16}, "orthogonal", 1.0}};
    for (auto &c : cases) {
        CAPTURE(c.s.str(false));
        std::vector<float> w = draw(c.spec, c.s, 21);
        int64_t r = c.s.size() / c.s.last(), cols = c.s.last(), M = std::max(r, cols), N = std::min(r, cols);
        /* Q (M, N) with orthonormal columns: W = gain Q (r >= c) or gain Q^T */
        auto q = [&](int64_t i, int64_t j) { return (r >= cols ? w[(size_t)(i * cols + j)] : w[(size_t)(j * cols + i)]) / c.gain; };
        double worst = 0;
        for (int64_t a = 0; a < N; a++)
            for (int64_t b = 0; b < N; b++) {
                double dot = 0;
                for (int64_t i = 0; i < M; i++) dot += q(i, a) * q(i, b);
                worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
            }
        CHECK(worst < 1e-5);
        /* the draw replayed: R = Q^T A is upper triangular with a positive diagonal */
        nnl::Rng rng(21);
        std::vector<double> A((size_t)(M * N));
        for (auto &x : A) x = rng.normal();
        double below = 0, mindiag = INFINITY;
        for (int64_t a = 0; a < N; a++)
            for (int64_t b = 0; b <= a; b++) {
                double rab = 0;
                for (int64_t i = 0; i < M; i++) rab += q(i, a) * A[(size_t)(i * N + b)];
                if (a == b) mindiag = std::min(mindiag, rab);
                else below = std::max(below, std::fabs(rab));
            }
        CHECK(below < 1e-4);
        CHECK(mindiag > 0);
    }
    /* as a layer's kernel; and refused (before the layer is added) where Keras refuses it */
    nnl_model m;
    REQUIRE(nnl_add(&m, "Dense(4, kernel_initializer='orthogonal', input_shape=(8,))") == NNL_OK);
    CHECK(nnl_add(&m, "Dense(4, bias_initializer='orthogonal')") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("'bias' of shape (4,)") != std::string::npos);
    CHECK(nnl_add(&m, "Dense(4, kernel_initializer='nosuch')") == NNL_ERR_ARGUMENT);
    nnl_model big; /* 20000 x 20000: hours of QR, refused before anything is allocated */
    REQUIRE(nnl_add(&big, "Input(shape=(20000,))") == NNL_OK);
    CHECK(nnl_add(&big, "Dense(20000, kernel_initializer='orthogonal')") == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("too large for Orthogonal") != std::string::npos);
    CHECK(big.layers.empty());
    CHECK(m.layers.size() == 1); /* a refused initializer leaves no half-added layer */
    REQUIRE(nnl_add(&m, "Dense(4, kernel_initializer=\"VarianceScaling(scale=2.0, mode='fan_in')\")") == NNL_OK);
    CHECK(m.layers.size() == 2);
}

TEST_CASE("initializers in Keras JSON: round trips, and the forms of standalone Keras 2.0-2.3") {
    using nnl::files::Json;
    auto parse = [](const std::string &t) { return nnl::files::parse_json(t.c_str(), t.size(), "t"); };
    auto back = [&](const std::string &json) {
        return nnl::files::init_value(parse(json), "layer 1", "kernel_initializer").str;
    };
    struct Written {
        const char *spec, *json;
    } written[] = {
        {"glorot_uniform", "{\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}"},
        {"zeros", "{\"class_name\": \"Zeros\", \"config\": {}}"},
        {"orthogonal", "{\"class_name\": \"Orthogonal\", \"config\": {\"gain\": 1.0, \"seed\": null}}"},
        {"VarianceScaling(scale=2.0, mode='fan_in')",
         "{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 2.0, \"mode\": \"fan_in\", "
         "\"distribution\": \"truncated_normal\", \"seed\": null}}"},
        {"random_uniform",
         "{\"class_name\": \"RandomUniform\", \"config\": {\"minval\": -0.05, \"maxval\": 0.05, \"seed\": null}}"},
        {"RandomNormal(mean=0.5, stddev=0.01)",
         "{\"class_name\": \"RandomNormal\", \"config\": {\"mean\": 0.5, \"stddev\": 0.01, \"seed\": null}}"},
        {"TruncatedNormal(stddev=0.02)",
         "{\"class_name\": \"TruncatedNormal\", \"config\": {\"mean\": 0.0, \"stddev\": 0.02, \"seed\": null}}"},
        {"Constant(0.1)", "{\"class_name\": \"Constant\", \"config\": {\"value\": 0.1}}"},
    };
    for (auto &w : written) {
        CAPTURE(w.spec);
        std::string j = nnl::files::json_text(nnl::files::init_json(w.spec));
        CHECK(j == w.json);
        std::string t = back(j);
        CHECK(nnl::parse_init(t, "t") == nnl::parse_init(w.spec, "t"));
        CHECK(nnl::files::json_text(nnl::files::init_json(t)) == j); /* to_json(from_json(x)) == x */
    }
    for (auto &d : nnl::kInitTable) { /* every entry round-trips */
        std::string j = nnl::files::json_text(nnl::files::init_json(d.name));
        CHECK(back(j) == d.name);
    }
    /* standalone Keras 2.0-2.3 (and tf.keras 1.x) wrote the presets as VarianceScaling */
    struct Old {
        const char *json, *same_as;
    } old[] = {
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 1.0, \"mode\": \"fan_avg\", \"distribution\": "
         "\"uniform\", \"seed\": null}}", "glorot_uniform"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 1.0, \"mode\": \"fan_avg\", \"distribution\": "
         "\"normal\", \"seed\": null}}", "glorot_normal"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 2.0, \"mode\": \"fan_in\", \"distribution\": "
         "\"uniform\", \"seed\": null}}", "he_uniform"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 2.0, \"mode\": \"fan_in\", \"distribution\": "
         "\"normal\", \"seed\": null}}", "he_normal"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 1.0, \"mode\": \"fan_in\", \"distribution\": "
         "\"uniform\", \"seed\": null}}", "lecun_uniform"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 1.0, \"mode\": \"fan_in\", \"distribution\": "
         "\"truncated_normal\", \"seed\": null}}", "lecun_normal"},
        {"{\"class_name\": \"RandomUniform\", \"config\": {\"minval\": -0.05, \"maxval\": 0.05, \"seed\": null}}",
         "random_uniform"},
        {"{\"class_name\": \"RandomNormal\", \"config\": {\"mean\": 0.0, \"stddev\": 0.05, \"seed\": null}}",
         "random_normal"},
        {"{\"class_name\": \"Orthogonal\", \"config\": {\"gain\": 1.0, \"seed\": null}}", "orthogonal"},
        {"{\"module\": \"keras.initializers\", \"class_name\": \"Orthogonal\", \"config\": {\"gain\": 1.0, \"seed\": "
         "null}, \"registered_name\": null}", "orthogonal"},
        {"{\"class_name\": \"Zeros\", \"config\": {}}", "zeros"},
        {"\"he_normal\"", "he_normal"},
    };
    for (auto &o : old) {
        CAPTURE(o.json);
        std::string t = back(o.json);
        CHECK(draw(t, nnl::Shape{40, 30}) == draw(o.same_as, nnl::Shape{40, 30})); /* the very same weights */
    }
    CHECK(back("{\"class_name\": \"RandomUniform\", \"config\": {\"minval\": -0.1, \"maxval\": 0.1, \"seed\": null}}") ==
          "RandomUniform(minval=-0.1, maxval=0.1)");
    CHECK(back("{\"class_name\": \"Constant\", \"config\": {\"value\": 0}}") == "constant");
    CHECK(back("{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 2.0, \"mode\": \"fan_out\", "
               "\"distribution\": \"uniform\", \"seed\": null}}") ==
          "VarianceScaling(scale=2, mode='fan_out', distribution='uniform')");
    struct Bad {
        const char *json;
        int status;
        const char *says;
    } bads[] = {
        {"{\"class_name\": \"Identity\", \"config\": {\"gain\": 1.0}}", NNL_ERR_UNSUPPORTED, "'Identity' is not supported"},
        {"{\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": 42}}", NNL_ERR_UNSUPPORTED, "seed=42"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"mode\": \"fan_up\"}}", NNL_ERR_ARGUMENT, "fan_up"},
        {"{\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": \"big\"}}", NNL_ERR_FORMAT, "scale"},
        {"{\"class_name\": \"RandomUniform\", \"config\": {\"minval\": 0, \"low\": 1}}", NNL_ERR_UNSUPPORTED, "low"},
        {"{\"class_name\": \"GlorotUniform\", \"config\": {\"scale\": 1.0}}", NNL_ERR_UNSUPPORTED, "scale"},
        {"{\"config\": {}}", NNL_ERR_FORMAT, "class_name"},
    };
    for (auto &b : bads) {
        CAPTURE(b.json);
        try {
            back(b.json);
            FAIL("accepted");
        } catch (const nnl::Error &e) {
            CHECK(e.status == b.status);
            CHECK_MESSAGE(e.msg.find(b.says) != std::string::npos, e.msg);
            CHECK_MESSAGE(e.msg.find("layer 1: ") == 0, e.msg);
            CHECK_MESSAGE(e.msg.find("kernel_initializer") != std::string::npos, e.msg);
        }
    }
}

TEST_CASE("a Keras 2.2 model file's initializers load and give the same weights as the named ones") {
    const char *keras22 =
        R"({"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [)"
        R"({"class_name": "Dense", "config": {"name": "dense_1", "trainable": true, "batch_input_shape": [null, 20], "dtype": "float32", "units": 16, "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}, )"
        R"({"class_name": "Dense", "config": {"name": "dense_2", "trainable": true, "units": 4, "activation": "softmax", "use_bias": true, "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}]}, "keras_version": "2.2.4", "backend": "tensorflow"})";
    nnl_model a, b;
    nnl_model_set_seed(&a, 9);
    nnl_model_set_seed(&b, 9);
    std::string t = keras22;
    nnl::files::model_from_json(a, nnl::files::parse_json(t.c_str(), t.size(), "t"));
    REQUIRE(nnl_add(&b, "Dense(16, activation='relu', input_shape=(20,))") == NNL_OK);
    REQUIRE(nnl_add(&b, "Dense(4, activation='softmax', kernel_initializer='he_normal')") == NNL_OK);
    CHECK(a.W == b.W);
    CHECK(a.layers[0]->name == "dense_1");
}
