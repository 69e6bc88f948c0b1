/* nnlite.h - a small neural-network library with a stable C ABI.   v0.8.3

   nnlite trains and runs Keras-style neural networks from C, C++, Fortran and
   Python without a Python framework. Two files are all a project needs:

       nnlite.h     this header: the whole public API, valid C99 and C++
       nnlite.cpp   the CPU runtime (C++17), one file

   DROP-IN USE
       g++ -std=c++17 -O2 -pthread -c nnlite.cpp
       cc  -std=c99 -O2 -c app.c
       g++ -pthread app.o nnlite.o -o app

   BUILD OPTIONS (macros, set when compiling nnlite.cpp)
       NNL_NO_STB        build without stb: .gz idx files, deflated .npz
                         members and image files then fail with
                         NNL_ERR_UNSUPPORTED and a message naming the fix
                         (Debian: apt-get install libstb-dev).
                         By default nnlite.cpp uses <stb/stb_image.h> (libstb-dev)
                         or "stb_image.h" beside the sources when __has_include
                         finds one, and NNL_NO_STB otherwise; image writing
                         also needs stb_image_write.h, and PNG pictures' labels
                         stb_easy_font.h (both in libstb-dev), all compiled in
                         as static functions (no symbol clashes with a
                         program's own stb).
       NNL_MAX_IMAGE_PIXELS  most pixels (width * height) an image file may
                         announce (default 2^28); larger ones fail with
                         NNL_ERR_MEMORY before anything is decoded.
       NNL_NO_THREADS    a single-threaded build (no thread pool, no -pthread,
                         no locks: calls on one model never overlap there,
                         predictions included).
       NNL_KEEP_DENORMALS  compute in the caller's floating-point environment
                         as it is: no flush-to-zero (see "Floating-point
                         environment" below; slower where denormals are).
       NNL_MAX_THREADS   upper bound for nnl_set_threads (default 256).
       NNL_MAX_LAYERS    most layers a model may have (default 65536): nnl_add
                         beyond it, and a JSON architecture or model file with
                         more, fail with NNL_ERR_MEMORY.
       NNL_MAX_INFLATE   largest decompressed size, in bytes, of a .gz file or
                         deflated .npz member (default and maximum 2^31-1);
                         larger ones fail with NNL_ERR_UNSUPPORTED.
       NNL_MAX_JSON_PARAMS  most weights a model read from JSON or a model
                         file may have (default 2^31, as a double); a fuzzing
                         build sets it lower to stay in its memory limit.
       NNL_CUDA          the CUDA backend: also compile nnlite_cuda.cu with
                         nvcc and link cudart (make CUDA=1); see "GPU" below.
       NNL_HDF5          read Keras .keras and .h5 model files (nnl_load_model):
                         compile with HDF5's include folder and link -lhdf5
                         (Debian libhdf5-dev: pkg-config hdf5; make finds it by
                         itself, HDF5=0 leaves it out).
       A program asks a library what it was built with through
       nnl_has_feature() and nnl_build_info().

   EXAMPLE (XOR; error checks shortened to CHECK)
       #include "nnlite.h"
       #define CHECK(x) if ((x) != NNL_OK) { puts(nnl_last_error()); return 1; }
       float x[8] = {0,0, 0,1, 1,0, 1,1}, y[4] = {0,1,1,0}, p[4];
       int64_t xs[2] = {4, 2}, ys[2] = {4, 1};
       nnl_model *m = nnl_model_create();
       CHECK(nnl_add(m, "Dense(8, activation='tanh', input_shape=(2,))"));
       CHECK(nnl_add(m, "Dense(1, activation='sigmoid')"));
       CHECK(nnl_compile(m, "Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy"));
       nnl_fit_options o; nnl_fit_options_init(&o);
       o.epochs = 500; o.batch_size = 4; o.verbose = 0;
       CHECK(nnl_fit(m, x, 2, xs, y, NNL_FLOAT32, 2, ys, &o));
       CHECK(nnl_predict(m, x, 2, xs, 0, p, 4));
       nnl_model_free(m);

   CONVENTIONS
     - Every function that can fail returns an int status: NNL_OK (0) or one of
       the NNL_ERR_* codes below, and sets a message that nnl_last_error()
       returns. The message starts with the name of the function that failed
       ("nnl_fit: x: samples of shape (5,) do not fit the model's input (3,)").
       No C++ exception ever crosses this API; nothing aborts on bad input.
     - Arrays are plain pointers in row-major (C) order, samples first, with a
       rank and an int64_t shape. Inputs x are float32. Targets y carry a dtype
       code: NNL_FLOAT32 (one-hot rows, regression targets, 0/1 for binary
       cross-entropy) or an integer type (class ids for the sparse losses).
       Fortran's column-major x(features, samples) is this same memory.
     - Layer, optimizer and loss specifications are short strings in Keras'
       call syntax, e.g. "Dense(128, activation='relu')",
       "SGD(learning_rate=0.01, momentum=0.9, nesterov=True)". Positional and
       keyword arguments, numbers, quoted or bare strings, tuples and
       True/False/None are accepted; unknown names are an error naming them.
     - Sizes are checked where they enter (array shapes, spec strings,
       files) with overflow-safe arithmetic: a shape whose product overflows
       int64 or exceeds what a process can address (2^60 elements of an array
       given to a call, 2^40 values per sample or per weight tensor of a
       model) is refused with NNL_ERR_SHAPE naming the call, never a crash.
     - Handles are opaque. A handle must not be used from two threads at once;
       different handles may be used from different threads concurrently.
       The exception (since 0.5): nnl_predict, nnl_predict_classes and their
       _typed forms may be called on ONE model from many threads at once
       (e.g. inside an OpenMP parallel loop), while no other call on that
       model runs (nnl_fit, nnl_evaluate, nnl_compile, nnl_set_weight,
       loading weights, nnl_reset_states, nnl_set_device, nnl_model_free...);
       each call gives what it gives alone, bit for bit. See "Concurrent
       predictions" beside nnl_predict.
       nnl_last_error() is per thread. Functions documented as "thread-safe"
       may be called from any thread at any time.
     - Floating-point environment: nnl_fit, nnl_evaluate, nnl_predict and
       nnl_predict_classes compute with flush-to-zero and denormals-are-zero
       on every thread they use (and round-to-nearest, exceptions masked):
       denormal inputs, weights and optimizer state count as zero and
       results never become denormal (as in TensorFlow), because arithmetic
       on denormals is many times slower on some CPUs. The caller's own
       environment (x86 MXCSR, aarch64 FPCR/FPSR: rounding, traps, FTZ/DAZ,
       status flags) is restored when the call returns, and is the one a
       nnl_fit callback runs in. Other architectures, and a build with
       NNL_KEEP_DENORMALS: the caller's environment as it is, no flushing.

   WHAT IS NOT SUPPORTED (yet)
       Only Sequential models (a stack of layers, one input, one output).
       float32 arithmetic on the GPU (mixed_bfloat16 on the CPU only). MPI
       data parallelism (nnl_distribute) needs a build with MPI=1. The CUDA
       backend (see "GPU" below) runs
       dense and convolutional models on one GPU; the sequence layers
       (Embedding, Masking, SimpleRNN, LSTM and GRU, with dropout and
       recurrent_dropout too, and Bidirectional) have a GPU path, compiled
       but not yet run on a GPU. Models of any sequence length
       (input_shape=(None, ...)) run on the CPU only.
       nnl_has_feature() says what a given build has. The ABI grows by
       adding functions, never by changing these.
*/
#ifndef NNLITE_H
#define NNLITE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NNL_VERSION_MAJOR 0
#define NNL_VERSION_MINOR 8
#define NNL_VERSION_PATCH 3
#define NNL_VERSION_STRING "0.8.3"
/* MAJOR*10000 + MINOR*100 + PATCH, comparable with nnl_version_number(). */
#define NNL_VERSION_NUMBER (NNL_VERSION_MAJOR * 10000 + NNL_VERSION_MINOR * 100 + NNL_VERSION_PATCH)

#if defined(_WIN32) && defined(NNL_BUILD_SHARED)
#  define NNL_API __declspec(dllexport)
#elif defined(__GNUC__)
#  define NNL_API __attribute__((visibility("default")))
#else
#  define NNL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== Status codes and errors ============================================ */

enum {
    NNL_OK = 0,
    NNL_ERR_ARGUMENT = 1,    /* NULL handle or pointer, bad value, bad spec string */
    NNL_ERR_SHAPE = 2,       /* array shape does not fit the model or the other array */
    NNL_ERR_STATE = 3,       /* call out of order: fit before compile, add after compile... */
    NNL_ERR_IO = 4,          /* a file could not be opened, read or written */
    NNL_ERR_FORMAT = 5,      /* a file is truncated, corrupt or not of the expected kind */
    NNL_ERR_MEMORY = 6,      /* an allocation failed or a size exceeds sane limits */
    NNL_ERR_UNSUPPORTED = 7, /* feature not built in (e.g. no stb) or not implemented */
    NNL_ERR_NUMERIC = 8,     /* NaN or Inf in the loss or the weights; training stopped */
    NNL_ERR_INTERNAL = 9,    /* a bug in nnlite; please report the message */
    NNL_ERR_DISTRIBUTED = 10, /* since 0.4: another rank of a data-parallel run failed,
                                 left it or timed out (nnl_distribute) */
    NNL_ERR_DEVICE = 11       /* since 0.8: the GPU or its driver failed or is unusable
                                 (device lost, ECC error, kernel fault, driver too
                                 old, no kernel image for this GPU); see "GPU" */
};

/* The message of the last failing call on this thread ("" when none).
   Thread-safe. The pointer stays valid until the next nnlite call on this thread. */
NNL_API const char *nnl_last_error(void);

/* A short constant name for a status code, e.g. "NNL_ERR_SHAPE". Thread-safe. */
NNL_API const char *nnl_status_string(int status);

/* The library's version as "MAJOR.MINOR.PATCH" and as NNL_VERSION_NUMBER's
   encoding. Compare with the macros to detect a header/library mismatch.
   Thread-safe. */
NNL_API const char *nnl_version(void);
NNL_API int nnl_version_number(void);

/* What this build of the library has, so that callers need not probe for
   NNL_ERR_UNSUPPORTED. nnl_has_feature(name) is 1 when it has the feature,
   0 when not, and -1 for NULL or a name it does not know (nnl_last_error()
   then lists the known names). Names:
     "stb"      .gz idx files and deflated .npz members (NNL_NO_STB: 0)
     "threads"  the kernels run on several threads (nnlite's own pool;
                NNL_NO_THREADS: 0)
     "cuda"     the CUDA backend is compiled in (whether a GPU is present:
                nnl_cuda_device_count)
     "mpi"      data-parallel training over MPI (nnl_distribute; make MPI=1)
     "hdf5"     Keras .keras and .h5 model files (nnl_load_model; make
                HDF5=auto finds libhdf5-dev; since 0.7)
     "avx2", "avx512f"   the kernels use these instruction sets on this CPU
                (chosen at run time; NNL_NO_SIMD in the environment: 0)
     "bf16"     this CPU has AVX512-BF16, for nnl_set_precision's
                "mixed_bfloat16" (NNL_NO_SIMD, NNL_BF16=off or =emulate: 0;
                since 0.6)
     "images"   reading and writing image files (nnl_load_image,
                nnl_image_dataset_from_directory, nnl_save_image, PNG
                pictures; needs stb_image.h and stb_image_write.h; since 0.7)
   Thread-safe. */
