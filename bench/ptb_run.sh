#!/bin/bash
# bench/ptb_run.sh - T-PTB training speed (issue 12): examples/ptb_lstm
# against bench/torch_ptb.py (PyTorch, the same model and settings) in this
# one run, for the thesis preset (2x200 LSTM, 30 steps, batch 20) and the
# small one (20 steps, stateful): one epoch over the first WORDS words of
# each file (default 100000: 166 batches of the thesis preset), words/s and
# batches/s of training (the training batches alone on both sides: nnlite's
# figure leaves out fit's validation pass since 2026-12-07, as PyTorch's
# leaves out its separate one; before, nnlite's counted it: about a quarter
# of its time at these sizes), at 1 and 2 threads, PyTorch also with
# OPENBLAS_CORETYPE unset and set to each of $CORETYPES; the ratio is
# nnlite's best over PyTorch's best. Run it on an otherwise idle machine.
# The full runs (perplexities) are the examples themselves:
#   build/ptb_lstm DATA --preset small   and   --preset thesis
#   /usr/bin/python3 bench/torch_ptb.py DATA --preset thesis
#
#   bash bench/ptb_run.sh [PTB_DIR] [WORDS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${NNL_PYTHON:-/usr/bin/python3}
data=${1:-../shared/data/ptb}
words=${2:-100000}
[ -r "$data/ptb.train.txt" ] || { echo "ptb_run: no $data/ptb.train.txt (see examples/ptb_lstm.c for where to get PTB)" >&2; exit 1; }
missing=()
$PY -c 'import torch' 2>/dev/null || missing+=(python3-torch)
[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] || missing+=(libopenblas0-pthread libopenblas-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "ptb_run: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
coretypes=${CORETYPES:-auto Haswell Zen}
make -s build/ptb_lstm
out=build/bench
mkdir -p "$out"
raw=$out/ptb_raw.txt
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
    "$(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f)$' | tr '\n' ' ')" \
    "$(date -u +%Y-%m-%dT%H:%MZ), $words words" | tee "$raw"
for preset in thesis small; do
    for threads in 1 2; do
        w=$(build/ptb_lstm "$data" --preset $preset --words "$words" --epochs 1 --threads $threads |
            sed -n 's/^training.*s, \([0-9.]*\) words\/s, \([0-9.]*\) batches\/s.*/\1 \2/p')
        echo "run $preset nnlite-${threads}T $w" | tee -a "$raw"
        for ct in $coretypes; do
            if [ "$ct" = auto ]; then e=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE); else e=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct); fi
            w=$("${e[@]}" $PY bench/torch_ptb.py "$data" --preset $preset --max-words "$words" --epochs 1 --threads $threads |
                sed -n 's/^epoch 1:.* \([0-9.]*\) words\/s  \([0-9.]*\) batches\/s.*/\1 \2/p')
            echo "run $preset torch-$ct-${threads}T $w" | tee -a "$raw"
        done
    done
done
$PY - "$raw" <<'PY'
import sys
best = {}
for l in open(sys.argv[1]):
    f = l.split()
    if len(f) != 5 or f[0] != 'run':
        continue
    lib = 'nnlite' if f[2].startswith('nnlite') else 'torch'
    d = best.setdefault(f[1], {})
    if float(f[3]) > d.get(lib, (0, ''))[0]:
        d[lib] = (float(f[3]), f[2], float(f[4]))
print('\n| preset | nnlite words/s (batches/s, best) | PyTorch words/s (batches/s, best) | ratio |')
print('|---|---|---|---|')
for k, d in best.items():
    n, t = d.get('nnlite'), d.get('torch')
    if n and t:
        print('| %s | %.0f (%.2f, %s) | %.0f (%.2f, %s) | **%.2fx** |' % (k, n[0], n[2], n[1], t[0], t[2], t[1], n[0] / t[0]))
PY
