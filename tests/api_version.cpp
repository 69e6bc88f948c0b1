/* nnl_init: the header/library version handshake. Linked against the
   library; uses nnlite.h only. */
#include <doctest/doctest.h>

#include <string>

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
