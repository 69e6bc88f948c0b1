"""Loading libnnlite and declaring its C functions (ctypes).

Where the library comes from, first found wins:
  1. the NNLITE_LIBRARY environment variable (a path to libnnlite.so[.N]);
  2. an installed prefix: PREFIX/lib/libnnlite.so.N beside this package when it
     is installed as PREFIX/lib/python3/dist-packages/nnlite (make install);
  3. the source tree's build folder (bindings/python/nnlite -> ../../../build);
  4. the system's loader (ldconfig paths, LD_LIBRARY_PATH): libnnlite.so.N.
On load the library's version is checked with nnl_init() against the version
this package was written for; a different ABI major version is refused with
nnlite.UnsupportedError naming both.
"""
import ctypes
import ctypes.util
import os

# The nnlite.h this package mirrors (MAJOR, MINOR, PATCH). Tests check it
# against the header; nnl_init() checks it against the library at load time.
HEADER_VERSION = (0, 8, 3)
HEADER_VERSION_NUMBER = HEADER_VERSION[0] * 10000 + HEADER_VERSION[1] * 100 + HEADER_VERSION[2]
SONAME = "libnnlite.so.%d" % HEADER_VERSION[0]

c_int, c_int64, c_double, c_float = ctypes.c_int, ctypes.c_int64, ctypes.c_double, ctypes.c_float
c_char_p, c_void_p, c_uint64 = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64
P_float = ctypes.POINTER(c_float)
P_int64 = ctypes.POINTER(c_int64)
P_double = ctypes.POINTER(c_double)
P_int32 = ctypes.POINTER(ctypes.c_int32)

CALLBACK = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_int, c_int, c_int64, P_double, c_int)


class FitOptions(ctypes.Structure):
    """nnl_fit_options as this package's header version declares it."""
    _fields_ = [
        ("struct_size", c_int),
        ("epochs", c_int),
        ("batch_size", c_int),
        ("validation_split", c_double),
        ("shuffle", c_int),
        ("verbose", c_int),
        ("seed", c_uint64),
        ("initial_epoch", c_int),
        ("x_val", c_void_p),
        ("x_val_rank", c_int),
        ("x_val_shape", P_int64),
        ("y_val", c_void_p),
        ("y_val_dtype", c_int),
        ("y_val_rank", c_int),
        ("y_val_shape", P_int64),
        ("callback", CALLBACK),
        ("callback_user", c_void_p),
        ("log", c_void_p),
        ("reset_states", c_int),
        ("x_val_dtype", c_int),
    ]


