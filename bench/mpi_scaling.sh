#!/bin/bash
# bench/mpi_scaling.sh - data-parallel scaling of the thesis' workloads on this
# machine (issue 13): examples/mpi_train built with MPI (make MPI=1, build-mpi/)
# runs, one after the other, T-LENET at batch 512, 256 and 128 and T-PTB at
# batch 20 and 5 (batch per rank, Horovod's convention), each on 1 rank and on
# 2, one thread per rank (NNL_NUM_THREADS=1, mpirun --bind-to core), for a
# fixed number of steps (--steps: about 20-40 s a run on an idle 2-core
# machine); then bench/allreduce_bench on 2 ranks (the gradient allreduce of
# both models' sizes). Prints batches/s (the thesis' definition: samples *
# epochs * workers / (batch_size * duration), see examples/mpi_train.c),
# speedup = batches/s(2) / batches/s(1) and efficiency = speedup / 2 per
# model and batch. Run it on an otherwise idle machine: ranks that share
# cores with other work measure that work.
#
#   bash bench/mpi_scaling.sh [--json FILE] [--quick] [--windows W] [--only LIST]
#                             [--lenet-data DIR] [--ptb-data DIR]
#
# --json FILE  also writes the results as JSON: the shape of
#              bench/scaling_inputs.example.json (scaling_model.py's input:
#              per workload params, t_compute_s = 1 / batches/s on 1 rank,
#              buckets, measured.allreduce_s_np2 and measured.batches_per_s),
#              with the runs' RESULT lines and the allreduce table added
# --quick      3 steps a run, a few allreduce repetitions: checks that
#              everything runs (the numbers mean nothing)
# --windows W  W windows (default 5); each runs every rank count of every
#              workload once, one after the other, so that the 1-rank and the
#              2-rank run of a window see the same machine; the efficiency of
#              each window is computed from its own runs, and the table gives
#              the median over the windows and the range (a virtual machine's
#              cores slow down and speed up with the host's load)
# --only LIST  the workloads to run, e.g. tlenet512,tptb20 (default all five)
# --pair       also, in each window, two independent 1-rank runs at once, one
#              on each core (no communication between them): what the machine
#              itself gives two processes, the ceiling of any 2-rank run on it.
#              The table adds ceiling = (their two batches/s) / (2 x the 1-rank
#              run's) and efficiency / ceiling (what the data parallelism
#              itself loses: the allreduce and waiting for the slower rank)
# --lenet-data Fashion-MNIST (default /usr/share/datasets/fashion-mnist; when
#              missing, ../shared/data/mnist: MNIST has the same shapes, so the
#              same speed)
# --ptb-data   the PTB folder (default: where mpi_train looks, ../shared/data/ptb)
# RANKS="1 2 4" (environment) runs other rank counts (one core each, else
# mpirun --bind-to core refuses); speedup is against 1 rank. Logs: build-mpi/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
json= quick=0 lenet= ptbdir= windows=5 only= pair=0
while [ $# -gt 0 ]; do
    case $1 in
    --json) json=${2:?--json needs a file}; shift 2 ;;
    --quick) quick=1; shift ;;
    --windows) windows=${2:?--windows needs a count}; shift 2 ;;
    --only) only=${2:?--only needs a list such as tlenet512,tptb20}; shift 2 ;;
    --pair) pair=1; shift ;;
    --lenet-data) lenet=${2:?--lenet-data needs a folder}; shift 2 ;;
    --ptb-data) ptbdir=${2:?--ptb-data needs a folder}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mpi_scaling: unknown argument '$1' (known: --json FILE, --quick, --windows W, --only LIST, --pair, --lenet-data DIR, --ptb-data DIR)" >&2
       exit 2 ;;
    esac
done
ranks=${RANKS:-1 2}
case $windows in '' | *[!0-9]* | 0) echo "mpi_scaling: --windows needs a positive count" >&2; exit 2 ;; esac
if ! command -v mpirun >/dev/null 2>&1; then
    echo "mpi_scaling: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)" >&2
    exit 1
