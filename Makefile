# Quick start: `make demo` (tour of every pattern on an embedded server) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-calendar test-pythons lint unit soak bench bench-peers install clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cli,embedded]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

install: $(VENV)/.dev-installed

demo: $(VENV)/.demo-installed
	$(BIN)/redis-patterns demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/unasync.py --check

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The oldest and newest supported Pythons (pyenv's, where installed): each in a venv of its own,
# the server-free tests, the package's scripts on a server and the public API's on Valkey and a
# cluster. A missing interpreter is reported as skipped, or a failure under
# REDIS_PATTERNS_REQUIRE_PYTHONS=1 (as .ci/run sets). The `fault` and `slow` cases (processes
# killed, servers restarted, concurrency runs) are left to `make test` on the main Python: with
# them each Python took 5 min instead of 4.
PYTHONS ?= 3.10 3.13
PYTHONS_SELECT := -m "not fault and not slow"
PYENV_VERSIONS ?= $(HOME)/.pyenv/versions
test-pythons:
	@for version in $(PYTHONS); do \
		python=$$(ls -d $(PYENV_VERSIONS)/$$version.*/bin/python 2>/dev/null | sort -V | tail -n 1); \
		[ -n "$$python" ] || python=$$(command -v python$$version || true); \
		if [ -z "$$python" ]; then \
			echo "test-pythons: SKIPPED Python $$version (not installed)"; \
			[ -z "$$REDIS_PATTERNS_REQUIRE_PYTHONS" ] || exit 1; \
			continue; \
		fi; \
		echo "test-pythons: $$($$python --version) ($$python)"; \
		[ -x .venv-$$version/bin/python ] || $$python -m venv .venv-$$version || exit 1; \
		.venv-$$version/bin/python -m pip install -q --upgrade pip || exit 1; \
		.venv-$$version/bin/pip install -q -e '.[dev]' || exit 1; \
		.venv-$$version/bin/pytest tests/unit tests/lua tests/api --backends valkey,cluster -q \
			$(PYTHONS_SELECT) $(PYTEST_ARGS) || exit 1; \
	done

# The tests that need no server (pure logic, plans against canned replies, the architecture's
# rules): seconds, for the edit-test loop.
unit: $(VENV)/.dev-installed
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

FAKETIME_LIB := /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
# The tests whose outcome depends on the calendar date (periods, ISO weeks, month ends); -k also
# picks docs/leaderboard.md's examples out of tests/docs.
CALENDAR_TESTS := tests/api/test_leaderboard_timed.py tests/docs/test_docs.py -k leaderboard

# The calendar tests again with the whole process, and the servers it starts (they inherit
# LD_PRELOAD and FAKETIME), one year ahead and one year back. Only Valkey backends: Debian's
# redis-server 7 hangs at start-up under libfaketime. REDIS_PATTERNS_CLOCK_SHIFT hands the real
# time to test_the_clock_shift_is_real, which fails if the shift did not apply.
test-calendar: $(VENV)/.dev-installed
	@test -e $(FAKETIME_LIB) || { echo "test-calendar needs libfaketime (Debian package faketime)"; exit 1; }
	for shift in +365 -365; do \
		echo "calendar tests at $$(FAKETIME=$${shift}d LD_PRELOAD=$(FAKETIME_LIB) date -u +%F)," \
			"really $$(date -u +%F)"; \
		REDIS_PATTERNS_CLOCK_SHIFT="$$(date +%s) $$shift" FAKETIME="$${shift}d" \
		LD_PRELOAD=$(FAKETIME_LIB) $(BIN)/pytest --backends valkey,cluster $(CALENDAR_TESTS) \
		$(PYTEST_ARGS) || exit 1; \
	done

soak: $(VENV)/.dev-installed
	$(BIN)/pytest --soak -m fault $(PYTEST_ARGS)

# The browser test writes docs/img/dashboard.png (the Operating page's screenshot) when asked.
screenshots: $(VENV)/.dev-installed
	REDIS_PATTERNS_SCREENSHOTS=1 REDIS_PATTERNS_REQUIRE_BROWSER=1 \
		$(BIN)/pytest tests/cli/test_dashboard_browser.py -q

# Built-in benchmarks (floors + ours), a quick harness run, then each pattern's comparison
# script; peers it cannot import are reported as "not installed". `make bench-peers` installs
# the peers first.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.run --quick
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# matplotlib draws the chart; it is a benchmark tool, not a dependency of the library.
PEERS := pottery python-redis-lock limits pyrate-limiter cashews dogpile.cache aiocache \
	Flask-Session matplotlib django-redis
BENCH_ARGS ?=

# The peers live in their own environment so they never leak into the test environment; the
# harness's results (machine, versions, tables, docs/benchmarks-peers.png) and every script's
# output are written into docs/benchmarks.md. `make bench-peers BENCH_ARGS=--quick`: smoke run.
bench-peers:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -e '.[dev]' $(PEERS)
	.venv-bench/bin/python -m benchmarks.report --write $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .ruff_cache .pytest_cache
