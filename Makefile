# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint install install-dev reliability benchmarks clean docs

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# pip byte-compiles what it installs, except an editable install's own sources: compile them, so
# `import ember` reads bytecode (also where PYTHONDONTWRITEBYTECODE keeps Python from caching it).
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet -e '.[all]'
	$(PY) -m compileall -q ember
	touch $@

$(DEV_STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	$(PY) -m compileall -q ember
	touch $(STAMP) $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/ember demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check ember tests benchmarks examples
	$(VENV)/bin/ruff format --check ember tests benchmarks examples

test: lint
	# One BLAS/OpenMP thread per test worker: two workers on two cores must not oversubscribe.
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --timeout 600

reliability: $(DEV_STAMP)
	$(PY) -m pytest -q tests/reliability --reliability-scale 10

clean:
	rm -rf $(VENV) runs build dist *.egg-info
