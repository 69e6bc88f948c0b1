#!/usr/bin/env python3
"""UpSampling2D(interpolation='nearest') against PyTorch's
nn.Upsample(scale_factor=(sh, sw), mode='nearest'), written once into the
committed fixture tests/reference/upsampling_reference.npz, so the unit test
(tests/unit_conv.hpp, "UpSampling2D matches PyTorch nn.Upsample") runs where
PyTorch is absent. Regenerate (Debian python3-torch, python3-numpy):

    /usr/bin/python3 tests/reference/upsampling_reference.py

For case k the fixture holds
    c<k>_spec   the nnlite layer spec, as uint8 bytes
    c<k>_x      the input batch in the layer's data format (float32)
    c<k>_y      nn.Upsample's output, same data format
    c<k>_dy     a random upstream gradient
    c<k>_dx     dL/dx for L = sum(y * dy), from autograd
nn.Upsample works on (N, C, H, W); channels_last cases are permuted in and
out, which is what Keras' channels_last layout means.
"""
import os

import numpy as np
import torch

rng = np.random.default_rng(20261202)
HERE = os.path.dirname(os.path.abspath(__file__))

# (spec, channels_first, (sh, sw), (B, C, H, W))
CASES = [
    ("UpSampling2D()", False, (2, 2), (2, 3, 3, 4)),
    ("UpSampling2D(size=(2, 3), data_format='channels_first')", True, (2, 3), (2, 2, 3, 2)),
    ("UpSampling2D(3)", False, (3, 3), (1, 2, 2, 3)),
    ("UpSampling2D(size=(1, 2), data_format='channels_last', interpolation='nearest')", False, (1, 2), (3, 1, 4, 2)),
]

out = {}
for k, (spec, cf, (sh, sw), (B, C, H, W)) in enumerate(CASES):
    xcf = torch.tensor(rng.uniform(-1, 1, size=(B, C, H, W)), dtype=torch.float64, requires_grad=True)
    up = torch.nn.Upsample(scale_factor=(sh, sw), mode="nearest")
    ycf = up(xcf)
    dycf = torch.tensor(rng.uniform(-1, 1, size=tuple(ycf.shape)), dtype=torch.float64)
    (ycf * dycf).sum().backward()
    lay = (lambda t: t) if cf else (lambda t: t.permute(0, 2, 3, 1))
    out["c%d_spec" % k] = np.frombuffer(spec.encode(), dtype=np.uint8)
    for key, t in (("x", xcf), ("y", ycf), ("dy", dycf), ("dx", xcf.grad)):
        out["c%d_%s" % (k, key)] = lay(t.detach()).contiguous().numpy().astype(np.float32)
out["cases"] = np.array([len(CASES)], dtype=np.int64)
np.savez(os.path.join(HERE, "upsampling_reference.npz"), **out)
print("wrote %d cases" % len(CASES))
