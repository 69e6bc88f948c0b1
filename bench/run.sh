#!/bin/bash
# bench/run.sh - the benchmark (not part of the tests): nnlite against its
# peers on the seed models, and nnlite's SGEMM against OpenBLAS, all in one
# run. Writes bench/RESULTS.md (bench/report.py); the raw lines go to
# build/bench/raw.txt.
#
#   bash bench/run.sh                    the full run (see "Time" below)
#   bash bench/run.sh --quick            smoke check: few steps per window; the report
#                                        says NOT MEANINGFUL and goes to build/bench/RESULTS.quick.md
#   bash bench/run.sh --only kmlp        only these parts (comma-separated): kmlp (synthetic and
#                                        Fashion-MNIST), rmlp, rlenet, kcnn, tlenet, bf16, fortran,
#                                        membw, threads, gemm, opt, busy; a partial run writes
#                                        build/bench/RESULTS.partial.md. kmlp includes fortran and
#                                        membw, rlenet includes membw (each beside its latency)
#
# Options: --quick, --only LIST, --steps N (steps per window, default 2000; a full
# run refuses fewer), --windows K (default 3, at least 3), --retries N (reruns of an
# implausible measurement, default 2), --out FILE (the report), --resume, -h.
#
#   bash bench/run.sh --resume           continue a run that was stopped (a
#                                        session's end, a reboot): the raw file is kept,
#                                        the parts it finished are not measured again, an
#                                        unfinished part is dropped and measured anew.
#                                        Refused unless the raw file is a full run of the
#                                        same code (nnlite.cpp, nnlite.h, bench/) on the
#                                        same CPU with the same options; each sitting's
#                                        dates and load go into the report. A part (one
#                                        model with all its peers, bf16, fortran, membw,
#                                        threads, gemm, opt) is always measured in one
#                                        sitting, so every ratio compares figures taken
#                                        minutes apart.
# Environment: CORETYPES (default "auto Haswell SkylakeX SapphireRapids"), NNL_PYTHON
# (python3 with torch), INFER_SECONDS (0.3: seconds per timed repetition of the batched
# inference; --quick: 0.02), FMNIST (default /usr/share/datasets/fashion-mnist), KANN_DIR
# (default ../shared/peers/kann), MODELS (the model list, default "kmlp:120:synth
# kmlp:120:fmnist rmlp:128:synth rlenet:128:synth kcnn:120:synth tlenet:512:synth";
# add tlenet:128:synth for the old table's second T-LENET), BF16_MODELS (the models
# also measured in mixed_bfloat16, default "kmlp:120:synth rmlp:128:synth"; add
# rlenet:128:synth for a CNN, ~20 minutes; list them in MODELS too for the float32 side), FULL_SEARCH (models whose
# peers are measured in full at every setting, default "kmlp rmlp"), PROBE_STEPS (200),
# PROBE_KEEP (1), PAIRS (5; --quick: 2), MAX_SPREAD (0.20), WARMUP (50), BUSY_CORE=0 (skip
# bench/busy_core.sh). SECONDS_PER_RUN, the old window length, is ignored: windows
# are counted in steps now.
#
# What it measures (issue 14, section 4):
# - Training: every measurement is WINDOWS consecutive timed windows of at least
#   STEPS optimizer steps each (whole passes over the data), after WARMUP untimed
#   steps, in one process, so the later windows run on the optimizer state of
#   thousands of steps (denormal Adam moments and other state-dependent slowdowns
#   show). Reported: the median of the windows, min-max and the relative spread
#   (max - min) / median. Data: 20 batches of uniform noise (synthetic), and for
#   K-MLP also the 60,000 Fashion-MNIST training images.
# - Peers at their best. PyTorch (Debian python3-torch, flush-to-zero on) and KANN +
#   OpenBLAS (the MLPs only: bench/kann_mlp.c, built when $KANN_DIR holds KANN, else
#   skipped with a message) run with OPENBLAS_CORETYPE unset ("auto") and set to each
#   of CORETYPES, OPENBLAS_L2_SIZE unset, at 1 and 2 threads (KANN at 2: kann_mt's
#   split of the batch, or OpenBLAS's threads; PyTorch at 2: OpenBLAS's threads too,
#   or OpenBLAS on one); the fastest setting is kept and named.
#   For the models in FULL_SEARCH (the MLPs: cheap) every setting is measured in full,
#   nnlite at 1 and 2 threads. For the CNNs every peer setting at both thread counts is
#   probed (one window of PROBE_STEPS steps; probes are listed in the report, never used
#   for a ratio) and the PROBE_KEEP fastest of them all are measured in full; nnlite is
#   measured in full at 2 threads (its best on 2 cores in every earlier run) and probed
#   at 1 thread, which checks that and gives the 1-thread latency, memory and batched
#   inference (3 windows x 2000 steps at every setting would add 6-9 hours; at both
#   thread counts for both frameworks, 1.5 hours).
# - One thread, alternated (the MLPs, FULL_SEARCH): after the full measurements,
#   nnlite and the fastest 1-thread peer setting run one after the other PAIRS times
#   at 1 thread (one window of STEPS steps a process, the order swapped every pair),
#   and the report gives the median and range of the paired ratios beside the ratio
#   of the bests. The full measurements of a model are minutes apart and this VM's
#   speed drifts by 5-10 % between them (the same K-MLP code measured 1.28x and 1.11x
#   KANN at 1 thread in two runs on 2026-12-06); a pair is seconds apart. On a CPU
#   with AVX-512, the MLPs also alternate nnlite with NNL_SIMD=avx2 (the AVX2 kernels a
#   CPU without AVX-512 runs) and KANN on OpenBLAS's Haswell (AVX2) kernels; KANN's own
#   code stays built for this CPU (-march=native).
# - Implausible references are measured again: a measurement whose windows spread
#   more than MAX_SPREAD (20 %), or a peer at 2 threads below half its own 1-thread
#   figure (same core type), is rerun up to --retries times; if it still fails, the
#   line is kept with status=UNRELIABLE and the report prints the figure marked
#   UNRELIABLE instead of a ratio. Rejected attempts stay in the raw file.
# - Batch-1 latency (median of 2001 calls, microseconds) of nnl_predict, PyTorch
#   (eval, no_grad) and KANN (kann_apply1); peak RSS (getrusage) of every process,
#   taken before the batched inference.
# - Batched inference (samples/s) at 1, 16 and 256 samples a call, in every full
#   measurement's process after the latency (probes skip it): nnl_predict from C,
#   PyTorch (eval, no_grad, a view of B samples a call), KANN (the MLPs; its output
#   node on B rows, as kann_apply1 on one), and K-MLP through the Fortran binding's
#   model%predict on sections of an array x(28, 28, N), no copies (bench/fortran_infer.f90,
#   built when gfortran is there, else skipped with a message; 1 and 2 threads). Each:
#   calls fixed from an untimed run, 3 repetitions of about INFER_SECONDS (0.3) each,
#   the median.
# - Mixed precision: nnlite in mixed_bfloat16 (bench_nnlite --precision) on BF16_MODELS
#   at 1 and 2 threads, measured as the float32 runs, against them (bf16 part; skipped
#   on a CPU without AVX512-BF16). Accuracy: bench/bf16_accuracy.sh, separately.
# - The bandwidth floor of batch-1 latency (bench/membw.c): the best read bandwidth
#   of a warm buffer the size of K-MLP's and of R-LENET's weights, at 1 and 2 threads
#   (each its half), and the time one pass over them takes at that bandwidth (1 s per
#   model and thread count).
# - One model shared by 1, 2 and 4 threads calling nnl_predict at once
#   (bench/predict_threads.c: a 784-512-512-10 MLP, batches of 1 and 16, 2 s per
#   setting, the model's own pool at 1 thread): predictions/s and the scaling.
# - nnlite's SGEMM against OpenBLAS at each core type (gemm_bench), optimizer
#   updates (opt_bench), threads on a busy core and denormals (busy_core.sh).
# - The CPU: model name, vendor, family/model/stepping and the flags avx2 fma
#   avx512f avx512_bf16 avx512_fp16 amx_*; the date, the commit, the commands.
#
# Time on 2 idle cores, estimated from the figures of issue 14 and of the previous
# RESULTS.md (each measurement's seconds are in the raw file and the report):
# - MLPs: one measurement is 3 x 2000 steps at 40-230k samples/s, 3-20 s; K-MLP
#   synthetic, K-MLP Fashion-MNIST and R-MLP with nnlite (2), PyTorch (8) and KANN
#   (12 settings) each: about 15 minutes in all; the alternated pairs about a minute a
#   model more.
# - CNNs: the smallest honest setting, 3 windows x 2000 steps (batch 120-512, ~1-5k
#   samples/s: 2-5 minutes a window), for nnlite at 2 threads and PyTorch's fastest
#   probed setting, plus 9 probes of 200 steps: R-LENET ~16 min, K-CNN ~21 min,
#   T-LENET (512) ~29 min.
# - SGEMM, optimizers, busy_core.sh: about 8 minutes.
# - Batched inference: about 4-5 s per full measurement's process (3 batch sizes x
#   (3 x 0.3 s + the untimed run)): about 80 processes, 5-6 minutes; the Fortran driver
#   10 s, membw 4 s, predict_threads 15 s.
# - bf16: K-MLP and R-MLP at 1 and 2 threads, about 2 minutes, and R-LENET's batch-1
#   latency (a probe of PROBE_STEPS steps, under a minute); R-LENET's training about 10
#   minutes more when BF16_MODELS lists it (on AMX, 0.8.1: faster than float32; it ran
#   at ~0.6x float32 on VDPBF16PS alone, a quarter of the FMA's rate on the Xeon of issue 14).
# In all about 2 hours (more with retries) on the AMD host these estimates come from;
# 3.5 hours on the Xeon of issue 14 when its CNNs ran at half the speed and PyTorch's
# 2-thread MLP figures were rerun as implausible, 1 h 37-38 min there on 2026-12-06
# (fa58376, 936c3f7), 1 h 22 min with faster CNNs (1fb67f6), 1 h 46 min with the alternated pairs in a slower hour (f7ca0ed), 2 h 5 min on an AMD EPYC Zen 4 (a9914e5); a run stopped early: --resume continues it. --quick --only kmlp: 2.5 minutes
# measured with another benchmark running (its Fashion-MNIST windows are still whole
# passes, 500 steps); --quick --only gemm,opt: 5 minutes (two builds of nnlite.cpp);
# --quick --only kmlp,threads: 10-14 minutes measured on 2 cores shared with builds
# (load 4-5), --quick --only rlenet,fortran,membw: 7 minutes, likewise.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
quick=0 only="" steps="" windows="" retries="" report_out="" resume=0 args="$*"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --only) only=${2:?--only needs a list}; shift ;;
        --steps) steps=${2:?--steps needs a number}; shift ;;
        --windows) windows=${2:?--windows needs a number}; shift ;;
        --retries) retries=${2:?--retries needs a number}; shift ;;
        --out) report_out=${2:?--out needs a file}; shift ;;
        --resume) resume=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench: unknown argument '$1' (see bash bench/run.sh --help)" >&2; exit 2 ;;
    esac
    shift
