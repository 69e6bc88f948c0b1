/* Kernels and the spec parser. Included by unit.cpp. */
#include <array>
#include <random>

static std::vector<float> random_vec(size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

/* Reference C = alpha op(A) op(B) + beta C in double. */
static void naive_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = (float)(alpha * s + (beta == 0.f ? 0.0 : (double)beta * C[i * ldc + j]));
        }
}

TEST_CASE("sgemm matches a naive product for every transpose, odd sizes and block edges") {
    struct Case { int M, N, K; } cases[] = {{1, 1, 1}, {4, 2, 2}, {7, 17, 5}, {6, 16, 256}, {13, 33, 300},
                                           {200, 35, 70}, {97, 3100, 9}, {250, 130, 520},
                                           {3, 40, 37}, {2, 300, 50}, {4, 9, 1000}, {1, 300, 41}, {1, 129, 784}, {3, 70, 5},
                                           /* A read in place (N <= 128), partial last row panel */
                                           {121, 128, 784}, {47, 97, 260},
                                           /* few rows split by columns over the threads (N K >= 65536) */
                                           {3, 200, 700}, {2, 1000, 70},
                                           /* 5-16 rows: B read in place (AVX2, AVX-512), split by columns;
                                              16 rows of a B over NNL_GEMM_SMALL_M_AVX2_B floats: packed */
                                           {16, 128, 784}, {9, 200, 700}, {8, 1050, 2000}, {16, 1050, 2000},
                                           /* AVX-512: the last N % 16 <= 4 columns as dot products, over
                                              row blocks (M >= N) or in the last column block (M < N) */
                                           {250, 50, 520}, {40, 130, 300}, {30, 4, 17}, {20, 68, 64},
                                           /* C over NNL_GEMM_PREFETCH_C_B with rows NNL_GEMM_PREFETCH_C_LD
                                              apart, two depth blocks: the kernel prefetches its tiles */
                                           {150, 900, 300}};
    REQUIRE(150.0 * 900 * sizeof(float) > NNL_GEMM_PREFETCH_C_B);
    REQUIRE(900 + 2 >= NNL_GEMM_PREFETCH_C_LD);
    REQUIRE(300 > nnl::gemm::KC);
    for (int threads : {1, 2}) {
        nnl::g_threads = threads;
        for (auto c : cases)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (float beta : {0.f, 0.5f}) {
                        int lda = (ta ? c.M : c.K) + 3, ldb = (tb ? c.K : c.N) + 1, ldc = c.N + 2;
                        auto A = random_vec((size_t)(ta ? c.K : c.M) * lda, 1);
                        auto B = random_vec((size_t)(tb ? c.N : c.K) * ldb, 2);
                        auto C0 = random_vec((size_t)c.M * ldc, 3);
                        auto C1 = C0;
                        nnl::K().sgemm(ta, tb, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, beta, C0.data(), ldc);
                        naive_gemm(ta, tb, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, beta, C1.data(), ldc);
                        double worst = 0;
                        for (int i = 0; i < c.M; i++)
                            for (int j = 0; j < c.N; j++)
                                worst = std::max(worst, (double)std::fabs(C0[i * ldc + j] - C1[i * ldc + j]) /
                                                            (1.0 + std::fabs(C1[i * ldc + j])));
                        INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << ta << " tb=" << tb
                                  << " threads=" << threads);
                        CHECK(worst < 1e-4 * std::sqrt((double)c.K));
                        /* the padding between rows (ldc > N) is never written */
                        for (int i = 0; i < c.M; i++)
                            for (int j = c.N; j < ldc; j++) CHECK(C0[i * ldc + j] == C1[i * ldc + j]);
                    }
    }
    nnl::g_threads = 0;
}

TEST_CASE("sgemm: A read in place (A or A^T) and B packed by the kernel's first tile give the bits of the packed path") {
    /* sgemm_block reads A where it lies when B has at most
       NNL_GEMM_INPLACE_PANELS panels (A^T too: six consecutive floats of
       each of A's rows), and the first kernel call on a pair of whole
       panels of a row-major B (AVX-512: ukr2_pack), or on one (AVX2:
       ukr_pack), packs them as it reads them. sgemm_packed packs A and all of B first, then runs the
       same kernels over the same blocks: every element the same sum in the
       same order, so the same bits. N a multiple of 16 (no dot-product
       columns); odd panel counts (a pair and a single panel), M with a
       partial row panel, two depth blocks (K > KC), several row blocks
       (M > MC), B wider than the in-place bound (N = 144, 160). */
    struct Case { int M, N, K; } cases[] = {{120, 128, 784}, {121, 128, 300}, {47, 96, 260}, {200, 48, 70},
                                           {17, 32, 5}, {250, 144, 300}, {33, 160, 257}, {784, 128, 120}};
    REQUIRE(300 > nnl::gemm::KC);
    REQUIRE(250 > nnl::gemm::MC);
    for (int threads : {1, 2})
        for (auto c : cases)
            for (int ta = 0; ta < 2; ta++)
                for (float beta : {0.f, 0.5f}) {
                    nnl::g_threads = threads;
                    REQUIRE_FALSE(nnl::gemm::narrow_transposed(ta, false, c.M, c.N, beta));
                    const int lda = (ta ? c.M : c.K) + 3, ldb = c.N + 5, ldc = c.N + 2;
                    auto A = random_vec((size_t)(ta ? c.K : c.M) * lda, 31);
                    auto B = random_vec((size_t)c.K * ldb, 32);
                    auto C0 = random_vec((size_t)c.M * ldc, 33), C1 = C0;
                    nnl::K().sgemm(ta, false, c.M, c.N, c.K, 1.f, A.data(), lda, B.data(), ldb, beta, C0.data(), ldc);
                    nnl::gemm::PackedB pb;
                    nnl::gemm::pack_b_all(false, B.data(), ldb, c.K, c.N, pb);
                    nnl::gemm::sgemm_packed(c.M, A.data(), lda, pb, beta, C1.data(), ldc, ta);
                    INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << ta << " beta=" << beta
                              << " threads=" << threads);
                    CHECK(memcmp(C0.data(), C1.data(), C0.size() * sizeof(float)) == 0);
                }
    nnl::g_threads = 0;
}

