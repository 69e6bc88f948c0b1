#!/usr/bin/env python3
"""torch_ptb.py - the PyTorch reference for examples/ptb_lstm.c (T-PTB):
the same model, data order, initialisation scheme and optimizer settings, so
that the test perplexities can be put side by side.

  /usr/bin/python3 bench/torch_ptb.py PTB_DIR --preset thesis [--epochs N] [--threads N] [--seed N]
  /usr/bin/python3 bench/torch_ptb.py PTB_DIR --preset small

Data: ptb.train.txt / ptb.valid.txt / ptb.test.txt, whitespace tokens, each
line ends with <eos>; the vocabulary is the training file's words sorted by
count (descending) then by word, as TensorFlow's PTB reader does. The id
stream is laid into `batch` rows (column-major continuation, as
ptb_producer / batchify) and cut into windows of `steps` columns, targets
shifted by one. small: the LSTM state carries from one window to the next
(and is detached), reset at each epoch's start, windows in order. thesis
(nnlite's Keras-style preset): the windows are independent samples, shuffled
each epoch (batches of 20 random windows), every window starts from a zero
state; validation and test run in order, also from zero states.

Loss: softmax cross-entropy averaged over time and batch (Keras semantics,
nnlite's). Presets:
  thesis: Embedding(10000, 200) - LSTM(200) - LSTM(200) - Dense(10000), 30
          steps, batch 20, plain SGD lr 0.05, 4 epochs, Keras initialisation
          (embeddings U(-0.05, 0.05), kernels glorot_uniform, recurrent
          kernels orthogonal, biases 0 with the forget gate's 1).
  small:  Zaremba et al. 2014's small model: 2x200, 20 steps, batch 20, all
          weights U(-0.1, 0.1), 13 epochs, SGD with the paper's step: the
          paper sums the loss over the 20 steps and averages over the batch,
          so on the mean loss the rate is 1.0 * 20 and the global-norm clip
          5 / 20; the rate halves after each epoch from the 5th on.
Prints the per-epoch train/valid perplexity, words/s and the test perplexity.
"""
import argparse
import collections
import math
import os
import time

import torch
import torch.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("--preset", choices=["thesis", "small"], default="thesis")
ap.add_argument("--epochs", type=int)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--max-words", type=int, default=0, help="use only the first N words of each file (speed runs, smoke tests)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

P = {"thesis": dict(steps=30, batch=20, lr=0.05, epochs=4, clip=0.0, init="keras", decay_from=0, stateful=False),
     "small": dict(steps=20, batch=20, lr=20.0, epochs=13, clip=0.25, init="uniform", decay_from=5, stateful=True)}[
         a.preset]
if a.epochs:
    P["epochs"] = a.epochs


def words(path):
    with open(path) as f:
        return [w for line in f for w in line.split() + ["<eos>"]]


train_w = words(os.path.join(a.data, "ptb.train.txt"))
count = collections.Counter(train_w)
vocab = [w for w, _ in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))]
wid = {w: i for i, w in enumerate(vocab)}
V = len(vocab)


def ids(ws):
    return torch.tensor([wid.get(w, wid["<unk>"]) for w in ws], dtype=torch.long)


cut = (lambda ws: ws[:a.max_words]) if a.max_words else (lambda ws: ws)  # as ptb_lstm --words N
train = ids(cut(train_w))
valid = ids(cut(words(os.path.join(a.data, "ptb.valid.txt"))))
test = ids(cut(words(os.path.join(a.data, "ptb.test.txt"))))


def batchify(d, b):
    n = d.numel() // b
    return d[:n * b].view(b, n)  # row r holds the r-th contiguous slice


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 200)
        self.lstm = nn.LSTM(200, 200, num_layers=2, batch_first=True)
        self.out = nn.Linear(200, V)

    def forward(self, x, h):
        y, h = self.lstm(self.emb(x), h)
        return self.out(y), h


m = LM()
with torch.no_grad():
    if P["init"] == "uniform":
        for p in m.parameters():
            p.uniform_(-0.1, 0.1)
    else:
        m.emb.weight.uniform_(-0.05, 0.05)
        for layer in range(2):
            wi = getattr(m.lstm, "weight_ih_l%d" % layer)
            wh = getattr(m.lstm, "weight_hh_l%d" % layer)
            nn.init.xavier_uniform_(wi)  # Keras glorot_uniform of the (F, 4u) kernel: same limit
            q = torch.empty(4 * 200, 200)
            nn.init.orthogonal_(q)
            wh.copy_(q)
            getattr(m.lstm, "bias_ih_l%d" % layer).zero_()
            getattr(m.lstm, "bias_hh_l%d" % layer).zero_()
            getattr(m.lstm, "bias_ih_l%d" % layer)[200:400] = 1.0  # unit_forget_bias
        nn.init.xavier_uniform_(m.out.weight)
        m.out.bias.zero_()
opt = torch.optim.SGD(m.parameters(), lr=P["lr"])
ce = nn.CrossEntropyLoss()


def run(data, train_mode):
    d = batchify(data, P["batch"])
    T = P["steps"]
    h = None
    tot, n, t0 = 0.0, 0, time.perf_counter()
    m.train(train_mode)
    nwin = (d.size(1) - 1) // T
    B = P["batch"]
    if not P["stateful"]:  # independent windows: (nwin * B, T) samples, shuffled when training
        xs = torch.stack([d[:, i * T:(i + 1) * T] for i in range(nwin)]).reshape(-1, T)
        ys = torch.stack([d[:, i * T + 1:(i + 1) * T + 1] for i in range(nwin)]).reshape(-1, T)
        order = torch.randperm(xs.size(0)) if train_mode else torch.arange(xs.size(0))
    for i in range(nwin):
        if P["stateful"]:
            x = d[:, i * T:(i + 1) * T]
            y = d[:, i * T + 1:(i + 1) * T + 1]
        else:
            x, y, h = xs[order[i * B:(i + 1) * B]], ys[order[i * B:(i + 1) * B]], None
        with torch.set_grad_enabled(train_mode):
            out, h = m(x, h)
            loss = ce(out.reshape(-1, V), y.reshape(-1))
        h = tuple(s.detach() for s in h)
        if train_mode:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if P["clip"] > 0:
                nn.utils.clip_grad_norm_(m.parameters(), P["clip"])
            opt.step()
        tot += loss.item() * x.numel()
        n += x.numel()
    return math.exp(tot / n), n / (time.perf_counter() - t0), nwin / (time.perf_counter() - t0)


print("torch_ptb: preset %s, vocabulary %d, %d training words, %d threads, torch %s" %
      (a.preset, V, train.numel(), a.threads, torch.__version__))
t_all = time.perf_counter()
for e in range(P["epochs"]):
    if P["decay_from"] and e + 1 >= P["decay_from"]:
        for g in opt.param_groups:
            g["lr"] = P["lr"] * 0.5 ** (e + 2 - P["decay_from"])
    tr, wps, bps = run(train, True)
    va, _, _ = run(valid, False)
    print("epoch %d: lr %g  train perplexity %.2f  valid perplexity %.2f  %.0f words/s  %.2f batches/s" %
          (e + 1, opt.param_groups[0]["lr"], tr, va, wps, bps))
te, _, _ = run(test, False)
print("test perplexity %.2f  (%.0f s)" % (te, time.perf_counter() - t_all))
