/* svg_check.hpp - structural checks of nnlite's SVG pictures, shared by the
   API tests (tests/api_pictures.cpp) and the unit tests
   (tests/unit_pictures.hpp): a small XML reader that refuses anything not
   well-formed, and the geometry the pictures promise (points marked, ticks
   at round values, a legend that meets no curve, labels inside the picture).
   Standard C++17 only. */
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace svgcheck {

struct Element {
    std::string name;
    std::map<std::string, std::string> attr;
    std::string text;  /* the character data directly inside, entities decoded */
    int parent = -1;   /* index into the element list, -1 for the root */
    double num(const char *a) const {
        auto it = attr.find(a);
        return it == attr.end() ? NAN : std::strtod(it->second.c_str(), nullptr);
    }
    bool has_class(const char *c) const {
        auto it = attr.find("class");
        return it != attr.end() && it->second == c;
    }
};

/* Valid UTF-8 (no overlong forms, no surrogates). */
inline bool utf8_valid(const std::string &s) {
    const auto *u = (const unsigned char *)s.data();
    size_t n = s.size();
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return false;
        unsigned cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (len > 1 && cp < (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u)) return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        if (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') return false;
        i += len;
    }
    return true;
}

/* Parses an XML document into its elements (document order). On anything
   not well-formed returns false and says why in *err. Handles what SVG
   writers use: a declaration, elements, attributes in ' or ", character
   data with the five entities and character references. */
inline bool parse(const std::string &s, std::vector<Element> &out, std::string *err) {
    auto fail = [&](const std::string &why, size_t at) {
        if (err) *err = why + " at byte " + std::to_string(at);
        return false;
    };
    if (!utf8_valid(s)) return fail("not UTF-8 (or a control character)", 0);
    out.clear();
    std::vector<int> stack;
    size_t i = 0, n = s.size();
    bool root_done = false;
    auto decode = [&](const std::string &raw, std::string &dst, size_t at) {
        for (size_t k = 0; k < raw.size(); k++) {
            if (raw[k] == '<') return fail("'<' in character data", at);
            if (raw[k] != '&') {
                dst += raw[k];
                continue;
            }
            size_t semi = raw.find(';', k);
            if (semi == std::string::npos) return fail("'&' without ';'", at);
            std::string ent = raw.substr(k + 1, semi - k - 1);
            if (ent == "lt") dst += '<';
            else if (ent == "gt") dst += '>';
            else if (ent == "amp") dst += '&';
            else if (ent == "quot") dst += '"';
            else if (ent == "apos") dst += '\'';
            else if (ent.size() > 1 && ent[0] == '#') dst += '?';
            else return fail("unknown entity &" + ent + ";", at);
            k = semi;
        }
        return true;
    };
    auto is_name = [](char c) { return isalnum((unsigned char)c) || c == '-' || c == '_' || c == ':' || c == '.'; };
    while (i < n) {
        if (s[i] != '<') {
            size_t j = s.find('<', i);
            if (j == std::string::npos) j = n;
            std::string raw = s.substr(i, j - i), txt;
            if (!decode(raw, txt, i)) return false;
            if (stack.empty()) {
                if (txt.find_first_not_of(" \t\r\n") != std::string::npos) return fail("text outside the root", i);
            } else {
                out[(size_t)stack.back()].text += txt;
            }
            i = j;
            continue;
        }
        if (s.compare(i, 5, "<?xml") == 0) {
            if (i != 0) return fail("XML declaration not at the start", i);
            size_t j = s.find("?>", i);
            if (j == std::string::npos) return fail("unterminated declaration", i);
            i = j + 2;
            continue;
        }
        if (s.compare(i, 4, "<!--") == 0) {
            size_t j = s.find("-->", i);
            if (j == std::string::npos) return fail("unterminated comment", i);
            i = j + 3;
            continue;
        }
        if (s.compare(i, 2, "</") == 0) {
            size_t j = i + 2, k = j;
            while (k < n && is_name(s[k])) k++;
            std::string name = s.substr(j, k - j);
            while (k < n && isspace((unsigned char)s[k])) k++;
            if (k >= n || s[k] != '>') return fail("bad end tag", i);
            if (stack.empty() || out[(size_t)stack.back()].name != name) return fail("mismatched </" + name + ">", i);
            stack.pop_back();
            if (stack.empty()) root_done = true;
            i = k + 1;
            continue;
        }
        /* start tag */
        if (root_done) return fail("a second root element", i);
        size_t k = i + 1;
        while (k < n && is_name(s[k])) k++;
        Element e;
        e.name = s.substr(i + 1, k - i - 1);
        if (e.name.empty()) return fail("bad start tag", i);
        e.parent = stack.empty() ? -1 : stack.back();
        bool closed = false;
        for (;;) {
            size_t ws = k;
            while (k < n && isspace((unsigned char)s[k])) k++;
            if (k >= n) return fail("unterminated tag <" + e.name, i);
            if (s[k] == '>') {
                k++;
                break;
            }
            if (s.compare(k, 2, "/>") == 0) {
                closed = true;
                k += 2;
                break;
            }
            if (ws == k) return fail("no space before an attribute in <" + e.name, k);
            size_t a = k;
            while (k < n && is_name(s[k])) k++;
            std::string an = s.substr(a, k - a);
            if (an.empty() || k >= n || s[k] != '=') return fail("bad attribute in <" + e.name, a);
            k++;
            if (k >= n || (s[k] != '\'' && s[k] != '"')) return fail("unquoted attribute " + an, k);
            char q = s[k++];
            size_t end = s.find(q, k);
            if (end == std::string::npos) return fail("unterminated attribute " + an, k);
            std::string val;
            if (!decode(s.substr(k, end - k), val, k)) return false;
            if (e.attr.count(an)) return fail("attribute " + an + " twice", a);
            e.attr[an] = val;
            k = end + 1;
        }
        out.push_back(e);
        if (!closed) stack.push_back((int)out.size() - 1);
        else if (stack.empty()) root_done = true;
        i = k;
    }
    if (!stack.empty()) return fail("unclosed <" + out[(size_t)stack.back()].name + ">", n);
    if (out.empty() || out[0].name != "svg") return fail("the root is not <svg>", 0);
    return true;
}

/* Is element i inside an element of class c (or is it)? Returns that
   ancestor's index, or -1. */
inline int ancestor_of_class(const std::vector<Element> &el, int i, const char *c) {
    for (; i >= 0; i = el[(size_t)i].parent)
        if (el[(size_t)i].has_class(c)) return i;
    return -1;
}

/* 1, 2 or 5 times a power of ten. */
inline bool round_step(double step) {
    if (!(step > 0)) return false;
    double p = std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    double m = step / p;
    return std::fabs(m - 1) < 1e-6 || std::fabs(m - 2) < 1e-6 || std::fabs(m - 5) < 1e-6;
}

/* Tick values are evenly spaced by a round step and each is a multiple of
   it; *why says what is wrong. */
inline bool round_ticks(const std::vector<double> &v, std::string *why) {
    if (v.empty()) {
        *why = "no ticks";
        return false;
    }
    if (v.size() == 1) return true;
    double step = v[1] - v[0];
    if (!round_step(step)) {
        *why = "step " + std::to_string(step) + " is not 1, 2 or 5 times a power of ten";
        return false;
    }
    for (size_t k = 0; k < v.size(); k++) {
        double q = v[k] / step;
        if (std::fabs(q - std::round(q)) > 1e-6 || (k > 0 && std::fabs(v[k] - v[k - 1] - step) > 1e-6 * step)) {
            *why = "tick " + std::to_string(v[k]) + " is off the step " + std::to_string(step);
            return false;
        }
    }
    return true;
}

struct Box {
    double x0, y0, x1, y1;
};
inline Box box_of(const Element &e) {
    return {e.num("x"), e.num("y"), e.num("x") + e.num("width"), e.num("y") + e.num("height")};
}

inline bool segment_meets(double ax, double ay, double bx, double by, const Box &b) {
    double t0 = 0, t1 = 1, dx = bx - ax, dy = by - ay;
    const double p[4] = {-dx, dx, -dy, dy}, q[4] = {ax - b.x0, b.x1 - ax, ay - b.y0, b.y1 - ay};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
        } else {
            double r = q[i] / p[i];
            if (p[i] < 0) t0 = std::max(t0, r);
            else t1 = std::min(t1, r);
            if (t0 > t1) return false;
        }
    }
    return true;
}

