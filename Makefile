# Every target does its own set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup sysdeps demo test test-slow lint typecheck bench clean train-lpr

sysdeps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing="$$missing fonts-noto-cjk"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	/sbin/ldconfig -p | grep -q 'libGL.so.1 ' || missing="$$missing libgl1"; \
	/sbin/ldconfig -p | grep -q 'libglib-2.0.so.0 ' || missing="$$missing libglib2.0-0"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

setup: sysdeps $(STAMP)

demo: setup
	$(VENV)/bin/parkedge-sim demo

# The whole suite except the runs marked slow (floods and soaks at full size, crash trials,
# booting systemd); each of those has a short version that runs here.
# A failed test is run once more (--reruns 1): the suite drives real brokers, databases and
# browsers on a shared 2-core machine, where a timing margin is sometimes missed. A test that
# passed only on its rerun is listed as RERUN in the summary; it is a bug to look at, not noise.
test: setup
	$(PY) -m pytest -q -m "not slow" -raR --reruns 1 --reruns-delay 2

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check edge hardware-sim tests bench central lpr_train
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/pricing.py
	$(PY) bench/lane_latency.py
	$(PY) bench/sync_drain.py
	$(PY) bench/lpr.py

# The plate recogniser (#15): synthetic plates only, fixed seed, one torch thread at the lowest
# priority (the machine is shared); writes edge/lpr/models/plate_crnn.onnx and its .json note.
# LPR_MINUTES=120 trains longer; LPR_RESUME=--resume continues from build/lpr_train/.
LPR_MINUTES ?= 40
LPR_SEED    ?= 15
train-lpr: setup
	$(PIP) install -q -e '.[train]'
	nice -n 19 $(PY) -m lpr_train.train --minutes $(LPR_MINUTES) --seed $(LPR_SEED) $(LPR_RESUME)
	$(PY) -m lpr_train.evaluate ../shared/lpr-data/cn_crops

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
