#!/usr/bin/env bash
# `make lint-deploy`: cfn-lint (from the package registry, in a virtual environment
# under target/) on the CloudFormation template in deploy/, and on a copy of it broken
# on purpose, which it must refuse (so that a linter that checks nothing fails here).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=target/cfn-venv
if [ ! -x "$venv/bin/cfn-lint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==1.58.0"
fi
"$venv/bin/cfn-lint" deploy/*.yaml
broken=target/cfn-broken.yaml
sed 's/BillingMode: PAY_PER_REQUEST/BillingMode: PAY_PER_REQUESTS/' deploy/fencelock.yaml > "$broken"
if "$venv/bin/cfn-lint" "$broken" > target/cfn-broken.log 2>&1; then
  echo "cfn-lint accepted a template with a billing mode that does not exist" >&2
  exit 1
fi
echo "cfn-lint: deploy/ passes, and the broken copy is refused"
