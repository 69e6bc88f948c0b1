#!/usr/bin/env python3
"""bench_torch.py - the PyTorch side of bench/run.sh: training throughput,
batch-1 inference latency and peak memory of one seed model, same
architecture, batch size, threads, data, steps and windows as bench_nnlite.c.

usage: bench_torch.py MODEL BATCH THREADS [--steps N] [--windows K] [--warmup N]
                      [--calls N] [--infer-seconds S] [--data DIR] [--setting LABEL] [--keep-denormals]
  options as bench_nnlite's; --setting names the peer's setting in the output
  (run.sh passes the OPENBLAS_CORETYPE it set, or "auto").
prints (key=value fields, as bench_nnlite):
  train fw=torch model= data= batch= threads= setting= steps= warmup= windows=.. median= min= max= spread= seconds=
  latency fw=torch ... median_us= p10_us= p90_us=
  infer fw=torch model= data= threads= setting= batch=B calls= reps=3 samples_per_s= min= max= seconds=
        (batched inference, B = 1, 16, 256: calls of B samples, as bench_nnlite's)
  rss fw=torch ... peak_mb=
  blas fw=torch setting= core=NAME   (the OpenBLAS kernel set in use, when torch runs on OpenBLAS)

The peer at its best: torch.set_flush_denormal(True) (nnlite flushes denormals
itself; --keep-denormals leaves them), the thread count and OPENBLAS_CORETYPE
chosen by run.sh. CNNs run in PyTorch's native NCHW layout (nnlite runs
channels-last except R-LENET, which the lecture ran channels-first). Losses are
computed from logits (CrossEntropyLoss), which is what nnlite does for softmax
outputs. Batch-1 and batched inference: model.eval() under torch.no_grad(),
eager; a batched call gets a view of B consecutive samples (no copy).
"""
import argparse
import ctypes
import gzip
import os
import resource
import struct
import sys
import time
import warnings

import torch

LATENCY_WARM_SECONDS = 0.5  # untimed batch-1 calls before the timed ones (bench_common.h)
import torch.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("batch", type=int)
ap.add_argument("threads", type=int)
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--windows", type=int, default=3)
ap.add_argument("--warmup", type=int, default=50)
ap.add_argument("--calls", type=int, default=2001)
ap.add_argument("--infer-seconds", type=float, default=0.3)
ap.add_argument("--data")
ap.add_argument("--setting", default="auto")
ap.add_argument("--keep-denormals", action="store_true")
a = ap.parse_args()
name, batch, threads = a.model, a.batch, a.threads
if not a.keep_denormals:  # first: the intra-op threads, started later, inherit the setting
    torch.set_flush_denormal(True)
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


def idx(path, count, dtype):
    """The first `count` items of an MNIST idx file (.gz or not) as a `dtype`
    tensor, with no copy of the file's bytes beyond the one read (peak RSS is
    compared with nnlite's, which loads the same file)."""
    if not os.path.exists(path):
        path += ".gz"
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    nd = raw[3]
    dims = struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd])
    per = 1
    for d in dims[1:]:
        per *= d
    count = min(count, dims[0])
    with warnings.catch_warnings():  # the bytes object is read-only; nothing writes to it
        warnings.simplefilter("ignore")
        u8 = torch.frombuffer(raw, dtype=torch.uint8, offset=4 + 4 * nd, count=count * per)
    return u8.to(dtype), count


if a.data:
    x, n = idx(os.path.join(a.data, "train-images-idx3-ubyte"), 1 << 30, torch.float32)
    nb = n // batch
    x = x[:nb * batch * 784].div_(255.0).reshape((nb * batch,) + shape)
    y, _ = idx(os.path.join(a.data, "train-labels-idx1-ubyte"), nb * batch, torch.int64)
    dname = "fmnist"
else:
    nb = 20  # synthetic: 20 batches, values in [0, 1), as bench_nnlite.c
    g = torch.Generator().manual_seed(7)
    x = torch.rand((nb * batch,) + shape, generator=g)
    y = torch.randint(0, 10, (nb * batch,), generator=g)
    dname = "synth"


