#!/bin/bash
# check_examples.sh BUILD - make test's examples check:
#   1. every example (BUILD/<name>, BUILD/fortran/<name>) given an unknown
#      option exits 2 naming it, with its usage; --help exits 0;
#   2. the examples that write files (keras_mlp: pictures; save_load: model
#      files) write them into --out DIR, or by default into the program's
#      folder, never into the folder they are started from. Run on
#      Fashion-MNIST for 1 epoch when dataset-fashion-mnist is installed;
#      otherwise that part is reported as NOT RUN. lstm_forecast --model
#      dense (no data needed, under a second) always: its picture in --out;
#   3. keras_import (C, Fortran) --compare-npz on Keras fixtures (with HDF5);
#   4. ptb_lstm --checkpoint on a tiny corpus written here: stopped and
#      resumed equals the uninterrupted run.
set -euo pipefail
said=
build=$(realpath -m "${1:-build}")
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "examples: FAILED: $*" >&2; exit 1; }

n=0
for src in examples/*.c examples/fortran/*.f90; do
    name=$(basename "${src%.*}")
    case $src in examples/fortran/*) bin=$build/fortran/$name ;; *) bin=$build/$name ;; esac
    [ -x "$bin" ] || fail "$bin not built"
    rc=0
    (cd "$tmp" && "$bin" --epoch 1) >"$tmp/out.txt" 2>"$tmp/err.txt" || rc=$?
    [ "$rc" -eq 2 ] || fail "$name --epoch 1: exit status $rc, expected 2"
    grep -q "$name: unknown option '--epoch'" "$tmp/err.txt" ||
        fail "$name does not name the unknown option '--epoch': $(cat "$tmp/err.txt")"
    grep -q "usage: $name" "$tmp/err.txt" || fail "$name prints no usage for an unknown option"
    if [ "${src##*.}" = c ]; then
        (cd "$tmp" && "$bin" --help) >"$tmp/out.txt" || fail "$name --help exits $?"
        grep -q "usage: $name" "$tmp/out.txt" || fail "$name --help prints no usage"
    fi
    [ "$name" = keras_mlp ] && said=$(sed -n 1p "$tmp/err.txt")
    n=$((n + 1))
done
echo "examples: $n programs name an unknown option, e.g. $said"

# lstm_forecast needs no data (it integrates Lorenz-63): its picture goes to --out DIR
mkdir -p "$tmp/cwd0"
(cd "$tmp/cwd0" && "$build/lstm_forecast" --model dense --epochs 1 --out "$tmp/fc") >"$tmp/log" 2>&1 ||
    { cat "$tmp/log"; fail "lstm_forecast --model dense --out"; }
[ -s "$tmp/fc/lstm_forecast.svg" ] || fail "lstm_forecast.svg not written"
grep -q "persistence" "$tmp/log" || fail "lstm_forecast prints no persistence baseline"
[ -z "$(ls -A "$tmp/cwd0")" ] || fail "lstm_forecast wrote into the current folder: $(ls -A "$tmp/cwd0")"
echo "examples: lstm_forecast --model dense writes its picture into --out DIR"

# keras_import (C and Fortran) --compare-npz on .keras and .h5 fixtures of
# tests/reference/keras: the same architecture with the fixture's .npz weights
# predicts within 1e-6 (each prints its max |difference| and "ok"); NOT RUN
# where the library has no HDF5
keras=tests/reference/keras
kimport() { # program model npz
    local rc=0
    "$1" "$keras/$2" --compare-npz "$keras/$3" >"$tmp/log" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && grep -q "npz route.*: ok$" "$tmp/log" ||
        { cat "$tmp/log"; fail "$(basename "$1") $keras/$2 --compare-npz $keras/$3 (exit status $rc)"; }
}
if "$build/keras_import" "$keras/mlp.keras" >"$tmp/log" 2>&1 || ! grep -q "has no HDF5" "$tmp/log"; then
    kimport "$build/keras_import" mlp.keras mlp.npz
    kimport "$build/keras_import" cnn_tf2.h5 cnn.npz
    kimport "$build/keras_import" rnns_k3.h5 rnns.npz
    kimport "$build/keras_import" seq.keras seq.npz
    kimport "$build/fortran/keras_import" mlp.keras mlp.npz
    kimport "$build/fortran/keras_import" mlp_tf2.h5 mlp.npz
    echo "examples: keras_import (C, Fortran) --compare-npz on .keras and .h5 fixtures: within 1e-6 of the npz route"
else
    echo "examples: keras_import --compare-npz NOT RUN: the library has no HDF5 (apt-get install libhdf5-dev)"
fi

# ptb_lstm --checkpoint: a run stopped after epoch 2 and resumed ends as the
# uninterrupted one (a tiny corpus written here: ptb.{train,valid,test}.txt)
mkdir -p "$tmp/ptb"
for f in train valid test; do
    awk -v s="$f" 'BEGIN { srand(s == "train" ? 1 : s == "valid" ? 2 : 3); for (l = 0; l < 60; l++) {
        line = ""; for (w = 0; w < 12; w++) { r = int(rand() * 40); line = line " w" (r < 20 ? r : (l + w) % 40) }
        print line } }' >"$tmp/ptb/ptb.$f.txt"
done
ptb() { "$build/ptb_lstm" "$tmp/ptb" --preset small --threads 1 "$@" >"$tmp/ptb.log" 2>&1 || { cat "$tmp/ptb.log"; fail "ptb_lstm $*"; }; }
ptb --epochs 3
want=$(grep "test perplexity" "$tmp/ptb.log")
ptb --epochs 2 --checkpoint "$tmp/ck.nnl"
[ -s "$tmp/ck.nnl" ] || fail "ptb_lstm --checkpoint wrote no file"
ptb --epochs 3 --checkpoint "$tmp/ck.nnl"
grep -q "resuming from .* after epoch 2" "$tmp/ptb.log" || fail "ptb_lstm did not resume: $(cat "$tmp/ptb.log")"
got=$(grep "test perplexity" "$tmp/ptb.log")
[ -n "$want" ] && [ "$want" = "$got" ] || fail "ptb_lstm resumed after epoch 2: '$got', uninterrupted: '$want'"
echo "examples: ptb_lstm --checkpoint resumed after epoch 2 ends as the uninterrupted run ($got)"

data=/usr/share/datasets/fashion-mnist
if [ -r "$data/train-images-idx3-ubyte.gz" ] || [ -r "$data/train-images-idx3-ubyte" ]; then
    mkdir -p "$tmp/cwd"
    (cd "$tmp/cwd" && "$build/keras_mlp" "$data" --epochs 1 --out "$tmp/pics") >"$tmp/log" 2>&1 ||
        { cat "$tmp/log"; fail "keras_mlp --out"; }
    (cd "$tmp/cwd" && "$build/save_load" "$data" --epochs 1 --out "$tmp/models") >"$tmp/log" 2>&1 ||
        { cat "$tmp/log"; fail "save_load --out"; }
    for f in pics/keras_mlp_history.svg pics/keras_mlp_confusion.svg models/kmlp.nnl models/kmlp.json \
             models/kmlp.weights.nnl models/kmlp.weights.npz; do
        [ -s "$tmp/$f" ] || fail "$f not written"
    done
    # predict_image on save_load's model and a "1" drawn here (dark on light, 40 x 60 PGM)
    LC_ALL=C awk 'BEGIN { printf "P5\n40 60\n255\n"; for (y = 0; y < 60; y++) for (x = 0; x < 40; x++)
        printf "%c", (y >= 8 && y < 52 && x >= 22 && x < 29) ? 20 : 235 }' >"$tmp/one.pgm"
    "$build/predict_image" "$tmp/models/kmlp.nnl" "$tmp/one.pgm" --normalize >"$tmp/log" 2>&1 ||
        { cat "$tmp/log"; fail "predict_image"; }
    awk '/^ +[0-9]+: / { n++; s += $2 } END { exit !(n == 10 && s > 0.999 && s < 1.001) }' "$tmp/log" ||
        fail "predict_image did not print 10 probabilities summing to 1: $(cat "$tmp/log")"
    echo "examples: predict_image on save_load's model: $(grep predicted "$tmp/log")"
    # by default: the program's folder (a copy of it here, so build/ is left alone)
    mkdir -p "$tmp/bin"
    cp "$build/keras_mlp" "$tmp/bin/"
    (cd "$tmp/cwd" && "$tmp/bin/keras_mlp" "$data" --epochs 1) >"$tmp/log" 2>&1 || { cat "$tmp/log"; fail "keras_mlp"; }
    [ -s "$tmp/bin/keras_mlp_history.svg" ] && [ -s "$tmp/bin/keras_mlp_confusion.svg" ] ||
        fail "keras_mlp did not write its pictures beside the program"
    [ -z "$(ls -A "$tmp/cwd")" ] || fail "files written into the current folder: $(ls -A "$tmp/cwd")"
    echo "examples: keras_mlp and save_load write into --out DIR or the program's folder, nothing into the current one"
else
    echo "examples: file outputs NOT RUN: $data missing (apt-get install dataset-fashion-mnist)"
fi
echo "examples check: ok"
