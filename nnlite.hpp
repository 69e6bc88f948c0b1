/* nnlite.hpp - optional header-only C++ wrapper over nnlite.h.   (C++17)

   RAII handles with move semantics and exceptions; nothing here is part of
   the C ABI, which stays plain C (this header only calls nnlite.h functions,
   so it works with the shared or the static library, or nnlite.cpp dropped in).

       #include "nnlite.hpp"
       nnlite::Model m;                                   // checks the library's version once
       m.add("Dense(8, activation='tanh', input_shape=(2,))").add("Dense(1, activation='sigmoid')");
       m.compile("Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy");
       nnlite::FitOptions o; o.epochs = 500; o.batch_size = 4; o.verbose = 0;
       m.fit(x, {4, 2}, y, {4, 1}, o);                    // std::vector<float> or pointers
       std::vector<float> p = m.predict(x, {4, 2});

   Errors: every failing call throws nnlite::Error (a std::runtime_error) whose
   what() is nnlite's message and status() the NNL_ERR_* code.
   Thread-safety: as nnlite.h (one Model per thread at a time; since 0.5
   predict and predict_classes may run on one Model from many threads). */
#ifndef NNLITE_HPP
#define NNLITE_HPP

#include "nnlite.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace nnlite {

/* A failed nnlite call: what() is nnl_last_error(), status() the code. */
class Error : public std::runtime_error {
public:
    Error(int status, const std::string &message) : std::runtime_error(message), status_(status) {}
    int status() const noexcept { return status_; }
    const char *status_name() const noexcept { return nnl_status_string(status_); }

private:
    int status_;
};

/* Throws nnlite::Error for a status other than NNL_OK. */
inline void check(int status) {
    if (status != NNL_OK) {
        const char *msg = nnl_last_error();
        throw Error(status, msg && *msg ? msg : nnl_status_string(status));
    }
}

/* The nnl_init handshake against this header's version; throws on a
   mismatched library. Model's constructors call it (once per process). */
inline void init() {
    static const int status = nnl_init(NNL_VERSION_NUMBER);
    static const std::string message = status != NNL_OK ? nnl_last_error() : "";
    if (status != NNL_OK) throw Error(status, message);
}

/* Build information (nnl_has_feature, nnl_build_info): has_feature("openmp"),
   "stb", "cuda", "mpi", "hdf5", "avx2", "avx512f"; an unknown name throws. */
inline bool has_feature(const std::string &name) {
    int on = nnl_has_feature(name.c_str());
    if (on < 0) check(NNL_ERR_ARGUMENT);
    return on == 1;
}
inline std::string build_info() { return nnl_build_info(); }

using Shape = std::vector<int64_t>;

/* nnlite dtype code of a C++ element type (targets y). */
template <class T> constexpr int dtype_of() {
    static_assert(std::is_arithmetic<T>::value, "nnlite: y must be a vector of numbers");
    if constexpr (std::is_same<T, float>::value) return NNL_FLOAT32;
    else if constexpr (std::is_same<T, double>::value) return NNL_FLOAT64;
    else if constexpr (std::is_same<T, bool>::value) return NNL_BOOL;
    else if constexpr (std::is_signed<T>::value && sizeof(T) == 1) return NNL_INT8;
    else if constexpr (std::is_signed<T>::value && sizeof(T) == 2) return NNL_INT16;
    else if constexpr (std::is_signed<T>::value && sizeof(T) == 4) return NNL_INT32;
    else if constexpr (std::is_signed<T>::value && sizeof(T) == 8) return NNL_INT64;
    else if constexpr (sizeof(T) == 1) return NNL_UINT8;
    else if constexpr (sizeof(T) == 2) return NNL_UINT16;
    else if constexpr (sizeof(T) == 4) return NNL_UINT32;
    else return NNL_UINT64;
}

