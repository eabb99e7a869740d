# ATOM: `make run` starts the app, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test unit lint bench browser clean

$(VENV)/.app: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing ATOM's requirements into $(VENV) (first run only)..."
	@$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.app requirements-dev.txt
	@echo "Installing test requirements into $(VENV) (first run only)..."
	@$(PIP) install -r requirements-dev.txt
	@touch $@

run: $(VENV)/.app
	$(PY) -m streamlit run app.py

# Debian's chromium for the browser tests; installed when missing and we may use apt.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "NOTE: chromium is missing and cannot be installed here: browser tests will be SKIPPED."; \
	  fi; }

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: $(VENV)/.dev
	$(VENV)/bin/pytest tests/unit -q

test: $(VENV)/.dev browser lint
	$(VENV)/bin/pytest -q

bench: $(VENV)/.dev
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
