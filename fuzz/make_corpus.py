#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: a few tiny valid files per
target in fuzz/corpus/<target>/ (python3 standard library only; fuzz_keras
gets copies of tests/reference/keras/ fixtures as well; the output is
committed, so running this again is needed only to change the seeds).

    python3 fuzz/make_corpus.py
"""
import gzip
import io
import json
import os
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- idx: 0 0 type rank, big-endian dims, big-endian data -------------------

def idx(code, dims, fmt, values):
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + \
        struct.pack(">" + fmt * len(values), *values)


def gz(data, name=None, hcrc=False):
    """gzip with MTIME 0; optional FNAME and FHCRC fields made by hand."""
    flags = (8 if name else 0) | (2 if hcrc else 0)
    h = bytes([0x1F, 0x8B, 8, flags, 0, 0, 0, 0, 0, 3])
    if name:
        h += name + b"\0"
    if hcrc:
        h += struct.pack("<H", zlib.crc32(h) & 0xFFFF)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return h + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


labels = idx(0x08, [6], "B", [5, 0, 4, 1, 9, 2])
images = idx(0x08, [2, 3, 2], "B", [0, 10, 20, 255, 128, 7, 1, 2, 3, 4, 5, 6])
put("fuzz_idx", "u8_rank1.idx", labels)
put("fuzz_idx", "u8_rank3.idx", images)
put("fuzz_idx", "i8_rank1.idx", idx(0x09, [3], "b", [-1, 0, 1]))
put("fuzz_idx", "i16_rank2.idx", idx(0x0B, [2, 2], "h", [-300, 1, 2, 300]))
put("fuzz_idx", "i32_rank1.idx", idx(0x0C, [2], "i", [-70000, 70000]))
put("fuzz_idx", "f32_rank2.idx", idx(0x0D, [2, 2], "f", [0.5, -1.0, 2.0, 3.25]))
put("fuzz_idx", "f64_rank1.idx", idx(0x0E, [2], "d", [0.5, -2.0]))
put("fuzz_idx", "empty.idx", idx(0x08, [0], "B", []))
put("fuzz_idx", "labels.idx.gz", gzip.compress(labels, mtime=0))
put("fuzz_idx", "images_name_hcrc.idx.gz", gz(images, name=b"x.idx", hcrc=True))
put("fuzz_idx", "zeros.idx.gz", gz(idx(0x08, [20, 10], "B", [0] * 200)))


# ---- npy ---------------------------------------------------------------------

def npy(descr, shape, payload, fortran=False, major=1):
    shp = "(" + "".join("%d, " % d for d in shape).rstrip(" ") + ")" if len(shape) != 1 else "(%d,)" % shape[0]
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shp)
    pre = 10 if major == 1 else 12
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    ln = struct.pack("<H", len(h)) if major == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([major, 0]) + ln + h.encode() + payload


f4 = npy("<f4", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 6))
u1 = npy("|u1", [5], bytes([5, 0, 4, 1, 9]))
put("fuzz_npy", "f4_2x3.npy", f4)
put("fuzz_npy", "u1_5.npy", u1)
put("fuzz_npy", "i2_big_endian.npy", npy(">i2", [3], struct.pack(">3h", -1, 0, 300)))
put("fuzz_npy", "b1_fortran.npy", npy("|b1", [2, 2], bytes([1, 0, 0, 1]), fortran=True))
put("fuzz_npy", "f2_scalar.npy", npy("<f2", [], struct.pack("<e", 1.5)))
put("fuzz_npy", "u8_v2.npy", npy("<u8", [2], struct.pack("<2Q", 1, 2), major=2))
put("fuzz_npy", "f8_v3_fortran.npy", npy("<f8", [2, 1, 2], struct.pack("<4d", 1, 2, 3, 4), fortran=True, major=3))
put("fuzz_npy", "i8_empty.npy", npy("<i8", [0, 3], b""))


# ---- npz: zips of .npy members -------------------------------------------------

def npz(members, method):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for name, data in members:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = method
            z.writestr(zi, data)
    return b.getvalue()


def npz64(members):
    """Every size and offset in zip64 extra fields, with the zip64 end records."""
    z, cd = b"", b""
    for name, data in members:
        n = name.encode()
        crc, off = zlib.crc32(data), len(z)
        z += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, len(data), len(data), len(n), 0) + n + data
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(n), 28, 0, 0, 0, 0, 0xFFFFFFFF) + n
        cd += struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
    cd_off, k = len(z), len(members)
    z += cd
    rec = len(z)
    z += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, k, k, len(cd), cd_off)
    z += struct.pack("<IIQI", 0x07064B50, 0, rec, 1)
    z += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return z


mnist = [("x_train.npy", npy("|u1", [2, 2, 2], bytes(range(8)))), ("y_train.npy", npy("<i8", [2], struct.pack("<2q", 3, 7)))]
put("fuzz_npz", "stored.npz", npz([("a.npy", f4), ("b.npy", u1)], zipfile.ZIP_STORED))
put("fuzz_npz", "deflated.npz", npz([("a.npy", f4), ("b.npy", u1)], zipfile.ZIP_DEFLATED))
put("fuzz_npz", "mnist_like.npz", npz(mnist, zipfile.ZIP_DEFLATED))
put("fuzz_npz", "zip64.npz", npz64([("a.npy", u1)]))

# ---- words: PTB-style text (nnl_text_vocab, nnl_load_words) -----------------
put("fuzz_words", "ptb_lines.txt", b" the cat sat on the mat \n <unk> the dog \n")
put("fuzz_words", "no_final_newline.txt", b"a b c\n\n\td\te\r\nlast line without newline")
put("fuzz_words", "utf8_spaces.txt", "café ∑ x\x0by\x0cz\n".encode())

# ---- images: PNG, BMP, PNM, TGA, GIF made by hand (nnl_load_image) -----------

def png(w, h, colour_type, rows):
    """colour_type 0 grey, 2 RGB, 6 RGBA; rows: bytes per row, filter 0 added."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\0" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def bmp24(w, h, rows):
    """Bottom-up BGR rows, each padded to 4 bytes; rows given top first as RGB."""
    stride = (w * 3 + 3) // 4 * 4
    data = b""
    for r in reversed(rows):
        bgr = b"".join(bytes([r[i + 2], r[i + 1], r[i]]) for i in range(0, len(r), 3))
        data += bgr + b"\0" * (stride - len(bgr))
    head = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    return head + info + data


