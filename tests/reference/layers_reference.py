#!/usr/bin/env python3
"""Reference outputs and gradients of nnlite's convolution-family layers,
computed with PyTorch (Debian python3-torch) on random inputs.

    layers_reference.py OUTDIR

writes OUTDIR/cases.txt (one line per case: name <TAB> nnlite layer spec
<TAB> training 0/1) and OUTDIR/<name>.npz holding
    x       the input batch, in the layer's own data format
    w0..    the layer's weights in Keras' layout and order
    dy      a random upstream gradient
    y       the layer's output
    dx      dL/dx for L = sum(y * dy)
    gw0..   dL/dw for each trainable weight, same order
    mw0..   (batch norm, training) the moving statistics after the step
The unit test (tests/unit_conv.hpp) runs this script when torch is present,
feeds the same x, weights and dy through nnlite and compares.

PyTorch has no TensorFlow-style asymmetric 'same' padding for strided
windows, nor causal padding: the script pads explicitly (F.pad) with the
amounts TensorFlow uses, so the reference is TensorFlow's/Keras' semantics.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
rng = np.random.default_rng(1234)
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
cases = []


def tf_pads(size, k, s, d, padding):
    """(before, after) padding of one axis, as TensorFlow computes it."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return span - 1, 0
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return total // 2, total - total // 2


def to_cf(x, nd):  # channels-last (B, ..., C) -> channels-first (B, C, ...)
    return x.permute(0, nd + 1, *range(1, nd + 1))


def to_cl(x, nd):
    return x.permute(0, *range(2, nd + 2), 1)


def pad_spatial(x, pads, value=0.0):
    """x channels-first; pads per spatial axis in order (first axis first)."""
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    return F.pad(x, flat, value=value)


