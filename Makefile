# Two front doors: `make serve` runs the server, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint install clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

# The npm packages the tests use: SendGrid's Node.js client (HTTP API) and axe-core (the
# dashboard's accessibility check); npm registry, lock file pinned.
NODE_TEST := tests/node
$(NODE_TEST)/node_modules/.installed: $(NODE_TEST)/package-lock.json
	cd $(NODE_TEST) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/mailrelay serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# Debian's Chromium for the dashboard's browser tests (Playwright drives it by path; it cannot
# download its own browsers here). Installed when missing and we are root; otherwise the
# browser tests say how to install it and are skipped (CI sets MAILRELAY_TEST_REQUIRE_BROWSER=1).
BROWSER := $(VENV)/.browser
$(BROWSER): | $(BIN)/python
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	      || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)) \
	  || echo "chromium is not installed (as root: apt-get install chromium): browser tests will be skipped"; }
	touch $@

# Two test processes, one per core: most tests wait on sockets and subprocesses. A file's tests
# stay in one process (--dist loadfile) so its module fixtures start once. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test $(NODE_TEST)/node_modules/.installed $(BROWSER) lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache $(NODE_TEST)/node_modules

# Screenshots of the dashboard for docs/ (a real server on loopback, Chromium).
screenshots: $(VENV)/.installed-test $(BROWSER)
	$(BIN)/python docs/screenshots/take.py
