"""Image files (nnlite.h's "Images", since 0.7): reading PNG, JPEG, BMP,
GIF (first frame), TGA and PNM into numpy arrays, Keras'
image_dataset_from_directory, and writing PNG, JPEG, BMP and TGA files.

    import nnlite
    x = nnlite.images.load_image("digit.png", color_mode="grayscale", size=(28, 28), scale=1 / 255)
    # x: float32 (28, 28, 1)
    (x_train, y_train), names = nnlite.images.image_dataset_from_directory(
        "photos", image_size=(64, 64), seed=1337, validation_split=0.2, subset="training")
    nnlite.images.save_image("out.png", x, scale=255)

Pixels are float32 (height, width, channels), values 0..255 times scale.
Resizing: bilinear (half-pixel centres) where an axis grows, area averaging
where it shrinks. Needs a library built with stb (has_feature("images")):
without it the calls raise UnsupportedError naming libstb-dev. Failures
raise nnlite.Error subclasses with nnlite's message (a missing file
FileError, a corrupt one FormatError)."""
import ctypes
import random

import numpy as np

from . import _lib
from . import errors
from .text import _raise_for, _path, _take_array

_L = _lib.lib
_c = ctypes

_CHANNELS = {None: 0, "grayscale": 1, "rgb": 3, "rgba": 4}


def _need(name):
    if not hasattr(_L, name):
        raise errors.UnsupportedError("nnlite: %s is not in the loaded library %s (version %s); this call "
                                      "needs libnnlite 0.6 or newer" % (name, _lib.path, _L.nnl_version().decode()),
                                      errors.UNSUPPORTED)
    return getattr(_L, name)


def _channels(color_mode):
    if isinstance(color_mode, int) and not isinstance(color_mode, bool):
        return color_mode
    if color_mode not in _CHANNELS:
        raise errors.ArgumentError("nnlite: color_mode must be 'grayscale', 'rgb', 'rgba', None (as stored) "
                                   "or a channel count, got %r" % (color_mode,), errors.ARGUMENT)
    return _CHANNELS[color_mode]


def _size(size):
    if size is None:
        return 0, 0
    h, w = size
    return int(h), int(w)


def load_image(path, color_mode=None, size=None, scale=1.0):
    """One image file as float32 (height, width, channels) (nnl_load_image).
    color_mode: None (as stored), "grayscale", "rgb", "rgba" or 0..4
    channels; size: (height, width) to resize to, or None; scale multiplies
    the 0..255 values (1 / 255 for [0, 1])."""
    fn = _need("nnl_load_image")
    h, w = _size(size)
    out = _c.c_void_p()
    _raise_for(fn(_path(path), _channels(color_mode), h, w, float(scale), _c.byref(out)))
    return _take_array(out)


def _names(handle):
    try:
        return [_L.nnl_vocab_word(handle, i).decode("utf-8", "surrogateescape")
                for i in range(int(_L.nnl_vocab_size(handle)))]
    finally:
        _L.nnl_vocab_free(handle)


def image_dataset_from_directory(directory, image_size=(256, 256), color_mode="rgb", shuffle=True, seed=None,
                                 validation_split=None, subset=None, scale=1.0, skip_bad=False):
    """A labelled dataset from a folder of class folders, as Keras'
    image_dataset_from_directory with labels="inferred", label_mode="int"
    (nnl_image_dataset_from_directory). Returns ((x, y), class_names): x
    float32 (n, height, width, channels), y int32 (n,), class_names the
    sorted subfolder names; with subset="both", ((x_train, y_train),
    (x_val, y_val), class_names). image_size None keeps the files' size
    (then all alike). seed None picks one at random, as Keras does; the same
    seed gives Keras' split of the files. skip_bad: leave unreadable files
    out with a warning instead of raising."""
    fn = _need("nnl_image_dataset_from_directory")
    h, w = _size(image_size)
    channels = _channels(color_mode)
    if seed is None:
        seed = random.randrange(2 ** 32) if shuffle else 0
    split = float(validation_split or 0.0)
    if subset == "both":
        train, names = image_dataset_from_directory(directory, image_size, color_mode, shuffle, seed,
                                                    validation_split, "training", scale, skip_bad)
        val, _ = image_dataset_from_directory(directory, image_size, color_mode, shuffle, seed, validation_split,
                                              "validation", scale, skip_bad)
        return train, val, names
    hx, hy, hn = _c.c_void_p(), _c.c_void_p(), _c.c_void_p()
    _raise_for(fn(_path(directory), h, w, channels, float(scale), 1 if shuffle else 0, int(seed), split,
                  None if subset is None else str(subset).encode(), 1 if skip_bad else 0, _c.byref(hx),
                  _c.byref(hy), _c.byref(hn)))
    names = _names(hn)
    x = _take_array(hx)
    return (x, _take_array(hy)), names


def save_image(path, pixels, scale=1.0):
    """Writes pixels (height, width) or (height, width, channels 1..4) as the
    file format the extension names: .png, .jpg/.jpeg (quality 95), .bmp,
    .tga (nnl_save_image). Values times scale are rounded and clipped to
    0..255 (scale 255 for [0, 1] data)."""
    fn = _need("nnl_save_image")
    a = np.asarray(pixels, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise errors.ShapeError("nnlite: save_image: pixels must be (height, width) or (height, width, "
                                "channels), got shape %s" % (a.shape,), errors.SHAPE)
    a = np.ascontiguousarray(a)
    _raise_for(fn(_path(path), a.ctypes.data_as(_lib.P_float), a.shape[0], a.shape[1], a.shape[2], float(scale)))


__all__ = ["load_image", "image_dataset_from_directory", "save_image"]