inline std::vector<std::pair<double, double>> points_of(const Element &polyline) {
    std::vector<std::pair<double, double>> p;
    const char *s = polyline.attr.at("points").c_str();
    char *end;
    for (;;) {
        double x = std::strtod(s, &end);
        if (end == s) break;
        s = end;
        while (*s == ',' || *s == ' ') s++;
        double y = std::strtod(s, &end);
        if (end == s) break;
        s = end;
        p.push_back({x, y});
    }
    return p;
}

/* A marker's centre (circle or square). */
inline std::pair<double, double> marker_centre(const Element &m) {
    if (m.name == "circle") return {m.num("cx"), m.num("cy")};
    return {m.num("x") + m.num("width") / 2, m.num("y") + m.num("height") / 2};
}

/* Estimated width of text as nnlite lays it out (0.6 em per character). */
inline double text_width(const std::string &t, double fs) {
    size_t chars = 0;
    for (unsigned char c : t) chars += (c & 0xC0) != 0x80;
    return 0.6 * fs * (double)chars;
}

/* Everything wrong with a training-curves picture of `epochs` epochs whose
   values are all finite ("" when nothing is): well-formed; per panel round
   ticks (epochs whole and in 1..epochs) inside the frame, every point inside
   the frame and marked (up to 60 epochs), and a legend whose box holds its
   entries and meets no curve or marker. */
