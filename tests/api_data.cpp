/* The data section through the C ABI: arrays, the idx / npy / npz / MNIST
   loaders (on files the tests write themselves, then truncate, corrupt and
   fill with hostile headers), normalize, scale, to_categorical, shuffle and
   the confusion matrix. Uses nnlite.h only. Real MNIST files are read only
   by one optional test, when NNL_MNIST_DIR names their folder. */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include "../nnlite.h"

/* stb_image_write's zlib compressor makes real (Huffman-coded) deflate data;
   without it the tests fall back to deflate's stored blocks. */
#if defined(__has_include)
#if __has_include(<stb/stb_image_write.h>)
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop
#define TEST_HAVE_STBIW 1
#endif
#endif
#ifndef TEST_HAVE_STBIW
#define TEST_HAVE_STBIW 0
#endif

namespace {

using Bytes = std::vector<uint8_t>;

std::string err() { return nnl_last_error(); }
bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

/* ---- A temporary folder, removed with everything in it ---------------------- */

struct TempDir {
    std::string path;
    TempDir() {
        const char *t = getenv("TMPDIR");
        std::string tmpl = std::string(t && *t ? t : "/tmp") + "/nnl_data_XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        REQUIRE(mkdtemp(buf.data()) != nullptr);
        path = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string file(const std::string &name) const { return path + "/" + name; }
    std::string write(const std::string &name, const Bytes &b) const {
        std::string p = file(name);
        FILE *f = fopen(p.c_str(), "wb");
        REQUIRE(f);
        if (!b.empty()) REQUIRE(fwrite(b.data(), 1, b.size(), f) == b.size());
        REQUIRE(fclose(f) == 0);
        return p;
    }
};

Bytes read_bytes(const std::string &path) {
    Bytes b;
    FILE *f = fopen(path.c_str(), "rb");
    REQUIRE(f);
    int c;
    while ((c = fgetc(f)) != EOF) b.push_back((uint8_t)c);
    fclose(f);
    return b;
}

/* ---- Byte builders ------------------------------------------------------------ */

void put16le(Bytes &b, uint32_t v) {
    b.push_back((uint8_t)v);
    b.push_back((uint8_t)(v >> 8));
}
void put32le(Bytes &b, uint32_t v) {
    put16le(b, v & 0xFFFF);
    put16le(b, v >> 16);
}
void put64le(Bytes &b, uint64_t v) {
    put32le(b, (uint32_t)v);
    put32le(b, (uint32_t)(v >> 32));
}
void put32be(Bytes &b, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back((uint8_t)(v >> s));
}
void set32le(Bytes &b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b[at + i] = (uint8_t)(v >> (8 * i));
}
void set16le(Bytes &b, size_t at, uint32_t v) {
    b[at] = (uint8_t)v;
    b[at + 1] = (uint8_t)(v >> 8);
}
uint32_t get32le(const Bytes &b, size_t at) {
    return (uint32_t)b[at] | (uint32_t)b[at + 1] << 8 | (uint32_t)b[at + 2] << 16 | (uint32_t)b[at + 3] << 24;
}

/* Elements as bytes, little endian or (big) byte-reversed. */
template <class T> Bytes raw(const std::vector<T> &v, bool big = false) {
    Bytes b(v.size() * sizeof(T));
    memcpy(b.data(), v.data(), b.size());
    if (big)
        for (size_t i = 0; i < b.size(); i += sizeof(T))
            for (size_t j = 0; j < sizeof(T) / 2; j++) std::swap(b[i + j], b[i + sizeof(T) - 1 - j]);
    return b;
}

/* Bitwise CRC-32, independent of the library's table version. */
uint32_t crc32(const Bytes &b) {
    uint32_t c = 0xFFFFFFFFu;
    for (uint8_t x : b) {
        c ^= x;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

/* Raw deflate (no zlib header or Adler-32 trailer). */
Bytes deflate_raw(const Bytes &data) {
#if TEST_HAVE_STBIW
    int len = 0;
    unsigned char *z = stbi_zlib_compress(const_cast<unsigned char *>(data.data()), (int)data.size(), &len, 8);
    REQUIRE(z);
    REQUIRE(len >= 6);
    Bytes out(z + 2, z + len - 4); /* strip the 2-byte header and the Adler-32 */
    free(z);
    return out;
#else
    Bytes out;
    size_t pos = 0;
    do { /* stored blocks of at most 65535 bytes */
        size_t n = std::min<size_t>(65535, data.size() - pos);
        out.push_back(pos + n == data.size() ? 1 : 0);
        put16le(out, (uint32_t)n);
        put16le(out, (uint32_t)(~n & 0xFFFF));
        out.insert(out.end(), data.begin() + pos, data.begin() + pos + n);
        pos += n;
    } while (pos < data.size());
    return out;
#endif
}

enum { GZ_HCRC = 2, GZ_EXTRA = 4, GZ_NAME = 8, GZ_COMMENT = 16 };

Bytes gzip(const Bytes &data, int flags = 0) {
    Bytes g = {0x1F, 0x8B, 8, (uint8_t)flags, 1, 2, 3, 4, 0, 3};
    if (flags & GZ_EXTRA) {
        put16le(g, 6);
        for (int c : {'A', 'B', '\2', '\0', 'x', 'y'}) g.push_back((uint8_t)c);
    }
    if (flags & GZ_NAME)
        for (char c : std::string("data.idx")) g.push_back((uint8_t)c);
    if (flags & GZ_NAME) g.push_back(0);
    if (flags & GZ_COMMENT)
        for (char c : std::string("a comment")) g.push_back((uint8_t)c);
    if (flags & GZ_COMMENT) g.push_back(0);
    if (flags & GZ_HCRC) put16le(g, crc32(g) & 0xFFFF);
    Bytes d = deflate_raw(data);
    g.insert(g.end(), d.begin(), d.end());
    put32le(g, crc32(data));
    put32le(g, (uint32_t)data.size());
    return g;
}

Bytes idx(uint8_t type, const std::vector<uint32_t> &dims, const Bytes &payload) {
    Bytes b = {0, 0, type, (uint8_t)dims.size()};
    for (uint32_t d : dims) put32be(b, d);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

/* A .npy image with the given header text (padded as numpy pads it). */
Bytes npy_raw(const std::string &header, const Bytes &payload, int major = 1) {
    const size_t pre = major == 1 ? 10 : 12;
    std::string h = header;
    while ((pre + h.size() + 1) % 64) h += ' ';
    h += '\n';
    Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', (uint8_t)major, 0};
    if (major == 1) put16le(b, (uint32_t)h.size());
    else put32le(b, (uint32_t)h.size());
    b.insert(b.end(), h.begin(), h.end());
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

Bytes npy(const std::string &descr, const std::string &shape, const Bytes &payload, bool fortran = false,
          int major = 1) {
    return npy_raw("{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }",
                   payload, major);
}

struct Member {
    std::string name;
    Bytes data;
    bool deflate;
};

/* A zip archive as numpy's savez writes it; zip64 puts every size and offset
   in zip64 extra fields and adds the zip64 end records. */
Bytes zip(const std::vector<Member> &members, bool zip64 = false) {
    Bytes z, cd;
    for (const Member &m : members) {
        Bytes data = m.deflate ? deflate_raw(m.data) : m.data;
        uint32_t off = (uint32_t)z.size(), method = m.deflate ? 8 : 0, crc = crc32(m.data);
        put32le(z, 0x04034B50);
        put16le(z, 20), put16le(z, 0), put16le(z, method), put16le(z, 0), put16le(z, 0x21);
        put32le(z, crc), put32le(z, (uint32_t)data.size()), put32le(z, (uint32_t)m.data.size());
        put16le(z, (uint32_t)m.name.size()), put16le(z, 0);
        z.insert(z.end(), m.name.begin(), m.name.end());
        z.insert(z.end(), data.begin(), data.end());

        put32le(cd, 0x02014B50);
        put16le(cd, 45), put16le(cd, 20), put16le(cd, 0), put16le(cd, method), put16le(cd, 0), put16le(cd, 0x21);
        put32le(cd, crc);
        put32le(cd, zip64 ? 0xFFFFFFFF : (uint32_t)data.size());
        put32le(cd, zip64 ? 0xFFFFFFFF : (uint32_t)m.data.size());
        put16le(cd, (uint32_t)m.name.size()), put16le(cd, zip64 ? 28 : 0), put16le(cd, 0);
        put16le(cd, 0), put16le(cd, 0), put32le(cd, 0);
        put32le(cd, zip64 ? 0xFFFFFFFF : off);
        cd.insert(cd.end(), m.name.begin(), m.name.end());
        if (zip64) {
            put16le(cd, 1), put16le(cd, 24);
            put64le(cd, m.data.size()), put64le(cd, data.size()), put64le(cd, off);
        }
    }
    const uint64_t cd_off = z.size(), n = members.size();
    z.insert(z.end(), cd.begin(), cd.end());
    if (zip64) {
        const uint64_t rec = z.size();
        put32le(z, 0x06064B50), put64le(z, 44), put16le(z, 45), put16le(z, 45), put32le(z, 0), put32le(z, 0);
        put64le(z, n), put64le(z, n), put64le(z, cd.size()), put64le(z, cd_off);
        put32le(z, 0x07064B50), put32le(z, 0), put64le(z, rec), put32le(z, 1);
    }
    put32le(z, 0x06054B50), put16le(z, 0), put16le(z, 0);
    put16le(z, zip64 ? 0xFFFF : (uint32_t)n), put16le(z, zip64 ? 0xFFFF : (uint32_t)n);
    put32le(z, zip64 ? 0xFFFFFFFF : (uint32_t)cd.size()), put32le(z, zip64 ? 0xFFFFFFFF : (uint32_t)cd_off);
    put16le(z, 0);
    return z;
}

/* ---- Loading ------------------------------------------------------------------- */

/* Owns a loaded array. */
struct Arr {
    nnl_array *a = nullptr;
    Arr() = default;
    Arr(const Arr &) = delete;
    Arr &operator=(const Arr &) = delete;
    ~Arr() { nnl_array_free(a); }
    std::vector<int64_t> shape() const {
        return std::vector<int64_t>(nnl_array_shape(a), nnl_array_shape(a) + nnl_array_rank(a));
    }
    std::vector<double> values() const {
        std::vector<double> v((size_t)nnl_array_size(a));
        void *d = nnl_array_data(a);
        for (size_t i = 0; i < v.size(); i++)
            v[i] = nnl_array_dtype(a) == NNL_FLOAT32 ? ((float *)d)[i] : (double)((int64_t *)d)[i];
        return v;
    }
};

enum Kind { NPY, IDX, NPZ };

/* Loads path (npz: member key); on failure checks that *out was set to NULL
   and a message was left. Returns the status. */
int load(Kind k, const std::string &path, Arr &out, int want = 0, const char *key = "a") {
    nnl_array_free(out.a);
    out.a = (nnl_array *)&out; /* not NULL: the loader must clear it */
    int st = k == NPY ? nnl_load_npy(path.c_str(), want, &out.a)
             : k == IDX ? nnl_load_idx(path.c_str(), want, &out.a)
                        : nnl_load_npz(path.c_str(), key, want, &out.a);
    if (st != NNL_OK) {
        CHECK(out.a == nullptr);
        CHECK(!err().empty());
        out.a = nullptr;
    }
    return st;
}

int load_status(Kind k, const std::string &path, int want = 0, const char *key = "a") {
    Arr a;
    return load(k, path, a, want, key);
}

/* Whether this library was built with stb (probed once with a tiny .gz idx). */
bool have_stb() {
    static int have = -1;
    if (have < 0) {
        TempDir t;
        int st = load_status(IDX, t.write("probe.gz", gzip(idx(0x08, {2}, {7, 9}))));
        if (st == NNL_ERR_UNSUPPORTED) CHECK(contains(err(), "libstb-dev"));
        else CHECK(st == NNL_OK);
        have = st == NNL_OK;
        if (!have) MESSAGE("built without stb: .gz and deflated npz members are checked as unsupported");
    }
    return have == 1;
}

/* The status a compressed input must give: `ok` with stb, else UNSUPPORTED. */
void check_compressed(int st, int ok = NNL_OK) {
    if (have_stb()) {
        CHECK(st == ok);
    } else {
        CHECK(st == NNL_ERR_UNSUPPORTED);
        CHECK(contains(err(), "apt-get install libstb-dev"));
    }
}

} // namespace

/* ================================================================================ */

TEST_CASE("arrays: create, accessors, reshape, convert") {
    int64_t s[3] = {2, 3, 4};
    Arr a;
    REQUIRE(nnl_array_create(NNL_FLOAT32, 3, s, &a.a) == NNL_OK);
    CHECK(nnl_array_dtype(a.a) == NNL_FLOAT32);
    CHECK(nnl_array_rank(a.a) == 3);
    CHECK(nnl_array_dim(a.a, 1) == 3);
    CHECK(nnl_array_dim(a.a, 3) == 0);
    CHECK(nnl_array_dim(a.a, -1) == 0);
    CHECK(nnl_array_size(a.a) == 24);
    CHECK(a.shape() == std::vector<int64_t>{2, 3, 4});
    float *d = (float *)nnl_array_data(a.a);
    for (int i = 0; i < 24; i++) CHECK(d[i] == 0.0f);
    for (int i = 0; i < 24; i++) d[i] = (float)(i - 5);

    int64_t flat[2] = {6, 4}, bad[2] = {5, 5};
    CHECK(nnl_array_reshape(a.a, 2, flat) == NNL_OK);
    CHECK(a.shape() == std::vector<int64_t>{6, 4});
    CHECK(nnl_array_reshape(a.a, 2, bad) == NNL_ERR_SHAPE);
    CHECK(contains(err(), "(6, 4)"));
    CHECK(a.shape() == std::vector<int64_t>{6, 4});

    CHECK(nnl_array_convert(a.a, NNL_INT64) == NNL_OK);
    CHECK(nnl_array_dtype(a.a) == NNL_INT64);
    CHECK(((int64_t *)nnl_array_data(a.a))[0] == -5);
    CHECK(((int64_t *)nnl_array_data(a.a))[23] == 18);
    CHECK(nnl_array_convert(a.a, NNL_FLOAT32) == NNL_OK);
    CHECK(((float *)nnl_array_data(a.a))[23] == 18.0f);

    ((float *)nnl_array_data(a.a))[7] = 0.5f; /* not integral: refused, array unchanged */
    CHECK(nnl_array_convert(a.a, NNL_INT64) == NNL_ERR_ARGUMENT);
    CHECK(contains(err(), "0.5"));
    CHECK(nnl_array_dtype(a.a) == NNL_FLOAT32);
    CHECK(((float *)nnl_array_data(a.a))[7] == 0.5f);

    Arr scalar, empty;
    REQUIRE(nnl_array_create(NNL_INT64, 0, nullptr, &scalar.a) == NNL_OK);
    CHECK(nnl_array_size(scalar.a) == 1);
    CHECK(nnl_array_data(scalar.a) != nullptr);
    int64_t zero[2] = {0, 5};
    REQUIRE(nnl_array_create(NNL_INT64, 2, zero, &empty.a) == NNL_OK);
    CHECK(nnl_array_size(empty.a) == 0);
    CHECK(nnl_array_data(empty.a) != nullptr);

    nnl_array_free(nullptr);
    CHECK(nnl_array_dtype(nullptr) == 0);
    CHECK(nnl_array_rank(nullptr) == 0);
    CHECK(nnl_array_size(nullptr) == 0);
    CHECK(nnl_array_shape(nullptr) == nullptr);
    CHECK(nnl_array_data(nullptr) == nullptr);
}

TEST_CASE("arrays: bad arguments fail cleanly") {
    int64_t s[2] = {2, 2}, neg[2] = {2, -1}, huge[3] = {INT64_MAX / 2, 4, 4}, big[2] = {INT64_MAX / 2, 1};
    nnl_array *a = (nnl_array *)s;
    CHECK(nnl_array_create(NNL_INT32, 2, s, &a) == NNL_ERR_ARGUMENT);
    CHECK(a == nullptr);
    CHECK(!err().empty());
    CHECK(nnl_array_create(NNL_FLOAT32, 9, s, &a) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_create(NNL_FLOAT32, -1, s, &a) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_create(NNL_FLOAT32, 2, nullptr, &a) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_create(NNL_FLOAT32, 2, neg, &a) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_create(NNL_FLOAT32, 3, huge, &a) == NNL_ERR_MEMORY);
    CHECK(nnl_array_create(NNL_INT64, 2, big, &a) == NNL_ERR_MEMORY);
    CHECK(a == nullptr);
    CHECK(nnl_array_create(NNL_FLOAT32, 2, s, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_reshape(nullptr, 2, s) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_convert(nullptr, NNL_INT64) == NNL_ERR_ARGUMENT);
    Arr b;
    REQUIRE(nnl_array_create(NNL_FLOAT32, 2, s, &b.a) == NNL_OK);
    CHECK(nnl_array_convert(b.a, NNL_FLOAT64) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_reshape(b.a, 9, s) == NNL_ERR_ARGUMENT);
    CHECK(nnl_array_reshape(b.a, 2, neg) == NNL_ERR_ARGUMENT);
}

TEST_CASE("npy: every dtype and byte order") {
    TempDir t;
    const std::vector<double> sv = {0, 1, -2, 3, 100, -7}, uv = {0, 1, 2, 3, 200, 255};
    const std::vector<double> fv = {0.5, -1.25, 3, 1000, -0, 7};
    struct Case {
        std::string descr;
        Bytes payload;
        const std::vector<double> *want;
        bool is_float;
    };
    auto both = [&](const std::string &code, auto tag, const std::vector<double> &v, bool fl) {
        using T = decltype(tag);
        std::vector<T> x(v.begin(), v.end());
        std::vector<Case> c;
        c.push_back({"<" + code, raw(x), &v, fl});
        c.push_back({">" + code, raw(x, true), &v, fl});
        c.push_back({"=" + code, raw(x), &v, fl});
        return c;
    };
    std::vector<Case> cases;
    for (auto &c : both("i2", int16_t(), sv, false)) cases.push_back(c);
    for (auto &c : both("i4", int32_t(), sv, false)) cases.push_back(c);
    for (auto &c : both("i8", int64_t(), sv, false)) cases.push_back(c);
    for (auto &c : both("u2", uint16_t(), uv, false)) cases.push_back(c);
    for (auto &c : both("u4", uint32_t(), uv, false)) cases.push_back(c);
    for (auto &c : both("u8", uint64_t(), uv, false)) cases.push_back(c);
    for (auto &c : both("f4", float(), fv, true)) cases.push_back(c);
    for (auto &c : both("f8", double(), fv, true)) cases.push_back(c);
    cases.push_back({"|i1", raw(std::vector<int8_t>(sv.begin(), sv.end())), &sv, false});
    cases.push_back({"|u1", raw(std::vector<uint8_t>(uv.begin(), uv.end())), &uv, false});
    const std::vector<double> bv = {0, 1, 0, 1, 1, 0};
    cases.push_back({"|b1", {0, 1, 0, 1, 1, 0}, &bv, false});
    const std::vector<double> fh = {0.5, -1.25, 3, 1000, 0, 7};
    cases.push_back({"<f2", raw(std::vector<uint16_t>{0x3800, 0xBD00, 0x4200, 0x63D0, 0x0000, 0x4700}), &fh, true});
    cases.push_back({">f2", raw(std::vector<uint16_t>{0x3800, 0xBD00, 0x4200, 0x63D0, 0x0000, 0x4700}, true), &fh, true});

    for (const Case &c : cases) {
        CAPTURE(c.descr);
        std::string p = t.write("a.npy", npy(c.descr, "(2, 3)", c.payload));
        Arr a;
        REQUIRE(load(NPY, p, a) == NNL_OK);
        CHECK(nnl_array_dtype(a.a) == (c.is_float ? NNL_FLOAT32 : NNL_INT64));
        CHECK(a.shape() == std::vector<int64_t>{2, 3});
        CHECK(a.values() == *c.want);
        REQUIRE(load(NPY, p, a, NNL_FLOAT32) == NNL_OK);
        CHECK(nnl_array_dtype(a.a) == NNL_FLOAT32);
        CHECK(a.values() == *c.want);
        if (!c.is_float) { /* the float values include fractions */
            REQUIRE(load(NPY, p, a, NNL_INT64) == NNL_OK);
            CHECK(nnl_array_dtype(a.a) == NNL_INT64);
            CHECK(a.values() == *c.want);
        }
    }
}

TEST_CASE("npy: versions 1.0 2.0 3.0 and header spellings") {
    TempDir t;
    const Bytes data = raw(std::vector<int32_t>{1, 2, 3, 4, 5, 6});
    for (int major = 1; major <= 3; major++) {
        CAPTURE(major);
        Arr a;
        REQUIRE(load(NPY, t.write("v.npy", npy("<i4", "(3, 2)", data, false, major)), a) == NNL_OK);
        CHECK(a.shape() == std::vector<int64_t>{3, 2});
        CHECK(a.values() == std::vector<double>{1, 2, 3, 4, 5, 6});
    }
    const char *headers[] = {
        "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": (6,)}",
        "{'shape': (6L,), 'fortran_order': False, 'descr': '<i4'}",
        "{ 'descr' : '<i4' ,\t'fortran_order' : False , 'shape' : ( 6 , ) , }",
    };
    for (const char *h : headers) {
        CAPTURE(h);
        Arr a;
        REQUIRE(load(NPY, t.write("h.npy", npy_raw(h, data)), a) == NNL_OK);
        CHECK(a.shape() == std::vector<int64_t>{6});
        CHECK(a.values() == std::vector<double>{1, 2, 3, 4, 5, 6});
    }
    Arr s, e;
    REQUIRE(load(NPY, t.write("s.npy", npy("<f8", "()", raw(std::vector<double>{2.5}))), s) == NNL_OK);
    CHECK(nnl_array_rank(s.a) == 0);
    CHECK(s.values() == std::vector<double>{2.5});
    REQUIRE(load(NPY, t.write("e.npy", npy("<f4", "(0, 7)", {})), e) == NNL_OK);
    CHECK(e.shape() == std::vector<int64_t>{0, 7});
    CHECK(nnl_array_size(e.a) == 0);
}

TEST_CASE("npy: Fortran order is transposed to C order") {
    TempDir t;
    /* v[i][j][k] = 100 i + 10 j + k for shape (2, 3, 4), stored column-major */
    std::vector<int32_t> f;
    std::vector<double> c;
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) f.push_back(100 * i + 10 * j + k);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) c.push_back(100 * i + 10 * j + k);
    Arr a;
    REQUIRE(load(NPY, t.write("f.npy", npy(">i4", "(2, 3, 4)", raw(f, true), true)), a) == NNL_OK);
    CHECK(a.shape() == std::vector<int64_t>{2, 3, 4});
    CHECK(a.values() == c);

    /* 2-D float: [[1, 2], [3, 4], [5, 6]] in column order 1 3 5 2 4 6 */
    REQUIRE(load(NPY, t.write("g.npy", npy("<f4", "(3, 2)", raw(std::vector<float>{1, 3, 5, 2, 4, 6}), true)), a) ==
            NNL_OK);
    CHECK(a.values() == std::vector<double>{1, 2, 3, 4, 5, 6});
    /* 1-D Fortran is the same memory */
    REQUIRE(load(NPY, t.write("h.npy", npy("<f4", "(3,)", raw(std::vector<float>{1, 3, 5}), true)), a) == NNL_OK);
    CHECK(a.values() == std::vector<double>{1, 3, 5});
}

TEST_CASE("npy: float16 decoded by hand") {
    TempDir t;
    const std::vector<uint16_t> h = {0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x03FF, 0x8000, 0x7C00, 0xFC00, 0x7E00};
    Arr a;
    REQUIRE(load(NPY, t.write("h.npy", npy("<f2", "(10,)", raw(h))), a) == NNL_OK);
    const float *v = (const float *)nnl_array_data(a.a);
    CHECK(v[0] == 1.0f);
    CHECK(v[1] == -2.0f);
    CHECK(v[2] == 0.333251953125f);
    CHECK(v[3] == 65504.0f);
    CHECK(v[4] == std::ldexp(1.0f, -24));          /* smallest subnormal */
    CHECK(v[5] == std::ldexp(1023.0f, -24));       /* largest subnormal */
    CHECK((v[6] == 0.0f && std::signbit(v[6])));   /* -0 */
    CHECK((std::isinf(v[7]) && v[7] > 0));
    CHECK((std::isinf(v[8]) && v[8] < 0));
    CHECK(std::isnan(v[9]));
    CHECK(load(NPY, t.file("h.npy"), a, NNL_INT64) == NNL_ERR_ARGUMENT); /* 1/3 is no integer */
}

TEST_CASE("npy: want_dtype and values that do not convert") {
    TempDir t;
    Arr a;
    std::string f = t.write("f.npy", npy("<f8", "(3,)", raw(std::vector<double>{1, 2.5, 3})));
    CHECK(load(NPY, f, a, NNL_INT64) == NNL_ERR_ARGUMENT);
    CHECK(contains(err(), "2.5"));
    std::string nan = t.write("n.npy", npy("<f4", "(1,)", raw(std::vector<float>{NAN})));
    CHECK(load(NPY, nan, a, NNL_INT64) == NNL_ERR_ARGUMENT);
    std::string u = t.write("u.npy", npy("<u8", "(2,)", raw(std::vector<uint64_t>{1, UINT64_MAX})));
    CHECK(load(NPY, u, a) == NNL_ERR_ARGUMENT);
    CHECK(contains(err(), "int64"));
    REQUIRE(load(NPY, u, a, NNL_FLOAT32) == NNL_OK);
    CHECK(((float *)nnl_array_data(a.a))[1] == 18446744073709551616.0f);
    std::string big = t.write("b.npy", npy("<f8", "(2,)", raw(std::vector<double>{1e300, -1e300})));
    REQUIRE(load(NPY, big, a) == NNL_OK); /* saturates to +-inf */
    CHECK(std::isinf(((float *)nnl_array_data(a.a))[0]));
    CHECK(load(NPY, f, a, NNL_FLOAT64) == NNL_ERR_ARGUMENT);
    CHECK(load(NPY, f, a, 99) == NNL_ERR_ARGUMENT);
    CHECK(nnl_load_npy(f.c_str(), 0, nullptr) == NNL_ERR_ARGUMENT);
    CHECK(load(NPY, f, a, NNL_FLOAT32) == NNL_OK);
}

TEST_CASE("npy: save and load back") {
    TempDir t;
    int64_t s3[3] = {2, 1, 3};
    Arr a, b;
    REQUIRE(nnl_array_create(NNL_FLOAT32, 3, s3, &a.a) == NNL_OK);
    for (int i = 0; i < 6; i++) ((float *)nnl_array_data(a.a))[i] = 0.25f * (float)i - 1;
    std::string p = t.file("x.npy");
    REQUIRE(nnl_save_npy(p.c_str(), a.a) == NNL_OK);
    Bytes f = read_bytes(p);
    REQUIRE(f.size() > 10);
    CHECK(std::string(f.begin() + 1, f.begin() + 6) == "NUMPY");
    CHECK(f[6] == 1);
    const size_t hl = f[8] | (size_t)f[9] << 8;
    CHECK((10 + hl) % 64 == 0);
    CHECK(f[10 + hl - 1] == '\n');
    std::string hdr(f.begin() + 10, f.begin() + 10 + (long)hl);
    CHECK(contains(hdr, "'descr': '<f4'"));
    CHECK(contains(hdr, "'shape': (2, 1, 3)"));
    CHECK(f.size() == 10 + hl + 24);
    REQUIRE(load(NPY, p, b) == NNL_OK);
    CHECK(b.shape() == a.shape());
    CHECK(b.values() == a.values());

    int64_t s1[1] = {4};
    Arr c, d;
    REQUIRE(nnl_array_create(NNL_INT64, 1, s1, &c.a) == NNL_OK);
    ((int64_t *)nnl_array_data(c.a))[3] = -(int64_t(1) << 60);
    REQUIRE(nnl_save_npy(p.c_str(), c.a) == NNL_OK);
    const Bytes f1 = read_bytes(p);
    CHECK(contains(std::string(f1.begin(), f1.begin() + 64), "'shape': (4,)"));
    REQUIRE(load(NPY, p, d) == NNL_OK);
    CHECK(nnl_array_dtype(d.a) == NNL_INT64);
    CHECK(((int64_t *)nnl_array_data(d.a))[3] == -(int64_t(1) << 60));

    Arr e, g;
    REQUIRE(nnl_array_create(NNL_FLOAT32, 0, nullptr, &e.a) == NNL_OK);
    REQUIRE(nnl_save_npy(p.c_str(), e.a) == NNL_OK);
    REQUIRE(load(NPY, p, g) == NNL_OK);
    CHECK(nnl_array_rank(g.a) == 0);

    CHECK(nnl_save_npy(t.file("no/such/dir.npy").c_str(), a.a) == NNL_ERR_IO);
    CHECK(!err().empty());
    CHECK(nnl_save_npy(nullptr, a.a) == NNL_ERR_ARGUMENT);
    CHECK(nnl_save_npy(p.c_str(), nullptr) == NNL_ERR_ARGUMENT);
}

TEST_CASE("npz: stored, deflated and zip64 members") {
    TempDir t;
    const Bytes x = npy("<f4", "(2, 2)", raw(std::vector<float>{1, 2, 3, 4}));
    std::vector<uint8_t> big(5000);
    for (size_t i = 0; i < big.size(); i++) big[i] = (uint8_t)(i * 7 % 13);
    const Bytes y = npy("|u1", "(5000,)", big);
    const std::vector<double> yv(big.begin(), big.end());
    for (int variant = 0; variant < 3; variant++) {
        CAPTURE(variant);
        const bool deflate = variant == 1, z64 = variant == 2;
        std::string p = t.write("d.npz", zip({{"x.npy", x, deflate}, {"labels.npy", y, deflate}, {"raw", x, false}}, z64));
        Arr a;
        int st = load(NPZ, p, a, 0, "x");
        if (deflate) {
            check_compressed(st);
            if (!have_stb()) continue;
        }
        REQUIRE(st == NNL_OK);
        CHECK(a.values() == std::vector<double>{1, 2, 3, 4});
        REQUIRE(load(NPZ, p, a, 0, "x.npy") == NNL_OK);
        CHECK(a.shape() == std::vector<int64_t>{2, 2});
        REQUIRE(load(NPZ, p, a, NNL_FLOAT32, "labels") == NNL_OK);
        CHECK(nnl_array_dtype(a.a) == NNL_FLOAT32);
        CHECK(a.values() == yv);
        REQUIRE(load(NPZ, p, a, 0, "raw") == NNL_OK); /* a member without .npy */
        CHECK(a.values() == std::vector<double>{1, 2, 3, 4});

        CHECK(load(NPZ, p, a, 0, "y") == NNL_ERR_ARGUMENT);
        CHECK(contains(err(), "'y'"));
        CHECK(contains(err(), "x, labels, raw"));
    }
    CHECK(nnl_load_npz(t.file("d.npz").c_str(), nullptr, 0, nullptr) == NNL_ERR_ARGUMENT);
}

TEST_CASE("idx: every data type, plain and gzip") {
    TempDir t;
    struct Case {
        uint8_t type;
        Bytes payload;
        std::vector<double> v;
        bool is_float;
    };
    const std::vector<Case> cases = {
        {0x08, {0, 1, 128, 255, 7, 9}, {0, 1, 128, 255, 7, 9}, false},
        {0x09, {0, 1, 0x80, 0xFF, 7, 9}, {0, 1, -128, -1, 7, 9}, false},
        {0x0B, raw(std::vector<int16_t>{0, 1, -300, 300, 7, 9}, true), {0, 1, -300, 300, 7, 9}, false},
        {0x0C, raw(std::vector<int32_t>{0, 1, -70000, 70000, 7, 9}, true), {0, 1, -70000, 70000, 7, 9}, false},
        {0x0D, raw(std::vector<float>{0.5f, 1, -2, 3, 7, 9}, true), {0.5, 1, -2, 3, 7, 9}, true},
        {0x0E, raw(std::vector<double>{0.5, 1, -2, 3, 7, 9}, true), {0.5, 1, -2, 3, 7, 9}, true},
    };
    for (const Case &c : cases) {
        CAPTURE((int)c.type);
        Bytes file = idx(c.type, {3, 2}, c.payload);
        for (bool gz : {false, true}) {
            CAPTURE(gz);
            std::string p = t.write(gz ? "a.idx.gz" : "a.idx", gz ? gzip(file) : file);
            Arr a;
            int st = load(IDX, p, a);
            if (gz) {
                check_compressed(st);
                if (!have_stb()) continue;
            }
            REQUIRE(st == NNL_OK);
            CHECK(nnl_array_dtype(a.a) == (c.is_float ? NNL_FLOAT32 : NNL_INT64));
            CHECK(a.shape() == std::vector<int64_t>{3, 2});
            CHECK(a.values() == c.v);
            REQUIRE(load(IDX, p, a, NNL_FLOAT32) == NNL_OK);
            CHECK(nnl_array_dtype(a.a) == NNL_FLOAT32);
            CHECK(a.values() == c.v);
        }
    }
    Arr a; /* a rank-3 ubyte image stack, as MNIST's */
    Bytes px(2 * 4 * 3);
    for (size_t i = 0; i < px.size(); i++) px[i] = (uint8_t)(i * 10);
    REQUIRE(load(IDX, t.write("i3", idx(0x08, {2, 4, 3}, px)), a, NNL_FLOAT32) == NNL_OK);
    CHECK(a.shape() == std::vector<int64_t>{2, 4, 3});
    CHECK(a.values()[23] == 230);
    CHECK(load(IDX, t.file("i3"), a, NNL_INT32) == NNL_ERR_ARGUMENT);
}

TEST_CASE("gzip: told by magic bytes, header fields, CRC") {
    TempDir t;
    const Bytes file = idx(0x08, {4}, {1, 2, 3, 4});
    Arr a;
    /* a gzip named .idx and a plain file named .gz */
    check_compressed(load(IDX, t.write("g.idx", gzip(file)), a));
    REQUIRE(load(IDX, t.write("p.gz", file), a) == NNL_OK);
    CHECK(a.values() == std::vector<double>{1, 2, 3, 4});
    for (int flags : {0 + GZ_EXTRA, 0 + GZ_NAME, 0 + GZ_COMMENT, 0 + GZ_HCRC, GZ_EXTRA | GZ_NAME | GZ_COMMENT | GZ_HCRC}) {
        CAPTURE(flags);
        int st = load(IDX, t.write("f.gz", gzip(file, flags)), a);
        check_compressed(st);
        if (st == NNL_OK) CHECK(a.values() == std::vector<double>{1, 2, 3, 4});
    }
    /* an empty payload and a large, compressible one */
    check_compressed(load(IDX, t.write("e.gz", gzip(idx(0x08, {0}, {}))), a));
    Bytes many(300000);
    for (size_t i = 0; i < many.size(); i++) many[i] = (uint8_t)(i % 251 < 200 ? 0 : i);
    int st = load(IDX, t.write("m.gz", gzip(idx(0x08, {300, 1000}, many))), a);
    check_compressed(st);
    if (st == NNL_OK) {
        CHECK(a.shape() == std::vector<int64_t>{300, 1000});
        CHECK(a.values()[299999] == (double)many[299999]);
    }
    if (!have_stb()) return;
    Bytes bad = gzip(file);
    bad[bad.size() - 8] ^= 1; /* CRC */
    CHECK(load(IDX, t.write("c.gz", bad), a) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "CRC"));
    bad = gzip(file);
    set32le(bad, bad.size() - 4, 5); /* ISIZE */
    CHECK(load(IDX, t.write("c.gz", bad), a) == NNL_ERR_FORMAT);
    bad = gzip(file, GZ_HCRC);
    bad[10] ^= 1; /* header CRC */
    CHECK(load(IDX, t.write("c.gz", bad), a) == NNL_ERR_FORMAT);
}

TEST_CASE("mnist: folders with plain or .gz files, and .npz files") {
    TempDir t;
    const int n_train = 5, n_test = 3;
    auto images = [](int n, int salt) {
        Bytes px((size_t)n * 784);
        for (size_t i = 0; i < px.size(); i++) px[i] = (uint8_t)((i * 31 + (size_t)salt) % 256);
        return px;
    };
    const Bytes xtr = images(n_train, 1), xte = images(n_test, 2), ytr = {5, 0, 4, 1, 9}, yte = {7, 2, 1};
    const Bytes files[4] = {idx(0x08, {n_train, 28, 28}, xtr), idx(0x08, {n_train}, ytr), idx(0x08, {n_test, 28, 28}, xte),
                            idx(0x08, {n_test}, yte)};
    const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"};
    auto check = [&](nnl_array *a[4]) {
        CHECK(nnl_array_dtype(a[0]) == NNL_FLOAT32);
        CHECK(nnl_array_dtype(a[1]) == NNL_INT64);
        CHECK(std::vector<int64_t>(nnl_array_shape(a[0]), nnl_array_shape(a[0]) + 3) ==
              std::vector<int64_t>{n_train, 28, 28});
        CHECK(nnl_array_dim(a[2], 0) == n_test);
        CHECK(nnl_array_rank(a[3]) == 1);
        CHECK(((float *)nnl_array_data(a[0]))[100] == (float)xtr[100]);
        CHECK(((float *)nnl_array_data(a[2]))[3 * 784 - 1] == (float)xte[3 * 784 - 1]);
        CHECK(((int64_t *)nnl_array_data(a[1]))[4] == 9);
        CHECK(((int64_t *)nnl_array_data(a[3]))[0] == 7);
    };
    auto load_all = [&](const std::string &path, nnl_array *a[4]) {
        return nnl_load_mnist(path.c_str(), &a[0], &a[1], &a[2], &a[3]);
    };
    auto free_all = [](nnl_array *a[4]) {
        for (int i = 0; i < 4; i++) nnl_array_free(a[i]);
    };

    std::filesystem::create_directory(t.file("plain"));
    std::filesystem::create_directory(t.file("gz"));
    for (int i = 0; i < 4; i++) {
        t.write(std::string("plain/") + names[i], files[i]);
        t.write(std::string("gz/") + names[i] + ".gz", gzip(files[i]));
    }
    nnl_array *a[4];
    REQUIRE(load_all(t.file("plain"), a) == NNL_OK);
    check(a);
    free_all(a);
    int st = load_all(t.file("gz"), a);
    check_compressed(st);
    if (st == NNL_OK) {
        check(a);
        free_all(a);
    }

    const Bytes npz = zip({{"x_test.npy", npy("|u1", "(3, 28, 28)", xte), false},
                           {"x_train.npy", npy("|u1", "(5, 28, 28)", xtr), false},
                           {"y_train.npy", npy("|u1", "(5,)", ytr), false},
                           {"y_test.npy", npy("<i8", "(3,)", raw(std::vector<int64_t>{7, 2, 1})), false}});
    REQUIRE(load_all(t.write("mnist.npz", npz), a) == NNL_OK);
    check(a);
    free_all(a);

    /* NULL outputs skip their part: a missing test set is then no error */
    std::filesystem::remove(t.file("plain/t10k-images-idx3-ubyte"));
    nnl_array *x = nullptr, *y = nullptr;
    REQUIRE(nnl_load_mnist(t.file("plain").c_str(), &x, &y, nullptr, nullptr) == NNL_OK);
    CHECK(nnl_array_dim(x, 0) == n_train);
    nnl_array_free(x), nnl_array_free(y);
    CHECK(load_all(t.file("plain"), a) == NNL_ERR_IO);
    for (int i = 0; i < 4; i++) CHECK(a[i] == nullptr);
    CHECK(contains(err(), "t10k-images-idx3-ubyte"));
}

TEST_CASE("mnist: errors name what is wrong") {
    TempDir t;
    nnl_array *a[4] = {nullptr, nullptr, nullptr, nullptr};
    auto load_all = [&](const std::string &path) { return nnl_load_mnist(path.c_str(), &a[0], &a[1], &a[2], &a[3]); };
    CHECK(load_all(t.file("nowhere")) == NNL_ERR_IO);
    CHECK(contains(err(), "nowhere"));
    CHECK(load_all(t.path) == NNL_ERR_IO);
    CHECK(contains(err(), "train-images-idx3-ubyte"));
    CHECK(nnl_load_mnist(nullptr, &a[0], &a[1], &a[2], &a[3]) == NNL_ERR_ARGUMENT);

    const Bytes img = idx(0x08, {2, 28, 28}, Bytes(2 * 784, 1)), lab = idx(0x08, {3}, {1, 2, 3});
    std::filesystem::create_directory(t.file("m"));
    t.write("m/train-images-idx3-ubyte", img);
    t.write("m/train-labels-idx1-ubyte", lab);
    t.write("m/t10k-images-idx3-ubyte", img);
    t.write("m/t10k-labels-idx1-ubyte", idx(0x08, {2}, {1, 2}));
    CHECK(load_all(t.file("m")) == NNL_ERR_FORMAT); /* 2 images, 3 labels */
    CHECK(contains(err(), "2 images"));
    CHECK(contains(err(), "3 labels"));
    for (int i = 0; i < 4; i++) CHECK(a[i] == nullptr);
    t.write("m/train-labels-idx1-ubyte", idx(0x08, {2, 1}, {1, 2}));
    CHECK(load_all(t.file("m")) == NNL_ERR_FORMAT); /* labels of rank 2 */

    const Bytes v = npy("|u1", "(2,)", {1, 2});
    CHECK(load_all(t.write("k.npz", zip({{"x_train.npy", v, false}, {"foo.npy", v, false}}))) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "y_train"));
    CHECK(contains(err(), "foo"));
    CHECK(load_all(t.write("n.npz", Bytes{1, 2, 3})) == NNL_ERR_FORMAT);
}

TEST_CASE("loaders: missing files are NNL_ERR_IO, empty ones NNL_ERR_FORMAT") {
    TempDir t;
    for (Kind k : {NPY, IDX, NPZ}) {
        CAPTURE((int)k);
        CHECK(load_status(k, t.file("missing")) == NNL_ERR_IO);
        CHECK(contains(err(), "missing"));
        CHECK(load_status(k, t.path) == NNL_ERR_IO); /* a folder */
        CHECK(load_status(k, t.write("empty", {})) == NNL_ERR_FORMAT);
    }
}

TEST_CASE("truncated files fail with NNL_ERR_FORMAT at every length") {
    TempDir t;
    std::vector<uint8_t> labels(40);
    for (size_t i = 0; i < labels.size(); i++) labels[i] = (uint8_t)(i % 10);
    const Bytes x = npy("<f4", "(2, 3)", raw(std::vector<float>{1, 2, 3, 4, 5, 6}));
    struct Case {
        const char *name;
        Kind kind;
        Bytes file;
        bool compressed;
    };
    const std::vector<Case> cases = {
        {"npy v1", NPY, x, false},
        {"npy v2", NPY, npy("|u1", "(40,)", labels, false, 2), false},
        {"idx", IDX, idx(0x0D, {2, 3}, raw(std::vector<float>{1, 2, 3, 4, 5, 6}, true)), false},
        {"idx.gz", IDX, gzip(idx(0x08, {40}, labels), GZ_NAME), true},
        {"stored npz", NPZ, zip({{"a.npy", x, false}, {"b.npy", x, false}}), false},
        {"deflated npz", NPZ, zip({{"a.npy", x, true}}), true},
        {"zip64 npz", NPZ, zip({{"a.npy", x, false}}, true), false},
    };
    for (const Case &c : cases) {
        CAPTURE(c.name);
        std::string p = t.write("full", c.file);
        int st = load_status(c.kind, p);
        if (c.compressed) check_compressed(st);
        else REQUIRE(st == NNL_OK);
        for (size_t len = 0; len < c.file.size(); len++) {
            CAPTURE(len);
            int s = load_status(c.kind, t.write("cut", Bytes(c.file.begin(), c.file.begin() + (long)len)));
            if (c.compressed && !have_stb()) CHECK((s == NNL_ERR_FORMAT || s == NNL_ERR_UNSUPPORTED));
            else CHECK(s == NNL_ERR_FORMAT);
        }
        Bytes longer = c.file; /* trailing junk after an idx or npy is an error too */
        longer.push_back(0);
        if (c.kind != NPZ && !c.compressed) CHECK(load_status(c.kind, t.write("long", longer)) == NNL_ERR_FORMAT);
    }
}

TEST_CASE("corrupted bytes never crash; checksums catch damaged data") {
    TempDir t;
    const Bytes x = npy("<i2", "(2, 3)", raw(std::vector<int16_t>{1, 2, 3, 4, 5, 6}));
    struct Case {
        const char *name;
        Kind kind;
        Bytes file;
    };
    const std::vector<Case> cases = {
        {"npy", NPY, x},
        {"idx", IDX, idx(0x0B, {2, 3}, raw(std::vector<int16_t>{1, 2, 3, 4, 5, 6}, true))},
        {"idx.gz", IDX, gzip(idx(0x08, {6}, {1, 2, 3, 4, 5, 6}), GZ_HCRC | GZ_NAME)},
        {"npz", NPZ, zip({{"a.npy", x, false}})},
        {"deflated npz", NPZ, zip({{"a.npy", x, true}})},
        {"zip64 npz", NPZ, zip({{"a.npy", x, true}}, true)},
    };
    for (const Case &c : cases) {
        CAPTURE(c.name);
        for (size_t i = 0; i < c.file.size(); i++)
            for (uint8_t mask : {0x01, 0x80, 0xFF}) {
                CAPTURE(i);
                CAPTURE((int)mask);
                Bytes b = c.file;
                b[i] ^= mask;
                int st = load_status(c.kind, t.write("bad", b));
                CHECK((st == NNL_OK || st == NNL_ERR_FORMAT || st == NNL_ERR_UNSUPPORTED || st == NNL_ERR_ARGUMENT));
            }
    }
    /* Every change outside gzip's MTIME/XFL/OS bytes is caught. */
    if (have_stb()) {
        const Bytes &g = cases[2].file;
        for (size_t i = 0; i < g.size(); i++) {
            if (i >= 4 && i < 10) continue;
            CAPTURE(i);
            Bytes b = g;
            b[i] ^= 0x01;
            CHECK(load_status(IDX, t.write("bad", b)) == NNL_ERR_FORMAT);
        }
    }
    /* A damaged byte inside a stored member's data: CRC mismatch. */
    Bytes z = zip({{"a.npy", x, false}});
    z[30 + 5 + x.size() - 1] ^= 0x10;
    CHECK(load_status(NPZ, t.write("bad", z)) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "CRC"));
}