def run(steps):
    """`steps` optimizer steps, in shuffled passes over the nb batches (as nnl_fit does)."""
    done = 0
    while done < steps:
        perm = torch.randperm(nb * batch)
        for s in range(min(nb, steps - done)):
            idx_ = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx_]), y[idx_])
            loss.backward()
            opt.step()
        done += min(nb, steps - done)


model.train()
run(a.warmup)
wsteps = -(-a.steps // nb) * nb  # whole passes, at least --steps
sps, total = [], 0.0
for _ in range(a.windows):
    t = time.perf_counter()
    run(wsteps)
    w = time.perf_counter() - t
    total += w
    sps.append(wsteps * batch / w)

model.eval()
lat = []
with torch.no_grad():
    warm0, i = time.perf_counter(), 0  # untimed calls first, as bench_nnlite
    while i < 50 or time.perf_counter() - warm0 < LATENCY_WARM_SECONDS:
        model(x[i % 50:i % 50 + 1])
        i += 1
    for i in range(a.calls):
        xi = x[i % 50:i % 50 + 1]
        t = time.perf_counter()
        model(xi)
        lat.append(time.perf_counter() - t)
lat.sort()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before the batched inference's buffers


def infer_run(b, calls):
    """`calls` forward passes of b consecutive samples each, walking through x; seconds."""
    o, n = 0, x.shape[0]
    t = time.perf_counter()
    for _ in range(calls):
        model(x[o:o + b])
        o += b
        if o + b > n:
            o = 0
    return time.perf_counter() - t


infer = []  # (B, calls, [samples/s of each repetition], seconds)
with torch.no_grad():
    for b in (1, 16, 256) if a.infer_seconds > 0 else ():
        if x.shape[0] < b:
            continue
        c = 1
        t = infer_run(b, c)
        while t < a.infer_seconds / 4:  # doubling: warm, and a first rate
            c *= 2
            t = infer_run(b, c)
        calls = max(3, int(c * a.infer_seconds / t) + 1)
        ws = [infer_run(b, calls) for _ in range(3)]
        infer.append((b, calls, [calls * b / w for w in ws], sum(ws)))


def openblas_core():
    """The kernel set of the OpenBLAS this process loaded ("none" without one)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and ln.split()[-1].startswith("/")}
        for lib in sorted(libs):
            fn = ctypes.CDLL(lib).openblas_get_corename
            fn.restype = ctypes.c_char_p
            return fn().decode()
    except (OSError, AttributeError):
        pass
    return "none"


med = sorted(sps)[len(sps) // 2] if len(sps) % 2 else 0.5 * sum(sorted(sps)[len(sps) // 2 - 1:len(sps) // 2 + 1])
common = "model=%s data=%s batch=%d threads=%d setting=%s" % (name, dname, batch, threads, a.setting)
print("train fw=torch %s steps=%d warmup=%d windows=%s median=%.1f min=%.1f max=%.1f spread=%.4f seconds=%.1f" %
      (common, wsteps, a.warmup, ",".join("%.1f" % v for v in sps), med, min(sps), max(sps),
       (max(sps) - min(sps)) / med, total))
print("latency fw=torch model=%s data=%s threads=%d setting=%s calls=%d median_us=%.2f p10_us=%.2f p90_us=%.2f" %
      (name, dname, threads, a.setting, a.calls, 1e6 * lat[len(lat) // 2], 1e6 * lat[len(lat) // 10],
       1e6 * lat[len(lat) * 9 // 10]))
for b, calls, v, secs in infer:
    print("infer fw=torch model=%s data=%s threads=%d setting=%s batch=%d calls=%d reps=3 samples_per_s=%.1f "
          "min=%.1f max=%.1f seconds=%.2f" % (name, dname, threads, a.setting, b, calls, sorted(v)[1], min(v), max(v),
                                              secs))
print("rss fw=torch %s peak_mb=%.1f" % (common, rss))
print("blas fw=torch setting=%s core=%s" % (a.setting, openblas_core()))
sys.stdout.flush()
