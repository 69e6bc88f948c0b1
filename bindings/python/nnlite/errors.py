"""nnlite's status codes as Python exceptions: one nnlite.Error subclass per
NNL_ERR_* code, each also deriving from the closest built-in exception, and
carrying the status code (.status) and nnlite's message (.message)."""

OK, ARGUMENT, SHAPE, STATE, IO, FORMAT, MEMORY, UNSUPPORTED, NUMERIC, INTERNAL = range(10)


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


BY_STATUS = {c.status: c for c in (ArgumentError, ShapeError, StateError, FileError, FormatError,
                                   OutOfMemoryError, UnsupportedError, NumericError, InternalError)}


def make(status, message):
    """The exception for a status code (unknown codes give a plain Error)."""
    cls = BY_STATUS.get(status, Error)
    return cls(message, status)