TEST_CASE("hostile headers fail cleanly, without huge allocations") {
    TempDir t;
    auto npy_st = [&](const Bytes &b) { return load_status(NPY, t.write("h.npy", b)); };
    auto idx_st = [&](const Bytes &b) { return load_status(IDX, t.write("h.idx", b)); };
    const Bytes d6 = raw(std::vector<float>{1, 2, 3, 4, 5, 6});

    /* idx */
    CHECK(idx_st(idx(0x08, std::vector<uint32_t>(8, 0xFFFFFFFF), {})) == NNL_ERR_FORMAT);
    CHECK(idx_st(idx(0x08, {65536, 65536, 65536, 65536}, {})) == NNL_ERR_FORMAT); /* product wraps to 0 */
    CHECK(idx_st(idx(0x0E, {0x20000000, 8}, Bytes(8))) == NNL_ERR_FORMAT);         /* bytes wrap */
    CHECK(idx_st(idx(0x08, {7}, {1, 2, 3})) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "truncated"));
    CHECK(idx_st(idx(0x08, {2}, {1, 2, 3})) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "trailing"));
    Bytes r200 = {0, 0, 8, 200};
    r200.resize(4 + 800, 1);
    CHECK(idx_st(r200) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "rank 200"));
    CHECK(idx_st({0, 0, 8, 0}) == NNL_ERR_FORMAT);
    CHECK(idx_st({0, 0, 0x0A, 1, 0, 0, 0, 0}) == NNL_ERR_FORMAT); /* unknown type */
    CHECK(idx_st({0, 1, 8, 1, 0, 0, 0, 0}) == NNL_ERR_FORMAT);    /* bad magic */

    /* npy */
    CHECK(npy_st(npy("<f4", "(-1, 6)", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<f4", "(4294967296, 4294967296)", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<f4", "(4611686018427387904, 4)", {})) == NNL_ERR_FORMAT); /* bytes wrap to 0 */
    CHECK(npy_st(npy("<f4", "(99999999999999999999,)", d6)) == NNL_ERR_FORMAT);
    std::string r = "(";
    for (int i = 0; i < 200; i++) r += "1, ";
    CHECK(npy_st(npy("<f4", r + ")", {0, 0, 0, 0})) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "NNL_MAX_RANK"));
    CHECK(npy_st(npy("<f4", "(7,)", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<f4", "(5,)", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<f4", "(1.5,)", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<f4", "6", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy("<c8", "(3,)", d6)) == NNL_ERR_UNSUPPORTED);
    CHECK(npy_st(npy("|O", "(3,)", d6)) == NNL_ERR_UNSUPPORTED);
    CHECK(npy_st(npy_raw("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (6,), }", d6)) ==
          NNL_ERR_UNSUPPORTED);
    CHECK(npy_st(npy_raw("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (6,), }", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy_raw("{'descr': '<f4', 'shape': (6,), }", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy_raw("{'descr': '<f4, 'fortran_order': False, 'shape': (6,)}", d6)) == NNL_ERR_FORMAT);
    CHECK(npy_st(npy_raw("['descr', '<f4']", d6)) == NNL_ERR_FORMAT);
    Bytes v9 = npy("<f4", "(6,)", d6);
    v9[6] = 9;
    CHECK(npy_st(v9) == NNL_ERR_UNSUPPORTED);
    Bytes hl = npy("<f4", "(6,)", d6, false, 2);
    set32le(hl, 8, 0xFFFFFFFF); /* header length past the end */
    CHECK(npy_st(hl) == NNL_ERR_FORMAT);
    Bytes hl1 = npy("<f4", "(6,)", d6);
    set16le(hl1, 8, 0xFFFF);
    CHECK(npy_st(hl1) == NNL_ERR_FORMAT);

    /* gzip */
    const Bytes small = idx(0x08, {4}, {1, 2, 3, 4});
    Bytes g = gzip(small);
    set32le(g, g.size() - 4, 0xFFFFFFFF); /* ISIZE beyond what deflate can expand to */
    check_compressed(load_status(IDX, t.write("h.gz", g)), NNL_ERR_FORMAT);
    g = gzip(small);
    g[2] = 7; /* method */
    CHECK(load_status(IDX, t.write("h.gz", g)) == NNL_ERR_FORMAT);
    g = gzip(small, GZ_EXTRA);
    set16le(g, 10, 0xFFFF); /* extra field longer than the file */
    CHECK(load_status(IDX, t.write("h.gz", g)) == NNL_ERR_FORMAT);
    g = {0x1F, 0x8B, 8, GZ_NAME, 0, 0, 0, 0, 0, 3};
    g.resize(40, 'a'); /* unterminated name */
    CHECK(load_status(IDX, t.write("h.gz", g)) == NNL_ERR_FORMAT);
    g = gzip(small);
    g[3] = 0x20; /* reserved flag */
    CHECK(load_status(IDX, t.write("h.gz", g)) == NNL_ERR_FORMAT);

    /* zip: one stored member "a.npy" (local header at 0), patched */
    const Bytes m = npy("<f4", "(6,)", d6);
    const Bytes z0 = zip({{"a.npy", m, false}});
    const size_t eocd = z0.size() - 22, cd = get32le(z0, eocd + 16);
    auto zip_st = [&](const Bytes &b) { return load_status(NPZ, t.write("h.npz", b)); };
    Bytes z = z0;
    set16le(z, eocd + 10, 60000); /* entries */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, eocd + 16, 0x7FFFFFF0); /* directory offset */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, eocd + 12, 0xFFFFFFF0); /* directory size */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, cd + 42, (uint32_t)cd + 100); /* local header offset */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, cd + 20, 0x7FFFFFF0), set32le(z, cd + 24, 0x7FFFFFF0); /* stored sizes */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, cd + 24, 1000); /* stored: sizes differ */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set16le(z, cd + 28, 0xFFFF); /* name length */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set16le(z, cd + 10, 12); /* bzip2 */
    CHECK(zip_st(z) == NNL_ERR_UNSUPPORTED);
    z = z0;
    set16le(z, cd + 8, 1); /* encrypted */
    CHECK(zip_st(z) == NNL_ERR_UNSUPPORTED);
    z = z0;
    set16le(z, eocd + 4, 1); /* multi-disk */
    CHECK(zip_st(z) == NNL_ERR_UNSUPPORTED);
    z = z0;
    set32le(z, cd + 16, 0); /* CRC */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, cd + 24, 0xFFFFFFFF); /* zip64 size announced, no extra field */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);
    z = z0;
    set16le(z, eocd + 10, 0xFFFF); /* zip64 end records announced, absent */
    CHECK(zip_st(z) == NNL_ERR_FORMAT);

    /* deflated member claiming 2 GiB from a few bytes */
    const Bytes zd = zip({{"a.npy", m, true}});
    const size_t cdd = get32le(zd, zd.size() - 22 + 16);
    z = zd;
    set32le(z, cdd + 24, 0x7FFFFFF0);
    check_compressed(zip_st(z), NNL_ERR_FORMAT);
    z = zd;
    set32le(z, cdd + 24, (uint32_t)m.size() - 1); /* one byte less than the stream gives */
    check_compressed(zip_st(z), NNL_ERR_FORMAT);
    z = zd;
    set32le(z, cdd + 24, (uint32_t)m.size() + 1);
    check_compressed(zip_st(z), NNL_ERR_FORMAT);
}

