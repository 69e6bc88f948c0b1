#!/usr/bin/python3
"""Whole-model reference fixture for tests/unit_reference.hpp (llm.c's
test_gpt2 idea): one small CNN, one batch, computed once with PyTorch in
float64 and committed, so the test needs no PyTorch.

    /usr/bin/python3 tests/reference/model_reference.py [OUT.npz]

writes tests/reference/model_reference.npz by default (Debian python3-torch
and python3-numpy; the output is deterministic: fixed seeds, float64 math).

THE MODEL (Keras channels-last semantics, as nnlite builds it)
    Input(shape=(8, 8, 2))
    Conv2D(4, 3, activation='relu')        -> (6, 6, 4)
    BatchNormalization()                   momentum 0.99, epsilon 1e-3
    MaxPooling2D(2)                        -> (3, 3, 4)
    Dropout(0.0)                           see below
    Flatten()                              -> 36, in (h, w, c) order
    Dense(8, activation='relu')
    Dense(3, activation='softmax')
    loss sparse_categorical_crossentropy, batch of B = 5 samples

Dropout is present with rate 0: Keras 3's Dropout.call applies a mask only
when `training and rate > 0`, and nnlite's Dropout copies its input when
rate == 0, so in training (fit) the layer is the identity in both, while it
still takes its place in nnlite's activation arena and passes the gradient
through. A layer with rate > 0 cannot be "inactive" here: nnl_fit always
trains with dropout on, and its random mask cannot be reproduced in PyTorch.

The rules computed here are Keras 3's (keras/src/...), which nnlite
implements (nnlite.cpp sections 3-5), NOT PyTorch's defaults:
  - BatchNormalization in training normalises with the batch mean and the
    BIASED batch variance over (batch, h, w) per channel, epsilon 1e-3
    inside the square root, and moves the statistics as
        moving_mean     = moving_mean * 0.99 + mean * 0.01
        moving_variance = moving_variance * 0.99 + var * 0.01
    with the same biased variance (Keras 3: ops.moments; the layer's
    docstring gives both formulas). torch.nn.BatchNorm2d / F.batch_norm
    would use momentum 0.1, eps 1e-5 and the UNBIASED variance for its
    running_var, so BN is written out by hand (and checked against
    F.batch_norm's normalised output below).
  - sparse categorical cross-entropy of a softmax output: Keras computes it
    from the logits (log-softmax), mean over the batch. Keras' probability
    clipping to [1e-7, 1 - 1e-7] would agree; the script asserts that no
    probability comes near the clip along any trajectory.
  - SGD(learning_rate=0.02, momentum=0.9): v = 0.9 v - lr g; w += v.
  - Adam(learning_rate=0.01) (beta_1 0.9, beta_2 0.999, epsilon 1e-7):
        m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2)
        alpha = lr sqrt(1 - b2^t) / (1 - b1^t);  w -= alpha m / (sqrt(v) + eps)
    (torch.optim.Adam adds eps to sqrt(v / (1 - b2^t)) instead; with eps
    rescaled per step it gives Keras' rule, which is the cross-check below.)
  - fit with one batch per epoch and no shuffling: the history's loss of
    epoch k is the loss of the forward pass before update k + 1; the BN
    moving statistics move once per step (in that forward pass).

Inputs and initial weights are drawn in float64, rounded to float32 (what
nnlite holds) and computed with in float64 from there: the fixture is the
float64 answer for the float32 starting point, so the test's differences
are nnlite's float32 arithmetic alone.

FIXTURE KEYS (float reference values are stored as float64)
  arr_0 .. arr_9    initial weights, float32, Keras get_weights() order and
                    layouts: conv kernel (3,3,2,4), conv bias, BN gamma,
                    beta, moving_mean, moving_variance, dense kernel (36,8),
                    bias, dense_1 kernel (8,3), bias. np.savez's names, so
                    nnl_load_weights_npz (and Keras' set_weights) take them.
  x (5,8,8,2) float32, y (5,) int64
  spec_layers, spec_loss, spec_sgd, spec_adam   the nnlite spec strings the
                    test builds from, as uint8 bytes (layers one per line)
  loss              mean loss of the batch at the initial weights (training)
  grad_I            dloss/d arr_I for every trainable tensor I (all but the
                    moving statistics, I = 4, 5), Keras layout
  bn_mean_1, bn_var_1   BN moving mean / variance after that one forward pass
  sgd_losses, adam_losses (10,)   per-epoch history losses of 10 steps
  sgd_w_I, adam_w_I every tensor after the 10 steps (I = 4, 5: the moving
                    statistics after 10 forward passes)
"""
import io
import math
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
B, H, W, CIN = 5, 8, 8, 2
FILTERS, UNITS, CLASSES = 4, 8, 3
BN_MOMENTUM, BN_EPS = 0.99, 1e-3
STEPS = 10
SGD_LR, SGD_MOMENTUM = 0.02, 0.9
ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 0.01, 0.9, 0.999, 1e-7

