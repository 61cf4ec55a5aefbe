# The two commands of the README: `make book` and `make test`. Each does all the set-up on a fresh
# machine first (virtual environment, pinned packages, Fashion-MNIST, local MathJax) and is fast
# when that set-up is already done.  `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3.11
PROFILE ?= cpu
DEVICE ?= auto

VENV := .venv
PY := $(VENV)/bin/python
TORCHATTACKS := torchattacks==3.5.1
# Reinstall when pyproject.toml or the torchattacks pin changes (content, not mtime: a fresh clone
# has new mtimes but the same pins).
STAMP := $(VENV)/.rs-book-installed
INSTALL_KEY = $(shell { cat pyproject.toml; echo '$(TORCHATTACKS)'; } | sha256sum | cut -c1-16)

FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_FILE := $(FMNIST_DIR)/train-images-idx3-ubyte.gz

MATHJAX_VERSION := 3.2.2
MATHJAX_DIR := book/_static/mathjax
MATHJAX := $(MATHJAX_DIR)/tex-svg.js

CHROMIUM := /usr/bin/chromium

.PHONY: help setup venv data mathjax chromium test book clean

help:
	@echo "Robust deep learning reproducibility book. Targets:"
	@echo "  make book     set up, execute every notebook (papermill, PROFILE=$(PROFILE)) and build the site"
	@echo "                -> _build/html/index.html   (PROFILE=smoke|cpu|paper, DEVICE=auto|cpu|cuda)"
	@echo "                READ_ONLY=1: render from the store after a sweep, never train"
	@echo "  make test     set up, then run the whole test suite (notebooks in the smoke profile)"
	@echo "  make setup    .venv with the pinned packages, Fashion-MNIST, local MathJax (idempotent)"
	@echo "  make data     make Fashion-MNIST available offline"
	@echo "  make chromium Debian's chromium, for the browser check of the built site (tests/test_site.py)"
	@echo "  make mathjax  fetch MathJax $(MATHJAX_VERSION) (npm) into $(MATHJAX_DIR)/ so formulas render offline"
	@echo "  make clean    remove _build/ and book/executed/ (keeps results/ and .venv)"

setup: venv data mathjax chromium

venv:
	@if [ ! -x $(PY) ]; then \
	  command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install CPython 3.11 (or run make PYTHON=/path/to/python3.11)" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$(INSTALL_KEY)" ]; then \
	  echo "installing the pinned packages into $(VENV) (a fresh venv takes about 2 minutes, 6 GB)"; \
	  $(PY) -m pip install --quiet -e '.[test]'; \
	  $(PY) -m pip install --quiet --no-deps $(TORCHATTACKS); \
	  echo "$(INSTALL_KEY)" > $(STAMP); \
	else \
	  echo "$(VENV): pinned packages already installed"; \
	fi

# Fashion-MNIST: Debian's package where we are root with apt, else torchvision's download.
data: venv
	@if [ -f $(FMNIST_FILE) ]; then \
	  echo "Fashion-MNIST: found in $(FMNIST_DIR)"; exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Fashion-MNIST: apt-get install dataset-fashion-mnist"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
	    || true; \
	  if [ -f $(FMNIST_FILE) ]; then exit 0; fi; \
	fi; \
	echo "Fashion-MNIST: trying $(PY) -m rs_lib data --download fashion-mnist (torchvision)"; \
	if $(PY) -m rs_lib data --download fashion-mnist; then exit 0; fi; \
	echo "error: Fashion-MNIST is not available. Get it in one of these ways:" >&2; \
	echo "  - as root on Debian/Ubuntu: apt-get update && apt-get install dataset-fashion-mnist" >&2; \
	echo "    (puts the gzipped IDX files in $(FMNIST_DIR)/)" >&2; \
	echo "  - on a machine with network access: $(PY) -m rs_lib data --download fashion-mnist" >&2; \
	exit 1

# Chromium: Debian's package where we are root with apt (Playwright drives it with its
# executable_path; Playwright's own browser download does not work offline).
chromium:
	@if [ -x $(CHROMIUM) ]; then \
	  echo "Chromium: found at $(CHROMIUM)"; exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Chromium: apt-get install chromium"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	    || true; \
	  if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	fi; \
	echo "error: Chromium is not available at $(CHROMIUM); the browser check of the site needs it." >&2; \
	echo "  as root on Debian/Ubuntu: apt-get update && apt-get install chromium" >&2; \
	exit 1

mathjax: $(MATHJAX)

# tex-svg.js is self-contained (TeX input, SVG output with its fonts, the menu); the TeX extensions
# are the ones its autoloader fetches for commands such as \cancel or \color.
$(MATHJAX):
	@command -v npm >/dev/null || { \
	  echo "error: npm is needed once to fetch MathJax $(MATHJAX_VERSION) for offline formulas." >&2; \
	  echo "  install it (Debian: apt-get install npm), or put MathJax's es5/tex-svg.js at $(MATHJAX)" >&2; \
	  exit 1; }
	@echo "fetching MathJax $(MATHJAX_VERSION) with npm pack into $(MATHJAX_DIR)/"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	( cd "$$tmp" && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null ); \
	tar -xzf "$$tmp/mathjax-$(MATHJAX_VERSION).tgz" -C "$$tmp" \
	  package/LICENSE package/es5/tex-svg.js package/es5/input/tex/extensions; \
	mkdir -p $(MATHJAX_DIR)/input/tex; \
	rm -rf $(MATHJAX_DIR)/input/tex/extensions; \
	cp -r "$$tmp/package/es5/input/tex/extensions" $(MATHJAX_DIR)/input/tex/; \
	cp "$$tmp/package/LICENSE" $(MATHJAX_DIR)/LICENSE; \
	cp "$$tmp/package/es5/tex-svg.js" $(MATHJAX).tmp; \
	mv $(MATHJAX).tmp $(MATHJAX)

# Single process, one thread: two multi-threaded torch processes thrash each other (TOOLCHAIN.md).
test: setup
	RS_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/

# READ_ONLY=1: render from the store only (after `python -m rs_lib sweep`), never train.
book: setup
	$(PY) -m rs_lib book --profile $(PROFILE) --device $(DEVICE)$(if $(filter 1 yes true,$(READ_ONLY)), --read-only)

clean:
	rm -rf _build book/executed
