/* nnlite_cuda.cu - the CUDA backend of nnlite: hand-written kernels that
   mirror the CPU kernel table of nnlite.cpp (section 2) one by one, a caching
   device allocator, contexts (a device, a stream, scratch) and the fused
   optimizer updates. The interface is nnlite_cuda.h (internal, not public).

   Build: nvcc -std=c++17 -O2 -c nnlite_cuda.cu (make CUDA=1 does it, with
   code for sm_90 and PTX for compute_75 and compute_90).

   CONTENTS
     1  Errors, contexts, memory   status mapping, per-model stream and
                                   scratch, caching allocator, pinned copies
     1b CUDA graphs                stream capture and replay of a training
                                   step; the step's seed, optimizer scalars
                                   and result sums in device memory
     2  GEMM                       FP32 shared-memory tiles; TF32 tensor
                                   cores (WMMA, sm_80+); bias + activation
                                   epilogue
     3  Elementwise                activations, dropout (counter-based, the
                                   CPU's hash), bias, mul, copy
     4  Reductions                 sumsq (double), column sums (bias grad,
                                   moments, batch-norm backward), batch
                                   norm's per-channel step
     5  Convolution and pooling    transpose, im2col, col2im (gather, no
                                   atomics), max/average pooling, global
                                   pooling, zero padding, nearest upsampling
     5b Embedding and masking      row gather, the table's gradient from
                                   host-sorted row lists (no atomics), step
                                   masks
     5c Recurrent layers           state row copies, one fused LSTM or GRU
                                   step (forward, backward) per launch,
                                   dropout masks and masked rows,
                                   Bidirectional's merge and its gradient
     6  Losses and optimizers      fused sparse softmax cross-entropy; every
                                   loss and metric (row and element kernels);
                                   one fused update kernel per tensor

   Determinism: no kernel uses atomics; every reduction has a fixed order for
   a given shape and device, so a run repeats bit for bit on the same GPU.
   A step replayed from a CUDA graph (section 1b) runs the kernels the eager
   step launches, with the same arguments, in the same order; the values
   that change from step to step (dropout's step seed, the optimizer's
   scalars) are read from device memory in both modes, so the two agree
   bit for bit too. */

#include "nnlite_cuda.h"

#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace nnl_cuda {

/* ========================================================================
   1  Errors, contexts, memory
   ======================================================================== */

/* nnlite's status codes (nnlite.h), repeated to keep this file independent */
enum { ST_MEMORY = 6, ST_UNSUPPORTED = 7, ST_INTERNAL = 9, ST_DEVICE = 11 };

static void default_handler(int, const char *msg) { throw std::runtime_error(msg); }
static ErrorHandler g_handler = default_handler;
void set_error_handler(ErrorHandler h) { g_handler = h ? h : default_handler; }

static void fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(int status, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_handler(status, buf);
    throw std::runtime_error(buf); /* a handler that returns is a bug */
}

/* A CUDA error's nnlite status (nnlite.h "GPU"), by what it says about
   who failed. Pure (no CUDA call), so tests check it without a GPU.
   hint: NULL, or a clause for the message on what the error means for the
   process. Out of device memory is NNL_ERR_MEMORY; nnlite's own mistakes
   (a bad argument, pointer, handle or launch configuration) are
   NNL_ERR_INTERNAL; everything else is the device's or the driver's:
   NNL_ERR_DEVICE, unknown codes included (a later CUDA's new faults). */
int error_status(int cuda_error, const char **hint) {
    const char *h = nullptr;
    int st = ST_DEVICE;
    switch ((cudaError_t)cuda_error) {
    case cudaSuccess: st = 0; break;
    case cudaErrorMemoryAllocation: st = ST_MEMORY; break;
    /* nnlite called CUDA wrongly: a bug in nnlite */
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidPitchValue:
    case cudaErrorInvalidSymbol:
    case cudaErrorInvalidHostPointer:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
    case cudaErrorMissingConfiguration:
    case cudaErrorInvalidResourceHandle:
    case cudaErrorIllegalState:
    case cudaErrorLaunchOutOfResources:
    case cudaErrorCooperativeLaunchTooLarge:
    case cudaErrorHostMemoryAlreadyRegistered:
    case cudaErrorHostMemoryNotRegistered:
    case cudaErrorSetOnActiveProcess:
    case cudaErrorStreamCaptureUnsupported:
    case cudaErrorStreamCaptureInvalidated:
    case cudaErrorStreamCaptureMerge:
    case cudaErrorStreamCaptureUnmatched:
    case cudaErrorStreamCaptureUnjoined:
    case cudaErrorStreamCaptureIsolation:
    case cudaErrorStreamCaptureImplicit:
    case cudaErrorCapturedEvent:
    case cudaErrorStreamCaptureWrongThread:
    case cudaErrorGraphExecUpdateFailure:
#if CUDART_VERSION >= 12000
    case cudaErrorInvalidClusterSize:
#endif
#if CUDART_VERSION >= 13000 /* codes of later CUDAs (older builds: the default, NNL_ERR_DEVICE) */
    case cudaErrorInvalidResourceType:
    case cudaErrorInvalidResourceConfiguration:
#endif
        st = ST_INTERNAL;
        break;
    /* a fault inside a running kernel: the context is lost (sticky) */
    case cudaErrorIllegalAddress:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorIllegalInstruction:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorPriorLaunchFailure:
#if CUDART_VERSION >= 13000
    case cudaErrorTensorMemoryLeak:
#endif
        h = "a fault in a kernel; this process's CUDA context is lost (one that repeats on a healthy GPU may be "
            "an nnlite bug: please report it)";
        break;
    /* the hardware failed: the context is lost */
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
#if CUDART_VERSION >= 13000
    case cudaErrorContained:
    case cudaErrorExternalDevice:
#endif
    case cudaErrorUnknown:
        h = "the GPU failed; this process's CUDA context is lost";
        break;
    /* driver and runtime do not fit */
    case cudaErrorInsufficientDriver:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorStubLibrary:
        h = "the NVIDIA driver does not fit the CUDA runtime nnlite was built with (update the driver)";
        break;
    /* no code for this GPU in the build */
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidKernelImage:
    case cudaErrorInvalidDeviceFunction:
    case cudaErrorInvalidPtx:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorJitCompilerNotFound:
    case cudaErrorJitCompilationDisabled:
        h = "this build of nnlite has no code this GPU can run (build it for the GPU's architecture, "
            "make CUDA=1 CUDA_ARCH='-gencode arch=compute_XY,code=sm_XY')";
        break;
    default: break; /* the device is gone, busy, prohibited or not ready; MPS; unknown codes */
    }
    if (hint) *hint = h;
    return st;
}

static void check(cudaError_t e, const char *what, int line) {
    if (e == cudaSuccess) return;
    const char *hint = nullptr;
    int st = error_status((int)e, &hint);
    cudaGetLastError(); /* clear a non-sticky error */
    fail(st, "CUDA error %s (%s) in %s (nnlite_cuda.cu:%d)%s%s", cudaGetErrorName(e), cudaGetErrorString(e), what,
         line, hint ? ": " : "", hint ? hint : "");
}
#define CK(x) check((x), #x, __LINE__)
#define LAUNCHED() check(cudaGetLastError(), "kernel launch", __LINE__)

struct Context {
    int device = 0;
    int cc = 0; /* compute capability, 10 * major + minor */
    cudaStream_t stream = nullptr;
    bool tf32 = false;
    double *part = nullptr; /* reduction partials (device) */
    size_t part_n = 0;
    float *fs = nullptr; /* float scratch (device) */
    size_t fs_n = 0;
    double *host = nullptr; /* pinned results */
    int sms = 0;            /* multiprocessors: how many GEMM tiles fill the device */
    float *sk = nullptr;    /* split-K partial products (device) */
    size_t sk_n = 0;
    int32_t *is = nullptr;  /* int scratch (device): Embedding's row lists */
    size_t is_n = 0;
    /* CUDA graphs (section 1b) */
    uint64_t gen = 0;       /* bumped whenever a scratch array above moves: a
                               captured graph holds their addresses */
    bool capturing = false; /* the stream is being captured */
    bool capture_bad = false; /* something in the capture would differ at replay */
    /* the step's parameters in device memory, read by the kernels (never
       kernel arguments, so that a graph replays with new values): results
       (RESULTS doubles), the dropout step seed, the optimizer step */
    void *params = nullptr;
    double *res = nullptr;
    uint64_t *d_seed = nullptr;
    OptStep *d_opt = nullptr;
    uint64_t seed_put = 0; /* the value last put in d_seed (seed_valid) */
    OptStep opt_put;       /* likewise d_opt (opt_valid) */
    bool seed_valid = false, opt_valid = false;
    double *hres = nullptr; /* pinned: the results brought down (results_down) */
};

static thread_local Context *tl_ctx = nullptr;

static Context &ctx() {
    if (!tl_ctx) fail(ST_INTERNAL, "nnlite CUDA backend used with no current context");
    return *tl_ctx;
}
static cudaStream_t S() { return ctx().stream; }

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

int device_count_error(char *buf, size_t cap) {
    if (cap) buf[0] = 0;
    int n = 0, drv = 0, rt = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    cudaGetLastError();
    if (e == cudaSuccess || e == cudaErrorNoDevice || e == cudaErrorStubLibrary) return 0;
    /* the runtime says "insufficient driver" when there is none at all */
    if (cudaDriverGetVersion(&drv) != cudaSuccess || drv == 0) return 0;
    cudaRuntimeGetVersion(&rt);
    const char *hint = nullptr;
    error_status((int)e, &hint);
    if (cap)
        snprintf(buf, cap, "CUDA error %s (%s) counting the devices (driver for CUDA %d.%d, runtime %d.%d)%s%s",
                 cudaGetErrorName(e), cudaGetErrorString(e), drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10,
                 hint ? ": " : "", hint ? hint : "");
    return ST_DEVICE;
}

void device_name(int i, char *buf, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, cap, "CUDA device %d (unavailable)", i);
        return;
    }
    snprintf(buf, cap, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor, (double)p.totalGlobalMem / (1 << 30));
}

Context *context_create(int device) {
    int n = device_count();
    if (n == 0) fail(ST_UNSUPPORTED, "no CUDA device (cudaGetDeviceCount found none or no driver)");
    if (device < 0 || device >= n) fail(ST_UNSUPPORTED, "CUDA device %d does not exist (%d present)", device, n);
    CK(cudaSetDevice(device));
    Context *c = new Context();
    c->device = device;
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, device));
    c->cc = p.major * 10 + p.minor;
    c->sms = p.multiProcessorCount;
    if (c->cc < 75) {
        delete c;
        fail(ST_UNSUPPORTED, "CUDA device %d (%s) has compute capability %d.%d; nnlite needs 7.5 or newer", device,
             p.name, p.major, p.minor);
    }
    try {
        CK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
        CK(cudaMallocHost((void **)&c->host, 64 * sizeof(double)));
        CK(cudaMallocHost((void **)&c->hres, RESULTS * sizeof(double)));
        /* [results | seed | optimizer step], each at a 256-byte boundary */
        CK(cudaMalloc(&c->params, 1024));
        c->res = (double *)c->params;
        c->d_seed = (uint64_t *)((char *)c->params + 512);
        c->d_opt = (OptStep *)((char *)c->params + 768);
        static_assert(RESULTS * sizeof(double) <= 512 && sizeof(OptStep) <= 256, "the params block is too small");
        CK(cudaMemsetAsync(c->params, 0, 1024, c->stream));
    } catch (...) {
        if (c->params) cudaFree(c->params);
        if (c->hres) cudaFreeHost(c->hres);
        if (c->host) cudaFreeHost(c->host);
        if (c->stream) cudaStreamDestroy(c->stream);
        cudaGetLastError();
        delete c;
        throw;
    }
    return c;
}

void context_free(Context *c) {
    if (!c) return;
    Context *prev = tl_ctx;
    tl_ctx = c;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    dev_free(c->part);
    dev_free(c->fs);
    dev_free(c->sk);
    dev_free(c->is);
    cudaFree(c->params);
    cudaFreeHost(c->hres);
    cudaFreeHost(c->host);
    cudaStreamDestroy(c->stream);
    cudaGetLastError();
    tl_ctx = prev == c ? nullptr : prev;
    delete c;
}

void context_use(Context *c) {
    tl_ctx = c;
    if (c) CK(cudaSetDevice(c->device));
}
Context *context_current() { return tl_ctx; }
bool tf32_available(Context *c) { return c && c->cc >= 80; }
void set_tf32(Context *c, bool on) {
    if (c) c->tf32 = on && c->cc >= 80;
}
void synchronize() { CK(cudaStreamSynchronize(S())); }

/* Caching allocator: blocks are rounded up (256 B, then 1 MiB above 1 MiB),
   freed blocks wait in a per-device free list and are handed out again; CUDA
   memory is released only when an allocation fails (then the cache is
   emptied and the allocation retried). */
namespace {
std::mutex g_mem_mu;
std::multimap<std::pair<int, size_t>, void *> g_free; /* (device, size) -> block */
std::map<void *, std::pair<int, size_t>> g_live;
} // namespace

static size_t round_size(size_t b) {
    if (b <= ((size_t)1 << 20)) return (b + 255) / 256 * 256;
    return (b + ((size_t)1 << 20) - 1) >> 20 << 20;
}

void *dev_alloc(size_t bytes) {
    int dev = ctx().device;
    size_t sz = round_size(std::max<size_t>(bytes, 1));
    std::lock_guard<std::mutex> lk(g_mem_mu);
    auto it = g_free.find({dev, sz});
    if (it != g_free.end()) {
        void *p = it->second;
        g_free.erase(it);
        g_live[p] = {dev, sz};
        return p;
    }
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) { /* empty this device's cache and retry */
        cudaGetLastError();
        for (auto f = g_free.begin(); f != g_free.end();)
            if (f->first.first == dev) {
                cudaFree(f->second);
                f = g_free.erase(f);
            } else {
                ++f;
            }
        e = cudaMalloc(&p, sz);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(error_status((int)e, nullptr), "CUDA error %s (%s) allocating %zu bytes on device %d",
             cudaGetErrorName(e), cudaGetErrorString(e), sz, dev);
    }
    g_live[p] = {dev, sz};
    return p;
}

void dev_free(void *p) {
    if (!p) return;
    /* another context's stream may reuse the block: let this stream finish */
    if (tl_ctx) cudaStreamSynchronize(tl_ctx->stream);
    std::lock_guard<std::mutex> lk(g_mem_mu);
    auto it = g_live.find(p);
    if (it == g_live.end()) return;
    g_free.insert({it->second, p});
    g_live.erase(it);
}

void memset0(void *d, size_t bytes) {
    if (bytes) CK(cudaMemsetAsync(d, 0, bytes, S()));
}
void upload(void *d, const void *h, size_t bytes) {
    if (bytes) CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, S()));
}
void download(void *h, const void *d, size_t bytes) {
    if (!bytes) return;
    CK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, S()));
    CK(cudaStreamSynchronize(S()));
}
void pin(void *h, size_t bytes) {
    if (h && bytes) CK(cudaHostRegister(h, bytes, cudaHostRegisterDefault));
}
void unpin(void *h) {
    if (h) {
        cudaHostUnregister(h);
        cudaGetLastError();
    }
}

