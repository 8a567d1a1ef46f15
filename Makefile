# gqa.c build. `make` builds ./gqa; `make check` builds and runs every test
# suite, installing nothing; `make test` first installs the Debian packages
# that are missing (apt-get), then runs `make check` (also under ASan+UBSan
# with `make asan`). See README.md and docs/testing.md.

CC ?= gcc
CFLAGS ?= -O3 -march=native
WARN := -Wall -Wextra
# -fno-math-errno: sqrtf and friends never set errno, so loops with them vectorise
STD := -std=gnu11 -fopenmp -fno-math-errno

# OpenBLAS: headers from pkg-config; link the OpenMP build of the library
# explicitly (with an rpath) when it is installed, because BLAS calls inside
# our OpenMP regions must run single-threaded (docs/design.md, "Threads").
# Fallback: whatever pkg-config says.
# Recursive (=) variables: evaluated when a recipe runs, i.e. after `deps`.
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
OPENBLAS_OMP_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
BLAS_CFLAGS = $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS = $(if $(wildcard $(OPENBLAS_OMP_DIR)/libopenblas.so.0),$(OPENBLAS_OMP_DIR)/libopenblas.so.0 -Wl$(comma)-rpath$(comma)$(OPENBLAS_OMP_DIR),$(shell pkg-config --libs openblas))
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)
comma := ,

# make MPI=1: data-parallel training over OpenMPI (mpicc), objects in build/mpi.
ifeq ($(MPI),1)
CC := mpicc
BUILD := build/mpi
DEFS := -DGQA_MPI
endif
GQA_BIN ?= gqa

LIB_SRC := util/util.c util/team.c model/ops.c model/gemm.c model/attention.c model/rope.c model/gpt.c model/checkpoint.c model/kvcache.c model/weights.c \
	model/attention_cached.c model/attention_latent.c model/convert.c data/tokenizer.c data/tokens.c data/recall.c train/adamw.c train/dist.c \
	train/train.c infer/infer.c bench/workers.c bench/roofline.c bench/run.c bench/report.c \
	cli/opts.c cli/cli.c cli/info.c cli/prepare.c cli/train.c cli/sample.c cli/convert.c cli/bench.c cli/mem.c
TEST_SUITES := test_model test_data test_train test_infer
TESTS_SH := tests/test_cli.sh tests/test_train.sh tests/test_study.sh

BUILD ?= build/release
DEFS ?=
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps have-libs check demo bench bench-torch bench-llama study valgrind test-mpi test test-run asan asan-run fuzz fuzz-run fixtures clean
all: $(GQA_BIN)

deps:
	@sh scripts/install-deps.sh

# One line per missing library (its Debian package named), before anything builds.
have-libs:
	@sh scripts/install-deps.sh --check

