"""Keras-style optimizer objects rendering to nnlite's spec strings:
nnlite.optimizers.Adam(learning_rate=1e-3) -> "Adam(learning_rate=0.001)".
compile() also takes the spec strings themselves ("adam", "SGD(0.01)")."""
from .layers import Layer


def _kind(kind):
    def __init__(self, *args, **kwargs):
        Layer.__init__(self, kind, *args, **kwargs)

    return type(kind, (Layer,), {"__init__": __init__,
                                 "__doc__": "%s(...): nnlite's %s (Keras' arguments; see nnlite.h)" % (kind, kind)})


SGD = _kind("SGD")
RMSprop = _kind("RMSprop")
Adagrad = _kind("Adagrad")
Adadelta = _kind("Adadelta")
Adam = _kind("Adam")
AdamW = _kind("AdamW")
Adamax = _kind("Adamax")
Nadam = _kind("Nadam")
