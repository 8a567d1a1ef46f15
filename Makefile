# gqa.c build. `make` builds ./gqa; `make test` installs missing Debian
# packages, builds and runs every test suite (also under ASan+UBSan with
# `make asan`). See README.md.

CC ?= gcc
CFLAGS ?= -O3 -march=native
WARN := -Wall -Wextra
STD := -std=gnu11 -fopenmp

# OpenBLAS: headers from pkg-config; link the OpenMP build of the library
# explicitly (with an rpath) when it is installed, because BLAS calls inside
# our OpenMP regions must run single-threaded (see docs/ and
# ../shared/notes/machine.md). Fallback: whatever pkg-config says.
# Recursive (=) variables: evaluated when a recipe runs, i.e. after `deps`.
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
OPENBLAS_OMP_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
BLAS_CFLAGS = $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS = $(if $(wildcard $(OPENBLAS_OMP_DIR)/libopenblas.so.0),$(OPENBLAS_OMP_DIR)/libopenblas.so.0 -Wl$(comma)-rpath$(comma)$(OPENBLAS_OMP_DIR),$(shell pkg-config --libs openblas))
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)
comma := ,

LIB_SRC := util/util.c util/opts.c model/ops.c model/attention.c model/gpt.c model/checkpoint.c model/kvcache.c \
	data/tokenizer.c data/tokens.c data/prepare.c train/adamw.c train/train.c \
	infer/infer.c infer/sample.c
TEST_SUITES := test_model test_data test_train test_infer
TESTS_SH := tests/test_cli.sh tests/test_train.sh

BUILD ?= build/release
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps demo test test-run asan asan-run fixtures clean
all: gqa

deps:
	@sh scripts/install-deps.sh

$(BUILD)/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(WARN) $(BLAS_CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

$(BUILD)/libgqa.a: $(LIB_OBJ)
	ar rcs $@ $^

gqa: gqa.c $(BUILD)/libgqa.a $(wildcard */*.h)
	$(CC) $(STD) $(CFLAGS) $(WARN) $(BLAS_CFLAGS) gqa.c $(BUILD)/libgqa.a $(BLAS_LIBS) -lm -o $@

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libgqa.a
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(WARN) $(BLAS_CFLAGS) $(CHECK_CFLAGS) $< $(BUILD)/libgqa.a $(BLAS_LIBS) $(CHECK_LIBS) -lm -o $@

# Tests run with 2 OpenMP threads (the machine's physical cores); each Check
# suite prints its "100%: Checks: N, Failures: 0, Errors: 0" line.
test: deps
	@$(MAKE) --no-print-directory test-run

test-run: gqa $(TEST_SUITES:%=$(BUILD)/tests/%)
	@set -e; for t in $(TEST_SUITES); do echo "== $$t"; OMP_NUM_THREADS=2 $(BUILD)/tests/$$t; done
	@set -e; for t in $(TESTS_SH); do echo "== $$t"; OMP_NUM_THREADS=2 sh $$t ./gqa; done

# The same suites built with AddressSanitizer and UndefinedBehaviorSanitizer.
asan: deps
	@$(MAKE) --no-print-directory asan-run BUILD=build/asan \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"

asan-run: $(TEST_SUITES:%=$(BUILD)/tests/%)
	@set -e; for t in $(TEST_SUITES); do echo "== $$t (asan+ubsan)"; \
	    OMP_NUM_THREADS=2 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/tests/$$t; done

# The main job: deps, build, Tiny Shakespeare, train cfg-s with GQA
# (n_kv_head 2 of 4 query heads, ~3 minutes on 2 cores), then sample.
DEMO_OUT ?= out-demo-gqa
demo: deps
	@$(MAKE) --no-print-directory gqa
	sh data/shakespeare_char/prepare.sh
	./gqa train train/configs/shakespeare_char_cpu.conf --n_kv_head=2 --out_dir=$(DEMO_OUT) --eval_iters=100
	./gqa sample --ckpt $(DEMO_OUT)/best.bin --prompt "ROMEO:" --max_new_tokens=500

# Regenerate the PyTorch reference fixtures (needs python3-torch).
fixtures:
	/usr/bin/python3 scripts/ref_gpt.py --out_dir tests/fixtures

clean:
	rm -rf build gqa
