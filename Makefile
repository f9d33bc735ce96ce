# issue-bridge: the same commands locally, in pre-commit and in CI.  `make help` lists them.
# Prerequisites: make, Python >= 3.11 with venv (Debian/Ubuntu: apt-get install make python3-venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
PIP_INSTALL := $(PY) -m pip install --progress-bar on --disable-pip-version-check

.PHONY: help run test e2e lint typecheck format clean

help:  ## Show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(PY):
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "issue-bridge needs Python >= 3.11 (found $$(python3 --version 2>&1))" >&2; exit 1; }
	@python3 -m venv $(VENV) || \
	  { echo "python3 -m venv failed: install python3-venv (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }

# Runtime only (what `make run` needs): no test tools, no browser driver.
$(VENV)/.runtime: pyproject.toml | $(PY)
	@echo "==> installing issue-bridge and its runtime dependencies into $(VENV)"
	$(PIP_INSTALL) -e .
	touch $@

# Everything for development: the runtime plus the dev extras (pytest, ruff, mypy, playwright).
$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "==> installing issue-bridge with the dev extras into $(VENV)"
	$(PIP_INSTALL) -e '.[dev]'
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime  ## Start web + worker + beat on the embedded default (SQLite + private Redis)
	$(VENV)/bin/issue-bridge run

test: $(VENV)/.installed  ## Run the whole test suite (unit + end-to-end on real processes)
	$(PY) -m pytest $(PYTEST_ARGS)

e2e: $(VENV)/.installed  ## Only the end-to-end tests (real web, worker, beat, broker and a fake Zoho)
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

lint: $(VENV)/.installed  ## ruff lint, format check and mypy
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

typecheck: $(VENV)/.installed  ## mypy only
	$(VENV)/bin/mypy

format: $(VENV)/.installed  ## ruff format + autofix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:  ## Remove the virtualenv and local data (var/)
	rm -rf $(VENV) var