TEST_CASE("sgemm: a narrow weight gradient (A^T B, few columns) goes through its transpose, the same bits on any "
          "thread count") {
    /* gemm::narrow_transposed: C = A^T B of few columns is computed as C^T
       = B^T A and transposed (a classifier's Dense(10), a regression's
       Dense(1)). Against the product in double, with an epilogue (bias,
       ReLU) and C's row padding untouched; the same bits on 1, 2 and 3
       threads; beta != 0 and wide products keep the direct path. */
    struct Case { int M, N, K; } cases[] = {{128, 10, 120}, {500, 10, 512}, {784, 10, 128}, {128, 1, 120},
                                           {1000, 3, 64},  {37, 5, 300},   {300, 7, 1000}, {64, 2, 5}};
    for (auto c : cases) {
        /* the path under test is taken: with the AVX-512 kernels' 6 x 32
           tiles for every case, with 6 x 16 tiles (AVX2, portable) for the
           narrowest (10 of 16 columns is too full a tile); the rest of the
           checks hold either way */
        if (nnl::gemm::ukr2 || c.N <= 5) REQUIRE(nnl::gemm::narrow_transposed(true, false, c.M, c.N, 0.f));
        const int lda = c.M + 3, ldb = c.N + 1, ldc = c.N + 2;
        auto A = random_vec((size_t)c.K * lda, 21), B = random_vec((size_t)c.K * ldb, 22);
        auto bias = random_vec((size_t)c.N, 23);
        std::vector<float> ref((size_t)c.M * ldc, 7.f), first;
        naive_gemm(true, false, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, 0.f, ref.data(), ldc);
        for (int threads : {1, 2, 3}) {
            nnl::g_threads = threads;
            std::vector<float> C((size_t)c.M * ldc, 7.f), E((size_t)c.M * ldc, 7.f);
            nnl::K().sgemm(true, false, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, 0.f, C.data(), ldc);
            nnl::gemm::sgemm_ep(true, false, c.M, c.N, c.K, 1.5f, A.data(), lda, B.data(), ldb, 0.f, E.data(), ldc,
                                bias.data(), nnl::ACT_RELU);
            double worst = 0;
            int ep_bad = 0, pad = 0;
            for (int i = 0; i < c.M; i++) {
                for (int j = 0; j < c.N; j++) {
                    float r = ref[(size_t)i * ldc + j], v = C[(size_t)i * ldc + j];
                    worst = std::max(worst, (double)std::fabs(v - r) / (1.0 + std::fabs(r)));
                    ep_bad += E[(size_t)i * ldc + j] != std::max(0.f, v + bias[(size_t)j]);
                }
                for (int j = c.N; j < ldc; j++) pad += C[(size_t)i * ldc + j] != 7.f || E[(size_t)i * ldc + j] != 7.f;
            }
            INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " threads=" << threads);
            CHECK(worst < 1e-5 * std::sqrt((double)c.K));
            CHECK(ep_bad == 0);
            CHECK(pad == 0);
            if (threads == 1) first = C;
            CHECK(memcmp(C.data(), first.data(), C.size() * sizeof(float)) == 0);
        }
    }
    /* not taken: an accumulated gradient (beta != 0), a product transposed
       the other way, a wide one, one as full either way */
    CHECK_FALSE(nnl::gemm::narrow_transposed(true, false, 128, 10, 1.f));
    CHECK_FALSE(nnl::gemm::narrow_transposed(false, false, 128, 10, 0.f));
    CHECK_FALSE(nnl::gemm::narrow_transposed(true, false, 784, 128, 0.f));
    CHECK_FALSE(nnl::gemm::narrow_transposed(true, false, 2450, 20, 0.f));
    nnl::g_threads = 0;
}