done

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

# the rules: a full run holds >= 2000 steps and >= 3 windows per measurement
if [ $quick = 1 ]; then
    steps=${steps:-20} windows=${windows:-3} retries=${retries:-0}
    warmup=5 calls=51 probe_steps=10 gemm_sizes="256 512" opt_params=100000
    infer_secs=${INFER_SECONDS:-0.02} membw_secs=0.1 threads_secs=0.2
else
    steps=${steps:-${STEPS:-2000}} windows=${windows:-${WINDOWS:-3}} retries=${retries:-${RETRIES:-2}}
    warmup=${WARMUP:-50} calls=2001 probe_steps=${PROBE_STEPS:-200} gemm_sizes="256 512 1024 2048" opt_params=1000000
    infer_secs=${INFER_SECONDS:-0.3} membw_secs=1 threads_secs=2
    if [ "$steps" -lt 2000 ] || [ "$windows" -lt 3 ]; then
        echo "bench: a full run needs --steps >= 2000 and --windows >= 3 (use --quick for a smoke check)" >&2
        exit 2
    fi
fi
[ -n "${SECONDS_PER_RUN:-}" ] && echo "bench: SECONDS_PER_RUN is ignored (windows are counted in steps: --steps)" >&2
max_spread=${MAX_SPREAD:-0.20}
pairs=${PAIRS:-5}
[ $quick = 1 ] && pairs=${PAIRS:-2}
probe_keep=${PROBE_KEEP:-1}
full_search=${FULL_SEARCH:-kmlp rmlp}
# OpenBLAS (PyTorch's BLAS here, KANN's, and the SGEMM reference) runs with each of
# these core types; each ratio uses the fastest. 0.3.21 detects some new CPUs as
# Prescott (SSE kernels): "auto" alone can flatter nnlite. 0.3.21 has no kernels of
# its own for SapphireRapids (it reports Cooperlake); the report lists the kernels
# each setting got (openblas_get_corename).
coretypes=${CORETYPES:-auto Haswell SkylakeX SapphireRapids}
models=${MODELS:-kmlp:120:synth kmlp:120:fmnist rmlp:128:synth rlenet:128:synth kcnn:120:synth tlenet:512:synth}
bf16_models=${BF16_MODELS:-kmlp:120:synth rmlp:128:synth}
fmnist=${FMNIST:-/usr/share/datasets/fashion-mnist}
kann_dir=${KANN_DIR:-../shared/peers/kann}

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

