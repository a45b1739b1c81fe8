# Quick start: `make demo` (set up + run the default pipeline), `make test` (set up + run the tests).
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup data browser clean-outputs

setup: $(STAMP)

# torch==2.14.1 / torchvision==0.29.1 are pinned in constraints.txt and come from this
# machine's wheel cache; nothing here lets pip pick another torch. The `test` extra brings the
# `faces` and `dvc` extras too, so the demo and the tests share one environment.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist is the default data; install it when apt can.
data:
	@if [ -e $(FMNIST) ]; then echo "Fashion-MNIST: found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST: apt-get not found; install dataset-fashion-mnist or set crawl.data_dir"; fi

# Debian's chromium renders the report page in tests/test_report.py; install it when apt can.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: found"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium: installing Debian's chromium (for the report page's test)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium \
	  || echo "chromium: could not be installed; tests/test_report.py's browser checks will be skipped"; \
	else echo "chromium: apt-get not found; tests/test_report.py's browser checks will be skipped"; fi

demo: setup data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@echo
	@echo "Done: the labelled synthetic dataset is in data/export (see data/export/README.md)."
	@echo "Samples: runs/train/samples/, data/generated/grid.png; metrics: '$(BIN)/dvc metrics show'."
	@echo "Report: open $$($(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["report"]["out"])')/index.html (one page, every image inline, no network needed)."

test: setup data browser
	$(BIN)/python -m pytest -q

clean-outputs:
	rm -rf data/raw data/crop data/generated data/export runs metrics  # data/import is the shipped crawl.root
