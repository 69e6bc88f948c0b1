#!/usr/bin/env python3
"""report.py RAW - turns bench/run.sh's raw lines into bench/RESULTS.md."""
import sys
from collections import defaultdict

meta, runs, gemm = {}, defaultdict(dict), defaultdict(dict)
optref, opt = {}, defaultdict(dict)  # opt_bench: (rule, threads) -> references, path -> figures
for line in open(sys.argv[1]):
    w = line.split()
    if not w:
        continue
    if w[0] in ("machine", "date", "simd") or (w[0] == "torch" and len(w) == 2):
        meta[w[0]] = " ".join(w[1:])
        continue
    if (w[0] == "nnlite" or w[0].startswith("torch")) and len(w) == 7:
        fw, model, bs, th = w[0], w[1], int(w[2]), int(w[3])
        runs[(model, bs)][(fw, th)] = (float(w[4]), float(w[5]), float(w[6]))
    elif w[0] == "optref" and len(w) == 5:
        optref[(w[1], int(w[2]))] = (float(w[3]), float(w[4]))
    elif w[0] == "opt" and len(w) == 8:
        opt[(w[1], int(w[2]))][w[3]] = (float(w[4]), float(w[5]), float(w[6]))
    elif w[0].startswith("gemm"):
        n, th = int(w[1]), int(w[2])
        gemm[n][(w[0], th)] = (float(w[3]), float(w[4]))

names = {"kmlp": "K-MLP", "rmlp": "R-MLP", "tlenet": "T-LENET", "kcnn": "K-CNN", "rlenet": "R-LENET"}
print("# nnlite benchmark results\n")
print("Machine: %s; %s; PyTorch %s (CPU, Debian python3-torch, oneDNN + OpenBLAS).  " %
      (meta.get("machine", "?"), meta.get("simd", "").strip(), meta.get("torch", "?")))
print("Date: %s. Produced by `bash bench/run.sh` (all figures from that one run).\n" % meta.get("date", "?"))
print("Synthetic MNIST-shaped data, same architecture, optimizer, batch size and thread count on both")
print("sides; training samples/s = the best of three timed windows after warm-up; single-sample inference is the median")
print("of 301 calls (PyTorch: eager, no_grad); peak RSS of the whole process. PyTorch columns are the")
print("best of OPENBLAS_CORETYPE unset and set to each core type run.sh tries (%s).\n" %
      ", ".join(sorted({f[6:] for r in runs.values() for (f, th) in r if f.startswith("torch-")})))
print("## Training throughput (samples/s)\n")
print("| model | batch | nnlite 1T | nnlite 2T | PyTorch 1T | PyTorch 2T | nnlite best / PyTorch best |")
print("|---|---|---|---|---|---|---|")
summary = []
for (model, bs), r in runs.items():
    def best_torch(th, k=0):
        v = [val[k] for (f, t), val in r.items() if f.startswith("torch") and t == th]
        return (max(v) if k == 0 else min(v)) if v else float("nan")
    n1, n2 = r.get(("nnlite", 1), (float("nan"),) * 3), r.get(("nnlite", 2), (float("nan"),) * 3)
    t1, t2 = best_torch(1), best_torch(2)
    ratio = max(n1[0], n2[0]) / max(t1, t2)
    summary.append((model, bs, ratio, n1, n2, r, best_torch))
    print("| %s | %d | %.0f | %.0f | %.0f | %.0f | **%.2f×** |" % (names[model], bs, n1[0], n2[0], t1, t2, ratio))
print("\n## Single-sample inference latency (µs, 1 thread) and peak RSS (MB, 1 thread)\n")
print("| model | nnlite µs | PyTorch µs | speed-up | nnlite RSS | PyTorch RSS | RSS ratio |")
print("|---|---|---|---|---|---|---|")
for model, bs, ratio, n1, n2, r, bt in summary:
    tl, tr = bt(1, 1), bt(1, 2)
    print("| %s (batch %d) | %.1f | %.1f | **%.1f×** | %.0f | %.0f | %.2f |" %
          (names[model], bs, n1[1], tl, tl / n1[1], n1[2], tr, n1[2] / tr))
print("\n## SGEMM, square row-major C = A B (GFLOP/s)\n")
print("gemm_bench times each library's best of several calls. nnlite is measured in every OpenBLAS run")
print("(OPENBLAS_CORETYPE does not touch it) and its best figure is shown, as OpenBLAS gets its best core")
print("type. Both run in one process: OpenBLAS's threads keep spinning after a call and take a core from")
print("the next nnlite call, whose pool workers yield it, so nnlite's 2-thread figures vary from run to run.\n")
print("| n | threads | nnlite | OpenBLAS (auto) | OpenBLAS (best core type) | nnlite / best OpenBLAS |")
print("|---|---|---|---|---|---|")
for n in sorted(gemm):
    for th in (1, 2):
        runs_th = {lab: v for (lab, t), v in gemm[n].items() if t == th}
        if not runs_th:
            continue
        auto = runs_th.get("gemm", (float("nan"),) * 2)
        best_lab = max(runs_th, key=lambda lab: runs_th[lab][1])
        ob = runs_th[best_lab][1]
        nb = max(v[0] for v in runs_th.values())  # nnlite runs in each (its code ignores OPENBLAS_CORETYPE)
        ct = best_lab[5:] or "auto"
        print("| %d | %d | %.1f | %.1f | %.1f (%s) | **%.0f %%** |" % (n, th, nb, auto[1], ob, ct, 100 * nb / ob))
if opt:
    print("\n## Optimizer update of 1M parameters (GB/s)\n")
    print("opt_bench: bytes = the arrays each rule reads and writes once (Adam: w, g, m, v in; w, m, v out);")
    print("memcpy moves the same bytes in the same run. The plain path (NNL_NO_SIMD=1, or a CPU without AVX2) is")
    print("the scalar loop every CPU ran before issue 11, with a call to sqrtf per element where the rule has a")
    print("square root; AVX2 and AVX-512 are the kernels of nnlite.cpp section 2.\n")
    print("| optimizer | threads | memcpy | plain | AVX2 | AVX-512 | best / memcpy | best / plain |")
    print("|---|---|---|---|---|---|---|---|")
    for (rule, th), paths in opt.items():
        ref = optref.get((rule, th), (float("nan"),) * 2)
        gb = {p: v[1] for p, v in paths.items()}
        best = max(gb.values())
        print("| %s | %d | %.1f | %.1f | %.1f | %.1f | **%.2f** | %.1f× |" %
              (rule, th, ref[0], gb.get("plain", float("nan")), gb.get("avx2", float("nan")),
               gb.get("avx512", float("nan")), best / ref[0], best / gb.get("plain", float("nan"))))
