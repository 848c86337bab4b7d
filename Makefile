# fencelock: `make run` serves on :12345 against DynamoDB Local; `make test` runs
# the whole suite. Both need Rust, Java 17+ and npm, and nothing else.

.PHONY: run test tools check fmt clean-data bench bench-wait fuzz-api fuzz torture screenshots python-test lint-deploy

# DynamoDB Local, pinned in tools/package-lock.json.
tools: tools/node_modules/.package-lock.json

tools/node_modules/.package-lock.json: tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

run: tools
	scripts/run.sh

# Builds the benchmarks (so they cannot rot), then runs the unit tests and the API
# tests against a DynamoDB Local they start themselves (or
# FENCELOCK_TEST_DYNAMODB_ENDPOINT when set). The web page's tests need Chromium and
# ChromeDriver; without them they are skipped, and this says so.
HAVE_BROWSER := $(shell command -v chromedriver >/dev/null && { command -v chromium || command -v chromium-browser || command -v google-chrome; } >/dev/null && echo yes)
# The fencing recipes' tests start a PostgreSQL of their own from Debian's package;
# without it they are skipped, and this says so.
HAVE_POSTGRES := $(shell ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && echo yes)
# The clock check's control sets one server's clock ahead with libfaketime.
HAVE_FAKETIME := $(shell [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && echo yes)
SKIP := $(if $(filter yes,$(HAVE_BROWSER)),,--skip browser::) $(if $(filter yes,$(HAVE_POSTGRES)),,--skip fencing::postgres)

test: tools
	cargo build --benches
ifneq ($(HAVE_BROWSER),yes)
	@echo "** browser tests SKIPPED: chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver) **"
endif
ifneq ($(HAVE_POSTGRES),yes)
	@echo "** PostgreSQL fencing tests SKIPPED: PostgreSQL is not installed (Debian: apt-get install postgresql) **"
endif
	cargo test --lib --bins --tests -- $(SKIP)
ifneq ($(HAVE_BROWSER),yes)
	@echo "** browser tests SKIPPED: chromium and chromedriver are not installed **"
endif
ifneq ($(HAVE_POSTGRES),yes)
	@echo "** PostgreSQL fencing tests SKIPPED: PostgreSQL is not installed **"
endif
	$(MAKE) python-test
	$(MAKE) torture DURATION=60 SEED=1 TORTURE_PROFILE=debug
ifeq ($(HAVE_POSTGRES),yes)
	$(MAKE) torture DURATION=20 SEED=1 TORTURE_PROFILE=debug BREAK=check-then-write MODE=locks \
		TORTURE_ARGS="--faults pause_client --python-clients 0 --out target/torture-check-then-write"
else
	@echo "** torture BREAK=check-then-write SKIPPED: PostgreSQL is not installed **"
endif
ifeq ($(HAVE_FAKETIME),yes)
	$(MAKE) torture DURATION=20 SEED=1 TORTURE_PROFILE=debug BREAK=skew MODE=locks \
		TORTURE_ARGS="--python-clients 0 --out target/torture-skew"
else
	@echo "** torture BREAK=skew SKIPPED: libfaketime is not installed (Debian: apt-get install faketime) **"
endif

# cfn-lint on the CloudFormation template in deploy/ (and on a copy broken on purpose,
# which it must refuse), from a virtual environment under target/.
lint-deploy:
	scripts/lint-deploy.sh

# The Python client (clients/python), installed as a user installs it into a virtual
# environment under target/: ruff, mypy --strict and its tests against a real server.
python-test: tools
	scripts/python-test.sh

# The web page's screenshots in docs/ (light, dark, phone width), made by its browser test.
screenshots: tools
	FENCELOCK_SCREENSHOTS=$(CURDIR)/docs cargo test --test api -- browser::screenshots

# The torture run: DynamoDB Local, three servers, 140 clients in five mixes (one of them
# the Python client's, from `make python-test`'s virtual environment), an election mix
# (6 candidates pinned to the servers, 3 observers), and faults
# from a seeded schedule, then the history checker; summary in
# target/torture/summary.json. The lock mixes write downstream to a PostgreSQL the run
# starts, by docs/fencing.md's recipe (without PostgreSQL, to a map, saying so).
# DURATION (seconds, default 60), SEED (random by default), BREAK=skew (an
# instance's clock 8 s ahead: its clock check must refuse its takeovers and the run
# must stay clean; refuses to start without libfaketime), BREAK=skew-unchecked (the
# same with that instance's clock check off: the run must report overlaps),
# BREAK=check-then-write (paused holders check their fence,
# pause and write without the condition: the run must report stale writes
# PostgreSQL accepted; refuses to start without PostgreSQL), MODE=locks|semaphore|multi|election
# (default: all at once), TORTURE_ARGS (more flags of the torture binary, such as
# --group-wait-ms 3000; --help lists them). Faults that need root (a
# network namespace), nftables or libfaketime are reported as not possible without
# them, and not counted. Release build; TORTURE_PROFILE=debug for the debug one
# (`make test` uses it: it has that build already).
DURATION ?= 60
TORTURE_PROFILE ?= release
torture: tools
	cargo build $(if $(filter release,$(TORTURE_PROFILE)),--release) --bins --examples
	target/$(TORTURE_PROFILE)/examples/torture --duration $(DURATION) $(if $(SEED),--seed $(SEED)) $(if $(BREAK),--break $(BREAK)) $(if $(MODE),--mode $(MODE)) $(TORTURE_ARGS)

# fencelock against the DynamoDB floor (release build): throughput, latency,
# DynamoDB requests per operation, server CPU and memory at concurrency 1-64;
# writes target/bench/bench.json and bench.svg. BENCH_SECONDS per run (default 5).
bench: tools
	cargo bench --bench lockbench

# Waiting and watching benchmark (release build): handoff latency and DynamoDB
# requests per second of 100 waiters; a write's delay to a watcher's event through the
# same server and another, and the requests per second of 1 and 100 watchers;
# writes target/bench/waiting.json.
bench-wait: tools
	cargo bench --bench waiting

# schemathesis against /openapi.json of a real server (open, then with tokens and
# the holder's nonce required): fails on any 5xx or answer the document does not
# describe. Makes its Python virtual environment in target/.
fuzz-api: tools
	scripts/fuzz-api.sh

# Coverage-guided fuzzing of the request parsers (needs the nightly toolchain and
# cargo-fuzz); FUZZ_TIME seconds, default 60.
fuzz:
	cd fuzz && cargo +nightly fuzz run parsers -- -max_total_time=$${FUZZ_TIME:-60}

check:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

# Forget the tables `make run` kept on disk.
clean-data:
	rm -rf .data
