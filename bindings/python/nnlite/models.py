"""nnlite.Sequential: a Keras-like model over nnlite's C ABI."""
import atexit
import ctypes
import os
import re
import sys

import numpy as np

from . import _lib
from . import errors
from .layers import Layer, render

_L = _lib.lib

# numpy dtype -> nnlite dtype code (targets y may be any of these)
_DTYPES = {
    np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.int64): 4,
    np.dtype(np.uint8): 5, np.dtype(np.int8): 6, np.dtype(np.int16): 7, np.dtype(np.uint16): 8,
    np.dtype(np.uint32): 9, np.dtype(np.uint64): 10, np.dtype(np.bool_): 11, np.dtype(np.float16): 12,
}


def _raise_for(status):
    """Raises the nnlite.Error subclass for a nonzero status, with nnlite's message."""
    if status != 0:
        msg = _L.nnl_last_error().decode("utf-8", "replace")
        raise errors.make(status, msg or _L.nnl_status_string(status).decode())


def _need(name):
    if not hasattr(_L, name):
        raise errors.UnsupportedError("nnlite: %s is not in the loaded library %s (version %s); this call "
                                      "needs a newer libnnlite" % (name, _lib.path, _L.nnl_version().decode()),
                                      errors.UNSUPPORTED)
    return getattr(_L, name)


def _path(p):
    return os.fsencode(os.fspath(p))


def _x(x):
    """x as the library takes it, C-contiguous (copies only when it must),
    with its shape and dtype code: integer arrays (token ids for an
    Embedding) stay integers, int32 or int64 (nnl_*_typed), everything
    else becomes float32."""
    a = np.asarray(x)
    if a.dtype.kind in "iub" and a.dtype != np.bool_:
        a = np.ascontiguousarray(a, dtype=np.int32 if a.dtype.itemsize <= 4 and a.dtype != np.uint32 else np.int64)
    else:
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim < 1:
        raise errors.ShapeError("nnlite: x must have a samples axis, got a scalar", errors.SHAPE)
    shape = (ctypes.c_int64 * a.ndim)(*a.shape)
    return a, a.ctypes.data_as(ctypes.c_void_p), a.ndim, shape, _DTYPES[a.dtype]


def _y(y):
    a = np.asarray(y)
    if a.dtype not in _DTYPES:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a)
    if a.ndim < 1:
        raise errors.ShapeError("nnlite: y must have a samples axis, got a scalar", errors.SHAPE)
    shape = (ctypes.c_int64 * a.ndim)(*a.shape)
    return a, a.ctypes.data_as(ctypes.c_void_p), _DTYPES[a.dtype], a.ndim, shape


def _flush():
    """nnlite prints through C's stdout: keep Python's output in order with it."""
    try:
        sys.stdout.flush()
    except Exception:
        pass


# model.distribute(data=...) -> NNL_DATA_SHARDED, NNL_DATA_LOCAL; NNL_GLOBAL_BATCH
_DATA_FLAGS = {"sharded": 0, "local": 1}
_GLOBAL_BATCH, _SYNC_BATCHNORM = 2, 4
_finalize_registered = []


def _finalize_mpi_at_exit():
    """distribute() without a communicator initialises MPI when no one has
    (nnl_mpi_init); then it is finalised at exit. nnl_mpi_finalize does
    nothing to an MPI that mpi4py or the program started (mpi4py finalises
    its own)."""
    if not _finalize_registered:
        _finalize_registered.append(True)
        atexit.register(_L.nnl_mpi_finalize)


def _mpi_libraries():
    """The MPI libraries mapped into this process (Linux; empty elsewhere)."""
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(None, 5)  # address perms offset dev inode [path]
                path = fields[5].strip() if len(fields) == 6 else ""
                if re.match(r"lib(mpi|mpich)\.so(\.|$)", os.path.basename(path)):
                    found.add(os.path.realpath(path))
    except OSError:
        pass
    return found


