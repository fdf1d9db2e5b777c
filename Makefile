# streamscore — the two commands: `make demo` and `make test`. Everything else is set up by them.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# `make demo EXAMPLE=ato` runs the account-takeover pipeline (topologies/ato.yaml) instead of fraud.
EXAMPLE ?= fraud
TOPOLOGY ?= topologies/$(EXAMPLE).yaml
COUNT   ?= 20000
RATE    ?= 2000

.PHONY: install setup demo test unit integration typecheck bench bench-engine up down status clean

$(STAMP): pyproject.toml setup.py workers/features/_resp.c
	@command -v $(PY) >/dev/null || { echo "need $(PY) (3.11+)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Kafka + Redis up, topics created, Feast apply + materialize.
setup: install
	$(BIN)/streamscore setup --topology $(TOPOLOGY)

demo: setup
	$(BIN)/streamscore demo --topology $(TOPOLOGY) --count $(COUNT) --rate $(RATE) --json .streamscore/demo-summary.json

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit -q

# Integration tests start the local stack themselves (tests/integration/conftest.py).
integration: install
	$(BIN)/python -m pytest tests/integration -q

test: install typecheck
	$(BIN)/python -m pytest tests -q

# `bench features` needs Redis with Feast data (setup); `bench engine` needs neither broker nor Redis.
bench: setup
	$(BIN)/streamscore bench features --topology $(TOPOLOGY) --json bench-results/features.json
	$(BIN)/streamscore bench engine --source synthetic --json bench-results/engine.json

bench-engine: install
	$(BIN)/streamscore bench engine --source synthetic --json bench-results/engine.json

up: install
	$(BIN)/streamscore dev up --topology $(TOPOLOGY)
down:
	$(BIN)/streamscore dev down
status:
	$(BIN)/streamscore dev status

clean: down
	rm -rf .streamscore $(VENV) feature_repo/data/*.parquet feature_repo/data/registry.db