$(BUILD)/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(DEFS) $(WARN) $(BLAS_CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

$(BUILD)/libgqa.a: $(LIB_OBJ)
	ar rcs $@ $^

$(GQA_BIN): gqa.c $(BUILD)/libgqa.a $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(DEFS) $(WARN) $(BLAS_CFLAGS) gqa.c $(BUILD)/libgqa.a $(BLAS_LIBS) -lm -o $@

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libgqa.a
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(WARN) $(BLAS_CFLAGS) $(CHECK_CFLAGS) $< $(BUILD)/libgqa.a $(BLAS_LIBS) $(CHECK_LIBS) -lm -o $@

# Tests run with 2 OpenMP threads (the machine's physical cores); each Check
# suite prints its "100%: Checks: N, Failures: 0, Errors: 0" line.
test: deps
	@$(MAKE) --no-print-directory check

check: have-libs
	@$(MAKE) --no-print-directory test-run

test-run: gqa $(TEST_SUITES:%=$(BUILD)/tests/%)
	@set -e; for t in $(TEST_SUITES); do echo "== $$t"; OMP_NUM_THREADS=2 $(BUILD)/tests/$$t; done
	@set -e; for t in $(TESTS_SH); do echo "== $$t"; OMP_NUM_THREADS=2 sh $$t ./gqa; done

# The same suites built with AddressSanitizer and UndefinedBehaviorSanitizer.
asan: deps have-libs
	@$(MAKE) --no-print-directory asan-run BUILD=build/asan \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"

asan-run: $(TEST_SUITES:%=$(BUILD)/tests/%)
	@set -e; for t in $(TEST_SUITES); do echo "== $$t (asan+ubsan)"; \
	    OMP_NUM_THREADS=2 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/tests/$$t; done

# The main job: deps, build, Tiny Shakespeare (shipped in data/), train
# cfg-s with GQA (n_kv_head 2 of 4 query heads, about a minute on 2 cores),
# then sample.
DEMO_OUT ?= out-demo-gqa
demo: deps have-libs
	@$(MAKE) --no-print-directory gqa
	sh data/shakespeare_char/prepare.sh
	./gqa train train/configs/shakespeare_char_cpu.conf --n_kv_head=2 --out_dir=$(DEMO_OUT) --eval_iters=100
	./gqa sample --ckpt $(DEMO_OUT)/best.bin --prompt "ROMEO:" --max_new_tokens=500

# The cfg-d sweep (docs/design.md; random weights; ~9 minutes on 2 cores):
# table on stdout, CSV and plots in docs/bench/. Run it on a quiet machine.
# Three rounds, each over every setting in turn, so a slow spell of the
# machine falls on all settings alike; speed-ups are ratios of medians.
BENCH_OUT ?= docs/bench
bench: gqa
	@mkdir -p $(BENCH_OUT)
	./gqa bench --n_kv_head=8,4,2,1 --ctx=512,2048,4032 --batch_size=1,8 --kv_dtype=f32,bf16 --rounds=3 --repeats=2 \
	    --csv=$(BENCH_OUT)/cfg-d.csv | tee $(BENCH_OUT)/cfg-d.md
	sh scripts/plot_bench.sh $(BENCH_OUT)/cfg-d.csv $(BENCH_OUT)/cfg-d
	sh scripts/plot_mem.sh $(BENCH_OUT)/kv-cache-70b.png

# The trade-off study (scripts/study.py; ~20 minutes on 2 cores): MHA, GQA-2,
# MQA and MLA-128, 3 seeds each, on Tiny Shakespeare (cfg-s) and associative
# recall (2 layers of cfg-s's heads), plus decode speed and capacity at a
# KV-cache budget from gqa bench:
# docs/study/{runs.csv,bench.csv,study.md,*.png}. Run it on a quiet machine.
# STUDY_FLAGS passes options (--seeds N, --settings LIST, --quick; --help).
STUDY_OUT ?= docs/study
study: gqa
	/usr/bin/python3 scripts/study.py --out $(STUDY_OUT) $(STUDY_FLAGS)

# gqa.c against PyTorch (scripts/ref_gpt.py bench, OpenMP OpenBLAS, 2 threads)
# on cfg-s and cfg-m training and cfg-d decode, alternating the two sides 5
# rounds per row: median tok/s and ratios in docs/perf/vs_torch.{md,csv}.
# Takes 11-13 minutes and must run on a quiet machine (timings collapse
# when another process holds a core). `QUICK=1 sh scripts/bench_vs_torch.sh`
# is a seconds-long smoke test of the script on tiny shapes.
VS_TORCH_OUT ?= docs/perf/vs_torch.csv
VS_LLAMA_OUT ?= docs/perf/vs_llama.csv
bench-torch: gqa
	sh scripts/bench_vs_torch.sh $(VS_TORCH_OUT)

# gqa.c against llama.cpp (the prebuilt one of the npm package node-llama-cpp
# 3.21.1, installed into ~/.cache/gqa-llama on first use) on cfg-d, f16 and
# q8 weights: docs/perf/vs_llama.{csv,md} (~15 minutes; needs node and npm).
bench-llama: gqa
	sh scripts/bench_vs_llama.sh $(VS_LLAMA_OUT)

# libFuzzer harnesses (clang) for the checkpoint reader, the token-file
# reader and the config parser, each run for FUZZ_SECONDS from the crafted
# corpus in tests/corpus/ (new finds go to build/fuzz/corpus/). At -O1 clang
# does not vectorise, and -Wno-pass-failed keeps it from reporting each
# `omp simd` loop it leaves scalar.
FUZZERS := fuzz_checkpoint fuzz_tokens fuzz_config fuzz_recall
FUZZ_SECONDS ?= 60
fuzz:
	@sh scripts/install-deps.sh clang libclang-rt-dev libomp-dev
	@$(MAKE) --no-print-directory fuzz-run BUILD=build/fuzz CC=clang WARN=-Wno-pass-failed \
	    CFLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"

fuzz-run: $(FUZZERS:%=$(BUILD)/%)
	@set -e; for f in $(FUZZERS); do kind=$${f#fuzz_}; mkdir -p $(BUILD)/corpus/$$kind; \
	    echo "== $$f ($(FUZZ_SECONDS) s)"; \
	    if ! ASAN_OPTIONS=detect_leaks=1 $(BUILD)/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -max_len=8192 -timeout=10 -artifact_prefix=$(BUILD)/ $(BUILD)/corpus/$$kind tests/corpus/$$kind \
	        > $(BUILD)/$$f.log 2>&1; then tail -40 $(BUILD)/$$f.log; echo "$$f FAILED (crash input in $(BUILD)/)"; exit 1; fi; \
	    grep -E "^stat::(number_of_executed_units|average_exec_per_sec)" $(BUILD)/$$f.log; done

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_file.h $(BUILD)/libgqa.a
	$(CC) $(STD) $(CFLAGS) -fsanitize=fuzzer $(BLAS_CFLAGS) $< $(BUILD)/libgqa.a $(BLAS_LIBS) -lm -o $@

# memcheck over a short prepare + train + resume + sample (scripts/valgrind.sh),
# with a binary built for valgrind's CPU (no -march=native: no AVX-512).
valgrind:
	@sh scripts/install-deps.sh valgrind
	@$(MAKE) --no-print-directory GQA_BIN=build/valgrind/gqa BUILD=build/valgrind CFLAGS="-O1 -g" build/valgrind/gqa
	sh scripts/valgrind.sh build/valgrind/gqa

# MPI: `mpirun -np 2` == one process over 10 steps (tests/test_mpi.sh),
# with its own binary so ./gqa stays the plain build.
test-mpi:
	@sh scripts/install-deps.sh openmpi-bin libopenmpi-dev
	@$(MAKE) --no-print-directory MPI=1 GQA_BIN=build/mpi/gqa build/mpi/gqa
	sh tests/test_mpi.sh build/mpi/gqa

# Regenerate the PyTorch reference fixtures (needs python3-torch).
fixtures:
	/usr/bin/python3 scripts/ref_gpt.py --out_dir tests/fixtures

clean:
	rm -rf build gqa