NNL_API int nnl_has_feature(const char *name);
/* The same as one line for logs and bug reports: "nnlite 0.8.3; g++ 12.2.0;
   C++201703; stb: yes; threads: yes; cuda: no; mpi: no; hdf5: no; avx2:
   yes; avx512f: no; bf16: no; images: yes". Owned by the library, the
   same for the whole process (made at the first call). Thread-safe. */
NNL_API const char *nnl_build_info(void);

/* Version handshake: call once at start-up (or use NNL_INIT(), which passes
   this header's NNL_VERSION_NUMBER) before any other nnlite call.
   Returns NNL_OK when the library can serve code compiled against a header of
   version header_version_number: same MAJOR (the ABI version, also the
   SONAME's number) and a library MINOR at least the header's (a newer header
   may declare functions an older library lacks). Otherwise it returns
   NNL_ERR_UNSUPPORTED with a message naming both versions, e.g. "nnl_init:
   library 1.0.0 cannot serve a program built against header 0.2.0 (ABI major
   versions differ); rebuild against this library's nnlite.h or load the
   matching libnnlite.so.0". A negative or malformed number is NNL_ERR_ARGUMENT.
   Nothing else is initialised: the other functions work without it; the
   point is to refuse a mismatched library with a clear error instead of
   undefined behaviour. The Fortran and Python bindings and nnlite.hpp call
   it when they load. Thread-safe. */
NNL_API int nnl_init(int header_version_number);
#define NNL_INIT() nnl_init(NNL_VERSION_NUMBER)

/* Number of threads the kernels use (the calling thread and up to n-1 of
   nnlite's pool workers). Default: the environment variable NNL_NUM_THREADS,
   else OMP_NUM_THREADS, else the CPUs this process may run on (its affinity
   mask, e.g. a batch job's cores); read once, at the first call that needs it.
   n <= 0 restores the default. A process-wide setting; not to be changed
   while another thread trains. Idle workers never spin against another
   process (they yield the core, and sleep after a fraction of a
   millisecond), small work runs on the calling thread alone, and threads
   claim work in pieces, so a busy machine slows nnlite down without
   stalling it.
   Results do not depend on the number of threads. Models trained on several
   threads at once share the pool: a kernel that finds it busy runs on its
   calling thread alone. In a single-threaded build (NNL_NO_THREADS) always 1. */
NNL_API int nnl_set_threads(int n);
NNL_API int nnl_get_threads(void);

/* ==== Dtypes ============================================================== */

enum {
    NNL_FLOAT32 = 1,
    NNL_FLOAT64 = 2,
    NNL_INT32 = 3,
    NNL_INT64 = 4,
    NNL_UINT8 = 5,
    NNL_INT8 = 6,
    NNL_INT16 = 7,
    NNL_UINT16 = 8,
    NNL_UINT32 = 9,
    NNL_UINT64 = 10,
    NNL_BOOL = 11,
    NNL_FLOAT16 = 12
};

/* ==== Arrays (what the loaders return) ==================================== */

/* An owned n-dimensional array, row-major, of dtype NNL_FLOAT32 or NNL_INT64
   (loaders convert every stored type to one of these two). */
typedef struct nnl_array nnl_array;

#define NNL_MAX_RANK 8

/* Creates a zero-filled array. dtype: NNL_FLOAT32 or NNL_INT64; 0 <= rank <=
   NNL_MAX_RANK; every shape[i] >= 0. The caller owns *out (nnl_array_free). */
NNL_API int nnl_array_create(int dtype, int rank, const int64_t *shape, nnl_array **out);
/* Frees the array; NULL is ignored. */
NNL_API void nnl_array_free(nnl_array *a);
/* Accessors; on NULL they return 0 / NULL. The data pointer is owned by the
   array and valid until nnl_array_free or nnl_array_reshape. */
NNL_API int nnl_array_dtype(const nnl_array *a);
NNL_API int nnl_array_rank(const nnl_array *a);
NNL_API int64_t nnl_array_dim(const nnl_array *a, int axis); /* 0 when axis is out of range */
NNL_API const int64_t *nnl_array_shape(const nnl_array *a);
NNL_API int64_t nnl_array_size(const nnl_array *a);             /* number of elements */
NNL_API void *nnl_array_data(nnl_array *a);
/* Changes the shape without moving data; the element count must not change. */
NNL_API int nnl_array_reshape(nnl_array *a, int rank, const int64_t *shape);
/* Converts in place to dtype (NNL_FLOAT32 or NNL_INT64). Float to int fails
   with NNL_ERR_ARGUMENT unless every value is integral. */
NNL_API int nnl_array_convert(nnl_array *a, int dtype);

/* ==== Data loaders =========================================================
   Every loader checks sizes against the file before allocating and fails with
   NNL_ERR_FORMAT (never a crash) on truncated or corrupt input; a missing file
   is NNL_ERR_IO. The caller owns the arrays returned and frees them with
   nnl_array_free; on failure *out is set to NULL.
   Files are treated as hostile: each dimension, count, offset and length is
   checked against the bytes present (products checked for overflow), so an
   allocation is never more than a small multiple of the file's size (the
   array: 8 bytes per stored byte at most) or, for compressed data, of what
   deflate can produce from it (~1032 bytes per byte, capped by
   NNL_MAX_INFLATE); gzip and zip
   CRC-32s are verified; trailing bytes after an idx or npy array, and npy
   headers with a key given twice, are NNL_ERR_FORMAT. Fuzzed: see fuzz/. */

/* MNIST idx file (idx1/idx3/any rank, ubyte/byte/short/int/float/double),
   plain or gzip-compressed (.gz; needs stb). ubyte/byte/short/int data loads
   as NNL_INT64 unless want_dtype is NNL_FLOAT32; want_dtype 0 keeps it.
   Images are not scaled. */
NNL_API int nnl_load_idx(const char *path, int want_dtype, nnl_array **out);

/* A .npy file (format 1.0, 2.0, 3.0; bool, int8..int64, uint8..uint64,
   float16/32/64; little or big endian; C or Fortran order, the latter
   transposed to C order). Integer and bool data load as NNL_INT64, float as
   NNL_FLOAT32, unless want_dtype (NNL_FLOAT32 or NNL_INT64) asks otherwise. */
NNL_API int nnl_load_npy(const char *path, int want_dtype, nnl_array **out);

/* One member of a .npz archive ("x_train" or "x_train.npy"), stored or
   deflate-compressed (deflate needs stb). */
NNL_API int nnl_load_npz(const char *path, const char *key, int want_dtype, nnl_array **out);

/* Writes a as a .npy file (format 1.0, C order, '<f4' or '<i8'). */
NNL_API int nnl_save_npy(const char *path, const nnl_array *a);

/* MNIST-style dataset from a folder holding train-images-idx3-ubyte,
   train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte
   (each plain or .gz), or from a Keras-style .npz file (x_train, y_train,
   x_test, y_test). Images come as NNL_FLOAT32 (N,28,28) with values 0..255,
   labels as NNL_INT64 (N,). Any out pointer may be NULL to skip that part. */
NNL_API int nnl_load_mnist(const char *path, nnl_array **x_train, nnl_array **y_train,
                           nnl_array **x_test, nnl_array **y_test);

/* ==== Data helpers ======================================================== */

/* Keras' tf.keras.utils.normalize(x, axis, order=2): divides each vector
   along `axis` by its L2 norm, leaving all-zero vectors as they are.
   Negative axis counts from the end. In place on float32 data. */
NNL_API int nnl_normalize(float *x, int rank, const int64_t *shape, int axis);
/* x[i] = x[i] * scale + shift for n elements (e.g. scale 1/255 for images). */
NNL_API int nnl_scale(float *x, int64_t n, float scale, float shift);
/* One-hot rows: out (n, num_classes) float32 from integer labels of dtype
   `dtype`. A label outside [0, num_classes) is NNL_ERR_ARGUMENT. */
NNL_API int nnl_to_categorical(const void *labels, int dtype, int64_t n, int num_classes,
                               float *out);
/* Shuffles the n samples of x (row_x floats each) and, when y is not NULL,
   the n rows of y (row_y elements of y_dtype each) with the same seeded
   permutation. The same seed gives the same permutation on every platform. */
NNL_API int nnl_shuffle(float *x, int64_t row_x, void *y, int y_dtype, int64_t row_y,
                        int64_t n, uint64_t seed);
/* Confusion matrix: out[t * num_classes + p] counts samples of true class t
   predicted as p (rows true, columns predicted), out zeroed first. y_true has
   dtype `dtype` (integer class ids), y_pred is int32 (nnl_predict_classes). */
NNL_API int nnl_confusion_matrix(const void *y_true, int dtype, const int32_t *y_pred,
                                 int64_t n, int num_classes, int64_t *out);
/* Prints the matrix as a table with row and column labels to f (stdout when
   NULL); labels may be NULL for 0..num_classes-1. normalize != 0 prints each
   row as fractions of its total. */
NNL_API int nnl_print_confusion_matrix(FILE *f, const int64_t *cm, int num_classes,
                                       const char *const *labels, int normalize);

/* ---- Text corpora and sequences (added in 0.3) ----
   A word-level corpus in the Penn Treebank layout (ptb.train.txt, ...):
   tokens are separated by whitespace (space, tab, CR, VT, FF); every line
   ends with the token "<eos>" (as PyTorch's word_language_model reads it:
   line.split() + ['<eos>']; a last line without a newline counts too, an
   empty line gives "<eos>" alone). Files are read whole, offline; a missing
   file is NNL_ERR_IO, a file holding a NUL byte NNL_ERR_FORMAT; hostile
   input never crashes (fuzzed: fuzz/fuzz_words.cpp).
   A vocabulary is built from one (training) file: ids by count, most
   frequent first, ties by the word's bytes in ascending order, as
   TensorFlow's PTB reader (sorted by (-count, word)); at most 2^24 words
   (ids travel as float32 exactly), else NNL_ERR_UNSUPPORTED. Lifetime:
   nnl_text_vocab ... nnl_vocab_free; a vocabulary is read-only after it is
   built, so several threads may use one at once. */
typedef struct nnl_vocab nnl_vocab;
NNL_API int nnl_text_vocab(const char *path, nnl_vocab **out);
NNL_API void nnl_vocab_free(nnl_vocab *v);
NNL_API int64_t nnl_vocab_size(const nnl_vocab *v);            /* 0 for NULL */
/* The word of an id (owned by v, valid until nnl_vocab_free); NULL when out of range. */
NNL_API const char *nnl_vocab_word(const nnl_vocab *v, int64_t id);
/* The id of a word, or -1 when v does not hold it (or v/word is NULL). */
NNL_API int64_t nnl_vocab_id(const nnl_vocab *v, const char *word);
/* The words of a file as ids under v: an NNL_INT32 array (n,) that the caller
   frees with nnl_array_free. A word v does not hold becomes the id of
   "<unk>"; when v has no "<unk>" it is NNL_ERR_ARGUMENT naming the word,
   the file and the line. */
