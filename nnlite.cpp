/* nnlite.cpp - the CPU runtime of nnlite, one file. See nnlite.h for the API.

   Build:  g++ -std=c++17 -O2 -pthread -c nnlite.cpp   (-DNNL_NO_THREADS: single-threaded)
   Needs nothing but a C++17 compiler; stb (Debian libstb-dev, or stb_image.h
   and stb_image_write.h beside this file) adds .gz and deflated .npz
   reading, and image files (PNG, JPEG, BMP, GIF, TGA, PNM).

   CONTENTS
     1  Utilities and errors       status codes, exceptions at the ABI edge,
                                   RNG, the Keras call-syntax spec parser
     2  Kernels                    the kernel table (CPU): SGEMM, activations,
                                   softmax, reductions; elementwise kernels
                                   written once for AVX-512, AVX2, plain C++
     3  Layers                     the Layer interface (each layer gives its
                                   Keras config, size bound, GPU path and
                                   persistent states), Dense, Activation,
                                   Dropout, Flatten, Reshape, convolutions,
                                   poolings, BatchNormalization, padding,
                                   upsampling; the layer registry
     4  Losses and metrics
     5  Optimizers                 SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW,
                                   Adamax, Nadam, clipping; each describes its
                                   step (shared with the GPU) and its state
     6  Model and training loop    weights arena, compile, train_step (one
                                   reduction point), fit, evaluate, predict,
                                   summary, history, progress line
     6b GPU backend (NNL_CUDA)     the CUDA kernel table over device mirrors
                                   of the arenas, optimizer steps on the GPU,
                                   the training step as CUDA graphs
     7  Data loaders and helpers   idx(.gz), npy, npz, normalize, shuffle...,
                                   image files and folders (stb_image),
                                   pictures (SVG curves, confusion matrices,
                                   image grids, line plots; each also as PNG,
                                   the SVG drawn by a small rasteriser)
     8  Model files                Keras JSON (to_json/from_json), the nnlite
                                   binary format (weights, whole models with
                                   optimizer state), npz weights, atomic saves,
                                   Keras' own .h5 and .keras files (HDF5)
     9  C ABI                      the extern "C" functions of nnlite.h

   Design notes
   - Internal code throws nnl::Error; every extern "C" function runs its body
     inside nnl::guard, which turns exceptions into status codes and the
     thread-local last-error message. Nothing throws across the ABI.
   - All math goes through the kernel table `nnl::K()`; layers never touch a
     device. A GPU backend provides another table.
   - A model's weights live in one arena and its gradients in another with the
     same layout, so a single call (an MPI allreduce at train_step's
     reduction point, an optimizer step, a finite check) reaches all of
     them. Activations live in a third arena sized once per batch size: the
     training loop allocates nothing per batch. Its buffers (activations,
     workspaces, scratch, gradients) share memory wherever their lifetimes
     in a step do not meet (Model::ensure_batch). Stateful layers keep what
     they carry across batches in a fourth (S): saved with the model, never
     a weight. */

#include "nnlite.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <unordered_map>

#include <errno.h>
#include <dirent.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

/* Threads: nnlite's own pool (section 1), C++11 threads. NNL_NO_THREADS
   builds a single-threaded library for platforms without them. */
#ifndef NNL_NO_THREADS
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif
#define NNL_THREADS 1
#else
#define NNL_THREADS 0
#endif

/* MPI (make MPI=1: mpicxx, -DNNL_MPI): data-parallel training, section 6c.
   Without it nothing here names MPI, and the distributed calls say how to
   build with it. */
#ifdef NNL_MPI
#define OMPI_SKIP_MPICXX 1 /* the C API only: no MPI C++ bindings in this object */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h> /* MPIX_Query_cuda_support: a CUDA-aware Open MPI reduces device memory */
#endif
#endif

/* HDF5 (make HDF5=auto|1, -DNNL_HDF5; Debian libhdf5-dev): Keras .h5 and
   .keras model files, section 8. Without it those files are refused with
   NNL_ERR_UNSUPPORTED naming the package. */
#ifdef NNL_HDF5
#include <hdf5.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NNL_X86 1
#else
#define NNL_X86 0
#endif
/* AMX (the bfloat16 GEMM's tiles, section 2): CPUID, and the Linux call
   that lets a process use the tile registers */
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <sys/syscall.h>
#define NNL_AMX 1
#else
#define NNL_AMX 0
#endif

/* Let the compiler vectorise loops even at -O2 (im2col, pooling, packing).
   The hot elementwise loops do not rely on it: they are written for AVX2 and
   AVX-512 explicitly (section 2, "one source, three instruction sets"), as
   no-math-errno given here does not reach sqrt, which stays a call. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-math-errno", "tree-vectorize", "vect-cost-model=dynamic")
#endif

#ifndef NNL_MAX_THREADS
#define NNL_MAX_THREADS 256
#endif

/* Most layers a model may have (nnl_add, Keras JSON, model files). */
#ifndef NNL_MAX_LAYERS
#define NNL_MAX_LAYERS 65536
#endif

#ifdef NNL_HDF5
#define NNL_HAVE_HDF5 1
#else
#define NNL_HAVE_HDF5 0
#endif

/* stb: its zlib decoder reads .gz and deflated .npz members, its image
   decoders PNG, JPEG, BMP, GIF, TGA and PNM files (section 7, "Images"), and
   stb_image_write writes PNG, JPEG, BMP and TGA files. Static, so a program
   that also uses stb gets no duplicate symbols. */
#ifndef NNL_NO_STB
#  if defined(__has_include)
#    if __has_include(<stb/stb_image.h>)
#      define NNL_HAVE_STB 1
#      define NNL_STB_HEADER <stb/stb_image.h>
#    elif __has_include("stb_image.h")
#      define NNL_HAVE_STB 1
#      define NNL_STB_HEADER "stb_image.h"
#    endif
#  endif
#endif
#ifndef NNL_HAVE_STB
#  define NNL_HAVE_STB 0
#endif
/* stb_image_write, found beside stb_image.h (the same package). */
#if NNL_HAVE_STB && defined(__has_include)
#  if __has_include(<stb/stb_image_write.h>)
#    define NNL_HAVE_STB_WRITE 1
#    define NNL_STB_WRITE_HEADER <stb/stb_image_write.h>
#  elif __has_include("stb_image_write.h")
#    define NNL_HAVE_STB_WRITE 1
#    define NNL_STB_WRITE_HEADER "stb_image_write.h"
#  endif
#endif
#ifndef NNL_HAVE_STB_WRITE
#  define NNL_HAVE_STB_WRITE 0
#endif
/* stb_easy_font (the same package): the labels of PNG pictures. */
#if NNL_HAVE_STB_WRITE && defined(__has_include)
#  if __has_include(<stb/stb_easy_font.h>)
#    define NNL_HAVE_STB_FONT 1
#    define NNL_STB_FONT_HEADER <stb/stb_easy_font.h>
#  elif __has_include("stb_easy_font.h")
#    define NNL_HAVE_STB_FONT 1
#    define NNL_STB_FONT_HEADER "stb_easy_font.h"
#  endif
#endif
#ifndef NNL_HAVE_STB_FONT
#  define NNL_HAVE_STB_FONT 0
#endif
#if NNL_HAVE_STB
/* stb_image meets hostile files (section 7, "Images"), and Debian's copy
   (2.27) still has assertions that corrupt JPEGs reach: an assertion raises
   NNL_ERR_FORMAT instead of aborting the caller's program, and every block
   stb allocates during a decode is tracked (zero-filled, which also keeps a
   JPEG that uses a Huffman table it never defined from reading garbage), so
   that a decode abandoned that way frees what it held (img::decode). */
namespace nnl {
[[noreturn]] void raise(int status, const char *fmt, ...);
namespace stbmem {
static thread_local std::vector<void *> *live = nullptr; /* set while img::decode runs */
static void *alloc(size_t n) {
    void *p = std::calloc(n ? n : 1, 1);
    if (p && live) live->push_back(p);
    return p;
}
static void forget(uintptr_t p) { /* by address: realloc may have freed the block */
    if (!live) return;
    for (size_t i = live->size(); i-- > 0;)
        if ((uintptr_t)(*live)[i] == p) {
            live->erase(live->begin() + (ptrdiff_t)i);
            return;
        }
}
static void release(void *p) {
    if (!p) return;
    forget((uintptr_t)p);
    std::free(p);
}
static void *grow(void *p, size_t n) { /* (a failed realloc leaves p untracked: stb frees it) */
    if (p) forget((uintptr_t)p);
    void *q = std::realloc(p, n ? n : 1);
    if (q && live) live->push_back(q);
    return q;
}
[[noreturn]] static void assert_failed(const char *expr) {
    raise(NNL_ERR_FORMAT, "corrupt data (stb_image's check '%s' failed)", expr);
}
} // namespace stbmem
} // namespace nnl
#  define STBI_MALLOC(sz) nnl::stbmem::alloc(sz)
#  define STBI_REALLOC(p, newsz) nnl::stbmem::grow(p, newsz)
#  define STBI_FREE(p) nnl::stbmem::release(p)
#  define STBI_ASSERT(x) ((x) ? (void)0 : nnl::stbmem::assert_failed(#x))
#  define STB_IMAGE_IMPLEMENTATION
#  define STB_IMAGE_STATIC
#  define STBI_NO_STDIO /* nnlite reads files itself (read_file) */
#  define STBI_NO_HDR   /* float images (.hdr, .pic) are not read */
#  define STBI_NO_PIC
#  define STBI_NO_PSD
#  if NNL_HAVE_STB_WRITE
#    define STB_IMAGE_WRITE_IMPLEMENTATION
#    define STB_IMAGE_WRITE_STATIC
#    define STBI_WRITE_NO_STDIO /* written through write_file_atomic */
#  endif
#  if defined(__GNUC__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wunused-function"
#    pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#    pragma GCC diagnostic ignored "-Wsign-compare"
#    pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#  endif
#  include NNL_STB_HEADER
#  if NNL_HAVE_STB_WRITE
#    include NNL_STB_WRITE_HEADER
#  endif
#  if NNL_HAVE_STB_FONT
#    include NNL_STB_FONT_HEADER
#  endif
#  if defined(__GNUC__)
#    pragma GCC diagnostic pop
#  endif
#endif

/* ========================================================================
   1  Utilities and errors
   ======================================================================== */
namespace nnl {

struct Error {
    int status;
    std::string msg;
};

static std::string vformat(const char *fmt, va_list ap) {
    char buf[1024];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    std::string s;
    if (n < (int)sizeof buf) {
        s = buf;
    } else {
        s.resize((size_t)n + 1);
        vsnprintf(&s[0], s.size(), fmt, ap2);
        s.resize((size_t)n);
    }
    va_end(ap2);
    return s;
}

static std::string format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* Numbers as C-locale text whatever LC_NUMERIC says: printf and strtod
   follow the host program's locale, and one that called setlocale(LC_ALL,
   "") in a comma locale would otherwise turn "learning_rate=0.001" into a
   parse error and 0.5 into "0,5" in the spec strings nnlite writes. */
static char locale_point_c() {
    const struct lconv *lc = localeconv();
    return lc && lc->decimal_point && lc->decimal_point[0] ? lc->decimal_point[0] : '.';
}
/* printf of one double with fmt ("%.17g"), the decimal point always '.' */
static std::string c_num(const char *fmt, double v) {
    std::string t = format(fmt, v);
    char pt = locale_point_c();
    if (pt != '.')
        for (auto &c : t)
            if (c == pt) c = '.';
    return t;
}
/* strtod of C-locale text at p (digits, sign, '.', exponent); *end after it */
static double c_strtod(const char *p, const char **end) {
    char buf[80];
    size_t n = 0;
    char pt = locale_point_c();
    while (n + 1 < sizeof buf && (isdigit((unsigned char)p[n]) || p[n] == '.' || p[n] == '+' || p[n] == '-' ||
                                  p[n] == 'e' || p[n] == 'E')) {
        buf[n] = p[n] == '.' ? pt : p[n];
        n++;
    }
    buf[n] = 0;
    char *e;
    double v = strtod(buf, &e);
    *end = p + (e - buf);
    return v;
}

static thread_local std::string g_last_error;

[[noreturn]] void raise(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    throw Error{status, s};
}

int set_error(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    g_last_error = vformat(fmt, ap);
    va_end(ap);
    return status;
}

/* A message as the caller sees it: it starts with the API function that
   failed, "nnl_fit: ...". Internal code raises messages without that prefix
   (they name the argument, the layer, the file: "x: samples of shape
   ...") and the ABI edge adds it; a message that starts with the function's
   name already ("nnl_fit: options not initialised") is kept as it is, so a
   prefix is never doubled. */
static std::string api_message(const char *api, const std::string &msg) {
    if (!api || !*api) return msg;
    size_t n = strlen(api);
    if (msg.compare(0, n, api) == 0 && msg.size() > n && msg[n] == ':') return msg;
    /* "nnl_fit: ..." raised under nnl_fit_typed (the typed calls share the
       float calls' code): the name of the call made */
    if (n > 6 && strcmp(api + n - 6, "_typed") == 0 && msg.compare(0, n - 6, api, n - 6) == 0 &&
        msg.size() > n - 6 && msg[n - 6] == ':')
        return std::string(api) + msg.substr(n - 6);
    /* "fit: ..." raised by Model::fit under nnl_fit: the API name replaces it */
    const char *brief = strncmp(api, "nnl_", 4) == 0 ? api + 4 : api;
    size_t b = strlen(brief);
    if (b && msg.compare(0, b, brief) == 0 && msg.size() > b + 1 && msg[b] == ':' && msg[b + 1] == ' ')
        return std::string(api) + msg.substr(b);
    return std::string(api) + ": " + msg;
}

/* The ABI edge: runs f and converts whatever it throws into a status and
   the thread's last-error message, which names the API function `api`.
   Every extern "C" function passes its own name: guard(__func__, [&] {...}). */
template <class F> int guard(const char *api, F &&f) {
    try {
        if constexpr (std::is_void_v<decltype(f())>) {
            f();
            return NNL_OK;
        } else {
            return f();
        }
    } catch (const Error &e) {
        g_last_error = api_message(api, e.msg);
        return e.status;
    } catch (const std::bad_alloc &) {
        g_last_error = api_message(api, "out of memory");
        return NNL_ERR_MEMORY;
    } catch (const std::exception &e) {
        g_last_error = api_message(api, std::string("internal error: ") + e.what());
        return NNL_ERR_INTERNAL;
    } catch (...) {
        g_last_error = api_message(api, "internal error: unknown exception");
        return NNL_ERR_INTERNAL;
    }
}
/* Inside nnlite (tests, fuzz drivers): the message as raised. */
template <class F> int guard(F &&f) { return guard("", std::forward<F>(f)); }

#define NNL_REQUIRE(cond, status, ...) \
    do {                               \
        if (!(cond)) nnl::raise(status, __VA_ARGS__); \
    } while (0)

/* xoshiro256** seeded through splitmix64: fast, and the same stream on every
   platform, so a seed reproduces a model anywhere. */
struct Rng {
    uint64_t s[4];
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed) {
        for (int i = 0; i < 4; i++) {
            seed += 0x9E3779B97F4A7C15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            s[i] = z ^ (z >> 31);
        }
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t next() {
        uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return r;
    }
    double uniform() { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }
    uint64_t below(uint64_t n) { /* Lemire's method without bias */
        if (n == 0) return 0;
        uint64_t threshold = (0 - n) % n;
        for (;;) {
            uint64_t r = next();
            if (r >= threshold) return r % n;
        }
    }
    float normal() {
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
};

/* ---- Floating-point environment ----
   Training, evaluation and inference run with flush-to-zero and
   denormals-are-zero. Adam's moments of weights whose gradients vanish (dead
   ReLU units) decay into the denormal range, where every operation takes a
   microcode assist on Intel CPUs: K-MLP trained 3-4x slower after a few
   hundred steps. The ABI functions that run kernels hold an FpScope
   (section 9): it also sets round-to-nearest with every exception masked (a
   caller that traps invalid operations would otherwise stop in nnlite's
   deliberate NaN handling), and gives the caller back its whole environment,
   status flags included, on return and around user callbacks. Pool workers
   run each job in its caller's mode. x86: MXCSR, which governs all of
   nnlite's arithmetic (SSE/AVX); aarch64: FPCR.FZ (flushes denormal inputs
   and results alike) with FPSR restored; elsewhere nothing changes.
   NNL_KEEP_DENORMALS: compute in the caller's environment as it is (the
   denormal benchmark compares the two). */
#if NNL_X86 && (defined(__SSE__) || defined(__x86_64__))
#define NNL_FP_CONTROL 1
typedef uint32_t FpEnv;
static inline FpEnv fp_get() { return _mm_getcsr(); }
static inline void fp_set(FpEnv e) { _mm_setcsr(e); }
/* exceptions masked (0x1F80), round to nearest, FTZ (0x8000), DAZ (0x0040), no flags */
static inline FpEnv fp_work(FpEnv e) {
#ifdef NNL_KEEP_DENORMALS
    return e;
#else
    return (void)e, 0x1F80u | 0x8000u | 0x0040u;
#endif
}
static inline bool fp_same_mode(FpEnv a, FpEnv b) { return ((a ^ b) & ~0x3Fu) == 0; } /* bits 0-5: flags */
#elif defined(__aarch64__)
#define NNL_FP_CONTROL 1
struct FpEnv {
    uint64_t cr, sr;
};
static inline FpEnv fp_get() {
    FpEnv e;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(e.cr));
    __asm__ __volatile__("mrs %0, fpsr" : "=r"(e.sr));
    return e;
}
static inline void fp_set(FpEnv e) {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(e.cr));
    __asm__ __volatile__("msr fpsr, %0" : : "r"(e.sr));
}
/* FZ (bit 24) on; round to nearest (RMode, bits 22-23) and trap enables (bits 8-12, 15) off */
static inline FpEnv fp_work(FpEnv e) {
#ifdef NNL_KEEP_DENORMALS
    return e;
#else
    return FpEnv{(e.cr & ~((3ull << 22) | 0x9F00ull)) | (1ull << 24), 0};
#endif
}
static inline bool fp_same_mode(FpEnv a, FpEnv b) { return a.cr == b.cr; }
#else
#define NNL_FP_CONTROL 0
typedef int FpEnv;
static inline FpEnv fp_get() { return 0; }
static inline void fp_set(FpEnv) {}
static inline FpEnv fp_work(FpEnv e) { return e; }
static inline bool fp_same_mode(FpEnv, FpEnv) { return true; }
#endif

/* The work environment for the life of the scope; the caller's (saved in
   `caller`) comes back when it ends, exceptions included. */
struct FpScope {
    FpEnv caller;
    FpScope() : caller(fp_get()) { fp_set(fp_work(caller)); }
    ~FpScope() { fp_set(caller); }
    FpScope(const FpScope &) = delete;
    FpScope &operator=(const FpScope &) = delete;
};

/* ---- Threads ----
   nnlite's own pool, not OpenMP. On a machine that also runs other work (MPI
   ranks sharing a node, a laptop) libgomp's spin-waiting threads made
   training 4-60x slower than one thread: a thread that spins for a
   descheduled partner burns the time that partner needs, and libgomp's wait
   policy is read from the environment when it loads, too early for a
   library to set. Here:
   - an idle worker spins for a few microseconds (the next job of a training
     step usually follows at once), then polls between sched_yield calls
     (which hand a core another process wants over to it, and return at once
     on an idle one) for a few hundred, then sleeps on a condition variable;
   - a job is cut into chunks that threads claim one at a time, each its
     own share first (the same part of an array as last step, still in its
     core's cache), then what is left of the others'; the calling thread
     works too. A worker that wakes late, or is descheduled, leaves the
     chunks it has not claimed to the others; the caller waits only for
     chunks already begun, and sleeps if that takes long;
   - work too small to split runs inline (the thresholds below are measured:
     bench/busy_core.sh).
   Results do not depend on which thread ran a chunk or on how many threads
   there are: a chunk's arithmetic is fixed by its bounds, and every kernel
   computes an element the same way whatever the bounds of the range it is
   in (par_for bodies must keep that). One pool serves the process. A caller
   that finds it busy (another model trained on another thread) or that is
   itself inside a job runs its job alone, on its own thread. A forked child
   starts a new pool; the workers are joined at exit. */
static std::atomic<int> g_threads{0}; /* 0: the default */

#if NNL_THREADS
/* The first number in an environment variable ("4" or "4,2"), 0 when none. */
static int env_threads(const char *name) {
    const char *s = getenv(name);
    if (!s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return end != s && v > 0 ? (int)std::min<long>(v, NNL_MAX_THREADS) : 0;
}

/* NNL_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run
   on (its affinity mask: a batch job's share of a node). Read once. */
static int default_threads() {
    static const int n = [] {
        int v = env_threads("NNL_NUM_THREADS");
        if (v <= 0) v = env_threads("OMP_NUM_THREADS");
#if defined(__linux__)
        cpu_set_t set;
        if (v <= 0 && sched_getaffinity(0, sizeof set, &set) == 0) v = CPU_COUNT(&set);
#endif
        if (v <= 0) v = (int)std::thread::hardware_concurrency();
        return std::max(1, std::min(v, NNL_MAX_THREADS));
    }();
    return n;
}
#endif

int threads() {
#if NNL_THREADS
    int t = g_threads.load(std::memory_order_relaxed);
    return t > 0 ? t : default_threads();
#else
    return 1;
#endif
}

namespace pool {

#if NNL_THREADS
/* An idle worker spins for NNL_WORKER_SPIN_NS, then polls between yields
   of its core for NNL_WORKER_YIELD_NS, then sleeps; a caller spins for
   chunks still running for NNL_CALLER_SPIN_NS, then sleeps (nanoseconds).
   Measured (bench/busy_core.sh, 2-core VM): polling between yields made the
   default 10-20 % faster on an idle machine (a sleeping worker takes 25-40 us
   to wake there, many times per training step) and no slower with a busy
   core; a worker that spins without yielding for 60-100 us made training
   10-20 % slower even on an idle machine. */
#ifndef NNL_WORKER_SPIN_NS
#define NNL_WORKER_SPIN_NS 20000
#endif
#ifndef NNL_WORKER_YIELD_NS
#define NNL_WORKER_YIELD_NS 300000
#endif
#ifndef NNL_CALLER_SPIN_NS
#define NNL_CALLER_SPIN_NS 20000
#endif

static inline void cpu_relax() {
#if NNL_X86
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/* Spins until done() or for ns nanoseconds; whether done() came true. */
template <class P> static bool spin_until(P done, int64_t ns) {
    if (done()) return true;
    int64_t end = now_ns() + ns;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            cpu_relax();
            if (done()) return true;
        }
        if (now_ns() >= end) return false;
    }
}

/* Polls done() between yields of the core for ns nanoseconds: on an idle
   core sched_yield returns at once (the worker stays ready for the next job
   of a training step), on a core that another process wants it hands the
   core over; whether done() came true. */
template <class P> static bool yield_until(P done, int64_t ns) {
    int64_t end = now_ns() + ns;
    while (now_ns() < end) {
        std::this_thread::yield();
        if (done()) return true;
    }
    return false;
}

/* Set on pool workers, and on a caller while its job runs: a par_for met
   there runs inline (the pool is taken). */
static thread_local bool tl_in_pool = false;

struct Pool {
    std::mutex busy;                   /* held by the caller whose job runs */
    std::mutex m;                      /* sleeping and waking */
    std::condition_variable wake, done;
    std::vector<std::thread> workers;  /* worker k is thread k+1; changed only by the holder of busy */
    int sleepers = 0;                  /* under m */
    std::atomic<bool> stop{false};     /* set under m */
    std::atomic<uint64_t> gen{0};      /* one more per job, under m */
    std::atomic<bool> open{false};     /* the current job takes workers */
    std::atomic<int> active{0};        /* workers inside the current job */
    /* The current job, written by its caller before `open` and read after
       it: T threads, chunks 0..n-1 cut into T ranges, thread t's first. A
       thread runs its own range, then helps with the others', so that the
       same thread tends to get the same part of an array every step (it is
       in that core's cache) while a late or descheduled thread's share still
       goes to the others. */
    void (*run)(const void *, int64_t) = nullptr;
    const void *ctx = nullptr;
    int T = 0;
    struct alignas(64) Range {
        std::atomic<int64_t> next{0}; /* the next chunk to claim */
        int64_t end = 0;
    } range[NNL_MAX_THREADS];
    FpEnv fp{};
    std::exception_ptr error;          /* the job's first exception, under m */

    /* Thread t claims and runs chunks until none is left; an exception ends the job. */
    void work(int t) {
        for (int i = 0; i < T; i++) {
            Range &r = range[(t + i) % T];
            int64_t c;
            while ((c = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end) {
                try {
                    run(ctx, c);
                } catch (...) {
                    std::lock_guard<std::mutex> lk(m);
                    if (!error) error = std::current_exception();
                    for (int j = 0; j < T; j++) range[j].next.store(range[j].end, std::memory_order_relaxed);
                }
            }
        }
    }

    static void worker_main(Pool *p, int k, uint64_t seen) {
        tl_in_pool = true;
        for (;;) {
            auto ready = [&] {
                return p->gen.load(std::memory_order_acquire) != seen || p->stop.load(std::memory_order_relaxed);
            };
            if (!spin_until(ready, NNL_WORKER_SPIN_NS) && !yield_until(ready, NNL_WORKER_YIELD_NS)) {
                std::unique_lock<std::mutex> lk(p->m);
                p->sleepers++;
                p->wake.wait(lk, ready);
                p->sleepers--;
            }
            if (p->stop.load()) return;
            seen = p->gen.load(std::memory_order_acquire);
            /* active first, then open: a caller that closes its job and then
               reads active == 0 can be sure no worker will enter it */
            p->active.fetch_add(1);
            if (p->open.load() && k + 1 < p->T) {
                if (!fp_same_mode(fp_get(), p->fp)) fp_set(p->fp);
                p->work(k + 1);
            }
            if (p->active.fetch_sub(1) == 1 && !p->open.load()) {
                std::lock_guard<std::mutex> lk(p->m);
                p->done.notify_all();
            }
        }
    }

    /* Runs fn(ctx, 0 .. n-1) on the calling thread and up to T-1 workers.
       The caller holds busy. */
    void job(int threads, int64_t n, void (*fn)(const void *, int64_t), const void *c) {
        threads = std::min(threads, NNL_MAX_THREADS);
        while ((int)workers.size() < threads - 1) {
            try {
                workers.emplace_back(worker_main, this, (int)workers.size(), gen.load());
            } catch (...) {
                break; /* no more threads to be had: fewer workers */
            }
        }
        run = fn;
        ctx = c;
        T = std::min(threads, (int)workers.size() + 1);
        for (int t = 0; t < T; t++) {
            range[t].next.store(n * t / T, std::memory_order_relaxed);
            range[t].end = n * (t + 1) / T;
        }
        fp = fp_get();
        error = nullptr;
        bool sleeping;
        {
            std::lock_guard<std::mutex> lk(m);
            open.store(true);
            gen.fetch_add(1);
            sleeping = sleepers > 0;
        }
        if (sleeping) wake.notify_all();
        work(0);
        open.store(false);
        if (!spin_until([&] { return active.load() == 0; }, NNL_CALLER_SPIN_NS)) {
            std::unique_lock<std::mutex> lk(m);
            done.wait(lk, [&] { return active.load() == 0; });
        }
        if (error) {
            std::exception_ptr e = error;
            error = nullptr;
            std::rethrow_exception(e);
        }
    }

    void shutdown() {
        std::lock_guard<std::mutex> b(busy);
        {
            std::lock_guard<std::mutex> lk(m);
            stop.store(true);
        }
        wake.notify_all();
        for (auto &t : workers) t.join();
        workers.clear();
    }
};

static std::atomic<Pool *> g_pool{nullptr};
static Pool *g_forked_away = nullptr; /* the parent's pool, in a forked child: kept reachable */

static void after_fork_in_child() {
    if (Pool *p = g_pool.exchange(nullptr)) g_forked_away = p; /* its workers stayed in the parent */
}

static Pool *get() {
    Pool *p = g_pool.load(std::memory_order_acquire);
    if (p) return p;
    Pool *q = new (std::nothrow) Pool;
    if (!q) return nullptr;
    if (!g_pool.compare_exchange_strong(p, q)) {
        delete q;
        return p;
    }
    static bool registered = false; /* once per process image, children included */
    if (!registered) {
        registered = true;
        pthread_atfork(nullptr, nullptr, after_fork_in_child);
    }
    return q;
}

static struct Reaper {
    ~Reaper() {
        if (Pool *p = g_pool.load()) p->shutdown();
    }
} g_reaper;

template <class F> static void trampoline(const void *f, int64_t c) { (*(const F *)f)(c); }
#endif

/* f(0 .. n-1), each call once, on up to T threads (the caller's among them). */
template <class F> static void run_chunks(int64_t n, int T, const F &f) {
#if NNL_THREADS
    if (T > 1 && n > 1 && !tl_in_pool) {
        Pool *p = get();
        if (p && !p->stop.load() && p->busy.try_lock()) {
            std::lock_guard<std::mutex> hold(p->busy, std::adopt_lock);
            tl_in_pool = true;
            struct Reset {
                ~Reset() { tl_in_pool = false; }
            } reset;
            if (!p->stop.load()) {
                p->job((int)std::min<int64_t>(T, n), n, trampoline<F>, &f);
                return;
            }
        }
    }
#else
    (void)T;
#endif
    for (int64_t c = 0; c < n; c++) f(c);
}

/* While one lives with on set, the jobs of the calling thread run on it
   alone, as inside a job. For callers that bring threads of their own:
   concurrent nnl_predict calls on one model (Model::InferPool), where the
   caller's threads are the parallelism and the pool's workers on top of
   them would oversubscribe the cores. */
struct Alone {
#if NNL_THREADS
    bool prev;
    explicit Alone(bool on) : prev(tl_in_pool) {
        if (on) tl_in_pool = true;
    }
    ~Alone() { tl_in_pool = prev; }
#else
    explicit Alone(bool) {}
#endif
    Alone(const Alone &) = delete;
    Alone &operator=(const Alone &) = delete;
};
} // namespace pool

/* The locks of concurrent predictions on one model (Model::InferPool). A
   single-threaded build (NNL_NO_THREADS, for platforms without threads)
   has nothing to exclude, and calls on one model must not overlap there. */
#if NNL_THREADS
typedef std::mutex Mutex;
#else
struct Mutex {
    void lock() {}
    void unlock() {}
    bool try_lock() { return true; }
};
#endif
/* Holds m from construction (or from a successful try_lock: adopt) to
   destruction; take = false holds nothing. */
struct Hold {
    Mutex *m;
    explicit Hold(Mutex &m_, bool take = true) : m(take ? &m_ : nullptr) {
        if (m) m->lock();
    }
    struct Adopt {};
    Hold(Mutex &m_, Adopt) : m(&m_) {}
    ~Hold() {
        if (m) m->unlock();
    }
    Hold(const Hold &) = delete;
    Hold &operator=(const Hold &) = delete;
};

/* Work (elements touched) up to which par_for runs inline, and the least
   work of one chunk. Measured as for NNL_GEMM_MIN_COST: a vectorised
   streaming loop gains from two threads only from about 1M elements (memory
   bound; 0.2-0.6x below 128K when the worker must be woken), a loop of
   divisions and square roots from about 64K; 256K keeps the loss of the
   first small and most of the gain of the second. A call site whose
   elements are costly (exp, tanh, division) may count each as several. */
#ifndef NNL_PAR_MIN_WORK
#define NNL_PAR_MIN_WORK 262144
#endif
#ifndef NNL_PAR_CHUNK_WORK
#define NNL_PAR_CHUNK_WORK 16384
#endif
/* Floats of a training batch from which fit's gather of the shuffled rows
   into the input buffer is split over the threads (Model::gather). AMD EPYC
   (Zen 4) VM, two threads, K-MLP at batch 120 (94,080 floats), synthetic
   data, 3 windows of 2,000 steps, alternated: the gather 42.9 -> 20.4 us a
   step, training 304-308k -> 323-328k samples/s. */
#ifndef NNL_GATHER_SPLIT
#define NNL_GATHER_SPLIT 32768
#endif
/* Multiply-adds of a Dense layer's kernel gradient (and of its dx) from
   which the two are computed at once on two threads (Dense::backward). */
#ifndef NNL_DENSE_PAIR_MACS
#define NNL_DENSE_PAIR_MACS 100000
#endif

/* body(lo, hi) over [0, n), in chunks on the pool when the work (in elements
   touched) is worth it, else inline. */
template <class F> static void par_for(int64_t n, int64_t work, F body) {
    int T = threads();
    if (T <= 1 || n < 2 || work <= NNL_PAR_MIN_WORK) {
        body((int64_t)0, n);
        return;
    }
    int64_t chunks = std::min<int64_t>({n, 4 * (int64_t)T, std::max<int64_t>(2, work / NNL_PAR_CHUNK_WORK)});
    int64_t step = (n + chunks - 1) / chunks;
    if (step > 64) step = (step + 15) / 16 * 16; /* element ranges start on 64-byte boundaries */
    chunks = (n + step - 1) / step;
    pool::run_chunks(chunks, T, [&](int64_t c) { body(c * step, std::min(n, (c + 1) * step)); });
}

bool read_file(const char *path, std::vector<uint8_t> &out) {
    NNL_REQUIRE(path, NNL_ERR_ARGUMENT, "path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) raise(NNL_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        raise(NNL_ERR_IO, "'%s' is not a regular file", path);
    }
    out.resize((size_t)st.st_size);
    size_t got = out.empty() ? 0 : fread(out.data(), 1, out.size(), f);
    int err = ferror(f);
    fclose(f);
    if (err || got != out.size()) raise(NNL_ERR_IO, "cannot read '%s'", path);
    return true;
}

/* Writes a whole file so that a reader sees either the old file or the new
   one, never a part: a temporary file in the same folder, fsync, rename. */
void write_file_atomic(const char *path, const std::string &data) {
    NNL_REQUIRE(path && *path, NNL_ERR_ARGUMENT, "path is NULL or empty");
    std::string tmp = format("%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp.c_str(), "wb");
    if (!f) raise(NNL_ERR_IO, "cannot write '%s': %s", path, strerror(errno)); /* the caller's name, not tmp's */
    bool ok = fwrite(data.data(), 1, data.size(), f) == data.size() && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp.c_str(), path) != 0) {
        if (ok) err = errno;
        remove(tmp.c_str());
        raise(NNL_ERR_IO, "cannot write '%s': %s", path, strerror(err));
    }
}

/* ---- Spec strings: Keras' call syntax -----------------------------------
   "Dense(128, activation='relu', input_shape=(784,))" parses into a name,
   positional values and keyword values. Values: numbers, strings (quoted or
   bare words), True/False/None, tuples (...) or lists [...]. */
struct Spec;
static std::string spec_repr(const Spec &sp);
struct Value {
    enum Kind { NONE, BOOL, NUM, STR, TUPLE, CALL } kind = NONE;
    double num = 0;
    std::string str;
    std::vector<Value> items;
    /* CALL: a nested layer, as in Keras' wrappers: Bidirectional(LSTM(8)) */
    std::shared_ptr<const Spec> call;
    std::string repr() const {
        switch (kind) {
        case NONE: return "None";
        case BOOL: return num != 0 ? "True" : "False";
        case NUM: return c_num("%.17g", num);
        case STR: return "'" + str + "'";
        case TUPLE: {
            std::string s = "(";
            for (size_t i = 0; i < items.size(); i++) s += (i ? ", " : "") + items[i].repr();
            return s + (items.size() == 1 ? ",)" : ")");
        }
        case CALL: return spec_repr(*call);
        }
        return "?";
    }
};

struct Spec {
    std::string name;
    std::vector<Value> pos;
    std::vector<std::pair<std::string, Value>> kw;
};

/* "Name(pos, ..., key=value, ...)": a spec as the parser reads it back */
static std::string spec_repr(const Spec &sp) {
    std::string s = sp.name + "(";
    bool first = true;
    for (auto &v : sp.pos) s += (first ? "" : ", ") + v.repr(), first = false;
    for (auto &kv : sp.kw) s += (first ? "" : ", ") + kv.first + "=" + kv.second.repr(), first = false;
    return s + ")";
}

/* Deepest nesting of tuples/lists a spec string may have: the parser
   recurses once per level, and a hostile string of 50,000 '(' must be an
   error, not a stack overflow (the JSON parser has JSON_MAX_DEPTH). */
static const int SPEC_MAX_DEPTH = 64;

class SpecParser {
    const char *s, *p;
    [[noreturn]] void fail(const char *what) {
        /* a hostile string may be megabytes long: quote its start only */
        size_t n = strlen(s);
        std::string text = n > 200 ? std::string(s, 200) + "..." : std::string(s);
        raise(NNL_ERR_ARGUMENT, "cannot parse '%s' at position %lld: %s", text.c_str(), (long long)(p - s), what);
    }
    void ws() {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    }
    static bool idstart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
    static bool idchar(char c) { return idstart(c) || (c >= '0' && c <= '9') || c == '.'; }
    std::string ident() {
        ws();
        if (!idstart(*p)) fail("expected a name");
        const char *b = p;
        while (idchar(*p)) p++;
        return std::string(b, p);
    }
    Value value(int depth) {
        ws();
        Value v;
        if (*p == '(' || *p == '[') {
            if (depth >= SPEC_MAX_DEPTH)
                fail(format("tuples nested deeper than %d levels", SPEC_MAX_DEPTH).c_str());
            char close = *p == '(' ? ')' : ']';
            p++;
            v.kind = Value::TUPLE;
            ws();
            while (*p != close) {
                v.items.push_back(value(depth + 1));
                ws();
                if (*p == ',') {
                    p++;
                    ws();
                } else if (*p != close) {
                    fail("expected ',' or the closing bracket");
                }
            }
            p++;
        } else if (*p == '\'' || *p == '"') {
            char q = *p++;
            const char *b = p;
            while (*p && *p != q) p++;
            if (!*p) fail("unterminated string");
            v.kind = Value::STR;
            v.str.assign(b, p);
            p++;
        } else if ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.') {
            const char *end;
            v.num = c_strtod(p, &end);
            if (end == p) fail("expected a number");
            p = end;
            v.kind = Value::NUM;
        } else if (idstart(*p)) {
            const char *save = p;
            std::string w = ident();
            ws();
            if (*p == '(') { /* a nested layer: Bidirectional(LSTM(8)) */
                if (depth >= SPEC_MAX_DEPTH)
                    fail(format("calls nested deeper than %d levels", SPEC_MAX_DEPTH).c_str());
                p = save;
                v.kind = Value::CALL;
                v.call = std::make_shared<const Spec>(call(depth + 1));
            } else if (w == "True" || w == "true") {
                v.kind = Value::BOOL;
                v.num = 1;
            } else if (w == "False" || w == "false") {
                v.kind = Value::BOOL;
            } else if (w == "None" || w == "null") {
                v.kind = Value::NONE;
            } else if (w == "inf" || w == "nan") {
                v.kind = Value::NUM;
                v.num = w == "inf" ? INFINITY : NAN;
            } else {
                v.kind = Value::STR;
                v.str = w;
            }
        } else {
            fail("expected a value");
        }
        return v;
    }

    /* Name or Name(args): a layer, at the top or nested in a wrapper's arguments */
    Spec call(int depth) {
        Spec sp;
        sp.name = ident();
        ws();
        if (*p == '(') {
            p++;
            ws();
            while (*p != ')') {
                const char *save = p;
                if (idstart(*p)) {
                    std::string k = ident();
                    ws();
                    if (*p == '=') {
                        p++;
                        for (auto &kv : sp.kw)
                            if (kv.first == k) fail("argument given twice");
                        sp.kw.emplace_back(k, value(depth));
                        goto next;
                    }
                    p = save;
                }
                if (!sp.kw.empty()) fail("positional argument after keyword argument");
                sp.pos.push_back(value(depth));
            next:
                ws();
                if (*p == ',') {
                    p++;
                    ws();
                } else if (*p != ')') {
                    fail("expected ',' or ')'");
                }
            }
            p++;
        }
        return sp;
    }

public:
    explicit SpecParser(const char *text) : s(text), p(text) {}
    Spec parse() {
        Spec sp = call(0);
        ws();
        if (*p) fail("unexpected text after the closing ')'");
        return sp;
    }
};

static Spec parse_spec(const char *text) {
    NNL_REQUIRE(text && *text, NNL_ERR_ARGUMENT, "empty specification string");
    return SpecParser(text).parse();
}

static std::string lower(std::string s) {
    for (auto &c : s) c = (char)tolower((unsigned char)c);
    return s;
}

/* Length of the well-formed UTF-8 sequence at s[i] (1..4), or 0 where the
   bytes there are not one (stray continuation bytes, overlong forms,
   surrogates, code points past U+10FFFF, a sequence cut short). */
static size_t utf8_seq(const std::string &s, size_t i) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else return 0;
    if (i + n > s.size()) return 0;
    unsigned char c1 = (unsigned char)s[i + 1];
    if (c1 < lo || c1 > hi) return 0;
    for (size_t k = 2; k < n; k++)
        if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
    return n;
}

static bool valid_utf8(const std::string &s) {
    for (size_t i = 0, n; i < s.size(); i += n)
        if (!(n = utf8_seq(s, i))) return false;
    return true;
}

/* s for a message: bytes that are not UTF-8 (and control characters) as \xNN. */
static std::string printable(const std::string &s) {
    std::string o;
    for (size_t i = 0, n; i < s.size(); i += n) {
        n = utf8_seq(s, i);
        if (n == 0 || (unsigned char)s[i] < 0x20 || s[i] == 0x7F) {
            o += format("\\x%02x", (unsigned char)s[i]);
            n = 1;
        } else {
            o.append(s, i, n);
        }
    }
    return o;
}

/* Typed access to a Spec's arguments. Each argument has a keyword and an
   optional position (as in the Keras constructor); done() rejects anything
   the reader did not ask for, so typos never pass silently. */
class Args {
    const Spec &sp;
    std::vector<bool> used_kw, used_pos;
    const char *owner;

public:
    Args(const Spec &s, const char *owner_name)
        : sp(s), used_kw(s.kw.size()), used_pos(s.pos.size()), owner(owner_name) {}
    const Value *get(const char *key, int pos = -1) {
        for (size_t i = 0; i < sp.kw.size(); i++)
            if (sp.kw[i].first == key) {
                if (pos >= 0 && pos < (int)sp.pos.size())
                    raise(NNL_ERR_ARGUMENT, "%s: argument '%s' given by position and by name", owner, key);
                used_kw[i] = true;
                return &sp.kw[i].second;
            }
        if (pos >= 0 && pos < (int)sp.pos.size()) {
            used_pos[pos] = true;
            return &sp.pos[pos];
        }
        return nullptr;
    }
    bool has(const char *key, int pos = -1) {
        for (auto &kv : sp.kw)
            if (kv.first == key) return true;
        return pos >= 0 && pos < (int)sp.pos.size();
    }
    double num(const char *key, int pos, double def) {
        const Value *v = get(key, pos);
        if (!v || v->kind == Value::NONE) return def;
        if (v->kind != Value::NUM && v->kind != Value::BOOL)
            raise(NNL_ERR_ARGUMENT, "%s: '%s' must be a number, got %s", owner, key, v->repr().c_str());
        return v->num;
    }
    int64_t integer(const char *key, int pos, int64_t def) {
        double d = num(key, pos, (double)def);
        if (d != std::floor(d) || std::fabs(d) > 9e15)
            raise(NNL_ERR_ARGUMENT, "%s: '%s' must be an integer, got %g", owner, key, d);
        return (int64_t)d;
    }
    bool flag(const char *key, int pos, bool def) {
        const Value *v = get(key, pos);
        if (!v || v->kind == Value::NONE) return def;
        if (v->kind != Value::BOOL && v->kind != Value::NUM)
            raise(NNL_ERR_ARGUMENT, "%s: '%s' must be True or False", owner, key);
        return v->num != 0;
    }
    std::string str(const char *key, int pos, const std::string &def) {
        const Value *v = get(key, pos);
        if (!v || v->kind == Value::NONE) return def;
        if (v->kind != Value::STR)
            raise(NNL_ERR_ARGUMENT, "%s: '%s' must be a string, got %s", owner, key, v->repr().c_str());
        return v->str;
    }
    /* A tuple of integers, or one integer. Empty when absent. */
    std::vector<int64_t> ints(const char *key, int pos) {
        const Value *v = get(key, pos);
        std::vector<int64_t> out;
        if (!v || v->kind == Value::NONE) return out;
        auto one = [&](const Value &x) {
            if (x.kind == Value::NONE) return (int64_t)-1; /* Keras' batch dimension None */
            /* |x| <= 9e15: exact in a double, and the cast below is defined */
            if (x.kind != Value::NUM || x.num != std::floor(x.num) || std::fabs(x.num) > 9e15)
                raise(NNL_ERR_ARGUMENT, "%s: '%s' must hold integers of at most 9e15, got %s", owner, key,
                      v->repr().c_str());
            return (int64_t)x.num;
        };
        if (v->kind == Value::TUPLE)
            for (auto &x : v->items) out.push_back(one(x));
        else
            out.push_back(one(*v));
        return out;
    }
    /* A nested layer, as Keras' wrappers take one (Bidirectional(LSTM(8))).
       NULL when absent. */
    const Spec *layer(const char *key, int pos) {
        const Value *v = get(key, pos);
        if (!v || v->kind == Value::NONE) return nullptr;
        if (v->kind != Value::CALL)
            raise(NNL_ERR_ARGUMENT, "%s: '%s' must be a layer such as LSTM(8), got %s", owner, key, v->repr().c_str());
        return v->call.get();
    }
    void done() {
        for (size_t i = 0; i < sp.kw.size(); i++)
            if (!used_kw[i]) raise(NNL_ERR_ARGUMENT, "%s: unknown argument '%s'", owner, sp.kw[i].first.c_str());
        for (size_t i = 0; i < sp.pos.size(); i++)
            if (!used_pos[i])
                raise(NNL_ERR_ARGUMENT, "%s: too many positional arguments (%d given)", owner, (int)sp.pos.size());
    }
};

/* ---- Sizes -----------------------------------------------------------------
   Every size that enters from a caller (array shapes), a spec string or a
   file is checked once, where it enters, with overflow-safe arithmetic:
   a per-sample shape or a weight tensor holds at most MAX_VALUES values, a
   caller's array at most MAX_ELEMENTS. After that the plain int64 arithmetic
   of the layers and the training loop cannot overflow. mul_size/add_size
   return -1 on overflow or a negative operand, so checks compose:
   mul_size(mul_size(a, b), c) < 0 when any step fails. */
static const int64_t MAX_VALUES = (int64_t)1 << 40;   /* 4 TiB of float32: beyond any memory */
static const int64_t MAX_ELEMENTS = INT64_MAX / 8;    /* elements of 8 bytes or less stay addressable */

static int64_t mul_size(int64_t a, int64_t b) {
    int64_t r;
    if (a < 0 || b < 0) return -1;
#if defined(__GNUC__) || defined(__clang__)
    if (__builtin_mul_overflow(a, b, &r)) return -1;
#else
    if (b != 0 && a > INT64_MAX / b) return -1;
    r = a * b;
#endif
    return r;
}

/* std::allocator's counterpart with storage on a 64-byte line (a cache
   line, one AVX-512 vector): the weight arenas */
template <class T> struct LineAlloc {
    using value_type = T;
    LineAlloc() = default;
    template <class U> LineAlloc(const LineAlloc<U> &) {}
    T *allocate(size_t n) { return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U> bool operator==(const LineAlloc<U> &) const { return true; }
    template <class U> bool operator!=(const LineAlloc<U> &) const { return false; }
};
using LineVector = std::vector<float, LineAlloc<float>>;

static int64_t add_size(int64_t a, int64_t b) {
    if (a < 0 || b < 0 || a > INT64_MAX - b) return -1;
    return a + b;
}

/* Per-sample shape; the batch dimension is kept apart. */
struct Shape {
    int rank = 0;
    int64_t d[NNL_MAX_RANK] = {0};
    Shape() = default;
    Shape(std::initializer_list<int64_t> l) {
        for (int64_t x : l) d[rank++] = x;
    }
    static Shape of(int r, const int64_t *dims) {
        NNL_REQUIRE(r >= 0 && r <= NNL_MAX_RANK, NNL_ERR_SHAPE, "rank %d is out of range 0..%d", r, NNL_MAX_RANK);
        Shape s;
        s.rank = r;
        for (int i = 0; i < r; i++) s.d[i] = dims[i];
        return s;
    }
    int64_t size() const {
        int64_t n = 1;
        for (int i = 0; i < rank; i++) n *= d[i];
        return n;
    }
    /* size() for shapes not checked yet: -1 when a dimension is negative or
       the product overflows int64 */
    int64_t checked_size() const {
        int64_t n = 1;
        for (int i = 0; i < rank; i++) n = mul_size(n, d[i]);
        return n;
    }
    int64_t last() const { return rank ? d[rank - 1] : 1; }
    bool operator==(const Shape &o) const {
        if (rank != o.rank) return false;
        for (int i = 0; i < rank; i++)
            if (d[i] != o.d[i]) return false;
        return true;
    }
    bool operator!=(const Shape &o) const { return !(*this == o); }
    /* Keras style: (None, 28, 28); var: the first axis is None too (a
       variable length: (None, None, 8)) */
    std::string str(bool batch = true, bool var = false) const {
        std::string s = batch ? "(None" : "(";
        for (int i = 0; i < rank; i++)
            s += (batch || i ? ", " : "") + (var && i == 0 ? std::string("None") : format("%lld", (long long)d[i]));
        if (!batch && rank == 1) s += ",";
        return s + ")";
    }
};

static Shape shape_from_ints(const std::vector<int64_t> &v, const char *owner) {
    NNL_REQUIRE(!v.empty() && v.size() <= NNL_MAX_RANK, NNL_ERR_SHAPE, "%s: shape must have 1..%d dimensions", owner,
                NNL_MAX_RANK);
    Shape s;
    for (int64_t x : v) {
        NNL_REQUIRE(x > 0 && x < ((int64_t)1 << 40), NNL_ERR_SHAPE, "%s: dimension %lld is not a positive size",
                    owner, (long long)x);
        s.d[s.rank++] = x;
    }
    int64_t n = s.checked_size();
    NNL_REQUIRE(n >= 0 && n <= MAX_VALUES, NNL_ERR_SHAPE,
                "%s: shape %s holds more than 2^40 values per sample (the product of its dimensions%s)", owner,
                s.str(false).c_str(), n < 0 ? " overflows int64" : format(" is %lld", (long long)n).c_str());
    return s;
}

} // namespace nnl

/* ========================================================================
   2  Kernels
   All arithmetic of the layers, losses and optimizers goes through this
   table. Arrays are row-major float32; sizes are element counts.
   ======================================================================== */
namespace nnl {

enum Act {
    ACT_LINEAR, ACT_RELU, ACT_SIGMOID, ACT_TANH, ACT_SOFTMAX, ACT_LEAKY_RELU, ACT_ELU, ACT_SELU,
    ACT_GELU, ACT_SOFTPLUS, ACT_SOFTSIGN, ACT_SWISH, ACT_HARD_SIGMOID, ACT_EXPONENTIAL, ACT_COUNT
};

static const char *const act_names[ACT_COUNT] = {"linear", "relu", "sigmoid", "tanh", "softmax",
                                                "leaky_relu", "elu", "selu", "gelu", "softplus",
                                                "softsign", "swish", "hard_sigmoid", "exponential"};

static Act parse_act(const std::string &name_in, const char *owner) {
    std::string name = lower(name_in);
    if (name.empty() || name == "none") return ACT_LINEAR;
    if (name == "silu") return ACT_SWISH;
    for (int i = 0; i < ACT_COUNT; i++)
        if (name == act_names[i]) return (Act)i;
    std::string all;
    for (int i = 0; i < ACT_COUNT; i++) all += std::string(i ? ", " : "") + act_names[i];
    raise(NNL_ERR_ARGUMENT, "%s: unknown activation '%s' (known: %s)", owner, name_in.c_str(), all.c_str());
}

/* Geometry of a convolution or pooling window over up to three spatial
   axes, channels last; 1-D and 2-D use leading axes of size 1. pad is the
   padding before each axis (the rest, if any, falls after it). */
struct Window {
    int64_t C = 1;
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1};
    int64_t k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
    int64_t in_size() const { return in[0] * in[1] * in[2]; }
    int64_t out_size() const { return out[0] * out[1] * out[2]; }
    int64_t kvol() const { return k[0] * k[1] * k[2]; }
};

/* Max pooling keeps, for each output, which tap of its window it took: one
   byte when the window has fewer than 255 taps (every Keras model's 2x2 or
   3x3), else four (all ones: no tap). A quarter of an int32 input index:
   K-CNN's pooling keeps 1.1 MB instead of 4.4 MB at batch 120, at the
   step's peak. nnlite_cuda.cu decides the same way (pool_arg_bytes). */
static inline int pool_arg_bytes(const Window &g) { return g.kvol() < 255 ? 1 : 4; }

/* One LSTM or GRU step over the B rows of a batch, as Recurrent lays it out
   (the Kernels' lstm_forward, lstm_backward, gru_forward, gru_backward):
   row b of each array at p + b * ld. */
struct CellArgs {
    int64_t B = 0, u = 0, T = 0, t = 0, s = 0; /* rows, units, steps, the step's time index and number */
    Act act = ACT_TANH, ract = ACT_SIGMOID;
    float *Z = nullptr;                      /* the step's gates (B, g u), stride ldz */
    const float *hp = nullptr, *cp = nullptr; /* h_{s-1} (stride ldh), c_{s-1} (stride ldcp) */
    float *c = nullptr, *h = nullptr;        /* c_s (stride ldh), h_s (stride ldhn) */
    int64_t ldz = 0, ldh = 0, ldcp = 0, ldhn = 0;
    const float *mask = nullptr;             /* the step mask (B, T) or NULL */
    float *y = nullptr;                      /* forward: the output */
    const float *dy = nullptr;               /* backward: the output's gradient */
    float *dh = nullptr, *dc = nullptr;      /* backward: dL/dh, dL/dc (B, u) */
    float *tg = nullptr, *tmp = nullptr;     /* backward scratch (B, g u), (B, u) */
    bool seq = false, zero_masked = false, first = false;
    /* GRU: rb the recurrent product's rows (B, 3u with reset_after, else B,
       2u), hr h_{s-1} as the recurrent products saw it (recurrent_dropout's
       mask applied; stride ldh), R the step's row of Recurrent's R (stride
       ldh), dn dL/dh_{s-1} being built (B, u); phase: the part of the step
       before (0) or after (1) the product that reset_after=False puts
       between; drop_h: recurrent_dropout in this batch (phase 1 leaves
       the masked part to the caller's mul_rows) */
    const float *rb = nullptr, *hr = nullptr;
    float *R = nullptr, *dn = nullptr;
    int phase = 0;
    bool reset_after = false, drop_h = false;
};

struct Kernels {
    const char *name;
    /* C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C; op transposes when ta/tb. */
    void (*sgemm)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
    /* C[M,N] = act(A[M,K] B[K,N] + bias) (bias may be NULL): the bias and an
       elementwise activation applied while each block of C is in cache */
    void (*sgemm_bias_act)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float *C, int64_t ldc, const float *bias, Act act);
    /* y[r, :] += b for rows r < rows, row length n */
    void (*bias_add)(float *y, const float *b, int64_t rows, int64_t n);
    /* db[j] = sum_r dy[r, j] */
    void (*bias_grad)(const float *dy, float *db, int64_t rows, int64_t n);
    /* y = act(x) elementwise (softmax over rows of length n) */
    void (*act_forward)(Act a, const float *x, float *y, int64_t rows, int64_t n);
    /* dx = dy * act'(x); y = act(x) is given too (softmax uses y only) */
    void (*act_backward)(Act a, const float *x, const float *y, const float *dy, float *dx, int64_t rows, int64_t n);
    /* mask[i] = 0 with probability rate else 1/(1-rate); y = x * mask */
    /* the mask's seed is mix64(step ^ salt): the training step's seed and
       the layer's bits apart, so that a GPU keeps the step's in device
       memory (a CUDA graph replays the step with a new one) */
    void (*dropout_forward)(const float *x, float *y, float *mask, int64_t n, float rate, uint64_t step,
                            uint64_t salt);
    void (*mul)(const float *a, const float *b, float *y, int64_t n); /* y = a*b */
    /* ReLU's derivative kept as one bit a value: bit i % 32 of bits[i / 32]
       is y[i] > 0 (i < n; the last word's spare bits 0); then dx = dy * 1
       or dy * 0 by the bit, as act_backward gives for a ReLU whose output
       is not NaN (dx may be dy) */
    void (*relu_bits)(const float *y, uint32_t *bits, int64_t n);
    void (*relu_bits_backward)(const uint32_t *bits, const float *dy, float *dx, int64_t n);
    void (*copy)(const float *x, float *y, int64_t n);
    /* sum of squares, and whether every value is finite */
    double (*sumsq)(const float *x, int64_t n, bool *finite);
    /* ---- convolution, pooling, normalisation (channels-last layouts) ---- */
    /* per sample, the R x C matrix x becomes the C x R matrix y */
    void (*transpose)(const float *x, float *y, int64_t batch, int64_t R, int64_t C);
    /* col[n*P, kvol*C] from n samples x[n, in..., C] (zeros where padded) */
    void (*im2col)(const Window &g, const float *x, float *col, int64_t n);
    /* dx[n, in..., C] = the sum of col's entries over the windows (overwrites dx) */
    void (*col2im)(const Window &g, const float *col, float *dx, int64_t n);
    /* max (arg: which tap of its window each output chose, as
       pool_arg_bytes(g)-byte unsigned integers, all ones for none) or
       average (over the unpadded entries) of each window */
    void (*pool_forward)(const Window &g, bool max, const float *x, float *y, void *arg, int64_t n);
    void (*pool_backward)(const Window &g, bool max, const float *dy, const void *arg, float *dx, int64_t n);
    /* biased mean and variance of each column of x[rows, C] */
    void (*moments)(const float *x, int64_t rows, int64_t C, float *mean, float *var);
    /* y[r, c] = x[r, c] * scale[c] + shift[c] */
    void (*scale_shift)(const float *x, float *y, int64_t rows, int64_t C, const float *scale, const float *shift);
    /* batch-norm backward with batch statistics (training) or fixed ones:
       dgamma/dbeta may be NULL (no scale/center), gamma NULL means 1 */
    void (*bn_backward)(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                        const float *invstd, const float *gamma, float *dgamma, float *dbeta, bool training);
    /* batch norm's per-channel step between moments and scale_shift. In
       training, mean and invstd hold the batch's mean and variance: the
       moving statistics mm, mv move by momentum, invstd = 1 / sqrt(var +
       eps); otherwise mean = mm, invstd = 1 / sqrt(mv + eps). Then scl =
       gamma * invstd, sh = beta - mean * scl (gamma NULL: 1, beta NULL: 0) */
    void (*bn_prepare)(bool training, int64_t C, float momentum, float eps, float *mm, float *mv, const float *gamma,
                       const float *beta, float *mean, float *invstd, float *scl, float *sh);
    /* ---- global pooling, padding, upsampling ---- */
    /* y[b, c] = max or mean over s of x[b, s, c] (cf: x[b, c, s]), B samples
       of S positions and C channels; backward: max gives dy to the first
       position holding y (NaN matches NaN), 0 to the others; average dy / S */
    void (*global_pool_forward)(bool max, bool cf, const float *x, float *y, int64_t B, int64_t S, int64_t C);
    void (*global_pool_backward)(bool max, bool cf, const float *x, const float *y, const float *dy, float *dx,
                                 int64_t B, int64_t S, int64_t C);
    /* n blocks (H, W, inner) x become (H + t + bo, W + l + r, inner) y with
       zeros around; backward crops dy back to dx */
    void (*zero_pad_forward)(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                             int64_t bo, int64_t l, int64_t r);
    void (*zero_pad_backward)(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                              int64_t bo, int64_t l, int64_t r);
    /* nearest upsampling of n blocks (H, W, inner) by (sh, sw); backward
       sums each sh x sw block of dy (rows, then columns, in order) */
    void (*upsample_forward)(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                             int64_t sw);
    void (*upsample_backward)(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                              int64_t sw);
    /* ---- Embedding and Masking ---- */
    /* y[r, :] = E[ids[r], :] for rows r, row length dim; ids are floats,
       integral and in range (Embedding::check_input ran on the host before
       they went anywhere) */
    void (*embedding_forward)(const float *ids, const float *E, float *y, int64_t rows, int64_t dim);
    /* G (V, dim) = for each id the sum of the dy rows that hold it, added in
       row order (zero for the ids absent); marks (HOST memory, may be NULL):
       marks[id] = 1 for every id present (Layer::grad_rows) */
    void (*embedding_grad)(const float *ids, const float *dy, float *G, int64_t rows, int64_t V, int64_t dim,
                           uint8_t *marks);
    /* steps rows of F values: mask[r] = 1 when some value of row r differs
       from value, else 0; y (may be NULL: the mask alone) = the row where
       kept, zeros where masked */
    void (*masking_forward)(const float *x, float *y, float *mask, int64_t steps, int64_t F, float value);
    /* dx[r, :] = mask[r] != 0 ? dy[r, :] : 0 */
    void (*masking_backward)(const float *mask, const float *dy, float *dx, int64_t steps, int64_t F);
    /* ---- recurrent layers (Recurrent) ---- */
    /* B rows of u values: dst[b * ldd + j] = src[b * lds + j], or 0 when src
       is NULL; with a step mask (B, T; may be NULL) only the rows b masked
       at time t (mask[b * T + t] == 0) */
    void (*rnn_rows)(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u,
                     const float *mask, int64_t T, int64_t t);
    /* one LSTM step (Recurrent::forward) over B rows, after the recurrent
       GEMM: the pre-activations Z become the gates i, f, g, o; c = f cp + i
       g, h = o act(c) into C and H; a row masked at t keeps hp and cp; the
       output y at step s (return_sequences: (B, T, u) rows, zeros for
       masked rows with zero_masked; else (B, u) at the last step) */
    void (*lstm_forward)(const CellArgs &a);
    /* its backward for step s (Recurrent::backward): dh += the output's
       gradient, then Z (the gates) becomes the pre-activations' gradients
       and dc dL/dc_{s-1}; a masked row's Z becomes 0 and dh, dc pass on.
       first (the last step): dh and dc start at zero. tg, tmp: scratch
       (B x 4u, B x u; the CPU's, unused on a GPU) */
    void (*lstm_backward)(const CellArgs &a);
    /* one GRU step (Keras' GRUCell, reset_after either way), after the
       recurrent product rb: phase 0 adds rb into the z and r columns and
       activates them, then R = the recurrent h part (reset_after, and
       pre(hh) += r R) or r hr; with reset_after, or in phase 1 (after
       pre(hh) += (r hr) U_h), hh = act(pre(hh)), h = z hp + (1 - z) hh, a
       masked row keeps hp, and the output as lstm_forward */
    void (*gru_forward)(const CellArgs &a);
    /* its backward. Phase 0: dh (first: from zero) += the output's
       gradient; tg = the gates; Z becomes dz, dr (reset_after: through
       ract'), d pre(hh); dn = dh z; with reset_after R becomes the recurrent
       h part's gradient; a masked row: Z and R 0, dn = dh. Phase 1
       (reset_after=False), tmp holding d(r h_{s-1}): dr = tmp hr, dn += tmp
       r (drop_h: tmp *= r instead, added later through the mask), then z's
       and r's act'. */
    void (*gru_backward)(const CellArgs &a);
    /* one SimpleRNN step: forward h = act(Z) (Z keeps it too), a masked row
       keeps hp, the output as lstm_forward; backward dh (first: from zero)
       += the output's gradient, tg = Z, Z = dh act'(h), a masked row's Z 0 */
    void (*simple_forward)(const CellArgs &a);
    void (*simple_backward)(const CellArgs &a);
    /* dropout and recurrent_dropout's masks (Recurrent::draw_mask): mask[i]
       = 0 when the top 24 bits of dropout_forward's hash of (seed, i) fall
       below rate * 2^24, else 1/(1-rate): dropout_forward's mask alone */
    void (*dropout_mask)(float *mask, int64_t n, float rate, uint64_t seed);
    /* rows of n values times a mask row shared by rep consecutive rows:
       y[r * ldy + j] = a[r * lda + j] * m[(r / rep) * ldm + j], or += with
       add (y may be a) */
    void (*mul_rows)(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y, int64_t ldy,
                     int64_t rows, int64_t n, bool add);
    void (*add)(const float *a, const float *b, float *y, int64_t n); /* y = a + b */
    /* Bidirectional's merge of B samples of T rows of u values (T = 1: the
       last outputs): f the forward copy's rows in time order, b the
       backward copy's in its processing order, so that row (s, t) of f
       meets row (s, T-1-t) of b. mode: 0 concat (y rows of 2u: f then b),
       1 sum, 2 mul, 3 ave ((f + b) / 2). Backward: df, db (each in its
       copy's order, as f and b) from dy: concat splits, sum and ave give
       dy and dy / 2 to both, mul dy b to f and dy f to b */
    void (*bidir_merge)(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u);
    void (*bidir_split)(int mode, const float *dy, const float *f, const float *b, float *df, float *db, int64_t B,
                        int64_t T, int64_t u);
};

/* ---- SGEMM: packed and cache-blocked (BLIS' loop order) -----------------
   Loops: columns by NC, depth by KC (B packed into NR-wide panels), rows by
   MC (A packed into MR-high panels), then MR x NR register tiles computed by
   a micro-kernel. The AVX2+FMA micro-kernel is chosen at run time; the
   portable one is plain C++. Threads split the register tiles. */
static void bias_act_rows(float *C, int64_t ldc, int64_t rows, int64_t n, const float *bias, Act act);

/* The epilogue of a GEMM block: bias, then activation, on rows of C (one
   vectorised pass; section "Activations" below). */
static void epilogue(float *C, int64_t ldc, int64_t rows, int64_t n, const float *bias, Act act) {
    bias_act_rows(C, ldc, rows, n, bias, act);
}

namespace gemm {
constexpr int MR = 6, NR = 16, KC = 256, MC = 192, NC = 3072;

struct Buffers {
    float *bp = nullptr, *ap = nullptr;
    size_t bp_n = 0, ap_n = 0;
    ~Buffers() {
        free(bp);
        free(ap);
    }
    static float *grow(float *p, size_t &have, size_t need) {
        if (need <= have) return p;
        free(p);
        void *q = nullptr;
        if (posix_memalign(&q, 64, need * sizeof(float)) != 0) throw std::bad_alloc();
        have = need;
        return (float *)q;
    }
};
/* Packing buffers, per calling thread, grown once and reused: no allocation
   per call in steady state. */
static thread_local Buffers tl_buf;

static inline float at(const float *X, int64_t ld, bool t, int64_t r, int64_t c) {
    return t ? X[c * ld + r] : X[r * ld + c];
}

/* Ap: panels of MR rows, each kc x MR (k-major), zero padded. */
static void pack_a(bool ta, const float *A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc, float *Ap,
                   int64_t panel) {
    int64_t p = panel * MR, mr = std::min<int64_t>(MR, mc - p);
    float *dst = Ap + panel * MR * kc;
    if (!ta && mr == MR) { /* six rows side by side: the writes stay sequential */
        const float *s0 = A + (i0 + p) * lda + k0, *s1 = s0 + lda, *s2 = s1 + lda, *s3 = s2 + lda, *s4 = s3 + lda,
                    *s5 = s4 + lda;
        for (int64_t k = 0; k < kc; k++, dst += MR) {
            dst[0] = s0[k], dst[1] = s1[k], dst[2] = s2[k];
            dst[3] = s3[k], dst[4] = s4[k], dst[5] = s5[k];
        }
        return;
    }
    if (!ta) {
        for (int64_t r = 0; r < mr; r++) {
            const float *src = A + (i0 + p + r) * lda + k0;
            for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = src[k];
        }
    } else {
        for (int64_t k = 0; k < kc; k++) {
            const float *src = A + (k0 + k) * lda + i0 + p;
            for (int64_t r = 0; r < mr; r++) dst[k * MR + r] = src[r];
        }
    }
    if (mr < MR)
        for (int64_t k = 0; k < kc; k++)
            for (int64_t r = mr; r < MR; r++) dst[k * MR + r] = 0.f;
}

#if NNL_X86
/* A whole panel of B^T (tb): dst[k * 16 + c] = src[c * ld + k] for c < 16,
   k < kc, sixteen 16 x 16 blocks transposed in registers (the scalar copy
   wrote a float at a time, 16 floats apart: the products with B^T, the
   input gradients of Dense layers, lost 5-10 % to it). */
__attribute__((target("avx512f"))) static void pack_bt16_avx512(const float *src, int64_t ld, int64_t kc,
                                                                 float *dst) {
    /* (the zero-masked forms with every lane kept: the plain ones make GCC 12
       warn of an uninitialised value inside the intrinsic) */
    const __mmask16 all = 0xFFFF;
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 r[16], t[16], u[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld + k);
        /* per 128-bit lane: t[2i] = (r2i[0] r2i+1[0] r2i[1] r2i+1[1]), t[2i+1] the same of [2], [3] */
#pragma GCC unroll 8
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_maskz_unpacklo_ps(all, r[i], r[i + 1]);
            t[i + 1] = _mm512_maskz_unpackhi_ps(all, r[i], r[i + 1]);
        }
        /* u[4g + q], lane L: element 4L + q of rows 4g .. 4g + 3 */
#pragma GCC unroll 4
        for (int g = 0; g < 16; g += 4) {
            u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
            u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
            u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
            u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
        }
        /* column 4L + q: lane L of u[q], u[4 + q], u[8 + q], u[12 + q] */
        float *d = dst + k * 16;
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            __m512 v0 = _mm512_maskz_shuffle_f32x4(all, u[q], u[4 + q], 0x88);
            __m512 v1 = _mm512_maskz_shuffle_f32x4(all, u[q], u[4 + q], 0xDD);
            __m512 w0 = _mm512_maskz_shuffle_f32x4(all, u[8 + q], u[12 + q], 0x88);
            __m512 w1 = _mm512_maskz_shuffle_f32x4(all, u[8 + q], u[12 + q], 0xDD);
            _mm512_store_ps(d + q * 16, _mm512_maskz_shuffle_f32x4(all, v0, w0, 0x88));        /* lane 0 */
            _mm512_store_ps(d + (8 + q) * 16, _mm512_maskz_shuffle_f32x4(all, v0, w0, 0xDD));  /* lane 2 */
            _mm512_store_ps(d + (4 + q) * 16, _mm512_maskz_shuffle_f32x4(all, v1, w1, 0x88));  /* lane 1 */
            _mm512_store_ps(d + (12 + q) * 16, _mm512_maskz_shuffle_f32x4(all, v1, w1, 0xDD)); /* lane 3 */
        }
    }
    for (; k < kc; k++)
        for (int c = 0; c < 16; c++) dst[k * 16 + c] = src[c * ld + k];
}
/* Whether the AVX-512 micro-kernels are used (pick_ukr) and pack_b may use
   pack_bt16_avx512: NNL_SIMD=avx2 caps the choice (to compare kernels),
   NNL_NO_SIMD takes the portable code */
static bool avx512_kernels() {
    const char *simd = getenv("NNL_SIMD");
    return !getenv("NNL_NO_SIMD") && __builtin_cpu_supports("avx512f") && !(simd && !strcmp(simd, "avx2"));
}
static const bool pack_bt16 = avx512_kernels();
#endif

/* Bp: panels of NR columns, each kc x NR (k-major), zero padded. */
static void pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc, float *Bp,
                   int64_t panel) {
    int64_t j = panel * NR, nr = std::min<int64_t>(NR, nc - j);
    float *dst = Bp + panel * NR * kc;
    if (!tb && nr == NR) { /* a whole panel: a fixed-width copy per row (vector moves, no loop per row) */
        const float *src = B + k0 * ldb + j0 + j;
        for (int64_t k = 0; k < kc; k++, src += ldb) memcpy(dst + k * NR, src, NR * sizeof(float));
#if NNL_X86
    } else if (tb && nr == NR && pack_bt16) {
        static_assert(NR == 16, "pack_bt16_avx512 packs 16-wide panels");
        pack_bt16_avx512(B + (j0 + j) * ldb + k0, ldb, kc, dst);
#endif
    } else if (!tb) {
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (k0 + k) * ldb + j0 + j;
            int64_t c = 0;
            for (; c < nr; c++) dst[k * NR + c] = src[c];
            for (; c < NR; c++) dst[k * NR + c] = 0.f;
        }
    } else {
        for (int64_t c = 0; c < nr; c++) {
            const float *src = B + (j0 + j + c) * ldb + k0;
            for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = src[k];
        }
        for (int64_t c = nr; c < NR; c++)
            for (int64_t k = 0; k < kc; k++) dst[k * NR + c] = 0.f;
    }
}

/* Writes an MR x NR accumulator tile into C (mr x nr valid). */
static inline void store_tile(const float *acc, float *C, int64_t ldc, float alpha, float beta, int64_t mr, int64_t nr) {
    for (int64_t r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        const float *a = acc + r * NR;
        if (beta == 0.f)
            for (int64_t j = 0; j < nr; j++) c[j] = alpha * a[j];
        else
            for (int64_t j = 0; j < nr; j++) c[j] = alpha * a[j] + beta * c[j];
    }
}

/* Micro-kernels: C[mr, nr] = alpha * A B + beta * C for an MR x NR tile over
   kc steps. B is packed (NR-wide, k-major). A is packed (rs = 1, cs = MR),
   or read in place from a row-major matrix (rs = lda, cs = 1): skipping
   A's packing pays when N is small, as in convolutions with few filters. */
static void ukr_generic(int64_t kc, const float *a, int64_t rs, int64_t cs, const float *b, float *C, int64_t ldc,
                        float alpha, float beta, int64_t mr, int64_t nr) {
    float acc[MR * NR] = {0};
    for (int64_t k = 0; k < kc; k++, b += NR)
        for (int r = 0; r < MR; r++) {
            float av = a[r * rs + k * cs];
            for (int j = 0; j < NR; j++) acc[r * NR + j] += av * b[j];
        }
    store_tile(acc, C, ldc, alpha, beta, mr, nr);
}

#if NNL_X86
/* The first n (<= 8) columns of a tile row: c = alpha acc + beta c, the
   full tiles' formula, with a masked load and the stores element by element
   (a masked store, VMASKMOVPS, costs more than ten plain ones on AMD Zen
   2/3) */
__attribute__((target("avx2,fma"))) static inline void store_part_avx2(float *c, __m256 acc, __m256 va, __m256 vb,
                                                                        float beta, int64_t n) {
    __m256 v = _mm256_mul_ps(va, acc);
    if (beta != 0.f) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        v = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, m), v);
    }
    if (n == 8) {
        _mm256_storeu_ps(c, v);
        return;
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int64_t j = 0; j < n; j++) c[j] = t[j];
}
__attribute__((target("avx2,fma"))) static void ukr_avx2(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                                          const float *b, float *C, int64_t ldc, float alpha,
                                                          float beta, int64_t mr, int64_t nr) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs, *a5 = a + 5 * rs;
    for (int64_t k = 0; k < kc; k++, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), x;
        int64_t o = k * cs;
        x = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    __m256 acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < 2; h++) {
                float *c = C + r * ldc + h * 8;
                __m256 v = _mm256_mul_ps(va, acc[2 * r + h]);
                if (beta != 0.f) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), v);
                _mm256_storeu_ps(c, v);
            }
        return;
    }
    /* partial tiles (a product's edges) by the same formula */
    for (int h = 0; h < 2 && h * 8 < nr; h++)
        for (int r = 0; r < MR && r < mr; r++)
            store_part_avx2(C + r * ldc + h * 8, acc[2 * r + h], va, vb, beta, std::min<int64_t>(8, nr - h * 8));
}
/* The last panel of a product whose width leaves at most 8 columns in it
   (R-LENET's 50 filters: 16 + 16 + 16 + 2; 20 filters: 16 + 4): a 6 x 8 tile
   over the first half of the packed 16-wide panel, half the multiply-adds of
   ukr_avx2 on columns that are only padding. Each element is the same
   k-ordered chain of fused multiply-adds as in ukr_avx2, stored by the same
   formula, so the results are the same bits. */
__attribute__((target("avx2,fma"))) static void ukr_avx2_n8(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                                             const float *b, float *C, int64_t ldc, float alpha,
                                                             float beta, int64_t mr, int64_t nr) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs, *a5 = a + 5 * rs;
    for (int64_t k = 0; k < kc; k++, b += NR) {
        __m256 b0 = _mm256_load_ps(b);
        int64_t o = k * cs;
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + o), b0, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + o), b0, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + o), b0, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + o), b0, c3);
        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a4 + o), b0, c4);
        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a5 + o), b0, c5);
    }
    __m256 acc[MR] = {c0, c1, c2, c3, c4, c5};
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int r = 0; r < MR && r < mr; r++) store_part_avx2(C + r * ldc, acc[r], va, vb, beta, nr);
}
/* AVX-512: the same 6 x 16 tile and packing, one zmm per row; k unrolled by
   two into separate accumulators so the FMA latency is hidden. */
__attribute__((target("avx512f"))) static void ukr_avx512(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                                           const float *b, float *C, int64_t ldc, float alpha,
                                                           float beta, int64_t mr, int64_t nr) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    __m512 d0 = c0, d1 = c0, d2 = c0, d3 = c0, d4 = c0, d5 = c0;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs, *a5 = a + 5 * rs;
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2, b += 2 * NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + NR);
        int64_t o = k * cs, p = o + cs;
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[o]), b0, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[o]), b0, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[o]), b0, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[o]), b0, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[o]), b0, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[o]), b0, c5);
        d0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[p]), b1, d0);
        d1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[p]), b1, d1);
        d2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[p]), b1, d2);
        d3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[p]), b1, d3);
        d4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[p]), b1, d4);
        d5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[p]), b1, d5);
    }
    if (k < kc) {
        __m512 b0 = _mm512_load_ps(b);
        int64_t o = k * cs;
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[o]), b0, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[o]), b0, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[o]), b0, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[o]), b0, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[o]), b0, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[o]), b0, c5);
    }
    __m512 acc[MR] = {_mm512_add_ps(c0, d0), _mm512_add_ps(c1, d1), _mm512_add_ps(c2, d2),
                      _mm512_add_ps(c3, d3), _mm512_add_ps(c4, d4), _mm512_add_ps(c5, d5)};
    /* partial tiles (a product's edges) with masks, by the same formula as
       whole ones: the edges of narrow products (20 or 50 filters) and short
       depths (a first convolution's 9 or 25) made the scalar path costly */
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m = nr >= NR ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        float *c = C + r * ldc;
        __m512 v = _mm512_mul_ps(va, acc[r]);
        if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), v);
        _mm512_mask_storeu_ps(c, m, v);
    }
}

/* Where a depth block after the first loads C (beta = 1), the thread's
   block of C is larger than NNL_GEMM_PREFETCH_C_B bytes (it has left the
   core's caches since the previous depth block touched it) and its rows are
   at least NNL_GEMM_PREFETCH_C_LD floats apart (a tile's six rows on six
   pages, where the hardware's prefetchers do not follow), the kernel asks
   for its tile of C as it starts: its loads of C at the end otherwise wait
   on memory. AMD EPYC (Zen 4) VM, GFLOP/s (gemm_bench, OpenBLAS Haswell in
   the same run): one thread 1024^3 86.1 -> 99.3 (107.5), 2048^3 86.6 ->
   100.7 (108.5); two threads 172.7 -> 180.3 (218.7), 167.4 -> 189.1
   (216.7). Products whose C stays in cache (K-MLP's, 128^3) lost 1-7 %
   with it, and the convolutions' narrow C (rows of 20-64 filters, one
   stream the hardware follows) 4-6 % of their training: hence both bounds. */
#ifndef NNL_GEMM_PREFETCH_C_B
#define NNL_GEMM_PREFETCH_C_B (512 << 10)
#endif
#ifndef NNL_GEMM_PREFETCH_C_LD
#define NNL_GEMM_PREFETCH_C_LD 512
#endif
/* Whether the kernel calls over a block of C (m x n, rows ldc apart)
   prefetch their tiles of C, in a depth block with this beta. */
static inline bool prefetch_c(int64_t m, int64_t n, int64_t ldc, float bet) {
    return bet != 0.f && ldc >= NNL_GEMM_PREFETCH_C_LD &&
           (double)m * (double)n * sizeof(float) > NNL_GEMM_PREFETCH_C_B;
}
/* prefetch_c for the kernel calls of the current depth block, set by
   sgemm_block and sgemm_packed (false again when they return) */
static thread_local bool tl_prefetch_c = false;

/* AVX-512, two B panels at once: a 6 x 32 tile. Per k step it loads two B
   vectors and six A values for twelve FMAs (the 6 x 16 kernel: one and six
   for six), so the FMA units, not the loads, set the pace. Each element is
   summed exactly as ukr_avx512 sums it (even and odd k apart, then added),
   so results do not depend on which kernel a tile got. b0 and b1 are the two
   packed panels; nr <= 2 * NR. PACK: b0 and b1 are written, not read: the
   two whole panels are read where they lie in a row-major B (bs, rows ldb
   apart, bs[k * ldb + j] for j < 2 * NR) and stored packed as they go (the
   loads have room beside the FMAs: a separate pass over B cost 3-5 % of
   K-MLP's products). The loops over MR are unrolled for GCC to keep the 24
   accumulators in registers (else it zeroes them on the stack and loads
   them back: 2-3 % of a call of 120 steps). */
template <bool PACK>
__attribute__((target("avx512f"))) static inline void ukr2_avx512_t(int64_t kc, const float *a, int64_t rs,
                                                                    int64_t cs, const float *b0p, const float *b1p,
                                                                    float *C, int64_t ldc, float alpha, float beta,
                                                                    int64_t mr, int64_t nr, const float *bs,
                                                                    int64_t ldb) {
    __m512 c[MR][2], d[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = d[r][0] = d[r][1] = _mm512_setzero_ps();
    const float *ar[MR] = {a, a + rs, a + 2 * rs, a + 3 * rs, a + 4 * rs, a + 5 * rs};
    if (tl_prefetch_c) /* (written here: GCC 12 drops prefetches inlined from a function of another target) */
        for (int r = 0; r < MR && r < mr; r++) {
            const char *p = (const char *)(C + r * ldc);
            _mm_prefetch(p, _MM_HINT_T0);
            _mm_prefetch(p + 64, _MM_HINT_T0);
            _mm_prefetch(p + 124, _MM_HINT_T0); /* a row of 32 floats not 64-byte aligned */
        }
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2, b0p += 2 * NR, b1p += 2 * NR) {
        __m512 x0, x1, y0, y1;
        if (PACK) {
            x0 = _mm512_loadu_ps(bs), x1 = _mm512_loadu_ps(bs + NR);
            y0 = _mm512_loadu_ps(bs + ldb), y1 = _mm512_loadu_ps(bs + ldb + NR);
            bs += 2 * ldb;
            _mm512_store_ps((float *)b0p, x0), _mm512_store_ps((float *)b1p, x1);
            _mm512_store_ps((float *)b0p + NR, y0), _mm512_store_ps((float *)b1p + NR, y1);
        } else {
            x0 = _mm512_load_ps(b0p), x1 = _mm512_load_ps(b1p);
            y0 = _mm512_load_ps(b0p + NR), y1 = _mm512_load_ps(b1p + NR);
        }
        int64_t o = k * cs, p = o + cs;
#define NNL_ROW(r)                                                                                                     \
    {                                                                                                                  \
        __m512 u = _mm512_set1_ps(ar[r][o]), v = _mm512_set1_ps(ar[r][p]);                                             \
        c[r][0] = _mm512_fmadd_ps(u, x0, c[r][0]);                                                                     \
        c[r][1] = _mm512_fmadd_ps(u, x1, c[r][1]);                                                                     \
        d[r][0] = _mm512_fmadd_ps(v, y0, d[r][0]);                                                                     \
        d[r][1] = _mm512_fmadd_ps(v, y1, d[r][1]);                                                                     \
    }
        NNL_ROW(0) NNL_ROW(1) NNL_ROW(2) NNL_ROW(3) NNL_ROW(4) NNL_ROW(5)
#undef NNL_ROW
    }
    if (k < kc) {
        __m512 x0, x1;
        if (PACK) {
            x0 = _mm512_loadu_ps(bs), x1 = _mm512_loadu_ps(bs + NR);
            _mm512_store_ps((float *)b0p, x0), _mm512_store_ps((float *)b1p, x1);
        } else {
            x0 = _mm512_load_ps(b0p), x1 = _mm512_load_ps(b1p);
        }
        int64_t o = k * cs;
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 u = _mm512_set1_ps(ar[r][o]);
            c[r][0] = _mm512_fmadd_ps(u, x0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(u, x1, c[r][1]);
        }
    }
    /* each half stored exactly as ukr_avx512 stores a tile of that size
       (masked edges, the same formula) */
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        int64_t n = std::min<int64_t>(NR, nr - h * NR);
        if (n <= 0) break;
        const __mmask16 m = n >= NR ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            if (r >= mr) break;
            float *cp = C + r * ldc + h * NR;
            __m512 v = _mm512_mul_ps(va, _mm512_add_ps(c[r][h], d[r][h]));
            if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, cp), v);
            _mm512_mask_storeu_ps(cp, m, v);
        }
    }
}
__attribute__((target("avx512f"))) static void ukr2_avx512(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                                            const float *b0p, const float *b1p, float *C,
                                                            int64_t ldc, float alpha, float beta, int64_t mr,
                                                            int64_t nr) {
    ukr2_avx512_t<false>(kc, a, rs, cs, b0p, b1p, C, ldc, alpha, beta, mr, nr, nullptr, 0);
}
__attribute__((target("avx512f"))) static void ukr2_avx512_pack(int64_t kc, const float *a, int64_t rs, int64_t cs,
                                                                 float *b0p, float *b1p, float *C, int64_t ldc,
                                                                 float alpha, float beta, int64_t mr, int64_t nr,
                                                                 const float *bs, int64_t ldb) {
    ukr2_avx512_t<true>(kc, a, rs, cs, b0p, b1p, C, ldc, alpha, beta, mr, nr, bs, ldb);
}
#endif

typedef void (*Ukr)(int64_t, const float *, int64_t, int64_t, const float *, float *, int64_t, float, float, int64_t,
                    int64_t);
typedef void (*Ukr2)(int64_t, const float *, int64_t, int64_t, const float *, const float *, float *, int64_t, float,
                     float, int64_t, int64_t);
/* Ukr2 that packs its two B panels as it reads them (ukr2_avx512_pack) */
typedef void (*Ukr2Pack)(int64_t, const float *, int64_t, int64_t, float *, float *, float *, int64_t, float, float,
                         int64_t, int64_t, const float *, int64_t);

static Ukr pick_ukr() {
#if NNL_X86
    if (avx512_kernels()) return ukr_avx512;
    if (!getenv("NNL_NO_SIMD") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ukr_avx2;
#endif
    return ukr_generic;
}
static const Ukr ukr = pick_ukr();
/* ukr for one tile, or ukr_avx2_n8 where the tile has at most 8 columns */
static inline void ukr_tile(int64_t kc, const float *a, int64_t rs, int64_t cs, const float *b, float *C, int64_t ldc,
                            float alpha, float beta, int64_t mr, int64_t nr) {
#if NNL_X86
    if (nr <= 8 && ukr == ukr_avx2) return ukr_avx2_n8(kc, a, rs, cs, b, C, ldc, alpha, beta, mr, nr);
#endif
    ukr(kc, a, rs, cs, b, C, ldc, alpha, beta, mr, nr);
}
/* A kernel over two B panels, where the ISA has registers for it (else NULL). */
#if NNL_X86
static const Ukr2 ukr2 = ukr == ukr_avx512 ? ukr2_avx512 : nullptr;
static const Ukr2Pack ukr2_pack = ukr == ukr_avx512 ? ukr2_avx512_pack : nullptr;
#else
static const Ukr2 ukr2 = nullptr;
static const Ukr2Pack ukr2_pack = nullptr;
#endif
#if NNL_X86
/* The sum of v's lanes (in a fixed order) */
__attribute__((target("avx512f"))) static inline float hsum_avx512(__m512 v) {
    const __mmask16 all = (__mmask16)0xFFFF; /* the masked forms: no undefined sources (GCC 12 warns) */
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_cvtss_f32(v);
}
/* The last NC <= 4 columns of a product (N = 16 p + NC): C[i, c] = alpha *
   A[i, 0..kc) . Bt[c, 0..kc) + beta C[i, c] for m rows of A read in place
   (row-major), Bt the columns' transposed copy. A panel of 16 columns
   computed them at the cost of 16 (N = 50: 64 columns of work, 78 % of it
   used); dot products along k cost a fraction. sgemm_block calls it for a
   row panel right after the panel's last tile, while those rows of A are in
   L1. Intel Xeon (AVX512-FP16 generation), one thread, 6272 x 50 x 500
   (R-LENET's second convolution, 32 samples): 2.62 -> 2.40 ms (48 columns:
   2.15, 64: 2.66); its forward in the step, two threads, 6.8-7.0 -> 6.1 ms
   (R-LENET) and 8.5 -> 7.6 ms (T-LENET, batch 512). Six rows at a time
   (6 NC independent sums), each sum's lanes added at the end in a fixed
   order: the same bits whatever the thread split, other bits than a
   panel's k-ordered sums. */
template <int NC>
__attribute__((target("avx512f"))) static void dot_cols_avx512(int64_t m, int64_t kc, const float *A, int64_t lda,
                                                               const float *Bt, float *C, int64_t ldc, float alpha,
                                                               float beta) {
    const int64_t kv = kc / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (kc - kv)) - 1);
    for (int64_t i = 0; i < m; i += MR) {
        const int rows = (int)std::min<int64_t>(MR, m - i);
        __m512 s[MR][NC];
        const float *a[MR];
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            a[r] = A + (i + (r < rows ? r : 0)) * lda; /* rows past m read row 0 again (their sums are dropped) */
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) s[r][c] = _mm512_setzero_ps();
        }
        for (int64_t k = 0; k < kc; k += 16) {
            const __mmask16 mk = k < kv ? (__mmask16)0xFFFF : tail;
            __m512 b[NC];
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) b[c] = _mm512_maskz_loadu_ps(mk, Bt + c * kc + k);
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                __m512 x = _mm512_maskz_loadu_ps(mk, a[r] + k);
#pragma GCC unroll 4
                for (int c = 0; c < NC; c++) s[r][c] = _mm512_fmadd_ps(x, b[c], s[r][c]);
            }
        }
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) {
                float *cp = C + (i + r) * ldc + c;
                float v = alpha * hsum_avx512(s[r][c]);
                *cp = beta == 0.f ? v : v + beta * *cp;
            }
    }
}
static void dot_cols(int nc, int64_t m, int64_t kc, const float *A, int64_t lda, const float *Bt, float *C,
                     int64_t ldc, float alpha, float beta) {
    switch (nc) {
    case 1: return dot_cols_avx512<1>(m, kc, A, lda, Bt, C, ldc, alpha, beta);
    case 2: return dot_cols_avx512<2>(m, kc, A, lda, Bt, C, ldc, alpha, beta);
    case 3: return dot_cols_avx512<3>(m, kc, A, lda, Bt, C, ldc, alpha, beta);
    default: return dot_cols_avx512<4>(m, kc, A, lda, Bt, C, ldc, alpha, beta);
    }
}
#endif
/* How many of the last columns of an M x N product of depth K (A
   row-major) go to dot_cols instead of a panel of their own: where the
   panel would be a large share of the work (at most 8 whole panels besides)
   and the dots long (K >= 64). Beyond, products ran no faster (2450 x 500,
   4 columns: the panel is 2 % of the work) or slower (a depth of 50: the
   lanes' sums cost more than the panel). Decided on the whole product, so
   a thread's block of columns computes them alike. */
static inline int dot_tail(bool ta, int64_t N, int64_t K) {
#if NNL_X86
    if (ukr == ukr_avx512 && !ta && N % NR <= 4 && N < 9 * NR && K >= 64) return (int)(N % NR);
#endif
    (void)ta, (void)N, (void)K;
    return 0;
}

/* The share of an M x N product's kernel tiles that holds C (the rest is
   computed on padding): to choose between computing C and C^T. */
static double tile_fill(int64_t M, int64_t N) {
    int64_t w = ukr2 ? 2 * NR : NR;
    return (double)M / (double)((M + MR - 1) / MR * MR) * (double)N / (double)((N + w - 1) / w * w);
}

/* A few rows (single-sample inference): packing B would cost more than
   the product, so stream B once in place, up to four rows of C at a time. */
template <int R>
static inline __attribute__((always_inline)) void small_rows(bool ta, bool tb, int64_t N, int64_t K, float alpha,
                                                             const float *A, int64_t lda, const float *B, int64_t ldb,
                                                             float beta, float *C, int64_t ldc, float *acc) {
    auto a = [&](int r, int64_t k) { return ta ? A[k * lda + r] : A[r * lda + k]; };
    if (tb) { /* rows of B are columns of op(B): dot products */
        for (int64_t j = 0; j < N; j++) {
            const float *b = B + j * ldb;
            for (int r = 0; r < R; r++) {
                float p[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0.f; /* 8 partial sums vectorise */
                int64_t k = 0;
                if (!ta) {
                    const float *ar = A + r * lda;
                    for (; k + 8 <= K; k += 8)
                        for (int q = 0; q < 8; q++) p[q] += ar[k + q] * b[k + q];
                }
                for (; k < K; k++) s += a(r, k) * b[k];
                s += ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
                float *c = C + r * ldc + j;
                *c = alpha * s + (beta == 0.f ? 0.f : beta * *c);
            }
        }
        return;
    }
    for (int r = 0; r < R; r++)
        for (int64_t j = 0; j < N; j++) acc[r * N + j] = 0.f;
    for (int64_t k = 0; k < K; k++) {
        const float *b = B + k * ldb;
        for (int r = 0; r < R; r++) {
            float av = a(r, k);
            float *ar = acc + r * N;
            for (int64_t j = 0; j < N; j++) ar[j] += av * b[j];
        }
    }
    for (int r = 0; r < R; r++) {
        float *c = C + r * ldc;
        const float *ar = acc + r * N;
        for (int64_t j = 0; j < N; j++) c[j] = alpha * ar[j] + (beta == 0.f ? 0.f : beta * c[j]);
    }
}

template <int R>
static void small_rows_generic(bool ta, bool tb, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                               const float *B, int64_t ldb, float beta, float *C, int64_t ldc, float *acc) {
    small_rows<R>(ta, tb, N, K, alpha, A, lda, B, ldb, beta, C, ldc, acc);
}
#if NNL_X86
template <int R>
__attribute__((target("avx2,fma"))) static void small_rows_avx2(bool ta, bool tb, int64_t N, int64_t K, float alpha,
                                                                 const float *A, int64_t lda, const float *B,
                                                                 int64_t ldb, float beta, float *C, int64_t ldc,
                                                                 float *acc) {
    small_rows<R>(ta, tb, N, K, alpha, A, lda, B, ldb, beta, C, ldc, acc);
}

/* AVX-512, op(B) = B row-major (inference: x W): R rows of C by CV vectors
   of 16 columns in registers for the whole of K, so each element of B is
   loaded once per R rows and C is stored once (the AVX2 path above keeps
   its sums in memory: a load and a store per multiply-add, 4-5x slower at
   batch 1). B and C point at the block's first vector; `first` and `last`
   are the lanes of its first and last vectors that are columns (EDGE), the
   vectors between are whole and read with plain loads: a masked load costs
   more, and one per vector made K-MLP's batch-1 product 1.3x slower (Intel
   Xeon, AVX512-FP16 generation). Each row of B is prefetched 8 rows ahead:
   without it the product of R-LENET's Dense(500) (4.9 MB, read from L3)
   took 10 % longer than masked loads had. Each element is the same
   k-ordered sum of fused multiply-adds as small_rows. */
/* A few-rows product of more vectors than one pass holds whose B is larger
   than this (bytes) is read in row blocks (small_rows_avx512_n). */
#ifndef NNL_GEMM_SMALL_KBLOCK_B
#define NNL_GEMM_SMALL_KBLOCK_B (1 << 20)
#endif
/* Sums parked between row blocks (small_rows_avx512_n): `in` holds them
   before the block (NULL: zeros), `out` takes them after it instead of C
   (NULL: the last block, stored to C); rows ld floats apart. */
struct Park {
    const float *in = nullptr;
    float *out = nullptr;
    int64_t ld = 0;
};
template <int R, int CV, bool EDGE>
__attribute__((target("avx512f"))) static void small_rows_avx512(int64_t K, float alpha, const float *A, int64_t ars,
                                                                 int64_t aks, const float *B, int64_t ldb, float beta,
                                                                 float *C, int64_t ldc, __mmask16 first,
                                                                 __mmask16 last, const Park &pk) {
    __m512 acc[R][CV];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int v = 0; v < CV; v++) acc[r][v] = pk.in ? _mm512_load_ps(pk.in + r * pk.ld + 16 * v) : _mm512_setzero_ps();
    const float *b = B;
    for (int64_t k = 0; k < K; k++, b += ldb) {
        __m512 bv[CV];
#pragma GCC unroll 16
        for (int v = 0; v < CV; v++) _mm_prefetch((const char *)(b + 8 * ldb + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 16
        for (int v = 0; v < CV; v++)
            bv[v] = !EDGE || (v > 0 && v < CV - 1) ? _mm512_loadu_ps(b + 16 * v)
                                                     : _mm512_maskz_loadu_ps(v == 0 ? first : last, b + 16 * v);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(A[r * ars + k * aks]);
#pragma GCC unroll 16
            for (int v = 0; v < CV; v++) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
        }
    }
    if (pk.out) { /* a row block that is not the last: the sums parked as they are */
#pragma GCC unroll 16
        for (int r = 0; r < R; r++)
#pragma GCC unroll 16
            for (int v = 0; v < CV; v++) _mm512_store_ps(pk.out + r * pk.ld + 16 * v, acc[r][v]);
        return;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int v = 0; v < CV; v++) {
            float *c = C + r * ldc + 16 * v;
            __m512 t = _mm512_mul_ps(va, acc[r][v]);
            if (EDGE && (v == 0 || v == CV - 1)) {
                __mmask16 m = v == 0 ? first : last; /* CV == 1: first == last */
                if (beta != 0.f) t = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), t);
                _mm512_mask_storeu_ps(c, m, t);
            } else {
                if (beta != 0.f) t = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), t);
                _mm512_storeu_ps(c, t);
            }
        }
}

/* The same kernel for AVX2 (no AVX-512: AMD Zen 2/3, older Intel): 8*CV
   columns of R rows in registers (R*CV sums, CV rows of B and a broadcast
   within the 16 ymm registers). Each element of C is a k-ordered sum of
   fused multiply-adds, as in small_rows (which keeps its sums in memory: a
   load and a store per multiply-add). AMD EPYC (Zen 3), one thread: K-MLP's
   batch-1 nnl_predict 12.3 -> 9.7 us (median).
   B is read in k-blocks: a group of up to 512 columns takes kb rows of B
   (about 16 KB, in L1) register block by register block, the sums of each
   parked in `part` between k-blocks (stored and reloaded exactly, so the
   sums are the same as over the whole depth at once), then the next kb
   rows. So the rows of B stream in order, where one register block over the
   whole depth read 8*CV columns of every row, a stride the prefetchers do
   not follow as well: Zen 3, one thread, 784 x 128 (K-MLP) 6.6 -> 5.1 us,
   2450 x 512 (R-LENET's Dense(500)) 106 -> 84 us. */
template <int R, int CV>
__attribute__((target("avx2,fma"))) static void small_rows_avx2r(int64_t N, int64_t K, float alpha, const float *A,
                                                                 int64_t ars, int64_t aks, const float *B, int64_t ldb,
                                                                 float beta, float *C, int64_t ldc) {
    constexpr int W = 8 * CV;              /* columns of one register block */
    constexpr int64_t G = 512 / W * W;     /* columns of one group */
    alignas(32) float part[R][G];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int64_t g0 = 0; g0 < N; g0 += G) {
        const int64_t gn = std::min<int64_t>(G, N - g0);
        const int64_t kb = std::max<int64_t>(4, std::min<int64_t>(64, 4096 / gn)); /* kb rows of gn floats: 16 KB */
        for (int64_t k0 = 0; k0 < K; k0 += kb) {
            const int64_t k1 = std::min<int64_t>(K, k0 + kb);
            const bool first = k0 == 0, last = k1 == K;
            for (int64_t j0 = g0; j0 < g0 + gn; j0 += W) {
                const int64_t p0 = j0 - g0;
                __m256i m[CV];
                bool full = N - j0 >= W;
#pragma GCC unroll 8
                for (int v = 0; v < CV; v++) {
                    int64_t rem = std::max<int64_t>(0, std::min<int64_t>(8, N - j0 - 8 * v));
                    m[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), lane);
                }
                __m256 acc[R][CV];
#pragma GCC unroll 8
                for (int r = 0; r < R; r++)
#pragma GCC unroll 8
                    for (int v = 0; v < CV; v++)
                        acc[r][v] = first ? _mm256_setzero_ps() : _mm256_load_ps(&part[r][p0 + 8 * v]);
                const float *b = B + k0 * ldb + j0;
                if (full)
                    for (int64_t k = k0; k < k1; k++, b += ldb) {
                        __m256 bv[CV];
#pragma GCC unroll 8
                        for (int v = 0; v < CV; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
                        for (int r = 0; r < R; r++) {
                            __m256 a = _mm256_broadcast_ss(A + r * ars + k * aks);
#pragma GCC unroll 8
                            for (int v = 0; v < CV; v++) acc[r][v] = _mm256_fmadd_ps(a, bv[v], acc[r][v]);
                        }
                    }
                else /* the last columns: masked loads never touch memory past N */
                    for (int64_t k = k0; k < k1; k++, b += ldb) {
                        __m256 bv[CV];
#pragma GCC unroll 8
                        for (int v = 0; v < CV; v++) bv[v] = _mm256_maskload_ps(b + 8 * v, m[v]);
#pragma GCC unroll 8
                        for (int r = 0; r < R; r++) {
                            __m256 a = _mm256_broadcast_ss(A + r * ars + k * aks);
#pragma GCC unroll 8
                            for (int v = 0; v < CV; v++) acc[r][v] = _mm256_fmadd_ps(a, bv[v], acc[r][v]);
                        }
                    }
                if (!last) {
#pragma GCC unroll 8
                    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
                        for (int v = 0; v < CV; v++) _mm256_store_ps(&part[r][p0 + 8 * v], acc[r][v]);
                    continue;
                }
#pragma GCC unroll 8
                for (int r = 0; r < R; r++)
#pragma GCC unroll 8
                    for (int v = 0; v < CV; v++) {
                        if (j0 + 8 * v >= N) continue;
                        float *c = C + r * ldc + j0 + 8 * v;
                        __m256 t = _mm256_mul_ps(va, acc[r][v]);
                        if (beta != 0.f) t = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, m[v]), t);
                        _mm256_maskstore_ps(c, m[v], t);
                    }
            }
        }
    }
}

/* M <= 4 rows: 64 columns for one row (8 independent sums hide the FMA
   latency), 32 for two, 24 for three, 16 for four. */
template <int R>
static void small_rows_avx2r_n(int64_t N, int64_t K, float alpha, const float *A, int64_t ars, int64_t aks,
                               const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    constexpr int CV = R == 1 ? 8 : R == 2 ? 4 : R == 3 ? 3 : 2;
    if (N <= 8)
        small_rows_avx2r<R, 1>(N, K, alpha, A, ars, aks, B, ldb, beta, C, ldc);
    else if (N <= 16)
        small_rows_avx2r<R, 2>(N, K, alpha, A, ars, aks, B, ldb, beta, C, ldc);
    else
        small_rows_avx2r<R, CV>(N, K, alpha, A, ars, aks, B, ldb, beta, C, ldc);
}

/* One pass of small_rows_avx512 over cv vectors (1..12 for one row, 1..4
   for more) */
template <int R, int CV = 1>
static void small_rows_avx512_pass(int cv, bool edge, int64_t K, float alpha, const float *A, int64_t ars, int64_t aks,
                                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc, __mmask16 first,
                                   __mmask16 last, const Park &pk = Park()) {
    if constexpr (CV < (R == 1 ? 12 : 4))
        if (cv > CV)
            return small_rows_avx512_pass<R, CV + 1>(cv, edge, K, alpha, A, ars, aks, B, ldb, beta, C, ldc, first,
                                                     last, pk);
    if (edge)
        small_rows_avx512<R, CV, true>(K, alpha, A, ars, aks, B, ldb, beta, C, ldc, first, last, pk);
    else
        small_rows_avx512<R, CV, false>(K, alpha, A, ars, aks, B, ldb, beta, C, ldc, first, last, pk);
}

/* One row, B's rows contiguous (ldb == N, N = 16 P, P <= 12) and B o >= 0
   columns past a 64-byte line: B is read as one stream of aligned vectors
   (on a line, o = 0, plainly: SH false).
   Laid on the lines row by row (small_rows_avx512_n), each row takes P + 1
   vectors, and the last of row k is the same line as the first of row
   k + 1; here it is loaded once: vector 0 of row k holds row k - 1's last o
   columns in lanes 0..o-1 (times A[k - 1]) and row k's first 16 - o in the
   others (times A[k]), so sum 0 gathers the columns N - o..N - 1 in its
   first lanes and 0..15 - o in the rest, and sum j >= 1 the columns
   16 j - o..16 j - o + 15. A[k] is broadcast from a register holding 16 of
   A (a permute) rather than loaded for every row, and B, when it fits in L2
   (1 MiB or less), is not prefetched: both only took load slots from the
   stream. Intel Xeon (AVX512-FP16 generation), one thread, K-MLP's
   1 x 128 x 784 with B 16 bytes past a line: 3.02 us laid on the lines,
   2.69 as one stream, 2.66 without the loads of A and the prefetches (the
   median of 40 interleaved windows; a plain read of the same 401 KB takes
   2.43); nnl_predict of K-MLP at batch 1 3.46 -> 3.05 us with the 8-chain
   kernel below. Each element is the same k-ordered sum of fused
   multiply-adds as in the other kernels. */
template <int P, bool PF, bool SH>
__attribute__((target("avx512f"))) static void small_row_stream_avx512(int64_t K, float alpha, const float *A,
                                                                        int64_t aks, const float *B, int o,
                                                                        float beta, float *C) {
    constexpr int64_t N = 16 * P;
    const __mmask16 lo = (__mmask16)((1u << o) - 1); /* lanes of the row before */
    const float *b = B - o;                         /* on a line */
    const __m512 z = _mm512_setzero_ps();
    __m512 acc[P], a = _mm512_set1_ps(A[0]);
    /* row 0: nothing before B (lanes 0..o-1 not multiplied: 0 * Inf would be a NaN in a column) */
    acc[0] = _mm512_maskz_fmadd_ps((__mmask16)~lo, a, _mm512_maskz_load_ps((__mmask16)~lo, b), z);
#pragma GCC unroll 16
    for (int v = 1; v < P; v++) acc[v] = _mm512_fmadd_ps(a, _mm512_load_ps(b + 16 * v), z);
    b += N;
    /* row k of B times `next` (A[k] in every lane), A[k - 1] in a */
#define NNL_STREAM_ROW(next)                                                                                          \
    do {                                                                                                              \
        const __m512 nx = (next);                                                                                     \
        if (PF)                                                                                                       \
            _Pragma("GCC unroll 16") for (int v = 0; v < P; v++)                                                      \
                _mm_prefetch((const char *)(b + 8 * N + 16 * v), _MM_HINT_T0);                                        \
        acc[0] = _mm512_fmadd_ps(SH ? _mm512_mask_blend_ps(lo, nx, a) : nx, _mm512_load_ps(b), acc[0]);               \
        a = nx;                                                                                                       \
        _Pragma("GCC unroll 16") for (int v = 1; v < P; v++)                                                          \
            acc[v] = _mm512_fmadd_ps(a, _mm512_load_ps(b + 16 * v), acc[v]);                                          \
        b += N;                                                                                                       \
    } while (0)
    int64_t k = 1;
    if (aks == 1) /* 16 of A in a register, each broadcast from it (no load per row) */
        for (; k + 16 <= K; k += 16) {
            const __m512 a16 = _mm512_loadu_ps(A + k);
#pragma GCC unroll 16
            for (int u = 0; u < 16; u++) NNL_STREAM_ROW(_mm512_maskz_permutexvar_ps((__mmask16)0xFFFF, _mm512_set1_epi32(u), a16));
        }
    for (; k < K; k++) NNL_STREAM_ROW(_mm512_set1_ps(A[k * aks]));
#undef NNL_STREAM_ROW
    if (SH) /* row K - 1's last o columns (the other lanes as they are) */
        acc[0] = _mm512_mask3_fmadd_ps(a, _mm512_maskz_load_ps(lo, b), acc[0], lo);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int v = 1; v < P; v++) {
        float *c = C + 16 * v - o;
        __m512 t = _mm512_mul_ps(va, acc[v]);
        if (beta != 0.f) t = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), t);
        _mm512_storeu_ps(c, t);
    }
    __m512 t = _mm512_mul_ps(va, acc[0]);
    if (beta != 0.f) /* C's columns in sum 0's lanes */
        t = _mm512_fmadd_ps(vb, _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps((__mmask16)~lo, C - o), lo, C + N - o), t);
    _mm512_mask_storeu_ps(C - o, (__mmask16)~lo, t);
    if (SH) _mm512_mask_storeu_ps(C + N - o, lo, t);
}
template <int P = 1>
static void small_row_stream_avx512_p(int p, int64_t K, float alpha, const float *A, int64_t aks, const float *B,
                                      int o, float beta, float *C) {
    constexpr int64_t N = 16 * P;
    if constexpr (P < 12)
        if (p > P) return small_row_stream_avx512_p<P + 1>(p, K, alpha, A, aks, B, o, beta, C);
    const bool pf = K * N * (int64_t)sizeof(float) > (1 << 20); /* beyond L2: rows prefetched 8 ahead (from L2
                                                                     the prefetches only take load slots) */
    if (o)
        pf ? small_row_stream_avx512<P, true, true>(K, alpha, A, aks, B, o, beta, C)
           : small_row_stream_avx512<P, false, true>(K, alpha, A, aks, B, o, beta, C);
    else
        pf ? small_row_stream_avx512<P, true, false>(K, alpha, A, aks, B, o, beta, C)
           : small_row_stream_avx512<P, false, false>(K, alpha, A, aks, B, o, beta, C);
}

/* One row of at most 16 columns (a layer of few outputs at batch 1:
   K-MLP's Dense(10), a regression's Dense(1)): one vector a row of B is a
   single chain of dependent multiply-adds, 4 cycles each, so the sums of
   rows k mod 8 go in 8 chains, added pairwise at the end. A column of B
   (N = 1, ldb = 1) is a dot product: 16 rows a vector, 4 chains. Intel
   Xeon (AVX512-FP16 generation), one thread, nnl_predict of a one-layer
   model, one sample: Dense(10) over 128 inputs 0.30 -> 0.23 us, Dense(16)
   over 784 1.12 -> 0.79 us, Dense(1) over 784 1.19 -> 0.24 us. The order
   of the additions is not the other kernels' (k in turn): results differ
   from theirs in the last bits. sgemm_small_m calls it for a product only
   N <= 16 columns wide, which it never splits over threads. */
__attribute__((target("avx512f"))) static void small_row_narrow_avx512(int64_t N, int64_t K, float alpha,
                                                                        const float *A, int64_t aks, const float *B,
                                                                        int64_t ldb, float beta, float *C) {
    __m512 s[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) s[q] = _mm512_setzero_ps();
    if (N == 1 && ldb == 1 && aks == 1) { /* x . w */
        int64_t k = 0;
        for (; k + 64 <= K; k += 64)
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                s[q] = _mm512_fmadd_ps(_mm512_loadu_ps(A + k + 16 * q), _mm512_loadu_ps(B + k + 16 * q), s[q]);
        for (int q = 0; k < K; k += 16, q++) {
            __mmask16 m = (__mmask16)(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
            s[q] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, A + k), _mm512_maskz_loadu_ps(m, B + k), s[q]);
        }
        alignas(64) float t[16]; /* (_mm512_reduce_add_ps warns in GCC 12) */
        _mm512_store_ps(t, _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
        for (int w = 8; w > 0; w /= 2)
            for (int q = 0; q < w; q++) t[q] += t[q + w];
        C[0] = alpha * t[0] + (beta == 0.f ? 0.f : beta * C[0]);
        return;
    }
    const __mmask16 m = (__mmask16)(0xFFFFu >> (16 - N));
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++)
            s[q] = _mm512_fmadd_ps(_mm512_set1_ps(A[(k + q) * aks]), _mm512_maskz_loadu_ps(m, B + (k + q) * ldb), s[q]);
    for (int q = 0; k < K; k++, q++)
        s[q] = _mm512_fmadd_ps(_mm512_set1_ps(A[k * aks]), _mm512_maskz_loadu_ps(m, B + k * ldb), s[q]);
    __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])),
                             _mm512_add_ps(_mm512_add_ps(s[4], s[5]), _mm512_add_ps(s[6], s[7])));
    t = _mm512_mul_ps(_mm512_set1_ps(alpha), t);
    if (beta != 0.f) t = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, C), t);
    _mm512_mask_storeu_ps(C, m, t);
}

/* One row against a B beyond L2, wider than the registers hold (batch-1
   inference of a large Dense layer: R-LENET's 2450 x 500, 4.9 MB): the
   sums in memory (y, in L1), four rows of B at a time, so B is read once,
   front to back, as one stream: y[v] = fma(a3, b3[v], fma(a2, b2[v],
   fma(a1, b1[v], fma(a0, b0[v], y[v])))). A load and a store of y per four
   multiply-adds cost less than the register blocks' row blocks with their
   parked sums (small_rows_avx512_n), which read each row of B in parts.
   Each element is the same k-ordered chain of fused multiply-adds (y is
   stored and reloaded exactly): the same bits. AMD EPYC Zen 4, one thread,
   gemm_bench (best of 200 calls, B in L3), 3 rounds: 1 x 500 x 2450
   32.7-33.4 -> 41.2-42.0 GFLOP/s (74 -> 58 us), 1 x 1000 x 2450 27.1-27.8
   -> 38.4-38.8; R-LENET's batch-1 nnl_predict, 10th percentile of 4,001
   calls, 213-258 -> 198 us (two threads, 250 columns each, alike: 126
   us). With the other core busy (a rough guide only): 2 MB and less (200
   x 2450, 512 x 784) alike, from L2 (512 x 512) 11.0 -> 12.4 us, so only
   beyond NNL_GEMM_SMALL_MEM_B; two or eight rows at a time slower than
   four (60, 59 against 57 us), prefetching the next rows' lines too
   (62-70). Columns go in blocks of at most NNL_MEMROW_COLS (y on the
   stack); o as in small_rows_avx512_n (vectors laid on the 64-byte
   lines). */
#ifndef NNL_GEMM_SMALL_MEM_B
#define NNL_GEMM_SMALL_MEM_B (2 << 20)
#endif
#define NNL_MEMROW_COLS 1024
__attribute__((target("avx512f"))) static void small_row_mem_avx512(int64_t N, int64_t K, float alpha,
                                                                     const float *A, int64_t aks, const float *B,
                                                                     int64_t ldb, int64_t o, float beta, float *C) {
    alignas(64) float y[NNL_MEMROW_COLS];
    for (int64_t l0 = 0; l0 < o + N; l0 += NNL_MEMROW_COLS) {
        /* lanes l0..l1-1 of the row from B - o (on a line when o > 0):
           the first o lanes of the first block and those past the last
           column are masked */
        const int64_t s = l0 == 0 ? o : 0, l1 = std::min<int64_t>(l0 + NNL_MEMROW_COLS, o + N),
                      nv = (l1 - l0 + 15) / 16;
        const __mmask16 lo = (__mmask16)(0xFFFFu << s), hi = (__mmask16)(0xFFFFu >> (16 * nv - (l1 - l0)));
        const float *Bj = B - o + l0;
        for (int64_t v = 0; v < nv; v++) _mm512_store_ps(y + 16 * v, _mm512_setzero_ps());
        auto rows = [&](auto U, int64_t k) { /* rows k..k+U-1 */
            constexpr int u_n = decltype(U)::value;
            __m512 a[u_n];
            const float *b[u_n];
#pragma GCC unroll 4
            for (int u = 0; u < u_n; u++) a[u] = _mm512_set1_ps(A[(k + u) * aks]), b[u] = Bj + (k + u) * ldb;
            auto vec = [&](int64_t v, __mmask16 m, bool masked) {
                __m512 t = _mm512_load_ps(y + 16 * v);
#pragma GCC unroll 4
                for (int u = 0; u < u_n; u++)
                    t = _mm512_fmadd_ps(a[u], masked ? _mm512_maskz_loadu_ps(m, b[u] + 16 * v)
                                                     : _mm512_loadu_ps(b[u] + 16 * v), t);
                _mm512_store_ps(y + 16 * v, t);
            };
            if (nv == 1) return vec(0, (__mmask16)(lo & hi), true);
            vec(0, lo, lo != 0xFFFF);
            for (int64_t v = 1; v < nv - 1; v++) vec(v, 0xFFFF, false);
            vec(nv - 1, hi, hi != 0xFFFF);
        };
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) rows(std::integral_constant<int, 4>(), k);
        for (; k < K; k++) rows(std::integral_constant<int, 1>(), k);
        const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        float *c = C - o + l0;
        for (int64_t v = 0; v < nv; v++) {
            __mmask16 m = (__mmask16)((v == 0 ? lo : 0xFFFF) & (v == nv - 1 ? hi : 0xFFFF));
            __m512 t = _mm512_mul_ps(va, _mm512_load_ps(y + 16 * v));
            if (beta != 0.f) t = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c + 16 * v), t);
            _mm512_mask_storeu_ps(c + 16 * v, m, t);
        }
    }
}

/* M <= 4 rows. When ldb is a multiple of 16, every row of B starts the
   same number of columns o past a 64-byte line, and the vectors are laid
   on the lines: the first starts o columns before B (those lanes masked
   off, in the loads and the stores), so no load straddles two lines. A
   model's weights start on a line (Model::W), but a B here may not (a
   caller's matrix, a column block of a wide one): K-MLP's 784 x 128, 16
   bytes past a line, took 5.0 us with a split load per vector, 3.0 us laid
   on the lines (Intel Xeon, one thread). One row over a contiguous B goes
   to small_row_stream_avx512 instead. The vectors go in as few passes
   over B as the registers allow (12 vectors for one row, 4 for more), as
   even as can be: K-MLP's 9 vectors in one pass took 3.0 us, in passes of
   5 and 4 3.5 us, and a pass of one vector would be a single chain of
   dependent FMAs. */
template <int R>
static void small_rows_avx512_n(int64_t N, int64_t K, float alpha, const float *A, int64_t ars, int64_t aks,
                                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const int64_t o = ldb % 16 == 0 ? (int64_t)((uintptr_t)B / sizeof(float) % 16) : 0, nv = (o + N + 15) / 16;
    if (R == 1 && ldb == N && N % 16 == 0 && N <= 16 * 12 && K > 0)
        return small_row_stream_avx512_p((int)(N / 16), K, alpha, A, aks, B, (int)o, beta, C);
    const int64_t maxv = R == 1 ? 12 : 4, passes = (nv + maxv - 1) / maxv;
    const int rem = (int)(o + N - 16 * (nv - 1)); /* columns in the last vector, 1..16 */
    const __mmask16 lo = (__mmask16)(0xFFFFu << o), hi = (__mmask16)(0xFFFFu >> (16 - rem));
    if (R == 1 && passes > 1 && K * N * (int64_t)sizeof(float) > NNL_GEMM_SMALL_MEM_B)
        return small_row_mem_avx512(N, K, alpha, A, aks, B, ldb, o, beta, C);
    if (passes > 1 && K * ldb * (int64_t)sizeof(float) > NNL_GEMM_SMALL_KBLOCK_B) {
        /* B beyond L2, in several passes: row blocks of about 16 KB, each
           read by every pass while it is in L1, the sums parked in between
           (stored and reloaded exactly: the same bits as one pass over the
           whole depth). Each pass over the whole depth read a part of every
           row, a stride the prefetchers follow badly: R-LENET's Dense(500)
           (2450 x 500, 4.9 MB), three passes, about 22 -> 38 GB/s; its
           batch-1 nnl_predict, median of 4,001 calls, 360-372 -> 303-304 us
           on one thread, 223-269 -> 203-220 us on two (Intel Xeon, AVX512-
           FP16 generation; the block size, 8 to 32 KB, made no difference) */
        constexpr int64_t GV = 32; /* vectors of one group of columns */
        alignas(64) float part[R * GV * 16];
        for (int64_t g0 = 0; g0 < nv; g0 += GV) {
            const int64_t gv = std::min(GV, nv - g0), gp = (gv + maxv - 1) / maxv;
            const int64_t kb = std::max<int64_t>(4, 256 / gv); /* 256 vectors: 16 KB */
            for (int64_t k0 = 0; k0 < K; k0 += kb) {
                const int64_t k1 = std::min(K, k0 + kb);
                for (int64_t p = 0, v0 = g0; p < gp; p++) {
                    int cv = (int)(gv / gp + (p < gv % gp));
                    __mmask16 first = v0 == 0 ? lo : (__mmask16)0xFFFF, last = v0 + cv == nv ? hi : (__mmask16)0xFFFF;
                    if (cv == 1) first = last = (__mmask16)(first & last);
                    float *pp = part + 16 * (v0 - g0);
                    small_rows_avx512_pass<R>(cv, first != 0xFFFF || last != 0xFFFF, k1 - k0, alpha, A + k0 * aks, ars,
                                              aks, B - o + 16 * v0 + k0 * ldb, ldb, beta, C - o + 16 * v0, ldc, first,
                                              last, Park{k0 > 0 ? pp : nullptr, k1 < K ? pp : nullptr, GV * 16});
                    v0 += cv;
                }
            }
        }
        return;
    }
    for (int64_t p = 0, v0 = 0; p < passes; p++) {
        int cv = (int)(nv / passes + (p < nv % passes));
        __mmask16 first = v0 == 0 ? lo : (__mmask16)0xFFFF, last = v0 + cv == nv ? hi : (__mmask16)0xFFFF;
        if (cv == 1) first = last = (__mmask16)(first & last);
        small_rows_avx512_pass<R>(cv, first != 0xFFFF || last != 0xFFFF, K, alpha, A, ars, aks, B - o + 16 * v0, ldb,
                                  beta, C - o + 16 * v0, ldc, first, last);
        v0 += cv;
    }
}
#endif

/* Up to this many rows of C (and products of at most NNL_GEMM_SMALL_M_MACS
   multiply-adds) the AVX-512 small-rows kernel, four rows per pass over B
   in place, beats packing B: K-MLP inference at batch 16, 90 -> 64 us per
   call (B, the weights, stays in L2 between the passes). */
#ifndef NNL_GEMM_SMALL_M
#define NNL_GEMM_SMALL_M 16
#endif
#ifndef NNL_GEMM_SMALL_M_MACS
#define NNL_GEMM_SMALL_M_MACS 1e7
#endif
/* The AVX2 small-rows kernel up to NNL_GEMM_SMALL_M rows: always to 8 rows
   (two passes over B), to 16 (four passes) while B holds at most this many
   floats, so that the passes after the first read it from cache. AMD EPYC
   (Zen 3), against packing B, median of 7 x 200 calls, 1 / 2 threads:
   K-MLP's 16x128x784 56 -> 42 / 35 -> 24 us, 8x128x784 44 -> 21 / 24 -> 12,
   16x500x2450 673 -> 589 / 364 -> 358, 16x10x128 2.0 -> 0.9, A^T
   16x128x784 64 -> 52 / 38 -> 31; 8x1000x9216 9.4 -> 6.8 ms; beyond the
   limit four passes lose: 16x1000x9216 10.6 -> 12.6 ms, 16x2048x2048
   0.95x. */
#ifndef NNL_GEMM_SMALL_M_AVX2_B
#define NNL_GEMM_SMALL_M_AVX2_B (1 << 21)
#endif
/* A few-rows product reading at least this many floats of B is split by
   columns over the pool's threads: each reads its share of the weights
   once, at its core's bandwidth (batch-1 inference is bound by reading
   them). Each element's arithmetic does not depend on the split. Below it
   the wake-up of a worker costs more than the read. AMD EPYC (Zen 3), two
   threads: K-MLP batch-1 nnl_predict 10.4 -> 6.8-7.1 us (median; the
   other core was compiling). */
#ifndef NNL_GEMM_SMALL_SPLIT
#define NNL_GEMM_SMALL_SPLIT 65536
#endif
/* Whether the small-rows kernel (B read in place, not packed) takes a
   product of 5 to NNL_GEMM_SMALL_M rows (op(B) not transposed) */
static bool small_m_fits(int64_t M, int64_t N, int64_t K) {
#if NNL_X86
    if (ukr == ukr_avx512) return (double)M * N * K <= NNL_GEMM_SMALL_M_MACS;
    if (ukr == ukr_avx2) return M <= 8 || (double)N * K <= NNL_GEMM_SMALL_M_AVX2_B;
#endif
    (void)M, (void)N, (void)K;
    return false;
}
/* cols(j0, j1) over the N columns of a few-rows product K deep: on this
   thread, or from NNL_GEMM_SMALL_SPLIT floats of B on split over the
   pool's threads in blocks of 64 columns (whole register blocks of the AVX2
   kernel, whole strips of the kept bf16 words; each starts as far past a
   64-byte line as B does, so the AVX-512 kernel lays a thread's vectors on
   the same lines as one thread's) */
template <class F> static void split_columns(int64_t N, int64_t K, F cols) {
    int64_t blocks = (N + 63) / 64;
    int T = (int)std::min<int64_t>(threads(), blocks);
    if (T <= 1 || N * K < NNL_GEMM_SMALL_SPLIT) {
        cols(0, N);
        return;
    }
    int64_t per = (blocks + T - 1) / T;
    pool::run_chunks((blocks + per - 1) / per, T, [&](int64_t c) { cols(c * per * 64, std::min(N, (c + 1) * per * 64)); });
}
static void sgemm_small_m(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                          const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#if NNL_X86
    if (!tb && (ukr == ukr_avx512 || ukr == ukr_avx2)) { /* up to NNL_GEMM_SMALL_M rows, four at a time */
        int64_t ars = ta ? 1 : lda, aks = ta ? lda : 1;
        bool wide = ukr == ukr_avx512;
        auto cols = [&](int64_t j0, int64_t j1) {
            int64_t n = j1 - j0;
            const float *Bj = B + j0;
            for (int64_t i = 0; i < M; i += 4) {
                const float *Ai = A + i * ars;
                float *Ci = C + i * ldc + j0;
                int r = (int)std::min<int64_t>(4, M - i);
                if (wide && r == 1 && N <= 16) /* few outputs: N is the whole product's width (never split) */
                    small_row_narrow_avx512(n, K, alpha, Ai, aks, Bj, ldb, beta, Ci);
                else if (wide)
                    switch (r) {
                    case 1: small_rows_avx512_n<1>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    case 2: small_rows_avx512_n<2>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    case 3: small_rows_avx512_n<3>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    default: small_rows_avx512_n<4>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    }
                else /* the same, 8-wide */
                    switch (r) {
                    case 1: small_rows_avx2r_n<1>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    case 2: small_rows_avx2r_n<2>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    case 3: small_rows_avx2r_n<3>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    default: small_rows_avx2r_n<4>(n, K, alpha, Ai, ars, aks, Bj, ldb, beta, Ci, ldc); break;
                    }
            }
        };
        split_columns(N, K, cols);
        return;
    }
#endif
    Buffers &buf = tl_buf;
    buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)(2 * N));
#if NNL_X86
    bool v = ukr == ukr_avx2 || ukr == ukr_avx512;
#else
    bool v = false;
#endif
    for (int64_t i = 0; i < M; i += 2) {
        const float *Ai = ta ? A + i : A + i * lda;
        float *Ci = C + i * ldc;
        bool two = i + 1 < M;
#if NNL_X86
        if (v) {
            if (two)
                small_rows_avx2<2>(ta, tb, N, K, alpha, Ai, lda, B, ldb, beta, Ci, ldc, buf.ap);
            else
                small_rows_avx2<1>(ta, tb, N, K, alpha, Ai, lda, B, ldb, beta, Ci, ldc, buf.ap);
            continue;
        }
#endif
        if (two)
            small_rows_generic<2>(ta, tb, N, K, alpha, Ai, lda, B, ldb, beta, Ci, ldc, buf.ap);
        else
            small_rows_generic<1>(ta, tb, N, K, alpha, Ai, lda, B, ldb, beta, Ci, ldc, buf.ap);
    }
    (void)v;
}

/* Up to this many NR-wide B panels (N <= 128) the kernels read a row-major
   A where it lies instead of packing it: a 6-row tile of A is read
   NNL_GEMM_INPLACE_PANELS / 2 times (ukr2 takes two panels) and stays in
   L1 between, and packing it cost more than the strided reads. Measured on
   an Intel Xeon (AVX-512, 2 MB L2), one thread, best of 200: K-MLP's
   120x128x784 product 98 -> 111 GFLOP/s (OpenBLAS SkylakeX: 112), 128^3
   78 -> 105; wider B loses (N = 256: A is re-read from L2 too often).
   A^T (ta) too: a tile's six rows are six consecutive floats of each of
   A's rows (rs = 1, cs = lda). AMD EPYC (Zen 4) VM, one thread, GFLOP/s:
   K-MLP's weight gradient 784x128x120 (A^T B) 99.7 -> 103.4, 128^3 89 ->
   98, 500x50x25088 50 -> 62 (the kernel's other changes of the same
   commit not counted). */
#ifndef NNL_GEMM_INPLACE_PANELS
#define NNL_GEMM_INPLACE_PANELS 8
#endif
/* One thread's share: the whole loop nest over a block of C, with private
   packing buffers. */
static void sgemm_block(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias = nullptr,
                        Act act = ACT_LINEAR, int tail = -1) {
    if (tail < 0) tail = dot_tail(ta, N, K); /* (a thread's block: the whole product's, from sgemm_ep) */
    bool ep = bias || act != ACT_LINEAR;
    Buffers &buf = tl_buf;
    int64_t ncmax = std::min<int64_t>(N, NC), kcmax = std::min<int64_t>(K, KC), mcmax = std::min<int64_t>(M, MC);
    buf.bp = Buffers::grow(buf.bp, buf.bp_n, (size_t)((ncmax + NR - 1) / NR * NR * kcmax));
    buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)((mcmax + MR - 1) / MR * MR * kcmax));
    float *Bp = buf.bp, *Ap = buf.ap;
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = std::min<int64_t>(NC, N - jc);
        const int dt = jc + nc == N && nc % NR == tail ? tail : 0; /* the last dt columns: dot products */
        int64_t npan = (nc - dt + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = std::min<int64_t>(KC, K - pc);
            float bet = pc == 0 ? beta : 1.f;
            tl_prefetch_c = prefetch_c(M, N, ldc, bet);
            /* pairs of whole panels of a row-major B are packed by the
               first kernel call on them (ukr2_pack), the rest here */
            int64_t fused = ukr2_pack && !tb ? std::min<int64_t>(npan, (nc - dt) / NR) / 2 * 2 : 0;
            for (int64_t jp = fused; jp < npan; jp++) pack_b(tb, B, ldb, pc, jc, kc, nc, Bp, jp);
            float *Bt = Bp + npan * NR * kc; /* the dot columns, a row each */
            for (int c = 0; c < dt; c++)
                for (int64_t k = 0; k < kc; k++)
                    Bt[c * kc + k] = tb ? B[(jc + nc - dt + c) * ldb + pc + k] : B[(pc + k) * ldb + jc + nc - dt + c];
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = std::min<int64_t>(MC, M - ic), mpan = (mc + MR - 1) / MR;
                /* A in place when few B panels reuse it; a partial last
                   panel is always packed (no reads past M) */
                bool in_place = npan <= NNL_GEMM_INPLACE_PANELS;
                int64_t full = mc / MR; /* whole panels */
                if (!in_place && ta) { /* A^T: whole rows of A at a time, full panels */
                    for (int64_t k = 0; k < kc; k++) {
                        const float *src = A + (pc + k) * lda + ic;
                        float *dst = Ap + k * MR;
                        for (int64_t ip = 0; ip < full; ip++, src += MR, dst += MR * kc)
                            for (int r = 0; r < MR; r++) dst[r] = src[r];
                    }
                } else if (!in_place)
                    for (int64_t ip = 0; ip < full; ip++) pack_a(ta, A, lda, ic, pc, mc, kc, Ap, ip);
                if (full < mpan) pack_a(ta, A, lda, ic, pc, mc, kc, Ap, full);
                /* jp outer: one B panel (or two, for ukr2) stays in L1 while
                   the A panels stream */
                for (int64_t jp = 0; jp < npan;) {
                    int w = ukr2 && jp + 1 < npan ? 2 : 1;
                    for (int64_t ip = 0; ip < mpan; ip++) {
                        int64_t i = ip * MR, j = jp * NR;
                        bool packed = !in_place || (ip + 1) * MR > mc;
                        /* (in place, A^T: element (i, k) at A[k * lda + i]) */
                        const float *a = packed ? Ap + ip * MR * kc
                                         : ta   ? A + pc * lda + ic + i
                                                : A + (ic + i) * lda + pc;
                        int64_t ars = packed || ta ? 1 : lda, acs = packed ? MR : ta ? lda : 1;
                        if (w == 2 && jp < fused && ic == 0 && ip == 0)
                            ukr2_pack(kc, a, ars, acs, Bp + jp * NR * kc, Bp + (jp + 1) * NR * kc,
                                      C + (ic + i) * ldc + jc + j, ldc, alpha, bet, std::min<int64_t>(MR, mc - i),
                                      2 * NR, B + pc * ldb + jc + j, ldb);
                        else if (w == 2)
                            ukr2(kc, a, ars, acs, Bp + jp * NR * kc, Bp + (jp + 1) * NR * kc,
                                 C + (ic + i) * ldc + jc + j, ldc, alpha, bet, std::min<int64_t>(MR, mc - i),
                                 std::min<int64_t>(2 * NR, nc - j));
                        else
                            ukr_tile(kc, a, ars, acs, Bp + jp * NR * kc,
                                C + (ic + i) * ldc + jc + j, ldc, alpha, bet, std::min<int64_t>(MR, mc - i),
                                std::min<int64_t>(NR, nc - j));
#if NNL_X86
                        if (dt && jp + w >= npan) /* after the last panels, while these rows of A are in L1 */
                            dot_cols(dt, std::min<int64_t>(MR, mc - i), kc, A + (ic + i) * lda + pc, lda, Bt,
                                     C + (ic + i) * ldc + jc + nc - dt, ldc, alpha, bet);
#endif
                    }
                    jp += w;
                }
#if NNL_X86
                if (dt && npan == 0)
                    dot_cols(dt, mc, kc, A + ic * lda + pc, lda, Bt, C + ic * ldc + jc + nc - dt, ldc, alpha, bet);
#endif
                if (ep && pc + kc >= K) /* this block of C is final and still in cache */
                    epilogue(C + ic * ldc + jc, ldc, mc, nc, bias ? bias + jc : nullptr, act);
            }
        }
    }
    tl_prefetch_c = false;
}

/* Threads split C into independent blocks (rows when M >= N, else columns),
   each packing what it needs, claimed as pool chunks: no barrier inside,
   so a thread that is descheduled holds up at most the block it began.
   Every element is summed in the same order whatever the block it is in,
   so results do not depend on the thread count. */
/* The cost of a product in units of one multiply-add of the packed kernel:
   M*N*K, plus 20 per element of A, B and C (packing and streaming them;
   measured: 20384x20x25, 1.0e7 multiply-adds, takes 0.50 ms, 120x128x784,
   1.2e7, takes 0.29 ms). Up to
   NNL_GEMM_MIN_COST one thread computes the whole product, and there is at
   most one thread per NNL_GEMM_MIN_COST. Measured on a 2-core AMD EPYC VM:
   with a worker that must be woken (25-40 us there) two threads lose up to
   a cost of 5e6 (0.6-0.75x) and gain from 2.5e7 (1.3-1.8x); with the pool's
   polling worker, K-MLP's products (1.6e7) split make its training 1.1-1.3x
   faster than one thread on an idle machine and 0.9x with a busy core.
   Smaller products gain too now that a worker is claimed chunk by chunk (a
   late worker's chunk is taken by the caller): Zen 3, two threads against
   one, back to back, median of 7 x 200 calls: 100^3 (cost 1.6e6) 41 -> 24
   us, 196x50x500 (R-LENET's second convolution at batch 1, 7.6e6) 219 ->
   127 us, 784x20x25 (its first, 1.1e6) 32 -> 13 us; with the worker asleep
   (2 ms between calls) within the noise either way. R-LENET batch-1
   nnl_predict on two threads 320-336 -> 237-239 us at 1e6 (245 at 2e6,
   the old 1e7: its convolutions ran on one thread). */
#ifndef NNL_GEMM_MIN_COST
#define NNL_GEMM_MIN_COST 1e6
#endif
/* A weight gradient of few columns, C = A^T B with A^T the layer's input
   (K samples x M inputs) and B its output gradient (K x N outputs, N small:
   a classifier's Dense(10), a regression's Dense(1)), fills a fraction of
   each 6 x 32 register tile (10 of 32 columns), and its transpose C^T =
   B^T A (N x M) fills most of them (10 of 12 rows): computed that way into
   a thread-local buffer of M x N floats (grown once) and transposed into
   C. Taken when the transpose's tiles are at least 1.5x fuller, for
   beta = 0 (a gradient written, not accumulated) and at most
   NNL_GEMM_NARROW_T_MAX elements; the choice depends on the shapes alone,
   so results still do not depend on the thread count (each element is a
   sum in another order than the direct product's: other last bits).
   Intel Xeon (AVX512-FP16 generation), one thread, gemm_bench, GFLOP/s
   direct -> transposed (OpenBLAS SkylakeX): K-MLP's 128x10x120 40.5 ->
   102 (101.7), T-LENET's 500x10x512 28.4 -> 106 (61.7), 784x10x128 49 ->
   117 (66), Dense(1)'s 128x1x120 4.0 -> 61 (68), 1000x3x64 14 -> 51 (68);
   not taken (within 1.5x): 2450x20x128, 71 either way. */
#ifndef NNL_GEMM_NARROW_T_MAX
#define NNL_GEMM_NARROW_T_MAX (1 << 18)
#endif
static bool narrow_transposed(bool ta, bool tb, int64_t M, int64_t N, float beta) {
    return ta && !tb && beta == 0.f && M > N && (double)M * N <= NNL_GEMM_NARROW_T_MAX &&
           tile_fill(N, M) >= 1.5 * tile_fill(M, N);
}
/* A thread's block of the product: sgemm_block, or the bfloat16 one below
   (bf16::block), which shares this splitting. */
typedef void (*Block)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t,
                      float, float *, int64_t, const float *, Act, int);
static void sgemm_ep(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, Act act,
                     Block block = sgemm_block) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.f) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
        epilogue(C, ldc, M, N, bias, act);
        return;
    }
    if (block == sgemm_block && narrow_transposed(ta, tb, M, N, beta)) {
        /* C^T = B^T A (N x M) into the thread's buffer, then C = its transpose */
        static thread_local Buffers tr;
        tr.ap = Buffers::grow(tr.ap, tr.ap_n, (size_t)(M * N));
        float *T = tr.ap;
        sgemm_ep(true, false, N, M, K, alpha, B, ldb, A, lda, 0.f, T, M, nullptr, ACT_LINEAR, block);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = T[j * M + i];
        epilogue(C, ldc, M, N, bias, act);
        return;
    }
    if (block == sgemm_block && /* float32 (the bf16 tables pass their own block and do their few rows) */
        (M <= 4 || (M <= NNL_GEMM_SMALL_M && !tb && small_m_fits(M, N, K)))) {
        sgemm_small_m(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        epilogue(C, ldc, M, N, bias, act);
        return;
    }
    const int tail = block == sgemm_block ? dot_tail(ta, N, K) : 0;
    bool split_m = M >= N;
    int64_t unit = split_m ? MR : NR, units = ((split_m ? M : N) + unit - 1) / unit;
    double cost = (double)M * N * K + 20.0 * ((double)M * N + (double)M * K + (double)K * N);
    /* A few rows against wide weights (batched inference of a few samples)
       is bound by reading B, as in sgemm_small_m: split by columns from the
       same size on, each thread reading its share of B once (the few-row
       products small_m_fits leaves here: B^T, or too large for it). AMD
       EPYC (Zen 3), two threads, K-MLP nnl_predict of 16 samples (cost
       3.9e6, before sgemm_small_m took it): 235-250k -> 359-387k
       samples/s. */
    bool few = M <= NNL_GEMM_SMALL_M && !split_m && N * K >= NNL_GEMM_SMALL_SPLIT;
    int T = (int)std::min<double>(
        {(double)threads(), (double)units, few ? (double)units : std::ceil(cost / NNL_GEMM_MIN_COST)});
    if (T <= 1) { /* also every product of cost <= NNL_GEMM_MIN_COST but the few-row ones */
        block(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, act, tail);
        return;
    }
    /* Each block packs the whole of the other operand again, so blocks stay
       large: one per thread, two (a late thread's second can go to another)
       when each still has 32 units (MC rows or 512 columns). */
    int64_t chunks = std::min<int64_t>(std::max<int64_t>(T, std::min<int64_t>(2 * T, units / 32)), units);
    int64_t per = (units + chunks - 1) / chunks, end = split_m ? M : N;
    chunks = (units + per - 1) / per;
    pool::run_chunks(chunks, T, [&](int64_t c) {
        int64_t lo = c * per * unit, hi = std::min((c + 1) * per * unit, end);
        if (split_m)
            block(ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta, C + lo * ldc, ldc, bias,
                  act, tail);
        else
            block(ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc,
                  bias ? bias + lo : nullptr, act, tail);
    });
}

static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sgemm_ep(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr, ACT_LINEAR);
}

static void sgemm_bias_act(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float *C, int64_t ldc, const float *bias, Act act) {
    sgemm_ep(false, false, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc, bias, act);
}

/* A B operand packed once for many products: a recurrent layer multiplies
   each step's h (a few rows) by the same U, and packing U (K x N) on every
   step cost as much as the step's arithmetic (20 x 800 x 200: 0.24 ms with
   packing, 2.4x less without). Layout: for each KC-deep block of B in turn,
   all of its NR-wide panels, as sgemm_block packs them. Owned by the caller
   (a layer member), grown once, reused. */
struct PackedB {
    float *p = nullptr;
    size_t n = 0;
    int64_t K = 0, N = 0;
    PackedB() = default;
    /* a cache of one pass: a copy (a layer copied for another inference
       workspace, Layer::clone) starts empty and packs its own */
    PackedB(const PackedB &) : PackedB() {}
    PackedB &operator=(const PackedB &) = delete;
    ~PackedB() { free(p); }
};

/* op(B) is K x N (B itself N x K when tb) */
static void pack_b_all(bool tb, const float *B, int64_t ldb, int64_t K, int64_t N, PackedB &out) {
    int64_t npan = (N + NR - 1) / NR;
    out.p = Buffers::grow(out.p, out.n, (size_t)(npan * NR * std::max<int64_t>(K, 1)));
    out.K = K, out.N = N;
    float *dst = out.p;
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = std::min<int64_t>(KC, K - pc);
        for (int64_t jp = 0; jp < npan; jp++) pack_b(tb, B, ldb, pc, 0, kc, N, dst, jp);
        dst += npan * NR * kc;
    }
}

/* Products below this many multiply-adds run on one thread: measured on the
   2-core Zen 3 VM with the pool's polling worker, 20 x 800 x 200 (3.2e6)
   takes 0.10 ms on one thread and 0.06 ms on two. */
#ifndef NNL_GEMM_PACKED_MIN_COST
#define NNL_GEMM_PACKED_MIN_COST 1e6
#endif

/* C[M,N] = op(A)[M,K] B + beta C with B packed by pack_b_all (op(A) = A
   row-major, or A^T: ta); threads take contiguous ranges of B's panels.
   Each element is summed in the same order whatever the thread count, and
   as sgemm sums it (the same kernels over the same KC blocks). */
static void sgemm_packed(int64_t M, const float *A, int64_t lda, const PackedB &B, float beta, float *C, int64_t ldc,
                         bool ta = false) {
    const int64_t K = B.K, N = B.N, npan = (N + NR - 1) / NR;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
        return;
    }
    auto part = [&](int64_t p0, int64_t p1) {
        Buffers &buf = tl_buf;
        int64_t mcmax = std::min<int64_t>(M, MC), kcmax = std::min<int64_t>(K, KC);
        buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)((mcmax + MR - 1) / MR * MR * kcmax));
        float *Ap = buf.ap;
        const float *bp = B.p;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = std::min<int64_t>(KC, K - pc);
            float bet = pc == 0 ? beta : 1.f;
            tl_prefetch_c = prefetch_c(M, (p1 - p0) * NR, ldc, bet);
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = std::min<int64_t>(MC, M - ic), mpan = (mc + MR - 1) / MR;
                for (int64_t ip = 0; ip < mpan; ip++) pack_a(ta, A, lda, ic, pc, mc, kc, Ap, ip);
                for (int64_t jp = p0; jp < p1;) {
                    int w = ukr2 && jp + 1 < p1 ? 2 : 1;
                    for (int64_t ip = 0; ip < mpan; ip++) {
                        int64_t i = ip * MR, j = jp * NR;
                        float *c = C + (ic + i) * ldc + j;
                        if (w == 2)
                            ukr2(kc, Ap + ip * MR * kc, 1, MR, bp + jp * NR * kc, bp + (jp + 1) * NR * kc, c, ldc, 1.f,
                                 bet, std::min<int64_t>(MR, mc - i), std::min<int64_t>(2 * NR, N - j));
                        else
                            ukr_tile(kc, Ap + ip * MR * kc, 1, MR, bp + jp * NR * kc, c, ldc, 1.f, bet,
                                std::min<int64_t>(MR, mc - i), std::min<int64_t>(NR, N - j));
                    }
                    jp += w;
                }
            }
            bp += npan * NR * kc;
        }
        tl_prefetch_c = false;
    };
    double cost = (double)M * N * K;
    int T = (int)std::min<double>({(double)threads(), (double)npan / 2, std::ceil(cost / NNL_GEMM_PACKED_MIN_COST)});
    if (T <= 1) return part(0, npan);
    int64_t per = (npan + T - 1) / T;
    per += per & 1; /* whole pairs of panels for ukr2 */
    int chunks = (int)((npan + per - 1) / per);
    pool::run_chunks(chunks, T, [&](int64_t c) { part(c * per, std::min(npan, (c + 1) * per)); });
}

/* ---- bfloat16 GEMM (mixed precision, nnl_set_precision) ------------------
   C (float32) = alpha op(A) op(B) + beta C with A and B rounded to bfloat16
   (8-bit mantissa, round to nearest even) while they are packed, products
   summed in float32: VDPBF16PS (AVX512-BF16) takes two bf16 pairs per lane
   and adds both products to a float32 lane, so both operands are packed as
   k-pairs: one 32-bit word holds the bf16 of k = 2p (low half) and 2p+1
   (high half); an odd last k pairs with a zero. Bp: for each pair, NR
   words (one per column), a zmm; Ap: see pack_a. The same loops as
   sgemm_block; the portable code (NNL_BF16=emulate, for CPUs without the
   instructions) rounds as VCVTNEPS2BF16 and gives each lane the same sums
   in the same order as VDPBF16PS (odd product first, then even; a product
   of two bf16 is exact in float32): on Sapphire Rapids the two agree bit
   for bit (tests/unit_bf16.hpp), but for denormal sums, which the
   instruction flushes to zero. */
namespace bf16 {
/* float32 -> bfloat16, round to nearest even (VCVTNEPS2BF16's rounding:
   NaN stays a quiet NaN, denormal inputs become signed zeros; the packing
   tested against the instruction, tests/unit_bf16.hpp). Used by the
   portable path and for the tails of the vectorised packing. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t e = u & 0x7f800000u;
    if (e == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40u); /* NaN */
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;                          /* Inf stays Inf */
    return (uint16_t)(e == 0 ? (u >> 16) & 0x8000u : r);
}
static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* the value a float32 becomes as a GEMM operand (tests compare with it) */
static inline float rounded(float f) { return widen(to_bf16(f)); }
static inline uint32_t pair(float lo, float hi) { return (uint32_t)to_bf16(lo) | (uint32_t)to_bf16(hi) << 16; }

/* The two conversions the packing needs, 16 words at a time: words of
   two rows (lo[c], hi[c]), and words of one run (src[2q], src[2q+1]). */
static inline void pairs16_s(const float *lo, const float *hi, uint32_t *dst) {
    for (int c = 0; c < 16; c++) dst[c] = pair(lo[c], hi[c]);
}
static inline void run32_s(const float *src, uint32_t *dst) {
    for (int q = 0; q < 16; q++) dst[q] = pair(src[2 * q], src[2 * q + 1]);
}
#if NNL_X86
#define NNL_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
/* Words of two rows (lo[c], hi[c]), c = 0..15, in registers: both rows
   rounded by one VCVTNE2PS2BF16 (hi's words above lo's), then VPERMW puts
   word c of each row side by side (word 2c <- c, 2c + 1 <- 16 + c). pack_b
   (pairs16_v) and the few-row kernel (small_rows_avx512) both make their
   pairs here. */
NNL_BF16_TARGET static inline __m512i pairs16_r(__m512 lo, __m512 hi) {
    alignas(64) static const uint16_t side_by_side[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                          8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_load_si512((const void *)side_by_side),
                                    (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
NNL_BF16_TARGET static void pairs16_v(const float *lo, const float *hi, uint32_t *dst) {
    _mm512_storeu_si512((void *)dst, pairs16_r(_mm512_loadu_ps(lo), _mm512_loadu_ps(hi)));
}
NNL_BF16_TARGET static void run32_v(const float *src, uint32_t *dst) {
    _mm512_storeu_si512((void *)dst, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src)));
}
#endif
template <bool HW> static inline void pairs16(const float *lo, const float *hi, uint32_t *dst) {
#if NNL_X86
    if (HW) return pairs16_v(lo, hi, dst);
#endif
    pairs16_s(lo, hi, dst);
}
template <bool HW> static inline void run32(const float *src, uint32_t *dst) {
#if NNL_X86
    if (HW) return run32_v(src, dst);
#endif
    run32_s(src, dst);
}

static thread_local Buffers tl_buf; /* packed bf16 words, in float-sized slots */

/* kc floats of one run as (kc + 1) / 2 pairs; an odd last one gets a zero
   partner */
template <bool HW> static inline void run_pairs(const float *src, int64_t kc, uint32_t *dst) {
    int64_t q = 0;
    for (; 2 * q + 32 <= kc; q += 16) run32<HW>(src + 2 * q, dst + q);
    for (; 2 * q + 1 < kc; q++) dst[q] = pair(src[2 * q], src[2 * q + 1]);
    if (2 * q < kc) dst[q] = pair(src[2 * q], 0.f);
}

/* A's rows ic .. ic+mc-1, depths k0 .. k0+kc-1, as panels of MR rows
   (kp = (kc+1)/2 words a row, zero padded): row r of panel ip at
   Ap + ip*MR*kp + r*rs, pair q at q*cs. Rows of A in memory (!ta): each
   row's pairs contiguous (rs = kp, cs = 1, 32 floats -> 16 words at a
   time); A^T (ta): each pair's MR rows side by side (rs = 1, cs = MR), from
   two memory rows at a time. */
template <bool HW>
static void pack_a(bool ta, const float *A, int64_t lda, int64_t ic, int64_t k0, int64_t mc, int64_t kc, uint32_t *Ap,
                   int64_t &rs, int64_t &cs) {
    int64_t kp = (kc + 1) / 2, mpan = (mc + MR - 1) / MR;
    rs = ta ? 1 : kp, cs = ta ? MR : 1;
    for (int64_t i = mc; i < mpan * MR; i++) /* the last panel's missing rows */
        for (int64_t q = 0; q < kp; q++) Ap[(i / MR) * MR * kp + (i % MR) * rs + q * cs] = 0;
    if (!ta) {
        for (int64_t i = 0; i < mc; i++)
            run_pairs<HW>(A + (ic + i) * lda + k0, kc, Ap + (i / MR) * MR * kp + (i % MR) * kp);
        return;
    }
    uint32_t tmp[16];
    for (int64_t q = 0; q < kp; q++) {
        const float *lo = A + (k0 + 2 * q) * lda + ic, *hi = lo + lda;
        bool odd = 2 * q + 1 < kc;
        int64_t i = 0;
        for (; odd && i + 16 <= mc; i += 16) {
            pairs16<HW>(lo + i, hi + i, tmp);
            for (int c = 0; c < 16; c++) Ap[((i + c) / MR) * MR * kp + q * MR + (i + c) % MR] = tmp[c];
        }
        for (; i < mc; i++) Ap[(i / MR) * MR * kp + q * MR + i % MR] = pair(lo[i], odd ? hi[i] : 0.f);
    }
}

/* Bp: panels of NR columns, each kp pairs x NR words (a zmm a pair), zero
   padded. B in memory (!tb): two rows at a time; B^T (tb): each column's
   pairs from one run, scattered NR words apart. kpad > kp (the AMX tiles):
   panels of kpad pairs, the last kpad - kp of them zero. */
template <bool HW>
static void pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc, uint32_t *Bp,
                   int64_t panel, int64_t kpad = 0) {
    int64_t j = panel * NR, nr = std::min<int64_t>(NR, nc - j), kp = (kc + 1) / 2, ks = std::max(kp, kpad);
    uint32_t *dst = Bp + panel * NR * ks;
    if (!tb) {
        for (int64_t q = 0; q < kp; q++) {
            const float *s0 = B + (k0 + 2 * q) * ldb + j0 + j, *s1 = s0 + ldb;
            uint32_t *d = dst + q * NR;
            bool odd = 2 * q + 1 < kc;
            if (odd && nr == NR) {
                pairs16<HW>(s0, s1, d);
                continue;
            }
            int64_t c = 0;
            for (; c < nr; c++) d[c] = pair(s0[c], odd ? s1[c] : 0.f);
            for (; c < NR; c++) d[c] = 0;
        }
    } else {
        uint32_t tmp[16];
        for (int64_t c = 0; c < NR; c++) {
            if (c >= nr) {
                for (int64_t q = 0; q < kp; q++) dst[q * NR + c] = 0;
                continue;
            }
            const float *src = B + (j0 + j + c) * ldb + k0;
            int64_t q = 0;
            for (; 2 * q + 32 <= kc; q += 16) {
                run32<HW>(src + 2 * q, tmp);
                for (int t = 0; t < 16; t++) dst[(q + t) * NR + c] = tmp[t];
            }
            for (; 2 * q + 1 < kc; q++) dst[q * NR + c] = pair(src[2 * q], src[2 * q + 1]);
            if (2 * q < kc) dst[q * NR + c] = pair(src[2 * q], 0.f);
        }
    }
    if (ks > kp) memset(dst + kp * NR, 0, (size_t)((ks - kp) * NR) * sizeof(uint32_t));
}

/* Micro-kernels: C[mr, nr] = alpha * A B + beta * C over kp pairs, for one
   (NP = 1) or two (NP = 2, a 6 x 32 tile) B panels; nr <= NP * NR. Row r's
   pair q of A is a[r*rs + q*cs] (pack_a). */
template <int NP>
static void ukr_generic(int64_t kp, const uint32_t *a, int64_t rs, int64_t cs, const uint32_t *b0, const uint32_t *b1,
                        float *C, int64_t ldc, float alpha, float beta, int64_t mr, int64_t nr) {
    float acc[NP][MR * NR] = {};
    for (int64_t q = 0; q < kp; q++, b0 += NR, b1 += NR)
        for (int h = 0; h < NP; h++) {
            const uint32_t *b = h ? b1 : b0;
            for (int r = 0; r < MR; r++) {
                uint32_t w = a[r * rs + q * cs];
                float alo = widen((uint16_t)w), ahi = widen((uint16_t)(w >> 16));
                float *c = acc[h] + r * NR;
                for (int j = 0; j < NR; j++) {
                    float s = c[j] + ahi * widen((uint16_t)(b[j] >> 16)); /* products of bf16 are exact */
                    c[j] = s + alo * widen((uint16_t)b[j]);
                }
            }
        }
    for (int h = 0; h < NP; h++) {
        int64_t n = std::min<int64_t>(NR, nr - h * NR);
        if (n > 0) store_tile(acc[h], C + h * NR, ldc, alpha, beta, mr, n);
    }
}

#if NNL_X86
template <int NP>
NNL_BF16_TARGET static void ukr_avx512(int64_t kp, const uint32_t *a, int64_t rs, int64_t cs, const uint32_t *b0,
                                       const uint32_t *b1, float *C, int64_t ldc, float alpha, float beta, int64_t mr,
                                       int64_t nr) {
    /* the loops over r and h unrolled (at -O2 GCC does not): the 6 x NP
       accumulators stay in registers */
    __m512 c[MR][NP];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 2
        for (int h = 0; h < NP; h++) c[r][h] = _mm512_setzero_ps();
    const uint32_t *ar[MR] = {a, a + rs, a + 2 * rs, a + 3 * rs, a + 4 * rs, a + 5 * rs};
    for (int64_t q = 0; q < kp; q++, b0 += NR, b1 += NR) {
        __m512bh x[NP];
        x[0] = (__m512bh)_mm512_load_si512((const void *)b0);
        if (NP == 2) x[NP - 1] = (__m512bh)_mm512_load_si512((const void *)b1);
        int64_t o = q * cs;
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512bh u = (__m512bh)_mm512_set1_epi32((int)ar[r][o]);
#pragma GCC unroll 2
            for (int h = 0; h < NP; h++) c[r][h] = _mm512_dpbf16_ps(c[r][h], u, x[h]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    alignas(64) float tmp[MR * NR];
    for (int h = 0; h < NP; h++) {
        int64_t n = std::min<int64_t>(NR, nr - h * NR);
        if (n <= 0) break;
        if (mr == MR && n == NR) {
            for (int r = 0; r < MR; r++) {
                float *cp = C + r * ldc + h * NR;
                __m512 v = _mm512_mul_ps(va, c[r][h]);
                if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp), v);
                _mm512_storeu_ps(cp, v);
            }
            continue;
        }
        for (int r = 0; r < MR; r++) _mm512_store_ps(tmp + r * NR, c[r][h]);
        store_tile(tmp, C + h * NR, ldc, alpha, beta, mr, n);
    }
}
#endif

/* Whether this CPU has AVX512-BF16 (and NNL_NO_SIMD, NNL_BF16=off or
   NNL_BF16=emulate do not turn it off). Read on each call: tests change
   the environment. */
static bool hardware() {
#if NNL_X86
    const char *e = getenv("NNL_BF16");
    if (getenv("NNL_NO_SIMD") || (e && (!strcmp(e, "off") || !strcmp(e, "emulate")))) return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}
/* NNL_BF16=emulate: the portable kernel stands in where the CPU lacks the
   instructions (slow; for tests on any CPU) */
static bool emulate() {
    const char *e = getenv("NNL_BF16");
    return e && !strcmp(e, "emulate");
}

/* ---- AMX: the bf16 products on tiles (Intel Sapphire Rapids and newer) --
   TDPBF16PS multiplies a tile of A (16 rows of 16 k-pairs: 16 x 32 bf16)
   by a tile of B (16 k-pairs of 16 columns: one of pack_b's panels over 16
   pairs) into a 16 x 16 tile of float32 sums: 8,192 products an
   instruction, where VDPBF16PS does 32 (and issues, on the VM this was
   written on, at a quarter of the FMA's rate: mixed_bfloat16 ran slower
   than float32 without AMX). The operands are the same bf16 roundings and
   the sums float32, but the tile unit rounds them its own way: neither
   VDPBF16PS's order nor a chain of FMAs in either order within a pair
   (measured here: 9 % of the elements differ in the last bits at depth
   32, 72 % at 700; at depth 2 none). So the results meet the same error
   bound as the AVX512-BF16 kernel (tests/unit_bf16.hpp), not its bits;
   denormal sums flush to zero. Linux gives a process the
   tiles' 8 KB of state only after arch_prctl(ARCH_REQ_XCOMP_PERM), asked
   once here; where that is refused (an old kernel, a sandbox) or
   NNL_BF16=avx512 is set, the AVX512-BF16 kernel runs. The instructions
   are inline assembly (binutils 2.36 or newer): no compiler option. */
#if NNL_AMX
static bool amx_permitted() {
    static const bool ok = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 22 & 1) || !(d >> 24 & 1)) return false; /* BF16, TILE */
        const long get_perm = 0x1022, req_perm = 0x1023, xtiledata = 18; /* asm/prctl.h, fpu/xstate */
        unsigned long mask = 0;
        return syscall(SYS_arch_prctl, req_perm, xtiledata) == 0 && syscall(SYS_arch_prctl, get_perm, &mask) == 0 &&
               (mask >> xtiledata & 1);
    }();
    return ok;
}
#endif
/* Whether the bf16 products run on AMX: the CPU has it, the kernel allows
   it, and hardware() holds without NNL_BF16=avx512. Read on each call. */
static bool amx() {
#if NNL_AMX
    const char *e = getenv("NNL_BF16");
    return hardware() && !(e && !strcmp(e, "avx512")) && amx_permitted();
#else
    return false;
#endif
}

#if NNL_AMX
/* Every tile 16 rows of 64 bytes: tmm0-3 the C tiles of a 32 x 32 block,
   tmm4-5 its two A tiles, tmm6-7 its two B tiles */
struct alignas(64) TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};
static TileConfig tile_config() {
    TileConfig t;
    memset(&t, 0, sizeof t);
    t.palette = 1;
    for (int i = 0; i < 8; i++) t.colsb[i] = 64, t.rows[i] = 16;
    return t;
}
/* AT&T | Intel operand order; loads and stores are compiler barriers (the
   packed buffers are written by ordinary stores just before) */
#define NNL_TLOAD(t, p, stride)                                                                                        \
    __asm__ volatile("{tileloadd (%0,%1,1), %%tmm" #t "|tileloadd %%tmm" #t ", [%0+%1*1]}" ::"r"(p),                   \
                     "r"((int64_t)(stride))                                                                            \
                     : "memory")
#define NNL_TSTORE(t, p, stride)                                                                                       \
    __asm__ volatile("{tilestored %%tmm" #t ", (%0,%1,1)|tilestored [%0+%1*1], %%tmm" #t "}" ::"r"(p),                 \
                     "r"((int64_t)(stride))                                                                            \
                     : "memory")
#define NNL_TZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define NNL_TDP(c, a, b) __asm__ volatile("{tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbf16ps %%tmm" #c ", %%tmm" #a ", %%tmm" #b "}" ::)

/* C[mr, nr] = alpha A B + beta C for a block of MT x NT tiles (mr <= 16 MT,
   nr <= 16 NT) over nch chunks of 16 pairs: a, 16 MT rows of kpad pairs
   (pack_a_rows); b0, b1 two panels (pack_b with kpad). A whole block with
   alpha 1 and beta 0 or 1 goes straight between C and the tiles; any other
   through t (32 x 32 floats) and AVX-512 (alpha acc + beta C, as the other
   kernels write their tiles). */
template <int MT, int NT>
NNL_BF16_TARGET static void amx_tiles(int64_t nch, const uint32_t *a, int64_t kpad, const uint32_t *b0,
                                      const uint32_t *b1, float *C, int64_t ldc, float alpha, float beta, int64_t mr,
                                      int64_t nr, float *t) {
    const int64_t sa = kpad * 4, sc = ldc * 4;
    const uint32_t *a1 = a + 16 * kpad;
    const bool direct = mr == 16 * MT && nr == 16 * NT && alpha == 1.f && (beta == 0.f || beta == 1.f);
    if (direct && beta == 1.f) {
        NNL_TLOAD(0, C, sc);
        if (NT == 2) NNL_TLOAD(1, C + 16, sc);
        if (MT == 2) NNL_TLOAD(2, C + 16 * ldc, sc);
        if (MT == 2 && NT == 2) NNL_TLOAD(3, C + 16 * ldc + 16, sc);
    } else {
        NNL_TZERO(0);
        if (NT == 2) NNL_TZERO(1);
        if (MT == 2) NNL_TZERO(2);
        if (MT == 2 && NT == 2) NNL_TZERO(3);
    }
    for (int64_t q = 0; q < nch; q++) {
        NNL_TLOAD(4, a + 16 * q, sa);
        NNL_TLOAD(6, b0 + 256 * q, 64);
        NNL_TDP(0, 4, 6);
        if (NT == 2) {
            NNL_TLOAD(7, b1 + 256 * q, 64);
            NNL_TDP(1, 4, 7);
        }
        if (MT == 2) {
            NNL_TLOAD(5, a1 + 16 * q, sa);
            NNL_TDP(2, 5, 6);
            if (NT == 2) NNL_TDP(3, 5, 7);
        }
    }
    float *o = direct ? C : t;
    const int64_t so = direct ? sc : 128, ro = direct ? ldc : 32;
    NNL_TSTORE(0, o, so);
    if (NT == 2) NNL_TSTORE(1, o + 16, so);
    if (MT == 2) NNL_TSTORE(2, o + 16 * ro, so);
    if (MT == 2 && NT == 2) NNL_TSTORE(3, o + 16 * ro + 16, so);
    if (direct) return;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t r = 0; r < mr; r++)
        for (int64_t j = 0; j < nr; j += 16) {
            __mmask16 m = nr - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nr - j)) - 1);
            float *c = C + r * ldc + j;
            __m512 v = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, t + r * 32 + j));
            if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), v);
            _mm512_mask_storeu_ps(c, m, v);
        }
}

/* op(A)'s rows ic .. ic+mc-1, depths k0 .. k0+kc-1, as a matrix of kpad
   pairs a row (the A tiles' layout: pack_a's rows in memory, with a row
   stride of kpad), its rows rounded up to 16 and its pairs to kpad with
   zeros. A^T: two rows of memory give a pair of 16 rows at a time. */
template <bool HW>
static void pack_a_rows(bool ta, const float *A, int64_t lda, int64_t ic, int64_t k0, int64_t mc, int64_t kc,
                        uint32_t *Ap, int64_t kpad) {
    const int64_t kp = (kc + 1) / 2, rows = (mc + 15) / 16 * 16;
    if (!ta) {
        for (int64_t i = 0; i < mc; i++) run_pairs<HW>(A + (ic + i) * lda + k0, kc, Ap + i * kpad);
    } else { /* 16 pairs of 16 rows at a time, turned round in L1: whole lines of Ap written */
        alignas(64) uint32_t T[16][16];
        for (int64_t q0 = 0; q0 < kp; q0 += 16) {
            const int64_t nq = std::min<int64_t>(16, kp - q0);
            for (int64_t i = 0; i < mc; i += 16) {
                const int64_t ni = std::min<int64_t>(16, mc - i);
                for (int64_t u = 0; u < nq; u++) {
                    const int64_t q = q0 + u;
                    const float *lo = A + (k0 + 2 * q) * lda + ic + i, *hi = lo + lda;
                    const bool odd = 2 * q + 1 < kc;
                    if (odd && ni == 16)
                        pairs16<HW>(lo, hi, T[u]);
                    else
                        for (int64_t c = 0; c < ni; c++) T[u][c] = pair(lo[c], odd ? hi[c] : 0.f);
                }
                for (int64_t r = 0; r < ni; r++)
                    for (int64_t u = 0; u < nq; u++) Ap[(i + r) * kpad + q0 + u] = T[u][r];
            }
        }
    }
    if (kpad > kp)
        for (int64_t i = 0; i < mc; i++) memset(Ap + i * kpad + kp, 0, (size_t)(kpad - kp) * sizeof(uint32_t));
    memset(Ap + mc * kpad, 0, (size_t)((rows - mc) * kpad) * sizeof(uint32_t));
}

/* One thread's share on AMX: block<true>'s loops, with A in 16-row tiles
   (two at a time: 32 x 32 blocks of C) and the depth in blocks of at most
   NNL_AMX_KC (the tiles' sums go through C once per block), all but the
   last a multiple of 32 and about equal, each in chunks of 16 pairs (zero
   pairs pad the last): K-MLP's 784 is 416 + 368, not 256 x 3 + 16. */
#ifndef NNL_AMX_KC
#define NNL_AMX_KC 512
#endif
static void block_amx(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, Act act) {
    const bool ep = bias || act != ACT_LINEAR;
    const int64_t nkb = (K + NNL_AMX_KC - 1) / NNL_AMX_KC, kcb = ((K + nkb - 1) / nkb + 31) / 32 * 32;
    const int64_t ncmax = std::min<int64_t>(N, NC), kpmax = kcb / 2, rmax = (std::min<int64_t>(M, MC) + 15) / 16 * 16;
    Buffers &buf = tl_buf;
    buf.bp = Buffers::grow(buf.bp, buf.bp_n, (size_t)((ncmax + NR - 1) / NR * NR * kpmax));
    buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)(rmax * kpmax + 32 * 32)); /* A's rows, then the 32 x 32 t */
    uint32_t *Bp = (uint32_t *)buf.bp, *Ap = (uint32_t *)buf.ap;
    float *t = buf.ap + rmax * kpmax; /* 64-byte aligned: rmax * kpmax is a multiple of 256 */
    static const TileConfig cfg = tile_config();
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = std::min<int64_t>(NC, N - jc), npan = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += kcb) { /* kcb is even: pairs never straddle two blocks */
            const int64_t kc = std::min<int64_t>(kcb, K - pc), kpad = ((kc + 1) / 2 + 15) / 16 * 16;
            const float bet = pc == 0 ? beta : 1.f;
            for (int64_t jp = 0; jp < npan; jp++) pack_b<true>(tb, B, ldb, pc, jc, kc, nc, Bp, jp, kpad);
            for (int64_t ic = 0; ic < M; ic += MC) {
                const int64_t mc = std::min<int64_t>(MC, M - ic);
                pack_a_rows<true>(ta, A, lda, ic, pc, mc, kc, Ap, kpad);
                for (int64_t jp = 0; jp < npan; jp += 2) {
                    const int64_t j = jp * NR, nr = std::min<int64_t>(2 * NR, nc - j);
                    const uint32_t *b0 = Bp + jp * NR * kpad, *b1 = b0 + NR * kpad;
                    for (int64_t i = 0; i < mc; i += 32) {
                        const int64_t mr = std::min<int64_t>(32, mc - i);
                        const uint32_t *a = Ap + i * kpad;
                        float *c = C + (ic + i) * ldc + jc + j;
                        if (mr > 16 && nr > 16)
                            amx_tiles<2, 2>(kpad / 16, a, kpad, b0, b1, c, ldc, alpha, bet, mr, nr, t);
                        else if (mr > 16)
                            amx_tiles<2, 1>(kpad / 16, a, kpad, b0, b1, c, ldc, alpha, bet, mr, nr, t);
                        else if (nr > 16)
                            amx_tiles<1, 2>(kpad / 16, a, kpad, b0, b1, c, ldc, alpha, bet, mr, nr, t);
                        else
                            amx_tiles<1, 1>(kpad / 16, a, kpad, b0, b1, c, ldc, alpha, bet, mr, nr, t);
                    }
                }
                if (ep && pc + kc >= K) /* this block of C is final and still in cache */
                    epilogue(C + ic * ldc + jc, ldc, mc, nc, bias ? bias + jc : nullptr, act);
            }
        }
    }
    __asm__ volatile("tilerelease" ::);
}
#undef NNL_TLOAD
#undef NNL_TSTORE
#undef NNL_TZERO
#undef NNL_TDP
#endif

/* One thread's share (gemm::Block): sgemm_block's loops on bf16 panels.
   HW: the AVX512-BF16 conversions and kernel (or AMX: block_amx), else the
   portable ones. */
template <bool HW>
static void block(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, Act act,
                  int /* sgemm_block's dot columns: none here */) {
#if NNL_AMX
    if (HW && amx()) return block_amx(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, act);
#endif
    bool ep = bias || act != ACT_LINEAR;
    Buffers &buf = tl_buf;
    int64_t ncmax = std::min<int64_t>(N, NC), kpmax = (std::min<int64_t>(K, KC) + 1) / 2,
            mcmax = std::min<int64_t>(M, MC);
    buf.bp = Buffers::grow(buf.bp, buf.bp_n, (size_t)((ncmax + NR - 1) / NR * NR * kpmax));
    buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)((mcmax + MR - 1) / MR * MR * kpmax));
    uint32_t *Bp = (uint32_t *)buf.bp, *Ap = (uint32_t *)buf.ap;
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = std::min<int64_t>(NC, N - jc), npan = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += KC) { /* KC is even: pairs never straddle two blocks */
            int64_t kc = std::min<int64_t>(KC, K - pc), kp = (kc + 1) / 2;
            float bet = pc == 0 ? beta : 1.f;
            for (int64_t jp = 0; jp < npan; jp++) pack_b<HW>(tb, B, ldb, pc, jc, kc, nc, Bp, jp);
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = std::min<int64_t>(MC, M - ic), mpan = (mc + MR - 1) / MR, rs, cs;
                pack_a<HW>(ta, A, lda, ic, pc, mc, kc, Ap, rs, cs);
                for (int64_t jp = 0; jp < npan;) {
                    bool two = jp + 1 < npan;
                    const uint32_t *b0 = Bp + jp * NR * kp, *b1 = two ? b0 + NR * kp : b0;
                    for (int64_t ip = 0; ip < mpan; ip++) {
                        int64_t i = ip * MR, j = jp * NR, mr = std::min<int64_t>(MR, mc - i);
                        const uint32_t *a = Ap + ip * MR * kp;
                        float *c = C + (ic + i) * ldc + jc + j;
#if NNL_X86
                        if (HW) {
                            if (two)
                                ukr_avx512<2>(kp, a, rs, cs, b0, b1, c, ldc, alpha, bet, mr,
                                              std::min<int64_t>(2 * NR, nc - j));
                            else
                                ukr_avx512<1>(kp, a, rs, cs, b0, b1, c, ldc, alpha, bet, mr,
                                              std::min<int64_t>(NR, nc - j));
                            continue;
                        }
#endif
                        if (two)
                            ukr_generic<2>(kp, a, rs, cs, b0, b1, c, ldc, alpha, bet, mr,
                                           std::min<int64_t>(2 * NR, nc - j));
                        else
                            ukr_generic<1>(kp, a, rs, cs, b0, b1, c, ldc, alpha, bet, mr, std::min<int64_t>(NR, nc - j));
                    }
                    jp += two ? 2 : 1;
                }
                if (ep && pc + kc >= K) /* this block of C is final and still in cache */
                    epilogue(C + ic * ldc + jc, ldc, mc, nc, bias ? bias + jc : nullptr, act);
            }
        }
    }
}

/* A few rows (M <= 4, single-sample inference) with B in memory (!tb):
   packing B (rounding all of it into panels) cost more than the product
   (K-MLP's batch-1 prediction took 2.5x float32's time), so B is read in
   place, 64 columns at a time: two rows of B rounded into one vector of
   bf16 pairs (VCVTNE2PS2BF16, then VPERMW to put row k and k+1 of each
   column side by side, as pack_b does) and multiplied by the same
   VDPBF16PS as the packed kernel, per KC block from zero, then alpha acc +
   beta C: the same bits as block<true> on VDPBF16PS (but for beta other
   than 0 and 1 on its partial tiles). a: the rows as pairs (kp words a
   row). words: where B's pairs come from, rounded here (PairsOfB) or kept
   from an earlier call (KeptPairs, WeightCache). */
#if NNL_X86
/* the lanes of vector v (0..3) of the 64 columns from j0 that lie before N */
static inline __mmask16 strip_mask(int64_t N, int64_t j0, int v) {
    int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, N - j0 - 16 * v));
    return (__mmask16)((1u << n) - 1);
}
/* The words of rows k = 2q, k + 1 of B (float32, read in place and
   rounded): vector v of the 64 columns from j0 (lanes m); a zero partner
   past K */
struct PairsOfB {
    const float *B;
    int64_t ldb, K;
    NNL_BF16_TARGET __m512bh operator()(int64_t j0, int64_t q, int v, __mmask16 m) const {
        int64_t k = 2 * q;
        const float *b0 = B + k * ldb + j0 + 16 * v;
        __m512 lo = _mm512_maskz_loadu_ps(m, b0);
        __m512 hi = k + 1 < K ? _mm512_maskz_loadu_ps(m, b0 + ldb) : _mm512_setzero_ps();
        return (__m512bh)pairs16_r(lo, hi);
    }
};
/* The same words, kept (WeightCache's strips: kp x 64 words a strip) */
struct KeptPairs {
    const uint32_t *P;
    int64_t kp;
    NNL_BF16_TARGET __m512bh operator()(int64_t j0, int64_t q, int v, __mmask16) const {
        return (__m512bh)_mm512_load_si512((const void *)(P + j0 * kp + q * 64 + 16 * v));
    }
};
template <int R, class Words>
NNL_BF16_TARGET static void small_rows_avx512(int64_t N, int64_t K, float alpha, const uint32_t *a, int64_t kp,
                                              Words words, float beta, float *C, int64_t ldc) {
    for (int64_t j0 = 0; j0 < N; j0 += 64) {
        __mmask16 m[4];
        for (int v = 0; v < 4; v++) m[v] = strip_mask(N, j0, v);
        for (int64_t pc = 0; pc < K; pc += KC) { /* KC even: a block starts on a pair */
            int64_t qend = (std::min<int64_t>(K, pc + KC) + 1) / 2;
            __m512 acc[R][4];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
            for (int64_t q = pc / 2; q < qend; q++) {
                __m512bh x[4];
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++) x[v] = words(j0, q, v, m[v]);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    __m512bh u = (__m512bh)_mm512_set1_epi32((int)a[r * kp + q]);
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], u, x[v]);
                }
            }
            float bet = pc == 0 ? beta : 1.f;
            __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(bet);
            for (int r = 0; r < R; r++)
                for (int v = 0; v < 4; v++) {
                    float *c = C + r * ldc + j0 + 16 * v;
                    __m512 x = _mm512_mul_ps(va, acc[r][v]);
                    if (bet != 0.f) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[v], c), x);
                    _mm512_mask_storeu_ps(c, m[v], x);
                }
        }
    }
}
/* small_rows_avx512 for 1-4 rows (R at run time) */
template <class Words>
static void rows_avx512(int R, int64_t N, int64_t K, float alpha, const uint32_t *a, int64_t kp, Words words,
                        float beta, float *C, int64_t ldc) {
    switch (R) {
    case 4: return small_rows_avx512<4>(N, K, alpha, a, kp, words, beta, C, ldc);
    case 3: return small_rows_avx512<3>(N, K, alpha, a, kp, words, beta, C, ldc);
    case 2: return small_rows_avx512<2>(N, K, alpha, a, kp, words, beta, C, ldc);
    default: return small_rows_avx512<1>(N, K, alpha, a, kp, words, beta, C, ldc);
    }
}
#endif
/* M <= 4 rows of op(A), rounded once into pairs (M x kp words), then the
   rows two or one at a time */
static void small_m_avx512(bool ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                           const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#if NNL_X86
    Buffers &buf = tl_buf;
    int64_t kp = (K + 1) / 2;
    buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)(M * kp));
    uint32_t *a = (uint32_t *)buf.ap;
    for (int64_t r = 0; r < M; r++)
        if (!ta) /* a row in memory: 32 floats a conversion, as pack_a */
            run_pairs<true>(A + r * lda, K, a + r * kp);
        else
            for (int64_t q = 0; q < kp; q++)
                a[r * kp + q] = pair(gemm::at(A, lda, ta, r, 2 * q), 2 * q + 1 < K ? gemm::at(A, lda, ta, r, 2 * q + 1) : 0.f);
    for (int64_t r = 0; r < M; r += 2)
        rows_avx512((int)std::min<int64_t>(2, M - r), N, K, alpha, a + r * kp, kp, PairsOfB{B, ldb, K}, beta,
                    C + r * ldc, ldc);
#else
    (void)ta, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C,
        (void)ldc;
#endif
}

/* ---- Rounded weights kept for small predictions --------------------------
   A prediction of 1-4 samples rounds the whole of each Dense kernel to bf16
   on every call (small_rows_avx512 reads B as float32): twice the bytes of
   the bf16 words it multiplies, and the conversions; a convolution packs
   its kernel on every call (pack_b). Under mixed_bfloat16, nnl_predict and
   nnl_predict_classes keep the rounded kernels instead (Dense, and the
   convolutions that run on bf16: kept_product), made at the first such
   call after the weights last changed and reused until they change again.
   Layout: strips of 64 columns, each kp x 64 words (k-pair major), zero
   past column N and past row K: one sequential stream per strip, the words
   small_rows_avx512 and pack_b make (pairs16_r), multiplied by the same
   kernel (small_rows_avx512 with KeptPairs), so the same bits. AMD EPYC Zen 4, 1 thread, median batch-1
   latency: K-MLP 4.2 -> 2.2 us, R-LENET 192-250 -> 128 us (its Dense(500)
   and second convolution).
   Validity: Model::wver, one more at the start and at the end of every call
   that may change the model (nnl::Mutation: all but the predict calls). The
   header's contract keeps those calls off a model while predictions run on
   it, and a prediction nested in one (nnl_fit's callback) keeps nothing
   (Model::mutating). Each workspace that predictions run in (the model, its
   inference copies) has its own cache: one call at a time uses it. */
struct WeightCache {
    struct Entry {
        const float *w = nullptr; /* the float32 weights it is made from; NULL: free */
        int64_t K = 0, N = 0;
        uint32_t *p = nullptr;
        size_t cap = 0; /* words */
    };
    static constexpr int MAX_ENTRIES = 64;
    static constexpr size_t MAX_BYTES = (size_t)256 << 20; /* beyond: rounded per call, as without */
    uint64_t stamp = 0; /* the Model::wver the entries are for */
    std::vector<Entry> e;
    size_t bytes = 0;
    WeightCache() {}
    WeightCache(const WeightCache &) {} /* a copied model makes its own */
    WeightCache &operator=(const WeightCache &) {
        stamp = 0;
        for (auto &x : e) x.w = nullptr;
        return *this;
    }
    ~WeightCache() {
        for (auto &x : e) free(x.p);
    }
    static int64_t words(int64_t K, int64_t N) { return (N + 63) / 64 * 64 * ((K + 1) / 2); }
    /* the words of w (K x N, row-major, ldb N) for version ver, made if
       missing; NULL when the limits say no (the caller rounds per call) */
    const uint32_t *get(const float *w, int64_t K, int64_t N, uint64_t ver);
};
/* The cache of the prediction running on this thread (WeightCacheScope),
   and the model version it is valid for. */
static thread_local WeightCache *tl_wcache = nullptr;
static thread_local uint64_t tl_wcache_ver = 0;

#if NNL_X86
/* the strips of W (K x N, ldb), as described above: PairsOfB's words */
NNL_BF16_TARGET static void pack_strips(const float *W, int64_t K, int64_t N, int64_t ldb, uint32_t *P) {
    int64_t kp = (K + 1) / 2;
    PairsOfB words{W, ldb, K};
    for (int64_t j0 = 0; j0 < N; j0 += 64)
        for (int64_t q = 0; q < kp; q++)
            for (int v = 0; v < 4; v++)
                _mm512_store_si512((void *)(P + j0 * kp + q * 64 + 16 * v),
                                   (__m512i)words(j0, q, v, strip_mask(N, j0, v)));
}
#endif

const uint32_t *WeightCache::get(const float *w, int64_t K, int64_t N, uint64_t ver) {
#if NNL_X86
    if (stamp != ver) { /* the weights changed: every entry is stale (their memory is kept) */
        for (auto &x : e) x.w = nullptr;
        stamp = ver;
    }
    for (auto &x : e)
        if (x.w == w && x.K == K && x.N == N) return x.p;
    size_t need = (size_t)words(K, N);
    Entry *f = nullptr;
    for (auto &x : e) /* a free entry: one large enough, else any */
        if (!x.w && (!f || (x.cap >= need && f->cap < need))) f = &x;
    if (!f) {
        if ((int)e.size() >= MAX_ENTRIES) return nullptr;
        e.emplace_back();
        f = &e.back();
    }
    if (f->cap < need) {
        if (bytes - f->cap * 4 + need * 4 > MAX_BYTES) return nullptr;
        free(f->p);
        bytes -= f->cap * 4;
        f->p = nullptr;
        f->cap = 0;
        void *q = nullptr;
        if (posix_memalign(&q, 64, need * 4) != 0) return nullptr;
        f->p = (uint32_t *)q;
        f->cap = need;
        bytes += need * 4;
    }
    pack_strips(w, K, N, N, f->p);
    f->w = w;
    f->K = K;
    f->N = N;
    return f->p;
#else
    (void)w, (void)K, (void)N, (void)ver;
    return nullptr;
#endif
}

/* C = act(A W + bias) on the kept words of W (K x N, row-major): Dense's
   product for 1-4 rows, a convolution's for its few samples' positions.
   1-4 rows: rounded once, the strips split over the threads as
   sgemm_small_m splits its columns (each thread reads its share of the
   words). More: the rows four at a time (each group's A rounded into pairs
   on its own thread, as pack_a rounds them), on the threads sgemm_ep would
   give the product, split by rows (whole groups). The same bits as
   block<true> (and as small_m_avx512 for 1-4 rows), for any split. false (nothing written) where it does not apply: no cache on
   this thread, the cache's limits, more than 4 rows where the products run
   on AMX. */
static bool kept_product(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *W, float *C,
                         int64_t ldc, const float *bias, Act act) {
#if NNL_X86
    if (!tl_wcache || M < 1 || N < 1 || K < 1) return false;
    if (M > 4 && amx()) return false; /* the tiles' product (their own bits, and faster) */
    const uint32_t *P = tl_wcache->get(W, K, N, tl_wcache_ver);
    if (!P) return false;
    int64_t kp = (K + 1) / 2, groups = (M + 3) / 4;
    if (M <= 4) { /* one group: split by strips, as sgemm_small_m splits its columns (split_columns) */
        Buffers &buf = tl_buf;
        buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)(M * kp));
        const uint32_t *a = (uint32_t *)buf.ap;
        for (int64_t r = 0; r < M; r++) run_pairs<true>(A + r * lda, K, (uint32_t *)buf.ap + r * kp);
        split_columns(N, K, [&](int64_t j0, int64_t j1) { /* whole strips: j0 a multiple of 64 */
            float *c = C + j0;
            rows_avx512((int)M, j1 - j0, K, 1.f, a, kp, KeptPairs{P + j0 * kp, kp}, 0.f, c, ldc);
            if (bias || act != ACT_LINEAR) epilogue(c, ldc, M, j1 - j0, bias ? bias + j0 : nullptr, act);
        });
        return true;
    }
    auto rows = [&](int64_t g0, int64_t g1) { /* groups g0 .. g1 - 1 */
        Buffers &buf = tl_buf;
        buf.ap = Buffers::grow(buf.ap, buf.ap_n, (size_t)(4 * kp));
        uint32_t *a = (uint32_t *)buf.ap;
        for (int64_t g = g0; g < g1; g++) {
            int64_t r0 = 4 * g, R = std::min<int64_t>(4, M - r0);
            for (int64_t r = 0; r < R; r++) run_pairs<true>(A + (r0 + r) * lda, K, a + r * kp);
            rows_avx512((int)R, N, K, 1.f, a, kp, KeptPairs{P, kp}, 0.f, C + r0 * ldc, ldc);
        }
        int64_t r0 = 4 * g0, r1 = std::min(M, 4 * g1);
        if (g1 > g0 && (bias || act != ACT_LINEAR)) epilogue(C + r0 * ldc, ldc, r1 - r0, N, bias, act);
    };
    double cost = (double)M * N * K + 20.0 * ((double)M * N + (double)M * K + (double)K * N);
    int T = (int)std::min<double>({(double)threads(), (double)groups, std::ceil(cost / NNL_GEMM_MIN_COST)});
    if (T <= 1) {
        rows(0, groups);
        return true;
    }
    int64_t per = (groups + T - 1) / T;
    pool::run_chunks((groups + per - 1) / per, T,
                     [&](int64_t c) { rows(c * per, std::min(groups, (c + 1) * per)); });
    return true;
#else
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)W, (void)C, (void)ldc, (void)bias, (void)act;
    return false;
#endif
}

/* The kernel-table entries (Kernels::sgemm, sgemm_bias_act) of the bf16
   tables. Threads split C as sgemm_ep splits it; a few rows (M <= 4) run
   on the calling thread: small_m_avx512, or the block. */
template <bool HW>
static void sgemm_ep(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias, Act act) {
    if (M > 0 && M <= 4 && N > 0 && K > 0 && alpha != 0.f) {
        if (!HW || tb) return block<HW>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, act, 0);
        small_m_avx512(ta, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return epilogue(C, ldc, M, N, bias, act);
    }
    gemm::sgemm_ep(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, act, block<HW>);
}
template <bool HW>
static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sgemm_ep<HW>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr, ACT_LINEAR);
}
template <bool HW>
static void sgemm_bias_act(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float *C, int64_t ldc, const float *bias, Act act) {
    sgemm_ep<HW>(false, false, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc, bias, act);
}
} // namespace bf16
} // namespace gemm

/* ---- Vectorised elementwise code: one source, three instruction sets ----
   The elementwise kernels (activations, losses, optimizer updates, clipping,
   norm loops) are written once, as templates over a vector type V: V1 (one
   float, plain C++: the reference), V8 (AVX2 + FMA) or V16 (AVX-512).
   simd::run<Kernel>(args) calls the widest instantiation the CPU has,
   through a wrapper compiled for that instruction set (target attribute,
   and flatten so that the primitives below inline into it), as the GEMM
   micro-kernels are chosen. The compiler alone does not vectorise these
   loops at the Makefile's -O2: sqrt may set errno there (-fno-math-errno
   cannot be set per function), and the default target has no AVX.
   The last partial vector of a loop is loaded and stored under a mask, so
   every element gets the same arithmetic wherever a thread's range starts.
   NaN: vmax(a, b) and vmin(a, b) are MAXPS/MINPS (a > b ? a : b and
   a < b ? a : b), which return b when either is NaN: a clamp written
   vmin(hi, vmax(lo, x)) lets a NaN x through.
   NNL_NO_SIMD=1 in the environment selects V1, NNL_SIMD=avx2 caps at V8. */
#if NNL_X86
#define NNL_AVX2 __attribute__((target("avx2,fma")))
#define NNL_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif
/* On every generic helper and every lambda of a kernel: the primitives
   must end up inlined in run_v8/run_v16 (below), and flatten alone reaches
   one level of calls under clang. scripts/check_vectorized.sh fails on a
   call left in a kernel. */
#define NNL_INLINE __attribute__((always_inline))

namespace simd {

/* GCC 12's AVX-512 intrinsics pass an undefined vector (_mm512_undefined_ps)
   as the unused pass-through operand, which -W(maybe-)uninitialized
   reports once they are inlined. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

struct Full {}; /* a whole vector: plain loads and stores */

/* ---- V1: one float, libm's functions ---- */
struct M1 {
    bool m;
};
struct V1 {
    float v;
    enum { W = 1 };
    typedef M1 M;
    typedef Full Tail;
    typedef double Acc; /* sums of many elements are kept in double */
    static V1 set(float x) { return {x}; }
    static V1 load(const float *p, Full) { return {*p}; }
    static V1 load(const float *p, Full, float) { return {*p}; }
    void store(float *p, Full) const { *p = v; }
    static Full tail(int64_t) { return {}; }
};
static inline V1 operator+(V1 a, V1 b) { return {a.v + b.v}; }
static inline V1 operator-(V1 a, V1 b) { return {a.v - b.v}; }
static inline V1 operator*(V1 a, V1 b) { return {a.v * b.v}; }
static inline V1 operator/(V1 a, V1 b) { return {a.v / b.v}; }
static inline V1 operator-(V1 a) { return {-a.v}; }
static inline V1 fma(V1 a, V1 b, V1 c) { return {a.v * b.v + c.v}; }
static inline V1 vsqrt(V1 a) { return {std::sqrt(a.v)}; }
/* sqrt(a) for a >= 0 within one ulp (exact in scalar code): the vector
   versions take the reciprocal square root estimate r, one Newton step on
   it, then s = a r corrected by the residual a - s s (fused), sparing the
   divider that the caller's division needs. Against sqrt on every 61st
   normal float: 0.09 % one ulp off, none more (AVX-512 and AVX2 alike).
   0, +inf, NaN and subnormals come back as they went in (a subnormal's
   root is below any epsilon it is added to). Adam's update (AdamK),
   101,770 weights, Intel Xeon, one thread: 39 -> 28 us. */
static inline V1 vsqrt_nr(V1 a) { return vsqrt(a); }
static inline V1 vabs(V1 a) { return {std::fabs(a.v)}; }
static inline V1 vmax(V1 a, V1 b) { return {a.v > b.v ? a.v : b.v}; }
static inline V1 vmin(V1 a, V1 b) { return {a.v < b.v ? a.v : b.v}; }
static inline M1 lt(V1 a, V1 b) { return {a.v < b.v}; }
static inline M1 le(V1 a, V1 b) { return {a.v <= b.v}; }
static inline M1 gt(V1 a, V1 b) { return {a.v > b.v}; }
static inline M1 isnan_(V1 a) { return {a.v != a.v}; }
static inline M1 operator&(M1 a, M1 b) { return {a.m && b.m}; }
static inline V1 sel(M1 m, V1 a, V1 b) { return m.m ? a : b; }
static inline V1 keep(Full, V1 a) { return a; }
static inline float hsum(V1 a) { return a.v; }
static inline float hmax(V1 a) { return a.v; }
static inline void acc_add(double &s, V1 a) { s += a.v; }
static inline void acc_fma(double &s, V1 a, V1 b) { s += (double)a.v * b.v; }
static inline double acc_total(double s) { return s; }
static inline V1 vexp(V1 a) { return {std::exp(a.v)}; }
static inline V1 vexpm1(V1 a) { return {std::expm1(a.v)}; }
static inline V1 vlog(V1 a) { return {std::log(a.v)}; }
static inline V1 vlog1p(V1 a) { return {std::log1p(a.v)}; }
static inline V1 verf(V1 a) { return {std::erf(a.v)}; }
static inline V1 vtanh(V1 a) { return {std::tanh(a.v)}; }

#if NNL_X86
/* ---- V8: AVX2 + FMA, 8 floats ---- */
struct M8 {
    __m256 m; /* all ones where true */
};
struct T8 {
    __m256i m; /* the first k lanes */
};
struct A8 {
    __m256d lo, hi;
};
struct V8 {
    __m256 v;
    enum { W = 8 };
    typedef M8 M;
    typedef T8 Tail;
    typedef A8 Acc;
    NNL_AVX2 static V8 set(float x) { return {_mm256_set1_ps(x)}; }
    NNL_AVX2 static V8 load(const float *p, Full) { return {_mm256_loadu_ps(p)}; }
    NNL_AVX2 static V8 load(const float *p, Full, float) { return {_mm256_loadu_ps(p)}; }
    NNL_AVX2 static V8 load(const float *p, T8 t) { return {_mm256_maskload_ps(p, t.m)}; }
    NNL_AVX2 static V8 load(const float *p, T8 t, float fill) { /* fill outside the tail */
        return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, t.m), _mm256_castsi256_ps(t.m))};
    }
    NNL_AVX2 void store(float *p, Full) const { _mm256_storeu_ps(p, v); }
    NNL_AVX2 void store(float *p, T8 t) const { _mm256_maskstore_ps(p, t.m, v); }
    NNL_AVX2 static T8 tail(int64_t k) {
        return {_mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))};
    }
};
NNL_AVX2 static inline V8 operator+(V8 a, V8 b) { return {_mm256_add_ps(a.v, b.v)}; }
NNL_AVX2 static inline V8 operator-(V8 a, V8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
NNL_AVX2 static inline V8 operator*(V8 a, V8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
NNL_AVX2 static inline V8 operator/(V8 a, V8 b) { return {_mm256_div_ps(a.v, b.v)}; }
NNL_AVX2 static inline V8 operator-(V8 a) { return {_mm256_xor_ps(a.v, _mm256_set1_ps(-0.f))}; }
NNL_AVX2 static inline V8 fma(V8 a, V8 b, V8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
NNL_AVX2 static inline V8 vsqrt(V8 a) { return {_mm256_sqrt_ps(a.v)}; }
NNL_AVX2 static inline V8 vsqrt_nr(V8 a) {
    __m256 r = _mm256_rsqrt_ps(a.v), h = _mm256_mul_ps(_mm256_set1_ps(0.5f), a.v);
    r = _mm256_mul_ps(r, _mm256_fnmadd_ps(_mm256_mul_ps(h, r), r, _mm256_set1_ps(1.5f)));
    __m256 s = _mm256_mul_ps(a.v, r);
    s = _mm256_fmadd_ps(_mm256_fnmadd_ps(s, s, a.v), _mm256_mul_ps(_mm256_set1_ps(0.5f), r), s);
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(a.v, _mm256_set1_ps(1.17549435e-38f), _CMP_GE_OQ),
                              _mm256_cmp_ps(a.v, _mm256_set1_ps(3.40282347e38f), _CMP_LE_OQ));
    return {_mm256_blendv_ps(a.v, s, ok)};
}
NNL_AVX2 static inline V8 vabs(V8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.f), a.v)}; }
NNL_AVX2 static inline V8 vmax(V8 a, V8 b) { return {_mm256_max_ps(a.v, b.v)}; }
NNL_AVX2 static inline V8 vmin(V8 a, V8 b) { return {_mm256_min_ps(a.v, b.v)}; }
NNL_AVX2 static inline M8 lt(V8 a, V8 b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
NNL_AVX2 static inline M8 le(V8 a, V8 b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
NNL_AVX2 static inline M8 gt(V8 a, V8 b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
NNL_AVX2 static inline M8 isnan_(V8 a) { return {_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q)}; }
NNL_AVX2 static inline M8 operator&(M8 a, M8 b) { return {_mm256_and_ps(a.m, b.m)}; }
NNL_AVX2 static inline V8 sel(M8 m, V8 a, V8 b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
NNL_AVX2 static inline V8 keep(Full, V8 a) { return a; }
NNL_AVX2 static inline V8 keep(T8 t, V8 a) { return {_mm256_and_ps(a.v, _mm256_castsi256_ps(t.m))}; }
NNL_AVX2 static inline float hsum(V8 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
NNL_AVX2 static inline float hmax(V8 a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
NNL_AVX2 static inline void acc_add(A8 &s, V8 a) {
    s.lo = _mm256_add_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(a.v)));
    s.hi = _mm256_add_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(a.v, 1)));
}
NNL_AVX2 static inline void acc_fma(A8 &s, V8 a, V8 b) { /* s += a b, the product in double */
    s.lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a.v)), _mm256_cvtps_pd(_mm256_castps256_ps128(b.v)), s.lo);
    s.hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a.v, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b.v, 1)), s.hi);
}
NNL_AVX2 static inline double acc_total(A8 s) {
    __m256d t = _mm256_add_pd(s.lo, s.hi);
    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}
/* x = 2^e m, m in [1, 2), for positive normal x (e as a float) */
NNL_AVX2 static inline V8 frexp_(V8 x, V8 &e) {
    __m256i b = _mm256_castps_si256(x.v);
    e.v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127)));
    return {_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffff)),
                                                 _mm256_set1_epi32(0x3f800000)))};
}
NNL_AVX2 static inline V8 vround(V8 a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
/* 2^n for integral n in [-126, 127] */
NNL_AVX2 static inline V8 pow2n(V8 n) {
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23))};
}

/* ---- V16: AVX-512F, 16 floats ---- */
struct M16 {
    __mmask16 m;
};
struct T16 {
    __mmask16 m;
};
struct A16 {
    __m512d lo, hi;
};
struct V16 {
    __m512 v;
    enum { W = 16 };
    typedef M16 M;
    typedef T16 Tail;
    typedef A16 Acc;
    NNL_AVX512 static V16 set(float x) { return {_mm512_set1_ps(x)}; }
    NNL_AVX512 static V16 load(const float *p, Full) { return {_mm512_loadu_ps(p)}; }
    NNL_AVX512 static V16 load(const float *p, Full, float) { return {_mm512_loadu_ps(p)}; }
    NNL_AVX512 static V16 load(const float *p, T16 t) { return {_mm512_maskz_loadu_ps(t.m, p)}; }
    NNL_AVX512 static V16 load(const float *p, T16 t, float fill) {
        return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), t.m, p)};
    }
    NNL_AVX512 void store(float *p, Full) const { _mm512_storeu_ps(p, v); }
    NNL_AVX512 void store(float *p, T16 t) const { _mm512_mask_storeu_ps(p, t.m, v); }
    NNL_AVX512 static T16 tail(int64_t k) { return {(__mmask16)((1u << k) - 1)}; }
};
NNL_AVX512 static inline V16 operator+(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
NNL_AVX512 static inline V16 operator-(V16 a, V16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
NNL_AVX512 static inline V16 operator*(V16 a, V16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
NNL_AVX512 static inline V16 operator/(V16 a, V16 b) { return {_mm512_div_ps(a.v, b.v)}; }
NNL_AVX512 static inline V16 operator-(V16 a) {
    return {_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32((int)0x80000000u)))};
}
NNL_AVX512 static inline V16 fma(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
NNL_AVX512 static inline V16 vsqrt(V16 a) { return {_mm512_sqrt_ps(a.v)}; }
NNL_AVX512 static inline V16 vsqrt_nr(V16 a) {
    __m512 r = _mm512_rsqrt14_ps(a.v), h = _mm512_mul_ps(_mm512_set1_ps(0.5f), a.v);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(_mm512_mul_ps(h, r), r, _mm512_set1_ps(1.5f)));
    __m512 s = _mm512_mul_ps(a.v, r);
    s = _mm512_fmadd_ps(_mm512_fnmadd_ps(s, s, a.v), _mm512_mul_ps(_mm512_set1_ps(0.5f), r), s);
    __mmask16 ok = _mm512_cmp_ps_mask(a.v, _mm512_set1_ps(1.17549435e-38f), _CMP_GE_OQ) &
                   _mm512_cmp_ps_mask(a.v, _mm512_set1_ps(3.40282347e38f), _CMP_LE_OQ);
    return {_mm512_mask_mov_ps(a.v, ok, s)};
}
NNL_AVX512 static inline V16 vabs(V16 a) {
    return {_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7fffffff)))};
}
NNL_AVX512 static inline V16 vmax(V16 a, V16 b) { return {_mm512_max_ps(a.v, b.v)}; }
NNL_AVX512 static inline V16 vmin(V16 a, V16 b) { return {_mm512_min_ps(a.v, b.v)}; }
NNL_AVX512 static inline M16 lt(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
NNL_AVX512 static inline M16 le(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
NNL_AVX512 static inline M16 gt(V16 a, V16 b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
NNL_AVX512 static inline M16 isnan_(V16 a) { return {_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q)}; }
NNL_AVX512 static inline M16 operator&(M16 a, M16 b) { return {(__mmask16)(a.m & b.m)}; }
NNL_AVX512 static inline V16 sel(M16 m, V16 a, V16 b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }
NNL_AVX512 static inline V16 keep(Full, V16 a) { return a; }
NNL_AVX512 static inline V16 keep(T16 t, V16 a) { return {_mm512_maskz_mov_ps(t.m, a.v)}; }
NNL_AVX512 static inline float hsum(V16 a) { return _mm512_reduce_add_ps(a.v); }
NNL_AVX512 static inline float hmax(V16 a) { return _mm512_reduce_max_ps(a.v); }
NNL_AVX512 static inline __m256 high8(__m512 a) { /* lanes 8..15 */
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
}
NNL_AVX512 static inline void acc_add(A16 &s, V16 a) {
    s.lo = _mm512_add_pd(s.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(a.v)));
    s.hi = _mm512_add_pd(s.hi, _mm512_cvtps_pd(high8(a.v)));
}
NNL_AVX512 static inline void acc_fma(A16 &s, V16 a, V16 b) {
    s.lo = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a.v)), _mm512_cvtps_pd(_mm512_castps512_ps256(b.v)), s.lo);
    s.hi = _mm512_fmadd_pd(_mm512_cvtps_pd(high8(a.v)), _mm512_cvtps_pd(high8(b.v)), s.hi);
}
NNL_AVX512 static inline double acc_total(A16 s) { return _mm512_reduce_add_pd(_mm512_add_pd(s.lo, s.hi)); }
NNL_AVX512 static inline V16 frexp_(V16 x, V16 &e) {
    __m512i b = _mm512_castps_si512(x.v);
    e.v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(b, 23), _mm512_set1_epi32(127)));
    return {_mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffff)),
                                                 _mm512_set1_epi32(0x3f800000)))};
}
NNL_AVX512 static inline V16 vround(V16 a) {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
NNL_AVX512 static inline V16 pow2n(V16 n) {
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23))};
}
#endif

/* A zero double accumulator of V's kind. */
template <class V> static inline typename V::Acc acc_zero();
template <> inline double acc_zero<V1>() { return 0; }
#if NNL_X86
template <> NNL_AVX2 inline A8 acc_zero<V8>() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
template <> NNL_AVX512 inline A16 acc_zero<V16>() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
#endif

/* ---- Math functions of the vector paths (V1 calls libm instead) ----
   exp and expm1: Cephes' expf reduction and polynomial (about 1 ulp): x =
   n ln2 + r with |r| <= ln2 / 2, exp(r) - 1 = r + r^2 P(r). 2^n is applied
   in two halves so that results in the denormal range come out right; the
   clamp to [-104, 88.8] keeps n in range (exp is 0 below, inf above). */
template <class V> static inline NNL_INLINE V exp_reduce(const V &x0, V &p) {
    V x = vmin(V::set(88.8f), vmax(V::set(-104.f), x0));
    V n = vround(x * V::set(1.44269504088896341f));
    x = fma(n, V::set(-0.693359375f), x);
    x = fma(n, V::set(2.12194440e-4f), x);
    V y = V::set(1.9875691500e-4f);
    y = fma(y, x, V::set(1.3981999507e-3f));
    y = fma(y, x, V::set(8.3334519073e-3f));
    y = fma(y, x, V::set(4.1665795894e-2f));
    y = fma(y, x, V::set(1.6666665459e-1f));
    y = fma(y, x, V::set(5.0000001201e-1f));
    V h = vround(n * V::set(0.5f));
    p = pow2n(h) * pow2n(n - h); /* 2^n */
    return fma(y, x * x, x);      /* exp(r) - 1 */
}
template <class V> static inline NNL_INLINE V vexp(const V &x) {
    V p, e = exp_reduce(x, p);
    return fma(e, p, p);
}
template <class V> static inline NNL_INLINE V vexpm1(const V &x) {
    V p, e = exp_reduce(x, p);
    return fma(e, p, p - V::set(1.f));
}
/* log of a positive normal x (or NaN): Cephes' logf (about 1 ulp); m in
   [sqrt(1/2), sqrt(2)), log(1 + f) = f - f^2/2 + f^3 P(f). */
template <class V> static inline NNL_INLINE V vlog(const V &x) {
    V e, m = frexp_(x, e);
    auto big = gt(m, V::set(1.41421356237f));
    m = sel(big, m * V::set(0.5f), m);
    e = sel(big, e + V::set(1.f), e);
    V f = m - V::set(1.f), z = f * f;
    V y = V::set(7.0376836292E-2f);
    y = fma(y, f, V::set(-1.1514610310E-1f));
    y = fma(y, f, V::set(1.1676998740E-1f));
    y = fma(y, f, V::set(-1.2420140846E-1f));
    y = fma(y, f, V::set(1.4249322787E-1f));
    y = fma(y, f, V::set(-1.6668057665E-1f));
    y = fma(y, f, V::set(2.0000714765E-1f));
    y = fma(y, f, V::set(-2.4999993993E-1f));
    y = fma(y, f, V::set(3.3333331174E-1f));
    y = y * f * z;
    y = fma(e, V::set(-2.12194440e-4f), y);
    y = fma(z, V::set(-0.5f), y);
    return sel(isnan_(x), x, fma(e, V::set(0.693359375f), f + y));
}
/* log(1 + a) for a > -1: log(u) a / (u - 1) with u = 1 + a corrects the
   rounding of u (Goldberg), and is a itself where u rounds to 1. */
template <class V> static inline NNL_INLINE V vlog1p(const V &a) {
    V u = a + V::set(1.f), d = u - V::set(1.f);
    return sel(gt(vabs(d), V::set(0.f)), vlog(u) * (a / d), a);
}
/* erf: the rational approximation Eigen and TensorFlow use in float (a few
   ulp), its input clamped to [-4, 4] where erf is +-1 in float. */
template <class V> static inline NNL_INLINE V verf(const V &x0) {
    V x = vmin(V::set(4.f), vmax(V::set(-4.f), x0));
    V z = x * x;
    V p = V::set(-2.72614225801306e-10f);
    p = fma(p, z, V::set(2.77068142495902e-08f));
    p = fma(p, z, V::set(-2.10102402082508e-06f));
    p = fma(p, z, V::set(-5.69250639462346e-05f));
    p = fma(p, z, V::set(-7.34990630326855e-04f));
    p = fma(p, z, V::set(-2.95459980854025e-03f));
    p = fma(p, z, V::set(-1.60960333262415e-02f));
    V q = V::set(-1.45660718464996e-05f);
    q = fma(q, z, V::set(-2.13374055278905e-04f));
    q = fma(q, z, V::set(-1.68282697438203e-03f));
    q = fma(q, z, V::set(-7.37332916720468e-03f));
    q = fma(q, z, V::set(-1.42647390514189e-02f));
    return x * p / q;
}
/* tanh: Eigen's odd/even rational approximation (a few ulp) on the input
   clamped to +-7.9053 (where tanh is +-1 in float); x itself below 4e-4. */
template <class V> static inline NNL_INLINE V vtanh(const V &x) {
    V c = vmin(V::set(7.90531110763549805f), vmax(V::set(-7.90531110763549805f), x));
    V z = c * c;
    V p = V::set(-2.76076847742355e-16f);
    p = fma(p, z, V::set(2.00018790482477e-13f));
    p = fma(p, z, V::set(-8.60467152213735e-11f));
    p = fma(p, z, V::set(5.12229709037114e-08f));
    p = fma(p, z, V::set(1.48572235717979e-05f));
    p = fma(p, z, V::set(6.37261928875436e-04f));
    p = fma(p, z, V::set(4.89352455891786e-03f));
    V q = V::set(1.19825839466702e-06f);
    q = fma(q, z, V::set(1.18534705686654e-04f));
    q = fma(q, z, V::set(2.26843463243900e-03f));
    q = fma(q, z, V::set(4.89352518554385e-03f));
    return sel(lt(vabs(x), V::set(0.0004f)), x, c * p / q);
}

/* f(i, t) for i = 0, W, 2W, ... < n: t is Full for whole vectors and V's
   Tail (the lanes below n) for the last partial one. */
template <class V, class F> static inline NNL_INLINE void loop(int64_t n, F f) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) f(i, Full());
    if (i < n) f(i, V::tail(n - i));
}

/* The same where f may run twice on an element with the same result (a
   copy, a max): the last partial vector is the whole vector that ends at
   n, overlapping the one before, when n >= W. AMD Zen 2/3 store masked
   vectors (VMASKMOVPS) more than ten times slower than whole ones, and a
   masked store per call made short loops (im2col's runs of 5 floats)
   slower than memcpy. Below W the masked tail remains. */
template <class V, class F> static inline NNL_INLINE void loop_over(int64_t n, F f) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) f(i, Full());
    if (i < n) {
        if (n >= V::W)
            f(n - V::W, Full());
        else
            f(i, V::tail(n - i));
    }
}

/* The dispatch: 0 plain C++, 1 AVX2 + FMA, 2 AVX-512 (lowered by the
   environment, above, and by tests). Unoptimised builds (-O0) inline
   nothing, and the primitives above work only inlined into run_v8/run_v16
   (out of line, a struct holding a ymm/zmm register does not cross a call
   intact): they run the plain path. */
static int level_from_cpu() {
#if NNL_X86 && defined(__OPTIMIZE__)
    if (getenv("NNL_NO_SIMD")) return 0;
    const char *cap = getenv("NNL_SIMD");
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && !(cap && !strcmp(cap, "avx2"))) return 2;
    if (avx2) return 1;
#endif
    return 0;
}
static int level = level_from_cpu();

template <class K, class... A> __attribute__((flatten)) static auto run_v1(A... a) {
    return K::template run<V1>(a...);
}
#if NNL_X86
template <class K, class... A> NNL_AVX2 __attribute__((flatten)) static auto run_v8(A... a) {
    return K::template run<V8>(a...);
}
template <class K, class... A> NNL_AVX512 __attribute__((flatten)) static auto run_v16(A... a) {
    return K::template run<V16>(a...);
}
#endif
/* K::run<V>(a...) with the widest V this CPU (and `level`) allows */
template <class K, class... A> static inline auto run(A... a) {
#if NNL_X86
    if (level >= 2) return run_v16<K>(a...);
    if (level == 1) return run_v8<K>(a...);
#endif
    return run_v1<K>(a...);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
} // namespace simd

#if NNL_X86
/* the AVX2 + FMA kernels outside simd:: (dropout, transpose) may run */
static bool have_avx2() { return simd::level >= 1; }
#endif

/* ---- Elementwise kernels ---- */

/* y[r, :] += b (a bias), or with rows = 1 and b = x, y += x */
struct AddRowsK {
    template <class V> static void run(const float *b, float *y, int64_t rows, int64_t n) {
        for (int64_t r = 0; r < rows; r++) {
            float *yr = y + r * n;
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { (V::load(yr + j, t) + V::load(b + j, t)).store(yr + j, t); });
        }
    }
};

static void cpu_bias_add(float *y, const float *b, int64_t rows, int64_t n) {
    int64_t total = rows * n;
    (void)total;
    par_for(rows, total, [&](int64_t lo_, int64_t hi_) { simd::run<AddRowsK>(b, y + lo_ * n, hi_ - lo_, n); });
}

/* s[j] = the sum of column j over the rows, in row order: columns in
   blocks of up to 4 vectors, summed in registers while the rows stream */
struct ColSumK {
    template <class V> static void run(const float *dy, float *s, int64_t rows, int64_t n) {
        for (int64_t j0 = 0; j0 < n; j0 += 4 * V::W) {
            const int64_t m = std::min<int64_t>(4 * V::W, n - j0), full = m / V::W, rem = m % V::W;
            const auto t = V::tail(rem > 0 ? rem : 1);
            V a[4] = {V::set(0.f), V::set(0.f), V::set(0.f), V::set(0.f)}, at = V::set(0.f);
            const float *p = dy + j0;
            for (int64_t r = 0; r < rows; r++, p += n) {
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++)
                    if (q < full) a[q] = a[q] + V::load(p + q * V::W, simd::Full());
                if (rem) at = at + V::load(p + full * V::W, t);
            }
            float *o = s + j0;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                if (q < full) a[q].store(o + q * V::W, simd::Full());
            if (rem) at.store(o + full * V::W, t);
        }
    }
};

/* db = the column sums of dy (rows x n). Rows in fixed groups of about
   64K values (whatever the thread count, so the sums are the same on any
   number of threads), each group's sums in row order, the groups' added in
   order. One group (a Dense layer's batch) is the plain row-order sum. It
   was a call per row: R-LENET's first convolution (100,352 rows of 20)
   1.1-1.2 -> 0.2 ms, its backward 3.1-3.6 -> 2.3 ms a step (Intel Xeon,
   AVX512-FP16 generation, two threads). */
static void cpu_bias_grad(const float *dy, float *db, int64_t rows, int64_t n) {
    if (n <= 0) return;
    const int64_t per = std::max<int64_t>(16, ((int64_t)1 << 16) / n), groups = (rows + per - 1) / per;
    if (groups <= 1) { /* (no rows: zeros) */
        simd::run<ColSumK>(dy, db, rows, n);
        return;
    }
    thread_local std::vector<float> part; /* grows once */
    if (part.size() < (size_t)(groups * n)) part.resize((size_t)(groups * n));
    float *pp = part.data();
    par_for(groups, rows * n, [&](int64_t lo, int64_t hi) {
        for (int64_t g = lo; g < hi; g++)
            simd::run<ColSumK>(dy + g * per * n, pp + g * n, std::min(per, rows - g * per), n);
    });
    for (int64_t j = 0; j < n; j++) db[j] = pp[j];
    for (int64_t g = 1; g < groups; g++) simd::run<AddRowsK>(pp + g * n, db, (int64_t)1, n);
}

/* ---- Activations ----
   y = act(x) and act'(x) for every vector type (V1 through libm). NaN
   propagates through every activation, forward and backward (dx = dy *
   act'(x) with act'(NaN) = NaN), so that the finite checks on the loss and
   the gradients see it; +-Inf gives the limit where there is one. The
   clamps that make the limits come out (gelu, softsign, swish) change no
   finite result: beyond them the float result is already the limit. */
static const float SELU_ALPHA = 1.6732632423543772f, SELU_SCALE = 1.0507009873554805f;
static const float LEAKY_SLOPE = 0.2f; /* keras.activations.leaky_relu's default */

static inline float sigmoidf(float x) {
    return x >= 0 ? 1.f / (1.f + std::exp(-x)) : std::exp(x) / (1.f + std::exp(x));
}
template <class V> static inline NNL_INLINE V vsigmoid(const V &x) { return V::set(1.f) / (V::set(1.f) + vexp(-x)); }
static inline simd::V1 vsigmoid(simd::V1 x) { return {sigmoidf(x.v)}; }

template <Act A, class V> static inline NNL_INLINE V act_f(const V &x) {
    const V zero = V::set(0.f), one = V::set(1.f);
    if constexpr (A == ACT_RELU) return vmax(zero, x);
    else if constexpr (A == ACT_SIGMOID) return vsigmoid(x);
    else if constexpr (A == ACT_TANH) return vtanh(x);
    else if constexpr (A == ACT_LEAKY_RELU) return sel(gt(x, zero), x, V::set(LEAKY_SLOPE) * x);
    else if constexpr (A == ACT_ELU) return sel(gt(x, zero), x, vexpm1(x));
    else if constexpr (A == ACT_SELU) return V::set(SELU_SCALE) * sel(gt(x, zero), x, V::set(SELU_ALPHA) * vexpm1(x));
    else if constexpr (A == ACT_GELU) {
        V c = vmax(V::set(-20.f), x);
        return V::set(0.5f) * c * (one + verf(c * V::set(0.70710678118654752f)));
    } else if constexpr (A == ACT_SOFTPLUS) return vmax(zero, x) + vlog1p(vexp(-vabs(x)));
    else if constexpr (A == ACT_SOFTSIGN) {
        V c = vmin(V::set(1e30f), vmax(V::set(-1e30f), x));
        return c / (one + vabs(c));
    } else if constexpr (A == ACT_SWISH) {
        V c = vmax(V::set(-200.f), x);
        return c * vsigmoid(c);
    } else if constexpr (A == ACT_HARD_SIGMOID) return vmin(one, vmax(zero, fma(V::set(0.2f), x, V::set(0.5f))));
    else if constexpr (A == ACT_EXPONENTIAL) return vexp(x);
    else return x;
}

/* act'(x); y = act(x). Where act_from_output(A), x may be y itself. */
template <Act A, class V> static inline NNL_INLINE V act_d(const V &x, const V &y) {
    const V zero = V::set(0.f), one = V::set(1.f);
    if constexpr (A == ACT_RELU) return sel(isnan_(x), x, sel(gt(x, zero), one, zero));
    else if constexpr (A == ACT_SIGMOID) return y * (one - y);
    else if constexpr (A == ACT_TANH) return one - y * y;
    else if constexpr (A == ACT_LEAKY_RELU) return sel(isnan_(x), x, sel(gt(x, zero), one, V::set(LEAKY_SLOPE)));
    else if constexpr (A == ACT_ELU) return sel(gt(x, zero), one, y + one);
    else if constexpr (A == ACT_SELU) return sel(gt(x, zero), V::set(SELU_SCALE), y + V::set(SELU_SCALE * SELU_ALPHA));
    else if constexpr (A == ACT_GELU) {
        V c = vmin(V::set(20.f), vmax(V::set(-20.f), x));
        return V::set(0.5f) * (one + verf(c * V::set(0.70710678118654752f))) +
               c * V::set(0.3989422804014327f) * vexp(V::set(-0.5f) * c * c);
    } else if constexpr (A == ACT_SOFTPLUS) return vsigmoid(x);
    else if constexpr (A == ACT_SOFTSIGN) {
        V d = one + vabs(x);
        return one / (d * d);
    } else if constexpr (A == ACT_SWISH) {
        V c = vmin(V::set(200.f), vmax(V::set(-200.f), x)), s = vsigmoid(c);
        return s * (one + c * (one - s));
    } else if constexpr (A == ACT_HARD_SIGMOID)
        return sel(isnan_(x), x, sel(gt(x, V::set(-2.5f)) & lt(x, V::set(2.5f)), V::set(0.2f), zero));
    else if constexpr (A == ACT_EXPONENTIAL) return y;
    else return one;
}

/* f(k) with k a std::integral_constant<Act, a> (softmax excluded): a
   loop per activation, none switching inside. */
template <class F> static inline NNL_INLINE void with_act(Act a, F f) {
    switch (a) {
    case ACT_RELU: return f(std::integral_constant<Act, ACT_RELU>());
    case ACT_SIGMOID: return f(std::integral_constant<Act, ACT_SIGMOID>());
    case ACT_TANH: return f(std::integral_constant<Act, ACT_TANH>());
    case ACT_LEAKY_RELU: return f(std::integral_constant<Act, ACT_LEAKY_RELU>());
    case ACT_ELU: return f(std::integral_constant<Act, ACT_ELU>());
    case ACT_SELU: return f(std::integral_constant<Act, ACT_SELU>());
    case ACT_GELU: return f(std::integral_constant<Act, ACT_GELU>());
    case ACT_SOFTPLUS: return f(std::integral_constant<Act, ACT_SOFTPLUS>());
    case ACT_SOFTSIGN: return f(std::integral_constant<Act, ACT_SOFTSIGN>());
    case ACT_SWISH: return f(std::integral_constant<Act, ACT_SWISH>());
    case ACT_HARD_SIGMOID: return f(std::integral_constant<Act, ACT_HARD_SIGMOID>());
    case ACT_EXPONENTIAL: return f(std::integral_constant<Act, ACT_EXPONENTIAL>());
    default: return f(std::integral_constant<Act, ACT_LINEAR>());
    }
}

/* Y = act(X + bias) over rows (row strides ldx, ldy; n long); bias may be
   NULL, X may be Y */
struct BiasActK {
    template <class V>
    static void run(const float *X, int64_t ldx, float *Y, int64_t ldy, int64_t rows, int64_t n, const float *bias,
                    Act a) {
        with_act(a, [&](auto k) NNL_INLINE {
            for (int64_t r = 0; r < rows; r++) {
                const float *x = X + r * ldx;
                float *y = Y + r * ldy;
                simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE {
                    V v = V::load(x + j, t);
                    if (bias) v = v + V::load(bias + j, t);
                    act_f<decltype(k)::value>(v).store(y + j, t);
                });
            }
        });
    }
};

/* The same on rows that lie end to end (ldx = ldy = n): one run over
   rows * n values, the bias read from rep (rep[k] = bias[k % n], n + W
   values) at each vector's phase, so rows of a few vectors' width (a
   convolution's 20 or 50 filters) waste no lanes on partial vectors.
   Each value gets exactly the operations BiasActK gives it. */
struct BiasActFlatK {
    template <class V> static void run(float *Y, int64_t total, const float *rep, int64_t n, Act a) {
        with_act(a, [&](auto k) NNL_INLINE {
            int64_t ph = 0;
            simd::loop<V>(total, [&](int64_t j, const auto &t) NNL_INLINE {
                V v = V::load(Y + j, t) + V::load(rep + ph, t);
                act_f<decltype(k)::value>(v).store(Y + j, t);
                for (ph += V::W; ph >= n;) ph -= n;
            });
        });
    }
};

/* dx = dy * act'(x) */
struct ActBackwardK {
    template <class V>
    static void run(Act a, const float *x, const float *y, const float *dy, float *dx, int64_t n) {
        with_act(a, [&](auto k) NNL_INLINE {
            simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
                V d = act_d<decltype(k)::value>(V::load(x + i, t), V::load(y + i, t));
                (V::load(dy + i, t) * d).store(dx + i, t);
            });
        });
    }
};

/* One LSTM step with Keras' default activations (tanh, sigmoid), gates i,
   f, c (g), o side by side in each row of Z (rows x 4u, stride ldz): the
   pre-activations become the gates, c = f c_prev + i g, h = o tanh(c). One
   pass instead of four activation calls and two loops per row. */
struct LstmStepK {
    template <class V>
    static void run(float *Z, int64_t ldz, const float *CP, int64_t ldcp, float *C, int64_t ldc, float *H, int64_t ldh,
                    int64_t rows, int64_t u) {
        for (int64_t r = 0; r < rows; r++) {
            float *z = Z + r * ldz, *c = C + r * ldc, *h = H + r * ldh;
            const float *cp = CP + r * ldcp;
            simd::loop<V>(u, [&](int64_t j, const auto &t) NNL_INLINE {
                V i = vsigmoid(V::load(z + j, t)), f = vsigmoid(V::load(z + u + j, t));
                V g = vtanh(V::load(z + 2 * u + j, t)), o = vsigmoid(V::load(z + 3 * u + j, t));
                i.store(z + j, t);
                f.store(z + u + j, t);
                g.store(z + 2 * u + j, t);
                o.store(z + 3 * u + j, t);
                V cv = f * V::load(cp + j, t) + i * g;
                cv.store(c + j, t);
                (o * vtanh(cv)).store(h + j, t);
            });
        }
    }
};

/* Its backward for one row: z holds the gates (forward's), becomes the
   pre-activations' gradients; dh is dL/dh_s (read), dc dL/dc_s in and
   dL/dc_{s-1} out. */
struct LstmStepBackK {
    template <class V>
    static void run(float *z, const float *dh, float *dc, const float *c, const float *cp, int64_t u) {
        simd::loop<V>(u, [&](int64_t j, const auto &t) NNL_INLINE {
            V one = V::set(1.f);
            V i = V::load(z + j, t), f = V::load(z + u + j, t), g = V::load(z + 2 * u + j, t),
              o = V::load(z + 3 * u + j, t);
            V ac = vtanh(V::load(c + j, t)), dhv = V::load(dh + j, t);
            V d = V::load(dc + j, t) + dhv * o * (one - ac * ac);
            (d * g * (i * (one - i))).store(z + j, t);
            (d * V::load(cp + j, t) * (f * (one - f))).store(z + u + j, t);
            (d * i * (one - g * g)).store(z + 2 * u + j, t);
            (dhv * ac * (o * (one - o))).store(z + 3 * u + j, t);
            (d * f).store(dc + j, t);
        });
    }
};

/* Softmax over rows of length n, and its backward from y. */
struct SoftmaxK {
    template <class V> static void run(const float *x, float *y, int64_t rows, int64_t n) {
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * n;
            float *yr = y + r * n;
            V mv = V::set(-INFINITY), s = V::set(0.f);
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { mv = vmax(V::load(xr + j, t, -INFINITY), mv); });
            V m = V::set(hmax(mv));
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE {
                V e = vexp(V::load(xr + j, t) - m);
                e.store(yr + j, t);
                s = s + keep(t, e);
            });
            V inv = V::set(1.f / hsum(s));
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { (V::load(yr + j, t) * inv).store(yr + j, t); });
        }
    }
};
struct SoftmaxBackwardK {
    template <class V> static void run(const float *y, const float *dy, float *dx, int64_t rows, int64_t n) {
        for (int64_t r = 0; r < rows; r++) {
            const float *yr = y + r * n, *dr = dy + r * n;
            float *o = dx + r * n;
            V dot = V::set(0.f);
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { dot = fma(V::load(dr + j, t), V::load(yr + j, t), dot); });
            V d = V::set(hsum(dot));
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { (V::load(yr + j, t) * (V::load(dr + j, t) - d)).store(o + j, t); });
        }
    }
};

/* Activations whose derivative cpu_act_backward can take from the output
   alone (passed as x too): layers then need not keep the pre-activation,
   and the GEMM can apply them in its epilogue. */
static bool act_from_output(Act a) {
    return a == ACT_LINEAR || a == ACT_RELU || a == ACT_LEAKY_RELU || a == ACT_ELU || a == ACT_SELU ||
           a == ACT_SIGMOID || a == ACT_TANH || a == ACT_EXPONENTIAL;
}

static void cpu_act_forward(Act a, const float *x, float *y, int64_t rows, int64_t n) {
    if (a == ACT_SOFTMAX) {
        par_for(rows, rows * n, [&](int64_t lo_, int64_t hi_) { simd::run<SoftmaxK>(x + lo_ * n, y + lo_ * n, hi_ - lo_, n); });
        return;
    }
    n *= rows;
    if (a == ACT_LINEAR) {
        if (x != y) memcpy(y, x, (size_t)n * sizeof(float));
        return;
    }
    par_for(n, n, [&](int64_t lo, int64_t hi) {
        simd::run<BiasActK>(x + lo, n, y + lo, n, (int64_t)1, hi - lo, (const float *)nullptr, a);
    });
}

static void bias_act_rows(float *C, int64_t ldc, int64_t rows, int64_t n, const float *bias, Act act) {
    if (!bias && act == ACT_LINEAR) return;
    if (act == ACT_SOFTMAX) {
        for (int64_t r = 0; r < rows; r++) {
            if (bias) simd::run<AddRowsK>(bias, C + r * ldc, (int64_t)1, n);
            simd::run<SoftmaxK>(C + r * ldc, C + r * ldc, (int64_t)1, n);
        }
        return;
    }
    if (ldc == n && rows > 1 && n % 16 != 0) { /* end to end, rows not whole vectors */
        if (!bias) {
            simd::run<BiasActK>((const float *)C, n * rows, C, n * rows, (int64_t)1, n * rows, bias, act);
            return;
        }
        static thread_local std::vector<float> rep; /* grown once per thread */
        if ((int64_t)rep.size() < n + 16) rep.resize((size_t)(n + 16));
        for (int64_t k = 0; k < n + 16; k++) rep[(size_t)k] = bias[k % n];
        simd::run<BiasActFlatK>(C, n * rows, (const float *)rep.data(), n, act);
        return;
    }
    simd::run<BiasActK>((const float *)C, ldc, C, ldc, rows, n, bias, act);
}

static void cpu_act_backward(Act a, const float *x, const float *y, const float *dy, float *dx, int64_t rows,
                             int64_t n) {
    if (a == ACT_SOFTMAX) {
        par_for(rows, rows * n, [&](int64_t lo_, int64_t hi_) {
            simd::run<SoftmaxBackwardK>(y + lo_ * n, dy + lo_ * n, dx + lo_ * n, hi_ - lo_, n);
        });
        return;
    }
    n *= rows;
    if (a == ACT_LINEAR) {
        if (dy != dx) memcpy(dx, dy, (size_t)n * sizeof(float));
        return;
    }
    par_for(n, n, [&](int64_t lo, int64_t hi) { simd::run<ActBackwardK>(a, x + lo, y + lo, dy + lo, dx + lo, hi - lo); });
}

/* Counter-based mask: element i's draw depends only on (seed, i), so the
   mask is the same whatever the thread count (and on the GPU). */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Element i is dropped when the top 24 bits of a 32-bit hash of (seed, i)
   fall below rate * 2^24: two rounds of Wellons' lowbias32 mixer, keyed by
   both halves of the seed. 32-bit integer lanes vectorise (the 64-bit mix
   above does not), and the GPU computes the same hash. */
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
/* rate * 2^24 rounded up: element i is dropped when its draw is below it */
static inline uint32_t dropout_thresh(float rate) {
    return (uint32_t)std::min(16777216.0, std::ceil((double)rate * 16777216.0));
}
/* element i's mask value: 0 (dropped) or keep = 1 / (1 - rate) */
static inline __attribute__((always_inline)) float dropout_draw(int64_t i, uint64_t seed, uint32_t thresh,
                                                                float keep) {
    uint32_t h = mix32(mix32((uint32_t)i ^ (uint32_t)seed) + (uint32_t)(seed >> 32));
    return (h >> 8) < thresh ? 0.f : keep;
}
static inline __attribute__((always_inline)) void dropout_range(const float *x, float *y, float *mask, int64_t lo,
                                                                int64_t hi, uint32_t thresh, float keep,
                                                                uint64_t seed) {
    for (int64_t i = lo; i < hi; i++) {
        float m = dropout_draw(i, seed, thresh, keep);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
static void dropout_generic(const float *x, float *y, float *mask, int64_t lo, int64_t hi, uint32_t thresh,
                            float keep, uint64_t seed) {
    dropout_range(x, y, mask, lo, hi, thresh, keep, seed);
}
#if NNL_X86
__attribute__((target("avx2"))) static void dropout_avx2(const float *x, float *y, float *mask, int64_t lo,
                                                           int64_t hi, uint32_t thresh, float keep, uint64_t seed) {
    dropout_range(x, y, mask, lo, hi, thresh, keep, seed);
}
#endif

static void cpu_dropout_forward(const float *x, float *y, float *mask, int64_t n, float rate, uint64_t step,
                                uint64_t salt) {
    uint64_t seed = mix64(step ^ salt);
    float keep = 1.f / (1.f - rate);
    uint32_t thresh = dropout_thresh(rate);
    auto f = dropout_generic;
#if NNL_X86
    if (have_avx2()) f = dropout_avx2;
#endif
    par_for(n, n, [&](int64_t lo, int64_t hi) { f(x, y, mask, lo, hi, thresh, keep, seed); });
}

struct MulK {
    template <class V> static void run(const float *a, const float *b, float *y, int64_t n) {
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE { (V::load(a + i, t) * V::load(b + i, t)).store(y + i, t); });
    }
};

static void cpu_mul(const float *a, const float *b, float *y, int64_t n) {
    par_for(n, n, [&](int64_t lo, int64_t hi) { simd::run<MulK>(a + lo, b + lo, y + lo, hi - lo); });
}

static void cpu_copy(const float *x, float *y, int64_t n) {
    if (x != y) memcpy(y, x, (size_t)n * sizeof(float));
}

/* words [w0, w1) of relu_bits / relu_bits_backward: the portable loops,
   and AVX2 ones on whole words (movemask of a comparison; a broadcast byte
   against one bit a lane) */
static void relu_bits_generic(const float *y, uint32_t *bits, int64_t w0, int64_t w1, int64_t n) {
    for (int64_t w = w0; w < w1; w++) {
        const float *v = y + w * 32;
        int m = (int)std::min<int64_t>(32, n - w * 32);
        uint32_t b = 0;
        for (int j = 0; j < m; j++) b |= (uint32_t)(v[j] > 0.f) << j;
        bits[w] = b;
    }
}
static void relu_bits_back_generic(const uint32_t *bits, const float *dy, float *dx, int64_t w0, int64_t w1,
                                   int64_t n) {
    for (int64_t w = w0; w < w1; w++) {
        const float *d = dy + w * 32;
        float *o = dx + w * 32;
        int m = (int)std::min<int64_t>(32, n - w * 32);
        uint32_t b = bits[w];
        for (int j = 0; j < m; j++) o[j] = d[j] * ((b >> j) & 1u ? 1.f : 0.f);
    }
}
#if NNL_X86
__attribute__((target("avx2"))) static void relu_bits_avx2(const float *y, uint32_t *bits, int64_t w0, int64_t w1,
                                                           int64_t n) {
    const int64_t whole = std::min(w1, n / 32);
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t w = w0; w < whole; w++) {
        const float *v = y + w * 32;
        uint32_t b = 0;
        for (int q = 0; q < 4; q++) /* ordered > : NaN gives 0, as v > 0.f */
            b |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + 8 * q), zero, _CMP_GT_OQ)) << (8 * q);
        bits[w] = b;
    }
    if (whole < w1) relu_bits_generic(y, bits, std::max(w0, whole), w1, n);
}
__attribute__((target("avx2"))) static void relu_bits_back_avx2(const uint32_t *bits, const float *dy, float *dx,
                                                                int64_t w0, int64_t w1, int64_t n) {
    const int64_t whole = std::min(w1, n / 32);
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256 one = _mm256_set1_ps(1.f);
    for (int64_t w = w0; w < whole; w++) {
        const uint32_t b = bits[w];
        for (int q = 0; q < 4; q++) {
            __m256i v = _mm256_set1_epi32((int)((b >> (8 * q)) & 0xffu));
            __m256 on = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(v, lane), lane));
            /* dy * 1 or dy * 0: a multiply, as act_backward (an AND would lose -0 and NaN) */
            _mm256_storeu_ps(dx + w * 32 + 8 * q, _mm256_mul_ps(_mm256_loadu_ps(dy + w * 32 + 8 * q), _mm256_and_ps(on, one)));
        }
    }
    if (whole < w1) relu_bits_back_generic(bits, dy, dx, std::max(w0, whole), w1, n);
}
#endif
static void cpu_relu_bits(const float *y, uint32_t *bits, int64_t n) {
    auto f = relu_bits_generic;
#if NNL_X86
    if (have_avx2()) f = relu_bits_avx2;
#endif
    par_for((n + 31) / 32, n, [&](int64_t lo, int64_t hi) { f(y, bits, lo, hi, n); });
}
static void cpu_relu_bits_backward(const uint32_t *bits, const float *dy, float *dx, int64_t n) {
    auto f = relu_bits_back_generic;
#if NNL_X86
    if (have_avx2()) f = relu_bits_back_avx2;
#endif
    par_for((n + 31) / 32, n, [&](int64_t lo, int64_t hi) { f(bits, dy, dx, lo, hi, n); });
}

/* float partial sums over blocks of 256 (one per lane), the total in double */
struct SumsqK {
    template <class V> static double run(const float *x, int64_t n) {
        double s = 0;
        for (int64_t b = 0; b < n; b += 256) {
            V acc = V::set(0.f);
            simd::loop<V>(std::min<int64_t>(256, n - b), [&](int64_t i, const auto &t) NNL_INLINE {
                V v = V::load(x + b + i, t);
                acc = fma(v, v, acc);
            });
            s += hsum(acc);
        }
        return s;
    }
};

static double cpu_sumsq(const float *x, int64_t n, bool *finite) {
    double s = simd::run<SumsqK>(x, n);
    if (finite) *finite = std::isfinite(s); /* NaN and Inf propagate into the sum */
    return s;
}

/* ---- Convolution, pooling and normalisation kernels ---- */

#if NNL_X86
/* dst (8 x 8, row stride ldd) = the transpose of src (8 x 8, row stride lds) */
__attribute__((target("avx2"))) static void transpose8x8(const float *src, int64_t lds, float *dst, int64_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds),
           r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds),
           r5 = _mm256_loadu_ps(src + 5 * lds), r6 = _mm256_loadu_ps(src + 6 * lds),
           r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* y[c * ldy + r] = x[r * ldx + c] for r < R, c < C on the calling thread:
   8 x 8 blocks in registers where v8 (AVX2), the ragged edges one by one */
static void transpose_block(const float *x, int64_t ldx, float *y, int64_t ldy, int64_t R, int64_t C, bool v8) {
    int64_t rv = 0, cv = 0;
#if NNL_X86
    if (v8) {
        rv = R / 8 * 8, cv = C / 8 * 8;
        for (int64_t r = 0; r < rv; r += 8)
            for (int64_t c = 0; c < cv; c += 8) transpose8x8(x + r * ldx + c, ldx, y + c * ldy + r, ldy);
    }
#endif
    (void)v8;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = r < rv ? cv : 0; c < C; c++) y[c * ldy + r] = x[r * ldx + c];
}

static void cpu_transpose(const float *x, float *y, int64_t batch, int64_t R, int64_t C) {
    const int64_t T = 32; /* tiles keep both sides in cache */
    const int64_t tiles = (R + T - 1) / T;
#if NNL_X86
    const bool v8 = have_avx2();
#else
    const bool v8 = false;
#endif
    par_for(batch * tiles, batch * R * C, [&](int64_t lo, int64_t hi) {
        for (int64_t it = lo; it < hi; it++) {
            int64_t b = it / tiles, r0 = it % tiles * T, r1 = std::min(R, r0 + T);
            const float *xb = x + b * R * C;
            float *yb = y + b * R * C;
            for (int64_t c0 = 0; c0 < C; c0 += T)
                transpose_block(xb + r0 * C + c0, C, yb + c0 * R + r0, R, r1 - r0, std::min(C, c0 + T) - c0, v8);
        }
    });
}

/* Calls f(pos, j) for every kernel tap j of output position (od, oh, ow)
   whose input position pos (a spatial index) lies inside the input. */
template <class F> static inline void for_taps(const Window &g, int64_t od, int64_t oh, int64_t ow, F f) {
    int64_t j = 0;
    for (int64_t kd = 0; kd < g.k[0]; kd++) {
        int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0];
        bool okd = id >= 0 && id < g.in[0];
        for (int64_t kh = 0; kh < g.k[1]; kh++) {
            int64_t ih = oh * g.s[1] - g.pad[1] + kh * g.d[1];
            bool okh = okd && ih >= 0 && ih < g.in[1];
            for (int64_t kw = 0; kw < g.k[2]; kw++, j++) {
                int64_t iw = ow * g.s[2] - g.pad[2] + kw * g.d[2];
                if (okh && iw >= 0 && iw < g.in[2]) f((id * g.in[1] + ih) * g.in[2] + iw, j);
            }
        }
    }
}

/* im2col rows lo..hi-1 (sample b, output position p: row b * P + p), each
   kvol * C values: the window's taps in order, C channels each, zeros
   for taps in the padding. Runs of a vector or more are vector loops ending
   on an overlapping whole vector (simd::loop_over), shorter ones one whole
   vector where a later run rewrites its tail, else element by element
   (R-LENET at batch 1 copies runs of 5 and 100 floats: memcpy calls and a
   division per row made its first convolution's im2col 2x its GEMM). Run
   by run over a line of output positions, the source row fixed: the one-
   channel first convolutions' im2col (runs of 3-5 floats) was bound by the
   per-run index arithmetic. Zen 3, one thread, median of 9 x 20-200 calls:
   T-LENET's first at batch 64 814-851 -> 478-535 us, K-CNN's 625-672 ->
   446-470, R-LENET's at batch 1 23 -> 17; runs of 100-288 floats (the
   second convolutions) within noise. */
struct Im2colK {
    /* row r goes to col + (r - base) * row */
    template <class V>
    static void run(const Window *gp, const float *x, float *col, int64_t lo, int64_t hi, int64_t base) {
        const Window &g = *gp;
        const int64_t P = g.out_size(), C = g.C, row = g.kvol() * C, KW = g.k[2];
        /* short runs (a first convolution's 5 floats) element by element:
           no masked store */
        auto copy = [&](float *o, const float *src, int64_t n) NNL_INLINE {
            if (n < V::W)
                for (int64_t j = 0; j < n; j++) o[j] = src[j];
            else
                simd::loop_over<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { V::load(src + j, t).store(o + j, t); });
        };
        auto zero = [&](float *o, int64_t n) NNL_INLINE {
            if (n < V::W)
                for (int64_t j = 0; j < n; j++) o[j] = 0.f;
            else
                simd::loop_over<V>(n, [&](int64_t j, const auto &t) NNL_INLINE { V::set(0.f).store(o + j, t); });
        };
        /* one output line (the positions along W of one sample, d and h)
           at a time, run by run: the source row of a run is the same for
           the whole line, so the inner loop over positions only copies */
        for (int64_t r = lo; r < hi;) {
            const int64_t b = r / P, p = r % P, ow0 = p % g.out[2], oh = p / g.out[2] % g.out[1],
                          od = p / (g.out[2] * g.out[1]), seg = std::min(hi - r, g.out[2] - ow0);
            const float *xb = x + b * g.in_size() * C;
            float *o = col + (r - base) * row; /* this run's floats in the line's first row */
            for (int64_t kd = 0; kd < g.k[0]; kd++) {
                int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0];
                for (int64_t kh = 0; kh < g.k[1]; kh++, o += KW * C) {
                    int64_t ih = oh * g.s[1] - g.pad[1] + kh * g.d[1];
                    if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
                        for (int64_t j = 0; j < seg; j++) zero(o + j * row, KW * C);
                        continue;
                    }
                    const float *src = xb + ((id * g.in[1] + ih) * g.in[2]) * C;
                    for (int64_t j = 0; j < seg; j++) {
                        float *oj = o + j * row, *oe = col + (r - base + j + 1) * row; /* row r + j: its run, its end */
                        int64_t iw0 = (ow0 + j) * g.s[2] - g.pad[2];
                        /* the taps along W are one contiguous run when dilation is 1 and all are inside */
                        if (g.d[2] == 1 && iw0 >= 0 && iw0 + KW <= g.in[2]) {
                            /* a short run as one whole vector where the image row
                               holds it and a later run of this row rewrites the
                               floats past it (each run writes all of its own) */
                            if (KW * C < V::W && iw0 * C + V::W <= g.in[2] * C && oj + V::W <= oe)
                                V::load(src + iw0 * C, simd::Full()).store(oj, simd::Full());
                            else
                                copy(oj, src + iw0 * C, KW * C);
                            continue;
                        }
                        for (int64_t kw = 0; kw < KW; kw++) {
                            int64_t iw = iw0 + kw * g.d[2];
                            if (iw >= 0 && iw < g.in[2])
                                copy(oj + kw * C, src + iw * C, C);
                            else
                                zero(oj + kw * C, C);
                        }
                    }
                }
            }
            r += seg;
        }
    }
};

/* Work for par_for: each run of taps (kd, kh) counts as 64 floats, however
   short it is: R-LENET's first im2col at batch 1 (784 rows of five runs of
   5 floats, 19,600 floats) takes 24 us on Zen 3, as long as streaming a few
   hundred thousand, and now splits over two threads. R-LENET batch-1
   nnl_predict, 2 threads, 8 interleaved runs: median 186 -> 178 us. */
static void cpu_im2col(const Window &g, const float *x, float *col, int64_t n) {
    const int64_t rows = n * g.out_size(), row = g.kvol() * g.C;
    const int64_t runs = g.k[0] * g.k[1], per_row = row + 64 * runs;
    par_for(rows, rows * per_row, [&](int64_t lo, int64_t hi) { simd::run<Im2colK>(&g, x, col, lo, hi, (int64_t)0); });
}

/* im2col straight into the layout of gemm::pack_b_all (the columns as the
   B operand of a product, K = n * out_size rows of kvol * C): rows in
   groups of 16 into a thread's buffer (L1), then each row's 16-column
   pieces to their panels. The weight gradient dW^T = dz^T col read col
   only as B: sgemm packed it again, a copy of all of it (pack_b, 7 % of
   T-LENET's cycles with the dense layers' packing). Intel Xeon (AVX512-
   FP16 generation), two threads, profile_layers: T-LENET's second
   convolution backward 23.8-24.2 -> 22.9 ms (step 55.5-56.0 -> 54.7),
   R-LENET's 19.4-19.8 -> 19.1-19.5 ms. */
static void cpu_im2col_packed(const Window &g, const float *x, int64_t n, gemm::PackedB &out) {
    using gemm::KC;
    using gemm::NR;
    const int64_t K = n * g.out_size(), N = g.kvol() * g.C, npan = (N + NR - 1) / NR;
    const int64_t runs = g.k[0] * g.k[1], per_row = N + 64 * runs;
    out.p = gemm::Buffers::grow(out.p, out.n, (size_t)(npan * NR * std::max<int64_t>(K, 1)));
    out.K = K, out.N = N;
    float *const dst = out.p;
    par_for((K + 15) / 16, K * per_row, [&](int64_t g0, int64_t g1) {
        static thread_local std::vector<float> tmp; /* grown once per thread */
        if (tmp.size() < (size_t)(16 * N + 16)) tmp.resize((size_t)(16 * N + 16));
        for (int64_t grp = g0; grp < g1; grp++) {
            const int64_t lo = grp * 16, hi = std::min(K, lo + 16);
            simd::run<Im2colK>(&g, x, tmp.data(), lo, hi, lo);
            for (int64_t r = lo; r < hi; r++) {
                const int64_t pc = r / KC * KC, kc = std::min<int64_t>(KC, K - pc);
                float *d = dst + pc * npan * NR + (r - pc) * NR;
                const float *src = tmp.data() + (r - lo) * N;
                int64_t jp = 0;
                for (; jp < N / NR; jp++) memcpy(d + jp * NR * kc, src + jp * NR, NR * sizeof(float));
                if (jp < npan) {
                    float *e = d + jp * NR * kc;
                    int64_t c = 0;
                    for (; c < N - jp * NR; c++) e[c] = src[jp * NR + c];
                    for (; c < NR; c++) e[c] = 0.f;
                }
            }
        }
    });
}

/* A thread's columns for the convolution in sample groups
   (Conv::group_samples), plain (thread_cols) or packed as B (thread_colp):
   one buffer, grown once per thread and reused, as gemm's packing buffers
   are; a group uses one of the two at a time. */
static gemm::PackedB &thread_colp() {
    static thread_local gemm::PackedB p;
    return p;
}
static float *thread_cols(size_t n) {
    gemm::PackedB &c = thread_colp();
    c.p = gemm::Buffers::grow(c.p, c.n, n);
    return c.p;
}

/* col2im of samples lo..hi-1: each sample's dx is the sum over its output
   positions, in order, of the taps' runs of col. Per position and (kd, kh),
   one run of KW * C floats where the taps along W are contiguous and
   inside (dilation 1: they are neighbours in dx too), else a run of C
   floats per tap inside. A position's taps touch distinct inputs, so each
   value gets its terms in the order of the positions, as tap by tap: the
   same bits. R-LENET's second convolution adds 25 runs of 20 floats per
   position tap by tap (a partial vector each), 5 of 100 here: Intel Xeon
   (AVX512-FP16 generation), two threads, profile_layers, its backward
   18.5-18.9 -> 18.0-18.1 ms; T-LENET's 23.5-23.7 -> 21.1-21.3 ms (step
   55.8-56.4 -> 52.2-52.8 ms). */
struct Col2imK {
    template <class V> static void run(const Window *gp, const float *col, float *dx, int64_t lo, int64_t hi) {
        const Window &g = *gp;
        const int64_t P = g.out_size(), C = g.C, row = g.kvol() * C, S = g.in_size() * C, KW = g.k[2];
        auto add = [&](float *d, const float *src, int64_t n) NNL_INLINE {
            simd::loop<V>(n, [&](int64_t j, const auto &t) NNL_INLINE {
                (V::load(d + j, t) + V::load(src + j, t)).store(d + j, t);
            });
        };
        for (int64_t b = lo; b < hi; b++) {
            float *db = dx + b * S;
            memset(db, 0, (size_t)S * sizeof(float));
            for (int64_t p = 0; p < P; p++) {
                const int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]),
                              iw0 = ow * g.s[2] - g.pad[2];
                const bool whole = g.d[2] == 1 && iw0 >= 0 && iw0 + KW <= g.in[2];
                const float *c = col + (b * P + p) * row;
                for (int64_t kd = 0; kd < g.k[0]; kd++) {
                    const int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0];
                    for (int64_t kh = 0; kh < g.k[1]; kh++, c += KW * C) {
                        const int64_t ih = oh * g.s[1] - g.pad[1] + kh * g.d[1];
                        if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) continue;
                        float *d = db + (id * g.in[1] + ih) * g.in[2] * C;
                        if (whole) {
                            add(d + iw0 * C, c, KW * C);
                            continue;
                        }
                        for (int64_t kw = 0; kw < KW; kw++) {
                            const int64_t iw = iw0 + kw * g.d[2];
                            if (iw >= 0 && iw < g.in[2]) add(d + iw * C, c + kw * C, C);
                        }
                    }
                }
            }
        }
    }
};
static void cpu_col2im(const Window &g, const float *col, float *dx, int64_t n) {
    const int64_t P = g.out_size(), row = g.kvol() * g.C;
    par_for(n, n * P * row, [&](int64_t lo, int64_t hi) { simd::run<Col2imK>(&g, col, dx, lo, hi); });
}

/* ---- A convolution of one input channel, without im2col ----
   The first convolution of an image model (T-LENET's 5x5, 20 filters;
   K-CNN's 3x3, 32): as a GEMM its depth is the kernel's volume (25, 9),
   too short for the packed kernel, and its columns are kvol times the
   input, written and read again by forward and by the weight gradient.
   Here each sample is read in place (or from a zero-padded copy for
   padding), the filters padded to whole vectors: forward keeps PB output
   positions x NV filter vectors in registers over the taps (one broadcast
   input value per position and tap); the weight gradient keeps TG taps x
   NV filter vectors over the positions. AMD EPYC (Zen 3), median of 7 x
   5 calls, against im2col + the GEMM: T-LENET's first convolution at
   batch 512, forward with tanh 15.7-15.9 -> 10.0-10.1 ms on one thread
   (7.9-8.1 -> 5.0-6.1 on two), weight gradient 16.6-17.2 -> 6.4-6.7 ms
   (11.6-13.2 -> 3.1-3.3); K-CNN's at batch 120, 2.8 -> 2.2-2.4 and 3.7-3.9
   -> 1.0 ms on one thread. With stride 1 along the width the weight
   gradient puts positions in the lanes instead (DwK::run_lanes): Intel
   Xeon (AVX-512), T-LENET's at batch 512 on two threads, min of 20 calls,
   3.76 -> 3.09 ms (7.66 -> 7.45 on one); inside a training step, where
   the gradients come from memory, its layer's backward 14.8 -> 12.2 ms. */
namespace conv1 {
/* The input as the kernels read it: in place when the windows need no
   padding, else a zero-padded copy of each sample (ext, strides S0, S1) */
struct Geo {
    int64_t ext[3], S0, S1, taps, P;
    bool copy = false;
    explicit Geo(const Window &g) : taps(g.kvol()), P(g.out_size()) {
        for (int i = 0; i < 3; i++) {
            ext[i] = (g.out[i] - 1) * g.s[i] + (g.k[i] - 1) * g.d[i] + 1;
            copy = copy || g.pad[i] > 0 || ext[i] > g.in[i];
        }
        S1 = copy ? ext[2] : g.in[2];
        S0 = copy ? ext[1] * ext[2] : g.in[1] * g.in[2];
    }
    int64_t padded_size() const { return copy ? ext[0] * ext[1] * ext[2] : 0; }
    const float *sample(const Window &g, const float *xb, float *buf) const {
        if (!copy) return xb;
        for (int64_t a = 0; a < ext[0]; a++)
            for (int64_t h = 0; h < ext[1]; h++) {
                int64_t id = a - g.pad[0], ih = h - g.pad[1];
                float *o = buf + a * S0 + h * S1;
                bool row = id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1];
                const float *src = xb + (id * g.in[1] + ih) * g.in[2];
                for (int64_t w = 0; w < ext[2]; w++) {
                    int64_t iw = w - g.pad[2];
                    o[w] = row && iw >= 0 && iw < g.in[2] ? src[iw] : 0.f;
                }
            }
        return buf;
    }
    /* the offset of each tap from a window's first input (taps in the
       kernel's order: depth, height, width) */
    void tap_offsets(const Window &g, int64_t *off) const {
        for (int64_t a = 0, t = 0; a < g.k[0]; a++)
            for (int64_t h = 0; h < g.k[1]; h++)
                for (int64_t w = 0; w < g.k[2]; w++) off[t++] = a * g.d[0] * S0 + h * g.d[1] * S1 + w * g.d[2];
    }
    /* the offset of output position (od, oh, 0)'s first input */
    int64_t line(const Window &g, int64_t od, int64_t oh) const { return od * g.s[0] * S0 + oh * g.s[1] * S1; }
};

/* Filter vectors per register block: three where at least three remain
   (but four go as two and two), else what remains. */
static inline int block_vectors(int64_t rem) { return rem >= 3 && rem != 4 ? 3 : (int)std::min<int64_t>(rem, 2); }
/* Twelve accumulators a block (AVX2 has sixteen registers: with NV filter
   vectors and a broadcast input, 12 + NV + 1 <= 16) */
constexpr int ACC = 12;

/* The rows of a group's partial weight gradient: the taps rounded up to a
   multiple of every tap block (4, 6, 12); the extra rows take tap 0's
   products and are never read */
static inline int64_t part_rows(int64_t taps) { return (taps + ACC - 1) / ACC * ACC; }
/* DwK with positions in the lanes (stride 1 along the width): blocks of
   TG taps x FG filters (5 x 4 for 16 lanes, 3 x 3 for fewer: the
   accumulators and one input vector a tap fit the registers); the taps
   padded to a multiple of 15 (the extra ones tap 0's), the filters to a
   multiple of 12 (zero gradients) */
template <class V> struct DwShape {
    static constexpr int TG = V::W >= 16 ? 5 : 3, FG = V::W >= 16 ? 4 : 3;
};
static inline int64_t lane_taps(int64_t taps) { return (taps + 14) / 15 * 15; }
static inline int64_t lane_filters(int64_t F) { return (F + 11) / 12 * 12; }

/* The kernels' scratch: the filters padded to whole vectors (w: taps x
   lw), a padded sample (x), the output gradients of a run of positions
   padded (d), one output line (line), the taps' offsets (off), the
   positions' offsets (pos) */
struct Bufs {
    float *w, *x, *d, *line, *vp;
    int64_t *off, *pos;
};
/* ... per thread, grown once (outside the vector kernels, which call
   nothing), with the taps' offsets filled in (part_rows of them, the
   extra ones tap 0's) and, for FwdK, the padded filters (w: the kernel,
   taps x F): positions = the most in one run of DwK, 0 for FwdK */
static Bufs buffers(const Window &g, int64_t lw, int64_t positions, const float *w = nullptr, int64_t F = 0) {
    struct Scratch {
        std::vector<float> w, x, d, line, vp;
        std::vector<int64_t> off, pos;
    };
    static thread_local Scratch s;
    auto grow = [](auto &v, int64_t n) {
        if ((int64_t)v.size() < n) v.resize((size_t)n);
        return v.data();
    };
    const Geo geo(g);
    const bool fwd = positions == 0;
    const int64_t rows = std::max(part_rows(geo.taps), lane_taps(geo.taps));
    /* DwK's output gradients: rows of lw, or (positions in the lanes) a
       row of positions per filter; its vector partials */
    const int64_t dsz = std::max(positions * lw, lane_filters(F) * positions);
    const int64_t vsz = fwd ? 0 : lane_taps(geo.taps) * lane_filters(F) * 16;
    Bufs b = {grow(s.w, fwd ? geo.taps * lw : 0), grow(s.x, geo.padded_size()), grow(s.d, dsz),
              grow(s.line, fwd ? (g.out[2] + ACC - 1) / ACC * ACC * lw : 0), grow(s.vp, vsz), grow(s.off, rows),
              grow(s.pos, positions)};
    geo.tap_offsets(g, b.off);
    for (int64_t t = geo.taps; t < rows; t++) b.off[t] = b.off[0];
    for (int64_t t = 0; t < (fwd ? geo.taps : 0); t++)
        for (int64_t f = 0; f < lw; f++) b.w[t * lw + f] = f < F ? w[t * F + f] : 0.f;
    return b;
}

/* A register block: R rows of NV vectors, rows ld floats apart in memory */
template <class V, int R, int NV> static inline NNL_INLINE void block_load(V (&acc)[R][NV], const float *p, int64_t ld) {
    #pragma GCC unroll 12
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 12
        for (int v = 0; v < NV; v++) acc[r][v] = V::load(p + r * ld + v * V::W, simd::Full());
}
template <class V, int R, int NV> static inline NNL_INLINE void block_store(V (&acc)[R][NV], float *p, int64_t ld) {
    #pragma GCC unroll 12
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 12
        for (int v = 0; v < NV; v++) acc[r][v].store(p + r * ld + v * V::W, simd::Full());
}
/* acc[r][v] += x[idx[r]] b[v]: R broadcast inputs times NV vectors */
template <class V, int R, int NV>
static inline NNL_INLINE void outer_add(V (&acc)[R][NV], const float *x, const int64_t *idx, const float *b) {
    V bv[NV];
    #pragma GCC unroll 12
    for (int v = 0; v < NV; v++) bv[v] = V::load(b + v * V::W, simd::Full());
    #pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        V xb = V::set(x[idx[r]]);
        #pragma GCC unroll 12
        for (int v = 0; v < NV; v++) acc[r][v] = fma(xb, bv[v], acc[r][v]);
    }
}

/* line[ow, v0 ...] for the OW positions of one output line: PB positions
   at a time (the last block repeats the last position), NV vectors */
template <class V, int NV, int PB>
static inline NNL_INLINE void fwd_line(const float *xs, int64_t base, int64_t s2, int64_t OW, const int64_t *off,
                                       int64_t taps, const float *wp, int64_t lw, float *line) {
    for (int64_t ow0 = 0; ow0 < OW; ow0 += PB) {
        int64_t xp[PB];
        #pragma GCC unroll 12
        for (int i = 0; i < PB; i++) xp[i] = base + std::min<int64_t>(ow0 + i, OW - 1) * s2;
        V acc[PB][NV];
        #pragma GCC unroll 12
        for (int i = 0; i < PB; i++)
            #pragma GCC unroll 12
            for (int v = 0; v < NV; v++) acc[i][v] = V::set(0.f);
        for (int64_t t = 0; t < taps; t++) outer_add<V, PB, NV>(acc, xs + off[t], xp, wp + t * lw);
        block_store<V, PB, NV>(acc, line + ow0 * lw, lw);
    }
}

/* y's output lines [l0, l1) (line l: sample l / (out[0] out[1]), its
   positions along the width, F channels-last values each) = the
   convolution of x (samples of g.in_size() values) with w (taps x F) */
struct FwdK {
    template <class V>
    static void run(const Window *gp, const Bufs *bp, const float *x, int64_t F, float *y, int64_t l0, int64_t l1) {
        const Window &g = *gp;
        const Bufs &s = *bp;
        const Geo geo(g);
        const int64_t nvt = (F + V::W - 1) / V::W, lw = nvt * V::W, OW = g.out[2], lines = g.out[0] * g.out[1];
        const float *xs = nullptr;
        for (int64_t l = l0, b = -1; l < l1; l++) {
            if (l / lines != b) {
                b = l / lines;
                xs = geo.sample(g, x + b * g.in_size(), s.x);
            }
            const int64_t base = geo.line(g, l % lines / g.out[1], l % g.out[1]);
            for (int64_t v0 = 0; v0 < nvt;) {
                int nv = block_vectors(nvt - v0);
                const float *wp = s.w + v0 * V::W;
                float *ln = s.line + v0 * V::W;
                if (nv == 3)
                    fwd_line<V, 3, ACC / 3>(xs, base, g.s[2], OW, s.off, geo.taps, wp, lw, ln);
                else if (nv == 2)
                    fwd_line<V, 2, ACC / 2>(xs, base, g.s[2], OW, s.off, geo.taps, wp, lw, ln);
                else
                    fwd_line<V, 1, ACC>(xs, base, g.s[2], OW, s.off, geo.taps, wp, lw, ln);
                v0 += nv;
            }
            for (int64_t ow = 0; ow < OW; ow++) {
                const float *src = s.line + ow * lw;
                float *o = y + (l * OW + ow) * F;
                simd::loop_over<V>(F, [&](int64_t j, const auto &t) NNL_INLINE { V::load(src + j, t).store(o + j, t); });
            }
        }
    }
};

/* part[t, v0 ...] += the products of TG taps from t summed over P
   positions (pos: the offsets of their first inputs in xs; dp: their
   output gradients, rows of lw), NV vectors of filters */
template <class V, int NV, int TG>
static inline NNL_INLINE void dw_taps(const float *xs, const int64_t *pos, int64_t P, const int64_t *off,
                                      const float *dp, int64_t lw, float *part) {
    V acc[TG][NV];
    block_load<V, TG, NV>(acc, part, lw);
    int64_t o[TG];
    #pragma GCC unroll 12
    for (int t = 0; t < TG; t++) o[t] = off[t];
    for (int64_t p = 0; p < P; p++) outer_add<V, TG, NV>(acc, xs + pos[p], o, dp + p * lw);
    block_store<V, TG, NV>(acc, part, lw);
}


/* acc[t][f] += the products of TG taps (offsets off) and FG filters'
   output gradients (rows of dt, ld apart) over the nl lines of one run
   (bases: their first inputs in xs; each line's gradients OW apart in
   dt), OW positions a line in vectors of W (the last one's lanes past OW
   masked on both sides: no read past the line's end, nothing from the
   next line) */
template <class V, int TG, int FG>
static inline NNL_INLINE void dw_lanes(const float *xs, const int64_t *bases, int64_t nl, int64_t OW,
                                       const int64_t *off, const float *dt, int64_t ld, float *vp, int64_t vld) {
    V acc[TG][FG];
    #pragma GCC unroll 8
    for (int t = 0; t < TG; t++)
        #pragma GCC unroll 8
        for (int f = 0; f < FG; f++) acc[t][f] = V::load(vp + t * vld + f * V::W, simd::Full());
    int64_t o[TG];
    #pragma GCC unroll 8
    for (int t = 0; t < TG; t++) o[t] = off[t];
    for (int64_t li = 0; li < nl; li++) {
        const float *xl = xs + bases[li], *dl = dt + li * OW;
        auto step = [&](int64_t ow0, const auto &tl) NNL_INLINE {
            V xv[TG];
            #pragma GCC unroll 8
            for (int t = 0; t < TG; t++) xv[t] = V::load(xl + o[t] + ow0, tl);
            #pragma GCC unroll 8
            for (int f = 0; f < FG; f++) {
                V d = V::load(dl + f * ld + ow0, tl);
                #pragma GCC unroll 8
                for (int t = 0; t < TG; t++) acc[t][f] = fma(xv[t], d, acc[t][f]);
            }
        };
        int64_t ow0 = 0;
        for (; ow0 + V::W <= OW; ow0 += V::W) step(ow0, simd::Full());
        if (ow0 < OW) step(ow0, V::tail(OW - ow0));
    }
    #pragma GCC unroll 8
    for (int t = 0; t < TG; t++)
        #pragma GCC unroll 8
        for (int f = 0; f < FG; f++) acc[t][f].store(vp + t * vld + f * V::W, simd::Full());
}

/* part (part_rows(taps) x lw, lw = F rounded up to whole vectors) = the
   weight gradient of output lines [l0, l1) (as FwdK numbers them): x as
   FwdK reads it, dz the output gradients (positions x F), summed line by
   line in order */
struct DwK {
    /* the most positions in a run, for groups of up to n lines */
    static int64_t positions(const Window &g, int64_t n) { return std::min(g.out_size(), n * g.out[2]); }
    template <class V>
    static void run(const Window *gp, const Bufs *bp, const float *x, const float *dz, int64_t F, float *part,
                    int64_t l0, int64_t l1) {
        const Window &g = *gp;
        const Bufs &s = *bp;
        const Geo geo(g);
        const int64_t nvt = (F + V::W - 1) / V::W, lw = nvt * V::W, OW = g.out[2], lines = g.out[0] * g.out[1],
                      rows = part_rows(geo.taps);
        for (int64_t i = 0; i < rows * lw; i++) part[i] = 0.f;
        if (g.s[2] == 1) { /* positions in the lanes */
            run_lanes<V>(g, s, geo, x, dz, F, part, lw, l0, l1);
            return;
        }
        for (int64_t l = l0; l < l1;) { /* the run of lines [l, e) of one sample */
            const int64_t b = l / lines, e = std::min(l1, (b + 1) * lines), np = (e - l) * OW;
            const float *xs = geo.sample(g, x + b * g.in_size(), s.x), *db = dz + l * OW * F;
            int64_t *pos = s.pos;
            float *dp = s.d;
            for (int64_t i = l, p = 0; i < e; i++) {
                const int64_t base = geo.line(g, i % lines / g.out[1], i % g.out[1]), s2 = g.s[2];
                for (int64_t ow = 0; ow < OW; ow++) pos[p++] = base + ow * s2;
            }
            for (int64_t p = 0; p < np; p++) { /* dz's rows padded to whole vectors */
                for (int64_t f = 0; f < F; f++) dp[p * lw + f] = db[p * F + f];
                for (int64_t f = F; f < lw; f++) dp[p * lw + f] = 0.f;
            }
            for (int64_t v0 = 0; v0 < nvt;) {
                int nv = block_vectors(nvt - v0);
                const int tg = ACC / nv;
                for (int64_t t0 = 0; t0 < geo.taps; t0 += tg) {
                    const int64_t *o = s.off + t0;
                    float *pt = part + t0 * lw + v0 * V::W;
                    if (nv == 3)
                        dw_taps<V, 3, ACC / 3>(xs, pos, np, o, dp + v0 * V::W, lw, pt);
                    else if (nv == 2)
                        dw_taps<V, 2, ACC / 2>(xs, pos, np, o, dp + v0 * V::W, lw, pt);
                    else
                        dw_taps<V, 1, ACC>(xs, pos, np, o, dp + v0 * V::W, lw, pt);
                }
                v0 += nv;
            }
            l = e;
        }
    }
private:
    /* Stride 1 along the width: each line's positions side by side in the
       lanes, the output gradients transposed to a row per filter (zeros
       past F), vector partials summed per tap and filter over
       the group's lines in order, each reduced across its lanes at the
       end. Lanes wasted: the last vector of a line (T-LENET's 24
       positions: 25 %, R-LENET's 28: 12.5 %) against 37.5 % of filter
       lanes and 17 % of taps (20 filters in 32 lanes, 25 taps in 30) the
       other way. */
    template <class V>
    static NNL_INLINE void run_lanes(const Window &g, const Bufs &s, const Geo &geo, const float *x, const float *dz,
                                     int64_t F, float *part, int64_t lw, int64_t l0, int64_t l1) {
        constexpr int TG = DwShape<V>::TG, FG = DwShape<V>::FG;
        const int64_t OW = g.out[2], lines = g.out[0] * g.out[1], Fp = lane_filters(F),
                      Tp = lane_taps(geo.taps), vld = Fp * V::W, Fk = (F + FG - 1) / FG * FG;
        for (int64_t i = 0; i < Tp * vld; i++) s.vp[i] = 0.f;
        for (int64_t l = l0; l < l1;) { /* the run of lines [l, e) of one sample */
            const int64_t b = l / lines, e = std::min(l1, (b + 1) * lines), nl = e - l, ld = nl * OW;
            const float *xs = geo.sample(g, x + b * g.in_size(), s.x), *db = dz + l * OW * F;
            for (int64_t i = l; i < e; i++) s.pos[i - l] = geo.line(g, i % lines / g.out[1], i % g.out[1]);
            /* dt[f][position] (ld x F transposed), zero rows up to Fk */
            transpose_block(db, F, s.d, ld, ld, F, V::W >= 8);
            for (int64_t i = F * ld; i < Fk * ld; i++) s.d[i] = 0.f;
            /* the next run's output gradients on their way to the cache
               while this one's products are summed, a share before each
               block */
            const char *nx = (const char *)(dz + e * OW * F);
            const int64_t nbytes = std::min(l1 - e, lines) * OW * F * (int64_t)sizeof(float),
                          blocks = (geo.taps + TG - 1) / TG * (Fk / FG), share = (nbytes / blocks + 63) / 64 * 64;
            int64_t done = 0;
            for (int64_t t0 = 0; t0 < geo.taps; t0 += TG)
                for (int64_t f0 = 0; f0 < Fk; f0 += FG) {
                    for (int64_t q = done, qe = std::min(nbytes, done + share); q < qe; q += 64)
                        __builtin_prefetch(nx + q, 0, 3);
                    done += share;
                    dw_lanes<V, TG, FG>(xs, s.pos, nl, OW, s.off + t0, s.d + f0 * ld, ld,
                                        s.vp + t0 * vld + f0 * V::W, vld);
                }
            l = e;
        }
        for (int64_t t = 0; t < geo.taps; t++) /* each partial across its lanes, in lane order */
            for (int64_t f = 0; f < F; f++) {
                const float *v = s.vp + t * vld + f * V::W;
                float sum = 0.f;
                for (int i = 0; i < V::W; i++) sum += v[i];
                part[t * lw + f] = sum;
            }
    }
};
struct WidthK {
    template <class V> static int64_t run(int64_t F) { return (F + V::W - 1) / V::W * V::W; }
};
} // namespace conv1

/* A window of one tap, stride 1, no padding: the convolution is a plain
   product of the input and the kernel, no im2col */
static bool pointwise(const Window &g) {
    return g.kvol() == 1 && g.s[0] * g.s[1] * g.s[2] == 1 && !g.pad[0] && !g.pad[1] && !g.pad[2];
}
/* Whether a convolution takes the kernels above (on the CPU, in float32):
   one input channel, and not pointwise */
static bool conv1_applies(const Window &g) { return g.C == 1 && !pointwise(g); }

/* y = act(conv(x, w) + bias) over n samples, channels-last. Threads take
   ranges of output lines (a single large image splits too); bias and act
   follow every few lines, while they are in cache. */
static void cpu_conv1_forward(const Window &g, const float *x, const float *w, int64_t F, const float *bias, Act act,
                              float *y, int64_t n) {
    const int64_t lines = n * g.out[0] * g.out[1], OW = g.out[2], per = std::max<int64_t>(1, 16384 / (OW * F));
    const int64_t lw = simd::run<conv1::WidthK>(F);
    par_for(lines, lines * OW * F * g.kvol(), [&](int64_t lo, int64_t hi) {
        const conv1::Bufs b = conv1::buffers(g, lw, 0, w, F);
        for (int64_t l = lo; l < hi; l += per) {
            int64_t m = std::min(per, hi - l);
            simd::run<conv1::FwdK>(&g, &b, x, F, y, l, l + m);
            epilogue(y + l * OW * F, F, m * OW, F, bias, act);
        }
    });
}

/* dw (taps x F) = the weight gradient over n samples. The output lines
   go in fixed groups (at most 32, whatever the thread count), each summed
   into its own partial in line order, the partials then added in group
   order: the same bits on any number of threads. part: the caller's
   buffer (grown once). */
static void cpu_conv1_weight_grad(const Window &g, const float *x, const float *dz, int64_t F, float *dw, int64_t n,
                                  std::vector<float> &part) {
    const int64_t lw = simd::run<conv1::WidthK>(F), rows = conv1::part_rows(g.kvol()), sz = rows * lw;
    /* (a group of at least 512 positions: fewer lines would spend more on
       their partial than on their products) */
    const int64_t lines = n * g.out[0] * g.out[1], want = std::min<int64_t>(32, (lines * g.out[2] + 511) / 512),
                  per = (lines + want - 1) / want, groups = (lines + per - 1) / per;
    part.resize((size_t)(groups * sz));
    par_for(groups, lines * g.out[2] * F * g.kvol(), [&](int64_t lo, int64_t hi) {
        const conv1::Bufs b = conv1::buffers(g, lw, conv1::DwK::positions(g, per), nullptr, F);
        for (int64_t c = lo; c < hi; c++)
            simd::run<conv1::DwK>(&g, &b, x, dz, F, part.data() + c * sz, c * per, std::min(lines, (c + 1) * per));
    });
    const int64_t taps = g.kvol();
    for (int64_t t = 0; t < taps; t++)
        for (int64_t f = 0; f < F; f++) {
            float s = 0.f;
            for (int64_t c = 0; c < groups; c++) s += part[(size_t)(c * sz + t * lw + f)];
            dw[t * F + f] = s;
        }
}

template <class A> static void pool_forward_t(const Window &g, bool max, const float *x, float *y, A *arg, int64_t n) {
    const int64_t P = g.out_size(), C = g.C, rows = n * P;
    const A none = (A)~(A)0;
    (void)rows;
    par_for(rows, rows * C * g.kvol(), [&](int64_t lo_, int64_t hi_) {
        for (int64_t r = lo_; r < hi_; r++) {
            int64_t b = r / P, p = r % P;
            int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
            const float *xb = x + b * g.in_size() * C;
            float *o = y + r * C;
            if (max) {
                /* channels in blocks of 64 with the taps as int32 (the width
                   of a float: the compare and both selects vectorise), then
                   narrowed to A */
                for (int64_t c0 = 0; c0 < C; c0 += 64) {
                    const int64_t cn = std::min<int64_t>(64, C - c0);
                    float *oc = o + c0;
                    int32_t t[64];
                    for (int64_t c = 0; c < cn; c++) {
                        oc[c] = -INFINITY;
                        t[c] = -1;
                    }
                    for_taps(g, od, oh, ow, [&](int64_t pos, int64_t j) {
                        const float *xs = xb + pos * C + c0;
                        for (int64_t c = 0; c < cn; c++) {
                            bool gt = xs[c] > oc[c] || t[c] < 0; /* first maximum wins; NaN propagates once chosen */
                            oc[c] = gt ? xs[c] : oc[c];
                            t[c] = gt ? (int32_t)j : t[c];
                        }
                    });
                    A *a = arg + r * C + c0;
                    for (int64_t c = 0; c < cn; c++) a[c] = t[c] < 0 ? none : (A)t[c];
                }
            } else {
                int64_t cnt = 0;
                for (int64_t c = 0; c < C; c++) o[c] = 0.f;
                for_taps(g, od, oh, ow, [&](int64_t pos, int64_t) {
                    const float *xs = xb + pos * C;
                    for (int64_t c = 0; c < C; c++) o[c] += xs[c];
                    cnt++;
                });
                float inv = cnt ? 1.f / (float)cnt : 0.f;
                for (int64_t c = 0; c < C; c++) o[c] *= inv;
            }
        }
    });
}

/* Max pooling with one-byte taps (windows under 255 taps), outputs lo..hi-1:
   the window's taps inside the input listed once per output, then each
   vector of channels compared over them in registers; the tap as a float
   (exact below 2^24), narrowed on the way out (the last vector of
   channels may overlap the one before: the same values again). The first valid tap is
   taken as it is, later ones only when greater, as pool_forward_t does
   (NaN propagates once chosen; the same bits and taps). */
struct PoolMaxK {
    template <class V> static void run(const Window *gp, const float *x, float *y, uint8_t *arg, int64_t lo, int64_t hi) {
        const Window &g = *gp;
        const int64_t P = g.out_size(), C = g.C;
        int64_t off[256];
        float tap[256];
        for (int64_t r = lo; r < hi; r++) {
            int64_t b = r / P, p = r % P;
            int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
            int n = 0;
            for_taps(g, od, oh, ow, [&](int64_t pos, int64_t j) NNL_INLINE {
                off[n] = pos * C;
                tap[n++] = (float)j;
            });
            const float *xb = x + b * g.in_size() * C;
            float *o = y + r * C;
            uint8_t *a = arg + r * C;
            if (n == 0) { /* a window wholly in the padding */
                for (int64_t c = 0; c < C; c++) o[c] = -INFINITY, a[c] = 0xFF;
                continue;
            }
            simd::loop_over<V>(C, [&](int64_t c, const auto &t) NNL_INLINE {
                V m = V::load(xb + off[0] + c, t), k = V::set(tap[0]);
                for (int i = 1; i < n; i++) {
                    V v = V::load(xb + off[i] + c, t);
                    auto gtm = gt(v, m);
                    m = sel(gtm, v, m);
                    k = sel(gtm, V::set(tap[i]), k);
                }
                m.store(o + c, t);
                alignas(64) float kf[V::W];
                k.store(kf, simd::Full());
                const int64_t w = std::min<int64_t>(V::W, C - c);
                for (int64_t q = 0; q < w; q++) a[c + q] = (uint8_t)kf[q];
            });
        }
    }
};

static void cpu_pool_forward(const Window &g, bool max, const float *x, float *y, void *arg, int64_t n) {
    if (max && pool_arg_bytes(g) == 1) {
        const int64_t rows = n * g.out_size();
        par_for(rows, rows * g.C * g.kvol(), [&](int64_t lo, int64_t hi) {
            simd::run<PoolMaxK>(&g, x, y, (uint8_t *)arg, lo, hi);
        });
    } else if (max)
        pool_forward_t(g, max, x, y, (uint32_t *)arg, n);
    else
        pool_forward_t(g, max, x, y, (uint8_t *)arg, n);
}

/* The input position (a spatial index) of tap j of output position p. */
static inline int64_t tap_position(const Window &g, int64_t p, int64_t j) {
    int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
    int64_t kw = j % g.k[2], kh = j / g.k[2] % g.k[1], kd = j / (g.k[2] * g.k[1]);
    int64_t id = od * g.s[0] - g.pad[0] + kd * g.d[0], ih = oh * g.s[1] - g.pad[1] + kh * g.d[1],
            iw = ow * g.s[2] - g.pad[2] + kw * g.d[2];
    return (id * g.in[1] + ih) * g.in[2] + iw;
}

/* Max pooling's backward: each output's gradient to the input its window
   chose. An input position is linear in the output position and the tap
   ((od s - pad + kd d) in1 + ...), so the chosen input is base(p) + off[j]
   with off a table of the window's taps made once (one-byte taps: windows
   under 255 taps); larger windows locate each chosen input from its tap.
   A chosen tap is never in the padding, so the sum is a real position. */
template <class A>
static void pool_backward_max(const Window &g, const float *dy, const A *arg, float *dx, int64_t b, int64_t n_) {
    const int64_t P = g.out_size(), C = g.C, S = g.in_size() * C;
    const A none = (A)~(A)0;
    int64_t off[256];
    if (sizeof(A) == 1)
        for (int64_t j = 0; j < g.kvol(); j++) {
            int64_t kw = j % g.k[2], kh = j / g.k[2] % g.k[1], kd = j / (g.k[2] * g.k[1]);
            off[j] = ((kd * g.d[0] * g.in[1] + kh * g.d[1]) * g.in[2] + kw * g.d[2]) * C;
        }
    for (; b < n_; b++) {
        float *db = dx + b * S;
        memset(db, 0, (size_t)S * sizeof(float));
        const float *d = dy + b * P * C;
        const A *a = arg + b * P * C;
        for (int64_t p = 0; p < P; p++, a += C, d += C) {
            if (sizeof(A) == 1) {
                int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
                int64_t base = (((od * g.s[0] - g.pad[0]) * g.in[1] + (oh * g.s[1] - g.pad[1])) * g.in[2] +
                                (ow * g.s[2] - g.pad[2])) * C;
                for (int64_t c = 0; c < C; c++) /* base may lie in the padding, base + off never */
                    if (a[c] != none) db[base + off[a[c]] + c] += d[c];
            } else {
                for (int64_t c = 0; c < C; c++)
                    if (a[c] != none) db[tap_position(g, p, (int64_t)a[c]) * C + c] += d[c];
            }
        }
    }
}

static void cpu_pool_backward(const Window &g, bool max, const float *dy, const void *arg, float *dx, int64_t n) {
    const int64_t P = g.out_size(), C = g.C, S = g.in_size() * C;
    par_for(n, n * P * C, [&](int64_t lo_, int64_t hi_) {
        if (max) {
            if (pool_arg_bytes(g) == 4)
                pool_backward_max(g, dy, (const uint32_t *)arg, dx, lo_, hi_);
            else
                pool_backward_max(g, dy, (const uint8_t *)arg, dx, lo_, hi_);
            return;
        }
        for (int64_t b = lo_; b < hi_; b++) {
            float *db = dx + b * S;
            memset(db, 0, (size_t)S * sizeof(float));
            const float *d = dy + b * P * C;
            for (int64_t p = 0; p < P; p++) {
                int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]);
                int64_t cnt = 0;
                for_taps(g, od, oh, ow, [&](int64_t, int64_t) { cnt++; });
                if (!cnt) continue;
                float inv = 1.f / (float)cnt;
                const float *dp = d + p * C;
                for_taps(g, od, oh, ow, [&](int64_t pos, int64_t) {
                    float *o = db + pos * C;
                    for (int64_t c = 0; c < C; c++) o[c] += dp[c] * inv;
                });
            }
        }
    });
}

/* Column sums in double over row blocks of float partials: exact enough
   for batch statistics of millions of rows, and vectorised along C. */
/* Per-thread scratch that only grows: no allocation per batch once warm. */
template <class T> static T *scratch(int slot, size_t n) {
    static thread_local std::vector<T> bufs[6];
    std::vector<T> &b = bufs[slot];
    if (b.size() < n) b.resize(n);
    return b.data();
}

/* pp[c] += x[r, c] (center NULL) or (x[r, c] - center[c])^2, over rows */
struct ColAccK {
    template <class V> static void run(const float *x, int64_t rows, int64_t C, const float *center, float *pp) {
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * C;
            simd::loop<V>(C, [&](int64_t c, const auto &t) NNL_INLINE {
                V v = V::load(xr + c, t), p = V::load(pp + c, t);
                if (center) {
                    v = v - V::load(center + c, t);
                    p = fma(v, v, p);
                } else {
                    p = p + v;
                }
                p.store(pp + c, t);
            });
        }
    }
};

static void column_sums(const float *x, int64_t rows, int64_t C, const float *center, double *out) {
    float *pp = scratch<float>(0, (size_t)C);
    for (int64_t c = 0; c < C; c++) out[c] = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += 64) {
        int64_t r1 = std::min(rows, r0 + 64);
        std::fill(pp, pp + C, 0.f);
        simd::run<ColAccK>(x + r0 * C, r1 - r0, C, center, pp);
        for (int64_t c = 0; c < C; c++) out[c] += pp[c];
    }
}

static void cpu_moments(const float *x, int64_t rows, int64_t C, float *mean, float *var) {
    double *s = scratch<double>(1, (size_t)C);
    column_sums(x, rows, C, nullptr, s);
    for (int64_t c = 0; c < C; c++) mean[c] = (float)(s[c] / (double)rows);
    column_sums(x, rows, C, mean, s); /* two passes: no cancellation */
    for (int64_t c = 0; c < C; c++) var[c] = (float)(s[c] / (double)rows);
}

struct ScaleShiftK {
    template <class V>
    static void run(const float *x, float *y, int64_t rows, int64_t C, const float *scale, const float *shift) {
        for (int64_t r = 0; r < rows; r++)
            simd::loop<V>(C, [&](int64_t c, const auto &t) NNL_INLINE {
                fma(V::load(x + r * C + c, t), V::load(scale + c, t), V::load(shift + c, t)).store(y + r * C + c, t);
            });
    }
};

static void cpu_scale_shift(const float *x, float *y, int64_t rows, int64_t C, const float *scale,
                            const float *shift) {
    int64_t total = rows * C;
    (void)total;
    par_for(rows, total, [&](int64_t lo_, int64_t hi_) {
        simd::run<ScaleShiftK>(x + lo_ * C, y + lo_ * C, hi_ - lo_, C, scale, shift);
    });
}

/* batch norm backward: p1[c] += dy[r, c] and p2[c] += dy[r, c] xhat[r, c]
   over rows; and dx from the channel sums (A = gamma invstd, M1, M2 their
   means, zero with fixed statistics) */
struct BnSumsK {
    template <class V>
    static void run(const float *x, const float *dy, int64_t rows, int64_t C, const float *mean, const float *invstd,
                    float *p1, float *p2) {
        for (int64_t r = 0; r < rows; r++)
            simd::loop<V>(C, [&](int64_t c, const auto &t) NNL_INLINE {
                V d = V::load(dy + r * C + c, t), xc = V::load(x + r * C + c, t) - V::load(mean + c, t);
                (V::load(p1 + c, t) + d).store(p1 + c, t);
                fma(d * xc, V::load(invstd + c, t), V::load(p2 + c, t)).store(p2 + c, t);
            });
    }
};
struct BnDxK {
    template <class V>
    static void run(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                    const float *invstd, const float *A, const float *M1, const float *M2) {
        for (int64_t r = 0; r < rows; r++)
            simd::loop<V>(C, [&](int64_t c, const auto &t) NNL_INLINE {
                V xh = (V::load(x + r * C + c, t) - V::load(mean + c, t)) * V::load(invstd + c, t);
                V d = V::load(dy + r * C + c, t) - V::load(M1 + c, t) - xh * V::load(M2 + c, t);
                (V::load(A + c, t) * d).store(dx + r * C + c, t);
            });
    }
};

static void cpu_bn_backward(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                            const float *invstd, const float *gamma, float *dgamma, float *dbeta, bool training) {
    /* sums of dy and dy * xhat per channel */
    double *sdy = scratch<double>(1, (size_t)C), *sdx = scratch<double>(2, (size_t)C);
    float *p1 = scratch<float>(3, (size_t)C), *p2 = scratch<float>(4, (size_t)C);
    std::fill(sdy, sdy + C, 0.0);
    std::fill(sdx, sdx + C, 0.0);
    for (int64_t r0 = 0; r0 < rows; r0 += 64) {
        int64_t r1 = std::min(rows, r0 + 64);
        std::fill(p1, p1 + C, 0.f);
        std::fill(p2, p2 + C, 0.f);
        simd::run<BnSumsK>(x + r0 * C, dy + r0 * C, r1 - r0, C, mean, invstd, p1, p2);
        for (int64_t c = 0; c < C; c++) {
            sdy[c] += p1[c];
            sdx[c] += p2[c];
        }
    }
    for (int64_t c = 0; c < C; c++) {
        if (dbeta) dbeta[c] = (float)sdy[c];
        if (dgamma) dgamma[c] = (float)sdx[c];
    }
    if (!dx) return;
    float *A = scratch<float>(0, (size_t)(3 * C)), *M1 = A + C, *M2 = A + 2 * C;
    for (int64_t c = 0; c < C; c++) {
        float gm = gamma ? gamma[c] : 1.f;
        A[c] = gm * invstd[c];
        M1[c] = training ? (float)(sdy[c] / (double)rows) : 0.f;
        M2[c] = training ? (float)(sdx[c] / (double)rows) : 0.f;
    }
    int64_t total = rows * C;
    (void)total;
    par_for(rows, total, [&](int64_t lo_, int64_t hi_) {
        simd::run<BnDxK>(x + lo_ * C, dy + lo_ * C, dx + lo_ * C, hi_ - lo_, C, mean, invstd, (const float *)A,
                         (const float *)M1, (const float *)M2);
    });
}

/* The per-channel loops BatchNormalization ran inline before its GPU path:
   the same float arithmetic, in the same order. */
static void cpu_bn_prepare(bool training, int64_t C, float momentum, float eps, float *mm, float *mv,
                           const float *gamma, const float *beta, float *mean, float *invstd, float *scl, float *sh) {
    if (training) {
        for (int64_t i = 0; i < C; i++) {
            mm[i] = mm[i] * momentum + mean[i] * (1 - momentum);
            mv[i] = mv[i] * momentum + invstd[i] * (1 - momentum);
            invstd[i] = 1.f / std::sqrt(invstd[i] + eps);
        }
    } else {
        for (int64_t i = 0; i < C; i++) {
            mean[i] = mm[i];
            invstd[i] = 1.f / std::sqrt(mv[i] + eps);
        }
    }
    for (int64_t i = 0; i < C; i++) {
        scl[i] = (gamma ? gamma[i] : 1.f) * invstd[i];
        sh[i] = (beta ? beta[i] : 0.f) - mean[i] * scl[i];
    }
}

/* ---- global pooling, zero padding, nearest upsampling ----
   Plain loops (small layers next to the convolutions around them). */
static void cpu_global_pool_forward(bool max, bool cf, const float *x, float *y, int64_t B, int64_t S, int64_t C) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            float acc = max ? -INFINITY : 0.f;
            for (int64_t s = 0; s < S; s++) {
                float v = x[b * S * C + (cf ? c * S + s : s * C + c)];
                acc = max ? (v > acc || s == 0 ? v : acc) : acc + v;
            }
            y[b * C + c] = max ? acc : acc / (float)S;
        }
}
static void cpu_global_pool_backward(bool max, bool cf, const float *x, const float *y, const float *dy, float *dx,
                                     int64_t B, int64_t S, int64_t C) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            float d = dy[b * C + c];
            bool done = false;
            for (int64_t s = 0; s < S; s++) {
                int64_t i = b * S * C + (cf ? c * S + s : s * C + c);
                if (max) { /* the first position holding the maximum */
                    bool hit = !done && (x[i] == y[b * C + c] || (std::isnan(x[i]) && std::isnan(y[b * C + c])));
                    dx[i] = hit ? d : 0.f;
                    done = done || hit;
                } else {
                    dx[i] = d / (float)S;
                }
            }
        }
}
static void cpu_zero_pad_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                                 int64_t bo, int64_t l, int64_t r) {
    int64_t Ho = H + t + bo, Wo = W + l + r;
    memset(y, 0, (size_t)(n * Ho * Wo * inner) * sizeof(float));
    for (int64_t k = 0; k < n; k++)
        for (int64_t h = 0; h < H; h++)
            memcpy(y + ((k * Ho + h + t) * Wo + l) * inner, x + (k * H + h) * W * inner,
                   (size_t)(W * inner) * sizeof(float));
}
static void cpu_zero_pad_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner,
                                  int64_t t, int64_t bo, int64_t l, int64_t r) {
    int64_t Ho = H + t + bo, Wo = W + l + r;
    for (int64_t k = 0; k < n; k++)
        for (int64_t h = 0; h < H; h++)
            memcpy(dx + (k * H + h) * W * inner, dy + ((k * Ho + h + t) * Wo + l) * inner,
                   (size_t)(W * inner) * sizeof(float));
}
static void cpu_upsample_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                                 int64_t sw) {
    int64_t Ho = H * sh, Wo = W * sw;
    for (int64_t k = 0; k < n; k++)
        for (int64_t h = 0; h < Ho; h++)
            for (int64_t w = 0; w < Wo; w++)
                memcpy(y + ((k * Ho + h) * Wo + w) * inner, x + ((k * H + h / sh) * W + w / sw) * inner,
                       (size_t)inner * sizeof(float));
}
static void cpu_upsample_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner,
                                  int64_t sh, int64_t sw) {
    int64_t Ho = H * sh, Wo = W * sw;
    memset(dx, 0, (size_t)(n * H * W * inner) * sizeof(float));
    for (int64_t k = 0; k < n; k++)
        for (int64_t h = 0; h < Ho; h++)
            for (int64_t w = 0; w < Wo; w++) {
                float *d = dx + ((k * H + h / sh) * W + w / sw) * inner;
                const float *s = dy + ((k * Ho + h) * Wo + w) * inner;
                for (int64_t c = 0; c < inner; c++) d[c] += s[c];
            }
}

/* ---- Embedding and Masking ----
   The loops Embedding and Masking ran inline before their GPU path, as
   they were (the same results, bit for bit). */
static void cpu_embedding_forward(const float *ids, const float *E, float *y, int64_t rows, int64_t dim) {
    for (int64_t r = 0; r < rows; r++)
        memcpy(y + r * dim, E + (int64_t)ids[r] * dim, (size_t)dim * sizeof(float));
}
static void cpu_embedding_grad(const float *ids, const float *dy, float *G, int64_t rows, int64_t V, int64_t dim,
                               uint8_t *marks) {
    memset(G, 0, (size_t)(V * dim) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        int64_t id = (int64_t)ids[r];
        if (marks) marks[(size_t)id] = 1;
        float *g = G + id * dim;
        const float *d = dy + r * dim;
        for (int64_t j = 0; j < dim; j++) g[j] += d[j];
    }
}
static void cpu_masking_forward(const float *x, float *y, float *mask, int64_t steps, int64_t F, float value) {
    for (int64_t r = 0; r < steps; r++) {
        const float *xr = x + r * F;
        bool keep = false;
        for (int64_t j = 0; j < F && !keep; j++) keep = xr[j] != value;
        mask[r] = keep ? 1.f : 0.f;
        if (y)
            for (int64_t j = 0; j < F; j++) y[r * F + j] = keep ? xr[j] : 0.f;
    }
}
static void cpu_masking_backward(const float *mask, const float *dy, float *dx, int64_t steps, int64_t F) {
    for (int64_t r = 0; r < steps; r++)
        for (int64_t j = 0; j < F; j++) dx[r * F + j] = mask[r] != 0.f ? dy[r * F + j] : 0.f;
}

/* ---- recurrent layers ----
   The row copies and fills Recurrent ran inline (memcpy, std::fill: the
   same values). The LSTM step entries are defined with Recurrent, whose
   loops they are (they call K() for the activations, as those loops did). */
static void cpu_rnn_rows(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u,
                         const float *mask, int64_t T, int64_t t) {
    for (int64_t b = 0; b < B; b++) {
        if (mask && mask[b * T + t] != 0.f) continue;
        if (src) memcpy(dst + b * ldd, src + b * lds, (size_t)u * sizeof(float));
        else std::fill(dst + b * ldd, dst + b * ldd + u, 0.f);
    }
}
/* recurrent dropout: Recurrent::draw_mask's loop (dropout_forward's hash,
   the mask alone), the per-row K().mul calls and the inline loops it ran
   (the same products, rounded before any add: the same values) */
static void cpu_dropout_mask(float *mask, int64_t n, float rate, uint64_t seed) {
    uint32_t thresh = dropout_thresh(rate);
    float keep = 1.f / (1.f - rate);
    for (int64_t i = 0; i < n; i++) mask[i] = dropout_draw(i, seed, thresh, keep);
}
static void cpu_mul_rows(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y,
                         int64_t ldy, int64_t rows, int64_t n, bool add) {
    for (int64_t r = 0; r < rows; r++) {
        const float *ar = a + r * lda, *mr = m + (r / rep) * ldm;
        float *yr = y + r * ldy;
        if (add)
            for (int64_t j = 0; j < n; j++) yr[j] += ar[j] * mr[j];
        else
            for (int64_t j = 0; j < n; j++) yr[j] = ar[j] * mr[j];
    }
}
static void cpu_add(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
/* Bidirectional's merge and its gradient (the loops Bidirectional ran,
   with the backward copy's time reversal in the indexing instead of a flip
   in place) */
static void cpu_bidir_merge(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u) {
    for (int64_t r = 0; r < B * T; r++) {
        const float *fr = f + r * u, *br = b + ((r / T) * T + (T - 1 - r % T)) * u;
        if (mode == 0) {
            memcpy(y + r * 2 * u, fr, (size_t)u * sizeof(float));
            memcpy(y + r * 2 * u + u, br, (size_t)u * sizeof(float));
            continue;
        }
        float *o = y + r * u;
        for (int64_t j = 0; j < u; j++) o[j] = mode == 1 ? fr[j] + br[j] : mode == 2 ? fr[j] * br[j] : (fr[j] + br[j]) / 2;
    }
}
static void cpu_bidir_split(int mode, const float *dy, const float *f, const float *b, float *df, float *db,
                            int64_t B, int64_t T, int64_t u) {
    for (int64_t r = 0; r < B * T; r++) {
        const int64_t rb = (r / T) * T + (T - 1 - r % T);
        float *dfr = df + r * u, *dbr = db + rb * u;
        if (mode == 0) {
            memcpy(dfr, dy + r * 2 * u, (size_t)u * sizeof(float));
            memcpy(dbr, dy + r * 2 * u + u, (size_t)u * sizeof(float));
            continue;
        }
        const float *d = dy + r * u, *fr = f + r * u, *br = b + rb * u;
        for (int64_t j = 0; j < u; j++) {
            dfr[j] = mode == 1 ? d[j] : mode == 2 ? d[j] * br[j] : d[j] / 2;
            dbr[j] = mode == 1 ? d[j] : mode == 2 ? d[j] * fr[j] : d[j] / 2;
        }
    }
}
static void cpu_lstm_forward(const CellArgs &a);
static void cpu_lstm_backward(const CellArgs &a);
static void cpu_gru_forward(const CellArgs &a);
static void cpu_gru_backward(const CellArgs &a);
static void cpu_simple_forward(const CellArgs &a);
static void cpu_simple_backward(const CellArgs &a);

/* Kernel tables are filled field by field, by name (at compile time):
   adding an entry to Kernels cannot shift the others, and an entry left out
   stays NULL, which kernels_complete() reports (the unit and GPU tests check
   every table; nnl_set_device refuses an incomplete CUDA table). */
[[maybe_unused]] static bool kernels_complete(const Kernels &k) {
    static_assert(sizeof(Kernels) % sizeof(void (*)()) == 0 && sizeof(void (*)()) == sizeof(const char *),
                  "Kernels must hold pointers only");
    unsigned char bytes[sizeof(Kernels)];
    memcpy(bytes, &k, sizeof k);
    for (size_t at = 0; at < sizeof k; at += sizeof(void (*)())) {
        uintptr_t v = 0;
        memcpy(&v, bytes + at, sizeof v);
        if (!v) return false;
    }
    return true;
}

static constexpr Kernels cpu_table() {
    Kernels k = {};
    k.name = "cpu";
    k.sgemm = gemm::sgemm;
    k.sgemm_bias_act = gemm::sgemm_bias_act;
    k.bias_add = cpu_bias_add;
    k.bias_grad = cpu_bias_grad;
    k.act_forward = cpu_act_forward;
    k.act_backward = cpu_act_backward;
    k.dropout_forward = cpu_dropout_forward;
    k.relu_bits = cpu_relu_bits;
    k.relu_bits_backward = cpu_relu_bits_backward;
    k.mul = cpu_mul;
    k.copy = cpu_copy;
    k.sumsq = cpu_sumsq;
    k.transpose = cpu_transpose;
    k.im2col = cpu_im2col;
    k.col2im = cpu_col2im;
    k.pool_forward = cpu_pool_forward;
    k.pool_backward = cpu_pool_backward;
    k.moments = cpu_moments;
    k.scale_shift = cpu_scale_shift;
    k.bn_backward = cpu_bn_backward;
    k.bn_prepare = cpu_bn_prepare;
    k.global_pool_forward = cpu_global_pool_forward;
    k.global_pool_backward = cpu_global_pool_backward;
    k.zero_pad_forward = cpu_zero_pad_forward;
    k.zero_pad_backward = cpu_zero_pad_backward;
    k.upsample_forward = cpu_upsample_forward;
    k.upsample_backward = cpu_upsample_backward;
    k.embedding_forward = cpu_embedding_forward;
    k.embedding_grad = cpu_embedding_grad;
    k.masking_forward = cpu_masking_forward;
    k.masking_backward = cpu_masking_backward;
    k.rnn_rows = cpu_rnn_rows;
    k.lstm_forward = cpu_lstm_forward;
    k.lstm_backward = cpu_lstm_backward;
    k.gru_forward = cpu_gru_forward;
    k.gru_backward = cpu_gru_backward;
    k.simple_forward = cpu_simple_forward;
    k.simple_backward = cpu_simple_backward;
    k.dropout_mask = cpu_dropout_mask;
    k.mul_rows = cpu_mul_rows;
    k.add = cpu_add;
    k.bidir_merge = cpu_bidir_merge;
    k.bidir_split = cpu_bidir_split;
    return k;
}
static constexpr Kernels cpu_kernels = cpu_table(); /* constant-initialised: usable from any static constructor */

/* Mixed precision (nnl_set_precision "mixed_bfloat16"): the CPU table with
   the GEMMs on bfloat16 operands (gemm::bf16), everything else float32
   (losses, softmax, normalisation, optimizers). hw: AVX512-BF16, else the
   portable emulation (NNL_BF16=emulate). */
static constexpr Kernels bf16_table(bool hw) {
    Kernels k = cpu_table();
    k.name = hw ? "cpu-bf16" : "cpu-bf16-emulated";
    k.sgemm = hw ? gemm::bf16::sgemm<true> : gemm::bf16::sgemm<false>;
    k.sgemm_bias_act = hw ? gemm::bf16::sgemm_bias_act<true> : gemm::bf16::sgemm_bias_act<false>;
    return k;
}
static constexpr Kernels bf16_kernels = bf16_table(true), bf16_emulated_kernels = bf16_table(false);

/* While a model runs on this thread, K() is its table: the CUDA table of
   section 6b for a model on a GPU (its functions take the host arenas'
   addresses and work on their device mirrors), a bf16 table for a CPU
   model in mixed precision (Model::forward, Model::backward). Pool workers
   never read it: a GEMM's chunks run the block function the caller's
   table chose. */
static thread_local const Kernels *tl_kernels = nullptr;
static const Kernels &K() { return tl_kernels ? *tl_kernels : cpu_kernels; }

} // namespace nnl

/* ========================================================================
   3  Layers
   A layer is one self-contained unit: its Keras configuration (read in the
   constructor), its shape rule (build), forward, backward, and its weights.
   Adding a layer means one class here (which describes itself: its Keras
   config, its size bound, whether it has a GPU path), its line in
   layer_registry() and its class in bindings/python/nnlite/layers.py; a
   unit test checks nnlite.h's and README's lists against the registry.
   Activations x, y and their gradients are (B, per-sample shape) arrays that
   the model owns; a layer's private scratch (ws) is sized by workspace().
   ======================================================================== */
namespace nnl {

/* JSON values: what a layer's Keras configuration is written as (config()
   below; the parser and the writer are in section 8). */
namespace files {
struct Json {
    enum Kind { NUL, BOOL, NUM, STR, ARR, OBJ } kind = NUL;
    bool b = false;
    bool is_int = false; /* written without a fraction */
    double num = 0;
    std::string s;
    std::vector<Json> a;
    std::vector<std::pair<std::string, Json>> o;

    static Json boolean(bool v) { Json j; j.kind = BOOL; j.b = v; return j; }
    static Json integer(int64_t v) { Json j; j.kind = NUM; j.num = (double)v; j.is_int = true; return j; }
    static Json number(double v) { Json j; j.kind = NUM; j.num = v; return j; }
    /* a float32 parameter as its shortest decimal (0.2f -> 0.2), which reads back to the same float */
    static Json number_f(float f) {
        char buf[40];
        for (int prec = 1; prec <= 9; prec++) {
            snprintf(buf, sizeof buf, "%.*e", prec - 1, (double)f);
            double d = strtod(buf, nullptr);
            if ((float)d == f) return number(d);
        }
        return number((double)f);
    }
    static Json string(const std::string &v) { Json j; j.kind = STR; j.s = v; return j; }
    static Json array() { Json j; j.kind = ARR; return j; }
    static Json object() { Json j; j.kind = OBJ; return j; }
    Json &set(const std::string &k, Json v) {
        o.emplace_back(k, std::move(v));
        return *this;
    }
    Json &push(Json v) {
        a.push_back(std::move(v));
        return *this;
    }
    const Json *get(const char *k) const {
        for (auto &kv : o)
            if (kv.first == k) return &kv.second;
        return nullptr;
    }
};

static Json ints_json(const int64_t *v, int n) {
    Json a = Json::array();
    for (int i = 0; i < n; i++) a.push(Json::integer(v[i]));
    return a;
}

static void null_keys(Json &cfg, std::initializer_list<const char *> keys) {
    for (const char *k : keys) cfg.set(k, Json());
}

/* {"class_name": "GlorotUniform", "config": {...}} of an initializer name (section 8) */
static Json init_json(const std::string &name);
} // namespace files
using files::Json;

struct WeightSpec {
    std::string name; /* "kernel", "bias" */
    Shape shape;
    std::string init;
    bool trainable = true; /* false: state the optimizer leaves alone (moving statistics) */
    float *w = nullptr, *g = nullptr; /* into the model's arenas */
};

/* Persistent state that is not a weight: what a stateful layer (a stateful
   recurrent layer's h and c) carries from one batch to the next. Kept in the
   model's state arena (Model::S), saved in model files (nnl_save_model) and
   mirrored on a GPU, but not a weight: not in get_weights, the weight and
   parameter counts, npz files or nnl_save_weights. A per-slot state holds
   one row of `shape` per batch slot, as Keras sizes a stateful layer's
   states by the model's fixed batch size (Model::state_slots); otherwise it
   is `shape` once for the whole model. Zero until the layer writes it. */
struct StateSpec {
    std::string name; /* "h", "c" */
    Shape shape;      /* per batch slot (per_slot), else the whole state */
    bool per_slot = true;
    float *s = nullptr; /* into the model's state arena: size(slots) floats */
    int64_t slots = 0;  /* the batch slots the arena holds (Model::state_slots) */
    int64_t size(int64_t slots) const { return per_slot ? slots * shape.size() : shape.size(); }
};

struct Dist; /* a data-parallel run's collectives (section 6c) */
/* SyncBatchNormalization's one collective: v[0..n) summed over the ranks
   in place; w: this rank's gradient weight in the step (section 6c). */
static void sync_sum(Dist *d, double *v, int n);
static double sync_weight(const Dist *d);

struct Ctx {
    bool training = false;
    uint64_t seed = 0; /* per-batch seed for dropout masks */
    /* a distributed model with NNL_SYNC_BATCHNORM: BatchNormalization's
       batch statistics and their gradients are summed over the ranks */
    Dist *sync = nullptr;
    /* backward of a distributed model: layers with long loops of their own
       (recurrent layers: every time step) call it now and then, so that
       gradient buckets already on their way move on (MPI progresses
       non-blocking collectives only inside MPI calls) */
    void (*progress)(void *) = nullptr;
    void *progress_user = nullptr;
    void poll() const {
        if (progress) progress(progress_user);
    }
};

class Layer {
public:
    Spec spec;            /* the Keras configuration as given */
    std::string name;     /* "dense_1" */
    const char *cls = ""; /* "Dense" */
    Shape in, out;        /* per-sample shapes */
    std::vector<WeightSpec> weights;
    std::vector<StateSpec> states; /* persistent non-weight state (stateful layers), declared by the constructor */
    float *ws = nullptr;  /* private memory, workspace(B) floats, kept from forward to backward (only) */
    float *sc = nullptr;  /* scratch(B) floats, valid only inside one call (other buffers use it between) */
    /* Set by compile when the loss computes its gradient w.r.t. this layer's
       pre-activation (softmax/sigmoid + cross-entropy, as Keras does): then
       backward receives dL/dz in dy and skips the activation. */
    bool fused_output = false;
    /* Max pooling over disjoint windows after a convolution (Model::add):
       the pool's backward applies the convolution's activation derivative
       (absorb, taken from the pooled outputs: the max is a copy of the
       convolution's output at the window's argmax, and every other position
       gets a zero gradient either way), and the convolution's backward
       receives dL/dz in dy (act_by_next) and keeps neither its output nor
       ReLU's bits. The same values as the unfused order (each dz is the
       same operation on the same two numbers; only the sign of a zero
       gradient may differ), for less memory: the convolution's output is
       free once pooled (T-LENET at batch 512: 23.6 MB of a 60.6 MB peak). */
    bool act_by_next = false;
    Act absorb = ACT_LINEAR;
    /* Set by nnl_set_device while the model lives on a GPU (and the plan is
       made again): a layer may size its scratch for the device there (Conv:
       larger im2col blocks, fewer and fuller launches). */
    bool on_gpu = false;

    virtual ~Layer() {}
    virtual void build(const Shape &input) = 0;
    virtual int64_t workspace(int64_t /*B*/) const { return 0; }
    /* Memory needed only while one forward or backward call runs (layout
       transposes, im2col columns). The arena's plan lends it to other
       buffers between the layer's calls, so these cost the model about one
       layer's worth. */
    virtual int64_t scratch(int64_t /*B*/) const { return 0; }
    /* What backward reads besides dy and ws, for the activation arena's plan
       (Model::ensure_batch): an activation no later step reads lends its
       memory to other buffers. backward_reads_x / _y: whether backward reads
       its input x / its output y (the default: both). reads_before_dx: it
       reads x and y only before it writes any of dx, so that dx may take
       their memory. A layer changing what its backward reads says so here. */
    virtual bool backward_reads_x() const { return true; }
    virtual bool backward_reads_y() const { return true; }
    virtual bool reads_before_dx() const { return false; }
    /* A view shares its input's memory (Flatten, Reshape): no copy at all. */
    virtual bool is_view() const { return false; }
    /* A copy for another inference workspace (Model::InferPool: concurrent
       nnl_predict calls on one model): the same configuration, shapes and
       weight pointers (the model's arena W, only read at inference), but its
       own ws, sc and mask (set when the copy's workspace is planned) and its
       own caches, so that what forward writes into the layer stays the
       copy's. NULL: the layer cannot be copied, and predictions on the model
       then run one at a time. Every layer class says NNL_CLONE. */
    virtual std::unique_ptr<Layer> clone() const { return nullptr; }
    virtual void forward(const float *x, float *y, int64_t B, const Ctx &c) = 0;
    /* A rank with no samples in a step of a synchronised run (Ctx::sync)
       still takes part in the collectives forward (backward = false) and
       backward would make: the layers that make any contribute nothing. */
    virtual void collective(bool backward, const Ctx &c) {
        (void)backward;
        (void)c;
    }
    /* A weight whose gradient is nonzero in a few rows only (an embedding
       table: the rows of the ids the batch used): the marks, one per row of
       weights[0], nonzero for the rows backward wrote, the rest of the
       gradient being zero; NULL when the gradient is dense. A data-parallel
       run sends only the rows some rank marked (TensorFlow's IndexedSlices,
       which Horovod allgathers). clear_grad_rows: no row (a rank with no
       samples in a step). */
    virtual const uint8_t *grad_rows() const { return nullptr; }
    virtual void clear_grad_rows() {}
    /* dx may be NULL (first layer): then only weight gradients are needed.
       dy may be overwritten: the model no longer needs it afterwards. */
    virtual void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &c) = 0;
    /* The activation applied last, and where its input (the logits) is kept;
       used by compile to fuse softmax/sigmoid with cross-entropy. */
    virtual Act output_act() const { return ACT_LINEAR; }
    virtual const float *logits(const float * /*x*/) const { return nullptr; }

    /* ---- What a layer says about itself. Adding a layer means: this class,
       its line in layer_registry(), and its class in the Python package
       (bindings/python/nnlite/layers.py); nnlite.h's and README's lists are
       checked against the registry by the unit tests. ---- */
    /* Its Keras configuration: the config keys after name, trainable and
       dtype, in tf.keras 2.x's order and with Keras' defaults, as
       nnl_model_to_json writes them; nnl_model_from_json gives them back to
       the constructor. Initializers through init_json(). */
    virtual void config(Json &c) const = 0;
    /* A conservative estimate of the layer's size from its parsed
       configuration and its input shape, before build: values per sample of
       its output, and its weights. In doubles, so that no size overflows;
       models read from JSON or files are refused before anything is
       allocated when it is too large (section 8). */
    struct Size {
        double values, weights;
    };
    virtual Size size_bound(const Shape &in) const = 0;
    /* Whether forward and backward run through K() alone, so that the layer
       works on a GPU (section 6b). A layer stays on the CPU until it says so. */
    virtual bool gpu_path() const { return false; }
    /* A layer that reads ids rather than values (Embedding): it has no dx,
       so it can only be the first layer; it checks the model's input before
       anything runs (fn: the API call, arg: "x" or "x_val"). */
    virtual bool first_only() const { return false; }
    virtual void check_input(const float * /*x*/, int64_t /*n*/, const char * /*fn*/, const char * /*arg*/) const {}
    /* An input shape the layer's own arguments imply (Embedding's
       input_length), used when it comes first without input_shape. */
    std::vector<int64_t> implied_input;
    /* Called once the weights have their initial values: a layer whose
       initial values are not one initializer's draw (LSTM's unit_forget_bias
       sets the forget gate's bias to one) adjusts them here. */
    virtual void initialized() {}

    /* ---- Variable length and step masks (Keras' input_shape=(None, F),
       Masking, Embedding's mask_zero). A model whose input's first axis is
       None (Model::var_len) is built at a nominal length and rebuilt at the
       length of each call's x (Model::set_length); only layers that act per
       step or run over the steps may see such an input (any_length), and
       the length stays in the output while keeps_length. A step mask is
       one float per (sample, time step), 1 kept, 0 masked, in the model's
       mask buffer (B, T); a layer that makes_mask writes it in forward, a
       layer whose input carries one (mask_in) reads it there, and the
       mask reaches the output while passes_mask (the loss and metrics then
       skip masked positions). A layer that would receive a mask without
       supporting it is refused, as Keras raises. ---- */
    virtual bool any_length(const Shape & /*input*/) const { return false; }
    virtual bool keeps_length() const { return true; }
    virtual bool makes_mask() const { return false; }
    virtual bool supports_mask() const { return false; }
    virtual bool passes_mask() const { return supports_mask(); }
    bool var_in = false, var_out = false;  /* the first axis of in / out is None */
    bool mask_in = false, mask_out = false; /* in / out carry the step mask */
    float *mask = nullptr; /* the model's (B, T) step mask while mask_in or makes_mask(), else NULL */
    /* ---- Channels-first chains. A channels-first convolution or pooling
       layer computes channels-last inside (transposing its input, output
       and their gradients). Between two such layers the model skips the
       pair of transposes: the first leaves its output (and takes its
       output's gradient) channels-last (cl_out), the second takes its input
       (and gives its input's gradient) channels-last (cl_in). Exact: the
       transposes only moved values. R-LENET: 6 of its 8 transposes. ---- */
    virtual bool keeps_cl() const { return false; }
    bool cl_in = false, cl_out = false;

    int64_t param_count(bool trainable_only = false) const {
        int64_t n = 0;
        for (auto &w : weights)
            if (w.trainable || !trainable_only) n += w.shape.size();
        return n;
    }
};

#define NNL_CLONE(T) \
    std::unique_ptr<Layer> clone() const override { return std::unique_ptr<Layer>(new T(*this)); }

/* Keras' default layer names: the class in snake case by Keras' own rule
   (keras.src.utils.naming.to_snake_case), so Conv2D gives conv2d and
   MaxPooling2D max_pooling2d:
       name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
       name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
   Both substitutions are simulated exactly: left to right, matches do not
   overlap, ASCII classes as in Python's re. */
static std::string snake(const char *cls) {
    auto up = [](char c) { return c >= 'A' && c <= 'Z'; };
    auto lo = [](char c) { return c >= 'a' && c <= 'z'; };
    std::string s = cls, t;
    for (size_t i = 0; i < s.size();) { /* (.)([A-Z][a-z]+) */
        if (i + 2 < s.size() && s[i] != '\n' && up(s[i + 1]) && lo(s[i + 2])) {
            size_t j = i + 2;
            while (j < s.size() && lo(s[j])) j++;
            t += s[i];
            t += '_';
            t.append(s, i + 1, j - i - 1);
            i = j;
        } else {
            t += s[i++];
        }
    }
    s.clear();
    for (size_t i = 0; i < t.size();) { /* ([a-z])([A-Z]) */
        if (i + 1 < t.size() && lo(t[i]) && up(t[i + 1])) {
            s += t[i];
            s += '_';
            s += t[i + 1];
            i += 2;
        } else {
            s += t[i++];
        }
    }
    return lower(s);
}

/* y = act(x W + b) on the last axis: x (B, ..., in), W (in, units),
   b (units,), y (B, ..., units). The pre-activation z is kept in ws for
   backward when the activation is not linear. */
class Dense : public Layer {
public:
    NNL_CLONE(Dense)
    int64_t units;
    Act act;
    bool use_bias;
    explicit Dense(Args &a) {
        cls = "Dense";
        units = a.integer("units", 0, 0);
        NNL_REQUIRE(units > 0 && units < (1 << 28), NNL_ERR_ARGUMENT, "Dense: units must be a positive integer");
        act = parse_act(a.str("activation", 1, "linear"), "Dense");
        use_bias = a.flag("use_bias", 2, true);
        std::string ki = a.str("kernel_initializer", 3, "glorot_uniform");
        std::string bi = a.str("bias_initializer", 4, "zeros");
        WeightSpec k;
        k.name = "kernel";
        k.init = ki;
        weights.push_back(k);
        if (use_bias) {
            WeightSpec b;
            b.name = "bias";
            b.init = bi;
            weights.push_back(b);
        }
    }
    void config(Json &c) const override {
        c.set("units", Json::integer(units)).set("activation", Json::string(act_names[act]));
        c.set("use_bias", Json::boolean(use_bias));
        c.set("kernel_initializer", files::init_json(weights[0].init));
        c.set("bias_initializer", files::init_json(use_bias ? weights[1].init : std::string("zeros")));
        files::null_keys(c, {"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                             "bias_constraint"});
    }
    Size size_bound(const Shape &s) const override {
        double last = (double)s.last(), u = (double)units;
        return {(double)s.size() / std::max(last, 1.0) * u, last * u + u};
    }
    bool gpu_path() const override { return true; }
    /* per step on (T, F): any length, the mask passes (Keras' Dense supports_masking) */
    bool any_length(const Shape &input) const override { return input.rank >= 2; }
    bool supports_mask() const override { return in.rank >= 2; }
    void build(const Shape &input) override {
        NNL_REQUIRE(input.rank >= 1, NNL_ERR_SHAPE, "Dense: input must have at least one dimension");
        in = out = input;
        out.d[out.rank - 1] = units;
        weights[0].shape = Shape{input.last(), units};
        if (use_bias) weights[1].shape = Shape{units};
    }
    /* the pre-activation, kept only when backward needs it */
    int64_t workspace(int64_t B) const override {
        return act == ACT_LINEAR || fused_epilogue() ? 0 : B * out.size();
    }
    Act output_act() const override { return act; }
    const float *logits(const float *) const override { return act == ACT_LINEAR ? nullptr : ws; }
    /* bias and activation in the GEMM's epilogue, straight into y */
    bool fused_epilogue() const { return act_from_output(act) && !fused_output; }
    /* y for the activation's derivative, then x for the kernel's gradient,
       then dx from dz and the kernel */
    bool backward_reads_y() const override { return act != ACT_LINEAR && !fused_output; }
    bool reads_before_dx() const override { return true; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        int64_t rows = B * (in.size() / in.last()), nin = in.last();
        /* a prediction of a few samples in mixed_bfloat16: the kernel's
           words kept (gemm::bf16::WeightCache) */
        bool kept = rows <= 4 && gemm::bf16::tl_wcache && &K() == &bf16_kernels;
        if (fused_epilogue()) {
            if (kept && gemm::bf16::kept_product(rows, units, nin, x, nin, weights[0].w, y, units,
                                                 use_bias ? weights[1].w : nullptr, act))
                return;
            K().sgemm_bias_act(rows, units, nin, x, nin, weights[0].w, units, y, units,
                               use_bias ? weights[1].w : nullptr, act);
            return;
        }
        float *z = act == ACT_LINEAR ? y : ws;
        if (!kept || !gemm::bf16::kept_product(rows, units, nin, x, nin, weights[0].w, z, units, nullptr, ACT_LINEAR))
            K().sgemm(false, false, rows, units, nin, 1.f, x, nin, weights[0].w, units, 0.f, z, units);
        if (use_bias) K().bias_add(z, weights[1].w, rows, units);
        if (act != ACT_LINEAR) K().act_forward(act, z, y, act == ACT_SOFTMAX ? rows : 1, act == ACT_SOFTMAX ? units : rows * units);
    }
    void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &) override {
        int64_t rows = B * (in.size() / in.last()), nin = in.last();
        const float *dz = dy;
        if (act != ACT_LINEAR && !fused_output) {
            /* dz overwrites the saved z, or dy itself when no z is kept */
            float *d = fused_epilogue() ? const_cast<float *>(dy) : ws;
            K().act_backward(act, fused_epilogue() ? y : ws, y, dy, d, act == ACT_SOFTMAX ? rows : 1,
                             act == ACT_SOFTMAX ? units : rows * units);
            dz = d;
        }
        const Kernels &k = K(); /* the caller's table (it is per thread) */
        auto kernel_grad = [&] {
            k.sgemm(true, false, nin, units, rows, 1.f, x, nin, dz, units, 0.f, weights[0].g, units);
            if (use_bias) k.bias_grad(dz, weights[1].g, rows, units);
        };
        auto input_grad = [&] {
            k.sgemm(false, true, rows, nin, units, 1.f, dz, units, weights[0].w, units, 0.f, dx, nin);
        };
        if (dx && paired_products(k, rows, nin, x, dx)) {
            pool::run_chunks(2, 2, [&](int64_t c) {
                if (c == 0)
                    kernel_grad();
                else
                    input_grad();
            });
            return;
        }
        kernel_grad();
        if (dx) input_grad();
    }

    /* On two threads the kernel's gradient and dx (the same multiply-adds,
       rows x nin x units each) are computed at once, each whole on one
       thread, rather than one after the other with each split over both: no
       B packed twice, no second wait for the other thread, and each
       product's elements are the same sums as on one thread (the same bits).
       Not where dx takes x's memory (reads_before_dx: the arena may lend
       it), nor below NNL_DENSE_PAIR_MACS, nor off the CPU's kernel tables.
       AMD EPYC (Zen 4) VM, two threads, R-MLP training: its 128 -> 128
       layer's backward 63 -> 59 us a step, its 128 -> 10 layer's 17.5 ->
       13.5 us; whole steps 0-2 % faster (the VM's noise is as large). */
    bool paired_products(const Kernels &k, int64_t rows, int64_t nin, const float *x, const float *dx) const {
        if (threads() != 2 || (&k != &cpu_kernels && &k != &bf16_kernels && &k != &bf16_emulated_kernels))
            return false;
        if ((double)rows * (double)nin * (double)units < NNL_DENSE_PAIR_MACS) return false;
        /* x (read by the first) and dx (written by the second) apart; as
           addresses: the two may point into different arrays */
        uintptr_t a = (uintptr_t)x, b = (uintptr_t)dx, bytes = (uintptr_t)(rows * nin) * sizeof(float);
        return b + bytes <= a || a + bytes <= b;
    }
};

class Activation : public Layer {
public:
    NNL_CLONE(Activation)
    Act act;
    explicit Activation(Args &a) {
        cls = "Activation";
        NNL_REQUIRE(a.has("activation", 0), NNL_ERR_ARGUMENT, "Activation: needs an activation name");
        act = parse_act(a.str("activation", 0, ""), "Activation");
    }
    void config(Json &c) const override { c.set("activation", Json::string(act_names[act])); }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    bool gpu_path() const override { return true; }
    void build(const Shape &input) override { in = out = input; }
    bool any_length(const Shape &) const override { return true; }
    bool supports_mask() const override { return true; }
    Act output_act() const override { return act; }
    const float *logits(const float *x) const override { return x; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        int64_t n = B * in.size();
        K().act_forward(act, x, y, act == ACT_SOFTMAX ? n / in.last() : 1, act == ACT_SOFTMAX ? in.last() : n);
    }
    void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        int64_t n = B * in.size();
        if (fused_output)
            K().copy(dy, dx, n);
        else
            K().act_backward(act, x, y, dy, dx, act == ACT_SOFTMAX ? n / in.last() : 1,
                             act == ACT_SOFTMAX ? in.last() : n);
    }
};

/* Inverted dropout: in training, zero each value with probability rate and
   scale the rest by 1/(1-rate); at inference the identity. The mask lives in ws. */
class Dropout : public Layer {
public:
    NNL_CLONE(Dropout)
    float rate;
    int64_t seed;
    /* distinct masks per Dropout layer from the layer's (unique) name: the
       same on every run, unlike an address */
    uint64_t name_hash() const {
        uint64_t h = 1469598103934665603ull;
        for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
        return h;
    }
    explicit Dropout(Args &a) {
        cls = "Dropout";
        rate = (float)a.num("rate", 0, -1);
        NNL_REQUIRE(rate >= 0 && rate < 1, NNL_ERR_ARGUMENT, "Dropout: rate must be in [0, 1), got %g", rate);
        const Value *ns = a.get("noise_shape", 1);
        NNL_REQUIRE(!ns || ns->kind == Value::NONE, NNL_ERR_UNSUPPORTED,
                    "Dropout: noise_shape %s is not supported (None only)", ns ? ns->repr().c_str() : "");
        seed = a.integer("seed", 2, 0);
    }
    void config(Json &c) const override {
        c.set("rate", Json::number_f(rate)).set("noise_shape", Json());
        c.set("seed", seed ? Json::integer(seed) : Json());
    }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    bool gpu_path() const override { return true; }
    bool any_length(const Shape &) const override { return true; }
    bool supports_mask() const override { return true; }
    void build(const Shape &input) override { in = out = input; }
    int64_t workspace(int64_t B) const override { return B * in.size(); }
    bool backward_reads_x() const override { return false; } /* the mask only */
    bool backward_reads_y() const override { return false; }
    void forward(const float *x, float *y, int64_t B, const Ctx &c) override {
        int64_t n = B * in.size();
        if (!c.training || rate == 0.f)
            K().copy(x, y, n);
        else
            K().dropout_forward(x, y, ws, n, rate, c.seed, (uint64_t)seed ^ name_hash());
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const Ctx &c) override {
        if (!dx) return;
        int64_t n = B * in.size();
        if (!c.training || rate == 0.f)
            K().copy(dy, dx, n);
        else
            K().mul(dy, ws, dx, n);
    }
};

class Flatten : public Layer {
public:
    NNL_CLONE(Flatten)
    explicit Flatten(Args &a) {
        cls = "Flatten";
        std::string df = a.str("data_format", 0, "channels_last");
        NNL_REQUIRE(df == "channels_last", NNL_ERR_UNSUPPORTED, "Flatten: data_format '%s' is not supported",
                    df.c_str());
    }
    void config(Json &c) const override { c.set("data_format", Json::string("channels_last")); }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    bool gpu_path() const override { return true; }
    void build(const Shape &input) override {
        in = input;
        out = Shape{input.size()};
    }
    bool is_view() const override { return true; }
    void forward(const float *, float *, int64_t, const Ctx &) override {}
    void backward(const float *, const float *, const float *, float *, int64_t, const Ctx &) override {}
};

class Reshape : public Layer {
public:
    NNL_CLONE(Reshape)
    std::vector<int64_t> target;
    explicit Reshape(Args &a) {
        cls = "Reshape";
        target = a.ints("target_shape", 0);
        NNL_REQUIRE(!target.empty() && target.size() <= NNL_MAX_RANK, NNL_ERR_ARGUMENT,
                    "Reshape: target_shape needs 1..%d dimensions", NNL_MAX_RANK);
    }
    std::string target_str() const {
        std::string t = "(";
        for (size_t i = 0; i < target.size(); i++) t += format(i ? ", %lld" : "%lld", (long long)target[i]);
        return t + (target.size() == 1 ? ",)" : ")");
    }
    void config(Json &c) const override {
        c.set("target_shape", files::ints_json(target.data(), (int)target.size()));
    }
    /* the product of the target's sizes; with a -1, the input's size */
    Size size_bound(const Shape &s) const override {
        double p = 1;
        for (int64_t t : target) p *= t == -1 ? 1.0 : std::fabs((double)t);
        bool unknown = std::find(target.begin(), target.end(), (int64_t)-1) != target.end();
        return {unknown ? std::max(p, (double)s.size()) : p, 0};
    }
    bool gpu_path() const override { return true; }
    void build(const Shape &input) override {
        in = input;
        out = Shape();
        int unknown = -1;
        int64_t known = 1;
        for (size_t i = 0; i < target.size(); i++) {
            if (target[i] == -1) {
                NNL_REQUIRE(unknown < 0, NNL_ERR_SHAPE, "Reshape: only one dimension may be -1");
                unknown = (int)i;
            } else {
                NNL_REQUIRE(target[i] > 0, NNL_ERR_SHAPE, "Reshape: bad dimension %lld", (long long)target[i]);
                known = mul_size(known, target[i]);
                NNL_REQUIRE(known >= 0 && known <= MAX_VALUES, NNL_ERR_SHAPE,
                            "Reshape: target_shape %s holds more than 2^40 values per sample", target_str().c_str());
            }
            out.d[out.rank++] = target[i];
        }
        if (unknown >= 0) {
            NNL_REQUIRE(input.size() % known == 0, NNL_ERR_SHAPE, "Reshape: cannot reshape %s into %s",
                        input.str().c_str(), out.str().c_str());
            out.d[unknown] = input.size() / known;
        }
        NNL_REQUIRE(out.size() == input.size(), NNL_ERR_SHAPE,
                    "Reshape: cannot reshape %s (%lld values) into %s (%lld values)", input.str().c_str(),
                    (long long)input.size(), out.str().c_str(), (long long)out.size());
    }
    bool is_view() const override { return true; }
    void forward(const float *, float *, int64_t, const Ctx &) override {}
    void backward(const float *, const float *, const float *, float *, int64_t, const Ctx &) override {}
};

/* ---- Convolution and friends ---------------------------------------------
   Keras' data formats: channels_last (..., C) by default, channels_first
   (C, ...) on request. The kernels work channels-last; a channels-first
   layer transposes its input and output around them (one pass each). */

static bool parse_data_format(Args &a, int pos, const char *owner) {
    std::string df = a.str("data_format", pos, "channels_last");
    NNL_REQUIRE(df == "channels_last" || df == "channels_first", NNL_ERR_ARGUMENT,
                "%s: data_format must be 'channels_last' or 'channels_first', got '%s'", owner, df.c_str());
    return df == "channels_first";
}

/* A tuple of nd positive integers (one integer means the same on each axis). */
static void parse_tuple(Args &a, const char *key, int pos, int nd, int64_t def, int64_t *out, const char *owner) {
    std::vector<int64_t> v = a.ints(key, pos);
    if (v.empty()) v.assign((size_t)nd, def);
    if (v.size() == 1) v.assign((size_t)nd, v[0]);
    NNL_REQUIRE((int)v.size() == nd, NNL_ERR_ARGUMENT, "%s: '%s' needs %d values, got %d", owner, key, nd,
                (int)v.size());
    for (int i = 0; i < nd; i++) {
        NNL_REQUIRE(v[(size_t)i] > 0 && v[(size_t)i] < (1 << 24), NNL_ERR_ARGUMENT,
                    "%s: '%s' must hold positive integers", owner, key);
        out[i] = v[(size_t)i];
    }
}

/* Spatial axes and channels of a per-sample shape in either format, into a
   Window's channels-last view (leading axes of size 1 below three). */
static void read_spatial(const Shape &s, int nd, bool cf, Window &g, const char *owner) {
    NNL_REQUIRE(s.rank == nd + 1, NNL_ERR_SHAPE, "%s: expects inputs of rank %d per sample (%s), got %s", owner,
                nd + 1, cf ? "channels, then spatial axes" : "spatial axes, then channels", s.str().c_str());
    g.C = cf ? s.d[0] : s.d[nd];
    for (int i = 0; i < nd; i++) g.in[3 - nd + i] = s.d[cf ? i + 1 : i];
}

static Shape spatial_shape(const Window &g, int nd, bool cf, int64_t channels) {
    Shape o;
    o.rank = nd + 1;
    for (int i = 0; i < nd; i++) o.d[cf ? i + 1 : i] = g.out[3 - nd + i];
    o.d[cf ? 0 : nd] = channels;
    return o;
}

/* Output sizes and padding, as TensorFlow computes them. */
static void window_outputs(Window &g, int nd, const std::string &padding, const char *owner) {
    for (int i = 3 - nd; i < 3; i++) {
        int64_t span = (g.k[i] - 1) * g.d[i] + 1;
        if (padding == "valid") {
            NNL_REQUIRE(g.in[i] >= span, NNL_ERR_SHAPE,
                        "%s: input size %lld is smaller than the window (%lld) with padding='valid'", owner,
                        (long long)g.in[i], (long long)span);
            g.out[i] = (g.in[i] - span) / g.s[i] + 1;
            g.pad[i] = 0;
        } else if (padding == "same") {
            g.out[i] = (g.in[i] + g.s[i] - 1) / g.s[i];
            int64_t total = std::max<int64_t>((g.out[i] - 1) * g.s[i] + span - g.in[i], 0);
            g.pad[i] = total / 2;
        } else { /* causal (Conv1D): all the padding in front */
            g.pad[i] = span - 1;
            g.out[i] = (g.in[i] - 1) / g.s[i] + 1;
        }
    }
}

static std::string parse_padding(Args &a, int pos, bool causal_ok, const char *owner) {
    std::string p = lower(a.str("padding", pos, "valid"));
    NNL_REQUIRE(p == "valid" || p == "same" || (causal_ok && p == "causal"), NNL_ERR_ARGUMENT,
                "%s: padding must be 'valid'%s or 'same', got '%s'", owner, causal_ok ? ", 'causal'" : "", p.c_str());
    return p;
}

/* Conv1D, Conv2D, Conv3D: im2col + SGEMM in chunks of samples (the column
   buffer stays a few MB), bias and activation on the GEMM's output. The
   kernel has Keras' layout (k..., in, out), which is exactly the GEMM's
   (kvol * in, out) matrix. A 1x1 convolution with stride 1 skips im2col. */
class Conv : public Layer {
public:
    int nd;
    int64_t filters;
    int64_t ks[3], st[3], dil[3];
    std::string padding;
    bool cf, use_bias;
    Act act;
    Window g;
    std::vector<float> gt; /* dW^T [filters, kvol * C] when backward computes it that way */
    std::vector<float> parts; /* the weight gradient's partial sums (cpu_conv1_weight_grad) */
    gemm::PackedB colp;       /* backward's columns packed as B (dW^T = dz^T col; grown once) */

    Conv(Args &a, int nd_, const char *cls_) : nd(nd_) {
        cls = cls_;
        filters = a.integer("filters", 0, 0);
        NNL_REQUIRE(filters > 0 && filters < (1 << 24), NNL_ERR_ARGUMENT, "%s: filters must be a positive integer",
                    cls);
        NNL_REQUIRE(a.has("kernel_size", 1), NNL_ERR_ARGUMENT, "%s: needs a kernel_size", cls);
        parse_tuple(a, "kernel_size", 1, nd, 1, ks, cls);
        parse_tuple(a, "strides", 2, nd, 1, st, cls);
        padding = parse_padding(a, 3, nd == 1, cls);
        cf = parse_data_format(a, 4, cls);
        parse_tuple(a, "dilation_rate", 5, nd, 1, dil, cls);
        NNL_REQUIRE(a.integer("groups", 6, 1) == 1, NNL_ERR_UNSUPPORTED, "%s: groups other than 1 are not supported",
                    cls);
        act = parse_act(a.str("activation", 7, "linear"), cls);
        use_bias = a.flag("use_bias", 8, true);
        WeightSpec k;
        k.name = "kernel";
        k.init = a.str("kernel_initializer", 9, "glorot_uniform");
        weights.push_back(k);
        if (use_bias) {
            WeightSpec b;
            b.name = "bias";
            b.init = a.str("bias_initializer", 10, "zeros");
            weights.push_back(b);
        }
    }
    void config(Json &c) const override {
        c.set("filters", Json::integer(filters)).set("kernel_size", files::ints_json(ks, nd));
        c.set("strides", files::ints_json(st, nd)).set("padding", Json::string(padding));
        c.set("data_format", Json::string(cf ? "channels_first" : "channels_last"));
        c.set("dilation_rate", files::ints_json(dil, nd)).set("groups", Json::integer(1));
        c.set("activation", Json::string(act_names[act])).set("use_bias", Json::boolean(use_bias));
        c.set("kernel_initializer", files::init_json(weights[0].init));
        c.set("bias_initializer", files::init_json(use_bias ? weights[1].init : std::string("zeros")));
        files::null_keys(c, {"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                             "bias_constraint"});
    }
    /* no output position more than the input's; kernel (k..., C, filters) */
    Size size_bound(const Shape &s) const override {
        double C = s.rank ? (double)(cf ? s.d[0] : s.last()) : 1, f = (double)filters, kv = 1;
        for (int i = 0; i < nd; i++) kv *= (double)ks[i];
        return {(double)s.size() / std::max(C, 1.0) * f, kv * C * f + f};
    }
    bool gpu_path() const override { return true; }
    void build(const Shape &input) override {
        g = Window();
        read_spatial(input, nd, cf, g, cls);
        for (int i = 0; i < nd; i++) {
            g.k[3 - nd + i] = ks[i];
            g.s[3 - nd + i] = st[i];
            g.d[3 - nd + i] = dil[i];
        }
        window_outputs(g, nd, padding, cls);
        in = input;
        out = spatial_shape(g, nd, cf, filters);
        Shape kshape;
        kshape.rank = nd + 2;
        for (int i = 0; i < nd; i++) kshape.d[i] = ks[i];
        kshape.d[nd] = g.C;
        kshape.d[nd + 1] = filters;
        weights[0].shape = kshape;
        if (use_bias) weights[1].shape = Shape{filters};
        /* one sample's im2col columns (positions x kernel volume x channels):
           checked here, as chunk() and scratch() multiply these unchecked */
        int64_t cols = mul_size(kshape.checked_size() / std::max<int64_t>(filters, 1), g.out_size());
        NNL_REQUIRE(kshape.checked_size() >= 0 && cols >= 0 && cols <= MAX_VALUES, NNL_ERR_SHAPE,
                    "%s: kernel_size %s over inputs %s needs more than 2^40 values of columns per sample", cls,
                    kshape.str(false).c_str(), input.str().c_str());
    }
    bool fused_epilogue() const { return act_from_output(act) && !fused_output; }
    bool keeps_cl() const override { return cf && act != ACT_SOFTMAX; } /* softmax: over the last axis */
    /* whether a following pooling layer may take the activation's derivative
       (Layer::act_by_next): not for ReLU, whose bits (1/32 of y) cost less
       than keeping the pooled outputs to the pool's backward (R-LENET's and
       K-CNN's peaks grew by 1.7 and 3.9 MB with it) */
    bool act_absorbable() const {
        return act != ACT_LINEAR && act != ACT_RELU && fused_epilogue() && !mask_in && !mask_out;
    }
    bool direct() const { return pointwise(g); }
    /* one input channel on the CPU: cpu_conv1_forward and
       cpu_conv1_weight_grad, without im2col, in float32 also in
       mixed_bfloat16 (the bf16 tables): a product 9-25 deep gains nothing
       from bf16 operands, and rounding its columns cost more than the
       direct kernel (R-LENET, 2 threads: see nnl_set_precision) */
    bool one_channel() const {
        return (&K() == &cpu_kernels || &K() == &bf16_kernels || &K() == &bf16_emulated_kernels) &&
               conv1_applies(g);
    }
    int64_t col_row() const { return g.kvol() * g.C; }
    /* Samples per im2col block: up to 2 MB of columns. Smaller blocks (512 KB)
       stayed in L2 but left the weight-gradient GEMM a depth of one sample's
       positions (196 for R-LENET's second convolution), too short to split
       across threads: R-LENET trained 29 % faster on 2 threads with 2 MB.
       On a GPU up to 32 MB: each block costs a few launches, and a GEMM of a
       few samples leaves most of the device idle (R-LENET's second
       convolution: 5 samples a block at 2 MB, 85 at 32 MB). */
    int64_t chunk(int64_t B) const {
        int64_t per = g.out_size() * col_row(), cap = (int64_t)1 << (on_gpu ? 23 : 19);
        return std::max<int64_t>(1, std::min<int64_t>(B, cap / std::max<int64_t>(per, 1)));
    }
    /* Sample groups (CPU, float32): the batch in groups of a few samples,
       each group's im2col, product and col2im on one thread with its own
       columns (thread_cols: at most 1 MB, in that core's L2), the threads
       taking whole groups, instead of every product of a 2 MB block split
       over the threads. The blocks' columns left L2 between im2col and the
       product and the threads read each other's halves: K-CNN's second
       convolution (batch 120, two threads, Intel Xeon) forward 10.6 ->
       10.0 ms, weight gradient 17.3 -> 12.6, input gradient 14.6 -> 12.8.
       Samples per group: enough for 512 rows of product (the weights are
       packed once per group), at most 1 MB of columns; 0 where the path is
       not taken (fewer than two groups, products of few rows, bf16 or GPU
       kernels, one input channel, 1x1). The weight gradient goes in
       wparts() partial sums, fixed by the shapes alone: the same bits on
       any number of threads. */
    int64_t group_samples(int64_t B) const {
        if (&K() != &cpu_kernels || direct() || one_channel()) return 0;
        const int64_t P = g.out_size(), per = P * col_row(), cap = (int64_t)1 << 18;
        if (per > cap || P < 1) return 0;
        const int64_t s = std::max<int64_t>(1, std::min((512 + P - 1) / P, cap / per));
        return s * P >= 64 && B >= 2 * s ? s : 0;
    }
    /* partial sums of the weight gradient: at most 16, each at least one
       group, all of them at most 4 M floats (fewer than 2: the weight
       gradient goes the blocks' way, the rest still in groups) */
    int64_t wparts(int64_t B, int64_t s) const {
        const int64_t groups = (B + s - 1) / s, wsz = col_row() * filters;
        return std::min<int64_t>({16, groups, ((int64_t)1 << 22) / std::max<int64_t>(wsz, 1)});
    }
    /* f(b0, n, cols) over the batch: in groups of s samples on the threads,
       each with its thread's columns, or (s = 0) in blocks of chunk(B) with
       the scratch's */
    template <class F> void in_blocks(int64_t B, int64_t s, const F &f) const {
        const int64_t P = g.out_size(), R = col_row(), nb = chunk(B);
        if (s)
            pool::run_chunks((B + s - 1) / s, threads(), [&](int64_t q) {
                const int64_t n = std::min(s, B - q * s);
                f(q * s, n, thread_cols((size_t)(n * P * R)));
            });
        else
            for (int64_t b0 = 0; b0 < B; b0 += nb) f(b0, std::min(nb, B - b0), col(B));
    }
    /* ws: [z: pre-activation] or ReLU's bits; scratch: [xcl][ycl][dxcl][col]
       (channels-first only, each only where no neighbour hands over
       channels-last data: x and dx for !cl_in, y and dy for !cl_out; R-LENET's
       convolutions: 11 -> 2-2.5 MB of scratch each at batch 128) */
    int64_t zsize(int64_t B) const { return act == ACT_LINEAR || fused_epilogue() ? 0 : B * out.size(); }
    int64_t xclsize(int64_t B) const { return cf && !cl_in ? B * in.size() : 0; }
    int64_t yclsize(int64_t B) const { return cf && !cl_out ? B * out.size() : 0; }
    int64_t cfsize(int64_t B) const { return 2 * xclsize(B) + yclsize(B); }
    /* A ReLU in the GEMM's epilogue: backward needs only whether each output
       is positive, which forward keeps as one bit a value in ws (1/32 of y):
       y's memory is then free once the next layer has read it (K-CNN's
       second convolution: 17.7 MB at batch 120 out of the peak). Kept even
       where the next layer's backward reads y as its x (K-CNN's first
       convolution): that backward reads it before writing its dx, which
       can then take y's memory (3 MB of K-CNN's peak, for a pass over y
       of about 1 % of the step). */
    bool relu_bits() const { return act == ACT_RELU && fused_epilogue() && !act_by_next; }
    uint32_t *bits() const { return reinterpret_cast<uint32_t *>(ws); }
    int64_t workspace(int64_t B) const override { return relu_bits() ? (B * out.size() + 31) / 32 : zsize(B); }
    int64_t scratch(int64_t B) const override {
        return cfsize(B) + (direct() ? 0 : chunk(B) * g.out_size() * col_row());
    }
    Act output_act() const override { return act; }
    const float *logits(const float *) const override { return act == ACT_LINEAR ? nullptr : ws; }
    /* backward: y for the activation's derivative, x for the kernel's
       gradient, and only then dx (keep it so, or say otherwise here) */
    bool backward_reads_y() const override {
        return act != ACT_LINEAR && !fused_output && !relu_bits() && !act_by_next;
    }
    bool reads_before_dx() const override { return true; }
    float *xcl(int64_t) const { return sc; }
    float *ycl(int64_t B) const { return xcl(B) + xclsize(B); }
    float *dxcl(int64_t B) const { return ycl(B) + yclsize(B); }
    float *col(int64_t B) const { return sc + cfsize(B); }
    const float *to_cl(const float *x, int64_t B) const {
        if (!cf || cl_in) return x;
        K().transpose(x, xcl(B), B, g.C, g.in_size());
        return xcl(B);
    }
    void forward(const float *x, float *y, int64_t B, const Ctx &c) override {
        const float *xc = to_cl(x, B);
        bool ep = fused_epilogue(); /* bias and activation inside the GEMM */
        float *z = act == ACT_LINEAR || ep ? y : ws;
        float *zc = cf && !cl_out ? ycl(B) : z;
        const int64_t P = g.out_size(), R = col_row(), S = g.in_size() * g.C;
        const float *bias = use_bias ? weights[1].w : nullptr;
        const bool c1 = one_channel();
        auto block = [&](int64_t b0, int64_t n, float *cols) { /* samples b0.., n of them */
            const float *cm = xc + b0 * S;
            if (!direct()) {
                K().im2col(g, cm, cols, n);
                cm = cols;
            }
            /* a prediction of a few samples in mixed_bfloat16: the kernel's
               words kept (gemm::bf16::WeightCache) */
            if (B <= 4 && gemm::bf16::tl_wcache && &K() == &bf16_kernels &&
                gemm::bf16::kept_product(n * P, filters, R, cm, R, weights[0].w, zc + b0 * P * filters, filters,
                                         ep ? bias : nullptr, ep ? act : ACT_LINEAR))
                return;
            if (ep)
                K().sgemm_bias_act(n * P, filters, R, cm, R, weights[0].w, filters, zc + b0 * P * filters, filters,
                                   bias, act);
            else
                K().sgemm(false, false, n * P, filters, R, 1.f, cm, R, weights[0].w, filters, 0.f,
                          zc + b0 * P * filters, filters);
        };
        if (c1) cpu_conv1_forward(g, xc, weights[0].w, filters, ep ? bias : nullptr, ep ? act : ACT_LINEAR, zc, B);
        else in_blocks(B, group_samples(B), block);
        if (use_bias && !ep) K().bias_add(zc, bias, B * P, filters);
        if (cf && !cl_out) K().transpose(zc, z, B, P, filters);
        if (act != ACT_LINEAR && !ep)
            K().act_forward(act, z, y, act == ACT_SOFTMAX ? B * out.size() / out.last() : 1,
                            act == ACT_SOFTMAX ? out.last() : B * out.size());
        if (relu_bits() && c.training) K().relu_bits(y, bits(), B * out.size());
    }
    void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &c) override {
        const float *dz = dy;
        if (relu_bits() && c.training) { /* (a backward after an inference forward, as the unit tests
                                               make, has no bits but its y) */
            K().relu_bits_backward(bits(), dy, const_cast<float *>(dy), B * out.size());
        } else if (act != ACT_LINEAR && !fused_output && !act_by_next) {
            float *d = fused_epilogue() ? const_cast<float *>(dy) : ws;
            K().act_backward(act, fused_epilogue() ? y : ws, y, dy, d,
                             act == ACT_SOFTMAX ? B * out.size() / out.last() : 1,
                             act == ACT_SOFTMAX ? out.last() : B * out.size());
            dz = d;
        }
        const int64_t P = g.out_size(), R = col_row(), S = g.in_size() * g.C, nb = chunk(B);
        const float *dzc = dz;
        if (cf && !cl_out) {
            K().transpose(dz, ycl(B), B, filters, P);
            dzc = ycl(B);
        }
        const float *xc = to_cl(x, B);
        if (use_bias) K().bias_grad(dzc, weights[1].g, B * P, filters);
        /* dW = col^T dz, or (dz^T col)^T when the kernel's tiles fit that
           shape better (CPU): R-LENET's 50 filters fill 78 % of two 32-wide
           panels but 93 % of nine 6-row tiles (1.3x faster product). In
           groups also at a slightly worse fill: the columns are then written
           packed and never packed from A^T (K-CNN's second convolution, 64
           filters, 97 % against 100 %: 13.2 -> 12.3-12.6 ms, two threads) */
        const bool c1 = one_channel();
        const int64_t s = c1 ? 0 : group_samples(B), wp = s ? wparts(B, s) : 0;
        const bool swap = !c1 && &K() == &cpu_kernels &&
                          gemm::tile_fill(filters, R) > (wp >= 2 ? 0.95 : 1.05) * gemm::tile_fill(R, filters);
        if (swap) gt.resize((size_t)(filters * R)); /* the same size every call: allocated once */
        if (c1) cpu_conv1_weight_grad(g, xc, dzc, filters, weights[0].g, B, parts);
        if (wp >= 2) { /* partial c: samples [c q, (c + 1) q), a group of s at a time, on one thread */
            const int64_t q = ((B + wp - 1) / wp + s - 1) / s * s, np = (B + q - 1) / q, wsz = R * filters;
            parts.resize((size_t)(np * wsz)); /* the same size every call: allocated once */
            pool::run_chunks(np, threads(), [&](int64_t c) {
                float *pc = parts.data() + c * wsz;
                for (int64_t b0 = c * q; b0 < std::min(B, (c + 1) * q); b0 += s) {
                    const int64_t n = std::min({s, B - b0, (c + 1) * q - b0});
                    const float *dzb = dzc + b0 * P * filters;
                    const float beta = b0 > c * q ? 1.f : 0.f;
                    if (swap) { /* dW^T (filters x R) = dz^T col, the columns written packed */
                        gemm::PackedB &cp = thread_colp();
                        cpu_im2col_packed(g, xc + b0 * S, n, cp);
                        gemm::sgemm_packed(filters, dzb, filters, cp, beta, pc, R, true);
                    } else {
                        float *cols = thread_cols((size_t)(n * P * R));
                        K().im2col(g, xc + b0 * S, cols, n);
                        gemm::sgemm(true, false, R, filters, n * P, 1.f, cols, R, dzb, filters, beta, pc, filters);
                    }
                }
            });
            float *dw = swap ? gt.data() : weights[0].g;
            par_for(wsz, wsz * np, [&](int64_t lo, int64_t hi) { /* in partial order: any thread count */
                for (int64_t i = lo; i < hi; i++) {
                    float a = parts[(size_t)i];
                    for (int64_t c = 1; c < np; c++) a += parts[(size_t)(c * wsz + i)];
                    dw[i] = a;
                }
            });
        }
        for (int64_t b0 = 0; b0 < B && !c1 && wp < 2; b0 += nb) {
            int64_t n = std::min(nb, B - b0);
            const float *cm = xc + b0 * S;
            if (swap && !direct()) { /* the columns only as B: written in its packed layout */
                cpu_im2col_packed(g, cm, n, colp);
                gemm::sgemm_packed(filters, dzc + b0 * P * filters, filters, colp, b0 ? 1.f : 0.f, gt.data(), R,
                                   true);
                continue;
            }
            if (!direct()) {
                K().im2col(g, cm, col(B), n);
                cm = col(B);
            }
            if (swap)
                gemm::sgemm(true, false, filters, R, n * P, 1.f, dzc + b0 * P * filters, filters, cm, R,
                            b0 ? 1.f : 0.f, gt.data(), R);
            else
                K().sgemm(true, false, R, filters, n * P, 1.f, cm, R, dzc + b0 * P * filters, filters,
                          b0 ? 1.f : 0.f, weights[0].g, filters);
        }
        if (swap) K().transpose(gt.data(), weights[0].g, 1, filters, R);
        if (!dx) return;
        float *dxc = cf && !cl_in ? dxcl(B) : dx;
        auto dblock = [&](int64_t b0, int64_t n, float *cols) {
            if (direct()) {
                K().sgemm(false, true, n * P, R, filters, 1.f, dzc + b0 * P * filters, filters, weights[0].w, filters,
                          0.f, dxc + b0 * S, R);
            } else {
                K().sgemm(false, true, n * P, R, filters, 1.f, dzc + b0 * P * filters, filters, weights[0].w, filters,
                          0.f, cols, R);
                K().col2im(g, cols, dxc + b0 * S, n);
            }
        };
        in_blocks(B, s, dblock);
        if (cf && !cl_in) K().transpose(dxc, dx, B, g.in_size(), g.C);
    }
};

struct Conv1D : Conv {
    NNL_CLONE(Conv1D)
    explicit Conv1D(Args &a) : Conv(a, 1, "Conv1D") {}
};
struct Conv2D : Conv {
    NNL_CLONE(Conv2D)
    explicit Conv2D(Args &a) : Conv(a, 2, "Conv2D") {}
};
struct Conv3D : Conv {
    NNL_CLONE(Conv3D)
    explicit Conv3D(Args &a) : Conv(a, 3, "Conv3D") {}
};

/* Max and average pooling over windows (Keras: pool_size, strides = the pool
   size when None, padding, data_format). Average pooling with 'same'
   divides by the number of unpadded entries, as TensorFlow does. */
class Pool : public Layer {
public:
    int nd;
    bool max, cf;
    int64_t ps[3], st[3];
    std::string padding;
    Window g;
    Pool(Args &a, int nd_, bool max_, const char *cls_) : nd(nd_), max(max_) {
        cls = cls_;
        parse_tuple(a, "pool_size", 0, nd, 2, ps, cls);
        std::vector<int64_t> sv = a.ints("strides", 1);
        if (sv.empty()) sv.assign(ps, ps + nd);
        if (sv.size() == 1) sv.assign((size_t)nd, sv[0]);
        NNL_REQUIRE((int)sv.size() == nd, NNL_ERR_ARGUMENT, "%s: 'strides' needs %d values", cls, nd);
        for (int i = 0; i < nd; i++) {
            NNL_REQUIRE(sv[(size_t)i] > 0 && sv[(size_t)i] < (1 << 24), NNL_ERR_ARGUMENT,
                        "%s: 'strides' must hold positive integers", cls);
            st[i] = sv[(size_t)i];
        }
        padding = parse_padding(a, 2, false, cls);
        cf = parse_data_format(a, 3, cls);
    }
    void config(Json &c) const override {
        c.set("pool_size", files::ints_json(ps, nd)).set("padding", Json::string(padding));
        c.set("strides", files::ints_json(st, nd));
        c.set("data_format", Json::string(cf ? "channels_first" : "channels_last"));
    }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    bool gpu_path() const override { return true; }
    void build(const Shape &input) override {
        g = Window();
        read_spatial(input, nd, cf, g, cls);
        for (int i = 0; i < nd; i++) {
            g.k[3 - nd + i] = ps[i];
            g.s[3 - nd + i] = st[i];
        }
        window_outputs(g, nd, padding, cls);
        in = input;
        out = spatial_shape(g, nd, cf, g.C);
        NNL_REQUIRE(g.in_size() * g.C < ((int64_t)1 << 31), NNL_ERR_SHAPE, "%s: input too large", cls);
    }
    /* ws: [arg (max only)]; scratch (channels-first, on a side where no
       neighbour hands over channels-last data): [xcl = dxcl] (!cl_in: x in
       forward, dx in backward, never both in one call) [ycl] (!cl_out) */
    /* the taps chosen, pool_arg_bytes(g) bytes each, in floats */
    int64_t argsize(int64_t B) const { return max ? (B * out.size() * pool_arg_bytes(g) + 3) / 4 : 0; }
    int64_t workspace(int64_t B) const override { return argsize(B); }
    int64_t xclsize(int64_t B) const { return cf && !cl_in ? B * in.size() : 0; }
    int64_t scratch(int64_t B) const override { return xclsize(B) + (cf && !cl_out ? B * out.size() : 0); }
    bool backward_reads_x() const override { return false; } /* arg, or the window counts */
    bool backward_reads_y() const override { return absorb != ACT_LINEAR; }
    /* y (an absorbed activation's derivative, into dy in place) is read
       before any of dx is written, x never: dx may take y's memory (part
       of T-LENET's 38.5 -> 33.6 MB arena at batch 512, with plan_arena's
       orders) */
    bool reads_before_dx() const override { return true; }
    /* max over windows that share no input position (Layer::absorb) */
    bool disjoint_max() const {
        return max && g.s[0] >= g.k[0] && g.s[1] >= g.k[1] && g.s[2] >= g.k[2] && !mask_in && !mask_out;
    }
    void *arg() const { return ws; }
    float *xcl(int64_t) const { return sc; }
    float *ycl(int64_t B) const { return xcl(B) + xclsize(B); }
    float *dxcl(int64_t B) const { return xcl(B); }
    bool keeps_cl() const override { return cf; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        const float *xc = x;
        if (cf && !cl_in) {
            K().transpose(x, xcl(B), B, g.C, g.in_size());
            xc = xcl(B);
        }
        float *yc = cf && !cl_out ? ycl(B) : y;
        K().pool_forward(g, max, xc, yc, arg(), B);
        if (cf && !cl_out) K().transpose(yc, y, B, g.out_size(), g.C);
    }
    void backward(const float *, const float *y, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        if (absorb != ACT_LINEAR) /* the convolution's dz at the maxima, in place (dy is this layer's alone) */
            K().act_backward(absorb, y, y, dy, const_cast<float *>(dy), 1, B * out.size());
        const float *dyc = dy;
        if (cf && !cl_out) {
            K().transpose(dy, ycl(B), B, g.C, g.out_size());
            dyc = ycl(B);
        }
        float *dxc = cf && !cl_in ? dxcl(B) : dx;
        K().pool_backward(g, max, dyc, arg(), dxc, B);
        if (cf && !cl_in) K().transpose(dxc, dx, B, g.in_size(), g.C);
    }
};

#define NNL_POOL(NAME, ND, MAX)                                                                                        \
    struct NAME : Pool {                                                                                               \
        NNL_CLONE(NAME)                                                                                                \
        explicit NAME(Args &a) : Pool(a, ND, MAX, #NAME) {}                                                            \
    };
NNL_POOL(MaxPooling1D, 1, true)
NNL_POOL(MaxPooling2D, 2, true)
NNL_POOL(MaxPooling3D, 3, true)
NNL_POOL(AveragePooling1D, 1, false)
NNL_POOL(AveragePooling2D, 2, false)
NNL_POOL(AveragePooling3D, 3, false)
#undef NNL_POOL

/* Global pooling: one value per channel (keepdims=False). */
class GlobalPool : public Layer {
public:
    int nd;
    bool max, cf;
    int64_t S = 1, C = 1;
    GlobalPool(Args &a, int nd_, bool max_, const char *cls_) : nd(nd_), max(max_) {
        cls = cls_;
        cf = parse_data_format(a, 0, cls);
        NNL_REQUIRE(!a.flag("keepdims", 1, false), NNL_ERR_UNSUPPORTED, "%s: keepdims=True is not supported", cls);
    }
    void config(Json &c) const override {
        c.set("data_format", Json::string(cf ? "channels_first" : "channels_last")).set("keepdims", Json::boolean(false));
    }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    void build(const Shape &input) override {
        Window g;
        read_spatial(input, nd, cf, g, cls);
        S = g.in_size();
        C = g.C;
        in = input;
        out = Shape{C};
    }
    bool gpu_path() const override { return true; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        K().global_pool_forward(max, cf, x, y, B, S, C);
    }
    void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        K().global_pool_backward(max, cf, x, y, dy, dx, B, S, C);
    }
};

#define NNL_GPOOL(NAME, ND, MAX)                                                                                       \
    struct NAME : GlobalPool {                                                                                         \
        NNL_CLONE(NAME)                                                                                                \
        explicit NAME(Args &a) : GlobalPool(a, ND, MAX, #NAME) {}                                                      \
    };
NNL_GPOOL(GlobalAveragePooling1D, 1, false)
NNL_GPOOL(GlobalAveragePooling2D, 2, false)
NNL_GPOOL(GlobalAveragePooling3D, 3, false)
NNL_GPOOL(GlobalMaxPooling1D, 1, true)
NNL_GPOOL(GlobalMaxPooling2D, 2, true)
NNL_GPOOL(GlobalMaxPooling3D, 3, true)
#undef NNL_GPOOL

/* BatchNormalization (Keras): in training, normalise with the batch's
   mean and biased variance over every axis but `axis`, and move the
   moving statistics by momentum (m = m * momentum + batch * (1 - momentum));
   at inference use the moving statistics. Weights in Keras' order: gamma,
   beta (each optional), moving_mean, moving_variance (not trainable). */
class BatchNormalization : public Layer {
public:
    NNL_CLONE(BatchNormalization)
    int64_t axis;
    float momentum, epsilon;
    bool center, scale;
    int64_t outer = 1, C = 1, inner = 1;
    explicit BatchNormalization(Args &a) {
        cls = "BatchNormalization";
        axis = a.integer("axis", 0, -1);
        momentum = (float)a.num("momentum", 1, 0.99);
        epsilon = (float)a.num("epsilon", 2, 1e-3);
        center = a.flag("center", 3, true);
        scale = a.flag("scale", 4, true);
        NNL_REQUIRE(momentum >= 0 && momentum <= 1, NNL_ERR_ARGUMENT, "BatchNormalization: momentum must be in [0, 1]");
        NNL_REQUIRE(epsilon > 0, NNL_ERR_ARGUMENT, "BatchNormalization: epsilon must be positive");
        std::string bi = a.str("beta_initializer", 5, "zeros"), gi = a.str("gamma_initializer", 6, "ones");
        std::string mi = a.str("moving_mean_initializer", 7, "zeros"),
                    vi = a.str("moving_variance_initializer", 8, "ones");
        auto add = [&](const char *n, const std::string &init, bool trainable) {
            WeightSpec w;
            w.name = n;
            w.init = init;
            w.trainable = trainable;
            weights.push_back(w);
        };
        if (scale) add("gamma", gi, true);
        if (center) add("beta", bi, true);
        add("moving_mean", mi, false);
        add("moving_variance", vi, false);
    }
    void config(Json &c) const override {
        int64_t ax = axis < 0 ? in.rank + axis + 1 : axis; /* Keras: built, positive, a list */
        c.set("axis", files::ints_json(&ax, 1)).set("momentum", Json::number_f(momentum));
        c.set("epsilon", Json::number_f(epsilon)).set("center", Json::boolean(center));
        c.set("scale", Json::boolean(scale));
        auto init_of = [&](const char *n, const char *def) {
            for (auto &w : weights)
                if (w.name == n) return files::init_json(w.init);
            return files::init_json(def);
        };
        c.set("beta_initializer", init_of("beta", "zeros")).set("gamma_initializer", init_of("gamma", "ones"));
        c.set("moving_mean_initializer", init_of("moving_mean", "zeros"));
        c.set("moving_variance_initializer", init_of("moving_variance", "ones"));
        files::null_keys(c, {"beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"});
    }
    /* four vectors of the normalised axis' size (any axis, when out of range) */
    Size size_bound(const Shape &s) const override {
        int64_t ax = axis < 0 ? s.rank + std::max<int64_t>(axis, -64) : std::min<int64_t>(axis, 64) - 1;
        double ch = 0;
        for (int i = 0; i < s.rank; i++)
            if (i == ax || ax < 0 || ax >= s.rank) ch = std::max(ch, (double)s.d[i]);
        return {(double)s.size(), 4 * ch};
    }
    void build(const Shape &input) override {
        int64_t ax = axis < 0 ? input.rank + axis : axis - 1; /* Keras counts the batch axis */
        NNL_REQUIRE(ax >= 0 && ax < input.rank, NNL_ERR_ARGUMENT,
                    "BatchNormalization: axis %lld is out of range for inputs %s", (long long)axis,
                    input.str().c_str());
        outer = inner = 1;
        for (int i = 0; i < ax; i++) outer *= input.d[i];
        for (int i = (int)ax + 1; i < input.rank; i++) inner *= input.d[i];
        C = input.d[ax];
        in = out = input;
        for (auto &w : weights) w.shape = Shape{C};
    }
    float *gamma() const { return scale ? weights[0].w : nullptr; }
    float *beta() const { return center ? weights[scale ? 1 : 0].w : nullptr; }
    /* Every pass over x, the weights and the workspace goes through K(),
       the moving statistics' update included (bn_prepare: fit brings them
       back from the device with the other weights). Synchronised batch
       norm (c.sync) is host code: a distributed model with it stays on the
       CPU (nnl_distribute and nnl_set_device refuse it on a GPU). */
    bool gpu_path() const override { return true; }
    WeightSpec &moving(int k) { return weights[weights.size() - 2 + (size_t)k]; }
    /* ws: mean, invstd, scale, shift (C each); then, when the channel axis is
       not last, channels-last copies of x, y and dx */
    int64_t workspace(int64_t B) const override { return 4 * C + (inner > 1 ? 3 * B * in.size() : 0); }
    float *xcl(int64_t) const { return ws + 4 * C; }
    float *ycl(int64_t B) const { return xcl(B) + B * in.size(); }
    float *dxcl(int64_t B) const { return ycl(B) + B * in.size(); }
    void forward(const float *x, float *y, int64_t B, const Ctx &c) override {
        int64_t rows = B * outer * inner;
        const float *xc = x;
        if (inner > 1) {
            K().transpose(x, xcl(B), B * outer, C, inner);
            xc = xcl(B);
        }
        float *mean = ws, *invstd = ws + C, *scl = ws + 2 * C, *sh = ws + 3 * C;
        float *mm = moving(0).w, *mv = moving(1).w;
        NNL_REQUIRE(!c.sync || strcmp(K().name, "cuda") != 0, NNL_ERR_INTERNAL,
                    "BatchNormalization: synchronised statistics on a GPU (a distributed model must stay on the CPU)");
        if (c.training) {
            K().moments(xc, rows, C, mean, invstd);
            if (c.sync) sync_moments(c, rows, mean, invstd);
        }
        K().bn_prepare(c.training, C, momentum, epsilon, mm, mv, gamma(), beta(), mean, invstd, scl, sh);
        if (inner > 1) {
            K().scale_shift(xc, ycl(B), rows, C, scl, sh);
            K().transpose(ycl(B), y, B * outer, inner, C);
        } else {
            K().scale_shift(xc, y, rows, C, scl, sh);
        }
    }
    void backward(const float *x, const float *, const float *dy, float *dx, int64_t B, const Ctx &c) override {
        int64_t rows = B * outer * inner;
        const float *xc = x, *dyc = dy;
        float *dxc = dx;
        if (inner > 1) {
            K().transpose(x, xcl(B), B * outer, C, inner);
            K().transpose(dy, ycl(B), B * outer, C, inner);
            xc = xcl(B);
            dyc = ycl(B);
            dxc = dx ? dxcl(B) : nullptr;
        }
        float *dgamma = scale ? weights[0].g : nullptr, *dbeta = center ? weights[scale ? 1 : 0].g : nullptr;
        if (c.sync && c.training)
            sync_backward(c, xc, dyc, dxc, rows, dgamma, dbeta);
        else
            K().bn_backward(xc, dyc, dxc, rows, C, ws, ws + C, gamma(), dgamma, dbeta, c.training);
        if (dx && inner > 1) K().transpose(dxc, dx, B * outer, inner, C);
    }

    /* ---- synchronised batch statistics (NNL_SYNC_BATCHNORM) ----
       Forward: the batch mean and variance over every rank's rows, from
       their sums (in double). Backward: dx needs the means of dy and of
       dy * xhat over all rows; each rank's dy is the gradient of its own
       mean loss (its weight w_r), so the sums are weighted by w_r and this
       rank's dx is 1 / w_r of their share: dx = gamma * invstd * (dy - S1 /
       (w_r R) - xhat * S2 / (w_r R)), S = sum_r w_r S_r, R the rows of all
       ranks. The reducer's weighting then gives the gradient of the global
       mean loss. Plain loops: an option for small per-rank batches, not a
       hot path. */
    std::vector<double> sbuf;
    void sync_moments(const Ctx &c, int64_t rows, float *mean, float *var) {
        sbuf.assign((size_t)(2 * C + 1), 0.0);
        for (int64_t i = 0; i < C && mean; i++) {
            sbuf[(size_t)i] = (double)mean[i] * rows;
            sbuf[(size_t)(C + i)] = ((double)var[i] + (double)mean[i] * mean[i]) * rows;
        }
        sbuf[(size_t)(2 * C)] = (double)rows;
        sync_sum(c.sync, sbuf.data(), (int)sbuf.size());
        double n = sbuf[(size_t)(2 * C)];
        for (int64_t i = 0; i < C && mean; i++) {
            double m = n > 0 ? sbuf[(size_t)i] / n : 0.0;
            mean[i] = (float)m;
            var[i] = (float)std::max(0.0, n > 0 ? sbuf[(size_t)(C + i)] / n - m * m : 0.0);
        }
    }
    void sync_backward(const Ctx &c, const float *x, const float *dy, float *dx, int64_t rows, float *dgamma,
                       float *dbeta) {
        const float *mean = ws, *invstd = ws + C;
        sbuf.assign((size_t)(2 * C + 1), 0.0);
        for (int64_t r = 0; r < rows && x; r++)
            for (int64_t i = 0; i < C; i++) {
                double d = dy[r * C + i];
                sbuf[(size_t)i] += d;
                sbuf[(size_t)(C + i)] += d * ((double)x[r * C + i] - mean[i]) * invstd[i];
            }
        for (int64_t i = 0; i < C && x; i++) {
            if (dbeta) dbeta[i] = (float)sbuf[(size_t)i];
            if (dgamma) dgamma[i] = (float)sbuf[(size_t)(C + i)];
        }
        double w = sync_weight(c.sync);
        for (auto &v : sbuf) v *= w;
        sbuf[(size_t)(2 * C)] = (double)rows;
        sync_sum(c.sync, sbuf.data(), (int)sbuf.size());
        double R = sbuf[(size_t)(2 * C)], k = (w > 0 && R > 0) ? 1.0 / (w * R) : 0.0;
        if (!dx) return;
        const float *g = gamma();
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < C; i++) {
                double xh = ((double)x[r * C + i] - mean[i]) * invstd[i];
                dx[r * C + i] = (float)((g ? g[i] : 1.f) * invstd[i] *
                                        (dy[r * C + i] - k * sbuf[(size_t)i] - xh * k * sbuf[(size_t)(C + i)]));
            }
    }
    void collective(bool backward, const Ctx &c) override {
        if (!c.sync || !c.training) return;
        if (backward) {
            sync_backward(c, nullptr, nullptr, nullptr, 0, nullptr, nullptr);
        } else { /* the moving averages follow the global statistics here too */
            std::fill(ws, ws + 2 * C, 0.f);
            sync_moments(c, 0, ws, ws + C);
            float *mm = moving(0).w, *mv = moving(1).w;
            for (int64_t i = 0; i < C; i++) {
                mm[i] = mm[i] * momentum + ws[i] * (1 - momentum);
                mv[i] = mv[i] * momentum + ws[C + i] * (1 - momentum);
            }
        }
    }
};

/* ZeroPadding2D and UpSampling2D (nearest): per sample an (outer, H, W,
   inner) block, outer = C for channels_first, inner = C for channels_last. */
static void read_hw(const Shape &s, bool cf, const char *owner, int64_t &outer, int64_t &H, int64_t &W,
                    int64_t &inner) {
    NNL_REQUIRE(s.rank == 3, NNL_ERR_SHAPE, "%s: expects inputs of rank 3 per sample, got %s", owner,
                s.str().c_str());
    outer = cf ? s.d[0] : 1;
    inner = cf ? 1 : s.d[2];
    H = s.d[cf ? 1 : 0];
    W = s.d[cf ? 2 : 1];
}

static Shape hw_shape(bool cf, int64_t C, int64_t H, int64_t W) { return cf ? Shape{C, H, W} : Shape{H, W, C}; }

class ZeroPadding2D : public Layer {
public:
    NNL_CLONE(ZeroPadding2D)
    int64_t t = 1, b = 1, l = 1, r = 1;
    bool cf;
    int64_t outer = 1, H = 1, W = 1, inner = 1;
    explicit ZeroPadding2D(Args &a) {
        cls = "ZeroPadding2D";
        const Value *v = a.get("padding", 0);
        if (v && v->kind != Value::NONE) {
            auto num = [&](const Value &x) {
                NNL_REQUIRE(x.kind == Value::NUM && x.num >= 0 && x.num == std::floor(x.num) && x.num < (1 << 24),
                            NNL_ERR_ARGUMENT, "ZeroPadding2D: padding must hold non-negative integers");
                return (int64_t)x.num;
            };
            if (v->kind == Value::NUM) {
                t = b = l = r = num(*v);
            } else {
                NNL_REQUIRE(v->kind == Value::TUPLE && v->items.size() == 2, NNL_ERR_ARGUMENT,
                            "ZeroPadding2D: padding is an int, (h, w) or ((top, bottom), (left, right))");
                const Value &ph = v->items[0], &pw = v->items[1];
                if (ph.kind == Value::TUPLE || pw.kind == Value::TUPLE) {
                    NNL_REQUIRE(ph.kind == Value::TUPLE && pw.kind == Value::TUPLE && ph.items.size() == 2 &&
                                    pw.items.size() == 2,
                                NNL_ERR_ARGUMENT, "ZeroPadding2D: padding is ((top, bottom), (left, right))");
                    t = num(ph.items[0]);
                    b = num(ph.items[1]);
                    l = num(pw.items[0]);
                    r = num(pw.items[1]);
                } else {
                    t = b = num(ph);
                    l = r = num(pw);
                }
            }
        }
        cf = parse_data_format(a, 1, cls);
    }
    void config(Json &c) const override {
        int64_t tb[2] = {t, b}, lr[2] = {l, r};
        c.set("padding", Json::array().push(files::ints_json(tb, 2)).push(files::ints_json(lr, 2)));
        c.set("data_format", Json::string(cf ? "channels_first" : "channels_last"));
    }
    /* (H + t + b)(W + l + r) <= H W (1 + t + b)(1 + l + r) */
    Size size_bound(const Shape &s) const override {
        return {(double)s.size() * (1.0 + (double)t + (double)b) * (1.0 + (double)l + (double)r), 0};
    }
    void build(const Shape &input) override {
        read_hw(input, cf, cls, outer, H, W, inner);
        in = input;
        out = hw_shape(cf, cf ? outer : inner, H + t + b, W + l + r);
    }
    bool gpu_path() const override { return true; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        K().zero_pad_forward(x, y, B * outer, H, W, inner, t, b, l, r);
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        K().zero_pad_backward(dy, dx, B * outer, H, W, inner, t, b, l, r);
    }
};

class UpSampling2D : public Layer {
public:
    NNL_CLONE(UpSampling2D)
    int64_t sz[2];
    bool cf;
    int64_t outer = 1, H = 1, W = 1, inner = 1;
    explicit UpSampling2D(Args &a) {
        cls = "UpSampling2D";
        parse_tuple(a, "size", 0, 2, 2, sz, cls);
        cf = parse_data_format(a, 1, cls);
        std::string ip = a.str("interpolation", 2, "nearest");
        NNL_REQUIRE(ip == "nearest", NNL_ERR_UNSUPPORTED,
                    "UpSampling2D: interpolation '%s' is not supported (only 'nearest')", ip.c_str());
    }
    void config(Json &c) const override {
        c.set("size", files::ints_json(sz, 2)).set("data_format", Json::string(cf ? "channels_first" : "channels_last"));
        c.set("interpolation", Json::string("nearest"));
    }
    Size size_bound(const Shape &s) const override { return {(double)s.size() * (double)sz[0] * (double)sz[1], 0}; }
    void build(const Shape &input) override {
        read_hw(input, cf, cls, outer, H, W, inner);
        in = input;
        int64_t Ho = mul_size(H, sz[0]), Wo = mul_size(W, sz[1]);
        NNL_REQUIRE(Ho >= 0 && Wo >= 0 && Ho <= MAX_VALUES && Wo <= MAX_VALUES, NNL_ERR_SHAPE,
                    "UpSampling2D: size %lldx%lld makes inputs %s larger than 2^40 values per sample",
                    (long long)sz[0], (long long)sz[1], input.str().c_str());
        out = hw_shape(cf, cf ? outer : inner, Ho, Wo);
    }
    bool gpu_path() const override { return true; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        K().upsample_forward(x, y, B * outer, H, W, inner, sz[0], sz[1]);
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        K().upsample_backward(dy, dx, B * outer, H, W, inner, sz[0], sz[1]);
    }
};

/* Embedding: ids (T,) -> rows of the table 'embeddings' (input_dim,
   output_dim), output (T, output_dim). The ids travel as floats (the ABI's
   typed calls convert int32/int64 ids; exact up to 2^24) and are checked
   before anything runs (check_input: integral, in [0, input_dim)), so
   forward and backward trust them. Backward scatter-adds dy rows into the
   table's gradient; there is no dx (ids have no gradient), so Embedding
   must be the first layer (Model::add_spec refuses it elsewhere).
   mask_zero=True: a step whose ids are all 0 is masked (makes_mask).
   GPU path: the gather, the gradient and the mask are kernel-table entries
   (embedding_forward, embedding_grad, masking_forward with value 0). The
   ids are checked on the host before they go up (check_input runs on the
   caller's x in both cases), so a bad id is refused with the same error on
   either device. */
class Embedding : public Layer {
public:
    NNL_CLONE(Embedding)
    int64_t input_dim, output_dim, input_length;
    bool mask_zero;
    explicit Embedding(Args &a) {
        cls = "Embedding";
        input_dim = a.integer("input_dim", 0, 0);
        output_dim = a.integer("output_dim", 1, 0);
        NNL_REQUIRE(input_dim > 0 && input_dim <= ((int64_t)1 << 24), NNL_ERR_ARGUMENT,
                    "Embedding: input_dim must be in 1..2^24 (ids travel as float32), got %lld",
                    (long long)input_dim);
        NNL_REQUIRE(output_dim > 0 && output_dim < (1 << 28), NNL_ERR_ARGUMENT,
                    "Embedding: output_dim must be a positive integer, got %lld", (long long)output_dim);
        WeightSpec e;
        e.name = "embeddings";
        e.init = a.str("embeddings_initializer", 2, "uniform");
        weights.push_back(e);
        mask_zero = a.flag("mask_zero", 6, false); /* id 0 masks its step (Layer::makes_mask) */
        input_length = a.integer("input_length", 7, 0);
        NNL_REQUIRE(input_length >= 0, NNL_ERR_ARGUMENT, "Embedding: input_length must be positive, got %lld",
                    (long long)input_length);
        NNL_REQUIRE(!a.flag("sparse", 8, false), NNL_ERR_UNSUPPORTED, "Embedding: sparse=True is not supported");
        if (input_length > 0) implied_input = {input_length};
    }
    void config(Json &c) const override {
        c.set("input_dim", Json::integer(input_dim)).set("output_dim", Json::integer(output_dim));
        c.set("embeddings_initializer", files::init_json(weights[0].init));
        files::null_keys(c, {"embeddings_regularizer", "activity_regularizer", "embeddings_constraint"});
        c.set("mask_zero", Json::boolean(mask_zero));
        c.set("input_length", input_length > 0 ? Json::integer(input_length) : Json());
    }
    Size size_bound(const Shape &s) const override {
        return {(double)s.size() * (double)output_dim, (double)input_dim * (double)output_dim};
    }
    bool gpu_path() const override { return true; }
    bool first_only() const override { return true; }
    bool any_length(const Shape &) const override { return true; }
    bool makes_mask() const override { return mask_zero; }
    void build(const Shape &input) override {
        NNL_REQUIRE(input.rank >= 1 && input.rank < NNL_MAX_RANK, NNL_ERR_SHAPE,
                    "Embedding: input must be ids of shape (T,) (or more axes), got %s", input.str(false).c_str());
        NNL_REQUIRE(input_length == 0 || (input.rank == 1 && input.d[0] == input_length), NNL_ERR_SHAPE,
                    "Embedding: input_length=%lld does not match the input %s", (long long)input_length,
                    input.str(false).c_str());
        in = out = input;
        out.rank = input.rank + 1;
        out.d[input.rank] = output_dim;
        weights[0].shape = Shape{input_dim, output_dim};
    }
    /* Every id integral and in [0, input_dim): refused naming the layer, the
       sample and the id before fit, evaluate or predict runs. */
    void check_input(const float *x, int64_t n, const char *fn, const char *arg) const override {
        int64_t per = in.size();
        for (int64_t i = 0; i < n * per; i++) {
            float v = x[i];
            if (!(v >= 0 && v < (float)input_dim && v == std::floor(v)))
                raise(NNL_ERR_ARGUMENT,
                      "%s: %s: sample %lld holds the id %g at position %lld, but layer '%s' (Embedding) takes "
                      "integer ids in [0, %lld)",
                      fn, arg, (long long)(i / per), (double)v, (long long)(i % per), name.c_str(),
                      (long long)input_dim);
        }
    }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        K().embedding_forward(x, weights[0].w, y, B * in.size(), output_dim);
        if (mask_zero) { /* one mask value per step of the first axis: any id of the step nonzero keeps it */
            int64_t T = in.d[0], per = in.size() / T;
            K().masking_forward(x, nullptr, mask, B * T, per, 0.f);
        }
    }
    void backward(const float *x, const float *, const float *dy, float *, int64_t B, const Ctx &) override {
        /* a data-parallel step cleared (sized) the marks before backward */
        K().embedding_grad(x, dy, weights[0].g, B * in.size(), input_dim, output_dim,
                           touched.empty() ? nullptr : touched.data());
    }
    const uint8_t *grad_rows() const override { return touched.empty() ? nullptr : touched.data(); }
    void clear_grad_rows() override { touched.assign((size_t)input_dim, 0); }

private:
    std::vector<uint8_t> touched; /* the rows of the last backward's ids (data-parallel steps only) */
};

/* Keras' Masking(mask_value=0.0): a time step of a (T, F) input whose
   features all equal mask_value is masked (the mask then skips it in the
   recurrent layers, the loss and the metrics); the output is the input with
   masked steps set to zero, as Keras' Masking multiplies by the mask.
   Forward and backward are kernel-table entries (masking_forward,
   masking_backward); on a GPU the mask lives in the device mirror of the
   model's mask buffer (GpuModel::mask). */
class Masking : public Layer {
public:
    NNL_CLONE(Masking)
    float mask_value;
    explicit Masking(Args &a) {
        cls = "Masking";
        mask_value = (float)a.num("mask_value", 0, 0.0);
    }
    void config(Json &c) const override { c.set("mask_value", Json::number_f(mask_value)); }
    Size size_bound(const Shape &s) const override { return {(double)s.size(), 0}; }
    void build(const Shape &input) override {
        NNL_REQUIRE(input.rank >= 2, NNL_ERR_SHAPE,
                    "Masking: expects inputs of shape (timesteps, features) per sample, got %s",
                    input.str().c_str());
        in = out = input;
    }
    bool gpu_path() const override { return true; }
    bool any_length(const Shape &) const override { return true; }
    bool makes_mask() const override { return true; }
    bool supports_mask() const override { return true; }
    void forward(const float *x, float *y, int64_t B, const Ctx &) override {
        int64_t T = in.d[0], F = in.size() / T;
        K().masking_forward(x, y, mask, B * T, F, mask_value);
    }
    void backward(const float *, const float *, const float *dy, float *dx, int64_t B, const Ctx &) override {
        if (!dx) return;
        int64_t T = in.d[0], F = in.size() / T;
        K().masking_backward(mask, dy, dx, B * T, F);
    }
};

/* ---- The LSTM step entries' CPU side (Kernels::lstm_forward, lstm_backward)
   The loops Recurrent::forward and backward ran inline for an LSTM, moved
   unchanged (the same results, bit for bit): Keras' default activations
   (tanh, sigmoid) take the fused vectorised kernels, the others one
   activation call per gate block. A row is masked at time t when the step
   mask holds 0 there. */
/* dx = dy act'(.) from the activation's output y (n values) */
static void rnn_gate_backward(Act a, const float *y, const float *dy, float *dx, int64_t n) {
    if (a != ACT_HARD_SIGMOID) return K().act_backward(a, y, y, dy, dx, 1, n);
    for (int64_t j = 0; j < n; j++) dx[j] = y[j] != y[j] ? y[j] : y[j] > 0.f && y[j] < 1.f ? 0.2f * dy[j] : 0.f;
}
/* The end of every cell's forward step: a masked row keeps its state (h,
   and c for an LSTM), then the step's output (each step's, or the last). */
static void cell_finish_forward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, T = a.T, t = a.t, s = a.s;
    auto masked = [&](int64_t b) { return a.mask && a.mask[b * T + t] == 0.f; };
    if (a.mask) /* masked steps: the state stays as it was */
        for (int64_t b = 0; b < B; b++) {
            if (!masked(b)) continue;
            memcpy(a.h + b * a.ldhn, a.hp + b * a.ldh, (size_t)u * sizeof(float));
            if (a.c) memcpy(a.c + b * a.ldh, a.cp + b * a.ldcp, (size_t)u * sizeof(float));
        }
    for (int64_t b = 0; b < B; b++) { /* the output */
        const float *h = a.h + b * a.ldhn;
        if (a.seq) {
            if (a.zero_masked && masked(b)) std::fill(a.y + (b * T + s) * u, a.y + (b * T + s + 1) * u, 0.f);
            else memcpy(a.y + (b * T + s) * u, h, (size_t)u * sizeof(float));
        } else if (s + 1 == T) {
            memcpy(a.y + b * u, h, (size_t)u * sizeof(float));
        }
    }
}
/* The start of every cell's backward step: dh_s (zero before the first
   step) gets the output's gradient. */
static void cell_add_output_grad(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, T = a.T, t = a.t, s = a.s;
    auto masked = [&](int64_t b) { return a.mask && a.mask[b * T + t] == 0.f; };
    if (a.first) std::fill(a.dh, a.dh + B * u, 0.f);
    for (int64_t b = 0; b < B; b++) { /* dh_s += the output's gradient */
        const float *d = a.seq ? a.dy + (b * T + s) * u : s + 1 == T ? a.dy + b * u : nullptr;
        if (a.seq && a.zero_masked && masked(b)) d = nullptr; /* a constant zero */
        if (d)
            for (int64_t j = 0; j < u; j++) a.dh[b * u + j] += d[j];
    }
}
static void cpu_lstm_forward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u;
    if (a.act == ACT_TANH && a.ract == ACT_SIGMOID) { /* one vectorised pass over the step */
        simd::run<LstmStepK>(a.Z, a.ldz, a.cp, a.ldcp, a.c, a.ldh, a.h, a.ldhn, B, u);
    } else {
        for (int64_t b = 0; b < B; b++) {
            float *z = a.Z + b * a.ldz, *h = a.h + b * a.ldhn;
            K().act_forward(a.ract, z, z, 1, 2 * u);
            K().act_forward(a.act, z + 2 * u, z + 2 * u, 1, u);
            K().act_forward(a.ract, z + 3 * u, z + 3 * u, 1, u);
            const float *cp = a.cp + b * a.ldcp;
            float *c = a.c + b * a.ldh;
            for (int64_t j = 0; j < u; j++) c[j] = z[u + j] * cp[j] + z[j] * z[2 * u + j];
            K().act_forward(a.act, c, h, 1, u);
            for (int64_t j = 0; j < u; j++) h[j] *= z[3 * u + j];
        }
    }
    cell_finish_forward(a);
}
static void cpu_lstm_backward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, T = a.T, t = a.t, G = 4 * u;
    auto masked = [&](int64_t b) { return a.mask && a.mask[b * T + t] == 0.f; };
    const bool fused = a.act == ACT_TANH && a.ract == ACT_SIGMOID;
    if (a.first) std::fill(a.dc, a.dc + B * u, 0.f);
    cell_add_output_grad(a);
    for (int64_t b = 0; b < B; b++) {
        float *z = a.Z + b * a.ldz, *dhb = a.dh + b * u, *tgb = a.tg + b * G;
        const float *cp = a.cp + b * a.ldcp, *c = a.c + b * a.ldh;
        if (fused && !masked(b)) {
            simd::run<LstmStepBackK>(z, (const float *)dhb, a.dc + b * u, c, cp, u);
            continue;
        }
        memcpy(tgb, z, (size_t)G * sizeof(float)); /* the activated gates, for act'() */
        if (masked(b)) { /* h_s = h_{s-1} (and c): dh and dc pass unchanged, no gate gradient */
            std::fill(z, z + G, 0.f);
            continue;
        }
        float *ac = a.tmp + b * u, *dcb = a.dc + b * u;
        K().act_forward(a.act, c, ac, 1, u);
        for (int64_t j = 0; j < u; j++) { /* dh o -> through act(c), into dc */
            float o = tgb[3 * u + j];
            z[3 * u + j] = dhb[j] * ac[j]; /* do */
            dhb[j] *= o;
        }
        rnn_gate_backward(a.act, ac, dhb, dhb, u);
        for (int64_t j = 0; j < u; j++) {
            float d = dcb[j] + dhb[j];
            z[j] = d * tgb[2 * u + j]; /* di = dc g */
            z[u + j] = d * cp[j];      /* df = dc c_{s-1} */
            z[2 * u + j] = d * tgb[j]; /* dg = dc i */
            dcb[j] = d * tgb[u + j];   /* dc_{s-1} = dc f */
        }
        rnn_gate_backward(a.ract, tgb, z, z, 2 * u);
        rnn_gate_backward(a.act, tgb + 2 * u, z + 2 * u, z + 2 * u, u);
        rnn_gate_backward(a.ract, tgb + 3 * u, z + 3 * u, z + 3 * u, u);
    }
}

/* The SimpleRNN step entries' CPU side (Kernels::simple_forward,
   simple_backward): the loops Recurrent::forward and backward ran inline
   for a SimpleRNN, moved unchanged. */
static void cpu_simple_forward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u;
    for (int64_t b = 0; b < B; b++) {
        float *z = a.Z + b * a.ldz, *h = a.h + b * a.ldhn; /* h_s: the next step's h_{s-1} */
        K().act_forward(a.act, z, z, 1, u);
        memcpy(h, z, (size_t)u * sizeof(float));
    }
    cell_finish_forward(a);
}
static void cpu_simple_backward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, T = a.T, t = a.t;
    auto masked = [&](int64_t b) { return a.mask && a.mask[b * T + t] == 0.f; };
    cell_add_output_grad(a);
    for (int64_t b = 0; b < B; b++) {
        float *z = a.Z + b * a.ldz, *dhb = a.dh + b * u, *tgb = a.tg + b * u;
        memcpy(tgb, z, (size_t)u * sizeof(float)); /* the activated gates, for act'() */
        if (masked(b)) { /* h_s = h_{s-1}: dh passes unchanged, no gate gradient */
            std::fill(z, z + u, 0.f);
            continue;
        }
        rnn_gate_backward(a.act, tgb, dhb, z, u);
    }
}

/* The GRU step entries' CPU side (Kernels::gru_forward, gru_backward): the
   loops Recurrent::forward and backward ran inline for a GRU, moved
   unchanged. */
static void cpu_gru_forward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, G = 3 * u;
    if (a.phase == 0)
        for (int64_t b = 0; b < B; b++) {
            float *z = a.Z + b * a.ldz;
            const float *hp = a.hr + b * a.ldh; /* read only by r * h_{s-1} (reset_after=False) */
            const float *rr = a.rb + b * (a.reset_after ? G : 2 * u);
            for (int64_t j = 0; j < 2 * u; j++) z[j] += rr[j];
            K().act_forward(a.ract, z, z, 1, 2 * u);
            float *rh = a.R + b * a.ldh;
            if (a.reset_after) {
                for (int64_t j = 0; j < u; j++) {
                    rh[j] = rr[2 * u + j];
                    z[2 * u + j] += z[u + j] * rr[2 * u + j];
                }
            } else {
                for (int64_t j = 0; j < u; j++) rh[j] = z[u + j] * hp[j];
            }
        }
    if (!a.reset_after && a.phase == 0) return; /* (r h_{s-1}) U_h comes first */
    for (int64_t b = 0; b < B; b++) {
        float *z = a.Z + b * a.ldz;
        const float *hp = a.hp + b * a.ldh;
        float *h = a.h + b * a.ldhn;
        K().act_forward(a.act, z + 2 * u, z + 2 * u, 1, u);
        for (int64_t j = 0; j < u; j++) h[j] = z[j] * hp[j] + (1.f - z[j]) * z[2 * u + j];
    }
    cell_finish_forward(a);
}
static void cpu_gru_backward(const CellArgs &a) {
    const int64_t B = a.B, u = a.u, T = a.T, t = a.t, G = 3 * u;
    auto masked = [&](int64_t b) { return a.mask && a.mask[b * T + t] == 0.f; };
    if (a.phase == 1) { /* d(r h_{s-1}) in tmp: dr, and its part of dh_{s-1} */
        for (int64_t b = 0; b < B; b++) {
            float *z = a.Z + b * a.ldz, *tgb = a.tg + b * G, *drh = a.tmp + b * u, *dnb = a.dn + b * u;
            const float *hp = a.hr + b * a.ldh;
            for (int64_t j = 0; j < u; j++) {
                z[u + j] = drh[j] * hp[j];
                if (a.drop_h) drh[j] *= tgb[u + j]; /* d(masked h_{s-1}), completed by the caller */
                else dnb[j] += drh[j] * tgb[u + j];
            }
            rnn_gate_backward(a.ract, tgb, z, z, 2 * u);
        }
        return;
    }
    cell_add_output_grad(a);
    for (int64_t b = 0; b < B; b++) {
        float *z = a.Z + b * a.ldz, *dhb = a.dh + b * u, *tgb = a.tg + b * G;
        const float *hp = a.hp + b * a.ldh;
        memcpy(tgb, z, (size_t)G * sizeof(float)); /* the activated gates, for act'() */
        if (masked(b)) { /* h_s = h_{s-1}: dh passes unchanged, no gate gradient */
            std::fill(z, z + G, 0.f);
            memcpy(a.dn + b * u, dhb, (size_t)u * sizeof(float));
            if (a.reset_after) std::fill(a.R + b * a.ldh, a.R + b * a.ldh + u, 0.f);
            continue;
        }
        /* h = z h_{s-1} + (1 - z) hh */
        float *dnb = a.dn + b * u;
        for (int64_t j = 0; j < u; j++) {
            float zz = tgb[j], hh = tgb[2 * u + j];
            z[j] = dhb[j] * (hp[j] - hh);
            z[2 * u + j] = dhb[j] * (1.f - zz);
            dnb[j] = dhb[j] * zz;
        }
        rnn_gate_backward(a.act, tgb + 2 * u, z + 2 * u, z + 2 * u, u); /* d pre(hh) */
        if (a.reset_after) {
            float *rh = a.R + b * a.ldh;
            for (int64_t j = 0; j < u; j++) {
                float da = z[2 * u + j];
                z[u + j] = da * rh[j];   /* dr */
                rh[j] = da * tgb[u + j]; /* d(recurrent h part) */
            }
            rnn_gate_backward(a.ract, tgb, z, z, 2 * u);
        }
    }
}

/* ---- Recurrent layers: SimpleRNN, LSTM, GRU -------------------------------
   Keras' cells, arguments, defaults and weight layouts. Per sample the input
   is (T, F) and the output (units) or, with return_sequences, (T, units).
   kernel (F, g u) and recurrent_kernel (u, g u) hold the g gates side by
   side in Keras' order: LSTM i, f, c, o; GRU z, r, h; SimpleRNN one. bias
   (g u), or GRU's (2, 3u) with reset_after (input bias, recurrent bias).
   Forward: ONE GEMM projects the inputs of all B x T steps (Z = x W + b, in
   ws as (B, T, g u)); then per step one recurrent GEMM adds h_{s-1} U into
   that step's rows of Z (row stride T g u, so nothing is copied), and the
   cell turns each row into activated gates, c and h while the row is in L1
   (activations through the vectorised kernels). The activated gates, the
   state before each step (HP) and LSTM's c per step stay in ws for backward.
   Backward through time overwrites the gates with the gradients of their
   pre-activations (dZ), step by step from the last, with one GEMM per step
   for dh_{s-1} = dZ_s U^T; then dW = x^T dZ, dU = HP^T dZ and dx = dZ W^T
   are GEMMs over all steps at once. Threads come from the GEMMs. ws is
   sized once per batch size: nothing is allocated per batch.
   go_backwards: step s reads time T-1-s, and the output sequence is in step
   order (reversed), as in Keras. stateful: each batch row starts from its
   slot's h (and c) and leaves its last state there (Layer::states); the
   gradient stops at the batch boundary (truncated backpropagation through
   time, as in Keras).
   dropout, recurrent_dropout (training only, as Keras' cells): one inputs
   mask per sample (F values, 0 or 1/(1-rate)) fixed over all steps, and one
   mask on h_{s-1} (u values) fixed over all steps, drawn per batch from the
   batch's seed as the Dropout layer draws its masks (so a seeded run and a
   resumed one draw the same). The masked inputs XD (B T F) replace x in the
   input GEMM; the masked states HD (B T u) replace HP in the recurrent
   products only: LSTM's c and GRU's blend z h_{s-1} + (1 - z) hh keep the
   unmasked state, as Keras' LSTMCell and GRUCell (implementation 1; Keras'
   GRU implementation 2 leaves recurrent_dropout out, which nnlite does not
   copy). Backward masks the gradients that flow back through the masked
   values.
   Kernel table (the GPU path, issue 15): each cell's per-step loops are
   one entry each way (lstm_forward / lstm_backward, gru_forward /
   gru_backward in two phases when reset_after=False, simple_forward /
   simple_backward; CPU entries: the loops as they were, bit for bit), the
   state rows and a masked row's dh go through rnn_rows, and on a GPU the
   recurrent products are K().sgemm instead of the packed U. Dropout's masks
   are drawn by K().dropout_mask (the hash of the Dropout layer's masks:
   counter-based, so a GPU draws the CPU's masks on the device, no upload)
   and applied by K().mul_rows (a sample's mask on its T rows; the masked
   h_{s-1} rows; GRU's dh_{s-1} += d(masked h) * mask): CPU and GPU train
   with the same masks. */
class Recurrent : public Layer {
public:
    enum CellKind { CELL_SIMPLE, CELL_LSTM, CELL_GRU } kind;
    int64_t units, T = 0, F = 0, g = 1;
    Act act, ract = ACT_SIGMOID;
    bool use_bias, return_sequences, go_backwards, stateful, unit_forget_bias = false, reset_after = false;
    bool zero_output_for_mask = false;
    int64_t implementation = 2;
    float dropout = 0, recurrent_dropout = 0;
    int64_t seed = 0;                      /* Keras' dropout seed, mixed into the batch's */
    bool drop_x = false, drop_h = false;   /* this batch's forward masked x / h (training) */

    Recurrent(Args &a, CellKind k, const char *cls_) : kind(k) {
        cls = cls_;
        g = k == CELL_LSTM ? 4 : k == CELL_GRU ? 3 : 1;
        units = a.integer("units", 0, 0);
        NNL_REQUIRE(units > 0 && units < (1 << 24), NNL_ERR_ARGUMENT, "%s: units must be a positive integer", cls);
        act = parse_act(a.str("activation", 1, "tanh"), cls);
        int p = 2;
        if (k != CELL_SIMPLE) ract = parse_act(a.str("recurrent_activation", p++, "sigmoid"), cls);
        /* backward takes every activation's derivative from its output
           (hard_sigmoid's too: 0.2 inside (0, 1); Keras 2's LSTM default) */
        for (Act x : {act, ract})
            NNL_REQUIRE(act_from_output(x) || x == ACT_HARD_SIGMOID, NNL_ERR_UNSUPPORTED,
                        "%s: activation '%s' is not supported in a recurrent cell (linear, relu, leaky_relu, elu, "
                        "selu, sigmoid, hard_sigmoid, tanh, exponential)", cls, act_names[x]);
        use_bias = a.flag("use_bias", p++, true);
        std::string ki = a.str("kernel_initializer", p++, "glorot_uniform");
        std::string ri = a.str("recurrent_initializer", p++, "orthogonal");
        std::string bi = a.str("bias_initializer", p++, "zeros");
        if (k == CELL_LSTM) unit_forget_bias = a.flag("unit_forget_bias", p++, true);
        dropout = (float)a.num("dropout", -1, 0.0);
        recurrent_dropout = (float)a.num("recurrent_dropout", -1, 0.0);
        NNL_REQUIRE(dropout >= 0 && dropout < 1, NNL_ERR_ARGUMENT, "%s: dropout must be in [0, 1), got %g", cls,
                    dropout);
        NNL_REQUIRE(recurrent_dropout >= 0 && recurrent_dropout < 1, NNL_ERR_ARGUMENT,
                    "%s: recurrent_dropout must be in [0, 1), got %g", cls, recurrent_dropout);
        return_sequences = a.flag("return_sequences", -1, false);
        NNL_REQUIRE(!a.flag("return_state", -1, false), NNL_ERR_UNSUPPORTED,
                    "%s: return_state=True is not supported (Sequential models only)", cls);
        go_backwards = a.flag("go_backwards", -1, false);
        stateful = a.flag("stateful", -1, false);
        a.flag("unroll", -1, false); /* unrolling changes nothing in the arithmetic */
        NNL_REQUIRE(!a.flag("time_major", -1, false), NNL_ERR_UNSUPPORTED, "%s: time_major=True is not supported",
                    cls);
        if (k != CELL_SIMPLE) {
            implementation = a.integer("implementation", -1, 2);
            NNL_REQUIRE(implementation == 1 || implementation == 2, NNL_ERR_ARGUMENT,
                        "%s: implementation must be 1 or 2, got %lld", cls, (long long)implementation);
        }
        if (k == CELL_GRU) reset_after = a.flag("reset_after", -1, true);
        /* Keras 3's extra keys: a dropout seed, cuDNN selection, masked outputs */
        seed = a.integer("seed", -1, 0);
        const Value *uc = a.get("use_cudnn", -1);
        (void)uc;
        zero_output_for_mask = a.flag("zero_output_for_mask", -1, false);
        auto add = [&](const char *n, const std::string &init) {
            WeightSpec w;
            w.name = n;
            w.init = init;
            weights.push_back(w);
        };
        add("kernel", ki);
        add("recurrent_kernel", ri);
        if (use_bias) add("bias", bi);
        if (stateful) {
            StateSpec h;
            h.name = "h";
            states.push_back(h);
            if (k == CELL_LSTM) {
                StateSpec c;
                c.name = "c";
                states.push_back(c);
            }
        }
    }
    void config(Json &c) const override {
        c.set("return_sequences", Json::boolean(return_sequences)).set("return_state", Json::boolean(false));
        c.set("go_backwards", Json::boolean(go_backwards)).set("stateful", Json::boolean(stateful));
        c.set("unroll", Json::boolean(false)).set("time_major", Json::boolean(false));
        c.set("units", Json::integer(units)).set("activation", Json::string(act_names[act]));
        if (kind != CELL_SIMPLE) c.set("recurrent_activation", Json::string(act_names[ract]));
        c.set("use_bias", Json::boolean(use_bias));
        c.set("kernel_initializer", files::init_json(weights[0].init));
        c.set("recurrent_initializer", files::init_json(weights[1].init));
        c.set("bias_initializer", files::init_json(use_bias ? weights[2].init : std::string("zeros")));
        if (kind == CELL_LSTM) c.set("unit_forget_bias", Json::boolean(unit_forget_bias));
        files::null_keys(c, {"kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                             "kernel_constraint", "recurrent_constraint", "bias_constraint"});
        c.set("dropout", Json::number_f(dropout)).set("recurrent_dropout", Json::number_f(recurrent_dropout));
        if (kind != CELL_SIMPLE) c.set("implementation", Json::integer(implementation));
        if (kind == CELL_GRU) c.set("reset_after", Json::boolean(reset_after));
        if (seed) c.set("seed", Json::integer(seed)); /* the masks depend on it: kept when set */
        if (zero_output_for_mask) c.set("zero_output_for_mask", Json::boolean(true)); /* Keras 3's key, default false */
    }
    /* Any length; a step mask is consumed: a masked step leaves h (and c)
       as they were (Keras' backend.rnn), and with return_sequences the mask
       passes on to the output. The output at a masked step is Keras'
       default (RNN's zero_output_for_mask=False): the previous step's
       output, i.e. the carried h (zeros before the first kept step); with
       zero_output_for_mask=True (Keras 3's key), zeros. */
    bool any_length(const Shape &) const override { return true; }
    /* GPU: every configuration (the cell, the step masks, the state copies,
       dropout's masks and masked rows, and every GEMM go through K()) */
    bool gpu_path() const override { return true; }
    bool keeps_length() const override { return return_sequences; }
    bool supports_mask() const override { return true; }
    bool passes_mask() const override { return return_sequences; }
    bool masked(int64_t b, int64_t t) const { return mask && mask_in && mask[b * T + t] == 0.f; }
    /* values: the gates of every step, which ws keeps per sample (more than the output) */
    Size size_bound(const Shape &s) const override {
        double t = s.rank >= 1 ? (double)s.d[0] : 1, f = (double)s.last(), u = (double)units, gu = (double)g * u;
        return {t * (gu + 3 * u) + (dropout > 0 ? (t + 1) * f : 0) + (recurrent_dropout > 0 ? (t + 1) * u : 0),
                f * gu + u * gu + 2 * gu};
    }
    void build(const Shape &input) override {
        NNL_REQUIRE(input.rank == 2, NNL_ERR_SHAPE,
                    "%s: expects inputs of rank 2 per sample (timesteps, features), got %s", cls, input.str().c_str());
        in = input;
        T = input.d[0];
        F = input.d[1];
        int64_t per = mul_size(T, (g + 3) * units); /* ws per sample: gates and states of every step */
        NNL_REQUIRE(per >= 0 && per <= MAX_VALUES, NNL_ERR_SHAPE,
                    "%s: %lld steps of %lld units need more than 2^40 values per sample", cls, (long long)T,
                    (long long)units);
        out = return_sequences ? Shape{T, units} : Shape{units};
        weights[0].shape = Shape{F, g * units};
        weights[1].shape = Shape{units, g * units};
        if (use_bias) weights[2].shape = kind == CELL_GRU && reset_after ? Shape{2, g * units} : Shape{g * units};
        for (auto &st : states) st.shape = Shape{units};
    }
    /* Keras' unit_forget_bias: the forget gate's bias starts at one */
    void initialized() override {
        if (kind == CELL_LSTM && use_bias && unit_forget_bias) std::fill(weights[2].w + units, weights[2].w + 2 * units, 1.f);
    }

    /* ws: Z (B T gu) gates, HP (B T u) the state before each step, C (B T u)
       LSTM's c after each step, R (B T u) GRU's recurrent h part (reset_after)
       or r * h_{s-1}, then per-step rows: C0 (B u), DH, DN (B u), RB (B gu),
       TG (B gu), TMP (B u); with dropout MX (B F) and XD (B T F), with
       recurrent_dropout MH (B u) and HD (B T u) */
    gemm::PackedB pk; /* U (forward) or U^T (backward), packed once per pass */
    int64_t gu() const { return g * units; }
    int64_t workspace(int64_t B) const override {
        int64_t N = B * T, u = units;
        return N * gu() + N * u + (kind == CELL_LSTM ? N * u : 0) + (kind == CELL_GRU ? N * u : 0) + 4 * B * u +
               2 * B * gu() + (dropout > 0 ? B * F + N * F : 0) + (recurrent_dropout > 0 ? B * u + N * u : 0);
    }
    float *Zp() const { return ws; }
    float *HP(int64_t B) const { return Zp() + B * T * gu(); }
    float *Cp(int64_t B) const { return HP(B) + B * T * units; }
    float *Rp(int64_t B) const { return Cp(B) + (kind == CELL_LSTM ? B * T * units : 0); }
    float *C0(int64_t B) const { return Rp(B) + (kind == CELL_GRU ? B * T * units : 0); }
    float *DH(int64_t B) const { return C0(B) + B * units; }
    float *DN(int64_t B) const { return DH(B) + B * units; }
    float *TMP(int64_t B) const { return DN(B) + B * units; }
    float *RB(int64_t B) const { return TMP(B) + B * units; }
    float *TG(int64_t B) const { return RB(B) + B * gu(); }
    float *MX(int64_t B) const { return TG(B) + B * gu(); }
    float *XD(int64_t B) const { return MX(B) + (dropout > 0 ? B * F : 0); }
    float *MH(int64_t B) const { return XD(B) + (dropout > 0 ? B * T * F : 0); }
    float *HDp(int64_t B) const { return MH(B) + (recurrent_dropout > 0 ? B * units : 0); }
    /* the batch's masks: n values 0 (probability rate) or 1/(1-rate), from
       the batch's seed, the layer's Keras seed, its name and which mask
       (salt); drawn by K().dropout_mask, a counter-based hash of (seed,
       index), so a GPU draws them on the device, the CPU's bit for bit */
    void draw_mask(float *m, int64_t n, float rate, uint64_t batch_seed, uint64_t salt) const {
        uint64_t h = 1469598103934665603ull; /* FNV-1a of the name, as Dropout's */
        for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
        K().dropout_mask(m, n, rate, mix64(batch_seed ^ (uint64_t)seed ^ h ^ salt));
    }
    int64_t tidx(int64_t s) const { return go_backwards ? T - 1 - s : s; }
    /* step s (ws laid out for batch B) as the step entries take it */
    CellArgs cell_args(int64_t B, int64_t s) const {
        CellArgs a;
        const int64_t u = units, t = tidx(s);
        a.B = B, a.u = u, a.T = T, a.t = t, a.s = s, a.act = act, a.ract = ract;
        a.Z = Zp() + t * gu(), a.ldz = T * gu();
        a.hp = HP(B) + t * u, a.ldh = T * u;
        if (kind == CELL_LSTM) { /* c: the other cells have none (their C is empty: no pointer into it) */
            a.cp = s == 0 ? C0(B) : Cp(B) + tidx(s - 1) * u, a.ldcp = s == 0 ? u : T * u;
            a.c = Cp(B) + t * u;
        }
        a.h = s + 1 < T ? HP(B) + tidx(s + 1) * u : TMP(B), a.ldhn = s + 1 < T ? T * u : u;
        a.mask = mask_in ? mask : nullptr;
        a.seq = return_sequences, a.zero_masked = zero_output_for_mask;
        return a;
    }

    void check_slots(int64_t B) const {
        NNL_REQUIRE(states.empty() || B == states[0].slots, NNL_ERR_SHAPE,
                    "%s '%s': a stateful layer keeps states for batches of %lld samples; this batch has %lld (a "
                    "stateful model keeps a fixed batch size, as Keras' batch_input_shape: make the sample count a "
                    "multiple of the batch size)", cls, name.c_str(), (long long)states[0].slots, (long long)B);
    }

    void forward(const float *x, float *y, int64_t B, const Ctx &ctx) override {
        check_slots(B);
        const int64_t u = units, G = gu(), N = B * T;
        float *Z = Zp(), *H = HP(B), *C = Cp(B), *R = Rp(B), *c0 = C0(B), *rb = RB(B), *tmp = TMP(B);
        const float *W = weights[0].w, *U = weights[1].w, *bias = use_bias ? weights[2].w : nullptr;
        /* dropout (training only): the masked inputs replace x; the masked
           h_{s-1} (HD) feeds the recurrent products */
        drop_x = ctx.training && dropout > 0;
        drop_h = ctx.training && recurrent_dropout > 0;
        float *mh = MH(B), *HD = HDp(B);
        if (drop_x) {
            float *mx = MX(B), *xd = XD(B);
            draw_mask(mx, B * F, dropout, ctx.seed, 1);
            K().mul_rows(x, F, mx, F, T, xd, F, B * T, F, false); /* sample b's mask on its T rows */
            x = xd;
        }
        if (drop_h) draw_mask(mh, B * u, recurrent_dropout, ctx.seed, 2);
        /* all steps' input projections at once */
        K().sgemm(false, false, N, G, F, 1.f, x, F, W, G, 0.f, Z, G);
        if (bias) K().bias_add(Z, bias, N, G); /* GRU reset_after: row 0, the input bias */
        const float *rbias = bias && kind == CELL_GRU && reset_after ? bias + G : nullptr;
        /* U packed once for every step's h U on the CPU; on a GPU
           each step's product is a K().sgemm */
        const bool packed = (kind != CELL_GRU || reset_after) && !on_gpu;
        if (packed) gemm::pack_b_all(false, U, G, u, G, pk);
        /* the initial states: the slots' (stateful) or zeros */
        const int64_t t0 = tidx(0);
        K().rnn_rows(stateful ? states[0].s : nullptr, u, H + t0 * u, T * u, B, u, nullptr, 0, 0);
        if (kind == CELL_LSTM) K().rnn_rows(stateful ? states[1].s : nullptr, u, c0, u, B, u, nullptr, 0, 0);
        for (int64_t s = 0; s < T; s++) {
            const int64_t t = tidx(s), ldz = T * G, ldh = T * u;
            float *Zs = Z + t * G;
            const float *Hs = H + t * u, *Hr = Hs; /* Hr: h_{s-1} as the recurrent products see it */
            if (drop_h) {
                K().mul_rows(Hs, ldh, mh, u, 1, HD + t * u, ldh, B, u, false);
                Hr = HD + t * u;
            }
            bool zero_h = s == 0 && !stateful; /* h_{-1} = 0: no recurrent product */
            if (kind == CELL_GRU) {
                if (reset_after) { /* rb = h U + recurrent bias, all three parts */
                    if (packed) gemm::sgemm_packed(B, Hr, ldh, pk, 0.f, rb, G);
                    else K().sgemm(false, false, B, G, u, 1.f, Hr, ldh, U, G, 0.f, rb, G);
                    if (rbias) K().bias_add(rb, rbias, B, G);
                } else { /* z and r parts first; h's needs r */
                    K().sgemm(false, false, B, 2 * u, u, 1.f, Hr, ldh, U, G, 0.f, rb, 2 * u);
                }
            } else if (!zero_h) {
                if (packed) gemm::sgemm_packed(B, Hr, ldh, pk, 1.f, Zs, ldz);
                else K().sgemm(false, false, B, G, u, 1.f, Hr, ldh, U, G, 1.f, Zs, ldz);
            }
            if (kind == CELL_LSTM) { /* the cell, the mask and the output: one kernel-table entry */
                CellArgs a = cell_args(B, s);
                a.y = y;
                K().lstm_forward(a);
                continue;
            }
            if (kind == CELL_GRU) { /* the cell, the mask and the output: kernel-table entries */
                CellArgs a = cell_args(B, s);
                a.y = y, a.rb = rb, a.hr = Hr, a.R = R + t * u, a.reset_after = reset_after, a.phase = 0;
                K().gru_forward(a);
                if (!reset_after) { /* h part: (r * h_{s-1}) U_h, into Z's h columns */
                    K().sgemm(false, false, B, u, u, 1.f, R + t * u, ldh, U + 2 * u, G, 1.f, Zs + 2 * u, ldz);
                    a.phase = 1;
                    K().gru_forward(a);
                }
                continue;
            }
            CellArgs a = cell_args(B, s); /* SimpleRNN: the cell, the mask and the output */
            a.y = y;
            K().simple_forward(a);
        }
        if (stateful) { /* the last states stay in the slots (tmp holds h_{T-1}) */
            K().rnn_rows(tmp, u, states[0].s, u, B, u, nullptr, 0, 0);
            if (kind == CELL_LSTM) K().rnn_rows(C + tidx(T - 1) * u, T * u, states[1].s, u, B, u, nullptr, 0, 0);
        }
    }

    void backward(const float *x, const float *y, const float *dy, float *dx, int64_t B, const Ctx &c) override {
        (void)y;
        const int64_t u = units, G = gu(), N = B * T, ldz = T * G, ldh = T * u;
        float *Z = Zp(), *H = HP(B), *R = Rp(B), *dh = DH(B), *dn = DN(B), *rb = RB(B),
              *tg = TG(B), *tmp = TMP(B);
        const float *W = weights[0].w, *U = weights[1].w;
        float *dc = rb; /* LSTM: dc_s, carried like dh (rb is free in LSTM's backward) */
        const bool packed = kind != CELL_GRU && !on_gpu; /* a GPU takes K().sgemm instead */
        if (packed) gemm::pack_b_all(true, U, G, G, u, pk); /* U^T, for every step's dh */
        /* dropout: the masked inputs and states that forward multiplied */
        const float *mh = MH(B), *HR = drop_h ? HDp(B) : H;
        if (drop_x) x = XD(B);
        for (int64_t s = T - 1; s >= 0; s--) {
            c.poll(); /* a data-parallel run's buckets in flight move on */
            const int64_t t = tidx(s);
            float *Zs = Z + t * G;
            if (kind == CELL_LSTM) { /* the output's gradient and the cell: one kernel-table entry */
                CellArgs a = cell_args(B, s);
                a.dy = dy, a.dh = dh, a.dc = dc, a.tg = tg, a.tmp = tmp, a.first = s == T - 1;
                K().lstm_backward(a);
            }
            CellArgs ga; /* GRU: the step's arguments, for both phases */
            if (kind == CELL_GRU) { /* the output's gradient and the cell: a kernel-table entry */
                ga = cell_args(B, s);
                ga.dy = dy, ga.dh = dh, ga.dn = dn, ga.tg = tg, ga.tmp = tmp, ga.first = s == T - 1;
                ga.R = R + t * u, ga.hr = HR + t * u, ga.reset_after = reset_after, ga.drop_h = drop_h, ga.phase = 0;
                K().gru_backward(ga);
            }
            if (kind == CELL_SIMPLE) { /* the output's gradient and the cell: a kernel-table entry */
                CellArgs a = cell_args(B, s);
                a.dy = dy, a.dh = dh, a.tg = tg, a.first = s == T - 1;
                K().simple_backward(a);
            }
            /* dh_{s-1}; a masked row keeps its dh (saved in tmp around the GEMM) */
            if (kind != CELL_GRU) {
                if (mask_in) K().rnn_rows(dh, u, tmp, u, B, u, mask, T, t);
                if (packed) gemm::sgemm_packed(B, Zs, ldz, pk, 0.f, dh, u);
                else K().sgemm(false, true, B, u, G, 1.f, Zs, ldz, U, G, 0.f, dh, u);
                if (drop_h) K().mul(dh, mh, dh, B * u);
                if (mask_in) K().rnn_rows(tmp, u, dh, u, B, u, mask, T, t);
            } else if (reset_after) {
                if (drop_h) { /* through the masked h_{s-1}: into tmp, masked, then added */
                    K().sgemm(false, true, B, u, 2 * u, 1.f, Zs, ldz, U, G, 0.f, tmp, u);
                    K().sgemm(false, true, B, u, u, 1.f, R + t * u, ldh, U + 2 * u, G, 1.f, tmp, u);
                    K().mul_rows(tmp, u, mh, u, 1, dn, u, B, u, true);
                } else {
                    K().sgemm(false, true, B, u, 2 * u, 1.f, Zs, ldz, U, G, 1.f, dn, u);
                    K().sgemm(false, true, B, u, u, 1.f, R + t * u, ldh, U + 2 * u, G, 1.f, dn, u);
                }
                std::swap(dh, dn);
            } else {
                /* d(r h_{s-1}) = d pre(hh) U_h^T, into tmp */
                K().sgemm(false, true, B, u, u, 1.f, Zs + 2 * u, ldz, U + 2 * u, G, 0.f, tmp, u);
                ga.phase = 1; /* dr, and dh_{s-1} += d(r h) r (drop_h: completed below) */
                K().gru_backward(ga);
                if (drop_h) { /* dh_{s-1} += (d(r h) r + dZ_zr U_zr^T) * mask */
                    K().sgemm(false, true, B, u, 2 * u, 1.f, Zs, ldz, U, G, 1.f, tmp, u);
                    K().mul_rows(tmp, u, mh, u, 1, dn, u, B, u, true);
                } else {
                    K().sgemm(false, true, B, u, 2 * u, 1.f, Zs, ldz, U, G, 1.f, dn, u);
                }
                std::swap(dh, dn);
            }
        }
        /* the weights' gradients over all steps at once */
        K().sgemm(true, false, F, G, N, 1.f, x, F, Z, G, 0.f, weights[0].g, G);
        float *dU = weights[1].g;
        if (kind != CELL_GRU) {
            K().sgemm(true, false, u, G, N, 1.f, HR, u, Z, G, 0.f, dU, G);
        } else {
            K().sgemm(true, false, u, 2 * u, N, 1.f, HR, u, Z, G, 0.f, dU, G);
            if (reset_after) K().sgemm(true, false, u, u, N, 1.f, HR, u, R, u, 0.f, dU + 2 * u, G);
            else K().sgemm(true, false, u, u, N, 1.f, R, u, Z + 2 * u, G, 0.f, dU + 2 * u, G);
        }
        if (use_bias) {
            float *db = weights[2].g;
            K().bias_grad(Z, db, N, G);
            if (kind == CELL_GRU && reset_after) { /* the recurrent bias: z and r as the input's, h from R */
                K().copy(db, db + G, 2 * u);
                K().bias_grad(R, db + G + 2 * u, N, u);
            }
        }
        if (dx) {
            K().sgemm(false, true, N, F, G, 1.f, Z, G, W, G, 0.f, dx, F);
            if (drop_x) K().mul_rows(dx, F, MX(B), F, T, dx, F, B * T, F, false); /* through the inputs' mask */
        }
    }
};

struct SimpleRNN : Recurrent {
    NNL_CLONE(SimpleRNN)
    explicit SimpleRNN(Args &a) : Recurrent(a, CELL_SIMPLE, "SimpleRNN") {}
};
struct LSTM : Recurrent {
    NNL_CLONE(LSTM)
    explicit LSTM(Args &a) : Recurrent(a, CELL_LSTM, "LSTM") {}
};
struct GRU : Recurrent {
    NNL_CLONE(GRU)
    explicit GRU(Args &a) : Recurrent(a, CELL_GRU, "GRU") {}
};

/* ---- Bidirectional: a recurrent layer run both ways ------------------------
   Keras' wrapper (keras.layers.Bidirectional): a forward copy of the layer
   and a backward copy (go_backwards flipped), both reading the same input,
   named forward_<layer> and backward_<layer> as Keras names them. The
   backward copy's sequence (return_sequences) comes out in processing
   order and is reversed back to time order before the merge, as Keras does.
   merge_mode 'concat' (the two side by side on the last axis: twice the
   units), 'sum', 'mul', 'ave'. Weights: the forward layer's (kernel,
   recurrent_kernel, bias) then the backward layer's, Keras' get_weights()
   order; the copies' weights live in the model's arenas through this
   layer's WeightSpecs (bound before each call). Not supported: stateful
   copies, merge_mode=None (two outputs), an explicit backward_layer other
   than the mirror of the forward one (Keras 3 writes that mirror in its
   JSON: it is read and checked). ws: the copies' workspaces, then both
   outputs (kept for the 'mul' gradient; the backward copy's in its
   processing order, which the merge and its gradient read reversed:
   nothing is flipped in place); scratch: their dy and the backward copy's
   dx. The merge, its gradient and the sum of the two dx are kernel-table
   entries (bidir_merge, bidir_split, add) and the copies run through K():
   the layer has a GPU path (issue 15; compiled, not yet run on a GPU).
   Variable length (input_shape=(None, F)) and step masks (Masking,
   Embedding's mask_zero) as the wrapped layer: the copies are rebuilt at
   each call's length, and both read the model's mask in time order, so
   the backward copy, which runs the steps from the last to the first,
   sees the reversed mask, as Keras' backward layer does. A masked step
   leaves each copy's state as it was: on right-padded sequences the
   forward copy's last output is its state at the last kept step and the
   backward copy starts at that step (PyTorch's bidirectional layers on a
   pack_padded_sequence give the same). Keras forces both copies'
   zero_output_for_mask to return_sequences (force_zero_output_for_mask in
   Bidirectional.__init__, tf.keras 2.x keras/layers/rnn/bidirectional.py
   and Keras 3 keras/src/layers/rnn/bidirectional.py): with
   return_sequences a masked step's merged output is zero, and the mask
   passes on to the next layer (Bidirectional.compute_mask); without, the
   mask ends here. */
static bool json_equal(const Json &a, const Json &b) {
    if (a.kind != b.kind || a.b != b.b || a.s != b.s || a.a.size() != b.a.size() || a.o.size() != b.o.size())
        return false;
    if (a.kind == Json::NUM && a.num != b.num) return false;
    for (size_t i = 0; i < a.a.size(); i++)
        if (!json_equal(a.a[i], b.a[i])) return false;
    for (size_t i = 0; i < a.o.size(); i++)
        if (a.o[i].first != b.o[i].first || !json_equal(a.o[i].second, b.o[i].second)) return false;
    return true;
}

class Bidirectional : public Layer {
public:
    enum Merge { MERGE_CONCAT, MERGE_SUM, MERGE_MUL, MERGE_AVE } merge = MERGE_CONCAT;
    static_assert(MERGE_CONCAT == 0 && MERGE_SUM == 1 && MERGE_MUL == 2 && MERGE_AVE == 3,
                  "Kernels::bidir_merge's modes");
    std::unique_ptr<Recurrent> fw, bw;
    std::string inner; /* the wrapped layer's name, as given ("lstm") */
    int64_t so = 0;    /* values per sample of one copy's output */
    bool zero_given = false; /* the wrapped layer's zero_output_for_mask as given (written back so) */

    /* a recurrent layer from its spec, with the keys every layer takes
       (name, trainable, dtype, an input shape) read here; *iname gets the name */
    std::unique_ptr<Recurrent> make_inner(const Spec &sp, std::string *iname) {
        Recurrent::CellKind k;
        const char *cls_;
        if (sp.name == "SimpleRNN") k = Recurrent::CELL_SIMPLE, cls_ = "SimpleRNN";
        else if (sp.name == "LSTM") k = Recurrent::CELL_LSTM, cls_ = "LSTM";
        else if (sp.name == "GRU") k = Recurrent::CELL_GRU, cls_ = "GRU";
        else raise(NNL_ERR_UNSUPPORTED, "Bidirectional: wraps SimpleRNN, LSTM or GRU, not %s",
                   printable(sp.name).c_str());
        Args a(sp, cls_);
        std::unique_ptr<Recurrent> r(new Recurrent(a, k, cls_));
        *iname = a.str("name", -1, "");
        NNL_REQUIRE(valid_utf8(*iname), NNL_ERR_ARGUMENT, "Bidirectional: the name '%s' is not valid UTF-8",
                    printable(*iname).c_str());
        a.str("dtype", -1, "float32");
        NNL_REQUIRE(a.flag("trainable", -1, true), NNL_ERR_UNSUPPORTED,
                    "Bidirectional: frozen layers are not supported yet");
        std::vector<int64_t> is = a.ints("input_shape", -1), bs = a.ints("batch_input_shape", -1);
        if (is.empty() && !bs.empty()) is.assign(bs.begin() + 1, bs.end());
        if (!is.empty()) implied_input = is;
        a.done();
        NNL_REQUIRE(!r->stateful, NNL_ERR_UNSUPPORTED,
                    "Bidirectional(%s(stateful=True)): stateful Bidirectional layers are not supported", r->cls);
        return r;
    }
    /* the copies are the copy's own: forward re-binds them (bind) */
    Bidirectional(const Bidirectional &o)
        : Layer(o), merge(o.merge), fw(new Recurrent(*o.fw)), bw(new Recurrent(*o.bw)), inner(o.inner), so(o.so),
          zero_given(o.zero_given) {}
    NNL_CLONE(Bidirectional)
    static std::string strip(const std::string &s, const char *prefix) {
        size_t n = strlen(prefix);
        return s.compare(0, n, prefix) == 0 ? s.substr(n) : s;
    }

    explicit Bidirectional(Args &a) {
        cls = "Bidirectional";
        const Spec *ls = a.layer("layer", 0);
        NNL_REQUIRE(ls, NNL_ERR_ARGUMENT, "Bidirectional: needs a layer, as in Bidirectional(LSTM(8))");
        const Value *mm = a.get("merge_mode", 1);
        NNL_REQUIRE(!mm || mm->kind != Value::NONE, NNL_ERR_UNSUPPORTED,
                    "Bidirectional: merge_mode=None (the two outputs as a list) is not supported in a Sequential "
                    "model; use 'concat', 'sum', 'mul' or 'ave'");
        std::string m = a.str("merge_mode", 1, "concat");
        if (m == "concat") merge = MERGE_CONCAT;
        else if (m == "sum") merge = MERGE_SUM;
        else if (m == "mul") merge = MERGE_MUL;
        else if (m == "ave") merge = MERGE_AVE;
        else raise(NNL_ERR_ARGUMENT, "Bidirectional: merge_mode must be 'concat', 'sum', 'mul' or 'ave', got '%s'",
                   printable(m).c_str());
        const Value *wv = a.get("weights", 2);
        NNL_REQUIRE(!wv || wv->kind == Value::NONE, NNL_ERR_UNSUPPORTED,
                    "Bidirectional: initial weights in the constructor are not supported (nnl_set_weight after)");
        NNL_REQUIRE(a.integer("num_constants", -1, 0) == 0, NNL_ERR_UNSUPPORTED,
                    "Bidirectional: constants (num_constants) are not supported");
        fw = make_inner(*ls, &inner);
        /* Keras 3's names: the prefix of a copy read back from a file is not doubled */
        std::string base = strip(inner.empty() ? snake(fw->cls) : inner, "forward_");
        fw->name = "forward_" + base;
        Spec bs = *ls; /* the mirror: go_backwards flipped */
        bool flipped = false;
        for (auto &kv : bs.kw)
            if (kv.first == "go_backwards") {
                kv.second.kind = Value::BOOL;
                kv.second.num = !fw->go_backwards;
                flipped = true;
            }
        if (!flipped) {
            Value t;
            t.kind = Value::BOOL;
            t.num = !fw->go_backwards;
            bs.kw.emplace_back("go_backwards", t);
        }
        std::string bname;
        bw = make_inner(bs, &bname);
        bw->name = "backward_" + base;
        /* Keras' force_zero_output_for_mask (see above): masked steps output zeros with return_sequences */
        zero_given = fw->zero_output_for_mask;
        fw->zero_output_for_mask = bw->zero_output_for_mask = fw->return_sequences;
        if (const Spec *given = a.layer("backward_layer", 3)) {
            /* Keras 3 writes the backward copy out: accepted when it is the mirror */
            std::string gname;
            std::unique_ptr<Recurrent> g = make_inner(*given, &gname);
            g->zero_output_for_mask = g->return_sequences; /* forced by Keras too: not a difference */
            Json c1 = Json::object(), c2 = Json::object();
            bw->config(c1);
            g->config(c2);
            NNL_REQUIRE(std::string(g->cls) == bw->cls && json_equal(c1, c2), NNL_ERR_UNSUPPORTED,
                        "Bidirectional: a backward_layer other than the forward layer run backwards (the same "
                        "class and configuration, go_backwards flipped) is not supported");
            if (!gname.empty()) bw->name = gname;
        }
        for (Recurrent *r : {fw.get(), bw.get()})
            for (auto &w : r->weights) {
                WeightSpec x = w;
                x.name = r->name + "/" + w.name;
                weights.push_back(x);
            }
    }
    void config(Json &c) const override {
        /* tf.keras 2.x: the wrapped layer as given (its copies are named
           forward_/backward_ by Keras when it builds them), then merge_mode */
        Json lc = Json::object();
        lc.set("name", Json::string(inner.empty() ? snake(fw->cls) : inner));
        lc.set("trainable", Json::boolean(true)).set("dtype", Json::string("float32"));
        fw->config(lc);
        /* zero_output_for_mask as given, not as forced: tf.keras 2.x writes the wrapped layer */
        lc.o.erase(std::remove_if(lc.o.begin(), lc.o.end(),
                                  [](const std::pair<std::string, Json> &kv) { return kv.first == "zero_output_for_mask"; }),
                   lc.o.end());
        if (zero_given) lc.set("zero_output_for_mask", Json::boolean(true));
        c.set("layer", Json::object().set("class_name", Json::string(fw->cls)).set("config", lc));
        static const char *const names[] = {"concat", "sum", "mul", "ave"};
        c.set("merge_mode", Json::string(names[merge]));
    }
    /* as the wrapped layer: any length, the length stays with
       return_sequences; the mask is read by both copies and passes on with
       return_sequences (Keras' Bidirectional.compute_mask) */
    bool any_length(const Shape &s) const override { return fw->any_length(s); }
    bool keeps_length() const override { return fw->keeps_length(); }
    bool supports_mask() const override { return true; }
    bool passes_mask() const override { return fw->passes_mask(); }
    Size size_bound(const Shape &s) const override {
        Size f = fw->size_bound(s);
        return {2 * f.values + 4 * (double)(s.rank >= 1 ? s.d[0] : 1) * (double)fw->units, 2 * f.weights};
    }
    void build(const Shape &input) override {
        fw->build(input);
        bw->build(input);
        in = input;
        out = fw->out;
        if (merge == MERGE_CONCAT) out.d[out.rank - 1] *= 2;
        so = fw->out.size();
        size_t nf = fw->weights.size();
        for (size_t i = 0; i < weights.size(); i++)
            weights[i].shape = i < nf ? fw->weights[i].shape : bw->weights[i - nf].shape;
    }
    /* the copies read and write the model's arenas through this layer's
       specs, and read the model's step mask when this layer's input carries one */
    void bind(int64_t B) {
        for (Recurrent *r : {fw.get(), bw.get()}) {
            r->mask_in = mask_in;
            r->mask = mask;
        }
        size_t nf = fw->weights.size();
        for (size_t i = 0; i < weights.size(); i++) {
            WeightSpec &d = i < nf ? fw->weights[i] : bw->weights[i - nf];
            d.w = weights[i].w;
            d.g = weights[i].g;
        }
        fw->ws = ws;
        bw->ws = ws ? ws + fw->workspace(B) : nullptr;
        fw->on_gpu = bw->on_gpu = on_gpu; /* a GPU takes K().sgemm, not the packed U */
    }
    void initialized() override {
        bind(0);
        fw->initialized();
        bw->initialized();
    }
    int64_t workspace(int64_t B) const override { return fw->workspace(B) + bw->workspace(B) + 2 * B * so; }
    int64_t scratch(int64_t B) const override { return 2 * B * so + B * in.size(); }
    /* the merge's rows per sample: T with return_sequences (the backward
       copy's rows meet the forward copy's reversed in time), else 1 */
    int64_t merge_T() const { return fw->return_sequences ? fw->T : 1; }
    /* GPU: the copies run through K() (Recurrent::gpu_path), and the merge,
       its gradient and the dx sum are kernel-table entries */
    bool gpu_path() const override { return fw->gpu_path() && bw->gpu_path(); }
    void forward(const float *x, float *y, int64_t B, const Ctx &c) override {
        bind(B);
        float *yf = ws + fw->workspace(B) + bw->workspace(B), *yb = yf + B * so;
        fw->forward(x, yf, B, c);
        bw->forward(x, yb, B, c);
        /* yb stays in processing order: the merge reads it reversed */
        K().bidir_merge((int)merge, yf, yb, y, B, merge_T(), fw->units);
    }
    void backward(const float *x, const float *, const float *dy, float *dx, int64_t B, const Ctx &c) override {
        bind(B);
        float *yf = ws + fw->workspace(B) + bw->workspace(B), *yb = yf + B * so;
        float *dyf = sc, *dyb = sc + B * so, *dx2 = dyb + B * so;
        /* dyb in the backward copy's processing order, as yb */
        K().bidir_split((int)merge, dy, yf, yb, dyf, dyb, B, merge_T(), fw->units);
        fw->backward(x, yf, dyf, dx, B, c);
        bw->backward(x, yb, dyb, dx ? dx2 : nullptr, B, c);
        if (dx) K().add(dx, dx2, dx, B * in.size());
    }
};

typedef std::unique_ptr<Layer> (*LayerFactory)(Args &);
template <class T> static std::unique_ptr<Layer> make_layer(Args &a) { return std::unique_ptr<Layer>(new T(a)); }

/* A layer kind: how to make it, and a spec that builds it (with its input
   shape), from which the tests build, save and reload every kind. */
struct LayerKind {
    LayerFactory make;
    const char *example;
};

/* Every layer kind under its Keras class name (Input is the model's own). */
static const std::map<std::string, LayerKind> &layer_registry() {
    static const std::map<std::string, LayerKind> r = {
        {"Dense", {make_layer<Dense>, "Dense(3, input_shape=(4,))"}},
        {"Activation", {make_layer<Activation>, "Activation('tanh', input_shape=(4,))"}},
        {"Dropout", {make_layer<Dropout>, "Dropout(0.5, seed=3, input_shape=(4,))"}},
        {"Flatten", {make_layer<Flatten>, "Flatten(input_shape=(2, 3))"}},
        {"Reshape", {make_layer<Reshape>, "Reshape((3, -1), input_shape=(6,))"}},
        {"Conv1D", {make_layer<Conv1D>, "Conv1D(2, 3, padding='causal', input_shape=(8, 2))"}},
        {"Conv2D", {make_layer<Conv2D>, "Conv2D(2, (3, 2), strides=2, activation='relu', input_shape=(7, 6, 2))"}},
        {"Conv3D", {make_layer<Conv3D>, "Conv3D(2, 3, padding='same', use_bias=False, input_shape=(5, 4, 3, 2))"}},
        {"MaxPooling1D", {make_layer<MaxPooling1D>, "MaxPooling1D(3, input_shape=(8, 2))"}},
        {"MaxPooling2D", {make_layer<MaxPooling2D>, "MaxPooling2D(padding='same', input_shape=(5, 6, 2))"}},
        {"MaxPooling3D", {make_layer<MaxPooling3D>, "MaxPooling3D(input_shape=(4, 4, 4, 2))"}},
        {"AveragePooling1D", {make_layer<AveragePooling1D>, "AveragePooling1D(2, 1, input_shape=(8, 2))"}},
        {"AveragePooling2D",
         {make_layer<AveragePooling2D>, "AveragePooling2D(data_format='channels_first', input_shape=(2, 6, 6))"}},
        {"AveragePooling3D", {make_layer<AveragePooling3D>, "AveragePooling3D(input_shape=(4, 4, 4, 2))"}},
        {"GlobalAveragePooling1D", {make_layer<GlobalAveragePooling1D>, "GlobalAveragePooling1D(input_shape=(8, 2))"}},
        {"GlobalAveragePooling2D",
         {make_layer<GlobalAveragePooling2D>, "GlobalAveragePooling2D(input_shape=(5, 6, 2))"}},
        {"GlobalAveragePooling3D",
         {make_layer<GlobalAveragePooling3D>, "GlobalAveragePooling3D(input_shape=(3, 4, 5, 2))"}},
        {"GlobalMaxPooling1D", {make_layer<GlobalMaxPooling1D>, "GlobalMaxPooling1D(input_shape=(8, 2))"}},
        {"GlobalMaxPooling2D", {make_layer<GlobalMaxPooling2D>, "GlobalMaxPooling2D(input_shape=(5, 6, 2))"}},
        {"GlobalMaxPooling3D", {make_layer<GlobalMaxPooling3D>, "GlobalMaxPooling3D(input_shape=(3, 4, 5, 2))"}},
        {"BatchNormalization", {make_layer<BatchNormalization>, "BatchNormalization(input_shape=(3, 4))"}},
        {"ZeroPadding2D", {make_layer<ZeroPadding2D>, "ZeroPadding2D(((1, 2), (0, 1)), input_shape=(4, 3, 2))"}},
        {"UpSampling2D", {make_layer<UpSampling2D>, "UpSampling2D((2, 3), input_shape=(3, 2, 2))"}},
        {"Embedding", {make_layer<Embedding>, "Embedding(7, 3, input_length=5)"}},
        {"Masking", {make_layer<Masking>, "Masking(mask_value=0.0, input_shape=(None, 2))"}},
        {"SimpleRNN", {make_layer<SimpleRNN>, "SimpleRNN(3, return_sequences=True, input_shape=(4, 2))"}},
        {"LSTM", {make_layer<LSTM>, "LSTM(3, go_backwards=True, input_shape=(4, 2))"}},
        {"GRU", {make_layer<GRU>, "GRU(3, reset_after=False, return_sequences=True, input_shape=(4, 2))"}},
        {"Bidirectional",
         {make_layer<Bidirectional>, "Bidirectional(LSTM(3, return_sequences=True), merge_mode='sum', input_shape=(4, 2))"}},
    };
    return r;
}

/* Keras' other names for the same layers. */
static const std::map<std::string, std::string> &layer_aliases() {
    static const std::map<std::string, std::string> r = {
        {"Convolution1D", "Conv1D"},          {"Convolution2D", "Conv2D"},
        {"Convolution3D", "Conv3D"},          {"MaxPool1D", "MaxPooling1D"},
        {"MaxPool2D", "MaxPooling2D"},        {"MaxPool3D", "MaxPooling3D"},
        {"AvgPool1D", "AveragePooling1D"},    {"AvgPool2D", "AveragePooling2D"},
        {"AvgPool3D", "AveragePooling3D"},    {"GlobalAvgPool1D", "GlobalAveragePooling1D"},
        {"GlobalAvgPool2D", "GlobalAveragePooling2D"}, {"GlobalAvgPool3D", "GlobalAveragePooling3D"},
        {"GlobalMaxPool1D", "GlobalMaxPooling1D"}, {"GlobalMaxPool2D", "GlobalMaxPooling2D"},
        {"GlobalMaxPool3D", "GlobalMaxPooling3D"},
    };
    return r;
}

/* Kinds added at run time, after the built-in ones: the unit tests' own
   layers (a stateful test layer). Not for concurrent use. */
static std::map<std::string, LayerKind> &extra_layers() {
    static std::map<std::string, LayerKind> r;
    return r;
}
[[maybe_unused]] static void register_layer(const std::string &name, LayerKind kind) { extra_layers()[name] = kind; }

/* The kind of a layer name (or Keras alias); NULL when there is none. */
static const LayerKind *find_layer(const std::string &name) {
    auto al = layer_aliases().find(name);
    const std::string &n = al == layer_aliases().end() ? name : al->second;
    auto it = layer_registry().find(n);
    if (it != layer_registry().end()) return &it->second;
    auto ex = extra_layers().find(n);
    return ex == extra_layers().end() ? nullptr : &ex->second;
}

/* Every name nnl_add knows, sorted, comma-separated (error messages). */
static std::string layer_names() {
    std::vector<std::string> v{"Input", "TimeDistributed"}; /* TimeDistributed(Dense): Model::time_distributed */
    for (auto &kv : layer_registry()) v.push_back(kv.first);
    for (auto &kv : layer_aliases()) v.push_back(kv.first);
    for (auto &kv : extra_layers()) v.push_back(kv.first);
    std::sort(v.begin() + 1, v.end());
    std::string s;
    for (auto &n : v) s += (s.empty() ? "" : ", ") + n;
    return s;
}

/* The kinds whose layers run on a GPU (Layer::gpu_path of each example). */
[[maybe_unused]] static std::string gpu_layer_names() {
    std::string s;
    for (auto &kv : layer_registry()) {
        Spec sp = parse_spec(kv.second.example);
        Args a(sp, kv.first.c_str());
        if (kv.second.make(a)->gpu_path()) s += (s.empty() ? "" : ", ") + kv.first;
    }
    return s;
}


/* ---- Weight initialisers: one table --------------------------------------
   Every initializer, by nnlite's (Keras' snake-case) name and Keras' class,
   with the way it draws. A WeightSpec's init is a spec string: a name
   ("glorot_uniform", "GlorotUniform", "orthogonal") or a call with Keras'
   arguments ("VarianceScaling(scale=2.0, mode='fan_in')",
   "RandomUniform(minval=-0.1, maxval=0.1)"); parse_init reads it,
   init_weights draws it, init_text writes it back, and section 8's
   init_json / init_value translate it to and from Keras' JSON form.
   Draws follow Keras 3 (keras.initializers): fans of a kernel (..., in, out)
   are receptive field x in / x out; truncated normals redraw beyond 2
   standard deviations. The glorot/he/lecun families are VarianceScaling
   presets, computed exactly as before the table existed (same numbers for
   the same seed). */
enum InitKind { INIT_ZEROS, INIT_ONES, INIT_CONSTANT, INIT_UNIFORM, INIT_NORMAL, INIT_TRUNCATED, INIT_VARIANCE,
                INIT_ORTHOGONAL };
enum InitMode { FAN_IN, FAN_OUT, FAN_AVG };
enum InitDist { DIST_TRUNCATED, DIST_NORMAL, DIST_UNIFORM };
static const char *const kInitModes[] = {"fan_in", "fan_out", "fan_avg"};
static const char *const kInitDists[] = {"truncated_normal", "untruncated_normal", "uniform"};

struct InitDef {
    const char *name;  /* nnlite's name = Keras' string alias */
    const char *keras; /* Keras' class, as JSON's class_name */
    InitKind kind;
    bool preset;       /* a fixed VarianceScaling: no arguments but seed */
    double scale;      /* VarianceScaling presets */
    InitMode mode;
    InitDist dist;
};
static const InitDef kInitTable[] = {
    {"glorot_uniform", "GlorotUniform", INIT_VARIANCE, true, 1.0, FAN_AVG, DIST_UNIFORM},
    {"glorot_normal", "GlorotNormal", INIT_VARIANCE, true, 1.0, FAN_AVG, DIST_TRUNCATED},
    {"he_uniform", "HeUniform", INIT_VARIANCE, true, 2.0, FAN_IN, DIST_UNIFORM},
    {"he_normal", "HeNormal", INIT_VARIANCE, true, 2.0, FAN_IN, DIST_TRUNCATED},
    {"lecun_uniform", "LecunUniform", INIT_VARIANCE, true, 1.0, FAN_IN, DIST_UNIFORM},
    {"lecun_normal", "LecunNormal", INIT_VARIANCE, true, 1.0, FAN_IN, DIST_TRUNCATED},
    {"variance_scaling", "VarianceScaling", INIT_VARIANCE, false, 1.0, FAN_IN, DIST_TRUNCATED},
    {"orthogonal", "Orthogonal", INIT_ORTHOGONAL, false, 0, FAN_IN, DIST_TRUNCATED},
    {"zeros", "Zeros", INIT_ZEROS, false, 0, FAN_IN, DIST_TRUNCATED},
    {"ones", "Ones", INIT_ONES, false, 0, FAN_IN, DIST_TRUNCATED},
    {"constant", "Constant", INIT_CONSTANT, false, 0, FAN_IN, DIST_TRUNCATED},
    {"random_uniform", "RandomUniform", INIT_UNIFORM, false, 0, FAN_IN, DIST_TRUNCATED},
    {"random_normal", "RandomNormal", INIT_NORMAL, false, 0, FAN_IN, DIST_TRUNCATED},
    {"truncated_normal", "TruncatedNormal", INIT_TRUNCATED, false, 0, FAN_IN, DIST_TRUNCATED},
};

/* One initializer with its arguments. a, b: constant (value); uniform
   (minval, maxval); normal and truncated (mean, stddev); orthogonal (gain);
   variance scaling (scale). */
struct Init {
    const InitDef *def = nullptr;
    double a = 0, b = 0;
    InitMode mode = FAN_IN;
    InitDist dist = DIST_TRUNCATED;
    bool operator==(const Init &o) const {
        return def == o.def && a == o.a && b == o.b && mode == o.mode && dist == o.dist;
    }
};

static std::string init_known() {
    std::string s;
    for (auto &d : kInitTable) s += std::string(s.empty() ? "" : ", ") + d.name;
    return s;
}

/* The table entry for a Keras class ("HeNormal") or an nnlite name in any case. */
static const InitDef *init_def(const std::string &name) {
    /* Keras 3 writes its Orthogonal class as OrthogonalInitializer */
    std::string l = name == "OrthogonalInitializer" ? std::string("orthogonal") : lower(name);
    /* Keras' short aliases ('uniform' is Embedding's default) */
    if (l == "uniform") l = "random_uniform";
    if (l == "normal") l = "random_normal";
    for (auto &d : kInitTable)
        if (name == d.keras || l == d.name) return &d;
    return nullptr;
}

/* An initializer with its Keras defaults. */
static Init init_defaults(const InitDef &d) {
    Init in;
    in.def = &d;
    switch (d.kind) {
    case INIT_UNIFORM: in.a = -0.05, in.b = 0.05; break;
    case INIT_NORMAL:
    case INIT_TRUNCATED: in.a = 0, in.b = 0.05; break;
    case INIT_ORTHOGONAL: in.a = 1.0; break;
    case INIT_VARIANCE: in.a = d.scale, in.mode = d.mode, in.dist = d.dist; break;
    default: break;
    }
    return in;
}

/* Checks an initializer's arguments (finite, scale > 0, stddev >= 0, minval
   <= maxval); throws naming owner. */
static void check_init(const Init &in, const char *owner) {
    const char *k = in.def->keras;
    NNL_REQUIRE(std::isfinite(in.a) && std::isfinite(in.b), NNL_ERR_ARGUMENT, "%s: %s's arguments must be finite",
                owner, k);
    if (in.def->kind == INIT_VARIANCE)
        NNL_REQUIRE(in.a > 0, NNL_ERR_ARGUMENT, "%s: %s: scale must be positive, got %g", owner, k, in.a);
    if (in.def->kind == INIT_NORMAL || in.def->kind == INIT_TRUNCATED)
        NNL_REQUIRE(in.b >= 0, NNL_ERR_ARGUMENT, "%s: %s: stddev must be >= 0, got %g", owner, k, in.b);
    if (in.def->kind == INIT_UNIFORM)
        NNL_REQUIRE(in.a <= in.b, NNL_ERR_ARGUMENT, "%s: %s: minval %g is above maxval %g", owner, k, in.a, in.b);
}

/* mode / distribution strings as Keras reads them (Keras 2's 'normal' meant
   the truncated normal, as tf.keras still reads it). */
static InitMode init_mode(const std::string &m, const char *owner) {
    for (int i = 0; i < 3; i++)
        if (lower(m) == kInitModes[i]) return (InitMode)i;
    raise(NNL_ERR_ARGUMENT, "%s: VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', got '%s'", owner,
          m.c_str());
}
static InitDist init_dist(const std::string &d, const char *owner) {
    std::string l = lower(d);
    if (l == "normal") return DIST_TRUNCATED;
    for (int i = 0; i < 3; i++)
        if (l == kInitDists[i]) return (InitDist)i;
    raise(NNL_ERR_ARGUMENT, "%s: VarianceScaling: distribution must be 'truncated_normal', 'untruncated_normal', "
          "'uniform' (or Keras 2's 'normal'), got '%s'", owner, d.c_str());
}

/* A spec string -> Init: "he_normal", "Orthogonal(gain=0.5)",
   "VarianceScaling(2.0, mode='fan_out', distribution='uniform')". */
static Init parse_init(const std::string &text, const char *owner) {
    Spec sp = parse_spec(text.c_str());
    const InitDef *d = init_def(sp.name);
    NNL_REQUIRE(d, NNL_ERR_ARGUMENT, "%s: unknown initializer '%s' (known: %s, or their Keras class names)", owner,
                text.c_str(), init_known().c_str());
    Init in = init_defaults(*d);
    std::string who = std::string(owner) + ": " + d->keras;
    Args a(sp, who.c_str());
    switch (d->kind) {
    case INIT_CONSTANT: in.a = a.num("value", 0, 0.0); break;
    case INIT_UNIFORM: in.a = a.num("minval", 0, in.a), in.b = a.num("maxval", 1, in.b); break;
    case INIT_NORMAL:
    case INIT_TRUNCATED: in.a = a.num("mean", 0, in.a), in.b = a.num("stddev", 1, in.b); break;
    case INIT_ORTHOGONAL: in.a = a.num("gain", 0, in.a); break;
    case INIT_VARIANCE:
        if (!d->preset) {
            in.a = a.num("scale", 0, in.a);
            in.mode = init_mode(a.str("mode", 1, kInitModes[in.mode]), owner);
            in.dist = init_dist(a.str("distribution", 2, kInitDists[in.dist]), owner);
        }
        break;
    default: break;
    }
    bool seeded = d->kind != INIT_ZEROS && d->kind != INIT_ONES && d->kind != INIT_CONSTANT;
    if (seeded) {
        int pos = d->kind == INIT_VARIANCE ? (d->preset ? 0 : 3) : d->kind == INIT_ORTHOGONAL ? 1 : 2;
        const Value *s = a.get("seed", pos);
        NNL_REQUIRE(!s || s->kind == Value::NONE, NNL_ERR_UNSUPPORTED,
                    "%s: %s: seed=%s is not supported (initial weights come from the model seed: "
                    "nnl_model_set_seed)", owner, d->keras, s ? s->repr().c_str() : "");
    }
    a.done();
    check_init(in, owner);
    return in;
}

/* A number in a spec string: the shortest text that reads back exactly,
   with '.' whatever the C locale says. */
static std::string spec_number(double v) {
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, nullptr) == v) break;
    }
    std::string s = buf;
    for (auto &c : s)
        if (c == ',') c = '.';
    return s;
}

/* Init -> its spec string: the name when the arguments are Keras' defaults
   ("random_uniform"), else Keras' call ("RandomUniform(minval=-0.1, maxval=0.1)").
   parse_init(init_text(x)) == x. */
static std::string init_text(const Init &in) {
    const InitDef &d = *in.def;
    if (in == init_defaults(d)) return d.name;
    std::string s = std::string(d.keras) + "(";
    switch (d.kind) {
    case INIT_CONSTANT: s += "value=" + spec_number(in.a); break;
    case INIT_UNIFORM: s += "minval=" + spec_number(in.a) + ", maxval=" + spec_number(in.b); break;
    case INIT_NORMAL:
    case INIT_TRUNCATED: s += "mean=" + spec_number(in.a) + ", stddev=" + spec_number(in.b); break;
    case INIT_ORTHOGONAL: s += "gain=" + spec_number(in.a); break;
    case INIT_VARIANCE:
        s += "scale=" + spec_number(in.a) + ", mode='" + kInitModes[in.mode] + "', distribution='" +
             kInitDists[in.dist] + "'";
        break;
    default: break;
    }
    return s + ")";
}

/* A weight's initializer, checked against its shape before the layer joins
   the model (Orthogonal needs a matrix, as in Keras). */
static Init weight_init(const std::string &text, const Shape &s, const char *owner, const std::string &weight) {
    Init in = parse_init(text, owner);
    if (in.def->kind == INIT_ORTHOGONAL) {
        NNL_REQUIRE(s.rank >= 2, NNL_ERR_ARGUMENT,
                    "%s: weight '%s' of shape %s cannot be initialised by Orthogonal (it needs 2 or more dimensions)",
                    owner, weight.c_str(), s.str(false).c_str());
        /* its QR costs ~4 r c min(r, c) flops: a bound, so that no file can
           ask for hours of work (6000 x 6000 is within it, ~2 minutes) */
        double r = (double)s.size() / s.last(), c = (double)s.last();
        NNL_REQUIRE(r * c * std::min(r, c) <= 274877906944.0, NNL_ERR_UNSUPPORTED,
                    "%s: weight '%s' of shape %s is too large for Orthogonal (rows x columns x min(rows, columns) "
                    "must be at most 2^38)", owner, weight.c_str(), s.str(false).c_str());
    }
    return in;
}

/* Keras' Orthogonal: a (max(r, c), min(r, c)) standard normal matrix, its
   reduced QR, Q's columns times the signs of R's diagonal (which makes Q
   unique), transposed when r < c, times gain; r = product of all but the
   last dimension, c = the last.
   Blocked Householder QR in double (LAPACK's dgeqrf/dorgqr scheme): panels
   of NB reflectors H = I - beta v v^T are combined into I - V T V^T, so the
   rest of the matrix is updated once per panel in GEMM-like loops that run
   along rows (vectorised, threads over columns) instead of once per
   reflector: about 4 r c min(r, c) flops at memory-friendly speed. */
static void init_orthogonal(float *w, const Shape &s, double gain, Rng &rng) {
    const int64_t NB = 32;
    int64_t r = s.size() / s.last(), c = s.last();
    int64_t M = std::max(r, c), N = std::min(r, c);
    std::vector<double> A((size_t)(M * N)); /* A[i * N + j], drawn as Keras' (M, N) array */
    for (auto &x : A) x = rng.normal();
    /* v_k lives in column k of A, rows k..M-1 (R's part above it) */
    auto V = [&](int64_t i, int64_t k) { return A[(size_t)(i * N + k)]; };
    std::vector<double> beta((size_t)N, 0.0), sign((size_t)N, 1.0), T((size_t)(N * NB), 0.0);
    /* X[k0:, j0:] = (I - V T' V^T) X[k0:, j0:] for the panel at k0 (nb
       reflectors); T' = T^T applies H_{k0+nb-1} ... H_k0 (the factorisation),
       T' = T applies H_k0 ... H_{k0+nb-1} (forming Q) */
    auto apply_panel = [&](std::vector<double> &X, int64_t k0, int64_t nb, int64_t j0, bool transpose) {
        int64_t n2 = N - j0;
        if (n2 <= 0) return;
        const double *Tp = &T[(size_t)(k0 * NB)]; /* T[p * NB + q] */
        std::vector<double> W((size_t)(nb * n2), 0.0);
        par_for(n2, (M - k0) * n2 * nb, [&](int64_t lo, int64_t hi) {
            for (int64_t i = k0; i < M; i++) { /* W = V^T X */
                const double *x = &X[(size_t)(i * N + j0)];
                for (int64_t p = 0; p < nb && k0 + p <= i; p++) {
                    double v = V(i, k0 + p), *wp = &W[(size_t)(p * n2)];
                    for (int64_t j = lo; j < hi; j++) wp[j] += v * x[j];
                }
            }
            std::vector<double> col((size_t)nb);
            for (int64_t j = lo; j < hi; j++) { /* W = T' W, one column at a time */
                for (int64_t p = 0; p < nb; p++) col[(size_t)p] = W[(size_t)(p * n2 + j)];
                for (int64_t p = 0; p < nb; p++) {
                    double sum = 0;
                    if (transpose)
                        for (int64_t q = 0; q <= p; q++) sum += Tp[q * NB + p] * col[(size_t)q];
                    else
                        for (int64_t q = p; q < nb; q++) sum += Tp[p * NB + q] * col[(size_t)q];
                    W[(size_t)(p * n2 + j)] = sum;
                }
            }
            for (int64_t i = k0; i < M; i++) { /* X -= V W */
                double *x = &X[(size_t)(i * N + j0)];
                for (int64_t p = 0; p < nb && k0 + p <= i; p++) {
                    double v = V(i, k0 + p);
                    const double *wp = &W[(size_t)(p * n2)];
                    for (int64_t j = lo; j < hi; j++) x[j] -= v * wp[j];
                }
            }
        });
    };
    for (int64_t k0 = 0; k0 < N; k0 += NB) {
        int64_t nb = std::min(NB, N - k0), k1 = k0 + nb;
        for (int64_t k = k0; k < k1; k++) { /* the panel, one reflector at a time */
            double norm = 0;
            for (int64_t i = k; i < M; i++) norm += V(i, k) * V(i, k);
            norm = std::sqrt(norm);
            double akk = V(k, k), alpha = akk >= 0 ? -norm : norm; /* R[k][k] = alpha */
            sign[(size_t)k] = alpha < 0 ? -1.0 : 1.0;
            A[(size_t)(k * N + k)] = akk - alpha;
            double vv = norm * norm - akk * akk + (akk - alpha) * (akk - alpha); /* |v|^2 */
            beta[(size_t)k] = vv > 0 ? 2.0 / vv : 0.0;
            for (int64_t j = k + 1; j < k1; j++) { /* H_k on the panel's later columns */
                double dot = 0;
                for (int64_t i = k; i < M; i++) dot += V(i, k) * V(i, j);
                dot *= beta[(size_t)k];
                for (int64_t i = k; i < M; i++) A[(size_t)(i * N + j)] -= dot * V(i, k);
            }
        }
        /* T (upper triangular) with H_k0 ... H_{k1-1} = I - V T V^T (LAPACK's dlarft) */
        double *Tp = &T[(size_t)(k0 * NB)];
        for (int64_t p = 0; p < nb; p++) {
            double b = beta[(size_t)(k0 + p)];
            Tp[p * NB + p] = b;
            std::vector<double> z((size_t)p, 0.0);
            for (int64_t q = 0; q < p; q++)
                for (int64_t i = k0 + p; i < M; i++) z[(size_t)q] += V(i, k0 + q) * V(i, k0 + p);
            for (int64_t q = 0; q < p; q++) {
                double sum = 0;
                for (int64_t l = q; l < p; l++) sum += Tp[q * NB + l] * z[(size_t)l];
                Tp[q * NB + p] = -b * sum;
            }
        }
        apply_panel(A, k0, nb, k1, true); /* the rest of the matrix, once per panel */
    }
    /* Q = H_0 ... H_{N-1} [I; 0], panels from the last; columns before a
       panel are still e_j there, which it leaves alone */
    std::vector<double> Q((size_t)(M * N), 0.0);
    for (int64_t j = 0; j < N; j++) Q[(size_t)(j * N + j)] = 1.0;
    for (int64_t k0 = (N - 1) / NB * NB; k0 >= 0; k0 -= NB) apply_panel(Q, k0, std::min(NB, N - k0), k0, false);
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) { /* W = Q (sign-corrected), or its transpose when r < c */
            double q = r >= c ? Q[(size_t)(i * N + j)] * sign[(size_t)j] : Q[(size_t)(j * N + i)] * sign[(size_t)i];
            w[i * c + j] = (float)(gain * q);
        }
}

static void init_weights(float *w, const Shape &s, const Init &in, Rng &rng) {
    int64_t n = s.size();
    double fan_in = s.rank >= 2 ? (double)s.size() / s.last() : (double)n;
    double fan_out = s.rank >= 2 ? (double)s.size() / s.d[s.rank - 2] : (double)n;
    if (s.rank > 2) { /* convolution kernels (..., in, out): receptive field times channels */
        double rf = (double)s.size() / (s.d[s.rank - 2] * s.d[s.rank - 1]);
        fan_in = rf * s.d[s.rank - 2];
        fan_out = rf * s.d[s.rank - 1];
    }
    auto uniform = [&](double limit) {
        for (int64_t i = 0; i < n; i++) w[i] = (float)((rng.uniform() * 2 - 1) * limit);
    };
    auto truncated = [&](double mean, double stddev) { /* Keras' truncated normal: redraw beyond 2 stddev */
        for (int64_t i = 0; i < n; i++) {
            float z;
            do z = rng.normal();
            while (std::fabs(z) > 2.f);
            w[i] = (float)(mean + z * stddev);
        }
    };
    /* 0.8796...: stddev of a standard normal truncated to [-2, 2] */
    const double tn = 0.87962566103423978;
    switch (in.def->kind) {
    case INIT_ZEROS: std::fill(w, w + n, 0.f); break;
    case INIT_ONES: std::fill(w, w + n, 1.f); break;
    case INIT_CONSTANT: std::fill(w, w + n, (float)in.a); break;
    case INIT_UNIFORM:
        if (in.a == -in.b) {
            uniform(in.b);
        } else {
            for (int64_t i = 0; i < n; i++) w[i] = (float)(in.a + (in.b - in.a) * rng.uniform());
        }
        break;
    case INIT_NORMAL:
        for (int64_t i = 0; i < n; i++) w[i] = (float)in.a + (float)in.b * rng.normal();
        break;
    case INIT_TRUNCATED: truncated(in.a, in.b); break;
    case INIT_ORTHOGONAL: init_orthogonal(w, s, in.a, rng); break;
    case INIT_VARIANCE: {
        /* Keras: scale / max(1, fan); the limit sqrt(3 scale / fan) */
        double fan = in.mode == FAN_IN ? fan_in : in.mode == FAN_OUT ? fan_out : (fan_in + fan_out) / 2.0;
        fan = std::max(1.0, fan);
        if (in.dist == DIST_UNIFORM) uniform(std::sqrt(3.0 * in.a / fan));
        else if (in.dist == DIST_TRUNCATED) truncated(0.0, std::sqrt(in.a / fan) / tn);
        else for (int64_t i = 0; i < n; i++) w[i] = (float)(rng.normal() * std::sqrt(in.a / fan));
        break;
    }
    }
}

} // namespace nnl

/* ========================================================================
   4  Losses and metrics
   Targets arrive as float rows: class ids for the sparse losses (one per
   position), else one value per output element. Losses return the mean
   over the batch (Keras' sum_over_batch_size) and write dL/dy, or dL/dz
   for a fused softmax/sigmoid output, already divided by the batch size.
   ======================================================================== */
namespace nnl {

enum LossKind { LOSS_SPARSE_CCE, LOSS_CCE, LOSS_BCE, LOSS_MSE, LOSS_MAE, LOSS_HUBER };
static const float PROB_EPS = 1e-7f; /* Keras' backend epsilon */

/* ---- Loss kernels (every vector type of section 2) ----
   Each returns the sum of its per-row or per-element losses (in double)
   and writes dL/dy times `scale` into dy when dy is not NULL. */

/* Cross-entropy from logits over rows of C: sparse (t: a class id per row)
   or categorical (t: rows of C targets). log_softmax = z - m - log(sum
   exp(z - m)) with m the row's maximum: stable for any logits. */
struct XentLogitsK {
    template <class V>
    static double run(bool sparse, const float *z, const float *t, int64_t rows, int64_t C, float scale, float *dy) {
        double total = 0;
        for (int64_t r = 0; r < rows; r++) {
            const float *p = z + r * C, *tr = sparse ? nullptr : t + r * C;
            float *d = dy ? dy + r * C : nullptr;
            V mv = V::set(-INFINITY);
            simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE { mv = vmax(V::load(p + j, k, -INFINITY), mv); });
            float mf = hmax(mv);
            V m = V::set(mf);
            typename V::Acc s = simd::acc_zero<V>(), ts = s, tp = s;
            simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE {
                V e = keep(k, vexp(V::load(p + j, k) - m));
                if (d) e.store(d + j, k); /* exp(z - m), scaled below */
                simd::acc_add(s, e);
                if (!sparse) {
                    V tv = V::load(tr + j, k);
                    simd::acc_add(ts, tv);
                    simd::acc_fma(tp, tv, V::load(p + j, k));
                }
            });
            double S = simd::acc_total(s), lse = mf + std::log(S);
            if (sparse) {
                int64_t c = (int64_t)t[r];
                total += lse - p[c];
                if (d) {
                    V f = V::set((float)(scale / S));
                    simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE { (V::load(d + j, k) * f).store(d + j, k); });
                    d[c] -= scale;
                }
            } else { /* sum_j t_j (lse - z_j) */
                double tsum = simd::acc_total(ts);
                total += lse * tsum - simd::acc_total(tp);
                if (d) {
                    V f = V::set((float)(tsum / S)), sc = V::set(scale);
                    simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE {
                        ((V::load(d + j, k) * f - V::load(tr + j, k)) * sc).store(d + j, k);
                    });
                }
            }
        }
        return total;
    }
};

/* Cross-entropy from probabilities: rows normalised to sum 1, then clipped
   to [eps, 1 - eps] as Keras does (zero gradient where clipped). */
struct XentProbsK {
    template <class V>
    static double run(bool sparse, const float *y, const float *t, int64_t rows, int64_t C, float scale, float *dy) {
        double total = 0;
        const V lo = V::set(PROB_EPS), hi = V::set(1.f - PROB_EPS), zero = V::set(0.f);
        for (int64_t r = 0; r < rows; r++) {
            const float *p = y + r * C, *tr = sparse ? nullptr : t + r * C;
            float *d = dy ? dy + r * C : nullptr;
            typename V::Acc s = simd::acc_zero<V>(), ts = s, l = s;
            simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE {
                simd::acc_add(s, V::load(p + j, k));
                if (!sparse) simd::acc_add(ts, V::load(tr + j, k));
            });
            double S = simd::acc_total(s);
            if (S <= 0) S = 1;
            if (sparse) {
                int64_t c = (int64_t)t[r];
                double q = p[c] / S, qc = std::min(std::max(q, (double)PROB_EPS), 1.0 - PROB_EPS);
                total -= std::log(qc);
                if (d) {
                    /* d/dp_j of -log(p_c / s) = 1/s - [j==c]/p_c; zero where clipped */
                    bool live = q > PROB_EPS && q < 1.0 - PROB_EPS;
                    V f = V::set(live ? (float)(1.0 / S) * scale : 0.f);
                    simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE { f.store(d + j, k); });
                    if (live) d[c] -= (float)(1.0 / p[c]) * scale;
                }
                continue;
            }
            double tsum = simd::acc_total(ts);
            V inv = V::set((float)(1.0 / S)), ts_s = V::set((float)(tsum / S)), sc = V::set(scale);
            simd::loop<V>(C, [&](int64_t j, const auto &k) NNL_INLINE {
                V pj = V::load(p + j, k), tv = V::load(tr + j, k), q = pj * inv;
                simd::acc_add(l, tv * vlog(vmin(hi, vmax(lo, q)))); /* t = 0 outside the row: adds 0 */
                if (d) {
                    auto live = gt(q, lo) & lt(q, hi);
                    ((ts_s - sel(live, tv / pj, zero)) * sc).store(d + j, k);
                }
            });
            total -= simd::acc_total(l);
        }
        return total;
    }
};

/* The elementwise losses: binary cross-entropy (from logits or
   probabilities), mean squared and absolute error, Huber. */
struct PointLossK {
    template <class V>
    static double run(LossKind kind, bool logits, float delta, const float *y, const float *t, int64_t n, float scale,
                      float *dy) {
        typename V::Acc acc = simd::acc_zero<V>();
        const V zero = V::set(0.f), one = V::set(1.f), dl = V::set(delta), sc = V::set(scale);
        /* f(v, target, mask) accumulates the losses and returns the gradients */
        auto each = [&](auto f) NNL_INLINE {
            simd::loop<V>(n, [&](int64_t i, const auto &k) NNL_INLINE {
                V g = f(V::load(y + i, k), V::load(t + i, k), k);
                if (dy) (g * sc).store(dy + i, k);
            });
        };
        switch (kind) {
        case LOSS_BCE:
            if (logits) /* max(z, 0) - z t + log(1 + exp(-|z|)) */
                each([&](const V &v, const V &tv, const auto &k) NNL_INLINE {
                    simd::acc_add(acc, keep(k, vmax(zero, v) - v * tv + vlog1p(vexp(-vabs(v)))));
                    return vsigmoid(v) - tv;
                });
            else
                each([&](const V &v, const V &tv, const auto &k) NNL_INLINE {
                    V lo = V::set(PROB_EPS), hi = V::set(1.f - PROB_EPS), q = vmin(hi, vmax(lo, v));
                    simd::acc_add(acc, keep(k, -(tv * vlog(q) + (one - tv) * vlog1p(-q))));
                    V g = sel(gt(v, lo) & lt(v, hi), (q - tv) / (q * (one - q)), zero);
                    return sel(isnan_(v), v, g);
                });
            break;
        case LOSS_MSE:
            each([&](const V &v, const V &tv, const auto &k) NNL_INLINE {
                V e = keep(k, v - tv);
                simd::acc_fma(acc, e, e);
                return V::set(2.f) * e;
            });
            break;
        case LOSS_MAE:
            each([&](const V &v, const V &tv, const auto &k) NNL_INLINE {
                V e = v - tv;
                simd::acc_add(acc, keep(k, vabs(e)));
                return sel(isnan_(e), e, sel(gt(v, tv), one, sel(lt(v, tv), -one, zero)));
            });
            break;
        default: /* Huber */
            each([&](const V &v, const V &tv, const auto &k) NNL_INLINE {
                V e = v - tv, a = vabs(e);
                auto quad = le(a, dl);
                simd::acc_add(acc, keep(k, sel(quad, V::set(0.5f) * e * e, dl * (a - V::set(0.5f) * dl))));
                return sel(isnan_(e), e, sel(quad, e, sel(gt(e, zero), dl, -dl)));
            });
        }
        return simd::acc_total(acc);
    }
};

struct Loss {
    LossKind kind = LOSS_MSE;
    bool from_logits = false;
    float delta = 1.f;
    std::string name;
    /* Fusion state set by compile: the last layer applies softmax/sigmoid and
       the loss works from its logits. */
    Act fused = ACT_LINEAR;

    bool sparse() const { return kind == LOSS_SPARSE_CCE; }
    bool crossentropy() const { return kind == LOSS_SPARSE_CCE || kind == LOSS_CCE || kind == LOSS_BCE; }

    /* y: outputs (B, D) where D = classes * positions; t: targets; z: logits
       or NULL. Returns the summed per-sample loss (divide by B for the mean);
       dy may be NULL (evaluation). */
    double run(const float *y, const float *z, const float *t, int64_t B, int64_t D, int64_t C, float *dy,
               const float *mask, int64_t P) const {
        if (!mask) return run(y, z, t, B, D, C, dy);
        /* A step mask (B, P) over the output's first axis (Keras' masked
           loss): each kept position's loss as one sample of D / P values,
           averaged over the kept positions of the batch; masked positions
           have no loss and a zero gradient. Returned as the mean times B
           (the caller divides by B). */
        int64_t R = D / P, tr = sparse() ? R / C : R, kept = 0;
        for (int64_t q = 0; q < B * P; q++) kept += mask[q] != 0.f;
        if (dy) std::fill(dy, dy + B * D, 0.f);
        if (!kept) return 0;
        double total = 0;
        for (int64_t q = 0; q < B * P; q++) {
            if (mask[q] == 0.f) continue;
            float *d = dy ? dy + q * R : nullptr;
            total += run(y + q * R, z ? z + q * R : nullptr, t + q * tr, 1, R, C, d);
            if (d)
                for (int64_t j = 0; j < R; j++) d[j] /= (float)kept;
        }
        return total / (double)kept * (double)B;
    }
    double run(const float *y, const float *z, const float *t, int64_t B, int64_t D, int64_t C, float *dy) const {
        bool logits = from_logits || fused != ACT_LINEAR;
        const float *src = (logits && z) ? z : y; /* when from_logits, y are the logits themselves */
        float invB = 1.f / (float)B;
        if (kind == LOSS_SPARSE_CCE || kind == LOSS_CCE) {
            int64_t rows = B * (D / C), per = D / C;
            float scale = invB / (float)per; /* mean over positions too */
            bool sp = kind == LOSS_SPARSE_CCE;
            return (logits ? simd::run<XentLogitsK>(sp, src, t, rows, C, scale, dy)
                           : simd::run<XentProbsK>(sp, src, t, rows, C, scale, dy)) /
                   (double)per;
        }
        float scale = invB / (float)D; /* mean over the last axes, then the batch */
        return simd::run<PointLossK>(kind, logits, delta, src, t, B * D, scale, dy) / (double)D;
    }
};

static Loss make_loss(const std::string &text) {
    Spec sp = parse_spec(text.c_str());
    Args a(sp, "loss");
    std::string n = lower(sp.name);
    Loss L;
    if (n == "sparse_categorical_crossentropy" || n == "sparsecategoricalcrossentropy") {
        L.kind = LOSS_SPARSE_CCE;
        L.name = "sparse_categorical_crossentropy";
    } else if (n == "categorical_crossentropy" || n == "categoricalcrossentropy") {
        L.kind = LOSS_CCE;
        L.name = "categorical_crossentropy";
    } else if (n == "binary_crossentropy" || n == "binarycrossentropy") {
        L.kind = LOSS_BCE;
        L.name = "binary_crossentropy";
    } else if (n == "mean_squared_error" || n == "mse" || n == "meansquarederror") {
        L.kind = LOSS_MSE;
        L.name = "mean_squared_error";
    } else if (n == "mean_absolute_error" || n == "mae" || n == "meanabsoluteerror") {
        L.kind = LOSS_MAE;
        L.name = "mean_absolute_error";
    } else if (n == "huber" || n == "huber_loss") {
        L.kind = LOSS_HUBER;
        L.name = "huber";
    } else {
        raise(NNL_ERR_ARGUMENT,
              "unknown loss '%s' (known: sparse_categorical_crossentropy, categorical_crossentropy, "
              "binary_crossentropy, mean_squared_error, mean_absolute_error, huber)",
              sp.name.c_str());
    }
    if (L.crossentropy()) L.from_logits = a.flag("from_logits", 0, false);
    if (L.kind == LOSS_HUBER) {
        L.delta = (float)a.num("delta", 0, 1.0);
        NNL_REQUIRE(L.delta > 0, NNL_ERR_ARGUMENT, "huber: delta must be positive");
    }
    a.done();
    return L;
}

enum MetricKind { M_SPARSE_ACC, M_CAT_ACC, M_BIN_ACC, M_SPARSE_TOPK, M_TOPK, M_MSE, M_MAE, M_PERPLEXITY };

struct Metric {
    MetricKind kind;
    std::string name;
    int k = 5;
    float threshold = 0.5f;
    /* perplexity is exp of the mean cross-entropy of the epoch (or of the
       evaluated data): its per-batch sum is the loss's own (the model adds
       it, no second pass over the outputs), and the exp is taken of the
       mean (final), not averaged over batches. */
    double final_value(double mean) const { return kind == M_PERPLEXITY ? std::exp(mean) : mean; }
    /* Sum over the batch of the per-sample metric (mean over positions). */
    /* With a step mask (B, P): the sum over the kept positions, each one
       sample; the caller divides by the kept positions of all its batches
       (Keras' metrics take the mask as sample weights: the mean over every
       kept position of the epoch, not a mean of batch means). */
    double run(const float *y, const float *t, int64_t B, int64_t D, int64_t C, const float *mask, int64_t P) const {
        if (!mask) return run(y, t, B, D, C);
        int64_t R = D / P, tr = (kind == M_SPARSE_ACC || kind == M_SPARSE_TOPK) ? R / C : R;
        double total = 0;
        for (int64_t q = 0; q < B * P; q++)
            if (mask[q] != 0.f) total += run(y + q * R, t + q * tr, 1, R, C);
        return total;
    }
    double run(const float *y, const float *t, int64_t B, int64_t D, int64_t C) const {
        double total = 0;
        if (kind == M_PERPLEXITY) return 0; /* Model::loss_and_grad adds the loss sum */
        if (kind == M_MSE || kind == M_MAE) {
            for (int64_t i = 0; i < B * D; i++) {
                double e = (double)y[i] - t[i];
                total += (kind == M_MSE ? e * e : std::fabs(e)) / D;
            }
            return total;
        }
        if (kind == M_BIN_ACC) {
            for (int64_t i = 0; i < B * D; i++) total += ((y[i] > threshold ? 1.f : 0.f) == (t[i] > 0.5f ? 1.f : 0.f)) ? 1.0 / D : 0.0;
            return total;
        }
        int64_t per = D / C, rows = B * per;
        for (int64_t r = 0; r < rows; r++) {
            const float *p = y + r * C;
            int64_t c;
            if (kind == M_SPARSE_ACC || kind == M_SPARSE_TOPK) {
                c = (int64_t)t[r];
            } else { /* one-hot: the true class is the argmax of the target row */
                const float *tr = t + r * C;
                c = std::max_element(tr, tr + C) - tr;
            }
            bool hit;
            if (kind == M_SPARSE_ACC || kind == M_CAT_ACC) {
                hit = (std::max_element(p, p + C) - p) == c;
            } else { /* in the top k: fewer than k classes score higher */
                int64_t above = 0;
                for (int64_t j = 0; j < C; j++) above += p[j] > p[c];
                hit = above < k;
            }
            total += hit ? 1.0 / per : 0.0;
        }
        return total;
    }
};

static Metric make_metric(const std::string &text, const Loss &L, int64_t out_last) {
    Spec sp = parse_spec(text.c_str());
    Args a(sp, "metric");
    std::string n = lower(sp.name);
    Metric m;
    m.name = n;
    if (n == "accuracy" || n == "acc") {
        m.name = n;
        if (L.kind == LOSS_SPARSE_CCE)
            m.kind = M_SPARSE_ACC;
        else if (L.kind == LOSS_CCE)
            m.kind = M_CAT_ACC;
        else if (L.kind == LOSS_BCE || out_last == 1)
            m.kind = M_BIN_ACC;
        else
            m.kind = M_CAT_ACC;
    } else if (n == "sparse_categorical_accuracy") {
        m.kind = M_SPARSE_ACC;
    } else if (n == "categorical_accuracy") {
        m.kind = M_CAT_ACC;
    } else if (n == "binary_accuracy") {
        m.kind = M_BIN_ACC;
        m.threshold = (float)a.num("threshold", 0, 0.5);
    } else if (n == "top_k_categorical_accuracy" || n == "sparse_top_k_categorical_accuracy") {
        m.kind = n[0] == 's' ? M_SPARSE_TOPK : M_TOPK;
        int64_t k = a.integer("k", 0, 5);
        NNL_REQUIRE(k >= 1 && k <= INT32_MAX, NNL_ERR_ARGUMENT, "nnl_compile: metric %s: k must be >= 1, got %lld",
                    n.c_str(), (long long)k);
        m.k = (int)k;
    } else if (n == "mse" || n == "mean_squared_error") {
        m.kind = M_MSE;
        m.name = "mse";
    } else if (n == "mae" || n == "mean_absolute_error") {
        m.kind = M_MAE;
        m.name = "mae";
    } else if (n == "perplexity") {
        /* exp(mean cross-entropy): defined for the categorical cross-entropies only */
        NNL_REQUIRE(L.kind == LOSS_SPARSE_CCE || L.kind == LOSS_CCE, NNL_ERR_ARGUMENT,
                    "nnl_compile: metric 'perplexity' is exp of the mean cross-entropy; it needs the loss "
                    "sparse_categorical_crossentropy or categorical_crossentropy, not %s",
                    L.name.c_str());
        m.kind = M_PERPLEXITY;
        a.done();
        return m;
    } else {
        raise(NNL_ERR_ARGUMENT,
              "unknown metric '%s' (known: accuracy, sparse_categorical_accuracy, categorical_accuracy, "
              "binary_accuracy, top_k_categorical_accuracy, sparse_top_k_categorical_accuracy, mse, mae, "
              "perplexity)",
              sp.name.c_str());
    }
    if (m.kind == M_BIN_ACC && L.kind == LOSS_BCE && L.from_logits) m.threshold = 0.f; /* logits: sign */
    /* A metric reads the targets the loss takes: one class id per position
       for sparse_categorical_crossentropy (B * D / C values), one value per
       output for every other loss (B * D). A metric made for the other kind
       is refused here, naming both: with class ids, mse, mae or
       binary_accuracy would read B * D values from a buffer of B / C (Keras
       broadcasts the id against every output: a number without meaning);
       with one-hot or value targets, a sparse metric would read an output
       value as a class id. */
    bool wants_ids = m.kind == M_SPARSE_ACC || m.kind == M_SPARSE_TOPK;
    if (wants_ids && !L.sparse())
        raise(NNL_ERR_ARGUMENT,
              "nnl_compile: metric '%s' takes integer class ids, but the loss %s takes targets of the output's "
              "shape; use %s with it, or the loss sparse_categorical_crossentropy",
              sp.name.c_str(), L.name.c_str(),
              m.kind == M_SPARSE_ACC ? "'accuracy' or categorical_accuracy" : "top_k_categorical_accuracy");
    if (!wants_ids && L.sparse())
        raise(NNL_ERR_ARGUMENT,
              "nnl_compile: metric '%s' compares the outputs with targets of the output's shape, but the loss "
              "sparse_categorical_crossentropy takes one integer class id per sample; use %s with it, or one-hot "
              "targets with categorical_crossentropy",
              sp.name.c_str(),
              m.kind == M_CAT_ACC ? "'accuracy' or sparse_categorical_accuracy"
              : m.kind == M_TOPK  ? "sparse_top_k_categorical_accuracy"
                                  : "'accuracy' (sparse_categorical_accuracy)");
    a.done();
    return m;
}

} // namespace nnl

/* ========================================================================
   5  Optimizers
   Keras 3 update rules and defaults (tf.keras >= 2.11). Every optimizer
   owns slot arrays with the layout of the weights it updates (one arena per
   slot), so a checkpoint or an all-reduce can treat them as flat arrays.
   ======================================================================== */
namespace nnl {

struct ParamSlice {
    float *w;
    float *g;
    int64_t n;
};

/* ---- One update step ----
   An optimizer describes its step by the scalars below, computed once per
   step in double and rounded to float. The CPU loops here and the CUDA
   kernel (nnlite_cuda.cu's k_opt, through nnl_cuda::OptStep, the same
   fields) apply the same rule element by element. */
enum OptKind { OPT_SGD, OPT_SGD_MOMENTUM, OPT_RMSPROP, OPT_ADAGRAD, OPT_ADADELTA, OPT_ADAM, OPT_ADAMAX, OPT_NADAM };
struct OptStep {
    OptKind kind;
    float lr, momentum, rho, eps, b1c, b2c, b2; /* b1c = 1 - beta_1, b2c = 1 - beta_2 */
    float alpha, wd, a1, a2, vb, step;          /* Adam's alpha, AdamW's wd*lr, Nadam's a1 a2 vb, Adamax' step */
    bool nesterov, centered, amsgrad;
};

/* f(std::true_type()) or f(std::false_type()): a loop per option value */
template <class F> static inline NNL_INLINE void with_flag(bool b, F f) {
    if (b)
        f(std::true_type());
    else
        f(std::false_type());
}

/* The update loops (every vector type of section 2); w, g and the slots
   s0..s2 of one tensor, n long. */
struct SgdK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *v, int64_t n) {
        V l = V::set(s.lr), m = V::set(s.momentum);
        if (s.kind == OPT_SGD) {
            simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE { (V::load(w + i, t) - l * V::load(g + i, t)).store(w + i, t); });
            return;
        }
        with_flag(s.nesterov, [&](auto nesterov) NNL_INLINE {
            simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
                V gi = V::load(g + i, t), vi = m * V::load(v + i, t) - l * gi;
                vi.store(v + i, t);
                V wi = V::load(w + i, t);
                if constexpr (decltype(nesterov)::value)
                    wi = wi + (m * vi - l * gi);
                else
                    wi = wi + vi;
                wi.store(w + i, t);
            });
        });
    }
};

struct RmspropK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *v, float *mo, float *ag, int64_t n) {
        V r = V::set(s.rho), rc = V::set(1 - s.rho), l = V::set(s.lr), e = V::set(s.eps), mm = V::set(s.momentum);
        with_flag(s.centered, [&](auto centered) NNL_INLINE {
            with_flag(s.momentum > 0, [&](auto momentum) NNL_INLINE {
                simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
                    V gi = V::load(g + i, t), vi = r * V::load(v + i, t) + rc * gi * gi;
                    vi.store(v + i, t);
                    V den = vi;
                    if constexpr (decltype(centered)::value) {
                        V a = r * V::load(ag + i, t) + rc * gi;
                        a.store(ag + i, t);
                        den = den - a * a;
                    }
                    V inc = l * gi / vsqrt(den + e), wi = V::load(w + i, t);
                    if constexpr (decltype(momentum)::value) {
                        V m = mm * V::load(mo + i, t) + inc;
                        m.store(mo + i, t);
                        wi = wi - m;
                    } else {
                        wi = wi - inc;
                    }
                    wi.store(w + i, t);
                });
            });
        });
    }
};

struct AdagradK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *acc, int64_t n) {
        V l = V::set(s.lr), e = V::set(s.eps);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
            V gi = V::load(g + i, t), a = V::load(acc + i, t) + gi * gi;
            a.store(acc + i, t);
            (V::load(w + i, t) - l * gi / vsqrt(a + e)).store(w + i, t);
        });
    }
};

struct AdadeltaK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *ag, float *ad, int64_t n) {
        V r = V::set(s.rho), rc = V::set(1 - s.rho), l = V::set(s.lr), e = V::set(s.eps);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
            V gi = V::load(g + i, t), a = r * V::load(ag + i, t) + rc * gi * gi, dl = V::load(ad + i, t);
            a.store(ag + i, t);
            V d = vsqrt(dl + e) / vsqrt(a + e) * gi;
            (r * dl + rc * d * d).store(ad + i, t);
            (V::load(w + i, t) - l * d).store(w + i, t);
        });
    }
};

/* Adam and AdamW (wd = weight_decay * lr, 0 for Adam: w - w*0 == w), amsgrad
   keeping the largest v in s2 */
struct AdamK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *m, float *v, float *vh, int64_t n) {
        V alpha = V::set(s.alpha), c1 = V::set(s.b1c), c2 = V::set(s.b2c), e = V::set(s.eps), wd = V::set(s.wd);
        with_flag(s.amsgrad, [&](auto amsgrad) NNL_INLINE {
            simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
                V wi = V::load(w + i, t), gi = V::load(g + i, t), mi = V::load(m + i, t), vi = V::load(v + i, t);
                wi = wi - wi * wd;
                mi = mi + (gi - mi) * c1;
                vi = vi + (gi * gi - vi) * c2;
                mi.store(m + i, t);
                vi.store(v + i, t);
                if constexpr (decltype(amsgrad)::value) {
                    vi = vmax(vi, V::load(vh + i, t)); /* std::max(vh, v) */
                    vi.store(vh + i, t);
                }
                (wi - alpha * mi / (vsqrt_nr(vi) + e)).store(w + i, t);
            });
        });
    }
};

struct AdamaxK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *m, float *u, int64_t n) {
        V step = V::set(s.step), c1 = V::set(s.b1c), b2 = V::set(s.b2), e = V::set(s.eps);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
            V gi = V::load(g + i, t), mi = V::load(m + i, t);
            mi = mi + (gi - mi) * c1;
            V ui = vmax(vabs(gi), b2 * V::load(u + i, t)); /* std::max(b2 u, |g|) */
            mi.store(m + i, t);
            ui.store(u + i, t);
            (V::load(w + i, t) - step * mi / (ui + e)).store(w + i, t);
        });
    }
};

struct NadamK {
    template <class V> static void run(OptStep s, float *w, const float *g, float *m, float *v, int64_t n) {
        V a1 = V::set(s.a1), a2 = V::set(s.a2), vb = V::set(s.vb), c1 = V::set(s.b1c), c2 = V::set(s.b2c),
          e = V::set(s.eps), l = V::set(s.lr);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE {
            V gi = V::load(g + i, t), mi = V::load(m + i, t), vi = V::load(v + i, t);
            mi = mi + (gi - mi) * c1;
            vi = vi + (gi * gi - vi) * c2;
            mi.store(m + i, t);
            vi.store(v + i, t);
            V mh = a1 * mi + a2 * gi;
            (V::load(w + i, t) - l * mh / (vsqrt(vi * vb) + e)).store(w + i, t);
        });
    }
};

/* One tensor's update; s0..s2 are its slots (NULL where the rule has none). */
static void opt_update(const OptStep &s, float *w, const float *g, float *s0, float *s1, float *s2, int64_t n) {
    switch (s.kind) {
    case OPT_SGD:
    case OPT_SGD_MOMENTUM: return simd::run<SgdK>(s, w, g, s0, n);
    case OPT_RMSPROP: return simd::run<RmspropK>(s, w, g, s0, s1, s2, n);
    case OPT_ADAGRAD: return simd::run<AdagradK>(s, w, g, s0, n);
    case OPT_ADADELTA: return simd::run<AdadeltaK>(s, w, g, s0, s1, n);
    case OPT_ADAM: return simd::run<AdamK>(s, w, g, s0, s1, s2, n);
    case OPT_ADAMAX: return simd::run<AdamaxK>(s, w, g, s0, s1, n);
    case OPT_NADAM: return simd::run<NadamK>(s, w, g, s0, s1, n);
    }
}

/* g = clamp(g, -c, c) (NaN stays NaN), and g *= f */
struct ClipValueK {
    template <class V> static void run(float *g, int64_t n, float c) {
        V hi = V::set(c), lo = V::set(-c);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE { vmin(hi, vmax(lo, V::load(g + i, t))).store(g + i, t); });
    }
};
struct ScaleK {
    template <class V> static void run(float *g, int64_t n, float f) {
        V k = V::set(f);
        simd::loop<V>(n, [&](int64_t i, const auto &t) NNL_INLINE { (V::load(g + i, t) * k).store(g + i, t); });
    }
};

class Optimizer {
public:
    std::string name; /* as the caller spelt it */
    double learning_rate = 0.001;
    int64_t iterations = 0;
    double decay = 0, clipnorm = 0, clipvalue = 0, global_clipnorm = 0;
    std::vector<std::vector<float>> slots; /* each the total weight count long */
    virtual ~Optimizer() {}

    /* ---- What an optimizer says about itself ---- */
    virtual const char *cls() const = 0; /* Keras' class name */
    virtual int nslots() const = 0;      /* slot arrays (zeros unless init_slots says otherwise) */
    virtual void init_slots() {}
    /* The scalars of the coming step (iterations + 1) at learning rate lr. */
    virtual OptStep step(double lr) const = 0;
    virtual void after_step() {}
    /* Host state beyond the slots and the step count (Nadam's u_product),
       saved in model files under these keys. */
    struct Extra {
        const char *key;
        double *value;
    };
    virtual std::vector<Extra> extra_state() { return {}; }
    /* Its configuration: the call that makes the same optimizer again. */
    std::string config() const {
        std::string s = std::string(cls()) + "(learning_rate=" + num(learning_rate) + args();
        if (decay > 0) s += ", decay=" + num(decay);
        if (clipnorm > 0) s += ", clipnorm=" + num(clipnorm);
        if (clipvalue > 0) s += ", clipvalue=" + num(clipvalue);
        if (global_clipnorm > 0) s += ", global_clipnorm=" + num(global_clipnorm);
        return s + ")";
    }

    /* ---- The step, on the CPU here and on a GPU in section 6b ---- */
    /* (Re)lays the slots for `total` weights; true when it did. */
    bool ensure_slots(int64_t total) {
        int ns = nslots();
        if ((int)slots.size() == ns && (ns == 0 || (int64_t)slots[0].size() == total)) return false;
        slots.assign((size_t)ns, std::vector<float>((size_t)total, 0.f));
        init_slots();
        return true;
    }
    double current_lr() const { return decay > 0 ? learning_rate / (1.0 + decay * (double)iterations) : learning_rate; }
    void finish_step() {
        iterations++;
        after_step();
    }

    void apply(ParamSlice *p, int count) {
        int64_t total = 0;
        for (int i = 0; i < count; i++) total += p[i].n;
        ensure_slots(total);
        clip(p, count);
        const OptStep st = step(current_lr());
        int64_t off = 0;
        for (int i = 0; i < count; i++) {
            /* every update rule is elementwise: threads take slices of a tensor */
            float *w = p[i].w, *s[3] = {nullptr, nullptr, nullptr};
            const float *g = p[i].g;
            for (size_t k = 0; k < slots.size() && k < 3; k++) s[k] = slots[k].data() + off;
            par_for(p[i].n, 4 * p[i].n, [&](int64_t lo, int64_t hi) {
                opt_update(st, w + lo, g + lo, s[0] ? s[0] + lo : nullptr, s[1] ? s[1] + lo : nullptr,
                           s[2] ? s[2] + lo : nullptr, hi - lo);
            });
            off += p[i].n;
        }
        finish_step();
    }

protected:
    double t() const { return (double)(iterations + 1); }
    /* ", name=value" for each of its own arguments, in Keras' order */
    virtual std::string args() const = 0;
    static std::string py(bool b) { return b ? "True" : "False"; }
    static std::string num(double v) { /* the shortest text that reads back as v */
        std::string s;
        for (int digits = 15; digits <= 17; digits++)
            if (strtod((s = format("%.*g", digits, v)).c_str(), nullptr) == v) break; /* both in the host's locale */
        char pt = locale_point_c();
        for (auto &c : s)
            if (c == pt) c = '.';
        return s;
    }

    void clip(ParamSlice *p, int count) {
        if (clipvalue > 0)
            for (int i = 0; i < count; i++) simd::run<ClipValueK>(p[i].g, p[i].n, (float)clipvalue);
        if (clipnorm > 0)
            for (int i = 0; i < count; i++) {
                double nrm = std::sqrt(K().sumsq(p[i].g, p[i].n, nullptr));
                if (nrm > clipnorm) simd::run<ScaleK>(p[i].g, p[i].n, (float)(clipnorm / nrm));
            }
        if (global_clipnorm > 0) {
            double s = 0;
            for (int i = 0; i < count; i++) s += K().sumsq(p[i].g, p[i].n, nullptr);
            double nrm = std::sqrt(s);
            if (nrm > global_clipnorm)
                for (int i = 0; i < count; i++) simd::run<ScaleK>(p[i].g, p[i].n, (float)(global_clipnorm / nrm));
        }
    }
    OptStep blank(OptKind kind, double lr) const {
        OptStep s;
        memset(&s, 0, sizeof s);
        s.kind = kind;
        s.lr = (float)lr;
        return s;
    }
};

class SGD : public Optimizer {
public:
    double momentum;
    bool nesterov;
    SGD(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.01);
        momentum = a.num("momentum", 1, 0.0);
        nesterov = a.flag("nesterov", 2, false);
        NNL_REQUIRE(momentum >= 0 && momentum <= 1, NNL_ERR_ARGUMENT, "SGD: momentum must be in [0, 1]");
    }
    const char *cls() const override { return "SGD"; }
    int nslots() const override { return momentum > 0 ? 1 : 0; }
    OptStep step(double lr) const override {
        OptStep s = blank(momentum == 0 ? OPT_SGD : OPT_SGD_MOMENTUM, lr);
        s.momentum = (float)momentum;
        s.nesterov = nesterov;
        return s;
    }
    std::string args() const override { return ", momentum=" + num(momentum) + ", nesterov=" + py(nesterov); }
};

class RMSprop : public Optimizer {
public:
    double rho, momentum, eps;
    bool centered;
    RMSprop(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        rho = a.num("rho", 1, 0.9);
        momentum = a.num("momentum", 2, 0.0);
        eps = a.num("epsilon", 3, 1e-7);
        centered = a.flag("centered", 4, false);
    }
    const char *cls() const override { return "RMSprop"; }
    int nslots() const override { return 3; } /* velocity, momentum, average gradient */
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_RMSPROP, lr);
        s.rho = (float)rho;
        s.eps = (float)eps;
        s.momentum = (float)momentum;
        s.centered = centered;
        return s;
    }
    std::string args() const override {
        return ", rho=" + num(rho) + ", momentum=" + num(momentum) + ", epsilon=" + num(eps) + ", centered=" +
               py(centered);
    }
};

class Adagrad : public Optimizer {
public:
    double init_acc, eps;
    Adagrad(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        init_acc = a.num("initial_accumulator_value", 1, 0.1);
        eps = a.num("epsilon", 2, 1e-7);
    }
    const char *cls() const override { return "Adagrad"; }
    int nslots() const override { return 1; }
    void init_slots() override { std::fill(slots[0].begin(), slots[0].end(), (float)init_acc); }
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_ADAGRAD, lr);
        s.eps = (float)eps;
        return s;
    }
    std::string args() const override {
        return ", initial_accumulator_value=" + num(init_acc) + ", epsilon=" + num(eps);
    }
};

class Adadelta : public Optimizer {
public:
    double rho, eps;
    Adadelta(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        rho = a.num("rho", 1, 0.95);
        eps = a.num("epsilon", 2, 1e-7);
    }
    const char *cls() const override { return "Adadelta"; }
    int nslots() const override { return 2; } /* accumulated gradient, accumulated delta */
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_ADADELTA, lr);
        s.rho = (float)rho;
        s.eps = (float)eps;
        return s;
    }
    std::string args() const override { return ", rho=" + num(rho) + ", epsilon=" + num(eps); }
};

/* Adam and AdamW share the moment arithmetic. */
class Adam : public Optimizer {
public:
    double b1, b2, eps, weight_decay = 0;
    bool amsgrad, adamw;
    Adam(Args &a, bool adamw_) : adamw(adamw_) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        int p = 1;
        if (adamw) weight_decay = a.num("weight_decay", p++, 0.004);
        b1 = a.num("beta_1", p++, 0.9);
        b2 = a.num("beta_2", p++, 0.999);
        eps = a.num("epsilon", p++, 1e-7);
        amsgrad = a.flag("amsgrad", p++, false);
    }
    const char *cls() const override { return adamw ? "AdamW" : "Adam"; }
    int nslots() const override { return amsgrad ? 3 : 2; }
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_ADAM, lr);
        double tt = t();
        s.alpha = (float)(lr * std::sqrt(1 - std::pow(b2, tt)) / (1 - std::pow(b1, tt)));
        s.b1c = (float)(1 - b1);
        s.b2c = (float)(1 - b2);
        s.eps = (float)eps;
        s.wd = (float)(weight_decay * lr);
        s.amsgrad = amsgrad;
        return s;
    }
    std::string args() const override {
        return (adamw ? ", weight_decay=" + num(weight_decay) : std::string()) + ", beta_1=" + num(b1) +
               ", beta_2=" + num(b2) + ", epsilon=" + num(eps) + ", amsgrad=" + py(amsgrad);
    }
};

class Adamax : public Optimizer {
public:
    double b1, b2, eps;
    Adamax(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        b1 = a.num("beta_1", 1, 0.9);
        b2 = a.num("beta_2", 2, 0.999);
        eps = a.num("epsilon", 3, 1e-7);
    }
    const char *cls() const override { return "Adamax"; }
    int nslots() const override { return 2; } /* m, u */
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_ADAMAX, lr);
        s.step = (float)(lr / (1 - std::pow(b1, t())));
        s.b1c = (float)(1 - b1);
        s.b2 = (float)b2;
        s.eps = (float)eps;
        return s;
    }
    std::string args() const override {
        return ", beta_1=" + num(b1) + ", beta_2=" + num(b2) + ", epsilon=" + num(eps);
    }
};

/* Nadam with Keras 3's momentum schedule u_t = b1 (1 - 0.5 * 0.96^t)
   (keras/src/optimizers/nadam.py; legacy Keras 2 and PyTorch's NAdam use
   0.96^(0.004 t) instead). u_product holds u_1 ... u_t. */
class Nadam : public Optimizer {
public:
    double b1, b2, eps, u_product = 1.0;
    Nadam(Args &a) {
        learning_rate = a.num("learning_rate", 0, 0.001);
        b1 = a.num("beta_1", 1, 0.9);
        b2 = a.num("beta_2", 2, 0.999);
        eps = a.num("epsilon", 3, 1e-7);
    }
    const char *cls() const override { return "Nadam"; }
    int nslots() const override { return 2; }
    double u(double step) const { return b1 * (1 - 0.5 * std::pow(0.96, step)); }
    OptStep step(double lr) const override {
        OptStep s = blank(OPT_NADAM, lr);
        double tt = t(), ut = u(tt), ut1 = u(tt + 1), up = u_product * ut, up1 = up * ut1;
        s.a1 = (float)(ut1 / (1 - up1));
        s.a2 = (float)((1 - ut) / (1 - up));
        s.vb = (float)(1 / (1 - std::pow(b2, tt)));
        s.b1c = (float)(1 - b1);
        s.b2c = (float)(1 - b2);
        s.eps = (float)eps;
        return s;
    }
    void after_step() override { u_product *= u((double)iterations); }
    std::vector<Extra> extra_state() override { return {{"u_product", &u_product}}; }
    std::string args() const override {
        return ", beta_1=" + num(b1) + ", beta_2=" + num(b2) + ", epsilon=" + num(eps);
    }
};

std::unique_ptr<Optimizer> make_optimizer(const std::string &text) {
    Spec sp = parse_spec(text.c_str());
    std::string n = lower(sp.name);
    Args a(sp, sp.name.c_str());
    std::unique_ptr<Optimizer> o;
    if (n == "sgd") o.reset(new SGD(a));
    else if (n == "rmsprop") o.reset(new RMSprop(a));
    else if (n == "adagrad") o.reset(new Adagrad(a));
    else if (n == "adadelta") o.reset(new Adadelta(a));
    else if (n == "adam") o.reset(new Adam(a, false));
    else if (n == "adamw") o.reset(new Adam(a, true));
    else if (n == "adamax") o.reset(new Adamax(a));
    else if (n == "nadam") o.reset(new Nadam(a));
    else
        raise(NNL_ERR_ARGUMENT, "unknown optimizer '%s' (known: SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, "
                                "Adamax, Nadam)", sp.name.c_str());
    o->name = sp.name;
    if (a.has("lr")) o->learning_rate = a.num("lr", -1, o->learning_rate); /* Keras 2 spelling */
    o->decay = a.num("decay", -1, 0.0);
    o->clipnorm = a.num("clipnorm", -1, 0.0);
    o->clipvalue = a.num("clipvalue", -1, 0.0);
    o->global_clipnorm = a.num("global_clipnorm", -1, 0.0);
    NNL_REQUIRE(o->learning_rate >= 0 && std::isfinite(o->learning_rate), NNL_ERR_ARGUMENT,
                "%s: learning_rate must be a finite number >= 0", sp.name.c_str());
    NNL_REQUIRE(o->decay >= 0 && o->clipnorm >= 0 && o->clipvalue >= 0 && o->global_clipnorm >= 0,
                NNL_ERR_ARGUMENT, "%s: decay and clipping values must be >= 0", sp.name.c_str());
    /* Keras applies one clipping mode only; a second would be ignored there. */
    NNL_REQUIRE((o->clipnorm > 0) + (o->clipvalue > 0) + (o->global_clipnorm > 0) <= 1, NNL_ERR_ARGUMENT,
                "%s: set only one of clipnorm, clipvalue and global_clipnorm", sp.name.c_str());
    a.done();
    return o;
}

} // namespace nnl

/* ========================================================================
   6  Model and training loop
   ======================================================================== */
namespace nnl {

int64_t label_at(const void *y, int dtype, int64_t i); /* section 7 */
size_t dtype_size(int dtype);
namespace io {
static float half_to_float(uint16_t h);
static std::string shape_str(int rank, const int64_t *shape);
}

/* GPU hooks (section 6b). Without NNL_CUDA they are empty inline functions.
   A model on a GPU keeps its host arenas (W, G, arena, optimizer slots) as
   the address space the layers compute with; the CUDA kernel table maps
   those addresses to device mirrors. gpu_push/gpu_pull copy a host range
   to/from its mirror; GpuScope makes the model's device current for one
   fit/evaluate/predict call. */
class Model;
struct GpuModel;
#ifdef NNL_CUDA
struct GpuScope {
    Model *m = nullptr;
    bool training = false, cpu_inside = false;
    const Kernels *prev_k = nullptr;
    void *prev_ctx = nullptr, *prev_model = nullptr;
    GpuScope(Model &model, bool train);
    ~GpuScope();
};
void gpu_push(const float *h, int64_t n);
float *gpu_stage(int64_t n);
void gpu_stage_upload(const float *h, int64_t n);
void gpu_pull(const float *h, int64_t n);
bool gpu_apply(Model &m);
bool gpu_loss(Model &m, int64_t B, float *grad, double *msum, double *loss);
void gpu_sync_host(Model &m);
void gpu_sync_device(Model &m);
float *gpu_device(const float *h);
void gpu_wait();
/* The gradient reduction of a distributed GPU model (Dist, section 6c):
   a pinned host buffer of n floats for the arena G, held by the model on
   this thread (NULL without one); device -> host (waits for the stream),
   host -> device (queued), zeroing and scaling device arrays. */
float *gpu_grad_stage(int64_t n);
void gpu_down(float *h, const float *d, int64_t n);
void gpu_up(float *d, const float *h, int64_t n);
void gpu_zero(const float *h, int64_t n);
void gpu_scale(float *d, int64_t n, float f);
#else
struct GpuScope {
    GpuScope(Model &, bool) {}
};
static inline void gpu_push(const float *, int64_t) {}
static inline float *gpu_stage(int64_t) { return nullptr; }
static inline void gpu_stage_upload(const float *, int64_t) {}
static inline void gpu_pull(const float *, int64_t) {}
static inline bool gpu_apply(Model &) { return false; }
static inline bool gpu_loss(Model &, int64_t, float *, double *, double *) { return false; }
static inline void gpu_sync_host(Model &) {}
static inline void gpu_sync_device(Model &) {}
static inline float *gpu_device(const float *) { return nullptr; }
static inline void gpu_wait() {}
static inline float *gpu_grad_stage(int64_t) { return nullptr; }
static inline void gpu_down(float *, const float *, int64_t) {}
static inline void gpu_up(float *, const float *, int64_t) {}
static inline void gpu_zero(const float *, int64_t) {}
static inline void gpu_scale(float *, int64_t, float) {}
#endif

/* One forward or backward pass of a model on the CPU: K() is the table of
   its precision (Model::precision; NULL: float32) for the pass, on this
   thread. A model on a GPU keeps GpuScope's table. */
struct PrecisionScope {
    const Kernels *prev;
    bool on;
    PrecisionScope(bool on_gpu, const Kernels *k) : prev(tl_kernels), on(!on_gpu) {
        if (on) tl_kernels = k;
    }
    ~PrecisionScope() {
        if (on) tl_kernels = prev;
    }
    PrecisionScope(const PrecisionScope &) = delete;
    PrecisionScope &operator=(const PrecisionScope &) = delete;
};

/* A synchronised BatchNormalization (NNL_SYNC_BATCHNORM with such a layer):
   its statistics are summed by host code, which a GPU model does not run. */
static bool sync_bn_layers(const Model &m, int flags);

/* nnl_set_device's device strings, read alike by the CPU-only and the CUDA
   build (so a typo gets NNL_ERR_ARGUMENT from both, and a well-formed GPU
   request NNL_ERR_UNSUPPORTED where there is no CUDA): "cpu" -> -1, "cuda"
   -> 0, "cuda:N" -> N, case-insensitive; "gpu" and "gpu:N" are aliases of
   "cuda" and "cuda:N" (TensorFlow's and Keras' word for the device). */
static int parse_device(const char *device) {
    NNL_REQUIRE(device, NNL_ERR_ARGUMENT, "device is NULL");
    std::string d = lower(device);
    if (d == "cpu") return -1;
    if (d == "cuda" || d == "gpu") return 0;
    size_t c = d.find(':');
    std::string kind = d.substr(0, c), num = c == std::string::npos ? "" : d.substr(c + 1);
    if ((kind == "cuda" || kind == "gpu") && !num.empty() && num.size() <= 6 &&
        num.find_first_not_of("0123456789") == std::string::npos)
        return atoi(num.c_str());
    raise(NNL_ERR_ARGUMENT, "unknown device '%s' (use \"cpu\", \"cuda\" or \"cuda:N\"; \"gpu\" and \"gpu:N\" are "
          "aliases)", device);
}

/* ---- The reduction point of a training step ------------------------------
   After backward, Model::train_step makes one call that sees everything a
   data-parallel run must combine over its processes before the optimizer
   step: the whole gradient arena (one array, the layout of W) and a short
   vector of doubles. One process needs nothing there (Model::reducer is
   NULL); an MPI run allreduces the two (the gradients summed as floats,
   the scalars as doubles), on the host or, with a CUDA-aware MPI, on the
   device mirror. Every decision after it (stopping on a non-finite step,
   the progress line, callbacks, the history) uses what it leaves. */
struct StepReduce {
    float *grad;        /* the gradient arena G: n floats, host memory */
    float *grad_device; /* G's device mirror when the model runs on a GPU
                           (the gradients are there, grad is stale), else NULL */
    int64_t n;
    /* loss summed over this step's samples, each metric summed likewise
       (n_metrics), the sample count, the number of participants that saw a
       non-finite loss or gradient (0 or 1 before the reduction) */
    double *sums;
    int n_sums, n_metrics;
    double &loss() { return sums[0]; }
    double &metric(int k) { return sums[1 + k]; }
    double &count() { return sums[1 + n_metrics]; }
    double &nonfinite() { return sums[2 + n_metrics]; }
    /* kept output positions (step-masked outputs), the masked metrics'
       denominator; 0 when the output carries no mask */
    double &kept() { return sums[3 + n_metrics]; }
    static int size_for(int n_metrics) { return n_metrics + 4; }
    /* gradients nonzero in marked rows only (Layer::grad_rows): grad[off ..
       off + rows x cols) as rows x cols, mark[r] != 0 for the rows that may
       be nonzero; the same list, in G's order, on every participant */
    struct Rows {
        int64_t off, rows, cols;
        const uint8_t *mark;
    };
    const Rows *sparse = nullptr;
    int n_sparse = 0;
};

/* A training step of a GPU model as CUDA graphs (section 6b): false when
   the step is to run as usual (no GPU, not eligible, warming up). */
#ifdef NNL_CUDA
bool gpu_graph_step(Model &m, int64_t B, uint64_t seed, StepReduce &r);
#else
static inline bool gpu_graph_step(Model &, int64_t, uint64_t, StepReduce &) { return false; }
#endif

class Reducer {
public:
    virtual ~Reducer() {}
    /* Every participant calls begin, then grad_ready as backward completes
       the arena from the end down (layers last to first), then reduce, once
       per training step, in the same order. weight: what this process'
       gradients average over (its sample count, or its kept positions when
       the loss is masked): the reduced gradients are sum_r w_r g_r / sum_r
       w_r, the mean over every participant's samples. grad_ready(from):
       G[from ..] is final (a reducer may start sending it). */
    virtual void begin(StepReduce &r, double weight) {
        (void)r;
        (void)weight;
    }
    virtual void grad_ready(int64_t from) { (void)from; }
    /* between grad_ready calls, from inside long backward loops (Ctx::poll) */
    virtual void progress() {}
    /* On return the gradients are the weighted mean described above and
       sums hold the sums over all participants. */
    virtual void reduce(StepReduce &r) = 0;
};

/* ---- Data-parallel runs over MPI (section 6c) --------------------------
   A distributed model (nnl_distribute) holds one: the communicator (a
   duplicate of the caller's), its rank and size, the data layout, and the
   collectives the training loop needs: agreement on each call's arguments
   and options, broadcasts, the bucketed gradient reduction. Every wait has
   the deadline NNL_MPI_TIMEOUT, so a rank that left never hangs the others.
   The bodies are in section 6c; without MPI (no NNL_MPI) none is ever made. */
struct Dist : Reducer {
    int rank = 0, size = 1, flags = 0;
    bool any_callback = false; /* some rank's fit has a callback: stops are agreed */
    bool broken = false;       /* a collective timed out: the run is over */
    std::string where;         /* what the ranks are doing, for a timeout's message */
    double weight = 0;         /* this step's gradient weight */
    /* the step's total weight over all ranks when every rank knows it
       beforehand (sharded data, no mask: the global batch's sample count),
       else 0: the gradients are then scaled by weight / total before they
       are sent and need no second pass after */
    double known_total = 0;
    int64_t pending = 0;       /* G[0 .. pending) not yet sent this step */
    float *g = nullptr;        /* what is sent: G, or on a GPU model its pinned stage or device mirror */
    /* A GPU model (StepReduce::grad_device): gd is G's device mirror.
       Staged (the default): g is a pinned host buffer; each bucket comes
       down into it before it is sent, and the whole reduced arena goes back
       up at the end. With a CUDA-aware MPI (cuda_aware, detected by
       nnl_distribute) g is gd itself: MPI reads and writes device memory,
       the scaling runs on the device, and row-sparse gradients travel
       dense. */
    float *gd = nullptr;
    bool cuda_aware = false;
    bool on_device() const { return gd && g == gd; }
    int local_rank = 0;        /* the rank among those on this node (nnl_set_device's "cuda") */
    int64_t bucket = 1 << 20;  /* floats per bucket (MAX_ELEMENTS: none, all at the reduction point) */
    bool one_node = false;     /* every rank shares this node's memory */
    /* this step's row-sparse gradients (StepReduce::sparse), sent as the
       rows some rank marked unless NNL_MPI_SPARSE=0 */
    const StepReduce::Rows *sparse = nullptr;
    int n_sparse = 0;
    bool sparse_on = true;
    std::vector<uint8_t> marks; /* the union of the ranks' marks */
    std::vector<float> packed;  /* the union's rows, packed */
    double timeout = 600;
#ifdef NNL_MPI
    MPI_Comm comm = MPI_COMM_NULL;
    std::vector<MPI_Request> reqs;
    double rbuf[64];
#endif
    ~Dist() override;
    bool local() const { return (flags & NNL_DATA_LOCAL) != 0; }
    /* Ends a call's checking phase: when any rank's checks failed
       (status != 0), every rank throws that rank's error (the lowest such
       rank's), the others with "(on rank R of N)" after its message. */
    void agree(int status, const std::string &msg);
    /* The ranks passed the same value for each named option, else
       NNL_ERR_ARGUMENT on every rank naming the first that differs. */
    void same(const char *fn, const std::vector<std::pair<const char *, int64_t>> &v);
    int64_t max_all(int64_t v);
    bool any(bool v) { return max_all(v ? 1 : 0) != 0; }
    void sum_all(double *v, int n);
    void bcast(void *p, int64_t bytes);
    bool replicas_equal(uint64_t h); /* the same h on every rank */
    void begin(StepReduce &r, double w) override;
    void grad_ready(int64_t from) override;
    void progress() override;
    void reduce(StepReduce &r) override;
};

/* One buffer of the activation arena's plan (Model::ensure_batch): its size
   in floats, its offset once placed, and the times of a step at which it is
   live: one interval [t0, t1], or two (a layer's scratch: its forward, then
   its backward). */
struct ArenaBuf {
    int64_t size = 0, off = 0;
    int n = 0;
    int t0[2] = {0, 0}, t1[2] = {0, 0};
    void live(int a, int b) {
        t0[n] = a;
        t1[n] = b;
        n++;
    }
    bool meets(const ArenaBuf &o) const {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < o.n; j++)
                if (t0[i] <= o.t1[j] && o.t0[j] <= t1[i]) return true;
        return false;
    }
};

/* Gives each buffer an offset such that buffers whose times meet never
   overlap; returns the arena's size in floats (offsets and sizes rounded up
   to 16 floats, a cache line). Greedy, as TensorFlow Lite's arena planner:
   each buffer at the lowest offset clear of the placed buffers it meets;
   O(n^2) in the buffer count. The order decides how good the plan is, so
   several are tried and the smallest arena kept: largest first (TFLite's,
   the best in most models), first use, longest-lived first, and for up to
   256 buffers 64 random orders from a fixed seed (the same plan on every
   run). T-LENET at batch 512: 38.5 MB largest first, where its first
   pooling's output and that output's gradient both land above the 23.6 MB
   convolution output and input gradient; 33.6 MB from a random order that
   places the pooling's gradient first, under the convolution's. Beyond
   PLAN_GREEDY_MAX
   buffers (models of thousands of layers) a linear scan in order of first
   use takes over, O(n log n): each buffer at the lowest free block when it
   becomes live (a two-interval buffer live from its first time to its
   last), its memory free again after its last time. */
static constexpr size_t PLAN_GREEDY_MAX = 4096;
static int64_t plan_arena(std::vector<ArenaBuf> &bufs, size_t greedy_max = PLAN_GREEDY_MAX) {
    auto round = [](int64_t n) { return (n + 15) / 16 * 16; };
    std::vector<size_t> ord;
    for (size_t i = 0; i < bufs.size(); i++)
        if (bufs[i].size > 0 && bufs[i].n > 0) ord.push_back(i);
    int64_t total = 0;
    auto first = [&](size_t i) { return bufs[i].t0[0]; };
    auto last = [&](size_t i) { return bufs[i].t1[bufs[i].n - 1]; };
    if (ord.size() <= greedy_max) {
        auto place = [&](const std::vector<size_t> &order) { /* offsets into bufs; the arena's size */
            int64_t top = 0;
            std::vector<size_t> placed; /* by offset */
            for (size_t i : order) {
                ArenaBuf &b = bufs[i];
                int64_t at = 0, need = round(b.size);
                for (size_t k = 0; k < placed.size(); k++) {
                    const ArenaBuf &p = bufs[placed[k]];
                    if (!p.meets(b)) continue;
                    if (p.off - at >= need) break; /* the gap before p holds b */
                    at = std::max(at, p.off + round(p.size));
                }
                b.off = at;
                size_t pos = 0; /* placed stays sorted by offset */
                while (pos < placed.size() && bufs[placed[pos]].off <= at) pos++;
                placed.insert(placed.begin() + (ptrdiff_t)pos, i);
                top = std::max(top, at + need);
            }
            return top;
        };
        auto bigger = [&](size_t a, size_t b) { return bufs[a].size > bufs[b].size; };
        std::vector<std::vector<size_t>> orders(3, ord);
        std::stable_sort(orders[0].begin(), orders[0].end(), bigger);
        std::stable_sort(orders[1].begin(), orders[1].end(), [&](size_t a, size_t b) {
            return first(a) != first(b) ? first(a) < first(b) : bigger(a, b);
        });
        std::stable_sort(orders[2].begin(), orders[2].end(), [&](size_t a, size_t b) {
            int la = last(a) - first(a), lb = last(b) - first(b);
            return la != lb ? la > lb : bigger(a, b);
        });
        if (ord.size() <= 256) { /* and 64 random orders (a fixed sequence: the same plan every run) */
            uint64_t z = 0x9e3779b97f4a7c15ull;
            for (int r = 0; r < 64; r++) {
                orders.push_back(orders[0]);
                auto &o = orders.back();
                for (size_t i = o.size(); i > 1; i--) {
                    z ^= z << 13, z ^= z >> 7, z ^= z << 17;
                    std::swap(o[i - 1], o[(size_t)(z % i)]);
                }
            }
        }
        std::vector<int64_t> best_off;
        for (auto &o : orders) {
            int64_t t = place(o);
            if (best_off.empty() || t < total) {
                total = t;
                best_off.resize(bufs.size());
                for (size_t i : ord) best_off[i] = bufs[i].off;
            }
        }
        for (size_t i : ord) bufs[i].off = best_off[i];
        return total;
    }
    std::stable_sort(ord.begin(), ord.end(), [&](size_t a, size_t b) { return first(a) < first(b); });
    std::multimap<int, size_t> ending; /* last time -> buffer */
    std::map<int64_t, int64_t> holes;  /* offset -> size: free blocks below total, coalesced */
    for (size_t i : ord) {
        while (!ending.empty() && ending.begin()->first < first(i)) { /* free what no longer lives */
            const ArenaBuf &d = bufs[ending.begin()->second];
            ending.erase(ending.begin());
            int64_t off = d.off, n = round(d.size);
            auto nx = holes.lower_bound(off);
            if (nx != holes.end() && nx->first == off + n) {
                n += nx->second;
                nx = holes.erase(nx);
            }
            if (nx != holes.begin()) {
                auto pv = std::prev(nx);
                if (pv->first + pv->second == off) {
                    off = pv->first;
                    n += pv->second;
                    holes.erase(pv);
                }
            }
            holes[off] = n;
        }
        ArenaBuf &b = bufs[i];
        int64_t need = round(b.size);
        auto h = holes.begin();
        while (h != holes.end() && h->second < need) ++h;
        if (h != holes.end()) {
            b.off = h->first;
            if (h->second > need) holes[h->first + need] = h->second - need;
            holes.erase(h);
        } else if (!holes.empty() && std::prev(holes.end())->first + std::prev(holes.end())->second == total) {
            b.off = std::prev(holes.end())->first; /* the last hole, grown at the top */
            holes.erase(std::prev(holes.end()));
            total = b.off + need;
        } else {
            b.off = total;
            total += need;
        }
        ending.emplace(last(i), i);
    }
    return total;
}

/* An input array from the ABI: x (n, per-sample shape...) */
struct InputArray {
    const float *x = nullptr;
    int64_t n = 0;
};

/* The limits a model read from JSON or a file is held to, layer by layer,
   before each layer is built (Layer::size_bound): section 8 passes one to
   Model::add_spec; nnl_add passes none. */
struct SizeBudget {
    double max_values; /* per sample, of any layer's output */
    double max_params; /* weights of the whole model */
    double params = 0; /* charged so far */
    void charge(const Layer &l, const Shape &in) {
        Layer::Size z = l.size_bound(in);
        params += z.weights;
        NNL_REQUIRE(std::isfinite(z.values) && z.values <= max_values && std::isfinite(params) && params <= max_params,
                    NNL_ERR_MEMORY, "too large (%.3g values per sample, %.3g weights in the model so far)", z.values,
                    params);
    }
};

static double now_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

/* A per-sample shape that may begin with None (Keras' variable length,
   -1 here): var says so, and the shape holds a nominal length of 1 there
   until a call gives the real one (Model::set_length). None elsewhere is
   refused: only the time axis may vary. */
static Shape var_shape(std::vector<int64_t> v, const char *owner, bool &var) {
    var = !v.empty() && v[0] == -1;
    if (var) v[0] = 1;
    for (size_t i = 1; i < v.size(); i++)
        NNL_REQUIRE(v[i] != -1, NNL_ERR_SHAPE,
                    "%s: None is allowed only as the first (time) axis of the input shape (variable-length "
                    "sequences)", owner);
    return shape_from_ints(v, owner);
}

class Model {
public:
    std::vector<std::unique_ptr<Layer>> layers;
    Shape input;
    bool has_input = false;
    /* The input's first axis is None (input_shape=(None, F)): input.d[0]
       and the layers' time axes hold the length of the current call, set
       from each call's x by set_length (check_x). */
    bool var_len = false;
    /* The step mask (B, T), 1 kept, 0 masked, of the layers that make or
       read one (Layer::mask); empty when no layer does. */
    std::vector<float> maskbuf;
    bool output_masked() const { return !layers.empty() && layers.back()->mask_out; }
    std::map<std::string, int> name_counts;
    std::map<std::string, size_t> name_index; /* layer names, for the uniqueness check in O(log L) */
    uint64_t seed = 0;
    Rng rng;
    bool seeded = false;

    /* Weights and gradients: one arena each, same layout, Keras order,
       every tensor starting on a 64-byte line (WEIGHT_ALIGN floats; the
       gaps hold zeros that no update touches; nnl_param_count counts the
       tensors, param_total). On the lines, a batch-1 product streams its
       weights with one aligned load a line and no lanes to blend
       (small_row_stream_avx512): K-MLP's nnl_predict of one sample 3.05 ->
       2.93 us, its 784 x 128 kernel having sat 16 bytes past a line (Intel
       Xeon, AVX512-FP16 generation, one thread). */
    LineVector W, G;
    std::vector<ParamSlice> slices;
    size_t laid_out = 0;       /* layers whose weights have their place in W and G */
    int64_t param_total = 0;   /* weights of all layers, laid out or not */
    bool defer_layout = false; /* set while model_from_json adds layers: see finish_layout() */

    /* Persistent non-weight state of stateful layers (Layer::states): one
       arena, laid out layer by layer; per-slot states hold state_slots rows,
       the fixed batch size of a stateful model (0 until set: by the first
       batch that runs, or by a model file). */
    std::vector<float> S;
    int64_t state_slots = 0;

    /* Compile state */
    bool compiled = false;
    Loss loss;
    std::vector<Metric> metrics;
    std::unique_ptr<Optimizer> opt;
    std::string compile_text[3]; /* optimizer, loss, metrics as given (saved in model files) */

    /* Activations: act[i] is layer i's input, act[L] the output; dact the
       gradients. One arena, grown only when a larger batch arrives. */
    std::vector<float> arena;
    int64_t cap_batch = 0;
    /* floats of the arena as planned, and what its buffers would take
       without sharing (the unit tests check the plan against it) */
    int64_t arena_planned = 0, arena_unplanned = 0;
    /* for the unit tests: false gives every buffer memory of its own (what
       the plan must compute the same as); the greedy planner's limit */
    bool arena_share = true;
    /* Layer::act_by_next not planned for the layers added from now on (the
       unit tests compare both orders) */
    bool no_act_fusion = false;
    size_t arena_greedy_max = PLAN_GREEDY_MAX;
    std::vector<float *> act, dact;
    float *targets = nullptr;
    /* One more whenever the plan is stale (replan): the inference copies
       (InferPool) made before are made again. */
    uint64_t plan_gen = 0;
    /* The weights' version: one more at the start and at the end of every
       API call that may change the model (Mutation); mutating: such calls
       running (a prediction nested in one, from nnl_fit's callback, keeps
       no rounded weights: the weights change under it). */
    uint64_t wver = 0;
    int mutating = 0;
    /* the rounded weights the predictions in this workspace keep (mixed_bfloat16) */
    gemm::bf16::WeightCache wcache;
    /* An inference copy (InferPool): its arena has no gradients or targets. */
    bool infer_only = false;
    /* The activation plan is stale (the layer list, the length or the
       fusion changed): the arena is planned again at the next batch, and
       the inference copies are made again at the next prediction. */
    void replan() {
        cap_batch = 0;
        plan_gen++;
    }

    /* History: keys in order, one row of values per key. */
    std::vector<std::string> hist_keys;
    std::vector<std::vector<double>> hist;
    int hist_epochs = 0;

    /* Device mirrors when the model lives on a GPU (nnl_set_device), else NULL. */
    std::shared_ptr<GpuModel> gpu;
    /* nnl_set_precision: NULL for float32, else the bf16 kernel table
       (bf16_kernels, or bf16_emulated_kernels under NNL_BF16=emulate) that
       forward and backward run with (PrecisionScope). W, G and the
       optimizer slots stay float32 whatever it is. */
    const Kernels *precision = nullptr;

    /* The training step's reduction point (data-parallel runs); NULL: one
       process, nothing to combine. step_sums: StepReduce's scalars. */
    std::shared_ptr<Reducer> reducer;
    std::vector<double> step_sums;
    std::vector<StepReduce::Rows> sparse_rows;
    /* Set by nnl_distribute (then also the reducer); NULL: one process. */
    std::shared_ptr<Dist> dist;
    int dist_rank() const { return dist ? dist->rank : 0; }
    /* Rank 0 of a distributed model, or a model that is not: the one that
       prints and writes files. */
    bool writer() const { return !dist || dist->rank == 0; }

    /* The checking phase of a collective call (nnl_fit, nnl_evaluate) on a
       distributed model: the ranks agree on the outcome, so an argument one
       rank gets wrong fails the call on every rank instead of leaving the
       others waiting. A model that is not distributed just runs f. */
    template <class F> void collective_checks(F f) {
        if (!dist) {
            f();
            return;
        }
        int st = 0;
        std::string msg;
        try {
            f();
        } catch (Error &e) {
            st = e.status;
            msg = e.msg;
        } catch (std::bad_alloc &) {
            st = NNL_ERR_MEMORY;
            msg = "out of memory";
        }
        dist->agree(st, msg);
    }

    void ensure_seed() {
        if (!seeded) {
            seed = (uint64_t)std::chrono::high_resolution_clock::now().time_since_epoch().count() ^
                   (uint64_t)(uintptr_t)this;
            rng.reseed(seed);
            seeded = true;
        }
    }
    Shape out_shape() const { return layers.empty() ? input : layers.back()->out; }

    /* Gives the weights of the layers added since the last call their place
       in the arenas; values are kept. The arenas grow geometrically (at most
       ARENA_SLACK floats beyond what is needed), so that adding L layers one
       at a time copies O(weights) floats in all, not O(L * weights): a
       Keras JSON of 16,000 layers loads in linear time. While the capacity
       suffices nothing moves, and only the new tensors are laid out; a
       reallocation re-points every tensor. */
    static constexpr int64_t ARENA_SLACK = (int64_t)1 << 20; /* 4 MB per arena at most */
    static constexpr int64_t WEIGHT_ALIGN = 16;              /* floats: 64 bytes */
    static int64_t line_up(int64_t off) { return off < 0 ? off : (off + WEIGHT_ALIGN - 1) / WEIGHT_ALIGN * WEIGHT_ALIGN; }
    void relayout() {
        int64_t need = (int64_t)W.size();
        for (size_t i = laid_out; i < layers.size(); i++)
            for (auto &w : layers[i]->weights) need = add_size(line_up(need), w.shape.size());
        NNL_REQUIRE(need >= 0 && need <= MAX_ELEMENTS, NNL_ERR_MEMORY, "the model's weights exceed %lld values",
                    (long long)MAX_ELEMENTS);
        size_t first = laid_out;
        if ((size_t)need > W.capacity() || (size_t)need > G.capacity()) {
            int64_t old = (int64_t)W.size();
            size_t cap = (size_t)std::max(need, old + std::min(old, ARENA_SLACK));
            LineVector nw, ng;
            nw.reserve(cap);
            ng.reserve(cap);
            nw.assign(W.begin(), W.end());
            ng.assign(G.begin(), G.end());
            W.swap(nw);
            G.swap(ng);
            first = 0; /* everything moved */
        }
        int64_t off = first == 0 ? 0 : (int64_t)W.size(); /* the laid-out tensors end there */
        W.resize((size_t)need);
        G.resize((size_t)need, 0.f);
        if (first == 0) slices.clear();
        for (size_t i = first; i < layers.size(); i++)
            for (auto &w : layers[i]->weights) {
                int64_t n = w.shape.size();
                off = line_up(off);
                w.w = W.data() + off;
                w.g = G.data() + off;
                if (w.trainable) slices.push_back({w.w, w.g, n});
                off += n;
            }
        laid_out = layers.size();
        replan(); /* activation pointers depend on the layer list */
    }

    /* Lays out and initialises (in layer order, so the RNG draws are those
       of adding the layers one by one) every layer added while defer_layout
       was set: one exact allocation for a whole JSON architecture. */
    void finish_layout() {
        size_t first = laid_out;
        defer_layout = false;
        relayout();
        for (size_t i = first; i < layers.size(); i++) {
            for (auto &w : layers[i]->weights)
                init_weights(w.w, w.shape, weight_init(w.init, w.shape, layers[i]->cls, w.name), rng);
            layers[i]->initialized();
        }
        for (size_t i = first; i < layers.size(); i++)
            if (!layers[i]->states.empty()) {
                relayout_states(state_slots);
                break;
            }
    }

    bool has_slot_states() const {
        for (auto &l : layers)
            for (auto &st : l->states)
                if (st.per_slot) return true;
        return false;
    }
    /* Lays the state arena out for `slots` batch slots. Values are kept
       while the slot count stays; a new count starts from zeros. */
    void relayout_states(int64_t slots) {
        int64_t total = 0;
        for (auto &l : layers)
            for (auto &st : l->states) {
                NNL_REQUIRE(st.shape.rank < NNL_MAX_RANK || !st.per_slot, NNL_ERR_INTERNAL,
                            "%s: state '%s' has too many dimensions", l->cls, st.name.c_str());
                total += st.size(slots);
            }
        std::vector<float> ns((size_t)total, 0.f);
        int64_t off = 0;
        for (auto &l : layers)
            for (auto &st : l->states) {
                int64_t n = st.size(slots);
                if (st.s && slots == state_slots) std::copy(st.s, st.s + n, ns.data() + off);
                st.s = ns.data() + off;
                st.slots = slots;
                off += n;
            }
        S.swap(ns);
        state_slots = slots;
    }
    /* Every state back to zero (Keras' reset_states). */
    void reset_states() { std::fill(S.begin(), S.end(), 0.f); }
    /* A model whose layers keep states per batch slot runs whole batches of
       one size only (Keras' batch_input_shape): n samples must split into
       batches of bs, and bs must be the size the states were laid out for. */
    void check_fixed_batch(int64_t n, int64_t bs, const char *fn, const char *what) const {
        if (!has_slot_states()) return;
        NNL_REQUIRE(n % bs == 0, NNL_ERR_SHAPE,
                    "%s: the model has stateful layers, which need batches of one fixed size; %lld %s do not split "
                    "into batches of %lld (make the sample count a multiple of the batch size, as Keras requires)",
                    fn, (long long)n, what, (long long)bs);
        NNL_REQUIRE(state_slots == 0 || bs == state_slots, NNL_ERR_SHAPE,
                    "%s: the model's stateful layers keep states for batches of %lld samples; batches of %lld do "
                    "not fit (a stateful model keeps its batch size, as in Keras; nnl_reset_states keeps it too)",
                    fn, (long long)state_slots, (long long)bs);
    }

    /* A variable-length model (var_len) at length T: the layers that see
       the time axis are rebuilt for it (their weights do not depend on it,
       which any_length promises and this checks) and the workspaces are
       planned again at the next batch. Called by check_x with the length of
       the caller's x; a no-op when the length stays. */
    void set_length(int64_t T, const char *fn) {
        if (!var_len || T == input.d[0]) return;
        Shape prev = input;
        prev.d[0] = T;
        int64_t per = prev.checked_size();
        NNL_REQUIRE(T > 0 && per >= 0 && per <= MAX_VALUES, NNL_ERR_SHAPE,
                    "%s: a length of %lld steps is out of range", fn, (long long)T);
        for (auto &l : layers) {
            if (!l->var_in) break;
            std::vector<Shape> ws;
            for (auto &w : l->weights) ws.push_back(w.shape);
            l->build(prev);
            for (size_t i = 0; i < ws.size(); i++)
                NNL_REQUIRE(l->weights[i].shape == ws[i], NNL_ERR_INTERNAL,
                            "%s: layer '%s' changed its weights' shape with the input length", fn, l->name.c_str());
            int64_t os = l->out.checked_size();
            NNL_REQUIRE(os >= 0 && os <= MAX_VALUES, NNL_ERR_SHAPE,
                        "%s: at %lld steps, layer '%s' would output more than 2^40 values per sample", fn,
                        (long long)T, l->name.c_str());
            prev = l->out;
        }
        input.d[0] = T;
        replan(); /* every per-sample size may have changed */
    }

    void add(const char *text) { add_spec(parse_spec(text)); }
    /* Keras' TimeDistributed(Dense(...)): Dense on a (T, F) input already acts
       on every step (its last axis), with the same weights, so the wrapper
       builds that Dense (named as the wrapper when it has a name) and is
       written back as a plain Dense. Around any other layer: refused. */
    static Spec time_distributed(const Spec &sp) {
        Args a(sp, "TimeDistributed");
        const Spec *in = a.layer("layer", 0);
        NNL_REQUIRE(in, NNL_ERR_ARGUMENT, "TimeDistributed: needs a layer, as in TimeDistributed(Dense(8))");
        NNL_REQUIRE(in->name == "Dense", NNL_ERR_UNSUPPORTED,
                    "TimeDistributed(%s(...)) is not supported: only TimeDistributed(Dense(...)), which is Dense "
                    "itself on a (timesteps, features) input", printable(in->name).c_str());
        Spec d;
        d.name = "Dense";
        d.pos = in->pos;
        auto outer = [&](const std::string &k) {
            for (auto &kv : sp.kw)
                if (kv.first == k) return true;
            return false;
        };
        for (auto &kv : in->kw) /* the inner layer's own input shape is per step: not the model's */
            if (kv.first != "input_shape" && kv.first != "batch_input_shape" && !outer(kv.first))
                d.kw.push_back(kv);
        for (auto &kv : sp.kw)
            if (kv.first != "layer") d.kw.push_back(kv);
        NNL_REQUIRE(sp.pos.size() <= 1, NNL_ERR_ARGUMENT, "TimeDistributed: too many positional arguments (%d given)",
                    (int)sp.pos.size());
        return d;
    }
    /* The same from a parsed spec (section 8 builds specs from Keras JSON). */
    void add_spec(const Spec &sp, SizeBudget *budget = nullptr) {
        NNL_REQUIRE(!compiled, NNL_ERR_STATE, "cannot add layers after compile");
        if (sp.name == "TimeDistributed") return add_spec(time_distributed(sp), budget);
        if (sp.name == "Input" || sp.name == "InputLayer") {
            Args a(sp, sp.name.c_str());
            std::vector<int64_t> s = a.ints("shape", 0);
            if (s.empty()) {
                s = a.ints("batch_input_shape", -1);
                if (!s.empty()) s.erase(s.begin());
            }
            a.str("name", -1, "");
            a.str("dtype", -1, "float32");
            a.done();
            NNL_REQUIRE(layers.empty() && !has_input, NNL_ERR_STATE, "Input must come first, and only once");
            input = var_shape(s, "Input", var_len);
            has_input = true;
            return;
        }
        const LayerKind *kind = find_layer(sp.name);
        if (!kind) raise(NNL_ERR_ARGUMENT, "unknown layer '%s' (known: %s)", sp.name.c_str(), layer_names().c_str());
        NNL_REQUIRE(layers.size() < (size_t)NNL_MAX_LAYERS, NNL_ERR_MEMORY,
                    "nnl_add: the model has %zu layers, the most nnlite allows (NNL_MAX_LAYERS)", layers.size());
        Args a(sp, sp.name.c_str());
        std::unique_ptr<Layer> l = kind->make(a);
        l->spec = sp;
        std::string name = a.str("name", -1, "");
        /* names end up in JSON, model files and messages: UTF-8 only */
        NNL_REQUIRE(valid_utf8(name), NNL_ERR_ARGUMENT, "%s: the name '%s' is not valid UTF-8", sp.name.c_str(),
                    printable(name).c_str());
        std::vector<int64_t> ishape = a.ints("input_shape", -1);
        std::vector<int64_t> bshape = a.ints("batch_input_shape", -1);
        a.str("dtype", -1, "float32");
        NNL_REQUIRE(a.flag("trainable", -1, true), NNL_ERR_UNSUPPORTED, "%s: frozen layers are not supported yet",
                    sp.name.c_str());
        a.done();
        if (ishape.empty() && !bshape.empty()) ishape.assign(bshape.begin() + 1, bshape.end());
        if (ishape.empty() && layers.empty() && !has_input) ishape = l->implied_input;
        NNL_REQUIRE(!l->first_only() || layers.empty(), NNL_ERR_ARGUMENT,
                    "%s: an %s layer reads ids and passes no gradient back, so it must be the model's first layer",
                    sp.name.c_str(), l->cls);
        Shape prev = out_shape();
        bool prev_var = layers.empty() ? var_len : layers.back()->var_out;
        if (!ishape.empty()) {
            bool v = false;
            Shape s = var_shape(ishape, sp.name.c_str(), v);
            if (layers.empty() && !has_input) {
                input = s;
                has_input = true;
                var_len = prev_var = v;
                prev = s;
            } else {
                NNL_REQUIRE(s == prev && v == prev_var, NNL_ERR_SHAPE,
                            "%s: input_shape %s does not match the previous output %s", sp.name.c_str(),
                            s.str(false, v).c_str(), prev.str(false, prev_var).c_str());
            }
        }
        NNL_REQUIRE(has_input, NNL_ERR_STATE,
                    "%s: the first layer needs input_shape=(...) (or add an Input(shape=(...)) first)",
                    sp.name.c_str());
        /* variable length and the step mask (Layer::any_length, supports_mask) */
        l->var_in = prev_var;
        NNL_REQUIRE(!prev_var || l->any_length(prev), NNL_ERR_SHAPE,
                    "%s: layer '%s' (%s) needs a fixed input length, but its input %s has a variable length "
                    "(input_shape=(None, ...)); give the model a fixed length, or consume the steps first (a "
                    "recurrent layer without return_sequences)",
                    sp.name.c_str(), name.empty() ? snake(l->cls).c_str() : name.c_str(), l->cls,
                    prev.str(true, true).c_str());
        if (budget) budget->charge(*l, prev); /* from a file: sizes bounded before anything is allocated */
        l->build(prev);
        l->var_out = prev_var && l->keeps_length();
        l->mask_in = !layers.empty() && layers.back()->mask_out;
        NNL_REQUIRE(!l->mask_in || l->supports_mask(), NNL_ERR_UNSUPPORTED,
                    "%s: layer '%s' (%s) does not support masking, but its input carries the step mask of a "
                    "Masking layer or an Embedding with mask_zero=True (as Keras, nnlite refuses it)",
                    sp.name.c_str(), name.empty() ? snake(l->cls).c_str() : name.c_str(), l->cls);
        l->mask_out = l->makes_mask() || (l->mask_in && l->passes_mask());
        /* the sizes the layer derived, checked once here: the rest of nnlite
           multiplies them without overflow checks */
        int64_t os = l->out.checked_size();
        NNL_REQUIRE(os >= 0 && os <= MAX_VALUES, NNL_ERR_SHAPE,
                    "%s: its output %s would hold more than 2^40 values per sample", sp.name.c_str(),
                    l->out.str().c_str());
        int64_t np = 0;
        for (auto &w : l->weights) {
            int64_t n = w.shape.checked_size();
            NNL_REQUIRE(n >= 0 && n <= MAX_VALUES, NNL_ERR_SHAPE,
                        "%s: its %s of shape %s would hold more than 2^40 values", sp.name.c_str(), w.name.c_str(),
                        w.shape.str(false).c_str());
            np += n;
        }
        NNL_REQUIRE(add_size(param_total, np) <= MAX_VALUES, NNL_ERR_SHAPE,
                    "%s: the model would hold more than 2^40 weights", sp.name.c_str());
        std::vector<Init> inits; /* checked before the layer joins the model (or takes a default name) */
        for (auto &w : l->weights) inits.push_back(weight_init(w.init, w.shape, l->cls, w.name));
        std::string base;
        if (name.empty()) {
            base = snake(l->cls);
            int k = name_counts[base]++;
            name = k ? format("%s_%d", base.c_str(), k) : base;
        }
        NNL_REQUIRE(!name_index.count(name), NNL_ERR_ARGUMENT, "a layer named '%s' exists already", name.c_str());
        l->name = name;
        ensure_seed();
        /* all or nothing: a failure below (memory, an unknown initializer)
           leaves the model as it was, RNG included */
        size_t nw = W.size(), ns = slices.size();
        Rng saved = rng;
        layers.push_back(std::move(l));
        if (!defer_layout) try {
            relayout();
            Layer &L = *layers.back();
            for (size_t i = 0; i < L.weights.size(); i++)
                init_weights(L.weights[i].w, L.weights[i].shape, inits[i], rng);
            L.initialized();
            if (!L.states.empty()) relayout_states(state_slots);
        } catch (...) {
            layers.pop_back();
            laid_out = layers.size();
            W.resize(nw); /* shrinking moves nothing: the other tensors stay where they are */
            G.resize(nw);
            slices.resize(ns);
            rng = saved;
            replan();
            if (!base.empty()) name_counts[base]--;
            throw;
        }
        param_total += np;
        name_index[name] = layers.size() - 1;
        if (layers.size() >= 2 && layers[layers.size() - 2]->keeps_cl() && layers.back()->keeps_cl())
            layers[layers.size() - 2]->cl_out = layers.back()->cl_in = true;
        if (layers.size() >= 2) { /* a convolution's activation taken by the max pooling after it */
            auto *cv = dynamic_cast<Conv *>(layers[layers.size() - 2].get());
            auto *pl = dynamic_cast<Pool *>(layers.back().get());
            if (cv && pl && cv->act_absorbable() && pl->disjoint_max() && !no_act_fusion) {
                cv->act_by_next = true;
                pl->absorb = cv->act;
                replan();
            }
        }
    }

    void compile(const char *opt_text, const char *loss_text, const char *metrics_text) {
        NNL_REQUIRE(!layers.empty(), NNL_ERR_STATE, "compile: the model has no layers");
        NNL_REQUIRE(opt_text && loss_text, NNL_ERR_ARGUMENT, "compile: optimizer and loss are required");
        std::unique_ptr<Optimizer> o = make_optimizer(opt_text);
        Loss L = make_loss(loss_text);
        int64_t C = out_shape().last();
        if (L.kind == LOSS_SPARSE_CCE || L.kind == LOSS_CCE)
            NNL_REQUIRE(C >= 2, NNL_ERR_SHAPE, "%s needs an output of at least 2 classes, the model gives %s",
                        L.name.c_str(), out_shape().str().c_str());
        std::vector<Metric> ms;
        if (metrics_text && *metrics_text) {
            /* split on top-level commas: "accuracy, top_k_categorical_accuracy(k=3)" */
            std::string s = metrics_text, cur;
            int depth = 0;
            for (size_t i = 0; i <= s.size(); i++) {
                char c = i < s.size() ? s[i] : ',';
                if (c == '(' || c == '[') depth++;
                if (c == ')' || c == ']') depth--;
                if (c == ',' && depth == 0) {
                    size_t b = cur.find_first_not_of(" \t"), e = cur.find_last_not_of(" \t");
                    if (b != std::string::npos) ms.push_back(make_metric(cur.substr(b, e - b + 1), L, C));
                    cur.clear();
                } else {
                    cur += c;
                }
            }
        }
        /* Keras computes cross-entropy from the logits when the output is a
           softmax (sigmoid for binary): stable, and the gradient is p - t. */
        for (auto &l : layers) l->fused_output = false;
        L.fused = ACT_LINEAR;
        Layer &last = *layers.back();
        if (!L.from_logits && ((L.kind != LOSS_BCE && L.crossentropy() && last.output_act() == ACT_SOFTMAX) ||
                               (L.kind == LOSS_BCE && last.output_act() == ACT_SIGMOID))) {
            L.fused = last.output_act();
            last.fused_output = true;
        }
        opt = std::move(o);
        loss = L;
        metrics = ms;
        compile_text[0] = opt_text;
        compile_text[1] = loss_text;
        compile_text[2] = metrics_text ? metrics_text : "";
        compiled = true;
        replan(); /* workspaces depend on the fusion chosen here */
    }

    /* Sizes the activation arena for batch B (no-op when large enough).
       Every buffer of a step has the times it is live on the step's
       timeline: 0 the batch gathered into act[0] and targets, 1 + i layer
       i's forward, L + 1 the loss, then each layer's backward from the last,
       in two phases (early: while it reads x and y; late: while it writes dx;
       one phase for a layer that is not reads_before_dx). Buffers whose times
       do not meet share memory (plan_arena): an activation once no later
       step reads it (Layer::backward_reads_x/_y), a workspace outside its
       layer's forward..backward, a scratch outside its layer's calls, a
       gradient dact[i] from the backward of layer i (or the loss) to that of
       layer i-1. The first layer with weights computes no input gradient,
       so nothing below it has a gradient buffer (dact[i] is NULL there). An
       inference copy's timeline ends after the forward: no gradients or
       targets, its output live to the end. A view (Flatten) shares its
       input's buffer, activation and gradient alike. */
    void ensure_batch(int64_t B, const char *fn = "nnlite") {
        if (B > state_slots && has_slot_states()) { /* states per batch slot: the batch size is fixed */
            NNL_REQUIRE(state_slots == 0, NNL_ERR_SHAPE,
                        "the model's stateful layers keep states for batches of %lld samples; batches of %lld do "
                        "not fit (a stateful model keeps its batch size, as in Keras)",
                        (long long)state_slots, (long long)B);
            relayout_states(B);
        }
        if (B <= cap_batch) return;
        size_t L = layers.size();
        /* B times the largest per-sample size, with room for the small
           multiples the layers' workspace()/scratch() take of it: within
           this bound none of their int64 products can overflow */
        int64_t per = input.size();
        for (auto &l : layers) per = std::max(per, std::max(l->in.size(), l->out.size()));
        int64_t batch_max = mul_size(B, per);
        NNL_REQUIRE(batch_max >= 0 && batch_max <= ((int64_t)1 << 58), NNL_ERR_MEMORY,
                    "%s: a batch of %lld samples of up to %lld values each is more than nnlite can address; "
                    "lower batch_size", fn, (long long)B, (long long)per);
        size_t first = 0;
        while (first < L && layers[first]->is_view()) first++;
        const bool train = !infer_only;
        const int T_loss = (int)L + 1, T_end = train ? (int)(3 * L + 2) : T_loss;
        auto fwd = [&](size_t i) { return 1 + (int)i; };
        auto early = [&](size_t i) { return (int)L + 2 + 2 * (int)(L - 1 - i); };
        auto read_end = [&](size_t i) { return early(i) + (layers[i]->reads_before_dx() ? 0 : 1); };
        /* buffers: act groups [0, L], ws [L+1, 2L], sc [2L+1, 3L], dact groups [3L+1, 4L+1], targets 4L+2 */
        std::vector<ArenaBuf> bufs(4 * L + 3);
        std::vector<size_t> ag(L + 1), dg(L + 1); /* the buffer of act[j] / dact[j] */
        ag[0] = 0;
        for (size_t j = 1; j <= L; j++) ag[j] = layers[j - 1]->is_view() ? ag[j - 1] : j;
        int64_t total = 0; /* every term fits; their sum over many layers is checked */
        for (size_t j = 0; j <= L; j++) {
            if (ag[j] != j) continue;
            int t0 = j ? fwd(j - 1) : 0, t1 = t0;
            for (size_t k = j; k <= L && ag[k] == j; k++) { /* act[k] is the same memory */
                if (k < L && !layers[k]->is_view()) {
                    t1 = std::max(t1, fwd(k));
                    if (train && layers[k]->backward_reads_x()) t1 = std::max(t1, read_end(k));
                }
                if (k > 0 && !layers[k - 1]->is_view() && train && layers[k - 1]->backward_reads_y())
                    t1 = std::max(t1, read_end(k - 1));
                if (k == L) t1 = T_end; /* the output: read by the loss, the metrics, the caller */
                if (train && k + 1 == L && loss.fused != ACT_LINEAR) t1 = std::max(t1, T_loss); /* logits(x) */
            }
            bufs[j].size = B * (j ? layers[j - 1]->out.size() : input.size());
            bufs[j].live(t0, t1);
            total = add_size(total, bufs[j].size);
        }
        for (size_t i = 0; i < L; i++) {
            Layer &l = *layers[i];
            ArenaBuf &w = bufs[L + 1 + i], &c = bufs[2 * L + 1 + i];
            w.size = l.workspace(B); /* kept from forward to backward */
            w.live(fwd(i), train ? early(i) + 1 : fwd(i));
            c.size = l.scratch(B); /* only inside one call */
            c.live(fwd(i), fwd(i));
            if (train) c.live(early(i), early(i) + 1);
            total = add_size(add_size(total, w.size), c.size);
        }
        if (train) {
            dg[L] = L;
            for (size_t j = L; j-- > 0;) dg[j] = layers[j]->is_view() ? dg[j + 1] : j;
            for (size_t j = L; j > first; j--) {
                if (dg[j] != j) continue;
                ArenaBuf &d = bufs[3 * L + 1 + j];
                size_t low = j;
                while (low > first && dg[low - 1] == j) low--; /* the views below share it */
                d.size = B * (j < L ? layers[j]->in.size() : out_shape().size());
                /* from the loss, or layer j's backward, to layer low-1's backward (low > first: one exists) */
                d.live(j == L ? T_loss : early(j) + (layers[j]->reads_before_dx() ? 1 : 0), early(low - 1) + 1);
                total = add_size(total, d.size);
            }
            ArenaBuf &t = bufs[4 * L + 2];
            t.size = B * target_width();
            t.live(0, T_loss);
            total = add_size(total, t.size);
        }
        NNL_REQUIRE(total >= 0 && total <= MAX_ELEMENTS, NNL_ERR_MEMORY,
                    "%s: a batch of %lld samples needs more than 2^60 floats of activations, more than nnlite "
                    "can address; lower batch_size", fn, (long long)B);
        if (!arena_share)
            for (auto &b : bufs) {
                b.n = 0;
                b.live(0, T_end);
            }
        arena_planned = plan_arena(bufs, arena_greedy_max);
        arena_unplanned = total;
        arena.assign((size_t)arena_planned, 0.f);
        float *base = arena.data();
        auto at = [&](const ArenaBuf &b) { return b.size > 0 ? base + b.off : nullptr; };
        act.assign(L + 1, nullptr);
        dact.assign(L + 1, nullptr);
        for (size_t j = 0; j <= L; j++) act[j] = at(bufs[ag[j]]);
        for (size_t i = 0; i < L; i++) {
            layers[i]->ws = at(bufs[L + 1 + i]);
            layers[i]->sc = at(bufs[2 * L + 1 + i]);
        }
        if (train)
            for (size_t j = first + 1; j <= L; j++) dact[j] = at(bufs[3 * L + 1 + dg[j]]);
        targets = train ? at(bufs[4 * L + 2]) : nullptr;
        int64_t steps = 0; /* the step mask: one value per sample and time step */
        for (auto &l : layers)
            if (l->makes_mask() || l->mask_in) steps = std::max(steps, l->in.d[0]);
        maskbuf.assign((size_t)(B * steps), 1.f);
        for (auto &l : layers) l->mask = steps && (l->makes_mask() || l->mask_in) ? maskbuf.data() : nullptr;
        cap_batch = B;
    }

    int64_t classes() const { return out_shape().last(); }
    /* Floats per sample in the target buffer. */
    int64_t target_width() const {
        if (compiled && loss.sparse()) return out_shape().size() / classes();
        return out_shape().size();
    }

    /* the collectives of synchronised BatchNormalization, when on */
    Dist *sync_bn() const { return dist && (dist->flags & NNL_SYNC_BATCHNORM) ? dist.get() : nullptr; }

    /* B == 0 (a rank without samples in a data-parallel step): no layer
       runs, but each takes part in the collectives it would make. `in`
       (direct_input): the first layer reads the batch there instead of
       act[0]. */
    void forward(int64_t B, bool training, uint64_t seed_, const float *in = nullptr) {
        PrecisionScope ps(gpu != nullptr, precision);
        Ctx c;
        c.training = training;
        c.seed = seed_;
        c.sync = training ? sync_bn() : nullptr;
        for (size_t i = 0; i < layers.size(); i++)
            if (layers[i]->is_view())
                continue;
            else if (B > 0) {
                layers[i]->forward(in ? in : act[i], act[i + 1], B, c);
                in = nullptr;
            } else
                layers[i]->collective(false, c);
    }

    /* Whether inference may read a batch where the caller's array holds it
       rather than copy it into act[0] (K-MLP nnl_predict of 256 samples:
       the copy was 4.5 % of the call): on the CPU, when some layer
       computes. Only the first computing layer reads act[0] (the views
       before it, Flatten, Reshape, alias it); no layer writes its input, and
       ensure_batch gives that layer's output a buffer of its own (both are
       live during its forward). A model of views only returns act[0]
       itself, so it copies. */
    bool direct_input() const {
        if (gpu) return false;
        for (auto &l : layers)
            if (!l->is_view()) return true;
        return false;
    }

    void backward(int64_t B, uint64_t seed_) {
        PrecisionScope ps(gpu != nullptr, precision);
        Ctx c;
        c.training = true;
        c.seed = seed_;
        c.sync = sync_bn();
        if (reducer) {
            c.progress = [](void *r) { static_cast<Reducer *>(r)->progress(); };
            c.progress_user = reducer.get();
        }
        /* dx is needed only below the first layer that has weights or feeds one */
        size_t first = 0;
        while (first < layers.size() && layers[first]->is_view()) first++;
        for (size_t i = layers.size(); i-- > first;)
            if (!layers[i]->is_view()) {
                if (B > 0)
                    layers[i]->backward(act[i], act[i + 1], dact[i + 1], i > first ? dact[i] : nullptr, B, c);
                else
                    layers[i]->collective(true, c);
                /* its gradients are final: a data-parallel run may send them now */
                if (reducer && !layers[i]->weights.empty()) reducer->grad_ready(layers[i]->weights[0].g - G.data());
            }
    }

    /* Loss (summed over the batch) and metric sums for the outputs in
       act[L]; *kept (when not NULL) gains the kept positions of a masked
       output, the masked metrics' denominator. */
    double loss_and_grad(int64_t B, float *grad, double *msum, double *kept = nullptr) {
        double gl;
        if (gpu_loss(*this, B, grad, msum, &gl)) return gl; /* on the device: every loss and metric, unmasked */
        size_t L = layers.size();
        const float *z = loss.fused != ACT_LINEAR ? layers.back()->logits(act[L - 1]) : nullptr;
        int64_t D = out_shape().size(), C = classes();
        gpu_pull(act[L], B * D); /* a masked output on a GPU model: on the host (see gpu_loss) */
        if (z) gpu_pull(z, B * D);
        const float *mk = output_masked() ? maskbuf.data() : nullptr; /* masked positions skipped */
        int64_t P = mk ? out_shape().d[0] : 0;
        if (mk) gpu_pull(mk, B * P); /* written on the device by Embedding or Masking */
        if (mk && kept)
            for (int64_t q = 0; q < B * P; q++) *kept += mk[q] != 0.f;
        double l = loss.run(act[L], z, targets, B, D, C, grad, mk, P);
        for (size_t k = 0; k < metrics.size(); k++)
            msum[k] += metrics[k].kind == M_PERPLEXITY ? l : metrics[k].run(act[L], targets, B, D, C, mk, P);
        if (grad) gpu_push(grad, B * D);
        return l;
    }

    /* One training step on the B samples gathered into act[0] and targets:
       forward, loss, backward, then the reduction point (StepReduce), then
       the optimizer step, applied only when the reduced loss and gradients
       are finite (otherwise weights and optimizer state stay those of the
       last good step, and nonfinite() > 0 says so). Returns the reduced
       sums, valid until the next step. */
    StepReduce train_step(int64_t B, uint64_t seed_) {
        size_t L = layers.size(), nm = metrics.size();
        step_sums.assign((size_t)StepReduce::size_for((int)nm), 0.0); /* no allocation after the first step */
        StepReduce r{G.data(), nullptr, (int64_t)G.size(), step_sums.data(), (int)step_sums.size(), (int)nm};
        if (!reducer && B > 0 && gpu_graph_step(*this, B, seed_, r)) return r; /* a GPU model's step as CUDA graphs */
        bool finite = true;
        if (reducer) r.grad_device = gpu_device(G.data()); /* a GPU model: the gradients are made there */
        if (reducer) { /* the gradients that are nonzero in a few rows: their marks, filled by backward */
            sparse_rows.clear();
            for (auto &l : layers) {
                l->clear_grad_rows(); /* backward marks its rows; a rank without samples has none */
                if (l->is_view() || l->weights.empty()) continue;
                const auto &w = l->weights[0];
                if (const uint8_t *mk = l->grad_rows())
                    sparse_rows.push_back({w.g - G.data(), w.shape.d[0], w.shape.size() / w.shape.d[0], mk});
            }
            r.sparse = sparse_rows.data();
            r.n_sparse = (int)sparse_rows.size();
        }
        if (B > 0) {
            forward(B, true, seed_);
            r.loss() = loss_and_grad(B, dact[L], r.sums + 1, &r.kept());
            r.count() = (double)B;
            /* the gradients average over the samples, or over the kept
               positions of a masked loss */
            if (reducer) reducer->begin(r, output_masked() ? r.kept() : (double)B);
            backward(B, seed_);
            finite = std::isfinite(r.loss());
            /* (a distributed run checks the reduced gradients below: a
               bucket may be on its way while this would read it) */
            if (finite && !dist) K().sumsq(G.data(), (int64_t)G.size(), &finite);
        } else { /* a rank with no samples in this step still takes part, in
                    the same order of collectives (buckets, synchronised
                    BatchNormalization) as the others */
            std::fill(G.begin(), G.end(), 0.f);
            gpu_zero(G.data(), (int64_t)G.size()); /* a GPU model: its zeros are the device's */
            if (reducer) reducer->begin(r, 0.0);
            forward(0, true, seed_);
            backward(0, seed_);
        }
        r.nonfinite() = finite ? 0 : 1;
        if (reducer) {
            gpu_wait(); /* the gradients complete on the device */
            reducer->reduce(r);
            finite = r.nonfinite() == 0 && std::isfinite(r.loss());
            if (finite) K().sumsq(G.data(), (int64_t)G.size(), &finite); /* the reduced gradients */
            if (!finite && r.nonfinite() == 0) r.nonfinite() = 1;
        }
        if (finite && !gpu_apply(*this)) opt->apply(slices.data(), (int)slices.size());
        return r;
    }

    /* ---- checking arrays from the ABI ----
       fn names the API call ("nnl_fit"), arg the array ("x", "x_val"). Sizes
       are checked with overflow-safe arithmetic: a shape whose product
       overflows, or exceeds what a process can address, is NNL_ERR_SHAPE. */
    InputArray check_x(const float *x, int rank, const int64_t *shape, const char *fn, const char *arg) {
        NNL_REQUIRE(has_input && !layers.empty(), NNL_ERR_STATE, "%s: the model has no layers", fn);
        NNL_REQUIRE(x && shape, NNL_ERR_ARGUMENT, "%s: %s is NULL", fn, arg);
        NNL_REQUIRE(rank >= 1 && rank <= NNL_MAX_RANK + 1, NNL_ERR_SHAPE, "%s: %s has rank %d, out of range 1..%d",
                    fn, arg, rank, NNL_MAX_RANK + 1);
        int64_t per = 1;
        for (int i = 1; i < rank; i++) {
            NNL_REQUIRE(shape[i] > 0, NNL_ERR_SHAPE, "%s: %s has dimension %d of size %lld", fn, arg, i,
                        (long long)shape[i]);
            per = mul_size(per, shape[i]);
        }
        NNL_REQUIRE(shape[0] >= 0, NNL_ERR_SHAPE, "%s: %s has a negative sample count (%lld)", fn, arg,
                    (long long)shape[0]);
        int64_t count = mul_size(shape[0], per);
        NNL_REQUIRE(count >= 0 && count <= MAX_ELEMENTS, NNL_ERR_SHAPE,
                    "%s: %s of shape %s holds more values than a process can address (the product %s)", fn, arg,
                    io::shape_str(rank, shape).c_str(), count < 0 ? "overflows int64" : "exceeds 2^60");
        Shape s = Shape::of(rank - 1, shape + 1);
        if (var_len) { /* (n, T, ...): any T, the rest as the model's input; the model runs at length T */
            Shape want = input;
            want.d[0] = s.rank ? s.d[0] : 0;
            NNL_REQUIRE(s == want, NNL_ERR_SHAPE,
                        "%s: %s holds samples of shape %s, which do not fit the model's input %s (any length)", fn,
                        arg, s.str(false).c_str(), input.str(false, true).c_str());
            set_length(s.d[0], fn);
            return {x, shape[0]};
        }
        NNL_REQUIRE(s == input || (rank == 2 && per == input.size()), NNL_ERR_SHAPE,
                    "%s: %s holds samples of shape %s, which do not fit the model's input %s", fn, arg,
                    s.str(false).c_str(), input.str(false).c_str());
        return {x, shape[0]};
    }

    /* Converts y into float target rows (class ids for sparse losses),
       checking shapes and label ranges. */
    std::vector<float> check_y(const void *y, int dtype, int rank, const int64_t *shape, int64_t n, const char *fn,
                               const char *arg) const {
        NNL_REQUIRE(compiled, NNL_ERR_STATE, "%s: the model is not compiled: call nnl_compile first", fn);
        NNL_REQUIRE(y && shape, NNL_ERR_ARGUMENT, "%s: %s is NULL", fn, arg);
        NNL_REQUIRE(dtype_size(dtype) > 0, NNL_ERR_ARGUMENT, "%s: %s has unknown dtype code %d", fn, arg, dtype);
        NNL_REQUIRE(rank >= 1 && rank <= NNL_MAX_RANK + 1, NNL_ERR_SHAPE, "%s: %s has rank %d, out of range 1..%d",
                    fn, arg, rank, NNL_MAX_RANK + 1);
        NNL_REQUIRE(shape[0] == n, NNL_ERR_SHAPE, "%s: %s has %lld samples, but x has %lld", fn, arg,
                    (long long)shape[0], (long long)n);
        int64_t per = 1;
        for (int i = 1; i < rank; i++) {
            NNL_REQUIRE(shape[i] > 0, NNL_ERR_SHAPE, "%s: %s has dimension %d of size %lld", fn, arg, i,
                        (long long)shape[i]);
            per = mul_size(per, shape[i]);
        }
        int64_t tw = target_width(), C = classes();
        Shape ys = Shape::of(rank - 1, shape + 1);
        if (loss.sparse()) {
            NNL_REQUIRE(per == tw, NNL_ERR_SHAPE,
                        "%s: %s: %s wants one integer class id per %s, got samples of shape %s (for one-hot rows use "
                        "categorical_crossentropy)",
                        fn, arg, loss.name.c_str(), tw == 1 ? "sample" : "position", ys.str(false).c_str());
        } else {
            NNL_REQUIRE(per == out_shape().size(), NNL_ERR_SHAPE,
                        "%s: %s holds targets of shape %s, which do not match the model's output %s%s", fn, arg,
                        ys.str(false).c_str(), out_shape().str(false).c_str(),
                        (per == 1 && C > 1 && loss.kind == LOSS_CCE)
                            ? " (integer labels need sparse_categorical_crossentropy or nnl_to_categorical)"
                            : "");
        }
        int64_t count = mul_size(n, tw);
        NNL_REQUIRE(count >= 0 && count <= MAX_ELEMENTS, NNL_ERR_SHAPE,
                    "%s: %s of shape %s holds more values than a process can address", fn, arg,
                    io::shape_str(rank, shape).c_str());
        std::vector<float> t((size_t)count);
        if (dtype == NNL_FLOAT32) {
            memcpy(t.data(), y, t.size() * sizeof(float));
        } else if (dtype == NNL_FLOAT64) { /* regression targets stay fractional */
            for (int64_t i = 0; i < count; i++) t[(size_t)i] = (float)((const double *)y)[i];
        } else if (dtype == NNL_FLOAT16) {
            for (int64_t i = 0; i < count; i++) t[(size_t)i] = io::half_to_float(((const uint16_t *)y)[i]);
        } else {
            for (int64_t i = 0; i < count; i++) t[(size_t)i] = (float)label_at(y, dtype, i);
        }
        for (int64_t i = 0; i < count; i++) {
            float v = t[(size_t)i];
            NNL_REQUIRE(std::isfinite(v), NNL_ERR_NUMERIC, "%s: %s: value %lld (of sample %lld) is %g", fn, arg,
                        (long long)i, (long long)(i / tw), v);
            if (loss.sparse())
                NNL_REQUIRE(v >= 0 && v < C && v == std::floor(v), NNL_ERR_ARGUMENT,
                            "%s: %s: label %g of sample %lld is not a class id in [0, %lld)", fn, arg, v,
                            (long long)(i / tw), (long long)C);
        }
        return t;
    }

    /* Non-finite inputs are refused by every call that runs the model (fit,
       evaluate, predict, predict_classes) before it runs: a NaN or Inf in x
       would otherwise come back as a NaN loss or a confident class. */
    void check_finite(const float *x, int64_t n, int64_t per, const char *fn, const char *arg) const {
        /* the common case in one pass of integer ORs (vectorised; std::isfinite
           was a call per element, 1.5 us of a 784-value batch-1 prediction);
           the slow loop only finds the culprit */
        uint32_t ovf = 0;
        for (int64_t i = 0; i < n * per; i++) {
            uint32_t b;
            memcpy(&b, x + i, sizeof b);
            ovf |= (b & 0x7f800000u) + 0x00800000u; /* bit 31 set iff the exponent is all ones */
        }
        if (ovf & 0x80000000u)
            for (int64_t i = 0; i < n * per; i++)
                if (!std::isfinite(x[i]))
                    raise(NNL_ERR_NUMERIC,
                          "%s: %s: sample %lld holds a non-finite value (%g at index %lld of the sample)", fn, arg,
                          (long long)(i / per), x[i], (long long)(i % per));
        if (!layers.empty()) layers[0]->check_input(x, n, fn, arg); /* Embedding: ids in range */
    }

    /* The batch's rows into act[0] and targets; for a GPU model straight
       into a pinned staging buffer and on to the device (act[0]'s host copy
       is not read there: one copy of the batch on the host instead of two) */
    void gather(const float *x, const float *t, const int64_t *idx, int64_t B) {
        int64_t d = input.size(), tw = target_width();
        float *sx = gpu_stage(B * d), *xd = sx ? sx : act[0];
        /* the next row's first 4 KB asked for while this one is copied: a
           shuffled row starts where no prefetcher can guess it. K-MLP, a
           batch of 120 rows of 3,136 bytes out of 60,000 (Intel Xeon, one
           thread, the rows out of cache): 95-98 -> 68-80 us. Into L2
           (PREFETCHT1), not L1: a row's 49 lines asked for at once wait on
           L1's few miss buffers. AMD EPYC (Zen 4) VM, one thread, inside
           nnl_fit: 80-90 -> 50-53 us out of Fashion-MNIST, 49-50 -> 25-29
           us out of the 7.5 MB synthetic set; K-MLP training 208-212k ->
           221k samples/s (synthetic), 187-200k -> 213-214k (Fashion-MNIST) */
        const int64_t pf = std::min<int64_t>(d * (int64_t)sizeof(float), 4096);
        auto rows = [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; b++) {
                if (b + 1 < b1)
                    for (int64_t o = 0; o < pf; o += 64)
                        __builtin_prefetch((const char *)(x + idx[b + 1] * d) + o, 0, 2);
                memcpy(xd + b * d, x + idx[b] * d, (size_t)d * sizeof(float));
                /* targets stay on the host too: a loss computed there reads them */
                if (t) memcpy(targets + b * tw, t + idx[b] * tw, (size_t)tw * sizeof(float));
            }
        };
        /* each thread copies a contiguous share of the rows: the batch's
           lines were last read by every thread (the first layer's product
           reads all of it), so one thread alone writing them waits on the
           other core's copies being dropped (NNL_GATHER_SPLIT) */
        int64_t T = std::min<int64_t>(threads(), B);
        if (T > 1 && B * d >= NNL_GATHER_SPLIT)
            pool::run_chunks(T, (int)T, [&](int64_t c) { rows(B * c / T, B * (c + 1) / T); });
        else
            rows(0, B);
        if (sx) gpu_stage_upload(act[0], B * d);
        if (t) gpu_push(targets, B * tw);
    }

    /* Metric k's value from its sum over count samples (kept positions of
       a masked output; the loss-based perplexity counts samples). */
    double metric_value(size_t k, double sum, double count, double kept) const {
        double d = output_masked() && metrics[k].kind != M_PERPLEXITY ? kept : count;
        return metrics[k].final_value(d > 0 ? sum / d : 0.0);
    }

    /* Mean loss and metrics over n samples, in inference mode. In a
       distributed model (collective): the samples of this rank's shard (all
       n with NNL_DATA_LOCAL), the sums reduced over the ranks. */
    std::vector<double> evaluate(const float *x, const float *t, int64_t n, int64_t bs,
                                 const char *fn = "nnl_evaluate") {
        GpuScope gs(*this, false);
        size_t nm = metrics.size();
        std::vector<double> sums((size_t)StepReduce::size_for((int)nm), 0.0);
        StepReduce r{nullptr, nullptr, 0, sums.data(), (int)sums.size(), (int)nm};
        /* this rank's samples: first, first + stride, ... */
        int64_t first = 0, stride = 1;
        if (dist && !dist->local()) {
            first = dist->rank;
            stride = dist->size;
        }
        int64_t nr = n > first ? (n - first + stride - 1) / stride : 0;
        bs = std::max<int64_t>(1, std::min(bs, std::max<int64_t>(nr, 1)));
        collective_checks([&] {
            check_fixed_batch(nr, bs, fn, "samples");
            ensure_batch(bs, fn);
        });
        std::vector<int64_t> idx((size_t)bs);
        for (int64_t s = 0; s < nr; s += bs) {
            int64_t B = std::min(bs, nr - s);
            for (int64_t b = 0; b < B; b++) idx[(size_t)b] = first + (s + b) * stride;
            gather(x, t, idx.data(), B);
            forward(B, false, 0);
            r.loss() += loss_and_grad(B, nullptr, r.sums + 1, &r.kept());
            r.count() += (double)B;
        }
        if (dist) {
            dist->where = std::string(fn) + ": the reduction of the evaluated sums";
            dist->sum_all(r.sums, r.n_sums);
        }
        std::vector<double> out;
        out.push_back(r.count() > 0 ? r.loss() / r.count() : 0.0);
        for (size_t k = 0; k < nm; k++) out.push_back(metric_value(k, r.metric((int)k), r.count(), r.kept()));
        return out;
    }

    /* Forward passes in inference mode, batch by batch: rows(s, B, y) gets
       the outputs y (B, output size) of samples s .. s+B-1. crowd: the
       calls in flight on the model (InferPool; NULL: none counted); while
       more than one runs, a batch's kernels run on the calling thread alone
       (pool::Alone). No allocation once the arena has the batch size. */
    template <class Rows>
    void predict_rows(const float *x, int64_t n, int64_t bs, const char *fn, Rows rows,
                      const std::atomic<int> *crowd = nullptr) {
        GpuScope gs(*this, false);
        bs = std::max<int64_t>(1, std::min(bs, std::max<int64_t>(n, 1)));
        check_fixed_batch(n, bs, fn, "samples");
        ensure_batch(bs, fn);
        int64_t D = out_shape().size(), d = input.size();
        const bool direct = direct_input();
        for (int64_t s = 0; s < n; s += bs) {
            int64_t B = std::min(bs, n - s);
            if (!direct) {
                memcpy(act[0], x + s * d, (size_t)(B * d) * sizeof(float)); /* a batch is consecutive samples */
                gpu_push(act[0], B * d);
            }
            pool::Alone alone(crowd && crowd->load(std::memory_order_relaxed) > 1);
            forward(B, false, 0, direct ? x + s * d : nullptr);
            gpu_pull(act[layers.size()], B * D);
            rows(s, B, (const float *)act[layers.size()]);
        }
    }
    void predict(const float *x, int64_t n, int64_t bs, float *out, const char *fn = "nnl_predict",
                 const std::atomic<int> *crowd = nullptr) {
        int64_t D = out_shape().size();
        predict_rows(
            x, n, bs, fn,
            [&](int64_t s, int64_t B, const float *y) { memcpy(out + s * D, y, (size_t)(B * D) * sizeof(float)); },
            crowd);
    }

    /* ---- Concurrent inference (since 0.5) ----
       nnl_predict and nnl_predict_classes (and their _typed forms) may run
       on one model from many threads at once (a simulation's OpenMP loop),
       while nothing that changes the model runs. At inference the weights
       are only read; forward writes the activation arena and members of
       the layers (ws, sc and mask, planned for a batch size; Recurrent's
       packed U and dropout flags; Bidirectional's bound copies). So a call
       computes either in the model itself, when it is free (own: one
       try_lock, so that a program predicting from one thread runs as
       before, in the same arena), or in an inference copy: every layer
       cloned (Layer::clone, sharing W), with an arena of its own for
       forward only, taken from and given back to this pool under mu. A copy
       is made only when a call finds the model and every copy busy, so the
       pool grows to the most calls seen at once less one; after that a
       call allocates nothing: one in the model costs a try_lock, one in a
       copy that and mu twice (take, give back). A copy is
       made from the model's layers at rest, under own, which that call then
       computes in itself. Copies made for another plan (replan: layers,
       compile, set_device) are dropped at the next take.
       Calls that would change the model in place wait for one another on
       own and run one at a time (serial_inference): a model with stateful
       layers (forward writes the states), a variable-length model (each
       call's length re-plans the layers, check_x), a model on a GPU (one
       device mirror of one arena), and one with a layer that cannot be
       copied. Serializing rather than refusing keeps a correct program
       correct whatever its model; the documentation says which run alone.
       While more than one call runs, each runs its kernels on its own
       thread (crowd, pool::Alone): the callers' threads are the
       parallelism. */
    struct InferPool {
        Mutex own;                               /* the model's own arena and layers */
        Mutex mu;                                /* all, idle, gen */
        std::vector<std::unique_ptr<Model>> all; /* the copies */
        std::vector<Model *> idle;               /* those not in use (capacity: all of them) */
        uint64_t gen = 0;                        /* the plan_gen the copies were made for */
        std::atomic<int> inflight{0};            /* calls on the model now */
        std::atomic<bool> no_copies{false};      /* a layer could not be copied (Layer::clone) */
        InferPool() {}
        /* a model copied or moved has no copies: they point into the
           source's weights */
        InferPool(const InferPool &) {}
        InferPool &operator=(const InferPool &) {
            idle.clear();
            all.clear();
            no_copies = false;
            return *this;
        }
    };
    mutable InferPool infer_pool; /* nnl_output_shape takes own too (a variable-length model) */

    bool serial_inference() const {
        if (var_len || gpu || infer_pool.no_copies.load(std::memory_order_relaxed)) return true;
        for (auto &l : layers)
            if (!l->states.empty()) return true; /* stateful: forward writes the states */
        return false;
    }
    /* copies made for another plan are dropped (they are idle: that
       change ran alone); under mu */
    void drop_stale_copies() {
        InferPool &p = infer_pool;
        if (p.gen == plan_gen) return;
        p.idle.clear();
        p.all.clear();
        p.gen = plan_gen;
    }
    /* an idle copy, or NULL; under mu */
    Model *take_copy() {
        InferPool &p = infer_pool;
        Hold g(p.mu);
        drop_stale_copies();
        if (p.idle.empty()) return nullptr;
        Model *r = p.idle.back();
        p.idle.pop_back();
        return r;
    }
    void give_back(Model *r) {
        Hold g(infer_pool.mu);
        infer_pool.idle.push_back(r); /* no allocation: idle has room for all */
    }
    /* One more idle copy, made from the layers at rest: the caller holds own. */
    void add_copy() {
        std::unique_ptr<Model> r(new Model);
        r->input = input;
        r->has_input = has_input;
        r->infer_only = true;
        r->precision = precision;
        for (auto &l : layers) {
            std::unique_ptr<Layer> c = l->clone();
            if (!c) {
                infer_pool.no_copies = true;
                return;
            }
            c->ws = c->sc = c->mask = nullptr; /* the copy's plan sets them */
            r->layers.push_back(std::move(c));
        }
        InferPool &p = infer_pool;
        Hold g(p.mu);
        drop_stale_copies();
        p.all.push_back(std::move(r));
        p.idle.reserve(p.all.size());
        p.idle.push_back(p.all.back().get());
    }
    /* While a prediction runs in workspace `on` of this model (infer), the
       bf16 words of its Dense and convolution kernels are kept in on's
       cache, for this model's weight version: mixed_bfloat16 on
       AVX512-BF16, on the CPU, and not nested in a call that changes the
       model. */
    struct WeightCacheScope {
        gemm::bf16::WeightCache *prev;
        uint64_t prev_ver;
        WeightCacheScope(const Model &src, Model &on) : prev(gemm::bf16::tl_wcache), prev_ver(gemm::bf16::tl_wcache_ver) {
            bool use = src.precision == &bf16_kernels && !src.gpu && src.mutating == 0;
            gemm::bf16::tl_wcache = use ? &on.wcache : nullptr;
            gemm::bf16::tl_wcache_ver = src.wver;
        }
        ~WeightCacheScope() {
            gemm::bf16::tl_wcache = prev;
            gemm::bf16::tl_wcache_ver = prev_ver;
        }
        WeightCacheScope(const WeightCacheScope &) = delete;
        WeightCacheScope &operator=(const WeightCacheScope &) = delete;
    };
    /* run_on(on, crowd) in the model itself or in an inference copy (see
       InferPool); on: where to compute, crowd: the calls in flight. The
       checks of the call run inside run_on, against this model. */
    template <class F> void infer(F run_on) {
        auto run = [&](Model &on, const std::atomic<int> *crowd) {
            WeightCacheScope wc(*this, on);
            run_on(on, crowd);
        };
        InferPool &p = infer_pool;
        if (serial_inference()) { /* one at a time: the one running has the pool's workers */
            Hold g(p.own);
            run(*this, nullptr);
            return;
        }
        struct InFlight {
            std::atomic<int> &n;
            explicit InFlight(std::atomic<int> &n_) : n(n_) { n.fetch_add(1); }
            ~InFlight() { n.fetch_sub(1); }
        } in_flight(p.inflight);
        if (p.own.try_lock()) {
            Hold g(p.own, Hold::Adopt());
            run(*this, &p.inflight);
            return;
        }
        Model *r = take_copy();
        if (!r) { /* the model and every copy busy: one more copy, from the model at rest */
            Hold g(p.own);
            add_copy();
            run(*this, &p.inflight);
            return;
        }
        struct GiveBack {
            Model *m, *r;
            ~GiveBack() { m->give_back(r); }
        } give{this, r};
        run(*r, &p.inflight);
    }

    std::vector<std::string> log_names(bool val) const {
        std::vector<std::string> k{"loss"};
        for (auto &m : metrics) k.push_back(m.name);
        if (val) {
            size_t n = k.size();
            for (size_t i = 0; i < n; i++) k.push_back("val_" + k[i]);
        }
        return k;
    }

    void record(const std::vector<std::string> &keys, const std::vector<double> &vals) {
        for (size_t i = 0; i < keys.size(); i++) {
            size_t j = std::find(hist_keys.begin(), hist_keys.end(), keys[i]) - hist_keys.begin();
            if (j == hist_keys.size()) {
                hist_keys.push_back(keys[i]);
                hist.emplace_back((size_t)hist_epochs, NAN);
            }
        }
        for (size_t j = 0; j < hist_keys.size(); j++) {
            size_t i = std::find(keys.begin(), keys.end(), hist_keys[j]) - keys.begin();
            hist[j].push_back(i < keys.size() ? vals[i] : NAN);
        }
        hist_epochs++;
    }

    void fit(const float *x, int x_rank, const int64_t *x_shape, const void *y, int y_dtype, int y_rank,
             const int64_t *y_shape, const nnl_fit_options &o, nnl_model *handle);
    /* A distributed model: rank 0's weights, optimizer state and RNG on
       every rank (section 6c). */
    void bcast_state();

    std::string summary() const;
};

/* Keras' progress line: "450/450 [=====>....] - 2s 4ms/step - loss: 0.3412 - accuracy: 0.9032" */
struct Progress {
    FILE *f;
    int verbose;
    bool tty;
    double t0, last = 0;
    int64_t steps;
    Progress(FILE *f_, int v, int64_t steps_) : f(f_), verbose(v), steps(steps_) {
        tty = isatty(fileno(f));
        t0 = now_seconds();
    }
    static std::string logs(const std::vector<std::string> &k, const double *v, size_t n) {
        std::string s;
        for (size_t i = 0; i < n; i++) s += format(" - %s: %.4f", k[i].c_str(), v[i]);
        return s;
    }
    static std::string dur(double s) {
        if (s >= 1) return format("%.0fs", s);
        if (s >= 1e-3) return format("%.0fms", s * 1e3);
        return format("%.0fus", s * 1e6);
    }
    void batch(int64_t step, const std::vector<std::string> &k, const double *v, size_t n) {
        if (verbose != 1 || !tty) return;
        double t = now_seconds();
        if (step < steps && t - last < 0.1) return;
        last = t;
        int w = 30, done = (int)(w * step / std::max<int64_t>(steps, 1));
        std::string bar(done, '=');
        if (step < steps) bar += '>';
        bar.resize(w, '.');
        double per = (t - t0) / std::max<int64_t>(step, 1);
        fprintf(f, "\r%*lld/%lld [%s] - %s %s/step%s", (int)std::to_string(steps).size(), (long long)step,
                (long long)steps, bar.c_str(), step < steps ? ("ETA: " + dur(per * (steps - step))).c_str() : dur(t - t0).c_str(),
                dur(per).c_str(), logs(k, v, n).c_str());
        fprintf(f, "\033[K");
        fflush(f);
    }
    void epoch_end(const std::vector<std::string> &k, const std::vector<double> &v) {
        double t = now_seconds() - t0;
        double per = t / std::max<int64_t>(steps, 1);
        if (verbose == 1) {
            std::string bar(30, '=');
            if (tty) fprintf(f, "\r");
            fprintf(f, "%lld/%lld [%s] - %s %s/step%s", (long long)steps, (long long)steps, bar.c_str(),
                    dur(t).c_str(), dur(per).c_str(), logs(k, v.data(), v.size()).c_str());
            if (tty) fprintf(f, "\033[K");
            fprintf(f, "\n");
        } else if (verbose >= 2) {
            fprintf(f, "%lld/%lld - %s - %s/step%s\n", (long long)steps, (long long)steps, dur(t).c_str(),
                    dur(per).c_str(), logs(k, v.data(), v.size()).c_str());
        }
        fflush(f);
    }
};

void Model::fit(const float *x, int x_rank, const int64_t *x_shape, const void *y, int y_dtype, int y_rank,
                const int64_t *y_shape, const nnl_fit_options &o, nnl_model *handle) {
    /* Checks first; in a distributed model every rank learns whether any
       rank's failed (collective_checks), before anything changes. */
    InputArray X;
    std::vector<float> T, TV;
    const float *xv = nullptr, *tv = nullptr;
    int64_t nv = 0, nt = 0, d = input.size();
    /* Data parallel: N ranks, this one R. A step's global batch is G
       positions of the epoch's order; rank R takes positions R, R+N, ... of
       it (NNL_DATA_SHARDED). With NNL_DATA_LOCAL every rank's own data
       makes its batches of bs. One process: N = 1, G = bs. */
    int64_t N = dist ? dist->size : 1, R = dist_rank();
    bool sharded = dist && !dist->local();
    int64_t bs = 0, G = 0, steps = 0, cap = 0;
    collective_checks([&] {
        NNL_REQUIRE(compiled, NNL_ERR_STATE, "fit: the model is not compiled: call nnl_compile first");
        /* (a layer added after nnl_set_device and nnl_distribute refused it) */
        NNL_REQUIRE(!dist || !gpu || !sync_bn_layers(*this, dist->flags), NNL_ERR_UNSUPPORTED,
                    "nnl_fit: a synchronised BatchNormalization (NNL_SYNC_BATCHNORM) runs on the CPU in this version, "
                    "and the model is on a GPU (nnl_set_device(m, \"cpu\"), or distribute it without the flag)");
        X = check_x(x, x_rank, x_shape, "nnl_fit", "x");
        T = check_y(y, y_dtype, y_rank, y_shape, X.n, "nnl_fit", "y");
        NNL_REQUIRE(o.epochs >= 0 && o.batch_size >= 1, NNL_ERR_ARGUMENT,
                    "fit: epochs must be >= 0 and batch_size >= 1");
        NNL_REQUIRE(o.validation_split >= 0 && o.validation_split < 1, NNL_ERR_ARGUMENT,
                    "fit: validation_split must be in [0, 1), got %g", o.validation_split);
        NNL_REQUIRE(o.initial_epoch >= 0, NNL_ERR_ARGUMENT, "fit: initial_epoch must be >= 0");
        d = input.size();
        check_finite(X.x, X.n, d, "nnl_fit", "x");
        /* Validation: explicit data, or the LAST fraction before any shuffling. */
        nt = X.n;
        if (o.x_val) {
            int64_t len = input.d[0];
            InputArray V = check_x(o.x_val, o.x_val_rank, o.x_val_shape, "nnl_fit", "x_val");
            NNL_REQUIRE(!var_len || input.d[0] == len, NNL_ERR_SHAPE,
                        "nnl_fit: x_val has sequences of %lld steps, x of %lld; a variable-length model validates "
                        "at x's length (pad x_val to it, or evaluate it separately)",
                        (long long)input.d[0], (long long)len);
            TV = check_y(o.y_val, o.y_val_dtype, o.y_val_rank, o.y_val_shape, V.n, "nnl_fit", "y_val");
            check_finite(V.x, V.n, d, "nnl_fit", "x_val");
            xv = V.x;
            tv = TV.data();
            nv = V.n;
        } else if (o.validation_split > 0) {
            nt = (int64_t)((double)X.n * (1.0 - o.validation_split)); /* Keras: int(n * (1 - split)) */
            nv = X.n - nt;
            xv = X.x + nt * d;
            tv = T.data() + nt * target_width();
        }
        NNL_REQUIRE(nt > 0 || (dist && dist->local()), NNL_ERR_ARGUMENT,
                    "fit: no training samples left (n = %lld, validation_split = %g)", (long long)X.n,
                    o.validation_split);
        if (sharded) {
            G = (dist->flags & NNL_GLOBAL_BATCH) ? (int64_t)o.batch_size : mul_size(o.batch_size, N);
            NNL_REQUIRE(G >= N, NNL_ERR_ARGUMENT,
                        "fit: a global batch of %lld samples leaves some of the %lld ranks without any (use a batch "
                        "size of at least the number of ranks)",
                        (long long)G, (long long)N);
            G = std::min(G, nt);
            bs = (G + N - 1) / N;
            if (has_slot_states())
                NNL_REQUIRE(nt % G == 0 && G % N == 0, NNL_ERR_SHAPE,
                            "nnl_fit: the model has stateful layers, which need batches of one fixed size on every "
                            "rank; %lld training samples do not split into global batches of %lld (%lld ranks)",
                            (long long)nt, (long long)G, (long long)N);
            check_fixed_batch(bs, bs, "nnl_fit", "training samples");
        } else {
            bs = std::min<int64_t>(o.batch_size, std::max<int64_t>(nt, 1));
            G = bs;
            check_fixed_batch(nt, bs, "nnl_fit", "training samples");
        }
        if (nv > 0 && sharded && has_slot_states())
            NNL_REQUIRE(nv % G == 0, NNL_ERR_SHAPE,
                        "nnl_fit: the model has stateful layers; %lld validation samples do not split into global "
                        "batches of %lld (%lld ranks)",
                        (long long)nv, (long long)G, (long long)N);
        else if (nv > 0)
            check_fixed_batch(nv, bs, "nnl_fit", "validation samples");
        ensure_batch(bs, "nnl_fit");
    });
    bool val = nv > 0;
    if (dist) {
        dist->where = "nnl_fit: the start of training";
        /* the options every rank must share */
        std::vector<std::pair<const char *, int64_t>> same = {{"epochs", o.epochs},
                                                              {"batch_size", o.batch_size},
                                                              {"initial_epoch", o.initial_epoch},
                                                              {"shuffle", o.shuffle},
                                                              {"reset_states", o.reset_states},
                                                              {"seed", (int64_t)o.seed},
                                                              {"validation (0 none, 1 split, 2 x_val)",
                                                               o.x_val ? 2 : o.validation_split > 0 ? 1 : 0}};
        if (sharded) {
            same.push_back({"the number of samples in x", X.n});
            same.push_back({"the number of validation samples", nv});
        }
        dist->same("nnl_fit", same);
        dist->any_callback = dist->any(o.callback != nullptr);
        if (!sharded) steps = dist->max_all((nt + bs - 1) / bs);
        bcast_state(); /* rank 0's weights, optimizer state and RNG on every rank */
    }
    if (!dist || sharded) steps = (nt + G - 1) / G;
    cap = bs;
    GpuScope gs(*this, true); /* on a GPU: the weights come back to W when fit returns */

    /* Shuffling and dropout draw from the model's RNG, which continues from
       fit to fit (and is saved in model files); with o.seed, epoch e draws
       from a stream of (seed, e) alone, so a run resumed at initial_epoch
       (nnl_load_model) repeats the uninterrupted run exactly. A distributed
       run draws the same on every rank (rank 0's RNG was broadcast): the
       same permutation; dropout masks differ by rank. */
    Rng r = rng;
    std::vector<int64_t> idx((size_t)nt), bidx((size_t)cap);
    for (int64_t i = 0; i < nt; i++) idx[(size_t)i] = i;
    std::vector<std::string> keys = log_names(val);
    size_t nm = metrics.size();
    std::vector<double> msum(nm), logs(1 + nm);
    FILE *f = o.log ? o.log : stdout;
    int verbose = writer() ? o.verbose : 0; /* rank 0 alone prints */
    bool stop = false;

    for (int epoch = o.initial_epoch; epoch < o.epochs && !stop; epoch++) {
        if (verbose == 1) fprintf(f, "Epoch %d/%d\n", epoch + 1, o.epochs);
        Progress prog(f, verbose, steps);
        if (o.seed) r.reseed(epoch == 0 ? o.seed : mix64(o.seed ^ mix64((uint64_t)epoch)));
        if (o.reset_states) reset_states(); /* Keras: a callback calling model.reset_states() */
        /* each epoch shuffles the identity: its order depends on the RNG alone */
        for (int64_t i = 0; i < nt; i++) idx[(size_t)i] = i;
        if (o.shuffle) {
            Rng pr = r; /* NNL_DATA_LOCAL: each rank its own order (its own data) */
            if (dist && !sharded) pr.reseed(mix64(r.next() + (uint64_t)R));
            Rng &q = (dist && !sharded) ? pr : r;
            for (int64_t i = nt - 1; i > 0; i--) std::swap(idx[(size_t)i], idx[(size_t)q.below((uint64_t)i + 1)]);
        }
        double lsum = 0, seen = 0, kept = 0;
        std::fill(msum.begin(), msum.end(), 0.0);
        int64_t done = 0;
        for (int64_t s = 0; s < steps && !stop; s++) {
            /* this rank's samples of step s */
            int64_t B;
            const int64_t *bi;
            if (sharded) {
                int64_t Gs = std::min(G, nt - s * G);
                B = Gs > R ? (Gs - R + N - 1) / N : 0;
                for (int64_t k = 0; k < B; k++) bidx[(size_t)k] = idx[(size_t)(s * G + R + k * N)];
                bi = bidx.data();
            } else {
                B = std::max<int64_t>(0, std::min(bs, nt - s * bs));
                bi = idx.data() + std::min(s * bs, nt);
            }
            uint64_t bseed = r.next();
            if (R > 0) bseed = mix64(bseed ^ mix64((uint64_t)R)); /* each rank its own dropout masks */
            if (B > 0) gather(X.x, T.data(), bi, B);
            if (dist) {
                dist->where = format("nnl_fit: the gradient reduction of epoch %d, batch %lld", epoch + 1,
                                     (long long)s + 1);
                /* sharded, unmasked: every rank knows the step's global batch */
                dist->known_total = sharded && !output_masked() ? (double)std::min(G, nt - s * G) : 0.0;
            }
            /* from here on, only the step's reduced values count */
            StepReduce st = train_step(B, bseed);
            if (st.nonfinite() > 0)
                raise(NNL_ERR_NUMERIC,
                      "fit: the loss or its gradient became %s at epoch %d, batch %lld%s; the update was not applied "
                      "and the weights are those of the last good step (lower the learning rate, or check the data)",
                      std::isnan(st.loss()) ? "NaN" : "non-finite", epoch + 1, (long long)s + 1,
                      dist ? " (on at least one rank)" : "");
            lsum += st.loss();
            seen += st.count();
            kept += st.kept();
            for (size_t k = 0; k < nm; k++) msum[k] += st.metric((int)k);
            done++;
            logs[0] = seen > 0 ? lsum / seen : 0.0;
            for (size_t k = 0; k < nm; k++) logs[1 + k] = metric_value(k, msum[k], seen, kept);
            prog.batch(s + 1, keys, logs.data(), logs.size());
            if (o.callback) gpu_sync_host(*this); /* the callback may read or write the weights */
            if (o.callback && o.callback(o.callback_user, handle, NNL_EVENT_BATCH_END, epoch, s, logs.data(),
                                         (int)logs.size()))
                stop = true;
            if (o.callback) gpu_sync_device(*this);
            if (dist && dist->any_callback) stop = dist->any(stop); /* one rank stops: all stop */
        }
        if (done < steps) break; /* stopped inside the epoch: it is not recorded */
        std::vector<double> row(logs.begin(), logs.end());
        if (val) {
            std::vector<double> v = evaluate(xv, tv, nv, bs, "nnl_fit");
            row.insert(row.end(), v.begin(), v.end());
        }
        prog.epoch_end(keys, row);
        record(keys, row);
        if (o.callback) gpu_sync_host(*this);
        if (o.callback && o.callback(o.callback_user, handle, NNL_EVENT_EPOCH_END, epoch, steps, row.data(),
                                     (int)row.size()))
            stop = true;
        if (o.callback) gpu_sync_device(*this);
        if (dist && dist->any_callback) stop = dist->any(stop);
    }
    rng = r;
    if (dist) { /* the replicas must hold the same weights: a cheap check */
        dist->where = "nnl_fit: the end of training";
        gpu_sync_host(*this); /* a GPU model: its weights are the device's */
        uint64_t h = 0x9E3779B97F4A7C15ull;
        for (auto &sl : slices)
            for (int64_t i = 0; i < sl.n; i++) {
                uint32_t u;
                memcpy(&u, sl.w + i, 4);
                h = (h ^ u) * 0x100000001B3ull;
            }
        NNL_REQUIRE(dist->replicas_equal(h), NNL_ERR_INTERNAL,
                    "nnl_fit: after training, the ranks' weights differ (the replicas drifted): a callback that "
                    "changed the weights or the learning rate on some ranks only? Otherwise please report this");
    }
}

static std::string with_commas(int64_t v) {
    std::string s = std::to_string(v);
    for (int i = (int)s.size() - 3; i > 0; i -= 3) s.insert((size_t)i, ",");
    return s;
}

static std::string bytes_str(double b) {
    if (b < 1024) return format("%.2f Byte", b);
    if (b < 1024 * 1024) return format("%.2f KB", b / 1024);
    return format("%.2f MB", b / (1024 * 1024));
}

std::string Model::summary() const {
    std::string s = "Model: \"sequential\"\n";
    /* tf.keras' 65-column table (columns at 29 and 55), widened as Keras 3
       does when a name, type or shape is longer: every column fits its
       longest entry, so the columns stay aligned. */
    auto cols = [](const std::string &t) { /* characters, not bytes: names may be UTF-8 */
        size_t n = 0;
        for (unsigned char c : t) n += (c & 0xC0) != 0x80;
        return n;
    };
    size_t w1 = 29, w2 = 26, w3 = 10;
    for (auto &l : layers) {
        w1 = std::max(w1, cols(l->name) + strlen(l->cls) + 5);
        w2 = std::max(w2, l->out.str(true, l->var_out).size() + 1);
        w3 = std::max(w3, with_commas(l->param_count()).size() + 1);
    }
    std::string rule(w1 + w2 + w3, '_'), dbl(w1 + w2 + w3, '=');
    auto pad = [&](std::string &r, size_t to) { /* to column `to`, and at least one space */
        size_t n = cols(r);
        r.append(n < to ? to - n : 1, ' ');
    };
    auto row = [&](const std::string &a, const std::string &b, const std::string &c) {
        std::string r = " " + a;
        pad(r, w1);
        r += b;
        pad(r, w1 + w2);
        r += c;
        return r + "\n";
    };
    s += rule + "\n" + row("Layer (type)", "Output Shape", "Param #") + dbl + "\n";
    int64_t total = 0, trainable = 0;
    for (size_t i = 0; i < layers.size(); i++) {
        const Layer &l = *layers[i];
        s += row(l.name + " (" + l.cls + ")", l.out.str(true, l.var_out), with_commas(l.param_count()));
        s += i + 1 < layers.size() ? "\n" : "";
        total += l.param_count();
        trainable += l.param_count(true);
    }
    int64_t fixed = total - trainable;
    s += dbl + "\n";
    s += "Total params: " + with_commas(total) + " (" + bytes_str(4.0 * total) + ")\n";
    s += "Trainable params: " + with_commas(trainable) + " (" + bytes_str(4.0 * trainable) + ")\n";
    s += "Non-trainable params: " + with_commas(fixed) + " (" + bytes_str(4.0 * fixed) + ")\n" + rule + "\n";
    return s;
}

} // namespace nnl

struct nnl_model : nnl::Model {};

namespace nnl {
/* Every API call on a model but the predict calls: Model::wver one more at
   its start and at its end (the bf16 words kept for predictions are made
   again after it), Model::mutating while it runs. */
struct Mutation {
    Model *m;
    explicit Mutation(Model *m_) : m(m_) {
        if (m) m->wver++, m->mutating++;
    }
    ~Mutation() {
        if (m) m->mutating--, m->wver++;
    }
    Mutation(const Mutation &) = delete;
    Mutation &operator=(const Mutation &) = delete;
};
} // namespace nnl
#define NNL_MUTATING(m) \
    NNL_CHECK_MODEL(m); \
    nnl::Mutation nnl_mutation_(m)

/* ========================================================================
   6b GPU backend (compiled with -DNNL_CUDA; nnlite_cuda.cu holds the kernels)
   A model on a GPU keeps every host array it has: W, G, the activation
   arena and the optimizer slots are the address space that layers, losses
   and optimizers compute with, exactly as on the CPU. Each has a device
   mirror of the same layout; the CUDA kernel table below translates every
   host address it is given into its mirror, so layers run unchanged.
   - Weights, slots and the persistent states of stateful layers (S) move
     to the device once; before each call the host
     copies are compared with what was last synchronised (a set_weight or a
     checkpoint load in between is uploaded), and fit copies them back when
     it returns (and around callbacks), so get_weight, summary and save read
     current values from W and the optimizer's slots.
   - Per batch: the inputs and targets go up (pinned staging, async), every
     loss and metric runs on the device and comes back as a few numbers (a
     step-masked output, from Embedding(mask_zero=True) or Masking, takes
     the host loss: the outputs and the mask come down, the gradient goes
     up), and the update runs as one fused kernel per tensor.
   - The synchronisations and host decisions of an eager step: the loss
     and metric sums come down (gpu_loss: one wait), the gradients' sum of
     squares comes down (train_step's finiteness check: one wait; the host
     then decides whether to update), clipnorm and global_clipnorm bring
     norms down (one wait per tensor or one in all), Embedding brings its
     ids down. Host values that change per step (the dropout step seed, the
     optimizer's learning rate, decay and bias corrections) are read by the
     kernels from device memory (nnlite_cuda.h, CUDA graphs). Allocations
     happen only while warming up (scratch that grows, optimizer slots made
     after the first step, mirrors re-laid for a larger batch).
   - CUDA graphs (gpu_graph_step, below): the steady-state step of a model
     of pure-kernel layers replayed as two graphs with one wait between
     them (the finiteness decision), bit for bit the eager step.
   - The step mask (Model::maskbuf) has a device mirror like the arena's:
     the layers that make it (Embedding, Masking) write it there.
   - Embedding's gradient sorts the batch's ids on the host (they come down
     once per step: a synchronisation) and sums each id's rows on the device
     in row order, without atomics (cu_embedding_grad).
   - The recurrent layers (SimpleRNN, LSTM, GRU) run a step as the
     recurrent K().sgemm plus one cell entry (lstm_forward, gru_forward,
     simple_forward and their backward; GRU with reset_after=False two
     each way, around its inner product); their state rows and a masked
     row's dh go through rnn_rows. dropout and recurrent_dropout: the masks
     are drawn on the device (dropout_mask: the Dropout layer's counter-
     based hash, so the CPU's masks bit for bit, nothing uploaded) and
     applied by mul_rows. Bidirectional runs its two copies so and merges
     them with bidir_merge (backward: bidir_split, and add for dx), the
     backward copy's time reversal in the indexing. Compiled, not yet run
     on a GPU.
   - Every built-in layer has a GPU path since issue 15. A layer whose
     code loops over data on the host (gpu_path() false: a layer of the
     tests' own, a future one) is refused by name with
     NNL_ERR_UNSUPPORTED, as is a model of any sequence length (var_len).
   ======================================================================== */
namespace nnl {

/* The layers of m with no GPU path (Layer::gpu_path false: none of the
   built-in ones since issue 15; a layer of the tests' own), as
   "layer 'lstm' (LSTM)" or "layers 'lstm' (LSTM), 'gru' (GRU)";
   empty when every layer has one. Both builds name them: the CUDA build
   refuses such a model before it looks for a device, the CPU-only build
   adds them to its "built without CUDA" message. */
[[maybe_unused]] static std::string gpu_missing_layers(const Model &m) {
    std::string s;
    int n = 0;
    for (auto &l : m.layers)
        if (!l->gpu_path()) {
            s += format("%s'%s' (%s)", n ? ", " : "", l->name.c_str(), l->cls);
            n++;
        }
    return n ? (n == 1 ? "layer " : "layers ") + s : s;
}

/* Layers whose forward and backward go through K() only say so
   (Layer::gpu_path); the others are refused by name. */
[[maybe_unused]] static void gpu_check_layers(const Model &m) {
    NNL_REQUIRE(!m.var_len, NNL_ERR_UNSUPPORTED,
                "the model takes sequences of any length (input_shape=(None, ...)), which has no GPU path yet; "
                "keep this model on the CPU");
    std::string miss = gpu_missing_layers(m);
    NNL_REQUIRE(miss.empty(), NNL_ERR_UNSUPPORTED, "%s %s no GPU path yet (GPU layers: %s); keep this model on the CPU",
                miss.c_str(), miss.rfind("layers ", 0) == 0 ? "have" : "has", gpu_layer_names().c_str());
}

/* Embedding's gradient without atomics: the batch's ids (host memory) as
   per-id row lists. Keys id << 32 | row, sorted, give the distinct ids in
   increasing order and each id's rows in increasing order, so that the
   device sums each (id, column) in the CPU's order of additions
   (cpu_embedding_grad): the same gradient bit for bit. csr = [uniq (U) |
   start (U + 1) | order (rows)]: id uniq[k] is held by rows order[start[k]
   .. start[k + 1]). marks (may be NULL): marks[id] = 1 for each id present.
   Returns U. The ids were checked on the host before the batch ran
   (check_input); one out of [0, V) here is a bug, refused before any device
   write. Plain host code, outside NNL_CUDA: the CPU unit tests check it. */
[[maybe_unused]] static int64_t embedding_rows(const float *ids, int64_t rows, int64_t V, uint8_t *marks,
                                               std::vector<uint64_t> &keys, std::vector<int32_t> &csr) {
    NNL_REQUIRE(rows >= 0 && rows < ((int64_t)1 << 31), NNL_ERR_UNSUPPORTED,
                "GPU backend: Embedding over %lld ids in one batch (at most 2^31 - 1 on a GPU)", (long long)rows);
    keys.resize((size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        float v = ids[r];
        NNL_REQUIRE(v >= 0 && v < (float)V && v == std::floor(v), NNL_ERR_INTERNAL,
                    "GPU backend: Embedding id %g at row %lld is not in [0, %lld) (a bug: ids are checked before a "
                    "batch runs)",
                    (double)v, (long long)r, (long long)V);
        uint64_t id = (uint64_t)v;
        if (marks) marks[id] = 1;
        keys[(size_t)r] = id << 32 | (uint64_t)r;
    }
    std::sort(keys.begin(), keys.end());
    int64_t U = 0;
    for (int64_t i = 0; i < rows; i++) U += i == 0 || (keys[(size_t)i] >> 32) != (keys[(size_t)i - 1] >> 32);
    csr.resize((size_t)(U + U + 1 + rows));
    int32_t *uniq = csr.data(), *start = uniq + U, *order = start + U + 1;
    int64_t k = -1;
    for (int64_t i = 0; i < rows; i++) {
        uint64_t key = keys[(size_t)i];
        if (i == 0 || (key >> 32) != (keys[(size_t)i - 1] >> 32)) {
            k++;
            uniq[k] = (int32_t)(key >> 32);
            start[k] = (int32_t)i;
        }
        order[i] = (int32_t)(key & 0xffffffffu);
    }
    start[U] = (int32_t)rows;
    return U;
}
} // namespace nnl

#ifdef NNL_CUDA
#include "nnlite_cuda.h"

namespace nnl {

static_assert((int)ACT_LINEAR == (int)nnl_cuda::A_LINEAR && (int)ACT_RELU == (int)nnl_cuda::A_RELU &&
                  (int)ACT_SIGMOID == (int)nnl_cuda::A_SIGMOID && (int)ACT_TANH == (int)nnl_cuda::A_TANH &&
                  (int)ACT_SOFTMAX == (int)nnl_cuda::A_SOFTMAX && (int)ACT_LEAKY_RELU == (int)nnl_cuda::A_LEAKY_RELU &&
                  (int)ACT_ELU == (int)nnl_cuda::A_ELU && (int)ACT_SELU == (int)nnl_cuda::A_SELU && (int)ACT_GELU == (int)nnl_cuda::A_GELU &&
                  (int)ACT_SOFTPLUS == (int)nnl_cuda::A_SOFTPLUS && (int)ACT_SOFTSIGN == (int)nnl_cuda::A_SOFTSIGN &&
                  (int)ACT_SWISH == (int)nnl_cuda::A_SWISH && (int)ACT_HARD_SIGMOID == (int)nnl_cuda::A_HARD_SIGMOID &&
                  (int)ACT_EXPONENTIAL == (int)nnl_cuda::A_EXPONENTIAL && (int)ACT_COUNT == (int)nnl_cuda::A_COUNT,
              "nnl::Act and nnl_cuda's activation numbers differ");
static_assert(sizeof(Window) == sizeof(nnl_cuda::Win), "nnl::Window and nnl_cuda::Win differ");

[[noreturn]] static void cuda_raise(int status, const char *msg) { raise(status, "%s", msg); }

/* A host range and its device mirror. seen: the host values last
   synchronised (weights and slots only), to notice host-side writes. */
struct Mirror {
    const float *h = nullptr;
    size_t n = 0;
    float *d = nullptr;
    std::vector<float> seen;
    bool holds(const float *p) const { return h && p >= h && p <= h + n; }
};

struct GpuModel {
    nnl_cuda::Context *ctx = nullptr;
    int device = 0;
    std::string name; /* "cuda:0" */
    Mirror W, G, arena, S; /* S: the persistent states of stateful layers */
    Mirror mask;           /* the step mask (Model::maskbuf), written on the device */
    std::vector<Mirror> slots;
    std::vector<float> ids;       /* Embedding's ids of the step, brought down (cu_embedding_grad) */
    std::vector<uint64_t> keys;   /* (id, row) pairs, sorted */
    std::vector<int32_t> csr;     /* the rows by id, as nnl_cuda::embedding_grad takes them */
    float *stage[2] = {nullptr, nullptr}; /* pinned staging for batch copies */
    size_t stage_n[2] = {0, 0};
    void *stage_ev[2] = {nullptr, nullptr};
    int next_stage = 0;
    bool unnumbered = false; /* placed by "cuda" (nnl_distribute then picks the rank's device) */
    float *gstage = nullptr; /* pinned: the gradients of a distributed model on their way (gpu_grad_stage) */
    size_t gstage_n = 0;
    int depth = 0; /* nested scopes (evaluate inside fit) */
    Model *model = nullptr;
    /* every (re)allocation of a mirror bumps it: a captured graph holds the
       mirrors' device addresses */
    uint64_t gen = 0;
    /* CUDA graphs of the training step (gpu_graph_step), kept within one fit */
    struct GraphKey {
        int64_t B = -1;
        uint64_t gen = 0, sgen = 0; /* GpuModel::gen, nnl_cuda::scratch_generation() */
        bool operator==(const GraphKey &o) const { return B == o.B && gen == o.gen && sgen == o.sgen; }
    };
    bool graphs_on = false; /* NNL_CUDA_GRAPHS (not "0"), read when fit starts; off after a failed capture */
    nnl_cuda::Graph *graph_step = nullptr;   /* forward, loss, backward, the gradients' sum of squares */
    nnl_cuda::Graph *graph_update = nullptr; /* clipping by value and the optimizer update */
    GraphKey graph_key;                      /* what graph_step and graph_update were captured for */
    GraphKey warm;                           /* the last step that ran without a graph */
    bool graph_fused = false;                /* graph_step's loss took sparse_xent (gpu_loss_launch) */
    void drop_graphs();

    ~GpuModel();
    float *dev(const float *p);
    void mirror(Mirror &m, const float *h, size_t n, bool snapshot);
    void release(Mirror &m);
};

static thread_local GpuModel *tl_gpu = nullptr;

GpuModel::~GpuModel() {
    if (!ctx) return;
    nnl_cuda::Context *prev = nnl_cuda::context_current();
    try {
        nnl_cuda::context_use(ctx);
        drop_graphs();
        release(W);
        release(G);
        release(arena);
        release(S);
        release(mask);
        for (auto &s : slots) release(s);
    } catch (...) {
    }
    for (int i = 0; i < 2; i++) {
        nnl_cuda::event_free(stage_ev[i]);
        nnl_cuda::host_free(stage[i]);
    }
    nnl_cuda::host_free(gstage);
    nnl_cuda::context_free(ctx);
    try {
        nnl_cuda::context_use(prev == ctx ? nullptr : prev);
    } catch (...) {
    }
}

void GpuModel::release(Mirror &m) {
    if (m.d) gen++;
    nnl_cuda::dev_free(m.d);
    m = Mirror();
}

void GpuModel::drop_graphs() {
    nnl_cuda::graph_free(graph_step);
    nnl_cuda::graph_free(graph_update);
    graph_step = graph_update = nullptr;
    graph_key = warm = GraphKey();
}

/* (Re)creates m's device copy of [h, h+n) and uploads it; snapshot keeps
   the values to detect later host-side writes. */
void GpuModel::mirror(Mirror &m, const float *h, size_t n, bool snapshot) {
    if (m.h != h || m.n != n) {
        release(m);
        gen++;
        m.d = (float *)nnl_cuda::dev_alloc(std::max<size_t>(n, 1) * sizeof(float));
        m.h = h;
        m.n = n;
    }
    nnl_cuda::upload(m.d, h, n * sizeof(float));
    if (snapshot) m.seen.assign(h, h + n);
}

float *GpuModel::dev(const float *p) {
    if (!p) return nullptr;
    const Model &mm = *model;
    if ((arena.h != mm.arena.data() || arena.n != mm.arena.size()) && !mm.arena.empty()) {
        /* the activation arena was re-laid (a larger batch): mirror it anew */
        release(arena);
        gen++;
        arena.d = (float *)nnl_cuda::dev_alloc(mm.arena.size() * sizeof(float));
        arena.h = mm.arena.data();
        arena.n = mm.arena.size();
        nnl_cuda::memset0(arena.d, arena.n * sizeof(float));
    }
    if ((S.h != mm.S.data() || S.n != mm.S.size()) && !mm.S.empty())
        mirror(S, mm.S.data(), mm.S.size(), true); /* re-laid (the first batch fixed the slots): its values go up */
    if (mm.maskbuf.empty()) {
        if (mask.h) release(mask); /* no mask any more: no stale range */
    } else if (mask.h != mm.maskbuf.data() || mask.n != mm.maskbuf.size()) {
        mirror(mask, mm.maskbuf.data(), mm.maskbuf.size(), false); /* re-laid (a larger batch): all kept */
    }
    if (arena.holds(p)) return arena.d + (p - arena.h);
    if (W.holds(p)) return W.d + (p - W.h);
    if (G.holds(p)) return G.d + (p - G.h);
    if (S.holds(p)) return S.d + (p - S.h);
    for (auto &s : slots)
        if (s.holds(p)) return s.d + (p - s.h);
    if (mask.holds(p)) return mask.d + (p - mask.h);
    raise(NNL_ERR_INTERNAL, "GPU backend: an array at %p is not mirrored on the device", (const void *)p);
}

static float *D(const float *p) { return tl_gpu->dev(p); }
static nnl_cuda::Win win(const Window &g) {
    nnl_cuda::Win w;
    memcpy(&w, &g, sizeof w);
    return w;
}

/* ---- the CUDA kernel table: host addresses in, device mirrors used ---- */
static void cu_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t Kd, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    nnl_cuda::sgemm(ta, tb, M, N, Kd, alpha, D(A), lda, D(B), ldb, beta, D(C), ldc);
}
static void cu_sgemm_bias_act(int64_t M, int64_t N, int64_t Kd, const float *A, int64_t lda, const float *B,
                              int64_t ldb, float *C, int64_t ldc, const float *bias, Act act) {
    nnl_cuda::sgemm_bias_act(M, N, Kd, D(A), lda, D(B), ldb, D(C), ldc, D(bias), (int)act);
}
static void cu_bias_add(float *y, const float *b, int64_t rows, int64_t n) { nnl_cuda::bias_add(D(y), D(b), rows, n); }
static void cu_bias_grad(const float *dy, float *db, int64_t rows, int64_t n) {
    nnl_cuda::bias_grad(D(dy), D(db), rows, n);
}
static void cu_act_forward(Act a, const float *x, float *y, int64_t rows, int64_t n) {
    nnl_cuda::act_forward((int)a, D(x), D(y), rows, n);
}
static void cu_act_backward(Act a, const float *x, const float *y, const float *dy, float *dx, int64_t rows,
                            int64_t n) {
    nnl_cuda::act_backward((int)a, D(x), D(y), D(dy), D(dx), rows, n);
}
static void cu_dropout_forward(const float *x, float *y, float *mask, int64_t n, float rate, uint64_t step,
                               uint64_t salt) {
    nnl_cuda::dropout_forward(D(x), D(y), D(mask), n, rate, step, salt);
}
static void cu_mul(const float *a, const float *b, float *y, int64_t n) { nnl_cuda::mul(D(a), D(b), D(y), n); }
/* the bits live in the activation arena (a layer's ws) like any float array */
static void cu_relu_bits(const float *y, uint32_t *bits, int64_t n) {
    nnl_cuda::relu_bits(D(y), (uint32_t *)D((const float *)bits), n);
}
static void cu_relu_bits_backward(const uint32_t *bits, const float *dy, float *dx, int64_t n) {
    nnl_cuda::relu_bits_backward((const uint32_t *)D((const float *)bits), D(dy), D(dx), n);
}
static void cu_copy(const float *x, float *y, int64_t n) { nnl_cuda::copy(D(x), D(y), n); }
static double cu_sumsq(const float *x, int64_t n, bool *finite) { return nnl_cuda::sumsq(D(x), n, finite); }
static void cu_transpose(const float *x, float *y, int64_t batch, int64_t R, int64_t C) {
    nnl_cuda::transpose(D(x), D(y), batch, R, C);
}
static void cu_im2col(const Window &g, const float *x, float *col, int64_t n) {
    nnl_cuda::im2col(win(g), D(x), D(col), n);
}
static void cu_col2im(const Window &g, const float *col, float *dx, int64_t n) {
    nnl_cuda::col2im(win(g), D(col), D(dx), n);
}
static void cu_pool_forward(const Window &g, bool max, const float *x, float *y, void *arg, int64_t n) {
    nnl_cuda::pool_forward(win(g), max, D(x), D(y), max ? (void *)D((const float *)arg) : nullptr, n);
}
static void cu_pool_backward(const Window &g, bool max, const float *dy, const void *arg, float *dx, int64_t n) {
    nnl_cuda::pool_backward(win(g), max, D(dy), max ? (const void *)D((const float *)arg) : nullptr, D(dx), n);
}
static void cu_moments(const float *x, int64_t rows, int64_t C, float *mean, float *var) {
    nnl_cuda::moments(D(x), rows, C, D(mean), D(var));
}
static void cu_scale_shift(const float *x, float *y, int64_t rows, int64_t C, const float *scale, const float *shift) {
    nnl_cuda::scale_shift(D(x), D(y), rows, C, D(scale), D(shift));
}
static void cu_bn_backward(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                           const float *invstd, const float *gamma, float *dgamma, float *dbeta, bool training) {
    nnl_cuda::bn_backward(D(x), D(dy), D(dx), rows, C, D(mean), D(invstd), D(gamma), D(dgamma), D(dbeta), training);
}
static void cu_bn_prepare(bool training, int64_t C, float momentum, float eps, float *mm, float *mv,
                          const float *gamma, const float *beta, float *mean, float *invstd, float *scl, float *sh) {
    nnl_cuda::bn_prepare(training, C, momentum, eps, D(mm), D(mv), D(gamma), D(beta), D(mean), D(invstd), D(scl),
                         D(sh));
}
static void cu_global_pool_forward(bool max, bool cf, const float *x, float *y, int64_t B, int64_t S, int64_t C) {
    nnl_cuda::global_pool_forward(max, cf, D(x), D(y), B, S, C);
}
static void cu_global_pool_backward(bool max, bool cf, const float *x, const float *y, const float *dy, float *dx,
                                    int64_t B, int64_t S, int64_t C) {
    nnl_cuda::global_pool_backward(max, cf, D(x), D(y), D(dy), D(dx), B, S, C);
}
static void cu_zero_pad_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                                int64_t bo, int64_t l, int64_t r) {
    nnl_cuda::zero_pad_forward(D(x), D(y), n, H, W, inner, t, bo, l, r);
}
static void cu_zero_pad_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                                 int64_t bo, int64_t l, int64_t r) {
    nnl_cuda::zero_pad_backward(D(dy), D(dx), n, H, W, inner, t, bo, l, r);
}
static void cu_upsample_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                                int64_t sw) {
    nnl_cuda::upsample_forward(D(x), D(y), n, H, W, inner, sh, sw);
}
static void cu_upsample_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner,
                                 int64_t sh, int64_t sw) {
    nnl_cuda::upsample_backward(D(dy), D(dx), n, H, W, inner, sh, sw);
}

static void cu_embedding_forward(const float *ids, const float *E, float *y, int64_t rows, int64_t dim) {
    nnl_cuda::embedding_forward(D(ids), D(E), D(y), rows, dim);
}
/* The ids come down first: the host copy of the input is stale on a GPU
   model (gather stages the batch straight to the device). One download a
   training step, which waits for the stream. */
static void cu_embedding_grad(const float *ids, const float *dy, float *G, int64_t rows, int64_t V, int64_t dim,
                              uint8_t *marks) {
    GpuModel &g = *tl_gpu;
    g.ids.resize((size_t)std::max<int64_t>(rows, 0));
    if (rows > 0) nnl_cuda::download(g.ids.data(), D(ids), (size_t)rows * sizeof(float));
    int64_t U = embedding_rows(g.ids.data(), rows, V, marks, g.keys, g.csr);
    nnl_cuda::embedding_grad(g.csr.data(), U, rows, D(dy), D(G), V, dim);
}
static void cu_masking_forward(const float *x, float *y, float *mask, int64_t steps, int64_t F, float value) {
    nnl_cuda::masking_forward(D(x), D(y), D(mask), steps, F, value);
}
static void cu_masking_backward(const float *mask, const float *dy, float *dx, int64_t steps, int64_t F) {
    nnl_cuda::masking_backward(D(mask), D(dy), D(dx), steps, F);
}
static void cu_rnn_rows(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u,
                        const float *mask, int64_t T, int64_t t) {
    nnl_cuda::rnn_rows(D(src), lds, D(dst), ldd, B, u, D(mask), T, t);
}
/* CellArgs with device pointers */
static nnl_cuda::CellStep cell_step(const CellArgs &a) {
    nnl_cuda::CellStep d;
    d.B = a.B, d.u = a.u, d.T = a.T, d.t = a.t, d.s = a.s, d.act = (int)a.act, d.ract = (int)a.ract;
    d.Z = D(a.Z), d.hp = D(a.hp), d.cp = D(a.cp), d.c = D(a.c), d.h = D(a.h);
    d.ldz = a.ldz, d.ldh = a.ldh, d.ldcp = a.ldcp, d.ldhn = a.ldhn;
    d.mask = D(a.mask), d.y = D(a.y), d.dy = D(a.dy), d.dh = D(a.dh), d.dc = D(a.dc);
    d.seq = a.seq, d.zero_masked = a.zero_masked, d.first = a.first;
    d.rb = D(a.rb), d.hr = D(a.hr), d.R = D(a.R), d.dn = D(a.dn), d.tg = D(a.tg), d.tmp = D(a.tmp);
    d.phase = a.phase, d.reset_after = a.reset_after, d.drop_h = a.drop_h;
    return d;
}
static void cu_lstm_forward(const CellArgs &a) { nnl_cuda::lstm_forward(cell_step(a)); }
static void cu_lstm_backward(const CellArgs &a) { nnl_cuda::lstm_backward(cell_step(a)); }
static void cu_gru_forward(const CellArgs &a) { nnl_cuda::gru_forward(cell_step(a)); }
static void cu_gru_backward(const CellArgs &a) { nnl_cuda::gru_backward(cell_step(a)); }
static void cu_simple_forward(const CellArgs &a) { nnl_cuda::simple_forward(cell_step(a)); }
static void cu_simple_backward(const CellArgs &a) { nnl_cuda::simple_backward(cell_step(a)); }
static void cu_dropout_mask(float *mask, int64_t n, float rate, uint64_t seed) {
    nnl_cuda::dropout_mask(D(mask), n, rate, seed);
}
static void cu_mul_rows(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y, int64_t ldy,
                        int64_t rows, int64_t n, bool add) {
    nnl_cuda::mul_rows(D(a), lda, D(m), ldm, rep, D(y), ldy, rows, n, add);
}
static void cu_add(const float *a, const float *b, float *y, int64_t n) { nnl_cuda::add(D(a), D(b), D(y), n); }
static void cu_bidir_merge(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u) {
    nnl_cuda::bidir_merge(mode, D(f), D(b), D(y), B, T, u);
}
static void cu_bidir_split(int mode, const float *dy, const float *f, const float *b, float *df, float *db, int64_t B,
                           int64_t T, int64_t u) {
    nnl_cuda::bidir_split(mode, D(dy), D(f), D(b), D(df), D(db), B, T, u);
}

static constexpr Kernels cuda_table() {
    Kernels k = {};
    k.name = "cuda";
    k.sgemm = cu_sgemm;
    k.sgemm_bias_act = cu_sgemm_bias_act;
    k.bias_add = cu_bias_add;
    k.bias_grad = cu_bias_grad;
    k.act_forward = cu_act_forward;
    k.act_backward = cu_act_backward;
    k.dropout_forward = cu_dropout_forward;
    k.relu_bits = cu_relu_bits;
    k.relu_bits_backward = cu_relu_bits_backward;
    k.mul = cu_mul;
    k.copy = cu_copy;
    k.sumsq = cu_sumsq;
    k.transpose = cu_transpose;
    k.im2col = cu_im2col;
    k.col2im = cu_col2im;
    k.pool_forward = cu_pool_forward;
    k.pool_backward = cu_pool_backward;
    k.moments = cu_moments;
    k.scale_shift = cu_scale_shift;
    k.bn_backward = cu_bn_backward;
    k.bn_prepare = cu_bn_prepare;
    k.global_pool_forward = cu_global_pool_forward;
    k.global_pool_backward = cu_global_pool_backward;
    k.zero_pad_forward = cu_zero_pad_forward;
    k.zero_pad_backward = cu_zero_pad_backward;
    k.upsample_forward = cu_upsample_forward;
    k.upsample_backward = cu_upsample_backward;
    k.embedding_forward = cu_embedding_forward;
    k.embedding_grad = cu_embedding_grad;
    k.masking_forward = cu_masking_forward;
    k.masking_backward = cu_masking_backward;
    k.rnn_rows = cu_rnn_rows;
    k.lstm_forward = cu_lstm_forward;
    k.lstm_backward = cu_lstm_backward;
    k.gru_forward = cu_gru_forward;
    k.gru_backward = cu_gru_backward;
    k.simple_forward = cu_simple_forward;
    k.simple_backward = cu_simple_backward;
    k.dropout_mask = cu_dropout_mask;
    k.mul_rows = cu_mul_rows;
    k.add = cu_add;
    k.bidir_merge = cu_bidir_merge;
    k.bidir_split = cu_bidir_split;
    return k;
}
static constexpr Kernels cuda_kernels = cuda_table();

/* An optimizer step's scalars (section 5) in the CUDA kernel's struct. */
static_assert((int)OPT_SGD == (int)nnl_cuda::OPT_SGD && (int)OPT_SGD_MOMENTUM == (int)nnl_cuda::OPT_SGD_MOMENTUM &&
                  (int)OPT_RMSPROP == (int)nnl_cuda::OPT_RMSPROP && (int)OPT_ADAGRAD == (int)nnl_cuda::OPT_ADAGRAD &&
                  (int)OPT_ADADELTA == (int)nnl_cuda::OPT_ADADELTA && (int)OPT_ADAM == (int)nnl_cuda::OPT_ADAM &&
                  (int)OPT_ADAMAX == (int)nnl_cuda::OPT_ADAMAX && (int)OPT_NADAM == (int)nnl_cuda::OPT_NADAM,
              "nnl::OptKind and nnl_cuda::OptKind differ");
static nnl_cuda::OptStep cuda_step(const OptStep &s) {
    nnl_cuda::OptStep c;
    memset(&c, 0, sizeof c);
    c.kind = (int)s.kind;
    c.lr = s.lr;
    c.momentum = s.momentum;
    c.rho = s.rho;
    c.eps = s.eps;
    c.b1c = s.b1c;
    c.b2c = s.b2c;
    c.b2 = s.b2;
    c.alpha = s.alpha;
    c.wd = s.wd;
    c.a1 = s.a1;
    c.a2 = s.a2;
    c.vb = s.vb;
    c.step = s.step;
    c.nesterov = s.nesterov;
    c.centered = s.centered;
    c.amsgrad = s.amsgrad;
    return c;
}

/* Uploads what changed on the host since the last synchronisation:
   weights and slots (compared with their snapshots), and (re)creates the
   mirrors when an array was re-laid. */
void gpu_sync_device(Model &m) {
    if (!m.gpu) return;
    GpuModel &g = *m.gpu;
    if (g.W.h != m.W.data() || g.W.n != m.W.size() || memcmp(g.W.seen.data(), m.W.data(), m.W.size() * 4))
        g.mirror(g.W, m.W.data(), m.W.size(), true);
    if (g.G.h != m.G.data() || g.G.n != m.G.size()) g.mirror(g.G, m.G.data(), m.G.size(), false);
    if (m.S.empty())
        g.release(g.S);
    else if (g.S.h != m.S.data() || g.S.n != m.S.size() || memcmp(g.S.seen.data(), m.S.data(), m.S.size() * 4))
        g.mirror(g.S, m.S.data(), m.S.size(), true);
    size_t ns = m.opt ? m.opt->slots.size() : 0;
    if (g.slots.size() != ns) {
        for (auto &s : g.slots) g.release(s);
        g.slots.assign(ns, Mirror());
    }
    for (size_t k = 0; k < ns; k++) {
        const std::vector<float> &v = m.opt->slots[k];
        Mirror &s = g.slots[k];
        if (s.h != v.data() || s.n != v.size() || memcmp(s.seen.data(), v.data(), v.size() * 4))
            g.mirror(s, v.data(), v.size(), true);
    }
}

/* Copies the persistent states back into the host arena (evaluate and
   predict change them too, in stateful layers). */
static void gpu_pull_states(Model &m) {
    GpuModel &g = *m.gpu;
    if (g.S.h == m.S.data() && g.S.n == m.S.size() && g.S.n) {
        nnl_cuda::download(m.S.data(), g.S.d, g.S.n * 4);
        g.S.seen.assign(m.S.begin(), m.S.end());
    }
}

/* Copies weights, optimizer slots and states back into the host arrays. */
void gpu_sync_host(Model &m) {
    if (!m.gpu) return;
    GpuModel &g = *m.gpu;
    if (g.W.h == m.W.data() && g.W.n == m.W.size()) {
        nnl_cuda::download(m.W.data(), g.W.d, g.W.n * 4);
        g.W.seen.assign(m.W.begin(), m.W.end());
    }
    gpu_pull_states(m);
    size_t ns = m.opt ? m.opt->slots.size() : 0;
    for (size_t k = 0; k < ns && k < g.slots.size(); k++) {
        std::vector<float> &v = m.opt->slots[k];
        Mirror &s = g.slots[k];
        if (s.h == v.data() && s.n == v.size()) {
            nnl_cuda::download(v.data(), s.d, s.n * 4);
            s.seen.assign(v.begin(), v.end());
        }
    }
}

GpuScope::GpuScope(Model &model, bool train) {
    if (!model.gpu) {
        /* a CPU model used while a GPU model runs on this thread (from a
           callback): the CPU table for the duration */
        if (tl_kernels || tl_gpu) {
            cpu_inside = true;
            prev_k = tl_kernels;
            prev_model = tl_gpu;
            tl_kernels = nullptr;
            tl_gpu = nullptr;
        }
        return;
    }
    GpuModel &g = *model.gpu;
    if (g.depth > 0) { /* nested (evaluate inside fit): already set up */
        g.depth++;
        m = &model;
        return;
    }
    prev_ctx = nnl_cuda::context_current();
    prev_model = tl_gpu;
    prev_k = tl_kernels;
    gpu_check_layers(model);
    try {
        nnl_cuda::context_use(g.ctx); /* fails on a lost device (NNL_ERR_DEVICE) */
        tl_gpu = &g;
        gpu_sync_device(model);
    } catch (...) {
        tl_gpu = (GpuModel *)prev_model;
        try {
            nnl_cuda::context_use((nnl_cuda::Context *)prev_ctx);
        } catch (...) { /* the first error is the one to report */
        }
        throw;
    }
    g.depth = 1;
    m = &model;
    training = train;
    tl_kernels = &cuda_kernels;
    /* graphs live within one fit (compile may replace the loss or the
       optimizer between fits); NNL_CUDA_GRAPHS=0 turns them off */
    g.drop_graphs();
    const char *eg = getenv("NNL_CUDA_GRAPHS");
    g.graphs_on = train && !(eg && strcmp(eg, "0") == 0);
}

GpuScope::~GpuScope() {
    if (cpu_inside) {
        tl_kernels = prev_k;
        tl_gpu = (GpuModel *)prev_model;
        return;
    }
    if (!m) return;
    GpuModel &g = *m->gpu;
    if (--g.depth > 0) return;
    try {
        g.drop_graphs();
        g.graphs_on = false;
        if (training)
            gpu_sync_host(*m); /* also after a failed step: the last good weights */
        else
            gpu_pull_states(*m);
        nnl_cuda::synchronize();
    } catch (const Error &e) {
        fprintf(stderr, "nnlite: GPU: copying the weights back failed: %s\n", e.msg.c_str());
    } catch (...) {
    }
    tl_kernels = prev_k;
    tl_gpu = (GpuModel *)prev_model;
    try {
        nnl_cuda::context_use((nnl_cuda::Context *)prev_ctx);
    } catch (...) {
    }
}

/* Host -> device for a batch: through a pinned staging buffer (two, used in
   turn, each reused only once its previous copy has finished). gpu_stage
   hands out the next one (NULL without a GPU model on this thread), the
   caller fills its first n floats, and gpu_stage_upload sends them to the
   device mirror of h. */
float *gpu_stage(int64_t n) {
    GpuModel *g = tl_gpu;
    if (!g || n <= 0) return nullptr;
    int k = g->next_stage;
    if (g->stage_ev[k])
        nnl_cuda::event_wait(g->stage_ev[k]); /* its previous copy has finished */
    else
        g->stage_ev[k] = nnl_cuda::event_create();
    if (g->stage_n[k] < (size_t)n) {
        nnl_cuda::host_free(g->stage[k]);
        g->stage[k] = nullptr;
        g->stage_n[k] = 0;
        g->stage[k] = (float *)nnl_cuda::host_alloc((size_t)n * sizeof(float));
        g->stage_n[k] = (size_t)n;
    }
    return g->stage[k];
}
void gpu_stage_upload(const float *h, int64_t n) {
    GpuModel *g = tl_gpu;
    if (!g || n <= 0) return;
    int k = g->next_stage;
    g->next_stage ^= 1;
    nnl_cuda::upload(g->dev(h), g->stage[k], (size_t)n * sizeof(float));
    nnl_cuda::event_record(g->stage_ev[k]);
}
void gpu_push(const float *h, int64_t n) {
    if (float *s = gpu_stage(n)) {
        memcpy(s, h, (size_t)n * sizeof(float));
        gpu_stage_upload(h, n);
    }
}

void gpu_pull(const float *h, int64_t n) {
    GpuModel *g = tl_gpu;
    if (!g || n <= 0) return;
    nnl_cuda::download(const_cast<float *>(h), g->dev(h), (size_t)n * sizeof(float));
}

/* The device mirror of a host array when a GPU model runs on this thread. */
float *gpu_device(const float *h) { return tl_gpu ? tl_gpu->dev(h) : nullptr; }
void gpu_wait() {
    if (tl_gpu) nnl_cuda::synchronize();
}

/* A distributed GPU model's gradients travel through one pinned buffer the
   size of G (kept from step to step): each bucket comes down into it, is
   allreduced there by the host MPI code, and the whole arena goes back up
   at the reduction point. gpu_up queues the copy on the model's stream, so
   the next step's gpu_down (which waits for the stream) cannot overwrite
   the buffer before it has gone. */
float *gpu_grad_stage(int64_t n) {
    GpuModel *g = tl_gpu;
    if (!g || n <= 0) return nullptr;
    if (g->gstage_n < (size_t)n) {
        nnl_cuda::synchronize(); /* no copy from the old buffer in flight */
        nnl_cuda::host_free(g->gstage);
        g->gstage = nullptr;
        g->gstage_n = 0;
        g->gstage = (float *)nnl_cuda::host_alloc((size_t)n * sizeof(float));
        g->gstage_n = (size_t)n;
    }
    return g->gstage;
}
void gpu_down(float *h, const float *d, int64_t n) {
    if (tl_gpu && n > 0) nnl_cuda::download(h, d, (size_t)n * sizeof(float));
}
void gpu_up(float *d, const float *h, int64_t n) {
    if (tl_gpu && n > 0) nnl_cuda::upload(d, h, (size_t)n * sizeof(float));
}
void gpu_zero(const float *h, int64_t n) {
    if (tl_gpu && n > 0) nnl_cuda::memset0(tl_gpu->dev(h), (size_t)n * sizeof(float));
}
void gpu_scale(float *d, int64_t n, float f) {
    if (tl_gpu && n > 0) nnl_cuda::scale(d, n, f);
}

/* Batches whose loss and metrics ran on the device, and batches of a GPU
   model that took the host path: the GPU suite reads them to check that
   the device path is the one taken. */
static std::atomic<int64_t> gpu_loss_device_steps{0}, gpu_loss_host_steps{0};

static_assert((int)LOSS_SPARSE_CCE == nnl_cuda::LK_SPARSE_CCE && (int)LOSS_CCE == nnl_cuda::LK_CCE &&
                  (int)LOSS_BCE == nnl_cuda::LK_BCE && (int)LOSS_MSE == nnl_cuda::LK_MSE &&
                  (int)LOSS_MAE == nnl_cuda::LK_MAE && (int)LOSS_HUBER == nnl_cuda::LK_HUBER,
              "nnl::LossKind and nnl_cuda's loss kinds differ");
static_assert((int)M_SPARSE_ACC == nnl_cuda::MK_SPARSE_ACC && (int)M_CAT_ACC == nnl_cuda::MK_CAT_ACC &&
                  (int)M_BIN_ACC == nnl_cuda::MK_BIN_ACC && (int)M_SPARSE_TOPK == nnl_cuda::MK_SPARSE_TOPK &&
                  (int)M_TOPK == nnl_cuda::MK_TOPK && (int)M_MSE == nnl_cuda::MK_MSE &&
                  (int)M_MAE == nnl_cuda::MK_MAE && (int)M_PERPLEXITY == nnl_cuda::MK_PERPLEXITY,
              "nnl::MetricKind and nnl_cuda's metric kinds differ");

/* The loss, its gradient and the metrics on the device (Loss::run and
   Metric::run, section 4): only the sums come back. Sparse CE from logits
   with sparse accuracy (or perplexity) takes the fused sparse_xent kernel;
   every other loss and metric loss_metrics. Left to the host path (false):
   a step-masked output (Embedding(mask_zero=True) or Masking upstream: the
   masked loss and metrics skip masked positions, which the device kernels
   do not do; Model::loss_and_grad brings the outputs and the mask down) and
   more than nnl_cuda::LOSS_MAX_METRICS metrics. */
/* The device half of gpu_loss: the loss's and metrics' kernels (the
   gradient into grad when not NULL), their sums into d_out (device
   memory): with *fused (sparse CE from logits with sparse accuracy or
   perplexity: the fused sparse_xent kernel) the loss sum and the hits,
   otherwise the loss sum, then metric k's (loss_metrics). Returns how many
   sums; 0 (nothing launched) when the step needs the host path: a
   step-masked output (Embedding(mask_zero=True) or Masking upstream: the
   masked loss and metrics skip masked positions, which the device kernels
   do not do; Model::loss_and_grad brings the outputs and the mask down) or
   more than nnl_cuda::LOSS_MAX_METRICS metrics. */
static int gpu_loss_launch(Model &m, int64_t B, float *grad, double *d_out, bool *fused) {
    if (m.output_masked() || m.metrics.size() > (size_t)nnl_cuda::LOSS_MAX_METRICS) return 0;
    const Loss &ls = m.loss;
    size_t L = m.layers.size();
    int64_t Dn = m.out_shape().size(), C = m.classes(), per = Dn / C;
    bool logits = ls.from_logits || ls.fused != ACT_LINEAR;
    const float *y = m.act[L], *z = ls.fused != ACT_LINEAR ? m.layers.back()->logits(m.act[L - 1]) : nullptr;
    const float *src = (logits && z) ? z : y; /* as Loss::run */
    float invB = 1.f / (float)B;
    bool xent = ls.kind == LOSS_SPARSE_CCE || ls.kind == LOSS_CCE;
    float scale = xent ? invB / (float)per : invB / (float)Dn;
    bool sparse_only = true;
    for (auto &mt : m.metrics)
        if (mt.kind != M_SPARSE_ACC && mt.kind != M_PERPLEXITY) sparse_only = false;
    *fused = ls.kind == LOSS_SPARSE_CCE && logits && sparse_only;
    if (*fused) { /* accuracy from the argmax of the logits: that of the softmax */
        nnl_cuda::sparse_xent_async(D(src), D(m.targets), B * per, C, scale, grad ? D(grad) : nullptr, d_out);
        return 2;
    }
    nnl_cuda::LossSpec spec{(int)ls.kind, logits, ls.delta, scale};
    nnl_cuda::MetricSpec ms[nnl_cuda::LOSS_MAX_METRICS];
    int nm = (int)m.metrics.size();
    for (int k = 0; k < nm; k++) ms[k] = {(int)m.metrics[k].kind, m.metrics[k].k, m.metrics[k].threshold};
    nnl_cuda::loss_metrics_async(spec, D(src), D(y), D(m.targets), B * Dn, C, grad ? D(grad) : nullptr, nm, ms,
                                 d_out);
    return 1 + nm;
}

/* The host half: h holds gpu_loss_launch's sums (brought down); the loss
   (summed over the batch) into *loss, each metric's sum added to msum[k],
   as Loss::run and Metric::run divide them. */
static void gpu_loss_finish(const Model &m, bool fused, const double *h, double *msum, double *loss) {
    const Loss &ls = m.loss;
    int64_t Dn = m.out_shape().size(), C = m.classes(), per = Dn / C;
    bool xent = ls.kind == LOSS_SPARSE_CCE || ls.kind == LOSS_CCE;
    if (fused) {
        *loss = h[0] / (double)per;
        for (size_t k = 0; k < m.metrics.size(); k++)
            msum[k] += m.metrics[k].kind == M_PERPLEXITY ? *loss : h[1] / (double)per;
        return;
    }
    *loss = h[0] / (double)(xent ? per : Dn);
    for (size_t k = 0; k < m.metrics.size(); k++) {
        MetricKind mk = m.metrics[k].kind;
        bool rowwise = mk == M_SPARSE_ACC || mk == M_CAT_ACC || mk == M_SPARSE_TOPK || mk == M_TOPK;
        msum[k] += mk == M_PERPLEXITY ? *loss : h[1 + k] / (double)(rowwise ? per : Dn);
    }
}

/* The loss, its gradient and the metrics on the device (Loss::run and
   Metric::run, section 4): only the sums come back (one copy, which waits
   for the stream). False: the host path (see gpu_loss_launch). */
bool gpu_loss(Model &m, int64_t B, float *grad, double *msum, double *loss) {
    if (!tl_gpu) return false;
    bool fused = false;
    int n = gpu_loss_launch(m, B, grad, nnl_cuda::results(), &fused);
    if (!n) {
        gpu_loss_host_steps++;
        return false;
    }
    double h[1 + nnl_cuda::LOSS_MAX_METRICS];
    nnl_cuda::download(h, nnl_cuda::results(), (size_t)n * sizeof(double));
    gpu_loss_finish(m, fused, h, msum, loss);
    gpu_loss_device_steps++;
    return true;
}

/* The optimizer's fused kernel on each tensor, the step's scalars st (put
   in device memory by opt_update, or before a graph replays them) */
static void gpu_opt_updates(Model &m, const nnl_cuda::OptStep &st) {
    GpuModel &g = *tl_gpu;
    Optimizer &o = *m.opt;
    int64_t off = 0;
    for (auto &p : m.slices) {
        float *sl[3] = {nullptr, nullptr, nullptr};
        for (size_t k = 0; k < o.slots.size() && k < 3; k++) sl[k] = g.dev(o.slots[k].data() + off);
        nnl_cuda::opt_update(st, D(p.w), D(p.g), sl[0], sl[1], sl[2], p.n);
        off += p.n;
    }
}

/* One optimizer step on the device: clipping, then one fused kernel per
   tensor; the host keeps the step count (and Nadam's product). */
bool gpu_apply(Model &m) {
    if (!tl_gpu) return false;
    Optimizer &o = *m.opt;
    ParamSlice *p = m.slices.data();
    int count = (int)m.slices.size();
    int64_t total = 0;
    for (int i = 0; i < count; i++) total += p[i].n;
    if (o.ensure_slots(total)) gpu_sync_device(m);
    if (o.clipvalue > 0)
        for (int i = 0; i < count; i++) nnl_cuda::clip_value(D(p[i].g), p[i].n, (float)o.clipvalue);
    if (o.clipnorm > 0)
        for (int i = 0; i < count; i++) {
            double nrm = std::sqrt(nnl_cuda::sumsq(D(p[i].g), p[i].n, nullptr));
            if (nrm > o.clipnorm) nnl_cuda::scale(D(p[i].g), p[i].n, (float)(o.clipnorm / nrm));
        }
    if (o.global_clipnorm > 0) {
        double s = 0;
        for (int i = 0; i < count; i++) s += nnl_cuda::sumsq(D(p[i].g), p[i].n, nullptr);
        double nrm = std::sqrt(s);
        if (nrm > o.global_clipnorm)
            for (int i = 0; i < count; i++) nnl_cuda::scale(D(p[i].g), p[i].n, (float)(o.global_clipnorm / nrm));
    }
    gpu_opt_updates(m, cuda_step(o.step(o.current_lr())));
    o.finish_step();
    return true;
}

/* ---- CUDA graphs of the training step ----
   A training step of a small model is launch-bound: K-MLP's is ~40 short
   kernels and three waits. gpu_graph_step captures the step once as two
   graphs and replays them while nothing they hold changes:
     graph_step    forward, the loss and metrics (their sums into
                   nnl_cuda::results()), backward, the sum of squares of G
                   (the finiteness check), all sums brought down by one copy;
     graph_update  clipping by value, the optimizer's kernel per tensor.
   Between them the host waits once, reads the sums and decides, exactly
   as train_step does, whether the step is finite; only then does it run
   graph_update (so the weights stay the last good step's, and fit raises
   at the same batch). What changes from step to step is in device memory,
   put there before each launch: the dropout step seed and the optimizer's
   scalars (learning rate and its decay or a callback's new value, Adam's
   bias corrections, Nadam's schedule), see nnlite_cuda.h. The batch
   itself goes up before the launch, as always, into the same arena.
   A graph is captured for one key (batch size, the generation of the
   mirrors and of the backend's scratch: any reallocation makes it stale);
   a step with another key runs eagerly (the last partial batch of an
   epoch), and a new graph is captured when two consecutive steps share a
   key that has none (the first step warms up, growing scratch and
   creating optimizer slots). Only models whose layers' GPU code is pure
   kernel launches take graphs (Dense, Dropout, Activation, Flatten,
   Reshape), with the device loss path, no clipnorm (its norm comes down
   mid-step), one process. Graphs live within one fit call;
   NNL_CUDA_GRAPHS=0 turns them off. A failed capture leaves the fit on
   the eager path. The kernels, their arguments and order are the eager
   step's: results are the same bit for bit (the GPU suite checks it). */
static std::atomic<int64_t> gpu_graph_captures{0}, gpu_graph_replays{0};

static bool graph_layer(const Layer &l) {
    static const char *const ok[] = {"Dense", "Dropout", "Activation", "Flatten", "Reshape"};
    for (const char *c : ok)
        if (strcmp(l.cls, c) == 0) return true;
    return false;
}

bool gpu_graph_step(Model &m, int64_t B, uint64_t seed, StepReduce &r) {
    GpuModel *gp = tl_gpu;
    if (!gp || !gp->graphs_on || B <= 0 || m.reducer || m.dist || !m.opt) return false;
    GpuModel &g = *gp;
    Optimizer &o = *m.opt;
    if (m.output_masked() || m.metrics.size() > (size_t)nnl_cuda::LOSS_MAX_METRICS || o.clipnorm > 0 ||
        o.global_clipnorm > 0)
        return false;
    for (auto &l : m.layers)
        if (!graph_layer(*l)) return false;
    /* the optimizer's slots exist (gpu_apply creates them after the first
       step, eagerly) */
    int64_t total = 0;
    for (auto &p : m.slices) total += p.n;
    int ns = o.nslots();
    if ((int)o.slots.size() != ns || (ns > 0 && (int64_t)o.slots[0].size() != total) || g.slots.size() != o.slots.size())
        return false;
    GpuModel::GraphKey key;
    key.B = B;
    key.gen = g.gen;
    key.sgen = nnl_cuda::scratch_generation();
    size_t L = m.layers.size();
    if (!(g.graph_step && g.graph_key == key)) {
        if (!(g.warm == key)) { /* this step runs eagerly; the next one of the same key is captured */
            g.warm = key;
            return false;
        }
        nnl_cuda::graph_free(g.graph_step);
        nnl_cuda::graph_free(g.graph_update);
        g.graph_step = g.graph_update = nullptr;
        /* the values the capture's dropout_forward and opt_update check */
        nnl_cuda::set_step_seed(seed);
        const nnl_cuda::OptStep st = cuda_step(o.step(o.current_lr()));
        nnl_cuda::set_opt_step(st);
        nnl_cuda::Graph *gs = nullptr, *gu = nullptr;
        bool fused = false;
        try {
            nnl_cuda::capture_begin();
            m.forward(B, true, seed);
            int n = gpu_loss_launch(m, B, m.dact[L], nnl_cuda::results(), &fused);
            m.backward(B, seed);
            nnl_cuda::sumsq_async(D(m.G.data()), (int64_t)m.G.size(), nnl_cuda::results() + nnl_cuda::RESULTS - 1);
            nnl_cuda::results_down(nnl_cuda::RESULTS);
            gs = nnl_cuda::capture_end();
            if (gs && n > 0) {
                nnl_cuda::capture_begin();
                if (o.clipvalue > 0)
                    for (auto &p : m.slices) nnl_cuda::clip_value(D(p.g), p.n, (float)o.clipvalue);
                gpu_opt_updates(m, st);
                gu = nnl_cuda::capture_end();
            }
        } catch (...) {
            nnl_cuda::capture_abort();
        }
        if (!gs || !gu) { /* (nothing ran) this fit goes on without graphs */
            nnl_cuda::graph_free(gs);
            nnl_cuda::graph_free(gu);
            g.graphs_on = false;
            return false;
        }
        g.graph_step = gs;
        g.graph_update = gu;
        g.graph_key = key;
        g.graph_fused = fused;
        gpu_graph_captures++;
    }
    /* replay: the batch is on its way to the arena (gather) */
    nnl_cuda::set_step_seed(seed);
    nnl_cuda::graph_launch(g.graph_step);
    nnl_cuda::synchronize();
    const double *h = nnl_cuda::results_host();
    gpu_loss_finish(m, g.graph_fused, h, r.sums + 1, &r.loss());
    r.count() = (double)B;
    bool finite = std::isfinite(r.loss()) && std::isfinite(h[nnl_cuda::RESULTS - 1]);
    r.nonfinite() = finite ? 0 : 1;
    if (finite) {
        nnl_cuda::set_opt_step(cuda_step(o.step(o.current_lr())));
        nnl_cuda::graph_launch(g.graph_update);
        o.finish_step();
    }
    gpu_loss_device_steps++;
    gpu_graph_replays++;
    return true;
}

/* "cuda" or "gpu" without an index: on a distributed model, the rank's
   device on its node (Dist::local_rank modulo the devices there). */
static bool device_unnumbered(const char *device) {
    std::string d = lower(device);
    return d == "cuda" || d == "gpu";
}

/* nnl_set_device's work: "cpu", "cuda" or "cuda:N". Nothing changes when
   it fails. */
static void set_device(Model &m, const char *device) {
    int idx = parse_device(device);
    bool pick = idx >= 0 && m.dist && device_unnumbered(device); /* the rank's device on its node */
    if (idx < 0) {
        if (m.gpu) {
            nnl_cuda::Context *prev = nnl_cuda::context_current();
            try {
                nnl_cuda::context_use(m.gpu->ctx);
                gpu_sync_host(m);
            } catch (const Error &e) {
                /* a failed device (its context lost, nnlite.h "GPU"): the
                   model continues on the CPU with the host copy, that of
                   its last GPU call that succeeded */
                if (e.status != NNL_ERR_DEVICE) {
                    try {
                        nnl_cuda::context_use(prev);
                    } catch (...) {
                    }
                    throw;
                }
                fprintf(stderr, "nnlite: GPU: %s; the model continues on the CPU with the weights of its last "
                        "GPU call that succeeded\n", e.msg.c_str());
            }
            try {
                nnl_cuda::context_use(prev);
            } catch (const Error &) { /* prev's device failed too: none current */
            }
            m.gpu.reset();
            for (auto &l : m.layers) l->on_gpu = false;
        }
        return;
    }
    gpu_check_layers(m); /* by name, before (and whether or not) a device is found */
    nnl_cuda::set_error_handler(cuda_raise);
    int n = nnl_cuda::device_count();
    if (n == 0) {
        char why[512];
        if (nnl_cuda::device_count_error(why, sizeof why) == NNL_ERR_DEVICE)
            raise(NNL_ERR_DEVICE, "nnl_set_device: %s", why); /* a driver, but one that cannot serve */
    }
    NNL_REQUIRE(n > 0, NNL_ERR_UNSUPPORTED, "nnl_set_device: no CUDA device on this machine (or no NVIDIA driver)");
    if (pick) idx = m.dist->local_rank % n;
    NNL_REQUIRE(idx < n, NNL_ERR_UNSUPPORTED, "nnl_set_device: CUDA device %d does not exist (%d present)", idx, n);
    if (m.gpu && m.gpu->device == idx) {
        m.gpu->unnumbered = device_unnumbered(device);
        return;
    }
    NNL_REQUIRE(kernels_complete(cuda_kernels), NNL_ERR_INTERNAL, "nnl_set_device: the CUDA kernel table has an "
                "empty entry (a bug in this build)");
    /* leave a previous GPU first (its weights back on the host) */
    if (m.gpu) set_device(m, "cpu");
    std::shared_ptr<GpuModel> g(new GpuModel());
    g->model = &m;
    g->device = idx;
    g->name = format("cuda:%d", idx);
    g->unnumbered = device_unnumbered(device);
    nnl_cuda::Context *prev = nnl_cuda::context_current();
    g->ctx = nnl_cuda::context_create(idx);
    try {
        nnl_cuda::context_use(g->ctx);
        m.gpu = g;
        gpu_sync_device(m); /* the weights and slots move now */
        nnl_cuda::synchronize();
    } catch (...) {
        m.gpu.reset();
        nnl_cuda::context_use(prev);
        throw;
    }
    nnl_cuda::context_use(prev);
    for (auto &l : m.layers) l->on_gpu = true; /* nnl_set_device replans next */
}

} // namespace nnl
#endif /* NNL_CUDA */

/* ========================================================================
   6c Data-parallel training over MPI (compiled with -DNNL_MPI)
   The collectives of a distributed model (struct Dist, declared before the
   Model) and the broadcast of a model's state. Every collective is
   non-blocking and waited for with a deadline (NNL_MPI_TIMEOUT), so a
   rank that failed or left makes the others fail with NNL_ERR_DISTRIBUTED
   instead of hanging. nnlite calls MPI from the thread that called it,
   never from its workers. The gradient reduction: begin() takes the
   step's weight (its sample count), grad_ready() sends each bucket of the
   gradient arena, scaled by that weight, as soon as backward completes it
   (MPI_Iallreduce, in place), and reduce() waits for every rank (a barrier
   with the deadline), sends the rest and the step's sums with blocking
   allreduces, and divides by the total weight unless every rank knew it
   beforehand and scaled by it already. OpenMPI progresses non-blocking
   collectives only inside MPI calls: grad_ready, and recurrent layers at
   every time step (Ctx::poll), test the buckets in flight.
   A model on a GPU (StepReduce::grad_device) keeps all of this: each
   bucket comes down from the device into a pinned host buffer when
   backward has queued it (the copy waits for the model's stream, so for
   the kernels that made it), is sent from there while the host queues the
   layers below, and at the end the reduced arena goes back up in one
   queued copy. With a CUDA-aware Open MPI (MPIX_Query_cuda_support) the
   buckets are sent from device memory instead, scaled there, after the
   stream has finished them; row-sparse gradients then travel dense.
   ======================================================================== */
namespace nnl {

#ifdef NNL_MPI
static bool g_mpi_ours = false; /* nnl_mpi_init initialised MPI: nnl_mpi_finalize may end it */

static void mpi_ok(int rc, const std::string &what) {
    if (rc == MPI_SUCCESS) return;
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, buf, &len);
    raise(NNL_ERR_DISTRIBUTED, "%s: MPI error: %.*s", what.c_str(), len, buf);
}

static double env_number(const char *name, double def) {
    const char *e = getenv(name);
    if (!e || !*e) return def;
    char *end = nullptr;
    double v = strtod(e, &end);
    return (end && *end == 0 && std::isfinite(v) && v >= 0) ? v : def;
}

static void mpi_init(int *argc, char ***argv) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    NNL_REQUIRE(!fin, NNL_ERR_STATE, "nnl_mpi_init: MPI is already finalised (it cannot start again)");
    if (init) return;
    int provided = 0;
    mpi_ok(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "nnl_mpi_init");
    g_mpi_ours = true;
    NNL_REQUIRE(provided >= MPI_THREAD_FUNNELED, NNL_ERR_STATE,
                "nnl_mpi_init: this MPI provides thread level %d, below MPI_THREAD_FUNNELED", provided);
}

Dist::~Dist() {
    int fin = 0;
    MPI_Finalized(&fin);
    /* after a timeout requests may still be pending on it: leave it be */
    if (comm != MPI_COMM_NULL && !fin && !broken) MPI_Comm_free(&comm);
}

/* Waits for every request in reqs, with the deadline. Open MPI moves a
   non-blocking collective on only inside MPI calls, so the wait tests
   without pause while the others are likely close (a large allreduce is
   many rounds, each needing a test): for a second it only yields the core
   between tests (at once back when no one else wants it; ranks may share
   cores), then it sleeps between tests. */
static void dist_wait(Dist &d) {
    if (d.reqs.empty()) return;
    double t0 = now_seconds();
    for (long spin = 0;; spin++) {
        int done = 0;
        mpi_ok(MPI_Testall((int)d.reqs.size(), d.reqs.data(), &done, MPI_STATUSES_IGNORE), d.where);
        if (done) {
            d.reqs.clear();
            return;
        }
        if (spin < 256 || (spin & 63)) continue;
        double t = now_seconds() - t0;
        if (d.timeout > 0 && t > d.timeout) {
            d.broken = true;
            raise(NNL_ERR_DISTRIBUTED,
                  "%s: rank %d of %d waited %.0f s for the other ranks (NNL_MPI_TIMEOUT): a rank failed, left the "
                  "run or stopped calling nnlite; the run cannot continue",
                  d.where.c_str(), d.rank, d.size, t);
        }
        if (t < 1.0)
            sched_yield();
        else
            usleep(200);
    }
}

static void dist_alive(Dist &d) {
    int fin = 0;
    MPI_Finalized(&fin);
    NNL_REQUIRE(!fin, NNL_ERR_STATE, "%s: MPI is finalised; free distributed models before MPI_Finalize",
                d.where.c_str());
    NNL_REQUIRE(!d.broken, NNL_ERR_DISTRIBUTED,
                "%s: an earlier collective of this distributed model timed out; the run cannot continue", d.where.c_str());
    int main_thread = 0, level = 0;
    MPI_Is_thread_main(&main_thread);
    MPI_Query_thread(&level);
    NNL_REQUIRE(main_thread || level >= MPI_THREAD_SERIALIZED, NNL_ERR_STATE,
                "%s: called from a thread other than the one that initialised MPI, which needs "
                "MPI_THREAD_SERIALIZED (MPI has level %d)", d.where.c_str(), level);
}

void Dist::agree(int status, const std::string &msg) {
    dist_alive(*this);
    int first = status ? rank : size, low = size;
    reqs.emplace_back();
    mpi_ok(MPI_Iallreduce(&first, &low, 1, MPI_INT, MPI_MIN, comm, &reqs.back()), where);
    dist_wait(*this);
    if (low == size) return;
    struct {
        int status;
        char msg[1020];
    } pkt;
    memset(&pkt, 0, sizeof pkt);
    if (rank == low) {
        pkt.status = status;
        snprintf(pkt.msg, sizeof pkt.msg, "%s", msg.c_str());
    }
    reqs.emplace_back();
    mpi_ok(MPI_Ibcast(&pkt, (int)sizeof pkt, MPI_BYTE, low, comm, &reqs.back()), where);
    dist_wait(*this);
    if (rank == low) raise(status, "%s", msg.c_str());
    raise(pkt.status, "%s (on rank %d of %d)", pkt.msg, low, size);
}

void Dist::same(const char *fn, const std::vector<std::pair<const char *, int64_t>> &v) {
    dist_alive(*this);
    size_t k = v.size();
    std::vector<int64_t> a(2 * k), lo(2 * k);
    for (size_t i = 0; i < k; i++) {
        a[i] = v[i].second;
        a[k + i] = ~v[i].second; /* the minimum of ~x is ~(the maximum of x), without overflow */
    }
    reqs.emplace_back();
    mpi_ok(MPI_Iallreduce(a.data(), lo.data(), (int)(2 * k), MPI_INT64_T, MPI_MIN, comm, &reqs.back()), where);
    dist_wait(*this);
    for (size_t i = 0; i < k; i++)
        NNL_REQUIRE(lo[i] == ~lo[k + i], NNL_ERR_ARGUMENT,
                    "%s: the ranks disagree on %s (from %lld to %lld across the %d ranks); in a distributed model "
                    "every rank passes the same (nnl_distribute)",
                    fn, v[i].first, (long long)lo[i], (long long)~lo[k + i], size);
}

int64_t Dist::max_all(int64_t v) {
    dist_alive(*this);
    int64_t out = v;
    reqs.emplace_back();
    mpi_ok(MPI_Iallreduce(&v, &out, 1, MPI_INT64_T, MPI_MAX, comm, &reqs.back()), where);
    dist_wait(*this);
    return out;
}

void Dist::sum_all(double *v, int n) {
    dist_alive(*this);
    reqs.emplace_back();
    mpi_ok(MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, comm, &reqs.back()), where);
    dist_wait(*this);
}

void Dist::bcast(void *p, int64_t bytes) {
    dist_alive(*this);
    const int64_t chunk = (int64_t)1 << 30;
    for (int64_t o = 0; o < bytes; o += chunk) {
        reqs.emplace_back();
        mpi_ok(MPI_Ibcast((char *)p + o, (int)std::min(chunk, bytes - o), MPI_BYTE, 0, comm, &reqs.back()), where);
    }
    dist_wait(*this);
}

bool Dist::replicas_equal(uint64_t h) {
    dist_alive(*this);
    uint64_t a[2] = {h, ~h}, lo[2];
    reqs.emplace_back();
    mpi_ok(MPI_Iallreduce(a, lo, 2, MPI_UINT64_T, MPI_MIN, comm, &reqs.back()), where);
    dist_wait(*this);
    return lo[0] == ~lo[1];
}

/* G[lo, hi) scaled by the step's weight (over the known total, when
   every rank knows it) and sent: its sum over the ranks arrives in place,
   at once (blocking) or when reqs complete. */
static void dist_send(Dist &d, float *v, int64_t n, bool blocking) {
    double f = d.known_total > 0 ? d.weight / d.known_total : d.weight;
    if (d.on_device()) { /* CUDA-aware MPI: scaled on the device, which has finished before MPI reads it */
        if (f != 1.0) gpu_scale(v, n, (float)f);
        gpu_wait();
    } else if (f != 1.0) {
        simd::run<ScaleK>(v, n, (float)f);
    }
    const int64_t chunk = (int64_t)1 << 30;
    for (int64_t o = 0; o < n; o += chunk) {
        int c = (int)std::min(chunk, n - o);
        if (blocking) {
            mpi_ok(MPI_Allreduce(MPI_IN_PLACE, v + o, c, MPI_FLOAT, MPI_SUM, d.comm), d.where);
        } else {
            d.reqs.emplace_back();
            mpi_ok(MPI_Iallreduce(MPI_IN_PLACE, v + o, c, MPI_FLOAT, MPI_SUM, d.comm, &d.reqs.back()), d.where);
        }
    }
}
static void dist_send(Dist &d, int64_t lo, int64_t hi, bool blocking) {
    if (hi <= lo) return;
    if (d.gd && !d.on_device()) gpu_down(d.g + lo, d.gd + lo, hi - lo); /* staged: the bucket comes down first */
    dist_send(d, d.g + lo, hi - lo, blocking);
}

/* A row-sparse gradient: the union of the ranks' marked rows (a bitwise
   OR of one byte per row), then those rows alone, packed, sent as any
   range (scaled and summed), and unpacked. The other rows are zero on every
   rank, so their sum is the zero already there: the result is the dense
   reduction's. When the union holds most rows, the dense send is cheaper. */
static void dist_send_rows(Dist &d, const StepReduce::Rows &sp) {
    if (d.gd) gpu_down(d.g + sp.off, d.gd + sp.off, sp.rows * sp.cols); /* staged (never on_device: no sparse) */
    d.marks.assign(sp.mark, sp.mark + sp.rows);
    mpi_ok(MPI_Allreduce(MPI_IN_PLACE, d.marks.data(), (int)sp.rows, MPI_UNSIGNED_CHAR, MPI_BOR, d.comm), d.where);
    int64_t u = 0;
    for (int64_t r = 0; r < sp.rows; r++) u += d.marks[(size_t)r] != 0;
    if (2 * u > sp.rows) {
        dist_send(d, d.g + sp.off, sp.rows * sp.cols, true); /* (already down when staged) */
        return;
    }
    d.packed.resize((size_t)(u * sp.cols));
    float *p = d.packed.data();
    for (int64_t r = 0; r < sp.rows; r++)
        if (d.marks[(size_t)r]) {
            const float *gr = d.g + sp.off + r * sp.cols;
            p = std::copy(gr, gr + sp.cols, p);
        }
    dist_send(d, d.packed.data(), u * sp.cols, true);
    p = d.packed.data();
    for (int64_t r = 0; r < sp.rows; r++)
        if (d.marks[(size_t)r]) {
            std::copy(p, p + sp.cols, d.g + sp.off + r * sp.cols);
            p += sp.cols;
        }
}

void Dist::begin(StepReduce &r, double w) {
    dist_alive(*this);
    weight = w;
    gd = r.grad_device;
    g = !gd ? r.grad : cuda_aware ? gd : gpu_grad_stage(r.n);
    NNL_REQUIRE(g || r.n == 0, NNL_ERR_INTERNAL, "%s: no staging buffer for the device's gradients", where.c_str());
    pending = r.n;
    /* device memory: no host packing of the marked rows. cuda_aware is the
       same on every rank (nnl_distribute agrees on it), so every rank,
       whatever its device, makes the same collectives */
    bool rows = sparse_on && !cuda_aware;
    sparse = rows ? r.sparse : nullptr;
    n_sparse = rows ? r.n_sparse : 0;
}

void Dist::grad_ready(int64_t from) {
    /* a row-sparse gradient (an embedding table, always the first layer's)
       waits for reduce(), which sends its marked rows only */
    for (int k = 0; k < n_sparse; k++)
        if (from <= sparse[k].off && sparse[k].off < pending) {
            progress();
            return;
        }
    if (pending - from >= bucket) {
        dist_send(*this, from, pending, false);
        pending = from;
    }
    progress(); /* for the buckets on their way */
}

void Dist::progress() {
    if (reqs.empty()) return;
    int done = 0;
    mpi_ok(MPI_Testall((int)reqs.size(), reqs.data(), &done, MPI_STATUSES_IGNORE), where);
    if (done) reqs.clear();
}

void Dist::reduce(StepReduce &r) {
    if (!g) begin(r, 0.0); /* no begin: nothing of this step was sent */
    /* Every rank here (a barrier waited for with the deadline, and the
       buckets sent during backward): then the rest goes in one blocking
       MPI_Allreduce, about twice as fast as a non-blocking one of that
       size in Open MPI 4.1, and it cannot hang: every rank has arrived
       (a rank that dies now ends the job through mpirun). */
    reqs.emplace_back();
    mpi_ok(MPI_Ibarrier(comm, &reqs.back()), where);
    dist_wait(*this);
    int64_t lo = 0; /* the rest, G[0, pending): row-sparse gradients as their marked rows */
    for (int k = 0; k < n_sparse; k++) {
        const StepReduce::Rows &sp = sparse[k];
        if (sp.off < lo || sp.off + sp.rows * sp.cols > pending) continue;
        dist_send(*this, lo, sp.off, true);
        dist_send_rows(*this, sp);
        lo = sp.off + sp.rows * sp.cols;
    }
    dist_send(*this, lo, pending, true);
    pending = 0;
    static thread_local std::vector<double> s;
    s.assign(r.sums, r.sums + r.n_sums);
    s.push_back(weight);
    mpi_ok(MPI_Allreduce(MPI_IN_PLACE, s.data(), (int)s.size(), MPI_DOUBLE, MPI_SUM, comm), where);
    std::copy(s.begin(), s.begin() + r.n_sums, r.sums);
    double total = s.back();
    if (known_total > 0)
        NNL_REQUIRE(total == known_total, NNL_ERR_INTERNAL,
                    "%s: the ranks' sample counts add up to %.0f, not the expected %.0f", where.c_str(), total,
                    known_total);
    else if (total > 0 && total != 1.0) {
        if (on_device())
            gpu_scale(g, r.n, (float)(1.0 / total));
        else
            simd::run<ScaleK>(g, r.n, (float)(1.0 / total));
    }
    if (gd && !on_device()) gpu_up(gd, g, r.n); /* staged: the reduced arena goes back up (queued) */
    g = gd = nullptr;
}

#else /* no MPI: no Dist is ever made; these keep the linker content */
Dist::~Dist() {}
void Dist::agree(int, const std::string &) {}
void Dist::same(const char *, const std::vector<std::pair<const char *, int64_t>> &) {}
int64_t Dist::max_all(int64_t v) { return v; }
void Dist::sum_all(double *, int) {}
void Dist::bcast(void *, int64_t) {}
bool Dist::replicas_equal(uint64_t) { return true; }
void Dist::begin(StepReduce &, double) {}
void Dist::grad_ready(int64_t) {}
void Dist::progress() {}
void Dist::reduce(StepReduce &) {}
#endif

static bool sync_bn_layers(const Model &m, int flags) {
    if (!(flags & NNL_SYNC_BATCHNORM)) return false;
    for (auto &l : m.layers)
        if (!strcmp(l->cls, "BatchNormalization")) return true;
    return false;
}

static void sync_sum(Dist *d, double *v, int n) {
    d->where = "nnl_fit: the statistics of a synchronised BatchNormalization";
    d->sum_all(v, n);
}
static double sync_weight(const Dist *d) { return d->weight; }

void Model::bcast_state() {
    Dist &d = *dist;
    d.where = "nnl_fit: the broadcast of rank 0's model";
    /* the same model on every rank: checked before anything is sent */
    d.same("nnl_fit", {{"the number of layers", (int64_t)layers.size()},
                       {"the number of weights", param_total},
                       {"the size of the weight arena", (int64_t)W.size()},
                       {"the optimizer's slot arrays", (int64_t)(opt ? opt->nslots() : -1)},
                       {"the optimizer's extra state", (int64_t)(opt ? opt->extra_state().size() : 0)}});
    d.bcast(W.data(), (int64_t)W.size() * 4);
    if (opt) {
        int64_t n = opt->slots.empty() ? 0 : (int64_t)opt->slots[0].size();
        d.bcast(&n, sizeof n);
        if (n == 0)
            opt->slots.clear();
        else
            opt->ensure_slots(n);
        for (auto &sl : opt->slots) d.bcast(sl.data(), (int64_t)sl.size() * 4);
        std::vector<Optimizer::Extra> ex = opt->extra_state();
        std::vector<double> v{opt->learning_rate, (double)opt->iterations};
        for (auto &e : ex) v.push_back(*e.value);
        d.bcast(v.data(), (int64_t)v.size() * 8);
        opt->learning_rate = v[0];
        opt->iterations = (int64_t)v[1];
        for (size_t i = 0; i < ex.size(); i++) *ex[i].value = v[2 + i];
    }
    uint64_t rs[6] = {rng.s[0], rng.s[1], rng.s[2], rng.s[3], seed, seeded ? 1u : 0u};
    d.bcast(rs, sizeof rs);
    for (int i = 0; i < 4; i++) rng.s[i] = rs[i];
    seed = rs[4];
    seeded = rs[5] != 0;
}

} // namespace nnl

/* ========================================================================
   7  Data loaders and helpers
   nnl_array, stored-dtype decoding, idx (plain or gzip), npy, npz (zip,
   stored or deflated), MNIST folders and .npz files, text corpora, image
   files and Keras' image_dataset_from_directory, normalize, scale,
   to_categorical, shuffle, confusion matrix, pictures.
   Loaders read the whole file, then check every size and count found in it
   against the bytes actually there before allocating anything, so a
   truncated or hostile file ends in NNL_ERR_FORMAT, never in a crash or a
   huge allocation.
   ======================================================================== */
#include <cfloat>
#include <climits>

/* An owned array: size elements of dtype (NNL_FLOAT32 or NNL_INT64),
   row-major. data is malloc'ed with at least one byte, so never NULL. */
struct nnl_array {
    int dtype;
    int rank;
    int64_t shape[NNL_MAX_RANK];
    int64_t size;
    void *data;
};

namespace nnl {

/* ---- Dtype codes ---------------------------------------------------------- */

size_t dtype_size(int dtype) {
    switch (dtype) {
    case NNL_UINT8: case NNL_INT8: case NNL_BOOL: return 1;
    case NNL_INT16: case NNL_UINT16: case NNL_FLOAT16: return 2;
    case NNL_FLOAT32: case NNL_INT32: case NNL_UINT32: return 4;
    case NNL_FLOAT64: case NNL_INT64: case NNL_UINT64: return 8;
    default: return 0;
    }
}

namespace io {

/* IEEE half -> float, by hand (no compiler support assumed). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13); /* inf, NaN (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13); /* normal: bias 15 -> 127 */
    } else {
        float f = std::ldexp((float)man, -24); /* zero or subnormal: man * 2^-24, exact */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* double -> float without the undefined behaviour of an out-of-range cast. */
static float to_f32(double d) {
    if (d > FLT_MAX) return INFINITY;
    if (d < -FLT_MAX) return -INFINITY;
    return (float)d; /* NaN passes through */
}

/* Whether v converts to int64 exactly (finite, integral, in range). */
static bool is_int64(double v) {
    return v >= -9223372036854775808.0 && v < 9223372036854775808.0 && v == std::floor(v);
}

} // namespace io

/* Label i of y (dtype code) as an integer. Float labels must be integral. */
int64_t label_at(const void *y, int dtype, int64_t i) {
    auto integral = [&](double v) {
        if (!io::is_int64(v)) raise(NNL_ERR_ARGUMENT, "label %g at index %lld is not an integer", v, (long long)i);
        return (int64_t)v;
    };
    switch (dtype) {
    case NNL_INT64: return ((const int64_t *)y)[i];
    case NNL_INT32: return ((const int32_t *)y)[i];
    case NNL_INT16: return ((const int16_t *)y)[i];
    case NNL_INT8: return ((const int8_t *)y)[i];
    case NNL_UINT8: return ((const uint8_t *)y)[i];
    case NNL_UINT16: return ((const uint16_t *)y)[i];
    case NNL_UINT32: return ((const uint32_t *)y)[i];
    case NNL_BOOL: return ((const uint8_t *)y)[i] != 0;
    case NNL_UINT64: {
        uint64_t v = ((const uint64_t *)y)[i];
        if (v > (uint64_t)INT64_MAX)
            raise(NNL_ERR_ARGUMENT, "label %llu at index %lld does not fit int64", (unsigned long long)v, (long long)i);
        return (int64_t)v;
    }
    case NNL_FLOAT32: return integral(((const float *)y)[i]);
    case NNL_FLOAT64: return integral(((const double *)y)[i]);
    case NNL_FLOAT16: return integral(io::half_to_float(((const uint16_t *)y)[i]));
    default: raise(NNL_ERR_ARGUMENT, "unknown dtype code %d for labels", dtype);
    }
}

namespace io {

/* ---- Owned arrays ---------------------------------------------------------- */

static void free_array(nnl_array *a) {
    if (a) std::free(a->data);
    delete a;
}
struct ArrayFree {
    void operator()(nnl_array *a) const { free_array(a); }
};
using ArrayPtr = std::unique_ptr<nnl_array, ArrayFree>;

static std::string shape_str(int rank, const int64_t *shape) {
    std::string s = "(";
    for (int i = 0; i < rank; i++) s += std::to_string((long long)shape[i]) + (rank == 1 ? "," : i + 1 < rank ? ", " : "");
    return s + ")";
}

static void check_out_dtype(int dtype, const char *what) {
    if (dtype != NNL_FLOAT32 && dtype != NNL_INT64)
        raise(NNL_ERR_ARGUMENT, "%s: dtype must be NNL_FLOAT32 (%d) or NNL_INT64 (%d), got %d", what, NNL_FLOAT32,
              NNL_INT64, dtype);
}

/* Element count of a caller's shape; rejects NULL, bad ranks, negative dims. */
static int64_t checked_count(int rank, const int64_t *shape, const char *what) {
    if (rank < 0 || rank > NNL_MAX_RANK) raise(NNL_ERR_ARGUMENT, "%s: rank %d is not in 0..%d", what, rank, NNL_MAX_RANK);
    if (rank > 0 && !shape) raise(NNL_ERR_ARGUMENT, "%s: shape is NULL", what);
    int64_t count = 1;
    bool overflow = false;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0) raise(NNL_ERR_ARGUMENT, "%s: negative dimension in shape %s", what, shape_str(rank, shape).c_str());
        if (shape[i] != 0 && count > INT64_MAX / shape[i]) overflow = true;
        else count *= shape[i];
    }
    for (int i = 0; i < rank; i++)
        if (shape[i] == 0) return 0;
    if (overflow) raise(NNL_ERR_MEMORY, "%s: shape %s is too large", what, shape_str(rank, shape).c_str());
    return count;
}

/* A zero-filled array; shape already validated (count = its product). */
static ArrayPtr new_array(int dtype, int rank, const int64_t *shape, int64_t count) {
    size_t es = dtype_size(dtype);
    if ((uint64_t)count > (uint64_t)PTRDIFF_MAX / es)
        raise(NNL_ERR_MEMORY, "an array of shape %s is too large", shape_str(rank, shape).c_str());
    size_t bytes = (size_t)count * es;
    ArrayPtr a(new nnl_array());
    a->dtype = dtype;
    a->rank = rank;
    for (int i = 0; i < rank; i++) a->shape[i] = shape[i];
    a->size = count;
    a->data = std::calloc(bytes ? bytes : 1, 1);
    if (!a->data) raise(NNL_ERR_MEMORY, "cannot allocate %zu bytes for an array of shape %s", bytes,
                        shape_str(rank, shape).c_str());
    return a;
}

/* ---- Decoding stored elements into float32 / int64 -------------------------- */

static bool host_little() {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

struct Half { uint16_t bits; }; /* tags stored float16 */
struct Bool { uint8_t v; };     /* tags stored bool (any nonzero byte is true) */

template <class S> static S load_elem(const uint8_t *p, bool swap) {
    uint8_t b[sizeof(S)];
    memcpy(b, p, sizeof b);
    if (swap) std::reverse(b, b + sizeof b);
    S v;
    memcpy(&v, b, sizeof v);
    return v;
}

template <class S> static float as_f32(S v) {
    if constexpr (std::is_same_v<S, Half>) return half_to_float(v.bits);
    else if constexpr (std::is_same_v<S, Bool>) return v.v ? 1.0f : 0.0f;
    else if constexpr (std::is_same_v<S, double>) return to_f32(v);
    else return (float)v;
}

/* Stored value -> int64; fails (NNL_ERR_ARGUMENT) when it is not exact. */
template <class S> static int64_t as_i64(S v, const std::string &what, int64_t i) {
    if constexpr (std::is_same_v<S, Bool>) {
        return v.v != 0;
    } else if constexpr (std::is_same_v<S, uint64_t>) {
        if (v > (uint64_t)INT64_MAX)
            raise(NNL_ERR_ARGUMENT, "%s: element %lld (%llu) does not fit int64; load it as NNL_FLOAT32", what.c_str(),
                  (long long)i, (unsigned long long)v);
        return (int64_t)v;
    } else if constexpr (std::is_integral_v<S>) {
        return (int64_t)v;
    } else {
        double d;
        if constexpr (std::is_same_v<S, Half>) d = half_to_float(v.bits);
        else d = v;
        if (!is_int64(d))
            raise(NNL_ERR_ARGUMENT, "%s: element %lld (%g) is not an integer; load it as NNL_FLOAT32", what.c_str(),
                  (long long)i, d);
        return (int64_t)d;
    }
}

template <class S, bool Swap, class D> static void decode_loop(const uint8_t *src, int64_t n, D *dst,
                                                               const std::string &what) {
    for (int64_t i = 0; i < n; i++) {
        S v = load_elem<S>(src + (size_t)i * sizeof(S), Swap);
        if constexpr (std::is_same_v<D, float>) dst[i] = as_f32(v);
        else dst[i] = as_i64(v, what, i);
    }
}

/* The swap decided outside the loop, so the common cases vectorize. */
template <class S, class D> static void decode_run(const uint8_t *src, bool swap, int64_t n, D *dst,
                                                   const std::string &what) {
    if (swap && sizeof(S) > 1) decode_loop<S, true>(src, n, dst, what);
    else decode_loop<S, false>(src, n, dst, what);
}

/* n stored elements of dtype code src (byte-swapped when swap) into dst. */
template <class D> static void decode_to(const uint8_t *src, int src_dtype, bool swap, int64_t n, D *dst,
                                         const std::string &what) {
    switch (src_dtype) {
    case NNL_BOOL: return decode_run<Bool>(src, swap, n, dst, what);
    case NNL_INT8: return decode_run<int8_t>(src, swap, n, dst, what);
    case NNL_INT16: return decode_run<int16_t>(src, swap, n, dst, what);
    case NNL_INT32: return decode_run<int32_t>(src, swap, n, dst, what);
    case NNL_INT64: return decode_run<int64_t>(src, swap, n, dst, what);
    case NNL_UINT8: return decode_run<uint8_t>(src, swap, n, dst, what);
    case NNL_UINT16: return decode_run<uint16_t>(src, swap, n, dst, what);
    case NNL_UINT32: return decode_run<uint32_t>(src, swap, n, dst, what);
    case NNL_UINT64: return decode_run<uint64_t>(src, swap, n, dst, what);
    case NNL_FLOAT16: return decode_run<Half>(src, swap, n, dst, what);
    case NNL_FLOAT32: return decode_run<float>(src, swap, n, dst, what);
    case NNL_FLOAT64: return decode_run<double>(src, swap, n, dst, what);
    default: raise(NNL_ERR_INTERNAL, "%s: no decoder for dtype %d", what.c_str(), src_dtype);
    }
}

static bool is_float_dtype(int dtype) { return dtype == NNL_FLOAT16 || dtype == NNL_FLOAT32 || dtype == NNL_FLOAT64; }

/* Loader result dtype: want (NNL_FLOAT32 / NNL_INT64), or for want 0 the
   natural one: float32 for float data, int64 for integer and bool data. */
static int result_dtype(int src_dtype, int want) {
    if (want) return want;
    return is_float_dtype(src_dtype) ? NNL_FLOAT32 : NNL_INT64;
}

/* Checks that `have` payload bytes hold exactly the elements of shape (es
   bytes each) and returns their count. Shapes come from files here. */
static int64_t payload_count(int rank, const int64_t *shape, size_t es, size_t have, const std::string &what) {
    uint64_t count = 1;
    bool zero = false, over = false;
    for (int i = 0; i < rank; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d == 0) zero = true;
        else if (count > (uint64_t)INT64_MAX / es / d) over = true;
        else count *= d;
    }
    if (zero) count = 0;
    else if (over || count * es > have)
        raise(NNL_ERR_FORMAT, "%s: truncated: shape %s needs %s bytes of data, the file holds %zu", what.c_str(),
              shape_str(rank, shape).c_str(), over ? "more" : std::to_string(count * es).c_str(), have);
    if (count * es < have)
        raise(NNL_ERR_FORMAT, "%s: %zu bytes of trailing data after the %s array", what.c_str(),
              have - (size_t)(count * es), shape_str(rank, shape).c_str());
    return (int64_t)count;
}

/* Decodes a payload of `count` elements into a new array of the result dtype. */
static ArrayPtr decode_array(const uint8_t *src, int src_dtype, bool swap, int rank, const int64_t *shape,
                             int64_t count, int want, const std::string &what) {
    ArrayPtr a = new_array(result_dtype(src_dtype, want), rank, shape, count);
    if (a->dtype == NNL_FLOAT32) decode_to(src, src_dtype, swap, count, (float *)a->data, what);
    else decode_to(src, src_dtype, swap, count, (int64_t *)a->data, what);
    return a;
}

/* Column-major (Fortran) data of shape d[0..rank) to row-major: walks the C
   order with an index counter, keeping the Fortran offset in step. */
template <class T> static void fortran_to_c(T *data, int rank, const int64_t *d, int64_t count) {
    if (rank < 2 || count == 0) return;
    std::vector<T> src(data, data + count);
    int64_t stride[NNL_MAX_RANK], idx[NNL_MAX_RANK] = {0};
    stride[0] = 1;
    for (int j = 1; j < rank; j++) stride[j] = stride[j - 1] * d[j - 1];
    int64_t off = 0;
    for (int64_t c = 0; c < count; c++) {
        data[c] = src[(size_t)off];
        for (int j = rank - 1; j >= 0; j--) { /* next C index: last axis fastest */
            off += stride[j];
            if (++idx[j] < d[j]) break;
            off -= stride[j] * d[j];
            idx[j] = 0;
        }
    }
}

/* ---- Little helpers for binary formats ------------------------------------ */

static uint32_t rd16le(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32le(const uint8_t *p) { return rd16le(p) | rd16le(p + 2) << 16; }
static uint64_t rd64le(const uint8_t *p) { return (uint64_t)rd32le(p) | (uint64_t)rd32le(p + 4) << 32; }
static uint32_t rd32be(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* CRC-32 (zip, gzip): reflected polynomial 0xEDB88320, slicing by 4. */
static uint32_t crc32(const uint8_t *p, size_t n) {
    struct Table {
        uint32_t t[4][256];
        Table() {
            for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                t[0][i] = c;
            }
            for (int s = 1; s < 4; s++)
                for (int i = 0; i < 256; i++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
        }
    };
    static const Table tb;
    const auto &t = tb.t;
    uint32_t c = 0xFFFFFFFFu;
    for (; n >= 4; n -= 4, p += 4) {
        c ^= rd32le(p);
        c = t[3][c & 0xFF] ^ t[2][(c >> 8) & 0xFF] ^ t[1][(c >> 16) & 0xFF] ^ t[0][c >> 24];
    }
    for (; n; n--) c = t[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Raw deflate data (len bytes at src, of which `avail` >= len are readable)
   into exactly usize bytes. The output buffer is fixed (not grown), so a
   corrupt or hostile stream cannot make stb allocate more than usize, which
   is bounded first by deflate's best ratio (~1032:1), then by NNL_MAX_INFLATE
   (at most stb's int range). */
#ifndef NNL_MAX_INFLATE
#define NNL_MAX_INFLATE 2147483647 /* bytes; stb's decoder counts in int */
#endif
static std::vector<uint8_t> inflate(const uint8_t *src, size_t len, size_t avail, uint64_t usize,
                                    const std::string &what) {
#if NNL_HAVE_STB
    if (usize > (uint64_t)len * 1032 + 1024)
        raise(NNL_ERR_FORMAT, "%s: corrupt: %llu bytes cannot come from %zu bytes of deflate data", what.c_str(),
              (unsigned long long)usize, len);
    if (usize > (uint64_t)NNL_MAX_INFLATE)
        raise(NNL_ERR_UNSUPPORTED, "%s: %llu bytes once decompressed: over this build's limit of %llu "
              "(NNL_MAX_INFLATE)", what.c_str(), (unsigned long long)usize, (unsigned long long)NNL_MAX_INFLATE);
    if (len > (size_t)INT_MAX || usize > (uint64_t)INT_MAX)
        raise(NNL_ERR_UNSUPPORTED, "%s: compressed data over 2 GiB is not supported (stb's decoder uses int sizes)",
              what.c_str());
    std::vector<uint8_t> out((size_t)usize + 1);
    /* stb 2.27 reports an error when a stream's last codes sit in the final
       two bytes of its input, so up to 16 bytes after the stream (the gzip
       trailer, the zip directory: always there) are handed over too; the
       stream's final block stops the decoder before them. */
    int ilen = (int)std::min<size_t>(avail, std::min<size_t>(len + 16, (size_t)INT_MAX));
    int got = stbi_zlib_decode_noheader_buffer((char *)out.data(), (int)usize, (const char *)src, ilen);
    if (got < 0) raise(NNL_ERR_FORMAT, "%s: corrupt deflate data (or more than the %llu bytes announced)",
                       what.c_str(), (unsigned long long)usize);
    if ((uint64_t)got != usize)
        raise(NNL_ERR_FORMAT, "%s: corrupt: deflate data gives %d bytes, %llu announced", what.c_str(), got,
              (unsigned long long)usize);
    out.resize((size_t)usize);
    return out;
#else
    (void)src, (void)len, (void)avail, (void)usize;
    raise(NNL_ERR_UNSUPPORTED,
          "%s is compressed: reading it needs stb: install Debian's libstb-dev (apt-get install libstb-dev) or "
          "put stb_image.h beside nnlite.cpp",
          what.c_str());
#endif
}

/* ---- gzip (RFC 1952), one member ----------------------------------------- */

static bool is_gzip(const std::vector<uint8_t> &f) { return f.size() >= 2 && f[0] == 0x1F && f[1] == 0x8B; }

static std::vector<uint8_t> gunzip(const std::vector<uint8_t> &f, const std::string &what) {
    const size_t n = f.size();
    const uint8_t *p = f.data();
    if (n < 18) raise(NNL_ERR_FORMAT, "%s: truncated gzip file (%zu bytes)", what.c_str(), n);
    if (p[2] != 8) raise(NNL_ERR_FORMAT, "%s: gzip compression method %d is not deflate", what.c_str(), p[2]);
    const int flg = p[3];
    if (flg & 0xE0) raise(NNL_ERR_FORMAT, "%s: reserved gzip header flags 0x%02x set", what.c_str(), flg);
    const size_t end = n - 8; /* the trailer: CRC-32 and size mod 2^32 of the data */
    size_t pos = 10;
    auto field_end = [&](const char *name) { /* zero-terminated FNAME / FCOMMENT */
        const void *z = memchr(p + pos, 0, end - pos);
        if (!z) raise(NNL_ERR_FORMAT, "%s: truncated gzip header (unterminated %s)", what.c_str(), name);
        pos = (size_t)((const uint8_t *)z - p) + 1;
    };
    if (flg & 4) { /* FEXTRA */
        if (end - pos < 2 || end - pos - 2 < rd16le(p + pos))
            raise(NNL_ERR_FORMAT, "%s: truncated gzip header (extra field)", what.c_str());
        pos += 2 + rd16le(p + pos);
    }
    if (flg & 8) field_end("file name");
    if (flg & 16) field_end("comment");
    if (flg & 2) { /* FHCRC: low 16 bits of the header's CRC-32 */
        if (end - pos < 2) raise(NNL_ERR_FORMAT, "%s: truncated gzip header (header CRC)", what.c_str());
        if ((crc32(p, pos) & 0xFFFF) != rd16le(p + pos))
            raise(NNL_ERR_FORMAT, "%s: gzip header CRC mismatch (corrupt file)", what.c_str());
        pos += 2;
    }
    std::vector<uint8_t> out = inflate(p + pos, end - pos, n - pos, rd32le(p + end + 4), what);
    if (crc32(out.data(), out.size()) != rd32le(p + end))
        raise(NNL_ERR_FORMAT, "%s: gzip CRC mismatch (corrupt file)", what.c_str());
    return out;
}

/* ---- idx (MNIST): magic 0 0 type rank, rank big-endian uint32 dims, data -- */

static ArrayPtr parse_idx(const uint8_t *p, size_t n, int want, const std::string &what) {
    if (n < 4) raise(NNL_ERR_FORMAT, "%s: truncated idx header (%zu bytes)", what.c_str(), n);
    if (p[0] || p[1]) raise(NNL_ERR_FORMAT, "%s: not an idx file (magic %02x %02x, expected 00 00)", what.c_str(), p[0], p[1]);
    int src;
    switch (p[2]) {
    case 0x08: src = NNL_UINT8; break;
    case 0x09: src = NNL_INT8; break;
    case 0x0B: src = NNL_INT16; break;
    case 0x0C: src = NNL_INT32; break;
    case 0x0D: src = NNL_FLOAT32; break;
    case 0x0E: src = NNL_FLOAT64; break;
    default: raise(NNL_ERR_FORMAT, "%s: unknown idx data type 0x%02x", what.c_str(), p[2]);
    }
    const int rank = p[3];
    if (rank < 1 || rank > NNL_MAX_RANK)
        raise(NNL_ERR_FORMAT, "%s: idx rank %d is not in 1..%d", what.c_str(), rank, NNL_MAX_RANK);
    const size_t hdr = 4 + 4 * (size_t)rank;
    if (n < hdr) raise(NNL_ERR_FORMAT, "%s: truncated idx header (%zu bytes, rank %d)", what.c_str(), n, rank);
    int64_t shape[NNL_MAX_RANK];
    for (int i = 0; i < rank; i++) shape[i] = rd32be(p + 4 + 4 * i);
    int64_t count = payload_count(rank, shape, dtype_size(src), n - hdr, what);
    return decode_array(p + hdr, src, host_little(), rank, shape, count, want, what);
}

/* An idx image in memory, gzip-compressed or not (told by its magic bytes);
   f is consumed. The fuzz targets (fuzz/) call this directly. */
static ArrayPtr load_idx_bytes(std::vector<uint8_t> &f, int want, const std::string &what) {
    if (is_gzip(f)) {
        std::vector<uint8_t> raw = gunzip(f, what);
        f.clear();
        f.shrink_to_fit();
        return parse_idx(raw.data(), raw.size(), want, what);
    }
    return parse_idx(f.data(), f.size(), want, what);
}

/* An idx file, gzip-compressed or not (told by its magic bytes, not its name). */
static ArrayPtr load_idx_file(const std::string &path, int want) {
    std::vector<uint8_t> f;
    read_file(path.c_str(), f);
    return load_idx_bytes(f, want, "'" + path + "'");
}

/* ---- npy: magic, version, header length, Python dict header, data -------- */

struct NpyHeader {
    std::string descr;
    bool fortran = false;
    int rank = 0;
    int64_t shape[NNL_MAX_RANK] = {0};
};

/* The header is a Python literal, e.g.
     {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28), }
   Strings may use either quote; shape ints may carry py2's 'L'. */
class NpyDictParser {
    const char *p, *end;
    const std::string &what;
    [[noreturn]] void fail(const char *msg) {
        raise(NNL_ERR_FORMAT, "%s: bad npy header: %s", what.c_str(), msg);
    }
    void ws() {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    }
    bool eat(char c) {
        ws();
        if (p < end && *p == c) return p++, true;
        return false;
    }
    void expect(char c, const char *msg) {
        if (!eat(c)) fail(msg);
    }
    std::string str() {
        ws();
        if (p >= end || (*p != '\'' && *p != '"')) fail("expected a quoted string");
        const char q = *p++, *b = p;
        while (p < end && *p != q) p++;
        if (p >= end) fail("unterminated string");
        return std::string(b, p++);
    }
    bool boolean() {
        ws();
        for (const char *w : {"True", "False"}) {
            size_t l = strlen(w);
            if ((size_t)(end - p) >= l && !memcmp(p, w, l)) {
                p += l;
                return w[0] == 'T';
            }
        }
        fail("fortran_order is not True or False");
    }
    void shape(NpyHeader &h) {
        expect('(', "shape is not a tuple");
        while (!eat(')')) {
            ws();
            if (p < end && *p == '-') fail("negative dimension in shape");
            if (p >= end || *p < '0' || *p > '9') fail("shape holds something other than integers");
            uint64_t v = 0;
            for (; p < end && *p >= '0' && *p <= '9'; p++) {
                v = v * 10 + (uint64_t)(*p - '0');
                if (v > (uint64_t)INT64_MAX) fail("dimension out of range");
            }
            if (p < end && *p == 'L') p++;
            if (h.rank == NNL_MAX_RANK)
                raise(NNL_ERR_FORMAT, "%s: npy shape has more than NNL_MAX_RANK (%d) dimensions", what.c_str(),
                      NNL_MAX_RANK);
            h.shape[h.rank++] = (int64_t)v;
            if (!eat(',')) {
                expect(')', "expected ',' or ')' in shape");
                break;
            }
        }
    }

public:
    NpyDictParser(const char *text, size_t n, const std::string &w) : p(text), end(text + n), what(w) {}
    NpyHeader parse() {
        NpyHeader h;
        bool seen[3] = {false, false, false};
        expect('{', "not a dict");
        while (!eat('}')) {
            std::string key = str();
            expect(':', "expected ':' after a key");
            if ((key == "descr" && seen[0]) || (key == "fortran_order" && seen[1]) || (key == "shape" && seen[2]))
                fail(("key '" + key + "' given twice").c_str());
            if (key == "descr") {
                if (eat('[')) raise(NNL_ERR_UNSUPPORTED, "%s: structured npy dtypes are not supported", what.c_str());
                h.descr = str();
                seen[0] = true;
            } else if (key == "fortran_order") {
                h.fortran = boolean();
                seen[1] = true;
            } else if (key == "shape") {
                shape(h);
                seen[2] = true;
            } else {
                fail(("unexpected key '" + key + "'").c_str());
            }
            if (!eat(',')) {
                expect('}', "expected ',' or '}'");
                break;
            }
        }
        if (!seen[0] || !seen[1] || !seen[2]) fail("'descr', 'fortran_order' or 'shape' missing");
        return h;
    }
};

/* descr such as '<f4', '>i2', '|b1', '=u8' -> dtype code and byte swap. */
static int npy_dtype(const std::string &descr, bool &swap, const std::string &what) {
    std::string d = descr;
    char order = '=';
    if (!d.empty() && strchr("<>|=", d[0])) order = d[0], d.erase(0, 1);
    static const struct { const char *name; int dtype; } types[] = {
        {"b1", NNL_BOOL},    {"i1", NNL_INT8},    {"i2", NNL_INT16},   {"i4", NNL_INT32},
        {"i8", NNL_INT64},   {"u1", NNL_UINT8},   {"u2", NNL_UINT16},  {"u4", NNL_UINT32},
        {"u8", NNL_UINT64},  {"f2", NNL_FLOAT16}, {"f4", NNL_FLOAT32}, {"f8", NNL_FLOAT64}};
    for (const auto &t : types)
        if (d == t.name) {
            swap = (order == '<' && !host_little()) || (order == '>' && host_little());
            return t.dtype;
        }
    raise(NNL_ERR_UNSUPPORTED, "%s: npy dtype '%s' is not supported (bool, int8..int64, uint8..uint64, float16/32/64 are)",
          what.c_str(), descr.c_str());
}

/* A whole .npy image in memory (a file, or an npz member). */
static ArrayPtr parse_npy(const uint8_t *p, size_t n, int want, const std::string &what) {
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    for (size_t i = 0; i < 6 && i < n; i++)
        if (p[i] != magic[i]) raise(NNL_ERR_FORMAT, "%s: not a .npy file (bad magic)", what.c_str());
    if (n < 10) raise(NNL_ERR_FORMAT, "%s: truncated npy header (%zu bytes)", what.c_str(), n);
    const int major = p[6], minor = p[7];
    if (major < 1 || major > 3)
        raise(NNL_ERR_UNSUPPORTED, "%s: npy format version %d.%d is not supported (1.0 to 3.0 are)", what.c_str(),
              major, minor);
    /* version 1: 2-byte header length; 2 and 3: 4 bytes (3: UTF-8 text) */
    const size_t start = major == 1 ? 10 : 12;
    if (n < start) raise(NNL_ERR_FORMAT, "%s: truncated npy header (%zu bytes)", what.c_str(), n);
    const size_t hlen = major == 1 ? rd16le(p + 8) : rd32le(p + 8);
    if (hlen > n - start)
        raise(NNL_ERR_FORMAT, "%s: truncated: npy header of %zu bytes runs past the end (%zu bytes)", what.c_str(),
              hlen, n);
    NpyHeader h = NpyDictParser((const char *)p + start, hlen, what).parse();
    bool swap = false;
    const int src = npy_dtype(h.descr, swap, what);
    int64_t count = payload_count(h.rank, h.shape, dtype_size(src), n - start - hlen, what);
    ArrayPtr a = decode_array(p + start + hlen, src, swap, h.rank, h.shape, count, want, what);
    if (h.fortran) {
        if (a->dtype == NNL_FLOAT32) fortran_to_c((float *)a->data, a->rank, a->shape, a->size);
        else fortran_to_c((int64_t *)a->data, a->rank, a->shape, a->size);
    }
    return a;
}

/* ---- npz: a zip archive of .npy members ------------------------------------ */

struct ZipEntry {
    std::string name;
    uint32_t flags = 0, method = 0, crc = 0;
    uint64_t csize = 0, usize = 0, offset = 0; /* compressed, uncompressed, local header */
};

/* The central directory of a zip held in memory (the whole file). */
class Zip {
    const std::vector<uint8_t> &f;
    std::string what;
    std::vector<ZipEntry> entries;

    [[noreturn]] void bad(const char *msg) const { raise(NNL_ERR_FORMAT, "%s: corrupt zip (.npz): %s", what.c_str(), msg); }

    /* Sizes and offset that do not fit 32 bits sit in the zip64 extra field
       (id 1), in this order, present only where the 32-bit field is ~0. */
    void zip64_extra(ZipEntry &e, const uint8_t *x, size_t xlen, bool u, bool c, bool o) const {
        while (xlen >= 4) {
            uint32_t id = rd16le(x), len = rd16le(x + 2);
            if (len > xlen - 4) bad("extra field runs past its entry");
            if (id == 1) {
                size_t at = 0;
                for (uint64_t *v : {u ? &e.usize : nullptr, c ? &e.csize : nullptr, o ? &e.offset : nullptr}) {
                    if (!v) continue;
                    if (len - at < 8) bad("zip64 extra field too short");
                    *v = rd64le(x + 4 + at);
                    at += 8;
                }
                return;
            }
            x += 4 + len;
            xlen -= 4 + len;
        }
        bad("zip64 sizes announced but no zip64 extra field");
    }

public:
    Zip(const std::vector<uint8_t> &file, const std::string &path) : f(file), what("'" + path + "'") {
        const uint8_t *p = f.data();
        const size_t n = f.size();
        if (n < 22) raise(NNL_ERR_FORMAT, "%s: not a zip (.npz) file (%zu bytes)", what.c_str(), n);
        /* end of central directory record: 22 bytes + a comment of <= 65535 */
        size_t eocd = SIZE_MAX;
        for (size_t pos = n - 22 + 1, lo = n - 22 > 65535 ? n - 22 - 65535 : 0; pos-- > lo;)
            if (rd32le(p + pos) == 0x06054B50 && pos + 22 + rd16le(p + pos + 20) <= n) {
                eocd = pos;
                break;
            }
        if (eocd == SIZE_MAX)
            raise(NNL_ERR_FORMAT, "%s: not a zip (.npz) file, or truncated (no end of central directory)", what.c_str());
        if (rd16le(p + eocd + 4) || rd16le(p + eocd + 6))
            raise(NNL_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", what.c_str());
        uint64_t count = rd16le(p + eocd + 10), cd_size = rd32le(p + eocd + 12), cd_off = rd32le(p + eocd + 16);
        size_t cd_limit = eocd; /* the directory ends before the end records */
        if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
            /* zip64: a 20-byte locator before the record points at the zip64 record */
            if (eocd < 20 || rd32le(p + eocd - 20) != 0x07064B50) bad("zip64 end locator missing");
            uint64_t z = rd64le(p + eocd - 20 + 8);
            if (eocd - 20 < 56 || z > eocd - 20 - 56 || rd32le(p + z) != 0x06064B50) bad("zip64 end record missing");
            count = rd64le(p + z + 32);
            cd_size = rd64le(p + z + 40);
            cd_off = rd64le(p + z + 48);
            cd_limit = (size_t)z;
        }
        if (cd_off > cd_limit || cd_size > cd_limit - cd_off) bad("central directory lies outside the file");
        if (count > cd_size / 46) bad("more entries than the central directory can hold");
        entries.reserve((size_t)count);
        size_t pos = (size_t)cd_off;
        const size_t cd_end = (size_t)(cd_off + cd_size);
        for (uint64_t i = 0; i < count; i++) {
            if (cd_end - pos < 46 || rd32le(p + pos) != 0x02014B50) bad("bad central directory entry");
            const uint8_t *h = p + pos;
            ZipEntry e;
            e.flags = rd16le(h + 8);
            e.method = rd16le(h + 10);
            e.crc = rd32le(h + 16);
            e.csize = rd32le(h + 20);
            e.usize = rd32le(h + 24);
            e.offset = rd32le(h + 42);
            const size_t nl = rd16le(h + 28), xl = rd16le(h + 30), cl = rd16le(h + 32);
            if (cd_end - pos - 46 < nl + xl + cl) bad("central directory entry runs past the directory");
            e.name.assign((const char *)h + 46, nl);
            const bool u = e.usize == 0xFFFFFFFF, c = e.csize == 0xFFFFFFFF, o = e.offset == 0xFFFFFFFF;
            if (u || c || o) zip64_extra(e, h + 46 + nl, xl, u, c, o);
            entries.push_back(std::move(e));
            pos += 46 + nl + xl + cl;
        }
    }

    /* Every member, in directory order. */
    const std::vector<ZipEntry> &members() const { return entries; }

    /* The member named key or key + ".npy"; NULL when absent. */
    const ZipEntry *find(const std::string &key) const {
        for (const ZipEntry &e : entries)
            if (e.name == key || e.name == key + ".npy") return &e;
        return nullptr;
    }

    /* "x_train, y_train, ..." (".npy" dropped) for error messages. */
    std::string keys() const {
        std::string s;
        for (size_t i = 0; i < entries.size() && i < 50; i++) {
            std::string k = entries[i].name;
            if (k.size() > 4 && k.compare(k.size() - 4, 4, ".npy") == 0) k.resize(k.size() - 4);
            s += (i ? ", " : "") + k;
        }
        if (entries.size() > 50) s += ", ...";
        return entries.empty() ? "none" : s;
    }

    /* A member's bytes, CRC-checked: a view into the file when stored,
       else inflated into `store`. */
    std::pair<const uint8_t *, size_t> member(const ZipEntry &e, std::vector<uint8_t> &store) const {
        const uint8_t *p = f.data();
        const size_t n = f.size();
        const std::string mwhat = what + " member '" + e.name + "'";
        if (e.flags & 1) raise(NNL_ERR_UNSUPPORTED, "%s is encrypted", mwhat.c_str());
        if (e.offset > n || n - e.offset < 30 || rd32le(p + e.offset) != 0x04034B50)
            raise(NNL_ERR_FORMAT, "%s: bad local header offset (corrupt zip)", mwhat.c_str());
        const size_t data = (size_t)e.offset + 30 + rd16le(p + e.offset + 26) + rd16le(p + e.offset + 28);
        if (data > n || e.csize > n - data)
            raise(NNL_ERR_FORMAT, "%s: truncated: data runs past the end of the file", mwhat.c_str());
        std::pair<const uint8_t *, size_t> out;
        if (e.method == 0) {
            if (e.csize != e.usize) raise(NNL_ERR_FORMAT, "%s: stored member with two different sizes", mwhat.c_str());
            out = {p + data, (size_t)e.usize};
        } else if (e.method == 8) {
            store = inflate(p + data, (size_t)e.csize, n - data, e.usize, mwhat);
            out = {store.data(), store.size()};
        } else {
            raise(NNL_ERR_UNSUPPORTED, "%s: zip compression method %u is not supported (stored and deflate are)",
                  mwhat.c_str(), e.method);
        }
        if (crc32(out.first, out.second) != e.crc) raise(NNL_ERR_FORMAT, "%s: CRC mismatch (corrupt zip)", mwhat.c_str());
        return out;
    }

    /* The member as an array. */
    ArrayPtr load(const ZipEntry &e, int want) const {
        std::vector<uint8_t> store;
        auto m = member(e, store);
        return parse_npy(m.first, m.second, want, what + " member '" + e.name + "'");
    }
};

/* ---- MNIST ----------------------------------------------------------------- */

/* The four parts, in the order of nnl_load_mnist's arguments. */
static const char *const kMnistFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
static const char *const kMnistKeys[4] = {"x_train", "y_train", "x_test", "y_test"};

static bool is_regular(const std::string &path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/* MNIST into a[0..4) (x_train, y_train, x_test, y_test), the parts with
   want[i] set; images float32 (N, rows, cols), labels int64 (N,). */
static void load_mnist(const char *path, const bool want[4], ArrayPtr a[4]) {
    struct stat st;
    if (stat(path, &st) != 0) raise(NNL_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        for (int i = 0; i < 4; i++) {
            if (!want[i]) continue;
            std::string f = std::string(path) + "/" + kMnistFiles[i];
            if (!is_regular(f)) f += ".gz";
            if (!is_regular(f))
                raise(NNL_ERR_IO, "MNIST folder '%s' has neither %s nor %s.gz", path, kMnistFiles[i], kMnistFiles[i]);
            a[i] = load_idx_file(f, i % 2 ? NNL_INT64 : NNL_FLOAT32);
        }
    } else {
        std::vector<uint8_t> f;
        read_file(path, f);
        Zip zip(f, path);
        for (int i = 0; i < 4; i++) {
            if (!want[i]) continue;
            const ZipEntry *e = zip.find(kMnistKeys[i]);
            if (!e)
                raise(NNL_ERR_FORMAT, "'%s' is not an MNIST .npz: no member '%s' (members: %s)", path, kMnistKeys[i],
                      zip.keys().c_str());
            a[i] = zip.load(*e, i % 2 ? NNL_INT64 : NNL_FLOAT32);
        }
    }
    for (int i = 0; i < 4; i++) {
        if (!a[i]) continue;
        const int rank = i % 2 ? 1 : 3;
        if (a[i]->rank != rank)
            raise(NNL_ERR_FORMAT, "'%s': %s has shape %s, expected %s", path, kMnistKeys[i],
                  shape_str(a[i]->rank, a[i]->shape).c_str(), rank == 1 ? "(N,)" : "(N, rows, cols)");
    }
    for (int i = 0; i < 4; i += 2)
        if (a[i] && a[i + 1] && a[i]->shape[0] != a[i + 1]->shape[0])
            raise(NNL_ERR_FORMAT, "'%s': %lld images in %s but %lld labels in %s", path, (long long)a[i]->shape[0],
                  kMnistKeys[i], (long long)a[i + 1]->shape[0], kMnistKeys[i + 1]);
}

/* ---- .npy writer ----------------------------------------------------------- */

static void save_npy(const char *path, const nnl_array &a) {
    std::string hdr = std::string("{'descr': '") + (a.dtype == NNL_FLOAT32 ? "<f4" : "<i8") +
                      "', 'fortran_order': False, 'shape': " + shape_str(a.rank, a.shape) + ", }";
    /* pad with spaces to a multiple of 64 bytes with the 10-byte preamble, end in '\n' */
    hdr.append(63 - (10 + hdr.size()) % 64, ' ');
    hdr += '\n';
    std::string pre("\x93NUMPY\x01\x00", 8);
    pre += (char)(hdr.size() & 0xFF);
    pre += (char)(hdr.size() >> 8);
    const size_t es = dtype_size(a.dtype), bytes = (size_t)a.size * es;
    const uint8_t *body = (const uint8_t *)a.data;
    std::vector<uint8_t> swapped; /* big-endian hosts write a little-endian copy */
    if (!host_little()) {
        swapped.assign(body, body + bytes);
        for (size_t i = 0; i < bytes; i += es) std::reverse(swapped.begin() + i, swapped.begin() + i + es);
        body = swapped.data();
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) raise(NNL_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    bool ok = fwrite(pre.data(), 1, pre.size(), fp) == pre.size() && fwrite(hdr.data(), 1, hdr.size(), fp) == hdr.size() &&
              (bytes == 0 || fwrite(body, 1, bytes, fp) == bytes);
    ok = (fclose(fp) == 0) && ok;
    if (!ok) raise(NNL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
}

/* ---- Confusion matrix table ------------------------------------------------- */

static std::string confusion_table(const int64_t *cm, int k, const char *const *labels, bool normalize) {
    auto label = [&](int i) { return labels && labels[i] ? std::string(labels[i]) : std::to_string(i); };
    auto cell = [&](int t, int p) {
        if (!normalize) return std::to_string((long long)cm[(size_t)t * k + p]);
        int64_t total = 0;
        for (int j = 0; j < k; j++) total += cm[(size_t)t * k + j];
        char buf[32];
        snprintf(buf, sizeof buf, "%.2f", total ? (double)cm[(size_t)t * k + p] / (double)total : 0.0);
        return std::string(buf);
    };
    const std::string corner = "true\\pred";
    size_t w0 = corner.size(), w = 1; /* row-label column, data columns */
    for (int i = 0; i < k; i++) {
        w0 = std::max(w0, label(i).size());
        w = std::max(w, label(i).size());
        for (int j = 0; j < k; j++) w = std::max(w, cell(i, j).size());
    }
    auto pad_left = [](const std::string &s, size_t width) { return std::string(width - std::min(width, s.size()), ' ') + s; };
    auto pad_right = [](const std::string &s, size_t width) { return s + std::string(width - std::min(width, s.size()), ' '); };
    std::string out = pad_right(corner, w0);
    for (int j = 0; j < k; j++) out += "  " + pad_left(label(j), w);
    out += '\n';
    for (int i = 0; i < k; i++) {
        out += pad_right(label(i), w0);
        for (int j = 0; j < k; j++) out += "  " + pad_left(cell(i, j), w);
        out += '\n';
    }
    return out;
}

} // namespace io
} // namespace nnl

/* ---- C ABI: arrays, loaders, helpers ---------------------------------------- */

extern "C" {

NNL_API int nnl_array_create(int dtype, int rank, const int64_t *shape, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_array_create: out is NULL");
        nnl::io::check_out_dtype(dtype, "nnl_array_create");
        int64_t count = nnl::io::checked_count(rank, shape, "nnl_array_create");
        *out = nnl::io::new_array(dtype, rank, shape, count).release();
    });
}

NNL_API void nnl_array_free(nnl_array *a) { nnl::io::free_array(a); }

NNL_API int nnl_array_dtype(const nnl_array *a) { return a ? a->dtype : 0; }
NNL_API int nnl_array_rank(const nnl_array *a) { return a ? a->rank : 0; }
NNL_API int64_t nnl_array_dim(const nnl_array *a, int axis) {
    return a && axis >= 0 && axis < a->rank ? a->shape[axis] : 0;
}
NNL_API const int64_t *nnl_array_shape(const nnl_array *a) { return a ? a->shape : nullptr; }
NNL_API int64_t nnl_array_size(const nnl_array *a) { return a ? a->size : 0; }
NNL_API void *nnl_array_data(nnl_array *a) { return a ? a->data : nullptr; }

NNL_API int nnl_array_reshape(nnl_array *a, int rank, const int64_t *shape) {
    return nnl::guard(__func__, [&] {
        if (!a) nnl::raise(NNL_ERR_ARGUMENT, "nnl_array_reshape: array is NULL");
        int64_t count = nnl::io::checked_count(rank, shape, "nnl_array_reshape");
        if (count != a->size)
            nnl::raise(NNL_ERR_SHAPE, "nnl_array_reshape: cannot reshape %s (%lld elements) to %s (%lld)",
                       nnl::io::shape_str(a->rank, a->shape).c_str(), (long long)a->size,
                       nnl::io::shape_str(rank, shape).c_str(), (long long)count);
        a->rank = rank;
        for (int i = 0; i < rank; i++) a->shape[i] = shape[i];
    });
}

NNL_API int nnl_array_convert(nnl_array *a, int dtype) {
    return nnl::guard(__func__, [&] {
        if (!a) nnl::raise(NNL_ERR_ARGUMENT, "nnl_array_convert: array is NULL");
        nnl::io::check_out_dtype(dtype, "nnl_array_convert");
        if (dtype == a->dtype) return;
        /* decode the current buffer as a native-endian "stored" array; the
           array stays unchanged when a value does not convert */
        nnl::io::ArrayPtr b = nnl::io::decode_array((const uint8_t *)a->data, a->dtype, false, a->rank, a->shape,
                                                    a->size, dtype, "nnl_array_convert");
        std::swap(a->data, b->data);
        a->dtype = dtype;
    });
}

NNL_API int nnl_load_idx(const char *path, int want_dtype, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_idx: path or out is NULL");
        if (want_dtype) nnl::io::check_out_dtype(want_dtype, "nnl_load_idx");
        *out = nnl::io::load_idx_file(path, want_dtype).release();
    });
}

NNL_API int nnl_load_npy(const char *path, int want_dtype, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_npy: path or out is NULL");
        if (want_dtype) nnl::io::check_out_dtype(want_dtype, "nnl_load_npy");
        std::vector<uint8_t> f;
        nnl::read_file(path, f);
        *out = nnl::io::parse_npy(f.data(), f.size(), want_dtype, std::string("'") + path + "'").release();
    });
}

NNL_API int nnl_load_npz(const char *path, const char *key, int want_dtype, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !key || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_npz: path, key or out is NULL");
        if (want_dtype) nnl::io::check_out_dtype(want_dtype, "nnl_load_npz");
        std::vector<uint8_t> f;
        nnl::read_file(path, f);
        nnl::io::Zip zip(f, path);
        const nnl::io::ZipEntry *e = zip.find(key);
        if (!e) nnl::raise(NNL_ERR_ARGUMENT, "'%s' has no member '%s' (members: %s)", path, key, zip.keys().c_str());
        *out = zip.load(*e, want_dtype).release();
    });
}

NNL_API int nnl_save_npy(const char *path, const nnl_array *a) {
    return nnl::guard(__func__, [&] {
        if (!path || !a) nnl::raise(NNL_ERR_ARGUMENT, "nnl_save_npy: path or array is NULL");
        nnl::io::save_npy(path, *a);
    });
}

NNL_API int nnl_load_mnist(const char *path, nnl_array **x_train, nnl_array **y_train, nnl_array **x_test,
                           nnl_array **y_test) {
    nnl_array **outs[4] = {x_train, y_train, x_test, y_test};
    for (nnl_array **o : outs)
        if (o) *o = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_mnist: path is NULL");
        bool want[4];
        nnl::io::ArrayPtr a[4];
        for (int i = 0; i < 4; i++) want[i] = outs[i] != nullptr;
        nnl::io::load_mnist(path, want, a);
        for (int i = 0; i < 4; i++)
            if (outs[i]) *outs[i] = a[i].release();
    });
}

/* ---- Text corpora and sequence windows (nnlite.h: "Text corpora") ---- */
struct nnl_vocab {
    std::vector<std::string> words;                 /* by id */
    std::unordered_map<std::string, int32_t> index; /* word -> id */
    int32_t unk = -1;                               /* id of "<unk>", -1 when absent */
};

extern "C++" { /* inside the ABI's extern "C" block: the helpers are C++ */
namespace nnl {
namespace text {

static bool space(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Calls word(token, line) for every token of the file's bytes, "<eos>" at
   every line's end (a last line without '\n' too). A NUL byte is refused:
   words are handed out as C strings. */
template <class F> static void for_each_word(const std::vector<uint8_t> &f, const char *path, F word) {
    const uint8_t *p = f.data(), *end = p + f.size();
    int64_t line = 1;
    static const std::string eos = "<eos>";
    std::string w;
    while (p < end) {
        if (*p == 0)
            raise(NNL_ERR_FORMAT, "'%s' holds a NUL byte at offset %lld (line %lld): not a text file", path,
                  (long long)(p - f.data()), (long long)line);
        if (*p == '\n') {
            word(eos, line);
            line++;
            p++;
            continue;
        }
        if (space(*p)) {
            p++;
            continue;
        }
        const uint8_t *s = p;
        while (p < end && *p && *p != '\n' && !space(*p)) p++;
        w.assign((const char *)s, (size_t)(p - s));
        word(w, line);
    }
    if (!f.empty() && f.back() != '\n') word(eos, line);
}

static const int64_t MAX_VOCAB = (int64_t)1 << 24; /* ids as float32, exactly */

} // namespace text
} // namespace nnl
}

extern "C++" {
namespace nnl {
namespace text {

/* The vocabulary of a file's bytes (nnl_text_vocab; the fuzz target feeds it
   bytes directly). */
static std::unique_ptr<nnl_vocab> build_vocab(const std::vector<uint8_t> &f, const char *path) {
    std::unordered_map<std::string, int64_t> count;
    for_each_word(f, path, [&](const std::string &w, int64_t) {
        if (++count[w] == 1 && (int64_t)count.size() > MAX_VOCAB)
            raise(NNL_ERR_UNSUPPORTED, "'%s' has more than 2^24 distinct words (ids travel as float32)", path);
    });
    if (count.empty()) raise(NNL_ERR_FORMAT, "'%s' holds no words", path);
    std::vector<std::pair<std::string, int64_t>> v(count.begin(), count.end());
    /* TensorFlow's reader: sorted(counter.items(), key=lambda x: (-x[1], x[0])) */
    std::sort(v.begin(), v.end(), [](const std::pair<std::string, int64_t> &a, const std::pair<std::string, int64_t> &b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    std::unique_ptr<nnl_vocab> voc(new nnl_vocab());
    voc->words.reserve(v.size());
    for (auto &kv : v) {
        voc->index.emplace(kv.first, (int32_t)voc->words.size());
        voc->words.push_back(kv.first);
    }
    auto u = voc->index.find("<unk>");
    voc->unk = u == voc->index.end() ? -1 : u->second;
    return voc;
}

/* A file's bytes as int32 ids under v (nnl_load_words). */
static io::ArrayPtr word_ids(const std::vector<uint8_t> &f, const char *path, const nnl_vocab &v) {
    std::vector<int32_t> ids;
    for_each_word(f, path, [&](const std::string &w, int64_t line) {
        auto it = v.index.find(w);
        if (it != v.index.end()) {
            ids.push_back(it->second);
        } else if (v.unk >= 0) {
            ids.push_back(v.unk);
        } else {
            raise(NNL_ERR_ARGUMENT,
                  "'%s' line %lld: the word '%s' is not in the vocabulary, which has no \"<unk>\" to stand for it",
                  path, (long long)line, printable(w.substr(0, 64)).c_str());
        }
    });
    int64_t shape[1] = {(int64_t)ids.size()};
    io::ArrayPtr a = io::new_array(NNL_INT32, 1, shape, shape[0]);
    if (!ids.empty()) memcpy(a->data, ids.data(), ids.size() * sizeof(int32_t));
    return a;
}

} // namespace text
} // namespace nnl
}

NNL_API int nnl_text_vocab(const char *path, nnl_vocab **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_text_vocab: path or out is NULL");
        std::vector<uint8_t> f;
        nnl::read_file(path, f);
        *out = nnl::text::build_vocab(f, path).release();
    });
}

NNL_API void nnl_vocab_free(nnl_vocab *v) { delete v; }
NNL_API int64_t nnl_vocab_size(const nnl_vocab *v) { return v ? (int64_t)v->words.size() : 0; }
NNL_API const char *nnl_vocab_word(const nnl_vocab *v, int64_t id) {
    return v && id >= 0 && id < (int64_t)v->words.size() ? v->words[(size_t)id].c_str() : nullptr;
}
NNL_API int64_t nnl_vocab_id(const nnl_vocab *v, const char *word) {
    if (!v || !word) return -1;
    auto it = v->index.find(word);
    return it == v->index.end() ? -1 : it->second;
}

NNL_API int nnl_load_words(const char *path, const nnl_vocab *v, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !v || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_words: path, vocabulary or out is NULL");
        std::vector<uint8_t> f;
        nnl::read_file(path, f);
        *out = nnl::text::word_ids(f, path, *v).release();
    });
}

NNL_API int nnl_lm_windows(const int32_t *ids, int64_t n, int batch_size, int num_steps, nnl_array **x,
                           nnl_array **y) {
    if (x) *x = nullptr;
    if (y) *y = nullptr;
    return nnl::guard(__func__, [&] {
        if (!ids || !x || !y) nnl::raise(NNL_ERR_ARGUMENT, "nnl_lm_windows: ids, x or y is NULL");
        if (n < 0 || batch_size < 1 || num_steps < 1)
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_lm_windows: n = %lld, batch_size = %d, num_steps = %d: need n >= 0 "
                       "and positive sizes", (long long)n, batch_size, num_steps);
        int64_t B = batch_size, T = num_steps, L = n / B, windows = L > 0 ? (L - 1) / T : 0;
        if (windows < 1)
            nnl::raise(NNL_ERR_ARGUMENT,
                       "nnl_lm_windows: %lld ids in %d rows of %lld give no window of %d steps plus its target "
                       "(need at least %lld ids)",
                       (long long)n, batch_size, (long long)L, num_steps, (long long)(B * (T + 1)));
        for (int64_t i = 0; i < B * L; i++)
            if (ids[i] < 0) nnl::raise(NNL_ERR_ARGUMENT, "nnl_lm_windows: ids[%lld] = %d is negative", (long long)i, ids[i]);
        int64_t shape[2] = {windows * B, T};
        nnl::io::ArrayPtr ax = nnl::io::new_array(NNL_INT32, 2, shape, windows * B * T);
        nnl::io::ArrayPtr ay = nnl::io::new_array(NNL_INT32, 2, shape, windows * B * T);
        int32_t *px = (int32_t *)ax->data, *py = (int32_t *)ay->data;
        for (int64_t w = 0; w < windows; w++)
            for (int64_t r = 0; r < B; r++) {
                const int32_t *row = ids + r * L + w * T;
                memcpy(px + (w * B + r) * T, row, (size_t)T * sizeof(int32_t));
                memcpy(py + (w * B + r) * T, row + 1, (size_t)T * sizeof(int32_t));
            }
        *x = ax.release();
        *y = ay.release();
    });
}

NNL_API int nnl_sliding_windows(const float *series, int64_t n, int64_t features, int64_t window, nnl_array **x,
                                nnl_array **y) {
    if (x) *x = nullptr;
    if (y) *y = nullptr;
    return nnl::guard(__func__, [&] {
        if (!series || !x || !y) nnl::raise(NNL_ERR_ARGUMENT, "nnl_sliding_windows: series, x or y is NULL");
        if (features < 1 || window < 1 || n <= window)
            nnl::raise(NNL_ERR_ARGUMENT,
                       "nnl_sliding_windows: n = %lld steps, window = %lld, features = %lld: need features >= 1, "
                       "window >= 1 and n > window",
                       (long long)n, (long long)window, (long long)features);
        int64_t m = n - window;
        int64_t xs[3] = {m, window, features}, ys[2] = {m, features};
        int64_t cx = nnl::mul_size(nnl::mul_size(m, window), features);
        if (cx < 0 || cx > nnl::MAX_ELEMENTS)
            nnl::raise(NNL_ERR_MEMORY, "nnl_sliding_windows: %lld windows of %lld x %lld are too many values",
                       (long long)m, (long long)window, (long long)features);
        nnl::io::ArrayPtr ax = nnl::io::new_array(NNL_FLOAT32, 3, xs, cx);
        nnl::io::ArrayPtr ay = nnl::io::new_array(NNL_FLOAT32, 2, ys, m * features);
        float *px = (float *)ax->data, *py = (float *)ay->data;
        for (int64_t t = 0; t < m; t++) {
            memcpy(px + t * window * features, series + t * features, (size_t)(window * features) * sizeof(float));
            memcpy(py + t * features, series + (t + window) * features, (size_t)features * sizeof(float));
        }
        *x = ax.release();
        *y = ay.release();
    });
}

/* ---- Images (nnlite.h: "Images") ------------------------------------------
   stb_image decodes (PNG, JPEG, BMP, GIF's first frame, TGA, PNM; 16-bit
   PNG and PNM reduced to 8 bits; its colour conversion: grey = (77 R + 150 G
   + 29 B) >> 8, alpha dropped as PIL's convert('RGB') drops it, 255 where a
   file has none); nnlite checks the header's size before stb allocates,
   resizes separably in float (each axis on its own: bilinear with half-pixel
   centres where it grows or keeps its size, as tf.image.resize; area
   averaging where it shrinks, so no pixel is skipped), scales, and builds
   Keras' image_dataset_from_directory. Values stay 0..255 until the
   caller's scale multiplies them. */
extern "C++" { /* inside the ABI's extern "C" block: the helpers are C++ */
namespace nnl {
namespace img {

/* Most pixels (width * height) one image may have: bounds what a hostile
   header can make nnlite allocate (4 floats a pixel). 2^28: 16384 x 16384. */
#ifndef NNL_MAX_IMAGE_PIXELS
#define NNL_MAX_IMAGE_PIXELS ((int64_t)1 << 28)
#endif

/* One decoded image, (h, w, c) row-major, values 0..255. */
struct Image {
    int h = 0, w = 0, c = 0;
    std::vector<float> px;
};

#if !NNL_HAVE_STB || !NNL_HAVE_STB_WRITE
[[noreturn]] static void no_stb(const std::string &what, const char *header) {
    raise(NNL_ERR_UNSUPPORTED,
          "%s: image files need stb: install Debian's libstb-dev (apt-get install libstb-dev) or put %s beside "
          "nnlite.cpp, and rebuild nnlite",
          what.c_str(), header);
}
#endif

static void check_channels(int channels, const char *api) {
    NNL_REQUIRE(channels >= 0 && channels <= 4, NNL_ERR_ARGUMENT,
                "%s: channels must be 0 (as stored), 1 (grayscale), 2 (grayscale and alpha), 3 (RGB) or 4 (RGBA), "
                "got %d", api, channels);
}

static void check_size(int height, int width, const char *api) {
    NNL_REQUIRE(height >= 0 && width >= 0 && (height == 0) == (width == 0), NNL_ERR_ARGUMENT,
                "%s: height and width must both be positive (resize) or both 0 (keep the size), got %d x %d", api,
                height, width);
    NNL_REQUIRE((int64_t)height * width <= NNL_MAX_IMAGE_PIXELS, NNL_ERR_ARGUMENT,
                "%s: %d x %d is over the %lld pixels an image may have (NNL_MAX_IMAGE_PIXELS)", api, height, width,
                (long long)NNL_MAX_IMAGE_PIXELS);
}

#if NNL_HAVE_STB
/* stb_image 2.27 (Debian's) writes a JPEG Huffman table's symbols without
   checking that the 16 counts sum to at most 256, past the table's end:
   every DHT segment (before the first scan and between the scans of a
   progressive file) is checked here before stb sees the file. */
static void check_jpeg_tables(const uint8_t *p, size_t n, const std::string &what) {
    /* the start-of-image marker as stb finds it: 0xFF, any number of 0xFF
       fill bytes, 0xD8 (a file of FF FF FF D8 ... is a JPEG to stb) */
    if (n < 4 || p[0] != 0xFF) return;
    size_t i = 1;
    while (i < n && p[i] == 0xFF) i++;
    if (i >= n || p[i] != 0xD8) return;
    i++;
    while (i + 1 < n) {
        if (p[i] != 0xFF) { /* entropy-coded data: on to the next marker (not FF00, not RSTn) */
            i++;
            continue;
        }
        const uint8_t m = p[i + 1];
        if (m == 0xFF) {
            i++;
            continue;
        }
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
            i += 2;
            continue;
        }
        if (m == 0xD9) return; /* the end */
        if (i + 4 > n) return;  /* truncated: stb says so */
        const size_t len = (size_t)p[i + 2] << 8 | p[i + 3], end = i + 2 + len;
        /* as stb reads a DHT: tables while the segment's declared length
           lasts, each 17 bytes and its symbols even where the file (or the
           segment) ends first, bytes past the file's end reading as 0 */
        if (m == 0xC4)
            for (size_t t = i + 4; t < end;) {
                size_t count = 0;
                for (size_t k = 1; k <= 16; k++) count += t + k < n ? p[t + k] : 0;
                if (count > 256)
                    raise(NNL_ERR_FORMAT, "%s: corrupt JPEG: a Huffman table of %zu codes (at most 256)",
                          what.c_str(), count);
                t += 17 + count;
            }
        i += 2 + std::max<size_t>(len, 2);
    }
}
#endif

#if NNL_HAVE_STB
/* stb_image 2.27 reads a PNM header's numbers into an int without an
   overflow check (undefined behaviour past 2^31): width, height and maxval
   of a P5 / P6 file are read here first, as stb reads them (whitespace and
   '#' comments skipped), and more than 9 digits are refused. */
static void check_pnm_header(const uint8_t *p, size_t n, const std::string &what) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return;
    size_t i = 2;
    for (int field = 0; field < 3; field++) {
        for (;;) {
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i >= n || p[i] != '#') break;
            while (i < n && p[i] != '\n' && p[i] != '\r') i++;
        }
        size_t digits = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
        if (digits > 9) raise(NNL_ERR_FORMAT, "%s: corrupt PNM header: a number of %zu digits", what.c_str(), digits);
    }
}
#endif

/* stb_image 2.27 grows its buffer to a PNG chunk's announced length before
   reading it, so 75 bytes announcing a 600 MB IDAT make it allocate that
   much: every chunk's length is checked against the bytes present first. */
static void check_png_chunks(const uint8_t *p, size_t n, const std::string &what) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n < 8 || memcmp(p, sig, 8) != 0) return;
    for (size_t i = 8; i + 8 <= n;) {
        const uint64_t len = (uint64_t)p[i] << 24 | (uint64_t)p[i + 1] << 16 | (uint64_t)p[i + 2] << 8 | p[i + 3];
        if (len > n - i - 8)
            raise(NNL_ERR_FORMAT, "%s: truncated or corrupt PNG: a chunk of %llu bytes, %zu left in the file",
                  what.c_str(), (unsigned long long)len, n - i - 8);
        if (!memcmp(p + i + 4, "IEND", 4)) return;
        i += 12 + (size_t)len;
    }
}

/* An image file's bytes, decoded to `channels` (0: as stored). what names the
   file in messages. */
#if NNL_HAVE_STB
/* stb's stbi__convert_format, for the PNM files decode() asks for as they
   are stored: grey from colour as stb weighs it ((77 r + 150 g + 29 b) >> 8),
   alpha 255 where there was none, so a converted PNM equals what stb gives
   for the other formats (from == to copies). */
static void convert_channels(const uint8_t *src, int from, float *dst, int to, size_t pixels) {
    for (size_t i = 0; i < pixels; i++, src += from, dst += to) {
        uint8_t r = src[0], g = from >= 3 ? src[1] : src[0], b = from >= 3 ? src[2] : src[0];
        uint8_t a = from == 2 ? src[1] : from == 4 ? src[3] : 255;
        uint8_t y = from >= 3 ? (uint8_t)((r * 77 + g * 150 + 29 * b) >> 8) : r;
        if (to <= 2) {
            dst[0] = y;
            if (to == 2) dst[1] = a;
        } else {
            dst[0] = r, dst[1] = g, dst[2] = b;
            if (to == 4) dst[3] = a;
        }
    }
}
#endif

static Image decode(const uint8_t *p, size_t n, int channels, const std::string &what,
                    int64_t max_pixels = NNL_MAX_IMAGE_PIXELS) {
#if NNL_HAVE_STB
    if (n > (size_t)INT_MAX)
        raise(NNL_ERR_UNSUPPORTED, "%s: image files over 2 GiB are not supported (stb counts in int)", what.c_str());
    check_jpeg_tables(p, n, what);
    check_pnm_header(p, n, what);
    check_png_chunks(p, n, what);
    struct Track { /* stb's blocks (stbmem), freed when the decode is abandoned */
        std::vector<void *> blocks;
        std::vector<void *> *saved = stbmem::live;
        Track() { stbmem::live = &blocks; }
        ~Track() {
            stbmem::live = saved;
            for (void *b : blocks) std::free(b);
        }
    } track;
    int w = 0, h = 0, comp = 0;
    /* the header alone first: its size is checked before anything is decoded */
    if (!stbi_info_from_memory(p, (int)n, &w, &h, &comp)) {
        const char *why = stbi_failure_reason();
        raise(NNL_ERR_FORMAT, "%s: not an image file nnlite reads (PNG, JPEG, BMP, GIF, TGA, PNM)%s%s", what.c_str(),
              why ? ": " : "", why ? why : "");
    }
    if (w < 1 || h < 1 || comp < 1 || comp > 4)
        raise(NNL_ERR_FORMAT, "%s: corrupt header: %d x %d pixels, %d channels", what.c_str(), w, h, comp);
    if ((int64_t)w * h > max_pixels)
        raise(NNL_ERR_MEMORY, "%s: %d x %d pixels: over the %lld pixels an image may have (NNL_MAX_IMAGE_PIXELS)",
              what.c_str(), w, h, (long long)max_pixels);
    const int c = channels ? channels : comp;
    /* A PNM comes from stb as stored and is converted here: stb 2.27
       converts a 16-bit PNM (maxval > 255) to other channels with its 8-bit
       routine and then reads twice the buffer (a heap overflow found by
       fuzz_image), and reduces its 16-bit samples, which PNM stores most
       significant byte first, to their low byte (it reads them as
       little-endian): a 16-bit PNM is read at 16 bits and keeps the high
       byte of each sample. */
    const bool pnm = n >= 2 && p[0] == 'P' && (p[1] == '5' || p[1] == '6');
    const bool pnm16 = pnm && stbi_is_16_bit_from_memory(p, (int)n);
    int w2 = 0, h2 = 0, comp2 = 0;
    void *d = pnm16 ? (void *)stbi_load_16_from_memory(p, (int)n, &w2, &h2, &comp2, 0)
                    : (void *)stbi_load_from_memory(p, (int)n, &w2, &h2, &comp2, pnm ? 0 : c);
    if (!d) {
        const char *why = stbi_failure_reason();
        raise(NNL_ERR_FORMAT, "%s: corrupt or truncated image%s%s", what.c_str(), why ? ": " : "", why ? why : "");
    }
    std::unique_ptr<void, void (*)(void *)> hold(d, stbi_image_free);
    if (w2 != w || h2 != h)
        raise(NNL_ERR_FORMAT, "%s: corrupt: the header says %d x %d pixels, the data %d x %d", what.c_str(), w, h, w2,
              h2);
    Image im;
    im.h = h, im.w = w, im.c = c;
    const size_t px = (size_t)w * h;
    if (pnm) {
        if (comp2 != comp)
            raise(NNL_ERR_FORMAT, "%s: corrupt: %d channels, the header says %d", what.c_str(), comp2, comp);
        std::vector<uint8_t> bytes;
        const uint8_t *b = (const uint8_t *)d;
        if (pnm16) { /* sample i's first byte in the file: the high one */
            bytes.resize(px * comp2);
            for (size_t i = 0; i < bytes.size(); i++) bytes[i] = ((const uint8_t *)d)[2 * i];
            b = bytes.data();
        }
        im.px.resize(px * c);
        convert_channels(b, comp2, im.px.data(), c, px);
    } else {
        const stbi_uc *b = (const stbi_uc *)d;
        im.px.assign(b, b + px * c);
    }
    return im;
#else
    (void)p, (void)n, (void)channels, (void)max_pixels;
    no_stb(what, "stb_image.h");
#endif
}

/* Per output index along one axis of n source samples resized to m: the
   source indices and weights it takes. */
struct Tap {
    int i;
    double w;
};
static std::vector<std::vector<Tap>> axis_taps(int n, int m) {
    std::vector<std::vector<Tap>> t((size_t)m);
    const double s = (double)n / m;
    for (int j = 0; j < m; j++) {
        if (m >= n) { /* bilinear, half-pixel centres, edges clamped (tf.image.resize) */
            double x = std::min(std::max((j + 0.5) * s - 0.5, 0.0), (double)(n - 1));
            int x0 = (int)x, x1 = std::min(x0 + 1, n - 1);
            double f = x - x0;
            t[(size_t)j].push_back({x0, 1 - f});
            if (f > 0) t[(size_t)j].push_back({x1, f});
        } else { /* area: output j covers source [j s, (j + 1) s), each sample by its overlap */
            double lo = j * s, hi = std::min((j + 1) * s, (double)n);
            for (int i = (int)lo; i < n && i < hi; i++) {
                double ov = std::min(hi, i + 1.0) - std::max(lo, (double)i);
                if (ov > 0) t[(size_t)j].push_back({i, ov / s});
            }
        }
    }
    return t;
}

/* im resized to h x w: along the width, then along the height, summing in
   double (a constant image stays exactly constant). */
static void resize(Image &im, int h, int w) {
    if (im.h == h && im.w == w) return;
    const int c = im.c;
    const auto tx = axis_taps(im.w, w), ty = axis_taps(im.h, h);
    std::vector<double> rows((size_t)im.h * w * c, 0.0), out((size_t)w * c);
    for (int y = 0; y < im.h; y++)
        for (int x = 0; x < w; x++)
            for (const Tap &t : tx[(size_t)x]) {
                const float *s = &im.px[((size_t)y * im.w + t.i) * c];
                double *d = &rows[((size_t)y * w + x) * c];
                for (int k = 0; k < c; k++) d[k] += t.w * s[k];
            }
    std::vector<float> px((size_t)h * w * c);
    for (int y = 0; y < h; y++) {
        std::fill(out.begin(), out.end(), 0.0);
        for (const Tap &t : ty[(size_t)y]) {
            const double *s = &rows[(size_t)t.i * w * c];
            for (int k = 0; k < w * c; k++) out[(size_t)k] += t.w * s[k];
        }
        for (int k = 0; k < w * c; k++) px[(size_t)y * w * c + k] = (float)out[(size_t)k];
    }
    im.px.swap(px);
    im.h = h, im.w = w;
}

/* A file's bytes decoded, resized (height, width > 0) and scaled. */
static Image load(const uint8_t *p, size_t n, int channels, int height, int width, float scale,
                  const std::string &what) {
    Image im = decode(p, n, channels, what);
    if (height > 0) resize(im, height, width);
    if (scale != 1.0f)
        for (float &v : im.px) v *= scale;
    return im;
}

static io::ArrayPtr to_array(const Image &im) {
    int64_t shape[3] = {im.h, im.w, im.c};
    io::ArrayPtr a = io::new_array(NNL_FLOAT32, 3, shape, (int64_t)im.px.size());
    if (!im.px.empty()) memcpy(a->data, im.px.data(), im.px.size() * sizeof(float));
    return a;
}

/* ---- Writing: PNG, JPEG, BMP, TGA by the path's extension ---- */

static std::string lower_ext(const char *path) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    std::string e = dot && (!slash || dot > slash) ? dot + 1 : "";
    for (char &ch : e) ch = (char)std::tolower((unsigned char)ch);
    return e;
}

/* (h, w, c) bytes as the file format `ext` names; "" for an unknown one. */
static std::string encode(const uint8_t *px, int h, int w, int c, const std::string &ext, const std::string &what) {
#if NNL_HAVE_STB_WRITE
    std::string out;
    auto sink = [](void *ctx, void *data, int size) { ((std::string *)ctx)->append((const char *)data, (size_t)size); };
    int ok;
    if (ext == "png") ok = stbi_write_png_to_func(sink, &out, w, h, c, px, w * c);
    else if (ext == "jpg" || ext == "jpeg") ok = stbi_write_jpg_to_func(sink, &out, w, h, c, px, 95);
    else if (ext == "bmp") ok = stbi_write_bmp_to_func(sink, &out, w, h, c, px);
    else if (ext == "tga") ok = stbi_write_tga_to_func(sink, &out, w, h, c, px);
    else return "";
    if (!ok || out.empty()) raise(NNL_ERR_MEMORY, "%s: stb_image_write could not encode the image", what.c_str());
    return out;
#else
    (void)px, (void)h, (void)w, (void)c, (void)ext;
    no_stb(what, "stb_image_write.h");
#endif
}

/* Float pixels (h, w, c) times scale to bytes: rounded, clipped to 0..255,
   NaN 0. */
static std::vector<uint8_t> to_bytes(const float *px, int64_t n, float scale) {
    std::vector<uint8_t> b((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        float v = px[i] * scale;
        b[(size_t)i] = v >= 0.0f ? (uint8_t)std::min(255.0f, std::floor(v + 0.5f)) : 0; /* NaN fails v >= 0 */
    }
    return b;
}

static void save(const char *path, const uint8_t *px, int h, int w, int c, const char *api) {
    const std::string ext = lower_ext(path), what = format("%s: '%s'", api, path);
    std::string data = encode(px, h, w, c, ext, what);
    if (data.empty())
        raise(NNL_ERR_ARGUMENT, "%s: '%s': the extension names no format nnlite writes (.png, .jpg, .jpeg, .bmp, .tga)",
              api, path);
    write_file_atomic(path, data);
}

/* ---- image_dataset_from_directory ---- */

/* numpy's legacy RandomState(seed).shuffle on a list (Keras' index_directory
   shuffles its file list so): MT19937 seeded by init_genrand (std::mt19937
   is the same generator), Fisher-Yates from the end with j drawn by
   rejection under the smallest bit mask covering i. The same seed therefore
   picks the same files for training and validation as Keras. */
template <class T> static void numpy_shuffle(std::vector<T> &v, uint32_t seed) {
    std::mt19937 mt(seed);
    for (size_t i = v.size(); i-- > 1;) {
        uint32_t max = (uint32_t)i, mask = max;
        mask |= mask >> 1, mask |= mask >> 2, mask |= mask >> 4, mask |= mask >> 8, mask |= mask >> 16;
        uint32_t j;
        while ((j = (uint32_t)mt() & mask) > max) {
        }
        std::swap(v[i], v[j]);
    }
}

/* Keras' allowed formats (image_dataset_from_directory's ALLOWLIST_FORMATS). */
static bool keras_image_name(const std::string &name) {
    std::string lo = name;
    for (char &ch : lo) ch = (char)std::tolower((unsigned char)ch);
    for (const char *e : {".bmp", ".gif", ".jpeg", ".jpg", ".png"}) {
        size_t k = strlen(e);
        if (lo.size() >= k && lo.compare(lo.size() - k, k, e) == 0) return true;
    }
    return false;
}

/* The names in a folder (no "." and ".."), sorted by their bytes. */
static std::vector<std::string> list_dir(const std::string &dir) {
    DIR *d = opendir(dir.c_str());
    if (!d) raise(NNL_ERR_IO, "cannot open the folder '%s': %s", dir.c_str(), strerror(errno));
    std::vector<std::string> names;
    while (struct dirent *e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

/* A class folder's image files, as Keras' index_subdirectory lists them:
   os.walk without following links to folders, sorted by (folder, name). */
static void walk(const std::string &dir, std::vector<std::pair<std::string, std::string>> &files, int depth) {
    if (depth > 64) raise(NNL_ERR_FORMAT, "'%s': folders nested deeper than 64", dir.c_str());
    for (const std::string &name : list_dir(dir)) {
        std::string p = dir + "/" + name;
        struct stat st, lst;
        if (stat(p.c_str(), &st) != 0) continue; /* a dangling link */
        if (S_ISDIR(st.st_mode)) {
            if (lstat(p.c_str(), &lst) == 0 && !S_ISLNK(lst.st_mode)) walk(p, files, depth + 1);
        } else if (keras_image_name(name)) {
            files.push_back({dir, name});
        }
    }
}

struct Dataset {
    io::ArrayPtr x, y;
    std::unique_ptr<nnl_vocab> classes;
};

static Dataset from_directory(const char *directory, int height, int width, int channels, float scale, bool shuffle,
                              uint64_t seed, double split, const char *subset, bool skip_bad, const char *api) {
    struct stat st;
    if (stat(directory, &st) != 0) raise(NNL_ERR_IO, "cannot open '%s': %s", directory, strerror(errno));
    if (!S_ISDIR(st.st_mode)) raise(NNL_ERR_IO, "'%s' is not a folder", directory);
    NNL_REQUIRE(split >= 0 && split < 1, NNL_ERR_ARGUMENT, "%s: validation_split must be in [0, 1), got %g", api, split);
    const std::string sub = subset ? subset : "";
    NNL_REQUIRE(sub.empty() || sub == "training" || sub == "validation", NNL_ERR_ARGUMENT,
                "%s: subset must be \"training\", \"validation\" or NULL, got \"%s\"", api, printable(sub).c_str());
    NNL_REQUIRE((split > 0) == !sub.empty(), NNL_ERR_ARGUMENT,
                "%s: validation_split and subset go together (validation_split %g, subset %s)", api, split,
                sub.empty() ? "NULL" : sub.c_str());
    NNL_REQUIRE(!shuffle || seed <= 0xFFFFFFFFu, NNL_ERR_ARGUMENT,
                "%s: seed must be in 0..2^32-1 (numpy's RandomState, which Keras' shuffle uses), got %llu", api,
                (unsigned long long)seed);

    Dataset ds;
    ds.classes.reset(new nnl_vocab());
    const std::string root = directory;
    std::vector<std::string> paths;
    std::vector<int32_t> labels;
    for (const std::string &name : list_dir(root)) {
        std::string p = root + "/" + name;
        if (name[0] == '.' || stat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        const int32_t id = (int32_t)ds.classes->words.size();
        ds.classes->index.emplace(name, id);
        ds.classes->words.push_back(name);
        std::vector<std::pair<std::string, std::string>> files;
        walk(p, files, 0);
        std::sort(files.begin(), files.end());
        for (auto &f : files) {
            paths.push_back(f.first + "/" + f.second);
            labels.push_back(id);
        }
    }
    if (ds.classes->words.empty())
        raise(NNL_ERR_FORMAT, "'%s' has no class folders (one subfolder of images per class)", directory);
    if (paths.empty())
        raise(NNL_ERR_FORMAT, "no images found in the %d class folders of '%s' (allowed formats: .bmp, .gif, .jpeg, "
              ".jpg, .png)", (int)ds.classes->words.size(), directory);
    if (shuffle) { /* two generators with one seed, as Keras shuffles its two lists */
        numpy_shuffle(paths, (uint32_t)seed);
        numpy_shuffle(labels, (uint32_t)seed);
    }
    size_t lo = 0, hi = paths.size();
    if (split > 0) { /* Keras: the last int(split * n) are validation */
        size_t k = (size_t)(split * (double)paths.size());
        if (sub == "training") hi -= k;
        else lo = hi - k;
    }
    std::vector<float> data;
    std::vector<int32_t> keep;
    int h = height, w = width, c = channels;
    for (size_t i = lo; i < hi; i++) {
        const std::string what = "'" + paths[i] + "'";
        Image im;
        try {
            std::vector<uint8_t> f;
            read_file(paths[i].c_str(), f);
            im = load(f.data(), f.size(), channels, height, width, scale, what);
            if (h == 0 && keep.empty()) h = im.h, w = im.w;
            if (c == 0 && keep.empty()) c = im.c;
            if (im.h != h || im.w != w)
                raise(NNL_ERR_SHAPE, "%s is %d x %d, the images before it %d x %d: give a height and width to resize "
                      "them to", what.c_str(), im.h, im.w, h, w);
            if (im.c != c)
                raise(NNL_ERR_SHAPE, "%s has %d channels, the images before it %d: ask for 1, 3 or 4 channels",
                      what.c_str(), im.c, c);
        } catch (const Error &e) {
            if (!skip_bad || e.status == NNL_ERR_UNSUPPORTED || e.status == NNL_ERR_SHAPE) throw;
            fprintf(stderr, "nnlite: warning: %s: skipping %s\n", api, e.msg.c_str());
            continue;
        }
        if (mul_size(mul_size((int64_t)keep.size() + 1, (int64_t)h * w), c) > MAX_ELEMENTS)
            raise(NNL_ERR_MEMORY, "%s: the images of '%s' are too many values", api, directory);
        data.insert(data.end(), im.px.begin(), im.px.end());
        keep.push_back(labels[i]);
    }
    if (keep.empty())
        raise(NNL_ERR_FORMAT, "no readable image in the %s of '%s' (%zu files, all skipped)",
              sub.empty() ? "files" : (sub + " subset").c_str(), directory, hi - lo);
    const int64_t n = (int64_t)keep.size();
    int64_t xs[4] = {n, h, w, c}, ys[1] = {n};
    ds.x = io::new_array(NNL_FLOAT32, 4, xs, (int64_t)data.size());
    memcpy(ds.x->data, data.data(), data.size() * sizeof(float));
    ds.y = io::new_array(NNL_INT32, 1, ys, n);
    memcpy(ds.y->data, keep.data(), keep.size() * sizeof(int32_t));
    return ds;
}

} // namespace img
} // namespace nnl
}

NNL_API int nnl_load_image(const char *path, int channels, int height, int width, float scale, nnl_array **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        if (!path || !out) nnl::raise(NNL_ERR_ARGUMENT, "nnl_load_image: path or out is NULL");
        nnl::img::check_channels(channels, "nnl_load_image");
        nnl::img::check_size(height, width, "nnl_load_image");
        std::vector<uint8_t> f;
        nnl::read_file(path, f);
        nnl::img::Image im =
            nnl::img::load(f.data(), f.size(), channels, height, width, scale, std::string("'") + path + "'");
        *out = nnl::img::to_array(im).release();
    });
}

NNL_API int nnl_image_dataset_from_directory(const char *directory, int height, int width, int channels,
                                             float scale, int shuffle, uint64_t seed, double validation_split,
                                             const char *subset, int skip_bad, nnl_array **images,
                                             nnl_array **labels, nnl_vocab **class_names) {
    if (images) *images = nullptr;
    if (labels) *labels = nullptr;
    if (class_names) *class_names = nullptr;
    return nnl::guard(__func__, [&] {
        const char *api = "nnl_image_dataset_from_directory";
        if (!directory || !images) nnl::raise(NNL_ERR_ARGUMENT, "%s: directory or images is NULL", api);
        nnl::img::check_channels(channels, api);
        nnl::img::check_size(height, width, api);
        nnl::img::Dataset ds = nnl::img::from_directory(directory, height, width, channels, scale, shuffle != 0, seed,
                                                        validation_split, subset, skip_bad != 0, api);
        *images = ds.x.release();
        if (labels) *labels = ds.y.release();
        if (class_names) *class_names = ds.classes.release();
    });
}

NNL_API int nnl_save_image(const char *path, const float *pixels, int height, int width, int channels,
                           float scale) {
    return nnl::guard(__func__, [&] {
        const char *api = "nnl_save_image";
        if (!path || !*path || !pixels) nnl::raise(NNL_ERR_ARGUMENT, "%s: path or pixels is NULL", api);
        NNL_REQUIRE(channels >= 1 && channels <= 4, NNL_ERR_ARGUMENT,
                    "%s: channels must be 1 (grayscale), 2 (grayscale and alpha), 3 (RGB) or 4 (RGBA), got %d", api,
                    channels);
        NNL_REQUIRE(height >= 1 && width >= 1 && height <= 65535 && width <= 65535 &&
                        (int64_t)height * width <= NNL_MAX_IMAGE_PIXELS,
                    NNL_ERR_ARGUMENT, "%s: height and width must be in 1..65535, at most %lld pixels (got %d x %d)",
                    api, (long long)NNL_MAX_IMAGE_PIXELS, height, width);
        std::vector<uint8_t> b = nnl::img::to_bytes(pixels, (int64_t)height * width * channels, scale);
        nnl::img::save(path, b.data(), height, width, channels, api);
    });
}

NNL_API int nnl_normalize(float *x, int rank, const int64_t *shape, int axis) {
    return nnl::guard(__func__, [&] {
        int64_t count = nnl::io::checked_count(rank, shape, "nnl_normalize");
        if (rank < 1) nnl::raise(NNL_ERR_ARGUMENT, "nnl_normalize: rank must be at least 1");
        if (axis < -rank || axis >= rank)
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_normalize: axis %d is out of range for rank %d", axis, rank);
        if (count == 0) return;
        if (!x) nnl::raise(NNL_ERR_ARGUMENT, "nnl_normalize: x is NULL");
        if (axis < 0) axis += rank;
        /* x viewed as (outer, len, inner): the vectors run along len, stride inner */
        int64_t outer = 1, inner = 1, len = shape[axis];
        for (int i = 0; i < axis; i++) outer *= shape[i];
        for (int i = axis + 1; i < rank; i++) inner *= shape[i];
        std::vector<double> norm((size_t)inner);
        for (int64_t o = 0; o < outer; o++) {
            float *b = x + o * len * inner;
            std::fill(norm.begin(), norm.end(), 0.0);
            for (int64_t k = 0; k < len; k++)
                for (int64_t i = 0; i < inner; i++) norm[(size_t)i] += (double)b[k * inner + i] * b[k * inner + i];
            for (double &v : norm) v = v > 0 ? std::sqrt(v) : 1.0; /* zero vectors stay as they are */
            for (int64_t k = 0; k < len; k++)
                for (int64_t i = 0; i < inner; i++) b[k * inner + i] = (float)(b[k * inner + i] / norm[(size_t)i]);
        }
    });
}

NNL_API int nnl_scale(float *x, int64_t n, float scale, float shift) {
    return nnl::guard(__func__, [&] {
        if (n < 0) nnl::raise(NNL_ERR_ARGUMENT, "nnl_scale: n is negative (%lld)", (long long)n);
        if (n > 0 && !x) nnl::raise(NNL_ERR_ARGUMENT, "nnl_scale: x is NULL");
        for (int64_t i = 0; i < n; i++) x[i] = x[i] * scale + shift;
    });
}

NNL_API int nnl_to_categorical(const void *labels, int dtype, int64_t n, int num_classes, float *out) {
    return nnl::guard(__func__, [&] {
        if (n < 0 || num_classes < 1)
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_to_categorical: n = %lld, num_classes = %d", (long long)n, num_classes);
        if (n > 0 && (!labels || !out)) nnl::raise(NNL_ERR_ARGUMENT, "nnl_to_categorical: labels or out is NULL");
        if (nnl::dtype_size(dtype) == 0) nnl::raise(NNL_ERR_ARGUMENT, "nnl_to_categorical: unknown dtype code %d", dtype);
        if (n > INT64_MAX / num_classes) nnl::raise(NNL_ERR_ARGUMENT, "nnl_to_categorical: n * num_classes overflows");
        for (int64_t i = 0; i < n; i++) { /* check all before writing anything */
            int64_t c = nnl::label_at(labels, dtype, i);
            if (c < 0 || c >= num_classes)
                nnl::raise(NNL_ERR_ARGUMENT, "nnl_to_categorical: label %lld of sample %lld is not in [0, %d)",
                           (long long)c, (long long)i, num_classes);
        }
        std::fill(out, out + n * num_classes, 0.0f);
        for (int64_t i = 0; i < n; i++) out[i * num_classes + nnl::label_at(labels, dtype, i)] = 1.0f;
    });
}

NNL_API int nnl_shuffle(float *x, int64_t row_x, void *y, int y_dtype, int64_t row_y, int64_t n, uint64_t seed) {
    return nnl::guard(__func__, [&] {
        if (n < 0) nnl::raise(NNL_ERR_ARGUMENT, "nnl_shuffle: n is negative (%lld)", (long long)n);
        if (!x || row_x < 1) nnl::raise(NNL_ERR_ARGUMENT, "nnl_shuffle: x is NULL or row_x < 1");
        const size_t ys = y ? nnl::dtype_size(y_dtype) : 0;
        if (y && (ys == 0 || row_y < 1))
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_shuffle: y has unknown dtype code %d or row_y < 1", y_dtype);
        if (row_x > PTRDIFF_MAX / (int64_t)sizeof(float) / std::max<int64_t>(n, 1) ||
            (y && row_y > PTRDIFF_MAX / (int64_t)ys / std::max<int64_t>(n, 1)))
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_shuffle: rows too large");
        const size_t bx = (size_t)row_x * sizeof(float), by = y ? (size_t)row_y * ys : 0;
        std::vector<uint8_t> tmp(std::max(bx, by));
        auto swap_rows = [&](uint8_t *base, size_t bytes, int64_t i, int64_t j) {
            memcpy(tmp.data(), base + (size_t)i * bytes, bytes);
            memcpy(base + (size_t)i * bytes, base + (size_t)j * bytes, bytes);
            memcpy(base + (size_t)j * bytes, tmp.data(), bytes);
        };
        /* Fisher-Yates from the end: the same seed gives the same permutation */
        nnl::Rng rng(seed);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)rng.below((uint64_t)i + 1);
            if (j == i) continue;
            swap_rows((uint8_t *)x, bx, i, j);
            if (y) swap_rows((uint8_t *)y, by, i, j);
        }
    });
}

NNL_API int nnl_confusion_matrix(const void *y_true, int dtype, const int32_t *y_pred, int64_t n, int num_classes,
                                 int64_t *out) {
    return nnl::guard(__func__, [&] {
        if (n < 0 || num_classes < 1)
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_confusion_matrix: n = %lld, num_classes = %d", (long long)n, num_classes);
        if (!out || (n > 0 && (!y_true || !y_pred)))
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_confusion_matrix: y_true, y_pred or out is NULL");
        if (nnl::dtype_size(dtype) == 0) nnl::raise(NNL_ERR_ARGUMENT, "nnl_confusion_matrix: unknown dtype code %d", dtype);
        const size_t k = (size_t)num_classes;
        std::vector<int64_t> cm(k * k, 0); /* out is written only on success */
        for (int64_t i = 0; i < n; i++) {
            int64_t t = nnl::label_at(y_true, dtype, i), p = y_pred[i];
            if (t < 0 || t >= num_classes || p < 0 || p >= num_classes)
                nnl::raise(NNL_ERR_ARGUMENT, "nnl_confusion_matrix: sample %lld: true %lld / predicted %lld not in [0, %d)",
                           (long long)i, (long long)t, (long long)p, num_classes);
            cm[(size_t)t * k + (size_t)p]++;
        }
        std::copy(cm.begin(), cm.end(), out);
    });
}

NNL_API int nnl_print_confusion_matrix(FILE *f, const int64_t *cm, int num_classes, const char *const *labels,
                                       int normalize) {
    return nnl::guard(__func__, [&] {
        if (!cm || num_classes < 1)
            nnl::raise(NNL_ERR_ARGUMENT, "nnl_print_confusion_matrix: cm is NULL or num_classes < 1");
        std::string s = nnl::io::confusion_table(cm, num_classes, labels, normalize != 0);
        if (fputs(s.c_str(), f ? f : stdout) < 0) nnl::raise(NNL_ERR_IO, "nnl_print_confusion_matrix: write failed");
    });
}

} // extern "C"

/* ---- Pictures: training curves and confusion matrices as SVG ------------
   SVG needs no library and opens in any browser; the layout follows the
   Keras tutorial's plots ("model accuracy", "model loss", a blue heat map),
   made fit for a paper: points marked (one epoch is a visible point), ticks
   at round values, a legend placed where no curve is, label margins sized to
   the labels. Text widths are estimated (0.6 em per character, about
   DejaVu Sans' widest digits), so the layout needs no font metrics. Every
   element a test must find carries a class (tick-x, tick-y, marker, curve, frame,
   legend-box, ...). */
namespace nnl {

/* Text for XML: markup characters escaped; bytes that are not valid UTF-8,
   and control characters XML 1.0 forbids, become U+FFFD, so any label gives a
   well-formed file. */
static std::string xml_escape(const std::string &s) {
    std::string o;
    const auto *u = (const unsigned char *)s.data();
    size_t n = s.size();
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (u[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) { /* reject overlong forms, surrogates and > U+10FFFF */
            unsigned cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
            for (size_t k = 1; k < len; k++) cp = (cp << 6) | (u[i + k] & 0x3F);
            ok = cp >= (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) && cp <= 0x10FFFF &&
                 !(cp >= 0xD800 && cp <= 0xDFFF);
        }
        if (!ok || (c < 0x20 && c != '\t' && c != '\n' && c != '\r')) {
            o += "\xEF\xBF\xBD";
            i += ok ? len : 1;
            continue;
        }
        if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '&') o += "&amp;";
        else if (c == '"') o += "&quot;";
        else if (c == '\'') o += "&apos;";
        else o.append(s, i, len);
        i += len;
    }
    return o;
}

/* Estimated width in pixels of s at font size fs (characters, not bytes). */
static double text_width(const std::string &s, double fs) {
    size_t chars = 0;
    for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
    return 0.6 * fs * (double)chars;
}

/* Round tick values inside [lo, hi]: steps of 1, 2 or 5 times a power of ten,
   at most about `most` of them (integer steps only when `integer`). *decimals
   receives the digits after the point the step needs. */
static std::vector<double> nice_ticks(double lo, double hi, int most, bool integer, int *decimals) {
    double step = 1, range = hi - lo;
    if (range > 0 && std::isfinite(range)) { /* the smallest step giving at most `most` ticks */
        double p = std::pow(10.0, std::floor(std::log10(range / std::max(1, most))));
        for (double f : {1.0, 2.0, 5.0, 10.0, 20.0, 50.0}) {
            step = f * p;
            if (std::floor(hi / step + 1e-9) - std::ceil(lo / step - 1e-9) + 1 <= most) break;
        }
    }
    if (integer) step = std::max(1.0, std::round(step));
    int d = step >= 1 ? 0 : (int)std::ceil(-std::log10(step) - 1e-9);
    if (decimals) *decimals = d;
    std::vector<double> t;
    for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step && t.size() < 100; k++) {
        double v = k * step, ten = std::pow(10.0, d);
        if (d > 0) v = std::round(v * ten) / ten; /* 0.85, not 17 * 0.05 = 0.8500000000000001 */
        if (std::fabs(v) < 1e-9 * step) v = 0;    /* never "-0.00" */
        t.push_back(v);
    }
    return t;
}

/* Does the segment (ax, ay)-(bx, by) meet the rectangle [x0, x1] x [y0, y1]?
   (Liang-Barsky clipping.) */
static bool segment_meets_box(double ax, double ay, double bx, double by, double x0, double y0, double x1, double y1) {
    double t0 = 0, t1 = 1, dx = bx - ax, dy = by - ay;
    const double p[4] = {-dx, dx, -dy, dy}, q[4] = {ax - x0, x1 - ax, ay - y0, y1 - ay};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
        } else {
            double r = q[i] / p[i];
            if (p[i] < 0) t0 = std::max(t0, r);
            else t1 = std::min(t1, r);
            if (t0 > t1) return false;
        }
    }
    return true;
}

static const char *const kSeriesColour[2] = {"#1f77b4", "#ff7f0e"}; /* matplotlib's first two */

/* The marker of series k centred at (x, y): train circles, validation squares
   (told apart in grey print too). */
static std::string svg_marker(size_t k, double x, double y) {
    if (k == 0)
        return format("<circle class='marker' cx='%.1f' cy='%.1f' r='3.2' fill='%s'/>", x, y, kSeriesColour[0]);
    return format("<rect class='marker' x='%.1f' y='%.1f' width='6' height='6' fill='%s'/>", x - 3, y - 3,
                  kSeriesColour[k % 2]);
}

/* One panel: the series `key` and `val_key` of the history against epochs. */
static std::string svg_panel(const Model &m, const std::string &key, double x0, double y0, double w, double h) {
    std::vector<const std::vector<double> *> series;
    std::vector<std::string> names;
    for (const std::string &k : {key, "val_" + key}) {
        size_t j = std::find(m.hist_keys.begin(), m.hist_keys.end(), k) - m.hist_keys.begin();
        if (j < m.hist_keys.size()) {
            series.push_back(&m.hist[j]);
            names.push_back(k.compare(0, 4, "val_") == 0 ? "validation" : "train");
        }
    }
    const int n = m.hist_epochs;
    /* y range: the data plus 5 % each side (points never sit on the frame) */
    double lo = INFINITY, hi = -INFINITY;
    for (auto *s : series)
        for (int e = 0; e < n && e < (int)s->size(); e++)
            if (std::isfinite((*s)[(size_t)e])) lo = std::min(lo, (*s)[(size_t)e]), hi = std::max(hi, (*s)[(size_t)e]);
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-9 * std::max(1.0, std::fabs(hi))) {
        double d = std::max(0.05 * std::fabs(hi), 0.05);
        lo -= d, hi += d;
    }
    double pad = 0.05 * (hi - lo);
    lo -= pad, hi += pad;
    int ydec = 0;
    std::vector<double> yt = nice_ticks(lo, hi, 7, false, &ydec);
    /* x range: epochs 1..n, padded; one epoch sits in the middle */
    double xlo = n > 1 ? 1 - 0.05 * (n - 1) : 0, xhi = n > 1 ? n + 0.05 * (n - 1) : 2;
    std::vector<double> xt = nice_ticks(1, std::max(n, 1), std::min(n, 8), true, nullptr);

    double tickw = 0;
    for (double v : yt) tickw = std::max(tickw, text_width(format("%.*f", ydec, v), 11));
    double L = x0 + 33 + tickw, R = x0 + w - 15, T = y0 + 40, B = y0 + h - 45;
    auto X = [&](double e) { return L + (R - L) * (e - xlo) / (xhi - xlo); };
    auto Y = [&](double v) { return B - (B - T) * (v - lo) / (hi - lo); };

    /* the curves as runs of finite points (a NaN breaks the line) */
    std::vector<std::vector<std::pair<double, double>>> runs[2];
    auto place = [&]() {
        for (size_t k = 0; k < series.size(); k++) {
            runs[k].assign(1, {});
            for (int e = 0; e < n && e < (int)series[k]->size(); e++) {
                double v = (*series[k])[(size_t)e];
                if (std::isfinite(v)) runs[k].back().push_back({X(e + 1), Y(v)});
                else if (!runs[k].back().empty()) runs[k].push_back({});
            }
        }
    };
    place();

    /* the legend: the first candidate box no point or line meets; else
       below the plot, outside it */
    const double fs = 12, row = 17;
    double lw = 0;
    for (auto &nm : names) lw = std::max(lw, text_width(nm, fs));
    double bw = 8 + 24 + 6 + lw + 8, bh = 6 + row * (double)names.size() + 2, inset = 7;
    auto blocked = [&](double bx, double by) {
        const double m2 = 5; /* marker half-size plus line width */
        for (size_t k = 0; k < series.size(); k++)
            for (auto &r : runs[k])
                for (size_t i = 0; i < r.size(); i++) {
                    const auto &a = r[i], &b = i + 1 < r.size() ? r[i + 1] : r[i];
                    if (segment_meets_box(a.first, a.second, b.first, b.second, bx - m2, by - m2, bx + bw + m2,
                                          by + bh + m2))
                        return true;
                }
        return false;
    };
    double lx = 0, ly = 0;
    bool inside = false;
    if (!series.empty()) {
        const double cx[3] = {L + inset, R - inset - bw, (L + R - bw) / 2};
        const double cy[3] = {T + inset, B - inset - bh, (T + B - bh) / 2};
        /* upper left (Keras' tutorial), upper right, lower right, lower left, then the middles */
        const int order[9][2] = {{0, 0}, {1, 0}, {1, 1}, {0, 1}, {2, 0}, {2, 1}, {0, 2}, {1, 2}, {2, 2}};
        for (auto &o : order)
            if (bw < R - L - 2 * inset && bh < B - T - 2 * inset && !blocked(cx[o[0]], cy[o[1]])) {
                lx = cx[o[0]], ly = cy[o[1]], inside = true;
                break;
            }
        if (!inside) { /* make room under the axis title */
            B -= row + 4;
            place();
            lx = (L + R) / 2 - bw * (double)names.size() / 2, ly = B + 32 + row;
        }
    }

    std::string s = format("<g class='panel'>\n"
                           "<text x='%.1f' y='%.1f' font-size='16' text-anchor='middle'>model %s</text>\n",
                           (L + R) / 2, y0 + 24, xml_escape(key).c_str());
    for (double v : yt)
        s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#e5e5e5'/>"
                    "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                    "<text class='tick-y' x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%.*f</text>\n",
                    L, Y(v), R, Y(v), L - 4, Y(v), L, Y(v), L - 6, Y(v) + 4, ydec, v);
    for (double e : xt)
        s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                    "<text class='tick-x' x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>%.0f</text>\n",
                    X(e), B, X(e), B + 4, X(e), B + 16, e);
    s += format("<rect class='frame' x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#333'/>\n", L, T,
                R - L, B - T);
    s += format("<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>epoch</text>\n", (L + R) / 2, B + 32);
    s += format("<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle' "
                "transform='rotate(-90 %.1f %.1f)'>%s</text>\n",
                x0 + 18, (T + B) / 2, x0 + 18, (T + B) / 2, xml_escape(key).c_str());
    const bool markers = n <= 60; /* beyond that the points would merge into a band */
    for (size_t k = 0; k < series.size(); k++) {
        for (auto &r : runs[k]) {
            if (r.size() > 1) {
                std::string pts;
                for (auto &p : r) pts += format("%.1f,%.1f ", p.first, p.second);
                pts.pop_back();
                s += format("<polyline class='curve' points='%s' fill='none' stroke='%s' stroke-width='1.8'/>\n",
                            pts.c_str(), kSeriesColour[k % 2]);
            }
            if (markers || r.size() == 1)
                for (auto &p : r) s += svg_marker(k, p.first, p.second);
        }
        s += "\n";
    }
    if (!series.empty()) { /* the box is drawn inside the plot; outside it only marks the legend's extent */
        double gw = inside ? bw : bw * (double)names.size(), gh = inside ? bh : row;
        s += format("<g class='legend'>\n<rect class='legend-box' x='%.1f' y='%.1f' width='%.1f' height='%.1f' %s/>\n",
                    lx, inside ? ly : ly - row / 2, gw, gh,
                    inside ? "fill='white' stroke='#ccc' rx='3'" : "fill='none'");
        for (size_t k = 0; k < names.size(); k++) {
            double ex = inside ? lx + 8 : lx + bw * (double)k + 8, ey = inside ? ly + 6 + row * (k + 0.5) : ly;
            s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='1.8'/>%s"
                        "<text x='%.1f' y='%.1f' font-size='%.0f'>%s</text>\n",
                        ex, ey, ex + 24, ey, kSeriesColour[k % 2], svg_marker(k, ex + 12, ey).c_str(), ex + 30,
                        ey + 4, fs, names[k].c_str());
        }
        s += "</g>\n";
    }
    return s + "</g>\n";
}

static std::string svg_history(const Model &m) {
    NNL_REQUIRE(m.hist_epochs > 0, NNL_ERR_STATE, "the history is empty: train with nnl_fit first");
    std::vector<std::string> keys;
    for (auto &k : m.hist_keys)
        if (k.compare(0, 4, "val_") != 0) keys.push_back(k);
    /* Keras' tutorial shows accuracy first, then loss */
    std::stable_partition(keys.begin(), keys.end(), [](const std::string &k) { return k != "loss"; });
    double pw = 420, ph = 300, W = pw * (double)keys.size();
    std::string s = format("<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
                           "font-family='DejaVu Sans, Arial, sans-serif'>\n"
                           "<rect width='100%%' height='100%%' fill='white'/>\n",
                           W, ph, W, ph);
    for (size_t i = 0; i < keys.size(); i++) s += svg_panel(m, keys[i], pw * (double)i, 0, pw, ph);
    return s + "</svg>\n";
}

/* matplotlib's Blues from white (a = 0) to its dark end #08306b (a = 1) */
static std::string blues(double a) {
    return format("rgb(%d,%d,%d)", (int)(255 - a * (255 - 8)), (int)(255 - a * (255 - 48)),
                  (int)(255 - a * (255 - 107)));
}

static std::string svg_confusion(const int64_t *cm, int n, const char *const *labels, bool normalize,
                                 const char *title) {
    const double cell = n <= 3 ? 64 : n <= 10 ? 48 : std::max(14.0, 480.0 / n);
    const double fs = cell >= 28 ? 12 : std::max(7.0, 0.75 * cell); /* label font */
    std::vector<std::string> label((size_t)n);
    double lw = 0;
    for (int i = 0; i < n; i++) {
        label[(size_t)i] = labels && labels[i] ? labels[i] : std::to_string(i);
        lw = std::max(lw, text_width(label[(size_t)i], fs));
    }
    /* column labels upright when every one fits its cell, else turned 45 degrees */
    const bool turned = lw > cell - 4;
    const double c45 = 0.7071;
    const double first_w = text_width(label[0], fs);
    /* left: the axis title (rotated, baseline at x = 22), then the row labels */
    double left = std::max(22.0 + 8 + lw + 6, turned ? first_w * c45 - cell / 2 + 8 : 0.0), top = 46;
    double vmax = 0;
    std::vector<double> row((size_t)n, 0.0);
    for (int t = 0; t < n; t++) {
        for (int p = 0; p < n; p++) row[(size_t)t] += (double)cm[t * n + p];
        for (int p = 0; p < n; p++) {
            double v = normalize ? (row[(size_t)t] > 0 ? cm[t * n + p] / row[(size_t)t] : 0) : (double)cm[t * n + p];
            vmax = std::max(vmax, v);
        }
    }
    /* the colour bar to the right, with round ticks */
    int cdec = 0;
    std::vector<double> ct = nice_ticks(0, vmax > 0 ? vmax : 1, 6, !normalize, &cdec);
    double ctw = 0;
    for (double v : ct) ctw = std::max(ctw, text_width(format("%.*f", cdec, v), 11));
    const double side = cell * n, bar_x = left + side + 14, bar_w = 14;
    const double under = turned ? lw * c45 + fs * 0.5 + 4 : fs + 4; /* column labels' depth */
    const std::string head = title && *title ? title : (normalize ? "Normalized confusion matrix" : "Confusion matrix");
    const double head_w = text_width(head, 16);
    const double W = std::max(bar_x + bar_w + 6 + ctw + 10, head_w + 16), H = top + side + 6 + under + 24;
    /* the title centred over the cells, moved in when it is wider than they are */
    const double head_x = std::min(std::max(left + side / 2, head_w / 2 + 8), W - head_w / 2 - 8);
    std::string s = format("<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
                           "font-family='DejaVu Sans, Arial, sans-serif'>\n"
                           "<rect width='100%%' height='100%%' fill='white'/>\n",
                           W, H, W, H);
    s += format("<defs><linearGradient id='nnl_blues' x1='0' y1='1' x2='0' y2='0'><stop offset='0' stop-color='%s'/>"
                "<stop offset='1' stop-color='%s'/></linearGradient></defs>\n", blues(0).c_str(), blues(1).c_str());
    s += format("<text class='title' x='%.1f' y='28' font-size='16' text-anchor='middle'>%s</text>\n", head_x,
                xml_escape(head).c_str());
    for (int t = 0; t < n; t++)
        for (int p = 0; p < n; p++) {
            double v = normalize ? (row[(size_t)t] > 0 ? cm[t * n + p] / row[(size_t)t] : 0) : (double)cm[t * n + p];
            double a = vmax > 0 ? v / vmax : 0;
            double x = left + p * cell, y = top + t * cell;
            s += format("<rect class='cell' x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s'/>", x, y, cell, cell,
                        blues(a).c_str());
            if (cell >= 28) {
                std::string txt = normalize ? format("%.2f", v) : format("%lld", (long long)cm[t * n + p]);
                double f = std::min(12.0, (cell - 4) / (0.6 * (double)txt.size())); /* 6-digit counts still fit */
                s += format("<text x='%.1f' y='%.1f' font-size='%.1f' text-anchor='middle' fill='%s'>%s</text>",
                            x + cell / 2, y + cell / 2 + f * 0.35, f, a > 0.5 ? "white" : "black", txt.c_str());
            }
            s += "\n";
        }
    s += format("<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#333'/>\n", left, top, side,
                side);
    for (int i = 0; i < n; i++) {
        std::string l = xml_escape(label[(size_t)i]);
        s += format("<text class='label-y' x='%.1f' y='%.1f' font-size='%.1f' text-anchor='end'>%s</text>\n", left - 6,
                    top + i * cell + cell / 2 + fs * 0.35, fs, l.c_str());
        double x = left + i * cell + cell / 2, y = top + side + 6;
        if (turned)
            s += format("<text class='label-x' x='%.1f' y='%.1f' font-size='%.1f' text-anchor='end' "
                        "transform='rotate(-45 %.1f %.1f)'>%s</text>\n", x + fs * 0.25, y + fs * 0.6, fs, x + fs * 0.25,
                        y + fs * 0.6, l.c_str());
        else
            s += format("<text class='label-x' x='%.1f' y='%.1f' font-size='%.1f' text-anchor='middle'>%s</text>\n", x,
                        y + fs, fs, l.c_str());
    }
    s += format("<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle'>Predicted label</text>\n", left + side / 2,
                H - 8);
    s += format("<text x='22' y='%.1f' font-size='13' text-anchor='middle' transform='rotate(-90 22 %.1f)'>"
                "True label</text>\n", top + side / 2, top + side / 2);
    s += format("<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='url(#nnl_blues)' stroke='#333'/>\n", bar_x,
                top, bar_w, side);
    const double top_v = vmax > 0 ? vmax : 1;
    for (double v : ct) {
        double y = top + side - side * v / top_v;
        s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                    "<text class='tick-c' x='%.1f' y='%.1f' font-size='11'>%.*f</text>\n",
                    bar_x + bar_w, y, bar_x + bar_w + 3, y, bar_x + bar_w + 6, y + 4, cdec, v);
    }
    return s + "</svg>\n";
}

/* A grid of greyscale images (rows x cols, each h x w, values in [0, 1]:
   0 black, 1 white, as matplotlib's gray map shows MNIST), with a label
   left of each row: originals above reconstructions, filters, samples.
   Vector pixels, no library: each image is a black square under one path
   per grey level (256 levels) made of horizontal runs "M x y h n v 1 h -n
   z" in pixel units, scaled by the group's transform, so the file stays
   small (a 28 x 28 image: a few hundred runs) and every pixel stays a sharp
   square at any zoom. Values outside [0, 1] are clipped; NaN pixels are
   drawn red (class 'pixels-nan') so a broken model shows. */
static std::string svg_images(const float *img, int rows, int cols, int h, int w, const char *const *row_labels,
                              const char *title) {
    const double px = std::max(1.0, std::floor(84.0 / std::max(h, w))); /* a 28 x 28 image: 84 px */
    const double iw = px * w, ih = px * h, gap = 4, fs = 12;
    double lw = 0;
    std::vector<std::string> label((size_t)rows);
    for (int r = 0; r < rows; r++) {
        label[(size_t)r] = row_labels && row_labels[r] ? row_labels[r] : "";
        lw = std::max(lw, text_width(label[(size_t)r], fs));
    }
    const std::string head = title ? title : "";
    const double left = lw > 0 ? 10 + lw + 8 : 10, top = head.empty() ? 10 : 40;
    const double W = std::max(left + cols * (iw + gap) - gap + 10, text_width(head, 16) + 20),
                 H = top + rows * (ih + gap) - gap + 10;
    std::string s = format("<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
                           "font-family='DejaVu Sans, Arial, sans-serif'>\n"
                           "<rect width='100%%' height='100%%' fill='white'/>\n",
                           W, H, W, H);
    if (!head.empty())
        s += format("<text class='title' x='%.1f' y='26' font-size='16' text-anchor='middle'>%s</text>\n",
                    std::min(std::max(left + (cols * (iw + gap) - gap) / 2, text_width(head, 16) / 2 + 10),
                             W - text_width(head, 16) / 2 - 10), /* over the images, moved in when wider */
                    xml_escape(head).c_str());
    std::vector<std::string> runs(257); /* per grey level 1..255, then NaN at 256 */
    for (int r = 0; r < rows; r++) {
        double y0 = top + r * (ih + gap);
        if (!label[(size_t)r].empty())
            s += format("<text class='label-row' x='%.1f' y='%.1f' font-size='%.0f' text-anchor='end'>%s</text>\n",
                        left - 8, y0 + ih / 2 + fs * 0.35, fs, xml_escape(label[(size_t)r]).c_str());
        for (int c = 0; c < cols; c++) {
            const float *p = img + ((int64_t)r * cols + c) * (int64_t)h * w;
            for (auto &x : runs) x.clear();
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w;) { /* a run of equal levels along the row */
                    auto level = [&](int i) {
                        float v = p[(int64_t)y * w + i];
                        return std::isnan(v) ? 256 : (int)std::lround(255.0 * std::min(1.0f, std::max(0.0f, v)));
                    };
                    int q = level(x), e = x + 1;
                    while (e < w && level(e) == q) e++;
                    if (q > 0) runs[(size_t)q] += format("M%d %dh%dv1h-%dz", x, y, e - x, e - x);
                    x = e;
                }
            s += format("<g class='image' transform='translate(%.1f %.1f) scale(%g)' shape-rendering='crispEdges'>"
                        "<rect class='image-bg' width='%d' height='%d' fill='black'/>",
                        left + c * (iw + gap), y0, px, w, h);
            for (int q = 1; q <= 256; q++)
                if (!runs[(size_t)q].empty())
                    s += q == 256 ? format("<path class='pixels-nan' fill='#d62728' d='%s'/>", runs[256].c_str())
                                  : format("<path class='pixels' fill='rgb(%d,%d,%d)' d='%s'/>", q, q, q,
                                           runs[(size_t)q].c_str());
            s += "</g>\n";
        }
    }
    return s + "</svg>\n";
}

/* The same grid as a PNG (a path ending in .png): the layout of svg_images
   in whole pixels (each image pixel a px x px square, NaN red), white
   background, the labels and title in stb_easy_font's bitmap font at twice
   its size (ASCII; other characters print as '?'; no text when the header
   is absent). Returns the file's bytes. */
static std::string png_images(const float *img, int rows, int cols, int h, int w, const char *const *row_labels,
                              const char *title) {
    const int px = std::max(1, 84 / std::max(h, w)), iw = px * w, ih = px * h, gap = 4;
    [[maybe_unused]] const int fs = 2; /* the font's scale */
    auto ascii = [](const char *t) {
        std::string a = t ? t : "";
        for (char &ch : a)
            if ((unsigned char)ch < 32 || (unsigned char)ch > 126) ch = '?';
        return a;
    };
    auto text_w = [&](const std::string &t) {
#if NNL_HAVE_STB_FONT
        return t.empty() ? 0 : fs * stb_easy_font_width(const_cast<char *>(t.c_str()));
#else
        (void)t;
        return 0;
#endif
    };
    int lw = 0;
    std::vector<std::string> label((size_t)rows);
    for (int r = 0; r < rows; r++) {
        label[(size_t)r] = ascii(row_labels ? row_labels[r] : nullptr);
        lw = std::max(lw, text_w(label[(size_t)r]));
    }
    const std::string head = ascii(title);
    const int left = lw > 0 ? 10 + lw + 8 : 10, top = text_w(head) > 0 ? 40 : 10;
    const int W = std::max(left + cols * (iw + gap) - gap + 10, text_w(head) + 20), H = top + rows * (ih + gap) - gap + 10;
    std::vector<uint8_t> rgb((size_t)W * H * 3, 255);
    auto fill = [&](int x0, int y0, int x1, int y1, uint8_t r, uint8_t g, uint8_t b) {
        x0 = std::max(x0, 0), y0 = std::max(y0, 0), x1 = std::min(x1, W), y1 = std::min(y1, H);
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) {
                uint8_t *q = &rgb[((size_t)y * W + x) * 3];
                q[0] = r, q[1] = g, q[2] = b;
            }
    };
    auto text = [&](const std::string &t, int x, int y) { /* (x, y): the top left corner */
#if NNL_HAVE_STB_FONT
        if (t.empty()) return;
        std::vector<char> buf(t.size() * 300 + 1000); /* ~270 bytes a character, as stb_easy_font says */
        int quads = stb_easy_font_print(0, 0, const_cast<char *>(t.c_str()), nullptr, buf.data(), (int)buf.size());
        for (int k = 0; k < quads; k++) {
            float v[4][4]; /* x, y, z, colour per vertex */
            memcpy(v, buf.data() + (size_t)k * 64, sizeof v);
            float x0 = std::min({v[0][0], v[1][0], v[2][0], v[3][0]}), x1 = std::max({v[0][0], v[1][0], v[2][0], v[3][0]});
            float y0 = std::min({v[0][1], v[1][1], v[2][1], v[3][1]}), y1 = std::max({v[0][1], v[1][1], v[2][1], v[3][1]});
            fill(x + (int)std::lround(fs * x0), y + (int)std::lround(fs * y0), x + (int)std::lround(fs * x1),
                 y + (int)std::lround(fs * y1), 0, 0, 0);
        }
#else
        (void)t, (void)x, (void)y;
#endif
    };
    text(head, std::min(std::max(left + (cols * (iw + gap) - gap) / 2 - text_w(head) / 2, 10), W - text_w(head) - 10), 12);
    for (int r = 0; r < rows; r++) {
        const int y0 = top + r * (ih + gap);
        text(label[(size_t)r], left - 8 - text_w(label[(size_t)r]), y0 + ih / 2 - 7);
        for (int c = 0; c < cols; c++) {
            const float *p = img + ((int64_t)r * cols + c) * (int64_t)h * w;
            const int x0 = left + c * (iw + gap);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    float v = p[(int64_t)y * w + x];
                    if (std::isnan(v)) {
                        fill(x0 + x * px, y0 + y * px, x0 + (x + 1) * px, y0 + (y + 1) * px, 214, 39, 40);
                    } else {
                        uint8_t g = (uint8_t)std::lround(255.0 * std::min(1.0f, std::max(0.0f, v)));
                        fill(x0 + x * px, y0 + y * px, x0 + (x + 1) * px, y0 + (y + 1) * px, g, g, g);
                    }
                }
        }
    }
    return img::encode(rgb.data(), H, W, 3, "png", "nnl_plot_images");
}

/* Line plots sharing one x axis: `panels` panels stacked vertically (a
   forecast's x, y and z against time), each with `series` lines (truth,
   forecast, baseline) in matplotlib's first colours, dashed from the third
   on so they stay apart in grey print. The legend is one row above the
   panels, outside them, so it covers no line; ticks at round values; a NaN
   breaks a line. */
static const char *const kLineColour[6] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};

static std::string svg_lines(const float *xs, const float *y, int panels, int series, int points,
                             const char *const *names, const char *const *ylabels, const char *xlabel,
                             const char *title) {
    auto X = [&](int i) { return xs ? (double)xs[i] : (double)i; };
    double xlo = INFINITY, xhi = -INFINITY;
    for (int i = 0; i < points; i++)
        if (std::isfinite(X(i))) xlo = std::min(xlo, X(i)), xhi = std::max(xhi, X(i));
    if (!(xlo < xhi)) xlo = std::isfinite(xlo) ? xlo - 1 : 0, xhi = std::isfinite(xhi) ? xhi + 1 : 1;
    int xdec = 0;
    std::vector<double> xt = nice_ticks(xlo, xhi, 8, false, &xdec);
    /* per panel: the y range with 5 % each side, its ticks, their widest label */
    std::vector<double> lo((size_t)panels, INFINITY), hi((size_t)panels, -INFINITY);
    std::vector<std::vector<double>> yt((size_t)panels);
    std::vector<int> ydec((size_t)panels, 0);
    double tickw = 0;
    for (int p = 0; p < panels; p++) {
        for (int k = 0; k < series; k++)
            for (int i = 0; i < points; i++) {
                double v = y[((int64_t)p * series + k) * points + i];
                if (std::isfinite(v)) lo[(size_t)p] = std::min(lo[(size_t)p], v), hi[(size_t)p] = std::max(hi[(size_t)p], v);
            }
        double &a = lo[(size_t)p], &b = hi[(size_t)p];
        if (!(a <= b)) a = 0, b = 1;
        if (b - a < 1e-9 * std::max(1.0, std::fabs(b))) {
            double d = std::max(0.05 * std::fabs(b), 0.05);
            a -= d, b += d;
        }
        double pad = 0.05 * (b - a);
        a -= pad, b += pad;
        yt[(size_t)p] = nice_ticks(a, b, 6, false, &ydec[(size_t)p]);
        for (double v : yt[(size_t)p]) tickw = std::max(tickw, text_width(format("%.*f", ydec[(size_t)p], v), 11));
    }
    const bool have_ylabels = ylabels != nullptr;
    const double W = 760, ph = 170, pgap = 22, fs = 12;
    const std::string head = title ? title : "";
    double legend_w = 0;
    for (int k = 0; k < series && names; k++) legend_w += 30 + text_width(names[k] ? names[k] : "", fs) + 18;
    const double top = (head.empty() ? 12 : 38) + (names ? 24 : 0);
    const double L = 12 + (have_ylabels ? 22 : 0) + tickw + 8, R = W - 18;
    const double H = top + panels * ph + (panels - 1) * pgap + 50;
    auto PX = [&](double v) { return L + (R - L) * (v - xlo) / (xhi - xlo); };
    std::string s = format("<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
                           "font-family='DejaVu Sans, Arial, sans-serif'>\n"
                           "<rect width='100%%' height='100%%' fill='white'/>\n",
                           W, H, W, H);
    if (!head.empty())
        s += format("<text class='title' x='%.1f' y='26' font-size='16' text-anchor='middle'>%s</text>\n", (L + R) / 2,
                    xml_escape(head).c_str());
    if (names) { /* one row, centred over the panels */
        double lx = (L + R) / 2 - legend_w / 2, ly = top - 14;
        s += format("<g class='legend'><rect class='legend-box' x='%.1f' y='%.1f' width='%.1f' height='18' "
                    "fill='none'/>\n", lx, ly - 9, legend_w);
        for (int k = 0; k < series; k++) {
            std::string nm = names[k] ? names[k] : "";
            s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2'%s/>"
                        "<text x='%.1f' y='%.1f' font-size='%.0f'>%s</text>\n",
                        lx, ly, lx + 24, ly, kLineColour[k % 6], k >= 2 ? " stroke-dasharray='5 3'" : "", lx + 30,
                        ly + 4, fs, xml_escape(nm).c_str());
            lx += 30 + text_width(nm, fs) + 18;
        }
        s += "</g>\n";
    }
    for (int p = 0; p < panels; p++) {
        const double T = top + p * (ph + pgap), B = T + ph, a = lo[(size_t)p], b = hi[(size_t)p];
        auto PY = [&](double v) { return B - (B - T) * (v - a) / (b - a); };
        s += "<g class='panel'>\n";
        for (double v : yt[(size_t)p])
            s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#e5e5e5'/>"
                        "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                        "<text class='tick-y' x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%.*f</text>\n",
                        L, PY(v), R, PY(v), L - 4, PY(v), L, PY(v), L - 6, PY(v) + 4, ydec[(size_t)p], v);
        for (double v : xt)
            s += format("<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>%s\n", PX(v), B, PX(v), B + 4,
                        p == panels - 1 ? format("<text class='tick-x' x='%.1f' y='%.1f' font-size='11' "
                                                 "text-anchor='middle'>%.*f</text>", PX(v), B + 16, xdec, v).c_str()
                                        : "");
        s += format("<rect class='frame' x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#333'/>\n", L,
                    T, R - L, B - T);
        if (have_ylabels && ylabels[p])
            s += format("<text class='label-y' x='18' y='%.1f' font-size='12' text-anchor='middle' "
                        "transform='rotate(-90 18 %.1f)'>%s</text>\n",
                        (T + B) / 2, (T + B) / 2, xml_escape(ylabels[p]).c_str());
        for (int k = 0; k < series; k++) {
            std::string pts;
            auto flush = [&]() {
                if (pts.empty()) return;
                pts.pop_back();
                s += format("<polyline class='curve' points='%s' fill='none' stroke='%s' stroke-width='1.6'%s/>\n",
                            pts.c_str(), kLineColour[k % 6], k >= 2 ? " stroke-dasharray='5 3'" : "");
                pts.clear();
            };
            for (int i = 0; i < points; i++) {
                double v = y[((int64_t)p * series + k) * points + i];
                if (std::isfinite(v) && std::isfinite(X(i))) pts += format("%.1f,%.1f ", PX(X(i)), PY(v));
                else flush();
            }
            flush();
        }
        s += "</g>\n";
    }
    if (xlabel && *xlabel)
        s += format("<text class='label-x' x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>%s</text>\n",
                    (L + R) / 2, H - 12, xml_escape(xlabel).c_str());
    return s + "</svg>\n";
}

/* ---- The curves and heat maps as PNG ----
   nnl_plot_history, nnl_plot_confusion_matrix and nnl_plot_lines write a PNG
   when the path ends in .png (since 0.7): the SVG above is drawn into pixels
   by a rasteriser for exactly the subset those three emit, so the layout is
   written once. The subset: <svg width height>, <rect> (x, y, width,
   height, '100%', rx), <line>, <polyline points>, <circle>, <text> with
   text-anchor and transform='rotate(a cx cy)', fill and stroke as #rgb,
   #rrggbb, rgb(r,g,b), white, black, none or url(#id) of a <linearGradient>
   (bounding-box units, its <stop>s), stroke-width, stroke-dasharray; <g>
   and <defs> only group. Anything else is skipped. Twice the SVG's size
   (fewer pixels when that would pass kPngPixels), so that the text stays
   legible; rectangles and axis-parallel lines sit on whole pixels (crisp
   frames, cells without seams), other edges are anti-aliased by their
   distance to the pixel's centre. Text is stb_easy_font's bitmap font,
   scaled so that its capitals are as tall as DejaVu Sans' at the font-size
   (ASCII; other characters print as '?'). */
#if NNL_HAVE_STB_WRITE
namespace raster {

static const double kPngScale = 2;                 /* screen pixels per SVG pixel */
static const int64_t kPngPixels = (int64_t)1 << 24; /* at most, width times height */

struct Colour {
    float r = 0, g = 0, b = 0;
};

struct Gradient { /* a linearGradient in bounding-box units */
    double x1 = 0, y1 = 0, x2 = 1, y2 = 0;
    std::vector<std::pair<double, Colour>> stops;
};

/* One parsed element: its name, attributes and (for <text>) its text. */
struct Tag {
    std::string name, text;
    std::vector<std::pair<std::string, std::string>> attr;
    const std::string *get(const char *k) const {
        for (auto &a : attr)
            if (a.first == k) return &a.second;
        return nullptr;
    }
    /* a length; '100%' is that share of `whole` */
    double num(const char *k, double def, double whole = 0) const {
        const std::string *v = get(k);
        if (!v || v->empty()) return def;
        char *end = nullptr;
        double d = std::strtod(v->c_str(), &end);
        if (end == v->c_str()) return def;
        return *end == '%' ? d / 100 * whole : d;
    }
};

/* #rgb, #rrggbb, rgb(r,g,b), white, black; false for none and the rest. */
static bool parse_colour(const std::string &s, Colour *c) {
    unsigned r = 0, g = 0, b = 0;
    auto hex = [&](size_t i) { return (unsigned)std::strtoul(s.substr(i, 1).c_str(), nullptr, 16); };
    if (s.size() == 4 && s[0] == '#') r = hex(1) * 17, g = hex(2) * 17, b = hex(3) * 17;
    else if (s.size() == 7 && s[0] == '#') r = hex(1) * 16 + hex(2), g = hex(3) * 16 + hex(4), b = hex(5) * 16 + hex(6);
    else if (sscanf(s.c_str(), "rgb(%u,%u,%u)", &r, &g, &b) == 3)
        r = std::min(r, 255u), g = std::min(g, 255u), b = std::min(b, 255u);
    else if (s == "white") r = g = b = 255;
    else if (s != "black") return false;
    c->r = (float)r / 255, c->g = (float)g / 255, c->b = (float)b / 255;
    return true;
}

/* Numbers in a list ("5 3", "1.0,2.0 3.0,4.0"), commas as spaces. */
static std::vector<double> numbers(const std::string *s) {
    std::vector<double> v;
    if (!s) return v;
    const char *p = s->c_str();
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        char *end = nullptr;
        double d = std::strtod(p, &end);
        if (end == p) return v;
        v.push_back(d);
        p = end;
    }
}

/* The text between tags with the five entities xml_escape writes undone. */
static std::string unescape(const std::string &s) {
    if (s.find('&') == std::string::npos) return s;
    static const char *const ent[5][2] = {
        {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}, {"&quot;", "\""}, {"&apos;", "'"}};
    std::string o;
    for (size_t i = 0; i < s.size();) {
        bool done = false;
        for (auto &e : ent)
            if (s.compare(i, strlen(e[0]), e[0]) == 0) {
                o += e[1], i += strlen(e[0]), done = true;
                break;
            }
        if (!done) o += s[i++];
    }
    return o;
}

struct Canvas {
    int w = 0, h = 0;
    double S = kPngScale;      /* screen pixels per SVG pixel */
    std::vector<uint8_t> rgb;  /* the picture, white to start */
    std::vector<float> cover;  /* one element's coverage (0..1), blended by paint() */
    int bx0 = 0, by0 = 0, bx1 = 0, by1 = 0; /* the box cover holds something in */
    std::map<std::string, Gradient> gradients;

    Canvas(double width, double height) {
        if (!(width > 0 && height > 0 && width < 1e7 && height < 1e7)) width = height = 1;
        if (width * height * S * S > (double)kPngPixels) S = std::sqrt((double)kPngPixels / (width * height));
        w = std::max(1, (int)std::ceil(width * S - 1e-6)), h = std::max(1, (int)std::ceil(height * S - 1e-6));
        while ((int64_t)w * h > kPngPixels) w = std::max(1, w - 1), h = std::max(1, h - 1); /* rounding up crossed it */
        rgb.assign((size_t)w * h * 3, 255);
        cover.assign((size_t)w * h, 0.0f);
        bx0 = w, by0 = h;
    }

    /* coverage f(x, y) at pixel centres over the screen box [x0, x1] x
       [y0, y1], added (clipped at 1: the abutting quads of a letter) or
       the larger one kept (the overlapping pieces of a line) */
    template <class F> void cover_box(double x0, double y0, double x1, double y1, bool add, F f) {
        if (!(x0 <= x1 && y0 <= y1)) return; /* NaN too */
        auto clip = [](double v, int most) { return (int)std::min((double)most, std::max(0.0, v)); };
        const int ix0 = clip(std::floor(x0), w), iy0 = clip(std::floor(y0), h);
        const int ix1 = clip(std::ceil(x1), w), iy1 = clip(std::ceil(y1), h);
        for (int y = iy0; y < iy1; y++)
            for (int x = ix0; x < ix1; x++) {
                float c = (float)f(x + 0.5, y + 0.5);
                if (!(c > 0)) continue;
                float &m = cover[(size_t)y * w + x];
                m = add ? std::min(1.0f, m + c) : std::max(m, std::min(1.0f, c));
                bx0 = std::min(bx0, x), by0 = std::min(by0, y), bx1 = std::max(bx1, x + 1), by1 = std::max(by1, y + 1);
            }
    }
    /* blends colour c over the picture by the coverage, and clears it */
    void paint(const Colour &c) {
        for (int y = by0; y < by1; y++)
            for (int x = bx0; x < bx1; x++) {
                float &a = cover[(size_t)y * w + x];
                if (a > 0) {
                    uint8_t *q = &rgb[((size_t)y * w + x) * 3];
                    const float v[3] = {c.r, c.g, c.b};
                    for (int k = 0; k < 3; k++) q[k] = (uint8_t)(q[k] + (255.0f * v[k] - q[k]) * a + 0.5f);
                    a = 0;
                }
            }
        bx0 = w, by0 = h, bx1 = by1 = 0;
    }
    /* the whole pixels [x0, x1) x [y0, y1) in colour(x, y) */
    template <class F> void fill_pixels(int x0, int y0, int x1, int y1, F colour) {
        x0 = std::max(x0, 0), y0 = std::max(y0, 0), x1 = std::min(x1, w), y1 = std::min(y1, h);
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) {
                Colour c = colour(x + 0.5, y + 0.5);
                uint8_t *q = &rgb[((size_t)y * w + x) * 3];
                q[0] = (uint8_t)(255 * c.r + 0.5f), q[1] = (uint8_t)(255 * c.g + 0.5f),
                q[2] = (uint8_t)(255 * c.b + 0.5f);
            }
    }

    /* A convex polygon's coverage: its signed distance at the pixel's
       centre (the largest over the edges' lines, exact near an edge) plus
       half a pixel. */
    void cover_convex(const double (*p)[2], int n, bool add) {
        double nx[4], ny[4], off[4], cx = 0, cy = 0, x0 = INFINITY, y0 = INFINITY, x1 = -INFINITY, y1 = -INFINITY;
        int m = 0;
        n = std::min(n, 4);
        for (int i = 0; i < n; i++) {
            cx += p[i][0] / n, cy += p[i][1] / n;
            x0 = std::min(x0, p[i][0]), x1 = std::max(x1, p[i][0]);
            y0 = std::min(y0, p[i][1]), y1 = std::max(y1, p[i][1]);
        }
        for (int i = 0; i < n; i++) { /* outward unit normals: distance = nx x + ny y - off */
            const double *a = p[i], *b = p[(i + 1) % n];
            double ex = b[1] - a[1], ey = a[0] - b[0], len = std::sqrt(ex * ex + ey * ey);
            if (!(len > 1e-12)) continue;
            ex /= len, ey /= len;
            if (ex * (cx - a[0]) + ey * (cy - a[1]) > 0) ex = -ex, ey = -ey;
            nx[m] = ex, ny[m] = ey, off[m++] = ex * a[0] + ey * a[1];
        }
        if (m < 2) return;
        cover_box(x0 - 1, y0 - 1, x1 + 1, y1 + 1, add, [&](double x, double y) {
            double d = -INFINITY;
            for (int i = 0; i < m; i++) d = std::max(d, nx[i] * x + ny[i] * y - off[i]);
            return std::min(1.0, 0.5 - d);
        });
    }
    /* a butt-ended band of half-width hw from a to b (screen pixels) */
    void cover_segment(double ax, double ay, double bx, double by, double hw) {
        double dx = bx - ax, dy = by - ay, len = std::sqrt(dx * dx + dy * dy);
        if (!(len > 1e-9)) return;
        double nx = -dy / len * hw, ny = dx / len * hw;
        const double q[4][2] = {{ax + nx, ay + ny}, {bx + nx, by + ny}, {bx - nx, by - ny}, {ax - nx, ay - ny}};
        cover_convex(q, 4, false);
    }
    void cover_disc(double cx, double cy, double r) {
        cover_box(cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1, false, [&](double x, double y) {
            return std::min(1.0, std::max(0.0, r + 0.5 - std::sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy))));
        });
    }

    /* A line through SVG points: butt ends, round joins, dashes (on, off,
       ... in SVG pixels) along its length. A single axis-parallel segment
       sits on whole pixels. */
    void stroke(std::vector<double> pts, double width, std::vector<double> dash, const Colour &c) {
        if (pts.size() < 4 || !(width > 0)) return;
        for (double &v : pts) {
            if (!std::isfinite(v)) return;
            v *= S;
        }
        double hw = width * S / 2;
        if (pts.size() > 16 * (size_t)w) { /* a long series, many points to a screen column */
            std::vector<double> keep;
            for (size_t i = 0; i < pts.size();) { /* per run in one column: first, lowest, highest, last (M4) */
                size_t e = i + 2, lo = i, hi = i;
                while (e < pts.size() && std::floor(pts[e]) == std::floor(pts[i])) {
                    if (pts[e + 1] < pts[lo + 1]) lo = e;
                    if (pts[e + 1] > pts[hi + 1]) hi = e;
                    e += 2;
                }
                size_t pick[4] = {i, std::min(lo, hi), std::max(lo, hi), e - 2};
                for (int k = 0; k < 4; k++)
                    if (k == 0 || pick[k] != pick[k - 1]) keep.insert(keep.end(), {pts[pick[k]], pts[pick[k] + 1]});
                i = e;
            }
            pts.swap(keep);
        }
        if (pts.size() == 4 && dash.empty() && (pts[0] == pts[2] || pts[1] == pts[3])) {
            const int k = pts[0] == pts[2] ? 0 : 1; /* the coordinate both ends share */
            const double dw = std::max(1.0, std::round(2 * hw));
            pts[k] = pts[k + 2] = std::floor(pts[k] - dw / 2 + 0.5) + dw / 2; /* the band covers whole pixels */
            hw = dw / 2;
        }
        double total = 0;
        for (double v : dash) total += v >= 0 ? v : NAN;
        if (!(total * S >= 1) || dash.size() > 64) dash.clear(); /* dashes under a pixel: a solid line */
        if (dash.size() % 2) dash.insert(dash.end(), dash.begin(), dash.end()); /* as SVG repeats an odd list */
        for (double &v : dash) v *= S;
        size_t di = 0;
        double left = dash.empty() ? INFINITY : dash[0]; /* of the current dash or gap */
        for (size_t i = 0; i + 3 < pts.size(); i += 2) {
            const double ax = pts[i], ay = pts[i + 1], bx = pts[i + 2], by = pts[i + 3];
            const double len = std::sqrt((bx - ax) * (bx - ax) + (by - ay) * (by - ay));
            if (dash.empty() || len > 4.0 * (w + h)) { /* (no line of ours is that long) */
                cover_segment(ax, ay, bx, by, hw);
                if (i > 0) cover_disc(ax, ay, hw);
                continue;
            }
            for (double t = 0; t < len;) {
                double step = std::min(left, len - t);
                if (di % 2 == 0) {
                    double u0 = t / len, u1 = (t + step) / len;
                    cover_segment(ax + (bx - ax) * u0, ay + (by - ay) * u0, ax + (bx - ax) * u1, ay + (by - ay) * u1,
                                  hw);
                }
                t += step, left -= step;
                if (left <= 1e-9) di = (di + 1) % dash.size(), left = dash[di];
            }
        }
        paint(c);
    }

    /* A rectangle in SVG pixels: fill (a colour or a gradient) on whole
       pixels, then its stroke centred on the edges; rounded corners (rx)
       drawn from the distance to the rounded outline. */
    void rect(double x, double y, double rw, double rh, double rx, const Colour *fill,
              const Gradient *grad, const Colour *stroke, double sw) {
        if (!(rw > 0 && rh > 0) || !std::isfinite(x + y + rw + rh)) return;
        x *= S, y *= S, rw *= S, rh *= S, rx = std::max(0.0, std::min(rx * S, std::min(rw, rh) / 2));
        if (rx > 0) { /* distance to the rounded outline: <0 inside */
            double cx = x + rw / 2, cy = y + rh / 2;
            auto d = [&](double px, double py) {
                double qx = std::fabs(px - cx) - (rw / 2 - rx), qy = std::fabs(py - cy) - (rh / 2 - rx);
                const double ox = std::max(qx, 0.0), oy = std::max(qy, 0.0);
                return std::sqrt(ox * ox + oy * oy) + std::min(std::max(qx, qy), 0.0) - rx;
            };
            double hw = stroke ? std::max(0.5, sw * S / 2) : 0;
            if (fill) {
                cover_box(x - 1, y - 1, x + rw + 1, y + rh + 1, false,
                          [&](double px, double py) { return std::min(1.0, std::max(0.0, 0.5 - d(px, py))); });
                paint(*fill);
            }
            if (stroke) {
                cover_box(x - hw - 1, y - hw - 1, x + rw + hw + 1, y + rh + hw + 1, false, [&](double px, double py) {
                    return std::min(1.0, std::max(0.0, hw + 0.5 - std::fabs(d(px, py))));
                });
                paint(*stroke);
            }
            return;
        }
        auto px = [](double v) { return (int)std::max(-1.0, std::min(1e8, std::floor(v + 0.5))); };
        int x0 = px(x), y0 = px(y), x1 = px(x + rw), y1 = px(y + rh);
        if (fill) fill_pixels(x0, y0, x1, y1, [&](double, double) { return *fill; });
        if (grad && !grad->stops.empty()) {
            double gx = grad->x2 - grad->x1, gy = grad->y2 - grad->y1, g2 = gx * gx + gy * gy;
            fill_pixels(x0, y0, x1, y1, [&](double qx, double qy) {
                double u = (qx - x) / rw - grad->x1, v = (qy - y) / rh - grad->y1;
                double f = g2 > 0 ? (u * gx + v * gy) / g2 : 0;
                const auto &s = grad->stops;
                if (f <= s.front().first) return s.front().second;
                for (size_t i = 1; i < s.size(); i++)
                    if (f <= s[i].first) {
                        const double span = s[i].first - s[i - 1].first, a = span > 0 ? (f - s[i - 1].first) / span : 1;
                        const Colour &p = s[i - 1].second, &q = s[i].second;
                        return Colour{(float)(p.r + (q.r - p.r) * a), (float)(p.g + (q.g - p.g) * a),
                                      (float)(p.b + (q.b - p.b) * a)};
                    }
                return s.back().second;
            });
        }
        if (stroke) { /* four bands of whole pixels around the edges */
            int dw = std::max(1, (int)std::lround(sw * S)), a = dw / 2, b = dw - a;
            auto band = [&](int ax0, int ay0, int ax1, int ay1) {
                fill_pixels(ax0, ay0, ax1, ay1, [&](double, double) { return *stroke; });
            };
            band(x0 - a, y0 - a, x1 + b, y0 + b), band(x0 - a, y1 - a, x1 + b, y1 + b);
            band(x0 - a, y0 - a, x0 + b, y1 + b), band(x1 - a, y0 - a, x1 + b, y1 + b);
        }
    }

    /* Text with its baseline at (x, y) in SVG pixels, anchored at its start,
       middle or end, turned by `angle` degrees about (cx, cy). */
    void text(const std::string &utf8, double x, double y, double fs, const std::string &anchor, double angle,
              double cx, double cy, const Colour &c) {
#if NNL_HAVE_STB_FONT
        std::string t; /* ASCII: one '?' per other character */
        for (size_t i = 0; i < utf8.size(); i++) {
            unsigned char ch = (unsigned char)utf8[i];
            if ((ch & 0xC0) == 0x80) continue;
            t += ch >= 32 && ch < 127 ? (char)ch : '?';
        }
        if (t.empty() || !(fs > 0) || !std::isfinite(x + y + fs + angle + cx + cy) || t.size() > 4096) return;
        std::vector<char> buf(t.size() * 300 + 1000); /* ~270 bytes a character, as stb_easy_font says */
        int quads = stb_easy_font_print(0, 0, const_cast<char *>(t.c_str()), nullptr, buf.data(), (int)buf.size());
        struct Quad {
            float x0, y0, x1, y1; /* in font units */
        };
        std::vector<Quad> q((size_t)quads);
        float ink = 0;
        for (int k = 0; k < quads; k++) {
            float v[4][4]; /* x, y, z, colour per vertex */
            memcpy(v, buf.data() + (size_t)k * 64, sizeof v);
            q[(size_t)k] = {std::min(v[0][0], v[2][0]), std::min(v[0][1], v[2][1]), std::max(v[0][0], v[2][0]),
                            std::max(v[0][1], v[2][1])};
            ink = std::max(ink, q[(size_t)k].x1);
        }
        /* capitals are 7 units tall, DejaVu Sans' 0.73 of the font size */
        const double u = 0.73 * fs * S / 7;
        double ox = x * S - (anchor == "middle" ? ink * u / 2 : anchor == "end" ? ink * u : 0), oy = y * S - 7 * u;
        const double a = angle * 3.14159265358979323846 / 180, ca = std::cos(a), sa = std::sin(a);
        const double rx = cx * S, ry = cy * S;
        if (std::fabs(sa) < 1e-9 || std::fabs(ca) < 1e-9) ox = std::round(ox), oy = std::round(oy); /* crisper */
        for (auto &r : q) {
            double p[4][2] = {{ox + r.x0 * u, oy + r.y0 * u}, {ox + r.x1 * u, oy + r.y0 * u},
                              {ox + r.x1 * u, oy + r.y1 * u}, {ox + r.x0 * u, oy + r.y1 * u}};
            for (auto &v : p) {
                double dx = v[0] - rx, dy = v[1] - ry;
                v[0] = rx + dx * ca - dy * sa, v[1] = ry + dx * sa + dy * ca;
            }
            cover_convex(p, 4, true);
        }
        paint(c);
#else
        (void)utf8, (void)x, (void)y, (void)fs, (void)anchor, (void)angle, (void)cx, (void)cy, (void)c;
#endif
    }
};

/* The SVG `svg` (one of ours) as RGB pixels; *w, *h receive the size. */
static std::vector<uint8_t> draw(const std::string &svg, int *w, int *h) {
    std::unique_ptr<Canvas> cv;
    Gradient *grad = nullptr; /* inside a <linearGradient> */
    const size_t n = svg.size();
    for (size_t i = svg.find('<'); i < n; i = svg.find('<', i)) {
        Tag t;
        size_t j = i + 1;
        const bool closing = j < n && svg[j] == '/';
        if (closing) j++;
        while (j < n && (std::isalnum((unsigned char)svg[j]) || svg[j] == '-' || svg[j] == ':')) t.name += svg[j++];
        bool empty = false;
        for (;;) { /* attributes: name='value' or name="value" */
            while (j < n && std::isspace((unsigned char)svg[j])) j++;
            if (j >= n || svg[j] == '>') break;
            if (svg[j] == '/') {
                empty = true, j++;
                continue;
            }
            size_t eq = svg.find('=', j);
            if (eq == std::string::npos || eq + 1 >= n || (svg[eq + 1] != '\'' && svg[eq + 1] != '"')) {
                j = svg.find('>', j);
                break;
            }
            size_t close = svg.find(svg[eq + 1], eq + 2);
            if (close == std::string::npos) {
                j = n;
                break;
            }
            t.attr.push_back({svg.substr(j, eq - j), unescape(svg.substr(eq + 2, close - eq - 2))});
            j = close + 1;
        }
        if (j >= n) break;
        i = j + 1;
        if (t.name == "text" && !closing && !empty) {
            size_t end = svg.find("</text>", i);
            if (end == std::string::npos) break;
            t.text = unescape(svg.substr(i, end - i));
            i = end + 7;
        }
        if (closing) {
            if (t.name == "linearGradient") grad = nullptr;
            continue;
        }
        if (t.name == "svg") {
            if (!cv) cv.reset(new Canvas(t.num("width", 1), t.num("height", 1)));
            continue;
        }
        if (!cv) continue;
        Canvas &c = *cv;
        const double W = c.w / c.S, H = c.h / c.S;
        if (t.name == "linearGradient") {
            const std::string *id = t.get("id");
            grad = &c.gradients[id ? *id : ""];
            grad->x1 = t.num("x1", 0), grad->y1 = t.num("y1", 0), grad->x2 = t.num("x2", 1), grad->y2 = t.num("y2", 0);
            if (empty) grad = nullptr;
            continue;
        }
        if (t.name == "stop") {
            Colour k;
            const std::string *sc = t.get("stop-color");
            if (grad && sc && parse_colour(*sc, &k) && grad->stops.size() < 256)
                grad->stops.push_back({t.num("offset", 0), k});
            continue;
        }
        /* paint: fill (black unless said) and stroke (none unless said) */
        Colour fill, stroke;
        const std::string *fs = t.get("fill"), *ss = t.get("stroke");
        const bool has_fill = fs ? parse_colour(*fs, &fill) : true, has_stroke = ss && parse_colour(*ss, &stroke);
        const Gradient *g = nullptr;
        if (fs && fs->compare(0, 5, "url(#") == 0 && fs->back() == ')') {
            auto it = c.gradients.find(fs->substr(5, fs->size() - 6));
            if (it != c.gradients.end()) g = &it->second;
        }
        const double sw = t.num("stroke-width", 1);
        if (t.name == "rect") {
            c.rect(t.num("x", 0, W), t.num("y", 0, H), t.num("width", 0, W), t.num("height", 0, H), t.num("rx", 0),
                   has_fill ? &fill : nullptr, g, has_stroke ? &stroke : nullptr, sw);
        } else if (t.name == "line" || t.name == "polyline") {
            if (!has_stroke) continue;
            std::vector<double> pts = t.name == "line" ? std::vector<double>{t.num("x1", 0), t.num("y1", 0),
                                                                              t.num("x2", 0), t.num("y2", 0)}
                                                       : numbers(t.get("points"));
            if (pts.size() % 2) pts.pop_back();
            c.stroke(pts, sw, numbers(t.get("stroke-dasharray")), stroke);
        } else if (t.name == "circle") {
            double x = t.num("cx", 0) * c.S, y = t.num("cy", 0) * c.S, r = t.num("r", 0) * c.S;
            if (has_fill && std::isfinite(x + y + r) && r > 0 && r < 1e6) {
                c.cover_disc(x, y, r);
                c.paint(fill);
            }
        } else if (t.name == "text" && has_fill) {
            const std::string *anchor = t.get("text-anchor"), *tf = t.get("transform");
            double angle = 0, rx = 0, ry = 0;
            if (tf) {
                std::string s = *tf;
                std::replace(s.begin(), s.end(), ',', ' ');
                if (sscanf(s.c_str(), "rotate(%lf %lf %lf)", &angle, &rx, &ry) < 1) angle = 0;
            }
            c.text(t.text, t.num("x", 0), t.num("y", 0), t.num("font-size", 16), anchor ? *anchor : "start", angle,
                   rx, ry, fill);
        }
    }
    if (!cv) cv.reset(new Canvas(1, 1));
    *w = cv->w, *h = cv->h;
    return std::move(cv->rgb);
}

} // namespace raster
#endif

/* The picture for `path`: the SVG, or the SVG drawn as PNG when path ends in
   .png (any case). */
static void write_picture(const char *path, const std::string &svg, const char *api) {
    if (path && img::lower_ext(path) == "png") {
#if NNL_HAVE_STB_WRITE
        int w = 0, h = 0;
        std::vector<uint8_t> rgb = raster::draw(svg, &w, &h);
        write_file_atomic(path, img::encode(rgb.data(), h, w, 3, "png", format("%s: '%s'", api, path)));
#else
        img::encode(nullptr, 0, 0, 3, "png", format("%s: '%s'", api, path)); /* says which package */
#endif
    } else {
        write_file_atomic(path, svg);
    }
}

} // namespace nnl

extern "C" {

NNL_API int nnl_plot_history(const nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m, NNL_ERR_ARGUMENT, "nnl_plot_history: model handle is NULL");
        if (!m->writer()) return; /* a distributed model: rank 0 draws */
        nnl::write_picture(path, nnl::svg_history(*m), "nnl_plot_history");
    });
}

NNL_API int nnl_plot_confusion_matrix(const char *path, const int64_t *cm, int num_classes,
                                      const char *const *labels, int normalize, const char *title) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(cm, NNL_ERR_ARGUMENT, "nnl_plot_confusion_matrix: cm is NULL");
        NNL_REQUIRE(num_classes >= 1 && num_classes <= 1000, NNL_ERR_ARGUMENT,
                    "nnl_plot_confusion_matrix: num_classes must be in 1..1000");
        for (int i = 0; i < num_classes * num_classes; i++)
            NNL_REQUIRE(cm[i] >= 0, NNL_ERR_ARGUMENT, "nnl_plot_confusion_matrix: negative count");
        nnl::write_picture(path, nnl::svg_confusion(cm, num_classes, labels, normalize != 0, title),
                           "nnl_plot_confusion_matrix");
    });
}

NNL_API int nnl_plot_lines(const char *path, const float *x, const float *y, int panels, int series, int points,
                           const char *const *series_names, const char *const *panel_labels, const char *x_label,
                           const char *title) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(y, NNL_ERR_ARGUMENT, "nnl_plot_lines: y is NULL");
        NNL_REQUIRE(panels >= 1 && panels <= 16 && series >= 1 && series <= 16, NNL_ERR_ARGUMENT,
                    "nnl_plot_lines: panels and series must be in 1..16 (got %d, %d)", panels, series);
        NNL_REQUIRE(points >= 1 && points <= 100000, NNL_ERR_ARGUMENT,
                    "nnl_plot_lines: points must be in 1..100000 (got %d)", points);
        nnl::write_picture(path, nnl::svg_lines(x, y, panels, series, points, series_names, panel_labels, x_label,
                                                title),
                           "nnl_plot_lines");
    });
}

NNL_API int nnl_plot_images(const char *path, const float *images, int rows, int cols, int height, int width,
                            const char *const *row_labels, const char *title) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(images, NNL_ERR_ARGUMENT, "nnl_plot_images: images is NULL");
        NNL_REQUIRE(rows >= 1 && cols >= 1 && (int64_t)rows * cols <= 10000, NNL_ERR_ARGUMENT,
                    "nnl_plot_images: rows and cols must be positive, rows * cols at most 10000 (got %d x %d)", rows,
                    cols);
        NNL_REQUIRE(height >= 1 && width >= 1 && height <= 4096 && width <= 4096, NNL_ERR_ARGUMENT,
                    "nnl_plot_images: height and width must be in 1..4096 (got %d x %d)", height, width);
        NNL_REQUIRE((int64_t)rows * cols * height * width <= ((int64_t)1 << 24), NNL_ERR_ARGUMENT,
                    "nnl_plot_images: at most 2^24 pixels in all (got %lld)",
                    (long long)((int64_t)rows * cols * height * width));
        if (path && nnl::img::lower_ext(path) == "png")
            nnl::write_file_atomic(path, nnl::png_images(images, rows, cols, height, width, row_labels, title));
        else
            nnl::write_file_atomic(path, nnl::svg_images(images, rows, cols, height, width, row_labels, title));
    });
}

} /* extern "C" */


/* ========================================================================
   8  Model files
   Keras-compatible JSON architectures (model.to_json / model_from_json),
   nnlite's binary format (docs/FORMAT.md): weights alone, or whole models
   with their compile configuration, optimizer state, history and RNG, so a
   run resumes exactly; Keras get_weights() order as .npz; atomic saves.
   Every reader bounds sizes against the input and sane limits before
   allocating and fails with NNL_ERR_FORMAT on anything malformed.
   ======================================================================== */
#include <fcntl.h>

namespace nnl {
namespace files {

/* ---- JSON: a bounded parser and a writer (the value type Json: section 3) --- */

/* Limits of the parser: it will be fed hostile input. */
static const size_t JSON_MAX_BYTES = (size_t)64 << 20;
static const int JSON_MAX_DEPTH = 64;
static const size_t JSON_MAX_VALUES = (size_t)1 << 21;

/* Decimal text without the C locale's help: snprintf/strtod follow
   LC_NUMERIC, which a host program may have set to a comma locale
   (locale_point_c, section 1, says which point it uses). */

static std::string num_text(double v, bool is_int) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    if (is_int && std::fabs(v) < 9007199254740992.0) return format("%lld", (long long)v);
    /* the shortest %g that reads back exactly, as Python's repr */
    char pt = locale_point_c(), buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, nullptr) == v) break;
    }
    std::string s = buf;
    for (auto &c : s)
        if (c == pt) c = '.';
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0"; /* a float stays a float: 1.0 */
    return s;
}

static double parse_double(const std::string &tok) {
    std::string t = tok;
    char pt = locale_point_c();
    if (pt != '.')
        for (auto &c : t)
            if (c == '.') c = pt;
    return strtod(t.c_str(), nullptr);
}

class JsonParser {
    const char *s, *p, *end;
    std::string what;
    size_t values = 0;
    [[noreturn]] void fail(const char *msg) {
        raise(NNL_ERR_FORMAT, "%s%sinvalid JSON at byte %lld: %s", what.c_str(), what.empty() ? "" : ": ",
              (long long)(p - s), msg);
    }
    void ws() {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    }
    bool lit(const char *w) {
        size_t n = strlen(w);
        if ((size_t)(end - p) >= n && !memcmp(p, w, n)) {
            p += n;
            return true;
        }
        return false;
    }
    unsigned hex4() {
        if (end - p < 4) fail("truncated \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; i++) {
            char c = *p++;
            v <<= 4;
            if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }
    static void utf8(std::string &out, unsigned cp) {
        if (cp < 0x80) {
            out += (char)cp;
        } else if (cp < 0x800) {
            out += (char)(0xC0 | (cp >> 6));
            out += (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += (char)(0xE0 | (cp >> 12));
            out += (char)(0x80 | ((cp >> 6) & 0x3F));
            out += (char)(0x80 | (cp & 0x3F));
        } else {
            out += (char)(0xF0 | (cp >> 18));
            out += (char)(0x80 | ((cp >> 12) & 0x3F));
            out += (char)(0x80 | ((cp >> 6) & 0x3F));
            out += (char)(0x80 | (cp & 0x3F));
        }
    }
    std::string str() {
        if (p >= end || *p != '"') fail("expected a string");
        p++;
        std::string out;
        for (;;) {
            if (p >= end) fail("unterminated string");
            char c = *p++;
            if (c == '"') break;
            if ((unsigned char)c < 0x20) fail("control character in a string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (p >= end) fail("unterminated escape");
            char e = *p++;
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                unsigned cp = hex4();
                if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
                    if (!lit("\\u")) fail("lone high surrogate");
                    unsigned lo = hex4();
                    if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    fail("lone low surrogate");
                }
                utf8(out, cp);
                break;
            }
            default: fail("bad escape");
            }
        }
        return out;
    }
    Json number() {
        const char *b = p;
        if (p < end && *p == '-') p++;
        if (lit("Infinity")) return Json::number(b[0] == '-' ? -INFINITY : INFINITY);
        if (p >= end || !(*p >= '0' && *p <= '9')) fail("bad number");
        if (*p == '0') p++;
        else
            while (p < end && *p >= '0' && *p <= '9') p++;
        bool frac = false;
        if (p < end && *p == '.') {
            p++;
            frac = true;
            if (p >= end || !(*p >= '0' && *p <= '9')) fail("bad number");
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
            p++;
            frac = true;
            if (p < end && (*p == '+' || *p == '-')) p++;
            if (p >= end || !(*p >= '0' && *p <= '9')) fail("bad number");
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        if (p - b > 400) fail("number too long");
        Json j = Json::number(parse_double(std::string(b, p)));
        j.is_int = !frac;
        return j;
    }
    Json value(int depth) {
        if (depth > JSON_MAX_DEPTH) fail("nested too deeply");
        if (++values > JSON_MAX_VALUES) fail("too many values");
        ws();
        if (p >= end) fail("unexpected end of input");
        Json j;
        char c = *p;
        if (c == '{') {
            p++;
            j.kind = Json::OBJ;
            ws();
            if (p < end && *p == '}') {
                p++;
                return j;
            }
            for (;;) {
                ws();
                std::string k = str();
                for (auto &kv : j.o)
                    if (kv.first == k) fail("duplicate key");
                ws();
                if (p >= end || *p != ':') fail("expected ':'");
                p++;
                j.o.emplace_back(std::move(k), value(depth + 1));
                ws();
                if (p < end && *p == ',') {
                    p++;
                    continue;
                }
                if (p < end && *p == '}') {
                    p++;
                    return j;
                }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            p++;
            j.kind = Json::ARR;
            ws();
            if (p < end && *p == ']') {
                p++;
                return j;
            }
            for (;;) {
                j.a.push_back(value(depth + 1));
                ws();
                if (p < end && *p == ',') {
                    p++;
                    continue;
                }
                if (p < end && *p == ']') {
                    p++;
                    return j;
                }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"') return Json::string(str());
        if (lit("true")) return Json::boolean(true);
        if (lit("false")) return Json::boolean(false);
        if (lit("null")) return j;
        if (lit("NaN")) return Json::number(NAN); /* Python's json writes these */
        if (lit("Infinity")) return Json::number(INFINITY);
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        fail("unexpected character");
    }

public:
    JsonParser(const char *text, size_t n, const std::string &what_) : s(text), p(text), end(text + n), what(what_) {}
    Json parse() {
        if ((size_t)(end - s) > JSON_MAX_BYTES)
            raise(NNL_ERR_FORMAT, "%s%sJSON text larger than %zu bytes", what.c_str(), what.empty() ? "" : ": ",
                  JSON_MAX_BYTES);
        Json j = value(0);
        ws();
        if (p != end) fail("text after the end of the JSON value");
        return j;
    }
};

static Json parse_json(const char *text, size_t n, const std::string &what) {
    return JsonParser(text, n, what).parse();
}

/* Always valid JSON: a byte that is not part of well-formed UTF-8 (which
   nnl_add and from_json refuse in names) is written as U+FFFD. */
static void write_json_string(std::string &out, const std::string &v) {
    out += '"';
    for (size_t i = 0, n; i < v.size(); i += n) {
        n = utf8_seq(v, i);
        if (n != 1) {
            if (n) {
                out.append(v, i, n);
            } else {
                out += "\\ufffd";
                n = 1;
            }
            continue;
        }
        unsigned char c = (unsigned char)v[i];
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) out += format("\\u%04x", c);
            else out += (char)c;
        }
    }
    out += '"';
}

/* One line with Python's json.dumps separators (", " and ": "). */
static void write_json(std::string &out, const Json &j) {
    switch (j.kind) {
    case Json::NUL: out += "null"; break;
    case Json::BOOL: out += j.b ? "true" : "false"; break;
    case Json::NUM: out += num_text(j.num, j.is_int); break;
    case Json::STR: write_json_string(out, j.s); break;
    case Json::ARR:
        out += '[';
        for (size_t i = 0; i < j.a.size(); i++) {
            if (i) out += ", ";
            write_json(out, j.a[i]);
        }
        out += ']';
        break;
    case Json::OBJ:
        out += '{';
        for (size_t i = 0; i < j.o.size(); i++) {
            if (i) out += ", ";
            write_json_string(out, j.o[i].first);
            out += ": ";
            write_json(out, j.o[i].second);
        }
        out += '}';
        break;
    }
}

static std::string json_text(const Json &j) {
    std::string s;
    write_json(s, j);
    return s;
}

/* ---- Model -> Keras JSON ----------------------------------------------------- */

static const char *const KERAS_VERSION = "2.15.0"; /* the tf.keras layout written */
static const char *const KERAS3_VERSION = "3.6.0"; /* the Keras 3 layout of .keras files written */

/* An initializer spec string (a WeightSpec's init) -> Keras' form, as
   tf.keras 2.x's get_config writes it: {"class_name": "GlorotUniform",
   "config": {"seed": null}}, {"class_name": "VarianceScaling", "config":
   {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal",
   "seed": null}}, {"class_name": "Orthogonal", "config": {"gain": 1.0,
   "seed": null}}. The table and the spec syntax are section 3's. */
static Json init_json(const std::string &spec) {
    Init in = parse_init(spec, "initializer");
    Json cfg = Json::object();
    switch (in.def->kind) {
    case INIT_CONSTANT: cfg.set("value", Json::number(in.a)); break;
    case INIT_UNIFORM: cfg.set("minval", Json::number(in.a)).set("maxval", Json::number(in.b)); break;
    case INIT_NORMAL:
    case INIT_TRUNCATED: cfg.set("mean", Json::number(in.a)).set("stddev", Json::number(in.b)); break;
    case INIT_ORTHOGONAL: cfg.set("gain", Json::number(in.a)); break;
    case INIT_VARIANCE:
        if (!in.def->preset)
            cfg.set("scale", Json::number(in.a))
                .set("mode", Json::string(kInitModes[in.mode]))
                .set("distribution", Json::string(kInitDists[in.dist]));
        break;
    default: break;
    }
    if (in.def->kind != INIT_ZEROS && in.def->kind != INIT_ONES && in.def->kind != INIT_CONSTANT)
        cfg.set("seed", Json());
    return Json::object().set("class_name", Json::string(in.def->keras)).set("config", cfg);
}

/* One layer's Keras config, keys in tf.keras 2.x's order: the layer writes
   its own (Layer::config). */
static Json layer_json(const Layer &l) {
    Json c = Json::object();
    c.set("name", Json::string(l.name)).set("trainable", Json::boolean(true)).set("dtype", Json::string("float32"));
    l.config(c);
    return Json::object().set("class_name", Json::string(l.cls)).set("config", c);
}

static Json model_json(const Model &m) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
    Json layers = Json::array();
    /* a stateful model's batch size is part of its input shape, as Keras
       writes it (its stateful layers need one) */
    bool fixed = m.has_slot_states() && m.state_slots > 0;
    Json bshape = Json::array().push(fixed ? Json::integer(m.state_slots) : Json());
    for (int i = 0; i < m.input.rank; i++) /* a variable length: null, as Keras writes None */
        bshape.push(m.var_len && i == 0 ? Json() : Json::integer(m.input.d[i]));
    Json in = Json::object();
    in.set("batch_input_shape", bshape).set("dtype", Json::string("float32")).set("sparse", Json::boolean(false));
    in.set("ragged", Json::boolean(false)).set("name", Json::string(m.layers[0]->name + "_input"));
    layers.push(Json::object().set("class_name", Json::string("InputLayer")).set("config", in));
    for (auto &l : m.layers) layers.push(layer_json(*l));
    Json cfg = Json::object().set("name", Json::string("sequential")).set("layers", layers);
    return Json::object()
        .set("class_name", Json::string("Sequential"))
        .set("config", cfg)
        .set("keras_version", Json::string(KERAS_VERSION))
        .set("backend", Json::string("tensorflow"));
}

/* ---- Keras JSON -> model ------------------------------------------------------ */

/* "float32", or a Keras 3 policy {"class_name": "DTypePolicy", "config": {"name": "float32"}} */
static bool is_float32(const Json &d) {
    if (d.kind == Json::STR) return d.s == "float32";
    if (d.kind == Json::OBJ) {
        const Json *c = d.get("config");
        const Json *n = c && c->kind == Json::OBJ ? c->get("name") : nullptr;
        return n && n->kind == Json::STR && n->s == "float32";
    }
    return d.kind == Json::NUL;
}

/* A JSON value as a spec Value (lists become tuples). */
static Value to_value(const Json &j, const std::string &owner, const std::string &key) {
    Value v;
    switch (j.kind) {
    case Json::NUL: break;
    case Json::BOOL: v.kind = Value::BOOL; v.num = j.b; break;
    case Json::NUM:
        NNL_REQUIRE(std::fabs(j.num) <= 1e12, NNL_ERR_FORMAT, "%s: '%s' holds %g, out of range", owner.c_str(),
                    key.c_str(), j.num);
        v.kind = Value::NUM;
        v.num = j.num;
        break;
    case Json::STR: v.kind = Value::STR; v.str = j.s; break;
    case Json::ARR:
        NNL_REQUIRE(j.a.size() <= 64, NNL_ERR_FORMAT, "%s: '%s' is a list of %zu values, too long", owner.c_str(),
                    key.c_str(), j.a.size());
        v.kind = Value::TUPLE;
        for (auto &x : j.a) v.items.push_back(to_value(x, owner, key));
        break;
    case Json::OBJ:
        raise(NNL_ERR_UNSUPPORTED, "%s: option '%s' holds an object this version does not read", owner.c_str(),
              key.c_str());
    }
    return v;
}

/* Keras' initializer JSON -> a spec string: {"class_name": "GlorotUniform",
   "config": {"seed": null}} -> "glorot_uniform"; {"class_name":
   "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", ...}} ->
   "VarianceScaling(scale=2, mode='fan_in', distribution='truncated_normal')".
   Reads every class of section 3's table with its config, so the files of
   standalone Keras 2.0-2.3 (glorot_uniform written as VarianceScaling(1.0,
   'fan_avg', 'uniform'), distribution 'normal', RandomUniform with its
   minval/maxval) load as well as tf.keras' and Keras 3's. A name (a string)
   is passed on as it is. Seeds must be null: initial weights come from the
   model seed. */
static Value init_value(const Json &j, const std::string &owner, const std::string &key) {
    Value v;
    v.kind = Value::STR;
    if (j.kind == Json::STR) {
        v.str = j.s;
        return v;
    }
    const Json *cn = j.kind == Json::OBJ ? j.get("class_name") : nullptr;
    NNL_REQUIRE(cn && cn->kind == Json::STR, NNL_ERR_FORMAT, "%s: '%s' must be a name or {\"class_name\": ...}",
                owner.c_str(), key.c_str());
    const InitDef *def = init_def(cn->s);
    if (!def) {
        std::string all;
        for (auto &d : kInitTable) all += std::string(all.empty() ? "" : ", ") + d.keras;
        raise(NNL_ERR_UNSUPPORTED, "%s: %s '%s' is not supported (supported: %s)", owner.c_str(), key.c_str(),
              cn->s.c_str(), all.c_str());
    }
    Init in = init_defaults(*def);
    const Json *cfg = j.get("config");
    NNL_REQUIRE(!cfg || cfg->kind == Json::OBJ || cfg->kind == Json::NUL, NNL_ERR_FORMAT,
                "%s: %s's config must be an object", owner.c_str(), key.c_str());
    std::string at = owner + ": " + key, who = at + " " + cn->s;
    auto number = [&](const std::string &k, const Json &x) {
        NNL_REQUIRE(x.kind == Json::NUM && std::isfinite(x.num), NNL_ERR_FORMAT, "%s: '%s' must be a finite number, "
                    "got %s", who.c_str(), k.c_str(), json_text(x).c_str());
        return x.num;
    };
    auto text = [&](const std::string &k, const Json &x) {
        NNL_REQUIRE(x.kind == Json::STR, NNL_ERR_FORMAT, "%s: '%s' must be a string, got %s", who.c_str(), k.c_str(),
                    json_text(x).c_str());
        return x.s;
    };
    InitKind kind = def->kind;
    bool vs = kind == INIT_VARIANCE && !def->preset;
    if (cfg && cfg->kind == Json::OBJ)
        for (auto &kv : cfg->o) {
            const std::string &k = kv.first;
            const Json &x = kv.second;
            if (k == "seed") {
                NNL_REQUIRE(x.kind == Json::NUL, NNL_ERR_UNSUPPORTED, "%s with seed=%s is not supported (initial "
                            "weights come from the model seed: nnl_model_set_seed)", who.c_str(), json_text(x).c_str());
            } else if (kind == INIT_CONSTANT && k == "value") {
                in.a = number(k, x);
            } else if (kind == INIT_UNIFORM && (k == "minval" || k == "maxval")) {
                (k == "minval" ? in.a : in.b) = number(k, x);
            } else if ((kind == INIT_NORMAL || kind == INIT_TRUNCATED) && (k == "mean" || k == "stddev")) {
                (k == "mean" ? in.a : in.b) = number(k, x);
            } else if (kind == INIT_ORTHOGONAL && k == "gain") {
                in.a = number(k, x);
            } else if (vs && k == "scale") {
                in.a = number(k, x);
            } else if (vs && k == "mode") {
                in.mode = init_mode(text(k, x), at.c_str());
            } else if (vs && k == "distribution") {
                in.dist = init_dist(text(k, x), at.c_str());
            } else {
                raise(NNL_ERR_UNSUPPORTED, "%s: option '%s' (= %s) is not supported", who.c_str(), k.c_str(),
                      json_text(x).c_str());
            }
        }
    check_init(in, at.c_str());
    v.str = init_text(in);
    return v;
}

/* Input shape from [null, d1, ...] */
static Value shape_value(const Json &j, const std::string &owner, bool drop_batch) {
    NNL_REQUIRE(j.kind == Json::ARR && j.a.size() >= (drop_batch ? 2u : 1u) && j.a.size() <= NNL_MAX_RANK + 1u,
                NNL_ERR_FORMAT, "%s: input shape must be a list of 1..%d sizes", owner.c_str(), NNL_MAX_RANK);
    Value v;
    v.kind = Value::TUPLE;
    for (size_t i = drop_batch ? 1 : 0; i < j.a.size(); i++) {
        const Json &x = j.a[i];
        if (x.kind == Json::NUL && i == (drop_batch ? 1u : 0u)) { /* a variable length (Model::var_len) */
            Value d;
            d.kind = Value::NONE;
            v.items.push_back(d);
            continue;
        }
        NNL_REQUIRE(x.kind == Json::NUM && x.num >= 1 && x.num < 1e12 && x.num == std::floor(x.num), NNL_ERR_FORMAT,
                    "%s: input shape %s must hold positive sizes after the batch dimension", owner.c_str(),
                    json_text(j).c_str());
        Value d;
        d.kind = Value::NUM;
        d.num = x.num;
        v.items.push_back(d);
    }
    return v;
}

static bool ends_with(const std::string &s, const char *t) {
    size_t n = strlen(t);
    return s.size() >= n && s.compare(s.size() - n, n, t) == 0;
}

/* Hostile JSON must not make a layer allocate terabytes or overflow a
   size: before a layer is built, its output and weight sizes are estimated
   in floating point from its parsed configuration (Layer::size_bound,
   charged to a SizeBudget by Model::add_spec) and bounded. nnl_add trusts
   its caller; JSON comes from files. */
#ifndef NNL_MAX_JSON_PARAMS
#define NNL_MAX_JSON_PARAMS ((double)((int64_t)1 << 31)) /* weights of a model read from JSON */
#endif
static const double MAX_SAMPLE = (double)((int64_t)1 << 31); /* values per sample of any layer */

static double kw_product(const Spec &sp, const char *key, double def, int nd) {
    for (auto &kv : sp.kw)
        if (kv.first == key) {
            const Value &v = kv.second;
            if (v.kind == Value::NUM) return std::pow(std::fabs(v.num), nd);
            if (v.kind != Value::TUPLE) return def;
            double p = 1;
            std::vector<const Value *> todo;
            for (auto &x : v.items) todo.push_back(&x);
            for (size_t i = 0; i < todo.size() && i < 64; i++) {
                if (todo[i]->kind == Value::NUM) p *= std::fabs(todo[i]->num);
                if (todo[i]->kind == Value::TUPLE)
                    for (auto &y : todo[i]->items) todo.push_back(&y);
            }
            return p;
        }
    return def;
}

/* A layer's Keras config -> its spec's keyword arguments (sp.name set);
   input: an InputLayer's config. A wrapper's nested layer ("layer",
   "backward_layer": {"class_name": ..., "config": ...}) becomes a nested
   call, read by the same rules. */
static Value nested_layer_value(const Json &lj, const std::string &owner);
static void config_kw(Spec &sp, const Json *cfg, const std::string &owner, bool input) {
    for (auto &kv : cfg->o) {
        const std::string &k = kv.first;
        const Json &v = kv.second;
        if (k == "trainable") {
            NNL_REQUIRE(v.kind == Json::BOOL && v.b, NNL_ERR_UNSUPPORTED,
                        "%s: trainable=false (a frozen layer) is not supported", owner.c_str());
        } else if (k == "dtype") {
            /* an input of token ids (keras.Input(shape=(T,), dtype='int32') before an Embedding):
               the ids enter through the typed calls whatever the input's dtype */
            bool ids = input && v.kind == Json::STR && (v.s == "int32" || v.s == "int64");
            NNL_REQUIRE(is_float32(v) || ids, NNL_ERR_UNSUPPORTED, "%s: dtype %s is not supported (float32 only)",
                        owner.c_str(), json_text(v).c_str());
        } else if (ends_with(k, "_regularizer") || ends_with(k, "_constraint")) {
            NNL_REQUIRE(v.kind == Json::NUL, NNL_ERR_UNSUPPORTED, "%s: %s is not supported (%s)", owner.c_str(),
                        k.c_str(), json_text(v).c_str());
        } else if (k == "lora_rank" || k == "quantization_config" || k == "noise_shape" || k == "lora_alpha") {
            NNL_REQUIRE(v.kind == Json::NUL, NNL_ERR_UNSUPPORTED, "%s: %s=%s is not supported", owner.c_str(),
                        k.c_str(), json_text(v).c_str());
        } else if (k == "sparse" || k == "ragged" || k == "synchronized" || k == "optional") {
            NNL_REQUIRE(v.kind == Json::BOOL && !v.b, NNL_ERR_UNSUPPORTED, "%s: %s=true is not supported",
                        owner.c_str(), k.c_str());
        } else if (k == "batch_input_shape" || k == "batch_shape") {
            sp.kw.emplace_back(input ? "shape" : "input_shape", shape_value(v, owner, true));
        } else if (k == "input_shape" || k == "shape") {
            sp.kw.emplace_back(input ? "shape" : "input_shape", shape_value(v, owner, false));
        } else if (input) {
            NNL_REQUIRE(k == "name" || k == "input_tensor", NNL_ERR_UNSUPPORTED, "%s: unsupported option '%s'",
                        owner.c_str(), k.c_str());
        } else if (ends_with(k, "_initializer")) {
            sp.kw.emplace_back(k, init_value(v, owner, k));
        } else if (k == "axis" && v.kind == Json::ARR) {
            NNL_REQUIRE(v.a.size() == 1, NNL_ERR_UNSUPPORTED, "%s: axis %s: one axis only", owner.c_str(),
                        json_text(v).c_str());
            sp.kw.emplace_back(k, to_value(v.a[0], owner, k));
        } else if ((k == "layer" || k == "backward_layer") && v.kind == Json::OBJ) {
            sp.kw.emplace_back(k, nested_layer_value(v, owner + ": " + k));
        } else if (k == "activation" && v.kind == Json::OBJ) {
            raise(NNL_ERR_UNSUPPORTED, "%s: activation %s is not supported (names only)", owner.c_str(),
                  json_text(v).c_str());
        } else {
            sp.kw.emplace_back(k, to_value(v, owner, k)); /* the layer's own reader rejects unknown keys */
        }
    }
    for (auto &kv : sp.kw) /* Keras writes a bias initializer even without a bias */
        if (kv.first == "use_bias" && kv.second.kind == Value::BOOL && kv.second.num == 0) {
            std::vector<std::pair<std::string, Value>> kw;
            for (auto &x : sp.kw)
                if (x.first != "bias_initializer") kw.push_back(x);
            sp.kw = kw;
            break;
        }
}

static Value nested_layer_value(const Json &lj, const std::string &owner) {
    const Json *cn = lj.get("class_name"), *cfg = lj.get("config");
    NNL_REQUIRE(cn && cn->kind == Json::STR, NNL_ERR_FORMAT, "%s has no \"class_name\"", owner.c_str());
    NNL_REQUIRE(cfg && cfg->kind == Json::OBJ, NNL_ERR_FORMAT, "%s (%s) has no \"config\" object", owner.c_str(),
                printable(cn->s).c_str());
    for (auto &kv : lj.o)
        NNL_REQUIRE(kv.first == "class_name" || kv.first == "config" || kv.first == "module" ||
                        kv.first == "registered_name" || kv.first == "build_config" || kv.first == "name",
                    NNL_ERR_UNSUPPORTED, "%s: unsupported field '%s'", owner.c_str(), kv.first.c_str());
    auto sp = std::make_shared<Spec>();
    sp->name = cn->s;
    config_kw(*sp, cfg, owner + " (" + printable(cn->s) + ")", false);
    Value v;
    v.kind = Value::CALL;
    v.call = sp;
    return v;
}

/* One {"class_name": ..., "config": {...}} into model m. */
static void add_layer_json(Model &m, const Json &lj, size_t index, SizeBudget &budget) {
    std::string owner = format("layer %zu", index);
    NNL_REQUIRE(lj.kind == Json::OBJ, NNL_ERR_FORMAT, "%s must be an object", owner.c_str());
    const Json *cn = lj.get("class_name"), *cfg = lj.get("config");
    NNL_REQUIRE(cn && cn->kind == Json::STR, NNL_ERR_FORMAT, "%s has no \"class_name\"", owner.c_str());
    NNL_REQUIRE(cfg && cfg->kind == Json::OBJ, NNL_ERR_FORMAT, "%s (%s) has no \"config\" object", owner.c_str(),
                cn->s.c_str());
    const Json *nm = cfg->get("name");
    if (nm && nm->kind == Json::STR)
        owner = format("layer %zu '%s' (%s)", index, printable(nm->s).c_str(), printable(cn->s).c_str());
    else
        owner += " (" + printable(cn->s) + ")";
    /* the kind first: an LSTM is refused as an LSTM, not over one of its options */
    if (cn->s != "InputLayer" && cn->s != "Input" && cn->s != "TimeDistributed" && !find_layer(cn->s)) {
        std::string all = "InputLayer, " + layer_names();
        raise(NNL_ERR_UNSUPPORTED, "%s: layer kind '%s' is not supported by this version (supported: %s)",
              owner.c_str(), printable(cn->s).c_str(), all.c_str());
    }
    for (auto &kv : lj.o) /* module, registered_name, build_config: bookkeeping of Keras 3 */
        NNL_REQUIRE(kv.first == "class_name" || kv.first == "config" || kv.first == "module" ||
                        kv.first == "registered_name" || kv.first == "build_config" || kv.first == "name" ||
                        kv.first == "inbound_nodes",
                    NNL_ERR_UNSUPPORTED, "%s: unsupported field '%s'", owner.c_str(), kv.first.c_str());
    Spec sp;
    sp.name = cn->s;
    bool input = sp.name == "InputLayer";
    config_kw(sp, cfg, owner, input);
    if (input) {
        bool has_shape = false;
        for (auto &kv : sp.kw) has_shape = has_shape || kv.first == "shape";
        NNL_REQUIRE(has_shape, NNL_ERR_FORMAT, "%s: no batch_input_shape / batch_shape", owner.c_str());
        sp.name = "Input";
        std::vector<std::pair<std::string, Value>> kw;
        for (auto &kv : sp.kw)
            if (kv.first == "shape") kw.push_back(kv);
        sp.kw = kw;
    } else if (!m.has_input && m.layers.empty()) {
        /* Keras 3 keeps the input shape in build_config */
        const Json *bc = lj.get("build_config");
        const Json *is = bc && bc->kind == Json::OBJ ? bc->get("input_shape") : nullptr;
        bool has = false;
        for (auto &kv : sp.kw) has = has || kv.first == "input_shape";
        if (is && !has) sp.kw.emplace_back("input_shape", shape_value(*is, owner, true));
    }
    try {
        if (input) {
            NNL_REQUIRE(kw_product(sp, "shape", 1, 1) <= MAX_SAMPLE, NNL_ERR_MEMORY, "input shape too large");
        } else {
            if (!m.has_input && m.layers.empty()) { /* input_shape on the first layer: an Input first */
                Spec in;
                in.name = "Input";
                std::vector<std::pair<std::string, Value>> kw;
                for (auto &kv : sp.kw) {
                    if (kv.first == "input_shape") in.kw.emplace_back("shape", kv.second);
                    else kw.push_back(kv);
                }
                if (!in.kw.empty()) {
                    NNL_REQUIRE(kw_product(in, "shape", 1, 1) <= MAX_SAMPLE, NNL_ERR_MEMORY, "input shape too large");
                    m.add_spec(in);
                    sp.kw = kw;
                }
            }
        }
        m.add_spec(sp, &budget);
    } catch (const Error &e) {
        /* messages raised above name the layer already */
        if (e.msg.compare(0, owner.size(), owner) == 0) throw;
        raise(e.status, "%s: %s", owner.c_str(), e.msg.c_str());
    }
}

/* max_params: a bound on the weights the architecture may declare */
static void model_from_json(Model &m, const Json &j, double max_params = NNL_MAX_JSON_PARAMS) {
    NNL_REQUIRE(j.kind == Json::OBJ, NNL_ERR_FORMAT, "the text is not a JSON object");
    const Json *cn = j.get("class_name");
    NNL_REQUIRE(cn && cn->kind == Json::STR, NNL_ERR_FORMAT, "no \"class_name\" at the top level");
    NNL_REQUIRE(cn->s == "Sequential", NNL_ERR_UNSUPPORTED,
                "only Sequential models are supported, this is a '%s'", cn->s.c_str());
    const Json *cfg = j.get("config");
    NNL_REQUIRE(cfg, NNL_ERR_FORMAT, "no \"config\"");
    const Json *layers = cfg->kind == Json::ARR ? cfg : cfg->kind == Json::OBJ ? cfg->get("layers") : nullptr;
    NNL_REQUIRE(layers && layers->kind == Json::ARR, NNL_ERR_FORMAT, "config has no \"layers\" list");
    NNL_REQUIRE(!layers->a.empty(), NNL_ERR_FORMAT, "the model has no layers");
    if (cfg->kind == Json::OBJ) {
        const Json *t = cfg->get("trainable");
        NNL_REQUIRE(!t || (t->kind == Json::BOOL && t->b), NNL_ERR_UNSUPPORTED,
                    "a frozen model (trainable=false) is not supported");
        const Json *d = cfg->get("dtype");
        NNL_REQUIRE(!d || is_float32(*d), NNL_ERR_UNSUPPORTED, "the model's dtype %s is not supported",
                    json_text(*d).c_str());
    }
    /* bounded before anything is built, so that a hostile list of a
       million layers is refused at once */
    size_t count = 0;
    for (auto &l : layers->a) {
        const Json *c = l.kind == Json::OBJ ? l.get("class_name") : nullptr;
        count += !(c && c->kind == Json::STR && c->s == "InputLayer");
    }
    NNL_REQUIRE(count <= (size_t)NNL_MAX_LAYERS, NNL_ERR_MEMORY,
                "the model has %zu layers; nnlite allows at most %d (NNL_MAX_LAYERS)", count,
                NNL_MAX_LAYERS);
    SizeBudget budget{MAX_SAMPLE, max_params};
    /* the weights get their place once, after the last layer: adding layer
       by layer would copy the arena each time (quadratic in the layers) */
    m.defer_layout = true;
    for (size_t i = 0; i < layers->a.size(); i++) add_layer_json(m, layers->a[i], i, budget);
    m.finish_layout();
    /* stateful layers: the batch size of the first layer's batch_input_shape
       (batch_shape), when it gives one, is the model's fixed batch size */
    if (m.has_slot_states())
        for (auto &l : layers->a) {
            const Json *c = l.kind == Json::OBJ ? l.get("config") : nullptr;
            const Json *bs = c && c->kind == Json::OBJ ? c->get("batch_input_shape") : nullptr;
            if (!bs && c && c->kind == Json::OBJ) bs = c->get("batch_shape");
            if (!bs) continue;
            if (bs->kind == Json::ARR && !bs->a.empty() && bs->a[0].kind == Json::NUM) {
                double b = bs->a[0].num;
                NNL_REQUIRE(b >= 1 && b <= 1e9 && b == std::floor(b), NNL_ERR_FORMAT,
                            "batch_input_shape: the batch size %s is not a positive integer",
                            json_text(bs->a[0]).c_str());
                m.relayout_states((int64_t)b);
            }
            break;
        }
    NNL_REQUIRE(!m.layers.empty(), NNL_ERR_FORMAT, "the model has an input but no layers");
}

/* ---- Atomic writes ----------------------------------------------------------
   A temporary file beside the target (same folder, so rename is atomic),
   written, flushed and fsync'ed, renamed over the target, and the folder
   fsync'ed so the rename itself survives a power cut. A reader sees the old
   file or the new one, never a part. On failure the temporary file is
   removed; only a process killed mid-save can leave one behind (named
   TARGET.tmp-PID-N), and the target is intact then too. */
static void save_atomic(const char *path, const std::string &data) {
    NNL_REQUIRE(path && *path, NNL_ERR_ARGUMENT, "path is NULL or empty");
    static std::atomic<unsigned> counter{0};
    std::string tmp = format("%s.tmp-%ld-%u", path, (long)getpid(), counter++);
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) raise(NNL_ERR_IO, "cannot save '%s': cannot create a file in its folder: %s", path, strerror(errno));
    const char *p = data.data();
    size_t left = data.size();
    int err = 0;
    while (left > 0) {
        ssize_t w = write(fd, p, std::min<size_t>(left, (size_t)1 << 30));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            err = w < 0 ? errno : EIO;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp.c_str(), path) != 0) err = errno;
    if (err) {
        unlink(tmp.c_str());
        raise(NNL_ERR_IO, "cannot save '%s': %s", path, strerror(err));
    }
    std::string dir = path;
    size_t slash = dir.find_last_of('/');
    dir = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    int dfd = open(dir.c_str(), O_RDONLY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: some file systems refuse fsync on a folder */
        close(dfd);
    }
}

/* ---- Little-endian helpers ------------------------------------------------------ */

static void put32(std::string &s, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) s[at + (size_t)i] = (char)(v >> (8 * i));
}
static void put64(std::string &s, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) s[at + (size_t)i] = (char)(v >> (8 * i));
}
static void app16(std::string &s, uint32_t v) {
    s += (char)(v & 0xFF);
    s += (char)((v >> 8) & 0xFF);
}
static void app32(std::string &s, uint32_t v) {
    app16(s, v & 0xFFFF);
    app16(s, v >> 16);
}
/* float32 values as little-endian bytes */
static void append_floats(std::string &s, const float *x, int64_t n) {
    size_t at = s.size();
    s.resize(at + (size_t)n * 4);
    memcpy(&s[at], x, (size_t)n * 4);
    if (!io::host_little())
        for (size_t i = at; i < s.size(); i += 4) {
            std::swap(s[i], s[i + 3]);
            std::swap(s[i + 1], s[i + 2]);
        }
}
static void read_floats(const uint8_t *p, int64_t n, float *out) {
    memcpy(out, p, (size_t)n * 4);
    if (!io::host_little()) {
        uint8_t *b = (uint8_t *)out;
        for (int64_t i = 0; i < n * 4; i += 4) {
            std::swap(b[i], b[i + 3]);
            std::swap(b[i + 1], b[i + 2]);
        }
    }
}

static std::string hex64(uint64_t v) { return format("%016llx", (unsigned long long)v); }

/* ---- nnlite binary files (docs/FORMAT.md) ------------------------------------- */

static const uint8_t MAGIC[8] = {0x89, 'N', 'N', 'L', '\r', '\n', 0x1A, '\n'};
static const uint32_t FORMAT_VERSION = 1, ENDIAN_MARK = 0x01020304u;
static const uint32_t KIND_WEIGHTS = 1, KIND_MODEL = 2;
static const size_t HEADER = 64, ALIGN = 64;
static const int64_t MAX_TENSORS = 1 << 20;

struct TensorOut {
    std::string name;
    Shape shape;
    const float *data;
};

static size_t align_up(size_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

static Json shape_json(const Shape &s) { return ints_json(s.d, s.rank); }

/* Header, metadata JSON (meta + the tensor table), tensors at 64-byte offsets. */
static std::string build_file(uint32_t kind, Json meta, const std::vector<TensorOut> &ts) {
    std::vector<uint32_t> crcs;
    for (auto &t : ts) {
        std::string b;
        append_floats(b, t.data, t.shape.size());
        crcs.push_back(io::crc32((const uint8_t *)b.data(), b.size()));
    }
    size_t data_start = HEADER;
    std::string mtext;
    for (int pass = 0; pass < 8; pass++) {
        Json table = Json::array();
        size_t off = data_start;
        for (size_t i = 0; i < ts.size(); i++) {
            off = align_up(off);
            int64_t nb = ts[i].shape.size() * 4;
            table.push(Json::object()
                           .set("name", Json::string(ts[i].name))
                           .set("dtype", Json::string("float32"))
                           .set("shape", shape_json(ts[i].shape))
                           .set("offset", Json::integer((int64_t)off))
                           .set("nbytes", Json::integer(nb))
                           .set("crc32", Json::integer(crcs[i])));
            off += (size_t)nb;
        }
        Json m = meta;
        m.set("tensors", table);
        mtext = json_text(m);
        if (align_up(HEADER + mtext.size()) <= data_start) break;
        data_start = align_up(HEADER + mtext.size());
    }
    std::string f(HEADER, '\0');
    f += mtext;
    for (auto &t : ts) {
        f.resize(align_up(f.size()), '\0');
        append_floats(f, t.data, t.shape.size());
    }
    memcpy(&f[0], MAGIC, 8);
    put32(f, 8, FORMAT_VERSION);
    put32(f, 12, ENDIAN_MARK);
    put32(f, 16, kind);
    put32(f, 20, 0);
    put64(f, 24, (uint64_t)f.size());
    put64(f, 32, HEADER);
    put64(f, 40, mtext.size());
    put32(f, 48, io::crc32((const uint8_t *)mtext.data(), mtext.size()));
    put32(f, 52, (uint32_t)ts.size());
    put32(f, 56, 0);
    put32(f, 60, io::crc32((const uint8_t *)f.data(), 60));
    return f;
}

struct TensorIn {
    std::string name;
    Shape shape;
    size_t offset = 0;
};

struct NnlFile {
    std::vector<uint8_t> bytes;
    uint32_t kind = 0;
    Json meta;
    std::vector<TensorIn> tensors;
    std::string what;
    void read(const TensorIn &t, float *out) const { read_floats(bytes.data() + t.offset, t.shape.size(), out); }
    std::vector<float> read(const TensorIn &t) const {
        std::vector<float> v((size_t)t.shape.size());
        read(t, v.data());
        return v;
    }
};

static int64_t json_int(const Json *j, int64_t lo, int64_t hi, const std::string &what, const char *key) {
    NNL_REQUIRE(j && j->kind == Json::NUM && j->num == std::floor(j->num) && j->num >= (double)lo &&
                    j->num <= (double)hi,
                NNL_ERR_FORMAT, "%s: '%s' is missing or not an integer in [%lld, %lld]", what.c_str(), key,
                (long long)lo, (long long)hi);
    return (int64_t)j->num;
}

static const std::string &json_str(const Json *j, const std::string &what, const char *key) {
    NNL_REQUIRE(j && j->kind == Json::STR, NNL_ERR_FORMAT, "%s: '%s' is missing or not a string", what.c_str(), key);
    return j->s;
}

/* Reads and checks a whole file: header, checksums, every tensor's bounds. */
static NnlFile read_nnl(const char *path) {
    NnlFile F;
    read_file(path, F.bytes);
    F.what = format("'%s'", path);
    const std::string &w = F.what;
    const uint8_t *p = F.bytes.data();
    const size_t n = F.bytes.size();
    if (n < HEADER || memcmp(p, MAGIC, 8) != 0) {
        if (n >= 2 && p[0] == 'P' && p[1] == 'K')
            raise(NNL_ERR_FORMAT, "%s is a zip (.npz?) file, not an nnlite model file (use nnl_load_weights_npz)",
                  w.c_str());
        if (n >= 8 && !memcmp(p, "\x89HDF\r\n\x1a\n", 8))
            raise(NNL_ERR_FORMAT, "%s is a Keras HDF5 (.h5) file: not readable by nnlite; export the weights "
                  "with numpy as .npz (see nnl_load_weights_npz)", w.c_str());
        raise(NNL_ERR_FORMAT, "%s is not an nnlite model file (%s)", w.c_str(),
              n < HEADER ? "shorter than the 64-byte header" : "no magic number");
    }
    if (io::rd32le(p + 60) != io::crc32(p, 60)) raise(NNL_ERR_FORMAT, "%s: header checksum mismatch (corrupt file)", w.c_str());
    uint32_t version = io::rd32le(p + 8);
    if (version != FORMAT_VERSION)
        raise(NNL_ERR_FORMAT, "%s: format version %u; this nnlite reads version %u%s", w.c_str(), version,
              FORMAT_VERSION, version > FORMAT_VERSION ? " (written by a newer nnlite)" : "");
    if (io::rd32le(p + 12) != ENDIAN_MARK) raise(NNL_ERR_FORMAT, "%s: bad endianness marker", w.c_str());
    F.kind = io::rd32le(p + 16);
    if (F.kind != KIND_WEIGHTS && F.kind != KIND_MODEL) raise(NNL_ERR_FORMAT, "%s: unknown file kind %u", w.c_str(), F.kind);
    uint64_t fsize = io::rd64le(p + 24), moff = io::rd64le(p + 32), msize = io::rd64le(p + 40);
    if (fsize != n)
        raise(NNL_ERR_FORMAT, "%s: the file has %zu bytes, its header says %llu (truncated or padded)", w.c_str(), n,
              (unsigned long long)fsize);
    if (moff != HEADER || msize > n - HEADER || msize > JSON_MAX_BYTES)
        raise(NNL_ERR_FORMAT, "%s: metadata lies outside the file", w.c_str());
    if (io::rd32le(p + 48) != io::crc32(p + HEADER, (size_t)msize))
        raise(NNL_ERR_FORMAT, "%s: metadata checksum mismatch (corrupt file)", w.c_str());
    uint32_t count = io::rd32le(p + 52);
    F.meta = parse_json((const char *)p + HEADER, (size_t)msize, w + " metadata");
    NNL_REQUIRE(F.meta.kind == Json::OBJ, NNL_ERR_FORMAT, "%s: metadata is not an object", w.c_str());
    const Json *tl = F.meta.get("tensors");
    NNL_REQUIRE(tl && tl->kind == Json::ARR && tl->a.size() == count && (int64_t)count <= MAX_TENSORS,
                NNL_ERR_FORMAT, "%s: the tensor table does not match the header's count", w.c_str());
    const size_t data_min = HEADER + (size_t)msize;
    for (size_t i = 0; i < tl->a.size(); i++) {
        const Json &t = tl->a[i];
        std::string tw = format("%s tensor %zu", w.c_str(), i);
        NNL_REQUIRE(t.kind == Json::OBJ, NNL_ERR_FORMAT, "%s is not an object", tw.c_str());
        TensorIn T;
        T.name = json_str(t.get("name"), tw, "name");
        NNL_REQUIRE(T.name.size() <= 1024, NNL_ERR_FORMAT, "%s: name too long", tw.c_str());
        tw += " '" + T.name + "'";
        NNL_REQUIRE(json_str(t.get("dtype"), tw, "dtype") == "float32", NNL_ERR_FORMAT, "%s: dtype '%s' (float32 only)",
                    tw.c_str(), t.get("dtype")->s.c_str());
        const Json *sh = t.get("shape");
        NNL_REQUIRE(sh && sh->kind == Json::ARR && sh->a.size() <= NNL_MAX_RANK, NNL_ERR_FORMAT,
                    "%s: shape must be a list of at most %d sizes", tw.c_str(), NNL_MAX_RANK);
        uint64_t count_el = 1;
        for (auto &d : sh->a) {
            int64_t v = json_int(&d, 0, (int64_t)n, tw, "shape");
            T.shape.d[T.shape.rank++] = v;
            count_el = v == 0 ? 0 : count_el > (uint64_t)n / (uint64_t)v ? (uint64_t)n + 1 : count_el * (uint64_t)v;
        }
        int64_t off = json_int(t.get("offset"), 0, (int64_t)n, tw, "offset");
        int64_t nb = json_int(t.get("nbytes"), 0, (int64_t)n, tw, "nbytes");
        int64_t crc = json_int(t.get("crc32"), 0, 0xFFFFFFFFll, tw, "crc32");
        NNL_REQUIRE(count_el <= (uint64_t)n / 4 && (uint64_t)nb == count_el * 4, NNL_ERR_FORMAT,
                    "%s: %lld bytes do not hold its shape %s", tw.c_str(), (long long)nb, T.shape.str(false).c_str());
        NNL_REQUIRE(off % (int64_t)ALIGN == 0 && (size_t)off >= data_min && (uint64_t)nb <= n - (uint64_t)off,
                    NNL_ERR_FORMAT, "%s: data at offset %lld (%lld bytes) lies outside the file's data", tw.c_str(),
                    (long long)off, (long long)nb);
        NNL_REQUIRE(io::crc32(p + off, (size_t)nb) == (uint32_t)crc, NNL_ERR_FORMAT,
                    "%s: checksum mismatch (corrupt file)", tw.c_str());
        T.offset = (size_t)off;
        F.tensors.push_back(T);
    }
    /* Tensors may not overlap, and every byte no checksum covers (the
       alignment padding) must be zero: then any flipped bit is caught. */
    std::vector<std::pair<size_t, size_t>> spans{{0, data_min}};
    for (auto &t : F.tensors) spans.push_back({t.offset, t.offset + (size_t)t.shape.size() * 4});
    std::sort(spans.begin(), spans.end());
    size_t at = 0;
    for (auto &sp : spans) {
        NNL_REQUIRE(sp.first >= at, NNL_ERR_FORMAT, "%s: tensors overlap (corrupt file)", w.c_str());
        for (size_t i = at; i < sp.first; i++)
            NNL_REQUIRE(p[i] == 0, NNL_ERR_FORMAT, "%s: nonzero padding at byte %zu (corrupt file)", w.c_str(), i);
        at = sp.second;
    }
    for (size_t i = at; i < n; i++)
        NNL_REQUIRE(p[i] == 0, NNL_ERR_FORMAT, "%s: nonzero padding at byte %zu (corrupt file)", w.c_str(), i);
    return F;
}

/* All of a model's weights in Keras get_weights() order, with layer names. */
struct WeightRef {
    const Layer *layer;
    WeightSpec *w;
};
static std::vector<WeightRef> all_weights(const Model &m) {
    std::vector<WeightRef> v;
    for (auto &l : m.layers)
        for (auto &w : l->weights) v.push_back({l.get(), const_cast<WeightSpec *>(&w)});
    return v;
}

/* Persistent states of stateful layers are tensors "state/LAYER/STATE"
   in model files (not weights: neither weights files nor npz hold them).
   Two slashes: a weight is "LAYER/WEIGHT". */
static std::string state_tensor_name(const Layer &l, const StateSpec &st) {
    return "state/" + l.name + "/" + st.name;
}
static bool is_state_tensor(const std::string &name) {
    return name.compare(0, 6, "state/") == 0 && name.find('/', 6) != std::string::npos;
}
static Shape state_tensor_shape(const StateSpec &st, int64_t slots) {
    if (!st.per_slot) return st.shape;
    Shape s;
    s.d[s.rank++] = slots;
    for (int i = 0; i < st.shape.rank; i++) s.d[s.rank++] = st.shape.d[i];
    return s;
}

static std::vector<TensorOut> weight_tensors(const Model &m) {
    std::vector<TensorOut> ts;
    for (auto &r : all_weights(m)) ts.push_back({r.layer->name + "/" + r.w->name, r.w->shape, r.w->w});
    return ts;
}

static Json base_meta(const Model &m, const char *kind) {
    return Json::object()
        .set("format", Json::string("nnlite"))
        .set("version", Json::integer(FORMAT_VERSION))
        .set("kind", Json::string(kind))
        .set("nnlite_version", Json::string(NNL_VERSION_STRING))
        .set("architecture", model_json(m));
}

static void save_weights(const Model &m, const char *path) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
    save_atomic(path, build_file(KIND_WEIGHTS, base_meta(m, "weights"), weight_tensors(m)));
}

/* Copies the file's weight tensors into m after checking every shape. */
static void set_weights_from(Model &m, const NnlFile &F, const char *fn) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "%s: the model has no layers", fn);
    std::vector<const TensorIn *> ws;
    for (auto &t : F.tensors)
        if (t.name.compare(0, 10, "optimizer/") != 0 && !is_state_tensor(t.name)) ws.push_back(&t);
    std::vector<WeightRef> mine = all_weights(m);
    if (ws.size() != mine.size())
        raise(NNL_ERR_SHAPE, "%s: %s holds %zu weight tensors, the model has %zu (%zu layers): not the same "
              "architecture", fn, F.what.c_str(), ws.size(), mine.size(), m.layers.size());
    for (size_t i = 0; i < ws.size(); i++)
        if (ws[i]->shape != mine[i].w->shape)
            raise(NNL_ERR_SHAPE, "%s: layer '%s' (%s) weight '%s' has shape %s in the model but %s in %s ('%s')", fn,
                  mine[i].layer->name.c_str(), mine[i].layer->cls, mine[i].w->name.c_str(),
                  mine[i].w->shape.str(false).c_str(), ws[i]->shape.str(false).c_str(), F.what.c_str(),
                  ws[i]->name.c_str());
    for (size_t i = 0; i < ws.size(); i++) F.read(*ws[i], mine[i].w->w);
}

static void load_weights(Model &m, const char *path) {
    NnlFile F = read_nnl(path);
    set_weights_from(m, F, "load_weights");
}

static Json history_json(const Model &m) {
    Json keys = Json::array(), vals = Json::array();
    for (size_t k = 0; k < m.hist_keys.size(); k++) {
        keys.push(Json::string(m.hist_keys[k]));
        Json row = Json::array();
        for (double v : m.hist[k]) row.push(Json::number(v));
        vals.push(row);
    }
    return Json::object().set("epochs", Json::integer(m.hist_epochs)).set("keys", keys).set("values", vals);
}

static void save_model(const Model &m, const char *path) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
    Json meta = base_meta(m, "model");
    std::vector<TensorOut> ts = weight_tensors(m);
    for (auto &l : m.layers)
        for (auto &st : l->states)
            ts.push_back({state_tensor_name(*l, st), state_tensor_shape(st, m.state_slots), st.s});
    Json rng = Json::array();
    for (int i = 0; i < 4; i++) rng.push(Json::string(hex64(m.rng.s[i])));
    Json state = Json::object()
                     .set("seed", Json::string(hex64(m.seed)))
                     .set("seeded", Json::boolean(m.seeded))
                     .set("rng", rng)
                     .set("history", history_json(m));
    if (m.compiled) {
        meta.set("compile", Json::object()
                                .set("optimizer", Json::string(m.compile_text[0]))
                                .set("loss", Json::string(m.compile_text[1]))
                                .set("metrics", Json::string(m.compile_text[2])));
        const Optimizer &o = *m.opt;
        Json os = Json::object()
                      .set("learning_rate", Json::number(o.learning_rate))
                      .set("iterations", Json::integer(o.iterations))
                      .set("slots", Json::integer((int64_t)o.slots.size()));
        for (const Optimizer::Extra &e : m.opt->extra_state()) os.set(e.key, Json::number(*e.value));
        state.set("optimizer", os);
        for (size_t k = 0; k < o.slots.size(); k++) {
            Shape s{(int64_t)o.slots[k].size()};
            ts.push_back({format("optimizer/slot_%zu", k), s, o.slots[k].data()});
        }
    } else {
        meta.set("compile", Json());
    }
    meta.set("state", state);
    save_atomic(path, build_file(KIND_MODEL, meta, ts));
}

static uint64_t parse_hex64(const Json *j, const std::string &what, const char *key) {
    const std::string &s = json_str(j, what, key);
    NNL_REQUIRE(s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos, NNL_ERR_FORMAT,
                "%s: '%s' is not 16 hex digits", what.c_str(), key);
    return (uint64_t)strtoull(s.c_str(), nullptr, 16);
}

/* The states of m's stateful layers from a model file: every one, with
   one slot count for all per-slot states. A weights file has none: the
   states stay zero. */
static void load_states(Model &m, const NnlFile &F) {
    const std::string &w = F.what;
    size_t in_file = 0, mine = 0;
    for (auto &t : F.tensors) in_file += is_state_tensor(t.name);
    for (auto &l : m.layers) mine += l->states.size();
    if (F.kind == KIND_WEIGHTS && !in_file) return;
    NNL_REQUIRE(in_file == mine, NNL_ERR_FORMAT, "%s holds %zu layer states, its architecture has %zu", w.c_str(),
                in_file, mine);
    if (!mine) return;
    std::vector<std::pair<const StateSpec *, const TensorIn *>> found;
    int64_t slots = -1;
    for (auto &l : m.layers)
        for (auto &st : l->states) {
            std::string nm = state_tensor_name(*l, st);
            const TensorIn *t = nullptr;
            for (auto &x : F.tensors)
                if (x.name == nm) t = &x;
            NNL_REQUIRE(t, NNL_ERR_FORMAT, "%s: state tensor '%s' is missing", w.c_str(), nm.c_str());
            if (st.per_slot) {
                NNL_REQUIRE(t->shape.rank >= 1 && (slots < 0 || t->shape.d[0] == slots), NNL_ERR_FORMAT,
                            "%s: state tensor '%s' has shape %s: not the batch size of the model's other states",
                            w.c_str(), nm.c_str(), t->shape.str(false).c_str());
                slots = t->shape.d[0];
            }
            NNL_REQUIRE(t->shape == state_tensor_shape(st, std::max<int64_t>(slots, 0)), NNL_ERR_FORMAT,
                        "%s: state tensor '%s' has shape %s, the layer keeps %s per batch slot", w.c_str(), nm.c_str(),
                        t->shape.str(false).c_str(), st.shape.str(false).c_str());
            found.push_back({&st, t});
        }
    m.relayout_states(std::max<int64_t>(slots, 0));
    for (auto &f : found) F.read(*f.second, f.first->s);
}

static void load_model(Model &m, const char *path) {
    NnlFile F = read_nnl(path);
    const std::string &w = F.what;
    const Json *arch = F.meta.get("architecture");
    NNL_REQUIRE(arch, NNL_ERR_FORMAT, "%s: no architecture in the metadata", w.c_str());
    /* the weights are in the file: an architecture needing many more is a lie */
    double in_file = 0;
    for (auto &t : F.tensors) in_file += (double)t.shape.size();
    try {
        model_from_json(m, *arch, std::min((double)NNL_MAX_JSON_PARAMS, 2 * in_file + 65536));
    } catch (const Error &e) {
        raise(e.status == NNL_ERR_UNSUPPORTED ? e.status : NNL_ERR_FORMAT, "%s: architecture: %s", w.c_str(),
              e.msg.c_str());
    }
    try {
        set_weights_from(m, F, "load_model");
    } catch (const Error &e) { /* the file disagrees with itself */
        raise(e.status == NNL_ERR_SHAPE ? NNL_ERR_FORMAT : e.status, "%s", e.msg.c_str());
    }
    load_states(m, F);
    const Json *state = F.meta.get("state");
    if (F.kind != KIND_MODEL || !state) return; /* a weights file: an uncompiled model */
    NNL_REQUIRE(state->kind == Json::OBJ, NNL_ERR_FORMAT, "%s: 'state' is not an object", w.c_str());
    std::string sw = w + " state";
    m.seed = parse_hex64(state->get("seed"), sw, "seed");
    const Json *seeded = state->get("seeded");
    NNL_REQUIRE(seeded && seeded->kind == Json::BOOL, NNL_ERR_FORMAT, "%s: 'seeded' missing", sw.c_str());
    m.seeded = seeded->b;
    const Json *rng = state->get("rng");
    NNL_REQUIRE(rng && rng->kind == Json::ARR && rng->a.size() == 4, NNL_ERR_FORMAT, "%s: 'rng' needs 4 words",
                sw.c_str());
    for (int i = 0; i < 4; i++) m.rng.s[i] = parse_hex64(&rng->a[(size_t)i], sw, "rng");
    /* history */
    const Json *h = state->get("history");
    NNL_REQUIRE(h && h->kind == Json::OBJ, NNL_ERR_FORMAT, "%s: 'history' missing", sw.c_str());
    int64_t ep = json_int(h->get("epochs"), 0, 1 << 30, sw, "history.epochs");
    const Json *hk = h->get("keys"), *hv = h->get("values");
    NNL_REQUIRE(hk && hv && hk->kind == Json::ARR && hv->kind == Json::ARR && hk->a.size() == hv->a.size(),
                NNL_ERR_FORMAT, "%s: history keys and values do not match", sw.c_str());
    m.hist_keys.clear();
    m.hist.clear();
    for (size_t k = 0; k < hk->a.size(); k++) {
        m.hist_keys.push_back(json_str(&hk->a[k], sw, "history key"));
        const Json &row = hv->a[k];
        NNL_REQUIRE(row.kind == Json::ARR && (int64_t)row.a.size() == ep, NNL_ERR_FORMAT,
                    "%s: history '%s' does not hold %lld epochs", sw.c_str(), m.hist_keys.back().c_str(),
                    (long long)ep);
        std::vector<double> v;
        for (auto &x : row.a) {
            NNL_REQUIRE(x.kind == Json::NUM, NNL_ERR_FORMAT, "%s: history values must be numbers", sw.c_str());
            v.push_back(x.num);
        }
        m.hist.push_back(std::move(v));
    }
    m.hist_epochs = (int)ep;
    /* compile configuration and optimizer state */
    const Json *cc = F.meta.get("compile");
    if (!cc || cc->kind == Json::NUL) return;
    NNL_REQUIRE(cc->kind == Json::OBJ, NNL_ERR_FORMAT, "%s: 'compile' is not an object", w.c_str());
    std::string cw = w + " compile";
    std::string opt = json_str(cc->get("optimizer"), cw, "optimizer"), loss = json_str(cc->get("loss"), cw, "loss"),
                mets = json_str(cc->get("metrics"), cw, "metrics");
    try {
        m.compile(opt.c_str(), loss.c_str(), mets.c_str());
    } catch (const Error &e) {
        raise(NNL_ERR_FORMAT, "%s: the saved compile configuration fails: %s", w.c_str(), e.msg.c_str());
    }
    const Json *os = state->get("optimizer");
    NNL_REQUIRE(os && os->kind == Json::OBJ, NNL_ERR_FORMAT, "%s: optimizer state missing", sw.c_str());
    Optimizer &o = *m.opt;
    const Json *lr = os->get("learning_rate");
    NNL_REQUIRE(lr && lr->kind == Json::NUM && lr->num >= 0 && std::isfinite(lr->num), NNL_ERR_FORMAT,
                "%s: bad learning_rate", sw.c_str());
    o.learning_rate = lr->num;
    o.iterations = json_int(os->get("iterations"), 0, (int64_t)1 << 52, sw, "iterations");
    int64_t nslots = json_int(os->get("slots"), 0, 16, sw, "slots");
    /* none (saved before the first step) or the optimizer's own count */
    NNL_REQUIRE(nslots == 0 || nslots == o.nslots(), NNL_ERR_FORMAT, "%s: %s keeps %d slot arrays, not %lld",
                sw.c_str(), o.cls(), o.nslots(), (long long)nslots);
    for (const Optimizer::Extra &e : o.extra_state()) {
        const Json *v = os->get(e.key);
        NNL_REQUIRE(v && v->kind == Json::NUM && std::isfinite(v->num), NNL_ERR_FORMAT, "%s: %s %s missing",
                    sw.c_str(), o.cls(), e.key);
        *e.value = v->num;
    }
    int64_t trainable = 0;
    for (auto &s : m.slices) trainable += s.n;
    o.slots.clear();
    for (int64_t k = 0; k < nslots; k++) {
        std::string nm = format("optimizer/slot_%lld", (long long)k);
        const TensorIn *t = nullptr;
        for (auto &x : F.tensors)
            if (x.name == nm) t = &x;
        NNL_REQUIRE(t && t->shape.rank == 1 && t->shape.d[0] == trainable, NNL_ERR_FORMAT,
                    "%s: optimizer tensor '%s' is missing or not of %lld values", w.c_str(), nm.c_str(),
                    (long long)trainable);
        o.slots.push_back(F.read(*t));
    }
}

/* ---- npz in Keras get_weights() order ----------------------------------------- */

/* One .npy (format 1.0, '<f4', C order) with its header padded to 64 bytes. */
static std::string npy_bytes(const float *x, const Shape &s) {
    std::string shape = "(";
    for (int i = 0; i < s.rank; i++) shape += std::to_string((long long)s.d[i]) + (s.rank == 1 ? "," : i + 1 < s.rank ? ", " : "");
    shape += ")";
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    size_t total = align_up(10 + h.size() + 1);
    h.resize(total - 10 - 1, ' ');
    h += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    app16(out, (uint32_t)h.size());
    out += h;
    append_floats(out, x, s.size());
    return out;
}

/* A zip of stored members (no compression), as numpy's savez and Python's
   zipfile write by default; no zip64, so under 4 GB and 65535 members. */
static std::string zip_stored(const std::vector<std::pair<std::string, std::string>> &members) {
    std::string zip, cd;
    for (auto &mem : members) {
        const std::string &name = mem.first, &d = mem.second;
        NNL_REQUIRE(d.size() < 0xFFFFFFFFull && zip.size() + d.size() + 200 < 0xFFFFFFFFull, NNL_ERR_UNSUPPORTED,
                    "files over 4 GB need zip64, which this writer does not produce");
        uint32_t crc = io::crc32((const uint8_t *)d.data(), d.size());
        uint32_t off = (uint32_t)zip.size();
        /* local header: version 20, no flags, stored, 1980-01-01 00:00 */
        app32(zip, 0x04034B50);
        app16(zip, 20);
        app16(zip, 0);
        app16(zip, 0);
        app16(zip, 0);
        app16(zip, 0x21);
        app32(zip, crc);
        app32(zip, (uint32_t)d.size());
        app32(zip, (uint32_t)d.size());
        app16(zip, (uint32_t)name.size());
        app16(zip, 0);
        zip += name;
        zip += d;
        app32(cd, 0x02014B50);
        app16(cd, 20);
        app16(cd, 20);
        app16(cd, 0);
        app16(cd, 0);
        app16(cd, 0);
        app16(cd, 0x21);
        app32(cd, crc);
        app32(cd, (uint32_t)d.size());
        app32(cd, (uint32_t)d.size());
        app16(cd, (uint32_t)name.size());
        app16(cd, 0);
        app16(cd, 0);
        app16(cd, 0);
        app16(cd, 0);
        app32(cd, 0);
        app32(cd, off);
        cd += name;
    }
    NNL_REQUIRE(members.size() < 0xFFFF && zip.size() + cd.size() < 0xFFFFFFFFull, NNL_ERR_UNSUPPORTED,
                "too many or too large members for a zip without zip64");
    uint32_t cd_off = (uint32_t)zip.size();
    zip += cd;
    app32(zip, 0x06054B50);
    app16(zip, 0);
    app16(zip, 0);
    app16(zip, (uint32_t)members.size());
    app16(zip, (uint32_t)members.size());
    app32(zip, (uint32_t)cd.size());
    app32(zip, cd_off);
    app16(zip, 0);
    return zip;
}

static void save_weights_npz(const Model &m, const char *path) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
    std::vector<WeightRef> ws = all_weights(m);
    std::vector<std::pair<std::string, std::string>> members;
    for (size_t i = 0; i < ws.size(); i++)
        members.push_back({format("arr_%zu.npy", i), npy_bytes(ws[i].w->w, ws[i].w->shape)});
    save_atomic(path, zip_stored(members));
}

static void load_weights_npz(Model &m, const char *path) {
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
    std::vector<uint8_t> bytes;
    read_file(path, bytes);
    io::Zip z(bytes, path);
    std::vector<WeightRef> ws = all_weights(m);
    std::vector<io::ArrayPtr> arrays;
    for (size_t i = 0; i < ws.size(); i++) {
        const io::ZipEntry *e = z.find(format("arr_%zu", i));
        if (!e)
            raise(NNL_ERR_SHAPE, "'%s' has no arr_%zu for layer '%s' weight '%s' (the model has %zu "
                  "weight tensors; members: %s)", path, i, ws[i].layer->name.c_str(), ws[i].w->name.c_str(),
                  ws.size(), z.keys().c_str());
        io::ArrayPtr a = z.load(*e, NNL_FLOAT32);
        Shape s = ws[i].w->shape;
        bool same = a->rank == s.rank;
        for (int k = 0; same && k < s.rank; k++) same = a->shape[k] == s.d[k];
        if (!same)
            raise(NNL_ERR_SHAPE, "layer '%s' (%s) weight '%s' has shape %s in the model but arr_%zu "
                  "in '%s' has %s", ws[i].layer->name.c_str(), ws[i].layer->cls, ws[i].w->name.c_str(),
                  s.str(false).c_str(), i, path, io::shape_str(a->rank, a->shape).c_str());
        arrays.push_back(std::move(a));
    }
    if (z.find(format("arr_%zu", ws.size())))
        raise(NNL_ERR_SHAPE, "'%s' holds more than the model's %zu weight tensors", path, ws.size());
    for (size_t i = 0; i < ws.size(); i++)
        memcpy(ws[i].w->w, arrays[i]->data, (size_t)ws[i].w->shape.size() * sizeof(float));
}

/* ---- Keras' own model files: .h5 (legacy) and .keras (Keras 3) -----------------
   Both are read by content (nnl_load_model), never by name:
   - .h5 (HDF5 signature): tf.keras 2.x, standalone Keras 2 and Keras 3's
     legacy format. The root attribute model_config holds the architecture
     as JSON text; model_weights has an attribute layer_names (every layer,
     in model order) and one group per layer whose attribute weight_names
     lists the weights in get_weights() order, as paths inside that group:
     "dense/kernel:0" (Keras 2, tf.keras 2.x) or "sequential/dense/kernel"
     (Keras 3). Keras itself pairs the layers that have weights in order,
     not by name; so does this reader. Attributes over 64 KiB are split by
     Keras into name0, name1, ... (load_attributes_from_hdf5_group).
   - .keras (zip signature, with config.json): config.json holds the
     architecture (plus compile_config), model.weights.h5 the weights. A
     layer's weights are datasets layers/<key>/vars/0, 1, ... in
     get_weights() order, where <key> is Keras' snake_case of the layer's
     class, numbered per class from the second one on (dense, dense_1,
     conv2d, ...: saving_lib's _save_container_state), counted over the
     model's layers without the InputLayer. A recurrent layer keeps its
     weights in its cell (layers/lstm/cell/vars/i), a Bidirectional in
     forward_layer/cell and backward_layer/cell, a TimeDistributed in
     layer/vars.
   HDF5 itself is trusted to parse what it opens (its own checks; nnlite
   silences its error printing); what it returns is not: every attribute
   is a bounded string, every dataset is checked for kind, rank and shape
   against the model before a byte is read. The HDF5 library is called
   under one lock: Debian's build is not thread-safe. */

static const uint8_t HDF5_MAGIC[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1A, '\n'};

static bool has_magic(const std::vector<uint8_t> &f, const void *magic, size_t n) {
    return f.size() >= n && !memcmp(f.data(), magic, n);
}
static bool is_hdf5(const std::vector<uint8_t> &f) { return has_magic(f, HDF5_MAGIC, 8); }
static bool is_zip(const std::vector<uint8_t> &f) { return has_magic(f, "PK\x03\x04", 4); }

#ifndef NNL_HDF5
[[noreturn]] static void no_hdf5(const std::string &what, const char *kind) {
    raise(NNL_ERR_UNSUPPORTED, "%s is a Keras %s file: this build of nnlite has no HDF5 (Debian: apt-get "
          "install libhdf5-dev, then rebuild; make and CMake find it by pkg-config)", what.c_str(), kind);
}
#endif

#ifdef NNL_HDF5
/* The layers of a Keras architecture as Keras' Sequential.layers sees them
   (no InputLayer), with their class names as Keras' classes spell them
   (aliases resolved: Convolution2D is a Conv2D). */
static std::vector<std::string> keras_layer_classes(const Json &arch) {
    std::vector<std::string> v;
    const Json *cfg = arch.get("config");
    const Json *layers = cfg && cfg->kind == Json::ARR ? cfg : cfg && cfg->kind == Json::OBJ ? cfg->get("layers") : nullptr;
    if (!layers || layers->kind != Json::ARR) return v;
    for (auto &l : layers->a) {
        const Json *c = l.kind == Json::OBJ ? l.get("class_name") : nullptr;
        if (!c || c->kind != Json::STR || c->s == "InputLayer") continue;
        auto al = layer_aliases().find(c->s);
        v.push_back(al == layer_aliases().end() ? c->s : al->second);
    }
    return v;
}

namespace h5 {

/* An HDF5 identifier, closed with its own close function. */
class Id {
    hid_t id_ = -1;
    herr_t (*close_)(hid_t) = nullptr;

public:
    Id() {}
    Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
    Id(Id &&o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
    Id &operator=(Id &&o) noexcept {
        std::swap(id_, o.id_);
        std::swap(close_, o.close_);
        return *this;
    }
    Id(const Id &) = delete;
    ~Id() {
        if (id_ >= 0 && close_) close_(id_);
    }
    hid_t get() const { return id_; }
    bool ok() const { return id_ >= 0; }
};

/* One thread in HDF5 at a time, with its error printing off (restored after). */
class Session {
#if NNL_THREADS
    std::lock_guard<std::mutex> lock;
    static std::mutex &mu() {
        static std::mutex m;
        return m;
    }
#endif
    H5E_auto2_t func = nullptr;
    void *data = nullptr;

public:
#if NNL_THREADS
    Session() : lock(mu()) {
#else
    Session() {
#endif
        H5Eget_auto2(H5E_DEFAULT, &func, &data);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~Session() { H5Eset_auto2(H5E_DEFAULT, func, data); }
};

static const hsize_t MAX_ATTR_BYTES = (hsize_t)64 << 20; /* all strings of one attribute */
static const hsize_t MAX_ATTR_STRINGS = (hsize_t)1 << 20;

/* An HDF5 file held in memory (HDF5's core driver over a copy of it). */
class File {
    Id file_;
    std::string what_;

public:
    File(const uint8_t *p, size_t n, const std::string &what) : what_(what) {
        if (n < 8 || memcmp(p, HDF5_MAGIC, 8) != 0)
            raise(NNL_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature)", what.c_str());
        Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
        if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), 1 << 16, 0) < 0 ||
            H5Pset_file_image(fapl.get(), const_cast<uint8_t *>(p), n) < 0)
            raise(NNL_ERR_MEMORY, "%s: HDF5 cannot take a %zu-byte file image", what.c_str(), n);
        file_ = Id(H5Fopen("nnlite-image.h5", H5F_ACC_RDONLY, fapl.get()), H5Fclose);
        if (!file_.ok()) raise(NNL_ERR_FORMAT, "%s: HDF5 cannot open it (corrupt or truncated)", what.c_str());
    }
    hid_t root() const { return file_.get(); }
    const std::string &what() const { return what_; }
};

/* Whether every component of path exists below loc (H5Lexists checks the
   last one only). */
static bool exists(hid_t loc, const std::string &path) {
    if (path.empty()) return true;
    for (size_t at = 0;;) {
        size_t slash = path.find('/', at);
        std::string pre = path.substr(0, slash);
        if (pre.empty() || H5Lexists(loc, pre.c_str(), H5P_DEFAULT) <= 0) return false;
        if (slash == std::string::npos) return true;
        at = slash + 1;
    }
}

static Id open_group(hid_t loc, const std::string &path, const std::string &what) {
    if (!exists(loc, path)) raise(NNL_ERR_FORMAT, "%s: group '%s' is missing", what.c_str(), printable(path).c_str());
    Id g(H5Gopen2(loc, path.c_str(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) raise(NNL_ERR_FORMAT, "%s: '%s' is not a group", what.c_str(), printable(path).c_str());
    return g;
}

/* The strings of one string attribute (a scalar or a 1-D array, fixed or
   variable length). */
static std::vector<std::string> read_attr(hid_t obj, const char *name, const std::string &what) {
    Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
    if (!a.ok()) raise(NNL_ERR_FORMAT, "%s: attribute '%s' cannot be opened", what.c_str(), name);
    Id t(H5Aget_type(a.get()), H5Tclose), sp(H5Aget_space(a.get()), H5Sclose);
    if (!t.ok() || !sp.ok()) raise(NNL_ERR_FORMAT, "%s: attribute '%s' cannot be read", what.c_str(), name);
    int rank = H5Sget_simple_extent_ndims(sp.get());
    hssize_t n = H5Sget_simple_extent_npoints(sp.get());
    if (rank < 0 || rank > 1 || n < 0 || (hsize_t)n > MAX_ATTR_STRINGS)
        raise(NNL_ERR_FORMAT, "%s: attribute '%s' is not one string or a list of strings", what.c_str(), name);
    std::vector<std::string> out;
    if (rank == 1 && n == 0) return out; /* Keras writes an empty list as an empty float64 array */
    if (H5Tget_class(t.get()) != H5T_STRING)
        raise(NNL_ERR_FORMAT, "%s: attribute '%s' is not text", what.c_str(), name);
    if (H5Tis_variable_str(t.get()) > 0) {
        Id mt(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mt.get(), H5T_VARIABLE);
        H5Tset_cset(mt.get(), H5Tget_cset(t.get()));
        std::vector<char *> v((size_t)n, nullptr);
        if (n && H5Aread(a.get(), mt.get(), v.data()) < 0)
            raise(NNL_ERR_FORMAT, "%s: attribute '%s' cannot be read", what.c_str(), name);
        hsize_t total = 0;
        for (char *c : v) {
            size_t len = c ? strnlen(c, MAX_ATTR_BYTES + 1) : 0;
            total += len;
            if (total <= MAX_ATTR_BYTES) out.push_back(c ? std::string(c, len) : std::string());
        }
        for (char *c : v) H5free_memory(c);
        if (total > MAX_ATTR_BYTES)
            raise(NNL_ERR_FORMAT, "%s: attribute '%s' is over %llu bytes", what.c_str(), name,
                  (unsigned long long)MAX_ATTR_BYTES);
    } else {
        size_t len = H5Tget_size(t.get());
        if (len == 0 || (hsize_t)len * (hsize_t)n > MAX_ATTR_BYTES)
            raise(NNL_ERR_FORMAT, "%s: attribute '%s' is empty or over %llu bytes", what.c_str(), name,
                  (unsigned long long)MAX_ATTR_BYTES);
        std::vector<char> buf(len * (size_t)n + 1, 0);
        if (n && H5Aread(a.get(), t.get(), buf.data()) < 0)
            raise(NNL_ERR_FORMAT, "%s: attribute '%s' cannot be read", what.c_str(), name);
        bool space = H5Tget_strpad(t.get()) == H5T_STR_SPACEPAD;
        for (hssize_t i = 0; i < n; i++) {
            const char *c = buf.data() + (size_t)i * len;
            size_t k = strnlen(c, len);
            while (space && k && c[k - 1] == ' ') k--;
            out.emplace_back(c, k);
        }
    }
    return out;
}

/* A string attribute as Keras reads it: the attribute itself, else its
   chunks name0, name1, ... concatenated; *found says whether any exists. */
static std::vector<std::string> attr_strings(hid_t obj, const std::string &name, const std::string &what,
                                             bool *found = nullptr) {
    if (found) *found = true;
    if (H5Aexists(obj, name.c_str()) > 0) return read_attr(obj, name.c_str(), what);
    std::vector<std::string> all;
    size_t k = 0;
    for (;; k++) {
        std::string c = name + std::to_string(k);
        if (H5Aexists(obj, c.c_str()) <= 0) break;
        for (auto &x : read_attr(obj, c.c_str(), what)) all.push_back(std::move(x));
        NNL_REQUIRE(all.size() <= MAX_ATTR_STRINGS, NNL_ERR_FORMAT, "%s: attribute '%s' has too many parts",
                    what.c_str(), name.c_str());
    }
    if (found) *found = k > 0;
    return all;
}

/* One string: an attribute holding JSON text. */
static std::string attr_text(hid_t obj, const std::string &name, const std::string &what) {
    bool found = false;
    std::vector<std::string> v = attr_strings(obj, name, what, &found);
    if (!found) raise(NNL_ERR_FORMAT, "%s: attribute '%s' is missing", what.c_str(), name.c_str());
    if (v.size() != 1) raise(NNL_ERR_FORMAT, "%s: attribute '%s' holds %zu strings, not one", what.c_str(), name.c_str(), v.size());
    return v[0];
}

/* The dataset at path below loc into out as float32, after checking that it
   is a floating-point array of exactly the shape `want`. */
static void read_floats(hid_t loc, const std::string &path, const Shape &want, float *out, const std::string &what,
                        const std::string &whose) {
    const std::string p = printable(path);
    if (!exists(loc, path))
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) is missing", what.c_str(), p.c_str(), whose.c_str());
    H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
    if (H5Oget_info_by_name3(loc, path.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_DATASET)
#else
    if (H5Oget_info_by_name(loc, path.c_str(), &info, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_DATASET)
#endif
        raise(NNL_ERR_FORMAT, "%s: '%s' (%s) is not a dataset", what.c_str(), p.c_str(), whose.c_str());
    Id d(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) raise(NNL_ERR_FORMAT, "%s: dataset '%s' cannot be opened", what.c_str(), p.c_str());
    Id t(H5Dget_type(d.get()), H5Tclose), sp(H5Dget_space(d.get()), H5Sclose);
    if (!t.ok() || H5Tget_class(t.get()) != H5T_FLOAT)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) does not hold floating-point numbers", what.c_str(), p.c_str(),
              whose.c_str());
    int rank = sp.ok() ? H5Sget_simple_extent_ndims(sp.get()) : -1;
    hsize_t dims[H5S_MAX_RANK] = {0};
    if (rank < 0 || rank > H5S_MAX_RANK || H5Sget_simple_extent_dims(sp.get(), dims, nullptr) < 0)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' has no simple shape", what.c_str(), p.c_str());
    bool same = rank == want.rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == (hsize_t)want.d[i];
    if (!same) {
        std::string got = "(";
        for (int i = 0; i < rank; i++) got += format("%llu%s", (unsigned long long)dims[i], rank == 1 ? "," : i + 1 < rank ? ", " : "");
        got += ")";
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' has shape %s, %s has %s", what.c_str(), p.c_str(), got.c_str(),
              whose.c_str(), want.str(false).c_str());
    }
    if (want.size() && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' cannot be read (corrupt, or a filter HDF5 lacks)", what.c_str(),
              p.c_str());
}

/* How many links a group has (0 when path is missing). */
static hsize_t links(hid_t loc, const std::string &path, const std::string &what) {
    if (!exists(loc, path)) return 0;
    Id g = open_group(loc, path, what);
    H5G_info_t gi;
    if (H5Gget_info(g.get(), &gi) < 0) raise(NNL_ERR_FORMAT, "%s: group '%s' cannot be listed", what.c_str(), path.c_str());
    return gi.nlinks;
}

/* Whether path below loc is a dataset. */
static bool is_dataset(hid_t loc, const std::string &path) {
    if (!exists(loc, path)) return false;
    H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
    return H5Oget_info_by_name3(loc, path.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) >= 0 &&
           info.type == H5O_TYPE_DATASET;
#else
    return H5Oget_info_by_name(loc, path.c_str(), &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_DATASET;
#endif
}

/* The rank of the dataset at path below loc; -1 when there is none. */
static int dataset_rank(hid_t loc, const std::string &path) {
    if (!is_dataset(loc, path)) return -1;
    Id d(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) return -1;
    Id sp(H5Dget_space(d.get()), H5Sclose);
    return sp.ok() ? H5Sget_simple_extent_ndims(sp.get()) : -1;
}

/* A scalar integer dataset (Keras' iteration counter: int64, int32 under
   JAX) as a step count in 0..2^52. */
static int64_t read_count(hid_t loc, const std::string &path, const std::string &what, const std::string &whose) {
    const std::string p = printable(path);
    if (!exists(loc, path))
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) is missing", what.c_str(), p.c_str(), whose.c_str());
    if (!is_dataset(loc, path))
        raise(NNL_ERR_FORMAT, "%s: '%s' (%s) is not a dataset", what.c_str(), p.c_str(), whose.c_str());
    Id d(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) raise(NNL_ERR_FORMAT, "%s: dataset '%s' cannot be opened", what.c_str(), p.c_str());
    Id t(H5Dget_type(d.get()), H5Tclose), sp(H5Dget_space(d.get()), H5Sclose);
    if (!t.ok() || H5Tget_class(t.get()) != H5T_INTEGER)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) does not hold an integer", what.c_str(), p.c_str(), whose.c_str());
    if (!sp.ok() || H5Sget_simple_extent_ndims(sp.get()) != 0 || H5Sget_simple_extent_npoints(sp.get()) != 1)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) is not a scalar", what.c_str(), p.c_str(), whose.c_str());
    long long v = -1;
    if (H5Dread(d.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0)
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' cannot be read", what.c_str(), p.c_str());
    if (v < 0 || v > (1LL << 52))
        raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) is %lld, not a step count in 0..2^52", what.c_str(), p.c_str(),
              whose.c_str(), v);
    return (int64_t)v;
}

} // namespace h5

/* The weights read by a Keras loader, staged until every one has been read:
   a file that fails half-way leaves nothing behind. */
struct Staged {
    std::vector<std::vector<float>> v;
    float *add(const Shape &s) {
        v.emplace_back((size_t)s.size());
        return v.back().data();
    }
};

/* JSON text that may be broken: a null value then (an optional part of a file). */
static Json parse_json_or_null(const std::string &text) {
    try {
        return parse_json(text.data(), text.size(), "");
    } catch (const Error &) {
        return Json();
    }
}

/* The architecture of a Keras file, bounded by the file's size (each
   weight takes at least 2 bytes in it). */
static void keras_arch(Model &m, const std::string &text, size_t file_bytes, const std::string &what,
                       const char *where, Json *out) {
    Json j;
    try {
        j = parse_json(text.data(), text.size(), "");
        model_from_json(m, j, std::min((double)NNL_MAX_JSON_PARAMS, (double)file_bytes / 2 + 65536));
    } catch (const Error &e) {
        raise(e.status == NNL_ERR_UNSUPPORTED || e.status == NNL_ERR_MEMORY ? e.status : NNL_ERR_FORMAT,
              "%s: %s: %s", what.c_str(), where, e.msg.c_str());
    }
    *out = std::move(j);
}

/* ---- Keras' compile configuration -> nnl_compile's strings ----------------------
   .keras: config.json's compile_config {"optimizer": {"class_name": "Adam",
   "config": {...}} or "adam", "loss": "mse" or {"class_name": ..., "config":
   ...}, "metrics": [...]}; .h5: the training_config attribute, with the
   optimizer as optimizer_config. As Keras' compile_from_config, which
   warns and leaves the model uncompiled when the configuration fails, a
   configuration nnlite cannot follow (an option or a kind it lacks, a
   learning-rate schedule) leaves the model uncompiled: the weights are
   what the file is for. Keras' bookkeeping options (name, EMA off, jit,
   loss_scale_factor, ...) are dropped; None values are Keras' defaults. */
static bool spec_value(const Json &v, std::string *out) {
    switch (v.kind) {
    case Json::NUM: *out = num_text(v.num, v.is_int); return true;
    case Json::BOOL: *out = v.b ? "True" : "False"; return true;
    case Json::STR:
        if (v.s.find_first_of("'\\\"") != std::string::npos) return false;
        *out = "'" + v.s + "'";
        return true;
    default: return false;
    }
}

/* "Adam(learning_rate=0.001, beta_1=0.9)" from {"class_name": "Adam",
   "config": {...}}, keeping only the keys keep() accepts; "" when some
   value cannot be written as spec text. */
static std::string keras_call(const Json &j, const std::function<bool(const std::string &, const Json &)> &keep) {
    if (j.kind == Json::STR) return j.s.find_first_of("()'\"") == std::string::npos ? j.s : "";
    const Json *cn = j.kind == Json::OBJ ? j.get("class_name") : nullptr;
    const Json *cfg = j.kind == Json::OBJ ? j.get("config") : nullptr;
    if (!cn || cn->kind != Json::STR || cn->s.find_first_of("()'\", =") != std::string::npos) return "";
    std::string args;
    if (cfg && cfg->kind == Json::OBJ)
        for (auto &kv : cfg->o) {
            if (kv.second.kind == Json::NUL || !keep(kv.first, kv.second)) continue;
            std::string v;
            if (!spec_value(kv.second, &v) || kv.first.find_first_not_of("abcdefghijklmnopqrstuvwxyz_0123456789") != std::string::npos)
                return "";
            args += (args.empty() ? "" : ", ") + kv.first + "=" + v;
        }
    return cn->s + "(" + args + ")";
}

/* Compiles m as the file's compile configuration says, when nnlite can. */
static void keras_compile(Model &m, const Json *opt, const Json *loss, const Json *metrics) {
    if (!opt || !loss || opt->kind == Json::NUL || loss->kind == Json::NUL) return;
    std::string o = keras_call(*opt, [](const std::string &k, const Json &v) {
        if (k == "name" || k == "ema_momentum" || k == "ema_overwrite_frequency" || k == "loss_scale_factor" ||
            k == "gradient_accumulation_steps" || k == "jit_compile" || k == "is_legacy_optimizer")
            return false;
        if (k == "use_ema") return v.kind != Json::BOOL || v.b; /* EMA on: refused below, so uncompiled */
        return true;
    });
    std::string l = keras_call(*loss, [](const std::string &k, const Json &) {
        return k == "from_logits" || k == "delta";
    });
    std::string ms;
    std::function<bool(const Json &)> add = [&](const Json &x) {
        if (x.kind == Json::NUL) return true;
        if (x.kind == Json::ARR) {
            for (auto &e : x.a)
                if (!add(e)) return false;
            return true;
        }
        std::string t;
        if (x.kind == Json::STR) t = x.s;
        else if (const Json *cn = x.kind == Json::OBJ ? x.get("class_name") : nullptr)
            t = cn->kind == Json::STR ? snake(cn->s.c_str()) : "";
        if (t.empty() || t.find_first_of("(),'\"") != std::string::npos) return false;
        ms += (ms.empty() ? "" : ", ") + t;
        return true;
    };
    if (o.empty() || l.empty() || (metrics && !add(*metrics))) return;
    try {
        m.compile(o.c_str(), l.c_str(), ms.c_str());
    } catch (const Error &) { /* as Keras: the model stays uncompiled */
    }
}

/* ---- The optimizer's state in Keras files ----------------------------------------
   Keras keeps an optimizer's state as a flat list of variables, saved and
   restored by position alone (set_weights and load_own_variables pair them
   by index and check shapes only). Three layouts:
   - Keras 3 (keras/src/optimizers/base_optimizer.py, 3.0 to 3.16):
     iteration (int64; int32 under JAX), learning_rate (float32), then what
     the optimizer's build() adds. In .keras: datasets optimizer/vars/0, 1,
     ... of model.weights.h5 (save_own_variables); in Keras 3's .h5: group
     optimizer_weights, its attribute weight_names the variables' paths
     ("adam/iteration", "adam/learning_rate",
     "adam/sequential_dense_kernel_momentum", ...) in that order
     (legacy_h5_format.save_optimizer_weights_to_hdf5_group).
   - tf.keras 2.11 to 2.15 and tf-keras (tf_keras/optimizers/optimizer.py):
     iteration (int64), then build()'s; no learning rate (training_config
     has it). .h5: optimizer_weights, weight_names "iteration:0",
     "Adam/m/dense/kernel:0", "Adam/v/dense/kernel:0", ...
   - tf.keras' legacy optimizers (optimizer_v2: the default before 2.11,
     tf.keras.optimizers.legacy.*): "Adam/iter:0", then the slots of
     _create_slots, "Adam/dense/kernel/m:0", ...
   The slots follow model.trainable_variables, the order of nnlite's slot
   arrays (layers in order, each one's trainable weights in order). Groups
   follow one another; inside a group the kinds interleave per weight
   (m0, v0, m1, v1, ...), as every Keras 3 release does (3.10's
   add_optimizer_variables kept that order on purpose, keras #21247):
     optimizer  Keras 3                       tf.keras 2.11+      legacy
     SGD        momentum (momentum != 0)      m (always)          momentum
     RMSprop    velocity | momentum (> 0) | average_gradient (centered);
                legacy: rms | momentum | mg
     Adagrad    accumulator                   accumulator         accumulator
     Adadelta   accumulated_grad+accumulated_delta_var            accum_grad | accum_var
     Adam(W)    momentum+velocity | velocity_hat (amsgrad)
                tf.keras: m+v | vhat; legacy: m | v | vhat (no AdamW)
     Adamax     momentum+norm                 m+u                 m | v
     Nadam      momentum+velocity, and the scalar u_product after
                them (3.10 on) or before them (3.0 to 3.9); tf.keras:
                m+v (u_product is not saved: nnlite computes it from the
                step count, as an uninterrupted run has it); legacy Nadam
                (a momentum_cache and Keras 2's schedule) is not mapped.
   ("a+b": interleaved, "a | b": groups.) These are nnlite's own slots with
   the same update rules, so training continues as in Keras. A list of
   another length than the model's optimizer makes (another optimizer or
   options, EMA, gradient accumulation) is skipped with a warning on stderr,
   as Keras skips it; a list of the head alone (an optimizer that never
   stepped) gives the step count and learning rate, the slots start fresh.
   A variable of the wrong kind or shape is NNL_ERR_FORMAT. */
enum class KerasOpt { K3, TF2, TF2_LEGACY };

/* One slot kind of a Keras optimizer: its name there and nnlite's slot
   array (-1: a variable nnlite has no use for, checked and dropped). */
struct KerasSlot {
    const char *name;
    int slot;
};

/* The slot variables of o in layout lay, as groups (see above); false,
   with *why, when nnlite cannot map them. */
static bool keras_slot_groups(const Optimizer &o, KerasOpt lay, std::vector<std::vector<KerasSlot>> *groups,
                              std::string *why) {
    const std::string c = o.cls();
    const bool k3 = lay == KerasOpt::K3, legacy = lay == KerasOpt::TF2_LEGACY;
    std::vector<std::vector<KerasSlot>> &g = *groups;
    g.clear();
    if (c == "SGD") {
        const double mom = static_cast<const SGD &>(o).momentum;
        if (lay == KerasOpt::TF2) g.push_back({{"m", mom > 0 ? 0 : -1}}); /* tf.keras builds it with momentum 0 too */
        else if (mom > 0) g.push_back({{"momentum", 0}});
    } else if (c == "RMSprop") {
        const RMSprop &r = static_cast<const RMSprop &>(o);
        g.push_back({{legacy ? "rms" : "velocity", 0}});
        if (r.momentum > 0) g.push_back({{"momentum", 1}});
        if (r.centered) g.push_back({{legacy ? "mg" : "average_gradient", 2}});
    } else if (c == "Adagrad") {
        g.push_back({{"accumulator", 0}});
    } else if (c == "Adadelta") {
        if (legacy) {
            g.push_back({{"accum_grad", 0}});
            g.push_back({{"accum_var", 1}});
        } else {
            g.push_back({{"accumulated_grad", 0}, {"accumulated_delta_var", 1}});
        }
    } else if (c == "Adam" || c == "AdamW") {
        if (legacy && c == "AdamW") {
            *why = "tf.keras' legacy optimizers have no AdamW";
            return false;
        }
        const char *mn = k3 ? "momentum" : "m", *vn = k3 ? "velocity" : "v";
        if (legacy) {
            g.push_back({{mn, 0}});
            g.push_back({{vn, 1}});
        } else {
            g.push_back({{mn, 0}, {vn, 1}});
        }
        if (static_cast<const Adam &>(o).amsgrad) g.push_back({{k3 ? "velocity_hat" : "vhat", 2}});
    } else if (c == "Adamax") {
        if (legacy) {
            g.push_back({{"m", 0}});
            g.push_back({{"v", 1}});
        } else {
            g.push_back({{k3 ? "momentum" : "m", 0}, {k3 ? "norm" : "u", 1}});
        }
    } else if (c == "Nadam") {
        if (legacy) {
            *why = "tf.keras' legacy Nadam keeps a momentum_cache and Keras 2's momentum schedule, not Keras 3's";
            return false;
        }
        g.push_back({{k3 ? "momentum" : "m", 0}, {k3 ? "velocity" : "v", 1}});
    } else {
        *why = "nnlite does not know the variables of " + c;
        return false;
    }
    return true;
}

/* A trainable weight and its place in the optimizer's slot arrays. */
struct KerasTrainable {
    const Layer *layer;
    const WeightSpec *w;
    int64_t off;
};

/* The trainable weights in Keras' model.trainable_variables order, which
   is the order of Model::slices. */
static std::vector<KerasTrainable> keras_trainable(const Model &m) {
    std::vector<KerasTrainable> v;
    int64_t off = 0;
    for (auto &l : m.layers)
        for (auto &w : l->weights)
            if (w.trainable) {
                v.push_back({l.get(), &w, off});
                off += w.shape.size();
            }
    return v;
}

/* One of Keras' optimizer variables. */
struct KerasOptVar {
    enum Kind { ITERATION, LEARNING_RATE, U_PRODUCT, SLOT } kind;
    const char *name; /* Keras' name of it (SLOT: of the slot kind) */
    int slot;         /* SLOT: nnlite's slot array, -1: none */
    size_t weight;    /* SLOT: index into keras_trainable */
};

/* The variables in Keras' order for layout lay: the head alone (iteration,
   and learning_rate in Keras 3) when full is false, else with the slots;
   u_first puts Nadam's u_product before the slots (Keras 3.0 to 3.9). */
static std::vector<KerasOptVar> keras_opt_plan(const std::vector<std::vector<KerasSlot>> &groups, size_t nweights,
                                               KerasOpt lay, bool nadam, bool full, bool u_first) {
    std::vector<KerasOptVar> p;
    p.push_back({KerasOptVar::ITERATION, lay == KerasOpt::TF2_LEGACY ? "iter" : "iteration", -1, 0});
    if (lay == KerasOpt::K3) p.push_back({KerasOptVar::LEARNING_RATE, "learning_rate", -1, 0});
    if (!full) return p;
    const bool up = nadam && lay == KerasOpt::K3;
    if (up && u_first) p.push_back({KerasOptVar::U_PRODUCT, "u_product", -1, 0});
    for (const auto &grp : groups)
        for (size_t i = 0; i < nweights; i++)
            for (const KerasSlot &s : grp) p.push_back({KerasOptVar::SLOT, s.name, s.slot, i});
    if (up && !u_first) p.push_back({KerasOptVar::U_PRODUCT, "u_product", -1, 0});
    return p;
}

/* What a variable is, for messages: "Adam's momentum of layer 'hidden'
   (Dense) weight 'kernel'". */
static std::string keras_opt_whose(const Optimizer &o, const KerasOptVar &v, const std::vector<KerasTrainable> &T) {
    if (v.kind != KerasOptVar::SLOT) return format("%s's %s", o.cls(), v.name);
    const KerasTrainable &t = T[v.weight];
    return format("%s's %s of layer '%s' (%s) weight '%s'", o.cls(), v.name, t.layer->name.c_str(), t.layer->cls,
                  t.w->name.c_str());
}

/* Nadam's u_product after t steps, computed as Nadam::after_step builds
   it step by step (bit for bit: the same products in the same order). */
static double nadam_u_product(const Nadam &n, int64_t t) {
    double p = 1.0;
    for (int64_t s = 1; s <= t && p != 0; s++) {
        double u = n.u((double)s);
        if (u == 1.0) break; /* beta_1 = 1: nothing changes from here on */
        if (s > ((int64_t)1 << 24)) { /* 0.96^s vanished long ago: u is beta_1 to the last bit */
            p *= std::pow(u, (double)(t - s + 1));
            break;
        }
        p *= u;
    }
    return p;
}

static void keras_opt_warn(const std::string &what, const std::string &why) {
    fprintf(stderr, "nnlite: warning: nnl_load_model: %s: %s; the optimizer starts with fresh slots\n", what.c_str(),
            why.c_str());
}

/* Loads the optimizer's state of a Keras file into m, compiled from the
   same file's configuration: the variables at paths below loc, in Keras'
   order, in layout lay; where names their group, for messages. Everything
   is read and checked before m changes. */
static void keras_opt_read(Model &m, hid_t loc, const std::vector<std::string> &paths, KerasOpt lay,
                           const std::string &what, const std::string &where) {
    if (!m.compiled || paths.empty()) return;
    Optimizer &o = *m.opt;
    std::vector<std::vector<KerasSlot>> groups;
    std::string why;
    if (!keras_slot_groups(o, lay, &groups, &why)) {
        keras_opt_warn(what, format("'%s' holds %zu optimizer variables that nnlite cannot map: %s", where.c_str(),
                                    paths.size(), why.c_str()));
        return;
    }
    const std::vector<KerasTrainable> T = keras_trainable(m);
    const bool nadam = std::string(o.cls()) == "Nadam";
    const std::vector<KerasOptVar> head = keras_opt_plan(groups, T.size(), lay, nadam, false, false);
    std::vector<KerasOptVar> plan = keras_opt_plan(groups, T.size(), lay, nadam, true, false);
    if (paths.size() == head.size()) {
        plan = head;
    } else if (paths.size() != plan.size()) {
        keras_opt_warn(what, format("'%s' holds %zu optimizer variables, but %s over the model's %zu trainable "
                                    "weights has %zu (another optimizer or options, EMA or gradient accumulation?); "
                                    "Keras skips them too", where.c_str(), paths.size(), o.config().c_str(), T.size(),
                                    plan.size()));
        return;
    }
    /* Nadam's u_product: a scalar where the first slot would be means
       Keras 3.0 to 3.9 (no trainable weight is a scalar) */
    if (nadam && plan.size() > head.size() && lay == KerasOpt::K3 && h5::dataset_rank(loc, paths[head.size()]) == 0)
        plan = keras_opt_plan(groups, T.size(), lay, nadam, true, true);
    const int64_t total = T.empty() ? 0 : T.back().off + T.back().w->shape.size();
    int64_t iterations = 0;
    double lr = 0, up = 1;
    bool has_lr = false, has_up = false;
    std::vector<std::vector<float>> slots;
    if (plan.size() > head.size()) slots.assign((size_t)o.nslots(), std::vector<float>((size_t)total, 0.f));
    std::vector<float> scratch;
    for (size_t i = 0; i < plan.size(); i++) {
        const KerasOptVar &v = plan[i];
        const std::string whose = keras_opt_whose(o, v, T);
        switch (v.kind) {
        case KerasOptVar::ITERATION: iterations = h5::read_count(loc, paths[i], what, whose); break;
        case KerasOptVar::LEARNING_RATE:
        case KerasOptVar::U_PRODUCT: {
            float x = 0;
            h5::read_floats(loc, paths[i], Shape(), &x, what, whose);
            const bool is_lr = v.kind == KerasOptVar::LEARNING_RATE;
            if (!std::isfinite(x) || x < 0 || (!is_lr && x > 1))
                raise(NNL_ERR_FORMAT, "%s: dataset '%s' (%s) is %g, not a %s", what.c_str(), printable(paths[i]).c_str(),
                      whose.c_str(), (double)x, is_lr ? "learning rate (finite, >= 0)" : "product of momenta in [0, 1]");
            (is_lr ? lr : up) = x;
            (is_lr ? has_lr : has_up) = true;
            break;
        }
        case KerasOptVar::SLOT: {
            const KerasTrainable &t = T[v.weight];
            float *dst;
            if (v.slot >= 0) {
                NNL_REQUIRE((size_t)v.slot < slots.size(), NNL_ERR_INTERNAL, "%s keeps %zu slot arrays, not %d",
                            o.cls(), slots.size(), v.slot + 1);
                dst = slots[(size_t)v.slot].data() + t.off;
            } else {
                scratch.resize((size_t)t.w->shape.size());
                dst = scratch.data();
            }
            h5::read_floats(loc, paths[i], t.w->shape, dst, what, whose);
            break;
        }
        }
    }
    o.iterations = iterations;
    /* the configuration's value when the file's float32 is its rounding */
    if (has_lr && (float)o.learning_rate != (float)lr) o.learning_rate = lr;
    o.slots = std::move(slots); /* none: laid out fresh at the first step */
    if (nadam) {
        Nadam &n = static_cast<Nadam &>(o);
        double exact = nadam_u_product(n, iterations);
        n.u_product = !has_up || (float)exact == (float)up ? exact : up;
    }
}

/* The layout of an .h5 file's optimizer_weights, told by the names of its
   first variables; false for another (standalone Keras 2's, ...). */
static bool keras_opt_layout(const std::vector<std::string> &names, KerasOpt *lay) {
    auto leaf = [](std::string s) {
        if (s.size() > 2 && s.compare(s.size() - 2, 2, ":0") == 0) s.resize(s.size() - 2);
        size_t slash = s.find_last_of('/');
        return slash == std::string::npos ? s : s.substr(slash + 1);
    };
    if (names.empty()) return false;
    const std::string first = leaf(names[0]);
    if (first == "iteration") {
        *lay = names.size() > 1 && leaf(names[1]) == "learning_rate" ? KerasOpt::K3 : KerasOpt::TF2;
        return true;
    }
    if (first == "iter") {
        *lay = KerasOpt::TF2_LEGACY;
        return true;
    }
    return false;
}

/* A legacy .h5 model (model.save("m.h5")). */
static void load_keras_h5(Model &m, const std::vector<uint8_t> &bytes, const std::string &what) {
    h5::Session hs;
    h5::File f(bytes.data(), bytes.size(), what);
    if (H5Aexists(f.root(), "model_config") <= 0)
        raise(NNL_ERR_FORMAT, "%s: no model_config attribute: a weights-only .h5 file (model.save_weights)? "
              "nnl_load_model reads whole models (model.save)", what.c_str());
    Json arch;
    keras_arch(m, h5::attr_text(f.root(), "model_config", what), bytes.size(), what, "model_config", &arch);
    h5::Id mw = h5::open_group(f.root(), "model_weights", what);
    std::vector<std::string> names = h5::attr_strings(mw.get(), "layer_names", what);
    /* Keras pairs the file's layers that have weights with the model's, in order */
    std::vector<std::pair<std::string, std::vector<std::string>>> file_layers;
    for (auto &n : names) {
        h5::Id g = h5::open_group(mw.get(), n, what);
        std::vector<std::string> wn = h5::attr_strings(g.get(), "weight_names", what);
        if (!wn.empty()) file_layers.push_back({n, std::move(wn)});
    }
    std::vector<const Layer *> mine;
    for (auto &l : m.layers)
        if (!l->weights.empty()) mine.push_back(l.get());
    if (file_layers.size() != mine.size())
        raise(NNL_ERR_FORMAT, "%s: model_weights holds weights for %zu layers, its model_config has %zu layers "
              "with weights", what.c_str(), file_layers.size(), mine.size());
    Staged st;
    for (size_t i = 0; i < mine.size(); i++) {
        const Layer &l = *mine[i];
        const auto &fl = file_layers[i];
        if (fl.second.size() != l.weights.size())
            raise(NNL_ERR_FORMAT, "%s: layer '%s' has %zu weights in model_weights, the %s layer '%s' has %zu",
                  what.c_str(), printable(fl.first).c_str(), fl.second.size(), l.cls, l.name.c_str(), l.weights.size());
        h5::Id g = h5::open_group(mw.get(), fl.first, what);
        for (size_t k = 0; k < l.weights.size(); k++)
            h5::read_floats(g.get(), fl.second[k], l.weights[k].shape, st.add(l.weights[k].shape), what,
                            format("layer '%s' (%s) weight '%s'", l.name.c_str(), l.cls, l.weights[k].name.c_str()));
    }
    size_t at = 0;
    for (const Layer *l : mine)
        for (auto &w : l->weights) memcpy(w.w, st.v[at++].data(), (size_t)w.shape.size() * sizeof(float));
    if (H5Aexists(f.root(), "training_config") > 0) {
        Json tc = parse_json_or_null(h5::attr_text(f.root(), "training_config", what));
        if (tc.kind == Json::OBJ) keras_compile(m, tc.get("optimizer_config"), tc.get("loss"), tc.get("metrics"));
    }
    /* the optimizer's variables, in the order of their weight_names */
    if (m.compiled && h5::exists(f.root(), "optimizer_weights")) {
        h5::Id og = h5::open_group(f.root(), "optimizer_weights", what);
        std::vector<std::string> onames = h5::attr_strings(og.get(), "weight_names", what);
        KerasOpt lay = KerasOpt::K3;
        if (keras_opt_layout(onames, &lay))
            keras_opt_read(m, og.get(), onames, lay, what, "optimizer_weights");
        else if (!onames.empty())
            keras_opt_warn(what, format("optimizer_weights starts with '%s', a layout nnlite does not know (it reads "
                                        "Keras 3's, tf.keras 2.x's and tf.keras' legacy optimizers')",
                                        printable(onames[0]).c_str()));
    }
}

/* A Keras 3 .keras model (model.save("m.keras")): a zip of config.json,
   metadata.json and model.weights.h5. */
static void load_keras_zip(Model &m, const std::vector<uint8_t> &bytes, const io::Zip &z, const std::string &what) {
    const io::ZipEntry *ce = z.find("config.json"), *we = z.find("model.weights.h5");
    if (!we)
        raise(z.find("model.weights.npz") ? NNL_ERR_UNSUPPORTED : NNL_ERR_FORMAT,
              "%s: no model.weights.h5 in the archive (members: %s)%s", what.c_str(), z.keys().c_str(),
              z.find("model.weights.npz") ? ": weights_format='npz' is not read by this version" : "");
    std::vector<uint8_t> cstore, wstore;
    auto c = z.member(*ce, cstore);
    Json arch;
    keras_arch(m, std::string((const char *)c.first, c.second), bytes.size(), what, "config.json", &arch);
    std::vector<std::string> classes = keras_layer_classes(arch);
    if (classes.size() != m.layers.size())
        raise(NNL_ERR_FORMAT, "%s: config.json lists %zu layers, the model built from it has %zu", what.c_str(),
              classes.size(), m.layers.size());
    auto w = z.member(*we, wstore);
    h5::Session hs;
    h5::File f(w.first, w.second, what + " member 'model.weights.h5'");
    const std::string &fw = f.what();
    std::map<std::string, int> used;
    Staged st;
    for (size_t i = 0; i < m.layers.size(); i++) {
        const Layer &l = *m.layers[i];
        const std::string &cls = classes[i];
        std::string key = snake(cls.c_str());
        int n = used.count(key) ? ++used[key] : (used[key] = 0);
        if (n) key += format("_%d", n);
        std::vector<std::string> parts; /* the groups holding the layer's vars, in get_weights() order */
        if (cls == "SimpleRNN" || cls == "LSTM" || cls == "GRU") parts = {"layers/" + key + "/cell/vars"};
        else if (cls == "Bidirectional")
            parts = {"layers/" + key + "/forward_layer/cell/vars", "layers/" + key + "/backward_layer/cell/vars"};
        else if (cls == "TimeDistributed") parts = {"layers/" + key + "/layer/vars"};
        else parts = {"layers/" + key + "/vars"};
        const size_t per = l.weights.size() / parts.size();
        for (size_t p = 0; p < parts.size(); p++) {
            hsize_t have = h5::links(f.root(), parts[p], fw);
            if (have != per)
                raise(NNL_ERR_FORMAT, "%s: '%s' holds %llu variables, the %s layer '%s' (%zu in the model) has %zu",
                      fw.c_str(), parts[p].c_str(), (unsigned long long)have, l.cls, l.name.c_str(), i, per);
            for (size_t k = 0; k < per; k++) {
                const WeightSpec &ws = l.weights[p * per + k];
                h5::read_floats(f.root(), parts[p] + format("/%zu", k), ws.shape, st.add(ws.shape), fw,
                                format("layer '%s' (%s) weight '%s'", l.name.c_str(), l.cls, ws.name.c_str()));
            }
        }
    }
    size_t at = 0;
    for (auto &l : m.layers)
        for (auto &ws : l->weights) memcpy(ws.w, st.v[at++].data(), (size_t)ws.shape.size() * sizeof(float));
    const Json *cc = arch.get("compile_config");
    if (cc && cc->kind == Json::OBJ) keras_compile(m, cc->get("optimizer"), cc->get("loss"), cc->get("metrics"));
    if (m.compiled) { /* the optimizer's variables: optimizer/vars/0, 1, ... */
        hsize_t n = h5::links(f.root(), "optimizer/vars", fw);
        std::vector<std::string> paths;
        for (hsize_t i = 0; i < n; i++) paths.push_back(format("optimizer/vars/%llu", (unsigned long long)i));
        keras_opt_read(m, f.root(), paths, KerasOpt::K3, fw, "optimizer/vars");
    }
}

/* ---- Writing Keras files: nnl_save_model to a path ending in .keras or .h5 ----
   The layouts the readers above take, as Keras writes them, so that
   keras.models.load_model opens them: .h5 as tf.keras 2.x (model_config in
   tf.keras 2.15's JSON, which Keras 3 reads too; weight_names
   "<layer>/<weight>:0", cells "<layer>/<cell>/<weight>:0"), .keras as Keras
   3 (config.json in Keras 3's JSON: module and registered_name fields,
   DTypePolicy objects, batch_shape; vars groups for every layer, the model
   and the cells). A compiled model carries its compile configuration
   (keras_compile_json) and its optimizer's state in Keras' variables
   (keras_opt_write: Keras 3's in .keras, tf.keras 2.15's in .h5); the
   history and the RNG state are not written (Keras has no place for them). */
namespace h5w {

/* A group at path below loc, with the groups above it. */
static h5::Id group(hid_t loc, const std::string &path) {
    h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    h5::Id g(H5Gcreate2(loc, path.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    if (!g.ok()) raise(NNL_ERR_INTERNAL, "HDF5 cannot create group '%s'", path.c_str());
    return g;
}

/* Fixed-length byte strings, as h5py stores Python bytes: a scalar
   (scalar = true, one string) or a 1-D array; an empty list is an empty
   float64 array, as Keras writes it. width: at least this many bytes per
   string (numpy's one width for all chunks of a list). */
static void attr(hid_t obj, const char *name, const std::vector<std::string> &v, bool scalar, size_t width = 1) {
    size_t len = std::max<size_t>(1, width);
    for (auto &s : v) len = std::max(len, s.size());
    const bool empty = !scalar && v.empty();
    h5::Id t(empty ? H5Tcopy(H5T_IEEE_F64LE) : H5Tcopy(H5T_C_S1), H5Tclose);
    if (!empty) {
        H5Tset_size(t.get(), len);
        H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
    }
    hsize_t n = v.size();
    h5::Id sp(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr), H5Sclose);
    h5::Id a(H5Acreate2(obj, name, t.get(), sp.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    std::string buf(len * v.size(), '\0');
    for (size_t i = 0; i < v.size(); i++) memcpy(&buf[i * len], v[i].data(), v[i].size());
    if (!a.ok() || (!empty && H5Awrite(a.get(), t.get(), buf.data()) < 0))
        raise(NNL_ERR_INTERNAL, "HDF5 cannot write attribute '%s'", name);
}

/* A list of strings as Keras' save_attributes_to_hdf5_group writes it: one
   attribute, or, when that would pass HDF5's object header limit (64512
   bytes), chunks name0, name1, ... as numpy's array_split cuts the list
   (the first n % k chunks one longer), all of the list's string width. */
static void attr_list(hid_t obj, const std::string &name, const std::vector<std::string> &v) {
    const size_t limit = 64512;
    size_t len = 1;
    for (auto &s : v) len = std::max(len, s.size());
    const size_t n = v.size();
    size_t k = 1;
    while (k < n && (n + k - 1) / k * len > limit) k++;
    if (k == 1) {
        attr(obj, name.c_str(), v, false);
        return;
    }
    size_t at = 0;
    for (size_t c = 0; c < k; c++) {
        size_t take = n / k + (c < n % k ? 1 : 0);
        std::vector<std::string> part(v.begin() + (ptrdiff_t)at, v.begin() + (ptrdiff_t)(at + take));
        attr(obj, (name + std::to_string(c)).c_str(), part, false, len);
        at += take;
    }
}

/* A scalar int64 dataset at path below loc (Keras' iteration counter). */
static void step_count(hid_t loc, const std::string &path, int64_t v) {
    h5::Id sp(H5Screate(H5S_SCALAR), H5Sclose);
    h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    h5::Id d(H5Dcreate2(loc, path.c_str(), H5T_STD_I64LE, sp.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    long long x = (long long)v;
    if (!d.ok() || H5Dwrite(d.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, &x) < 0)
        raise(NNL_ERR_INTERNAL, "HDF5 cannot write dataset '%s'", path.c_str());
}

/* A float32 dataset at path below loc (groups above it made). */
static void floats(hid_t loc, const std::string &path, const Shape &s, const float *x) {
    hsize_t dims[NNL_MAX_RANK];
    for (int i = 0; i < s.rank; i++) dims[i] = (hsize_t)s.d[i];
    h5::Id sp(s.rank ? H5Screate_simple(s.rank, dims, nullptr) : H5Screate(H5S_SCALAR), H5Sclose);
    h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    h5::Id d(H5Dcreate2(loc, path.c_str(), H5T_IEEE_F32LE, sp.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    if (!d.ok() || (s.size() && H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0))
        raise(NNL_ERR_INTERNAL, "HDF5 cannot write dataset '%s'", path.c_str());
}

/* An HDF5 file made in memory; bytes() is its image once written. */
class File {
    h5::Id file_;

public:
    File() {
        h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
        H5Pset_fapl_core(fapl.get(), 1 << 16, 0);
        file_ = h5::Id(H5Fcreate("nnlite-image.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
        if (!file_.ok()) raise(NNL_ERR_MEMORY, "HDF5 cannot create a file in memory");
    }
    hid_t root() const { return file_.get(); }
    std::string bytes() {
        H5Fflush(file_.get(), H5F_SCOPE_GLOBAL);
        ssize_t n = H5Fget_file_image(file_.get(), nullptr, 0);
        if (n <= 0) raise(NNL_ERR_INTERNAL, "HDF5 gives no file image");
        std::string out((size_t)n, '\0');
        if (H5Fget_file_image(file_.get(), &out[0], (size_t)n) != n) raise(NNL_ERR_INTERNAL, "HDF5 gives no file image");
        return out;
    }
};

} // namespace h5w

/* The cell's name of a recurrent layer class, as Keras names the weights'
   scope (lstm_cell); "" for other classes. */
static std::string cell_scope(const char *cls) {
    std::string c = cls;
    return c == "SimpleRNN" ? "simple_rnn_cell" : c == "LSTM" ? "lstm_cell" : c == "GRU" ? "gru_cell" : "";
}

/* A weight's name in a tf.keras 2.x .h5, without the ":0": "dense/kernel",
   cells "lstm/lstm_cell/kernel"; Bidirectional's carry their direction
   ("bi/forward_lstm/kernel"; Keras reads weights by their order in
   weight_names, not their names). */
static std::string keras_h5_weight_name(const Layer &l, const WeightSpec &w) {
    std::string cell = cell_scope(l.cls);
    return l.name + "/" + (cell.empty() ? "" : cell + "/") + w.name;
}

/* The optimizer's variables of a compiled m in Keras' layout lay: K3 as
   .keras datasets optimizer/vars/<i> below root, TF2 as tf.keras 2.15's
   .h5 group optimizer_weights (weight_names "iteration:0",
   "Adam/m/dense/kernel:0", ...). An optimizer that has not stepped (no
   slots laid out yet) writes the head alone, as Keras saves one that was
   never built. The slots are the host's (a GPU model's are copied back
   after every fit, as for nnlite's own files). */
static void keras_opt_write(const Model &m, hid_t root, KerasOpt lay) {
    const Optimizer &o = *m.opt;
    std::vector<std::vector<KerasSlot>> groups;
    std::string why;
    if (!keras_slot_groups(o, lay, &groups, &why)) raise(NNL_ERR_INTERNAL, "%s", why.c_str());
    const std::vector<KerasTrainable> T = keras_trainable(m);
    const int64_t total = T.empty() ? 0 : T.back().off + T.back().w->shape.size();
    const int ns = o.nslots();
    const bool laid = (int)o.slots.size() == ns && (ns == 0 || (int64_t)o.slots[0].size() == total);
    const bool full = ns > 0 ? laid : o.iterations > 0;
    const bool nadam = std::string(o.cls()) == "Nadam", k3 = lay == KerasOpt::K3;
    const std::vector<KerasOptVar> plan = keras_opt_plan(groups, T.size(), lay, nadam, full, false);
    h5::Id og;
    hid_t at = root;
    if (!k3) {
        og = h5w::group(root, "optimizer_weights");
        at = og.get();
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < plan.size(); i++) {
        const KerasOptVar &v = plan[i];
        std::string path;
        if (k3) path = "optimizer/vars/" + std::to_string(i);
        else if (v.kind == KerasOptVar::SLOT)
            path = std::string(o.cls()) + "/" + v.name + "/" + keras_h5_weight_name(*T[v.weight].layer, *T[v.weight].w) + ":0";
        else path = std::string(v.name) + ":0";
        names.push_back(path);
        switch (v.kind) {
        case KerasOptVar::ITERATION: h5w::step_count(at, path, o.iterations); break;
        case KerasOptVar::LEARNING_RATE: {
            const float x = (float)o.learning_rate;
            h5w::floats(at, path, Shape(), &x);
            break;
        }
        case KerasOptVar::U_PRODUCT: {
            const float x = (float)static_cast<const Nadam &>(o).u_product;
            h5w::floats(at, path, Shape(), &x);
            break;
        }
        case KerasOptVar::SLOT: {
            const KerasTrainable &t = T[v.weight];
            if (v.slot >= 0 && (size_t)v.slot < o.slots.size()) {
                h5w::floats(at, path, t.w->shape, o.slots[(size_t)v.slot].data() + t.off);
            } else { /* tf.keras' SGD momentum with momentum 0: never read */
                std::vector<float> zero((size_t)t.w->shape.size(), 0.f);
                h5w::floats(at, path, t.w->shape, zero.data());
            }
            break;
        }
        }
    }
    if (!k3) h5w::attr_list(at, "weight_names", names);
}

/* The compile configuration of m as Keras serialises it: the optimizer as
   {"class_name": "Adam", "config": {...}} (nnlite's own configuration of it,
   so every option it runs with), the loss by name or, with options, as its
   class, the metrics without options by name (one with options, as
   top_k_categorical_accuracy(k=3), is left out: Keras' name alone would
   mean other options). keras3: Keras 3's module fields. */
static Json keras_compile_json(const Model &m, bool keras3, Json *metrics_out) {
    auto plain = [](const Spec &sp, const char *cls, bool k3, const char *module) {
        Json cfg = Json::object();
        for (auto &kv : sp.kw) {
            const Value &v = kv.second;
            if (v.kind == Value::NUM) cfg.set(kv.first, Json::number(v.num));
            else if (v.kind == Value::BOOL) cfg.set(kv.first, Json::boolean(v.num != 0));
            else if (v.kind == Value::STR) cfg.set(kv.first, Json::string(v.str));
        }
        Json j = Json::object();
        if (k3) j.set("module", Json::string(module));
        j.set("class_name", Json::string(cls)).set("config", cfg);
        if (k3) j.set("registered_name", Json());
        return j;
    };
    Spec os = parse_spec(m.opt->config().c_str());
    Json opt = plain(os, m.opt->cls(), keras3, "keras.optimizers");
    Spec ls = parse_spec(m.compile_text[1].c_str());
    static const std::map<std::string, const char *> loss_cls = {
        {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"},
        {"categorical_crossentropy", "CategoricalCrossentropy"},
        {"binary_crossentropy", "BinaryCrossentropy"},
        {"mean_squared_error", "MeanSquaredError"},
        {"mean_absolute_error", "MeanAbsoluteError"},
        {"huber", "Huber"}};
    Json loss = Json::string(m.loss.name);
    auto lc = loss_cls.find(m.loss.name);
    if (!ls.kw.empty() && lc != loss_cls.end()) loss = plain(ls, lc->second, keras3, "keras.losses");
    Json mets = Json::array();
    std::string cur;
    int depth = 0;
    for (char c : m.compile_text[2] + ",") {
        if (c == '(') depth++;
        if (c == ')') depth--;
        if (c == ',' && depth == 0) {
            size_t b = cur.find_first_not_of(" "), e = cur.find_last_not_of(" ");
            if (b != std::string::npos && cur.find('(') == std::string::npos) mets.push(Json::string(cur.substr(b, e - b + 1)));
            cur.clear();
        } else {
            cur += c;
        }
    }
    *metrics_out = mets.a.empty() ? Json() : mets;
    return keras3 ? Json::object()
                        .set("optimizer", opt)
                        .set("loss", loss)
                        .set("loss_weights", Json())
                        .set("metrics", *metrics_out)
                        .set("weighted_metrics", Json())
                        .set("run_eagerly", Json::boolean(false))
                        .set("steps_per_execution", Json::integer(1))
                        .set("jit_compile", Json::boolean(false))
                  : Json::object()
                        .set("loss", loss)
                        .set("metrics", *metrics_out)
                        .set("weighted_metrics", Json())
                        .set("loss_weights", Json())
                        .set("optimizer_config", opt);
}

/* model.save("m.h5") of tf.keras 2.x */
static std::string keras_h5_bytes(const Model &m) {
    Json arch = model_json(m);
    Json mc = Json::object().set("class_name", *arch.get("class_name")).set("config", *arch.get("config"));
    h5::Session hs;
    h5w::File f;
    h5w::attr(f.root(), "backend", {"tensorflow"}, true);
    h5w::attr(f.root(), "keras_version", {KERAS_VERSION}, true);
    h5w::attr(f.root(), "model_config", {json_text(mc)}, true);
    if (m.compiled) {
        Json mets;
        h5w::attr(f.root(), "training_config", {json_text(keras_compile_json(m, false, &mets))}, true);
    }
    h5::Id mw = h5w::group(f.root(), "model_weights");
    std::vector<std::string> names;
    for (auto &l : m.layers) names.push_back(l->name);
    h5w::attr(mw.get(), "layer_names", names, false);
    h5w::attr(mw.get(), "backend", {"tensorflow"}, true);
    h5w::attr(mw.get(), "keras_version", {KERAS_VERSION}, true);
    for (auto &l : m.layers) {
        h5::Id g = h5w::group(mw.get(), l->name);
        std::vector<std::string> wn;
        for (auto &w : l->weights) wn.push_back(keras_h5_weight_name(*l, w) + ":0");
        h5w::attr(g.get(), "weight_names", wn, false);
        for (size_t k = 0; k < l->weights.size(); k++) h5w::floats(g.get(), wn[k], l->weights[k].shape, l->weights[k].w);
    }
    if (m.compiled) keras_opt_write(m, f.root(), KerasOpt::TF2);
    return f.bytes();
}

/* Keras 3's JSON of one serialised object from tf.keras 2.x's: module and
   registered_name fields, DTypePolicy objects, batch_shape for
   batch_input_shape, no time_major; nested layers and initializers alike. */
static Json keras3_json(const Json &j, const char *module) {
    if (j.kind == Json::ARR) {
        Json out = Json::array();
        for (auto &x : j.a) out.push(keras3_json(x, module));
        return out;
    }
    if (j.kind != Json::OBJ) return j;
    const Json *cn = j.get("class_name"), *cfg = j.get("config");
    if (!cn || !cfg || cfg->kind != Json::OBJ) {
        Json out = Json::object();
        for (auto &kv : j.o) out.set(kv.first, keras3_json(kv.second, module));
        return out;
    }
    Json c = Json::object();
    for (auto &kv : cfg->o) {
        const std::string &k = kv.first;
        if (k == "time_major" || k == "ragged") continue;
        if (k == "batch_input_shape") c.set("batch_shape", kv.second);
        else if (k == "dtype" && kv.second.kind == Json::STR && cn->s != "InputLayer")
            c.set("dtype", Json::object()
                               .set("module", Json::string("keras"))
                               .set("class_name", Json::string("DTypePolicy"))
                               .set("config", Json::object().set("name", kv.second))
                               .set("registered_name", Json()));
        else if (k.size() > 12 && k.compare(k.size() - 12, 12, "_initializer") == 0)
            c.set(k, keras3_json(kv.second, "keras.initializers"));
        else if (k == "layer" || k == "backward_layer")
            c.set(k, keras3_json(kv.second, "keras.layers"));
        else c.set(k, kv.second);
    }
    return Json::object()
        .set("module", Json::string(module))
        .set("class_name", *cn)
        .set("config", c)
        .set("registered_name", Json());
}

/* model.save("m.keras") of Keras 3 */
static std::string keras_zip_bytes(const Model &m) {
    Json arch = model_json(m);
    Json layers = Json::array();
    for (auto &l : arch.get("config")->get("layers")->a) layers.push(keras3_json(l, "keras.layers"));
    Json policy = Json::object()
                      .set("module", Json::string("keras"))
                      .set("class_name", Json::string("DTypePolicy"))
                      .set("config", Json::object().set("name", Json::string("float32")))
                      .set("registered_name", Json());
    Json cfg = Json::object()
                   .set("name", Json::string("sequential"))
                   .set("trainable", Json::boolean(true))
                   .set("dtype", policy)
                   .set("layers", layers);
    Json shape = Json::array().push(Json());
    for (int i = 0; i < m.input.rank; i++) shape.push(m.var_len && i == 0 ? Json() : Json::integer(m.input.d[i]));
    Json top = Json::object()
                   .set("module", Json::string("keras"))
                   .set("class_name", Json::string("Sequential"))
                   .set("config", cfg)
                   .set("registered_name", Json())
                   .set("build_config", Json::object().set("input_shape", shape))
                   .set("compile_config", Json());
    if (m.compiled) {
        Json mets;
        top.o.back().second = keras_compile_json(m, true, &mets);
    }
    std::string h5;
    {
        h5::Session hs;
        h5w::File f;
        std::map<std::string, int> used;
        for (auto &l : m.layers) {
            std::string key = snake(l->cls);
            int n = used.count(key) ? ++used[key] : (used[key] = 0);
            if (n) key += format("_%d", n);
            const std::string base = "layers/" + key, cls = l->cls;
            std::vector<std::string> parts;
            if (cls == "SimpleRNN" || cls == "LSTM" || cls == "GRU") {
                h5w::group(f.root(), base + "/vars");
                parts = {base + "/cell/vars"};
            } else if (cls == "Bidirectional") {
                for (const char *d : {"/vars", "/backward_layer/vars", "/forward_layer/vars"}) h5w::group(f.root(), base + d);
                parts = {base + "/forward_layer/cell/vars", base + "/backward_layer/cell/vars"};
            } else {
                parts = {base + "/vars"};
            }
            const size_t per = l->weights.size() / parts.size();
            for (size_t p = 0; p < parts.size(); p++) {
                h5::Id g = h5w::group(f.root(), parts[p]);
                for (size_t k = 0; k < per; k++) {
                    const WeightSpec &w = l->weights[p * per + k];
                    h5w::floats(g.get(), std::to_string(k), w.shape, w.w);
                }
            }
        }
        h5w::group(f.root(), "vars");
        if (m.compiled) keras_opt_write(m, f.root(), KerasOpt::K3);
        h5 = f.bytes();
    }
    time_t now = time(nullptr);
    struct tm tmv;
    char date[32];
    localtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%d@%H:%M:%S", &tmv);
    Json meta = Json::object()
                    .set("keras_version", Json::string(KERAS3_VERSION))
                    .set("date_saved", Json::string(date))
                    .set("nnlite_version", Json::string(NNL_VERSION_STRING));
    return zip_stored({{"metadata.json", json_text(meta)}, {"config.json", json_text(top)}, {"model.weights.h5", h5}});
}
#endif /* NNL_HDF5 */

/* nnl_load_model: nnlite's own file, or Keras' .h5 / .keras, told by content. */
static void load_any_model(Model &m, const char *path) {
    NNL_REQUIRE(path, NNL_ERR_ARGUMENT, "path is NULL");
    std::vector<uint8_t> head(8, 0);
    {
        FILE *fp = fopen(path, "rb");
        if (!fp) raise(NNL_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
        head.resize(fread(head.data(), 1, head.size(), fp));
        fclose(fp);
    }
    if (!is_hdf5(head) && !is_zip(head)) return load_model(m, path);
    const std::string what = format("'%s'", path);
    std::vector<uint8_t> bytes;
    read_file(path, bytes);
    if (is_hdf5(bytes)) {
#ifdef NNL_HDF5
        return load_keras_h5(m, bytes, what);
#else
        no_hdf5(what, ".h5");
#endif
    }
    io::Zip z(bytes, path);
    if (!z.find("config.json"))
        raise(NNL_ERR_FORMAT, "%s is a zip archive without config.json: not a .keras model (members: %s)",
              what.c_str(), z.keys().c_str());
#ifdef NNL_HDF5
    load_keras_zip(m, bytes, z, what);
#else
    no_hdf5(what, ".keras");
#endif
}

/* nnl_save_model: Keras' .keras or .h5 when the path ends so, else nnlite's
   own format. */
static void save_any_model(const Model &m, const char *path) {
    NNL_REQUIRE(path && *path, NNL_ERR_ARGUMENT, "path is NULL or empty");
    const std::string p = path;
    const bool keras = ends_with(p, ".keras");
    if (!keras && !ends_with(p, ".h5")) return save_model(m, path);
    NNL_REQUIRE(m.has_input && !m.layers.empty(), NNL_ERR_STATE, "the model has no layers");
#ifdef NNL_HDF5
    save_atomic(path, keras ? keras_zip_bytes(m) : keras_h5_bytes(m));
#else
    raise(NNL_ERR_UNSUPPORTED, "cannot write '%s' as a Keras %s file: this build of nnlite has no HDF5 (Debian: "
          "apt-get install libhdf5-dev, then rebuild; make and CMake find it by pkg-config)", path,
          keras ? ".keras" : ".h5");
#endif
}

} // namespace files
} // namespace nnl

extern "C" {

NNL_API int64_t nnl_model_to_json(const nnl_model *m, char *buf, int64_t cap) {
    int64_t len = -1;
    nnl::guard(__func__, [&] {
        NNL_REQUIRE(m, NNL_ERR_ARGUMENT, "nnl_model_to_json: model handle is NULL");
        NNL_REQUIRE(cap <= 0 || buf, NNL_ERR_ARGUMENT, "nnl_model_to_json: buf is NULL");
        std::string s = nnl::files::json_text(nnl::files::model_json(*m));
        if (cap > 0) {
            size_t n = std::min((size_t)cap - 1, s.size());
            memcpy(buf, s.data(), n);
            buf[n] = 0;
        }
        len = (int64_t)s.size();
    });
    return len;
}

NNL_API int nnl_model_from_json(const char *json, nnl_model **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(json && out, NNL_ERR_ARGUMENT, "nnl_model_from_json: json or out is NULL");
        nnl::files::Json j = nnl::files::parse_json(json, strlen(json), "");
        std::unique_ptr<nnl_model> m(new nnl_model());
        nnl::files::model_from_json(*m, j);
        *out = m.release();
    });
}

NNL_API int nnl_save_weights(const nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m && path, NNL_ERR_ARGUMENT, "nnl_save_weights: model or path is NULL");
        if (!m->writer()) return; /* a distributed model: rank 0 writes */
        nnl::files::save_weights(*m, path);
    });
}

NNL_API int nnl_load_weights(nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m && path, NNL_ERR_ARGUMENT, "nnl_load_weights: model or path is NULL");
        nnl::Mutation nnl_mutation_(m);
        nnl::files::load_weights(*m, path);
    });
}

NNL_API int nnl_save_model(const nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m && path, NNL_ERR_ARGUMENT, "nnl_save_model: model or path is NULL");
        if (!m->writer()) return; /* a distributed model: rank 0 writes */
        nnl::files::save_any_model(*m, path);
    });
}

NNL_API int nnl_load_model(const char *path, nnl_model **out) {
    if (out) *out = nullptr;
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(path && out, NNL_ERR_ARGUMENT, "nnl_load_model: path or out is NULL");
        std::unique_ptr<nnl_model> m(new nnl_model());
        nnl::files::load_any_model(*m, path);
        *out = m.release();
    });
}

NNL_API int nnl_save_weights_npz(const nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m && path, NNL_ERR_ARGUMENT, "nnl_save_weights_npz: model or path is NULL");
        if (!m->writer()) return; /* a distributed model: rank 0 writes */
        nnl::files::save_weights_npz(*m, path);
    });
}

NNL_API int nnl_load_weights_npz(nnl_model *m, const char *path) {
    return nnl::guard(__func__, [&] {
        NNL_REQUIRE(m && path, NNL_ERR_ARGUMENT, "nnl_load_weights_npz: model or path is NULL");
        nnl::Mutation nnl_mutation_(m);
        nnl::files::load_weights_npz(*m, path);
    });
}

} /* extern "C" */

/* ========================================================================
   9  C ABI
   Every function body runs inside nnl::guard: no exception crosses.
   ======================================================================== */
using nnl::guard;
using nnl::raise;

/* guard adds the API function's name: "nnl_fit: model handle is NULL". */
#define NNL_CHECK_MODEL(m) NNL_REQUIRE(m, NNL_ERR_ARGUMENT, "model handle is NULL")

namespace nnl {
/* What this build has (nnl_has_feature, nnl_build_info). The SIMD entries
   say what the kernels use on this CPU: they are chosen at run time. */
struct Feature {
    const char *name;
    bool on;
};
static std::vector<Feature> build_features() {
    bool simd = NNL_X86 && !getenv("NNL_NO_SIMD"), avx2 = false, avx512 = false;
#if NNL_X86
    const char *cap = getenv("NNL_SIMD");
    avx2 = simd && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = simd && __builtin_cpu_supports("avx512f") && !(cap && !strcmp(cap, "avx2"));
#endif
    const bool thr = NNL_THREADS != 0; /* nnlite's own pool (section 1); OpenMP is not used */
#ifdef NNL_CUDA
    const bool cuda = true;
#else
    const bool cuda = false;
#endif
#ifdef NNL_MPI
    const bool mpi = true;
#else
    const bool mpi = false;
#endif
    return {{"stb", NNL_HAVE_STB != 0}, {"threads", thr},     {"cuda", cuda},
            {"mpi", mpi},               {"hdf5", NNL_HAVE_HDF5 != 0}, {"avx2", avx2},
            {"avx512f", avx512},        {"bf16", gemm::bf16::hardware()},
            {"images", NNL_HAVE_STB && NNL_HAVE_STB_WRITE}};
}
} // namespace nnl

extern "C" {

NNL_API const char *nnl_last_error(void) { return nnl::g_last_error.c_str(); }

NNL_API const char *nnl_status_string(int status) {
    static const char *const names[] = {"NNL_OK", "NNL_ERR_ARGUMENT", "NNL_ERR_SHAPE", "NNL_ERR_STATE",
                                        "NNL_ERR_IO", "NNL_ERR_FORMAT", "NNL_ERR_MEMORY", "NNL_ERR_UNSUPPORTED",
                                        "NNL_ERR_NUMERIC", "NNL_ERR_INTERNAL", "NNL_ERR_DISTRIBUTED",
                                        "NNL_ERR_DEVICE"};
    static_assert(sizeof names / sizeof names[0] == NNL_ERR_DEVICE + 1, "a status code without a name");
    return status >= 0 && status <= NNL_ERR_DEVICE ? names[status] : "NNL_UNKNOWN_STATUS";
}

NNL_API const char *nnl_version(void) { return NNL_VERSION_STRING; }
NNL_API int nnl_version_number(void) { return NNL_VERSION_NUMBER; }

NNL_API int nnl_has_feature(const char *name) {
    int on = -1;
    guard(__func__, [&] {
        std::vector<nnl::Feature> fs = nnl::build_features();
        std::string known;
        for (auto &f : fs) known += (known.empty() ? "" : ", ") + std::string(f.name);
        NNL_REQUIRE(name, NNL_ERR_ARGUMENT, "nnl_has_feature: name is NULL (known: %s)", known.c_str());
        for (auto &f : fs)
            if (!strcmp(name, f.name)) {
                on = f.on;
                return;
            }
        raise(NNL_ERR_ARGUMENT, "nnl_has_feature: unknown feature '%s' (known: %s)", name, known.c_str());
    });
    return on;
}

NNL_API const char *nnl_build_info(void) {
    static const std::string info = [] {
        std::string s = "nnlite " NNL_VERSION_STRING;
#if defined(__clang__)
        s += "; clang " __clang_version__;
#elif defined(__GNUC__)
        s += "; g++ " __VERSION__;
#endif
        s += nnl::format("; C++%ld", (long)__cplusplus);
        for (auto &f : nnl::build_features()) {
            s += nnl::format("; %s: %s", f.name, f.on ? "yes" : "no");
        }
        return s;
    }();
    return info.c_str();
}

NNL_API int nnl_init(int header_version_number) {
    return guard(__func__, [&] {
        int v = header_version_number;
        NNL_REQUIRE(v >= 0, NNL_ERR_ARGUMENT,
                    "nnl_init: %d is not a version number (MAJOR*10000 + MINOR*100 + PATCH); pass NNL_VERSION_NUMBER",
                    v);
        int major = v / 10000, minor = v % 10000 / 100, patch = v % 100;
        if (major != NNL_VERSION_MAJOR)
            raise(NNL_ERR_UNSUPPORTED,
                  "nnl_init: library %s cannot serve a program built against header %d.%d.%d (ABI major versions "
                  "differ); rebuild against this library's nnlite.h or load libnnlite.so.%d",
                  NNL_VERSION_STRING, major, minor, patch, major);
        if (minor > NNL_VERSION_MINOR)
            raise(NNL_ERR_UNSUPPORTED,
                  "nnl_init: library %s is older than the header %d.%d.%d the program was built against (it may "
                  "lack functions that header declares); install nnlite %d.%d or newer",
                  NNL_VERSION_STRING, major, minor, patch, major, minor);
    });
}

NNL_API int nnl_set_threads(int n) {
#if NNL_THREADS
    nnl::g_threads = n <= 0 ? 0 : std::min(n, NNL_MAX_THREADS);
#else
    (void)n;
#endif
    return NNL_OK;
}
NNL_API int nnl_get_threads(void) { return nnl::threads(); }

NNL_API nnl_model *nnl_model_create(void) {
    nnl_model *m = nullptr;
    guard(__func__, [&] { m = new nnl_model(); });
    return m;
}

NNL_API void nnl_model_free(nnl_model *m) { delete m; }

NNL_API int nnl_add(nnl_model *m, const char *spec) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add(spec);
    });
}

static std::string shape_tuple(int rank, const int64_t *shape) {
    NNL_REQUIRE(rank >= 1 && rank <= NNL_MAX_RANK && shape, NNL_ERR_ARGUMENT,
                "rank %d is not in 1..%d, or shape is NULL", rank, NNL_MAX_RANK);
    std::string s = "(";
    for (int i = 0; i < rank; i++) s += std::to_string((long long)shape[i]) + ",";
    return s + ")";
}

static std::string act_arg(const char *activation) {
    if (!activation || !*activation) return "None";
    NNL_REQUIRE(!strpbrk(activation, "'\"(),="), NNL_ERR_ARGUMENT, "bad activation name '%s'", activation);
    return std::string("'") + activation + "'";
}

NNL_API int nnl_add_input(nnl_model *m, int rank, const int64_t *shape) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add(("Input(shape=" + shape_tuple(rank, shape) + ")").c_str());
    });
}

NNL_API int nnl_add_dense(nnl_model *m, int units, const char *activation) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add(nnl::format("Dense(%d, activation=%s)", units, act_arg(activation).c_str()).c_str());
    });
}

NNL_API int nnl_add_activation(nnl_model *m, const char *activation) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        NNL_REQUIRE(activation, NNL_ERR_ARGUMENT, "nnl_add_activation: activation is NULL");
        m->add(("Activation(" + act_arg(activation) + ")").c_str());
    });
}

NNL_API int nnl_add_dropout(nnl_model *m, float rate) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add(("Dropout(" + nnl::c_num("%.9g", rate) + ")").c_str());
    });
}

NNL_API int nnl_add_flatten(nnl_model *m) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add("Flatten()");
    });
}

NNL_API int nnl_add_reshape(nnl_model *m, int rank, const int64_t *shape) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->add(("Reshape(" + shape_tuple(rank, shape) + ")").c_str());
    });
}

NNL_API int nnl_reset_states(nnl_model *m) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->reset_states();
    });
}

NNL_API int nnl_model_set_seed(nnl_model *m, uint64_t seed) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        if (seed == 0) {
            m->seeded = false;
            m->ensure_seed();
        } else {
            m->seed = seed;
            m->rng.reseed(seed);
            m->seeded = true;
        }
    });
}

NNL_API int nnl_layer_count(const nnl_model *m) { return m ? (int)m->layers.size() : 0; }

/* All weights, trainable or not: Keras' count_params() and "Total params". */
NNL_API int64_t nnl_param_count(const nnl_model *m) { return m ? m->param_total : 0; }

NNL_API int64_t nnl_trainable_param_count(const nnl_model *m) {
    int64_t n = 0;
    if (m)
        for (auto &l : m->layers) n += l->param_count(true);
    return n;
}

NNL_API int64_t nnl_non_trainable_param_count(const nnl_model *m) {
    return m ? m->param_total - nnl_trainable_param_count(m) : 0;
}

static int write_shape(const nnl::Shape &s, int64_t *shape) {
    if (shape)
        for (int i = 0; i < s.rank; i++) shape[i] = s.d[i];
    return s.rank;
}

/* -1, with nnl_last_error saying why, for a NULL model or one without input */
NNL_API int nnl_output_shape(const nnl_model *m, int64_t *shape) {
    int rank = -1;
    guard(__func__, [&] {
        NNL_CHECK_MODEL(m);
        NNL_REQUIRE(m->has_input, NNL_ERR_STATE, "the model has no input yet (add its layers first)");
        /* beside concurrent predictions (Python's predict asks first): a
           variable-length model's layers change with each call's length */
        nnl::Hold lk(m->infer_pool.own, m->var_len);
        rank = write_shape(m->out_shape(), shape);
        if (shape && m->layers.size() && m->layers.back()->var_out) shape[0] = -1; /* None: any length */
    });
    return rank;
}

NNL_API int nnl_input_shape(const nnl_model *m, int64_t *shape) {
    int rank = -1;
    guard(__func__, [&] {
        NNL_CHECK_MODEL(m);
        NNL_REQUIRE(m->has_input, NNL_ERR_STATE, "the model has no input yet (add its layers first)");
        nnl::Hold lk(m->infer_pool.own, m->var_len); /* as nnl_output_shape */
        rank = write_shape(m->input, shape);
        if (shape && m->var_len) shape[0] = -1; /* None: any length */
    });
    return rank;
}

NNL_API int nnl_summary(const nnl_model *m, FILE *f) {
    return guard(__func__, [&] {
        NNL_CHECK_MODEL(m);
        std::string s = m->summary();
        FILE *out = f ? f : stdout;
        NNL_REQUIRE(fwrite(s.data(), 1, s.size(), out) == s.size(), NNL_ERR_IO, "nnl_summary: write failed");
        fflush(out);
    });
}

NNL_API int64_t nnl_summary_string(const nnl_model *m, char *buf, int64_t cap) {
    int64_t len = -1;
    guard(__func__, [&] {
        NNL_CHECK_MODEL(m);
        NNL_REQUIRE(cap <= 0 || buf, NNL_ERR_ARGUMENT, "nnl_summary_string: buf is NULL");
        std::string s = m->summary();
        if (cap > 0) {
            size_t n = std::min((size_t)cap - 1, s.size());
            memcpy(buf, s.data(), n);
            buf[n] = 0;
        }
        len = (int64_t)s.size();
    });
    return len;
}

/* Weight tensor i in Keras get_weights() order: every tensor, trainable or
   not (BatchNormalization's moving statistics included), as the npz and
   model files hold them. fn names the API call for the messages. */
static nnl::WeightSpec &weight_at(const nnl_model *m, int i, const char *fn) {
    NNL_REQUIRE(m, NNL_ERR_ARGUMENT, "%s: model handle is NULL", fn);
    int k = 0;
    for (auto &l : m->layers)
        for (auto &w : l->weights)
            if (k++ == i) return w;
    raise(NNL_ERR_ARGUMENT, "%s: weight index %d is out of range (the model has %d weight tensors)", fn, i, k);
}

NNL_API int nnl_weight_count(const nnl_model *m) {
    int n = 0;
    if (m)
        for (auto &l : m->layers) n += (int)l->weights.size();
    return n;
}

NNL_API int nnl_weight_trainable(const nnl_model *m, int i, int *trainable) {
    return guard(__func__, [&] {
        nnl::WeightSpec &w = weight_at(m, i, "nnl_weight_trainable");
        NNL_REQUIRE(trainable, NNL_ERR_ARGUMENT, "nnl_weight_trainable: trainable is NULL");
        *trainable = w.trainable ? 1 : 0;
    });
}

NNL_API int nnl_weight_info(const nnl_model *m, int i, char *name, int name_cap, int *rank, int64_t *shape) {
    return guard(__func__, [&] {
        nnl::WeightSpec &w = weight_at(m, i, "nnl_weight_info");
        if (name && name_cap > 0) {
            std::string full;
            for (auto &l : m->layers)
                for (auto &x : l->weights)
                    if (&x == &w) full = l->name + "/" + w.name;
            snprintf(name, (size_t)name_cap, "%s", full.c_str());
        }
        if (rank) *rank = w.shape.rank;
        write_shape(w.shape, shape);
    });
}

NNL_API int nnl_get_weight(const nnl_model *m, int i, float *out, int64_t count) {
    return guard(__func__, [&] {
        nnl::WeightSpec &w = weight_at(m, i, "nnl_get_weight");
        NNL_REQUIRE(out, NNL_ERR_ARGUMENT, "nnl_get_weight: out is NULL");
        NNL_REQUIRE(count == w.shape.size(), NNL_ERR_SHAPE, "nnl_get_weight: weight %d has %lld values, not %lld", i,
                    (long long)w.shape.size(), (long long)count);
        memcpy(out, w.w, (size_t)count * sizeof(float));
    });
}

NNL_API int nnl_set_weight(nnl_model *m, int i, const float *in, int64_t count) {
    return guard(__func__, [&] {
        nnl::WeightSpec &w = weight_at(m, i, "nnl_set_weight");
        nnl::Mutation nnl_mutation_(m);
        NNL_REQUIRE(in, NNL_ERR_ARGUMENT, "nnl_set_weight: in is NULL");
        NNL_REQUIRE(count == w.shape.size(), NNL_ERR_SHAPE, "nnl_set_weight: weight %d has %lld values, not %lld", i,
                    (long long)w.shape.size(), (long long)count);
        for (int64_t k = 0; k < count; k++)
            NNL_REQUIRE(std::isfinite(in[k]), NNL_ERR_NUMERIC, "nnl_set_weight: in[%lld] is %g (weight %d)",
                        (long long)k, in[k], i);
        memcpy(w.w, in, (size_t)count * sizeof(float));
    });
}

NNL_API int nnl_compile(nnl_model *m, const char *optimizer, const char *loss, const char *metrics) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->compile(optimizer, loss, metrics);
    });
}

NNL_API int nnl_set_learning_rate(nnl_model *m, double lr) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        NNL_REQUIRE(m->compiled, NNL_ERR_STATE, "nnl_set_learning_rate: the model is not compiled");
        NNL_REQUIRE(lr >= 0 && std::isfinite(lr), NNL_ERR_ARGUMENT, "learning rate must be finite and >= 0");
        m->opt->learning_rate = lr;
    });
}

NNL_API double nnl_get_learning_rate(const nnl_model *m) {
    return m && m->compiled ? m->opt->learning_rate : NAN;
}

NNL_API void nnl_fit_options_init(nnl_fit_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->struct_size = (int)sizeof *o;
    o->epochs = 1;
    o->batch_size = 32;
    o->shuffle = 1;
    o->verbose = 1;
    o->y_val_dtype = NNL_FLOAT32;
    o->x_val_dtype = NNL_FLOAT32;
}

/* x of the typed calls as float32: x itself for NNL_FLOAT32, else a copy in
   buf, once per call (the batches are gathered from it as from float x).
   Integers must lie in [-2^24, 2^24], where float32 holds them exactly. The
   shape is checked first (check_x reads no data). */
namespace {
const float *typed_x(nnl_model *m, const void *x, int dtype, int rank, const int64_t *shape, const char *fn,
                     const char *arg, std::vector<float> &buf) {
    NNL_REQUIRE(dtype == NNL_FLOAT32 || dtype == NNL_INT32 || dtype == NNL_INT64, NNL_ERR_ARGUMENT,
                "%s: %s has dtype code %d; model inputs are NNL_FLOAT32, NNL_INT32 or NNL_INT64", fn, arg, dtype);
    if (dtype == NNL_FLOAT32) return (const float *)x;
    nnl::InputArray X = m->check_x((const float *)x, rank, shape, fn, arg);
    int64_t per = m->input.size(), n = X.n * per;
    buf.resize((size_t)n);
    const int64_t lim = (int64_t)1 << 24;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = dtype == NNL_INT32 ? (int64_t)((const int32_t *)x)[i] : ((const int64_t *)x)[i];
        if (v > lim || v < -lim)
            nnl::raise(NNL_ERR_ARGUMENT,
                       "%s: %s: sample %lld holds %lld (index %lld of the sample); integer inputs must lie in "
                       "[-2^24, 2^24], where float32 holds them exactly",
                       fn, arg, (long long)(i / per), (long long)v, (long long)(i % per));
        buf[(size_t)i] = (float)v;
    }
    return buf.data();
}
} // namespace

/* The user's callback, run in the caller's floating-point environment: fit
   itself runs in nnlite's (nnl::FpScope); what the callback leaves in the
   environment is what the caller gets back. */
namespace {
struct CallbackShim {
    nnl_callback cb;
    void *user;
    nnl::FpScope *fp;
};
int callback_shim(void *u, nnl_model *m, int event, int epoch, int64_t batch, const double *logs, int n_logs) {
    CallbackShim *s = (CallbackShim *)u;
    nnl::FpEnv work = nnl::fp_get();
    nnl::fp_set(s->fp->caller);
    int r = s->cb(s->user, m, event, epoch, batch, logs, n_logs);
    s->fp->caller = nnl::fp_get();
    nnl::fp_set(work);
    return r;
}
} // namespace

/* The float call and the typed one share this body under their own names. */
static int fit_any(const char *api, nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                          const void *y, int y_dtype, int y_rank, const int64_t *y_shape, const nnl_fit_options *opt) {
    return guard(api, [&] {
        NNL_MUTATING(m);
        nnl_fit_options o;
        nnl_fit_options_init(&o);
        if (m->dist) m->dist->where = "nnl_fit";
        std::vector<float> xb, vb;
        const float *x = nullptr;
        m->collective_checks([&] { /* a distributed model: every rank learns of any rank's error */
            if (opt) {
                /* Read only what the caller's version of the struct holds. */
                NNL_REQUIRE(opt->struct_size > 0, NNL_ERR_ARGUMENT,
                            "nnl_fit: options not initialised (call nnl_fit_options_init)");
                memcpy(&o, opt, std::min((size_t)opt->struct_size, sizeof o));
            }
            x = typed_x(m, xin, x_dtype, x_rank, x_shape, "nnl_fit", "x", xb);
            if (o.x_val)
                o.x_val = typed_x(m, o.x_val, o.x_val_dtype, o.x_val_rank, o.x_val_shape, "nnl_fit", "x_val", vb);
        });
        nnl::FpScope fp;
        CallbackShim shim{o.callback, o.callback_user, &fp};
        if (o.callback) {
            o.callback = callback_shim;
            o.callback_user = &shim;
        }
        m->fit(x, x_rank, x_shape, y, y_dtype, y_rank, y_shape, o, m);
    });
}

NNL_API int nnl_fit_typed(nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                          const void *y, int y_dtype, int y_rank, const int64_t *y_shape, const nnl_fit_options *opt) {
    return fit_any(__func__, m, xin, x_dtype, x_rank, x_shape, y, y_dtype, y_rank, y_shape, opt);
}

NNL_API int nnl_fit(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape, const void *y, int y_dtype,
                    int y_rank, const int64_t *y_shape, const nnl_fit_options *opt) {
    return fit_any("nnl_fit", m, x, NNL_FLOAT32, x_rank, x_shape, y, y_dtype, y_rank, y_shape, opt);
}

/* The float call and the typed one share this body under their own names. */
static int evaluate_any(const char *api, nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                               const void *y, int y_dtype, int y_rank, const int64_t *y_shape, int batch_size,
                               double *out, int out_cap) {
    return guard(api, [&] {
        NNL_MUTATING(m);
        std::vector<float> xb, T;
        nnl::InputArray X;
        if (m->dist) m->dist->where = "nnl_evaluate";
        m->collective_checks([&] { /* a distributed model: every rank learns of any rank's error */
            NNL_REQUIRE(m->compiled, NNL_ERR_STATE, "nnl_evaluate: the model is not compiled: call nnl_compile first");
            const float *x = typed_x(m, xin, x_dtype, x_rank, x_shape, "nnl_evaluate", "x", xb);
            X = m->check_x(x, x_rank, x_shape, "nnl_evaluate", "x");
            T = m->check_y(y, y_dtype, y_rank, y_shape, X.n, "nnl_evaluate", "y");
            NNL_REQUIRE(out || out_cap <= 0, NNL_ERR_ARGUMENT, "nnl_evaluate: out is NULL");
            m->check_finite(X.x, X.n, m->input.size(), "nnl_evaluate", "x");
        });
        nnl::FpScope fp; /* FTZ/DAZ while the kernels run; the caller's environment after */
        std::vector<double> r = m->evaluate(X.x, T.data(), X.n, batch_size > 0 ? batch_size : 32, "nnl_evaluate");
        for (int i = 0; i < out_cap && i < (int)r.size(); i++) out[i] = r[(size_t)i];
    });
}

NNL_API int nnl_evaluate_typed(nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                               const void *y, int y_dtype, int y_rank, const int64_t *y_shape, int batch_size,
                               double *out, int out_cap) {
    return evaluate_any(__func__, m, xin, x_dtype, x_rank, x_shape, y, y_dtype, y_rank, y_shape, batch_size, out, out_cap);
}

NNL_API int nnl_evaluate(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape, const void *y,
                         int y_dtype, int y_rank, const int64_t *y_shape, int batch_size, double *out, int out_cap) {
    return evaluate_any("nnl_evaluate", m, x, NNL_FLOAT32, x_rank, x_shape, y, y_dtype, y_rank, y_shape, batch_size, out,
                              out_cap);
}

/* The float call and the typed one share this body under their own names. */
static int predict_any(const char *api, nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                              int batch_size, float *out, int64_t out_count) {
    return guard(api, [&] {
        NNL_CHECK_MODEL(m);
        /* concurrent calls on m: in m or in one of its inference copies (Model::infer) */
        m->infer([&](nnl::Model &on, const std::atomic<int> *crowd) {
            std::vector<float> xb;
            const float *x = typed_x(m, xin, x_dtype, x_rank, x_shape, "nnl_predict", "x", xb);
            nnl::InputArray X = m->check_x(x, x_rank, x_shape, "nnl_predict", "x");
            int64_t need = nnl::mul_size(X.n, m->out_shape().size());
            NNL_REQUIRE(need >= 0 && need <= nnl::MAX_ELEMENTS, NNL_ERR_SHAPE,
                        "nnl_predict: %lld samples of %lld outputs each are more values than a process can address",
                        (long long)X.n, (long long)m->out_shape().size());
            NNL_REQUIRE(out, NNL_ERR_ARGUMENT, "nnl_predict: out is NULL");
            NNL_REQUIRE(out_count >= need, NNL_ERR_SHAPE, "nnl_predict: out holds %lld floats, %lld needed",
                        (long long)out_count, (long long)need);
            m->check_finite(X.x, X.n, m->input.size(), "nnl_predict", "x");
            nnl::FpScope fp; /* FTZ/DAZ while the kernels run; the caller's environment after */
            on.predict(X.x, X.n, batch_size > 0 ? batch_size : 32, out, "nnl_predict", crowd);
        });
    });
}

NNL_API int nnl_predict_typed(nnl_model *m, const void *xin, int x_dtype, int x_rank, const int64_t *x_shape,
                              int batch_size, float *out, int64_t out_count) {
    return predict_any(__func__, m, xin, x_dtype, x_rank, x_shape, batch_size, out, out_count);
}

NNL_API int nnl_predict(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape, int batch_size, float *out,
                        int64_t out_count) {
    return predict_any("nnl_predict", m, x, NNL_FLOAT32, x_rank, x_shape, batch_size, out, out_count);
}

/* argmax per row, batch by batch (no n x outputs buffer). A row holding a
   NaN has no class: refused, naming the sample, rather than returned as
   class 0 (argmax and "> 0.5" both answer confidently for NaN). classes is
   written only when every row has one. */
/* The float call and the typed one share this body under their own names. */
static int predict_classes_any(const char *api, nnl_model *m, const void *xin, int x_dtype, int x_rank,
                                      const int64_t *x_shape, int batch_size, int32_t *classes, int64_t count) {
    return guard(api, [&] {
        NNL_CHECK_MODEL(m);
        /* concurrent calls on m: in m or in one of its inference copies (Model::infer) */
        m->infer([&](nnl::Model &on, const std::atomic<int> *crowd) {
            std::vector<float> xb;
            const float *x = typed_x(m, xin, x_dtype, x_rank, x_shape, "nnl_predict_classes", "x", xb);
            nnl::InputArray X = m->check_x(x, x_rank, x_shape, "nnl_predict_classes", "x");
            NNL_REQUIRE(classes, NNL_ERR_ARGUMENT, "nnl_predict_classes: classes is NULL");
            NNL_REQUIRE(count >= X.n, NNL_ERR_SHAPE, "nnl_predict_classes: classes holds %lld values, %lld needed",
                        (long long)count, (long long)X.n);
            m->check_finite(X.x, X.n, m->input.size(), "nnl_predict_classes", "x");
            nnl::FpScope fp; /* FTZ/DAZ while the kernels run; the caller's environment after */
            int64_t D = m->out_shape().size();
            std::vector<int32_t> c((size_t)X.n);
            on.predict_rows(
                X.x, X.n, batch_size > 0 ? batch_size : 32, "nnl_predict_classes",
                [&](int64_t s, int64_t B, const float *y) {
                    for (int64_t b = 0; b < B; b++) {
                        const float *r = y + b * D;
                        for (int64_t j = 0; j < D; j++)
                            if (std::isnan(r[j]))
                                raise(NNL_ERR_NUMERIC,
                                      "nnl_predict_classes: the prediction for sample %lld is NaN (output "
                                      "%lld), so it has no class; its input is finite: check the weights "
                                      "(nnl_predict shows the outputs)",
                                      (long long)(s + b), (long long)j);
                        c[(size_t)(s + b)] =
                            D == 1 ? (r[0] > 0.5f ? 1 : 0) : (int32_t)(std::max_element(r, r + D) - r);
                    }
                },
                crowd);
            std::copy(c.begin(), c.end(), classes);
        });
    });
}

NNL_API int nnl_predict_classes_typed(nnl_model *m, const void *xin, int x_dtype, int x_rank,
                                      const int64_t *x_shape, int batch_size, int32_t *classes, int64_t count) {
    return predict_classes_any(__func__, m, xin, x_dtype, x_rank, x_shape, batch_size, classes, count);
}

NNL_API int nnl_predict_classes(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape, int batch_size,
                                int32_t *classes, int64_t count) {
    return predict_classes_any("nnl_predict_classes", m, x, NNL_FLOAT32, x_rank, x_shape, batch_size, classes, count);
}

NNL_API int nnl_history_epochs(const nnl_model *m) { return m ? m->hist_epochs : 0; }

NNL_API int nnl_history_key_count(const nnl_model *m) { return m ? (int)m->hist_keys.size() : 0; }

NNL_API const char *nnl_history_key(const nnl_model *m, int i) {
    if (!m || i < 0 || i >= (int)m->hist_keys.size()) return nullptr;
    return m->hist_keys[(size_t)i].c_str();
}

NNL_API int nnl_history_get(const nnl_model *m, const char *key, double *out, int cap) {
    int n = -1;
    guard(__func__, [&] {
        NNL_CHECK_MODEL(m);
        NNL_REQUIRE(key, NNL_ERR_ARGUMENT, "nnl_history_get: key is NULL");
        NNL_REQUIRE(out || cap <= 0, NNL_ERR_ARGUMENT, "nnl_history_get: out is NULL");
        for (size_t j = 0; j < m->hist_keys.size(); j++)
            if (m->hist_keys[j] == key) {
                for (int i = 0; i < cap && i < m->hist_epochs; i++) out[i] = m->hist[j][(size_t)i];
                n = m->hist_epochs;
                return;
            }
        raise(NNL_ERR_ARGUMENT, "history has no key '%s'", key);
    });
    return n;
}

NNL_API int nnl_history_clear(nnl_model *m) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        m->hist_keys.clear();
        m->hist.clear();
        m->hist_epochs = 0;
    });
}

/* ---- GPU (section 6b) ---- */
NNL_API int nnl_cuda_device_count(void) {
#ifdef NNL_CUDA
    return nnl_cuda::device_count();
#else
    return 0;
#endif
}

NNL_API int nnl_cuda_device_name(int device, char *buf, int cap) {
    return guard(__func__, [&] {
        NNL_REQUIRE(buf && cap > 0, NNL_ERR_ARGUMENT, "nnl_cuda_device_name: buf is NULL or cap <= 0");
        buf[0] = 0;
#ifdef NNL_CUDA
        int n = nnl_cuda::device_count();
        NNL_REQUIRE(device >= 0 && device < n, NNL_ERR_UNSUPPORTED, "nnl_cuda_device_name: no CUDA device %d (%d present)",
                    device, n);
        nnl_cuda::device_name(device, buf, (size_t)cap);
#else
        (void)device;
        raise(NNL_ERR_UNSUPPORTED, "nnl_cuda_device_name: this nnlite was built without CUDA (make CUDA=1)");
#endif
    });
}

NNL_API int nnl_set_device(nnl_model *m, const char *device) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        NNL_REQUIRE(device, NNL_ERR_ARGUMENT, "nnl_set_device: device is NULL");
        NNL_REQUIRE(!m->dist || nnl::parse_device(device) < 0 || !nnl::sync_bn_layers(*m, m->dist->flags),
                    NNL_ERR_UNSUPPORTED,
                    "nnl_set_device: a synchronised BatchNormalization (NNL_SYNC_BATCHNORM) runs on the CPU in this "
                    "version; distribute the model without it to train on a GPU");
        NNL_REQUIRE(!m->precision || nnl::parse_device(device) < 0, NNL_ERR_UNSUPPORTED,
                    "nnl_set_device: a model in mixed_bfloat16 (nnl_set_precision) runs on the CPU in this version; "
                    "set \"float32\" first");
#ifdef NNL_CUDA
        nnl::set_device(*m, device);
        m->replan(); /* inference copies are made again for the new place (a GPU model predicts alone) */
#else
        if (nnl::parse_device(device) < 0) return; /* "cpu"; a malformed string is NNL_ERR_ARGUMENT here too */
        std::string miss = nnl::gpu_missing_layers(*m); /* what the CUDA build would refuse as well */
        raise(NNL_ERR_UNSUPPORTED,
              "this nnlite was built without CUDA; rebuild with make CUDA=1 (or CMake -DNNLITE_CUDA=ON) to use '%s'%s%s%s",
              device, miss.empty() ? "" : " (and ", miss.c_str(),
              miss.empty() ? "" : miss.rfind("layers ", 0) == 0 ? " have no GPU path yet)" : " has no GPU path yet)");
#endif
    });
}

NNL_API const char *nnl_get_device(const nnl_model *m) {
#ifdef NNL_CUDA
    if (m && m->gpu) return m->gpu->name.c_str();
#endif
    return m ? "cpu" : "";
}

NNL_API int nnl_set_tf32(nnl_model *m, int on) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
#ifdef NNL_CUDA
        NNL_REQUIRE(m->gpu, NNL_ERR_STATE, "nnl_set_tf32: the model is on the CPU (call nnl_set_device first)");
        NNL_REQUIRE(!on || nnl_cuda::tf32_available(m->gpu->ctx), NNL_ERR_UNSUPPORTED,
                    "nnl_set_tf32: TF32 tensor cores need compute capability 8.0 or newer");
        nnl_cuda::set_tf32(m->gpu->ctx, on != 0);
#else
        (void)on;
        raise(NNL_ERR_STATE, "nnl_set_tf32: the model is on the CPU (this nnlite was built without CUDA)");
#endif
    });
}

NNL_API int nnl_set_precision(nnl_model *m, const char *policy) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        const char *known = "float32, mixed_bfloat16";
        NNL_REQUIRE(policy, NNL_ERR_ARGUMENT, "nnl_set_precision: policy is NULL (known: %s)", known);
        const nnl::Kernels *k = nullptr;
        if (!strcmp(policy, "float32")) {
            k = nullptr;
        } else if (!strcmp(policy, "mixed_bfloat16")) {
            NNL_REQUIRE(!m->gpu, NNL_ERR_UNSUPPORTED,
                        "nnl_set_precision: mixed_bfloat16 runs on the CPU only in this version (the model is on %s)",
                        nnl_get_device(m));
            if (nnl::gemm::bf16::hardware())
                k = &nnl::bf16_kernels;
            else if (nnl::gemm::bf16::emulate())
                k = &nnl::bf16_emulated_kernels;
            else
                raise(NNL_ERR_UNSUPPORTED,
                      "nnl_set_precision: mixed_bfloat16 needs the CPU feature AVX512-BF16 (avx512_bf16 in "
                      "/proc/cpuinfo: Intel Cooper Lake, Sapphire Rapids or newer, AMD Zen 4 or newer), which this "
                      "CPU lacks%s; the model stays float32",
                      getenv("NNL_NO_SIMD") || getenv("NNL_BF16")
                          ? " or the environment turns off (NNL_NO_SIMD, NNL_BF16=off)"
                          : "");
        } else {
            raise(NNL_ERR_ARGUMENT, "nnl_set_precision: unknown policy '%s' (known: %s)", policy, known);
        }
        if (k == m->precision) return;
        m->precision = k;
        m->plan_gen++; /* the inference copies are made again, with it */
    });
}

NNL_API const char *nnl_get_precision(const nnl_model *m) {
    if (!m) return "";
    return m->precision ? "mixed_bfloat16" : "float32";
}

/* ---- Data-parallel training over MPI (section 6c) ---- */
#ifndef NNL_MPI
static const char *const k_no_mpi =
    "%s: this nnlite was built without MPI; rebuild with make MPI=1 (or CMake -DNNLITE_MPI=ON), which needs an MPI "
    "(Debian: apt-get install libopenmpi-dev openmpi-bin)";
#else
static void distribute(nnl::Model &m, MPI_Comm c, bool world, int flags, const char *fn) {
    NNL_REQUIRE((flags & ~(NNL_DATA_LOCAL | NNL_GLOBAL_BATCH | NNL_SYNC_BATCHNORM)) == 0, NNL_ERR_ARGUMENT,
                "%s: unknown flags 0x%x (NNL_DATA_SHARDED, NNL_DATA_LOCAL, NNL_GLOBAL_BATCH, NNL_SYNC_BATCHNORM)", fn, (unsigned)flags);
    NNL_REQUIRE(!((flags & NNL_DATA_LOCAL) && (flags & NNL_GLOBAL_BATCH)), NNL_ERR_ARGUMENT,
                "%s: NNL_GLOBAL_BATCH splits the batches of one dataset over the ranks; with NNL_DATA_LOCAL each "
                "rank's batch size is its own",
                fn);
    NNL_REQUIRE(!m.gpu || !nnl::sync_bn_layers(m, flags), NNL_ERR_UNSUPPORTED,
                "%s: the model is on a GPU; a synchronised BatchNormalization (NNL_SYNC_BATCHNORM) runs on the CPU in "
                "this version (nnl_set_device(m, \"cpu\") first, or leave out NNL_SYNC_BATCHNORM)", fn);
    int init = 0, fin = 0, level = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    NNL_REQUIRE(!fin, NNL_ERR_STATE, "%s: MPI is already finalised", fn);
    if (!init) {
        NNL_REQUIRE(world, NNL_ERR_STATE, "%s: MPI is not initialised (MPI_Init_thread, or nnl_mpi_init)", fn);
        nnl::mpi_init(nullptr, nullptr);
    }
    MPI_Query_thread(&level);
    NNL_REQUIRE(level >= MPI_THREAD_FUNNELED, NNL_ERR_STATE,
                "%s: MPI was initialised with MPI_THREAD_SINGLE, but nnlite's kernels run on threads (only the "
                "calling thread makes MPI calls): initialise it with MPI_Init_thread(..., MPI_THREAD_FUNNELED, ...) "
                "or call nnl_mpi_init first",
                fn);
    if (c == MPI_COMM_NULL) {
        m.dist.reset();
        m.reducer.reset();
        return;
    }
    auto d = std::make_shared<nnl::Dist>();
    d->where = fn;
    /* a handle that is no communicator must come back as an error, not end
       the job: MPI reports it through MPI_COMM_WORLD's handler, which
       returns instead of aborting for this one call */
    MPI_Errhandler prev;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &prev);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc = MPI_Comm_dup(c, &d->comm); /* collective: every rank of c */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, prev);
    MPI_Errhandler_free(&prev);
    if (rc != MPI_SUCCESS) {
        d->comm = MPI_COMM_NULL;
        char buf[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, buf, &len);
        raise(NNL_ERR_ARGUMENT, "%s: comm is not a usable communicator (MPI_Comm_dup: %.*s)", fn, len, buf);
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    d->flags = flags;
    d->timeout = nnl::env_number("NNL_MPI_TIMEOUT", 600);
    const char *sp = getenv("NNL_MPI_SPARSE"); /* 0: row-sparse gradients travel dense (to compare) */
    d->sparse_on = !(sp && !strcmp(sp, "0"));
    /* Buckets sent while backward runs pay only where something moves the
       bytes meanwhile (a network). When every rank shares one node's
       memory, the ranks' own cores copy and add them, so nothing overlaps,
       and Open MPI 4.1's non-blocking allreduce (progressed only inside MPI
       calls) took 55-80 ms a step for T-PTB's 18.6 MB where one blocking
       MPI_Allreduce takes 16 ms (2 ranks, examples/mpi_train): there the
       default is no buckets, the whole arena at the reduction point. */
    MPI_Comm node = MPI_COMM_NULL;
    int node_size = 0;
    if (MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS &&
        node != MPI_COMM_NULL) {
        MPI_Comm_size(node, &node_size);
        MPI_Comm_rank(node, &d->local_rank); /* nnl_set_device's "cuda": this rank's device on the node */
        MPI_Comm_free(&node);
    }
    /* Open MPI built with CUDA: the gradients of a GPU model are reduced in
       device memory. Elsewhere (Debian's Open MPI, MPICH here) they are
       staged through pinned host memory. NNL_MPI_CUDA_AWARE=0 stages them
       always (to compare). */
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    {
        const char *ca = getenv("NNL_MPI_CUDA_AWARE");
        d->cuda_aware = MPIX_Query_cuda_support() == 1 && !(ca && !strcmp(ca, "0"));
    }
#endif
    { /* on every rank or none: the ranks' collectives depend on it (Dist::begin) */
        int ca = d->cuda_aware ? 1 : 0;
        nnl::mpi_ok(MPI_Allreduce(MPI_IN_PLACE, &ca, 1, MPI_INT, MPI_MIN, d->comm), fn);
        d->cuda_aware = ca != 0;
    }
    d->one_node = node_size == d->size;
    const char *mb = getenv("NNL_MPI_BUCKET_MB");
    d->bucket = (mb && *mb) || !d->one_node
                    ? std::max<int64_t>(1024, (int64_t)(nnl::env_number("NNL_MPI_BUCKET_MB", 4) * (1 << 20) / 4))
                    : nnl::MAX_ELEMENTS;
    m.dist = d;
    m.reducer = d;
#ifdef NNL_CUDA
    /* placed by "cuda" before it was distributed: now the rank's device on its node */
    if (m.gpu && m.gpu->unnumbered) {
        nnl::set_device(m, "cuda");
        m.replan();
    }
#endif
}
#endif

NNL_API int nnl_mpi_init(int *argc, char ***argv) {
    return guard(__func__, [&] {
#ifdef NNL_MPI
        nnl::mpi_init(argc, argv);
#else
        (void)argc;
        (void)argv;
        raise(NNL_ERR_UNSUPPORTED, k_no_mpi, "nnl_mpi_init");
#endif
    });
}

NNL_API int nnl_mpi_finalize(void) {
    return guard(__func__, [&] {
#ifdef NNL_MPI
        int fin = 0;
        MPI_Finalized(&fin);
        if (nnl::g_mpi_ours && !fin) nnl::mpi_ok(MPI_Finalize(), "nnl_mpi_finalize");
#else
        raise(NNL_ERR_UNSUPPORTED, k_no_mpi, "nnl_mpi_finalize");
#endif
    });
}

NNL_API int nnl_distribute(nnl_model *m, const void *comm, int flags) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
#ifdef NNL_MPI
        distribute(*m, comm ? *(const MPI_Comm *)comm : MPI_COMM_WORLD, comm == nullptr, flags, "nnl_distribute");
#else
        (void)comm;
        (void)flags;
        raise(NNL_ERR_UNSUPPORTED, k_no_mpi, "nnl_distribute");
#endif
    });
}

NNL_API int nnl_distribute_f(nnl_model *m, int fortran_comm, int flags) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
#ifdef NNL_MPI
        int init = 0;
        MPI_Initialized(&init);
        NNL_REQUIRE(init, NNL_ERR_STATE, "nnl_distribute_f: MPI is not initialised (call MPI_Init_thread first)");
        MPI_Comm c = MPI_Comm_f2c((MPI_Fint)fortran_comm);
        /* Open MPI answers an unknown handle with a NULL communicator */
        NNL_REQUIRE(c != (MPI_Comm)0, NNL_ERR_ARGUMENT, "nnl_distribute_f: %d is not a Fortran communicator handle",
                    fortran_comm);
        distribute(*m, c, false, flags, "nnl_distribute_f");
#else
        (void)fortran_comm;
        (void)flags;
        raise(NNL_ERR_UNSUPPORTED, k_no_mpi, "nnl_distribute_f");
#endif
    });
}

NNL_API int nnl_mpi_rank(const nnl_model *m, int *rank, int *size) {
    int r = 0, n = 1;
    if (m && m->dist) {
        r = m->dist->rank;
        n = m->dist->size;
    } else if (!m) {
#ifdef NNL_MPI
        int init = 0, fin = 0;
        MPI_Initialized(&init);
        MPI_Finalized(&fin);
        if (init && !fin) {
            MPI_Comm_rank(MPI_COMM_WORLD, &r);
            MPI_Comm_size(MPI_COMM_WORLD, &n);
        }
#endif
    }
    if (rank) *rank = r;
    if (size) *size = n;
    return NNL_OK;
}

NNL_API int nnl_scale_learning_rate(nnl_model *m) {
    return guard(__func__, [&] {
        NNL_MUTATING(m);
        NNL_REQUIRE(m->compiled && m->opt, NNL_ERR_STATE,
                    "nnl_scale_learning_rate: the model is not compiled: call nnl_compile first");
        m->opt->learning_rate *= m->dist ? m->dist->size : 1;
    });
}

} /* extern "C" */
