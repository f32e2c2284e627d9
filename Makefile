# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export DJANGO_DEBUG ?= true

.PHONY: run test bench install browser

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## Set up everything and run Levqor (embedded PostgreSQL/Redis when none is configured).
run: $(VENV)/.installed
	$(PY) scripts/levqor_services.py run

## Debian's Chromium and ChromeDriver for the browser tests (installed when missing and root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	    else echo "browser tests need: sudo apt-get install chromium chromium-driver" >&2; fi; }

## Run the whole test suite against real PostgreSQL and Redis.
test: $(VENV)/.installed browser
	$(PY) scripts/levqor_services.py exec -- $(VENV)/bin/pytest -n 2 -q -p no:randomly $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) scripts/levqor_services.py exec -- $(PY) bench/provision.py