void *host_alloc(size_t bytes) {
    void *h = nullptr;
    CK(cudaMallocHost(&h, std::max<size_t>(bytes, 1)));
    return h;
}
void host_free(void *h) {
    if (h) {
        cudaFreeHost(h);
        cudaGetLastError();
    }
}
void *event_create() {
    cudaEvent_t e;
    CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return (void *)e;
}
void event_record(void *e) { CK(cudaEventRecord((cudaEvent_t)e, S())); }
void event_wait(void *e) { CK(cudaEventSynchronize((cudaEvent_t)e)); }
void event_free(void *e) {
    if (e) {
        cudaEventDestroy((cudaEvent_t)e);
        cudaGetLastError();
    }
}

/* ========================================================================
   1b CUDA graphs and the step's parameters
   A training step of nnlite.cpp is captured once (stream capture on the
   context's stream) and replayed with cudaGraphLaunch. What changes from
   step to step is never a kernel argument: the dropout step seed and the
   optimizer step live in device memory (Context::d_seed, d_opt), put
   there by a one-thread kernel before the kernels that read them, in
   eager runs as before a replay; the losses, metrics and the gradients'
   sum of squares land in Context::res and come down with one copy. The
   same kernels read the same values either way: a replayed step is the
   eager step bit for bit.
   ======================================================================== */
__device__ __forceinline__ uint64_t mix64_dev(uint64_t z) { /* nnlite.cpp's mix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__global__ void k_put_seed(uint64_t *d, uint64_t v) { *d = v; }
__global__ void k_put_opt(OptStep *d, OptStep v) { *d = v; }

struct Graph {
    cudaGraphExec_t exec = nullptr;
};

bool capturing() { return tl_ctx && tl_ctx->capturing; }
uint64_t scratch_generation() { return ctx().gen; }

void capture_begin() {
    Context &c = ctx();
    if (c.capturing) fail(ST_INTERNAL, "capture_begin: a capture is already in progress");
    CK(cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal));
    c.capturing = true;
    c.capture_bad = false;
}

Graph *capture_end() {
    Context &c = ctx();
    if (!c.capturing) fail(ST_INTERNAL, "capture_end: no capture in progress");
    c.capturing = false;
    bool bad = c.capture_bad;
    c.capture_bad = false;
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(c.stream, &g);
    if (e != cudaSuccess || !g || bad) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        return nullptr;
    }
    cudaGraphExec_t x = nullptr;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    Graph *r = new Graph();
    r->exec = x;
    return r;
}

void capture_abort() {
    Context *c = tl_ctx;
    if (!c || !c->capturing) return;
    c->capturing = false;
    c->capture_bad = false;
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(c->stream, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
}

void graph_launch(Graph *g) {
    if (capturing()) fail(ST_INTERNAL, "graph_launch inside a capture");
    CK(cudaGraphLaunch(g->exec, S()));
}
void graph_free(Graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec); /* one in flight is freed when it completes */
    cudaGetLastError();
    delete g;
}

void set_step_seed(uint64_t seed) {
    Context &c = ctx();
    if (c.capturing) fail(ST_INTERNAL, "set_step_seed inside a capture (it goes before the launch)");
    k_put_seed<<<1, 1, 0, c.stream>>>(c.d_seed, seed);
    LAUNCHED();
    c.seed_put = seed;
    c.seed_valid = true;
}

/* field by field, floats by their bits (-0 is not 0 here, NaN is itself):
   the padding of a copied struct is not compared */
static bool same_step(const OptStep &a, const OptStep &b) {
#define NNL_SAME(f) (memcmp(&a.f, &b.f, sizeof a.f) == 0)
    return NNL_SAME(kind) && NNL_SAME(lr) && NNL_SAME(momentum) && NNL_SAME(rho) && NNL_SAME(eps) &&
           NNL_SAME(b1c) && NNL_SAME(b2c) && NNL_SAME(b2) && NNL_SAME(alpha) && NNL_SAME(wd) && NNL_SAME(a1) &&
           NNL_SAME(a2) && NNL_SAME(vb) && NNL_SAME(step) && a.nesterov == b.nesterov && a.centered == b.centered &&
           a.amsgrad == b.amsgrad;
#undef NNL_SAME
}

void set_opt_step(const OptStep &s) {
    Context &c = ctx();
    if (c.capturing) fail(ST_INTERNAL, "set_opt_step inside a capture (it goes before the launch)");
    k_put_opt<<<1, 1, 0, c.stream>>>(c.d_opt, s);
    LAUNCHED();
    c.opt_put = s;
    c.opt_valid = true;
}

double *results() { return ctx().res; }
const double *results_host() { return ctx().hres; }
void results_down(int n) {
    if (n < 0 || n > RESULTS) fail(ST_INTERNAL, "results_down: %d results, at most %d", n, RESULTS);
    if (n) CK(cudaMemcpyAsync(ctx().hres, ctx().res, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, S()));
}

/* A scratch array is about to move: graphs captured with the old address
   are stale (the generation says so), and a capture in progress cannot
   allocate (nnlite.cpp captures a step only after the same step ran
   eagerly, which grew the scratch already; this is the safety net). */
static void scratch_moves(Context &c) {
    if (c.capturing) fail(ST_INTERNAL, "nnlite CUDA backend: scratch memory grows during a graph capture");
    c.gen++;
}

/* scratch that only grows: no allocation per batch once warm */
static double *part_scratch(size_t n) {
    Context &c = ctx();
    if (c.part_n < n) {
        scratch_moves(c);
        dev_free(c.part);
        c.part = (double *)dev_alloc(n * sizeof(double));
        c.part_n = n;
    }
    return c.part;
}
static float *float_scratch(size_t n) {
    Context &c = ctx();
    if (c.fs_n < n) {
        scratch_moves(c);
        dev_free(c.fs);
        c.fs = (float *)dev_alloc(n * sizeof(float));
        c.fs_n = n;
    }
    return c.fs;
}

static int32_t *int_scratch(size_t n) {
    Context &c = ctx();
    if (c.is_n < n) {
        scratch_moves(c);
        dev_free(c.is);
        c.is = (int32_t *)dev_alloc(n * sizeof(int32_t));
        c.is_n = n;
    }
    return c.is;
}

static unsigned grid_for(int64_t n, int threads = 256) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)std::max<int64_t>(1, std::min<int64_t>(b, 65535LL * 16));
}
/* A grid-stride loop over an index of type I: the window kernels below run
   with 32-bit indices when every index fits (small_index), as 64-bit
   division and remainder are slow instruction sequences on the GPU (im2col
   wrote 220 GB/s with int64 arithmetic on an H200). */
#define GRID_STRIDE_I(I, i, n) for (I i = (I)(blockIdx.x * blockDim.x + threadIdx.x); i < (I)(n); i += (I)(gridDim.x * blockDim.x))
static bool small_index(int64_t a, int64_t b) {
    const int64_t lim = (int64_t)1 << 30; /* below 2^31 with a grid's stride added (grid_for: < 2^28 threads) */
    return a < lim && b < lim;
}
#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ========================================================================
   3 (first: the GEMM epilogue needs them)  Activations
   The same formulas as nnlite.cpp's act_f / act_d (section 2), in float:
   NaN propagates forward and backward (dx = dy * act'(x), act'(NaN) =
   NaN), +-Inf gives the limit where there is one. Comparisons, never
   fmaxf/fminf, which return the number when the other operand is NaN.
   ======================================================================== */
__device__ const float SELU_ALPHA = 1.6732632423543772f, SELU_SCALE = 1.0507009873554805f, LEAKY_SLOPE = 0.2f;

__device__ __forceinline__ float sigmoidf_(float x) {
    return x >= 0 ? 1.f / (1.f + expf(-x)) : expf(x) / (1.f + expf(x));
}
/* x clamped to [lo, hi], NaN kept */
__device__ __forceinline__ float clampf_(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

__device__ __forceinline__ float act1(int a, float x) {
    switch (a) {
    case A_RELU: return x < 0 ? 0.f : x;
    case A_SIGMOID: return sigmoidf_(x);
    case A_TANH: return tanhf(x);
    case A_LEAKY_RELU: return x > 0 ? x : LEAKY_SLOPE * x;
    case A_ELU: return x > 0 ? x : expm1f(x);
    case A_SELU: return SELU_SCALE * (x > 0 ? x : SELU_ALPHA * expm1f(x));
    case A_GELU: {
        float c = x < -20.f ? -20.f : x;
        return 0.5f * c * (1.f + erff(c * 0.70710678118654752f));
    }
    case A_SOFTPLUS: return (x < 0 ? 0.f : x) + log1pf(expf(-fabsf(x)));
    case A_SOFTSIGN: {
        float c = clampf_(x, -1e30f, 1e30f);
        return c / (1.f + fabsf(c));
    }
    case A_SWISH: {
        float c = x < -200.f ? -200.f : x;
        return c * sigmoidf_(c);
    }
    case A_HARD_SIGMOID: return clampf_(0.2f * x + 0.5f, 0.f, 1.f);
    case A_EXPONENTIAL: return expf(x);
    default: return x;
    }
}

__device__ __forceinline__ float dact1(int a, float x, float y) {
    switch (a) {
    case A_RELU: return x != x ? x : (x > 0 ? 1.f : 0.f);
    case A_SIGMOID: return y * (1.f - y);
    case A_TANH: return 1.f - y * y;
    case A_LEAKY_RELU: return x != x ? x : (x > 0 ? 1.f : LEAKY_SLOPE);
    case A_ELU: return x > 0 ? 1.f : y + 1.f;
    case A_SELU: return x > 0 ? SELU_SCALE : y + SELU_SCALE * SELU_ALPHA;
    case A_GELU: {
        float c = clampf_(x, -20.f, 20.f);
        return 0.5f * (1.f + erff(c * 0.70710678118654752f)) + c * 0.3989422804014327f * expf(-0.5f * c * c);
    }
    case A_SOFTPLUS: return sigmoidf_(x);
    case A_SOFTSIGN: {
        float d = 1.f + fabsf(x);
        return 1.f / (d * d);
    }
    case A_SWISH: {
        float c = clampf_(x, -200.f, 200.f), s = sigmoidf_(c);
        return s * (1.f + c * (1.f - s));
    }
    case A_HARD_SIGMOID: return x != x ? x : ((x > -2.5f && x < 2.5f) ? 0.2f : 0.f);
    case A_EXPONENTIAL: return y;
    default: return 1.f;
    }
}

/* ========================================================================
   2  GEMM
   C[M,N] = alpha op(A) op(B) + beta C, then (+ bias[j], act) when asked.
   beta == 0 never reads C (it may hold anything, NaN included).
   ======================================================================== */
namespace gemm {
constexpr int BM = 64, BN = 64, BK = 16;

__device__ __forceinline__ void store(float *C, int64_t ldc, int64_t i, int64_t j, float v, float alpha, float beta,
                                      const float *bias, int act) {
    float *c = C + i * ldc + j;
    float r = alpha * v;
    if (beta != 0.f) r += beta * *c;
    if (bias) r += bias[j];
    if (act != A_LINEAR) r = act1(act, r);
    *c = r;
}

/* FP32: a TBM x TBN block of C per 256 threads, TM x TN values each (rows
   ty + 16 r, columns tx + 16 c: the inner loop reads broadcast or
   consecutive words), A and B staged through shared memory 16 deep
   (k-major); the next slice of A and B is read into registers while the
   current one is multiplied. 64 x 64 (4 x 4 a thread) for small products,
   128 x 64 (8 x 4) and 128 x 128 (8 x 8) for tall ones: more products per
   value read from shared memory (R-LENET's convolutions ran at 12 TFLOP/s
   on an H200 with 64 x 64 alone). With part != NULL the block writes its
   raw sums over its slice of K (blockIdx.z) there (split K). */
template <int TBM, int TBN>
__global__ void __launch_bounds__(256) sgemm_fp32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                                  const float *__restrict__ A, int64_t lda,
                                                  const float *__restrict__ B, int64_t ldb, float beta, float *C,
                                                  int64_t ldc, const float *__restrict__ bias, int act, int64_t ks,
                                                  float *__restrict__ part) {
    constexpr int TM = TBM / 16, TN = TBN / 16, LA = TBM * BK / 256, LB = TBN * BK / 256;
    __shared__ float As[BK][TBM + 4], Bs[BK][TBN + 4];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t i0 = (int64_t)blockIdx.y * TBM, j0 = (int64_t)blockIdx.x * TBN;
    const int64_t kb = (int64_t)blockIdx.z * ks, ke = min(K, kb + ks);
    float acc[TM][TN] = {};
    float ra[LA], rb[LB];
    /* element e of a slice: A's (m, k) and B's (k, n), in the order that
       makes consecutive threads read consecutive addresses */
    auto load = [&](int64_t k0) {
#pragma unroll
        for (int q = 0; q < LA; q++) {
            int e = tid + 256 * q, m, k;
            if (ta) { m = e % TBM; k = e / TBM; } else { m = e / BK; k = e % BK; }
            int64_t gi = i0 + m, gk = k0 + k;
            ra[q] = (gi < M && gk < ke) ? (ta ? A[gk * lda + gi] : A[gi * lda + gk]) : 0.f;
        }
#pragma unroll
        for (int q = 0; q < LB; q++) {
            int e = tid + 256 * q, n, k;
            if (tb) { n = e / BK; k = e % BK; } else { k = e / TBN; n = e % TBN; }
            int64_t gj = j0 + n, gk = k0 + k;
            rb[q] = (gj < N && gk < ke) ? (tb ? B[gj * ldb + gk] : B[gk * ldb + gj]) : 0.f;
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int q = 0; q < LA; q++) {
            int e = tid + 256 * q, m, k;
            if (ta) { m = e % TBM; k = e / TBM; } else { m = e / BK; k = e % BK; }
            As[k][m] = ra[q];
        }
#pragma unroll
        for (int q = 0; q < LB; q++) {
            int e = tid + 256 * q, n, k;
            if (tb) { n = e / BK; k = e % BK; } else { k = e / TBN; n = e % TBN; }
            Bs[k][n] = rb[q];
        }
    };
    if (kb < ke) load(kb);
    for (int64_t k0 = kb; k0 < ke; k0 += BK) {
        stash();
        __syncthreads();
        if (k0 + BK < ke) load(k0 + BK); /* in flight while this slice is multiplied */
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float a[TM], b[TN];
#pragma unroll
            for (int r = 0; r < TM; r++) a[r] = As[k][ty + 16 * r];
#pragma unroll
            for (int c = 0; c < TN; c++) b[c] = Bs[k][tx + 16 * c];
#pragma unroll
            for (int r = 0; r < TM; r++)
#pragma unroll
                for (int c = 0; c < TN; c++) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < TM; r++)
#pragma unroll
        for (int c = 0; c < TN; c++) {
            int64_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * c;
            if (i < M && j < N) {
                if (part)
                    part[((int64_t)blockIdx.z * M + i) * N + j] = acc[r][c];
                else
                    store(C, ldc, i, j, acc[r][c], alpha, beta, bias, act);
            }
        }
}

/* TF32 tensor cores (sm_80+): a 64 x 64 block per 4 warps, each warp 32 x 32
   as 2 x 2 WMMA 16x16x8 tiles; operands rounded to TF32 (10-bit mantissa),
   accumulation in FP32. Compiled to a trap below sm_80; the host never
   launches it there. */
__global__ void __launch_bounds__(128) sgemm_tf32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                                  const float *__restrict__ A, int64_t lda,
                                                  const float *__restrict__ B, int64_t ldb, float beta, float *C,
                                                  int64_t ldc, const float *__restrict__ bias, int act, int64_t ks,
                                                  float *__restrict__ part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    __shared__ __align__(128) float As[BM][BK + 4];
    __shared__ __align__(128) float Bs[BK][BN + 4];
    __shared__ __align__(128) float Cs[BM][BN + 4];
    const int tid = threadIdx.x, warp = tid / 32, wm = warp / 2, wn = warp % 2;
    const int64_t i0 = (int64_t)blockIdx.y * BM, j0 = (int64_t)blockIdx.x * BN;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 2; b++) wmma::fill_fragment(acc[a][b], 0.f);
    const int64_t kb = (int64_t)blockIdx.z * ks, ke = min(K, kb + ks);
    for (int64_t k0 = kb; k0 < ke; k0 += BK) {
#pragma unroll
        for (int q = 0; q < 8; q++) {
            int e = tid + 128 * q;
            int m, k;
            if (ta) { m = e % BM; k = e / BM; } else { m = e / BK; k = e % BK; }
            int64_t gi = i0 + m, gk = k0 + k;
            As[m][k] = (gi < M && gk < ke) ? (ta ? A[gk * lda + gi] : A[gi * lda + gk]) : 0.f;
            int n;
            if (tb) { n = e / BK; k = e % BK; } else { k = e / BN; n = e % BN; }
            int64_t gj = j0 + n;
            gk = k0 + k;
            Bs[k][n] = (gj < N && gk < ke) ? (tb ? B[gj * ldb + gk] : B[gk * ldb + gj]) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[2];
#pragma unroll
            for (int a = 0; a < 2; a++) {
                wmma::load_matrix_sync(fa[a], &As[wm * 32 + a * 16][kk], BK + 4);
#pragma unroll
                for (int t = 0; t < fa[a].num_elements; t++) fa[a].x[t] = wmma::__float_to_tf32(fa[a].x[t]);
            }
#pragma unroll
            for (int b = 0; b < 2; b++) {
                wmma::load_matrix_sync(fb[b], &Bs[kk][wn * 32 + b * 16], BN + 4);
#pragma unroll
                for (int t = 0; t < fb[b].num_elements; t++) fb[b].x[t] = wmma::__float_to_tf32(fb[b].x[t]);
            }
#pragma unroll
            for (int a = 0; a < 2; a++)
#pragma unroll
                for (int b = 0; b < 2; b++) wmma::mma_sync(acc[a][b], fa[a], fb[b], acc[a][b]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 2; b++)
            wmma::store_matrix_sync(&Cs[wm * 32 + a * 16][wn * 32 + b * 16], acc[a][b], BN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BM * BN; e += 128) {
        int r = e / BN, c = e % BN;
        int64_t i = i0 + r, j = j0 + c;
        if (i < M && j < N) {
            if (part)
                part[((int64_t)blockIdx.z * M + i) * N + j] = Cs[r][c];
            else
                store(C, ldc, i, j, Cs[r][c], alpha, beta, bias, act);
        }
    }
#else
    __trap();
#endif
}

/* Split K: the sum of the splits' partial products in split order (a fixed
   order: the result repeats bit for bit), then alpha, beta and the epilogue */
__global__ void splitk_reduce(int64_t M, int64_t N, int splits, const float *__restrict__ part, float alpha,
                              float beta, float *C, int64_t ldc, const float *bias, int act) {
    GRID_STRIDE(e, M * N) {
        float v = 0.f;
        for (int s = 0; s < splits; s++) v += part[(int64_t)s * M * N + e];
        store(C, ldc, e / N, e % N, v, alpha, beta, bias, act);
    }
}

/* K == 0 (or alpha == 0): C = beta C, then the epilogue */
__global__ void scale_ep(int64_t M, int64_t N, float beta, float *C, int64_t ldc, const float *bias, int act) {
    GRID_STRIDE(e, M * N) {
        int64_t i = e / N, j = e % N;
        store(C, ldc, i, j, 0.f, 0.f, beta, bias, act);
    }
}
} // namespace gemm

