# saltcd: `make demo` shows the whole path on a local sandbox, `make test` runs
# the test suite, `make bench` measures it. All install what is missing first (as root).
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python

.PHONY: bootstrap demo sandbox sandbox-down test test-unit bench clean

bootstrap: $(VENV)/.installed
	@./scripts/bootstrap-system.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

demo: bootstrap
	$(PY) -m sandbox demo

sandbox: bootstrap
	$(PY) -m sandbox up

sandbox-down:
	@if [ -x $(PY) ]; then $(PY) -m sandbox down; fi

test: bootstrap
	$(PY) -m pytest tests

test-unit: bootstrap
	$(PY) -m pytest tests/unit tests/functional

# Benchmarks on the sandbox (started and stopped here unless it is already up).
bench: bootstrap
	$(PY) -m bench

clean: sandbox-down
	rm -rf $(VENV) *.egg-info
