#!/usr/bin/python3
"""Keras model files for tests/unit_keras.hpp, written with h5py in exactly
the layouts Keras writes (no Keras or TensorFlow needed, nor used):

    /usr/bin/python3 tests/reference/make_keras_files.py [OUTDIR]

writes into tests/reference/keras/ by default (Debian python3-h5py and
python3-numpy; deterministic: fixed seeds, fixed dates). For each model NAME:

  NAME.keras      Keras 3 model.save("NAME.keras"): a zip (stored, as
                  Python's zipfile writes by default) of metadata.json,
                  config.json (the Keras 3 serialisation with build_config
                  and compile_config) and model.weights.h5, where a layer's
                  weights are layers/<key>/vars/<i> (<key>: snake_case of
                  the class, numbered per class: dense, dense_1, ...; the
                  layers' own names are deliberately different), recurrent
                  cells layers/<key>/cell/vars/<i>, Bidirectional
                  layers/<key>/forward_layer/cell/vars/<i> and
                  backward_layer/cell/vars/<i>, TimeDistributed
                  layers/<key>/layer/vars/<i>; an empty vars group for every
                  layer without weights and for the model itself.
  NAME_tf2.h5     tf.keras 2.x model.save("NAME.h5"): root attributes
                  model_config (tf.keras 2 JSON, bytes), keras_version,
                  backend, training_config; model_weights with layer_names
                  and, per layer, weight_names "<layer>/<weight>:0" (cells:
                  "<layer>/<cell>/<weight>:0") and those datasets.
  NAME_k3.h5      Keras 3 legacy model.save("NAME.h5"): the same with Keras
                  3 JSON, weight paths "<model>/<layer>/<weight>" without
                  the ":0", groups created in sorted name order, and a
                  top_level_model_weights group.
  NAME.npz        the same weights as arr_0, arr_1, ... in get_weights()
                  order (np.savez), the route the test compares with.

and, with an optimizer's state (optimizer_fixtures; Keras' optimizer
variables in the order Keras keeps them, see optimizer_variables):

  opt_adam.keras        Keras 3: model.weights.h5 optimizer/vars/<i>
  opt_adam_k3.h5        Keras 3 legacy .h5: optimizer_weights, weight_names
                        the variables' paths ("adam/iteration", ...)
  opt_adam_tf2.h5       tf.keras 2.11-2.15: optimizer_weights, weight_names
                        "iteration:0", "Adam/m/hidden/kernel:0", ...
  opt_adam_legacy.h5    tf.keras' legacy optimizers: "Adam/iter:0",
                        "Adam/hidden/kernel/m:0", ... (all m, then all v)
  opt_adam.npz          the slots m_<i>, v_<i> per trainable weight
  opt_nadam.keras/.npz  Nadam in Keras 3.0-3.9's order (u_product first)

The models (models()) hold every layer class of nnlite's registry at
least once: mlp (Dense, Dropout), cnn (Conv2D, BatchNormalization,
MaxPooling2D, Flatten), rnns (SimpleRNN, LSTM, Bidirectional(GRU), GRU),
seq (Embedding, LSTM, TimeDistributed(Dense)), conv1d (Conv1D valid and
same, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D), conv3d (Conv3D,
MaxPooling3D, AveragePooling3D, GlobalAveragePooling3D), shapes
(ZeroPadding2D, UpSampling2D, AveragePooling2D, Activation, Reshape,
GlobalMaxPooling2D), globals (GlobalAveragePooling2D, GlobalMaxPooling3D,
GlobalAveragePooling1D, joined by Reshapes: Sequential has no branches)
and masked (Masking, then LSTM and SimpleRNN; the tests zero some time
steps). Keras' aliases (MaxPool2D, Convolution1D, ...) are the same
classes: Keras writes the class names above. The layers' configurations
are their get_config() keys and defaults, as Keras 3 writes them
(keras/src/layers/convolutional/base_conv.py, pooling/base_pooling.py,
pooling/base_global_pooling.py, reshaping/zero_padding2d.py,
reshaping/up_sampling2d.py, reshaping/reshape.py,
activations/activation.py, core/masking.py; sizes as lists) and tf.keras
2 (the same keys; tf2_config). Like the first four, they leave out the
build_config Keras 3 adds to each built layer's entry (nnlite needs it
only where no InputLayer comes first).
Weights are float32 from a fixed seed (moving variances positive).
Sources of the layouts: keras/src/saving/saving_lib.py (_save_state,
_save_container_state, H5IOStore/H5Entry) and legacy_h5_format.py
(save_model_to_hdf5, save_weights_to_hdf5_group,
save_attributes_to_hdf5_group), tf.keras 2's hdf5_format.py.
"""
import copy
import io
import json
import os
import sys
import zipfile

