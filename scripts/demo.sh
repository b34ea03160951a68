#!/usr/bin/env bash
# Set up (idempotent, fast when nothing changed), then run the main demo: a fact and an
# instruction leave the context window; the bare backbone, the δ-mem state and the hybrid
# (state + text log) answer side by side. Exits 1 when the demo's own check fails.
# Arguments go to `deltamem demo` (see: bash scripts/demo.sh --help). Fully offline.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
exec .venv/bin/deltamem demo "$@"
