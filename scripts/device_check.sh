#!/bin/bash
# device_check.sh - everything issue 15 runs on a machine with an NVIDIA GPU,
# in one call, from binaries built elsewhere (GPU time is scarce: nothing is
# compiled here). Prepare on the build machine with
#     make device-prep MNIST=path/to/mnist     (binaries + data in build-device/pack)
# then, on the GPU machine, from the repository root:
#     bash scripts/device_check.sh [--bin build-device/pack] [--out DIR] [--budget SECONDS]
# Writes under --out (default $OUT, else build-device/out), at most 7 files:
#   env.txt       GPU, driver, CUDA, PyTorch
#   suite.log     the GPU suite (every kernel against the CPU table, models)
#   examples.log  K-MLP and R-LENET on MNIST on the GPU (accuracy, speed)
#   timing.log    each kernel of R-LENET's training step timed alone
#   mpi.log       2 ranks on the GPU against 2 on the CPU (tests/mpi; when the pack has mpi_tests and the machine mpirun)
#   bench.log     training samples/s, nnlite against PyTorch on the same GPU;
#                 then T-PTB words/s and one LSTM layer's training step
#   summary.txt   one line per step: its exit status and seconds
# NO_TORCH=1 skips PyTorch (its import alone takes 10+ s a run); MODELS,
# BENCH_SECONDS, KMLP_EPOCHS, RLENET_EPOCHS change what runs; SEQ (default
# "tptb lstm200x30 lstm650x35": T-PTB and two of bench/lstm_bench.cpp's
# shapes, about a minute in all; "" skips them) the sequence workloads.
# Every step has a time limit, so that one hanging kernel costs its step only.
set -u
cd "$(dirname "$0")/.."

bin=build-device/pack
out=${OUT:-build-device/out}
budget=480
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    *) echo "usage: $0 [--bin DIR] [--out DIR] [--budget SECONDS]" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
start=$(date +%s)
py=${PYTHON:-python3}
data="$bin/mnist"
[ -e "$data/train-images-idx3-ubyte.gz" ] || data=""

left() { echo $((budget - ($(date +%s) - start))); }
# step NAME LIMIT LOG CMD... : runs CMD with LIMIT seconds (less if the budget is shorter), appends to LOG
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local l
    l=$(left)
    [ "$l" -lt "$limit" ] && limit=$l
    if [ "$limit" -le 5 ]; then
        echo "$name: SKIPPED (budget spent)" | tee -a "$out/summary.txt"
        return
    fi
    local t0 rc
    t0=$(date +%s%N)
    echo "== $name (limit ${limit}s): $*" >>"$log"
    timeout -k 5 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local ms=$((($(date +%s%N) - t0) / 1000000))
    printf '%s: rc %d, %d.%03d s%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) \
        "$([ $rc = 124 ] && echo ' (TIMED OUT)')" | tee -a "$out/summary.txt"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nvidia-smi 2>&1 | head -5
    command -v nvcc >/dev/null && nvcc --version | tail -2
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))' 2>&1
    lscpu | grep -E 'Model name|^CPU\(s\)' 2>&1
} >"$out/env.txt"
cat "$out/env.txt"

# 1. the GPU suite, with each case's time; the accuracy case on MNIST when given
export NNL_GPU_DATA=$data
step suite 200 "$out/suite.log" "$bin/nnlite_gpu" --duration=true

# 1b. where a conv net's step goes: each kernel of R-LENET's step timed alone
step timing 60 "$out/timing.log" "$bin/nnlite_gpu" -tc='timing*' --no-skip

# 2. the seed models on MNIST on the GPU (the CPU's accuracy comes from the suite's case)
if [ -n "$data" ]; then
    step K-MLP 60 "$out/examples.log" "$bin/keras_mlp" "$data" --device cuda --epochs ${KMLP_EPOCHS:-10}
    step R-LENET 90 "$out/examples.log" "$bin/lenet" "$data" --device cuda --epochs ${RLENET_EPOCHS:-3}
else
    echo "examples: SKIPPED (no MNIST in $bin/mnist)" | tee -a "$out/summary.txt"
fi

# 2b. data parallelism on the GPU: 2 ranks sharing it against 2 ranks on the
#     CPU (tests/mpi, its GPU case; the others run too), when the pack has the
#     CUDA + MPI build and this machine has Open MPI's mpirun
if [ -x "$bin/mpi_tests" ] && command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 \
        OMPI_MCA_btl_vader_single_copy_mechanism=none NNL_NUM_THREADS=1
    step "mpi 2 ranks" 120 "$out/mpi.log" mpirun -np 2 --oversubscribe "$bin/mpi_tests"
else
    echo "mpi: SKIPPED (no mpi_tests in the pack, or no mpirun on this machine)" | tee -a "$out/summary.txt"
fi

# 3. throughput against PyTorch on the same GPU, FP32 and TF32, batch 512
#    (PyTorch: every model in one process, one import of torch)
for m in ${MODELS:-kmlp rlenet tlenet}; do
    for t in 0 1; do
        step "bench nnlite $m tf32=$t" 30 "$out/bench.log" "$bin/bench_gpu" "$m" 512 "$t" ${BENCH_SECONDS:-3}
    done
done
if [ -z "${NO_TORCH:-}" ]; then
    if [ -n "${MODELS:-}" ]; then
        for m in $MODELS; do
            step "bench torch $m" 60 "$out/bench.log" "$py" bench/gpu/bench_torch_gpu.py "$m" 512 both ${BENCH_SECONDS:-3}
        done
    else
        step "bench torch all" 120 "$out/bench.log" "$py" bench/gpu/bench_torch_gpu.py all 512 both ${BENCH_SECONDS:-3}
    fi
fi
# 3b. the sequence workloads at batch 20, FP32 and TF32: T-PTB words/s, one
#     LSTM layer's step (bench_gpu.c); PyTorch (cuDNN) all in one process
seq=${SEQ-tptb lstm200x30 lstm650x35}
for m in $seq; do
    for t in 0 1; do
        step "bench nnlite $m tf32=$t" 30 "$out/bench.log" "$bin/bench_gpu" "$m" 20 "$t" ${BENCH_SECONDS:-3}
    done
done
if [ -z "${NO_TORCH:-}" ] && [ -n "$seq" ]; then
    step "bench torch seq" 90 "$out/bench.log" "$py" bench/gpu/bench_torch_gpu.py "$(echo $seq | tr ' ' ',')" 20 both \
        ${BENCH_SECONDS:-3}
fi
grep -E '^(nnlite|torch)-gpu' "$out/bench.log" | tee -a "$out/summary.txt"
echo "total $(($(date +%s) - start)) s" | tee -a "$out/summary.txt"
