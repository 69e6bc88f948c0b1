#!/usr/bin/env bash
# Checks that nnlite's elementwise kernels run vectorised: in the object
# code, every kernel's AVX2 and AVX-512 instance (nnl::simd::run_v8<K> and
# run_v16<K>, nnlite.cpp section 2) does its arithmetic with packed
# instructions on ymm / zmm registers, takes square roots with vsqrtps (no
# scalar sqrtss, no call to sqrtf), and calls nothing (libm's log once per
# row in the cross-entropy kernels aside): every helper is inlined.
#
#   bash scripts/check_vectorized.sh [nnlite.o]
#
# Without an argument it compiles nnlite.cpp with the drop-in line of the
# README (g++ -std=c++17 -O2 -pthread -c nnlite.cpp; CXX overrides g++);
# `make check-vectorized` passes the library's object, built with the
# Makefile's flags. Needs objdump (binutils). Other CPUs than x86-64: skipped.
set -u
cd "$(dirname "$0")/.." || exit 1

case "$(uname -m)" in
x86_64 | amd64) ;;
*)
    echo "check_vectorized: SKIPPED: not an x86-64 machine"
    exit 0
    ;;
esac
command -v objdump >/dev/null 2>&1 || {
    echo "check_vectorized: objdump not found (Debian: binutils)"
    exit 1
}

obj=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$obj" ]; then
    obj=$tmp/nnlite.o
    echo "check_vectorized: ${CXX:-g++} -std=c++17 -O2 -pthread -c nnlite.cpp"
    "${CXX:-g++}" -std=c++17 -O2 -pthread -c nnlite.cpp -o "$obj" || exit 1
fi
objdump -d -r -C --no-show-raw-insn "$obj" >"$tmp/dis" || exit 1

# kernel[:sqrt: needs vsqrtps][:rsqrt: needs vrsqrt14ps / vrsqrtps (vsqrt_nr)][:log: may call log, once per row]
kernels="SgdK RmspropK:sqrt AdagradK:sqrt AdadeltaK:sqrt AdamK:rsqrt AdamaxK NadamK:sqrt
ClipValueK ScaleK SumsqK MulK AddRowsK ColSumK BiasActK BiasActFlatK ActBackwardK SoftmaxK SoftmaxBackwardK
ColAccK ScaleShiftK BnSumsK BnDxK XentLogitsK:log XentProbsK:log PointLossK Im2colK Col2imK PoolMaxK
conv1::FwdK conv1::DwK wino::InK<6> wino::InK<8> wino::OutK<6> wino::OutK<8>"

# the instructions of every function whose name contains $1
body() {
    awk -v key="$1" '
        /^[0-9a-f]+ <.*>:$/ { on = index($0, key) > 0; next }
        on' "$tmp/dis"
}

fail=0
printf '%-18s %-5s %8s %8s  %s\n' kernel isa packed calls result
for spec in $kernels; do
    k=${spec%%:[[:lower:]]*} # (a namespace's :: is part of the name)
    opts=${spec#"$k"}
    for isa in v8 v16; do
        reg=$([ $isa = v8 ] && echo ymm || echo zmm)
        code=$(body "nnl::simd::run_${isa}<nnl::${k},")
        why= packed=0 calls=0
        if [ -z "$code" ]; then
            why="no run_${isa}<${k}> in the object"
        else
            packed=$(grep -cE "v(add|sub|mul|div|sqrt|max|min|f[n]?m(add|sub)[0-9]*|blendv|blendm|and|andn|or|xor|cmp|maskmov|movu|cvtps2)p[sd][[:space:]].*%${reg}" <<<"$code")
            calls=$(grep -cE '^[[:space:]]*[0-9a-f]+:[[:space:]]+call' <<<"$code")
            libm=$(grep -E 'R_X86_64_(PLT|PC)32[[:space:]]+(sqrt|exp|expm1|log|log1p|erf|tanh|pow)f?([-+@]|$)' <<<"$code" |
                awk '{print $3}' | sed 's/[-+@].*//' | sort -u | tr '\n' ' ')
            # calls allowed: memset/memcpy (a compiler's own fill loops), log (below)
            allowed=$(grep -cE 'R_X86_64_(PLT|PC)32[[:space:]]+mem(set|cpy|move)([-+@]|$)' <<<"$code")
            [ "$packed" -ge 1 ] || why="no packed arithmetic on $reg"
            case "$opts" in
            *log*)
                libm=$(tr ' ' '\n' <<<"$libm" | grep -vx 'log' | tr '\n' ' ')
                allowed=$((allowed + $(grep -cE 'R_X86_64_(PLT|PC)32[[:space:]]+log([-+@]|$)' <<<"$code")))
                ;;
            esac
            [ -z "${libm// /}" ] || why="calls $libm"
            # any other call is a helper left out of line, where its vector
            # values do not survive the call (nnlite.cpp, NNL_INLINE)
            [ $((calls - allowed)) -le 0 ] || [ -n "$why" ] ||
                why="calls out of line: $(grep -E '^[[:space:]]*[0-9a-f]+:[[:space:]]+call' <<<"$code" |
                    sed 's/.*call[[:space:]]*//' | sort -u | head -3 | tr '\n' ' ')"
            case "$opts" in
            *rsqrt*)
                grep -qE "vrsqrt(14)?ps[[:space:]].*%${reg}" <<<"$code" || why="no vrsqrt(14)ps on $reg"
                ! grep -qE 'v?r?sqrts[sd][[:space:]]' <<<"$code" || why="a scalar square root"
                ;;
            *sqrt*)
                grep -qE "vsqrtps[[:space:]].*%${reg}" <<<"$code" || why="no vsqrtps on $reg"
                ! grep -qE 'v?sqrts[sd][[:space:]]' <<<"$code" || why="a scalar square root"
                ;;
            esac
        fi
        if [ -n "$why" ]; then
            fail=1
            printf '%-18s %-5s %8s %8s  FAIL: %s\n' "$k" "$isa" "$packed" "$calls" "$why"
        else
            printf '%-18s %-5s %8s %8s  ok\n' "$k" "$isa" "$packed" "$calls"
        fi
    done
done
if [ $fail -ne 0 ]; then
    echo "check_vectorized: FAILED: a kernel above is not vectorised"
    exit 1
fi
echo "check_vectorized: every kernel's AVX2 and AVX-512 instance is vectorised"
