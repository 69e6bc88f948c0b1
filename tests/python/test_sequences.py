"""Sequences from Python (issue 12): an Embedding - Dense language model
trained from numpy integer id arrays (int32 and int64 go through the
library's typed calls), on a tiny corpus the test writes itself."""
import ctypes
import os
import tempfile
import unittest

import numpy as np

import nnlite
from nnlite import _lib, layers

_L = _lib.lib


def lm_windows(ids, batch, steps):
    """ptb_producer's layout: rows of the stream, windows of `steps`, targets shifted by one."""
    L = len(ids) // batch
    data = np.asarray(ids[:batch * L]).reshape(batch, L)
    n = (L - 1) // steps
    x = np.concatenate([data[:, i * steps:(i + 1) * steps] for i in range(n)])
    y = np.concatenate([data[:, i * steps + 1:(i + 1) * steps + 1] for i in range(n)])
    return x, y


class TinyLanguageModel(unittest.TestCase):
    def corpus(self):
        # a deterministic "language": each word picks its successor from two choices
        rng = np.random.default_rng(3)
        V, ids = 12, [0]
        for _ in range(2400):
            ids.append((ids[-1] * 5 + 1 + rng.integers(0, 2)) % V)
        return V, np.array(ids)

    def model(self, V, T):
        m = nnlite.Sequential([layers.Embedding(V, 8, input_length=T),
                               layers.Dense(V, activation="softmax")], seed=5)
        m.compile(optimizer=nnlite.optimizers.Adam(learning_rate=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "perplexity"])
        return m

    def test_trains_from_int_arrays_and_int32_equals_int64_equals_float(self):
        V, ids = self.corpus()
        T, B = 6, 10
        x, y = lm_windows(ids, B, T)
        runs = {}
        for dt in (np.int32, np.int64, np.float32):
            m = self.model(V, T)
            h = m.fit(x.astype(dt), y.astype(np.int32), batch_size=B, epochs=6, verbose=0, shuffle=False,
                      validation_data=(x[:40].astype(dt), y[:40]))
            runs[dt] = (h.history, m.predict(x[:5].astype(dt)))
        h32, p32 = runs[np.int32]
        for dt in (np.int64, np.float32):
            self.assertEqual(runs[dt][0]["loss"], h32["loss"])
            np.testing.assert_array_equal(runs[dt][1], p32)
        # the successor is one of two words: perplexity falls towards 2 from V = 12
        self.assertLess(h32["perplexity"][-1], 3.0)
        self.assertGreater(h32["perplexity"][0], h32["perplexity"][-1])
        np.testing.assert_allclose(h32["perplexity"], np.exp(h32["loss"]), rtol=1e-9)
        self.assertIn("val_perplexity", h32)
        self.assertEqual(p32.shape, (5, T, V))

    def test_bad_id_is_refused_naming_the_layer(self):
        V, T = 12, 6
        m = self.model(V, T)
        x = np.zeros((2, T), dtype=np.int64)
        x[1, 3] = V
        with self.assertRaises(nnlite.errors.ArgumentError) as cm:
            m.predict(x)
        self.assertIn("holds the id 12", str(cm.exception))
        self.assertIn("Embedding", str(cm.exception))

    def test_corpus_loader_through_ctypes(self):
        # the C loader and batcher agree with the numpy layout above
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "train.txt")
            with open(p, "w") as f:
                f.write(" a b c a \n b a <unk> \n c c a b \n")
            _L.nnl_text_vocab.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
            _L.nnl_text_vocab.restype = ctypes.c_int
            _L.nnl_load_words.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
            _L.nnl_load_words.restype = ctypes.c_int
            _L.nnl_vocab_free.argtypes = [ctypes.c_void_p]
            _L.nnl_vocab_free.restype = None
            _L.nnl_vocab_word.argtypes = [ctypes.c_void_p, ctypes.c_int64]
            _L.nnl_vocab_word.restype = ctypes.c_char_p
            v = ctypes.c_void_p()
            self.assertEqual(_L.nnl_text_vocab(p.encode(), ctypes.byref(v)), 0)
            words = [_L.nnl_vocab_word(v, i).decode() for i in range(5)]
            self.assertEqual(words, ["a", "<eos>", "b", "c", "<unk>"])
            self.assertIsNone(_L.nnl_vocab_word(v, 5))
            arr = ctypes.c_void_p()
            self.assertEqual(_L.nnl_load_words(p.encode(), v, ctypes.byref(arr)), 0)
            _L.nnl_array_size.argtypes = [ctypes.c_void_p]
            _L.nnl_array_size.restype = ctypes.c_int64
            _L.nnl_array_data.argtypes = [ctypes.c_void_p]
            _L.nnl_array_data.restype = ctypes.c_void_p
            n = _L.nnl_array_size(arr)
            got = np.ctypeslib.as_array(ctypes.cast(_L.nnl_array_data(arr), ctypes.POINTER(ctypes.c_int32)), (n,))
            self.assertEqual(got.tolist(), [0, 2, 3, 0, 1, 2, 0, 4, 1, 3, 3, 0, 2, 1])
            _L.nnl_array_free.argtypes = [ctypes.c_void_p]
            _L.nnl_array_free(arr)
            _L.nnl_vocab_free(v)


if __name__ == "__main__":
    unittest.main()
