# Two entry points for a fresh machine: `make run` and `make test`.
# Both set everything up first (apt packages for headless OpenGL, a virtualenv, the project).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh $(VENV)
	touch $(STAMP)

# The main job on the built-in default.
run: setup
	$(VENV)/bin/unstable demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) tests/bench/bench_equilibrium.py
	$(PY) tests/bench/bench_live.py --seconds 30

clean:
	rm -rf $(VENV) runs
