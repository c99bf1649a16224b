# Two entry points, each doing the whole set-up on a fresh machine:
#   make demo   install the package, then fine-tune the shipped perov_5 prior with PPO on PerovskiteLowHHI
#               and print the success rate before and after
#   make test   install the package with its test extras, then run the tests (CI, 2 CPU cores, from a fresh
#               clone at commit 3d8764e, its venv built: `python -m pytest` passed in 1,302 s)
# Also:
#   make docs        install the docs extra, then build the API reference into build/site
#   make check-demo  run the demo and fail if its printed figures differ from the README's
# TORCH is what gets installed first when the venv has no torch (the CPU wheel here);
# override it, e.g. `make test TORCH="torch==2.13.0 --index-url <your CUDA index>"`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DATA ?= ../shared/data
DEMO_OUT ?= runs/demo
DEMO_ITERATIONS ?= 30
DEMO_EVALUATE ?= 256

BIN := $(VENV)/bin
PEROV := $(DATA)/perov_5_val.csv.gz
# Novelty against the prior's training split when the shared file is here.
DEMO_REFERENCE := $(if $(wildcard $(PEROV)),--reference $(PEROV),)
# The package's modules, linked into build/apidocs/latticegym for the API reference (not .venv, runs/, build/).
PACKAGE := $(wildcard *.py) envs policies rewards agents benchmarks

.PHONY: install test demo docs apidocs check-demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: the demo needs only the package, the tests and docs their extras.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".$(if $(filter core,$*),,[$*])"
	touch $@

install: $(VENV)/.installed-core

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

demo: $(VENV)/.installed-core
	rm -rf $(DEMO_OUT)
	$(BIN)/latticegym train --env LatticeGym/PerovskiteLowHHI-v0 --agent ppo --iterations $(DEMO_ITERATIONS) \
		--batch-size 64 --steps 100 --seed 0 --out $(DEMO_OUT) --evaluate $(DEMO_EVALUATE) $(DEMO_REFERENCE)

check-demo: $(VENV)/.installed-core
	mkdir -p build
	$(MAKE) --no-print-directory demo | tee build/demo.txt
	$(BIN)/python scripts/check_demo.py build/demo.txt README.md

apidocs:
	rm -rf build/apidocs && mkdir -p build/apidocs/latticegym
	for f in $(PACKAGE); do ln -s ../../../$$f build/apidocs/latticegym/$$f; done

docs: $(VENV)/.installed-docs apidocs
	$(BIN)/mkdocs build --strict
	@echo "API reference: build/site/index.html"

clean:
	rm -rf $(VENV) build dist *.egg-info runs/demo
