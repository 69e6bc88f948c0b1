#!/bin/bash
# check_consumers.sh BUILD - builds tests/consumer (a C program, and a C++ one
# using nnlite.hpp) outside the tree four ways and runs each:
#   1. drop-in: nnlite.h + nnlite.cpp copied beside app.c, compiled together
#   2. pkg-config against `make install PREFIX=BUILD/consumers/prefix`
#   3. CMake find_package(nnlite) against the same prefix (shared library)
#   4. CMake add_subdirectory(nnlite source tree)
# The programs linked with the installed shared library (2, 3) run without
# LD_LIBRARY_PATH: nnlite.pc and nnliteConfig.cmake give them an rpath (3 is
# built with CMake's own build rpath off, as an installed program is).
# Also checks that `make install DESTDIR=...` stages under DESTDIR.
# Kept fast: the drop-in and add_subdirectory builds compile nnlite.cpp at -O1.
set -euo pipefail
build=$(realpath -m "${1:-build}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$build/consumers
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
export NNL_NUM_THREADS=1
unset LD_LIBRARY_PATH
# uses_installed_so PROGRAM: runs on the installed libnnlite.so.0, found by its rpath
uses_installed_so() {  # (outputs captured first: grep -q in a pipe would end it early)
    local dyn libs
    dyn=$(readelf -d "$1") libs=$(ldd "$1")
    grep -E 'R(UN)?PATH' <<<"$dyn" | grep -q "$prefix/lib" || { echo "consumers: $1 has no rpath to $prefix/lib" >&2; exit 1; }
    grep -q "libnnlite.so.0 => $prefix/lib/libnnlite.so.0" <<<"$libs" ||
        { echo "consumers: $1 does not load $prefix/lib/libnnlite.so.0" >&2; echo "$libs" >&2; exit 1; }
}
CC=${CC:-cc}
CXX=${CXX:-g++}

echo "== install into $prefix"
make -s -C "$root" --no-print-directory BUILD="$build" install PREFIX="$prefix" >/dev/null
for f in include/nnlite.h include/nnlite.hpp lib/libnnlite.a lib/libnnlite.so.0 lib/pkgconfig/nnlite.pc \
         lib/cmake/nnlite/nnliteConfig.cmake lib/python3/dist-packages/nnlite/__init__.py; do
    [ -e "$prefix/$f" ] || { echo "consumers: $f not installed" >&2; exit 1; }
done
readelf -d "$prefix/lib/libnnlite.so" | grep -q 'SONAME.*libnnlite.so.0' || { echo "consumers: SONAME" >&2; exit 1; }

echo "== DESTDIR staging"
make -s -C "$root" --no-print-directory BUILD="$build" install PREFIX=/opt/nnlite DESTDIR="$work/stage" >/dev/null
[ -e "$work/stage/opt/nnlite/lib/pkgconfig/nnlite.pc" ] || { echo "consumers: DESTDIR install missing" >&2; exit 1; }
grep -q '^prefix=/opt/nnlite$' "$work/stage/opt/nnlite/lib/pkgconfig/nnlite.pc"

echo "== 1. drop-in (nnlite.h + nnlite.cpp beside the program)"
d=$work/dropin
mkdir -p "$d"
cp "$root/nnlite.h" "$root/nnlite.cpp" "$root/tests/consumer/app.c" "$d/"
(cd "$d" && $CXX -std=c++17 -O1 -pthread -c nnlite.cpp && $CC -std=c99 -O1 -c app.c && $CXX -pthread app.o nnlite.o -o app -lm)
"$d/app"

echo "== 2. pkg-config (shared, then static)"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
p=$work/pkgconfig
mkdir -p "$p"
# shellcheck disable=SC2046
$CC -std=c99 "$root/tests/consumer/app.c" $(pkg-config --cflags --libs nnlite) -o "$p/app_shared"
uses_installed_so "$p/app_shared"
"$p/app_shared"
# shellcheck disable=SC2046
$CC -std=c99 "$root/tests/consumer/app.c" $(pkg-config --cflags nnlite) \
    $(pkg-config --static --libs nnlite | sed "s|-lnnlite|$prefix/lib/libnnlite.a|") -o "$p/app_static"
"$p/app_static"
"$p/app_static"
if [ -e "$prefix/lib/pkgconfig/nnlite-fortran.pc" ]; then
    # shellcheck disable=SC2046
    gfortran "$root/examples/fortran/surrogate.f90" $(pkg-config --cflags --libs nnlite-fortran) -o "$p/surrogate_f"
    echo "pkg-config nnlite-fortran: the Fortran module links against the installed library"
fi

echo "== 3. find_package(nnlite) against the installed prefix"
cmake -S "$root/tests/consumer" -B "$work/find" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_SKIP_BUILD_RPATH=ON >/dev/null
cmake --build "$work/find" -j 2 >/dev/null
uses_installed_so "$work/find/consumer_c"
uses_installed_so "$work/find/consumer_cxx"
"$work/find/consumer_c"
"$work/find/consumer_cxx"

echo "== 4. add_subdirectory(nnlite)"
cmake -S "$root/tests/consumer" -B "$work/subdir" -DNNLITE_SOURCE_DIR="$root" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG=-O1 -DCMAKE_CXX_FLAGS_DEBUG=-O1 >/dev/null
cmake --build "$work/subdir" -j 2 >/dev/null
"$work/subdir/consumer_c"
"$work/subdir/consumer_cxx"

echo "== installed Python package"
(cd "$work" && PYTHONPATH=$prefix/lib/python3/dist-packages PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -c \
    'import nnlite, sys; print("python: nnlite", nnlite.library_version(), "from", nnlite.library_path())' |
    tee "$work/py.txt")
grep -q "$prefix/lib" "$work/py.txt"
echo "consumers: ok (drop-in, pkg-config, find_package, add_subdirectory; shared consumers run without LD_LIBRARY_PATH)"