NNL_API int nnl_load_words(const char *path, const nnl_vocab *v, nnl_array **out);
/* Language-model windows, as TensorFlow's ptb_producer and PyTorch's
   batchify: the first batch_size * L ids (L = n / batch_size) are laid into
   batch_size rows of L (row r holds ids[r*L .. (r+1)*L)), and window i takes
   columns [i*num_steps, (i+1)*num_steps) of every row, the targets the same
   columns shifted by one; (L - 1) / num_steps windows. x and y: NNL_INT32
   (windows * batch_size, num_steps), window-major: sample i * batch_size + r
   is row r of window i, so that nnl_fit with shuffle = 0 and this batch_size
   gives each batch one window, and row r of a batch continues row r of the
   batch before (what stateful recurrent layers need). ids: int32 (n,), each
   id >= 0. Too few ids for one window is NNL_ERR_ARGUMENT. */
NNL_API int nnl_lm_windows(const int32_t *ids, int64_t n, int batch_size, int num_steps,
                           nnl_array **x, nnl_array **y);
/* Sliding windows over a series of n steps of `features` floats (row-major
   (n, features)): x (n - window, window, features) with x[t] = series[t ..
   t+window), y (n - window, features) with y[t] = series[t+window]; both
   NNL_FLOAT32. window >= 1 and n > window, else NNL_ERR_ARGUMENT. */
NNL_API int nnl_sliding_windows(const float *series, int64_t n, int64_t features, int64_t window,
                                nnl_array **x, nnl_array **y);

/* ---- Images (since 0.7) ----
   Image files through stb (Debian libstb-dev, as for .gz files): PNG (8 and
   16 bits, 16 reduced to 8), JPEG (baseline and progressive), BMP, GIF (the
   first frame), TGA and PNM (PGM, PPM) are read; PNG, JPEG, BMP and TGA are
   written. A library built without stb returns NNL_ERR_UNSUPPORTED naming
   libstb-dev from every call here; nnl_has_feature("images") says which.
   Not supported: HDR, PSD, PIC, animated GIF frames after the first,
   12-bit JPEG, EXIF orientation (pixels are used as stored).
   Pixels come as float32 (height, width, channels), row-major, the top row
   first, values 0..255 times the caller's scale (1.0f keeps 0..255 as
   Keras' image_dataset_from_directory does; 1.0f / 255 gives [0, 1]).
   channels: 0 as stored, 1 grayscale, 2 grayscale and alpha, 3 RGB, 4 RGBA
   (Keras' color_mode "grayscale", "rgb", "rgba"); colour to grey is
   (77 R + 150 G + 29 B) / 256 (ITU-R 601 luma), alpha is dropped when not
   asked for and 255 when a file has none.
   Resizing (height and width > 0; both 0 keeps the size): each axis on its
   own, bilinear with half-pixel centres where it grows or keeps its size
   (tf.image.resize's default, which Keras uses), area averaging where it
   shrinks (tf.image.resize's "area"): unlike Keras' bilinear, which reads
   only the 2 x 2 nearest pixels, no pixel is skipped, so a photo shrunk to
   28 x 28 does not alias. No cropping: the aspect ratio follows the target.
   Files are hostile: the header's size is checked before any decoding
   (at most NNL_MAX_IMAGE_PIXELS = 2^28 pixels an image, else
   NNL_ERR_MEMORY; a macro when compiling nnlite.cpp), a truncated or
   corrupt file is NNL_ERR_FORMAT naming the file and stb's reason (stb's
   internal assertions, which corrupt JPEGs reach in Debian's stb 2.27,
   become NNL_ERR_FORMAT too, never an abort), a missing one NNL_ERR_IO.
   Fuzzed: fuzz/fuzz_image.cpp.
   Thread-safe (each call reads only its arguments and files). */

/* One image file as NNL_FLOAT32 (height, width, channels); see above for
   channels, height, width (0, 0: the file's size) and scale. The caller
   frees *out with nnl_array_free; on failure *out is NULL. */
NNL_API int nnl_load_image(const char *path, int channels, int height, int width, float scale, nnl_array **out);

/* A labelled dataset from a folder of class folders, as Keras'
   image_dataset_from_directory(directory, labels="inferred",
   label_mode="int", color_mode, image_size=(height, width), shuffle, seed,
   validation_split, subset, interpolation="bilinear"):
     directory/cat/1.png, directory/cat/x/2.jpg, directory/dog/a.bmp ...
   - class names: the subfolders' names in sorted (byte) order, folders
     starting with '.' left out; labels are their ids 0, 1, ...
   - files: those named *.bmp, *.gif, *.jpeg, *.jpg, *.png (any case;
     Keras' list), anywhere under a class folder (links to folders not
     followed), in sorted (folder, name) order, class after class; files
     directly in `directory` are ignored.
   - shuffle != 0: the list shuffled with numpy's RandomState(seed) as
     Keras does, so the same seed (0..2^32-1) puts the same files in each
     subset as Keras. (Keras also reshuffles batches as it iterates;
     nnl_fit shuffles every epoch.) shuffle == 0: the sorted order.
   - validation_split in (0, 1) with subset "training" or "validation":
     k = floor(validation_split * n) files, the last k of the (shuffled)
     list, are validation; the others training. validation_split 0 with
     subset NULL: every file.
   - channels, height, width, scale: as nnl_load_image. height = width = 0
     keeps the files' size, which must then be the same for all
     (NNL_ERR_SHAPE otherwise), as must the channels when channels is 0.
   - a file that cannot be read or decoded: with skip_bad = 0 the call
     fails (NNL_ERR_FORMAT / NNL_ERR_IO naming the file); with skip_bad = 1
     it is left out with a warning on stderr ("nnlite: warning: ..."), after
     the split (the subsets keep their files apart). Files of the other
     subset are never opened.
   Out: *images NNL_FLOAT32 (n, height, width, channels), *labels NNL_INT32
   (n,), *class_names a vocabulary of the class names (nnl_vocab_word(v, id),
   nnl_vocab_size, nnl_vocab_id; free with nnl_vocab_free). labels and
   class_names may be NULL. A folder with no class folders, or no images,
   or no readable image, is NNL_ERR_FORMAT; a missing one NNL_ERR_IO. */
NNL_API int nnl_image_dataset_from_directory(const char *directory, int height, int width, int channels,
                                             float scale, int shuffle, uint64_t seed, double validation_split,
                                             const char *subset, int skip_bad, nnl_array **images,
                                             nnl_array **labels, nnl_vocab **class_names);

/* Writes float32 pixels (height, width, channels), row-major, channels 1..4,
   as an image file of the format the path's extension names: .png, .jpg or
   .jpeg (quality 95), .bmp, .tga (any case; another extension is
   NNL_ERR_ARGUMENT). Each value is multiplied by scale (255 for [0, 1]
   data, 1 for 0..255), rounded and clipped to 0..255; NaN gives 0. Written
   atomically, as the pictures below. E.g. one MNIST test image:
   nnl_save_image("digit.png", x + i * 784, 28, 28, 1, 1.0f). */
NNL_API int nnl_save_image(const char *path, const float *pixels, int height, int width, int channels,
                           float scale);

/* ==== Models ==============================================================
   A model is a Sequential stack of layers. Lifetime: nnl_model_create ...
   nnl_model_free. A model handle must not be used from two threads at once,
   except by the predict calls (since 0.5: "Concurrent predictions" below
   nnl_predict). */

typedef struct nnl_model nnl_model;

/* Creates an empty model; NULL only when out of memory. Caller frees it. */
NNL_API nnl_model *nnl_model_create(void);
/* Frees the model and everything it owns. NULL is ignored. */
NNL_API void nnl_model_free(nnl_model *m);

