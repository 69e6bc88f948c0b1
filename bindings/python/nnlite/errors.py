"""nnlite's status codes as Python exceptions: one nnlite.Error subclass per
NNL_ERR_* code, each also deriving from the closest built-in exception, and
carrying the status code (.status) and nnlite's message (.message), which
names the Python call (model.fit(), model.compile()) where nnlite's C
message names the C function (nnl_fit, nnl_compile)."""
import re

OK, ARGUMENT, SHAPE, STATE, IO, FORMAT, MEMORY, UNSUPPORTED, NUMERIC, INTERNAL, DISTRIBUTED, DEVICE = range(12)


class Error(Exception):
    """Base of every nnlite error. .status is the NNL_ERR_* code, .message the
    library's nnl_last_error() text."""
    status = -1

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self):
        return self.message


class ArgumentError(Error, ValueError):
    """NNL_ERR_ARGUMENT: a bad value, NULL handle or bad spec string."""
    status = ARGUMENT


class ShapeError(Error, ValueError):
    """NNL_ERR_SHAPE: an array's shape does not fit the model or the other array."""
    status = SHAPE


class StateError(Error, RuntimeError):
    """NNL_ERR_STATE: call out of order (fit before compile, add after compile)."""
    status = STATE


class FileError(Error, OSError):
    """NNL_ERR_IO: a file could not be opened, read or written."""
    status = IO


class FormatError(Error, ValueError):
    """NNL_ERR_FORMAT: a file is truncated, corrupt or of another kind."""
    status = FORMAT


class OutOfMemoryError(Error, MemoryError):
    """NNL_ERR_MEMORY: an allocation failed or a size exceeds sane limits."""
    status = MEMORY


class UnsupportedError(Error, NotImplementedError):
    """NNL_ERR_UNSUPPORTED: not built in, not implemented, or a library of another ABI version."""
    status = UNSUPPORTED


class NumericError(Error, ArithmeticError):
    """NNL_ERR_NUMERIC: NaN or Inf in the data, the loss or the weights."""
    status = NUMERIC


class InternalError(Error, RuntimeError):
    """NNL_ERR_INTERNAL: a bug in nnlite."""
    status = INTERNAL


class DistributedError(Error, RuntimeError):
    """NNL_ERR_DISTRIBUTED (since 0.4): another rank of a data-parallel run
    (model.distribute()) failed, left the run, or did not answer within
    NNL_MPI_TIMEOUT seconds; the model stays failed."""
    status = DISTRIBUTED


class DeviceError(Error, RuntimeError):
    """NNL_ERR_DEVICE (since 0.8): the GPU or its driver failed or cannot serve
    (device lost, ECC error, a fault in a kernel, a driver older than the CUDA
    runtime, no code for this GPU); the message holds CUDA's. The context of
    the device is usually lost for the process: model.set_device("cpu")
    continues on the CPU with the weights of the model's last GPU call that
    succeeded."""
    status = DEVICE


BY_STATUS = {c.status: c for c in (ArgumentError, ShapeError, StateError, FileError, FormatError,
                                   OutOfMemoryError, UnsupportedError, NumericError, InternalError,
                                   DistributedError, DeviceError)}


# The C functions nnlite's messages name ("nnl_fit: the model is not
# compiled: call nnl_compile first"), as a Python user calls them
# ("model.fit(): the model is not compiled: call model.compile() first").
PYTHON_NAMES = {
    "nnl_init": "nnlite.check_version()",
    "nnl_set_threads": "nnlite.set_threads()",
    "nnl_model_set_seed": "Sequential(seed=...)",
    "nnl_reset_states": "model.reset_states()",
    "nnl_add": "model.add()",
    "nnl_add_input": "model.add()",
    "nnl_add_dense": "model.add()",
    "nnl_add_activation": "model.add()",
    "nnl_add_dropout": "model.add()",
    "nnl_add_flatten": "model.add()",
    "nnl_add_reshape": "model.add()",
    "nnl_compile": "model.compile()",
    "nnl_set_learning_rate": "model.learning_rate",
    "nnl_fit": "model.fit()",
    "nnl_evaluate": "model.evaluate()",
    "nnl_predict": "model.predict()",
    "nnl_predict_classes": "model.predict_classes()",
    "nnl_fit_typed": "model.fit()",
    "nnl_evaluate_typed": "model.evaluate()",
    "nnl_predict_typed": "model.predict()",
    "nnl_predict_classes_typed": "model.predict_classes()",
    "nnl_summary": "model.summary()",
    "nnl_summary_string": "model.summary()",
    "nnl_weight_count": "model.get_weights()",
    "nnl_weight_info": "model.get_weights()",
    "nnl_get_weight": "model.get_weights()",
    "nnl_set_weight": "model.set_weights()",
    "nnl_history_get": "History.history",
    "nnl_plot_history": "model.plot_history()",
    "nnl_save_model": "model.save()",
    "nnl_load_model": "nnlite.load_model()",
    "nnl_save_weights": "model.save_weights()",
    "nnl_save_weights_npz": "model.save_weights()",
    "nnl_load_weights": "model.load_weights()",
    "nnl_load_weights_npz": "model.load_weights()",
    "nnl_model_to_json": "model.to_json()",
    "nnl_model_from_json": "nnlite.model_from_json()",
    "nnl_set_device": "model.to()",
    "nnl_set_tf32": "model.set_tf32()",
    "nnl_set_precision": "model.set_precision()",
    "nnl_text_vocab": "nnlite.text.Vocab()",
    "nnl_load_words": "nnlite.text.load_words()",
    "nnl_lm_windows": "nnlite.text.lm_windows()",
    "nnl_sliding_windows": "nnlite.text.sliding_windows()",
    "nnl_load_image": "nnlite.images.load_image()",
    "nnl_image_dataset_from_directory": "nnlite.images.image_dataset_from_directory()",
    "nnl_save_image": "nnlite.images.save_image()",
    "nnl_distribute": "model.distribute()",
    "nnl_mpi_rank": "model.mpi_rank()",
    "nnl_scale_learning_rate": "model.scale_learning_rate()",
}
_C_NAME = re.compile(r"\bnnl_[a-z0-9_]+")


def python_names(message):
    """nnlite's message with the C functions it names replaced by the Python
    calls that reach them (names without a Python counterpart stay)."""
    return _C_NAME.sub(lambda m: PYTHON_NAMES.get(m.group(0), m.group(0)), message)


def make(status, message):
    """The exception for a status code (unknown codes give a plain Error),
    its message in Python's names."""
    cls = BY_STATUS.get(status, Error)
    return cls(python_names(message), status)