inline std::string history_problems(const std::string &svg, int epochs) {
    std::vector<Element> el;
    std::string err;
    if (!parse(svg, el, &err)) return "not well-formed XML: " + err;
    const double W = el[0].num("width"), H = el[0].num("height");
    if (!(W > 0 && H > 0) || !el[0].attr.count("viewBox")) return "the svg has no size or viewBox";
    int panels = 0;
    for (int p = 0; p < (int)el.size(); p++) {
        if (!el[(size_t)p].has_class("panel")) continue;
        panels++;
        std::string where = "panel " + std::to_string(panels) + ": ";
        const Element *frame = nullptr, *legend = nullptr;
        std::vector<double> xt, yt;
        std::vector<const Element *> curves, markers, legend_items;
        for (int i = p + 1; i < (int)el.size() && ancestor_of_class(el, i, "panel") == p; i++) {
            const Element &e = el[(size_t)i];
            bool in_legend = ancestor_of_class(el, i, "legend") >= 0;
            if (e.has_class("frame")) frame = &e;
            else if (e.has_class("legend-box")) legend = &e;
            else if (in_legend && (e.name == "line" || e.name == "text" || e.has_class("marker"))) legend_items.push_back(&e);
            else if (e.has_class("tick-x")) xt.push_back(std::strtod(e.text.c_str(), nullptr));
            else if (e.has_class("tick-y")) yt.push_back(std::strtod(e.text.c_str(), nullptr));
            else if (e.has_class("curve")) curves.push_back(&e);
            else if (e.has_class("marker")) markers.push_back(&e);
            if (e.name == "text" && !e.attr.count("transform")) {
                double x = e.num("x"), w = text_width(e.text, e.num("font-size"));
                std::string a = e.attr.count("text-anchor") ? e.attr.at("text-anchor") : "start";
                double x0 = a == "end" ? x - w : a == "middle" ? x - w / 2 : x;
                if (x0 < 0 || x0 + w > W + 0.5 || e.num("y") > H || e.num("y") < 0)
                    return where + "text '" + e.text + "' leaves the picture";
            }
        }
        if (!frame) return where + "no frame";
        if (!legend) return where + "no legend";
        const Box f = box_of(*frame), lb = box_of(*legend);
        if (!round_ticks(yt, &err)) return where + "y ticks: " + err;
        if (!round_ticks(xt, &err)) return where + "epoch ticks: " + err;
        for (double v : xt)
            if (v != std::round(v) || v < 1 || v > epochs) return where + "epoch tick " + std::to_string(v);
        for (const Element *e : curves)
            for (auto &q : points_of(*e))
                if (q.first < f.x0 || q.first > f.x1 || q.second < f.y0 || q.second > f.y1)
                    return where + "a curve point lies outside the frame";
        size_t series = 0;
        for (const Element *e : legend_items) series += e->name == "text";
        if (series == 0) return where + "the legend names no series";
        if (epochs <= 60 && markers.size() != series * (size_t)epochs)
            return where + std::to_string(markers.size()) + " markers for " + std::to_string(series) + " series of " +
                   std::to_string(epochs) + " epochs";
        for (const Element *m : markers) {
            auto c = marker_centre(*m);
            if (c.first < f.x0 || c.first > f.x1 || c.second < f.y0 || c.second > f.y1)
                return where + "a marker lies outside the frame";
            const double r = 3.5; /* marker half-size */
            if (c.first + r > lb.x0 && c.first - r < lb.x1 && c.second + r > lb.y0 && c.second - r < lb.y1)
                return where + "the legend covers a marker";
        }
        for (const Element *e : curves) {
            auto q = points_of(*e);
            for (size_t k = 0; k + 1 < q.size(); k++)
                if (segment_meets(q[k].first, q[k].second, q[k + 1].first, q[k + 1].second, lb))
                    return where + "the legend covers a curve";
        }
        for (const Element *e : legend_items) {
            double x0, x1, y;
            if (e->name == "line") x0 = e->num("x1"), x1 = e->num("x2"), y = e->num("y1");
            else if (e->name == "text") x0 = e->num("x"), x1 = x0 + text_width(e->text, e->num("font-size")), y = e->num("y");
            else x0 = x1 = marker_centre(*e).first, y = marker_centre(*e).second;
            if (x0 < lb.x0 || x1 > lb.x1 + 0.5 || y < lb.y0 || y > lb.y1)
                return where + "a legend entry sticks out of the legend box";
        }
        /* a legend inside the frame stays inside it; one outside stays out of it */
        bool in = lb.x0 >= f.x0 && lb.x1 <= f.x1 && lb.y0 >= f.y0 && lb.y1 <= f.y1;
        bool out = lb.y0 >= f.y1 || lb.y1 <= f.y0 || lb.x0 >= f.x1 || lb.x1 <= f.x0;
        if (!in && !out) return where + "the legend straddles the frame";
        if (lb.x0 < 0 || lb.x1 > W || lb.y0 < 0 || lb.y1 > H) return where + "the legend leaves the picture";
    }
    if (panels == 0) return "no panels";
    return "";
}