TEST_CASE("sgemm: a column of C has the same bits whatever the product's width (narrow last panels)") {
    /* N = 50 and 20 end in a panel of 2 and 4 columns, which the AVX2 path
       computes with its 6 x 8 tile; N + 8 puts the same columns in a 16-wide
       tile. Both sum each element in the same order: the same bits. On
       AVX-512 the last N % 16 <= 4 columns are dot products along k
       (gemm::dot_cols): those columns have other bits than a panel's, the
       same on any thread count, within rounding of the wide product. */
    for (int threads : {1, 2})
        for (auto c : {std::array<int, 3>{196, 50, 500}, {784, 20, 25}, {13, 3, 300}, {40, 8, 7}, {7, 24, 600},
                         {40, 130, 300}, {20, 68, 64}}) {
            nnl::g_threads = threads;
            const int M = c[0], N = c[1], K = c[2], W = N + 8;
            auto A = random_vec((size_t)M * K, 11), B = random_vec((size_t)K * W, 12);
            std::vector<float> Bn((size_t)K * N);
            for (int k = 0; k < K; k++)
                for (int j = 0; j < N; j++) Bn[(size_t)k * N + j] = B[(size_t)k * W + j];
            for (float beta : {0.f, 0.5f}) {
                auto Cw = random_vec((size_t)M * W, 13);
                std::vector<float> Cn((size_t)M * N);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) Cn[(size_t)i * N + j] = Cw[(size_t)i * W + j];
                auto C1 = Cn;
                nnl::K().sgemm(false, false, M, W, K, 1.5f, A.data(), K, B.data(), W, beta, Cw.data(), W);
                nnl::K().sgemm(false, false, M, N, K, 1.5f, A.data(), K, Bn.data(), N, beta, Cn.data(), N);
                nnl::g_threads = 1;
                nnl::K().sgemm(false, false, M, N, K, 1.5f, A.data(), K, Bn.data(), N, beta, C1.data(), N);
                nnl::g_threads = threads;
                const int dt = nnl::gemm::dot_tail(false, N, K), dw = nnl::gemm::dot_tail(false, W, K);
                int diff = 0, far = 0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        float n = Cn[(size_t)i * N + j], w = Cw[(size_t)i * W + j];
                        if (j < N - dt && j < W - dw)
                            diff += n != w;
                        else
                            far += std::fabs(n - w) > 1e-5f * std::sqrt((float)K) * (1.f + std::fabs(w));
                    }
                INFO("M=" << M << " N=" << N << " K=" << K << " beta=" << beta << " threads=" << threads
                          << " dot columns " << dt);
                CHECK(diff == 0);
                CHECK(far == 0);
                CHECK(memcmp(Cn.data(), C1.data(), Cn.size() * sizeof(float)) == 0); /* any thread count */
            }
        }
    nnl::g_threads = 0;
}