SPEC_LAYERS = "\n".join([
    "Input(shape=(8, 8, 2))",
    "Conv2D(4, 3, activation='relu')",
    "BatchNormalization()",
    "MaxPooling2D(2)",
    "Dropout(0.0)",
    "Flatten()",
    "Dense(8, activation='relu')",
    "Dense(3, activation='softmax')",
])
SPEC_LOSS = "sparse_categorical_crossentropy"
SPEC_SGD = "SGD(learning_rate=%r, momentum=%r)" % (SGD_LR, SGD_MOMENTUM)
SPEC_ADAM = "Adam(learning_rate=%r)" % ADAM_LR

TRAINABLE = [0, 1, 2, 3, 6, 7, 8, 9]  # get_weights() indices; 4, 5: moving statistics
MOVING_MEAN, MOVING_VAR = 4, 5


def f32(a):
    return np.asarray(a, dtype=np.float64).astype(np.float32)


def initial_data():
    """Random, not Keras' default initialisers: every tensor (BN's too) has
    distinct nonzero values, so a swapped or transposed tensor shows."""
    rng = np.random.default_rng(20261123)
    # channels with different statistics: a channel mix-up changes the answer
    x = rng.normal(0.0, 1.0, (B, H, W, CIN)) * np.array([1.0, 0.5]) + np.array([0.2, -0.3])
    y = np.array([0, 2, 1, 2, 0], dtype=np.int64)
    ws = [
        rng.uniform(-0.45, 0.45, (3, 3, CIN, FILTERS)),  # conv kernel (kh, kw, in, out)
        rng.uniform(-0.1, 0.1, (FILTERS,)),               # conv bias
        rng.uniform(0.6, 1.4, (FILTERS,)) * np.array([1, -1, 1, 1]),  # gamma, one negative
        rng.uniform(-0.3, 0.3, (FILTERS,)),               # beta
        rng.uniform(0.0, 0.5, (FILTERS,)),                # moving_mean
        rng.uniform(0.5, 1.5, (FILTERS,)),                # moving_variance
        rng.uniform(-0.37, 0.37, (36, UNITS)),            # dense kernel, rows in (h, w, c) order
        rng.uniform(-0.1, 0.1, (UNITS,)),                 # dense bias
        rng.uniform(-0.7, 0.7, (UNITS, CLASSES)),         # dense_1 kernel
        rng.uniform(-0.1, 0.1, (CLASSES,)),               # dense_1 bias
    ]
    return f32(x), y, [f32(w) for w in ws]


def forward(x, ws):
    """Training-mode forward pass. x (B, 8, 8, 2) channels-last, ws the 10
    tensors (torch, float64, Keras layouts). Returns (logits, batch mean,
    batch biased variance)."""
    k, kb, gamma, beta, _, _, d1, d1b, d2, d2b = ws
    h = x.permute(0, 3, 1, 2)                                   # NHWC -> NCHW for conv2d
    h = F.conv2d(h, k.permute(3, 2, 0, 1), kb)                  # (kh,kw,in,out) -> (out,in,kh,kw); valid, stride 1
    h = torch.relu(h)                                           # (B, 4, 6, 6)
    mean = h.mean(dim=(0, 2, 3))
    var = ((h - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))  # biased
    h = (h - mean[None, :, None, None]) / torch.sqrt(var + BN_EPS)[None, :, None, None]
    h = h * gamma[None, :, None, None] + beta[None, :, None, None]
    h = F.max_pool2d(h, 2)                                      # (B, 4, 3, 3); Dropout(0.0): identity
    h = h.permute(0, 2, 3, 1).reshape(x.shape[0], -1)           # Keras' Flatten: (h, w, c) order
    h = torch.relu(h @ d1 + d1b)
    return h @ d2 + d2b, mean, var