void act_forward(int act, const float *x, float *y, int64_t rows, int64_t n);

static void gemm_launch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, int act) {
    if (M <= 0 || N <= 0) return;
    int ep_act = act == A_SOFTMAX ? A_LINEAR : act; /* softmax needs whole rows: a second pass */
    if (K <= 0 || alpha == 0.f) {
        gemm::scale_ep<<<grid_for(M * N), 256, 0, S()>>>(M, N, beta, C, ldc, bias, ep_act);
    } else {
        /* the FP32 block shape: 128 rows when that still gives every
           multiprocessor a few blocks, 128 columns when N fills them */
        const bool tf32 = ctx().tf32;
        const int sms = std::max(ctx().sms, 1);
        int tbm = gemm::BM, tbn = gemm::BN;
        if (!tf32 && ((M + 127) / 128) * ((N + 63) / 64) >= 2 * sms) {
            tbm = 128;
            tbn = N > 96 && K >= 256 ? 128 : 64; /* 128 x 128 holds one block per multiprocessor: only
                                                    worth it over a long K (K = 50, N = 500: 2x slower) */
        }
        int64_t gx = (N + tbn - 1) / tbn, gy = (M + tbm - 1) / tbm;
        if (gy > 65535) fail(ST_UNSUPPORTED, "sgemm: M = %lld is too large for one launch", (long long)M);
        /* Split K when the tiles leave most multiprocessors idle and K is
           deep (a weight gradient: a few tiles of output, a depth of the
           whole batch's positions): up to four blocks per multiprocessor,
           each split at least 256 deep, partial products reduced in order
           (R-LENET's first convolution, 25 x 20 from a depth of 401,408 at
           batch 512: one block took 1.15 ms; 64 splits ran at 349 GFLOP/s) */
        int64_t splits = 1, tiles = gx * gy;
        if (tiles < sms && K >= 1024) {
            splits = std::min<int64_t>({(4 * sms + tiles - 1) / tiles, K / 256, 1024});
            int64_t cap = ((int64_t)1 << 26) / (M * N); /* partial products within 256 MB */
            splits = std::max<int64_t>(1, std::min(splits, cap));
        }
        int64_t ks = (K + splits - 1) / splits;
        ks = (ks + gemm::BK - 1) / gemm::BK * gemm::BK;
        splits = (K + ks - 1) / ks;
        float *part = nullptr;
        if (splits > 1) {
            Context &c = ctx();
            size_t need = (size_t)(splits * M * N);
            if (c.sk_n < need) {
                scratch_moves(c);
                dev_free(c.sk);
                c.sk = nullptr;
                c.sk_n = 0;
                c.sk = (float *)dev_alloc(need * sizeof(float));
                c.sk_n = need;
            }
            part = c.sk;
        }
        dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)splits);
        if (tf32)
            gemm::sgemm_tf32<<<grid, 128, 0, S()>>>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias,
                                                    ep_act, ks, part);
        else if (tbm == 64)
            gemm::sgemm_fp32<64, 64><<<grid, 256, 0, S()>>>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                                                            bias, ep_act, ks, part);
        else if (tbn == 64)
            gemm::sgemm_fp32<128, 64><<<grid, 256, 0, S()>>>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                                                             bias, ep_act, ks, part);
        else
            gemm::sgemm_fp32<128, 128><<<grid, 256, 0, S()>>>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C,
                                                              ldc, bias, ep_act, ks, part);
        LAUNCHED();
        if (part)
            gemm::splitk_reduce<<<grid_for(M * N), 256, 0, S()>>>(M, N, (int)splits, part, alpha, beta, C, ldc,
                                                                  bias, ep_act);
    }
    LAUNCHED();
    if (act == A_SOFTMAX) {
        if (ldc != N) fail(ST_UNSUPPORTED, "sgemm_bias_act: softmax needs ldc == N");
        act_forward(A_SOFTMAX, C, C, M, N);
    }
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_launch(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr, A_LINEAR);
}

void sgemm_bias_act(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, const float *bias, int act) {
    gemm_launch(false, false, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc, bias, act);
}

/* ========================================================================
   3  Elementwise
   ======================================================================== */
__global__ void k_act_fwd(int a, const float *x, float *y, int64_t n) {
    GRID_STRIDE(i, n) y[i] = act1(a, x[i]);
}
__global__ void k_act_bwd(int a, const float *x, const float *y, const float *dy, float *dx, int64_t n) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * dact1(a, x ? x[i] : 0.f, y ? y[i] : 0.f);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sumd(double v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* softmax over rows of n: one warp per row, max subtracted */
__global__ void k_softmax(const float *x, float *y, int64_t rows, int64_t n) {
    int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float *xr = x + r * n;
    float *yr = y + r * n;
    float m = -INFINITY;
    for (int64_t j = lane; j < n; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max(m);
    float s = 0.f;
    for (int64_t j = lane; j < n; j += 32) {
        float e = expf(xr[j] - m);
        yr[j] = e;
        s += e;
    }
    s = warp_sum(s);
    float inv = 1.f / s;
    for (int64_t j = lane; j < n; j += 32) yr[j] *= inv;
}

__global__ void k_softmax_bwd(const float *y, const float *dy, float *dx, int64_t rows, int64_t n) {
    int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float *yr = y + r * n, *dr = dy + r * n;
    float *o = dx + r * n;
    float dot = 0.f;
    for (int64_t j = lane; j < n; j += 32) dot += dr[j] * yr[j];
    dot = warp_sum(dot);
    for (int64_t j = lane; j < n; j += 32) o[j] = yr[j] * (dr[j] - dot);
}

void act_forward(int act, const float *x, float *y, int64_t rows, int64_t n) {
    if (rows <= 0 || n <= 0) return;
    if (act == A_SOFTMAX) {
        k_softmax<<<grid_for(rows * 32), 256, 0, S()>>>(x, y, rows, n);
    } else if (act == A_LINEAR) {
        copy(x, y, rows * n);
        return;
    } else {
        k_act_fwd<<<grid_for(rows * n), 256, 0, S()>>>(act, x, y, rows * n);
    }
    LAUNCHED();
}

void act_backward(int act, const float *x, const float *y, const float *dy, float *dx, int64_t rows, int64_t n) {
    if (rows <= 0 || n <= 0) return;
    if (act == A_SOFTMAX)
        k_softmax_bwd<<<grid_for(rows * 32), 256, 0, S()>>>(y, dy, dx, rows, n);
    else
        k_act_bwd<<<grid_for(rows * n), 256, 0, S()>>>(act, x, y, dy, dx, rows * n);
    LAUNCHED();
}

/* nnlite.cpp's dropout hash (mix32, two rounds keyed by the seed's halves):
   element i's draw depends on (seed, i) only, so the GPU's masks are the
   CPU's, bit for bit */
__device__ __forceinline__ uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
/* rate * 2^24 rounded up; element i's mask value (nnlite.cpp's
   dropout_thresh and dropout_draw) */
static uint32_t dropout_thresh(float rate) { return (uint32_t)fmin(16777216.0, ceil((double)rate * 16777216.0)); }
__device__ __forceinline__ float dropout_draw(int64_t i, uint64_t seed, uint32_t thresh, float keep) {
    uint32_t h = mix32(mix32((uint32_t)i ^ (uint32_t)seed) + (uint32_t)(seed >> 32));
    return (h >> 8) < thresh ? 0.f : keep;
}
__global__ void k_dropout(const float *x, float *y, float *mask, int64_t n, uint32_t thresh, float keep,
                          const uint64_t *step, uint64_t salt) {
    uint64_t seed = mix64_dev(*step ^ salt);
    GRID_STRIDE(i, n) {
        float m = dropout_draw(i, seed, thresh, keep);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
/* The step seed is read from Context::d_seed (section 1b): put there
   first when it holds another value; a capture only checks that it holds
   this one (the replay puts it before each launch). */
void dropout_forward(const float *x, float *y, float *mask, int64_t n, float rate, uint64_t step, uint64_t salt) {
    if (n <= 0) return;
    Context &c = ctx();
    if (!c.seed_valid || c.seed_put != step) {
        if (c.capturing)
            c.capture_bad = true;
        else
            set_step_seed(step);
    }
    uint32_t thresh = dropout_thresh(rate);
    k_dropout<<<grid_for(n), 256, 0, S()>>>(x, y, mask, n, thresh, 1.f / (1.f - rate), c.d_seed, salt);
    LAUNCHED();
}

__global__ void k_mul(const float *a, const float *b, float *y, int64_t n) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}
void mul(const float *a, const float *b, float *y, int64_t n) {
    if (n <= 0) return;
    k_mul<<<grid_for(n), 256, 0, S()>>>(a, b, y, n);
    LAUNCHED();
}
/* ReLU's derivative as bits (nnlite.cpp, Kernels::relu_bits): one thread a
   32-bit word, then dx = dy * (bit ? 1 : 0) */
__global__ void k_relu_bits(const float *y, uint32_t *bits, int64_t n) {
    GRID_STRIDE(w, (n + 31) / 32) {
        uint32_t b = 0;
        for (int j = 0; j < 32 && w * 32 + j < n; j++) b |= (uint32_t)(y[w * 32 + j] > 0.f) << j;
        bits[w] = b;
    }
}
void relu_bits(const float *y, uint32_t *bits, int64_t n) {
    if (n <= 0) return;
    k_relu_bits<<<grid_for((n + 31) / 32), 256, 0, S()>>>(y, bits, n);
    LAUNCHED();
}
__global__ void k_relu_bits_bwd(const uint32_t *bits, const float *dy, float *dx, int64_t n) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * ((bits[i >> 5] >> (i & 31)) & 1u ? 1.f : 0.f);
}
void relu_bits_backward(const uint32_t *bits, const float *dy, float *dx, int64_t n) {
    if (n <= 0) return;
    k_relu_bits_bwd<<<grid_for(n), 256, 0, S()>>>(bits, dy, dx, n);
    LAUNCHED();
}
void copy(const float *x, float *y, int64_t n) {
    if (n > 0 && x != y) CK(cudaMemcpyAsync(y, x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, S()));
}

__global__ void k_bias_add(float *y, const float *b, int64_t rows, int64_t n) {
    GRID_STRIDE(i, rows * n) y[i] += b[i % n];
}
void bias_add(float *y, const float *b, int64_t rows, int64_t n) {
    if (rows <= 0 || n <= 0) return;
    k_bias_add<<<grid_for(rows * n), 256, 0, S()>>>(y, b, rows, n);
    LAUNCHED();
}

__global__ void k_scale_shift(const float *x, float *y, int64_t rows, int64_t C, const float *sc, const float *sh) {
    GRID_STRIDE(i, rows * C) {
        int64_t c = i % C;
        y[i] = x[i] * sc[c] + sh[c];
    }
}
void scale_shift(const float *x, float *y, int64_t rows, int64_t C, const float *scale_, const float *shift) {
    if (rows <= 0 || C <= 0) return;
    k_scale_shift<<<grid_for(rows * C), 256, 0, S()>>>(x, y, rows, C, scale_, shift);
    LAUNCHED();
}

/* ========================================================================
   4  Reductions
   ======================================================================== */
constexpr int RED_BLOCKS = 512;

/* sum of squares: double per thread, then per block, then one block */
__global__ void k_sumsq_part(const float *x, int64_t n, double *part) {
    __shared__ double sh[8];
    double s = 0;
    GRID_STRIDE(i, n) {
        double v = x[i];
        s += v * v;
    }
    s = warp_sumd(s);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < (int)blockDim.x / 32; w++) t += sh[w];
        part[blockIdx.x] = t;
    }
}
/* out[0] = sum of part[0..n) (one block of 256; fixed order) */
__global__ void k_sum_parts(const double *part, int n, double *out) {
    __shared__ double sh[256];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += 256) s += part[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = 128; o > 0; o /= 2) {
        if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = sh[0];
}