out=build/bench
mkdir -p "$out"
raw=$out/raw.txt
if [ -z "$report_out" ]; then
    if [ $quick = 1 ]; then report_out=$out/RESULTS.quick.md
    elif [ -n "$only" ]; then report_out=$out/RESULTS.partial.md
    else report_out=bench/RESULTS.md; fi
fi

# ---- build ----
make -s lib
libs=$(make -s --no-print-directory print-libs) # HDF5 etc., when this build has them
gcc -std=c99 -O2 -I. bench/bench_nnlite.c build/libnnlite.a $libs -lstdc++ -o "$out/bench_nnlite"
if want kmlp || want rlenet || want membw; then
    gcc -std=c99 -O3 -march=native -I. bench/membw.c build/libnnlite.a $libs -lstdc++ -o "$out/membw"
fi
if want threads; then
    gcc -std=c99 -O2 -I. bench/predict_threads.c build/libnnlite.a $libs -lstdc++ -o "$out/predict_threads"
fi
have_fc=0
if (want kmlp || want fortran) && command -v gfortran >/dev/null; then
    # the binding as the Makefile builds it (build/fortran/nnlite.mod, build/libnnlite_fortran.a)
    make -s build/libnnlite_fortran.a
    gfortran -O2 -ffpe-summary=none -Ibuild/fortran bench/fortran_infer.f90 build/libnnlite_fortran.a \
        build/libnnlite.a $libs -lstdc++ -o "$out/fortran_infer"
    have_fc=1