def loss_of(logits, y):
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    # Keras clips probabilities to [1e-7, 1 - 1e-7]; stay far from it so that
    # the logits form (nnlite's fused softmax + cross-entropy) is the same loss
    assert p.min().item() > 1e-6 and p.max().item() < 1 - 1e-6, "probabilities near Keras' clip"
    return -logp[torch.arange(len(y)), torch.as_tensor(y)].mean()


def loss_and_grads(x, y, ws_np):
    """(loss, gradients of the trainable tensors by index, batch mean, var)."""
    ws = [torch.tensor(w, dtype=torch.float64, requires_grad=i in TRAINABLE) for i, w in enumerate(ws_np)]
    logits, mean, var = forward(torch.tensor(x, dtype=torch.float64), ws)
    loss = loss_of(logits, y)
    loss.backward()
    return loss.item(), {i: ws[i].grad.numpy().copy() for i in TRAINABLE}, mean.detach().numpy(), var.detach().numpy()


def move_bn(ws, mean, var):
    ws[MOVING_MEAN] = ws[MOVING_MEAN] * BN_MOMENTUM + mean * (1 - BN_MOMENTUM)
    ws[MOVING_VAR] = ws[MOVING_VAR] * BN_MOMENTUM + var * (1 - BN_MOMENTUM)


def train(x, y, ws0, rule):
    """STEPS steps of fit on one batch with the Keras update `rule`
    (rule(t, i, w, g, state) -> new w); returns the per-step losses and all
    tensors after the last step."""
    ws = [w.astype(np.float64) for w in ws0]
    state = {}
    losses = []
    for t in range(1, STEPS + 1):
        loss, gs, mean, var = loss_and_grads(x, y, ws)
        losses.append(loss)
        move_bn(ws, mean, var)
        for i in TRAINABLE:
            ws[i] = rule(t, i, ws[i], gs[i], state)
    return np.array(losses), ws


def keras_sgd(t, i, w, g, state):
    v = state.get(i, np.zeros_like(w))
    v = SGD_MOMENTUM * v - SGD_LR * g
    state[i] = v
    return w + v


def keras_adam(t, i, w, g, state):
    m, v = state.get(i, (np.zeros_like(w), np.zeros_like(w)))
    m = m + (g - m) * (1 - ADAM_B1)
    v = v + (g * g - v) * (1 - ADAM_B2)
    state[i] = (m, v)
    alpha = ADAM_LR * math.sqrt(1 - ADAM_B2 ** t) / (1 - ADAM_B1 ** t)
    return w - alpha * m / (np.sqrt(v) + ADAM_EPS)


def torch_optim_trajectory(x, y, ws0, make_opt, per_step=None):
    """The same training with a torch.optim optimizer (independent code)."""
    ws = [torch.tensor(w, dtype=torch.float64, requires_grad=i in TRAINABLE) for i, w in enumerate(ws0)]
    opt = make_opt([ws[i] for i in TRAINABLE])
    xt = torch.tensor(x, dtype=torch.float64)
    losses = []
    for t in range(1, STEPS + 1):
        opt.zero_grad()
        logits, mean, var = forward(xt, ws)
        loss = loss_of(logits, y)
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            ws[MOVING_MEAN].mul_(BN_MOMENTUM).add_(mean * (1 - BN_MOMENTUM))
            ws[MOVING_VAR].mul_(BN_MOMENTUM).add_(var * (1 - BN_MOMENTUM))
        if per_step:
            per_step(opt, t)
        opt.step()
    return np.array(losses), [w.detach().numpy() for w in ws]


