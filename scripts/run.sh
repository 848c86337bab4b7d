#!/usr/bin/env bash
# `make run`: DynamoDB Local with its data under .data/, then fencelock on :12345
# against it. Ctrl-C stops both.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
ddb_port=${DYNAMODB_PORT:-8000}

if (exec 3<>"/dev/tcp/127.0.0.1/$ddb_port") 2>/dev/null; then
  echo "port $ddb_port is taken; set DYNAMODB_PORT to another port" >&2
  exit 1
fi
mkdir -p .data
scripts/dynamodb-local.sh "$ddb_port" "$here/.data/dynamodb" > .data/dynamodb.log 2>&1 &
ddb=$!
trap 'kill "$ddb" 2>/dev/null; wait "$ddb" 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$ddb_port") 2>/dev/null; then break; fi
  if ! kill -0 "$ddb" 2>/dev/null; then
    echo "DynamoDB Local did not start:" >&2; cat .data/dynamodb.log >&2; exit 1
  fi
  sleep 0.2
done
echo "DynamoDB Local is on 127.0.0.1:$ddb_port (data in .data/dynamodb)"

# DynamoDB Local accepts any credentials; real AWS ones in the environment win.
export FENCELOCK_DYNAMODB_ENDPOINT=${FENCELOCK_DYNAMODB_ENDPOINT:-http://127.0.0.1:$ddb_port}
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
cargo run --release --quiet -- serve
