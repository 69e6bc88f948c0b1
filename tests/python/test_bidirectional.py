"""Bidirectional from Python (issue 12): a tiny Bidirectional(LSTM) model
built from layer objects (the wrapped layer passed as an object, as in
Keras) learns a task that needs both directions of a sequence, its weights
come in Keras' get_weights() order, and it survives save/load and JSON.
TimeDistributed(Dense) is that Dense."""
import os
import tempfile
import unittest

import numpy as np

import nnlite
from nnlite import layers


def data(n, T, seed):
    # target: first step minus last step of the first feature (needs to see both ends)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, T, 2)).astype(np.float32)
    y = (x[:, 0, 0] - x[:, -1, 0]).reshape(n, 1).astype(np.float32)
    return x, y


class BidirectionalModel(unittest.TestCase):
    def model(self, mode="concat"):
        return nnlite.Sequential([
            layers.Bidirectional(layers.LSTM(8, return_sequences=True), merge_mode=mode, input_shape=(6, 2)),
            layers.Bidirectional(layers.GRU(6), merge_mode="sum"),
            layers.Dense(1)], seed=7)

    def test_spec_and_weights_in_keras_order(self):
        b = layers.Bidirectional(layers.LSTM(8, return_sequences=True), merge_mode="sum", input_shape=(6, 2))
        self.assertEqual(b.spec(), "Bidirectional(LSTM(8, return_sequences=True), merge_mode='sum', input_shape=(6,2,))")
        m = self.model()
        self.assertEqual(m.output_shape, (None, 1))
        w = m.get_weights()
        self.assertEqual([a.shape for a in w[:6]], [(2, 32), (8, 32), (32,), (2, 32), (8, 32), (32,)])
        self.assertEqual([a.shape for a in w[6:12]], [(16, 18), (6, 18), (2, 18)] * 2)
        self.assertEqual(m.count_params(), 2 * 4 * 8 * (2 + 8 + 1) + 2 * 3 * (16 * 6 + 6 * 6 + 2 * 6) + 7)
        self.assertIn("bidirectional (Bidirectional)", m.summary(print_fn=lambda s: None))
        with self.assertRaises(nnlite.errors.UnsupportedError):
            nnlite.Sequential([layers.Bidirectional(layers.LSTM(4, stateful=True), input_shape=(6, 2))])

    def test_trains_and_round_trips(self):
        x, y = data(256, 6, 1)
        m = self.model("ave")
        m.compile(optimizer=nnlite.optimizers.Adam(learning_rate=0.01), loss="mse")
        h = m.fit(x, y, batch_size=16, epochs=12, verbose=0, shuffle=False)
        loss = h.history["loss"]
        # y has variance 2/3; a model that sees both ends learns it well below that
        self.assertLess(loss[-1], 0.25 * loss[0])
        self.assertLess(loss[-1], 0.02)
        xt, yt = data(64, 6, 2)
        p = m.predict(xt)
        self.assertLess(float(np.mean((p - yt) ** 2)), 0.03)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bi.nnl")
            m.save(path)
            back = nnlite.load_model(path)
            np.testing.assert_array_equal(back.predict(xt), p)
            again = nnlite.model_from_json(m.to_json())
            self.assertEqual(again.to_json(), m.to_json())
            again.set_weights(m.get_weights())
            np.testing.assert_array_equal(again.predict(xt), p)
            npz = os.path.join(d, "w.npz")
            m.save_weights(npz)
            fresh = self.model("ave")
            fresh.load_weights(npz)
            np.testing.assert_array_equal(fresh.predict(xt), p)

    def test_time_distributed_dense_is_dense(self):
        a = nnlite.Sequential([layers.TimeDistributed(layers.Dense(3), input_shape=(5, 4))], seed=3)
        b = nnlite.Sequential([layers.Dense(3, input_shape=(5, 4))], seed=3)
        x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
        np.testing.assert_array_equal(a.predict(x), b.predict(x))
        with self.assertRaises(nnlite.errors.UnsupportedError):
            nnlite.Sequential([layers.TimeDistributed(layers.LSTM(3), input_shape=(5, 4))])


if __name__ == "__main__":
    unittest.main()
