#!/bin/bash
# check_exports.sh LIBNNLITE.so NNLITE.h - the shared library exports exactly
# the functions that nnlite.h declares with NNL_API: none missing, none extra.
# shellcheck disable=SC2001  # sed indents the multi-line lists
set -euo pipefail
lib=${1:?usage: check_exports.sh libnnlite.so nnlite.h}
header=${2:?usage: check_exports.sh libnnlite.so nnlite.h}

declared=$(grep 'NNL_API' "$header" | grep -o 'nnl_[A-Za-z0-9_]*[[:space:]]*(' | tr -d '( \t' | sort -u)
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwVv]$/ || $2 ~ /^[BbDdRr]$/ {print $3}' | sed 's/@.*//' | sort -u)

missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
extra=$(comm -13 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
status=0
if [ -n "$missing" ]; then
    echo "exports: declared in $header but not exported by $lib:" >&2
    sed 's/^/  /' <<<"$missing" >&2
    status=1
fi
if [ -n "$extra" ]; then
    echo "exports: exported by $lib but not declared NNL_API in $header:" >&2
    sed 's/^/  /' <<<"$extra" >&2
    status=1
fi
if [ $status -eq 0 ]; then
    echo "exports: ok ($(printf '%s\n' "$declared" | wc -l) functions)"
fi
exit $status