/* Everything wrong with a confusion-matrix picture of n classes ("" when
   nothing is): well-formed; n x n cells; the labels given (or 0..n-1) on
   both axes, inside the picture; no wide gap between the axis titles and
   the labels; round colour-bar ticks. */
inline std::string confusion_problems(const std::string &svg, int n, const std::vector<std::string> &labels) {
    std::vector<Element> el;
    std::string err;
    if (!parse(svg, el, &err)) return "not well-formed XML: " + err;
    const double W = el[0].num("width"), H = el[0].num("height");
    int cells = 0;
    std::vector<const Element *> ly, lx;
    std::vector<double> ct;
    const Element *true_title = nullptr, *pred_title = nullptr;
    for (const Element &e : el) {
        if (e.has_class("cell")) cells++;
        else if (e.has_class("label-y")) ly.push_back(&e);
        else if (e.has_class("label-x")) lx.push_back(&e);
        else if (e.has_class("tick-c")) ct.push_back(std::strtod(e.text.c_str(), nullptr));
        else if (e.name == "text" && e.text == "True label") true_title = &e;
        else if (e.name == "text" && e.text == "Predicted label") pred_title = &e;
    }
    if (cells != n * n) return std::to_string(cells) + " cells for " + std::to_string(n) + " classes";
    if ((int)ly.size() != n || (int)lx.size() != n) return "not one label per row and column";
    if (!true_title || !pred_title) return "no axis titles";
    if (!round_ticks(ct, &err)) return "colour bar ticks: " + err;
    double left_most = 1e300, bottom_most = 0;
    for (int i = 0; i < n; i++) {
        std::string want = i < (int)labels.size() ? labels[(size_t)i] : std::to_string(i);
        if (ly[(size_t)i]->text != want || lx[(size_t)i]->text != want) return "label " + std::to_string(i) + " is not '" + want + "'";
        double fs = ly[(size_t)i]->num("font-size"), w = text_width(want, fs);
        double yl = ly[(size_t)i]->num("x") - w; /* row labels end at x */
        left_most = std::min(left_most, yl);
        if (yl < 0) return "row label '" + want + "' leaves the picture";
        const Element &c = *lx[(size_t)i];
        double x = c.num("x"), y = c.num("y");
        if (c.attr.count("transform")) { /* turned 45 degrees, ending at (x, y) */
            double x0 = x - w * 0.7072, y1 = y + w * 0.7072;
            if (x0 < 0 || y1 > H) return "column label '" + want + "' leaves the picture";
            bottom_most = std::max(bottom_most, y1);
        } else {
            if (x - w / 2 < 0 || x + w / 2 > W || y > H) return "column label '" + want + "' leaves the picture";
            bottom_most = std::max(bottom_most, y);
        }
    }
    /* "True label" is turned -90 degrees about (x, y): its glyphs end about
       0.25 em right of x; "Predicted label" starts about 0.75 em above y */
    double gap_left = left_most - (true_title->num("x") + 0.25 * true_title->num("font-size"));
    double gap_below = (pred_title->num("y") - 0.75 * pred_title->num("font-size")) - bottom_most;
    if (gap_left < 0 || gap_left > 16) return "gap of " + std::to_string(gap_left) + " px between 'True label' and the row labels";
    if (gap_below < 0 || gap_below > 24)
        return "gap of " + std::to_string(gap_below) + " px between the column labels and 'Predicted label'";
    return "";
}