void sumsq_async(const float *x, int64_t n, double *out) {
    if (n <= 0) {
        memset0(out, sizeof(double));
        return;
    }
    double *part = part_scratch(RED_BLOCKS + 1);
    int blocks = (int)std::min<int64_t>(RED_BLOCKS, (n + 255) / 256);
    k_sumsq_part<<<blocks, 256, 0, S()>>>(x, n, part);
    LAUNCHED();
    k_sum_parts<<<1, 256, 0, S()>>>(part, blocks, out);
    LAUNCHED();
}

double sumsq(const float *x, int64_t n, bool *finite) {
    double s = 0;
    if (n > 0) {
        double *part = part_scratch(RED_BLOCKS + 1);
        sumsq_async(x, n, part + RED_BLOCKS);
        double *h = ctx().host;
        CK(cudaMemcpyAsync(h, part + RED_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost, S()));
        CK(cudaStreamSynchronize(S()));
        s = h[0];
    }
    if (finite) *finite = std::isfinite(s);
    return s;
}

/* Column sums of x[rows, C] over row chunks: a block is 32 columns x 8 row
   lanes; out[chunk * C + c] in double. MODE 0: x; 1: (x - center)^2;
   2: dy (into out) and dy * (x - mean) * invstd (into out2). */
template <int MODE>
__global__ void k_colpart(const float *x, const float *dy, int64_t rows, int64_t C, const float *center,
                          const float *invstd, double *out, double *out2) {
    __shared__ double s1[8][33], s2[8][33];
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    int64_t c = blockIdx.x * 32LL + tx;
    int64_t per = (rows + gridDim.y - 1) / gridDim.y, r0 = blockIdx.y * per, r1 = min(rows, r0 + per);
    double a = 0, b = 0;
    if (c < C)
        for (int64_t r = r0 + ty; r < r1; r += 8) {
            float v = x ? x[r * C + c] : 0.f;
            if (MODE == 0) {
                a += v;
            } else if (MODE == 1) {
                float d = v - center[c];
                a += (double)d * d;
            } else {
                float d = dy[r * C + c];
                a += d;
                b += (double)d * ((v - center[c]) * invstd[c]);
            }
        }
    s1[ty][tx] = a;
    s2[ty][tx] = b;
    __syncthreads();
    if (ty == 0 && c < C) {
        double t = 0, u = 0;
        for (int k = 0; k < 8; k++) {
            t += s1[k][tx];
            u += s2[k][tx];
        }
        out[blockIdx.y * C + c] = t;
        if (MODE == 2) out2[blockIdx.y * C + c] = u;
    }
}

/* Sums the chunks: res[c] = sum_k part[k * C + c] */
__global__ void k_colsum(const double *part, int chunks, int64_t C, double *res) {
    GRID_STRIDE(c, C) {
        double t = 0;
        for (int k = 0; k < chunks; k++) t += part[k * C + c];
        res[c] = t;
    }
}

static int chunks_for(int64_t rows) { return (int)std::max<int64_t>(1, std::min<int64_t>(256, (rows + 63) / 64)); }

/* column sums of mode MODE into res (C doubles, device), res2 likewise for MODE 2 */
template <int MODE>
static void colsums(const float *x, const float *dy, int64_t rows, int64_t C, const float *center,
                    const float *invstd, double *res, double *res2) {
    int ch = chunks_for(rows);
    double *part = part_scratch((size_t)(2 * ch * C + 2 * C)) + 2 * C; /* res, res2 live at the start */
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)ch);
    k_colpart<MODE><<<grid, 256, 0, S()>>>(x, dy, rows, C, center, invstd, part, part + ch * C);
    LAUNCHED();
    k_colsum<<<grid_for(C), 256, 0, S()>>>(part, ch, C, res);
    LAUNCHED();
    if (MODE == 2) {
        k_colsum<<<grid_for(C), 256, 0, S()>>>(part + ch * C, ch, C, res2);
        LAUNCHED();
    }
}

__global__ void k_d2f(const double *s, float *y, int64_t n, double div) {
    GRID_STRIDE(i, n) y[i] = (float)(s[i] / div);
}

void bias_grad(const float *dy, float *db, int64_t rows, int64_t n) {
    if (n <= 0) return;
    if (rows <= 0) {
        CK(cudaMemsetAsync(db, 0, (size_t)n * sizeof(float), S()));
        return;
    }
    /* MODE 0 sums its x argument: pass dy as x */
    int ch = chunks_for(rows);
    double *res = part_scratch((size_t)(2 * ch * n + 2 * n));
    colsums<0>(dy, nullptr, rows, n, nullptr, nullptr, res, nullptr);
    k_d2f<<<grid_for(n), 256, 0, S()>>>(res, db, n, 1.0);
    LAUNCHED();
}

void moments(const float *x, int64_t rows, int64_t C, float *mean, float *var) {
    if (C <= 0 || rows <= 0) return;
    int ch = chunks_for(rows);
    double *res = part_scratch((size_t)(2 * ch * C + 2 * C));
    colsums<0>(x, nullptr, rows, C, nullptr, nullptr, res, nullptr);
    k_d2f<<<grid_for(C), 256, 0, S()>>>(res, mean, C, (double)rows);
    LAUNCHED();
    colsums<1>(x, nullptr, rows, C, mean, nullptr, res, nullptr); /* two passes: no cancellation */
    k_d2f<<<grid_for(C), 256, 0, S()>>>(res, var, C, (double)rows);
    LAUNCHED();
}

__global__ void k_bn_finish(const double *sdy, const double *sdx, int64_t rows, int64_t C, const float *gamma,
                            const float *invstd, float *dgamma, float *dbeta, float *coef, bool training) {
    GRID_STRIDE(c, C) {
        if (dbeta) dbeta[c] = (float)sdy[c];
        if (dgamma) dgamma[c] = (float)sdx[c];
        float gm = gamma ? gamma[c] : 1.f;
        coef[c] = gm * invstd[c];
        coef[C + c] = training ? (float)(sdy[c] / (double)rows) : 0.f;
        coef[2 * C + c] = training ? (float)(sdx[c] / (double)rows) : 0.f;
    }
}
__global__ void k_bn_dx(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                        const float *invstd, const float *coef) {
    GRID_STRIDE(i, rows * C) {
        int64_t c = i % C;
        dx[i] = coef[c] * (dy[i] - coef[C + c] - (x[i] - mean[c]) * invstd[c] * coef[2 * C + c]);
    }
}

void bn_backward(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                 const float *invstd, const float *gamma, float *dgamma, float *dbeta, bool training) {
    if (C <= 0) return;
    int ch = chunks_for(rows);
    double *res = part_scratch((size_t)(2 * ch * C + 2 * C));
    colsums<2>(x, dy, rows, C, mean, invstd, res, res + C);
    float *coef = float_scratch((size_t)(3 * C));
    k_bn_finish<<<grid_for(C), 256, 0, S()>>>(res, res + C, rows, C, gamma, invstd, dgamma, dbeta, coef, training);
    LAUNCHED();
    if (!dx || rows <= 0) return;
    k_bn_dx<<<grid_for(rows * C), 256, 0, S()>>>(x, dy, dx, rows, C, mean, invstd, coef);
    LAUNCHED();
}

/* Batch norm's per-channel step (nnlite.cpp cpu_bn_prepare): the moving
   statistics, invstd, scale and shift. Each operation rounds on its own
   (__fmul_rn and __fadd_rn are never contracted into an FMA; division and
   square root correctly rounded), as the CPU's plain float code does: the
   moving statistics stay the CPU's bit for bit over a whole training. */
__global__ void k_bn_prepare(bool training, int64_t C, float momentum, float eps, float *mm, float *mv,
                             const float *gamma, const float *beta, float *mean, float *invstd, float *scl, float *sh) {
    const float om = __fsub_rn(1.f, momentum);
    GRID_STRIDE(i, C) {
        float m, is;
        if (training) {
            m = mean[i];
            mm[i] = __fadd_rn(__fmul_rn(mm[i], momentum), __fmul_rn(m, om));
            mv[i] = __fadd_rn(__fmul_rn(mv[i], momentum), __fmul_rn(invstd[i], om));
            is = __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(invstd[i], eps)));
        } else {
            m = mm[i];
            mean[i] = m;
            is = __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(mv[i], eps)));
        }
        invstd[i] = is;
        float s = __fmul_rn(gamma ? gamma[i] : 1.f, is);
        scl[i] = s;
        sh[i] = __fsub_rn(beta ? beta[i] : 0.f, __fmul_rn(m, s));
    }
}
void bn_prepare(bool training, int64_t C, float momentum, float eps, float *mm, float *mv, const float *gamma,
                const float *beta, float *mean, float *invstd, float *scl, float *sh) {
    if (C <= 0) return;
    k_bn_prepare<<<grid_for(C), 256, 0, S()>>>(training, C, momentum, eps, mm, mv, gamma, beta, mean, invstd, scl,
                                               sh);
    LAUNCHED();
}

/* ========================================================================
   5  Convolution and pooling (channels last)
   ======================================================================== */
__global__ void k_transpose(const float *x, float *y, int64_t batch, int64_t R, int64_t C) {
    __shared__ float t[32][33];
    int64_t c0 = blockIdx.x * 32LL, r0 = blockIdx.y * 32LL;
    for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
        const float *xb = x + b * R * C;
        float *yb = y + b * R * C;
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t r = r0 + k, c = c0 + threadIdx.x;
            if (r < R && c < C) t[k][threadIdx.x] = xb[r * C + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t c = c0 + k, r = r0 + threadIdx.x;
            if (r < R && c < C) yb[c * R + r] = t[threadIdx.x][k];
        }
        __syncthreads();
    }
}
void transpose(const float *x, float *y, int64_t batch, int64_t R, int64_t C) {
    if (batch <= 0 || R <= 0 || C <= 0) return;
    int64_t gx = (C + 31) / 32, gy = (R + 31) / 32;
    if (gy > 65535) fail(ST_UNSUPPORTED, "transpose: %lld rows is too many", (long long)R);
    dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)std::min<int64_t>(batch, 65535));
    k_transpose<<<grid, dim3(32, 8), 0, S()>>>(x, y, batch, R, C);
    LAUNCHED();
}

/* col[r, j * C + c] for r = (sample, output position), tap j */
template <class I> __global__ void k_im2col(Win g, const float *x, float *col, I n) {
    const I P = (I)g.out[0] * (I)g.out[1] * (I)g.out[2], C = (I)g.C, kv = (I)g.k[0] * (I)g.k[1] * (I)g.k[2], row = kv * C;
    const I in_sz = (I)g.in[0] * (I)g.in[1] * (I)g.in[2];
    GRID_STRIDE_I(I, e, n * P * row) {
        I r = e / row, q = e % row, j = q / C, c = q % C;
        I b = r / P, p = r % P;
        I ow = p % (I)g.out[2], oh = p / (I)g.out[2] % (I)g.out[1], od = p / ((I)g.out[2] * (I)g.out[1]);
        I kw = j % (I)g.k[2], kh = j / (I)g.k[2] % (I)g.k[1], kd = j / ((I)g.k[2] * (I)g.k[1]);
        I id = od * (I)g.s[0] - (I)g.pad[0] + kd * (I)g.d[0], ih = oh * (I)g.s[1] - (I)g.pad[1] + kh * (I)g.d[1],
                iw = ow * (I)g.s[2] - (I)g.pad[2] + kw * (I)g.d[2];
        bool in = id >= 0 && id < (I)g.in[0] && ih >= 0 && ih < (I)g.in[1] && iw >= 0 && iw < (I)g.in[2];
        col[e] = in ? x[(b * in_sz + (id * (I)g.in[1] + ih) * (I)g.in[2] + iw) * C + c] : 0.f;
    }
}
/* im2col by rows of col: the row's entries (taps x channels) are decoded
   once per block into a shared table (offset into x, and the tap's reach
   along each axis), so an entry costs a bounds check and a copy, no
   division; a row's position is decoded once per row. threadIdx.x walks
   the row (consecutive, coalesced writes), threadIdx.y picks the row. For
   rows of up to IM2COL_ROW entries (a 5 x 5 x 20 window: 500). */
constexpr int IM2COL_ROW = 3072;
__global__ void k_im2col_rows(Win g, const float *__restrict__ x, float *__restrict__ col, int32_t nrows) {
    extern __shared__ int32_t tab[]; /* off[row], reach d/h/w [row] each */
    const int32_t C = (int32_t)g.C, k1 = (int32_t)g.k[1], k2 = (int32_t)g.k[2];
    const int32_t row = (int32_t)(g.k[0] * g.k[1] * g.k[2] * g.C);
    const int32_t in0 = (int32_t)g.in[0], in1 = (int32_t)g.in[1], in2 = (int32_t)g.in[2];
    const int32_t o1 = (int32_t)g.out[1], o2 = (int32_t)g.out[2], P = (int32_t)(g.out[0] * g.out[1] * g.out[2]);
    for (int32_t q = threadIdx.y * blockDim.x + threadIdx.x; q < row; q += blockDim.x * blockDim.y) {
        int32_t j = q / C, c = q % C, kw = j % k2, kh = j / k2 % k1, kd = j / (k2 * k1);
        int32_t rd = kd * (int32_t)g.d[0], rh = kh * (int32_t)g.d[1], rw = kw * (int32_t)g.d[2];
        tab[q] = ((rd * in1 + rh) * in2 + rw) * C + c;
        tab[row + q] = rd;
        tab[2 * row + q] = rh;
        tab[3 * row + q] = rw;
    }
    __syncthreads();
    for (int32_t r = blockIdx.x * blockDim.y + threadIdx.y; r < nrows; r += gridDim.x * blockDim.y) {
        int32_t b = r / P, p = r % P, ow = p % o2, oh = p / o2 % o1, od = p / (o2 * o1);
        int32_t id0 = od * (int32_t)g.s[0] - (int32_t)g.pad[0], ih0 = oh * (int32_t)g.s[1] - (int32_t)g.pad[1],
                iw0 = ow * (int32_t)g.s[2] - (int32_t)g.pad[2];
        int32_t base = (((b * in0 + id0) * in1 + ih0) * in2 + iw0) * C; /* may be negative: used only in bounds */
        float *cr = col + (int64_t)r * row;
        for (int32_t q = threadIdx.x; q < row; q += blockDim.x) {
            int32_t id = id0 + tab[row + q], ih = ih0 + tab[2 * row + q], iw = iw0 + tab[3 * row + q];
            bool in = id >= 0 && id < in0 && ih >= 0 && ih < in1 && iw >= 0 && iw < in2;
            cr[q] = in ? x[base + tab[q]] : 0.f;
        }
    }
}

