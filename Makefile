# batch-relay — the two commands of the README, and their parts.
#   make demo   run the whole pipeline locally (emulators, simulator, both functions)
#   make test   run every test (starts and stops its own emulators)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bundle bench bench-reactor cost clean checkov lock tf-schema

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

# mypy reads what to check, and how strictly, from pyproject.toml ([tool.mypy]: shared/, strict for record/,
# events/, retry.py and errors.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check shared functions devtools tests examples
	$(VENV)/bin/mypy

test: $(STAMP) $(CHECKOV_VENV)/.installed lint
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

bundle: $(STAMP)
	$(PY) -m devtools.bundle

# Each bench measures on whole cores and, side by side in the same run, with the function under the CPU
# share Cloud Run functions give its memory (BENCH_CPU_SHARE=512Mi by default, i.e. 1/3 vCPU; a cgroup
# CFS quota, devtools/cpushare.py, needs root here; BENCH_CPU_SHARE=off: whole cores only).
bench: $(STAMP)
	$(PY) -m devtools.bench_poller
	$(PY) -m devtools.bench_watch
	$(PY) -m devtools.bench_webhook
	$(PY) -m devtools.bench_webhook_cold
	$(PY) -m devtools.bench_fanout

# The copies through the local stack, then the results pass beside a bare json.loads loop over 1 GiB of each
# API's outputs (BENCH_RESULTS_ARGS: e.g. --mib 256 --rounds 1).
bench-reactor: $(STAMP)
	$(PY) -m devtools.bench_reactor
	$(PY) -m devtools.bench_results $(BENCH_RESULTS_ARGS)

cost: $(STAMP)
	$(PY) -m devtools.cost $(COST_ARGS)

# Regenerate requirements/*.txt (hash-locked) after changing pyproject.toml's dependencies; LOCK_ARGS=--upgrade
# takes the newest versions pyproject.toml allows.
lock: $(STAMP)
	$(PY) -m devtools.lock $(LOCK_ARGS)

# The provider schemas tests/test_infra_schema.py checks infra/ against, read from the providers' prebuilt
# CDK bindings on PyPI (downloaded, ~140 MB): hashicorp/google and google-beta 8.7.0, hashicorp/time 0.13.1.
# Keep them in step with the pins in infra/versions.tf; rerun after adding or dropping a resource type.
TF_SCHEMA_BINDINGS ?= cdktn-provider-google==21.1.0 cdktn-provider-google-beta==21.1.0 cdktf-cdktf-provider-time==11.0.1
tf-schema: $(STAMP)
	$(PY) -m devtools.tfschema extract $(foreach p,$(TF_SCHEMA_BINDINGS),--bindings $(p)) \
	  --tf infra --tf tests/fixtures/tf/valid --out infra/schema/providers.json

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) dist .pytest_cache
