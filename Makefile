# Two commands for a fresh machine (see README.md):
#   make repro   environment + data + the whole DVC pipeline (dvc repro) + a short summary (basisn summary)
#   make test    environment + the test suite (slow end-to-end tests run their smoke profile)
# Everything runs inside .venv, installed from requirements.lock: every package, transitive ones included, at an
# exact version with its hashes (pip-compile from pyproject.toml; `make lock` regenerates it).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab settings shipped in jupyter/ (see jupyter/README.md), installed into the venv, not the user's home
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
SERVER_CONFIG := $(VENV)/etc/jupyter/jupyter_server_config.d/basisn.json
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_URL := http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/
PYTEST_ARGS ?=
LOCK := requirements.lock
PIP_TOOLS := pip-tools==7.7.0
LOCK_VENV := .venv-lock
# dvc.yaml's commands (basisn, jupytext, papermill) come from the venv, activated or not
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv check-env lock data repro test test-full lint lab archive clean-venv

help:
	@echo "make repro      create .venv, fetch Fashion-MNIST, run the DVC pipeline (dvc repro), print a summary"
	@echo "make test       create/reuse .venv and run the test suite (smoke profile of slow tests)"
	@echo "make test-full  the same with the slow end-to-end tests at full size"
	@echo "make lint       ruff check + format check"
	@echo "make lab        open JupyterLab on the repository (notebooks/*.py open as notebooks)"
	@echo "make lock       regenerate requirements.lock from pyproject.toml (UPGRADE=1: newest allowed versions)"
	@echo "make archive    a release tarball of HEAD with its checksums (dist/), for Zenodo or Software Heritage"

venv: $(STAMP) $(LAB_SETTINGS) $(SERVER_CONFIG) check-env

# Re-install when the lock changes. Every package comes from the lock with its hashes (--require-hashes), none
# resolved anew; the project itself goes in editable, without dependencies and with the lock's setuptools. The
# kernel is installed into the venv (--sys-prefix) under the name the DVC notebook stages pass to papermill
# (-k basisn), so nothing outside .venv is touched.
$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed (requirements.lock is for it), found {sys.version.split()[0]}: set PYTHON=python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name basisn --display-name "Python (basisn)" >/dev/null
	touch $(STAMP)

# The installed versions are the lock's, every time (a package upgraded by hand fails here with one line).
check-env: $(STAMP)
	@$(BIN)/python tools/check_lock.py $(LOCK)

# pip-compile keeps the versions already in the lock and resolves only what pyproject.toml changed; UPGRADE=1
# takes the newest versions pyproject.toml allows (then remake the references: ARTIFACT.md A.6). pip-tools runs in
# a venv of its own, so it is not part of the locked environment.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS); }
	$(LOCK_VENV)/bin/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) -o $(LOCK) pyproject.toml

$(LAB_SETTINGS): jupyter/lab/settings/overrides.json $(STAMP)
	install -D -m 644 $< $@

$(SERVER_CONFIG): jupyter/jupyter_server_config.json $(STAMP)
	install -D -m 644 $< $@

# Fashion-MNIST: a mirror (BASISN_DATA_MIRROR), else Debian's dataset-fashion-mnist (installed here when apt-get
# exists and the files are missing), else torchvision's download. `basisn data fetch` verifies every MD5.
data: venv
	@if [ -z "$$BASISN_DATA_MIRROR" ] && [ ! -d $(FASHION_MNIST_DEB_DIR) ] && command -v apt-get >/dev/null \
	    && ! $(PYTHON) -c "import urllib.request as u; u.urlopen('$(FASHION_MNIST_URL)', timeout=5)" 2>/dev/null; then \
	  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist (no mirror, no internet)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	    || echo "apt-get could not install dataset-fashion-mnist; basisn data fetch will try the other sources"; \
	fi
	$(BIN)/basisn data fetch

repro: data
	$(BIN)/dvc repro
	$(BIN)/basisn summary
	@$(BIN)/python tools/reference_diff.py

# The end-to-end tests need Fashion-MNIST in data/raw; without any source they are skipped (with the reason).
test: venv
	@$(MAKE) --no-print-directory data || echo "make test: no Fashion-MNIST source; the end-to-end tests will be skipped"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-full: venv
	@$(MAKE) --no-print-directory data
	BASISN_FULL_TESTS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: check-env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A release archive of HEAD (code, docs and the committed reference outputs: paper_figures/, CLAIMS.md, dvc.lock,
# outputs/*/metrics.json) as one tarball, with the SHA-256 of the tarball and of every file in it (ARTIFACT.md A.2).
# Data and models are not in it: `make repro` rebuilds them. HEAD only, so a dirty tree is refused, not half-packed.
ARCHIVE_DIR ?= dist
archive:
	@test -z "$$(git status --porcelain)" || { echo "make archive: the working tree has uncommitted changes; commit or stash them (the archive is HEAD)"; exit 2; }
	@mkdir -p $(ARCHIVE_DIR)
	@name=basisn-$$(git rev-parse --short=12 HEAD); \
	  git archive --format=tar.gz --prefix=$$name/ -o $(ARCHIVE_DIR)/$$name.tar.gz HEAD \
	  && git ls-files -z | xargs -0 sha256sum > $(ARCHIVE_DIR)/$$name.files.sha256 \
	  && (cd $(ARCHIVE_DIR) && sha256sum $$name.tar.gz > $$name.tar.gz.sha256) \
	  && echo "make archive: $(ARCHIVE_DIR)/$$name.tar.gz, its checksum $$name.tar.gz.sha256, every file's $$name.files.sha256"

# The repository root, so that notebooks/, outputs/ and paper_figures/ are all in the file browser.
lab: venv
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root)

clean-venv:
	rm -rf $(VENV)
