"""Tests of the Python binding (bindings/python/nnlite). Run by `make test`:
    PYTHONPATH=bindings/python NNLITE_LIBRARY=build/libnnlite.so /usr/bin/python3 -m unittest discover -s tests/python
"""
import os
import re
import sys
import tempfile
import unittest

import numpy as np

import nnlite
from nnlite import layers

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def quadrants(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) * 2 + (x[:, 1] > 0)).astype(np.int64)
    return x, y


def quadrant_model(seed=7):
    m = nnlite.Sequential([layers.Dense(16, activation="relu", input_shape=(2,)),
                           layers.Dense(4, activation="softmax")], seed=seed)
    m.compile(optimizer=nnlite.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


class Version(unittest.TestCase):
    def test_package_mirrors_the_header(self):
        with open(os.path.join(ROOT, "nnlite.h")) as f:
            text = f.read()
        got = tuple(int(re.search(r"#define NNL_VERSION_%s (\d+)" % k, text).group(1))
                    for k in ("MAJOR", "MINOR", "PATCH"))
        self.assertEqual(got, nnlite._lib.HEADER_VERSION)
        self.assertEqual(nnlite.library_version(), nnlite.__version__)

    def test_other_major_refused(self):
        nnlite.check_version()  # this package's version: accepted
        with self.assertRaises(nnlite.UnsupportedError) as cm:
            nnlite.check_version((nnlite._lib.HEADER_VERSION[0] + 1) * 10000)
        self.assertIn("major", str(cm.exception))
        self.assertEqual(cm.exception.status, 7)

    def test_build_information(self):
        for name in ("stb", "threads", "cuda", "mpi", "hdf5", "avx2", "avx512f", "bf16"):
            self.assertIn(nnlite.has_feature(name), (True, False))
            self.assertIn("%s: %s" % (name, "yes" if nnlite.has_feature(name) else "no"), nnlite.build_info())
        self.assertFalse(nnlite.has_feature("mpi"))
        with self.assertRaises(nnlite.ArgumentError) as cm:
            nnlite.has_feature("opnemp")
        self.assertIn("known: stb", str(cm.exception))
        self.assertTrue(nnlite.build_info().startswith("nnlite " + nnlite.__version__ + ";"))


class Layers(unittest.TestCase):
    def test_spec_strings(self):
        self.assertEqual(layers.Dense(128, activation="relu").spec(), "Dense(128, activation='relu')")
        self.assertEqual(layers.Conv2D(32, (3, 3), padding="same", use_bias=False).spec(),
                         "Conv2D(32, (3,3,), padding='same', use_bias=False)")
        self.assertEqual(layers.Input(shape=(28, 28, 1)).spec(), "Input(shape=(28,28,1,))")
        self.assertEqual(layers.Dropout(0.25).spec(), "Dropout(0.25)")

    def test_every_registry_kind_has_a_class(self):
        m = nnlite.Sequential()
        with self.assertRaises(nnlite.ArgumentError) as cm:
            m.add("NoSuchLayer()")
        known = re.search(r"known: (.*)\)", str(cm.exception)).group(1)
        names = [k.strip() for k in known.split(",")]
        self.assertGreater(len(names), 20)
        for k in names:
            self.assertTrue(hasattr(layers, k), "nnlite.layers lacks " + k)
        for k in layers.KINDS:
            self.assertIn(k, names)

    def test_cnn_builds_with_the_expected_parameter_count(self):
        # K-CNN of the Keras tutorial: 1,199,882 parameters
        m = nnlite.Sequential([
            layers.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax")])
        self.assertEqual(m.count_params(), 1199882)
        self.assertEqual(m.output_shape, (None, 10))
        self.assertEqual(m.input_shape, (None, 28, 28, 1))


class Training(unittest.TestCase):
    def test_fit_evaluate_predict(self):
        x, y = quadrants(1000, 1)
        m = quadrant_model()
        h = m.fit(x, y, epochs=10, batch_size=32, validation_split=0.2, verbose=0)
        self.assertIsInstance(h, nnlite.History)
        self.assertEqual(sorted(h.history), ["accuracy", "loss", "val_accuracy", "val_loss"])
        self.assertEqual(len(h.history["loss"]), 10)
        self.assertEqual(h.epoch, list(range(10)))
        self.assertLess(h.history["loss"][-1], h.history["loss"][0])
        xt, yt = quadrants(500, 2)
        loss, acc = m.evaluate(xt, yt)
        self.assertGreater(acc, 0.9)
        d = m.evaluate(xt, yt, return_dict=True)
        self.assertEqual(sorted(d), ["accuracy", "loss"])
        self.assertAlmostEqual(d["loss"], loss, places=6)
        p = m.predict(xt)
        self.assertEqual(p.shape, (500, 4))
        self.assertEqual(p.dtype, np.float32)
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
        self.assertAlmostEqual(float(np.mean(p.argmax(1) == yt)), acc, places=6)
        np.testing.assert_array_equal(m.predict_classes(xt), p.argmax(1))
        # a second fit returns only its own epochs
        h2 = m.fit(x, y, epochs=12, initial_epoch=10, verbose=0)
        self.assertEqual(h2.epoch, [10, 11])
        self.assertEqual(len(h2.history["loss"]), 2)

    def test_predict_matches_numpy_forward_pass(self):
        x, _ = quadrants(64, 3)
        m = quadrant_model(seed=11)
        k1, b1, k2, b2 = m.get_weights()
        self.assertEqual(k1.shape, (2, 16))
        self.assertEqual(b2.shape, (4,))
        h = np.maximum(x @ k1 + b1, 0)
        z = h @ k2 + b2
        ref = np.exp(z - z.max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        np.testing.assert_allclose(m.predict(x), ref, rtol=1e-5, atol=1e-6)

    def test_lstm_matches_numpy_with_keras_weights_and_reset_states(self):
        # Keras' LSTM from get_weights() (kernel, recurrent_kernel, bias; gates i, f, c, o)
        rng = np.random.default_rng(5)
        x = rng.uniform(-1, 1, size=(4, 6, 3)).astype(np.float32)
        m = nnlite.Sequential([layers.LSTM(5, return_sequences=True, input_shape=(6, 3))], seed=2)
        k, r, b = m.get_weights()
        self.assertEqual((k.shape, r.shape, b.shape), ((3, 20), (5, 20), (20,)))
        np.testing.assert_array_equal(b[5:10], 1)  # unit_forget_bias
        sig = lambda v: 1 / (1 + np.exp(-v))
        h = np.zeros((4, 5))
        c = np.zeros((4, 5))
        ref = []
        for t in range(6):
            z = x[:, t] @ k + h @ r + b
            i, f, g, o = sig(z[:, :5]), sig(z[:, 5:10]), np.tanh(z[:, 10:15]), sig(z[:, 15:])
            c = f * c + i * g
            h = o * np.tanh(c)
            ref.append(h)
        np.testing.assert_allclose(m.predict(x), np.stack(ref, 1), rtol=1e-5, atol=1e-6)
        # stateful: the second call goes on from the first; reset_states() starts over
        s = nnlite.Sequential([layers.LSTM(5, stateful=True, input_shape=(6, 3))], seed=2)
        first = s.predict(x, batch_size=4)
        self.assertFalse(np.array_equal(s.predict(x, batch_size=4), first))
        s.reset_states()
        np.testing.assert_array_equal(s.predict(x, batch_size=4), first)
        with self.assertRaises(nnlite.ShapeError):
            s.predict(x[:3], batch_size=4)

    def test_array_conversions(self):
        x, y = quadrants(50, 4)
        m = quadrant_model()
        ref = m.predict(x)
        np.testing.assert_array_equal(m.predict(x.astype(np.float64)), ref)  # float64 in
        xf = np.asfortranarray(x)  # not C-contiguous
        np.testing.assert_array_equal(m.predict(xf), ref)
        wide = np.zeros((50, 4), dtype=np.float32)
        wide[:, ::2] = x  # a strided view
        np.testing.assert_array_equal(m.predict(wide[:, ::2]), ref)
        np.testing.assert_array_equal(m.predict(x.tolist()), ref)  # lists
        # targets of several integer dtypes give the same loss
        l64 = m.evaluate(x, y)[0]
        for dt in (np.int32, np.uint8, np.float32, np.float64):
            self.assertAlmostEqual(m.evaluate(x, y.astype(dt))[0], l64, places=6)

    def test_validation_data_and_weights_roundtrip(self):
        x, y = quadrants(300, 5)
        xv, yv = quadrants(100, 6)
        m = quadrant_model()
        h = m.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
        self.assertIn("val_loss", h.history)
        self.assertAlmostEqual(h.history["val_loss"][-1], m.evaluate(xv, yv)[0], places=5)
        w = m.get_weights()
        m2 = quadrant_model(seed=99)
        self.assertFalse(np.allclose(m2.predict(xv), m.predict(xv)))
        m2.set_weights(w)
        np.testing.assert_array_equal(m2.predict(xv), m.predict(xv))

    def test_weights_with_batch_normalization(self):
        # issue 11: get_weights() returned 6 of the 8 arrays (the last Dense missing)
        def build(seed):
            m = nnlite.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                                   layers.BatchNormalization(), layers.Dense(2)], seed=seed)
            m.compile(optimizer="adam", loss="mse", metrics=["mae"])
            return m
        rng = np.random.default_rng(3)
        x = rng.normal(size=(16, 3)).astype(np.float32)
        y = rng.normal(size=(16, 2)).astype(np.float32)
        m = build(1)
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)  # the moving statistics move
        w = m.get_weights()
        self.assertEqual([a.shape for a in w], [(3, 4), (4,), (4,), (4,), (4,), (4,), (4, 2), (2,)])
        # equal to nnl_get_weight's, index by index
        L = nnlite._lib.lib
        for i, a in enumerate(w):
            b = np.empty(a.shape, dtype=np.float32)
            self.assertEqual(L.nnl_get_weight(m.handle, i, b.ctypes.data_as(nnlite._lib.P_float), b.size), 0)
            np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(w[4], np.zeros(4)))  # moving mean, after training
        # Keras' counts: count_params is the total
        self.assertEqual(m.count_params(), 42)
        self.assertEqual(m.count_trainable_params(), 34)
        self.assertEqual(m.count_non_trainable_params(), 8)
        self.assertEqual(m.weights_trainable, [True] * 4 + [False] * 2 + [True] * 2)
        self.assertEqual(sum(a.size for a in m.trainable_weights), 34)
        self.assertEqual([a.shape for a in m.non_trainable_weights], [(4,), (4,)])
        text = m.summary(print_fn=lambda s: None)
        self.assertIn("Trainable params: 34", text)
        self.assertIn("Non-trainable params: 8", text)
        # set_weights() takes Keras' full list back
        m2 = build(2)
        m2.set_weights(w)
        for a, b in zip(m2.get_weights(), w):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m2.predict(x), m.predict(x))
        with self.assertRaises(nnlite.ShapeError):
            m2.set_weights(w[:6])
        with self.assertRaises(nnlite.ShapeError):
            m2.set_weights(w[:6] + [w[6].T, w[7]])  # a transposed kernel is not the kernel

    def test_non_finite_input_is_refused(self):
        x, y = quadrants(20, 9)
        m = quadrant_model()
        x[3, 1] = np.nan
        for call in (lambda: m.evaluate(x, y), lambda: m.predict(x), lambda: m.predict_classes(x)):
            with self.assertRaises(nnlite.NumericError) as cm:
                call()
            self.assertIn("sample 3", str(cm.exception))

    def test_callbacks(self):
        x, y = quadrants(200, 7)
        m = quadrant_model()
        seen = []

        class Stop(nnlite.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append((epoch, sorted(logs)))
                if epoch == 1:
                    self.model.stop_training = True

        h = m.fit(x, y, epochs=10, verbose=0, callbacks=[Stop()])
        self.assertEqual(len(h.history["loss"]), 2)
        self.assertEqual(seen[0], (0, ["accuracy", "loss"]))

        class Boom(nnlite.Callback):
            def on_batch_end(self, batch, logs=None):
                raise KeyError("from the callback")

        with self.assertRaises(KeyError):
            m.fit(x, y, epochs=1, verbose=0, callbacks=[Boom()])


class Errors(unittest.TestCase):
    def test_errors_carry_status_and_message(self):
        m = nnlite.Sequential([layers.Dense(4, input_shape=(3,))])
        with self.assertRaises(nnlite.StateError) as cm:
            m.fit(np.zeros((4, 3)), np.zeros((4, 4)), verbose=0)
        self.assertIn("compile", str(cm.exception))
        self.assertEqual(cm.exception.status, 3)
        self.assertIsInstance(cm.exception, nnlite.Error)
        with self.assertRaises(nnlite.ShapeError) as cm:
            m.predict(np.zeros((4, 5)))
        self.assertIsInstance(cm.exception, ValueError)
        with self.assertRaises(nnlite.ArgumentError) as cm:
            m.add(layers.Dense(2, activation="nosuch"))
        self.assertIn("nosuch", cm.exception.message)
        m.compile("sgd", "mse")
        with self.assertRaises(nnlite.NumericError):
            m.fit(np.full((4, 3), np.nan), np.zeros((4, 4)), verbose=0)
        with self.assertRaises(nnlite.FileError):
            nnlite.load_model(os.path.join(tempfile.gettempdir(), "nnlite-no-such-dir", "x.nnl"))


class Messages(unittest.TestCase):
    """Messages name Python's calls (issue 11), never the C functions behind them."""

    def test_state_error_names_python_calls(self):
        m = nnlite.Sequential([layers.Dense(4, input_shape=(3,))])
        with self.assertRaises(nnlite.StateError) as cm:
            m.fit(np.zeros((4, 3)), np.zeros((4, 4)), verbose=0)
        msg = str(cm.exception)
        self.assertTrue(msg.startswith("model.fit(): "), msg)
        self.assertIn("call model.compile() first", msg)
        self.assertNotIn("nnl_", msg)
        with self.assertRaises(nnlite.ShapeError) as cm:
            m.predict(np.zeros((2, 5)))
        self.assertTrue(str(cm.exception).startswith("model.predict(): x holds samples of shape (5,)"), str(cm.exception))
        with self.assertRaises(nnlite.ArgumentError) as cm:
            m.to("gpux")
        self.assertTrue(str(cm.exception).startswith("model.to(): unknown device 'gpux'"), str(cm.exception))
        with self.assertRaises(nnlite.FormatError) as cm:
            nnlite.model_from_json("{")
        self.assertTrue(str(cm.exception).startswith("nnlite.model_from_json(): invalid JSON"), str(cm.exception))

    def test_gpu_is_cuda(self):
        m = nnlite.Sequential([layers.Dense(2, input_shape=(3,))])
        if nnlite.cuda_device_count() == 0:
            with self.assertRaises(nnlite.UnsupportedError):
                m.to("gpu")
        self.assertEqual(m.to("cpu").device, "cpu")

    def test_python_names_keeps_what_it_does_not_know(self):
        self.assertEqual(nnlite.errors.python_names("nnl_fit: call nnl_compile first; see nnl_to_categorical"),
                         "model.fit(): call model.compile() first; see nnl_to_categorical")


@unittest.skipIf(nnlite.has_feature("mpi"), "a library with MPI: tests/python/mpi_test_distribute.py under mpirun")
class DistributedWithoutMPI(unittest.TestCase):
    """model.distribute() & co. in a library built without MPI (make check-mpi
    runs them under mpirun with one built with MPI=1)."""

    def test_local_answers_and_a_clear_error(self):
        had_mpi4py = "mpi4py" in sys.modules
        m = nnlite.Sequential([layers.Dense(2, input_shape=(3,))])
        self.assertEqual(m.mpi_rank(), (0, 1))
        with self.assertRaises(nnlite.StateError) as cm:
            m.scale_learning_rate()
        self.assertTrue(str(cm.exception).startswith("model.scale_learning_rate(): "), str(cm.exception))
        m.compile(nnlite.optimizers.SGD(learning_rate=0.25), "mse")
        m.scale_learning_rate()
        self.assertAlmostEqual(m.learning_rate, 0.25)
        with self.assertRaises(nnlite.UnsupportedError) as cm:
            m.distribute()
        self.assertTrue(str(cm.exception).startswith("model.distribute(): "), str(cm.exception))
        self.assertIn("MPI=1", str(cm.exception))
        self.assertEqual("mpi4py" in sys.modules, had_mpi4py, "distribute() without a communicator imported mpi4py")
        with self.assertRaises(nnlite.ArgumentError):
            m.distribute(data="everywhere")
        self.assertEqual(m.mpi_rank(), (0, 1))

    def test_distributed_error(self):
        self.assertEqual(nnlite.errors.DISTRIBUTED, 10)
        e = nnlite.errors.make(10, "nnl_distribute: rank 1 left")
        self.assertIsInstance(e, nnlite.DistributedError)
        self.assertIsInstance(e, RuntimeError)
        self.assertEqual((e.status, str(e)), (10, "model.distribute(): rank 1 left"))

    def test_device_error(self):
        # NNL_ERR_DEVICE (since 0.8): the library's name for the code is the binding's
        self.assertEqual(nnlite.errors.DEVICE, 11)
        self.assertEqual(nnlite._lib.lib.nnl_status_string(11).decode(), "NNL_ERR_DEVICE")
        e = nnlite.errors.make(11, "nnl_fit: CUDA error cudaErrorECCUncorrectable (uncorrectable ECC error "
                                   "encountered) in kernel launch")
        self.assertIsInstance(e, nnlite.DeviceError)
        self.assertIsInstance(e, RuntimeError)
        self.assertEqual(e.status, 11)
        self.assertTrue(str(e).startswith("model.fit(): CUDA error cudaErrorECCUncorrectable"), str(e))


class KerasNames(unittest.TestCase):
    def test_default_names_and_initializers(self):
        m = nnlite.Sequential([layers.Conv2D(2, 3, input_shape=(8, 8, 1)), layers.MaxPooling2D(), layers.Flatten(),
                               layers.Dense(4, kernel_initializer="orthogonal"),
                               layers.Dense(3, kernel_initializer="VarianceScaling(scale=2.0, mode='fan_in')")],
                              seed=3)
        text = m.summary(print_fn=lambda s: None)
        for name in ("conv2d (Conv2D)", "max_pooling2d (MaxPooling2D)", "flatten (Flatten)", "dense (Dense)",
                     "dense_1 (Dense)"):
            self.assertIn(name, text)
        w = m.get_weights()[2]  # the first Dense kernel (18, 4): orthonormal columns
        np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-5)
        j = m.to_json()
        self.assertIn('"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}', j)
        self.assertIn('"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", '
                      '"distribution": "truncated_normal", "seed": null}', j)
        self.assertEqual(nnlite.model_from_json(j).to_json(), j)
        self.assertEqual(layers.Dense(3, kernel_initializer="VarianceScaling(mode='fan_out')").spec(),
                         "Dense(3, kernel_initializer=\"VarianceScaling(mode='fan_out')\")")


