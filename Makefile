# Two entry points, each doing the whole set-up on a fresh machine:
#   make demo   install, then sample from the shipped perov_5 prior and print its metrics
#   make test   install, then run the tests
# TORCH is what gets installed first when the venv has no torch (the CPU wheel here);
# override it, e.g. `make test TORCH="torch==2.13.0 --index-url <your CUDA index>"`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DATA ?= ../shared/data
DEMO_OUT ?= runs/demo
DEMO_NUM ?= 200

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEROV := $(DATA)/perov_5_val.csv.gz
# With the shared file, compare against our held-out split of it; without, fetch the canonical perov_5 splits.
DEMO_REFERENCE := $(if $(wildcard $(PEROV)),--reference $(PEROV) --reference-split test --train $(PEROV) --train-split train,--reference perov_5 --train perov_5)

.PHONY: install test demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/latticegym sample --prior perov_5 --num $(DEMO_NUM) --steps 100 --seed 0 --out $(DEMO_OUT)/samples.csv
	$(BIN)/latticegym evaluate --samples $(DEMO_OUT)/samples.csv $(DEMO_REFERENCE) --out $(DEMO_OUT)/metrics.json

clean:
	rm -rf $(VENV) build dist *.egg-info runs/demo
