# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export DJANGO_DEBUG ?= true

.PHONY: run test bench install system-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## Set up everything and run Levqor (embedded PostgreSQL/Redis when none is configured).
run: $(VENV)/.installed
	$(PY) scripts/levqor_services.py run

## Debian packages the tests use: Chromium and ChromeDriver (browser tests) and xmlsec1
## (the SAML identity provider's signatures). Installed when missing and we are root.
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v xmlsec1 >/dev/null && test -x /usr/sbin/pgbouncer || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver xmlsec1 pgbouncer >/dev/null; \
	    else echo "the tests need: sudo apt-get install chromium chromium-driver xmlsec1 pgbouncer" >&2; fi; }

## Run the whole test suite against real PostgreSQL and Redis.
test: $(VENV)/.installed system-deps
	$(PY) scripts/levqor_services.py exec -- $(VENV)/bin/pytest -n 2 -q -p no:randomly $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) scripts/levqor_services.py exec -- $(PY) bench/provision.py
