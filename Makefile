# edgereid: `make demo` runs the pipeline on the synthetic default, `make test` runs the tests.
# Every target that needs the virtual environment creates it first. Every pipeline step is its own
# target, skipped when its output exists (delete the output, or the WORK folder, to redo it).
#
# Your own data and weights, e.g.:
#   make demo DATA=/data/Market-1501-v15.09.15 DATASET=market1501 MODEL=vit_base IMG=256x128 \
#             PRETRAINED=/weights/vit_base.safetensors EPOCHS=120

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgereid-installed
# numpy's OpenBLAS is pinned to AVX2 kernels by this variable on some machines: never pass it on.
unexport OPENBLAS_CORETYPE
export PYTHONUNBUFFERED := 1

# ---- pipeline variables ----------------------------------------------------------------------
WORK      ?= runs/demo
DATA      ?= $(WORK)/data
DATASET   ?= market1501
QUERY_DIR   ?= $(DATA)/query
GALLERY_DIR ?= $(DATA)/bounding_box_test
SYNTH_IDS ?= 400
SYNTH_TRAIN_IDS ?=
SYNTH_ARGS ?=
MODEL     ?= vit_tiny
IMG       ?= 128x64
# conv stem from scratch (the demo); with pretrained ViT weights, their patch embedding
STEM      ?= $(if $(PRETRAINED),patch,conv)
PRETRAINED ?=
EPOCHS    ?= 20
BATCH     ?= 32
LR        ?= 1.5e-3
WORKERS   ?= 1
TRAIN_ARGS ?=
# embedding compression: 32 dims x int8 = 32 bytes per embedding
EMB_METHOD ?= slice
EMB_DIM    ?= 32
EMB_BITS   ?= 8
COMPRESS_EPOCHS ?= 4
COMPRESS_ARGS ?=
# attention-guided pruning of the compressed model, distilled from it
PRUNE_MODE  ?= heads+tokens
PRUNE_RATE  ?= 0.34
TOKEN_RATE  ?= 0.4
TOKEN_FORM  ?= drop
PRUNE_EPOCHS ?= 3
PRUNE_ARGS  ?=
# export (make export TARGET=jetson|cpu|onnx|rtx [CKPT=run folder] [JETPACK=5] [RTX_CC=8.6,8.9])
TARGET    ?= cpu
CKPT      ?= $(WORK)/pruned
JETPACK   ?=
RTX_CC    ?=
CALIB     ?= 256
BENCH_ITERS ?= 50

DENSE      := $(WORK)/dense
CONTROL    := $(WORK)/control
COMPRESSED := $(WORK)/compressed
PRUNED     := $(WORK)/pruned
MODELS     := dense compressed pruned
EDGEREID   := $(BIN)/edgereid
RUNTIME    := $(BIN)/reid-runtime
COMMON     := --data $(DATA) --dataset $(DATASET) --workers $(WORKERS)

# The synthetic set is generated only when DATA was not given.
ifeq ($(origin DATA),file)
DATA_READY := $(DATA)/.complete
else
DATA_READY :=
endif

# Pipeline outputs are never deleted as intermediates: a second `make demo` finds them and skips.
.SECONDARY:

.PHONY: help setup test test-aarch64 qemu-user lint demo synth train control compress prune export bundles runtime report bench \
        bench-search bench-store bench-models bench-tensorrt sweep clean

help:
	@echo "make demo    - the whole pipeline on the synthetic default (WORK=$(WORK))"
	@echo "make test    - the test suite"
	@echo "make test-aarch64 - the runtime's tests on emulated Jetson CPUs (qemu-user; installs what it needs)"
	@echo "make setup   - create $(VENV) with edgereid[all,dev,tensorrt-rtx]"
	@echo "make lint    - ruff + the layering contract (tests/test_architecture.py)"
	@echo "make bench   - performance suites; rewrites BENCHMARKS.md"
	@echo "steps: synth train control compress prune bundles runtime report; make export TARGET=jetson|cpu|onnx|rtx"

