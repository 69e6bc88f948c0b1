"""Keras-style layer objects. Each renders to the nnlite spec string that
nnl_add() parses, e.g. Dense(128, activation="relu") -> "Dense(128,
activation='relu')". Arguments are Keras' (names, defaults); nnlite checks
them when the layer is added and raises nnlite.ArgumentError naming any it
does not know.

Every layer kind of nnlite's registry has a class here; Layer("Kind", ...)
builds any other spec (e.g. a layer added by a newer library)."""

import numbers


def render(value):
    """A Python value in nnlite's call syntax."""
    if value is None:
        return "None"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, str):
        # spec strings have no escapes: a string is quoted with the quote it
        # does not hold, so kernel_initializer="VarianceScaling(mode='fan_out')" works
        if "\\" in value or ("'" in value and '"' in value):
            raise ValueError("nnlite: a spec string may not contain backslashes, or both kinds of quote: %r" % value)
        return '"%s"' % value if "'" in value else "'%s'" % value
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, Layer):  # a wrapped layer: Bidirectional(LSTM(8))
        return value.spec()
    if isinstance(value, (tuple, list)):
        return "(" + "".join(render(v) + "," for v in value) + ")"
    raise TypeError("nnlite: cannot pass %r (%s) in a layer spec" % (value, type(value).__name__))


class Layer:
    """A layer spec: kind, positional and keyword arguments."""

    def __init__(self, kind, *args, **kwargs):
        self.kind = kind
        self.args = args
        self.kwargs = kwargs

    def spec(self):
        parts = [render(a) for a in self.args]
        parts += ["%s=%s" % (k, render(v)) for k, v in self.kwargs.items()]
        return "%s(%s)" % (self.kind, ", ".join(parts))

    @property
    def name(self):
        return self.kwargs.get("name")

    def __repr__(self):
        return "nnlite.layers." + self.spec()


def _kind(kind, doc):
    def __init__(self, *args, **kwargs):
        Layer.__init__(self, kind, *args, **kwargs)

    return type(kind, (Layer,), {"__init__": __init__, "__doc__": doc})


Input = _kind("Input", "Input(shape=(...)): declares the per-sample input shape.")
InputLayer = Input
Dense = _kind("Dense", "Dense(units, activation=None, use_bias=True, kernel_initializer='glorot_uniform', "
                       "bias_initializer='zeros', input_shape=None)")
Activation = _kind("Activation", "Activation(activation)")
Dropout = _kind("Dropout", "Dropout(rate, seed=None): inverted dropout, active in fit only")
Flatten = _kind("Flatten", "Flatten()")
Reshape = _kind("Reshape", "Reshape(target_shape): one entry may be -1")
Conv1D = _kind("Conv1D", "Conv1D(filters, kernel_size, strides=1, padding='valid', dilation_rate=1, activation=None, ...)")
Conv2D = _kind("Conv2D", "Conv2D(filters, kernel_size, strides=(1,1), padding='valid', ...)")
Conv3D = _kind("Conv3D", "Conv3D(filters, kernel_size, strides=(1,1,1), padding='valid', ...)")
MaxPooling1D = _kind("MaxPooling1D", "MaxPooling1D(pool_size=2, strides=None, padding='valid')")
MaxPooling2D = _kind("MaxPooling2D", "MaxPooling2D(pool_size=(2,2), strides=None, padding='valid')")
MaxPooling3D = _kind("MaxPooling3D", "MaxPooling3D(pool_size=(2,2,2), strides=None, padding='valid')")
AveragePooling1D = _kind("AveragePooling1D", "AveragePooling1D(pool_size=2, strides=None, padding='valid')")
AveragePooling2D = _kind("AveragePooling2D", "AveragePooling2D(pool_size=(2,2), strides=None, padding='valid')")
AveragePooling3D = _kind("AveragePooling3D", "AveragePooling3D(pool_size=(2,2,2), strides=None, padding='valid')")
GlobalAveragePooling1D = _kind("GlobalAveragePooling1D", "GlobalAveragePooling1D()")
GlobalAveragePooling2D = _kind("GlobalAveragePooling2D", "GlobalAveragePooling2D()")
GlobalAveragePooling3D = _kind("GlobalAveragePooling3D", "GlobalAveragePooling3D()")
GlobalMaxPooling1D = _kind("GlobalMaxPooling1D", "GlobalMaxPooling1D()")
GlobalMaxPooling2D = _kind("GlobalMaxPooling2D", "GlobalMaxPooling2D()")
GlobalMaxPooling3D = _kind("GlobalMaxPooling3D", "GlobalMaxPooling3D()")
BatchNormalization = _kind("BatchNormalization", "BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, ...)")
ZeroPadding2D = _kind("ZeroPadding2D", "ZeroPadding2D(padding=(1,1))")
UpSampling2D = _kind("UpSampling2D", "UpSampling2D(size=(2,2))")
Embedding = _kind("Embedding", "Embedding(input_dim, output_dim, embeddings_initializer='uniform', "
                  "mask_zero=False, input_length=None): integer ids (T,) -> (T, output_dim)")
