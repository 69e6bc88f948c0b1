#!/usr/bin/env python3
"""report.py RAW [--keep RESULTS.md] - turns bench/run.sh's raw lines into the
report (markdown, on stdout; run.sh writes it to bench/RESULTS.md).

Every figure comes from the raw file of one run. A ratio is printed only where
both sides are reliable: a measurement that run.sh marked status=UNRELIABLE
(windows spread more than MAX_SPREAD, or a peer at 2 threads below half its own
1-thread figure, after the reruns) is printed with its figure and the word
UNRELIABLE, and every ratio it would enter is printed as UNRELIABLE too (a
framework's best, too, unless the unreliable run's fastest window is below it). A
--quick run is labelled NOT MEANINGFUL everywhere. --keep FILE: the sections
between <!-- NAME: begin --> and <!-- NAME: end --> markers in FILE (written
by busy_core.sh, lstm_run.sh, ptb_run.sh) are carried over at the end.
"""
import os
import re
import sys
from collections import defaultdict

args = sys.argv[1:]
keep = None
if "--keep" in args:
    i = args.index("--keep")
    keep = args[i + 1]
    del args[i:i + 2]
raw = args[0]

meta = {}
train, probes, rejected, lat, rss, blas, skips, fails, cmds = [], [], [], [], [], [], [], [], []
infer, pthreads, membw = [], [], {}
pairs = defaultdict(list)  # (model, data, batch): nnlite and the best 1-thread peer alternated (run.sh's paired)
pairs_avx2 = defaultdict(list)  # the same with nnlite's AVX2 kernels (NNL_SIMD=avx2) and KANN on OpenBLAS Haswell
bf16 = defaultdict(list)  # nnlite in mixed_bfloat16 (bench_nnlite --precision): kept out of the float32 tables
gemm, optref, opt = defaultdict(dict), {}, defaultdict(dict)
resumes = []  # bench/run.sh --resume: one line per later sitting
META = ("mode", "cpu_model", "cpu_vendor", "cpu_family_model", "cpu_flags", "cores", "date", "date_end", "commit", "code",
        "command", "settings", "torch", "openblas", "compiler", "load_before", "load_after")


def kv(words):
    d = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            d[k] = v
    return d


for line in open(raw):
    w = line.split()
    if not w:
        continue
    tag = w[0]
    if tag in ("train", "latency", "infer", "rss") and "setting=mixed_bfloat16" in w:
        bf16[tag].append(kv(w[1:]))
        continue
    if tag in META:
        meta[tag] = " ".join(w[1:])
    elif tag == "train":
        d = kv(w[1:])
        (probes if d.get("kind") == "probe" else train).append(d)
    elif tag == "rejected":
        rejected.append(kv(w[2:]))
    elif tag == "latency":
        lat.append(kv(w[1:]))
    elif tag == "rss":
        rss.append(kv(w[1:]))
    elif tag == "infer":
        infer.append(kv(w[1:]))
    elif tag == "pair":
        d = kv(w[1:])
        (pairs_avx2 if d.get("simd") == "avx2" else pairs)[(d["model"], d["data"], int(d["batch"]))].append(d)
    elif tag == "pthreads":
        pthreads.append(kv(w[1:]))
    elif tag == "membw":
        d = kv(w[1:])
        membw[(d.get("model", "?"), d.get("threads", "1"))] = d
    elif tag == "blas":
        blas.append(kv(w[1:]))
    elif tag == "skip":
        if not kv(w[1:]).get("reason", "").startswith("probe"):  # those show in the probe table
            skips.append(kv(w[1:]))
    elif tag == "failed":
        fails.append(" ".join(w[1:]))
    elif tag == "cmd":
        cmds.append(" ".join(w[1:]))
    elif tag == "resume":
        resumes.append(kv(w[1:]))
    elif tag == "optref" and len(w) == 5:
        optref[(w[1], int(w[2]))] = (float(w[3]), float(w[4]))
    elif tag == "opt" and len(w) == 8:
        opt[(w[1], int(w[2]))][w[3]] = (float(w[4]), float(w[5]), float(w[6]))
    elif tag.startswith("gemm") and len(w) == 5:
        gemm[int(w[1])][(tag, int(w[2]))] = (float(w[3]), float(w[4]))