TEST_CASE("normalize: L2 along an axis, zero vectors left alone") {
    float x[6] = {3, 4, 0, 0, 0, 0};
    int64_t s[2] = {2, 3};
    REQUIRE(nnl_normalize(x, 2, s, 1) == NNL_OK);
    const float w1[6] = {0.6f, 0.8f, 0, 0, 0, 0};
    for (int i = 0; i < 6; i++) CHECK(x[i] == doctest::Approx(w1[i]));

    float y[6] = {3, 4, 0, 0, 0, 0};
    REQUIRE(nnl_normalize(y, 2, s, -1) == NNL_OK);
    for (int i = 0; i < 6; i++) CHECK(y[i] == doctest::Approx(w1[i]));

    float z[6] = {3, 4, 0, 4, 0, 0}; /* axis 0: columns (3,4) (4,0) (0,0) */
    REQUIRE(nnl_normalize(z, 2, s, 0) == NNL_OK);
    const float w0[6] = {0.6f, 1, 0, 0.8f, 0, 0};
    for (int i = 0; i < 6; i++) CHECK(z[i] == doctest::Approx(w0[i]));

    /* rank 3, every axis, against a direct computation */
    int64_t s3[3] = {2, 3, 4};
    for (int axis = -3; axis < 3; axis++) {
        CAPTURE(axis);
        float v[24], ref[24];
        for (int i = 0; i < 24; i++) v[i] = ref[i] = (float)((i * 7) % 11) - 5;
        const int ax = axis < 0 ? axis + 3 : axis;
        for (int i = 0; i < 24; i++) {
            int idx3[3] = {i / 12, i / 4 % 3, i % 4};
            double ss = 0;
            for (int k = 0; k < s3[ax]; k++) {
                int j3[3] = {idx3[0], idx3[1], idx3[2]};
                j3[ax] = k;
                double e = (float)(((j3[0] * 12 + j3[1] * 4 + j3[2]) * 7) % 11) - 5;
                ss += e * e;
            }
            if (ss > 0) ref[i] = (float)(ref[i] / std::sqrt(ss));
        }
        REQUIRE(nnl_normalize(v, 3, s3, axis) == NNL_OK);
        for (int i = 0; i < 24; i++) CHECK(v[i] == doctest::Approx(ref[i]).epsilon(1e-6));
    }
    float one[3] = {0, 0, 2};
    int64_t s1[1] = {3};
    REQUIRE(nnl_normalize(one, 1, s1, 0) == NNL_OK);
    CHECK(one[2] == 1.0f);

    CHECK(nnl_normalize(x, 2, s, 2) == NNL_ERR_ARGUMENT);
    CHECK(!err().empty());
    CHECK(nnl_normalize(x, 2, s, -3) == NNL_ERR_ARGUMENT);
    CHECK(nnl_normalize(x, 2, nullptr, 0) == NNL_ERR_ARGUMENT);
    CHECK(nnl_normalize(nullptr, 2, s, 0) == NNL_ERR_ARGUMENT);
    CHECK(nnl_normalize(x, 0, s, 0) == NNL_ERR_ARGUMENT);
}