fi
OB_INC=/usr/include/x86_64-linux-gnu/openblas-pthread OB_LIB=/usr/lib/x86_64-linux-gnu/openblas-pthread
have_kann=0
if [ -e "$kann_dir/kann.c" ] && [ -e "$kann_dir/kautodiff.c" ]; then
    # the peer's own sources, compiled here into build/ only (never into nnlite)
    for f in kann kautodiff; do
        gcc -std=gnu99 -O3 -march=native -w -DHAVE_CBLAS -DHAVE_PTHREAD -I"$kann_dir" -I"$OB_INC" \
            -c "$kann_dir/$f.c" -o "$out/kann_$f.o"
    done
    # -fno-math-errno: the driver's Adam loop vectorises (sqrtf inline), the peer at its best
    gcc -std=gnu99 -O3 -march=native -fno-math-errno -DHAVE_CBLAS -DHAVE_PTHREAD -I"$kann_dir" -I. bench/kann_mlp.c \
        "$out/kann_kann.o" "$out/kann_kautodiff.o" build/libnnlite.a $libs -L"$OB_LIB" -lopenblas -lstdc++ \
        -o "$out/kann_mlp"
    have_kann=1
fi

field() { # field LINE KEY: the value of KEY=... in LINE
    local w
    for w in $1; do
        case $w in "$2="*) echo "${w#*=}"; return ;; esac
    done
}

# ---- the machine ----
envs="" # the settings from the environment, for the command line in the report
for v in CORETYPES MODELS FMNIST KANN_DIR FULL_SEARCH PROBE_STEPS PROBE_KEEP PAIRS MAX_SPREAD WARMUP STEPS WINDOWS \
    RETRIES BUSY_CORE NNL_PYTHON INFER_SECONDS; do
    if [ -n "${!v:-}" ]; then envs+="$v='${!v}' "; fi
done
cpuinfo() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2- | xargs; }
# the code measured: the blobs of nnlite.cpp, nnlite.h and bench/ (uncommitted changes included)
code_id() {
    { git ls-files -s nnlite.cpp nnlite.h bench; git diff HEAD -- nnlite.cpp nnlite.h bench; } 2>/dev/null |
        sha1sum | cut -c1-12
}
# part_done NAME: whether this run (a resumed one) finished part NAME already;
# finish_part NAME marks it finished
part_done() { grep -qx "part_done $1" "$raw"; }
finish_part() { echo "part_done $1" >>"$raw"; }
settings_line="settings steps=$steps windows=$windows warmup=$warmup retries=$retries max_spread=$max_spread probe_steps=$probe_steps probe_keep=$probe_keep pairs=$pairs full_search=${full_search// /,} coretypes=${coretypes// /,} infer_seconds=$infer_secs membw_seconds=$membw_secs threads_seconds=$threads_secs models=${models// /,} bf16_models=${bf16_models// /,}"
if [ $resume = 1 ]; then
    why=""
    mode=$([ $quick = 1 ] && echo quick || echo full)
    if [ -n "$only" ]; then why="--resume continues a whole run (no --only)"
    elif [ ! -s "$raw" ]; then why="there is no $raw to continue"
    elif ! grep -qx "mode $mode" "$raw"; then why="$raw is not a $mode run"
    elif ! grep -qx "code $(code_id)" "$raw"; then why="$raw measured other code (nnlite.cpp, nnlite.h or bench/ changed since)"
    elif ! grep -qx "cpu_model $(cpuinfo 'model name')" "$raw"; then why="$raw was measured on another CPU"
    elif ! grep -qxF "$settings_line" "$raw"; then why="$raw was measured with other settings"
    elif grep -q '^date_end ' "$raw"; then why="$raw is a finished run"
    fi
    if [ -n "$why" ]; then
        echo "bench: cannot resume: $why; run bash bench/run.sh for a new run" >&2
        exit 2
    fi
    # drop what an unfinished part wrote after the last finished one (or after the header)
    keep=$(grep -n -E '^(part_done|load_before|resume) ' "$raw" | tail -1 | cut -d: -f1)
    head -n "$keep" "$raw" >"$raw.tmp" && mv "$raw.tmp" "$raw"
    echo "resume date=$(date -u +%Y-%m-%dT%H:%MZ) load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,) after=$(grep -c '^part_done ' "$raw")" >>"$raw"
    echo "bench: resuming $raw: $(grep '^part_done ' "$raw" | cut -d' ' -f2 | tr '\n' ' ')done" >&2
