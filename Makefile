# recstream developer entry points. Every target installs what it needs first.
#   make demo   broker + worker + generated users; lists stream to the terminal (~1 min)
#   make test   every test tier against a real local Kafka broker started for the run
#   make lint   ruff + mypy
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
RS := $(BIN)/recstream
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q
DEMO_ARGS ?=
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# The test broker has its own ports (and so its own data dir), apart from a dev broker on 9092.
TEST_ENV := RECSTREAM_KAFKA_PORT=$${RECSTREAM_KAFKA_PORT:-19092} RECSTREAM_KAFKA_CONTROLLER_PORT=$${RECSTREAM_KAFKA_CONTROLLER_PORT:-19093}

.PHONY: install demo test test-unit lint typecheck kafka-start kafka-stop clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

kafka-start: install
	$(RS) kafka start

kafka-stop: install
	$(RS) kafka stop

demo: install
	$(RS) demo $(DEMO_ARGS)

test: install
	@set -u; started=0; rc=0; \
	if [ -z "$${RECSTREAM_BOOTSTRAP:-}" ]; then \
	  if ! $(TEST_ENV) $(RS) kafka status >/dev/null 2>&1; then \
	    $(TEST_ENV) $(RS) kafka start || exit 1; started=1; \
	  fi; \
	fi; \
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$started = 1 ]; then $(TEST_ENV) $(RS) kafka stop; fi; \
	exit $$rc

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

# mypy cannot follow setuptools' editable finder, so it checks a link tree shaped like the
# installed package (build/typecheck/recstream/...).
typecheck: install
	@rm -rf build/typecheck && mkdir -p build/typecheck/recstream
	@for f in cli/*.py; do ln -s ../../../$$f build/typecheck/recstream/; done
	@for d in streams agents models config evaluation; do ln -s ../../../$$d build/typecheck/recstream/$$d; done
	cd build/typecheck && ../../$(BIN)/mypy -p recstream

lint: install typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache
