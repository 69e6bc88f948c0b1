"""mpi_test_distribute.py - the Python binding's data-parallel training
(model.distribute) under mpirun, run by scripts/check_mpi.sh:

    PYTHONPATH=bindings/python NNLITE_LIBRARY=build-mpi/libnnlite.so \\
        mpirun -np 2 /usr/bin/python3 tests/python/mpi_test_distribute.py [--world-first]

Not a unittest module (`unittest discover` matches test*.py and runs the
library built without MPI): every rank runs every check in the same order,
a failed one prints "[rank R] FAIL: ..." and the process exits 1. Without
mpi4py it prints SKIPPED and exits 0.

--world-first: the first model is distributed with comm=None before mpi4py
is imported (nnlite initialises MPI and finalises it at exit; distribute
must not import mpi4py); mpi4py, imported afterwards, then finds MPI
running. Without it, mpi4py starts MPI first, as most programs do.
"""
import os
import sys

import numpy as np

import nnlite

world_first = "--world-first" in sys.argv[1:]
failures = []
RANK = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))


def check(ok, what):
    if not ok:
        failures.append(what)
        print("[rank %d] FAIL: %s" % (RANK, what), file=sys.stderr, flush=True)


def make_data(n, f, seed):
    """n samples of f features in three classes, the same on every rank."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, f)).astype(np.float32)
    sign = np.where(np.arange(f) % 2, 1.0, -1.0)
    s = x @ sign + 0.1 * rng.uniform(-1, 1, size=n)
    t = x @ np.where(np.arange(f) % 3, 0.5, -1.0)
    y = np.where(s > 0, np.where(t > 0, 2, 1), 0).astype(np.int32)
    return x, y


def mlp(f, opt, seed=7):
    m = nnlite.Sequential([nnlite.layers.Dense(16, activation="tanh", input_shape=(f,)),
                           nnlite.layers.Dense(3, activation="softmax")], seed=seed)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def flat(m):
    return np.concatenate([w.ravel() for w in m.get_weights()])


def rel_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(float(np.max(np.abs(b))), 1e-30))


check(nnlite.has_feature("mpi"), "the library (%s) is built with MPI" % nnlite.library_path())
if not nnlite.has_feature("mpi"):
    sys.exit(1)

x, y = make_data(203, 6, 42)
early = None
if world_first:
    # comm=None: MPI_COMM_WORLD, MPI started by nnlite; no mpi4py
    early = mlp(6, "SGD(learning_rate=0.1)")
    early.distribute()
    check("mpi4py" not in sys.modules, "distribute() without a communicator does not import mpi4py")
    early.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=1)

try:
    from mpi4py import MPI
except ImportError as e:
    if RANK == 0:
        print("mpi_test_distribute: SKIPPED: mpi4py is missing (%s; Debian: apt-get install python3-mpi4py)" % e)
    sys.exit(0)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
RANK = rank


def same_everywhere(w):
    """The same bytes on every rank of comm."""
    return all(np.array_equal(w, o) for o in comm.allgather(w))


if early is not None:
    check(early.mpi_rank() == (rank, size), "comm=None: mpi_rank() is MPI_COMM_WORLD's")
    check(same_everywhere(flat(early)), "comm=None: the replicas agree")
    check(MPI.Query_thread() >= MPI.THREAD_FUNNELED, "nnlite started MPI with MPI_THREAD_FUNNELED at least")
    early.close()

# ---- N ranks with batch b each = one process on the global batch ----
b = 8
for opt in ("SGD(learning_rate=0.1)", "Adam(learning_rate=0.01)"):
    ref = mlp(6, opt)
    ref.fit(x, y, batch_size=b * size, epochs=3, verbose=0, seed=1234)
    d = mlp(6, opt).distribute(comm)
    check(d.mpi_rank() == (rank, size), "mpi_rank() on COMM_WORLD")
    h = d.fit(x, y, batch_size=b, epochs=3, verbose=0, seed=1234)
    wd = flat(d)
    check(same_everywhere(wd), "%s: the replicas agree" % opt)
    diff = rel_diff(wd, flat(ref))
    check(diff < 2e-5, "%s: distributed = one process on the global batch (relative difference %.3g)" % (opt, diff))
    check(len(h.history["loss"]) == 3 and same_everywhere(np.array(h.history["loss"])),
          "%s: every rank returns the same history" % opt)
    g = mlp(6, opt).distribute(comm, global_batch=True)
    g.fit(x, y, batch_size=b * size, epochs=3, verbose=0, seed=1234)
    check(np.array_equal(flat(g), wd), "%s: global_batch=True with b x ranks = b per rank" % opt)
    # evaluate: sharded and reduced, the whole data's metrics
    ev, er = d.evaluate(x, y, batch_size=16), mlp(6, opt)
    er.set_weights(d.get_weights())
    ee = er.evaluate(x, y, batch_size=16)
    check(abs(ev[0] - ee[0]) < 1e-6 * abs(ee[0]) and abs(ev[1] - ee[1]) < 1e-12,
          "%s: evaluate reduced over the ranks = one process' (%s vs %s)" % (opt, ev, ee))
    for m in (ref, d, g, er):
        m.close()

# ---- sync_batchnorm=True: BatchNormalization over the global batch, as one process ----
def bn_model():
    m = nnlite.Sequential([nnlite.layers.Dense(32, activation="relu", input_shape=(6,)),
                           nnlite.layers.BatchNormalization(), nnlite.layers.Dense(3, activation="softmax")], seed=8)
    m.compile(optimizer="Adam(learning_rate=0.01)", loss="sparse_categorical_crossentropy")
    return m


ref = bn_model()
ref.fit(x, y, batch_size=b * size, epochs=2, verbose=0, seed=9)
d = bn_model().distribute(comm, sync_batchnorm=True)
d.fit(x, y, batch_size=b, epochs=2, verbose=0, seed=9)
diff = rel_diff(flat(d), flat(ref))
check(diff < 1e-4, "sync_batchnorm=True: distributed = one process, moving statistics included (%.3g)" % diff)
check(same_everywhere(flat(d)), "sync_batchnorm=True: the replicas agree")
ref.close()
d.close()

# ---- a sub-communicator from comm.Split: ranks in reverse order ----
rev = comm.Split(0, size - 1 - rank)
d = mlp(6, "Adam(learning_rate=0.01)").distribute(rev, data="local")
check(d.mpi_rank() == (size - 1 - rank, size), "Split(key=size-1-rank): mpi_rank() is the sub-communicator's")
# each rank its own samples (different counts): all used, replicas agree
mine = slice(0, 40 + 13 * rank)
xl, yl = make_data(203, 6, 100 + rank)
d.fit(xl[mine], yl[mine], batch_size=8, epochs=2, verbose=0, seed=5)
check(same_everywhere(flat(d)), "data='local' over a Split communicator: the replicas agree")
lr = d.learning_rate
d.scale_learning_rate()
check(abs(d.learning_rate - lr * size) < 1e-9, "scale_learning_rate(): lr x ranks")
d.distribute(MPI.COMM_NULL)
check(d.mpi_rank() == (0, 1), "distribute(MPI.COMM_NULL): local again")
d.close()
# halves (rank 0 alone when there are 2 ranks): each group trains its own model
half = comm.Split(0 if rank < max(size // 2, 1) else 1, rank)
d = mlp(6, "SGD(learning_rate=0.1)").distribute(half)
check(d.mpi_rank() == (half.Get_rank(), half.Get_size()), "Split into halves: mpi_rank()")
d.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=2)
w = flat(d)
check(all(np.array_equal(w, o) for o in half.allgather(w)), "Split into halves: each half's replicas agree")
d.close()
rev.Free()
half.Free()

# ---- failures: the same exception on every rank; argument checks ----
d = mlp(6, "SGD(learning_rate=0.1)").distribute(comm)
try:
    d.fit(x, y if rank != size - 1 else y[:-1], batch_size=8, epochs=1, verbose=0)
    check(False, "a shape error on the last rank raises on every rank")
except nnlite.ShapeError as e:
    check(rank == size - 1 or "(on rank %d of %d)" % (size - 1, size) in str(e),
          "the other ranks' message names the failing rank: %s" % e)
if size > 1:
    try:
        d.fit(x, y, batch_size=8, epochs=1 + (rank == 0), verbose=0)
        check(False, "options that differ between ranks raise")
    except nnlite.ArgumentError as e:
        check("disagree on epochs" in str(e) and "model.fit()" in str(e),
              "the message says so in Python's names: %s" % e)
for bad, what in ((lambda: d.distribute("MPI_COMM_WORLD"), "a comm that is not an mpi4py communicator"),
                  (lambda: d.distribute(comm, data="everywhere"), "an unknown data mode"),
                  (lambda: d.distribute(comm, data="local", global_batch=True), "local data with global_batch")):
    try:
        bad()
        check(False, what + ": ArgumentError")
    except nnlite.ArgumentError as e:
        check("model.distribute()" in str(e), what + ": the message names model.distribute(): %s" % e)
d.close()
check(issubclass(nnlite.DistributedError, nnlite.Error) and nnlite.DistributedError.status == 10,
      "nnlite.DistributedError is NNL_ERR_DISTRIBUTED (10)")
check(isinstance(nnlite.errors.make(10, "nnl_distribute: rank 1 left"), nnlite.DistributedError),
      "status 10 raises DistributedError")

total = comm.allreduce(len(failures))
if rank == 0:
    print("mpi_test_distribute%s: %d ranks, %s" % (" --world-first" if world_first else "", size,
                                                   "%d FAILED" % total if total else "all passed"), flush=True)
sys.exit(1 if failures else 0)
