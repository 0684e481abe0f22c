# edgereid: `make demo` runs the pipeline on the synthetic default, `make test` runs the tests.
# Every target that needs the virtual environment creates it first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgereid-installed
# numpy's OpenBLAS is pinned to AVX2 kernels by this variable on some machines (TOOLCHAIN.md).
unexport OPENBLAS_CORETYPE
export PYTHONUNBUFFERED := 1

# ---- pipeline variables (override on the command line) -------------------------------------
WORK      ?= runs/demo
DATA      ?= $(WORK)/data
DATASET   ?= market1501
SYNTH_IDS ?= 120
MODEL     ?= vit_tiny
IMG       ?= 128x64
EPOCHS    ?= 12
PRETRAINED ?=
TRAIN_ARGS ?=
RUN       ?= $(WORK)/dense

.PHONY: help setup test lint demo synth train eval bench clean

help:
	@echo "make demo   - the whole pipeline on the synthetic default (WORK=$(WORK))"
	@echo "make test   - the test suite"
	@echo "make setup  - create $(VENV) with edgereid[all,dev]"
	@echo "make lint   - ruff"
	@echo "make bench  - performance suites, rewrites BENCHMARKS.md"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check edgereid runtime train export calibration tests

# ---- pipeline -----------------------------------------------------------------------------
$(DATA)/.complete: | $(STAMP)
	$(BIN)/edgereid synth --out $(DATA) --ids $(SYNTH_IDS) --preview $(WORK)/synth_preview.png

synth: $(STAMP) $(DATA)/.complete

train: $(STAMP) synth
	$(BIN)/edgereid train --data $(DATA) --dataset $(DATASET) --model $(MODEL) --img $(IMG) \
	  --epochs $(EPOCHS) --out $(RUN) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) $(TRAIN_ARGS)

eval: $(STAMP)
	$(BIN)/edgereid eval --ckpt $(RUN) --data $(DATA) --dataset $(DATASET)

demo: $(STAMP)
	$(MAKE) synth train eval
	$(BIN)/edgereid baseline --data $(DATA) --dataset $(DATASET) --out $(WORK)/histogram_baseline.json
	$(BIN)/edgereid report --runs $(RUN) --baseline $(WORK)/histogram_baseline.json

clean:
	rm -rf runs
