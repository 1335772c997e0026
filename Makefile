# The two commands of the README. Both build .venv from the lock file first, with every
# module's bytecode compiled at install: the editable install leaves src/ to compileall,
# which writes it even under PYTHONDONTWRITEBYTECODE=1, so no stage compiles from source.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: setup repro test test-fast bench clean plots-template

$(BIN)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (install Python 3.11 or run make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q src
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	touch $@

setup: $(BIN)/.installed

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/ruff format --check src tests bench && $(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache

# Rebuild .dvc/offline_plots.html (committed) from the pinned npm packages DVC's page names.
plots-template: setup
	cd $$(mktemp -d) && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null \
	  && $(CURDIR)/$(BIN)/python $(CURDIR)/tools/offline_plots_template.py vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz
