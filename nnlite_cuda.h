/* nnlite_cuda.h - the internal interface between nnlite.cpp and the CUDA
   backend nnlite_cuda.cu. NOT public: not installed, no ABI promise. Plain
   C++17 (no CUDA headers), so nnlite.cpp compiled with -DNNL_CUDA by g++
   includes it as is.

   Every pointer named d_* (or any array argument of a kernel) is a device
   pointer. Kernels are launched on the current context's stream and return
   without waiting, except where a function returns a value computed on the
   device (sumsq, ...), which waits for the stream. Each function mirrors the
   CPU kernel of the same name in nnlite.cpp section 2 (struct Kernels): the
   same arguments, layouts and results (to float32 rounding).

   Errors: a failing CUDA call calls the handler installed by
   set_error_handler (nnlite.cpp's raises nnl::Error, i.e. throws), with an
   nnlite status code and a message that holds CUDA's own. */
#ifndef NNLITE_CUDA_H
#define NNLITE_CUDA_H

#include <cstddef>
#include <cstdint>

namespace nnl_cuda {

/* nnl::Act, value by value (nnlite.cpp static_asserts the correspondence). */
enum {
    A_LINEAR, A_RELU, A_SIGMOID, A_TANH, A_SOFTMAX, A_LEAKY_RELU, A_ELU, A_SELU, A_GELU, A_SOFTPLUS, A_SOFTSIGN,
    A_SWISH, A_HARD_SIGMOID, A_EXPONENTIAL, A_COUNT
};

/* nnl::Window, field by field. */
struct Win {
    int64_t C;
    int64_t in[3], out[3], k[3], s[3], d[3], pad[3];
};

typedef void (*ErrorHandler)(int status, const char *msg);
void set_error_handler(ErrorHandler h);
/* The nnlite status of CUDA error code cuda_error (a cudaError_t): 0 for
   cudaSuccess, NNL_ERR_MEMORY, NNL_ERR_INTERNAL (nnlite's own mistake) or
   NNL_ERR_DEVICE (the GPU or driver failed; unknown codes too). *hint (when
   hint is not NULL): NULL or a clause the message adds (the context is
   lost, update the driver, ...). Pure: no CUDA call, works without a GPU. */
int error_status(int cuda_error, const char **hint);

/* ---- devices and contexts ---- */
int device_count();  /* 0 when there is no driver or no device; never fails */
/* Why device_count() is 0: 0 when there simply is no NVIDIA driver or no
   device; NNL_ERR_DEVICE when a driver is there but cannot serve (older
   than the runtime, devices busy or prohibited...), CUDA's message in buf
   (cap bytes). Never fails. */
int device_count_error(char *buf, size_t cap);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" of device i */
void device_name(int i, char *buf, size_t cap);
struct Context;                 /* a device, a stream and scratch: one per model */
Context *context_create(int device); /* fails through the handler */
void context_free(Context *c);  /* never fails; waits for the stream first */
/* Makes c current on the calling thread (and cudaSetDevice's its device);
   NULL: none. The kernels below run in the current context. */
void context_use(Context *c);
Context *context_current();
void set_tf32(Context *c, bool on); /* GEMM path: tensor cores (TF32) or FP32 */
bool tf32_available(Context *c);    /* compute capability >= 8.0 */
void synchronize();                 /* waits for the current context's stream */

/* ---- memory (current context's device) ---- */
void *dev_alloc(size_t bytes); /* caching: freed blocks are reused, not returned to CUDA */
void dev_free(void *p);        /* NULL is fine */
void memset0(void *d, size_t bytes);
void upload(void *d, const void *h, size_t bytes);   /* async when h is pinned */
void download(void *h, const void *d, size_t bytes); /* waits */
/* Pins [h, h+bytes) in place for asynchronous copies; unpin undoes it. */
void pin(void *h, size_t bytes);
void unpin(void *h);
void *host_alloc(size_t bytes); /* pinned host memory */
void host_free(void *h);        /* NULL is fine; never fails */
/* Events on the current context's stream: record marks the work queued so
   far; wait blocks until it has run. */
void *event_create();
void event_record(void *e);
void event_wait(void *e);
void event_free(void *e); /* NULL is fine; never fails */

/* ---- kernels (mirror nnl::Kernels) ---- */
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void sgemm_bias_act(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, const float *bias, int act);
void bias_add(float *y, const float *b, int64_t rows, int64_t n);
void bias_grad(const float *dy, float *db, int64_t rows, int64_t n);
void act_forward(int act, const float *x, float *y, int64_t rows, int64_t n);
void act_backward(int act, const float *x, const float *y, const float *dy, float *dx, int64_t rows, int64_t n);
/* the CPU's dropout_forward with the seed mix64(step ^ salt): step is the
   training step's seed (kept in device memory, see CUDA graphs below),
   salt the layer's own bits */
void dropout_forward(const float *x, float *y, float *mask, int64_t n, float rate, uint64_t step, uint64_t salt);
void mul(const float *a, const float *b, float *y, int64_t n);
void relu_bits(const float *y, uint32_t *bits, int64_t n);
void relu_bits_backward(const uint32_t *bits, const float *dy, float *dx, int64_t n);
void copy(const float *x, float *y, int64_t n);
double sumsq(const float *x, int64_t n, bool *finite);
void sumsq_async(const float *x, int64_t n, double *d_out); /* the same sum into device memory, no wait */
void transpose(const float *x, float *y, int64_t batch, int64_t R, int64_t C);
void im2col(const Win &g, const float *x, float *col, int64_t n);
void col2im(const Win &g, const float *col, float *dx, int64_t n);
/* arg: the tap of its window each max output chose, pool_arg_bytes(g)
   bytes each (nnlite.cpp's Kernels::pool_forward) */
inline int pool_arg_bytes(const Win &g) { return g.k[0] * g.k[1] * g.k[2] < 255 ? 1 : 4; }
void pool_forward(const Win &g, bool max, const float *x, float *y, void *arg, int64_t n);
void pool_backward(const Win &g, bool max, const float *dy, const void *arg, float *dx, int64_t n);
void moments(const float *x, int64_t rows, int64_t C, float *mean, float *var);
void scale_shift(const float *x, float *y, int64_t rows, int64_t C, const float *scale, const float *shift);
void bn_backward(const float *x, const float *dy, float *dx, int64_t rows, int64_t C, const float *mean,
                 const float *invstd, const float *gamma, float *dgamma, float *dbeta, bool training);
/* one thread per channel; unfused float operations (no FMA contraction), so
   the results are the CPU's bit for bit */
void bn_prepare(bool training, int64_t C, float momentum, float eps, float *mm, float *mv, const float *gamma,
                const float *beta, float *mean, float *invstd, float *scl, float *sh);
void global_pool_forward(bool max, bool cf, const float *x, float *y, int64_t B, int64_t S, int64_t C);
void global_pool_backward(bool max, bool cf, const float *x, const float *y, const float *dy, float *dx, int64_t B,
                          int64_t S, int64_t C);
void zero_pad_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                      int64_t bo, int64_t l, int64_t r);
void zero_pad_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t t,
                       int64_t bo, int64_t l, int64_t r);
