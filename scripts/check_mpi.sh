#!/bin/bash
# check_mpi.sh BUILD - nnlite's data-parallel tests under mpirun (make check-mpi):
# the suite on 2 ranks and on 4 (more ranks than cores: --oversubscribe), a
# rank that leaves the run (the others must fail within NNL_MPI_TIMEOUT), the
# Fortran in-situ test on 2 and 4 ranks, and the Python binding with mpi4py
# on 2 ranks (each skipped, saying so, without a Fortran MPI or mpi4py).
set -euo pipefail
build=${1:-build-mpi}
if ! command -v mpirun >/dev/null 2>&1; then
    echo "check_mpi: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)" >&2
    exit 1
fi
# OpenMPI refuses to run as root unless told (CI runs as root); one thread per rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export NNL_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1
# no InfiniBand or other fabric probing on a plain machine
# (shared memory between the ranks; no single-copy CMA, which containers
# without ptrace rights refuse)
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export NNL_TEST_TMP=$tmp
for np in 2 4; do
    echo "== mpirun -np $np $build/mpi_tests"
    timeout 600 mpirun -np "$np" --oversubscribe "$build/mpi_tests"
done
echo "== mpirun -np 2 $build/mpi_tests (NNL_TEST_DEFAULT_BUCKETS=1: the default reduction, no buckets on one node)"
NNL_TEST_DEFAULT_BUCKETS=1 timeout 600 mpirun -np 2 -x NNL_TEST_DEFAULT_BUCKETS "$build/mpi_tests"
echo "== mpirun -np 2 $build/mpi_tests leave (NNL_MPI_TIMEOUT=3)"
NNL_MPI_TIMEOUT=3 timeout 120 mpirun -np 2 -x NNL_MPI_TIMEOUT "$build/mpi_tests" leave

# Fortran: the in-situ surrogate (tests/fortran/mpi_insitu.f90), each rank
# training one shared model on the pendulums it simulates (NNL_DATA_LOCAL).
# make check-mpi builds it where a Fortran MPI is found (mpif90, or
# pkg-config mpi-fort, and gfortran).
if [ -x "$build/fortran/mpi_insitu" ]; then
    for np in 2 4; do
        echo "== mpirun -np $np $build/fortran/mpi_insitu"
        timeout 300 mpirun -np "$np" --oversubscribe "$build/fortran/mpi_insitu"
    done
elif ! command -v "${FC:-gfortran}" >/dev/null 2>&1 ||
    ! { command -v mpif90 >/dev/null 2>&1 || pkg-config --exists mpi-fort 2>/dev/null; }; then
    echo "check_mpi: Fortran MPI test SKIPPED: no Fortran MPI (gfortran with mpif90 or pkg-config mpi-fort;" \
        "Debian: apt-get install gfortran libopenmpi-dev)"
else
    echo "check_mpi: $build/fortran/mpi_insitu is missing: make MPI=1 BUILD=$build mpi-fortran" >&2
    exit 1
fi

# Python: model.distribute with mpi4py communicators (COMM_WORLD, comm.Split)
# and, with --world-first, with comm=None before mpi4py is imported. Not
# found by `unittest discover` (its name does not start with test).
py=/usr/bin/python3
if ! "$py" -c 'import numpy' >/dev/null 2>&1; then
    echo "check_mpi: Python test SKIPPED: $py cannot import numpy (Debian: apt-get install python3-numpy)"
elif ! "$py" -c 'import mpi4py' >/dev/null 2>&1; then
    echo "check_mpi: Python test SKIPPED: $py cannot import mpi4py (Debian: apt-get install python3-mpi4py)"
else
    root=$(cd "$(dirname "$0")/.." && pwd)
    case $build in /*) lib=$build ;; *) lib=$PWD/$build ;; esac
    export PYTHONPATH=$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}
    export NNLITE_LIBRARY=$lib/libnnlite.so PYTHONDONTWRITEBYTECODE=1
    for mode in "" --world-first; do
        echo "== mpirun -np 2 $py tests/python/mpi_test_distribute.py $mode"
        # shellcheck disable=SC2086  # $mode: nothing or one word
        timeout 300 mpirun -np 2 -x PYTHONPATH -x NNLITE_LIBRARY -x PYTHONDONTWRITEBYTECODE \
            "$py" "$root/tests/python/mpi_test_distribute.py" $mode
    done
fi
echo "check_mpi: ok"
