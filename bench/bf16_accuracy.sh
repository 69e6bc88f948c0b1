#!/bin/bash
# bench/bf16_accuracy.sh - the seed models' test accuracy in float32 and in
# mixed_bfloat16 (issue 14: "the seed models reach their float32 accuracy
# within 0.3 points"), each example run twice with the same seed, data and
# epochs, only --precision differing. Not part of the tests (minutes to hours).
#
#   bash bench/bf16_accuracy.sh [--epochs N] [--data DIR] [--seeds S1,S2,...] [EXAMPLE...]
#
# EXAMPLE: keras_mlp (K-MLP), mnist_mlp (R-MLP), fashion_lenet, lenet
# (R-LENET), keras_cnn (K-CNN); default: all five, at each example's own
# epochs unless --epochs is given. --data: an MNIST-style folder (default
# Debian's Fashion-MNIST, /usr/share/datasets/fashion-mnist). --seeds: the
# model seeds (each example's --seed; default: its own, 42), each trained in
# both precisions. One run's test accuracy moves by tenths of a point with
# the seed alone (R-LENET in float32, seeds 42 / 1 / 2 on AMD Zen 4: 91.60
# / 90.80 / 91.32 %), as much as the bound, so several seeds say more than
# one. Prints a line per example and seed (float32 and mixed_bfloat16 test
# accuracy, the difference in points), and with several seeds a line with
# the means; exits 1 when the difference (of the means, with several
# seeds) exceeds 0.3 points. Needs a CPU with AVX512-BF16 (elsewhere
# mixed_bfloat16 is refused: set NNL_BF16=emulate for the same numbers,
# slowly).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="" data=/usr/share/datasets/fashion-mnist list=() seeds=()
while [ $# -gt 0 ]; do
    case $1 in
        --epochs) epochs=${2:?--epochs needs a number}; shift ;;
        --data) data=${2:?--data needs a folder}; shift ;;
        --seeds) IFS=, read -r -a seeds <<<"${2:?--seeds needs a list, e.g. 42,1,2}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) list+=("$1") ;;
    esac
    shift
done
[ ${#list[@]} -gt 0 ] || list=(keras_mlp mnist_mlp fashion_lenet lenet keras_cnn)
make -s examples
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
fail=0
for ex in "${list[@]}"; do
    sum32=0 sum16=0
    for seed in "${seeds[@]:-}"; do
        acc=()
        for p in float32 mixed_bfloat16; do
            args=("$data" --precision "$p")
            [ -n "$epochs" ] && args+=(--epochs "$epochs")
            [ -n "$seed" ] && args+=(--seed "$seed")
            t0=$(date +%s)
            line=$("build/$ex" "${args[@]}" 2>&1 | grep -o 'test accuracy: [0-9.]*' | tail -1)
            [ -n "$line" ] || { echo "$ex ($p): no test accuracy printed" >&2; exit 2; }
            acc+=("${line##* }")
            echo "  $ex ${seed:+seed $seed }$p: ${line##* } ($(( $(date +%s) - t0 )) s)" >&2
        done
        d=$(python3 -c "print('%.2f' % (100 * (${acc[1]} - ${acc[0]})))")
        sum32=$(python3 -c "print($sum32 + ${acc[0]})") sum16=$(python3 -c "print($sum16 + ${acc[1]})")
        line="bf16acc example=$ex epochs=${epochs:-default} seed=${seed:-default} float32=${acc[0]} mixed_bfloat16=${acc[1]} diff_points=$d"
        if [ ${#seeds[@]} -le 1 ]; then
            ok=$(python3 -c "print(1 if abs(100 * (${acc[1]} - ${acc[0]})) <= 0.3 else 0)")
            [ "$ok" = 1 ] || fail=1
            line+=" within_0.3=$([ "$ok" = 1 ] && echo yes || echo NO)"
        fi
        echo "$line"
    done
    if [ ${#seeds[@]} -gt 1 ]; then
        n=${#seeds[@]}
        read -r m32 m16 d ok < <(python3 -c "a, b = $sum32 / $n, $sum16 / $n; print('%.4f %.4f %.2f %d' % (a, b, 100 * (b - a), abs(100 * (b - a)) <= 0.3))")
        [ "$ok" = 1 ] || fail=1
        echo "bf16acc example=$ex epochs=${epochs:-default} seeds=$n mean_float32=$m32 mean_mixed_bfloat16=$m16 diff_points=$d within_0.3=$([ "$ok" = 1 ] && echo yes || echo NO)"
    fi
done
exit $fail