def step_flops():
    """{model: training FLOP per sample}, counted from bench/models.h: the
    multiply-adds of the convolutions and Dense layers, forward, weight
    gradient and input gradient (none for the first such layer), 2 FLOP each;
    pooling, activations and the optimizer are not counted. Stride 1 and
    square kernels, as the seed models have. These are the direct
    convolution's FLOPs: since 0.8.3 nnlite's forward computes 3x3 and 5x5
    convolutions of >= 8 input channels by Winograd's algorithm, with fewer
    multiply-adds, so the rate below is an equivalent one (what the step
    would need at the direct form's FLOPs), said so in the report."""
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.h")).read()
    res = {}
    for m in re.finditer(r'\{"(\w+)", \d, \{([\d, ]+)\},\s*\{(.*?), 0\}', src, re.S):
        dims = [int(v) for v in m.group(2).split(",") if int(v) > 0]
        if len(dims) == 3:  # (h, w, c): channels last inside this count
            h, w_, c = (dims[1], dims[2], dims[0]) if "channels_first" in m.group(3) else tuple(dims)
        else:
            h, w_, c = 1, 1, 1
            for v in dims:
                c *= v
        macs = []
        for spec in re.findall(r'"([^"]*)"', m.group(3)):
            name, a = spec.split("(", 1)
            if name == "Conv2D":
                f, kk = int(re.match(r"(\d+)", a).group(1)), int(re.search(r",\s*\(?(\d+)", a).group(1))
                if "padding='same'" not in a:
                    h, w_ = h - kk + 1, w_ - kk + 1
                macs.append(h * w_ * kk * kk * c * f)
                c = f
            elif name == "MaxPooling2D":
                p_ = int(re.match(r"(\d+)", a).group(1))
                h, w_ = h // p_, w_ // p_
            elif name == "Flatten":
                h, w_, c = 1, 1, h * w_ * c
            elif name == "Dense":
                u = int(re.match(r"(\d+)", a).group(1))
                macs.append(h * w_ * c * u)
                h, w_, c = 1, 1, u
        if macs:
            res[m.group(1)] = 2 * (3 * sum(macs) - macs[0])
    return res


quick = meta.get("mode") == "quick"
NM = " (NOT MEANINGFUL: --quick)" if quick else ""
names = {"kmlp": "K-MLP", "rmlp": "R-MLP", "tlenet": "T-LENET", "kcnn": "K-CNN", "rlenet": "R-LENET"}
fwname = {"nnlite": "nnlite", "torch": "PyTorch", "kann": "KANN + OpenBLAS", "nnlite-fortran": "nnlite (Fortran)"}
dataname = {"synth": "synthetic", "fmnist": "Fashion-MNIST"}


def ok(d):
    return d.get("status", "ok") == "ok"


def k(v):
    """samples/s, short: 123456 -> 123.5k"""
    v = float(v)
    return "%.1fk" % (v / 1e3) if v >= 1e3 else "%.0f" % v


def cell(d):
    """median [min-max, spread] of one measurement, UNRELIABLE when marked"""
    s = "%s [%s-%s, %.0f %%]" % (k(d["median"]), k(d["min"]), k(d["max"]), 100 * float(d["spread"]))
    return s if ok(d) else "%s **UNRELIABLE** (%s)" % (s, d["status"].split(":", 1)[-1])


def label(d):
    th = d["threads"]
    st = d.get("setting", "-")
    if d["fw"] == "kann" and st.endswith("/mt"):
        how = "%sT kann_mt" % th
    elif d["fw"] == "kann" and st.endswith("/blas"):
        how = "%sT BLAS" % th
    elif d["fw"] == "torch" and st.endswith("/blas1"):
        how = "%sT (OpenBLAS 1T)" % th
    else:
        how = "%sT" % th
    ct = st.split("/")[0]
    return how + ("" if ct == "-" else ", " + ct)


cases = []  # (model, data, batch) in run order
for d in train + probes:
    c = (d["model"], d["data"], int(d["batch"]))
    if c not in cases:
        cases.append(c)


def runs(case, fw, threads=None):
    m, dt, b = case
    return [d for d in train if d["model"] == m and d["data"] == dt and int(d["batch"]) == b and d["fw"] == fw and
            (threads is None or int(d["threads"]) == threads)]


def best(case, fw, threads=None):
    """(the fastest reliable run, reliable?): unreliable when an unreliable run
    of this framework and thread count might have been the fastest, i.e. when
    its fastest window is not below that run's median (PyTorch's 2-thread
    MLPs, 4x below its 1-thread figure in every window, cannot have been)"""
    rs = runs(case, fw, threads)
    if not rs:
        return None, True
    good = [d for d in rs if ok(d)]
    pick = max(good or rs, key=lambda d: float(d["median"]))
    return pick, bool(good) and all(float(d["max"]) < float(pick["median"]) for d in rs if not ok(d))


def ratio(a, b):
    """nnlite figure a over peer figure b; UNRELIABLE unless both are reliable"""
    (da, oka), (db, okb) = a, b
    if da is None or db is None:
        return "-"
    if not (oka and okb):
        return "UNRELIABLE"
    return "**%.2fx**" % (float(da["median"]) / float(db["median"]))


# ---- header ----
out = []
P = out.append
P("# nnlite benchmark results%s\n" % NM)
if quick:
    P("> **NOT MEANINGFUL.** This is a `--quick` smoke run (a few steps per window): it checks that the benchmark")
    P("> runs, nothing else. No figure or ratio below says anything about speed.\n")
flags = meta.get("cpu_flags", "").split()
want = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"]
P("**CPU:** %s (%s, %s), %s cores. Flags: %s." %
  (meta.get("cpu_model", "?"), meta.get("cpu_vendor", "?"), meta.get("cpu_family_model", "?"), meta.get("cores", "?"),
   ", ".join("%s %s" % (f, "yes" if f in flags else "no") for f in want)))
P("Every figure below was measured on this CPU; a speed-up measured here says nothing about another vendor's.  ")
P("**Date:** %s to %s (UTC). **Commit:** %s. **Load average** before: %s, after: %s.  " %
  (meta.get("date", "?"), meta.get("date_end", "?"), meta.get("commit", "?"), meta.get("load_before", "?"),
   meta.get("load_after", "?")))