void im2col(const Win &g, const float *x, float *col, int64_t n) {
    int64_t total = n * g.out[0] * g.out[1] * g.out[2] * g.k[0] * g.k[1] * g.k[2] * g.C;
    if (total <= 0) return;
    const int64_t row = g.k[0] * g.k[1] * g.k[2] * g.C, nrows = n * g.out[0] * g.out[1] * g.out[2];
    if (row <= IM2COL_ROW && small_index(total, n * g.in[0] * g.in[1] * g.in[2] * g.C)) {
        int tx = (int)std::min<int64_t>(256, (row + 31) / 32 * 32), ty = 256 / tx;
        /* a few blocks per multiprocessor, each over many rows: the table
           is built once a block (one row a block: 462 GB/s on an H200) */
        unsigned blocks = (unsigned)std::min<int64_t>((nrows + ty - 1) / ty, 16LL * std::max(ctx().sms, 1));
        k_im2col_rows<<<blocks, dim3(tx, ty), 4 * row * sizeof(int32_t), S()>>>(g, x, col, (int32_t)nrows);
    } else if (small_index(total, n * g.in[0] * g.in[1] * g.in[2] * g.C))
        k_im2col<int32_t><<<grid_for(total), 256, 0, S()>>>(g, x, col, n);
    else
        k_im2col<int64_t><<<grid_for(total), 256, 0, S()>>>(g, x, col, n);
    LAUNCHED();
}

/* For input position i along one axis: the output positions o and taps k
   with o * s - pad + k * d == i, o in [0, out). Calls f(o, k). */
template <class I, class F>
__device__ __forceinline__ void taps_of(I i, I s, I pad, I d, I k, I out, F f) {
    for (I t = 0; t < k; t++) {
        I v = i + pad - t * d;
        if (v < 0 || v % s) continue;
        I o = v / s;
        if (o < out) f(o, t);
    }
}

/* dx as a gather: each input element sums the column entries that read it */
template <class I> __global__ void k_col2im(Win g, const float *col, float *dx, I n) {
    const I P = (I)g.out[0] * (I)g.out[1] * (I)g.out[2], C = (I)g.C, row = (I)g.k[0] * (I)g.k[1] * (I)g.k[2] * C;
    const I in_sz = (I)g.in[0] * (I)g.in[1] * (I)g.in[2];
    GRID_STRIDE_I(I, e, n * in_sz * C) {
        I c = e % C, pos = e / C % in_sz, b = e / (C * in_sz);
        I iw = pos % (I)g.in[2], ih = pos / (I)g.in[2] % (I)g.in[1], id = pos / ((I)g.in[2] * (I)g.in[1]);
        float s = 0.f;
        taps_of(id, (I)g.s[0], (I)g.pad[0], (I)g.d[0], (I)g.k[0], (I)g.out[0], [&](I od, I kd) {
            taps_of(ih, (I)g.s[1], (I)g.pad[1], (I)g.d[1], (I)g.k[1], (I)g.out[1], [&](I oh, I kh) {
                taps_of(iw, (I)g.s[2], (I)g.pad[2], (I)g.d[2], (I)g.k[2], (I)g.out[2], [&](I ow, I kw) {
                    I p = (od * (I)g.out[1] + oh) * (I)g.out[2] + ow, j = (kd * (I)g.k[1] + kh) * (I)g.k[2] + kw;
                    s += col[(b * P + p) * row + j * C + c];
                });
            });
        });
        dx[e] = s;
    }
}
void col2im(const Win &g, const float *col, float *dx, int64_t n) {
    int64_t total = n * g.in[0] * g.in[1] * g.in[2] * g.C;
    if (total <= 0) return;
    if (small_index(total, n * g.out[0] * g.out[1] * g.out[2] * g.k[0] * g.k[1] * g.k[2] * g.C))
        k_col2im<int32_t><<<grid_for(total), 256, 0, S()>>>(g, col, dx, n);
    else
        k_col2im<int64_t><<<grid_for(total), 256, 0, S()>>>(g, col, dx, n);
    LAUNCHED();
}

/* number of unpadded taps of output position (od, oh, ow) */
template <class I> __device__ __forceinline__ I window_count(const Win &g, I od, I oh, I ow) {
    I cnt[3], o[3] = {od, oh, ow};
    for (int a = 0; a < 3; a++) {
        cnt[a] = 0;
        for (I t = 0; t < g.k[a]; t++) {
            I i = o[a] * g.s[a] - g.pad[a] + t * g.d[a];
            cnt[a] += i >= 0 && i < g.in[a];
        }
    }
    return cnt[0] * cnt[1] * cnt[2];
}

template <class I, class A> __global__ void k_pool_fwd(Win g, bool max, const float *x, float *y, A *arg, I n) {
    const I P = (I)g.out[0] * (I)g.out[1] * (I)g.out[2], C = (I)g.C, in_sz = (I)g.in[0] * (I)g.in[1] * (I)g.in[2];
    const A none = (A)~(A)0;
    GRID_STRIDE_I(I, e, n * P * C) {
        I c = e % C, r = e / C, b = r / P, p = r % P;
        I ow = p % (I)g.out[2], oh = p / (I)g.out[2] % (I)g.out[1], od = p / ((I)g.out[2] * (I)g.out[1]);
        const float *xb = x + b * in_sz * C;
        float o = max ? -INFINITY : 0.f;
        A a = none;
        I cnt = 0;
        for (I kd = 0; kd < (I)g.k[0]; kd++) {
            I id = od * (I)g.s[0] - (I)g.pad[0] + kd * (I)g.d[0];
            if (id < 0 || id >= (I)g.in[0]) continue;
            for (I kh = 0; kh < (I)g.k[1]; kh++) {
                I ih = oh * (I)g.s[1] - (I)g.pad[1] + kh * (I)g.d[1];
                if (ih < 0 || ih >= (I)g.in[1]) continue;
                for (I kw = 0; kw < (I)g.k[2]; kw++) {
                    I iw = ow * (I)g.s[2] - (I)g.pad[2] + kw * (I)g.d[2];
                    if (iw < 0 || iw >= (I)g.in[2]) continue;
                    I pos = (id * (I)g.in[1] + ih) * (I)g.in[2] + iw;
                    float v = xb[pos * C + c];
                    if (max) {
                        bool gt = v > o || a == none; /* the first maximum wins; NaN propagates once chosen */
                        o = gt ? v : o;
                        a = gt ? (A)((kd * (I)g.k[1] + kh) * (I)g.k[2] + kw) : a; /* the tap, as the CPU's for_taps counts */
                    } else {
                        o += v;
                        cnt++;
                    }
                }
            }
        }
        if (max) {
            y[e] = o;
            arg[e] = a;
        } else {
            y[e] = cnt ? o * (1.f / (float)cnt) : 0.f;
        }
    }
}
template <class A> static void pool_fwd_launch(const Win &g, bool max, const float *x, float *y, A *arg, int64_t n,
                                               int64_t total) {
    if (small_index(total, n * g.in[0] * g.in[1] * g.in[2] * g.C))
        k_pool_fwd<int32_t, A><<<grid_for(total), 256, 0, S()>>>(g, max, x, y, arg, (int32_t)n);
    else
        k_pool_fwd<int64_t, A><<<grid_for(total), 256, 0, S()>>>(g, max, x, y, arg, n);
}
void pool_forward(const Win &g, bool max, const float *x, float *y, void *arg, int64_t n) {
    int64_t total = n * g.out[0] * g.out[1] * g.out[2] * g.C;
    if (total <= 0) return;
    if (max && pool_arg_bytes(g) == 4)
        pool_fwd_launch(g, max, x, y, (uint32_t *)arg, n, total);
    else
        pool_fwd_launch(g, max, x, y, (uint8_t *)arg, n, total);
    LAUNCHED();
}

/* gather: each input element sums the gradients of the windows that chose
   it (max: the window's tap index is this element's) or that hold it
   (average, divided by the window's count) */
template <class I, class A>
__global__ void k_pool_bwd(Win g, bool max, const float *dy, const A *arg, float *dx, I n) {
    const I P = (I)g.out[0] * (I)g.out[1] * (I)g.out[2], C = (I)g.C, in_sz = (I)g.in[0] * (I)g.in[1] * (I)g.in[2];
    GRID_STRIDE_I(I, e, n * in_sz * C) {
        I c = e % C, pos = e / C % in_sz, b = e / (C * in_sz);
        I iw = pos % (I)g.in[2], ih = pos / (I)g.in[2] % (I)g.in[1], id = pos / ((I)g.in[2] * (I)g.in[1]);
        float s = 0.f;
        taps_of(id, (I)g.s[0], (I)g.pad[0], (I)g.d[0], (I)g.k[0], (I)g.out[0], [&](I od, I kd) {
            taps_of(ih, (I)g.s[1], (I)g.pad[1], (I)g.d[1], (I)g.k[1], (I)g.out[1], [&](I oh, I kh) {
                taps_of(iw, (I)g.s[2], (I)g.pad[2], (I)g.d[2], (I)g.k[2], (I)g.out[2], [&](I ow, I kw) {
                    I p = (od * (I)g.out[1] + oh) * (I)g.out[2] + ow, o = (b * P + p) * C + c;
                    if (max) {
                        if ((I)arg[o] == (kd * (I)g.k[1] + kh) * (I)g.k[2] + kw) s += dy[o];
                    } else {
                        I cnt = window_count(g, od, oh, ow);
                        if (cnt) s += dy[o] * (1.f / (float)cnt);
                    }
                });
            });
        });
        dx[e] = s;
    }
}
/* max pooling whose windows do not overlap (stride >= the window's reach
   along every axis, as pool size 2 stride 2): each input is chosen by at
   most one window, so dx is zeros and one write a window, no gather; the
   chosen input's position from the output's position and its tap */
template <class A>
__global__ void k_pool_bwd_scatter(Win g, const float *dy, const A *arg, float *dx, int64_t outs, int64_t in_elems) {
    const int32_t C = (int32_t)g.C, P = (int32_t)(g.out[0] * g.out[1] * g.out[2]);
    const A none = (A)~(A)0;
    GRID_STRIDE_I(int32_t, e, outs) {
        A a = arg[e];
        if (a == none) continue;
        int32_t c = e % C, p = e / C % P, b = e / (C * P), j = (int32_t)a;
        int32_t ow = p % (int32_t)g.out[2], oh = p / (int32_t)g.out[2] % (int32_t)g.out[1],
                od = p / (int32_t)(g.out[2] * g.out[1]);
        int32_t kw = j % (int32_t)g.k[2], kh = j / (int32_t)g.k[2] % (int32_t)g.k[1],
                kd = j / (int32_t)(g.k[2] * g.k[1]);
        int32_t id = od * (int32_t)g.s[0] - (int32_t)g.pad[0] + kd * (int32_t)g.d[0],
                ih = oh * (int32_t)g.s[1] - (int32_t)g.pad[1] + kh * (int32_t)g.d[1],
                iw = ow * (int32_t)g.s[2] - (int32_t)g.pad[2] + kw * (int32_t)g.d[2];
        int32_t pos = (id * (int32_t)g.in[1] + ih) * (int32_t)g.in[2] + iw;
        dx[(int64_t)b * in_elems + pos * C + c] = dy[e];
    }
}

template <class A>
static void pool_bwd_launch(const Win &g, bool max, const float *dy, const A *arg, float *dx, int64_t n,
                            int64_t total) {
    const int64_t P = g.out[0] * g.out[1] * g.out[2], outs = n * P * g.C;
    bool disjoint = true;
    for (int a = 0; a < 3; a++) disjoint = disjoint && g.s[a] >= (g.k[a] - 1) * g.d[a] + 1;
    if (max && disjoint && small_index(outs, total)) {
        memset0(dx, (size_t)total * sizeof(float));
        if (outs > 0) k_pool_bwd_scatter<A><<<grid_for(outs), 256, 0, S()>>>(g, dy, arg, dx, outs, total / n);
        return;
    }
    if (small_index(total, n * g.out[0] * g.out[1] * g.out[2] * g.C))
        k_pool_bwd<int32_t, A><<<grid_for(total), 256, 0, S()>>>(g, max, dy, arg, dx, (int32_t)n);
    else
        k_pool_bwd<int64_t, A><<<grid_for(total), 256, 0, S()>>>(g, max, dy, arg, dx, n);
}
void pool_backward(const Win &g, bool max, const float *dy, const void *arg, float *dx, int64_t n) {
    int64_t total = n * g.in[0] * g.in[1] * g.in[2] * g.C;
    if (total <= 0) return;
    if (max && pool_arg_bytes(g) == 4)
        pool_bwd_launch(g, max, dy, (const uint32_t *)arg, dx, n, total);
    else
        pool_bwd_launch(g, max, dy, (const uint8_t *)arg, dx, n, total);
    LAUNCHED();
}

/* Global pooling over P positions of each (sample, channel); x[b, s, c]
   (channels last) or x[b, c, s] (cf). Forward: one thread per output, the
   positions in order (the CPU's sum, bit for bit). */
__global__ void k_gpool_fwd(bool max, bool cf, const float *x, float *y, int64_t B, int64_t P, int64_t C) {
    GRID_STRIDE(e, B * C) {
        int64_t b = e / C, c = e % C, step = cf ? 1 : C;
        const float *xb = x + b * P * C + (cf ? c * P : c);
        float acc = max ? -INFINITY : 0.f;
        for (int64_t s = 0; s < P; s++) {
            float v = xb[s * step];
            acc = max ? (v > acc || s == 0 ? v : acc) : __fadd_rn(acc, v);
        }
        y[e] = max ? acc : __fdiv_rn(acc, (float)P);
    }
}
/* average: one thread per input element, dy / P */
__global__ void k_gpool_avg_bwd(bool cf, const float *dy, float *dx, int64_t B, int64_t P, int64_t C) {
    GRID_STRIDE(e, B * P * C) {
        int64_t b = e / (P * C), q = e % (P * C), c = cf ? q / P : q % C;
        dx[e] = __fdiv_rn(dy[b * C + c], (float)P);
    }
}
/* max: one thread per (sample, channel) walks its positions in order and
   writes every dx of them: dy to the first that holds y (NaN matches NaN),
   0 elsewhere. Each dx element has one writer; no sums. */