TEST_CASE("the portable micro-kernel agrees with the SIMD one") {
    /* packed panels are 64-byte aligned in the library; the SIMD kernel relies on it */
    alignas(64) float A[6 * 40], B[16 * 40], c1[6 * 16], c2[6 * 16];
    auto a = random_vec(6 * 40, 4), b = random_vec(16 * 40, 5);
    std::copy(a.begin(), a.end(), A);
    std::copy(b.begin(), b.end(), B);
    nnl::gemm::ukr_generic(40, A, 1, 6, B, c1, 16, 1.f, 0.f, 6, 16);
    nnl::gemm::ukr(40, A, 1, 6, B, c2, 16, 1.f, 0.f, 6, 16);
    for (int i = 0; i < 96; i++) CHECK(c1[i] == doctest::Approx(c2[i]).epsilon(1e-5));
    /* A read in place: the same panel as a row-major 6 x 40 matrix */
    float R[6 * 40];
    for (int r = 0; r < 6; r++)
        for (int k = 0; k < 40; k++) R[r * 40 + k] = A[k * 6 + r];
    nnl::gemm::ukr(40, R, 40, 1, B, c2, 16, 1.f, 0.f, 6, 16);
    for (int i = 0; i < 96; i++) CHECK(c1[i] == doctest::Approx(c2[i]).epsilon(1e-5));
#if NNL_X86
    /* each SIMD kernel this CPU can run, on an odd depth and a partial tile */
    struct K {
        const char *name;
        bool ok;
        nnl::gemm::Ukr f;
    } ks[] = {{"avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), nnl::gemm::ukr_avx2},
              {"avx512", (bool)__builtin_cpu_supports("avx512f"), nnl::gemm::ukr_avx512}};
    for (auto &k : ks) {
        if (!k.ok) {
            MESSAGE("the " << k.name << " micro-kernel is not tested: this CPU lacks " << k.name);
            continue;
        }
        for (int kc : {39, 40}) {
            float e1[96], e2[96], e3[96];
            for (int i = 0; i < 96; i++) e1[i] = e2[i] = e3[i] = 0.25f * (float)i;
            nnl::gemm::ukr_generic(kc, A, 1, 6, B, e1, 16, 1.5f, 0.5f, 5, 13);
            k.f(kc, A, 1, 6, B, e2, 16, 1.5f, 0.5f, 5, 13); /* A packed */
            k.f(kc, R, 40, 1, B, e3, 16, 1.5f, 0.5f, 5, 13); /* A in place */
            for (int i = 0; i < 96; i++) {
                CHECK(e1[i] == doctest::Approx(e2[i]).epsilon(1e-5));
                CHECK(e1[i] == doctest::Approx(e3[i]).epsilon(1e-5));
            }
        }
    }
#endif
}

#if NNL_X86
/* The few-rows kernels of inference (batch 1-4) by ISA: sgemm picks only the
   widest one this CPU has, so each is called here directly, against the
   naive product. (Not against small_rows bit for bit: whether the compiler
   fuses its multiply-adds depends on the optimisation level; a -O1
   sanitizer build does not.) */
template <int R> static void small_rows_case(bool avx512) {
    /* N = 130 and K = 300: several k-blocks of the AVX2 kernel; N = 1100:
       several column groups of it, the last one partial, and several
       passes of the AVX-512 kernel. Strides: ldb = N + 1 (rows start
       anywhere), and ldb a multiple of 16 with B `shift` floats past a
       64-byte line (the AVX-512 kernel lays its vectors on the lines, its
       first lanes before B and C masked off), also with ldb = N (one row
       read as one stream); C sits `shift` floats into its buffer, whose
       head must stay untouched. */
    for (int N : {1, 7, 8, 9, 16, 17, 24, 25, 63, 64, 65, 128, 130, 192, 1100})
        for (int K : {1, 5, 300})
            for (int ta = 0; ta < 2; ta++)
                for (float beta : {0.f, 0.5f})
                    for (int shift : {-1, 0, 4, 15, 16 + 0, 16 + 4, 16 + 13}) {
                        /* shift 16 + s: ldb = N (B's rows contiguous: one row's
                           kernel reads them as one stream when N is a multiple
                           of 16; a column is a dot product, N = 1) */
                        int lda = (ta ? R : K) + 3,
                            ldb = shift < 0 ? N + 1 : shift >= 16 ? N : (N + 15) / 16 * 16 + 16,
                            ldc = N + 2, cpad = shift < 0 ? 0 : shift % 16;
                        auto A = random_vec((size_t)(ta ? K : R) * lda, 11);
                        auto Bbuf = random_vec((size_t)K * ldb + 16, 12);
                        float *B = Bbuf.data();
                        if (shift >= 0) /* B[0] `shift` floats past a line */
                            B += ((uintptr_t)(16 + shift % 16) - (uintptr_t)B / sizeof(float) % 16) % 16;
                        /* one row of at most 16 columns: also the 8-chain kernel
                           sgemm_small_m takes for it */
                        for (int narrow = 0; narrow < (avx512 && R == 1 && N <= 16 ? 2 : 1); narrow++) {
                            auto C0 = random_vec((size_t)(R * ldc + cpad), 13);
                            auto C1 = C0;
                            int64_t ars = ta ? 1 : lda, aks = ta ? lda : 1;
                            if (narrow)
                                nnl::gemm::small_row_narrow_avx512(N, K, 1.5f, A.data(), aks, B, ldb, beta,
                                                                   C0.data() + cpad);
                            else if (avx512)
                                nnl::gemm::small_rows_avx512_n<R>(N, K, 1.5f, A.data(), ars, aks, B, ldb, beta,
                                                                  C0.data() + cpad, ldc);
                            else
                                nnl::gemm::small_rows_avx2r_n<R>(N, K, 1.5f, A.data(), ars, aks, B, ldb, beta,
                                                                 C0.data() + cpad, ldc);
                            naive_gemm(ta, false, R, N, K, 1.5f, A.data(), lda, B, ldb, beta, C1.data() + cpad, ldc);
                            INFO("R=" << R << " N=" << N << " K=" << K << " ta=" << ta << " beta=" << beta
                                      << " ldb=" << ldb << " shift=" << shift
                                      << (narrow ? " narrow" : avx512 ? " avx512" : " avx2"));
                            double worst = 0;
                            for (int q = 0; q < cpad; q++) CHECK(C0[(size_t)q] == C1[(size_t)q]); /* before C */
                            for (int i = 0; i < R; i++)
                                for (int j = 0; j < ldc; j++) {
                                    size_t q = (size_t)(cpad + i * ldc + j);
                                    if (j >= N) { /* the padding between rows is never written */
                                        CHECK(C0[q] == C1[q]);
                                        continue;
                                    }
                                    worst = std::max(worst, (double)std::fabs(C0[q] - C1[q]) / (1.0 + std::fabs(C1[q])));
                                }
                            CHECK(worst < 1e-4 * std::sqrt((double)K));
                        }
                    }
}

TEST_CASE("the few-rows inference kernels (AVX2, AVX-512) match the naive product") {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        MESSAGE("the few-rows kernels are not tested: this CPU lacks avx2/fma");
        return;
    }
    for (int isa = 0; isa < 2; isa++) {
        bool avx512 = isa == 1;
        if (avx512 && !__builtin_cpu_supports("avx512f")) {
            MESSAGE("small_rows_avx512 is not tested: this CPU lacks avx512f");
            continue;
        }
        small_rows_case<1>(avx512);
        small_rows_case<2>(avx512);
        small_rows_case<3>(avx512);
        small_rows_case<4>(avx512);
    }
    /* one row read as one stream from a B larger than L2 (prefetched) */
    if (__builtin_cpu_supports("avx512f")) {
        const int N = 192, K = 1500;
        auto A = random_vec(K, 31), Bbuf = random_vec((size_t)K * N + 16, 32);
        float *B = Bbuf.data() + (16 + 5 - (uintptr_t)Bbuf.data() / sizeof(float) % 16) % 16; /* 5 floats past a line */
        std::vector<float> C0(N + 5, 2.f), C1 = C0;
        nnl::gemm::small_rows_avx512_n<1>(N, K, 1.f, A.data(), K, 1, B, N, 0.5f, C0.data() + 5, N);
        naive_gemm(false, false, 1, N, K, 1.f, A.data(), K, B, N, 0.5f, C1.data() + 5, N);
        for (int j = 0; j < 5; j++) CHECK(C0[(size_t)j] == C1[(size_t)j]); /* before C */
        double worst = 0;
        for (int j = 5; j < N + 5; j++)
            worst = std::max(worst, (double)std::fabs(C0[(size_t)j] - C1[(size_t)j]) / (1.0 + std::fabs(C1[(size_t)j])));
        CHECK(worst < 1e-4 * std::sqrt((double)K));
    }
    /* a B beyond L2 read in several passes: row blocks of about 16 KB, the
       sums parked between them; and (one row, the B it reads beyond
       NNL_GEMM_SMALL_MEM_B: all but 700 x 500) once, with the sums in
       memory, in lane blocks of NNL_MEMROW_COLS (N = 1100: two). Each
       element is still the k-ordered chain of fused multiply-adds of one
       pass over the whole depth, bit for bit (the reference spells out
       each fma) */
    int mem_cases = 0, block_cases = 0;
    if (__builtin_cpu_supports("avx512f"))
        for (int K : {700, 1500})
        for (int R = 1; R <= 4; R++)
            for (int N : {500, 1100})
                for (int shift : {-1, 4, 15}) {
                    const int ldb = shift < 0 ? N : (N + 15) / 16 * 16 + 16, ldc = N + 3;
                    REQUIRE((int64_t)K * ldb * 4 > NNL_GEMM_SMALL_KBLOCK_B);
                    if (R == 1) ((int64_t)K * N * 4 > NNL_GEMM_SMALL_MEM_B ? mem_cases : block_cases)++;
                    auto A = random_vec((size_t)R * K, 35), Bbuf = random_vec((size_t)K * ldb + 16, 36);
                    float *B = Bbuf.data();
                    if (shift >= 0) B += ((uintptr_t)(16 + shift) - (uintptr_t)B / sizeof(float) % 16) % 16;
                    std::vector<float> C((size_t)R * ldc, 0.25f), ref = C;
                    switch (R) {
                    case 1: nnl::gemm::small_rows_avx512_n<1>(N, K, 1.5f, A.data(), K, 1, B, ldb, 0.5f, C.data(), ldc); break;
                    case 2: nnl::gemm::small_rows_avx512_n<2>(N, K, 1.5f, A.data(), K, 1, B, ldb, 0.5f, C.data(), ldc); break;
                    case 3: nnl::gemm::small_rows_avx512_n<3>(N, K, 1.5f, A.data(), K, 1, B, ldb, 0.5f, C.data(), ldc); break;
                    default: nnl::gemm::small_rows_avx512_n<4>(N, K, 1.5f, A.data(), K, 1, B, ldb, 0.5f, C.data(), ldc);
                    }
                    for (int r = 0; r < R; r++)
                        for (int j = 0; j < N; j++) {
                            float acc = 0.f;
                            for (int k = 0; k < K; k++) acc = std::fma(A[(size_t)(r * K + k)], B[(size_t)k * ldb + j], acc);
                            float *c = &ref[(size_t)(r * ldc + j)];
                            *c = std::fma(0.5f, *c, 1.5f * acc);
                        }
                    INFO("R=" << R << " N=" << N << " K=" << K << " ldb=" << ldb << " shift=" << shift);
                    CHECK(memcmp(C.data(), ref.data(), C.size() * sizeof(float)) == 0); /* the padding untouched too */
                }
    if (__builtin_cpu_supports("avx512f")) CHECK((mem_cases == 9 && block_cases == 3));
    /* an infinite input in the first or last row of the stream: each column
       +-Inf as its own products give, no NaN from another column's lanes */
    if (__builtin_cpu_supports("avx512f"))
        for (int at : {0, 39}) {
            const int N = 128, K = 40;
            auto A = random_vec(K, 33), Bbuf = random_vec((size_t)K * N + 16, 34);
            float *B = Bbuf.data() + (16 + 4 - (uintptr_t)Bbuf.data() / sizeof(float) % 16) % 16;
            for (int i = 0; i < K * N; i++) B[i] += B[i] >= 0 ? 0.1f : -0.1f; /* no zero products */
            A[(size_t)at] = INFINITY;
            std::vector<float> C(N, 0.f);
            nnl::gemm::small_rows_avx512_n<1>(N, K, 1.f, A.data(), K, 1, B, N, 0.f, C.data(), N);
            INFO("A[" << at << "] = inf");
            for (int j = 0; j < N; j++) CHECK(C[(size_t)j] == (B[at * N + j] > 0 ? INFINITY : -INFINITY));
        }
    /* split by columns over two threads (batch-1 inference of a wide layer):
       the same bits as one thread */
    for (int M : {1, 3, 8, 16})
        for (int N : {128, 129, 1000}) {
            int K = 784;
            /* B one float past malloc's alignment: not on a 64-byte line, so
               one thread reads a whole-width B as one stream
               (small_row_stream_avx512) and two read column blocks laid on
               the lines */
            auto Bbuf = random_vec((size_t)K * N + 1, 22), A = random_vec((size_t)M * K, 21);
            const float *B = Bbuf.data() + 1;
            std::vector<float> C1((size_t)M * N, -1.f), C2 = C1;
            nnl::g_threads = 1;
            nnl::K().sgemm(false, false, M, N, K, 1.f, A.data(), K, B, N, 0.f, C1.data(), N);
            nnl::g_threads = 2;
            nnl::K().sgemm(false, false, M, N, K, 1.f, A.data(), K, B, N, 0.f, C2.data(), N);
            nnl::g_threads = 0;
            INFO("M=" << M << " N=" << N);
            CHECK(memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
        }
}

TEST_CASE("the two-panel AVX-512 kernel equals two one-panel calls, bit for bit") {
    if (!__builtin_cpu_supports("avx512f")) {
        MESSAGE("ukr2_avx512 is not tested: this CPU lacks avx512f");
        return;
    }
    alignas(64) float A[6 * 41], B0[16 * 41], B1[16 * 41];
    auto a = random_vec(6 * 41, 6), b = random_vec(32 * 41, 7);
    std::copy(a.begin(), a.end(), A);
    std::copy(b.begin(), b.begin() + 16 * 41, B0);
    std::copy(b.begin() + 16 * 41, b.end(), B1);
    /* full tile, and partial ones (rows, and a second panel partly used) */
    struct T { int kc, mr, nr; } ts[] = {{41, 6, 32}, {40, 6, 32}, {41, 5, 32}, {40, 6, 19}, {41, 3, 17}};
    for (auto t : ts)
        for (float beta : {0.f, 0.5f}) {
            float ref[6 * 34], got[6 * 34];
            for (int i = 0; i < 6 * 34; i++) ref[i] = got[i] = 0.125f * (float)i;
            nnl::gemm::ukr_avx512(t.kc, A, 1, 6, B0, ref, 34, 1.5f, beta, t.mr, std::min(16, t.nr));
            if (t.nr > 16) nnl::gemm::ukr_avx512(t.kc, A, 1, 6, B1, ref + 16, 34, 1.5f, beta, t.mr, t.nr - 16);
            nnl::gemm::ukr2_avx512(t.kc, A, 1, 6, B0, B1, got, 34, 1.5f, beta, t.mr, t.nr);
            INFO("kc=" << t.kc << " mr=" << t.mr << " nr=" << t.nr << " beta=" << beta);
            for (int i = 0; i < 6 * 34; i++) CHECK(ref[i] == got[i]); /* untouched entries too */
        }
}
#endif

TEST_CASE("spec strings parse like Keras calls") {
    nnl::Spec s = nnl::parse_spec("Dense(128, activation='relu', input_shape=(784,), use_bias=True)");
    CHECK(s.name == "Dense");
    REQUIRE(s.pos.size() == 1);
    CHECK(s.pos[0].num == 128);
    REQUIRE(s.kw.size() == 3);
    CHECK(s.kw[0].second.str == "relu");
    CHECK(s.kw[1].second.kind == nnl::Value::TUPLE);
    CHECK(s.kw[1].second.items.size() == 1);
    CHECK(s.kw[2].second.kind == nnl::Value::BOOL);
    nnl::Spec b = nnl::parse_spec("  adam ");
    CHECK(b.name == "adam");
    CHECK(b.pos.empty());
    nnl::Spec c = nnl::parse_spec("Reshape([7, 4, -1], name=\"r\")");
    CHECK(c.pos[0].items.size() == 3);
    CHECK(c.pos[0].items[2].num == -1);
    for (const char *bad : {"", "Dense(", "Dense(1,,2)", "Dense(units=1, 2)", "Dense(1) x", "Dense('abc)",
                            "Dense(a=1, a=2)", "(1)", "Dense(1 2)"}) {
        INFO(bad);
        CHECK_THROWS_AS(nnl::parse_spec(bad), nnl::Error);
    }
}

TEST_CASE("unknown and misspelt arguments are errors, not silently ignored") {
    nnl_model *m = nnl_model_create();
    CHECK(nnl_add(m, "Dense(4, activaton='relu', input_shape=(3,))") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("activaton") != std::string::npos);
    CHECK(nnl_add(m, "Dense(4, activation='rleu', input_shape=(3,))") == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find("rleu") != std::string::npos);
    CHECK(nnl_add(m, "Conv9D(4)") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "Dense(4, 'relu', True, 'zeros', 'zeros', 7, input_shape=(3,))") == NNL_ERR_ARGUMENT);
    CHECK(nnl_add(m, "Dense(4, input_shape=(3,))") == NNL_OK);
    CHECK(nnl_compile(m, "Adam(learning_rat=0.1)", "mse", "") == NNL_ERR_ARGUMENT);
    CHECK(nnl_compile(m, "adam", "mse", "accuracy, precision") == NNL_ERR_ARGUMENT);
    CHECK(nnl_compile(m, "adam", "msle", "") == NNL_ERR_ARGUMENT);
    nnl_model_free(m);
}

