#!/usr/bin/env python3
"""The two autoencoders of examples/autoencoder.c (R-AE) in PyTorch, with the
same settings, printing the same test reconstruction errors, so that
nnlite's figures can be put next to PyTorch's:

    /usr/bin/python3 bench/torch_autoencoder.py [DATA] [--epochs 5] [--batch 128]
                                                [--threads N] [--seed 42]

DATA: a folder with the four MNIST-style idx files (.gz or not); default
Debian's /usr/share/datasets/fashion-mnist.

Same as the example: pixels / 255; dense 784-128(relu)-32(relu)-128(relu)-
784(sigmoid) and the convolutional Conv2D(16)-MaxPool-Conv2D(8)-MaxPool-
Conv2D(8)-UpSampling2D-Conv2D(16)-UpSampling2D-Conv2D(1, sigmoid), 3x3
kernels, 'same' padding (padding=1); Keras' initialisation (glorot_uniform
kernels: nn.init.xavier_uniform_, whose fans for Linear and Conv2d are
Keras'; zero biases); Adam(lr 0.001, betas (0.9, 0.999), eps 1e-7 as
Keras' default epsilon); binary cross-entropy as the mean over all pixels
(computed from the logits, as nnlite fuses sigmoid and cross-entropy);
batches of --batch drawn from a fresh shuffle each epoch, the last partial
batch included (Keras' fit). Test errors: MSE and BCE of the sigmoid
outputs over all test pixels, predictions clipped to [1e-7, 1 - 1e-7] for
BCE as Keras does.

Differences that remain (so the figures agree in expectation, not bit for
bit): the random initial weights and shuffles (different generators), and
Adam's epsilon placement (Keras 3 adds epsilon to sqrt(v) before the bias
correction of the step size, PyTorch after it).
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def read_idx(folder, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as f:
                data = f.read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit("missing %s in %s" % (stem, folder))


def dense_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                         nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 784), nn.Unflatten(1, (1, 28, 28)))


def conv_model():
    c = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Sequential(c(1, 16), nn.ReLU(), nn.MaxPool2d(2), c(16, 8), nn.ReLU(), nn.MaxPool2d(2),
                         c(8, 8), nn.ReLU(), up(), c(8, 16), nn.ReLU(), up(), c(16, 1))  # logits


def keras_init(model):
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)


def errors(model, x, batch=256):
    se = ce = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            p = torch.sigmoid(model(xb)).double()
            t = xb.double()
            se += ((p - t) ** 2).sum().item()
            q = p.clamp(1e-7, 1 - 1e-7)
            ce -= (t * q.log() + (1 - t) * (1 - q).log()).sum().item()
    n = x.numel()
    return se / n, ce / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x = torch.tensor(read_idx(a.data, "train-images-idx3-ubyte"), dtype=torch.float32).div_(255).unsqueeze(1)
    xt = torch.tensor(read_idx(a.data, "t10k-images-idx3-ubyte"), dtype=torch.float32).div_(255).unsqueeze(1)
    print("data: %s, PyTorch %s, %d thread(s)" % (a.data, torch.__version__, torch.get_num_threads()))
    for name, make in (("dense", dense_model), ("convolutional", conv_model)):
        model = make()
        keras_init(model)
        print("%s: %d parameters" % (name, sum(p.numel() for p in model.parameters())))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        loss_fn = nn.BCEWithLogitsLoss()
        t0 = time.time()
        for e in range(a.epochs):
            perm = torch.randperm(len(x))
            total = 0.0
            model.train()
            for i in range(0, len(x), a.batch):
                xb = x[perm[i:i + a.batch]]
                opt.zero_grad()
                loss = loss_fn(model(xb), xb)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
            model.eval()
            mse, bce = errors(model, xt)
            print("epoch %d/%d: loss %.5f  val_loss %.5f" % (e + 1, a.epochs, total / len(x), bce))
        t = time.time() - t0
        mse, bce = errors(model, xt)
        print("training: %.1f s, %.0f samples/s" % (t, len(x) * a.epochs / t))
        print("%s autoencoder: test reconstruction MSE %.5f  BCE %.5f  (%d epochs, batch %d, %d training images)"
              % (name, mse, bce, a.epochs, a.batch, len(x)))


if __name__ == "__main__":
    main()