else
{
    echo "mode $([ $quick = 1 ] && echo quick || echo full)"
    echo "cpu_model $(cpuinfo 'model name')"
    echo "cpu_vendor $(cpuinfo vendor_id)"
    echo "cpu_family_model family $(cpuinfo 'cpu family') model $(cpuinfo 'model[[:space:]]*:' 2>/dev/null || true) stepping $(cpuinfo stepping)"
    echo "cpu_flags $(cpuinfo flags | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|avx512_fp16|amx_bf16|amx_tile|amx_int8)$' | tr '\n' ' ')"
    echo "cores $(nproc)"
    echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- nnlite.cpp nnlite.h bench 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "code $(code_id)"
    echo "command $envs bash bench/run.sh $args"
    echo "$settings_line"
    echo "torch $($PY -c 'import torch; print(torch.__version__)')"
    echo "openblas $(dpkg-query -W -f '${Version}' libopenblas0-pthread 2>/dev/null || echo unknown)"
    echo "compiler $(gcc --version | head -1)"
    echo "load_before $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$raw"
fi
echo "bench: $(grep '^cpu_model' "$raw" | cut -d' ' -f2-); $(grep '^cpu_flags' "$raw" | cut -d' ' -f2-)" >&2
[ $quick = 1 ] && echo "bench: --quick: few steps per window, the figures are NOT MEANINGFUL" >&2

# ---- one measurement, rerun while implausible ----
# measure KIND REF CMD...: KIND full or probe; REF: the 1-thread median of the same
# peer and core type ("" if none) that a 2-thread figure must reach half of. Appends
# the output to the raw file, its train, latency, infer and rss lines with kind=, attempt=
# and status=; sets LAST_MEDIAN (empty when the command failed).
LAST_MEDIAN="" LAST_STATUS=""
measure() {
    local kind=$1 ref=$2 attempt=0 res line med spread why
    shift 2
    LAST_MEDIAN="" LAST_STATUS=""
    while :; do
        attempt=$((attempt + 1))
        echo "cmd $*" >>"$raw"
        if ! res=$("$@"); then
            echo "bench: FAILED: $*" >&2
            echo "failed $*" >>"$raw"
            return 0
        fi
        line=$(grep '^train ' <<<"$res" || true)
        med=$(field "$line" median) spread=$(field "$line" spread) why=""
        if [ "$kind" = full ]; then
            if awk -v s="$spread" -v m="$max_spread" 'BEGIN { exit !(s > m) }'; then why=spread; fi
            if [ -n "$ref" ] && awk -v a="$med" -v r="$ref" 'BEGIN { exit !(a < 0.5 * r) }'; then
                why=${why:+$why+}below-half-1T
            fi
        fi
        if [ -z "$why" ] || [ $attempt -gt "$retries" ]; then break; fi
        echo "bench: rerun ($why): $line" >&2
        echo "rejected $line reason=$why" >>"$raw"
    done
    local status=ok
    if [ -n "$why" ]; then status=UNRELIABLE:$why; fi
    sed -E "/^(train|latency|infer|rss) /s/\$/ kind=$kind attempt=$attempt status=$status/" <<<"$res" | tee -a "$raw"
    LAST_MEDIAN=$med LAST_STATUS=$status
}

# peer_cmd FW SETTING MODEL BATCH THREADS: sets CMD, the peer's command line.
# SETTING: a core type or CORETYPE/blas1 (torch at 2 threads: OpenBLAS on one thread),
# or CORETYPE/1, CORETYPE/mt, CORETYPE/blas (kann).
peer_cmd() {
    local fw=$1 setting=$2 model=$3 batch=$4 th=$5 ct=${2%%/*} split=mt bt
    if [[ $setting == */* ]]; then split=${setting#*/}; fi
    if [ "$split" = 1 ]; then split=mt; fi
    CMD=(env -u OPENBLAS_L2_SIZE)
    if [ "$ct" = auto ]; then CMD+=(-u OPENBLAS_CORETYPE); else CMD+=("OPENBLAS_CORETYPE=$ct"); fi
    case $fw in
        torch)
            # /blas1: PyTorch's OpenMP threads with OpenBLAS on one (its threads and
            # OpenMP's both spinning on 2 cores made K-MLP 3-4x slower than 1 thread)
            if [ "$split" = blas1 ]; then CMD+=("OPENBLAS_NUM_THREADS=1"); fi
            CMD+=("OMP_NUM_THREADS=$th" "$PY" bench/bench_torch.py "$model" "$batch" "$th" --setting "$setting") ;;
        kann)
            bt=1
            if [ "$split" = blas ]; then bt=$th; fi
            CMD+=("OMP_NUM_THREADS=$bt" "OPENBLAS_NUM_THREADS=$bt" "$out/kann_mlp" "$model" "$batch" "$th"
                --split "$split" --setting "$setting") ;;
    esac
}

