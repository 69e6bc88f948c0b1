#!/usr/bin/env python3
"""torch_seeds.py - PyTorch (Debian python3-torch) reference accuracy for the
seed CNNs, with the same model, settings and Keras' initialisation as
nnlite's examples (glorot_uniform kernels, zero biases; Keras' validation
split = the last fraction of the training set, taken before shuffling).

usage: torch_seeds.py kcnn|rlenet|tlenet|kmlp DATA_DIR [--epochs N] [--threads N]
DATA_DIR holds the four MNIST-style idx files (.gz or not).
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn


def idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                data = f.read()
            nd = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)
    raise SystemExit("missing " + path)


ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("data")
ap.add_argument("--epochs", type=int)
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(42)
np.random.seed(42)

xt = idx(os.path.join(a.data, "train-images-idx3-ubyte")).astype(np.float32)
yt = idx(os.path.join(a.data, "train-labels-idx1-ubyte")).astype(np.int64)
xs = idx(os.path.join(a.data, "t10k-images-idx3-ubyte")).astype(np.float32)
ys = idx(os.path.join(a.data, "t10k-labels-idx1-ubyte")).astype(np.int64)

if a.model == "kmlp":  # tf.keras.utils.normalize(x, axis=1): L2 along the image columns
    def norm(x):
        n = np.sqrt((x * x).sum(axis=1, keepdims=True))
        return x / np.where(n == 0, 1, n)
    xt, xs = norm(xt), norm(xs)
else:
    xt, xs = xt / 255.0, xs / 255.0
    xt, xs = xt[:, None], xs[:, None]  # NCHW

A = {"kcnn": nn.ReLU, "rlenet": nn.ReLU, "tlenet": nn.Tanh, "kmlp": nn.ReLU}[a.model]
if a.model == "kcnn":
    model = nn.Sequential(nn.Conv2d(1, 32, 3), A(), nn.Conv2d(32, 64, 3), A(), nn.MaxPool2d(2), nn.Dropout(0.25),
                          nn.Flatten(), nn.Linear(9216, 128), A(), nn.Dropout(0.5), nn.Linear(128, 10))
    opt = torch.optim.Adadelta(model.parameters(), lr=0.1, rho=0.95, eps=1e-7)
    bs, epochs, vsplit = 120, 10, 0.1
elif a.model in ("rlenet", "tlenet"):
    pad = 2 if a.model == "rlenet" else 0
    flat = 50 * 7 * 7 if pad else 800
    model = nn.Sequential(nn.Conv2d(1, 20, 5, padding=pad), A(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5, padding=pad),
                          A(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 500), A(), nn.Linear(500, 10))
    if a.model == "rlenet":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        bs, epochs, vsplit = 128, 20, 0.2
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.025)
        bs, epochs, vsplit = 512, 8, 0.0
else:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), A(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    bs, epochs, vsplit = 120, 30, 0.1
if a.epochs:
    epochs = a.epochs
for m in model.modules():  # Keras' initialisation
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
# PyTorch's Flatten of NCHW orders features (C, H, W); Keras' of NHWC (H, W, C): a
# fixed permutation of the next layer's inputs, which does not change what it can learn.

ntr = int(len(xt) * (1 - vsplit))
Xtr, Ytr = torch.tensor(xt[:ntr]), torch.tensor(yt[:ntr])
Xv, Yv = torch.tensor(xt[ntr:]), torch.tensor(yt[ntr:])
Xs, Ys = torch.tensor(xs), torch.tensor(ys)
loss_fn = nn.CrossEntropyLoss()


def evaluate(X, Y):
    model.eval()
    tot, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(X), 1000):
            out = model(X[i:i + 1000])
            tot += loss_fn(out, Y[i:i + 1000]).item() * len(out)
            correct += (out.argmax(1) == Y[i:i + 1000]).sum().item()
    return tot / len(X), correct / len(X)


t0 = time.time()
for e in range(epochs):
    model.train()
    perm = torch.randperm(ntr)
    tl, tc = 0.0, 0
    for i in range(0, ntr, bs):
        idx_ = perm[i:i + bs]
        opt.zero_grad()
        out = model(Xtr[idx_])
        loss = loss_fn(out, Ytr[idx_])
        loss.backward()
        opt.step()
        tl += loss.item() * len(idx_)
        tc += (out.argmax(1) == Ytr[idx_]).sum().item()
    msg = "epoch %d/%d - loss: %.4f - accuracy: %.4f" % (e + 1, epochs, tl / ntr, tc / ntr)
    if len(Xv):
        vl, va = evaluate(Xv, Yv)
        msg += " - val_loss: %.4f - val_accuracy: %.4f" % (vl, va)
    print(msg, flush=True)
t = time.time() - t0
l, acc = evaluate(Xs, Ys)
print("torch %s: test loss: %.4f  test accuracy: %.4f  (%.0f s, %.0f samples/s, %d thread(s))"
      % (a.model, l, acc, t, ntr * epochs / t, torch.get_num_threads()))