class Device(unittest.TestCase):
    def test_precision(self):
        m = nnlite.Sequential([nnlite.layers.Dense(3, input_shape=(2,))])
        self.assertEqual(m.precision, "float32")
        with self.assertRaises(nnlite.ArgumentError) as e:
            m.set_precision("bfloat16")
        self.assertTrue(str(e.exception).startswith("model.set_precision(): "), str(e.exception))
        self.assertIn("float32, mixed_bfloat16", str(e.exception))
        if nnlite.has_feature("bf16") or os.environ.get("NNL_BF16") == "emulate":
            self.assertIs(m.set_precision("mixed_bfloat16"), m)
            self.assertEqual(m.precision, "mixed_bfloat16")
            self.assertEqual(m.predict(np.ones((4, 2), dtype=np.float32)).shape, (4, 3))
        else:
            # no AVX512-BF16: refused, naming the feature, and the model stays float32
            with self.assertRaises(nnlite.UnsupportedError) as e:
                m.set_precision("mixed_bfloat16")
            self.assertIn("AVX512-BF16", str(e.exception))
            self.assertEqual(m.precision, "float32")
        self.assertEqual(m.set_precision("float32").precision, "float32")

    def test_device_selection(self):
        m = nnlite.Sequential([nnlite.layers.Dense(3, input_shape=(2,))])
        self.assertEqual(m.device, "cpu")
        self.assertIs(m.to("cpu"), m)
        with self.assertRaises(nnlite.ArgumentError):
            m.to("tpu")
        if nnlite.cuda_device_count() == 0:
            # no CUDA build or no GPU: a clear error, and the model stays usable on the CPU
            with self.assertRaises(nnlite.UnsupportedError) as e:
                m.to("cuda")
            self.assertIn("cuda", str(e.exception).lower())
            self.assertEqual(m.device, "cpu")
            self.assertEqual(m.predict(np.zeros((1, 2), np.float32)).shape, (1, 3))
        else:
            m.to("cuda")
            self.assertTrue(m.device.startswith("cuda"))


