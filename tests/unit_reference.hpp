/* Whole-model reference tests (llm.c's test_gpt2 idea). Included by unit.cpp.

   THE FIXTURE: tests/reference/model_reference.npz, committed, written by
   tests/reference/model_reference.py with PyTorch in float64 (its opening
   comment gives the model, the Keras rules it follows and every key). In
   short: a CNN Input(8,8,2) - Conv2D(4, 3, relu) - BatchNormalization -
   MaxPooling2D(2) - Dropout(0.0) - Flatten - Dense(8, relu) - Dense(3,
   softmax) with sparse categorical cross-entropy; its initial weights (all
   10 tensors in Keras get_weights() order and layouts, BN's moving
   statistics included, as arr_0..arr_9); one batch x (5,8,8,2), y (5,); the
   loss and the gradient of every trainable tensor at the initial weights;
   BN's moving statistics after that forward pass; the per-epoch losses and
   all tensors after 10 steps of fit with SGD(momentum=0.9) and with Adam;
   and the spec strings the model and optimizers are built from here.
   Regenerate it (needs Debian's python3-torch, python3-numpy):
       /usr/bin/python3 tests/reference/model_reference.py
   The output is byte-for-byte reproducible with the same numpy/torch on the
   same machine; the tests below need neither.

   What is checked, all on the CPU in float32 against the float64 reference:
     - the loss, every gradient (Keras layouts) and BN's moving statistics
       after one training forward pass;
     - 10 steps of nnl_fit (one batch per epoch, no shuffling) with SGD and
       with Adam: the history's losses, every tensor after the last step
       (BN's moving statistics after 10 forward passes included);
     - central finite differences of the loss against every gradient entry. */
#include <numeric>
#include <unistd.h>

namespace refmodel {

/* The fixture, found from any working directory: an explicit path in
   NNL_REFERENCE_FIXTURE, else beside this file (__FILE__ is
   "tests/unit_reference.hpp" for make, which runs the tests from the
   checkout's root, and absolute for CMake), else from the test binary's
   folder (build/, build-san/, build-cmake/ beside tests/). */
static std::string fixture_path() {
    std::vector<std::string> tried;
    if (const char *e = getenv("NNL_REFERENCE_FIXTURE")) tried.push_back(e);
    std::string here = __FILE__;
    size_t slash = here.find_last_of('/');
    tried.push_back((slash == std::string::npos ? std::string(".") : here.substr(0, slash)) +
                    "/reference/model_reference.npz");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        std::string dir(exe, (size_t)n);
        tried.push_back(dir.substr(0, dir.find_last_of('/')) + "/../tests/reference/model_reference.npz");
    }
    std::string all;
    for (auto &p : tried) {
        if (access(p.c_str(), R_OK) == 0) return p;
        all += " " + p;
    }
    FAIL("the committed fixture model_reference.npz is missing; looked at" << all
                                                                          << " (set NNL_REFERENCE_FIXTURE=path)");
    return "";
}

static std::vector<int64_t> ints(const std::string &path, const char *key) {
    nnl_array *a = nullptr;
    REQUIRE_MESSAGE(nnl_load_npz(path.c_str(), key, NNL_INT64, &a) == NNL_OK, key << ": " << nnl_last_error());
    const int64_t *p = (const int64_t *)nnl_array_data(a);
    std::vector<int64_t> v(p, p + nnl_array_size(a));
    nnl_array_free(a);
    return v;
}

/* spec strings are stored as uint8 bytes */
static std::string text(const std::string &path, const char *key) {
    std::vector<int64_t> b = ints(path, key);
    return std::string(b.begin(), b.end());
}

