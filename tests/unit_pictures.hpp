/* The SVG pictures (nnlite.cpp section 7) on histories made to order: the
   shapes a fit seldom gives on demand (curves crossing, accuracy at 1.0,
   curves everywhere so that no corner is free, NaN gaps, long runs) and the
   helpers (round ticks, XML escaping). The same checks run on pictures of
   real fits through the C ABI in tests/api_pictures.cpp. */
#include "svg_check.hpp"

namespace {

/* A model whose history is `epochs` epochs of f(metric, epoch, validation). */
nnl::Model picture_model(int epochs, bool validation, double (*f)(bool acc, int e, bool val)) {
    nnl::Model m;
    m.hist_keys = {"loss", "accuracy"};
    if (validation) m.hist_keys.insert(m.hist_keys.end(), {"val_loss", "val_accuracy"});
    m.hist.assign(m.hist_keys.size(), {});
    for (size_t k = 0; k < m.hist_keys.size(); k++)
        for (int e = 0; e < epochs; e++) m.hist[k].push_back(f(k % 2 == 1, e, k >= 2));
    m.hist_epochs = epochs;
    return m;
}

double kmlp_like(bool acc, int e, bool val) { /* validation loss turns up: the curves cross */
    if (!acc) return val ? 0.34 - 0.04 * std::log(1.0 + e) + 0.0013 * e * e : 0.5 * std::exp(-0.08 * e) + 0.1;
    return val ? 0.86 + 0.03 * (1 - std::exp(-0.3 * e)) : 0.82 + 0.17 * (1 - std::exp(-0.1 * e));
}
double near_one(bool acc, int e, bool val) { /* train accuracy reaches 1.0 exactly */
    if (!acc) return val ? 0.05 + 0.02 * std::exp(-0.2 * e) : 0.1 * std::exp(-0.3 * e);
    return val ? 0.985 + 0.01 * (1 - std::exp(-0.3 * e)) : std::min(1.0, 0.95 + 0.01 * e);
}
double crossing(bool acc, int e, bool val) { /* an X through the middle */
    double t = e / 29.0;
    return (val != acc) ? 0.9 - 0.6 * t : 0.2 + 0.6 * t;
}
double zigzag(bool, int e, bool val) { /* curves over the whole plot: no free corner */
    return (e % 2 ? 0.9 : 0.1) + (val ? 0.05 : 0);
}
double constant(bool acc, int, bool) { return acc ? 1.0 : 0.0; }

} // namespace

TEST_CASE("pictures: round ticks in 1-2-5 steps") {
    int d = -1;
    CHECK(nnl::nice_ticks(0.81, 0.99, 7, false, &d) == std::vector<double>{0.85, 0.9, 0.95});
    CHECK(d == 2);
    CHECK(nnl::nice_ticks(0.08, 1.4, 7, false, &d) == std::vector<double>{0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4});
    CHECK(d == 1);
    CHECK(nnl::nice_ticks(1, 30, 8, true, &d) == std::vector<double>{5, 10, 15, 20, 25, 30});
    CHECK(d == 0);
    CHECK(nnl::nice_ticks(1, 1, 1, true, nullptr) == std::vector<double>{1});
    CHECK(nnl::nice_ticks(1, 2, 2, true, nullptr) == std::vector<double>{1, 2});
    std::vector<double> t = nnl::nice_ticks(-0.013, 0.013, 7, false, &d);
    std::string why;
    CHECK_MESSAGE(svgcheck::round_ticks(t, &why), why);
    CHECK(std::find(t.begin(), t.end(), 0.0) != t.end()); /* 0 is "0.000", never "-0.000" */
    for (double big : {3e4, 7e-7}) {
        t = nnl::nice_ticks(big, 3 * big, 7, false, &d);
        CHECK_MESSAGE(svgcheck::round_ticks(t, &why), why);
        CHECK(t.size() >= 3);
    }
}

