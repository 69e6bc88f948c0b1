#!/usr/bin/env python3
"""torch_lstm.py - the PyTorch side of bench/lstm_bench.c: one nn.LSTM
layer (batch_first, input size = hidden size) on synthetic data, each step
forward, mse loss over the whole output sequence, backward through time and
an SGD update, as nnlite's step.

usage: torch_lstm.py BATCH STEPS UNITS THREADS [SECONDS]
prints: torch-lstm BATCH STEPS UNITS THREADS steps_per_s
"""
import sys
import time

import torch
import torch.nn as nn

batch, steps, units, threads = (int(a) for a in sys.argv[1:5])
budget = float(sys.argv[5]) if len(sys.argv) > 5 else 4.0
torch.set_num_threads(threads)
torch.manual_seed(1)
lstm = nn.LSTM(units, units, batch_first=True)
opt = torch.optim.SGD(lstm.parameters(), lr=1e-4)
loss_fn = nn.MSELoss()
nb = 10
g = torch.Generator().manual_seed(7)
x = torch.rand((nb, batch, steps, units), generator=g) - 0.5
y = torch.rand((nb, batch, steps, units), generator=g) - 0.5


def epoch():
    for b in range(nb):
        opt.zero_grad(set_to_none=True)
        out, _ = lstm(x[b])
        loss = loss_fn(out, y[b])
        loss.backward()
        opt.step()


t = time.perf_counter()
epoch()
epoch()
per_epoch = (time.perf_counter() - t) / 2
epochs = max(1, int(budget / 3 / max(per_epoch, 1e-6)))
best = 1e30
for _ in range(3):  # the best of three timed windows, as lstm_bench does
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    best = min(best, time.perf_counter() - t)
print("torch-lstm %d %d %d %d %.2f" % (batch, steps, units, threads, nb * epochs / best))
