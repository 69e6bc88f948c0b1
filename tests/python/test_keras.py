"""Keras' own model files from Python (issue 16): nnlite.load_model opens
the fixtures of tests/reference/make_keras_files.py (Keras 3 .keras, and
.h5 as tf.keras 2.x and Keras 3 write it) and predicts, within 1e-6, what
the same architecture gives with the same weights read from the fixture's
.npz (load_weights, the "npz route" of tests/unit_keras.hpp); save() to
.keras and .h5 reads back to the same model; broken files raise an
nnlite.Error naming the file. In a library built without HDF5 the Keras
tests are skipped, saying why, and only the refusal is checked."""
import os
import sys
import tempfile
import unittest
import zipfile

import numpy as np

import nnlite
from nnlite import layers

KERAS_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference", "keras"))
KINDS = (".keras", "_tf2.h5", "_k3.h5")
HAVE_HDF5 = nnlite.has_feature("hdf5")
NO_HDF5 = ("the library (%s) is built without HDF5 (Debian: apt-get install libhdf5-dev, then rebuild): "
           "Keras .keras/.h5 files not tested" % nnlite.library_path())
TOLERANCE = 1e-6


def setUpModule():
    if not HAVE_HDF5:  # unittest prints skip reasons only with -v: say it once here too
        sys.stderr.write("test_keras: SKIPPED: %s\n" % NO_HDF5)


def fixture(name):
    return os.path.join(KERAS_DIR, name)


# The fixtures' architectures, built here from layer objects (as
# make_keras_files.py describes them), independently of the files: the npz
# route of the second test. The inputs: "floats"; "ids" (an Embedding
# first: token ids); "zeros" (a Masking first: floats, some steps all zero).
ARCHITECTURES = {
    "mlp": ("floats", lambda: [layers.Dense(8, activation="relu", input_shape=(6,)),
                            layers.Dropout(0.5),
                            layers.Dense(3, activation="softmax")]),
    "cnn": ("floats", lambda: [layers.Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 2)),
                            layers.BatchNormalization(epsilon=0.001),
                            layers.MaxPooling2D((2, 2)),
                            layers.Conv2D(3, (2, 2)),
                            layers.Flatten(),
                            layers.Dense(3, activation="softmax")]),
    "rnns": ("floats", lambda: [layers.SimpleRNN(4, return_sequences=True, input_shape=(6, 3)),
                             layers.LSTM(4, return_sequences=True),
                             layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="concat"),
                             layers.GRU(3),
                             layers.Dense(2)]),
    "seq": ("ids", lambda: [layers.Embedding(10, 4, input_length=7),
                           layers.LSTM(5, return_sequences=True),
                           layers.TimeDistributed(layers.Dense(2))]),
    "conv1d": ("floats", lambda: [layers.Conv1D(4, 3, activation="relu", input_shape=(12, 3)),
                                  layers.MaxPooling1D(2),
                                  layers.Conv1D(3, 2, padding="same"),
                                  layers.AveragePooling1D(2, 1),
                                  layers.GlobalMaxPooling1D(),
                                  layers.Dense(2)]),
    "conv3d": ("floats", lambda: [layers.Conv3D(3, (3, 3, 1), activation="relu", input_shape=(6, 6, 4, 2)),
                                  layers.MaxPooling3D((2, 2, 2)),
                                  layers.AveragePooling3D((1, 1, 2)),
                                  layers.GlobalAveragePooling3D(),
                                  layers.Dense(2)]),
    "shapes": ("floats", lambda: [layers.ZeroPadding2D(((1, 1), (0, 2)), input_shape=(6, 6, 2)),
                                  layers.UpSampling2D((2, 1)),
                                  layers.AveragePooling2D((2, 2)),
                                  layers.Activation("tanh"),
                                  layers.Reshape((4, 8, 2)),
                                  layers.GlobalMaxPooling2D(),
                                  layers.Dense(3)]),
    "globals": ("floats", lambda: [layers.GlobalAveragePooling2D(input_shape=(4, 5, 12)),
                                   layers.Reshape((2, 2, 1, 3)),
                                   layers.GlobalMaxPooling3D(),
                                   layers.Dense(8, activation="tanh"),
                                   layers.Reshape((4, 2)),
                                   layers.GlobalAveragePooling1D(),
                                   layers.Dense(2)]),
    "masked": ("zeros", lambda: [layers.Masking(mask_value=0.0, input_shape=(6, 3)),
                                 layers.LSTM(4, return_sequences=True),
                                 layers.SimpleRNN(3),
                                 layers.Dense(2)]),
}