class Files(unittest.TestCase):
    """Model files (nnl_save_model & co). These need a library with them:
    with an older one they raise UnsupportedError and fail."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def p(self, name):
        return os.path.join(self.dir.name, name)

    def test_save_and_load_model_resumes(self):
        x, y = quadrants(400, 8)
        m = quadrant_model()
        m.fit(x, y, epochs=3, verbose=0, seed=5)
        m.save(self.p("m.nnl"))
        m2 = nnlite.load_model(self.p("m.nnl"))
        np.testing.assert_array_equal(m2.predict(x), m.predict(x))
        # optimizer state travels: one more epoch on both gives the same weights
        m.fit(x, y, epochs=4, initial_epoch=3, verbose=0, seed=9, shuffle=False)
        m2.fit(x, y, epochs=4, initial_epoch=3, verbose=0, seed=9, shuffle=False)
        for a, b in zip(m.get_weights(), m2.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    def test_json_structure_and_weights(self):
        x, y = quadrants(100, 9)
        m = quadrant_model()
        m.fit(x, y, epochs=2, verbose=0)
        text = m.to_json()
        self.assertIn("Dense", text)
        m2 = nnlite.model_from_json(text)
        self.assertEqual(m2.count_params(), m.count_params())
        self.assertEqual(m2.output_shape, m.output_shape)
        for ext in (".weights", ".npz"):
            m.save_weights(self.p("w" + ext))
            m3 = nnlite.model_from_json(text)
            m3.load_weights(self.p("w" + ext))
            np.testing.assert_array_equal(m3.predict(x), m.predict(x))
        with self.assertRaises(nnlite.Error):
            nnlite.model_from_json("{not json")


if __name__ == "__main__":
    unittest.main()
