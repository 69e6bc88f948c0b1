#!/bin/bash
# demo.sh - the main job: the Keras tutorial's MLP (K-MLP) trained on
# Fashion-MNIST from Debian's dataset-fashion-mnist package.
#   DEMO_ARGS   arguments after the data folder (default: none, i.e. the
#               example's defaults), e.g. DEMO_ARGS="--epochs 5"
#   BUILD       build folder (default build)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh demo
build=${BUILD:-build}
make -s --no-print-directory BUILD="$build" "$build/keras_mlp"

data=/usr/share/datasets/fashion-mnist
# shellcheck disable=SC2206  # DEMO_ARGS is split into words on purpose
cmd=("$build/keras_mlp" "$data" ${DEMO_ARGS:-})
echo "demo: K-MLP (Flatten - Dense(128, relu) - Dense(10, softmax), Adam) on Fashion-MNIST: ${cmd[*]}"
exec "${cmd[@]}"
