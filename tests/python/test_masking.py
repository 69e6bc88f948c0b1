"""Variable-length sequences and masking from Python (issue 12):
input_shape=(None, F) trained on one length and predicting on others,
Masking(0.0) on zero-padded batches, Embedding(mask_zero=True)."""
import unittest

import numpy as np

import nnlite
from nnlite import layers


class VariableLength(unittest.TestCase):
    def test_train_on_30_predict_on_7_and_50(self):
        rng = np.random.default_rng(7)
        m = nnlite.Sequential([layers.LSTM(6, return_sequences=True, input_shape=(None, 3)),
                               layers.Dense(1)], seed=4)
        self.assertEqual(m.input_shape, (None, None, 3))
        self.assertEqual(m.output_shape, (None, None, 1))
        self.assertIn("(None, None, 6)", m.summary(print_fn=lambda s: None))
        m.compile(optimizer="adam", loss="mse")
        x = rng.uniform(-1, 1, (16, 30, 3)).astype(np.float32)
        y = np.cumsum(x[:, :, :1], axis=1) * 0.1  # a running sum: any length makes sense
        h = m.fit(x, y, epochs=3, batch_size=8, verbose=0)
        self.assertEqual(len(h.history["loss"]), 3)
        x50 = rng.uniform(-1, 1, (4, 50, 3)).astype(np.float32)
        p50 = m.predict(x50)
        self.assertEqual(p50.shape, (4, 50, 1))
        # causal: the first 7 steps of a 50-step sequence are its 7-step prediction
        p7 = m.predict(x50[:, :7])
        self.assertEqual(p7.shape, (4, 7, 1))
        np.testing.assert_allclose(p7, p50[:, :7], rtol=1e-5, atol=1e-6)


class Masking(unittest.TestCase):
    def test_padded_batch_equals_unpadded_sequences(self):
        rng = np.random.default_rng(8)
        m = nnlite.Sequential([layers.Masking(0.0, input_shape=(None, 2)), layers.GRU(4)], seed=2)
        seqs = [rng.uniform(0.1, 1, (n, 2)).astype(np.float32) for n in (5, 2, 4)]
        padded = np.zeros((3, 5, 2), np.float32)
        for i, s in enumerate(seqs):
            padded[i, :len(s)] = s
        p = m.predict(padded)
        for i, s in enumerate(seqs):
            np.testing.assert_allclose(p[i], m.predict(s[None])[0], rtol=1e-5, atol=1e-6)

    def test_mask_zero_masked_loss(self):
        m = nnlite.Sequential([layers.Embedding(6, 3, mask_zero=True, input_shape=(None,)),
                               layers.LSTM(4, return_sequences=True),
                               layers.Dense(6, activation="softmax")], seed=3)
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        x = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]], np.int32)
        y1 = np.array([[2, 3, 4, 0, 0], [5, 1, 0, 0, 0]], np.int32)
        y2 = y1.copy()
        y2[x == 0] = 5  # targets at masked positions do not count
        self.assertEqual(m.evaluate(x, y1, verbose=0), m.evaluate(x, y2, verbose=0))


if __name__ == "__main__":
    unittest.main()
