/* lstm_bench.cpp - one LSTM layer's forward + backward (training step
   without the update), as the bench table asks: batch 20, steps
   20/30/35, 200 and 650 units, inputs of the same width as the units (a
   stacked language model's second layer). Compiles nnlite.cpp in to reach
   the layer directly; bench/lstm_torch.py times PyTorch's nn.LSTM on the
   same shapes.

   usage:  lstm_bench [THREADS] [REPS]
   build:  g++ -std=c++17 -O2 -pthread -I. bench/lstm_bench.cpp -o build/bench/lstm_bench

   Prints, per configuration, the minimum over REPS runs (so other tenants
   of a shared machine do not inflate it) of forward and forward+backward,
   and the GFLOP/s of the GEMM arithmetic: forward 2 B T (F + u) 4u,
   backward twice that. */
#include "../nnlite.cpp"

static double min_time(const std::function<void()> &f, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = nnl::now_seconds();
        f();
        best = std::min(best, nnl::now_seconds() - t);
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, reps = argc > 2 ? atoi(argv[2]) : 10;
    nnl_set_threads(threads);
    printf("# nnlite LSTM layer, %d thread(s), min of %d runs\n", nnl_get_threads(), reps);
    printf("%-8s %5s %5s %5s %10s %12s %10s\n", "units", "batch", "steps", "in", "fwd_ms", "fwd+bwd_ms", "GFLOP/s");
    nnl::FpScope fp; /* FTZ/DAZ as fit runs */
    for (int u : {200, 650})
        for (int T : {20, 30, 35}) {
            const int B = 20, F = u;
            nnl_model m;
            nnl_model_set_seed(&m, 1);
            std::string spec = nnl::format("LSTM(%d, return_sequences=True, input_shape=(%d, %d))", u, T, F);
            if (nnl_add(&m, spec.c_str()) != NNL_OK) {
                fprintf(stderr, "%s\n", nnl_last_error());
                return 1;
            }
            nnl::Layer &L = *m.layers[0];
            m.ensure_batch(B);
            std::vector<float> x((size_t)(B * T * F)), y((size_t)(B * T * u)), dy(y.size()), dx(x.size());
            nnl::Rng r(3);
            for (auto &v : x) v = (float)(r.uniform() * 2 - 1);
            for (auto &v : dy) v = (float)(r.uniform() * 2 - 1) * 1e-2f;
            nnl::Ctx c;
            c.training = true;
            double tf = min_time([&] { L.forward(x.data(), y.data(), B, c); }, reps);
            double tb = min_time([&] {
                L.forward(x.data(), y.data(), B, c);
                L.backward(x.data(), y.data(), dy.data(), dx.data(), B, c);
            }, reps);
            double flops = 3.0 * 2.0 * B * T * (double)(F + u) * 4.0 * u;
            printf("%-8d %5d %5d %5d %10.3f %12.3f %10.2f\n", u, B, T, F, tf * 1e3, tb * 1e3, flops / tb * 1e-9);
        }
    return 0;
}
