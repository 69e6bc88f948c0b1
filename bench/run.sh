#!/bin/bash
# bench/run.sh - the benchmark (not part of the tests): nnlite against
# PyTorch (CPU, Debian python3-torch) on the seed models, and nnlite's SGEMM
# against OpenBLAS (Debian libopenblas-dev), all in this one run. Writes
# bench/RESULTS.md; the raw lines go to build/bench/raw.txt.
#
#   bash bench/run.sh            (about 11 minutes on 2 idle cores, bench/busy_core.sh included)
#   SECONDS_PER_RUN=12 bash bench/run.sh   longer timed windows (default 6 s per run, best of 3)
#
# PyTorch and OpenBLAS run with OPENBLAS_CORETYPE unset and set to each of
# $CORETYPES (OPENBLAS_L2_SIZE unset); the ratios use the fastest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${NNL_PYTHON:-/usr/bin/python3}
missing=()
$PY -c 'import torch, numpy' 2>/dev/null || missing+=(python3-torch python3-numpy)
[ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || missing+=(libopenblas-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "bench: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

secs=${SECONDS_PER_RUN:-6}
# OpenBLAS (PyTorch's BLAS here and the SGEMM reference) runs with each of
# these core types; each ratio uses its fastest. 0.3.21 falls back to slow
# generic kernels on CPUs it does not know, so "auto" alone can flatter nnlite.
coretypes=${CORETYPES:-auto SkylakeX Haswell Zen}
out=build/bench
mkdir -p "$out"
make -s lib
gcc -std=c99 -O2 -I. bench/bench_nnlite.c build/libnnlite.a -pthread -lm -lstdc++ -o "$out/bench_nnlite"
g++ -std=c++17 -O2 -pthread -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/gemm_bench.cpp \
    -o "$out/gemm_bench" -L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas
raw=$out/raw.txt
{
    echo "machine $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
    echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "torch $($PY -c 'import torch; print(torch.__version__)')"
    echo "simd $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f)$' | tr '\n' ' ')"
} >"$raw"
for threads in 1 2; do
    for mb in "kmlp 120" "rmlp 128" "tlenet 512" "tlenet 128" "kcnn 120" "rlenet 128"; do
        set -- $mb
        echo "bench: $1 batch $2, $threads thread(s)" >&2
        OMP_NUM_THREADS=$threads "$out/bench_nnlite" "$1" "$2" "$threads" "$secs" | tee -a "$raw"
        for ct in $coretypes; do
            if [ "$ct" = auto ]; then
                env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$threads $PY bench/bench_torch.py "$1" "$2" "$threads" "$secs"
            else
                env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct OMP_NUM_THREADS=$threads $PY bench/bench_torch.py "$1" "$2" "$threads" "$secs" |
                    sed "s/^torch /torch-$ct /"
            fi | tee -a "$raw"
        done
    done
done
for threads in 1 2; do
    for ct in $coretypes; do
        if [ "$ct" = auto ]; then
            env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$out/gemm_bench" "$threads" 256 512 1024 2048
        else
            env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct "$out/gemm_bench" "$threads" 256 512 1024 2048 | sed "s/^gemm /gemm-$ct /"
        fi | tee -a "$raw"
    done
done
g++ -std=c++17 -O2 -pthread bench/opt_bench.cpp -o "$out/opt_bench"
for threads in 1 2; do
    echo "bench: optimizer updates of 1M parameters, $threads thread(s)" >&2
    "$out/opt_bench" 1000000 "$threads" 1 | tee -a "$raw"
done
$PY bench/report.py "$raw" >bench/RESULTS.md
# threads on a busy core and denormals (about 5 more minutes; BUSY_CORE=0 skips it)
if [ "${BUSY_CORE:-1}" != 0 ]; then
    bash bench/busy_core.sh --update-results
fi
echo "bench: wrote bench/RESULTS.md"