$(STAMP): pyproject.toml setup.py runtime/_l2scan.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev,tensorrt-rtx]'
	touch $(STAMP)

setup: $(STAMP)

# qemu-user runs the search tests on emulated x86 CPUs without AVX-512/VNNI (tests/test_emulated_cpu.py).
# Installed from Debian's packages when missing and possible (root + apt); else those tests skip and say why.
qemu-user:
	@command -v qemu-x86_64-static >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends qemu-user-static >/dev/null 2>&1; }; }; } || \
	  echo "note: qemu-user-static is not installed and could not be: the emulated-CPU tests will skip"

test: $(STAMP) qemu-user
	$(BIN)/python -m pytest -q -n 2 --durations=20 tests

# The runtime's tests on an emulated aarch64 CPU (qemu-user), the C scan cross-built: needs no venv,
# installs its Debian tools (apt-get) and aarch64 wheels itself, caches them in build/aarch64/.
# AARCH64_ARGS: e.g. --cpu cortex-a57:runtime, --jobs 1, -- -k store (see tools/test_aarch64.py --help).
AARCH64_ARGS ?=
test-aarch64:
	$(PYTHON) tools/test_aarch64.py $(AARCH64_ARGS)

# ruff, and the layering contract (docs/architecture.md): tests/test_architecture.py reads every import
lint: $(STAMP)
	$(BIN)/ruff check edgereid data runtime train export calibration tests bench tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py

# ---- the pipeline ----------------------------------------------------------------------------
$(DATA)/.complete: | $(STAMP)
	$(EDGEREID) synth --out $(DATA) --ids $(SYNTH_IDS) $(if $(SYNTH_TRAIN_IDS),--train-ids $(SYNTH_TRAIN_IDS)) \
	  $(SYNTH_ARGS) --preview $(WORK)/synth_preview.png

# The no-learning floor every model is printed against (colour histogram, raw pixels at the model's input size).
$(WORK)/baselines.json: $(DATA_READY) | $(STAMP)
	$(EDGEREID) baseline --data $(DATA) --dataset $(DATASET) --img $(IMG) --out $@

synth: $(STAMP) $(DATA_READY) $(WORK)/baselines.json

# Evaluated once, at the end: the schedule decays to its last epoch, and every evaluation costs training time.
$(DENSE)/summary.json: $(DATA_READY) $(WORK)/baselines.json | $(STAMP)
	$(EDGEREID) train $(COMMON) --model $(MODEL) --img $(IMG) --stem $(STEM) --epochs $(EPOCHS) --batch-size $(BATCH) \
	  --lr $(LR) --eval-every $(EPOCHS) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) \
	  --baselines $(WORK)/baselines.json $(TRAIN_ARGS) --out $(DENSE)

train: $(DENSE)/summary.json

# The equal-budget control: the dense model fine-tuned by the compression command (same epochs, schedule,
# learning rate) with nothing compressed, so that "compressed vs dense" is not "more epochs vs fewer".
$(CONTROL)/compress.json: $(DENSE)/summary.json
	$(EDGEREID) compress $(COMMON) --model $(MODEL) --img $(IMG) --method full --init-from $(DENSE) \
	  --epochs $(COMPRESS_EPOCHS) --batch-size $(BATCH) --lr $(LR) --warmup-epochs 0.5 --eval-every $(COMPRESS_EPOCHS) \
	  $(COMPRESS_ARGS) --out $(CONTROL)

control: $(CONTROL)/compress.json

$(COMPRESSED)/compress.json: $(DENSE)/summary.json
	$(EDGEREID) compress $(COMMON) --model $(MODEL) --img $(IMG) --method $(EMB_METHOD) --dim $(EMB_DIM) \
	  --bits $(EMB_BITS) --qat --init-from $(DENSE) --epochs $(COMPRESS_EPOCHS) --batch-size $(BATCH) \
	  --lr $(LR) --warmup-epochs 0.5 --eval-every $(COMPRESS_EPOCHS) $(COMPRESS_ARGS) --out $(COMPRESSED)