def _comm_address(comm):
    """The address of comm's MPI_Comm handle, what nnl_distribute takes:
    mpi4py's MPI._addressof(comm) (the address of the handle inside the
    communicator object, not the handle's value, which MPI._handleof gives)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise errors.ArgumentError("nnlite: model.distribute(): comm must be an mpi4py communicator or None "
                                   "(MPI_COMM_WORLD), and mpi4py cannot be imported (%s)" % e, errors.ARGUMENT)
    if not isinstance(comm, MPI.Comm):
        raise errors.ArgumentError("nnlite: model.distribute(): comm must be an mpi4py communicator "
                                   "(mpi4py.MPI.Comm) or None for MPI_COMM_WORLD, got %s" % type(comm).__name__,
                                   errors.ARGUMENT)
    libs = _mpi_libraries()
    if len(libs) > 1:  # an MPICH handle given to Open MPI (or the reverse) would crash
        raise errors.UnsupportedError("nnlite: model.distribute(): mpi4py and libnnlite use different MPI libraries "
                                      "(%s); build both against the same MPI" % ", ".join(sorted(libs)),
                                      errors.UNSUPPORTED)
    return ctypes.c_void_p(MPI._addressof(comm))


class History:
    """What fit() returns, as Keras: .history maps each key (loss, metrics,
    val_loss, ...) to a list with one value per epoch of that fit; .epoch
    lists the epoch indices."""

    def __init__(self, history, epoch):
        self.history = history
        self.epoch = epoch

    def __repr__(self):
        return "History(epochs=%d, keys=%s)" % (len(self.epoch), list(self.history))


class Callback:
    """Base class for fit() callbacks (Keras' names). Set model.stop_training =
    True inside one to stop after the current batch."""

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass


class Sequential:
    """A stack of layers, as keras.Sequential.

        model = nnlite.Sequential([nnlite.layers.Dense(128, activation="relu", input_shape=(784,)),
                                   nnlite.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=5, batch_size=32, validation_split=0.1)

    Layers are added to the library at once, so a shape error is raised by
    add() (as nnlite.ShapeError naming the layer and both shapes). Layers may
    be nnlite.layers objects or spec strings ("Dense(10)"). seed makes the
    initial weights reproducible (nnl_model_set_seed)."""

    def __init__(self, layers=None, seed=None, name=None):
        self._h = _L.nnl_model_create()
        if not self._h:
            raise errors.OutOfMemoryError("nnlite: could not create a model", errors.MEMORY)
        self.name = name or "sequential"
        self.stop_training = False
        self._metrics = None
        if seed is not None:
            _raise_for(_L.nnl_model_set_seed(self._h, int(seed)))
        for layer in layers or ():
            self.add(layer)

    @classmethod
    def _adopt(cls, handle):
        m = cls.__new__(cls)
        m._h = handle
        m.name = "sequential"
        m.stop_training = False
        m._metrics = None
        return m

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            self._h = None
            _L.nnl_model_free(h)

    def close(self):
        """Frees the library's model now (also done when the object is collected)."""
        self.__del__()

    @property
    def handle(self):
        """The nnl_model* (a ctypes void pointer value) for calling the C API directly."""
        if not self._h:
            raise errors.StateError("nnlite: the model was closed", errors.STATE)
        return self._h

    # ---- building ----
    def add(self, layer):
        spec = layer.spec() if isinstance(layer, Layer) else str(layer)
        _raise_for(_L.nnl_add(self.handle, spec.encode()))

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """optimizer: a name, a spec string or an nnlite.optimizers object;
        loss: a name or spec string; metrics: a list of names (or None)."""
        if loss is None:
            raise errors.ArgumentError("nnlite: compile needs a loss", errors.ARGUMENT)
        opt = optimizer.spec() if isinstance(optimizer, Layer) else str(optimizer)
        loss_s = loss.spec() if isinstance(loss, Layer) else str(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, str):
            metrics = [metrics]
        mets = [m.spec() if isinstance(m, Layer) else str(m) for m in metrics]
        _raise_for(_L.nnl_compile(self.handle, opt.encode(), loss_s.encode(), ",".join(mets).encode()))
        self._metrics = [m.split("(")[0].strip() for m in mets]

    # ---- device ----
    def to(self, device):
        """Moves the model to "cpu", "cuda" or "cuda:N" (nnl_set_device); returns
        self. Raises UnsupportedError where no GPU or no CUDA build is there."""
        if not hasattr(_L, "nnl_set_device"):
            raise errors.UnsupportedError("nnlite: this library has no nnl_set_device", errors.UNSUPPORTED)
        _raise_for(_L.nnl_set_device(self.handle, str(device).encode()))
        return self

    @property
    def device(self):
        """The device the model runs on ("cpu", "cuda:0", ...)."""
        return _L.nnl_get_device(self.handle).decode() if hasattr(_L, "nnl_get_device") else "cpu"

    def set_tf32(self, on=True):
        """TF32 tensor cores for the GPU's matrix products (nnl_set_tf32)."""
        _raise_for(_L.nnl_set_tf32(self.handle, 1 if on else 0))

    # ---- mixed precision on the CPU (nnlite.h, since 0.6) ----
    def set_precision(self, policy):
        """Keras' dtype policy for this model (nnl_set_precision): "float32"
        (the default) or "mixed_bfloat16" (the layers' matrix products on
        bfloat16 operands with float32 sums; weights, optimizer state and
        losses stay float32). Any time, before or after compile. Raises
        UnsupportedError on a CPU without AVX512-BF16 (nnlite.has_feature("bf16"))
        and ArgumentError for other names; the policy is then unchanged.
        Returns self."""
        if not hasattr(_L, "nnl_set_precision"):
            raise errors.UnsupportedError("nnlite: this library has no nnl_set_precision (older than 0.6)",
                                          errors.UNSUPPORTED)
        _raise_for(_L.nnl_set_precision(self.handle, str(policy).encode()))
        return self

    @property
    def precision(self):
        """The model's dtype policy: "float32" or "mixed_bfloat16"."""
        return _L.nnl_get_precision(self.handle).decode() if hasattr(_L, "nnl_get_precision") else "float32"

    # ---- data-parallel training over MPI (nnlite.h, since 0.4) ----
    def distribute(self, comm=None, data="sharded", global_batch=False, sync_batchnorm=False):
        """Makes this model one replica of a data-parallel run (nnl_distribute,
        Horovod's semantics): every rank trains on its part of each batch,
        the gradients are averaged over the ranks and every replica applies
        the same update. Needs a library built with MPI (make MPI=1; else
        UnsupportedError) and a program run by mpirun. Returns self.

        comm: an mpi4py communicator (MPI.COMM_WORLD, or one from
        comm.Split()), or None for MPI_COMM_WORLD, which then needs no
        mpi4py: nnlite initialises MPI if no one has, and finalises it at
        exit. mpi4py is imported only when comm is given; it must use the
        same MPI library as libnnlite. MPI.COMM_NULL makes the model local
        again. Collective: every rank of comm calls it, and fit() and
        evaluate() become collective too (same order, same options on every
        rank; a failure on one rank raises on all, naming the rank).

        data: "sharded" (every rank passes the same whole dataset and trains
        on its shard of each batch) or "local" (each rank passes its own
        samples, e.g. generated in place; all are used). batch_size is per
        rank unless global_batch=True (only with "sharded"), where it is the
        step's total. sync_batchnorm=True: BatchNormalization's batch
        statistics are the global batch's (Horovod's SyncBatchNormalization),
        else each rank's. Rank 0 alone prints progress and writes files."""
        if data not in _DATA_FLAGS:
            raise errors.ArgumentError("nnlite: model.distribute(): data must be 'sharded' or 'local', got %r"
                                       % (data,), errors.ARGUMENT)
        flags = _DATA_FLAGS[data] | (_GLOBAL_BATCH if global_batch else 0)
        flags |= _SYNC_BATCHNORM if sync_batchnorm else 0
        fn = _need("nnl_distribute")
        if comm is None:
            _finalize_mpi_at_exit()
            _raise_for(fn(self.handle, None, flags))
        else:
            _raise_for(fn(self.handle, _comm_address(comm), flags))
        return self

    def mpi_rank(self):
        """(rank, size) of this process in the model's communicator; (0, 1)
        for a model that is not distributed."""
        r, n = ctypes.c_int(0), ctypes.c_int(1)
        _need("nnl_mpi_rank")(self.handle, ctypes.byref(r), ctypes.byref(n))
        return r.value, n.value

    def scale_learning_rate(self):
        """The linear scaling rule: the learning rate times the number of
        ranks, for a global batch that many times larger. After compile(),
        on every rank."""
        _raise_for(_need("nnl_scale_learning_rate")(self.handle))

    def reset_states(self):
        """Keras' reset_states(): the states stateful recurrent layers carry
        from batch to batch go back to zero (the batch size stays)."""
        _raise_for(_L.nnl_reset_states(self.handle))

    # ---- properties ----
    def count_params(self):
        """All weights, trainable or not: Keras' count_params() ("Total params")."""
        return int(_L.nnl_param_count(self.handle))

    def count_trainable_params(self):
        """The summary's "Trainable params": what the optimizer updates."""
        return int(_need("nnl_trainable_param_count")(self.handle))

    def count_non_trainable_params(self):
        """The summary's "Non-trainable params" (BatchNormalization's moving statistics)."""
        return int(_need("nnl_non_trainable_param_count")(self.handle))

    @property
    def input_shape(self):
        s = (ctypes.c_int64 * 8)()
        r = _L.nnl_input_shape(self.handle, s)
        return None if r < 0 else (None,) + tuple(None if d == -1 else d for d in s[:r])

    @property
    def output_shape(self):
        s = (ctypes.c_int64 * 8)()
        r = _L.nnl_output_shape(self.handle, s)
        return None if r < 0 else (None,) + tuple(None if d == -1 else d for d in s[:r])

    def _out_shape(self):
        s = (ctypes.c_int64 * 8)()
        r = _L.nnl_output_shape(self.handle, s)
        if r < 0:
            raise errors.StateError("nnlite: the model has no layers", errors.STATE)
        return tuple(s[:r])

    @property
    def learning_rate(self):
        return float(_L.nnl_get_learning_rate(self.handle))

    @learning_rate.setter
    def learning_rate(self, lr):
        _raise_for(_L.nnl_set_learning_rate(self.handle, float(lr)))

    def summary(self, print_fn=None):
        """Prints Keras' summary table (or passes it to print_fn); returns it."""
        n = _L.nnl_summary_string(self.handle, None, 0)
        if n < 0:
            _raise_for(errors.STATE)
        buf = ctypes.create_string_buffer(int(n) + 1)
        _L.nnl_summary_string(self.handle, buf, n + 1)
        text = buf.value.decode()
        (print_fn or print)(text.rstrip("\n"))
        return text

    # ---- weights ----
    def _weight_shape(self, i):
        rank = ctypes.c_int()
        shape = (ctypes.c_int64 * 8)()
        _raise_for(_L.nnl_weight_info(self.handle, i, None, 0, ctypes.byref(rank), shape))
        return tuple(shape[:rank.value])

    def _weight(self, i):
        a = np.empty(self._weight_shape(i), dtype=np.float32)
        _raise_for(_L.nnl_get_weight(self.handle, i, a.ctypes.data_as(_lib.P_float), a.size))
        return a

    def _trainable(self, i):
        t = ctypes.c_int()
        _raise_for(_need("nnl_weight_trainable")(self.handle, i, ctypes.byref(t)))
        return bool(t.value)

    def get_weights(self):
        """Keras' get_weights(): every weight tensor, trainable or not, as
        float32 arrays in Keras' order (per layer: kernel, bias;
        BatchNormalization: gamma, beta, moving_mean, moving_variance)."""
        return [self._weight(i) for i in range(_L.nnl_weight_count(self.handle))]

    def set_weights(self, weights):
        """Keras' set_weights(): the full list get_weights() returns (shapes
        must match; the model changes only when all do)."""
        n = _L.nnl_weight_count(self.handle)
        weights = list(weights)
        if len(weights) != n:
            raise errors.ShapeError("nnlite: set_weights got %d arrays, the model has %d" % (len(weights), n),
                                    errors.SHAPE)
        arrays = []
        for i, w in enumerate(weights):
            a = np.ascontiguousarray(w, dtype=np.float32)
            want = self._weight_shape(i)
            if a.shape != want:
                raise errors.ShapeError("nnlite: set_weights: array %d has shape %s, the model's weight %d has %s"
                                        % (i, a.shape, i, want), errors.SHAPE)
            arrays.append(a)
        for i, a in enumerate(arrays):
            _raise_for(_L.nnl_set_weight(self.handle, i, a.ctypes.data_as(_lib.P_float), a.size))

    @property
    def weights_trainable(self):
        """One bool per get_weights() entry: True where the optimizer updates it."""
        return [self._trainable(i) for i in range(_L.nnl_weight_count(self.handle))]

    @property
    def trainable_weights(self):
        """Keras' trainable_weights, as arrays (copies), in get_weights() order."""
        return [self._weight(i) for i in range(_L.nnl_weight_count(self.handle)) if self._trainable(i)]

    @property
    def non_trainable_weights(self):
        """Keras' non_trainable_weights (BatchNormalization's moving statistics), as arrays."""
        return [self._weight(i) for i in range(_L.nnl_weight_count(self.handle)) if not self._trainable(i)]

    # ---- training ----
    def fit(self, x, y, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, seed=None, reset_states=False):
        """Keras' fit. Returns a History. verbose: 0 silent, 1 progress line,
        2 one line per epoch (printed by nnlite on the process' stdout).
        reset_states=True resets stateful layers at each epoch's start (Keras
        itself never does; its users add a callback that does)."""
        xa, xp, xr, xs, xd = _x(x)
        ya, yp, yd, yr, ys = _y(y)
        # room for a newer library's longer struct; struct_size then says
        # which fields this package fills
        raw = ctypes.create_string_buffer(1024)
        _L.nnl_fit_options_init(raw)
        o = _lib.FitOptions.from_buffer(raw)
        o.struct_size = ctypes.sizeof(_lib.FitOptions)
        o.epochs = int(epochs)
        o.batch_size = int(batch_size) if batch_size else 32
        o.validation_split = float(validation_split)
        o.shuffle = 1 if shuffle else 0
        o.verbose = int(verbose)
        o.seed = int(seed) if seed else 0
        o.initial_epoch = int(initial_epoch)
        o.reset_states = 1 if reset_states else 0
        keep = [xa, ya, raw]
        if validation_data is not None:
            xv, yv = validation_data[0], validation_data[1]
            xva, xvp, xvr, xvs, xvd = _x(xv)
            yva, yvp, yvd, yvr, yvs = _y(yv)
            keep += [xva, yva, xvs, yvs]
            o.x_val, o.x_val_rank, o.x_val_shape, o.x_val_dtype = xvp, xvr, xvs, xvd
            o.y_val, o.y_val_dtype, o.y_val_rank, o.y_val_shape = yvp, yvd, yvr, yvs
        failure = []
        if callbacks:
            cbs = list(callbacks)

            def trampoline(user, m, event, epoch, batch, logs, n_logs):
                try:
                    base = ["loss"] + (self._metrics or [])
                    names = base + ["val_" + k for k in base]
                    d = {}
                    for i in range(n_logs):
                        k = _L.nnl_history_key(self._h, i)  # NULL before the first epoch ends
                        d[k.decode() if k else (names[i] if i < len(names) else "log_%d" % i)] = logs[i]
                    for cb in cbs:
                        cb.model = self
                        if event == 1:
                            cb.on_batch_end(int(batch), d)
                        else:
                            cb.on_epoch_end(int(epoch), d)
                    return 1 if self.stop_training else 0
                except BaseException as e:  # raised again after nnl_fit returns
                    failure.append(e)
                    return 1

            cfun = _lib.CALLBACK(trampoline)
            keep.append(cfun)
            o.callback = cfun
        self.stop_training = False
        before = _L.nnl_history_epochs(self.handle)
        _flush()
        status = _L.nnl_fit_typed(self.handle, xp, xd, xr, xs, yp, yd, yr, ys, ctypes.addressof(o))
        if failure:
            raise failure[0]
        _raise_for(status)
        after = _L.nnl_history_epochs(self.handle)
        hist = {}
        for i in range(_L.nnl_history_key_count(self.handle)):
            key = _L.nnl_history_key(self.handle, i)
            vals = (ctypes.c_double * max(after, 1))()
            _L.nnl_history_get(self.handle, key, vals, after)
            hist[key.decode()] = [float(v) for v in vals[before:after]]
        done = after - before
        return History(hist, list(range(int(initial_epoch), int(initial_epoch) + done)))

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False):
        """Loss (and metrics) over (x, y): a float when the model has no
        metrics, else [loss, metric...]; a dict with return_dict=True."""
        xa, xp, xr, xs, xd = _x(x)
        ya, yp, yd, yr, ys = _y(y)
        cap = 32
        out = (ctypes.c_double * cap)(*([float("nan")] * cap))
        _raise_for(_L.nnl_evaluate_typed(self.handle, xp, xd, xr, xs, yp, yd, yr, ys, int(batch_size or 32), out,
                                         cap))
        if self._metrics is not None:
            names = ["loss"] + self._metrics
        else:  # a loaded model: the history's keys, else as many values as were written
            keys = [_L.nnl_history_key(self.handle, i).decode() for i in range(_L.nnl_history_key_count(self.handle))]
            names = [k for k in keys if not k.startswith("val_")]
            if not names:
                n = max(i + 1 for i in range(cap) if out[i] == out[i]) if any(v == v for v in out) else 1
                names = ["loss"] + ["metric_%d" % i for i in range(1, n)]
        vals = [float(out[i]) for i in range(len(names))]
        if verbose:
            print(" - ".join("%s: %.4f" % (k, v) for k, v in zip(names, vals)))
        if return_dict:
            return dict(zip(names, vals))
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size=32, verbose=0):
        """Forward pass in inference mode: float32 array (n, output shape...).

        Since 0.5 several threads may call predict and predict_classes on one
        model at once (the library call runs without the GIL), while nothing
        changes the model (fit, compile, loading weights...); see nnlite.h,
        "Concurrent predictions"."""
        xa, xp, xr, xs, xd = _x(x)
        # a variable length (-1, Keras' None) is x's own
        steps = xa.shape[1] if xa.ndim > 1 else 1
        out = np.empty((xa.shape[0],) + tuple(steps if d == -1 else d for d in self._out_shape()), dtype=np.float32)
        _raise_for(_L.nnl_predict_typed(self.handle, xp, xd, xr, xs, int(batch_size or 32),
                                        out.ctypes.data_as(_lib.P_float), out.size))
        return out

    def predict_classes(self, x, batch_size=32):
        """argmax of each prediction (or > 0.5 for one sigmoid unit), int32."""
        xa, xp, xr, xs, xd = _x(x)
        out = np.empty((xa.shape[0],), dtype=np.int32)
        _raise_for(_L.nnl_predict_classes_typed(self.handle, xp, xd, xr, xs, int(batch_size or 32),
                                                out.ctypes.data_as(_lib.P_int32), out.size))
        return out

    def __call__(self, x):
        return self.predict(x)

    def plot_history(self, path):
        """Training curves as an SVG picture."""
        _raise_for(_L.nnl_plot_history(self.handle, _path(path)))

    # ---- files (nnlite's model files) ----
    def save(self, path):
        """Structure, weights, compile configuration and optimizer state (Keras' model.save).

        A path ending in .keras or .h5 writes Keras' own file instead (Keras 3
        .keras, tf.keras 2 .h5: architecture, weights, compile configuration
        and the optimizer's state as Keras' optimizer variables; needs nnlite
        built with HDF5)."""
        _raise_for(_need("nnl_save_model")(self.handle, _path(path)))

    def save_weights(self, path):
        """Weights only; a path ending in .npz writes a numpy archive."""
        fn = "nnl_save_weights_npz" if os.fspath(path).endswith(".npz") else "nnl_save_weights"
        _raise_for(_need(fn)(self.handle, _path(path)))

    def load_weights(self, path):
        """Weights into this (identically built) model; .npz as save_weights writes it."""
        fn = "nnl_load_weights_npz" if os.fspath(path).endswith(".npz") else "nnl_load_weights"
        _raise_for(_need(fn)(self.handle, _path(path)))

    def to_json(self):
        """The model's structure as JSON text (Keras' to_json)."""
        fn = _need("nnl_model_to_json")
        n = fn(self.handle, None, 0)
        if n < 0:
            _raise_for(errors.INTERNAL if not _L.nnl_last_error() else errors.ARGUMENT)
        buf = ctypes.create_string_buffer(int(n) + 1)
        if fn(self.handle, buf, n + 1) < 0:
            _raise_for(errors.ARGUMENT)
        return buf.value.decode()


def load_model(path):
    """A model saved by save(): structure, weights, compile state (Keras' load_model).

    Also Keras' own files, told by content: .keras (Keras 3) and .h5
    (tf.keras 2.x, Keras 2, Keras 3), compiled as the file says when nnlite
    can follow it, with the optimizer's state the file holds; needs nnlite
    built with HDF5."""
    h = ctypes.c_void_p()
    _raise_for(_need("nnl_load_model")(_path(path), ctypes.byref(h)))
    return Sequential._adopt(h.value)


def model_from_json(text):
    """A new, uncompiled model with fresh weights from to_json() text."""
    h = ctypes.c_void_p()
    if isinstance(text, str):
        text = text.encode()
    _raise_for(_need("nnl_model_from_json")(text, ctypes.byref(h)))
    return Sequential._adopt(h.value)