TEST_CASE("scale") {
    float x[3] = {0, 255, 127.5f};
    REQUIRE(nnl_scale(x, 3, 1.0f / 255, 0) == NNL_OK);
    CHECK(x[0] == 0.0f);
    CHECK(x[1] == doctest::Approx(1.0));
    CHECK(x[2] == doctest::Approx(0.5));
    REQUIRE(nnl_scale(x, 3, 2, 1) == NNL_OK);
    CHECK(x[1] == doctest::Approx(3.0));
    CHECK(nnl_scale(nullptr, 0, 2, 1) == NNL_OK);
    CHECK(nnl_scale(nullptr, 3, 2, 1) == NNL_ERR_ARGUMENT);
    CHECK(nnl_scale(x, -1, 2, 1) == NNL_ERR_ARGUMENT);
}

TEST_CASE("to_categorical: one-hot rows from labels of any dtype") {
    float out[9];
    const int64_t l64[3] = {0, 2, 1};
    REQUIRE(nnl_to_categorical(l64, NNL_INT64, 3, 3, out) == NNL_OK);
    const float want[9] = {1, 0, 0, 0, 0, 1, 0, 1, 0};
    for (int i = 0; i < 9; i++) CHECK(out[i] == want[i]);
    const int32_t l32[3] = {0, 2, 1};
    const uint8_t l8[3] = {0, 2, 1};
    const float lf[3] = {0, 2, 1};
    const double ld[3] = {0, 2, 1};
    const uint16_t lh[3] = {0x0000, 0x4000, 0x3C00}; /* float16 0, 2, 1 */
    struct {
        const void *p;
        int dtype;
    } same[] = {{l32, NNL_INT32}, {l8, NNL_UINT8}, {lf, NNL_FLOAT32}, {ld, NNL_FLOAT64}, {lh, NNL_FLOAT16}};
    for (auto &c : same) {
        CAPTURE(c.dtype);
        std::fill(out, out + 9, -1.0f);
        REQUIRE(nnl_to_categorical(c.p, c.dtype, 3, 3, out) == NNL_OK);
        for (int i = 0; i < 9; i++) CHECK(out[i] == want[i]);
    }
    std::fill(out, out + 9, -1.0f);
    const int64_t bad[3] = {0, 3, 1};
    CHECK(nnl_to_categorical(bad, NNL_INT64, 3, 3, out) == NNL_ERR_ARGUMENT);
    CHECK(contains(err(), "label 3"));
    CHECK(out[0] == -1.0f); /* nothing written */
    const int8_t neg[1] = {-1};
    CHECK(nnl_to_categorical(neg, NNL_INT8, 1, 3, out) == NNL_ERR_ARGUMENT);
    const float frac[1] = {1.5f};
    CHECK(nnl_to_categorical(frac, NNL_FLOAT32, 1, 3, out) == NNL_ERR_ARGUMENT);
    CHECK(nnl_to_categorical(l64, 99, 3, 3, out) == NNL_ERR_ARGUMENT);
    CHECK(nnl_to_categorical(l64, NNL_INT64, 3, 0, out) == NNL_ERR_ARGUMENT);
    CHECK(nnl_to_categorical(nullptr, NNL_INT64, 3, 3, out) == NNL_ERR_ARGUMENT);
    CHECK(nnl_to_categorical(l64, NNL_INT64, -1, 3, out) == NNL_ERR_ARGUMENT);
}