TEST_CASE("pictures: training curves of 1, 2, 30 and 200 epochs, with and without validation") {
    for (int epochs : {1, 2, 30, 200})
        for (bool val : {false, true}) {
            CAPTURE(epochs);
            CAPTURE(val);
            std::string svg = nnl::svg_history(picture_model(epochs, val, kmlp_like));
            CHECK(svgcheck::history_problems(svg, epochs) == "");
        }
    /* one epoch: its points are there to see, one marker per series per panel */
    std::string one = nnl::svg_history(picture_model(1, true, kmlp_like));
    size_t markers = 0;
    for (size_t at = one.find("class='marker'"); at != std::string::npos; at = one.find("class='marker'", at + 1))
        markers++;
    CHECK(markers == 2 * 2 + 2 * 2); /* 2 panels x 2 series, plus the legends' samples */
}

TEST_CASE("pictures: the legend finds room, or goes outside, and never covers a curve") {
    for (auto f : {kmlp_like, near_one, crossing, zigzag, constant}) {
        std::string svg = nnl::svg_history(picture_model(30, true, f));
        CHECK(svgcheck::history_problems(svg, 30) == "");
    }
    /* curves everywhere: the legend sits below the plot */
    std::string svg = nnl::svg_history(picture_model(30, true, zigzag));
    std::vector<svgcheck::Element> el;
    REQUIRE(svgcheck::parse(svg, el, nullptr));
    for (const auto &e : el)
        if (e.has_class("legend-box")) CHECK(e.attr.at("fill") == "none");
    /* accuracy at 1.0: the top tick is 1.00, not above the data's range */
    std::string top = nnl::svg_history(picture_model(30, true, near_one));
    CHECK(top.find(">1.00</text>") != std::string::npos);
    CHECK(top.find(">1.05</text>") == std::string::npos);
}

TEST_CASE("pictures: NaN epochs break the curve; the picture stays well-formed") {
    nnl::Model m = picture_model(12, true, kmlp_like);
    m.hist[0][4] = NAN, m.hist[2][7] = INFINITY, m.hist[1].assign(12, NAN); /* accuracy all NaN */
    std::string svg = nnl::svg_history(m), err;
    std::vector<svgcheck::Element> el;
    CHECK_MESSAGE(svgcheck::parse(svg, el, &err), err);
    CHECK(svg.find("nan") == std::string::npos);
    CHECK(svg.find("inf") == std::string::npos);
}

TEST_CASE("pictures: confusion matrices of 2, 10 and 40 classes, counts and normalised, long labels") {
    const std::vector<std::string> fashion = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    std::vector<const char *> names;
    for (auto &s : fashion) names.push_back(s.c_str());
    for (int n : {2, 10, 40})
        for (bool norm : {false, true})
            for (bool labelled : {false, true}) {
                if (labelled && n != 10) continue;
                CAPTURE(n);
                CAPTURE(norm);
                std::vector<int64_t> cm((size_t)n * n);
                for (int t = 0; t < n; t++)
                    for (int p = 0; p < n; p++) cm[(size_t)(t * n + p)] = t == p ? 900 + 7 * t : (t * 7 + p * 3) % 23;
                std::string svg = nnl::svg_confusion(cm.data(), n, labelled ? names.data() : nullptr, norm, nullptr);
                CHECK(svgcheck::confusion_problems(svg, n, labelled ? fashion : std::vector<std::string>{}) == "");
            }
    /* a count of a million still fits its cell; an all-zero matrix has a colour bar */
    int64_t big[4] = {1000000, 3, 0, 999999}, zero[4] = {0, 0, 0, 0};
    CHECK(svgcheck::confusion_problems(nnl::svg_confusion(big, 2, nullptr, false, "a long title for two classes"), 2, {}) == "");
    CHECK(svgcheck::confusion_problems(nnl::svg_confusion(zero, 2, nullptr, false, nullptr), 2, {}) == "");
}

