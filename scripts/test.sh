#!/usr/bin/env bash
# Set up (idempotent, fast when nothing changed), then run the test suite offline.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not smollm2" # skip the tests that load the real backbone
# Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