TEST_CASE("shuffle: seeded Fisher-Yates, x and y rows stay paired") {
    const int n = 100;
    auto fresh = [&](std::vector<float> &x, std::vector<int64_t> &y, std::vector<uint8_t> &y2) {
        x.resize(n * 3), y.resize(n), y2.resize(n * 2);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < 3; j++) x[i * 3 + j] = (float)i + 0.25f * (float)j;
            y[i] = 7 * i;
            y2[i * 2] = (uint8_t)i, y2[i * 2 + 1] = (uint8_t)(255 - i);
        }
    };
    std::vector<float> x, x2, x3;
    std::vector<int64_t> y, ya, yb;
    std::vector<uint8_t> u, ua, ub;
    fresh(x, y, u);
    REQUIRE(nnl_shuffle(x.data(), 3, y.data(), NNL_INT64, 1, n, 42) == NNL_OK);
    std::vector<int> seen(n, 0);
    int moved = 0;
    for (int r = 0; r < n; r++) {
        int i = (int)x[r * 3];
        REQUIRE((i >= 0 && i < n));
        seen[i]++;
        moved += i != r;
        CHECK(x[r * 3 + 2] == (float)i + 0.5f);
        CHECK(y[r] == 7 * i);
    }
    for (int i = 0; i < n; i++) CHECK(seen[i] == 1);
    CHECK(moved > n / 2);

    fresh(x2, ya, ua); /* same seed: same permutation, with or without y, any y dtype */
    REQUIRE(nnl_shuffle(x2.data(), 3, ua.data(), NNL_UINT8, 2, n, 42) == NNL_OK);
    CHECK(x2 == x);
    for (int r = 0; r < n; r++) CHECK((ua[r * 2] == (uint8_t)x[r * 3] && ua[r * 2 + 1] == (uint8_t)(255 - ua[r * 2])));
    fresh(x3, yb, ub);
    REQUIRE(nnl_shuffle(x3.data(), 3, nullptr, 0, 0, n, 42) == NNL_OK);
    CHECK(x3 == x);
    fresh(x3, yb, ub);
    REQUIRE(nnl_shuffle(x3.data(), 3, nullptr, 0, 0, n, 43) == NNL_OK);
    CHECK(x3 != x);

    /* the permutation is part of the contract: the same on every platform */
    float p[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    REQUIRE(nnl_shuffle(p, 1, nullptr, 0, 0, 10, 1234) == NNL_OK);
    const float want[10] = {5, 0, 9, 3, 4, 2, 6, 8, 1, 7};
    for (int i = 0; i < 10; i++) CHECK(p[i] == want[i]);

    float one[2] = {1, 2};
    CHECK(nnl_shuffle(one, 2, nullptr, 0, 0, 1, 5) == NNL_OK);
    CHECK(nnl_shuffle(one, 2, nullptr, 0, 0, 0, 5) == NNL_OK);
    CHECK((one[0] == 1 && one[1] == 2));
    CHECK(nnl_shuffle(one, 2, nullptr, 0, 0, -1, 5) == NNL_ERR_ARGUMENT);
    CHECK(nnl_shuffle(nullptr, 2, nullptr, 0, 0, 1, 5) == NNL_ERR_ARGUMENT);
    CHECK(nnl_shuffle(one, 0, nullptr, 0, 0, 1, 5) == NNL_ERR_ARGUMENT);
    CHECK(nnl_shuffle(one, 1, one, 99, 1, 2, 5) == NNL_ERR_ARGUMENT);
    CHECK(nnl_shuffle(one, 1, one, NNL_FLOAT32, 0, 2, 5) == NNL_ERR_ARGUMENT);
    CHECK(!err().empty());
}

