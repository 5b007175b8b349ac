# Two commands for a fresh machine: `make demo` (set up, build the demo, open the explorer) and
# `make test` (set up, run every test). `make setup` alone installs; a second run does nothing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 7860
APT_PACKAGES := espeak-ng sox libsox-fmt-all fluidsynth fluid-soundfont-gm timgm6mb-soundfont ktuberling-data klettres-data \
	hydrogen-drumkits sonic-pi-samples lmms-common wesnoth-1.16-data sound-theme-freedesktop tuxpaint-stamps-default scratch openttd-opensfx minetest-data widelands-data gcompris-qt-data simutrans-pak64 lugaru-data tuxfootball openclonk-data wordnet-base \
	chromium
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup apt demo test corpus clean

setup: apt $(STAMP)

# Debian packages (audio sources for the demo corpus, sox, espeak-ng, fluidsynth, chromium for browser
# tests): installed only when apt-get exists and some are missing.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "installing Debian packages: $$missing"; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "warning: apt-get not found; install these yourself: $$missing" >&2; fi; \
	fi

# torch==2.13.0 first: the CPU wheel (an unpinned torch would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray]'  # Ray: the tests run the Ray engine on a local cluster
	$(PY) -m pip install -q --no-deps aisfx==0.1.2  # sound-effects embedder; its declared pins are stale
	touch $(STAMP)

corpus: setup
	$(VENV)/bin/ard corpus build-demo --out data/demo

demo: setup
	$(PY) app.py --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) data/demo/speech data/demo/music data/demo/sound data/demo/heldout data/demo/reference data/demo/work data/demo/report data/demo/metadata.csv data/demo/.recipe.sha256 data/demo/*.duckdb data/demo/*.pairs data/demo_ci
