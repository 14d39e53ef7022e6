# AttendWise: the two commands a newcomer needs.
#   make run    install, then run the API on the embedded default (http://127.0.0.1:8000)
#   make test   install, start every service the tests need (on 127.0.0.1), run the whole suite
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
AW    := $(VENV)/bin/attendwise

.PHONY: install run test services services-down bench load clean

install:
	@bash infra/install.sh $(VENV)

run: install
	$(AW) serve

services: install
	$(AW) services up

services-down:
	$(AW) services down

test: install
	$(AW) services up
	eval "$$($(AW) services env)"; ATTENDWISE_REQUIRE_SERVICES=1 $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(AW) services up postgres nats neo4j
	eval "$$($(AW) services env)"; $(PY) -m bench $(BENCH_ARGS) && $(PY) -m bench.scheduling && $(PY) -m bench.gateway && $(PY) -m bench.feed \
		&& $(PY) -m bench.checkin && $(PY) -m bench.faces && $(PY) -m bench.notify && $(PY) -m bench.rebuild

load: install
	eval "$$($(AW) services env)"; $(PY) -m bench.load $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .attendwise *.egg-info
