#!/bin/bash
# check_xor.sh BINARY - runs the XOR example; passes when it exits 0 and its
# last "accuracy:" line reads 1.0 (e.g. "test accuracy: 1.0000").
set -euo pipefail
bin=${1:?usage: check_xor.sh path/to/xor}
out=$("$bin")
printf '%s\n' "$out"
last=$(printf '%s\n' "$out" | grep -i 'accuracy:' | tail -n 1 || true)
if [[ $last =~ accuracy:\ 1(\.0*)?([^0-9]|$) ]]; then
    echo "xor check: ok"
else
    echo "xor check: FAILED: expected a final 'accuracy: 1.0' line, got '${last:-none}'" >&2
    exit 1
fi