TEST_CASE("confusion matrix: counts, errors, printed table") {
    const int64_t yt[7] = {0, 1, 2, 2, 1, 0, 2};
    const int32_t yp[7] = {0, 2, 2, 2, 1, 0, 1};
    int64_t cm[9];
    REQUIRE(nnl_confusion_matrix(yt, NNL_INT64, yp, 7, 3, cm) == NNL_OK);
    const int64_t want[9] = {2, 0, 0, 0, 1, 1, 0, 1, 2};
    for (int i = 0; i < 9; i++) CHECK(cm[i] == want[i]);
    const uint8_t yt8[7] = {0, 1, 2, 2, 1, 0, 2};
    std::fill(cm, cm + 9, 99);
    REQUIRE(nnl_confusion_matrix(yt8, NNL_UINT8, yp, 7, 3, cm) == NNL_OK);
    for (int i = 0; i < 9; i++) CHECK(cm[i] == want[i]);
    REQUIRE(nnl_confusion_matrix(yt, NNL_INT64, yp, 0, 3, cm) == NNL_OK);
    for (int i = 0; i < 9; i++) CHECK(cm[i] == 0);

    const int32_t bad_p[2] = {0, 3};
    std::fill(cm, cm + 9, 99);
    CHECK(nnl_confusion_matrix(yt, NNL_INT64, bad_p, 2, 3, cm) == NNL_ERR_ARGUMENT);
    CHECK(contains(err(), "sample 1"));
    CHECK(cm[0] == 99);
    const int64_t bad_t[1] = {-1};
    CHECK(nnl_confusion_matrix(bad_t, NNL_INT64, yp, 1, 3, cm) == NNL_ERR_ARGUMENT);
    const float frac[1] = {0.5f};
    CHECK(nnl_confusion_matrix(frac, NNL_FLOAT32, yp, 1, 3, cm) == NNL_ERR_ARGUMENT);
    CHECK(nnl_confusion_matrix(yt, NNL_INT64, yp, 7, 0, cm) == NNL_ERR_ARGUMENT);
    CHECK(nnl_confusion_matrix(yt, NNL_INT64, nullptr, 7, 3, cm) == NNL_ERR_ARGUMENT);
    CHECK(nnl_confusion_matrix(yt, NNL_INT64, yp, 7, 3, nullptr) == NNL_ERR_ARGUMENT);

    auto printed = [&](const int64_t *m, int k, const char *const *labels, int normalize) {
        FILE *f = tmpfile();
        REQUIRE(f);
        REQUIRE(nnl_print_confusion_matrix(f, m, k, labels, normalize) == NNL_OK);
        rewind(f);
        std::vector<std::string> lines(1);
        int c;
        while ((c = fgetc(f)) != EOF) {
            if (c == '\n') lines.emplace_back();
            else lines.back() += (char)c;
        }
        fclose(f);
        CHECK(lines.back().empty()); /* ends with a newline */
        lines.pop_back();
        return lines;
    };
    REQUIRE(nnl_confusion_matrix(yt, NNL_INT64, yp, 7, 3, cm) == NNL_OK);
    auto t = printed(cm, 3, nullptr, 0);
    REQUIRE(t.size() == 4);
    CHECK(t[0].rfind("true\\pred", 0) == 0);
    for (auto &l : t) CHECK(l.size() == t[0].size()); /* aligned columns */
    CHECK(t[0] == "true\\pred  0  1  2");
    CHECK(t[1] == "0          2  0  0");
    CHECK(t[3] == "2          0  1  2");

    const char *names[3] = {"cat", "dog", "hippopotamus"};
    t = printed(cm, 3, names, 1);
    REQUIRE(t.size() == 4);
    for (auto &l : t) CHECK(l.size() == t[0].size());
    CHECK(contains(t[0], "hippopotamus"));
    CHECK(t[1].rfind("cat ", 0) == 0);
    CHECK(contains(t[1], "1.00"));
    CHECK(contains(t[2], "0.50"));
    CHECK(contains(t[3], "0.67"));
    const int64_t zero[4] = {0, 0, 0, 0};
    t = printed(zero, 2, nullptr, 1);
    CHECK(contains(t[1], "0.00"));

    CHECK(nnl_print_confusion_matrix(nullptr, nullptr, 3, nullptr, 0) == NNL_ERR_ARGUMENT);
    CHECK(nnl_print_confusion_matrix(nullptr, cm, 0, nullptr, 0) == NNL_ERR_ARGUMENT);
}

