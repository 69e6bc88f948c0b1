"""nnlite.text (the corpus functions of nnlite.h) and the T-PTB model shape
trained from numpy id arrays on a tiny corpus this test writes itself.
Run by `make check-python` (unittest discovery in tests/python)."""
import collections
import os
import tempfile
import unittest

import numpy as np

import nnlite
from nnlite import layers


def tiny_corpus(lines, seed):
    """Sentences of a small grammar, one per line (PTB's layout: lower case,
    spaces between tokens): the next word is often, not always, predictable."""
    rng = np.random.default_rng(seed)
    subj = ["the cat", "a dog", "the bird", "my friend"]
    verb = ["sees", "likes", "eats", "finds"]
    obj = ["the fish", "a ball", "the tree", "some bread"]
    out = []
    for _ in range(lines):
        s = "%s %s %s" % (subj[rng.integers(4)], verb[rng.integers(4)], obj[rng.integers(4)])
        if rng.random() < 0.3:
            s += " in the garden"
        out.append(s)
    return out


def reference_vocab(lines):
    """TensorFlow's PTB reader: line.split() + ['<eos>'], ids by (-count, word)."""
    words = [w for ln in lines for w in ln.split() + ["<eos>"]]
    counts = collections.Counter(words)
    order = sorted(counts, key=lambda w: (-counts[w], w.encode()))
    return {w: i for i, w in enumerate(order)}, words


class Corpus(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.train = os.path.join(self.dir.name, "ptb.train.txt")
        self.lines = tiny_corpus(60, 1) + ["<unk> sees the fish"]
        with open(self.train, "w") as f:
            f.write("\n".join(self.lines) + "\n")

    def tearDown(self):
        self.dir.cleanup()

    def test_vocab_and_words_as_the_ptb_reader(self):
        ref, words = reference_vocab(self.lines)
        v = nnlite.text.Vocab(self.train)
        self.assertEqual(len(v), len(ref))
        self.assertEqual(v.words(), sorted(ref, key=ref.get))
        for w, i in ref.items():
            self.assertEqual(v.id(w), i)
            self.assertEqual(v.word(i), w)
        self.assertIn("<eos>", v)
        self.assertEqual(v.id("zebra"), -1)
        self.assertIsNone(v.word(len(v)))
        ids = nnlite.text.load_words(self.train, v)
        self.assertEqual(ids.dtype, np.int32)
        np.testing.assert_array_equal(ids, [ref[w] for w in words])
        # a word the vocabulary lacks becomes <unk>
        valid = os.path.join(self.dir.name, "ptb.valid.txt")
        with open(valid, "w") as f:
            f.write("the zebra sees\n")
        np.testing.assert_array_equal(nnlite.text.load_words(valid, v),
                                      [ref["the"], ref["<unk>"], ref["sees"], ref["<eos>"]])
        with self.assertRaises(nnlite.FileError):
            nnlite.text.Vocab(os.path.join(self.dir.name, "missing.txt"))
        v.close()
        with self.assertRaises(nnlite.StateError):
            len(v)

    def test_lm_windows_as_ptb_producer(self):
        ids = np.arange(3, 3 + 103, dtype=np.int64)  # any integer dtype
        B, T = 4, 6
        x, y = nnlite.text.lm_windows(ids, B, T)
        L = len(ids) // B
        data = ids[:B * L].reshape(B, L)
        n = (L - 1) // T
        self.assertEqual((x.dtype, y.dtype, x.shape, y.shape), (np.int32, np.int32, (n * B, T), (n * B, T)))
        for i in range(n):
            for r in range(B):
                np.testing.assert_array_equal(x[i * B + r], data[r, i * T:(i + 1) * T])
                np.testing.assert_array_equal(y[i * B + r], data[r, i * T + 1:(i + 1) * T + 1])
        with self.assertRaises(nnlite.ArgumentError):
            nnlite.text.lm_windows(ids[:5], B, T)
        with self.assertRaises(nnlite.ArgumentError):
            nnlite.text.lm_windows(np.array([0.5, 1.5]), 1, 1)

    def test_sliding_windows(self):
        s = np.sin(np.arange(50) * 0.3).astype(np.float32)
        x, y = nnlite.text.sliding_windows(s, 7)
        self.assertEqual((x.shape, y.shape, x.dtype), ((43, 7, 1), (43, 1), np.float32))
        for t in range(43):
            np.testing.assert_array_equal(x[t, :, 0], s[t:t + 7])
            self.assertEqual(y[t, 0], s[t + 7])
        two = np.stack([s, -s], 1)
        x2, y2 = nnlite.text.sliding_windows(two, 5)
        self.assertEqual((x2.shape, y2.shape), ((45, 5, 2), (45, 2)))
        np.testing.assert_array_equal(x2[3], two[3:8])
        with self.assertRaises(nnlite.ArgumentError):
            nnlite.text.sliding_windows(s[:3], 3)


class PtbShape(unittest.TestCase):
    def test_embedding_lstm_lstm_dense_learns_a_tiny_corpus(self):
        """T-PTB's model shape, Embedding - LSTM - LSTM - Dense(V), from numpy
        id arrays: the perplexity falls far below the vocabulary size (what
        a model that learnt nothing scores) and below the unigram model's."""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "ptb.train.txt")
            lines = tiny_corpus(70, 2)
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            v = nnlite.text.Vocab(path)
            ids = nnlite.text.load_words(path, v)
        V, B, T = len(v), 4, 10
        self.assertGreater(len(ids), 300)  # a few hundred words
        counts = np.bincount(ids, minlength=V) / len(ids)
        unigram = float(np.exp(-np.log(counts[ids]).mean()))  # the unigram model on its own data
        x, y = nnlite.text.lm_windows(ids, B, T)
        m = nnlite.Sequential([layers.Embedding(V, 16, input_length=T),
                               layers.LSTM(32, return_sequences=True),
                               layers.LSTM(32, return_sequences=True),
                               layers.Dense(V, activation="softmax")], seed=3)
        m.compile(optimizer=nnlite.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy",
                  metrics=["perplexity"])
        self.assertEqual(m.output_shape, (None, T, V))
        h = m.fit(x, y, batch_size=B, epochs=40, shuffle=False, verbose=0)
        ppl = h.history["perplexity"]
        self.assertAlmostEqual(ppl[-1], float(np.exp(h.history["loss"][-1])), delta=1e-3 * ppl[-1])
        loss, final = m.evaluate(x, y, batch_size=B)
        self.assertLess(final, V / 4.0)
        self.assertLess(final, 0.6 * unigram)
        self.assertLess(final, ppl[0] / 2)
        p = m.predict(x[:B], batch_size=B)
        self.assertEqual(p.shape, (B, T, V))
        np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-4)


if __name__ == "__main__":
    unittest.main()
