/* Image files (nnlite.cpp section 7, "Images"): decoding each format from
   bytes the tests make (stb_image_write's encoders, compiled into this file
   with nnlite.cpp, and hand-made PNM, GIF and hostile headers), colour
   modes, resizing against hand-computed values, scaling, the folder dataset
   (class order, labels, Keras' shuffle and split, skip or fail on a corrupt
   file, empty folders), writing (round trips), the pictures as PNG
   (nnl_plot_images' grid; training curves, confusion matrices and line
   plots drawn from their SVG: size, colours, atomic writes), and mutated
   files. Without stb every call must say UNSUPPORTED naming
   libstb-dev, and nothing else is checked. */
#include <filesystem>
#include <fstream>
#include <set>

namespace {

using Bytes = std::vector<uint8_t>;

struct ImgDir { /* a temporary folder, removed with its contents */
    std::string path;
    ImgDir() {
        char t[] = "/tmp/nnlite_img_XXXXXX";
        REQUIRE(mkdtemp(t));
        path = t;
    }
    ~ImgDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string put(const std::string &name, const Bytes &b) const {
        std::string p = path + "/" + name;
        std::filesystem::create_directories(std::filesystem::path(p).parent_path());
        std::ofstream f(p, std::ios::binary);
        f.write((const char *)b.data(), (std::streamsize)b.size());
        return p;
    }
};

/* nnl_load_image on bytes: the status, the array in *out (freed by the caller). */
int load_bytes(const ImgDir &d, const Bytes &b, int channels, int h, int w, float scale, nnl_array **out) {
    std::string p = d.put("in.img", b);
    return nnl_load_image(p.c_str(), channels, h, w, scale, out);
}

std::vector<float> pixels_of(nnl_array *a) {
    const float *p = (const float *)nnl_array_data(a);
    return std::vector<float>(p, p + nnl_array_size(a));
}

/* A PNM file made by hand: P5 (grey) or P6 (RGB), maxval 255. */
Bytes pnm(int w, int h, int c, const Bytes &px) {
    std::string head = std::string(c == 1 ? "P5" : "P6") + "\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
    Bytes b(head.begin(), head.end());
    b.insert(b.end(), px.begin(), px.end());
    return b;
}

/* A 2 x 1 GIF made by hand: a white pixel, then a black one (palette black,
   white; LZW codes clear, 1, 0, end in 3 bits each). */
Bytes gif_white_black() {
    return {'G', 'I', 'F', '8', '9', 'a', 2, 0, 1, 0, 0x80, 0, 0, /* screen 2 x 1, a 2-colour table */
            0, 0, 0, 255, 255, 255,                               /* black, white */
            ',', 0, 0, 0, 0, 2, 0, 1, 0, 0,                       /* the image, at (0, 0), 2 x 1 */
            2, 2, 0x0C, 0x0A, 0, ';'};
}

#if NNL_HAVE_STB_WRITE
Bytes encoded(const char *fmt, int w, int h, int c, const Bytes &px) {
    std::string s = nnl::img::encode(px.data(), h, w, c, fmt, "test");
    return Bytes(s.begin(), s.end());
}
#endif

/* A baseline JPEG (16 x 8 RGB) from the seed corpus, written there by
   nnl_save_image (fuzz/make_model_corpus.c). The tests read JPEGs from it
   rather than encode them: stb_image_write's JPEG encoder left-shifts
   negative ints (undefined in C++17, harmless in practice), which the
   sanitized build (make check-sanitize) stops on. */
Bytes corpus_jpeg() {
    std::string here = __FILE__;
    std::string path = here.substr(0, here.find_last_of('/')) + "/../fuzz/corpus/fuzz_image/rgb_16x8.jpg";
    Bytes b;
    nnl::read_file(path.c_str(), b);
    return b;
}

#if defined(__SANITIZE_ADDRESS__)
#define IMG_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define IMG_SANITIZED 1
#endif
#endif
#ifndef IMG_SANITIZED
#define IMG_SANITIZED 0
#endif

/* 3 x 4 RGB test pixels, every byte different. */
Bytes rgb_3x4() {
    Bytes px(3 * 4 * 3);
    for (size_t i = 0; i < px.size(); i++) px[i] = (uint8_t)(7 + i * 6);
    return px;
}

} // namespace

TEST_CASE("images: without stb every call is UNSUPPORTED naming libstb-dev") {
    if (NNL_HAVE_STB && NNL_HAVE_STB_WRITE) {
        CHECK(nnl_has_feature("images") == 1);
        return;
    }
    MESSAGE("built without stb (Debian: apt-get install libstb-dev): the image tests check only the error");
    ImgDir d;
    nnl_array *a = nullptr;
    CHECK(load_bytes(d, pnm(1, 1, 1, {9}), 0, 0, 0, 1, &a) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("libstb-dev") != std::string::npos);
    float px[4] = {0};
    CHECK(nnl_save_image((d.path + "/x.png").c_str(), px, 2, 2, 1, 1) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("libstb-dev") != std::string::npos);
    /* the pictures: SVG as ever, PNG not */
    int64_t cm[4] = {1, 0, 0, 1};
    const float line[3] = {1, 2, 3};
    CHECK(nnl_plot_confusion_matrix((d.path + "/cm.svg").c_str(), cm, 2, nullptr, 0, nullptr) == NNL_OK);
    CHECK(nnl_plot_confusion_matrix((d.path + "/cm.png").c_str(), cm, 2, nullptr, 0, nullptr) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("nnl_plot_confusion_matrix") == 0);
    CHECK(std::string(nnl_last_error()).find("libstb-dev") != std::string::npos);
    CHECK(nnl_plot_lines((d.path + "/l.PNG").c_str(), nullptr, line, 1, 1, 3, nullptr, nullptr, nullptr, nullptr) ==
          NNL_ERR_UNSUPPORTED);
    CHECK(!std::filesystem::exists(d.path + "/cm.png"));
}

