#!/usr/bin/env bash
# Run the SDK-facing test suites against the newest release of each supported SDK major.
# The main environment (README's test command) covers openai 3.x + anthropic 2.x and the newest
# google-genai, boto3 and mistralai; this script covers the older majors, each set in its own
# virtual environment under .matrix/ (gg1-mi1-b137: google-genai 1.x, mistralai 1.x with its
# `from mistralai import Mistral` import path, boto3/botocore 1.37).
#
#   bash scripts/sdk-matrix.sh            # every pair
#   bash scripts/sdk-matrix.sh oa1-an0    # one pair
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
declare -A PAIRS=(
  [oa1-an0]="openai>=1.40,<2 anthropic>=0.40,<1"
  [oa2-an1]="openai>=2,<3 anthropic>=1,<2"
  [gg1-mi1-b137]="google-genai>=1.20,<2 mistralai>=1.5,<2 boto3>=1.37,<1.38 botocore>=1.37,<1.38"
)
SUITES=${MATRIX_SUITES:-"tests/providers tests/attribution tests/core"}
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=(oa1-an0 oa2-an1 gg1-mi1-b137)

status=0
for name in "${selected[@]}"; do
  spec=${PAIRS[$name]:?unknown pair $name}
  venv=.matrix/$name
  echo "=== SDK matrix: $name ($spec) ==="
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' $spec 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -m pip list 2>/dev/null | grep -iE "^(openai|anthropic|google-genai|mistralai|boto3|botocore) " || true
  # shellcheck disable=SC2086
  if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider -n auto $SUITES; then
    echo "=== SDK matrix: $name FAILED ==="
    status=1
  fi
done
exit $status