compress: $(COMPRESSED)/compress.json

$(PRUNED)/prune_summary.json: $(COMPRESSED)/compress.json
	$(EDGEREID) prune $(COMMON) --ckpt $(COMPRESSED) --mode $(PRUNE_MODE) --rate $(PRUNE_RATE) \
	  --token-rate $(TOKEN_RATE) --token-form $(TOKEN_FORM) --final-epochs $(PRUNE_EPOCHS) --lr 3e-4 \
	  --batch-size $(BATCH) --eval-every $(PRUNE_EPOCHS) --no-round-eval --distill soft $(PRUNE_ARGS) --out $(PRUNED)

prune: $(PRUNED)/prune_summary.json

# A cpu bundle per model (ONNX fp32 + Q/DQ int8, OpenVINO f32 + NNCF int8), parity- and accuracy-checked.
$(WORK)/bundle-dense/manifest.json: $(DENSE)/summary.json
$(WORK)/bundle-compressed/manifest.json: $(COMPRESSED)/compress.json
$(WORK)/bundle-pruned/manifest.json: $(PRUNED)/prune_summary.json
$(WORK)/bundle-%/manifest.json:
	$(EDGEREID) export --ckpt $(WORK)/$* --target cpu --data $(DATA) --dataset $(DATASET) --calib-size $(CALIB) \
	  --out $(WORK)/bundle-$* --overwrite

# The pruned model also as onnx and jetson bundles (the jetson one completes without TensorRT).
$(WORK)/bundle-pruned-onnx/manifest.json $(WORK)/bundle-pruned-jetson/manifest.json: $(PRUNED)/prune_summary.json
	$(EDGEREID) export --ckpt $(PRUNED) --target $(subst bundle-pruned-,,$(notdir $(@D))) --data $(DATA) \
	  --dataset $(DATASET) --calib-size $(CALIB) --no-eval --out $(@D) --overwrite

bundles: $(foreach m,$(MODELS),$(WORK)/bundle-$(m)/manifest.json) \
         $(WORK)/bundle-pruned-onnx/manifest.json $(WORK)/bundle-pruned-jetson/manifest.json

export: $(STAMP) $(if $(filter $(WORK)/pruned,$(CKPT)),$(PRUNED)/prune_summary.json)
	$(EDGEREID) export --ckpt $(CKPT) --target $(TARGET) --data $(DATA) --dataset $(DATASET) --calib-size $(CALIB) \
	  $(if $(JETPACK),--jetpack $(JETPACK)) $(if $(RTX_CC),--compute-capability $(RTX_CC)) \
	  --out $(WORK)/bundle-$(notdir $(CKPT))-$(TARGET) --overwrite

# On-device side, torch-free: enrol the gallery, stream the queries, evaluate, benchmark.
$(WORK)/runtime-%/enrolled: $(WORK)/bundle-%/manifest.json
	mkdir -p $(@D) && rm -f $(WORK)/gallery-$*.bin
	$(RUNTIME) enroll --bundle $(WORK)/bundle-$* --gallery $(WORK)/gallery-$*.bin --create $(GALLERY_DIR)
	touch $@

$(WORK)/runtime-%/matches.jsonl: $(WORK)/runtime-%/enrolled
	$(RUNTIME) --bundle $(WORK)/bundle-$* --gallery $(WORK)/gallery-$*.bin --topk 5 $(QUERY_DIR) > $@.tmp || test $$? -eq 1
	mv $@.tmp $@ && echo "wrote $@ ($$(wc -l < $@) JSON lines)"

