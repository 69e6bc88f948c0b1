#!/usr/bin/env python3
"""bench_torch_gpu.py - the PyTorch side of bench/gpu/run.sh: GPU training
throughput of one seed model, same architecture, batch size and synthetic
data as bench_gpu.c (20 batches of uniform [0, 1) inputs, random labels),
the best of three timed windows after a warm-up.

usage: bench_torch_gpu.py MODEL|all BATCH TF32(0|1|both) [SECONDS]
prints: torch-gpu MODEL BATCH fp32|tf32 train_samples_per_s device

TF32=1 allows TF32 in matmul and cuDNN convolutions (PyTorch's default is
TF32 for cuDNN convolutions and FP32 for matmul); TF32=0 turns both off.
Losses from logits (CrossEntropyLoss), as nnlite computes its softmax
outputs. Data stays on the GPU (as nnlite's batches do not: nnlite copies
each batch from host memory, which this favours PyTorch).
"""
import sys
import time

import torch
import torch.nn as nn

name, batch, tf32_arg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 6.0
if not torch.cuda.is_available():
    sys.exit("bench_torch_gpu: no CUDA device for PyTorch")
dev = torch.device("cuda:0")
torch.backends.cudnn.benchmark = True


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


def run(name, tf32):
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
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(epochs):
            epoch(nb)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    timed(1)
    per = timed(1)
    epochs = max(1, int(budget / 3 / per))
    best = min(timed(epochs) for _ in range(3))
    print("torch-gpu %s %d %s %.1f %s" % (name, batch, "tf32" if tf32 else "fp32", nb * batch * epochs / best,
                                          torch.cuda.get_device_name(0).replace(" ", "_")), flush=True)


# "all" and TF32 "both": every model, FP32 then TF32, in one process (one
# import of torch: a device minute saved on a lent GPU)
for n in (list(models) if name == "all" else [name]):
    for t in ([0, 1] if tf32_arg == "both" else [int(tf32_arg)]):
        run(n, t)
