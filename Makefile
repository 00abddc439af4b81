# Two entry points for a fresh machine: `make run` and `make test`.
# Both set everything up first (apt packages for headless OpenGL, a virtualenv, the project).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench mutation clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh $(VENV)
	touch $(STAMP)

# The main job on the built-in default. ARGS go to `unstable demo`, e.g.
# make run ARGS="--osc-port 9100 --web-port 9180" (a taken default port is swapped for a free one anyway).
run: setup
	$(VENV)/bin/unstable demo $(ARGS)

# Two workers: much of the suite waits on subprocesses, sockets and clocks, so two run in about
# half the time on two cores; tests that share machine-wide names stay together (tests/conftest.py).
test: setup
	$(PY) -m pytest -n 2 --dist loadgroup

bench: setup
	$(PY) tests/bench/bench_equilibrium.py
	$(PY) tests/bench/bench_live.py --seconds 30

# Mutation testing of the core modules (slow, minutes per module; not in CI). MODULES= narrows it,
# e.g. make mutation MODULES="walk guard". Review of the survivors: docs/mutation.md.
mutation: setup
	$(VENV)/bin/python -c "import mutmut" 2>/dev/null || $(VENV)/bin/python -m pip install "mutmut>=3.3,<4"
	VENV=$(VENV) ./scripts/mutation.sh $(MODULES)

clean:
	rm -rf $(VENV) runs