$(WORK)/runtime-%/eval.json: $(WORK)/bundle-%/manifest.json
	mkdir -p $(@D)
	$(RUNTIME) eval --bundle $(WORK)/bundle-$* --query $(QUERY_DIR) --gallery-dir $(GALLERY_DIR) --out $@

$(WORK)/runtime-%/bench.done: $(WORK)/runtime-%/enrolled
	for art in onnx-fp32 openvino-fp32 openvino-int8; do \
	  $(RUNTIME) bench --bundle $(WORK)/bundle-$* --artifact $$art --gallery $(WORK)/gallery-$*.bin \
	    --iterations $(BENCH_ITERS) --out-dir $(@D)/bench-$$art > /dev/null || exit 1; done
	touch $@

runtime: $(foreach m,$(MODELS),$(WORK)/runtime-$(m)/matches.jsonl $(WORK)/runtime-$(m)/eval.json $(WORK)/runtime-$(m)/bench.done)

report: | $(STAMP)
	$(EDGEREID) report --work $(WORK) $(if $(wildcard $(WORK)/baselines.json),--baselines $(WORK)/baselines.json)

demo: $(STAMP)
	$(MAKE) synth train control compress prune bundles runtime
	$(MAKE) report

# ---- benchmarks (results in benchmarks/, assembled into BENCHMARKS.md) -------------------------
bench-search: $(STAMP)
	$(BIN)/python bench/bench_search.py --sizes 100000,1000000 --out-json benchmarks/search.json --out-md benchmarks/search.md

bench-store: $(STAMP)
	$(BIN)/python bench/bench_store.py --out-json benchmarks/store.json --out-md benchmarks/store.md

bench-models: $(STAMP) $(DENSE)/summary.json $(PRUNED)/prune_summary.json
	$(BIN)/python bench/bench_models.py --model dense=$(DENSE) --model pruned=$(PRUNED) --data $(DATA) \
	  --work $(WORK)/bench_models --calib-size 128 --out-md benchmarks/model_latency.md --out-json benchmarks/model_latency.json

# TensorRT-RTX parse/build time and engine size per exported graph form, pre-flight per TensorRT target (CPU only)
bench-tensorrt: $(STAMP)
	$(BIN)/python bench/bench_tensorrt.py --size $(MODEL) --img $(IMG) --out-json benchmarks/tensorrt.json \
	  --out-md benchmarks/tensorrt.md

# The compression sweep starts from the demo's dense model (the converged teacher); --epochs sets the
# fine-tuning budget (a fraction of it) of every method and of the equal-budget control.
sweep: $(STAMP) $(DENSE)/summary.json
	$(EDGEREID) sweep --data $(DATA) --dataset $(DATASET) --out $(WORK)/sweep --model $(MODEL) --img $(IMG) \
	  --dense-ckpt $(DENSE) --epochs $(EPOCHS) --batch-size $(BATCH) --lr $(LR) --workers $(WORKERS) \
	  --markdown benchmarks/compression.md --plot benchmarks/compression.png
	cp $(WORK)/sweep/sweep.json benchmarks/compression.json

bench: $(STAMP) bench-search bench-store bench-models bench-tensorrt
	$(MAKE) demo
	cp $(WORK)/report.md benchmarks/demo.md.tmp && { echo "## The demo pipeline (make demo)"; echo; \
	  echo "Command: \`make demo\` (WORK=$(WORK), MODEL=$(MODEL), IMG=$(IMG), EPOCHS=$(EPOCHS))."; echo; \
	  cat benchmarks/demo.md.tmp; } > benchmarks/demo.md && rm benchmarks/demo.md.tmp
	$(BIN)/python bench/pareto.py --latency benchmarks/model_latency.json --compression benchmarks/compression.json \
	  --demo $(WORK)/report.json --out-png benchmarks/pareto.png --out-md benchmarks/pareto.md
	$(BIN)/python bench/assemble.py --sections benchmarks --out BENCHMARKS.md

clean:
	rm -rf runs
