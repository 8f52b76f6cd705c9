# batch-relay — the two commands of the README, and their parts.
#   make demo   run the whole pipeline locally (emulators, simulator, both functions)
#   make test   run every test (starts and stops its own emulators)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bundle bench bench-reactor cost clean checkov lock

# Everything is installed from the hash-locked files in requirements/ (make lock regenerates them), then
# the package itself, editable, with the setuptools those files pinned (no unpinned build environment).
$(STAMP): pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r requirements/checkov.txt
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

# Regenerate requirements/*.txt (hash-locked) after changing pyproject.toml's dependencies; LOCK_ARGS=--upgrade
# takes the newest versions pyproject.toml allows.
lock: $(STAMP)
	$(PY) -m devtools.lock $(LOCK_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) dist .pytest_cache