void upsample_forward(const float *x, float *y, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                      int64_t sw);
void upsample_backward(const float *dy, float *dx, int64_t n, int64_t H, int64_t W, int64_t inner, int64_t sh,
                       int64_t sw);
/* Embedding and Masking. ids: floats, integral and in range (checked on the
   host before the batch ran). */
void embedding_forward(const float *ids, const float *E, float *y, int64_t rows, int64_t dim);
/* Embedding's gradient, no atomics: G (V, dim) zeroed, then one thread per
   (distinct id, column) sums that id's dy rows in increasing row order, as
   the CPU adds them (the same floats bit for bit). h_csr is HOST memory,
   the ids sorted by nnlite.cpp (embedding_rows): [uniq (U) | start (U + 1)
   | order (rows)], id uniq[k] held by the rows order[start[k] ..
   start[k + 1]); copied to the device before the call returns. */
void embedding_grad(const int32_t *h_csr, int64_t U, int64_t rows, const float *dy, float *G, int64_t V,
                    int64_t dim);
/* steps rows of F values: mask[r] = 1 when some value of row r differs from
   value, else 0; y (NULL: the mask alone) = the row where kept, else 0 */
void masking_forward(const float *x, float *y, float *mask, int64_t steps, int64_t F, float value);
void masking_backward(const float *mask, const float *dy, float *dx, int64_t steps, int64_t F);
/* Recurrent layers. B rows of u values: dst[b * ldd + j] = src[b * lds +
   j], or 0 when src is NULL; with a step mask (B, T; may be NULL) only the
   rows b masked at time t (mask[b * T + t] == 0). */
void rnn_rows(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t B, int64_t u, const float *mask,
              int64_t T, int64_t t);
