# slogate: two commands do everything on a fresh machine.
#   make demo   - the whole story on a local control plane (no Docker needed)
#   make test   - lint, type checks and every test suite against real kube-apiserver and Prometheus
# Both install what they need: Debian packages, a Python venv, and Go-built binaries cached under
# ~/.cache/slogate (so only the first run builds them).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
APT_PACKAGES := prometheus prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=

.PHONY: test lint unit integration demo crds docs deps tools venv bench clean

test: deps venv tools lint
	SLOGATE_BIN_DIR="$$(tools/build.sh)" SLOGATE_CRD_DIR="$$(tools/crds.sh)" $(PY) -m pytest -p no:cacheprovider $(ARGS)

unit: venv
	$(PY) -m pytest -p no:cacheprovider tests/unit $(ARGS)

integration: deps venv tools
	SLOGATE_BIN_DIR="$$(tools/build.sh)" SLOGATE_CRD_DIR="$$(tools/crds.sh)" $(PY) -m pytest -p no:cacheprovider tests/integration $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: deps venv tools
	SLOGATE_BIN_DIR="$$(tools/build.sh)" $(PY) -m localenv.demo $(ARGS)

bench: deps venv tools
	SLOGATE_BIN_DIR="$$(tools/build.sh)" $(PY) -m bench.harness $(ARGS)

# Regenerate crds/ and docs/reference.md from the pydantic models (tests fail when stale).
crds: venv
	$(PY) -m slogate crds --out crds
	cp crds/*.yaml charts/slogate/crds/
	$(PY) -m slogate reference --out docs/reference.md

docs: crds

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

tools:
	@tools/build.sh >/dev/null
	@tools/crds.sh >/dev/null

clean:
	rm -rf $(VENV) build dist *.egg-info