struct Fixture {
    std::string path;
    std::vector<std::string> layers;
    std::string loss, sgd, adam;
    int64_t B = 0;
    std::vector<float> x, t; /* t: the labels as float target rows */
    std::vector<int64_t> y;
    Fixture() {
        path = fixture_path();
        std::string l = text(path, "spec_layers");
        for (size_t s = 0, e; s < l.size(); s = e + 1) {
            e = l.find('\n', s);
            if (e == std::string::npos) e = l.size();
            layers.push_back(l.substr(s, e - s));
        }
        loss = text(path, "spec_loss");
        sgd = text(path, "spec_sgd");
        adam = text(path, "spec_adam");
        x = npz_array(path, "x");
        y = ints(path, "y");
        B = (int64_t)y.size();
        t.assign(y.begin(), y.end());
    }
    std::vector<float> get(const std::string &key) const { return npz_array(path, key.c_str()); }
};

/* The fixture's model, compiled with `optimizer`, holding the fixture's
   initial weights (all 10 tensors, through the Keras-order npz loader). */
static void build(nnl_model &m, const Fixture &f, const std::string &optimizer) {
    REQUIRE(nnl_model_set_seed(&m, 7) == NNL_OK); /* nothing random is used; no clock seed either */
    for (auto &l : f.layers) REQUIRE_MESSAGE(nnl_add(&m, l.c_str()) == NNL_OK, l << ": " << nnl_last_error());
    REQUIRE(nnl_compile(&m, optimizer.c_str(), f.loss.c_str(), "") == NNL_OK);
    REQUIRE_MESSAGE(nnl_load_weights_npz(&m, f.path.c_str()) == NNL_OK, nnl_last_error());
}

/* Every weight tensor of m in Keras get_weights() order. */
static std::vector<nnl::WeightSpec *> tensors(nnl_model &m) {
    std::vector<nnl::WeightSpec *> v;
    for (auto &l : m.layers)
        for (auto &w : l->weights) v.push_back(&w);
    return v;
}

/* One training batch without the update: forward (training mode: BN uses
   batch statistics and moves its moving ones), loss, and, when grads, the
   backward pass that leaves every gradient in m.G (each tensor's .g).
   Returns the batch's mean loss. The only place these tests reach into the
   training step; when fit's step is extracted (Model::train_step), this
   helper is where to call its forward/loss/backward part. */
static double batch_loss(nnl_model &m, const Fixture &f, bool grads) {
    m.ensure_batch(f.B);
    std::vector<int64_t> idx((size_t)f.B);
    std::iota(idx.begin(), idx.end(), 0);
    m.gather(f.x.data(), f.t.data(), idx.data(), f.B);
    m.forward(f.B, true, 0);
    std::vector<double> msum(m.metrics.size() + 1, 0.0);
    double l = m.loss_and_grad(f.B, grads ? m.dact[m.layers.size()] : nullptr, msum.data());
    if (grads) m.backward(f.B, 0);
    return l / (double)f.B;
}

/* max |got - want| over a tensor, relative to the tensor's Euclidean norm:
   one figure per tensor that does not blow up on entries near zero. */
static double scaled_diff(const float *got, const std::vector<float> &want) {
    double d = 0, n = 0;
    for (size_t i = 0; i < want.size(); i++) {
        d = std::max(d, std::fabs((double)got[i] - want[i]));
        n += (double)want[i] * want[i];
    }
    return d / std::max(std::sqrt(n), 1e-30);
}

} // namespace refmodel

/* Tolerances of one step. nnlite computes in float32 (rounding 6e-8) what
   the fixture holds in float64 (read back as float32 by nnl_load_npz: 6e-8
   more). The loss sums 18- to 36-term dot products through four layers and
   a log-sum-exp; the gradients come back through the same layers, and BN's
   backward subtracts two per-channel means from dy (a digit of
   cancellation). Measured: loss within 3e-8 relative, every gradient
   within 4.5e-7 of its tensor's norm (max-abs error / Euclidean norm, so
   entries near zero do not blow the figure up), moving statistics within
   1.2e-7. 1e-5 leaves 20x margin or more; the errors it is there to catch
   are far larger (tried: a BN epsilon of 1e-5 puts the loss 2.4e-3 off and
   the gradients 1e-2; a transposed dense-kernel gradient or BN's backward
   without its xhat * mean(dy xhat) term, 0.5 and more; a Bessel-corrected
   moving variance, 5e-5 on moving_variance). */