/* Appends a layer given as a Keras-style call: Keras' class names, and its
   arguments' names, positions and defaults. Layers of this version:
     Input(shape=(...))                    declares the input shape per sample
     Dense(units, activation=None, use_bias=True, kernel_initializer=
           'glorot_uniform', bias_initializer='zeros')
     Activation(activation)                any name listed under ACTIVATIONS
     Dropout(rate, noise_shape=None, seed=None)  inverted dropout, in fit
                                           only; noise_shape None only
     Flatten(data_format='channels_last')
     Reshape(target_shape)                 one entry may be -1
     Conv1D(filters, kernel_size, strides=1, padding='valid', data_format=
           'channels_last', dilation_rate=1, groups=1, activation=None,
           use_bias=True, kernel_initializer='glorot_uniform',
           bias_initializer='zeros')       padding 'valid', 'same', 'causal'
     Conv2D(filters, kernel_size, ...)     as Conv1D; sizes, strides and
     Conv3D(filters, kernel_size, ...)     dilation one int or a tuple of 2
                                           (3); padding 'valid' or 'same'
     MaxPooling1D(pool_size=2, strides=None, padding='valid', data_format=
           'channels_last')                strides None: the pool size
     MaxPooling2D(pool_size=(2, 2), ...)   as MaxPooling1D, tuples of 2 (3)
     MaxPooling3D(pool_size=(2, 2, 2), ...)
     AveragePooling1D(pool_size=2, ...)    as MaxPooling1D; 'same' averages
     AveragePooling2D(pool_size=(2, 2), ...)   the unpadded entries
     AveragePooling3D(pool_size=(2, 2, 2), ...)
     GlobalAveragePooling1D(data_format='channels_last', keepdims=False)
     GlobalAveragePooling2D(...)           the same arguments (keepdims
     GlobalAveragePooling3D(...)           False only)
     GlobalMaxPooling1D(...)
     GlobalMaxPooling2D(...)
     GlobalMaxPooling3D(...)
     BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, center=True,
           scale=True, beta_initializer='zeros', gamma_initializer='ones',
           moving_mean_initializer='zeros', moving_variance_initializer=
           'ones')                         moving statistics: weights that are
                                           not trained
     ZeroPadding2D(padding=(1, 1), data_format='channels_last')  an int,
                                           (h, w) or ((top, bottom), (left, right))
     UpSampling2D(size=(2, 2), data_format='channels_last', interpolation=
           'nearest')                      nearest only
     Embedding(input_dim, output_dim, embeddings_initializer='uniform',
           mask_zero=False, input_length=None)  ids (T,) -> (T, output_dim);
                                           weight 'embeddings' (input_dim,
                                           output_dim); first layer only; ids
                                           integral in [0, input_dim) (else
                                           NNL_ERR_ARGUMENT naming the layer
                                           and the id); feed them with the
                                           _typed calls as NNL_INT32/INT64;
                                           mask_zero=True: a step whose id is
                                           0 is masked (as Masking's)
     Masking(mask_value=0.0)               inputs (timesteps, features): a
                                           step whose features all equal
                                           mask_value is masked (its output
                                           zeros); recurrent layers leave
                                           their state as it was at masked
                                           steps (the output there: the
                                           previous step's, or zeros with
                                           zero_output_for_mask=True), Dense,
                                           Activation and Dropout pass the
                                           mask on, the loss and metrics
                                           average over kept positions only;
                                           other layers refuse a mask
     SimpleRNN(units, activation='tanh', use_bias=True, kernel_initializer=
           'glorot_uniform', recurrent_initializer='orthogonal',
           bias_initializer='zeros', return_sequences=False, go_backwards=
           False, stateful=False)          inputs (timesteps, features);
                                           outputs (units), or (timesteps,
                                           units) with return_sequences;
                                           weights kernel (features, units),
                                           recurrent_kernel (units, units),
                                           bias (units) as Keras holds them
     LSTM(units, activation='tanh', recurrent_activation='sigmoid',
           use_bias=True, kernel_initializer='glorot_uniform',
           recurrent_initializer='orthogonal', bias_initializer='zeros',
           unit_forget_bias=True, ...)     as SimpleRNN, gates i, f, c, o
                                           side by side: kernel (features,
                                           4 units), recurrent_kernel (units,
                                           4 units), bias (4 units)
     GRU(units, ..., reset_after=True)     as LSTM, gates z, r, h; bias
                                           (2, 3 units) with reset_after
                                           (input and recurrent bias), else
                                           (3 units). For all three:
                                           go_backwards returns the sequence
                                           in processing (reversed) order as
                                           Keras does; stateful=True carries
                                           each batch row's last state to the
                                           same row of the next batch (a
                                           fixed batch size; nnl_reset_states
                                           clears it); activations whose
                                           derivative follows from their
                                           output, and hard_sigmoid (tanh,
                                           sigmoid, relu, elu,
                                           ...); dropout and
                                           recurrent_dropout in [0, 1) as
                                           Keras' cells: in fit only, one
                                           mask per sample on the inputs and
                                           one on h_{t-1} (its recurrent
                                           products), each the same at every
                                           step, drawn as Dropout's masks
                                           (seeded, resumable)
     Bidirectional(layer, merge_mode='concat')  layer: a SimpleRNN, LSTM
                                           or GRU spec, as in Keras:
                                           "Bidirectional(LSTM(8,
                                           return_sequences=True))". A
                                           forward copy (forward_lstm) and
                                           a go_backwards copy
                                           (backward_lstm) whose sequence is
                                           reversed back to time order;
                                           merge_mode 'concat' (last axis
                                           doubled), 'sum', 'mul', 'ave';
                                           weights: the forward copy's
                                           kernel, recurrent_kernel, bias,
                                           then the backward copy's (Keras'
                                           get_weights() order). Step
                                           masks (Masking, Embedding's
                                           mask_zero) and any length
                                           (input_shape=(None, F)) as the
                                           wrapped layer: a masked step
                                           keeps each copy's state (the
                                           backward copy reads the mask
                                           reversed), with return_sequences
                                           its output is zero (Keras forces
                                           zero_output_for_mask) and the
                                           mask passes on. stateful
                                           copies and merge_mode=None:
                                           NNL_ERR_UNSUPPORTED. Keras'
                                           spelling TimeDistributed(Dense(
                                           ...)) is accepted too (spec and
                                           JSON): it builds that Dense, which
                                           acts on every step of a (T, F)
                                           input with the same weights, and
                                           is written back as a plain Dense;
                                           around other layers it is
                                           NNL_ERR_UNSUPPORTED
   Keras' other names are accepted too: Convolution1D, Convolution2D,
   Convolution3D, MaxPool1D, MaxPool2D, MaxPool3D, AvgPool1D, AvgPool2D,
   AvgPool3D, GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D,
   GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D.
   Every layer also takes name='...' (UTF-8; invalid UTF-8 is
   NNL_ERR_ARGUMENT), and input_shape=(...) (or batch_input_shape=(None,
   ...)); by default a layer is named as Keras names it, the class in Keras'
   snake case and a counter: dense, dense_1, conv2d, max_pooling2d,
   batch_normalization. The first layer needs input_shape (or
   an Input layer first). Shape errors are reported here, when the layer is
   added, naming the layer and both shapes. Layers can only be added before
   nnl_compile (NNL_ERR_STATE after). A failed nnl_add leaves the model as
   it was. Tuples in a spec may nest 64 levels deep (deeper is
   NNL_ERR_ARGUMENT); a model holds at most NNL_MAX_LAYERS layers.
   ACTIVATIONS: linear, relu, sigmoid, tanh, softmax, leaky_relu (slope 0.2 as
   keras.activations.leaky_relu), elu, selu, gelu (exact erf form), softplus,
   softsign, swish (= silu), hard_sigmoid (Keras 2: clip(0.2x+0.5,0,1)),
   exponential. Each passes NaN on (output and gradient), so that training
   stops with NNL_ERR_NUMERIC rather than go on with made-up values.
   INITIALIZERS: glorot_uniform, glorot_normal, he_uniform, he_normal,
   lecun_uniform, lecun_normal, zeros, ones, random_uniform, random_normal,
   truncated_normal, constant, orthogonal (a matrix's orthonormal rows or
   columns, as Keras' Orthogonal; kernels only, with rows x columns x
   min(rows, columns) <= 2^38, e.g. 6000 x 6000), variance_scaling, or their
   Keras class names (GlorotUniform, ...). Keras' arguments go in a call,
   quoted: kernel_initializer="VarianceScaling(scale=2.0, mode='fan_out',
   distribution='uniform')" (mode fan_in, fan_out, fan_avg; distribution
   truncated_normal, untruncated_normal, uniform, or Keras 2's normal =
   truncated_normal), "RandomUniform(minval=-0.1, maxval=0.1)",
   "RandomNormal(mean=0.0, stddev=0.05)", "TruncatedNormal(...)",
   "Constant(value=0.5)", "Orthogonal(gain=1.0)". Truncated normals are cut
   at 2 stddev as in Keras. Weights are drawn from the model seed
   (nnl_model_set_seed), so a seed gives the same model; an initializer's own
   seed= is refused. */
NNL_API int nnl_add(nnl_model *m, const char *layer_spec);

/* Typed shortcuts for the common layers (same rules as nnl_add).
   activation may be NULL for linear; rank/shape describe one sample
   (nnl_add_input: -1 as shape[0] is Keras' None, a variable length, as
   nnl_input_shape writes it; see nnl_output_shape). */
NNL_API int nnl_add_input(nnl_model *m, int rank, const int64_t *shape);
NNL_API int nnl_add_dense(nnl_model *m, int units, const char *activation);
NNL_API int nnl_add_activation(nnl_model *m, const char *activation);
NNL_API int nnl_add_dropout(nnl_model *m, float rate);
NNL_API int nnl_add_flatten(nnl_model *m);
NNL_API int nnl_add_reshape(nnl_model *m, int rank, const int64_t *shape);

/* Seed for weight initialisation, dropout masks and shuffling when the fit
   options give none. Set it before adding layers to make the initial weights
   reproducible; default 0 draws from the system's clock. */
NNL_API int nnl_model_set_seed(nnl_model *m, uint64_t seed);

/* Keras' model.reset_states(): every state that stateful layers
   (stateful=True recurrent layers) carry from batch to batch goes back to
   zero; the batch size they were sized for stays. Weights, optimizer state
   and history are untouched; a model without stateful layers is left as
   it is (NNL_OK). Not thread-safe on the same handle (as every call on m).
   A stateful model keeps a fixed batch size, as Keras' batch_input_shape
   does: nnl_fit, nnl_evaluate and nnl_predict refuse a final partial batch
   or a different batch size with NNL_ERR_SHAPE naming the layer; make the
   sample count a multiple of the batch size. */
NNL_API int nnl_reset_states(nnl_model *m);

/* Number of layers (Input excluded); 0 for NULL. */
NNL_API int nnl_layer_count(const nnl_model *m);
/* Parameter counts as Keras' summary prints them: nnl_param_count is the
   total ("Total params", Keras' count_params()), trainable and not;
   nnl_trainable_param_count what the optimizer updates ("Trainable
   params"); nnl_non_trainable_param_count the rest ("Non-trainable
   params": BatchNormalization's moving mean and variance). The first is the
   sum of the other two. 0 for NULL. Read-only: safe to call on different
   models concurrently, and on one model from one thread at a time, as every
   model function. */
NNL_API int64_t nnl_param_count(const nnl_model *m);
NNL_API int64_t nnl_trainable_param_count(const nnl_model *m);
NNL_API int64_t nnl_non_trainable_param_count(const nnl_model *m);
/* Per-sample output shape of the model: writes up to NNL_MAX_RANK dims into
   shape (may be NULL) and returns the rank, or -1 (with a message) for a
   NULL model or one with no layers.
   Variable-length sequences (0.3): a model built with input_shape=(None, F)
   (Keras' None time axis; Input(shape=(None, F)); Keras JSON
   batch_input_shape [null, null, F]) takes sequences of any length. Both
   calls write -1 for that axis (None), in the input and in every output
   that keeps it (return_sequences). nnl_fit, nnl_evaluate, nnl_predict and
   the _typed calls take the length from x's shape (n, T, F) on each call:
   the output of such a model is (n, T, ...) where nnl_output_shape says -1
   (x_val must have x's length). A change of length re-plans the model's
   workspaces inside the call (nothing the caller owns); as every model
   function, use one model from one thread at a time (the predict calls
   may overlap since 0.5, but on such a model they run one at a time).
   Layers that need a fixed length (Flatten, Conv1D, pooling, ...) are
   refused at nnl_add, naming the layer. */
NNL_API int nnl_output_shape(const nnl_model *m, int64_t *shape);
NNL_API int nnl_input_shape(const nnl_model *m, int64_t *shape);

/* Model summary as Keras prints it (layer name and type, output shape,
   parameter count, totals): tf.keras' 65-column table, its columns widened
   to fit longer names and shapes. f NULL means stdout. */
NNL_API int nnl_summary(const nnl_model *m, FILE *f);
/* The same into buf (always NUL-terminated when cap > 0). Returns the length
   the full text needs, excluding the NUL, or -1 on error. */
NNL_API int64_t nnl_summary_string(const nnl_model *m, char *buf, int64_t cap);

/* Weights in Keras get_weights() order: every weight tensor, trainable or
   not, per layer: Dense kernel (in, out) then bias (out,); ConvND kernel
   (k..., in, out) then bias; BatchNormalization gamma, beta, moving_mean,
   moving_variance (those it has). Indices 0 .. nnl_weight_count(m) - 1
   address all of them, in the order of nnl_save_weights_npz's arr_0,
   arr_1, ...; an index outside is NNL_ERR_ARGUMENT.
   nnl_weight_count: the number of tensors (0 for NULL).
   nnl_weight_trainable: *trainable = 1 when the optimizer updates tensor i,
   0 for state such as the moving statistics (Keras' non_trainable_weights).
   nnl_weight_info fills the name ("dense_1/kernel"), rank and shape
   (name_cap bytes, NUL-terminated; name, rank and shape may be NULL).
   get/set copy count floats, which must equal the tensor's size; the
   caller owns the buffers, the model keeps no pointer to them. nnl_set_weight
   refuses non-finite values (NNL_ERR_NUMERIC) and may set non-trainable
   tensors too (Keras' set_weights() takes the full list). Thread-safety: as
   every model function (get/info/count/trainable only read the model). */
NNL_API int nnl_weight_count(const nnl_model *m);
NNL_API int nnl_weight_trainable(const nnl_model *m, int i, int *trainable);
NNL_API int nnl_weight_info(const nnl_model *m, int i, char *name, int name_cap, int *rank,
                            int64_t *shape);
NNL_API int nnl_get_weight(const nnl_model *m, int i, float *out, int64_t count);
NNL_API int nnl_set_weight(nnl_model *m, int i, const float *in, int64_t count);

