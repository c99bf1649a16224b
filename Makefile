# Two entry points, each doing the whole set-up on a fresh machine:
#   make demo   install, then fine-tune the shipped perov_5 prior with PPO on PerovskiteLowHHI (~3 min on 2 CPU cores)
#               and print the success rate before and after
#   make test   install, then run the tests (~17 min on 2 CPU cores)
#   make docs   install, then build the API reference into build/site
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
STAMP := $(VENV)/.installed
PEROV := $(DATA)/perov_5_val.csv.gz
# Novelty against the prior's training split when the shared file is here.
DEMO_REFERENCE := $(if $(wildcard $(PEROV)),--reference $(PEROV),)

.PHONY: install test demo docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	rm -rf $(DEMO_OUT)
	$(BIN)/latticegym train --env LatticeGym/PerovskiteLowHHI-v0 --agent ppo --iterations $(DEMO_ITERATIONS) \
		--batch-size 64 --steps 100 --seed 0 --out $(DEMO_OUT) --evaluate $(DEMO_EVALUATE) $(DEMO_REFERENCE)

docs: install
	mkdir -p build/apidocs && ln -sfn ../.. build/apidocs/latticegym
	$(BIN)/mkdocs build --strict
	@echo "API reference: build/site/index.html"

clean:
	rm -rf $(VENV) build dist *.egg-info runs/demo
