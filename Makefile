# saltcd: `make demo` shows the whole path on a local sandbox, `make test` runs
# the test suite, `make bench` measures it. All install what is missing first (as root).
# `make docs` builds the docs site (docs/, mkdocs.yml) into site/.
VENV ?= .venv
# The Salt line of .venv (make test, demo, bench): the newest supported one.
# Its exact versions: constraints/salt-$(SALT_LINE).txt.
SALT_LINE ?= 3008
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python

.PHONY: bootstrap demo sandbox sandbox-down test test-unit test-matrix test-lines chaos lint config-reference docs-pages docs bench bench-model clean

bootstrap: $(VENV)/.installed
	@./scripts/bootstrap-system.sh

$(VENV)/.installed: pyproject.toml constraints/salt-$(SALT_LINE).txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints/salt-$(SALT_LINE).txt -e '.[test]'
	@touch $@

demo: bootstrap
	$(PY) -m sandbox demo

sandbox: bootstrap
	$(PY) -m sandbox up

sandbox-down:
	@if [ -x $(PY) ]; then $(PY) -m sandbox down; fi

# Two workers (pytest-xdist), whole files each, handed out in the order
# tests/conftest.py sorts them (longest first): every integration worker starts
# a lab of its own (tests/integration/conftest.py, lab_slot); TEST_WORKERS=0 runs
# everything in one process.
TEST_WORKERS ?= 2
test: bootstrap
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) tests

test-unit: bootstrap
	$(PY) -m pytest tests/unit tests/functional

# The Salt matrix (noxfile.py): unit and functional tiers on Salt 3006, 3007 and
# 3008, each in its own virtualenv (.nox/) on the Python its onedir ships, and
# every tier on the oldest and the newest line. The Pythons: python3.10 and
# python3.11 on PATH, or pyenv's (/root/.pyenv/versions).
empty :=
space := $(empty) $(empty)
PYENV_BINS := $(subst $(space),:,$(wildcard $(HOME)/.pyenv/versions/3.10.*/bin $(HOME)/.pyenv/versions/3.11.*/bin))
NOX := PATH="$(PATH):$(PYENV_BINS)" $(VENV)/bin/nox
test-matrix: bootstrap
	$(NOX) -s tests integration
# What CI adds to `make test`: the unit and functional tiers on the older lines.
test-lines: $(VENV)/.installed
	$(NOX) -s "tests(3006)" "tests(3007)"

# The chaos suite (tests/integration/test_chaos.py): CHAOS_ROUNDS rollouts on two
# masters sharing etcd, a fault injected into each, the invariants checked after
# each; the figures go to CHAOS_RESULTS (docs/ha.md). CI runs a few rounds.
CHAOS_ROUNDS ?= 100
CHAOS_RESULTS ?= bench/chaos.json
chaos: bootstrap
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) CHAOS_RESULTS=$(CHAOS_RESULTS) $(PY) -m pytest -m chaos -s \
		tests/integration/test_chaos.py

# Static checks (ruff; rules in pyproject.toml): needs only the virtualenv.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Rewrite the docs' configuration table (docs/configuration.md) and
# salt/saltcd/defaults.yaml from the table in saltcd/config/__init__.py (a unit test
# fails when they differ).
config-reference: $(VENV)/.installed
	$(PY) -m saltcd.config.reference .

# Rewrite both generated docs pages: the configuration reference, and the
# figure tables and picture of docs/performance.md from bench/results.json and
# bench/results.svg (tests/unit/test_docs_pages.py fails when they differ).
docs-pages: config-reference
	$(PY) -m bench.pages .

# The docs site, from docs/ (mkdocs.yml) into site/: --strict fails on any
# warning (a broken link or anchor, a page not in the nav). Installs the `docs`
# extra (MkDocs, Material) when MkDocs is missing. NO_MKDOCS_2_WARNING: Material
# otherwise prints a notice about its own future on every build.
docs: $(VENV)/.installed
	@$(VENV)/bin/mkdocs --version >/dev/null 2>&1 || $(VENV)/bin/pip install -q -c constraints/salt-$(SALT_LINE).txt -e '.[test,docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Benchmarks on the sandbox (started and stopped here unless it is already up),
# and the picture bench/results.svg (matplotlib: the `bench` extra); then the
# figure tables and picture of docs/performance.md from them (bench/pages.py).
# QUICK=1: one round of each scenario; FULL=1: the whole realistic-image matrix;
# SANDBOX_DEV=30: a 30-minion dev fleet (for the fleet scenario).
bench: bootstrap
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[test,bench]'
	$(PY) -m bench $(if $(QUICK),--quick) $(if $(FULL),--full)
	$(PY) -m bench.pages .

# The cost model (bench/model.py; docs/performance.md): the fleet scenario on a
# 60-minion sandbox (about 10 GB of memory; a sandbox already up is used as it
# is, with the fleet sizes it has), fitted and extrapolated to 1,000 minions;
# only `model` goes into bench/results.json, and bench/model.svg.
bench-model: bootstrap
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[test,bench]'
	SANDBOX_DEV=60 $(PY) -m bench --model
	$(PY) -m bench.pages .

clean: sandbox-down
	rm -rf $(VENV) *.egg-info site
