/* Messages and compatibility at the C ABI (issue 11): every function's error
   names that function (never an internal one), nnl_set_device's device
   strings, UTF-8 layer names and always-valid JSON, Keras files with layer
   kinds this version lacks, and files of standalone Keras 2.x. */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../nnlite.h"

namespace {

std::string err() { return nnl_last_error(); }

std::string repo_file(const char *rel) {
    std::string f = __FILE__;
    size_t slash = f.rfind('/');
    std::string dir = slash == std::string::npos ? "." : f.substr(0, slash); /* tests */
    return dir + "/../" + rel;
}

/* Whether s is well-formed UTF-8 */
bool utf8(const std::string &s) {
    for (size_t i = 0; i < s.size();) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!n || i + n > s.size()) return false;
        for (size_t k = 1; k < n; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
        if ((c == 0xE0 && (unsigned char)s[i + 1] < 0xA0) || (c == 0xED && (unsigned char)s[i + 1] > 0x9F) ||
            (c == 0xF0 && (unsigned char)s[i + 1] < 0x90) || (c == 0xF4 && (unsigned char)s[i + 1] > 0x8F))
            return false;
        i += n;
    }
    return true;
}

std::string to_json(const nnl_model *m) {
    int64_t n = nnl_model_to_json(m, nullptr, 0);
    REQUIRE_MESSAGE(n > 0, err());
    std::string s((size_t)n + 1, '\0');
    REQUIRE(nnl_model_to_json(m, &s[0], n + 1) == n);
    s.resize((size_t)n);
    return s;
}