import h5py
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras")

K3_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def init(cls, cfg=None):
    return {"module": "keras.initializers", "class_name": cls, "config": cfg or {}, "registered_name": None}


def layer(cls, name, **cfg):
    c = {"name": name, "trainable": True, "dtype": K3_POLICY}
    c.update(cfg)
    return {"module": "keras.layers", "class_name": cls, "config": c, "registered_name": None}


def dense(name, units, activation="linear"):
    return layer("Dense", name, units=units, activation=activation, use_bias=True,
                 kernel_initializer=init("GlorotUniform", {"seed": None}), bias_initializer=init("Zeros"),
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None, bias_constraint=None)


def conv2d(name, filters, k, activation="linear"):
    return layer("Conv2D", name, filters=filters, kernel_size=[k, k], strides=[1, 1], padding="valid",
                 data_format="channels_last", dilation_rate=[1, 1], groups=1, activation=activation, use_bias=True,
                 kernel_initializer=init("GlorotUniform", {"seed": None}), bias_initializer=init("Zeros"),
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None)


def conv(cls, name, filters, kernel_size, activation="linear", padding="valid"):
    """Conv1D or Conv3D (BaseConv.get_config: every size a list of one
    per spatial dimension)."""
    n = len(kernel_size)
    return layer(cls, name, filters=filters, kernel_size=list(kernel_size), strides=[1] * n, padding=padding,
                 data_format="channels_last", dilation_rate=[1] * n, groups=1, activation=activation, use_bias=True,
                 kernel_initializer=init("GlorotUniform", {"seed": None}), bias_initializer=init("Zeros"),
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None)


def pooling(cls, name, pool_size, strides=None):
    """Max or AveragePooling1D/2D/3D (BasePooling.get_config; strides
    default to pool_size, as Keras stores them)."""
    return layer(cls, name, pool_size=list(pool_size), padding="valid", strides=list(strides or pool_size),
                 data_format="channels_last")


def rnn(cls, name, units, return_sequences, go_backwards=False, **extra):
    c = dict(return_sequences=return_sequences, return_state=False, go_backwards=go_backwards, stateful=False,
             unroll=False, zero_output_for_mask=False, units=units, activation="tanh", use_bias=True,
             kernel_initializer=init("GlorotUniform", {"seed": None}),
             recurrent_initializer=init("OrthogonalInitializer", {"gain": 1.0, "seed": None}),
             bias_initializer=init("Zeros"), kernel_regularizer=None, recurrent_regularizer=None,
             bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
             bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None)
    if cls != "SimpleRNN":
        c["recurrent_activation"] = "sigmoid"
    if cls == "LSTM":
        c["unit_forget_bias"] = True
    if cls == "GRU":
        c["reset_after"] = True
    c.update(extra)
    return layer(cls, name, **c)


def input_layer(shape, dtype="float32"):
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [None] + list(shape), "dtype": dtype, "sparse": False, "name": "input_layer"},
            "registered_name": None}