/* An image grid (nnl_plot_images) of rows x cols images of h x w pixels:
   well-formed; rows * cols image groups, each a black h x w square under its
   pixel paths, placed in a grid inside the picture without overlapping;
   every pixel drawn back from the paths (runs "M x y h n v 1 h -n z", each
   pixel covered once) equals want (levels 0..255, 256 for NaN, row-major,
   image after image); each non-empty row label inside the picture, left of
   its row and vertically within it. */
inline std::string images_problems(const std::string &svg, int rows, int cols, int h, int w,
                                   const std::vector<int> &want, const std::vector<std::string> &labels) {
    std::vector<Element> el;
    std::string err;
    if (!parse(svg, el, &err)) return "not well-formed: " + err;
    if (el.empty() || el[0].name != "svg") return "no svg root";
    const double W = el[0].num("width"), H = el[0].num("height");
    std::vector<int> groups;
    for (size_t i = 0; i < el.size(); i++)
        if (el[i].has_class("image")) groups.push_back((int)i);
    if ((int)groups.size() != rows * cols) return "image groups: " + std::to_string(groups.size());
    std::vector<double> gx, gy, gs;
    for (size_t k = 0; k < groups.size(); k++) {
        const Element &g = el[(size_t)groups[k]];
        double tx, ty, sc;
        auto it = g.attr.find("transform");
        if (it == g.attr.end() || sscanf(it->second.c_str(), "translate(%lf %lf) scale(%lf)", &tx, &ty, &sc) != 3)
            return "image group without translate(x y) scale(s)";
        if (tx < 0 || ty < 0 || tx + sc * w > W || ty + sc * h > H) return "an image leaves the picture";
        gx.push_back(tx), gy.push_back(ty), gs.push_back(sc);
        int r = (int)k / cols, c = (int)k % cols;
        if (c > 0 && (gy[k] != gy[k - 1] || gx[k] < gx[k - 1] + sc * w)) return "images of a row overlap or misalign";
        if (r > 0 && (gx[k] != gx[k - (size_t)cols] || gy[k] < gy[k - (size_t)cols] + sc * h))
            return "image rows overlap or misalign";
        std::vector<int> got((size_t)h * w, -1);
        bool bg = false;
        for (size_t i = 0; i < el.size(); i++) {
            if (el[i].parent != groups[k]) continue;
            const Element &e = el[i];
            if (e.has_class("image-bg")) {
                bg = e.num("width") == w && e.num("height") == h && e.attr.at("fill") == "black";
                std::fill(got.begin(), got.end(), 0);
                continue;
            }
            int q;
            if (e.has_class("pixels-nan")) q = 256;
            else if (!e.has_class("pixels") || sscanf(e.attr.at("fill").c_str(), "rgb(%d,", &q) != 1) continue;
            const char *d = e.attr.at("d").c_str();
            int x, y, n, n2, used;
            while (*d) {
                if (sscanf(d, "M%d %dh%dv1h-%dz%n", &x, &y, &n, &n2, &used) != 4 || n != n2 || n < 1)
                    return std::string("a pixel path that is not runs: ") + d;
                if (y < 0 || y >= h || x < 0 || x + n > w) return "a run outside its image";
                for (int j = x; j < x + n; j++) {
                    if (got[(size_t)(y * w + j)] != 0) return "a pixel drawn twice or before the background";
                    got[(size_t)(y * w + j)] = q;
                }
                d += used;
            }
        }
        if (!bg) return "an image without its black h x w background";
        for (size_t i = 0; i < got.size(); i++)
            if (got[i] != want[k * (size_t)h * w + i])
                return "image " + std::to_string(k) + " pixel " + std::to_string(i) + ": " + std::to_string(got[i]) +
                       " drawn, " + std::to_string(want[k * (size_t)h * w + i]) + " wanted";
    }
    size_t li = 0;
    for (auto &e : el) {
        if (!e.has_class("label-row")) continue;
        while (li < labels.size() && labels[li].empty()) li++;
        if (li >= labels.size()) return "more row labels than given";
        if (e.text != labels[li]) return "row label '" + e.text + "' is not '" + labels[li] + "'";
        double x = e.num("x"), y = e.num("y"), fs = e.num("font-size");
        if (x - text_width(e.text, fs) < 0) return "row label '" + e.text + "' leaves the picture";
        double top = gy[li * (size_t)cols], bottom = top + gs[0] * h;
        if (x > gx[li * (size_t)cols] || y - 0.75 * fs < top || y > bottom)
            return "row label '" + e.text + "' is not beside its row";
        li++;
    }
    for (; li < labels.size(); li++)
        if (!labels[li].empty()) return "row label '" + labels[li] + "' missing";
    return "";
}

