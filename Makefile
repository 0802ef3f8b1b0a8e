# Slidewise: install, test, demo, package.
#   make install   Debian packages (QGIS, PyQGIS, GDAL), the engine environment, the plugin link
#   make test      everything above if missing, then the engine and plugin test suites
#   make demo      the main jobs through qgis_process on the data in tests/data
#   make package   the plugin zip (no tests, caches or dev files)
#   make wheelhouse  every wheel the engine needs, in $(WHEELHOUSE), for an offline "Set up engine"
#   make lint      ruff (lint + format check)

SHELL := /bin/bash
SYSTEM_PYTHON ?= /usr/bin/python3
ENGINE_ENV ?= $(HOME)/.local/share/slidewise/engine-venv
ENGINE_PY := $(ENGINE_ENV)/bin/python
# The CPU build on this kind of machine; use e.g. TORCH_SPEC="torch==2.13.0" with a CUDA index elsewhere.
TORCH_SPEC ?= torch==2.13.0
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
PLUGIN_LINK := $(QGIS_PROFILE)/python/plugins/slidewise
QGIS_PROCESS ?= qgis_process.bin
DEMO_OUT ?= $(CURDIR)/demo_output
APT_PACKAGES := qgis python3-qgis qgis-providers gdal-bin python3-venv python3-pytest \
  python3-pip xvfb xauth python3-pytestqt postgresql
# PostGIS (the inventory test's private server) for the PostgreSQL Debian ships: its package
# is named for the server's major version (postgresql-15-postgis-3 on Debian 12, -17- on 13).
POSTGIS_PACKAGE = $$(apt-cache depends postgresql | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$$/postgresql-\1-postgis-3/p' | head -n 1)
# make wheelhouse: where, with which Python (same version and OS as the offline machine),
# and torch's index (empty: pip's configuration; e.g. https://download.pytorch.org/whl/cu126).
WHEELHOUSE ?= $(CURDIR)/dist/wheelhouse
WHEELHOUSE_PYTHON ?= $(SYSTEM_PYTHON)
TORCH_INDEX ?=
PYTEST_ARGS ?=

export QT_QPA_PLATFORM ?= offscreen
export SLIDEWISE_PYTHON ?= $(ENGINE_PY)

.PHONY: install system-deps engine link test test-engine test-plugin demo package wheelhouse lint format typecheck bench clean

install: system-deps engine link

system-deps:
	@if command -v $(QGIS_PROCESS) >/dev/null && command -v xvfb-run >/dev/null && $(SYSTEM_PYTHON) -c "import qgis.core, pytest" 2>/dev/null \
	   && command -v gdaldem >/dev/null && $(SYSTEM_PYTHON) -c "import ensurepip" 2>/dev/null \
	   && ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then \
	  echo "system packages: present"; \
	else \
	  echo "system packages: installing $(APT_PACKAGES) and PostGIS"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$(POSTGIS_PACKAGE)"; \
	fi

engine: $(ENGINE_ENV)/.slidewise-installed

$(ENGINE_ENV)/.slidewise-installed: pyproject.toml
	test -x $(ENGINE_PY) || $(SYSTEM_PYTHON) -m venv $(ENGINE_ENV)
	$(ENGINE_PY) -m pip install -q "$(TORCH_SPEC)"
	# Name torch again so the resolver keeps it and picks the matching torchvision.
	$(ENGINE_PY) -m pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	$(ENGINE_PY) -c "from importlib.metadata import version as v; print('engine: torch', v('torch'), 'torchvision', v('torchvision'))"
	$(ENGINE_PY) -m slidewise.engine.cli jobs >/dev/null
	touch $@

link:
	mkdir -p $(dir $(PLUGIN_LINK))
	ln -sfn $(CURDIR) $(PLUGIN_LINK)
	$(QGIS_PROCESS) plugins enable slidewise >/dev/null 2>&1 || true
	@echo "plugin linked at $(PLUGIN_LINK) and enabled; engine Python: $(ENGINE_PY)"

test: install test-engine test-plugin

test-engine:
	@# The editable install may point at another checkout: point it at this one.
	@cd /tmp && $(ENGINE_PY) -c "import slidewise, sys; sys.exit(not slidewise.__file__.startswith('$(CURDIR)/'))" \
	  || $(ENGINE_PY) -m pip install -q --no-deps -e $(CURDIR)
	cd $(CURDIR) && $(ENGINE_PY) -m pytest tests/engine -p no:cacheprovider $(PYTEST_ARGS)

test-plugin:
	cd $(CURDIR) && $(SYSTEM_PYTHON) -m pytest tests/plugin -p no:cacheprovider $(PYTEST_ARGS)

demo: install
	bash scripts/demo.sh "$(DEMO_OUT)"

package:
	bash scripts/package.sh

# The same two pip downloads as Set up engine's "Build an offline wheelhouse"
# (processing_provider/engine_setup.py wheelhouse_commands): torch first, then the engine
# (from a clean copy of this folder) with torch pinned to the wheels just fetched, and the
# build's setuptools and wheel. Copy the folder to the offline machine and give it to Set up engine.
wheelhouse:
	mkdir -p $(WHEELHOUSE)
	$(WHEELHOUSE_PYTHON) -m pip download --disable-pip-version-check --dest $(WHEELHOUSE) \
	  $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" torchvision
	STAGE=$$(mktemp -d) && trap 'rm -rf "$$STAGE"' EXIT \
	  && mkdir "$$STAGE/slidewise" && tar -C $(CURDIR) --exclude=./.git --exclude=./tests \
	       --exclude=./docs --exclude=./dist --exclude=./build --exclude=__pycache__ \
	       --exclude='*.egg-info' -cf - . | tar -C "$$STAGE/slidewise" -xf - \
	  && $(WHEELHOUSE_PYTHON) -m pip download --disable-pip-version-check --dest $(WHEELHOUSE) \
	       --find-links $(WHEELHOUSE) "$$STAGE/slidewise" \
	       $$(ls $(WHEELHOUSE)/torch-*.whl $(WHEELHOUSE)/torchvision-*.whl) \
	       "setuptools>=68" wheel pip
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels in $(WHEELHOUSE)"

lint:
	$(ENGINE_PY) -m ruff check .
	$(ENGINE_PY) -m ruff format --check .

format:
	$(ENGINE_PY) -m ruff check --fix .
	$(ENGINE_PY) -m ruff format .

typecheck:
	$(ENGINE_PY) -m mypy engine

clean:
	rm -rf build dist demo_output .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