Masking = _kind("Masking", "Masking(mask_value=0.0): masks the steps of (timesteps, features) whose features all "
                "equal mask_value")
SimpleRNN = _kind("SimpleRNN", "SimpleRNN(units, activation='tanh', use_bias=True, dropout=0.0, "
                  "recurrent_dropout=0.0, return_sequences=False, go_backwards=False, stateful=False, ...): "
                  "inputs (timesteps, features)")
LSTM = _kind("LSTM", "LSTM(units, activation='tanh', recurrent_activation='sigmoid', use_bias=True, "
             "unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, return_sequences=False, "
             "go_backwards=False, stateful=False, ...)")
GRU = _kind("GRU", "GRU(units, activation='tanh', recurrent_activation='sigmoid', use_bias=True, "
            "dropout=0.0, recurrent_dropout=0.0, return_sequences=False, go_backwards=False, stateful=False, "
            "reset_after=True, ...)")
Bidirectional = _kind("Bidirectional", "Bidirectional(layer, merge_mode='concat'): layer a SimpleRNN, LSTM or GRU "
                      "object; merge_mode 'concat', 'sum', 'mul' or 'ave'; takes a step mask (Masking, "
                      "Embedding(mask_zero=True)) and variable-length input_shape=(None, F)")


def TimeDistributed(layer, **kwargs):
    """Keras' TimeDistributed(Dense(...)): that Dense, which acts on every step
    of a (timesteps, features) input already (other layers are refused)."""
    return Layer("TimeDistributed", layer, **kwargs)


# Keras' other names (nnlite.h lists the same; the unit tests check both
# against the library's alias table)
Convolution1D = Conv1D
Convolution2D = Conv2D
Convolution3D = Conv3D
MaxPool1D = MaxPooling1D
MaxPool2D = MaxPooling2D
MaxPool3D = MaxPooling3D
AvgPool1D = AveragePooling1D
AvgPool2D = AveragePooling2D
AvgPool3D = AveragePooling3D
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalAvgPool3D = GlobalAveragePooling3D
GlobalMaxPool1D = GlobalMaxPooling1D
GlobalMaxPool2D = GlobalMaxPooling2D
GlobalMaxPool3D = GlobalMaxPooling3D

# The kinds of nnlite's layer registry (nnlite.cpp, layer_registry()); the
# tests check this list against the library, and the unit tests check it,
# the classes above, nnlite.h and README.md against the registry.
KINDS = ("Dense", "Activation", "Dropout", "Flatten", "Reshape", "Conv1D", "Conv2D", "Conv3D",
         "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
         "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
         "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "BatchNormalization",
         "ZeroPadding2D", "UpSampling2D", "Embedding", "Masking", "SimpleRNN", "LSTM", "GRU", "Bidirectional")
