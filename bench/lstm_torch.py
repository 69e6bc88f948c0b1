#!/usr/bin/python3
"""PyTorch's nn.LSTM on the shapes of bench/lstm_bench.cpp: forward and
forward+backward of one layer (batch 20, steps 20/30/35, 200 and 650 units,
inputs as wide as the units), float32 on the CPU, the minimum over REPS runs.

    /usr/bin/python3 bench/lstm_torch.py [THREADS] [REPS]

Run it with OPENBLAS_CORETYPE unset and set (the issue's table), and at
each thread count; compare with build/bench/lstm_bench THREADS REPS."""
import sys
import time
import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
torch.set_num_threads(threads)
torch.manual_seed(3)
print("# torch %s nn.LSTM, %d thread(s), min of %d runs" % (torch.__version__, torch.get_num_threads(), reps))
print("%-8s %5s %5s %5s %10s %12s %10s" % ("units", "batch", "steps", "in", "fwd_ms", "fwd+bwd_ms", "GFLOP/s"))
for u in (200, 650):
    for T in (20, 30, 35):
        B, F = 20, u
        m = torch.nn.LSTM(F, u, batch_first=True)
        x = torch.rand(B, T, F) * 2 - 1
        x.requires_grad_(True)
        dy = (torch.rand(B, T, u) * 2 - 1) * 1e-2

        def fwd():
            with torch.no_grad():
                m(x)

        def fwd_bwd():
            y, _ = m(x)
            y.backward(dy)

        def best(f):
            f()
            t = 1e30
            for _ in range(reps):
                s = time.perf_counter()
                f()
                t = min(t, time.perf_counter() - s)
            return t

        tf, tb = best(fwd), best(fwd_bwd)
        flops = 3.0 * 2.0 * B * T * (F + u) * 4.0 * u
        print("%-8d %5d %5d %5d %10.3f %12.3f %10.2f" % (u, B, T, F, tf * 1e3, tb * 1e3, flops / tb * 1e-9))
