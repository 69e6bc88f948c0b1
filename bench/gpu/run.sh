#!/bin/bash
# bench/gpu/run.sh - GPU training throughput, nnlite against PyTorch on the
# same GPU in the same command: K-MLP, R-LENET, T-LENET at batch size 512,
# FP32 and TF32. Builds what it needs, then writes bench/gpu/RESULTS.md.
#   PYTHON   a python with torch (CUDA) (default: python3)
#   SECONDS_PER_RUN  time budget per measurement (default 6)
#   MODELS, BATCH    default "kmlp rlenet tlenet" and 512
set -euo pipefail
cd "$(dirname "$0")/../.."

py=${PYTHON:-python3}
secs=${SECONDS_PER_RUN:-6}
models=${MODELS:-kmlp rlenet tlenet}
batch=${BATCH:-512}
out=bench/gpu/RESULTS.md
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (make CUDA=1 BUILD=build-cuda)"
make -s -j"$jobs" CUDA=1 BUILD=build-cuda lib
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda_home=$(dirname "$(dirname "$nvcc_path")")
cc -std=c99 -O2 -Wall -I. -Ibench -c bench/gpu/bench_gpu.c -o build-cuda/bench_gpu.o
g++ -pthread build-cuda/bench_gpu.o build-cuda/libnnlite.a -L"$cuda_home/lib64" -lcudart_static -ldl -lpthread \
    -lrt -lm -o build-cuda/bench_gpu

echo "== GPU suite (build-cuda/nnlite_gpu)"
make -s -j"$jobs" CUDA=1 BUILD=build-cuda gpu-tests
suite=PASSED
build-cuda/nnlite_gpu || suite=FAILED

declare -A nn th
for m in $models; do
    for t in 0 1; do
        k="$m-$t"
        nn[$k]=$(build-cuda/bench_gpu "$m" "$batch" "$t" "$secs" | tee /dev/stderr | awk '{print $5}') || nn[$k]=error
        th[$k]=$("$py" bench/gpu/bench_torch_gpu.py "$m" "$batch" "$t" "$secs" | tee /dev/stderr | awk '{print $5}') || th[$k]=error
    done
done

dev=$(build-cuda/bench_gpu kmlp 8 0 0.1 2>/dev/null | cut -d' ' -f6- || echo unknown)
{
    echo "# nnlite GPU benchmark"
    echo
    echo "Training throughput (samples/s, higher is better), batch size $batch, synthetic"
    echo "MNIST-shaped data, best of three timed windows of about $((secs / 3)) s each."
    echo "Device: $dev. PyTorch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')."
    echo "nnlite commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); GPU suite: $suite."
    echo "Command: \`bash bench/gpu/run.sh\`"
    echo
    echo "| model | precision | nnlite | PyTorch | nnlite / PyTorch |"
    echo "|---|---|---:|---:|---:|"
    for m in $models; do
        for t in 0 1; do
            k="$m-$t"
            ratio=$(awk -v a="${nn[$k]}" -v b="${th[$k]}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
            echo "| $m | $([ $t = 1 ] && echo TF32 || echo FP32) | ${nn[$k]} | ${th[$k]} | $ratio |"
        done
    done
} > "$out"
cat "$out"
