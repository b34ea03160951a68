#!/usr/bin/env bash
# Set up (idempotent, fast when nothing changed), then run the main demo.
# Arguments go to `deltamem demo` (see: bash scripts/demo.sh --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/deltamem demo "$@"