/* ==== Compile =============================================================
   optimizer: "SGD(learning_rate=0.01, momentum=0.0, nesterov=False,
               decay=0.0)"  (decay: Keras' legacy lr / (1 + decay * iterations))
              "RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
               centered=False)"
              "Adagrad(learning_rate=0.001, initial_accumulator_value=0.1,
               epsilon=1e-7)"
              "Adadelta(learning_rate=0.001, rho=0.95, epsilon=1e-7)"
              "Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999,
               epsilon=1e-7, amsgrad=False)"
              "AdamW(learning_rate=0.001, weight_decay=0.004, beta_1, beta_2,
               epsilon, amsgrad)"
              "Adamax(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)"
              "Nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)"
              Every optimizer also takes one of clipnorm= (per weight tensor),
              global_clipnorm= (over all) or clipvalue=, and decay=. Hyper-
              parameters and update rules are Keras 3's (Nadam: u_t =
              beta_1 (1 - 0.5 * 0.96^t)). A bare name ("adam") takes the defaults.
   loss:      sparse_categorical_crossentropy, categorical_crossentropy,
              binary_crossentropy (each takes from_logits=True), mean_squared_error
              (mse), mean_absolute_error (mae), huber (delta=1.0). Probabilities
              are clipped to [1e-7, 1-1e-7] as Keras does; with from_logits the
              loss is computed from logits directly (stable log-softmax).
   metrics:   comma-separated list, may be NULL or "": accuracy (picks sparse,
              categorical or binary from the loss, as Keras does),
              sparse_categorical_accuracy, categorical_accuracy, binary_accuracy,
              top_k_categorical_accuracy(k=5), sparse_top_k_categorical_accuracy(k=5),
              mse, mae, perplexity (exp of the mean cross-entropy over the
              epoch or the evaluated data, not a mean of per-batch values;
              with sparse_categorical_crossentropy or
              categorical_crossentropy only, else NNL_ERR_ARGUMENT).
              Outputs (T, classes) per sample (a language model) take
              labels (n, T) for the sparse loss: loss and metrics are
              per position, averaged over all n * T positions (Keras).
              A metric reads the targets the loss takes. With
              sparse_categorical_crossentropy (integer class ids) only
              accuracy, sparse_categorical_accuracy and
              sparse_top_k_categorical_accuracy apply; with every other loss
              (targets of the output's shape) all but the two sparse ones.
              Another pairing is NNL_ERR_ARGUMENT at compile, naming the
              metric and the loss (Keras would broadcast a class id against
              every output for mse/mae: a number without meaning).
   Compiling twice replaces the optimizer (its state restarts); the weights
   stay. Fails with NNL_ERR_STATE on a model with no layers. */
NNL_API int nnl_compile(nnl_model *m, const char *optimizer, const char *loss,
                        const char *metrics);

/* Learning rate in use (after compile); settable between epochs, e.g. from a
   callback. */
NNL_API int nnl_set_learning_rate(nnl_model *m, double lr);
NNL_API double nnl_get_learning_rate(const nnl_model *m);

/* ==== Training ============================================================ */

enum {
    NNL_EVENT_BATCH_END = 1, /* logs: loss and metrics averaged over the epoch so far */
    NNL_EVENT_EPOCH_END = 2  /* logs: as the history row for this epoch */
};

/* Called during fit. logs holds n_logs values named by nnl_history_key(m, i)
   (loss, metrics, then val_ ones at epoch end). Return nonzero to stop
   training after this batch; fit then returns NNL_OK with the epochs done.
   Runs on the thread that called nnl_fit; it may call nnl_set_learning_rate
   and the read-only functions on m, nothing else on m. */
typedef int (*nnl_callback)(void *user, nnl_model *m, int event, int epoch, int64_t batch,
                            const double *logs, int n_logs);

/* Options for nnl_fit. Always initialise with nnl_fit_options_init, which
   sets struct_size; fields added in later versions go at the end, and a
   library reads only the fields that the caller's struct_size covers. */
typedef struct nnl_fit_options {
    int struct_size;
    int epochs;               /* default 1; as in Keras, the index of the last epoch
                                 to train: epochs initial_epoch .. epochs-1 run */
    int batch_size;           /* default 32 */
    double validation_split;  /* 0 <= v < 1: the LAST fraction of x/y, before shuffling;
                                 n_train = (int64)(n * (1 - v)) as in Keras */
    int shuffle;              /* default 1: reshuffle the training part every epoch */
    int verbose;              /* 0 silent, 1 progress line (default), 2 one line per epoch */
    uint64_t seed;            /* shuffling/dropout seed; 0: the model's */
    int initial_epoch;        /* epoch to start at (resuming); default 0 */
    /* Validation data; used instead of validation_split when x_val != NULL. */
    const float *x_val;
    int x_val_rank;
    const int64_t *x_val_shape;
    const void *y_val;
    int y_val_dtype;
    int y_val_rank;
    const int64_t *y_val_shape;
    nnl_callback callback;    /* may be NULL */
    void *callback_user;
    FILE *log;                /* where progress goes; NULL: stdout */
    int reset_states; /* 1: reset stateful layers at each epoch's start (Keras' default is 0: never) */
    /* Added in 0.3: dtype of x_val (NNL_FLOAT32 default, NNL_INT32 or
       NNL_INT64 for token ids, as x_dtype of nnl_fit_typed; x_val then
       points at the integers, cast to const float *). */
    int x_val_dtype;
} nnl_fit_options;

NNL_API void nnl_fit_options_init(nnl_fit_options *o);

/* Trains the model. x: float32 (n, input shape...) or (n, flat size). y:
   (n,) or (n,1) integer/float class ids for sparse losses; (n, classes)
   for categorical; (n, output shape...) otherwise. opt NULL: defaults.
   History is appended per completed epoch (nnl_history_*). Non-finite values
   in x or y are refused before training (NNL_ERR_NUMERIC). If the loss or a
   gradient becomes NaN or Inf, training stops with NNL_ERR_NUMERIC before
   that update is applied: weights and optimizer state stay those of the last
   good step. Errors: NNL_ERR_STATE before compile, NNL_ERR_SHAPE on
   mismatched arrays (the message gives both shapes). */
NNL_API int nnl_fit(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape,
                    const void *y, int y_dtype, int y_rank, const int64_t *y_shape,
                    const nnl_fit_options *opt);

/* Loss and metrics over (x, y), in the order of nnl_history_key minus the
   val_ ones: out[0] = loss, out[1..] = metrics. out_cap values at most are
   written; returns the status. batch_size <= 0 means 32. As nnl_fit,
   non-finite values in x or y are refused (NNL_ERR_NUMERIC naming the
   sample) before anything runs. */
NNL_API int nnl_evaluate(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape,
                         const void *y, int y_dtype, int y_rank, const int64_t *y_shape,
                         int batch_size, double *out, int out_cap);

/* Forward pass in inference mode. out receives n * (product of the output
   shape) floats; out_count must be at least that (NNL_ERR_SHAPE otherwise).
   Works before compile. batch_size <= 0 means 32. Non-finite values in x
   are refused as nnl_fit refuses them (NNL_ERR_NUMERIC naming the sample;
   out is not written): a NaN input never comes back as an answer.
   Convolutions by Winograd's algorithm (since 0.8.3): in float32 on the
   CPU, the forward pass (training and inference) computes a Conv2D with a
   3x3 or 5x5 window, strides 1, no dilation, at least 8 input channels
   and 16 filters as F(4x4, 3x3) or F(4x4, 5x5): 2.25 and 4 products per
   output and input channel instead of 9 and 25, rounded differently from
   the direct sum (at most a few 1e-6 of the sum of the terms' magnitudes;
   the same bits on any number of threads); the backward pass stays
   direct. The predict calls keep the transformed kernel (36 and 64 floats
   per input channel and filter: 4x a 3x3 kernel, 2.56x a 5x5 one) in each
   workspace that
   predictions run in, made at the first call after the weights change;
   the other calls make it per batch. The environment variable
   NNL_WINOGRAD=0, read once per process, turns this off (im2col and SGEMM,
   as before 0.8.3). */
NNL_API int nnl_predict(nnl_model *m, const float *x, int x_rank, const int64_t *x_shape,
                        int batch_size, float *out, int64_t out_count);
/* Concurrent predictions (since 0.5). nnl_predict, nnl_predict_classes,
   nnl_predict_typed and nnl_predict_classes_typed may run on one model from
   many threads at once, while no call that changes the model runs (every
   other call on m: nnl_fit, nnl_evaluate, nnl_compile, nnl_add,
   nnl_set_weight, loading weights, nnl_reset_states, nnl_set_device,
   nnl_distribute, nnl_model_free...). The weights are shared and only read;
   each call computes in a workspace of its own: the model's, when no other
   call uses it, else an inference copy of the model's activation buffers and
   per-layer scratch (not of its weights), made when a call first finds
   every workspace busy and reused after, so a warm model allocates nothing
   per call (a nnl_predict_classes call keeps one int32 per sample; integer
   x of the _typed calls is converted as always). Every result is the one
   the call gives alone, bit for bit. While several calls run on the model,
   each batch of each computes on its calling thread alone (the caller's
   threads are the parallelism; a call alone on the model uses
   nnl_set_threads' threads as before), so an OpenMP loop of predictions
   neither deadlocks nor oversubscribes the cores:
       #pragma omp parallel for
       for (int i = 0; i < n; i++) nnl_predict(m, x + i * F, 2, shape, 1, y + i * K, K);
   These models are safe to call concurrently too, but their calls run one
   at a time (each waits for the one before), because a prediction changes
   them: a model with stateful layers (states carried from call to call, so
   results depend on the order the calls run in), a variable-length model
   (input_shape=(None, F): each call re-plans the model for its length),
   and a model on a GPU (nnl_set_device). Calls on
   different models never wait for each other. nnl_input_shape and
   nnl_output_shape may run beside the predict calls too (the Fortran and
   Python front ends' predict call nothing else). Not in a build with
   NNL_NO_THREADS, which has no locks. */
/* argmax of each prediction row (or > 0.5 for a single sigmoid unit) into
   classes; count must be at least n (NNL_ERR_SHAPE otherwise). Non-finite
   x is refused as by nnl_predict; a prediction row holding a NaN (e.g.
   from weights that overflow) has no class: NNL_ERR_NUMERIC naming the
   sample, and classes is left unwritten. Since 0.5 concurrent calls on one
   model are allowed, as for nnl_predict (see "Concurrent predictions"). */
NNL_API int nnl_predict_classes(nnl_model *m, const float *x, int x_rank,
                                const int64_t *x_shape, int batch_size, int32_t *classes,
                                int64_t count);

/* ---- Integer model inputs (added in 0.3) ----
   The same four calls with x of any of three dtypes: x_dtype NNL_FLOAT32
   (then they are exactly nnl_fit / nnl_evaluate / nnl_predict /
   nnl_predict_classes, which call them), NNL_INT32 or NNL_INT64 (token ids
   for an Embedding first layer, or any integer features). Integer x is
   converted once per call into a float32 copy that the library owns for the
   call (4 bytes per value; nothing per batch); every value must lie in
   [-2^24, 2^24], where float32 holds integers exactly, else
   NNL_ERR_ARGUMENT naming the call, the sample and the value. An Embedding
   refuses ids outside [0, input_dim) (NNL_ERR_ARGUMENT naming the layer and
   the id) before anything runs. Another x_dtype is NNL_ERR_ARGUMENT.
   x_val of nnl_fit_options has its own dtype, x_val_dtype. Thread-safety
   and ownership as the float calls: since 0.5 nnl_predict_typed and
   nnl_predict_classes_typed may run concurrently on one model as
   nnl_predict does ("Concurrent predictions"). */
NNL_API int nnl_fit_typed(nnl_model *m, const void *x, int x_dtype, int x_rank, const int64_t *x_shape,
                          const void *y, int y_dtype, int y_rank, const int64_t *y_shape,
                          const nnl_fit_options *opt);
