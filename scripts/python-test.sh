#!/usr/bin/env bash
# `make python-test`: the Python client (clients/python) as a user installs it, in a
# virtual environment made here under target/ from the package registry: the package
# itself with `pip install ./clients/python`, then its `postgres` extra and its test tools; ruff, mypy --strict,
# and pytest against a real fencelock server on DynamoDB Local that the tests start
# (the debug binary built here; FENCELOCK_BIN to use another).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
# As a user installs it (not editable), each run afresh.
"${pip[@]}" --force-reinstall --no-deps ./clients/python
"${pip[@]}" "./clients/python[postgres]" "pytest==9.2.0" "pytest-asyncio==1.5.0" "mypy==2.4.1" "ruff==0.17.6"
cargo build --quiet --bin fencelock
# fencelock.postgres is tested against a PostgreSQL the tests start; without one
# those tests are skipped, saying so (CI installs it).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "** Python PostgreSQL helper tests SKIPPED: PostgreSQL is not installed **"
  export FENCELOCK_POSTGRES_TESTS=skip
fi
cd clients/python
# The torture run's Python mix is held to the same rules.
mix=../../examples/torture/python_mix.py
"../../$venv/bin/ruff" check . "$mix" --config pyproject.toml
"../../$venv/bin/ruff" format --check . "$mix" --config pyproject.toml
"../../$venv/bin/mypy" --strict src tests "$mix"
"../../$venv/bin/pytest" -q -p no:cacheprovider
