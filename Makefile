# nnlite - GNU make build.
#
#   make              build/libnnlite.a, build/libnnlite.so and every examples/*.c
#   make test         install missing test packages (Debian), build and run all tests
#   make demo         K-MLP on Fashion-MNIST (scripts/demo.sh)
#   make clean
#
# Options: OPENMP=0 (no threads), SANITIZE=1 (ASan + UBSan, builds in build-san/),
# BUILD=dir, and the usual CC, CXX, CFLAGS, CXXFLAGS, LDFLAGS.

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-san
else
BUILD ?= build
endif

CC  ?= cc
CXX ?= g++
CFLAGS   ?= -O2 -Wall -Wextra
CXXFLAGS ?= -O2 -Wall -Wextra

# OpenMP when the compiler has it; detected once and passed on to sub-makes.
ifndef OPENMP
OPENMP := $(shell printf 'int main(){return 0;}\n' | $(CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo 1 || echo 0)
endif
export OPENMP
OMPFLAGS := $(if $(filter 1,$(OPENMP)),-fopenmp,-Wno-unknown-pragmas)

ifeq ($(SANITIZE),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g
endif

# Flags nnlite needs whatever the user's CFLAGS/CXXFLAGS say.
NNL_CXXFLAGS := -std=c++17 -fPIC -I. $(OMPFLAGS) $(CXXFLAGS) $(SANFLAGS) -MMD -MP
NNL_CFLAGS   := -std=c99 -I. -Iexamples $(CFLAGS) $(SANFLAGS) -MMD -MP
NNL_LDFLAGS  := $(filter -fopenmp,$(OMPFLAGS)) $(SANFLAGS) $(LDFLAGS)
LIBS         := -lm

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

# Everything is rebuilt when the flags change (OPENMP=0 after OPENMP=1, ...)
# or when stb appears: nnlite.cpp compiles without .gz support when it is absent.
STAMP := $(BUILD)/.flags
STAMP_TEXT := $(CC) $(CXX) | $(NNL_CFLAGS) | $(NNL_CXXFLAGS) | $(NNL_LDFLAGS) | $(wildcard /usr/include/stb/stb_image.h stb_image.h)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
$(shell mkdir -p $(BUILD) && { printf '%s\n' '$(STAMP_TEXT)' | cmp -s - $(STAMP) || printf '%s\n' '$(STAMP_TEXT)' > $(STAMP); })
endif
$(STAMP):
	@mkdir -p $(@D)
	@printf '%s\n' '$(STAMP_TEXT)' > $@

.PHONY: all lib examples tests test demo clean
.DEFAULT_GOAL := all
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

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# libnnlite.so -> libnnlite.so.0 -> libnnlite.so.0.1.0 (SONAME libnnlite.so.0),
# exporting nnl_* only.
$(LIB_SOV): $(LIB_OBJ) scripts/libnnlite.map
	$(CXX) -shared -Wl,-soname,libnnlite.so.$(SOMAJOR) -Wl,--no-undefined \
	    -Wl,--version-script=scripts/libnnlite.map $(NNL_LDFLAGS) $< -o $@ $(LIBS)

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
$(UNIT): tests/unit.cpp nnlite.cpp nnlite.h $(wildcard tests/unit_*.hpp) $(STAMP)
	@mkdir -p $(BUILD)/obj
	$(CXX) $(NNL_CXXFLAGS) -MF $(BUILD)/obj/nnlite_unit.d $< -o $@ $(NNL_LDFLAGS) $(LIBS)

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
CHECKS := unit api c99 xor exports
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
check-unit: $(UNIT)
	$(UNIT)
check-api: $(API)
	$(API)
check-c99: $(C99)
	$(C99)
# xor.c built as every example is (cc -std=c99 + nnlite.cpp by g++) must learn XOR.
check-xor: $(BUILD)/xor
	bash scripts/check_xor.sh $(BUILD)/xor
# libnnlite.so exports exactly the NNL_API functions of nnlite.h.
check-exports: $(LIB_SO)
	bash scripts/check_exports.sh $(LIB_SO) nnlite.h
# The unit, API, C99 and xor tests built with SANITIZE=1 (ASan + UBSan, -O1,
# -fno-sanitize-recover: any report fails the run, leaks included) in
# build-san/, and run there. The whole suite runs: no test is filtered out
# (the sanitized tests run in under a minute; building them is most of the
# time). A plain `make test` (no -j, as CI runs it) builds them with -j2.
check-sanitize:
	+$(MAKE) --no-print-directory $(if $(findstring jobserver,$(MAKEFLAGS)),,-j2) SANITIZE=1 BUILD=build-san tests
	+UBSAN_OPTIONS=print_stacktrace=1 $(MAKE) --no-print-directory SANITIZE=1 BUILD=build-san \
	    check-unit check-api check-c99 check-xor

demo:
	+@BUILD=$(BUILD) bash scripts/demo.sh

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

.PHONY: fuzz fuzz-run
fuzz: $(FUZZ_TARGETS)

# NNL_MAX_JSON_PARAMS: models read from JSON stay within libFuzzer's memory limit.
build-fuzz/fuzz_%: fuzz/fuzz_%.cpp fuzz/fuzz_targets.hpp nnlite.cpp nnlite.h
	@mkdir -p $(@D)
	$(FUZZ_CXX) -std=c++17 -I. -Wno-unknown-pragmas -DNNL_MAX_JSON_PARAMS=1048576.0 $(FUZZ_FLAGS) $< -o $@

# Rewrites the committed seed corpus (fuzz/corpus/): python3 for the data
# files, fuzz/make_model_corpus.c (built with the library) for model files.
.PHONY: fuzz-corpus
fuzz-corpus: $(LIB_A)
	python3 fuzz/make_corpus.py
	@mkdir -p build-fuzz
	$(CC) $(NNL_CFLAGS) fuzz/make_model_corpus.c $(LIB_A) -o build-fuzz/make_model_corpus $(NNL_LDFLAGS) -lstdc++ $(LIBS)
	mkdir -p fuzz/corpus/fuzz_json fuzz/corpus/fuzz_model fuzz/corpus/fuzz_weights_npz
	build-fuzz/make_model_corpus fuzz/corpus

fuzz-run: fuzz
	bash scripts/fuzz_run.sh $(FUZZ_SECONDS) $(FUZZ_JOBS) $(notdir $(FUZZ_TARGETS))

clean:
	rm -rf build build-san build-fuzz
ifneq ($(filter-out build build-san,$(BUILD)),)
	rm -rf $(BUILD)/obj $(BUILD)/.flags $(BUILD)/libnnlite.* $(TESTS) $(EXAMPLES)
endif

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