/* One LSTM step over B rows (nnlite.cpp's CellArgs, field by field, device
   pointers): row b of each array at p + b * ld. Forward: Z (pre-activations of i, f, g, o) becomes the gates, c = f
   cp + i g, h = o act(c); a row masked at t keeps hp and cp; the output y
   at step s. Backward: dh += the output's gradient; Z becomes the
   pre-activations' gradients, dc dL/dc_{s-1}; a masked row's Z becomes 0
   (dh, dc pass on); first: dh and dc start at 0. One thread per (row,
   unit), no reductions. */
struct CellStep {
    int64_t B, u, T, t, s;
    int act, ract;
    float *Z;
    const float *hp, *cp;
    float *c, *h;
    int64_t ldz, ldh, ldcp, ldhn;
    const float *mask;
    float *y;
    const float *dy;
    float *dh, *dc;
    bool seq, zero_masked, first;
    /* GRU (gates z, r, h): rb (B, 3u with reset_after, else 2u), hr (stride
       ldh), R (stride ldh), dn, tg (B, 3u), tmp (B, u); phase 0 / 1 around
       the product that reset_after=False puts inside a step */
    const float *rb, *hr;
    float *R, *dn, *tg, *tmp;
    int phase;
    bool reset_after, drop_h;
};
void lstm_forward(const CellStep &a);
void lstm_backward(const CellStep &a);
/* One GRU step (nnlite.cpp's cpu_gru_forward / cpu_gru_backward, value by
   value): forward phase 0 activates z and r (rb added) and writes R (the
   recurrent h part, reset_after, or r hr); with reset_after, or in phase 1,
   hh, h, the step mask and the output. Backward phase 0: dh (first: from
   0) += the output's gradient, tg = the gates, Z the gates' gradients, dn
   = dh z, R (reset_after) the recurrent h part's; phase 1 (reset_after
   False): dr from tmp = d(r h_{s-1}), dn += tmp r (drop_h: tmp *= r), act'
   of z and r. One thread per (row, unit). */
void gru_forward(const CellStep &a);
void gru_backward(const CellStep &a);
/* One SimpleRNN step (cpu_simple_forward / cpu_simple_backward): h =
   act(Z), a masked row keeps hp, the output; backward dh (first: from 0)
   += the output's gradient, tg = Z, Z = dh act'(h) (0 where masked). */
void simple_forward(const CellStep &a);
void simple_backward(const CellStep &a);
/* recurrent dropout (nnlite.cpp's cpu_dropout_mask, cpu_mul_rows, cpu_add,
   the same bits): dropout_forward's mask alone; y[r * ldy + j] (=, or +=
   with add) a[r * lda + j] * m[(r / rep) * ldm + j], the product rounded
   before the add (y may be a); y = a + b */
void dropout_mask(float *mask, int64_t n, float rate, uint64_t seed);
void mul_rows(const float *a, int64_t lda, const float *m, int64_t ldm, int64_t rep, float *y, int64_t ldy,
              int64_t rows, int64_t n, bool add);
void add(const float *a, const float *b, float *y, int64_t n);
/* Bidirectional (cpu_bidir_merge, cpu_bidir_split, the same bits): B
   samples of T rows (T = 1: the last outputs) of u values; row (s, t) of
   f meets row (s, T-1-t) of b. mode 0 concat, 1 sum, 2 mul, 3 ave. */
void bidir_merge(int mode, const float *f, const float *b, float *y, int64_t B, int64_t T, int64_t u);
void bidir_split(int mode, const float *dy, const float *f, const float *b, float *df, float *db, int64_t B,
                 int64_t T, int64_t u);

/* ---- losses: sparse categorical cross-entropy from logits, fused ----
   z (rows, C) logits, labels (rows) class ids as floats. Writes dz =
   (softmax(z) - onehot) * scale when dz is not NULL, and returns
   sum_r (logsumexp(z_r) - z_r[label]) and, in *hits, the number of rows
   whose argmax is the label (first maximum wins, as std::max_element). */
double sparse_xent(const float *z, const float *labels, int64_t rows, int64_t C, float scale, float *dz,
                   double *hits);
/* the same, the two sums (loss, hits) into d_out (device), no wait */
void sparse_xent_async(const float *z, const float *labels, int64_t rows, int64_t C, float scale, float *dz,
                       double *d_out);

/* ---- losses and metrics: every one of nnlite.cpp section 4 ----
   The kinds of nnl::LossKind and nnl::MetricKind, value by value
   (nnlite.cpp static_asserts the correspondence). */