P("**Software:** PyTorch %s (Debian python3-torch, CPU); OpenBLAS %s; %s.  " %
  (meta.get("torch", "?"), meta.get("openblas", "?"), meta.get("compiler", "?")))
P("**Command:** `%s` (settings: %s); all figures from that one run, the commands of every process are listed at"
  " the end.%s\n" % (meta.get("command", "bash bench/run.sh"), meta.get("settings", "?"), "  " if resumes else ""))
if resumes:
    P("**Sittings:** the run was stopped and continued with `bash bench/run.sh --resume` (the same code, %s, on the"
      " same CPU with the same settings; a part stopped half-way was measured again from its start, and each part,"
      " one model with all its peers or one of the other sections, was measured in one sitting): started %s; %s.\n" %
      (meta.get("code", "?"), meta.get("date", "?"),
       "; ".join("resumed %s after %s finished parts (load %s)" % (r.get("date", "?"), r.get("after", "?"),
                                                                   r.get("load", "?").replace(",", " "))
                 for r in resumes)))

st = kv(meta.get("settings", "").split())
P("## How\n")
P("- Training: each measurement is %s consecutive timed windows of at least %s optimizer steps each (whole passes" %
  (st.get("windows", "?"), st.get("steps", "?")))
P("  over the data), after %s untimed steps, in one process: the later windows run on the optimizer state of" %
  st.get("warmup", "?"))
P("  thousands of steps, where state-dependent slowdowns (denormal Adam moments) show. Figures: samples/s, the")
P("  median of the windows [min-max, relative spread (max - min) / median].")
P("- Same architecture, optimizer, batch size, thread count and data on every side: 20 batches of uniform noise")
P("  (synthetic), or the 60,000 Fashion-MNIST training images scaled to [0, 1].")
P("- Peers at their best: OpenBLAS (PyTorch's BLAS, KANN's, the SGEMM reference) with `OPENBLAS_CORETYPE` unset")
P("  (auto) and set to each of %s, `OPENBLAS_L2_SIZE` unset; 1 and 2 threads (KANN at 2: kann_mt's split of the" %
  ", ".join(st.get("coretypes", "?").split(",")[1:] or ["?"]))
P("  batch, or OpenBLAS's threads; PyTorch at 2: OpenBLAS's threads too, or OpenBLAS on 1 thread, \"OpenBLAS 1T\");")
P("  the fastest kept and named. PyTorch with `torch.set_flush_denormal(True)` and")
P("  KANN with FTZ/DAZ (nnlite flushes denormals itself). KANN has no Adam: bench/kann_mlp.c implements Keras' Adam")
P("  over KANN's parameters. For %s every setting is measured in full; for the other models every setting is" %
  ", ".join(names.get(m, m) for m in st.get("full_search", "").split(",")))
P("  probed at both thread counts (one window of %s steps, listed below, never used for a ratio) and the %s" %
  (st.get("probe_steps", "?"), st.get("probe_keep", "?")))
P("  fastest of them all measured in full. nnlite runs those models in full at 2 threads (its best on 2 cores) and")
P("  as a probe at 1 thread, which confirms that and gives the 1-thread latency, memory and batched inference.")
P("- A measurement whose windows spread more than %.0f %%, or a peer at 2 threads below half its own 1-thread" %
  (100 * float(st.get("max_spread", "0.2"))))
P("  figure (same core type), is rerun (at most %s times); if it still fails it is shown **UNRELIABLE** and no" %
  st.get("retries", "?"))
P("  ratio is written from it (nor from the best of its framework and thread count, when even its fastest")
P("  window is not below that best: then it might have been the best).")
P("- Batch-1 latency: the median of many single-sample calls after training, each harness after 0.5 s of untimed")
P("  calls (nnlite `nnl_predict`, PyTorch eager")
P("  under `torch.no_grad()` after `model.eval()`, KANN `kann_apply1`). Peak RSS: `getrusage` of the process")
P("  (taken before the batched inference).")
P("- Batched inference: samples/s of back-to-back calls of 1, 16 and 256 samples each (nnlite `nnl_predict` with")
P("  batch_size = B from C, and through the Fortran binding's `model%predict` on sections of an array, no copies;")
P("  PyTorch as for the latency, a view of B samples a call; KANN its output node on B rows), in the process of each")
P("  training process (full or probe); the median of 3 repetitions of about %s s each." % st.get("infer_seconds", "?"))
P("- The bandwidth floor: bench/membw.c's best read bandwidth of a warm buffer the size of a model's weights (1 and")
P("  2 threads), and the time to read the weights once at that bandwidth, which no batch-1 call can beat here.")
P("- Shared-model inference: bench/predict_threads.c, one model called by 1, 2 and 4 threads at once.\n")

# ---- training ----
sec_models = len(out)  # the seed-model sections start here (dropped when the run had none)
P("## Training throughput (samples/s)%s\n" % NM)
P("Ratios: nnlite's best (1 or 2 threads) over the peer's best (any setting, 1 or 2 threads), and per thread count.\n")
P("| model | data | batch | nnlite best | PyTorch best | KANN best | nnlite / PyTorch | nnlite / KANN"
  " | nnlite / best peer | 1T: nnlite / best peer | 2T: nnlite / best peer |")