TEST_CASE("pictures: labels with markup, quotes, control bytes or invalid UTF-8 give well-formed XML") {
    const char *labels[3] = {"a<b & 'c' \"d\"", "bad \xC3\x28 \xFF \x01 end", "caf\xC3\xA9 \xE2\x82\xAC"};
    int64_t cm[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    std::string svg = nnl::svg_confusion(cm, 3, labels, false, "<title> & \xF0\x28\x8C\x28"), err;
    std::vector<svgcheck::Element> el;
    CHECK_MESSAGE(svgcheck::parse(svg, el, &err), err);
    CHECK(svg.find("a&lt;b &amp; &apos;c&apos; &quot;d&quot;") != std::string::npos);
    CHECK(svg.find("caf\xC3\xA9 \xE2\x82\xAC") != std::string::npos); /* valid UTF-8 is kept */
    CHECK(nnl::xml_escape("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD"); /* an overlong '/' is refused */
    CHECK(nnl::xml_escape("\xED\xA0\x80").find("\xEF\xBF\xBD") == 0);  /* a surrogate too */
}

TEST_CASE("pictures: the structural checks catch what they are for") {
    std::string good = nnl::svg_history(picture_model(30, true, crossing));
    REQUIRE(svgcheck::history_problems(good, 30) == "");
    auto replaced = [](std::string s, const std::string &from, const std::string &to) {
        size_t at = s.find(from);
        REQUIRE(at != std::string::npos);
        return s.replace(at, from.size(), to);
    };
    /* unquoted attribute, a stray '&', an unclosed element */
    CHECK(svgcheck::history_problems(replaced(good, "font-size='16'", "font-size=16"), 30) != "");
    CHECK(svgcheck::history_problems(replaced(good, ">model loss<", ">model & loss<"), 30) != "");
    CHECK(svgcheck::history_problems(replaced(good, "</svg>", ""), 30) != "");
    /* points without markers */
    std::string bare = good;
    for (size_t at; (at = bare.find("<circle class='marker'")) != std::string::npos;) bare.replace(at, 22, "<circle class='dot'");
    CHECK(svgcheck::history_problems(bare, 30) != "");
    /* a tick off the round step */
    std::vector<svgcheck::Element> el;
    REQUIRE(svgcheck::parse(good, el, nullptr));
    std::string first_tick;
    for (auto &e : el)
        if (e.has_class("tick-y") && first_tick.empty()) first_tick = ">" + e.text + "</text>";
    CHECK(svgcheck::history_problems(replaced(good, first_tick, ">0.37</text>"), 30) != "");
    /* a curve through the legend box */
    svgcheck::Box lb{};
    for (auto &e : el)
        if (e.has_class("legend-box")) lb = svgcheck::box_of(e);
    std::string through = nnl::format("<polyline class='curve' points='%.1f,%.1f %.1f,%.1f'/>", lb.x0 + 1, lb.y0 + 1,
                                       lb.x1 - 1, lb.y1 - 1);
    CHECK(svgcheck::history_problems(replaced(good, "<g class='panel'>\n", "<g class='panel'>\n" + through), 30) != "");
    /* a wide gap between 'True label' and the row labels */
    int64_t cm[4] = {5, 1, 2, 6};
    std::string c = nnl::svg_confusion(cm, 2, nullptr, false, nullptr);
    REQUIRE(svgcheck::confusion_problems(c, 2, {}) == "");
    CHECK(svgcheck::confusion_problems(replaced(c, "<text x='22'", "<text x='2'"), 2, {}) != "");
}

TEST_CASE("pictures: image grids (originals above reconstructions) draw every pixel back exactly") {
    struct Case {
        int rows, cols, h, w;
        std::vector<std::string> labels;
        const char *title;
    };
    for (const Case &c : {Case{2, 10, 28, 28, {"original", "reconstruction"}, "dense autoencoder"},
                          Case{3, 4, 5, 7, {"a<b & c", "", "third row, a longer label"}, nullptr},
                          Case{1, 1, 1, 1, {}, nullptr}, Case{2, 3, 60, 40, {"x", "y"}, "t"}}) {
        CAPTURE(c.rows);
        CAPTURE(c.h);
        size_t n = (size_t)c.rows * c.cols * c.h * c.w;
        std::vector<float> img(n);
        std::vector<int> want(n);
        for (size_t i = 0; i < n; i++) { /* every level, runs, values out of range and NaN */
            float v = (float)((i * 37 % 300) / 255.0) - 0.05f;
            if (i % 11 < 4) v = 0.5f; /* runs of one level */
            if (i % 97 == 5) v = NAN;
            img[i] = v;
            want[i] = std::isnan(v) ? 256 : (int)std::lround(255.0 * std::min(1.0f, std::max(0.0f, v)));
        }
        std::vector<const char *> lp;
        for (auto &l : c.labels) lp.push_back(l.c_str());
        std::string svg = nnl::svg_images(img.data(), c.rows, c.cols, c.h, c.w, lp.empty() ? nullptr : lp.data(),
                                          c.title);
        CHECK(svgcheck::images_problems(svg, c.rows, c.cols, c.h, c.w, want, c.labels) == "");
        if (c.h == 28) CHECK(svg.size() < 400000); /* 20 MNIST-sized images stay a small file */
    }
    /* the check sees a wrong pixel, a missing image and a label off the picture */
    std::vector<float> img(2 * 3 * 4 * 4, 0.25f);
    std::vector<int> want(img.size(), 64);
    const char *lab[2] = {"originals", "reconstructions"};
    std::string good = nnl::svg_images(img.data(), 2, 3, 4, 4, lab, nullptr);
    REQUIRE(svgcheck::images_problems(good, 2, 3, 4, 4, want, {"originals", "reconstructions"}) == "");
    want[5] = 65;
    CHECK(svgcheck::images_problems(good, 2, 3, 4, 4, want, {"originals", "reconstructions"}) != "");
    want[5] = 64;
    CHECK(svgcheck::images_problems(good, 2, 4, 4, 4, want, {"originals", "reconstructions"}) != "");
    std::string off = good;
    size_t at = off.find("class='label-row' x='");
    REQUIRE(at != std::string::npos);
    off.replace(at + 21, 1, "-");
    CHECK(svgcheck::images_problems(off, 2, 3, 4, 4, want, {"originals", "reconstructions"}) != "");
}

TEST_CASE("pictures: line plots (forecast against truth): panels, round ticks, legend above, NaN breaks a line") {
    const int P = 3, S = 3, N = 300;
    std::vector<float> x(N), y((size_t)P * S * N);
    for (int i = 0; i < N; i++) x[(size_t)i] = 0.01f * (float)i;
    for (int p = 0; p < P; p++)
        for (int k = 0; k < S; k++)
            for (int i = 0; i < N; i++)
                y[((size_t)p * S + k) * N + (size_t)i] = (float)((p + 1) * 10 * std::sin(0.05 * i + k) + (k == 2 ? 3 : 0));
    const char *names[S] = {"truth", "forecast", "persistence"}, *labels[P] = {"x", "y", "z"};
    std::string svg = nnl::svg_lines(x.data(), y.data(), P, S, N, names, labels, "time", "Lorenz-63");
    CHECK(svgcheck::lines_problems(svg, P, P * S, true) == "");
    CHECK(svg.find("stroke-dasharray") != std::string::npos); /* the third series is dashed */
    /* a NaN splits its line in two; no legend and no x values: indices */
    y[50] = NAN;
    svg = nnl::svg_lines(nullptr, y.data(), P, S, N, nullptr, nullptr, nullptr, nullptr);
    CHECK(svgcheck::lines_problems(svg, P, P * S + 1, false) == "");
    /* one panel, one constant series of one point */
    float one = 2.5f;
    CHECK(svgcheck::lines_problems(nnl::svg_lines(nullptr, &one, 1, 1, 1, nullptr, nullptr, nullptr, nullptr), 1, 1,
                                   false) == "");
    /* the check sees a point outside its panel */
    std::string good = nnl::svg_lines(x.data(), y.data(), 1, 2, 10, names, nullptr, nullptr, nullptr);
    REQUIRE(svgcheck::lines_problems(good, 1, 2, true) == "");
    size_t at = good.find("points='");
    REQUIRE(at != std::string::npos);
    CHECK(svgcheck::lines_problems(good.insert(at + 8, "9999,9999 "), 1, 2, true) != "");
}
