#!/bin/bash
# deps.sh MODE - make sure what MODE needs is installed (Debian / Ubuntu).
#   test   compilers, make, doctest-dev, libstb-dev, OpenMPI, HDF5 and h5py
#          (make test)
#   demo   compilers, make, libstb-dev, dataset-fashion-mnist (make demo)
#   all    both
# Prints "deps: ok" when everything is there. Otherwise, as root, installs the
# missing packages with apt-get; as any other user, prints the apt-get line to
# run and exits 1.
set -euo pipefail

mode=${1:-}
case "$mode" in
test | demo | all) ;;
*)
    echo "usage: $0 test|demo|all" >&2
    exit 2
    ;;
esac

missing=()  # Debian packages
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_file() { [ -e "$1" ] || missing+=("$2"); }

need_cmd g++ g++
need_cmd cc gcc
need_cmd make make
need_file /usr/include/stb/stb_image.h libstb-dev
if [ "$mode" != demo ]; then
    need_file /usr/include/doctest/doctest.h doctest-dev
    # front ends and consumers (checks fortran, python, consumers)
    need_cmd gfortran gfortran
    need_cmd cmake cmake
    need_cmd pkg-config pkg-config
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || missing+=(python3-numpy)
    # data-parallel training (check mpi): OpenMPI's runtime and headers
    need_cmd mpirun openmpi-bin
    pkg-config --exists mpi-c 2>/dev/null || missing+=(libopenmpi-dev)
    # Keras .h5 / .keras model files (section 8): HDF5's C library, and h5py
    # for tests/reference/make_keras_files.py (the fixtures it wrote are committed)
    pkg-config --exists hdf5 2>/dev/null || pkg-config --exists hdf5-serial 2>/dev/null || missing+=(libhdf5-dev)
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import h5py' >/dev/null 2>&1 || missing+=(python3-h5py)
fi
if [ "$mode" != test ]; then
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        need_file "/usr/share/datasets/fashion-mnist/$f.gz" dataset-fashion-mnist
    done
fi

# Optional for tests: PyTorch as the reference the layer tests compare
# against, and mpi4py for make check-mpi's Python test (each skipped with a
# message when absent). Installed only as root.
optional=()
if [ "$mode" != demo ] && ! /usr/bin/python3 -c 'import numpy, torch' >/dev/null 2>&1; then
    optional+=(python3-numpy python3-torch)
fi
if [ "$mode" != demo ] && ! /usr/bin/python3 -c 'import mpi4py' >/dev/null 2>&1; then
    optional+=(python3-mpi4py)
fi
install_optional() {
    [ ${#optional[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "deps: installing optional ${optional[*]} (PyTorch: the layer tests' reference; mpi4py: check-mpi)"
        # shellcheck disable=SC2068
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${optional[@]} ||
            echo "deps: could not install ${optional[*]}; the tests that need them will be skipped"
    else
        echo "deps: optional, for the PyTorch comparisons and check-mpi's Python test: sudo apt-get install -y ${optional[*]}"
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    install_optional
    echo "deps: ok"
    exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
pkgs=${pkgs% }

if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: missing Debian packages $pkgs (or their equivalents); install them and retry" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages; run:" >&2
    echo "sudo apt-get install -y $pkgs"
    exit 1
fi

echo "deps: installing $pkgs"
apt-get update -qq
# shellcheck disable=SC2086  # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs
install_optional
echo "deps: ok"
