# Two commands (README "Quick start"): `make demo` and `make test`.
# Each sets up .venv first (tools/install.sh; a no-op when up to date).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo

install:
	@VENV=$(VENV) bash tools/install.sh

test: install
	@$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=20 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; \
	exit $$rc

demo: install
	@$(PY) tools/demo.py
