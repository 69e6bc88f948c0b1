#!/bin/bash
# check_fortran.sh BUILD - make test's Fortran check: the module's version
# agrees with nnlite.h, its unit tests pass (Keras files from
# tests/reference/keras included), the surrogate example runs (and
# checks its own error), and R-MLP trains, saves, loads and predicts on
# Fashion-MNIST (1 epoch on 10,000 images) when dataset-fashion-mnist is
# installed; without the data that last step is reported as NOT RUN.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
for k in MAJOR MINOR PATCH; do
    h=$(sed -n "s/^#define NNL_VERSION_$k \([0-9]*\).*/\1/p" nnlite.h)
    f=$(grep -o "NNL_VERSION_$k = [0-9]*" bindings/fortran/nnlite.f90 | grep -o '[0-9]*$')
    if [ "$h" != "$f" ]; then
        echo "fortran: NNL_VERSION_$k is $f in bindings/fortran/nnlite.f90 but $h in nnlite.h" >&2
        exit 1
    fi
done
export NNL_NUM_THREADS=${NNL_NUM_THREADS:-1}
# the Keras fixtures test_nnlite loads (it runs in a temporary folder)
export NNL_KERAS_FIXTURES=$PWD/tests/reference/keras
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && TMPDIR=$tmp "$OLDPWD/$build/fortran/test_nnlite")
(cd "$tmp" && "$OLDPWD/$build/fortran/surrogate" --epochs 150)
data=/usr/share/datasets/fashion-mnist
if [ -r "$data/train-images-idx3-ubyte.gz" ] || [ -r "$data/train-images-idx3-ubyte" ]; then
    (cd "$tmp" && "$OLDPWD/$build/fortran/mnist_mlp" "$data" --epochs 1 --train 10000 --out "$tmp")
else
    echo "fortran: mnist_mlp NOT RUN: $data missing (apt-get install dataset-fashion-mnist)"
fi
echo "fortran check: ok"