#if NNL_HAVE_STB && NNL_HAVE_STB_WRITE

TEST_CASE("images: PNG, BMP, TGA, PNM, GIF and JPEG decode to (height, width, channels) 0..255") {
    ImgDir d;
    const Bytes px = rgb_3x4();
    std::vector<float> want(px.begin(), px.end());
    for (const char *fmt : {"png", "bmp", "tga"}) {
        CAPTURE(fmt);
        nnl_array *a = nullptr;
        REQUIRE(load_bytes(d, encoded(fmt, 4, 3, 3, px), 0, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK(nnl_array_dtype(a) == NNL_FLOAT32);
        REQUIRE(nnl_array_rank(a) == 3);
        CHECK((nnl_array_dim(a, 0) == 3 && nnl_array_dim(a, 1) == 4 && nnl_array_dim(a, 2) == 3));
        CHECK(pixels_of(a) == want);
        nnl_array_free(a);
    }
    { /* PNM: P6 and P5 */
        nnl_array *a = nullptr;
        REQUIRE(load_bytes(d, pnm(4, 3, 3, px), 0, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK(pixels_of(a) == want);
        nnl_array_free(a);
        REQUIRE(load_bytes(d, pnm(2, 1, 1, {0, 200}), 0, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK(nnl_array_dim(a, 2) == 1);
        CHECK(pixels_of(a) == std::vector<float>{0, 200});
        nnl_array_free(a);
    }
    { /* GIF, hand-made: white then black */
        nnl_array *a = nullptr;
        REQUIRE(load_bytes(d, gif_white_black(), 3, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK((nnl_array_dim(a, 0) == 1 && nnl_array_dim(a, 1) == 2));
        CHECK(pixels_of(a) == std::vector<float>{255, 255, 255, 0, 0, 0});
        nnl_array_free(a);
    }
    { /* the corpus JPEG: 16 x 8 RGB */
        nnl_array *a = nullptr;
        REQUIRE(load_bytes(d, corpus_jpeg(), 0, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK((nnl_array_dim(a, 0) == 8 && nnl_array_dim(a, 1) == 16 && nnl_array_dim(a, 2) == 3));
        nnl_array_free(a);
    }
    if (!IMG_SANITIZED) { /* JPEG is lossy: flat 8 x 8 blocks come back within a few levels */
        Bytes blocks(16 * 16 * 3);
        const uint8_t colour[4][3] = {{200, 30, 30}, {30, 200, 30}, {30, 30, 200}, {128, 128, 128}};
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
                for (int k = 0; k < 3; k++) blocks[(size_t)(y * 16 + x) * 3 + k] = colour[(y / 8) * 2 + x / 8][k];
        nnl_array *a = nullptr;
        REQUIRE(load_bytes(d, encoded("jpg", 16, 16, 3, blocks), 0, 0, 0, 1.0f, &a) == NNL_OK);
        REQUIRE(nnl_array_size(a) == 16 * 16 * 3);
        std::vector<float> got = pixels_of(a);
        float worst = 0;
        for (size_t i = 0; i < got.size(); i++) worst = std::max(worst, std::fabs(got[i] - (float)blocks[i]));
        CHECK(worst <= 12.0f);
        nnl_array_free(a);
    }
}

TEST_CASE("images: colour modes (grayscale, RGB, RGBA, as stored) and scale") {
    ImgDir d;
    const Bytes one = {200, 100, 50}; /* one RGB pixel */
    Bytes png = encoded("png", 1, 1, 3, one);
    nnl_array *a = nullptr;
    REQUIRE(load_bytes(d, png, 1, 0, 0, 1.0f, &a) == NNL_OK); /* (77 R + 150 G + 29 B) >> 8 */
    CHECK(pixels_of(a) == std::vector<float>{(float)((200 * 77 + 100 * 150 + 50 * 29) >> 8)});
    CHECK(nnl_array_dim(a, 2) == 1);
    nnl_array_free(a);
    REQUIRE(load_bytes(d, png, 4, 0, 0, 1.0f, &a) == NNL_OK); /* no alpha in the file: 255 */
    CHECK(pixels_of(a) == std::vector<float>{200, 100, 50, 255});
    nnl_array_free(a);
    REQUIRE(load_bytes(d, png, 0, 0, 0, 1.0f / 255, &a) == NNL_OK); /* as stored, scaled to [0, 1] */
    std::vector<float> v = pixels_of(a);
    REQUIRE(v.size() == 3);
    CHECK(v[0] == doctest::Approx(200 / 255.0));
    CHECK(v[2] == doctest::Approx(50 / 255.0));
    nnl_array_free(a);
    /* PNM: converted by nnlite (stb 2.27 overflows on 16-bit PNM), the same values as stb gives for PNG */
    for (int ch : {1, 2, 3, 4}) {
        nnl_array *b = nullptr;
        REQUIRE(load_bytes(d, png, ch, 0, 0, 1.0f, &a) == NNL_OK);
        REQUIRE(load_bytes(d, pnm(1, 1, 3, one), ch, 0, 0, 1.0f, &b) == NNL_OK);
        CHECK(pixels_of(a) == pixels_of(b));
        nnl_array_free(a);
        nnl_array_free(b);
        REQUIRE(load_bytes(d, encoded("png", 1, 1, 1, {77}), ch, 0, 0, 1.0f, &a) == NNL_OK);
        REQUIRE(load_bytes(d, pnm(1, 1, 1, {77}), ch, 0, 0, 1.0f, &b) == NNL_OK);
        CHECK(pixels_of(a) == pixels_of(b));
        nnl_array_free(a);
        nnl_array_free(b);
    }
    { /* a 16-bit P5 (maxval 65535, big-endian samples) as RGB: the high bytes, replicated */
        const std::string head = "P5\n2 1\n65535\n";
        Bytes p16(head.begin(), head.end());
        for (int v : {0x12, 0x34, 0xAB, 0xCD}) p16.push_back((uint8_t)v);
        REQUIRE(load_bytes(d, p16, 3, 0, 0, 1.0f, &a) == NNL_OK);
        CHECK(pixels_of(a) == std::vector<float>{0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB});
        nnl_array_free(a);
        REQUIRE(load_bytes(d, p16, 0, 0, 0, 1.0f, &a) == NNL_OK); /* as stored */
        CHECK(pixels_of(a) == std::vector<float>{0x12, 0xAB});
        nnl_array_free(a);
    }
    Bytes grey = encoded("png", 1, 1, 1, {77});
    REQUIRE(load_bytes(d, grey, 3, 0, 0, 1.0f, &a) == NNL_OK); /* grey to RGB: replicated */
    CHECK(pixels_of(a) == std::vector<float>{77, 77, 77});
    nnl_array_free(a);
    Bytes rgba = encoded("png", 1, 1, 4, {10, 20, 30, 40});
    REQUIRE(load_bytes(d, rgba, 3, 0, 0, 1.0f, &a) == NNL_OK); /* alpha dropped */
    CHECK(pixels_of(a) == std::vector<float>{10, 20, 30});
    nnl_array_free(a);
    REQUIRE(load_bytes(d, rgba, 0, 0, 0, 1.0f, &a) == NNL_OK);
    CHECK(nnl_array_dim(a, 2) == 4);
    nnl_array_free(a);
    /* bad arguments name the call */
    CHECK(load_bytes(d, png, 5, 0, 0, 1.0f, &a) == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).rfind("nnl_load_image: channels", 0) == 0);
    CHECK(load_bytes(d, png, 1, 4, 0, 1.0f, &a) == NNL_ERR_ARGUMENT);
    CHECK(a == nullptr);
}

TEST_CASE("images: resize, bilinear when enlarging and area when shrinking") {
    ImgDir d;
    nnl_array *a = nullptr;
    /* 1 x 2 -> 1 x 4, half-pixel centres: x = (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 */
    REQUIRE(load_bytes(d, pnm(2, 1, 1, {0, 100}), 1, 1, 4, 1.0f, &a) == NNL_OK);
    CHECK(pixels_of(a) == std::vector<float>{0, 25, 75, 100});
    nnl_array_free(a);
    /* 2 x 2 -> 4 x 4: output (1, 1) sits at (0.25, 0.25) of [[0, 100], [200, 40]] */
    REQUIRE(load_bytes(d, pnm(2, 2, 1, {0, 100, 200, 40}), 1, 4, 4, 1.0f, &a) == NNL_OK);
    std::vector<float> v = pixels_of(a);
    REQUIRE(v.size() == 16);
    CHECK(v[1 * 4 + 1] == doctest::Approx(0.75 * 0.75 * 0 + 0.75 * 0.25 * 100 + 0.25 * 0.75 * 200 + 0.25 * 0.25 * 40));
    CHECK(v[0] == 0);
    CHECK(v[15] == 40);
    nnl_array_free(a);
    /* 4 x 4 of constant 2 x 2 blocks -> 2 x 2: exactly the blocks (RGB too) */
    Bytes blocks(4 * 4 * 3);
    const uint8_t val[4] = {10, 20, 30, 40};
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int k = 0; k < 3; k++) blocks[(size_t)(y * 4 + x) * 3 + k] = (uint8_t)(val[(y / 2) * 2 + x / 2] + k);
    REQUIRE(load_bytes(d, pnm(4, 4, 3, blocks), 3, 2, 2, 1.0f, &a) == NNL_OK);
    CHECK(pixels_of(a) == std::vector<float>{10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42});
    nnl_array_free(a);
    /* 3 -> 2 by area: [0, 1.5) and [1.5, 3) of 0, 90, 180 */
    REQUIRE(load_bytes(d, pnm(3, 1, 1, {0, 90, 180}), 1, 1, 2, 1.0f, &a) == NNL_OK);
    v = pixels_of(a);
    REQUIRE(v.size() == 2);
    CHECK(v[0] == doctest::Approx(30));
    CHECK(v[1] == doctest::Approx(150));
    nnl_array_free(a);
    /* one axis grows, the other shrinks: 2 x 1 -> 1 x 2 (rows averaged, the column spread) */
    REQUIRE(load_bytes(d, pnm(1, 2, 1, {50, 150}), 1, 1, 2, 1.0f, &a) == NNL_OK);
    CHECK(pixels_of(a) == std::vector<float>{100, 100});
    nnl_array_free(a);
    /* resizing then scaling */
    REQUIRE(load_bytes(d, pnm(2, 1, 1, {0, 102}), 1, 1, 4, 1.0f / 255, &a) == NNL_OK);
    v = pixels_of(a);
    CHECK(v[1] == doctest::Approx(25.5 / 255));
    nnl_array_free(a);
}

TEST_CASE("images: hostile files fail cleanly, naming the call and the file") {
    ImgDir d;
    nnl_array *a = nullptr;
    Bytes png = encoded("png", 4, 3, 3, rgb_3x4());
    for (size_t cut : {(size_t)0, (size_t)5, (size_t)30, png.size() / 2, png.size() - 13}) {
        CAPTURE(cut);
        Bytes t(png.begin(), png.begin() + (long)cut);
        int st = load_bytes(d, t, 0, 0, 0, 1.0f, &a);
        CHECK(st == NNL_ERR_FORMAT);
        CHECK(a == nullptr);
        CHECK(std::string(nnl_last_error()).rfind("nnl_load_image: '", 0) == 0);
        CHECK(std::string(nnl_last_error()).find("in.img") != std::string::npos);
    }
    /* absurd sizes in the header: refused before anything is allocated */
    Bytes huge = png; /* IHDR width and height at bytes 16..23, big-endian */
    for (int i = 0; i < 8; i++) huge[16 + i] = i % 4 == 1 ? 0x01 : 0; /* 65536 x 65536: over stb's own limit */
    int st = load_bytes(d, huge, 0, 0, 0, 1.0f, &a); /* stb's info refuses it: FORMAT, as no format claims it */
    CHECK((st == NNL_ERR_FORMAT || st == NNL_ERR_MEMORY));
    CHECK(a == nullptr);
    Bytes big = encoded("png", 4, 3, 1, Bytes(12, 7)); /* 20000 x 20000 grey: over NNL_MAX_IMAGE_PIXELS */
    const uint8_t side[4] = {0, 0, 0x4E, 0x20};
    for (int i = 0; i < 8; i++) big[16 + i] = side[i % 4];
    CHECK(load_bytes(d, big, 0, 0, 0, 1.0f, &a) == NNL_ERR_MEMORY);
    CHECK(std::string(nnl_last_error()).find("20000 x 20000 pixels") != std::string::npos);
    CHECK(std::string(nnl_last_error()).find("NNL_MAX_IMAGE_PIXELS") != std::string::npos);
    /* a JPEG Huffman table of more than 256 codes (stb 2.27 writes past its table) */
    Bytes jpg = corpus_jpeg();
    size_t dht = 2;
    while (dht + 1 < jpg.size() && !(jpg[dht] == 0xFF && jpg[dht + 1] == 0xC4)) dht++;
    REQUIRE(dht + 21 < jpg.size());
    for (int k = 0; k < 16; k++) jpg[dht + 5 + k] = 0xFF;
    CHECK(load_bytes(d, jpg, 0, 0, 0, 1.0f, &a) == NNL_ERR_FORMAT);
    CHECK(std::string(nnl_last_error()).find("Huffman table") != std::string::npos);
    CHECK(load_bytes(d, pnm(1000000, 1000000, 1, {1, 2, 3}), 0, 0, 0, 1.0f, &a) != NNL_OK);
    CHECK(a == nullptr);
    Bytes bmp = encoded("bmp", 4, 3, 3, rgb_3x4()); /* BITMAPINFOHEADER width at 18, height at 22 */
    bmp[21] = 0x40, bmp[25] = 0x40;
    CHECK(load_bytes(d, bmp, 0, 0, 0, 1.0f, &a) != NNL_OK);
    CHECK(a == nullptr);
    Bytes text = {'h', 'e', 'l', 'l', 'o'};
    CHECK(load_bytes(d, text, 0, 0, 0, 1.0f, &a) == NNL_ERR_FORMAT);
    CHECK(std::string(nnl_last_error()).find("not an image file") != std::string::npos);
    CHECK(nnl_load_image((d.path + "/missing.png").c_str(), 0, 0, 0, 1.0f, &a) == NNL_ERR_IO);
    CHECK(nnl_load_image(d.path.c_str(), 0, 0, 0, 1.0f, &a) == NNL_ERR_IO); /* a folder */
}

TEST_CASE("images: mutated files of every format fail cleanly or decode (fuzz target body)") {
    std::vector<Bytes> seeds = {encoded("png", 4, 3, 3, rgb_3x4()), encoded("bmp", 4, 3, 3, rgb_3x4()),
                                encoded("tga", 4, 3, 3, rgb_3x4()), corpus_jpeg(),
                                pnm(4, 3, 3, rgb_3x4()), gif_white_black()};
    nnl::Rng rng(16);
    int decoded = 0, failed = 0;
    for (const Bytes &s : seeds) {
        CHECK(fuzz::one_image(s.data(), s.size()) >= 1); /* the seeds themselves decode */
        for (int k = 0; k < 300; k++) {
            Bytes m = s;
            int flips = 1 + (int)rng.below(4);
            for (int f = 0; f < flips; f++) m[(size_t)rng.below(m.size())] = (uint8_t)rng.below(256);
            if (k % 5 == 0) m.resize((size_t)rng.below(m.size() + 1)); /* truncated too */
            int good = fuzz::one_image(m.data(), m.size());
            (good ? decoded : failed)++;
        }
    }
    CHECK(decoded > 0);
    CHECK(failed > 0);
}

TEST_CASE("images: Keras' shuffle is numpy's RandomState(seed).shuffle") {
    std::vector<int> v = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    nnl::img::numpy_shuffle(v, 0); /* np.random.seed(0); np.random.permutation(10) */
    CHECK(v == std::vector<int>{2, 8, 4, 9, 1, 6, 7, 3, 0, 5});
}

TEST_CASE("images: a dataset from a folder of class folders (image_dataset_from_directory)") {
    ImgDir d;
    const std::string root = d.path + "/data";
    /* each file a 2 x 2 grey image whose value says which file it is */
    auto img = [&](const std::string &name, int v) { d.put("data/" + name, encoded("png", 2, 2, 1, Bytes(4, (uint8_t)v))); };
    img("b_dogs/d1.png", 40);
    img("b_dogs/D2.JPG", 50); /* a PNG named .JPG: any case of the extension counts, the bytes say the format */
    img("a_cats/c1.png", 10);
    img("a_cats/c2.bmp", 0);
    d.put("data/a_cats/c2.bmp", encoded("bmp", 2, 2, 1, Bytes(4, 20)));
    img("a_cats/sub/c3.png", 30); /* nested: after the class folder's own files */
    img("c_fish/f1.png", 60);
    img("c_fish/f2.png", 70);
    img(".hidden/h.png", 200); /* not a class */
    img("top.png", 210);       /* not in a class folder */
    d.put("data/a_cats/notes.txt", {'x'}); /* not an image name */
    const int total = 7;
    auto values = [](nnl_array *x) { /* the first pixel of each image, in order */
        std::vector<int> v;
        const float *p = (const float *)nnl_array_data(x);
        int64_t per = nnl_array_size(x) / nnl_array_dim(x, 0);
        for (int64_t i = 0; i < nnl_array_dim(x, 0); i++) v.push_back((int)std::lround(p[i * per]));
        return v;
    };
    nnl_array *x = nullptr, *y = nullptr;
    nnl_vocab *names = nullptr;
    REQUIRE(nnl_image_dataset_from_directory(root.c_str(), 0, 0, 1, 1.0f, 0, 0, 0.0, nullptr, 0, &x, &y, &names) ==
            NNL_OK);
    REQUIRE(nnl_vocab_size(names) == 3);
    CHECK(std::string(nnl_vocab_word(names, 0)) == "a_cats");
    CHECK(std::string(nnl_vocab_word(names, 1)) == "b_dogs");
    CHECK(std::string(nnl_vocab_word(names, 2)) == "c_fish");
    CHECK(nnl_vocab_id(names, "c_fish") == 2);
    REQUIRE(nnl_array_rank(x) == 4);
    CHECK((nnl_array_dim(x, 0) == total && nnl_array_dim(x, 1) == 2 && nnl_array_dim(x, 2) == 2 &&
           nnl_array_dim(x, 3) == 1));
    CHECK(nnl_array_dtype(y) == NNL_INT32);
    std::vector<int> v = values(x);
    /* sorted: "D2.JPG" < "d1.png" (bytes), a_cats/sub after a_cats' own files */
    CHECK(v[0] == 10);
    CHECK(v[1] == 20);
    CHECK(v[2] == 30);
    CHECK(v[3] == 50);
    CHECK(v[4] == 40);
    CHECK(v[5] == 60);
    const int32_t *lab = (const int32_t *)nnl_array_data(y);
    CHECK(std::vector<int32_t>(lab, lab + total) == std::vector<int32_t>{0, 0, 0, 1, 1, 2, 2});
    nnl_array_free(x), nnl_array_free(y), nnl_vocab_free(names);

    /* resized, RGB, scaled */
    REQUIRE(nnl_image_dataset_from_directory(root.c_str(), 3, 5, 3, 1.0f / 255, 0, 0, 0.0, nullptr, 0, &x, nullptr,
                                             nullptr) == NNL_OK);
    CHECK((nnl_array_dim(x, 1) == 3 && nnl_array_dim(x, 2) == 5 && nnl_array_dim(x, 3) == 3));
    CHECK(((const float *)nnl_array_data(x))[0] == doctest::Approx(10 / 255.0));
    nnl_array_free(x);

    /* split: k = int(0.3 * 7) = 2 validation files, the last two of the shuffled list */
    auto subset = [&](uint64_t seed, const char *which) {
        nnl_array *xs = nullptr, *ys = nullptr;
        REQUIRE(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 1, seed, 0.3, which, 0, &xs, &ys,
                                                 nullptr) == NNL_OK);
        std::vector<int> got = values(xs);
        const int32_t *l = (const int32_t *)nnl_array_data(ys);
        for (size_t i = 0; i < got.size(); i++) { /* the label goes with its image */
            int expect = got[i] < 35 ? 0 : got[i] < 55 ? 1 : 2;
            CHECK(l[i] == expect);
        }
        nnl_array_free(xs), nnl_array_free(ys);
        return got;
    };
    std::vector<int> tr = subset(1337, "training"), va = subset(1337, "validation");
    CHECK(tr.size() == 5);
    CHECK(va.size() == 2);
    std::vector<int> all = tr;
    all.insert(all.end(), va.begin(), va.end());
    std::sort(all.begin(), all.end());
    CHECK(all == std::vector<int>{10, 20, 30, 40, 50, 60, 70}); /* disjoint, and every file */
    CHECK(subset(1337, "training") == tr);                         /* the seed decides */
    bool differs = false;
    for (uint64_t s = 1; s < 6 && !differs; s++) differs = subset(s, "training") != tr;
    CHECK(differs);
    /* the order is numpy's permutation of the sorted list */
    std::vector<int> sorted_vals = {10, 20, 30, 50, 40, 60, 70}, perm = sorted_vals;
    nnl::img::numpy_shuffle(perm, 1337);
    std::vector<int> tr_want(perm.begin(), perm.begin() + 5);
    CHECK(tr == tr_want);

    /* a corrupt file: fail naming it, or skip it with a warning */
    d.put("data/b_dogs/broken.png", {0x89, 'P', 'N', 'G', 1, 2, 3});
    CHECK(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 0, 0, 0.0, nullptr, 0, &x, &y, &names) ==
          NNL_ERR_FORMAT);
    CHECK(std::string(nnl_last_error()).find("broken.png") != std::string::npos);
    CHECK((x == nullptr && y == nullptr && names == nullptr));
    REQUIRE(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 0, 0, 0.0, nullptr, 1, &x, &y, &names) ==
            NNL_OK);
    CHECK(nnl_array_dim(x, 0) == total);
    nnl_array_free(x), nnl_array_free(y), nnl_vocab_free(names);

    /* bad arguments */
    CHECK(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 1, 1, 0.3, nullptr, 1, &x, &y, &names) ==
          NNL_ERR_ARGUMENT); /* a split without a subset */
    CHECK(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 1, 1, 0.3, "both", 1, &x, &y, &names) ==
          NNL_ERR_ARGUMENT);
    CHECK(nnl_image_dataset_from_directory(root.c_str(), 2, 2, 1, 1.0f, 1, 1ull << 32, 0.0, nullptr, 1, &x, &y,
                                           &names) == NNL_ERR_ARGUMENT);
    /* different sizes without a target size */
    d.put("data/c_fish/big.png", encoded("png", 3, 3, 1, Bytes(9, 1)));
    CHECK(nnl_image_dataset_from_directory(root.c_str(), 0, 0, 1, 1.0f, 0, 0, 0.0, nullptr, 1, &x, &y, &names) ==
          NNL_ERR_SHAPE);
    CHECK(std::string(nnl_last_error()).find("big.png") != std::string::npos);

    /* empty folders */
    std::filesystem::create_directories(d.path + "/empty");
    CHECK(nnl_image_dataset_from_directory((d.path + "/empty").c_str(), 2, 2, 1, 1.0f, 0, 0, 0.0, nullptr, 0, &x, &y,
                                           &names) == NNL_ERR_FORMAT);
    CHECK(std::string(nnl_last_error()).find("no class folders") != std::string::npos);
    std::filesystem::create_directories(d.path + "/empty/cls");
    CHECK(nnl_image_dataset_from_directory((d.path + "/empty").c_str(), 2, 2, 1, 1.0f, 0, 0, 0.0, nullptr, 0, &x, &y,
                                           &names) == NNL_ERR_FORMAT);
    CHECK(std::string(nnl_last_error()).find("no images found") != std::string::npos);
    CHECK(nnl_image_dataset_from_directory((d.path + "/nope").c_str(), 2, 2, 1, 1.0f, 0, 0, 0.0, nullptr, 0, &x, &y,
                                           &names) == NNL_ERR_IO);
}

TEST_CASE("images: nnl_save_image round trips and nnl_plot_images writes a PNG") {
    ImgDir d;
    for (int c = 1; c <= 4; c++) {
        CAPTURE(c);
        const int h = 5, w = 7;
        std::vector<float> px((size_t)h * w * c);
        for (size_t i = 0; i < px.size(); i++) px[i] = (float)((i * 37) % 256) / 255.0f;
        for (const char *ext : {"png", "bmp", "tga"}) {
            if (c == 2 && std::string(ext) != "png") continue; /* grey + alpha: PNG only keeps both */
            std::string p = d.path + "/rt." + ext;
            REQUIRE(nnl_save_image(p.c_str(), px.data(), h, w, c, 255.0f) == NNL_OK);
            nnl_array *a = nullptr;
            REQUIRE(nnl_load_image(p.c_str(), c, 0, 0, 1.0f / 255, &a) == NNL_OK);
            REQUIRE(nnl_array_size(a) == (int64_t)px.size());
            std::vector<float> got = pixels_of(a);
            for (size_t i = 0; i < px.size(); i++) REQUIRE(got[i] == doctest::Approx(px[i]).epsilon(1e-6));
            nnl_array_free(a);
        }
    }
    /* clipping, NaN, and the scale */
    const float odd[4] = {-5.0f, 300.0f, NAN, 127.6f};
    REQUIRE(nnl_save_image((d.path + "/odd.PNG").c_str(), odd, 2, 2, 1, 1.0f) == NNL_OK);
    nnl_array *a = nullptr;
    REQUIRE(nnl_load_image((d.path + "/odd.PNG").c_str(), 0, 0, 0, 1.0f, &a) == NNL_OK);
    CHECK(pixels_of(a) == std::vector<float>{0, 255, 0, 128});
    nnl_array_free(a);
    CHECK(nnl_save_image((d.path + "/x.gif").c_str(), odd, 2, 2, 1, 1.0f) == NNL_ERR_ARGUMENT);
    CHECK(std::string(nnl_last_error()).find(".png") != std::string::npos);
    CHECK(nnl_save_image((d.path + "/x.png").c_str(), odd, 2, 2, 5, 1.0f) == NNL_ERR_ARGUMENT);
    CHECK(nnl_save_image((d.path + "/no/such/dir/x.png").c_str(), odd, 2, 2, 1, 1.0f) == NNL_ERR_IO);

    /* a 2 x 3 grid of 4 x 4 images: 21 px a pixel, 4 px gaps, 10 px margins */
    std::vector<float> grid(6 * 16);
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 16; k++) grid[(size_t)i * 16 + k] = (float)i / 5.0f;
    grid[5 * 16 + 15] = NAN;
    std::string p = d.path + "/grid.png";
    REQUIRE(nnl_plot_images(p.c_str(), grid.data(), 2, 3, 4, 4, nullptr, nullptr) == NNL_OK);
    REQUIRE(nnl_load_image(p.c_str(), 3, 0, 0, 1.0f, &a) == NNL_OK);
    const int W = 10 + 3 * (84 + 4) - 4 + 10, H = 10 + 2 * (84 + 4) - 4 + 10;
    CHECK((nnl_array_dim(a, 0) == H && nnl_array_dim(a, 1) == W));
    const float *q = (const float *)nnl_array_data(a);
    auto at = [&](int y, int x, int k) { return q[((size_t)y * W + x) * 3 + k]; };
    CHECK(at(0, 0, 0) == 255);                                          /* the margin */
    CHECK(at(10 + 40, 10 + 88 + 40, 0) == std::lround(255.0 * 1 / 5)); /* image (0, 1) */
    CHECK(at(10 + 88 + 83, 10 + 2 * 88 + 83, 0) == 214);                /* the NaN pixel: red */
    CHECK(at(10 + 88 + 83, 10 + 2 * 88 + 83, 1) == 39);
    nnl_array_free(a);
    /* with labels and a title: wider and taller, text pixels black */
    const char *labels[2] = {"original", "decoded"};
    REQUIRE(nnl_plot_images(p.c_str(), grid.data(), 2, 3, 4, 4, labels, "Digits") == NNL_OK);
    REQUIRE(nnl_load_image(p.c_str(), 1, 0, 0, 1.0f, &a) == NNL_OK);
    CHECK(nnl_array_dim(a, 1) > W);
    CHECK(nnl_array_dim(a, 0) == H + 30);
    bool black = false;
    const float *g = (const float *)nnl_array_data(a);
    for (int64_t y = 0; y < 40 && !black; y++)
        for (int64_t x = 0; x < nnl_array_dim(a, 1); x++) black = black || g[y * nnl_array_dim(a, 1) + x] == 0;
    CHECK(black); /* the title */
    nnl_array_free(a);
}

namespace {

/* The width and height an SVG of ours announces. */
void svg_size(const std::string &svg, int *w, int *h) {
    *w = *h = -1;
    size_t at = svg.find(" width='");
    REQUIRE(at != std::string::npos);
    REQUIRE(sscanf(svg.c_str() + at, " width='%d' height='%d'", w, h) == 2);
}

/* A picture read back as RGB bytes (h, w, 3), with its size. */
struct Picture {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb;
    explicit Picture(const std::string &path) {
        Bytes b;
        nnl::read_file(path.c_str(), b);
        REQUIRE(b.size() > 8);
        CHECK(memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0);
        int c = 0;
        uint8_t *px = stbi_load_from_memory(b.data(), (int)b.size(), &w, &h, &c, 3);
        REQUIRE(px);
        rgb.assign(px, px + (size_t)w * h * 3);
        stbi_image_free(px);
    }
    uint32_t at(size_t i) const { return (uint32_t)rgb[i] << 16 | (uint32_t)rgb[i + 1] << 8 | rgb[i + 2]; }
    size_t count(uint32_t colour) const { /* pixels of exactly 0xRRGGBB */
        size_t n = 0;
        for (size_t i = 0; i < rgb.size(); i += 3) n += at(i) == colour;
        return n;
    }
    size_t colours() const {
        std::set<uint32_t> s;
        for (size_t i = 0; i < rgb.size(); i += 3) s.insert(at(i));
        return s.size();
    }
};

std::string slurp(const std::string &path) {
    Bytes b;
    nnl::read_file(path.c_str(), b);
    return std::string(b.begin(), b.end());
}

} // namespace

TEST_CASE("images: nnl_plot_history, nnl_plot_confusion_matrix and nnl_plot_lines write PNGs (plot_png)") {
    ImgDir d;
    /* training curves of a tiny fit: two panels of 420 x 300, drawn at twice the size */
    nnl_model *m = nnl_model_create();
    REQUIRE(m);
    REQUIRE(nnl_model_set_seed(m, 7) == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(8, activation='relu', input_shape=(2,))") == NNL_OK);
    REQUIRE(nnl_add(m, "Dense(2, activation='softmax')") == NNL_OK);
    REQUIRE(nnl_compile(m, "Adam(learning_rate=0.05)", "sparse_categorical_crossentropy", "accuracy") == NNL_OK);
    const std::string hp = d.path + "/history.png";
    CHECK(nnl_plot_history(m, hp.c_str()) == NNL_ERR_STATE); /* nothing trained yet: nothing written */
    CHECK(!std::filesystem::exists(hp));
    std::vector<float> x(64);
    std::vector<int32_t> y(32);
    for (int i = 0; i < 32; i++) {
        x[(size_t)i * 2] = (float)((i * 7) % 11) / 5.0f - 1, x[(size_t)i * 2 + 1] = (float)((i * 5) % 13) / 6.0f - 1;
        y[(size_t)i] = x[(size_t)i * 2] * x[(size_t)i * 2 + 1] > 0;
    }
    int64_t xs[2] = {32, 2}, ys[1] = {32};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 6;
    o.verbose = 0;
    o.validation_split = 0.25;
    REQUIRE_MESSAGE(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK, nnl_last_error());
    REQUIRE_MESSAGE(nnl_plot_history(m, hp.c_str()) == NNL_OK, nnl_last_error());
    {
        Picture p(hp);
        CHECK(p.w == 2 * 840);
        CHECK(p.h == 2 * 300);
        CHECK(p.count(0xffffff) > (size_t)p.w * p.h / 2); /* mostly white */
        CHECK(p.count(0x000000) > 500);                   /* the text */
        CHECK(p.count(0x333333) > 2000);                  /* frames and ticks */
        CHECK(p.count(0x1f77b4) > 300);                   /* train */
        CHECK(p.count(0xff7f0e) > 300);                   /* validation */
        CHECK(p.colours() > 20);                          /* anti-aliased edges */
    }
    /* an uppercase extension is PNG too; a .svg path still SVG */
    REQUIRE(nnl_plot_history(m, (d.path + "/H.PNG").c_str()) == NNL_OK);
    CHECK(Picture(d.path + "/H.PNG").w == 2 * 840);
    REQUIRE(nnl_plot_history(m, (d.path + "/h.svg").c_str()) == NNL_OK);
    CHECK(slurp(d.path + "/h.svg").compare(0, 5, "<svg ") == 0);
    /* a failing write (the temporary file cannot be made) leaves the old picture */
    const std::string before = slurp(hp), tmp = hp + ".tmp." + std::to_string((long)getpid());
    std::filesystem::create_directory(tmp);
    CHECK(nnl_plot_history(m, hp.c_str()) == NNL_ERR_IO);
    CHECK(std::string(nnl_last_error()).find("nnl_plot_history") == 0);
    CHECK(slurp(hp) == before);
    std::filesystem::remove(tmp);
    nnl_model_free(m);

    /* a 10-class confusion matrix with labels: the size of the SVG, twice; the blues */
    int64_t cm[100];
    for (int t = 0; t < 10; t++)
        for (int q = 0; q < 10; q++) cm[t * 10 + q] = t == q ? 90 + t : (t + 2 * q) % 5;
    const char *names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    const std::string cp = d.path + "/cm.png";
    REQUIRE(nnl_plot_confusion_matrix(cp.c_str(), cm, 10, names, 0, "Fashion-MNIST") == NNL_OK);
    {
        int w = 0, h = 0;
        svg_size(nnl::svg_confusion(cm, 10, names, false, "Fashion-MNIST"), &w, &h);
        Picture p(cp);
        CHECK(p.w == 2 * w);
        CHECK(p.h == 2 * h);
        CHECK(p.count(0x08306b) > 2000); /* the fullest cell, matplotlib's darkest blue */
        CHECK(p.count(0xffffff) > 2000); /* empty cells and the margin */
        CHECK(p.count(0x000000) > 500);  /* labels and counts */
        CHECK(p.colours() > 30);         /* the shades between, the colour bar */
    }
    const std::string keep = slurp(cp);
    CHECK(nnl_plot_confusion_matrix(cp.c_str(), cm, 0, names, 0, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(slurp(cp) == keep);
    REQUIRE(nnl_plot_confusion_matrix((d.path + "/cm.Png").c_str(), cm, 2, nullptr, 1, nullptr) == NNL_OK);
    CHECK(Picture(d.path + "/cm.Png").count(0x08306b) > 100);

    /* three panels of three series (the third dashed) */
    const int P = 3, S = 3, N = 200;
    std::vector<float> tx(N), ty((size_t)P * S * N);
    for (int i = 0; i < N; i++) tx[(size_t)i] = 0.01f * (float)i;
    for (int q = 0; q < P; q++)
        for (int k = 0; k < S; k++)
            for (int i = 0; i < N; i++)
                ty[((size_t)q * S + k) * N + (size_t)i] = (float)((q + 1) * std::sin(0.05 * i + 0.4 * k));
    const char *series[S] = {"truth", "forecast", "persistence"}, *labels[P] = {"x", "y", "z"};
    const std::string lp = d.path + "/lines.PNG";
    REQUIRE(nnl_plot_lines(lp.c_str(), tx.data(), ty.data(), P, S, N, series, labels, "time", "Lorenz-63") == NNL_OK);
    {
        int w = 0, h = 0;
        svg_size(nnl::svg_lines(tx.data(), ty.data(), P, S, N, series, labels, "time", "Lorenz-63"), &w, &h);
        Picture p(lp);
        CHECK(p.w == 2 * w);
        CHECK(p.h == 2 * h);
        CHECK(p.count(0x1f77b4) > 300);
        CHECK(p.count(0xff7f0e) > 300);
        CHECK(p.count(0x2ca02c) > 100);
        CHECK(p.count(0x000000) > 300);
    }
    const std::string lines_before = slurp(lp);
    CHECK(nnl_plot_lines(lp.c_str(), tx.data(), ty.data(), P, S, 0, nullptr, nullptr, nullptr, nullptr) ==
          NNL_ERR_ARGUMENT);
    CHECK(slurp(lp) == lines_before);
    CHECK(nnl_plot_lines((d.path + "/no/such/dir/l.png").c_str(), tx.data(), ty.data(), 1, 1, N, nullptr, nullptr,
                         nullptr, nullptr) == NNL_ERR_IO);
}

TEST_CASE("images: the PNG pictures' size is bounded and odd SVG input is survived (plot_png)") {
    /* a 300-class matrix is 4200 SVG pixels square: drawn smaller, within 2^24 pixels */
    std::vector<int64_t> cm((size_t)300 * 300, 1);
    int w = 0, h = 0;
    std::vector<uint8_t> rgb = nnl::raster::draw(nnl::svg_confusion(cm.data(), 300, nullptr, false, nullptr), &w, &h);
    CHECK((int64_t)w * h <= nnl::raster::kPngPixels);
    CHECK(w > 3000);
    CHECK(rgb.size() == (size_t)w * h * 3);
    /* the rasteriser reads only our own SVG, but never fails on other text */
    for (const char *s : {"", "<", "<svg", "<svg width='1e300' height='-5'>", "<svg width='10' height='10'><text x='1'",
                          "<svg width='10' height='10'><polyline points='1,2 3' stroke='red'/><rect width='1e308' "
                          "height='nan' fill='#12'/><circle r='1e9' cx='5' cy='5'/><text x='1' y='5' "
                          "transform='rotate(45)'>\xff&amp;&#1;</text><line x1='inf' stroke='#000'/>",
                          "<svg width='4' height='4'><line x1='0' y1='1' x2='4' y2='1' stroke='black' "
                          "stroke-dasharray='0 0'/><line x1='0' y1='2' x2='4' y2='3' stroke='black' "
                          "stroke-dasharray='1e-300'/></svg>"}) {
        CAPTURE(s);
        rgb = nnl::raster::draw(s, &w, &h);
        CHECK(w >= 1);
        CHECK(h >= 1);
        CHECK(rgb.size() == (size_t)w * h * 3);
    }
}

#endif