static const double REF_LOSS_RTOL = 1e-5, REF_GRAD_TOL = 1e-5, REF_STAT_RTOL = 1e-5;

TEST_CASE("whole model matches the PyTorch reference: loss, every gradient, BN moving statistics") {
    refmodel::Fixture f;
    nnl_model m;
    refmodel::build(m, f, f.sgd);
    auto ws = refmodel::tensors(m);
    REQUIRE(ws.size() == 10);
    for (size_t i = 0; i < ws.size(); i++) /* the loader put every fixture tensor in place */
        CHECK(refmodel::scaled_diff(ws[i]->w, f.get("arr_" + std::to_string(i))) == 0.0);
    /* unwritten gradients stay NaN and fail below (non-trainable ones must
       stay finite: fit's finite check reads the whole G arena) */
    for (auto *w : ws)
        if (w->trainable) std::fill(w->g, w->g + w->shape.size(), NAN);
    double loss = refmodel::batch_loss(m, f, true);
    double want = f.get("loss")[0];
    INFO("loss " << loss << " reference " << want);
    CHECK(std::fabs(loss - want) <= REF_LOSS_RTOL * std::fabs(want));
    int checked = 0;
    double worst = 0;
    for (size_t i = 0; i < ws.size(); i++) {
        if (!ws[i]->trainable) continue;
        double d = refmodel::scaled_diff(ws[i]->g, f.get("grad_" + std::to_string(i)));
        INFO("gradient of tensor " << i << " (" << ws[i]->name << "): max error / norm " << d);
        CHECK(d <= REF_GRAD_TOL); /* false for NaN too */
        worst = std::max(worst, d);
        checked++;
    }
    CHECK(checked == 8);
    /* the moving statistics moved once, with the batch's mean and biased variance */
    auto mm = f.get("bn_mean_1"), mv = f.get("bn_var_1");
    double sworst = 0;
    for (size_t c = 0; c < mm.size(); c++) {
        INFO("channel " << c << ": moving mean " << ws[4]->w[c] << " (reference " << mm[c] << "), variance "
                        << ws[5]->w[c] << " (" << mv[c] << ")");
        CHECK(std::fabs(ws[4]->w[c] - mm[c]) <= REF_STAT_RTOL * std::fabs(mm[c]));
        CHECK(std::fabs(ws[5]->w[c] - mv[c]) <= REF_STAT_RTOL * std::fabs(mv[c]));
        sworst = std::max({sworst, std::fabs((double)ws[4]->w[c] - mm[c]) / std::fabs(mm[c]),
                           std::fabs((double)ws[5]->w[c] - mv[c]) / std::fabs(mv[c])});
    }
    MESSAGE("reference model: loss within " << std::fabs(loss - want) / want << " relative, 8 gradients within "
                                            << worst << " of their norm, moving statistics within " << sworst);
}

/* Ten steps compound the float32 differences, hence a looser tolerance:
   every step starts from weights that already differ, adds its gradient's
   error (above) and the update's rounding, and momentum carries ~10 steps
   of them forward. Adam also divides by sqrt(v) + eps, which turns a small
   absolute error of a near-zero gradient into a large relative one: at
   step 1 a dense-kernel gradient is -2.2e-9, the product of a dz of 1.3e-3
   and a BN output of -1.7e-6 that float32 gets only to a few per cent
   (a cancellation of O(1) values), and Adam moves that weight by
   alpha g / (|g| + eps), proportional to g. Measured: losses within
   2e-7 (SGD) and 4.5e-7 (Adam) relative, every tensor after 10 steps
   within 2e-7 and 7.3e-7 of its norm. 3e-5 leaves 40x margin; tried
   errors: Adam without bias correction (losses 0.97 off), Adam with
   PyTorch's eps placement (tensors 6.8e-2), a Bessel-corrected moving
   variance (1.1e-4), a BN epsilon of 1e-5 (losses 9e-3). */
static const double REF_TRAJ_RTOL = 3e-5;