NNL_API int nnl_evaluate_typed(nnl_model *m, const void *x, int x_dtype, int x_rank,
                               const int64_t *x_shape, const void *y, int y_dtype, int y_rank,
                               const int64_t *y_shape, int batch_size, double *out, int out_cap);
NNL_API int nnl_predict_typed(nnl_model *m, const void *x, int x_dtype, int x_rank,
                              const int64_t *x_shape, int batch_size, float *out, int64_t out_count);
NNL_API int nnl_predict_classes_typed(nnl_model *m, const void *x, int x_dtype, int x_rank,
                                      const int64_t *x_shape, int batch_size, int32_t *classes,
                                      int64_t count);

/* ==== History ============================================================= */

/* Number of epochs recorded by nnl_fit calls (0 before). */
NNL_API int nnl_history_epochs(const nnl_model *m);
/* Number of history keys and the i-th key: "loss", the metrics, then
   "val_loss" and "val_<metric>" when validation ran. NULL when out of range. */
NNL_API int nnl_history_key_count(const nnl_model *m);
NNL_API const char *nnl_history_key(const nnl_model *m, int i);
/* Copies up to cap per-epoch values of key into out; returns the number of
   epochs available, or -1 (with an error) when the key does not exist. */
NNL_API int nnl_history_get(const nnl_model *m, const char *key, double *out, int cap);
/* Empties the history. */
NNL_API int nnl_history_clear(nnl_model *m);

/* ==== Model files =========================================================
   Three ways to keep a model, as in Keras:
     nnl_save_model / nnl_load_model      everything: architecture, weights
                                          (BatchNormalization moving statistics
                                          included), compile configuration,
                                          optimizer state, history, RNG state
     nnl_model_to_json / nnl_model_from_json   the architecture alone, in the
                                          JSON layout of Keras' model.to_json()
     nnl_save_weights / nnl_load_weights  the weights alone
   and weights as .npz for numpy, Keras and PyTorch users
   (nnl_save_weights_npz / nnl_load_weights_npz).
   Binary files are nnlite's own format, version 1 (docs/FORMAT.md): a
   checksummed header, the metadata as JSON, float32 tensors at 64-byte
   aligned offsets (mappable), a CRC-32 per tensor.
   Saves are atomic: the file is written to a temporary file in the same
   folder (TARGET.tmp-PID-N), flushed, fsync'ed and renamed over path, and the
   folder is fsync'ed. A reader sees the previous file or the new one, never a
   part, even when the saving process is killed; a failed save returns
   NNL_ERR_IO and leaves no file behind (a killed process may leave its
   temporary file, never a damaged target).
   Loaders read the whole file, check every size and count against the file
   and sane limits before allocating, verify every checksum, and fail with
   NNL_ERR_FORMAT and a message on truncated, corrupt or hostile files (never
   a crash); a missing or unreadable file is NNL_ERR_IO. On failure the model
   given is left unchanged, and *out is NULL.
   Thread-safety: as every model function; different models may be saved and
   loaded from different threads concurrently. */

/* The architecture as the JSON text tf.keras 2.x's model.to_json() writes:
   {"class_name": "Sequential", "config": {"name": "sequential", "layers":
   [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, ...],
   ...}}, {"class_name": "Dense", "config": {...Keras keys and defaults...}},
   ...]}, "keras_version": ..., "backend": "tensorflow"}. Weights are not
   included. Into buf (NUL-terminated when cap > 0, truncated to cap - 1
   bytes); returns the length the whole text needs excluding the NUL, or -1
   (nnl_last_error says why: NULL model, no layers). buf may be NULL with
   cap 0 to ask for the length. */
NNL_API int64_t nnl_model_to_json(const nnl_model *m, char *buf, int64_t cap);

/* A new, uncompiled model from a Keras JSON architecture: the layout of
   tf.keras 2.x (InputLayer with batch_input_shape, or batch_input_shape on
   the first layer) and of Keras 3 (module / registered_name / build_config
   fields, InputLayer batch_shape, dtype-policy objects). Every layer nnlite
   has is read, with Keras' config keys; fields that do not change the
   computation are accepted (dtype float32, trainable true, null
   regularizers and constraints). Initializers are read in every class and
   config nnl_add takes (see INITIALIZERS), as {"class_name":
   "GlorotUniform", "config": {"seed": null}}, names, or the forms of
   standalone Keras 2.0-2.3 (glorot_uniform written as {"class_name":
   "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg",
   "distribution": "uniform", "seed": null}}); they are written back in
   Keras' class form with their config. A layer kind nnlite lacks
   (Conv2DTranspose, Attention, ...) is NNL_ERR_UNSUPPORTED naming the kind and the kinds this
   version has. Anything else is an error naming the layer and the option:
   non-Sequential models, regularizers, trainable false, other dtypes,
   initializer seeds (NNL_ERR_UNSUPPORTED or NNL_ERR_ARGUMENT); malformed
   JSON is NNL_ERR_FORMAT. Layer names are kept (invalid UTF-8 is
   NNL_ERR_ARGUMENT, so the JSON nnlite writes is always valid). Weights are initialised as nnl_add does (from a clock seed): load
   them with nnl_load_weights or nnl_load_weights_npz. nnl_model_to_json of
   the result gives back the same text nnlite wrote. Loading takes time
   linear in the number of layers; more than NNL_MAX_LAYERS (65536 by
   default) is NNL_ERR_MEMORY. The caller frees *out (nnl_model_free). */
NNL_API int nnl_model_from_json(const char *json, nnl_model **out);

/* Writes the weights alone (and the architecture, for reference) to path in
   nnlite's binary format. NNL_ERR_STATE for a model with no layers,
   NNL_ERR_IO when the file cannot be written. */
NNL_API int nnl_save_weights(const nnl_model *m, const char *path);

/* Loads weights saved by nnl_save_weights or nnl_save_model into m, which
   must have the same architecture: the same number of weight tensors with
   the same shapes, in order (names may differ). A mismatch is NNL_ERR_SHAPE
   naming the layer, the weight and both shapes; m is changed only when every
   tensor fits. Compile state and optimizer state of m are kept, and so are
   the states of its stateful layers (not weights). */
NNL_API int nnl_load_weights(nnl_model *m, const char *path);

/* Writes the whole model: architecture (Keras JSON), weights including
   non-trainable ones, the compile configuration (the strings given to
   nnl_compile), the optimizer state (slots, iteration count, learning rate),
   the history (so its epoch count), the model seed and the RNG state, and
   the persistent states of stateful layers (stateful SimpleRNN, LSTM and
   GRU: h, and LSTM's c, per batch row; they are not weights: the weight
   functions, weights files and npz files leave them out). A run
   saved after epoch k and resumed in another process by nnl_load_model and
   nnl_fit with initial_epoch = k ends bit-for-bit as the uninterrupted run
   (same data, batch size and fit options). This holds because each epoch
   shuffles from the identity order, and its shuffle and dropout draws come
   from the model's RNG (saved here) or, when the fit options give a seed,
   from (seed, epoch) alone. Works before compile too.
   A path ending in ".keras" or ".h5" writes Keras' own file instead (since
   0.7, with HDF5), as keras.models.load_model reads it: a Keras 3 .keras
   zip or a tf.keras 2.x .h5, with the architecture, the weights and, for a
   compiled model, the compile configuration (optimizer and its options,
   loss, the metrics given without options) and the optimizer's state as
   Keras' optimizer variables: the iteration count (and in .keras the
   learning rate) and, once it has stepped, its slots (Adam's m and v,
   ...) in Keras 3's layout in .keras and tf.keras 2.15's in .h5
   (docs/FORMAT.md). Not the history or the RNG state, which Keras files
   have no place for: a run resumed from a Keras file continues with the
   same weights and optimizer state, but bit for bit only from nnlite's own
   files (dropout and shuffling draw from the RNG). Without HDF5
   NNL_ERR_UNSUPPORTED naming the package. */
NNL_API int nnl_save_model(const nnl_model *m, const char *path);

/* A new model from a file of nnl_save_model, compiled when it was saved
   compiled (then ready to continue training), or from a file of
   nnl_save_weights (then uncompiled). The caller frees *out.
   Models saved by Keras open too, told by their content, not their name
   (since 0.7, with HDF5: nnl_has_feature("hdf5")): Keras 3 .keras files
   (model.save("m.keras")) and .h5 files of tf.keras 2.x, standalone Keras 2
   and Keras 3 (model.save("m.h5")), Sequential models of the layers nnlite
   has, recurrent ones included. The model comes back compiled as the file
   says (Keras' compile_config / training_config: optimizer with its
   options, loss, metrics) when nnlite has all of that, else uncompiled, as
   Keras leaves a model whose compile configuration fails. A compiled model
   takes the optimizer's state the file holds (Keras' optimizer variables:
   the iteration count, the learning rate where the file keeps it, the
   slots of SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, Adamax and Nadam;
   Keras 3's layout in .keras and .h5, tf.keras 2.11+'s and tf.keras'
   legacy optimizers' in .h5), so training continues as it would in Keras.
   State nnlite cannot map (variables of another count: another optimizer
   configuration, EMA, gradient accumulation; tf.keras' legacy Nadam;
   another layout) is skipped with a warning on stderr ("nnlite: warning:
   ..."), as Keras skips it, and training continues from fresh slots; an
   optimizer variable of the wrong kind or shape is NNL_ERR_FORMAT naming
   the file, the variable and both shapes. A file that
   does not match its own architecture is NNL_ERR_FORMAT naming the layer,
   the weight and both shapes; Keras weights-only files (save_weights) are
   NNL_ERR_FORMAT saying so. Without HDF5 these files are
   NNL_ERR_UNSUPPORTED naming the package (Debian: libhdf5-dev).
   Thread-safe for different models (calls into HDF5 take one lock). */
NNL_API int nnl_load_model(const char *path, nnl_model **out);

/* The weights as a .npz (a stored zip of float32 .npy members) in Keras
   get_weights() order and shapes: members arr_0, arr_1, ... as numpy's
   np.savez(path, *model.get_weights()) writes them. Per layer: Dense kernel
   (in, out) then bias (out,); ConvND kernel (k..., in, out) then bias;
   BatchNormalization gamma, beta, moving_mean, moving_variance (those it
   has). In Python: w = np.load(path); model.set_weights([w[f"arr_{i}"] for i
   in range(len(w.files))]). Over 4 GB: NNL_ERR_UNSUPPORTED (no zip64). */
NNL_API int nnl_save_weights_npz(const nnl_model *m, const char *path);

/* Loads arr_0 ... arr_{n-1} of a .npz (stored or deflated members, any float
   or integer dtype, converted to float32) into m's n weight tensors in Keras
   get_weights() order. Every array must have exactly the weight's shape
   (NNL_ERR_SHAPE naming the layer and both shapes); a missing member or an
   extra arr_n is NNL_ERR_SHAPE; m is changed only when all fit. PyTorch
   weights need Keras' layouts first: Linear weight.T, Conv2d weight
   permuted to (kh, kw, in, out), and a Flatten after channels-last
   convolutions sees (h, w, c) order (see tests/api_files.cpp). */
NNL_API int nnl_load_weights_npz(nnl_model *m, const char *path);