def keras3_optimizer(cls="Adam", learning_rate=0.001):
    """Keras 3's serialisation of Adam or Nadam with its defaults."""
    c = {"name": cls.lower(), "learning_rate": learning_rate, "weight_decay": None, "clipnorm": None,
         "global_clipnorm": None, "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
         "ema_overwrite_frequency": None, "loss_scale_factor": None, "gradient_accumulation_steps": None,
         "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}
    if cls == "Adam":
        c["amsgrad"] = False
    return {"module": "keras.optimizers", "class_name": cls, "config": c, "registered_name": None}


def sequential(name, shape, layers, dtype="float32", optimizer=None):
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": name, "trainable": True, "dtype": K3_POLICY,
                       "layers": [input_layer(shape, dtype)] + layers},
            "registered_name": None, "build_config": {"input_shape": [None] + list(shape)},
            "compile_config": {"optimizer": optimizer or keras3_optimizer(),
                               "loss": "mean_squared_error", "loss_weights": None, "metrics": None,
                               "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
                               "jit_compile": False}}


def tf2_config(k3):
    """The tf.keras 2.x serialisation of the same model: no module /
    registered_name / build_config, dtype strings, batch_input_shape,
    Orthogonal, the LSTM/GRU keys of tf.keras 2."""
    def strip(o):
        if isinstance(o, dict):
            if o.get("class_name") == "DTypePolicy":
                return "float32"
            d = {}
            for k, v in o.items():
                if k in ("module", "registered_name", "build_config", "compile_config", "seed") and k != "config":
                    if k == "seed" and isinstance(o.get("gain"), float):
                        d[k] = v  # an initializer's seed stays
                    continue
                d[k] = strip(v)
            if d.get("class_name") == "OrthogonalInitializer":
                d["class_name"] = "Orthogonal"
            return d
        if isinstance(o, list):
            return [strip(x) for x in o]
        return o
    t = strip(copy.deepcopy(k3))
    for lj in t["config"]["layers"]:
        c = lj["config"]
        if lj["class_name"] == "InputLayer":
            c["batch_input_shape"] = c.pop("batch_shape")
            c["ragged"] = False
        for inner in [c] + [c[k]["config"] for k in ("layer", "backward_layer") if k in c]:
            if "zero_output_for_mask" in inner:
                inner.pop("zero_output_for_mask")
                inner["time_major"] = False
                if "recurrent_activation" in inner:
                    inner["implementation"] = 2
            for k in ("kernel_initializer", "bias_initializer", "recurrent_initializer"):
                if k in inner and "seed" not in inner[k]["config"] and inner[k]["class_name"] != "Zeros":
                    inner[k]["config"]["seed"] = None
    return t


# ---- the models: (name, Keras 3 config, input shape, weights per layer) ----

