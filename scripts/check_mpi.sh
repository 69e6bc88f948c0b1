#!/bin/bash
# check_mpi.sh BUILD - nnlite's data-parallel tests under mpirun (make check-mpi):
# the suite on 2 ranks and on 4 (more ranks than cores: --oversubscribe), and a
# rank that leaves the run (the others must fail within NNL_MPI_TIMEOUT).
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
echo "== mpirun -np 2 $build/mpi_tests leave (NNL_MPI_TIMEOUT=3)"
NNL_MPI_TIMEOUT=3 timeout 120 mpirun -np 2 -x NNL_MPI_TIMEOUT "$build/mpi_tests" leave
echo "check_mpi: ok"