def _candidates():
    env = os.environ.get("NNLITE_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    # installed: PREFIX/lib/python3/dist-packages/nnlite -> PREFIX/lib
    for up in ("../../..", "../../../.."):
        d = os.path.normpath(os.path.join(here, up))
        for name in (SONAME, "libnnlite.so"):
            yield os.path.join(d, name)
    # source tree: bindings/python/nnlite -> build/
    root = os.path.normpath(os.path.join(here, "../../.."))
    for b in ("build", "build-cmake"):
        yield os.path.join(root, b, "libnnlite.so")
    found = ctypes.util.find_library("nnlite")
    yield found or SONAME


def _open():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("nnlite: cannot load libnnlite; set NNLITE_LIBRARY to its path. Tried: " + "; ".join(tried))


def _declare(lib):
    def f(name, res, *args):
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = list(args)

    f("nnl_last_error", c_char_p)
    f("nnl_status_string", c_char_p, c_int)
    f("nnl_version", c_char_p)
    f("nnl_version_number", c_int)
    f("nnl_has_feature", c_int, c_char_p)
    f("nnl_build_info", c_char_p)
    f("nnl_init", c_int, c_int)
    f("nnl_set_threads", c_int, c_int)
    f("nnl_get_threads", c_int)
    f("nnl_model_create", c_void_p)
    f("nnl_model_free", None, c_void_p)
    f("nnl_add", c_int, c_void_p, c_char_p)
    f("nnl_model_set_seed", c_int, c_void_p, c_uint64)
    f("nnl_reset_states", c_int, c_void_p)
    f("nnl_layer_count", c_int, c_void_p)
    f("nnl_param_count", c_int64, c_void_p)
    f("nnl_output_shape", c_int, c_void_p, P_int64)
    f("nnl_input_shape", c_int, c_void_p, P_int64)
    f("nnl_summary_string", c_int64, c_void_p, c_char_p, c_int64)
    f("nnl_weight_count", c_int, c_void_p)
    f("nnl_weight_info", c_int, c_void_p, c_int, c_char_p, c_int, ctypes.POINTER(c_int), P_int64)
    f("nnl_get_weight", c_int, c_void_p, c_int, P_float, c_int64)
    f("nnl_set_weight", c_int, c_void_p, c_int, P_float, c_int64)
    f("nnl_compile", c_int, c_void_p, c_char_p, c_char_p, c_char_p)
    f("nnl_set_learning_rate", c_int, c_void_p, c_double)
    f("nnl_get_learning_rate", c_double, c_void_p)
    f("nnl_fit_options_init", None, c_void_p)
    f("nnl_fit", c_int, c_void_p, P_float, c_int, P_int64, c_void_p, c_int, c_int, P_int64, c_void_p)
    f("nnl_evaluate", c_int, c_void_p, P_float, c_int, P_int64, c_void_p, c_int, c_int, P_int64, c_int,
      P_double, c_int)
    f("nnl_predict", c_int, c_void_p, P_float, c_int, P_int64, c_int, P_float, c_int64)
    f("nnl_predict_classes", c_int, c_void_p, P_float, c_int, P_int64, c_int, P_int32, c_int64)
    f("nnl_fit_typed", c_int, c_void_p, c_void_p, c_int, c_int, P_int64, c_void_p, c_int, c_int, P_int64, c_void_p)
    f("nnl_evaluate_typed", c_int, c_void_p, c_void_p, c_int, c_int, P_int64, c_void_p, c_int, c_int, P_int64,
      c_int, P_double, c_int)
    f("nnl_predict_typed", c_int, c_void_p, c_void_p, c_int, c_int, P_int64, c_int, P_float, c_int64)
    f("nnl_predict_classes_typed", c_int, c_void_p, c_void_p, c_int, c_int, P_int64, c_int, P_int32, c_int64)
    f("nnl_history_epochs", c_int, c_void_p)
    f("nnl_history_key_count", c_int, c_void_p)
    f("nnl_history_key", c_char_p, c_void_p, c_int)
    f("nnl_history_get", c_int, c_void_p, c_char_p, P_double, c_int)
    f("nnl_history_clear", c_int, c_void_p)
    f("nnl_plot_history", c_int, c_void_p, c_char_p)
    # model files (issue 4); absent from an older library: the wrappers then raise
    for name, res, args in (
        ("nnl_model_to_json", c_int64, (c_void_p, c_char_p, c_int64)),
        ("nnl_model_from_json", c_int, (c_char_p, ctypes.POINTER(c_void_p))),
        ("nnl_save_weights", c_int, (c_void_p, c_char_p)),
        ("nnl_load_weights", c_int, (c_void_p, c_char_p)),
        ("nnl_save_model", c_int, (c_void_p, c_char_p)),
        ("nnl_load_model", c_int, (c_char_p, ctypes.POINTER(c_void_p))),
        ("nnl_save_weights_npz", c_int, (c_void_p, c_char_p)),
        ("nnl_load_weights_npz", c_int, (c_void_p, c_char_p)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # weight list (issue 11): trainable flags and counts; absent from an older library
    for name, res, args in (
        ("nnl_weight_trainable", c_int, (c_void_p, c_int, ctypes.POINTER(c_int))),
        ("nnl_trainable_param_count", c_int64, (c_void_p,)),
        ("nnl_non_trainable_param_count", c_int64, (c_void_p,)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # GPU (issue 6); a library built without CUDA has them and answers "no GPU"
    for name, res, args in (
        ("nnl_cuda_device_count", c_int, ()),
        ("nnl_cuda_device_name", c_int, (c_int, c_char_p, c_int)),
        ("nnl_set_device", c_int, (c_void_p, c_char_p)),
        ("nnl_get_device", c_char_p, (c_void_p,)),
        ("nnl_set_tf32", c_int, (c_void_p, c_int)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # mixed precision (issue 14, since 0.6)
    for name, res, args in (
        ("nnl_set_precision", c_int, (c_void_p, c_char_p)),
        ("nnl_get_precision", c_char_p, (c_void_p,)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # arrays and text corpora (0.3): absent from an older library, the wrappers then raise
    P_handle = ctypes.POINTER(c_void_p)
    for name, res, args in (
        ("nnl_array_free", None, (c_void_p,)),
        ("nnl_array_dtype", c_int, (c_void_p,)),
        ("nnl_array_rank", c_int, (c_void_p,)),
        ("nnl_array_dim", c_int64, (c_void_p, c_int)),
        ("nnl_array_data", c_void_p, (c_void_p,)),
        ("nnl_text_vocab", c_int, (c_char_p, P_handle)),
        ("nnl_vocab_free", None, (c_void_p,)),
        ("nnl_vocab_size", c_int64, (c_void_p,)),
        ("nnl_vocab_word", c_char_p, (c_void_p, c_int64)),
        ("nnl_vocab_id", c_int64, (c_void_p, c_char_p)),
        ("nnl_load_words", c_int, (c_char_p, c_void_p, P_handle)),
        ("nnl_lm_windows", c_int, (P_int32, c_int64, c_int, c_int, P_handle, P_handle)),
        ("nnl_sliding_windows", c_int, (P_float, c_int64, c_int64, c_int64, P_handle, P_handle)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # image files (issue 16, since 0.7); a library without stb has them and
    # answers NNL_ERR_UNSUPPORTED
    for name, res, args in (
        ("nnl_load_image", c_int, (c_char_p, c_int, c_int, c_int, c_float, P_handle)),
        ("nnl_image_dataset_from_directory", c_int, (c_char_p, c_int, c_int, c_int, c_float, c_int, c_uint64,
                                                     c_double, c_char_p, c_int, P_handle, P_handle, P_handle)),
        ("nnl_save_image", c_int, (c_char_p, P_float, c_int, c_int, c_int, c_float)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)
    # data-parallel training over MPI (0.4); a library without MPI has them and
    # answers NNL_ERR_UNSUPPORTED
    P_cint = ctypes.POINTER(c_int)
    for name, res, args in (
        ("nnl_mpi_init", c_int, (c_void_p, c_void_p)),
        ("nnl_mpi_finalize", c_int, ()),
        ("nnl_distribute", c_int, (c_void_p, c_void_p, c_int)),
        ("nnl_mpi_rank", c_int, (c_void_p, P_cint, P_cint)),
        ("nnl_scale_learning_rate", c_int, (c_void_p,)),
    ):
        if hasattr(lib, name):
            f(name, res, *args)


lib, path = _open()
_declare(lib)