TEST_CASE("vectorised tanh and sigmoid agree with libm") {
    /* a sweep over [-20, 20] plus the tiny and saturated ends */
    std::vector<float> x;
    for (int i = -200000; i <= 200000; i++) x.push_back((float)i * 1e-4f);
    for (float v : {1e-30f, -1e-30f, 3e-4f, -5e-4f, 50.f, -50.f, 90.f, -90.f, 1e10f, -1e10f}) x.push_back(v);
    std::vector<float> y(x.size());
    for (nnl::Act a : {nnl::ACT_TANH, nnl::ACT_SIGMOID}) {
        nnl::K().act_forward(a, x.data(), y.data(), 1, (int64_t)x.size());
        for (size_t i = 0; i < x.size(); i++) {
            double ref = a == nnl::ACT_TANH ? std::tanh((double)x[i]) : 1.0 / (1.0 + std::exp(-(double)x[i]));
            double err = std::fabs(y[i] - ref) / std::max(std::fabs(ref), 1e-30);
            if (std::fabs(ref) < 1e-30) err = std::fabs(y[i] - ref); /* underflowing sigmoid tails */
            INFO("act " << nnl::act_names[a] << " x " << x[i] << " got " << y[i] << " want " << ref);
            REQUIRE(err < 1e-6);
        }
    }
}

