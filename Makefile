# nnlite - GNU make build.
#
#   make              build/libnnlite.a, build/libnnlite.so and every examples/*.c
#   make test         install missing test packages (Debian), build and run all tests
#   make demo         K-MLP on Fashion-MNIST (scripts/demo.sh); pictures into $(BUILD)/
#   make demo-i16     images and Keras files (scripts/demo_i16.sh)
#   make deps         only install what test and demo need (scripts/deps.sh all)
#   make clean
#
# Options: THREADS=0 (single-threaded: no thread pool; OPENMP=0, the old name,
# does the same), SANITIZE=1 (ASan + UBSan, builds in build-san/),
# CUDA=1 (the GPU backend: nvcc compiles nnlite_cuda.cu, cudart is linked
# statically; also builds $(BUILD)/nnlite_gpu, the GPU test suite; NVCC=path,
# CUDA_ARCH=gencode flags), MPI=1 (data-parallel training: nnlite.cpp with
# -DNNL_MPI and the MPI found by pkg-config mpi-c or mpicc --showme; builds in
# build-mpi/ unless BUILD says otherwise), HDF5=auto|1|0 (Keras .h5 and .keras
# model files: -DNNL_HDF5 and the HDF5 found by pkg-config hdf5 / hdf5-serial
# or h5cc; auto, the default, uses it when found, 1 requires it, 0 leaves it
# out), BUILD=dir, and the usual CC, CXX, CFLAGS, CXXFLAGS, LDFLAGS.

SANITIZE ?= 0
MPI ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-san
else ifeq ($(MPI),1)
BUILD ?= build-mpi
else
BUILD ?= build
endif

CC  ?= cc
CXX ?= g++
CFLAGS   ?= -O2 -Wall -Wextra
CXXFLAGS ?= -O2 -Wall -Wextra

# Threads: nnlite's own pool over std::thread (-pthread); THREADS=0 builds
# without it (NNL_NO_THREADS). OPENMP=0 is the option's name before 0.2.
THREADS ?= $(if $(filter 0,$(OPENMP)),0,1)
export THREADS
THRFLAGS := $(if $(filter 0,$(THREADS)),-DNNL_NO_THREADS,-pthread)

ifeq ($(SANITIZE),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g
endif

# Flags nnlite needs whatever the user's CFLAGS/CXXFLAGS say.
NNL_CXXFLAGS := -std=c++17 -fPIC -I. $(THRFLAGS) $(CXXFLAGS) $(SANFLAGS) -MMD -MP
NNL_CFLAGS   := -std=c99 -I. -Iexamples $(CFLAGS) $(SANFLAGS) -MMD -MP
NNL_LDFLAGS  := $(filter -pthread,$(THRFLAGS)) $(SANFLAGS) $(LDFLAGS)
LIBS         := -lm

# ---- CUDA backend (CUDA=1) ----
CUDA ?= 0
NVCC ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc),nvcc)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# sm_90 code (H100/H200), PTX for newer GPUs, and PTX for Ampere (compute_80,
# TF32 tensor cores) and Turing (compute_75, CUDA 13's oldest; FP32 GEMM only)
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
             -gencode arch=compute_80,code=compute_80 -gencode arch=compute_75,code=compute_75
NVCCFLAGS ?= -O2
ifeq ($(CUDA),1)
NNL_CXXFLAGS += -DNNL_CUDA
CUDA_OBJ := $(BUILD)/obj/nnlite_cuda.o
LIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lpthread -lrt
endif

