# cityiot: set-up and everyday commands (docs/design.md §7). Works on a fresh Debian/Ubuntu clone:
# `make run` and `make test` install what is missing (OS packages, virtualenv) first.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
# Written after a successful install; pyproject.toml newer than it means "install again".
STAMP := $(VENV)/.installed
RUN_ARGS ?=
BENCH_ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist): most tests wait on brokers, InfluxDB and subprocesses, so
# four share two cores well. 0: one process. Tests are dealt one at a time to whichever worker
# is free (--dist loadgroup), each console browser test module whole to one (tests/conftest.py).
TEST_WORKERS ?= 4
# Debian keeps mosquitto and influxd in sbin, which a non-root PATH often lacks.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo sudo)

.PHONY: venv venv-run deps deps-run run test lint clean bench

# Two installs into one virtualenv: what running needs (`make run`), and that plus the test
# tools and the browser (`make test`, `make lint`, `make bench`).
RUN_STAMP := $(VENV)/.installed-run

venv: $(STAMP)
venv-run: $(RUN_STAMP)

define check_python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "cityiot needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1): run make PYTHON=python3.11" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
endef

$(STAMP): pyproject.toml | deps
	$(check_python)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml | deps-run
	$(check_python)
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

# OS packages, only when missing. Running: Mosquitto, InfluxDB (Debian's `influxdb`),
# python3-venv, a C compiler and Mosquitto's plugin headers for the broker's client-id plugin
# (cityiot/platform/broker_plugin). Testing adds Chromium and a Chinese font for the
# console's browser tests (tests/api/console). The platform starts its own broker and InfluxDB
# on free ports (cityiot/platform/local_services.py), so the system services the packages
# enable on install are not needed: those that this very install started are stopped and
# disabled again.
RUN_PACKAGES_CHECK = \
	command -v mosquitto >/dev/null || missing="$$missing mosquitto"; \
	command -v influxd >/dev/null || missing="$$missing influxdb"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	[ -e /usr/include/stdio.h ] || missing="$$missing libc6-dev"; \
	[ -e /usr/include/mosquitto_broker.h ] || missing="$$missing mosquitto-dev"; \
	[ -e /usr/include/mosquitto.h ] || missing="$$missing libmosquitto-dev"; \
	[ -x $(VENV)/bin/python ] || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv";
TEST_PACKAGES_CHECK = \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei";
INSTALL_MISSING = \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; then \
	    echo "missing OS packages:$$missing; install them as root: apt-get install$$missing" >&2; exit 1; \
	  fi; \
	  echo "installing OS packages:$$missing"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || exit 1; \
	  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
	    for pkg in $$missing; do case $$pkg in mosquitto|influxdb) \
	      $(SUDO) systemctl disable --now $$pkg >/dev/null 2>&1 || true;; esac; done; \
	  fi; \
	fi

deps-run:
	@missing=""; $(RUN_PACKAGES_CHECK) $(INSTALL_MISSING)

deps:
	@missing=""; $(RUN_PACKAGES_CHECK) $(TEST_PACKAGES_CHECK) $(INSTALL_MISSING)

run: deps-run venv-run
	$(VENV)/bin/cityiot run $(RUN_ARGS)

test: deps venv
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=40 $(PYTEST_ARGS)

# Throughput, CPU, memory and latency next to a bare subscriber and Node-RED (docs/benchmark.md).
# The benchmark lives outside the installed package: it runs from the checkout.
bench: deps venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# ruff, the floors (import-linter) and mypy, which reads the package as installed (the stage
# folders mapped under cityiot).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/packaging/test_layers.py
	site=$$(mktemp -d) && $(VENV)/bin/python -m tests.packaging.layout $$site >/dev/null && \
	  (cd $$site && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p cityiot); \
	  status=$$?; rm -rf $$site; exit $$status

clean:
	rm -rf .run
