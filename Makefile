# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install system-deps run test unit e2e lint typecheck bench sim bench-latency clean bench-upload

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian packages some tests need (prometheus, shellcheck, systemd-analyze); installs if missing.
system-deps:
	bash scripts/system-deps.sh

# Style, formatting, the layering contracts of pyproject.toml ([tool.importlinter]) and types.
lint: $(STAMP) typecheck
	$(BIN)/ruff check common controller agent sandbox bench tests
	$(BIN)/ruff format --check common controller agent
	$(BIN)/lint-imports --no-cache

# mypy --strict on everything that ships (the strict overrides are in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy common controller agent

unit: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

e2e: system-deps $(STAMP)
	$(BIN)/pytest -q -m e2e

# Includes tests/e2e/test_runtime_install.py: the Dockerfile's build replayed without an engine,
# and its wheel installed with runtime dependencies only into a fresh virtualenv (both under
# pytest's temporary directory, once per run); the end-to-end checks run from those installs.
test: system-deps lint typecheck $(STAMP)
	$(BIN)/pytest -q

# sandbox/ and bench/ are not in the wheel: they run from the checkout (PYTHONPATH is the checkout).

# The whole system on this machine: AWS emulator, controller, agents, simulated Jibris, demand.
run: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m sandbox $(ARGS)

# One simulated day of demand under each autoscaling policy: table, out/sim.json, out/sim.png,
# and the learned schedule planner-schedule ran with, out/schedule.yaml.
sim: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.sim $(ARGS)

# The real controller under 1,000 and 10,000 reporting agents (in-process AWS fake): report
# latency, CPU, RSS, pass duration, AWS calls per pass, plan() time; table and out/bench.json.
bench: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.scale $(ARGS)

# The agent's uploader vs `aws s3 cp` (awscli in its own venv under out/bench-upload):
# throughput of one 256 MiB file against the emulator, as a table and out/bench-upload/result.json.
bench-upload: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.upload_throughput $(ARGS)

# Report that empties the pool → SetDesiredCapacity issued, against the AWS emulator: p50/p99,
# and every sample in out/bench-latency.json.
bench-latency: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.decision_latency $(ARGS)

clean:
	rm -rf $(VENV) dist .pytest_cache .mypy_cache .ruff_cache .hypothesis \
	    .import_linter_cache