inline int64_t shape_size(const Shape &s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

/* nnl_fit_options with C++ defaults; callback and log as in nnlite.h. */
struct FitOptions {
    int epochs = 1;
    int batch_size = 32;
    double validation_split = 0.0;
    bool shuffle = true;
    int verbose = 1;
    uint64_t seed = 0;
    int initial_epoch = 0;
    nnl_callback callback = nullptr;
    void *callback_user = nullptr;
    FILE *log = nullptr;
};

/* An owned nnl_array (what the loaders return). Move-only. */
class Array {
public:
    Array() = default;
    explicit Array(nnl_array *adopt) noexcept : a_(adopt) {}
    Array(int dtype, const Shape &shape) { check(nnl_array_create(dtype, (int)shape.size(), shape.data(), &a_)); }
    ~Array() { nnl_array_free(a_); }
    Array(Array &&o) noexcept : a_(std::exchange(o.a_, nullptr)) {}
    Array &operator=(Array &&o) noexcept {
        if (this != &o) {
            nnl_array_free(a_);
            a_ = std::exchange(o.a_, nullptr);
        }
        return *this;
    }
    Array(const Array &) = delete;
    Array &operator=(const Array &) = delete;

    static Array load_npy(const std::string &path, int want_dtype = 0) {
        nnl_array *a = nullptr;
        check(nnl_load_npy(path.c_str(), want_dtype, &a));
        return Array(a);
    }
    int dtype() const { return nnl_array_dtype(a_); }
    Shape shape() const {
        const int64_t *s = nnl_array_shape(a_);
        return s ? Shape(s, s + nnl_array_rank(a_)) : Shape();
    }
    int64_t size() const { return nnl_array_size(a_); }
    float *f32() { return dtype() == NNL_FLOAT32 ? (float *)nnl_array_data(a_) : nullptr; }
    int64_t *i64() { return dtype() == NNL_INT64 ? (int64_t *)nnl_array_data(a_) : nullptr; }
    void *data() { return nnl_array_data(a_); }
    nnl_array *get() const noexcept { return a_; }
    nnl_array *release() noexcept { return std::exchange(a_, nullptr); }
    explicit operator bool() const noexcept { return a_ != nullptr; }

private:
    nnl_array *a_ = nullptr;
};

/* MNIST-style data set (nnl_load_mnist): x (N,28,28) float32 0..255, y (N,) int64. */
struct Dataset {
    Array x_train, y_train, x_test, y_test;
};
inline Dataset load_mnist(const std::string &path) {
    nnl_array *a = nullptr, *b = nullptr, *c = nullptr, *d = nullptr;
    check(nnl_load_mnist(path.c_str(), &a, &b, &c, &d));
    return Dataset{Array(a), Array(b), Array(c), Array(d)};
}

/* A Sequential model (nnl_model). Move-only; frees the handle when destroyed. */
class Model {
public:
    Model() {
        init();
        m_ = nnl_model_create();
        if (!m_) throw Error(NNL_ERR_MEMORY, "nnlite: could not create a model");
    }
    /* Takes ownership of a handle from the C API (e.g. nnl_load_model). */
    explicit Model(nnl_model *adopt) : m_(adopt) {
        init();
        if (!m_) throw Error(NNL_ERR_ARGUMENT, "nnlite::Model: NULL handle");
    }
    ~Model() { nnl_model_free(m_); }
    Model(Model &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    Model &operator=(Model &&o) noexcept {
        if (this != &o) {
            nnl_model_free(m_);
            m_ = std::exchange(o.m_, nullptr);
        }
        return *this;
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    nnl_model *get() const noexcept { return m_; }
    nnl_model *release() noexcept { return std::exchange(m_, nullptr); }
    explicit operator bool() const noexcept { return m_ != nullptr; }

    /* ---- building ---- */
    Model &add(const std::string &layer_spec) {
        check(nnl_add(m_, layer_spec.c_str()));
        return *this;
    }
    Model &add(std::initializer_list<const char *> specs) {
        for (const char *s : specs) check(nnl_add(m_, s));
        return *this;
    }
    Model &set_seed(uint64_t seed) {
        check(nnl_model_set_seed(m_, seed));
        return *this;
    }
    /* Keras' reset_states(): stateful layers' carried states back to zero. */
    Model &reset_states() {
        check(nnl_reset_states(m_));
        return *this;
    }
    Model &compile(const std::string &optimizer, const std::string &loss, const std::string &metrics = "") {
        check(nnl_compile(m_, optimizer.c_str(), loss.c_str(), metrics.c_str()));
        return *this;
    }

    /* ---- properties ---- */
    int layer_count() const { return nnl_layer_count(m_); }
    /* As Keras' summary: total (count_params()), trainable, non-trainable. */
    int64_t param_count() const { return nnl_param_count(m_); }
    int64_t trainable_param_count() const { return nnl_trainable_param_count(m_); }
    int64_t non_trainable_param_count() const { return nnl_non_trainable_param_count(m_); }
    Shape output_shape() const { return shape_of(nnl_output_shape); }
    Shape input_shape() const { return shape_of(nnl_input_shape); }
    std::string summary() const {
        int64_t n = nnl_summary_string(m_, nullptr, 0);
        if (n < 0) check(NNL_ERR_ARGUMENT);
        std::string s((size_t)n + 1, '\0');
        nnl_summary_string(m_, &s[0], n + 1);
        s.resize((size_t)n);
        return s;
    }
    double learning_rate() const { return nnl_get_learning_rate(m_); }
    void set_learning_rate(double lr) { check(nnl_set_learning_rate(m_, lr)); }

    /* ---- training (pointer forms; x float32 row-major, y of any arithmetic type) ---- */
    template <class Y>
    void fit(const float *x, const Shape &xs, const Y *y, const Shape &ys, const FitOptions &fo = FitOptions()) {
        nnl_fit_options o = c_options(fo);
        check(nnl_fit(m_, x, (int)xs.size(), xs.data(), y, dtype_of<Y>(), (int)ys.size(), ys.data(), &o));
    }
    template <class Y>
    void fit(const std::vector<float> &x, const Shape &xs, const std::vector<Y> &y, const Shape &ys,
             const FitOptions &fo = FitOptions()) {
        sized(x.size(), xs, "fit x");
        sized(y.size(), ys, "fit y");
        fit(x.data(), xs, y.data(), ys, fo);
    }
    template <class Y>
    std::vector<double> evaluate(const float *x, const Shape &xs, const Y *y, const Shape &ys,
                                 int batch_size = 32) {
        /* loss, then the metrics: as many values as the library writes (the rest stay NaN) */
        std::vector<double> out(64, std::numeric_limits<double>::quiet_NaN());
        check(nnl_evaluate(m_, x, (int)xs.size(), xs.data(), y, dtype_of<Y>(), (int)ys.size(), ys.data(),
                           batch_size, out.data(), (int)out.size()));
        size_t n = out.size();
        while (n > 1 && out[n - 1] != out[n - 1]) n--;
        out.resize(n);
        return out;
    }
    template <class Y>
    std::vector<double> evaluate(const std::vector<float> &x, const Shape &xs, const std::vector<Y> &y,
                                 const Shape &ys, int batch_size = 32) {
        sized(x.size(), xs, "evaluate x");
        sized(y.size(), ys, "evaluate y");
        return evaluate(x.data(), xs, y.data(), ys, batch_size);
    }
    void predict(const float *x, const Shape &xs, float *out, int64_t out_count, int batch_size = 32) {
        check(nnl_predict(m_, x, (int)xs.size(), xs.data(), batch_size, out, out_count));
    }
    std::vector<float> predict(const float *x, const Shape &xs, int batch_size = 32) {
        if (xs.empty()) throw Error(NNL_ERR_SHAPE, "nnlite::Model::predict: x has no samples axis");
        std::vector<float> out((size_t)(xs[0] * shape_size(output_shape())));
        predict(x, xs, out.data(), (int64_t)out.size(), batch_size);
        return out;
    }
    std::vector<float> predict(const std::vector<float> &x, const Shape &xs, int batch_size = 32) {
        sized(x.size(), xs, "predict x");
        return predict(x.data(), xs, batch_size);
    }
    std::vector<int32_t> predict_classes(const std::vector<float> &x, const Shape &xs, int batch_size = 32) {
        sized(x.size(), xs, "predict x");
        std::vector<int32_t> out((size_t)xs[0]);
        check(nnl_predict_classes(m_, x.data(), (int)xs.size(), xs.data(), batch_size, out.data(),
                                  (int64_t)out.size()));
        return out;
    }

    /* ---- integer model inputs (token ids for an Embedding first layer):
       x as int32_t or int64_t, through the library's _typed calls ---- */
    template <class X, class Y, class = typename std::enable_if<std::is_integral<X>::value>::type>
    void fit(const std::vector<X> &x, const Shape &xs, const std::vector<Y> &y, const Shape &ys,
             const FitOptions &fo = FitOptions()) {
        sized(x.size(), xs, "fit x");
        sized(y.size(), ys, "fit y");
        nnl_fit_options o = c_options(fo);
        check(nnl_fit_typed(m_, x.data(), dtype_of<X>(), (int)xs.size(), xs.data(), y.data(), dtype_of<Y>(),
                            (int)ys.size(), ys.data(), &o));
    }
    template <class X, class Y, class = typename std::enable_if<std::is_integral<X>::value>::type>
    std::vector<double> evaluate(const std::vector<X> &x, const Shape &xs, const std::vector<Y> &y,
                                 const Shape &ys, int batch_size = 32) {
        sized(x.size(), xs, "evaluate x");
        sized(y.size(), ys, "evaluate y");
        std::vector<double> out(64, std::numeric_limits<double>::quiet_NaN());
        check(nnl_evaluate_typed(m_, x.data(), dtype_of<X>(), (int)xs.size(), xs.data(), y.data(), dtype_of<Y>(),
                                 (int)ys.size(), ys.data(), batch_size, out.data(), (int)out.size()));
        size_t n = out.size();
        while (n > 1 && out[n - 1] != out[n - 1]) n--;
        out.resize(n);
        return out;
    }
    template <class X, class = typename std::enable_if<std::is_integral<X>::value>::type>
    std::vector<float> predict(const std::vector<X> &x, const Shape &xs, int batch_size = 32) {
        sized(x.size(), xs, "predict x");
        std::vector<float> out((size_t)(xs[0] * shape_size(output_shape())));
        check(nnl_predict_typed(m_, x.data(), dtype_of<X>(), (int)xs.size(), xs.data(), batch_size, out.data(),
                                (int64_t)out.size()));
        return out;
    }

    /* ---- history ---- */
    int history_epochs() const { return nnl_history_epochs(m_); }
    std::vector<std::string> history_keys() const {
        std::vector<std::string> k;
        for (int i = 0; i < nnl_history_key_count(m_); i++) k.emplace_back(nnl_history_key(m_, i));
        return k;
    }
    std::vector<double> history(const std::string &key) const {
        int n = nnl_history_get(m_, key.c_str(), nullptr, 0);
        if (n < 0) check(NNL_ERR_ARGUMENT);
        std::vector<double> v((size_t)n);
        nnl_history_get(m_, key.c_str(), v.data(), n);
        return v;
    }

    /* ---- weights: every tensor, trainable or not, in Keras get_weights() order ---- */
    int weight_count() const { return nnl_weight_count(m_); }
    Shape weight_shape(int i) const {
        int rank = 0;
        int64_t s[NNL_MAX_RANK];
        check(nnl_weight_info(m_, i, nullptr, 0, &rank, s));
        return Shape(s, s + rank);
    }
    std::string weight_name(int i) const {
        char name[512];
        check(nnl_weight_info(m_, i, name, (int)sizeof name, nullptr, nullptr));
        return name;
    }
    /* false for state the optimizer leaves alone (BatchNormalization's moving statistics) */
    bool weight_trainable(int i) const {
        int t = 0;
        check(nnl_weight_trainable(m_, i, &t));
        return t != 0;
    }
    std::vector<std::vector<float>> get_weights() const {
        std::vector<std::vector<float>> w;
        for (int i = 0; i < weight_count(); i++) {
            std::vector<float> t((size_t)shape_size(weight_shape(i)));
            check(nnl_get_weight(m_, i, t.data(), (int64_t)t.size()));
            w.push_back(std::move(t));
        }
        return w;
    }
    /* Keras' set_weights(): the full list get_weights() returns; the model
       changes only when every tensor fits. */
    void set_weights(const std::vector<std::vector<float>> &w) {
        int n = weight_count();
        if ((int64_t)w.size() != n)
            throw Error(NNL_ERR_SHAPE, "nnlite::Model::set_weights: got " + std::to_string(w.size()) +
                                           " tensors, the model has " + std::to_string(n));
        for (int i = 0; i < n; i++)
            if ((int64_t)w[(size_t)i].size() != shape_size(weight_shape(i)))
                throw Error(NNL_ERR_SHAPE, "nnlite::Model::set_weights: tensor " + std::to_string(i) + " (" +
                                               weight_name(i) + ") holds " + std::to_string(w[(size_t)i].size()) +
                                               " values, the model's has " +
                                               std::to_string(shape_size(weight_shape(i))));
        for (int i = 0; i < n; i++) check(nnl_set_weight(m_, i, w[(size_t)i].data(), (int64_t)w[(size_t)i].size()));
    }

    /* ---- model files (nnlite.h's nnl_save_model & co) ---- */
    void save(const std::string &path) const { check(nnl_save_model(m_, path.c_str())); }
    static Model load(const std::string &path) {
        nnl_model *h = nullptr;
        check(nnl_load_model(path.c_str(), &h));
        return Model(h);
    }
    std::string to_json() const {
        int64_t n = nnl_model_to_json(m_, nullptr, 0);
        if (n < 0) check(NNL_ERR_ARGUMENT);
        std::string s((size_t)n + 1, '\0');
        if (nnl_model_to_json(m_, &s[0], n + 1) < 0) check(NNL_ERR_ARGUMENT);
        s.resize((size_t)n);
        return s;
    }
    static Model from_json(const std::string &json) {
        nnl_model *h = nullptr;
        check(nnl_model_from_json(json.c_str(), &h));
        return Model(h);
    }
    /* A path ending in ".npz" uses the numpy archive format. */
    void save_weights(const std::string &path) const {
        check(npz(path) ? nnl_save_weights_npz(m_, path.c_str()) : nnl_save_weights(m_, path.c_str()));
    }
    void load_weights(const std::string &path) {
        check(npz(path) ? nnl_load_weights_npz(m_, path.c_str()) : nnl_load_weights(m_, path.c_str()));
    }

private:
    nnl_model *m_ = nullptr;

    Shape shape_of(int (*fn)(const nnl_model *, int64_t *)) const {
        int64_t s[NNL_MAX_RANK];
        int r = fn(m_, s);
        return r < 0 ? Shape() : Shape(s, s + r);
    }
    static bool npz(const std::string &p) { return p.size() >= 4 && p.compare(p.size() - 4, 4, ".npz") == 0; }
    static void sized(size_t n, const Shape &s, const char *what) {
        if (s.empty() || (int64_t)n != shape_size(s))
            throw Error(NNL_ERR_SHAPE, std::string("nnlite::Model: ") + what + " holds " + std::to_string(n) +
                                           " values, its shape says " + std::to_string(shape_size(s)));
    }
    static nnl_fit_options c_options(const FitOptions &fo) {
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        o.epochs = fo.epochs;
        o.batch_size = fo.batch_size;
        o.validation_split = fo.validation_split;
        o.shuffle = fo.shuffle ? 1 : 0;
        o.verbose = fo.verbose;
        o.seed = fo.seed;
        o.initial_epoch = fo.initial_epoch;
        o.callback = fo.callback;
        o.callback_user = fo.callback_user;
        o.log = fo.log;
        return o;
    }
};

} // namespace nnlite

#endif /* NNLITE_HPP */