/* A small compiled model (input 3, output 2) and its arrays */
nnl_model *small_model(bool compile = true) {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_model_set_seed(m, 1) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(4, activation='relu', input_shape=(3,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2, activation='softmax')") == NNL_OK);
    if (compile) REQUIRE(nnl_compile(m, "SGD", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    return m;
}

/* Fragments of internal names that must never reach a caller */
const char *const kInternal[] = {"operator", "weight_at", "lambda", "from_json", "to_json", "check_x", "check_y",
                                 "fit x", "fit y", "evaluate x", "predict x", "add_spec", "guard", "()", "nnl::",
                                 "files::", "nnlite:"};

} // namespace

TEST_CASE("every ABI function's error message starts with its name and names no internal function") {
    nnl_model *empty = nnl_model_create(), *m = small_model(), *raw = small_model(false);
    REQUIRE(empty);
    float x[6] = {0, 1, 2, 3, 4, 5}, p[8];
    int32_t y[2] = {0, 1}, cls[2];
    int64_t xs[2] = {2, 3}, ys[1] = {2}, bad_xs[2] = {2, 5}, shape[NNL_MAX_RANK], cm[4] = {1, 0, 0, 1};
    double out[4];
    char buf[64];
    int rank;
    nnl_array *a = nullptr;
    nnl_model *o = nullptr;
    nnl_vocab *vocab = nullptr;
    const char *missing = "/nonexistent-nnlite-dir/file";
    nnl_fit_options bad_opt;
    memset(&bad_opt, 0, sizeof bad_opt); /* not initialised: struct_size 0 */

    /* Calls that fail, by the function that must be named: the status, or -1
       (the size-returning functions). */
    const std::vector<std::pair<const char *, std::function<int()>>> fails = {
        {"nnl_init", [&] { return nnl_init(-1); }},
        {"nnl_init", [&] { return nnl_init(99 * 10000); }},
        {"nnl_array_create", [&] { return nnl_array_create(NNL_FLOAT32, 1, xs, nullptr); }},
        {"nnl_array_create", [&] { return nnl_array_create(99, 1, xs, &a); }},
        {"nnl_array_reshape", [&] { return nnl_array_reshape(nullptr, 1, xs); }},
        {"nnl_array_convert", [&] { return nnl_array_convert(nullptr, NNL_FLOAT32); }},
        {"nnl_load_idx", [&] { return nnl_load_idx(nullptr, 0, &a); }},
        {"nnl_load_idx", [&] { return nnl_load_idx(missing, 0, &a); }},
        {"nnl_load_npy", [&] { return nnl_load_npy(missing, 0, &a); }},
        {"nnl_load_npz", [&] { return nnl_load_npz(missing, "x", 0, &a); }},
        {"nnl_load_npz", [&] { return nnl_load_npz(nullptr, "x", 0, &a); }},
        {"nnl_save_npy", [&] { return nnl_save_npy(missing, nullptr); }},
        {"nnl_load_mnist", [&] { return nnl_load_mnist(missing, &a, nullptr, nullptr, nullptr); }},
        {"nnl_text_vocab", [&] { return nnl_text_vocab(missing, &vocab); }},
        {"nnl_text_vocab", [&] { return nnl_text_vocab(nullptr, &vocab); }},
        {"nnl_load_words", [&] { return nnl_load_words(missing, nullptr, &a); }},
        {"nnl_lm_windows", [&] { return nnl_lm_windows(y, 2, 1, 4, &a, &a); }},
        {"nnl_lm_windows", [&] { return nnl_lm_windows(nullptr, 2, 1, 1, &a, &a); }},
        {"nnl_sliding_windows", [&] { return nnl_sliding_windows(x, 2, 1, 3, &a, &a); }},
        {"nnl_load_image", [&] { return nnl_load_image(missing, 0, 0, 0, 1.0f, &a); }},
        {"nnl_load_image", [&] { return nnl_load_image(missing, 5, 0, 0, 1.0f, &a); }},
        {"nnl_load_image", [&] { return nnl_load_image(missing, 1, 28, 0, 1.0f, &a); }},
        {"nnl_image_dataset_from_directory", [&] {
             return nnl_image_dataset_from_directory(missing, 28, 28, 1, 1.0f, 1, 1, 0.2, "training", 0, &a, &a, &vocab);
         }},
        {"nnl_image_dataset_from_directory", [&] {
             return nnl_image_dataset_from_directory(nullptr, 28, 28, 1, 1.0f, 1, 1, 0.0, nullptr, 0, &a, &a, &vocab);
         }},
        {"nnl_image_dataset_from_directory", [&] {
             return nnl_image_dataset_from_directory(".", 28, 28, 1, 1.0f, 1, 1, 0.2, "testing", 0, &a, &a, &vocab);
         }},
        {"nnl_save_image", [&] { return nnl_save_image(missing, nullptr, 2, 3, 1, 1.0f); }},
        {"nnl_save_image", [&] { return nnl_save_image(missing, x, 2, 3, 7, 1.0f); }},
        {"nnl_save_image", [&] { return nnl_save_image("/nonexistent-nnlite-dir/x.png", x, 2, 3, 1, 1.0f); }},
        {"nnl_normalize", [&] { return nnl_normalize(x, 2, xs, 5); }},
        {"nnl_scale", [&] { return nnl_scale(nullptr, 3, 1, 0); }},
        {"nnl_to_categorical", [&] { return nnl_to_categorical(y, NNL_INT32, 2, 0, nullptr); }},
        {"nnl_shuffle", [&] { return nnl_shuffle(nullptr, 1, nullptr, 0, 0, 2, 1); }},
        {"nnl_confusion_matrix", [&] { return nnl_confusion_matrix(nullptr, NNL_INT32, nullptr, 2, 2, nullptr); }},
        {"nnl_print_confusion_matrix", [&] { return nnl_print_confusion_matrix(nullptr, nullptr, 0, nullptr, 0); }},
        {"nnl_has_feature", [&] { return nnl_has_feature("no_such_feature"); }},
        {"nnl_has_feature", [&] { return nnl_has_feature(nullptr); }},
        {"nnl_add", [&] { return nnl_add(nullptr, "Dense(1)"); }},
        {"nnl_add", [&] { return nnl_add(empty, "NoSuchLayer(3)"); }},
        {"nnl_add", [&] { return nnl_add(empty, nullptr); }},
        {"nnl_add", [&] { return nnl_add(raw, "Dense(2, kernel_initializer='nosuch')"); }},
        {"nnl_add_input", [&] { return nnl_add_input(nullptr, 1, xs); }},
        {"nnl_add_input", [&] { return nnl_add_input(empty, 0, nullptr); }},
        {"nnl_add_dense", [&] { return nnl_add_dense(nullptr, 3, nullptr); }},
        {"nnl_add_dense", [&] { return nnl_add_dense(raw, -3, nullptr); }},
        {"nnl_add_activation", [&] { return nnl_add_activation(nullptr, "relu"); }},
        {"nnl_add_activation", [&] { return nnl_add_activation(raw, nullptr); }},
        {"nnl_add_dropout", [&] { return nnl_add_dropout(nullptr, 0.5f); }},
        {"nnl_add_dropout", [&] { return nnl_add_dropout(raw, 2.0f); }},
        {"nnl_add_flatten", [&] { return nnl_add_flatten(nullptr); }},
        {"nnl_add_reshape", [&] { return nnl_add_reshape(nullptr, 1, xs); }},
        {"nnl_add_reshape", [&] { return nnl_add_reshape(raw, 0, nullptr); }},
        {"nnl_model_set_seed", [&] { return nnl_model_set_seed(nullptr, 1); }},
        {"nnl_reset_states", [&] { return nnl_reset_states(nullptr); }},
        {"nnl_output_shape", [&] { return nnl_output_shape(nullptr, shape); }},
        {"nnl_output_shape", [&] { return nnl_output_shape(empty, shape); }},
        {"nnl_input_shape", [&] { return nnl_input_shape(nullptr, shape); }},
        {"nnl_input_shape", [&] { return nnl_input_shape(empty, shape); }},
        {"nnl_summary", [&] { return nnl_summary(nullptr, nullptr); }},
        {"nnl_summary_string", [&] { return nnl_summary_string(nullptr, nullptr, 0) < 0 ? -1 : 0; }},
        {"nnl_summary_string", [&] { return nnl_summary_string(m, nullptr, 10) < 0 ? -1 : 0; }},
        {"nnl_weight_info", [&] { return nnl_weight_info(nullptr, 0, buf, sizeof buf, &rank, shape); }},
        {"nnl_weight_info", [&] { return nnl_weight_info(m, 99, buf, sizeof buf, &rank, shape); }},
        {"nnl_get_weight", [&] { return nnl_get_weight(nullptr, 0, p, 1); }},
        {"nnl_get_weight", [&] { return nnl_get_weight(m, -1, p, 1); }},
        {"nnl_get_weight", [&] { return nnl_get_weight(m, 0, p, 1); }},
        {"nnl_set_weight", [&] { return nnl_set_weight(nullptr, 0, p, 1); }},
        {"nnl_weight_trainable", [&] { return nnl_weight_trainable(nullptr, 0, &rank); }},
        {"nnl_weight_trainable", [&] { return nnl_weight_trainable(m, 99, &rank); }},
        {"nnl_weight_trainable", [&] { return nnl_weight_trainable(m, 0, nullptr); }},
        {"nnl_set_weight", [&] { return nnl_set_weight(m, 0, nullptr, 12); }},
        {"nnl_compile", [&] { return nnl_compile(nullptr, "SGD", "mse", nullptr); }},
        {"nnl_compile", [&] { return nnl_compile(empty, "SGD", "mse", nullptr); }},
        {"nnl_compile", [&] { return nnl_compile(raw, "Adamz", "mse", nullptr); }},
        {"nnl_compile", [&] { return nnl_compile(raw, nullptr, "mse", nullptr); }},
        {"nnl_set_learning_rate", [&] { return nnl_set_learning_rate(nullptr, 0.1); }},
        {"nnl_set_learning_rate", [&] { return nnl_set_learning_rate(raw, 0.1); }},
        {"nnl_set_learning_rate", [&] { return nnl_set_learning_rate(m, -1); }},
        {"nnl_fit", [&] { return nnl_fit(nullptr, x, 2, xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_fit", [&] { return nnl_fit(raw, x, 2, xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_fit", [&] { return nnl_fit(m, nullptr, 2, xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_fit", [&] { return nnl_fit(m, x, 2, bad_xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_fit", [&] { return nnl_fit(m, x, 2, xs, y, NNL_INT32, 1, ys, &bad_opt); }},
        {"nnl_evaluate", [&] { return nnl_evaluate(nullptr, x, 2, xs, y, NNL_INT32, 1, ys, 0, out, 4); }},
        {"nnl_evaluate", [&] { return nnl_evaluate(raw, x, 2, xs, y, NNL_INT32, 1, ys, 0, out, 4); }},
        {"nnl_evaluate", [&] { return nnl_evaluate(m, x, 2, bad_xs, y, NNL_INT32, 1, ys, 0, out, 4); }},
        {"nnl_evaluate", [&] { return nnl_evaluate(m, x, 2, xs, y, 99, 1, ys, 0, out, 4); }},
        {"nnl_predict", [&] { return nnl_predict(nullptr, x, 2, xs, 0, p, 8); }},
        {"nnl_predict", [&] { return nnl_predict(m, x, 2, bad_xs, 0, p, 8); }},
        {"nnl_predict", [&] { return nnl_predict(m, x, 2, xs, 0, p, 1); }},
        {"nnl_predict_classes", [&] { return nnl_predict_classes(nullptr, x, 2, xs, 0, cls, 2); }},
        {"nnl_predict_classes", [&] { return nnl_predict_classes(m, x, 2, xs, 0, nullptr, 2); }},
        {"nnl_fit_typed", [&] { return nnl_fit_typed(nullptr, x, NNL_FLOAT32, 2, xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_fit_typed", [&] { return nnl_fit_typed(m, x, NNL_UINT8, 2, xs, y, NNL_INT32, 1, ys, nullptr); }},
        {"nnl_evaluate_typed",
         [&] { return nnl_evaluate_typed(nullptr, x, NNL_FLOAT32, 2, xs, y, NNL_INT32, 1, ys, 0, out, 4); }},
        {"nnl_evaluate_typed", [&] { return nnl_evaluate_typed(m, x, 99, 2, xs, y, NNL_INT32, 1, ys, 0, out, 4); }},
        {"nnl_predict_typed", [&] { return nnl_predict_typed(nullptr, x, NNL_FLOAT32, 2, xs, 0, p, 8); }},
        {"nnl_predict_typed", [&] { return nnl_predict_typed(m, x, NNL_FLOAT64, 2, xs, 0, p, 8); }},
        {"nnl_predict_classes_typed",
         [&] { return nnl_predict_classes_typed(nullptr, x, NNL_FLOAT32, 2, xs, 0, cls, 2); }},
        {"nnl_predict_classes_typed", [&] { return nnl_predict_classes_typed(m, x, 0, 2, xs, 0, cls, 2); }},
        {"nnl_history_get", [&] { return nnl_history_get(nullptr, "loss", out, 4); }},
        {"nnl_history_get", [&] { return nnl_history_get(m, "no_such_key", out, 4); }},
        {"nnl_history_clear", [&] { return nnl_history_clear(nullptr); }},
        {"nnl_plot_history", [&] { return nnl_plot_history(nullptr, missing); }},
        {"nnl_plot_history", [&] { return nnl_plot_history(m, missing); }},
        {"nnl_plot_confusion_matrix", [&] { return nnl_plot_confusion_matrix(missing, nullptr, 2, nullptr, 0, nullptr); }},
        {"nnl_plot_confusion_matrix", [&] { return nnl_plot_confusion_matrix(missing, cm, 2, nullptr, 0, nullptr); }},
        {"nnl_plot_lines", [&] { return nnl_plot_lines(missing, nullptr, nullptr, 1, 1, 3, nullptr, nullptr, nullptr, nullptr); }},
        {"nnl_plot_lines", [&] { return nnl_plot_lines(missing, nullptr, x, 1, 0, 3, nullptr, nullptr, nullptr, nullptr); }},
        {"nnl_plot_lines", [&] { return nnl_plot_lines(missing, nullptr, x, 1, 2, 3, nullptr, nullptr, nullptr, nullptr); }},
        {"nnl_plot_images", [&] { return nnl_plot_images(missing, nullptr, 1, 1, 2, 2, nullptr, nullptr); }},
        {"nnl_plot_images", [&] { return nnl_plot_images(missing, x, 0, 1, 2, 2, nullptr, nullptr); }},
        {"nnl_plot_images", [&] { return nnl_plot_images(missing, x, 1, 1, 0, 2, nullptr, nullptr); }},
        {"nnl_plot_images", [&] { return nnl_plot_images(missing, x, 1, 1, 2, 2, nullptr, nullptr); }},
        {"nnl_model_to_json", [&] { return nnl_model_to_json(nullptr, nullptr, 0) < 0 ? -1 : 0; }},
        {"nnl_model_to_json", [&] { return nnl_model_to_json(empty, nullptr, 0) < 0 ? -1 : 0; }},
        {"nnl_model_from_json", [&] { return nnl_model_from_json(nullptr, &o); }},
        {"nnl_model_from_json", [&] { return nnl_model_from_json("{\"class_name\": ", &o); }},
        {"nnl_model_from_json", [&] { return nnl_model_from_json("{\"class_name\": \"Sequential\"}", &o); }},
        {"nnl_save_weights", [&] { return nnl_save_weights(nullptr, missing); }},
        {"nnl_save_weights", [&] { return nnl_save_weights(empty, missing); }},
        {"nnl_save_weights", [&] { return nnl_save_weights(m, missing); }},
        {"nnl_load_weights", [&] { return nnl_load_weights(nullptr, missing); }},
        {"nnl_load_weights", [&] { return nnl_load_weights(m, missing); }},
        {"nnl_save_model", [&] { return nnl_save_model(nullptr, missing); }},
        {"nnl_save_model", [&] { return nnl_save_model(empty, missing); }},
        {"nnl_load_model", [&] { return nnl_load_model(nullptr, &o); }},
        {"nnl_load_model", [&] { return nnl_load_model(missing, &o); }},
        {"nnl_save_weights_npz", [&] { return nnl_save_weights_npz(nullptr, missing); }},
        {"nnl_save_weights_npz", [&] { return nnl_save_weights_npz(empty, missing); }},
        {"nnl_load_weights_npz", [&] { return nnl_load_weights_npz(nullptr, missing); }},
        {"nnl_load_weights_npz", [&] { return nnl_load_weights_npz(m, missing); }},
        {"nnl_cuda_device_name", [&] { return nnl_cuda_device_name(0, nullptr, 0); }},
        {"nnl_set_device", [&] { return nnl_set_device(nullptr, "cpu"); }},
        {"nnl_set_device", [&] { return nnl_set_device(m, nullptr); }},
        {"nnl_set_device", [&] { return nnl_set_device(m, "tpu"); }},
        {"nnl_set_tf32", [&] { return nnl_set_tf32(nullptr, 1); }},
        {"nnl_set_tf32", [&] { return nnl_set_tf32(m, 1); }},
        {"nnl_set_precision", [&] { return nnl_set_precision(nullptr, "float32"); }},
        {"nnl_set_precision", [&] { return nnl_set_precision(m, nullptr); }},
        {"nnl_set_precision", [&] { return nnl_set_precision(m, "bfloat16"); }},
        /* MPI: this library has none (make MPI=1 builds one); tests/mpi covers the MPI build */
        {"nnl_mpi_init", [&] { return nnl_mpi_init(nullptr, nullptr); }},
        {"nnl_mpi_finalize", [&] { return nnl_mpi_finalize(); }},
        {"nnl_distribute", [&] { return nnl_distribute(nullptr, nullptr, 0); }},
        {"nnl_distribute", [&] { return nnl_distribute(m, nullptr, 0); }},
        {"nnl_distribute_f", [&] { return nnl_distribute_f(m, 0, 0); }},
        {"nnl_scale_learning_rate", [&] { return nnl_scale_learning_rate(nullptr); }},
        {"nnl_scale_learning_rate", [&] { return nnl_scale_learning_rate(empty); }},
    };
    /* Functions that cannot fail, or answer NULL / 0 / NaN for a NULL
       handle as nnlite.h documents, without a message. */
    const std::vector<std::pair<const char *, std::function<bool()>>> quiet = {
        {"nnl_last_error", [&] { return nnl_last_error() != nullptr; }},
        {"nnl_status_string", [&] { return std::string(nnl_status_string(-7)) == "NNL_UNKNOWN_STATUS"; }},
        {"nnl_version", [&] { return std::string(nnl_version()) == NNL_VERSION_STRING; }},
        {"nnl_version_number", [&] { return nnl_version_number() == NNL_VERSION_NUMBER; }},
        {"nnl_set_threads", [&] { return nnl_set_threads(0) == NNL_OK; }},
        {"nnl_get_threads", [&] { return nnl_get_threads() >= 1; }},
        {"nnl_array_free", [&] { return nnl_array_free(nullptr), true; }},
        {"nnl_array_dtype", [&] { return nnl_array_dtype(nullptr) == 0; }},
        {"nnl_array_rank", [&] { return nnl_array_rank(nullptr) == 0; }},
        {"nnl_array_dim", [&] { return nnl_array_dim(nullptr, 0) == 0; }},
        {"nnl_array_shape", [&] { return nnl_array_shape(nullptr) == nullptr; }},
        {"nnl_array_size", [&] { return nnl_array_size(nullptr) == 0; }},
        {"nnl_array_data", [&] { return nnl_array_data(nullptr) == nullptr; }},
        {"nnl_model_create", [&] {
             nnl_model *t = nnl_model_create();
             nnl_model_free(t);
             return t != nullptr;
         }},
        {"nnl_model_free", [&] { return nnl_model_free(nullptr), true; }},
        {"nnl_layer_count", [&] { return nnl_layer_count(nullptr) == 0; }},
        {"nnl_param_count", [&] { return nnl_param_count(nullptr) == 0; }},
        {"nnl_weight_count", [&] { return nnl_weight_count(nullptr) == 0; }},
        {"nnl_build_info", [&] { return nnl_build_info() != nullptr; }},
        {"nnl_trainable_param_count", [&] { return nnl_trainable_param_count(nullptr) == 0; }},
        {"nnl_non_trainable_param_count", [&] { return nnl_non_trainable_param_count(nullptr) == 0; }},
        {"nnl_get_learning_rate", [&] { return std::isnan(nnl_get_learning_rate(nullptr)); }},
        {"nnl_fit_options_init", [&] { return nnl_fit_options_init(nullptr), true; }},
        {"nnl_vocab_free", [&] { return nnl_vocab_free(nullptr), true; }},
        {"nnl_vocab_size", [&] { return nnl_vocab_size(nullptr) == 0; }},
        {"nnl_vocab_word", [&] { return nnl_vocab_word(nullptr, 0) == nullptr; }},
        {"nnl_vocab_id", [&] { return nnl_vocab_id(nullptr, "x") == -1; }},
        {"nnl_history_epochs", [&] { return nnl_history_epochs(nullptr) == 0; }},
        {"nnl_history_key_count", [&] { return nnl_history_key_count(nullptr) == 0; }},
        {"nnl_history_key", [&] { return nnl_history_key(nullptr, 0) == nullptr; }},
        {"nnl_cuda_device_count", [&] { return nnl_cuda_device_count() >= 0; }},
        {"nnl_get_device", [&] { return std::string(nnl_get_device(nullptr)).empty(); }},
        {"nnl_get_precision", [&] { return std::string(nnl_get_precision(nullptr)).empty(); }},
        {"nnl_mpi_rank", [&] {
             int r = -1, n = -1;
             return nnl_mpi_rank(nullptr, &r, &n) == NNL_OK && r == 0 && n == 1;
         }},
    };

    /* every exported function is in one of the tables */
    std::set<std::string> covered;
    for (auto &f : fails) covered.insert(f.first);
    for (auto &q : quiet) covered.insert(q.first);
    std::ifstream sym(repo_file("scripts/abi/nnlite.symbols"));
    REQUIRE(sym.good());
    std::string name;
    int exported = 0;
    while (std::getline(sym, name)) {
        if (name.empty() || name[0] == '#') continue;
        exported++;
        CHECK_MESSAGE(covered.count(name) == 1, name << " is exported but not in this test's tables");
    }
    CHECK(exported >= 70);

    for (auto &f : fails) {
        const std::string fn = f.first;
        /* a message of another function first, so a call that sets none is seen */
        if (fn == "nnl_scale") nnl_shuffle(nullptr, 1, nullptr, 0, 0, 1, 1);
        else nnl_scale(nullptr, 1, 1, 0);
        int st = f.second();
        std::string msg = err();
        CAPTURE(fn);
        CAPTURE(msg);
        if (getenv("NNL_SHOW_MESSAGES")) printf("%s\n", msg.c_str()); /* to read them all */
        CHECK(st != NNL_OK);
        CHECK(msg.compare(0, fn.size() + 2, fn + ": ") == 0);
        CHECK(msg.size() > fn.size() + 2);
        CHECK(msg.compare(fn.size() + 2, 4, "nnl_") != 0); /* no doubled prefix */
        for (const char *bad : kInternal) CHECK_MESSAGE(msg.find(bad, fn.size()) == std::string::npos, bad);
        CHECK(utf8(msg));
    }
    for (auto &q : quiet) {
        CAPTURE(q.first);
        CHECK(q.second());
    }
    CHECK(a == nullptr);
    CHECK(o == nullptr);
    CHECK(vocab == nullptr);
    nnl_model_free(empty);
    nnl_model_free(m);
    nnl_model_free(raw);
}

TEST_CASE("nnl_set_device: 'gpu' means 'cuda' in every build; malformed device strings are NNL_ERR_ARGUMENT") {
    nnl_model *m = small_model();
    /* well-formed GPU requests: without CUDA (or a GPU) NNL_ERR_UNSUPPORTED,
       the header's promise, in the CPU-only build as in the CUDA build */
    if (nnl_cuda_device_count() == 0) {
        for (const char *d : {"cuda", "CUDA", "cuda:0", "cuda:3", "gpu", "GPU", "gpu:0", "Gpu:1"}) {
            CAPTURE(d);
            CHECK(nnl_set_device(m, d) == NNL_ERR_UNSUPPORTED);
            CHECK(err().rfind("nnl_set_device: ", 0) == 0);
            CHECK(err().find(d) != std::string::npos);
            CHECK(std::string(nnl_get_device(m)) == "cpu");
        }
    }
    for (const char *d : {"tpu", "gpux", "gpu:", "gpu:x", "cuda:", "cuda:-1", "cuda:1x", "cudagpu", "cuda:0:1",
                          "cpu:0", "", " cuda", "gpu:12345678"}) {
        CAPTURE(d);
        CHECK(nnl_set_device(m, d) == NNL_ERR_ARGUMENT);
        CHECK(err().rfind("nnl_set_device: unknown device", 0) == 0);
        CHECK(std::string(nnl_get_device(m)) == "cpu");
    }
    CHECK(nnl_set_device(m, "CPU") == NNL_OK);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    nnl_model_free(m);
}

TEST_CASE("layer names must be UTF-8, and to_json always writes valid JSON") {
    nnl_model *m = nnl_model_create();
    REQUIRE(nnl_add(m, "Dense(3, input_shape=(2,), name='caf\xc3\xa9 \xe2\x88\x91 \xf0\x9f\x98\x80')") == NNL_OK);
    const char *bad[] = {"Dense(2, name='bad\xff')",       "Dense(2, name='\xc3')",     "Dense(2, name='\xc0\xaf')",
                         "Dense(2, name='\xed\xa0\x80')", "Dense(2, name='\xf4\x90\x80\x80')",
                         "Dense(2, name='\x80x')"};
    for (const char *b : bad) {
        CAPTURE(b);
        CHECK(nnl_add(m, b) == NNL_ERR_ARGUMENT);
        CHECK(err().find("not valid UTF-8") != std::string::npos);
        CHECK(utf8(err()));
    }
    CHECK(nnl_layer_count(m) == 1);
    REQUIRE(nnl_add(m, "Dense(2, name=\"quote' back\\slash\ttab\")") == NNL_OK);
    std::string j = to_json(m);
    CHECK(utf8(j));
    CHECK(j.find("\"name\": \"caf\xc3\xa9 \xe2\x88\x91 \xf0\x9f\x98\x80\"") != std::string::npos);
    CHECK(j.find("\"name\": \"quote' back\\\\slash\\ttab\"") != std::string::npos);
    nnl_model *back = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(j.c_str(), &back) == NNL_OK, err());
    CHECK(to_json(back) == j);
    /* a JSON file cannot smuggle one in either */
    std::string evil = j;
    for (size_t at; (at = evil.find("caf\xc3\xa9")) != std::string::npos;)
        evil.replace(at, 5, "caf\xe9"); /* Latin-1, not UTF-8 */
    nnl_model *e = nullptr;
    CHECK(nnl_model_from_json(evil.c_str(), &e) == NNL_ERR_ARGUMENT);
    CHECK(e == nullptr);
    CHECK(err().find("not valid UTF-8") != std::string::npos);
    CHECK(err().find("caf\\xe9") != std::string::npos); /* shown escaped */
    CHECK(utf8(err()));
    nnl_model_free(back);
    nnl_model_free(m);
}

TEST_CASE("a Keras file with a layer kind nnlite lacks is refused for that kind (ConvLSTM1D, Attention)") {
    /* tf.keras 2.15's model.to_json() of Sequential([Input((28, 28)), LSTM(64), Dense(10, 'softmax')]),
       the LSTM's class renamed to kinds nnlite lacks (its options stay an LSTM's: the kind is refused
       first, not one of them). LSTM and GRU themselves load (tests/unit_rnn.hpp). */
    std::string lstm =
        R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_input_shape": [null, 28, 28], "dtype": "float32", "sparse": false, "ragged": false, "name": "input_1"}, "registered_name": null}, )"
        R"({"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "trainable": true, "dtype": "float32", "return_sequences": false, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false, "time_major": false, "units": 64, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true, )"
        R"("kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, )"
        R"("unit_forget_bias": true, "kernel_regularizer": null, "recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 2}, "registered_name": null, "build_config": {"input_shape": [null, 28, 28]}}, )"
        R"({"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "trainable": true, "dtype": "float32", "units": 10, "activation": "softmax", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}, "registered_name": null, "build_config": {"input_shape": [null, 64]}}]}, "keras_version": "2.15.0", "backend": "tensorflow"})";
    {
        nnl_model *ok = nullptr; /* as written, it loads: 64 LSTM units on 28 features, then Dense(10) */
        REQUIRE_MESSAGE(nnl_model_from_json(lstm.c_str(), &ok) == NNL_OK, err());
        CHECK(nnl_param_count(ok) == 4 * (28 * 64 + 64 * 64 + 64) + 64 * 10 + 10);
        nnl_model_free(ok);
    }
    lstm.replace(lstm.find("\"LSTM\""), 6, "\"ConvLSTM1D\"");
    std::string gru = lstm;
    for (auto r : {std::make_pair(std::string("\"ConvLSTM1D\""), std::string("\"Attention\"")),
                   std::make_pair(std::string("\"name\": \"lstm\""), std::string("\"name\": \"gru\"")),
                   std::make_pair(std::string("\"unit_forget_bias\": true"), std::string("\"reset_after\": true"))}) {
        size_t at = gru.find(r.first);
        REQUIRE(at != std::string::npos);
        gru.replace(at, r.first.size(), r.second);
    }
    for (auto c : {std::make_pair((const std::string *)&lstm, "ConvLSTM1D"), std::make_pair((const std::string *)&gru, "Attention")}) {
        CAPTURE(c.second);
        nnl_model *m = (nnl_model *)&c; /* set to NULL on failure */
        CHECK(nnl_model_from_json(c.first->c_str(), &m) == NNL_ERR_UNSUPPORTED);
        CHECK(m == nullptr);
        std::string e = err();
        CAPTURE(e);
        CHECK(e.rfind("nnl_model_from_json: layer 1 '", 0) == 0);
        CHECK(e.find(std::string("layer kind '") + c.second + "' is not supported by this version") != std::string::npos);
        CHECK(e.find("supported: InputLayer, ") != std::string::npos);
        CHECK(e.find("Dense") != std::string::npos);
        CHECK(e.find("Orthogonal") == std::string::npos); /* not refused over an option */
        CHECK(e.find("initializer") == std::string::npos);
    }
}