TEST_CASE("real MNIST files (set NNL_MNIST_DIR to run)") {
    const char *dir = getenv("NNL_MNIST_DIR");
    if (!dir || !*dir) {
        MESSAGE("NNL_MNIST_DIR not set: skipped");
        return;
    }
    nnl_array *a[4] = {nullptr, nullptr, nullptr, nullptr};
    int st = nnl_load_mnist(dir, &a[0], &a[1], &a[2], &a[3]);
    INFO(err());
    if (st == NNL_ERR_UNSUPPORTED) return; /* .gz files and a library without stb */
    REQUIRE(st == NNL_OK);
    CHECK(std::vector<int64_t>(nnl_array_shape(a[0]), nnl_array_shape(a[0]) + 3) == std::vector<int64_t>{60000, 28, 28});
    CHECK(std::vector<int64_t>(nnl_array_shape(a[2]), nnl_array_shape(a[2]) + 3) == std::vector<int64_t>{10000, 28, 28});
    CHECK(nnl_array_dim(a[1], 0) == 60000);
    CHECK(nnl_array_dim(a[3], 0) == 10000);
    for (int part = 1; part < 4; part += 2) {
        std::vector<int64_t> counts(10, 0);
        int64_t outside = 0;
        const int64_t *l = (const int64_t *)nnl_array_data(a[part]);
        for (int64_t i = 0; i < nnl_array_size(a[part]); i++) {
            if (l[i] >= 0 && l[i] < 10) counts[(size_t)l[i]]++;
            else outside++;
        }
        CHECK(outside == 0);
        for (int64_t c : counts) CHECK(c > nnl_array_size(a[part]) / 20); /* every class well present */
    }
    const float *px = (const float *)nnl_array_data(a[0]);
    float lo = 255, hi = 0;
    for (int64_t i = 0; i < nnl_array_size(a[0]); i++) lo = std::min(lo, px[i]), hi = std::max(hi, px[i]);
    CHECK(lo == 0);
    CHECK(hi == 255);
    const std::string npz = std::string(dir) + "/mnist.npz";
    nnl_array *b[4] = {nullptr, nullptr, nullptr, nullptr};
    if (FILE *f = fopen(npz.c_str(), "rb")) {
        fclose(f);
        REQUIRE(nnl_load_mnist(npz.c_str(), &b[0], &b[1], &b[2], &b[3]) == NNL_OK);
        for (int i = 0; i < 4; i++) {
            CAPTURE(i);
            REQUIRE(nnl_array_size(b[i]) == nnl_array_size(a[i]));
            CHECK(memcmp(nnl_array_data(a[i]), nnl_array_data(b[i]), (size_t)nnl_array_size(a[i]) * 4 *
                                                                        (nnl_array_dtype(a[i]) == NNL_INT64 ? 2 : 1)) == 0);
        }
    }
    for (int i = 0; i < 4; i++) nnl_array_free(a[i]), nnl_array_free(b[i]);
}

