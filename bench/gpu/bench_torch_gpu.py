#!/usr/bin/env python3
"""bench_torch_gpu.py - the PyTorch side of bench/gpu/run.sh: GPU training
throughput of one seed model, same architecture, batch size and synthetic
data as bench_gpu.c (20 batches of uniform [0, 1) inputs, random labels),
the best of three timed windows after a warm-up.

usage: bench_torch_gpu.py MODEL[,MODEL...]|all BATCH TF32(0|1|both) [SECONDS] [--device cpu]
prints: torch-gpu MODEL BATCH fp32|tf32 throughput device

TF32=1 allows TF32 in matmul and cuDNN (convolutions and RNNs) (PyTorch's
default is TF32 for cuDNN and FP32 for matmul); TF32=0 turns both off.
Losses from logits (CrossEntropyLoss), as nnlite computes its softmax
outputs. Data stays on the GPU (as nnlite's batches do not: nnlite copies
each batch from host memory, which this favours PyTorch).

The sequence workloads (bench_gpu.c says what they are), cuDNN's LSTM
(torch.backends.cudnn enabled), the median of 5 timed windows after a
warm-up, torch.cuda.synchronize() around each window:
  tptb     Embedding(10000, 200) - 2-layer nn.LSTM(200) - Linear(10000),
           windows of 30 steps from zero states, SGD lr 0.05, cross-entropy
           at every step; synthetic ids uniform over the 10,000 words.
           Throughput: training words/s. BATCH: windows a batch (20).
  lstmUxT  one nn.LSTM(U, U) over T steps, MSE loss, SGD: training steps
           (forward + backward + update) per second.
--device cpu runs on the CPU instead: a smoke test that the script and its
models run where there is no GPU, never a figure for the report.
"""
import argparse
import sys
import time

import torch
import torch.nn as nn

ap = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1].split("\n")[0][len("usage: "):])
ap.add_argument("model")
ap.add_argument("batch", type=int)
ap.add_argument("tf32", choices=["0", "1", "both"])
ap.add_argument("seconds", type=float, nargs="?", default=6.0)
ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
a = ap.parse_args()
name, batch, tf32_arg, budget, device_arg = a.model, a.batch, a.tf32, a.seconds, a.device
if device_arg == "cuda":
    if not torch.cuda.is_available():
        sys.exit("bench_torch_gpu: no CUDA device for PyTorch")
    dev = torch.device("cuda:0")
    dev_name = torch.cuda.get_device_name(0).replace(" ", "_")
else:
    dev = torch.device("cpu")
    dev_name = "cpu_smoke_test_only"
torch.backends.cudnn.enabled = True
torch.backends.cudnn.benchmark = True


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def lenet(act, pad):
    A = nn.Tanh if act == "tanh" else nn.ReLU
    flat = 50 * 7 * 7 if pad else 800
    return nn.Sequential(nn.Conv2d(1, 20, 5, padding=2 if pad else 0), A(), nn.MaxPool2d(2),
                         nn.Conv2d(20, 50, 5, padding=2 if pad else 0), A(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(flat, 500), A(), nn.Linear(500, 10))


models = {
    "kmlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
             (28, 28), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7)),
    "rlenet": (lambda: lenet("relu", True), (1, 28, 28), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7)),
    "tlenet": (lambda: lenet("tanh", False), (1, 28, 28), lambda p: torch.optim.SGD(p, lr=0.025)),
}


class PTB(nn.Module):
    """T-PTB: Embedding(10000, 200) - LSTM(200) - LSTM(200) - Dense(10000)"""

    def __init__(self, V=10000, E=200, U=200):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, U, num_layers=2, batch_first=True)
        self.out = nn.Linear(U, V)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))  # zero initial states: every window on its own
        return self.out(y)


class OneLSTM(nn.Module):
    def __init__(self, U):
        super().__init__()
        self.lstm = nn.LSTM(U, U, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def run_seq(name, tf32):
    """tptb and lstmUxT: the median of 5 windows; prints the line"""
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.manual_seed(1)
    nb, V, W = 20, 10000, 5
    n = nb * batch
    if name == "tptb":
        T = 30
        model = PTB(V).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        ce = nn.CrossEntropyLoss()
        s = torch.randint(0, V, (n * T + 1,), device=dev)  # a stream of ids cut into windows
        x, y = s[:-1].view(n, T), s[1:].view(n, T)
        loss_of = lambda out, t: ce(out.reshape(-1, V), t.reshape(-1))
        units = n * T  # words an epoch
    else:
        U, T = (int(v) for v in name[4:].split("x"))
        model = OneLSTM(U).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.001)
        mse = nn.MSELoss()
        x = torch.rand(n, T, U, device=dev) * 2 - 1
        y = torch.rand(n, T, U, device=dev) * 2 - 1
        loss_of = mse
        units = nb  # steps an epoch

    def epoch():
        perm = torch.randperm(n, device=dev)
        for k in range(nb):
            idx = perm[k * batch:(k + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_of(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss.item()  # per-batch loss on the host, as nnlite's loss sums come back

    def timed(epochs):
        sync()
        t = time.perf_counter()
        for _ in range(epochs):
            epoch()
        sync()
        return time.perf_counter() - t

    timed(2)  # warm-up: cuDNN's plans, allocations
    per = timed(1)
    epochs = max(1, int(budget / W / per))
    w = [units * epochs / timed(epochs) for _ in range(W)]
    med = sorted(w)[W // 2]
    print("torch-gpu %s %d %s windows=%s median=%.1f (%d epochs of %d batches a window)" % (
        name, batch, "tf32" if tf32 else "fp32", ",".join("%.1f" % v for v in w), med, epochs, nb),
        file=sys.stderr, flush=True)
    print("torch-gpu %s %d %s %.1f %s" % (name, batch, "tf32" if tf32 else "fp32", med, dev_name), flush=True)


def run(name, tf32):
    if name == "tptb" or name.startswith("lstm"):
        return run_seq(name, tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.manual_seed(1)
    make, shape, mkopt = models[name]
    model = make().to(dev)
    opt = mkopt(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    nb = 20
    x = torch.rand((nb * batch,) + shape, device=dev)
    y = torch.randint(0, 10, (nb * batch,), device=dev)

    def epoch(steps):
        perm = torch.randperm(nb * batch, device=dev)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss.item()  # per-batch loss on the host, as Keras' and nnlite's progress lines need

    def timed(epochs):
        sync()
        t = time.perf_counter()
        for _ in range(epochs):
            epoch(nb)
        sync()
        return time.perf_counter() - t

    timed(1)
    per = timed(1)
    epochs = max(1, int(budget / 3 / per))
    best = min(timed(epochs) for _ in range(3))
    print("torch-gpu %s %d %s %.1f %s" % (name, batch, "tf32" if tf32 else "fp32", nb * batch * epochs / best,
                                          dev_name), flush=True)


# "all" and TF32 "both": every model, FP32 then TF32, in one process (one
# import of torch: a device minute saved on a lent GPU)
for n in (list(models) if name == "all" else name.split(",")):
    for t in ([0, 1] if tf32_arg == "both" else [int(tf32_arg)]):
        run(n, t)
