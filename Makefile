# fencelock: `make run` serves on :12345 against DynamoDB Local; `make test` runs
# the whole suite. Both need Rust, Java 17+ and npm, and nothing else.

.PHONY: run test tools check fmt clean-data bench-wait

# DynamoDB Local, pinned in tools/package-lock.json.
tools: tools/node_modules/.package-lock.json

tools/node_modules/.package-lock.json: tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

run: tools
	scripts/run.sh

# Builds the benchmarks (so they cannot rot), then runs the unit tests and the API
# tests against a DynamoDB Local they start themselves (or
# FENCELOCK_TEST_DYNAMODB_ENDPOINT when set).
test: tools
	cargo build --benches
	cargo test --lib --bins --tests

# Waiting-acquire benchmark (release build): handoff latency and DynamoDB requests
# per second of 100 waiters; writes target/bench/waiting.json.
bench-wait: tools
	cargo bench --bench waiting

check:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

# Forget the tables `make run` kept on disk.
clean-data:
	rm -rf .data
