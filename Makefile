# ATOM: `make run` starts the app, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run demo test test-busy unit lint bench browser screenshots clean

$(VENV)/.app: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing ATOM's requirements into $(VENV) (first run only)..."
	@$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.app requirements-dev.txt
	@echo "Installing test requirements into $(VENV) (first run only)..."
	@$(PIP) install -r requirements-dev.txt
	@touch $@

# Uses the server at ATOM_SERVER_URL (default http://localhost:1234) if it answers; otherwise starts
# the bundled demo engine (installing it the first time) unless ATOM_DEMO=0. See atom_core/launch/demo.py.
# The app's URL comes within seconds; a first demo-engine build goes on in the background and the
# sidebar shows its progress. Ctrl+C stops everything and exits 0. ARGS go to `streamlit run`.
run: $(VENV)/.app
	@$(PY) -m atom_core.launch.demo run -- $(ARGS)

# The demo engine ahead of time (requirements-demo.txt into .venv-demo, the model into ~/.cache/atom):
# `make run` does this by itself when it needs it; CI does it so the real-engine tests run.
demo: $(VENV)/.app
	$(PY) -m atom_core.launch.demo install

# Debian's chromium for the browser tests; installed when missing and we may use apt.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "NOTE: chromium is missing and cannot be installed here: browser tests will be SKIPPED."; \
	  fi; }

# lint-imports: the import contracts in pyproject.toml (which room may import which)
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(VENV)/.dev
	$(VENV)/bin/pytest tests/unit -q

test: $(VENV)/.dev browser lint
	$(VENV)/bin/pytest -q

# The browser tests on a busy CPU, as on a laptop that runs its models: BUSY busy-loop processes
# (default one per core) for the whole session, RUNS times (`make test-busy RUNS=3`). Each run's
# summary gives the load average seen. A test that fails only here is a bug in the page or the test.
BUSY ?= $(shell nproc 2>/dev/null || echo 2)
RUNS ?= 1
test-busy: $(VENV)/.dev browser
	@fail=0; for i in $$(seq $(RUNS)); do \
	  echo "== tests/e2e with $(BUSY) busy processes, run $$i of $(RUNS)"; \
	  ATOM_E2E_BUSY=$(BUSY) $(VENV)/bin/pytest -q tests/e2e || fail=1; \
	done; exit $$fail

# Refreshes docs/screenshots/ (the README's pictures) from the browser tests, the demo engine's
# chat included (needs `make demo`); `make test` only writes test-output/e2e/.
screenshots: $(VENV)/.dev browser
	ATOM_UPDATE_SCREENSHOTS=1 $(VENV)/bin/pytest -q tests/e2e tests/engine/test_make_run_engine.py

bench: $(VENV)/.dev
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-demo .pytest_cache .mypy_cache .ruff_cache test-output