enum { LK_SPARSE_CCE, LK_CCE, LK_BCE, LK_MSE, LK_MAE, LK_HUBER };
enum { MK_SPARSE_ACC, MK_CAT_ACC, MK_BIN_ACC, MK_SPARSE_TOPK, MK_TOPK, MK_MSE, MK_MAE, MK_PERPLEXITY };
struct LossSpec {
    int kind;    /* LK_* */
    bool logits; /* src holds logits: from_logits, or a fused softmax/sigmoid output */
    float delta; /* Huber */
    float scale; /* the gradient's factor, as Loss::run: 1/B/positions (cross-entropies), 1/B/D (the others) */
};
struct MetricSpec {
    int kind; /* MK_* */
    int k;    /* top-k */
    float threshold; /* binary accuracy */
};
constexpr int LOSS_MAX_METRICS = 32;
/* Loss::run and Metric::run (no mask) on n = B * D outputs. src: what the
   loss reads (the logits of a fused output, else the outputs y); y: the
   outputs, which the metrics read; t: the targets (n / C class ids for
   LK_SPARSE_CCE, else n values). C: the classes (the row length of the
   cross-entropies and of the accuracy metrics). Writes dy (n values) when
   not NULL, exactly as Loss::run. Returns the sum of the per-row (cross-
   entropies) or per-element losses, and in msum[k] the sum of metric k's
   per-row hits (accuracies) or per-element values (binary accuracy hits,
   squared or absolute errors); 0 for perplexity. The caller divides by the
   positions D / C or by D as Loss::run and Metric::run do. nm at most
   LOSS_MAX_METRICS. Fixed-order reductions, one copy of 1 + nm doubles back. */
double loss_metrics(const LossSpec &L, const float *src, const float *y, const float *t, int64_t n, int64_t C,
                    float *dy, int nm, const MetricSpec *ms, double *msum);
/* the same, the 1 + nm sums (loss, then metric k) into d_out (device), no
   wait */
void loss_metrics_async(const LossSpec &L, const float *src, const float *y, const float *t, int64_t n, int64_t C,
                        float *dy, int nm, const MetricSpec *ms, double *d_out);

/* ---- optimizers: one fused kernel per tensor ---- */
enum OptKind { OPT_SGD, OPT_SGD_MOMENTUM, OPT_RMSPROP, OPT_ADAGRAD, OPT_ADADELTA, OPT_ADAM, OPT_ADAMAX, OPT_NADAM };
/* The per-step scalars, computed on the host exactly as the CPU optimizers
   compute them (see nnlite.cpp section 5). */
struct OptStep {
    int kind;
    float lr, momentum, rho, eps, b1c, b2c, b2; /* b1c = 1 - beta_1, b2c = 1 - beta_2 */
    float alpha, wd, a1, a2, vb, step;          /* Adam's alpha, AdamW's wd*lr, Nadam's a1 a2 vb, Adamax' step */
    bool nesterov, centered, amsgrad;
};
/* s goes to device memory (see CUDA graphs below), which the kernel reads */
void opt_update(const OptStep &s, float *w, const float *g, float *s0, float *s1, float *s2, int64_t n);
void clip_value(float *g, int64_t n, float v); /* g = clamp(g, -v, v) */
void scale(float *g, int64_t n, float f);     /* g *= f */

/* ---- CUDA graphs: a training step captured once, replayed ----
   Capture records the kernels queued on the current context's stream
   between capture_begin and capture_end instead of running them;
   graph_launch runs the recorded kernels (same arguments, same order).
   Nothing that changes from step to step may be a kernel argument: the
   dropout step seed and the optimizer step are read from device slots,
   which set_step_seed / set_opt_step fill with a one-thread kernel
   (dropout_forward and opt_update fill them themselves when not capturing
   and the value differs; inside a capture they only check that the slot
   already holds theirs, and a mismatch makes capture_end fail). Losses,
   metrics and sums of squares that a step reads land in results() (RESULTS
   doubles, device) and come down with results_down into results_host()
   (pinned), read after synchronize(). Inside a capture nothing may wait
   for the stream, allocate or free: scratch growth fails (it bumps
   scratch_generation() otherwise, which makes graphs captured before it
   stale). */
constexpr int RESULTS = 64;
struct Graph;
bool capturing(); /* the current context's stream is being captured */
uint64_t scratch_generation();
void capture_begin();
/* NULL when the capture failed or held a mismatched step value (fall back
   to running the step without a graph); the capture is over either way */
Graph *capture_end();
void capture_abort(); /* ends a capture after an error, discarding it; never fails */
void graph_launch(Graph *g);
void graph_free(Graph *g); /* NULL is fine; never fails */
void set_step_seed(uint64_t seed);
void set_opt_step(const OptStep &s);
double *results();
const double *results_host();
void results_down(int n); /* results()[0, n) -> results_host(), queued */

} // namespace nnl_cuda

#endif
