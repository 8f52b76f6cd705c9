# batch-relay — the two commands of the README, and their parts.
#   make demo   run the whole pipeline locally (emulators, simulator, both functions)
#   make test   run every test (starts and stops its own emulators)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bundle bench bench-reactor cost clean checkov

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov>=3.2,<4'
	touch $@

checkov: $(CHECKOV_VENV)/.installed

demo: $(STAMP)
	$(PY) -m devtools.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check shared functions devtools tests examples

test: $(STAMP) $(CHECKOV_VENV)/.installed lint
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

bundle: $(STAMP)
	$(PY) -m devtools.bundle

bench: $(STAMP)
	$(PY) -m devtools.bench_poller
	$(PY) -m devtools.bench_watch
	$(PY) -m devtools.bench_webhook
	$(PY) -m devtools.bench_fanout

bench-reactor: $(STAMP)
	$(PY) -m devtools.bench_reactor

cost: $(STAMP)
	$(PY) -m devtools.cost $(COST_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) dist .pytest_cache