fi
if [ -z "$lenet" ]; then
    lenet=/usr/share/datasets/fashion-mnist
    if [ ! -r "$lenet/train-labels-idx1-ubyte.gz" ] && [ ! -r "$lenet/train-labels-idx1-ubyte" ]; then
        if [ -r ../shared/data/mnist/train-labels-idx1-ubyte.gz ]; then
            echo "mpi_scaling: no Fashion-MNIST in $lenet (apt-get install dataset-fashion-mnist);" \
                 "T-LENET runs on ../shared/data/mnist (MNIST: the same shapes, the same speed)"
            lenet=../shared/data/mnist
        else
            echo "mpi_scaling: no Fashion-MNIST (apt-get install dataset-fashion-mnist) or MNIST found;" \
                 "pass one with --lenet-data DIR" >&2
            exit 1
        fi
    fi
fi

make -s -j1 MPI=1 build-mpi/mpi_train build-mpi/allreduce_bench
# OpenMPI refuses to run as root unless told; shared memory between the ranks,
# no fabric probing (as scripts/check_mpi.sh; single-copy CMA off unless the
# environment says otherwise: containers without ptrace rights refuse it);
# one thread per rank, each rank on its own core.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 NNL_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
out=build-mpi/bench
mkdir -p "$out"
raw=$out/mpi_scaling_raw.txt
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ);" \
    "ranks: $ranks; $(mpirun --version 2>/dev/null | head -1), vader single copy: $OMPI_MCA_btl_vader_single_copy_mechanism$([ $quick = 1 ] && echo '; QUICK (3 steps)')" | tee "$raw"