P("|---|---|---|---|---|---|---|---|---|---|---|")
summary = {}


def named(b):
    d, good = b
    if d is None:
        return "-"
    return "%s (%s)%s" % (k(d["median"]), label(d), "" if good else " **UNRELIABLE**")


def best_peer(case, threads=None):
    cands = [best(case, fw, threads) for fw in ("torch", "kann")]
    cands = [c for c in cands if c[0] is not None]
    if not cands:
        return None, True
    d = max(cands, key=lambda c: float(c[0]["median"]))
    return d[0], all(c[1] for c in cands)


for case in cases:
    n, t, kn = best(case, "nnlite"), best(case, "torch"), best(case, "kann")
    bp = best_peer(case)
    summary[case] = (n, t, kn, bp)
    P("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" %
      (names.get(case[0], case[0]), dataname.get(case[1], case[1]), case[2], named(n), named(t), named(kn),
       ratio(n, t), ratio(n, kn), ratio(n, bp), ratio(best(case, "nnlite", 1), best_peer(case, 1)),
       ratio(best(case, "nnlite", 2), best_peer(case, 2))))


def pair_stats(ps):
    """median, min and max of the paired ratios"""
    r = sorted(float(d["ratio"]) for d in ps)
    n_ = len(r)
    med = r[n_ // 2] if n_ % 2 else (r[n_ // 2 - 1] + r[n_ // 2]) / 2
    return med, r[0], r[-1]


if pairs:
    P("\n### One thread, alternated: nnlite and the fastest 1-thread peer%s\n" % NM)
    P("The 1-thread figures above come from measurements minutes apart, and this machine's speed drifts by more than")
    P("the margins between them; here nnlite and the fastest peer setting of the 1-thread measurements run one after")
    P("the other, %s times each, one window of %s steps a process, the order swapped every pair. Each ratio compares"
      % (st.get("pairs", "?"), st.get("steps", "?")))
    P("two windows seconds apart.\n")
    P("| model | data | batch | peer (setting) | nnlite samples/s, each pair | peer samples/s, each pair"
      " | nnlite / peer: median [min-max] |")
    P("|---|---|---|---|---|---|---|")
    for key, ps in list(pairs.items()) + [((m_, d_, b_, "avx2"), ps) for (m_, d_, b_), ps in pairs_avx2.items()]:
        med, lo, hi = pair_stats(ps)
        P("| %s%s | %s | %d | %s (%s) | %s | %s | **%.3fx** [%.3f-%.3f] |" %
          (names.get(key[0], key[0]), ", nnlite's AVX2 kernels (NNL_SIMD=avx2)" if len(key) > 3 else "",
           dataname.get(key[1], key[1]), key[2], fwname[ps[0]["peer"]], ps[0]["setting"],
           ", ".join(k(d["nnlite"]) for d in ps), ", ".join(k(d["peer_median"]) for d in ps), med, lo, hi))
    if pairs_avx2:
        P("\nThe AVX2 rows: nnlite capped at its AVX2 + FMA kernels (NNL_SIMD=avx2), the kernels of a CPU without")
        P("AVX-512, against KANN on OpenBLAS's Haswell (AVX2) kernels; KANN's own code is built for this CPU.")

P("\n### Every measurement%s\n" % NM)
P("| model | data | batch | library | threads, setting | samples/s: median [min-max, spread] | windows | steps/window"
  " | seconds | attempt |")
P("|---|---|---|---|---|---|---|---|---|---|")
for case in cases:
    for fw in ("nnlite", "torch", "kann"):
        for d in runs(case, fw):
            P("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" %
              (names.get(case[0], case[0]), dataname.get(case[1], case[1]), case[2], fwname[fw], label(d), cell(d),
               d["windows"].replace(",", ", "), d["steps"], d.get("seconds", "?"), d.get("attempt", "1")))
if probes:
    P("\n### Probes (one window of %s steps; choose what to measure in full, never a ratio)%s\n" %
      (st.get("probe_steps", "?"), NM))
    P("| model | data | batch | library | threads, setting | samples/s | measured in full |")
    P("|---|---|---|---|---|---|---|")
    for d in probes:
        full = any(r["fw"] == d["fw"] and r["model"] == d["model"] and r["data"] == d["data"] and
                   r["batch"] == d["batch"] and r["threads"] == d["threads"] and r["setting"] == d["setting"]
                   for r in train)
        P("| %s | %s | %s | %s | %s | %s | %s |" % (names.get(d["model"], d["model"]), dataname.get(d["data"]),
                                                    d["batch"], fwname[d["fw"]], label(d), k(d["median"]),
                                                    "yes" if full else "no"))
if rejected:
    P("\n### Reruns (attempts rejected as implausible)\n")
    for d in rejected:
        P("- %s %s batch %s, %s: %s [%s-%s, spread %.0f %%]: %s" %
          (fwname[d["fw"]], names.get(d["model"], d["model"]), d["batch"], label(d), k(d["median"]), k(d["min"]),
           k(d["max"]), 100 * float(d["spread"]), d.get("reason", "?")))

# ---- latency ----
P("\n## Batch-1 inference latency (microseconds, 1 thread)%s\n" % NM)
P("Median of the calls [10th-90th percentile]; the peer's best setting named. Speed-up = peer / nnlite.\n")
P("| model | data | nnlite | PyTorch | KANN | PyTorch / nnlite | KANN / nnlite |")
P("|---|---|---|---|---|---|---|")
lat_case = {}
for d in lat:
    if d["threads"] != "1":  # full measurements and probes: each process times its calls alike
        continue
    key = (d["model"], d["data"], d["fw"])
    if key not in lat_case or float(d["median_us"]) < float(lat_case[key]["median_us"]):
        lat_case[key] = d


def lcell(d):
    if d is None:
        return "-"
    s = "%s [%s-%s]" % (d["median_us"], d["p10_us"], d["p90_us"])
    return s + (" (%s)" % d["setting"] if d["setting"] not in ("-",) else "")


seen = []
for case in cases:
    m, dt, _ = case
    if (m, dt) in seen:
        continue
    seen.append((m, dt))
    n, t, kn = (lat_case.get((m, dt, fw)) for fw in ("nnlite", "torch", "kann"))
    if not (n or t or kn):
        continue
    sp = lambda p: "**%.1fx**" % (float(p["median_us"]) / float(n["median_us"])) if (p and n) else "-"
    P("| %s | %s | %s | %s | %s | %s | %s |" % (names.get(m, m), dataname.get(dt, dt), lcell(n), lcell(t), lcell(kn),
                                               sp(t), sp(kn)))

# ---- inference: the bandwidth floor, batched, from many threads (kept in runs without a seed model) ----
sec_inf = len(out)
cores = meta.get("cores", "?")
if membw:
    P("\n## Batch-1 latency against the memory-bandwidth floor%s\n" % NM)
    P("A batch-1 forward pass reads every weight once: the time to read the weights once at this machine's measured")
    P("bandwidth (bench/membw.c: the best of many passes over a warm buffer of the weights' size; at 2 threads each")
    P("reads half, on its own core) is a floor no batch-1 latency at that thread count reaches. K-MLP's weights fit")
    P("in one core's L2; R-LENET's (mostly its Dense(500)) do not on most cores. Latency: nnlite's median on")
    P("synthetic data at the same thread count (the table above is the 1-thread one).\n")
    P("| model | threads | weights (bytes) | best read bandwidth (GB/s) | floor: weights read once (us) | nnlite batch-1"
      " latency (us) | latency / floor |")
    P("|---|---|---|---|---|---|---|")
    for (m_, th_), d in sorted(membw.items(), key=lambda it: (list(names).index(it[0][0]) if it[0][0] in names
                                                              else 99, it[0][1])):
        ls = [x for x in lat if x["fw"] == "nnlite" and x["model"] == m_ and x["data"] == "synth" and
              x["threads"] == th_]
        n = min(ls, key=lambda x: float(x["median_us"])) if ls else None
        P("| %s | %s | %s | %s | %s | %s | %s |" % (names.get(m_, m_), th_, d.get("bytes", "?"), d.get("best_gbs", "?"),
                                                   d.get("floor_us", "?"), n["median_us"] if n else "-",
                                                   "%.1fx" % (float(n["median_us"]) / float(d["floor_us"]))
                                                   if n and float(d.get("floor_us", 0)) > 0 else "-"))

inf_full = infer  # full measurements and probes (the CNNs' 1-thread nnlite and PyTorch runs are probes)
if inf_full:
    P("\n## Batched inference (samples/s)%s\n" % NM)
    P("Back-to-back inference calls of B samples each; the median of 3 repetitions (a repetition whose figure is")
    P("more than 20 % from another is noted with the spread). nnlite from C (`nnl_predict`, batch_size = B) at 1 and")
    P("2 threads, and from Fortran (K-MLP only: `model%predict` on sections x(:, :, o:o+B-1) of an array x(28, 28, N),")
    P("passed by address, no copy); the peers' best setting named. Ratios: nnlite's best from C (1 or 2 threads) over")
    P("the peer's best. Unlike the latency table (a median of single calls) these include every interruption.")
    P("KANN evaluates on one thread (kann_mt splits training batches only); its BLAS settings give OpenBLAS threads.\n")
    P("| model | data | batch | nnlite C, 1T | nnlite C, 2T | nnlite Fortran, 1T | nnlite Fortran, 2T | PyTorch best"
      " | KANN best | nnlite / PyTorch | nnlite / KANN |")
    P("|---|---|---|---|---|---|---|---|---|---|---|")

    def ibest(sel):
        return max(sel, key=lambda d: float(d["samples_per_s"])) if sel else None

    def icell(d, named_=False):
        if d is None:
            return "-"
        v, lo, hi = float(d["samples_per_s"]), float(d.get("min", 0)), float(d.get("max", 0))
        s_ = k(v)
        if named_:
            s_ += " (%s)" % label(d)
        if v > 0 and (hi - lo) / v > 0.2:
            s_ += " (spread %.0f %%)" % (100 * (hi - lo) / v)
        return s_

    icases = []
    for d in inf_full:
        c = (d["model"], d["data"], int(d["batch"]))
        if c not in icases:
            icases.append(c)
    icases.sort(key=lambda c: (list(names).index(c[0]) if c[0] in names else 99, c[1] != "synth", c[2]))
    for c in icases:
        sel = lambda fw, th=None: [d for d in inf_full if (d["model"], d["data"], int(d["batch"])) == c and
                                   d["fw"] == fw and (th is None or d["threads"] == th)]
        n1, n2 = ibest(sel("nnlite", "1")), ibest(sel("nnlite", "2"))
        f1, f2 = ibest(sel("nnlite-fortran", "1")), ibest(sel("nnlite-fortran", "2"))
        t, kn, nb_ = ibest(sel("torch")), ibest(sel("kann")), ibest(sel("nnlite"))
        r = lambda p: "**%.2fx**" % (float(nb_["samples_per_s"]) / float(p["samples_per_s"])) if (nb_ and p) else "-"
        P("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" %
          (names.get(c[0], c[0]), dataname.get(c[1], c[1]), c[2], icell(n1), icell(n2), icell(f1), icell(f2),
           icell(t, True), icell(kn, True), r(t), r(kn)))

if pthreads:
    P("\n## Shared-model inference from many threads%s\n" % NM)
    pool = pthreads[0].get("pool", "?")
    P("bench/predict_threads.c: ONE model (784-512-512-10 MLP) called by T threads at once, each `nnl_predict` on its")
    P("own samples (batches of 1 and 16), %s s per setting; the model's own pool at %s thread(s), so the 1-thread" %
      (pthreads[0].get("seconds", "?"), pool))
    P("figure is one core. Scaling = predictions/s at T threads / at 1 thread (ideal: T, up to the cores).")
    if cores.isdigit() and int(cores) < 4:
        P("This machine has %s cores: 4 threads oversubscribe them (more threads than cores: the scaling cannot pass"
          " %s there, and the 4-thread rows measure time-slicing, not parallelism)." % (cores, cores))
    else:
        P("This machine has %s cores." % cores)
    P("")
    P("| batch | threads | predictions/s | per thread | scaling (T / 1 thread) |")
    P("|---|---|---|---|---|")
    base = {}
    for d in pthreads:
        if d.get("threads") == "1":
            base[d.get("batch")] = float(d["predictions_per_s"])
    for d in pthreads:
        b_ = base.get(d.get("batch"))
        over = " (oversubscribed)" if cores.isdigit() and int(d["threads"]) > int(cores) else ""
        P("| %s | %s%s | %s | %s | %s |" % (d["batch"], d["threads"], over, k(d["predictions_per_s"]),
                                           k(d["per_thread"]),
                                           "**%.2fx**" % (float(d["predictions_per_s"]) / b_) if b_ else "-"))
sec_inf_end = len(out)

# ---- mixed precision ----
if bf16["train"]:
    P("\n## Mixed precision: mixed_bfloat16 against float32 (nnlite, samples/s)%s\n" % NM)
    P("The same model, batch, data, steps and windows; `--precision mixed_bfloat16` rounds the GEMM operands to")
    P("bfloat16 (on AMX tiles, TDPBF16PS, where the CPU has them and Linux grants them, since 0.8.1; else")
    P("AVX512-BF16 VDPBF16PS; float32 sums, float32 weights and optimizer state). Accuracy:")
    P("`bash bench/bf16_accuracy.sh` (not part of this run).\n")
    P("| model | data | batch | threads | float32 | mixed_bfloat16 | bf16 / float32 |")
    P("|---|---|---|---|---|---|---|")
    for d in bf16["train"]:
        if d.get("kind", "full") != "full":  # a latency probe's few steps
            continue
        case = (d["model"], d["data"], int(d["batch"]))
        f = [r for r in runs(case, "nnlite", int(d["threads"])) if r.get("kind", "full") == "full"]
        r_ = "-"
        if f:
            r_ = ("**%.2fx**" % (float(d["median"]) / float(f[0]["median"])) if ok(d) and ok(f[0]) else
                  "UNRELIABLE")
        P("| %s | %s | %d | %s | %s | %s | %s |" % (names.get(case[0], case[0]), dataname.get(case[1], case[1]),
                                                    case[2], d["threads"], cell(f[0]) if f else "-", cell(d), r_))
    lats = ["%s %sT: %s us" % (names.get(d["model"], d["model"]), d["threads"], d["median_us"]) for d in bf16["latency"]]
    if lats:
        P("\nBatch-1 latency in mixed_bfloat16 (median of each process's calls): %s." % "; ".join(lats))

# ---- memory ----
P("\n## Peak RSS (MB, whole process, 1 thread)%s\n" % NM)
P("The smallest of each framework's 1-thread processes (full or probe). Includes the data (Fashion-MNIST: 188 MB")
P("as float32).\n")
P("| model | data | batch | nnlite | PyTorch | KANN | nnlite / PyTorch |")
P("|---|---|---|---|---|---|---|")
for case in cases:
    m, dt, b = case
    sel = lambda fw: [float(d["peak_mb"]) for d in rss if d["fw"] == fw and d["model"] == m and d["data"] == dt and
                      int(d["batch"]) == b and d["threads"] == "1"]
    n, t, kn = (min(sel(fw)) if sel(fw) else None for fw in ("nnlite", "torch", "kann"))
    f = lambda v: "%.0f" % v if v is not None else "-"
    P("| %s | %s | %d | %s | %s | %s | %s |" % (names.get(m, m), dataname.get(dt, dt), b, f(n), f(t), f(kn),
                                               "**%.2f**" % (n / t) if (n and t) else "-"))

# ---- OpenBLAS kernels ----
sec_blas = len(out)
kernels = {}
for d in blas:
    kernels.setdefault(d.get("setting", "?").split("/")[0], set()).add(d.get("core", "?"))
if kernels:
    P("\n## OpenBLAS kernels per OPENBLAS_CORETYPE\n")
    P("What `openblas_get_corename()` reported in the processes of each setting (auto: OpenBLAS's own detection).\n")
    P("| OPENBLAS_CORETYPE | kernels |")
    P("|---|---|")
    for ct, names_ in kernels.items():
        P("| %s | %s |" % (ct, ", ".join(sorted(names_))))

sec_blas_end = len(out)
# ---- targets ----
P("\n## Against issue 14's targets%s\n" % NM)


def verdict(ok_, what):
    return "- %s %s" % ("PASS" if ok_ else "MISS", what)


flops = step_flops()
for case, (n, t, kn, bp) in summary.items():
    m = case[0]
    if m in ("kmlp", "rmlp"):
        for th in (1, 2):
            a, b = best(case, "nnlite", th), best_peer(case, th)
            if a[0] is None or b[0] is None:
                continue
            r = ratio(a, b)
            what = "%s (%s, batch %d), %d thread(s): nnlite / best of KANN and PyTorch = %s (target >= 1.2)" % (
                names[m], dataname[case[1]], case[2], th, r.strip("*"))
            P("- UNRELIABLE: " + what if r == "UNRELIABLE" else
              verdict(float(a[0]["median"]) / float(b[0]["median"]) >= 1.2, what))
            if th == 1 and pairs.get(case):
                med, lo, hi = pair_stats(pairs[case])
                ps = pairs[case]
                P(verdict(med >= 1.2, "%s (%s, batch %d), 1 thread, alternated %d times with %s (%s): median of the "
                          "paired ratios %.3fx [%.3f-%.3f] (target >= 1.2)" %
                          (names[m], dataname[case[1]], case[2], len(ps), fwname[ps[0]["peer"]], ps[0]["setting"],
                           med, lo, hi)))
            if th == 1 and pairs_avx2.get(case):
                ps = pairs_avx2[case]
                med, lo, hi = pair_stats(ps)
                P(verdict(med >= 1.2, "%s (%s, batch %d), 1 thread, nnlite's AVX2 kernels (NNL_SIMD=avx2, as on a CPU "
                          "without AVX-512) alternated %d times with %s (%s): median of the paired ratios %.3fx "
                          "[%.3f-%.3f] (target >= 1.2)" %
                          (names[m], dataname[case[1]], case[2], len(ps), fwname[ps[0]["peer"]], ps[0]["setting"],
                           med, lo, hi)))
    elif n[0] is not None and t[0] is not None:
        r = ratio(n, t)
        what = "%s (%s, batch %d): nnlite best / PyTorch best = %s (target >= 1.5)" % (
            names[m], dataname[case[1]], case[2], r.strip("*"))
        P("- UNRELIABLE: " + what if r == "UNRELIABLE" else
          verdict(float(n[0]["median"]) / float(t[0]["median"]) >= 1.5, what))
    if m not in ("kmlp", "rmlp") and m in flops:  # the CNN step against the two-core SGEMM ceiling
        two = best(case, "nnlite", 2)
        ceil = max([v for n_ in gemm for (lab, th), pair in gemm[n_].items() if th == 2 for v in pair] or [0])
        what = "%s (%s, batch %d): the whole step on 2 threads at %%s of the two-core SGEMM ceiling (target >= 40 %%%%)" % (
            names[m], dataname[case[1]], case[2])
        if two[0] is None:
            P("- not measured: " + what % "?" + ": no 2-thread nnlite run")
        elif not ceil:
            P("- not measured: " + what % "?" + ": no SGEMM in this run (--only gemm measures it)")
        else:
            gf = float(two[0]["median"]) * flops[m] / 1e9
            what = what % ("%.0f %%" % (100 * gf / ceil)) + " (%s samples/s x %.1f MFLOP = %.1f GFLOP/s; ceiling %.1f " \
                "GFLOP/s, the fastest 2-thread SGEMM of the run, nnlite or OpenBLAS; the direct convolution's FLOPs, " \
                "which nnlite's Winograd forward undercuts: an equivalent rate)" % (
                    k(two[0]["median"]), flops[m] / 1e6, gf, ceil)
            P("- UNRELIABLE: " + what if not two[1] else verdict(gf / ceil >= 0.4, what))
for m, target in (("kmlp", 3.0), ("rlenet", 150.0)):
    d = lat_case.get((m, "synth", "nnlite"))
    if d:
        fl = ", ".join("%s us at %s thread(s)" % (v["floor_us"], th_) for (m_, th_), v in sorted(membw.items())
                       if m_ == m)
        P(verdict(float(d["median_us"]) <= target, "%s batch-1 latency %s us (1 thread; target <= %.0f us%s)" %
                  (names[m], d["median_us"], target, "; the weights read once at the measured bandwidth: " + fl
                                                     if fl else "")))
    b = [x for x in bf16["latency"] if x["model"] == m and x["threads"] == "1"]
    if b:
        P(verdict(float(b[0]["median_us"]) <= target, "%s batch-1 latency in mixed_bfloat16 %s us (1 thread; the Dense and "
                  "convolution kernels kept in bf16, since 0.8.2; target <= %.0f us; float32 above)" % (names[m], b[0]["median_us"],
                                                                                          target)))
for case in cases:  # the RSS target is the model's: synthetic data (Fashion-MNIST adds 188 MB on both sides)
    m, dt, b = case
    if dt != "synth":
        continue
    n = [float(d["peak_mb"]) for d in rss if d["fw"] == "nnlite" and (d["model"], d["data"], int(d["batch"])) == case
         and d["threads"] == "1"]
    t = [float(d["peak_mb"]) for d in rss if d["fw"] == "torch" and (d["model"], d["data"], int(d["batch"])) == case
         and d["threads"] == "1"]
    if n and t:
        P(verdict(min(n) / min(t) <= 0.2, "%s (%s, batch %d) peak RSS nnlite / PyTorch = %.2f (target <= 0.20)" %
                  (names.get(m, m), dataname.get(dt, dt), b, min(n) / min(t))))
if quick:
    P("\n(--quick: the verdicts above are NOT MEANINGFUL.)")
if not cases:  # no seed model in this run (--only gemm, ...): keep the inference sections and the OpenBLAS kernels
    out[sec_models:] = out[sec_inf:sec_inf_end] + out[sec_blas:sec_blas_end]

# ---- SGEMM ----
if gemm:
    P("\n## SGEMM, square row-major C = A B (GFLOP/s)%s\n" % NM)
    P("gemm_bench times each library's best of several calls. nnlite is measured in every OpenBLAS run")
    P("(OPENBLAS_CORETYPE does not touch it) and its best figure is shown, as OpenBLAS gets its best core")
    P("type. Both run in one process, each library over every size in turn (nnlite first), after 0.2 s of")
    P("untimed calls that start its threads: OpenBLAS's idle threads keep polling for a while after a call,")
    P("and alternating the libraries size by size gave them a core that nnlite's worker needed.\n")
    P("| n | threads | nnlite | OpenBLAS (auto) | OpenBLAS (best core type) | nnlite / best OpenBLAS |")
    P("|---|---|---|---|---|---|")
    for n_ in sorted(gemm):
        for th in (1, 2):
            runs_th = {lab: v for (lab, t_), v in gemm[n_].items() if t_ == th}
            if not runs_th:
                continue
            auto = runs_th.get("gemm", (float("nan"),) * 2)
            best_lab = max(runs_th, key=lambda lab: runs_th[lab][1])
            ob = runs_th[best_lab][1]
            nb_ = max(v[0] for v in runs_th.values())
            ct = best_lab[5:] or "auto"
            P("| %d | %d | %.1f | %.1f | %.1f (%s) | **%.0f %%** |" % (n_, th, nb_, auto[1], ob, ct, 100 * nb_ / ob))
if opt:
    P("\n## Optimizer update (GB/s)%s\n" % NM)
    P("opt_bench: bytes = the arrays each rule reads and writes once (Adam: w, g, m, v in; w, m, v out);")
    P("memcpy moves the same bytes in the same run. The plain path (NNL_NO_SIMD=1, or a CPU without AVX2) is")
    P("the scalar loop every CPU ran before issue 11, with a call to sqrtf per element where the rule has a")
    P("square root; AVX2 and AVX-512 are the kernels of nnlite.cpp section 2.\n")
    P("| optimizer | threads | memcpy | plain | AVX2 | AVX-512 | best / memcpy | best / plain |")
    P("|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for (rule, th), paths in opt.items():
        ref = optref.get((rule, th), (nan,) * 2)
        gb = {p: v[1] for p, v in paths.items()}
        bst = max(gb.values())
        P("| %s | %d | %.1f | %.1f | %.1f | %.1f | **%.2f** | %.1fx |" %
          (rule, th, ref[0], gb.get("plain", nan), gb.get("avx2", nan), gb.get("avx512", nan), bst / ref[0],
           bst / gb.get("plain", nan)))

if skips or fails:
    P("\n## Skipped or failed\n")
    for d in skips:
        P("- skipped %s: %s" % (d.get("what", "?"), d.get("reason", "?").replace("-", " ")))
    for c in fails:
        P("- FAILED: `%s`" % c)

P("\n## Commands\n")
P("`%s`, which ran (in this order):\n" % meta.get("command", "bash bench/run.sh"))
P("<details><summary>%d commands</summary>\n" % len(cmds))
P("```")
for c in cmds:
    P(c)
P("```\n</details>")

# ---- sections of other scripts, carried over ----
if keep:
    try:
        text = open(keep).read()
    except OSError:
        text = ""
    for mt in re.finditer(r"<!-- (\S+): begin -->.*?<!-- \1: end -->", text, re.S):
        P("\n" + mt.group(0))
print("\n".join(out))