__global__ void k_gpool_max_bwd(bool cf, const float *x, const float *y, const float *dy, float *dx, int64_t B,
                                int64_t P, int64_t C) {
    GRID_STRIDE(e, B * C) {
        int64_t b = e / C, c = e % C, step = cf ? 1 : C, base = b * P * C + (cf ? c * P : c);
        float d = dy[e], m = y[e];
        bool done = false;
        for (int64_t s = 0; s < P; s++) {
            float v = x[base + s * step];
            bool hit = !done && (v == m || (isnan(v) && isnan(m)));
            dx[base + s * step] = hit ? d : 0.f;
            done = done || hit;
        }
    }
}
void global_pool_forward(bool max, bool cf, const float *x, float *y, int64_t B, int64_t P, int64_t C) {
    if (B <= 0 || C <= 0) return;
    k_gpool_fwd<<<grid_for(B * C), 256, 0, S()>>>(max, cf, x, y, B, P, C);
    LAUNCHED();
}
void global_pool_backward(bool max, bool cf, const float *x, const float *y, const float *dy, float *dx, int64_t B,
                          int64_t P, int64_t C) {
    if (B <= 0 || C <= 0 || P <= 0) return;
    if (max)
        k_gpool_max_bwd<<<grid_for(B * C), 256, 0, S()>>>(cf, x, y, dy, dx, B, P, C);
    else
        k_gpool_avg_bwd<<<grid_for(B * P * C), 256, 0, S()>>>(cf, dy, dx, B, P, C);
    LAUNCHED();
}

/* ZeroPadding2D over n blocks (H, W, inner): forward one thread per output
   element (a copy or 0), backward one per input element (a copy). */
__global__ void k_zero_pad_fwd(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                               int64_t l, int64_t Ho, int64_t Wo) {
    GRID_STRIDE(e, n * Ho * Wo * inner) {
        int64_t c = e % inner, q = e / inner, w = q % Wo, h = q / Wo % Ho, k = q / (Wo * Ho);
        int64_t hi = h - t, wi = w - l;
        y[e] = hi >= 0 && hi < H && wi >= 0 && wi < W ? x[((k * H + hi) * W + wi) * inner + c] : 0.f;
    }
}
__global__ void k_zero_pad_bwd(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                               int64_t l, int64_t Ho, int64_t Wo) {
    GRID_STRIDE(e, n * H * W * inner) {
        int64_t c = e % inner, q = e / inner, w = q % W, h = q / W % H, k = q / (W * H);
        dx[e] = dy[((k * Ho + h + t) * Wo + w + l) * inner + c];
    }
}
void zero_pad_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                      int64_t bo, int64_t l, int64_t r) {
    int64_t Ho = H + t + bo, Wo = W + l + r;
    if (n <= 0 || inner <= 0 || Ho <= 0 || Wo <= 0) return;
    k_zero_pad_fwd<<<grid_for(n * Ho * Wo * inner), 256, 0, S()>>>(x, y, n, H, W, inner, t, l, Ho, Wo);
    LAUNCHED();
}
void zero_pad_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                       int64_t bo, int64_t l, int64_t r) {
    if (n <= 0 || inner <= 0 || H <= 0 || W <= 0) return;
    k_zero_pad_bwd<<<grid_for(n * H * W * inner), 256, 0, S()>>>(dy, dx, n, H, W, inner, t, l, H + t + bo,
                                                                   W + l + r);
    LAUNCHED();
}

/* UpSampling2D (nearest) over n blocks (H, W, inner): forward one thread
   per output element; backward a gather, one thread per input element
   summing its sh x sw block of dy rows first, then columns (the CPU's
   order of additions, so the same sums bit for bit). */
__global__ void k_upsample_fwd(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                               int64_t sw) {
    const int64_t Ho = H * sh, Wo = W * sw;
    GRID_STRIDE(e, n * Ho * Wo * inner) {
        int64_t c = e % inner, q = e / inner, w = q % Wo, h = q / Wo % Ho, k = q / (Wo * Ho);
        y[e] = x[((k * H + h / sh) * W + w / sw) * inner + c];
    }
}
__global__ void k_upsample_bwd(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                               int64_t sw) {
    const int64_t Ho = H * sh, Wo = W * sw;
    GRID_STRIDE(e, n * H * W * inner) {
        int64_t c = e % inner, q = e / inner, w = q % W, h = q / W % H, k = q / (W * H);
        float s = 0.f;
        for (int64_t i = 0; i < sh; i++) {
            const float *row = dy + ((k * Ho + h * sh + i) * Wo + w * sw) * inner + c;
            for (int64_t j = 0; j < sw; j++) s = __fadd_rn(s, row[j * inner]);
        }
        dx[e] = s;
    }
}
void upsample_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                      int64_t sw) {
    int64_t total = n * H * sh * W * sw * inner;
    if (n <= 0 || inner <= 0 || total <= 0) return;
    k_upsample_fwd<<<grid_for(total), 256, 0, S()>>>(x, y, n, H, W, inner, sh, sw);
    LAUNCHED();
}
void upsample_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                       int64_t sw) {
    int64_t total = n * H * W * inner;
    if (n <= 0 || inner <= 0 || total <= 0) return;
    k_upsample_bwd<<<grid_for(total), 256, 0, S()>>>(dy, dx, n, H, W, inner, sh, sw);
    LAUNCHED();
}

/* ========================================================================
   5b Embedding and masking
   Embedding's ids are floats, integral and in range: nnlite.cpp checks
   them on the host before a batch runs (Embedding::check_input) and again
   while it sorts them for the gradient (embedding_rows).
   ======================================================================== */
/* forward: one thread per output value, a copy from the id's row */
__global__ void k_embed_fwd(const float *ids, const float *E, float *y, int64_t rows, int64_t dim) {
    GRID_STRIDE(e, rows * dim) {
        int64_t r = e / dim, j = e % dim;
        y[e] = E[(int64_t)ids[r] * dim + j];
    }
}
void embedding_forward(const float *ids, const float *E, float *y, int64_t rows, int64_t dim) {
    if (rows <= 0 || dim <= 0) return;
    k_embed_fwd<<<grid_for(rows * dim), 256, 0, S()>>>(ids, E, y, rows, dim);
    LAUNCHED();
}
/* gradient: one thread per (distinct id k, column j) writes G[uniq[k], j],
   the sum of that id's dy rows in increasing row order from 0 (the CPU's
   additions, in its order: the same float bit for bit). Each value of G has
   one writer; the rows of absent ids stay as memset0 left them. Threads of
   one id read consecutive columns of each row (coalesced). */
__global__ void k_embed_grad(const int32_t *uniq, const int32_t *start, const int32_t *order, int64_t U,
                             const float *dy, float *G, int64_t dim) {
    GRID_STRIDE(e, U * dim) {
        int64_t k = e / dim, j = e % dim;
        float s = 0.f;
        for (int32_t p = start[k], end = start[k + 1]; p < end; p++)
            s = __fadd_rn(s, dy[(int64_t)order[p] * dim + j]);
        G[(int64_t)uniq[k] * dim + j] = s;
    }
}
void embedding_grad(const int32_t *h_csr, int64_t U, int64_t rows, const float *dy, float *G, int64_t V,
                    int64_t dim) {
    if (V <= 0 || dim <= 0) return;
    memset0(G, (size_t)(V * dim) * sizeof(float));
    if (U <= 0 || rows <= 0) return;
    size_t n = (size_t)(2 * U + 1 + rows);
    int32_t *d = int_scratch(n);
    upload(d, h_csr, n * sizeof(int32_t)); /* pageable: h_csr is free to change once this returns */
    k_embed_grad<<<grid_for(U * dim), 256, 0, S()>>>(d, d + U, d + 2 * U + 1, U, dy, G, dim);
    LAUNCHED();
}

/* Step masks: one thread per step decides (its F values in order, the first
   that differs from value keeps the step, as the CPU's loop), then one
   thread per value selects; the second reads the mask the first wrote
   (stream order), which is exactly 1 or 0. */
__global__ void k_step_mask(const float *x, float *mask, int64_t steps, int64_t F, float value) {
    GRID_STRIDE(r, steps) {
        const float *xr = x + r * F;
        bool keep = false;
        for (int64_t j = 0; j < F && !keep; j++) keep = xr[j] != value;
        mask[r] = keep ? 1.f : 0.f;
    }
}
__global__ void k_step_select(const float *mask, const float *src, float *dst, int64_t steps, int64_t F) {
    GRID_STRIDE(e, steps * F) dst[e] = mask[e / F] != 0.f ? src[e] : 0.f;
}
void masking_forward(const float *x, float *y, float *mask, int64_t steps, int64_t F, float value) {
    if (steps <= 0) return;
    k_step_mask<<<grid_for(steps), 256, 0, S()>>>(x, mask, steps, F, value);
    LAUNCHED();
    if (!y || F <= 0) return;
    k_step_select<<<grid_for(steps * F), 256, 0, S()>>>(mask, x, y, steps, F);
    LAUNCHED();
}
void masking_backward(const float *mask, const float *dy, float *dx, int64_t steps, int64_t F) {
    if (steps <= 0 || F <= 0) return;
    k_step_select<<<grid_for(steps * F), 256, 0, S()>>>(mask, dy, dx, steps, F);
    LAUNCHED();
}

/* ========================================================================
   5c Recurrent layers
   nnlite.cpp's Recurrent runs a step as: the recurrent GEMM (gemm above),
   then one launch here for all B rows of the step. The cell's formulas are
   cpu_lstm_forward / cpu_lstm_backward's, value by value; activations as
   act1, their derivatives from the output as the CPU's gate_backward
   (hard_sigmoid: 0.2 strictly inside (0, 1), NaN passed on).
   ======================================================================== */
__global__ void k_rnn_rows(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u,
                           const float *mask, int64_t T, int64_t t) {
    GRID_STRIDE(e, B * u) {
        int64_t b = e / u, j = e % u;
        if (mask && mask[b * T + t] != 0.f) continue;
        dst[b * ldd + j] = src ? src[b * lds + j] : 0.f;
    }
}
void rnn_rows(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u, const float *mask,
              int64_t T, int64_t t) {
    if (B <= 0 || u <= 0) return;
    k_rnn_rows<<<grid_for(B * u), 256, 0, S()>>>(src, lds, dst, ldd, B, u, mask, T, t);
    LAUNCHED();
}

/* dy act'(.) from the activation's output y, as the CPU's gate_backward
   (act_backward given y for x) */
__device__ __forceinline__ float gate_d(int a, float y, float dy) {
    if (a == A_HARD_SIGMOID) return y != y ? y : (y > 0.f && y < 1.f ? 0.2f * dy : 0.f);
    return dy * dact1(a, y, y);
}

/* row b is masked at the step */
__device__ __forceinline__ bool step_masked(const CellStep &a, int64_t b) {
    return a.mask && a.mask[b * a.T + a.t] == 0.f;
}
/* h_s (b, j) into the output: each step's (zero where masked, with
   zero_output_for_mask), or the last step's */
__device__ __forceinline__ void put_output(const CellStep &a, int64_t b, int64_t j, float hv, bool m) {
    if (a.seq) a.y[(b * a.T + a.s) * a.u + j] = a.zero_masked && m ? 0.f : hv;
    else if (a.s + 1 == a.T) a.y[b * a.u + j] = hv;
}
/* dL/dh_s (b, j): dh from the later steps plus the output's gradient */
__device__ __forceinline__ float dh_in(const CellStep &a, float dh, int64_t b, int64_t j, bool m) {
    if (a.seq) {
        if (!(a.zero_masked && m)) dh += a.dy[(b * a.T + a.s) * a.u + j];
    } else if (a.s + 1 == a.T) {
        dh += a.dy[b * a.u + j];
    }
    return dh;
}

/* forward: one thread per (row b, unit j) reads and writes column j of each
   of the four gate blocks of its row, c and h: no two threads share a
   value. h (the next step's hp, or the scratch row after the last step)
   and c never alias hp and cp (other steps' rows, or C0). */
__global__ void k_lstm_fwd(CellStep a) {
    const int64_t u = a.u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float *z = a.Z + b * a.ldz;
        float ig = act1(a.ract, z[j]), fg = act1(a.ract, z[u + j]);
        float gg = act1(a.act, z[2 * u + j]), og = act1(a.ract, z[3 * u + j]);
        z[j] = ig;
        z[u + j] = fg;
        z[2 * u + j] = gg;
        z[3 * u + j] = og;
        float cpv = a.cp[b * a.ldcp + j];
        float cv = fg * cpv + ig * gg;
        float hv = act1(a.act, cv) * og;
        bool m = step_masked(a, b);
        if (m) { /* the state stays as it was */
            cv = cpv;
            hv = a.hp[b * a.ldh + j];
        }
        a.c[b * a.ldh + j] = cv;
        a.h[b * a.ldhn + j] = hv;
        put_output(a, b, j, hv, m);
    }
}
/* backward: the same ownership (row b, unit j) over Z's four gate columns,
   dh and dc. dh ends as dL/dh_s (the output's gradient added), as the
   CPU's fused path leaves it (the recurrent GEMM overwrites it next; a
   masked row's is saved around it); dc as dL/dc_{s-1}. */
__global__ void k_lstm_bwd(CellStep a) {
    const int64_t u = a.u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float dh = a.first ? 0.f : a.dh[e], dc = a.first ? 0.f : a.dc[e];
        bool m = step_masked(a, b);
        dh = dh_in(a, dh, b, j, m);
        float *z = a.Z + b * a.ldz;
        a.dh[e] = dh;
        if (m) { /* h_s = h_{s-1}, c_s = c_{s-1}: dh and dc pass, no gate gradient */
            z[j] = z[u + j] = z[2 * u + j] = z[3 * u + j] = 0.f;
            a.dc[e] = dc;
            continue;
        }
        float ig = z[j], fg = z[u + j], gg = z[2 * u + j], og = z[3 * u + j];
        float cpv = a.cp[b * a.ldcp + j], ac = act1(a.act, a.c[b * a.ldh + j]);
        float dov = dh * ac;
        float dhc = gate_d(a.act, ac, dh * og); /* dL/dc through h */
        float d = dc + dhc;
        z[j] = gate_d(a.ract, ig, d * gg);
        z[u + j] = gate_d(a.ract, fg, d * cpv);
        z[2 * u + j] = gate_d(a.act, gg, d * ig);
        z[3 * u + j] = gate_d(a.ract, og, dov);
        a.dc[e] = d * fg;
    }
}
/* GRU forward: thread (b, j) owns column j of each of the three gate
   blocks of row b (z, r, hh), R's, h's and the output's; it reads rb's and
   hr's and hp's column j of row b only. h (the next step's hp, or the
   scratch row) never aliases hp, hr (the same step's rows of H or HD) or R. */