# peer FW MODEL BATCH DATA_ARGS...: the peer at every setting, 1 and 2 threads
peer() {
    local fw=$1 model=$2 batch=$3 th s kept full key ref ct
    shift 3
    local -a dargs=("$@")
    local -A one=() probe=() # one[core type]: full 1-thread median; probe[threads:setting]: its probe
    full=0
    if [[ " $full_search " == *" $model "* ]]; then full=1; fi
    local -a all=()
    for th in 1 2; do
        for s in $coretypes; do
            if [ "$fw" = torch ] && [ $th = 2 ]; then all+=("$th:$s" "$th:$s/blas1")
            elif [ "$fw" != kann ]; then all+=("$th:$s")
            elif [ $th = 1 ]; then all+=("$th:$s/1")
            else all+=("$th:$s/mt" "$th:$s/blas"); fi
        done
    done
    kept=" ${all[*]} "
    if [ $full = 0 ]; then
        # every setting at both thread counts probed; the probe_keep fastest of them all
        # measured in full (with their latency, memory and batched inference)
        for key in "${all[@]}"; do
            th=${key%%:*} s=${key#*:}
            echo "bench: $fw $model batch $batch ($data), $th thread(s), $s: probe" >&2
            peer_cmd "$fw" "$s" "$model" "$batch" "$th"
            measure probe "" "${CMD[@]}" --steps "$probe_steps" --windows 1 --warmup "$warmup" --calls "$calls" \
                --infer-seconds "$infer_secs" "${dargs[@]}"
            probe[$key]=${LAST_MEDIAN:-0}
        done
        kept=" $(for key in "${all[@]}"; do echo "${probe[$key]} $key"; done | sort -g -r |
            awk -v n="$probe_keep" 'NR <= n { printf "%s ", $2 }')"
    fi
    for key in "${all[@]}"; do
        th=${key%%:*} s=${key#*:}
        if [[ $kept != *" $key "* ]]; then
            echo "skip what=$fw:$model:$batch:$th:$s reason=probe-not-among-the-$probe_keep-fastest" >>"$raw"
            continue
        fi
        # a 2-thread figure is checked against the same core type's 1-thread one
        # (measured in full, else its probe)
        ref=""
        if [ $th = 2 ]; then
            ct=${s%%/*}
            ref=${one[$ct]:-}
            if [ -z "$ref" ]; then
                if [ "$fw" = kann ]; then ref=${probe[1:$ct/1]:-}; else ref=${probe[1:$ct]:-}; fi
            fi
        fi
        echo "bench: $fw $model batch $batch ($data), $th thread(s), $s" >&2
        peer_cmd "$fw" "$s" "$model" "$batch" "$th"
        measure full "$ref" "${CMD[@]}" --steps "$steps" --windows "$windows" --warmup "$warmup" --calls "$calls" \
            --infer-seconds "$infer_secs" "${dargs[@]}"
        if [ $th = 1 ] && [ -n "$LAST_MEDIAN" ]; then
            one[${s%%/*}]=$LAST_MEDIAN
            if [ "$LAST_STATUS" = ok ] && awk -v a="$LAST_MEDIAN" -v b="${BEST1_MEDIAN:-0}" 'BEGIN { exit !(a > b) }'; then
                BEST1_MEDIAN=$LAST_MEDIAN BEST1_FW=$fw BEST1_SETTING=$s
            fi
        fi
    done
    return 0
}

# paired MODEL BATCH DATA_ARGS...: nnlite and the fastest 1-thread peer (BEST1_*, from
# peer above) alternated at 1 thread, PAIRS times, one window of STEPS steps each
# (after WARMUP), the order swapped every pair (nnlite first, then the peer first):
# a ratio of two runs a few seconds apart, whatever the machine's speed does in the
# minutes between the full measurements. Lines: pair ... nnlite= peer_median= ratio=.
paired() {
    local model=$1 batch=$2 i a b r
    shift 2
    [ -n "${BEST1_FW:-}" ] || return 0
    peer_cmd "$BEST1_FW" "$BEST1_SETTING" "$model" "$batch" 1
    local -a pcmd=("${CMD[@]}" --steps "$steps" --windows 1 --warmup "$warmup" --calls 3 --infer-seconds 0 "$@")
    local -a ncmd=(env OMP_NUM_THREADS=1 ${PAIR_ENV:-} "$out/bench_nnlite" "$model" "$batch" 1 --steps "$steps"
        --windows 1 --warmup "$warmup" --calls 3 --infer-seconds 0 "$@")
    echo "bench: $model batch $batch ($data), 1 thread: nnlite${PAIR_ENV:+ ($PAIR_ENV)} and $BEST1_FW ($BEST1_SETTING)" \
        "alternated $pairs times" >&2
    echo "cmd pair: ${ncmd[*]} <-> ${pcmd[*]}" >>"$raw"
    for ((i = 1; i <= pairs; i++)); do
        if ((i % 2)); then
            a=$(field "$("${ncmd[@]}" | grep '^train ')" median); b=$(field "$("${pcmd[@]}" | grep '^train ')" median)
        else
            b=$(field "$("${pcmd[@]}" | grep '^train ')" median); a=$(field "$("${ncmd[@]}" | grep '^train ')" median)
        fi
        if [ -z "$a" ] || [ -z "$b" ]; then
            echo "bench: FAILED: pair $i of $model" >&2
            echo "failed pair $i $model" >>"$raw"
            continue
        fi
        r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4f", a / b }')
        echo "pair model=$model data=$data batch=$batch threads=1 peer=$BEST1_FW setting=$BEST1_SETTING i=$i first=$( ((i % 2)) && echo nnlite || echo peer) nnlite=$a peer_median=$b ratio=$r${PAIR_TAG:-}" |
            tee -a "$raw"
    done
}

# ---- the seed models ----
cpu_avx512=0
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then cpu_avx512=1; fi
have_fmnist=0
if [ -e "$fmnist/train-images-idx3-ubyte.gz" ] || [ -e "$fmnist/train-images-idx3-ubyte" ]; then have_fmnist=1; fi
[ $have_kann = 0 ] && {
    echo "bench: no KANN in $kann_dir (kann.c, kautodiff.c): KANN + OpenBLAS skipped" >&2
    echo "skip what=kann reason=no-KANN-in-$kann_dir" >>"$raw"
}
for spec in $models; do
    IFS=: read -r model batch data <<<"$spec"
    want "$model" || continue
    part_done "$spec" && continue
    dargs=()
    if [ "$data" = fmnist ]; then
        if [ $have_fmnist = 0 ]; then
            echo "bench: no Fashion-MNIST in $fmnist (Debian: apt-get install dataset-fashion-mnist): $model on real data skipped" >&2
            echo "skip what=$model:$batch:fmnist reason=no-Fashion-MNIST-in-$fmnist" >>"$raw"
            continue
        fi
        dargs=(--data "$fmnist")
    fi
    ths="1 2"
    if [[ " $full_search " != *" $model "* ]]; then
        # a CNN: nnlite at 2 threads in full (its best on 2 cores in every earlier run), at
        # 1 thread a probe (the single-thread latency, memory and batched inference, and
        # its training figure to confirm 2 threads is the best)
        ths=2
        echo "bench: nnlite $model batch $batch ($data), 1 thread: probe" >&2
        measure probe "" env "OMP_NUM_THREADS=1" "$out/bench_nnlite" "$model" "$batch" 1 --steps "$probe_steps" \
            --windows 1 --warmup "$warmup" --calls "$calls" --infer-seconds "$infer_secs" "${dargs[@]}"
    fi
    for th in $ths; do
        echo "bench: nnlite $model batch $batch ($data), $th thread(s)" >&2
        measure full "" env "OMP_NUM_THREADS=$th" "$out/bench_nnlite" "$model" "$batch" "$th" --steps "$steps" \
            --windows "$windows" --warmup "$warmup" --calls "$calls" --infer-seconds "$infer_secs" "${dargs[@]}"
    done
    BEST1_MEDIAN="" BEST1_FW="" BEST1_SETTING=""
    peer torch "$model" "$batch" "${dargs[@]}"
    if [ $have_kann = 1 ] && [[ $model == kmlp || $model == rmlp ]]; then peer kann "$model" "$batch" "${dargs[@]}"; fi
    if [[ " $full_search " == *" $model "* ]]; then
        paired "$model" "$batch" "${dargs[@]}"
        # On a CPU with AVX-512, the kernels a CPU without it runs (NNL_SIMD=avx2: the
        # 6 x 16 AVX2 + FMA GEMM kernel, 8-wide loops) against KANN on OpenBLAS's AVX2
        # kernels (Haswell), alternated the same way: a speed-up measured with AVX-512
        # is not quoted for CPUs without it.
        if [ $have_kann = 1 ] && [ $cpu_avx512 = 1 ] && [[ $model == kmlp || $model == rmlp ]]; then
            BEST1_FW=kann BEST1_SETTING=Haswell/mt PAIR_ENV=NNL_SIMD=avx2 PAIR_TAG=" simd=avx2" \
                paired "$model" "$batch" "${dargs[@]}"
        fi
    fi
    finish_part "$spec"
done

# ---- mixed precision: nnlite in mixed_bfloat16, against its float32 figures above ----
if want bf16 && ! part_done bf16; then
    if grep -qw avx512_bf16 /proc/cpuinfo || [ "${NNL_BF16:-}" = emulate ]; then
        for spec in $bf16_models; do
            IFS=: read -r model batch data <<<"$spec"
            dargs=()
            if [ "$data" = fmnist ]; then
                [ $have_fmnist = 1 ] || continue
                dargs=(--data "$fmnist")
            fi
            for th in 1 2; do
                echo "bench: nnlite $model batch $batch ($data), $th thread(s), mixed_bfloat16" >&2
                measure full "" env "OMP_NUM_THREADS=$th" "$out/bench_nnlite" "$model" "$batch" "$th" --precision \
                    mixed_bfloat16 --steps "$steps" --windows "$windows" --warmup "$warmup" --calls "$calls" \
                    --infer-seconds 0 "${dargs[@]}"
            done
        done
        # batch-1 latency in mixed_bfloat16 of the latency models not trained above
        # (a probe: its few training steps are not reported)
        for model in kmlp rlenet; do
            [[ " $models " == *" $model:"* ]] || continue
            [[ " $bf16_models " == *" $model:"* ]] && continue
            batch=120
            [ "$model" = rlenet ] && batch=128
            echo "bench: nnlite $model batch-1 latency, 1 thread, mixed_bfloat16" >&2
            measure probe "" env OMP_NUM_THREADS=1 "$out/bench_nnlite" "$model" "$batch" 1 --precision mixed_bfloat16 \
                --steps "$probe_steps" --windows 1 --warmup "$warmup" --calls "$calls" --infer-seconds 0
        done
    else
        echo "bench: this CPU has no AVX512-BF16: mixed_bfloat16 skipped" >&2
        echo "skip what=bf16 reason=no-AVX512-BF16-on-this-CPU" >>"$raw"
    fi
    finish_part bf16
fi

# ---- batched inference from Fortran, the bandwidth floor, one model on many threads ----
if { want kmlp || want fortran; } && ! part_done fortran; then
    if [ $have_fc = 1 ]; then
        for th in 1 2; do
            echo "bench: nnlite K-MLP batched inference from Fortran, $th thread(s)" >&2
            echo "cmd OMP_NUM_THREADS=$th $out/fortran_infer $th --seconds $infer_secs" >>"$raw"
            if ! OMP_NUM_THREADS=$th "$out/fortran_infer" "$th" --seconds "$infer_secs" | tee -a "$raw"; then
                echo "bench: FAILED: $out/fortran_infer $th" >&2
                echo "failed $out/fortran_infer $th --seconds $infer_secs" >>"$raw"
            fi
        done
    else
        echo "bench: no gfortran: the Fortran binding's batched inference skipped" >&2
        echo "skip what=fortran reason=no-gfortran" >>"$raw"
    fi
    finish_part fortran
fi
if { want kmlp || want rlenet || want membw; } && ! part_done membw; then
    echo "bench: read bandwidth over K-MLP's and R-LENET's weights" >&2
    echo "cmd $out/membw --seconds $membw_secs --threads 2 kmlp rlenet" >>"$raw"
    if ! "$out/membw" --seconds "$membw_secs" --threads 2 kmlp rlenet | tee -a "$raw"; then
        echo "bench: FAILED: $out/membw" >&2
        echo "failed $out/membw --seconds $membw_secs --threads 2 kmlp rlenet" >>"$raw"
    fi
    finish_part membw
fi
if want threads && ! part_done threads; then
    echo "bench: one model, nnl_predict from 1, 2 and 4 threads" >&2
    echo "cmd $out/predict_threads $threads_secs 1" >>"$raw"
    if ! "$out/predict_threads" "$threads_secs" 1 | tee -a "$raw"; then
        echo "bench: FAILED: $out/predict_threads" >&2
        echo "failed $out/predict_threads $threads_secs 1" >>"$raw"
    fi
    finish_part threads
fi

# ---- SGEMM and optimizer updates ----
if want gemm && ! part_done gemm; then
    g++ -std=c++17 -O2 -pthread -I"$OB_INC" bench/gemm_bench.cpp -o "$out/gemm_bench" -L"$OB_LIB" -lopenblas
    for threads in 1 2; do
        for ct in $coretypes; do
            echo "bench: SGEMM, $threads thread(s), OpenBLAS $ct" >&2
            echo "cmd OPENBLAS_CORETYPE=$ct $out/gemm_bench $threads $gemm_sizes" >>"$raw"
            if [ "$ct" = auto ]; then
                env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$out/gemm_bench" "$threads" $gemm_sizes
            else
                env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$ct "$out/gemm_bench" "$threads" $gemm_sizes
            fi | sed "s/^gemm /gemm-$ct /; s/^blas fw=gemm /blas fw=gemm setting=$ct threads=$threads /; s/^gemm-auto /gemm /" |
                tee -a "$raw"
        done
    done
    finish_part gemm
fi
if want opt && ! part_done opt; then
    g++ -std=c++17 -O2 -pthread bench/opt_bench.cpp -o "$out/opt_bench"
    for threads in 1 2; do
        echo "bench: optimizer updates of $opt_params parameters, $threads thread(s)" >&2
        echo "cmd $out/opt_bench $opt_params $threads 1" >>"$raw"
        "$out/opt_bench" "$opt_params" "$threads" 1 | tee -a "$raw"
    done
    finish_part opt
fi
echo "load_after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw"
echo "date_end $(date -u +%Y-%m-%dT%H:%MZ)" >>"$raw"
# bench/RESULTS.md keeps the sections other scripts wrote into it (busy_core.sh, lstm_run.sh, ...)
keep=()
if [ "$report_out" = bench/RESULTS.md ]; then keep=(--keep bench/RESULTS.md); fi
$PY bench/report.py "$raw" "${keep[@]}" >"$report_out.tmp"
mv "$report_out.tmp" "$report_out"
# threads on a busy core and denormals (about 5 more minutes; BUSY_CORE=0 skips it);
# only in a full run that writes bench/RESULTS.md
if [ $quick = 0 ] && [ "$report_out" = bench/RESULTS.md ] && [ "${BUSY_CORE:-1}" != 0 ] && want busy; then
    bash bench/busy_core.sh --update-results
fi
echo "bench: wrote $report_out"