# ---- MPI (MPI=1) ----
ifeq ($(MPI),1)
MPI_CFLAGS ?= $(shell pkg-config --cflags mpi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   ?= $(shell pkg-config --libs mpi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
ifeq ($(strip $(MPI_LIBS)),)
$(error MPI=1: no MPI found (pkg-config mpi-c, mpicc); Debian: apt-get install libopenmpi-dev openmpi-bin)
endif
NNL_CXXFLAGS += -DNNL_MPI $(MPI_CFLAGS)
LIBS += $(MPI_LIBS)
endif

# ---- HDF5 (HDF5=auto|1|0): Keras .h5 and .keras files, section 8 ----
# Debian: libhdf5-dev. Without it nnl_load_model/nnl_save_model answer
# NNL_ERR_UNSUPPORTED for those files, naming the package.
HDF5 ?= auto
ifneq ($(HDF5),0)
HDF5_PC := $(shell pkg-config --exists hdf5 2>/dev/null && echo hdf5 || { pkg-config --exists hdf5-serial 2>/dev/null && echo hdf5-serial; })
ifneq ($(HDF5_PC),)
HDF5_CFLAGS ?= $(shell pkg-config --cflags $(HDF5_PC))
HDF5_LIBS   ?= $(shell pkg-config --libs $(HDF5_PC))
else
HDF5_CFLAGS ?= $(filter -I%,$(shell h5cc -show 2>/dev/null))
HDF5_LIBS   ?= $(if $(shell command -v h5cc 2>/dev/null),$(filter -L%,$(shell h5cc -show 2>/dev/null)) -lhdf5)
endif
ifeq ($(strip $(HDF5_LIBS)),)
ifeq ($(HDF5),1)
$(error HDF5=1: no HDF5 found (pkg-config hdf5 / hdf5-serial, h5cc); Debian: apt-get install libhdf5-dev)
endif
else
NNL_CXXFLAGS += -DNNL_HDF5 $(HDF5_CFLAGS)
LIBS += $(HDF5_LIBS)
endif
endif

VERSION := $(shell sed -n 's/.*NNL_VERSION_STRING "\([0-9.]*\)".*/\1/p' nnlite.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))

LIB_A    := $(BUILD)/libnnlite.a
LIB_SO   := $(BUILD)/libnnlite.so
LIB_SOV  := $(LIB_SO).$(VERSION)
LIB_OBJ  := $(BUILD)/obj/nnlite.o

EXAMPLES := $(patsubst examples/%.c,$(BUILD)/%,$(wildcard examples/*.c))
API_OBJS := $(patsubst tests/%.cpp,$(BUILD)/obj/tests/%.o,$(wildcard tests/api_*.cpp))
UNIT     := $(BUILD)/nnlite_unit
API      := $(BUILD)/nnlite_api
C99      := $(BUILD)/c99_consumer
TESTS    := $(UNIT) $(API) $(C99) $(BUILD)/xor $(LIB_SO)

# Everything is rebuilt when the flags change (THREADS=0 after THREADS=1, ...)
# or when stb appears: nnlite.cpp compiles without .gz support when it is absent.
STAMP := $(BUILD)/.flags
STAMP_TEXT := $(CC) $(CXX) | $(NNL_CFLAGS) | $(NNL_CXXFLAGS) | $(NNL_LDFLAGS) | $(wildcard /usr/include/stb/stb_image.h stb_image.h)$(if $(CUDA_OBJ), | $(NVCC) $(NVCCFLAGS) $(CUDA_ARCH))
ifeq ($(filter clean,$(MAKECMDGOALS)),)
$(shell mkdir -p $(BUILD) && { printf '%s\n' '$(STAMP_TEXT)' | cmp -s - $(STAMP) || printf '%s\n' '$(STAMP_TEXT)' > $(STAMP); })
endif
$(STAMP):
	@mkdir -p $(@D)
	@printf '%s\n' '$(STAMP_TEXT)' > $@

.PHONY: all lib examples tests test demo deps clean gpu-tests print-libs device-prep
.DEFAULT_GOAL := all
# The libraries a program linking $(BUILD)/libnnlite.a needs besides it (HDF5,
# MPI, CUDA when this build has them), for scripts that link by hand
# (bench/run.sh): cc app.c build/libnnlite.a $$(make -s print-libs) -lstdc++
print-libs:
	@echo $(LIBS) -pthread
.SECONDARY:
.DELETE_ON_ERROR:

all: lib examples
lib: $(LIB_A) $(LIB_SO)
examples: $(EXAMPLES)
tests: $(TESTS)

# ---- library: one -fPIC object for both the archive and the shared object ----
$(LIB_OBJ): nnlite.cpp nnlite.h $(STAMP)
	@mkdir -p $(@D)
	$(CXX) $(NNL_CXXFLAGS) -fvisibility=hidden -fvisibility-inlines-hidden -c $< -o $@

$(LIB_A): $(LIB_OBJ) $(CUDA_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# the CUDA backend: one nvcc compile, position-independent, hidden symbols
$(BUILD)/obj/nnlite_cuda.o: nnlite_cuda.cu nnlite_cuda.h $(STAMP)
	@mkdir -p $(@D)
	$(NVCC) -std=c++17 $(NVCCFLAGS) $(CUDA_ARCH) -Xcompiler -fPIC,-fvisibility=hidden -c $< -o $@

# libnnlite.so -> libnnlite.so.0 -> libnnlite.so.MAJOR.MINOR.PATCH (SONAME libnnlite.so.0),
# exporting nnl_* only.
$(LIB_SOV): $(LIB_OBJ) $(CUDA_OBJ) scripts/libnnlite.map
	$(CXX) -shared -Wl,-soname,libnnlite.so.$(SOMAJOR) -Wl,--no-undefined \
	    -Wl,--version-script=scripts/libnnlite.map $(NNL_LDFLAGS) $(LIB_OBJ) $(CUDA_OBJ) -o $@ $(LIBS)

$(LIB_SO): $(LIB_SOV)
	ln -sf $(notdir $(LIB_SOV)) $(LIB_SO).$(SOMAJOR)
	ln -sf libnnlite.so.$(SOMAJOR) $@

# ---- examples: examples/NAME.c (C99) -> build/NAME, linked with the archive ----
$(BUILD)/obj/examples/%.o: examples/%.c nnlite.h $(STAMP)
	@mkdir -p $(@D)
	$(CC) $(NNL_CFLAGS) -c $< -o $@

$(EXAMPLES): $(BUILD)/%: $(BUILD)/obj/examples/%.o $(LIB_A)
	$(CXX) $(NNL_LDFLAGS) $^ -o $@ $(LIBS)

# ---- tests ----
# unit.cpp #includes ../nnlite.cpp: compiled alone, never linked with the library.
$(UNIT): tests/unit.cpp nnlite.cpp nnlite.h $(wildcard tests/unit_*.hpp) $(CUDA_OBJ) $(STAMP)
	@mkdir -p $(BUILD)/obj
	$(CXX) $(NNL_CXXFLAGS) -MF $(BUILD)/obj/nnlite_unit.d $< $(CUDA_OBJ) -o $@ $(NNL_LDFLAGS) $(LIBS)

# GPU suite (CUDA=1): gpu_main.cpp #includes ../nnlite.cpp, as unit.cpp does,
# and links the CUDA object; without a GPU it says so and passes.
GPU_TESTS := $(BUILD)/nnlite_gpu
$(GPU_TESTS): tests/gpu_main.cpp nnlite.cpp nnlite.h nnlite_cuda.h $(wildcard tests/gpu_*.hpp) $(CUDA_OBJ) $(STAMP)
	@test -n "$(CUDA_OBJ)" || { echo "$@: needs CUDA=1"; exit 1; }
	@mkdir -p $(BUILD)/obj
	$(CXX) $(NNL_CXXFLAGS) -MF $(BUILD)/obj/nnlite_gpu.d $< $(CUDA_OBJ) -o $@ $(NNL_LDFLAGS) $(LIBS)
gpu-tests: $(GPU_TESTS)

$(BUILD)/obj/tests/%.o: tests/%.cpp nnlite.h $(STAMP)
	@mkdir -p $(@D)
	$(CXX) $(NNL_CXXFLAGS) -c $< -o $@

$(API): $(API_OBJS) $(LIB_A)
	$(CXX) $(NNL_LDFLAGS) $^ -o $@ $(LIBS)

$(BUILD)/obj/tests/c99_consumer.o: tests/c99_consumer.c nnlite.h $(STAMP)
	@mkdir -p $(@D)
	$(CC) -std=c99 -Wall -Wextra -pedantic -Werror -I. $(SANFLAGS) -MMD -MP -c $< -o $@

$(C99): $(BUILD)/obj/tests/c99_consumer.o $(LIB_A)
	$(CXX) $(NNL_LDFLAGS) $^ -o $@ $(LIBS)

# make test: packages first, then build everything it can (in parallel with -j),
# then one check per program; a program that did not build counts as failed.
CHECKS := unit api c99 xor exports cuda-build
# sanitize: the same tests again under AddressSanitizer + UBSan (below); not
# added when this make is itself the SANITIZE=1 build.
ifneq ($(SANITIZE),1)
CHECKS += sanitize
endif

test:
	@bash scripts/deps.sh test
	+@$(MAKE) --no-print-directory -k tests || true
	+@pass=0; fail=0; failed=; \
	for c in $(CHECKS); do \
	    echo "==== $$c"; \
	    if $(MAKE) --no-print-directory check-$$c; then pass=$$((pass + 1)); \
	    else fail=$$((fail + 1)); failed="$$failed $$c"; fi; \
	done; \
	if [ $$fail -ne 0 ]; then echo "failed:$$failed"; fi; \
	echo "make test: $$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

.PHONY: $(addprefix check-,$(CHECKS))
# The products' tests again on the AVX2 kernels (a CPU with AVX-512 runs its
# own kernels in the first run; NNL_SIMD=avx2 caps them).
check-unit: $(UNIT)
	$(UNIT)
	NNL_SIMD=avx2 $(UNIT) -tc='sgemm*,the portable*,the few-rows*,im2col*,one-channel*,convolution*'
# A comma locale (de_DE) made with localedef when it can be, for the test of
# spec strings under a host program's LC_NUMERIC (skipped without one).
# predict_image too: api_images.cpp runs it (it skips, saying so, when it is absent).
check-api: $(API) $(BUILD)/predict_image
	@mkdir -p $(BUILD)/locale; [ -e $(BUILD)/locale/de_DE.UTF-8 ] || \
	    LOCPATH=$(abspath $(BUILD)/locale) localedef -i de_DE -f UTF-8 $(abspath $(BUILD)/locale)/de_DE.UTF-8 \
	    >/dev/null 2>&1 || true
	LOCPATH=$(abspath $(BUILD)/locale) NNL_TEST_COMMA_LOCALE=de_DE.UTF-8 $(API)
check-c99: $(C99)
	$(C99)
# xor.c built as every example is (cc -std=c99 + nnlite.cpp by g++) must learn XOR.
check-xor: $(BUILD)/xor
	bash scripts/check_xor.sh $(BUILD)/xor
# libnnlite.so exports exactly the NNL_API functions of nnlite.h.
check-exports: $(LIB_SO)
	bash scripts/check_exports.sh $(LIB_SO) nnlite.h
# The elementwise kernels' AVX2 and AVX-512 instances are vectorised in the
# library's object (packed arithmetic, vsqrtps, no libm call per element).
CHECKS += vectorized
.PHONY: check-vectorized
check-vectorized: $(LIB_OBJ)
	bash scripts/check_vectorized.sh $(LIB_OBJ)
# The unit, API, C99 and xor tests built with SANITIZE=1 (ASan + UBSan, -O1,
# -fno-sanitize-recover: any report fails the run, leaks included, but for
# the leaks outside nnlite listed in scripts/lsan.supp) in
# build-san/, and run there. The whole suite runs: no test is filtered out
# (the sanitized tests run in under a minute; building them is most of the
# time). A plain `make test` (no -j, as CI runs it) builds them with -j2.
check-sanitize:
	+$(MAKE) --no-print-directory $(if $(findstring jobserver,$(MAKEFLAGS)),,-j2) SANITIZE=1 BUILD=build-san tests
	+UBSAN_OPTIONS=print_stacktrace=1 LSAN_OPTIONS=suppressions=$(abspath scripts/lsan.supp):print_suppressions=0 \
	    $(MAKE) --no-print-directory SANITIZE=1 BUILD=build-san \
	    check-unit check-api check-c99 check-xor

# The CUDA build (in build-cuda/): compiles and links the GPU backend, checks
# its exports and runs the GPU suite, which skips without a GPU. Skipped,
# saying so, where there is no nvcc.
check-cuda-build:
	+@if ! command -v $(NVCC) >/dev/null 2>&1; then \
	    echo "cuda-build: SKIPPED: nvcc not found (install the CUDA toolkit, or set NVCC=path)"; exit 0; fi; \
	$(MAKE) --no-print-directory CUDA=1 BUILD=build-cuda lib gpu-tests && \
	bash scripts/check_exports.sh build-cuda/libnnlite.so nnlite.h && \
	build-cuda/nnlite_gpu

# What scripts/device_check.sh runs on a GPU machine, built here so that no
# GPU time goes to compiling: the GPU suite, two examples and the benchmark,
# with HDF5 off (a GPU machine may lack libhdf5), in build-device/pack, and
# MNIST's four idx .gz files beside them when MNIST=folder names them. Carry
# build-device/pack to the GPU machine.
MNIST ?=
device-prep:
	+$(MAKE) --no-print-directory CUDA=1 BUILD=build-device HDF5=0 gpu-tests build-device/keras_mlp build-device/lenet
	$(CC) -std=c99 -O2 -Wall -I. -Ibench -c bench/gpu/bench_gpu.c -o build-device/obj/bench_gpu.o
	$(CXX) -pthread build-device/obj/bench_gpu.o build-device/libnnlite.a \
	    $$($(MAKE) -s --no-print-directory CUDA=1 BUILD=build-device HDF5=0 print-libs) -o build-device/bench_gpu
	rm -rf build-device/pack && mkdir -p build-device/pack
	cp build-device/nnlite_gpu build-device/keras_mlp build-device/lenet build-device/bench_gpu build-device/pack/
	+@if command -v mpicxx >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory CUDA=1 MPI=1 BUILD=build-cuda-mpi HDF5=0 mpi-tests && \
	    cp build-cuda-mpi/mpi_tests build-device/pack/; \
	else echo "device-prep: no mpicxx: the pack has no GPU data-parallel test"; fi
	+@if [ -n "$(MNIST)" ]; then mkdir -p build-device/pack/mnist && \
	    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do \
	    cp "$(MNIST)/$$f.gz" build-device/pack/mnist/ || exit 1; done; \
	else echo "device-prep: no MNIST=folder given: the GPU machine trains on synthetic data only"; fi
	@du -sh build-device/pack

demo:
	+@BUILD=$(BUILD) bash scripts/demo.sh

# Issue 16's must-show (scripts/demo_i16.sh): predict_image on digits drawn
# by awk (K-MLP trained one epoch by save_load), and keras_import (C and
# Fortran) on Keras .keras/.h5 fixtures, each against the npz route (max
# |difference| printed, at most 1e-6).
.PHONY: demo-i16
demo-i16:
	+@BUILD=$(BUILD) bash scripts/demo_i16.sh

# The packages make test and make demo install by themselves, alone.
deps:
	@bash scripts/deps.sh all

# ---- fuzzing: libFuzzer targets fuzz/fuzz_*.cpp -> build-fuzz/fuzz_* ----
# Needs clang and its runtime (Debian: clang, libclang-rt-14-dev). Each target
# compiles nnlite.cpp in, with ASan + UBSan. `make fuzz-run FUZZ_SECONDS=600`
# runs every target (FUZZ_JOBS at a time, under nice) from its seed corpus in
# fuzz/corpus/<target>/ and prints executions and crashes per target.
FUZZ_CXX     ?= clang++
FUZZ_FLAGS   ?= -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 2
FUZZ_TARGETS := $(patsubst fuzz/%.cpp,build-fuzz/%,$(wildcard fuzz/fuzz_*.cpp))
# fuzz_keras (Keras .keras and .h5 files) needs HDF5: built with it where
# the library is (HDF5=auto|1 found one), left out otherwise.
FUZZ_HDF5 := $(if $(findstring -DNNL_HDF5,$(NNL_CXXFLAGS)),1)
ifneq ($(FUZZ_HDF5),1)
FUZZ_TARGETS := $(filter-out build-fuzz/fuzz_keras,$(FUZZ_TARGETS))
endif
build-fuzz/fuzz_keras: FUZZ_EXTRA := -DNNL_HDF5 $(HDF5_CFLAGS)
build-fuzz/fuzz_keras: FUZZ_LIBS := $(HDF5_LIBS)

.PHONY: fuzz fuzz-run
fuzz: $(FUZZ_TARGETS)

# NNL_MAX_JSON_PARAMS: models read from JSON stay within libFuzzer's memory limit.
build-fuzz/fuzz_%: fuzz/fuzz_%.cpp fuzz/fuzz_targets.hpp nnlite.cpp nnlite.h
	@mkdir -p $(@D)
	$(FUZZ_CXX) -std=c++17 -I. -Wno-unknown-pragmas -DNNL_MAX_JSON_PARAMS=1048576.0 $(FUZZ_EXTRA) $(FUZZ_FLAGS) $< -o $@ $(FUZZ_LIBS)

# Rewrites the committed seed corpus (fuzz/corpus/): python3 for the data
# files (and copies of Keras fixtures from tests/reference/keras/ for
# fuzz_keras), fuzz/make_model_corpus.c (built with the library) for model
# files (with HDF5, also .keras and .h5 files nnlite writes).
.PHONY: fuzz-corpus
fuzz-corpus: $(LIB_A)
	python3 fuzz/make_corpus.py
	@mkdir -p build-fuzz
	$(CC) $(NNL_CFLAGS) fuzz/make_model_corpus.c $(LIB_A) -o build-fuzz/make_model_corpus $(NNL_LDFLAGS) -lstdc++ $(LIBS)
	mkdir -p fuzz/corpus/fuzz_json fuzz/corpus/fuzz_model fuzz/corpus/fuzz_weights_npz fuzz/corpus/fuzz_image \
	    fuzz/corpus/fuzz_keras
	build-fuzz/make_model_corpus fuzz/corpus

fuzz-run: fuzz
	bash scripts/fuzz_run.sh $(FUZZ_SECONDS) $(FUZZ_JOBS) $(notdir $(FUZZ_TARGETS))

clean:
	rm -rf build build-san build-cuda build-fuzz build-device
ifneq ($(filter-out build build-san build-cuda build-device,$(BUILD)),)
	rm -rf $(BUILD)/obj $(BUILD)/.flags $(BUILD)/libnnlite.* $(TESTS) $(EXAMPLES) $(GPU_TESTS)
endif

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ======================================================================
# Front ends, install, ABI (issue 5): the C++ wrapper (nnlite.hpp), the
# Fortran module (bindings/fortran), the Python package (bindings/python),
# `make install`, the exported-symbol list, out-of-tree consumers.
# ======================================================================
ifeq ($(origin FC),default)
FC := gfortran
endif
FFLAGS ?= -O2 -Wall
NNL_FFLAGS := $(FFLAGS) -ffpe-summary=none $(SANFLAGS)
FDIR  := $(BUILD)/fortran
F_LIB := $(BUILD)/libnnlite_fortran.a
F_EXAMPLES := $(patsubst examples/fortran/%.f90,$(FDIR)/%,$(wildcard examples/fortran/*.f90))
F_TEST := $(FDIR)/test_nnlite
CXX_WRAP := $(BUILD)/cxx_wrapper
# gfortran links the C++ runtime (and threads) that the static library needs.
F_LINK := $(LIB_A) -lstdc++ $(filter -pthread,$(THRFLAGS)) $(LIBS)

.PHONY: fortran install update-symbols
fortran: $(F_LIB) $(F_EXAMPLES) $(F_TEST)
tests: $(CXX_WRAP) $(F_LIB) $(F_EXAMPLES) $(F_TEST)

$(FDIR)/nnlite.o: bindings/fortran/nnlite.f90 $(STAMP)
	@mkdir -p $(@D)
	$(FC) $(NNL_FFLAGS) -fPIC -J$(FDIR) -c $< -o $@
$(FDIR)/nnlite.mod: $(FDIR)/nnlite.o
$(F_LIB): $(FDIR)/nnlite.o
	@rm -f $@
	$(AR) rcs $@ $^
$(FDIR)/%: examples/fortran/%.f90 $(F_LIB) $(LIB_A)
	$(FC) $(NNL_FFLAGS) -I$(FDIR) $< $(F_LIB) $(F_LINK) -o $@
$(F_TEST): tests/fortran/test_nnlite.f90 $(F_LIB) $(LIB_A)
	$(FC) $(NNL_FFLAGS) -Wno-uninitialized -I$(FDIR) $< $(F_LIB) $(F_LINK) -o $@

$(CXX_WRAP): tests/cxx_wrapper.cpp nnlite.hpp nnlite.h $(LIB_A) $(STAMP)
	$(CXX) $(NNL_CXXFLAGS) -Wall -Wextra -pedantic -Werror $< $(LIB_A) -o $@ $(NNL_LDFLAGS) $(LIBS)

CHECKS += symbols cxx fortran python consumers mpi
# Examples name an unknown option and write files only where they are told
# (--out DIR) or beside themselves, never into the current folder.
CHECKS += examples
.PHONY: check-examples
check-examples: $(EXAMPLES) $(F_EXAMPLES)
	bash scripts/check_examples.sh $(BUILD)
.PHONY: check-symbols check-cxx check-fortran check-python check-consumers
# The exported symbols are exactly scripts/abi/nnlite.symbols (after adding
# an API function: make update-symbols, and commit the file).
check-symbols: $(LIB_SO)
	bash scripts/check_symbols.sh $(LIB_SO) scripts/abi/nnlite.symbols
update-symbols: $(LIB_SO)
	bash scripts/check_symbols.sh $(LIB_SO) scripts/abi/nnlite.symbols --update
check-cxx: $(CXX_WRAP)
	$(CXX_WRAP)
# The module's unit tests, the surrogate example, and R-MLP on Fashion-MNIST
# (quick settings) when the data set is installed.
check-fortran: $(F_TEST) $(F_EXAMPLES)
	bash scripts/check_fortran.sh $(BUILD)
check-python: $(LIB_SO)
	cd $(BUILD) && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$(abspath bindings/python) \
	    NNLITE_LIBRARY=$(abspath $(LIB_SO)) /usr/bin/python3 -m unittest discover -s $(abspath tests/python)
# An out-of-tree program built four ways: files dropped in, pkg-config and
# find_package against `make install` into $(BUILD)/consumers, add_subdirectory.
check-consumers: $(LIB_A) $(LIB_SO)
	bash scripts/check_consumers.sh $(BUILD)

# ---- MPI (issue 13): the library built with MPI=1 in build-mpi/, its test
# programs run under mpirun with 2 ranks and 4 (oversubscribed) ----
MPI_TESTS := $(BUILD)/mpi_tests
.PHONY: mpi-tests check-mpi
mpi-tests: $(MPI_TESTS)
$(MPI_TESTS): $(BUILD)/obj/tests/mpi/mpi_tests.o $(LIB_A)
	$(CXX) $(NNL_LDFLAGS) $^ -o $@ $(LIBS)
$(BUILD)/obj/tests/mpi/%.o: tests/mpi/%.cpp nnlite.h $(STAMP)
	@mkdir -p $(@D)
	$(CXX) $(NNL_CXXFLAGS) -c $< -o $@
# The Fortran in-situ test: the module (which needs no MPI) and the program,
# which uses the mpi module, built with the MPI Fortran flags: mpif90
# --showme (Open MPI), else pkg-config mpi-fort (Debian's mpi-fort.pc lacks
# the folder of mpi.mod). Built by check-mpi where a Fortran MPI is found;
# check_mpi.sh says SKIPPED where none is.
MPI_FFLAGS ?= $(shell mpif90 --showme:compile 2>/dev/null || pkg-config --cflags mpi-fort 2>/dev/null)
MPI_FLIBS  ?= $(shell mpif90 --showme:link 2>/dev/null || pkg-config --libs mpi-fort 2>/dev/null)
HAVE_MPI_FC = $(shell command -v $(FC) >/dev/null 2>&1 && { command -v mpif90 >/dev/null 2>&1 || \
    pkg-config --exists mpi-fort 2>/dev/null; } && echo 1)
MPI_F_TESTS := $(FDIR)/mpi_insitu
.PHONY: mpi-fortran
mpi-fortran: $(MPI_F_TESTS)
$(FDIR)/mpi_insitu: tests/fortran/mpi_insitu.f90 $(F_LIB) $(LIB_A)
	$(FC) $(NNL_FFLAGS) $(MPI_FFLAGS) -I$(FDIR) $< $(F_LIB) $(F_LINK) $(MPI_FLIBS) -o $@
check-mpi:
	+$(MAKE) --no-print-directory MPI=1 BUILD=build-mpi lib mpi-tests $(if $(HAVE_MPI_FC),mpi-fortran)
	bash scripts/check_mpi.sh build-mpi
# The time of one gradient allreduce of T-LENET's and T-PTB's sizes
# (bench/allreduce_bench.c: MPI alone, no nnlite); bench/mpi_scaling.sh runs it.
ALLREDUCE_BENCH := $(BUILD)/allreduce_bench
.PHONY: allreduce-bench
allreduce-bench: $(ALLREDUCE_BENCH)
$(ALLREDUCE_BENCH): bench/allreduce_bench.c $(STAMP)
	@test "$(MPI)" = 1 || { echo "$@: needs MPI=1 (make MPI=1 allreduce-bench)"; exit 1; }
	$(CC) -std=c99 $(CFLAGS) $(MPI_CFLAGS) $< -o $@ $(MPI_LIBS)

# ---- install ----
#   make install PREFIX=/usr/local DESTDIR=   (also LIBDIR, INCLUDEDIR, PYTHONDIR)
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
PYTHONDIR ?= $(LIBDIR)/python3/dist-packages
HAVE_FC := $(shell command -v $(FC) >/dev/null 2>&1 && echo 1 || echo 0)
INSTALL_DEPS := $(LIB_A) $(LIB_SO) $(if $(filter 1,$(HAVE_FC)),$(F_LIB))
PC_PRIVATE := -lstdc++ $(if $(filter 0,$(THREADS)),,-lpthread) -lm $(if $(findstring -DNNL_HDF5,$(NNL_CXXFLAGS)),$(HDF5_LIBS))
install: $(INSTALL_DEPS)
	bash scripts/install.sh "$(DESTDIR)" "$(PREFIX)" "$(LIBDIR)" "$(INCLUDEDIR)" "$(DATADIR)" \
	    "$(PYTHONDIR)" "$(BUILD)" "$(VERSION)" "$(PC_PRIVATE)" "$(HAVE_FC)"
