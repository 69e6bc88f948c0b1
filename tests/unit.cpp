/* Unit tests of nnlite's internals: this file compiles nnlite.cpp into itself
   so the tests can reach the kernels, layers, losses and optimizers directly.
   The C ABI is tested separately (api_*.cpp), linked against the library. */
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "../nnlite.cpp"

#include "unit_kernels.hpp"
#include "unit_layers.hpp"
#include "unit_conv.hpp"
#include "unit_optimizers.hpp"
#include "unit_simd.hpp"
#include "unit_fuzz.hpp"
#include "unit_reference.hpp"
#include "unit_rnn.hpp"
#include "unit_bidir.hpp"
#include "unit_defects.hpp"
#include "unit_pictures.hpp"
#include "unit_compat.hpp"
#include "unit_seams.hpp"
#include "unit_threads.hpp"
#include "unit_predict_threads.hpp"
#include "unit_seq.hpp"
#include "unit_mask.hpp"
#include "unit_bf16.hpp"
#include "unit_images.hpp"
#include "unit_keras.hpp"