def inputs(model, n, kind):
    """n samples of the model's input shape, the same every run (as
    unit_keras.hpp's): "ids", "floats", or "zeros" (floats with sample b's
    last b % 3 steps and, for odd b, its third all zero)."""
    shape = (n,) + tuple(model.input_shape[1:])
    i = np.arange(int(np.prod(shape)))
    if kind == "ids":
        return ((i * 7 + 3) % 10).astype(np.int32).reshape(shape)
    x = np.sin(0.37 * i + 0.5).astype(np.float32).reshape(shape)
    if kind == "zeros":
        T = shape[1]
        for b in range(n):
            x[b, T - b % 3:] = 0
            if b % 2 == 1:
                x[b, 2] = 0
    return x


# Keras' semantics written out in numpy (float64) for the fixtures of
# layers nnlite computes itself: an independent check that the file's
# configuration is read as Keras means it (ZeroPadding2D's
# ((top, bottom), (left, right)), "same" padding's extra zero at the end,
# masked steps skipped by both recurrent layers).
def np_conv(x, w, b, same=False):
    """Conv1D/2D/3D, strides 1: x (B, *spatial, C), w (*kernel, C, F)."""
    k = w.shape[:-2]
    if same:  # Keras/TF: the odd zero goes after
        x = np.pad(x, [(0, 0)] + [((n - 1) // 2, n - 1 - (n - 1) // 2) for n in k] + [(0, 0)])
    out = [s - n + 1 for s, n in zip(x.shape[1:-1], k)]
    y = np.zeros((x.shape[0],) + tuple(out) + (w.shape[-1],))
    for off in np.ndindex(*k):
        win = x[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(off, out))]
        y += np.einsum("b...c,cf->b...f", win, w[off])
    return y + b


def np_pool(x, size, strides, reduce):
    """Max or AveragePooling1D/2D/3D, padding 'valid'."""
    out = [(d - p) // s + 1 for d, p, s in zip(x.shape[1:-1], size, strides)]
    y = np.zeros((x.shape[0],) + tuple(out) + (x.shape[-1],))
    for o in np.ndindex(*out):
        win = x[(slice(None),) + tuple(slice(i * s, i * s + p) for i, s, p in zip(o, strides, size))]
        y[(slice(None),) + o] = reduce(win.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return y


def np_masked(x, w):
    """Masking(0.0), LSTM(4, return_sequences=True), SimpleRNN(3), Dense(2):
    a masked step keeps both layers' states (the LSTM's output there is
    skipped by the SimpleRNN, which takes the mask on)."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    keep = np.any(x != 0, axis=2)[:, :, None]
    n, steps, u = x.shape[0], x.shape[1], w[1].shape[0]
    h, c, hs = np.zeros((n, u)), np.zeros((n, u)), []
    for t in range(steps):
        z = x[:, t] @ w[0] + h @ w[1] + w[2]
        i, f, g, o = sig(z[:, :u]), sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sig(z[:, 3 * u:])
        c = np.where(keep[:, t], f * c + i * g, c)
        h = np.where(keep[:, t], o * np.tanh(c), h)
        hs.append(h)
    h = np.zeros((n, w[4].shape[0]))
    for t in range(steps):
        h = np.where(keep[:, t], np.tanh(hs[t] @ w[3] + h @ w[4] + w[5]), h)
    return h @ w[6] + w[7]


NUMPY_FORWARD = {
    "conv1d": lambda x, w: np_pool(np_conv(np_pool(np.maximum(np_conv(x, w[0], w[1]), 0), [2], [2], np.max),
                                           w[2], w[3], same=True), [2], [1], np.mean).max(axis=1) @ w[4] + w[5],
    "conv3d": lambda x, w: np_pool(np_pool(np.maximum(np_conv(x, w[0], w[1]), 0), [2, 2, 2], [2, 2, 2], np.max),
                                   [1, 1, 2], [1, 1, 2], np.mean).mean(axis=(1, 2, 3)) @ w[2] + w[3],
    "shapes": lambda x, w: np.tanh(np_pool(np.repeat(np.pad(x, [(0, 0), (1, 1), (0, 2), (0, 0)]), 2, axis=1),
                                           [2, 2], [2, 2], np.mean)).reshape(len(x), 4, 8, 2).max(axis=(1, 2)) @ w[0] + w[1],
    "globals": lambda x, w: np.tanh(x.mean(axis=(1, 2)).reshape(len(x), 2, 2, 1, 3).max(axis=(1, 2, 3)) @ w[0] + w[1])
    .reshape(len(x), 4, 2).mean(axis=1) @ w[2] + w[3],
    "masked": np_masked,
}


def max_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


@unittest.skipUnless(HAVE_HDF5, NO_HDF5)
class KerasFiles(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, name):
        return os.path.join(self.tmp.name, name)

    def check_same(self, loaded, ref, inp, what):
        """The same weights, bit for bit, and the same predictions within TOLERANCE."""
        self.assertEqual(loaded.count_params(), ref.count_params(), what)
        wl, wr = loaded.get_weights(), ref.get_weights()
        self.assertEqual([w.shape for w in wl], [w.shape for w in wr], what)
        for k, (a, b) in enumerate(zip(wl, wr)):
            np.testing.assert_array_equal(a, b, err_msg="%s: weight %d" % (what, k))
        self.assertGreater(sum(float(np.abs(w).sum()) for w in wl), 1.0, what + ": the file's weights were read")
        x = inputs(loaded, 5, inp)
        y, yr = loaded.predict(x), ref.predict(x)
        self.assertEqual(y.shape, yr.shape, what)
        self.assertTrue(np.all(np.isfinite(y)), what)
        d = max_diff(y, yr)
        self.assertLessEqual(d, TOLERANCE, "%s: max |difference| %.3g against the npz route" % (what, d))

    def test_fixtures_predict_as_the_npz_route_from_their_own_json(self):
        # unit_keras.hpp's route: the loaded model's architecture (to_json), the npz weights
        for name, (inp, _) in ARCHITECTURES.items():
            for kind in KINDS:
                path = fixture(name + kind)
                with self.subTest(path=path):
                    m = nnlite.load_model(path)
                    ref = nnlite.model_from_json(m.to_json())
                    ref.load_weights(fixture(name + ".npz"))
                    self.check_same(m, ref, inp, path)

    def test_fixtures_predict_as_the_npz_route_from_layer_objects(self):
        # the architecture written out here, so a misread config.json / model_config shows too
        for name, (inp, build) in ARCHITECTURES.items():
            ref = nnlite.Sequential(build(), seed=1)
            ref.load_weights(fixture(name + ".npz"))
            for kind in KINDS:
                path = fixture(name + kind)
                with self.subTest(path=path):
                    m = nnlite.load_model(path)
                    self.assertEqual(m.input_shape, ref.input_shape, path)
                    self.assertEqual(m.output_shape, ref.output_shape, path)
                    self.check_same(m, ref, inp, path)

    def test_fixtures_predict_what_numpy_computes_with_keras_semantics(self):
        for name, forward in NUMPY_FORWARD.items():
            with np.load(fixture(name + ".npz")) as z:
                w = [z["arr_%d" % i].astype(np.float64) for i in range(len(z.files))]
            for kind in KINDS:
                path = fixture(name + kind)
                with self.subTest(path=path):
                    m = nnlite.load_model(path)
                    x = inputs(m, 5, ARCHITECTURES[name][0])
                    d = max_diff(m.predict(x), forward(x.astype(np.float64), w))
                    self.assertLessEqual(d, 1e-5, "%s: max |difference| %.3g against numpy" % (path, d))

    def test_layer_names_and_compile_configuration_come_along(self):
        m = nnlite.load_model(fixture("cnn.keras"))
        text = m.summary(print_fn=lambda s: None)
        for layer_name in ("features", "bn", "pool", "more", "flat", "probs"):
            self.assertIn(layer_name, text)
        # every fixture is compiled with Adam(learning_rate=0.001), mean_squared_error
        self.assertAlmostEqual(m.learning_rate, 0.001, places=9)

    def test_save_keras_and_h5_and_load_back(self):
        for name, (inp, _) in ARCHITECTURES.items():
            m = nnlite.load_model(fixture(name + ".keras"))
            x = inputs(m, 4, inp)
            y = m.predict(x)
            for ext in (".keras", ".h5"):
                out = self.p(name + ext)
                with self.subTest(path=out):
                    m.save(out)
                    with open(out, "rb") as f:
                        head = f.read(8)
                    if ext == ".keras":
                        self.assertEqual(head[:4], b"PK\x03\x04")
                        with zipfile.ZipFile(out) as z:
                            self.assertEqual(sorted(z.namelist()), ["config.json", "metadata.json", "model.weights.h5"])
                    else:
                        self.assertEqual(head, b"\x89HDF\r\n\x1a\n")
                    back = nnlite.load_model(out)
                    self.assertEqual(back.to_json(), m.to_json())
                    for a, b in zip(back.get_weights(), m.get_weights()):
                        np.testing.assert_array_equal(a, b)
                    np.testing.assert_array_equal(back.predict(x), y)

    def test_a_model_built_here_saved_as_keras_predicts_the_same(self):
        m = nnlite.Sequential([layers.Dense(5, activation="tanh", input_shape=(4,)), layers.Dense(2)], seed=3)
        m.compile(optimizer="adam", loss="mse")
        x = inputs(m, 6, "floats")
        for ext in (".keras", ".h5"):
            with self.subTest(ext=ext):
                m.save(self.p("built" + ext))
                back = nnlite.load_model(self.p("built" + ext))
                self.assertLessEqual(max_diff(back.predict(x), m.predict(x)), 0.0)

    def test_junk_keras_files_raise_errors_naming_the_file(self):
        with open(fixture("mlp.keras"), "rb") as f:
            good = f.read()
        cases = {
            "text.keras": b"this is not a Keras file at all\n",  # neither zip nor HDF5: nnlite's own format refuses it
            "truncated.keras": good[:len(good) // 2],  # a zip without its central directory
            "hdf5_signature.h5": b"\x89HDF\r\n\x1a\n",  # HDF5's signature and nothing after it
        }
        for name, data in cases.items():
            path = self.p(name)
            with open(path, "wb") as f:
                f.write(data)
            with self.subTest(path=path):
                with self.assertRaises(nnlite.FormatError) as cm:
                    nnlite.load_model(path)
                self.assertIn(path, str(cm.exception))
                self.assertEqual(cm.exception.status, 5)
        # zips that are not .keras: no config.json; model.weights.h5 not HDF5
        path = self.p("npz_like.keras")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("arr_0.npy", b"\x93NUMPY")
        with self.assertRaises(nnlite.FormatError) as cm:
            nnlite.load_model(path)
        self.assertIn(path, str(cm.exception))
        self.assertIn("config.json", str(cm.exception))
        path = self.p("junk_weights.keras")
        with zipfile.ZipFile(fixture("mlp.keras")) as src, zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", src.read("config.json"))
            z.writestr("metadata.json", src.read("metadata.json"))
            z.writestr("model.weights.h5", b"junk, not HDF5")
        with self.assertRaises(nnlite.FormatError) as cm:
            nnlite.load_model(path)
        self.assertIn(path, str(cm.exception))
        self.assertIn("not an HDF5 file", str(cm.exception))
        # a missing file: FileError (also an OSError), naming it
        with self.assertRaises(nnlite.FileError) as cm:
            nnlite.load_model(self.p("missing.keras"))
        self.assertIn(self.p("missing.keras"), str(cm.exception))


@unittest.skipIf(HAVE_HDF5, "the library has HDF5: KerasFiles tests the files")
class KerasFilesWithoutHdf5(unittest.TestCase):
    def test_refused_naming_the_package(self):
        for kind in KINDS:
            path = fixture("mlp" + kind)
            with self.subTest(path=path):
                with self.assertRaises(nnlite.UnsupportedError) as cm:
                    nnlite.load_model(path)
                self.assertIn("libhdf5-dev", str(cm.exception))
        m = nnlite.Sequential([layers.Dense(2, input_shape=(3,))])
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.keras")
            with self.assertRaises(nnlite.UnsupportedError) as cm:
                m.save(out)
            self.assertIn("libhdf5-dev", str(cm.exception))
            self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
