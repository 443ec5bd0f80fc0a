#!/usr/bin/env bash
# A throwaway venv with Flower 1.42 for the side-by-side benchmark (never a project dependency).
set -euo pipefail
VENV=${FLOWER_VENV:-/tmp/flwr-venv}
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet flwr==1.42.0
echo "$VENV"