TEST_CASE("sgemm with a bias and activation epilogue equals sgemm, bias_add, act_forward") {
    struct Case { int M, N, K; } cases[] = {{3, 20, 9}, {50, 300, 40}, {300, 50, 300}, {7, 17, 600}};
    for (int threads : {1, 2})
        for (auto c : cases)
            for (nnl::Act a : {nnl::ACT_LINEAR, nnl::ACT_RELU, nnl::ACT_TANH, nnl::ACT_ELU}) {
                nnl::g_threads = threads;
                auto A = random_vec((size_t)(c.M * c.K), 31), B = random_vec((size_t)(c.K * c.N), 32);
                auto bias = random_vec((size_t)c.N, 33);
                std::vector<float> C1((size_t)(c.M * c.N)), C2(C1.size());
                nnl::K().sgemm_bias_act(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, C1.data(), c.N, bias.data(), a);
                nnl::K().sgemm(false, false, c.M, c.N, c.K, 1.f, A.data(), c.K, B.data(), c.N, 0.f, C2.data(), c.N);
                nnl::K().bias_add(C2.data(), bias.data(), c.M, c.N);
                nnl::K().act_forward(a, C2.data(), C2.data(), 1, c.M * c.N);
                INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " act " << nnl::act_names[a] << " threads "
                          << threads);
                for (size_t i = 0; i < C1.size(); i++) REQUIRE(C1[i] == doctest::Approx(C2[i]).epsilon(1e-6));
            }
    nnl::g_threads = 0;
}

