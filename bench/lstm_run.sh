#!/bin/bash
# bench/lstm_run.sh - one LSTM layer's forward + backward (issue 12): nnlite
# (bench/lstm_bench.cpp) against PyTorch's nn.LSTM (bench/lstm_torch.py) in
# this one run: batch 20, steps 20/30/35, 200 and 650 units, inputs as wide
# as the units. nnlite and PyTorch at 1 and 2 threads, PyTorch also with
# OPENBLAS_CORETYPE unset and set to each of $CORETYPES; each ratio is
# nnlite's best over PyTorch's best. Run it on an otherwise idle machine.
#
# PyTorch's matrix products go through the system BLAS (Debian's
# python3-torch is built with BLAS_INFO=generic): with only the reference
# libblas3 installed they run at a few GFLOP/s, so this script installs
# OpenBLAS (which takes over libblas.so.3) and prints PyTorch's matmul
# GFLOP/s as a sanity check before trusting a ratio.
#
#   bash bench/lstm_run.sh [REPS]        (default 10 runs, the minimum kept)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${NNL_PYTHON:-/usr/bin/python3}
reps=${1:-10}
missing=()
$PY -c 'import torch' 2>/dev/null || missing+=(python3-torch)
[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] || missing+=(libopenblas0-pthread libopenblas-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "lstm_run: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
coretypes=${CORETYPES:-auto SkylakeX Haswell Zen}
out=build/bench
mkdir -p "$out"
g++ -std=c++17 -O2 -pthread -I. bench/lstm_bench.cpp -o "$out/lstm_bench"
raw=$out/lstm_raw.txt
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
    "$(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f)$' | tr '\n' ' ')" \
    "$(date -u +%Y-%m-%dT%H:%MZ)" | tee "$raw"
for threads in 1 2; do
    "$out/lstm_bench" "$threads" "$reps" | sed "s/^\([0-9]\)/nnlite-${threads}T \1/" | tee -a "$raw"
    for ct in $coretypes; do
        if [ "$ct" = auto ]; then e=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE); else e=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct); fi
        "${e[@]}" $PY -c "import torch,time; torch.set_num_threads($threads); a=torch.randn(800,800); a@a; t=time.perf_counter(); [a@a for _ in range(20)]; print('# torch $ct ${threads}T matmul 800: %.1f GFLOP/s' % (20*2*800**3/(time.perf_counter()-t)/1e9))" | tee -a "$raw"
        "${e[@]}" $PY bench/lstm_torch.py "$threads" "$reps" | sed "s/^\([0-9]\)/torch-$ct-${threads}T \1/" | tee -a "$raw"
    done
done
$PY - "$raw" <<'PY'
import sys
best = {}
for l in open(sys.argv[1]):
    f = l.split()
    if len(f) != 8 or l.startswith('#'):
        continue
    lib = 'nnlite' if f[0].startswith('nnlite') else 'torch'
    key = (int(f[1]), int(f[3]))
    ms = float(f[6])
    d = best.setdefault(key, {})
    if ms < d.get(lib, (1e30, ''))[0]:
        d[lib] = (ms, f[0])
print('\n| units | steps | nnlite fwd+bwd ms (best) | PyTorch nn.LSTM fwd+bwd ms (best) | ratio |')
print('|---|---|---|---|---|')
rs = []
for k in sorted(best):
    d = best[k]
    if 'nnlite' in d and 'torch' in d:
        r = d['torch'][0] / d['nnlite'][0]
        rs.append(r)
        print('| %d | %d | %.2f (%s) | %.2f (%s) | **%.2fx** |' % (k[0], k[1], d['nnlite'][0], d['nnlite'][1], d['torch'][0], d['torch'][1], r))
if rs:
    print('\n%s: lowest ratio %.2f (target >= 1.5)' % ('PASS' if min(rs) >= 1.5 else 'FAIL', min(rs)))
PY
