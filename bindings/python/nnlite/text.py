"""Word corpora and sequence windows (nnlite.h's "Text corpora and
sequences"): the Penn Treebank reader, the language-model batcher and the
time-series sliding windows, with numpy arrays in and out.

    import nnlite
    vocab = nnlite.text.Vocab("ptb.train.txt")        # ids by count, "<unk>" kept
    ids = nnlite.text.load_words("ptb.train.txt", vocab)   # int32 (n,)
    x, y = nnlite.text.lm_windows(ids, batch_size=20, num_steps=35)
    # x, y int32 (windows * 20, 35): fit with shuffle=False, batch_size=20

    xs, ys = nnlite.text.sliding_windows(series, window=30)   # float32

Everything is read from files offline; failures raise nnlite.Error
subclasses with nnlite's message (a missing file FileError, a file with a
NUL byte FormatError, too few ids ArgumentError)."""
import ctypes

import numpy as np

from . import _lib
from . import errors

_L = _lib.lib
_c = ctypes
P_void = _c.POINTER(_c.c_void_p)


def _raise_for(status):
    if status != 0:
        msg = _L.nnl_last_error().decode("utf-8", "replace")
        raise errors.make(status, msg or _L.nnl_status_string(status).decode())


def _need(name):
    if not hasattr(_L, name):
        raise errors.UnsupportedError("nnlite: %s is not in the loaded library %s (version %s); this call "
                                      "needs libnnlite 0.3 or newer" % (name, _lib.path, _L.nnl_version().decode()),
                                      errors.UNSUPPORTED)
    return getattr(_L, name)


def _path(p):
    import os
    return os.fsencode(os.fspath(p))


_NP_OF = {1: np.float32, 3: np.int32}  # NNL_FLOAT32, NNL_INT32: what these functions return


def _take_array(handle):
    """A numpy copy of an nnl_array the library made, which is then freed."""
    try:
        dtype = _L.nnl_array_dtype(handle)
        rank = _L.nnl_array_rank(handle)
        shape = tuple(int(_L.nnl_array_dim(handle, i)) for i in range(rank))
        if dtype not in _NP_OF:
            raise errors.InternalError("nnlite: unexpected array dtype %d" % dtype, errors.INTERNAL)
        out = np.empty(shape, dtype=_NP_OF[dtype])
        if out.size:
            ctypes.memmove(out.ctypes.data, _L.nnl_array_data(handle), out.nbytes)
        return out
    finally:
        _L.nnl_array_free(handle)


class Vocab:
    """A word vocabulary built from one (training) file, as TensorFlow's PTB
    reader: whitespace tokens, each line ending in "<eos>", ids by count
    (most frequent first, ties by the word's bytes). nnl_text_vocab.

    len(v) words; v.word(id) -> str (None out of range); v.id(word) -> int
    (-1 when absent); v.words() -> the list in id order. Read-only once built;
    freed with the object (or v.close())."""

    def __init__(self, path):
        fn = _need("nnl_text_vocab")
        h = _c.c_void_p()
        _raise_for(fn(_path(path), _c.byref(h)))
        self._h = h

    def close(self):
        if getattr(self, "_h", None):
            _L.nnl_vocab_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def _handle(self):
        if not self._h:
            raise errors.StateError("nnlite: this Vocab was closed", errors.STATE)
        return self._h

    def __len__(self):
        return int(_L.nnl_vocab_size(self._handle()))

    def word(self, i):
        """The word of id i, or None when i is out of range (nnl_vocab_word)."""
        w = _L.nnl_vocab_word(self._handle(), int(i))
        return None if w is None else w.decode("utf-8", "surrogateescape")

    def id(self, word):
        """The id of word, or -1 when the vocabulary does not hold it (nnl_vocab_id)."""
        return int(_L.nnl_vocab_id(self._handle(), str(word).encode("utf-8", "surrogateescape")))

    def __contains__(self, word):
        return self.id(word) >= 0

    def words(self):
        """Every word in id order."""
        return [self.word(i) for i in range(len(self))]


def load_words(path, vocab):
    """The words of a file as int32 ids (n,) under vocab (nnl_load_words); a
    word the vocabulary lacks becomes "<unk>"'s id (ArgumentError naming the
    word, file and line when there is no "<unk>")."""
    fn = _need("nnl_load_words")
    h = _c.c_void_p()
    _raise_for(fn(_path(path), vocab._handle(), _c.byref(h)))
    return _take_array(h)


def lm_windows(ids, batch_size, num_steps):
    """Language-model windows as TensorFlow's ptb_producer and PyTorch's
    batchify (nnl_lm_windows): the ids are laid into batch_size rows, window
    i takes num_steps columns of every row and the targets are the same
    columns shifted by one. Returns (x, y), int32 (windows * batch_size,
    num_steps), window-major: fit with shuffle=False and this batch_size, and
    row r of each batch continues row r of the batch before (stateful layers).
    ids: integers >= 0, any integer dtype (converted to int32)."""
    fn = _need("nnl_lm_windows")
    a = np.asarray(ids)
    if a.dtype.kind not in "iu":
        raise errors.ArgumentError("nnlite: lm_windows: ids must be integers, got dtype %s" % a.dtype,
                                   errors.ARGUMENT)
    if a.size and (a.min() < 0 or a.max() > np.iinfo(np.int32).max):
        raise errors.ArgumentError("nnlite: lm_windows: ids must be in [0, 2^31)", errors.ARGUMENT)
    a = np.ascontiguousarray(a.reshape(-1), dtype=np.int32)
    hx, hy = _c.c_void_p(), _c.c_void_p()
    _raise_for(fn(a.ctypes.data_as(_lib.P_int32), a.size, int(batch_size), int(num_steps), _c.byref(hx),
                  _c.byref(hy)))
    x = _take_array(hx)
    return x, _take_array(hy)


def sliding_windows(series, window):
    """Sliding windows over a series (nnl_sliding_windows): series (n,) or
    (n, features); returns x float32 (n - window, window, features) with
    x[t] = series[t : t + window] and y float32 (n - window, features) with
    y[t] = series[t + window]. window >= 1 and n > window."""
    fn = _need("nnl_sliding_windows")
    s = np.asarray(series, dtype=np.float32)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise errors.ShapeError("nnlite: sliding_windows: series must be (n,) or (n, features), got shape %s"
                                % (s.shape,), errors.SHAPE)
    s = np.ascontiguousarray(s)
    hx, hy = _c.c_void_p(), _c.c_void_p()
    _raise_for(fn(s.ctypes.data_as(_lib.P_float), s.shape[0], s.shape[1], int(window), _c.byref(hx),
                  _c.byref(hy)))
    x = _take_array(hx)
    return x, _take_array(hy)


__all__ = ["Vocab", "load_words", "lm_windows", "sliding_windows"]