/* ==== Pictures ============================================================
   SVG files any browser shows; written atomically (a temporary file renamed
   over path), so a failed write never leaves half a picture. Since 0.7 all
   four write a PNG instead when path ends in ".png" (any case; needs
   nnl_has_feature("images"), else NNL_ERR_UNSUPPORTED naming Debian's
   libstb-dev), for slides and notebooks. nnl_plot_history,
   nnl_plot_confusion_matrix and nnl_plot_lines draw the same picture as
   their SVG at twice its size in pixels (a 420 x 300 panel: 840 x 600),
   anti-aliased, scaled down where that would pass 2^24 pixels (a
   confusion matrix of hundreds of classes); the text is a plain bitmap font
   (ASCII; other characters print as '?'). Otherwise the calls are unchanged
   (same arguments, same ABI). */

/* Training curves, one panel per metric ("model accuracy", "model loss"),
   train and validation lines against epochs, every epoch's point marked (up
   to 60 epochs), ticks at round values, the legend where no curve is.
   NNL_ERR_STATE before any fit. */
NNL_API int nnl_plot_history(const nnl_model *m, const char *path);
/* A confusion matrix (as from nnl_confusion_matrix) as a blue heat map with
   the counts (or, with normalize != 0, row fractions) in the cells and a
   colour bar; labels (any UTF-8; the margins fit them) and title may be
   NULL. */
NNL_API int nnl_plot_confusion_matrix(const char *path, const int64_t *cm, int num_classes,
                                      const char *const *labels, int normalize,
                                      const char *title);

/* A grid of greyscale images, e.g. originals above reconstructions:
   images holds rows * cols images in row-major order (image (r, c) starts at
   images + (r * cols + c) * height * width), each height x width floats in
   [0, 1] (0 black, 1 white; clipped; NaN drawn red). row_labels (rows
   strings, any of them NULL or empty for none; the array itself may be NULL)
   are written left of each row, title (may be NULL) above. Pixels are vector
   squares (one path per grey level), sharp at any size. At most 10000
   images, 4096 x 4096 each, 2^24 pixels in all: NNL_ERR_ARGUMENT beyond.
   A path ending in ".png" (since 0.7) gives the same grid as a PNG: each
   image pixel a square of max(1, 84 / max(height, width)) screen pixels,
   4-pixel gaps, a white margin, labels and title in a plain bitmap font
   (ASCII; other characters print as '?'). Thread-safe (reads only its
   arguments). Since 0.3. */
NNL_API int nnl_plot_images(const char *path, const float *images, int rows, int cols, int height, int width,
                            const char *const *row_labels, const char *title);

/* Line plots sharing one x axis, e.g. a forecast against the truth:
   `panels` panels stacked vertically, each with `series` lines of `points`
   points; line k of panel p is y[(p * series + k) * points + i] at x[i]
   (x NULL: 0, 1, 2, ...). A NaN breaks a line. series_names (series
   strings: the legend, one row above the panels), panel_labels (panels
   strings: each panel's y axis), x_label and title may be NULL. Panels and
   series 1..16, points 1..100000: NNL_ERR_ARGUMENT beyond. Thread-safe
   (reads only its arguments). Since 0.3. */
NNL_API int nnl_plot_lines(const char *path, const float *x, const float *y, int panels, int series, int points,
                           const char *const *series_names, const char *const *panel_labels, const char *x_label,
                           const char *title);

/* ==== GPU (CUDA) ==========================================================
   Present in every build; they do GPU work only in a library built with the
   CUDA backend (make CUDA=1, CMake -DNNLITE_CUDA=ON: nnlite.cpp compiled with
   -DNNL_CUDA and linked with nnlite_cuda.cu). Elsewhere nnl_cuda_device_count
   is 0 and asking for a GPU fails with NNL_ERR_UNSUPPORTED, changing nothing.
   STATUS: run on an NVIDIA H200 (its test suite passes there; speed against
   PyTorch in bench/gpu/RESULTS.md); see README.md "GPU". */

/* Number of CUDA devices usable by this process: 0 in a build without CUDA,
   without an NVIDIA driver or without a device. Never fails. Thread-safe. */
NNL_API int nnl_cuda_device_count(void);
/* The name of CUDA device `device` ("NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)")
   into buf (cap bytes, always NUL-terminated). NNL_ERR_UNSUPPORTED when there
   is no such device or no CUDA in this build. Thread-safe. */
NNL_API int nnl_cuda_device_name(int device, char *buf, int cap);

/* Where the model computes: "cpu" (the default), "cuda" (device 0) or
   "cuda:N"; "gpu" and "gpu:N" are aliases of "cuda" and "cuda:N" (any
   case). Moving to a GPU copies the weights and optimizer state there once;
   nnl_fit, nnl_evaluate and nnl_predict then run there. nnl_get_weight,
   nnl_summary and the save functions keep reading the model's host copy,
   which nnl_fit refreshes from the GPU when it returns (and around each
   callback), and host-side writes (nnl_set_weight, loading weights) are
   uploaded before the next GPU call. "cpu" brings the model back.
   Errors (the model is left as it was): NNL_ERR_UNSUPPORTED when this build
   has no CUDA, no such device exists, or the model holds a layer or
   optimizer without a GPU path (the message names every such layer, e.g.
   "layer 'x' (X) has no GPU path yet"; every built-in layer now has
   one, so no built-in layer is refused; a model of any sequence length,
   input_shape=(None, ...), is refused with its own message; a CUDA build
   checks the layers before it looks for a device, and the CPU-only build
   names them in its message too; the layers with a
   GPU path: Dense, Activation, Dropout, Flatten, Reshape, Conv1D, Conv2D,
   Conv3D, MaxPooling1D, MaxPooling2D, MaxPooling3D, AveragePooling1D,
   AveragePooling2D, AveragePooling3D, GlobalMaxPooling1D,
   GlobalMaxPooling2D, GlobalMaxPooling3D, GlobalAveragePooling1D,
   GlobalAveragePooling2D, GlobalAveragePooling3D, BatchNormalization,
   ZeroPadding2D, UpSampling2D, Embedding, Masking, SimpleRNN, LSTM, GRU,
   Bidirectional);
   the GPU paths of Embedding, Masking, the three recurrent layers and
   Bidirectional (mask_zero and step-masked outputs included; dropout and
   recurrent_dropout with the CPU's masks, drawn on the device from the
   same counter-based hash) are compiled but have not yet run on a GPU;
   NNL_ERR_ARGUMENT for any other
   device string, in every build (so "gpu" is NNL_ERR_UNSUPPORTED without
   CUDA, "gpu:x" or "tpu" NNL_ERR_ARGUMENT).
   CUDA errors (since 0.8) carry CUDA's error name and text in
   nnl_last_error(), after the name of the nnlite call ("nnl_fit: CUDA error
   cudaErrorECCUncorrectable (uncorrectable ECC error encountered) in ..."),
   and become: NNL_ERR_MEMORY for out of device memory; NNL_ERR_DEVICE
   (since 0.8) when the GPU or its driver failed or cannot serve nnlite: the
   device was lost or fell off the bus, an uncorrectable ECC or NVLink error,
   a fault inside a kernel (illegal address, launch failure, timeout: the
   message says so, and one that repeats on a healthy GPU is worth
   reporting), a driver older than the CUDA runtime nnlite was built with,
   no kernel image or PTX this GPU can run, the device busy or prohibited,
   MPS failures; NNL_ERR_INTERNAL only for what is nnlite's own mistake (an
   invalid argument or launch configuration). NNL_ERR_DEVICE can come from
   nnl_set_device (to a GPU) and from every call that computes on a GPU
   model: nnl_fit, nnl_evaluate, nnl_predict, nnl_predict_classes (and their
   _typed forms), nnl_distribute of a GPU model; the calls that read the
   host copy (nnl_get_weight, nnl_summary, the save functions) never touch
   the GPU and do not fail so. After NNL_ERR_DEVICE: most such errors are
   sticky, i.e. CUDA's context of that device is lost for the whole process
   and every later GPU call of every model on it fails with NNL_ERR_DEVICE
   again (only a new process gets the device back); the model itself stays
   valid: nnl_set_device(m, "cpu") always succeeds then and continues on the
   CPU with the host copy of the weights and optimizer state, i.e. those of
   the model's last GPU call that succeeded (or of the last epoch callback
   of the failed nnl_fit); the steps of the failed call are lost (a line on
   stderr says so). nnl_fit runs the steady-state training step of a model
   of Dense, Dropout, Activation, Flatten and Reshape layers as CUDA graphs
   (captured once, replayed; the same kernels in the same order, so the
   same results bit for bit; other models, a partial last batch and the
   first steps run kernel by kernel; compiled, not yet run on a GPU); the
   environment variable NNL_CUDA_GRAPHS=0, read when nnl_fit starts, turns
   graphs off. Each model on a
   GPU has its own CUDA stream: different models may train concurrently from
   different threads; one model still from one thread at a time (since 0.5
   the predict calls may overlap; on a GPU model they run one at a time).
   A distributed model (nnl_distribute; since 0.7, compiled but not yet run
   on a GPU) may move to a GPU too: "cuda" (or "gpu") then picks this
   rank's device on its node (its rank among the ranks on the node, from
   MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), modulo the node's devices, so
   several ranks may share one GPU); "cuda:N" is device N on every rank; a
   model placed with "cuda" before nnl_distribute moves to that device then.
   A distributed model with NNL_SYNC_BATCHNORM and a BatchNormalization
   layer stays on the CPU (NNL_ERR_UNSUPPORTED naming it). */
NNL_API int nnl_set_device(nnl_model *m, const char *device);
/* "cpu" or "cuda:N" (owned by the model, valid until the next
   nnl_set_device or nnl_model_free); "" for a NULL model. */
NNL_API const char *nnl_get_device(const nnl_model *m);
/* GEMMs (dense and convolution layers) on TF32 tensor cores (on != 0:
   inputs rounded to 10-bit mantissas, FP32 accumulation; faster, about 1e-3
   relative error) or in full FP32 (on == 0, the default). NNL_ERR_STATE when
   the model is not on a GPU; NNL_ERR_UNSUPPORTED on a GPU older than
   compute capability 8.0. */
NNL_API int nnl_set_tf32(nnl_model *m, int on);

