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

.PHONY: install setup demo test unit integration typecheck bench bench-engine bench-quix bench-e2e up down status clean

$(STAMP): pyproject.toml setup.py workers/features/_resp.c workers/pipeline/_scan.c
	@command -v $(PY) >/dev/null || { echo "need $(PY) (3.11+)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP)

# The Quix Streams peer of `bench e2e`: Quix pins confluent-kafka < 2.13 (ours is newer), so it gets
# its own virtualenv, layered over .venv for streamscore's modules (a .pth adds .venv's packages
# after its own, so Quix's pins win there and nowhere else).
QUIX_VENV  := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed-stamp
$(QUIX_STAMP): $(STAMP) workers/bench/peers/quix-requirements.txt
	$(PY) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install -q -r workers/bench/peers/quix-requirements.txt
	$(QUIX_VENV)/bin/python -c "import site, sysconfig, pathlib; p = pathlib.Path(sysconfig.get_paths()['purelib']) / 'zz_streamscore_main_venv.pth'; p.write_text('import site; site.addsitedir(' + repr(str(pathlib.Path('$(VENV)').resolve() / pathlib.Path(sysconfig.get_paths()['purelib']).relative_to(pathlib.Path('$(QUIX_VENV)').resolve()))) + ')\n')"
	@touch $(QUIX_STAMP)

bench-quix: $(QUIX_STAMP)

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

test: install bench-quix typecheck
	$(BIN)/python -m pytest tests -q

# `bench features` needs Redis with Feast data (setup); `bench engine` needs neither broker nor Redis.
bench: setup
	$(BIN)/streamscore bench features --topology $(TOPOLOGY) --json bench-results/features.json
	$(BIN)/streamscore bench engine --source synthetic --json bench-results/engine.json

# The end-to-end benchmark (README "End-to-end benchmark"); needs both examples set up.
bench-e2e: install bench-quix
	$(BIN)/streamscore setup --topology topologies/fraud.yaml
	$(BIN)/streamscore setup --topology topologies/ato.yaml
	$(BIN)/streamscore bench e2e --json bench-results/e2e.json --plots bench-results/e2e

bench-engine: install
	$(BIN)/streamscore bench engine --source synthetic --json bench-results/engine.json

up: install
	$(BIN)/streamscore dev up --topology $(TOPOLOGY)
down:
	$(BIN)/streamscore dev down
status:
	$(BIN)/streamscore dev status

clean: down
	rm -rf .streamscore $(VENV) $(QUIX_VENV) feature_repo/data/*.parquet feature_repo/data/registry.db
