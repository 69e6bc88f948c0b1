#!/bin/bash
# install.sh DESTDIR PREFIX LIBDIR INCLUDEDIR DATADIR PYTHONDIR BUILD VERSION "PRIVATE LIBS" HAVE_FC
# What `make install` runs (see the Makefile). Installs:
#   INCLUDEDIR/nnlite.h, nnlite.hpp                  headers (C99 ABI; C++ wrapper)
#   LIBDIR/libnnlite.a, libnnlite.so.VERSION + .so.MAJOR + .so links
#   LIBDIR/pkgconfig/nnlite.pc (+ nnlite-fortran.pc)
#   LIBDIR/cmake/nnlite/nnliteConfig.cmake, nnliteConfigVersion.cmake
#   INCLUDEDIR/nnlite.mod, LIBDIR/libnnlite_fortran.a, DATADIR/nnlite/fortran/nnlite.f90
#   PYTHONDIR/nnlite/*.py                            the Python package
# DESTDIR prefixes every path (staging); the files themselves name the final paths.
set -euo pipefail
destdir=$1 prefix=$2 libdir=$3 includedir=$4 datadir=$5 pythondir=$6 build=$7 version=$8 private=$9 have_fc=${10}
major=${version%%.*}
cd "$(dirname "$0")/.."
D=$destdir
install -d "$D$includedir" "$D$libdir/pkgconfig" "$D$libdir/cmake/nnlite" "$D$pythondir/nnlite"
install -m 644 nnlite.h nnlite.hpp "$D$includedir/"
install -m 644 "$build/libnnlite.a" "$D$libdir/"
install -m 755 "$build/libnnlite.so.$version" "$D$libdir/"
ln -sf "libnnlite.so.$version" "$D$libdir/libnnlite.so.$major"
ln -sf "libnnlite.so.$major" "$D$libdir/libnnlite.so"

subst() {
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@INCLUDEDIR@|$includedir|g" \
        -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@PRIVATE@|$private|g" \
        -e "s|@REL_INCLUDEDIR@|$(realpath -m --relative-to="$libdir/cmake/nnlite" "$includedir")|g" \
        -e "s|@REL_LIBDIR@|$(realpath -m --relative-to="$libdir/cmake/nnlite" "$libdir")|g" \
        -e "s|@STATIC_LIBS@|$(printf '%s' "$private" | sed 's/-l\([a-z+]*\)/\1/g; s/ /;/g')|g" "$1" >"$2"
}
subst scripts/install/nnlite.pc.in "$D$libdir/pkgconfig/nnlite.pc"
subst scripts/install/nnliteConfig.cmake.in "$D$libdir/cmake/nnlite/nnliteConfig.cmake"
subst scripts/install/nnliteConfigVersion.cmake.in "$D$libdir/cmake/nnlite/nnliteConfigVersion.cmake"

if [ "$have_fc" = 1 ] && [ -r "$build/libnnlite_fortran.a" ]; then
    install -d "$D$datadir/nnlite/fortran"
    install -m 644 "$build/fortran/nnlite.mod" "$D$includedir/"
    install -m 644 "$build/libnnlite_fortran.a" "$D$libdir/"
    install -m 644 bindings/fortran/nnlite.f90 "$D$datadir/nnlite/fortran/"
    subst scripts/install/nnlite-fortran.pc.in "$D$libdir/pkgconfig/nnlite-fortran.pc"
else
    echo "install: no Fortran compiler: the Fortran module is not installed"
fi
install -m 644 bindings/python/nnlite/*.py "$D$pythondir/nnlite/"
echo "install: nnlite $version into $D$prefix (Python package: $pythondir/nnlite)"
echo "install: programs linked through nnlite.pc or find_package(nnlite) find $libdir/libnnlite.so.$major by their"
echo "         rpath; any other program needs: export LD_LIBRARY_PATH=$libdir (or, for a folder in /etc/ld.so.conf, sudo ldconfig)"
