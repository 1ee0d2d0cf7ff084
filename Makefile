# CXM: `make run` starts the mesh on this machine, `make test` runs every test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint fmt system-deps bench clean compose-config screenshots

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)  ## create the venv, install, start the ten agents and the lab
	$(VENV)/bin/cxm up

system-deps:  ## apt packages the tests use: postgresql, alertmanager, chromium, docker-compose
	@scripts/install-system-deps.sh

test: $(STAMP) system-deps  ## everything, on real servers where a user would have them
	# loadscope: a module's tests share one worker, so a module-scoped mesh (e2e, sweep) starts
	# once; tests/conftest.py makes every e2e module one scope, run first, on one worker.
	# (pytest 9 keeps node ids in Node._id, so xdist's loadgroup suffix no longer groups.)
	$(PY) -m pytest -q -n 2 --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP) system-deps  ## every benchmark, each printing JSON
	$(PY) -m bench.correlator_vs_alertmanager
	$(PY) -m bench.closed_loop
	$(PY) -m bench.orchestrator_scale
	$(PY) -m bench.sweep
	$(PY) -m bench.runbook_sessions
	$(PY) -m bench.fuzz

compose-config: system-deps
	docker-compose -f deploy/docker-compose.yml config -q

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

screenshots: $(STAMP) system-deps  ## refresh docs/screenshots/ from the browser tests
	CXM_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/io/test_console_browser.py tests/io/test_console_runbooks_browser.py tests/io/test_console_proactive_browser.py