def cross_checks(x, y, ws0, sgd, adam):
    worst = lambda a, b: max(np.max(np.abs(np.asarray(p) - np.asarray(q))) for p, q in zip(a, b))
    # BN by hand normalises as F.batch_norm does (its running_var differs: unbiased)
    h = torch.relu(F.conv2d(torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2),
                            torch.tensor(ws0[0], dtype=torch.float64).permute(3, 2, 0, 1),
                            torch.tensor(ws0[1], dtype=torch.float64)))
    g, b = (torch.tensor(ws0[i], dtype=torch.float64) for i in (2, 3))
    ref = F.batch_norm(h, None, None, g, b, training=True, eps=BN_EPS)
    m, v = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=False)
    mine = (h - m[None, :, None, None]) / torch.sqrt(v + BN_EPS)[None, :, None, None] * g[None, :, None, None] \
        + b[None, :, None, None]
    assert torch.max(torch.abs(ref - mine)).item() < 1e-12
    # ... while its running_var moves with the unbiased variance, which Keras' moving_variance does not
    rm, rv = torch.zeros(FILTERS), torch.ones(FILTERS)
    F.batch_norm(h, rm, rv, g, b, training=True, momentum=1 - BN_MOMENTUM, eps=BN_EPS)
    n = h.numel() // FILTERS
    assert torch.max(torch.abs(rv - (BN_MOMENTUM + (1 - BN_MOMENTUM) * v * n / (n - 1)))).item() < 1e-12
    # Keras' SGD (v = m v - lr g; w += v) is torch's (buf = m buf + g; w -= lr buf) for a fixed lr
    l2, w2 = torch_optim_trajectory(x, y, ws0, lambda p: torch.optim.SGD(p, lr=SGD_LR, momentum=SGD_MOMENTUM))
    assert worst([sgd[0]], [l2]) < 1e-12 and worst(sgd[1], w2) < 1e-12, "SGD: Keras rule != torch.optim.SGD"

    # torch's Adam divides by sqrt(v / (1 - b2^t)) + eps': eps' = eps / sqrt(1 - b2^t) gives Keras' rule
    def adam_eps(opt, t):
        for group in opt.param_groups:
            group["eps"] = ADAM_EPS / math.sqrt(1 - ADAM_B2 ** t)

    l3, w3 = torch_optim_trajectory(
        x, y, ws0, lambda p: torch.optim.Adam(p, lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS), adam_eps)
    assert worst([adam[0]], [l3]) < 1e-12 and worst(adam[1], w3) < 1e-12, "Adam: Keras rule != torch.optim.Adam"


def text(s):
    return np.frombuffer(s.encode(), dtype=np.uint8)


def savez(path, arrays):
    """np.savez's layout (stored .npy members), with fixed member dates so
    that regenerating gives the same bytes: `git status` then shows whether
    the committed fixture is this script's output."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for key, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else __file__.rsplit("/", 1)[0] + "/model_reference.npz"
    x, y, ws0 = initial_data()
    loss, grads, mean, var = loss_and_grads(x, y, ws0)
    bn = [w.astype(np.float64) for w in ws0]
    move_bn(bn, mean, var)
    sgd = train(x, y, ws0, keras_sgd)
    adam = train(x, y, ws0, keras_adam)
    cross_checks(x, y, ws0, sgd, adam)

    arrays = {"arr_%d" % i: w for i, w in enumerate(ws0)}
    arrays.update(x=x, y=y, spec_layers=text(SPEC_LAYERS), spec_loss=text(SPEC_LOSS), spec_sgd=text(SPEC_SGD),
                  spec_adam=text(SPEC_ADAM), loss=np.float64(loss), bn_mean_1=bn[MOVING_MEAN],
                  bn_var_1=bn[MOVING_VAR], sgd_losses=sgd[0], adam_losses=adam[0])
    arrays.update({"grad_%d" % i: g for i, g in grads.items()})
    arrays.update({"sgd_w_%d" % i: w for i, w in enumerate(sgd[1])})
    arrays.update({"adam_w_%d" % i: w for i, w in enumerate(adam[1])})
    savez(out, arrays)
    print("wrote %s: loss %.10f, SGD %.6f -> %.6f, Adam %.6f -> %.6f" % (
        out, loss, sgd[0][0], sgd[0][-1], adam[0][0], adam[0][-1]))


if __name__ == "__main__":
    main()