rgb_rows = [bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]), bytes([200, 150, 100, 0, 255, 0, 9, 8, 7])]
put("fuzz_image", "rgb_3x2.png", png(3, 2, 2, rgb_rows))
put("fuzz_image", "grey_2x2.png", png(2, 2, 0, [b"\x00\x80", b"\xff\x10"]))
put("fuzz_image", "rgba_1x1.png", png(1, 1, 6, [b"\x01\x02\x03\x04"]))
put("fuzz_image", "rgb_3x2.bmp", bmp24(3, 2, rgb_rows))
put("fuzz_image", "grey_2x2.pgm", b"P5\n2 2\n255\n\x00\x80\xff\x10")
put("fuzz_image", "rgb_3x2.ppm", b"P6\n# comment\n3 2\n255\n" + b"".join(rgb_rows))
put("fuzz_image", "rgb_3x2.tga", struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, 3, 2, 24, 0x20) +
    b"".join(bytes([r[i + 2], r[i + 1], r[i]]) for r in rgb_rows for i in range(0, 9, 3)))
put("fuzz_image", "white_black.gif", bytes([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 2, 0, 1, 0, 0x80, 0, 0, 0, 0, 0,
                                            255, 255, 255, 0x2C, 0, 0, 0, 0, 2, 0, 1, 0, 0, 2, 2, 0x0C, 0x0A,
                                            0, 0x3B]))

# ---- Keras files (fuzz_keras): copies of fixtures of tests/reference/keras/
# (tests/reference/make_keras_files.py writes them with h5py in Keras' own
# layouts), the smaller ones and one of each kind of layer, and config.json
# texts of the seeds' architecture (kSeedLayers in fuzz_targets.hpp), which
# the target zips into a .keras with the weights nnlite writes for it ------
KERAS = os.path.join(HERE, "..", "tests", "reference", "keras")
for fixture in ("mlp.keras", "mlp_tf2.h5", "mlp_k3.h5", "cnn_tf2.h5", "rnns.keras", "seq.keras"):
    with open(os.path.join(KERAS, fixture), "rb") as f:
        put("fuzz_keras", fixture, f.read())


def k3(module, cls, cfg):
    return {"module": module, "class_name": cls, "config": cfg, "registered_name": None}


def seed_config(full):
    """Keras 3's config.json of Dense(4, relu) - BatchNormalization - Dense(2,
    softmax) on (3,): bare (the keys nnlite needs) or as Keras 3 writes it
    (dtype policies, initializers, a compile_config)."""
    policy = k3("keras", "DTypePolicy", {"name": "float32"})
    extra = {"trainable": True, "dtype": policy} if full else {}

    def dense(name, units, activation):
        c = dict(name=name, units=units, activation=activation, **extra)
        if full:
            c.update(use_bias=True, kernel_initializer=k3("keras.initializers", "GlorotUniform", {"seed": None}),
                     bias_initializer=k3("keras.initializers", "Zeros", {}), kernel_regularizer=None,
                     bias_regularizer=None, kernel_constraint=None, bias_constraint=None)
        return k3("keras.layers", "Dense", c)

    bn = dict(name="batch_normalization", **extra)
    if full:
        bn.update(axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True, synchronized=False)
    layers = [k3("keras.layers", "InputLayer", {"batch_shape": [None, 3], "dtype": "float32", "sparse": False,
                                                "name": "input_layer"}),
              dense("dense", 4, "relu"), k3("keras.layers", "BatchNormalization", bn), dense("dense_1", 2, "softmax")]
    top = k3("keras", "Sequential", dict(name="sequential", layers=layers, **extra))
    top["build_config"] = {"input_shape": [None, 3]}
    if full:
        top["compile_config"] = {"optimizer": k3("keras.optimizers", "Adam", {"name": "adam", "learning_rate": 0.001,
                                                                              "beta_1": 0.9, "beta_2": 0.999,
                                                                              "epsilon": 1e-07, "amsgrad": False}),
                                 "loss": "sparse_categorical_crossentropy", "loss_weights": None,
                                 "metrics": ["accuracy"], "weighted_metrics": None, "run_eagerly": False,
                                 "steps_per_execution": 1, "jit_compile": False}
    return json.dumps(top).encode()


put("fuzz_keras", "config_bare.json", seed_config(False))
put("fuzz_keras", "config_keras3.json", seed_config(True))
