# rmmwatch: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/*.txt | sha1sum | cut -c1-12)
SERVICES := scripts/services/all.sh
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: help install run test test-unit lint lint-python lint-deploy format bench bench-core bench-kafka bench-redis bench-eventhub services-start services-stop clean lock bench-compare image

help:  ## show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/runtime.txt requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)  ## create .venv with the pinned dependencies

run: $(STAMP)  ## the detector on the built-in synthetic stream: SQLite state in ./data, alerts on stdout, metrics on :9464
	$(BIN)/rmmwatch run --source synthetic --store sqlite --data-dir ./data --sink stdout \
	  --metrics-port $${RMMWATCH_METRICS_PORT:-9464} --log-format console $(RUN_ARGS)

lint: lint-python lint-deploy  ## everything below

lint-python: $(STAMP)  ## ruff (lint + format check) and mypy --strict on service/
	$(BIN)/ruff check service tests load scripts
	$(BIN)/ruff format --check service tests load scripts
	$(BIN)/mypy

lint-deploy: $(STAMP)  ## hadolint + a replay of the image's steps; helm lint/template, kube-score, yamllint, kube-apiserver dry run
	PATH="$$(scripts/tools/install.sh | tail -n 1):$$PATH" scripts/check_dockerfile.sh
	PATH="$$(scripts/tools/install.sh | tail -n 1):$$PATH" scripts/check_chart.sh

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix service tests load
	$(BIN)/ruff format service tests load

test-unit: $(STAMP)  ## the tests that need no services
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

test: $(STAMP) lint  ## lint, build the image, start the real services on 127.0.0.1, run every test, stop the services
	@trap '$(SERVICES) stop >/dev/null 2>&1 || true' EXIT; \
	  export RMMWATCH_TEST_IMAGE="$$(scripts/image/build.sh rmmwatch:test)"; \
	  $(SERVICES) start; \
	  set -a; source .services/env; set +a; \
	  RMMWATCH_REQUIRE_SERVICES=1 $(BIN)/pytest $(PYTEST_ARGS)

image:  ## build the Dockerfile: docker build where an engine answers, else buildah (a stand-in base when none can be pulled)
	scripts/image/build.sh

bench-core: $(STAMP)  ## decode+match hot path on one core (records/s, MB/s)
	$(BIN)/python -m load.bench_core

bench-kafka: $(STAMP)  ## rmmwatch vs a bare aiokafka consumer on the real broker (starts and stops the services)
	@trap '$(SERVICES) stop >/dev/null 2>&1 || true' EXIT; \
	  $(SERVICES) start; set -a; source .services/env; set +a; \
	  $(BIN)/python -m load.bench_kafka

bench-redis: $(STAMP)  ## the Redis store: matched events/s, memory per event, 1 vs 2 processes
	@trap '$(SERVICES) stop >/dev/null 2>&1 || true' EXIT; \
	  $(SERVICES) start; set -a; source .services/env; set +a; \
	  $(BIN)/python -m load.bench_redis

bench-eventhub: $(STAMP)  ## the AMQP source against the test endpoint vs the Kafka source (starts the services)
	@trap '$(SERVICES) stop >/dev/null 2>&1 || true' EXIT; \
	  $(SERVICES) start; set -a; source .services/env; set +a; \
	  $(BIN)/python -m load.bench_eventhub

bench-compare: $(STAMP)  ## rmmwatch vs kcat, confluent-kafka, aiokafka, Quix, Faust; latency, scaling, RSS (~15 min)
	@trap '$(SERVICES) stop >/dev/null 2>&1 || true' EXIT; \
	  $(SERVICES) start; set -a; source .services/env; set +a; \
	  $(BIN)/python -m load.bench

bench: bench-core bench-kafka bench-redis bench-eventhub bench-compare  ## every benchmark

services-start:  ## start Kafka, Redis and Azurite on 127.0.0.1 (env in .services/env)
	$(SERVICES) start

services-stop:  ## stop them
	$(SERVICES) stop

lock:  ## regenerate requirements/*.txt from pyproject.toml
	PYTHON=$(PYTHON) scripts/lock.sh

clean:  ## remove the virtualenv, caches and local state
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis data .services
