#!/usr/bin/env python3
"""bench_torch.py - the PyTorch side of bench/run.sh: training throughput,
single-sample eager inference latency and peak memory of one seed model,
same architecture, batch size, threads and synthetic data as bench_nnlite.c.

usage: bench_torch.py MODEL BATCH THREADS [SECONDS]
prints: torch MODEL BATCH THREADS train_samples_per_s infer_us peak_rss_mb

CNNs run in PyTorch's native NCHW layout (nnlite runs channels-last except
R-LENET, which the lecture ran channels-first). Losses are computed from
logits (CrossEntropyLoss), which is what nnlite does for softmax outputs.
"""
import resource
import sys
import time

import torch
import torch.nn as nn

name, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
torch.set_num_threads(threads)
torch.manual_seed(1)


def lenet(act, pad):
    A = nn.Tanh if act == "tanh" else nn.ReLU
    flat = 50 * 7 * 7 if pad else 800
    return nn.Sequential(nn.Conv2d(1, 20, 5, padding=2 if pad else 0), A(), nn.MaxPool2d(2),
                         nn.Conv2d(20, 50, 5, padding=2 if pad else 0), A(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(flat, 500), A(), nn.Linear(500, 10))


models = {
    "kmlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
             (28, 28), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7)),
    "rmlp": (lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                   nn.Linear(128, 10)),
             (784,), lambda p: torch.optim.SGD(p, lr=0.01)),
    "tlenet": (lambda: lenet("tanh", False), (1, 28, 28), lambda p: torch.optim.SGD(p, lr=0.025)),
    "kcnn": (lambda: nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                   nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128),
                                   nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)),
             (1, 28, 28), lambda p: torch.optim.Adadelta(p, lr=0.1, rho=0.95, eps=1e-7)),
    "rlenet": (lambda: lenet("relu", True), (1, 28, 28), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7)),
}
make, shape, make_opt = models[name]
model = make()
opt = make_opt(model.parameters())
loss_fn = nn.CrossEntropyLoss()
nb = 20
g = torch.Generator().manual_seed(7)
x = torch.rand((nb * batch,) + shape, generator=g)
y = torch.randint(0, 10, (nb * batch,), generator=g)


def epoch(steps):
    perm = torch.randperm(nb * batch)  # shuffle, as nnlite's fit does
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


model.train()
t = time.perf_counter()
epoch(3)
t1 = (time.perf_counter() - t) / 3
epochs = max(1, int(budget / 3 / (nb * max(t1, 1e-6))))
best = 1e30
for _ in range(3):  # the best of three timed windows, as bench_nnlite does
    t = time.perf_counter()
    for _ in range(epochs):
        epoch(nb)
    best = min(best, time.perf_counter() - t)
sps = nb * batch * epochs / best

model.eval()
lat = []
with torch.no_grad():
    for i in range(301):
        xi = x[i % 50:i % 50 + 1]
        a = time.perf_counter()
        model(xi)
        lat.append(time.perf_counter() - a)
lat.sort()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("torch %s %d %d %.1f %.1f %.1f" % (name, batch, threads, sps, 1e6 * lat[150], rss))