/* ==== Mixed precision on the CPU (since 0.6) ==============================
   Keras' dtype policies (keras.mixed_precision): "float32" (the default)
   or "mixed_bfloat16". In mixed_bfloat16 the products of the layers (the
   GEMMs of Dense, Conv1D/2D/3D forward and backward, the input projections
   and weight gradients of SimpleRNN, LSTM and GRU) take their operands
   rounded to bfloat16 (8-bit mantissa, round to nearest even) and sum in
   float32; the weights (nnl_get_weight, model files), the gradients, the
   optimizer state, losses, softmax and normalisation stay float32, as
   Keras keeps float32 master weights. The recurrent step's products with
   U stay float32 where the layer packs U once per pass, and so does a
   convolution over one input channel (a product 9-25 deep: its direct
   kernel is faster than rounding its operands; since 0.8.1). It runs on
   AVX512-BF16 (VDPBF16PS; Intel Cooper Lake and Sapphire Rapids or newer,
   AMD Zen 4 or newer; nnl_has_feature("bf16")), and on the AMX tiles (TDPBF16PS; Intel Sapphire Rapids or newer) where
   the CPU has them and Linux grants the process their state (asked once,
   on the first product; since 0.8.1).
   Results differ from float32 by bf16's rounding (about 3 significant
   digits per operand); trained models reach about the float32 accuracy.
   The environment variable NNL_BF16=emulate selects a portable emulation
   with VDPBF16PS's rounding and sums on any CPU (slow; for tests),
   NNL_BF16=avx512 keeps VDPBF16PS where AMX is present (AMX rounds its
   float32 sums its own way: other last bits, the same error bound), and
   NNL_BF16=off makes the library act as on a CPU without the feature.
   Predictions of 1-4 samples at a time (nnl_predict, nnl_predict_classes
   and their _typed forms with batch_size <= 4, or a last batch that
   small; since 0.8.2) on AVX512-BF16 keep the kernels of Dense and of
   the convolutions that run on bf16 (but where AMX computes them)
   rounded to bf16, made at the first such call after the weights change
   and reused until a call that may change the model (any call on m but
   the predict calls): such a call reads half the kernels' float32 bytes
   and rounds none of them; the results are the same bits. The memory:
   half of those kernels' float32 size (at most 256 MB; beyond, they are
   rounded on each call) in each workspace that predictions run in (the
   model, and each inference copy that concurrent predictions made),
   freed with the model.

   Sets the model's policy; any time (before or after nnl_compile, between
   fits); it applies from the next nnl_fit, nnl_evaluate or predict call
   and is not saved in model files. policy is read during the call only.
   Errors (the model keeps its policy): NNL_ERR_ARGUMENT for NULL or another
   name (the message lists the accepted ones); NNL_ERR_UNSUPPORTED for
   "mixed_bfloat16" on a CPU without AVX512-BF16 (the message names the
   missing feature; no silent fallback to float32) or on a model on a GPU
   (nnl_set_device; and nnl_set_device refuses a GPU for a model in
   mixed_bfloat16). Like the other model setters: not concurrently with
   other calls on the same model. */
NNL_API int nnl_set_precision(nnl_model *m, const char *policy);
/* The model's policy: "float32" or "mixed_bfloat16" (a static string,
   owned by the library); "" for a NULL model. Like nnl_get_device. */
NNL_API const char *nnl_get_precision(const nnl_model *m);


/* ==== Data-parallel training over MPI (since 0.4) ==========================
   Horovod's semantics: every rank (process) holds a replica of the model,
   computes the gradients of its own part of each batch, the gradients are
   averaged over the ranks (MPI_Allreduce, weighted by each rank's true
   sample count), and every replica applies the same update, so the
   replicas never drift. Present in every build; they do MPI work only in a
   library built with MPI (make MPI=1, CMake -DNNLITE_MPI=ON: nnlite.cpp
   compiled with -DNNL_MPI by mpicxx); elsewhere they return
   NNL_ERR_UNSUPPORTED naming the fix, and nnl_has_feature("mpi") is 0.

   What changes for a model given to nnl_distribute (a "distributed model"):
   - nnl_fit and nnl_evaluate are collective: every rank of the
     communicator calls them, in the same order, with the same options
     (epochs, batch_size, shuffle, seed, initial_epoch, validation_split;
     checked: a mismatch is NNL_ERR_ARGUMENT on every rank). Arguments are
     checked on every rank before anything runs and the ranks agree: when
     one rank's call fails (a wrong shape, a NaN in its data), every rank
     returns that status and message, followed by "(on rank R of N)". A rank that
     stops calling (it crashed, or left the run) makes the others fail with
     NNL_ERR_DISTRIBUTED after NNL_MPI_TIMEOUT seconds (environment; default
     600, 0 waits forever); mpirun ends the job when a process dies.
   - At the start of each nnl_fit, rank 0's weights, optimizer state (slots,
     iteration count, learning rate) and RNG are broadcast, so every replica
     starts equal even if the ranks built or loaded them differently. At the
     end, a checksum of the trainable weights is compared across the ranks
     (NNL_ERR_INTERNAL if they differ: a bug).
   - batch_size is per rank (Horovod's convention): a step trains on
     batch_size x ranks samples. With NNL_GLOBAL_BATCH, batch_size is the
     step's total, split over the ranks. The common learning-rate rule for
     a larger global batch: nnl_scale_learning_rate.
   - Data (flags): NNL_DATA_SHARDED (the default): every rank passes the
     same whole dataset; each epoch's permutation is the same on every rank
     (same seed and epoch) and each step's global batch of G samples,
     positions s*G .. s*G+G-1 of it, is split by stride: rank r takes the
     positions j = r, r+N, r+2N, ... of the batch. Every sample is used
     exactly once per epoch, nothing is padded or dropped; in the last,
     shorter batch a rank may get fewer samples, or none (it still takes
     part in the reduction). The result equals one process training on the
     global batch, up to the rounding of the different summation order.
     Validation data (validation_split or x_val) and nnl_evaluate are split
     the same way, and their sums are reduced: every rank gets the metrics
     of the whole data. NNL_DATA_LOCAL: each rank passes its own samples
     (e.g. generated in situ; their counts may differ), all of them are
     used: each rank shuffles its own, the epoch has as many steps as the
     rank with most batches needs, and ranks that run out contribute empty
     batches; validation and nnl_evaluate reduce over every rank's data.
   - Stateful layers keep the state of their own rows on each rank: lay a
     text stream into batch_size x ranks rows (nnl_lm_windows) and rank r
     gets rows r, r+N, ...; the sample count must be a multiple of the
     global batch.
   - BatchNormalization computes batch statistics per rank (as Horovod);
     its moving averages are rank 0's after the next broadcast. With
     NNL_SYNC_BATCHNORM (Horovod's SyncBatchNormalization, PyTorch's
     SyncBatchNorm) the batch mean and variance, and their gradients, are
     those of the global batch: N ranks then train as one process on the
     global batch, BatchNormalization included.
   - Rank 0 alone prints progress (other ranks: verbose 0) and writes:
     nnl_save_model, nnl_save_weights, nnl_save_weights_npz and
     nnl_plot_history on the other ranks write nothing and return NNL_OK.
     A file written by a run of N ranks resumes on any number of ranks.
   - nnl_predict, nnl_predict_classes and the weight functions stay local
     (not collective).
   - Across nodes the gradients are summed in buckets of NNL_MPI_BUCKET_MB
     megabytes (environment; default 4), each started (MPI_Iallreduce) as
     soon as backward has produced it, while backward goes on with the
     layers below. When every rank is on one node (shared memory: the
     ranks' own cores move the bytes, so nothing overlaps) the default is
     one blocking MPI_Allreduce of all gradients after backward, which is
     faster there; setting NNL_MPI_BUCKET_MB chooses buckets anyway.
     An Embedding's gradient travels as the rows some rank's ids used (their
     union, then those rows only: TensorFlow's IndexedSlices under Horovod),
     or whole when most rows were used; NNL_MPI_SPARSE=0 (environment)
     always sends it whole. The result is the same either way.
     A non-finite loss or gradient on any rank stops every rank with the
     same NNL_ERR_NUMERIC, before the update. A fit callback that returns
     nonzero on any rank stops every rank after the same batch.
   - Results are bit-identical from run to run for the same number of ranks.
   The model keeps a duplicate of the communicator (MPI_Comm_dup: its
   messages never mix with the program's), freed by nnl_model_free; free
   distributed models before MPI_Finalize.
   - On GPUs (nnl_set_device; since 0.7, compiled and checked on the CPU but
     not yet run on a GPU): each rank trains on its device and the
     gradients are reduced as above, bucket by bucket while backward runs:
     each bucket is copied from the device into pinned host memory, summed
     by the host MPI, and the reduced gradients go back to the device in one
     copy. With a CUDA-aware Open MPI (MPIX_Query_cuda_support() == 1;
     NNL_MPI_CUDA_AWARE=0 in the environment declines it) MPI sums device
     memory directly and Embedding gradients travel whole. The reduction is
     the host's in the same order, so runs stay bit-identical from run to
     run, and N ranks on GPUs match N ranks on the CPU within float32
     rounding. Synchronised BatchNormalization (NNL_SYNC_BATCHNORM) stays
     on the CPU in this version (refused on a GPU by name).
   nnlite makes MPI calls only on the
   thread that calls it, never on its workers: MPI initialised with at least
   MPI_THREAD_FUNNELED is required, MPI_THREAD_SERIALIZED when nnl_fit is
   called from a thread other than the one that initialised MPI (checked:
   NNL_ERR_STATE). */

#define NNL_DATA_SHARDED 0 /* every rank passes the same data; each uses its shard */
#define NNL_DATA_LOCAL 1   /* each rank passes its own data; all of it is used */
#define NNL_GLOBAL_BATCH 2 /* nnl_fit's batch_size is the global batch, not per rank */
#define NNL_SYNC_BATCHNORM 4 /* BatchNormalization's batch statistics over all ranks */

/* Initialises MPI (MPI_Init_thread with MPI_THREAD_FUNNELED) unless it is
   already initialised; argc and argv may be NULL. A program that
   initialises MPI itself need not call it. Not thread-safe: call it once,
   from the main thread, before any distributed call. */
NNL_API int nnl_mpi_init(int *argc, char ***argv);
/* Finalises MPI if nnl_mpi_init (or nnl_distribute with comm NULL)
   initialised it and it is not finalised yet; otherwise does nothing: nnlite
   never finalises an MPI the program started. Free every distributed model
   first. */
NNL_API int nnl_mpi_finalize(void);
/* Makes m a distributed model over the communicator *comm (comm points to
   an MPI_Comm, e.g. &comm, or MPI_COMM_WORLD's address; NULL means
   MPI_COMM_WORLD, and initialises MPI with nnl_mpi_init(NULL, NULL) when no
   one has). Collective over the communicator: every rank calls it. flags:
   NNL_DATA_SHARDED or NNL_DATA_LOCAL, plus NNL_GLOBAL_BATCH and NNL_SYNC_BATCHNORM. Calling it
   again replaces the communicator and flags; comm pointing to
   MPI_COMM_NULL makes the model local again. Errors: NNL_ERR_UNSUPPORTED
   without MPI in this build (the message says how to build with it), or
   for a model on a GPU with NNL_SYNC_BATCHNORM and a BatchNormalization
   layer; NNL_ERR_STATE when MPI is finalised or initialised
   below MPI_THREAD_FUNNELED; NNL_ERR_ARGUMENT for unknown flags. A model
   already on a GPU stays there ("cuda:N"), or moves to this rank's device
   on its node when it was placed with "cuda" (nnl_set_device). */
NNL_API int nnl_distribute(nnl_model *m, const void *comm, int flags);
/* The same with a Fortran communicator handle (MPI_Fint: an integer from
   the mpi module, or the MPI_VAL of a type(MPI_Comm) of mpi_f08). */
NNL_API int nnl_distribute_f(nnl_model *m, int fortran_comm, int flags);
/* This process' rank and the number of ranks of m's communicator (0 and 1
   for a model that is not distributed). m NULL: MPI_COMM_WORLD's (0 and 1
   when MPI is not initialised or not built in). rank or size may be NULL. */
NNL_API int nnl_mpi_rank(const nnl_model *m, int *rank, int *size);
/* Multiplies m's learning rate by its number of ranks: the linear scaling
   rule (Goyal et al. 2017, Horovod's examples) for a global batch that is
   ranks times larger. Call it after nnl_compile, on every rank. Warm-up, if
   wanted, is the caller's (a callback that sets the learning rate).
   NNL_ERR_STATE before compile. */
NNL_API int nnl_scale_learning_rate(nnl_model *m);

#ifdef __cplusplus
}
#endif

#endif /* NNLITE_H */