TEST_CASE("bias gradient: column sums of many rows, the same bits on any number of threads") {
    /* one group (a Dense layer's batch: the plain row-order sum), several
       fixed groups (a convolution's positions), column blocks beyond 4
       vectors, ragged column counts */
    for (int n : {1, 3, 16, 20, 50, 70, 130})
        for (int rows : {0, 1, 7, 120, 5000, 40000}) {
            auto dy = random_vec((size_t)rows * n + 1, 43);
            std::vector<float> d1((size_t)n, -3.f), d2 = d1;
            nnl::g_threads = 1;
            nnl::K().bias_grad(dy.data(), d1.data(), rows, n);
            nnl::g_threads = 2;
            nnl::K().bias_grad(dy.data(), d2.data(), rows, n);
            nnl::g_threads = 0;
            INFO("n=" << n << " rows=" << rows);
            CHECK(memcmp(d1.data(), d2.data(), d1.size() * sizeof(float)) == 0);
            for (int j = 0; j < n; j++) {
                double ref = 0, mag = 0;
                for (int r = 0; r < rows; r++) {
                    ref += dy[(size_t)r * n + j];
                    mag += std::fabs(dy[(size_t)r * n + j]);
                }
                CHECK(std::fabs(d1[(size_t)j] - ref) <= 1e-6 * mag + 1e-30);
                if (rows <= 120) { /* one group: row order */
                    float s = 0.f;
                    for (int r = 0; r < rows; r++) s += dy[(size_t)r * n + j];
                    CHECK(d1[(size_t)j] == s);
                }
            }
        }
}

TEST_CASE("transpose: every shape, ragged edges, several samples") {
    for (int R : {1, 7, 8, 9, 31, 33, 70})
        for (int C : {1, 5, 8, 16, 20, 41})
            for (int B : {1, 3}) {
                auto x = random_vec((size_t)(B * R * C), 41);
                std::vector<float> y((size_t)(B * R * C), -7.f);
                nnl::K().transpose(x.data(), y.data(), B, R, C);
                INFO("R=" << R << " C=" << C << " B=" << B);
                for (int b = 0; b < B; b++)
                    for (int r = 0; r < R; r++)
                        for (int c = 0; c < C; c++)
                            REQUIRE(y[(size_t)(b * R * C + c * R + r)] == x[(size_t)(b * R * C + r * C + c)]);
            }
}

/* The host half of Embedding's GPU gradient (nnl::embedding_rows: the ids
   sorted into per-id row lists) and a host copy of the device kernel's loop
   (nnlite_cuda.cu k_embed_grad: per (distinct id, column) the rows added in
   order from 0): it must give cpu_embedding_grad's gradient bit for bit,
   and the same marks. The CUDA kernel itself is checked by the GPU suite. */
