# lossbench: `make demo` runs the demo sweep and compares its runs; `make test` runs the tests.
# Both create .venv and install (pinned by constraints.txt) when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the tests also cover the optional extras: Ray and SLURM launchers, team server, browser
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install demo test system-deps lint format ui team-server bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,ray,slurm,team,browser]'
	touch $(TEST_STAMP)

install: $(STAMP)  ## create .venv and install lossbench with pinned dependencies

demo: $(STAMP)  ## the demo sweep into ./mlruns, then a comparison of its runs
	$(BIN)/lossbench-train experiment=demo
	$(BIN)/lossbench-report --experiment demo
	@echo
	@echo "Browse every run in the MLflow UI:  make ui   (then open http://127.0.0.1:5000)"
	@echo "(the demo sweep's run page, sweep-..., shows the table above as its description)"

test: $(TEST_STAMP) lint  ## lint, then the whole test suite (slow tests included)
	$(BIN)/python -m pytest

# Debian packages for the team-server, browser and SLURM tests (they skip, saying why, without
# them; under CI=true they fail). Fails when it cannot install them.
system-deps:
	@bash scripts/system_deps.sh postgresql chromium slurmctld slurmd slurm-client munge

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

ui: $(STAMP)  ## the MLflow UI on the local store, bound to 127.0.0.1 only
	$(BIN)/lossbench-ui

team-server: $(STAMP)  ## MLflow server on PostgreSQL at 127.0.0.1:5001 (make system-deps first)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[team]'
	$(BIN)/python scripts/team_server.py --dir .team --port 5001

bench: $(STAMP)  ## the standard 300-run workload against naive references (see README)
	$(BIN)/python scripts/bench_sweep.py

constraints: $(TEST_STAMP)
	( echo "# Exact versions of every dependency; every install uses this file (make install)."; \
	  echo "# Regenerate after changing pyproject.toml: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' ) > constraints.txt

clean:
	rm -rf $(VENV) multirun outputs .pytest_cache .ruff_cache
