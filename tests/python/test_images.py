"""nnlite.images: image files in and out as numpy arrays, and Keras'
image_dataset_from_directory (nnl_load_image, nnl_image_dataset_from_directory,
nnl_save_image). Test images are written by the test itself."""
import os
import tempfile
import unittest

import numpy as np

import nnlite


@unittest.skipUnless(nnlite.has_feature("images"), "library built without stb (apt-get install libstb-dev)")
class Images(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_round_trip_and_modes(self):
        rgb = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4).astype(np.float32)
        path = os.path.join(self.dir, "a.png")
        nnlite.images.save_image(path, rgb)
        x = nnlite.images.load_image(path)
        self.assertEqual(x.dtype, np.float32)
        self.assertEqual(x.shape, (4, 5, 3))
        np.testing.assert_array_equal(x, rgb)
        g = nnlite.images.load_image(path, color_mode="grayscale")
        self.assertEqual(g.shape, (4, 5, 1))
        want = np.floor((rgb[..., 0] * 77 + rgb[..., 1] * 150 + rgb[..., 2] * 29) / 256)
        np.testing.assert_array_equal(g[..., 0], want)
        a = nnlite.images.load_image(path, color_mode="rgba", size=(8, 10), scale=1 / 255)
        self.assertEqual(a.shape, (8, 10, 4))
        np.testing.assert_allclose(a[..., 3], 1.0)
        self.assertLessEqual(a.max(), 1.0)
        nnlite.images.save_image(os.path.join(self.dir, "b.png"), np.full((3, 3), 0.5), scale=255)
        self.assertEqual(nnlite.images.load_image(os.path.join(self.dir, "b.png"))[0, 0, 0], 128)

    def test_errors(self):
        with self.assertRaises(nnlite.FileError):
            nnlite.images.load_image(os.path.join(self.dir, "missing.png"))
        bad = os.path.join(self.dir, "bad.png")
        with open(bad, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n\0\0")
        with self.assertRaises(nnlite.FormatError) as e:
            nnlite.images.load_image(bad)
        self.assertIn("bad.png", str(e.exception))
        with self.assertRaises(nnlite.ArgumentError):
            nnlite.images.load_image(bad, color_mode="cmyk")
        with self.assertRaises(nnlite.ArgumentError):
            nnlite.images.save_image(os.path.join(self.dir, "x.gif"), np.zeros((2, 2)))

    def test_dataset(self):
        root = os.path.join(self.dir, "data")
        for cls, values in (("dogs", (40, 50)), ("cats", (10, 20, 30))):
            os.makedirs(os.path.join(root, cls))
            for i, v in enumerate(values):
                nnlite.images.save_image(os.path.join(root, cls, "%d.png" % i), np.full((3, 4), v, np.float32))
        (x, y), names = nnlite.images.image_dataset_from_directory(root, image_size=None, color_mode="grayscale",
                                                                   shuffle=False)
        self.assertEqual(names, ["cats", "dogs"])
        self.assertEqual(x.shape, (5, 3, 4, 1))
        self.assertEqual(y.dtype, np.int32)
        np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
        np.testing.assert_array_equal(x[:, 0, 0, 0], [10, 20, 30, 40, 50])
        train, val, names = nnlite.images.image_dataset_from_directory(root, image_size=(2, 2), seed=1337,
                                                                       validation_split=0.4, subset="both")
        self.assertEqual(train[0].shape, (3, 2, 2, 3))
        self.assertEqual(val[0].shape, (2, 2, 2, 3))
        seen = sorted(np.concatenate([train[0][:, 0, 0, 0], val[0][:, 0, 0, 0]]).tolist())
        self.assertEqual(seen, [10, 20, 30, 40, 50])
        # Keras' order: numpy's RandomState(seed).shuffle of the sorted list
        order = [10, 20, 30, 40, 50]
        np.random.RandomState(1337).shuffle(order)
        self.assertEqual(train[0][:, 0, 0, 0].tolist(), order[:3])
        with self.assertRaises(nnlite.FormatError):
            nnlite.images.image_dataset_from_directory(os.path.join(root, "cats"))


if __name__ == "__main__":
    unittest.main()
