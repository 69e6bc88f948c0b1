#!/bin/bash
# bench/lstm_run.sh - one LSTM layer's forward + backward (issue 12): nnlite
# (bench/lstm_bench.c) against PyTorch's nn.LSTM (bench/torch_lstm.py) in
# this one run, batch 20, steps 20/30/35, 200 and 650 units (input size =
# units, as in the PTB models). nnlite and PyTorch each at 1 and 2 threads,
# PyTorch also with OPENBLAS_CORETYPE unset and set to each of $CORETYPES
# (a core type this CPU cannot run is skipped); each ratio is nnlite's best
# over PyTorch's best. Run it on an otherwise idle machine.
#
#   bash bench/lstm_run.sh                  prints the table
#   bash bench/lstm_run.sh --update-results also puts it into bench/RESULTS.md
#   SECONDS_PER_RUN=8 bash bench/lstm_run.sh longer timed windows (default 4 s, best of 3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${NNL_PYTHON:-/usr/bin/python3}
$PY -c 'import torch' 2>/dev/null || { echo "lstm_run: needs python3-torch (sudo apt-get install -y python3-torch)" >&2; exit 1; }
secs=${SECONDS_PER_RUN:-4}
coretypes=${CORETYPES:-auto SkylakeX Haswell Zen}
out=build/bench
mkdir -p "$out"
make -s lib
gcc -std=c99 -O2 -I. bench/lstm_bench.c build/libnnlite.a -pthread -lm -lstdc++ -o "$out/lstm_bench"
raw=$out/lstm_raw.txt
{
    echo "machine $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
        "$(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f)$' | tr '\n' ' ')"
    echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "torch $($PY -c 'import torch; print(torch.__version__)')"
} >"$raw"
for units in 200 650; do
    for steps in 20 30 35; do
        for threads in 1 2; do
            echo "lstm_run: $steps steps, $units units, $threads thread(s)" >&2
            "$out/lstm_bench" 20 "$steps" "$units" "$threads" "$secs" | tee -a "$raw"
            for ct in $coretypes; do
                if [ "$ct" = auto ]; then
                    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $PY bench/torch_lstm.py 20 "$steps" "$units" "$threads" "$secs"
                else
                    env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct $PY bench/torch_lstm.py 20 "$steps" "$units" "$threads" "$secs" \
                        2>/dev/null | sed "s/^torch-lstm /torch-lstm-$ct /" || true
                fi | tee -a "$raw"
            done
        done
    done
done
$PY - "$raw" >"$out/lstm.md" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1])]
head = {l[0]: ' '.join(l[1:]) for l in lines if l and l[0] in ('machine', 'date', 'torch')}
best = {}
for l in lines:
    if not l or not l[0].startswith(('nnlite-lstm', 'torch-lstm')):
        continue
    lib = 'nnlite' if l[0] == 'nnlite-lstm' else 'torch'
    who = 'nnlite' if lib == 'nnlite' else ('auto' if l[0] == 'torch-lstm' else l[0][len('torch-lstm-'):])
    key = (int(l[3]), int(l[2]))  # units, steps
    sps, th = float(l[5]), int(l[4])
    d = best.setdefault(key, {})
    if sps > d.get(lib, (0,))[0]:
        d[lib] = (sps, th, who)
    d.setdefault(lib + str(th), 0)
    d[lib + str(th)] = max(d[lib + str(th)], sps)
print('## One LSTM layer, forward + backward + SGD step (bench/lstm_run.sh)\n')
print('Machine: %s. Date: %s. PyTorch %s (CPU, Debian python3-torch).' % (head.get('machine'), head.get('date'), head.get('torch')))
print('Batch 20, input size = units; training steps (batches) per second, the best of three timed windows;')
print('PyTorch: the best of OPENBLAS_CORETYPE unset and each core type this CPU runs.\n')
print('| units | steps | nnlite 1T | nnlite 2T | PyTorch 1T | PyTorch 2T | PyTorch best (threads, core type) | nnlite best / PyTorch best |')
print('|---|---|---|---|---|---|---|---|')
ratios = []
for (u, s) in sorted(best):
    d = best[(u, s)]
    if 'nnlite' not in d or 'torch' not in d:
        continue
    r = d['nnlite'][0] / d['torch'][0]
    ratios.append(r)
    print('| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f (%dT, %s) | **%.2fx** |' % (
        u, s, d.get('nnlite1', 0), d.get('nnlite2', 0), d.get('torch1', 0), d.get('torch2', 0),
        d['torch'][0], d['torch'][1], d['torch'][2], r))
if ratios:
    print('\n- %s lowest ratio %.2f (target >= 1.5)' % ('PASS' if min(ratios) >= 1.5 else 'FAIL', min(ratios)))
PY
cat "$out/lstm.md"
if [ "${1:-}" = --update-results ]; then
    $PY - "$out/lstm.md" bench/RESULTS.md <<'PY'
import sys
section = open(sys.argv[1]).read().rstrip('\n')
begin, end = '<!-- bench/lstm_run.sh: begin -->', '<!-- bench/lstm_run.sh: end -->'
try:
    text = open(sys.argv[2]).read()
except FileNotFoundError:
    text = ''
block = begin + '\n' + section + '\n' + end + '\n'
if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):].lstrip('\n')
else:
    text = text.rstrip('\n') + '\n\n' + block
open(sys.argv[2], 'w').write(text)
PY
    echo "lstm_run: wrote its section into bench/RESULTS.md" >&2
fi
