# The two commands a newcomer needs: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/ml-100k
MODEL ?= artifacts/rlm-small
PROMPTS ?= artifacts/prompts/sequential.json
RPP_PROMPTS ?= artifacts/prompts/rpp.json
SOFT_PROMPTS ?= artifacts/prompts/soft.json
STAMP := $(VENV)/.installed

.PHONY: run test setup lint typecheck data train eval bench-quality bench-paprec bench-serve bench-worker bench-faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on disk, never a multi-GB CUDA download.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/promptrec data fetch --out $(DATA)

HOST ?= 127.0.0.1
PORT ?= 8000

# The shipped model is reused (trained only if missing); the dataset is loaded into the database
# (embedded SQLite unless PROMPTREC_DATABASE_URL is set; loading is idempotent); then the prompts
# of the active strategy: the PAP-REC set, the RPP choices with PROMPTREC_STRATEGY=rpp, or the soft
# set with PROMPTREC_STRATEGY=soft; then the API.
run: data
	test -f $(MODEL)/model.safetensors || $(BIN)/promptrec train --preset small --data $(DATA) --out $(MODEL)
	$(BIN)/promptrec db upgrade
	$(BIN)/promptrec db load-dataset --data $(DATA)
	$(BIN)/promptrec db load-prompts $(if $(filter rpp,$(PROMPTREC_STRATEGY)),$(RPP_PROMPTS),$(if $(filter soft,$(PROMPTREC_STRATEGY)),$(SOFT_PROMPTS),$(PROMPTS)))
	@echo "PromptRec API on http://$(HOST):$(PORT)  (docs: http://$(HOST):$(PORT)/docs)"
	@echo "try: curl -s -X POST http://$(HOST):$(PORT)/v1/users/1/recommendations -H 'content-type: application/json' -d '{\"task\": \"sequential\", \"count\": 10}'"
	$(BIN)/promptrec serve --host $(HOST) --port $(PORT) --model $(MODEL)

test: lint typecheck
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow the editable install's import hook, so it reads the folders through a
# promptrec/ tree of links (the names they are installed under).
MYPY_TREE := .mypy_tree
typecheck: setup
	mkdir -p $(MYPY_TREE)/promptrec
	for d in models core service worker cli; do ln -sfn ../../$$d $(MYPY_TREE)/promptrec/$$d; done
	MYPYPATH=$(MYPY_TREE) $(BIN)/mypy -p promptrec.models -p promptrec.core -p promptrec.service \
		-p promptrec.worker -p promptrec.cli

train: data
	$(BIN)/promptrec train --preset small --data $(DATA) --out $(MODEL)

eval: data
	$(BIN)/promptrec eval --model $(MODEL) --data $(DATA) --sensitivity --speed

# Writes bench/results/rlm_quality.json (RLM vs baselines, cold stream, sensitivity, ranking
# speed). SEED_MODELS: the same recipe trained with other seeds (promptrec train --seed N --out D).
SEED_MODELS ?=
bench-quality: data
	$(BIN)/python -m bench.rlm_quality --model $(MODEL) --data $(DATA) \
		--seed-models $(SEED_MODELS) --out bench/results/rlm_quality.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache $(MYPY_TREE)

# Writes bench/results/serve.json: a real uvicorn process under load at concurrency 1-128.
bench-serve: data
	$(BIN)/python -m bench.serve_load --out bench/results/serve.json

# Writes bench/results/worker.json: cold users replayed through API -> Redis -> worker -> Postgres
# (needs the local Postgres and Redis, as the tests do).
bench-worker: data
	$(BIN)/python -m bench.worker --out bench/results/worker.json

# Writes bench/results/paprec.json (runs or resumes the prompt search into artifacts/prompts/).
bench-paprec: data
	$(BIN)/python -m bench.paprec --model $(MODEL) --data $(DATA) --out bench/results/paprec.json

# Writes bench/results/faults.json: the production topology (private Postgres and Redis, API, two
# workers) under client load, with each fault injected in turn (needs the Postgres server binaries
# and redis-server, as the worker tests do).
bench-faults: data
	$(BIN)/python -m bench.faults --out bench/results/faults.json