__global__ void k_gru_fwd(CellStep a) {
    const int64_t u = a.u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float *z = a.Z + b * a.ldz;
        if (a.phase == 0) {
            const float *rr = a.rb + b * (a.reset_after ? 3 * u : 2 * u);
            float zg = act1(a.ract, z[j] + rr[j]), rg = act1(a.ract, z[u + j] + rr[u + j]);
            z[j] = zg;
            z[u + j] = rg;
            if (a.reset_after) {
                a.R[b * a.ldh + j] = rr[2 * u + j];
                z[2 * u + j] += rg * rr[2 * u + j];
            } else {
                a.R[b * a.ldh + j] = rg * a.hr[b * a.ldh + j];
                continue; /* (r h_{s-1}) U_h comes first: phase 1 */
            }
        }
        float zg = z[j], hh = act1(a.act, z[2 * u + j]), hp = a.hp[b * a.ldh + j];
        z[2 * u + j] = hh;
        float hv = zg * hp + (1.f - zg) * hh;
        bool m = step_masked(a, b);
        if (m) hv = hp; /* the state stays as it was */
        a.h[b * a.ldhn + j] = hv;
        put_output(a, b, j, hv, m);
    }
}
/* GRU backward, the same ownership over Z's, tg's and R's columns j of row
   b, dh's, dn's and tmp's value (b, j). Phase 1 reads tg, which phase 0
   wrote (stream order). */
__global__ void k_gru_bwd(CellStep a) {
    const int64_t u = a.u, G = 3 * u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float *z = a.Z + b * a.ldz, *tg = a.tg + b * G;
        if (a.phase == 1) {
            float drh = a.tmp[e], rg = tg[u + j];
            float dr = drh * a.hr[b * a.ldh + j];
            if (a.drop_h) a.tmp[e] = drh * rg;
            else a.dn[e] += drh * rg;
            z[j] = gate_d(a.ract, tg[j], z[j]);
            z[u + j] = gate_d(a.ract, rg, dr);
            continue;
        }
        float dh = a.first ? 0.f : a.dh[e];
        bool m = step_masked(a, b);
        dh = dh_in(a, dh, b, j, m);
        a.dh[e] = dh;
        float zg = z[j], rg = z[u + j], hh = z[2 * u + j];
        tg[j] = zg;
        tg[u + j] = rg;
        tg[2 * u + j] = hh;
        if (m) { /* h_s = h_{s-1}: dh passes on, no gate gradient */
            z[j] = z[u + j] = z[2 * u + j] = 0.f;
            a.dn[e] = dh;
            if (a.reset_after) a.R[b * a.ldh + j] = 0.f;
            continue;
        }
        float dz = dh * (a.hp[b * a.ldh + j] - hh);
        float da = gate_d(a.act, hh, dh * (1.f - zg)); /* d pre(hh) */
        z[2 * u + j] = da;
        a.dn[e] = dh * zg;
        if (a.reset_after) {
            float *rh = a.R + b * a.ldh + j;
            float dr = da * *rh;
            *rh = da * rg;
            z[j] = gate_d(a.ract, zg, dz);
            z[u + j] = gate_d(a.ract, rg, dr);
        } else {
            z[j] = dz; /* act' in phase 1, with dr */
        }
    }
}
/* SimpleRNN: thread (b, j) owns Z's, h's, tg's and the output's column j of
   row b, and dh's value (b, j) */
__global__ void k_simple_fwd(CellStep a) {
    const int64_t u = a.u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float *z = a.Z + b * a.ldz;
        float hv = act1(a.act, z[j]);
        z[j] = hv;
        bool m = step_masked(a, b);
        if (m) hv = a.hp[b * a.ldh + j]; /* the state stays as it was */
        a.h[b * a.ldhn + j] = hv;
        put_output(a, b, j, hv, m);
    }
}
__global__ void k_simple_bwd(CellStep a) {
    const int64_t u = a.u;
    GRID_STRIDE(e, a.B * u) {
        int64_t b = e / u, j = e % u;
        float dh = a.first ? 0.f : a.dh[e];
        bool m = step_masked(a, b);
        dh = dh_in(a, dh, b, j, m);
        a.dh[e] = dh;
        float *z = a.Z + b * a.ldz;
        float hv = z[j];
        a.tg[b * u + j] = hv;
        z[j] = m ? 0.f : gate_d(a.act, hv, dh);
    }
}
/* one thread per (row, unit) of the step */
template <void (*KERNEL)(CellStep)> static void cell_launch(const CellStep &a) {
    if (a.B <= 0 || a.u <= 0) return;
    KERNEL<<<grid_for(a.B * a.u), 256, 0, S()>>>(a);
    LAUNCHED();
}
void simple_forward(const CellStep &a) { cell_launch<k_simple_fwd>(a); }
void simple_backward(const CellStep &a) { cell_launch<k_simple_bwd>(a); }
void gru_forward(const CellStep &a) { cell_launch<k_gru_fwd>(a); }
void gru_backward(const CellStep &a) { cell_launch<k_gru_bwd>(a); }
void lstm_forward(const CellStep &a) { cell_launch<k_lstm_fwd>(a); }
void lstm_backward(const CellStep &a) { cell_launch<k_lstm_bwd>(a); }

/* dropout and recurrent_dropout's masks: k_dropout's draw (mix32 above),
   the mask alone; the CPU's cpu_dropout_mask bit for bit */
__global__ void k_dropout_mask(float *mask, int64_t n, uint32_t thresh, float keep, uint64_t seed) {
    GRID_STRIDE(i, n) mask[i] = dropout_draw(i, seed, thresh, keep);
}
void dropout_mask(float *mask, int64_t n, float rate, uint64_t seed) {
    if (n <= 0) return;
    uint32_t thresh = dropout_thresh(rate);
    k_dropout_mask<<<grid_for(n), 256, 0, S()>>>(mask, n, thresh, 1.f / (1.f - rate), seed);
    LAUNCHED();
}
/* a mask row per rep rows: one thread per (row, value), each reading and
   writing its own element only (y may be a). __fmul_rn: the product is
   rounded before the add (no FMA contraction), as the CPU's loop: the
   same bits */
__global__ void k_mul_rows(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y,
                           int64_t ldy, int64_t rows, int64_t n, bool add) {
    GRID_STRIDE(e, rows * n) {
        int64_t r = e / n, j = e % n;
        float v = __fmul_rn(a[r * lda + j], m[(r / rep) * ldm + j]);
        float *o = y + r * ldy + j;
        *o = add ? *o + v : v;
    }
}
void mul_rows(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y, int64_t ldy,
              int64_t rows, int64_t n, bool add) {
    if (rows <= 0 || n <= 0 || rep <= 0) return;
    k_mul_rows<<<grid_for(rows * n), 256, 0, S()>>>(a, lda, m, ldm, rep, y, ldy, rows, n, add);
    LAUNCHED();
}
__global__ void k_add(const float *a, const float *b, float *y, int64_t n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}
void add(const float *a, const float *b, float *y, int64_t n) {
    if (n <= 0) return;
    k_add<<<grid_for(n), 256, 0, S()>>>(a, b, y, n);
    LAUNCHED();
}
/* Bidirectional: one thread per (row, unit) of the forward copy's B T rows;
   row r = (s, t) of f meets row (s, T-1-t) of b (the backward copy's
   processing order), so that nothing is reversed in place. Every output
   element is written by exactly one thread (concat: two, y[r 2u + j] and
   y[r 2u + u + j]; backward: df[r u + j] and db[rb u + j], rb running
   over all rows as r does). Products and halvings are single roundings:
   the CPU's values bit for bit. */
__global__ void k_bidir_merge(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u) {
    GRID_STRIDE(e, B * T * u) {
        int64_t r = e / u, j = e % u, rb = (r / T) * T + (T - 1 - r % T);
        float fv = f[r * u + j], bv = b[rb * u + j];
        if (mode == 0) {
            y[r * 2 * u + j] = fv;
            y[r * 2 * u + u + j] = bv;
        } else {
            y[r * u + j] = mode == 1 ? fv + bv : mode == 2 ? fv * bv : (fv + bv) / 2;
        }
    }
}
void bidir_merge(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u) {
    if (B <= 0 || T <= 0 || u <= 0) return;
    k_bidir_merge<<<grid_for(B * T * u), 256, 0, S()>>>(mode, f, b, y, B, T, u);
    LAUNCHED();
}
__global__ void k_bidir_split(int mode, const float *dy, const float *f, const float *b, float *df, float *db,
                              int64_t B, int64_t T, int64_t u) {
    GRID_STRIDE(e, B * T * u) {
        int64_t r = e / u, j = e % u, rb = (r / T) * T + (T - 1 - r % T);
        if (mode == 0) {
            df[r * u + j] = dy[r * 2 * u + j];
            db[rb * u + j] = dy[r * 2 * u + u + j];
            continue;
        }
        float d = dy[r * u + j];
        df[r * u + j] = mode == 1 ? d : mode == 2 ? d * b[rb * u + j] : d / 2;
        db[rb * u + j] = mode == 1 ? d : mode == 2 ? d * f[r * u + j] : d / 2;
    }
}
void bidir_split(int mode, const float *dy, const float *f, const float *b, float *df, float *db, int64_t B,
                 int64_t T, int64_t u) {
    if (B <= 0 || T <= 0 || u <= 0) return;
    k_bidir_split<<<grid_for(B * T * u), 256, 0, S()>>>(mode, dy, f, b, df, db, B, T, u);
    LAUNCHED();
}

/* ========================================================================
   6  Losses and optimizers
   ======================================================================== */
/* one warp per row: stable log-softmax, dz, the row's loss and hit */
__global__ void k_sparse_xent(const float *z, const float *labels, int64_t rows, int64_t C, float scale, float *dz,
                              double *loss, double *hit) {
    int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float *p = z + r * C;
    float m = -INFINITY;
    int64_t am = C; /* first index of the maximum */
    for (int64_t j = lane; j < C; j += 32) /* j ascends: ties keep the first */
        if (am == C || p[j] > m) {
            m = p[j];
            am = j;
        }
    for (int o = 16; o > 0; o /= 2) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        int64_t a2 = __shfl_xor_sync(0xffffffffu, am, o);
        if (m2 > m || (m2 == m && a2 < am)) {
            m = m2;
            am = a2;
        }
    }
    double s = 0;
    for (int64_t j = lane; j < C; j += 32) s += exp((double)p[j] - m);
    s = warp_sumd(s);
    double lse = m + log(s);
    int64_t c = (int64_t)labels[r];
    if (dz)
        for (int64_t j = lane; j < C; j += 32)
            dz[r * C + j] = (float)exp(p[j] - lse) * scale - (j == c ? scale : 0.f);
    if (lane == 0) {
        loss[r] = lse - p[c];
        hit[r] = am == c ? 1.0 : 0.0;
    }
}
__global__ void k_sum_rows(const double *x, int64_t n, double *part) {
    __shared__ double sh[8];
    double s = 0;
    GRID_STRIDE(i, n) s += x[i];
    s = warp_sumd(s);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < (int)blockDim.x / 32; w++) t += sh[w];
        part[blockIdx.x] = t;
    }
}

/* out (device; NULL: the scratch, as sparse_xent reads it): the loss sum,
   then the hits */
static double *sparse_xent_launch(const float *z, const float *labels, int64_t rows, int64_t C, float scale,
                                  float *dz, double *out) {
    double *buf = part_scratch((size_t)(2 * std::max<int64_t>(rows, 0) + 2 * (RED_BLOCKS + 1)));
    double *loss = buf, *hit = buf + std::max<int64_t>(rows, 0), *part = hit + std::max<int64_t>(rows, 0);
    if (!out) out = part + RED_BLOCKS;
    if (rows <= 0) {
        memset0(out, 2 * sizeof(double));
        return out;
    }
    k_sparse_xent<<<grid_for(rows * 32), 256, 0, S()>>>(z, labels, rows, C, scale, dz, loss, hit);
    LAUNCHED();
    int blocks = (int)std::min<int64_t>(RED_BLOCKS, (rows + 255) / 256);
    k_sum_rows<<<blocks, 256, 0, S()>>>(loss, rows, part);
    LAUNCHED();
    k_sum_parts<<<1, 256, 0, S()>>>(part, blocks, out);
    LAUNCHED();
    k_sum_rows<<<blocks, 256, 0, S()>>>(hit, rows, part);
    LAUNCHED();
    k_sum_parts<<<1, 256, 0, S()>>>(part, blocks, out + 1);
    LAUNCHED();
    return out;
}
void sparse_xent_async(const float *z, const float *labels, int64_t rows, int64_t C, float scale, float *dz,
                       double *out) {
    sparse_xent_launch(z, labels, rows, C, scale, dz, out);
}

double sparse_xent(const float *z, const float *labels, int64_t rows, int64_t C, float scale, float *dz,
                   double *hits) {
    if (rows <= 0) {
        if (hits) *hits = 0;
        return 0;
    }
    double *out = sparse_xent_launch(z, labels, rows, C, scale, dz, nullptr);
    double *h = ctx().host;
    CK(cudaMemcpyAsync(h, out, 2 * sizeof(double), cudaMemcpyDeviceToHost, S()));
    CK(cudaStreamSynchronize(S()));
    if (hits) *hits = h[1];
    return h[0];
}

/* ---- every loss and metric (nnlite.cpp section 4: Loss::run, Metric::run)
   Two kernel shapes, each reducing into one double per block in a fixed
   order (the warps of a block in turn; then k_sum_parts), so the sums
   repeat bit for bit:
   - k_loss_rows: one warp per row of C (grid-stride over rows): the
     cross-entropies (sparse or one-hot, from logits or probabilities) and
     the row metrics (argmax and top-k accuracies);
   - k_loss_points: one thread per element (grid-stride): binary
     cross-entropy, MSE, MAE, Huber and the elementwise metrics.
   Per-element arithmetic in float as the CPU's vector loops, sums in
   double. The CPU clamps with vmin/vmax; here comparisons keep a NaN
   (clampf_), so a NaN output gives a NaN loss and the step is skipped as
   on the CPU. */
enum { ROW_XENT, ROW_ACC, ROW_TOPK };
enum { PT_LOSS, PT_MSE, PT_MAE, PT_BINACC };
__device__ const float PROB_EPS_D = 1e-7f; /* nnlite.cpp's PROB_EPS (Keras' epsilon) */

/* the first index of the maximum of p[0..C), in every lane (ties: the
   lowest index, as std::max_element) */
__device__ __forceinline__ int64_t warp_argmax(const float *p, int64_t C, int lane) {
    float m = -INFINITY;
    int64_t am = C;
    for (int64_t j = lane; j < C; j += 32) /* j ascends: ties keep the first */
        if (am == C || p[j] > m) {
            m = p[j];
            am = j;
        }
    for (int o = 16; o > 0; o /= 2) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        int64_t a2 = __shfl_xor_sync(0xffffffffu, am, o);
        if (a2 != C && (am == C || m2 > m || (m2 == m && a2 < am))) {
            m = m2;
            am = a2;
        }
    }
    return am;
}

/* One row's value (its loss, or 1/0 for a metric hit), the same in every
   lane; ROW_XENT writes the row of dy when dy is not NULL. tr: the row's
   targets (one-hot), or NULL with c the class id (sparse). */
