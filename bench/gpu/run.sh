#!/bin/bash
# bench/gpu/run.sh - GPU training throughput, nnlite against PyTorch on the
# same GPU in the same command: K-MLP, R-LENET, T-LENET at batch size 512,
# FP32 and TF32; and the sequence workloads at batch 20 (bench_gpu.c): T-PTB
# training words/s and one LSTM layer's training step (forward + backward)
# at bench/lstm_bench.cpp's shapes, against PyTorch's cuDNN LSTM. Builds what
# it needs, then writes bench/gpu/RESULTS.md.
#   PYTHON   a python with torch (CUDA) (default: python3)
#   SECONDS_PER_RUN  time budget per measurement (default 6)
#   MODELS, BATCH    default "kmlp rlenet tlenet" and 512
#   SEQ      default "tptb lstm200x20 lstm200x30 lstm200x35 lstm650x20
#            lstm650x30 lstm650x35" (lstmUxT: U units, T steps); "" skips them
set -euo pipefail
cd "$(dirname "$0")/../.."

py=${PYTHON:-python3}
secs=${SECONDS_PER_RUN:-6}
models=${MODELS:-kmlp rlenet tlenet}
batch=${BATCH:-512}
seq=${SEQ-tptb lstm200x20 lstm200x30 lstm200x35 lstm650x20 lstm650x30 lstm650x35}
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

# the sequence workloads, batch 20; PyTorch runs them all in one process
declare -A sn st
for m in $seq; do
    for t in 0 1; do
        sn[$m-$t]=$(build-cuda/bench_gpu "$m" 20 "$t" "$secs" | tee /dev/stderr | awk '{print $5}') || sn[$m-$t]=error
    done
done
if [ -n "$seq" ]; then
    while read -r _ m _ p v _; do
        st[$m-$([ "$p" = tf32 ] && echo 1 || echo 0)]=$v
    done < <("$py" bench/gpu/bench_torch_gpu.py "$(echo $seq | tr ' ' ',')" 20 both "$secs" | tee /dev/stderr)
fi

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
    if [ -n "$seq" ]; then
        echo
        echo "## Sequence models, batch 20"
        echo
        echo "Synthetic data, the median of 5 timed windows of about $((secs / 5)) s each after a warm-up;"
        echo "PyTorch with cuDNN's LSTM (\`torch.backends.cudnn\` enabled), torch.cuda.synchronize()"
        echo "around each window. T-PTB: Embedding(10000, 200) - LSTM(200) - LSTM(200) -"
        echo "Dense(10000), 30 steps, SGD lr 0.05, ids uniform over 10,000 words: training"
        echo "words/s. lstmUxT: one LSTM(U) layer over T steps of inputs U wide (bench/lstm_bench.cpp's"
        echo "shapes), trained with an MSE loss and SGD: milliseconds per training step"
        echo "(forward + backward + update). Ratios are nnlite's speed over PyTorch's (> 1: nnlite faster)."
        echo
        echo "| workload | precision | nnlite | PyTorch + cuDNN | nnlite / PyTorch |"
        echo "|---|---|---:|---:|---:|"
        for m in $seq; do
            for t in 0 1; do
                a=${sn[$m-$t]:-error} b=${st[$m-$t]:-error}
                ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
                if [ "$m" = tptb ]; then
                    echo "| T-PTB words/s | $([ $t = 1 ] && echo TF32 || echo FP32) | $a | $b | $ratio |"
                else # steps/s -> ms per step
                    ms() { awk -v v="$1" 'BEGIN { if (v + 0 > 0) printf "%.3f", 1000 / v; else print v }'; }
                    echo "| $m ms/step | $([ $t = 1 ] && echo TF32 || echo FP32) | $(ms "$a") | $(ms "$b") | $ratio |"
                fi
            done
        done
    fi
} > "$out"
cat "$out"
