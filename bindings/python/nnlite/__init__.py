"""nnlite for Python: Keras-like models over libnnlite's C ABI (ctypes +
numpy, no compiled extension).

    import numpy as np, nnlite
    from nnlite import layers
    model = nnlite.Sequential([layers.Dense(128, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=5, validation_split=0.1)
    loss, acc = model.evaluate(x_test, y_test)
    model.save("mlp.nnl"); again = nnlite.load_model("mlp.nnl")

Arrays go in as numpy arrays (converted to C-contiguous float32 only when
they are not already) and predictions come back as numpy arrays. Failures
raise an nnlite.Error subclass per status code carrying nnlite's message.
The library is found as nnlite._lib explains (NNLITE_LIBRARY first)."""

try:  # numpy first: without it, say what to install rather than fail deep inside the package
    import numpy as _numpy  # noqa: F401
except ImportError as _e:
    import sys as _sys
    raise ImportError(
        "nnlite needs numpy, which this Python (%s) cannot import (%s). Install it: on Debian or "
        "Ubuntu `sudo apt-get install python3-numpy` (numpy for /usr/bin/python3, then run nnlite "
        "with /usr/bin/python3), or for this interpreter `%s -m pip install numpy`."
        % (_sys.executable, _e, _sys.executable), name="numpy") from _e

from . import _lib
from . import errors
from . import layers
from . import optimizers
from . import text
from . import images
from .errors import (Error, ArgumentError, ShapeError, StateError, FileError, FormatError, OutOfMemoryError,
                     UnsupportedError, NumericError, InternalError, DistributedError,
                     DeviceError)
from .models import Sequential, History, Callback, load_model, model_from_json
from .layers import Input

__version__ = "%d.%d.%d" % _lib.HEADER_VERSION


def check_version(header_version_number=_lib.HEADER_VERSION_NUMBER):
    """The nnl_init() handshake: raises UnsupportedError (nnlite's message
    names both versions) when the loaded library cannot serve this package's
    header version. Done once at import."""
    status = _lib.lib.nnl_init(int(header_version_number))
    if status != 0:
        raise errors.make(status, _lib.lib.nnl_last_error().decode() + " [library: %s]" % _lib.path)


check_version()


def library_version():
    """The loaded library's version string (nnl_version())."""
    return _lib.lib.nnl_version().decode()


def library_path():
    return _lib.path


def has_feature(name):
    """Whether the loaded library has a feature (nnl_has_feature): "stb",
    "threads", "cuda" (compiled in), "mpi", "hdf5", "avx2",
    "avx512f" (used on this CPU), "bf16" (AVX512-BF16, for
    Model.set_precision("mixed_bfloat16"); since 0.6), "images" (image
    files: nnlite.images; since 0.7). An unknown name
    raises ArgumentError naming the known ones."""
    status = _lib.lib.nnl_has_feature(str(name).encode())
    if status < 0:
        raise errors.make(1, _lib.lib.nnl_last_error().decode())
    return status == 1


def build_info():
    """One line describing the loaded library's build (nnl_build_info)."""
    return _lib.lib.nnl_build_info().decode()


def cuda_device_count():
    """Number of CUDA devices nnlite can use (0 in a build without CUDA)."""
    return int(_lib.lib.nnl_cuda_device_count()) if hasattr(_lib.lib, "nnl_cuda_device_count") else 0


def set_threads(n):
    """Threads the kernels use (nnl_set_threads); n <= 0 restores the default."""
    _lib.lib.nnl_set_threads(int(n))


def get_threads():
    return int(_lib.lib.nnl_get_threads())


__all__ = ["cuda_device_count", "Sequential", "History", "Callback", "Input", "layers", "optimizers", "text", "images",
           "load_model", "model_from_json", "Error", "ArgumentError", "ShapeError", "StateError", "FileError",
           "FormatError", "OutOfMemoryError", "UnsupportedError", "NumericError", "InternalError", "DistributedError",
           "DeviceError", "check_version",
           "library_version", "library_path", "set_threads", "get_threads", "has_feature", "build_info"]
