# Two commands on a fresh machine: `make demo` (install + materialize the whole graph) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= demo

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export VIDEODIT_PROJECT_DIR := $(CURDIR)
export VIDEODIT_PRESET := $(PRESET)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DAGSTER := $(BIN)/dagster
DG := $(BIN)/dg  # reads [tool.dg] in pyproject.toml: src/dagster_project/definitions.py loads defs/

.PHONY: install demo test dev check mlflow serve ingest conditioning-examples clean up down status

# torch first: the pinned release resolves to the CPU build here (and the CUDA build on GPU hosts),
# so the bare `torch` requirement below never pulls a second, multi-GB build.
# antlr4 last: DVC (via hydra/omegaconf) pins the 4.9 runtime, Dagster's asset-selection parser
# needs 4.13 (dagster issue 27487); DVC's add/push/status run fine on 4.13 (tests/test_install.py).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,stack]'  # stack: infra/ (make up) and tests/test_stack.py
	$(BIN)/pip install --quiet antlr4-python3-runtime==4.13.2
	mkdir -p $(DAGSTER_HOME)
	$(DAGSTER) instance migrate >/dev/null  # create the instance's storage once, before two runs could race to
	touch $@

install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

# STACK=prod: the graph on the production stack of `make up` (run queue, daemon, PostgreSQL, MLflow server, S3).
demo: install
ifeq ($(STACK),prod)
	$(STACK_PY) demo --job full_pipeline
	@echo "MLflow: the server of 'make up' (make status); the stack's environment: $(BIN)/python infra/stack.py env"
else
	$(DG) launch --assets '*'
	@echo
	@echo "Done. Look at:"
	@echo "  Dagster UI:        make dev     → http://127.0.0.1:3000"
	@echo "  MLflow UI:         make mlflow  → http://127.0.0.1:5000 (runs, registry: videodit-vae, videodit-dit, videodit-onnx)"
	@echo "  Generated samples: artifacts/generated_videos/contact_sheet.png and *.mp4"
	@echo "  Evaluation:        artifacts/model_evaluation/evaluation.json"
	@echo "  Data Docs (GX):    great_expectations/uncommitted/data_docs/local_site/index.html"
	@echo "  Generate more:     $(BIN)/videodit generate \"a large red circle moves left\" -o out.mp4"
endif

# A worker per core (at most 4), each kept to its own cores, a module per worker at a time, the longest first
# (tests/conftest.py).
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

dev: install
	$(DG) dev --host 127.0.0.1 --port 3000  # code location "videodit"

check: install
	$(DG) check defs

mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db -h 127.0.0.1 -p 5000

# The ONNX champion (served_bundle's choice, int8 or fp32) over REST: POST {"inputs": ["a red circle moves left"],
# "params": {"seed": 0}} to http://127.0.0.1:$(SERVE_PORT)/invocations answers {"predictions": uint8 videos
# [B, T, H, W, 3]} as nested arrays; "params": {"seed": 0, "encoding": "mp4"} answers one base64 MP4 string per
# prompt instead (videodit/generation/rest.py reads both back).
SERVE_PORT ?= 5001
serve: install
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} $(BIN)/mlflow models serve \
	  -m models:/videodit-onnx@champion --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

# make ingest SOURCE=/path/to/videos [CAPTIONS=/path/to/captions.csv]
ingest: install
	@test -n "$(SOURCE)" || (echo "usage: make ingest SOURCE=/path/to/videos [CAPTIONS=file]"; exit 2)
	$(DG) launch --assets 'raw_videos*' --config-json \
	  '{"ops": {"raw_videos": {"config": {"source_dir": "$(abspath $(SOURCE))"$(if $(CAPTIONS),$(comma) "captions_file": "$(abspath $(CAPTIONS))")}}}}'

comma := ,

# The production stack on this host (infra/README.md): PostgreSQL (the machine's), SeaweedFS, MLflow server, Dagster
# daemon + webserver + code server, as processes with PIDs and logs under .stack/; ports and credentials from the
# environment (infra/stack.py). DAGSTER_HOME is the stack's own there, not .dagster_home/.
STACK_PY := env -u DAGSTER_HOME $(BIN)/python infra/stack.py

up: install
	$(STACK_PY) up

down:
	$(STACK_PY) down

status:
	$(STACK_PY) status

# The example conditioning folder conditioned_videos reads by default, redrawn from the built-in renderer.
conditioning-examples: install
	$(BIN)/python scripts/draw_conditioning_examples.py src/videodit/generation/examples

clean:
	rm -rf artifacts .dagster_home data great_expectations/uncommitted mlflow.db mlartifacts