TEST_CASE("whole model: 10 steps of nnl_fit with SGD and Adam follow the reference trajectory") {
    refmodel::Fixture f;
    for (int k = 0; k < 2; k++) {
        const std::string &opt = k ? f.adam : f.sgd, pre = k ? "adam_" : "sgd_";
        INFO("optimizer " << opt);
        nnl_model m;
        refmodel::build(m, f, opt);
        auto want = f.get(pre + "losses");
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = (int)want.size();
        o.batch_size = (int)f.B; /* one batch per epoch: an epoch's loss is the loss before its update */
        o.shuffle = 0;
        o.verbose = 0;
        int64_t xs[1 + NNL_MAX_RANK] = {f.B}, ys[1] = {f.B};
        int xrank = 1 + nnl_input_shape(&m, xs + 1);
        REQUIRE_MESSAGE(nnl_fit(&m, f.x.data(), xrank, xs, f.y.data(), NNL_INT64, 1, ys, &o) == NNL_OK,
                        nnl_last_error());
        std::vector<double> got(want.size());
        REQUIRE(nnl_history_get(&m, "loss", got.data(), (int)got.size()) == (int)want.size());
        double worst = 0;
        for (size_t e = 0; e < want.size(); e++) {
            INFO("epoch " << e + 1 << " loss " << got[e] << " reference " << want[e]);
            CHECK(std::fabs(got[e] - want[e]) <= REF_TRAJ_RTOL * std::fabs(want[e]));
            worst = std::max(worst, std::fabs(got[e] - want[e]) / std::fabs(want[e]));
        }
        CHECK(got.back() < 0.2 * got.front()); /* the steps did train */
        auto ws = refmodel::tensors(m);
        double wworst = 0;
        for (size_t i = 0; i < ws.size(); i++) { /* 4, 5: BN's moving statistics after 10 forward passes */
            double d = refmodel::scaled_diff(ws[i]->w, f.get(pre + "w_" + std::to_string(i)));
            INFO("tensor " << i << " (" << ws[i]->name << ") after 10 steps: max error / norm " << d);
            CHECK(d <= REF_TRAJ_RTOL);
            wworst = std::max(wworst, d);
        }
        MESSAGE(opt << ": 10-step losses within " << worst << " relative, tensors within " << wworst
                    << " of their norm");
    }
}

/* Which piece of the piecewise-smooth loss the last forward pass was on:
   the sign of every ReLU output and the winner of every max-pooling window.
   Finite differences are exact up to O(h^2) only when this does not change
   between w - h and w + h (no kink crossed; the CS231n gradient-check advice). */
static std::vector<int32_t> kink_pattern(nnl_model &m, int64_t B) {
    std::vector<int32_t> p;
    for (size_t i = 0; i < m.layers.size(); i++) {
        nnl::Layer *l = m.layers[i].get();
        if (l->output_act() == nnl::ACT_RELU)
            for (int64_t k = 0; k < B * l->out.size(); k++) p.push_back(m.act[i + 1][k] > 0.f);
        if (auto *pool = dynamic_cast<nnl::Pool *>(l))
            if (pool->max) { /* the taps chosen, pool_arg_bytes(g) bytes each */
                const uint8_t *a = (const uint8_t *)pool->arg();
                p.insert(p.end(), a, a + B * l->out.size() * nnl::pool_arg_bytes(pool->g));
            }
    }
    return p;
}