/* ---- Hostile files, continued (issue 4, safety) ------------------------------- */

TEST_CASE("hostile: a 12-byte idx claiming 2^31 x 2^31 items, plain and gzip") {
    TempDir t;
    for (uint8_t type : {0x08, 0x0E}) {
        CAPTURE((int)type);
        const Bytes h = idx(type, {0x80000000u, 0x80000000u}, {});
        CHECK(load_status(IDX, t.write("h.idx", h)) == NNL_ERR_FORMAT);
        CHECK(contains(err(), "truncated"));
        CHECK(contains(err(), "(2147483648, 2147483648)"));
        Bytes some = idx(type, {0x80000000u, 0x80000000u}, Bytes(64, 1));
        CHECK(load_status(IDX, t.write("h.idx", some)) == NNL_ERR_FORMAT);
        check_compressed(load_status(IDX, t.write("h.gz", gzip(h))), NNL_ERR_FORMAT);
    }
}

TEST_CASE("hostile: zip bombs within limits load; lies about their sizes do not") {
    TempDir t;
    /* 8 MiB of zeros: a gzip of 8 KiB (deflate's best ratio is ~1032:1) to
       80 KiB (stb_image_write's compressor) */
    const size_t big = (size_t)8 << 20;
    Bytes payload(big, 0);
    payload[big - 1] = 7;
    const Bytes g = gzip(idx(0x08, {2048, 4096}, payload));
    CAPTURE(g.size());
    Arr a;
    int st = load(IDX, t.write("bomb.gz", g), a);
    check_compressed(st);
    if (!have_stb()) return;
    REQUIRE(st == NNL_OK);
    CHECK(a.shape() == std::vector<int64_t>{2048, 4096});
    CHECK(((int64_t *)nnl_array_data(a.a))[big - 1] == 7);
    /* cut anywhere: truncated deflate data or a trailer that is not one */
    for (size_t cut : {g.size() - 1, g.size() - 5, g.size() - 9, g.size() - 20, g.size() / 2, (size_t)30, (size_t)19}) {
        CAPTURE(cut);
        CHECK(load_status(IDX, t.write("cut.gz", Bytes(g.begin(), g.begin() + (long)cut))) == NNL_ERR_FORMAT);
    }
    Bytes lie = g; /* ISIZE: 2 GiB from at most 80 KiB */
    set32le(lie, lie.size() - 4, 0x7FFFFFFF);
    CHECK(load_status(IDX, t.write("lie.gz", lie)) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "cannot come from"));
    lie = g; /* ISIZE: within deflate's ratio, but not what the stream gives */
    set32le(lie, lie.size() - 4, (uint32_t)(big + 16 + 4096));
    CHECK(load_status(IDX, t.write("lie.gz", lie)) == NNL_ERR_FORMAT);

    /* the same in an npz member */
    const Bytes m = npy("|u1", "(8388608,)", payload);
    const Bytes z = zip({{"x.npy", m, true}});
    CAPTURE(z.size());
    REQUIRE(load(NPZ, t.write("bomb.npz", z), a, 0, "x") == NNL_OK);
    CHECK(nnl_array_size(a.a) == (int64_t)big);
    const size_t cd = get32le(z, z.size() - 22 + 16);
    Bytes zl = z;
    set32le(zl, cd + 24, 0x7FFFFFFF); /* uncompressed size: 2 GiB */
    CHECK(load_status(NPZ, t.write("lie.npz", zl), 0, "x") == NNL_ERR_FORMAT);
    CHECK(contains(err(), "cannot come from"));
    zl = z;
    set32le(zl, cd + 20, (uint32_t)z.size()); /* compressed size past the end */
    CHECK(load_status(NPZ, t.write("lie.npz", zl), 0, "x") == NNL_ERR_FORMAT);
    zl = z;
    set32le(zl, cd + 16, get32le(z, cd + 16) ^ 0x100); /* CRC of a deflated member */
    CHECK(load_status(NPZ, t.write("lie.npz", zl), 0, "x") == NNL_ERR_FORMAT);
    CHECK(contains(err(), "CRC"));
}

TEST_CASE("hostile: zip64 end records and extra fields") {
    TempDir t;
    const Bytes m = npy("<f4", "(6,)", raw(std::vector<float>{1, 2, 3, 4, 5, 6}));
    const Bytes z0 = zip({{"a.npy", m, false}}, true);
    REQUIRE(load_status(NPZ, t.write("ok.npz", z0)) == NNL_OK);
    const size_t loc = z0.size() - 22 - 20, rec = (size_t)get32le(z0, loc + 8);
    const size_t cd = (size_t)get32le(z0, rec + 48);
    auto st = [&](const Bytes &b) { return load_status(NPZ, t.write("h.npz", b)); };
    Bytes z = z0;
    set32le(z, loc + 8, 0x7FFFFFF0); /* locator points past the file */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, loc + 8, (uint32_t)(rec + 1)); /* ... or at something else */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, loc, 0); /* locator signature */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, rec + 32 + 4, 0x40000000); /* 2^62 entries */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, rec + 40 + 4, 1); /* directory size over 4 GiB */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, rec + 48 + 4, 0x80000000); /* directory offset 2^63 */
    CHECK(st(z) == NNL_ERR_FORMAT);
    const size_t x = cd + 46 + 5; /* the entry's zip64 extra field */
    z = z0;
    set16le(z, x + 2, 8); /* holds one value where three are announced */
    CHECK(st(z) == NNL_ERR_FORMAT);
    CHECK(contains(err(), "zip64"));
    z = z0;
    set16le(z, x, 0x5455); /* another extra field id: no zip64 field */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, x + 4 + 16, 0x10), set32le(z, x + 4 + 20, 0x1); /* local header offset 2^32 + 16 */
    CHECK(st(z) == NNL_ERR_FORMAT);
    z = z0;
    set32le(z, x + 4 + 4, 0x80000000); /* uncompressed size 2^63 (stored: sizes differ) */
    CHECK(st(z) == NNL_ERR_FORMAT);
}

TEST_CASE("hostile: npy header keys given twice") {
    TempDir t;
    const Bytes d6 = raw(std::vector<float>{1, 2, 3, 4, 5, 6});
    for (const char *h : {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (3,), }",
                          "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
                          "{'descr': '<f4', 'fortran_order': False, 'fortran_order': True, 'shape': (6,), }"}) {
        CAPTURE(h);
        CHECK(load_status(NPY, t.write("h.npy", npy_raw(h, d6))) == NNL_ERR_FORMAT);
        CHECK(contains(err(), "twice"));
    }
}

TEST_CASE("hostile: nnl_load_mnist on an npz cut at every length") {
    TempDir t;
    const Bytes z = zip({{"x_train.npy", npy("|u1", "(2, 2, 2)", Bytes(8, 3)), false},
                         {"y_train.npy", npy("<i8", "(2,)", raw(std::vector<int64_t>{1, 2})), true},
                         {"x_test.npy", npy("|u1", "(1, 2, 2)", Bytes(4, 5)), false},
                         {"y_test.npy", npy("|u1", "(1,)", {4}), false}});
    nnl_array *a[4] = {nullptr, nullptr, nullptr, nullptr};
    auto load_all = [&](const std::string &p) { return nnl_load_mnist(p.c_str(), &a[0], &a[1], &a[2], &a[3]); };
    int full = load_all(t.write("m.npz", z));
    check_compressed(full);
    for (nnl_array *&p : a) nnl_array_free(p), p = nullptr;
    for (size_t len = 0; len < z.size(); len++) {
        CAPTURE(len);
        int s = load_all(t.write("cut.npz", Bytes(z.begin(), z.begin() + (long)len)));
        CHECK(s == NNL_ERR_FORMAT);
        for (nnl_array *p : a) CHECK(p == nullptr);
    }
}