TEST_CASE("models written by standalone Keras 2.1 and 2.2 load, initializers as VarianceScaling") {
    /* Keras 2.1.6: "config" is the list of layers */
    const std::string k21 =
        R"({"class_name": "Sequential", "config": [{"class_name": "Conv2D", "config": {"name": "conv2d_1", "trainable": true, "batch_input_shape": [null, 28, 28, 1], "dtype": "float32", "filters": 8, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}, )"
        R"({"class_name": "MaxPooling2D", "config": {"name": "max_pooling2d_1", "trainable": true, "pool_size": [2, 2], "padding": "valid", "strides": [2, 2], "data_format": "channels_last"}}, {"class_name": "Flatten", "config": {"name": "flatten_1", "trainable": true}}, )"
        R"({"class_name": "Dense", "config": {"name": "dense_1", "trainable": true, "units": 10, "activation": "softmax", "use_bias": true, "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": null}}, "bias_initializer": {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05, "seed": null}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}], "keras_version": "2.1.6", "backend": "tensorflow"})";
    /* Keras 2.2.4: {"name": ..., "layers": [...]}, BatchNormalization and a TruncatedNormal */
    const std::string k22 =
        R"({"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [{"class_name": "Dense", "config": {"name": "dense_1", "trainable": true, "batch_input_shape": [null, 20], "dtype": "float32", "units": 16, "activation": "relu", "use_bias": true, "kernel_initializer": {"class_name": "TruncatedNormal", "config": {"mean": 0.0, "stddev": 0.02, "seed": null}}, "bias_initializer": {"class_name": "Constant", "config": {"value": 0.1}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}, )"
        R"({"class_name": "BatchNormalization", "config": {"name": "batch_normalization_1", "trainable": true, "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": true, "scale": true, "beta_initializer": {"class_name": "Zeros", "config": {}}, "gamma_initializer": {"class_name": "Ones", "config": {}}, "moving_mean_initializer": {"class_name": "Zeros", "config": {}}, "moving_variance_initializer": {"class_name": "Ones", "config": {}}, "beta_regularizer": null, "gamma_regularizer": null, "beta_constraint": null, "gamma_constraint": null}}, )"
        R"({"class_name": "Dense", "config": {"name": "dense_2", "trainable": true, "units": 3, "activation": "softmax", "use_bias": true, "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform", "seed": null}}, "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null}}]}, "keras_version": "2.2.4", "backend": "tensorflow"})";
    nnl_model *a = nullptr, *b = nullptr;
    REQUIRE_MESSAGE(nnl_model_from_json(k21.c_str(), &a) == NNL_OK, err());
    CHECK(nnl_param_count(a) == 8 * 9 + 8 + 13 * 13 * 8 * 10 + 10);
    std::string j = to_json(a);
    CHECK(j.find("\"name\": \"conv2d_1\"") != std::string::npos); /* names kept */
    /* the initializers as read: written back in Keras' class form */
    CHECK(j.find("\"kernel_initializer\": {\"class_name\": \"VarianceScaling\", \"config\": {\"scale\": 1.0, \"mode\": "
                 "\"fan_avg\", \"distribution\": \"uniform\", \"seed\": null}}") != std::string::npos);
    CHECK(j.find("{\"scale\": 2.0, \"mode\": \"fan_in\", \"distribution\": \"truncated_normal\", \"seed\": null}") !=
          std::string::npos);
    CHECK(j.find("\"bias_initializer\": {\"class_name\": \"RandomUniform\"") != std::string::npos);
    nnl_model *again = nullptr;
    REQUIRE(nnl_model_from_json(j.c_str(), &again) == NNL_OK);
    CHECK(to_json(again) == j);
    REQUIRE_MESSAGE(nnl_model_from_json(k22.c_str(), &b) == NNL_OK, err());
    CHECK(nnl_param_count(b) == 20 * 16 + 16 + 4 * 16 + 16 * 3 + 3);
    std::vector<float> bias(16);
    REQUIRE(nnl_get_weight(b, 1, bias.data(), 16) == NNL_OK);
    CHECK(bias == std::vector<float>(16, 0.1f)); /* Constant(0.1) */
    std::vector<float> k(320);
    REQUIRE(nnl_get_weight(b, 0, k.data(), 320) == NNL_OK);
    for (float v : k) CHECK(std::fabs(v) <= 0.04f + 1e-7f); /* TruncatedNormal(stddev=0.02): within 2 stddev */
    j = to_json(b);
    CHECK(j.find("{\"class_name\": \"TruncatedNormal\", \"config\": {\"mean\": 0.0, \"stddev\": 0.02, \"seed\": null}}") !=
          std::string::npos);
    CHECK(j.find("{\"class_name\": \"Constant\", \"config\": {\"value\": 0.1}}") != std::string::npos);
    nnl_model_free(a);
    nnl_model_free(again);
    nnl_model_free(b);
}