# model batch epochs steps: epochs x steps x (batch x 2 ranks) within one pass
# over the data, 10-20 s a run on this kind of machine (T-LENET 512: ~0.3 s a
# batch on one thread, 128: ~0.08; T-PTB 20: ~0.22 s; 5: ~0.06): short runs
# and several windows follow the host's load better than a few long runs
configs=("tlenet 512 2 30" "tlenet 256 2 60" "tlenet 128 2 120" "tptb 20 1 50" "tptb 5 1 200")
if [ -n "$only" ]; then
    kept=()
    for c in "${configs[@]}"; do
        set -- $c
        case ",$only," in *",$1$2,"*) kept+=("$c") ;; esac
    done
    [ ${#kept[@]} -gt 0 ] || { echo "mpi_scaling: --only '$only' names none of tlenet512 tlenet256 tlenet128 tptb20 tptb5" >&2; exit 2; }
    configs=("${kept[@]}")
fi
[ $quick = 1 ] && windows=1
for win in $(seq 1 "$windows"); do
  for c in "${configs[@]}"; do
    set -- $c
    model=$1 batch=$2 epochs=$3 steps=$4
    [ $quick = 1 ] && epochs=1 steps=3
    data=()
    [ "$model" = tlenet ] && data=("$lenet")
    [ "$model" = tptb ] && [ -n "$ptbdir" ] && data=("$ptbdir")
    for np in $ranks; do
        echo "== window $win/$windows: mpirun -np $np --bind-to core build-mpi/mpi_train ${data[*]} --model $model" \
             "--batch $batch --epochs $epochs --steps $steps --no-test"
        log=$out/mpi_train_${model}_b${batch}_np${np}_w${win}.log
        timeout 900 mpirun -np "$np" --bind-to core build-mpi/mpi_train "${data[@]}" --model "$model" \
            --batch "$batch" --epochs "$epochs" --steps "$steps" --no-test >"$log" 2>&1 ||
            { cat "$log"; echo "mpi_scaling: FAILED: $model batch $batch on $np rank(s)" >&2; exit 1; }
        grep -E '^(epoch|training:)' "$log" | sed 's/^/   /'
        grep '^RESULT' "$log" | sed "s/\$/ window=$win/" | tee -a "$raw"
        if [ "$np" = 1 ] && [ $pair = 1 ]; then
            echo "== window $win/$windows: two independent 1-rank runs at once (taskset -c 0 and -c 1)"
            for core in 0 1; do
                timeout 900 taskset -c $core build-mpi/mpi_train "${data[@]}" --model "$model" --batch "$batch" \
                    --epochs "$epochs" --steps "$steps" --no-test >"$out/pair_${model}_b${batch}_c${core}_w${win}.log" 2>&1 &
            done
            wait
            for core in 0 1; do
                grep '^RESULT' "$out/pair_${model}_b${batch}_c${core}_w${win}.log" |
                    sed "s/^RESULT /PAIR /; s/\$/ window=$win core=$core/" | tee -a "$raw" ||
                    { echo "mpi_scaling: FAILED: the pair run on core $core" >&2; exit 1; }
            done
        fi
    done
  done
done
np2=2
echo "== mpirun -np $np2 --bind-to core build-mpi/allreduce_bench"
reps=()
[ $quick = 1 ] && reps=(--reps 3 --warmup 1)
timeout 300 mpirun -np $np2 --bind-to core build-mpi/allreduce_bench "${reps[@]}" | tee "$out/allreduce.log" |
    grep -v '^RESULT'
grep '^RESULT' "$out/allreduce.log" | sed 's/^RESULT /ALLREDUCE /' >>"$raw"

# the table (and the JSON): Python's standard library only
python3 - "$raw" "$json" "$quick" <<'EOF'
import json, sys, time

raw, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
runs, allreduce, pairs, header = [], [], [], ""
for line in open(raw):
    if line.startswith("#"):
        header = line[1:].strip()
        continue
    kind, _, rest = line.strip().partition(" ")
    d = {}
    for kv in rest.split():
        k, _, v = kv.partition("=")
        try:
            d[k] = int(v)
        except ValueError:
            try:
                d[k] = float(v)
                if d[k] != d[k]:  # nan (no test metric): null in JSON
                    d[k] = None
            except ValueError:
                d[k] = v
    if kind == "PAIR":
        pairs.append(d)
    else:
        (runs if kind == "RESULT" else allreduce).append(d)

NAMES = {"tlenet": "T-LENET", "tptb": "T-PTB"}
# trainable parameters per layer, first to last (examples/mpi_train.c)
LAYERS = {"tlenet": [520, 25050, 400500, 5010], "tptb": [2000000, 320800, 320800, 2010000]}


def buckets(layers, mb=4.0):
    """MPI_Iallreduce calls per step: backward offers each layer's gradient,
    last layer first; a bucket goes once NNL_MPI_BUCKET_MB (4) megabytes are
    pending, the rest at the end of backward (nnlite.cpp, Dist::grad_ready)."""
    size = max(1024, int(mb * (1 << 20) / 4))
    n, pending = 0, 0
    for p in reversed(layers):
        pending += p
        if pending >= size:
            n, pending = n + 1, 0
    return n + (1 if pending else 0)


def allreduce_s(n):
    for a in allreduce:
        if a["n"] == n and a["ranks"] == 2:
            return a["median_s"]
    return None


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


work = []
for model, batch in sorted({(r["model"], r["batch"]) for r in runs}, key=lambda k: (k[0] != "tlenet", -k[1])):
    mine = [r for r in runs if r["model"] == model and r["batch"] == batch]
    nranks = sorted({r["ranks"] for r in mine})
    wins = sorted({r.get("window", 1) for r in mine})
    by = {(r["ranks"], r.get("window", 1)): r for r in mine}
    params = sum(LAYERS[model])
    bps_all = {n: [by[n, k]["batches_per_s"] for k in wins if (n, k) in by] for n in nranks}
    bps = {str(n): round(median(bps_all[n]), 4) for n in nranks}
    w = {"model": NAMES[model], "batch": batch, "params": params, "windows": len(wins)}
    if 1 in nranks:
        w["t_compute_s"] = round(1.0 / median(bps_all[1]), 6)
    w["backward_share"] = 0.62 if model == "tlenet" else 0.60
    w["buckets"] = buckets(LAYERS[model])
    w["measured"] = {"batches_per_s": bps,
                     "batches_per_s_range": {str(n): [min(bps_all[n]), max(bps_all[n])] for n in nranks}}
    if allreduce_s(params) is not None:
        w["measured"]["allreduce_s_np2"] = allreduce_s(params)
    if 1 in nranks:
        # each window's speedup from its own 1-rank run: the median and the range over the windows
        sp = {n: [by[n, k]["batches_per_s"] / by[1, k]["batches_per_s"] for k in wins if (n, k) in by and (1, k) in by]
              for n in nranks}
        w["measured"]["speedup"] = {str(n): round(median(sp[n]), 4) for n in nranks if sp[n]}
        w["measured"]["efficiency"] = {str(n): round(median(sp[n]) / n, 4) for n in nranks if sp[n]}
        w["measured"]["efficiency_range"] = {str(n): [round(min(sp[n]) / n, 4), round(max(sp[n]) / n, 4)]
                                             for n in nranks if sp[n]}
    pr = {}
    for p in pairs:
        if p["model"] == model and p["batch"] == batch:
            pr.setdefault(p["window"], []).append(p["batches_per_s"])
    ceil = [sum(pr[k]) / (2 * by[1, k]["batches_per_s"]) for k in wins if len(pr.get(k, [])) == 2 and (1, k) in by]
    if ceil:
        rel = [by[2, k]["batches_per_s"] / sum(pr[k]) for k in wins if len(pr.get(k, [])) == 2 and (2, k) in by]
        w["measured"]["pair_ceiling"] = round(median(ceil), 4)
        w["measured"]["pair_ceiling_range"] = [round(min(ceil), 4), round(max(ceil), 4)]
        w["measured"]["efficiency_over_ceiling"] = round(median(rel), 4)
        w["measured"]["efficiency_over_ceiling_range"] = [round(min(rel), 4), round(max(rel), 4)]
        w["pair_runs"] = [p for p in pairs if p["model"] == model and p["batch"] == batch]
    w["runs"] = [by[n, k] for k in wins for n in nranks if (n, k) in by]
    work.append(w)

print()
print("# " + header)
cols = sorted({r["ranks"] for r in runs})
print("medians over the windows (range in brackets); each window's speedup from its own 1-rank run")
print("| model | batch/rank | windows | " + " | ".join("batches/s %d rank%s" % (n, "s" if n > 1 else "") for n in cols) +
      " | " + " | ".join("speedup %d | efficiency %d" % (n, n) for n in cols if n > 1) + " |")
print("|---|---|---|" + "---|" * (len(cols) + 2 * len([n for n in cols if n > 1])))
for w in work:
    m = w["measured"]
    cells = []
    for n in cols:
        b, r = m["batches_per_s"].get(str(n)), m["batches_per_s_range"].get(str(n))
        cells.append("%.2f (%.2f-%.2f)" % (b, r[0], r[1]) if b else "-")
    row = "| %s | %d | %d | " % (w["model"], w["batch"], w["windows"]) + " | ".join(cells)
    for n in cols:
        if n > 1:
            sp = m.get("speedup", {}).get(str(n))
            er = m.get("efficiency_range", {}).get(str(n))
            row += " | %s | %s" % (("%.2f" % sp, "%.2f (%.2f-%.2f)" % (sp / n, er[0], er[1])) if sp else ("-", "-"))
    print(row + " |")
if any("pair_ceiling" in w["measured"] for w in work):
    print()
    print("the machine's own ceiling (two independent 1-rank runs at once, per window; median and range):")
    print("| model | batch/rank | ceiling = pair / (2 x 1 rank) | efficiency 2 / ceiling = 2 ranks / pair |")
    print("|---|---|---|---|")
    for w in work:
        m = w["measured"]
        if "pair_ceiling" in m:
            c, cr = m["pair_ceiling"], m["pair_ceiling_range"]
            e, er = m["efficiency_over_ceiling"], m["efficiency_over_ceiling_range"]
            print("| %s | %d | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) |" % (w["model"], w["batch"], c, cr[0], cr[1], e, er[0],
                                                                     er[1]))
print()
print("allreduce on 2 ranks (median): " + ", ".join(
    "%d floats %.3g ms (%.2f GB/s)" % (a["n"], 1e3 * a["median_s"], a["algbw_GBps"]) for a in allreduce))
if out:
    doc = {
        "_comment": [
            "MEASURED by bench/mpi_scaling.sh%s: %s." % (" --quick (3 steps a run: NOT meaningful)" if quick else "",
                                                         header),
            "t_compute_s = 1 / batches_per_s on 1 rank (forward, backward and update of one batch, one thread).",
            "buckets: the MPI_Iallreduce calls of one step at NNL_MPI_BUCKET_MB=4, from the layers' sizes.",
            "backward_share is NOT measured: the guesses of bench/scaling_inputs.example.json.",
            "measured.allreduce_s_np2: bench/allreduce_bench on 2 ranks (median, MPI_Allreduce in place).",
        ],
        "example": quick,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workloads": work,
        "allreduce_np2": allreduce,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("wrote " + out)
EOF
