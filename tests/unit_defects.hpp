/* Internals behind the issue-11 defect fixes (the ABI side is in
   tests/api_defects.cpp): the weight arena grows geometrically instead of
   being copied on every added layer, a JSON architecture is laid out once,
   the layer count is bounded, and the overflow-safe size helpers. */

TEST_CASE("size helpers: overflow and negative operands give -1, and -1 propagates") {
    CHECK(nnl::mul_size(3, 4) == 12);
    CHECK(nnl::mul_size((int64_t)1 << 32, (int64_t)1 << 30) == (int64_t)1 << 62);
    CHECK(nnl::mul_size((int64_t)1 << 32, (int64_t)1 << 32) == -1);
    CHECK(nnl::mul_size(INT64_MAX, 1) == INT64_MAX);
    CHECK(nnl::mul_size(INT64_MAX, 2) == -1);
    CHECK(nnl::mul_size(-1, 5) == -1);
    CHECK(nnl::mul_size(nnl::mul_size((int64_t)1 << 40, (int64_t)1 << 30), 0) == -1);
    CHECK(nnl::add_size(INT64_MAX - 1, 1) == INT64_MAX);
    CHECK(nnl::add_size(INT64_MAX, 1) == -1);
    CHECK(nnl::add_size(-1, 1) == -1);
    nnl::Shape s{(int64_t)1 << 32, (int64_t)1 << 32};
    CHECK(s.checked_size() == -1);
    CHECK(nnl::Shape{2, 3, 4}.checked_size() == 24);
}

TEST_CASE("adding layers one at a time moves the weight arena O(log) times, keeping every value") {
    nnl_model m;
    nnl_model_set_seed(&m, 5);
    m.add("Dense(8, input_shape=(8,))");
    std::vector<float> first(m.W.begin(), m.W.begin() + 72);
    const float *at = m.W.data();
    int moves = 0;
    for (int i = 0; i < 3000; i++) {
        m.add("Dense(8)");
        moves += m.W.data() != at;
        at = m.W.data();
        REQUIRE(m.W.capacity() - m.W.size() <= (size_t)nnl::Model::ARENA_SLACK);
    }
    CHECK(m.param_total == 3001 * 72);
    CHECK(m.W.size() == 3000u * 80u + 72u); /* each 8 x 8 kernel and its 8 biases from a 64-byte line */
    CHECK(moves <= 24); /* doubling up to 1M floats, then 1M at a time: ~log2(216k) */
    CHECK(std::equal(first.begin(), first.end(), m.W.begin()));
    /* the pointers of every tensor and of the optimizer's slices follow the moves */
    int64_t off = 0;
    size_t k = 0;
    CHECK((uintptr_t)m.W.data() % 64 == 0);
    for (auto &l : m.layers)
        for (auto &w : l->weights) {
            off = nnl::Model::line_up(off); /* every tensor on a 64-byte line */
            CHECK(w.w == m.W.data() + off);
            CHECK(w.g == m.G.data() + off);
            REQUIRE(k < m.slices.size());
            CHECK(m.slices[k].w == w.w);
            k++;
            off += w.shape.size();
        }
    CHECK(k == m.slices.size());
}

TEST_CASE("a JSON architecture is laid out once, with the weights adding the layers one by one gives") {
    std::vector<std::string> specs = {"Dense(16, activation='relu', input_shape=(4,))", "BatchNormalization()",
                                      "Dense(8, kernel_initializer='he_normal')", "Dropout(0.5)",
                                      "Dense(3, activation='softmax')"};
    nnl_model a;
    nnl_model_set_seed(&a, 21);
    for (auto &s : specs) a.add(s.c_str());
    std::string json = nnl::files::json_text(nnl::files::model_json(a));
    nnl_model b;
    nnl_model_set_seed(&b, 21);
    nnl::files::model_from_json(b, nnl::files::parse_json(json.c_str(), json.size(), "test"));
    CHECK(!b.defer_layout);
    CHECK(b.W.size() == a.W.size());
    CHECK(b.W.capacity() == b.W.size()); /* one exact allocation */
    CHECK(b.W == a.W);                   /* the same RNG draws, in the same order */
    CHECK(b.slices.size() == a.slices.size());
    CHECK(b.param_total == a.param_total);
    CHECK(b.param_total == nnl_param_count(&b));
}

TEST_CASE("the layer count is bounded by NNL_MAX_LAYERS in nnl_add too") {
    nnl_model m;
    m.add("Input(shape=(2,))");
    m.add("Flatten()");
    m.layers.resize(NNL_MAX_LAYERS); /* empty places stand for the layers: the bound comes first */
    try {
        m.add("Flatten()");
        FAIL("no error");
    } catch (const nnl::Error &e) {
        CHECK(e.status == NNL_ERR_MEMORY);
        CHECK(e.msg.find("NNL_MAX_LAYERS") != std::string::npos);
    }
    m.layers.resize(1);
    m.add("Flatten()"); /* below the bound again */
    CHECK(m.layers.size() == 2);
}