/* Line plots (nnl_plot_lines) of `panels` panels: well-formed; one frame
   per panel, not overlapping; round y ticks per panel and round x ticks
   under the last; `curves` polylines in all, every point inside its
   panel's frame; the legend (when there is one) above the first frame,
   inside the picture, so it covers no line. */
inline std::string lines_problems(const std::string &svg, int panels, int curves, bool legend) {
    std::vector<Element> el;
    std::string err;
    if (!parse(svg, el, &err)) return "not well-formed: " + err;
    if (el.empty() || el[0].name != "svg") return "no svg root";
    const double W = el[0].num("width"), H = el[0].num("height");
    std::vector<int> pan;
    for (size_t i = 0; i < el.size(); i++)
        if (el[i].has_class("panel")) pan.push_back((int)i);
    if ((int)pan.size() != panels) return "panels: " + std::to_string(pan.size());
    int ncurves = 0;
    double prev_bottom = -1;
    for (size_t p = 0; p < pan.size(); p++) {
        const Element *frame = nullptr;
        std::vector<double> yt, xt;
        for (size_t i = 0; i < el.size(); i++) {
            if (el[i].parent != pan[p]) continue;
            if (el[i].has_class("frame")) frame = &el[i];
            if (el[i].has_class("tick-y")) yt.push_back(std::strtod(el[i].text.c_str(), nullptr));
            if (el[i].has_class("tick-x")) xt.push_back(std::strtod(el[i].text.c_str(), nullptr));
        }
        if (!frame) return "a panel without its frame";
        Box f = box_of(*frame);
        if (f.x0 < 0 || f.y0 < 0 || f.x1 > W || f.y1 > H) return "a frame leaves the picture";
        if (f.y0 <= prev_bottom) return "panels overlap";
        prev_bottom = f.y1;
        if (!round_ticks(yt, &err)) return "panel " + std::to_string(p) + " y ticks: " + err;
        if (p + 1 == pan.size() && !round_ticks(xt, &err)) return "x ticks: " + err;
        if (p + 1 < pan.size() && !xt.empty()) return "x tick labels on an upper panel";
        for (size_t i = 0; i < el.size(); i++) {
            if (el[i].parent != pan[p] || !el[i].has_class("curve")) continue;
            ncurves++;
            for (auto &pt : points_of(el[i]))
                if (pt.first < f.x0 - 0.05 || pt.first > f.x1 + 0.05 || pt.second < f.y0 - 0.05 || pt.second > f.y1 + 0.05)
                    return "a point outside its panel";
        }
    }
    if (ncurves != curves) return "curves: " + std::to_string(ncurves) + ", expected " + std::to_string(curves);
    const Element *lb = nullptr;
    for (auto &e : el)
        if (e.has_class("legend-box")) lb = &e;
    if (legend != (lb != nullptr)) return legend ? "no legend" : "a legend nobody asked for";
    if (lb) {
        Box b = box_of(*lb), f0 = box_of(*std::find_if(el.begin(), el.end(), [](const Element &e) { return e.has_class("frame"); }));
        if (b.x0 < 0 || b.x1 > W || b.y0 < 0) return "the legend leaves the picture";
        if (b.y1 > f0.y0) return "the legend reaches into the first panel";
    }
    return "";
}

} // namespace svgcheck
