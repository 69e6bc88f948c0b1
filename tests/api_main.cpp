/* The doctest main of the C ABI tests (api_*.cpp). */
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