def save(name, spec, training, x, weights, fn, extra=None):
    """Runs fn(x, *weights) with autograd and writes the case."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in weights]
    y = fn(xt, *wt)
    dy = rng.uniform(-1, 1, size=tuple(y.shape))
    (y * torch.tensor(dy)).sum().backward()
    arrays = {"x": x, "dy": dy, "y": y.detach().numpy(), "dx": xt.grad.numpy()}
    for i, (w, t) in enumerate(zip(weights, wt)):
        arrays["w%d" % i] = w
        if t.grad is not None:
            arrays["gw%d" % i] = t.grad.numpy()
    if extra:
        arrays.update(extra(x))
    np.savez(os.path.join(OUT, name + ".npz"), **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    cases.append((name, spec, int(training)))


def conv_case(name, nd, cin, size, filters, k, s=1, d=1, padding="valid", cf=False, act=None, bias=True, B=2):
    ks = (k,) * nd if isinstance(k, int) else k
    ss = (s,) * nd if isinstance(s, int) else s
    ds = (d,) * nd if isinstance(d, int) else d
    spatial = (size,) * nd if isinstance(size, int) else size
    shape = (B, cin) + spatial if cf else (B,) + spatial + (cin,)
    x = rng.uniform(-1, 1, size=shape)
    kern = rng.uniform(-0.5, 0.5, size=ks + (cin, filters))
    weights = [kern] + ([rng.uniform(-0.5, 0.5, size=(filters,))] if bias else [])
    conv = [F.conv1d, F.conv2d, F.conv3d][nd - 1]

    def fn(xt, kt, *bt):
        xc = xt if cf else to_cf(xt, nd)
        pads = [tf_pads(spatial[i], ks[i], ss[i], ds[i], padding) for i in range(nd)]
        xc = pad_spatial(xc, pads)
        w = kt.permute(nd + 1, nd, *range(nd))  # (k..., in, out) -> (out, in, k...)
        y = conv(xc, w, bt[0] if bt else None, stride=ss, dilation=ds)
        if act == "relu":
            y = torch.relu(y)
        elif act == "tanh":
            y = torch.tanh(y)
        return y if cf else to_cl(y, nd)

    tup = lambda v: "(%s)" % ", ".join(str(i) for i in v) if nd > 1 else "%d" % v[0]
    spec = "Conv%dD(%d, %s, strides=%s, padding='%s', dilation_rate=%s, use_bias=%s%s%s)" % (
        nd, filters, tup(ks), tup(ss), padding, tup(ds), "True" if bias else "False",
        ", activation='%s'" % act if act else "", ", data_format='channels_first'" if cf else "")
    save(name, spec, False, x, weights, fn)


def pool_case(name, nd, kind, c, size, p, s=None, padding="valid", cf=False, B=2):
    ps = (p,) * nd if isinstance(p, int) else p
    ss = ps if s is None else ((s,) * nd if isinstance(s, int) else s)
    spatial = (size,) * nd if isinstance(size, int) else size
    shape = (B, c) + spatial if cf else (B,) + spatial + (c,)
    # distinct values: no ties inside a window
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 1.0
    mp = [F.max_pool1d, F.max_pool2d, F.max_pool3d][nd - 1]
    ap = [F.avg_pool1d, F.avg_pool2d, F.avg_pool3d][nd - 1]

    def fn(xt):
        xc = xt if cf else to_cf(xt, nd)
        pads = [tf_pads(spatial[i], ps[i], ss[i], 1, padding) for i in range(nd)]
        if kind == "max":
            y = mp(pad_spatial(xc, pads, value=-float("inf")), ps, ss)
        else:  # TensorFlow averages over the unpadded entries only
            ones = torch.ones_like(xc)
            y = ap(pad_spatial(xc, pads), ps, ss) / ap(pad_spatial(ones, pads), ps, ss)
        return y if cf else to_cl(y, nd)

    tup = lambda v: "(%s)" % ", ".join(str(i) for i in v) if nd > 1 else "%d" % v[0]
    cls = ("MaxPooling%dD" if kind == "max" else "AveragePooling%dD") % nd
    spec = "%s(pool_size=%s, strides=%s, padding='%s'%s)" % (
        cls, tup(ps), tup(ss), padding, ", data_format='channels_first'" if cf else "")
    save(name, spec, False, x, [], fn)


def global_case(name, nd, kind, c, size, cf=False, B=2):
    spatial = (size,) * nd
    shape = (B, c) + spatial if cf else (B,) + spatial + (c,)
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 1.0
    axes = tuple(range(2, nd + 2)) if cf else tuple(range(1, nd + 1))

    def fn(xt):
        return xt.amax(dim=axes) if kind == "max" else xt.mean(dim=axes)

    cls = ("GlobalMaxPooling%dD" if kind == "max" else "GlobalAveragePooling%dD") % nd
    save(name, "%s(%s)" % (cls, "data_format='channels_first'" if cf else ""), False, x, [], fn)


def bn_case(name, shape, axis, training, momentum=0.9, eps=1e-3):
    x = rng.normal(0.5, 2.0, size=shape)
    C = shape[axis]
    gamma = rng.uniform(0.5, 1.5, size=(C,))
    beta = rng.uniform(-0.5, 0.5, size=(C,))
    mmean = rng.uniform(-0.5, 0.5, size=(C,))
    mvar = rng.uniform(0.5, 1.5, size=(C,))
    red = tuple(i for i in range(len(shape)) if i != axis)
    bshape = [1] * len(shape)
    bshape[axis] = C

    def fn(xt, g, b, mm, mv):
        if training:
            mean = xt.mean(dim=red, keepdim=True)
            var = ((xt - mean) ** 2).mean(dim=red, keepdim=True)  # biased, as Keras
        else:
            mean, var = mm.reshape(bshape), mv.reshape(bshape)
        return (xt - mean) / torch.sqrt(var + eps) * g.reshape(bshape) + b.reshape(bshape)

    def moving(xv):
        if not training:
            return {"mw2": mmean, "mw3": mvar}
        return {"mw2": mmean * momentum + xv.mean(axis=red) * (1 - momentum),
                "mw3": mvar * momentum + xv.var(axis=red) * (1 - momentum)}

    spec = "BatchNormalization(axis=%d, momentum=%g, epsilon=%g)" % (axis, momentum, eps)
    save(name, spec, training, x, [gamma, beta, mmean, mvar], fn, extra=moving)


def zeropad_case(name, c, h, w, pad, cf=False, B=2):
    shape = (B, c, h, w) if cf else (B, h, w, c)
    x = rng.uniform(-1, 1, size=shape)
    (t, b), (l, r) = pad

    def fn(xt):
        xc = xt if cf else to_cf(xt, 2)
        y = F.pad(xc, [l, r, t, b])
        return y if cf else to_cl(y, 2)

    spec = "ZeroPadding2D(padding=((%d, %d), (%d, %d))%s)" % (t, b, l, r, ", data_format='channels_first'" if cf else "")
    save(name, spec, False, x, [], fn)


def upsample_case(name, c, h, w, size, cf=False, B=2):
    shape = (B, c, h, w) if cf else (B, h, w, c)
    x = rng.uniform(-1, 1, size=shape)

    def fn(xt):
        xc = xt if cf else to_cf(xt, 2)
        y = xc.repeat_interleave(size[0], dim=2).repeat_interleave(size[1], dim=3)
        return y if cf else to_cl(y, 2)

    spec = "UpSampling2D(size=(%d, %d)%s)" % (size[0], size[1], ", data_format='channels_first'" if cf else "")
    save(name, spec, False, x, [], fn)


for cf in (False, True):
    t = "_cf" if cf else ""
    conv_case("conv1d_valid" + t, 1, 3, 17, 4, 5, cf=cf)
    conv_case("conv1d_same_s3" + t, 1, 2, 16, 3, 4, s=3, padding="same", cf=cf, act="relu")
    conv_case("conv1d_causal_d2" + t, 1, 2, 12, 3, 3, d=2, padding="causal", cf=cf)
    conv_case("conv2d_valid" + t, 2, 3, 9, 5, 3, cf=cf, act="tanh")
    conv_case("conv2d_same_s2" + t, 2, 2, (8, 7), 4, (3, 2), s=2, padding="same", cf=cf)
    conv_case("conv2d_same_d2" + t, 2, 3, 8, 2, 3, d=2, padding="same", cf=cf, bias=False)
    conv_case("conv2d_1x1" + t, 2, 6, 5, 4, 1, cf=cf)
    conv_case("conv3d_valid" + t, 3, 2, (5, 6, 7), 3, (3, 3, 2), cf=cf)
    conv_case("conv3d_same_s2" + t, 3, 2, 6, 2, 3, s=(1, 2, 2), padding="same", cf=cf)
    # one input channel (a first convolution: nnlite's kernels without im2col)
    conv_case("conv2d_c1_valid" + t, 2, 1, 12, 20, 5, cf=cf, act="tanh", B=3)
    conv_case("conv2d_c1_same_s2" + t, 2, 1, (9, 8), 33, 3, s=2, padding="same", cf=cf, act="relu")
    conv_case("conv1d_c1_causal_d2" + t, 1, 1, 20, 9, 4, d=2, padding="causal", cf=cf)
    pool_case("maxpool1d" + t, 1, "max", 3, 11, 3, cf=cf)
    pool_case("maxpool2d" + t, 2, "max", 3, 8, 2, cf=cf)
    pool_case("maxpool2d_same" + t, 2, "max", 2, 7, 3, s=2, padding="same", cf=cf)
    pool_case("avgpool2d_same" + t, 2, "avg", 2, 7, 3, s=2, padding="same", cf=cf)
    pool_case("avgpool1d" + t, 1, "avg", 2, 10, 2, cf=cf)
    pool_case("maxpool3d" + t, 3, "max", 2, 4, 2, cf=cf)
    pool_case("avgpool3d_same" + t, 3, "avg", 2, 5, 2, padding="same", cf=cf)
    global_case("gap1d" + t, 1, "avg", 3, 6, cf=cf)
    global_case("gmp2d" + t, 2, "max", 3, 4, cf=cf)
    global_case("gap2d" + t, 2, "avg", 4, 3, cf=cf)
    zeropad_case("zeropad2d" + t, 3, 4, 5, ((1, 2), (0, 3)), cf=cf)
    upsample_case("upsample2d" + t, 3, 3, 4, (2, 3), cf=cf)
bn_case("bn_dense_train", (6, 5), 1, True)
bn_case("bn_dense_infer", (6, 5), 1, False)
bn_case("bn_cl_train", (3, 4, 5, 6), 3, True)
bn_case("bn_cf_train", (3, 6, 4, 5), 1, True)
bn_case("bn_cf_infer", (3, 6, 4, 5), 1, False)

with open(os.path.join(OUT, "cases.txt"), "w") as f:
    for name, spec, training in cases:
        f.write("%s\t%s\t%d\n" % (name, spec, training))
print("wrote %d cases to %s" % (len(cases), OUT))