def weights_of(cfg, shape, rng):
    """Per non-input layer, its weights as (keras weight name, array) in
    get_weights() order, with the layer's output shape tracked."""
    out = []
    s = list(shape)
    for lj in cfg["config"]["layers"][1:]:
        cls, c = lj["class_name"], lj["config"]
        ws = []

        def rnd(*dims):
            return (rng.standard_normal(dims) * 0.5).astype(np.float32)

        def cell(kind, c, fin):
            u = c["units"]
            g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
            b = rnd(2, 3 * u) if kind == "GRU" else rnd(g * u)
            return [("kernel", rnd(fin, g * u)), ("recurrent_kernel", rnd(u, g * u)), ("bias", b)]

        if cls == "Dense":
            ws = [("kernel", rnd(s[-1], c["units"])), ("bias", rnd(c["units"]))]
            s = s[:-1] + [c["units"]]
        elif cls == "TimeDistributed":
            u = c["layer"]["config"]["units"]
            ws = [("kernel", rnd(s[-1], u)), ("bias", rnd(u))]
            s = s[:-1] + [u]
        elif cls == "Conv2D":
            k = c["kernel_size"]
            ws = [("kernel", rnd(k[0], k[1], s[-1], c["filters"])), ("bias", rnd(c["filters"]))]
            s = [s[0] - k[0] + 1, s[1] - k[1] + 1, c["filters"]]
        elif cls == "BatchNormalization":
            n = s[-1]
            ws = [("gamma", rnd(n) + 1), ("beta", rnd(n)), ("moving_mean", rnd(n)),
                  ("moving_variance", (rng.random(n) + 0.5).astype(np.float32))]
        elif cls in ("Conv1D", "Conv3D"):
            k = c["kernel_size"]
            ws = [("kernel", rnd(*k, s[-1], c["filters"])), ("bias", rnd(c["filters"]))]
            s = [d if c["padding"] == "same" else d - kd + 1 for d, kd in zip(s[:-1], k)] + [c["filters"]]
        elif cls == "MaxPooling2D":
            p = c["pool_size"]
            s = [s[0] // p[0], s[1] // p[1], s[2]]
        elif cls in ("MaxPooling1D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D"):
            p, st = c["pool_size"], c["strides"]
            s = [(d - pd) // sd + 1 for d, pd, sd in zip(s[:-1], p, st)] + [s[-1]]
        elif cls.startswith("Global"):
            s = [s[-1]]
        elif cls == "ZeroPadding2D":
            (t, b), (l, r) = c["padding"]
            s = [s[0] + t + b, s[1] + l + r, s[2]]
        elif cls == "UpSampling2D":
            s = [s[0] * c["size"][0], s[1] * c["size"][1], s[2]]
        elif cls == "Reshape":
            s = list(c["target_shape"])
        elif cls == "Flatten":
            s = [int(np.prod(s))]
        elif cls == "Embedding":
            ws = [("embeddings", rnd(c["input_dim"], c["output_dim"]))]
            s = s + [c["output_dim"]]
        elif cls in ("SimpleRNN", "LSTM", "GRU"):
            ws = cell(cls, c, s[-1])
            s = ([s[0]] if c["return_sequences"] else []) + [c["units"]]
        elif cls == "Bidirectional":
            inner = c["layer"]
            ws = cell(inner["class_name"], inner["config"], s[-1])
            ws = ws + [(n, rnd(*a.shape)) for n, a in ws]
            u = inner["config"]["units"] * (2 if c["merge_mode"] == "concat" else 1)
            s = ([s[0]] if inner["config"]["return_sequences"] else []) + [u]
        out.append((lj, ws))
    return out


def batchnorm(name):
    return layer("BatchNormalization", name, axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True,
                 beta_initializer=init("Zeros"), gamma_initializer=init("Ones"), moving_mean_initializer=init("Zeros"),
                 moving_variance_initializer=init("Ones"), beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, synchronized=False)


def models():
    mlp = sequential("sequential", [6], [
        dense("hidden", 8, "relu"),
        layer("Dropout", "drop", rate=0.5, seed=None, noise_shape=None),
        dense("out", 3, "softmax")])
    cnn = sequential("cnn", [8, 8, 2], [
        conv2d("features", 4, 3, "relu"),
        batchnorm("bn"),
        layer("MaxPooling2D", "pool", pool_size=[2, 2], padding="valid", strides=[2, 2], data_format="channels_last"),
        conv2d("more", 3, 2),
        layer("Flatten", "flat", data_format="channels_last"),
        dense("probs", 3, "softmax")])
    rnns = sequential("rnns", [6, 3], [
        rnn("SimpleRNN", "srnn", 4, True),
        rnn("LSTM", "lstm_a", 4, True),
        layer("Bidirectional", "bi", merge_mode="concat",
              layer=rnn("GRU", "forward_gru", 3, True),
              backward_layer=rnn("GRU", "backward_gru", 3, True, go_backwards=True)),
        rnn("GRU", "last", 3, False),
        dense("head", 2)])
    seq = sequential("seq", [7], [
        layer("Embedding", "emb", input_dim=10, output_dim=4, embeddings_initializer=init("RandomUniform",
              {"minval": -0.05, "maxval": 0.05, "seed": None}), embeddings_regularizer=None,
              activity_regularizer=None, embeddings_constraint=None, mask_zero=False),
        rnn("LSTM", "enc", 5, True),
        layer("TimeDistributed", "td", layer=dense("tdd", 2))], dtype="float32")
    conv1d = sequential("conv1d", [12, 3], [
        conv("Conv1D", "taps", 4, [3], "relu"),
        pooling("MaxPooling1D", "pool1", [2]),
        conv("Conv1D", "taps_same", 3, [2], padding="same"),
        pooling("AveragePooling1D", "avg1", [2], [1]),
        layer("GlobalMaxPooling1D", "gmax1", data_format="channels_last", keepdims=False),
        dense("out1", 2)])
    conv3d = sequential("conv3d", [6, 6, 4, 2], [
        conv("Conv3D", "vox", 3, [3, 3, 1], "relu"),
        pooling("MaxPooling3D", "pool3", [2, 2, 2]),
        pooling("AveragePooling3D", "avg3", [1, 1, 2]),
        layer("GlobalAveragePooling3D", "gavg3", data_format="channels_last", keepdims=False),
        dense("out3", 2)])
    shapes = sequential("shapes", [6, 6, 2], [
        layer("ZeroPadding2D", "pad", padding=[[1, 1], [0, 2]], data_format="channels_last"),
        layer("UpSampling2D", "up", size=[2, 1], data_format="channels_last", interpolation="nearest"),
        pooling("AveragePooling2D", "avg2", [2, 2]),
        layer("Activation", "squash", activation="tanh"),
        layer("Reshape", "fold", target_shape=[4, 8, 2]),
        layer("GlobalMaxPooling2D", "gmax2", data_format="channels_last", keepdims=False),
        dense("out2", 3)])
    # the other global poolings, one after another (Sequential has no
    # branches and nnlite has no keepdims=True): (4, 5, 12) -> (12,) ->
    # (2, 2, 1, 3) -> (3,) -> (8,) -> (4, 2) -> (2,)
    globals_ = sequential("globals", [4, 5, 12], [
        layer("GlobalAveragePooling2D", "gavg2", data_format="channels_last", keepdims=False),
        layer("Reshape", "to3d", target_shape=[2, 2, 1, 3]),
        layer("GlobalMaxPooling3D", "gmax3", data_format="channels_last", keepdims=False),
        dense("widen", 8, "tanh"),
        layer("Reshape", "to1d", target_shape=[4, 2]),
        layer("GlobalAveragePooling1D", "gavg1", data_format="channels_last", keepdims=False),
        dense("outg", 2)])
    # the test zeroes some time steps of the inputs: Masking skips them
    masked = sequential("masked", [6, 3], [
        layer("Masking", "mask", mask_value=0.0),
        rnn("LSTM", "enc", 4, True),
        rnn("SimpleRNN", "last", 3, False),
        dense("outm", 2)])
    return [("mlp", mlp, [6]), ("cnn", cnn, [8, 8, 2]), ("rnns", rnns, [6, 3]), ("seq", seq, [7]),
            ("conv1d", conv1d, [12, 3]), ("conv3d", conv3d, [6, 6, 4, 2]), ("shapes", shapes, [6, 6, 2]),
            ("globals", globals_, [4, 5, 12]), ("masked", masked, [6, 3])]


def snake(cls):
    import re
    name = re.sub(r"\W+", "", cls)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def cell_name(kind):
    return {"SimpleRNN": "simple_rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}[kind]


def keras_file(path, cfg, layers, opt_vars=None):
    """Keras 3 model.save(path); opt_vars: the optimizer's variables
    (optimizer_variables(..., "k3")), datasets optimizer/vars/0, 1, ...
    (BaseOptimizer.save_own_variables); none: an empty group."""
    h5buf = io.BytesIO()
    with h5py.File(h5buf, "w") as f:
        used = {}
        for lj, ws in layers:
            cls = lj["class_name"]
            key = snake(cls)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            base = "layers/" + key
            if cls in ("SimpleRNN", "LSTM", "GRU"):
                f.create_group(base).create_group("vars")
                groups = [f.create_group(base + "/cell").create_group("vars")]
            elif cls == "Bidirectional":
                f.create_group(base).create_group("vars")
                groups = []
                for part in ("backward_layer", "forward_layer"):  # sorted(dir()) order
                    f.create_group(base + "/" + part).create_group("vars")
                    groups.append(f.create_group(base + "/" + part + "/cell").create_group("vars"))
                groups.reverse()  # forward first: get_weights() order
            elif cls == "TimeDistributed":
                f.create_group(base).create_group("vars")
                groups = [f.create_group(base + "/layer").create_group("vars")]
            else:
                groups = [f.create_group(base).create_group("vars")]
            per = len(ws) // len(groups)
            for gi, g in enumerate(groups):
                for i, (_, a) in enumerate(ws[gi * per:(gi + 1) * per]):
                    g[str(i)] = a
        f.create_group("vars")
        og = f.create_group("optimizer").create_group("vars")
        for i, (_, a) in enumerate(opt_vars or []):
            og[str(i)] = a
    meta = json.dumps({"keras_version": "3.6.0", "date_saved": "2026-12-03@09:00:00"})
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in (("metadata.json", meta.encode()), ("config.json", json.dumps(cfg).encode()),
                           ("model.weights.h5", h5buf.getvalue())):
            zi = zipfile.ZipInfo(name, date_time=(2026, 12, 3, 9, 0, 0))
            zf.writestr(zi, data)


def legacy_h5(path, cfg, layers, keras3, opt_vars=None):
    """model.save(path) to .h5: tf.keras 2.x (keras3=False) or Keras 3's
    legacy format; opt_vars: the optimizer's variables as (name, value), in
    a group optimizer_weights with their names in its weight_names
    attribute (save_optimizer_weights_to_hdf5_group)."""
    model = cfg["config"]["name"]
    opt = cfg["compile_config"]["optimizer"]
    ocls, olr = opt["class_name"], opt["config"]["learning_rate"]
    with h5py.File(path, "w") as f:
        if keras3:
            f.attrs["keras_version"] = "3.6.0"
            f.attrs["backend"] = "tensorflow"
            f.attrs["model_config"] = json.dumps({k: cfg[k] for k in cfg if k != "compile_config"}).encode("utf8")
            f.attrs["training_config"] = json.dumps({"loss": "mean_squared_error", "metrics": None,
                                                     "weighted_metrics": None, "loss_weights": None,
                                                     "optimizer_config": {"class_name": ocls,
                                                                          "config": {"learning_rate": olr}}}).encode()
        else:
            t = tf2_config(cfg)
            t["keras_version"] = "2.15.0"
            t["backend"] = "tensorflow"
            f.attrs["backend"] = "tensorflow"
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["model_config"] = json.dumps({"class_name": t["class_name"], "config": t["config"]}).encode("utf8")
            f.attrs["training_config"] = json.dumps({"loss": "mean_squared_error", "metrics": None,
                                                     "weighted_metrics": None, "loss_weights": None,
                                                     "optimizer_config": {"class_name": ocls,
                                                                          "config": {"name": ocls,
                                                                                     "learning_rate": olr}}}).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [lj["config"]["name"].encode("utf8") for lj, _ in layers]
        g.attrs["backend"] = b"tensorflow"
        g.attrs["keras_version"] = (b"3.6.0" if keras3 else b"2.15.0")
        order = sorted(layers, key=lambda x: x[0]["config"]["name"]) if keras3 else layers
        for lj, ws in order:
            lname = lj["config"]["name"]
            lg = g.create_group(lname)
            cls = lj["class_name"]
            names = []
            for i, (wn, _) in enumerate(ws):
                if cls in ("SimpleRNN", "LSTM", "GRU"):
                    p = f"{lname}/{cell_name(cls)}/{wn}"
                elif cls == "Bidirectional":
                    inner = lj["config"]["layer"]
                    kind = inner["class_name"]
                    half = len(ws) // 2
                    d = "forward" if i < half else "backward"
                    p = f"{lname}/{d}_{inner['config']['name'].split('_', 1)[-1]}/{cell_name(kind)}/{wn}"
                elif cls == "TimeDistributed":
                    p = f"{lname}/{wn}"
                else:
                    p = f"{lname}/{wn}"
                names.append((f"{model}/{p}" if keras3 else f"{p}:0").encode("utf8"))
            lg.attrs["weight_names"] = names if names else np.asarray([])
            for n, (_, a) in zip(names, ws):
                d = lg.create_dataset(n.decode(), a.shape, dtype=a.dtype)
                d[...] = a
        if keras3:
            tg = g.create_group("top_level_model_weights")
            tg.attrs["weight_names"] = np.asarray([])
        if opt_vars:
            og = f.create_group("optimizer_weights")
            og.attrs["weight_names"] = [n.encode("utf8") for n, _ in opt_vars]
            for n, a in opt_vars:
                d = og.create_dataset(n, a.shape, dtype=a.dtype)
                if not a.shape:
                    d[()] = a
                else:
                    d[:] = a


# ---- the optimizer's state ----

def trainable_of(layers):
    """(layer name, weight name, array) of every trainable weight in
    model.trainable_variables order (BatchNormalization's moving
    statistics are not trainable)."""
    return [(lj["config"]["name"], wn, a) for lj, ws in layers for wn, a in ws
            if wn not in ("moving_mean", "moving_variance")]


def moments(trainable, rng):
    """Adam's (or Nadam's) m and v per trainable weight, v >= 0."""
    m = [(rng.standard_normal(a.shape) * 0.01).astype(np.float32) for _, _, a in trainable]
    v = [(rng.random(a.shape) * 1e-4).astype(np.float32) for _, _, a in trainable]
    return m, v


def optimizer_variables(layout, model, cls, trainable, m, v, iteration, lr, u_product=None):
    """Keras' optimizer variables of an Adam or Nadam, as (name, value) in
    Keras' order:
      k3      Keras 3 (keras/src/optimizers/base_optimizer.py, adam.py,
              nadam.py): iteration (int64), learning_rate (float32), then
              momentum and velocity interleaved per weight
              (add_optimizer_variables); Nadam's u_product (float32) before
              them, as Keras 3.0 to 3.9 build it (3.10 on: after). The
              names are the variables' paths, as Keras 3's .h5 has them;
              .keras numbers them instead.
      tf2     tf.keras 2.11-2.15 (tf_keras/optimizers/optimizer.py,
              adam.py): iteration:0, then Adam/m/<weight>:0 and
              Adam/v/<weight>:0 interleaved; no learning rate.
      legacy  tf.keras' legacy optimizers (optimizers/legacy/adam.py
              _create_slots, optimizer_v2.py): Adam/iter:0, every
              Adam/<weight>/m:0, then every Adam/<weight>/v:0."""
    it = np.int64(iteration)
    if layout == "k3":
        scope = cls.lower()
        out = [(f"{scope}/iteration", it), (f"{scope}/learning_rate", np.float32(lr))]
        if u_product is not None:
            out.append((f"{scope}/variable", np.float32(u_product)))
        for (ln, wn, _), mi, vi in zip(trainable, m, v):
            base = f"{scope}/{model}_{ln}_{wn}"
            out += [(base + "_momentum", mi), (base + "_velocity", vi)]
        return out
    if layout == "tf2":
        out = [("iteration:0", it)]
        for (ln, wn, _), mi, vi in zip(trainable, m, v):
            out += [(f"{cls}/m/{ln}/{wn}:0", mi), (f"{cls}/v/{ln}/{wn}:0", vi)]
        return out
    out = [(f"{cls}/iter:0", it)]
    out += [(f"{cls}/{ln}/{wn}/m:0", mi) for (ln, wn, _), mi in zip(trainable, m)]
    out += [(f"{cls}/{ln}/{wn}/v:0", vi) for (ln, wn, _), vi in zip(trainable, v)]
    return out


def optimizer_fixtures():
    """opt_adam.keras, opt_adam_k3.h5, opt_adam_tf2.h5, opt_adam_legacy.h5:
    one model (Dense, BatchNormalization, Dense) compiled with
    Adam(learning_rate=0.002) after 7 steps, its state in each layout;
    opt_nadam.keras: Nadam after 3 steps in Keras 3.0-3.9's order. The npz
    files hold the slots per trainable weight (m_0, v_0, ...), the step
    count and the learning rate (and u_product) as 1-element arrays."""
    rng = np.random.default_rng(1616)
    cfg = sequential("opt", [6], [dense("hidden", 8, "relu"), batchnorm("bn"), dense("out", 3, "softmax")],
                     optimizer=keras3_optimizer("Adam", 0.002))
    layers = weights_of(cfg, [6], rng)
    tr = trainable_of(layers)
    m, v = moments(tr, rng)
    state = dict(model="opt", cls="Adam", trainable=tr, m=m, v=v, iteration=7, lr=0.002)
    keras_file(os.path.join(OUT, "opt_adam.keras"), cfg, layers, optimizer_variables("k3", **state))
    legacy_h5(os.path.join(OUT, "opt_adam_k3.h5"), cfg, layers, True, optimizer_variables("k3", **state))
    legacy_h5(os.path.join(OUT, "opt_adam_tf2.h5"), cfg, layers, False, optimizer_variables("tf2", **state))
    legacy_h5(os.path.join(OUT, "opt_adam_legacy.h5"), cfg, layers, False, optimizer_variables("legacy", **state))
    arrays = {f"m_{i}": a for i, a in enumerate(m)}
    arrays.update({f"v_{i}": a for i, a in enumerate(v)})
    np.savez(os.path.join(OUT, "opt_adam.npz"), iterations=np.array([7], np.float32),
             learning_rate=np.array([0.002], np.float32), **arrays)
    ncfg = copy.deepcopy(cfg)
    ncfg["compile_config"]["optimizer"] = keras3_optimizer("Nadam", 0.002)
    nm, nv = moments(tr, rng)
    u = 1.0
    for s in (1, 2, 3):  # Keras 3's u_t = beta_1 (1 - 0.5 * 0.96^t), multiplied up over the 3 steps
        u *= 0.9 * (1.0 - 0.5 * 0.96 ** s)
    keras_file(os.path.join(OUT, "opt_nadam.keras"), ncfg, layers,
               optimizer_variables("k3", "opt", "Nadam", tr, nm, nv, 3, 0.002, u_product=u))
    arrays = {f"m_{i}": a for i, a in enumerate(nm)}
    arrays.update({f"v_{i}": a for i, a in enumerate(nv)})
    np.savez(os.path.join(OUT, "opt_nadam.npz"), iterations=np.array([3], np.float32),
             learning_rate=np.array([0.002], np.float32), u_product=np.array([u], np.float32), **arrays)
    print("opt", len(tr), "trainable weights,", sum(a.size for _, _, a in tr), "values per slot")


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, cfg, shape) in enumerate(models()):
        rng = np.random.default_rng(1600 + i)
        layers = weights_of(cfg, shape, rng)
        keras_file(os.path.join(OUT, name + ".keras"), cfg, layers)
        legacy_h5(os.path.join(OUT, name + "_tf2.h5"), cfg, layers, keras3=False)
        legacy_h5(os.path.join(OUT, name + "_k3.h5"), cfg, layers, keras3=True)
        np.savez(os.path.join(OUT, name + ".npz"), *[a for _, ws in layers for _, a in ws])
        print(name, sum(a.size for _, ws in layers for _, a in ws), "weights")
    optimizer_fixtures()


if __name__ == "__main__":
    main()