__device__ double row_value(int mode, const LossSpec &L, const MetricSpec &M, const float *p, const float *tr,
                            int64_t c, int64_t C, float *d, int lane) {
    if (mode == ROW_ACC || mode == ROW_TOPK) {
        if (tr) c = warp_argmax(tr, C, lane); /* one-hot: the argmax of the target row */
        if (mode == ROW_ACC) return warp_argmax(p, C, lane) == c ? 1.0 : 0.0;
        float pc = p[c];
        double above = 0; /* fewer than k classes score higher */
        for (int64_t j = lane; j < C; j += 32) above += p[j] > pc ? 1.0 : 0.0;
        return warp_sumd(above) < (double)M.k ? 1.0 : 0.0;
    }
    const float scale = L.scale;
    if (L.logits) { /* XentLogitsK: log_softmax = z - m - log(sum exp(z - m)) */
        float m = -INFINITY;
        for (int64_t j = lane; j < C; j += 32) m = fmaxf(m, p[j]);
        m = warp_max(m);
        double s = 0, ts = 0, tp = 0;
        for (int64_t j = lane; j < C; j += 32) {
            s += (double)expf(p[j] - m);
            if (tr) {
                ts += (double)tr[j];
                tp += (double)tr[j] * (double)p[j];
            }
        }
        s = warp_sumd(s);
        double lse = (double)m + log(s);
        if (!tr) {
            if (d) {
                float f = (float)(scale / s);
                for (int64_t j = lane; j < C; j += 32) {
                    float g = expf(p[j] - m) * f;
                    d[j] = j == c ? g - scale : g;
                }
            }
            return lse - (double)p[c];
        }
        ts = warp_sumd(ts);
        tp = warp_sumd(tp);
        if (d) {
            float f = (float)(ts / s);
            for (int64_t j = lane; j < C; j += 32) d[j] = (expf(p[j] - m) * f - tr[j]) * scale;
        }
        return lse * ts - tp;
    }
    /* XentProbsK: rows normalised to sum 1, clipped to [eps, 1 - eps]
       (zero gradient where clipped) */
    double s = 0, ts = 0;
    for (int64_t j = lane; j < C; j += 32) {
        s += (double)p[j];
        if (tr) ts += (double)tr[j];
    }
    s = warp_sumd(s);
    if (s <= 0) s = 1;
    if (!tr) {
        double q = (double)p[c] / s, qc = fmin(fmax(q, (double)PROB_EPS_D), 1.0 - PROB_EPS_D);
        if (d) {
            bool live = q > PROB_EPS_D && q < 1.0 - PROB_EPS_D;
            float f = live ? (float)(1.0 / s) * scale : 0.f;
            for (int64_t j = lane; j < C; j += 32) d[j] = (live && j == c) ? f - (float)(1.0 / p[c]) * scale : f;
        }
        return -log(qc);
    }
    ts = warp_sumd(ts);
    const float lo = PROB_EPS_D, hi = 1.f - PROB_EPS_D, inv = (float)(1.0 / s), ts_s = (float)(ts / s);
    double l = 0;
    for (int64_t j = lane; j < C; j += 32) {
        float pj = p[j], tv = tr[j], q = pj * inv;
        l += (double)(tv * logf(clampf_(q, lo, hi))); /* t = 0: adds 0 */
        if (d) d[j] = (ts_s - ((q > lo && q < hi) ? tv / pj : 0.f)) * scale;
    }
    return -warp_sumd(l);
}

/* the block's sum of v (lane 0 of each warp holds its warp's) into part */
__device__ __forceinline__ void block_part(double v, double *part) {
    __shared__ double sh[8];
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < (int)blockDim.x / 32; w++) t += sh[w];
        part[blockIdx.x] = t;
    }
}

/* blocks of 256: 8 warps, warp w of the grid takes rows w, w + warps, ... */
__global__ void __launch_bounds__(256) k_loss_rows(int mode, LossSpec L, MetricSpec M, bool sparse, const float *p,
                                                    const float *t, int64_t rows, int64_t C, float *dy, double *part) {
    int lane = threadIdx.x % 32;
    int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    double acc = 0;
    for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
        double v = row_value(mode, L, M, p + r * C, sparse ? nullptr : t + r * C, sparse ? (int64_t)t[r] : 0, C,
                             dy ? dy + r * C : nullptr, lane);
        if (lane == 0) acc += v;
    }
    block_part(acc, part);
}

__global__ void __launch_bounds__(256) k_loss_points(int mode, LossSpec L, MetricSpec M, const float *y,
                                                      const float *t, int64_t n, float *dy, double *part) {
    double acc = 0;
    const float dl = L.delta, lo = PROB_EPS_D, hi = 1.f - PROB_EPS_D;
    GRID_STRIDE(i, n) {
        float v = y[i], tv = t[i];
        if (mode == PT_MSE || mode == PT_MAE) { /* Metric::run: the error in double */
            double e = (double)v - tv;
            acc += mode == PT_MSE ? e * e : fabs(e);
            continue;
        }
        if (mode == PT_BINACC) {
            acc += ((v > M.threshold ? 1.f : 0.f) == (tv > 0.5f ? 1.f : 0.f)) ? 1.0 : 0.0;
            continue;
        }
        float g;
        switch (L.kind) { /* PointLossK */
        case LK_BCE:
            if (L.logits) { /* max(z, 0) - z t + log(1 + exp(-|z|)) */
                acc += (double)(fmaxf(0.f, v) - v * tv + log1pf(expf(-fabsf(v))));
                g = sigmoidf_(v) - tv;
            } else {
                float q = clampf_(v, lo, hi);
                acc += (double)(-(tv * logf(q) + (1.f - tv) * log1pf(-q)));
                g = isnan(v) ? v : ((v > lo && v < hi) ? (q - tv) / (q * (1.f - q)) : 0.f);
            }
            break;
        case LK_MSE: {
            float e = v - tv;
            acc += (double)e * e;
            g = 2.f * e;
            break;
        }
        case LK_MAE: {
            float e = v - tv;
            acc += (double)fabsf(e);
            g = isnan(e) ? e : (v > tv ? 1.f : (v < tv ? -1.f : 0.f));
            break;
        }
        default: { /* Huber */
            float e = v - tv, a = fabsf(e);
            bool quad = a <= dl;
            acc += (double)(quad ? 0.5f * e * e : dl * (a - 0.5f * dl));
            g = isnan(e) ? e : (quad ? e : (e > 0.f ? dl : -dl));
        }
        }
        if (dy) dy[i] = g * L.scale;
    }
    acc = warp_sumd(acc);
    block_part(acc, part);
}

/* The sums into out (device, 1 + nm doubles; NULL: the scratch, after the
   partial sums); returns where they are. */
static double *loss_metrics_launch(const LossSpec &L, const float *src, const float *y, const float *t, int64_t n,
                                   int64_t C, float *dy, int nm, const MetricSpec *ms, double *out) {
    if (nm < 0 || nm > LOSS_MAX_METRICS) fail(ST_INTERNAL, "loss_metrics: %d metrics, at most %d", nm, LOSS_MAX_METRICS);
    bool xent = L.kind == LK_SPARSE_CCE || L.kind == LK_CCE;
    int slots = 1 + nm;
    /* slot s: RED_BLOCKS partial sums at part + s * RED_BLOCKS; the totals after them */
    double *part = part_scratch((size_t)slots * (RED_BLOCKS + 1)), *res = out ? out : part + (size_t)slots * RED_BLOCKS;
    if (n <= 0 || C <= 0) {
        memset0(res, (size_t)slots * sizeof(double));
        return res;
    }
    int64_t rows = n / C;
    int rblocks = (int)std::min<int64_t>(RED_BLOCKS, (rows + 7) / 8), pblocks = (int)std::min<int64_t>(RED_BLOCKS, (n + 255) / 256);
    rblocks = std::max(rblocks, 1);
    const MetricSpec none{MK_PERPLEXITY, 0, 0.f};
    auto total = [&](int s, int blocks) {
        k_sum_parts<<<1, 256, 0, S()>>>(part + (size_t)s * RED_BLOCKS, blocks, res + s);
        LAUNCHED();
    };
    if (xent)
        k_loss_rows<<<rblocks, 256, 0, S()>>>(ROW_XENT, L, none, L.kind == LK_SPARSE_CCE, src, t, rows, C, dy, part);
    else
        k_loss_points<<<pblocks, 256, 0, S()>>>(PT_LOSS, L, none, src, t, n, dy, part);
    LAUNCHED();
    total(0, xent ? rblocks : pblocks);
    for (int k = 0; k < nm; k++) {
        const MetricSpec &M = ms[k];
        double *pk = part + (size_t)(1 + k) * RED_BLOCKS;
        switch (M.kind) {
        case MK_SPARSE_ACC:
        case MK_CAT_ACC:
        case MK_SPARSE_TOPK:
        case MK_TOPK: {
            int mode = (M.kind == MK_SPARSE_ACC || M.kind == MK_CAT_ACC) ? ROW_ACC : ROW_TOPK;
            bool sp = M.kind == MK_SPARSE_ACC || M.kind == MK_SPARSE_TOPK;
            k_loss_rows<<<rblocks, 256, 0, S()>>>(mode, L, M, sp, y, t, rows, C, nullptr, pk);
            LAUNCHED();
            total(1 + k, rblocks);
            break;
        }
        case MK_BIN_ACC:
        case MK_MSE:
        case MK_MAE: {
            int mode = M.kind == MK_BIN_ACC ? PT_BINACC : M.kind == MK_MSE ? PT_MSE : PT_MAE;
            k_loss_points<<<pblocks, 256, 0, S()>>>(mode, L, M, y, t, n, nullptr, pk);
            LAUNCHED();
            total(1 + k, pblocks);
            break;
        }
        default: /* perplexity: the caller takes the loss */
            memset0(res + 1 + k, sizeof(double));
        }
    }
    return res;
}

void loss_metrics_async(const LossSpec &L, const float *src, const float *y, const float *t, int64_t n, int64_t C,
                        float *dy, int nm, const MetricSpec *ms, double *out) {
    loss_metrics_launch(L, src, y, t, n, C, dy, nm, ms, out);
}

double loss_metrics(const LossSpec &L, const float *src, const float *y, const float *t, int64_t n, int64_t C,
                    float *dy, int nm, const MetricSpec *ms, double *msum) {
    if (nm < 0 || nm > LOSS_MAX_METRICS) fail(ST_INTERNAL, "loss_metrics: %d metrics, at most %d", nm, LOSS_MAX_METRICS);
    for (int k = 0; k < nm; k++) msum[k] = 0;
    if (n <= 0 || C <= 0) return 0;
    int slots = 1 + nm;
    double *res = loss_metrics_launch(L, src, y, t, n, C, dy, nm, ms, nullptr);
    double *h = ctx().host;
    CK(cudaMemcpyAsync(h, res, (size_t)slots * sizeof(double), cudaMemcpyDeviceToHost, S()));
    CK(cudaStreamSynchronize(S()));
    for (int k = 0; k < nm; k++) msum[k] = h[1 + k];
    return h[0];
}

/* The CPU optimizers' loops (nnlite.cpp section 5: SgdK ... NadamK), one
   element per thread */
__global__ void k_opt(const OptStep *ps, float *w, const float *g, float *s0, float *s1, float *s2, int64_t n) {
    const OptStep s = *ps; /* Context::d_opt (section 1b) */
    GRID_STRIDE(i, n) {
        float gi = g[i], wi = w[i];
        switch (s.kind) {
        case OPT_SGD: wi -= s.lr * gi; break;
        case OPT_SGD_MOMENTUM: {
            float v = s.momentum * s0[i] - s.lr * gi;
            s0[i] = v;
            wi += s.nesterov ? s.momentum * v - s.lr * gi : v;
            break;
        }
        case OPT_RMSPROP: {
            float v = s.rho * s0[i] + (1 - s.rho) * gi * gi;
            s0[i] = v;
            float den = v;
            if (s.centered) {
                float ag = s.rho * s2[i] + (1 - s.rho) * gi;
                s2[i] = ag;
                den -= ag * ag;
            }
            float inc = s.lr * gi / sqrtf(den + s.eps);
            if (s.momentum > 0) {
                float mo = s.momentum * s1[i] + inc;
                s1[i] = mo;
                wi -= mo;
            } else {
                wi -= inc;
            }
            break;
        }
        case OPT_ADAGRAD: {
            float acc = s0[i] + gi * gi;
            s0[i] = acc;
            wi -= s.lr * gi / sqrtf(acc + s.eps);
            break;
        }
        case OPT_ADADELTA: {
            float ag = s.rho * s0[i] + (1 - s.rho) * gi * gi;
            s0[i] = ag;
            float d = sqrtf(s1[i] + s.eps) / sqrtf(ag + s.eps) * gi;
            s1[i] = s.rho * s1[i] + (1 - s.rho) * d * d;
            wi -= s.lr * d;
            break;
        }
        case OPT_ADAM: {
            wi -= wi * s.wd;
            float m = s0[i] + (gi - s0[i]) * s.b1c;
            float v = s1[i] + (gi * gi - s1[i]) * s.b2c;
            s0[i] = m;
            s1[i] = v;
            if (s.amsgrad) {
                v = fmaxf(s2[i], v);
                s2[i] = v;
            }
            wi -= s.alpha * m / (sqrtf(v) + s.eps);
            break;
        }
        case OPT_ADAMAX: {
            float m = s0[i] + (gi - s0[i]) * s.b1c;
            float u = fmaxf(s.b2 * s1[i], fabsf(gi));
            s0[i] = m;
            s1[i] = u;
            wi -= s.step * m / (u + s.eps);
            break;
        }
        case OPT_NADAM: {
            float m = s0[i] + (gi - s0[i]) * s.b1c;
            float v = s1[i] + (gi * gi - s1[i]) * s.b2c;
            s0[i] = m;
            s1[i] = v;
            float mh = s.a1 * m + s.a2 * gi;
            wi -= s.lr * mh / (sqrtf(v * s.vb) + s.eps);
            break;
        }
        }
        w[i] = wi;
    }
}
/* The step's scalars go to Context::d_opt when it holds others (a capture
   only checks them, as dropout_forward its seed) */
void opt_update(const OptStep &s, float *w, const float *g, float *s0, float *s1, float *s2, int64_t n) {
    if (n <= 0) return;
    Context &c = ctx();
    if (!c.opt_valid || !same_step(c.opt_put, s)) {
        if (c.capturing)
            c.capture_bad = true;
        else
            set_opt_step(s);
    }
    k_opt<<<grid_for(n), 256, 0, S()>>>(c.d_opt, w, g, s0, s1, s2, n);
    LAUNCHED();
}

__global__ void k_clip(float *g, int64_t n, float v) {
    GRID_STRIDE(i, n) g[i] = clampf_(g[i], -v, v); /* NaN stays NaN, as on the CPU */
}
void clip_value(float *g, int64_t n, float v) {
    if (n <= 0) return;
    k_clip<<<grid_for(n), 256, 0, S()>>>(g, n, v);
    LAUNCHED();
}
__global__ void k_scale(float *g, int64_t n, float f) {
    GRID_STRIDE(i, n) g[i] *= f;
}
void scale(float *g, int64_t n, float f) {
    if (n <= 0) return;
    k_scale<<<grid_for(n), 256, 0, S()>>>(g, n, f);
    LAUNCHED();
}

} // namespace nnl_cuda
