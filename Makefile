# Depot — the two commands a newcomer needs: `make dev` and `make test`.
# Both create .venv and install everything pinned in requirements/constraints.txt first.

PYTHON ?= python3
# Let Python cache bytecode: every service process and test subprocess starts ~4x faster.
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := libs/common services/upload-api services/indexer services/reconciler deploy
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: tools dev test test-fast lint fmt bench chaos lock clean venv help schemas console

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(STAMP) ## create .venv with every pinned package and our packages (editable)

$(STAMP): requirements/constraints.txt $(PYPROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Depot needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$$(grep '^uv==' requirements/constraints.txt)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements/constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	touch $(STAMP)

# The web console's browser libraries: npm installs them from the committed lock (no download
# addresses recorded: web/.npmrc) and we copy the files the console loads next to its own
# static files. Nothing is built; Node.js is not needed to run the console.
CONSOLE_WEB    := services/upload-api/web
CONSOLE_VENDOR := services/upload-api/src/depot_upload/console/static/vendor
CONSOLE_ASSETS := $(CONSOLE_VENDOR)/sha256.umd.min.js

console: $(CONSOLE_ASSETS) ## install the web console's npm packages and copy them into its static files

$(CONSOLE_ASSETS): $(CONSOLE_WEB)/package.json $(CONSOLE_WEB)/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq npm; } || \
		{ echo "The web console needs npm to install its libraries: apt-get install npm (Debian) or install Node.js"; exit 1; }
	cd $(CONSOLE_WEB) && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(CONSOLE_VENDOR)
	cp $(CONSOLE_WEB)/node_modules/hash-wasm/dist/sha256.umd.min.js $(CONSOLE_VENDOR)/
	cp $(CONSOLE_WEB)/node_modules/hash-wasm/LICENSE $(CONSOLE_VENDOR)/hash-wasm.LICENSE

dev: $(STAMP) $(CONSOLE_ASSETS) ## run the whole system locally (PostgreSQL, Kafka protocol, S3 protocol, services)
	$(BIN)/python -m depot_devstack

# Debian packages the tests need, as command:package (installed when missing; root needed).
# chromium: the browser the web console's tests drive (never `playwright install`).
SYSTEM_TOOLS := promtool:prometheus chromium:chromium

tools: ## install the system tools the tests need (Debian packages) when they are missing
	@for pair in $(SYSTEM_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 && continue; \
	  echo "installing Debian package $$pkg (for $$cmd)"; \
	  { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkg; } >/dev/null; } \
	    || { echo "$$cmd is missing and could not be installed: run 'sudo apt-get install $$pkg'"; exit 1; }; \
	done
	@command -v kubectl >/dev/null 2>&1 || { echo "kubectl (>= 1.14, it carries kustomize) is missing: install it from your distribution or the Kubernetes releases"; exit 1; }

test: $(STAMP) tools $(CONSOLE_ASSETS) ## run every test against real servers (started locally when not given)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common/src services/upload-api/src services/indexer/src services/reconciler/src deploy/src benchmarks

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: $(STAMP) ## regenerate docs/events/schemas/*.json from the event models
	$(BIN)/python -m depot_common.events.schemas --write docs/events/schemas

bench: $(STAMP) ## benchmarks: figures as ratios against a baseline from the same run
	$(BIN)/python -m benchmarks

chaos: $(STAMP) ## fault-injection soak (~10 min): kills, S3/broker pauses, a PostgreSQL crash; docs/invariants.md counted
	$(BIN)/python -m depot_devstack.chaos $(CHAOS_ARGS)

lock: $(STAMP) ## recompile requirements/constraints.txt from requirements/requirements.in
	$(BIN)/uv pip compile --quiet --python-version 3.11 --no-annotate --custom-compile-command "make lock" \
		requirements/requirements.in -o requirements/constraints.txt

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .devstack
