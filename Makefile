# The two commands of the README: `make serve` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: serve test lint bench bench-transport clean

serve: $(VENV)/.installed-local  ## set up, then serve the bundled local model on 127.0.0.1:8000
	$(BIN)/tokenwire serve $(ARGS)

NODE_TESTS := tests/node

test: $(VENV)/.installed-dev $(NODE_TESTS)/node_modules/.installed  ## set up, then run every test (installs redis-server, chromium and nginx if missing)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check server clients tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed-dev  ## local model throughput through the server vs llama-cpp-python
	$(BIN)/python benchmarks/local_throughput.py $(ARGS)

# SSE vs WebSocket vs baselines; e.g. make bench-transport ARGS=--quick
bench-transport: $(VENV)/.installed-dev  ## the transport benchmark (tokenwire bench)
	$(BIN)/tokenwire bench $(ARGS)

# the official JavaScript clients the tests drive (the AI SDK, the openai Node SDK), as locked
$(NODE_TESTS)/node_modules/.installed: $(NODE_TESTS)/package-lock.json
	cd $(NODE_TESTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,redis]'
	touch $@ $(VENV)/.installed-local

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