TEST_CASE("Embedding's gradient from sorted row lists equals the CPU's bit for bit (the GPU path's order)") {
    struct Case { int64_t V, rows, dim; unsigned seed; };
    const Case cases[] = {{37, 500, 5, 1}, {1000, 20, 3, 2}, {1, 9, 4, 3}, {6, 1, 7, 4}, {50, 0, 2, 5}};
    for (auto c : cases) {
        CAPTURE(c.V);
        CAPTURE(c.rows);
        std::mt19937 g(c.seed);
        std::vector<float> ids((size_t)c.rows);
        for (auto &v : ids) v = (float)(g() % (uint32_t)c.V);
        if (c.rows >= 2) { /* the edge ids, and a run of one repeated id */
            ids[0] = (float)(c.V - 1);
            ids[(size_t)c.rows - 1] = 0.f;
            for (int64_t r = 1; r < std::min<int64_t>(c.rows - 1, 6); r++) ids[(size_t)r] = ids[1];
        }
        std::vector<float> dy = random_vec((size_t)(c.rows * c.dim), c.seed + 10, -3.f, 3.f);
        std::vector<float> G((size_t)(c.V * c.dim), NAN), Gk((size_t)(c.V * c.dim), NAN);
        std::vector<uint8_t> marks((size_t)c.V, 0), marks_k((size_t)c.V, 0);
        nnl::cpu_kernels.embedding_grad(ids.data(), dy.data(), G.data(), c.rows, c.V, c.dim, marks.data());
        std::vector<uint64_t> keys;
        std::vector<int32_t> csr;
        int64_t U = nnl::embedding_rows(ids.data(), c.rows, c.V, marks_k.data(), keys, csr);
        REQUIRE(csr.size() == (size_t)(2 * U + 1 + c.rows));
        const int32_t *uniq = csr.data(), *start = uniq + U, *order = start + U + 1;
        /* the lists: distinct ids increasing, each id's rows increasing, every row once */
        std::vector<int> seen((size_t)c.rows, 0);
        CHECK(start[0] == 0);
        CHECK(start[U] == c.rows);
        for (int64_t k = 0; k < U; k++) {
            if (k) CHECK(uniq[k] > uniq[k - 1]);
            CHECK(start[k + 1] > start[k]);
            for (int32_t p = start[k]; p < start[k + 1]; p++) {
                CHECK(ids[(size_t)order[p]] == (float)uniq[k]);
                if (p > start[k]) CHECK(order[p] > order[p - 1]);
                seen[(size_t)order[p]]++;
            }
        }
        for (int s : seen) CHECK(s == 1);
        /* the device kernel's loop, on the host */
        std::fill(Gk.begin(), Gk.end(), 0.f);
        for (int64_t e = 0; e < U * c.dim; e++) {
            int64_t k = e / c.dim, j = e % c.dim;
            float s = 0.f;
            for (int32_t p = start[k], end = start[k + 1]; p < end; p++) s = s + dy[(size_t)(order[p] * c.dim + j)];
            Gk[(size_t)(uniq[k] * c.dim + j)] = s;
        }
        CHECK(memcmp(G.data(), Gk.data(), G.size() * sizeof(float)) == 0);
        CHECK(marks == marks_k);
    }
    /* an id that escaped check_input is refused before anything is written */
    std::vector<uint64_t> keys;
    std::vector<int32_t> csr;
    for (float bad : {-1.f, 5.f, 2.5f, NAN}) {
        std::vector<float> ids = {1.f, bad, 0.f};
        CHECK(nnl::guard([&] { nnl::embedding_rows(ids.data(), 3, 5, nullptr, keys, csr); }) == NNL_ERR_INTERNAL);
    }
}

TEST_CASE("masking kernels: a step is kept when any value differs from mask_value; the mask alone with y NULL") {
    const int64_t steps = 7, F = 3;
    std::vector<float> x = {0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 0, 2, NAN, 0, 0, -0.f, 0, 0, 5, 6, 7};
    std::vector<float> y((size_t)(steps * F), NAN), mask((size_t)steps, NAN), mask2((size_t)steps, NAN);
    nnl::cpu_kernels.masking_forward(x.data(), y.data(), mask.data(), steps, F, 0.f);
    CHECK(mask == std::vector<float>{0, 1, 1, 1, 1, 0, 1});
    nnl::cpu_kernels.masking_forward(x.data(), nullptr, mask2.data(), steps, F, 0.f);
    CHECK(mask2 == mask);
    for (int64_t r = 0; r < steps; r++)
        for (int64_t j = 0; j < F; j++) {
            float want = mask[(size_t)r] != 0.f ? x[(size_t)(r * F + j)] : 0.f, got = y[(size_t)(r * F + j)];
            CHECK((got == want || (std::isnan(got) && std::isnan(want))));
        }
    nnl::cpu_kernels.masking_forward(x.data(), nullptr, mask2.data(), steps, F, 2.f); /* another mask_value */
    CHECK(mask2 == std::vector<float>{1, 1, 0, 1, 1, 1, 1});
    std::vector<float> dy = random_vec((size_t)(steps * F), 3), dx((size_t)(steps * F), NAN);
    nnl::cpu_kernels.masking_backward(mask.data(), dy.data(), dx.data(), steps, F);
    for (int64_t i = 0; i < steps * F; i++) CHECK(dx[(size_t)i] == (mask[(size_t)(i / F)] != 0.f ? dy[(size_t)i] : 0.f));
}
