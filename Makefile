# batch-relay — the two commands of the README, and their parts.
#   make demo   run the whole pipeline locally (emulators, simulator, both functions)
#   make test   run every test (starts and stops its own emulators)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bundle bench bench-reactor cost clean checkov tf-schema

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

# The provider schemas tests/test_infra_schema.py checks infra/ against, read from the providers' prebuilt
# CDK bindings on PyPI (downloaded, ~140 MB): hashicorp/google and google-beta 8.7.0, hashicorp/time 0.13.1.
# Keep them in step with the pins in infra/versions.tf; rerun after adding or dropping a resource type.
TF_SCHEMA_BINDINGS ?= cdktn-provider-google==21.1.0 cdktn-provider-google-beta==21.1.0 cdktf-cdktf-provider-time==11.0.1
tf-schema: $(STAMP)
	$(PY) -m devtools.tfschema extract $(foreach p,$(TF_SCHEMA_BINDINGS),--bindings $(p)) \
	  --tf infra --tf tests/fixtures/tf/valid --out infra/schema/providers.json

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) dist .pytest_cache
