/* nnl_init: the header/library version handshake; nnl_has_feature and
   nnl_build_info. Linked against the library; uses nnlite.h only. */
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include <unistd.h>

#include "../nnlite.h"

TEST_CASE("nnl_init accepts this header and refuses another ABI major version") {
    CHECK(NNL_INIT() == NNL_OK);
    CHECK(nnl_init(NNL_VERSION_NUMBER) == NNL_OK);
    /* an older patch or minor of the same major is served */
    CHECK(nnl_init(NNL_VERSION_MAJOR * 10000) == NNL_OK);

    /* next major: refused, naming both versions */
    int next = (NNL_VERSION_MAJOR + 1) * 10000;
    CHECK(nnl_init(next) == NNL_ERR_UNSUPPORTED);
    std::string msg = nnl_last_error();
    CHECK(msg.find("library " NNL_VERSION_STRING) != std::string::npos);
    CHECK(msg.find(std::to_string(NNL_VERSION_MAJOR + 1) + ".0.0") != std::string::npos);
    CHECK(msg.find("major") != std::string::npos);

    /* a header newer (minor) than the library: refused too */
    CHECK(nnl_init(NNL_VERSION_NUMBER + 100) == NNL_ERR_UNSUPPORTED);
    CHECK(std::string(nnl_last_error()).find("older") != std::string::npos);

    /* not a version number */
    CHECK(nnl_init(-1) == NNL_ERR_ARGUMENT);

    /* the library works after a refused handshake: the caller decides */
    CHECK(nnl_init(NNL_VERSION_NUMBER) == NNL_OK);
}

TEST_CASE("nnl_has_feature and nnl_build_info describe this build") {
    const char *names[] = {"stb", "threads", "cuda", "mpi", "hdf5", "avx2", "avx512f", "bf16", "images"};
    std::string info = nnl_build_info();
    CHECK(info.find("nnlite " NNL_VERSION_STRING ";") == 0);
    CHECK(nnl_build_info() == nnl_build_info()); /* one string for the process */
    for (const char *n : names) {
        int on = nnl_has_feature(n);
        CHECK_MESSAGE((on == 0 || on == 1), n);
        CHECK_MESSAGE(info.find(std::string("; ") + n + (on ? ": yes" : ": no")) != std::string::npos, n << " in " << info);
    }
#ifndef NNL_NO_THREADS
    CHECK(nnl_has_feature("threads") == 1); /* this test is built as the library is */
#endif
    CHECK(nnl_has_feature("mpi") == 0);
#ifdef NNL_HDF5 /* make and CMake compile the tests as the library */
    CHECK(nnl_has_feature("hdf5") == 1);
#else
    CHECK(nnl_has_feature("hdf5") == 0);
#endif
    CHECK(nnl_has_feature("openmp") == -1); /* OpenMP is not used since 0.2 */
    /* stb: exactly when a .gz file can be read (an idx1 file of labels 1, 2, 3, gzip'ed) */
    const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63,
                                0x60, 0xe0, 0x60, 0x64, 0x60, 0x60, 0x60, 0x66, 0x64, 0x62, 0x06,
                                0x00, 0x8b, 0xe5, 0xbd, 0xa4, 0x0b, 0x00, 0x00, 0x00};
    char path[] = "/tmp/nnlite_feature_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, gz, sizeof gz) == (ssize_t)sizeof gz);
    close(fd);
    nnl_array *a = nullptr;
    int st = nnl_load_idx(path, 0, &a);
    CHECK(st == (nnl_has_feature("stb") ? NNL_OK : NNL_ERR_UNSUPPORTED));
    if (a) CHECK(nnl_array_size(a) == 3);
    nnl_array_free(a);
    unlink(path);
    /* images (since 0.7): exactly when a PNG can be written and read back */
    std::string png = std::string(path) + ".png";
    const float px[1] = {0.5f};
    st = nnl_save_image(png.c_str(), px, 1, 1, 1, 255.0f);
    CHECK(st == (nnl_has_feature("images") ? NNL_OK : NNL_ERR_UNSUPPORTED));
    if (st == NNL_OK) {
        CHECK(nnl_load_image(png.c_str(), 0, 0, 0, 1.0f, &a) == NNL_OK);
        if (a) CHECK(((const float *)nnl_array_data(a))[0] == 128.0f);
        nnl_array_free(a);
        unlink(png.c_str());
    } else {
        CHECK(std::string(nnl_last_error()).find("libstb-dev") != std::string::npos);
    }
    /* unknown names and NULL: -1 with a message naming the known ones */
    CHECK(nnl_has_feature("opnemp") == -1);
    CHECK(std::string(nnl_last_error()).find("'opnemp'") != std::string::npos);
    CHECK(std::string(nnl_last_error()).find("known: stb, threads") != std::string::npos);
    CHECK(nnl_has_feature(nullptr) == -1);
}
