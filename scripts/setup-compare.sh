#!/usr/bin/env bash
# A venv with mem0 for `deltamem bench compare --mem0-python .venv-compare/bin/python`.
#
#   bash scripts/setup-compare.sh
#
# Why a venv of its own: mem0ai 2.x requires protobuf < 7 (the project's .venv holds protobuf 7
# through chromadb's and the MCP SDK's dependencies) and pulls an OpenAI and a Qdrant client. The
# benchmark's mem0 worker (deltamem_agents/bench/compare_mem0_worker.py) imports only mem0 and
# numpy, and reads the vectors the main venv computed, so this venv needs nothing else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-compare"
MEM0_SPEC="mem0ai==2.2.1"   # the version the comparison in docs/comparison.md was measured with

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "$MEM0_SPEC" numpy
"$VENV/bin/python" -c 'from importlib.metadata import version; print("[compare] mem0ai", version("mem0ai"))'
