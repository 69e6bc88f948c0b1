/* profile_layers.cpp - where the time of one training step goes, layer by
   layer, for a benchmark model (bench/models.h), and how large the model's
   buffers are. Compiles nnlite.cpp in (as tests/unit.cpp does) to reach the
   layers directly.

   usage: profile_layers MODEL BATCH [THREADS] [REPS]
   (PROFILE_PRECISION=mixed_bfloat16 in the environment: the layers on the
   bf16 kernel table)
   build: g++ -std=c++17 -O2 -pthread -I. bench/profile_layers.cpp -o build/bench/profile_layers

   For every layer: forward and backward time (the minimum over REPS runs,
   so other tenants of a shared machine do not inflate it), the arithmetic of
   its GEMMs (2*M*N*K per product) and the GFLOP/s that makes. The last lines
   give the weights, gradients and activation arena in MB. */
#include "../nnlite.cpp"

#include "models.h"

static double min_time(const std::function<void()> &f, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = nnl::now_seconds();
        f();
        best = std::min(best, nnl::now_seconds() - t);
    }
    return best;
}

/* Multiply-adds * 2 of one layer's forward pass for one sample; backward
   costs about twice that (weight gradient and input gradient). */
static double layer_flops(const nnl::Layer &l) {
    if (auto *c = dynamic_cast<const nnl::Conv *>(&l))
        return 2.0 * (double)c->g.out_size() * (double)c->filters * (double)c->col_row();
    if (auto *d = dynamic_cast<const nnl::Dense *>(&l))
        return 2.0 * (double)(l.in.size() / l.in.last()) * (double)l.in.last() * (double)d->units;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL BATCH [THREADS] [REPS]\n", argv[0]);
        return 2;
    }
    const bench_model *bm = nullptr;
    for (auto &b : bench_models)
        if (!strcmp(b.name, argv[1])) bm = &b;
    if (!bm) {
        fprintf(stderr, "unknown model %s\n", argv[1]);
        return 2;
    }
    int64_t B = atoi(argv[2]);
    int threads = argc > 3 ? atoi(argv[3]) : 1, reps = argc > 4 ? atoi(argv[4]) : 20;
    nnl_set_threads(threads);
    try {
        nnl::Model m;
        m.seed = 1;
        m.rng.reseed(1);
        m.seeded = true;
        for (int i = 0; bm->layers[i]; i++) m.add(bm->layers[i]);
        m.compile(bm->optimizer, bm->loss, "accuracy");
        m.ensure_batch(B);
        nnl::Rng r(7);
        for (int64_t i = 0; i < B * m.input.size(); i++) m.act[0][i] = (float)r.uniform();
        for (int64_t i = 0; i < B * m.target_width(); i++) m.targets[i] = (float)(i % 10);
        std::vector<double> ms(m.metrics.size());
        /* PROFILE_PRECISION=mixed_bfloat16: the layers run on the bf16 kernels */
        const char *prec = getenv("PROFILE_PRECISION");
        bool bf = prec && !strcmp(prec, "mixed_bfloat16");
        if (prec && !bf) {
            fprintf(stderr, "PROFILE_PRECISION: only mixed_bfloat16\n");
            return 2;
        }
        if (bf && !nnl::gemm::bf16::hardware()) {
            fprintf(stderr, "PROFILE_PRECISION=mixed_bfloat16: this CPU has no AVX512-BF16 (or NNL_BF16 turns it off)\n");
            return 2;
        }
        nnl::PrecisionScope ps(false, bf ? &nnl::bf16_kernels : nullptr);
        printf("%s, batch %lld, %d thread(s), min of %d runs%s%s\n", bm->name, (long long)B, threads, reps,
               bf ? ", mixed_bfloat16 on " : "", bf ? nnl::K().name : "");
        printf("%-30s %9s %9s %10s %8s %8s %8s\n", "layer", "fwd ms", "bwd ms", "MFLOP/smp", "GFLOP/s", "act MB", "ws MB");
        double tf = 0, tb = 0, fl = 0;
        nnl::Ctx c;
        c.training = true;
        c.seed = 3;
        m.forward(B, true, 3);
        size_t L = m.layers.size();
        m.loss_and_grad(B, m.dact[L], ms.data());
        for (size_t i = 0; i < L; i++) {
            nnl::Layer &l = *m.layers[i];
            if (l.is_view()) continue;
            double f = min_time([&] { l.forward(m.act[i], m.act[i + 1], B, c); }, reps);
            /* backward may overwrite dy: refresh it from a copy each run */
            std::vector<float> dy(m.dact[i + 1], m.dact[i + 1] + B * l.out.size());
            double b = min_time(
                [&] {
                    std::copy(dy.begin(), dy.end(), m.dact[i + 1]);
                    l.backward(m.act[i], m.act[i + 1], m.dact[i + 1], m.dact[i], B, c);
                },
                reps);
            double fs = layer_flops(l);
            printf("%-30s %9.3f %9.3f %10.3f %8.1f %8.2f %8.2f\n", (l.name + " " + l.cls).c_str(), 1e3 * f, 1e3 * b,
                   fs / 1e6, fs > 0 ? 3 * fs * (double)B / (f + b) / 1e9 : 0.0,
                   (double)(B * (l.in.size() + l.out.size())) * 4 / 1e6, (double)l.workspace(B) * 4 / 1e6);
            tf += f;
            tb += b;
            fl += 3 * fs;
        }
        double opt = min_time([&] { m.opt->apply(m.slices.data(), (int)m.slices.size()); }, reps);
        printf("%-30s %9s %9.3f\n", "optimizer step", "", 1e3 * opt);
        double step = tf + tb + opt;
        printf("%-30s %9.3f %9.3f  total %.3f ms/step = %.0f samples/s, %.1f GFLOP/s overall\n", "sum", 1e3 * tf,
               1e3 * tb, 1e3 * step, (double)B / step, fl * (double)B / step / 1e9);
        printf("weights %.2f MB, gradients %.2f MB, activation arena (batch %lld) %.2f MB\n",
               (double)m.W.size() * 4 / 1e6, (double)m.G.size() * 4 / 1e6, (long long)B,
               (double)m.arena.size() * 4 / 1e6);
    } catch (const nnl::Error &e) {
        fprintf(stderr, "%s\n", e.msg.c_str());
        return 1;
    }
    return 0;
}
