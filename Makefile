# Two commands matter on a fresh machine (see README "Quick start"):
#   make demo   - install into .venv and run the embedded demo (no server to install)
#   make test   - install into .venv (+ the test servers' system packages) and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(VENV)/bin/prefect-db-backup demo

system-deps:
	bash .ci/system-deps

test: $(STAMP) system-deps
	$(PY) -m pytest

# mypy checks the package under its import name: build/prefect_db_backup links to the repository root.
lint: $(STAMP)
	$(PY) -m ruff check .
	mkdir -p build && ln -sfn .. build/prefect_db_backup
	MYPYPATH=build $(PY) -m mypy -p prefect_db_backup

bench: $(STAMP)
	$(PY) bench/backup_vs_shell.py

clean:
	rm -rf $(VENV) build *.egg-info demo-data backups
