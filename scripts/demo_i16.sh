#!/bin/bash
# demo_i16.sh - what issue 16 (image files, Keras' own model files) must show
# (make demo-i16):
#   1. predict_image on handwritten digits drawn here (a 1, a 0 and a 7, dark
#      on light, 40 x 60 PGM files written by awk), through K-MLP trained for
#      one epoch by save_load: on MNIST when it is found (the places
#      examples/common.h searches, or MNIST=path), else on Fashion-MNIST
#      (/usr/share/datasets/fashion-mnist), whose classes are clothes, so the
#      predicted class of a digit means nothing; NOT RUN without either;
#   2. keras_import (C) and the Fortran keras_import on .keras and .h5
#      fixtures of tests/reference/keras/ (written with h5py in Keras' own
#      layouts), each with --compare-npz: the same architecture given the
#      fixture's .npz weights (np.savez of get_weights()) predicts the same
#      samples; the largest |difference| is printed and must be <= 1e-6.
# Exit status 1 when a comparison fails or a program fails.
#   BUILD  build folder (default build)
#   MNIST  MNIST folder or mnist.npz for part 1 (default: searched)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
keras=tests/reference/keras
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

have_fc=
command -v "${FC:-gfortran}" >/dev/null 2>&1 && have_fc=1
programs=("$build/predict_image" "$build/save_load" "$build/keras_import")
[ -n "$have_fc" ] && programs+=("$build/fortran/keras_import")
make -s --no-print-directory BUILD="$build" "${programs[@]}"

echo "==== 1. predict_image on digits drawn by awk"
mnist=${MNIST:-}
if [ -z "$mnist" ]; then
    for d in ./data/mnist "$HOME/.keras/datasets/mnist.npz" /usr/share/datasets/mnist ../shared/data/mnist; do
        if [ -r "$d/train-labels-idx1-ubyte.gz" ] || [ -r "$d/train-labels-idx1-ubyte" ] ||
            { [ "${d%.npz}" != "$d" ] && [ -r "$d" ]; }; then
            mnist=$d
            break
        fi
    done
fi
fashion=/usr/share/datasets/fashion-mnist
data=$mnist
if [ -z "$data" ] && { [ -r "$fashion/train-labels-idx1-ubyte.gz" ] || [ -r "$fashion/train-labels-idx1-ubyte" ]; }; then
    data=$fashion
    echo "demo: no MNIST found (MNIST=path, or ./data/mnist, ~/.keras/datasets/mnist.npz, /usr/share/datasets/mnist):"
    echo "      training on Fashion-MNIST instead, whose classes are clothes: the digits' classes mean nothing"
fi
if ! "$build/predict_image" --help >/dev/null 2>&1; then
    echo "demo: predict_image NOT RUN: $build/predict_image does not run"
    status=1
elif [ -z "$data" ]; then
    echo "demo: predict_image NOT RUN: no MNIST and no Fashion-MNIST (apt-get install dataset-fashion-mnist)"
else
    "$build/save_load" "$data" --epochs 1 --out "$tmp/model" >"$tmp/train.log" 2>&1 ||
        { cat "$tmp/train.log"; echo "demo: save_load FAILED"; exit 1; }
    grep -m1 "test accuracy" "$tmp/train.log" | sed 's/^/save_load (K-MLP, 1 epoch): /' || true
    # 40 x 60 grey images, ink 20 on paper 235 (predict_image inverts light paper, crops, centres)
    draw() {
        LC_ALL=C awk -v d="$1" 'BEGIN { printf "P5\n40 60\n255\n"
            for (y = 0; y < 60; y++) for (x = 0; x < 40; x++) {
                ink = 0
                if (d == 1) ink = y >= 8 && y < 52 && x >= 22 && x < 29
                if (d == 0) { e = ((x - 20) / 12) ^ 2 + ((y - 30) / 20) ^ 2; ink = e >= 0.55 && e <= 1 }
                if (d == 7) ink = (y >= 8 && y < 15 && x >= 6 && x < 34) ||
                                  (y >= 15 && y < 52 && (x - (33 - 19 * (y - 15) / 37)) ^ 2 < 12)
                printf "%c", ink ? 20 : 235
            } }' >"$tmp/digit_$1.pgm"
    }
    for digit in 1 0 7; do
        draw "$digit"
        if "$build/predict_image" "$tmp/model/kmlp.nnl" "$tmp/digit_$digit.pgm" --normalize >"$tmp/p.log" 2>&1; then
            echo "drawn $digit: $(grep predicted "$tmp/p.log")"
        else
            cat "$tmp/p.log"
            echo "demo: predict_image FAILED on the drawn $digit"
            status=1
        fi
    done
fi

echo "==== 2. Keras files: keras_import (C, Fortran) against the npz route"
summary=()
run_import() { # label program model npz
    local log=$tmp/import.log rc=0
    "$2" "$3" --compare-npz "$4" >"$log" 2>&1 || rc=$?
    cat "$log"
    if grep -q "has no HDF5" "$log"; then
        echo "demo: nnlite in $build was built without HDF5: apt-get install libhdf5-dev, then make clean and rerun"
        exit 1
    fi
    local line
    line=$(grep -m1 "npz route" "$log" | sed 's/.*\(max |difference|\)/\1/' || true)
    summary+=("$1 $(basename "$3"): ${line:-no comparison printed}")
    [ "$rc" -eq 0 ] || status=1
}
for model in cnn.keras rnns_tf2.h5 seq_k3.h5; do
    echo "---- C: keras_import $keras/$model --compare-npz $keras/${model%%[._]*}.npz"
    run_import C "$build/keras_import" "$keras/$model" "$keras/${model%%[._]*}.npz"
done
if [ -n "$have_fc" ]; then
    for model in mlp.keras mlp_tf2.h5; do
        echo "---- Fortran: keras_import $keras/$model --compare-npz $keras/mlp.npz"
        run_import Fortran "$build/fortran/keras_import" "$keras/$model" "$keras/mlp.npz"
    done
else
    echo "demo: Fortran keras_import NOT RUN: no ${FC:-gfortran} (apt-get install gfortran)"
fi
echo "==== summary: the largest |difference| from the npz route (tolerance 1e-6)"
printf '%s\n' "${summary[@]}"
[ "$status" -eq 0 ] && echo "demo-i16: ok" || echo "demo-i16: FAILED"
exit "$status"
