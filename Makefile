# The two commands of the README: `make demo` and `make test`. Both create .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: a CPU wheel lies on the machines' disk; an unpinned torch pulls a CUDA build.
TORCH := torch==2.13.0
DEMO := demo_out
SHARED := ../shared/data
export EVOREC_SECRET_FILE ?= $(CURDIR)/$(DEMO)/secret.key

.PHONY: demo test venv venv-test venv-policy lint clean image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[report]'  # the demo ends with `evorec report`
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The static policy check of deploy/k8s (tests/deploy/test_k8s.py): checkov in an environment of its
# own, because its pins (networkx<2.7, packaging 23.2, ...) would downgrade what torch uses.
POLICY_VENV := .venv-policy
CHECKOV := checkov==3.3.30
$(POLICY_VENV)/.installed:
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet --upgrade pip
	$(POLICY_VENV)/bin/pip install --quiet '$(CHECKOV)'
	touch $@

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test
venv-policy: $(POLICY_VENV)/.installed

# The main job, end to end: simulated data and (when ../shared/data is there) a real Taobao log
# through ingest -> clean -> sequences -> splits, then 60 s of SASRec on Amazon Beauty + its test metrics,
# an interest-forecast backtest on the simulator, and an HTML report of both (demo_out/report/index.html).
demo: venv
	@mkdir -p $(DEMO)
	rm -rf $(DEMO)/store.duckdb $(DEMO)/runs $(DEMO)/sim_prepared $(DEMO)/taobao_prepared
	$(BIN)/evorec data simulate --users 2000 --days 365 --seed 7 --out $(DEMO)/sim.parquet
	$(BIN)/evorec data ingest $(DEMO)/sim.parquet --format parquet --option items=$(DEMO)/sim.items.parquet --store $(DEMO)/store.duckdb --dataset sim
	$(BIN)/evorec data prepare --store $(DEMO)/store.duckdb --dataset sim --config configs/prepare/simulated.yaml --out $(DEMO)/sim_prepared
	$(BIN)/evorec data describe --store $(DEMO)/store.duckdb --dataset sim
	@if [ -d $(SHARED)/taobao_userbehavior_head84k ]; then \
	  $(BIN)/evorec data ingest $(SHARED)/taobao_userbehavior_head84k/UserBehavior_head.csv --format taobao --store $(DEMO)/store.duckdb --dataset taobao && \
	  $(BIN)/evorec data prepare --store $(DEMO)/store.duckdb --dataset taobao --config configs/prepare/taobao.yaml --out $(DEMO)/taobao_prepared && \
	  $(BIN)/evorec data describe --store $(DEMO)/store.duckdb --dataset taobao; \
	else echo "$(SHARED) not found: skipping the Taobao part of the demo"; fi
	@if [ -d $(SHARED)/amazon_s3rec_seq ]; then \
	  $(BIN)/evorec train --config configs/beauty/sasrec-best.yaml --out $(DEMO)/runs/sasrec --time-budget 60 && \
	  $(BIN)/evorec evaluate $(DEMO)/runs/sasrec; \
	else echo "$(SHARED) not found: skipping the training part of the demo"; fi
	$(BIN)/evorec forecast backtest --config configs/forecast/simulated.yaml --set simulate.users=800 --set forecast.model.epochs=8 --out $(DEMO)/runs/forecast-sim
	$(BIN)/evorec report $$(ls -d $(DEMO)/runs/sasrec 2>/dev/null) $(DEMO)/runs/forecast-sim --out $(DEMO)/report --users-sample 6
	@echo "demo outputs in $(DEMO)/; open the report: $(DEMO)/report/index.html"

# The linter (ruff, rules in pyproject.toml) and the layer contracts (import-linter); make test runs both.
lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: venv-test venv-policy
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	EVOREC_CHECKOV=$(CURDIR)/$(POLICY_VENV)/bin/checkov $(BIN)/python -m pytest -q

# The container image built with Podman and checked running: serves a run, takes events, forgets a
# user, non-root on a read-only root file system, no secret in any layer (deploy/image/image_test.py;
# Debian base built with mmdebstrap and cached in .image-build/). The torch CPU wheel on the machines'
# disk is used when present (else the CPU index): TORCH_WHEEL=path/to/torch-...whl to choose another.
TORCH_WHEEL ?= /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
image-test: venv-test
	$(BIN)/python deploy/image/image_test.py --torch-wheel $(TORCH_WHEEL)

clean:
	rm -rf $(DEMO) .pytest_cache