/* Central differences of the float32 model's loss, in training mode (BN on
   batch statistics, so its mean and variance are differentiated through;
   Dropout(0.0) is the identity), for EVERY entry of every trainable tensor
   (407 of them: the model is small, 2 to 8 forward passes each, ~0.03 s).
   Step: the largest h of 4e-3, 2e-3, 1e-3, 5e-4 whose kink pattern at w +- h
   equals the one at w. A conv kernel entry moves 180 ReLU inputs and 45
   pooling windows: at 4e-3 one of them switches for 18 of the 72 entries
   (their differences then miss by up to 0.2 of the largest gradient), at
   1e-3 for 5, at 5e-4 for none; with this batch 388 entries use 4e-3, 19
   a smaller step, none is skipped (at most 2 may be: a kink even at 5e-4).
   The differences are taken in double over the float weights actually set
   (w +- h rounded to float). Error of the estimate: truncation
   h^2 |L'''| / 6 (measured: under 4e-5 of the tensor's largest gradient
   at h = 4e-3) plus the float32 resolution of the loss, |L| 2^-23 ~ 2e-7
   per evaluation, divided by h (measured worst: 1.75e-7 / h). Tolerance:
   1e-3 of the tensor's largest gradient + 4e-7 / h: 2x the noise, 25x the
   truncation; the worst entry uses 0.1 of it. Wrong backward passes miss
   by hundreds of tolerances (tried: a transposed dense-kernel gradient,
   1170x; BN's backward without its xhat * mean(dy xhat) term, 670x). */
TEST_CASE("whole model: finite differences of the loss agree with every gradient") {
    refmodel::Fixture f;
    nnl_model m;
    refmodel::build(m, f, f.sgd);
    auto ws = refmodel::tensors(m);
    nnl::LineVector W0 = m.W; /* the moving statistics move at every forward pass: restored at the end */
    refmodel::batch_loss(m, f, true);
    /* backward lends the activations' and the pooling indices' memory to
       the gradients (Model::ensure_batch): the pattern of a forward alone */
    refmodel::batch_loss(m, f, false);
    const std::vector<int32_t> p0 = kink_pattern(m, f.B);
    REQUIRE(!p0.empty()); /* here 5 x (144 conv ReLUs + 36 pool winners + 8 dense ReLUs) */
    const double steps[] = {4e-3, 2e-3, 1e-3, 5e-4};
    int checked = 0, skipped = 0, by_step[4] = {0, 0, 0, 0};
    double worst = 0; /* error / tolerance */
    for (size_t i = 0; i < ws.size(); i++) {
        if (!ws[i]->trainable) continue;
        nnl::WeightSpec &w = *ws[i];
        std::vector<float> g(w.g, w.g + w.shape.size());
        double gmax = 0;
        for (float v : g) gmax = std::max(gmax, (double)std::fabs(v));
        for (int64_t j = 0; j < w.shape.size(); j++) {
            const float keep = w.w[j];
            bool done = false;
            for (int s = 0; s < 4 && !done; s++) {
                const float wp = (float)(keep + steps[s]), wm = (float)(keep - steps[s]);
                w.w[j] = wp;
                double lp = refmodel::batch_loss(m, f, false);
                bool smooth = kink_pattern(m, f.B) == p0;
                w.w[j] = wm;
                double lm = refmodel::batch_loss(m, f, false);
                smooth = smooth && kink_pattern(m, f.B) == p0;
                w.w[j] = keep;
                if (!smooth) continue;
                double fd = (lp - lm) / ((double)wp - (double)wm);
                double tol = 1e-3 * gmax + 4e-7 / steps[s];
                INFO("tensor " << i << " (" << w.name << ") entry " << j << ": gradient " << g[(size_t)j]
                               << ", central difference " << fd << " (h = " << steps[s] << ")");
                CHECK(std::fabs(fd - g[(size_t)j]) <= tol);
                worst = std::max(worst, std::fabs(fd - g[(size_t)j]) / tol);
                by_step[s]++;
                done = true;
            }
            checked += done;
            skipped += !done;
        }
    }
    std::copy(W0.begin(), W0.end(), m.W.begin());
    int64_t trainable = 0;
    for (auto *w : ws) trainable += w->trainable ? w->shape.size() : 0;
    CHECK(checked + skipped == trainable); /* 407: all but the 8 moving statistics */
    CHECK(skipped <= 2);
    MESSAGE("finite differences: " << checked << " gradient entries checked (h = 4e-3: " << by_step[0]
                                   << ", 2e-3: " << by_step[1] << ", 1e-3: " << by_step[2] << ", 5e-4: "
                                   << by_step[3] << "), " << skipped << " skipped at a kink; worst error "
                                   << worst << " of the tolerance");
}
